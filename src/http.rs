//! The operator's HTTP endpoints: `/metrics` (OpenMetrics text), `/livez` and `/readyz`.
//!
//! `/readyz` reports whether the controller's watches have synced (or that this replica is a
//! standby waiting for the leader lease); it never depends on Leaf, so a Leaf outage cannot make
//! the kubelet restart the operator. `/livez` fails only when the process stops making progress.
//!
//! The default address `[::]` is bound dual-stack on purpose: IPv6-only and dual-stack clusters
//! probe and scrape over IPv6, IPv4 clusters over IPv4, and one listener serves both.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Content type of `prometheus_client::encoding::text::encode`, which writes OpenMetrics text.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long without a heartbeat before `/livez` reports the process as stuck.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(120);

/// Liveness and readiness as the controller and the leader loop report them.
///
/// Readiness is set by whoever owns the watches: the controller once its stores have synced, the
/// leader loop while this replica is a standby (a standby that is never Ready would block every
/// rolling update of a two-replica Deployment). Liveness is a heartbeat: the controller and
/// [`Health::heartbeat`] call [`Health::mark_alive`]; when nobody has for `stall_after`, the
/// runtime is wedged and a restart is the right cure.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    ready: AtomicBool,
    /// Milliseconds since `started` of the last `mark_alive`.
    last_alive_ms: AtomicU64,
    stall_after: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(DEFAULT_STALL_AFTER)
    }
}

impl Health {
    pub fn new(stall_after: Duration) -> Self {
        Self {
            started: Instant::now(),
            ready: AtomicBool::new(false),
            last_alive_ms: AtomicU64::new(0),
            stall_after,
        }
    }

    /// Marks the operator ready (watches synced, or standing by) or not ready (resyncing).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records that the loop calling it is still making progress.
    pub fn mark_alive(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_alive_ms.store(now, Ordering::Release);
    }

    pub fn is_alive(&self) -> bool {
        let last = Duration::from_millis(self.last_alive_ms.load(Ordering::Acquire));
        self.started.elapsed().saturating_sub(last) < self.stall_after
    }

    /// Calls `mark_alive` every `every` for as long as the returned future runs: a stuck runtime
    /// (every worker blocked) stops it, which is what `/livez` is there to catch.
    pub async fn heartbeat(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.mark_alive();
        }
    }
}

/// Failure to start the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("failed to bind the HTTP server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The router serving the three endpoints.
fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

/// Binds `addr` (port 0 picks a free port), logs `http server listening on ADDR` and returns the
/// bound address with the future that serves until `shutdown` resolves.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<
    (
        SocketAddr,
        impl Future<Output = Result<(), HttpError>> + Send,
    ),
    HttpError,
> {
    let listener = listen(addr).map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    tracing::info!(addr = %bound, "http server listening on {bound}");
    let app = router(metrics, health);
    let server = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(HttpError::Serve)
    };
    Ok((bound, server))
}

/// A listening socket on `addr`. An IPv6 address is bound with IPV6_V6ONLY off, so `[::]` takes
/// IPv4 connections too whatever the host's `net.ipv6.bindv6only` default; where the kernel has no
/// IPv6 at all (booted with `ipv6.disable=1`), `[::]` falls back to `0.0.0.0` on the same port
/// rather than failing the start.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let open = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        // A restarted operator can bind again while old connections sit in TIME_WAIT.
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    };
    let listener = match open(addr) {
        Err(error) if addr.ip().is_unspecified() && addr.is_ipv6() && no_ipv6(&error) => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::warn!(%error, "this host has no IPv6; listening on {v4} instead of {addr}");
            open(v4)?
        }
        other => other?,
    };
    tokio::net::TcpListener::from_std(listener)
}

/// Whether binding failed because the kernel has no IPv6 (EAFNOSUPPORT, or no address to bind).
fn no_ipv6(error: &std::io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    error.raw_os_error() == Some(EAFNOSUPPORT)
        || error.kind() == std::io::ErrorKind::AddrNotAvailable
}

/// Binds `addr` and serves on a spawned task until `shutdown` resolves; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, HttpError> {
    let (bound, server) = bind(addr, metrics, health, shutdown).await?;
    tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "http server stopped");
        }
    });
    Ok(bound)
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

async fn livez(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no progress\n")
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not synced\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_not_ready_until_told_and_alive_until_it_stalls() {
        let health = Health::new(Duration::from_millis(50));
        assert!(!health.is_ready());
        health.set_ready(true);
        assert!(health.is_ready());
        health.mark_alive();
        assert!(health.is_alive());
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            !health.is_alive(),
            "no heartbeat for longer than stall_after must fail livez"
        );
        health.mark_alive();
        assert!(health.is_alive());
    }

    #[tokio::test]
    async fn serves_metrics_livez_and_readyz_on_a_free_port() {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        health.mark_alive();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            metrics.clone(),
            health.clone(),
            async {
                let _ = rx.await;
            },
        )
        .await
        .unwrap();
        assert_ne!(addr.port(), 0);
        let get = |path: &'static str| async move {
            let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            (status, content_type, response.text().await.unwrap())
        };
        assert_eq!(get("/livez").await.0, 200);
        assert_eq!(get("/readyz").await.0, 503);
        health.set_ready(true);
        assert_eq!(get("/readyz").await.0, 200);
        metrics.record_rotation();
        let (status, content_type, body) = get("/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(content_type.as_deref(), Some(METRICS_CONTENT_TYPE));
        assert!(body.contains("leaf_operator_rotations_total 1"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        tx.send(()).unwrap();
    }

    #[tokio::test]
    async fn the_unspecified_ipv6_address_serves_ipv4_and_ipv6_clients() {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        health.mark_alive();
        let addr = serve(
            "[::]:0".parse().unwrap(),
            metrics,
            health,
            std::future::pending(),
        )
        .await
        .unwrap();
        let v4 = reqwest::get(format!("http://127.0.0.1:{}/livez", addr.port()))
            .await
            .expect("an IPv4 client reaches [::]");
        assert_eq!(v4.status().as_u16(), 200);
        if addr.is_ipv6() {
            let v6 = reqwest::get(format!("http://[::1]:{}/livez", addr.port()))
                .await
                .expect("an IPv6 client reaches [::]");
            assert_eq!(v6.status().as_u16(), 200);
        }
    }
}
