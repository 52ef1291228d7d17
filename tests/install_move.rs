//! Moving an installation from the kustomize base to the Helm chart, as docs/upgrade-uninstall.md
//! describes it: Helm adopts every object in place (the CRD included), so no TrimbleConnection
//! and no Leaf credential is deleted, and the operator keeps running throughout.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use leaf_operator::crd::TrimbleConnection;
use leaf_standin::{StandIn, StandInConfig};

use support::install::{
    CHART, CRD_NAME, SET_IMAGE, expect_success, read, repo, text, trimble_connection,
    trimble_secret, wait_for_crd_established, wait_for_ready,
};
use support::operator::{Operator, OperatorOptions};
use support::{control_plane, wait_until};

const LEAF_TOKEN: &str = "move-test-token";
const LEAF_USER: &str = "user-moving";

/// The objects of deploy/ other than the namespace, cluster-scoped and in namespace leaf-operator.
const CLUSTER_OBJECTS: [&str; 5] = [
    "customresourcedefinition/trimbleconnections.withleaf.io",
    "clusterrole/leaf-operator",
    "clusterrole/leaf-operator-view",
    "clusterrole/leaf-operator-edit",
    "clusterrolebinding/leaf-operator",
];
const NAMESPACED_OBJECTS: [&str; 3] = [
    "deployment/leaf-operator",
    "service/leaf-operator-metrics",
    "serviceaccount/leaf-operator",
];

#[tokio::test]
async fn moving_from_kustomize_to_helm_adopts_the_crd_and_keeps_every_connection() {
    let cp = control_plane().await;
    let deploy = repo("deploy");
    expect_success(
        "kubectl apply -k deploy/",
        &cp.kubectl(&["apply", "-k", deploy.to_str().unwrap()]),
    );
    wait_for_crd_established(cp).await;
    let crds = Api::<CustomResourceDefinition>::all(cp.client());
    let crd_uid = crds.get(CRD_NAME).await.unwrap().metadata.uid;

    // A connection with a credential in Leaf, kept by a running operator.
    let growers = cp.create_namespace("growers-move").await;
    let leaf = StandIn::start(
        StandInConfig::default()
            .with_token(LEAF_TOKEN)
            .with_user(LEAF_USER),
    )
    .await;
    let operator = Operator::start(
        cp,
        OperatorOptions::new(&growers, &leaf.origin()).token(LEAF_TOKEN),
    )
    .await;
    Api::<Secret>::namespaced(cp.client(), &growers)
        .create(
            &PostParams::default(),
            &trimble_secret("creds", "refresh-move"),
        )
        .await
        .unwrap();
    let tcs: Api<TrimbleConnection> = Api::namespaced(cp.client(), &growers);
    tcs.create(
        &PostParams::default(),
        &trimble_connection("farm", LEAF_USER, "creds"),
    )
    .await
    .unwrap();
    let before = wait_for_ready(&tcs, "farm", "True", "CredentialValid").await;
    let credential = leaf.credential(LEAF_USER).expect("a credential in Leaf");

    let chart = repo(CHART);
    let install = [
        "install",
        "leaf-operator",
        chart.to_str().unwrap(),
        "--namespace",
        "leaf-operator",
        "--set",
        SET_IMAGE,
    ];
    // Without adoption Helm refuses to take over what kubectl created: the step is needed.
    let refused = cp.helm(&install);
    assert!(
        !refused.status.success(),
        "helm installed over the kustomize objects without adopting them"
    );
    assert!(
        text(&refused.stderr).contains("cannot be imported into the current release"),
        "helm failed for another reason: {}",
        text(&refused.stderr)
    );

    // The documented adoption: Helm's ownership label and annotations on every object.
    let annotations = [
        "meta.helm.sh/release-name=leaf-operator",
        "meta.helm.sh/release-namespace=leaf-operator",
    ];
    for (objects, namespace) in [
        (&CLUSTER_OBJECTS[..], None),
        (&NAMESPACED_OBJECTS[..], Some("leaf-operator")),
    ] {
        let mut label = vec!["label", "--overwrite"];
        let mut annotate = vec!["annotate", "--overwrite"];
        if let Some(namespace) = namespace {
            label.extend(["--namespace", namespace]);
            annotate.extend(["--namespace", namespace]);
        }
        label.extend(objects);
        label.push("app.kubernetes.io/managed-by=Helm");
        annotate.extend(objects);
        annotate.extend(annotations);
        expect_success("kubectl label", &cp.kubectl(&label));
        expect_success("kubectl annotate", &cp.kubectl(&annotate));
    }
    expect_success("helm install (adopting)", &cp.helm(&install));

    // Helm owns the CRD now; nothing was recreated or deleted.
    let manifest = expect_success(
        "helm get manifest",
        &cp.helm(&[
            "get",
            "manifest",
            "leaf-operator",
            "--namespace",
            "leaf-operator",
        ]),
    );
    assert!(
        manifest.contains(&format!("name: {CRD_NAME}")),
        "the release does not own the CRD"
    );
    let crd = crds.get(CRD_NAME).await.unwrap();
    assert_eq!(
        crd.metadata.uid, crd_uid,
        "the CRD was deleted and recreated"
    );
    assert_eq!(
        crd.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("helm.sh/resource-policy"))
            .map(String::as_str),
        Some("keep"),
        "the chart's annotations were not applied to the adopted CRD"
    );
    // The operator kept reconciling across the move.
    wait_until(
        "the connection to be unchanged after the move",
        Duration::from_secs(30),
        || async {
            let tc = tcs.get("farm").await.map_err(|e| e.to_string())?;
            if tc.metadata.uid == before.metadata.uid {
                Ok(())
            } else {
                Err(format!("uid {:?}", tc.metadata.uid))
            }
        },
    )
    .await;
    wait_for_ready(&tcs, "farm", "True", "CredentialValid").await;
    assert_eq!(
        leaf.credential(LEAF_USER).map(|c| c.id),
        Some(credential.id),
        "the Leaf credential was replaced during the move"
    );
    assert!(
        leaf.count("DELETE", "trimble-credentials") == 0,
        "a Leaf credential was deleted during the move"
    );
    drop(operator);

    let docs = read(&repo("docs/upgrade-uninstall.md"));
    for needed in [
        "meta.helm.sh/release-name",
        "app.kubernetes.io/managed-by=Helm",
    ] {
        assert!(
            docs.contains(needed),
            "docs/upgrade-uninstall.md no longer describes the adoption ({needed})"
        );
    }
}
