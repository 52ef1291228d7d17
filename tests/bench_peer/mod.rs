//! The benchmark's peer run (issue 13): the same phases as the operator's run in
//! `tests/benchmark.rs`, against the same control plane, the same stand-in settings and the same N,
//! with Crossplane's provider-http doing the job (see `tests/support/peer.rs` for how it is wired).
//!
//! Differences, all forced by what the peer can do:
//! - "Ready" is the Request's `Ready=True` (crossplane's `Available`: its OBSERVE GET succeeded).
//! - Leaf calls per create count every call to the benchmark's users from applying the Requests
//!   until all are Ready (the peer's post-create GET is what makes a Request Ready).
//! - API-server writes count Requests, Events and ProviderConfigUsages (one per Request).
//! - On a Secret change the peer has nothing to react to (it watches no Secret and Leaf has no
//!   update call): the run waits until the peer has called Leaf for every user after the change
//!   (one poll round) and reports how many credentials in Leaf hold the new values.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use leaf_standin::{StandIn, StandInConfig};

use super::support;
use super::support::peer::{self, Peer, PeerOptions};
use super::{
    BenchConfig, CALLS_PER_CREATE, CALLS_PER_DELETE, Calls, ProcessStats, Results, USER_PREFIX,
    calls_since, change_all_secrets, credentials_secret, for_each_parallel, process_stats, secs,
    watch_events,
};

/// How long the stand-in keeps an idle connection of the peer open (see `run_peer`).
pub const PEER_STANDIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The static Leaf token of the peer's ProviderConfig (the stand-in accepts it without expiry).
const PEER_LEAF_TOKEN: &str = "peer-static-leaf-token";

/// Requests as a watch sees them, and how often they changed.
#[derive(Debug, Default)]
pub struct RequestState {
    ready: HashMap<String, bool>,
    /// Conditions of the Requests that are not Ready (for failure messages; no secret values).
    not_ready: HashMap<String, String>,
    /// Requests crossplane refuses to go on with: "cannot determine creation result".
    stuck: std::collections::HashSet<String>,
    /// Watch events for objects already known (each is a write: a new resourceVersion).
    modifications: u64,
    created: u64,
    first_modification: Option<Instant>,
    synced: bool,
}

impl RequestState {
    fn note(&mut self, name: &str, r: &DynamicObject) {
        if peer::is_ready(r) {
            self.not_ready.remove(name);
        } else {
            self.not_ready.insert(name.to_string(), peer::describe(r));
        }
        if peer::is_stuck_on_create(r) {
            self.stuck.insert(name.to_string());
        } else {
            self.stuck.remove(name);
        }
    }

    fn bench_stuck(&self) -> Vec<String> {
        self.stuck
            .iter()
            .filter(|name| name.starts_with("bench-") && *name != "bench-probe")
            .cloned()
            .collect()
    }

    /// Up to three Requests that are not Ready, with their conditions.
    fn some_not_ready(&self) -> String {
        let mut names: Vec<&String> = self.not_ready.keys().collect();
        names.sort();
        names
            .iter()
            .take(3)
            .map(|n| format!("{n}: {}", self.not_ready[*n]))
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

fn watch_requests(api: Api<DynamicObject>) -> Arc<Mutex<RequestState>> {
    let state = Arc::new(Mutex::new(RequestState::default()));
    let shared = state.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            let Ok(event) = event else {
                continue;
            };
            let mut s = shared.lock().unwrap();
            match event {
                watcher::Event::Init => {}
                watcher::Event::InitApply(r) => {
                    let name = r.metadata.name.clone().unwrap_or_default();
                    s.note(&name, &r);
                    s.ready.insert(name, peer::is_ready(&r));
                }
                watcher::Event::InitDone => s.synced = true,
                watcher::Event::Apply(r) => {
                    let name = r.metadata.name.clone().unwrap_or_default();
                    s.note(&name, &r);
                    if s.ready.insert(name, peer::is_ready(&r)).is_some() {
                        s.modifications += 1;
                        s.first_modification.get_or_insert_with(Instant::now);
                    } else {
                        s.created += 1;
                    }
                }
                watcher::Event::Delete(r) => {
                    let name = r.metadata.name.clone().unwrap_or_default();
                    s.not_ready.remove(&name);
                    s.stuck.remove(&name);
                    s.ready.remove(&name);
                }
            }
        }
    });
    state
}

/// Counts every watch event (a create or a new resourceVersion) of a kind, after the initial list.
fn watch_writes(api: Api<DynamicObject>) -> Arc<Mutex<(bool, u64)>> {
    let state = Arc::new(Mutex::new((false, 0u64)));
    let shared = state.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            let Ok(event) = event else {
                continue;
            };
            let mut s = shared.lock().unwrap();
            match event {
                watcher::Event::InitDone => s.0 = true,
                watcher::Event::Apply(_) | watcher::Event::Delete(_) => s.1 += 1,
                _ => {}
            }
        }
    });
    state
}

async fn wait_requests(
    state: &Arc<Mutex<RequestState>>,
    what: &str,
    timeout: Duration,
    done: impl Fn(&RequestState) -> Result<(), String>,
) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        let result = done(&state.lock().unwrap());
        match result {
            Ok(()) => return Instant::now(),
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn bench_ready(state: &RequestState) -> (usize, usize) {
    let bench = state
        .ready
        .iter()
        .filter(|(name, _)| name.starts_with("bench-") && *name != "bench-probe");
    let (mut total, mut ready) = (0, 0);
    for (_, r) in bench {
        total += 1;
        if *r {
            ready += 1;
        }
    }
    (total, ready)
}

/// What the peer did after every Secret changed.
#[derive(Debug, Default)]
pub struct SecretChange {
    /// From the change until the peer had called Leaf for every user (one poll round).
    pub observed_in: Duration,
    pub calls: Calls,
    /// Credentials in Leaf holding the Secret's new clientSecret.
    pub rotated: usize,
    /// Requests still Ready=True afterwards.
    pub still_ready: usize,
}

/// Everything one peer run measured.
#[derive(Debug, Default)]
pub struct PeerResults {
    pub version: String,
    pub max_reconcile_rate: u32,
    pub startup_first_leaf_call: Duration,
    pub apply: Duration,
    /// Until every Request was Ready or stuck (crossplane refusing to go on after a create it
    /// cannot confirm, which only a human clears).
    pub settled: Duration,
    /// Requests stuck that way after the create; the harness then does the human's part.
    pub stuck_on_create: usize,
    /// Apply → all Ready, including the harness's instant "human" step for the stuck ones.
    pub all_ready: Duration,
    pub ideal_ready: Duration,
    pub create_calls: Calls,
    pub create_writes: Writes,
    pub warmup_calls: Calls,
    pub warmup_writes: Writes,
    pub steady_window: Duration,
    pub steady_calls: Calls,
    pub steady_writes: Writes,
    pub secret_change: SecretChange,
    pub delete: Duration,
    pub ideal_delete: Duration,
    pub delete_calls: Calls,
    /// Credentials left in Leaf after all Requests were gone.
    pub left_in_leaf: usize,
    pub after_startup: ProcessStats,
    pub after_create: ProcessStats,
    pub after_steady: ProcessStats,
    pub after_secret_change: ProcessStats,
    pub after_delete: ProcessStats,
}

/// API-server writes by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct Writes {
    pub requests: u64,
    pub events: u64,
    pub usages: u64,
}

impl Writes {
    pub fn total(&self) -> u64 {
        self.requests + self.events + self.usages
    }

    fn minus(self, earlier: Writes) -> Writes {
        Writes {
            requests: self.requests - earlier.requests,
            events: self.events - earlier.events,
            usages: self.usages - earlier.usages,
        }
    }
}

impl PeerResults {
    pub fn ratio(&self) -> f64 {
        self.all_ready.as_secs_f64() / self.ideal_ready.as_secs_f64()
    }

    pub fn calls_per_create(&self, n: usize) -> f64 {
        self.create_calls.total as f64 / n as f64
    }

    pub fn calls_per_refresh(&self, config: &BenchConfig) -> f64 {
        let intervals = self.steady_window.as_secs_f64() / config.refresh.as_secs_f64();
        self.steady_calls.total as f64 / config.n as f64 / intervals
    }

    pub fn writes_per_refresh(&self, config: &BenchConfig) -> f64 {
        let intervals = self.steady_window.as_secs_f64() / config.refresh.as_secs_f64();
        self.steady_writes.total() as f64 / config.n as f64 / intervals
    }
}

/// `BENCH_PEER_MAX_RECONCILE_RATE` (default 100): provider-http's one knob for concurrency and
/// reconciles per second. 100 gives it the operator's Leaf budget (100 calls/s at >= 1 call per
/// reconcile); its own default, 10, would hold it to a tenth of that.
pub fn peer_rate() -> u32 {
    super::env_or("BENCH_PEER_MAX_RECONCILE_RATE", 100u32)
}

/// Runs the peer through create, steady state, Secret change and deletion.
pub async fn run_peer(config: &BenchConfig) -> PeerResults {
    let mut results = PeerResults {
        max_reconcile_rate: peer_rate(),
        ..Default::default()
    };
    let n = config.n;
    let control_plane = support::control_plane().await;
    let dir = peer::peer_dir().unwrap_or_else(|e| panic!("the peer is not available:\n{e}"));
    results.version = peer::peer_version(&dir);
    eprintln!(
        "benchmark (peer provider-http {}): {config:?}, max-reconcile-rate {}",
        results.version, results.max_reconcile_rate
    );
    let _exclusive = peer::exclusive().await;
    peer::install_crds(control_plane, &dir).await;
    let client = control_plane.client();
    let namespace = control_plane
        .create_namespace(&format!("peer-{}", config.n))
        .await;
    let requests = peer::requests(&client, &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let request_state = watch_requests(requests.clone());
    let event_state = watch_events(Api::namespaced(client.clone(), &namespace));
    let usage_state = watch_writes(Api::namespaced_with(
        client.clone(),
        &namespace,
        &peer::api_resource("ProviderConfigUsage"),
    ));
    let writes = || Writes {
        requests: {
            let s = request_state.lock().unwrap();
            s.modifications + s.created
        },
        events: event_state.lock().unwrap().1,
        usages: usage_state.lock().unwrap().1,
    };

    let mut standin_config = StandInConfig::default().with_token(PEER_LEAF_TOKEN);
    standin_config.auto_create_users = true;
    standin_config.faults.latency = config.latency;
    // provider-http opens a new connection for every request and never closes an idle one; a
    // load balancer in front of Leaf would close them (60 s is a common default). Without it the
    // N = 5,000 run exhausted both processes' 20,000 file descriptors.
    standin_config.idle_timeout = Some(PEER_STANDIN_IDLE_TIMEOUT);
    let standin = StandIn::start(standin_config).await;
    let origin = standin.origin();
    peer::create_provider_config(&client, &namespace, PEER_LEAF_TOKEN).await;

    // Startup: a probe Request exists before the peer starts.
    secrets
        .create(&PostParams::default(), &{
            let mut s = credentials_secret(0, 1);
            s.metadata.name = Some("bench-probe".to_string());
            s
        })
        .await
        .expect("create the probe Secret");
    requests
        .create(
            &PostParams::default(),
            &peer::leaf_request(
                "bench-probe",
                &namespace,
                &origin,
                "probe-user",
                "bench-probe",
            ),
        )
        .await
        .expect("create the probe Request");
    wait_requests(
        &request_state,
        "the watches to sync",
        Duration::from_secs(60),
        |s| {
            if s.synced {
                Ok(())
            } else {
                Err("not synced".into())
            }
        },
    )
    .await;
    let first_call = {
        let handle = standin.handle();
        tokio::spawn(async move {
            loop {
                if handle.counters().requests > 0 {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let spawned = Instant::now();
    let mut peer = Peer::start(
        control_plane,
        &dir,
        PeerOptions {
            poll: config.refresh,
            max_reconcile_rate: results.max_reconcile_rate,
        },
    )
    .await;
    let pid = peer.pid();
    wait_requests(
        &request_state,
        "the probe Request to be Ready",
        Duration::from_secs(120),
        |s| match s.ready.get("bench-probe") {
            Some(true) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    results.startup_first_leaf_call = first_call
        .await
        .expect("the first-call poller")
        .duration_since(spawned);
    results.after_startup = process_stats(pid);

    // Create: all Secrets first, then all Requests; until all are Ready.
    for_each_parallel(n, |i| {
        let secrets = secrets.clone();
        async move {
            secrets
                .create(&PostParams::default(), &credentials_secret(i, 1))
                .await
                .map(|_| ())
        }
    })
    .await;
    let (_, mut mark) = calls_since(&standin, 0);
    let writes_before = writes();
    let began = Instant::now();
    for_each_parallel(n, |i| {
        let requests = requests.clone();
        let request = peer::leaf_request(
            &format!("bench-{i}"),
            &namespace,
            &origin,
            &format!("{USER_PREFIX}{i}"),
            &format!("bench-secret-{i}"),
        );
        async move {
            requests
                .create(&PostParams::default(), &request)
                .await
                .map(|_| ())
        }
    })
    .await;
    results.apply = began.elapsed();
    results.ideal_ready = config.ideal(CALLS_PER_CREATE);
    let timeout = results.ideal_ready * 10 + Duration::from_secs(120);
    let settled = wait_requests(
        &request_state,
        "every Request to be Ready or stuck",
        timeout,
        |s| {
            let (total, ready) = bench_ready(s);
            let stuck = s.bench_stuck().len();
            if total == n && ready + stuck == n {
                Ok(())
            } else {
                Err(format!(
                    "{ready} of {n} Ready, {stuck} stuck ({total} seen); not Ready: {}",
                    s.some_not_ready()
                ))
            }
        },
    )
    .await;
    results.settled = settled.duration_since(began);
    let stuck = request_state.lock().unwrap().bench_stuck();
    results.stuck_on_create = stuck.len();
    if !stuck.is_empty() {
        // What crossplane asks of a human: remove the pending annotation (after checking Leaf)
        // and, since its event filter ignores that annotation, change another one.
        eprintln!(
            "benchmark (peer): {} of {n} Requests stuck after {:.1?} (\"cannot determine creation result\"); doing the human's part",
            stuck.len(),
            results.settled
        );
        for_each_parallel(stuck.len(), |i| {
            let requests = requests.clone();
            let name = stuck[i].clone();
            async move {
                requests
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(peer::unstick_patch()),
                    )
                    .await
                    .map(|_| ())
            }
        })
        .await;
    }
    let all_ready =
        wait_requests(
            &request_state,
            "all Requests to be Ready",
            timeout,
            |s| match bench_ready(s) {
                (_, ready) if ready == n => Ok(()),
                (total, ready) => Err(format!(
                    "{ready} of {n} Ready ({total} seen); not Ready: {}",
                    s.some_not_ready()
                )),
            },
        )
        .await;
    results.all_ready = all_ready.duration_since(began);
    let (calls, next) = calls_since(&standin, mark);
    mark = next;
    results.create_calls = calls;
    let after_create = writes();
    results.create_writes = after_create.minus(writes_before);
    results.after_create = process_stats(pid);
    eprintln!(
        "benchmark (peer): all {n} Ready in {:.2?} ({} stuck until the harness stepped in; ideal {:.2?}, ratio {:.2}); Leaf calls {}; writes {:?}",
        results.all_ready,
        results.stuck_on_create,
        results.ideal_ready,
        results.ratio(),
        results.create_calls.summary(),
        results.create_writes
    );

    // Steady state: one poll interval of warm-up, then `steady_intervals` more.
    tokio::time::sleep(config.refresh.mul_f64(1.1) + Duration::from_secs(5)).await;
    let (calls, next) = calls_since(&standin, mark);
    mark = next;
    results.warmup_calls = calls;
    let warm = writes();
    results.warmup_writes = warm.minus(after_create);
    results.steady_window = config.refresh * config.steady_intervals;
    tokio::time::sleep(results.steady_window).await;
    let (calls, next) = calls_since(&standin, mark);
    mark = next;
    results.steady_calls = calls;
    let steady = writes();
    results.steady_writes = steady.minus(warm);
    results.after_steady = process_stats(pid);
    eprintln!(
        "benchmark (peer): steady state over {:?}: Leaf calls {}; writes {:?} (warm-up: calls {}, writes {:?})",
        results.steady_window,
        results.steady_calls.summary(),
        results.steady_writes,
        results.warmup_calls.summary(),
        results.warmup_writes
    );

    // Secret change: new clientSecret and refreshToken in every Secret. The peer watches no
    // Secret; wait until it has called Leaf for every user after the change (its next poll).
    let changed_at = standin.requests().len();
    let began = Instant::now();
    change_all_secrets(&secrets, n).await;
    let timeout = config.refresh * 3 + Duration::from_secs(120);
    support::wait_until(
        "the peer to call Leaf for every user after the Secret change",
        timeout,
        || {
            let requests = standin.requests();
            async move {
                let seen: std::collections::HashSet<&str> = requests
                    .iter()
                    .skip(changed_at)
                    .filter_map(|r| {
                        r.path
                            .split('/')
                            .find(|segment| segment.starts_with(USER_PREFIX))
                    })
                    .collect();
                if seen.len() >= n {
                    Ok(())
                } else {
                    Err(format!("{} of {n} users called", seen.len()))
                }
            }
        },
    )
    .await;
    results.secret_change.observed_in = began.elapsed();
    let (calls, next) = calls_since(&standin, mark);
    mark = next;
    results.secret_change.calls = calls;
    results.secret_change.rotated = (0..n)
        .filter(|i| {
            standin
                .credential(&format!("{USER_PREFIX}{i}"))
                .is_some_and(|c| c.client_secret == format!("bench-client-secret-{i}-v2"))
        })
        .count();
    results.secret_change.still_ready = bench_ready(&request_state.lock().unwrap()).1;
    results.after_secret_change = process_stats(pid);
    eprintln!(
        "benchmark (peer): after the Secret change ({:.1?}): {} of {n} credentials rotated, {} Ready; Leaf calls {}",
        results.secret_change.observed_in,
        results.secret_change.rotated,
        results.secret_change.still_ready,
        results.secret_change.calls.summary()
    );

    // Deletion: delete every Request; until all are gone (REMOVE sends the DELETE).
    let began = Instant::now();
    for_each_parallel(n, |i| {
        let requests = requests.clone();
        async move {
            requests
                .delete(&format!("bench-{i}"), &DeleteParams::default())
                .await
                .map(|_| ())
        }
    })
    .await;
    results.ideal_delete = config.ideal(CALLS_PER_DELETE);
    let timeout = results.ideal_delete * 10 + Duration::from_secs(120);
    let deleted =
        wait_requests(
            &request_state,
            "all Requests to be deleted",
            timeout,
            |s| match bench_ready(s) {
                (0, _) => Ok(()),
                (left, _) => Err(format!("{left} left")),
            },
        )
        .await;
    results.delete = deleted.duration_since(began);
    let (calls, _) = calls_since(&standin, mark);
    results.delete_calls = calls;
    results.left_in_leaf = (0..n)
        .filter(|i| standin.credential(&format!("{USER_PREFIX}{i}")).is_some())
        .count();
    results.after_delete = process_stats(pid);
    eprintln!(
        "benchmark (peer): all {n} deleted in {:.2?} (ideal {:.2?}); Leaf calls {}; {} credentials left in Leaf; peer {:?}",
        results.delete,
        results.ideal_delete,
        results.delete_calls.summary(),
        results.left_in_leaf,
        results.after_delete
    );
    peer.stop();
    results
}

// --- the side-by-side table --------------------------------------------------------------------

pub const COMPARE_HEADER: &str = "| N | | apply → all Ready (ideal) | actual / ideal | Leaf calls / resource to create | Leaf calls / resource / refresh | API writes / resource / refresh at steady state | on a Secret change | on deletion | peak RSS | CPU seconds (whole run) |\n|---|---|---|---|---|---|---|---|---|---|---|\n";

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        if a == 0.0 {
            "= (0 / 0)".to_string()
        } else {
            "∞ (peer 0)".to_string()
        }
    } else {
        format!("{:.2}", a / b)
    }
}

/// Three rows: the operator, the peer, and operator / peer.
pub fn compare_rows(config: &BenchConfig, op: &Results, peer: &PeerResults) -> String {
    let n = config.n;
    let op_intervals = op.steady_window.as_secs_f64() / config.refresh.as_secs_f64();
    let op_per_create = op.per_resource(n, op.create_calls.total - op.create_calls.check_calls());
    let op_per_refresh = op.steady_calls.total as f64 / n as f64 / op_intervals;
    let op_writes = (op.steady_tc_writes + op.steady_events) as f64 / n as f64 / op_intervals;
    let op_rss = op.after_delete.peak_rss_mib;
    let op_cpu = op.after_delete.cpu_secs;
    let peer_rss = peer.after_delete.peak_rss_mib;
    let peer_cpu = peer.after_delete.cpu_secs;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {n} | leaf-operator | {} ({}) | {:.2} | {:.2} | {:.2} | {:.3} | all {n} rotated in {} (ideal {}): {} | all deleted in {} (ideal {}): {} | {:.1} MiB | {:.1} |",
        secs(op.all_ready),
        secs(op.ideal_ready),
        op.ratio(),
        op_per_create,
        op_per_refresh,
        op_writes,
        secs(op.rotate),
        secs(op.ideal_rotate),
        op.rotate_calls.summary(),
        secs(op.delete),
        secs(op.ideal_delete),
        op.delete_calls.summary(),
        op_rss,
        op_cpu,
    );
    let _ = writeln!(
        out,
        "| {n} | provider-http {} (rate {}) | {} ({}){} | {:.2} | {:.2} | {:.2} | {:.3} | {} of {n} rotated; {} still Ready; one poll round ({}): {} | all deleted in {} (ideal {}): {}; {} left in Leaf | {:.1} MiB | {:.1} |",
        peer.version,
        peer.max_reconcile_rate,
        secs(peer.all_ready),
        secs(peer.ideal_ready),
        if peer.stuck_on_create > 0 {
            format!(
                "; **{} of {n} stuck** (\"cannot determine creation result\") until a human step (the harness's, at {})",
                peer.stuck_on_create,
                secs(peer.settled)
            )
        } else {
            String::new()
        },
        peer.ratio(),
        peer.calls_per_create(n),
        peer.calls_per_refresh(config),
        peer.writes_per_refresh(config),
        peer.secret_change.rotated,
        peer.secret_change.still_ready,
        secs(peer.secret_change.observed_in),
        peer.secret_change.calls.summary(),
        secs(peer.delete),
        secs(peer.ideal_delete),
        peer.delete_calls.summary(),
        peer.left_in_leaf,
        peer_rss,
        peer_cpu,
    );
    let _ = writeln!(
        out,
        "| {n} | **operator / peer** | **{}** | {} | {} | {} | {} | {} rotated vs {} | {} | **{}** | **{}** |",
        ratio(op.all_ready.as_secs_f64(), peer.all_ready.as_secs_f64()),
        ratio(op.ratio(), peer.ratio()),
        ratio(op_per_create, peer.calls_per_create(n)),
        ratio(op_per_refresh, peer.calls_per_refresh(config)),
        ratio(op_writes, peer.writes_per_refresh(config)),
        n,
        peer.secret_change.rotated,
        ratio(op.delete.as_secs_f64(), peer.delete.as_secs_f64()),
        ratio(op_rss, peer_rss),
        ratio(op_cpu, peer_cpu),
    );
    out
}

/// Per-run details of the peer (calls by kind, writes by kind, memory after every phase).
pub fn peer_details(config: &BenchConfig, r: &PeerResults) -> String {
    let mut out = String::new();
    let n = config.n;
    let _ = writeln!(
        out,
        "<details><summary>N = {n}, provider-http {}: details</summary>\n",
        r.version
    );
    let _ = writeln!(
        out,
        "- settings: `--poll={}s --max-reconcile-rate={} --timeout=30s`; Leaf latency {} ms; date {}; load average: {}",
        config.refresh.as_secs(),
        r.max_reconcile_rate,
        config.latency.as_millis(),
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let _ = writeln!(
        out,
        "- startup: first Leaf call {} ms after spawn",
        r.startup_first_leaf_call.as_millis()
    );
    let _ = writeln!(
        out,
        "- create: applying the Requests took {}; every Request Ready or stuck after {}, {} stuck (\"cannot determine creation result\") until the harness removed the annotation; all Ready after {} (ideal {}); Leaf calls {} ({:.2}/resource); writes: Requests {}, Events {}, ProviderConfigUsages {} ({:.2}/resource)",
        secs(r.apply),
        secs(r.settled),
        r.stuck_on_create,
        secs(r.all_ready),
        secs(r.ideal_ready),
        r.create_calls.summary(),
        r.calls_per_create(n),
        r.create_writes.requests,
        r.create_writes.events,
        r.create_writes.usages,
        r.create_writes.total() as f64 / n as f64
    );
    let _ = writeln!(
        out,
        "- first poll interval after all Ready (warm-up): Leaf calls {}; writes {:?}",
        r.warmup_calls.summary(),
        r.warmup_writes
    );
    let _ = writeln!(
        out,
        "- steady state over {} ({} × poll {}): Leaf calls {}; writes: Requests {}, Events {}, ProviderConfigUsages {}",
        secs(r.steady_window),
        config.steady_intervals,
        secs(config.refresh),
        r.steady_calls.summary(),
        r.steady_writes.requests,
        r.steady_writes.events,
        r.steady_writes.usages
    );
    let _ = writeln!(
        out,
        "- Secret change: the peer had called Leaf for all {n} users {} after the change; {} of {n} credentials hold the new values; {} Requests Ready; Leaf calls {}",
        secs(r.secret_change.observed_in),
        r.secret_change.rotated,
        r.secret_change.still_ready,
        r.secret_change.calls.summary()
    );
    let _ = writeln!(
        out,
        "- delete: {} (ideal {}); Leaf calls {}; credentials left in Leaf {}",
        secs(r.delete),
        secs(r.ideal_delete),
        r.delete_calls.summary(),
        r.left_in_leaf
    );
    for (phase, s) in [
        ("after startup", r.after_startup),
        ("after create", r.after_create),
        ("after steady state", r.after_steady),
        ("after the Secret change", r.after_secret_change),
        ("after delete", r.after_delete),
    ] {
        let _ = writeln!(
            out,
            "- provider-http {phase}: RSS {:.1} MiB, peak {:.1} MiB, CPU {:.2} s",
            s.rss_mib, s.peak_rss_mib, s.cpu_secs
        );
    }
    let _ = writeln!(out, "\n</details>\n");
    out
}
