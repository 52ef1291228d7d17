//! What turns API objects into a running cluster beside the kubelet: kube-controller-manager
//! (ServiceAccounts, the root CA ConfigMap each Pod's projected token mounts, Deployments and
//! ReplicaSets, EndpointSlices, the garbage collector, node lifecycle, disruption budgets),
//! kube-scheduler, and kube-proxy (Service addresses routed to EndpointSlices with iptables).
//! All with the admin kubeconfig and no leader election (one of each); none serves HTTPS.

use std::fs;
use std::net::TcpListener;
use std::path::Path;

use super::daemon::Daemon;
use super::{NODE_DIR, NODE_NAME, POD_SUBNET};

pub fn start_controller_manager(
    tools: &Path,
    kubeconfig: &Path,
    ca_cert: &Path,
    service_account_key: &Path,
    log_dir: &Path,
) -> Result<Daemon, String> {
    Daemon::start(
        "kube-controller-manager",
        &tools.join("kube-controller-manager"),
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-elect=false".to_string(),
            "--secure-port=0".to_string(),
            // Published to every namespace as kube-root-ca.crt, which projected tokens mount.
            format!("--root-ca-file={}", ca_cert.display()),
            format!(
                "--service-account-private-key-file={}",
                service_account_key.display()
            ),
            "--use-service-account-credentials=false".to_string(),
            // Pods of a node gone NotReady are evicted after this (the default is 5 minutes).
            "--node-monitor-grace-period=20s".to_string(),
            "--v=1".to_string(),
        ],
        log_dir,
    )
}

pub fn start_scheduler(tools: &Path, kubeconfig: &Path, log_dir: &Path) -> Result<Daemon, String> {
    Daemon::start(
        "kube-scheduler",
        &tools.join("kube-scheduler"),
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-elect=false".to_string(),
            "--secure-port=0".to_string(),
            "--v=1".to_string(),
        ],
        log_dir,
    )
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// kube-proxy in iptables mode (the iptables of apt, nf_tables backend). It leaves the machine's
/// sysctls alone: no conntrack table sizing and no `route_localnet` (localhost node ports).
pub fn start_kube_proxy(tools: &Path, kubeconfig: &Path, log_dir: &Path) -> Result<Daemon, String> {
    let (subnet, prefix) = POD_SUBNET;
    let config = format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {NODE_NAME}
mode: iptables
clusterCIDR: {subnet}/{prefix}
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
"#,
        kubeconfig = kubeconfig.display(),
        healthz = free_port()?,
        metrics = free_port()?,
    );
    let path = Path::new(NODE_DIR).join("kube-proxy.yaml");
    fs::write(&path, config).map_err(|e| e.to_string())?;
    Daemon::start(
        "kube-proxy",
        &tools.join("kube-proxy"),
        &[format!("--config={}", path.display()), "--v=1".to_string()],
        log_dir,
    )
}
