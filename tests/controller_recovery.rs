//! Crash safety: the operator dies between recording its intent to create and recording the
//! result. After a restart it decides from Leaf's state and never POSTs the same values twice,
//! nor sends anything for the Leaf user while a DELETE it may have sent is in doubt.

mod support;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use leaf_operator::crd::FINALIZER;
use std::str::FromStr;

use support::operator::{
    Fixture, assert_one_delete_and_one_post, condition, default_credentials_fingerprint,
};

const WAIT: Duration = Duration::from_secs(60);

/// An intent's `startedAt` and `sendBy` as the operator writes them now: its send deadline is the
/// start plus the test operator's `LEAF_TIMEOUT` (5 s); its window closes 5 s + 2 s after that.
fn intent_times() -> (String, String) {
    let now = jiff::Timestamp::now();
    let send_by = now + jiff::SignedDuration::from_secs(5);
    (now.to_string(), send_by.to_string())
}

/// Leaves the resource exactly as an operator killed right after writing its intent to create
/// (and perhaps sending the POST) would: with the finalizer and `status.pendingCreate`.
async fn leave_as_crashed(f: &Fixture, name: &str, fingerprint: &str) {
    f.tcs
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": [FINALIZER]}})),
        )
        .await
        .expect("add finalizer");
    let (started, send_by) = intent_times();
    let status = serde_json::json!({
        "status": {
            "pendingCreate": {
                "secretFingerprint": fingerprint, "startedAt": started, "sendBy": send_by
            },
            "conditions": [{
                "type": "Ready", "status": "False", "reason": "Creating",
                "message": "Creating the Trimble credential in Leaf",
                "lastTransitionTime": started, "observedGeneration": 1
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
async fn after_a_crash_that_may_have_sent_the_post_its_token_is_never_sent_again() {
    let mut f = Fixture::start("crash-before").await;
    f.operator.kill();
    f.create_farm_with_default_credentials("user-crash-before")
        .await;
    leave_as_crashed(&f, "farm", &default_credentials_fingerprint()).await;

    f.operator.restart().await;
    // Nothing shows the credential until the window closes: Leaf may have used the token (and
    // lost or removed its credential), so the operator asks for a new one instead of sending it.
    let tc = f.wait_reason("farm", "CredentialInvalid", WAIT).await;
    let message = condition(tc.status.as_ref().unwrap(), "Ready")
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains("never sent again") && message.contains("Secret \"creds\""),
        "{message}"
    );
    assert_eq!(f.count_calls("user-crash-before", "POST"), 0);

    // A new token from the grower creates it, once.
    f.put_credentials("creds", "client-a", "secret-a", "refresh-b")
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert_eq!(
        f.count_calls("user-crash-before", "POST"),
        1,
        "{:?}",
        f.leaf_calls("user-crash-before")
    );
    let stored = f.standin.credential("user-crash-before").unwrap();
    assert_eq!(stored.submitted_refresh_token, "refresh-b");
}

#[tokio::test]
async fn an_operator_killed_during_the_post_and_restarted_creates_exactly_one_credential() {
    let mut f = Fixture::start("crash-kill").await;
    f.put_default_credentials().await;
    // Leaf holds the POST unanswered, and processes it after its client is gone.
    f.standin.hold("POST");
    f.create_tc("farm", "user-crash-kill", "creds", serde_json::json!({}))
        .await;
    support::wait_until("the POST to reach Leaf", WAIT, || async {
        if f.standin.held() > 0 {
            Ok(())
        } else {
            Err(format!("{:?}", f.leaf_calls("user-crash-kill")))
        }
    })
    .await;
    f.operator.kill();
    f.standin.release_held();
    support::wait_until("the held POST to be processed", WAIT, || async {
        match f.standin.credential("user-crash-kill") {
            Some(_) => Ok(()),
            None => Err(String::new()),
        }
    })
    .await;

    f.operator.restart().await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let calls = f.leaf_calls("user-crash-kill");
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("POST")).count(),
        1,
        "exactly one POST: {calls:?}"
    );
    let stored = f.standin.credential("user-crash-kill").unwrap();
    assert_eq!(
        tc.status.unwrap().credential_id.as_deref(),
        Some(stored.id.as_str())
    );
}

#[tokio::test]
async fn a_crash_after_the_rotation_delete_intent_finishes_the_rotation_once() {
    let mut f = Fixture::start("crash-rotate").await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-1")
        .await;
    f.create_tc("farm", "user-crash-rotate", "creds", serde_json::json!({}))
        .await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let old_id = tc.status.unwrap().credential_id.unwrap();
    f.operator.kill();

    // The rotation's DELETE intent was recorded, the DELETE may have been sent, then the
    // operator died. Here it never reached Leaf.
    f.put_credentials("creds", "client-a", "secret-a", "refresh-2")
        .await;
    let (started, send_by) = intent_times();
    let status = serde_json::json!({
        "status": {"pendingDelete": {
            "credentialId": old_id, "startedAt": started, "sendBy": send_by
        }}
    });
    f.tcs
        .patch_status("farm", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write pendingDelete");
    f.standin.clear_requests();

    f.operator.restart().await;
    let tc = f
        .wait_until_status("farm", WAIT, |s| {
            s.pending_create.is_none()
                && s.pending_delete.is_none()
                && s.credential_id.as_deref().is_some_and(|id| id != old_id)
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
    // Nothing at all was sent for the user while the DELETE was in doubt: its window closes
    // 5 s + 5 s + 2 s after it started.
    let window_end =
        jiff::Timestamp::from_str(&started).unwrap() + jiff::SignedDuration::from_secs(12);
    let first = f
        .standin
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("user-crash-rotate"))
        .map(|r| jiff::Timestamp::from_str(&r.at).expect("a timestamp"))
        .min()
        .unwrap();
    assert!(
        first >= window_end,
        "first call at {first}, window ends {window_end}"
    );
}
