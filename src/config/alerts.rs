//! What Leaf alerts are built from: the receiver's address and signing secret, the opt-in
//! registration of our webhook, and the health thresholds that let polling become the backstop.
//! Their checks live here too, beside the builder that relies on them.

use super::{Config, ConfigError, validate_origin};
use crate::alerts::AlertsConfig;
use crate::alerts::registration::{RecordLocation, RegistrationConfig};
use crate::alerts::signing_secret::SecretLocation;
use crate::alerts::webhook_record;
use crate::controller::polling::HealthConfig;

impl Config {
    /// The alerts settings, when a receiver is configured (call after [`Config::validate`]).
    pub fn alerts(&self) -> Option<AlertsConfig> {
        let addr = self.alerts_addr?;
        let secret = self.alerts_secret_location().ok()??;
        let registration = self.alerts_register.then(|| RegistrationConfig {
            name: self
                .alerts_webhook_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| self.leader_election_lease_name.clone()),
            url: self.alerts_webhook_url.clone().unwrap_or_default(),
            check_interval: self.alerts_check_interval,
            // Next to the signing Secret: the Role that grants it grants the record.
            record: RecordLocation {
                namespace: secret.namespace.clone(),
                name: webhook_record::record_name(&self.leader_election_lease_name),
            },
        });
        Some(AlertsConfig {
            addr,
            secret,
            registration,
            health: HealthConfig {
                backstop_interval: self.alerts_backstop_interval,
                quiet_limit: self.alerts_quiet_limit,
            },
            pod: self.own_pod(),
        })
    }

    /// Where the alerts signing secret lives, when a receiver is configured.
    pub fn alerts_secret_location(&self) -> Result<Option<SecretLocation>, ConfigError> {
        let Some(reference) = self.alerts_secret_name.as_deref() else {
            return Ok(None);
        };
        let bad = || ConfigError::BadAlertsSecretName(reference.to_string());
        let (namespace, name) = match reference.split_once('/') {
            Some((namespace, name)) => (namespace.to_string(), name.to_string()),
            None => (
                self.leader_election_namespace
                    .clone()
                    .filter(|ns| !ns.is_empty())
                    .ok_or(ConfigError::AlertsSecretWithoutNamespace)?,
                reference.to_string(),
            ),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        if !valid(&namespace) || !valid(&name) || self.alerts_secret_key.is_empty() {
            return Err(bad());
        }
        Ok(Some(SecretLocation {
            namespace,
            name,
            key: self.alerts_secret_key.clone(),
        }))
    }

    /// The alerts flags: a receiver needs its signing secret, registration needs the receiver, a
    /// default Leaf account and the public URL, and no interval is 0.
    pub(super) fn validate_alerts(&self) -> Result<(), ConfigError> {
        for (value, name) in [
            (
                self.alerts_check_interval,
                "--alerts-check-interval (LEAF_ALERTS_CHECK_INTERVAL)",
            ),
            (
                self.alerts_backstop_interval,
                "--alerts-backstop-interval (LEAF_ALERTS_BACKSTOP_INTERVAL)",
            ),
            (
                self.alerts_quiet_limit,
                "--alerts-quiet-limit (LEAF_ALERTS_QUIET_LIMIT)",
            ),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        match (&self.alerts_addr, &self.alerts_secret_name) {
            (Some(_), None) => return Err(ConfigError::ReceiverWithoutSecret),
            (None, Some(_)) => return Err(ConfigError::SecretWithoutReceiver),
            _ => {}
        }
        if self.alerts_secret_name.is_some() {
            self.alerts_secret_location()?;
        }
        if self.alerts_register {
            if self.alerts_addr.is_none() {
                return Err(ConfigError::RegisterNeeds(
                    "the receiver (--alerts-addr and --alerts-secret-name)",
                ));
            }
            if self.leaf_account_dir.is_none() && self.fixed_account().is_none() {
                return Err(ConfigError::RegisterNeeds(
                    "a default Leaf account (--leaf-account-dir, --leaf-username/--leaf-password or --leaf-token)",
                ));
            }
            let Some(url) = self.alerts_webhook_url.as_deref() else {
                return Err(ConfigError::RegisterNeeds("--alerts-webhook-url"));
            };
            validate_origin(url).map_err(|error| match error {
                ConfigError::BadUrl { url, problem } => ConfigError::BadWebhookUrl { url, problem },
                other => other,
            })?;
            let record = webhook_record::record_name(&self.leader_election_lease_name);
            if !webhook_record::valid_record_name(&record) {
                return Err(ConfigError::BadWebhookRecordName(record));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::parse;
    use crate::alerts::registration::RecordLocation;
    use crate::controller::polling::Registration;

    #[test]
    fn alerts_settings_are_checked_and_default_to_off() {
        assert!(parse(&[]).alerts().is_none());
        for (args, expected) in [
            (
                vec!["--alerts-addr", "127.0.0.1:9000"],
                "--alerts-secret-name",
            ),
            (vec!["--alerts-secret-name", "ns/s"], "no receiver"),
            (
                vec![
                    "--alerts-addr",
                    "127.0.0.1:9000",
                    "--alerts-secret-name",
                    "s",
                ],
                "POD_NAMESPACE",
            ),
            (
                vec![
                    "--alerts-addr",
                    "127.0.0.1:9000",
                    "--alerts-secret-name",
                    "ns/S_x",
                ],
                "namespace/name",
            ),
            (
                vec![
                    "--alerts-addr",
                    "127.0.0.1:9000",
                    "--alerts-secret-name",
                    "ns/s",
                    "--alerts-register",
                ],
                "default Leaf account",
            ),
            (
                vec![
                    "--alerts-addr",
                    "127.0.0.1:9000",
                    "--alerts-secret-name",
                    "ns/s",
                    "--alerts-register",
                    "--leaf-token",
                    "t",
                ],
                "--alerts-webhook-url",
            ),
            (
                vec![
                    "--alerts-addr",
                    "127.0.0.1:9000",
                    "--alerts-secret-name",
                    "ns/s",
                    "--alerts-register",
                    "--leaf-token",
                    "t",
                    "--alerts-webhook-url",
                    "ftp://x",
                ],
                "scheme",
            ),
            (vec!["--alerts-register"], "receiver"),
            (
                vec![
                    "--alerts-addr",
                    "127.0.0.1:9000",
                    "--alerts-secret-name",
                    "ns/s",
                    "--alerts-register",
                    "--leaf-token",
                    "t",
                    "--alerts-webhook-url",
                    "https://hooks.example.com/alerts",
                    "--leader-election-lease-name",
                    "Shard_A",
                ],
                "Shard_A-alerts-webhook",
            ),
            (vec!["--alerts-quiet-limit", "0s"], "above 0"),
        ] {
            let error = parse(&args).validate().expect_err("invalid").to_string();
            assert!(error.contains(expected), "{args:?}: {error}");
        }
        let config = parse(&[
            "--alerts-addr",
            "127.0.0.1:9000",
            "--alerts-secret-name",
            "hooks",
            "--leader-election-namespace",
            "ops",
            "--alerts-register",
            "--leaf-token",
            "t",
            "--alerts-webhook-url",
            "https://hooks.example.com/alerts",
            "--leader-election-lease-name",
            "leaf-operator-shard-a",
        ]);
        assert_eq!(config.validate(), Ok(()));
        let alerts = config.alerts().expect("alerts on");
        assert_eq!(alerts.secret.namespace, "ops");
        assert_eq!(alerts.secret.name, "hooks");
        assert_eq!(alerts.secret.key, "secret");
        let registration = alerts.registration.expect("registering");
        assert_eq!(
            registration.name, "leaf-operator-shard-a",
            "the Lease name by default"
        );
        assert_eq!(
            registration.record,
            RecordLocation {
                namespace: "ops".to_string(),
                name: "leaf-operator-shard-a-alerts-webhook".to_string(),
            },
            "the record is named after the Lease, next to the signing Secret"
        );
        assert_eq!(
            alerts.health.backstop_interval,
            Duration::from_secs(24 * 3600)
        );
    }

    #[test]
    fn the_alerts_health_starts_pending_only_when_the_operator_registers() {
        let receiver = [
            "--alerts-addr",
            "127.0.0.1:9000",
            "--alerts-secret-name",
            "ops/hooks",
        ];
        let secret_only = parse(&receiver).alerts().expect("alerts on");
        assert_eq!(
            secret_only.new_health().registration(),
            Registration::SecretOnly
        );
        let mut registering = receiver.to_vec();
        registering.extend([
            "--alerts-register",
            "--leaf-token",
            "t",
            "--alerts-webhook-url",
            "https://hooks.example.com/alerts",
        ]);
        let registering = parse(&registering).alerts().expect("alerts on");
        assert_eq!(
            registering.new_health().registration(),
            Registration::Pending
        );
    }
}
