//! `scripts/release.sh` run against the test binary's local registry (`registry.rs`), once per
//! test binary: what it pushed (the multi-arch index, the chart, the SBOM), by the references it
//! printed. tests/release.rs checks them; an install from `oci://` by digest can use them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use tokio::sync::OnceCell;

use super::registry::{Registry, shared_registry};
use super::repo_root;

/// What `scripts/release.sh` printed on its last lines (`release_KEY=VALUE`).
pub struct Release {
    pub registry: &'static Registry,
    values: BTreeMap<String, String>,
}

impl Release {
    /// `release_KEY`'s value, e.g. `get("image")`: `127.0.0.1:PORT/leaf/leaf-operator@sha256:...`;
    /// `chart`, `chart_version`, `chart_digest`, `image_tag`, `sbom`, `sbom_artifact`.
    pub fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("scripts/release.sh printed no release_{key}"))
    }
}

/// The release of this test binary, pushed on first call to the binary's shared registry under
/// `127.0.0.1:PORT/leaf`; panics with the script's output when it fails.
pub async fn shared_release() -> &'static Release {
    static RELEASE: OnceCell<Release> = OnceCell::const_new();
    RELEASE
        .get_or_init(|| async {
            let registry = shared_registry().await;
            // In the registry's run directory: removed with it when the test binary exits.
            let out = registry.run_dir().join("release");
            let target = format!("{}/leaf", registry.address());
            let values = tokio::task::spawn_blocking(move || run_release(&target, &out))
                .await
                .unwrap();
            Release { registry, values }
        })
        .await
}

/// Runs `scripts/release.sh TARGET --out OUT`, echoing its progress, and parses its last lines.
fn run_release(target: &str, out: &Path) -> BTreeMap<String, String> {
    let script = repo_root().join("scripts/release.sh");
    let mut child = Command::new(&script)
        .arg(target)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", script.display()));
    let stderr = child.stderr.take().unwrap();
    // Echoed as it comes: a cold run builds two release binaries and should say so.
    let echo = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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
        .unwrap()
        .read_to_string(&mut stdout)
        .ok();
    let status = child.wait().unwrap();
    let stderr = echo.join().unwrap_or_default();
    assert!(
        status.success(),
        "scripts/release.sh {target} failed ({status}):\n{stderr}"
    );
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("release_")?.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}
