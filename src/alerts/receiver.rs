//! The alerts receiver: `POST /alerts` on its own port (`--alerts-addr`).
//!
//! Plain HTTP: inside the cluster it sits behind a Service, and TLS ends at the Ingress (Leaf
//! delivers only to https URLs in practice; the signature, not the transport, is what
//! authenticates a delivery). Connections are served within bounds (a header read timeout, one
//! request per connection, a connection limit: see [`super::connections`]).
//! Order of checks, cheapest and safest first:
//! 1. not ready (no secret, or the controller's index not synced) -> 503, so Leaf retries;
//! 2. body larger than [`MAX_BODY_BYTES`] -> 413, read no further than the limit; not all there
//!    within [`BODY_READ_TIMEOUT`] -> 408. The buffer grows as bytes arrive: a declared length
//!    reserves nothing;
//! 3. signature over the raw bytes, constant time -> 401 when missing or wrong (counted, logged
//!    without the body). Only exception: an unsigned body that is byte-for-byte the registration
//!    confirmation gets 200 and changes nothing (Leaf does not say whether it signs it);
//! 4. only then parse: unreadable -> 400; anything readable -> 200 (acted on, or not ours).
//!
//! A verified delivery counts as hearing from Leaf (which may keep polling at the backstop) only
//! when it is fresh: see [`super::freshness`]. One that is not is still answered and handled.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use tracing::{debug, info, warn};

use super::connections::{self, BODY_READ_TIMEOUT, Limits};
use super::freshness::{self, ConfirmationGate, SentAt};
use super::handler::{AlertHandler, Handled, Source};
use super::log_gate::LogGate;
use super::payload::{self, Payload, PayloadError};
use super::signature::{self, SignatureError};
use super::signing_secret::SigningKeys;
use crate::controller::polling::AlertsHealth;
use crate::http::HttpError;
use crate::metrics::Metrics;

/// The receiver's path.
pub const PATH: &str = "/alerts";
/// Leaf's credentials alerts are a few hundred bytes; 64 KiB leaves room for any event family.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The body buffer's first allocation: a credentials alert fits.
const FIRST_BODY_CAPACITY: usize = 1024;

/// What the receiver needs.
pub struct Receiver {
    keys: Arc<SigningKeys>,
    handler: Arc<AlertHandler>,
    health: Arc<AlertsHealth>,
    metrics: Arc<Metrics>,
    refusals: LogGate,
    /// Whether a signed confirmation was counted under the current secret already.
    confirmations: ConfirmationGate,
    /// Stale or future-dated deliveries are logged, at most one line a second.
    not_fresh: LogGate,
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
            confirmations: ConfirmationGate::default(),
            not_fresh: LogGate::new(Duration::from_secs(1)),
        }
    }

    /// Tells `AlertsHealth` that Leaf was heard from, when this verified body is fresh (see
    /// [`super::freshness`]), and counts its freshness either way.
    fn count_if_fresh(&self, parsed: &Result<Payload, PayloadError>, now: Instant) {
        let sent = match parsed {
            Ok(Payload::Confirmation) => SentAt::Confirmation {
                first: self.confirmations.first_under(self.keys.generation()),
            },
            Ok(payload) => SentAt::Timestamp(payload.sent_at()),
            Err(_) => SentAt::Timestamp(None),
        };
        let freshness = freshness::freshness(sent, jiff::Timestamp::now(), freshness::WINDOW);
        self.metrics.alerts.freshness(freshness.label());
        if freshness.counts() {
            self.health.heard_from_leaf(now);
        } else if matches!(sent, SentAt::Timestamp(Some(_))) {
            // A late retry of Leaf's, a clock far off, or a replay: worth a line, not a warning.
            if let Some(held_back) = self.not_fresh.pass(now) {
                info!(
                    freshness = freshness.label(),
                    window_secs = freshness::WINDOW.as_secs(),
                    held_back,
                    "verified alert too far from our clock to count as hearing from Leaf (handled all the same)"
                );
            }
        } else {
            debug!(
                freshness = freshness.label(),
                "verified delivery does not count as hearing from Leaf"
            );
        }
    }
}

/// The receiver's routes (exposed for tests that drive it without a socket).
pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route(PATH, post(receive))
        .with_state(receiver)
}

/// Binds `addr`, logs `alerts receiver listening on ADDR` and serves, within the
/// [`connections`] limits, on a spawned task until `shutdown` resolves; returns the bound address.
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
    let limits = Limits::default();
    tracing::info!(
        addr = %bound,
        max_connections = limits.max_connections,
        "alerts receiver listening on {bound}"
    );
    let metrics = receiver.metrics.clone();
    tokio::spawn(connections::serve(
        listener,
        router(receiver),
        limits,
        metrics,
        shutdown,
    ));
    Ok(bound)
}

fn answer(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// Why a body was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyError {
    /// Larger than the limit (declared or counted).
    TooLarge,
    /// Not all there within the timeout.
    TimedOut,
    /// The connection broke, or the chunked framing was wrong.
    Unreadable,
}

/// Reads at most `limit` bytes within `timeout`. The buffer grows with what arrives (see
/// [`grown_capacity`]): a sender that declares 64 KiB and sends nothing makes us reserve nothing.
async fn bounded_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut bytes = Vec::new();
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| BodyError::Unreadable)?;
            let needed = bytes.len() + chunk.len();
            if needed > limit {
                return Err(BodyError::TooLarge);
            }
            let capacity = grown_capacity(bytes.capacity(), needed, limit);
            bytes.reserve_exact(capacity - bytes.len());
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

/// The capacity a body buffer of `capacity` grows to when it must hold `needed` (at most `limit`)
/// bytes: doubling, so that a body in many small chunks is copied a few times only, starting at
/// [`FIRST_BODY_CAPACITY`], and never beyond `limit` (a plain `Vec` would double 40 KiB to 80).
fn grown_capacity(capacity: usize, needed: usize, limit: usize) -> usize {
    if needed <= capacity {
        return capacity;
    }
    needed
        .max(capacity.saturating_mul(2))
        .max(FIRST_BODY_CAPACITY)
        .min(limit)
        .max(needed)
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
    let body = match bounded_body(&headers, body, MAX_BODY_BYTES, BODY_READ_TIMEOUT).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            metrics.rejected("too_large");
            if let Some(held_back) = r.refusals.pass(Instant::now()) {
                warn!(
                    limit = MAX_BODY_BYTES,
                    held_back, "alert refused: body too large"
                );
            }
            return answer(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
        }
        Err(BodyError::TimedOut) => {
            metrics.rejected("body_timeout");
            if let Some(held_back) = r.refusals.pass(Instant::now()) {
                warn!(
                    timeout_secs = BODY_READ_TIMEOUT.as_secs(),
                    held_back, "alert refused (408): the body did not arrive in time"
                );
            }
            return answer(StatusCode::REQUEST_TIMEOUT, "body not received in time\n");
        }
        Err(BodyError::Unreadable) => {
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
    let parsed = payload::parse(&body);
    r.count_if_fresh(&parsed, now);
    match r.handler.handle_parsed(parsed, Source::Receiver, now) {
        Handled::Malformed(_) => answer(StatusCode::BAD_REQUEST, "body is not a Leaf alert\n"),
        _ => answer(StatusCode::OK, "ok\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declaring(length: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, length.into());
        headers
    }

    /// A body arriving in `pieces` chunks of `size` bytes.
    fn chunked(pieces: usize, size: usize) -> Body {
        let chunks = (0..pieces).map(move |_| Ok::<_, std::io::Error>(vec![b'a'; size]));
        Body::from_stream(futures::stream::iter(chunks))
    }

    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_declared_length_reserves_nothing_before_the_bytes_arrive() {
        let body = bounded_body(
            &declaring(MAX_BODY_BYTES),
            Body::from("{}"),
            MAX_BODY_BYTES,
            LONG,
        )
        .await
        .unwrap();
        assert_eq!(body, b"{}");
        assert!(
            body.capacity() <= FIRST_BODY_CAPACITY,
            "capacity {} for 2 bytes",
            body.capacity()
        );
    }

    #[tokio::test]
    async fn the_buffer_grows_with_the_body_and_never_beyond_the_limit() {
        // 65 chunks of 1,000 bytes: a doubling Vec would reach 128,000 bytes for the last one.
        let body = bounded_body(&HeaderMap::new(), chunked(65, 1000), MAX_BODY_BYTES, LONG)
            .await
            .unwrap();
        assert_eq!(body.len(), 65_000);
        assert!(body.capacity() <= MAX_BODY_BYTES, "{}", body.capacity());
        assert_eq!(
            bounded_body(&HeaderMap::new(), chunked(66, 1000), MAX_BODY_BYTES, LONG).await,
            Err(BodyError::TooLarge),
            "counted, without a declared length"
        );
        assert_eq!(
            bounded_body(
                &declaring(MAX_BODY_BYTES + 1),
                chunked(1, 1),
                MAX_BODY_BYTES,
                LONG
            )
            .await,
            Err(BodyError::TooLarge),
            "declared"
        );
    }

    #[test]
    fn the_growth_table() {
        let limit = 64 * 1024;
        // (capacity, needed, grown to)
        for (capacity, needed, expected) in [
            (0, 0, 0),
            (0, 300, FIRST_BODY_CAPACITY),
            (0, 5000, 5000),
            (1024, 1000, 1024),
            (1024, 1025, 2048),
            (2048, 5000, 5000),
            (40_000, 40_001, limit),
            (limit, limit, limit),
            (usize::MAX / 2 + 1, usize::MAX / 2 + 2, usize::MAX / 2 + 2),
        ] {
            assert_eq!(
                grown_capacity(capacity, needed, limit),
                expected,
                "{capacity} for {needed}"
            );
        }
    }

    #[tokio::test]
    async fn a_body_that_stalls_times_out() {
        let stalled = futures::stream::iter([Ok::<_, std::io::Error>(b"{\"type\"".to_vec())])
            .chain(futures::stream::pending());
        let headers = declaring(100);
        let read = bounded_body(
            &headers,
            Body::from_stream(stalled),
            MAX_BODY_BYTES,
            Duration::from_millis(50),
        );
        let result = tokio::time::timeout(LONG, read)
            .await
            .expect("the read gives up by itself");
        assert_eq!(result, Err(BodyError::TimedOut));
    }
}
