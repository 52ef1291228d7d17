//! Polling as the backstop, end to end: the real operator with the alerts receiver against the
//! real API server and the Leaf stand-in, with a short `--alerts-backstop-interval` (never the
//! test-only interval override, which would replace every pace).
//!
//! - While alerts are healthy, a resource without `refreshInterval` is checked at the backstop
//!   pace, one Leaf call per check (no events read) unless the status changed.
//! - A resource with an explicitly shorter `refreshInterval` keeps its pace.
//! - When alerts stop being healthy (quiet too long, webhook missing, events owned by another
//!   consumer) polling falls back to the normal interval, and says so in a metric and a Warning
//!   Event on the operator's Pod; when they recover, checks come at the backstop pace again at
//!   once, although the last check scheduled the next one 10 minutes out.

mod support;

use std::time::Duration;

use leaf_standin::{CREDENTIALS_LIMITED_PERMISSION, CREDENTIALS_UNAUTHENTICATED, StandInConfig};
use support::alerts::{
    SIGNING_SECRET, free_port, metrics, post_signed, put_signing_secret, receiver_url, sample,
    wait_metric, wait_receiver_ready, with_alerts,
};
use support::operator::{Fixture, OperatorOptions};
use support::wait_until;

const WAIT: Duration = Duration::from_secs(60);
/// The test operator's Pod name (`POD_NAME` of its first start, see `support::operator`).
const POD: &str = "test-operator-1";
const POD_UID: &str = "6d0c3e1a-0000-4000-8000-00000000b5e1";

const MODE_BACKSTOP: &str = r#"leaf_operator_alerts_polling_mode{mode="backstop"}"#;
const MODE_NORMAL: &str = r#"leaf_operator_alerts_polling_mode{mode="normal"}"#;

fn switches(mode: &str, reason: &str) -> String {
    format!(r#"leaf_operator_alerts_polling_switches_total{{mode="{mode}",reason="{reason}"}}"#)
}

/// Alerts on `port` with the backstop interval `backstop`, the quiet limit `quiet` (if given),
/// and the Pod's namespace and uid so that the switch Events have an object to be about.
fn backstop_options(
    options: OperatorOptions,
    port: u16,
    register: bool,
    backstop: &str,
    quiet: Option<&str>,
) -> OperatorOptions {
    let namespace = options.namespaces[0].clone();
    let mut options = with_alerts(options, port, register)
        .env("LEAF_ALERTS_BACKSTOP_INTERVAL", backstop)
        .env("POD_NAMESPACE", &namespace)
        .env("POD_UID", POD_UID);
    if let Some(quiet) = quiet {
        options = options.env("LEAF_ALERTS_QUIET_LIMIT", quiet);
    }
    assert!(
        options.refresh_interval.is_none(),
        "the test override would replace every pace"
    );
    options
}

/// Waits until `user` has had at least `n` GETs of its credential (since the last clear).
async fn wait_gets(f: &Fixture, user: &str, n: usize, timeout: Duration) {
    wait_until(&format!("{n} checks of {user}"), timeout, || async {
        let calls = f.leaf_calls(user);
        if f.count_calls(user, "GET") >= n {
            Ok(())
        } else {
            Err(format!("{calls:?}"))
        }
    })
    .await
}

/// Waits for an Event about the operator's Pod with `reason`; returns (type, note).
async fn wait_pod_event(f: &Fixture, reason: &str, containing: &str) -> (String, String) {
    wait_until(
        &format!("an Event {reason} about the operator's Pod saying {containing:?}"),
        WAIT,
        || async {
            let events = f.events(POD).await;
            events
                .iter()
                .find(|(_, r, note)| r == reason && note.contains(containing))
                .map(|(t, _, n)| (t.clone(), n.clone()))
                .ok_or_else(|| format!("{events:?}"))
        },
    )
    .await
}

/// The uid the operator's Pod Events carry in `regarding`.
async fn pod_event_uids(f: &Fixture) -> Vec<Option<String>> {
    use k8s_openapi::api::events::v1::Event;
    let api: kube::Api<Event> = kube::Api::namespaced(f.client.clone(), &f.namespace);
    api.list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter_map(|e| e.regarding)
        .filter(|r| r.name.as_deref() == Some(POD))
        .map(|r| {
            assert_eq!(r.kind.as_deref(), Some("Pod"));
            r.uid
        })
        .collect()
}

#[tokio::test]
async fn while_alerts_are_healthy_a_resource_is_checked_at_the_backstop_with_one_leaf_call() {
    let port = free_port();
    let f = Fixture::start_with("backstop-pace", StandInConfig::default(), |o| {
        backstop_options(o, port, true, "2s", None)
    })
    .await;
    put_signing_secret(&f, SIGNING_SECRET).await;
    wait_metric(&f, &switches("backstop", "healthy"), 1.0).await;
    f.create_farm_with_default_credentials("user-pace").await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert_eq!(
        tc.spec.refresh_interval, None,
        "no refreshInterval of its own"
    );
    f.standin.clear_requests();

    // Without alerts its checks would come every 10 minutes: three within seconds are the
    // backstop's, and each reads only the credential.
    wait_gets(&f, "user-pace", 3, Duration::from_secs(30)).await;
    let calls = f.leaf_calls("user-pace");
    assert!(calls.iter().all(|c| c == "GET 200"), "{calls:?}");
    let text = metrics(&f).await;
    assert_eq!(sample(&text, MODE_BACKSTOP), 1.0, "{text}");
    assert_eq!(sample(&text, MODE_NORMAL), 0.0);

    // A status change Leaf sends no alert for: the check that finds it also reads the events,
    // once; the checks after it read the credential only.
    f.standin.clear_requests();
    assert!(f.standin.set_status("user-pace", "TEMPORARILY_UNAVAILABLE"));
    f.wait_reason("farm", "ProviderUnavailable", Duration::from_secs(30))
        .await;
    let changed_at = f.count_calls("user-pace", "GET");
    wait_gets(&f, "user-pace", changed_at + 2, Duration::from_secs(30)).await;
    let calls = f.leaf_calls("user-pace");
    let events_at: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.starts_with("GET events"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(events_at.len(), 1, "events read once: {calls:?}");
    assert!(
        events_at[0] > 0 && calls[events_at[0] - 1] == "GET 200",
        "right after the GET that saw the change: {calls:?}"
    );
    assert!(
        calls
            .iter()
            .filter(|c| *c != "GET events 200")
            .all(|c| c == "GET 200"),
        "{calls:?}"
    );
    assert!(
        !f.standin
            .deliveries()
            .iter()
            .any(|d| d.event == CREDENTIALS_UNAUTHENTICATED
                || d.event == CREDENTIALS_LIMITED_PERMISSION),
        "no alert was sent for it"
    );

    // An alert is answered at once, and the time from its arrival to the status is recorded.
    let answered = r#"leaf_operator_alert_to_status_seconds_count{result="written"}"#;
    assert_eq!(sample(&metrics(&f).await, answered), 0.0);
    assert!(f.standin.set_status("user-pace", "UNAUTHENTICATED"));
    f.wait_reason("farm", "CredentialInvalid", Duration::from_secs(20))
        .await;
    let text = wait_metric(&f, answered, 1.0).await;
    assert_eq!(sample(&text, answered), 1.0, "{text}");
    let seconds = sample(
        &text,
        r#"leaf_operator_alert_to_status_seconds_sum{result="written"}"#,
    );
    assert!(seconds > 0.0 && seconds < 20.0, "{seconds} s\n{text}");
}

#[tokio::test]
async fn a_shorter_explicit_refresh_interval_keeps_its_pace_while_alerts_are_healthy() {
    // Backstop 1 hour; `explicit` asks for 1 minute (the schema's minimum), `default` for
    // nothing. Only `explicit` is checked within the next 75 seconds.
    let port = free_port();
    let f = Fixture::start_with("backstop-explicit", StandInConfig::default(), |o| {
        backstop_options(o, port, true, "1h", None)
    })
    .await;
    put_signing_secret(&f, SIGNING_SECRET).await;
    wait_metric(&f, &switches("backstop", "healthy"), 1.0).await;
    f.put_default_credentials().await;
    f.put_credentials("creds-2", "client-b", "secret-b", "refresh-b")
        .await;
    f.create_tc(
        "explicit",
        "user-explicit",
        "creds",
        serde_json::json!({"refreshInterval": "1m"}),
    )
    .await;
    f.create_tc("default", "user-default", "creds-2", serde_json::json!({}))
        .await;
    f.wait_reason("explicit", "CredentialValid", WAIT).await;
    f.wait_reason("default", "CredentialValid", WAIT).await;
    f.standin.clear_requests();

    wait_gets(&f, "user-explicit", 1, Duration::from_secs(75)).await;
    assert_eq!(
        f.leaf_calls("user-explicit"),
        vec!["GET 200"],
        "its own pace, one call (alerts are healthy)"
    );
    assert_eq!(
        f.leaf_calls("user-default"),
        Vec::<String>::new(),
        "the backstop (1 hour) applies"
    );
    let text = metrics(&f).await;
    assert_eq!(sample(&text, MODE_BACKSTOP), 1.0, "{text}");
}

#[tokio::test]
async fn when_leaf_falls_silent_polling_falls_back_to_the_normal_interval_and_says_so() {
    // Secret-only mode: only verified deliveries count as hearing from Leaf.
    let port = free_port();
    let f = Fixture::start_with("backstop-quiet", StandInConfig::default(), |o| {
        backstop_options(o, port, false, "2s", Some("8s"))
    })
    .await;
    put_signing_secret(&f, SIGNING_SECRET).await;
    f.create_farm_with_default_credentials("user-quiet").await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    wait_receiver_ready(port).await;
    // Nothing heard yet (an unsigned confirmation proves nothing): the normal pace, 10 minutes.
    let text = metrics(&f).await;
    assert_eq!(sample(&text, MODE_NORMAL), 1.0, "{text}");
    f.standin.clear_requests();

    // A signed delivery: alerts are healthy. The check the last one scheduled 10 minutes out
    // comes at the backstop pace at once, and then every 2 seconds.
    let confirmation = r#"{"message": "confirmation of webhook upon registration"}"#;
    assert_eq!(post_signed(port, SIGNING_SECRET, confirmation).await, 200);
    wait_metric(&f, &switches("backstop", "healthy"), 1.0).await;
    let (kind, note) = wait_pod_event(&f, "PollingBackstop", "every 2s").await;
    assert_eq!(kind, "Normal", "{note}");
    wait_gets(&f, "user-quiet", 2, Duration::from_secs(8)).await;

    // Silence for longer than the quiet limit (8 s): back to the normal pace.
    let text = wait_metric(&f, &switches("normal", "quiet"), 1.0).await;
    let at_fallback = f.count_calls("user-quiet", "GET");
    assert_eq!(sample(&text, MODE_NORMAL), 1.0, "{text}");
    assert_eq!(sample(&text, MODE_BACKSTOP), 0.0, "{text}");
    let (kind, note) = wait_pod_event(&f, "PollingFallback", "more than 8s").await;
    assert_eq!(kind, "Warning", "{note}");
    assert!(note.contains("refreshInterval"), "{note}");
    assert_eq!(
        pod_event_uids(&f).await,
        vec![Some(POD_UID.to_string()); 2],
        "about the Pod, by uid"
    );
    assert!(at_fallback >= 2, "{:?}", f.leaf_calls("user-quiet"));
    let calls = f.leaf_calls("user-quiet");
    assert!(calls.iter().all(|c| c == "GET 200"), "{calls:?}");
    // An observation window, not a synchronisation: three backstop intervals in which the
    // backstop pace would have checked again. A check already under way may still land.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = f.count_calls("user-quiet", "GET");
    assert!(
        after <= at_fallback + 1,
        "checks stopped at the fallback: {at_fallback} then {after}: {:?}",
        f.leaf_calls("user-quiet")
    );
    f.operator
        .wait_for_log("Leaf's alerts cannot be trusted", WAIT)
        .await;
    assert!(!f.operator.log().contains(SIGNING_SECRET));
}

#[tokio::test]
async fn a_missing_or_foreign_registration_falls_back_to_the_normal_interval() {
    let port = free_port();
    let f = Fixture::start_with("backstop-reg", StandInConfig::default(), |o| {
        backstop_options(o, port, true, "2s", None)
    })
    .await;
    put_signing_secret(&f, SIGNING_SECRET).await;
    f.create_farm_with_default_credentials("user-reg").await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    wait_metric(&f, &switches("backstop", "healthy"), 1.0).await;
    let ours = f
        .standin
        .webhooks()
        .into_iter()
        .find(|w| w.url == receiver_url(port))
        .expect("our webhook");
    f.standin.clear_requests();
    wait_gets(&f, "user-reg", 2, Duration::from_secs(20)).await;

    // Our webhook disappears and Leaf refuses to create it again: missing.
    f.standin
        .set_fault_path_filter(Some("/services/alerts/api/alerts/webhooks"));
    f.standin.set_fault_method_filter(Some("POST"));
    f.standin.fail_every_nth(1, 500);
    assert!(f.standin.remove_webhook(&ours.id));
    let text = wait_metric(&f, &switches("normal", "missing"), 1.0).await;
    assert_eq!(sample(&text, MODE_NORMAL), 1.0, "{text}");
    let (kind, _) = wait_pod_event(&f, "PollingFallback", "missing").await;
    assert_eq!(kind, "Warning");

    // Leaf takes it again: healthy, and the backstop pace at once.
    f.standin.clear_faults();
    wait_metric(&f, &switches("backstop", "healthy"), 2.0).await;
    let ours = f
        .standin
        .webhooks()
        .into_iter()
        .find(|w| w.url == receiver_url(port))
        .expect("our webhook, registered again");
    let before = f.count_calls("user-reg", "GET");
    wait_gets(&f, "user-reg", before + 2, Duration::from_secs(20)).await;

    // Another consumer of the account takes the events: foreign. Theirs is never touched.
    assert!(f.standin.remove_webhook(&ours.id));
    let theirs = f.standin.seed_webhook(
        "their-app",
        "http://127.0.0.1:9/hooks",
        &[CREDENTIALS_UNAUTHENTICATED, CREDENTIALS_LIMITED_PERMISSION],
        "their-secret",
    );
    let text = wait_metric(&f, &switches("normal", "foreign"), 1.0).await;
    assert_eq!(sample(&text, MODE_NORMAL), 1.0, "{text}");
    let (kind, _) = wait_pod_event(&f, "PollingFallback", "eventRegisteredTwice").await;
    assert_eq!(kind, "Warning");
    assert_eq!(f.standin.webhooks(), vec![theirs]);
    let text = metrics(&f).await;
    assert_eq!(
        sample(&text, &switches("normal", "missing"))
            + sample(&text, &switches("normal", "foreign")),
        2.0,
        "two fallbacks, each announced once: {text}"
    );
}
