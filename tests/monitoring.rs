//! Monitoring a platform team can switch on: the chart's PrometheusRule is the rule file that
//! `promtool test rules` proves (promtool built from its Go module), every metric the rules and
//! the Grafana dashboard query is one a running operator exports on `/metrics`, and the metrics
//! reference (docs/metrics.md) lists exactly the metrics a running operator exports.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use leaf_operator::crd::TrimbleConnection;
use leaf_standin::{StandIn, StandInConfig};
use serde_yaml::Value;

use support::alerts::{
    SIGNING_SECRET, free_port, metrics, post, put_signing_secret, wait_metric, with_alerts,
};
use support::go_tools::go_tool;
use support::install::{
    documents, expect_success, helm_template, one, read, repo, text, trimble_connection,
    trimble_secret, wait_for_ready,
};
use support::operator::{Fixture, Operator, OperatorOptions};
use support::{control_plane, repo_root, wait_until};

const RULES: &str = "charts/leaf-operator/files/prometheus/alerts.yaml";
const RULE_TESTS: &str = "tests/prometheus/alerts_test.yaml";
const DASHBOARD: &str = "charts/leaf-operator/files/grafana/leaf-operator.json";
const METRICS_DOC: &str = "docs/metrics.md";
const WAIT: Duration = Duration::from_secs(60);

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

/// The metric families on `/metrics` (name and type), from its `# TYPE` lines. A labelled family
/// has one only once it has a series (the Prometheus client leaves out an empty one); an
/// unlabelled one, and the per-connection gauges, have one from the start.
fn exported_families(metrics: &str) -> BTreeMap<String, String> {
    metrics
        .lines()
        .filter_map(|line| {
            let mut parts = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// The sample names of the families on `/metrics`: a counter's `_total`, a histogram's `_bucket`,
/// `_sum` and `_count`, a gauge's own name.
fn exported_sample_names(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (name, kind) in exported_families(metrics) {
        match kind.as_str() {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name);
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

/// One row of the tables in docs/metrics.md.
#[derive(Debug)]
struct Documented {
    /// `counter`, `gauge` or `histogram`, as on a `# TYPE` line.
    kind: String,
    /// The label names of every sample (a histogram bucket's `le` aside).
    labels: BTreeSet<String>,
    /// Marked `always`: on `/metrics` from the start of the process.
    always: bool,
}

/// The rows of the reference's tables, `| `name` | type | labels | appears | meaning |`, by family
/// name: the name on the `# TYPE` line, which for a counter is its documented `_total` name
/// without the suffix.
fn documented_metrics(doc: &str) -> BTreeMap<String, Documented> {
    let mut rows = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `leaf_operator_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert!(
            cells.len() >= 7,
            "{METRICS_DOC}: a row without 5 columns: {line}"
        );
        let name = cells[1].trim_matches('`');
        let kind = cells[2].to_string();
        let family = match kind.as_str() {
            "counter" => name.strip_suffix("_total").unwrap_or_else(|| {
                panic!("{METRICS_DOC}: the counter {name} is not listed by its _total name")
            }),
            "gauge" | "histogram" => name,
            other => panic!("{METRICS_DOC}: {name} has the unknown type {other:?}"),
        };
        let row = Documented {
            kind,
            labels: backticked(cells[3]),
            always: cells[4].starts_with("always"),
        };
        assert!(
            rows.insert(family.to_string(), row).is_none(),
            "{METRICS_DOC} lists {name} twice"
        );
    }
    rows
}

/// The words between backticks in a table cell.
fn backticked(cell: &str) -> BTreeSet<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The label names of one sample line's `{name="value",...}` part (the text after `{`); values
/// may hold escaped quotes.
fn label_names(labels: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = labels;
    while let Some(open) = rest.find("=\"") {
        names.insert(rest[..open].trim_start_matches(',').to_string());
        let mut value = rest[open + 2..].char_indices();
        let mut end = None;
        while let Some((i, c)) = value.next() {
            match c {
                '\\' => {
                    value.next();
                }
                '"' => {
                    end = Some(open + 2 + i + 1);
                    break;
                }
                _ => {}
            }
        }
        match end {
            Some(end) if rest[end..].starts_with(',') => rest = &rest[end..],
            _ => break,
        }
    }
    names
}

/// The documented family a sample name belongs to, by its type's suffixes.
fn family_of<'a>(
    sample: &str,
    documented: &'a BTreeMap<String, Documented>,
) -> Option<(&'a String, &'a Documented)> {
    documented.iter().find(|(family, row)| {
        let suffixes: &[&str] = match row.kind.as_str() {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        suffixes
            .iter()
            .any(|suffix| sample.strip_suffix(suffix) == Some(family.as_str()))
    })
}

/// Asserts that every family on `/metrics` is in the reference with the same type, and that
/// every sample carries exactly the documented label names.
fn assert_documented(metrics: &str, documented: &BTreeMap<String, Documented>) {
    let wrong: Vec<String> = exported_families(metrics)
        .into_iter()
        .filter_map(|(family, kind)| match documented.get(&family) {
            None => Some(format!("{family} ({kind}) is not documented")),
            Some(row) if row.kind != kind => Some(format!(
                "{family} is a {kind}, documented as a {}",
                row.kind
            )),
            Some(_) => None,
        })
        .collect();
    assert!(wrong.is_empty(), "{METRICS_DOC}: {wrong:#?}\n{metrics}");
    let mut samples = 0;
    for line in metrics
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (sample, mut labels) = match line.split_once('{') {
            Some((sample, labels)) => (sample, label_names(labels)),
            None => (line.split(' ').next().unwrap_or(line), BTreeSet::new()),
        };
        let (family, row) = family_of(sample, documented)
            .unwrap_or_else(|| panic!("{METRICS_DOC}: no documented family has sample {line}"));
        if row.kind == "histogram" {
            labels.remove("le");
        }
        assert_eq!(
            labels, row.labels,
            "{METRICS_DOC}: the labels of {family} on the sample {line}"
        );
        samples += 1;
    }
    assert!(samples > 0, "no sample on /metrics:\n{metrics}");
}

#[tokio::test]
async fn the_metrics_marked_always_are_exported_from_the_start() {
    let documented = documented_metrics(&read(&repo(METRICS_DOC)));
    let always: Vec<&String> = documented
        .iter()
        .filter(|(_, row)| row.always)
        .map(|(family, _)| family)
        .collect();
    // Labelled families appear with their first series, so not every row can say `always`.
    assert!(
        always.len() >= 5 && always.len() < documented.len(),
        "{METRICS_DOC} marks {always:?} `always`"
    );

    // Alerts off and no TrimbleConnection: nothing has happened yet.
    let f = Fixture::start("metrics-start").await;
    let text = metrics(&f).await;
    let exported = exported_families(&text);
    let missing: Vec<&&String> = always
        .iter()
        .filter(|family| !exported.contains_key(family.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "marked `always` in {METRICS_DOC} but not on /metrics at start: {missing:?}\n{text}"
    );
    assert_documented(&text, &documented);
}

#[tokio::test]
async fn the_metrics_reference_lists_exactly_what_a_running_operator_exports() {
    const REGISTERED: &str = r#"leaf_operator_alerts_webhook_state{state="registered"}"#;
    let documented = documented_metrics(&read(&repo(METRICS_DOC)));
    assert!(
        documented.len() >= 20,
        "{METRICS_DOC} lists only {:?}",
        documented.keys()
    );

    // Alerts on, with webhook registration, so that the alerts families can appear; then every
    // event a labelled family waits for. A Ready connection: Leaf requests and reconciles.
    let port = free_port();
    let f = Fixture::start_with("metrics-doc", StandInConfig::default(), |options| {
        with_alerts(options, port, true)
    })
    .await;
    put_signing_secret(&f, SIGNING_SECRET).await;
    f.create_farm_with_default_credentials("user-doc").await;
    // A connection whose Secret does not exist: a reconcile error.
    f.create_tc("waiting", "user-waiting", "absent", serde_json::json!({}))
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    wait_metric(&f, REGISTERED, 1.0).await;
    // Leaf marks the credential invalid and delivers a signed alert for it (a delivery, its
    // freshness, the reconcile it triggers and its answer; hearing from Leaf switches the pace).
    assert!(f.standin.set_status("user-doc", "UNAUTHENTICATED"));
    f.wait_reason("farm", "CredentialInvalid", WAIT).await;
    // An unsigned body that is not the registration confirmation: refused.
    let forged = r#"{"type": "credentialsUnauthenticated", "credentialId": "forged"}"#;
    assert_eq!(post(port, forged, None).await, 401);

    let text = wait_until("every documented metric on /metrics", WAIT, || async {
        let text = metrics(&f).await;
        let exported = exported_families(&text);
        let missing: Vec<&String> = documented
            .keys()
            .filter(|family| !exported.contains_key(*family))
            .collect();
        if missing.is_empty() {
            Ok(text)
        } else {
            Err(format!(
                "in {METRICS_DOC} but not on /metrics: {missing:?}\n{text}"
            ))
        }
    })
    .await;
    assert_documented(&text, &documented);
}
