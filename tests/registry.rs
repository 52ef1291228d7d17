//! The tests' local OCI registry (`support::registry`, `crane registry serve`): the image
//! `scripts/image.sh` builds is pushed to it and pulled back by digest, the way a node and the
//! release test use it.

mod support;

use std::process::Command;

use support::shared_registry;

#[tokio::test]
async fn image_pushed_to_the_local_registry_is_pulled_back_by_digest() {
    let registry = shared_registry().await;
    let reference = registry.push_operator_image();
    let (repository, digest) = reference
        .split_once('@')
        .expect("a reference by digest has an @");
    assert_eq!(
        repository,
        format!("{}/leaf-operator", registry.address()),
        "pushed to {reference}"
    );

    // The registry resolves the digest to the very manifest pushed (crane re-hashes what it gets).
    let resolved = registry.crane(&["digest", &reference]);
    assert_eq!(resolved.trim(), digest, "crane digest {reference}");
    let manifest: serde_json::Value =
        serde_json::from_str(&registry.crane(&["manifest", &reference])).expect("manifest JSON");
    let layers = manifest["layers"]
        .as_array()
        .expect("a manifest has layers");
    assert_eq!(
        layers.len(),
        1,
        "one layer (a FROM-scratch image): {manifest}"
    );
    let config: serde_json::Value =
        serde_json::from_str(&registry.crane(&["config", &reference])).expect("config JSON");
    assert_eq!(config["architecture"], "amd64", "config: {config}");
    assert_eq!(
        config["config"]["Entrypoint"][0], "/usr/local/bin/leaf-operator",
        "config: {config}"
    );

    // Pulled by digest, the file system holds the operator binary.
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("rootfs.tar");
    registry.crane(&["export", &reference, tar.to_str().unwrap()]);
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.lines().any(|l| l == "usr/local/bin/leaf-operator"),
        "the pulled image's files: {listing}"
    );

    // A digest the registry never saw is refused, so the checks above are about what was pushed.
    let unknown = format!("{repository}@sha256:{}", "0".repeat(64));
    let output = Command::new(registry.crane_path())
        .args(["manifest", "--insecure", &unknown])
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "crane manifest {unknown} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}
