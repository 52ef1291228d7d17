//! One reconcile as kube-runtime runs it: the finalizer dispatches to apply or cleanup, each of
//! which observes the world, runs the engine, and turns its answer into the next schedule.
//!
//! The decisions are in `controller::decide` (pure) and their execution in `controller::engine`
//! (generic over its IO); this module is the thin layer that binds them to the API server:
//! - [`observe`]: the facts a decision needs (the only reads: the two Secrets);
//! - [`kube_ports`]: the engine's IO in production;
//! - [`status_patch`]: the JSON merge patch a status write sends.

mod kube_ports;
mod observe;
mod status_patch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as FinalizerEvent};
use tracing::{Instrument, warn};

use self::kube_ports::KubePorts;
use self::observe::{Observed, Purpose, observe};
use super::Context;
use crate::controller::engine::{self, Applied, Cleaned, Input, Interrupted};
use crate::crd::{FINALIZER, TrimbleConnection};
use crate::reason::Reason;
use crate::secret::{SecretError, TrimbleSecret};

/// Longest wait for one API call of a reconcile (a status write); a hanging API server must not
/// hold a reconcile, and its concurrency permit, forever.
const API_TIMEOUT: Duration = Duration::from_secs(30);

/// Failures of a reconcile that kube-runtime should retry (status is already written for them).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the TrimbleConnection: {0}")]
    Get(#[source] kube::Error),
    #[error(transparent)]
    Interrupted(Interrupted),
    #[error(transparent)]
    Secret(SecretError),
    /// Cleanup cannot finish yet; the finalizer stays and the reason is on the resource.
    #[error("{reason}: waiting before looking at Leaf again")]
    Waiting { reason: Reason, retry: Duration },
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    fn reason(&self) -> Reason {
        match self {
            Error::Waiting { reason, .. } => *reason,
            Error::Interrupted(interrupted) => interrupted.reason(),
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => Reason::KubeApiError,
            },
            _ => Reason::KubeApiError,
        }
    }

    fn retry(&self) -> Option<Duration> {
        match self {
            Error::Waiting { retry, .. } => Some(*retry),
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.retry(),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Entry point for kube-runtime: finalizer first, then apply or cleanup, with metrics and a span.
pub async fn reconcile(tc: Arc<TrimbleConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Held for the whole reconcile; the semaphore is never closed, so acquiring cannot fail.
    let _permit = ctx.permits.acquire().await.ok();
    let started = std::time::Instant::now();
    let namespace = tc.namespace().unwrap_or_default();
    let name = tc.name_any();
    // The field is not called `name`: JSON logs already use `name` for the span's own name, and
    // a duplicate key would hide the object's name from log collectors.
    let span = tracing::info_span!("reconcile", %namespace, trimbleconnection = %name);
    let api: Api<TrimbleConnection> = Api::namespaced(ctx.client.clone(), &namespace);
    // The finalizer helper passes only an `Action` through: the reason the step ended in comes
    // back through this slot, which the one closure below borrows mutably.
    let mut ended_in: Option<Reason> = None;
    let slot = &mut ended_in;
    let result = finalizer::finalizer(&api, FINALIZER, tc, |event| async {
        let (action, reason) = match event {
            FinalizerEvent::Apply(tc) => apply(tc, &ctx).await?,
            FinalizerEvent::Cleanup(tc) => cleanup(tc, &ctx).await?,
        };
        *slot = reason;
        Ok(action)
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    let failed = match &result {
        Ok(_) => ended_in.filter(|r| r.is_warning()),
        Err(error) => Some(error.reason()),
    };
    ctx.metrics.record_reconcile(started.elapsed(), failed);
    result
}

/// What kube-runtime does after an `Err`: retry with the per-object backoff.
pub fn error_policy(tc: Arc<TrimbleConnection>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Some(retry) = error.retry() {
        return Action::requeue(retry);
    }
    let uid = tc.uid().unwrap_or_default();
    let wait = ctx.schedules.failed(&uid, Instant::now());
    warn!(namespace = %tc.namespace().unwrap_or_default(), name = %tc.name_any(), %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// The object's result for the finalizer helper: the action and the `Ready` reason it ended in.
type Reconciled = (Action, Option<Reason>);

async fn apply(tc: Arc<TrimbleConnection>, ctx: &Context) -> Result<Reconciled, Error> {
    let Some(tc) = fresh(&tc, ctx).await? else {
        return Ok((Action::await_change(), None));
    };
    if tc.metadata.deletion_timestamp.is_some() {
        // The watch event for the deletion brings the cleanup.
        return Ok((Action::await_change(), None));
    }
    let mut observed = observe(ctx, &tc, Purpose::Apply).await?;
    let secret = observed.secret.take();
    let (ports, input, pace) = bind(ctx, &tc, observed, secret.as_ref());
    let applied = engine::apply(&ports, input).await;
    // An alert whose look found nothing new to write is answered too, and one whose reconcile
    // was interrupted counts as failed (both no-ops after a status write answered it).
    ports.alert_answered(if applied.is_ok() {
        "unchanged"
    } else {
        "failed"
    });
    match applied.map_err(Error::Interrupted)? {
        Applied::Quiet(requeue) => Ok((
            requeue.map_or_else(Action::await_change, Action::requeue),
            None,
        )),
        Applied::Done { next, reason } => {
            let action = schedule(ctx, &tc, &pace, &next);
            Ok((action, reason))
        }
    }
}

async fn cleanup(tc: Arc<TrimbleConnection>, ctx: &Context) -> Result<Reconciled, Error> {
    let Some(tc) = fresh(&tc, ctx).await? else {
        return Ok((Action::await_change(), None));
    };
    let uid = tc.uid().unwrap_or_default();
    let observed = observe(ctx, &tc, Purpose::Cleanup).await?;
    let (ports, input, pace) = bind(ctx, &tc, observed, None);
    match engine::cleanup(&ports, input)
        .await
        .map_err(Error::Interrupted)?
    {
        Cleaned::Released => {
            ctx.schedules.forget(&uid);
            Ok((Action::await_change(), None))
        }
        Cleaned::Again { next, reason } => {
            let retry = ctx
                .schedules
                .record(&uid, &pace.inputs, &next, pace.interval, Instant::now())
                .unwrap_or(crate::controller::backoff::STALLED_RECHECK);
            // An Err keeps the finalizer (an Ok would release it).
            Err(Error::Waiting { reason, retry })
        }
    }
}

/// The engine's IO and input for `tc`, and the schedule's key.
fn bind<'a, 's>(
    ctx: &'a Context,
    tc: &Arc<TrimbleConnection>,
    observed: Observed,
    secret: Option<&'s TrimbleSecret>,
) -> (KubePorts<'a>, Input<'s>, Pace) {
    let Observed {
        facts,
        account,
        inputs,
        handled_at,
        interval,
        alert_at,
        ..
    } = observed;
    let ports = KubePorts {
        ctx,
        tc: tc.clone(),
        api: Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default()),
        account,
        alert_at: std::sync::Mutex::new(alert_at),
    };
    let input = Input {
        facts,
        secret,
        generation: tc.metadata.generation,
        handled_at,
    };
    (ports, input, Pace { inputs, interval })
}

/// What the schedule needs of an observation: the key of the Leaf calls' inputs and the pace of
/// the periodic checks.
struct Pace {
    inputs: String,
    interval: Duration,
}

/// Records `next` in the per-object schedule and turns it into kube-runtime's action.
fn schedule(
    ctx: &Context,
    tc: &TrimbleConnection,
    pace: &Pace,
    next: &crate::controller::decide::Next,
) -> Action {
    let uid = tc.uid().unwrap_or_default();
    ctx.schedules
        .record(&uid, &pace.inputs, next, pace.interval, Instant::now())
        .map_or_else(Action::await_change, Action::requeue)
}

/// Reads the object again: the store can lag behind our own last status write, and a decision
/// about creating must be made on what the server holds now.
async fn fresh(
    tc: &TrimbleConnection,
    ctx: &Context,
) -> Result<Option<Arc<TrimbleConnection>>, Error> {
    let api: Api<TrimbleConnection> =
        Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default());
    match tokio::time::timeout(API_TIMEOUT, api.get_opt(&tc.name_any())).await {
        Ok(result) => Ok(result.map_err(Error::Get)?.map(Arc::new)),
        Err(_) => Err(Error::Interrupted(Interrupted::WriteStatus(
            "the API server did not answer a read in time".to_string(),
        ))),
    }
}
