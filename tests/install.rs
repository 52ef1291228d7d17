//! The install paths, proven: the Helm chart and the kustomize base against the real API server,
//! the restricted Pod Security profile, the Argo CD health check under a real Lua interpreter, and
//! the copies and docs that must stay in step with the code.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;
use serde_yaml::Value;
use tokio::sync::OnceCell;

use support::{ControlPlane, control_plane, repo_root, wait_until};

const CHART: &str = "charts/leaf-operator";
const CRD_NAME: &str = "trimbleconnections.withleaf.io";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn repo(path: &str) -> PathBuf {
    repo_root().join(path)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Panics with the command's output unless it succeeded.
#[track_caller]
fn expect_success(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Every non-empty YAML document of a multi-document stream.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("invalid YAML: {e}\n{yaml}"))
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn kind_of(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind_of(o) == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, found {}",
        found.len()
    );
    found[0]
}

/// The value of environment variable `name` in the Deployment's operator container.
fn env_value<'a>(deployment: &'a Value, name: &str) -> Option<&'a Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

/// `helm template` of the chart with `args` (for example `--set x=y`), release `release` in `namespace`.
fn helm_template(cp: &ControlPlane, release: &str, namespace: &str, args: &[&str]) -> String {
    let chart = repo(CHART);
    let mut all = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    all.extend_from_slice(args);
    expect_success(&format!("helm template {args:?}"), &cp.helm(&all))
}

/// `kubectl apply --dry-run=server` of `manifest`; returns the output (the caller checks it).
fn server_dry_run(cp: &ControlPlane, manifest: &str) -> Output {
    cp.kubectl_with_stdin(&["apply", "--dry-run=server", "-f", "-"], manifest)
}

fn to_yaml(objects: &[&Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("a YAML value serialises"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Sets labels on a namespace (server-side apply by the test).
async fn label_namespace(cp: &ControlPlane, namespace: &str, labels: &[(&str, &str)]) {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let patch = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": namespace, "labels": labels },
    });
    Api::<Namespace>::all(cp.client())
        .patch(
            namespace,
            &PatchParams::apply("leaf-operator-install-tests").force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap_or_else(|e| panic!("failed to label namespace {namespace}: {e}"));
}

/// The chart installed once for this test binary, with its CRD, before any other test touches the
/// CRD: Helm refuses to take over a CRD that something else created, so the chart goes first.
struct HelmRelease {
    release: String,
    namespace: String,
}

async fn chart_installed_with_crd() -> &'static HelmRelease {
    static RELEASE: OnceCell<HelmRelease> = OnceCell::const_new();
    RELEASE
        .get_or_init(|| async {
            let cp = control_plane().await;
            let namespace = cp.create_namespace("helm-install").await;
            let release = "lo-helm".to_string();
            let chart = repo(CHART);
            let output = cp.helm(&[
                "install",
                &release,
                chart.to_str().unwrap(),
                "--namespace",
                &namespace,
                "--set",
                "leaf.existingSecret=leaf-account",
            ]);
            expect_success("helm install", &output);
            wait_for_crd_established(cp).await;
            HelmRelease { release, namespace }
        })
        .await
}

async fn wait_for_crd_established(cp: &ControlPlane) {
    let api = Api::<CustomResourceDefinition>::all(cp.client());
    wait_until(
        &format!("CRD {CRD_NAME} to be Established"),
        Duration::from_secs(30),
        || async {
            let crd = api.get(CRD_NAME).await.map_err(|e| e.to_string())?;
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                Ok(())
            } else {
                Err(format!("conditions {conditions:?}"))
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Copies that must stay in step with the generated CRD
// ---------------------------------------------------------------------------------------------

#[test]
fn chart_and_kustomize_crd_copies_match_the_generated_crd() {
    let source = repo("crds/trimbleconnections.yaml");
    let generated = read(&source);
    for copy in [
        "charts/leaf-operator/files/crds/trimbleconnections.yaml",
        "deploy/crds/trimbleconnections.yaml",
    ] {
        let copied = read(&repo(copy));
        assert!(
            copied == generated,
            "{copy} differs from crds/trimbleconnections.yaml; regenerate every copy with\n    cargo run --bin crdgen -- --write"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Argo CD health check (Lua)
// ---------------------------------------------------------------------------------------------

const HEALTH_DIR: &str = "health/withleaf.io/TrimbleConnection";

#[derive(Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: HealthStatus,
    input_path: String,
}

#[derive(Deserialize, Debug, PartialEq)]
struct HealthStatus {
    status: String,
    message: String,
}

fn health_tests() -> Vec<HealthTest> {
    let path = repo(HEALTH_DIR).join("health_test.yaml");
    let tests: HealthTests = serde_yaml::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not a test list: {e}", path.display()));
    tests.tests
}

/// The Lua interpreter: `$LUA`, else `lua5.4`, else `lua`.
fn lua_interpreter() -> String {
    let candidates: Vec<String> = match std::env::var("LUA") {
        Ok(lua) if !lua.is_empty() => vec![lua],
        _ => vec!["lua5.4".into(), "lua".into()],
    };
    for candidate in &candidates {
        let works = Command::new(candidate)
            .arg("-v")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            return candidate.clone();
        }
    }
    panic!(
        "the Argo CD health check tests need a Lua interpreter and found none of {candidates:?}: \
         install one with `apt-get install -y lua5.4` (or set LUA=/path/to/lua)"
    );
}

/// A YAML value as a Lua table constructor, the way Argo CD hands a resource to a health check.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Sequence(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Mapping(map) => {
            let fields: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let key = k
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| serde_yaml::to_string(k).unwrap());
                    format!("[{}] = {}", lua_string(key.trim()), lua_literal(v))
                })
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        Value::Tagged(tagged) => lua_literal(&tagged.value),
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\{:03}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs health.lua on `input` with a real Lua interpreter and returns (status, message).
fn run_health_check(lua: &str, input: &Value) -> Result<HealthStatus, String> {
    let script = repo(HEALTH_DIR).join("health.lua");
    let program = format!(
        "obj = {}\nlocal hs = dofile({})\nio.write(tostring(hs.status), \"\\n\", tostring(hs.message))\n",
        lua_literal(input),
        lua_string(script.to_str().unwrap())
    );
    let mut child = Command::new(lua)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("failed to run {lua}: {e}"))?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(program.as_bytes())
        .map_err(|e| e.to_string())?;
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!("lua failed: {}", text(&output.stderr)));
    }
    let stdout = text(&output.stdout);
    let (status, message) = stdout
        .split_once('\n')
        .ok_or_else(|| format!("unexpected output {stdout:?}"))?;
    Ok(HealthStatus {
        status: status.to_string(),
        message: message.to_string(),
    })
}

#[test]
fn argo_cd_health_check_gives_the_expected_health_for_every_test_case() {
    let lua = lua_interpreter();
    let tests = health_tests();
    assert!(!tests.is_empty(), "health_test.yaml lists no tests");
    let mut failures = Vec::new();
    for test in &tests {
        let input: Value = serde_yaml::from_str(&read(&repo(HEALTH_DIR).join(&test.input_path)))
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", test.input_path));
        match run_health_check(&lua, &input) {
            Ok(got) if got == test.health_status => {}
            Ok(got) => failures.push(format!(
                "{}: expected {:?}, got {got:?}",
                test.input_path, test.health_status
            )),
            Err(e) => failures.push(format!("{}: {e}", test.input_path)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} health cases failed:\n{}",
        failures.len(),
        tests.len(),
        failures.join("\n")
    );
}

#[test]
fn argo_cd_health_test_cases_cover_every_ready_stalled_suspend_combination() {
    let mut covered = BTreeSet::new();
    for test in health_tests() {
        let input: Value =
            serde_yaml::from_str(&read(&repo(HEALTH_DIR).join(&test.input_path))).unwrap();
        let condition = |type_: &str| -> String {
            input["status"]["conditions"]
                .as_sequence()
                .and_then(|cs| cs.iter().find(|c| c["type"].as_str() == Some(type_)))
                .and_then(|c| c["status"].as_str())
                .unwrap_or("absent")
                .to_string()
        };
        let suspend = input["spec"]["suspend"].as_bool().unwrap_or(false);
        covered.insert((condition("Ready"), condition("Stalled"), suspend));
    }
    let mut missing = Vec::new();
    for ready in ["True", "False", "Unknown", "absent"] {
        for stalled in ["True", "False", "absent"] {
            for suspend in [false, true] {
                if !covered.contains(&(ready.to_string(), stalled.to_string(), suspend)) {
                    missing.push(format!("Ready={ready} Stalled={stalled} suspend={suspend}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "health_test.yaml has no case for:\n{}",
        missing.join("\n")
    );
}

#[test]
fn argo_cd_config_example_embeds_the_tested_health_check() {
    let lua = read(&repo(HEALTH_DIR).join("health.lua"));
    let example_path = repo("docs/examples/gitops/argocd-cm-health.yaml");
    let example: Value = serde_yaml::from_str(&read(&example_path)).unwrap();
    let embedded = example["data"]["resource.customizations.health.withleaf.io_TrimbleConnection"]
        .as_str()
        .unwrap_or_else(|| {
            panic!(
                "{} has no health check for withleaf.io_TrimbleConnection",
                example_path.display()
            )
        });
    assert!(
        embedded.trim() == lua.trim(),
        "{} embeds a health check that differs from {HEALTH_DIR}/health.lua; copy it again",
        example_path.display()
    );
}

// ---------------------------------------------------------------------------------------------
// Docs that must cover what the code has
// ---------------------------------------------------------------------------------------------

#[test]
fn troubleshooting_docs_explain_every_reason() {
    let docs = read(&repo("docs/troubleshooting.md"));
    use leaf_operator::reason::{IntoEnumIterator, Reason};
    let missing: Vec<&str> = Reason::iter()
        .map(|r| r.as_str())
        .filter(|reason| !docs.contains(&format!("`{reason}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md does not explain reasons {missing:?}"
    );
}

/// Every operator flag: (long flag, environment variable, hidden).
fn operator_flags() -> Vec<(String, Option<String>, bool)> {
    use clap::CommandFactory;
    leaf_operator::config::Config::command()
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            if long == "help" || long == "version" {
                return None;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            Some((format!("--{long}"), env, arg.is_hide_set()))
        })
        .collect()
}

#[test]
fn configuration_docs_list_every_flag_and_environment_variable() {
    let docs = read(&repo("docs/configuration.md"));
    let flags = operator_flags();
    assert!(
        flags.len() >= 10,
        "found only {} flags: {flags:?}",
        flags.len()
    );
    let mut missing = Vec::new();
    for (flag, env, _) in &flags {
        if !docs.contains(&format!("`{flag}`")) {
            missing.push(flag.clone());
        }
        if let Some(env) = env
            && !docs.contains(&format!("`{env}`"))
        {
            missing.push(env.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document {missing:?}"
    );
}

#[test]
fn chart_and_kustomize_base_set_every_operator_setting_by_environment() {
    let chart = read(&repo("charts/leaf-operator/templates/deployment.yaml"));
    let kustomize = read(&repo("deploy/deployment.yaml"));
    // The default account is a per-install choice (a Secret), so the base leaves it to overlays;
    // so are Leaf's Alerts, off by default in both (the chart renders them when enabled).
    let overlay_only = |env: &str| {
        ["LEAF_USERNAME", "LEAF_PASSWORD", "LEAF_TOKEN"].contains(&env)
            || env.starts_with("LEAF_ALERTS_")
    };
    let mut missing = Vec::new();
    for (flag, env, hidden) in operator_flags() {
        let Some(env) = env else { continue };
        if hidden {
            continue; // test-only settings
        }
        if !chart.contains(&format!("name: {env}")) {
            missing.push(format!("chart: {env} ({flag})"));
        }
        if !overlay_only(&env) && !kustomize.contains(&format!("name: {env}")) {
            missing.push(format!("deploy/: {env} ({flag})"));
        }
    }
    assert!(
        missing.is_empty(),
        "operator settings not exposed: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Helm chart and kustomize base against the API server
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn helm_lint_passes_with_default_and_namespaced_values() {
    let cp = control_plane().await;
    let chart = repo(CHART);
    let chart = chart.to_str().unwrap();
    expect_success(
        "helm lint (defaults)",
        &cp.helm(&["lint", "--strict", chart]),
    );
    expect_success(
        "helm lint (namespaced, 2 replicas, everything on)",
        &cp.helm(&[
            "lint",
            "--strict",
            chart,
            "--set",
            "watchNamespaces={a,b}",
            "--set",
            "replicaCount=2",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "leaf.existingSecret=leaf-account",
            "--set",
            "leaf.tokenKey=token",
            "--set",
            "labelSelector=shard=a",
            "--set",
            "alerts.enabled=true",
            "--set",
            "alerts.secretName=leaf-webhook",
            "--set",
            "alerts.register=true",
            "--set",
            "alerts.webhookUrl=https://leaf-alerts.example.com/alerts",
        ]),
    );
}

#[tokio::test]
async fn helm_values_schema_rejects_a_typo_and_a_bad_value() {
    let cp = control_plane().await;
    let chart = repo(CHART);
    let chart = chart.to_str().unwrap();
    for (set, expected) in [
        ("replicaCout=2", "replicaCout"),
        ("logging.format=yaml", "/logging/format"),
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
    ] {
        let output = cp.helm(&["template", "x", chart, "--set", set]);
        let stderr = text(&output.stderr);
        assert!(
            !output.status.success(),
            "helm template --set {set} should fail the schema, it rendered"
        );
        assert!(
            stderr.contains(expected),
            "helm template --set {set}: expected an error about {expected}, got {stderr}"
        );
    }
}

#[tokio::test]
async fn helm_template_with_default_values_passes_server_side_dry_run() {
    let cp = control_plane().await;
    chart_installed_with_crd().await;
    let namespace = cp.create_namespace("helm-default").await;
    let manifest = helm_template(cp, "lo-default", &namespace, &[]);
    let objects = documents(&manifest);

    // Defaults: cluster-wide RBAC, no leader election, one replica, CRD kept on uninstall.
    let kinds: BTreeSet<&str> = objects.iter().map(kind_of).collect();
    let expected: BTreeSet<&str> = [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
    ]
    .into();
    assert_eq!(kinds, expected, "kinds rendered with default values");
    let crd = one(&objects, "CustomResourceDefinition");
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"].as_str(),
        Some("keep")
    );
    let deployment = one(&objects, "Deployment");
    assert_eq!(
        env_value(deployment, "LEADER_ELECTION").unwrap()["value"].as_str(),
        Some("false")
    );
    assert_eq!(
        env_value(deployment, "WATCH_NAMESPACES").unwrap()["value"].as_str(),
        Some("")
    );
    assert_eq!(
        deployment["spec"]["strategy"]["type"].as_str(),
        Some("Recreate")
    );

    let output = server_dry_run(cp, &manifest);
    expect_success("kubectl apply --dry-run=server (default values)", &output);
    // The CRD already exists (installed by Helm), so kubectl notes the missing last-applied
    // annotation; any other warning (deprecations, Pod Security) is a defect.
    let stderr = text(&output.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("Warning") && !line.contains("last-applied-configuration"))
        .collect();
    assert!(warnings.is_empty(), "unexpected warnings: {warnings:#?}");
}

#[tokio::test]
async fn helm_template_with_namespaced_values_passes_server_side_dry_run_and_grants_nothing_cluster_wide()
 {
    let cp = control_plane().await;
    chart_installed_with_crd().await;
    let namespace = cp.create_namespace("helm-namespaced").await;
    let watched_a = cp.create_namespace("watched-a").await;
    let watched_b = cp.create_namespace("watched-b").await;
    let list = format!("watchNamespaces={{{watched_a},{watched_b}}}");
    let manifest = helm_template(
        cp,
        "lo-ns",
        &namespace,
        &["--set", &list, "--set", "crds.install=false"],
    );
    let objects = documents(&manifest);

    assert!(
        find(&objects, "ClusterRole").is_empty(),
        "namespaced mode must not render a ClusterRole"
    );
    assert!(
        find(&objects, "ClusterRoleBinding").is_empty(),
        "namespaced mode must not render a ClusterRoleBinding"
    );
    let role_namespaces: BTreeSet<&str> = find(&objects, "Role")
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(
        role_namespaces,
        [watched_a.as_str(), watched_b.as_str()].into()
    );
    let binding_namespaces: BTreeSet<&str> = find(&objects, "RoleBinding")
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(binding_namespaces, role_namespaces);
    let deployment = one(&objects, "Deployment");
    assert_eq!(
        env_value(deployment, "WATCH_NAMESPACES").unwrap()["value"].as_str(),
        Some(format!("{watched_a},{watched_b}").as_str())
    );

    let output = server_dry_run(cp, &manifest);
    expect_success(
        "kubectl apply --dry-run=server (namespaced values)",
        &output,
    );
}

#[tokio::test]
async fn helm_template_with_replicas_enables_leader_election_and_a_disruption_budget() {
    let cp = control_plane().await;
    chart_installed_with_crd().await;
    let namespace = cp.create_namespace("helm-ha").await;
    let manifest = helm_template(
        cp,
        "lo-ha",
        &namespace,
        &[
            "--set",
            "replicaCount=2",
            "--set",
            "crds.install=false",
            "--set",
            "leaf.existingSecret=leaf-account",
            "--set",
            "leaf.tokenKey=token",
            "--set",
            "networkPolicy.enabled=true",
        ],
    );
    let objects = documents(&manifest);
    let deployment = one(&objects, "Deployment");
    assert_eq!(
        env_value(deployment, "LEADER_ELECTION").unwrap()["value"].as_str(),
        Some("true")
    );
    assert_eq!(
        deployment["spec"]["strategy"]["type"].as_str(),
        Some("RollingUpdate")
    );
    let token = env_value(deployment, "LEAF_TOKEN").expect("LEAF_TOKEN from the existing Secret");
    assert_eq!(
        token["valueFrom"]["secretKeyRef"]["name"].as_str(),
        Some("leaf-account")
    );
    assert!(
        env_value(deployment, "LEAF_USERNAME").is_none(),
        "a token account sets no LEAF_USERNAME"
    );
    assert_eq!(
        one(&objects, "PodDisruptionBudget")["spec"]["minAvailable"].as_i64(),
        Some(1)
    );
    let lease_roles: Vec<&Value> = find(&objects, "Role");
    assert_eq!(
        lease_roles.len(),
        1,
        "one Role, for the leader-election Lease"
    );
    assert!(
        serde_yaml::to_string(lease_roles[0])
            .unwrap()
            .contains("coordination.k8s.io")
    );
    one(&objects, "NetworkPolicy");

    let output = server_dry_run(cp, &manifest);
    expect_success("kubectl apply --dry-run=server (2 replicas)", &output);
}

#[tokio::test]
async fn helm_install_succeeds_and_uninstall_keeps_the_crd() {
    let cp = control_plane().await;
    let HelmRelease { release, namespace } = chart_installed_with_crd().await;

    let status = expect_success(
        "helm status",
        &cp.helm(&["status", release, "--namespace", namespace]),
    );
    assert!(status.contains("STATUS: deployed"), "helm status: {status}");
    let fullname = format!("{release}-leaf-operator");
    for (kind, name, ns) in [
        (
            "serviceaccount",
            fullname.as_str(),
            Some(namespace.as_str()),
        ),
        ("deployment", fullname.as_str(), Some(namespace.as_str())),
        (
            "service",
            &format!("{fullname}-metrics"),
            Some(namespace.as_str()),
        ),
        ("clusterrole", fullname.as_str(), None),
        ("clusterrolebinding", fullname.as_str(), None),
    ] {
        let mut args = vec!["get", kind, name];
        if let Some(ns) = ns {
            args.extend(["--namespace", ns]);
        }
        expect_success(&format!("kubectl get {kind} {name}"), &cp.kubectl(&args));
    }

    // An upgrade with changed values goes through.
    let chart = repo(CHART);
    expect_success(
        "helm upgrade",
        &cp.helm(&[
            "upgrade",
            release,
            chart.to_str().unwrap(),
            "--namespace",
            namespace,
            "--reuse-values",
            "--set",
            "concurrency=4",
        ]),
    );

    expect_success(
        "helm uninstall",
        &cp.helm(&["uninstall", release, "--namespace", namespace]),
    );
    let crd = Api::<CustomResourceDefinition>::all(cp.client())
        .get_opt(CRD_NAME)
        .await
        .expect("reading the CRD");
    assert!(
        crd.is_some(),
        "helm uninstall deleted the CRD despite crds.keep=true"
    );
    let deployment = cp.kubectl(&["get", "deployment", &fullname, "--namespace", namespace]);
    assert!(
        !deployment.status.success(),
        "helm uninstall left the Deployment behind"
    );
}

#[tokio::test]
async fn kustomize_base_applies() {
    let cp = control_plane().await;
    chart_installed_with_crd().await;
    let deploy = repo("deploy");
    let output = cp.kubectl(&["apply", "-k", deploy.to_str().unwrap()]);
    expect_success("kubectl apply -k deploy/", &output);
    for (kind, name) in [
        ("serviceaccount", "leaf-operator"),
        ("deployment", "leaf-operator"),
        ("service", "leaf-operator-metrics"),
    ] {
        expect_success(
            &format!("kubectl get {kind} {name}"),
            &cp.kubectl(&["get", kind, name, "--namespace", "leaf-operator"]),
        );
    }
    expect_success(
        "kubectl get clusterrole",
        &cp.kubectl(&["get", "clusterrole", "leaf-operator"]),
    );
    wait_for_crd_established(cp).await;
}

/// What must agree between two renderings of one object: everything but labels and annotations.
fn comparable(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_mapping_mut) {
        metadata.remove("labels");
        metadata.remove("annotations");
    }
    object
}

#[tokio::test]
async fn kustomize_base_is_equivalent_to_the_chart_defaults() {
    let cp = control_plane().await;
    let chart_objects = documents(&helm_template(cp, "leaf-operator", "leaf-operator", &[]));
    let deploy = repo("deploy");
    let kustomize = expect_success(
        "kubectl kustomize deploy/",
        &cp.kubectl(&["kustomize", deploy.to_str().unwrap()]),
    );
    let kustomize_objects: Vec<Value> = documents(&kustomize)
        .into_iter()
        .filter(|o| kind_of(o) != "Namespace")
        .collect();

    let index = |objects: &[Value]| -> BTreeMap<(String, String), Value> {
        objects
            .iter()
            .map(|o| {
                (
                    (kind_of(o).to_string(), name_of(o).to_string()),
                    comparable(o),
                )
            })
            .collect()
    };
    let chart = index(&chart_objects);
    let kustomize = index(&kustomize_objects);
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        kustomize.keys().collect::<Vec<_>>(),
        "the chart's defaults and deploy/ create different objects"
    );
    for (key, chart_object) in &chart {
        let kustomize_object = &kustomize[key];
        assert!(
            chart_object == kustomize_object,
            "{key:?} differs between the chart's defaults and deploy/:\n--- chart ---\n{}\n--- deploy/ ---\n{}",
            serde_yaml::to_string(chart_object).unwrap(),
            serde_yaml::to_string(kustomize_object).unwrap()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Restricted Pod Security
// ---------------------------------------------------------------------------------------------

/// A Pod built from a Deployment's template, for a dry-run through PodSecurity admission.
fn pod_from(deployment: &Value, namespace: &str, name: &str) -> Value {
    let mut pod = serde_yaml::Mapping::new();
    pod.insert("apiVersion".into(), "v1".into());
    pod.insert("kind".into(), "Pod".into());
    let metadata: Value =
        serde_yaml::from_str(&format!("{{name: {name}, namespace: {namespace}}}")).unwrap();
    pod.insert("metadata".into(), metadata);
    pod.insert(
        "spec".into(),
        deployment["spec"]["template"]["spec"].clone(),
    );
    Value::Mapping(pod)
}

/// Applies `deployment` into a namespace labelled restricted (warn and enforce) and checks that
/// neither the Deployment nor a Pod from its template gets a warning or a refusal.
async fn assert_restricted(cp: &ControlPlane, what: &str, deployment: &Value, namespace: &str) {
    let mut deployment = deployment.clone();
    deployment["metadata"]["namespace"] = namespace.into();
    let output = cp.kubectl_with_stdin(&["apply", "-f", "-"], &to_yaml(&[&deployment]));
    expect_success(&format!("kubectl apply of the {what} Deployment"), &output);
    let stderr = text(&output.stderr);
    assert!(
        !stderr.contains("Warning"),
        "applying the {what} Deployment printed a warning: {stderr}"
    );

    // Deployments are only warned about; Pods are what `enforce` refuses. No kubelet runs here,
    // so create the Pod as a server-side dry run: it still goes through admission.
    let pod = pod_from(&deployment, namespace, "pod-security-check");
    let output = server_dry_run(cp, &to_yaml(&[&pod]));
    expect_success(
        &format!("a Pod from the {what} template under enforce=restricted"),
        &output,
    );
    let stderr = text(&output.stderr);
    assert!(
        !stderr.contains("Warning"),
        "a Pod from the {what} template got a warning: {stderr}"
    );
}

#[tokio::test]
async fn deployments_meet_the_restricted_pod_security_profile() {
    let cp = control_plane().await;
    let namespace = cp.create_namespace("restricted").await;
    label_namespace(
        cp,
        &namespace,
        &[
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/warn", "restricted"),
        ],
    )
    .await;

    // The check can fail: a template that allows privilege escalation is refused here.
    let chart_objects = documents(&helm_template(
        cp,
        "lo-psa",
        &namespace,
        &["--set", "crds.install=false"],
    ));
    let chart_deployment = one(&chart_objects, "Deployment").clone();
    let mut unsafe_deployment = chart_deployment.clone();
    unsafe_deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] =
        true.into();
    let output = server_dry_run(
        cp,
        &to_yaml(&[&pod_from(&unsafe_deployment, &namespace, "unsafe")]),
    );
    assert!(
        !output.status.success() && text(&output.stderr).contains("allowPrivilegeEscalation"),
        "the restricted namespace did not refuse a Pod with allowPrivilegeEscalation=true: {}",
        text(&output.stderr)
    );

    assert_restricted(cp, "chart's", &chart_deployment, &namespace).await;

    let deploy = repo("deploy");
    let kustomize = expect_success(
        "kubectl kustomize deploy/",
        &cp.kubectl(&["kustomize", deploy.to_str().unwrap()]),
    );
    let kustomize_objects = documents(&kustomize);
    assert_restricted(
        cp,
        "kustomize base's",
        one(&kustomize_objects, "Deployment"),
        &namespace,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// RBAC: sufficient and minimal, with the chart's own ServiceAccount
// ---------------------------------------------------------------------------------------------

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::ResourceExt;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use leaf_operator::crd::{FINALIZER, TrimbleConnection};
use leaf_standin::{StandIn, StandInConfig};
use support::operator::{Operator, OperatorOptions};

/// The two RBAC tests run one after the other: a cluster-wide operator would otherwise reconcile
/// the namespaced test's resources.
static RBAC_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LEAF_USERNAME: &str = "operator@example.com";
const LEAF_PASSWORD: &str = "install-test-password";

fn trimble_secret(name: &str, refresh_token: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        string_data: Some(
            [
                ("clientId".to_string(), "install-test-client".to_string()),
                (
                    "clientSecret".to_string(),
                    "install-test-client-secret".to_string(),
                ),
                ("refreshToken".to_string(), refresh_token.to_string()),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

fn trimble_connection(name: &str, leaf_user: &str, secret: &str) -> TrimbleConnection {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "withleaf.io/v1alpha1",
        "kind": "TrimbleConnection",
        "metadata": { "name": name },
        "spec": { "leafUserId": leaf_user, "credentialsSecretRef": { "name": secret } },
    }))
    .expect("a valid TrimbleConnection")
}

/// (status, reason) of the Ready condition at the current generation, if any.
fn ready(tc: &TrimbleConnection) -> Option<(String, String)> {
    let status = tc.status.as_ref()?;
    if status.observed_generation != tc.metadata.generation {
        return None;
    }
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

async fn wait_for_ready(
    api: &Api<TrimbleConnection>,
    name: &str,
    status: &str,
    reason: &str,
) -> TrimbleConnection {
    let expected = (status.to_string(), reason.to_string());
    wait_until(
        &format!("{name} to be Ready={status} ({reason})"),
        Duration::from_secs(60),
        || async {
            let tc = api.get(name).await.map_err(|e| e.to_string())?;
            if ready(&tc).as_ref() == Some(&expected) {
                Ok(tc)
            } else {
                Err(format!("Ready is {:?}", ready(&tc)))
            }
        },
    )
    .await
}

async fn request_reconcile(api: &Api<TrimbleConnection>, name: &str, value: &str) {
    let patch = serde_json::json!({ "metadata": { "annotations": {
        leaf_operator::crd::RECONCILE_REQUESTED_AT_ANNOTATION: value } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotating the TrimbleConnection");
}

/// `kubectl auth can-i` as the ServiceAccount (impersonated by the admin).
fn can_i(
    cp: &ControlPlane,
    service_account: &str,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let mut args = vec!["auth", "can-i", verb, resource, "--as", service_account];
    match namespace {
        Some(ns) => args.extend(["--namespace", ns]),
        None => args.push("--all-namespaces"),
    }
    let output = cp.kubectl(&args);
    text(&output.stdout).trim() == "yes"
}

/// Installs the chart (CRD already present) and returns the kubeconfig of its ServiceAccount.
async fn install_for_rbac(
    cp: &ControlPlane,
    release: &str,
    namespace: &str,
    values: &[&str],
) -> (PathBuf, String) {
    let chart = repo(CHART);
    let mut args = vec![
        "install",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "--set",
        "crds.install=false",
    ];
    args.extend_from_slice(values);
    expect_success(&format!("helm install {release}"), &cp.helm(&args));
    let service_account = format!("{release}-leaf-operator");
    let token = cp.service_account_token(namespace, &service_account).await;
    let kubeconfig = cp.kubeconfig_for_token(release, &token);
    (
        kubeconfig,
        format!("system:serviceaccount:{namespace}:{service_account}"),
    )
}

/// Create, rotate, check and delete one TrimbleConnection with an operator that runs as the
/// chart's ServiceAccount; asserts that every step works and that nothing was forbidden.
async fn lifecycle(
    cp: &ControlPlane,
    leaf: &StandIn,
    operator: &Operator,
    namespace: &str,
    leaf_user: &str,
) {
    let client = cp.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api: Api<TrimbleConnection> = Api::namespaced(client.clone(), namespace);
    let name = "smith-farms";

    // Create.
    secrets
        .create(
            &PostParams::default(),
            &trimble_secret("smith-farms-trimble", "refresh-1"),
        )
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &trimble_connection(name, leaf_user, "smith-farms-trimble"),
    )
    .await
    .unwrap();
    let created = wait_for_ready(&api, name, "True", "CredentialValid").await;
    assert!(
        created.finalizers().iter().any(|f| f == FINALIZER),
        "the finalizer was not added"
    );
    let credential = leaf
        .credential(leaf_user)
        .expect("the operator created the credential in Leaf");
    assert_eq!(credential.submitted_refresh_token, "refresh-1");
    let fingerprint = created
        .status
        .as_ref()
        .and_then(|s| s.secret_fingerprint.clone());

    // Rotate: a new refresh token in the Secret replaces the credential.
    secrets
        .replace("smith-farms-trimble", &PostParams::default(), &{
            let mut secret = secrets.get("smith-farms-trimble").await.unwrap();
            secret.data = None;
            secret.string_data = trimble_secret("smith-farms-trimble", "refresh-2").string_data;
            secret
        })
        .await
        .unwrap();
    wait_until(
        "the credential to be rotated in Leaf",
        Duration::from_secs(60),
        || async {
            match leaf.credential(leaf_user) {
                Some(c) if c.submitted_refresh_token == "refresh-2" => Ok(()),
                other => Err(format!("{:?}", other.map(|c| c.submitted_refresh_token))),
            }
        },
    )
    .await;
    let rotated = wait_for_ready(&api, name, "True", "CredentialValid").await;
    assert_ne!(
        rotated
            .status
            .as_ref()
            .and_then(|s| s.secret_fingerprint.clone()),
        fingerprint
    );

    // Check: Leaf flips the credential; a requested check reports it, and recovers.
    assert!(leaf.set_status(leaf_user, "UNAUTHENTICATED"));
    request_reconcile(&api, name, "check-1").await;
    wait_for_ready(&api, name, "False", "CredentialInvalid").await;
    assert!(leaf.set_status(leaf_user, "OK"));
    request_reconcile(&api, name, "check-2").await;
    wait_for_ready(&api, name, "True", "CredentialValid").await;

    // Events were written (events.k8s.io create/patch).
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), namespace);
    wait_until("the operator's Events", Duration::from_secs(30), || async {
        let list = events
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let reasons: BTreeSet<String> = list
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason.clone())
            .collect();
        if reasons.contains("Created")
            && reasons.contains("Rotated")
            && reasons.contains("CredentialInvalid")
        {
            Ok(())
        } else {
            Err(format!("reasons {reasons:?}"))
        }
    })
    .await;

    // Delete: the finalizer removes the credential from Leaf, then lets go.
    api.delete(name, &DeleteParams::default()).await.unwrap();
    wait_until(
        "the TrimbleConnection to be gone",
        Duration::from_secs(60),
        || async {
            match api.get_opt(name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(tc) => Err(format!(
                    "still there, finalizers {:?}, Ready {:?}",
                    tc.finalizers(),
                    ready(&tc)
                )),
            }
        },
    )
    .await;
    assert!(
        leaf.credential(leaf_user).is_none(),
        "the credential is still in Leaf after deletion"
    );

    let log = operator.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "the operator hit a permission it lacks:\n{}",
        log.lines()
            .filter(|l| l.contains("orbidden"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Verbs the chart grants beyond what the operator needs would show up here.
fn assert_minimal(cp: &ControlPlane, sa: &str, namespace: Option<&str>) {
    let needed = [
        ("get", "trimbleconnections.withleaf.io"),
        ("list", "trimbleconnections.withleaf.io"),
        ("watch", "trimbleconnections.withleaf.io"),
        ("patch", "trimbleconnections.withleaf.io"),
        ("update", "trimbleconnections.withleaf.io"),
        ("patch", "trimbleconnections.withleaf.io/status"),
        ("get", "secrets"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("create", "events.events.k8s.io"),
        ("patch", "events.events.k8s.io"),
    ];
    for (verb, resource) in needed {
        assert!(
            can_i(cp, sa, verb, resource, namespace),
            "{sa} cannot {verb} {resource} in {namespace:?}"
        );
    }
    let not_needed = [
        ("create", "trimbleconnections.withleaf.io"),
        ("delete", "trimbleconnections.withleaf.io"),
        ("create", "secrets"),
        ("update", "secrets"),
        ("patch", "secrets"),
        ("delete", "secrets"),
        ("list", "configmaps"),
        ("get", "pods"),
        ("create", "events"),
        ("delete", "events.events.k8s.io"),
        ("list", "leases.coordination.k8s.io"),
        ("delete", "leases.coordination.k8s.io"),
        ("create", "roles.rbac.authorization.k8s.io"),
    ];
    for (verb, resource) in not_needed {
        assert!(
            !can_i(cp, sa, verb, resource, namespace),
            "{sa} can {verb} {resource} in {namespace:?}: broader than needed"
        );
    }
}

#[tokio::test]
async fn cluster_wide_rbac_is_enough_for_the_whole_lifecycle_and_no_more() {
    let _serial = RBAC_SERIAL.lock().await;
    let cp = control_plane().await;
    chart_installed_with_crd().await;
    let release_ns = cp.create_namespace("rbac-cluster").await;
    let growers = cp.create_namespace("growers-cw").await;
    let (kubeconfig, sa) = install_for_rbac(
        cp,
        "lo-rbac-cw",
        &release_ns,
        &["--set", "leaderElection.enabled=true"],
    )
    .await;
    assert_minimal(cp, &sa, Some(&growers));
    assert!(
        can_i(cp, &sa, "list", "secrets", None),
        "cluster-wide mode lists Secrets in all namespaces"
    );
    assert!(can_i(
        cp,
        &sa,
        "create",
        "leases.coordination.k8s.io",
        Some(&release_ns)
    ));
    assert!(
        !can_i(
            cp,
            &sa,
            "create",
            "leases.coordination.k8s.io",
            Some(&growers)
        ),
        "Leases only in the release namespace"
    );

    let leaf_user = "user-cluster-wide";
    let leaf = StandIn::start(
        StandInConfig::default()
            .with_account(LEAF_USERNAME, LEAF_PASSWORD)
            .with_user(leaf_user),
    )
    .await;
    let mut options =
        OperatorOptions::new(&growers, &leaf.origin()).account(LEAF_USERNAME, LEAF_PASSWORD);
    options.namespaces = Vec::new(); // all namespaces
    options.env = vec![
        ("KUBECONFIG".into(), kubeconfig.display().to_string()),
        ("LEADER_ELECTION".into(), "true".into()),
        ("POD_NAMESPACE".into(), release_ns.clone()),
        ("LEADER_ELECTION_LEASE_NAME".into(), "leaf-operator".into()),
    ];
    let operator = Operator::start(cp, options).await;
    lifecycle(cp, &leaf, &operator, &growers, leaf_user).await;
}

#[tokio::test]
async fn namespaced_rbac_is_enough_and_the_operator_never_touches_other_namespaces() {
    let _serial = RBAC_SERIAL.lock().await;
    let cp = control_plane().await;
    chart_installed_with_crd().await;
    let release_ns = cp.create_namespace("rbac-namespaced").await;
    let growers = cp.create_namespace("growers-ns").await;
    let outside = cp.create_namespace("outside").await;
    let list = format!("watchNamespaces={{{growers}}}");
    let (kubeconfig, sa) = install_for_rbac(
        cp,
        "lo-rbac-ns",
        &release_ns,
        &["--set", &list, "--set", "leaderElection.enabled=true"],
    )
    .await;
    assert_minimal(cp, &sa, Some(&growers));
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("list", "trimbleconnections.withleaf.io"),
    ] {
        assert!(
            !can_i(cp, &sa, verb, resource, Some(&outside)),
            "namespaced mode can {verb} {resource} in {outside}"
        );
        assert!(
            !can_i(cp, &sa, verb, resource, None),
            "namespaced mode can {verb} {resource} cluster-wide"
        );
    }

    let leaf_user = "user-namespaced";
    let outside_user = "user-outside";
    let leaf = StandIn::start(
        StandInConfig::default()
            .with_account(LEAF_USERNAME, LEAF_PASSWORD)
            .with_user(leaf_user)
            .with_user(outside_user),
    )
    .await;

    // A connection outside the list, created before the operator starts.
    let outside_api: Api<TrimbleConnection> = Api::namespaced(cp.client(), &outside);
    Api::<Secret>::namespaced(cp.client(), &outside)
        .create(
            &PostParams::default(),
            &trimble_secret("outside-trimble", "refresh-outside"),
        )
        .await
        .unwrap();
    outside_api
        .create(
            &PostParams::default(),
            &trimble_connection("outside", outside_user, "outside-trimble"),
        )
        .await
        .unwrap();

    let mut options =
        OperatorOptions::new(&growers, &leaf.origin()).account(LEAF_USERNAME, LEAF_PASSWORD);
    options.env = vec![
        ("KUBECONFIG".into(), kubeconfig.display().to_string()),
        ("LEADER_ELECTION".into(), "true".into()),
        ("POD_NAMESPACE".into(), release_ns.clone()),
        ("LEADER_ELECTION_LEASE_NAME".into(), "leaf-operator".into()),
    ];
    let operator = Operator::start(cp, options).await;
    lifecycle(cp, &leaf, &operator, &growers, leaf_user).await;

    // By now the operator has reconciled its own connection many times; the outside one is as it
    // was created: no finalizer, no status, no credential in Leaf, never named in the log.
    let untouched = outside_api.get("outside").await.unwrap();
    assert!(
        untouched.finalizers().is_empty(),
        "the operator added its finalizer outside its namespaces"
    );
    assert!(
        untouched.status.is_none(),
        "the operator wrote status outside its namespaces"
    );
    assert!(
        leaf.credential(outside_user).is_none(),
        "the operator created a credential for an outside connection"
    );
    assert!(
        !operator.log().contains(&outside),
        "the operator's log mentions namespace {outside}"
    );
    drop(operator);
    outside_api
        .delete("outside", &DeleteParams::default())
        .await
        .unwrap();
}
