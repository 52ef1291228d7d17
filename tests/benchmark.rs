//! The benchmark of issue 7: speed, Leaf calls, API-server writes, memory and CPU at scale.
//!
//! The real operator binary runs as a process against the real local control plane and the Leaf
//! stand-in (with a per-request latency). For N TrimbleConnections, each with its own Secret, it
//! measures: time from applying all N until all are Ready against the ideal bound; Leaf calls per
//! resource to create, per periodic check, to rotate and to delete; API-server writes (status
//! changes and Events) at steady state; time to rotate all after all Secrets change and to delete
//! all; the operator's peak RSS and CPU seconds; startup to the first reconcile.
//!
//! `benchmark_smoke_n50` runs it with N = 50 in CI and checks that the numbers are sane.
//! `benchmark` (ignored) is the real run, configured by environment (see [`BenchConfig::from_env`]);
//! `scripts/bench.sh` runs it in release mode for N = 100, 1,000 and 5,000 and the results are
//! appended to `target/bench-results.md`. See BENCHMARKS.md.

mod support;

// The peer (issue 13): Crossplane's provider-http through the same phases, and the side-by-side
// table. A directory module, so that cargo does not take it for a test binary of its own.
#[path = "bench_peer/mod.rs"]
mod peer;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use leaf_operator::crd::TrimbleConnection;
use leaf_standin::{StandIn, StandInConfig};
use support::bench::{ProcessStats, env_or, process_stats};
use support::operator::{LEAF_PASSWORD, LEAF_USERNAME, Operator, OperatorOptions};

/// Leaf calls a create needs at least: GET (is there one already?), POST, and the new
/// credential's events (read with the create while polling, so that the first periodic check has
/// nothing new to write). The login is shared by all resources and not counted per resource.
const CALLS_PER_CREATE: f64 = 3.0;
/// Rotation: GET, DELETE the old credential, POST the new one, its events.
const CALLS_PER_ROTATE: f64 = 4.0;
/// Deletion: GET (a DELETE is sent only right after a read showed our credential), DELETE.
const CALLS_PER_DELETE: f64 = 2.0;
/// API-server writes of the TrimbleConnection per create, the user's own create included: the
/// finalizer, the intent before the POST and the result after it (a crash-safe create needs all
/// three).
const WRITES_PER_CREATE: u64 = 4;
/// How many API requests the benchmark itself keeps in flight when applying objects.
const CLIENT_PARALLELISM: usize = 32;
/// Path marker of the per-resource Leaf users (the startup probe uses another one).
const USER_PREFIX: &str = "bench-user-";

/// What one run measures and with which settings.
#[derive(Clone, Debug)]
struct BenchConfig {
    n: usize,
    latency: Duration,
    unrelated_secrets: usize,
    unrelated_secret_bytes: usize,
    concurrency: u32,
    rps: f64,
    burst: u32,
    refresh: Duration,
    /// Refresh intervals measured at steady state (after one interval of warm-up).
    steady_intervals: u32,
    rust_log: String,
    /// Further environment for the operator process (e.g. `MALLOC_ARENA_MAX=2`).
    operator_env: Vec<(String, String)>,
}

impl BenchConfig {
    /// Defaults: latency 100 ms, the operator's default concurrency (16) and burst (20), 100 Leaf
    /// requests/s (the operator's default of 10/s would make N = 5,000 take 17 minutes to create).
    fn with_n(n: usize) -> Self {
        let rps = 100.0;
        let mut config = Self {
            n,
            latency: Duration::from_millis(100),
            unrelated_secrets: 0,
            unrelated_secret_bytes: 100 * 1024,
            concurrency: 16,
            rps,
            burst: 20,
            refresh: Duration::ZERO,
            steady_intervals: 2,
            rust_log: "info".to_string(),
            operator_env: Vec::new(),
        };
        config.refresh = config.default_refresh();
        config
    }

    /// A refresh interval that keeps the first periodic checks out of the creation phase: every
    /// resource makes about 2 calls per create and per check, so one round over N resources takes
    /// at least N*2/rps seconds; 2.5 rounds leaves room for creation running up to 2.25× the
    /// ideal before checks compete with creates for the rate limit.
    fn default_refresh(&self) -> Duration {
        let round = self.n as f64 * 2.0 / self.rps;
        Duration::from_secs_f64((round * 2.5).max(15.0).ceil())
    }

    /// BENCH_N, BENCH_LATENCY_MS, BENCH_UNRELATED_SECRETS, BENCH_UNRELATED_SECRET_KB,
    /// BENCH_CONCURRENCY, BENCH_RPS, BENCH_BURST, BENCH_REFRESH_SECS, BENCH_STEADY_INTERVALS,
    /// BENCH_RUST_LOG, BENCH_OPERATOR_ENV (`KEY=VALUE,...` for the operator process).
    fn from_env() -> Self {
        let mut config = Self::with_n(env_or("BENCH_N", 100usize));
        config.latency = Duration::from_millis(env_or("BENCH_LATENCY_MS", 100u64));
        config.unrelated_secrets = env_or("BENCH_UNRELATED_SECRETS", 0usize);
        config.unrelated_secret_bytes = env_or("BENCH_UNRELATED_SECRET_KB", 100usize) * 1024;
        config.concurrency = env_or("BENCH_CONCURRENCY", config.concurrency);
        config.rps = env_or("BENCH_RPS", config.rps);
        config.burst = env_or("BENCH_BURST", config.burst);
        config.refresh = config.default_refresh();
        if let Ok(secs) = std::env::var("BENCH_REFRESH_SECS") {
            config.refresh = Duration::from_secs(secs.trim().parse().expect("BENCH_REFRESH_SECS"));
        }
        config.steady_intervals = env_or("BENCH_STEADY_INTERVALS", config.steady_intervals);
        config.rust_log = env_or("BENCH_RUST_LOG", config.rust_log);
        // BENCH_OPERATOR_ENV="KEY=VALUE,KEY=VALUE"
        config.operator_env = std::env::var("BENCH_OPERATOR_ENV")
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.trim().split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config
    }

    /// The shortest possible time for `calls_per_resource` Leaf calls for each of N resources:
    /// bounded by the rate limit (after the initial burst) and by latency over concurrency.
    fn ideal(&self, calls_per_resource: f64) -> Duration {
        let calls = self.n as f64 * calls_per_resource;
        let by_rate = ((calls - f64::from(self.burst)).max(0.0)) / self.rps;
        let by_latency = calls * self.latency.as_secs_f64() / f64::from(self.concurrency);
        let one = calls_per_resource * self.latency.as_secs_f64();
        Duration::from_secs_f64(by_rate.max(by_latency).max(one))
    }
}

// --- what the benchmark watches ----------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Tracked {
    ready: bool,
    credential_id: Option<String>,
    pending_create: bool,
}

/// TrimbleConnections as a watch sees them, and how often they changed.
#[derive(Debug, Default)]
struct TcState {
    objects: HashMap<String, Tracked>,
    /// Watch events for objects already known (every one is a write: a new resourceVersion).
    modifications: u64,
    created: u64,
    deleted: u64,
    first_modification: Option<Instant>,
    synced: bool,
}

fn track(tc: &TrimbleConnection) -> Tracked {
    let status = tc.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
        && status.observed_generation == tc.metadata.generation;
    Tracked {
        ready,
        credential_id: status.credential_id.clone(),
        pending_create: status.pending_create.is_some(),
    }
}

fn watch_tcs(api: Api<TrimbleConnection>) -> Arc<Mutex<TcState>> {
    let state = Arc::new(Mutex::new(TcState::default()));
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
                watcher::Event::InitApply(tc) => {
                    s.objects
                        .insert(tc.metadata.name.clone().unwrap_or_default(), track(&tc));
                }
                watcher::Event::InitDone => s.synced = true,
                watcher::Event::Apply(tc) => {
                    let name = tc.metadata.name.clone().unwrap_or_default();
                    let known = s.objects.insert(name, track(&tc)).is_some();
                    if known {
                        s.modifications += 1;
                        s.first_modification.get_or_insert_with(Instant::now);
                    } else {
                        s.created += 1;
                    }
                }
                watcher::Event::Delete(tc) => {
                    s.objects
                        .remove(&tc.metadata.name.clone().unwrap_or_default());
                    s.deleted += 1;
                }
            }
        }
    });
    state
}

/// Kubernetes Events written (created or updated) in the namespace.
fn watch_events(api: Api<KubeEvent>) -> Arc<Mutex<(bool, u64)>> {
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
                watcher::Event::Apply(_) => s.1 += 1,
                _ => {}
            }
        }
    });
    state
}

// --- the operator process ----------------------------------------------------------------------

/// The pid of the `leaf-operator` child of this test process.
fn operator_pid() -> u32 {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if comm == "leaf-operator" && ppid == Some(me) {
            return pid;
        }
    }
    panic!("no leaf-operator child process found");
}

// --- Leaf calls ----------------------------------------------------------------------------------

/// Leaf calls since `from` (an index into the stand-in's request log) for the benchmark's users,
/// by kind ("GET", "POST", "DELETE", "GET events"), plus logins.
#[derive(Debug, Default, Clone)]
struct Calls {
    by_kind: BTreeMap<String, u64>,
    total: u64,
    logins: u64,
    errors: u64,
    /// GETs of a credential that exists (periodic checks, rotations); a create's GET finds none.
    get_found: u64,
}

impl Calls {
    fn kind(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }

    /// Calls of the periodic checks that happened during this phase: each is a GET that found
    /// the credential and a GET of its events. A create reads its credential's events too, right
    /// after the POST, so the events calls alone do not count checks.
    fn check_calls(&self) -> u64 {
        2 * self.get_found
    }

    fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(
            "{} ({}; logins {}; failed {})",
            self.total,
            kinds.join(", "),
            self.logins,
            self.errors
        )
    }
}

fn calls_since(standin: &StandIn, from: usize) -> (Calls, usize) {
    let requests = standin.requests();
    let mut calls = Calls::default();
    for r in requests.iter().skip(from) {
        if r.path == "/api/authenticate" {
            calls.logins += 1;
            continue;
        }
        if !r.path.contains(USER_PREFIX) {
            continue;
        }
        let kind = if r.path.ends_with("/events") {
            format!("{} events", r.method)
        } else {
            r.method.clone()
        };
        if kind == "GET" && r.status == Some(200) {
            calls.get_found += 1;
        }
        *calls.by_kind.entry(kind).or_default() += 1;
        calls.total += 1;
        // A GET answering 404 is the expected "no credential yet", not a failure.
        let expected_404 = r.method == "GET" && r.status == Some(404);
        if !r.status.is_some_and(|s| (200..300).contains(&s)) && !expected_404 {
            calls.errors += 1;
        }
    }
    (calls, requests.len())
}

// --- applying objects ------------------------------------------------------------------------------

fn credentials_secret(i: usize, version: u32) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("bench-secret-{i}")),
            ..Default::default()
        },
        string_data: Some(
            [
                ("clientId".to_string(), format!("bench-client-{i}")),
                (
                    "clientSecret".to_string(),
                    format!("bench-client-secret-{i}-v{version}"),
                ),
                (
                    "refreshToken".to_string(),
                    format!("bench-refresh-token-{i}-v{version}"),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

fn trimble_connection(name: &str, user: &str, secret: &str) -> TrimbleConnection {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "withleaf.io/v1alpha1",
        "kind": "TrimbleConnection",
        "metadata": {"name": name},
        "spec": {"leafUserId": user, "credentialsSecretRef": {"name": secret}},
    }))
    .expect("a valid TrimbleConnection")
}

/// Runs `f(i)` for i in 0..n with bounded parallelism; panics on the first error.
async fn for_each_parallel<F, Fut>(n: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    futures::stream::iter((0..n).map(|i| {
        let fut = f(i);
        async move { fut.await.map_err(|e| format!("item {i}: {e}")) }
    }))
    .buffer_unordered(CLIENT_PARALLELISM)
    .try_collect::<Vec<()>>()
    .await
    .unwrap_or_else(|e| panic!("applying objects failed: {e}"));
}

/// Waits until `done(state)` holds, checking every 100 ms; panics with `what` after `timeout`.
async fn wait_state(
    state: &Arc<Mutex<TcState>>,
    what: &str,
    timeout: Duration,
    done: impl Fn(&TcState) -> Result<(), String>,
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

fn bench_names(state: &TcState) -> impl Iterator<Item = (&String, &Tracked)> {
    state
        .objects
        .iter()
        .filter(|(name, _)| name.starts_with("bench-") && *name != "bench-probe")
}

// --- the run -----------------------------------------------------------------------------------------

/// Everything one run measured.
#[derive(Debug, Default)]
struct Results {
    config_line: String,
    unrelated_created_in: Duration,
    startup_first_leaf_call: Duration,
    startup_first_write: Duration,
    startup_caches_synced: Duration,
    apply_tcs: Duration,
    all_ready: Duration,
    ideal_ready: Duration,
    create_calls: Calls,
    create_tc_writes: u64,
    create_events: u64,
    warmup_calls: Calls,
    warmup_tc_writes: u64,
    warmup_events: u64,
    steady_window: Duration,
    steady_calls: Calls,
    steady_tc_writes: u64,
    steady_events: u64,
    rotate: Duration,
    ideal_rotate: Duration,
    rotate_calls: Calls,
    delete: Duration,
    ideal_delete: Duration,
    delete_calls: Calls,
    after_startup: ProcessStats,
    after_create: ProcessStats,
    after_steady: ProcessStats,
    after_rotate: ProcessStats,
    after_delete: ProcessStats,
}

impl Results {
    fn per_resource(&self, n: usize, value: u64) -> f64 {
        value as f64 / n as f64
    }

    fn ratio(&self) -> f64 {
        self.all_ready.as_secs_f64() / self.ideal_ready.as_secs_f64()
    }
}

/// New clientSecret and refreshToken in each of the `n` benchmark Secrets (the rotation phase).
async fn change_all_secrets(secrets: &Api<Secret>, n: usize) {
    for_each_parallel(n, |i| {
        let secrets = secrets.clone();
        let patch = serde_json::json!({"stringData": {
            "clientSecret": format!("bench-client-secret-{i}-v2"),
            "refreshToken": format!("bench-refresh-token-{i}-v2"),
        }});
        async move {
            secrets
                .patch(
                    &format!("bench-secret-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map(|_| ())
        }
    })
    .await;
}

async fn run(config: &BenchConfig) -> Results {
    let mut results = Results {
        config_line: format!("{config:?}"),
        ..Default::default()
    };
    eprintln!("benchmark: {config:?}");
    let control_plane = support::control_plane().await;
    control_plane.install_crd().await;
    let client = control_plane.client();
    let namespace = control_plane
        .create_namespace(&format!("bench-{}", config.n))
        .await;
    let tcs: Api<TrimbleConnection> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let tc_state = watch_tcs(tcs.clone());
    let event_state = watch_events(Api::namespaced(client.clone(), &namespace));

    let mut standin_config = StandInConfig::default().with_account(LEAF_USERNAME, LEAF_PASSWORD);
    standin_config.auto_create_users = true;
    standin_config.faults.latency = config.latency;
    let standin = StandIn::start(standin_config).await;

    // 1. Unrelated large Secrets in the watched namespace, before the operator starts (a
    //    metadata-only watch must keep their data out of the operator's memory).
    if config.unrelated_secrets > 0 {
        let began = Instant::now();
        let blob = ByteString(vec![b'x'; config.unrelated_secret_bytes]);
        for_each_parallel(config.unrelated_secrets, |i| {
            let secrets = secrets.clone();
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(format!("unrelated-{i}")),
                    ..Default::default()
                },
                data: Some([("blob".to_string(), blob.clone())].into()),
                ..Default::default()
            };
            async move {
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .map(|_| ())
            }
        })
        .await;
        results.unrelated_created_in = began.elapsed();
        eprintln!(
            "benchmark: created {} unrelated Secrets of {} KiB in {:.1?}",
            config.unrelated_secrets,
            config.unrelated_secret_bytes / 1024,
            results.unrelated_created_in
        );
    }

    // 2. Startup: a probe resource exists before the operator starts; the time from spawning the
    //    process to its first Leaf call (the login) and first write is the startup time.
    secrets
        .create(&PostParams::default(), &{
            let mut s = credentials_secret(0, 1);
            s.metadata.name = Some("bench-probe".to_string());
            s
        })
        .await
        .expect("create the probe Secret");
    tcs.create(
        &PostParams::default(),
        &trimble_connection("bench-probe", "probe-user", "bench-probe"),
    )
    .await
    .expect("create the probe TrimbleConnection");
    wait_state(
        &tc_state,
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
    let options = OperatorOptions {
        rust_log: config.rust_log.clone(),
        env: vec![
            (
                "RECONCILE_CONCURRENCY".into(),
                config.concurrency.to_string(),
            ),
            ("LEAF_REQUESTS_PER_SECOND".into(), config.rps.to_string()),
            ("LEAF_BURST".into(), config.burst.to_string()),
            ("LEAF_TIMEOUT".into(), "30s".into()),
        ]
        .into_iter()
        .chain(config.operator_env.iter().cloned())
        .collect(),
        ..OperatorOptions::new(&namespace, &standin.origin()).account(LEAF_USERNAME, LEAF_PASSWORD)
    }
    .refresh_interval(&format!("{}s", config.refresh.as_secs()));
    // The stand-in counts a request when it arrives (before its latency): poll that count.
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
    let spawned_wall = SystemTime::now();
    let spawned = Instant::now();
    let mut operator = Operator::start(control_plane, options).await;
    let pid = operator_pid();
    let log = operator.log();
    results.startup_caches_synced = log
        .lines()
        .find(|l| l.contains("caches synced"))
        .and_then(log_line_time)
        .and_then(|t| t.duration_since(spawned_wall).ok())
        .unwrap_or_else(|| spawned.elapsed());
    let probe_ready = wait_state(
        &tc_state,
        "the probe to be Ready",
        Duration::from_secs(60),
        |s| match s.objects.get("bench-probe") {
            Some(t) if t.ready => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let first_call = first_call.await.expect("the first-call poller");
    results.startup_first_leaf_call = first_call.duration_since(spawned);
    results.startup_first_write = tc_state
        .lock()
        .unwrap()
        .first_modification
        .map(|t| t.duration_since(spawned))
        .unwrap_or_else(|| probe_ready.duration_since(spawned));
    results.after_startup = process_stats(pid);
    eprintln!(
        "benchmark: operator pid {pid}; caches synced {:?}, first Leaf call {:?}, first write {:?} after spawn",
        results.startup_caches_synced, results.startup_first_leaf_call, results.startup_first_write
    );

    // 3. Create: all Secrets first, then all TrimbleConnections; until all are Ready.
    for_each_parallel(config.n, |i| {
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
    let (tc_writes_before, events_before) = counters(&tc_state, &event_state);
    let began = Instant::now();
    for_each_parallel(config.n, |i| {
        let tcs = tcs.clone();
        let tc = trimble_connection(
            &format!("bench-{i}"),
            &format!("{USER_PREFIX}{i}"),
            &format!("bench-secret-{i}"),
        );
        async move { tcs.create(&PostParams::default(), &tc).await.map(|_| ()) }
    })
    .await;
    results.apply_tcs = began.elapsed();
    results.ideal_ready = config.ideal(CALLS_PER_CREATE);
    let n = config.n;
    let timeout = results.ideal_ready * 10 + Duration::from_secs(120);
    let all_ready = wait_state(
        &tc_state,
        "all TrimbleConnections to be Ready",
        timeout,
        |s| {
            let ready = bench_names(s).filter(|(_, t)| t.ready).count();
            if ready == n {
                Ok(())
            } else {
                Err(format!("{ready} of {n} Ready"))
            }
        },
    )
    .await;
    results.all_ready = all_ready.duration_since(began);
    let (calls, next) = calls_since(&standin, mark);
    mark = next;
    results.create_calls = calls;
    let (tc_writes, events) = counters(&tc_state, &event_state);
    results.create_tc_writes = tc_writes - tc_writes_before;
    results.create_events = events - events_before;
    results.after_create = process_stats(pid);
    eprintln!(
        "benchmark: all {n} Ready in {:.2?} (ideal {:.2?}, ratio {:.2}); Leaf calls {}",
        results.all_ready,
        results.ideal_ready,
        results.ratio(),
        results.create_calls.summary()
    );

    // 4. Steady state. Warm-up: every resource's first periodic check (within one refresh
    //    interval of its creation) may record Leaf's events once. Then `steady_intervals` more.
    let warmup = config.refresh.mul_f64(1.1) + Duration::from_secs(5);
    tokio::time::sleep(warmup).await;
    let (calls, next) = calls_since(&standin, mark);
    mark = next;
    results.warmup_calls = calls;
    let (tc_writes_warm, events_warm) = counters(&tc_state, &event_state);
    results.warmup_tc_writes = tc_writes_warm - tc_writes;
    results.warmup_events = events_warm - events;
    results.steady_window = config.refresh * config.steady_intervals;
    tokio::time::sleep(results.steady_window).await;
    let (calls, next) = calls_since(&standin, mark);
    mark = next;
    results.steady_calls = calls;
    let (tc_writes_steady, events_steady) = counters(&tc_state, &event_state);
    results.steady_tc_writes = tc_writes_steady - tc_writes_warm;
    results.steady_events = events_steady - events_warm;
    results.after_steady = process_stats(pid);
    eprintln!(
        "benchmark: steady state over {:?}: Leaf calls {}; TrimbleConnection writes {}; Events {} (warm-up: calls {}, writes {}, Events {})",
        results.steady_window,
        results.steady_calls.summary(),
        results.steady_tc_writes,
        results.steady_events,
        results.warmup_calls.summary(),
        results.warmup_tc_writes,
        results.warmup_events
    );

    // 5. Rotation: change every Secret; until every resource has a new credential and is Ready.
    let old_ids: HashMap<String, Option<String>> = bench_names(&tc_state.lock().unwrap())
        .map(|(name, t)| (name.clone(), t.credential_id.clone()))
        .collect();
    let began = Instant::now();
    change_all_secrets(&secrets, config.n).await;
    results.ideal_rotate = config.ideal(CALLS_PER_ROTATE);
    let timeout = results.ideal_rotate * 10 + Duration::from_secs(120);
    let rotated = wait_state(
        &tc_state,
        "all TrimbleConnections to be rotated",
        timeout,
        |s| {
            let done = bench_names(s)
                .filter(|(name, t)| {
                    t.ready
                        && !t.pending_create
                        && t.credential_id.is_some()
                        && old_ids.get(*name) != Some(&t.credential_id)
                })
                .count();
            if done == n {
                Ok(())
            } else {
                Err(format!("{done} of {n} rotated"))
            }
        },
    )
    .await;
    results.rotate = rotated.duration_since(began);
    let (calls, next) = calls_since(&standin, mark);
    mark = next;
    results.rotate_calls = calls;
    results.after_rotate = process_stats(pid);
    eprintln!(
        "benchmark: all {n} rotated in {:.2?} (ideal {:.2?}); Leaf calls {}",
        results.rotate,
        results.ideal_rotate,
        results.rotate_calls.summary()
    );

    // 6. Deletion: delete every resource; until all are gone (the finalizer deletes in Leaf).
    let began = Instant::now();
    for_each_parallel(config.n, |i| {
        let tcs = tcs.clone();
        async move {
            tcs.delete(&format!("bench-{i}"), &DeleteParams::default())
                .await
                .map(|_| ())
        }
    })
    .await;
    results.ideal_delete = config.ideal(CALLS_PER_DELETE);
    let timeout = results.ideal_delete * 10 + Duration::from_secs(120);
    let deleted = wait_state(
        &tc_state,
        "all TrimbleConnections to be deleted",
        timeout,
        |s| {
            let left = bench_names(s).count();
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} left"))
            }
        },
    )
    .await;
    results.delete = deleted.duration_since(began);
    let (calls, _) = calls_since(&standin, mark);
    results.delete_calls = calls;
    results.after_delete = process_stats(pid);
    eprintln!(
        "benchmark: all {n} deleted in {:.2?} (ideal {:.2?}); Leaf calls {}; operator {:?}",
        results.delete,
        results.ideal_delete,
        results.delete_calls.summary(),
        results.after_delete
    );
    operator.stop();
    results
}

fn counters(tcs: &Arc<Mutex<TcState>>, events: &Arc<Mutex<(bool, u64)>>) -> (u64, u64) {
    let tc = tcs.lock().unwrap();
    (tc.modifications + tc.created, events.lock().unwrap().1)
}

/// The timestamp that starts a text log line (tracing's default format), if any.
fn log_line_time(line: &str) -> Option<SystemTime> {
    let first = line.split_whitespace().next()?;
    // Strip ANSI colour codes, if the log has them.
    let cleaned: String = first.replace("\u{1b}[2m", "").replace("\u{1b}[0m", "");
    let ts: jiff::Timestamp = cleaned.parse().ok()?;
    Some(SystemTime::from(ts))
}

// --- reporting -----------------------------------------------------------------------------------

const TABLE_HEADER: &str = "| N | unrelated Secrets | Leaf latency / concurrency / rps | apply → all Ready | ideal | actual / ideal | Leaf calls / resource to create | Leaf calls / resource / refresh | API writes / resource / refresh at steady state | rotate all (ideal) | delete all (ideal) | peak RSS | CPU seconds | startup → first Leaf call / first write |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn row(config: &BenchConfig, r: &Results) -> String {
    let n = config.n;
    let intervals = r.steady_window.as_secs_f64() / config.refresh.as_secs_f64();
    let per_refresh = r.steady_calls.total as f64 / n as f64 / intervals;
    let writes_per_refresh = (r.steady_tc_writes + r.steady_events) as f64 / n as f64 / intervals;
    let peak = r.after_delete.peak_rss_mib;
    format!(
        "| {n} | {} | {} ms / {} / {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.3} ({} status, {} Events) | {} ({}) | {} ({}) | {:.1} MiB | {:.1} | {} ms / {} ms |\n",
        if config.unrelated_secrets > 0 {
            format!(
                "{} × {} KiB",
                config.unrelated_secrets,
                config.unrelated_secret_bytes / 1024
            )
        } else {
            "0".to_string()
        },
        config.latency.as_millis(),
        config.concurrency,
        config.rps,
        secs(r.all_ready),
        secs(r.ideal_ready),
        r.ratio(),
        r.per_resource(n, r.create_calls.total - r.create_calls.check_calls()),
        per_refresh,
        writes_per_refresh,
        r.steady_tc_writes,
        r.steady_events,
        secs(r.rotate),
        secs(r.ideal_rotate),
        secs(r.delete),
        secs(r.ideal_delete),
        peak,
        r.after_delete.cpu_secs,
        r.startup_first_leaf_call.as_millis(),
        r.startup_first_write.as_millis(),
    )
}

fn details(config: &BenchConfig, r: &Results) -> String {
    let mut out = String::new();
    let n = config.n;
    let _ = writeln!(
        out,
        "<details><summary>N = {n}, {} unrelated Secrets: details</summary>\n",
        config.unrelated_secrets
    );
    let _ = writeln!(out, "- settings: `{}`", r.config_line);
    let _ = writeln!(
        out,
        "- date {}; load average before/after: {}",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if config.unrelated_secrets > 0 {
        let _ = writeln!(
            out,
            "- creating the unrelated Secrets took {}",
            secs(r.unrelated_created_in)
        );
    }
    let _ = writeln!(
        out,
        "- startup: caches synced {} ms, first Leaf call {} ms, first write {} ms after spawn",
        r.startup_caches_synced.as_millis(),
        r.startup_first_leaf_call.as_millis(),
        r.startup_first_write.as_millis()
    );
    let _ = writeln!(
        out,
        "- create: applying the TrimbleConnections took {}; all Ready after {} (ideal {}); Leaf calls {}; TrimbleConnection writes {} ({:.2}/resource, including the create), Events {}",
        secs(r.apply_tcs),
        secs(r.all_ready),
        secs(r.ideal_ready),
        r.create_calls.summary(),
        r.create_tc_writes,
        r.per_resource(n, r.create_tc_writes),
        r.create_events
    );
    let _ = writeln!(
        out,
        "- of those Leaf calls, {} were periodic checks of resources already Ready (GET found, GET events); {:.2} calls/resource to create without them (GET, POST, GET events)",
        r.create_calls.check_calls(),
        r.per_resource(n, r.create_calls.total - r.create_calls.check_calls())
    );
    let _ = writeln!(
        out,
        "- first refresh interval after all Ready (warm-up): Leaf calls {}; TrimbleConnection writes {}, Events {}",
        r.warmup_calls.summary(),
        r.warmup_tc_writes,
        r.warmup_events
    );
    let checks = r.steady_calls.kind("GET events").max(1);
    let _ = writeln!(
        out,
        "- steady state over {} ({} × refreshInterval {}): Leaf calls {} = {:.2} per periodic check; TrimbleConnection writes {}, Events {}",
        secs(r.steady_window),
        config.steady_intervals,
        secs(config.refresh),
        r.steady_calls.summary(),
        r.steady_calls.total as f64 / checks as f64,
        r.steady_tc_writes,
        r.steady_events
    );
    let _ = writeln!(
        out,
        "- rotate: {} (ideal {}); Leaf calls {}",
        secs(r.rotate),
        secs(r.ideal_rotate),
        r.rotate_calls.summary()
    );
    let _ = writeln!(
        out,
        "- delete: {} (ideal {}); Leaf calls {}",
        secs(r.delete),
        secs(r.ideal_delete),
        r.delete_calls.summary()
    );
    for (phase, s) in [
        ("after startup", r.after_startup),
        ("after create", r.after_create),
        ("after steady state", r.after_steady),
        ("after rotate", r.after_rotate),
        ("after delete", r.after_delete),
    ] {
        let _ = writeln!(
            out,
            "- operator {phase}: RSS {:.1} MiB, peak {:.1} MiB, CPU {:.2} s",
            s.rss_mib, s.peak_rss_mib, s.cpu_secs
        );
    }
    let _ = writeln!(out, "\n</details>\n");
    out
}

fn report(config: &BenchConfig, r: &Results, file: &str) {
    let row = row(config, r);
    let details = details(config, r);
    println!("\n{TABLE_HEADER}{row}\n{details}");
    let path = support::repo_root().join("target").join(file);
    let _ = std::fs::create_dir_all(path.parent().expect("target dir"));
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let mut text = existing;
    text.push_str(&format!("\n{TABLE_HEADER}{row}\n{details}"));
    std::fs::write(&path, text)
        .unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
    eprintln!("benchmark: results appended to {}", path.display());
}

/// CI: the whole benchmark at N = 50, checking that what it measures makes sense.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_smoke_n50() {
    let config = BenchConfig::with_n(50);
    let r = run(&config).await;
    report(&config, &r, "bench-smoke.md");
    let n = config.n as u64;
    assert_eq!(
        r.create_calls.kind("POST"),
        n,
        "exactly one POST per resource: {}",
        r.create_calls.summary()
    );
    assert_eq!(
        r.create_calls.errors,
        0,
        "no failed Leaf call while creating: {}",
        r.create_calls.summary()
    );
    assert!(
        r.create_tc_writes <= WRITES_PER_CREATE * n,
        "{} TrimbleConnection writes for {n} creates (at most {WRITES_PER_CREATE} each, the create included)",
        r.create_tc_writes
    );
    assert_eq!(
        (r.warmup_tc_writes, r.warmup_events),
        (0, 0),
        "the first periodic check after a create writes nothing: its events were recorded with it"
    );
    // The ideal is a lower bound the rate limiter enforces; far below it means a broken measurement.
    assert!(
        r.all_ready >= r.ideal_ready.mul_f64(0.8),
        "all Ready in {:?}, faster than the rate limit allows ({:?})",
        r.all_ready,
        r.ideal_ready
    );
    assert!(
        r.steady_calls.kind("GET events") >= n,
        "every resource was checked at steady state: {}",
        r.steady_calls.summary()
    );
    assert_eq!(
        r.steady_calls.kind("POST"),
        0,
        "no create at steady state: {}",
        r.steady_calls.summary()
    );
    assert_eq!(
        (r.steady_tc_writes, r.steady_events),
        (0, 0),
        "no status write and no Event at steady state"
    );
    assert_eq!(
        r.rotate_calls.kind("POST"),
        n,
        "one POST per rotation: {}",
        r.rotate_calls.summary()
    );
    assert_eq!(
        r.rotate_calls.kind("DELETE"),
        n,
        "one DELETE per rotation: {}",
        r.rotate_calls.summary()
    );
    assert_eq!(
        r.delete_calls.kind("DELETE"),
        n,
        "one DELETE per deletion: {}",
        r.delete_calls.summary()
    );
    assert!(
        r.after_delete.peak_rss_mib > 1.0,
        "the operator's memory was read: {:?}",
        r.after_delete
    );
    assert!(
        r.startup_first_leaf_call > Duration::ZERO,
        "startup was measured"
    );
}

/// The real benchmark, configured by BENCH_* variables; run through `scripts/bench.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long; run with scripts/bench.sh (release build)"]
async fn benchmark() {
    let config = BenchConfig::from_env();
    let r = run(&config).await;
    report(&config, &r, "bench-results.md");
}

/// The side-by-side run of issue 13: the operator, then the peer (provider-http) with the same
/// settings on the same control plane; prints one table (operator, peer, operator / peer) and
/// appends it to `target/bench-compare.md`. Run with `scripts/bench.sh --peer provider-http`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long; run with scripts/bench.sh --peer provider-http (release build)"]
async fn benchmark_side_by_side() {
    let config = BenchConfig::from_env();
    let operator = run(&config).await;
    report(&config, &operator, "bench-results.md");
    let peer = peer::run_peer(&config).await;
    let rows = peer::compare_rows(&config, &operator, &peer);
    let details = peer::peer_details(&config, &peer);
    println!("\n{}{rows}\n{details}", peer::COMPARE_HEADER);
    let path = support::repo_root().join("target/bench-compare.md");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&format!("\n{}{rows}\n{details}", peer::COMPARE_HEADER));
    std::fs::write(&path, text)
        .unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
    eprintln!(
        "benchmark: side-by-side table appended to {}",
        path.display()
    );
}

/// The peer's run alone, configured like `benchmark` (BENCH_*); for looking into the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long; the peer alone (scripts/bench.sh --peer runs it with the operator)"]
async fn benchmark_peer_only() {
    let config = BenchConfig::from_env();
    let r = peer::run_peer(&config).await;
    println!("{}", peer::peer_details(&config, &r));
}

/// The peer harness (issue 13) at N = 10: provider-http goes through every phase and what the
/// harness measures makes sense. Needs the peer built (`scripts/peer-tools.sh`, cached).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_benchmark_harness_runs_at_n10() {
    let mut config = BenchConfig::with_n(10);
    // provider-http's poll interval has no schema minimum: 5 s keeps this test short.
    config.refresh = Duration::from_secs(5);
    let r = peer::run_peer(&config).await;
    println!("{}", peer::peer_details(&config, &r));
    let n = config.n as u64;
    assert_eq!(
        r.create_calls.kind("POST"),
        n,
        "one POST per Request: {}",
        r.create_calls.summary()
    );
    assert_eq!(
        r.create_calls.errors,
        0,
        "no failed Leaf call while creating: {}",
        r.create_calls.summary()
    );
    assert!(
        r.all_ready >= r.ideal_ready.mul_f64(0.8),
        "all Ready in {:?}, faster than the bound ({:?}): a broken measurement",
        r.all_ready,
        r.ideal_ready
    );
    assert!(
        r.steady_calls.kind("GET") >= n,
        "every Request was observed at steady state: {}",
        r.steady_calls.summary()
    );
    assert_eq!(
        r.steady_calls.kind("POST") + r.steady_calls.kind("DELETE"),
        0,
        "no create or delete at steady state: {}",
        r.steady_calls.summary()
    );
    assert!(
        r.steady_writes.total() > 0,
        "the write counters see the peer's status writes: {:?}",
        r.steady_writes
    );
    assert_eq!(
        (
            r.secret_change.rotated,
            r.secret_change.calls.kind("POST"),
            r.secret_change.calls.kind("DELETE")
        ),
        (0, 0, 0),
        "the peer does not act on a Secret change: {}",
        r.secret_change.calls.summary()
    );
    assert_eq!(
        r.delete_calls.kind("DELETE"),
        n,
        "one DELETE per deletion: {}",
        r.delete_calls.summary()
    );
    assert_eq!(r.left_in_leaf, 0, "no credential left in Leaf");
    assert!(
        r.after_delete.peak_rss_mib > 1.0 && r.after_delete.cpu_secs > 0.0,
        "the peer's memory and CPU were read: {:?}",
        r.after_delete
    );
    assert!(
        r.startup_first_leaf_call > Duration::ZERO,
        "startup was measured"
    );
}

/// Profiling aid: resident memory of N TrimbleConnections held as the controller's store holds
/// them (`Arc<TrimbleConnection>` in a map), with and without `managedFields`. Reads one object
/// as JSON from BENCH_SAMPLE (`kubectl get tc NAME -o json --show-managed-fields`); BENCH_PRUNE=1
/// clears managedFields.
#[test]
#[ignore = "profiling aid; needs BENCH_SAMPLE"]
fn store_memory_probe() {
    let path = std::env::var("BENCH_SAMPLE").expect("BENCH_SAMPLE=<TrimbleConnection JSON file>");
    let n: usize = env_or("BENCH_N", 5000usize);
    let text = std::fs::read_to_string(&path).expect("read BENCH_SAMPLE");
    let rss = || process_stats(std::process::id()).rss_mib;
    // One variant per process: memory freed by the first would hide the growth of the second.
    let prune = std::env::var("BENCH_PRUNE").is_ok_and(|v| v == "1");
    if std::env::var("BENCH_PROBE_KIND").is_ok_and(|v| v == "event") {
        // What kube-runtime's event Recorder keeps per published Event (for 6 minutes).
        let before = rss();
        let mut cache: HashMap<String, KubeEvent> = HashMap::new();
        for i in 0..n {
            let mut event: KubeEvent = serde_json::from_str(&text).expect("an events.k8s.io Event");
            event.metadata.name = Some(format!("bench-{i}.event"));
            if prune {
                event.metadata.managed_fields = None;
            }
            cache.insert(format!("bench-{i}"), event);
        }
        let after = rss();
        println!(
            "{n} Events: +{:.1} MiB ({:.1} KiB each; JSON {} bytes)",
            after - before,
            (after - before) * 1024.0 / n as f64,
            text.len()
        );
        return;
    }
    {
        let before = rss();
        let mut store: HashMap<String, Arc<TrimbleConnection>> = HashMap::new();
        for i in 0..n {
            // Parsed from text each time, as a watch event would be.
            let mut tc: TrimbleConnection =
                serde_json::from_str(&text).expect("a TrimbleConnection");
            tc.metadata.name = Some(format!("bench-{i}"));
            if prune {
                tc.metadata.managed_fields = None;
            }
            store.insert(format!("bench-{i}"), Arc::new(tc));
        }
        let after = rss();
        println!(
            "{n} TrimbleConnections, managedFields {}: +{:.1} MiB ({:.1} KiB each; JSON {} bytes)",
            if prune { "pruned" } else { "kept" },
            after - before,
            (after - before) * 1024.0 / n as f64,
            text.len()
        );
        drop(store);
    }
}

/// Mapping the Secrets listed at start (or at a relist) to their TrimbleConnections, N of each:
/// the per-Secret store scan the operator used before (`referencing`, copied here as it was) against
/// `SecretMapper`, which maps the whole listing in one scan. CPU time of one listing; BENCH_N sets N
/// (default 20,000). `cargo test --release --test benchmark secret_listing_mapping -- --ignored
/// --nocapture`
#[test]
#[ignore = "benchmark; run in release mode"]
fn secret_listing_mapping() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as Meta;
    use kube::ResourceExt;
    use kube::core::PartialObjectMeta;
    use kube::runtime::reflector::{self, ObjectRef, Store};
    use leaf_operator::controller::secret_triggers::SecretMapper;

    /// The mapper as it was: one scan of the store's list per Secret.
    fn referencing(
        store: &Store<TrimbleConnection>,
        secret: &PartialObjectMeta<Secret>,
    ) -> Vec<ObjectRef<TrimbleConnection>> {
        let name = secret.name_any();
        let namespace = secret.namespace();
        store
            .state()
            .into_iter()
            .filter(|tc| tc.namespace() == namespace)
            .filter(|tc| {
                tc.spec
                    .credentials_secret_ref
                    .as_ref()
                    .is_some_and(|r| r.name == name)
                    || tc
                        .spec
                        .leaf_auth_secret_ref
                        .as_ref()
                        .is_some_and(|r| r.name == name)
            })
            .map(|tc| ObjectRef::from_obj(tc.as_ref()))
            .collect()
    }

    let n: usize = env_or("BENCH_N", 20_000usize);
    let (store, mut writer) = reflector::store::<TrimbleConnection>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for i in 0..n {
        let spec = serde_json::from_value(serde_json::json!({
            "leafUserId": format!("grower-{i}"),
            "credentialsSecretRef": {"name": format!("trimble-{i}")},
        }))
        .expect("spec");
        let mut tc = TrimbleConnection::new(&format!("farm-{i}"), spec);
        tc.metadata.namespace = Some("growers".into());
        writer.apply_watcher_event(&watcher::Event::InitApply(tc));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let secrets: Vec<PartialObjectMeta<Secret>> = (0..n)
        .map(|i| PartialObjectMeta {
            metadata: Meta {
                name: Some(format!("trimble-{i}")),
                namespace: Some("growers".into()),
                ..Meta::default()
            },
            ..PartialObjectMeta::default()
        })
        .collect();

    let started = Instant::now();
    let before: usize = secrets.iter().map(|s| referencing(&store, s).len()).sum();
    let per_secret_scan = started.elapsed();

    let started = Instant::now();
    let mut mapper = SecretMapper::default();
    mapper.on_event(&watcher::Event::Init, || store.state());
    for secret in &secrets {
        mapper.on_event(&watcher::Event::InitApply(secret.clone()), || store.state());
    }
    let after = mapper
        .on_event(&watcher::Event::InitDone, || store.state())
        .len();
    let one_scan = started.elapsed();

    assert_eq!(
        (before, after),
        (n, n),
        "both map every Secret to its one reader"
    );
    println!(
        "listing of {n} Secrets against {n} TrimbleConnections: per-Secret scan {:.3} s, one scan {:.4} s ({:.0}x)",
        per_secret_scan.as_secs_f64(),
        one_scan.as_secs_f64(),
        per_secret_scan.as_secs_f64() / one_scan.as_secs_f64().max(1e-9)
    );
}
