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
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use tracing::warn;

use super::handler::{AlertHandler, Handled, Source};
use super::health::AlertsHealth;
use super::payload;
use super::signature::{self, SignatureError};
use super::signing_secret::SigningKeys;
use crate::http::HttpError;
use crate::metrics::Metrics;

/// The receiver's path.
pub const PATH: &str = "/alerts";
/// Leaf's credentials alerts are a few hundred bytes; 64 KiB leaves room for any event family.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the receiver needs.
pub struct Receiver {
    pub keys: Arc<SigningKeys>,
    pub handler: Arc<AlertHandler>,
    pub health: Arc<AlertsHealth>,
    pub metrics: Arc<Metrics>,
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
            warn!(limit = MAX_BODY_BYTES, "alert refused: body too large");
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
        tracing::info!("unsigned webhook registration confirmation received");
        return answer(StatusCode::OK, "confirmation received\n");
    }
    if let Err(error) = r.keys.verify(&body, signature_header, now) {
        metrics.rejected(error.label());
        // The body is never logged: it is unauthenticated input.
        warn!(
            reason = error.label(),
            body_bytes = body.len(),
            "alert refused: {}",
            match error {
                SignatureError::Missing => "no X-Leaf-Signature header",
                SignatureError::Malformed => "X-Leaf-Signature is not a base64 HMAC-SHA256",
                SignatureError::Mismatch => "X-Leaf-Signature does not match the body",
            }
        );
        return answer(StatusCode::UNAUTHORIZED, "signature refused\n");
    }
    metrics.verified();
    r.health.heard_from_leaf(now);
    match r.handler.handle(&body, Source::Receiver, now) {
        Handled::Malformed(_) => answer(StatusCode::BAD_REQUEST, "body is not a Leaf alert\n"),
        _ => answer(StatusCode::OK, "ok\n"),
    }
}
