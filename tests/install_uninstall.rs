//! Uninstalling without deleting Leaf credentials by accident, in the order
//! docs/upgrade-uninstall.md gives: `helm uninstall` leaves the CRD, the connections and their
//! credentials; removing everything while keeping the credentials orphans them first, deletes the
//! connections while the operator still runs, and only then removes the operator and the CRD.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use leaf_operator::crd::TrimbleConnection;
use leaf_standin::{StandIn, StandInConfig};

use support::install::{
    CHART, CRD_NAME, SET_IMAGE, expect_success, read, repo, trimble_connection, trimble_secret,
    wait_for_crd_established, wait_for_ready,
};
use support::operator::{Operator, OperatorOptions};
use support::{control_plane, wait_until};

const LEAF_TOKEN: &str = "uninstall-test-token";

#[tokio::test]
async fn the_documented_uninstall_order_never_deletes_a_leaf_credential() {
    let cp = control_plane().await;
    let release_ns = cp.create_namespace("uninstall").await;
    let growers = cp.create_namespace("growers-uninstall").await;
    let chart = repo(CHART);
    let install = [
        "install",
        "lo-gone",
        chart.to_str().unwrap(),
        "--namespace",
        &release_ns,
        "--set",
        SET_IMAGE,
    ];
    expect_success("helm install", &cp.helm(&install));
    wait_for_crd_established(cp).await;

    let users = ["user-a", "user-b"];
    let leaf = StandIn::start(
        StandInConfig::default()
            .with_token(LEAF_TOKEN)
            .with_user(users[0])
            .with_user(users[1]),
    )
    .await;
    let mut operator = Operator::start(
        cp,
        OperatorOptions::new(&growers, &leaf.origin()).token(LEAF_TOKEN),
    )
    .await;
    let tcs: Api<TrimbleConnection> = Api::namespaced(cp.client(), &growers);
    for user in users {
        Api::<Secret>::namespaced(cp.client(), &growers)
            .create(&PostParams::default(), &trimble_secret(user, "refresh"))
            .await
            .unwrap();
        tcs.create(
            &PostParams::default(),
            &trimble_connection(user, user, user),
        )
        .await
        .unwrap();
        wait_for_ready(&tcs, user, "True", "CredentialValid").await;
    }

    // 1. Remove the operator, keep everything: helm uninstall, then the operator's Pods go.
    expect_success(
        "helm uninstall",
        &cp.helm(&["uninstall", "lo-gone", "--namespace", &release_ns]),
    );
    let crds = Api::<CustomResourceDefinition>::all(cp.client());
    assert!(
        crds.get_opt(CRD_NAME).await.unwrap().is_some(),
        "helm uninstall deleted the CRD"
    );
    operator.stop();
    for user in users {
        assert!(
            tcs.get_opt(user).await.unwrap().is_some(),
            "{user}'s connection is gone"
        );
        assert!(
            leaf.credential(user).is_some(),
            "{user}'s credential is gone"
        );
    }

    // 2. Remove everything but keep the credentials: reinstall (same release name: Helm adopts
    // the kept CRD), orphan every connection, delete them while the operator runs, uninstall,
    // delete the CRD.
    expect_success("helm install again", &cp.helm(&install));
    let operator = Operator::start(
        cp,
        OperatorOptions::new(&growers, &leaf.origin()).token(LEAF_TOKEN),
    )
    .await;
    let listed = expect_success(
        "kubectl get tc -A",
        &cp.kubectl(&[
            "get",
            "tc",
            "--all-namespaces",
            "-o",
            "jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name}{\"\\n\"}{end}",
        ]),
    );
    for line in listed.lines().filter(|l| !l.trim().is_empty()) {
        let (namespace, name) = line.split_once(' ').unwrap();
        expect_success(
            "kubectl patch deletionPolicy=Orphan",
            &cp.kubectl(&[
                "-n",
                namespace,
                "patch",
                "tc",
                name,
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"deletionPolicy":"Orphan"}}"#,
            ]),
        );
    }
    let deleted = cp
        .kubectl_async(&[
            "delete",
            "trimbleconnections",
            "--all",
            "--all-namespaces",
            "--wait",
            "--timeout=60s",
        ])
        .await;
    expect_success("kubectl delete trimbleconnections --all", &deleted);
    wait_until(
        "every connection to be gone",
        Duration::from_secs(60),
        || async {
            let left = tcs
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            if left.items.is_empty() {
                Ok(())
            } else {
                Err(format!("{} left", left.items.len()))
            }
        },
    )
    .await;
    expect_success(
        "helm uninstall",
        &cp.helm(&["uninstall", "lo-gone", "--namespace", &release_ns]),
    );
    drop(operator);
    expect_success(
        "kubectl delete crd",
        &cp.kubectl(&["delete", "crd", CRD_NAME, "--wait", "--timeout=60s"]),
    );

    for user in users {
        assert!(
            leaf.credential(user).is_some(),
            "{user}'s Leaf credential was deleted by the documented keep-the-credentials order"
        );
    }
    assert_eq!(
        leaf.count("DELETE", "trimble-credentials"),
        0,
        "the operator called DELETE in Leaf"
    );
    let docs = read(&repo("docs/upgrade-uninstall.md"));
    for step in [
        r#"{"spec":{"deletionPolicy":"Orphan"}}"#,
        "kubectl delete trimbleconnections --all",
    ] {
        assert!(
            docs.contains(step),
            "docs/upgrade-uninstall.md no longer says {step}"
        );
    }
}
