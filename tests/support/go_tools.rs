//! The Go test tools (`scripts/go-tool.sh`): Flux's kstatus, gopher-lua with Argo CD's libraries,
//! promtool and crane, each built once from its Go module and cached outside the checkout.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::repo_root;

/// The path of tool `name` (kstatus, argocd-lua, promtool or crane), building it first if needed. Panics
/// with the build's output when it fails: these tests are never skipped.
pub fn go_tool(name: &str) -> PathBuf {
    let script = repo_root().join("scripts/go-tool.sh");
    let mut child = Command::new(&script)
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", script.display()));
    let stderr = child.stderr.take().expect("stderr is piped");
    // Echoed as it comes: a cold build takes minutes and should say so.
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
    let status = child.wait().expect("waiting for scripts/go-tool.sh");
    let stderr = echo.join().unwrap_or_default();
    assert!(
        status.success(),
        "scripts/go-tool.sh {name} failed ({status}):\n{stderr}"
    );
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        path.is_file(),
        "scripts/go-tool.sh {name} printed {path:?}, which is not a file:\n{stderr}"
    );
    path
}

/// Runs `tool` with `args`, `stdin` as its input; returns stdout, panicking with stderr on failure.
pub fn run_with_json(tool: &PathBuf, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", tool.display()));
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_string();
    let writer = std::thread::spawn(move || input.write_all(data.as_bytes()));
    let output = child.wait_with_output().expect("waiting for the tool");
    let _ = writer.join();
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}):\n{}",
        tool.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
