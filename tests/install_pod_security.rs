//! The chart's and the kustomize base's Deployments meet the restricted Pod Security profile, as
//! the API server's own PodSecurity admission judges it.

mod support;

use serde_yaml::Value;

use support::install::{
    documents, expect_success, helm_template, label_namespace, one, repo, server_dry_run, text,
    to_yaml,
};
use support::{ControlPlane, control_plane};

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
