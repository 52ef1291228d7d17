//! A Leaf API account (username and password, or a static token) with a redacting `Debug`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The operator's identity at Leaf. Secrets never appear in `Debug` output.
#[derive(Clone)]
pub enum LeafAccount {
    /// Logs in at `POST /api/authenticate`; the token is cached and renewed by the client.
    Password {
        username: String,
        password: SecretString,
    },
    /// A token used as-is; the client can never renew it.
    Token(SecretString),
}

/// Identifies an account for the token cache without containing any secret: the username (not a
/// secret) plus a short digest, so a changed password or token is a different account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey(String);

impl AccountKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl LeafAccount {
    pub fn password(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::Password {
            username: username.into(),
            password: SecretString::from(password.into()),
        }
    }

    pub fn token(token: impl Into<String>) -> Self {
        Self::Token(SecretString::from(token.into()))
    }

    /// The token-cache key of this account.
    pub fn account_key(&self) -> AccountKey {
        match self {
            Self::Password { username, password } => {
                let digest =
                    short_digest(&[username.as_bytes(), password.expose_secret().as_bytes()]);
                AccountKey(format!("password:{username}:{digest}"))
            }
            Self::Token(token) => AccountKey(format!(
                "token:{}",
                short_digest(&[token.expose_secret().as_bytes()])
            )),
        }
    }

    /// Whether the client may log in again for this account (static tokens cannot be renewed).
    pub fn can_login(&self) -> bool {
        matches!(self, Self::Password { .. })
    }
}

impl fmt::Debug for LeafAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"[REDACTED]")
                .finish(),
            Self::Token(_) => f.debug_tuple("Token").field(&"[REDACTED]").finish(),
        }
    }
}

/// 64 bits of SHA-256 over the parts, each length-prefixed so that parts cannot run together.
fn short_digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"leaf-operator/account-key/v1");
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_key_never_show_the_password_or_token() {
        let password = LeafAccount::password("ops@example.com", "hunter2-very-secret");
        let token = LeafAccount::token("static-token-value-123");
        for text in [
            format!("{password:?}"),
            format!("{password:#?}"),
            format!("{token:?}"),
            password.account_key().to_string(),
            token.account_key().to_string(),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("static-token-value"), "{text}");
        }
        assert!(format!("{password:?}").contains("ops@example.com"));
    }

    #[test]
    fn account_key_changes_with_the_secret() {
        let a = LeafAccount::password("u", "p1").account_key();
        let b = LeafAccount::password("u", "p2").account_key();
        assert_ne!(a, b);
        assert_eq!(a, LeafAccount::password("u", "p1").account_key());
        assert_ne!(
            LeafAccount::token("t1").account_key(),
            LeafAccount::token("t2").account_key()
        );
    }
}
