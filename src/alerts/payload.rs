//! Leaf's alert bodies, parsed leniently: the registration confirmation, the two credentials
//! events, and everything else (recognised by `type`, then ignored).
//!
//! Leaf calls its payloads "representative", so only what the operator needs is required: a
//! `type`, and for credentials events a `credentialId` (the key: there is no Leaf user id).
//! Unknown fields are ignored, ids may come as strings or numbers, and timestamps come with
//! micro-, milli- or no fractional seconds, with or without a zone (then UTC). Only called on
//! bytes whose signature verified, or on a failed call Leaf's authenticated API returned.

use serde_json::Value;

/// The body Leaf POSTs right after a webhook is registered.
pub const CONFIRMATION_MESSAGE: &str = "confirmation of webhook upon registration";
/// The two events this operator registers for.
pub const CREDENTIALS_UNAUTHENTICATED: &str = "credentialsUnauthenticated";
pub const CREDENTIALS_LIMITED_PERMISSION: &str = "credentialsLimitedPermission";
/// Longest id, type, status or provider kept from a body (longer values are cut, not refused).
const MAX_FIELD_CHARS: usize = 256;

/// Which credentials event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialEvent {
    Unauthenticated,
    LimitedPermission,
}

impl CredentialEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => CREDENTIALS_UNAUTHENTICATED,
            Self::LimitedPermission => CREDENTIALS_LIMITED_PERMISSION,
        }
    }
}

/// A credentials event: which credential, and what Leaf said about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialAlert {
    pub event: CredentialEvent,
    pub credential_id: String,
    /// `provider` as sent (e.g. `Trimble`), if any.
    pub provider: Option<String>,
    /// `status` as sent (e.g. `UNAUTHENTICATED`), if any. A hint only: never copied to a status.
    pub status: Option<String>,
    /// `timestamp` as sent, if any.
    pub raw_timestamp: Option<String>,
    /// `timestamp` parsed, when it could be.
    pub timestamp: Option<jiff::Timestamp>,
}

impl CredentialAlert {
    /// Whether the alert is about a Trimble credential; an alert without `provider` is assumed
    /// to be (the credential id decides anyway).
    pub fn is_trimble(&self) -> bool {
        self.provider
            .as_deref()
            .is_none_or(|p| p.trim().eq_ignore_ascii_case("trimble"))
    }

    /// The identity of this alert for deduplication: type, credential id, timestamp (parsed when
    /// possible, so precision differences do not matter) and status.
    pub fn dedupe_key(&self) -> (&'static str, &str, String, &str) {
        let timestamp = match (&self.timestamp, &self.raw_timestamp) {
            (Some(ts), _) => ts.to_string(),
            (None, Some(raw)) => raw.clone(),
            (None, None) => String::new(),
        };
        (
            self.event.as_str(),
            &self.credential_id,
            timestamp,
            self.status.as_deref().unwrap_or(""),
        )
    }
}

/// What a (verified) body says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// `{"message": "confirmation of webhook upon registration"}`.
    Confirmation,
    Credentials(CredentialAlert),
    /// Another event type (this operator registers none, but a shared webhook may carry them).
    Other {
        event_type: String,
        /// `timestamp` parsed, when it could be (every Leaf event carries one).
        timestamp: Option<jiff::Timestamp>,
    },
}

impl Payload {
    /// When Leaf says it sent this body: the `timestamp` of an event, when readable. The
    /// confirmation has none.
    pub fn sent_at(&self) -> Option<jiff::Timestamp> {
        match self {
            Self::Confirmation => None,
            Self::Credentials(alert) => alert.timestamp,
            Self::Other { timestamp, .. } => *timestamp,
        }
    }
}

/// Why a body could not be read; the label is the metric's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    NotJson,
    NotAnObject,
    NoType,
    NoCredentialId,
}

impl PayloadError {
    pub fn label(self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::NotAnObject => "not_an_object",
            Self::NoType => "no_type",
            Self::NoCredentialId => "no_credential_id",
        }
    }
}

/// Parses a verified body.
pub fn parse(body: &[u8]) -> Result<Payload, PayloadError> {
    // serde_json limits nesting (128 levels), so a deep body cannot exhaust the stack.
    let value: Value = serde_json::from_slice(body).map_err(|_| PayloadError::NotJson)?;
    let Value::Object(object) = value else {
        return Err(PayloadError::NotAnObject);
    };
    let event_type = object.get("type").and_then(text);
    let Some(event_type) = event_type else {
        if object.get("message").and_then(Value::as_str) == Some(CONFIRMATION_MESSAGE) {
            return Ok(Payload::Confirmation);
        }
        return Err(PayloadError::NoType);
    };
    let raw_timestamp = object.get("timestamp").and_then(text);
    let timestamp = raw_timestamp.as_deref().and_then(parse_timestamp);
    let event = match event_type.as_str() {
        CREDENTIALS_UNAUTHENTICATED => CredentialEvent::Unauthenticated,
        CREDENTIALS_LIMITED_PERMISSION => CredentialEvent::LimitedPermission,
        _ => {
            return Ok(Payload::Other {
                event_type,
                timestamp,
            });
        }
    };
    // `credentialId` is documented; `credentialsId` is the likely misspelling of a producer.
    let credential_id = ["credentialId", "credentialsId"]
        .iter()
        .find_map(|key| object.get(*key).and_then(text))
        .filter(|id| !id.trim().is_empty())
        .ok_or(PayloadError::NoCredentialId)?;
    Ok(Payload::Credentials(CredentialAlert {
        event,
        credential_id: credential_id.trim().to_string(),
        provider: object.get("provider").and_then(text),
        status: object.get("status").and_then(text),
        timestamp,
        raw_timestamp,
    }))
}

/// A string or number field as text, cut to a bounded length.
fn text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(text.chars().take(MAX_FIELD_CHARS).collect())
}

/// ISO-8601 with any number of fractional digits, `Z` or an offset, or no zone at all (UTC).
pub fn parse_timestamp(raw: &str) -> Option<jiff::Timestamp> {
    let raw = raw.trim();
    if raw.len() > 64 {
        return None;
    }
    if let Ok(ts) = raw.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    // Java's LocalDateTime style (`yyyy-MM-dd'T'HH:mm:ss.SSSSSS`): no zone, meant as UTC.
    let civil: jiff::civil::DateTime = raw.parse().ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// Whether unsigned bytes are exactly the registration confirmation (ignoring whitespace).
/// Compared as bytes, never parsed: an unsigned body gets no parser.
pub fn is_confirmation_bytes(body: &[u8]) -> bool {
    const EXPECTED: &[u8] = br#"{"message":"confirmation of webhook upon registration"}"#;
    if body.len() > 4 * EXPECTED.len() {
        return false;
    }
    // Whitespace inside the message string matters; outside it does not. The message has single
    // spaces between words: compare with all ASCII whitespace removed on both sides.
    let squeezed: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let expected: Vec<u8> = EXPECTED
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    squeezed == expected
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn credentials(body: &str) -> CredentialAlert {
        match parse(body.as_bytes()) {
            Ok(Payload::Credentials(alert)) => alert,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn the_documented_credentials_payload_parses() {
        let alert = credentials(
            r#"{"credential": "client-1", "provider": "Trimble", "credentialId": "c-1", "message": "token refresh failed", "status": "UNAUTHENTICATED", "type": "credentialsUnauthenticated", "timestamp": "2024-06-15T14:30:00.000000Z"}"#,
        );
        assert_eq!(alert.event, CredentialEvent::Unauthenticated);
        assert_eq!(alert.credential_id, "c-1");
        assert_eq!(alert.status.as_deref(), Some("UNAUTHENTICATED"));
        assert!(alert.is_trimble());
        assert_eq!(
            alert.timestamp,
            Some("2024-06-15T14:30:00Z".parse().unwrap())
        );
    }

    #[test]
    fn timestamps_with_any_precision_or_zone_mean_the_same_instant() {
        let expected: jiff::Timestamp = "2024-06-15T14:30:00.123Z".parse().unwrap();
        for raw in [
            "2024-06-15T14:30:00.123000Z",
            "2024-06-15T14:30:00.123Z",
            "2024-06-15T14:30:00.123",
            "2024-06-15T16:30:00.123+02:00",
        ] {
            assert_eq!(parse_timestamp(raw), Some(expected), "{raw}");
        }
        assert_eq!(
            parse_timestamp("2024-06-15T14:30:00Z"),
            Some("2024-06-15T14:30:00Z".parse().unwrap())
        );
        assert_eq!(parse_timestamp("yesterday"), None);
        // The same alert with another precision is the same alert.
        let a = credentials(
            r#"{"type":"credentialsLimitedPermission","credentialId":"c","timestamp":"2024-06-15T14:30:00.000000Z","status":"MISSING_PERMISSION"}"#,
        );
        let b = credentials(
            r#"{"type":"credentialsLimitedPermission","credentialId":"c","timestamp":"2024-06-15T14:30:00Z","status":"MISSING_PERMISSION"}"#,
        );
        assert_eq!(a.dedupe_key(), b.dedupe_key());
    }

    #[test]
    fn unknown_fields_numbers_and_other_providers_are_tolerated() {
        let alert = credentials(
            r#"{"type":"credentialsUnauthenticated","credentialId":12345,"provider":"JohnDeere","extra":{"nested":[1,2]}}"#,
        );
        assert_eq!(alert.credential_id, "12345");
        assert!(!alert.is_trimble());
        assert!(alert.timestamp.is_none() && alert.raw_timestamp.is_none());
        assert_eq!(
            parse(br#"{"type":"fieldCreated","leafUserId":"u"}"#),
            Ok(Payload::Other {
                event_type: "fieldCreated".to_string(),
                timestamp: None,
            })
        );
    }

    #[test]
    fn an_event_says_when_it_was_sent_and_the_confirmation_does_not() {
        let at: jiff::Timestamp = "2024-06-15T14:30:00Z".parse().unwrap();
        for (body, expected) in [
            (
                r#"{"type": "credentialsUnauthenticated", "credentialId": "c", "timestamp": "2024-06-15T14:30:00.000000Z"}"#,
                Some(at),
            ),
            (
                r#"{"type": "fieldCreated", "timestamp": "2024-06-15T14:30:00.000"}"#,
                Some(at),
            ),
            (
                r#"{"type": "fieldCreated", "timestamp": "last tuesday"}"#,
                None,
            ),
            (
                r#"{"type": "credentialsUnauthenticated", "credentialId": "c"}"#,
                None,
            ),
            (
                r#"{"message": "confirmation of webhook upon registration", "timestamp": "2024-06-15T14:30:00Z"}"#,
                None,
            ),
        ] {
            let payload = parse(body.as_bytes()).unwrap();
            assert_eq!(payload.sent_at(), expected, "{body}");
        }
    }

    #[test]
    fn the_confirmation_and_the_refusals() {
        assert_eq!(
            parse(br#"{"message": "confirmation of webhook upon registration"}"#),
            Ok(Payload::Confirmation)
        );
        assert_eq!(parse(b"{"), Err(PayloadError::NotJson));
        assert_eq!(parse(b"[1]"), Err(PayloadError::NotAnObject));
        assert_eq!(parse(br#"{"message":"hi"}"#), Err(PayloadError::NoType));
        assert_eq!(
            parse(br#"{"type":"credentialsUnauthenticated","credentialId":"  "}"#),
            Err(PayloadError::NoCredentialId)
        );
        assert!(is_confirmation_bytes(
            b"{ \"message\" : \"confirmation of webhook upon registration\" }\n"
        ));
        assert!(!is_confirmation_bytes(
            br#"{"message":"confirmation of webhook upon registration","type":"credentialsUnauthenticated"}"#
        ));
        assert!(!is_confirmation_bytes(b""));
    }

    fn timestamp_strategy() -> impl Strategy<Value = String> {
        (
            0i64..4_000_000_000,
            prop_oneof![Just(0usize), Just(3), Just(6), Just(9)],
            any::<bool>(),
        )
            .prop_map(|(secs, digits, zoned)| {
                let ts = jiff::Timestamp::from_second(secs).unwrap();
                let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
                let fraction = if digits == 0 {
                    String::new()
                } else {
                    format!(".{}", "0".repeat(digits))
                };
                format!("{base}{fraction}{}", if zoned { "Z" } else { "" })
            })
    }

    proptest! {
        #[test]
        fn any_bytes_are_answered_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse(&body);
            let _ = is_confirmation_bytes(&body);
        }

        #[test]
        fn any_json_is_answered_without_panicking(
            value in any::<Option<String>>().prop_map(|s| serde_json::json!({"type": s, "credentialId": s, "timestamp": s}))
        ) {
            let _ = parse(value.to_string().as_bytes());
        }

        #[test]
        fn any_timestamp_text_is_answered_without_panicking(raw in ".{0,80}") {
            let _ = parse_timestamp(&raw);
        }

        #[test]
        fn generated_credentials_alerts_parse_with_their_id_and_instant(
            id in "[a-zA-Z0-9-]{1,40}",
            timestamp in timestamp_strategy(),
            limited in any::<bool>(),
            noise in proptest::collection::btree_map("[a-z]{1,8}", ".{0,12}", 0..4),
        ) {
            let event = if limited { CREDENTIALS_LIMITED_PERMISSION } else { CREDENTIALS_UNAUTHENTICATED };
            let mut body = serde_json::json!({});
            for (key, value) in &noise {
                body[key] = serde_json::json!(value);
            }
            body["type"] = serde_json::json!(event);
            body["credentialId"] = serde_json::json!(id);
            body["timestamp"] = serde_json::json!(timestamp);
            // Leaf's separators: spaces after ':' and ','.
            let text = body.to_string().replace("\":", "\": ").replace(",\"", ", \"");
            match parse(text.as_bytes()) {
                Ok(Payload::Credentials(alert)) => {
                    prop_assert_eq!(alert.credential_id, id);
                    prop_assert_eq!(alert.event.as_str(), event);
                    prop_assert!(alert.timestamp.is_some(), "{}", timestamp);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
