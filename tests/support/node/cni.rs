//! Pod networking of the test node: one Linux bridge with the node's address, the CNI reference
//! plugins (bridge, host-local, loopback, portmap, built by scripts/node-tools.sh) configured for
//! containerd to give each Pod a veth on it and an address of [`super::POD_SUBNET`].
//!
//! The bridge is created before the control plane starts, because the API server listens on its
//! address (Pods reach it through the `kubernetes` Service, which kube-proxy routes there). The
//! bridge plugin finds it with that address and reuses it.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::{BRIDGE, NODE_ADDRESS, NODE_DIR, NODE_NAME, POD_SUBNET};

/// Creates the bridge with the node's address (nothing listens on it but this node's servers).
pub fn create_bridge() -> Result<(), String> {
    let address = format!("{NODE_ADDRESS}/{}", POD_SUBNET.1);
    for args in [
        vec!["link", "add", BRIDGE, "type", "bridge"],
        vec!["addr", "add", &address, "dev", BRIDGE],
        vec!["link", "set", BRIDGE, "up"],
    ] {
        let output = Command::new("ip")
            .args(&args)
            .output()
            .map_err(|e| format!("failed to run ip {args:?}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "ip {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    Ok(())
}

/// Writes the network configuration list containerd's CRI plugin reads from `conf_dir`.
pub fn write_config(conf_dir: &Path) -> Result<(), String> {
    fs::create_dir_all(conf_dir).map_err(|e| format!("{}: {e}", conf_dir.display()))?;
    let (subnet, prefix) = POD_SUBNET;
    let config = serde_json::json!({
        "cniVersion": "1.0.0",
        // The network is named after the node (the teardown finds libcni's cache files by it).
        "name": NODE_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                // The bridge's address is the Pods' default gateway: the host (API server, Leaf
                // stand-in, registry) is reached through it, and Service addresses are
                // translated there by kube-proxy's rules.
                "isGateway": true,
                // Pods talk only to this host; nothing is masqueraded out of the machine.
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{
                        "subnet": format!("{subnet}/{prefix}"),
                        "gateway": NODE_ADDRESS.to_string(),
                    }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    // Its allocations, with the node's (the default is machine-wide /var/lib/cni).
                    "dataDir": format!("{NODE_DIR}/cni/ipam"),
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    });
    let path = conf_dir.join("10-leaf-test-node.conflist");
    fs::write(&path, serde_json::to_string_pretty(&config).unwrap())
        .map_err(|e| format!("failed to write {}: {e}", path.display()))
}
