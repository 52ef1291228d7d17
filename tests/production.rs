//! Production behaviour of the operator process against the real control plane and the Leaf
//! stand-in: metrics and probes, leader election and graceful shutdown, and surviving faults
//! (API server and etcd restarts, a Leaf outage, kill -9 during a burst) with nothing lost and
//! nothing duplicated on Leaf.
//!
//! The tests of this binary run one at a time (see [`serial`]): some stop the shared API server.

mod support;

use std::collections::BTreeMap;

use std::net::SocketAddr;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use leaf_operator::crd::TrimbleConnection;
use leaf_standin::{StandIn, StandInConfig};

use support::objects::{self, wait_all_ready};
use support::operator::{Operator, OperatorOptions};
use support::{ControlPlane, control_plane, wait_until};

/// Tests here stop and restart the one API server of this binary: never two at once.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

// --- Kubernetes helpers ----------------------------------------------------------------------

/// Creates TrimbleConnection `name` for `leaf_user` with a Secret of its own (`{name}-creds`: a
/// refresh token is never shared by two Leaf users), retrying while the API server refuses.
async fn create_connection(api: &Api<TrimbleConnection>, name: &str, leaf_user: &str) {
    let secret_name = format!("{name}-creds");
    let secrets: Api<Secret> = Api::namespaced(
        api.clone().into_client(),
        api.namespace().expect("a namespaced Api"),
    );
    let secret = objects::credentials(
        &secret_name,
        "trimble-app",
        "app-secret-value",
        &format!("refresh-{name}"),
    );
    objects::create_retrying(&secrets, &secret).await;
    let tc = objects::trimble_connection(name, leaf_user, &secret_name, serde_json::json!({}));
    objects::create_retrying(api, &tc).await;
}

async fn lease_holder(client: &kube::Client, namespace: &str, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|lease| lease.spec)
        .and_then(|spec| spec.holder_identity)
}

// --- Leaf stand-in helpers -------------------------------------------------------------------

fn is_create(method: &str, path: &str) -> bool {
    method.eq_ignore_ascii_case("POST") && path.ends_with("/trimble-credentials")
}

/// Number of create requests (any answer) the stand-in got for each Leaf user.
fn creates_per_user(standin: &StandIn) -> BTreeMap<String, (usize, usize)> {
    let mut per_user: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for request in standin.requests() {
        if !is_create(&request.method, &request.path) {
            continue;
        }
        let user = request
            .path
            .trim_end_matches("/trimble-credentials")
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let entry = per_user.entry(user).or_default();
        entry.0 += 1;
        if matches!(request.status, Some(200..=299)) {
            entry.1 += 1;
        }
    }
    per_user
}

/// Every user in `users` had exactly one create request, and it succeeded; Leaf holds a credential.
fn assert_exactly_one_create_each(standin: &StandIn, users: &[String]) {
    let per_user = creates_per_user(standin);
    let wrong: Vec<String> = users
        .iter()
        .filter_map(|user| {
            let (attempts, successes) = per_user.get(user).copied().unwrap_or_default();
            let stored = standin.credential(user).is_some();
            (attempts != 1 || successes != 1 || !stored).then(|| {
                format!("{user}: {attempts} POSTs, {successes} succeeded, stored={stored}")
            })
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "every Leaf user must get exactly one successful create and nothing more; wrong for {} of {}: {:?}",
        wrong.len(),
        users.len(),
        &wrong[..wrong.len().min(10)]
    );
}

// --- HTTP helpers ----------------------------------------------------------------------------

async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .ok()?;
    client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn scrape(addr: SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200, "/metrics must answer 200");
    response.text().await.expect("metrics body")
}

/// Sum of the samples of `name` whose labels include every `key="value"` in `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// --- operator processes -----------------------------------------------------------------------

/// An operator process as production runs it, with the static `token` (one per replica, so that
/// the stand-in's request log tells the replicas apart), started without waiting for a sync.
fn replica(cp: &ControlPlane, namespace: &str, origin: &str, token: &str) -> OperatorOptions {
    let _ = cp;
    OperatorOptions::new(namespace, origin)
        .token(token)
        .rust_log("info,leaf_operator=debug,kube_lease_manager=info")
}

/// The same, elected through the Lease as replica `identity`.
fn elected(
    cp: &ControlPlane,
    namespace: &str,
    origin: &str,
    token: &str,
    identity: &str,
) -> Operator {
    Operator::launch(
        cp,
        replica(cp, namespace, origin, token).leader_election(identity),
    )
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

// --- tests -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes_follow_a_lifecycle_and_a_leaf_outage() {
    let _serial = serial().await;
    let cp = control_plane().await;
    cp.install_crd().await;
    let client = cp.client();
    let ns = cp.create_namespace("prod-metrics").await;
    let standin = StandIn::start(StandInConfig {
        auto_create_users: true,
        ..StandInConfig::default().with_token("metrics-token")
    })
    .await;
    let operator = Operator::start(
        cp,
        OperatorOptions::new(&ns, &standin.origin()).token("metrics-token"),
    )
    .await;
    let addr = operator
        .http_addr()
        .expect("the operator logs its HTTP address");
    assert_eq!(
        get_status(addr, "/readyz").await,
        Some(200),
        "ready once the caches synced"
    );
    assert_eq!(get_status(addr, "/livez").await, Some(200));
    let text = scrape(addr).await;
    assert_eq!(
        sample(&text, "leaf_operator_leader", &[]),
        1.0,
        "without election the replica leads:\n{text}"
    );

    let api: Api<TrimbleConnection> = Api::namespaced(client.clone(), &ns);
    for i in 1..=3 {
        create_connection(&api, &format!("tc-{i}"), &format!("user-{i}")).await;
    }
    wait_all_ready(&api, 3, Duration::from_secs(60)).await;

    let text = scrape(addr).await;
    assert!(
        sample(&text, "leaf_operator_reconciles_total", &[("result", "ok")]) >= 3.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "leaf_operator_leaf_requests_total",
            &[("operation", "create_credential"), ("status", "201")]
        ),
        3.0,
        "one create per resource:\n{text}"
    );
    assert!(
        sample(
            &text,
            "leaf_operator_leaf_requests_total",
            &[("operation", "get_credential")]
        ) >= 3.0,
        "{text}"
    );
    assert!(
        sample(&text, "leaf_operator_reconcile_duration_seconds_count", &[]) >= 3.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "leaf_operator_leaf_request_duration_seconds_count",
            &[]
        ) >= 6.0,
        "{text}"
    );
    for i in 1..=3 {
        let name = format!("tc-{i}");
        let one = |condition| {
            sample(
                &text,
                "leaf_operator_resource_ready",
                &[
                    ("namespace", &ns),
                    ("name", &name),
                    ("condition", condition),
                ],
            )
        };
        assert_eq!(
            (one("True"), one("False"), one("Unknown")),
            (1.0, 0.0, 0.0),
            "ready gauge of {name}:\n{text}"
        );
    }
    assert!(
        !text.contains("refresh-tc-1") && !text.contains("app-secret-value"),
        "no secret in metrics"
    );

    // Rotation: a changed Secret makes exactly one rotation.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"stringData": {"refreshToken": "refresh-1-rotated"}});
    secrets
        .patch("tc-1-creds", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch Secret");
    wait_until(
        "the rotation to be counted",
        Duration::from_secs(60),
        || async {
            let text = scrape(addr).await;
            let rotations = sample(&text, "leaf_operator_rotations_total", &[]);
            if rotations == 1.0 {
                Ok(())
            } else {
                Err(format!("rotations_total = {rotations}"))
            }
        },
    )
    .await;
    wait_all_ready(&api, 3, Duration::from_secs(60)).await;

    // A Leaf outage: the resource reports it, the probes stay up, calls back off, then recovery.
    standin.set_outage(true);
    let before = standin.requests().len();
    create_connection(&api, "tc-4", "user-4").await;
    wait_until(
        "tc-4 to report LeafUnavailable",
        Duration::from_secs(30),
        || async {
            let tc = api.get("tc-4").await.map_err(|e| e.to_string())?;
            match objects::ready(&tc) {
                Some((status, reason)) if status == "False" && reason == "LeafUnavailable" => {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let outage_started = Instant::now();
    let mut probes = Vec::new();
    while outage_started.elapsed() < Duration::from_secs(12) {
        probes.push((
            get_status(addr, "/livez").await,
            get_status(addr, "/readyz").await,
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during = standin.requests().len() - before;
    eprintln!("Leaf requests during the outage (about 15 s): {during}");
    let text = scrape(addr).await;
    standin.set_outage(false);
    assert!(
        probes.iter().all(|p| *p == (Some(200), Some(200))),
        "/livez and /readyz must stay 200 through a Leaf outage: {probes:?}"
    );
    // Per-object backoff (1 s doubling) allows about 5 attempts in ~15 s; a hot loop makes hundreds.
    assert!(
        during <= 20,
        "{during} Leaf requests for one resource during the outage: no backoff"
    );
    assert!(
        sample(
            &text,
            "leaf_operator_reconcile_errors_total",
            &[("reason", "LeafUnavailable")]
        ) >= 1.0,
        "errors by reason:\n{text}"
    );
    assert!(
        sample(
            &text,
            "leaf_operator_leaf_requests_total",
            &[("status", "503")]
        ) >= 1.0,
        "{text}"
    );
    let one = |condition| {
        sample(
            &text,
            "leaf_operator_resource_ready",
            &[("name", "tc-4"), ("condition", condition)],
        )
    };
    assert_eq!(
        (one("True"), one("False")),
        (0.0, 1.0),
        "gauge shows tc-4 not ready:\n{text}"
    );
    wait_all_ready(&api, 4, Duration::from_secs(90)).await;
    assert_exactly_one_create_each(
        &standin,
        &["user-2".into(), "user-3".into(), "user-4".into()],
    );

    // A deleted resource leaves the gauge at the next scrape.
    api.delete("tc-2", &DeleteParams::default())
        .await
        .expect("delete tc-2");
    wait_until(
        "tc-2 to leave the ready gauge",
        Duration::from_secs(60),
        || async {
            let text = scrape(addr).await;
            if text.contains("name=\"tc-2\"") {
                Err("still exported".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_ready_only_after_the_watches_sync() {
    let _serial = serial().await;
    let cp = control_plane().await;
    cp.install_crd().await;
    let ns = cp.create_namespace("prod-readyz").await;
    let standin = StandIn::start(StandInConfig::default().with_token("readyz-token")).await;

    // Start the operator while the API server is down: it cannot list anything yet.
    cp.stop_apiserver();
    let replica = Operator::launch(cp, replica(cp, &ns, &standin.origin(), "readyz-token"));
    let addr = replica.wait_http_addr().await;
    let mut before = Vec::new();
    for _ in 0..6 {
        before.push((
            get_status(addr, "/livez").await,
            get_status(addr, "/readyz").await,
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cp.start_apiserver().await.expect("restart kube-apiserver");
    assert!(
        before.iter().all(|p| *p == (Some(200), Some(503))),
        "before the watches sync: live but not ready; got {before:?}"
    );
    wait_until(
        "/readyz to turn 200 after the API server is back",
        Duration::from_secs(60),
        || async {
            match get_status(addr, "/readyz").await {
                Some(200) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(get_status(addr, "/livez").await, Some(200));
    assert!(
        replica.log().contains("caches synced"),
        "{}",
        tail(&replica.log())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_calls_leaf_a_killed_leader_is_replaced_and_sigterm_hands_over_at_once() {
    let _serial = serial().await;
    let cp = control_plane().await;
    cp.install_crd().await;
    let client = cp.client();
    let ns = cp.create_namespace("prod-leader").await;
    // One token per replica: the stand-in logs `token:1`, `token:2`, `token:3` as the caller.
    let standin = StandIn::start(StandInConfig {
        auto_create_users: true,
        ..StandInConfig::default()
            .with_token("token-a")
            .with_token("token-b")
            .with_token("token-c")
    })
    .await;
    let lease = "leaf-operator";
    let api: Api<TrimbleConnection> = Api::namespaced(client.clone(), &ns);

    let mut a = elected(cp, &ns, &standin.origin(), "token-a", "op-a");
    wait_until(
        "op-a to take the lease",
        Duration::from_secs(30),
        || async {
            match lease_holder(&client, &ns, lease).await {
                Some(holder) if holder == "op-a" => Ok(()),
                other => Err(format!("holder {other:?}")),
            }
        },
    )
    .await;
    let mut b = elected(cp, &ns, &standin.origin(), "token-b", "op-b");
    let a_addr = a.wait_http_addr().await;
    let b_addr = b.wait_http_addr().await;
    wait_until(
        "op-b to stand by, ready",
        Duration::from_secs(30),
        || async {
            match get_status(b_addr, "/readyz").await {
                Some(200) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    for i in 0..5 {
        create_connection(&api, &format!("tc-{i}"), &format!("user-{i}")).await;
    }
    wait_all_ready(&api, 5, Duration::from_secs(60)).await;
    let requests = standin.requests();
    let callers: std::collections::BTreeSet<&str> =
        requests.iter().map(|r| r.account.as_str()).collect();
    assert_eq!(
        callers,
        ["token:1"].into(),
        "only the leader (op-a, token:1) may call Leaf"
    );
    assert_eq!(
        sample(&scrape(a_addr).await, "leaf_operator_leader", &[]),
        1.0
    );
    assert_eq!(
        sample(&scrape(b_addr).await, "leaf_operator_leader", &[]),
        0.0
    );

    // kill -9 the leader, with work pending: the standby takes over within the lease duration.
    let seen = standin.requests().len();
    a.kill();
    let killed = Instant::now();
    for i in 5..10 {
        create_connection(&api, &format!("tc-{i}"), &format!("user-{i}")).await;
    }
    wait_until(
        "op-b to take over the lease",
        Duration::from_secs(30),
        || async {
            match lease_holder(&client, &ns, lease).await {
                Some(holder) if holder == "op-b" => Ok(()),
                other => Err(format!("holder {other:?}")),
            }
        },
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!("kill -9 of the leader: op-b holds the lease {takeover:?} later");
    assert!(
        takeover <= Duration::from_secs(20),
        "takeover took {takeover:?} (lease 15 s)"
    );
    wait_all_ready(&api, 10, Duration::from_secs(60)).await;
    let after: Vec<String> = standin.requests()[seen..]
        .iter()
        .map(|r| r.account.clone())
        .collect();
    assert!(
        after.iter().all(|a| a == "token:2"),
        "after the kill only op-b calls Leaf: {after:?}"
    );
    let users: Vec<String> = (0..10).map(|i| format!("user-{i}")).collect();
    assert_exactly_one_create_each(&standin, &users);
    assert_eq!(
        sample(&scrape(b_addr).await, "leaf_operator_leader", &[]),
        1.0
    );

    // SIGTERM: the leader releases the lease at once and a standby takes over in seconds.
    let c = elected(cp, &ns, &standin.origin(), "token-c", "op-c");
    let _ = c.wait_http_addr().await;
    b.sigterm();
    let terminated = Instant::now();
    wait_until(
        "op-b to give up the lease",
        Duration::from_secs(8),
        || async {
            match lease_holder(&client, &ns, lease).await {
                Some(holder) if holder == "op-b" => Err("still op-b".to_string()),
                _ => Ok(()),
            }
        },
    )
    .await;
    let released = terminated.elapsed();
    let exited = b.wait_exit(Duration::from_secs(15)).await;
    assert!(
        exited.is_some_and(|d| d <= Duration::from_secs(12)),
        "op-b must exit within its grace period: {exited:?}"
    );
    assert!(
        b.log().contains("released the leader lease"),
        "{}",
        tail(&b.log())
    );
    wait_until("op-c to take over", Duration::from_secs(10), || async {
        match lease_holder(&client, &ns, lease).await {
            Some(holder) if holder == "op-c" => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await;
    let handed_over = terminated.elapsed();
    eprintln!(
        "SIGTERM of the leader: lease released after {released:?}, op-b exited after {exited:?}, op-c leads after {handed_over:?}"
    );
    assert!(
        released <= Duration::from_secs(5),
        "lease released {released:?} after SIGTERM"
    );
    assert!(
        handed_over <= Duration::from_secs(8),
        "op-c took over {handed_over:?} after SIGTERM"
    );
    create_connection(&api, "tc-10", "user-10").await;
    wait_all_ready(&api, 11, Duration::from_secs(60)).await;
    assert_exactly_one_create_each(&standin, &["user-10".to_string()]);
    let last_create = standin
        .requests()
        .into_iter()
        .rfind(|r| is_create(&r.method, &r.path))
        .expect("a create");
    assert_eq!(
        last_create.account, "token:3",
        "the new leader op-c made the last create"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_and_etcd_restarts_lose_nothing_and_duplicate_nothing() {
    let _serial = serial().await;
    let cp = control_plane().await;
    cp.install_crd().await;
    let client = cp.client();
    let ns = cp.create_namespace("prod-restarts").await;
    let standin = StandIn::start(StandInConfig {
        auto_create_users: true,
        ..StandInConfig::default().with_token("restart-token")
    })
    .await;
    // A slow Leaf keeps the creates in flight when the API server goes away.
    standin.set_latency(Duration::from_secs(2));
    let operator = Operator::start(
        cp,
        OperatorOptions::new(&ns, &standin.origin()).token("restart-token"),
    )
    .await;
    let api: Api<TrimbleConnection> = Api::namespaced(client.clone(), &ns);
    for i in 0..10 {
        create_connection(&api, &format!("tc-{i}"), &format!("user-{i}")).await;
    }
    // Mid-run: once every resource has looked its credential up (404), the creates follow and
    // take 2 s at Leaf; the API server crashes while they are in flight.
    wait_until(
        "every resource to look up its credential",
        Duration::from_secs(30),
        || async {
            let n = standin.count("GET", "/trimble-credentials");
            if n >= 10 {
                Ok(())
            } else {
                Err(format!("{n} lookups"))
            }
        },
    )
    .await;
    let ready_before = api
        .list(&Default::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|tc| objects::ready(tc).is_some_and(|(s, _)| s == "True"))
                .count()
        })
        .unwrap_or_default();
    cp.kill_apiserver();
    eprintln!(
        "API server stopped with {} creates sent and {ready_before} of 10 resources Ready",
        standin.count("POST", "/trimble-credentials")
    );
    cp.start_apiserver().await.expect("kube-apiserver restarts");
    standin.set_latency(Duration::from_millis(20));
    assert!(
        ready_before < 10,
        "the API server must go away mid-run ({ready_before} of 10 already Ready)"
    );
    wait_all_ready(&api, 10, Duration::from_secs(90)).await;

    cp.restart_etcd().await;
    let client = cp.client();
    let api: Api<TrimbleConnection> = Api::namespaced(client.clone(), &ns);
    for i in 10..20 {
        create_connection(&api, &format!("tc-{i}"), &format!("user-{i}")).await;
    }
    wait_all_ready(&api, 20, Duration::from_secs(90)).await;
    let users: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    assert_exactly_one_create_each(&standin, &users);
    let addr = operator.http_addr().expect("http address");
    assert_eq!(
        get_status(addr, "/livez").await,
        Some(200),
        "alive after the restarts"
    );
    assert_eq!(
        get_status(addr, "/readyz").await,
        Some(200),
        "ready after the restarts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_of_200_creates_then_restart_gives_one_credential_each() {
    let _serial = serial().await;
    let cp = control_plane().await;
    cp.install_crd().await;
    let client = cp.client();
    let ns = cp.create_namespace("prod-burst").await;
    let standin = StandIn::start(StandInConfig {
        auto_create_users: true,
        ..StandInConfig::default().with_token("burst-token")
    })
    .await;
    standin.set_latency(Duration::from_millis(20));
    let mut operator = Operator::start(
        cp,
        OperatorOptions::new(&ns, &standin.origin()).token("burst-token"),
    )
    .await;
    let api: Api<TrimbleConnection> = Api::namespaced(client.clone(), &ns);
    const COUNT: usize = 200;
    let creating = futures::stream::iter(0..COUNT)
        .map(|i| {
            let api = api.clone();
            async move { create_connection(&api, &format!("tc-{i}"), &format!("user-{i}")).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>();
    let killer = async {
        wait_until(
            "a part of the burst to reach Leaf",
            Duration::from_secs(60),
            || async {
                let n = standin.count("POST", "/trimble-credentials");
                if n >= 30 {
                    Ok(())
                } else {
                    Err(format!("{n} creates"))
                }
            },
        )
        .await;
        operator.kill();
    };
    tokio::join!(creating, killer);
    let at_kill = standin.count("POST", "/trimble-credentials");
    eprintln!("operator killed after {at_kill} of {COUNT} creates");
    assert!(
        at_kill < COUNT,
        "the kill must land mid-burst ({at_kill} creates already)"
    );
    operator.restart().await;
    // A POST in flight at the kill still lands (Leaf finishes what reached it) and is found
    // without a second POST. A resource killed after writing its intent and before its POST left
    // cannot know it never left: its token is never sent again and it asks for a new one.
    let settled = wait_until(
        "every resource Ready, or asking for a new token",
        Duration::from_secs(180),
        || async {
            let list = api
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut asking = Vec::new();
            for tc in &list.items {
                let name = tc.metadata.name.clone().unwrap_or_default();
                let ready = tc
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
                match ready {
                    Some(c) if c.status == "True" => {}
                    Some(c)
                        if c.reason == "CredentialInvalid"
                            && c.message.contains("never sent again") =>
                    {
                        asking.push(name)
                    }
                    other => return Err(format!("{name}: {other:?}")),
                }
            }
            if list.items.len() == COUNT {
                Ok(asking)
            } else {
                Err(format!("{} exist", list.items.len()))
            }
        },
    )
    .await;
    eprintln!(
        "{} of {COUNT} asked for a new token: {settled:?}",
        settled.len()
    );
    let per_user = creates_per_user(&standin);
    for name in &settled {
        let user = name.replace("tc-", "user-");
        assert_eq!(
            per_user.get(&user).copied().unwrap_or_default().0,
            0,
            "{name} asks for a new token, but its POST reached Leaf (Leaf processes what reached it)"
        );
        assert!(standin.credential(&user).is_none());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let patch =
            serde_json::json!({"stringData": {"refreshToken": format!("refresh-{name}-new")}});
        secrets
            .patch(
                &format!("{name}-creds"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("a new token");
    }
    wait_all_ready(&api, COUNT, Duration::from_secs(180)).await;
    let users: Vec<String> = (0..COUNT).map(|i| format!("user-{i}")).collect();
    assert_exactly_one_create_each(&standin, &users);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_put_each_reconcile_in_a_span_with_name_and_namespace() {
    let _serial = serial().await;
    let cp = control_plane().await;
    cp.install_crd().await;
    let client = cp.client();
    let ns = cp.create_namespace("prod-json").await;
    let standin = StandIn::start(StandInConfig {
        auto_create_users: true,
        ..StandInConfig::default().with_token("json-token")
    })
    .await;
    let replica = Operator::launch(
        cp,
        replica(cp, &ns, &standin.origin(), "json-token").env("LOG_FORMAT", "json"),
    );
    let _ = replica.wait_http_addr().await;
    let api: Api<TrimbleConnection> = Api::namespaced(client.clone(), &ns);
    create_connection(&api, "tc-json", "user-json").await;
    wait_all_ready(&api, 1, Duration::from_secs(60)).await;
    let log = replica.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect();
    // Every span a line was logged in, as (span name, fields).
    let in_reconcile_of_tc = lines.iter().any(|line| {
        line["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(std::iter::once(&line["span"]))
            .any(|span| {
                span["name"] == "reconcile"
                    && span["namespace"] == ns.as_str()
                    && span["trimbleconnection"] == "tc-json"
            })
    });
    assert!(
        in_reconcile_of_tc,
        "a log line inside the reconcile span must carry the object's name and namespace; got:\n{}",
        tail(&log)
    );
    assert!(
        !log.contains("refresh-tc-json") && !log.contains("app-secret-value"),
        "no secret in the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_reach_the_api_server_stops_and_one_leader_resumes_after() {
    let _serial = serial().await;
    let cp = control_plane().await;
    cp.install_crd().await;
    let client = cp.client();
    let ns = cp.create_namespace("prod-leader-outage").await;
    let standin = StandIn::start(StandInConfig {
        auto_create_users: true,
        ..StandInConfig::default()
            .with_token("token-a")
            .with_token("token-b")
    })
    .await;
    let api: Api<TrimbleConnection> = Api::namespaced(client.clone(), &ns);
    let a = elected(cp, &ns, &standin.origin(), "token-a", "op-a");
    let b = elected(cp, &ns, &standin.origin(), "token-b", "op-b");
    let (a_addr, b_addr) = (a.wait_http_addr().await, b.wait_http_addr().await);
    let leaders = || async {
        let a = sample(&scrape(a_addr).await, "leaf_operator_leader", &[]);
        let b = sample(&scrape(b_addr).await, "leaf_operator_leader", &[]);
        (a, b)
    };
    wait_until("one leader", Duration::from_secs(30), || async {
        match leaders().await {
            (a, b) if a + b == 1.0 => Ok(()),
            other => Err(format!("leader gauges {other:?}")),
        }
    })
    .await;
    for i in 0..3 {
        create_connection(&api, &format!("tc-{i}"), &format!("user-{i}")).await;
    }
    wait_all_ready(&api, 3, Duration::from_secs(60)).await;

    cp.stop_apiserver();
    let stopped = Instant::now();
    let outcome = wait_until_ok(
        "both replicas to stop leading",
        Duration::from_secs(20),
        || async {
            match leaders().await {
                (0.0, 0.0) => Ok(()),
                other => Err(format!("leader gauges {other:?}")),
            }
        },
    )
    .await;
    let stepped_down = stopped.elapsed();
    cp.start_apiserver().await.expect("kube-apiserver restarts");
    outcome.unwrap_or_else(|e| panic!("a leader that cannot renew must stop reconciling: {e}"));
    eprintln!("API server stopped: the leader stepped down after {stepped_down:?}");
    assert!(
        stepped_down <= Duration::from_secs(13),
        "stepped down after {stepped_down:?} (lease 15 s)"
    );

    wait_until(
        "exactly one leader again",
        Duration::from_secs(40),
        || async {
            match leaders().await {
                (a, b) if a + b == 1.0 => Ok(()),
                other => Err(format!("leader gauges {other:?}")),
            }
        },
    )
    .await;
    for i in 3..6 {
        create_connection(&api, &format!("tc-{i}"), &format!("user-{i}")).await;
    }
    wait_all_ready(&api, 6, Duration::from_secs(60)).await;
    let users: Vec<String> = (0..6).map(|i| format!("user-{i}")).collect();
    assert_exactly_one_create_each(&standin, &users);
    // Only the leader exports the per-resource gauge; the standby's stopped stores are dropped.
    let (a_text, b_text) = (scrape(a_addr).await, scrape(b_addr).await);
    let (leader_text, standby_text) = if sample(&a_text, "leaf_operator_leader", &[]) == 1.0 {
        (a_text, b_text)
    } else {
        (b_text, a_text)
    };
    wait_until(
        "the leader's ready gauge to show 6 Ready resources",
        Duration::from_secs(20),
        || async {
            let text = scrape(
                if sample(&scrape(a_addr).await, "leaf_operator_leader", &[]) == 1.0 {
                    a_addr
                } else {
                    b_addr
                },
            )
            .await;
            let ready = sample(
                &text,
                "leaf_operator_resource_ready",
                &[("condition", "True")],
            );
            if ready == 6.0 {
                Ok(())
            } else {
                Err(format!("{ready} Ready in the gauge"))
            }
        },
    )
    .await;
    assert!(
        leader_text.contains("leaf_operator_resource_ready{"),
        "{leader_text}"
    );
    assert!(
        !standby_text.contains("leaf_operator_resource_ready{"),
        "a standby must not export stale per-resource gauges:\n{standby_text}"
    );
    assert_eq!(
        {
            let (a, b) = leaders().await;
            a + b
        },
        1.0,
        "still exactly one leader"
    );
}

/// Like `wait_until`, but returns the failure instead of panicking (to restore the API server
/// before failing).
async fn wait_until_ok<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(last) if Instant::now() >= deadline => {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; last seen: {last}"
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
