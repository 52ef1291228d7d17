//! Every Leaf write can end in doubt (issue 16), on the real control plane against the stand-in:
//! a DELETE that lands after its client gave up, a POST answered 503 after it was applied, a
//! write that cannot leave before its send deadline, reads that lag behind a write, a 409 while a
//! create is in doubt, and one Secret named by two resources for two Leaf users.
//!
//! The tests run with a 5 s request timeout and a 10 s in-doubt margin: a write may leave until
//! 5 s after its intent and land until 15 s after that; reads may lag 10 s behind a write.

mod support;

use std::time::Duration;

use support::operator::{Fixture, OperatorOptions};
use support::wait::wait_until;

const WAIT: Duration = Duration::from_secs(90);

async fn fixture(prefix: &str) -> Fixture {
    Fixture::start_with(prefix, Default::default(), |o: OperatorOptions| {
        o.in_doubt_margin("10s")
    })
    .await
}

/// Waits until no request the stand-in holds back (a late write) is still to land.
async fn wait_landed(f: &Fixture) {
    wait_until("the late writes to land", WAIT, || async {
        match f.standin.late_pending() {
            0 => Ok(()),
            n => Err(format!("{n} still in flight")),
        }
    })
    .await;
}

/// The position of the `nth` (from 0) call starting with `what` in `calls`.
fn position(calls: &[String], what: &str, nth: usize) -> usize {
    calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.starts_with(what))
        .nth(nth)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no {what} #{nth} in {calls:?}"))
}

#[tokio::test]
async fn a_rotation_delete_that_lands_late_never_removes_the_replacement() {
    // Issue 16, item 1. Leaf's DELETE names the user: one that lands after the replacement was
    // created removes it. Nothing is sent for the user until the DELETE's window has closed.
    let f = fixture("late-delete").await;
    let user = "user-late-delete";
    let old = f.ready_farm(user, WAIT).await;

    // The rotation's DELETE lands 8 s after it arrived, 3 s after the client gave up on it.
    f.standin.late_next("DELETE", 1, Duration::from_secs(8));
    f.put_credentials("creds", "client-a", "secret-a", "refresh-b")
        .await;
    let rotated = f
        .wait_until_status("farm", WAIT, |s| {
            s.credential_id.as_deref().is_some_and(|id| id != old)
                && s.pending_delete.is_none()
                && support::operator::condition(s, "Ready")
                    .is_some_and(|c| c.reason == "CredentialValid")
        })
        .await;
    wait_landed(&f).await;

    let stored = f
        .standin
        .credential(user)
        .expect("the replacement survived the late DELETE");
    assert_eq!(stored.submitted_refresh_token, "refresh-b");
    assert_eq!(rotated.status.unwrap().credential_id, Some(stored.id));
    let calls = f.leaf_calls(user);
    assert_eq!(
        f.count_calls(user, "DELETE"),
        1,
        "never deleted again: {calls:?}"
    );
    assert_eq!(f.count_calls(user, "POST"), 2, "{calls:?}");
    // The request log is in order of answers: the late DELETE is logged when it landed, and the
    // rotation's POST only came after it.
    assert!(
        position(&calls, "POST", 1) > position(&calls, "DELETE", 0),
        "the POST left while the DELETE could still land: {calls:?}"
    );
}

#[tokio::test]
async fn a_deletion_whose_delete_lands_late_keeps_the_finalizer_until_it_landed() {
    // Item 1 for the finalizer: released only once the DELETE can no longer land, so that a
    // resource created after it for the same Leaf user cannot lose its credential to it.
    let f = fixture("late-cleanup").await;
    let user = "user-late-cleanup";
    f.ready_farm(user, WAIT).await;

    f.standin.late_next("DELETE", 1, Duration::from_secs(8));
    f.delete_tc("farm").await;
    let waiting = f
        .wait_until_status("farm", WAIT, |s| s.pending_delete.is_some())
        .await;
    assert!(waiting.metadata.deletion_timestamp.is_some());
    f.wait_gone("farm", WAIT).await;
    assert_eq!(
        f.standin.late_pending(),
        0,
        "released while the DELETE could still land"
    );
    assert!(f.standin.credential(user).is_none());

    // A new resource for the same user keeps what it creates.
    f.put_credentials("creds2", "client-a", "secret-a", "refresh-c")
        .await;
    f.create_tc("farm2", user, "creds2", serde_json::json!({}))
        .await;
    let tc = f.wait_reason("farm2", "CredentialValid", WAIT).await;
    let stored = f.standin.credential(user).expect("the new credential");
    assert_eq!(stored.submitted_refresh_token, "refresh-c");
    assert_eq!(tc.status.unwrap().credential_id, Some(stored.id));
    assert_eq!(f.count_calls(user, "DELETE"), 1, "{:?}", f.leaf_calls(user));
}

#[tokio::test]
async fn a_post_answered_503_after_it_was_applied_is_found_never_sent_again() {
    // Item 3: a gateway may answer 503 after Leaf processed the request. Under
    // adoptionPolicy Never, taking the credential for someone else's would end in Conflict.
    let f = fixture("post-503").await;
    let user = "user-post-503";
    f.standin.fail_after_apply_next("POST", 1, 503);
    f.put_default_credentials().await;
    f.create_tc(
        "farm",
        user,
        "creds",
        serde_json::json!({"adoptionPolicy": "Never"}),
    )
    .await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let stored = f
        .standin
        .credential(user)
        .expect("created by the first POST");
    assert_eq!(tc.status.unwrap().credential_id, Some(stored.id));
    let calls = f.leaf_calls(user);
    assert_eq!(
        calls.iter().filter(|c| *c == "POST 503").count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        f.count_calls(user, "POST"),
        1,
        "never sent again: {calls:?}"
    );
    let (_, note) = f.wait_event("farm", "Created", WAIT).await;
    assert!(note.contains("not created again"), "{note}");
    assert!(
        !f.event_reasons("farm")
            .await
            .contains(&"Conflict".to_string())
    );
}

#[tokio::test]
async fn a_create_that_cannot_leave_before_its_send_deadline_is_never_sent() {
    // Item 4: the window in which a write may land is counted from its send deadline, so a
    // write is never sent after it. One request every 6.7 s: the read before the POST takes the
    // only token, and the POST would wait for the next one past its 5 s budget.
    let f = Fixture::start_with("send-deadline", Default::default(), |o: OperatorOptions| {
        o.in_doubt_margin("10s")
            .env("LEAF_REQUESTS_PER_SECOND", "0.15")
            .env("LEAF_BURST", "1")
    })
    .await;
    let user = "user-send-deadline";
    f.create_farm_with_default_credentials(user).await;
    let tc = f
        .wait_until_status("farm", WAIT, |s| {
            support::operator::condition(s, "Ready")
                .is_some_and(|c| c.message.contains("send deadline passed"))
        })
        .await;
    assert!(
        tc.status.unwrap().pending_create.is_none(),
        "not sent is certainly not applied: nothing in doubt"
    );
    assert_eq!(f.count_calls(user, "POST"), 0, "{:?}", f.leaf_calls(user));
    assert!(f.standin.credential(user).is_none());
}

#[tokio::test]
async fn deleting_right_after_a_create_does_not_believe_a_lagging_404() {
    // Item 5: Leaf's reads lag 4 s behind its writes here. The deletion's first read shows
    // nothing; within the read-lag allowance that is no proof, and the credential is deleted
    // once the reads show it.
    let f = fixture("lag-delete").await;
    let user = "user-lag-delete";
    f.standin.set_read_lag(Duration::from_secs(4));
    f.ready_farm(user, WAIT).await;
    f.delete_tc("farm").await;
    f.wait_gone("farm", WAIT).await;
    assert!(
        f.standin.credential(user).is_none(),
        "released on a lagging 404, leaving the credential in Leaf: {:?}",
        f.leaf_calls(user)
    );
    assert_eq!(f.count_calls(user, "DELETE"), 1, "{:?}", f.leaf_calls(user));
}

#[tokio::test]
async fn a_read_that_still_shows_the_replaced_credential_is_not_a_foreign_one() {
    // Item 5: right after a rotation, a forced read still shows the old credential. It is lag,
    // not a credential of someone else's to adopt or to report as a conflict.
    let f = fixture("lag-rotate").await;
    let user = "user-lag-rotate";
    let old = f.ready_farm(user, WAIT).await;
    f.standin.set_read_lag(Duration::from_secs(6));
    f.put_credentials("creds", "client-a", "secret-a", "refresh-b")
        .await;
    let rotated = f
        .wait_until_status("farm", WAIT, |s| {
            s.credential_id.as_deref().is_some_and(|id| id != old)
        })
        .await;
    let new = rotated.status.unwrap().credential_id.expect("an id");
    let poked = f.poke_and_wait("farm", WAIT).await;
    let status = poked.status.unwrap();
    assert_eq!(status.credential_id.as_deref(), Some(new.as_str()));
    assert_eq!(
        support::operator::condition(&status, "Ready").map(|c| c.reason.clone()),
        Some("CredentialValid".to_string())
    );
    let calls = f.leaf_calls(user);
    assert!(
        calls.last().is_some_and(|c| c == "GET 200"),
        "the poke read the lagging credential: {calls:?}"
    );
    let reasons = f.event_reasons("farm").await;
    assert!(
        !reasons.iter().any(|r| r == "Adopted" || r == "Conflict"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_409_ends_the_doubt_so_a_same_app_credential_is_never_taken_under_never() {
    // Item 6: a credential of the same app exists, but reads do not show it yet. The POST is
    // refused with 409: it made nothing, so what Leaf holds is someone else's, whatever its
    // clientId and however close its creation time.
    let f = fixture("conflict-409").await;
    let user = "user-conflict-409";
    let theirs = f.standin.seed_credential(user, "client-a");
    f.standin.hide_credentials(true);
    f.put_default_credentials().await;
    f.create_tc(
        "farm",
        user,
        "creds",
        serde_json::json!({"adoptionPolicy": "Never"}),
    )
    .await;
    wait_until("the POST to be refused with 409", WAIT, || async {
        let calls = f.leaf_calls(user);
        if calls.iter().any(|c| c == "POST 409") {
            Ok(())
        } else {
            Err(format!("{calls:?}"))
        }
    })
    .await;
    f.standin.hide_credentials(false);
    let tc = f.wait_reason("farm", "Conflict", WAIT).await;
    let status = tc.status.unwrap();
    assert_eq!(status.credential_id, None, "never claimed");
    assert_eq!(status.pending_create, None);
    let message = support::operator::condition(&status, "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains(&theirs.id), "{message}");
    assert_eq!(f.count_calls(user, "DELETE"), 0);
    assert_eq!(f.standin.credential(user).map(|c| c.id), Some(theirs.id));
}

#[tokio::test]
async fn one_secret_named_for_two_leaf_users_is_sent_for_the_older_resource_only() {
    // Item 7: a refresh token works once; the younger resource is refused before any POST.
    let f = fixture("shared-secret").await;
    f.put_default_credentials().await;
    f.create_tc("farm-a", "user-shared-a", "creds", serde_json::json!({}))
        .await;
    f.wait_reason("farm-a", "CredentialValid", WAIT).await;
    f.create_tc("farm-b", "user-shared-b", "creds", serde_json::json!({}))
        .await;
    let tc = f.wait_reason("farm-b", "Conflict", WAIT).await;
    let message = support::operator::condition(&tc.status.unwrap(), "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains(&format!("{}/farm-a", f.namespace)) && message.contains("creds"),
        "{message}"
    );
    assert_eq!(f.count_calls("user-shared-b", "POST"), 0);
    assert_eq!(f.count_calls("user-shared-a", "POST"), 1);
    let stalled = support::operator::conditions(&f.get("farm-b").await);
    assert!(
        stalled
            .iter()
            .any(|(t, s, r)| t == "Stalled" && s == "True" && r == "Conflict"),
        "{stalled:?}"
    );
}
