//! The node's kubelet: registers the Node with the test control plane and runs its Pods through
//! containerd. Settings this machine kind needs, and why:
//! - `failCgroupV1: false`: the machine has cgroup v1 (hybrid) hierarchies only; the kubelet
//!   refuses v1 unless told;
//! - `cgroupDriver: cgroupfs`: no systemd; the Pods' cgroups live under [`CGROUP_ROOT`] in each
//!   hierarchy (created here, removed by the teardown);
//! - `failSwapOn: false`, `oomScoreAdj: 0` (lowering its own needs CAP_SYS_RESOURCE, which the
//!   machine lacks), eviction thresholds near zero (the disk is shared with other builds: the
//!   node must not evict the operator's Pods because someone else filled it);
//! - an admin kubeconfig (no bootstrap or node authorizer to set up for one test node); the
//!   kubelet's API on 10250 serves the API server only, so it authorises everything;
//! - every path of its own under [`NODE_DIR`] (root dir, certificate, Pod logs). Two paths cannot
//!   be moved: the device plugin socket in /var/lib/kubelet/device-plugins and the container log
//!   links in /var/log/containers; the teardown removes what this node put there.

use std::fs;
use std::path::Path;

use super::daemon::Daemon;
use super::{CGROUP_ROOT, NODE_ADDRESS, NODE_DIR, NODE_NAME};

fn config(containerd_socket: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://{socket}
imageServiceEndpoint: unix://{socket}
address: {address}
port: 10250
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
podLogsDir: {node_dir}/pod-logs
evictionHard:
  memory.available: 50Mi
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
# Pods see changes of their Secret and ConfigMap volumes sooner than the default minute.
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
"#,
        socket = containerd_socket.display(),
        address = NODE_ADDRESS,
        cgroup_root = CGROUP_ROOT,
        node_dir = NODE_DIR,
    )
}

/// Creates the kubelet's cgroup root in every hierarchy (the kubelet checks that it exists).
fn create_cgroup_root() -> Result<(), String> {
    let hierarchies = fs::read_dir("/sys/fs/cgroup").map_err(|e| format!("/sys/fs/cgroup: {e}"))?;
    for hierarchy in hierarchies.flatten() {
        if !hierarchy.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = hierarchy.path().join(CGROUP_ROOT.trim_start_matches('/'));
        fs::create_dir_all(&dir).map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
        // A v1 cpuset cgroup admits no task until it has CPUs and memory nodes: the parent's.
        if hierarchy.file_name() == "cpuset" {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let parent = fs::read_to_string(hierarchy.path().join(file)).unwrap_or_default();
                let _ = fs::write(dir.join(file), parent.trim());
            }
        }
    }
    Ok(())
}

pub fn start(
    tools: &Path,
    kubeconfig: &Path,
    containerd_socket: &Path,
    log_dir: &Path,
) -> Result<Daemon, String> {
    create_cgroup_root()?;
    let dir = Path::new(NODE_DIR).join("kubelet");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config_path = Path::new(NODE_DIR).join("kubelet-config.yaml");
    fs::write(&config_path, config(containerd_socket)).map_err(|e| e.to_string())?;
    Daemon::start(
        "kubelet",
        &tools.join("kubelet"),
        &[
            format!("--config={}", config_path.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-dir={}", dir.display()),
            // Its serving certificate; the default is /var/lib/kubelet/pki, whatever the root.
            format!("--cert-dir={}", dir.join("pki").display()),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={NODE_ADDRESS}"),
            "--v=1".to_string(),
        ],
        log_dir,
    )
}
