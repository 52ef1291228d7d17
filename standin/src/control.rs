//! The `/_standin/` HTTP control endpoints: the in-process controls for process mode
//! (quickstart, benchmark). Not logged, not subject to faults, no authentication.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::handle::Handle;
use crate::state::{
    self, BadRefresh, FailAfterApplyNext, Faults, LateNext, OnExisting, RetryAfter,
};

pub(crate) fn router(handle: Handle) -> Router {
    Router::new()
        .route("/_standin/requests", get(requests).delete(clear_requests))
        .route("/_standin/counters", get(counters).delete(reset_counters))
        .route("/_standin/accounts", post(add_account))
        .route("/_standin/tokens", post(add_token))
        .route("/_standin/revoke-tokens", post(revoke_tokens))
        .route("/_standin/users/{id}", post(add_user).delete(remove_user))
        .route("/_standin/users/{id}/status", post(set_status))
        .route(
            "/_standin/users/{id}/credential",
            get(credential).post(seed_credential),
        )
        .route("/_standin/users/{id}/events", get(events).post(push_event))
        .route(
            "/_standin/faults",
            get(faults).post(update_faults).delete(clear_faults),
        )
        .route("/_standin/behaviour", post(behaviour))
        .route("/_standin/pending", get(pending))
        .merge(crate::alerts::control_routes())
        .merge(crate::magic_link::control_routes())
        .with_state(handle)
}

async fn requests(State(h): State<Handle>) -> Json<Value> {
    Json(json!(h.requests()))
}

async fn clear_requests(State(h): State<Handle>) -> StatusCode {
    h.clear_requests();
    StatusCode::NO_CONTENT
}

async fn counters(State(h): State<Handle>) -> Json<Value> {
    Json(json!(h.counters()))
}

async fn reset_counters(State(h): State<Handle>) -> StatusCode {
    h.reset_counters();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Account {
    username: String,
    password: String,
}

async fn add_account(State(h): State<Handle>, Json(a): Json<Account>) -> StatusCode {
    h.add_account(&a.username, &a.password);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Token {
    token: String,
}

async fn add_token(State(h): State<Handle>, Json(t): Json<Token>) -> StatusCode {
    h.add_token(&t.token);
    StatusCode::NO_CONTENT
}

async fn revoke_tokens(State(h): State<Handle>) -> StatusCode {
    h.revoke_tokens();
    StatusCode::NO_CONTENT
}

async fn add_user(State(h): State<Handle>, Path(id): Path<String>) -> StatusCode {
    h.add_user(&id);
    StatusCode::NO_CONTENT
}

async fn remove_user(State(h): State<Handle>, Path(id): Path<String>) -> StatusCode {
    h.remove_user(&id);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Status {
    status: String,
}

async fn set_status(
    State(h): State<Handle>,
    Path(id): Path<String>,
    Json(s): Json<Status>,
) -> StatusCode {
    if h.set_status(&id, &s.status) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn credential(State(h): State<Handle>, Path(id): Path<String>) -> Response {
    match h.credential(&id) {
        Some(c) => Json(json!(c)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seed {
    client_id: String,
}

async fn seed_credential(
    State(h): State<Handle>,
    Path(id): Path<String>,
    Json(s): Json<Seed>,
) -> Json<Value> {
    Json(json!(h.seed_credential(&id, &s.client_id)))
}

async fn events(State(h): State<Handle>, Path(id): Path<String>) -> Json<Value> {
    Json(json!(h.events(&id)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewEvent {
    status_code: i32,
    headers: Option<String>,
    body: Option<String>,
}

async fn push_event(
    State(h): State<Handle>,
    Path(id): Path<String>,
    Json(e): Json<NewEvent>,
) -> Json<Value> {
    Json(json!(h.push_event(
        &id,
        e.status_code,
        e.headers.as_deref(),
        e.body.as_deref()
    )))
}

async fn faults(State(h): State<Handle>) -> Json<Value> {
    Json(json!(h.faults()))
}

/// Partial update: only the fields present change. `latencyMs`, `outage`, `dropNext`,
/// `rateLimitNext`, `retryAfterSecs`, `retryAfterDateInSecs`, `unauthorizedNext`, `failEveryNth`,
/// `failShare`, `seed`, `failStatus`, `failBody`, `pathFilter`, `methodFilter`, and
/// `lateNext` `{method, count, delayMs}` / `failAfterApplyNext` `{method, count, status?}` (one
/// object or an array; each sets the entry of its method, `count` 0 removes it, other methods
/// keep theirs).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultsPatch {
    latency_ms: Option<u64>,
    outage: Option<bool>,
    drop_next: Option<u32>,
    rate_limit_next: Option<u32>,
    retry_after_secs: Option<u64>,
    retry_after_date_in_secs: Option<u64>,
    unauthorized_next: Option<u32>,
    fail_every_nth: Option<u32>,
    fail_share: Option<f64>,
    seed: Option<u64>,
    fail_status: Option<u16>,
    fail_body: Option<String>,
    path_filter: Option<String>,
    method_filter: Option<String>,
    late_next: Option<OneOrMany<LateNext>>,
    fail_after_apply_next: Option<OneOrMany<FailAfterApplyNext>>,
}

/// A field that takes one object or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

async fn update_faults(State(h): State<Handle>, Json(p): Json<FaultsPatch>) -> Json<Value> {
    let mut f: Faults = h.faults();
    if let Some(ms) = p.latency_ms {
        f.latency = Duration::from_millis(ms);
    }
    f.outage = p.outage.unwrap_or(f.outage);
    f.drop_next = p.drop_next.unwrap_or(f.drop_next);
    f.rate_limit_next = p.rate_limit_next.unwrap_or(f.rate_limit_next);
    if let Some(s) = p.retry_after_secs {
        f.retry_after = RetryAfter::Seconds(s);
    }
    if let Some(s) = p.retry_after_date_in_secs {
        f.retry_after = RetryAfter::DateIn(s);
    }
    f.unauthorized_next = p.unauthorized_next.unwrap_or(f.unauthorized_next);
    f.fail_every_nth = p.fail_every_nth.unwrap_or(f.fail_every_nth);
    f.fail_share = p.fail_share.unwrap_or(f.fail_share);
    f.seed = p.seed.unwrap_or(f.seed);
    f.fail_status = p.fail_status.unwrap_or(f.fail_status);
    if let Some(body) = p.fail_body {
        f.fail_body = (!body.is_empty()).then_some(body);
    }
    if let Some(filter) = p.path_filter {
        f.path_filter = (!filter.is_empty()).then_some(filter);
    }
    if let Some(filter) = p.method_filter {
        f.method_filter = (!filter.is_empty()).then_some(filter);
    }
    for mut late in p.late_next.map(OneOrMany::into_vec).unwrap_or_default() {
        late.method = late.method.trim().to_ascii_uppercase();
        state::set_next(&mut f.late_next, late);
    }
    for mut fail in p
        .fail_after_apply_next
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
    {
        fail.method = fail.method.trim().to_ascii_uppercase();
        state::set_next(&mut f.fail_after_apply_next, fail);
    }
    h.set_faults(f);
    Json(json!(h.faults()))
}

async fn clear_faults(State(h): State<Handle>) -> StatusCode {
    h.clear_faults();
    StatusCode::NO_CONTENT
}

/// `onExisting` ("conflict"/"409", "badrequest"/"400", "replace"), `badRefresh` (object),
/// `tokenLifetimeSecs`, `expClaim`, `autoCreateUsers`, `emptyCreateAnswer`, `readLagMs`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Behaviour {
    on_existing: Option<OnExisting>,
    bad_refresh: Option<BadRefresh>,
    token_lifetime_secs: Option<u64>,
    exp_claim: Option<bool>,
    auto_create_users: Option<bool>,
    empty_create_answer: Option<bool>,
    read_lag_ms: Option<u64>,
}

async fn behaviour(State(h): State<Handle>, Json(b): Json<Behaviour>) -> StatusCode {
    if let Some(o) = b.on_existing {
        h.set_on_existing(o);
    }
    if let Some(r) = b.bad_refresh {
        h.set_bad_refresh(r);
    }
    if let Some(s) = b.token_lifetime_secs {
        h.set_token_lifetime(Duration::from_secs(s));
    }
    if let Some(e) = b.exp_claim {
        h.set_exp_claim(e);
    }
    if let Some(a) = b.auto_create_users {
        h.set_auto_create_users(a);
    }
    if let Some(e) = b.empty_create_answer {
        h.set_empty_create_answer(e);
    }
    if let Some(ms) = b.read_lag_ms {
        h.set_read_lag(Duration::from_millis(ms));
    }
    StatusCode::NO_CONTENT
}

/// `{late, held}`: credential requests waiting out a delay (`lateNext` or slow) and waiting in a
/// hold, so a test can wait for them to land instead of sleeping.
async fn pending(State(h): State<Handle>) -> Json<Value> {
    Json(json!({ "late": h.late_pending(), "held": h.held() }))
}
