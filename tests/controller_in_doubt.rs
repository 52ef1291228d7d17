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
async fn a_post_lost_on_the_way_is_sent_again_only_after_the_window_and_a_fresh_get() {
    let f = Fixture::start_with("lost-post", Default::default(), |o: OperatorOptions| {
        o.in_doubt_margin("4s")
    })
    .await;
    let user = "user-lost-post";
    // The first credential POST's connection is dropped without an answer (and without effect).
    f.standin
        .set_fault_path_filter(Some("/trimble-credentials"));
    f.standin.set_fault_method_filter(Some("POST"));
    f.standin.drop_next(1);
    f.create_farm_with_default_credentials(user).await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;

    let posts = posts(&f, user);
    assert_eq!(posts.len(), 2, "{:?}", f.leaf_calls(user));
    assert_eq!(posts[0].1, None, "the first one was dropped");
    let gap = posts[1].0.duration_since(posts[0].0);
    // 5 s timeout + 4 s margin, from the intent recorded just before the first POST.
    assert!(
        gap >= jiff::SignedDuration::from_millis(8500),
        "sent again after {gap:?}"
    );
    let calls = f.leaf_calls(user);
    let second = calls.iter().rposition(|c| c.starts_with("POST")).unwrap();
    assert_eq!(
        calls[second - 1],
        "GET 404",
        "a fresh GET before it: {calls:?}"
    );
    assert_eq!(
        tc.status.unwrap().credential_id,
        f.standin.credential(user).map(|c| c.id)
    );
}
