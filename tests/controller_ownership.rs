//! Ownership: a credential is this resource's only by its id (or as the credential its own
//! in-doubt create made). Whatever else Leaf shows is foreign: never claimed, never deleted unless
//! adoptionPolicy says so, and every answer that does not finish the job backs off per object.

mod support;

use std::time::Duration;

use support::operator::{Fixture, condition};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_credential_that_replaced_ours_is_foreign_never_claimed_rotated_or_deleted() {
    let f = Fixture::start("foreign").await;
    let user = "user-foreign";
    let ours = f.ready_farm(user, WAIT).await;
    // Our credential goes; the grower reconnects through another tool (another Trimble app).
    let theirs = f.standin.seed_credential(user, "client-other");
    f.standin.clear_requests();

    // Within the read-lag allowance after our create (2 s here) a read that misses ours is not
    // believed yet; after it, the stranger is named.
    f.poke("farm").await;
    let tc = f.wait_reason("farm", "Conflict", WAIT).await;
    let status = tc.status.clone().unwrap();
    let ready = condition(&status, "Ready").unwrap();
    assert!(
        ready.message.contains(&ours) && ready.message.contains(&theirs.id),
        "the message names both credentials: {}",
        ready.message
    );
    assert_eq!(
        status.credential_id, None,
        "the stranger's credential is not claimed"
    );
    assert_eq!(
        condition(&status, "Stalled").map(|c| c.status.as_str()),
        Some("True")
    );

    // A changed Secret is no reason to touch it either.
    f.put_credentials("creds", "client-a", "secret-a", "refresh-new")
        .await;
    f.poke_and_wait("farm", WAIT).await;
    f.delete_tc("farm").await;
    f.wait_gone("farm", WAIT).await;
    let calls = f.leaf_calls(user);
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("DELETE") || c.starts_with("POST")),
        "nothing was written to Leaf for a credential that is not ours: {calls:?}"
    );
    assert_eq!(f.standin.credential(user).map(|c| c.id), Some(theirs.id));
}

#[tokio::test]
async fn deleting_a_resource_whose_credential_was_replaced_outside_deletes_nothing_and_says_why() {
    let f = Fixture::start("delete-foreign").await;
    let user = "user-delete-foreign";
    let ours = f.ready_farm(user, WAIT).await;
    let theirs = f.standin.seed_credential(user, "client-other");
    f.standin.clear_requests();
    // Deleted before any check saw the replacement: the status still names ours.
    f.delete_tc("farm").await;
    f.wait_gone("farm", WAIT).await;
    // One GET, or two when the first came within the read-lag allowance after our create (it
    // is not believed then: the resource looks again), and no DELETE of what is not ours.
    let calls = f.leaf_calls(user);
    assert!(
        !calls.is_empty() && calls.len() <= 2 && calls.iter().all(|c| c == "GET 200"),
        "{calls:?}"
    );
    assert_eq!(
        f.standin.credential(user).map(|c| c.id),
        Some(theirs.id.clone())
    );
    let (kind, note) = f.wait_event("farm", "DeleteSkipped", WAIT).await;
    assert_eq!(kind, "Warning");
    assert!(
        note.contains(&theirs.id) && note.contains(&ours),
        "the Event says why: {note}"
    );
}

#[tokio::test]
async fn a_rotation_never_deletes_a_credential_it_does_not_own() {
    let f = Fixture::start("rotate-foreign").await;
    let user = "user-rotate-foreign";
    f.ready_farm(user, WAIT).await;
    let theirs = f.standin.seed_credential(user, "client-other");
    f.standin.clear_requests();
    f.put_credentials("creds", "client-a", "secret-a", "refresh-rotated")
        .await;
    f.wait_reason("farm", "Conflict", WAIT).await;
    let calls = f.leaf_calls(user);
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("DELETE") || c.starts_with("POST")),
        "{calls:?}"
    );
    assert_eq!(f.standin.credential(user).map(|c| c.id), Some(theirs.id));
    assert!(
        !f.event_reasons("farm")
            .await
            .contains(&"Rotated".to_string())
    );
}

#[tokio::test]
async fn already_exists_never_resends_the_token_and_starves_no_other_resource() {
    let f = Fixture::start("exists").await;
    let stuck = "user-exists";
    // A credential Leaf's GET does not show yet (read lag), so the POST meets a 409.
    let theirs = f.standin.seed_credential(stuck, "client-other");
    f.standin.hide_credentials(true);
    f.put_default_credentials().await;
    f.create_tc("stuck", stuck, "creds", serde_json::json!({}))
        .await;
    f.wait_until_status("stuck", WAIT, |s| {
        condition(s, "Ready").is_some_and(|c| c.message.contains("already has"))
    })
    .await;

    // Another resource is served meanwhile, and promptly (with a Secret of its own: one refresh
    // token is never sent for two Leaf users).
    f.put_credentials("other-creds", "client-a", "secret-a", "refresh-other")
        .await;
    f.create_tc("other", "user-other", "other-creds", serde_json::json!({}))
        .await;
    f.wait_reason("other", "CredentialValid", Duration::from_secs(20))
        .await;

    // Leaf may have exchanged the token with Trimble before it refused: the token counts as
    // sent. Reads still show nothing, so the resource asks for a new token, never POSTing it
    // again, and looks at Leaf on its own backoff, not in a loop.
    let tc = f
        .wait_until_status("stuck", WAIT, |s| {
            condition(s, "Ready").is_some_and(|c| c.message.contains("was sent to Leaf before"))
        })
        .await;
    assert_eq!(
        condition(tc.status.as_ref().unwrap(), "Ready")
            .unwrap()
            .reason,
        "CredentialInvalid"
    );
    f.poke_and_wait("stuck", WAIT).await;
    let calls = f.leaf_calls(stuck);
    assert_eq!(f.count_calls(stuck, "POST"), 1, "{calls:?}");
    assert!(calls.len() <= 8, "{} calls: {calls:?}", calls.len());
    assert!(
        !calls.iter().any(|c| c.starts_with("DELETE")),
        "a 409 is never a reason to delete: {calls:?}"
    );

    // Once Leaf shows it, it is what it is: someone else's, a Conflict.
    f.standin.hide_credentials(false);
    f.poke("stuck").await;
    f.wait_reason("stuck", "Conflict", WAIT).await;
    assert_eq!(f.standin.credential(stuck).map(|c| c.id), Some(theirs.id));
    assert_eq!(f.count_calls(stuck, "POST"), 1);
}
