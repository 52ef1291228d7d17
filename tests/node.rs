//! The chart installed for real on a one-node cluster (`support::node`): the kubelet runs the
//! operator's Pods from the image scripts/image.sh built, pulled by digest from the tests' local
//! registry (`support::registry`); kube-controller-manager
//! runs the Deployment and the PodDisruptionBudget; kube-proxy routes the Services. The Pods reach
//! the API server through the `kubernetes` Service and the Leaf stand-in on the node bridge's
//! address. The tests take turns on the shared node (`serial`), each in its own namespaces.
//!
//! The numbers the design notes quote (Pods Ready after install, handover, a TrimbleConnection
//! Ready through the Pod) are printed with `eprintln!` (run with `--nocapture` to see them).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node as NodeObject, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use leaf_operator::crd::TrimbleConnection;
use leaf_standin::{StandIn, StandInConfig};
use tokio::sync::{Mutex, MutexGuard};

use support::install::{CHART, expect_success, repo, trimble_connection, trimble_secret};
use support::node::pods::{
    describe_pods, leader, pod_ip, pod_ready, ready_endpoints, release_pods, wait_pods_ready,
};
use support::node::{NODE_ADDRESS, NODE_NAME, containerd, images, node};
use support::registry::shared_registry;
use support::{ControlPlane, control_plane, repo_root, wait_until};

const LEAF_TOKEN: &str = "node-test-leaf-token-7c2e";
/// The chart's default leaderElection.leaseDuration.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const BURST: usize = 50;

/// One test at a time on the node: they share its two cores and drain it. An async mutex: it is
/// held across awaits, and a test that panics does not poison it.
async fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::const_new(());
    SERIAL.lock().await
}

/// The operator image, built by scripts/image.sh and pushed to the tests' local registry once;
/// the node's containerd may pull from it. `(repository, sha256 digest)`: the chart's
/// `image.repository` and `image.digest`.
async fn operator_image() -> &'static (String, String) {
    static IMAGE: tokio::sync::OnceCell<(String, String)> = tokio::sync::OnceCell::const_new();
    IMAGE
        .get_or_init(|| async {
            node().await;
            let registry = shared_registry().await;
            images::allow_plain_http_registry(registry.address()).unwrap_or_else(|e| panic!("{e}"));
            let started = Instant::now();
            let reference = tokio::task::spawn_blocking(|| registry.push_operator_image())
                .await
                .unwrap();
            eprintln!(
                "image built (scripts/image.sh) and pushed as {reference} in {:.1?}",
                started.elapsed()
            );
            let (repository, digest) = reference.split_once('@').expect("a reference by digest");
            (repository.to_string(), digest.to_string())
        })
        .await
}

/// The Leaf stand-in on the node bridge's address, where the Pods reach it.
async fn leaf_for_pods(users: &[String]) -> StandIn {
    let mut config = StandInConfig {
        listen: SocketAddr::from((NODE_ADDRESS, 0)),
        ..StandInConfig::default()
    }
    .with_token(LEAF_TOKEN);
    for user in users {
        config = config.with_user(user);
    }
    StandIn::start(config).await
}

async fn create_leaf_secret(cp: &ControlPlane, namespace: &str) {
    Api::<Secret>::namespaced(cp.client(), namespace)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("leaf-account".into()),
                    ..Default::default()
                },
                string_data: Some([("token".to_string(), LEAF_TOKEN.to_string())].into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

/// The chart's values for a release on the node: the image by digest, the stand-in, the
/// watched namespace, two replicas; then `extra`.
async fn chart_values(leaf: &StandIn, watch: &str, extra: &[&str]) -> Vec<String> {
    let (repository, digest) = operator_image().await;
    let mut values = vec![
        format!("image.repository={repository}"),
        format!("image.digest={digest}"),
        "image.pullPolicy=IfNotPresent".to_string(),
        "replicaCount=2".to_string(),
        format!("watchNamespaces={{{watch}}}"),
        format!("leaf.apiUrl={}", leaf.origin()),
        "leaf.existingSecret=leaf-account".to_string(),
        "leaf.tokenKey=token".to_string(),
    ];
    values.extend(extra.iter().map(|v| v.to_string()));
    values
}

fn helm(cp: &ControlPlane, verb: &str, release: &str, namespace: &str, values: &[String]) {
    let chart = repo(CHART);
    let mut args = vec![
        verb,
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    for value in values {
        args.extend(["--set", value.as_str()]);
    }
    expect_success(&format!("helm {verb} {release}"), &cp.helm(&args));
}

async fn create_connection(cp: &ControlPlane, namespace: &str, name: &str, user: &str) {
    Api::<Secret>::namespaced(cp.client(), namespace)
        .create(
            &PostParams::default(),
            &trimble_secret(&format!("{name}-trimble"), &format!("refresh-{name}")),
        )
        .await
        .unwrap();
    Api::<TrimbleConnection>::namespaced(cp.client(), namespace)
        .create(
            &PostParams::default(),
            &trimble_connection(name, user, &format!("{name}-trimble")),
        )
        .await
        .unwrap();
}

fn is_ready(tc: &TrimbleConnection) -> bool {
    support::install::ready(tc)
        .is_some_and(|(status, reason)| status == "True" && reason == "CredentialValid")
}

/// Waits until every named connection is Ready.
async fn wait_all_ready(tcs: &Api<TrimbleConnection>, names: &[String], timeout: Duration) {
    wait_until(
        &format!("{} TrimbleConnections to be Ready", names.len()),
        timeout,
        || async {
            let list = tcs
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let ready: BTreeSet<String> = list
                .items
                .iter()
                .filter(|tc| is_ready(tc))
                .filter_map(|tc| tc.metadata.name.clone())
                .collect();
            let missing: Vec<&String> = names.iter().filter(|n| !ready.contains(*n)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} not Ready yet, e.g. {:?}",
                    missing.len(),
                    missing.first()
                ))
            }
        },
    )
    .await;
}

fn credential_posts(leaf: &StandIn, user: &str) -> usize {
    leaf.count("POST", &format!("/users/{user}/trimble-credentials"))
}

#[tokio::test]
async fn the_node_joins_the_control_plane_and_is_ready() {
    let node = node().await;
    let _serial = serial().await;
    let cp = control_plane().await;
    let nodes: Api<NodeObject> = Api::all(cp.client());
    let object = nodes.get(NODE_NAME).await.unwrap();
    let info = object.status.unwrap().node_info.unwrap();
    eprintln!(
        "node {NODE_NAME}: kubelet {}, {}, kernel {}, cgroup v1; Ready {:.1?} after the first call",
        info.kubelet_version, info.container_runtime_version, info.kernel_version, node.started_in
    );
    assert_eq!(info.kubelet_version, "v1.37.2");
    assert!(
        info.container_runtime_version
            .starts_with("containerd://2."),
        "{}",
        info.container_runtime_version
    );
}

/// The chart's whole life on a node: two replicas Ready, one leader, a connection Ready through
/// the Pod, a handover under a burst without a second POST, a drain stopped by the budget, an
/// upgrade that rolls the Pods, an uninstall that leaves the CRD, the resources and Leaf's
/// credentials.
#[tokio::test]
async fn the_chart_runs_on_the_node_from_install_to_uninstall() {
    node().await;
    let _serial = serial().await;
    let cp = control_plane().await;
    let namespace = cp.create_namespace("node-chart").await;
    let growers = cp.create_namespace("node-growers").await;
    let users: Vec<String> = (0..=BURST).map(|i| format!("node-user-{i:02}")).collect();
    let leaf = leaf_for_pods(&users).await;
    create_leaf_secret(cp, &namespace).await;
    operator_image().await;

    let release = "lo-node";
    let lease = "lo-node-leaf-operator";
    let pods: Api<Pod> = Api::namespaced(cp.client(), &namespace);
    let leases: Api<Lease> = Api::namespaced(cp.client(), &namespace);
    let tcs: Api<TrimbleConnection> = Api::namespaced(cp.client(), &growers);

    // Install: the CRD comes with the chart (taken over if another test applied it first).
    let values = chart_values(&leaf, &growers, &["crds.enabled=true"]).await;
    let installed = Instant::now();
    let chart = repo(CHART);
    let mut args = vec![
        "install",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        &namespace,
        "--take-ownership",
    ];
    for value in &values {
        args.extend(["--set", value.as_str()]);
    }
    expect_success("helm install", &cp.helm(&args));
    let ready_pods = wait_pods_ready(&pods, release, 2, &BTreeSet::new()).await;
    let pods_ready_after = installed.elapsed();
    eprintln!("helm install to 2 Pods Ready: {pods_ready_after:.1?}");

    // Exactly one leads: the Lease names one of the two live Pods (the leader label is set with
    // alerts only: the alerts test checks it).
    let first_leader = wait_until(
        "one of the Pods to hold the Lease",
        Duration::from_secs(60),
        || async {
            leader(&leases, lease, &pods, release)
                .await
                .ok_or_else(|| "no live holder".to_string())
        },
    )
    .await;
    // Both pass their probes: Ready (readiness) and never restarted (liveness). Both run the
    // image pulled from the registry by digest.
    assert_eq!(ready_pods.len(), 2);
    let (_, digest) = operator_image().await;
    for pod in &ready_pods {
        let image_id = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .map(|c| c.image_id.clone())
            .unwrap_or_default();
        assert!(
            image_id.ends_with(digest.as_str()),
            "the Pod runs {image_id}, not the pushed {digest}"
        );
        let restarts: i32 = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|c| c.iter().map(|c| c.restart_count).sum())
            .unwrap_or_default();
        assert_eq!(restarts, 0, "{}", describe_pods(std::slice::from_ref(pod)));
    }

    // A connection reaches Ready through the Pod (Pod -> Service 10.0.0.1 -> API server, Pod ->
    // the stand-in on the bridge).
    let created = Instant::now();
    create_connection(cp, &growers, "first", &users[0]).await;
    wait_all_ready(&tcs, &["first".to_string()], Duration::from_secs(60)).await;
    eprintln!(
        "TrimbleConnection created to Ready through the Pod: {:.1?}",
        created.elapsed()
    );
    assert_eq!(credential_posts(&leaf, &users[0]), 1);

    // Handover: the leading Pod is deleted while 50 connections are created.
    let deleted = Instant::now();
    pods.delete(&first_leader, &DeleteParams::default())
        .await
        .unwrap();
    let burst: Vec<String> = (1..=BURST).map(|i| format!("burst-{i:02}")).collect();
    for (name, user) in burst.iter().zip(&users[1..]) {
        create_connection(cp, &growers, name, user).await;
    }
    let new_leader = wait_until(
        "another Pod to take the Lease",
        LEASE_DURATION + Duration::from_secs(30),
        || async {
            match leader(&leases, lease, &pods, release).await {
                Some(holder) if holder != first_leader => Ok(holder),
                other => Err(format!("holder {other:?}")),
            }
        },
    )
    .await;
    let handover = deleted.elapsed();
    eprintln!("leading Pod deleted to {new_leader} holding the Lease: {handover:.1?}");
    assert!(
        handover <= LEASE_DURATION + Duration::from_secs(5),
        "the handover took {handover:?}, more than the lease duration"
    );
    wait_all_ready(&tcs, &burst, Duration::from_secs(120)).await;
    eprintln!(
        "{BURST} TrimbleConnections Ready {:.1?} after the leader was deleted",
        deleted.elapsed()
    );
    for user in &users {
        assert_eq!(credential_posts(&leaf, user), 1, "POSTs for {user}");
    }
    // The Deployment replaced the deleted Pod.
    wait_pods_ready(&pods, release, 2, &BTreeSet::from([first_leader.clone()])).await;

    // A crash (SIGKILL: the Lease is not released): the kubelet restarts the container, and a
    // live process holds the Lease again within its duration. The restarted one has the Pod's
    // identity, so it may take its own Lease back before the other Pod could.
    let crashed_pod = pods.get(&new_leader).await.unwrap();
    let container = crashed_pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().and_then(|c| c.container_id.clone()))
        .expect("the leader's container id");
    let renewed_before = leases
        .get(lease)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.renew_time);
    let crashed = Instant::now();
    containerd::crash_container(&container).unwrap_or_else(|e| panic!("{e}"));
    let after_crash = wait_until(
        "a live process to hold the Lease again after the leader crashed",
        LEASE_DURATION + Duration::from_secs(30),
        || async {
            let restarts: i32 = pods
                .get(&new_leader)
                .await
                .map_err(|e| e.to_string())?
                .status
                .and_then(|s| s.container_statuses)
                .map(|c| c.iter().map(|c| c.restart_count).sum())
                .unwrap_or_default();
            let renewed = leases
                .get(lease)
                .await
                .map_err(|e| e.to_string())?
                .spec
                .and_then(|s| s.renew_time);
            let holder = leader(&leases, lease, &pods, release).await;
            match holder {
                Some(holder) if restarts >= 1 && renewed != renewed_before => Ok(holder),
                other => Err(format!("holder {other:?}, restarts {restarts}")),
            }
        },
    )
    .await;
    let crash_handover = crashed.elapsed();
    eprintln!(
        "leader crashed (SIGKILL) to {after_crash} holding the Lease again: {crash_handover:.1?} ({})",
        if after_crash == new_leader {
            "its restarted container"
        } else {
            "the other Pod"
        }
    );
    assert!(
        crash_handover <= LEASE_DURATION + Duration::from_secs(5),
        "the Lease was held again only {crash_handover:?} after the crash"
    );
    // The kubelet restarts the crashed container: both Ready again.
    wait_pods_ready(&pods, release, 2, &BTreeSet::new()).await;

    // Drain: the budget (minAvailable 1) lets one Pod go, not both; the evicted one cannot come
    // back on a cordoned node, so the drain gives up with one operator Pod still running.
    let drain = cp
        .kubectl_async(&[
            "drain",
            NODE_NAME,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--pod-selector",
            &format!("app.kubernetes.io/instance={release}"),
            "--timeout=20s",
        ])
        .await;
    let drain_err = String::from_utf8_lossy(&drain.stderr).into_owned();
    let running = release_pods(&pods, release).await;
    expect_success(
        "kubectl uncordon",
        &cp.kubectl_async(&["uncordon", NODE_NAME]).await,
    );
    assert!(
        !drain.status.success(),
        "the drain evicted every operator Pod despite the budget:\n{drain_err}"
    );
    assert!(
        drain_err.contains("disruption budget"),
        "the drain did not stop at the budget:\n{drain_err}"
    );
    assert_eq!(
        running.iter().filter(|p| pod_ready(p)).count(),
        1,
        "Pods during the drain:\n{}",
        describe_pods(&running)
    );
    wait_pods_ready(&pods, release, 2, &BTreeSet::new()).await;

    // Upgrade with a changed value: the Pods roll, nothing is created twice.
    let before: BTreeSet<String> = release_pods(&pods, release)
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let upgraded = Instant::now();
    let mut values = chart_values(&leaf, &growers, &["crds.enabled=true"]).await;
    values.push("logging.level=debug".to_string());
    helm(cp, "upgrade", release, &namespace, &values);
    wait_pods_ready(&pods, release, 2, &before).await;
    eprintln!(
        "helm upgrade to 2 new Pods Ready: {:.1?}",
        upgraded.elapsed()
    );
    wait_until("a new Pod to lead", Duration::from_secs(60), || async {
        match leader(&leases, lease, &pods, release).await {
            Some(holder) if !before.contains(&holder) => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await;
    for user in &users {
        assert_eq!(
            credential_posts(&leaf, user),
            1,
            "POSTs for {user} after the upgrade"
        );
    }

    // Uninstall: the CRD (helm.sh/resource-policy: keep), the connections and Leaf's credentials
    // stay.
    expect_success(
        "helm uninstall",
        &cp.helm(&["uninstall", release, "--namespace", &namespace, "--wait"]),
    );
    wait_until(
        "the operator's Pods to be gone",
        Duration::from_secs(60),
        || async {
            let left = release_pods(&pods, release).await;
            if left.is_empty() {
                Ok(())
            } else {
                Err(describe_pods(&left))
            }
        },
    )
    .await;
    let crd = cp.kubectl(&["get", "crd", support::install::CRD_NAME]);
    assert!(crd.status.success(), "the CRD is gone after helm uninstall");
    assert_eq!(
        tcs.list(&ListParams::default()).await.unwrap().items.len(),
        BURST + 1,
        "connections were deleted with the release"
    );
    for user in &users {
        assert!(
            leaf.credential(user).is_some(),
            "{user}'s credential is gone from Leaf"
        );
    }
}

/// POSTs a signed delivery to `url`; returns the status.
async fn deliver(url: &str, body: &str) -> Result<u16, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .post(url)
        .header("content-type", "application/json")
        .header(
            "X-Leaf-Signature",
            support::alerts::sign(support::alerts::SIGNING_SECRET, body),
        )
        .body(body.to_string())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// Waits until the alerts Service's EndpointSlice lists exactly the leader's address and a signed
/// delivery through the Service's address (kube-proxy) and to that address is taken (200, where
/// a standby would answer 503).
async fn assert_alerts_reach_leader(
    slices: &Api<EndpointSlice>,
    service: &str,
    cluster_ip: &str,
    leader_ip: &str,
    port: u16,
) {
    let body = support::alerts::credentials_alert(
        "credentialsInvalid",
        "no-such-credential",
        "INVALID",
        &support::alerts::leaf_timestamp(0),
    );
    wait_until(
        &format!("the EndpointSlice of {service} to name the leader {leader_ip} only"),
        Duration::from_secs(60),
        || async {
            let ready = ready_endpoints(slices, service).await;
            if ready == BTreeSet::from([leader_ip.to_string()]) {
                Ok(())
            } else {
                Err(format!("ready endpoints {ready:?}"))
            }
        },
    )
    .await;
    for url in [
        format!("http://{cluster_ip}:80/alerts"),
        format!("http://{leader_ip}:{port}/alerts"),
    ] {
        wait_until(
            &format!("a signed delivery to {url} to be taken"),
            Duration::from_secs(30),
            || async {
                match deliver(&url, &body).await? {
                    200 => Ok(()),
                    status => Err(format!("answered {status}")),
                }
            },
        )
        .await;
    }
}

/// With alerts on, the receiver's Service selects the leading Pod only, before and after a
/// handover, and a delivery through the Service reaches it.
#[tokio::test]
async fn the_alerts_service_routes_to_the_leading_pod_through_a_handover() {
    node().await;
    let _serial = serial().await;
    let cp = control_plane().await;
    let namespace = cp.create_namespace("node-alerts").await;
    let growers = cp.create_namespace("node-alerts-growers").await;
    let leaf = leaf_for_pods(&[]).await;
    create_leaf_secret(cp, &namespace).await;
    Api::<Secret>::namespaced(cp.client(), &namespace)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some(support::alerts::SIGNING_SECRET_NAME.into()),
                    ..Default::default()
                },
                string_data: Some(
                    [(
                        "secret".to_string(),
                        support::alerts::SIGNING_SECRET.to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    cp.install_crd_if_missing().await;

    let release = "lo-alerts";
    let lease = "lo-alerts-leaf-operator";
    let service = "lo-alerts-leaf-operator-alerts";
    let port = 8443;
    let values = chart_values(
        &leaf,
        &growers,
        &[
            "crds.enabled=false",
            "alerts.enabled=true",
            &format!("alerts.secretName={}", support::alerts::SIGNING_SECRET_NAME),
        ],
    )
    .await;
    helm(cp, "install", release, &namespace, &values);
    let pods: Api<Pod> = Api::namespaced(cp.client(), &namespace);
    let leases: Api<Lease> = Api::namespaced(cp.client(), &namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(cp.client(), &namespace);
    wait_pods_ready(&pods, release, 2, &BTreeSet::new()).await;
    let cluster_ip = Api::<Service>::namespaced(cp.client(), &namespace)
        .get(service)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("the alerts Service has a cluster IP");

    let first = wait_until("a leader", Duration::from_secs(60), || async {
        leader(&leases, lease, &pods, release)
            .await
            .ok_or_else(|| "no live holder".to_string())
    })
    .await;
    let first_ip = pod_ip(&pods, &first).await;
    assert_alerts_reach_leader(&slices, service, &cluster_ip, &first_ip, port).await;

    let deleted = Instant::now();
    pods.delete(&first, &DeleteParams::default()).await.unwrap();
    let second = wait_until(
        "another Pod to lead",
        LEASE_DURATION + Duration::from_secs(30),
        || async {
            match leader(&leases, lease, &pods, release).await {
                Some(holder) if holder != first => Ok(holder),
                other => Err(format!("holder {other:?}")),
            }
        },
    )
    .await;
    let second_ip = pod_ip(&pods, &second).await;
    assert_alerts_reach_leader(&slices, service, &cluster_ip, &second_ip, port).await;
    eprintln!(
        "alerts: leader deleted to the Service's EndpointSlice naming the new leader and a delivery taken: {:.1?}",
        deleted.elapsed()
    );
    expect_success(
        "helm uninstall",
        &cp.helm(&["uninstall", release, "--namespace", &namespace, "--wait"]),
    );
}

/// The kustomize base with its `ha` and `namespaced` components, on the node: two Pods Ready, one
/// leader, a connection Ready.
#[tokio::test]
async fn the_kustomize_base_runs_on_the_node() {
    node().await;
    let _serial = serial().await;
    let cp = control_plane().await;
    let (repository, digest) = operator_image().await;
    let namespace = "leaf-operator";
    let leaf = leaf_for_pods(&["kustomize-user".to_string()]).await;

    // kustomize accepts only relative paths to a base: the overlay lives in the checkout's
    // target/ directory, as in the other kustomize tests.
    let dir = repo_root().join("target/node-kustomize");
    std::fs::create_dir_all(&dir).unwrap();
    let base = "../../deploy";
    let overlay = format!(
        r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {base}
components:
  - {base}/components/namespaced
  - {base}/components/ha
images:
  - name: leaf-operator
    newName: {repository}
    digest: {digest}
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: leaf-operator
        namespace: leaf-operator
      spec:
        template:
          spec:
            containers:
              - name: operator
                env:
                  - name: LEAF_API_URL
                    value: "{origin}"
"#,
        origin = leaf.origin(),
    );
    std::fs::write(dir.join("kustomization.yaml"), overlay).unwrap();
    let started = Instant::now();
    let applied = cp
        .kubectl_async(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-k",
            dir.to_str().unwrap(),
        ])
        .await;
    expect_success("kubectl apply -k (deploy/ + namespaced + ha)", &applied);
    create_leaf_secret(cp, namespace).await;

    let pods: Api<Pod> = Api::namespaced(cp.client(), namespace);
    let leases: Api<Lease> = Api::namespaced(cp.client(), namespace);
    wait_pods_ready(&pods, "leaf-operator", 2, &BTreeSet::new()).await;
    eprintln!(
        "kubectl apply -k to 2 Pods Ready: {:.1?}",
        started.elapsed()
    );
    wait_until(
        "one of the Pods to lead",
        Duration::from_secs(60),
        || async {
            leader(&leases, "leaf-operator", &pods, "leaf-operator")
                .await
                .ok_or_else(|| "no live holder".to_string())
        },
    )
    .await;

    // Its own Leaf account (the base mounts no default one).
    let mut tc = trimble_connection("kustomized", "kustomize-user", "kustomized-trimble");
    tc.spec.leaf_auth_secret_ref =
        Some(serde_json::from_value(serde_json::json!({"name": "leaf-account"})).unwrap());
    Api::<Secret>::namespaced(cp.client(), namespace)
        .create(
            &PostParams::default(),
            &trimble_secret("kustomized-trimble", "refresh-kustomized"),
        )
        .await
        .unwrap();
    let tcs: Api<TrimbleConnection> = Api::namespaced(cp.client(), namespace);
    tcs.create(&PostParams::default(), &tc).await.unwrap();
    wait_all_ready(&tcs, &["kustomized".to_string()], Duration::from_secs(60)).await;
    assert_eq!(credential_posts(&leaf, "kustomize-user"), 1);

    // Removed again (the Deployment first, so that the connection's finalizer stays and the
    // shared CRD is left to the other tests).
    expect_success(
        "kubectl delete deployment",
        &cp.kubectl_async(&[
            "delete",
            "deployment",
            "leaf-operator",
            "-n",
            namespace,
            "--wait",
        ])
        .await,
    );
}

/// The release path end to end: `scripts/release.sh` pushes the multi-arch index and the chart
/// to the tests' registry (`support::release`), and the chart is installed from `oci://` by its
/// digest, with nothing but the cluster's own values set: the image it runs is the index the
/// release pinned (the node's containerd picks the linux/amd64 manifest from it).
#[tokio::test]
async fn the_released_chart_installs_from_oci_by_digest_and_runs_the_released_image() {
    node().await;
    let _serial = serial().await;
    let cp = control_plane().await;
    cp.install_crd_if_missing().await;
    let release = support::release::shared_release().await;
    images::allow_plain_http_registry(release.registry.address()).unwrap_or_else(|e| panic!("{e}"));
    let namespace = cp.create_namespace("node-oci").await;
    let growers = cp.create_namespace("node-oci-growers").await;
    let leaf = leaf_for_pods(&["oci-user".to_string()]).await;
    create_leaf_secret(cp, &namespace).await;

    let chart = format!("{}@{}", release.get("chart"), release.get("chart_digest"));
    let values = [
        "crds.enabled=false".to_string(),
        format!("watchNamespaces={{{growers}}}"),
        format!("leaf.apiUrl={}", leaf.origin()),
        "leaf.existingSecret=leaf-account".to_string(),
        "leaf.tokenKey=token".to_string(),
    ];
    let mut args = vec![
        "install",
        "lo-oci",
        chart.as_str(),
        "--plain-http",
        "--namespace",
        &namespace,
    ];
    for value in &values {
        args.extend(["--set", value.as_str()]);
    }
    let installed = Instant::now();
    let said = expect_success("helm install from oci:// by digest", &cp.helm(&args));
    assert!(
        said.contains(release.get("image")),
        "NOTES name the image the release pinned: {said}"
    );
    let pods: Api<Pod> = Api::namespaced(cp.client(), &namespace);
    let ready = wait_pods_ready(&pods, "lo-oci", 1, &BTreeSet::new()).await;
    eprintln!(
        "helm install from oci:// to the Pod Ready: {:.1?}",
        installed.elapsed()
    );
    let container = &ready[0].spec.as_ref().unwrap().containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(release.get("image")),
        "the Pod runs the index the release pinned, by digest"
    );

    let tcs: Api<TrimbleConnection> = Api::namespaced(cp.client(), &growers);
    let created = Instant::now();
    create_connection(cp, &growers, "oci-farm", "oci-user").await;
    wait_all_ready(&tcs, &["oci-farm".to_string()], Duration::from_secs(60)).await;
    eprintln!(
        "TrimbleConnection Ready through the released image: {:.1?}",
        created.elapsed()
    );
    assert_eq!(credential_posts(&leaf, "oci-user"), 1);
    expect_success(
        "helm uninstall",
        &cp.helm(&["uninstall", "lo-oci", "--namespace", &namespace, "--wait"]),
    );
}
