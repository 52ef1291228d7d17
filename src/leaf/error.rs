//! Errors of the Leaf client, classified for the controller (transient, auth, rejected, exists).
//!
//! Every message is built from sanitised excerpts ([`super::sanitize`]); no variant holds a body,
//! a header or a token.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::sanitize;

/// What went wrong talking to Leaf.
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    /// Transient: connect or timeout failure, 5xx, 429. Try again later (after `retry_after`
    /// when Leaf said so).
    #[error("Leaf is unavailable{}: {detail}", status_suffix(*.status))]
    Unavailable {
        status: Option<u16>,
        retry_after: Option<Duration>,
        detail: String,
    },
    /// Leaf refused our own identity: login refused, 401 even after a fresh login, 403.
    #[error("Leaf refused the operator's credentials{}: {detail}", status_suffix(*.status))]
    AuthFailed { status: Option<u16>, detail: String },
    /// Any other 4xx (bad body, unknown Leaf user, refresh token refused ...).
    #[error("Leaf rejected the request (HTTP {status}): {detail}")]
    Rejected { status: u16, detail: String },
    /// POST found a credential already there (409, or a 400 saying so).
    #[error("Leaf already has a credential for this user: {detail}")]
    AlreadyExists { detail: String },
    /// Leaf answered success with a body we cannot read.
    #[error("unexpected answer from Leaf: {detail}")]
    InvalidResponse { detail: String },
    /// The client's own configuration is unusable (bad origin ...).
    #[error("invalid Leaf client configuration: {detail}")]
    Config { detail: String },
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

impl LeafError {
    /// Worth retrying later without any change on our side.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// The delay Leaf asked for with `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status Leaf answered, if the error came from an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unavailable { status, .. } | Self::AuthFailed { status, .. } => *status,
            Self::Rejected { status, .. } => Some(*status),
            Self::AlreadyExists { .. } => None,
            Self::InvalidResponse { .. } | Self::Config { .. } => None,
        }
    }

    /// A 404 that was not absorbed (e.g. POST for a Leaf user that does not exist).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Rejected { status: 404, .. })
    }

    /// A short, stable name of the class, for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::AuthFailed { .. } => "auth_failed",
            Self::Rejected { .. } => "rejected",
            Self::AlreadyExists { .. } => "already_exists",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::Config { .. } => "config",
        }
    }

    /// Replaces every occurrence of the given secret values in the details: Leaf may quote a
    /// short secret we sent (a refresh token, a password) that no pattern would recognise.
    pub(crate) fn without_values(self, values: &[&str]) -> Self {
        let clean = |detail: String| {
            values
                .iter()
                .filter(|value| value.len() >= 3)
                .fold(detail, |detail, value| detail.replace(value, "[REDACTED]"))
        };
        match self {
            Self::Unavailable {
                status,
                retry_after,
                detail,
            } => Self::Unavailable {
                status,
                retry_after,
                detail: clean(detail),
            },
            Self::AuthFailed { status, detail } => Self::AuthFailed {
                status,
                detail: clean(detail),
            },
            Self::Rejected { status, detail } => Self::Rejected {
                status,
                detail: clean(detail),
            },
            Self::AlreadyExists { detail } => Self::AlreadyExists {
                detail: clean(detail),
            },
            Self::InvalidResponse { detail } => Self::InvalidResponse {
                detail: clean(detail),
            },
            Self::Config { detail } => Self::Config {
                detail: clean(detail),
            },
        }
    }

    /// Classifies a transport failure (no answer came).
    pub(crate) fn from_transport(error: &reqwest::Error) -> Self {
        let what = if error.is_timeout() {
            "request timed out"
        } else if error.is_connect() {
            "could not connect"
        } else if error.is_body() || error.is_decode() {
            "connection failed while reading the answer"
        } else {
            "connection failed"
        };
        // reqwest's Display may include the URL (with the Leaf user id) but never headers or
        // bodies; we still keep only our own wording plus the sanitised source chain.
        let mut detail = what.to_string();
        let mut source = std::error::Error::source(error);
        if let Some(cause) = source.take() {
            let mut innermost = cause;
            while let Some(next) = innermost.source() {
                innermost = next;
            }
            detail = format!("{what}: {}", sanitize::excerpt(&innermost.to_string()));
        }
        Self::Unavailable {
            status: None,
            retry_after: None,
            detail: sanitize::truncate(&detail, sanitize::MAX_EXCERPT_CHARS),
        }
    }

    /// Classifies a non-success answer. `is_create` says the call was a POST of a credential,
    /// where "already exists" may come as 409 or as a 400 that says so.
    pub(crate) fn from_answer(
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
        is_create: bool,
    ) -> Self {
        let detail = body_excerpt(body);
        let code = status.as_u16();
        let detail_or_reason = || {
            if detail.is_empty() {
                status.canonical_reason().unwrap_or("no detail").to_string()
            } else {
                detail.clone()
            }
        };
        if code == 429 || status.is_server_error() {
            return Self::Unavailable {
                status: Some(code),
                retry_after: parse_retry_after(headers, jiff::Timestamp::now()),
                detail: detail_or_reason(),
            };
        }
        if code == 401 || code == 403 {
            return Self::AuthFailed {
                status: Some(code),
                detail: detail_or_reason(),
            };
        }
        if is_create && (code == 409 || (code == 400 && says_already_exists(&detail))) {
            return Self::AlreadyExists {
                detail: detail_or_reason(),
            };
        }
        Self::Rejected {
            status: code,
            detail: detail_or_reason(),
        }
    }
}

fn says_already_exists(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    [
        "already exist",
        "already registered",
        "already has",
        "duplicate",
        "conflict",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

/// The useful part of an error body, sanitised: problem+json `detail`/`title`/`message` (and
/// the common `error_description`/`error`), else the plain text, else nothing.
pub(crate) fn body_excerpt(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return String::new();
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(trimmed) {
        if json.is_object() {
            let parts: Vec<&str> = ["title", "detail", "message", "error_description", "error"]
                .iter()
                .filter_map(|key| json.get(*key).and_then(|v| v.as_str()))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let mut unique: Vec<&str> = Vec::new();
            for part in parts {
                if !unique.contains(&part) {
                    unique.push(part);
                }
            }
            return sanitize::excerpt(&unique.join(": "));
        }
        if let Some(text) = json.as_str() {
            return sanitize::excerpt(text);
        }
        return String::new();
    }
    sanitize::excerpt(trimmed)
}

/// `Retry-After` as delay seconds or an HTTP-date (relative to `now`; past dates mean zero).
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let delta = at.as_millisecond() - now.as_millisecond();
    Some(Duration::from_millis(u64::try_from(delta).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(RETRY_AFTER, HeaderValue::from_str(retry_after).unwrap());
        map
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now: jiff::Timestamp = "2026-11-29T20:00:00Z".parse().unwrap();
        assert_eq!(
            parse_retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&headers("Sun, 29 Nov 2026 20:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(&headers("Sun, 29 Nov 2026 19:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&headers("soon"), now), None);
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn answers_are_classified() {
        let none = HeaderMap::new();
        let e = LeafError::from_answer(StatusCode::TOO_MANY_REQUESTS, &headers("3"), "", false);
        assert!(e.is_transient());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(LeafError::from_answer(StatusCode::BAD_GATEWAY, &none, "", false).is_transient());
        assert!(matches!(
            LeafError::from_answer(StatusCode::FORBIDDEN, &none, "", false),
            LeafError::AuthFailed {
                status: Some(403),
                ..
            }
        ));
        assert!(matches!(
            LeafError::from_answer(StatusCode::CONFLICT, &none, "", true),
            LeafError::AlreadyExists { .. }
        ));
        assert!(matches!(
            LeafError::from_answer(
                StatusCode::BAD_REQUEST,
                &none,
                r#"{"detail":"Credential already exists"}"#,
                true
            ),
            LeafError::AlreadyExists { .. }
        ));
        assert!(matches!(
            LeafError::from_answer(
                StatusCode::BAD_REQUEST,
                &none,
                r#"{"detail":"refreshToken is invalid"}"#,
                true
            ),
            LeafError::Rejected { status: 400, .. }
        ));
        assert!(LeafError::from_answer(StatusCode::NOT_FOUND, &none, "", true).is_not_found());
    }

    #[test]
    fn body_excerpts_come_from_problem_json_or_text_and_are_scrubbed() {
        assert_eq!(
            body_excerpt(
                r#"{"type":"x","title":"Bad Request","status":400,"detail":"clientId is required"}"#
            ),
            "Bad Request: clientId is required"
        );
        assert_eq!(body_excerpt(r#"{"message":"nope"}"#), "nope");
        assert_eq!(body_excerpt(""), "");
        assert_eq!(body_excerpt("plain failure"), "plain failure");
        let leaky = r#"{"detail":"refreshToken=rt-abc is bad, clientSecret: cs-xyz, Bearer eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln"}"#;
        let out = body_excerpt(leaky);
        assert!(
            !out.contains("rt-abc") && !out.contains("cs-xyz") && !out.contains("eyJ"),
            "{out}"
        );
        assert!(body_excerpt(&"x ".repeat(500)).chars().count() <= sanitize::MAX_EXCERPT_CHARS);
    }

    #[test]
    fn known_secret_values_are_removed_from_details() {
        let error = LeafError::from_answer(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            "refresh rt-x1 is not valid",
            true,
        )
        .without_values(&["rt-x1", ""]);
        assert_eq!(
            error.to_string(),
            "Leaf rejected the request (HTTP 400): refresh [REDACTED] is not valid"
        );
    }

    #[test]
    fn display_never_shows_the_raw_body() {
        let error = LeafError::from_answer(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            "password=hunter2 token=abcdefabcdefabcdef1234567890",
            false,
        );
        let text = format!("{error} {error:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("abcdef"),
            "{text}"
        );
    }
}
