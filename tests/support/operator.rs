//! Runs the real `leaf-operator` binary as a process, as in production, for black-box tests.
//!
//! The operator watches only the test's namespace (so tests in one binary do not see each other),
//! talks to the control plane through its kubeconfig and to a Leaf stand-in. Its complete stdout
//! and stderr go to one file, which the secret-scan test reads. Dropping the guard kills it.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::control_plane::ControlPlane;
use super::process;
use super::wait::wait_until;

/// How the operator is started.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    /// The namespace(s) to watch (WATCH_NAMESPACES).
    pub namespaces: Vec<String>,
    /// Origin of the Leaf stand-in.
    pub leaf_origin: String,
    /// Default Leaf account: (username, password).
    pub account: Option<(String, String)>,
    /// Default Leaf account as a static token (instead of `account`).
    pub token: Option<String>,
    /// RUST_LOG.
    pub rust_log: String,
    /// Test-only override of every refreshInterval.
    pub refresh_interval: Option<String>,
    /// Further environment variables.
    pub env: Vec<(String, String)>,
    /// Further flags.
    pub args: Vec<String>,
}

impl OperatorOptions {
    pub fn new(namespace: &str, leaf_origin: &str) -> Self {
        Self {
            namespaces: vec![namespace.to_string()],
            leaf_origin: leaf_origin.to_string(),
            account: None,
            token: None,
            rust_log: std::env::var("LEAF_TEST_RUST_LOG")
                .unwrap_or_else(|_| "info,leaf_operator=debug".to_string()),
            refresh_interval: None,
            env: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn account(mut self, username: &str, password: &str) -> Self {
        self.account = Some((username.to_string(), password.to_string()));
        self
    }

    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    pub fn refresh_interval(mut self, interval: &str) -> Self {
        self.refresh_interval = Some(interval.to_string());
        self
    }

    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = filter.to_string();
        self
    }

    /// A further environment variable (later ones win).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs with leader election over the default Lease in the first watched namespace, as
    /// replica `identity`.
    pub fn leader_election(self, identity: &str) -> Self {
        let namespace = self.namespaces[0].clone();
        self.env("LEADER_ELECTION", "true")
            .env("POD_NAMESPACE", &namespace)
            .env("POD_NAME", identity)
    }

    /// How long after a create's timeout it may still land (the production default is 60s; the
    /// tests' default is 2s).
    pub fn in_doubt_margin(self, margin: &str) -> Self {
        self.env("LEAF_IN_DOUBT_MARGIN", margin)
    }
}

/// A running operator process; killed when dropped.
pub struct Operator {
    child: Option<Child>,
    log_path: PathBuf,
    options: OperatorOptions,
    kubeconfig: PathBuf,
    run_dir: PathBuf,
    starts: u32,
}

/// The operator binary: the one Cargo built for these tests, or `LEAF_OPERATOR_BIN` (a benchmark
/// of another build, e.g. the musl binary the image ships).
fn binary() -> String {
    std::env::var("LEAF_OPERATOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_leaf-operator").to_string())
}

impl Operator {
    /// Starts the operator and waits until it has logged that its caches synced.
    pub async fn start(control_plane: &ControlPlane, options: OperatorOptions) -> Operator {
        let operator = Self::launch(control_plane, options);
        operator.wait_synced().await;
        operator
    }

    /// Starts the operator without waiting for anything (a standby never syncs, and a start
    /// while the API server is down cannot).
    pub fn launch(control_plane: &ControlPlane, options: OperatorOptions) -> Operator {
        let run_dir =
            process::create_run_dir().expect("failed to create a run directory for the operator");
        let mut operator = Operator {
            child: None,
            log_path: run_dir.join("operator.log"),
            options,
            kubeconfig: control_plane.kubeconfig_path().to_path_buf(),
            run_dir,
            starts: 0,
        };
        operator.spawn_process();
        operator
    }

    async fn spawn(&mut self) {
        self.spawn_process();
        self.wait_synced().await;
    }

    fn spawn_process(&mut self) {
        self.starts += 1;
        // Appending keeps the log of every start in one file for the secret scan.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("failed to open the operator log");
        let mut command = Command::new(binary());
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("LEAF_API_URL", &self.options.leaf_origin)
            .env("WATCH_NAMESPACES", self.options.namespaces.join(","))
            .env("RUST_LOG", &self.options.rust_log)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("POD_NAME", format!("test-operator-{}", self.starts))
            .env("LEAF_TIMEOUT", "5s")
            // A create in doubt waits request timeout + margin before it is sent again: keep that
            // short here, tests that need the production value set it.
            .env("LEAF_IN_DOUBT_MARGIN", "2s")
            .env("LEAF_REQUESTS_PER_SECOND", "200")
            .env("LEAF_BURST", "200");
        if let Some((username, password)) = &self.options.account {
            command
                .env("LEAF_USERNAME", username)
                .env("LEAF_PASSWORD", password);
        }
        if let Some(token) = &self.options.token {
            command.env("LEAF_TOKEN", token);
        }
        if let Some(interval) = &self.options.refresh_interval {
            command.env("LEAF_OPERATOR_TEST_REFRESH_INTERVAL", interval);
        }
        for (key, value) in &self.options.env {
            command.env(key, value);
        }
        command
            .args(&self.options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log));
        let child =
            process::spawn_tied(command, &self.run_dir).expect("failed to start leaf-operator");
        self.child = Some(child);
    }

    /// Waits until the current start has logged that its caches synced.
    async fn wait_synced(&self) {
        let expected = self.starts;
        let log_path = self.log_path.clone();
        wait_until(
            "the operator to sync its caches",
            Duration::from_secs(60),
            || {
                let log_path = log_path.clone();
                async move {
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    let synced = log.matches("caches synced").count() as u32;
                    if synced >= expected {
                        Ok(())
                    } else {
                        Err(last_lines(&log, 20))
                    }
                }
            },
        )
        .await;
    }

    /// The process id of the current start (for reading its memory and CPU in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (it has not exited, e.g. by a panic).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| !process::has_exited(child))
    }

    /// Sends SIGTERM (Kubernetes stopping the Pod) without waiting.
    pub fn sigterm(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit; returns how long that took, or None after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<Duration> {
        let started = std::time::Instant::now();
        while started.elapsed() < timeout {
            if let Some(child) = self.child.as_mut()
                && process::has_exited(child)
            {
                self.child = None;
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The address the HTTP server of the current start listens on, once it has logged it.
    pub async fn wait_http_addr(&self) -> SocketAddr {
        wait_until(
            "the operator to log its HTTP address",
            Duration::from_secs(30),
            || async { self.http_addr().ok_or_else(|| last_lines(&self.log(), 15)) },
        )
        .await
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop(&mut child, Duration::ZERO);
        }
    }

    /// Stops the process gracefully (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop(&mut child, Duration::from_secs(10));
        }
    }

    /// Starts the process again with the same options (after `kill` or `stop`).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Starts the process again with changed options (e.g. another setting after a kill).
    pub async fn restart_with(&mut self, change: impl FnOnce(OperatorOptions) -> OperatorOptions) {
        self.kill();
        self.options = change(self.options.clone());
        self.spawn().await;
    }

    /// The complete output of every start so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The address the HTTP server of the current start listens on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        let log = self.log();
        // Works for text and JSON lines: the address is the run of address characters.
        log.lines()
            .rev()
            .find_map(|line| line.split("http server listening on ").nth(1))
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
                    .collect::<String>()
            })
            .and_then(|addr| addr.parse().ok())
    }

    /// Waits until the log contains `needle` (counting every start).
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let path = self.log_path.clone();
        wait_until(&format!("the operator to log {needle:?}"), timeout, || {
            let path = path.clone();
            async move {
                let log = fs::read_to_string(&path).unwrap_or_default();
                if log.contains(needle) {
                    Ok(())
                } else {
                    Err(last_lines(&log, 10))
                }
            }
        })
        .await;
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        // LEAF_TEST_KEEP_LOGS=DIR keeps a copy of every operator log for debugging.
        if let Ok(dir) = std::env::var("LEAF_TEST_KEEP_LOGS") {
            let _ = fs::create_dir_all(&dir);
            let name = self
                .run_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = fs::copy(&self.log_path, Path::new(&dir).join(format!("{name}.log")));
        }
        if std::thread::panicking() {
            eprintln!(
                "--- operator log ({}) ---\n{}",
                self.log_path.display(),
                last_lines(&self.log(), 80)
            );
        }
    }
}

// --- helpers for the controller tests ---------------------------------------------------------

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use leaf_operator::crd::{TrimbleConnection, TrimbleConnectionStatus};
use leaf_standin::{StandIn, StandInConfig};

/// Username and password of the stand-in account the operator uses by default.
pub const LEAF_USERNAME: &str = "operator@example.com";
pub const LEAF_PASSWORD: &str = "leaf-password-PLANTED-7f3a";

/// One test's world: a namespace, a Leaf stand-in and an operator watching only that namespace.
pub struct Fixture {
    pub namespace: String,
    pub client: kube::Client,
    pub standin: StandIn,
    pub operator: Operator,
    pub tcs: Api<TrimbleConnection>,
    pub secrets: Api<Secret>,
}

impl Fixture {
    /// Starts everything with the default options (stand-in users are created on first use).
    pub async fn start(prefix: &str) -> Fixture {
        Self::start_with(prefix, StandInConfig::default(), |options| options).await
    }

    pub async fn start_with(
        prefix: &str,
        standin_config: StandInConfig,
        options: impl FnOnce(OperatorOptions) -> OperatorOptions,
    ) -> Fixture {
        let control_plane = super::control_plane().await;
        control_plane.install_crd().await;
        let namespace = control_plane.create_namespace(prefix).await;
        Self::start_in(namespace, standin_config, options).await
    }

    /// Like [`Fixture::start_with`], in a namespace the test created (and prepared) itself.
    pub async fn start_in(
        namespace: String,
        standin_config: StandInConfig,
        options: impl FnOnce(OperatorOptions) -> OperatorOptions,
    ) -> Fixture {
        let control_plane = super::control_plane().await;
        control_plane.install_crd().await;
        let mut standin_config = standin_config.with_account(LEAF_USERNAME, LEAF_PASSWORD);
        standin_config.auto_create_users = true;
        let standin = StandIn::start(standin_config).await;
        let options = options(
            OperatorOptions::new(&namespace, &standin.origin())
                .account(LEAF_USERNAME, LEAF_PASSWORD),
        );
        let operator = Operator::start(control_plane, options).await;
        let client = control_plane.client();
        Fixture {
            tcs: Api::namespaced(client.clone(), &namespace),
            secrets: Api::namespaced(client.clone(), &namespace),
            client,
            namespace,
            standin,
            operator,
        }
    }

    /// Creates or replaces a Secret with these string values.
    pub async fn put_secret(&self, name: &str, values: &[(&str, &str)]) {
        let secret = super::objects::secret(name, values);
        match self.secrets.get_opt(name).await.expect("read secret") {
            Some(existing) => {
                let mut replacement = secret;
                replacement.metadata.resource_version = existing.metadata.resource_version;
                self.secrets
                    .replace(name, &PostParams::default(), &replacement)
                    .await
                    .expect("replace secret");
            }
            None => {
                self.secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .expect("create secret");
            }
        }
    }

    /// The usual credentials Secret.
    pub async fn put_credentials(
        &self,
        name: &str,
        client_id: &str,
        client_secret: &str,
        refresh_token: &str,
    ) {
        self.put_secret(
            name,
            &[
                ("clientId", client_id),
                ("clientSecret", client_secret),
                ("refreshToken", refresh_token),
            ],
        )
        .await;
    }

    /// The usual credentials as Secret `creds`: client-a / secret-a / refresh-a.
    pub async fn put_default_credentials(&self) {
        self.put_credentials("creds", "client-a", "secret-a", "refresh-a")
            .await;
    }

    /// The common starting point: the default `creds` Secret, then TrimbleConnection `farm` for
    /// `user` referring to it (in that order, so the first reconcile already sees the Secret).
    pub async fn create_farm_with_default_credentials(&self, user: &str) -> TrimbleConnection {
        self.put_default_credentials().await;
        self.create_tc("farm", user, "creds", serde_json::json!({}))
            .await
    }

    /// [`Fixture::create_farm_with_default_credentials`], then waits until `farm` is Ready with a
    /// credential of its own; returns that credential's id.
    pub async fn ready_farm(&self, user: &str, timeout: Duration) -> String {
        self.create_farm_with_default_credentials(user).await;
        let tc = self.wait_reason("farm", "CredentialValid", timeout).await;
        tc.status
            .and_then(|s| s.credential_id)
            .expect("a credential id")
    }

    /// Creates a TrimbleConnection; `extra` is merged into its spec.
    pub async fn create_tc(
        &self,
        name: &str,
        user: &str,
        secret: &str,
        extra: serde_json::Value,
    ) -> TrimbleConnection {
        let tc = super::objects::trimble_connection(name, user, secret, extra);
        self.tcs
            .create(&PostParams::default(), &tc)
            .await
            .expect("create TrimbleConnection")
    }

    /// Merge-patches the spec.
    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.tcs
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": spec})),
            )
            .await
            .expect("patch spec");
    }

    pub async fn annotate(&self, name: &str, key: &str, value: &str) {
        self.tcs
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .expect("annotate");
    }

    /// Asks for a reconcile now (a new `withleaf.io/reconcile-requested-at` value); returns it.
    pub async fn poke(&self, name: &str) -> String {
        let value = format!("poke-{}", jiff::Timestamp::now().as_nanosecond());
        self.annotate(name, "withleaf.io/reconcile-requested-at", &value)
            .await;
        value
    }

    /// Pokes `name` and waits until a reconcile has answered it (`lastHandledReconcileAt`).
    pub async fn poke_and_wait(&self, name: &str, timeout: Duration) -> TrimbleConnection {
        let value = self.poke(name).await;
        self.wait_until_status(name, timeout, |s| {
            s.last_handled_reconcile_at.as_deref() == Some(value.as_str())
        })
        .await
    }

    pub async fn delete_tc(&self, name: &str) {
        self.tcs
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete TrimbleConnection");
    }

    pub async fn get(&self, name: &str) -> TrimbleConnection {
        self.tcs.get(name).await.expect("get TrimbleConnection")
    }

    /// Waits until the object is gone.
    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        let tcs = self.tcs.clone();
        wait_until(&format!("{name} to be deleted"), timeout, || {
            let tcs = tcs.clone();
            async move {
                match tcs.get_opt(name).await.map_err(|e| e.to_string())? {
                    None => Ok(()),
                    Some(tc) => Err(describe(&tc)),
                }
            }
        })
        .await
    }

    /// Waits until Ready has `reason` for the current generation; returns the object.
    pub async fn wait_reason(
        &self,
        name: &str,
        reason: &str,
        timeout: Duration,
    ) -> TrimbleConnection {
        let tcs = self.tcs.clone();
        wait_until(
            &format!("{name} to have Ready reason {reason}"),
            timeout,
            || {
                let tcs = tcs.clone();
                async move {
                    let tc = tcs.get(name).await.map_err(|e| e.to_string())?;
                    let status = tc.status.clone().unwrap_or_default();
                    let ready = condition(&status, "Ready");
                    let current = ready.is_some_and(|c| c.reason == reason)
                        && status.observed_generation == tc.metadata.generation;
                    if current { Ok(tc) } else { Err(describe(&tc)) }
                }
            },
        )
        .await
    }

    /// Waits until the status satisfies `check`; returns the object.
    pub async fn wait_until_status(
        &self,
        name: &str,
        timeout: Duration,
        check: impl Fn(&TrimbleConnectionStatus) -> bool,
    ) -> TrimbleConnection {
        let check = &check;
        wait_until(&format!("the status of {name}"), timeout, || async move {
            let tc = self.tcs.get(name).await.map_err(|e| e.to_string())?;
            if check(&tc.status.clone().unwrap_or_default()) {
                Ok(tc)
            } else {
                Err(describe(&tc))
            }
        })
        .await
    }

    /// The Kubernetes Events about `name`, oldest first: (type, reason, note).
    pub async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut events: Vec<KubeEvent> = api
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        events
            .into_iter()
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Reasons of the Events about `name`, oldest first.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        self.events(name)
            .await
            .into_iter()
            .map(|(_, reason, _)| reason)
            .collect()
    }

    /// Waits until an Event with `reason` exists for `name`; returns (type, note).
    pub async fn wait_event(
        &self,
        name: &str,
        reason: &str,
        timeout: Duration,
    ) -> (String, String) {
        wait_until(
            &format!("an Event {reason} about {name}"),
            timeout,
            || async {
                let events = self.events(name).await;
                events
                    .iter()
                    .find(|(_, r, _)| r == reason)
                    .map(|(t, _, n)| (t.clone(), n.clone()))
                    .ok_or_else(|| format!("{events:?}"))
            },
        )
        .await
    }

    /// The Leaf calls made for `user`, in order: "GET", "POST", "DELETE", "GET events", each
    /// with the answer's status, e.g. "POST 201".
    pub fn leaf_calls(&self, user: &str) -> Vec<String> {
        let marker = format!("/users/{user}/trimble-credentials");
        self.standin
            .requests()
            .into_iter()
            .filter(|r| r.path.contains(&marker))
            .map(|r| {
                let what = if r.path.ends_with("/events") {
                    format!("{} events", r.method)
                } else {
                    r.method.clone()
                };
                match r.status {
                    Some(status) => format!("{what} {status}"),
                    None => format!("{what} dropped"),
                }
            })
            .collect()
    }

    /// Calls of one kind ("POST", "DELETE", "GET", "GET events") for `user`.
    pub fn count_calls(&self, user: &str, what: &str) -> usize {
        self.leaf_calls(user)
            .iter()
            .filter(|call| call.rsplit_once(' ').map(|(w, _)| w) == Some(what))
            .count()
    }
}

/// A condition of a status by type.
pub fn condition<'a>(
    status: &'a TrimbleConnectionStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// The `secretFingerprint` the operator records for [`Fixture::put_default_credentials`].
pub fn default_credentials_fingerprint() -> String {
    leaf_operator::secret::fingerprint("client-a", "secret-a", "refresh-a")
}

/// Asserts that `calls` (from [`Fixture::leaf_calls`]) hold exactly one DELETE and exactly one
/// POST: a rotation that neither repeated nor skipped a step.
pub fn assert_one_delete_and_one_post(calls: &[String]) {
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("DELETE")).count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("POST")).count(),
        1,
        "{calls:?}"
    );
}

/// (type, status, reason) of every condition.
pub fn conditions(tc: &TrimbleConnection) -> Vec<(String, String, String)> {
    tc.status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A one-line description of an object's state for failure messages.
pub fn describe(tc: &TrimbleConnection) -> String {
    let status = tc.status.clone().unwrap_or_default();
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .map(|c| format!("{}={} {} ({})", c.type_, c.status, c.reason, c.message))
        .collect();
    format!(
        "generation {:?} observed {:?}; conditions [{}]; credentialId {:?}; credentialStatus {:?}; pendingCreate {:?}",
        tc.metadata.generation,
        status.observed_generation,
        conditions.join("; "),
        status.credential_id,
        status.credential_status,
        status.pending_create
    )
}
