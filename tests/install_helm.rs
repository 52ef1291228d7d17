//! The Helm chart against the real API server: lint, the values schema, renderings that pass a
//! server-side dry run, install, upgrade and uninstall, and the values that make it fit other
//! charts and platforms.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use serde_yaml::Value;

use support::control_plane;
use support::install::{
    CHART, CRD_NAME, HelmRelease, SET_IMAGE, chart_installed_with_crd, documents, env_value,
    expect_success, find, helm_template, kind_of, one, repo, server_dry_run, text,
};

#[tokio::test]
async fn helm_lint_passes_with_default_and_namespaced_values() {
    let cp = control_plane().await;
    let chart = repo(CHART);
    let chart = chart.to_str().unwrap();
    expect_success(
        "helm lint (defaults)",
        &cp.helm(&["lint", "--strict", chart, "--set", SET_IMAGE]),
    );
    expect_success(
        "helm lint (namespaced, 2 replicas, everything on)",
        &cp.helm(&[
            "lint",
            "--strict",
            chart,
            "--set",
            SET_IMAGE,
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
        ("commonLabels.team=1", "/commonLabels/team"),
        ("global.priorityClassName=1", "/global/priorityClassName"),
        ("image.registry=not a registry", "/image/registry"),
        (
            "serviceAccount.automount=maybe",
            "/serviceAccount/automount",
        ),
        ("crds.enabled=yes", "/crds/enabled"),
        ("crds.install=yes", "/crds/install"),
        ("extraObjects=3", "/extraObjects"),
        ("extraEnvFrom[0].configMap.name=x", "/extraEnvFrom/0"),
        ("deploymentAnnotations.a=1", "/deploymentAnnotations/a"),
        (
            "metrics.serviceMonitor.honorLabels=yes",
            "/metrics/serviceMonitor/honorLabels",
        ),
        (
            "metrics.serviceMonitor.namespace=Not_A_Namespace",
            "/metrics/serviceMonitor/namespace",
        ),
        (
            "metrics.serviceMonitor.relabelings=x",
            "/metrics/serviceMonitor/relabelings",
        ),
    ] {
        let output = cp.helm(&["template", "x", chart, "--set", SET_IMAGE, "--set", set]);
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

/// No image of leaf-operator is published, so the chart has no default that would pull: without
/// `image.repository` it must refuse to render and say how to get an image, rather than install a
/// Deployment that ends in ImagePullBackOff.
#[tokio::test]
async fn chart_without_an_image_fails_to_render_saying_what_to_set() {
    let cp = control_plane().await;
    let chart = repo(CHART);
    let chart = chart.to_str().unwrap();
    for args in [
        vec!["template", "x", chart],
        // A digest alone names no image either.
        vec![
            "template",
            "x",
            chart,
            "--set",
            &format!("image.digest=sha256:{}", "a".repeat(64)),
        ],
        vec![
            "install",
            "x",
            chart,
            "--dry-run=client",
            "--namespace",
            "x",
        ],
    ] {
        let output = cp.helm(&args);
        assert!(
            !output.status.success(),
            "helm {args:?} rendered without image.repository:\n{}",
            text(&output.stdout)
        );
        let stderr = text(&output.stderr);
        for expected in [
            "image.repository is not set",
            "scripts/release.sh REGISTRY",
            "--set image.repository=REGISTRY/leaf-operator",
            "Getting an image into your cluster",
        ] {
            assert!(
                stderr.contains(expected),
                "helm {args:?}: expected {expected:?} in the error, got {stderr}"
            );
        }
    }
    // The same chart renders once the repository is set (the failure above is about the image).
    let rendered = expect_success(
        "helm template with an image",
        &cp.helm(&[
            "template",
            "x",
            chart,
            "--set",
            "image.repository=r.example/leaf-operator",
        ]),
    );
    let deployment = one(&documents(&rendered), "Deployment").clone();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
        Some("r.example/leaf-operator:0.1.0")
    );
    // NOTES say which image runs and how to see a failed pull.
    let notes = expect_success(
        "helm install --dry-run=client with an image",
        &cp.helm(&[
            "install",
            "x",
            chart,
            "--dry-run=client",
            "--namespace",
            "x",
            "--set",
            "image.repository=r.example/leaf-operator",
            // The binary's other tests installed the CRD with their release; this one must not
            // try to take it over.
            "--set",
            "crds.enabled=false",
        ]),
    );
    for expected in [
        "Image: r.example/leaf-operator:0.1.0 (by tag: set image.digest",
        "ImagePullBackOff",
    ] {
        assert!(
            notes.contains(expected),
            "expected {expected:?} in the NOTES: {notes}"
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

    // The only ClusterRoles are the aggregated ones for people (bound to no one here, no
    // Secrets); nothing binds the operator cluster-wide.
    for role in find(&objects, "ClusterRole") {
        let labels = serde_yaml::to_string(&role["metadata"]["labels"]).unwrap();
        assert!(
            labels.contains("rbac.authorization.k8s.io/aggregate-to-"),
            "namespaced mode renders a ClusterRole that is not an aggregated user role: {role:?}"
        );
        assert!(
            !serde_yaml::to_string(&role["rules"])
                .unwrap()
                .contains("secrets"),
            "an aggregated role grants Secrets: {role:?}"
        );
    }
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
    // The default account is mounted, not copied into the environment: a Secret change then
    // reaches the running operator.
    let dir = env_value(deployment, "LEAF_ACCOUNT_DIR").expect("LEAF_ACCOUNT_DIR is set");
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .and_then(|v| {
            v.iter()
                .find(|v| v["name"].as_str() == Some("leaf-account"))
        })
        .expect("a leaf-account volume");
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("leaf-account")
    );
    assert_eq!(volume["secret"]["items"][0]["key"].as_str(), Some("token"));
    assert_eq!(volume["secret"]["items"][0]["path"].as_str(), Some("token"));
    let mount = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_sequence()
        .and_then(|m| {
            m.iter()
                .find(|m| m["name"].as_str() == Some("leaf-account"))
        })
        .expect("a leaf-account mount");
    assert_eq!(mount["mountPath"], dir["value"]);
    for variable in ["LEAF_TOKEN", "LEAF_USERNAME", "LEAF_PASSWORD"] {
        assert!(
            env_value(deployment, variable).is_none(),
            "{variable} is set: a value copied into the environment never changes"
        );
    }
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
            "--reset-then-reuse-values",
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

// ---------------------------------------------------------------------------------------------
// Upgrades
// ---------------------------------------------------------------------------------------------

/// Copies the chart to `to` (a "next release" the test can change).
fn copy_chart(to: &Path) {
    let from = repo(CHART);
    for entry in walk(&from) {
        let target = to.join(entry.strip_prefix(&from).unwrap());
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(&entry, &target).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn an_upgrade_that_adds_a_value_needs_reset_then_reuse_values_as_docs_say() {
    let cp = control_plane().await;
    chart_installed_with_crd().await;
    let namespace = cp.create_namespace("helm-upgrade").await;
    let release = "lo-upgrade";
    let chart = repo(CHART);
    expect_success(
        "helm install",
        &cp.helm(&[
            "install",
            release,
            chart.to_str().unwrap(),
            "--namespace",
            &namespace,
            "--set",
            SET_IMAGE,
            "--set",
            "crds.install=false",
            "--set",
            "rbac.aggregateClusterRoles=false",
            "--set",
            "concurrency=7",
        ]),
    );

    // The next chart version adds a value and uses it, as every release with a new setting does.
    let next = tempfile::tempdir().unwrap();
    copy_chart(next.path());
    let values = next.path().join("values.yaml");
    let mut text_values = fs::read_to_string(&values).unwrap();
    text_values.push_str("\nnewInNextRelease:\n  label: added\n");
    fs::write(&values, text_values).unwrap();
    let schema_path = next.path().join("values.schema.json");
    let mut schema: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&schema_path).unwrap()).unwrap();
    schema["properties"]["newInNextRelease"] = serde_json::json!({ "type": "object" });
    fs::write(&schema_path, schema.to_string()).unwrap();
    fs::write(
        next.path().join("templates/new-in-next-release.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-next\n  namespace: {{ .Release.Namespace }}\ndata:\n  label: {{ .Values.newInNextRelease.label }}\n",
    )
    .unwrap();
    let next_chart = next.path().to_str().unwrap();

    // --reuse-values takes the old release's values only: the new key is missing and the
    // template fails. This is the claim docs/upgrade-uninstall.md makes; it must stay true.
    let reuse = cp.helm(&[
        "upgrade",
        release,
        next_chart,
        "--namespace",
        &namespace,
        "--reuse-values",
    ]);
    assert!(
        !reuse.status.success(),
        "helm upgrade --reuse-values with an added value succeeded; docs/upgrade-uninstall.md says it fails"
    );
    assert!(
        text(&reuse.stderr).contains("newInNextRelease"),
        "--reuse-values failed for another reason: {}",
        text(&reuse.stderr)
    );

    // --reset-then-reuse-values takes the new chart's defaults and then the user's values.
    expect_success(
        "helm upgrade --reset-then-reuse-values",
        &cp.helm(&[
            "upgrade",
            release,
            next_chart,
            "--namespace",
            &namespace,
            "--reset-then-reuse-values",
        ]),
    );
    let values = expect_success(
        "helm get values",
        &cp.helm(&[
            "get",
            "values",
            release,
            "--namespace",
            &namespace,
            "--all",
            "-o",
            "yaml",
        ]),
    );
    let values: Value = serde_yaml::from_str(&values).unwrap();
    assert_eq!(
        values["concurrency"].as_i64(),
        Some(7),
        "the user's value was kept"
    );
    assert_eq!(
        values["newInNextRelease"]["label"].as_str(),
        Some("added"),
        "the new default was taken"
    );
    let docs = fs::read_to_string(repo("docs/upgrade-uninstall.md")).unwrap();
    assert!(
        docs.contains("--reset-then-reuse-values"),
        "docs/upgrade-uninstall.md does not tell users to upgrade with --reset-then-reuse-values"
    );
    expect_success(
        "helm uninstall",
        &cp.helm(&["uninstall", release, "--namespace", &namespace]),
    );
}

// ---------------------------------------------------------------------------------------------
// A chart that fits other charts and platforms
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn two_releases_in_one_namespace_use_their_own_leases() {
    let cp = control_plane().await;
    let mut leases = BTreeSet::new();
    for release in ["team-a", "team-b"] {
        let objects = documents(&helm_template(
            cp,
            release,
            "shared",
            &[
                "--set",
                "leaderElection.enabled=true",
                "--set",
                "crds.install=false",
            ],
        ));
        let lease =
            env_value(one(&objects, "Deployment"), "LEADER_ELECTION_LEASE_NAME").unwrap()["value"]
                .as_str()
                .unwrap()
                .to_string();
        assert_eq!(
            lease,
            format!("{release}-leaf-operator"),
            "the lease follows the full name"
        );
        let role = find(&objects, "Role")
            .into_iter()
            .find(|r| {
                serde_yaml::to_string(r)
                    .unwrap()
                    .contains("coordination.k8s.io")
            })
            .expect("a leader-election Role");
        let names = serde_yaml::to_string(&role["rules"]).unwrap();
        assert!(
            names.contains(&lease),
            "the Role may not patch its own Lease {lease}: {names}"
        );
        leases.insert(lease);
    }
    assert_eq!(leases.len(), 2, "two releases share one Lease");
}

#[tokio::test]
async fn the_chart_works_as_a_subchart_switched_by_its_enabled_key() {
    let cp = control_plane().await;
    let parent = tempfile::tempdir().unwrap();
    let chart = repo(CHART);
    fs::write(
        parent.path().join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: platform\nversion: 1.0.0\ndependencies:\n  - name: leaf-operator\n    version: \"*\"\n    repository: file://{}\n    condition: leaf-operator.enabled\n",
            chart.display()
        ),
    )
    .unwrap();
    fs::write(
        parent.path().join("values.yaml"),
        "leaf-operator:\n  enabled: true\n  image:\n    repository: leaf-operator\n",
    )
    .unwrap();
    let dir = parent.path().to_str().unwrap();
    expect_success(
        "helm dependency update",
        &cp.helm(&["dependency", "update", dir]),
    );
    let on = documents(&expect_success(
        "helm template (subchart enabled)",
        &cp.helm(&["template", "platform", dir, "--namespace", "platform"]),
    ));
    one(&on, "Deployment");
    let off = expect_success(
        "helm template (subchart disabled)",
        &cp.helm(&[
            "template",
            "platform",
            dir,
            "--namespace",
            "platform",
            "--set",
            "leaf-operator.enabled=false",
        ]),
    );
    assert!(
        find(&documents(&off), "Deployment").is_empty(),
        "leaf-operator.enabled=false still renders the operator"
    );
}

#[tokio::test]
async fn security_contexts_are_restricted_by_default_fix_no_user_and_can_be_overridden() {
    let cp = control_plane().await;
    let objects = documents(&helm_template(cp, "lo-sc", "lo-sc", &[]));
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    for (what, context) in [
        ("pod", &pod["securityContext"]),
        ("container", &container["securityContext"]),
    ] {
        assert_eq!(context["runAsNonRoot"].as_bool(), Some(true), "{what}");
        assert_eq!(
            context["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{what}"
        );
        for fixed in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert!(
                context[fixed].is_null(),
                "the {what} securityContext fixes {fixed}; OpenShift's restricted SCC refuses that"
            );
        }
    }
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0].as_str(),
        Some("ALL")
    );

    let replaced = documents(&helm_template(
        cp,
        "lo-sc",
        "lo-sc",
        &[
            "--set-json",
            r#"podSecurityContext={"runAsNonRoot":true,"runAsUser":1000650000,"fsGroup":1000650000}"#,
            "--set",
            "securityContext.runAsUser=1000650000",
        ],
    ));
    let pod = &one(&replaced, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"]["runAsUser"].as_i64(),
        Some(1000650000)
    );
    assert_eq!(pod["securityContext"]["fsGroup"].as_i64(), Some(1000650000));
    // Helm merges values maps: the restricted defaults stay unless set to null.
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let dropped = documents(&helm_template(
        cp,
        "lo-sc",
        "lo-sc",
        &["--set", "podSecurityContext.seccompProfile=null"],
    ));
    assert!(
        one(&dropped, "Deployment")["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]
            .is_null(),
        "a null value does not drop a default key"
    );
    assert_eq!(
        pod["containers"][0]["securityContext"]["runAsUser"].as_i64(),
        Some(1000650000)
    );
}

#[tokio::test]
async fn the_network_policy_is_exactly_the_rules_in_values_and_no_install_time_lookup() {
    let cp = control_plane().await;
    chart_installed_with_crd().await;
    for template in walk(&repo(CHART).join("templates")) {
        let source = fs::read_to_string(&template).unwrap();
        assert!(
            !source.contains("lookup "),
            "{} looks something up at install time: Argo CD and helm template render it differently",
            template.display()
        );
    }
    let namespace = cp.create_namespace("helm-netpol").await;
    let values = tempfile::NamedTempFile::new().unwrap();
    let custom = r#"
networkPolicy:
  enabled: true
  ingress:
    - from:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: monitoring
      ports:
        - port: http
          protocol: TCP
  egress:
    - to:
        - ipBlock:
            cidr: 10.96.0.1/32
        - ipBlock:
            cidr: fd00::1/128
      ports:
        - port: 443
          protocol: TCP
"#;
    fs::write(values.path(), custom).unwrap();
    let manifest = helm_template(
        cp,
        "lo-netpol",
        &namespace,
        &[
            "--set",
            "crds.install=false",
            "--values",
            values.path().to_str().unwrap(),
        ],
    );
    let objects = documents(&manifest);
    let policy = one(&objects, "NetworkPolicy");
    let wanted: Value = serde_yaml::from_str(custom).unwrap();
    assert_eq!(
        policy["spec"]["ingress"],
        wanted["networkPolicy"]["ingress"]
    );
    assert_eq!(policy["spec"]["egress"], wanted["networkPolicy"]["egress"]);
    expect_success(
        "kubectl apply --dry-run=server (NetworkPolicy)",
        &server_dry_run(cp, &manifest),
    );

    // The defaults render the same with and without a cluster, and say what they allow.
    let defaults = documents(&helm_template(
        cp,
        "lo-netpol",
        &namespace,
        &[
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "crds.install=false",
        ],
    ));
    let egress = serde_yaml::to_string(&one(&defaults, "NetworkPolicy")["spec"]["egress"]).unwrap();
    assert!(
        egress.contains("kube-dns") && egress.contains("443") && egress.contains("6443"),
        "{egress}"
    );
}

#[tokio::test]
async fn the_operator_listens_on_all_ipv6_and_ipv4_addresses() {
    let cp = control_plane().await;
    let objects = documents(&helm_template(
        cp,
        "lo-v6",
        "lo-v6",
        &["--set", "httpPort=9090"],
    ));
    assert_eq!(
        env_value(one(&objects, "Deployment"), "HTTP_ADDR").unwrap()["value"].as_str(),
        Some("[::]:9090")
    );
}

#[tokio::test]
async fn the_chart_declares_the_kubernetes_versions_it_needs_and_helm_knows_its_own() {
    let cp = control_plane().await;
    let chart: Value =
        serde_yaml::from_str(&fs::read_to_string(repo(CHART).join("Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart["kubeVersion"].as_str(), Some(">=1.30.0-0"));
    // Helm built with its Makefile's ldflags knows its version and assumes the Kubernetes of its
    // client-go offline, so the constraint renders without a cluster...
    let version = expect_success("helm version", &cp.helm(&["version", "--short"]));
    assert!(version.starts_with("v3."), "helm version: {version}");
    helm_template(cp, "lo-kv", "lo-kv", &[]);
    // ...and an older cluster is refused.
    let old = cp.helm(&[
        "template",
        "lo-kv",
        repo(CHART).to_str().unwrap(),
        "--set",
        SET_IMAGE,
        "--kube-version",
        "1.29.0",
    ]);
    assert!(
        !old.status.success(),
        "the chart rendered for Kubernetes 1.29"
    );
    assert!(
        text(&old.stderr).contains("kubeVersion"),
        "{}",
        text(&old.stderr)
    );
}

#[tokio::test]
async fn disruption_budget_leader_election_volumes_and_history_are_set_from_values() {
    let cp = control_plane().await;
    chart_installed_with_crd().await;
    let namespace = cp.create_namespace("helm-values").await;
    let values = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        values.path(),
        r#"
replicaCount: 3
revisionHistoryLimit: 5
podDisruptionBudget:
  maxUnavailable: 1
leaderElection:
  leaseDuration: 30s
  renewPeriod: 10s
  retryPeriod: 4s
extraVolumes:
  - name: proxy-ca
    configMap:
      name: proxy-ca
extraVolumeMounts:
  - name: proxy-ca
    mountPath: /etc/proxy-ca
    readOnly: true
extraEnv:
  - name: SSL_CERT_FILE
    value: /etc/proxy-ca/ca.crt
"#,
    )
    .unwrap();
    let manifest = helm_template(
        cp,
        "lo-values",
        &namespace,
        &[
            "--set",
            "crds.install=false",
            "--values",
            values.path().to_str().unwrap(),
        ],
    );
    let objects = documents(&manifest);
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["revisionHistoryLimit"].as_i64(), Some(5));
    for (variable, value) in [
        ("LEADER_ELECTION_LEASE_DURATION", "30s"),
        ("LEADER_ELECTION_RENEW_PERIOD", "10s"),
        ("LEADER_ELECTION_RETRY_PERIOD", "4s"),
        ("SSL_CERT_FILE", "/etc/proxy-ca/ca.crt"),
    ] {
        assert_eq!(
            env_value(deployment, variable).unwrap()["value"].as_str(),
            Some(value)
        );
    }
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"].as_str(),
        Some("proxy-ca")
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"].as_str(),
        Some("/etc/proxy-ca")
    );
    let budget = one(&objects, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["maxUnavailable"].as_i64(), Some(1));
    assert!(
        budget["spec"]["minAvailable"].is_null(),
        "both minAvailable and maxUnavailable set"
    );
    expect_success(
        "kubectl apply --dry-run=server (values)",
        &server_dry_run(cp, &manifest),
    );

    let without = documents(&helm_template(
        cp,
        "lo-values",
        &namespace,
        &[
            "--set",
            "replicaCount=2",
            "--set",
            "podDisruptionBudget.enabled=false",
        ],
    ));
    assert!(
        find(&without, "PodDisruptionBudget").is_empty(),
        "podDisruptionBudget.enabled=false"
    );
}

// ---------------------------------------------------------------------------------------------
// Conventions of cert-manager's and external-secrets' charts
// ---------------------------------------------------------------------------------------------

/// Every optional object on: the chart's full set of kinds (no CRD installed for the monitoring
/// ones, so these manifests are only rendered).
const EVERYTHING: &[&str] = &[
    "--set",
    "replicaCount=2",
    "--set",
    "watchNamespaces={team-a,team-b}",
    "--set",
    "networkPolicy.enabled=true",
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "metrics.dashboard.enabled=true",
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
];

#[tokio::test]
async fn common_labels_and_global_labels_are_on_every_object_and_the_chart_key_wins() {
    let cp = control_plane().await;
    let mut args = EVERYTHING.to_vec();
    args.extend([
        "--set",
        "global.commonLabels.team=platform",
        "--set",
        "global.commonLabels.tier=shared",
        "--set",
        "commonLabels.team=farm-data",
        // The chart's own labels are not overridden (the selector depends on them).
        "--set",
        "commonLabels.app\\.kubernetes\\.io/name=hijacked",
    ]);
    let objects = documents(&helm_template(cp, "lo-labels", "lo-labels", &args));
    let kinds: BTreeSet<&str> = objects.iter().map(kind_of).collect();
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Ingress",
    ] {
        assert!(kinds.contains(kind), "no {kind} rendered: {kinds:?}");
    }
    for object in &objects {
        let labels = &object["metadata"]["labels"];
        let what = format!(
            "{} {}",
            kind_of(object),
            object["metadata"]["name"].as_str().unwrap_or_default()
        );
        assert_eq!(
            labels["team"].as_str(),
            Some("farm-data"),
            "{what}: commonLabels wins over global"
        );
        assert_eq!(
            labels["tier"].as_str(),
            Some("shared"),
            "{what}: global.commonLabels"
        );
        assert_eq!(
            labels["app.kubernetes.io/name"].as_str(),
            Some("leaf-operator"),
            "{what}: commonLabels replaced a chart label"
        );
    }
    let template = &one(&objects, "Deployment")["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        template["team"].as_str(),
        Some("farm-data"),
        "the Pod has the common labels"
    );
    assert_eq!(
        template["app.kubernetes.io/name"].as_str(),
        Some("leaf-operator")
    );

    // Without them, nothing is added.
    let plain = documents(&helm_template(cp, "lo-labels", "lo-labels", &[]));
    for object in &plain {
        assert!(object["metadata"]["labels"]["team"].is_null());
    }
}

#[tokio::test]
async fn global_pull_secrets_are_joined_and_global_priority_class_is_the_default() {
    let cp = control_plane().await;
    let pod = |args: &[&str]| -> Value {
        let objects = documents(&helm_template(cp, "lo-global", "lo-global", args));
        one(&objects, "Deployment")["spec"]["template"]["spec"].clone()
    };
    let names = |pod: &Value| -> Vec<String> {
        pod["imagePullSecrets"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .map(|s| s["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let defaults = pod(&[]);
    assert!(defaults["imagePullSecrets"].is_null() && defaults["priorityClassName"].is_null());

    let global = [
        "--set",
        "global.imagePullSecrets[0].name=platform-pull",
        "--set",
        "global.imagePullSecrets[1].name=shared-pull",
        "--set",
        "global.priorityClassName=platform-critical",
        // A key of another chart under global is allowed.
        "--set",
        "global.otherChart.enabled=true",
    ];
    let only_global = pod(&global);
    assert_eq!(names(&only_global), ["platform-pull", "shared-pull"]);
    assert_eq!(
        only_global["priorityClassName"].as_str(),
        Some("platform-critical")
    );

    let mut both = global.to_vec();
    both.extend([
        "--set",
        "imagePullSecrets[0].name=shared-pull",
        "--set",
        "imagePullSecrets[1].name=leaf-pull",
        "--set",
        "priorityClassName=leaf-priority",
    ]);
    let both = pod(&both);
    assert_eq!(
        names(&both),
        ["platform-pull", "shared-pull", "leaf-pull"],
        "global first, then the chart's, each name once"
    );
    assert_eq!(both["priorityClassName"].as_str(), Some("leaf-priority"));
}

#[tokio::test]
async fn registry_annotations_env_from_and_service_account_automount_render_and_apply() {
    let cp = control_plane().await;
    chart_installed_with_crd().await;
    let namespace = cp.create_namespace("helm-conventions").await;
    let manifest = helm_template(
        cp,
        "lo-conv",
        &namespace,
        &[
            "--set",
            "crds.enabled=false",
            "--set",
            "image.registry=registry.example.com:5000/",
            "--set",
            "image.repository=platform/leaf-operator",
            "--set",
            "image.tag=1.2.3",
            // An annotation is a string: --set would make `true` a boolean, which the schema refuses.
            "--set-string",
            "deploymentAnnotations.reloader\\.stakater\\.com/auto=true",
            "--set",
            "extraEnvFrom[0].configMapRef.name=proxy-settings",
            "--set",
            "extraEnvFrom[1].secretRef.name=proxy-credentials",
            "--set",
            "extraEnvFrom[1].prefix=PROXY_",
            "--set",
            "serviceAccount.automount=false",
        ],
    );
    let objects = documents(&manifest);
    let deployment = one(&objects, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"].as_str(),
        Some("registry.example.com:5000/platform/leaf-operator:1.2.3")
    );
    assert_eq!(
        deployment["metadata"]["annotations"]["reloader.stakater.com/auto"].as_str(),
        Some("true")
    );
    assert!(
        deployment["spec"]["template"]["metadata"]["annotations"].is_null(),
        "deploymentAnnotations reached the Pod"
    );
    assert_eq!(
        container["envFrom"][0]["configMapRef"]["name"].as_str(),
        Some("proxy-settings")
    );
    assert_eq!(
        container["envFrom"][1]["secretRef"]["name"].as_str(),
        Some("proxy-credentials")
    );
    assert_eq!(container["envFrom"][1]["prefix"].as_str(), Some("PROXY_"));
    assert_eq!(
        one(&objects, "ServiceAccount")["automountServiceAccountToken"].as_bool(),
        Some(false)
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["automountServiceAccountToken"].as_bool(),
        Some(true),
        "the operator's Pod needs its API token whatever the ServiceAccount says"
    );
    expect_success(
        "kubectl apply --dry-run=server (registry, annotations, envFrom, automount)",
        &server_dry_run(cp, &manifest),
    );

    // A digest pins the image after the registry; without a registry the repository is the name.
    let digest = format!("sha256:{}", "a".repeat(64));
    let set_digest = format!("image.digest={digest}");
    let pinned = documents(&helm_template(
        cp,
        "lo-conv",
        &namespace,
        &[
            "--set",
            "image.registry=registry.example.com",
            "--set",
            &set_digest,
        ],
    ));
    assert_eq!(
        one(&pinned, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
        Some(format!("registry.example.com/leaf-operator@{digest}").as_str())
    );
    let defaults = documents(&helm_template(cp, "lo-conv", &namespace, &[]));
    assert_eq!(
        one(&defaults, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
        Some("leaf-operator:0.1.0")
    );
    assert_eq!(
        one(&defaults, "ServiceAccount")["automountServiceAccountToken"].as_bool(),
        Some(true)
    );
}

#[tokio::test]
async fn extra_objects_are_rendered_through_tpl_as_maps_or_strings() {
    let cp = control_plane().await;
    chart_installed_with_crd().await;
    let namespace = cp.create_namespace("helm-extra").await;
    let values = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        values.path(),
        r#"
crds:
  enabled: false
extraObjects:
  - apiVersion: v1
    kind: ConfigMap
    metadata:
      name: '{{ include "leaf-operator.fullname" . }}-proxy'
    data:
      release: '{{ .Release.Name }}'
      concurrency: '{{ .Values.concurrency }}'
  - |
    apiVersion: v1
    kind: Secret
    metadata:
      name: {{ .Release.Name }}-from-a-string
    stringData:
      namespace: {{ .Release.Namespace }}
"#,
    )
    .unwrap();
    let manifest = helm_template(
        cp,
        "lo-extra",
        &namespace,
        &["--values", values.path().to_str().unwrap()],
    );
    let objects = documents(&manifest);
    let config_map = find(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"].as_str() == Some("lo-extra-leaf-operator-proxy"))
        .expect("the extra ConfigMap, its name through tpl");
    assert_eq!(config_map["data"]["release"].as_str(), Some("lo-extra"));
    assert_eq!(config_map["data"]["concurrency"].as_str(), Some("16"));
    let secret = one(&objects, "Secret");
    assert_eq!(
        secret["metadata"]["name"].as_str(),
        Some("lo-extra-from-a-string")
    );
    assert_eq!(
        secret["stringData"]["namespace"].as_str(),
        Some(namespace.as_str())
    );
    expect_success(
        "kubectl apply --dry-run=server (extraObjects)",
        &server_dry_run(cp, &manifest),
    );
}

#[tokio::test]
async fn crds_enabled_and_its_deprecated_alias_crds_install_both_turn_the_crd_off() {
    let cp = control_plane().await;
    let crds = |args: &[&str]| -> usize {
        find(
            &documents(&helm_template(cp, "lo-crds", "lo-crds", args)),
            "CustomResourceDefinition",
        )
        .len()
    };
    assert_eq!(crds(&[]), 1, "the CRD is on by default");
    assert_eq!(crds(&["--set", "crds.enabled=true"]), 1);
    assert_eq!(
        crds(&["--set", "crds.enabled=false"]),
        0,
        "crds.enabled=false"
    );
    assert_eq!(
        crds(&["--set", "crds.install=false"]),
        0,
        "the alias crds.install=false"
    );
    assert_eq!(crds(&["--set", "crds.install=true"]), 1);
    assert_eq!(
        crds(&["--set", "crds.install=true", "--set", "crds.enabled=false"]),
        0,
        "either false turns it off"
    );
    let values: Value =
        serde_yaml::from_str(&fs::read_to_string(repo(CHART).join("values.yaml")).unwrap())
            .unwrap();
    assert_eq!(values["crds"]["enabled"].as_bool(), Some(true));
    assert!(
        values["crds"]["install"].is_null(),
        "a default for the deprecated crds.install would override crds.enabled=false"
    );
}

#[tokio::test]
async fn the_service_monitor_takes_namespace_annotations_relabelings_and_honor_labels() {
    let cp = control_plane().await;
    let monitor = |args: &[&str]| -> Value {
        let mut all = vec!["--set", "metrics.serviceMonitor.enabled=true"];
        all.extend_from_slice(args);
        one(
            &documents(&helm_template(cp, "lo-sm", "lo-sm", &all)),
            "ServiceMonitor",
        )
        .clone()
    };
    let defaults = monitor(&[]);
    assert_eq!(defaults["metadata"]["namespace"].as_str(), Some("lo-sm"));
    assert!(defaults["metadata"]["annotations"].is_null());
    let endpoint = &defaults["spec"]["endpoints"][0];
    // The shipped alerts group by the TrimbleConnection's own namespace label.
    assert_eq!(endpoint["honorLabels"].as_bool(), Some(true));
    assert!(endpoint["relabelings"].is_null() && endpoint["metricRelabelings"].is_null());
    let rules = fs::read_to_string(repo(CHART).join("files/prometheus/alerts.yaml")).unwrap();
    assert!(
        rules.contains("by (namespace, name, reason)"),
        "the alerts no longer group by the connection's namespace: honorLabels may default to false"
    );

    let values = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        values.path(),
        r#"
metrics:
  serviceMonitor:
    enabled: true
    namespace: monitoring
    annotations:
      example.com/owner: platform
    honorLabels: false
    relabelings:
      - action: replace
        targetLabel: cluster
        replacement: production
    metricRelabelings:
      - action: drop
        sourceLabels: [__name__]
        regex: process_.*
"#,
    )
    .unwrap();
    let custom = monitor(&["--values", values.path().to_str().unwrap()]);
    assert_eq!(custom["metadata"]["namespace"].as_str(), Some("monitoring"));
    assert_eq!(
        custom["metadata"]["annotations"]["example.com/owner"].as_str(),
        Some("platform")
    );
    assert_eq!(
        custom["spec"]["namespaceSelector"]["matchNames"][0].as_str(),
        Some("lo-sm"),
        "it still scrapes the release namespace"
    );
    let endpoint = &custom["spec"]["endpoints"][0];
    assert_eq!(endpoint["honorLabels"].as_bool(), Some(false));
    assert_eq!(
        endpoint["relabelings"][0]["targetLabel"].as_str(),
        Some("cluster")
    );
    assert_eq!(
        endpoint["metricRelabelings"][0]["regex"].as_str(),
        Some("process_.*")
    );
}

#[tokio::test]
async fn reauthorization_grants_secret_writes_only_when_enabled_and_sets_the_default() {
    let cp = control_plane().await;
    let secret_verbs = |args: &[&str]| -> BTreeSet<String> {
        let rendered = documents(&helm_template(cp, "lo-reauth", "lo-reauth", args));
        // The operator's own (not the aggregated view and edit roles for users).
        let role = find(&rendered, "ClusterRole")
            .into_iter()
            .find(|r| r["metadata"]["name"] == "lo-reauth-leaf-operator")
            .expect("the operator's ClusterRole");
        role["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|rule| {
                rule["resources"]
                    .as_sequence()
                    .is_some_and(|r| r.iter().any(|r| r.as_str() == Some("secrets")))
            })
            .flat_map(|rule| rule["verbs"].as_sequence().cloned().unwrap_or_default())
            .filter_map(|verb| verb.as_str().map(str::to_string))
            .collect()
    };
    let read_only: BTreeSet<String> = ["get", "list", "watch"].map(String::from).into();
    assert_eq!(secret_verbs(&[]), read_only, "off by default");
    let with_links: BTreeSet<String> = ["get", "list", "watch", "create", "patch", "delete"]
        .map(String::from)
        .into();
    assert_eq!(
        secret_verbs(&["--set", "reauthorization.enabled=true"]),
        with_links
    );
    let rendered = documents(&helm_template(
        cp,
        "lo-reauth",
        "lo-reauth",
        &[
            "--set",
            "reauthorization.enabled=true",
            "--set",
            "reauthorization.default=MagicLink",
        ],
    ));
    let deployment = one(&rendered, "Deployment");
    assert_eq!(
        env_value(deployment, "REAUTHORIZATION_DEFAULT").and_then(|e| e["value"].as_str()),
        Some("MagicLink")
    );
    let chart = repo(CHART);
    let refused = cp.helm(&[
        "template",
        "lo-reauth",
        chart.to_str().unwrap(),
        "--set",
        SET_IMAGE,
        "--set",
        "reauthorization.default=Sometimes",
    ]);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("reauthorization"),
        "the schema refuses an unknown policy: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The plain-manifest install: the component adds the same rule to the ClusterRole.
    let kustomized = documents(&support::install::kustomize_with_components(
        cp,
        "reauth-overlay",
        &["reauthorization"],
    ));
    let role = kustomized
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == "leaf-operator")
        .expect("the operator's ClusterRole");
    assert!(
        role["rules"].as_sequence().unwrap().iter().any(|rule| {
            rule["resources"]
                .as_sequence()
                .is_some_and(|r| r.iter().any(|r| r.as_str() == Some("secrets")))
                && rule["verbs"]
                    .as_sequence()
                    .is_some_and(|v| v.iter().any(|v| v.as_str() == Some("create")))
        }),
        "{role:?}"
    );
}
