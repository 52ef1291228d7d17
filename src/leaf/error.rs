//! Errors of the Leaf client, classified for the controller (transient, auth, rejected, exists).
//!
//! Every message is built from sanitised excerpts ([`super::sanitize`]); no variant holds a body,
//! a header or a token.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::sanitize;

/// The longest `Retry-After` honoured: the controller's longest backoff. A larger value (or an
/// absurd one, `1e20`) is clamped to it rather than parking an object for years or overflowing.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(360);

/// What went wrong talking to Leaf.
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    /// Transient: connect or timeout failure, 5xx, 429, 408, 425, a redirect. Try again later
    /// (after `retry_after` when Leaf said so). `sent`: the request may have reached Leaf; false
    /// only when no connection could be made. Whether a write took effect is not decided here:
    /// `controller::decide::answers` reads it from `status` and `sent`, per kind of write.
    #[error("Leaf is unavailable{}: {detail}", status_suffix(*.status))]
    Unavailable {
        status: Option<u16>,
        retry_after: Option<Duration>,
        sent: bool,
        detail: String,
    },
    /// A write was not sent at all: its send deadline had passed (a slow login or rate-limit
    /// wait), or the leadership fence no longer held. Certainly not applied.
    #[error("not sent to Leaf: {0}")]
    NotSent(NotSent),
    /// Leaf refused our own identity: login refused, 401 even after a fresh login, 403.
    /// `retry_after`: a refused login is not tried again for this account before then.
    #[error("Leaf refused the operator's credentials{}: {detail}", status_suffix(*.status))]
    AuthFailed {
        status: Option<u16>,
        retry_after: Option<Duration>,
        detail: String,
    },
    /// A create answered 404: Leaf has no such user.
    #[error("Leaf has no such user (HTTP 404): {detail}")]
    UserNotFound { detail: String },
    /// Any other 4xx (bad body, refresh token refused ...).
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

/// Why a write was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotSent {
    /// The deadline recorded in the write's intent passed before it could leave: sending it now
    /// could let it land after the moment every replica considers its doubt closed.
    #[error("its send deadline passed before it could leave (login or rate-limit waits)")]
    DeadlinePassed,
    /// This replica can no longer prove that it holds the leader lease.
    #[error("this replica cannot prove that it still holds the leader lease")]
    Fenced,
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

impl LeafError {
    /// Worth retrying later without any change on our side.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::NotSent(NotSent::DeadlinePassed)
        )
    }

    /// The delay Leaf asked for with `Retry-After` (or the failed-login backoff), if any;
    /// never more than [`MAX_RETRY_AFTER`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } | Self::AuthFailed { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The HTTP status Leaf answered, if the error came from an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unavailable { status, .. } | Self::AuthFailed { status, .. } => *status,
            Self::Rejected { status, .. } => Some(*status),
            Self::UserNotFound { .. } => Some(404),
            Self::AlreadyExists { .. } => None,
            Self::InvalidResponse { .. } | Self::Config { .. } | Self::NotSent(_) => None,
        }
    }

    /// Replaces every occurrence of the given secret values in the details: Leaf may quote a
    /// short secret we sent (a refresh token, a password) that no pattern would recognise.
    pub(crate) fn without_values(self, values: &[&str]) -> Self {
        self.map_detail(|detail| {
            values
                .iter()
                .filter(|value| value.len() >= 3)
                .fold(detail, |detail, value| detail.replace(value, "[REDACTED]"))
        })
    }

    /// The same error with `clean` applied to its detail text (for redactions beyond
    /// [`LeafError::without_values`]).
    pub(crate) fn map_detail(self, clean: impl Fn(String) -> String) -> Self {
        match self {
            Self::Unavailable {
                status,
                retry_after,
                sent,
                detail,
            } => Self::Unavailable {
                status,
                retry_after,
                sent,
                detail: clean(detail),
            },
            Self::AuthFailed {
                status,
                retry_after,
                detail,
            } => Self::AuthFailed {
                status,
                retry_after,
                detail: clean(detail),
            },
            Self::UserNotFound { detail } => Self::UserNotFound {
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
            Self::NotSent(why) => Self::NotSent(why),
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
            // A connection that was never made carried nothing; anything later may have.
            sent: !error.is_connect(),
            detail: sanitize::truncate(&detail, sanitize::MAX_EXCERPT_CHARS),
        }
    }

    /// Classifies a non-success answer. `is_create` says the call was a POST of a credential,
    /// where "already exists" may come as 409 or as a 400 that says so.
    pub fn from_answer(
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
        // 408 (request timeout), 425 (too early), 429, 5xx and redirects (never followed: they
        // could carry our token elsewhere) say "try again later": they are not rejections.
        // Whether a write took effect is `controller::decide::answers`' call, per status.
        let try_again = matches!(code, 408 | 425 | 429) || status.is_redirection();
        if try_again || status.is_server_error() || status.is_informational() {
            return Self::Unavailable {
                status: Some(code),
                retry_after: parse_retry_after(headers, jiff::Timestamp::now()),
                sent: true,
                detail: detail_or_reason(),
            };
        }
        if code == 401 || code == 403 {
            return Self::AuthFailed {
                status: Some(code),
                retry_after: None,
                detail: detail_or_reason(),
            };
        }
        if is_create && (code == 409 || (code == 400 && says_already_exists(&detail))) {
            return Self::AlreadyExists {
                detail: detail_or_reason(),
            };
        }
        if is_create && code == 404 {
            return Self::UserNotFound {
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

/// `Retry-After` as delay seconds or an HTTP-date (relative to `now`; past dates mean zero),
/// clamped to [`MAX_RETRY_AFTER`]. Any header value, however absurd, gives `None` or a bounded
/// delay: a panic here would crash-loop the operator for as long as Leaf keeps sending it.
pub fn parse_retry_after(headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    retry_after_value(value, now)
}

/// The parser behind [`parse_retry_after`], on the header's text.
pub fn retry_after_value(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else if let Ok(seconds) = value.parse::<f64>() {
        if !seconds.is_finite() || seconds < 0.0 {
            return None;
        }
        // `from_secs_f64` panics beyond u64::MAX seconds (`1e20`): take the checked one.
        Duration::try_from_secs_f64(seconds).unwrap_or(MAX_RETRY_AFTER)
    } else {
        let at = jiff::fmt::rfc2822::DateTimeParser::new()
            .parse_timestamp(value)
            .ok()?;
        let delta = at.as_millisecond().saturating_sub(now.as_millisecond());
        Duration::from_millis(u64::try_from(delta).unwrap_or(0))
    };
    Some(delay.min(MAX_RETRY_AFTER))
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
    fn absurd_retry_after_values_are_clamped_never_a_panic() {
        let now: jiff::Timestamp = "2026-11-29T20:00:00Z".parse().unwrap();
        for absurd in [
            "1e20",
            "18446744073709551615",
            "1.7e308",
            "99999999999999999999999",
            "Thu, 01 Jan 2150 00:00:00 GMT",
        ] {
            assert_eq!(
                retry_after_value(absurd, now),
                Some(MAX_RETRY_AFTER),
                "{absurd}"
            );
        }
        for refused in ["-1", "NaN", "inf", "-inf", "1.8e308", ""] {
            assert_eq!(retry_after_value(refused, now), None, "{refused}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_retry_after_text_gives_none_or_a_bounded_delay(value in ".{0,64}", seconds in proptest::num::f64::ANY) {
            let now = jiff::Timestamp::now();
            for text in [value, seconds.to_string(), format!("{seconds:e}")] {
                if let Some(delay) = retry_after_value(&text, now) {
                    proptest::prop_assert!(delay <= MAX_RETRY_AFTER);
                }
            }
        }

        #[test]
        fn any_status_and_body_classify_without_panicking(code in 100u16..1000, body in ".{0,300}", create in proptest::bool::ANY) {
            let status = StatusCode::from_u16(code).unwrap();
            let error = LeafError::from_answer(status, &HeaderMap::new(), &body, create);
            proptest::prop_assert!(error.to_string().chars().count() < 400);
            if (400..500).contains(&code) && !matches!(code, 408 | 425 | 429) {
                proptest::prop_assert!(!error.is_transient(), "{code} is not transient");
            }
        }
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
        assert!(matches!(
            LeafError::from_answer(StatusCode::NOT_FOUND, &none, "", true),
            LeafError::UserNotFound { .. }
        ));
        for code in [408, 425, 429, 302, 500, 502, 503, 504] {
            let error =
                LeafError::from_answer(StatusCode::from_u16(code).unwrap(), &none, "", true);
            assert!(error.is_transient(), "{code} is not a rejection");
            assert_eq!(error.status(), Some(code));
        }
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
