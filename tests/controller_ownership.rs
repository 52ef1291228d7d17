//! Ownership: a credential is this resource's only by its id (or as the credential its own
//! in-doubt create made). Whatever else Leaf shows is foreign: never claimed, never deleted unless
//! adoptionPolicy says so, and every answer that does not finish the job backs off per object.

mod support;

use std::time::Duration;

use support::operator::{Fixture, condition};

const WAIT: Duration = Duration::from_secs(60);

/// A Ready `farm` for `user` with the default Secret; returns the id of its credential.
async fn ready_farm(f: &Fixture, user: &str) -> String {
    f.create_farm_with_default_credentials(user).await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    tc.status.unwrap().credential_id.expect("a credential id")
}

#[tokio::test]
async fn a_credential_that_replaced_ours_is_foreign_never_claimed_rotated_or_deleted() {
    let f = Fixture::start("foreign").await;
    let user = "user-foreign";
    let ours = ready_farm(&f, user).await;
    // Our credential goes; the grower reconnects through another tool (another Trimble app).
    let theirs = f.standin.seed_credential(user, "client-other");
    f.standin.clear_requests();

    let tc = f.poke_and_wait("farm", WAIT).await;
    let status = tc.status.clone().unwrap();
    let ready = condition(&status, "Ready").unwrap();
    assert_eq!(ready.reason, "Conflict", "{}", ready.message);
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
    let ours = ready_farm(&f, user).await;
    let theirs = f.standin.seed_credential(user, "client-other");
    f.standin.clear_requests();
    // Deleted before any check saw the replacement: the status still names ours.
    f.delete_tc("farm").await;
    f.wait_gone("farm", WAIT).await;
    assert_eq!(
        f.leaf_calls(user),
        vec!["GET 200"],
        "one GET, and no DELETE of a credential that is not ours"
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
    ready_farm(&f, user).await;
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
async fn already_exists_backs_off_per_object_and_starves_no_other_resource() {
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

    // Another resource is served meanwhile, and promptly.
    f.create_tc("other", "user-other", "creds", serde_json::json!({}))
        .await;
    f.wait_reason("other", "CredentialValid", Duration::from_secs(20))
        .await;

    // The stuck one tries again, but only after its in-doubt window (5 s timeout + 2 s margin
    // here): its own schedule, not the process's rate limit, bounds it.
    let posts = support::wait_until("a second POST for the stuck user", WAIT, || async {
        let posts = post_times(&f, stuck);
        if posts.len() >= 2 {
            Ok(posts)
        } else {
            Err(format!("{:?}", f.leaf_calls(stuck)))
        }
    })
    .await;
    let gap = posts[1].duration_since(posts[0]);
    assert!(
        gap >= jiff::SignedDuration::from_millis(6500),
        "the POST was repeated after {gap:?}: {:?}",
        f.leaf_calls(stuck)
    );
    let calls = f.leaf_calls(stuck);
    let gets_between = calls
        .iter()
        .skip_while(|c| !c.starts_with("POST"))
        .skip(1)
        .take_while(|c| !c.starts_with("POST"))
        .count();
    assert!(
        gets_between <= 8,
        "{gets_between} calls between two POSTs: {calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("DELETE")),
        "a 409 is never a reason to delete: {calls:?}"
    );

    // Once Leaf shows it, it is what it is: someone else's, a Conflict.
    f.standin.hide_credentials(false);
    f.wait_reason("stuck", "Conflict", WAIT).await;
    assert_eq!(f.standin.credential(stuck).map(|c| c.id), Some(theirs.id));
}

/// Arrival times of the POSTs for `user`, oldest first.
fn post_times(f: &Fixture, user: &str) -> Vec<jiff::Timestamp> {
    let marker = format!("/users/{user}/trimble-credentials");
    f.standin
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(&marker))
        .filter_map(|r| r.at.parse().ok())
        .collect()
}
