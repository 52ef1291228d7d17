//! The alerts receiver: `POST /alerts` on its own port (`--alerts-addr`).
//!
//! Plain HTTP: inside the cluster it sits behind a Service, and TLS ends at the Ingress (Leaf
//! delivers only to https URLs in practice; the signature, not the transport, is what
//! authenticates a delivery). Order of checks, cheapest and safest first:
//! 1. not ready (no secret, or the controller's index not synced) -> 503, so Leaf retries;
//! 2. body larger than [`MAX_BODY_BYTES`] -> 413, read no further than the limit;
//! 3. signature over the raw bytes, constant time -> 401 when missing or wrong (counted, logged
//!    without the body). Only exception: an unsigned body that is byte-for-byte the registration
//!    confirmation gets 200 and changes nothing (Leaf does not say whether it signs it);
//! 4. only then parse: unreadable -> 400; anything readable -> 200 (acted on, or not ours).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use tracing::warn;

use super::handler::{AlertHandler, Handled, Source};
use super::payload;
use super::signature::{self, SignatureError};
use super::signing_secret::SigningKeys;
use crate::controller::polling::AlertsHealth;
use crate::http::HttpError;
use crate::metrics::Metrics;

/// The receiver's path.
pub const PATH: &str = "/alerts";
/// Leaf's credentials alerts are a few hundred bytes; 64 KiB leaves room for any event family.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the receiver needs.
pub struct Receiver {
    keys: Arc<SigningKeys>,
    handler: Arc<AlertHandler>,
    health: Arc<AlertsHealth>,
    metrics: Arc<Metrics>,
    refusals: LogGate,
}

impl Receiver {
    pub fn new(
        keys: Arc<SigningKeys>,
        handler: Arc<AlertHandler>,
        health: Arc<AlertsHealth>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            keys,
            handler,
            health,
            metrics,
            refusals: LogGate::new(Duration::from_secs(1)),
        }
    }
}

/// Lets a log line through at most once per `every` and counts what it held back: a flood of
/// forged posts must not become a flood of log lines (the metrics count every one).
struct LogGate {
    started: Instant,
    every_ms: u64,
    /// Milliseconds since `started` of the last line let through, plus one (0: never).
    last_ms: AtomicU64,
    held_back: AtomicU64,
}

impl LogGate {
    fn new(every: Duration) -> Self {
        Self {
            started: Instant::now(),
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            last_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when this line may be logged.
    fn pass(&self, now: Instant) -> Option<u64> {
        let now_ms =
            u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(0) + 1;
        let last = self.last_ms.load(Ordering::Acquire);
        let due = last == 0 || now_ms.saturating_sub(last) >= self.every_ms;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::AcqRel));
        }
        self.held_back.fetch_add(1, Ordering::AcqRel);
        None
    }
}

/// The receiver's routes (exposed for tests that drive it without a socket).
pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route(PATH, post(receive))
        .with_state(receiver)
}

/// Binds `addr`, logs `alerts receiver listening on ADDR` and serves on a spawned task until
/// `shutdown` resolves; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    receiver: Arc<Receiver>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, HttpError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    tracing::info!(addr = %bound, "alerts receiver listening on {bound}");
    let app = router(receiver);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "alerts receiver stopped");
        }
    });
    Ok(bound)
}

fn answer(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// Reads at most `limit` bytes; `Err(true)` when the body is larger, `Err(false)` when it broke.
async fn bounded_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, bool> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(true);
    }
    let mut bytes = Vec::with_capacity(declared.map_or(1024, |len| len as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| false)?;
        if bytes.len() + chunk.len() > limit {
            return Err(true);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    let metrics = &r.metrics.alerts;
    metrics.received(Source::Receiver.as_str());
    if !r.keys.is_loaded() || !r.handler.is_ready() {
        metrics.rejected("not_ready");
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no signing secret, or the controller is not watching (standby or starting)\n",
        );
    }
    let body = match bounded_body(&headers, body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(true) => {
            metrics.rejected("too_large");
            if let Some(held_back) = r.refusals.pass(Instant::now()) {
                warn!(
                    limit = MAX_BODY_BYTES,
                    held_back, "alert refused: body too large"
                );
            }
            return answer(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
        }
        Err(false) => {
            metrics.rejected("unreadable");
            return answer(StatusCode::BAD_REQUEST, "body could not be read\n");
        }
    };
    let now = Instant::now();
    let signature_header = headers.get(signature::HEADER).map(|v| v.as_bytes());
    if signature_header.is_none() && payload::is_confirmation_bytes(&body) {
        // Unsigned, so it proves nothing (anyone can send it): accepted, and it changes nothing.
        metrics.handled(Source::Receiver.as_str(), "confirmation_unsigned");
        if r.refusals.pass(now).is_some() {
            tracing::info!("unsigned webhook registration confirmation received");
        }
        return answer(StatusCode::OK, "confirmation received\n");
    }
    if let Err(error) = r.keys.verify(&body, signature_header, now) {
        metrics.rejected(error.label());
        // The body is never logged: it is unauthenticated input.
        if let Some(held_back) = r.refusals.pass(now) {
            warn!(
                reason = error.label(),
                body_bytes = body.len(),
                held_back,
                "alert refused (401): {}",
                match error {
                    SignatureError::Missing => "no X-Leaf-Signature header",
                    SignatureError::Malformed => "X-Leaf-Signature is not a base64 HMAC-SHA256",
                    SignatureError::Mismatch => "X-Leaf-Signature does not match the body",
                }
            );
        }
        return answer(StatusCode::UNAUTHORIZED, "signature refused\n");
    }
    metrics.verified();
    r.health.heard_from_leaf(now);
    match r.handler.handle(&body, Source::Receiver, now) {
        Handled::Malformed(_) => answer(StatusCode::BAD_REQUEST, "body is not a Leaf alert\n"),
        _ => answer(StatusCode::OK, "ok\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_gate_lets_one_line_a_second_through_and_counts_the_rest() {
        let gate = LogGate::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(gate.pass(t0), Some(0));
        assert_eq!(gate.pass(t0 + Duration::from_millis(10)), None);
        assert_eq!(gate.pass(t0 + Duration::from_millis(900)), None);
        assert_eq!(gate.pass(t0 + Duration::from_millis(1100)), Some(2));
        assert_eq!(gate.pass(t0 + Duration::from_millis(1200)), None);
    }
}
