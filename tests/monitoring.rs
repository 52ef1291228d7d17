//! Monitoring a platform team can switch on: the chart's PrometheusRule is the rule file that
//! `promtool test rules` proves (promtool built from its Go module), and every metric the rules and
//! the Grafana dashboard query is one a running operator exports on `/metrics`.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use leaf_operator::crd::TrimbleConnection;
use leaf_standin::{StandIn, StandInConfig};
use serde_yaml::Value;

use support::go_tools::go_tool;
use support::install::{
    documents, expect_success, helm_template, one, read, repo, text, trimble_connection,
    trimble_secret, wait_for_ready,
};
use support::operator::{Operator, OperatorOptions};
use support::{control_plane, repo_root, wait_until};

const RULES: &str = "charts/leaf-operator/files/prometheus/alerts.yaml";
const RULE_TESTS: &str = "tests/prometheus/alerts_test.yaml";
const DASHBOARD: &str = "charts/leaf-operator/files/grafana/leaf-operator.json";

fn promtool(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(go_tool("promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("failed to run promtool")
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_tests() {
    let root = repo_root();
    expect_success(
        "promtool check rules",
        &promtool(&["check", "rules", RULES], root),
    );
    let output = promtool(&["test", "rules", RULE_TESTS], root);
    expect_success("promtool test rules", &output);
    let alerts: Value = serde_yaml::from_str(&read(&repo(RULES))).unwrap();
    let names: BTreeSet<&str> = alerts["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    let tests = read(&repo(RULE_TESTS));
    for name in &names {
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{RULE_TESTS} has no case for {name}"
        );
    }
}

#[test]
fn promtool_fails_the_tests_when_an_alert_is_changed() {
    // The rule tests can fail: the Stalled alert made to wait an hour no longer fires at 20m.
    let dir = tempfile::tempdir().unwrap();
    let rules = read(&repo(RULES)).replacen("for: 15m", "for: 1h", 1);
    fs::write(dir.path().join("alerts.yaml"), rules).unwrap();
    let tests = read(&repo(RULE_TESTS)).replace(
        "../../charts/leaf-operator/files/prometheus/alerts.yaml",
        "alerts.yaml",
    );
    fs::write(dir.path().join("alerts_test.yaml"), tests).unwrap();
    let output = promtool(&["test", "rules", "alerts_test.yaml"], dir.path());
    assert!(
        !output.status.success(),
        "promtool passed the tests of a changed alert:\n{}",
        text(&output.stdout)
    );
}

#[tokio::test]
async fn the_charts_prometheus_rule_and_dashboard_are_opt_in_and_carry_the_tested_files() {
    let cp = control_plane().await;
    let off = documents(&helm_template(cp, "lo-mon", "lo-mon", &[]));
    assert!(
        !off.iter()
            .any(|o| o["kind"] == "PrometheusRule" || o["kind"] == "ConfigMap"),
        "monitoring objects are rendered without being asked for"
    );
    let on = documents(&helm_template(
        cp,
        "lo-mon",
        "lo-mon",
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.dashboard.enabled=true",
            "--set",
            "metrics.prometheusRule.stalledFor=1h",
        ],
    ));
    let rule = one(&on, "PrometheusRule");
    let file: Value = serde_yaml::from_str(&read(&repo(RULES))).unwrap();
    let rendered = rule["spec"]["groups"][0]["rules"].as_sequence().unwrap();
    let tested = file["groups"][0]["rules"].as_sequence().unwrap();
    assert_eq!(rendered.len(), tested.len());
    for (rendered, tested) in rendered.iter().zip(tested) {
        assert_eq!(rendered["alert"], tested["alert"]);
        assert_eq!(
            rendered["expr"], tested["expr"],
            "the rendered expression is not the tested one"
        );
        assert_eq!(rendered["annotations"], tested["annotations"]);
        let expected_for = if rendered["alert"] == "LeafOperatorConnectionStalled" {
            Value::from("1h")
        } else {
            tested["for"].clone()
        };
        assert_eq!(rendered["for"], expected_for, "{:?}", rendered["alert"]);
    }
    let dashboard = one(&on, "ConfigMap");
    assert_eq!(
        dashboard["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1"),
        "Grafana's sidecar would not find the dashboard"
    );
    let json = dashboard["data"]["leaf-operator.json"].as_str().unwrap();
    let parsed: serde_json::Value = serde_json::from_str(json).expect("the dashboard is JSON");
    assert_eq!(
        parsed,
        serde_json::from_str::<serde_json::Value>(&read(&repo(DASHBOARD))).unwrap()
    );
}

/// The sample names `/metrics` can carry, from its `# TYPE` lines (so families without samples
/// yet count too): a counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`, a gauge's
/// own name.
fn exported_sample_names(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Every `leaf_operator_*` metric name in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("leaf_operator_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn every_metric_the_rules_and_dashboard_query_is_exported_by_a_running_operator() {
    let mut used = metric_names_in(&read(&repo(RULES)));
    let dashboard: serde_json::Value = serde_json::from_str(&read(&repo(DASHBOARD))).unwrap();
    let mut expressions = Vec::new();
    collect_strings(&dashboard, &mut expressions);
    for expression in &expressions {
        used.extend(metric_names_in(expression));
    }
    assert!(
        used.len() >= 6,
        "the rules and dashboard query only {used:?}"
    );

    // A running operator taken through the states the queries are about: a login, a connection
    // made Ready (Leaf requests, reconciles), one waiting for its Secret (a reconcile error) and
    // one stalled on a bad Secret. Labelled families appear on /metrics once they have a sample.
    let cp = control_plane().await;
    cp.install_crd().await;
    let namespace = cp.create_namespace("metrics").await;
    let leaf = StandIn::start(
        StandInConfig::default()
            .with_account("metrics@example.com", "metrics-password")
            .with_user("user-ready"),
    )
    .await;
    let operator = Operator::start(
        cp,
        OperatorOptions::new(&namespace, &leaf.origin())
            .account("metrics@example.com", "metrics-password"),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(cp.client(), &namespace);
    secrets
        .create(
            &PostParams::default(),
            &trimble_secret("creds", "refresh-metrics"),
        )
        .await
        .unwrap();
    let mut incomplete = trimble_secret("incomplete", "refresh-x");
    incomplete
        .string_data
        .as_mut()
        .unwrap()
        .remove("clientSecret");
    secrets
        .create(&PostParams::default(), &incomplete)
        .await
        .unwrap();
    let tcs: Api<TrimbleConnection> = Api::namespaced(cp.client(), &namespace);
    for (name, secret) in [
        ("ready", "creds"),
        ("waiting", "absent"),
        ("stalled", "incomplete"),
    ] {
        tcs.create(
            &PostParams::default(),
            &trimble_connection(name, &format!("user-{name}"), secret),
        )
        .await
        .unwrap();
    }
    wait_for_ready(&tcs, "ready", "True", "CredentialValid").await;
    wait_for_ready(&tcs, "stalled", "False", "SecretInvalid").await;

    let addr = operator
        .http_addr()
        .expect("the operator logged its HTTP address");
    let url = format!("http://127.0.0.1:{}/metrics", addr.port());
    let exported = wait_until(
        "every queried metric on /metrics",
        Duration::from_secs(60),
        || async {
            let metrics = reqwest::get(&url)
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            let exported = exported_sample_names(&metrics);
            let missing: Vec<&String> = used
                .iter()
                .filter(|name| !exported.contains(*name))
                .collect();
            if missing.is_empty() {
                Ok(exported)
            } else {
                Err(format!(
                    "queried but not exported: {missing:?}; exported: {exported:?}"
                ))
            }
        },
    )
    .await;
    assert!(exported.len() >= 8, "few metrics exported: {exported:?}");
}

fn collect_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}
