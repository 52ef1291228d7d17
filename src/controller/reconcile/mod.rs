//! One reconcile as kube-runtime runs it: the finalizer's phase picks apply or cleanup, each of
//! which observes the world, runs the engine, and turns its answer into the next schedule.
//!
//! The decisions are in `controller::decide` (pure) and their execution in `controller::engine`
//! (generic over its IO); this module is the thin layer that binds them to the API server:
//! - [`observe`]: the facts a decision needs (the only reads: the two Secrets, the stores);
//! - [`kube_ports`]: the engine's IO in production;
//! - [`finalizer`]: our finalizer's phase, added and removed;
//! - [`requeue`]: how a reconcile's end becomes the next look;
//! - [`status_patch`]: the JSON merge patch a status write sends.

mod finalizer;
mod kube_ports;
pub mod observe;
pub mod requeue;
pub mod status_patch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use tracing::{Instrument, warn};

use self::finalizer::Phase;
use self::kube_ports::{AlertAnswer, KubePorts};
use self::observe::{Observed, Purpose, observe};
use self::requeue::{Ended, requeue};
use super::Context;
use crate::controller::engine::{self, Applied, Cleaned, Input, Interrupted};
use crate::crd::TrimbleConnection;
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
    #[error("the API server did not answer a read of the TrimbleConnection in time")]
    GetTimedOut,
    #[error(transparent)]
    Interrupted(Interrupted),
    #[error(transparent)]
    Secret(SecretError),
    #[error("failed to update the finalizer: {0}")]
    Finalizer(#[source] kube::Error),
}

impl Error {
    fn reason(&self) -> Reason {
        match self {
            Error::Interrupted(interrupted) => interrupted.reason(),
            _ => Reason::KubeApiError,
        }
    }
}

/// What a reconcile did: kube-runtime's next action, and the `Ready` reason it ended in.
type Reconciled = (Action, Option<Reason>);

/// Entry point for kube-runtime: the finalizer's phase, then apply or cleanup, with metrics and a
/// span.
pub async fn reconcile(tc: Arc<TrimbleConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Held for the whole reconcile; the semaphore is never closed, so acquiring cannot fail.
    let _permit = ctx.permits.acquire().await.ok();
    let started = std::time::Instant::now();
    let namespace = tc.namespace().unwrap_or_default();
    let name = tc.name_any();
    // The field is not called `name`: JSON logs already use `name` for the span's own name, and
    // a duplicate key would hide the object's name from log collectors.
    let span = tracing::info_span!("reconcile", %namespace, trimbleconnection = %name);
    let result = dispatch(tc, &ctx).instrument(span).await;
    let failed = match &result {
        Ok((_, reason)) => reason.filter(|r| r.is_warning()),
        Err(error) => Some(error.reason()),
    };
    ctx.metrics.record_reconcile(started.elapsed(), failed);
    result.map(|(action, _)| action)
}

/// What kube-runtime does after an `Err`: retry with the per-object backoff.
pub fn error_policy(tc: Arc<TrimbleConnection>, error: &Error, ctx: Arc<Context>) -> Action {
    let uid = tc.uid().unwrap_or_default();
    let ended = match error {
        Error::Interrupted(_) => Ended::Interrupted,
        _ => Ended::Failed,
    };
    let wait = requeue(&ctx.schedules, &uid, None, ended, Instant::now());
    warn!(namespace = %tc.namespace().unwrap_or_default(), name = %tc.name_any(), %error, retry_in = ?wait, "reconcile failed");
    action(wait)
}

async fn dispatch(tc: Arc<TrimbleConnection>, ctx: &Context) -> Result<Reconciled, Error> {
    // Decided on the object as the server holds it now: the store can lag behind our own last
    // status write, and a decision about creating must be made on what the server holds.
    let Some(tc) = fresh(&tc, ctx).await? else {
        return Ok((Action::await_change(), None));
    };
    let api: Api<TrimbleConnection> =
        Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default());
    match finalizer::phase(&tc) {
        Phase::AddFinalizer => {
            finalizer::patch(&api, &tc, finalizer::add_patch(&tc))
                .await
                .map_err(Error::Finalizer)?;
            // Its watch event brings the first apply.
            Ok((Action::await_change(), None))
        }
        Phase::Gone => Ok((Action::await_change(), None)),
        Phase::Apply => apply(tc, ctx).await,
        Phase::Cleanup { index } => cleanup(tc, ctx, &api, index).await,
    }
}

async fn apply(tc: Arc<TrimbleConnection>, ctx: &Context) -> Result<Reconciled, Error> {
    let mut observed = observe(ctx, &tc, Purpose::Apply).await?;
    let secret = observed.secret.take();
    let (ports, input, pace) = bind(ctx, &tc, observed, secret.as_ref());
    let applied = engine::apply(&ports, input).await;
    // An alert whose look found nothing new to write is answered too, and one whose reconcile
    // was interrupted counts as failed (both no-ops after a status write answered it).
    ports.alert_answered(if applied.is_ok() {
        AlertAnswer::Unchanged
    } else {
        AlertAnswer::Failed
    });
    let applied = applied.map_err(Error::Interrupted)?;
    let reason = match &applied {
        Applied::Done(finished) => Some(finished.reason),
        Applied::Quiet(_) => None,
    };
    let uid = tc.uid().unwrap_or_default();
    let wait = requeue(
        &ctx.schedules,
        &uid,
        Some(&pace),
        Ended::Applied(&applied),
        Instant::now(),
    );
    Ok((action(wait), reason))
}

async fn cleanup(
    tc: Arc<TrimbleConnection>,
    ctx: &Context,
    api: &Api<TrimbleConnection>,
    index: usize,
) -> Result<Reconciled, Error> {
    let observed = observe(ctx, &tc, Purpose::Cleanup).await?;
    let (ports, input, pace) = bind(ctx, &tc, observed, None);
    let cleaned = engine::cleanup(&ports, input)
        .await
        .map_err(Error::Interrupted)?;
    if cleaned == Cleaned::Released {
        finalizer::patch(api, &tc, finalizer::remove_patch(index))
            .await
            .map_err(Error::Finalizer)?;
    }
    let reason = match &cleaned {
        Cleaned::Again { reason, .. } => Some(*reason),
        Cleaned::Released => None,
    };
    let uid = tc.uid().unwrap_or_default();
    let wait = requeue(
        &ctx.schedules,
        &uid,
        Some(&pace),
        Ended::Cleaned(&cleaned),
        Instant::now(),
    );
    Ok((action(wait), reason))
}

fn action(wait: Option<Duration>) -> Action {
    wait.map_or_else(Action::await_change, Action::requeue)
}

/// The engine's IO and input for `tc`, and the schedule's key.
fn bind<'a, 's>(
    ctx: &'a Context,
    tc: &Arc<TrimbleConnection>,
    observed: Observed,
    secret: Option<&'s TrimbleSecret>,
) -> (KubePorts<'a>, Input<'s>, observe::Pace) {
    let Observed {
        facts,
        account,
        pace,
        handled_at,
        alert_at,
        link_id,
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
        link_id,
    };
    (ports, input, pace)
}

/// Reads the object again: the store can lag behind our own last status write.
async fn fresh(
    tc: &TrimbleConnection,
    ctx: &Context,
) -> Result<Option<Arc<TrimbleConnection>>, Error> {
    let api: Api<TrimbleConnection> =
        Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default());
    match tokio::time::timeout(API_TIMEOUT, api.get_opt(&tc.name_any())).await {
        Ok(result) => Ok(result.map_err(Error::Get)?.map(Arc::new)),
        Err(_) => Err(Error::GetTimedOut),
    }
}
