//! Leaf's wire types, parsed leniently into types with no field for any secret Leaf echoes back.
//!
//! Leaf's credential JSON carries `clientSecret`, `accessToken` and `refreshToken` in clear. The
//! wire structs here simply have no such fields, so serde skips them and they cannot leak later.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

use super::sanitize;

/// Leaf's status of a provider credential: an open set, matched case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CredentialStatus {
    /// `OK`: Leaf can reach the provider with this credential.
    Ok,
    /// `UNAUTHENTICATED`: no longer valid; the grower must authorize again.
    Unauthenticated,
    /// `invalid`: access revoked or refresh token expired (Leaf's prose, no enum published).
    Invalid,
    /// `MISSING_PERMISSION`: the grant lacks a scope Leaf needs.
    MissingPermission,
    /// `TEMPORARILY_UNAVAILABLE`: trouble on the provider's side.
    TemporarilyUnavailable,
    /// Any other string, kept exactly as Leaf sent it.
    Other(String),
}

impl CredentialStatus {
    /// Parses any string; never fails. Case, `-`/space vs `_` and surrounding blanks are ignored
    /// for the known values.
    pub fn parse(value: &str) -> Self {
        let normalized: String = value
            .trim()
            .chars()
            .map(|c| {
                if c == '-' || c == ' ' {
                    '_'
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect();
        match normalized.as_str() {
            "OK" => Self::Ok,
            "UNAUTHENTICATED" => Self::Unauthenticated,
            "INVALID" => Self::Invalid,
            "MISSING_PERMISSION" => Self::MissingPermission,
            "TEMPORARILY_UNAVAILABLE" => Self::TemporarilyUnavailable,
            _ => Self::Other(value.to_string()),
        }
    }

    /// Leaf's spelling of the status: the documented spelling for known values (Leaf's prose
    /// says `invalid` in lower case), the verbatim string for [`CredentialStatus::Other`]. For
    /// the exact string of one answer use [`Credential::raw_status`].
    pub fn as_str(&self) -> &str {
        match self {
            Self::Ok => "OK",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Invalid => "invalid",
            Self::MissingPermission => "MISSING_PERMISSION",
            Self::TemporarilyUnavailable => "TEMPORARILY_UNAVAILABLE",
            Self::Other(value) => value,
        }
    }

    /// Whether Leaf considers the credential usable.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok)
    }
}

impl fmt::Display for CredentialStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CredentialStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Longest id (credential or event) accepted from Leaf; Leaf's ids are UUIDs.
pub const MAX_ID_CHARS: usize = 128;
/// Longest status string kept; `status.credentialStatus` must stay small enough to write.
pub const MAX_STATUS_CHARS: usize = 64;
/// Most scopes kept, and the longest scope.
pub const MAX_SCOPES: usize = 32;
pub const MAX_SCOPE_CHARS: usize = 128;
/// Longest timestamp text kept.
pub const MAX_TIME_CHARS: usize = 64;

/// An id we can own and compare: non-empty, short, no spaces or control characters. Anything
/// else becomes empty, which the client refuses as an unusable answer.
fn usable_id(text: String) -> String {
    let usable = !text.is_empty()
        && text.chars().count() <= MAX_ID_CHARS
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if usable { text } else { String::new() }
}

/// Printable and at most `max` characters (Leaf's strings go into status and Event notes).
fn bounded(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// A provider credential as Leaf reports it, minus every secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    pub id: String,
    /// The status, classified (known values matched case-insensitively).
    pub status: CredentialStatus,
    /// Leaf's status string exactly as sent (`"invalid"`, `"Ok"`, ...): what to show users.
    pub raw_status: String,
    /// Leaf's `createdTime` as sent (RFC 3339 when Leaf sent epoch milliseconds).
    pub created_time: Option<String>,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
}

impl Credential {
    /// When Leaf created it, if Leaf said so readably.
    pub fn created_at(&self) -> Option<jiff::Timestamp> {
        self.created_time.as_deref().and_then(parse_time)
    }
}

/// One logged provider call Leaf made for a credential; headers and body are never kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialEvent {
    pub id: String,
    /// Leaf's `createdDate` as sent (RFC 3339 when Leaf sent epoch milliseconds).
    pub time: Option<String>,
    pub status_code: Option<i32>,
    /// Short and sanitised, built from the status code only, e.g. `HTTP 401 Unauthorized`.
    pub summary: String,
}

/// Wire form of a credential: only the fields we keep. Unknown fields, including the secrets,
/// are ignored by serde.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireCredential {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    status: Option<serde_json::Value>,
    #[serde(default)]
    created_time: Option<serde_json::Value>,
    #[serde(default)]
    token_metadata: Option<WireTokenMetadata>,
    #[serde(default)]
    client_id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireTokenMetadata {
    #[serde(default)]
    scopes: Option<serde_json::Value>,
}

impl From<WireCredential> for Credential {
    fn from(wire: WireCredential) -> Self {
        let scopes = match wire.token_metadata.and_then(|m| m.scopes) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|item| scalar_to_string(Some(item)))
                .map(|scope| bounded(&scope, MAX_SCOPE_CHARS))
                .filter(|s| !s.is_empty())
                .take(MAX_SCOPES)
                .collect(),
            Some(serde_json::Value::String(text)) => text
                .split([' ', ','])
                .map(|scope| bounded(scope, MAX_SCOPE_CHARS))
                .filter(|s| !s.is_empty())
                .take(MAX_SCOPES)
                .collect(),
            _ => Vec::new(),
        };
        let raw_status = bounded(
            &scalar_to_string(wire.status.as_ref()).unwrap_or_default(),
            MAX_STATUS_CHARS,
        );
        Self {
            id: usable_id(scalar_to_string(wire.id.as_ref()).unwrap_or_default()),
            status: CredentialStatus::parse(&raw_status),
            raw_status,
            created_time: time_to_string(wire.created_time.as_ref()),
            scopes,
            client_id: scalar_to_string(wire.client_id.as_ref()),
        }
    }
}

/// Wire form of an event: `headers` and `body` are deliberately absent (they log raw provider
/// traffic, tokens included), so serde skips them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireEvent {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    created_date: Option<serde_json::Value>,
    #[serde(default)]
    status_code: Option<serde_json::Value>,
}

impl From<WireEvent> for CredentialEvent {
    fn from(wire: WireEvent) -> Self {
        let status_code = match wire.status_code.as_ref() {
            Some(serde_json::Value::Number(n)) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let summary = match status_code {
            Some(code) => {
                let reason = u16::try_from(code)
                    .ok()
                    .and_then(|c| reqwest::StatusCode::from_u16(c).ok())
                    .and_then(|c| c.canonical_reason());
                match reason {
                    Some(reason) => format!("HTTP {code} {reason}"),
                    None => format!("HTTP {code}"),
                }
            }
            None => "no status code".to_string(),
        };
        let id = scalar_to_string(wire.id.as_ref()).unwrap_or_default();
        Self {
            // An event id only has to tell events apart: a long or odd one is replaced by a short
            // digest of itself rather than dropped.
            id: match usable_id(id.clone()) {
                usable if !usable.is_empty() => usable,
                _ => format!("digest-{}", short_digest(&id)),
            },
            time: time_to_string(wire.created_date.as_ref()),
            status_code,
            summary: sanitize::excerpt(&summary),
        }
    }
}

/// Sorts events newest first by their time; events without a parseable time go last.
pub(crate) fn sort_newest_first(events: &mut [CredentialEvent]) {
    events.sort_by_cached_key(|event| {
        std::cmp::Reverse(
            event
                .time
                .as_deref()
                .and_then(parse_time)
                .map(|t| t.as_nanosecond()),
        )
    });
}

/// Parses Leaf's timestamps leniently: RFC 3339 with any fraction, with or without `Z`/offset
/// (no offset means UTC), or a date-time with a space.
pub(crate) fn parse_time(text: &str) -> Option<jiff::Timestamp> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    let civil = text.replace(' ', "T");
    let civil = civil.trim_end_matches(['Z', 'z']);
    civil
        .parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
}

fn scalar_to_string(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn short_digest(text: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
}

/// A time as Leaf sent it; numbers are taken as epoch milliseconds and shown as RFC 3339. Text
/// that is long or not printable is dropped (it goes into the status).
fn time_to_string(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s)
            if !s.trim().is_empty()
                && s.chars().count() <= MAX_TIME_CHARS
                && !s.chars().any(char::is_control) =>
        {
            Some(s.clone())
        }
        serde_json::Value::Number(n) => n
            .as_i64()
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            .map(|ts| ts.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_parses_case_insensitively_and_keeps_unknown_values_verbatim() {
        assert_eq!(CredentialStatus::parse("ok"), CredentialStatus::Ok);
        assert_eq!(
            CredentialStatus::parse("Unauthenticated"),
            CredentialStatus::Unauthenticated
        );
        assert_eq!(
            CredentialStatus::parse("invalid"),
            CredentialStatus::Invalid
        );
        assert_eq!(
            CredentialStatus::parse("missing-permission"),
            CredentialStatus::MissingPermission
        );
        assert_eq!(
            CredentialStatus::parse(" temporarily_unavailable "),
            CredentialStatus::TemporarilyUnavailable
        );
        let other = CredentialStatus::parse("Quarantined by Leaf");
        assert_eq!(other, CredentialStatus::Other("Quarantined by Leaf".into()));
        assert_eq!(other.as_str(), "Quarantined by Leaf");
        assert_eq!(CredentialStatus::Ok.to_string(), "OK");
    }

    #[test]
    fn credential_json_drops_every_secret() {
        let wire: WireCredential = serde_json::from_value(json!({
            "id": 42, "status": "OK", "createdTime": "2026-01-02T03:04:05.123456Z",
            "tokenMetadata": {"scopes": ["openid", "ag"]}, "clientId": "cid",
            "clientSecret": "SECRET-1", "accessToken": "ACCESS-1", "refreshToken": "REFRESH-1"
        }))
        .unwrap();
        let credential = Credential::from(wire);
        assert_eq!(credential.id, "42");
        assert_eq!(credential.scopes, vec!["openid", "ag"]);
        assert_eq!(credential.client_id.as_deref(), Some("cid"));
        let all = format!(
            "{credential:?} {}",
            serde_json::to_string(&credential).unwrap()
        );
        for secret in ["SECRET-1", "ACCESS-1", "REFRESH-1"] {
            assert!(!all.contains(secret), "{all}");
        }
    }

    #[test]
    fn credential_json_with_missing_or_odd_fields_still_parses() {
        let wire: WireCredential = serde_json::from_value(json!({"status": null})).unwrap();
        let credential = Credential::from(wire);
        assert_eq!(credential.status, CredentialStatus::Other(String::new()));
        assert_eq!(credential.raw_status, "");
        assert!(credential.scopes.is_empty());
        let wire: WireCredential =
            serde_json::from_value(json!({"id": "a", "createdTime": 1700000000000_i64, "tokenMetadata": {"scopes": "a b"}}))
                .unwrap();
        let credential = Credential::from(wire);
        assert_eq!(
            credential.created_time.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(credential.scopes, vec!["a", "b"]);
    }

    #[test]
    fn events_keep_id_time_code_and_a_safe_summary_only() {
        let wire: WireEvent = serde_json::from_value(json!({
            "id": "e1", "createdDate": "2026-01-02T03:04:05.123456Z", "statusCode": 400,
            "headers": "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln",
            "body": "{\"error\":\"invalid_grant\",\"error_description\":\"token rt-123 expired\"}"
        }))
        .unwrap();
        let event = CredentialEvent::from(wire);
        assert_eq!(event.summary, "HTTP 400 Bad Request");
        assert_eq!(event.status_code, Some(400));
        let all = format!("{event:?}");
        assert!(!all.contains("eyJ") && !all.contains("rt-123"), "{all}");
    }

    #[test]
    fn events_sort_newest_first_with_lenient_times() {
        let mut events: Vec<CredentialEvent> = [
            "2026-01-01T00:00:00.000001Z",
            "2026-01-03 00:00:00",
            "bad",
            "2026-01-02T00:00:00Z",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| CredentialEvent {
            id: i.to_string(),
            time: Some(t.to_string()),
            status_code: None,
            summary: String::new(),
        })
        .collect();
        sort_newest_first(&mut events);
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1", "3", "0", "2"]);
    }

    proptest::proptest! {
        #[test]
        fn any_credential_json_parses_into_bounded_fields(
            id in proptest::option::of(".{0,300}"),
            status in ".{0,300}",
            created in ".{0,100}",
            scopes in proptest::collection::vec(".{0,200}", 0..50),
        ) {
            let wire: WireCredential = serde_json::from_value(json!({
                "id": id, "status": status, "createdTime": created,
                "tokenMetadata": {"scopes": scopes}
            })).unwrap();
            let credential = Credential::from(wire);
            proptest::prop_assert!(credential.id.chars().count() <= MAX_ID_CHARS);
            proptest::prop_assert!(!credential.id.chars().any(|c| c.is_whitespace() || c.is_control()));
            proptest::prop_assert!(credential.raw_status.chars().count() <= MAX_STATUS_CHARS);
            proptest::prop_assert!(credential.scopes.len() <= MAX_SCOPES);
            proptest::prop_assert!(credential.scopes.iter().all(|s| s.chars().count() <= MAX_SCOPE_CHARS));
            proptest::prop_assert!(credential.created_time.iter().all(|t| t.chars().count() <= MAX_TIME_CHARS));
            let _ = credential.created_at();
        }

        #[test]
        fn any_event_json_parses_into_bounded_fields(id in ".{0,300}", date in ".{0,100}", code in proptest::num::i64::ANY) {
            let wire: WireEvent = serde_json::from_value(json!({"id": id, "createdDate": date, "statusCode": code})).unwrap();
            let event = CredentialEvent::from(wire);
            proptest::prop_assert!(!event.id.is_empty() && event.id.chars().count() <= MAX_ID_CHARS);
            proptest::prop_assert!(event.time.iter().all(|t| t.chars().count() <= MAX_TIME_CHARS));
            proptest::prop_assert!(event.summary.chars().count() <= crate::leaf::sanitize::MAX_EXCERPT_CHARS);
        }
    }
}
