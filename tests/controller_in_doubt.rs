//! A create in doubt (no answer came, or a 5xx): Leaf may still create the credential, since it
//! validates the refresh token with Trimble before it answers. Nothing is sent again before the
//! create's start + request timeout + margin, and then only after a fresh GET.

mod support;

use std::time::Duration;

use support::operator::{Fixture, OperatorOptions};

const WAIT: Duration = Duration::from_secs(90);

/// Arrival times of the POSTs for `user`, oldest first, with their status (None: dropped).
fn posts(f: &Fixture, user: &str) -> Vec<(jiff::Timestamp, Option<u16>)> {
    let marker = format!("/users/{user}/trimble-credentials");
    f.standin
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(&marker))
        .filter_map(|r| Some((r.at.parse().ok()?, r.status)))
        .collect()
}

#[tokio::test]
async fn a_post_that_outlives_its_timeout_is_never_sent_again_and_is_recognised_when_it_lands() {
    // Window: 5 s request timeout + 10 s margin. The POST lands 8 s after it was sent, 3 s after
    // the operator's client gave up on it.
    let f = Fixture::start_with("late-post", Default::default(), |o: OperatorOptions| {
        o.in_doubt_margin("10s")
    })
    .await;
    let user = "user-late-post";
    f.standin.slow(Some(("POST", Duration::from_secs(8))));
    f.create_farm_with_default_credentials(user).await;

    // While in doubt the resource says so, and sends nothing.
    let waiting = f
        .wait_until_status("farm", WAIT, |s| {
            support::operator::condition(s, "Ready")
                .is_some_and(|c| c.message.contains("may still complete"))
        })
        .await;
    assert!(waiting.status.unwrap().pending_create.is_some());

    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let stored = f
        .standin
        .credential(user)
        .expect("the late POST created it");
    assert_eq!(tc.status.unwrap().credential_id, Some(stored.id.clone()));
    assert_eq!(posts(&f, user).len(), 1, "{:?}", f.leaf_calls(user));
    let (_, note) = f.wait_event("farm", "Created", WAIT).await;
    assert!(note.contains("not created again"), "{note}");
}

#[tokio::test]
async fn a_post_whose_fate_stays_unknown_is_never_sent_again_and_asks_for_a_new_token() {
    // The first credential POST's connection is dropped without an answer (and, here, without
    // effect). Leaf offers no proof that it did nothing: a credential it made could have been
    // removed before any read saw it, its single-use refresh token spent. So after the window and
    // a fresh read showing nothing, the token is not sent again: a person supplies a new one.
    let f = Fixture::start_with("lost-post", Default::default(), |o: OperatorOptions| {
        o.in_doubt_margin("4s")
    })
    .await;
    let user = "user-lost-post";
    f.standin
        .set_fault_path_filter(Some("/trimble-credentials"));
    f.standin.set_fault_method_filter(Some("POST"));
    f.standin.drop_next(1);
    f.create_farm_with_default_credentials(user).await;
    let tc = f.wait_reason("farm", "CredentialInvalid", WAIT).await;
    let status = tc.status.unwrap();
    let message = support::operator::condition(&status, "Ready")
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains("got no answer") && message.contains("new refresh token"),
        "{message}"
    );
    assert!(status.pending_create.is_none(), "the doubt is over");
    assert_eq!(
        status.sent_refresh_tokens.len(),
        1,
        "its token counts as sent"
    );
    let posts_before = posts(&f, user);
    assert_eq!(posts_before.len(), 1, "{:?}", f.leaf_calls(user));
    assert_eq!(posts_before[0].1, None, "the first one was dropped");
    let calls = f.leaf_calls(user);
    assert_eq!(
        calls.last().map(String::as_str),
        Some("GET 404"),
        "{calls:?}"
    );

    // A new token from the grower: created at once.
    f.put_credentials("creds", "client-a", "secret-a", "refresh-new")
        .await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let stored = f.standin.credential(user).expect("created");
    assert_eq!(stored.submitted_refresh_token, "refresh-new");
    assert_eq!(tc.status.unwrap().credential_id, Some(stored.id));
    let posts = posts(&f, user);
    assert_eq!(posts.len(), 2, "{:?}", f.leaf_calls(user));
    // 5 s to leave, then 5 s timeout + 4 s margin: the second POST went only after that.
    let gap = posts[1].0.duration_since(posts[0].0);
    assert!(
        gap >= jiff::SignedDuration::from_millis(9000),
        "sent again after {gap:?}"
    );
}
