//! The TrimbleConnection CRD as the real API server enforces it: installation, defaults, every
//! validation of the contract, the status subresource and what kubectl prints.
//!
//! Objects are sent untyped (`DynamicObject`) so that the checks see what the API server itself
//! did, never what the Rust types' serde defaults would fill in.

mod support;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use leaf_operator::crd::TrimbleConnection;
use serde_json::{Value, json};
use support::ControlPlane;

const CRD_FILE: &str = "crds/trimbleconnections.yaml";

/// The example of the contract (`trimbleconnection-api.md`), with only the namespace changed.
fn contract_example(namespace: &str) -> Value {
    json!({
        "apiVersion": "withleaf.io/v1alpha1",
        "kind": "TrimbleConnection",
        "metadata": { "name": "smith-farms", "namespace": namespace },
        "spec": {
            "leafUserId": "3f6c1e9a-2b1d-4c55-9d0e-7b0a8f1c2d3e",
            "credentialsSecretRef": { "name": "smith-farms-trimble" }
        }
    })
}

/// A control plane with the CRD installed, a fresh namespace, and an untyped TrimbleConnection API.
async fn setup(prefix: &str) -> (&'static ControlPlane, String, Api<DynamicObject>) {
    let control_plane = support::control_plane().await;
    control_plane.install_crd().await;
    let namespace = control_plane.create_namespace(prefix).await;
    let resource = ApiResource::erase::<TrimbleConnection>(&());
    let api = Api::namespaced_with(control_plane.client(), &namespace, &resource);
    (control_plane, namespace, api)
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("a valid object")
}

/// Creates `value`, expecting the API server to refuse it; returns its message.
async fn refused_create(api: &Api<DynamicObject>, value: Value) -> String {
    match api
        .create(&PostParams::default(), &object(value.clone()))
        .await
    {
        Ok(created) => panic!(
            "the API server accepted an invalid object: {value}\nstored as: {:?}",
            created.data
        ),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            status.message
        }
        Err(other) => panic!("expected a validation error, got {other}"),
    }
}

fn assert_names(message: &str, expected: &[&str]) {
    for fragment in expected {
        assert!(
            message.contains(fragment),
            "the API server's message should contain {fragment:?}; it was: {message}"
        );
    }
}

fn with_spec(namespace: &str, name: &str, spec: Value) -> Value {
    let mut value = contract_example(namespace);
    value["metadata"]["name"] = json!(name);
    for (key, field) in spec.as_object().expect("spec patch is an object") {
        if field.is_null() {
            value["spec"].as_object_mut().unwrap().remove(key);
        } else {
            value["spec"][key] = field.clone();
        }
    }
    value
}

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "kubectl failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn committed_crd_matches_the_generated_one() {
    let path = support::repo_root().join(CRD_FILE);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = leaf_operator::crd::crd_yaml();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {}: committed {a:?}, generated {b:?}", i + 1))
            .unwrap_or_else(|| "one is a prefix of the other".to_string());
        panic!(
            "{CRD_FILE} is out of date with src/crd.rs ({first_difference}).\n\
             Regenerate it and its copies with: cargo run --bin crdgen -- --write"
        );
    }
}

#[tokio::test]
async fn crd_installs_and_becomes_established() {
    let control_plane = support::control_plane().await;
    control_plane.install_crd().await;
    // Applying again is a no-op, not an error (every test binary installs it).
    control_plane.install_crd().await;
    let crd = Api::<CustomResourceDefinition>::all(control_plane.client())
        .get("trimbleconnections.withleaf.io")
        .await
        .expect("the CRD exists");
    let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
    for wanted in ["Established", "NamesAccepted"] {
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == wanted && c.status == "True"),
            "expected {wanted}=True, conditions were {conditions:?}"
        );
    }
    let names = crd.spec.names;
    assert_eq!(names.short_names, Some(vec!["tc".to_string()]));
    assert_eq!(names.categories, Some(vec!["leaf".to_string()]));
}

#[tokio::test]
async fn contract_example_is_accepted_and_defaults_are_filled_in() {
    let (_, namespace, api) = setup("crd-example").await;
    api.create(
        &PostParams::default(),
        &object(contract_example(&namespace)),
    )
    .await
    .expect("the contract's example is accepted");
    let stored = api.get("smith-farms").await.expect("the example is stored");
    let spec = &stored.data["spec"];
    assert_eq!(spec["leafUserId"], "3f6c1e9a-2b1d-4c55-9d0e-7b0a8f1c2d3e");
    assert_eq!(spec["deletionPolicy"], "Delete", "spec was {spec}");
    assert_eq!(spec["adoptionPolicy"], "AdoptMatching", "spec was {spec}");
    // No default: absent means "the operator's pace" (10m, or the alerts backstop).
    assert!(spec.get("refreshInterval").is_none(), "spec was {spec}");
    assert_eq!(spec["suspend"], false, "spec was {spec}");
    let secret_ref = &spec["credentialsSecretRef"];
    assert_eq!(secret_ref["name"], "smith-farms-trimble");
    assert_eq!(
        secret_ref["clientIdKey"], "clientId",
        "credentialsSecretRef was {secret_ref}"
    );
    assert_eq!(
        secret_ref["clientSecretKey"], "clientSecret",
        "credentialsSecretRef was {secret_ref}"
    );
    assert_eq!(
        secret_ref["refreshTokenKey"], "refreshToken",
        "credentialsSecretRef was {secret_ref}"
    );
    assert!(
        spec.get("leafAuthSecretRef").is_none(),
        "no default Leaf account ref; spec was {spec}"
    );

    // The typed view the operator uses reads the stored object.
    let typed: Api<TrimbleConnection> =
        Api::namespaced(support::control_plane().await.client(), &namespace);
    let tc = typed
        .get("smith-farms")
        .await
        .expect("the typed TrimbleConnection deserialises");
    assert_eq!(tc.spec.refresh_interval(), Duration::from_secs(600));
}

#[tokio::test]
async fn every_optional_field_is_accepted_with_valid_values() {
    let (_, namespace, api) = setup("crd-full").await;
    let full = with_spec(
        &namespace,
        "full",
        json!({
            "credentialsSecretRef": {
                "name": "trimble.app-1",
                "clientIdKey": "client_id",
                "clientSecretKey": "client-secret",
                "refreshTokenKey": "refresh.token"
            },
            "leafAuthSecretRef": { "name": "leaf-api" },
            "deletionPolicy": "Orphan",
            "adoptionPolicy": "Never",
            "refreshInterval": "1h30m",
            "suspend": true
        }),
    );
    api.create(&PostParams::default(), &object(full))
        .await
        .expect("a fully specified object is accepted");
    let minimum = with_spec(
        &namespace,
        "minimum",
        json!({ "refreshInterval": "1m", "adoptionPolicy": "Replace" }),
    );
    api.create(&PostParams::default(), &object(minimum))
        .await
        .expect("refreshInterval 1m is accepted");
}

#[tokio::test]
async fn missing_leaf_user_id_is_refused() {
    let (_, namespace, api) = setup("crd-missing-user").await;
    let message = refused_create(
        &api,
        with_spec(&namespace, "no-user", json!({ "leafUserId": null })),
    )
    .await;
    assert_names(&message, &["spec.leafUserId", "Required value"]);
}

#[tokio::test]
async fn empty_leaf_user_id_is_refused() {
    let (_, namespace, api) = setup("crd-empty-user").await;
    let message = refused_create(
        &api,
        with_spec(&namespace, "empty-user", json!({ "leafUserId": "" })),
    )
    .await;
    assert_names(&message, &["spec.leafUserId"]);
}

#[tokio::test]
async fn changing_leaf_user_id_is_refused_but_other_fields_can_change() {
    let (_, namespace, api) = setup("crd-immutable").await;
    api.create(
        &PostParams::default(),
        &object(contract_example(&namespace)),
    )
    .await
    .expect("created");
    let params = PatchParams::default();

    let change_user = json!({ "spec": { "leafUserId": "another-user" } });
    match api
        .patch("smith-farms", &params, &Patch::Merge(&change_user))
        .await
    {
        Ok(changed) => panic!(
            "the API server let leafUserId change: {:?}",
            changed.data["spec"]
        ),
        Err(kube::Error::Api(status)) => {
            assert_names(&status.message, &["spec.leafUserId", "immutable"])
        }
        Err(other) => panic!("expected a validation error, got {other}"),
    }

    // The rule is about leafUserId only: the policies stay editable (deletionPolicy must be, even
    // while terminating, as the way out when Leaf is unreachable).
    let change_policy = json!({ "spec": { "deletionPolicy": "Orphan", "refreshInterval": "5m" } });
    let changed = api
        .patch("smith-farms", &params, &Patch::Merge(&change_policy))
        .await
        .expect("deletionPolicy and refreshInterval can be changed");
    assert_eq!(changed.data["spec"]["deletionPolicy"], "Orphan");
    assert_eq!(
        changed.data["spec"]["leafUserId"],
        "3f6c1e9a-2b1d-4c55-9d0e-7b0a8f1c2d3e"
    );
}

#[tokio::test]
async fn refresh_interval_below_one_minute_is_refused() {
    let (_, namespace, api) = setup("crd-interval").await;
    let message = refused_create(
        &api,
        with_spec(&namespace, "too-often", json!({ "refreshInterval": "10s" })),
    )
    .await;
    assert_names(&message, &["spec.refreshInterval", "at least 1m"]);
    let message = refused_create(
        &api,
        with_spec(
            &namespace,
            "just-under",
            json!({ "refreshInterval": "59s" }),
        ),
    )
    .await;
    assert_names(&message, &["spec.refreshInterval"]);
}

#[tokio::test]
async fn refresh_interval_that_is_not_a_duration_is_refused() {
    let (_, namespace, api) = setup("crd-interval-format").await;
    for value in ["often", "10", "5d", ""] {
        let message = refused_create(
            &api,
            with_spec(
                &namespace,
                "not-a-duration",
                json!({ "refreshInterval": value }),
            ),
        )
        .await;
        assert_names(&message, &["spec.refreshInterval"]);
        // Only the pattern speaks: the minimum's CEL rule is guarded by it, so no evaluation
        // error of duration() (once "protobuf conversion") stands next to the pattern's message.
        assert!(
            !message.contains("protobuf") && !message.contains("evaluation error"),
            "refreshInterval {value:?} answered with a CEL evaluation error: {message}"
        );
    }
}

#[tokio::test]
async fn unknown_deletion_policy_is_refused() {
    let (_, namespace, api) = setup("crd-deletion").await;
    let message = refused_create(
        &api,
        with_spec(&namespace, "maybe", json!({ "deletionPolicy": "Maybe" })),
    )
    .await;
    assert_names(
        &message,
        &["spec.deletionPolicy", "Unsupported value", "\"Maybe\""],
    );
}

#[tokio::test]
async fn unknown_adoption_policy_is_refused() {
    let (_, namespace, api) = setup("crd-adoption").await;
    let message = refused_create(
        &api,
        with_spec(&namespace, "always", json!({ "adoptionPolicy": "Always" })),
    )
    .await;
    assert_names(&message, &["spec.adoptionPolicy", "Unsupported value"]);
}

#[tokio::test]
async fn invalid_secret_name_is_refused() {
    let (_, namespace, api) = setup("crd-secret-name").await;
    let bad_ref = json!({ "credentialsSecretRef": { "name": "Bad_Name" } });
    let message = refused_create(&api, with_spec(&namespace, "bad-secret", bad_ref)).await;
    assert_names(&message, &["spec.credentialsSecretRef.name"]);

    let missing_ref = json!({ "credentialsSecretRef": null });
    let message = refused_create(&api, with_spec(&namespace, "no-secret", missing_ref)).await;
    // Optional only for a grower connected through a Magic Link: the rule says so.
    assert_names(
        &message,
        &["credentialsSecretRef is required unless reauthorization.policy is MagicLink"],
    );
    let link_only =
        json!({ "credentialsSecretRef": null, "reauthorization": {"policy": "MagicLink"} });
    api.create(
        &PostParams::default(),
        &object(with_spec(&namespace, "link-only", link_only)),
    )
    .await
    .expect("a resource connected through a Magic Link needs no Secret");
    let short_link = json!({ "reauthorization": {"expiresIn": "10m"} });
    let message = refused_create(&api, with_spec(&namespace, "short-link", short_link)).await;
    assert_names(&message, &["expiresIn must be between 15m and 8760h"]);
    let bad_colour = json!({ "reauthorization": {"settings": {"backgroundColor": "red"}} });
    let message = refused_create(&api, with_spec(&namespace, "bad-colour", bad_colour)).await;
    assert_names(&message, &["spec.reauthorization.settings.backgroundColor"]);

    let bad_auth_ref = json!({ "leafAuthSecretRef": { "name": "Leaf API" } });
    let message = refused_create(&api, with_spec(&namespace, "bad-auth", bad_auth_ref)).await;
    assert_names(&message, &["spec.leafAuthSecretRef.name"]);
}

#[tokio::test]
async fn status_is_a_subresource() {
    let (_, namespace, api) = setup("crd-status").await;
    let mut with_status = contract_example(&namespace);
    with_status["status"] = json!({ "credentialId": "smuggled" });
    let created = api
        .create(&PostParams::default(), &object(with_status))
        .await
        .expect("created");
    assert!(
        created.data.get("status").is_none(),
        "status sent with the object must be dropped: {:?}",
        created.data
    );

    let status = json!({ "status": { "credentialId": "cred-1", "credentialStatus": "OK" } });
    let patched = api
        .patch_status(
            "smith-farms",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("the status subresource accepts a status");
    assert_eq!(patched.data["status"]["credentialId"], "cred-1");
}

#[tokio::test]
async fn kubectl_get_prints_the_contract_columns() {
    let (control_plane, namespace, api) = setup("crd-columns").await;
    api.create(
        &PostParams::default(),
        &object(contract_example(&namespace)),
    )
    .await
    .expect("created");
    let status = json!({ "status": {
        "credentialId": "cred-7f3a",
        "credentialStatus": "OK",
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "CredentialValid",
            "message": "Leaf reports the Trimble credential as OK",
            "lastTransitionTime": "2026-01-01T00:00:00Z"
        }]
    }});
    api.patch_status(
        "smith-farms",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .expect("status written");

    let table = stdout(
        &control_plane
            .kubectl_async(&["get", "tc", "-n", &namespace])
            .await,
    );
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "REASON", "LEAF USER", "CREDENTIAL", "AGE"],
        "kubectl get tc printed:\n{table}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..5],
        [
            "smith-farms",
            "True",
            "CredentialValid",
            "3f6c1e9a-2b1d-4c55-9d0e-7b0a8f1c2d3e",
            "OK"
        ],
        "kubectl get tc printed:\n{table}"
    );

    let wide = stdout(
        &control_plane
            .kubectl_async(&["get", "tc", "-n", &namespace, "-o", "wide"])
            .await,
    );
    let header = wide.lines().next().unwrap_or_default();
    let columns: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        [
            "NAME",
            "READY",
            "REASON",
            "LEAF USER",
            "CREDENTIAL",
            "AGE",
            "MESSAGE",
            "CREDENTIAL ID",
            "GROWER LINK"
        ],
        "kubectl get tc -o wide printed:\n{wide}"
    );
    assert!(
        wide.contains("Leaf reports the Trimble credential as OK") && wide.contains("cred-7f3a"),
        "{wide}"
    );

    // The category groups it with the operator's other resources.
    let by_category = stdout(
        &control_plane
            .kubectl_async(&["get", "leaf", "-n", &namespace])
            .await,
    );
    assert!(
        by_category.contains("smith-farms"),
        "kubectl get leaf printed:\n{by_category}"
    );
}

#[tokio::test]
async fn kubectl_explain_prints_the_field_docs() {
    let (control_plane, _, _) = setup("crd-explain").await;
    let leaf_user_id = explain(control_plane, "tc.spec.leafUserId").await;
    assert!(
        leaf_user_id.contains("ID of the Leaf user that owns the Trimble credential")
            && leaf_user_id.contains("Immutable"),
        "kubectl explain tc.spec.leafUserId printed:\n{leaf_user_id}"
    );
    let resource = explain(control_plane, "tc").await;
    assert!(
        resource.contains("Connects a Leaf user to a grower's Trimble Agriculture account"),
        "kubectl explain tc printed:\n{resource}"
    );
    let deletion_policy = explain(control_plane, "tc.spec.deletionPolicy").await;
    assert!(
        deletion_policy.contains("`Orphan` leaves it in Leaf"),
        "kubectl explain tc.spec.deletionPolicy printed:\n{deletion_policy}"
    );
}

/// `kubectl explain FIELD`. The API server publishes a new CRD's OpenAPI schema shortly after the
/// CRD is Established, so this waits for explain to succeed.
async fn explain(control_plane: &ControlPlane, field: &str) -> String {
    support::wait_until(
        &format!("kubectl explain {field} to succeed"),
        Duration::from_secs(30),
        || async move {
            let output = control_plane.kubectl_async(&["explain", field]).await;
            if output.status.success() {
                Ok(String::from_utf8_lossy(&output.stdout).into_owned())
            } else {
                Err(String::from_utf8_lossy(&output.stderr).into_owned())
            }
        },
    )
    .await
}
