//! No secret anywhere: plant recognisable secret values, run a whole lifecycle with every log
//! level on, and scan the status, the conditions, the Events, the metrics and the operator's
//! complete output for each of them (and their base64 forms).

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use leaf_standin::StandInConfig;
use support::operator::{Fixture, LEAF_PASSWORD};

const WAIT: Duration = Duration::from_secs(60);

const CLIENT_ID: &str = "PLANTED-client-id-3c9e";
const CLIENT_SECRET: &str = "PLANTED-client-secret-8d1f";
const REFRESH_1: &str = "PLANTED-refresh-token-5a7b";
const REFRESH_2: &str = "PLANTED-refresh-token-rotated-2e4c";
const BAD_REFRESH: &str = "bad-PLANTED-refresh-6f1a";
const TEAM_TOKEN: &str = "PLANTED-leaf-team-token-9b0d";

/// The token-looking words of a header or body: long runs of token characters with a digit.
fn token_like(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "-_.=+/".contains(c)))
        .filter(|word| word.len() >= 16 && word.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn no_planted_secret_reaches_status_events_metrics_or_the_operator_log() {
    let f = Fixture::start_with(
        "secrets",
        StandInConfig::default().with_token(TEAM_TOKEN),
        |o| o.rust_log("trace").refresh_interval("1s"),
    )
    .await;
    let mut planted: Vec<String> = [
        CLIENT_ID,
        CLIENT_SECRET,
        REFRESH_1,
        REFRESH_2,
        BAD_REFRESH,
        TEAM_TOKEN,
        LEAF_PASSWORD,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    // 1. Create, with Leaf events whose headers and bodies carry token material.
    f.put_credentials("creds", CLIENT_ID, CLIENT_SECRET, REFRESH_1)
        .await;
    f.create_tc("farm", "user-secrets", "creds", serde_json::json!({}))
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    let first = f.standin.credential("user-secrets").expect("credential");
    planted.extend([first.refresh_token.clone(), first.access_token.clone()]);
    let failed = f.standin.push_event("user-secrets", 401, None, None);
    let ok = f.standin.push_event("user-secrets", 200, None, None);
    for text in [&failed.headers, &failed.body, &ok.headers, &ok.body] {
        planted.extend(token_like(text));
    }
    f.wait_until_status("farm", WAIT, |s| {
        s.recent_events.iter().any(|e| e.id == failed.id)
    })
    .await;

    // 2. Leaf says the grower must re-authorize; then a rotation with a new refresh token.
    f.standin.set_status("user-secrets", "UNAUTHENTICATED");
    f.wait_reason("farm", "CredentialInvalid", WAIT).await;
    f.put_credentials("creds", CLIENT_ID, CLIENT_SECRET, REFRESH_2)
        .await;
    f.wait_event("farm", "Rotated", WAIT).await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    let second = f.standin.credential("user-secrets").expect("credential");
    planted.extend([second.refresh_token.clone(), second.access_token.clone()]);

    // 3. Error paths: a refused POST (per-resource token account), an incomplete Secret, Leaf down.
    f.put_credentials("bad-creds", CLIENT_ID, CLIENT_SECRET, BAD_REFRESH)
        .await;
    f.put_secret("team", &[("token", TEAM_TOKEN)]).await;
    f.create_tc(
        "rejected",
        "user-rejected",
        "bad-creds",
        serde_json::json!({"leafAuthSecretRef": {"name": "team"}}),
    )
    .await;
    f.wait_reason("rejected", "CredentialRejected", WAIT).await;
    f.put_secret(
        "partial",
        &[("clientId", CLIENT_ID), ("clientSecret", CLIENT_SECRET)],
    )
    .await;
    f.create_tc("partial", "user-partial", "partial", serde_json::json!({}))
        .await;
    f.wait_reason("partial", "SecretInvalid", WAIT).await;
    f.standin.set_outage(true);
    f.wait_reason("farm", "LeafUnavailable", WAIT).await;
    f.standin.set_outage(false);
    f.wait_reason("farm", "CredentialValid", WAIT).await;

    // 4. Delete.
    f.delete_tc("farm").await;
    f.wait_gone("farm", WAIT).await;

    // Scan everything a person or a log collector can see.
    let control_plane = support::control_plane().await;
    let tcs = control_plane.kubectl(&[
        "get",
        "trimbleconnections",
        "-n",
        &f.namespace,
        "-o",
        "yaml",
    ]);
    let events = control_plane.kubectl(&["get", "events", "-n", &f.namespace, "-o", "yaml"]);
    let events_v1 = control_plane.kubectl(&[
        "get",
        "events.events.k8s.io",
        "-n",
        &f.namespace,
        "-o",
        "yaml",
    ]);
    let describe = control_plane.kubectl(&["describe", "trimbleconnections", "-n", &f.namespace]);
    let metrics = match f.operator.http_addr() {
        Some(addr) => reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body"),
        None => panic!("the operator did not log its HTTP address"),
    };
    let log = f.operator.log();
    assert!(
        log.len() > 10_000,
        "the trace log is complete ({} bytes)",
        log.len()
    );
    let sources = [
        (
            "TrimbleConnections",
            String::from_utf8_lossy(&tcs.stdout).into_owned(),
        ),
        (
            "core Events",
            String::from_utf8_lossy(&events.stdout).into_owned(),
        ),
        (
            "events.k8s.io Events",
            String::from_utf8_lossy(&events_v1.stdout).into_owned(),
        ),
        (
            "kubectl describe",
            String::from_utf8_lossy(&describe.stdout).into_owned(),
        ),
        ("metrics", metrics),
        ("operator log", log),
    ];
    assert!(
        sources[1].1.contains("Rotated"),
        "the Events were read: {}",
        sources[1].1
    );
    assert!(
        sources[0].1.contains("SecretInvalid"),
        "the resources were read"
    );
    let mut leaks = Vec::new();
    for secret in &planted {
        let encoded = STANDARD.encode(secret);
        for (name, text) in &sources {
            if text.contains(secret.as_str()) {
                // Show where, so that a leak can be traced to the code that logged it.
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(secret.as_str()))
                    .take(3)
                    .collect();
                leaks.push(format!("{secret:?} in {name}: {lines:#?}"));
            }
            if text.contains(&encoded) {
                leaks.push(format!("base64 of {secret:?} in {name}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
}
