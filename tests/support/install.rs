//! Fixtures shared by the install tests (`tests/install_*.rs`, `tests/image.rs`): paths in the
//! repository, running helm and kubectl, reading rendered manifests, the chart installed once per
//! test binary, and a TrimbleConnection to drive through its life.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use leaf_operator::crd::TrimbleConnection;
use serde::Deserialize;
use serde_yaml::Value;
use tokio::sync::OnceCell;

use super::{ControlPlane, control_plane, repo_root, wait_until};

pub const CHART: &str = "charts/leaf-operator";
pub const CRD_NAME: &str = "trimbleconnections.withleaf.io";
/// The `--set` every test that renders or installs the chart gives: the chart has no default image
/// and refuses to render without one (`chart_without_an_image_fails_to_render_saying_what_to_set`
/// in install_helm.rs). `leaf-operator` with the chart's appVersion is what the kustomize base
/// names (`leaf-operator:0.1.0`), so the two still compare object by object.
pub const SET_IMAGE: &str = "image.repository=leaf-operator";

pub fn repo(path: &str) -> PathBuf {
    repo_root().join(path)
}

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Panics with the command's output unless it succeeded.
#[track_caller]
pub fn expect_success(what: &str, output: &Output) -> String {
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
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("invalid YAML: {e}\n{yaml}"))
        })
        .filter(|value| !value.is_null())
        .collect()
}

pub fn kind_of(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

pub fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind_of(o) == kind).collect()
}

pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
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
pub fn env_value<'a>(deployment: &'a Value, name: &str) -> Option<&'a Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

/// `helm template` of the chart with `args` (for example `--set x=y`), release `release` in `namespace`.
pub fn helm_template(cp: &ControlPlane, release: &str, namespace: &str, args: &[&str]) -> String {
    let chart = repo(CHART);
    let mut all = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "--set",
        SET_IMAGE,
    ];
    all.extend_from_slice(args);
    expect_success(&format!("helm template {args:?}"), &cp.helm(&all))
}

/// `kubectl kustomize` of an overlay (written under target/`dir`) of `deploy/` with `components`
/// (names under deploy/components, in order).
pub fn kustomize_with_components(cp: &ControlPlane, dir: &str, components: &[&str]) -> String {
    let dir: PathBuf = repo_root().join("target").join(dir);
    fs::create_dir_all(&dir).unwrap();
    let mut overlay = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../deploy\ncomponents:\n".to_string();
    for component in components {
        overlay.push_str(&format!("  - ../../deploy/components/{component}\n"));
    }
    fs::write(dir.join("kustomization.yaml"), overlay).unwrap();
    expect_success(
        &format!("kubectl kustomize (deploy/ + components {components:?})"),
        &cp.kubectl(&["kustomize", dir.to_str().unwrap()]),
    )
}

/// What must agree between the chart and kustomize: all but labels and annotations, with the
/// container's environment in name order (a component appends where the chart interleaves).
pub fn comparable(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_mapping_mut) {
        metadata.remove("labels");
        metadata.remove("annotations");
    }
    if let Some(env) = object
        .get_mut("spec")
        .and_then(|s| s.get_mut("template"))
        .and_then(|t| t.get_mut("spec"))
        .and_then(|s| s.get_mut("containers"))
        .and_then(|c| c.get_mut(0))
        .and_then(|c| c.get_mut("env"))
        .and_then(Value::as_sequence_mut)
    {
        env.sort_by_key(|e| e["name"].as_str().unwrap_or_default().to_string());
    }
    object
}

/// The chart rendered with `values` (release and namespace `leaf-operator`) and the kustomize
/// overlay of `deploy/` with `components` are the same objects (but the Namespace, the CRD,
/// labels, annotations and the order of the environment).
pub fn assert_chart_matches_components(
    cp: &ControlPlane,
    values: &[&str],
    dir: &str,
    components: &[&str],
) {
    let chart = documents(&helm_template(cp, "leaf-operator", "leaf-operator", values));
    let kustomize: Vec<Value> = documents(&kustomize_with_components(cp, dir, components))
        .into_iter()
        .filter(|o| !["Namespace", "CustomResourceDefinition"].contains(&kind_of(o)))
        .collect();
    let index = |objects: &[Value]| -> BTreeMap<(String, String), Value> {
        objects
            .iter()
            .filter(|o| kind_of(o) != "CustomResourceDefinition")
            .map(|o| {
                (
                    (kind_of(o).to_string(), name_of(o).to_string()),
                    comparable(o),
                )
            })
            .collect()
    };
    let (chart, kustomize) = (index(&chart), index(&kustomize));
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        kustomize.keys().collect::<Vec<_>>(),
        "the chart with {values:?} and deploy/ with {components:?} create different objects"
    );
    for (key, chart_object) in &chart {
        assert!(
            chart_object == &kustomize[key],
            "{key:?} differs:\n--- chart ---\n{}\n--- kustomize ---\n{}",
            serde_yaml::to_string(chart_object).unwrap(),
            serde_yaml::to_string(&kustomize[key]).unwrap()
        );
    }
}

/// `kubectl apply --dry-run=server` of `manifest`; returns the output (the caller checks it).
pub fn server_dry_run(cp: &ControlPlane, manifest: &str) -> Output {
    cp.kubectl_with_stdin(&["apply", "--dry-run=server", "-f", "-"], manifest)
}

pub fn to_yaml(objects: &[&Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("a YAML value serialises"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Sets labels on a namespace (server-side apply by the test).
pub async fn label_namespace(cp: &ControlPlane, namespace: &str, labels: &[(&str, &str)]) {
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
pub struct HelmRelease {
    pub release: String,
    pub namespace: String,
}

pub async fn chart_installed_with_crd() -> &'static HelmRelease {
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
                SET_IMAGE,
                "--set",
                "leaf.existingSecret=leaf-account",
            ]);
            expect_success("helm install", &output);
            wait_for_crd_established(cp).await;
            HelmRelease { release, namespace }
        })
        .await
}

pub async fn wait_for_crd_established(cp: &ControlPlane) {
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

pub fn trimble_secret(name: &str, refresh_token: &str) -> Secret {
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

pub fn trimble_connection(name: &str, leaf_user: &str, secret: &str) -> TrimbleConnection {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "withleaf.io/v1alpha1",
        "kind": "TrimbleConnection",
        "metadata": { "name": name },
        "spec": { "leafUserId": leaf_user, "credentialsSecretRef": { "name": secret } },
    }))
    .expect("a valid TrimbleConnection")
}

/// (status, reason) of the Ready condition at the current generation, if any.
pub fn ready(tc: &TrimbleConnection) -> Option<(String, String)> {
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

pub async fn wait_for_ready(
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

pub async fn request_reconcile(api: &Api<TrimbleConnection>, name: &str, value: &str) {
    let patch = serde_json::json!({ "metadata": { "annotations": {
        leaf_operator::crd::RECONCILE_REQUESTED_AT_ANNOTATION: value } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotating the TrimbleConnection");
}

/// `kubectl auth can-i` as the ServiceAccount (impersonated by the admin).
pub fn can_i(
    cp: &ControlPlane,
    service_account: &str,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    // `kubectl auth can-i patch things/status` would ask about an object *named* status; a
    // subresource has to be asked for with --subresource.
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, subresource)) => (resource, Some(subresource)),
        None => (resource, None),
    };
    let mut args = vec!["auth", "can-i", verb, resource, "--as", service_account];
    if let Some(subresource) = subresource {
        args.extend(["--subresource", subresource]);
    }
    match namespace {
        Some(ns) => args.extend(["--namespace", ns]),
        None => args.push("--all-namespaces"),
    }
    let output = cp.kubectl(&args);
    text(&output.stdout).trim() == "yes"
}
