//! `leaf_operator_resource_ready`: one gauge per TrimbleConnection, read from the controller's store.
//!
//! Computed at every scrape from the reflector store (as cert-manager does), so a deleted resource
//! disappears from the next scrape instead of lingering as a stale series (ESO's problem). The shape
//! is kube-state-metrics' one-hot: for each resource three series labelled
//! `condition="True"|"False"|"Unknown"`, exactly one of them 1, the others 0. A resource without a
//! `Ready` condition yet (never reconciled) counts as `Unknown`. Labels are the object's namespace
//! and name only, never anything from the spec or a Secret.
//!
//! `leaf_operator_resource_stalled` comes from the same scrape: one series, value 1, for each
//! TrimbleConnection with `Stalled=True`, labelled with the Stalled reason too, so an alert can say
//! which connections need a person and why (the reasons are the fixed list in `reason.rs`).

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::crd::TrimbleConnection;
use crate::reason::{CONDITION_READY, CONDITION_STALLED};

/// Metric name without the registry's `leaf_operator_` prefix.
pub const RESOURCE_READY: &str = "resource_ready";
/// Metric name without the registry's `leaf_operator_` prefix.
pub const RESOURCE_STALLED: &str = "resource_stalled";

const CONDITION_VALUES: [&str; 3] = ["True", "False", "Unknown"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    namespace: String,
    name: String,
    condition: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StalledLabels {
    namespace: String,
    name: String,
    reason: String,
}

/// Where the gauge reads the TrimbleConnections from at each scrape.
type Source = Box<dyn Fn() -> Vec<std::sync::Arc<TrimbleConnection>> + Send + Sync>;

/// Collector over the controller's store of TrimbleConnections.
pub struct ReadyGauge {
    source: Source,
}

impl std::fmt::Debug for ReadyGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyGauge").finish_non_exhaustive()
    }
}

impl ReadyGauge {
    pub fn new(store: Store<TrimbleConnection>) -> Self {
        Self::from_fn(move || store.state())
    }

    /// A gauge over any set of objects, e.g. the stores of several controllers (one per watched
    /// namespace) that are replaced when leadership changes.
    pub fn from_fn(
        source: impl Fn() -> Vec<std::sync::Arc<TrimbleConnection>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            source: Box::new(source),
        }
    }
}

/// The `status` of the Ready condition ("True", "False" or "Unknown"); `Unknown` when absent or odd.
pub fn ready_status(tc: &TrimbleConnection) -> &'static str {
    let status = tc
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY))
        .map(|c| c.status.as_str());
    match status {
        Some("True") => "True",
        Some("False") => "False",
        _ => "Unknown",
    }
}

/// The reason of a `Stalled=True` condition, if the resource is stalled.
pub fn stalled_reason(tc: &TrimbleConnection) -> Option<&str> {
    tc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_STALLED && c.status == "True")
        .map(|c| c.reason.as_str())
}

impl Collector for ReadyGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let objects = (self.source)();
        let mut stalled: Vec<StalledLabels> = objects
            .iter()
            .filter_map(|tc| {
                Some(StalledLabels {
                    namespace: tc.namespace().unwrap_or_default(),
                    name: tc.name_any(),
                    reason: stalled_reason(tc)?.to_string(),
                })
            })
            .collect();
        stalled.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut rows: Vec<(String, String, &'static str)> = objects
            .iter()
            .map(|tc| {
                (
                    tc.namespace().unwrap_or_default(),
                    tc.name_any(),
                    ready_status(tc),
                )
            })
            .collect();
        // Stable order makes scrapes diffable and tests simple.
        rows.sort();
        let mut family = encoder.encode_descriptor(
            RESOURCE_READY,
            "Status of each TrimbleConnection's Ready condition (one-hot over True, False, Unknown)",
            None,
            MetricType::Gauge,
        )?;
        for (namespace, name, current) in rows {
            for condition in CONDITION_VALUES {
                let labels = ReadyLabels {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    condition,
                };
                let gauge = ConstGauge::new(i64::from(condition == current));
                gauge.encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            RESOURCE_STALLED,
            "1 for each TrimbleConnection with Stalled=True (a person must act), by its reason",
            None,
            MetricType::Gauge,
        )?;
        for labels in &stalled {
            ConstGauge::new(1i64).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{TrimbleConnectionSpec, TrimbleConnectionStatus};
    use crate::metrics::Metrics;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    fn connection(name: &str, ready: Option<&str>) -> TrimbleConnection {
        let spec: TrimbleConnectionSpec = serde_json::from_value(serde_json::json!({
            "leafUserId": "u1",
            "credentialsSecretRef": {"name": "s"},
        }))
        .unwrap();
        let mut tc = TrimbleConnection::new(name, spec);
        tc.metadata.namespace = Some("ns1".into());
        tc.status = ready.map(|status| TrimbleConnectionStatus {
            conditions: vec![Condition {
                type_: CONDITION_READY.into(),
                status: status.into(),
                reason: "CredentialValid".into(),
                message: String::new(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
                observed_generation: None,
            }],
            ..Default::default()
        });
        tc
    }

    #[test]
    fn gauge_is_one_hot_per_resource_and_follows_the_store() {
        let mut writer = Writer::<TrimbleConnection>::default();
        let metrics = Metrics::new();
        metrics.register_collector(Box::new(ReadyGauge::new(writer.as_reader())));
        writer.apply_watcher_event(&Event::Apply(connection("a", Some("True"))));
        writer.apply_watcher_event(&Event::Apply(connection("b", Some("False"))));
        writer.apply_watcher_event(&Event::Apply(connection("c", None)));
        let text = metrics.encode();
        for (name, condition, value) in [
            ("a", "True", 1),
            ("a", "False", 0),
            ("a", "Unknown", 0),
            ("b", "False", 1),
            ("b", "True", 0),
            ("c", "Unknown", 1),
            ("c", "True", 0),
        ] {
            let line = format!(
                "leaf_operator_resource_ready{{namespace=\"ns1\",name=\"{name}\",condition=\"{condition}\"}} {value}"
            );
            assert!(text.contains(&line), "missing `{line}` in\n{text}");
        }
        writer.apply_watcher_event(&Event::Delete(connection("a", Some("True"))));
        let text = metrics.encode();
        assert!(
            !text.contains("name=\"a\""),
            "deleted resource still exported:\n{text}"
        );
    }

    #[test]
    fn stalled_gauge_names_only_the_stalled_resources_and_their_reason() {
        let mut writer = Writer::<TrimbleConnection>::default();
        let metrics = Metrics::new();
        metrics.register_collector(Box::new(ReadyGauge::new(writer.as_reader())));
        let mut stalled = connection("stuck", Some("False"));
        stalled.status.as_mut().unwrap().conditions.push(Condition {
            type_: CONDITION_STALLED.into(),
            status: "True".into(),
            reason: "CredentialInvalid".into(),
            message: String::new(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
            observed_generation: None,
        });
        writer.apply_watcher_event(&Event::Apply(stalled));
        writer.apply_watcher_event(&Event::Apply(connection("fine", Some("True"))));
        let text = metrics.encode();
        let line = "leaf_operator_resource_stalled{namespace=\"ns1\",name=\"stuck\",reason=\"CredentialInvalid\"} 1";
        assert!(text.contains(line), "missing `{line}` in\n{text}");
        assert!(
            !text.contains("leaf_operator_resource_stalled{namespace=\"ns1\",name=\"fine\""),
            "a Ready resource is exported as stalled:\n{text}"
        );
    }
}
