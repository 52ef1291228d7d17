//! Leaf's Alerts service, played as documented: webhooks CRUD with one owner per event
//! (`400 eventRegisteredTwice`), the confirmation POST after a registration, signed deliveries
//! when a credential's status turns `UNAUTHENTICATED` / `MISSING_PERMISSION` (or on request),
//! Leaf's retry schedule (1, 30, 60, 240 minutes after the first failure, scaled by
//! `time_scale` for tests), failed calls in Leaf's shape, and on request bad signatures,
//! duplicates, out-of-order and failed deliveries.
//!
//! Delivery bodies are written the way Leaf's look (Python `json.dumps`: spaces after `:` and
//! `,`, the documented field order) and signed with HMAC-SHA256 of exactly those bytes.

use std::sync::{Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::handle::Handle;
use crate::leaf_api::{Shared, authorized, lock, problem};
use crate::state::{State as Inner, leaf_time};

/// Base path of the webhooks endpoints.
pub const WEBHOOKS: &str = "/services/alerts/api/alerts/webhooks";
pub const CONFIRMATION_BODY: &str = r#"{"message": "confirmation of webhook upon registration"}"#;
pub const CREDENTIALS_UNAUTHENTICATED: &str = "credentialsUnauthenticated";
pub const CREDENTIALS_LIMITED_PERMISSION: &str = "credentialsLimitedPermission";
/// Leaf's documented retry offsets after the first failure, in minutes.
pub const RETRY_MINUTES: [u64; 4] = [1, 30, 60, 240];

/// Event names Leaf documents (the current `EventDto` list).
const KNOWN_EVENTS: &[&str] = &[
    "credentialsLimitedPermission",
    "credentialsUnauthenticated",
    "fieldCreated",
    "fieldUpdated",
    "mergedFieldCreated",
    "mergedFieldUpdated",
    "fieldBoundaryCreated",
    "fieldBoundaryUpdated",
    "fieldBoundaryDeleted",
    "batchUploadProcessingFinished",
    "uploadedFileProcessingFinished",
    "uploadedFileProcessingFailed",
    "providerFileProcessingFinished",
    "providerFileProcessingFailed",
    "mergedFileProcessingFinished",
    "mergedFileProcessingFailed",
    "automergedFileProcessingFinished",
    "automergedFileProcessingFailed",
    "operationCreated",
    "operationUpdated",
    "operationProcessingFinished",
    "operationProcessingFailed",
    "workflowProcessingFinished",
    "workflowProcessingFailed",
    "newSatelliteImage",
    "satelliteSubscriptionFailed",
    "newIrrigationActivity",
    "newFieldIrrigationActivity",
    "machineCreated",
    "machineUpdated",
    "machineDeleted",
    "implementCreated",
    "implementUpdated",
    "operatorCreated",
    "operatorUpdated",
    "providerOrganizationCreated",
    "providerOrganizationBlocked",
    "providerOrganizationRemoved",
];

/// A registered webhook, secret included (GET echoes it, like Leaf).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredWebhook {
    pub id: String,
    pub events: Vec<String>,
    pub name: String,
    pub secret: String,
    pub url: String,
}

/// One entry of `GET /webhooks/failed-calls`, in Leaf's shape (HTTP or connection failure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedCall {
    pub api_owner: String,
    pub created_at: String,
    pub url: String,
    pub request_body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_error: Option<String>,
}

/// One delivery attempt, for tests to inspect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttempt {
    pub url: String,
    /// The event type, or `confirmation`.
    pub event: String,
    pub body: String,
    /// 0 for the first attempt, then 1..=4 for Leaf's retries.
    pub attempt: u32,
    /// The receiver's answer; `None` when there was none (connection failure, or `fail_next`).
    pub status: Option<u16>,
    /// Whether the signature sent was the right one.
    pub signed_correctly: bool,
    pub at: String,
}

/// Deliveries to tamper with, counted down as deliveries go out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AlertTamper {
    /// Sign the next N deliveries with a wrong key.
    pub bad_signature_next: u32,
    /// Send the next N deliveries without `X-Leaf-Signature`.
    pub unsigned_next: u32,
    /// Deliver the next N deliveries twice (the same bytes, one after the other).
    pub duplicate_next: u32,
    /// Hold the next N deliveries, then send them newest first.
    pub reverse_next: u32,
    /// Do not reach the receiver for the next N first attempts: record a connection failure
    /// (as if it were down) and go on with the retry schedule.
    pub fail_next: u32,
}

/// The Alerts part of the stand-in's state.
#[derive(Debug)]
pub(crate) struct AlertsState {
    pub webhooks: Vec<StoredWebhook>,
    pub failed_calls: Vec<FailedCall>,
    pub deliveries: Vec<DeliveryAttempt>,
    /// Multiplies Leaf's retry offsets (1.0 = real minutes; 0.001 makes 1 minute 60 ms).
    pub time_scale: f64,
    /// Whether the registration confirmation carries `X-Leaf-Signature` (Leaf does not say).
    pub confirmation_signed: bool,
    pub tamper: AlertTamper,
    /// The next N webhook creates are applied but their answer is lost: 503, or (with
    /// `lost_answer_created`) 201 without a `Location` or a body.
    pub lose_create_answers: u32,
    pub lost_answer_created: bool,
    held: Vec<Delivery>,
    /// The state itself, for delivery tasks started under its lock.
    pub(crate) shared: Weak<Mutex<Inner>>,
}

impl Default for AlertsState {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            failed_calls: Vec::new(),
            deliveries: Vec::new(),
            time_scale: 1.0,
            confirmation_signed: false,
            tamper: AlertTamper::default(),
            lose_create_answers: 0,
            lost_answer_created: false,
            held: Vec::new(),
            shared: Weak::new(),
        }
    }
}

/// One delivery to make (with its retries).
#[derive(Clone, Debug)]
struct Delivery {
    url: String,
    event: String,
    body: String,
    secret: String,
    bad_signature: bool,
    unsigned: bool,
    copies: u32,
    fail_first: bool,
    retries: bool,
}

fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

/// A credentials event body the way Leaf writes it.
pub fn credentials_body(
    event: &str,
    client_id: &str,
    credential_id: &str,
    status: &str,
    timestamp: &str,
) -> String {
    let message = if event == CREDENTIALS_UNAUTHENTICATED {
        "The credentials are no longer authenticated"
    } else {
        "The credentials lack permission for the requested actions"
    };
    format!(
        "{{\"credential\": {}, \"provider\": \"Trimble\", \"credentialId\": {}, \"message\": {}, \"status\": {}, \"type\": {}, \"timestamp\": {}}}",
        json_string(client_id),
        json_string(credential_id),
        json_string(message),
        json_string(status),
        json_string(event),
        json_string(timestamp),
    )
}

/// The event a credential status fires, if any.
pub fn event_for_status(status: &str) -> Option<&'static str> {
    match status {
        "UNAUTHENTICATED" => Some(CREDENTIALS_UNAUTHENTICATED),
        "MISSING_PERMISSION" => Some(CREDENTIALS_LIMITED_PERMISSION),
        _ => None,
    }
}

impl AlertsState {
    /// Queues the delivery of `event` about a credential to the webhook owning it; false when
    /// no webhook listens to it.
    pub(crate) fn alert_credential(
        &mut self,
        event: &str,
        client_id: &str,
        credential_id: &str,
        status: &str,
    ) -> bool {
        let timestamp = leaf_time(SystemTime::now());
        let body = credentials_body(event, client_id, credential_id, status, &timestamp);
        self.deliver_event(event, body)
    }

    /// Queues a delivery of `body` to the webhook owning `event`, applying the tamper settings.
    pub(crate) fn deliver_event(&mut self, event: &str, body: String) -> bool {
        let Some(webhook) = self
            .webhooks
            .iter()
            .find(|w| w.events.iter().any(|e| e == event))
            .cloned()
        else {
            return false;
        };
        let t = &mut self.tamper;
        let take = |n: &mut u32| {
            let hit = *n > 0;
            *n = n.saturating_sub(u32::from(hit));
            hit
        };
        let delivery = Delivery {
            url: webhook.url,
            event: event.to_string(),
            body,
            secret: webhook.secret,
            bad_signature: take(&mut t.bad_signature_next),
            unsigned: take(&mut t.unsigned_next),
            copies: if take(&mut t.duplicate_next) { 2 } else { 1 },
            fail_first: take(&mut t.fail_next),
            retries: true,
        };
        if take(&mut t.reverse_next) {
            self.held.push(delivery);
            if self.tamper.reverse_next == 0 {
                let mut held = std::mem::take(&mut self.held);
                held.reverse();
                // One task sends them in that order, so they arrive out of order.
                self.spawn_in_order(held);
            }
            return true;
        }
        self.spawn_in_order(vec![delivery]);
        true
    }

    fn confirm(&mut self, webhook: &StoredWebhook) {
        let delivery = Delivery {
            url: webhook.url.clone(),
            event: "confirmation".to_string(),
            body: CONFIRMATION_BODY.to_string(),
            secret: webhook.secret.clone(),
            bad_signature: false,
            unsigned: !self.confirmation_signed,
            copies: 1,
            fail_first: false,
            retries: false,
        };
        self.spawn_in_order(vec![delivery]);
    }

    /// Sends the deliveries' first attempts one after the other (so they arrive in this order);
    /// retries run on their own.
    fn spawn_in_order(&self, deliveries: Vec<Delivery>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        let scale = self.time_scale;
        runtime.spawn(async move {
            for delivery in deliveries {
                // Duplicates: the same bytes again, each copy with its own retries.
                for _ in 0..delivery.copies {
                    run_delivery(shared.clone(), delivery.clone(), scale).await;
                }
            }
        });
    }
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client")
    })
}

/// One attempt: the receiver's status, or the connection error.
async fn attempt(delivery: &Delivery) -> Result<(u16, String), String> {
    let mut request = http()
        .post(&delivery.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "*/*")
        .body(delivery.body.clone());
    if !delivery.unsigned {
        let key = if delivery.bad_signature {
            "not-the-webhook-secret"
        } else {
            delivery.secret.as_str()
        };
        request = request.header("X-Leaf-Signature", sign(key, &delivery.body));
    }
    let response = request.send().await.map_err(|e| {
        if e.is_connect() {
            "Connection refused".to_string()
        } else if e.is_timeout() {
            "Read timed out".to_string()
        } else {
            "Connection failed".to_string()
        }
    })?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Ok((status, text.chars().take(1000).collect()))
}

/// The first attempt now; when it fails, Leaf's retries (on their own task) until a 2xx.
async fn run_delivery(shared: Weak<Mutex<Inner>>, delivery: Delivery, scale: f64) {
    let result = if delivery.fail_first {
        Err("Connection refused".to_string())
    } else {
        attempt(&delivery).await
    };
    // Leaf counts its retry offsets from the initial failure: the end of the first attempt.
    let first_failure = tokio::time::Instant::now();
    if record(&shared, &delivery, 0, result) || !delivery.retries {
        return;
    }
    tokio::spawn(async move {
        for (n, minutes) in RETRY_MINUTES.iter().enumerate() {
            let wait = Duration::from_secs_f64((*minutes as f64) * 60.0 * scale.max(0.0));
            tokio::time::sleep_until(first_failure + wait).await;
            let result = attempt(&delivery).await;
            if record(&shared, &delivery, n as u32 + 1, result) {
                return;
            }
        }
    });
}

/// Logs an attempt (and a failed call when it failed); true when it succeeded (or the stand-in
/// is gone, so nothing is left to do).
fn record(
    shared: &Weak<Mutex<Inner>>,
    delivery: &Delivery,
    attempt: u32,
    result: Result<(u16, String), String>,
) -> bool {
    let Some(shared) = shared.upgrade() else {
        return true;
    };
    let mut state = lock(&shared);
    let ok = matches!(result, Ok((status, _)) if (200..300).contains(&status));
    state.alerts.deliveries.push(DeliveryAttempt {
        url: delivery.url.clone(),
        event: delivery.event.clone(),
        body: delivery.body.clone(),
        attempt,
        status: result.as_ref().ok().map(|(s, _)| *s),
        signed_correctly: !delivery.unsigned && !delivery.bad_signature,
        at: jiff::Timestamp::now().to_string(),
    });
    if !ok && delivery.retries {
        let (status, response, connection_error) = match result {
            Ok((status, text)) => (Some(status), Some(text), None),
            Err(error) => (None, None, Some(error)),
        };
        state.alerts.failed_calls.push(FailedCall {
            api_owner: "standin-api-owner".to_string(),
            created_at: leaf_time(SystemTime::now()),
            url: delivery.url.clone(),
            request_body: delivery.body.clone(),
            status,
            response,
            connection_error,
        });
    }
    ok
}

// --- the Alerts API -----------------------------------------------------------------------------

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(WEBHOOKS, get(list).post(create))
        .route(&format!("{WEBHOOKS}/failed-calls"), get(failed_calls))
        .route(&format!("{WEBHOOKS}/{{id}}"), get(get_one).delete(delete))
}

fn webhook_json(w: &StoredWebhook) -> Value {
    json!({"id": w.id, "events": w.events, "name": w.name, "secret": w.secret, "url": w.url})
}

async fn list(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    authorized(
        &shared,
        &headers,
        |_| {},
        |s| {
            let all: Vec<Value> = s.alerts.webhooks.iter().map(webhook_json).collect();
            (StatusCode::OK, Json(Value::Array(all))).into_response()
        },
    )
}

async fn get_one(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized(
        &shared,
        &headers,
        |_| {},
        |s| match s.alerts.webhooks.iter().find(|w| w.id == id) {
            Some(w) => (StatusCode::OK, Json(webhook_json(w))).into_response(),
            None => problem(StatusCode::NOT_FOUND, "Webhook not found"),
        },
    )
}

async fn delete(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized(
        &shared,
        &headers,
        |_| {},
        |s| {
            let before = s.alerts.webhooks.len();
            s.alerts.webhooks.retain(|w| w.id != id);
            if s.alerts.webhooks.len() == before {
                problem(StatusCode::NOT_FOUND, "Webhook not found")
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        },
    )
}

async fn failed_calls(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    authorized(
        &shared,
        &headers,
        |_| {},
        |s| {
            (
                StatusCode::OK,
                Json(json!({"items": s.alerts.failed_calls})),
            )
                .into_response()
        },
    )
}

async fn create(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    authorized(&shared, &headers, |_| {}, |s| create_webhook(s, &body))
}

fn create_webhook(state: &mut Inner, body: &str) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_str::<Value>(body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Request body must be a JSON object",
        );
    };
    let text = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let (Some(name), Some(secret), Some(url)) = (text("name"), text("secret"), text("url")) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "name, secret and url must not be empty",
        );
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return problem(StatusCode::BAD_REQUEST, "url must be a valid HTTP URL");
    }
    let events: Vec<String> = match body.get("events") {
        Some(Value::Array(items)) if !items.is_empty() => {
            let names: Vec<String> = items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            if names.len() != items.len()
                || names.iter().any(|n| !KNOWN_EVENTS.contains(&n.as_str()))
            {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "events holds an unknown event name",
                );
            }
            names
        }
        _ => {
            return problem(StatusCode::BAD_REQUEST, "events must be a non-empty array");
        }
    };
    if let Some(taken) = events.iter().find(|e| {
        state
            .alerts
            .webhooks
            .iter()
            .any(|w| w.events.iter().any(|have| have == *e))
    }) {
        // Leaf's error code is `eventRegisteredTwice`; JHipster puts such codes in `message`.
        let body = json!({
            "type": "https://www.jhipster.tech/problem/problem-with-message",
            "title": "Bad Request",
            "status": 400,
            "detail": format!("{taken} is already registered in another webhook"),
            "message": "eventRegisteredTwice",
        });
        let mut response = (StatusCode::BAD_REQUEST, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        return response;
    }
    let n = state.next_id();
    let webhook = StoredWebhook {
        id: format!("00000000-0000-4000-a000-{n:012x}"),
        events,
        name,
        secret,
        url,
    };
    state.alerts.webhooks.push(webhook.clone());
    state.alerts.confirm(&webhook);
    if state.alerts.lose_create_answers > 0 {
        // Applied, but the client learns nothing of it (a gateway timing out, a 503 after the
        // write, a body and header lost).
        state.alerts.lose_create_answers -= 1;
        if state.alerts.lost_answer_created {
            return StatusCode::CREATED.into_response();
        }
        return problem(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    let mut response = (StatusCode::CREATED, Json(webhook_json(&webhook))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{WEBHOOKS}/{}", webhook.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

// --- in-process controls ------------------------------------------------------------------------

impl Handle {
    fn alerts<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut state = lock(&self.shared);
        f(&mut state)
    }

    /// Every registered webhook, secrets included.
    pub fn webhooks(&self) -> Vec<StoredWebhook> {
        self.alerts(|s| s.alerts.webhooks.clone())
    }

    /// Registers a webhook directly (as another consumer of the account would); returns it.
    pub fn seed_webhook(
        &self,
        name: &str,
        url: &str,
        events: &[&str],
        secret: &str,
    ) -> StoredWebhook {
        self.alerts(|s| {
            let n = s.next_id();
            let webhook = StoredWebhook {
                id: format!("00000000-0000-4000-a000-{n:012x}"),
                events: events.iter().map(|e| e.to_string()).collect(),
                name: name.to_string(),
                secret: secret.to_string(),
                url: url.to_string(),
            };
            s.alerts.webhooks.push(webhook.clone());
            webhook
        })
    }

    /// Removes a webhook as someone else would (another consumer, a person in Leaf's API);
    /// false when there was none with this id.
    pub fn remove_webhook(&self, id: &str) -> bool {
        self.alerts(|s| {
            let before = s.alerts.webhooks.len();
            s.alerts.webhooks.retain(|w| w.id != id);
            s.alerts.webhooks.len() != before
        })
    }

    pub fn failed_calls(&self) -> Vec<FailedCall> {
        self.alerts(|s| s.alerts.failed_calls.clone())
    }

    /// Adds a failed call as Leaf would list it.
    pub fn push_failed_call(&self, call: FailedCall) {
        self.alerts(|s| s.alerts.failed_calls.push(call));
    }

    /// Every delivery attempt so far, oldest first.
    pub fn deliveries(&self) -> Vec<DeliveryAttempt> {
        self.alerts(|s| s.alerts.deliveries.clone())
    }

    /// Multiplies Leaf's retry offsets (1.0: minutes as documented).
    pub fn set_alert_time_scale(&self, scale: f64) {
        self.alerts(|s| s.alerts.time_scale = scale);
    }

    /// Whether the registration confirmation is signed (default: not).
    pub fn set_confirmation_signed(&self, on: bool) {
        self.alerts(|s| s.alerts.confirmation_signed = on);
    }

    /// The next `n` webhook creates are applied but answered 503 (`created: false`) or 201
    /// without `Location` and body (`created: true`), as when an answer is lost.
    pub fn lose_webhook_create_answers(&self, n: u32, created: bool) {
        self.alerts(|s| {
            s.alerts.lose_create_answers = n;
            s.alerts.lost_answer_created = created;
        });
    }

    /// Replaces the tamper settings for the next deliveries.
    pub fn set_alert_tamper(&self, tamper: AlertTamper) {
        self.alerts(|s| s.alerts.tamper = tamper);
    }

    /// Sends `event` about the user's credential now, with its current status; false when the
    /// user has no credential or no webhook listens to the event.
    pub fn send_credential_alert(&self, user: &str, event: &str) -> bool {
        self.alerts(|s| {
            let Some(c) = s.users.get(user).and_then(|u| u.credential.clone()) else {
                return false;
            };
            s.alerts
                .alert_credential(event, &c.client_id, &c.id, &c.status)
        })
    }

    /// Sends `body` as a delivery of `event` (to the webhook owning it), exactly as given.
    pub fn send_raw_alert(&self, event: &str, body: &str) -> bool {
        self.alerts(|s| s.alerts.deliver_event(event, body.to_string()))
    }
}

// --- process-mode controls (`/_standin/alerts`) --------------------------------------------------

pub(crate) fn control_routes() -> Router<Handle> {
    Router::new()
        .route("/_standin/alerts/webhooks", get(control_webhooks))
        .route("/_standin/alerts/deliveries", get(control_deliveries))
        .route("/_standin/alerts/failed-calls", get(control_failed_calls))
        .route("/_standin/alerts/settings", post(control_settings))
        .route("/_standin/users/{id}/alert", post(control_alert))
}

async fn control_webhooks(State(h): State<Handle>) -> Json<Value> {
    Json(json!(h.webhooks()))
}

async fn control_deliveries(State(h): State<Handle>) -> Json<Value> {
    Json(json!(h.deliveries()))
}

async fn control_failed_calls(State(h): State<Handle>) -> Json<Value> {
    Json(json!({"items": h.failed_calls()}))
}

/// `timeScale`, `confirmationSigned`, `tamper` (an [`AlertTamper`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    time_scale: Option<f64>,
    confirmation_signed: Option<bool>,
    tamper: Option<AlertTamper>,
}

async fn control_settings(State(h): State<Handle>, Json(s): Json<Settings>) -> StatusCode {
    if let Some(scale) = s.time_scale {
        h.set_alert_time_scale(scale);
    }
    if let Some(on) = s.confirmation_signed {
        h.set_confirmation_signed(on);
    }
    if let Some(tamper) = s.tamper {
        h.set_alert_tamper(tamper);
    }
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct AlertRequest {
    event: String,
}

async fn control_alert(
    State(h): State<Handle>,
    Path(id): Path<String>,
    Json(r): Json<AlertRequest>,
) -> StatusCode {
    if h.send_credential_alert(&id, &r.event) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_look_like_leafs_and_sign_over_their_exact_bytes() {
        let body = credentials_body(
            CREDENTIALS_UNAUTHENTICATED,
            "client-1",
            "cred-1",
            "UNAUTHENTICATED",
            "2024-06-15T14:30:00.000000Z",
        );
        assert_eq!(
            body,
            r#"{"credential": "client-1", "provider": "Trimble", "credentialId": "cred-1", "message": "The credentials are no longer authenticated", "status": "UNAUTHENTICATED", "type": "credentialsUnauthenticated", "timestamp": "2024-06-15T14:30:00.000000Z"}"#
        );
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
        assert_eq!(
            event_for_status("MISSING_PERMISSION"),
            Some(CREDENTIALS_LIMITED_PERMISSION)
        );
        assert_eq!(event_for_status("OK"), None);
    }
}
