//! The HTTP client for Leaf: builds URLs, applies the rate limit and the bearer token, re-logs in
//! once on a 401, classifies answers and records every request in the metrics.
//!
//! It does not retry 5xx or 429 itself: the controller backs off per object (using
//! [`LeafError::retry_after`]), which keeps one slow object from holding the others up.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tracing::debug;

use super::account::LeafAccount;
use super::auth::TokenCache;
use super::config::LeafClientConfig;
use super::error::{LeafError, NotSent, body_excerpt};
use super::provider::Provider;
use super::ratelimit::RateLimiter;
use super::types::{Credential, CredentialEvent, WireCredential, WireEvent, sort_newest_first};
use crate::metrics::Metrics;

/// Answers larger than this are cut: Leaf's documented answers are small JSON documents.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A client for Leaf's user-management API. Cheap to clone; clones share the token cache and
/// the rate limit.
#[derive(Clone)]
pub struct LeafClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LeafClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafClient")
            .field("origin", &self.origin())
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    origin: Url,
    metrics: Arc<Metrics>,
    limiter: RateLimiter,
    tokens: TokenCache,
}

/// What a write (a POST or DELETE of a credential) must satisfy at the instant it is sent: the
/// send deadline recorded in its intent, and the leadership fence. Checked immediately before
/// every send of it, after the rate limiter's wait and a possible login, and again before the
/// retry after a 401: the window in which a write may land is counted from its deadline, so a
/// write that leaves later could land after every replica considers it over.
pub struct SendGuard<'a> {
    /// The latest instant the request may leave.
    pub deadline: std::time::Instant,
    /// The leadership fence: whether this replica may write to Leaf now.
    pub may_send: &'a (dyn Fn() -> bool + Send + Sync),
}

impl SendGuard<'_> {
    /// `Ok` when the write may leave at `now`.
    pub fn check(&self, now: std::time::Instant) -> Result<(), LeafError> {
        if now >= self.deadline {
            return Err(LeafError::NotSent(NotSent::DeadlinePassed));
        }
        if !(self.may_send)() {
            return Err(LeafError::NotSent(NotSent::Fenced));
        }
        Ok(())
    }
}

/// What a DELETE found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// Leaf removed the credential (2xx).
    Removed,
    /// Leaf had none (404): someone removed it before, or a read of Leaf's still lags.
    NothingThere,
}

/// What Leaf answered: status, headers and the (bounded) body. Never logged.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: String,
}

#[derive(Clone, Copy)]
pub(super) enum Operation {
    Authenticate,
    GetCredential,
    CreateCredential,
    DeleteCredential,
    CredentialEvents,
    /// A call of the Alerts API (`super::alerts`), named for the metrics.
    Alerts(&'static str),
    /// A call of the Magic Link (widgets) API or of the app keys (`super::magic_link`), named
    /// for the metrics.
    MagicLink(&'static str),
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Authenticate => "authenticate",
            Self::GetCredential => "get_credential",
            Self::CreateCredential => "create_credential",
            Self::DeleteCredential => "delete_credential",
            Self::CredentialEvents => "credential_events",
            Self::Alerts(name) | Self::MagicLink(name) => name,
        }
    }
}

impl LeafClient {
    pub fn new(config: LeafClientConfig, metrics: Arc<Metrics>) -> Result<Self, LeafError> {
        let origin = parse_origin(&config.origin)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // A redirect could carry our bearer token to another host: never follow one.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("leaf-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| LeafError::Config {
                detail: format!("cannot build the HTTP client: {error}"),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                origin,
                metrics,
                limiter: RateLimiter::new(config.requests_per_second, config.burst),
                tokens: TokenCache::default(),
            }),
        })
    }

    /// The origin as a URL, for building the paths of other Leaf services.
    pub(super) fn base_url(&self) -> &Url {
        &self.inner.origin
    }

    /// The origin requests go to (scheme, host, port), without a trailing `/`.
    pub fn origin(&self) -> String {
        self.inner.origin.as_str().trim_end_matches('/').to_string()
    }

    /// The provider credential of a Leaf user; `None` when Leaf has none (404).
    pub async fn get_credential<P: Provider>(
        &self,
        account: &LeafAccount,
        leaf_user_id: &str,
    ) -> Result<Option<Credential>, LeafError> {
        let url = self.credential_url(leaf_user_id, P::PATH_SEGMENT, false);
        let answer = self
            .authorized(Operation::GetCredential, account, Method::GET, url, None)
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => parse_credential(&answer.body).map(Some),
            status => Err(LeafError::from_answer(
                status,
                &answer.headers,
                &answer.body,
                false,
            )),
        }
    }

    /// Creates the provider credential of a Leaf user. Leaf has no update: a change is a delete
    /// then a create. A credential already there is [`LeafError::AlreadyExists`] (whatever form
    /// Leaf uses); Leaf may also silently replace it. An unknown user is
    /// [`LeafError::UserNotFound`].
    pub async fn create_credential<P: Provider>(
        &self,
        account: &LeafAccount,
        leaf_user_id: &str,
        request: &P::CreateRequest,
        guard: &SendGuard<'_>,
    ) -> Result<Credential, LeafError> {
        let url = self.credential_url(leaf_user_id, P::PATH_SEGMENT, false);
        let body = P::create_body(request);
        let secrets: Vec<&str> = P::secrets(request)
            .into_iter()
            .map(|secret| secret.expose_secret())
            .collect();
        let answer = self
            .guarded(
                Operation::CreateCredential,
                account,
                Method::POST,
                url,
                Some(&body),
                Some(guard),
            )
            .await
            .map_err(|error| error.without_values(&secrets))?;
        drop(body);
        if !answer.status.is_success() {
            return Err(
                LeafError::from_answer(answer.status, &answer.headers, &answer.body, true)
                    .without_values(&secrets),
            );
        }
        // A success whose body cannot be read is `InvalidResponse`, which counts as applied: the
        // caller keeps its create in doubt and recognises the credential from its next GET, by its
        // own ownership rules, rather than this call guessing that whatever a GET shows is ours.
        parse_credential(&answer.body)
    }

    /// Deletes the provider credential of a Leaf user (Leaf's DELETE names the user, not the
    /// credential: it removes whatever the user has when it lands). 404 is
    /// [`Deleted::NothingThere`], for the caller to judge (gone, or a read that lags).
    pub async fn delete_credential<P: Provider>(
        &self,
        account: &LeafAccount,
        leaf_user_id: &str,
        guard: &SendGuard<'_>,
    ) -> Result<Deleted, LeafError> {
        let url = self.credential_url(leaf_user_id, P::PATH_SEGMENT, false);
        let answer = self
            .guarded(
                Operation::DeleteCredential,
                account,
                Method::DELETE,
                url,
                None,
                Some(guard),
            )
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(Deleted::NothingThere),
            status if status.is_success() => Ok(Deleted::Removed),
            status => Err(LeafError::from_answer(
                status,
                &answer.headers,
                &answer.body,
                false,
            )),
        }
    }

    /// The events Leaf logged for the credential, newest first; empty when there are none or the
    /// credential does not exist (404).
    pub async fn credential_events<P: Provider>(
        &self,
        account: &LeafAccount,
        leaf_user_id: &str,
    ) -> Result<Vec<CredentialEvent>, LeafError> {
        let url = self.credential_url(leaf_user_id, P::PATH_SEGMENT, true);
        let answer = self
            .authorized(Operation::CredentialEvents, account, Method::GET, url, None)
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            status if status.is_success() => {
                let mut events = parse_events(&answer.body)?;
                sort_newest_first(&mut events);
                Ok(events)
            }
            status => Err(LeafError::from_answer(
                status,
                &answer.headers,
                &answer.body,
                false,
            )),
        }
    }

    /// `{origin}/services/usermanagement/api/users/{id}/{segment}[/events]`, the id encoded as
    /// one path segment (a `/` in it cannot reach another path).
    fn credential_url(&self, leaf_user_id: &str, segment: &str, events: bool) -> Url {
        let mut url = self.inner.origin.clone();
        {
            let mut path = url.path_segments_mut().expect("origin is a base URL");
            path.pop_if_empty().extend([
                "services",
                "usermanagement",
                "api",
                "users",
                leaf_user_id,
                segment,
            ]);
            if events {
                path.push("events");
            }
        }
        url
    }

    fn authenticate_url(&self) -> Url {
        let mut url = self.inner.origin.clone();
        url.path_segments_mut()
            .expect("origin is a base URL")
            .pop_if_empty()
            .extend(["api", "authenticate"]);
        url
    }

    /// Sends a call with the account's bearer token. On a 401 a password account logs in again
    /// once and the call is retried once (a 401 comes before Leaf's handler runs, so the first
    /// send did nothing); a second 401 (or any 401/403 for a static token) is
    /// [`LeafError::AuthFailed`]. A write's `guard` is checked before each of its sends.
    pub(super) async fn authorized(
        &self,
        operation: Operation,
        account: &LeafAccount,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, LeafError> {
        self.guarded(operation, account, method, url, body, None)
            .await
    }

    /// [`LeafClient::authorized`] for a write: `guard` is checked before each of its sends.
    pub(super) async fn guarded(
        &self,
        operation: Operation,
        account: &LeafAccount,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        guard: Option<&SendGuard<'_>>,
    ) -> Result<Answer, LeafError> {
        let token = self.token(account).await?;
        let answer = self
            .execute(
                operation,
                method.clone(),
                url.clone(),
                Some(&token),
                body,
                guard,
            )
            .await?;
        let answer = if answer.status == StatusCode::UNAUTHORIZED && account.can_login() {
            self.inner.tokens.invalidate(account, &token).await;
            let token = self.token(account).await?;
            self.execute(operation, method, url, Some(&token), body, guard)
                .await?
        } else {
            answer
        };
        if answer.status == StatusCode::UNAUTHORIZED || answer.status == StatusCode::FORBIDDEN {
            return Err(LeafError::from_answer(
                answer.status,
                &answer.headers,
                &answer.body,
                false,
            ));
        }
        Ok(answer)
    }

    async fn token(&self, account: &LeafAccount) -> Result<SecretString, LeafError> {
        self.inner
            .tokens
            .token(account, || self.login(account))
            .await
    }

    /// `POST /api/authenticate`; returns the `id_token`.
    async fn login(&self, account: &LeafAccount) -> Result<SecretString, LeafError> {
        let LeafAccount::Password { username, password } = account else {
            return Err(LeafError::AuthFailed {
                status: None,
                retry_after: None,
                detail: "a static token cannot log in".to_string(),
            });
        };
        // rememberMe gives a 30-day token instead of 24 h: fewer logins. Leaf's own docs send
        // it as the string "true".
        let body = serde_json::json!({
            "username": username,
            "password": password.expose_secret(),
            "rememberMe": "true",
        });
        let answer = self
            .execute(
                Operation::Authenticate,
                Method::POST,
                self.authenticate_url(),
                None,
                Some(&body),
                None,
            )
            .await?;
        drop(body);
        if !answer.status.is_success() {
            let error = LeafError::from_answer(answer.status, &answer.headers, &answer.body, false)
                .without_values(&[password.expose_secret()]);
            return Err(match error {
                LeafError::Rejected { status, detail } => LeafError::AuthFailed {
                    status: Some(status),
                    retry_after: None,
                    detail,
                },
                other => other,
            });
        }
        let parsed: serde_json::Value =
            serde_json::from_str(&answer.body).map_err(|_| LeafError::InvalidResponse {
                detail: "the login answer is not JSON".to_string(),
            })?;
        ["id_token", "idToken", "token", "access_token"]
            .iter()
            .find_map(|key| parsed.get(*key).and_then(|v| v.as_str()))
            .filter(|token| !token.is_empty())
            .map(|token| SecretString::from(token.to_string()))
            .ok_or_else(|| LeafError::InvalidResponse {
                detail: "the login answer has no id_token".to_string(),
            })
    }

    /// One HTTP exchange: waits for the rate limit, checks a write's `guard`, sends, reads the
    /// bounded body, records the metrics. Logs operation, status and latency only: never URLs'
    /// query, headers or bodies.
    async fn execute(
        &self,
        operation: Operation,
        method: Method,
        url: Url,
        token: Option<&SecretString>,
        body: Option<&serde_json::Value>,
        guard: Option<&SendGuard<'_>>,
    ) -> Result<Answer, LeafError> {
        self.inner.limiter.acquire().await;
        // Immediately before the send: the rate limiter's wait (and a login before it) may have
        // taken the write past its deadline, or this replica past its lease.
        if let Some(guard) = guard
            && let Err(refused) = guard.check(std::time::Instant::now())
        {
            debug!(
                operation = operation.as_str(),
                error = %refused,
                "Leaf write not sent"
            );
            return Err(refused);
        }
        let started = Instant::now();
        let mut request = self
            .inner
            .http
            .request(method, url)
            .header(ACCEPT, "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(token.expose_secret());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let result = async {
            let mut response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut bytes = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                let room = MAX_BODY_BYTES.saturating_sub(bytes.len());
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if room <= chunk.len() {
                    break;
                }
            }
            Ok::<_, reqwest::Error>(Answer {
                status,
                headers,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        }
        .await;
        let elapsed = started.elapsed();
        let status = result.as_ref().ok().map(|answer| answer.status.as_u16());
        self.inner
            .metrics
            .record_leaf_request(operation.as_str(), status, elapsed);
        match result {
            Ok(answer) => {
                debug!(
                    operation = operation.as_str(),
                    status = answer.status.as_u16(),
                    latency_ms = duration_ms(elapsed),
                    "Leaf request"
                );
                Ok(answer)
            }
            Err(error) => {
                let error = LeafError::from_transport(&error);
                debug!(
                    operation = operation.as_str(),
                    status = "error",
                    latency_ms = duration_ms(elapsed),
                    error = %error,
                    "Leaf request failed"
                );
                Err(error)
            }
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn parse_origin(origin: &str) -> Result<Url, LeafError> {
    let invalid = |why: &str| LeafError::Config {
        detail: format!(
            "Leaf origin {:?} {why}",
            crate::leaf::sanitize::excerpt(origin)
        ),
    };
    let url = Url::parse(origin.trim()).map_err(|_| invalid("is not a URL"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid("must be http or https"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not contain credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    Ok(url)
}

/// A credential answer, refused when it is not JSON or carries no usable id (nothing without an
/// id can be owned, compared or deleted safely).
fn parse_credential(body: &str) -> Result<Credential, LeafError> {
    let credential = serde_json::from_str::<WireCredential>(body)
        .map(Credential::from)
        .map_err(|_| LeafError::InvalidResponse {
            detail: format!(
                "credential answer is not the documented JSON: {}",
                body_excerpt(body)
            ),
        })?;
    if credential.id.is_empty() {
        return Err(LeafError::InvalidResponse {
            detail: "credential answer has no usable id".to_string(),
        });
    }
    Ok(credential)
}

fn parse_events(body: &str) -> Result<Vec<CredentialEvent>, LeafError> {
    #[derive(serde::Deserialize)]
    struct Wrapped {
        #[serde(alias = "events", alias = "items", alias = "data")]
        content: Vec<WireEvent>,
    }
    if body.trim().is_empty() {
        return Ok(Vec::new());
    }
    let wire = serde_json::from_str::<Vec<WireEvent>>(body)
        .or_else(|_| serde_json::from_str::<Wrapped>(body).map(|w| w.content))
        .map_err(|_| LeafError::InvalidResponse {
            detail: "events answer is not a JSON array".to_string(),
        })?;
    Ok(wire.into_iter().map(CredentialEvent::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(origin: &str) -> LeafClient {
        LeafClient::new(
            LeafClientConfig {
                origin: origin.to_string(),
                ..LeafClientConfig::default()
            },
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    #[test]
    fn urls_follow_the_documented_paths_and_encode_the_user_id() {
        let c = client("https://api.withleaf.io/");
        assert_eq!(
            c.authenticate_url().as_str(),
            "https://api.withleaf.io/api/authenticate"
        );
        assert_eq!(
            c.credential_url("u-1", "trimble-credentials", false)
                .as_str(),
            "https://api.withleaf.io/services/usermanagement/api/users/u-1/trimble-credentials"
        );
        assert_eq!(
            c.credential_url("a/../b", "trimble-credentials", true)
                .as_str(),
            "https://api.withleaf.io/services/usermanagement/api/users/a%2F..%2Fb/trimble-credentials/events"
        );
    }

    #[test]
    fn bad_origins_are_refused_without_echoing_credentials() {
        for origin in [
            "",
            "ftp://x",
            "not a url",
            "https://user:pw-secret@host",
            "https://h/?q=1",
        ] {
            let error = LeafClient::new(
                LeafClientConfig {
                    origin: origin.to_string(),
                    ..LeafClientConfig::default()
                },
                Arc::new(Metrics::new()),
            )
            .unwrap_err();
            assert!(
                matches!(error, LeafError::Config { .. }),
                "{origin}: {error}"
            );
        }
    }

    #[test]
    fn events_parse_from_an_array_or_a_wrapper_or_nothing() {
        assert_eq!(parse_events("").unwrap(), vec![]);
        assert_eq!(parse_events("[]").unwrap(), vec![]);
        assert_eq!(
            parse_events(r#"{"content":[{"id":"1"}]}"#).unwrap().len(),
            1
        );
        assert!(parse_events("<html>").is_err());
    }
}
