//! The kustomize base: it applies, and it is the chart's defaults as plain manifests; its
//! components for namespaced mode and for two replicas are the chart with those values.

mod support;

use std::collections::BTreeMap;

use serde_yaml::Value;

use support::control_plane;
use support::install::{
    assert_chart_matches_components, chart_installed_with_crd, documents, env_value,
    expect_success, find, helm_template, kind_of, kustomize_with_components, name_of, one, repo,
    wait_for_crd_established,
};

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

#[tokio::test]
async fn the_namespaced_component_grants_nothing_cluster_wide_and_matches_the_chart() {
    let cp = control_plane().await;
    let objects = documents(&kustomize_with_components(
        cp,
        "kustomize-namespaced-overlay",
        &["namespaced"],
    ));
    assert!(
        find(&objects, "ClusterRoleBinding").is_empty(),
        "the namespaced component leaves a ClusterRoleBinding"
    );
    for role in find(&objects, "ClusterRole") {
        assert!(
            !serde_yaml::to_string(&role["rules"])
                .unwrap()
                .contains("secrets"),
            "a ClusterRole still grants Secrets: {role:?}"
        );
    }
    let role = one(&objects, "Role");
    assert_eq!(
        role["metadata"]["namespace"].as_str(),
        Some("leaf-operator")
    );
    assert!(
        serde_yaml::to_string(&role["rules"])
            .unwrap()
            .contains("trimbleconnections")
    );
    let binding = one(&objects, "RoleBinding");
    assert_eq!(binding["roleRef"]["name"].as_str(), Some("leaf-operator"));
    assert_eq!(
        binding["subjects"][0]["name"].as_str(),
        Some("leaf-operator")
    );
    assert_eq!(
        env_value(one(&objects, "Deployment"), "WATCH_NAMESPACES").unwrap()["value"].as_str(),
        Some("leaf-operator")
    );
    assert_chart_matches_components(
        cp,
        &["--set", "watchNamespaces={leaf-operator}"],
        "kustomize-namespaced-overlay",
        &["namespaced"],
    );
}

#[tokio::test]
async fn the_ha_component_runs_two_replicas_with_leader_election_and_matches_the_chart() {
    let cp = control_plane().await;
    let objects = documents(&kustomize_with_components(
        cp,
        "kustomize-ha-overlay",
        &["ha"],
    ));
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    assert_eq!(
        deployment["spec"]["strategy"]["type"].as_str(),
        Some("RollingUpdate")
    );
    assert_eq!(
        env_value(deployment, "LEADER_ELECTION").unwrap()["value"].as_str(),
        Some("true")
    );
    let env_names: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        env_names
            .iter()
            .filter(|n| **n == "LEADER_ELECTION")
            .count(),
        1,
        "LEADER_ELECTION twice: {env_names:?}"
    );
    let lease = env_value(deployment, "LEADER_ELECTION_LEASE_NAME").unwrap()["value"]
        .as_str()
        .unwrap();
    let role = find(&objects, "Role")
        .into_iter()
        .find(|r| name_of(r) == "leaf-operator-leader-election")
        .expect("the leader-election Role");
    assert_eq!(
        role["rules"][1]["resourceNames"][0].as_str(),
        Some(lease),
        "the Role does not grant the Lease the operator uses"
    );
    assert_eq!(
        one(&objects, "PodDisruptionBudget")["spec"]["minAvailable"].as_i64(),
        Some(1)
    );
    assert_chart_matches_components(
        cp,
        &["--set", "replicaCount=2"],
        "kustomize-ha-overlay",
        &["ha"],
    );
}

#[tokio::test]
async fn the_namespaced_and_ha_components_combine_as_the_chart_does() {
    let cp = control_plane().await;
    assert_chart_matches_components(
        cp,
        &[
            "--set",
            "watchNamespaces={leaf-operator}",
            "--set",
            "replicaCount=2",
        ],
        "kustomize-namespaced-ha-overlay",
        &["namespaced", "ha"],
    );
}
