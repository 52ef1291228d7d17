//! Shards: two operators split one namespace's TrimbleConnections by label (`--label-selector`),
//! each with its own Lease name. Moving a Ready connection from one shard to the other continues
//! from its status (credentialId, secretFingerprint): no second POST, ever.
//!
//! The two shards use two accounts of the same Leaf stand-in only so that the request log says
//! which shard made each call (the stand-in does not tie Leaf users to accounts).

mod support;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use leaf_standin::StandInConfig;
use support::operator::{Fixture, LEAF_USERNAME, Operator, OperatorOptions, conditions};
use support::wait_until;

const WAIT: Duration = Duration::from_secs(60);
const SHARD_B_TOKEN: &str = "shard-b-static-token-PLANTED-51c0";
const USER: &str = "user-sharded";

fn shard(options: OperatorOptions, label: &str) -> OperatorOptions {
    let mut options = options.refresh_interval("1s");
    options.env.extend([
        ("LABEL_SELECTOR".to_string(), format!("shard={label}")),
        (
            "LEADER_ELECTION_LEASE_NAME".to_string(),
            format!("leaf-operator-{label}"),
        ),
    ]);
    options
}

async fn label(f: &Fixture, name: &str, value: &str) {
    f.tcs
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"shard": value}}})),
        )
        .await
        .expect("label");
}

/// The stand-in's calls for the user, as (account, "METHOD status").
fn calls(f: &Fixture) -> Vec<(String, String)> {
    let marker = format!("/users/{USER}/trimble-credentials");
    f.standin
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(&marker))
        .map(|r| (r.account, format!("{} {:?}", r.method, r.status)))
        .collect()
}

#[tokio::test]
async fn relabeling_a_ready_connection_moves_it_to_the_other_shard_without_a_second_post() {
    let f = Fixture::start_with(
        "shards",
        StandInConfig::default().with_token(SHARD_B_TOKEN),
        |o| shard(o, "a"),
    )
    .await;
    let control_plane = support::control_plane().await;
    let _b = Operator::start(
        control_plane,
        shard(
            OperatorOptions::new(&f.namespace, &f.standin.origin()).token(SHARD_B_TOKEN),
            "b",
        ),
    )
    .await;
    let shard_a = format!("user:{LEAF_USERNAME}");
    let shard_b = "token:1".to_string();

    // Created unlabelled (no shard's), then given to shard A, which creates the credential.
    f.create_farm_with_default_credentials(USER).await;
    label(&f, "farm", "a").await;
    let before = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let status = before.status.clone().unwrap();
    let first = calls(&f);
    assert_eq!(first[0].0, shard_a, "shard A created it: {first:?}");
    assert!(first.iter().all(|(who, _)| *who == shard_a), "{first:?}");

    // Move it to shard B.
    label(&f, "farm", "b").await;
    let seen = wait_until(
        "shard B to check the credential three times",
        WAIT,
        || async {
            let all = calls(&f);
            let b: Vec<usize> = all
                .iter()
                .enumerate()
                .filter(|(_, (who, what))| *who == shard_b && what.starts_with("GET"))
                .map(|(i, _)| i)
                .collect();
            if b.len() >= 3 {
                Ok((all, b[2]))
            } else {
                Err(format!("{all:?}"))
            }
        },
    )
    .await;
    let (all, third_b) = seen;
    assert!(
        all[third_b..].iter().all(|(who, _)| *who == shard_b),
        "shard A stopped once the label moved: {all:?}"
    );
    let posts: Vec<_> = all
        .iter()
        .filter(|(_, what)| what.starts_with("POST"))
        .collect();
    assert_eq!(posts.len(), 1, "exactly one POST ever: {all:?}");
    assert!(
        !all.iter().any(|(_, what)| what.starts_with("DELETE")),
        "{all:?}"
    );

    let after = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let moved = after.status.clone().unwrap();
    assert_eq!(
        moved.credential_id, status.credential_id,
        "the same credential continues"
    );
    assert_eq!(moved.secret_fingerprint, status.secret_fingerprint);
    assert_eq!(conditions(&after)[0].2, "CredentialValid");
    assert_eq!(
        f.standin.credential(USER).map(|c| c.id),
        status.credential_id,
        "Leaf still holds the first credential"
    );
}
