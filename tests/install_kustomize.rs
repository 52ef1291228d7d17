//! The kustomize base: it applies, and it is the chart's defaults as plain manifests.

mod support;

use std::collections::BTreeMap;

use serde_yaml::Value;

use support::control_plane;
use support::install::{
    chart_installed_with_crd, documents, expect_success, helm_template, kind_of, name_of, repo,
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
