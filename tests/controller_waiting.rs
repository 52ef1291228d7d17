//! Waiting states: a Secret that is late or incomplete, Leaf refusing the account or the POST,
//! Leaf down or rate limiting; each with what the user sees and which Leaf calls were made.

mod support;

use std::time::Duration;

use leaf_operator::crd::TrimbleConnection;
use leaf_standin::{RetryAfter, StandInConfig};
use support::operator::{Fixture, conditions};

const WAIT: Duration = Duration::from_secs(60);

fn triples(items: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// Ready=False and Reconciling=True, both for `reason`: the operator waits and retries by itself.
fn assert_waiting(tc: &TrimbleConnection, reason: &str) {
    assert_eq!(
        conditions(tc),
        triples(&[("Ready", "False", reason), ("Reconciling", "True", reason)]),
        "waiting, not stalled"
    );
}

/// Ready=False and Stalled=True, both for `reason`: nothing changes until the user acts.
fn assert_stalled(tc: &TrimbleConnection, reason: &str) {
    assert_eq!(
        conditions(tc),
        triples(&[("Ready", "False", reason), ("Stalled", "True", reason)])
    );
}

/// Ready=True for CredentialValid and no other condition left behind.
fn assert_ready(tc: &TrimbleConnection) {
    assert_eq!(
        conditions(tc),
        triples(&[("Ready", "True", "CredentialValid")])
    );
}

/// Waits for an Event with `reason` on `farm` and asserts it is a Warning.
async fn assert_warning_event(f: &Fixture, reason: &str) {
    let (kind, _) = f.wait_event("farm", reason, WAIT).await;
    assert_eq!(kind, "Warning");
}

#[tokio::test]
async fn a_late_secret_is_a_wait_not_an_error_and_creation_follows_at_once() {
    let f = Fixture::start("late").await;
    f.create_tc("farm", "user-late", "creds", serde_json::json!({}))
        .await;
    let tc = f.wait_reason("farm", "SecretNotFound", WAIT).await;
    assert_waiting(&tc, "SecretNotFound");
    assert_warning_event(&f, "SecretNotFound").await;
    assert!(f.leaf_calls("user-late").is_empty());

    // The Secret watch reacts at once; the periodic recheck is minutes away.
    f.put_default_credentials().await;
    let tc = f
        .wait_reason("farm", "CredentialValid", Duration::from_secs(20))
        .await;
    assert_ready(&tc);
    assert_eq!(
        f.leaf_calls("user-late"),
        vec!["GET 404", "POST 201", "GET events 200"]
    );
    let reasons = f.event_reasons("farm").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "SecretNotFound").count(),
        1,
        "{reasons:?}"
    );
}

#[tokio::test]
async fn an_incomplete_secret_stalls_naming_the_key_and_a_fix_proceeds() {
    let f = Fixture::start("incomplete").await;
    f.put_secret(
        "creds",
        &[("clientId", "client-a"), ("clientSecret", "secret-a")],
    )
    .await;
    f.create_tc("farm", "user-incomplete", "creds", serde_json::json!({}))
        .await;
    let tc = f.wait_reason("farm", "SecretInvalid", WAIT).await;
    assert_stalled(&tc, "SecretInvalid");
    let message = &tc.status.as_ref().unwrap().conditions[0].message;
    assert!(message.contains("refreshToken"), "{message}");
    assert!(!message.contains("secret-a"), "{message}");

    // An empty value is as bad as a missing one.
    f.put_credentials("creds", "client-a", "secret-a", "").await;
    let tc = f
        .wait_until_status("farm", WAIT, |s| {
            s.conditions
                .first()
                .is_some_and(|c| c.message.contains("empty"))
        })
        .await;
    assert_eq!(conditions(&tc)[0].2, "SecretInvalid");
    assert!(
        f.leaf_calls("user-incomplete").is_empty(),
        "no Leaf call with an unusable Secret"
    );
    assert_warning_event(&f, "SecretInvalid").await;

    f.put_default_credentials().await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert_eq!(conditions(&tc).len(), 1, "Stalled removed");
}

#[tokio::test]
async fn a_refused_leaf_account_is_leaf_auth_failed_and_stalled() {
    let f = Fixture::start("authfail").await;
    f.put_default_credentials().await;
    f.put_secret("leaf-account", &[("token", "not-a-known-token")])
        .await;
    f.create_tc(
        "farm",
        "user-authfail",
        "creds",
        serde_json::json!({"leafAuthSecretRef": {"name": "leaf-account"}}),
    )
    .await;
    let tc = f.wait_reason("farm", "LeafAuthFailed", WAIT).await;
    assert_stalled(&tc, "LeafAuthFailed");
    assert_eq!(f.count_calls("user-authfail", "POST"), 0);
    assert_warning_event(&f, "LeafAuthFailed").await;

    // A valid token in the referenced Secret: the Secret watch brings the fix in.
    f.standin.add_token("team-token-1");
    f.put_secret("leaf-account", &[("token", "team-token-1")])
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    let requests = f.standin.requests();
    let post = requests
        .iter()
        .find(|r| r.method == "POST" && r.path.contains("user-authfail"))
        .unwrap();
    assert!(
        post.account.starts_with("token:"),
        "the per-resource token account was used: {post:?}"
    );
}

#[tokio::test]
async fn a_refused_post_is_credential_rejected_and_never_retried_with_the_same_values() {
    let f = Fixture::start("rejected").await;
    // The stand-in rejects refresh tokens starting with "bad-" at POST.
    f.put_credentials("creds", "client-a", "secret-a", "bad-refresh-token-value")
        .await;
    f.create_tc("farm", "user-rejected", "creds", serde_json::json!({}))
        .await;
    let tc = f.wait_reason("farm", "CredentialRejected", WAIT).await;
    assert_stalled(&tc, "CredentialRejected");
    let status = tc.status.clone().unwrap();
    let message = &status.conditions[0].message;
    assert!(message.contains("400"), "{message}");
    assert!(!message.contains("bad-refresh-token-value"), "{message}");
    assert!(status.credential_id.is_none());
    assert_warning_event(&f, "CredentialRejected").await;

    // Nudging it does not send the refused values again.
    f.annotate("farm", "withleaf.io/reconcile-requested-at", "now")
        .await;
    f.wait_until_status("farm", WAIT, |s| {
        s.last_handled_reconcile_at.as_deref() == Some("now")
    })
    .await;
    assert_eq!(f.count_calls("user-rejected", "POST"), 1);

    f.put_credentials("creds", "client-a", "secret-a", "good-refresh")
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert_eq!(f.count_calls("user-rejected", "POST"), 2);
}

#[tokio::test]
async fn leaf_5xx_backs_off_with_a_bounded_call_count_and_recovers() {
    let f = Fixture::start("outage").await;
    f.standin.set_outage(true);
    f.create_farm_with_default_credentials("user-outage").await;
    let tc = f.wait_reason("farm", "LeafUnavailable", WAIT).await;
    assert_waiting(&tc, "LeafUnavailable");
    let started = f.standin.requests().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = f.standin.requests().len() - started;
    // 1 s doubling: about 4 attempts in 10 s (each a login or a GET); a hot loop makes hundreds.
    assert!(during <= 8, "{during} requests in 10 s of outage");
    assert!(during >= 1, "it keeps trying");
    let reasons = f.event_reasons("farm").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "LeafUnavailable").count(),
        1,
        "{reasons:?}"
    );

    f.standin.set_outage(false);
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert_ready(&tc);
    assert_eq!(f.count_calls("user-outage", "POST"), 1);
}

#[tokio::test]
async fn leaf_429_retry_after_is_honoured() {
    let f = Fixture::start_with("ratelimit", StandInConfig::default(), |o| o).await;
    f.standin
        .set_fault_path_filter(Some("/trimble-credentials"));
    f.standin.rate_limit_next(2, RetryAfter::Seconds(3));
    f.create_farm_with_default_credentials("user-ratelimit")
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;

    let calls: Vec<_> = f
        .standin
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("user-ratelimit"))
        .collect();
    let statuses: Vec<_> = calls.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![Some(429), Some(429), Some(404), Some(201), Some(200)],
        "{calls:?}"
    );
    let times: Vec<jiff::Timestamp> = calls.iter().map(|r| r.at.parse().expect("time")).collect();
    for pair in times.windows(2).take(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap >= jiff::SignedDuration::from_millis(2900),
            "Retry-After 3 s not honoured: {gap:?}"
        );
    }
}

#[tokio::test]
async fn a_wrong_default_account_password_is_leaf_auth_failed_without_any_credential_call() {
    let f = Fixture::start_with("badpass", StandInConfig::default(), |o| {
        o.account(support::operator::LEAF_USERNAME, "wrong-password")
    })
    .await;
    f.create_farm_with_default_credentials("user-badpass").await;
    let tc = f.wait_reason("farm", "LeafAuthFailed", WAIT).await;
    assert_stalled(&tc, "LeafAuthFailed");
    assert!(
        f.leaf_calls("user-badpass").is_empty(),
        "{:?}",
        f.leaf_calls("user-badpass")
    );
    let message = &tc.status.as_ref().unwrap().conditions[0].message;
    assert!(!message.contains("wrong-password"), "{message}");
}

#[tokio::test]
async fn checking_goes_on_after_the_credentials_secret_is_deleted() {
    // Periodic checks every 2 s (test-only override), so that checks can be counted.
    let f = Fixture::start_with("no-secret-check", StandInConfig::default(), |o| {
        o.refresh_interval("2s")
    })
    .await;
    let user = "user-no-secret-check";
    f.create_farm_with_default_credentials(user).await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    // The refresh token in it was spent bootstrap material: deleting it is a normal thing to do.
    f.secrets
        .delete("creds", &Default::default())
        .await
        .expect("delete the Secret");
    let tc = f
        .wait_until_status("farm", WAIT, |s| {
            support::operator::condition(s, "Ready")
                .is_some_and(|c| c.message.contains("needed only to rotate"))
        })
        .await;
    assert_ready(&tc);
    let checks_before = f.count_calls(user, "GET");
    support::wait_until("two more checks without the Secret", WAIT, || async {
        let checks = f.count_calls(user, "GET");
        if checks >= checks_before + 2 {
            Ok(())
        } else {
            Err(format!("{:?}", f.leaf_calls(user)))
        }
    })
    .await;

    // Leaf's view still reaches the resource, and the message says where the fix goes.
    f.standin.set_status(user, "UNAUTHENTICATED");
    let tc = f.wait_reason("farm", "CredentialInvalid", WAIT).await;
    let message = &support::operator::condition(tc.status.as_ref().unwrap(), "Ready")
        .unwrap()
        .message;
    assert!(message.contains("does not exist now"), "{message}");
    assert!(
        !f.event_reasons("farm")
            .await
            .contains(&"SecretNotFound".to_string()),
        "a missing Secret is no problem while nothing needs creating"
    );
}
