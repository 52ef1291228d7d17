//! A real one-node Kubernetes cluster for the tests that need Pods to run (`tests/node.rs`):
//! the test binary's control plane (`control_plane.rs`, here listening on the node bridge's
//! address, with the ServiceAccount admission on) joined by a kubelet on containerd and runc,
//! kube-controller-manager, kube-scheduler and kube-proxy, all built by
//! `scripts/node-tools.sh` (Go modules, cached) and started on first use of [`node`].
//!
//! Only one kubelet can run on a machine (port 10250, the node's fixed directory and bridge):
//! a machine-wide lock makes a second test binary wait. Whatever the node leaves outside its
//! processes (containers, mounts, network namespaces, the bridge, iptables rules, cgroups) is
//! removed when the test binary exits, also after failures, and before a node starts, in case a
//! killed run left it (`cleanup.rs`).
//!
//! One job per module: `cni` (bridge and network config), `containerd`, `kubelet`,
//! `controllers` (controller-manager, scheduler, kube-proxy), `daemon` (one process and its
//! log), `cleanup` (lock and teardown), `images` (the local registry the node pulls from), `pods`
//! (what tests read about the workloads: Pods, Lease holders, EndpointSlices).

pub mod cleanup;
pub mod cni;
pub mod containerd;
pub mod controllers;
pub mod daemon;
pub mod images;
pub mod kubelet;
pub mod pods;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::api::Api;
use tokio::sync::OnceCell;

use super::control_plane::{self, ControlPlane, cached_build_dir, control_plane};
use containerd::Containerd;
use daemon::Daemon;

/// The node's directory: fixed (there is one node per machine) and short (containerd's socket
/// path must fit a unix socket address).
pub const NODE_DIR: &str = "/tmp/leaf-test-node";
pub const NODE_NAME: &str = "leaf-test-node";
/// The Linux bridge the Pods' veths join.
pub const BRIDGE: &str = "leafnode0";
/// The bridge's address: the Pods' gateway, where the API server, the Leaf stand-in and the
/// registry of the tests listen so that Pods reach them.
pub const NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
/// The Pods' addresses (a range nothing on this machine kind routes).
pub const POD_SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 213, 0, 0), 24);
/// The kubelet's cgroup root in each cgroup v1 hierarchy.
pub const CGROUP_ROOT: &str = "/leaf-test-node";
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The running node and its processes.
pub struct Node {
    pub tools: PathBuf,
    pub containerd: Containerd,
    pub kubelet: Daemon,
    pub controller_manager: Daemon,
    pub scheduler: Daemon,
    pub kube_proxy: Daemon,
    /// From the first call to a Ready Node (including the control plane's start).
    pub started_in: Duration,
}

/// The node of this test binary, started on first call (it starts the control plane too: call it
/// before `support::control_plane()`). Panics with the reason when it cannot be started.
pub async fn node() -> &'static Node {
    static NODE: OnceCell<Result<Node, String>> = OnceCell::const_new();
    match NODE.get_or_init(Node::start).await {
        Ok(node) => node,
        Err(message) => panic!("the test node is not available:\n{message}"),
    }
}

impl Node {
    async fn start() -> Result<Node, String> {
        let began = Instant::now();
        let tools = tokio::task::spawn_blocking(|| cached_build_dir("scripts/node-tools.sh"))
            .await
            .map_err(|e| e.to_string())??;
        tokio::task::spawn_blocking(cleanup::machine_lock)
            .await
            .map_err(|e| e.to_string())??;
        // A run killed before its exit handler could run left its node behind.
        cleanup::teardown(&tools);
        cni::create_bridge()?;
        control_plane::serve_node_at(NODE_ADDRESS)?;
        let cp = control_plane().await;
        cleanup::teardown_at_exit(&tools);

        let log_dir = cp.run_dir();
        let cni_conf = Path::new(NODE_DIR).join("cni/net.d");
        cni::write_config(&cni_conf)?;
        let containerd = Containerd::start(&tools, &cni_conf, log_dir).await?;
        let kubelet = kubelet::start(&tools, cp.kubeconfig_path(), &containerd.socket, log_dir)?;
        let pki = cp.run_dir().join("pki");
        let controller_manager = controllers::start_controller_manager(
            &tools,
            cp.kubeconfig_path(),
            &pki.join("ca.crt"),
            &pki.join("sa.key"),
            log_dir,
        )?;
        let scheduler = controllers::start_scheduler(&tools, cp.kubeconfig_path(), log_dir)?;
        let kube_proxy = controllers::start_kube_proxy(&tools, cp.kubeconfig_path(), log_dir)?;
        let mut node = Node {
            tools,
            containerd,
            kubelet,
            controller_manager,
            scheduler,
            kube_proxy,
            started_in: Duration::ZERO,
        };
        node.wait_ready(cp).await?;
        node.started_in = began.elapsed();
        eprintln!(
            "test node {NODE_NAME} Ready in {:.1?} (kubelet, containerd, runc, CNI bridge {BRIDGE} {NODE_ADDRESS}; logs in {})",
            node.started_in,
            log_dir.display()
        );
        Ok(node)
    }

    fn daemons(&self) -> [&Daemon; 5] {
        [
            &self.containerd.daemon,
            &self.kubelet,
            &self.controller_manager,
            &self.scheduler,
            &self.kube_proxy,
        ]
    }

    /// Fails (with the logs) as soon as a process of the node exits.
    pub fn check_running(&self) -> Result<(), String> {
        for daemon in self.daemons() {
            if daemon.exited() {
                return Err(format!("{} exited\n{}", daemon.name, daemon.log_tail(60)));
            }
        }
        Ok(())
    }

    /// The end of every process's log, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.daemons()
            .iter()
            .map(|d| d.log_tail(lines))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn wait_ready(&self, cp: &ControlPlane) -> Result<(), String> {
        let nodes = Api::<NodeObject>::all(cp.client());
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            self.check_running()?;
            match nodes.get_opt(NODE_NAME).await {
                Ok(Some(node)) => {
                    let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
                    if conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                    {
                        return Ok(());
                    }
                    last = format!("{conditions:?}");
                }
                Ok(None) => last = "not registered".to_string(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!(
            "Node {NODE_NAME} not Ready after {NODE_READY_TIMEOUT:?}; last: {last}\n{}",
            self.logs(40)
        ))
    }
}
