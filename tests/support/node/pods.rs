//! What the tests of the node read about the workloads on it: a release's Pods and whether they
//! are Ready, who holds a Lease, which addresses a Service's EndpointSlices name.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};

use super::node;
use crate::support::wait::wait_until;

/// How long Pods may take to be Ready (image pull, probes' initial delays, a busy machine).
pub const POD_READY_TIMEOUT: Duration = Duration::from_secs(180);

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn describe_pods(pods: &[Pod]) -> String {
    pods.iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            format!(
                "{} phase={:?} ready={} containers={:?}",
                p.metadata.name.clone().unwrap_or_default(),
                status.phase,
                pod_ready(p),
                status
                    .container_statuses
                    .unwrap_or_default()
                    .iter()
                    .map(|c| (c.ready, c.restart_count, c.state.clone()))
                    .collect::<Vec<_>>()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The release's running Pods (not terminating), by name.
pub async fn release_pods(pods: &Api<Pod>, release: &str) -> Vec<Pod> {
    let selector = format!("app.kubernetes.io/instance={release}");
    pods.list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Waits until exactly `count` Pods of the release are Ready (all of `not` gone); returns them.
pub async fn wait_pods_ready(
    pods: &Api<Pod>,
    release: &str,
    count: usize,
    not: &BTreeSet<String>,
) -> Vec<Pod> {
    let node = node().await;
    wait_until(
        &format!("{count} Ready Pods of {release}"),
        POD_READY_TIMEOUT,
        || async {
            node.check_running()?;
            let all = release_pods(pods, release).await;
            let ready: Vec<Pod> = all
                .iter()
                .filter(|p| pod_ready(p))
                .filter(|p| !not.contains(p.metadata.name.as_deref().unwrap_or_default()))
                .cloned()
                .collect();
            if ready.len() == count && all.len() == count {
                Ok(ready)
            } else {
                Err(describe_pods(&all))
            }
        },
    )
    .await
}

/// The Lease's holder, when it is held by one of the release's live Pods.
pub async fn leader(
    leases: &Api<Lease>,
    lease: &str,
    pods: &Api<Pod>,
    release: &str,
) -> Option<String> {
    let holder = leases.get_opt(lease).await.ok()??.spec?.holder_identity?;
    release_pods(pods, release)
        .await
        .iter()
        .any(|p| p.metadata.name.as_deref() == Some(&holder))
        .then_some(holder)
}

/// The addresses the Service's EndpointSlices list as ready.
pub async fn ready_endpoints(slices: &Api<EndpointSlice>, service: &str) -> BTreeSet<String> {
    let selector = format!("kubernetes.io/service-name={service}");
    slices
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|slice| slice.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .flat_map(|e| e.addresses)
        .collect()
}

pub async fn pod_ip(pods: &Api<Pod>, name: &str) -> String {
    pods.get(name)
        .await
        .unwrap()
        .status
        .and_then(|s| s.pod_ip)
        .unwrap_or_default()
}
