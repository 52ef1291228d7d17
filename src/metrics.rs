//! Prometheus metrics: one registry, the operator's counters and histograms, and their recording API.
//!
//! Labels carry only bounded values (reasons, operations, status codes) or object names; never a
//! secret. Per-object gauges are computed at scrape time from the controller's store (see `http`).

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::reason::Reason;

pub mod alerts;
pub mod ready_gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeafRequestLabels {
    operation: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// Everything the operator counts. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ReasonLabels, Counter>,
    reconcile_duration: Histogram,
    leaf_requests: Family<LeafRequestLabels, Counter>,
    leaf_request_duration: Family<OperationLabels, Histogram>,
    rotations: Counter,
    leader: Gauge,
    /// The alerts receiver's and webhook registration's metrics.
    pub alerts: alerts::AlertsMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("leaf_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result (ok, error)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error, by condition reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let leaf_requests = Family::<LeafRequestLabels, Counter>::default();
        registry.register(
            "leaf_requests",
            "Requests sent to Leaf by operation and HTTP status code (or 'error' when no answer came)",
            leaf_requests.clone(),
        );
        let leaf_request_duration =
            Family::<OperationLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            });
        registry.register(
            "leaf_request_duration_seconds",
            "Latency of requests to Leaf by operation",
            leaf_request_duration.clone(),
        );
        let rotations = Counter::default();
        registry.register(
            "rotations",
            "Leaf credentials rotated after their Secret changed",
            rotations.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica holds the leader lease (or runs without leader election)",
            leader.clone(),
        );
        let alerts = alerts::AlertsMetrics::default();
        alerts.register(&mut registry);
        Self {
            registry: Mutex::new(registry),
            reconciles,
            reconcile_errors,
            reconcile_duration,
            leaf_requests,
            leaf_request_duration,
            rotations,
            leader,
            alerts,
        }
    }

    /// Records one finished reconcile; `error` is the reason it failed with, if it failed.
    pub fn record_reconcile(&self, duration: Duration, error: Option<Reason>) {
        self.reconcile_duration.observe(duration.as_secs_f64());
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(reason) = error {
            self.reconcile_errors
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .inc();
        }
    }

    /// Records one request to Leaf; `status` is the HTTP status code, or `None` when no answer came.
    pub fn record_leaf_request(
        &self,
        operation: &'static str,
        status: Option<u16>,
        duration: Duration,
    ) {
        let status = status.map_or_else(|| "error".to_string(), |code| code.to_string());
        self.leaf_requests
            .get_or_create(&LeafRequestLabels { operation, status })
            .inc();
        self.leaf_request_duration
            .get_or_create(&OperationLabels { operation })
            .observe(duration.as_secs_f64());
    }

    pub fn record_rotation(&self) {
        self.rotations.inc();
    }

    pub fn set_leader(&self, is_leader: bool) {
        self.leader.set(i64::from(is_leader));
    }

    /// Registers a collector that is asked for its samples at every scrape.
    pub fn register_collector(&self, collector: Box<dyn prometheus_client::collector::Collector>) {
        self.registry
            .lock()
            .expect("metrics registry lock")
            .register_collector(collector);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry lock");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}
