//! The accept loop: HTTP/1.1 connections served by hyper, each with a kill switch so a handler
//! can close its connection without answering (the "dropped connection" fault).

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::leaf_api::ConnKill;

/// Serves until the task is aborted; aborting drops the `JoinSet`, which closes every connection.
pub(crate) async fn serve(listener: TcpListener, app: Router) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let kill = Arc::new(Notify::new());
                let service = TowerToHyperService::new(app.clone().layer(Extension(ConnKill(kill.clone()))));
                connections.spawn(async move {
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        // Dropping the connection future closes the socket with no answer.
                        _ = kill.notified() => {}
                    }
                });
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
