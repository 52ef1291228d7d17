//! The webhook signing secret: read from a Kubernetes Secret, watched for changes, held so that
//! it can only be used to verify or register, never printed.
//!
//! After a change the previous secret is still accepted for [`PREVIOUS_GRACE`]: deliveries Leaf
//! signed before the webhook was re-registered (or, with a secret-only setup, before the user
//! updated Leaf) are still in flight or being retried. Surrounding whitespace is trimmed, because
//! `kubectl create secret --from-file` keeps a file's trailing newline, which is never meant.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use super::signature::{self, SignatureError};

/// How long the previous secret stays valid after a change.
pub const PREVIOUS_GRACE: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Keys {
    current: Option<SecretString>,
    previous: Option<(SecretString, Instant)>,
}

/// The secrets deliveries are verified with. Cheap to share behind an `Arc`.
pub struct SigningKeys {
    keys: RwLock<Keys>,
    /// Bumped on every change, so the registration loop re-registers at once.
    version: watch::Sender<u64>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("loaded", &self.is_loaded())
            .finish_non_exhaustive()
    }
}

impl Default for SigningKeys {
    fn default() -> Self {
        Self {
            keys: RwLock::new(Keys::default()),
            version: watch::channel(0).0,
        }
    }
}

impl SigningKeys {
    /// Keys holding `secret` already (tests, or a secret given another way).
    pub fn with(secret: &str) -> Self {
        let keys = Self::default();
        keys.set(Some(SecretString::from(secret.to_string())), Instant::now());
        keys
    }

    /// Replaces the current secret; the one it replaces stays valid for [`PREVIOUS_GRACE`].
    /// An empty value counts as none.
    pub fn set(&self, secret: Option<SecretString>, now: Instant) {
        let secret = secret.filter(|s| !s.expose_secret().is_empty());
        let mut keys = self.keys.write().expect("keys lock");
        let same = match (&keys.current, &secret) {
            (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        if let Some(old) = keys.current.take() {
            keys.previous = Some((old, now + PREVIOUS_GRACE));
        }
        keys.current = secret;
        drop(keys);
        self.version.send_modify(|v| *v += 1);
    }

    pub fn is_loaded(&self) -> bool {
        self.keys.read().expect("keys lock").current.is_some()
    }

    /// The current secret, for registering the webhook.
    pub fn current(&self) -> Option<SecretString> {
        self.keys.read().expect("keys lock").current.clone()
    }

    /// Counts the changes so far: the same number means the same secret (the receiver counts a
    /// signed registration confirmation once per secret).
    pub fn generation(&self) -> u64 {
        *self.version.borrow()
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Verifies `header` over `body` with the current secret and, within its grace period,
    /// the previous one.
    pub fn verify(
        &self,
        body: &[u8],
        header: Option<&[u8]>,
        now: Instant,
    ) -> Result<(), SignatureError> {
        let keys = self.keys.read().expect("keys lock");
        let mut secrets: Vec<&[u8]> = Vec::with_capacity(2);
        if let Some(current) = &keys.current {
            secrets.push(current.expose_secret().as_bytes());
        }
        if let Some((previous, until)) = &keys.previous
            && now < *until
        {
            secrets.push(previous.expose_secret().as_bytes());
        }
        if secrets.is_empty() {
            // Nothing to verify with: a header, if any, cannot be right.
            return Err(header.map_or(SignatureError::Missing, |_| SignatureError::Mismatch));
        }
        signature::verify(secrets, body, header)
    }
}

/// Where the signing secret lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretLocation {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// Watches the Secret (only that one object, by field selector) and keeps `keys` current until
/// the future is dropped. A missing Secret or key means no secret: the receiver then answers 503.
pub async fn watch(client: kube::Client, location: SecretLocation, keys: Arc<SigningKeys>) {
    let api: Api<Secret> = Api::namespaced(client, &location.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", location.name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listed: Option<SecretString> = None;
    let mut warned_missing = false;
    while let Some(event) = events.next().await {
        let value = |secret: &Secret| {
            secret
                .data
                .as_ref()
                .and_then(|data| data.get(&location.key))
                .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
                .map(|text| SecretString::from(text.trim().to_string()))
                .filter(|s| !s.expose_secret().is_empty())
        };
        let found = match event {
            Ok(watcher::Event::Apply(secret)) => value(&secret),
            Ok(watcher::Event::Delete(_)) => None,
            Ok(watcher::Event::Init) => {
                listed = None;
                continue;
            }
            Ok(watcher::Event::InitApply(secret)) => {
                listed = value(&secret);
                continue;
            }
            Ok(watcher::Event::InitDone) => listed.take(),
            Err(error) => {
                tracing::warn!(%error, namespace = %location.namespace, name = %location.name, "cannot watch the alerts signing Secret");
                continue;
            }
        };
        if found.is_none() && !warned_missing {
            tracing::warn!(
                namespace = %location.namespace,
                name = %location.name,
                key = %location.key,
                "the alerts signing Secret or its key is missing: the receiver answers 503 until it exists"
            );
        }
        warned_missing = found.is_none();
        if found.is_some() {
            tracing::info!(namespace = %location.namespace, name = %location.name, "alerts signing secret loaded");
        }
        keys.set(found, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_secret_is_accepted_only_within_its_grace() {
        let t0 = Instant::now();
        let keys = SigningKeys::default();
        assert!(!keys.is_loaded());
        assert_eq!(
            keys.verify(b"x", None, t0),
            Err(SignatureError::Missing),
            "no secret, no header"
        );
        keys.set(Some(SecretString::from("old")), t0);
        let changes = keys.subscribe();
        keys.set(Some(SecretString::from("new")), t0);
        assert!(changes.has_changed().unwrap(), "a change is announced");
        let old = signature::sign(b"old", b"body");
        let new = signature::sign(b"new", b"body");
        assert_eq!(keys.verify(b"body", Some(new.as_bytes()), t0), Ok(()));
        assert_eq!(keys.verify(b"body", Some(old.as_bytes()), t0), Ok(()));
        assert_eq!(
            keys.verify(b"body", Some(old.as_bytes()), t0 + PREVIOUS_GRACE),
            Err(SignatureError::Mismatch)
        );
        let unchanged = keys.subscribe();
        keys.set(Some(SecretString::from("new")), t0);
        assert!(!unchanged.has_changed().unwrap(), "same value: no change");
        assert_eq!(
            keys.generation(),
            2,
            "two changes, the same value once more is none"
        );
        assert!(!format!("{keys:?}").contains("new"));
    }

    #[test]
    fn an_empty_secret_is_no_secret() {
        let keys = SigningKeys::with("s");
        keys.set(Some(SecretString::from("")), Instant::now());
        assert!(!keys.is_loaded());
        assert!(keys.current().is_none());
    }
}
