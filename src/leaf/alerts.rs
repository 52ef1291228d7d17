//! Leaf's Alerts API (`{origin}/services/alerts/api/alerts/webhooks`): list, get, create and
//! delete webhooks, and read the failed calls. Same token cache, rate limit and metrics as the
//! user-management calls (it goes through [`LeafClient::authorized`]).
//!
//! Leaf echoes each webhook's signing secret in GET answers: it is parsed straight into a
//! `SecretString`, and no answer body of these calls is ever quoted in an error (an error body
//! is quoted only after the known secret is removed from it).

use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::account::LeafAccount;
use super::client::{LeafClient, Operation};
use super::error::LeafError;

/// Leaf's error code for an event that another webhook of the account already listens to.
pub const EVENT_REGISTERED_TWICE: &str = "eventRegisteredTwice";

/// A registered webhook as Leaf returns it. `Debug` shows no secret (`SecretString` redacts).
#[derive(Clone, Debug)]
pub struct Webhook {
    pub id: String,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: SecretString,
}

/// A webhook to create.
#[derive(Debug)]
pub struct NewWebhook<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub events: &'a [&'a str],
    pub secret: &'a SecretString,
}

/// One entry of `GET /webhooks/failed-calls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedCall {
    pub created_at: Option<String>,
    pub url: Option<String>,
    /// The JSON text that was sent (Leaf returns it as a string).
    pub request_body: Option<String>,
    /// The HTTP status the receiver answered, absent for a connection failure.
    pub status: Option<u16>,
}

/// Why a webhook could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateWebhookError {
    /// 400 `eventRegisteredTwice`: another webhook of this Leaf account owns one of the events.
    #[error(
        "Leaf answered eventRegisteredTwice: another webhook of this Leaf account already listens to one of the events"
    )]
    EventRegisteredTwice,
    /// 2xx, but neither a readable `Location` nor a body with an id: the webhook was created
    /// and its id is unknown (the registration finds it in the list).
    #[error("Leaf created the webhook but named no id (no readable Location header or body)")]
    CreatedWithoutId,
    #[error(transparent)]
    Leaf(LeafError),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireWebhook {
    #[serde(default, deserialize_with = "id_text")]
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    secret: Option<String>,
}

impl From<WireWebhook> for Webhook {
    fn from(wire: WireWebhook) -> Self {
        Webhook {
            id: wire.id,
            name: wire.name.unwrap_or_default(),
            url: wire.url.unwrap_or_default(),
            events: wire.events,
            secret: SecretString::from(wire.secret.unwrap_or_default()),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFailedCall {
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    request_body: Option<serde_json::Value>,
    #[serde(default)]
    status: Option<serde_json::Value>,
}

/// Ids may come as strings or numbers.
fn id_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
}

impl super::client::Answer {
    /// The error for a non-success answer, with the given secret values removed from the quoted
    /// excerpt.
    fn error(&self, secrets: &[&str]) -> LeafError {
        LeafError::from_answer(self.status, &self.headers, &self.body, false)
            .without_values(secrets)
    }
}

fn invalid(what: &str) -> LeafError {
    // Never the body: webhook answers carry signing secrets.
    LeafError::InvalidResponse {
        detail: format!("{what} is not the documented JSON"),
    }
}

impl LeafClient {
    fn webhooks_url(&self, tail: &[&str]) -> Url {
        let mut url = self.base_url().clone();
        url.path_segments_mut()
            .expect("origin is a base URL")
            .pop_if_empty()
            .extend(["services", "alerts", "api", "alerts", "webhooks"])
            .extend(tail);
        url
    }

    /// `GET /webhooks`: every webhook of the account (secrets included, held as secrets).
    pub async fn list_webhooks(&self, account: &LeafAccount) -> Result<Vec<Webhook>, LeafError> {
        let answer = self
            .authorized(
                Operation::Alerts("list_webhooks"),
                account,
                Method::GET,
                self.webhooks_url(&[]),
                None,
            )
            .await?;
        if !answer.status.is_success() {
            return Err(answer.error(&[]));
        }
        #[derive(Deserialize)]
        struct Wrapped {
            #[serde(alias = "items", alias = "content", alias = "data")]
            webhooks: Vec<WireWebhook>,
        }
        if answer.body.trim().is_empty() {
            return Ok(Vec::new());
        }
        let wire = serde_json::from_str::<Vec<WireWebhook>>(&answer.body)
            .or_else(|_| serde_json::from_str::<Wrapped>(&answer.body).map(|w| w.webhooks))
            .map_err(|_| invalid("the webhook list"))?;
        Ok(wire.into_iter().map(Webhook::from).collect())
    }

    /// `GET /webhooks/{id}`; `None` when Leaf has no such webhook (404).
    pub async fn get_webhook(
        &self,
        account: &LeafAccount,
        id: &str,
    ) -> Result<Option<Webhook>, LeafError> {
        let answer = self
            .authorized(
                Operation::Alerts("get_webhook"),
                account,
                Method::GET,
                self.webhooks_url(&[id]),
                None,
            )
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => serde_json::from_str::<WireWebhook>(&answer.body)
                .map(|w| Some(Webhook::from(w)))
                .map_err(|_| invalid("the webhook")),
            _ => Err(answer.error(&[])),
        }
    }

    /// `POST /webhooks`: 201, the new id being the last segment of `Location` (else the body's
    /// `id`). A success without either is [`CreateWebhookError::CreatedWithoutId`], not an
    /// error that could pass for "nothing was created".
    pub async fn create_webhook(
        &self,
        account: &LeafAccount,
        webhook: &NewWebhook<'_>,
    ) -> Result<String, CreateWebhookError> {
        let secret = webhook.secret.expose_secret();
        let body = serde_json::json!({
            "events": webhook.events,
            "name": webhook.name,
            "secret": secret,
            "url": webhook.url,
        });
        let answer = self
            .authorized(
                Operation::Alerts("create_webhook"),
                account,
                Method::POST,
                self.webhooks_url(&[]),
                Some(&body),
            )
            .await
            .map_err(|e| CreateWebhookError::Leaf(e.without_values(&[secret])))?;
        drop(body);
        if !answer.status.is_success() {
            if answer.status == StatusCode::BAD_REQUEST
                && answer.body.contains(EVENT_REGISTERED_TWICE)
            {
                return Err(CreateWebhookError::EventRegisteredTwice);
            }
            return Err(CreateWebhookError::Leaf(answer.error(&[secret])));
        }
        let from_location = answer
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|location| {
                location
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .map(str::to_string)
            })
            .filter(|id| !id.is_empty());
        let id = from_location.or_else(|| {
            serde_json::from_str::<WireWebhook>(&answer.body)
                .ok()
                .map(|w| w.id)
                .filter(|id| !id.is_empty())
        });
        id.ok_or(CreateWebhookError::CreatedWithoutId)
    }

    /// `DELETE /webhooks/{id}`: 204; one already gone (404) is success.
    pub async fn delete_webhook(&self, account: &LeafAccount, id: &str) -> Result<(), LeafError> {
        let answer = self
            .authorized(
                Operation::Alerts("delete_webhook"),
                account,
                Method::DELETE,
                self.webhooks_url(&[id]),
                None,
            )
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(()),
            status if status.is_success() => Ok(()),
            _ => Err(answer.error(&[])),
        }
    }

    /// `GET /webhooks/failed-calls`: `{"items": [...]}` (a bare array is accepted too).
    pub async fn failed_calls(&self, account: &LeafAccount) -> Result<Vec<FailedCall>, LeafError> {
        let answer = self
            .authorized(
                Operation::Alerts("failed_calls"),
                account,
                Method::GET,
                self.webhooks_url(&["failed-calls"]),
                None,
            )
            .await?;
        if !answer.status.is_success() {
            return Err(answer.error(&[]));
        }
        #[derive(Deserialize)]
        struct Items {
            #[serde(default, alias = "content", alias = "data")]
            items: Vec<WireFailedCall>,
        }
        if answer.body.trim().is_empty() {
            return Ok(Vec::new());
        }
        let wire = serde_json::from_str::<Items>(&answer.body)
            .map(|i| i.items)
            .or_else(|_| serde_json::from_str::<Vec<WireFailedCall>>(&answer.body))
            .map_err(|_| invalid("the failed calls"))?;
        Ok(wire
            .into_iter()
            .map(|w| FailedCall {
                created_at: w.created_at,
                url: w.url,
                request_body: match w.request_body {
                    Some(serde_json::Value::String(s)) => Some(s),
                    // Documented as a string; an object is the same JSON, sent as text.
                    Some(other @ serde_json::Value::Object(_)) => Some(other.to_string()),
                    _ => None,
                },
                status: w
                    .status
                    .and_then(|s| s.as_u64())
                    .and_then(|s| u16::try_from(s).ok()),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaf::LeafClientConfig;
    use crate::metrics::Metrics;
    use std::sync::Arc;

    #[test]
    fn urls_follow_the_documented_paths_and_encode_the_id() {
        let client = LeafClient::new(
            LeafClientConfig {
                origin: "https://api.withleaf.io/".to_string(),
                ..LeafClientConfig::default()
            },
            Arc::new(Metrics::new()),
        )
        .unwrap();
        assert_eq!(
            client.webhooks_url(&[]).as_str(),
            "https://api.withleaf.io/services/alerts/api/alerts/webhooks"
        );
        assert_eq!(
            client.webhooks_url(&["failed-calls"]).as_str(),
            "https://api.withleaf.io/services/alerts/api/alerts/webhooks/failed-calls"
        );
        assert_eq!(
            client.webhooks_url(&["a/../b"]).as_str(),
            "https://api.withleaf.io/services/alerts/api/alerts/webhooks/a%2F..%2Fb"
        );
    }

    #[test]
    fn a_webhook_debug_never_shows_its_secret() {
        let wire: WireWebhook = serde_json::from_str(
            r#"{"id":"w1","events":["credentialsUnauthenticated"],"name":"n","url":"u","secret":"PLANTED-webhook-secret"}"#,
        )
        .unwrap();
        let webhook = Webhook::from(wire);
        assert!(!format!("{webhook:?}").contains("PLANTED"));
        assert_eq!(webhook.secret.expose_secret(), "PLANTED-webhook-secret");
    }
}
