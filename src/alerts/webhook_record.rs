//! The webhook record: which Leaf webhook this operator created, kept in the cluster so that a
//! restart (or the next leader) knows it. Leaf's webhooks carry no owner, label or creation time,
//! so without a record "ours" could only be guessed from the name, and two clusters on one Leaf
//! account installed with the same defaults would delete each other's webhook (issue 16).
//!
//! Where: a ConfigMap `<lease name>-alerts-webhook` next to the signing Secret (the operator's
//! namespace in the chart and the manifests), labelled `app.kubernetes.io/component:
//! alerts-webhook`. Why a ConfigMap and not an annotation on the leader Lease: without leader
//! election there is no Lease, and the record must work in both modes; a ConfigMap also shows
//! its content to `kubectl get -o yaml` as plain keys. Why next to the signing Secret: the
//! alerts Role that grants that Secret is the one place that grants this ConfigMap, so the two
//! are always in the same namespace, with or without POD_NAMESPACE. Why named after the Lease:
//! each shard (a deployment with its own Lease) keeps its own record. It has no owner reference
//! on purpose: it must outlive every Pod and Deployment rollout, like the webhook itself (delete
//! it together with the webhook when removing the operator for good).
//!
//! What: the id of the webhook we created (or adopted), and, while a create's answer is still
//! unknown, the create's *intent*: when it started, the name and URL sent, and a fingerprint of
//! the signing secret sent (never the secret: the fingerprint is 64 bits of a SHA-256, like the
//! Secret fingerprints in TrimbleConnection status). `registration::plan` reads it.
//!
//! Every write is a compare-and-swap: create when absent (409 if someone created it meanwhile),
//! replace with the `resourceVersion` read (409 if it changed), so two replicas that both believe
//! they lead cannot overwrite each other's intent unnoticed. RBAC: `create` on configmaps (it
//! cannot be limited to a name: the name is in the body) and `get`, `update` on this one name.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use sha2::{Digest, Sha256};

use crate::crd::FIELD_MANAGER;

/// Appended to the Lease name to name the ConfigMap.
pub const RECORD_SUFFIX: &str = "-alerts-webhook";
/// `app.kubernetes.io/component` of the ConfigMap.
pub const COMPONENT: &str = "alerts-webhook";

// The ConfigMap's keys. `create*` are present only while a create's answer is unknown.
const KEY_ID: &str = "webhookId";
const KEY_NAME: &str = "webhookName";
const KEY_URL: &str = "webhookUrl";
const KEY_CREATE_STARTED: &str = "createStartedAt";
const KEY_CREATE_NAME: &str = "createName";
const KEY_CREATE_URL: &str = "createUrl";
const KEY_CREATE_SECRET: &str = "createSecretFingerprint";

/// A Kubernetes API call that takes longer than this is given up (and retried at the next
/// check): a hung write must not stall the registration loop.
const API_TIMEOUT: Duration = Duration::from_secs(15);

/// The ConfigMap's name for the leader-election Lease `lease`.
pub fn record_name(lease: &str) -> String {
    format!("{lease}{RECORD_SUFFIX}")
}

/// Whether `name` can name a ConfigMap (a DNS subdomain: lowercase alphanumerics, `-` and `.`,
/// starting and ending alphanumeric, at most 253 characters).
pub fn valid_record_name(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| alnum(c) || c == '-' || c == '.')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
}

/// Fingerprint of a signing secret: the first 16 hex characters of a SHA-256 over a tag and the
/// secret. It recognises the secret a lost create sent; it cannot be turned back into it (use a
/// long random signing secret, as docs/push-vs-poll.md says: a short word could be guessed).
pub fn secret_fingerprint(secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"leaf-alerts-signing-secret-v1\0");
    hasher.update(secret.as_bytes());
    hex::encode(hasher.finalize())[..16].to_string()
}

/// A webhook create whose answer has not been seen yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateIntent {
    /// When the last POST of it began.
    pub started_at: Timestamp,
    pub name: String,
    pub url: String,
    /// [`secret_fingerprint`] of the signing secret sent.
    pub secret_fingerprint: String,
}

/// What the ConfigMap says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookRecord {
    /// The id of the webhook this operator created or adopted.
    pub webhook_id: Option<String>,
    /// The name and URL it had when recorded (for people reading the ConfigMap; the plan
    /// compares Leaf's own values).
    pub webhook_name: Option<String>,
    pub webhook_url: Option<String>,
    /// A create in doubt.
    pub intent: Option<CreateIntent>,
}

impl WebhookRecord {
    /// A record holding webhook `id`, with no create in doubt.
    pub fn holding(id: &str, name: &str, url: &str) -> Self {
        Self {
            webhook_id: Some(id.to_string()),
            webhook_name: Some(name.to_string()),
            webhook_url: Some(url.to_string()),
            intent: None,
        }
    }

    /// The ConfigMap's data.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::new();
        let mut put = |key: &str, value: Option<&str>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                data.insert(key.to_string(), value.to_string());
            }
        };
        put(KEY_ID, self.webhook_id.as_deref());
        put(KEY_NAME, self.webhook_name.as_deref());
        put(KEY_URL, self.webhook_url.as_deref());
        if let Some(intent) = &self.intent {
            put(KEY_CREATE_STARTED, Some(&intent.started_at.to_string()));
            put(KEY_CREATE_NAME, Some(&intent.name));
            put(KEY_CREATE_URL, Some(&intent.url));
            put(KEY_CREATE_SECRET, Some(&intent.secret_fingerprint));
        }
        data
    }

    /// Reads the ConfigMap's data. Lenient and cautious: a key that is missing or unreadable
    /// (a person edited it) reads as absent, and an intent is kept only when all its keys read.
    /// Absent only ever makes the plan more careful: a webhook it cannot prove ours is foreign,
    /// and foreign is never deleted. Returns the record and the keys that could not be read.
    pub fn from_data(data: &BTreeMap<String, String>) -> (Self, Vec<&'static str>) {
        let text = |key: &str| {
            data.get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut unreadable = Vec::new();
        let started = text(KEY_CREATE_STARTED);
        let started_at = started.as_deref().and_then(|s| s.parse::<Timestamp>().ok());
        if started.is_some() && started_at.is_none() {
            unreadable.push(KEY_CREATE_STARTED);
        }
        let fingerprint = text(KEY_CREATE_SECRET);
        let fingerprint_ok = fingerprint
            .as_deref()
            .is_some_and(|f| f.len() == 16 && f.chars().all(|c| c.is_ascii_hexdigit()));
        if fingerprint.is_some() && !fingerprint_ok {
            unreadable.push(KEY_CREATE_SECRET);
        }
        let intent = match (
            started_at,
            text(KEY_CREATE_NAME),
            text(KEY_CREATE_URL),
            fingerprint.filter(|_| fingerprint_ok),
        ) {
            (Some(started_at), Some(name), Some(url), Some(secret_fingerprint)) => {
                Some(CreateIntent {
                    started_at,
                    name,
                    url,
                    secret_fingerprint: secret_fingerprint.to_ascii_lowercase(),
                })
            }
            (None, None, None, None) => None,
            _ => {
                if unreadable.is_empty() {
                    unreadable.push("create*");
                }
                None
            }
        };
        let record = Self {
            webhook_id: text(KEY_ID),
            webhook_name: text(KEY_NAME),
            webhook_url: text(KEY_URL),
            intent,
        };
        (record, unreadable)
    }
}

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("failed to read the webhook record ConfigMap {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to write the webhook record ConfigMap {namespace}/{name}: {source}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the webhook record ConfigMap {namespace}/{name} changed since it was read (another replica?); nothing was sent to Leaf"
    )]
    Conflict { namespace: String, name: String },
    #[error(
        "the Kubernetes API did not answer within {API_TIMEOUT:?} about ConfigMap {namespace}/{name}"
    )]
    Timeout { namespace: String, name: String },
}

/// The record as last read or written, with what a compare-and-swap needs.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// None: there is no ConfigMap (this version never ran here, or someone deleted it).
    pub record: Option<WebhookRecord>,
    /// The ConfigMap as read, for the next replace (labels and annotations others set are kept).
    object: Option<ConfigMap>,
}

/// Reads and writes the one ConfigMap.
#[derive(Clone)]
pub struct RecordStore {
    api: Api<ConfigMap>,
    pub namespace: String,
    pub name: String,
}

impl RecordStore {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn timeout(&self) -> RecordError {
        RecordError::Timeout {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// GETs the ConfigMap; returns the record and the keys that could not be read.
    pub async fn load(&self) -> Result<(Stored, Vec<&'static str>), RecordError> {
        let object = tokio::time::timeout(API_TIMEOUT, self.api.get_opt(&self.name))
            .await
            .map_err(|_| self.timeout())?
            .map_err(|source| RecordError::Read {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })?;
        let Some(object) = object else {
            return Ok((Stored::default(), Vec::new()));
        };
        let (record, unreadable) =
            WebhookRecord::from_data(object.data.as_ref().unwrap_or(&BTreeMap::new()));
        Ok((
            Stored {
                record: Some(record),
                object: Some(object),
            },
            unreadable,
        ))
    }

    /// Writes `record` (create when there is none, else replace at the version read) and
    /// updates `stored` to what was written.
    pub async fn save(
        &self,
        stored: &mut Stored,
        record: WebhookRecord,
    ) -> Result<(), RecordError> {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let mut object = stored.object.clone().unwrap_or_default();
        let metadata = &mut object.metadata;
        if metadata.name.is_none() {
            *metadata = ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            };
        }
        // The server keeps its own account of field managers; sending the old one back is noise.
        metadata.managed_fields = None;
        let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
        for (key, value) in [
            ("app.kubernetes.io/name", "leaf-operator"),
            ("app.kubernetes.io/component", COMPONENT),
            ("app.kubernetes.io/managed-by", "leaf-operator"),
        ] {
            labels.insert(key.to_string(), value.to_string());
        }
        metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
            "withleaf.io/description".to_string(),
            "The Leaf webhook this operator registered for the credentials events (by id), and a \
             create whose answer is still unknown. Written by leaf-operator; deleting it makes \
             the webhook look foreign (docs/push-vs-poll.md)."
                .to_string(),
        );
        object.data = Some(record.to_data());
        let call = async {
            if stored.object.is_some() {
                self.api.replace(&self.name, &params, &object).await
            } else {
                self.api.create(&params, &object).await
            }
        };
        let written = tokio::time::timeout(API_TIMEOUT, call)
            .await
            .map_err(|_| self.timeout())?
            .map_err(|source| match source {
                kube::Error::Api(status) if status.code == 409 => RecordError::Conflict {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                },
                source => RecordError::Write {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    source,
                },
            })?;
        stored.object = Some(written);
        stored.record = Some(record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent() -> CreateIntent {
        CreateIntent {
            started_at: "2026-03-01T10:00:00Z".parse().unwrap(),
            name: "leaf-operator".to_string(),
            url: "https://alerts.example.com/alerts".to_string(),
            secret_fingerprint: secret_fingerprint("PLANTED-signing-secret"),
        }
    }

    #[test]
    fn a_record_round_trips_through_the_configmap_data() {
        for record in [
            WebhookRecord::default(),
            WebhookRecord::holding("w1", "leaf-operator", "https://a/alerts"),
            WebhookRecord {
                intent: Some(intent()),
                ..WebhookRecord::holding("w1", "leaf-operator", "https://a/alerts")
            },
            WebhookRecord {
                intent: Some(intent()),
                ..WebhookRecord::default()
            },
        ] {
            let (back, unreadable) = WebhookRecord::from_data(&record.to_data());
            assert_eq!(back, record);
            assert!(unreadable.is_empty(), "{unreadable:?}");
        }
    }

    #[test]
    fn the_data_never_holds_the_secret_only_its_fingerprint() {
        let record = WebhookRecord {
            intent: Some(intent()),
            ..WebhookRecord::default()
        };
        let text = format!("{:?}", record.to_data());
        assert!(!text.contains("PLANTED"), "{text}");
        let fingerprint = secret_fingerprint("PLANTED-signing-secret");
        assert_eq!(fingerprint.len(), 16);
        assert!(text.contains(&fingerprint));
        assert_ne!(fingerprint, secret_fingerprint("PLANTED-signing-secreT"));
    }

    #[test]
    fn edited_or_broken_keys_read_as_absent_never_as_ours() {
        let mut data = WebhookRecord {
            intent: Some(intent()),
            ..WebhookRecord::holding("w1", "n", "u")
        }
        .to_data();
        data.insert(KEY_CREATE_STARTED.to_string(), "yesterday".to_string());
        let (record, unreadable) = WebhookRecord::from_data(&data);
        assert_eq!(record.intent, None);
        assert_eq!(record.webhook_id.as_deref(), Some("w1"));
        assert_eq!(unreadable, vec![KEY_CREATE_STARTED]);

        let mut data = WebhookRecord {
            intent: Some(intent()),
            ..WebhookRecord::default()
        }
        .to_data();
        data.remove(KEY_CREATE_URL);
        let (record, unreadable) = WebhookRecord::from_data(&data);
        assert_eq!(record.intent, None, "half an intent adopts nothing");
        assert_eq!(unreadable, vec!["create*"]);

        let mut data = BTreeMap::new();
        data.insert(KEY_ID.to_string(), "  ".to_string());
        assert_eq!(WebhookRecord::from_data(&data).0, WebhookRecord::default());
    }

    #[test]
    fn the_configmap_is_named_after_the_lease() {
        assert_eq!(record_name("leaf-operator"), "leaf-operator-alerts-webhook");
        assert!(valid_record_name(&record_name("leaf-operator-shard-a")));
        assert!(!valid_record_name(&record_name("Leaf_Operator")));
        assert!(!valid_record_name(&record_name(&"a".repeat(240))));
        assert!(!valid_record_name(""));
    }
}
