//! The operator's configuration: command-line flags with environment equivalents, validated at start.
//!
//! Every flag has an environment variable so that a Deployment can set it either way. Values that
//! are secrets (the Leaf password and token) are held in `SecretString` and never printed, not even
//! by `--help` (their environment values are hidden). The default Leaf account is best given as a
//! directory (`--leaf-account-dir`, a mounted Secret) because it is re-read when it changes; the
//! environment variables remain as a fallback that only a restart can change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

use crate::default_account::DefaultAccount;
use crate::leaf::LeafAccount;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Keeps Leaf's Trimble credentials in step with TrimbleConnection resources.
#[derive(Clone, Parser)]
#[command(name = "leaf-operator", version, about, long_about = None)]
pub struct Config {
    /// Origin of the Leaf API.
    #[arg(long, env = "LEAF_API_URL", default_value = "https://api.withleaf.io")]
    pub leaf_api_url: String,

    /// Username of the default Leaf API account (used when a TrimbleConnection has no
    /// leafAuthSecretRef). Needs --leaf-password. Alternative: --leaf-token.
    #[arg(long, env = "LEAF_USERNAME")]
    pub leaf_username: Option<String>,

    /// Password of the default Leaf API account.
    #[arg(long, env = "LEAF_PASSWORD", hide_env_values = true, value_parser = parse_secret)]
    pub leaf_password: Option<SecretString>,

    /// Static token of the default Leaf API account (instead of username and password).
    #[arg(long, env = "LEAF_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub leaf_token: Option<SecretString>,

    /// Directory holding the default Leaf API account as files `token`, or `username` and
    /// `password` (a mounted Secret). Re-read when its content changes: rotating the Secret needs
    /// no restart. Replaces --leaf-username/--leaf-password/--leaf-token.
    #[arg(long, env = "LEAF_ACCOUNT_DIR")]
    pub leaf_account_dir: Option<PathBuf>,

    /// Namespaces to watch, comma-separated. Empty: all namespaces (needs cluster-wide RBAC).
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub watch_namespaces: Vec<String>,

    /// How many TrimbleConnections are reconciled at the same time.
    #[arg(long, env = "RECONCILE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Process-wide limit on requests sent to Leaf per second.
    #[arg(long, env = "LEAF_REQUESTS_PER_SECOND", default_value_t = 10.0)]
    pub leaf_requests_per_second: f64,

    /// How many requests to Leaf may be sent at once above the per-second rate.
    #[arg(long, env = "LEAF_BURST", default_value_t = 20)]
    pub leaf_burst: u32,

    /// Timeout of one request to Leaf (for example 30s or 1m).
    #[arg(long, env = "LEAF_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub leaf_timeout: Duration,

    /// How long after a create's request timed out it may still complete in Leaf (Leaf validates
    /// the refresh token with Trimble before it answers). Until request timeout + this margin has
    /// passed since a create started, the same values are never sent again.
    #[arg(long, env = "LEAF_IN_DOUBT_MARGIN", default_value = "60s", value_parser = humantime::parse_duration)]
    pub leaf_in_doubt_margin: Duration,

    /// Address of the HTTP server for /metrics, /livez and /readyz. The default `[::]` accepts
    /// IPv6 and IPv4 (dual stack); on a host without IPv6 it falls back to 0.0.0.0.
    #[arg(long, env = "HTTP_ADDR", default_value = "[::]:8080")]
    pub http_addr: SocketAddr,

    /// Elect a leader through a Lease, so that only one replica reconciles.
    #[arg(
        long,
        env = "LEADER_ELECTION",
        default_value_t = false,
        action = ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease (in a Pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "LEADER_ELECTION_LEASE_NAME",
        default_value = "leaf-operator"
    )]
    pub leader_election_lease_name: String,

    /// How long a leader's Lease is valid after each renewal: a standby takes over this long after
    /// the leader stops renewing (a crash; a clean stop releases the Lease at once).
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// How often the leader renews its Lease; must be shorter than the lease duration.
    #[arg(long, env = "LEADER_ELECTION_RENEW_PERIOD", default_value = "5s", value_parser = humantime::parse_duration)]
    pub leader_election_renew_period: Duration,

    /// How often a standby replica looks at the Lease.
    #[arg(long, env = "LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub leader_election_retry_period: Duration,

    /// Identity of this replica in the Lease and in Events (default: the host name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Label key the leading replica sets to "true" on its own Pod (and removes when it stops
    /// leading), so that the alerts receiver's Service can select the leader only. Needs POD_NAME
    /// and POD_NAMESPACE. Empty: off.
    #[arg(long, env = "LEADER_POD_LABEL", default_value = "")]
    pub leader_pod_label: String,

    /// UID of this replica's Pod (the downward API's metadata.uid), for the Events about the
    /// operator's own Pod. Optional: without it they name the Pod by name and namespace.
    #[arg(long, env = "POD_UID")]
    pub pod_uid: Option<String>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Label selector on the TrimbleConnection watch (e.g. `shard=a`): this deployment manages
    /// only the matching resources, so several deployments (each with its own Lease name) can
    /// split a cluster. Empty: all. A Leaf user must stay within one shard (docs/sharding.md).
    #[arg(long, env = "LABEL_SELECTOR", default_value = "")]
    pub label_selector: String,

    /// Address of the alerts receiver (`POST /alerts`), e.g. 0.0.0.0:8443. Unset: no receiver.
    /// Plain HTTP: TLS ends at the Ingress in front of it.
    #[arg(long, env = "LEAF_ALERTS_ADDR")]
    pub alerts_addr: Option<SocketAddr>,

    /// Kubernetes Secret with the webhook signing secret, `name` (in POD_NAMESPACE) or
    /// `namespace/name`. Needed by the receiver.
    #[arg(long, env = "LEAF_ALERTS_SECRET_NAME")]
    pub alerts_secret_name: Option<String>,

    /// Key of the signing secret in that Secret.
    #[arg(long, env = "LEAF_ALERTS_SECRET_KEY", default_value = "secret")]
    pub alerts_secret_key: String,

    /// Register the webhook for the credentials events with the default Leaf account (and
    /// replay its failed calls). Without it the receiver only verifies with the given secret
    /// (the webhook registered, or forwarded, by someone else).
    #[arg(
        long,
        env = "LEAF_ALERTS_REGISTER",
        default_value_t = false,
        action = ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub alerts_register: bool,

    /// Public URL Leaf delivers to (the Ingress in front of the receiver), e.g.
    /// https://leaf-alerts.example.com/alerts. Needed by --alerts-register.
    #[arg(long, env = "LEAF_ALERTS_WEBHOOK_URL")]
    pub alerts_webhook_url: Option<String>,

    /// Name of our webhook at Leaf. Which webhook is ours is decided by the id the operator
    /// created, kept in ConfigMap `<lease name>-alerts-webhook` next to the signing Secret; the
    /// name only labels it at Leaf. Default: the leader-election Lease name.
    #[arg(long, env = "LEAF_ALERTS_WEBHOOK_NAME")]
    pub alerts_webhook_name: Option<String>,

    /// How often the registration is checked and Leaf's failed calls are replayed.
    #[arg(long, env = "LEAF_ALERTS_CHECK_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub alerts_check_interval: Duration,

    /// Periodic check interval while alerts are healthy (polling is then only a backstop).
    #[arg(long, env = "LEAF_ALERTS_BACKSTOP_INTERVAL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub alerts_backstop_interval: Duration,

    /// Without a word from Leaf (delivery, confirmation or registration check) for this long,
    /// alerts are not trusted and polling returns to each resource's refreshInterval.
    #[arg(long, env = "LEAF_ALERTS_QUIET_LIMIT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub alerts_quiet_limit: Duration,

    /// TEST ONLY: replaces every resource's refreshInterval (whose schema minimum is 1m) so that
    /// tests can observe periodic checks quickly. Never set it in production.
    #[arg(long, env = "LEAF_OPERATOR_TEST_REFRESH_INTERVAL", hide = true, value_parser = humantime::parse_duration)]
    pub test_refresh_interval: Option<Duration>,
}

fn parse_secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

// A hand-written Debug so that no configuration dump can ever show the password or token.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("leaf_api_url", &self.leaf_api_url)
            .field("leaf_username", &self.leaf_username)
            .field(
                "leaf_password",
                &self.leaf_password.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "leaf_token",
                &self.leaf_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("leaf_account_dir", &self.leaf_account_dir)
            .field("watch_namespaces", &self.watch_namespaces)
            .field("concurrency", &self.concurrency)
            .field("leaf_requests_per_second", &self.leaf_requests_per_second)
            .field("leaf_burst", &self.leaf_burst)
            .field("leaf_timeout", &self.leaf_timeout)
            .field("leaf_in_doubt_margin", &self.leaf_in_doubt_margin)
            .field("http_addr", &self.http_addr)
            .field("leader_election", &self.leader_election)
            .field("leader_election_namespace", &self.leader_election_namespace)
            .field(
                "leader_election_lease_name",
                &self.leader_election_lease_name,
            )
            .field(
                "leader_election_lease_duration",
                &self.leader_election_lease_duration,
            )
            .field(
                "leader_election_renew_period",
                &self.leader_election_renew_period,
            )
            .field(
                "leader_election_retry_period",
                &self.leader_election_retry_period,
            )
            .field("pod_name", &self.pod_name)
            .field("pod_uid", &self.pod_uid)
            .field("leader_pod_label", &self.leader_pod_label)
            .field("log_format", &self.log_format)
            .field("test_refresh_interval", &self.test_refresh_interval)
            .field("label_selector", &self.label_selector)
            .field("alerts_addr", &self.alerts_addr)
            .field("alerts_secret_name", &self.alerts_secret_name)
            .field("alerts_secret_key", &self.alerts_secret_key)
            .field("alerts_register", &self.alerts_register)
            .field("alerts_webhook_url", &self.alerts_webhook_url)
            .field("alerts_webhook_name", &self.alerts_webhook_name)
            .field("alerts_check_interval", &self.alerts_check_interval)
            .field("alerts_backstop_interval", &self.alerts_backstop_interval)
            .field("alerts_quiet_limit", &self.alerts_quiet_limit)
            .finish()
    }
}

/// A configuration that cannot work; the message says what to change.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error(
        "--leaf-token (LEAF_TOKEN) and --leaf-username (LEAF_USERNAME) are both set; use one Leaf account: a token, or a username with a password"
    )]
    TokenAndUsername,
    #[error("--leaf-username (LEAF_USERNAME) is set but --leaf-password (LEAF_PASSWORD) is not")]
    UsernameWithoutPassword,
    #[error("--leaf-password (LEAF_PASSWORD) is set but --leaf-username (LEAF_USERNAME) is not")]
    PasswordWithoutUsername,
    #[error("{0} is set but empty")]
    Empty(&'static str),
    #[error("--leaf-api-url (LEAF_API_URL) {url:?} is not a valid http(s) origin: {problem}")]
    BadUrl { url: String, problem: String },
    #[error(
        "--leaf-requests-per-second (LEAF_REQUESTS_PER_SECOND) must be a number above 0, got {0}"
    )]
    BadRate(f64),
    #[error("--leaf-burst (LEAF_BURST) must be at least 1")]
    BadBurst,
    #[error("--concurrency (RECONCILE_CONCURRENCY) must be at least 1")]
    BadConcurrency,
    #[error("--leaf-timeout (LEAF_TIMEOUT) must be above 0")]
    BadTimeout,
    #[error("--watch-namespaces (WATCH_NAMESPACES) entry {0:?} is not a valid namespace name")]
    BadNamespace(String),
    #[error("--leader-election needs --leader-election-namespace (POD_NAMESPACE)")]
    LeaderElectionWithoutNamespace,
    #[error(
        "--leader-pod-label (LEADER_POD_LABEL) {0:?} needs POD_NAME and POD_NAMESPACE (the Pod to label) and must be a label key (`name` or `prefix/name`)"
    )]
    BadLeaderPodLabel(String),
    #[error("--label-selector (LABEL_SELECTOR) {selector:?} is not a label selector: {problem}")]
    BadLabelSelector { selector: String, problem: String },
    #[error(
        "--alerts-addr (LEAF_ALERTS_ADDR) needs --alerts-secret-name (LEAF_ALERTS_SECRET_NAME): deliveries cannot be verified without the signing secret"
    )]
    ReceiverWithoutSecret,
    #[error(
        "--alerts-secret-name (LEAF_ALERTS_SECRET_NAME) is set but --alerts-addr (LEAF_ALERTS_ADDR) is not: there is no receiver to use it"
    )]
    SecretWithoutReceiver,
    #[error(
        "--alerts-secret-name (LEAF_ALERTS_SECRET_NAME) {0:?} must be `name` or `namespace/name` of a Secret"
    )]
    BadAlertsSecretName(String),
    #[error(
        "--alerts-secret-name (LEAF_ALERTS_SECRET_NAME) without a namespace needs POD_NAMESPACE"
    )]
    AlertsSecretWithoutNamespace,
    #[error("--alerts-register (LEAF_ALERTS_REGISTER) needs {0}")]
    RegisterNeeds(&'static str),
    #[error(
        "--alerts-webhook-url (LEAF_ALERTS_WEBHOOK_URL) {url:?} is not a valid http(s) URL: {problem}"
    )]
    BadWebhookUrl { url: String, problem: String },
    #[error(
        "--alerts-register keeps the id of its webhook in ConfigMap {0:?} (the Lease name + \"-alerts-webhook\"), which is not a valid name: shorten --leader-election-lease-name (LEADER_ELECTION_LEASE_NAME)"
    )]
    BadWebhookRecordName(String),
    #[error("{0} must be above 0")]
    ZeroDuration(&'static str),
    #[error(
        "--leaf-account-dir (LEAF_ACCOUNT_DIR) and --leaf-username/--leaf-token (LEAF_USERNAME/LEAF_TOKEN) are both set; give the default Leaf account one way"
    )]
    AccountDirAndValues,
    #[error(
        "leader election periods must be above 0 and --leader-election-renew-period (LEADER_ELECTION_RENEW_PERIOD) shorter than --leader-election-lease-duration (LEADER_ELECTION_LEASE_DURATION)"
    )]
    BadLeaderElectionPeriods,
}

impl Config {
    /// Checks everything that can be checked before talking to anyone.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let username = self.leaf_username.as_deref();
        let password = self.leaf_password.as_ref().map(|p| p.expose_secret());
        let token = self.leaf_token.as_ref().map(|t| t.expose_secret());
        match (username, password, token) {
            (Some(_), _, Some(_)) => return Err(ConfigError::TokenAndUsername),
            (Some(_), None, None) => return Err(ConfigError::UsernameWithoutPassword),
            (None, Some(_), _) => return Err(ConfigError::PasswordWithoutUsername),
            _ => {}
        }
        if username.is_some_and(str::is_empty) {
            return Err(ConfigError::Empty("--leaf-username (LEAF_USERNAME)"));
        }
        if password.is_some_and(str::is_empty) {
            return Err(ConfigError::Empty("--leaf-password (LEAF_PASSWORD)"));
        }
        if token.is_some_and(str::is_empty) {
            return Err(ConfigError::Empty("--leaf-token (LEAF_TOKEN)"));
        }
        if self.leaf_account_dir.is_some() && (username.is_some() || token.is_some()) {
            return Err(ConfigError::AccountDirAndValues);
        }
        validate_origin(&self.leaf_api_url)?;
        if !(self.leaf_requests_per_second.is_finite() && self.leaf_requests_per_second > 0.0) {
            return Err(ConfigError::BadRate(self.leaf_requests_per_second));
        }
        if self.leaf_burst == 0 {
            return Err(ConfigError::BadBurst);
        }
        if self.concurrency == 0 {
            return Err(ConfigError::BadConcurrency);
        }
        if self.leaf_timeout.is_zero() {
            return Err(ConfigError::BadTimeout);
        }
        for ns in self.namespaces() {
            let valid = ns.len() <= 63
                && ns
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !ns.starts_with('-')
                && !ns.ends_with('-');
            if !valid {
                return Err(ConfigError::BadNamespace(ns.to_string()));
            }
        }
        if self.leader_election
            && self
                .leader_election_namespace
                .as_deref()
                .is_none_or(str::is_empty)
        {
            return Err(ConfigError::LeaderElectionWithoutNamespace);
        }
        if !self.leader_pod_label.is_empty() && self.leader_pod_label().is_none() {
            return Err(ConfigError::BadLeaderPodLabel(
                self.leader_pod_label.clone(),
            ));
        }
        let lease = self.leader_election_lease_duration;
        let renew = self.leader_election_renew_period;
        if renew.is_zero() || self.leader_election_retry_period.is_zero() || renew >= lease {
            return Err(ConfigError::BadLeaderElectionPeriods);
        }
        if let Err(problem) = validate_label_selector(&self.label_selector) {
            return Err(ConfigError::BadLabelSelector {
                selector: self.label_selector.clone(),
                problem,
            });
        }
        self.validate_alerts()
    }

    fn validate_alerts(&self) -> Result<(), ConfigError> {
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
            let record =
                crate::alerts::webhook_record::record_name(&self.leader_election_lease_name);
            if !crate::alerts::webhook_record::valid_record_name(&record) {
                return Err(ConfigError::BadWebhookRecordName(record));
            }
        }
        Ok(())
    }

    /// Where the alerts signing secret lives, when a receiver is configured.
    pub fn alerts_secret_location(
        &self,
    ) -> Result<Option<crate::alerts::signing_secret::SecretLocation>, ConfigError> {
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
        Ok(Some(crate::alerts::signing_secret::SecretLocation {
            namespace,
            name,
            key: self.alerts_secret_key.clone(),
        }))
    }

    /// The alerts settings, when a receiver is configured (call after [`Config::validate`]).
    pub fn alerts(&self) -> Option<crate::alerts::AlertsConfig> {
        let addr = self.alerts_addr?;
        let secret = self.alerts_secret_location().ok()??;
        let registration =
            self.alerts_register
                .then(|| crate::alerts::registration::RegistrationConfig {
                    name: self
                        .alerts_webhook_name
                        .clone()
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| self.leader_election_lease_name.clone()),
                    url: self.alerts_webhook_url.clone().unwrap_or_default(),
                    check_interval: self.alerts_check_interval,
                    // Next to the signing Secret: the Role that grants it grants the record.
                    record: crate::alerts::registration::RecordLocation {
                        namespace: secret.namespace.clone(),
                        name: crate::alerts::webhook_record::record_name(
                            &self.leader_election_lease_name,
                        ),
                    },
                });
        Some(crate::alerts::AlertsConfig {
            addr,
            secret,
            registration,
            health: crate::controller::polling::HealthConfig {
                backstop_interval: self.alerts_backstop_interval,
                quiet_limit: self.alerts_quiet_limit,
            },
            pod: self.own_pod(),
        })
    }

    /// The Pod to label and the label key, when `--leader-pod-label` is set and usable.
    pub fn leader_pod_label(&self) -> Option<(crate::alerts::polling_switch::OwnPod, String)> {
        let key = self.leader_pod_label.trim();
        let (prefix, name) = match key.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, key),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        let prefix_ok = prefix.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 253
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
        });
        if !(name_ok && prefix_ok) {
            return None;
        }
        Some((self.own_pod()?, key.to_string()))
    }

    /// The operator's own Pod, when POD_NAME and POD_NAMESPACE say which (as in the chart).
    pub fn own_pod(&self) -> Option<crate::alerts::polling_switch::OwnPod> {
        let non_empty = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        Some(crate::alerts::polling_switch::OwnPod {
            name: non_empty(&self.pod_name)?,
            namespace: non_empty(&self.leader_election_namespace)?,
            uid: non_empty(&self.pod_uid),
        })
    }

    /// The label selector of the TrimbleConnection watch, if any.
    pub fn label_selector(&self) -> Option<String> {
        let selector = self.label_selector.trim();
        (!selector.is_empty()).then(|| selector.to_string())
    }

    /// The namespaces to watch; empty means all.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut namespaces: Vec<&str> = self
            .watch_namespaces
            .iter()
            .map(|ns| ns.trim())
            .filter(|ns| !ns.is_empty())
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        namespaces
    }

    /// The operator-wide Leaf account: the directory when one is given, else the fixed values.
    pub fn default_account(&self) -> DefaultAccount {
        DefaultAccount::from_sources(self.leaf_account_dir.as_deref(), self.fixed_account())
    }

    /// The default account from flags or environment variables, if given.
    fn fixed_account(&self) -> Option<LeafAccount> {
        if let Some(token) = &self.leaf_token {
            return Some(LeafAccount::Token(token.clone()));
        }
        match (&self.leaf_username, &self.leaf_password) {
            (Some(username), Some(password)) => Some(LeafAccount::Password {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        }
    }

    /// This replica's identity: POD_NAME, else the host name.
    pub fn identity(&self) -> String {
        self.pod_name
            .clone()
            .filter(|name| !name.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "leaf-operator".to_string())
    }
}

/// A syntax check of a Kubernetes label selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`,
/// `k in (a,b)`, `k notin (a,b)`, comma-separated), so that a typo stops the process at start
/// instead of making the shard silently watch nothing.
fn validate_label_selector(selector: &str) -> Result<(), String> {
    let selector = selector.trim();
    if selector.is_empty() {
        return Ok(());
    }
    let key_ok = |key: &str| {
        let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        let prefix_ok = prefix.len() <= 253
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
            && (prefix.is_empty() || key.contains('/'));
        name_ok && prefix_ok && !(key.contains('/') && prefix.is_empty())
    };
    let value_ok = |value: &str| {
        value.is_empty()
            || (value.len() <= 63
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && value.starts_with(|c: char| c.is_ascii_alphanumeric())
                && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
    };
    // Split on commas outside parentheses.
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses".to_string());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".to_string());
    }
    terms.push(&selector[start..]);
    for term in terms {
        let term = term.trim();
        if term.is_empty() {
            return Err("an empty term (two commas, or a trailing comma)".to_string());
        }
        let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
        if words.len() == 2
            && (words[1].trim_start().starts_with("in ")
                || words[1].trim_start().starts_with("in(")
                || words[1].trim_start().starts_with("notin"))
        {
            let rest = words[1].trim_start();
            let list = rest
                .strip_prefix("notin")
                .or_else(|| rest.strip_prefix("in"))
                .unwrap_or(rest)
                .trim();
            let Some(inner) = list.strip_prefix('(').and_then(|l| l.strip_suffix(')')) else {
                return Err(format!("{term:?}: `in`/`notin` need a (list)"));
            };
            if !key_ok(words[0]) || !inner.split(',').all(|v| value_ok(v.trim())) {
                return Err(format!("{term:?} is not valid"));
            }
            continue;
        }
        let (key, value) = if let Some((k, v)) = term.split_once("!=") {
            (k, Some(v))
        } else if let Some((k, v)) = term.split_once("==") {
            (k, Some(v))
        } else if let Some((k, v)) = term.split_once('=') {
            (k, Some(v))
        } else {
            (term.strip_prefix('!').unwrap_or(term), None)
        };
        if !key_ok(key.trim()) || !value.is_none_or(|v| value_ok(v.trim())) {
            return Err(format!("{term:?} is not valid"));
        }
    }
    Ok(())
}

fn validate_origin(url: &str) -> Result<(), ConfigError> {
    let bad = |problem: &str| ConfigError::BadUrl {
        url: url.to_string(),
        problem: problem.to_string(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "it must not contain credentials; use --leaf-username/--leaf-token",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("it must not have a query or fragment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["leaf-operator"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).expect("arguments parse")
    }

    #[test]
    fn defaults_are_valid_and_watch_all_namespaces() {
        let config = parse(&[]);
        assert_eq!(config.validate(), Ok(()));
        assert!(config.namespaces().is_empty());
        assert_eq!(config.concurrency, 16);
        assert_eq!(config.leaf_timeout, Duration::from_secs(30));
        assert!(config.default_account().current().is_none());
        assert_eq!(config.http_addr.to_string(), "[::]:8080");
    }

    #[test]
    fn token_and_username_together_are_refused() {
        let config = parse(&[
            "--leaf-token",
            "t",
            "--leaf-username",
            "u",
            "--leaf-password",
            "p",
        ]);
        assert_eq!(config.validate(), Err(ConfigError::TokenAndUsername));
    }

    #[test]
    fn username_without_password_is_refused() {
        let config = parse(&["--leaf-username", "u"]);
        assert_eq!(config.validate(), Err(ConfigError::UsernameWithoutPassword));
    }

    #[test]
    fn bad_values_are_refused_with_a_message() {
        for (args, expected) in [
            (vec!["--leaf-api-url", "ftp://x"], "scheme"),
            (vec!["--leaf-api-url", "not a url"], "not a valid"),
            (vec!["--leaf-requests-per-second", "0"], "above 0"),
            (vec!["--concurrency", "0"], "at least 1"),
            (vec!["--watch-namespaces", "a,B_x"], "B_x"),
            (vec!["--leader-election"], "POD_NAMESPACE"),
            (
                vec!["--leaf-account-dir", "/x", "--leaf-token", "t"],
                "one way",
            ),
            (
                vec![
                    "--leader-election-lease-duration",
                    "5s",
                    "--leader-election-renew-period",
                    "5s",
                ],
                "shorter than",
            ),
        ] {
            let error = parse(&args).validate().expect_err("invalid").to_string();
            assert!(error.contains(expected), "{args:?}: {error}");
        }
    }

    #[test]
    fn namespaces_are_split_trimmed_and_deduplicated() {
        let config = parse(&["--watch-namespaces", "b, a,,b"]);
        assert_eq!(config.namespaces(), vec!["a", "b"]);
    }

    #[test]
    fn label_selectors_are_checked() {
        for good in [
            "",
            "shard=a",
            "shard==a,team!=x",
            "example.com/shard=a",
            "shard in (a, b),!legacy",
            "env notin (dev)",
            "managed",
        ] {
            assert_eq!(validate_label_selector(good), Ok(()), "{good}");
        }
        for bad in [
            "shard=a,",
            "=a",
            "shard=a b",
            "shard in a",
            "x in (a",
            "sh@rd=a",
            "/x=a",
        ] {
            assert!(validate_label_selector(bad).is_err(), "{bad}");
        }
        let config = parse(&["--label-selector", "shard=a,"]);
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("LABEL_SELECTOR")
        );
        assert_eq!(
            parse(&["--label-selector", " shard=a "])
                .label_selector()
                .as_deref(),
            Some("shard=a")
        );
    }

    #[test]
    fn the_own_pod_needs_its_name_and_namespace() {
        let pod = parse(&[
            "--pod-name",
            "op-1",
            "--leader-election-namespace",
            "ops",
            "--pod-uid",
            "u-1",
        ])
        .own_pod()
        .expect("a pod");
        assert_eq!(
            (
                pod.name.as_str(),
                pod.namespace.as_str(),
                pod.uid.as_deref()
            ),
            ("op-1", "ops", Some("u-1"))
        );
        let no_namespace = parse(&["--pod-name", "op-1", "--leader-election-namespace", ""]);
        assert_eq!(no_namespace.own_pod(), None);
    }

    #[test]
    fn the_leader_pod_label_needs_a_pod_and_a_label_key() {
        let pod = ["--pod-name", "op-1", "--leader-election-namespace", "ops"];
        let with = |label: &str| {
            let mut args = pod.to_vec();
            args.extend(["--leader-pod-label", label]);
            parse(&args)
        };
        assert_eq!(with("withleaf.io/leader").validate(), Ok(()));
        assert_eq!(
            with("withleaf.io/leader")
                .leader_pod_label()
                .map(|(p, k)| (p.name, k)),
            Some(("op-1".to_string(), "withleaf.io/leader".to_string()))
        );
        assert_eq!(with("").leader_pod_label(), None, "off");
        for bad in ["a b", "/leader", "Ex.ample/x", "leader-"] {
            assert!(
                matches!(with(bad).validate(), Err(ConfigError::BadLeaderPodLabel(_))),
                "{bad}"
            );
        }
        let no_pod = parse(&[
            "--leader-pod-label",
            "leader",
            "--leader-election-namespace",
            "",
        ]);
        assert!(matches!(
            no_pod.validate(),
            Err(ConfigError::BadLeaderPodLabel(_))
        ));
    }

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
            crate::alerts::registration::RecordLocation {
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
    fn debug_never_shows_the_password() {
        let config = parse(&["--leaf-username", "u", "--leaf-password", "hunter2-planted"]);
        assert!(!format!("{config:?}").contains("hunter2-planted"));
    }
}
