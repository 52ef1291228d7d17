//! Lets the node's containerd pull the images of the tests' local registry
//! (`support::registry`, `crane registry serve` on a plain-HTTP loopback port): the kubelet then
//! pulls by digest, as from any registry.

/// Lets the node's containerd pull from the plain-HTTP registry at `host` (`127.0.0.1:PORT`, in
/// the machine's network namespace, which containerd shares): a `hosts.toml` under its
/// `config_path`, read on each pull.
pub fn allow_plain_http_registry(host: &str) -> Result<(), String> {
    let dir = super::containerd::hosts_dir().join(host);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let hosts = format!(
        "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
    std::fs::write(dir.join("hosts.toml"), hosts).map_err(|e| e.to_string())
}
