//! The provider seam: what differs between Leaf's credential providers (path segment, create body).
//!
//! Leaf exposes the same GET/POST/DELETE/events calls for each provider under
//! `/users/{id}/{segment}`; adding a provider is one more implementation of [`Provider`].

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

/// One kind of provider credential at Leaf.
pub trait Provider {
    /// Path segment under `/users/{leafUserId}/`, e.g. `trimble-credentials`.
    const PATH_SEGMENT: &'static str;
    /// Human-readable provider name for messages.
    const NAME: &'static str;
    /// What the caller supplies to create a credential.
    type CreateRequest: Send + Sync;
    /// The JSON body of the create call. It contains secrets: it is sent and dropped, never logged.
    fn create_body(request: &Self::CreateRequest) -> serde_json::Value;
    /// The secret values in a create request, so that an error quoting one can be cleaned even
    /// when it does not look like a token.
    fn secrets(request: &Self::CreateRequest) -> Vec<&SecretString> {
        let _ = request;
        Vec::new()
    }
}

/// Trimble Agriculture credentials (`trimble-credentials`).
#[derive(Clone, Copy, Debug)]
pub enum Trimble {}

/// What Leaf needs to act for a grower at Trimble. `Debug` shows only the client id.
#[derive(Clone)]
pub struct TrimbleCreateRequest {
    pub client_id: String,
    pub client_secret: SecretString,
    pub refresh_token: SecretString,
}

impl fmt::Debug for TrimbleCreateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrimbleCreateRequest")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("refresh_token", &"[REDACTED]")
            .finish()
    }
}

impl Provider for Trimble {
    const PATH_SEGMENT: &'static str = "trimble-credentials";
    const NAME: &'static str = "Trimble";
    type CreateRequest = TrimbleCreateRequest;

    fn create_body(request: &TrimbleCreateRequest) -> serde_json::Value {
        json!({
            "clientId": request.client_id,
            "clientSecret": request.client_secret.expose_secret(),
            "refreshToken": request.refresh_token.expose_secret(),
        })
    }

    fn secrets(request: &TrimbleCreateRequest) -> Vec<&SecretString> {
        vec![&request.client_secret, &request.refresh_token]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimble_body_has_the_three_documented_fields_and_debug_hides_secrets() {
        let request = TrimbleCreateRequest {
            client_id: "cid".into(),
            client_secret: "s3cr3t-value".into(),
            refresh_token: "rt-value-xyz".into(),
        };
        let body = Trimble::create_body(&request);
        assert_eq!(
            body,
            json!({"clientId": "cid", "clientSecret": "s3cr3t-value", "refreshToken": "rt-value-xyz"})
        );
        let debug = format!("{request:?} {request:#?}");
        assert!(debug.contains("cid"));
        assert!(
            !debug.contains("s3cr3t") && !debug.contains("rt-value"),
            "{debug}"
        );
    }
}
