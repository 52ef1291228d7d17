//! The operator's configuration: command-line flags with environment equivalents, validated at start.
//!
//! Every flag has an environment variable so that a Deployment can set it either way. Values that
//! are secrets (the Leaf password and token) are held in `SecretString` and never printed, not even
//! by `--help` (their environment values are hidden). The default Leaf account is best given as a
//! directory (`--leaf-account-dir`, a mounted Secret) because it is re-read when it changes; the
//! environment variables remain as a fallback that only a restart can change.
//!
//! Layout: this file holds the flags (the clap [`Config`]), [`Config::validate`] (every check, in
//! the order they are made) and a `Debug` that redacts the secrets. What each part of the operator
//! is built from lives in a file of its own, as an `impl Config` returning that part's settings:
//! - `leaf`: the Leaf client's settings and the default Leaf account;
//! - `controller`: the controller's `Settings`, the namespaces and the label selector;
//! - `leader`: leader election and the fence, this replica's identity, its Pod and leader label;
//! - `alerts`: the alerts receiver, registration and health thresholds, and their checks;
//! - `selector`: the syntax of label keys and label selectors.
//!
//! Why the builders live here and not in the modules they build for: they read flags, and the
//! checks here need those modules' types (a Secret location, a Leaf account, an own Pod). A
//! `from_config` in `leaf`, `leader` or `alerts` would make each of them import `config` while
//! `config` imports them, a cycle in a crate that has none, and would tie the Leaf seam to the
//! command line. So the subsystems know nothing of flags, `config` sits just below `main`, and each
//! subsystem's file here is the one place that says how its flags become its settings.

mod alerts;
mod controller;
mod leader;
mod leaf;
mod selector;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

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

    /// Observe only: every TrimbleConnection is handled as `managementPolicy: Observe` whatever
    /// its spec says. The operator reads Leaf and reports what it would do, and never creates or
    /// deletes a credential: for pointing it at an existing Leaf account first.
    #[arg(long, env = "OBSERVE_ONLY", default_value_t = false, action = ArgAction::Set)]
    pub observe_only: bool,

    /// `reauthorization.policy` of every TrimbleConnection that does not set `spec.reauthorization`:
    /// `None` (report and wait for a person) or `MagicLink` (issue a Leaf Magic Link for the grower).
    #[arg(long, env = "REAUTHORIZATION_DEFAULT", default_value = "None", value_parser = parse_reauthorization)]
    pub reauthorization_default: crate::crd::ReauthorizationPolicy,

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
            .field("observe_only", &self.observe_only)
            .field("reauthorization_default", &self.reauthorization_default)
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
        if let Err(problem) = selector::validate(&self.label_selector) {
            return Err(ConfigError::BadLabelSelector {
                selector: self.label_selector.clone(),
                problem,
            });
        }
        self.validate_alerts()
    }
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

/// The configuration these arguments give (for the tests of every file of this module).
/// `--reauthorization-default`: the policy's own spelling.
fn parse_reauthorization(value: &str) -> Result<crate::crd::ReauthorizationPolicy, String> {
    match value {
        "None" => Ok(crate::crd::ReauthorizationPolicy::None),
        "MagicLink" => Ok(crate::crd::ReauthorizationPolicy::MagicLink),
        other => Err(format!(
            "{other:?} is not a reauthorization policy: use None or MagicLink"
        )),
    }
}

#[cfg(test)]
fn parse(args: &[&str]) -> Config {
    let mut all = vec!["leaf-operator"];
    all.extend_from_slice(args);
    Config::try_parse_from(all).expect("arguments parse")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn debug_never_shows_the_password() {
        let config = parse(&["--leaf-username", "u", "--leaf-password", "hunter2-planted"]);
        assert!(!format!("{config:?}").contains("hunter2-planted"));
    }
}
