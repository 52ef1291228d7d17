//! Configuration as the user meets it: `--help` lists every flag with its environment variable,
//! and bad configuration stops the process at start with a message that says what is wrong.

use std::process::Command;

fn operator(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_leaf-operator"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    command.args(args).output().expect("run leaf-operator")
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let output = operator(&[("LEAF_PASSWORD", "hunter2-PLANTED")], &["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for (flag, env) in [
        ("--leaf-api-url", "LEAF_API_URL"),
        ("--leaf-username", "LEAF_USERNAME"),
        ("--leaf-password", "LEAF_PASSWORD"),
        ("--leaf-token", "LEAF_TOKEN"),
        ("--watch-namespaces", "WATCH_NAMESPACES"),
        ("--concurrency", "RECONCILE_CONCURRENCY"),
        ("--leaf-requests-per-second", "LEAF_REQUESTS_PER_SECOND"),
        ("--leaf-burst", "LEAF_BURST"),
        ("--leaf-timeout", "LEAF_TIMEOUT"),
        ("--http-addr", "HTTP_ADDR"),
        ("--leader-election", "LEADER_ELECTION"),
        ("--log-format", "LOG_FORMAT"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} / {env} missing from --help:\n{help}"
        );
    }
    assert!(
        !help.contains("hunter2-PLANTED"),
        "--help shows the password:\n{help}"
    );
    assert!(
        !help.contains("TEST_REFRESH"),
        "the test-only knob is hidden"
    );
}

#[test]
fn bad_configuration_stops_at_start_with_a_clear_message() {
    for (env, expected) in [
        (vec![("LEAF_USERNAME", "ops@example.com")], "LEAF_PASSWORD"),
        (
            vec![
                ("LEAF_TOKEN", "t"),
                ("LEAF_USERNAME", "u"),
                ("LEAF_PASSWORD", "p"),
            ],
            "both set",
        ),
        (vec![("LEAF_API_URL", "ftp://leaf")], "http or https"),
        (vec![("LEAF_REQUESTS_PER_SECOND", "0")], "above 0"),
        (vec![("RECONCILE_CONCURRENCY", "0")], "at least 1"),
    ] {
        let output = operator(&env, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(
            stderr.contains("invalid configuration") && stderr.contains(expected),
            "{env:?}: {stderr}"
        );
    }
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let output = operator(
        &[
            ("LOG_FORMAT", "json"),
            ("KUBECONFIG", "/nonexistent/kubeconfig"),
            ("HTTP_ADDR", "127.0.0.1:0"),
        ],
        &[],
    );
    assert!(!output.status.success(), "no cluster: it must stop");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "it logged why it stopped");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.get("level").is_some(), "{line}");
    }
}
