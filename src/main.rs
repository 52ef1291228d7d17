//! `leaf-operator`: parse the configuration, start logging, the HTTP endpoints and the controller
//! (behind leader election when enabled), and stop gracefully on SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::FutureExt;
use leaf_operator::alerts::routing::LeaderLabel;
use leaf_operator::alerts::{Alerts, AlertsConfig};
use leaf_operator::config::Config;
use leaf_operator::controller::backoff::Schedules;
use leaf_operator::controller::{self, Context, Settings};
use leaf_operator::http::{self, Health};
use leaf_operator::leader::{self, Fence, LeaderElectionConfig};
use leaf_operator::leaf::{LeafClient, LeafClientConfig};
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

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let leaf = LeafClient::new(
        LeafClientConfig {
            origin: config.leaf_api_url.clone(),
            connect_timeout: Duration::from_secs(10).min(config.leaf_timeout),
            request_timeout: config.leaf_timeout,
            requests_per_second: config.leaf_requests_per_second,
            burst: config.leaf_burst,
        },
        metrics.clone(),
    )?;
    let default_account = config.default_account();
    if default_account.current().is_none() {
        tracing::warn!(
            source = %default_account.describe(),
            "no default Leaf account: TrimbleConnections without leafAuthSecretRef report LeafAuthFailed"
        );
    } else {
        tracing::info!(source = %default_account.describe(), "default Leaf account");
    }
    if let Some(interval) = config.test_refresh_interval {
        tracing::warn!(?interval, "TEST ONLY: every refreshInterval is replaced");
    }
    let identity = config.identity();
    let fence = if config.leader_election {
        Fence::elected()
    } else {
        Fence::unelected()
    };
    // The alerts health exists before the Context, which holds it from the start; the receiver
    // started below reports to the same one.
    let alerts_config = config.alerts();
    let alerts_health = alerts_config.as_ref().map(AlertsConfig::new_health);
    let ctx = Context::new(
        client.clone(),
        leaf,
        metrics.clone(),
        identity.clone(),
        Settings {
            default_account: default_account.clone(),
            fence: fence.clone(),
            in_doubt_window: config
                .leaf_timeout
                .saturating_add(config.leaf_in_doubt_margin),
            schedules: Schedules::with_interval_override(config.test_refresh_interval),
            concurrency: config.concurrency,
            label_selector: config.label_selector(),
            alerts_health: alerts_health.clone(),
        },
    );
    let ctx = Arc::new(ctx);
    let gauge_ctx = ctx.clone();
    metrics.register_collector(Box::new(ReadyGauge::from_fn(move || {
        gauge_ctx.all_objects()
    })));

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
    // The receiver runs on every replica (a standby answers 503); registration only on the leader.
    let alerts = match alerts_config.zip(alerts_health) {
        Some((alerts_config, alerts_health)) => Some(Arc::new(
            Alerts::start(
                alerts_config,
                alerts_health,
                ctx.clone(),
                default_account,
                shutdown.clone(),
            )
            .await?,
        )),
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
    let work_health = health.clone();
    let work = move |stop: leader::StopSignal| {
        let ctx = ctx.clone();
        let namespaces = namespaces.clone();
        let ready = work_health.clone();
        let alive = work_health.clone();
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
            Ok::<(), std::convert::Infallible>(())
        }
    };
    if config.leader_election {
        let mut election = LeaderElectionConfig::new(
            config.leader_election_namespace.clone().unwrap_or_default(),
            config.leader_election_lease_name.clone(),
            identity,
        );
        election.lease_duration = config.leader_election_lease_duration;
        election.renew_every = config.leader_election_renew_period;
        election.standby_poll = config.leader_election_retry_period;
        leader::run(client, election, metrics, health, fence, shutdown, work).await?;
    } else {
        // Bounded like the leader path, so SIGTERM always ends the process within its grace period.
        leader::run_unelected(metrics, shutdown, Duration::from_secs(10), work).await?;
    }
    Ok(())
}
