//! The accept loop: HTTP/1.1 connections served by hyper, each with a kill switch so a handler
//! can close its connection without answering (the "dropped connection" fault), and optionally
//! closed after a time without traffic, as the load balancer in front of Leaf would.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::leaf_api::ConnKill;

/// Serves until the task is aborted; aborting drops the `JoinSet`, which closes every connection.
///
/// With `idle_timeout`, a connection that has carried no byte for that long is shut down
/// gracefully (an answer in progress is finished first). Without it, idle keep-alive connections
/// stay open until the client closes them.
pub(crate) async fn serve(listener: TcpListener, app: Router, idle_timeout: Option<Duration>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors, most likely: accepting again at once would spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let kill = Arc::new(Notify::new());
                let service = TowerToHyperService::new(app.clone().layer(Extension(ConnKill(kill.clone()))));
                connections.spawn(serve_connection(stream, service, kill, idle_timeout));
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    kill: Arc<Notify>,
    idle_timeout: Option<Duration>,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
        > + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Activity::new();
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(connection);
    let idle = async {
        match idle_timeout {
            Some(timeout) => activity.idle_for(timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(idle);
    tokio::select! {
        _ = connection.as_mut() => return,
        // Dropping the connection future closes the socket with no answer.
        _ = kill.notified() => return,
        _ = &mut idle => {}
    }
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        _ = connection => {}
        _ = kill.notified() => {}
    }
}

/// When a connection last moved a byte.
#[derive(Clone)]
struct Activity {
    since: Instant,
    last_millis: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            last_millis: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = self.since.elapsed().as_millis() as u64;
        self.last_millis.store(now, Ordering::Relaxed);
    }

    /// Returns once no byte has moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
            let idle = self.since.elapsed().saturating_sub(last);
            if idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }
}

/// A stream that records its activity.
struct Tracked {
    inner: TcpStream,
    activity: Activity,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::{StandIn, StandInConfig};

    /// Sends one keep-alive request on a raw connection, reads the whole answer, then waits
    /// for the server to close the connection; returns how long that took.
    async fn idle_close_after(config: StandInConfig) -> Option<Duration> {
        let standin = StandIn::start(config).await;
        let mut stream = tokio::net::TcpStream::connect(standin.addr())
            .await
            .unwrap();
        stream
            .write_all(b"GET /_standin/counters HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        // The counters answer is small: one read after the headers arrive holds it.
        let n = stream.read(&mut chunk).await.unwrap();
        answer.extend_from_slice(&chunk[..n]);
        assert!(answer.starts_with(b"HTTP/1.1 200"), "an answer came");
        let answered = Instant::now();
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut chunk)).await {
            Ok(Ok(0)) => Some(answered.elapsed()),
            Ok(other) => panic!("expected the server to close the connection, got {other:?}"),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        let config = StandInConfig {
            idle_timeout: Some(Duration::from_millis(300)),
            ..StandInConfig::default()
        };
        let closed = idle_close_after(config).await.expect("closed within 3 s");
        assert!(
            closed >= Duration::from_millis(250),
            "closed after {closed:?}, not before the timeout"
        );
    }

    #[tokio::test]
    async fn without_an_idle_timeout_an_idle_connection_stays_open() {
        assert_eq!(
            idle_close_after(StandInConfig::default()).await,
            None,
            "still open after 3 s"
        );
    }
}
