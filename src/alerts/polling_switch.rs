//! Switches of the polling mode, announced and applied.
//!
//! While this replica runs the controller, once a second: ask [`AlertsHealth`] how periodic
//! checks are paced now. On a switch between the backstop and the normal interval:
//! - the gauge `leaf_operator_alerts_polling_mode{mode}` and the counter
//!   `leaf_operator_alerts_polling_switches_total{mode, reason}` say so;
//! - a log line, and a Kubernetes Event on the operator's own Pod (`PollingFallback`, Warning,
//!   or `PollingBackstop`, Normal) when the Pod is known (POD_NAME and POD_NAMESPACE);
//! - every object whose periodic check the new pace brings sooner than the old one is nudged to
//!   reconcile: its pending wake-up was set for the old pace (24 hours, when alerts fall silent),
//!   and the schedule re-paces the check from when it was set (`Schedules::wait_at_pace`). An
//!   object whose check moves later needs nothing: its next wake-up finds it not due and waits
//!   the rest.
//!
//! Why it only runs while leading: the mode matters where the controller runs, and a replica
//! that lost the lease stops hearing from Leaf (its receiver answers 503), which must not read
//! as alerts falling silent.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use crate::controller::Context;
use crate::controller::polling::{AlertsHealth, HealthConfig, Polling};
use crate::reason::Reason;

/// How often the mode is looked at (the quiet limit is detected within this much).
pub const TICK: Duration = Duration::from_secs(1);

/// The operator's own Pod, which the switch Events are about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnPod {
    pub name: String,
    pub namespace: String,
    /// From the downward API (POD_UID); without it the Event names the Pod by name only.
    pub uid: Option<String>,
}

impl OwnPod {
    /// The Pod as the object of an Event.
    pub(crate) fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Pod".to_string()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            uid: self.uid.clone(),
            ..ObjectReference::default()
        }
    }
}

/// The metric label of a mode.
pub fn mode_label(polling: Polling) -> &'static str {
    match polling {
        Polling::Backstop(_) => "backstop",
        Polling::Normal => "normal",
    }
}

/// Watches the polling mode of `health` for `ctx`'s controller.
pub struct PollingSwitch {
    pub ctx: Arc<Context>,
    pub health: Arc<AlertsHealth>,
    pub pod: Option<OwnPod>,
}

impl PollingSwitch {
    /// Runs until `stop` resolves. The mode found first is the baseline (metric only, no Event).
    pub async fn run(self, stop: impl Future<Output = ()> + Send) {
        tokio::pin!(stop);
        let (mut current, reason) = self.health.decide(Instant::now());
        self.ctx
            .metrics
            .alerts
            .set_polling_mode(mode_label(current));
        info!(
            mode = mode_label(current),
            reason, "polling mode at start of leadership"
        );
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let (polling, reason) = self.health.decide(Instant::now());
            if polling != current {
                self.switched(current, polling, reason).await;
                current = polling;
            }
        }
    }

    async fn switched(&self, previous: Polling, polling: Polling, reason: &'static str) {
        let mode = mode_label(polling);
        let metrics = &self.ctx.metrics.alerts;
        metrics.set_polling_mode(mode);
        metrics.polling_switched(mode, reason);
        let nudged = self.repace(previous, polling);
        let note = note(polling, reason, self.health.config());
        match polling {
            Polling::Backstop(_) => info!(mode, reason, nudged, "{note}"),
            Polling::Normal => warn!(mode, reason, nudged, "{note}"),
        }
        if let Some(pod) = &self.pod {
            let event_reason = match polling {
                Polling::Backstop(_) => Reason::PollingBackstop,
                Polling::Normal => Reason::PollingFallback,
            };
            self.ctx
                .events
                .publish_about(pod.reference(), event_reason, "Polling", &note)
                .await;
        }
    }

    /// Nudges the objects whose periodic check `polling` brings sooner than `previous` did;
    /// returns how many.
    fn repace(&self, previous: Polling, polling: Polling) -> usize {
        let backstop = |p: Polling| match p {
            Polling::Backstop(interval) => Some(interval),
            Polling::Normal => None,
        };
        let mut nudged = 0;
        for tc in self.ctx.all_objects() {
            let uid = tc.uid().unwrap_or_default();
            let interval = tc.spec.check_interval(backstop(polling));
            let before = tc.spec.check_interval(backstop(previous));
            if self.ctx.schedules.sooner_at_pace(&uid, interval, before)
                && self.ctx.triggers.fire(&ObjectRef::from_obj(tc.as_ref()))
            {
                nudged += 1;
            }
        }
        nudged
    }
}

/// `24h`, `30m`, `1h30m`, `2s` (the way the flags are written).
fn short(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    for (value, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

/// The Event note and log message of a switch (no value of any secret: only settings and words).
fn note(polling: Polling, reason: &str, config: HealthConfig) -> String {
    match polling {
        Polling::Backstop(interval) => format!(
            "Leaf's alerts are healthy: periodic checks now run every {} as a backstop (a shorter \
             spec.refreshInterval still wins); a check reads Leaf's events only when the status changed",
            short(interval)
        ),
        Polling::Normal => {
            let why = match reason {
                "quiet" => format!(
                    "nothing heard from Leaf (delivery, signed confirmation or registration check) for more than {}",
                    short(config.quiet_limit)
                ),
                "not_heard_yet" => "nothing heard from Leaf yet".to_string(),
                "missing" => {
                    "our webhook is missing at Leaf and could not be created (registration state missing)"
                        .to_string()
                }
                "foreign" => "another webhook of the Leaf account owns the credentials events \
                              (eventRegisteredTwice; registration state foreign)"
                    .to_string(),
                "failing" => {
                    "Leaf's Alerts API failed (registration state failing)".to_string()
                }
                "pending" => "the webhook registration has not been checked yet".to_string(),
                other => format!("registration state {other}"),
            };
            format!(
                "Leaf's alerts cannot be trusted: {why}. Periodic checks are back at each resource's \
                 refreshInterval (10m where it is not set), reading Leaf's events every time"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_name_the_cause_and_the_pace() {
        let config = HealthConfig {
            backstop_interval: Duration::from_secs(86_400),
            quiet_limit: Duration::from_secs(1800),
        };
        let backstop = note(
            Polling::Backstop(Duration::from_secs(86_400)),
            "healthy",
            config,
        );
        assert!(backstop.contains("every 24h "), "{backstop}");
        let quiet = note(Polling::Normal, "quiet", config);
        assert!(
            quiet.contains("more than 30m") && quiet.contains("refreshInterval"),
            "{quiet}"
        );
        assert!(note(Polling::Normal, "foreign", config).contains("eventRegisteredTwice"));
        assert!(note(Polling::Normal, "missing", config).contains("missing"));
        assert_eq!(mode_label(Polling::Normal), "normal");
        assert_eq!(short(Duration::from_secs(5400)), "1h30m");
        assert_eq!(short(Duration::from_secs(2)), "2s");
        assert_eq!(short(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn the_pod_reference_names_the_pod() {
        let pod = OwnPod {
            name: "leaf-operator-7d9".to_string(),
            namespace: "leaf-operator".to_string(),
            uid: Some("u-1".to_string()),
        };
        let r = pod.reference();
        assert_eq!(
            (
                r.kind.as_deref(),
                r.name.as_deref(),
                r.namespace.as_deref(),
                r.uid.as_deref()
            ),
            (
                Some("Pod"),
                Some("leaf-operator-7d9"),
                Some("leaf-operator"),
                Some("u-1")
            )
        );
    }
}
