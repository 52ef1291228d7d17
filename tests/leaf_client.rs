//! The Leaf client against the leaf-standin over real HTTP: login and token reuse, renewal,
//! re-login on 401, static tokens, every error class, Retry-After, the rate limit, open statuses,
//! event sanitising, and that no secret value ever reaches a Debug, Display or serde output.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use leaf_operator::controller::decide::answers::{Effect, Write, effect};
use leaf_operator::leaf::{
    Credential, CredentialEvent, CredentialStatus, Deleted, LeafAccount, LeafClient,
    LeafClientConfig, LeafError, NotSent, SendGuard, Trimble, TrimbleCreateRequest,
};
use leaf_operator::metrics::Metrics;
use leaf_standin::{
    BadRefresh, BadRefreshMode, OnExisting, RetryAfter, StandIn, StandInConfig, StoredEvent,
};
use support::leaf::{
    CLIENT_SECRET, PASSWORD, REFRESH_TOKEN, USER, account, assert_no_secrets,
    create_user_credential, delete_user_credential, get_user_credential, open_guard, request,
    user_credential_events,
};

const STATIC_TOKEN: &str = "static-token-value-7f1e2d";

async fn standin() -> StandIn {
    StandIn::start(
        StandInConfig::default()
            .with_account("operator", PASSWORD)
            .with_token(STATIC_TOKEN)
            .with_user(USER),
    )
    .await
}

fn config(standin: &StandIn) -> LeafClientConfig {
    LeafClientConfig {
        origin: standin.origin(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        requests_per_second: 0.0,
        burst: 1,
    }
}

fn client(standin: &StandIn) -> LeafClient {
    LeafClient::new(config(standin), Arc::new(Metrics::new())).expect("client")
}

/// A client that has already logged in: its first call (a GET, answered 404) succeeded, so what
/// a test does next starts with a cached token.
async fn logged_in_client(standin: &StandIn) -> LeafClient {
    let client = client(standin);
    get_user_credential(&client).await.unwrap();
    client
}

/// `callers` GETs of the user's credential at once, each on its own clone of `client`.
async fn get_concurrently(
    client: &LeafClient,
    callers: usize,
) -> Vec<Result<Option<Credential>, LeafError>> {
    let calls = (0..callers).map(|_| {
        let client = client.clone();
        async move { get_user_credential(&client).await }
    });
    futures::future::join_all(calls).await
}

/// Fails unless `error` is AuthFailed with HTTP `status`.
#[track_caller]
fn assert_auth_failed(error: &LeafError, status: u16) {
    assert!(
        matches!(error, LeafError::AuthFailed { status: Some(s), .. } if *s == status),
        "{error:?}"
    );
}

/// Fails unless `error` is Unavailable with HTTP `status` (`None`: no answer at all).
#[track_caller]
fn assert_unavailable(error: &LeafError, status: Option<u16>) {
    assert!(
        matches!(error, LeafError::Unavailable { status: s, .. } if *s == status),
        "{error:?}"
    );
}

/// Every rendering of a value a caller could log.
fn renderings<T: std::fmt::Debug + serde::Serialize>(value: &T) -> String {
    format!(
        "{value:?}\n{value:#?}\n{}",
        serde_json::to_string(value).unwrap()
    )
}

fn error_renderings(error: &LeafError) -> String {
    format!("{error}\n{error:?}\n{error:#?}")
}

/// (method, path suffix, status) of every logged request, for sequence assertions.
fn log(standin: &StandIn) -> Vec<(String, String, Option<u16>)> {
    standin
        .requests()
        .into_iter()
        .map(|r| {
            let short = if r.path == "/api/authenticate" {
                "login".to_string()
            } else {
                r.path.rsplit('/').next().unwrap_or_default().to_string()
            };
            (r.method, short, r.status)
        })
        .collect()
}

fn entry(method: &str, path: &str, status: u16) -> (String, String, Option<u16>) {
    (method.to_string(), path.to_string(), Some(status))
}

#[tokio::test]
async fn login_then_calls_send_the_issued_bearer_token() {
    let standin = standin().await;
    let client = client(&standin);
    let none = get_user_credential(&client).await.unwrap();
    assert_eq!(none, None, "404 must mean no credential");
    assert_eq!(
        log(&standin),
        vec![
            entry("POST", "login", 200),
            entry("GET", "trimble-credentials", 404)
        ]
    );
    let requests = standin.requests();
    assert!(
        requests.iter().all(|r| r.account == "user:operator"),
        "{requests:?}"
    );
}

#[tokio::test]
async fn create_get_delete_round_trip_keeps_no_secret() {
    let standin = standin().await;
    let client = client(&standin);
    let created = create_user_credential(&client).await.unwrap();
    assert_eq!(created.status, CredentialStatus::Ok);
    assert_eq!(created.client_id.as_deref(), Some("trimble-client-id"));
    let stored = standin
        .credential(USER)
        .expect("stand-in holds the credential");
    assert_eq!(stored.client_secret, CLIENT_SECRET);
    assert_eq!(stored.submitted_refresh_token, REFRESH_TOKEN);
    assert_eq!(created.id, stored.id);
    assert!(
        created
            .created_time
            .as_deref()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(!created.scopes.is_empty());

    let fetched = get_user_credential(&client).await.unwrap().unwrap();
    assert_eq!(fetched, created);
    // The stand-in echoes every secret in clear, like Leaf: none may survive parsing.
    let secrets = [
        CLIENT_SECRET,
        REFRESH_TOKEN,
        stored.refresh_token.as_str(),
        stored.access_token.as_str(),
    ];
    assert_no_secrets(&renderings(&created), &secrets);
    assert_no_secrets(&renderings(&fetched), &secrets);

    assert_eq!(
        delete_user_credential(&client).await.unwrap(),
        Deleted::Removed
    );
    assert_eq!(get_user_credential(&client).await.unwrap(), None);
    assert_eq!(
        delete_user_credential(&client).await.unwrap(),
        Deleted::NothingThere,
        "a 404 is told apart, for the caller's read-lag rule"
    );
}

#[tokio::test]
async fn a_write_past_its_send_deadline_is_never_sent() {
    let standin = standin().await;
    let client = logged_in_client(&standin).await;
    standin.clear_requests();
    let passed = SendGuard {
        deadline: Instant::now(),
        may_send: &|| true,
    };
    let error = client
        .create_credential::<Trimble>(&account(), USER, &request(), &passed)
        .await
        .unwrap_err();
    assert!(
        matches!(error, LeafError::NotSent(NotSent::DeadlinePassed)),
        "{error:?}"
    );
    assert_eq!(effect(Write::Create, &error), Effect::NotApplied);
    let error = client
        .delete_credential::<Trimble>(&account(), USER, &passed)
        .await
        .unwrap_err();
    assert!(matches!(error, LeafError::NotSent(NotSent::DeadlinePassed)));
    assert_eq!(standin.requests().len(), 0, "{:?}", standin.requests());
}

#[tokio::test]
async fn a_rate_limit_wait_that_outlasts_the_deadline_sends_nothing() {
    let standin = standin().await;
    // One request per second, no burst beyond one: the login takes the only token, so the POST
    // would have to wait about a second for its slot, past its 200 ms deadline.
    let client = LeafClient::new(
        LeafClientConfig {
            requests_per_second: 1.0,
            burst: 1,
            ..config(&standin)
        },
        Arc::new(Metrics::new()),
    )
    .expect("client");
    let guard = SendGuard {
        deadline: Instant::now() + Duration::from_millis(200),
        may_send: &|| true,
    };
    let error = client
        .create_credential::<Trimble>(&account(), USER, &request(), &guard)
        .await
        .unwrap_err();
    assert!(
        matches!(error, LeafError::NotSent(NotSent::DeadlinePassed)),
        "{error:?}"
    );
    assert_eq!(standin.count("POST", "/trimble-credentials"), 0);
    assert!(standin.credential(USER).is_none());
}

#[tokio::test]
async fn the_fence_is_checked_again_before_the_retry_after_a_401() {
    let standin = standin().await;
    let client = logged_in_client(&standin).await;
    standin.clear_requests();
    // The first send is refused with 401 (before Leaf's handler); the fence holds for it and is
    // gone when the client, logged in again, is about to retry.
    standin.unauthorized_next(1);
    let checks = std::sync::atomic::AtomicU32::new(0);
    let fence = || checks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
    let guard = SendGuard {
        deadline: Instant::now() + Duration::from_secs(60),
        may_send: &fence,
    };
    let error = client
        .create_credential::<Trimble>(&account(), USER, &request(), &guard)
        .await
        .unwrap_err();
    assert!(
        matches!(error, LeafError::NotSent(NotSent::Fenced)),
        "{error:?}"
    );
    assert_eq!(
        standin.count("POST", "/trimble-credentials"),
        1,
        "only the first send went out: {:?}",
        standin.requests()
    );
    assert_eq!(checks.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(standin.credential(USER).is_none());
}

#[tokio::test]
async fn token_is_reused_across_calls() {
    let standin = standin().await;
    let client = client(&standin);
    for _ in 0..10 {
        get_user_credential(&client).await.unwrap();
    }
    assert_eq!(standin.logins(), 1, "ten calls must share one login");
    assert_eq!(standin.count("GET", "/trimble-credentials"), 10);
    // A clone shares the cache.
    get_user_credential(&client.clone()).await.unwrap();
    assert_eq!(standin.logins(), 1);
}

#[tokio::test]
async fn concurrent_callers_share_one_login() {
    let standin = standin().await;
    // Slow logins make the race real: every caller arrives while the first login is in flight.
    standin.set_latency(Duration::from_millis(100));
    let client = client(&standin);
    for result in get_concurrently(&client, 20).await {
        assert_eq!(result.unwrap(), None);
    }
    assert_eq!(
        standin.logins(),
        1,
        "20 concurrent callers must share one login"
    );
}

#[tokio::test]
async fn token_is_renewed_before_its_exp_without_a_401() {
    let standin = standin().await;
    standin.set_token_lifetime(Duration::from_secs(2));
    let client = logged_in_client(&standin).await;
    assert_eq!(standin.logins(), 1);
    // Wait past the token's lifetime (the condition here is the clock itself).
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    get_user_credential(&client).await.unwrap();
    assert_eq!(standin.logins(), 2, "an expired token must be renewed");
    assert_eq!(
        standin.counters().unauthorized,
        0,
        "renewal must happen before Leaf answers 401"
    );
}

#[tokio::test]
async fn a_401_triggers_one_relogin_and_one_retry() {
    let standin = standin().await;
    // Without an exp claim the client can only learn of expiry from Leaf's 401.
    standin.set_exp_claim(false);
    let client = logged_in_client(&standin).await;
    standin.revoke_tokens();
    standin.clear_requests();
    let result = get_user_credential(&client).await.unwrap();
    assert_eq!(result, None);
    assert_eq!(
        log(&standin),
        vec![
            entry("GET", "trimble-credentials", 401),
            entry("POST", "login", 200),
            entry("GET", "trimble-credentials", 404),
        ]
    );
}

#[tokio::test]
async fn a_second_401_after_relogin_is_auth_failed_without_more_retries() {
    let standin = standin().await;
    let client = logged_in_client(&standin).await;
    standin.clear_requests();
    standin.unauthorized_next(2);
    let error = get_user_credential(&client).await.unwrap_err();
    assert_auth_failed(&error, 401);
    assert!(!error.is_transient());
    assert_eq!(
        log(&standin),
        vec![
            entry("GET", "trimble-credentials", 401),
            entry("POST", "login", 200),
            entry("GET", "trimble-credentials", 401),
        ]
    );
}

#[tokio::test]
async fn concurrent_401s_cause_a_single_relogin() {
    let standin = standin().await;
    standin.set_exp_claim(false);
    let client = logged_in_client(&standin).await;
    standin.revoke_tokens();
    for result in get_concurrently(&client, 10).await {
        assert_eq!(result.unwrap(), None);
    }
    assert_eq!(
        standin.logins(),
        2,
        "one login at start, one after the revocation"
    );
}

#[tokio::test]
async fn static_token_is_used_as_is_and_never_logs_in() {
    let standin = standin().await;
    let client = client(&standin);
    let account = LeafAccount::token(STATIC_TOKEN);
    for _ in 0..3 {
        client
            .get_credential::<Trimble>(&account, USER)
            .await
            .unwrap();
    }
    assert_eq!(standin.logins(), 0);
    assert!(standin.requests().iter().all(|r| r.account == "token:1"));

    // A refused static token cannot be renewed: AuthFailed after one request, no login.
    standin.clear_requests();
    let unknown = LeafAccount::token("revoked-static-token-55aa");
    let error = client
        .get_credential::<Trimble>(&unknown, USER)
        .await
        .unwrap_err();
    assert_auth_failed(&error, 401);
    assert_eq!(
        log(&standin),
        vec![entry("GET", "trimble-credentials", 401)]
    );
    assert_no_secrets(&error_renderings(&error), &["revoked-static-token-55aa"]);
}

#[tokio::test]
async fn wrong_password_is_auth_failed() {
    let standin = standin().await;
    let client = client(&standin);
    let account = LeafAccount::password("operator", "wrong-password-Q19");
    let error = client
        .get_credential::<Trimble>(&account, USER)
        .await
        .unwrap_err();
    assert_auth_failed(&error, 401);
    assert_eq!(
        log(&standin),
        vec![entry("POST", "login", 401)],
        "no call without a token"
    );
    assert_no_secrets(&error_renderings(&error), &["wrong-password-Q19"]);
}

#[tokio::test]
async fn forbidden_is_auth_failed() {
    let standin = standin().await;
    let client = logged_in_client(&standin).await;
    standin.fail_every_nth(1, 403);
    let error = get_user_credential(&client).await.unwrap_err();
    assert_auth_failed(&error, 403);
}

#[tokio::test]
async fn server_errors_are_unavailable() {
    let standin = standin().await;
    let client = logged_in_client(&standin).await;
    for status in [500, 502, 503] {
        standin.fail_every_nth(1, status);
        let error = get_user_credential(&client).await.unwrap_err();
        assert_unavailable(&error, Some(status));
        assert!(error.is_transient());
        assert_eq!(error.retry_after(), None);
    }
    // The client does not retry 5xx itself: one request per call.
    standin.clear_requests();
    let _ = get_user_credential(&client).await.unwrap_err();
    assert_eq!(standin.requests().len(), 1);
}

#[tokio::test]
async fn every_nth_failure_is_deterministic() {
    let standin = standin().await;
    let client = logged_in_client(&standin).await;
    standin.fail_every_nth(3, 502);
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        outcomes.push(get_user_credential(&client).await.is_ok());
    }
    assert_eq!(outcomes, [true, true, false, true, true, false]);
}

#[tokio::test]
async fn rate_limited_answer_returns_retry_after_in_seconds() {
    let standin = standin().await;
    let client = logged_in_client(&standin).await;
    standin.rate_limit_next(1, RetryAfter::Seconds(7));
    let error = get_user_credential(&client).await.unwrap_err();
    assert_unavailable(&error, Some(429));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    // Only one 429 was injected.
    get_user_credential(&client).await.unwrap();
}

#[tokio::test]
async fn rate_limited_answer_returns_retry_after_as_http_date() {
    let standin = standin().await;
    let client = logged_in_client(&standin).await;
    standin.rate_limit_next(1, RetryAfter::DateIn(30));
    let error = get_user_credential(&client).await.unwrap_err();
    let retry_after = error
        .retry_after()
        .expect("an HTTP-date Retry-After is parsed");
    // HTTP-dates have one-second resolution.
    assert!(
        retry_after >= Duration::from_secs(28) && retry_after <= Duration::from_secs(31),
        "{retry_after:?}"
    );
}

#[tokio::test]
async fn dropped_connection_is_unavailable() {
    let standin = standin().await;
    let client = logged_in_client(&standin).await;
    standin.drop_next(1);
    let error = get_user_credential(&client).await.unwrap_err();
    assert_unavailable(&error, None);
    assert_eq!(
        standin.requests().last().unwrap().status,
        None,
        "the stand-in logged the drop"
    );
    get_user_credential(&client).await.unwrap();
}

#[tokio::test]
async fn outage_is_unavailable_including_login() {
    let standin = standin().await;
    let client = client(&standin);
    standin.set_outage(true);
    let error = get_user_credential(&client).await.unwrap_err();
    assert_unavailable(&error, Some(503));
    standin.set_outage(false);
    get_user_credential(&client).await.unwrap();
}

#[tokio::test]
async fn unreachable_leaf_is_unavailable() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = LeafClientConfig {
        origin: format!("http://127.0.0.1:{port}"),
        ..LeafClientConfig::default()
    };
    let client = LeafClient::new(config, Arc::new(Metrics::new())).unwrap();
    let error = get_user_credential(&client).await.unwrap_err();
    assert_unavailable(&error, None);
    assert!(error.to_string().contains("connect"), "{error}");
}

#[tokio::test]
async fn slow_answer_times_out_as_unavailable() {
    let standin = standin().await;
    let config = LeafClientConfig {
        request_timeout: Duration::from_millis(300),
        ..config(&standin)
    };
    let client = LeafClient::new(config, Arc::new(Metrics::new())).unwrap();
    standin.set_latency(Duration::from_secs(2));
    let started = Instant::now();
    let error = get_user_credential(&client).await.unwrap_err();
    assert_unavailable(&error, None);
    assert!(error.to_string().contains("timed out"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn invalid_create_requests_are_rejected_with_a_sanitised_detail() {
    let standin = standin().await;
    let client = client(&standin);
    let mut empty_secret = request();
    empty_secret.client_secret = "".into();
    let error = client
        .create_credential::<Trimble>(&account(), USER, &empty_secret, &open_guard())
        .await
        .unwrap_err();
    match &error {
        LeafError::Rejected {
            status: 400,
            detail,
        } => assert!(
            detail.contains("clientSecret must not be empty"),
            "{detail}"
        ),
        other => panic!("expected Rejected 400, got {other:?}"),
    }

    // A bad refresh token refused at POST.
    let mut bad = request();
    bad.refresh_token = "bad-refresh-token-77".into();
    let error = client
        .create_credential::<Trimble>(&account(), USER, &bad, &open_guard())
        .await
        .unwrap_err();
    assert!(
        matches!(error, LeafError::Rejected { status: 400, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("Invalid refresh token"),
        "{error}"
    );
    assert_no_secrets(
        &error_renderings(&error),
        &["bad-refresh-token-77", CLIENT_SECRET],
    );
    assert!(standin.credential(USER).is_none());
}

#[tokio::test]
async fn create_for_an_unknown_leaf_user_is_user_not_found_not_a_rejection() {
    let standin = standin().await;
    let client = client(&standin);
    let error = client
        .create_credential::<Trimble>(&account(), "no-such-user", &request(), &open_guard())
        .await
        .unwrap_err();
    assert!(matches!(error, LeafError::UserNotFound { .. }), "{error:?}");
    assert_eq!(error.status(), Some(404));
    assert_eq!(effect(Write::Create, &error), Effect::NotApplied);
}

#[tokio::test]
async fn create_on_existing_credential_is_already_exists_for_409_and_400() {
    for behaviour in [OnExisting::Conflict, OnExisting::BadRequest] {
        let standin = standin().await;
        standin.set_on_existing(behaviour);
        standin.seed_credential(USER, "someone-elses-client");
        let client = client(&standin);
        let error = create_user_credential(&client).await.unwrap_err();
        assert!(
            matches!(error, LeafError::AlreadyExists { .. }),
            "{behaviour:?}: {error:?}"
        );
        assert_eq!(
            standin.credential(USER).unwrap().client_id,
            "someone-elses-client"
        );
    }
}

#[tokio::test]
async fn create_on_existing_credential_may_silently_replace_it() {
    let standin = standin().await;
    standin.set_on_existing(OnExisting::Replace);
    let seeded = standin.seed_credential(USER, "old-client");
    let client = client(&standin);
    let created = create_user_credential(&client).await.unwrap();
    assert_ne!(created.id, seeded.id);
    assert_eq!(created.client_id.as_deref(), Some("trimble-client-id"));
}

#[tokio::test]
async fn bad_refresh_token_accepted_then_flipped_to_unauthenticated() {
    let standin = standin().await;
    standin.set_bad_refresh(BadRefresh {
        mode: BadRefreshMode::Flip,
        tokens: vec!["expired-refresh-token-1".into()],
        prefix: None,
        after_gets: 1,
    });
    let client = client(&standin);
    let mut bad = request();
    bad.refresh_token = "expired-refresh-token-1".into();
    let created = client
        .create_credential::<Trimble>(&account(), USER, &bad, &open_guard())
        .await
        .unwrap();
    assert_eq!(created.status, CredentialStatus::Ok);
    let first = get_user_credential(&client).await.unwrap().unwrap();
    assert_eq!(first.status, CredentialStatus::Ok);
    let second = get_user_credential(&client).await.unwrap().unwrap();
    assert_eq!(second.status, CredentialStatus::Unauthenticated);
    let events = user_credential_events(&client).await.unwrap();
    assert_eq!(
        events[0].status_code,
        Some(400),
        "the failed refresh is the newest event: {events:?}"
    );
}

#[tokio::test]
async fn unknown_status_is_kept_verbatim_and_known_ones_match_any_case() {
    let standin = standin().await;
    standin.seed_credential(USER, "cid");
    let client = client(&standin);
    let cases = [
        ("OK", CredentialStatus::Ok),
        ("unauthenticated", CredentialStatus::Unauthenticated),
        ("invalid", CredentialStatus::Invalid),
        ("Invalid", CredentialStatus::Invalid),
        ("missing_permission", CredentialStatus::MissingPermission),
        (
            "TEMPORARILY_UNAVAILABLE",
            CredentialStatus::TemporarilyUnavailable,
        ),
        (
            "SUSPENDED_BY_LEAF",
            CredentialStatus::Other("SUSPENDED_BY_LEAF".into()),
        ),
        (
            "awaiting grower",
            CredentialStatus::Other("awaiting grower".into()),
        ),
    ];
    for (sent, expected) in cases {
        assert!(standin.set_status(USER, sent));
        let credential = get_user_credential(&client).await.unwrap().unwrap();
        assert_eq!(credential.status, expected, "Leaf sent {sent:?}");
        assert_eq!(
            credential.raw_status, sent,
            "the exact string is kept for display"
        );
        if let CredentialStatus::Other(value) = &credential.status {
            assert_eq!(value, sent);
            assert_eq!(credential.status.as_str(), sent);
        }
    }
}

#[tokio::test]
async fn events_come_newest_first_with_headers_and_bodies_dropped() {
    let standin = standin().await;
    let client = client(&standin);
    create_user_credential(&client).await.unwrap();
    let planted_jwt = leaf_standin::fake_jwt("planted-subject");
    let planted = [
        planted_jwt.as_str(),
        "planted-refresh-token-QQ11",
        "planted-secret-ZZ22",
        "c2VjcmV0LWJhc2U2NC1ydW4tcGxhbnRlZA==",
    ];
    standin.push_event(
        USER,
        401,
        Some(&format!("Authorization: Bearer {planted_jwt}\nX-Secret: planted-secret-ZZ22")),
        Some(&format!(
            r#"{{"error":"invalid_grant","refresh_token":"planted-refresh-token-QQ11","blob":"{}"}}"#,
            planted[3]
        )),
    );
    standin.push_raw_event(
        USER,
        StoredEvent {
            id: "old".into(),
            created_date: "2020-01-01T00:00:00.000000Z".into(),
            status_code: 200,
            headers: "Authorization: Basic planted-secret-ZZ22".into(),
            body: r#"{"access_token":"planted-refresh-token-QQ11"}"#.into(),
        },
    );
    let stored = standin.events(USER);
    assert_eq!(stored.len(), 3);

    let events = user_credential_events(&client).await.unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].status_code, Some(401), "newest first: {events:?}");
    assert_eq!(events[0].summary, "HTTP 401 Unauthorized");
    assert_eq!(events[1].status_code, Some(200));
    assert_eq!(events[2].id, "old", "oldest last");
    assert!(events.iter().all(|e| e.summary.len() <= 200));
    let mut all_secrets: Vec<&str> = planted.to_vec();
    let stored_bodies: Vec<String> = stored
        .iter()
        .flat_map(|e| [e.headers.clone(), e.body.clone()])
        .collect();
    // Every token the stand-in put into the default event as well.
    let default_tokens: Vec<String> = stored_bodies
        .iter()
        .flat_map(|text| {
            text.split(['"', ' ', '\n'])
                .filter(|w| w.len() >= 20)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    all_secrets.extend(default_tokens.iter().map(String::as_str));
    assert_no_secrets(&renderings(&events), &all_secrets);

    // Gone with the credential, as documented; the client copes with an empty list.
    delete_user_credential(&client).await.unwrap();
    assert_eq!(
        user_credential_events(&client).await.unwrap(),
        Vec::<CredentialEvent>::new()
    );
}

#[tokio::test]
async fn rate_limit_is_honoured_across_callers_and_logins() {
    let standin = standin().await;
    let config = LeafClientConfig {
        requests_per_second: 20.0,
        burst: 5,
        ..config(&standin)
    };
    let client = LeafClient::new(config, Arc::new(Metrics::new())).unwrap();
    let started = Instant::now();
    for result in get_concurrently(&client, 24).await {
        result.unwrap();
    }
    let elapsed = started.elapsed();
    // 25 requests (1 login + 24 calls): 5 at once, 20 more at 20/s = at least 1 s.
    assert_eq!(standin.requests().len(), 25);
    assert!(
        elapsed >= Duration::from_millis(950),
        "25 requests at 20/s, burst 5, took {elapsed:?}"
    );
    // In any window of 500 ms at most burst + rate * window arrived (+2 for edges and jitter).
    let mut times: Vec<jiff::Timestamp> = standin
        .requests()
        .iter()
        .map(|r| r.at.parse().unwrap())
        .collect();
    times.sort();
    for (i, start) in times.iter().enumerate() {
        let window_end = start
            .checked_add(jiff::SignedDuration::from_millis(500))
            .unwrap();
        let in_window = times[i..].iter().filter(|t| **t < window_end).count();
        assert!(
            in_window <= 5 + 10 + 2,
            "{in_window} requests within 500 ms of request {i}"
        );
    }
}

#[tokio::test]
async fn every_request_is_counted_in_metrics_by_operation_and_status() {
    let standin = standin().await;
    let metrics = Arc::new(Metrics::new());
    let client = LeafClient::new(config(&standin), metrics.clone()).unwrap();
    get_user_credential(&client).await.unwrap();
    create_user_credential(&client).await.unwrap();
    user_credential_events(&client).await.unwrap();
    delete_user_credential(&client).await.unwrap();
    standin.drop_next(1);
    let _ = get_user_credential(&client).await;
    let text = metrics.encode();
    for line in [
        r#"leaf_operator_leaf_requests_total{operation="authenticate",status="200"} 1"#,
        r#"leaf_operator_leaf_requests_total{operation="get_credential",status="404"} 1"#,
        r#"leaf_operator_leaf_requests_total{operation="create_credential",status="201"} 1"#,
        r#"leaf_operator_leaf_requests_total{operation="credential_events",status="200"} 1"#,
        r#"leaf_operator_leaf_requests_total{operation="delete_credential",status="204"} 1"#,
        r#"leaf_operator_leaf_requests_total{operation="get_credential",status="error"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
    assert!(
        text.contains("leaf_operator_leaf_request_duration_seconds"),
        "{text}"
    );
    assert_no_secrets(&text, &[PASSWORD, CLIENT_SECRET, REFRESH_TOKEN]);
}

#[tokio::test]
async fn no_secret_appears_in_any_debug_or_display_output() {
    let standin = standin().await;
    let client = client(&standin);
    let password = account();
    let token = LeafAccount::token(STATIC_TOKEN);
    let create = request();
    let mut outputs = vec![
        format!("{password:?} {password:#?} {}", password.account_key()),
        format!("{token:?} {token:#?} {}", token.account_key()),
        format!("{create:?} {create:#?}"),
    ];
    // Errors of every class, produced for real.
    let mut errors: Vec<LeafError> = Vec::new();
    errors.push(
        client
            .get_credential::<Trimble>(&LeafAccount::password("operator", "nope-password-77"), USER)
            .await
            .unwrap_err(),
    );
    standin.rate_limit_next(1, RetryAfter::Seconds(1));
    errors.push(
        client
            .get_credential::<Trimble>(&password, USER)
            .await
            .unwrap_err(),
    );
    let mut bad = request();
    bad.refresh_token = "bad-and-secret-refresh-99".into();
    errors.push(
        client
            .create_credential::<Trimble>(&password, USER, &bad, &open_guard())
            .await
            .unwrap_err(),
    );
    standin.seed_credential(USER, "cid");
    errors.push(
        client
            .create_credential::<Trimble>(&password, USER, &create, &open_guard())
            .await
            .unwrap_err(),
    );
    standin.drop_next(1);
    errors.push(
        client
            .get_credential::<Trimble>(&password, USER)
            .await
            .unwrap_err(),
    );
    let kinds: Vec<&str> = errors
        .iter()
        .map(|error| match error {
            LeafError::AuthFailed { .. } => "auth_failed",
            LeafError::Unavailable { .. } => "unavailable",
            LeafError::Rejected { .. } => "rejected",
            LeafError::AlreadyExists { .. } => "already_exists",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "auth_failed",
            "unavailable",
            "rejected",
            "already_exists",
            "unavailable"
        ]
    );
    outputs.extend(errors.iter().map(error_renderings));
    let credential: Credential = client
        .get_credential::<Trimble>(&password, USER)
        .await
        .unwrap()
        .unwrap();
    outputs.push(renderings(&credential));
    outputs.push(format!("{client:?}"));
    let stored = standin.credential(USER).unwrap();
    let text = outputs.join("\n");
    let secrets = [
        PASSWORD,
        STATIC_TOKEN,
        CLIENT_SECRET,
        REFRESH_TOKEN,
        "nope-password-77",
        "bad-and-secret-refresh-99",
        stored.client_secret.as_str(),
        stored.refresh_token.as_str(),
        stored.access_token.as_str(),
    ];
    assert_no_secrets(&text, &secrets);
    // Leaf's issued token shape never shows up either.
    assert!(
        !text.contains("eyJ"),
        "a JWT-looking string leaked:\n{text}"
    );
}

#[tokio::test]
async fn error_bodies_are_reduced_to_short_scrubbed_excerpts() {
    let standin = standin().await;
    let client = logged_in_client(&standin).await;
    let jwt = leaf_standin::fake_jwt("leaky");
    let leaks = [
        jwt.as_str(),
        "leaked-refresh-QQ77",
        "leaked-secret-PP66",
        "0123456789abcdef0123456789abcdef",
    ];
    let problem = format!(
        r#"{{"title":"Bad Request","status":400,"detail":"refreshToken=leaked-refresh-QQ77 rejected; clientSecret: leaked-secret-PP66; sent Bearer {jwt}; trace 0123456789abcdef0123456789abcdef {}"}}"#,
        "padding ".repeat(100)
    );
    let plain = format!(
        "Authorization: Bearer {jwt}\n\"password\": \"leaked-secret-PP66\"\n{}",
        "x".repeat(1000)
    );
    for (status, body) in [
        (400, problem.as_str()),
        (422, plain.as_str()),
        (503, problem.as_str()),
    ] {
        standin.fail_every_nth_with_body(1, status, body);
        let error = get_user_credential(&client).await.unwrap_err();
        assert_eq!(error.status(), Some(status));
        let text = error_renderings(&error);
        assert_no_secrets(&text, &leaks);
        assert!(!text.contains("eyJ"), "{text}");
        let display = error.to_string();
        assert!(display.chars().count() < 300, "excerpt too long: {display}");
    }
    // An empty body still gives a readable message.
    standin.fail_every_nth_with_body(1, 418, "");
    let error = get_user_credential(&client).await.unwrap_err();
    assert!(
        matches!(error, LeafError::Rejected { status: 418, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("418"), "{error}");
}

#[tokio::test]
async fn short_secrets_quoted_back_by_leaf_are_removed_from_errors() {
    let standin = standin().await;
    let client = logged_in_client(&standin).await;
    // Too short and plain for any token pattern: only knowing the values sent can catch them.
    let short = TrimbleCreateRequest {
        client_id: "cid".into(),
        client_secret: "cs-short".into(),
        refresh_token: "rt-short".into(),
    };
    standin.fail_every_nth_with_body(
        1,
        400,
        r#"{"detail":"refresh rt-short (client cid, secret cs-short) was refused"}"#,
    );
    let error = client
        .create_credential::<Trimble>(&account(), USER, &short, &open_guard())
        .await
        .unwrap_err();
    let text = error_renderings(&error);
    assert_no_secrets(&text, &["rt-short", "cs-short"]);
    assert!(
        text.contains("client cid"),
        "non-secret context is kept: {text}"
    );

    // The same for a password quoted back by a refused login.
    standin.clear_faults();
    standin.fail_every_nth_with_body(1, 401, "user operator password pw-short is wrong");
    let error = client
        .get_credential::<Trimble>(&LeafAccount::password("someone", "pw-short"), USER)
        .await
        .unwrap_err();
    assert!(matches!(error, LeafError::AuthFailed { .. }), "{error:?}");
    assert_no_secrets(&error_renderings(&error), &["pw-short"]);
}

#[tokio::test]
async fn create_with_an_empty_answer_is_an_unreadable_answer_that_counts_as_applied() {
    let standin = standin().await;
    standin.set_empty_create_answer(true);
    let client = client(&standin);
    let error = create_user_credential(&client)
        .await
        .expect_err("a 201 without a body names no credential");
    assert!(
        matches!(error, LeafError::InvalidResponse { .. }),
        "{error:?}"
    );
    assert_eq!(
        effect(Write::Create, &error),
        Effect::Applied,
        "the caller must keep the create in doubt"
    );
    assert!(standin.credential(USER).is_some());
    assert_eq!(
        standin.count("POST", "/trimble-credentials"),
        1,
        "never POST twice"
    );
    assert_eq!(
        standin.count("GET", "/trimble-credentials"),
        0,
        "whatever a GET shows is for the caller's ownership rules to judge"
    );
}
