//! The alerts parts of the install paths, against the real API server: the chart's receiver
//! Service (the leader only, with leader election), Ingress, NetworkPolicy rule and the Role for
//! exactly the signing Secret; the kustomize component; shards as releases side by side.

mod support;

use std::process::Output;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde::Deserialize;
use serde_yaml::Value;

use leaf_standin::{StandIn, StandInConfig};
use support::alerts::{SIGNING_SECRET, free_port, receiver_url};
use support::install::{SET_IMAGE, assert_chart_matches_components};
use support::operator::{Operator, OperatorOptions};
use support::{ControlPlane, control_plane, repo_root, wait_until};

const CHART: &str = "charts/leaf-operator";
const LEADER_LABEL: &str = "withleaf.io/leader";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("invalid YAML: {e}\n{yaml}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind_of(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// The one object of `kind` named `name`.
fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| kind_of(o) == kind && name_of(o) == name)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} {name}");
    found[0]
}

fn names(objects: &[Value], kind: &str) -> Vec<String> {
    objects
        .iter()
        .filter(|o| kind_of(o) == kind)
        .map(|o| name_of(o).to_string())
        .collect()
}

fn env_value<'a>(deployment: &'a Value, name: &str) -> Option<&'a Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

fn env_str<'a>(deployment: &'a Value, name: &str) -> Option<&'a str> {
    env_value(deployment, name).and_then(|e| e["value"].as_str())
}

fn helm_template(cp: &ControlPlane, release: &str, namespace: &str, args: &[&str]) -> String {
    let chart = repo_root().join(CHART);
    let mut all = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "--set",
        SET_IMAGE,
        "--set",
        "crds.install=false",
    ];
    all.extend_from_slice(args);
    expect_success(&format!("helm template {args:?}"), &cp.helm(&all))
}

/// Values of a release with alerts, registration and an Ingress.
const ALERTS: &[&str] = &[
    "--set",
    "alerts.enabled=true",
    "--set",
    "alerts.secretName=leaf-webhook",
    "--set",
    "alerts.register=true",
    "--set",
    "alerts.ingress.enabled=true",
    "--set",
    "alerts.ingress.host=leaf-alerts.example.com",
    "--set",
    "alerts.ingress.className=nginx",
    "--set",
    "alerts.ingress.tls[0].secretName=leaf-alerts-tls",
    "--set",
    "alerts.ingress.tls[0].hosts[0]=leaf-alerts.example.com",
    "--set",
    "leaf.existingSecret=leaf-account",
    "--set",
    "leaf.tokenKey=token",
];

/// The rules of a Role as (apiGroups, resources, resourceNames, verbs) strings.
fn rules(role: &Value) -> Vec<(String, String, String, String)> {
    let join = |v: &Value| {
        v.as_sequence()
            .map(|items| {
                items
                    .iter()
                    .map(|i| i.as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    role["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                join(&r["apiGroups"]),
                join(&r["resources"]),
                join(&r["resourceNames"]),
                join(&r["verbs"]),
            )
        })
        .collect()
}

fn rule(
    groups: &str,
    resources: &str,
    names: &str,
    verbs: &str,
) -> (String, String, String, String) {
    (groups.into(), resources.into(), names.into(), verbs.into())
}

#[tokio::test]
async fn helm_lint_passes_with_alerts_an_ingress_a_network_policy_and_two_replicas() {
    let cp = control_plane().await;
    let chart = repo_root().join(CHART);
    let mut args = vec![
        "lint",
        "--strict",
        chart.to_str().unwrap(),
        "--set",
        SET_IMAGE,
    ];
    args.extend_from_slice(ALERTS);
    args.extend([
        "--set",
        "replicaCount=2",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "alerts.ingressFrom[0].namespaceSelector.matchLabels.name=ingress-nginx",
    ]);
    expect_success("helm lint (alerts)", &cp.helm(&args));
}

#[tokio::test]
async fn with_two_replicas_the_receiver_service_selects_the_leader_and_everything_passes_server_side_dry_run()
 {
    let cp = control_plane().await;
    let namespace = cp.create_namespace("alerts-ha").await;
    let mut args = ALERTS.to_vec();
    args.extend([
        "--set",
        "replicaCount=2",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "alerts.ingressFrom[0].namespaceSelector.matchLabels.name=ingress-nginx",
    ]);
    let manifest = helm_template(cp, "lo-alerts", &namespace, &args);
    let objects = documents(&manifest);
    let fullname = "lo-alerts-leaf-operator";
    let alerts_name = format!("{fullname}-alerts");

    let deployment = object(&objects, "Deployment", fullname);
    assert_eq!(env_str(deployment, "LEADER_ELECTION"), Some("true"));
    assert_eq!(env_str(deployment, "LEADER_POD_LABEL"), Some(LEADER_LABEL));
    assert_eq!(
        env_value(deployment, "POD_UID").unwrap()["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.uid")
    );
    assert_eq!(env_str(deployment, "LEAF_ALERTS_ADDR"), Some("[::]:8443"));
    assert_eq!(
        env_str(deployment, "LEAF_ALERTS_SECRET_NAME"),
        Some("leaf-webhook")
    );
    assert_eq!(
        env_str(deployment, "LEAF_ALERTS_WEBHOOK_URL"),
        Some("https://leaf-alerts.example.com/alerts"),
        "the Ingress is the URL Leaf delivers to"
    );
    let ports = &deployment["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(
        ports
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["name"].as_str() == Some("alerts")
                && p["containerPort"].as_i64() == Some(8443)),
        "{ports:?}"
    );

    // The Service: the leader only.
    let service = object(&objects, "Service", &alerts_name);
    let selector = &service["spec"]["selector"];
    assert_eq!(
        selector[LEADER_LABEL].as_str(),
        Some("true"),
        "{selector:?}"
    );
    assert_eq!(
        selector["app.kubernetes.io/instance"].as_str(),
        Some("lo-alerts")
    );
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        Some("alerts")
    );

    // The Ingress: only POST /alerts's path, to that Service, with TLS.
    let ingress = object(&objects, "Ingress", &alerts_name);
    let rule0 = &ingress["spec"]["rules"][0];
    assert_eq!(rule0["host"].as_str(), Some("leaf-alerts.example.com"));
    let path = &rule0["http"]["paths"][0];
    assert_eq!(
        (path["path"].as_str(), path["pathType"].as_str()),
        (Some("/alerts"), Some("Exact"))
    );
    assert_eq!(
        path["backend"]["service"]["name"].as_str(),
        Some(alerts_name.as_str())
    );
    assert_eq!(ingress["spec"]["ingressClassName"].as_str(), Some("nginx"));
    assert_eq!(
        ingress["spec"]["tls"][0]["secretName"].as_str(),
        Some("leaf-alerts-tls")
    );

    // The NetworkPolicy rule: the alerts port, from the Ingress controller only.
    let policy = object(&objects, "NetworkPolicy", &alerts_name);
    let ingress_rule = &policy["spec"]["ingress"][0];
    assert_eq!(ingress_rule["ports"][0]["port"].as_str(), Some("alerts"));
    assert_eq!(
        ingress_rule["from"][0]["namespaceSelector"]["matchLabels"]["name"].as_str(),
        Some("ingress-nginx")
    );
    assert_eq!(
        policy["spec"]["policyTypes"].as_sequence().map(Vec::len),
        Some(1),
        "ingress only: the operator's own policy keeps egress"
    );
    assert_eq!(names(&objects, "NetworkPolicy").len(), 2);

    // RBAC: exactly the signing Secret, the Pod's Events, the webhook record (registration is
    // on) and patching Pods for the label.
    let role = object(&objects, "Role", &alerts_name);
    assert_eq!(
        rules(role),
        vec![
            rule("", "secrets", "leaf-webhook", "get,list,watch"),
            rule("events.k8s.io", "events", "", "create,patch"),
            rule("", "configmaps", "", "create"),
            rule(
                "",
                "configmaps",
                "lo-alerts-leaf-operator-alerts-webhook",
                "get,update"
            ),
            rule("", "pods", "", "patch"),
        ]
    );
    object(&objects, "RoleBinding", &alerts_name);

    let output = cp.kubectl_with_stdin(&["apply", "--dry-run=server", "-f", "-"], &manifest);
    expect_success(
        "kubectl apply --dry-run=server (alerts, 2 replicas)",
        &output,
    );
}

#[tokio::test]
async fn with_one_replica_the_service_selects_the_pod_and_no_pod_rights_are_granted() {
    let cp = control_plane().await;
    let manifest = helm_template(
        cp,
        "lo-one",
        "leaf-operator",
        &[
            "--set",
            "alerts.enabled=true",
            "--set",
            "alerts.secretName=leaf-webhook",
        ],
    );
    let objects = documents(&manifest);
    let deployment = object(&objects, "Deployment", "lo-one-leaf-operator");
    assert_eq!(env_str(deployment, "LEADER_POD_LABEL"), Some(""));
    assert!(env_value(deployment, "LEAF_ALERTS_WEBHOOK_URL").is_none());
    let service = object(&objects, "Service", "lo-one-leaf-operator-alerts");
    assert!(service["spec"]["selector"][LEADER_LABEL].is_null());
    let role = object(&objects, "Role", "lo-one-leaf-operator-alerts");
    assert!(
        !rules(role).iter().any(|r| r.1 == "pods"),
        "{:?}",
        rules(role)
    );
    assert!(
        !rules(role).iter().any(|r| r.1 == "configmaps"),
        "no webhook record without registration: {:?}",
        rules(role)
    );
    assert!(names(&objects, "Ingress").is_empty());
    assert!(
        names(&objects, "NetworkPolicy").is_empty(),
        "no NetworkPolicy unless networkPolicy.enabled"
    );
    // Alerts off (the default): none of it.
    let off = documents(&helm_template(cp, "lo-off", "leaf-operator", &[]));
    for kind in ["Ingress", "NetworkPolicy", "Role"] {
        assert!(names(&off, kind).is_empty(), "{kind}");
    }
    assert_eq!(names(&off, "Service"), vec!["lo-off-leaf-operator-metrics"]);
}

#[tokio::test]
async fn the_values_schema_and_the_templates_refuse_bad_alerts_values() {
    let cp = control_plane().await;
    let chart = repo_root().join(CHART);
    let chart = chart.to_str().unwrap();
    for (sets, expected) in [
        (vec!["alerts.service.type=Headless"], "/alerts/service/type"),
        (
            vec!["alerts.leaderLabel=not a label"],
            "/alerts/leaderLabel",
        ),
        (vec!["alerts.ingress.hosts=x"], "hosts"),
        (
            vec![
                "alerts.enabled=true",
                "alerts.secretName=s",
                "alerts.ingress.enabled=true",
            ],
            "alerts.ingress.host is required",
        ),
        (vec!["alerts.enabled=true"], "alerts.secretName is required"),
    ] {
        let mut args = vec!["template", "x", chart, "--set", SET_IMAGE];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let output = cp.helm(&args);
        assert!(!output.status.success(), "{sets:?} rendered");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(expected),
            "{sets:?}: expected {expected:?} in {stderr}"
        );
    }
}

/// Applies the ServiceAccount, Roles and RoleBindings of a rendered chart (nothing else).
fn apply_service_account_and_roles(cp: &ControlPlane, manifest: &str) {
    let keep: Vec<Value> = documents(manifest)
        .into_iter()
        .filter(|o| ["ServiceAccount", "Role", "RoleBinding"].contains(&kind_of(o)))
        .collect();
    let yaml = keep
        .iter()
        .map(|o| serde_yaml::to_string(o).unwrap())
        .collect::<Vec<_>>()
        .join("---\n");
    expect_success(
        "kubectl apply (ServiceAccount and Roles)",
        &cp.kubectl_with_stdin(&["apply", "-f", "-"], &yaml),
    );
}

/// The operator's view of the API with its own ServiceAccount's token.
async fn operator_client(cp: &ControlPlane, namespace: &str, sa: &str) -> kube::Client {
    cp.client_with_token(&cp.service_account_token(namespace, sa).await)
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

#[tokio::test]
async fn the_alerts_role_lets_the_operator_watch_exactly_its_signing_secret() {
    let cp = control_plane().await;
    let namespace = cp.create_namespace("alerts-rbac").await;
    let elsewhere = cp.create_namespace("alerts-rbac-watched").await;
    // Namespaced mode watching another namespace: in its own namespace the operator has only
    // what the alerts Role grants.
    let watched = format!("watchNamespaces={{{elsewhere}}}");
    let mut args = ALERTS.to_vec();
    args.extend(["--set", &watched, "--set", "replicaCount=2"]);
    let manifest = helm_template(cp, "lo-rbac", &namespace, &args);
    apply_service_account_and_roles(cp, &manifest);
    let admin_secrets: Api<Secret> = Api::namespaced(cp.client(), &namespace);
    for name in ["leaf-webhook", "leaf-account"] {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "stringData": {"secret": "s"},
        }))
        .unwrap();
        admin_secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create a Secret");
    }
    let client = operator_client(cp, &namespace, "lo-rbac-leaf-operator").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);

    // What the operator does: GET it, and watch it by name (list + watch, field selector).
    secrets
        .get("leaf-webhook")
        .await
        .expect("get the signing Secret");
    let by_name = ListParams::default().fields("metadata.name=leaf-webhook");
    let listed = secrets.list(&by_name).await.expect("list it by name");
    assert_eq!(listed.items.len(), 1);
    let config = watcher::Config::default().fields("metadata.name=leaf-webhook");
    let mut stream = watcher(secrets.clone(), config).boxed();
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
        .await
        .expect("the watch answers")
        .expect("an event");
    assert!(
        first.is_ok(),
        "watching the signing Secret by name: {first:?}"
    );
    // Nothing else: no other Secret, no list of all of them.
    assert!(forbidden(secrets.get("leaf-account").await));
    assert!(forbidden(secrets.list(&ListParams::default()).await));

    // Events about its Pod, and the leader label on Pods in its namespace.
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let event: Event = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "op.1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "type": "Warning", "reason": "PollingFallback", "action": "Polling",
        "note": "test", "reportingController": "leaf-operator", "reportingInstance": "op",
        "regarding": {"apiVersion": "v1", "kind": "Pod", "name": "op", "namespace": namespace},
    }))
    .unwrap();
    events
        .create(&PostParams::default(), &event)
        .await
        .expect("create an Event in its namespace");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "op"},
        "spec": {"containers": [{"name": "operator", "image": "leaf-operator"}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(cp.client(), &namespace)
        .create(&PostParams::default(), &pod)
        .await
        .expect("create the Pod");
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let patch = serde_json::json!({"metadata": {"labels": {LEADER_LABEL: "true"}}});
    pods.patch("op", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label its own Pod");
    assert!(forbidden(pods.get("op").await), "patch only, no reads");
}

#[tokio::test]
async fn a_registering_operator_as_the_charts_service_account_keeps_exactly_its_webhook_record() {
    const LEAF_USERNAME: &str = "operator@example.com";
    const LEAF_PASSWORD: &str = "install-alerts-password";
    let cp = control_plane().await;
    cp.install_crd().await;
    let namespace = cp.create_namespace("alerts-record").await;
    let watched = cp.create_namespace("alerts-record-watched").await;
    // Namespaced mode, two replicas (leader election), registration on: in its own namespace
    // the operator has only the alerts and leader-election Roles.
    let list = format!("watchNamespaces={{{watched}}}");
    let mut args = ALERTS.to_vec();
    args.extend(["--set", &list, "--set", "replicaCount=2"]);
    apply_service_account_and_roles(cp, &helm_template(cp, "lo-rec", &namespace, &args));
    let signing: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "leaf-webhook"}, "stringData": {"secret": SIGNING_SECRET},
    }))
    .unwrap();
    Api::<Secret>::namespaced(cp.client(), &namespace)
        .create(&PostParams::default(), &signing)
        .await
        .expect("create the signing Secret");

    // The real operator, as the chart's ServiceAccount, registering with the stand-in.
    let leaf =
        StandIn::start(StandInConfig::default().with_account(LEAF_USERNAME, LEAF_PASSWORD)).await;
    let port = free_port();
    let token = cp
        .service_account_token(&namespace, "lo-rec-leaf-operator")
        .await;
    let kubeconfig = cp.kubeconfig_for_token("lo-rec", &token);
    let mut options =
        OperatorOptions::new(&watched, &leaf.origin()).account(LEAF_USERNAME, LEAF_PASSWORD);
    options.env = [
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("LEADER_ELECTION", "true".to_string()),
        ("POD_NAMESPACE", namespace.clone()),
        // The chart names the Lease, and so the record, after the release.
        (
            "LEADER_ELECTION_LEASE_NAME",
            "lo-rec-leaf-operator".to_string(),
        ),
        ("LEAF_ALERTS_ADDR", format!("127.0.0.1:{port}")),
        ("LEAF_ALERTS_SECRET_NAME", "leaf-webhook".to_string()),
        ("LEAF_ALERTS_REGISTER", "true".to_string()),
        ("LEAF_ALERTS_WEBHOOK_URL", receiver_url(port)),
        ("LEAF_ALERTS_CHECK_INTERVAL", "1s".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let operator = Operator::start(cp, options).await;

    // It registered, and recorded the id: created the ConfigMap (the intent), then updated it.
    let webhook = wait_until(
        "the operator to register its webhook",
        Duration::from_secs(60),
        || async {
            let webhooks = leaf.webhooks();
            webhooks
                .iter()
                .find(|w| w.url == receiver_url(port))
                .cloned()
                .ok_or_else(|| format!("{webhooks:?}"))
        },
    )
    .await;
    let client = operator_client(cp, &namespace, "lo-rec-leaf-operator").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let record = "lo-rec-leaf-operator-alerts-webhook";
    wait_until(
        "the record to hold the webhook's id",
        Duration::from_secs(60),
        || async {
            let data = configmaps
                .get(record)
                .await
                .map_err(|e| e.to_string())?
                .data
                .unwrap_or_default();
            if data.get("webhookId") == Some(&webhook.id) && !data.contains_key("createStartedAt") {
                Ok(())
            } else {
                Err(format!("{data:?}"))
            }
        },
    )
    .await;
    let log = operator.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "the operator hit a permission it lacks:\n{}",
        log.lines()
            .filter(|l| l.contains("orbidden"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(operator);

    // With the same token: that one ConfigMap can be read and updated, nothing more.
    let mut mine = configmaps.get(record).await.expect("get the record");
    mine.metadata.managed_fields = None;
    configmaps
        .replace(record, &PostParams::default(), &mine)
        .await
        .expect("update the record");
    let other: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "someone-elses"}, "data": {"k": "v"},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(cp.client(), &namespace)
        .create(&PostParams::default(), &other)
        .await
        .expect("create another ConfigMap as admin");
    assert!(forbidden(configmaps.get("someone-elses").await));
    assert!(forbidden(configmaps.list(&ListParams::default()).await));
    assert!(forbidden(
        configmaps
            .patch(
                record,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"data": {"x": "y"}}))
            )
            .await
    ));
    assert!(forbidden(
        configmaps.delete(record, &Default::default()).await
    ));
    let elsewhere: Api<ConfigMap> = Api::namespaced(client, &watched);
    assert!(
        forbidden(elsewhere.create(&PostParams::default(), &other).await),
        "ConfigMaps only in its own namespace"
    );
}

/// The chart rendered with `values` and the kustomize overlay with `components` are the same
/// objects (but labels, annotations and the order of the environment).
fn assert_chart_matches_kustomize(
    cp: &ControlPlane,
    values: &[&str],
    dir: &str,
    components: &[&str],
) {
    let mut args = vec![
        "--set",
        "alerts.enabled=true",
        "--set",
        "alerts.secretName=leaf-alerts",
    ];
    args.extend_from_slice(values);
    assert_chart_matches_components(cp, &args, dir, components);
}

#[tokio::test]
async fn the_kustomize_alerts_component_matches_the_chart_with_alerts_enabled() {
    let cp = control_plane().await;
    assert_chart_matches_kustomize(cp, &[], "kustomize-alerts-overlay", &["alerts"]);
}

#[tokio::test]
async fn the_kustomize_alerts_register_component_matches_the_chart_with_registration() {
    let cp = control_plane().await;
    assert_chart_matches_kustomize(
        cp,
        &[
            "--set",
            "alerts.register=true",
            "--set",
            "alerts.webhookUrl=https://leaf-alerts.example.com/alerts",
        ],
        "kustomize-alerts-register-overlay",
        &["alerts", "alerts-register"],
    );
}

#[tokio::test]
async fn two_shard_releases_side_by_side_have_their_own_lease_webhook_receiver_and_selector() {
    let cp = control_plane().await;
    let namespace = cp.create_namespace("alerts-shards").await;
    let shard = |s: &str| {
        let lease = format!("leaderElection.leaseName=leaf-operator-{s}");
        let selector = format!("labelSelector=shard={s}");
        let host = format!("alerts.ingress.host=leaf-alerts-{s}.example.com");
        let account = format!("leaf.existingSecret=leaf-account-{s}");
        let mut args = ALERTS.to_vec();
        args.extend(["--set", "replicaCount=2"]);
        let owned = [lease, selector, host, account];
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        for set in owned {
            all.extend(["--set".to_string(), set]);
        }
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        helm_template(cp, &format!("shard-{s}"), &namespace, &refs)
    };
    let (raw_a, raw_b) = (shard("a"), shard("b"));
    let (a, b) = (documents(&raw_a), documents(&raw_b));
    for (s, objects) in [("a", &a), ("b", &b)] {
        let deployment = object(objects, "Deployment", &format!("shard-{s}-leaf-operator"));
        assert_eq!(
            env_str(deployment, "LABEL_SELECTOR"),
            Some(format!("shard={s}").as_str())
        );
        assert_eq!(
            env_str(deployment, "LEADER_ELECTION_LEASE_NAME"),
            Some(format!("leaf-operator-{s}").as_str())
        );
        assert_eq!(
            env_str(deployment, "LEAF_ALERTS_WEBHOOK_URL"),
            Some(format!("https://leaf-alerts-{s}.example.com/alerts").as_str())
        );
        assert!(
            env_value(deployment, "LEAF_ALERTS_WEBHOOK_NAME").is_none(),
            "the webhook is named after the shard's Lease"
        );
        let service = object(
            objects,
            "Service",
            &format!("shard-{s}-leaf-operator-alerts"),
        );
        assert_eq!(
            service["spec"]["selector"]["app.kubernetes.io/instance"].as_str(),
            Some(format!("shard-{s}").as_str()),
            "each shard's receiver Service selects its own leader only"
        );
    }
    // No object of one shard collides with the other's.
    let keys = |objects: &[Value]| -> Vec<(String, String)> {
        objects
            .iter()
            .map(|o| (kind_of(o).to_string(), name_of(o).to_string()))
            .collect()
    };
    let (ka, kb) = (keys(&a), keys(&b));
    assert!(ka.iter().all(|k| !kb.contains(k)), "{ka:?} / {kb:?}");
    // The manifests as rendered (a YAML round trip would turn `defaultMode: 0440` into a string).
    let both = format!("{raw_a}\n---\n{raw_b}");
    expect_success(
        "kubectl apply --dry-run=server (two shards)",
        &cp.kubectl_with_stdin(&["apply", "--dry-run=server", "-f", "-"], &both),
    );
}
