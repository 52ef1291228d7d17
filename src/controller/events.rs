//! Kubernetes Events for what `kubectl describe` should show, through kube-runtime's `Recorder`.
//!
//! Event reasons come from [`Reason`]; Warning or Normal follows `Reason::is_warning`. Notes are
//! built only from sanitised text (our own messages, Leaf's sanitised summaries), never a value.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::crd::{CredentialEventSummary, TrimbleConnection};
use crate::reason::Reason;

/// Name the Events are reported under (`reportingController`).
pub const REPORTING_CONTROLLER: &str = "leaf-operator";

/// events.k8s.io/v1 limits `note` to 1 KiB.
const MAX_NOTE: usize = 1000;

/// Publishes Events about TrimbleConnections; failures are logged, never fatal to a reconcile.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: kube::Client, instance: String) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_string(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Emits one Event with `reason`; `action` says what the operator was doing.
    pub async fn publish(&self, tc: &TrimbleConnection, reason: Reason, action: &str, note: &str) {
        let event = Event {
            type_: if reason.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.as_str().to_string(),
            note: Some(truncate(note)),
            action: action.to_string(),
            secondary: None,
        };
        let reference = tc.object_ref(&());
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, reason = reason.as_str(), "failed to publish a Kubernetes Event");
        }
    }

    /// One Warning per Leaf credential event with an error status code. The Leaf event id goes
    /// into `action` because the recorder folds Events with equal (reason, action) into one series,
    /// and each Leaf event must stay visible on its own.
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
