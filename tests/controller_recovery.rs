//! Crash safety: the operator dies between recording its intent to create and recording the
//! result. After a restart it decides from Leaf's state and never POSTs the same values twice.

mod support;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use leaf_operator::crd::FINALIZER;
use leaf_operator::secret::fingerprint;
use support::operator::{Fixture, assert_one_delete_and_one_post, default_credentials_fingerprint};

const WAIT: Duration = Duration::from_secs(60);

/// Leaves the resource exactly as an operator killed right after sending its POST would: with
/// the finalizer and `status.pendingCreate`.
async fn leave_as_crashed(f: &Fixture, name: &str, fingerprint: &str) {
    f.tcs
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": [FINALIZER]}})),
        )
        .await
        .expect("add finalizer");
    let status = serde_json::json!({
        "status": {
            "pendingCreate": {"secretFingerprint": fingerprint, "startedAt": "2026-01-01T00:00:00Z"},
            "conditions": [{
                "type": "Ready", "status": "False", "reason": "Creating",
                "message": "Creating the Trimble credential in Leaf",
                "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1
            }],
            "observedGeneration": 1
        }
    });
    f.tcs
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write pendingCreate");
}

#[tokio::test]
async fn after_a_crash_following_the_post_the_created_credential_is_recorded_without_posting_again()
{
    let mut f = Fixture::start("crash-after").await;
    f.operator.kill();
    f.create_farm_with_default_credentials("user-crash-after")
        .await;
    // What the interrupted POST left in Leaf.
    let created = f.standin.seed_credential("user-crash-after", "client-a");
    leave_as_crashed(&f, "farm", &default_credentials_fingerprint()).await;

    f.operator.restart().await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let status = tc.status.unwrap();
    assert_eq!(status.credential_id.as_deref(), Some(created.id.as_str()));
    assert!(status.pending_create.is_none());
    assert_eq!(
        status.secret_fingerprint,
        Some(default_credentials_fingerprint())
    );
    assert_eq!(
        f.count_calls("user-crash-after", "POST"),
        0,
        "{:?}",
        f.leaf_calls("user-crash-after")
    );
    let (_, note) = f.wait_event("farm", "Created", WAIT).await;
    assert!(note.contains("not created again"), "{note}");
}

#[tokio::test]
async fn after_a_crash_before_the_post_reached_leaf_the_credential_is_created_once() {
    let mut f = Fixture::start("crash-before").await;
    f.operator.kill();
    f.create_farm_with_default_credentials("user-crash-before")
        .await;
    leave_as_crashed(&f, "farm", &default_credentials_fingerprint()).await;

    f.operator.restart().await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert_eq!(
        f.leaf_calls("user-crash-before"),
        vec!["GET 404", "POST 201"]
    );
}

#[tokio::test]
async fn an_operator_killed_during_the_post_and_restarted_creates_exactly_one_credential() {
    let mut f = Fixture::start("crash-kill").await;
    f.put_default_credentials().await;
    // A slow Leaf keeps the POST in flight long enough to kill the operator in the middle.
    f.standin.set_latency(Duration::from_secs(2));
    f.create_tc("farm", "user-crash-kill", "creds", serde_json::json!({}))
        .await;
    f.wait_until_status("farm", WAIT, |s| s.pending_create.is_some())
        .await;
    // The GET took 2 s; the POST is sent right after the intent is written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.operator.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    f.standin.set_latency(Duration::ZERO);

    f.operator.restart().await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let calls = f.leaf_calls("user-crash-kill");
    assert_eq!(
        calls.iter().filter(|c| *c == "POST 201").count(),
        1,
        "exactly one credential created: {calls:?}"
    );
    let stored = f.standin.credential("user-crash-kill").unwrap();
    assert_eq!(
        tc.status.unwrap().credential_id.as_deref(),
        Some(stored.id.as_str())
    );
}

#[tokio::test]
async fn a_crash_between_the_rotation_delete_and_post_finishes_the_rotation_once() {
    let mut f = Fixture::start("crash-rotate").await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-1")
        .await;
    f.create_tc("farm", "user-crash-rotate", "creds", serde_json::json!({}))
        .await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let old_id = tc.status.unwrap().credential_id.unwrap();
    f.operator.kill();

    // The rotation's intent was recorded, its DELETE did not happen, then the operator died.
    f.put_credentials("creds", "client-a", "secret-a", "refresh-2")
        .await;
    let status = serde_json::json!({
        "status": {"pendingCreate": {
            "secretFingerprint": fingerprint("client-a", "secret-a", "refresh-2"),
            "startedAt": "2026-01-01T00:00:00Z"
        }}
    });
    f.tcs
        .patch_status("farm", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write pendingCreate");
    f.standin.clear_requests();

    f.operator.restart().await;
    let tc = f
        .wait_until_status("farm", WAIT, |s| {
            s.pending_create.is_none() && s.credential_id.as_deref().is_some_and(|id| id != old_id)
        })
        .await;
    let stored = f.standin.credential("user-crash-rotate").unwrap();
    assert_eq!(stored.submitted_refresh_token, "refresh-2");
    assert_eq!(
        tc.status.unwrap().credential_id.as_deref(),
        Some(stored.id.as_str())
    );
    let calls = f.leaf_calls("user-crash-rotate");
    assert_one_delete_and_one_post(&calls);
}
