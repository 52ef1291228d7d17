//! What the Leaf side is built from: the operator's default Leaf account (`--leaf-account-dir`, or
//! `--leaf-username` with `--leaf-password`, or `--leaf-token`).

use super::Config;
use crate::default_account::DefaultAccount;
use crate::leaf::LeafAccount;

impl Config {
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
}
