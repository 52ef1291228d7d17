//! Leaf's Magic Link service (single-provider "authentication" links, `services/widgets/api`)
//! and the Trimble app keys of the user-management service, played from the documented contract
//! (`shared/design/leaf-alerts-and-magic-link.md` §2), strictly, and where Leaf is silent with
//! a written-down choice:
//!
//! - Create (`POST .../magic-link/users/{leafUserId}/authentication`) answers **201** (Leaf does
//!   not say 200 or 201) with the documented `{"id","leafUserId","link","expiresAt"}`; `expiresAt`
//!   with nanoseconds as in Leaf's create example, while GET shows milliseconds as in Leaf's GET
//!   example. Refusals, in this order: 404 unknown user (auto-create respected); 400 body not a
//!   JSON object; 400 `provider` not one of the documented seven; 400 `expiresIn` not an
//!   integer in 900..=31536000 (absent: 900); 400 `settings` not an object; 400 `Application
//!   info for provider {p} not found` when no app key is registered for it (the documented
//!   prerequisite; Leaf's real text is unknown). The widgets service answers errors as
//!   `{"message": ...}`, not problem+json (a second service with its own shape: clients must not
//!   rely on one).
//! - Ids are random UUIDs (unguessable; UUID-shaped like Leaf's other ids, which the client's
//!   generic scrubbing deliberately keeps, so only its explicit redaction protects them).
//! - `maxUsage` is 3 (Leaf's example) for every new link; create cannot set it, the control
//!   [`Handle::set_magic_link_max_usage`] can (for links created afterwards).
//! - An expired link is still returned by GET and the list (with `expiresAt` in the past) until
//!   deleted. DELETE answers 200 with an empty body; 404 for an unknown or deleted id.
//! - The grower's side is control-only: `open` counts a use (410 when expired or used up);
//!   `complete` opens and then, as Leaf's user-management does after Trimble's consent, creates
//!   the Trimble credential on the link's user with the registered app's `clientId`. Leaf keeps
//!   one Trimble credential per user, so a user who already has one gets it **replaced** (new id,
//!   events restarted), whatever `OnExisting` says: the grower's consent is not a client POST.
//! - App keys (`/services/usermanagement/api/app-keys/Trimble[/{appName}]`): GET never shows
//!   `clientId`/`clientSecret`; POST of an existing name is 409, PUT or DELETE of an unknown one
//!   404; POST answers 201 and PUT 200 with the GET shape, DELETE 200 with an empty body.
//!   Errors there are problem+json, like the rest of user-management.
//!
//! Nothing here logs: the request log records paths (with ids) as Leaf's access log would, and
//! only the controls show links.

use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::handle::Handle;
use crate::leaf_api::{Shared, authorized, lock, problem};
use crate::state::{State as Inner, leaf_time};

/// Base path of the authentication links.
pub const MAGIC_LINKS: &str = "/services/widgets/api/magic-link/authentication";
/// Create for an existing Leaf user.
pub const MAGIC_LINK_CREATE: &str = "/services/widgets/api/magic-link/users/{user}/authentication";
/// Base path of the Trimble app keys.
pub const APP_KEYS: &str = "/services/usermanagement/api/app-keys/Trimble";
/// Where Leaf's links point.
pub const LINK_ORIGIN: &str = "https://magic-link.withleaf.io";
/// Leaf's documented bounds of `expiresIn` (seconds): 900 (also the default) to one year.
pub const MIN_EXPIRES_IN: u64 = 900;
pub const MAX_EXPIRES_IN: u64 = 31_536_000;
/// `maxUsage` of new links unless changed (Leaf's example value).
pub const DEFAULT_MAX_USAGE: u64 = 3;
/// The providers Leaf documents for `provider`.
pub const PROVIDERS: &[&str] = &[
    "JohnDeere",
    "ClimateFieldView",
    "CNHI",
    "AgLeader",
    "Trimble",
    "RavenSlingshot",
    "Stara",
];

/// A Magic Link as the stand-in holds it, deleted ones included (for tests to inspect).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMagicLink {
    pub id: String,
    pub link: String,
    pub leaf_user_id: String,
    pub provider: String,
    #[serde(serialize_with = "as_text")]
    pub created_at: jiff::Timestamp,
    #[serde(serialize_with = "as_text")]
    pub expires_at: jiff::Timestamp,
    #[serde(serialize_with = "as_text_opt")]
    pub last_accessed_at: Option<jiff::Timestamp>,
    pub usage_count: u64,
    pub max_usage: u64,
    pub settings: Value,
    pub deleted: bool,
}

fn as_text<S: serde::Serializer>(at: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_string())
}

fn as_text_opt<S: serde::Serializer>(
    at: &Option<jiff::Timestamp>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&at.to_string()),
        None => s.serialize_none(),
    }
}

impl StoredMagicLink {
    pub fn is_expired(&self, now: jiff::Timestamp) -> bool {
        self.expires_at <= now
    }

    pub fn is_used_up(&self) -> bool {
        self.usage_count >= self.max_usage
    }

    /// The documented GET shape (milliseconds, as in Leaf's GET example).
    fn get_json(&self) -> Value {
        json!({
            "id": self.id,
            "link": self.link,
            "createdAt": millis(self.created_at),
            "expiresAt": millis(self.expires_at),
            "lastAccessedAt": self.last_accessed_at.map(millis),
            "leafUserId": self.leaf_user_id,
            "maxUsage": self.max_usage,
            "usageCount": self.usage_count,
            "widget": "AUTHENTICATION",
            "settings": self.settings,
            "provider": self.provider,
        })
    }
}

/// A registered Trimble application, secrets included (what Leaf holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredAppKey {
    pub app_name: String,
    pub application_name: String,
    pub client_id: String,
    pub client_secret: String,
    pub created_time: String,
}

impl StoredAppKey {
    /// The documented GET shape: never the client id or secret.
    fn get_json(&self) -> Value {
        json!({
            "provider": "Trimble",
            "appName": self.app_name,
            "clientEnvironment": null,
            "createdTime": self.created_time,
        })
    }
}

/// The Magic Link part of the stand-in's state.
#[derive(Debug)]
pub(crate) struct MagicLinkState {
    pub links: Vec<StoredMagicLink>,
    pub app_keys: Vec<StoredAppKey>,
    pub max_usage: u64,
}

impl Default for MagicLinkState {
    fn default() -> Self {
        Self {
            links: Vec::new(),
            app_keys: Vec::new(),
            max_usage: DEFAULT_MAX_USAGE,
        }
    }
}

impl MagicLinkState {
    fn live(&self, id: &str) -> Option<&StoredMagicLink> {
        self.links.iter().find(|l| l.id == id && !l.deleted)
    }

    fn live_mut(&mut self, id: &str) -> Option<&mut StoredMagicLink> {
        self.links.iter_mut().find(|l| l.id == id && !l.deleted)
    }
}

/// Why the grower could not use a link.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefused {
    #[error("no such Magic Link")]
    Unknown,
    #[error("the Magic Link has expired")]
    Expired,
    #[error("the Magic Link has been used its maximum number of times")]
    UsedUp,
    #[error("no Trimble application is registered any more")]
    NoAppKey,
    #[error("the link's Leaf user no longer exists")]
    UserGone,
}

fn millis(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S.%3fZ").to_string()
}

fn nanos(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

/// A random (version 4) UUID.
fn random_uuid() -> String {
    let bits: u128 = rand::random();
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The widgets service's error shape.
fn message(status: StatusCode, text: &str) -> Response {
    let mut response = (status, json!({ "message": text }).to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(MAGIC_LINK_CREATE, post(create))
        .route(MAGIC_LINKS, get(list))
        .route(
            &format!("{MAGIC_LINKS}/{{id}}"),
            get(get_one).delete(delete),
        )
        .route(APP_KEYS, get(list_app_keys))
        .route(
            &format!("{APP_KEYS}/{{name}}"),
            get(get_app_key)
                .post(create_app_key)
                .put(update_app_key)
                .delete(delete_app_key),
        )
}

async fn create(
    State(shared): State<Shared>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    authorized(&shared, &headers, |_| {}, |s| create_link(s, &user, &body))
}

fn create_link(state: &mut Inner, user: &str, body: &str) -> Response {
    if state.user_mut(user).is_none() {
        return message(StatusCode::NOT_FOUND, "Leaf user not found");
    }
    let Ok(Value::Object(body)) = serde_json::from_str::<Value>(body) else {
        return message(
            StatusCode::BAD_REQUEST,
            "Request body must be a JSON object",
        );
    };
    let provider = match body.get("provider").and_then(Value::as_str) {
        Some(p) if PROVIDERS.contains(&p) => p.to_string(),
        _ => {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("provider must be one of {}", PROVIDERS.join(", ")),
            );
        }
    };
    let expires_in = match body.get("expiresIn") {
        None | Some(Value::Null) => MIN_EXPIRES_IN,
        Some(value) => match value.as_u64() {
            Some(n) if (MIN_EXPIRES_IN..=MAX_EXPIRES_IN).contains(&n) => n,
            _ => {
                return message(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "expiresIn must be an integer between {MIN_EXPIRES_IN} and {MAX_EXPIRES_IN}"
                    ),
                );
            }
        },
    };
    let settings = match body.get("settings") {
        None | Some(Value::Null) => json!({}),
        Some(settings @ Value::Object(_)) => settings.clone(),
        Some(_) => return message(StatusCode::BAD_REQUEST, "settings must be an object"),
    };
    // Only Trimble app keys exist here: any other provider has no application info.
    if provider != "Trimble" || state.magic.app_keys.is_empty() {
        return message(
            StatusCode::BAD_REQUEST,
            &format!("Application info for provider {provider} not found"),
        );
    }
    let now = jiff::Timestamp::now();
    let id = random_uuid();
    let stored = StoredMagicLink {
        link: format!("{LINK_ORIGIN}/{id}"),
        id,
        leaf_user_id: user.to_string(),
        provider,
        created_at: now,
        expires_at: now
            .checked_add(jiff::SignedDuration::from_secs(expires_in as i64))
            .unwrap_or(now),
        last_accessed_at: None,
        usage_count: 0,
        max_usage: state.magic.max_usage,
        settings,
        deleted: false,
    };
    let answer = json!({
        "id": stored.id,
        "leafUserId": stored.leaf_user_id,
        "link": stored.link,
        "expiresAt": nanos(stored.expires_at),
    });
    state.magic.links.push(stored);
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn list(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    authorized(
        &shared,
        &headers,
        |_| {},
        |s| {
            let all: Vec<Value> = s
                .magic
                .links
                .iter()
                .filter(|l| !l.deleted)
                .map(StoredMagicLink::get_json)
                .collect();
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
        |s| match s.magic.live(&id) {
            Some(link) => (StatusCode::OK, Json(link.get_json())).into_response(),
            None => message(StatusCode::NOT_FOUND, "Magic link not found"),
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
        |s| match s.magic.live_mut(&id) {
            Some(link) => {
                link.deleted = true;
                StatusCode::OK.into_response()
            }
            None => message(StatusCode::NOT_FOUND, "Magic link not found"),
        },
    )
}

async fn list_app_keys(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    authorized(
        &shared,
        &headers,
        |_| {},
        |s| {
            let all: Vec<Value> = s
                .magic
                .app_keys
                .iter()
                .map(StoredAppKey::get_json)
                .collect();
            (StatusCode::OK, Json(Value::Array(all))).into_response()
        },
    )
}

async fn get_app_key(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized(
        &shared,
        &headers,
        |_| {},
        |s| match s.magic.app_keys.iter().find(|k| k.app_name == name) {
            Some(key) => (StatusCode::OK, Json(key.get_json())).into_response(),
            None => problem(StatusCode::NOT_FOUND, "Application info not found"),
        },
    )
}

/// The body of an app key POST or PUT: three non-empty strings; else why not (a 400 detail).
fn app_key_body(body: &str) -> Result<[String; 3], String> {
    let Ok(Value::Object(body)) = serde_json::from_str::<Value>(body) else {
        return Err("Request body must be a JSON object".to_string());
    };
    let field = |name: &str| match body.get(name).and_then(Value::as_str).map(str::trim) {
        Some(value) if !value.is_empty() => Ok(value.to_string()),
        _ => Err(format!("{name} must not be empty")),
    };
    Ok([
        field("applicationName")?,
        field("clientId")?,
        field("clientSecret")?,
    ])
}

async fn create_app_key(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    authorized(
        &shared,
        &headers,
        |_| {},
        |s| {
            let [application_name, client_id, client_secret] = match app_key_body(&body) {
                Ok(fields) => fields,
                Err(detail) => return problem(StatusCode::BAD_REQUEST, &detail),
            };
            if s.magic.app_keys.iter().any(|k| k.app_name == name) {
                return problem(
                    StatusCode::CONFLICT,
                    "Application info already exists for this name",
                );
            }
            let key = StoredAppKey {
                app_name: name,
                application_name,
                client_id,
                client_secret,
                created_time: leaf_time(SystemTime::now()),
            };
            let answer = key.get_json();
            s.magic.app_keys.push(key);
            (StatusCode::CREATED, Json(answer)).into_response()
        },
    )
}

async fn update_app_key(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    authorized(
        &shared,
        &headers,
        |_| {},
        |s| {
            let [application_name, client_id, client_secret] = match app_key_body(&body) {
                Ok(fields) => fields,
                Err(detail) => return problem(StatusCode::BAD_REQUEST, &detail),
            };
            match s.magic.app_keys.iter_mut().find(|k| k.app_name == name) {
                Some(key) => {
                    key.application_name = application_name;
                    key.client_id = client_id;
                    key.client_secret = client_secret;
                    (StatusCode::OK, Json(key.get_json())).into_response()
                }
                None => problem(StatusCode::NOT_FOUND, "Application info not found"),
            }
        },
    )
}

async fn delete_app_key(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized(
        &shared,
        &headers,
        |_| {},
        |s| {
            let before = s.magic.app_keys.len();
            s.magic.app_keys.retain(|k| k.app_name != name);
            if s.magic.app_keys.len() < before {
                StatusCode::OK.into_response()
            } else {
                problem(StatusCode::NOT_FOUND, "Application info not found")
            }
        },
    )
}

/// The grower opens the link's page: one use counted, refused when expired or used up.
fn open(state: &mut Inner, id: &str) -> Result<(), LinkRefused> {
    let now = jiff::Timestamp::now();
    let link = state.magic.live_mut(id).ok_or(LinkRefused::Unknown)?;
    if link.is_expired(now) {
        return Err(LinkRefused::Expired);
    }
    if link.is_used_up() {
        return Err(LinkRefused::UsedUp);
    }
    link.usage_count += 1;
    link.last_accessed_at = Some(now);
    Ok(())
}

/// The grower opens the link and completes Trimble's consent: Leaf creates (or replaces) the
/// Trimble credential of the link's user, with the registered app's client. Returns its id.
fn complete(state: &mut Inner, id: &str) -> Result<String, LinkRefused> {
    let link = state.magic.live(id).ok_or(LinkRefused::Unknown)?.clone();
    // Checked before the use is counted: a consent that cannot land should not use the link up.
    let app = state
        .magic
        .app_keys
        .first()
        .cloned()
        .ok_or(LinkRefused::NoAppKey)?;
    if !state.users.contains_key(&link.leaf_user_id) {
        return Err(LinkRefused::UserGone);
    }
    open(state, id)?;
    let n = state.next_id();
    let mut credential = state.new_credential(
        &app.client_id,
        &app.client_secret,
        &format!("magic-link-consent-refresh-{n}"),
    );
    // Not the refresh token a client would have POSTed: no one submitted one.
    credential.submitted_refresh_token = String::new();
    let event = state.new_event(200, None, None);
    let lag = state.read_lag;
    let credential_id = credential.id.clone();
    let user = state
        .users
        .get_mut(&link.leaf_user_id)
        .ok_or(LinkRefused::UserGone)?;
    user.record_write(lag, std::time::Instant::now());
    if user.credential.is_some() {
        // One Trimble credential per user: the consent replaces it, and its events go with it.
        user.events.clear();
    }
    user.credential = Some(credential);
    user.events.push(event);
    Ok(credential_id)
}

impl Handle {
    fn magic<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut state = lock(&self.shared);
        f(&mut state)
    }

    /// Registers (or replaces) the Trimble app `app_name` with this client id (and a generated
    /// secret), as `POST .../app-keys/Trimble/{appName}` would.
    pub fn register_app_key(&self, app_name: &str, client_id: &str) {
        self.magic(|s| {
            s.magic.app_keys.retain(|k| k.app_name != app_name);
            s.magic.app_keys.push(StoredAppKey {
                app_name: app_name.to_string(),
                application_name: app_name.to_string(),
                client_id: client_id.to_string(),
                client_secret: format!("app-client-secret-{app_name}-0123456789"),
                created_time: leaf_time(SystemTime::now()),
            });
        });
    }

    /// Removes the Trimble app `app_name`; false when there was none.
    pub fn remove_app_key(&self, app_name: &str) -> bool {
        self.magic(|s| {
            let before = s.magic.app_keys.len();
            s.magic.app_keys.retain(|k| k.app_name != app_name);
            s.magic.app_keys.len() < before
        })
    }

    /// The registered Trimble apps, secrets included.
    pub fn app_keys(&self) -> Vec<StoredAppKey> {
        self.magic(|s| s.magic.app_keys.clone())
    }

    /// Every Magic Link created so far, deleted ones included, oldest first.
    pub fn magic_links(&self) -> Vec<StoredMagicLink> {
        self.magic(|s| s.magic.links.clone())
    }

    /// The grower opens the link: `usageCount` + 1, `lastAccessedAt` now.
    pub fn open_magic_link(&self, id: &str) -> Result<(), LinkRefused> {
        self.magic(|s| open(s, id))
    }

    /// The grower opens the link and completes Trimble's consent: Leaf creates the Trimble
    /// credential of the link's user (replacing the one it had). Returns the credential's id.
    pub fn complete_magic_link(&self, id: &str) -> Result<String, LinkRefused> {
        self.magic(|s| complete(s, id))
    }

    /// `maxUsage` of links created from now on (3 unless changed).
    pub fn set_magic_link_max_usage(&self, max_usage: u64) {
        self.magic(|s| s.magic.max_usage = max_usage);
    }

    /// Moves the link's `expiresAt` one second into the past; false when there is no such live
    /// link.
    pub fn expire_magic_link(&self, id: &str) -> bool {
        self.magic(|s| match s.magic.live_mut(id) {
            Some(link) => {
                link.expires_at = jiff::Timestamp::now()
                    .checked_sub(jiff::SignedDuration::from_secs(1))
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                true
            }
            None => false,
        })
    }
}

pub(crate) fn control_routes() -> Router<Handle> {
    Router::new()
        .route("/_standin/magic-links", get(control_links))
        .route("/_standin/magic-links/settings", post(control_settings))
        .route("/_standin/magic-links/{id}/open", post(control_open))
        .route(
            "/_standin/magic-links/{id}/complete",
            post(control_complete),
        )
        .route("/_standin/magic-links/{id}/expire", post(control_expire))
        .route(
            "/_standin/app-keys",
            get(|State(h): State<Handle>| async move { Json(json!(h.app_keys())) }),
        )
        .route(
            "/_standin/app-keys/{name}",
            post(control_register).delete(control_remove),
        )
}

fn refused(why: LinkRefused) -> Response {
    let status = match why {
        LinkRefused::Unknown => StatusCode::NOT_FOUND,
        LinkRefused::Expired | LinkRefused::UsedUp => StatusCode::GONE,
        LinkRefused::NoAppKey | LinkRefused::UserGone => StatusCode::CONFLICT,
    };
    (status, Json(json!({ "message": why.to_string() }))).into_response()
}

async fn control_links(State(h): State<Handle>) -> Json<Value> {
    Json(json!(h.magic_links()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    max_usage: u64,
}

async fn control_settings(State(h): State<Handle>, Json(s): Json<Settings>) -> StatusCode {
    h.set_magic_link_max_usage(s.max_usage);
    StatusCode::NO_CONTENT
}

async fn control_open(State(h): State<Handle>, Path(id): Path<String>) -> Response {
    match h.open_magic_link(&id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(why) => refused(why),
    }
}

async fn control_complete(State(h): State<Handle>, Path(id): Path<String>) -> Response {
    match h.complete_magic_link(&id) {
        Ok(credential_id) => Json(json!({ "credentialId": credential_id })).into_response(),
        Err(why) => refused(why),
    }
}

async fn control_expire(State(h): State<Handle>, Path(id): Path<String>) -> StatusCode {
    if h.expire_magic_link(&id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Register {
    client_id: String,
}

async fn control_register(
    State(h): State<Handle>,
    Path(name): Path<String>,
    Json(r): Json<Register>,
) -> StatusCode {
    h.register_app_key(&name, &r.client_id);
    StatusCode::NO_CONTENT
}

async fn control_remove(State(h): State<Handle>, Path(name): Path<String>) -> StatusCode {
    if h.remove_app_key(&name) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_uuids_are_version_4_and_differ() {
        let a = random_uuid();
        let b = random_uuid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4", "{a}");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn times_follow_leafs_two_examples() {
        let at: jiff::Timestamp = "2024-10-26T14:23:56.584123Z".parse().unwrap();
        assert_eq!(millis(at), "2024-10-26T14:23:56.584Z");
        assert_eq!(nanos(at), "2024-10-26T14:23:56.584123000Z");
    }
}
