//! Leader election over a `coordination.k8s.io` Lease: only the holder runs the controller.
//!
//! Built on `kube-lease-manager`'s manual API (`changed` / `release`). Two things are added on top:
//! - A standby re-reads the Lease every `standby_poll` (by building a fresh manager, which is one
//!   GET) because the crate itself only looks again when the holder's lease would expire; so a
//!   lease released on SIGTERM is taken over in about `standby_poll`, not `lease_duration`.
//! - The leader stops its work as soon as a renewal fails: if it cannot prove it holds the lease it
//!   must not keep calling Leaf, or two replicas could create the same credential. It goes back to
//!   standby and, if the lease is still its own once the API server answers, starts again at once.
//!   Because the crate reports neither a successful renewal nor a renewal that hangs, the leader
//!   also reads its Lease every 2 s and stops 3 s before the lease would expire unconfirmed.
//!
//! On shutdown the work is asked to stop (the controller's graceful shutdown), waited for at most
//! `stop_timeout`, and the lease is released so the standby takes over immediately. On a lost,
//! expiring or failed renewal there is no such grace: the [`Fence`] is revoked at once (no Leaf
//! write passes it any more) and the work is aborted rather than drained, because nothing renews
//! the lease while it drains and another replica may already be leading.

pub mod fence;

pub use fence::Fence;

use std::fmt::Display;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

use crate::http::Health;
use crate::metrics::Metrics;

/// Where the lease lives and how it is timed.
#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub lease_name: String,
    /// Unique per replica (the Pod name); two replicas with one identity would both lead.
    pub identity: String,
    /// How long the lease is valid after each renewal; the standby's takeover time after a crash.
    pub lease_duration: Duration,
    /// How often the leader renews (must be shorter than `lease_duration`).
    pub renew_every: Duration,
    /// How often a standby re-reads the lease.
    pub standby_poll: Duration,
    /// How long the work may take to stop before it is abandoned (cancelled at its next await).
    pub stop_timeout: Duration,
}

impl LeaderElectionConfig {
    /// Defaults: 15 s lease renewed every 5 s, standby polls every 2 s, 10 s to stop the work.
    pub fn new(namespace: String, lease_name: String, identity: String) -> Self {
        Self {
            namespace,
            lease_name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            standby_poll: Duration::from_secs(2),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// Why leader election ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "lease timing is invalid: renew_every must be at least 1 s and shorter than lease_duration"
    )]
    InvalidTiming,
    #[error("the controller stopped on its own: {0}")]
    WorkEnded(String),
    #[error("failed to release the leader lease: {0}")]
    Release(#[source] kube_lease_manager::LeaseManagerError),
}

/// Resolves when the work must stop (leadership lost or process shutting down).
///
/// `Send + Sync + 'static`, as `kube::runtime::Controller::graceful_shutdown_on` requires.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>>;

fn stop_signal(mut rx: watch::Receiver<bool>) -> StopSignal {
    Box::pin(async move {
        // An Err means the sender is gone, which also means stop.
        let _ = rx.wait_for(|stop| *stop).await;
    })
}

enum LeaderOutcome<E> {
    Shutdown,
    Lost,
    RenewFailed(kube_lease_manager::LeaseManagerError),
    /// The lease could not be confirmed and is about to expire: another replica may take it.
    Expiring,
    WorkEnded(Result<Result<(), E>, tokio::task::JoinError>),
}

/// Runs `work` whenever this replica holds the lease, until `shutdown` resolves.
///
/// `work` is started afresh on every acquisition with a [`StopSignal`]; it should stop gracefully
/// when the signal fires. Returns `Ok` after a shutdown (lease released), or an error when the work
/// ended by itself (the caller should exit so the Pod restarts).
pub async fn run<W, Fut, E>(
    client: Client,
    config: LeaderElectionConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    fence: Fence,
    shutdown: impl Future<Output = ()>,
    mut work: W,
) -> Result<(), LeaderError>
where
    W: FnMut(StopSignal) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let duration = config.lease_duration.as_secs();
    let renew = config.renew_every.as_secs();
    if renew == 0 || renew >= duration {
        return Err(LeaderError::InvalidTiming);
    }
    let mut shutdown = pin!(shutdown);
    loop {
        // Standby: a standby is "ready" (it has nothing to sync), so rolling updates can proceed.
        metrics.set_leader(false);
        health.set_ready(true);
        let manager = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            manager = acquire(&client, &config, &health) => manager,
        };
        tracing::info!(identity = %config.identity, lease = %config.lease_name, "became leader");
        // Just acquired: the lease is ours for its whole duration, less the margin.
        fence.hold_until(later(
            std::time::Instant::now(),
            config.lease_duration.saturating_sub(EXPIRY_SAFETY_MARGIN),
        ));
        metrics.set_leader(true);
        // The controller reports ready again once its stores have synced.
        health.set_ready(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut task = tokio::spawn(work(stop_signal(stop_rx)));
        // Renewal runs inside `changed()`, which reports neither success nor a hanging API
        // server; so the leader also reads the lease itself and steps down before it can expire.
        let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
        let mut valid_until = SystemTime::now() + config.lease_duration;
        let mut check = tokio::time::interval(LEASE_CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = 'leading: loop {
            let changed = manager.changed();
            let mut changed = pin!(changed);
            loop {
                tokio::select! {
                    biased;
                    () = &mut shutdown => break 'leading LeaderOutcome::Shutdown,
                    result = &mut task => break 'leading LeaderOutcome::WorkEnded(result),
                    result = &mut changed => match result {
                        Ok(true) => continue 'leading,
                        Ok(false) => break 'leading LeaderOutcome::Lost,
                        Err(error) => break 'leading LeaderOutcome::RenewFailed(error),
                    },
                    _ = check.tick() => {
                        match confirm(&leases, &config).await {
                            Confirmation::HeldUntil(until) => {
                                valid_until = until;
                                fence.hold_until(fence_deadline(until));
                            }
                            Confirmation::NotHeld => break 'leading LeaderOutcome::Lost,
                            Confirmation::Unknown => {}
                        }
                        if SystemTime::now() + EXPIRY_SAFETY_MARGIN >= valid_until {
                            break 'leading LeaderOutcome::Expiring;
                        }
                    }
                }
            }
        };
        // Stop reconciling before anything else: from here on this replica may not be the leader.
        let _ = stop_tx.send(true);
        match &outcome {
            LeaderOutcome::Shutdown => {
                // Still the leader (the fence's deadline runs out on its own if the drain outlives
                // the lease): in-flight reconciles may finish.
                match tokio::time::timeout(config.stop_timeout, &mut task).await {
                    Ok(_) => tracing::info!("controller stopped"),
                    Err(_) => {
                        tracing::warn!(timeout = ?config.stop_timeout, "controller did not stop in time; abandoning in-flight work");
                        task.abort();
                    }
                }
                fence.revoke();
            }
            LeaderOutcome::WorkEnded(_) => fence.revoke(),
            LeaderOutcome::Lost | LeaderOutcome::Expiring | LeaderOutcome::RenewFailed(_) => {
                // In doubt: no Leaf write passes the fence from this instant, and the work is
                // aborted at its next await instead of drained.
                fence.revoke();
                task.abort();
                let _ = (&mut task).await;
                tracing::warn!("controller aborted: leadership is in doubt");
            }
        }
        metrics.set_leader(false);
        match outcome {
            LeaderOutcome::Shutdown => {
                release(&manager).await?;
                tracing::info!(lease = %config.lease_name, "released the leader lease");
                return Ok(());
            }
            LeaderOutcome::Lost => {
                tracing::warn!(lease = %config.lease_name, "lost the leader lease; standing by");
            }
            LeaderOutcome::Expiring => {
                tracing::warn!(lease = %config.lease_name, "cannot confirm the leader lease before it expires; stopped the controller and standing by");
            }
            LeaderOutcome::RenewFailed(error) => {
                tracing::warn!(%error, lease = %config.lease_name, "could not renew the leader lease; stopped the controller and standing by");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            LeaderOutcome::WorkEnded(result) => {
                let reason = match result {
                    Ok(Ok(())) => "returned".to_string(),
                    Ok(Err(error)) => error.to_string(),
                    Err(join) => join.to_string(),
                };
                // Hand over at once: this process is about to exit.
                let _ = release(&manager).await;
                return Err(LeaderError::WorkEnded(reason));
            }
        }
    }
}

/// Runs `work` without leader election until `shutdown` resolves, then lets it stop gracefully for
/// at most `stop_timeout` before abandoning it (so the process exits within its grace period).
pub async fn run_unelected<Fut, E>(
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop_timeout: Duration,
    work: impl FnOnce(StopSignal) -> Fut,
) -> Result<(), LeaderError>
where
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    metrics.set_leader(true);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut task = tokio::spawn(work(stop_signal(stop_rx)));
    let mut shutdown = pin!(shutdown);
    let ended = tokio::select! {
        biased;
        result = &mut task => Some(result),
        () = &mut shutdown => None,
    };
    let result = match ended {
        Some(result) => result,
        None => {
            let _ = stop_tx.send(true);
            match tokio::time::timeout(stop_timeout, &mut task).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(timeout = ?stop_timeout, "controller did not stop in time; abandoning in-flight work");
                    task.abort();
                    return Ok(());
                }
            }
        }
    };
    match result {
        Ok(Ok(())) if *stop_tx.borrow() => Ok(()),
        Ok(Ok(())) => Err(LeaderError::WorkEnded("returned".into())),
        Ok(Err(error)) => Err(LeaderError::WorkEnded(error.to_string())),
        Err(join) => Err(LeaderError::WorkEnded(join.to_string())),
    }
}

/// `now + wait`, saturating instead of panicking.
fn later(now: std::time::Instant, wait: Duration) -> std::time::Instant {
    now.checked_add(wait).unwrap_or(now)
}

/// The fence's deadline for a lease valid until `until` (wall clock): that instant on the
/// monotonic clock, less the safety margin.
fn fence_deadline(until: SystemTime) -> std::time::Instant {
    let left = until
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
        .saturating_sub(EXPIRY_SAFETY_MARGIN);
    later(std::time::Instant::now(), left)
}

/// How often the leader reads its lease to confirm it still holds it.
pub const LEASE_CHECK_EVERY: Duration = Duration::from_secs(2);
/// The leader stops working this long before its lease would expire unconfirmed: the clocks of
/// two replicas may differ by up to this much before a standby takes a lease the leader still
/// thinks is its own (the simulation runs replicas whose clocks differ by up to 2 s).
pub const EXPIRY_SAFETY_MARGIN: Duration = Duration::from_secs(3);

enum Confirmation {
    /// The lease is ours and valid until then (its renewTime plus its duration).
    HeldUntil(SystemTime),
    NotHeld,
    /// The API server did not answer in time.
    Unknown,
}

async fn confirm(leases: &Api<Lease>, config: &LeaderElectionConfig) -> Confirmation {
    let read = tokio::time::timeout(LEASE_CHECK_EVERY, leases.get_opt(&config.lease_name)).await;
    let spec = match read {
        Ok(Ok(lease)) => lease.and_then(|lease| lease.spec),
        Ok(Err(_)) | Err(_) => return Confirmation::Unknown,
    };
    let Some(spec) = spec else {
        return Confirmation::NotHeld;
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Confirmation::NotHeld;
    }
    match (spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(seconds)) => {
            let renewed: SystemTime = renewed.0.into();
            Confirmation::HeldUntil(
                renewed + Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
            )
        }
        _ => Confirmation::Unknown,
    }
}

/// Waits until this replica holds the lease; never fails (API errors are retried).
async fn acquire(client: &Client, config: &LeaderElectionConfig, health: &Health) -> LeaseManager {
    loop {
        health.mark_alive();
        let built = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(config.lease_duration.as_secs())
            .with_grace(config.lease_duration.as_secs() - config.renew_every.as_secs())
            .build();
        // Bounded: a hanging API server must not keep a standby from retrying.
        let built = tokio::time::timeout(config.standby_poll * 3, built).await;
        let manager = match built {
            Ok(Ok(manager)) => manager,
            Err(_) => continue,
            Ok(Err(error)) => {
                tracing::warn!(%error, lease = %config.lease_name, "cannot read the leader lease; retrying");
                tokio::time::sleep(config.standby_poll).await;
                continue;
            }
        };
        // A fresh manager reads the lease once, takes it if free or expired, and otherwise sleeps
        // until the holder's expiry; cutting that sleep short re-reads a released lease sooner.
        let attempt = tokio::time::timeout(config.standby_poll, manager.changed()).await;
        match attempt {
            Ok(Ok(true)) => return manager,
            Ok(Ok(false)) | Err(_) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, lease = %config.lease_name, "leader election failed; retrying");
                tokio::time::sleep(config.standby_poll).await;
            }
        }
    }
}

async fn release(manager: &LeaseManager) -> Result<(), LeaderError> {
    // Bounded: a shutdown must not hang on an unreachable API server; the lease then just expires.
    match tokio::time::timeout(Duration::from_secs(3), manager.release()).await {
        Ok(result) => result.map_err(LeaderError::Release),
        Err(_) => {
            tracing::warn!("timed out releasing the leader lease; it will expire");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_signal_fires_when_asked_or_when_the_sender_is_gone() {
        let (tx, rx) = watch::channel(false);
        let signal = stop_signal(rx);
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), signal)
            .await
            .unwrap();
        let (tx, rx) = watch::channel(false);
        let signal = stop_signal(rx);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(1), signal)
            .await
            .unwrap();
    }
}
