//! RBAC: the chart's rules are enough for the whole lifecycle, run by the operator as the chart's
//! own ServiceAccount, and no more; namespaced mode never reaches outside its namespaces; and the
//! aggregated roles give namespace users TrimbleConnections, not Secrets.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use leaf_operator::crd::{FINALIZER, TrimbleConnection};
use leaf_standin::{StandIn, StandInConfig};

use support::install::{
    CHART, HelmRelease, SET_IMAGE, can_i, chart_installed_with_crd, expect_success, ready, repo,
    request_reconcile, trimble_connection, trimble_secret, wait_for_ready,
};
use support::operator::{Operator, OperatorOptions};
use support::{ControlPlane, control_plane, wait_until};

/// The two RBAC tests run one after the other: a cluster-wide operator would otherwise reconcile
/// the namespaced test's resources.
static RBAC_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LEAF_USERNAME: &str = "operator@example.com";
const LEAF_PASSWORD: &str = "install-test-password";

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
        SET_IMAGE,
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
        // The webhook record is granted only with alerts.register, in the release namespace
        // (tests/install_alerts.rs).
        ("get", "configmaps"),
        ("create", "configmaps"),
        ("update", "configmaps"),
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
        // The chart names the Lease after the release, and its Role allows only that name.
        (
            "LEADER_ELECTION_LEASE_NAME".into(),
            "lo-rbac-cw-leaf-operator".into(),
        ),
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
        (
            "LEADER_ELECTION_LEASE_NAME".into(),
            "lo-rbac-ns-leaf-operator".into(),
        ),
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

/// `kubectl auth can-i` as a user (impersonated by the admin) in `namespace`.
fn user_can(cp: &ControlPlane, user: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    can_i(cp, user, verb, resource, Some(namespace))
}

#[tokio::test]
async fn aggregated_roles_let_namespace_users_see_or_edit_connections_but_not_secrets() {
    let cp = control_plane().await;
    let HelmRelease { release, .. } = chart_installed_with_crd().await;
    let fullname = format!("{release}-leaf-operator");

    // Kubernetes' own view/edit/admin roles select ours by label (kube-controller-manager does the
    // aggregating, and none runs here, so the selectors are checked against the real roles).
    let roles = Api::<ClusterRole>::all(cp.client());
    for (builtin, ours) in [
        ("view", vec![format!("{fullname}-view")]),
        (
            "edit",
            vec![format!("{fullname}-view"), format!("{fullname}-edit")],
        ),
        (
            "admin",
            vec![format!("{fullname}-view"), format!("{fullname}-edit")],
        ),
    ] {
        let selectors = roles
            .get(builtin)
            .await
            .unwrap()
            .aggregation_rule
            .and_then(|r| r.cluster_role_selectors)
            .unwrap_or_default();
        for name in ours {
            let labels = roles
                .get(&name)
                .await
                .unwrap()
                .metadata
                .labels
                .unwrap_or_default();
            let selected = selectors.iter().any(|selector| {
                selector
                    .match_labels
                    .as_ref()
                    .is_some_and(|wanted| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
            });
            assert!(
                selected,
                "the built-in {builtin} role does not aggregate {name}"
            );
        }
    }

    // What the rules grant, bound directly as a user would get them through view or edit.
    let namespace = cp.create_namespace("aggregated").await;
    for (user, role) in [("viewer", "view"), ("editor", "edit")] {
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": user, "namespace": namespace },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": format!("{fullname}-{role}") },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
        });
        Api::<RoleBinding>::namespaced(cp.client(), &namespace)
            .create(
                &PostParams::default(),
                &serde_json::from_value(binding).unwrap(),
            )
            .await
            .unwrap();
    }
    let tc = "trimbleconnections.withleaf.io";
    for verb in ["get", "list", "watch"] {
        assert!(
            user_can(cp, "viewer", verb, tc, &namespace),
            "a viewer cannot {verb} tc"
        );
    }
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !user_can(cp, "viewer", verb, tc, &namespace),
            "a viewer can {verb} tc"
        );
        assert!(
            user_can(cp, "editor", verb, tc, &namespace),
            "an editor cannot {verb} tc"
        );
    }
    for user in ["viewer", "editor"] {
        assert!(
            !user_can(cp, user, "get", "secrets", &namespace),
            "the {user} role grants Secrets"
        );
        assert!(
            !user_can(
                cp,
                user,
                "patch",
                "trimbleconnections.withleaf.io/status",
                &namespace
            ),
            "the {user} role may write status, which is the operator's"
        );
    }
}
