//! Metrics of the alerts receiver and the webhook registration.
//!
//! Every label value is one of a fixed set of words (sources, reasons, outcomes, states); no
//! credential id, URL or body ever becomes a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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
struct FreshnessLabels {
    freshness: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameMatchLabels {
    name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SwitchLabels {
    mode: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The polling modes, as metric labels.
pub const POLLING_MODES: [&str; 2] = ["backstop", "normal"];
/// The `name` labels of `alerts_foreign_webhook`: whether the foreign webhook has our name.
pub const FOREIGN_NAMES: [&str; 2] = ["same", "other"];

fn alert_to_status_histogram() -> Histogram {
    // 10 ms .. about 82 s: an alert normally shows within a second; minutes mean a backlog.
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// The alerts counters and gauges (registered under the `leaf_operator_` prefix).
#[derive(Debug)]
pub struct AlertsMetrics {
    received: Family<SourceLabels, Counter>,
    verified: Counter,
    rejected: Family<ReasonLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    freshness: Family<FreshnessLabels, Counter>,
    connections: Gauge,
    connections_waited: Counter,
    webhook_state: Family<StateLabels, Gauge>,
    event_registered_twice: Counter,
    foreign_webhook: Family<NameMatchLabels, Gauge>,
    polling_mode: Family<ModeLabels, Gauge>,
    polling_switches: Family<SwitchLabels, Counter>,
    alert_to_status: Family<ResultLabels, Histogram, fn() -> Histogram>,
}

impl Default for AlertsMetrics {
    fn default() -> Self {
        Self {
            received: Family::default(),
            verified: Counter::default(),
            rejected: Family::default(),
            handled: Family::default(),
            freshness: Family::default(),
            connections: Gauge::default(),
            connections_waited: Counter::default(),
            webhook_state: Family::default(),
            event_registered_twice: Counter::default(),
            foreign_webhook: Family::default(),
            polling_mode: Family::default(),
            polling_switches: Family::default(),
            alert_to_status: Family::new_with_constructor(alert_to_status_histogram),
        }
    }
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
            "Alerts refused by the receiver, by reason (missing_signature, malformed_signature, bad_signature, too_large, unreadable, malformed, not_ready, header_timeout, body_timeout, connection_deadline)",
            self.rejected.clone(),
        );
        registry.register(
            "alerts_handled",
            "Alert bodies handled, by source and outcome (triggered, duplicate, unmanaged, other_provider, confirmation, confirmation_unsigned, ignored_type, malformed)",
            self.handled.clone(),
        );
        registry.register(
            "alerts_freshness",
            "Verified deliveries by whether they counted as hearing from Leaf: fresh and first_confirmation did; stale, future_dated, no_timestamp and repeated_confirmation did not (still answered and handled)",
            self.freshness.clone(),
        );
        registry.register(
            "alerts_connections",
            "Connections open to the alerts receiver now",
            self.connections.clone(),
        );
        registry.register(
            "alerts_connections_waited",
            "Connections that found the alerts receiver at its connection limit and waited for a free slot",
            self.connections_waited.clone(),
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
        registry.register(
            "alerts_foreign_webhook",
            "1 while a Leaf webhook this operator did not create holds the credentials events (it is never deleted), by name: same (this operator's webhook name: most likely another cluster or deployment on the same Leaf account) or other",
            self.foreign_webhook.clone(),
        );
        registry.register(
            "alerts_polling_mode",
            "1 for how periodic checks are paced now: backstop (alerts healthy: the backstop interval) or normal (each resource's refreshInterval)",
            self.polling_mode.clone(),
        );
        registry.register(
            "alerts_polling_switches",
            "Switches of the polling mode, by the mode switched to and why (healthy, quiet, not_heard_yet, or the registration state)",
            self.polling_switches.clone(),
        );
        registry.register(
            "alert_to_status_seconds",
            "Time from a credentials alert's arrival to the reconcile's answer, by result (written: the status write that followed landed; unchanged: Leaf's answer matched the status; failed: the reconcile was interrupted before it could answer)",
            self.alert_to_status.clone(),
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

    /// Counts a verified delivery by its freshness (`fresh`, `stale`, ...).
    pub fn freshness(&self, freshness: &'static str) {
        self.freshness
            .get_or_create(&FreshnessLabels { freshness })
            .inc();
    }

    /// Counts an open connection until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections.inc();
        OpenConnection {
            gauge: self.connections.clone(),
        }
    }

    /// Counts a connection that found the receiver at its connection limit.
    pub fn connection_waited(&self) {
        self.connections_waited.inc();
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

    /// Sets the foreign webhook's `name` label (one of [`FOREIGN_NAMES`]) to 1 and the other to
    /// 0; `None`: both 0 (nothing foreign holds our events).
    pub fn set_foreign_webhook(&self, name: Option<&'static str>) {
        for other in FOREIGN_NAMES {
            self.foreign_webhook
                .get_or_create(&NameMatchLabels { name: other })
                .set(i64::from(Some(other) == name));
        }
    }

    /// Sets the polling `mode` (one of [`POLLING_MODES`]) to 1 and the other to 0.
    pub fn set_polling_mode(&self, mode: &'static str) {
        for other in POLLING_MODES {
            self.polling_mode
                .get_or_create(&ModeLabels { mode: other })
                .set(i64::from(other == mode));
        }
    }

    /// Counts a switch to `mode` for `reason`.
    pub fn polling_switched(&self, mode: &'static str, reason: &'static str) {
        self.polling_switches
            .get_or_create(&SwitchLabels { mode, reason })
            .inc();
    }

    /// Records how long after its alert a reconcile answered (`written`, `unchanged`, `failed`).
    pub fn alert_answered(&self, result: &'static str, elapsed: std::time::Duration) {
        self.alert_to_status
            .get_or_create(&ResultLabels { result })
            .observe(elapsed.as_secs_f64());
    }
}

/// One open connection of the alerts receiver: the gauge goes down when it is dropped, however
/// the connection ended (answered, timed out, or its task cancelled).
#[derive(Debug)]
pub struct OpenConnection {
    gauge: Gauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
