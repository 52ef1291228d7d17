//! A local OCI registry for the tests: go-containerregistry's `crane registry serve`, built once
//! from its Go module (`scripts/go-tool.sh crane`). Nothing here can reach a real registry, yet the
//! release path (`scripts/release.sh`) and a node pulling by digest need one.
//!
//! One registry per test binary, started on first use and shared by its tests (they use their own
//! repository names): plain HTTP on a free loopback port, blobs on disk in the run directory
//! (`--disk`; manifests stay in the process's memory). It dies with the test binary like the
//! control plane (`process.rs`: parent-death signal, exit handler, stale-run cleanup, whose check
//! that a recorded pid is ours finds the run directory in crane's command line).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::go_tools::go_tool;
use super::image::build_image;
use super::process;

/// crane answers `/v2/` within a second once it runs; this is room for a busy machine.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `crane registry serve`.
pub struct Registry {
    address: String,
    crane: PathBuf,
    run_dir: PathBuf,
    log: PathBuf,
    child: Mutex<Child>,
}

/// The registry of this test binary, started on first call and shared by all its tests. Panics
/// (failing the calling test) with crane's log when it cannot be started.
pub async fn shared_registry() -> &'static Registry {
    static REGISTRY: OnceCell<Result<Registry, String>> = OnceCell::const_new();
    // A failure is kept too: every test of the binary then fails fast with the same message.
    match REGISTRY.get_or_init(Registry::start).await {
        Ok(registry) => registry,
        Err(message) => panic!("the test registry is not available:\n{message}"),
    }
}

impl Registry {
    async fn start() -> Result<Registry, String> {
        let crane = go_tool("crane");
        let run_dir = process::create_run_dir()
            .map_err(|e| format!("failed to create the run directory: {e}"))?;
        let blobs = run_dir.join("registry-blobs");
        // crane answers 500 to every blob upload when the directory does not exist.
        fs::create_dir_all(&blobs).map_err(|e| format!("failed to create {blobs:?}: {e}"))?;
        let mut last_error = String::new();
        // Another process may take the port between our check and crane's bind: try again.
        for attempt in 0..3 {
            let port = free_port()?;
            let address = format!("127.0.0.1:{port}");
            let log = run_dir.join(format!("registry-{attempt}.log"));
            let child = spawn(&crane, &address, &blobs, &log, &run_dir)?;
            let registry = Registry {
                address,
                crane: crane.clone(),
                run_dir: run_dir.clone(),
                log,
                child: Mutex::new(child),
            };
            match registry.wait_ready().await {
                Ok(()) => return Ok(registry),
                Err(error) => {
                    process::stop(&mut registry.child.lock().unwrap(), Duration::ZERO);
                    if !registry.log_text().contains("address already in use") {
                        return Err(error);
                    }
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    /// Waits until `GET /v2/` answers 200 (the registry API's version check).
    async fn wait_ready(&self) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("failed to build an HTTP client: {e}"))?;
        let url = format!("http://{}/v2/", self.address);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if process::has_exited(&mut self.child.lock().unwrap()) {
                return Err(format!("crane registry serve exited:\n{}", self.log_text()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "crane registry serve did not answer {url} within {READY_TIMEOUT:?}:\n{}",
                    self.log_text()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `127.0.0.1:PORT`, to prefix repositories with (`127.0.0.1:PORT/leaf-operator:tag`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The crane binary, for reading what was pushed (`crane manifest`, `crane config`, ...).
    pub fn crane_path(&self) -> &Path {
        &self.crane
    }

    /// Runs `crane ARGS...` (plain HTTP allowed) and returns its stdout; panics with its stderr
    /// when it fails.
    pub fn crane(&self, args: &[&str]) -> String {
        let output = Command::new(&self.crane)
            .args(args)
            .arg("--insecure")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("failed to run {}: {e}", self.crane.display()));
        assert!(
            output.status.success(),
            "crane {args:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Pushes `image` from buildah's local storage to `REGISTRY/repository:tag` and returns the
    /// reference by digest, `127.0.0.1:PORT/repository@sha256:...`.
    pub fn push_image(&self, image: &str, repository: &str, tag: &str) -> String {
        let digest_file = tempfile::NamedTempFile::new().expect("a temp file for the digest");
        let destination = format!("docker://{}/{repository}:{tag}", self.address);
        let output = Command::new("buildah")
            .args(["push", "--quiet", "--tls-verify=false", "--digestfile"])
            .arg(digest_file.path())
            .args([image, &destination])
            .stdin(Stdio::null())
            .output()
            .expect("failed to run buildah (apt-get install buildah)");
        assert!(
            output.status.success(),
            "buildah push {image} {destination} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let digest = fs::read_to_string(digest_file.path()).expect("buildah wrote the digest");
        let digest = digest.trim();
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "buildah push wrote {digest:?} as the digest"
        );
        format!("{}/{repository}@{digest}", self.address)
    }

    /// Builds the operator's image with `scripts/image.sh` (cached) and pushes it as
    /// `leaf-operator:<its tag>`; returns the reference by digest.
    pub fn push_operator_image(&self) -> String {
        let image = build_image();
        let tag = image
            .rsplit_once(':')
            .map(|(_, tag)| tag)
            .unwrap_or("latest");
        self.push_image(&image, "leaf-operator", tag)
    }

    /// The run directory (crane's log, the blobs), for failure messages.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("failed to find a free loopback port: {e}"))
}

fn spawn(
    crane: &Path,
    address: &str,
    blobs: &Path,
    log: &Path,
    run_dir: &Path,
) -> Result<Child, String> {
    let out = fs::File::create(log).map_err(|e| format!("failed to create {log:?}: {e}"))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("failed to clone the log handle: {e}"))?;
    let mut command = Command::new(crane);
    command
        .args(["registry", "serve", "--address", address, "--disk"])
        .arg(blobs)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    process::spawn_tied(command, run_dir)
        .map_err(|e| format!("failed to start {}: {e}", crane.display()))
}
