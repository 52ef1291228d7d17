//! The documented Leaf contract, served strictly: authentication, Trimble credentials, events,
//! plus the fault-injection and request-log middleware around them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::state::{
    self, BadRefreshMode, Bearer, Counters, OnExisting, RecordedRequest, RetryAfter,
    State as Inner, User,
};

pub(crate) type Shared = Arc<Mutex<Inner>>;

/// Closes the request's connection without an answer (set per connection by the server).
#[derive(Clone)]
pub(crate) struct ConnKill(pub Arc<Notify>);

/// Who made the request, attached to responses by handlers for the request log.
#[derive(Clone)]
struct AccountLabel(String);

const CREDENTIALS: &str = "/services/usermanagement/api/users/{user}/trimble-credentials";
const EVENTS: &str = "/services/usermanagement/api/users/{user}/trimble-credentials/events";

pub(crate) fn router(shared: Shared) -> Router {
    Router::new()
        .route("/api/authenticate", post(authenticate))
        .route(
            CREDENTIALS,
            get(get_credential)
                .post(create_credential)
                .delete(delete_credential),
        )
        .route(EVENTS, get(get_events))
        .merge(crate::alerts::routes())
        .merge(crate::magic_link::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            faults_and_log,
        ))
        .with_state(shared)
}

/// The JHipster-style problem+json Leaf answers errors with.
pub(crate) fn problem(status: StatusCode, detail: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = json!({
        "type": "https://www.jhipster.tech/problem/problem-with-message",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "message": format!("error.http.{}", status.as_u16()),
    });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

pub(crate) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

enum Decision {
    Pass,
    Outage,
    Drop,
    RateLimit(RetryAfter),
    Unauthorized,
    Fail(u16, Option<String>),
}

/// Applies latency and injected faults, then logs the request with its final status.
async fn faults_and_log(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let kill = request.extensions().get::<ConnKill>().cloned();
    let is_login = path == "/api/authenticate";
    // Logged as the arrival time: what a rate limit is about.
    let arrived = jiff::Timestamp::now();
    let arrived_at = tokio::time::Instant::now();
    let (latency, decision, caller, detain) = {
        let mut state = lock(&shared);
        state.counters.requests += 1;
        let caller = match bearer(request.headers()) {
            None => "none".to_string(),
            Some(token) => match state.check_bearer(token) {
                Bearer::Valid(label) => label,
                Bearer::Invalid => "unknown".to_string(),
            },
        };
        let faults = state.faults.clone();
        let targeted = faults
            .path_filter
            .as_deref()
            .is_none_or(|filter| path.contains(filter))
            && faults
                .method_filter
                .as_deref()
                .is_none_or(|filter| filter.eq_ignore_ascii_case(&method));
        let decision = if faults.outage {
            Decision::Outage
        } else if !targeted {
            Decision::Pass
        } else if faults.drop_next > 0 {
            state.faults.drop_next -= 1;
            Decision::Drop
        } else if faults.rate_limit_next > 0 {
            state.faults.rate_limit_next -= 1;
            Decision::RateLimit(faults.retry_after.clone())
        } else if faults.unauthorized_next > 0 && !is_login {
            state.faults.unauthorized_next -= 1;
            Decision::Unauthorized
        } else {
            state.fault_counter += 1;
            let nth = faults.fail_every_nth > 0
                && state
                    .fault_counter
                    .is_multiple_of(u64::from(faults.fail_every_nth));
            let share = faults.fail_share > 0.0 && state.next_random() < faults.fail_share;
            if nth || share {
                Decision::Fail(faults.fail_status, faults.fail_body.clone())
            } else {
                Decision::Pass
            }
        };
        // Only the credential and Magic Link endpoints are detained or fail after apply (a login
        // is a POST too), and only requests that will be processed: one answered with a fault
        // above is not, so it uses up no `late_next` / `fail_after_apply_next`.
        let detain = if detainable(&path) && matches!(decision, Decision::Pass) {
            detain(&mut state, &method)
        } else {
            Detain::default()
        };
        if detain.delay.is_some() {
            state.late_pending += 1;
        }
        (faults.latency, decision, caller, detain)
    };
    // Made right after the increment, before any await: if the client gives up before the
    // detached task holds it (this future is dropped), the count still goes back down.
    let pending = detain.delay.map(|_| LatePending(shared.clone()));
    // A credential write that reached Leaf is processed whatever its client does (a server does
    // not cancel a POST because the caller hung up): it runs detached, latency included.
    let credential_write = detainable(&path)
        && (method.eq_ignore_ascii_case("POST") || method.eq_ignore_ascii_case("DELETE"));
    let detached = matches!(decision, Decision::Pass)
        && (detain.hold || detain.delay.is_some() || credential_write);
    if !detached && !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if detached {
        // Read the whole body before waiting: a request that reached Leaf is processed whatever
        // its client does, and the part of a body not yet read when the client hangs up would be
        // lost with the connection.
        let request = match buffered(request).await {
            Ok(request) => request,
            Err(response) => return log_answer(&shared, response, method, path, caller, arrived),
        };
        // Detached: the task runs to the end even when the client disconnects and this future is
        // dropped (a write that lands after the client's timeout).
        let task_shared = shared.clone();
        let task = tokio::spawn(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if detain.hold {
                wait_for_release(&task_shared, &method).await;
            }
            if let Some(delay) = detain.delay {
                sleep_from(arrived_at, delay).await;
            }
            let response = next.run(request).await;
            let response = after_processing(&task_shared, response, detain);
            let response = log_answer(&task_shared, response, method, path, caller, arrived);
            // Only now: a test waiting for no late request sees its effects, its log and counters.
            drop(pending);
            response
        });
        return task.await.unwrap_or_else(|_| {
            problem(StatusCode::INTERNAL_SERVER_ERROR, "stand-in task failed")
        });
    }
    let response = match decision {
        Decision::Pass => {
            let response = next.run(request).await;
            after_processing(&shared, response, detain)
        }
        Decision::Outage => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Leaf is down for maintenance",
        ),
        Decision::Unauthorized => {
            problem(StatusCode::UNAUTHORIZED, "Full authentication is required")
        }
        Decision::Fail(status, body) => {
            lock(&shared).counters.injected_failures += 1;
            injected_failure(status, body)
        }
        Decision::RateLimit(retry_after) => {
            let mut response = problem(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
            let value = match retry_after {
                RetryAfter::None => None,
                RetryAfter::Seconds(s) => Some(s.to_string()),
                RetryAfter::DateIn(s) => Some(state::http_date(
                    SystemTime::now() + std::time::Duration::from_secs(s),
                )),
                RetryAfter::Raw(raw) => Some(raw),
            };
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Decision::Drop => {
            {
                let mut state = lock(&shared);
                state.counters.dropped += 1;
                record(&mut state, method, path, None, caller, arrived);
            }
            if let Some(kill) = kill {
                kill.0.notify_one();
                // The server drops this connection (and this future) as soon as it sees the signal.
                std::future::pending::<()>().await;
            }
            return problem(StatusCode::SERVICE_UNAVAILABLE, "connection drop requested");
        }
    };
    log_answer(&shared, response, method, path, caller, arrived)
}

/// The endpoints whose requests `late_next`, `fail_after_apply_next`, `hold` and `slow` apply
/// to, and whose writes run to the end when their client gives up: the Trimble credentials (and
/// their events) and the Magic Links. Not logins, webhooks or app keys.
fn detainable(path: &str) -> bool {
    path.contains("/trimble-credentials") || path.starts_with("/services/widgets/api/magic-link/")
}

/// An injected error answer: `body` when given (JSON is sent as problem+json), else a plain-text
/// line. A status that is not a valid HTTP status is sent as 503.
fn injected_failure(status: u16, body: Option<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    match body {
        Some(body) if body.trim_start().starts_with('{') => {
            let mut response = (status, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            );
            response
        }
        Some(body) => (status, body).into_response(),
        // Plain text on purpose: Leaf's gateways do not always answer problem+json.
        None => (status, "upstream failure (injected by leaf-standin)").into_response(),
    }
}

/// What happens to a credential request that will be processed, besides processing it.
#[derive(Clone, Copy, Default)]
struct Detain {
    /// Wait for [`crate::Handle::release_held`] first.
    hold: bool,
    /// Process (and answer) only this long after arrival: from `late_next`, else `slow_method`.
    delay: Option<Duration>,
    /// The delay comes from `late_next` (counted in `Counters::late`).
    late: bool,
    /// Once processed, answer this status instead (`fail_after_apply_next`).
    fail_after_apply: Option<u16>,
}

/// Decides (and uses up the next-N faults) for a credential request with `method`.
fn detain(state: &mut Inner, method: &str) -> Detain {
    let late = state::take_next(&mut state.faults.late_next, method).map(|late| late.delay);
    let slow = state
        .slow_method
        .as_ref()
        .filter(|(m, _)| m.eq_ignore_ascii_case(method))
        .map(|(_, by)| *by);
    Detain {
        hold: state
            .hold_method
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(method)),
        delay: late.or(slow),
        late: late.is_some(),
        fail_after_apply: state::take_next(&mut state.faults.fail_after_apply_next, method)
            .map(|fail| fail.status),
    }
}

/// Counts a request in `State::late_pending` while it waits out its delay; dropped once it has
/// been processed and logged, or when it is abandoned before its detached task started.
struct LatePending(Shared);

impl Drop for LatePending {
    fn drop(&mut self) {
        let mut state = lock(&self.0);
        state.late_pending = state.late_pending.saturating_sub(1);
    }
}

/// Sleeps until `delay` after `from`; a delay too long to represent never ends.
async fn sleep_from(from: tokio::time::Instant, delay: Duration) {
    match from.checked_add(delay) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Largest request body read ahead for a detained request (credential bodies are tiny).
const MAX_BODY: usize = 1 << 20;

/// The request with its whole body read into memory, or the answer when it cannot be read.
async fn buffered(request: Request) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => Ok(Request::from_parts(parts, axum::body::Body::from(bytes))),
        Err(_) => Err(problem(
            StatusCode::BAD_REQUEST,
            "Request body could not be read",
        )),
    }
}

/// After a request was processed: counts a late answer, and swaps the answer for an injected
/// error when the request was to fail after apply (a gateway that timed out a backend which
/// finished the work: whatever the backend answered, the client gets the error).
fn after_processing(shared: &Shared, response: Response, detain: Detain) -> Response {
    let mut state = lock(shared);
    if detain.late {
        state.counters.late += 1;
    }
    let Some(status) = detain.fail_after_apply else {
        return response;
    };
    state.counters.failed_after_apply += 1;
    state.counters.injected_failures += 1;
    let mut failure = injected_failure(status, state.faults.fail_body.clone());
    // The request log still names the caller the handler identified.
    if let Some(label) = response.extensions().get::<AccountLabel>().cloned() {
        failure.extensions_mut().insert(label);
    }
    failure
}

/// Waits until requests with `method` are no longer held.
async fn wait_for_release(shared: &Shared, method: &str) {
    lock(shared).held += 1;
    loop {
        let release = lock(shared).release.clone();
        let notified = release.notified();
        tokio::pin!(notified);
        // Registered before the check, so a release between the two is not missed.
        notified.as_mut().enable();
        if !lock(shared)
            .hold_method
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(method))
        {
            break;
        }
        notified.await;
    }
    let mut state = lock(shared);
    state.held = state.held.saturating_sub(1);
}

/// Logs the answer to a request and returns it.
fn log_answer(
    shared: &Shared,
    response: Response,
    method: String,
    path: String,
    caller: String,
    arrived: jiff::Timestamp,
) -> Response {
    let caller = response
        .extensions()
        .get::<AccountLabel>()
        .map_or(caller, |label| label.0.clone());
    let status = response.status().as_u16();
    let mut state = lock(shared);
    if status == 401 {
        state.counters.unauthorized += 1;
    }
    record(&mut state, method, path, Some(status), caller, arrived);
    response
}

fn record(
    state: &mut Inner,
    method: String,
    path: String,
    status: Option<u16>,
    account: String,
    arrived: jiff::Timestamp,
) {
    state.requests.push(RecordedRequest {
        method,
        path,
        status,
        account,
        at: arrived.to_string(),
    });
}

async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "No such endpoint")
}

fn with_label(mut response: Response, label: String) -> Response {
    response.extensions_mut().insert(AccountLabel(label));
    response
}

/// Checks the bearer token: a missing, unknown or expired token is `None` (answer 401).
fn authorize(state: &Inner, headers: &HeaderMap) -> Option<String> {
    match bearer(headers).map(|token| state.check_bearer(token)) {
        Some(Bearer::Valid(label)) => Some(label),
        _ => None,
    }
}

/// The frame of every authenticated Leaf endpoint: refuse a request without a valid bearer
/// token, otherwise `count` it, run `handle` under the state lock and label the answer with the
/// account, for the request log.
pub(crate) fn authorized(
    shared: &Shared,
    headers: &HeaderMap,
    count: impl FnOnce(&mut Counters),
    handle: impl FnOnce(&mut Inner) -> Response,
) -> Response {
    let mut state = lock(shared);
    let Some(label) = authorize(&state, headers) else {
        return unauthorized();
    };
    count(&mut state.counters);
    let response = handle(&mut state);
    with_label(response, label)
}

fn unauthorized() -> Response {
    problem(
        StatusCode::UNAUTHORIZED,
        "Full authentication is required to access this resource",
    )
}

/// `POST /api/authenticate` `{username, password, rememberMe}` -> `{id_token}`.
async fn authenticate(State(shared): State<Shared>, body: String) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_str::<Value>(&body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Request body must be a JSON object",
        );
    };
    let (Some(username), Some(password)) = (
        body.get("username").and_then(Value::as_str),
        body.get("password").and_then(Value::as_str),
    ) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "username and password are required",
        );
    };
    // Leaf's docs send rememberMe as the string "true"; some clients send a boolean.
    match body.get("rememberMe") {
        None | Some(Value::Bool(_)) | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "true" || s == "false" => {}
        Some(_) => return problem(StatusCode::BAD_REQUEST, "rememberMe must be true or false"),
    }
    let mut state = lock(&shared);
    if state
        .accounts
        .get(username)
        .is_none_or(|expected| expected != password)
    {
        state.counters.failed_logins += 1;
        return problem(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    state.counters.logins += 1;
    let token = state.issue_token(username);
    with_label(
        (StatusCode::OK, axum::Json(json!({ "id_token": token }))).into_response(),
        format!("user:{username}"),
    )
}

/// Runs `handle` on a registered Leaf user; an unknown one is Leaf's 404.
fn with_user(
    state: &mut Inner,
    user: &str,
    handle: impl FnOnce(&mut User) -> Response,
) -> Response {
    match state.user_mut(user) {
        None => problem(StatusCode::NOT_FOUND, "User not found"),
        Some(u) => handle(u),
    }
}

fn credential_json(credential: &state::StoredCredential) -> Value {
    // Like the real API: secrets and live tokens in clear, so tests prove the client drops them.
    json!({
        "id": credential.id,
        "status": credential.status,
        "createdTime": credential.created_time,
        "tokenMetadata": { "scopes": credential.scopes },
        "clientId": credential.client_id,
        "clientSecret": credential.client_secret,
        "accessToken": credential.access_token,
        "refreshToken": credential.refresh_token,
    })
}

async fn get_credential(
    State(shared): State<Shared>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized(
        &shared,
        &headers,
        |c| c.gets += 1,
        |state| read_credential(state, &user),
    )
}

/// GET of a stored credential; counts down a pending flip to UNAUTHENTICATED (bad refresh token
/// accepted at POST) and logs Leaf's event for it. Under a read lag, a write younger than the lag
/// is not visible yet: the answer is the state before it (see `state`), and the current
/// credential, which this GET did not see, keeps its pending flip.
fn read_credential(state: &mut Inner, user: &str) -> Response {
    if state.hide_credentials {
        return problem(StatusCode::NOT_FOUND, "Trimble credentials not found");
    }
    let lag = state.read_lag;
    let mut flipped = false;
    let answer = with_user(state, user, |u| {
        if let Some(past) = u.lagging_view(lag, Instant::now()) {
            return match &past.credential {
                None => problem(StatusCode::NOT_FOUND, "Trimble credentials not found"),
                Some(credential) => {
                    (StatusCode::OK, axum::Json(credential_json(credential))).into_response()
                }
            };
        }
        match u.credential.as_mut() {
            None => problem(StatusCode::NOT_FOUND, "Trimble credentials not found"),
            Some(credential) => {
                match credential.flip_after_gets {
                    Some(0) => {
                        credential.status = "UNAUTHENTICATED".to_string();
                        credential.flip_after_gets = None;
                        flipped = true;
                    }
                    Some(n) => credential.flip_after_gets = Some(n - 1),
                    None => {}
                }
                (StatusCode::OK, axum::Json(credential_json(credential))).into_response()
            }
        }
    });
    if flipped {
        // Leaf's failed token refresh at Trimble, as it would log it (the answer above already
        // shows the new status).
        let event = state.new_event(400, None, None);
        if let Some(u) = state.users.get_mut(user) {
            u.events.push(event);
        }
        if let Some(c) = state.users.get(user).and_then(|u| u.credential.clone()) {
            state.alerts.alert_credential(
                crate::alerts::CREDENTIALS_UNAUTHENTICATED,
                &c.client_id,
                &c.id,
                &c.status,
            );
        }
    }
    answer
}

async fn create_credential(
    State(shared): State<Shared>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    authorized(
        &shared,
        &headers,
        |c| c.creates += 1,
        |state| create(state, &user, &body),
    )
}

fn create(state: &mut Inner, user: &str, body: &str) -> Response {
    if state.user_mut(user).is_none() {
        return problem(StatusCode::NOT_FOUND, "User not found");
    }
    let Ok(Value::Object(body)) = serde_json::from_str::<Value>(body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Request body must be a JSON object",
        );
    };
    let mut fields = Vec::new();
    for name in ["clientId", "clientSecret", "refreshToken"] {
        match body.get(name).and_then(Value::as_str).map(str::trim) {
            Some(value) if !value.is_empty() => fields.push(value.to_string()),
            _ => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    &format!("{name} must not be empty"),
                );
            }
        }
    }
    let (client_id, client_secret, refresh_token) = (&fields[0], &fields[1], &fields[2]);
    let exists = state
        .users
        .get(user)
        .is_some_and(|u| u.credential.is_some());
    if exists {
        match state.on_existing {
            OnExisting::Conflict => {
                return problem(StatusCode::CONFLICT, "User already has Trimble credentials");
            }
            OnExisting::BadRequest => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "Trimble credentials already exist for this user",
                );
            }
            OnExisting::Replace => {}
        }
    }
    let bad = state.bad_refresh.is_bad(refresh_token);
    if bad && state.bad_refresh.mode == BadRefreshMode::Reject {
        return problem(
            StatusCode::BAD_REQUEST,
            "Invalid refresh token: Trimble refused it (invalid_grant)",
        );
    }
    let mut credential = state.new_credential(client_id, client_secret, refresh_token);
    if bad {
        credential.flip_after_gets = Some(state.bad_refresh.after_gets);
    }
    let event = state.new_event(200, None, None);
    let answer = credential_json(&credential);
    let lag = state.read_lag;
    let Some(u) = state.users.get_mut(user) else {
        // Checked above, under the same lock: cannot happen, but never panic on it.
        return problem(StatusCode::NOT_FOUND, "User not found");
    };
    u.record_write(lag, Instant::now());
    if exists {
        u.events.clear();
    }
    u.credential = Some(credential);
    u.events.push(event);
    if state.empty_create_answer {
        return StatusCode::CREATED.into_response();
    }
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn delete_credential(
    State(shared): State<Shared>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized(
        &shared,
        &headers,
        |c| c.deletes += 1,
        |state| {
            let lag = state.read_lag;
            with_user(state, &user, |u| {
                if u.credential.is_none() {
                    return problem(StatusCode::NOT_FOUND, "Trimble credentials not found");
                }
                u.record_write(lag, Instant::now());
                u.credential = None;
                // Events are gone with the credential, as documented.
                u.events.clear();
                StatusCode::NO_CONTENT.into_response()
            })
        },
    )
}

async fn get_events(
    State(shared): State<Shared>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized(
        &shared,
        &headers,
        |c| c.event_reads += 1,
        |state| {
            let lag = state.read_lag;
            // Oldest first, as stored: Leaf documents no order, so clients must sort. Under a
            // read lag, the events as they were before a write younger than the lag.
            with_user(state, &user, |u| {
                let events = match u.lagging_view(lag, Instant::now()) {
                    Some(past) => json!(past.events),
                    None => json!(u.events),
                };
                (StatusCode::OK, axum::Json(events)).into_response()
            })
        },
    )
}
