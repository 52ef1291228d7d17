//! The node's container runtime: containerd (built by scripts/node-tools.sh) with its CRI plugin,
//! runc from apt (crun does not work on this machine kind), the CNI plugins, and every path of
//! its own under [`NODE_DIR`] (socket, root, state, runc's state, network namespaces), so that
//! nothing of another containerd on the machine is touched and the teardown finds it all.
//!
//! No registry on the internet is reachable: the sandbox ("pause") image is imported from the
//! archive scripts/node-tools.sh built, and pinned so that the kubelet's image GC keeps it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::NODE_DIR;
use super::daemon::Daemon;

/// The CRI namespace the kubelet's containers and images live in.
const K8S_NAMESPACE: &str = "k8s.io";

pub struct Containerd {
    pub daemon: Daemon,
    pub socket: PathBuf,
    ctr: PathBuf,
}

pub fn socket() -> PathBuf {
    Path::new(NODE_DIR).join("containerd/containerd.sock")
}

/// The registries containerd may pull from over plain HTTP (loopback registries of the tests):
/// one `hosts.toml` each under this directory (containerd's `config_path`).
pub fn hosts_dir() -> PathBuf {
    Path::new(NODE_DIR).join("containerd/certs.d")
}

fn config(tools: &Path, sandbox_image: &str, cni_conf_dir: &Path) -> String {
    let dir = Path::new(NODE_DIR).join("containerd");
    let socket = socket();
    format!(
        r#"version = 3
root = "{root}"
state = "{state}"
# The opt plugin installs into /opt/containerd, shared by the machine: not needed here.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[plugins."io.containerd.cri.v1.runtime"]
  # The machine lacks CAP_SYS_RESOURCE: a container may not get an oom_score_adj below
  # containerd's own, or runc's write of it is refused.
  restrict_oom_score_adj = true
  # Network namespaces under the state directory, not the machine's /var/run/netns.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "runc"
        # runc's container state under the node's directory (the teardown deletes what is left).
        Root = "{runc_root}"
        # cgroupfs, like the kubelet: no systemd runs on this machine kind.
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{tools}"]
    conf_dir = "{cni_conf}"
    max_conf_num = 1

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox_image}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{hosts}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = socket.display(),
        runc_root = Path::new(NODE_DIR).join("runc").display(),
        tools = tools.display(),
        cni_conf = cni_conf_dir.display(),
        hosts = hosts_dir().display(),
    )
}

impl Containerd {
    /// Writes the configuration, starts containerd, waits until it answers and imports the
    /// sandbox image.
    pub async fn start(
        tools: &Path,
        cni_conf_dir: &Path,
        log_dir: &Path,
    ) -> Result<Containerd, String> {
        let sandbox_image = fs::read_to_string(tools.join("pause.ref"))
            .map_err(|e| format!("no pause.ref in {}: {e}", tools.display()))?
            .trim()
            .to_string();
        let dir = Path::new(NODE_DIR).join("containerd");
        fs::create_dir_all(hosts_dir()).map_err(|e| e.to_string())?;
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config(tools, &sandbox_image, cni_conf_dir))
            .map_err(|e| format!("failed to write {}: {e}", config_path.display()))?;
        // The shim finds runc (and containerd finds the shim) on PATH; the tools directory holds
        // the shim, /usr/sbin runc.
        let mut command = Command::new(tools.join("containerd"));
        command
            .arg("--config")
            .arg(&config_path)
            .arg("--log-level=info")
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    tools.display()
                ),
            );
        let daemon = Daemon::start_command("containerd", command, log_dir)?;
        let containerd = Containerd {
            daemon,
            socket: socket(),
            ctr: tools.join("ctr"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = containerd.ctr(&["version"])?;
            if output.status.success() {
                break;
            }
            if containerd.daemon.exited() || Instant::now() >= deadline {
                return Err(format!(
                    "containerd did not answer: {}\n{}",
                    String::from_utf8_lossy(&output.stderr),
                    containerd.daemon.log_tail(60)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        containerd.import(&tools.join("pause.tar"))?;
        Ok(containerd)
    }

    fn ctr(&self, args: &[&str]) -> Result<std::process::Output, String> {
        Command::new(&self.ctr)
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", K8S_NAMESPACE])
            .args(args)
            .output()
            .map_err(|e| format!("failed to run ctr: {e}"))
    }

    /// Imports an OCI or Docker image archive into the kubelet's namespace.
    pub fn import(&self, archive: &Path) -> Result<String, String> {
        let archive = archive.display().to_string();
        let output = self.ctr(&["images", "import", "--all-platforms", &archive])?;
        if !output.status.success() {
            return Err(format!(
                "ctr images import {archive} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `ctr images ls` of the kubelet's namespace (for failure messages and checks).
    pub fn images(&self) -> String {
        self.ctr(&["images", "ls"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// Kills every process of a container with SIGKILL, as a crash would (no SIGTERM, so nothing
/// runs its shutdown): runc, under the node's runc root, with the id of the Pod's
/// `containerStatuses[].containerID` (`containerd://<id>`).
pub fn crash_container(container_id: &str) -> Result<(), String> {
    let id = container_id.trim_start_matches("containerd://");
    let root = Path::new(NODE_DIR).join("runc").join(K8S_NAMESPACE);
    let output = Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["kill", "--all", id, "KILL"])
        .output()
        .map_err(|e| format!("failed to run runc: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "runc kill {id} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
