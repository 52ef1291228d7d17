//! The receiver's connections, served within bounds, so that no client can hold the receiver or
//! run the process out of memory or file descriptors. `axum::serve` has none of these (no header
//! read timeout at all), so the receiver runs its own accept loop with hyper's HTTP/1 server:
//!
//! - **Request head**: the request line and headers must arrive within [`HEADER_READ_TIMEOUT`]
//!   and fit [`MAX_HEAD_BYTES`]; a client that trickles them (slowloris) is cut off.
//! - **Body**: the receiver reads it within [`BODY_READ_TIMEOUT`] (408 otherwise, see
//!   `receiver`).
//! - **One request per connection** (no keep-alive): after its answer a connection closes, so it
//!   cannot sit idle, and an answer (a few bytes) always fits the socket's send buffer, so a
//!   client that never reads cannot wedge a write. [`CONNECTION_DEADLINE`] closes anything still
//!   open after all that, whatever hyper does.
//! - **At most [`DEFAULT_MAX_CONNECTIONS`] at once**. A connection that finds
//!   them all busy is counted (`alerts_connections_waited_total`) and waits for the next free slot;
//!   while it waits nothing more is accepted, so the connections behind it wait in the kernel's
//!   listen backlog, first come first served, costing no file descriptor or memory of ours. With
//!   every slot freed within [`CONNECTION_DEADLINE`], a delivery from Leaf waits at most that
//!   long behind an attacker's connections instead of being refused (Leaf's next retry would come
//!   a minute later, its later ones after 30 minutes and more).
//! - **Shutdown**: accepting stops at once; connections under way finish (each within its
//!   deadline).
//!
//! HTTP/2 is not spoken: Leaf delivers through the Ingress, which talks HTTP/1.1 to its backends.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::log_gate::LogGate;
use crate::metrics::Metrics;

/// Time allowed for the request line and headers, from the connection's start.
///
/// Leaf's delivery is one small POST written at once; through the Ingress it arrives in one or
/// two TCP segments within milliseconds. Ten seconds still cover three lost segments in a row
/// (retransmissions after 1, 2 and 4 s) while bounding how long a client that sends nothing, or
/// a byte at a time, holds one of the connection slots.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for the whole body once the headers are in; the same reasoning as
/// [`HEADER_READ_TIMEOUT`] (a body is at most 64 KiB, a credentials alert a few hundred bytes, and
/// the Ingress by default buffers the whole request before passing it on).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a connection may live: head and body time plus a margin for the answer. Only a
/// safety net: the two timeouts above end every connection sooner.
pub const CONNECTION_DEADLINE: Duration =
    Duration::from_secs(HEADER_READ_TIMEOUT.as_secs() + BODY_READ_TIMEOUT.as_secs() + 10);

/// Connections served at once.
///
/// Far more than Leaf needs (a delivery takes about a millisecond; even the alerts storm of a
/// 20,000-connection fleet, see BENCHMARKS.md, is served by a few dozen at a time) and few enough
/// to bound what an attacker can make us hold: at most [`MAX_HEAD_BYTES`] of buffered head and
/// 64 KiB of body each, about 20 MiB for all of them, and 256 file descriptors, well under the
/// 1,024 a container's soft limit may be. A constant, not a flag: every operator setting is also
/// a chart value, which is not worth adding before anyone needs another number.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// hyper's read buffer per connection, which bounds the request head (hyper's default is about
/// 400 KiB; its minimum 8 KiB). Leaf's headers and an Ingress's additions take about 1 KiB; a
/// larger head is answered 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The bounds [`serve`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub connection_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            connection_deadline: CONNECTION_DEADLINE,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves, then lets the
/// connections under way finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .max_buf_size(MAX_HEAD_BYTES);
    let at_limit = LogGate::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                metrics.alerts.connection_waited();
                if let Some(held_back) = at_limit.pass(Instant::now()) {
                    warn!(
                        max_connections = limits.max_connections,
                        held_back, "alerts receiver at its connection limit: new connections wait"
                    );
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        // Only a closed semaphore fails, and nothing closes it.
                        Err(_) => break,
                    },
                }
            }
        };
        let open = metrics.alerts.connection_opened();
        let connection = graceful.watch(
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone())),
        );
        let metrics = metrics.clone();
        let deadline = limits.connection_deadline;
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open;
            match tokio::time::timeout(deadline, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) if error.is_timeout() => {
                    metrics.alerts.rejected("header_timeout");
                    debug!("alerts connection closed: no complete request head in time");
                }
                // A client that went away, or a request hyper could not parse (answered 400).
                Ok(Err(error)) => debug!(%error, "alerts connection ended with an error"),
                Err(_) => {
                    metrics.alerts.rejected("connection_deadline");
                    debug!("alerts connection closed at its deadline");
                }
            }
        });
    }
    // New connections are refused from here on; those under way finish.
    drop(listener);
    if tokio::time::timeout(limits.connection_deadline, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("alerts connections still open at the end of the shutdown grace");
    }
}

/// An error from `accept`: a connection that went away before it was accepted is skipped; any
/// other (out of file descriptors, say) is logged and retried after a pause, not in a hot loop.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    warn!(%error, "alerts receiver cannot accept connections; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const REQUEST: &[u8] =
        b"POST /ok HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi";

    /// A server with `limits` on a free port; the sender ends it.
    async fn server(
        limits: Limits,
    ) -> (
        std::net::SocketAddr,
        Arc<Metrics>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        // The handler reads the whole body, as the receiver does.
        let app = Router::new().route("/ok", post(|body: String| async move { body }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, limits, metrics.clone(), async {
            let _ = stopped.await;
        }));
        (addr, metrics, stop, task)
    }

    /// Reads until the peer closes (or 5 s pass); returns what came.
    async fn read_to_close(stream: &mut TcpStream) -> Result<String, &'static str> {
        let mut answer = Vec::new();
        match tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await {
            Ok(_) => Ok(String::from_utf8_lossy(&answer).into_owned()),
            Err(_) => Err("the server kept the connection open"),
        }
    }

    fn sample(metrics: &Metrics, series: &str) -> f64 {
        metrics
            .encode()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_request_head_that_trickles_is_cut_off_at_the_header_timeout() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, metrics, _stop, _task) = server(limits).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        slow.write_all(b"POST /ok HTTP/1.1\r\nHost: te")
            .await
            .unwrap();
        let answer = read_to_close(&mut slow).await.unwrap();
        assert!(
            !answer.contains("200"),
            "no answer to half a head: {answer:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        wait_for("the header timeout to be counted", || {
            sample(
                &metrics,
                r#"leaf_operator_alerts_rejected_total{reason="header_timeout"}"#,
            ) == 1.0
        })
        .await;
    }

    #[tokio::test]
    async fn a_request_head_larger_than_the_buffer_is_refused_with_431() {
        let (addr, _metrics, _stop, _task) = server(Limits::default()).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let padding = "a".repeat(MAX_HEAD_BYTES);
        let head = format!("POST /ok HTTP/1.1\r\nHost: test\r\nX-Padding: {padding}\r\n\r\n");
        // The server may answer and close before it has read everything.
        let _ = client.write_all(head.as_bytes()).await;
        let answer = read_to_close(&mut client).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    }

    #[tokio::test]
    async fn one_request_per_connection_then_it_closes() {
        let (addr, _metrics, _stop, _task) = server(Limits::default()).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(REQUEST).await.unwrap();
        let answer = read_to_close(&mut client).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer:?}"
        );
    }

    #[tokio::test]
    async fn beyond_the_limit_a_connection_waits_for_a_free_slot_and_is_counted() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let (addr, metrics, _stop, _task) = server(limits).await;
        let open = "leaf_operator_alerts_connections";
        let waited = "leaf_operator_alerts_connections_waited_total";
        let mut idle = vec![
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        ];
        wait_for("two open connections", || sample(&metrics, open) == 2.0).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(REQUEST).await.unwrap();
        wait_for("the third to wait", || sample(&metrics, waited) == 1.0).await;
        assert_eq!(sample(&metrics, open), 2.0, "never more than the limit");
        idle.pop();
        let answer = read_to_close(&mut third).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        drop(idle);
        wait_for("every connection closed", || sample(&metrics, open) == 0.0).await;
        assert_eq!(sample(&metrics, waited), 1.0);
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_lets_a_request_under_way_finish() {
        let (addr, metrics, stop, task) = server(Limits::default()).await;
        let mut under_way = TcpStream::connect(addr).await.unwrap();
        under_way
            .write_all(b"POST /ok HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n")
            .await
            .unwrap();
        wait_for("the request to be under way", || {
            sample(&metrics, "leaf_operator_alerts_connections") == 1.0
        })
        .await;
        stop.send(()).unwrap();
        // The listener goes at once: a new connection is refused.
        wait_for_refused(addr).await;
        under_way.write_all(b"hi").await.unwrap();
        let answer = read_to_close(&mut under_way).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serve returns once the last connection closed")
            .unwrap();
    }

    async fn wait_for_refused(addr: std::net::SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting after shutdown");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
