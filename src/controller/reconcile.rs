//! One reconcile: the finalizer dispatches to [`apply`] (create, adopt, check, rotate) and
//! [`cleanup`] (delete or orphan the Leaf credential).
//!
//! Crash safety: the operator may die between any two awaits. Before every POST the intent is
//! written to `status.pendingCreate` (with the Secret's fingerprint); a reconcile that finds it
//! decides from a GET whether the POST happened, so the same Secret values are never sent twice.
//! Leaf calls are made only when there is work (no credential yet, a changed Secret, a pending
//! create), when the periodic check is due, or when a person asked (annotation, spec change):
//! the reconciles that our own status writes trigger cost no Leaf call and write nothing.
//!
//! The steps, one module each:
//! - [`apply`]: reads what the resource references and decides whether Leaf is asked at all;
//! - [`dispatch`]: one GET of the credential chooses the step below;
//! - [`create`]: the crash-safe create and the resumption of an interrupted one;
//! - [`adopt`]: a credential this resource did not create (adopt, replace or Conflict);
//! - [`rotate`]: DELETE then POST when the Secret's values changed;
//! - [`check`]: the periodic look at Leaf's status and events;
//! - [`cleanup`]: what deleting the resource does in Leaf;
//! - [`work`]: the per-object state every step shares, and the one status write;
//! - [`status_patch`]: the JSON merge patch that write sends.

mod adopt;
mod apply;
mod check;
mod cleanup;
mod create;
mod dispatch;
mod rotate;
mod status_patch;
mod work;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as FinalizerEvent};
use tracing::{Instrument, warn};

use super::Context;
use crate::crd::{FINALIZER, TrimbleConnection};
use crate::reason::Reason;
use crate::secret::SecretError;

/// How long a resource waits for a missing Secret before looking again on its own (the Secret
/// watch normally triggers much sooner, the moment the Secret appears).
const SECRET_NOT_FOUND_RECHECK: Duration = Duration::from_secs(300);
/// How long a resource that needs a person waits before the operator looks at Leaf again.
const STALLED_RECHECK: Duration = Duration::from_secs(300);
/// How often the loser of a Leaf-user conflict checks whether the winner is gone.
const CONFLICT_RECHECK: Duration = Duration::from_secs(60);

/// Failures of a reconcile that kube-runtime should retry (status is already written for them).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the TrimbleConnection: {0}")]
    Get(#[source] kube::Error),
    #[error("failed to write the status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error(transparent)]
    Secret(SecretError),
    /// Cleanup cannot finish yet; the finalizer stays and the reason is on the resource.
    #[error("{reason}: {message}")]
    Waiting {
        reason: Reason,
        message: String,
        retry: Duration,
    },
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    fn reason(&self) -> Reason {
        match self {
            Error::Waiting { reason, .. } => *reason,
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
    let _permit = match ctx.permits.get() {
        Some(permits) => permits.acquire().await.ok(),
        None => None,
    };
    let started = Instant::now();
    let namespace = tc.namespace().unwrap_or_default();
    let name = tc.name_any();
    // The field is not called `name`: JSON logs already use `name` for the span's own name, and
    // a duplicate key would hide the object's name from log collectors.
    let span = tracing::info_span!("reconcile", %namespace, trimbleconnection = %name);
    let api: Api<TrimbleConnection> = Api::namespaced(ctx.client.clone(), &namespace);
    // The reason of a failure that was reported on the resource rather than returned (a Leaf
    // outage is a status, not an `Err`), for the reconcile metric.
    let failure = Mutex::new(None);
    let result = finalizer::finalizer(&api, FINALIZER, tc, |event| async {
        match event {
            FinalizerEvent::Apply(tc) => apply::apply(tc, &ctx, &failure).await,
            FinalizerEvent::Cleanup(tc) => cleanup::cleanup(tc, &ctx, &failure).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    let failed = match &result {
        Ok(_) => *failure.lock().expect("failure lock"),
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
    let wait = ctx.schedules.failed(&uid, None, None);
    warn!(namespace = %tc.namespace().unwrap_or_default(), name = %tc.name_any(), %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// Reads the object again: the store can lag behind our own last status write, and a decision
/// about creating must be made on what the server holds now.
async fn fresh(
    tc: &TrimbleConnection,
    ctx: &Context,
) -> Result<Option<Arc<TrimbleConnection>>, Error> {
    let api: Api<TrimbleConnection> =
        Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default());
    Ok(api
        .get_opt(&tc.name_any())
        .await
        .map_err(Error::Get)?
        .map(Arc::new))
}
