//! Kubernetes Events for what `kubectl describe` should show (events.k8s.io/v1): about
//! TrimbleConnections, and about the operator's own Pod (the polling mode switching).
//!
//! Event reasons come from [`Reason`]; Warning or Normal follows `Reason::is_warning`. Notes are
//! built only from sanitised text (our own messages, Leaf's sanitised summaries), never a value.
//!
//! Why not kube-runtime's `Recorder`: to fold repeats into a series it keeps every Event it
//! published, whole, for six minutes (about 2.6 KiB each). Rotating and then deleting 5,000
//! connections held 10,000 of them at once, a third of the operator's peak memory (BENCHMARKS.md).
//! This publisher folds repeats the same way (same object, type, reason, action and note within
//! six minutes: the existing Event's series count and time are patched) but remembers only the
//! Event's name, count and time (and a hash of the note). events.k8s.io/v1 makes `note`
//! immutable (the API server refuses a changed note with 422), so a repeat with another note
//! starts an Event of its own, as client-go's events recorder does (its series key holds the note).

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::crd::{CredentialEventSummary, FIELD_MANAGER, TrimbleConnection};
use crate::reason::Reason;

/// Name the Events are reported under (`reportingController`).
pub const REPORTING_CONTROLLER: &str = "leaf-operator";

/// events.k8s.io/v1 limits `note` to 1 KiB.
const MAX_NOTE: usize = 1000;

/// How long a published Event can still absorb repeats (kube-runtime's and client-go's choice).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What makes two Events "the same" for folding into a series. Remembered as a 64-bit hash
/// only: one is kept per recent Event (20,000 creates in six minutes keep 20,000), and two keys
/// colliding would at worst fold one Event into another's count.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    object_uid: String,
    warning: bool,
    reason: Reason,
    action: String,
    /// A hash of the (truncated) note: only an identical note can be folded.
    note: u64,
}

impl SeriesKey {
    fn hashed(&self) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

fn note_hash(note: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    note.hash(&mut hasher);
    hasher.finish()
}

/// All that is remembered of a published Event.
#[derive(Clone, Debug)]
struct Published {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Publishes Events about TrimbleConnections (and the operator's own Pod); failures are logged,
/// never fatal to a reconcile.
pub struct Events {
    client: kube::Client,
    instance: String,
    published: Mutex<HashMap<u64, Published>>,
    last_pruned: Mutex<Timestamp>,
}

impl Events {
    pub fn new(client: kube::Client, instance: String) -> Self {
        Self {
            client,
            instance,
            published: Mutex::default(),
            last_pruned: Mutex::new(Timestamp::now()),
        }
    }

    /// Emits one Event with `reason`; `action` says what the operator was doing.
    pub async fn publish(&self, tc: &TrimbleConnection, reason: Reason, action: &str, note: &str) {
        self.publish_about(tc.object_ref(&()), reason, action, note)
            .await;
    }

    /// Emits one Event about any object, e.g. the operator's own Pod (`regarding` must carry
    /// its name and namespace; the Event is written in that namespace).
    pub async fn publish_about(
        &self,
        regarding: ObjectReference,
        reason: Reason,
        action: &str,
        note: &str,
    ) {
        if let Err(error) = self.try_publish(regarding, reason, action, note).await {
            tracing::warn!(%error, reason = reason.as_str(), "failed to publish a Kubernetes Event");
        }
    }

    async fn try_publish(
        &self,
        regarding: ObjectReference,
        reason: Reason,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        self.prune(now);
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let key = SeriesKey {
            // Without a uid (a Pod that does not know its own), kind and name identify it.
            object_uid: regarding.uid.clone().unwrap_or_else(|| {
                format!(
                    "{}/{}/{}",
                    regarding.kind.as_deref().unwrap_or(""),
                    namespace,
                    regarding.name.as_deref().unwrap_or("")
                )
            }),
            warning: reason.is_warning(),
            reason,
            action: action.to_string(),
            note: note_hash(&truncate(note)),
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let repeat = self.lookup(&key, now);
        let published = match repeat {
            Some(mut earlier) => {
                earlier.count += 1;
                earlier.last = now;
                let patch = serde_json::json!({
                    "series": EventSeries { count: earlier.count, last_observed_time: MicroTime(now) },
                });
                match api
                    .patch(&earlier.name, &params, &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => earlier,
                    // The Event was removed meanwhile (TTL, a person): start a new one.
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        self.create(&api, &regarding, &key, note, now).await?
                    }
                    Err(error) => return Err(error),
                }
            }
            None => self.create(&api, &regarding, &key, note, now).await?,
        };
        self.published
            .lock()
            .expect("events cache lock")
            .insert(key.hashed(), published);
        Ok(())
    }

    async fn create(
        &self,
        api: &Api<Event>,
        regarding: &ObjectReference,
        key: &SeriesKey,
        note: &str,
        now: Timestamp,
    ) -> Result<Published, kube::Error> {
        let name = event_name(
            regarding.name.as_deref().unwrap_or("object"),
            now.as_nanosecond(),
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if key.warning { "Warning" } else { "Normal" }.to_string()),
            reason: Some(key.reason.as_str().to_string()),
            action: Some(key.action.clone()),
            note: Some(truncate(note)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        api.create(&PostParams::default(), &event).await?;
        Ok(Published {
            name,
            count: 1,
            last: now,
        })
    }

    /// The earlier Event a repeat folds into, if it is recent enough.
    fn lookup(&self, key: &SeriesKey, now: Timestamp) -> Option<Published> {
        let published = self.published.lock().expect("events cache lock");
        published
            .get(&key.hashed())
            .filter(|earlier| earlier.last + SERIES_WINDOW > now)
            .cloned()
    }

    /// Forgets Events too old to fold into, at most once a minute (the scan is over all of them).
    fn prune(&self, now: Timestamp) {
        {
            let mut last_pruned = self.last_pruned.lock().expect("events prune lock");
            if *last_pruned + SignedDuration::from_mins(1) > now {
                return;
            }
            *last_pruned = now;
        }
        self.published
            .lock()
            .expect("events cache lock")
            .retain(|_, earlier| earlier.last + SERIES_WINDOW > now);
    }

    /// One Warning per Leaf credential event with an error status code. The Leaf event id goes
    /// into `action` because repeats of one (reason, action) fold into one series, and each Leaf
    /// event must stay visible on its own.
    pub async fn publish_leaf_event(&self, tc: &TrimbleConnection, event: &CredentialEventSummary) {
        let id: String = event
            .id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(100)
            .collect();
        let code = event
            .status_code
            .map_or_else(|| "?".to_string(), |c| c.to_string());
        let note = format!(
            "Leaf credential event {} at {}: status {code}: {}",
            event.id,
            event.time.as_deref().unwrap_or("unknown time"),
            event.summary
        );
        self.publish(
            tc,
            Reason::LeafCredentialEventError,
            &format!("LeafEvent-{id}"),
            &note,
        )
        .await;
    }
}

/// Longest object name Kubernetes accepts (a DNS subdomain).
const MAX_NAME: usize = 253;

/// `<object name>.<nanoseconds in hex>`, as client-go names Events, with the object's name cut
/// so that the whole stays a valid name: a 253-character TrimbleConnection name plus the suffix
/// would otherwise be refused and its Events lost.
fn event_name(object: &str, nanos: i128) -> String {
    let suffix = format!(".{:x}", nanos.max(0));
    let room = MAX_NAME.saturating_sub(suffix.len());
    // Object names are ASCII (DNS subdomains), so byte and character counts agree; a name cut
    // after a '.' or '-' would end in an invalid character, so those are trimmed too.
    let head: String = object.chars().take(room).collect();
    let head = head.trim_end_matches(['.', '-']);
    format!("{head}{suffix}")
}

fn truncate(note: &str) -> String {
    if note.len() <= MAX_NOTE {
        return note.to_string();
    }
    let mut end = MAX_NOTE;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_stay_valid_for_the_longest_object_names() {
        let longest = format!("{}-{}", "a".repeat(200), "b".repeat(52));
        let name = event_name(&longest, 1_764_000_000_123_456_789);
        assert!(name.len() <= MAX_NAME, "{} characters", name.len());
        assert!(name.starts_with("aaaa") && !name.contains("-."), "{name}");
        assert_eq!(event_name("farm", 255), "farm.ff");
    }

    proptest::proptest! {
        #[test]
        fn any_object_name_gives_a_valid_event_name(
            object in "[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?",
            nanos in proptest::num::i128::ANY,
        ) {
            let name = event_name(&object, nanos);
            proptest::prop_assert!(name.len() <= MAX_NAME);
            proptest::prop_assert!(!name.starts_with('.'));
            proptest::prop_assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'));
        }
    }
}
