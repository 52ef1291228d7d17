//! Metrics of the alerts receiver and the webhook registration.
//!
//! Every label value is one of a fixed set of words (sources, reasons, outcomes, states); no
//! credential id, URL or body ever becomes a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    source: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// The alerts counters and gauges (registered under the `leaf_operator_` prefix).
#[derive(Debug, Default)]
pub struct AlertsMetrics {
    received: Family<SourceLabels, Counter>,
    verified: Counter,
    rejected: Family<ReasonLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    webhook_state: Family<StateLabels, Gauge>,
    event_registered_twice: Counter,
}

impl AlertsMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "alerts_received",
            "Alert bodies received, by source (receiver: POSTed to the receiver; failed_calls: replayed from Leaf's failed calls)",
            self.received.clone(),
        );
        registry.register(
            "alerts_verified",
            "Alerts POSTed to the receiver whose X-Leaf-Signature verified",
            self.verified.clone(),
        );
        registry.register(
            "alerts_rejected",
            "Alerts refused by the receiver, by reason (missing_signature, malformed_signature, bad_signature, too_large, unreadable, malformed, not_ready)",
            self.rejected.clone(),
        );
        registry.register(
            "alerts_handled",
            "Readable alerts by source and outcome (triggered, duplicate, unmanaged, other_provider, confirmation, confirmation_unsigned, ignored_type)",
            self.handled.clone(),
        );
        registry.register(
            "alerts_webhook_state",
            "1 for the current state of the webhook registration (disabled, secret_only, pending, registered, missing, foreign, failing)",
            self.webhook_state.clone(),
        );
        registry.register(
            "alerts_event_registered_twice",
            "Times the credentials events were found owned by a webhook that is not this operator's (Leaf's eventRegisteredTwice)",
            self.event_registered_twice.clone(),
        );
    }

    pub fn received(&self, source: &'static str) {
        self.received.get_or_create(&SourceLabels { source }).inc();
    }

    pub fn verified(&self) {
        self.verified.inc();
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn handled(&self, source: &'static str, outcome: &'static str) {
        self.handled
            .get_or_create(&HandledLabels { source, outcome })
            .inc();
    }

    /// Sets `state` to 1 and every other state in `all` to 0.
    pub fn set_webhook_state(&self, state: &'static str, all: &[&'static str]) {
        for other in all {
            self.webhook_state
                .get_or_create(&StateLabels { state: other })
                .set(i64::from(*other == state));
        }
    }

    pub fn event_registered_twice(&self) {
        self.event_registered_twice.inc();
    }
}
