//! The alerts benchmark of issue 12 ("Measure"): Leaf calls per connection per day with alerts,
//! time from a credential turning UNAUTHENTICATED in Leaf to `Ready=False`, peak memory, and the
//! alert throughput the receiver sustains with signature checks, at N connections in one or more
//! shards.
//!
//! Everything is real but Leaf: etcd + kube-apiserver (`tests/support`), the release-built
//! `leaf-operator` binary as a process per shard, with its receiver and webhook registration on,
//! and per shard its own Leaf stand-in (its own Leaf account: a webhook belongs to one account,
//! so each shard registers its own; docs/push-vs-poll.md). Phases:
//!
//! 1. Each operator starts, registers its webhook and reports `polling_mode{mode="backstop"}`.
//! 2. N Secrets and N TrimbleConnections (labelled `shard=a`, `shard=b`, ... when sharded) are
//!    applied; until all are Ready.
//! 3. Steady state: one backstop interval is observed and every Leaf call counted. The backstop is
//!    scaled down from 24 hours to `BENCH_BACKSTOP_SECS` so that a run takes minutes: each
//!    connection is checked once per backstop interval whatever its length, so the calls per
//!    connection in one interval are the calls per connection per day at the 24-hour default.
//!    Calls of the account (registration check and failed-calls replay, every 10 minutes) are
//!    counted apart: they do not grow with N.
//! 4. Latency, paced: `BENCH_PACED` credentials turn UNAUTHENTICATED in the stand-in, at
//!    `BENCH_PACED_RATE` per second; for each, the time from the stand-in's change to a watch
//!    seeing `Ready=False` (CredentialInvalid). The stand-in delivers the signed alert as Leaf
//!    does. Then a burst: `BENCH_BURST_ALERTS` at once.
//! 5. Throughput: the benchmark POSTs signed alerts straight to the receivers with
//!    `BENCH_CLIENT_PARALLEL` requests in flight: first for credentials no shard manages (the
//!    receiver's own cost: signature, parse, index lookup), then one for every managed credential
//!    (each also triggers a reconcile: a mass revocation). Then, unless `BENCH_DRAIN=0`, until
//!    every triggered reconcile answered (the Leaf rate limit bounds that).
//! 6. Peak RSS (VmHWM) and CPU seconds of each operator, before and after the throughput storm.
//! 7. Unless `BENCH_RESTART=0`: the operators restart (the schedule lives in memory), and the
//!    calls until every connection was checked once more are counted.
//!
//! `benchmark_alerts_smoke` runs it at N = 50 in two shards in CI and checks that the numbers are
//! sane (no timing assertions). `benchmark_alerts` (ignored) is the real run; `scripts/bench-alerts.sh`
//! runs it in release mode for N = 5,000 and 20,000 and two shards of 10,000 and appends the
//! results to `target/bench-alerts.md`. See BENCHMARKS.md.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher;
use leaf_operator::crd::TrimbleConnection;
use leaf_standin::{CREDENTIALS_UNAUTHENTICATED, StandIn, StandInConfig};
use support::alerts::{free_port, sample};
use support::bench::{ProcessStats, env_or, for_each_parallel, human, percentile, process_stats};
use support::operator::{LEAF_PASSWORD, LEAF_USERNAME, Operator, OperatorOptions};
use support::wait_until;

const USER_PREFIX: &str = "bench-user-";
const SIGNING_SECRET_NAME: &str = "leaf-alerts";
/// Not a planted secret: the benchmark does not scan for it.
const SIGNING_SECRET: &str = "bench-webhook-signing-secret-0b7e";
/// Requests the benchmark keeps in flight when applying objects.
const APPLY_PARALLELISM: usize = 32;
/// The registration check of the production default (10 minutes): 2 Alerts API calls each.
const PRODUCTION_CHECKS_PER_DAY: f64 = 144.0;

/// What one run measures and with which settings.
#[derive(Clone, Debug)]
struct Config {
    n: usize,
    shards: usize,
    latency: Duration,
    concurrency: u32,
    rps: f64,
    burst: u32,
    /// The backstop interval (scaled down from 24 hours) and the steady-state window.
    backstop: Duration,
    paced: usize,
    paced_rate: f64,
    burst_alerts: usize,
    unmanaged_alerts: usize,
    client_parallel: usize,
    drain: bool,
    /// Restart the operators at the end and count what their first round of checks costs.
    restart: bool,
    rust_log: String,
    operator_env: Vec<(String, String)>,
}

impl Config {
    /// Defaults: Leaf latency 100 ms (as the issue-7 benchmark), 32 reconciles at once and 200
    /// Leaf requests/s per shard, so that 20,000 creates take minutes rather than the hour the
    /// production default of 10/s would; the backstop 2.5 creation rounds of one shard, so that
    /// the first backstop checks come after the last create.
    fn with_n(n: usize, shards: usize) -> Self {
        let mut config = Self {
            n,
            shards: shards.max(1),
            latency: Duration::from_millis(100),
            concurrency: 32,
            rps: 200.0,
            burst: 20,
            backstop: Duration::ZERO,
            paced: (n / 4).clamp(1, 400),
            paced_rate: 20.0,
            burst_alerts: (n / 4).clamp(1, 200),
            unmanaged_alerts: n.max(500),
            client_parallel: 32,
            drain: true,
            restart: true,
            rust_log: "info".to_string(),
            operator_env: Vec::new(),
        };
        config.backstop = config.default_backstop();
        config
    }

    fn per_shard(&self) -> usize {
        self.n.div_ceil(self.shards)
    }

    fn default_backstop(&self) -> Duration {
        let round = self.per_shard() as f64 * 2.0 / self.rps;
        Duration::from_secs_f64((round * 2.5).max(20.0).ceil())
    }

    /// BENCH_N, BENCH_SHARDS, BENCH_LATENCY_MS, BENCH_CONCURRENCY, BENCH_RPS, BENCH_BURST,
    /// BENCH_BACKSTOP_SECS, BENCH_PACED, BENCH_PACED_RATE, BENCH_BURST_ALERTS,
    /// BENCH_UNMANAGED_ALERTS, BENCH_CLIENT_PARALLEL, BENCH_DRAIN, BENCH_RESTART, BENCH_RUST_LOG,
    /// BENCH_OPERATOR_ENV (`KEY=VALUE,...`).
    fn from_env() -> Self {
        let mut c = Self::with_n(env_or("BENCH_N", 5000usize), env_or("BENCH_SHARDS", 1usize));
        c.latency = Duration::from_millis(env_or("BENCH_LATENCY_MS", 100u64));
        c.concurrency = env_or("BENCH_CONCURRENCY", c.concurrency);
        c.rps = env_or("BENCH_RPS", c.rps);
        c.burst = env_or("BENCH_BURST", c.burst);
        c.backstop = c.default_backstop();
        if let Ok(secs) = std::env::var("BENCH_BACKSTOP_SECS") {
            c.backstop = Duration::from_secs(secs.trim().parse().expect("BENCH_BACKSTOP_SECS"));
        }
        c.paced = env_or("BENCH_PACED", c.paced);
        c.paced_rate = env_or("BENCH_PACED_RATE", c.paced_rate);
        c.burst_alerts = env_or("BENCH_BURST_ALERTS", c.burst_alerts);
        c.unmanaged_alerts = env_or("BENCH_UNMANAGED_ALERTS", c.unmanaged_alerts);
        c.client_parallel = env_or("BENCH_CLIENT_PARALLEL", c.client_parallel);
        c.drain = env_or("BENCH_DRAIN", 1u8) != 0;
        c.restart = env_or("BENCH_RESTART", 1u8) != 0;
        c.rust_log = env_or("BENCH_RUST_LOG", c.rust_log);
        c.operator_env = std::env::var("BENCH_OPERATOR_ENV")
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.trim().split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(
            c.paced + c.burst_alerts <= c.n,
            "BENCH_PACED + BENCH_BURST_ALERTS must not exceed BENCH_N"
        );
        c
    }

    fn shard_of(&self, i: usize) -> usize {
        i % self.shards
    }
}

fn shard_label(shard: usize) -> String {
    char::from(b'a' + u8::try_from(shard).expect("at most 26 shards")).to_string()
}

fn user(i: usize) -> String {
    format!("{USER_PREFIX}{i}")
}

// --- what the benchmark watches ----------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Tracked {
    ready: bool,
    credential_id: Option<String>,
}

/// TrimbleConnections as a watch sees them, and when each was first seen CredentialInvalid.
#[derive(Debug, Default)]
struct Watched {
    objects: HashMap<String, Tracked>,
    invalid_at: HashMap<String, Instant>,
}

fn watch_tcs(api: Api<TrimbleConnection>) -> Arc<Mutex<Watched>> {
    let state = Arc::new(Mutex::new(Watched::default()));
    let shared = state.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            let (watcher::Event::Apply(tc) | watcher::Event::InitApply(tc)) = (match event {
                Ok(event) => event,
                Err(_) => continue,
            }) else {
                continue;
            };
            let seen = Instant::now();
            let name = tc.metadata.name.clone().unwrap_or_default();
            let status = tc.status.clone().unwrap_or_default();
            let current = status.observed_generation == tc.metadata.generation;
            let ready_condition = status.conditions.iter().find(|c| c.type_ == "Ready");
            let ready = current && ready_condition.is_some_and(|c| c.status == "True");
            let invalid = current
                && ready_condition
                    .is_some_and(|c| c.status == "False" && c.reason == "CredentialInvalid");
            let mut s = shared.lock().unwrap();
            if invalid {
                s.invalid_at.entry(name.clone()).or_insert(seen);
            }
            s.objects.insert(
                name,
                Tracked {
                    ready,
                    credential_id: status.credential_id,
                },
            );
        }
    });
    state
}

// --- Leaf calls ----------------------------------------------------------------------------------

/// Leaf calls in a stand-in's log since an index: per connection by kind, of the account.
#[derive(Clone, Debug, Default)]
struct Calls {
    /// "GET", "POST", "DELETE", "GET events" for the benchmark's users.
    by_kind: BTreeMap<String, u64>,
    per_user: u64,
    /// Calls to the Alerts API (registration checks, failed-calls replay).
    alerts_api: u64,
    logins: u64,
    failed: u64,
}

impl Calls {
    fn add(&mut self, other: &Calls) {
        for (kind, n) in &other.by_kind {
            *self.by_kind.entry(kind.clone()).or_default() += n;
        }
        self.per_user += other.per_user;
        self.alerts_api += other.alerts_api;
        self.logins += other.logins;
        self.failed += other.failed;
    }

    fn kind(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }

    fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(
            "{} per connection ({}); Alerts API {}; logins {}; failed {}",
            self.per_user,
            kinds.join(", "),
            self.alerts_api,
            self.logins,
            self.failed
        )
    }
}

/// The user id in a `/users/{id}/...` path.
fn user_in(path: &str) -> Option<&str> {
    let rest = path.split("/users/").nth(1)?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// Calls since `from` (an index into the stand-in's request log), only of `users` when given;
/// returns them and the new index.
fn calls_since(standin: &StandIn, from: usize, users: Option<&HashSet<String>>) -> (Calls, usize) {
    let requests = standin.requests();
    let mut calls = Calls::default();
    for r in requests.iter().skip(from) {
        if r.path == "/api/authenticate" {
            calls.logins += 1;
            continue;
        }
        if r.path.contains("/services/alerts/") {
            calls.alerts_api += 1;
            continue;
        }
        let Some(id) = user_in(&r.path).filter(|id| id.starts_with(USER_PREFIX)) else {
            continue;
        };
        if users.is_some_and(|users| !users.contains(id)) {
            continue;
        }
        let kind = if r.path.ends_with("/events") {
            format!("{} events", r.method)
        } else {
            r.method.clone()
        };
        *calls.by_kind.entry(kind).or_default() += 1;
        calls.per_user += 1;
        let expected_404 = r.method == "GET" && r.status == Some(404);
        if !r.status.is_some_and(|s| (200..300).contains(&s)) && !expected_404 {
            calls.failed += 1;
        }
    }
    (calls, requests.len())
}

// --- shards ------------------------------------------------------------------------------------

/// One shard: its Leaf account (stand-in), its operator process and receiver.
struct Shard {
    label: String,
    standin: StandIn,
    operator: Operator,
    port: u16,
    pid: u32,
    metrics_url: String,
    mark: usize,
}

impl Shard {
    async fn scrape(&self) -> String {
        reqwest::get(&self.metrics_url)
            .await
            .expect("the operator's metrics")
            .text()
            .await
            .expect("metrics text")
    }

    fn stats(&self) -> ProcessStats {
        process_stats(self.pid)
    }

    /// Calls since the last call of this method (of `users` only, when given).
    fn take_calls(&mut self, users: Option<&HashSet<String>>) -> Calls {
        let (calls, next) = calls_since(&self.standin, self.mark, users);
        self.mark = next;
        calls
    }
}

async fn sum_metric(shards: &[Shard], series: &str) -> f64 {
    let mut total = 0.0;
    for shard in shards {
        total += sample(&shard.scrape().await, series);
    }
    total
}

const TRIGGERED: &str =
    r#"leaf_operator_alerts_handled_total{source="receiver",outcome="triggered"}"#;
const UNMANAGED: &str =
    r#"leaf_operator_alerts_handled_total{source="receiver",outcome="unmanaged"}"#;
const ANSWERED_WRITTEN: &str = r#"leaf_operator_alert_to_status_seconds_count{result="written"}"#;
const ANSWERED_UNCHANGED: &str =
    r#"leaf_operator_alert_to_status_seconds_count{result="unchanged"}"#;
const ANSWERED_FAILED: &str = r#"leaf_operator_alert_to_status_seconds_count{result="failed"}"#;
const MODE_BACKSTOP: &str = r#"leaf_operator_alerts_polling_mode{mode="backstop"}"#;

async fn answered(shards: &[Shard]) -> f64 {
    sum_metric(shards, ANSWERED_WRITTEN).await
        + sum_metric(shards, ANSWERED_UNCHANGED).await
        + sum_metric(shards, ANSWERED_FAILED).await
}

async fn start_shard(
    config: &Config,
    control_plane: &support::ControlPlane,
    namespace: &str,
    shard: usize,
) -> Shard {
    let label = shard_label(shard);
    let mut standin_config = StandInConfig::default().with_account(LEAF_USERNAME, LEAF_PASSWORD);
    standin_config.auto_create_users = true;
    standin_config.faults.latency = config.latency;
    let standin = StandIn::start(standin_config).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/alerts");
    let mut env: Vec<(String, String)> = vec![
        (
            "RECONCILE_CONCURRENCY".into(),
            config.concurrency.to_string(),
        ),
        ("LEAF_REQUESTS_PER_SECOND".into(), config.rps.to_string()),
        ("LEAF_BURST".into(), config.burst.to_string()),
        ("LEAF_TIMEOUT".into(), "30s".into()),
        ("LEAF_ALERTS_ADDR".into(), format!("127.0.0.1:{port}")),
        (
            "LEAF_ALERTS_SECRET_NAME".into(),
            format!("{namespace}/{SIGNING_SECRET_NAME}"),
        ),
        ("LEAF_ALERTS_REGISTER".into(), "true".into()),
        ("LEAF_ALERTS_WEBHOOK_URL".into(), url),
        ("LEAF_ALERTS_WEBHOOK_NAME".into(), format!("bench-{label}")),
        (
            "LEAF_ALERTS_BACKSTOP_INTERVAL".into(),
            format!("{}s", config.backstop.as_secs()),
        ),
        (
            "LEADER_ELECTION_LEASE_NAME".into(),
            format!("leaf-operator-{label}"),
        ),
    ];
    if config.shards > 1 {
        env.push(("LABEL_SELECTOR".into(), format!("shard={label}")));
    }
    env.extend(config.operator_env.iter().cloned());
    let options = OperatorOptions {
        rust_log: config.rust_log.clone(),
        env,
        ..OperatorOptions::new(namespace, &standin.origin()).account(LEAF_USERNAME, LEAF_PASSWORD)
    };
    let operator = Operator::start(control_plane, options).await;
    let pid = operator.pid().expect("the operator's pid");
    let addr = operator.http_addr().expect("the operator's HTTP address");
    Shard {
        label,
        standin,
        operator,
        port,
        pid,
        metrics_url: format!("http://{addr}/metrics"),
        mark: 0,
    }
}

fn credentials_secret(i: usize) -> Secret {
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
                    format!("bench-client-secret-{i}"),
                ),
                (
                    "refreshToken".to_string(),
                    format!("bench-refresh-token-{i}"),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

fn trimble_connection(config: &Config, i: usize) -> TrimbleConnection {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "withleaf.io/v1alpha1",
        "kind": "TrimbleConnection",
        "metadata": {
            "name": format!("bench-{i}"),
            "labels": {"shard": shard_label(config.shard_of(i))},
        },
        "spec": {"leafUserId": user(i), "credentialsSecretRef": {"name": format!("bench-secret-{i}")}},
    }))
    .expect("a valid TrimbleConnection")
}

/// Waits until `done` holds on the watched state, looking every 100 ms.
async fn wait_watched(
    state: &Arc<Mutex<Watched>>,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Watched) -> Result<(), String>,
) -> Instant {
    wait_until(what, timeout, || {
        let result = done(&state.lock().unwrap());
        async move { result.map(|()| Instant::now()) }
    })
    .await
}

// --- the alerts the benchmark sends itself --------------------------------------------------------

/// A signed alert for one receiver.
struct Signed {
    port: u16,
    body: String,
    signature: String,
}

fn signed(port: u16, credential_id: &str, n: usize) -> Signed {
    // Distinct timestamps: every alert is new to the dedupe (none is a retry).
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_micros(
            i64::try_from(n).unwrap_or(0),
        ))
        .expect("a timestamp");
    let body = leaf_standin::credentials_body(
        CREDENTIALS_UNAUTHENTICATED,
        "bench-client",
        credential_id,
        "UNAUTHENTICATED",
        &at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    );
    let signature =
        leaf_operator::alerts::signature::sign(SIGNING_SECRET.as_bytes(), body.as_bytes());
    Signed {
        port,
        body,
        signature,
    }
}

/// POSTs every alert with `parallel` in flight; returns the time from the first send to the last
/// answer and how many were answered 200.
async fn post_all(alerts: Vec<Signed>, parallel: usize) -> (Duration, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(parallel)
        .build()
        .expect("an HTTP client");
    let began = Instant::now();
    let ok = futures::stream::iter(alerts.into_iter().map(|alert| {
        let client = client.clone();
        async move {
            let response = client
                .post(format!("http://127.0.0.1:{}/alerts", alert.port))
                .header("content-type", "application/json")
                .header("X-Leaf-Signature", alert.signature)
                .body(alert.body)
                .send()
                .await;
            matches!(response, Ok(r) if r.status().as_u16() == 200)
        }
    }))
    .buffer_unordered(parallel)
    .filter(|ok| futures::future::ready(*ok))
    .count()
    .await;
    (began.elapsed(), ok)
}

// --- the run -----------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Latencies {
    samples: Vec<Duration>,
    calls: Calls,
}

impl Latencies {
    fn p(&self, p: f64) -> Duration {
        percentile(&self.samples, p).unwrap_or_default()
    }

    fn max(&self) -> Duration {
        self.samples.iter().copied().max().unwrap_or_default()
    }

    fn calls_per_alert(&self) -> f64 {
        self.calls.per_user as f64 / self.samples.len().max(1) as f64
    }
}

#[derive(Debug, Default)]
struct Results {
    config_line: String,
    all_ready: Duration,
    create_calls: Calls,
    steady_window: Duration,
    steady: Calls,
    paced: Latencies,
    burst: Latencies,
    unmanaged_sent: usize,
    unmanaged_ok: usize,
    unmanaged_took: Duration,
    unmanaged_counted: f64,
    managed_sent: usize,
    managed_ok: usize,
    managed_took: Duration,
    managed_triggered: f64,
    drained: Option<Duration>,
    drain_calls: Calls,
    before_storm: Vec<ProcessStats>,
    after: Vec<ProcessStats>,
    after_create: Vec<ProcessStats>,
    /// After a restart: until every connection was checked again, and the calls that took.
    restart_checked: Option<Duration>,
    restart_calls: Calls,
    after_restart: Vec<ProcessStats>,
}

impl Results {
    fn per_connection_per_interval(&self, n: usize) -> f64 {
        self.steady.per_user as f64 / n as f64
    }

    fn rate(sent: usize, took: Duration) -> f64 {
        sent as f64 / took.as_secs_f64().max(1e-9)
    }
}

async fn latency_phase(
    config: &Config,
    shards: &mut [Shard],
    watched: &Arc<Mutex<Watched>>,
    range: std::ops::Range<usize>,
    rate: Option<f64>,
) -> Latencies {
    for shard in shards.iter_mut() {
        shard.take_calls(None);
    }
    let users: HashSet<String> = range.clone().map(user).collect();
    let mut started: Vec<(String, Instant)> = Vec::new();
    let began = Instant::now();
    for (k, i) in range.clone().enumerate() {
        if let Some(rate) = rate {
            // Pacing the load (not a synchronisation): the k-th change at k / rate.
            let due = began + Duration::from_secs_f64(k as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let at = Instant::now();
        assert!(
            shards[config.shard_of(i)]
                .standin
                .set_status(&user(i), "UNAUTHENTICATED"),
            "{} has a credential",
            user(i)
        );
        started.push((format!("bench-{i}"), at));
    }
    let count = started.len();
    let names: Vec<String> = started.iter().map(|(n, _)| n.clone()).collect();
    wait_watched(
        watched,
        "every changed credential to show Ready=False",
        Duration::from_secs(120) + Duration::from_secs_f64(count as f64 * 2.0 / config.rps),
        |w| {
            let done = names
                .iter()
                .filter(|n| w.invalid_at.contains_key(*n))
                .count();
            if done == count {
                Ok(())
            } else {
                Err(format!("{done} of {count}"))
            }
        },
    )
    .await;
    let w = watched.lock().unwrap();
    let samples = started
        .iter()
        .map(|(name, at)| w.invalid_at[name].saturating_duration_since(*at))
        .collect();
    drop(w);
    let mut calls = Calls::default();
    for shard in shards.iter_mut() {
        calls.add(&shard.take_calls(Some(&users)));
    }
    Latencies { samples, calls }
}

async fn run(config: &Config) -> Results {
    let mut r = Results {
        config_line: format!("{config:?}"),
        ..Default::default()
    };
    eprintln!("benchmark-alerts: {config:?}");
    let control_plane = support::control_plane().await;
    control_plane.install_crd().await;
    let client = control_plane.client();
    let namespace = control_plane
        .create_namespace(&format!("bench-alerts-{}", config.n))
        .await;
    let tcs: Api<TrimbleConnection> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let watched = watch_tcs(tcs.clone());
    let signing: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": SIGNING_SECRET_NAME},
        "stringData": {"secret": SIGNING_SECRET},
    }))
    .expect("a Secret");
    secrets
        .create(&PostParams::default(), &signing)
        .await
        .expect("create the signing Secret");

    // 1. The shards, each with its webhook registered and polling at the backstop.
    let mut shards = Vec::new();
    for shard in 0..config.shards {
        shards.push(start_shard(config, control_plane, &namespace, shard).await);
    }
    for shard in &shards {
        wait_until(
            &format!("shard {} to poll at the backstop", shard.label),
            Duration::from_secs(60),
            || async {
                let text = shard.scrape().await;
                if sample(&text, MODE_BACKSTOP) == 1.0 {
                    Ok(())
                } else {
                    Err(text
                        .lines()
                        .filter(|l| l.contains("polling_mode") || l.contains("webhook_state"))
                        .collect::<Vec<_>>()
                        .join("; "))
                }
            },
        )
        .await;
    }
    eprintln!(
        "benchmark-alerts: {} shard(s) registered, at the backstop",
        shards.len()
    );

    // 2. N Secrets, then N TrimbleConnections; until all are Ready.
    for_each_parallel(config.n, APPLY_PARALLELISM, |i| {
        let secrets = secrets.clone();
        async move {
            secrets
                .create(&PostParams::default(), &credentials_secret(i))
                .await
                .map(|_| ())
        }
    })
    .await;
    for shard in shards.iter_mut() {
        shard.take_calls(None);
    }
    let began = Instant::now();
    for_each_parallel(config.n, APPLY_PARALLELISM, |i| {
        let tcs = tcs.clone();
        let tc = trimble_connection(config, i);
        async move { tcs.create(&PostParams::default(), &tc).await.map(|_| ()) }
    })
    .await;
    let n = config.n;
    let ideal = Duration::from_secs_f64(config.per_shard() as f64 * 2.0 / config.rps);
    wait_watched(
        &watched,
        "all TrimbleConnections to be Ready",
        ideal * 10 + Duration::from_secs(180),
        |w| {
            let ready = w.objects.values().filter(|t| t.ready).count();
            if ready == n {
                Ok(())
            } else {
                Err(format!("{ready} of {n} Ready"))
            }
        },
    )
    .await;
    r.all_ready = began.elapsed();
    for shard in shards.iter_mut() {
        r.create_calls.add(&shard.take_calls(None));
    }
    r.after_create = shards.iter().map(Shard::stats).collect();
    eprintln!(
        "benchmark-alerts: all {n} Ready in {}; Leaf calls {}",
        human(r.all_ready),
        r.create_calls.summary()
    );

    // 3. Steady state: one backstop interval, observed (a measurement window, not a wait).
    r.steady_window = config.backstop;
    tokio::time::sleep(r.steady_window).await;
    for shard in shards.iter_mut() {
        r.steady.add(&shard.take_calls(None));
    }
    eprintln!(
        "benchmark-alerts: steady state over {}: {} ({:.3} per connection per backstop interval)",
        human(r.steady_window),
        r.steady.summary(),
        r.per_connection_per_interval(n)
    );

    // 4. Latency: paced, then a burst.
    r.paced = latency_phase(
        config,
        &mut shards,
        &watched,
        0..config.paced,
        Some(config.paced_rate),
    )
    .await;
    r.burst = latency_phase(
        config,
        &mut shards,
        &watched,
        config.paced..config.paced + config.burst_alerts,
        None,
    )
    .await;
    eprintln!(
        "benchmark-alerts: UNAUTHENTICATED -> Ready=False, paced {}/s: p50 {} p99 {} max {}; burst of {}: p50 {} p99 {} max {}",
        config.paced_rate,
        human(r.paced.p(50.0)),
        human(r.paced.p(99.0)),
        human(r.paced.max()),
        config.burst_alerts,
        human(r.burst.p(50.0)),
        human(r.burst.p(99.0)),
        human(r.burst.max())
    );
    r.before_storm = shards.iter().map(Shard::stats).collect();

    // 5. Throughput: alerts for credentials nobody manages, then one for every managed one.
    let unmanaged: Vec<Signed> = (0..config.unmanaged_alerts)
        .map(|j| {
            signed(
                shards[j % shards.len()].port,
                &format!("bench-unmanaged-{j}"),
                j,
            )
        })
        .collect();
    let managed: Vec<Signed> = {
        let w = watched.lock().unwrap();
        (0..n)
            .map(|i| {
                let id = w.objects[&format!("bench-{i}")]
                    .credential_id
                    .clone()
                    .expect("a credential id");
                signed(shards[config.shard_of(i)].port, &id, i)
            })
            .collect()
    };
    let unmanaged_before = sum_metric(&shards, UNMANAGED).await;
    r.unmanaged_sent = unmanaged.len();
    (r.unmanaged_took, r.unmanaged_ok) = post_all(unmanaged, config.client_parallel).await;
    r.unmanaged_counted = sum_metric(&shards, UNMANAGED).await - unmanaged_before;
    let triggered_before = sum_metric(&shards, TRIGGERED).await;
    let answered_before = answered(&shards).await;
    for shard in shards.iter_mut() {
        shard.take_calls(None);
    }
    r.managed_sent = managed.len();
    let storm = Instant::now();
    (r.managed_took, r.managed_ok) = post_all(managed, config.client_parallel).await;
    r.managed_triggered = sum_metric(&shards, TRIGGERED).await - triggered_before;
    eprintln!(
        "benchmark-alerts: receiver throughput: {} unmanaged in {} ({:.0}/s, {} answered 200); {} managed in {} ({:.0}/s, {} answered 200, {} triggered)",
        r.unmanaged_sent,
        human(r.unmanaged_took),
        Results::rate(r.unmanaged_sent, r.unmanaged_took),
        r.unmanaged_ok,
        r.managed_sent,
        human(r.managed_took),
        Results::rate(r.managed_sent, r.managed_took),
        r.managed_ok,
        r.managed_triggered
    );
    if config.drain {
        let target = answered_before + r.managed_triggered;
        let timeout = Duration::from_secs_f64(config.per_shard() as f64 * 2.0 / config.rps) * 5
            + Duration::from_secs(180);
        let shards_ref = &shards;
        wait_until(
            "every triggered reconcile to answer",
            timeout,
            || async move {
                let now = answered(shards_ref).await;
                if now >= target {
                    Ok(())
                } else {
                    Err(format!("{now} of {target} answered"))
                }
            },
        )
        .await;
        r.drained = Some(storm.elapsed());
        for shard in shards.iter_mut() {
            r.drain_calls.add(&shard.take_calls(None));
        }
        eprintln!(
            "benchmark-alerts: the storm drained in {}; Leaf calls {}",
            human(storm.elapsed()),
            r.drain_calls.summary()
        );
    }
    r.after = shards.iter().map(Shard::stats).collect();
    for (shard, stats) in shards.iter().zip(&r.after) {
        eprintln!("benchmark-alerts: shard {} operator {stats:?}", shard.label);
    }
    if config.restart {
        // 7. A restart (a rolling update, a failover): the schedule is in memory, so every
        //    connection is checked once more; until each one was.
        for shard in shards.iter_mut() {
            shard.take_calls(None);
        }
        let began = Instant::now();
        for shard in shards.iter_mut() {
            shard.operator.restart().await;
            shard.pid = shard.operator.pid().expect("the operator's pid");
            let addr = shard
                .operator
                .http_addr()
                .expect("the operator's HTTP address");
            shard.metrics_url = format!("http://{addr}/metrics");
        }
        let timeout = Duration::from_secs_f64(config.per_shard() as f64 * 2.0 / config.rps) * 5
            + Duration::from_secs(300);
        let shards_ref = &shards;
        wait_until(
            "every connection to be checked after the restart",
            timeout,
            || async move {
                let checked: HashSet<String> = shards_ref
                    .iter()
                    .flat_map(|shard| {
                        shard
                            .standin
                            .requests()
                            .into_iter()
                            .skip(shard.mark)
                            .filter(|r| r.method == "GET" && !r.path.ends_with("/events"))
                            .filter_map(|r| user_in(&r.path).map(str::to_string))
                            .collect::<Vec<_>>()
                    })
                    .filter(|id| id.starts_with(USER_PREFIX))
                    .collect();
                if checked.len() >= n {
                    Ok(())
                } else {
                    Err(format!("{} of {n} checked", checked.len()))
                }
            },
        )
        .await;
        r.restart_checked = Some(began.elapsed());
        for shard in shards.iter_mut() {
            r.restart_calls.add(&shard.take_calls(None));
        }
        r.after_restart = shards.iter().map(Shard::stats).collect();
        eprintln!(
            "benchmark-alerts: after a restart every connection was checked again within {}; Leaf calls {}",
            human(began.elapsed()),
            r.restart_calls.summary()
        );
    }
    for shard in shards.iter_mut() {
        shard.operator.stop();
    }
    r
}

// --- reporting -----------------------------------------------------------------------------------

const TABLE_HEADER: &str = "| N | shards | apply → all Ready | Leaf calls / connection / backstop interval (= per day at 24 h) | events read at steady state | account calls / connection / day | UNAUTHENTICATED → Ready=False, paced: p50 / p99 / max | burst: p50 / p99 / max | Leaf calls / alert | receiver: alerts/s, unmanaged | alerts/s, managed (each triggers a reconcile) | storm drained | peak RSS (before storm / after), per shard | CPU s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

fn row(config: &Config, r: &Results) -> String {
    let n = config.n;
    let peaks = |stats: &[ProcessStats]| {
        stats
            .iter()
            .map(|s| format!("{:.1}", s.peak_rss_mib))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let cpu: f64 = r.after.iter().map(|s| s.cpu_secs).sum();
    format!(
        "| {n} | {} | {} | {:.3} | {} | {:.4} | {} / {} / {} ({} at {}/s) | {} / {} / {} ({}) | {:.2} | {:.0} | {:.0} | {} | {} MiB / {} MiB | {:.0} |\n",
        config.shards,
        human(r.all_ready),
        r.per_connection_per_interval(n),
        r.steady.kind("GET events"),
        2.0 * PRODUCTION_CHECKS_PER_DAY / n as f64 * config.shards as f64,
        human(r.paced.p(50.0)),
        human(r.paced.p(99.0)),
        human(r.paced.max()),
        r.paced.samples.len(),
        config.paced_rate,
        human(r.burst.p(50.0)),
        human(r.burst.p(99.0)),
        human(r.burst.max()),
        r.burst.samples.len(),
        r.paced.calls_per_alert(),
        Results::rate(r.unmanaged_sent, r.unmanaged_took),
        Results::rate(r.managed_sent, r.managed_took),
        r.drained.map_or_else(|| "not measured".to_string(), human),
        peaks(&r.before_storm),
        peaks(&r.after),
        cpu,
    )
}

fn details(config: &Config, r: &Results) -> String {
    let mut out = String::new();
    let n = config.n;
    let _ = writeln!(
        out,
        "<details><summary>N = {n}, {} shard(s): details</summary>\n",
        config.shards
    );
    let _ = writeln!(out, "- settings: `{}`", r.config_line);
    let _ = writeln!(
        out,
        "- operator binary: {}",
        std::env::var("LEAF_OPERATOR_BIN")
            .unwrap_or_else(|_| "this build's (cargo test --release, glibc)".to_string())
    );
    let _ = writeln!(
        out,
        "- date {}; load average: {}",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let _ = writeln!(
        out,
        "- create: all {n} Ready after {}; Leaf calls {}",
        human(r.all_ready),
        r.create_calls.summary()
    );
    let _ = writeln!(
        out,
        "- steady state over one backstop interval ({}): Leaf calls {}; {:.3} per connection; the Alerts API calls are the account's (registration check and failed-calls replay: 2 per check, every 10 minutes by default = {:.0} a day per shard)",
        human(r.steady_window),
        r.steady.summary(),
        r.per_connection_per_interval(n),
        2.0 * PRODUCTION_CHECKS_PER_DAY
    );
    for (name, l) in [("paced", &r.paced), ("burst", &r.burst)] {
        let _ = writeln!(
            out,
            "- {name}: {} credentials turned UNAUTHENTICATED; to Ready=False p50 {}, p90 {}, p99 {}, max {}; their Leaf calls {}",
            l.samples.len(),
            human(l.p(50.0)),
            human(l.p(90.0)),
            human(l.p(99.0)),
            human(l.max()),
            l.calls.summary()
        );
    }
    let _ = writeln!(
        out,
        "- receiver, unmanaged credentials: {} alerts in {} = {:.0}/s with {} in flight; {} answered 200; counted unmanaged {}",
        r.unmanaged_sent,
        human(r.unmanaged_took),
        Results::rate(r.unmanaged_sent, r.unmanaged_took),
        config.client_parallel,
        r.unmanaged_ok,
        r.unmanaged_counted
    );
    let _ = writeln!(
        out,
        "- receiver, one alert per managed credential: {} alerts in {} = {:.0}/s; {} answered 200; {} triggered a reconcile",
        r.managed_sent,
        human(r.managed_took),
        Results::rate(r.managed_sent, r.managed_took),
        r.managed_ok,
        r.managed_triggered
    );
    if let Some(drained) = r.drained {
        let _ = writeln!(
            out,
            "- the triggered reconciles all answered {} after the storm began; Leaf calls {}",
            human(drained),
            r.drain_calls.summary()
        );
    }
    if let Some(took) = r.restart_checked {
        let _ = writeln!(
            out,
            "- after a restart of the operator(s), every connection was checked again within {} (including the start); Leaf calls {} = {:.2} per connection; the restarted operator(s): {}",
            human(took),
            r.restart_calls.summary(),
            r.restart_calls.per_user as f64 / n as f64,
            r.after_restart
                .iter()
                .map(|s| format!("RSS {:.1} MiB", s.rss_mib))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (phase, stats) in [
        ("after create", &r.after_create),
        ("before the storm", &r.before_storm),
        ("at the end", &r.after),
    ] {
        let text: Vec<String> = stats
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "shard {}: RSS {:.1} MiB, peak {:.1} MiB, CPU {:.1} s",
                    shard_label(i),
                    s.rss_mib,
                    s.peak_rss_mib,
                    s.cpu_secs
                )
            })
            .collect();
        let _ = writeln!(out, "- operator {phase}: {}", text.join("; "));
    }
    let _ = writeln!(out, "\n</details>\n");
    out
}

fn report(config: &Config, r: &Results, file: &str) {
    let row = row(config, r);
    let details = details(config, r);
    println!("\n{TABLE_HEADER}{row}\n{details}");
    let path = support::repo_root().join("target").join(file);
    let _ = std::fs::create_dir_all(path.parent().expect("target dir"));
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&format!("\n{TABLE_HEADER}{row}\n{details}"));
    std::fs::write(&path, text)
        .unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
    eprintln!("benchmark-alerts: results appended to {}", path.display());
}

#[test]
fn percentiles_are_nearest_rank() {
    let ms = |v: u64| Duration::from_millis(v);
    let samples: Vec<Duration> = (1..=100).map(ms).collect();
    assert_eq!(percentile(&samples, 50.0), Some(ms(50)));
    assert_eq!(percentile(&samples, 99.0), Some(ms(99)));
    assert_eq!(percentile(&[ms(7)], 99.0), Some(ms(7)));
    assert_eq!(percentile(&[], 50.0), None);
    assert_eq!(
        user_in("/api/users/bench-user-7/trimble-credentials/events"),
        Some("bench-user-7")
    );
}

/// CI: the whole alerts benchmark at N = 50 in two shards, checking that what it measures makes
/// sense (never how fast: that is for the real run on a quiet machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_alerts_smoke() {
    let mut config = Config::with_n(50, 2);
    config.backstop = Duration::from_secs(10);
    config.paced = 10;
    config.burst_alerts = 10;
    config.unmanaged_alerts = 500;
    let r = run(&config).await;
    report(&config, &r, "bench-alerts-smoke.md");
    let n = config.n as u64;
    assert_eq!(
        r.create_calls.kind("POST"),
        n,
        "{}",
        r.create_calls.summary()
    );
    assert_eq!(r.create_calls.failed, 0, "{}", r.create_calls.summary());
    // At the backstop each connection is checked about once per interval, reading the credential
    // only (the window may catch a connection's check twice or not yet).
    assert_eq!(r.steady.kind("GET events"), 0, "{}", r.steady.summary());
    assert_eq!(r.steady.kind("POST"), 0, "{}", r.steady.summary());
    let per = r.per_connection_per_interval(config.n);
    assert!((0.5..=2.5).contains(&per), "{per}: {}", r.steady.summary());
    for (what, l, count) in [
        ("paced", &r.paced, config.paced),
        ("burst", &r.burst, config.burst_alerts),
    ] {
        assert_eq!(l.samples.len(), count, "{what}");
        // Each alert: one look at Leaf (GET) that reads the events too (the status changed). A
        // backstop check that happens to fall in the phase may add a look of its own.
        let (gets, events) = (l.calls.kind("GET"), l.calls.kind("GET events"));
        assert!(
            gets >= count as u64 && events >= count as u64 && events <= gets,
            "{what}: {}",
            l.calls.summary()
        );
        assert_eq!(l.calls.kind("POST"), 0, "{what}");
    }
    assert_eq!(r.unmanaged_ok, r.unmanaged_sent, "all answered 200");
    assert_eq!(r.unmanaged_counted, r.unmanaged_sent as f64);
    assert_eq!(r.managed_ok, r.managed_sent);
    assert_eq!(
        r.managed_triggered, r.managed_sent as f64,
        "each new alert acts"
    );
    assert!(r.drained.is_some());
    assert!(
        r.drain_calls.kind("GET") >= n,
        "every triggered reconcile looked at Leaf: {}",
        r.drain_calls.summary()
    );
    assert_eq!(r.drain_calls.kind("POST"), 0, "an alert never creates");
    assert!(
        r.after.iter().all(|s| s.peak_rss_mib > 1.0),
        "{:?}",
        r.after
    );
    assert!(r.restart_checked.is_some());
    assert!(
        r.restart_calls.kind("GET") >= n,
        "{}",
        r.restart_calls.summary()
    );
    assert_eq!(r.restart_calls.kind("POST"), 0, "a restart never creates");
}

/// The real run, configured by BENCH_* variables; run through `scripts/bench-alerts.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long; run with scripts/bench-alerts.sh (release build)"]
async fn benchmark_alerts() {
    let config = Config::from_env();
    let r = run(&config).await;
    report(&config, &r, "bench-alerts.md");
}
