//! Puts an image built on this machine (scripts/image.sh, in buildah's storage) into the node's
//! containerd, so that a Pod can name it by digest: saved as an OCI archive with buildah and
//! imported with ctr. Returns `repository@sha256:...`, the reference the chart's `image.digest`
//! pins.

use std::path::Path;
use std::process::Command;

use super::NODE_DIR;
use super::containerd::Containerd;

/// Imports `image` (`repository:tag` in buildah's storage); returns `(repository, digest)`.
pub fn import_from_buildah(
    containerd: &Containerd,
    image: &str,
) -> Result<(String, String), String> {
    let (repository, _tag) = image
        .rsplit_once(':')
        .ok_or_else(|| format!("{image} has no tag"))?;
    let dir = Path::new(NODE_DIR).join("images");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let archive = dir.join(format!("{}.tar", image.replace(['/', ':'], "_")));
    let _ = std::fs::remove_file(&archive);
    let output = Command::new("buildah")
        .args(["push", "--quiet", image])
        .arg(format!("oci-archive:{}:{image}", archive.display()))
        .output()
        .map_err(|e| format!("failed to run buildah: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "buildah push {image} to an archive failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    containerd.import(&archive)?;
    let _ = std::fs::remove_file(&archive);
    let digest = containerd.digest_of(image).ok_or_else(|| {
        format!(
            "{image} not in containerd after the import:\n{}",
            containerd.images()
        )
    })?;
    // The CRI plugin finds an image by digest only under a `repository@digest` name (a pull by
    // digest creates one; an import only the tag's).
    containerd.tag(image, &format!("{repository}@{digest}"))?;
    Ok((repository.to_string(), digest))
}

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
