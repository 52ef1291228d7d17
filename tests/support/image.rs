//! The operator's image as `scripts/image.sh` builds it (a static musl binary on `scratch`, in
//! buildah's local storage), for the tests that run it (image.rs) or push it (registry.rs).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use super::repo_root;

/// Runs `scripts/image.sh` (incremental: an unchanged binary reuses its image) and returns the
/// image reference it prints, `localhost/leaf-operator:<version>-<binary hash>`. Panics with the
/// script's output when it fails: the tests that need the image are never skipped.
pub fn build_image() -> String {
    let script = repo_root().join("scripts/image.sh");
    let mut child = Command::new(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", script.display()));
    let stderr = child.stderr.take().expect("stderr is piped");
    // Echoed as it comes: a cold release build takes minutes and should say so.
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
        .expect("stdout is piped")
        .read_to_string(&mut stdout)
        .ok();
    let status = child.wait().expect("waiting for scripts/image.sh");
    let stderr = echo.join().unwrap_or_default();
    assert!(
        status.success(),
        "scripts/image.sh failed ({status}):\n{stderr}"
    );
    stdout.lines().last().unwrap_or_default().trim().to_string()
}
