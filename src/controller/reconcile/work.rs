//! The state one object's reconcile carries from step to step, and the one place its status is
//! written.
//!
//! Every step writes through [`Work::write`]: it finishes the status with the pure
//! `controller::status` and makes no API call when the result equals what the server holds,
//! because GitOps tools refresh on every status write.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::status_patch::status_patch;
use super::{Error, STALLED_RECHECK};
use crate::controller::Context;
use crate::controller::status::{self, Outcome};
use crate::crd::{FIELD_MANAGER, TrimbleConnection, TrimbleConnectionStatus};
use crate::leaf::{LeafAccount, LeafError, Trimble};
use crate::reason::Reason;
use crate::secret::{self, SecretError};

/// The reconcile of one object, with the status as it currently is on the server.
pub(super) struct Work<'a> {
    pub(super) ctx: &'a Context,
    pub(super) tc: Arc<TrimbleConnection>,
    api: Api<TrimbleConnection>,
    pub(super) secrets: Api<Secret>,
    pub(super) uid: String,
    name: String,
    /// The status on the server, updated after each of our writes.
    pub(super) current: TrimbleConnectionStatus,
    pub(super) generation: Option<i64>,
    /// The annotation value this reconcile answers (echoed into `lastHandledReconcileAt`).
    pub(super) handled_at: Option<String>,
    /// Identifies the inputs of the Leaf calls (Secret fingerprint and Leaf account): the
    /// schedule is bypassed when they change.
    pub(super) schedule_key: String,
    failure: &'a Mutex<Option<Reason>>,
}

impl<'a> Work<'a> {
    pub(super) fn new(
        ctx: &'a Context,
        tc: Arc<TrimbleConnection>,
        failure: &'a Mutex<Option<Reason>>,
    ) -> Self {
        let namespace = tc.namespace().unwrap_or_default();
        Self {
            ctx,
            api: Api::namespaced(ctx.client.clone(), &namespace),
            secrets: Api::namespaced(ctx.client.clone(), &namespace),
            uid: tc.uid().unwrap_or_default(),
            name: tc.name_any(),
            current: tc.status.clone().unwrap_or_default(),
            generation: tc.meta().generation,
            handled_at: None,
            schedule_key: String::new(),
            failure,
            tc,
        }
    }

    pub(super) fn user(&self) -> &str {
        &self.tc.spec.leaf_user_id
    }

    pub(super) fn secret_name(&self) -> &str {
        &self.tc.spec.credentials_secret_ref.name
    }

    pub(super) fn refresh_interval(&self) -> Duration {
        self.ctx
            .refresh_override
            .unwrap_or_else(|| self.tc.spec.refresh_interval())
    }

    /// Writes `next` with the conditions for `outcome`, unless that is exactly what is there.
    /// Emits an Event when the `Ready` reason changes to one the user must hear about.
    pub(super) async fn write(
        &mut self,
        mut next: TrimbleConnectionStatus,
        outcome: &Outcome,
    ) -> Result<(), Error> {
        if self.handled_at.is_some() {
            next.last_handled_reconcile_at = self.handled_at.clone();
        }
        if outcome.reason.is_warning() {
            *self.failure.lock().expect("failure lock") = Some(outcome.reason);
        }
        let finished = status::finish(
            &self.current,
            next,
            outcome,
            self.generation,
            &status::now(),
        );
        if finished == self.current {
            return Ok(());
        }
        self.api
            .patch_status(
                &self.name,
                // Named, so managedFields say who wrote the status (not "unknown").
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&status_patch(&finished)),
            )
            .await
            .map_err(Error::WriteStatus)?;
        let previous = status::ready_reason(&self.current).map(str::to_string);
        self.current = finished;
        if previous.as_deref() != Some(outcome.reason.as_str()) {
            self.transition_event(previous.as_deref(), outcome).await;
        }
        Ok(())
    }

    async fn transition_event(&self, previous: Option<&str>, outcome: &Outcome) {
        let announce = if outcome.reason.is_warning() {
            true
        } else if outcome.reason == Reason::CredentialValid {
            // After Creating/Rotating the Created/Rotated Event already says so.
            !matches!(
                previous,
                None | Some("Creating") | Some("Rotating") | Some("CredentialValid")
            )
        } else {
            false
        };
        if announce {
            self.event(outcome.reason, "Reconcile", &outcome.message)
                .await;
        }
    }

    pub(super) async fn event(&self, reason: Reason, action: &str, note: &str) {
        self.ctx
            .events
            .publish(&self.tc, reason, action, note)
            .await;
    }

    /// The Leaf account for this resource, or the outcome that explains why there is none.
    pub(super) async fn account(&self) -> Result<Result<LeafAccount, Outcome>, Error> {
        let Some(reference) = &self.tc.spec.leaf_auth_secret_ref else {
            return Ok(self.ctx.default_account.current().ok_or_else(|| {
                Outcome::new(
                    Reason::LeafAuthFailed,
                    "No Leaf API account: set spec.leafAuthSecretRef, or configure the operator's default \
                     account (LEAF_USERNAME and LEAF_PASSWORD, or LEAF_TOKEN)",
                )
            }));
        };
        match secret::read_leaf_account(&self.secrets, reference).await {
            Ok(account) => Ok(Ok(account)),
            Err(error @ SecretError::Api { .. }) => Err(Error::Secret(error)),
            Err(error) if error.is_not_found() => Ok(Err(Outcome::new(
                Reason::SecretNotFound,
                format!("Leaf account {error}; waiting for it (spec.leafAuthSecretRef)"),
            ))),
            Err(error) => Ok(Err(Outcome::new(
                Reason::SecretInvalid,
                format!("Leaf account {error} (spec.leafAuthSecretRef)"),
            ))),
        }
    }

    /// Records a failed Leaf call: the reason on the resource, and the backoff before the next try.
    pub(super) async fn leaf_failed(
        &mut self,
        next: TrimbleConnectionStatus,
        error: &LeafError,
        doing: &str,
    ) -> Result<Action, Error> {
        let reason = status::leaf_error_reason(error);
        let message = match reason {
            Reason::LeafUnavailable => format!("{doing}: {error}; retrying with backoff"),
            Reason::LeafAuthFailed => format!(
                "{doing}: {error}; check the Leaf API account (spec.leafAuthSecretRef or the operator's default account)"
            ),
            _ => format!("{doing}: {error}"),
        };
        warn!(%error, reason = reason.as_str(), "{doing}");
        self.write(next, &Outcome::new(reason, message)).await?;
        let wait =
            self.ctx
                .schedules
                .failed(&self.uid, error.retry_after(), Some(&self.schedule_key));
        Ok(Action::requeue(wait))
    }

    /// DELETEs the Leaf user's credential (404 counts as done). On failure the reason is recorded
    /// with `next` as for any failed Leaf call, and the action to return is given back.
    pub(super) async fn delete_in_leaf(
        &mut self,
        account: &LeafAccount,
        next: &TrimbleConnectionStatus,
        doing: &str,
    ) -> Result<Option<Action>, Error> {
        match self
            .ctx
            .leaf
            .delete_credential::<Trimble>(account, self.user())
            .await
        {
            Ok(()) => Ok(None),
            Err(error) => self
                .leaf_failed(next.clone(), &error, doing)
                .await
                .map(Some),
        }
    }

    /// After a step that left everything as it should be: the failure count resets and the
    /// next Leaf call is the periodic check, `refreshInterval` (jittered) from now.
    pub(super) fn next_check(&self) -> Action {
        let wait = self.ctx.schedules.succeeded(
            &self.uid,
            self.refresh_interval(),
            Some(&self.schedule_key),
        );
        Action::requeue(wait)
    }

    /// After a step that needs a person: no automatic Leaf call for [`STALLED_RECHECK`], so a
    /// Stalled resource is never retried hot.
    pub(super) fn wait_for_person(&self) -> Action {
        self.ctx
            .schedules
            .hold(&self.uid, STALLED_RECHECK, Some(&self.schedule_key));
        Action::requeue(STALLED_RECHECK)
    }
}

/// The schedule's key for these inputs: a changed Secret or Leaf account is worth a Leaf call at
/// once, whatever the schedule says.
pub(super) fn schedule_key(fingerprint: &str, account: &LeafAccount) -> String {
    format!("{fingerprint}/{}", account.account_key())
}
