//! The default Leaf account rotates without a restart: the operator reads it from a mounted
//! Secret directory (`LEAF_ACCOUNT_DIR`), which the kubelet updates in place, and the next Leaf
//! call after a change uses the new account.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use leaf_operator::crd::TrimbleConnection;
use leaf_standin::{StandIn, StandInConfig};

use support::install::{
    ready, request_reconcile, trimble_connection, trimble_secret, wait_for_ready,
};
use support::operator::{Operator, OperatorOptions};
use support::{control_plane, wait_until};

const OLD_TOKEN: &str = "default-account-token-old-7c2e";
const NEW_TOKEN: &str = "default-account-token-new-91ad";
const LEAF_USER: &str = "user-rotating-account";

/// Writes `files` into a Secret volume directory the way the kubelet's atomic writer does: a new
/// timestamped directory, the `..data` symlink swapped to it with one rename, and each file a
/// symlink through `..data`. A reader never sees a half-written account.
fn kubelet_update(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    let payload = format!("..2026_12_02_00_00_0{generation}.0000{generation}");
    fs::create_dir(dir.join(&payload)).unwrap();
    for (name, content) in files {
        fs::write(dir.join(&payload).join(name), content).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    symlink(&payload, &tmp).unwrap();
    let old = fs::read_link(dir.join("..data")).ok();
    fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
    if let Some(old) = old {
        fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

#[tokio::test]
async fn rotating_the_default_account_secret_reaches_a_running_operator_without_a_restart() {
    let cp = control_plane().await;
    cp.install_crd().await;
    let namespace = cp.create_namespace("default-account").await;
    let leaf = StandIn::start(
        StandInConfig::default()
            .with_token(OLD_TOKEN)
            .with_user(LEAF_USER),
    )
    .await;
    let account = tempfile::tempdir().unwrap();
    kubelet_update(account.path(), 1, &[("token", OLD_TOKEN)]);

    let mut options = OperatorOptions::new(&namespace, &leaf.origin());
    options.env.push((
        "LEAF_ACCOUNT_DIR".into(),
        account.path().display().to_string(),
    ));
    let operator = Operator::start(cp, options).await;

    let tcs: Api<TrimbleConnection> = Api::namespaced(cp.client(), &namespace);
    Api::<Secret>::namespaced(cp.client(), &namespace)
        .create(
            &PostParams::default(),
            &trimble_secret("creds", "refresh-1"),
        )
        .await
        .unwrap();
    tcs.create(
        &PostParams::default(),
        &trimble_connection("farm", LEAF_USER, "creds"),
    )
    .await
    .unwrap();
    wait_for_ready(&tcs, "farm", "True", "CredentialValid").await;

    // Rotate: Leaf now accepts only the new token, and the mounted Secret changes under the
    // running process. With the old token the next check would be LeafAuthFailed.
    leaf.handle().add_token(NEW_TOKEN);
    leaf.handle().remove_token(OLD_TOKEN);
    kubelet_update(account.path(), 2, &[("token", NEW_TOKEN)]);
    leaf.handle().clear_requests();
    request_reconcile(&tcs, "farm", "after-rotation").await;
    // Ready already was True: wait for the reconcile that answers the request, then look at it.
    wait_until(
        "the check after the rotation to be handled and Ready",
        Duration::from_secs(60),
        || async {
            let tc = tcs.get("farm").await.map_err(|e| e.to_string())?;
            let handled = tc
                .status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.clone());
            match (handled.as_deref(), ready(&tc)) {
                (Some("after-rotation"), Some((status, reason)))
                    if status == "True" && reason == "CredentialValid" =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let requests = leaf.handle().requests();
    assert!(
        requests
            .iter()
            .any(|r| r.account == "token:2" && r.status == Some(200)),
        "no successful Leaf call with the new token after the rotation: {requests:?}"
    );
    assert!(
        requests.iter().all(|r| r.status != Some(401)),
        "a Leaf call after the rotation was refused (old token used): {requests:?}"
    );

    let log = operator.log();
    assert_eq!(
        log.matches("caches synced").count(),
        1,
        "the operator was restarted"
    );
    assert!(
        log.matches("default Leaf account read").count() >= 2,
        "the operator did not log reading the rotated account:\n{log}"
    );
    for token in [OLD_TOKEN, NEW_TOKEN] {
        assert!(!log.contains(token), "the operator's log contains a token");
    }
}
