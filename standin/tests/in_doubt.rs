//! Writes that end "in doubt", as they may at Leaf, over real HTTP: a write applied after its
//! client gave up (`late_next`), a write applied but answered with an error
//! (`fail_after_apply_next`), and reads that lag behind writes (`set_read_lag`).

use std::time::{Duration, Instant};

use leaf_standin::{StandIn, StandInConfig};
use serde_json::{Value, json};

const TOKEN: &str = "in-doubt-token";

async fn start() -> StandIn {
    StandIn::start(StandInConfig::default().with_token(TOKEN).with_user("u1")).await
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

/// A client that gives every answer plenty of time, but less than any late delay of these
/// tests: an answer it gets was served at once, not late.
fn prompt() -> reqwest::Client {
    client(Duration::from_secs(2))
}

fn credentials_url(leaf: &StandIn, user: &str) -> String {
    format!(
        "{}/services/usermanagement/api/users/{user}/trimble-credentials",
        leaf.origin()
    )
}

fn body(refresh_token: &str) -> Value {
    json!({"clientId": "client-1", "clientSecret": "secret-1", "refreshToken": refresh_token})
}

/// The id of the credential a GET shows, or `None` on 404.
async fn visible_id(http: &reqwest::Client, url: &str) -> Option<String> {
    let answer = http.get(url).bearer_auth(TOKEN).send().await.unwrap();
    match answer.status().as_u16() {
        404 => None,
        200 => {
            let body: Value = answer.json().await.unwrap();
            Some(body["id"].as_str().unwrap().to_string())
        }
        other => panic!("unexpected GET answer {other}"),
    }
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls a GET until it shows `expected`; returns when it first did.
async fn wait_until_visible(http: &reqwest::Client, url: &str, expected: Option<&str>) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if visible_id(http, url).await.as_deref() == expected {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for GET to show {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_late_delete_lands_after_its_client_gave_up_and_removes_what_the_user_has_by_then() {
    let leaf = start().await;
    let url = credentials_url(&leaf, "u1");
    leaf.seed_credential("u1", "old-client");
    let delay = Duration::from_secs(3);
    leaf.late_next("DELETE", 1, delay);

    let sent = Instant::now();
    let first = client(Duration::from_millis(300))
        .delete(&url)
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(
        first.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the client gave up before the answer: {first:?}"
    );
    wait_for("the DELETE to wait at the stand-in", || {
        leaf.late_pending() == 1
    })
    .await;
    assert!(leaf.credential("u1").is_some(), "not applied yet");

    // Meanwhile a second DELETE and a POST are served at once, normally.
    let http = prompt();
    let second = http.delete(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(second.status(), 204);
    let created = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body("new-refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let new_id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(visible_id(&http, &url).await, Some(new_id));
    assert_eq!(
        leaf.late_pending(),
        1,
        "the first DELETE is still on its way"
    );

    // Leaf's DELETE names the user, not the credential: landing late, it removes the new one.
    wait_for("the late DELETE to land", || leaf.late_pending() == 0).await;
    assert!(sent.elapsed() >= delay, "applied only after the delay");
    assert_eq!(leaf.credential("u1"), None);
    assert_eq!(visible_id(&http, &url).await, None);
    let log: Vec<_> = leaf
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.status))
        .collect();
    assert_eq!(
        log,
        [
            ("DELETE".to_string(), Some(204)),
            ("POST".to_string(), Some(201)),
            ("GET".to_string(), Some(200)),
            ("DELETE".to_string(), Some(204)),
            ("GET".to_string(), Some(404)),
        ],
        "logged in order of answers: the late DELETE after the POST, answered 204 to nobody"
    );
    let counters = leaf.counters();
    assert_eq!((counters.late, counters.deletes), (1, 2));
}

#[tokio::test]
async fn a_late_post_is_applied_with_its_body_although_its_client_gave_up() {
    let leaf = start().await;
    let url = credentials_url(&leaf, "u1");
    leaf.late_next("post", 1, Duration::from_millis(1500));
    let answer = client(Duration::from_millis(200))
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body("late-refresh"))
        .send()
        .await;
    assert!(answer.is_err(), "the client gave up: {answer:?}");
    assert!(leaf.credential("u1").is_none(), "not applied yet");
    wait_for("the late POST to land", || leaf.late_pending() == 0).await;
    let stored = leaf.credential("u1").expect("the late POST created it");
    assert_eq!(stored.submitted_refresh_token, "late-refresh");

    // Only the next one was late: this POST meets the credential at once (409, the default).
    let again = prompt()
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body("second"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}

#[tokio::test]
async fn a_write_answered_with_an_error_was_applied() {
    let leaf = start().await;
    let url = credentials_url(&leaf, "u1");
    let http = prompt();
    leaf.fail_after_apply_next("POST", 1, 503);
    let created = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body("refresh-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 503);
    assert!(
        created.text().await.unwrap().contains("injected"),
        "a plain-text gateway answer"
    );
    let stored = leaf.credential("u1").expect("the POST was applied");
    assert_eq!(stored.submitted_refresh_token, "refresh-1");
    assert_eq!(visible_id(&http, &url).await, Some(stored.id));

    leaf.fail_after_apply_next("DELETE", 1, 502);
    let deleted = http.delete(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(deleted.status(), 502);
    assert_eq!(leaf.credential("u1"), None, "the DELETE was applied");

    // Only the next one of each: the following requests are answered as processed.
    let deleted = http.delete(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(deleted.status(), 404);
    let created = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body("refresh-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let counters = leaf.counters();
    assert_eq!(
        (
            counters.failed_after_apply,
            counters.injected_failures,
            counters.creates,
            counters.deletes
        ),
        (2, 2, 2, 2)
    );
    let statuses: Vec<_> = leaf.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [Some(503), Some(200), Some(502), Some(404), Some(201)]
    );
}

#[tokio::test]
async fn reads_lag_behind_writes_until_the_lag_has_passed() {
    let leaf = start().await;
    let url = credentials_url(&leaf, "u1");
    let events_url = format!("{url}/events");
    let http = prompt();
    let lag = Duration::from_millis(1500);
    leaf.set_read_lag(lag);
    // Seeding is not a client write: visible at once.
    let old = leaf.seed_credential("u1", "old-client");
    assert_eq!(visible_id(&http, &url).await, Some(old.id.clone()));

    let deleting = Instant::now();
    let deleted = http.delete(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(leaf.credential("u1"), None, "the control shows the truth");
    assert_eq!(
        visible_id(&http, &url).await,
        Some(old.id.clone()),
        "a GET right after the DELETE still shows the credential"
    );
    let events: Value = http
        .get(&events_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events.as_array().unwrap().len(), 1, "and its events");
    let gone = wait_until_visible(&http, &url, None).await;
    assert!(gone - deleting >= lag, "hidden for the whole lag");
    let events: Value = http
        .get(&events_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events, json!([]));

    let posting = Instant::now();
    let created = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body("refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let new_id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(visible_id(&http, &url).await, None, "not visible yet");
    // Writes see the current state, whatever GET shows.
    let again = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body("again"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let shown = wait_until_visible(&http, &url, Some(&new_id)).await;
    assert!(shown - posting >= lag, "hidden for the whole lag");

    // No lag: writes show at once.
    leaf.set_read_lag(Duration::ZERO);
    let deleted = http.delete(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(visible_id(&http, &url).await, None);
}
