//! Leaf's Magic Link API (`{origin}/services/widgets/api/magic-link/...`) for single-provider
//! (Trimble) authentication links, and the Trimble app keys of the user-management service
//! (`{origin}/services/usermanagement/api/app-keys/Trimble`), the documented prerequisite of a
//! Trimble link. Same token cache, rate limit, metrics and error classification as the
//! credential calls (everything goes through [`LeafClient::authorized`] / `guarded`).
//!
//! A Magic Link is a bearer credential: whoever holds `https://magic-link.withleaf.io/{id}` can
//! connect a Trimble account to the grower's Leaf user. Leaf documents the id as the last path
//! segment of the link, so the id is as secret as the link: both are parsed straight into
//! `SecretString`s, and every error of these calls has both removed from its text
//! (`without_values`), and with them any word that looks like a link or a UUID-shaped id
//! ([`without_link_ids`]: an error may quote a link this call does not know, such as another
//! entry of the list, and the generic scrubbing keeps UUIDs). The request paths that carry the id are never logged or quoted: the
//! client logs only operation, status and latency, and transport errors keep only the innermost
//! cause, which names no URL.

use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::account::LeafAccount;
use super::client::{Deleted, LeafClient, Operation, SendGuard};
use super::error::LeafError;
use super::types::parse_time;

/// The provider of every link this client creates (Leaf's spelling).
pub const PROVIDER: &str = "Trimble";

/// Longest id, user id, provider, widget or app name accepted from Leaf; longer ones are
/// dropped (an entry whose id is dropped is unusable, see [`parse_magic_link`]).
const MAX_FIELD_CHARS: usize = 256;
/// Longest link accepted from Leaf.
const MAX_LINK_CHARS: usize = 2048;

/// Optional look of the Magic Link page (Leaf's `settings`); `None` fields are not sent, so
/// Leaf's defaults apply.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MagicLinkSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_logo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background_color: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_leaf_user_name: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnect_enabled: Option<bool>,
}

impl MagicLinkSettings {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A link to create. The provider is always [`PROVIDER`].
#[derive(Clone, Copy, Debug)]
pub struct NewMagicLink<'a> {
    /// Leaf accepts 900 (its default and minimum) to about one year; sent as given, Leaf judges.
    pub expires_in_seconds: u64,
    pub settings: &'a MagicLinkSettings,
}

/// A Magic Link record as Leaf returns it. The link URL is a bearer credential, and the id is
/// its last path segment: both are `SecretString`s, so `Debug` shows neither.
#[derive(Clone, Debug)]
pub struct MagicLink {
    /// Never empty (an answer without a usable id is refused or skipped).
    pub id: SecretString,
    /// Empty when Leaf's GET or list answer had none (a create answer without one is refused).
    pub link: SecretString,
    pub leaf_user_id: Option<String>,
    pub created_at: Option<jiff::Timestamp>,
    pub expires_at: Option<jiff::Timestamp>,
    /// `None` until the grower has opened it (Leaf sends null or leaves it out).
    pub last_accessed_at: Option<jiff::Timestamp>,
    pub usage_count: Option<u64>,
    pub max_usage: Option<u64>,
    pub provider: Option<String>,
    /// `AUTHENTICATION` for single-provider links (`PROVIDER`, `FILEUPLOAD` for the others).
    pub widget: Option<String>,
}

impl MagicLink {
    /// Whether Leaf's `expiresAt` is at or before `now` (unknown expiry: false).
    pub fn is_expired(&self, now: jiff::Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whether the grower can no longer use it: `usageCount >= maxUsage` (unknown: false).
    pub fn is_used_up(&self) -> bool {
        matches!((self.usage_count, self.max_usage), (Some(used), Some(max)) if used >= max)
    }
}

/// Leaf's record of a registered Trimble application: never its `clientId`/`clientSecret`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppKey {
    pub app_name: String,
    /// As Leaf sent it.
    pub created_time: Option<String>,
}

/// A text field: strings (and numbers, for ids) kept when short and printable; anything else,
/// `None`. Parsing never fails on a field's type: Leaf's answers are external input.
fn text(value: Option<&Value>) -> Option<String> {
    let text = match value? {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty()
        && text.chars().count() <= MAX_FIELD_CHARS
        && !text.chars().any(char::is_control))
    .then_some(text)
}

/// A timestamp: Leaf's text formats (see `types::parse_time`), or a number of epoch
/// milliseconds.
fn time(value: Option<&Value>) -> Option<jiff::Timestamp> {
    match value? {
        Value::String(s) if s.chars().count() <= 64 => parse_time(s),
        Value::Number(n) => n
            .as_i64()
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()),
        _ => None,
    }
}

/// A count: a non-negative integer, or a string holding one.
fn count(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// One Magic Link record; `None` when it has no usable id (nothing can be fetched or deleted
/// without one). A link that is not one printable line is dropped (empty).
pub(crate) fn parse_magic_link(value: &Value) -> Option<MagicLink> {
    let object = value.as_object()?;
    let id = text(object.get("id")).filter(|id| !id.contains(['/', '?', '#', ' ']))?;
    let link = match object.get("link") {
        Some(Value::String(link))
            if link.chars().count() <= MAX_LINK_CHARS
                && !link.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            link.clone()
        }
        _ => String::new(),
    };
    Some(MagicLink {
        id: SecretString::from(id),
        link: SecretString::from(link),
        leaf_user_id: text(object.get("leafUserId")),
        created_at: time(object.get("createdAt")),
        expires_at: time(object.get("expiresAt")),
        last_accessed_at: time(object.get("lastAccessedAt")),
        usage_count: count(object.get("usageCount")),
        max_usage: count(object.get("maxUsage")),
        provider: text(object.get("provider")),
        widget: text(object.get("widget")),
    })
}

/// A list answer: a bare array, or an object wrapping one (`content`, `items`, `data`, ...).
/// Entries without a usable id are skipped. `None` when the body is neither.
fn list_entries(body: &str, keys: &[&str]) -> Option<Vec<Value>> {
    if body.trim().is_empty() {
        return Some(Vec::new());
    }
    match serde_json::from_str::<Value>(body).ok()? {
        Value::Array(entries) => Some(entries),
        Value::Object(object) => keys
            .iter()
            .find_map(|key| object.get(*key).and_then(Value::as_array).cloned()),
        _ => None,
    }
}

/// `GET /magic-link/authentication`'s answer, parsed.
pub(crate) fn parse_magic_link_list(body: &str) -> Option<Vec<MagicLink>> {
    let entries = list_entries(body, &["content", "items", "data", "magicLinks", "links"])?;
    Some(entries.iter().filter_map(parse_magic_link).collect())
}

/// One app key record; only `appName` (required) and `createdTime` are read, whatever else Leaf
/// echoes (a client secret included) is never parsed.
fn parse_app_key(value: &Value) -> Option<AppKey> {
    let object = value.as_object()?;
    if let Some(provider) = text(object.get("provider"))
        && !provider.eq_ignore_ascii_case(PROVIDER)
    {
        return None;
    }
    Some(AppKey {
        app_name: text(
            object
                .get("appName")
                .or_else(|| object.get("applicationName")),
        )?,
        created_time: text(object.get("createdTime")).filter(|t| t.chars().count() <= 64),
    })
}

/// An app keys answer: one record, a bare array, or an object wrapping an array.
pub(crate) fn parse_app_keys(body: &str) -> Option<Vec<AppKey>> {
    if body.trim().is_empty() {
        return Some(Vec::new());
    }
    let value = serde_json::from_str::<Value>(body).ok()?;
    if value.get("appName").is_some() {
        return Some(parse_app_key(&value).into_iter().collect());
    }
    let entries = list_entries(body, &["content", "items", "data", "appKeys"])?;
    Some(entries.iter().filter_map(parse_app_key).collect())
}

/// The error for a non-success answer, with the link's secret values removed from its text,
/// and anything else that may be a link or a link id (see [`without_link_ids`]).
fn answer_error(answer: &super::client::Answer, is_create: bool, secrets: &[&str]) -> LeafError {
    LeafError::from_answer(answer.status, &answer.headers, &answer.body, is_create)
        .without_values(secrets)
        .map_detail(without_link_ids)
}

/// Leaf's error texts may quote a link or an id this client does not know (a list's entry, the
/// link a failed create made): every word that is a Magic Link URL, names `magic-link`, or is
/// UUID-shaped (Leaf's ids are UUIDs; a Leaf user id goes too, on purpose) is replaced. The
/// generic scrubbing keeps UUIDs, which is right for user ids but not for link ids.
pub(crate) fn without_link_ids(text: String) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || "-_.:/~+%".contains(c);
    let flush = |word: &mut String, out: &mut String| {
        let lower = word.to_ascii_lowercase();
        let secret = lower.contains("magic-link")
            || lower.contains("magic_link")
            || word.split(['/', ':', '.']).any(is_uuid_like);
        out.push_str(if secret { "[REDACTED]" } else { word });
        word.clear();
    };
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Five dash-separated groups of 8-4-4-4-12 hex digits, or 32 hex digits.
fn is_uuid_like(word: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    let groups: Vec<&str> = word.split('-').collect();
    let uuid = groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| hex(g));
    uuid || (word.len() == 32 && hex(word))
}

fn invalid(what: &str) -> LeafError {
    // Never the body: Magic Link answers carry the link.
    LeafError::InvalidResponse {
        detail: format!("{what} is not the documented JSON"),
    }
}

/// The secret values of a link record, for `without_values`: the id, the link, and the link
/// without its scheme (an error text may quote it either way).
fn secrets_of<'a>(id: &'a SecretString, link: Option<&'a SecretString>) -> Vec<&'a str> {
    let mut secrets = vec![id.expose_secret()];
    if let Some(link) = link.map(ExposeSecret::expose_secret) {
        secrets.push(link);
        if let Some((_, rest)) = link.split_once("://") {
            secrets.push(rest);
        }
    }
    secrets
}

impl LeafClient {
    /// `{origin}/services/widgets/api/magic-link/{tail...}`, each part one encoded segment.
    fn magic_link_url(&self, tail: &[&str]) -> Url {
        let mut url = self.base_url().clone();
        url.path_segments_mut()
            .expect("origin is a base URL")
            .pop_if_empty()
            .extend(["services", "widgets", "api", "magic-link"])
            .extend(tail);
        url
    }

    /// `{origin}/services/usermanagement/api/app-keys/Trimble[/{appName}]`.
    fn app_keys_url(&self, app_name: Option<&str>) -> Url {
        let mut url = self.base_url().clone();
        url.path_segments_mut()
            .expect("origin is a base URL")
            .pop_if_empty()
            .extend(["services", "usermanagement", "api", "app-keys", PROVIDER])
            .extend(app_name);
        url
    }

    /// `POST .../magic-link/users/{leafUserId}/authentication` with `{"expiresIn", "provider":
    /// "Trimble", "settings"?}`. A success with an unreadable body (or without an id or link) is
    /// [`LeafError::InvalidResponse`], which counts as applied, as for `create_credential`: the
    /// link may exist and is found again by listing. 404 is [`LeafError::UserNotFound`]; other
    /// errors are classified as a credential create's. Leaf's 400 for a missing Trimble app key
    /// is [`LeafError::Rejected`] (see [`LeafClient::trimble_app_keys`]).
    pub async fn create_magic_link(
        &self,
        account: &LeafAccount,
        leaf_user_id: &str,
        request: &NewMagicLink<'_>,
        guard: &SendGuard<'_>,
    ) -> Result<MagicLink, LeafError> {
        let mut body = serde_json::json!({
            "expiresIn": request.expires_in_seconds,
            "provider": PROVIDER,
        });
        if !request.settings.is_empty() {
            body["settings"] = serde_json::to_value(request.settings)
                .expect("settings are plain strings and booleans");
        }
        let answer = self
            .guarded(
                Operation::MagicLink("create_magic_link"),
                account,
                Method::POST,
                self.magic_link_url(&["users", leaf_user_id, "authentication"]),
                Some(&body),
                Some(guard),
            )
            .await
            .map_err(|error| error.map_detail(without_link_ids))?;
        // The id and link of what Leaf created, if its answer names them, are removed from any
        // error (a 2xx cannot become one below, but a gateway may wrap a created body in a 5xx).
        let created = serde_json::from_str::<Value>(&answer.body)
            .ok()
            .as_ref()
            .and_then(parse_magic_link);
        if !answer.status.is_success() {
            let secrets = created
                .as_ref()
                .map(|link| secrets_of(&link.id, Some(&link.link)))
                .unwrap_or_default();
            return Err(answer_error(&answer, true, &secrets));
        }
        match created {
            Some(link) if !link.link.expose_secret().is_empty() => Ok(link),
            Some(_) => Err(LeafError::InvalidResponse {
                detail: "Leaf created the Magic Link but its answer has no link".to_string(),
            }),
            None => Err(invalid("the created Magic Link")),
        }
    }

    /// `GET .../magic-link/authentication/{id}`; `None` when Leaf has no such link (404).
    pub async fn get_magic_link(
        &self,
        account: &LeafAccount,
        id: &SecretString,
    ) -> Result<Option<MagicLink>, LeafError> {
        let secrets = secrets_of(id, None);
        let answer = self
            .authorized(
                Operation::MagicLink("get_magic_link"),
                account,
                Method::GET,
                self.magic_link_url(&["authentication", id.expose_secret()]),
                None,
            )
            .await
            .map_err(|error| error.without_values(&secrets).map_detail(without_link_ids))?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => serde_json::from_str::<Value>(&answer.body)
                .ok()
                .as_ref()
                .and_then(parse_magic_link)
                .map(Some)
                .ok_or_else(|| invalid("the Magic Link")),
            _ => Err(answer_error(&answer, false, &secrets)),
        }
    }

    /// `GET .../magic-link/authentication`: every authentication link of the account, all users
    /// (filtering by `leaf_user_id` is the caller's job). A bare array or an object wrapping one;
    /// entries without a usable id are skipped.
    pub async fn list_magic_links(
        &self,
        account: &LeafAccount,
    ) -> Result<Vec<MagicLink>, LeafError> {
        let answer = self
            .authorized(
                Operation::MagicLink("list_magic_links"),
                account,
                Method::GET,
                self.magic_link_url(&["authentication"]),
                None,
            )
            .await?;
        if !answer.status.is_success() {
            // No single link to remove: whatever looks like a link or an id goes.
            return Err(answer_error(&answer, false, &[]));
        }
        parse_magic_link_list(&answer.body).ok_or_else(|| invalid("the Magic Link list"))
    }

    /// `DELETE .../magic-link/authentication/{id}`: 2xx is [`Deleted::Removed`], 404
    /// [`Deleted::NothingThere`]. Guarded like every write.
    pub async fn delete_magic_link(
        &self,
        account: &LeafAccount,
        id: &SecretString,
        guard: &SendGuard<'_>,
    ) -> Result<Deleted, LeafError> {
        let secrets = secrets_of(id, None);
        let answer = self
            .guarded(
                Operation::MagicLink("delete_magic_link"),
                account,
                Method::DELETE,
                self.magic_link_url(&["authentication", id.expose_secret()]),
                None,
                Some(guard),
            )
            .await
            .map_err(|error| error.without_values(&secrets).map_detail(without_link_ids))?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(Deleted::NothingThere),
            status if status.is_success() => Ok(Deleted::Removed),
            _ => Err(answer_error(&answer, false, &secrets)),
        }
    }

    /// The registered Trimble applications: `GET .../app-keys/Trimble/{appName}` for one (404:
    /// empty), else `GET .../app-keys/Trimble` for all (a bare array or an object wrapping one).
    /// Only `appName` and `createdTime` are read.
    pub async fn trimble_app_keys(
        &self,
        account: &LeafAccount,
        app_name: Option<&str>,
    ) -> Result<Vec<AppKey>, LeafError> {
        let answer = self
            .authorized(
                Operation::MagicLink("app_keys"),
                account,
                Method::GET,
                self.app_keys_url(app_name),
                None,
            )
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND if app_name.is_some() => Ok(Vec::new()),
            status if status.is_success() => {
                parse_app_keys(&answer.body).ok_or_else(|| invalid("the Trimble app keys"))
            }
            _ => Err(answer_error(&answer, false, &[])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaf::LeafClientConfig;
    use crate::metrics::Metrics;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn client() -> LeafClient {
        LeafClient::new(
            LeafClientConfig {
                origin: "https://api.withleaf.io/".to_string(),
                ..LeafClientConfig::default()
            },
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    const DOCUMENTED_GET: &str = r#"{ "id": "PLANTED-id-7f3a", "link": "https://magic-link.withleaf.io/PLANTED-id-7f3a",
        "createdAt": "2023-11-02T19:17:16.494Z", "expiresAt": "2024-10-26T14:23:56.584Z",
        "lastAccessedAt": "2023-11-02T19:17:18.906Z", "leafUserId": "UUID",
        "maxUsage": 3, "usageCount": 0, "widget": "AUTHENTICATION",
        "settings": { "companyName": "x" }, "provider": "Trimble" }"#;

    #[test]
    fn urls_follow_the_documented_paths_and_encode_ids() {
        let c = client();
        assert_eq!(
            c.magic_link_url(&["users", "u-1", "authentication"])
                .as_str(),
            "https://api.withleaf.io/services/widgets/api/magic-link/users/u-1/authentication"
        );
        assert_eq!(
            c.magic_link_url(&["authentication", "a/../b"]).as_str(),
            "https://api.withleaf.io/services/widgets/api/magic-link/authentication/a%2F..%2Fb"
        );
        assert_eq!(
            c.app_keys_url(None).as_str(),
            "https://api.withleaf.io/services/usermanagement/api/app-keys/Trimble"
        );
        assert_eq!(
            c.app_keys_url(Some("my app")).as_str(),
            "https://api.withleaf.io/services/usermanagement/api/app-keys/Trimble/my%20app"
        );
    }

    #[test]
    fn the_documented_get_answer_parses_and_debug_hides_id_and_link() {
        let link = parse_magic_link(&serde_json::from_str(DOCUMENTED_GET).unwrap()).unwrap();
        assert_eq!(link.id.expose_secret(), "PLANTED-id-7f3a");
        assert_eq!(
            link.link.expose_secret(),
            "https://magic-link.withleaf.io/PLANTED-id-7f3a"
        );
        assert_eq!(link.leaf_user_id.as_deref(), Some("UUID"));
        assert_eq!(
            link.expires_at,
            Some("2024-10-26T14:23:56.584Z".parse().unwrap())
        );
        assert_eq!((link.usage_count, link.max_usage), (Some(0), Some(3)));
        assert_eq!(link.widget.as_deref(), Some("AUTHENTICATION"));
        assert!(link.is_expired("2025-01-01T00:00:00Z".parse().unwrap()));
        assert!(!link.is_used_up());
        assert!(!format!("{link:?}").contains("PLANTED"), "{link:?}");
    }

    #[test]
    fn the_documented_create_answer_parses_with_nanoseconds() {
        let body = r#"{ "id": "m1", "leafUserId": "UUID",
            "link": "https://magic-link.withleaf.io/m1",
            "expiresAt": "2010-10-10T10:10:10.000000000Z" }"#;
        let link = parse_magic_link(&serde_json::from_str(body).unwrap()).unwrap();
        assert_eq!(
            link.expires_at,
            Some("2010-10-10T10:10:10Z".parse().unwrap())
        );
        assert_eq!(link.last_accessed_at, None);
        assert_eq!(link.usage_count, None);
    }

    #[test]
    fn lists_parse_from_an_array_or_a_wrapper_and_skip_entries_without_an_id() {
        let array = format!(r#"[{DOCUMENTED_GET}, {{"link": "x"}}, 7]"#);
        assert_eq!(parse_magic_link_list(&array).unwrap().len(), 1);
        let wrapped = format!(r#"{{"content": [{DOCUMENTED_GET}]}}"#);
        assert_eq!(parse_magic_link_list(&wrapped).unwrap().len(), 1);
        assert_eq!(parse_magic_link_list("").unwrap().len(), 0);
        assert!(parse_magic_link_list("<html>").is_none());
        assert!(parse_magic_link_list(r#"{"message": "x"}"#).is_none());
    }

    #[test]
    fn app_keys_keep_only_name_and_time() {
        let one = r#"{"provider":"Trimble","appName":"farm-app","clientEnvironment":null,
            "createdTime":"2024-01-01T00:00:00Z","clientSecret":"PLANTED-secret"}"#;
        let keys = parse_app_keys(one).unwrap();
        assert_eq!(
            keys,
            vec![AppKey {
                app_name: "farm-app".into(),
                created_time: Some("2024-01-01T00:00:00Z".into())
            }]
        );
        assert!(!format!("{keys:?}").contains("PLANTED"));
        let all = format!("[{one}, {{\"provider\":\"JohnDeere\",\"appName\":\"jd\"}}]");
        assert_eq!(parse_app_keys(&all).unwrap().len(), 1, "other providers");
        assert_eq!(parse_app_keys("[]").unwrap(), vec![]);
        assert!(parse_app_keys("nope").is_none());
    }

    #[test]
    fn error_texts_lose_links_and_uuid_shaped_ids() {
        let id = "3b73923c-724a-44c7-a516-a775e81b27dd";
        let text = format!(
            "see https://magic-link.withleaf.io/{id}: link {id}, /magic-link/authentication/{id} ({id}) and ABCDEF0123456789abcdef0123456789; expiresIn must be at least 900"
        );
        let clean = without_link_ids(text);
        assert!(!clean.contains(id) && !clean.contains("ABCDEF"), "{clean}");
        assert!(!clean.contains("magic-link"), "{clean}");
        assert!(clean.ends_with("expiresIn must be at least 900"), "{clean}");
        assert_eq!(
            without_link_ids("Application info for provider Trimble not found".into()),
            "Application info for provider Trimble not found"
        );
    }

    #[test]
    fn settings_send_only_what_is_set_in_leafs_spelling() {
        let settings = MagicLinkSettings {
            company_name: Some("Acme".into()),
            show_leaf_user_name: Some(false),
            ..MagicLinkSettings::default()
        };
        assert_eq!(
            serde_json::to_value(&settings).unwrap(),
            serde_json::json!({"companyName": "Acme", "showLeafUserName": false})
        );
        assert!(MagicLinkSettings::default().is_empty());
    }

    /// Arbitrary JSON values, nested a few levels.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            ".{0,80}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("id".to_string()),
                        Just("link".to_string()),
                        Just("expiresAt".to_string()),
                        Just("usageCount".to_string()),
                        Just("appName".to_string()),
                        Just("content".to_string()),
                        ".{0,10}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_parses_without_panicking(value in json_value(), text in ".{0,200}") {
            let body = value.to_string();
            let _ = parse_magic_link(&value);
            let _ = parse_magic_link_list(&body);
            let _ = parse_magic_link_list(&text);
            let _ = parse_app_keys(&body);
            let _ = parse_app_keys(&text);
        }

        #[test]
        fn a_parsed_link_never_shows_its_id_or_link_in_debug(
            id in "[A-Za-z0-9-]{8,64}",
            extra in json_value(),
            usage in any::<i64>(),
            expires in ".{0,40}",
        ) {
            let link = format!("https://magic-link.withleaf.io/{id}");
            let record = serde_json::json!({
                "id": id, "link": link, "leafUserId": "user-1", "usageCount": usage,
                "expiresAt": expires, "settings": extra,
            });
            let parsed = parse_magic_link(&record).expect("it has an id");
            prop_assert_eq!(parsed.id.expose_secret(), id.as_str());
            let list = parse_magic_link_list(&serde_json::json!([record]).to_string()).unwrap();
            let debug = format!("{parsed:?} {list:?}");
            prop_assert!(!debug.contains(&id), "{}", debug);
            prop_assert!(parsed.leaf_user_id.as_deref() == Some("user-1"));
        }

        #[test]
        fn parsed_fields_are_bounded_and_printable(value in json_value()) {
            if let Some(link) = parse_magic_link(&value) {
                prop_assert!(!link.id.expose_secret().is_empty());
                prop_assert!(link.id.expose_secret().chars().count() <= MAX_FIELD_CHARS);
                prop_assert!(link.link.expose_secret().chars().count() <= MAX_LINK_CHARS);
                for field in [&link.leaf_user_id, &link.provider, &link.widget].into_iter().flatten() {
                    prop_assert!(field.chars().count() <= MAX_FIELD_CHARS);
                    prop_assert!(!field.chars().any(char::is_control));
                }
            }
            for key in parse_app_keys(&value.to_string()).unwrap_or_default() {
                prop_assert!(!key.app_name.is_empty() && key.app_name.chars().count() <= MAX_FIELD_CHARS);
            }
        }
    }
}
