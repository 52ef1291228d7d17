//! Routing deliveries to the leader: the replica that leads labels its own Pod, and the
//! receiver's Service selects that label (`--leader-pod-label`, set by the chart when leader
//! election is on).
//!
//! Why: a standby's receiver answers 503 (its controller is not watching), and Leaf retries a
//! failed delivery only after 1, 30, 60 and 240 minutes. A Service over every replica would turn
//! half the deliveries into minutes of delay. With the label only the leader is an endpoint.
//!
//! The label is a desired state, applied by one background task that always converges to the
//! latest wish (so a quick step-down and re-election can never end with the label removed):
//! set while the work runs, cleared when it ends or is aborted (a drop guard), and cleared at
//! start in case a previous container of this Pod led and died with the label on. The 503 of a
//! standby stays as the safety net for the moments the label and the lease disagree.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

use super::polling_switch::OwnPod;
use crate::crd::FIELD_MANAGER;

/// Longest pause between attempts when a patch fails (the API server is down, RBAC is missing).
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What the label should say: on while a term of leadership runs and its controller is ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Wish {
    /// The current term (each acquisition of the lease starts one).
    term: u64,
    leading: bool,
    ready: bool,
}

impl Wish {
    fn on(self) -> bool {
        self.leading && self.ready
    }
}

/// Keeps the leader label on this replica's own Pod as wished.
#[derive(Clone)]
pub struct LeaderLabel {
    wish: watch::Sender<Wish>,
}

impl LeaderLabel {
    /// Starts the task that applies the wish to `pod`'s label `key` (value `"true"`, or absent).
    /// The first wish is "absent": a previous container of this Pod may have died leading.
    pub fn start(client: kube::Client, pod: OwnPod, key: String) -> Self {
        let (wish, mut wishes) = watch::channel(Wish::default());
        tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(client, &pod.namespace);
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            };
            loop {
                let wanted = wishes.borrow_and_update().on();
                let value = if wanted {
                    serde_json::Value::from("true")
                } else {
                    serde_json::Value::Null
                };
                let patch = serde_json::json!({"metadata": {"labels": {key.as_str(): value}}});
                match pods.patch(&pod.name, &params, &Patch::Merge(&patch)).await {
                    Ok(_) => tracing::info!(
                        pod = %pod.name,
                        label = %key,
                        leader = wanted,
                        "leader label of this Pod {}",
                        if wanted { "set" } else { "cleared" }
                    ),
                    Err(error) => {
                        tracing::warn!(%error, pod = %pod.name, label = %key, "could not update the leader label of this Pod; the alerts Service may route to the wrong replica (a standby answers 503 and Leaf retries)");
                        // Again later, or at once when the wish changes.
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY_AFTER) => continue,
                            changed = wishes.changed() => if changed.is_err() { return },
                        }
                        continue;
                    }
                }
                if wishes.changed().await.is_err() {
                    return;
                }
            }
        });
        Self { wish }
    }

    /// A term of leadership begins; the label goes on once [`Term::ready`] is called and off
    /// when the returned term is dropped (its work ended or was aborted).
    pub fn lead(&self) -> Term {
        let mut term = 0;
        self.wish.send_if_modified(|w| {
            let before = w.on();
            w.term += 1;
            w.leading = true;
            w.ready = false;
            term = w.term;
            before != w.on()
        });
        Term {
            wish: self.wish.clone(),
            term,
        }
    }
}

/// One term of leadership, as the label sees it.
pub struct Term {
    wish: watch::Sender<Wish>,
    term: u64,
}

impl Term {
    /// A handle that marks the term ready (the controller's caches synced): the label goes on,
    /// unless the term already ended (then nothing happens, whatever the order of the two).
    pub fn ready_handle(&self) -> impl Fn() + Send + Sync + 'static + use<> {
        let wish = self.wish.clone();
        let term = self.term;
        move || {
            wish.send_if_modified(|w| {
                let before = w.on();
                if w.term == term && w.leading {
                    w.ready = true;
                }
                before != w.on()
            });
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let term = self.term;
        self.wish.send_if_modified(|w| {
            let before = w.on();
            if w.term == term {
                w.leading = false;
                w.ready = false;
            }
            before != w.on()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wish(label: &LeaderLabel) -> bool {
        label.wish.borrow().on()
    }

    #[test]
    fn the_label_is_on_only_while_a_ready_term_lives() {
        let (wish_tx, _rx) = watch::channel(Wish::default());
        let label = LeaderLabel { wish: wish_tx };
        assert!(!wish(&label));
        let first = label.lead();
        let ready_first = first.ready_handle();
        assert!(!wish(&label), "not before the caches synced");
        ready_first();
        assert!(wish(&label));
        drop(first);
        assert!(!wish(&label), "off when the term ends");
        ready_first();
        assert!(
            !wish(&label),
            "a late ready of an ended term changes nothing"
        );
        // A new term: an old term's late drop or ready never touches it.
        let second = label.lead();
        second.ready_handle()();
        assert!(wish(&label));
        ready_first();
        assert!(wish(&label));
        drop(second);
        assert!(!wish(&label));
    }
}
