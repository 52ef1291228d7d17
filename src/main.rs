//! `leaf-operator`: parse and validate the configuration, start logging, build the parts, and run
//! them until SIGTERM or Ctrl-C: the HTTP endpoints and the alerts receiver on every replica, the
//! controller (with the alerts registration and the leader label) where leader election says so.
//!
//! How each part is built from the flags is the business of `config`'s file for that part; this
//! file only wires the parts together.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::FutureExt;
use futures::future::BoxFuture;
use leaf_operator::alerts::routing::LeaderLabel;
use leaf_operator::alerts::{Alerts, AlertsConfig};
use leaf_operator::config::Config;
use leaf_operator::controller::{self, Context};
use leaf_operator::default_account::DefaultAccount;
use leaf_operator::http::{self, Health};
use leaf_operator::leader;
use leaf_operator::leaf::LeafClient;
use leaf_operator::metrics::Metrics;
use leaf_operator::metrics::ready_gauge::ReadyGauge;
use leaf_operator::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(error) = config.validate() {
        eprintln!("leaf-operator: invalid configuration: {error}");
        return ExitCode::from(2);
    }
    telemetry::init(config.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "leaf-operator stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    // The parts, each built once from the configuration.
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let leaf = LeafClient::new(config.leaf_client(), metrics.clone())?;
    let default_account = config.default_account();
    log_default_account(&default_account);
    if let Some(interval) = config.test_refresh_interval {
        tracing::warn!(?interval, "TEST ONLY: every refreshInterval is replaced");
    }
    let identity = config.identity();
    let fence = config.fence();
    // The alerts health exists before the Context, which holds it from the start; the receiver
    // started below reports to the same one.
    let alerts_config = config.alerts();
    let alerts_health = alerts_config.as_ref().map(AlertsConfig::new_health);
    let settings = config.controller_settings(
        default_account.clone(),
        fence.clone(),
        alerts_health.clone(),
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        leaf,
        metrics.clone(),
        identity.clone(),
        settings,
    ));
    let gauge_ctx = ctx.clone();
    metrics.register_collector(Box::new(ReadyGauge::from_fn(move || {
        gauge_ctx.all_objects()
    })));

    // On every replica: the HTTP endpoints, and the alerts receiver (a standby answers 503).
    let shutdown = shutdown_signal().shared();
    let health = Arc::new(Health::default());
    health.mark_alive();
    tokio::spawn(health.clone().heartbeat(Duration::from_secs(5)));
    http::serve(
        config.http_addr,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    let alerts = match alerts_config.zip(alerts_health) {
        Some((alerts_config, alerts_health)) => Some(
            Alerts::start(
                alerts_config,
                alerts_health,
                ctx.clone(),
                default_account,
                shutdown.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let namespaces: Vec<String> = config
        .namespaces()
        .into_iter()
        .map(str::to_string)
        .collect();
    tracing::info!(
        leaf_api_url = %config.leaf_api_url,
        namespaces = ?namespaces,
        concurrency = config.concurrency,
        identity = %identity,
        label_selector = %config.label_selector,
        alerts = alerts.is_some(),
        "starting leaf-operator"
    );
    // The leader labels its own Pod for the alerts Service (cleared at once: a previous
    // container of this Pod may have died leading).
    let leader_label = config
        .leader_pod_label()
        .map(|(pod, key)| LeaderLabel::start(client.clone(), pod, key));

    // On the leader only (on every replica without leader election): the controller and the rest.
    let work = leader_work(ctx, namespaces, alerts, leader_label, health.clone());
    match config.leader_election(identity) {
        Some(election) => {
            leader::run(client, election, metrics, health, fence, shutdown, work).await?;
        }
        // Bounded like the leader path, so SIGTERM always ends the process within its grace period.
        None => leader::run_unelected(metrics, shutdown, Duration::from_secs(10), work).await?,
    }
    Ok(())
}

/// The work of one term of leadership, started afresh with each term's stop signal: the
/// controller, the alerts registration and polling switch, and the leader label on the own Pod.
fn leader_work(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    alerts: Option<Alerts>,
    leader_label: Option<LeaderLabel>,
    health: Arc<Health>,
) -> impl FnMut(leader::StopSignal) -> BoxFuture<'static, Result<(), Infallible>> {
    move |stop| {
        let ctx = ctx.clone();
        let namespaces = namespaces.clone();
        let ready = health.clone();
        let alive = health.clone();
        let stop = stop.shared();
        let registration = alerts
            .as_ref()
            .map(|alerts| alerts.leader_work(stop.clone()).boxed());
        // Off again when this term's work ends or is aborted (leadership lost).
        let term = leader_label.as_ref().map(LeaderLabel::lead);
        let label_ready = term.as_ref().map(|term| term.ready_handle());
        async move {
            let _term = term;
            let controller = controller::run(
                ctx,
                namespaces,
                stop,
                move || {
                    ready.set_ready(true);
                    if let Some(label_ready) = label_ready {
                        label_ready();
                    }
                },
                move || alive.mark_alive(),
            );
            match registration {
                Some(registration) => {
                    futures::join!(controller, registration);
                }
                None => controller.await,
            }
            Ok(())
        }
        .boxed()
    }
}

/// Says at start which default Leaf account the operator uses, or warns that it has none.
fn log_default_account(default_account: &DefaultAccount) {
    if default_account.current().is_none() {
        tracing::warn!(
            source = %default_account.describe(),
            "no default Leaf account: TrimbleConnections without leafAuthSecretRef report LeafAuthFailed"
        );
    } else {
        tracing::info!(source = %default_account.describe(), "default Leaf account");
    }
}

/// Resolves on SIGTERM (Kubernetes stopping the Pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}
