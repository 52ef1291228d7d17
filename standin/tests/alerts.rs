//! The stand-in's Alerts service on its own: registration rules, the confirmation, signed
//! deliveries, Leaf's retry schedule (time-scaled) and failed calls in Leaf's shape.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use leaf_standin::{CONFIRMATION_BODY, CREDENTIALS_UNAUTHENTICATED, StandIn, StandInConfig};
use serde_json::json;
use sha2::Sha256;

const TOKEN: &str = "alerts-test-token";
const SECRET: &str = "hook-secret";

/// What a test receiver saw: (arrival, body, signature header).
type Seen = Arc<Mutex<Vec<(Instant, String, Option<String>)>>>;

/// A receiver answering the given statuses in turn (then 200), recording every request.
async fn receiver(statuses: Vec<u16>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let answers = Arc::new(Mutex::new(statuses.into_iter()));
    let record = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let record = record.clone();
            let answers = answers.clone();
            async move {
                let signature = headers
                    .get("X-Leaf-Signature")
                    .map(|v| v.to_str().unwrap().to_string());
                record
                    .lock()
                    .unwrap()
                    .push((Instant::now(), body, signature));
                let status = answers.lock().unwrap().next().unwrap_or(200);
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), seen)
}

fn hmac(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

async fn register(leaf: &StandIn, events: &[&str], url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!(
            "{}/services/alerts/api/alerts/webhooks",
            leaf.origin()
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"events": events, "name": "test", "secret": SECRET, "url": url}))
        .send()
        .await
        .unwrap()
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn registration_confirms_and_an_event_has_one_owner() {
    let leaf = StandIn::start(StandInConfig::default().with_token(TOKEN)).await;
    let (url, seen) = receiver(vec![]).await;
    let created = register(&leaf, &[CREDENTIALS_UNAUTHENTICATED], &url).await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_string();
    let body: serde_json::Value = created.json().await.unwrap();
    assert!(location.ends_with(&format!("/{}", body["id"].as_str().unwrap())));
    wait_for("the confirmation", || !seen.lock().unwrap().is_empty()).await;
    let (_, confirmation, signature) = seen.lock().unwrap()[0].clone();
    assert_eq!(confirmation, CONFIRMATION_BODY);
    assert_eq!(signature, None, "unsigned by default");

    let twice = register(&leaf, &["fieldCreated", CREDENTIALS_UNAUTHENTICATED], &url).await;
    assert_eq!(twice.status(), 400);
    assert!(twice.text().await.unwrap().contains("eventRegisteredTwice"));
    let unknown = register(&leaf, &["noSuchEvent"], &url).await;
    assert_eq!(unknown.status(), 400);
    assert_eq!(leaf.webhooks().len(), 1);
}

#[tokio::test]
async fn a_status_change_is_delivered_signed_and_retried_on_leafs_schedule() {
    let leaf = StandIn::start(StandInConfig::default().with_token(TOKEN).with_user("u1")).await;
    // 1 minute -> 60 ms, 30 minutes -> 1.8 s.
    leaf.set_alert_time_scale(0.001);
    let credential = leaf.seed_credential("u1", "client-1");
    // Confirmation 200, then the delivery fails twice before it is acknowledged.
    let (url, seen) = receiver(vec![200, 500, 503]).await;
    assert_eq!(
        register(&leaf, &[CREDENTIALS_UNAUTHENTICATED], &url)
            .await
            .status(),
        201
    );
    wait_for("the confirmation", || seen.lock().unwrap().len() == 1).await;

    assert!(leaf.set_status("u1", "UNAUTHENTICATED"));
    assert!(!leaf.set_status("nobody", "UNAUTHENTICATED"));
    wait_for("three attempts", || seen.lock().unwrap().len() == 4).await;
    let attempts: Vec<_> = seen.lock().unwrap()[1..].to_vec();
    for (_, body, signature) in &attempts {
        assert_eq!(body, &attempts[0].1, "every retry sends the same bytes");
        assert_eq!(signature.as_deref(), Some(hmac(SECRET, body).as_str()));
    }
    let body: serde_json::Value = serde_json::from_str(&attempts[0].1).unwrap();
    assert_eq!(body["credentialId"], credential.id.as_str());
    assert_eq!(body["type"], CREDENTIALS_UNAUTHENTICATED);
    assert_eq!(body["status"], "UNAUTHENTICATED");
    assert!(
        attempts[0].1.contains("\", \"provider\": \"Trimble\""),
        "Leaf's separators"
    );
    let first = attempts[0].0;
    assert!(
        attempts[1].0 - first >= Duration::from_millis(60),
        "1 minute, scaled"
    );
    assert!(
        attempts[2].0 - first >= Duration::from_millis(1800),
        "30 minutes, scaled"
    );

    let failed = leaf.failed_calls();
    assert_eq!(
        failed.iter().map(|f| f.status).collect::<Vec<_>>(),
        vec![Some(500), Some(503)]
    );
    assert!(
        failed
            .iter()
            .all(|f| f.url == url && f.request_body == attempts[0].1)
    );
    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/services/alerts/api/alerts/webhooks/failed-calls",
            leaf.origin()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert_eq!(listed["items"][0]["status"], 500);
    assert!(listed["items"][0].get("connectionError").is_none());
    let deliveries = leaf.deliveries();
    assert_eq!(
        deliveries
            .iter()
            .filter(|d| d.event == CREDENTIALS_UNAUTHENTICATED)
            .map(|d| (d.attempt, d.status))
            .collect::<Vec<_>>(),
        vec![(0, Some(500)), (1, Some(503)), (2, Some(200))]
    );
}
