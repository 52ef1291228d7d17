//! What the Leaf side is built from: the Leaf client's settings (`--leaf-api-url`, the timeout,
//! the request rate) and the operator's default Leaf account (`--leaf-account-dir`, or
//! `--leaf-username` with `--leaf-password`, or `--leaf-token`).

use std::time::Duration;

use super::Config;
use crate::default_account::DefaultAccount;
use crate::leaf::{LeafAccount, LeafClientConfig};

impl Config {
    /// How the Leaf client reaches Leaf and how hard it may push.
    pub fn leaf_client(&self) -> LeafClientConfig {
        LeafClientConfig {
            origin: self.leaf_api_url.clone(),
            // The client's default of 10 s, but never longer than a whole request may take.
            connect_timeout: Duration::from_secs(10).min(self.leaf_timeout),
            request_timeout: self.leaf_timeout,
            requests_per_second: self.leaf_requests_per_second,
            burst: self.leaf_burst,
        }
    }

    /// The operator-wide Leaf account: the directory when one is given, else the fixed values.
    pub fn default_account(&self) -> DefaultAccount {
        DefaultAccount::from_sources(self.leaf_account_dir.as_deref(), self.fixed_account())
    }

    /// The default account from flags or environment variables, if given.
    pub(super) fn fixed_account(&self) -> Option<LeafAccount> {
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
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigError, parse};
    use super::*;

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
    fn the_default_account_is_the_directory_else_the_fixed_values() {
        assert!(parse(&[]).default_account().current().is_none());
        assert!(matches!(
            parse(&["--leaf-token", "t"]).default_account().current(),
            Some(LeafAccount::Token(_))
        ));
        assert!(matches!(
            parse(&["--leaf-username", "u", "--leaf-password", "p"])
                .default_account()
                .current(),
            Some(LeafAccount::Password { username, .. }) if username == "u"
        ));
        assert_eq!(
            parse(&["--leaf-account-dir", "/run/leaf"])
                .default_account()
                .describe(),
            "files in /run/leaf, re-read on change"
        );
    }

    #[test]
    fn the_leaf_client_connects_within_10s_and_never_longer_than_a_request() {
        let client = parse(&[
            "--leaf-api-url",
            "http://127.0.0.1:9",
            "--leaf-timeout",
            "45s",
            "--leaf-requests-per-second",
            "2.5",
            "--leaf-burst",
            "3",
        ])
        .leaf_client();
        assert_eq!(
            client,
            LeafClientConfig {
                origin: "http://127.0.0.1:9".to_string(),
                connect_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(45),
                requests_per_second: 2.5,
                burst: 3,
            }
        );
        let short = parse(&["--leaf-timeout", "3s"]).leaf_client();
        assert_eq!(short.connect_timeout, Duration::from_secs(3));
    }
}
