//! Reads the Secrets a TrimbleConnection references into typed, redacted values.
//!
//! Values are `SecretString`s the moment they leave the API response, so they cannot be printed by
//! accident. Errors name the Secret and the key, never a value. The fingerprint identifies the
//! values last sent to Leaf without revealing anything about them.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::crd::{CredentialsSecretRef, SecretRef};
use crate::leaf::LeafAccount;

/// The Trimble application's and the grower's credentials, as found in the Secret.
#[derive(Clone)]
pub struct TrimbleSecret {
    /// The Trimble application's client ID. Not a secret by itself, but still never logged.
    pub client_id: String,
    pub client_secret: SecretString,
    pub refresh_token: SecretString,
    /// Short hash of the three values; equal fingerprints mean equal values.
    pub fingerprint: String,
    /// Short hash of the refresh token alone: a Trimble refresh token works once, so one that was
    /// sent before is never sent again, whatever else changed.
    pub refresh_token_fingerprint: String,
}

impl std::fmt::Debug for TrimbleSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrimbleSecret")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why a referenced Secret could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {name:?} not found")]
    NotFound { name: String },
    #[error("Secret {name:?} has no key {key:?}")]
    MissingKey { name: String, key: String },
    #[error("Secret {name:?} key {key:?} is empty")]
    EmptyKey { name: String, key: String },
    #[error("Secret {name:?} key {key:?} is not UTF-8 text")]
    NotText { name: String, key: String },
    #[error("Secret {name:?} needs key \"token\", or keys \"username\" and \"password\"")]
    NoLeafAccount { name: String },
    #[error("failed to read Secret {name:?}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl SecretError {
    /// True when the Secret does not exist (a waiting state), false when it exists but is unusable
    /// or could not be read.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SecretError::NotFound { .. })
    }
}

/// Fingerprint of the three values: the first 16 hex characters of a SHA-256 over them, with
/// separators so that moving characters between values changes it.
pub fn fingerprint(client_id: &str, client_secret: &str, refresh_token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"trimble-v1\0");
    for value in [client_id, client_secret, refresh_token] {
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
        hasher.update(b"\0");
    }
    let digest = hex::encode(hasher.finalize());
    digest[..16].to_string()
}

/// Fingerprint of a clientId alone, so that an interrupted create can recognise the credential it
/// made after the Secret changed, without the status holding the clientId itself.
pub fn client_id_fingerprint(client_id: &str) -> String {
    short_hash(b"trimble-client-id-v1\0", client_id)
}

/// Fingerprint of a refresh token alone (64 bits of SHA-256: it tells tokens apart and reveals
/// nothing of a high-entropy token).
pub fn refresh_token_fingerprint(refresh_token: &str) -> String {
    short_hash(b"trimble-refresh-token-v1\0", refresh_token)
}

/// Fingerprint of a Magic Link's id (the bearer part of its URL): the status tells links apart by
/// it without holding anything that opens one.
pub fn magic_link_fingerprint(id: &str) -> String {
    short_hash(b"leaf-magic-link-id-v1\0", id)
}

fn short_hash(domain: &[u8], value: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    hasher.update(value.as_bytes());
    hex::encode(hasher.finalize())[..16].to_string()
}

async fn get_secret(api: &Api<Secret>, name: &str) -> Result<Secret, SecretError> {
    match api.get_opt(name).await {
        Ok(Some(secret)) => Ok(secret),
        Ok(None) => Err(SecretError::NotFound {
            name: name.to_string(),
        }),
        Err(source) => Err(SecretError::Api {
            name: name.to_string(),
            source,
        }),
    }
}

/// Value of `key` as text; `None` when absent. Both `data` and `stringData` are consulted because
/// an API server stores `stringData` into `data`, but a fake or a dry run may not.
fn value(secret: &Secret, name: &str, key: &str) -> Result<Option<SecretString>, SecretError> {
    if let Some(bytes) = secret.data.as_ref().and_then(|data| data.get(key)) {
        let text = String::from_utf8(bytes.0.clone()).map_err(|_| SecretError::NotText {
            name: name.to_string(),
            key: key.to_string(),
        })?;
        return Ok(Some(SecretString::from(text)));
    }
    Ok(secret
        .string_data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|text| SecretString::from(text.clone())))
}

fn required(secret: &Secret, name: &str, key: &str) -> Result<SecretString, SecretError> {
    let found = value(secret, name, key)?.ok_or_else(|| SecretError::MissingKey {
        name: name.to_string(),
        key: key.to_string(),
    })?;
    if found.expose_secret().trim().is_empty() {
        return Err(SecretError::EmptyKey {
            name: name.to_string(),
            key: key.to_string(),
        });
    }
    Ok(found)
}

/// Parses the Trimble credentials out of a Secret object.
pub fn parse_trimble_secret(
    secret: &Secret,
    reference: &CredentialsSecretRef,
) -> Result<TrimbleSecret, SecretError> {
    let name = reference.name.as_str();
    let client_id = required(secret, name, &reference.client_id_key)?;
    let client_secret = required(secret, name, &reference.client_secret_key)?;
    let refresh_token = required(secret, name, &reference.refresh_token_key)?;
    // Surrounding whitespace (a trailing newline from `kubectl create secret --from-file`) is never
    // part of an OAuth value, so it is dropped before sending and hashing.
    let client_id = client_id.expose_secret().trim().to_string();
    let client_secret = SecretString::from(client_secret.expose_secret().trim());
    let refresh_token = SecretString::from(refresh_token.expose_secret().trim());
    let fingerprint = fingerprint(
        &client_id,
        client_secret.expose_secret(),
        refresh_token.expose_secret(),
    );
    let refresh_token_fingerprint = refresh_token_fingerprint(refresh_token.expose_secret());
    Ok(TrimbleSecret {
        client_id,
        client_secret,
        refresh_token,
        fingerprint,
        refresh_token_fingerprint,
    })
}

/// Reads the credentials Secret a TrimbleConnection references.
pub async fn read_trimble_secret(
    api: &Api<Secret>,
    reference: &CredentialsSecretRef,
) -> Result<TrimbleSecret, SecretError> {
    let secret = get_secret(api, &reference.name).await?;
    parse_trimble_secret(&secret, reference)
}

/// Parses a Leaf API account out of a Secret: key `token`, or keys `username` and `password`.
pub fn parse_leaf_account(secret: &Secret, name: &str) -> Result<LeafAccount, SecretError> {
    let non_empty = |key: &str| -> Result<Option<SecretString>, SecretError> {
        Ok(value(secret, name, key)?.filter(|v| !v.expose_secret().trim().is_empty()))
    };
    if let Some(token) = non_empty("token")? {
        return Ok(LeafAccount::Token(SecretString::from(
            token.expose_secret().trim(),
        )));
    }
    match (non_empty("username")?, non_empty("password")?) {
        (Some(username), Some(password)) => Ok(LeafAccount::Password {
            username: username.expose_secret().trim().to_string(),
            password,
        }),
        (Some(_), None) => Err(match value(secret, name, "password")? {
            Some(_) => SecretError::EmptyKey {
                name: name.to_string(),
                key: "password".to_string(),
            },
            None => SecretError::MissingKey {
                name: name.to_string(),
                key: "password".to_string(),
            },
        }),
        _ => Err(SecretError::NoLeafAccount {
            name: name.to_string(),
        }),
    }
}

/// Reads the Leaf API account Secret a TrimbleConnection references.
pub async fn read_leaf_account(
    api: &Api<Secret>,
    reference: &SecretRef,
) -> Result<LeafAccount, SecretError> {
    let secret = get_secret(api, &reference.name).await?;
    parse_leaf_account(&secret, &reference.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    fn reference() -> CredentialsSecretRef {
        serde_json::from_value(serde_json::json!({"name": "creds"})).expect("reference")
    }

    #[test]
    fn complete_secret_parses_with_a_stable_fingerprint() {
        let s = secret(&[
            ("clientId", "id"),
            ("clientSecret", "cs"),
            ("refreshToken", "rt\n"),
        ]);
        let parsed = parse_trimble_secret(&s, &reference()).expect("parses");
        assert_eq!(parsed.client_id, "id");
        assert_eq!(parsed.refresh_token.expose_secret(), "rt");
        assert_eq!(parsed.fingerprint, fingerprint("id", "cs", "rt"));
        assert_eq!(parsed.fingerprint.len(), 16);
        assert!(!format!("{parsed:?}").contains("cs"));
    }

    #[test]
    fn fingerprint_changes_with_any_value_and_with_boundaries() {
        let base = fingerprint("a", "b", "c");
        assert_ne!(base, fingerprint("a", "b", "d"));
        assert_ne!(base, fingerprint("x", "b", "c"));
        assert_ne!(fingerprint("ab", "", "c"), fingerprint("a", "b", "c"));
    }

    #[test]
    fn missing_and_empty_keys_are_named_without_values() {
        let s = secret(&[("clientId", "id"), ("clientSecret", "super-secret-value")]);
        let error = parse_trimble_secret(&s, &reference()).expect_err("incomplete");
        assert!(matches!(error, SecretError::MissingKey { ref key, .. } if key == "refreshToken"));
        let s = secret(&[
            ("clientId", "id"),
            ("clientSecret", "super-secret-value"),
            ("refreshToken", " "),
        ]);
        let error = parse_trimble_secret(&s, &reference()).expect_err("empty");
        assert!(error.to_string().contains("refreshToken"), "{error}");
        assert!(!error.to_string().contains("super-secret-value"));
    }

    #[test]
    fn leaf_account_prefers_token_and_needs_both_username_and_password() {
        assert!(matches!(
            parse_leaf_account(&secret(&[("token", "t")]), "leaf"),
            Ok(LeafAccount::Token(_))
        ));
        assert!(matches!(
            parse_leaf_account(&secret(&[("username", "u"), ("password", "p")]), "leaf"),
            Ok(LeafAccount::Password { .. })
        ));
        let error =
            parse_leaf_account(&secret(&[("username", "u")]), "leaf").expect_err("no password");
        assert!(error.to_string().contains("password"));
        assert!(matches!(
            parse_leaf_account(&secret(&[]), "leaf"),
            Err(SecretError::NoLeafAccount { .. })
        ));
    }
}
