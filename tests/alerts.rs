//! Leaf alerts end to end: the real operator (receiver on its own port, registration with the
//! stand-in's Alerts API) against the real API server and the Leaf stand-in.
//!
//! The default refreshInterval (10m) is kept unless a test says otherwise, so a change seen
//! within seconds was brought by an alert, not by polling.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::ResourceExt;
use leaf_standin::{
    AlertTamper, CREDENTIALS_LIMITED_PERMISSION, CREDENTIALS_UNAUTHENTICATED, StandInConfig,
};
use support::alerts::{
    SIGNING_SECRET, WEBHOOK_NAME, connect, credentials_alert, free_port, leaf_timestamp, metrics,
    post, post_chunked, post_signed, put_signing_secret, read_until_closed, receiver_url, sample,
    sign, wait_metric, wait_pod_event, wait_receiver_ready, wait_record_id, webhook_record,
    with_alerts,
};
use support::operator::{Fixture, LEAF_PASSWORD};
use support::wait_until;

const WAIT: Duration = Duration::from_secs(60);
/// An alert must show on the resource much sooner than any poll (10 minutes) would.
const ALERT_WAIT: Duration = Duration::from_secs(20);

const TRIGGERED: &str =
    r#"leaf_operator_alerts_handled_total{source="receiver",outcome="triggered"}"#;
const DUPLICATE: &str =
    r#"leaf_operator_alerts_handled_total{source="receiver",outcome="duplicate"}"#;
const REGISTERED: &str = r#"leaf_operator_alerts_webhook_state{state="registered"}"#;
const FOREIGN: &str = r#"leaf_operator_alerts_webhook_state{state="foreign"}"#;
const TWICE: &str = "leaf_operator_alerts_event_registered_twice_total";
/// Another cluster on the same Leaf account, installed with the same defaults as ours.
const OTHER_CLUSTER_URL: &str = "https://leaf-alerts.other-cluster.example.com/alerts";
const OTHER_CLUSTER_SECRET: &str = "PLANTED-other-cluster-signing-secret-91b0";
/// The test operator's Pod (`POD_NAME` of its first start, see `support::operator`).
const POD: &str = "test-operator-1";
const POD_UID: &str = "6d0c3e1a-0000-4000-8000-00000000c0de";

/// A registering operator with a Ready `farm` for `user`; returns the fixture, the receiver's
/// port and the credential id.
async fn registered_farm(
    prefix: &str,
    user: &str,
    rust_log: Option<&str>,
) -> (Fixture, u16, String) {
    let port = free_port();
    let f = Fixture::start_with(prefix, StandInConfig::default(), |o| {
        let o = match rust_log {
            Some(filter) => o.rust_log(filter),
            None => o,
        };
        with_alerts(o, port, true)
    })
    .await;
    put_signing_secret(&f, SIGNING_SECRET).await;
    f.create_farm_with_default_credentials(user).await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let credential_id = tc.status.unwrap().credential_id.expect("a credential id");
    wait_registered(&f, port).await;
    (f, port, credential_id)
}

/// Waits until the stand-in holds our webhook for both credentials events.
async fn wait_registered(f: &Fixture, port: u16) -> leaf_standin::StoredWebhook {
    wait_until("our webhook to be registered", WAIT, || async {
        let webhooks = f.standin.webhooks();
        webhooks
            .iter()
            .find(|w| {
                w.url == receiver_url(port)
                    && w.events.iter().any(|e| e == CREDENTIALS_UNAUTHENTICATED)
                    && w.events.iter().any(|e| e == CREDENTIALS_LIMITED_PERMISSION)
            })
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{:?}",
                    webhooks
                        .iter()
                        .map(|w| (&w.name, &w.url))
                        .collect::<Vec<_>>()
                )
            })
    })
    .await
}

#[tokio::test]
async fn an_unauthenticated_credential_is_reported_within_seconds_through_a_signed_alert() {
    let (f, _port, credential_id) = registered_farm("alert-unauth", "user-alert", None).await;
    let webhook = f.standin.webhooks().into_iter().next().expect("webhook");
    assert_eq!(webhook.name, "leaf-operator-test");
    assert_eq!(
        webhook.secret, SIGNING_SECRET,
        "registered under the Secret's value"
    );
    // Leaf's confirmation (unsigned in the stand-in by default) was answered 2xx.
    wait_until("the confirmation to be answered", WAIT, || async {
        let deliveries = f.standin.deliveries();
        deliveries
            .iter()
            .find(|d| d.event == "confirmation" && d.status == Some(200))
            .map(|_| ())
            .ok_or_else(|| format!("{deliveries:?}"))
    })
    .await;
    f.standin.clear_requests();

    assert!(f.standin.set_status("user-alert", "UNAUTHENTICATED"));
    let tc = f.wait_reason("farm", "CredentialInvalid", ALERT_WAIT).await;
    let status = tc.status.unwrap();
    assert_eq!(status.credential_status.as_deref(), Some("UNAUTHENTICATED"));
    assert_eq!(
        status.credential_id.as_deref(),
        Some(credential_id.as_str())
    );
    let delivery = f
        .standin
        .deliveries()
        .into_iter()
        .find(|d| d.event == CREDENTIALS_UNAUTHENTICATED)
        .expect("a delivery");
    assert_eq!(delivery.status, Some(200), "{delivery:?}");
    assert!(delivery.signed_correctly && delivery.body.contains(&credential_id));
    // The alert was a hint: the reconcile read Leaf's state once (GET credential, GET events).
    let text = wait_metric(&f, TRIGGERED, 1.0).await;
    assert_eq!(sample(&text, TRIGGERED), 1.0, "{text}");
    assert_eq!(
        f.count_calls("user-alert", "GET"),
        1,
        "{:?}",
        f.leaf_calls("user-alert")
    );
    assert_eq!(f.count_calls("user-alert", "POST"), 0);
}

#[tokio::test]
async fn forged_oversized_and_malformed_alerts_change_nothing() {
    // Secret-only mode: the receiver verifies with the given secret; nobody registers.
    let port = free_port();
    let f = Fixture::start_with("alert-bad", StandInConfig::default(), |o| {
        with_alerts(o, port, false)
    })
    .await;
    f.create_farm_with_default_credentials("user-bad").await;
    let before = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let credential_id = before.status.clone().unwrap().credential_id.unwrap();
    let body = credentials_alert(
        CREDENTIALS_UNAUTHENTICATED,
        &credential_id,
        "UNAUTHENTICATED",
        "2026-01-02T03:04:05.123456Z",
    );
    // Without its signing secret the receiver cannot tell good from bad: it asks Leaf to retry.
    assert_eq!(post_signed(port, SIGNING_SECRET, &body).await, 503);
    put_signing_secret(&f, SIGNING_SECRET).await;
    wait_receiver_ready(port).await;
    f.standin.clear_requests();

    // Forged: another key, no header, not base64, a signature of other bytes.
    assert_eq!(post_signed(port, "a-guessed-secret", &body).await, 401);
    assert_eq!(post(port, &body, None).await, 401);
    assert_eq!(post(port, &body, Some("%%%not-base64%%%")).await, 401);
    let tampered = body.replace("UNAUTHENTICATED", "MISSING_PERMISSION");
    assert_eq!(
        post(port, &tampered, Some(&sign(SIGNING_SECRET, &body))).await,
        401
    );
    // Oversized, even correctly signed: refused by the declared length, and by counting when
    // the body is chunked (no length declared).
    let huge = format!(
        r#"{{"type": "credentialsUnauthenticated", "credentialId": "{credential_id}", "pad": "{}"}}"#,
        "x".repeat(100 * 1024)
    );
    assert_eq!(post_signed(port, SIGNING_SECRET, &huge).await, 413);
    assert_eq!(
        post_chunked(port, &sign(SIGNING_SECRET, &huge), 200 * 1024).await,
        413
    );
    // Signed but unreadable.
    assert_eq!(post_signed(port, SIGNING_SECRET, "{not json").await, 400);
    assert_eq!(
        post_signed(port, SIGNING_SECRET, r#"{"credentialId": "x"}"#).await,
        400
    );
    // Signed and readable but not ours: answered 200 (so Leaf stops retrying), no effect.
    let unknown = credentials_alert(
        CREDENTIALS_UNAUTHENTICATED,
        "no-such-credential",
        "UNAUTHENTICATED",
        "2026-01-02T03:04:05Z",
    );
    assert_eq!(post_signed(port, SIGNING_SECRET, &unknown).await, 200);
    let deere = body.replace("\"Trimble\"", "\"JohnDeere\"");
    assert_eq!(post_signed(port, SIGNING_SECRET, &deere).await, 200);
    let field = r#"{"source": "REST", "leafUserId": "u", "fieldId": "f", "timestamp": "2024-06-15T14:30:00.000000Z", "type": "fieldCreated"}"#;
    assert_eq!(post_signed(port, SIGNING_SECRET, field).await, 200);
    // The confirmation, signed or not, changes nothing.
    let confirmation = r#"{"message": "confirmation of webhook upon registration"}"#;
    assert_eq!(post(port, confirmation, None).await, 200);
    assert_eq!(post_signed(port, SIGNING_SECRET, confirmation).await, 200);

    // Nothing reached Leaf and nothing changed on the resource.
    assert_eq!(f.standin.requests(), vec![], "no Leaf call for bad input");
    let after = f.get("farm").await;
    assert_eq!(after.resource_version(), before.resource_version());
    let text = metrics(&f).await;
    for (series, expected) in [
        (
            r#"leaf_operator_alerts_rejected_total{reason="bad_signature"}"#,
            2.0,
        ),
        (
            r#"leaf_operator_alerts_rejected_total{reason="missing_signature"}"#,
            1.0,
        ),
        (
            r#"leaf_operator_alerts_rejected_total{reason="malformed_signature"}"#,
            1.0,
        ),
        (
            r#"leaf_operator_alerts_rejected_total{reason="too_large"}"#,
            2.0,
        ),
        (
            r#"leaf_operator_alerts_rejected_total{reason="malformed"}"#,
            2.0,
        ),
        (
            r#"leaf_operator_alerts_handled_total{source="receiver",outcome="unmanaged"}"#,
            1.0,
        ),
        (
            r#"leaf_operator_alerts_handled_total{source="receiver",outcome="other_provider"}"#,
            1.0,
        ),
        (
            r#"leaf_operator_alerts_handled_total{source="receiver",outcome="ignored_type"}"#,
            1.0,
        ),
        (
            r#"leaf_operator_alerts_handled_total{source="receiver",outcome="confirmation"}"#,
            1.0,
        ),
        (TRIGGERED, 0.0),
    ] {
        assert_eq!(sample(&text, series), expected, "{series}\n{text}");
    }
    // Secret-only mode never calls Leaf's Alerts API.
    let log = f.operator.log();
    assert!(
        !log.contains(&body) && !log.contains("a-guessed-secret"),
        "bodies are never logged"
    );

    // A sentinel: one valid alert acts (one look at Leaf) and Leaf's truth is unchanged, so the
    // resource is too. Had any bad input triggered anything, there would be more.
    assert_eq!(post_signed(port, SIGNING_SECRET, &body).await, 200);
    wait_until("the valid alert's Leaf look", WAIT, || async {
        let calls = f.leaf_calls("user-bad");
        if calls.iter().any(|c| c.starts_with("GET events")) {
            Ok(())
        } else {
            Err(format!("{calls:?}"))
        }
    })
    .await;
    assert_eq!(f.leaf_calls("user-bad"), vec!["GET 200", "GET events 200"]);
    assert_eq!(sample(&metrics(&f).await, TRIGGERED), 1.0);
    assert!(
        f.standin
            .requests()
            .iter()
            .all(|r| !r.path.contains("/services/alerts")),
        "secret-only mode makes no Alerts API call"
    );
}

#[tokio::test]
async fn a_valid_alert_delivered_twice_acts_once() {
    let (f, _port, _) = registered_farm("alert-dup", "user-dup", None).await;
    f.standin.set_alert_tamper(AlertTamper {
        duplicate_next: 1,
        ..AlertTamper::default()
    });
    f.standin.clear_requests();

    assert!(f.standin.set_status("user-dup", "UNAUTHENTICATED"));
    let text = wait_metric(&f, DUPLICATE, 1.0).await;
    f.wait_reason("farm", "CredentialInvalid", ALERT_WAIT).await;
    let deliveries: Vec<_> = f
        .standin
        .deliveries()
        .into_iter()
        .filter(|d| d.event == CREDENTIALS_UNAUTHENTICATED)
        .collect();
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    assert_eq!(
        deliveries[0].body, deliveries[1].body,
        "the same bytes twice"
    );
    assert!(
        deliveries.iter().all(|d| d.status == Some(200)),
        "both acknowledged: {deliveries:?}"
    );
    assert_eq!(sample(&text, TRIGGERED), 1.0, "{text}");
    assert_eq!(
        f.count_calls("user-dup", "GET"),
        1,
        "{:?}",
        f.leaf_calls("user-dup")
    );
    assert_eq!(f.count_calls("user-dup", "GET events"), 1);
}

#[tokio::test]
async fn alerts_out_of_order_end_in_the_state_leaf_reports_now() {
    let (f, _port, _) = registered_farm("alert-order", "user-order", None).await;
    // The two deliveries are held and sent newest first.
    f.standin.set_alert_tamper(AlertTamper {
        reverse_next: 2,
        ..AlertTamper::default()
    });
    assert!(f.standin.set_status("user-order", "MISSING_PERMISSION"));
    assert!(f.standin.set_status("user-order", "UNAUTHENTICATED"));
    let text = wait_metric(&f, TRIGGERED, 2.0).await;
    assert_eq!(sample(&text, DUPLICATE), 0.0, "two different alerts");
    let events: Vec<String> = f
        .standin
        .deliveries()
        .into_iter()
        .filter(|d| d.event != "confirmation")
        .map(|d| d.event)
        .collect();
    assert_eq!(
        events,
        vec![CREDENTIALS_UNAUTHENTICATED, CREDENTIALS_LIMITED_PERMISSION],
        "out of order"
    );
    // The older alert arrived last, but the resource shows what Leaf says now, and never showed
    // what the stale alert said: each alert only made the operator look (two alerts close
    // together may share one look).
    let tc = f.wait_reason("farm", "CredentialInvalid", ALERT_WAIT).await;
    assert_eq!(
        tc.status.unwrap().credential_status.as_deref(),
        Some("UNAUTHENTICATED")
    );
    assert!(f.count_calls("user-order", "GET") >= 1);
    f.wait_event("farm", "CredentialInvalid", WAIT).await;
    let reasons = f.event_reasons("farm").await;
    assert!(
        !reasons.iter().any(|r| r == "MissingPermission"),
        "{reasons:?}"
    );
    let tc = f.get("farm").await;
    assert_eq!(support::operator::conditions(&tc)[0].2, "CredentialInvalid");
}

#[tokio::test]
async fn missed_deliveries_are_replayed_from_leafs_failed_calls_once() {
    let (f, _port, credential_id) = registered_farm("alert-replay", "user-replay", None).await;
    // The delivery never reaches the receiver; Leaf's first retry (1 minute, scaled x100) would
    // come long after this test. Only the replay of failed calls can bring it.
    f.standin.set_alert_time_scale(100.0);
    f.standin.set_alert_tamper(AlertTamper {
        fail_next: 1,
        ..AlertTamper::default()
    });
    f.standin.clear_requests();
    assert!(f.standin.set_status("user-replay", "UNAUTHENTICATED"));
    f.wait_reason("farm", "CredentialInvalid", ALERT_WAIT).await;
    let failed = f.standin.failed_calls();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].request_body.contains(&credential_id));
    assert_eq!(
        failed[0].connection_error.as_deref(),
        Some("Connection refused")
    );
    assert!(
        f.standin
            .deliveries()
            .iter()
            .all(|d| d.event == "confirmation" || d.status.is_none()),
        "nothing was delivered"
    );
    // Replays repeat every check (1 s here); the alert acts once.
    let replayed =
        r#"leaf_operator_alerts_handled_total{source="failed_calls",outcome="triggered"}"#;
    let again = r#"leaf_operator_alerts_handled_total{source="failed_calls",outcome="duplicate"}"#;
    let text = wait_metric(&f, again, 1.0).await;
    assert_eq!(sample(&text, replayed), 1.0, "{text}");
    assert_eq!(
        f.count_calls("user-replay", "GET"),
        1,
        "{:?}",
        f.leaf_calls("user-replay")
    );
}

#[tokio::test]
async fn another_consumers_webhook_is_never_deleted_and_polling_continues() {
    let port = free_port();
    let f = Fixture::start_with("alert-foreign", StandInConfig::default(), |o| {
        with_alerts(o.refresh_interval("2s"), port, true)
    })
    .await;
    // Another application of the same Leaf account owns one of our events (its URL is a closed
    // loopback port: deliveries to it fail, as they would for us).
    let theirs = f.standin.seed_webhook(
        "their-app",
        "http://127.0.0.1:9/hooks",
        &[CREDENTIALS_UNAUTHENTICATED],
        "their-secret",
    );
    put_signing_secret(&f, SIGNING_SECRET).await;
    let text = wait_metric(
        &f,
        r#"leaf_operator_alerts_webhook_state{state="foreign"}"#,
        1.0,
    )
    .await;
    assert!(
        sample(&text, "leaf_operator_alerts_event_registered_twice_total") >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"leaf_operator_alerts_webhook_state{state="registered"}"#
        ),
        0.0
    );
    f.operator.wait_for_log("eventRegisteredTwice", WAIT).await;

    // Polling still notices what the alert would have said.
    f.create_farm_with_default_credentials("user-foreign").await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert!(f.standin.set_status("user-foreign", "UNAUTHENTICATED"));
    f.wait_reason("farm", "CredentialInvalid", WAIT).await;

    let webhooks = f.standin.webhooks();
    assert_eq!(webhooks, vec![theirs], "theirs untouched, none of ours");
    let alerts_calls: Vec<String> = f
        .standin
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/services/alerts"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        alerts_calls.iter().any(|c| c.starts_with("GET")),
        "{alerts_calls:?}"
    );
    assert!(
        alerts_calls.iter().all(|c| c.starts_with("GET")),
        "never a DELETE (nor a POST that Leaf would refuse): {alerts_calls:?}"
    );
}

/// The token-looking words a planted secret may appear as.
fn leaks(sources: &[(&str, String)], planted: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for secret in planted {
        let encoded = STANDARD.encode(secret);
        for (name, text) in sources {
            if text.contains(secret) {
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(secret))
                    .take(3)
                    .collect();
                found.push(format!("{secret:?} in {name}: {lines:#?}"));
            }
            if text.contains(&encoded) {
                found.push(format!("base64 of {secret:?} in {name}"));
            }
        }
    }
    found
}

#[tokio::test]
async fn the_registration_is_reused_after_a_restart_replaced_on_a_new_secret_and_no_secret_leaks() {
    const NEW_SECRET: &str = "PLANTED-rotated-signing-secret-77c2";
    let (mut f, port, _) = registered_farm("alert-reg", "user-reg", Some("trace")).await;
    let first = wait_registered(&f, port).await;
    let posts = |f: &Fixture| {
        f.standin
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/alerts/webhooks"))
            .count()
    };
    assert_eq!(posts(&f), 1);

    // A restart finds and reuses it: no second POST, no DELETE.
    f.operator.restart().await;
    wait_metric(
        &f,
        r#"leaf_operator_alerts_webhook_state{state="registered"}"#,
        1.0,
    )
    .await;
    assert_eq!(posts(&f), 1, "reused after the restart");
    assert_eq!(f.standin.webhooks().len(), 1);
    assert_eq!(f.standin.webhooks()[0].id, first.id);

    // A new signing secret: the old webhook is deleted first (Leaf allows one owner per event),
    // then the new one is created.
    put_signing_secret(&f, NEW_SECRET).await;
    let second = wait_until("the webhook to carry the new secret", WAIT, || async {
        let webhooks = f.standin.webhooks();
        match webhooks.as_slice() {
            [only] if only.secret == NEW_SECRET => Ok(only.clone()),
            other => Err(format!(
                "{:?}",
                other.iter().map(|w| &w.id).collect::<Vec<_>>()
            )),
        }
    })
    .await;
    assert_ne!(second.id, first.id);
    let calls: Vec<String> = f
        .standin
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/alerts/webhooks") && r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.status.unwrap_or(0)))
        .collect();
    assert_eq!(calls, vec!["POST 201", "DELETE 204", "POST 201"]);

    // Deliveries under the new secret work; the old one is still accepted for a grace period,
    // a guessed one never.
    assert!(f.standin.set_status("user-reg", "MISSING_PERMISSION"));
    f.wait_reason("farm", "MissingPermission", ALERT_WAIT).await;
    let unknown = credentials_alert(
        CREDENTIALS_UNAUTHENTICATED,
        "not-ours",
        "UNAUTHENTICATED",
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(post_signed(port, SIGNING_SECRET, &unknown).await, 200);
    assert_eq!(post_signed(port, "PLANTED-guess", &unknown).await, 401);

    // Nothing a person or a collector sees holds a secret: the signing secrets (which Leaf
    // echoes in every webhook GET), the Leaf password, the Trimble values.
    let control_plane = support::control_plane().await;
    let kubectl =
        |args: &[&str]| String::from_utf8_lossy(&control_plane.kubectl(args).stdout).into_owned();
    let sources = [
        (
            "TrimbleConnections",
            kubectl(&[
                "get",
                "trimbleconnections",
                "-n",
                &f.namespace,
                "-o",
                "yaml",
            ]),
        ),
        (
            "Events",
            kubectl(&["get", "events", "-n", &f.namespace, "-o", "yaml"]),
        ),
        ("metrics", metrics(&f).await),
        ("operator log", f.operator.log()),
        (
            "ConfigMaps (the webhook record)",
            kubectl(&["get", "configmaps", "-n", &f.namespace, "-o", "yaml"]),
        ),
    ];
    assert!(
        sources[3].1.contains("registered the Leaf webhook"),
        "the log was read"
    );
    assert!(sources[3].1.len() > 10_000, "the trace log is complete");
    assert!(
        sources[4].1.contains(&second.id),
        "the record was read: {}",
        sources[4].1
    );
    let found = leaks(
        &sources,
        &[SIGNING_SECRET, NEW_SECRET, LEAF_PASSWORD, "PLANTED-guess"],
    );
    assert!(found.is_empty(), "secrets leaked: {found:#?}");
}

#[tokio::test]
async fn with_a_webhook_registered_elsewhere_only_correctly_signed_deliveries_act() {
    // Secret-only mode: someone else registered the webhook with our URL and secret.
    let port = free_port();
    let f = Fixture::start_with("alert-elsewhere", StandInConfig::default(), |o| {
        with_alerts(o, port, false)
    })
    .await;
    put_signing_secret(&f, SIGNING_SECRET).await;
    f.standin.seed_webhook(
        "registered-by-hand",
        &receiver_url(port),
        &[CREDENTIALS_UNAUTHENTICATED, CREDENTIALS_LIMITED_PERMISSION],
        SIGNING_SECRET,
    );
    f.create_farm_with_default_credentials("user-elsewhere")
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    wait_receiver_ready(port).await;
    f.standin.clear_requests();

    // A delivery with a bad signature is refused and changes nothing.
    f.standin.set_alert_tamper(AlertTamper {
        bad_signature_next: 1,
        ..AlertTamper::default()
    });
    assert!(f.standin.set_status("user-elsewhere", "MISSING_PERMISSION"));
    let bad = r#"leaf_operator_alerts_rejected_total{reason="bad_signature"}"#;
    let text = wait_metric(&f, bad, 1.0).await;
    assert_eq!(sample(&text, TRIGGERED), 0.0);
    assert_eq!(f.leaf_calls("user-elsewhere"), Vec::<String>::new());
    let refused = f.standin.deliveries();
    assert_eq!(
        refused.last().map(|d| d.status),
        Some(Some(401)),
        "{refused:?}"
    );

    // The next, correctly signed, acts at once.
    assert!(f.standin.set_status("user-elsewhere", "UNAUTHENTICATED"));
    f.wait_reason("farm", "CredentialInvalid", ALERT_WAIT).await;
    assert_eq!(sample(&metrics(&f).await, TRIGGERED), 1.0);
}

/// The receiver's read timeouts (10 s each, `alerts::connections`), and the margin a loaded
/// machine may add before the cut is seen.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const CUT_MARGIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_client_that_stalls_its_headers_or_its_body_is_cut_off_within_the_timeout() {
    use tokio::io::AsyncWriteExt;
    let port = free_port();
    let f = Fixture::start_with("alert-slow", StandInConfig::default(), |o| {
        with_alerts(o, port, false)
    })
    .await;
    put_signing_secret(&f, SIGNING_SECRET).await;
    wait_receiver_ready(port).await;

    // Slowloris: part of a request head, then nothing. And a complete head whose body stops
    // after a few bytes. Both at once, so that the test waits one timeout, not two.
    let stalled_head = async {
        let mut stream = connect(port).await;
        let started = std::time::Instant::now();
        stream
            .write_all(b"POST /alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
            .await
            .expect("write part of a head");
        read_until_closed(&mut stream, started, READ_TIMEOUT + CUT_MARGIN).await
    };
    let stalled_body = async {
        let mut stream = connect(port).await;
        let started = std::time::Instant::now();
        let head = format!(
            "POST /alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Leaf-Signature: {}\r\nContent-Length: 200\r\n\r\n{{\"type\": ",
            sign(SIGNING_SECRET, "{}")
        );
        stream
            .write_all(head.as_bytes())
            .await
            .expect("write a head and part of a body");
        read_until_closed(&mut stream, started, READ_TIMEOUT + CUT_MARGIN).await
    };
    let ((head_answer, head_after), (body_answer, body_after)) =
        futures::join!(stalled_head, stalled_body);
    assert!(
        !head_answer.contains(" 200 ") && !head_answer.contains(" 400 "),
        "cut off, not answered: {head_answer:?}"
    );
    assert!(
        head_after >= READ_TIMEOUT - Duration::from_secs(1),
        "cut at the timeout, not for another reason: after {head_after:?}"
    );
    assert!(
        body_answer.starts_with("HTTP/1.1 408"),
        "a stalled body gets 408: {body_answer:?} after {body_after:?}"
    );
    let text = metrics(&f).await;
    for (series, expected) in [
        (
            r#"leaf_operator_alerts_rejected_total{reason="header_timeout"}"#,
            1.0,
        ),
        (
            r#"leaf_operator_alerts_rejected_total{reason="body_timeout"}"#,
            1.0,
        ),
        ("leaf_operator_alerts_verified_total", 0.0),
    ] {
        assert_eq!(sample(&text, series), expected, "{series}\n{text}");
    }
    // Neither held a slot afterwards, and the receiver still answers.
    assert_eq!(
        post_signed(port, SIGNING_SECRET, "{\"type\": \"fieldCreated\"}").await,
        200
    );
    wait_until("the slow connections to be gone", WAIT, || async {
        let open = sample(&metrics(&f).await, "leaf_operator_alerts_connections");
        if open == 0.0 {
            Ok(())
        } else {
            Err(format!("{open} open"))
        }
    })
    .await;
}

#[tokio::test]
async fn beyond_the_connection_limit_a_delivery_waits_for_a_free_slot_and_is_served() {
    // The production limit: 256 idle connections are cheap for the test and the operator.
    const LIMIT: usize = leaf_operator::alerts::connections::DEFAULT_MAX_CONNECTIONS;
    const OPEN: &str = "leaf_operator_alerts_connections";
    const WAITED: &str = "leaf_operator_alerts_connections_waited_total";
    let port = free_port();
    let f = Fixture::start_with("alert-limit", StandInConfig::default(), |o| {
        with_alerts(o, port, false)
    })
    .await;
    put_signing_secret(&f, SIGNING_SECRET).await;
    wait_receiver_ready(port).await;

    // The readiness checks' connections are gone (each closes after its answer), so that the
    // slots are free for what follows.
    wait_until("no connection open", WAIT, || async {
        let open = sample(&metrics(&f).await, OPEN);
        if open == 0.0 {
            Ok(())
        } else {
            Err(format!("{open} open"))
        }
    })
    .await;
    // Connections that send nothing hold every slot (each until the header timeout, 10 s).
    let mut idle = Vec::new();
    for _ in 0..LIMIT {
        idle.push(connect(port).await);
    }
    wait_metric(&f, OPEN, LIMIT as f64).await;
    // A well-behaved delivery: it waits, counted, and is not refused.
    let body = credentials_alert(
        CREDENTIALS_UNAUTHENTICATED,
        "not-ours",
        "UNAUTHENTICATED",
        &leaf_timestamp(0),
    );
    let delivery = tokio::spawn(async move { post_signed(port, SIGNING_SECRET, &body).await });
    let text = wait_metric(&f, WAITED, 1.0).await;
    assert_eq!(
        sample(&text, OPEN),
        LIMIT as f64,
        "never more than the limit open"
    );
    assert!(
        !delivery.is_finished(),
        "not served while every slot is held"
    );
    // The idle ones go: the delivery is served.
    drop(idle);
    let status = tokio::time::timeout(READ_TIMEOUT, delivery)
        .await
        .expect("served once a slot was free")
        .expect("the delivery task");
    assert_eq!(status, 200);
    let text = metrics(&f).await;
    assert_eq!(sample(&text, WAITED), 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            r#"leaf_operator_alerts_handled_total{source="receiver",outcome="unmanaged"}"#
        ),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_replayed_delivery_is_answered_and_acts_once_but_does_not_keep_polling_at_the_backstop() {
    const MODE_NORMAL: &str = r#"leaf_operator_alerts_polling_mode{mode="normal"}"#;
    const BACKSTOP: &str =
        r#"leaf_operator_alerts_polling_switches_total{mode="backstop",reason="healthy"}"#;
    const QUIET: &str =
        r#"leaf_operator_alerts_polling_switches_total{mode="normal",reason="quiet"}"#;
    const STALE: &str = r#"leaf_operator_alerts_freshness_total{freshness="stale"}"#;
    // Secret-only mode: only deliveries can say that Leaf is alive.
    let port = free_port();
    let f = Fixture::start_with("alert-replay-old", StandInConfig::default(), |o| {
        with_alerts(o, port, false)
            .env("LEAF_ALERTS_BACKSTOP_INTERVAL", "2s")
            .env("LEAF_ALERTS_QUIET_LIMIT", "8s")
    })
    .await;
    put_signing_secret(&f, SIGNING_SECRET).await;
    f.create_farm_with_default_credentials("user-replay-old")
        .await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let credential_id = tc.status.unwrap().credential_id.expect("a credential id");
    wait_receiver_ready(port).await;

    // A fresh delivery (sent now): Leaf is alive, polling goes to the backstop.
    let fresh = credentials_alert(
        CREDENTIALS_UNAUTHENTICATED,
        "not-ours",
        "UNAUTHENTICATED",
        &leaf_timestamp(0),
    );
    assert_eq!(post_signed(port, SIGNING_SECRET, &fresh).await, 200);
    wait_metric(&f, BACKSTOP, 1.0).await;

    // A delivery captured an hour ago, replayed: answered 200 and acted on once (a hint: one
    // look at Leaf), its repeats are duplicates, and none of them counts as hearing from Leaf,
    // so the silence since the fresh one ends the backstop after the quiet limit (8 s).
    let captured = credentials_alert(
        CREDENTIALS_UNAUTHENTICATED,
        &credential_id,
        "UNAUTHENTICATED",
        &leaf_timestamp(-3600),
    );
    let text = wait_until("the replays not to keep the backstop", WAIT, || async {
        let status = post_signed(port, SIGNING_SECRET, &captured).await;
        if status != 200 {
            return Err(format!("a replay got HTTP {status}"));
        }
        let text = metrics(&f).await;
        if sample(&text, QUIET) >= 1.0 {
            Ok(text)
        } else {
            Err(format!(
                "{QUIET} = {}, {STALE} = {}",
                sample(&text, QUIET),
                sample(&text, STALE)
            ))
        }
    })
    .await;
    assert_eq!(sample(&text, MODE_NORMAL), 1.0, "{text}");
    let replays = sample(&text, STALE);
    assert!(replays >= 2.0, "{text}");
    assert_eq!(sample(&text, TRIGGERED), 1.0, "acted on once: {text}");
    assert_eq!(sample(&text, DUPLICATE), replays - 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            r#"leaf_operator_alerts_freshness_total{freshness="fresh"}"#
        ),
        1.0,
        "{text}"
    );

    // Dated an hour ahead: answered, counted, and no way back to the backstop either.
    let ahead = credentials_alert(
        CREDENTIALS_UNAUTHENTICATED,
        "not-ours",
        "UNAUTHENTICATED",
        &leaf_timestamp(3600),
    );
    assert_eq!(post_signed(port, SIGNING_SECRET, &ahead).await, 200);
    let text = metrics(&f).await;
    assert_eq!(
        sample(
            &text,
            r#"leaf_operator_alerts_freshness_total{freshness="future_dated"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(sample(&text, BACKSTOP), 1.0, "{text}");
    assert!(!f.operator.log().contains(SIGNING_SECRET));
}

/// The Alerts API calls that change something, as `METHOD STATUS` (and the id for a DELETE).
fn alerts_writes(f: &Fixture) -> Vec<String> {
    f.standin
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/alerts/webhooks") && r.method != "GET")
        .map(|r| {
            let status = r.status.map_or("dropped".to_string(), |s| s.to_string());
            match r.method.as_str() {
                "DELETE" => format!(
                    "DELETE {status} {}",
                    r.path.rsplit('/').next().unwrap_or_default()
                ),
                method => format!("{method} {status}"),
            }
        })
        .collect()
}

#[tokio::test]
async fn a_webhook_with_our_name_and_another_url_is_never_deleted_and_is_reported_on_the_pod() {
    let port = free_port();
    let f = Fixture::start_with("alert-samename", StandInConfig::default(), |o| {
        let namespace = o.namespaces[0].clone();
        with_alerts(o.refresh_interval("2s"), port, true)
            .env("POD_NAMESPACE", &namespace)
            .env("POD_UID", POD_UID)
    })
    .await;
    // Another cluster of the same Leaf account, installed with the chart's defaults: the same
    // webhook name, its own URL and secret. It holds both events.
    let theirs = f.standin.seed_webhook(
        WEBHOOK_NAME,
        OTHER_CLUSTER_URL,
        &[CREDENTIALS_UNAUTHENTICATED, CREDENTIALS_LIMITED_PERMISSION],
        OTHER_CLUSTER_SECRET,
    );
    put_signing_secret(&f, SIGNING_SECRET).await;

    // Several registration checks (one a second here) found it, and touched nothing.
    let text = wait_metric(&f, TWICE, 3.0).await;
    for (series, expected) in [
        (FOREIGN, 1.0),
        (REGISTERED, 0.0),
        (r#"leaf_operator_alerts_foreign_webhook{name="same"}"#, 1.0),
        (r#"leaf_operator_alerts_foreign_webhook{name="other"}"#, 0.0),
        (r#"leaf_operator_alerts_polling_mode{mode="normal"}"#, 1.0),
    ] {
        assert_eq!(sample(&text, series), expected, "{series}\n{text}");
    }
    assert_eq!(
        f.standin.webhooks(),
        vec![theirs.clone()],
        "theirs untouched"
    );
    assert_eq!(
        alerts_writes(&f),
        Vec::<String>::new(),
        "never a DELETE, nor a POST Leaf would refuse"
    );

    // A Warning Event on the operator's own Pod names their webhook and the likely cause.
    let (kind, note) = wait_pod_event(&f, POD, "PollingFallback", &theirs.id).await;
    assert_eq!(kind, "Warning");
    assert!(
        note.contains("another cluster") && note.contains(WEBHOOK_NAME),
        "{note}"
    );
    // The record says that no webhook is ours.
    let record = webhook_record(&f).await;
    assert!(
        record
            .as_ref()
            .is_none_or(|data| !data.contains_key("webhookId")),
        "{record:?}"
    );

    // Polling falls back: a change is noticed without an alert.
    f.create_farm_with_default_credentials("user-samename")
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert!(f.standin.set_status("user-samename", "UNAUTHENTICATED"));
    f.wait_reason("farm", "CredentialInvalid", WAIT).await;
    assert_eq!(f.standin.webhooks(), vec![theirs], "still untouched");
    assert_eq!(alerts_writes(&f), Vec::<String>::new());

    // Neither cluster's secret is in the Events, the ConfigMaps, the log or the metrics.
    let control_plane = support::control_plane().await;
    let kubectl =
        |args: &[&str]| String::from_utf8_lossy(&control_plane.kubectl(args).stdout).into_owned();
    let sources = [
        (
            "Events",
            kubectl(&["get", "events", "-n", &f.namespace, "-o", "yaml"]),
        ),
        (
            "ConfigMaps",
            kubectl(&["get", "configmaps", "-n", &f.namespace, "-o", "yaml"]),
        ),
        ("metrics", metrics(&f).await),
        ("operator log", f.operator.log()),
    ];
    assert!(
        sources[0].1.contains("RegisterWebhook"),
        "the Events were read"
    );
    let found = leaks(&sources, &[SIGNING_SECRET, OTHER_CLUSTER_SECRET]);
    assert!(found.is_empty(), "secrets leaked: {found:#?}");
}

#[tokio::test]
async fn our_own_url_change_replaces_our_webhook_by_id_and_the_record_holds_the_new_id() {
    let port = free_port();
    let mut f = Fixture::start_with("alert-newurl", StandInConfig::default(), |o| {
        with_alerts(o, port, true)
    })
    .await;
    // A webhook of the account with our name for other events (another cluster's field
    // alerts): not in our way, so never touched.
    let bystander = f.standin.seed_webhook(
        WEBHOOK_NAME,
        OTHER_CLUSTER_URL,
        &["fieldCreated"],
        OTHER_CLUSTER_SECRET,
    );
    put_signing_secret(&f, SIGNING_SECRET).await;
    let first = wait_registered(&f, port).await;
    let record = wait_record_id(&f, &first.id).await;
    assert_eq!(
        record.get("webhookUrl").map(String::as_str),
        Some(receiver_url(port).as_str()),
        "{record:?}"
    );

    // The URL changes (a new Ingress host; here the same receiver spelled another way).
    let new_url = format!("http://localhost:{port}/alerts");
    let url = new_url.clone();
    f.operator
        .restart_with(|o| o.env("LEAF_ALERTS_WEBHOOK_URL", &url))
        .await;
    let second = wait_until("our webhook under the new URL", WAIT, || async {
        let webhooks = f.standin.webhooks();
        webhooks
            .iter()
            .find(|w| w.url == new_url)
            .cloned()
            .ok_or_else(|| format!("{webhooks:?}"))
    })
    .await;
    assert_ne!(second.id, first.id);
    wait_record_id(&f, &second.id).await;
    wait_metric(&f, REGISTERED, 1.0).await;

    // Ours was deleted by its id, then created again; the bystander with our name never.
    assert_eq!(
        alerts_writes(&f),
        vec![
            "POST 201".to_string(),
            format!("DELETE 204 {}", first.id),
            "POST 201".to_string(),
        ]
    );
    let mut ids: Vec<String> = f.standin.webhooks().into_iter().map(|w| w.id).collect();
    ids.sort();
    let mut expected = vec![bystander.id, second.id];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_adopted_on_the_next_check_not_duplicated() {
    const NEW_SECRET: &str = "PLANTED-rotated-signing-secret-5a0e";
    let port = free_port();
    let mut f = Fixture::start_with("alert-lost", StandInConfig::default(), |o| {
        with_alerts(o, port, true)
    })
    .await;
    // Leaf applies the create but answers 503 (a gateway timing out after the write).
    f.standin.lose_webhook_create_answers(1, false);
    put_signing_secret(&f, SIGNING_SECRET).await;
    let webhook = wait_registered(&f, port).await;
    wait_record_id(&f, &webhook.id).await;
    wait_metric(&f, REGISTERED, 1.0).await;
    f.operator
        .wait_for_log("adopted our Leaf webhook", WAIT)
        .await;
    assert_eq!(
        alerts_writes(&f),
        vec!["POST 503"],
        "one POST, adopted after"
    );
    assert_eq!(f.standin.webhooks(), vec![webhook.clone()]);
    let text = metrics(&f).await;
    assert_eq!(sample(&text, TWICE), 0.0, "never taken for foreign: {text}");

    // A restart finds it by the recorded id.
    f.operator.restart().await;
    wait_metric(&f, REGISTERED, 1.0).await;
    assert_eq!(alerts_writes(&f), vec!["POST 503"]);

    // A new secret replaces it; this time Leaf answers 201 with neither Location nor body: the
    // operator looks again at once and records the new webhook's id.
    f.standin.lose_webhook_create_answers(1, true);
    put_signing_secret(&f, NEW_SECRET).await;
    let second = wait_until("the webhook to carry the new secret", WAIT, || async {
        let webhooks = f.standin.webhooks();
        match webhooks.as_slice() {
            [only] if only.secret == NEW_SECRET => Ok(only.clone()),
            other => Err(format!(
                "{:?}",
                other.iter().map(|w| &w.id).collect::<Vec<_>>()
            )),
        }
    })
    .await;
    wait_record_id(&f, &second.id).await;
    assert_eq!(
        alerts_writes(&f),
        vec![
            "POST 503".to_string(),
            format!("DELETE 204 {}", webhook.id),
            "POST 201".to_string(),
        ]
    );
    assert_eq!(f.standin.webhooks().len(), 1, "not duplicated");
    assert_eq!(sample(&metrics(&f).await, TWICE), 0.0);
}
