//! A real etcd + kube-apiserver for the tests of one test binary, started on first use.
//!
//! The binaries come from `scripts/test-tools.sh`, which builds them from their Go modules the first
//! time (minutes) and caches them outside the checkout. The processes listen on free loopback
//! ports, are configured like controller-runtime's envtest (RBAC, ServiceAccount token signing,
//! an admin token in `system:masters`) and die with the test binary (see `process.rs`).
//!
//! A binary that runs a node (`support::node`) asks for it before the first start
//! ([`serve_node_at`]): the API server then listens on the node bridge's address (Pods reach it
//! there through the `kubernetes` Service), reconciles that Service's endpoint, and keeps the
//! ServiceAccount admission that mounts each Pod's token.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::sync::OnceCell;

use super::certs::{self, Certs};
use super::process;
use super::wait::wait_until;

/// How long the API server may take to report `/readyz` (2 busy cores need 10 to 30 s).
const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(90);
const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The admin identity's bearer token; only ever valid on a loopback test server.
const ADMIN_TOKEN: &str = "leaf-operator-test-admin-token";
/// Field manager for what the test harness applies (the CRD).
const HARNESS_MANAGER: &str = "leaf-operator-tests";

/// Set by [`super::node::node`] before the control plane starts: the API server then serves the
/// node (see [`ControlPlane::configure`]).
static NODE_PROFILE: std::sync::OnceLock<std::net::Ipv4Addr> = std::sync::OnceLock::new();
/// Whether this binary's control plane has started (a node cannot be added to it afterwards).
static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks for a control plane that a node can join, serving on `address` (the node bridge's).
/// Fails when the control plane of this binary already started without it.
pub fn serve_node_at(address: std::net::Ipv4Addr) -> Result<(), String> {
    if STARTED.load(Ordering::SeqCst) && NODE_PROFILE.get() != Some(&address) {
        return Err(
            "the control plane started before support::node(): call node() first in every test"
                .to_string(),
        );
    }
    let _ = NODE_PROFILE.set(address);
    Ok(())
}

/// The repository root (where `Cargo.toml`, `crds/` and `scripts/` are).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The control plane of this test binary, started on first call and shared by all its tests.
///
/// Panics (failing the calling test) with the reason when it cannot be started: Go missing, a
/// build failure, or a server that does not become ready (its log is included).
pub async fn control_plane() -> &'static ControlPlane {
    static CONTROL_PLANE: OnceCell<Result<ControlPlane, String>> = OnceCell::const_new();
    // A failure is kept too: every test of the binary then fails fast with the same message
    // instead of each retrying a start that takes minutes to fail.
    match CONTROL_PLANE.get_or_init(ControlPlane::start).await {
        Ok(control_plane) => control_plane,
        Err(message) => panic!("the test control plane is not available:\n{message}"),
    }
}

/// Builds (once, cached) the control-plane binaries and returns their directory.
pub fn tool_bin_dir() -> Result<PathBuf, String> {
    cached_build_dir("scripts/test-tools.sh")
}

/// Runs a build script of the repository that builds once and caches (`scripts/test-tools.sh`,
/// `scripts/peer-tools.sh`) and returns the directory it prints on its last line of stdout.
///
/// The script's progress goes straight to the terminal (a cold build takes minutes and should
/// say so); its output is also kept for the failure message.
pub fn cached_build_dir(script: &str) -> Result<PathBuf, String> {
    let script = repo_root().join(script);
    let mut child = Command::new(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("failed to run {}: {e}", script.display()))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let echo = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Written to the real stderr, not through the test harness's capture: a first build
            // takes minutes and the user should see why the test is slow.
            let _ = writeln!(std::io::stderr(), "{line}");
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut stdout)
        .ok();
    let status = child
        .wait()
        .map_err(|e| format!("failed to wait for {}: {e}", script.display()))?;
    let stderr = echo.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("{} failed ({status}):\n{stderr}", script.display()));
    }
    let dir = stdout.lines().last().map(str::trim).unwrap_or_default();
    if dir.is_empty() {
        return Err(format!(
            "{} printed no directory:\n{stderr}",
            script.display()
        ));
    }
    Ok(PathBuf::from(dir))
}

/// One of the two server processes, with the command line to start it again identically.
struct Server {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Server {
    fn spawn(&self, run_dir: &Path) -> Result<(), String> {
        let mut guard = self.child.lock().unwrap();
        if let Some(child) = guard.as_mut()
            && !process::has_exited(child)
        {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("failed to open {}: {e}", self.log.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("failed to clone log handle: {e}"))?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = process::spawn_tied(command, run_dir)
            .map_err(|e| format!("failed to start {}: {e}", self.program.display()))?;
        *guard = Some(child);
        Ok(())
    }

    fn stop(&self, grace: Duration) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            process::stop(&mut child, grace);
        }
    }

    fn exited(&self) -> bool {
        self.child
            .lock()
            .unwrap()
            .as_mut()
            .is_none_or(process::has_exited)
    }

    /// The end of the log, for failure messages.
    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- last {} lines of {} ({}) ---\n{}",
            all.len() - start,
            self.name,
            self.log.display(),
            all[start..].join("\n")
        )
    }

    fn port_conflict(&self) -> bool {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains("address already in use")
    }
}

/// A running etcd + kube-apiserver pair and what clients need to reach it.
pub struct ControlPlane {
    bin_dir: PathBuf,
    run_dir: PathBuf,
    kubeconfig_path: PathBuf,
    server_url: String,
    ca_pem: Vec<u8>,
    config: kube::Config,
    etcd: Server,
    etcd_url: String,
    apiserver: Server,
    started_in: Duration,
}

/// Picks `count` distinct free loopback ports (held open together so they differ).
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("failed to find a free loopback port: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("failed to read a port: {e}"))
}

fn http_client(ca_pem: &[u8]) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem).expect("the generated CA is valid PEM");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("failed to build an HTTP client")
}

impl ControlPlane {
    async fn start() -> Result<ControlPlane, String> {
        STARTED.store(true, Ordering::SeqCst);
        let began = Instant::now();
        let bin_dir = tool_bin_dir()?;
        let run_dir = process::create_run_dir()
            .map_err(|e| format!("failed to create the run directory: {e}"))?;
        let certs = certs::generate(&run_dir)?;
        let ca_pem = fs::read(&certs.ca_cert).map_err(|e| format!("failed to read the CA: {e}"))?;
        let token_file = run_dir.join("tokens.csv");
        fs::write(&token_file, format!("{ADMIN_TOKEN},leaf-operator-test-admin,leaf-operator-test-admin,\"system:masters\"\n"))
            .map_err(|e| format!("failed to write {}: {e}", token_file.display()))?;

        // Another test binary may grab a port between our check and the server's bind: then
        // the server exits with "address already in use" and we try other ports.
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let ports = free_ports(3)?;
            let control_plane =
                ControlPlane::configure(&bin_dir, &run_dir, &certs, &token_file, &ca_pem, &ports)?;
            match control_plane.boot().await {
                Ok(()) => {
                    let mut control_plane = control_plane;
                    control_plane.started_in = began.elapsed();
                    eprintln!(
                        "test control plane ready at {} in {:.1?} (run directory {})",
                        control_plane.server_url,
                        control_plane.started_in,
                        run_dir.display()
                    );
                    return Ok(control_plane);
                }
                Err(error) => {
                    let conflict = control_plane.etcd.port_conflict()
                        || control_plane.apiserver.port_conflict();
                    control_plane.apiserver.stop(Duration::ZERO);
                    control_plane.etcd.stop(Duration::ZERO);
                    if !conflict {
                        return Err(error);
                    }
                    last_error = error;
                    for log in [&control_plane.etcd.log, &control_plane.apiserver.log] {
                        let _ = fs::remove_file(log);
                    }
                    let _ = fs::remove_dir_all(run_dir.join("etcd-data"));
                }
            }
        }
        Err(last_error)
    }

    fn configure(
        bin_dir: &Path,
        run_dir: &Path,
        certs: &Certs,
        token_file: &Path,
        ca_pem: &[u8],
        ports: &[u16],
    ) -> Result<ControlPlane, String> {
        let (etcd_port, peer_port, apiserver_port) = (ports[0], ports[1], ports[2]);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        // With a node, the API server listens on the node bridge's address: Pods reach it there
        // (through the `kubernetes` Service), and so does everything on the host.
        let host = NODE_PROFILE
            .get()
            .map_or("127.0.0.1".to_string(), |a| a.to_string());
        let server_url = format!("https://{host}:{apiserver_port}");
        let path = |p: &Path| p.display().to_string();

        let etcd_args = vec![
            "--name=default".to_string(),
            format!("--data-dir={}", path(&run_dir.join("etcd-data"))),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            // Tests need no durability across machine crashes; fsync would dominate on a small VM.
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ];
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={host}"),
            format!("--advertise-address={host}"),
            format!("--secure-port={apiserver_port}"),
            format!("--tls-cert-file={}", path(&certs.serving_cert)),
            format!("--tls-private-key-file={}", path(&certs.serving_key)),
            format!("--client-ca-file={}", path(&certs.ca_cert)),
            format!("--token-auth-file={}", path(token_file)),
            "--authorization-mode=RBAC".to_string(),
            "--service-cluster-ip-range=10.0.0.0/24".to_string(),
            format!("--service-account-issuer={server_url}/"),
            format!(
                "--service-account-key-file={}",
                path(&certs.service_account_pub)
            ),
            format!(
                "--service-account-signing-key-file={}",
                path(&certs.service_account_key)
            ),
            "--allow-privileged=true".to_string(),
        ];
        if NODE_PROFILE.get().is_none() {
            apiserver_args.extend([
                // No controller-manager runs, so nothing would create the ServiceAccount's token.
                "--disable-admission-plugins=ServiceAccount".to_string(),
                // Without it the server keeps logging that 127.0.0.1 is not a valid endpoint
                // address.
                "--endpoint-reconciler-type=none".to_string(),
            ]);
        }
        // With a node, the ServiceAccount admission stays on (it mounts each Pod's projected
        // token; kube-controller-manager creates the `default` ServiceAccounts) and the
        // `kubernetes` Service's endpoint is this address, which kube-proxy routes Pods to.

        let kubeconfig_path = run_dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig_path, &server_url, ca_pem, ADMIN_TOKEN)?;
        let config = kube_config(&server_url, ca_pem, ADMIN_TOKEN);

        Ok(ControlPlane {
            bin_dir: bin_dir.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
            kubeconfig_path,
            server_url,
            ca_pem: ca_pem.to_vec(),
            config,
            etcd: Server {
                name: "etcd",
                program: bin_dir.join("etcd"),
                args: etcd_args,
                log: run_dir.join("etcd.log"),
                child: Mutex::new(None),
            },
            etcd_url,
            apiserver: Server {
                name: "kube-apiserver",
                program: bin_dir.join("kube-apiserver"),
                args: apiserver_args,
                log: run_dir.join("kube-apiserver.log"),
                child: Mutex::new(None),
            },
            started_in: Duration::ZERO,
        })
    }

    async fn boot(&self) -> Result<(), String> {
        self.start_etcd().await?;
        self.start_apiserver().await
    }

    /// Starts etcd (same ports, same data directory) if it is not running; waits for `/health`.
    pub async fn start_etcd(&self) -> Result<(), String> {
        self.etcd.spawn(&self.run_dir)?;
        let http = reqwest::Client::new();
        let url = format!("{}/health", self.etcd_url);
        self.wait_ready(&self.etcd, ETCD_READY_TIMEOUT, || {
            let request = http.get(&url);
            async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await
    }

    /// Starts kube-apiserver if it is not running; waits until `/readyz` answers 200.
    pub async fn start_apiserver(&self) -> Result<(), String> {
        self.apiserver.spawn(&self.run_dir)?;
        let http = http_client(&self.ca_pem);
        let url = format!("{}/readyz", self.server_url);
        self.wait_ready(&self.apiserver, APISERVER_READY_TIMEOUT, || {
            let request = http.get(&url).bearer_auth(ADMIN_TOKEN);
            async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await
    }

    async fn wait_ready<F, Fut>(
        &self,
        server: &Server,
        timeout: Duration,
        mut ready: F,
    ) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if ready().await {
                return Ok(());
            }
            if server.exited() {
                return Err(format!(
                    "{} exited while starting\n{}",
                    server.name,
                    server.log_tail(80)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} was not ready after {timeout:?}\n{}",
                    server.name,
                    server.log_tail(80)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops kube-apiserver (SIGTERM, SIGKILL after 5 s). Clients see connection errors until
    /// [`Self::start_apiserver`].
    pub fn stop_apiserver(&self) {
        self.apiserver.stop(Duration::from_secs(5));
    }

    /// Stops etcd (SIGTERM, SIGKILL after 5 s); its data directory is kept.
    pub fn stop_etcd(&self) {
        self.etcd.stop(Duration::from_secs(5));
    }

    /// Kills kube-apiserver abruptly (SIGKILL), as a crash would.
    pub fn kill_apiserver(&self) {
        self.apiserver.stop(Duration::ZERO);
    }

    /// Stops and starts kube-apiserver on the same port; returns once `/readyz` is 200 again.
    pub async fn restart_apiserver(&self) {
        self.stop_apiserver();
        self.start_apiserver()
            .await
            .unwrap_or_else(|e| panic!("failed to restart kube-apiserver: {e}"));
    }

    /// Stops and starts etcd with the same data; returns once etcd and the API server are ready.
    pub async fn restart_etcd(&self) {
        self.stop_etcd();
        self.start_etcd()
            .await
            .unwrap_or_else(|e| panic!("failed to restart etcd: {e}"));
        self.start_apiserver()
            .await
            .unwrap_or_else(|e| panic!("kube-apiserver did not recover after etcd restarted: {e}"));
    }

    /// A new admin client. Build one per test: a `kube::Client` is bound to the tokio runtime
    /// that created it, and each `#[tokio::test]` has its own runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config.clone()).expect("failed to build the admin kube client")
    }

    /// A client authenticated with `token` (for example a ServiceAccount token, to test RBAC).
    pub fn client_with_token(&self, token: &str) -> kube::Client {
        let config = kube_config(&self.server_url, &self.ca_pem, token);
        kube::Client::try_from(config).expect("failed to build a token kube client")
    }

    /// The admin client configuration (for code that wants a `kube::Config`).
    pub fn config(&self) -> kube::Config {
        self.config.clone()
    }

    /// A kubeconfig file with admin rights, for kubectl, helm and the operator process.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Writes a kubeconfig that authenticates with `token` (for example to run the operator as
    /// its ServiceAccount) and returns its path.
    pub fn kubeconfig_for_token(&self, name: &str, token: &str) -> PathBuf {
        let path = self.run_dir.join(format!("kubeconfig-{name}"));
        write_kubeconfig(&path, &self.server_url, &self.ca_pem, token)
            .unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// PEM of the CA that signed the API server's certificate.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// Directory with `kubectl`, `helm`, `etcd` and `kube-apiserver`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// This binary's temp directory (logs, etcd data, kubeconfig); removed at exit unless
    /// `LEAF_TEST_KEEP=1`.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The API server's log file (print it when a test needs to explain a failure).
    pub fn apiserver_log_path(&self) -> &Path {
        &self.apiserver.log
    }

    /// How long the first start took (tool check, certificates, etcd and API server ready).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Environment for kubectl and helm: this control plane and private cache directories.
    fn tool_command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(tool));
        command
            .env("KUBECONFIG", &self.kubeconfig_path)
            // Per-run discovery cache: ports are reused across runs with different CRDs.
            .env("KUBECACHEDIR", self.run_dir.join("kube-cache"))
            .env("HELM_CACHE_HOME", self.run_dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.run_dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.run_dir.join("helm/data"))
            .stdin(Stdio::null());
        command
    }

    /// Runs kubectl against this control plane and returns its output (whatever the exit code).
    ///
    /// It blocks the calling thread: in a `#[tokio::test]` (one thread) that also serves
    /// something in-process the kubectl call waits for, use [`Self::kubectl_async`].
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.tool_command("kubectl")
            .args(args)
            .output()
            .expect("failed to run kubectl")
    }

    /// Runs kubectl with `stdin` as its standard input (e.g. `kubectl apply -f -`).
    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        run_with_stdin(self.tool_command("kubectl"), args, stdin)
    }

    /// Runs kubectl without blocking the async runtime.
    pub async fn kubectl_async(&self, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::from(self.tool_command("kubectl"));
        command.args(args).kill_on_drop(true);
        command.output().await.expect("failed to run kubectl")
    }

    /// Runs helm against this control plane (private helm home directories).
    pub fn helm(&self, args: &[&str]) -> Output {
        self.tool_command("helm")
            .args(args)
            .output()
            .expect("failed to run helm")
    }

    /// Creates a namespace named `<prefix>-<unique suffix>` and returns its name.
    pub async fn create_namespace(&self, prefix: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let random: u32 = rand::random::<u32>() % 46_656; // three base-36 digits
        let suffix = format!("{}{}", base36(n), base36(random));
        let prefix: String = prefix
            .chars()
            .take(50)
            .collect::<String>()
            .trim_end_matches('-')
            .to_string();
        let name = format!("{prefix}-{suffix}");
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    [(
                        "leaf-operator.test/created-by".to_string(),
                        "tests".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("failed to create namespace {name}: {e}"));
        name
    }

    /// Applies `crds/trimbleconnections.yaml` (server-side apply, idempotent) and waits until the
    /// CRD is Established. `LEAF_TEST_CRD_FILE` overrides the file.
    pub async fn install_crd(&self) {
        // LEAF_TEST_CRD_FILE lets a mutation check install a deliberately weakened CRD.
        let path = std::env::var_os("LEAF_TEST_CRD_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("crds/trimbleconnections.yaml"));
        let yaml = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()));
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml)
            .unwrap_or_else(|e| panic!("{} is not a CRD: {e}", path.display()));
        let name = crd.metadata.name.clone().expect("the CRD has a name");
        let api = Api::<CustomResourceDefinition>::all(self.client());
        api.patch(
            &name,
            &PatchParams::apply(HARNESS_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("failed to apply {}: {e}", path.display()));
        wait_until(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || async {
                let crd = api.get(&name).await.map_err(|e| e.to_string())?;
                let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                let established = conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    Ok(())
                } else {
                    Err(format!("conditions {conditions:?}"))
                }
            },
        )
        .await;
        // Established comes before discovery and the OpenAPI document show the new resource;
        // kubectl (get, wait, explain, apply) needs both.
        let group_version = format!("{}/{}", crd.spec.group, crd.spec.versions[0].name);
        let plural = crd.spec.names.plural.clone();
        let client = self.client();
        let http = http_client(&self.ca_pem);
        let openapi_path = format!("apis/{group_version}");
        wait_until(
            &format!("{plural}.{group_version} to appear in discovery and OpenAPI"),
            Duration::from_secs(30),
            || async {
                let resources = client
                    .list_api_group_resources(&group_version)
                    .await
                    .map_err(|e| format!("discovery: {e}"))?;
                if !resources.resources.iter().any(|r| r.name == plural) {
                    return Err("discovery does not list it yet".to_string());
                }
                let openapi = http
                    .get(format!("{}/openapi/v3", self.server_url))
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .map_err(|e| format!("GET /openapi/v3: {e}"))?
                    .text()
                    .await
                    .map_err(|e| format!("GET /openapi/v3: {e}"))?;
                if openapi.contains(&openapi_path) {
                    Ok(())
                } else {
                    Err(format!("/openapi/v3 does not list {openapi_path} yet"))
                }
            },
        )
        .await;
    }

    /// [`Self::install_crd`] unless the CRD exists already (for example installed by a chart that
    /// another test of the binary installed: re-applying it would take its fields away from
    /// Helm).
    pub async fn install_crd_if_missing(&self) {
        let api = Api::<CustomResourceDefinition>::all(self.client());
        if api
            .get_opt("trimbleconnections.withleaf.io")
            .await
            .ok()
            .flatten()
            .is_none()
        {
            self.install_crd().await;
        }
    }

    /// A real ServiceAccount token from the TokenRequest API (valid one hour).
    pub async fn service_account_token(&self, namespace: &str, service_account: &str) -> String {
        let api = Api::<ServiceAccount>::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let response = api
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| {
                panic!("TokenRequest for {namespace}/{service_account} failed: {e}")
            });
        response
            .status
            .expect("a TokenRequest response has a status")
            .token
    }
}

fn run_with_stdin(mut command: Command, args: &[&str], stdin: &str) -> Output {
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to run the command");
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_string();
    // Written from another thread so a child that fills its stdout first cannot deadlock us.
    let writer = std::thread::spawn(move || input.write_all(data.as_bytes()));
    let output = child
        .wait_with_output()
        .expect("failed to wait for the command");
    let _ = writer.join();
    output
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &[u8],
    token: &str,
) -> Result<(), String> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: leaf-operator-test
  cluster:
    server: {server_url}
    certificate-authority-data: {ca}
users:
- name: leaf-operator-test
  user:
    token: {token}
contexts:
- name: leaf-operator-test
  context:
    cluster: leaf-operator-test
    user: leaf-operator-test
    namespace: default
current-context: leaf-operator-test
"
    );
    fs::write(path, text).map_err(|e| format!("failed to write {}: {e}", path.display()))
}

fn kube_config(server_url: &str, ca_pem: &[u8], token: &str) -> kube::Config {
    let mut config = kube::Config::new(server_url.parse().expect("the server URL is a valid URI"));
    config.root_cert = Some(pem_to_der(ca_pem));
    config.auth_info.token = Some(token.to_string().into());
    config.default_namespace = "default".to_string();
    config
}

/// The DER bodies of the certificates in a PEM bundle (what `kube::Config::root_cert` holds).
fn pem_to_der(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let mut certs = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            body = Some(String::new());
        } else if line.starts_with("-----END CERTIFICATE-----") {
            if let Some(b64) = body.take() {
                certs.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .expect("valid PEM base64"),
                );
            }
        } else if let Some(b64) = body.as_mut() {
            b64.push_str(line);
        }
    }
    certs
}
