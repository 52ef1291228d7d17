//! One reconcile: the finalizer dispatches to [`apply`] (create, adopt, check, rotate) and
//! [`cleanup`] (delete or orphan the Leaf credential).
//!
//! Status is written as a JSON merge patch of the whole status (see [`status_patch`]).
//!
//! Crash safety: the operator may die between any two awaits. Before every POST the intent is
//! written to `status.pendingCreate` (with the Secret's fingerprint); a reconcile that finds it
//! decides from a GET whether the POST happened, so the same Secret values are never sent twice.
//! Leaf calls are made only when there is work (no credential yet, a changed Secret, a pending
//! create), when the periodic check is due, or when a person asked (annotation, spec change):
//! the reconciles that our own status writes trigger cost no Leaf call and write nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as FinalizerEvent};
use kube::{Resource, ResourceExt};
use tracing::{Instrument, info, warn};

use super::Context;
use super::conflict;
use super::status::{self, Outcome};
use crate::crd::{
    AdoptionPolicy, DeletionPolicy, FINALIZER, PendingCreate, RECONCILE_REQUESTED_AT_ANNOTATION,
    TrimbleConnection, TrimbleConnectionStatus,
};
use crate::leaf::{Credential, LeafAccount, LeafError, Trimble, TrimbleCreateRequest};
use crate::reason::Reason;
use crate::secret::{self, SecretError, TrimbleSecret};

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
    let failure = Mutex::new(None);
    let result = finalizer::finalizer(&api, FINALIZER, tc, |event| async {
        match event {
            FinalizerEvent::Apply(tc) => apply(tc, &ctx, &failure).await,
            FinalizerEvent::Cleanup(tc) => cleanup(tc, &ctx, &failure).await,
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

/// The reconcile of one object, with the status as it currently is on the server.
struct Work<'a> {
    ctx: &'a Context,
    tc: Arc<TrimbleConnection>,
    api: Api<TrimbleConnection>,
    secrets: Api<Secret>,
    uid: String,
    name: String,
    /// The status on the server, updated after each of our writes.
    current: TrimbleConnectionStatus,
    generation: Option<i64>,
    /// The annotation value this reconcile answers (echoed into `lastHandledReconcileAt`).
    handled_at: Option<String>,
    /// Identifies the inputs of the Leaf calls (Secret fingerprint and Leaf account): the
    /// schedule is bypassed when they change.
    schedule_key: String,
    failure: &'a Mutex<Option<Reason>>,
}

impl<'a> Work<'a> {
    fn new(
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

    fn user(&self) -> &str {
        &self.tc.spec.leaf_user_id
    }

    fn secret_name(&self) -> &str {
        &self.tc.spec.credentials_secret_ref.name
    }

    fn refresh_interval(&self) -> Duration {
        self.ctx
            .refresh_override
            .unwrap_or_else(|| self.tc.spec.refresh_interval())
    }

    /// Writes `next` with the conditions for `outcome`, unless that is exactly what is there.
    /// Emits an Event when the `Ready` reason changes to one the user must hear about.
    async fn write(
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
                &PatchParams::default(),
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
            self.ctx
                .events
                .publish(&self.tc, outcome.reason, "Reconcile", &outcome.message)
                .await;
        }
    }

    async fn event(&self, reason: Reason, action: &str, note: &str) {
        self.ctx
            .events
            .publish(&self.tc, reason, action, note)
            .await;
    }

    /// The Leaf account for this resource, or the outcome that explains why there is none.
    async fn account(&self) -> Result<Result<LeafAccount, Outcome>, Error> {
        let Some(reference) = &self.tc.spec.leaf_auth_secret_ref else {
            return Ok(self.ctx.default_account.clone().ok_or_else(|| {
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
    async fn leaf_failed(
        &mut self,
        next: TrimbleConnectionStatus,
        error: &LeafError,
        doing: &str,
    ) -> Result<Action, Error> {
        let (reason, message) = match error {
            LeafError::Unavailable { .. } | LeafError::InvalidResponse { .. } => (
                Reason::LeafUnavailable,
                format!("{doing}: {error}; retrying with backoff"),
            ),
            LeafError::AuthFailed { .. } | LeafError::Config { .. } => (
                Reason::LeafAuthFailed,
                format!(
                    "{doing}: {error}; check the Leaf API account (spec.leafAuthSecretRef or the operator's default account)"
                ),
            ),
            LeafError::Rejected { .. } | LeafError::AlreadyExists { .. } => {
                (Reason::CredentialRejected, format!("{doing}: {error}"))
            }
        };
        warn!(%error, reason = reason.as_str(), "{doing}");
        self.write(next, &Outcome::new(reason, message)).await?;
        let wait =
            self.ctx
                .schedules
                .failed(&self.uid, error.retry_after(), Some(&self.schedule_key));
        Ok(Action::requeue(wait))
    }

    /// Copies what Leaf reports about the credential into the status.
    fn fill(next: &mut TrimbleConnectionStatus, credential: &Credential) {
        next.credential_id = Some(credential.id.clone());
        next.credential_status = Some(credential.raw_status.clone());
        next.scopes = credential.scopes.clone();
        next.leaf_created_time = credential.created_time.clone();
    }

    /// The periodic check: Leaf's status and events for a credential we own.
    async fn check(
        &mut self,
        account: &LeafAccount,
        mut next: TrimbleConnectionStatus,
        credential: &Credential,
    ) -> Result<Action, Error> {
        Self::fill(&mut next, credential);
        let events = match self
            .ctx
            .leaf
            .credential_events::<Trimble>(account, self.user())
            .await
        {
            Ok(events) => events,
            Err(error) => {
                return self
                    .leaf_failed(next, &error, "reading the credential's events from Leaf")
                    .await;
            }
        };
        let merged = status::merge_events(&self.current.recent_events, &events);
        next.recent_events = merged.recent;
        let outcome = status::credential_outcome(&credential.status, self.secret_name());
        self.write(next, &outcome).await?;
        // Recorded in the status first, so a restart cannot announce the same Leaf event twice.
        for event in &merged.new_errors {
            self.ctx.events.publish_leaf_event(&self.tc, event).await;
        }
        let wait = self.ctx.schedules.succeeded(
            &self.uid,
            self.refresh_interval(),
            Some(&self.schedule_key),
        );
        Ok(Action::requeue(wait))
    }

    /// Records the intent, then creates the credential.
    async fn create(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
        mut next: TrimbleConnectionStatus,
        rotating_from: Option<String>,
    ) -> Result<Action, Error> {
        next.pending_create = Some(PendingCreate {
            secret_fingerprint: secret.fingerprint.clone(),
            started_at: jiff::Timestamp::now().to_string(),
        });
        let step = match &rotating_from {
            Some(_) => Outcome::new(
                Reason::Rotating,
                "Rotating: creating the Trimble credential in Leaf from the changed Secret",
            ),
            None => Outcome::new(Reason::Creating, "Creating the Trimble credential in Leaf"),
        };
        // This write must land before the POST: it is what a restart decides from.
        self.write(next.clone(), &step).await?;
        self.post(account, secret, next, rotating_from).await
    }

    /// The POST itself; `next.pendingCreate` is already on the server.
    async fn post(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
        mut next: TrimbleConnectionStatus,
        rotating_from: Option<String>,
    ) -> Result<Action, Error> {
        let request = TrimbleCreateRequest {
            client_id: secret.client_id.clone(),
            client_secret: secret.client_secret.clone(),
            refresh_token: secret.refresh_token.clone(),
        };
        match self
            .ctx
            .leaf
            .create_credential::<Trimble>(account, self.user(), &request)
            .await
        {
            Ok(credential) => {
                next.pending_create = None;
                next.secret_fingerprint = Some(secret.fingerprint.clone());
                // Events belong to a credential; a new one starts with none.
                next.recent_events.clear();
                Self::fill(&mut next, &credential);
                let outcome = status::credential_outcome(&credential.status, self.secret_name());
                self.write(next, &outcome).await?;
                match rotating_from {
                    Some(old) => {
                        info!(credential = %credential.id, "rotated the Trimble credential");
                        self.ctx.metrics.record_rotation();
                        self.event(
                            Reason::Rotated,
                            "Rotate",
                            &format!(
                                "Rotated the Trimble credential of Leaf user {} after Secret {:?} changed: deleted {old}, created {}",
                                self.user(),
                                self.secret_name(),
                                credential.id
                            ),
                        )
                        .await;
                    }
                    None => {
                        info!(credential = %credential.id, "created the Trimble credential");
                        self.event(
                            Reason::Created,
                            "Create",
                            &format!(
                                "Created Trimble credential {} for Leaf user {}",
                                credential.id,
                                self.user()
                            ),
                        )
                        .await;
                    }
                }
                let wait = self.ctx.schedules.succeeded(
                    &self.uid,
                    self.refresh_interval(),
                    Some(&self.schedule_key),
                );
                Ok(Action::requeue(wait))
            }
            Err(LeafError::AlreadyExists { .. }) => {
                // Nothing was created; someone else's credential is there. Decide by adoptionPolicy.
                next.pending_create = None;
                next.credential_id = None;
                self.write(
                    next,
                    &Outcome::new(Reason::Creating, "Leaf already has a Trimble credential for this user; deciding by adoptionPolicy"),
                )
                .await?;
                let wait = self.ctx.schedules.failed(&self.uid, None, None);
                Ok(Action::requeue(wait))
            }
            Err(error @ LeafError::Rejected { .. }) => {
                // Leaf refused these values: nothing was created, and sending them again would be
                // refused again. Remember them as used until the Secret changes.
                next.pending_create = None;
                next.credential_id = None;
                next.credential_status = None;
                next.scopes.clear();
                next.leaf_created_time = None;
                next.secret_fingerprint = Some(secret.fingerprint.clone());
                let message = format!(
                    "{error}. Put corrected values into Secret {:?} (usually a new refresh token from the grower's Trimble authorization)",
                    self.secret_name()
                );
                warn!(%error, "Leaf refused to create the Trimble credential");
                self.write(next, &Outcome::new(Reason::CredentialRejected, message))
                    .await?;
                self.ctx
                    .schedules
                    .hold(&self.uid, STALLED_RECHECK, Some(&self.schedule_key));
                Ok(Action::requeue(STALLED_RECHECK))
            }
            Err(error) => {
                if matches!(
                    error,
                    LeafError::AuthFailed { .. } | LeafError::Config { .. }
                ) {
                    // Refused before anything was created: no doubt to resolve later.
                    next.pending_create = None;
                }
                // Otherwise (no answer, 5xx) the POST may have happened: pendingCreate stays and
                // the next attempt starts with a GET.
                self.leaf_failed(next, &error, "creating the Trimble credential in Leaf")
                    .await
            }
        }
    }

    /// DELETE the current credential, then create one from the Secret (Leaf has no update).
    async fn rotate(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
        mut next: TrimbleConnectionStatus,
        old_id: String,
    ) -> Result<Action, Error> {
        next.pending_create = Some(PendingCreate {
            secret_fingerprint: secret.fingerprint.clone(),
            started_at: jiff::Timestamp::now().to_string(),
        });
        self.write(
            next.clone(),
            &Outcome::new(
                Reason::Rotating,
                "Rotating: the Secret changed; replacing the Trimble credential in Leaf",
            ),
        )
        .await?;
        if let Err(error) = self
            .ctx
            .leaf
            .delete_credential::<Trimble>(account, self.user())
            .await
        {
            return self
                .leaf_failed(
                    next,
                    &error,
                    "deleting the old Trimble credential for rotation",
                )
                .await;
        }
        // Deliberately not written: a restart finds pendingCreate and decides from a GET (the old
        // id still there means the DELETE did not happen).
        next.credential_id = None;
        next.credential_status = None;
        self.post(account, secret, next, Some(old_id)).await
    }

    /// A credential exists that this resource did not create.
    async fn adopt_or_conflict(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
        mut next: TrimbleConnectionStatus,
        credential: Credential,
    ) -> Result<Action, Error> {
        let matches = credential.client_id.as_deref() == Some(secret.client_id.as_str());
        let conflict = |why: &str| {
            Outcome::new(
                Reason::Conflict,
                format!(
                    "Leaf user {} already has Trimble credential {} that this resource did not create; {why}",
                    self.user(),
                    credential.id
                ),
            )
        };
        match self.tc.spec.adoption_policy {
            AdoptionPolicy::AdoptMatching if matches => {
                next.secret_fingerprint = Some(secret.fingerprint.clone());
                let action = self.check(account, next, &credential).await?;
                info!(credential = %credential.id, "adopted the existing Trimble credential");
                self.event(
                    Reason::Adopted,
                    "Adopt",
                    &format!(
                        "Adopted the existing Trimble credential {} of Leaf user {}: its clientId matches Secret {:?}",
                        credential.id,
                        self.user(),
                        self.secret_name()
                    ),
                )
                .await;
                Ok(action)
            }
            AdoptionPolicy::AdoptMatching => {
                let outcome = conflict(
                    "its clientId differs from the Secret's, so adoptionPolicy AdoptMatching leaves it alone. \
                     Set adoptionPolicy: Replace to replace it, or remove it from Leaf",
                );
                self.hold_conflict(next, outcome).await
            }
            AdoptionPolicy::Never => {
                let outcome = conflict(
                    "adoptionPolicy Never leaves it alone. Set adoptionPolicy: AdoptMatching or Replace, or remove it from Leaf",
                );
                self.hold_conflict(next, outcome).await
            }
            AdoptionPolicy::Replace => {
                if let Err(error) = self
                    .ctx
                    .leaf
                    .delete_credential::<Trimble>(account, self.user())
                    .await
                {
                    return self
                        .leaf_failed(
                            next,
                            &error,
                            "deleting the existing Trimble credential (adoptionPolicy Replace)",
                        )
                        .await;
                }
                info!(credential = %credential.id, "deleted the existing Trimble credential to replace it");
                next.credential_id = None;
                self.create(account, secret, next, None).await
            }
        }
    }

    async fn hold_conflict(
        &mut self,
        mut next: TrimbleConnectionStatus,
        outcome: Outcome,
    ) -> Result<Action, Error> {
        next.credential_id = None;
        next.credential_status = None;
        next.pending_create = None;
        self.write(next, &outcome).await?;
        self.ctx
            .schedules
            .hold(&self.uid, STALLED_RECHECK, Some(&self.schedule_key));
        Ok(Action::requeue(STALLED_RECHECK))
    }

    /// Everything that talks to Leaf in an apply.
    async fn leaf_work(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
    ) -> Result<Action, Error> {
        let next = self.current.clone();
        let get = self
            .ctx
            .leaf
            .get_credential::<Trimble>(account, self.user())
            .await;
        // 1. A create was under way: did it happen?
        if let Some(pending) = self.current.pending_create.clone() {
            let existing = match get {
                Ok(existing) => existing,
                Err(error) => {
                    return self
                        .leaf_failed(next, &error, "reading the Trimble credential from Leaf")
                        .await;
                }
            };
            let rotating_from = self.current.credential_id.clone();
            return match existing {
                None => self.create(account, secret, next, rotating_from).await,
                Some(credential) if rotating_from.as_deref() == Some(credential.id.as_str()) => {
                    // The old credential is still there: the rotation's DELETE did not happen.
                    self.rotate(account, secret, next, credential.id).await
                }
                Some(credential)
                    if credential.client_id.is_none()
                        || credential.client_id.as_deref() == Some(secret.client_id.as_str()) =>
                {
                    self.resume_created(account, secret, next, pending, credential, rotating_from)
                        .await
                }
                Some(credential) => {
                    let mut next = next;
                    next.pending_create = None;
                    next.credential_id = None;
                    self.adopt_or_conflict(account, secret, next, credential)
                        .await
                }
            };
        }
        let existing = match get {
            Ok(existing) => existing,
            Err(error) => {
                return self
                    .leaf_failed(next, &error, "reading the Trimble credential from Leaf")
                    .await;
            }
        };
        match self.current.credential_id.clone() {
            // 2. Nothing of ours yet: create, or decide by adoptionPolicy.
            None => match existing {
                None => self.create(account, secret, next, None).await,
                Some(credential) => {
                    self.adopt_or_conflict(account, secret, next, credential)
                        .await
                }
            },
            // 3. Ours, and the Secret changed: rotate.
            Some(old_id)
                if self.current.secret_fingerprint.as_deref()
                    != Some(secret.fingerprint.as_str()) =>
            {
                self.rotate(account, secret, next, old_id).await
            }
            // 4. Ours and unchanged: the periodic check.
            Some(old_id) => match existing {
                Some(credential) => self.check(account, next, &credential).await,
                None => {
                    let mut next = next;
                    next.credential_status = None;
                    let message = format!(
                        "The Trimble credential {old_id} no longer exists in Leaf (removed outside this operator). \
                         The Secret's refresh token was used already and cannot be sent again: put a new one from the \
                         grower into Secret {:?} to create the credential again",
                        self.secret_name()
                    );
                    self.write(next, &Outcome::new(Reason::CredentialInvalid, message))
                        .await?;
                    let wait = self.ctx.schedules.succeeded(
                        &self.uid,
                        self.refresh_interval(),
                        Some(&self.schedule_key),
                    );
                    Ok(Action::requeue(wait))
                }
            },
        }
    }

    /// After a restart: the credential the interrupted POST created is there. It is ours.
    async fn resume_created(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
        mut next: TrimbleConnectionStatus,
        pending: PendingCreate,
        credential: Credential,
        rotating_from: Option<String>,
    ) -> Result<Action, Error> {
        next.pending_create = None;
        next.secret_fingerprint = Some(pending.secret_fingerprint.clone());
        next.recent_events.clear();
        let (reason, event_action, note) = match &rotating_from {
            Some(old) => (
                Reason::Rotated,
                "Rotate",
                format!(
                    "Rotated the Trimble credential of Leaf user {}: deleted {old}, created {} (found after an interruption; not created again)",
                    self.user(),
                    credential.id
                ),
            ),
            None => (
                Reason::Created,
                "Create",
                format!(
                    "Created Trimble credential {} for Leaf user {} (found after an interruption; not created again)",
                    credential.id,
                    self.user()
                ),
            ),
        };
        info!(credential = %credential.id, "found the credential an interrupted create made; recording it");
        // The check records it and schedules the next one; if the Secret changed meanwhile, the
        // fingerprint differs and the next reconcile rotates.
        let action = self.check(account, next, &credential).await?;
        if rotating_from.is_some() {
            self.ctx.metrics.record_rotation();
        }
        self.event(reason, event_action, &note).await;
        if pending.secret_fingerprint != secret.fingerprint {
            // The Secret changed while the create was in doubt: rotate at once.
            self.ctx.schedules.succeeded(
                &self.uid,
                self.refresh_interval(),
                Some(&schedule_key(&pending.secret_fingerprint, account)),
            );
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        Ok(action)
    }
}

/// Ready reasons that come from talking to Leaf: while one of them is current and the schedule
/// says "not yet", a reconcile has nothing new to learn and makes no Leaf call.
fn is_leaf_state(reason: Option<&str>) -> bool {
    matches!(
        reason,
        Some(
            "CredentialValid"
                | "CredentialInvalid"
                | "MissingPermission"
                | "ProviderUnavailable"
                | "CredentialStatusUnknown"
                | "LeafUnavailable"
                | "LeafAuthFailed"
                | "CredentialRejected"
                | "Conflict"
                | "Creating"
                | "Rotating"
        )
    )
}

/// Reads the object again: the store can lag behind our own last status write, and a decision
/// about creating must be made on what the server holds now.
async fn fresh(
    api: &Api<TrimbleConnection>,
    tc: &TrimbleConnection,
) -> Result<Option<Arc<TrimbleConnection>>, Error> {
    Ok(api
        .get_opt(&tc.name_any())
        .await
        .map_err(Error::Get)?
        .map(Arc::new))
}

async fn apply(
    tc: Arc<TrimbleConnection>,
    ctx: &Context,
    failure: &Mutex<Option<Reason>>,
) -> Result<Action, Error> {
    let api: Api<TrimbleConnection> =
        Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default());
    let Some(tc) = fresh(&api, &tc).await? else {
        return Ok(Action::await_change());
    };
    if tc.meta().deletion_timestamp.is_some() {
        // The watch event for the deletion brings the cleanup.
        return Ok(Action::await_change());
    }
    let mut work = Work::new(ctx, tc.clone(), failure);
    let requested = tc
        .annotations()
        .get(RECONCILE_REQUESTED_AT_ANNOTATION)
        .cloned();
    let annotation_new = requested.is_some() && requested != work.current.last_handled_reconcile_at;
    let generation_new = work.generation != work.current.observed_generation;
    let forced = annotation_new || generation_new;
    let base = work.current.clone();

    if tc.spec.suspend {
        // Flux's convention: no Leaf calls and no changes; the annotation is not answered either.
        work.write(
            base,
            &Outcome::new(
                Reason::Suspended,
                "spec.suspend is true: no Leaf calls and no changes until it is false",
            ),
        )
        .await?;
        return Ok(Action::await_change());
    }
    if annotation_new {
        work.handled_at = requested;
    }

    let stores = ctx.stores();
    if let Some(winner) = conflict::find_winner(&tc, &stores) {
        let message = format!(
            "Leaf user {} is already managed by the older TrimbleConnection {winner}; this one makes no change in Leaf \
             while that one exists",
            tc.spec.leaf_user_id
        );
        work.write(base, &Outcome::new(Reason::Conflict, message))
            .await?;
        return Ok(Action::requeue(CONFLICT_RECHECK));
    }

    let account = match work.account().await? {
        Ok(account) => account,
        Err(outcome) => {
            let wait = if outcome.reason == Reason::SecretNotFound {
                SECRET_NOT_FOUND_RECHECK
            } else {
                STALLED_RECHECK
            };
            work.write(base, &outcome).await?;
            return Ok(Action::requeue(wait));
        }
    };
    let secret = match secret::read_trimble_secret(&work.secrets, &tc.spec.credentials_secret_ref)
        .await
    {
        Ok(secret) => secret,
        Err(error @ SecretError::Api { .. }) => return Err(Error::Secret(error)),
        Err(error) if error.is_not_found() => {
            let message =
                format!("{error}; waiting for it (the operator proceeds as soon as it is created)");
            work.write(base, &Outcome::new(Reason::SecretNotFound, message))
                .await?;
            return Ok(Action::requeue(SECRET_NOT_FOUND_RECHECK));
        }
        Err(error) => {
            let message = format!(
                "{error}: it needs the Trimble application's client ID and secret and the grower's refresh token \
                 (keys {:?}, {:?}, {:?})",
                tc.spec.credentials_secret_ref.client_id_key,
                tc.spec.credentials_secret_ref.client_secret_key,
                tc.spec.credentials_secret_ref.refresh_token_key
            );
            work.write(base, &Outcome::new(Reason::SecretInvalid, message))
                .await?;
            // The Secret watch brings the fix; no need to look on our own.
            return Ok(Action::await_change());
        }
    };

    // No credential of ours, nothing in doubt, and these exact values were sent already (and
    // refused): sending them again cannot help, and a refresh token must never be sent twice.
    if work.current.credential_id.is_none()
        && work.current.pending_create.is_none()
        && work.current.secret_fingerprint.as_deref() == Some(secret.fingerprint.as_str())
        && status::ready_reason(&work.current) == Some(Reason::CredentialRejected.as_str())
    {
        if forced {
            work.write(
                base,
                &Outcome::new(Reason::CredentialRejected, current_message(&work.current)),
            )
            .await?;
        }
        return Ok(Action::await_change());
    }

    work.schedule_key = schedule_key(&secret.fingerprint, &account);
    if let Some(schedule) = ctx.schedules.get(&work.uid) {
        let now = Instant::now();
        let same_secret = schedule.fingerprint.as_deref() == Some(work.schedule_key.as_str());
        if now < schedule.next_leaf_call
            && !forced
            && same_secret
            && is_leaf_state(status::ready_reason(&work.current))
        {
            return Ok(Action::requeue(schedule.next_leaf_call - now));
        }
    }
    work.leaf_work(&account, &secret).await
}

/// A JSON merge patch that makes the status exactly `status`: absent fields are sent as `null`,
/// so they are removed whoever wrote them (a server-side apply would keep fields another field
/// manager, e.g. `kubectl edit --subresource=status`, had set).
fn status_patch(status: &TrimbleConnectionStatus) -> serde_json::Value {
    const FIELDS: [&str; 10] = [
        "observedGeneration",
        "conditions",
        "credentialId",
        "credentialStatus",
        "scopes",
        "leafCreatedTime",
        "secretFingerprint",
        "pendingCreate",
        "lastHandledReconcileAt",
        "recentEvents",
    ];
    let mut value = serde_json::to_value(status).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = value.as_object_mut() {
        for field in FIELDS {
            object.entry(field).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": value })
}

fn schedule_key(fingerprint: &str, account: &LeafAccount) -> String {
    format!("{fingerprint}/{}", account.account_key())
}

fn current_message(status: &TrimbleConnectionStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::reason::CONDITION_READY)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

async fn cleanup(
    tc: Arc<TrimbleConnection>,
    ctx: &Context,
    failure: &Mutex<Option<Reason>>,
) -> Result<Action, Error> {
    let api: Api<TrimbleConnection> =
        Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default());
    let Some(tc) = fresh(&api, &tc).await? else {
        return Ok(Action::await_change());
    };
    let mut work = Work::new(ctx, tc.clone(), failure);
    let uid = work.uid.clone();
    let credential = work.current.credential_id.clone();
    if credential.is_none() && work.current.pending_create.is_none() {
        // Never created anything (or lost a conflict): nothing to clean up in Leaf.
        ctx.schedules.forget(&uid);
        return Ok(Action::await_change());
    }
    let shown = credential
        .clone()
        .unwrap_or_else(|| "(create in progress)".to_string());
    if tc.spec.deletion_policy == DeletionPolicy::Orphan {
        work.event(
            Reason::Orphaned,
            "Orphan",
            &format!(
                "Left Trimble credential {shown} of Leaf user {} in Leaf (deletionPolicy: Orphan)",
                tc.spec.leaf_user_id
            ),
        )
        .await;
        ctx.schedules.forget(&uid);
        return Ok(Action::await_change());
    }
    // Delete, also when suspended: deleting the resource is the user's explicit request.
    let generation_new = work.generation != work.current.observed_generation;
    if let Some(schedule) = ctx.schedules.get(&uid) {
        let now = Instant::now();
        if schedule.failures > 0 && now < schedule.next_leaf_call && !generation_new {
            return Err(Error::Waiting {
                reason: Reason::Deleting,
                message: "waiting before trying Leaf again".to_string(),
                retry: schedule.next_leaf_call - now,
            });
        }
    }
    let account = match work.account().await? {
        Ok(account) => account,
        Err(outcome) => {
            // Without an account nothing can be deleted; a missing Secret must not block
            // deletion, so the credential is left in Leaf and the user is told.
            work.event(
                outcome.reason,
                "Delete",
                &format!(
                    "{}. Trimble credential {shown} was left in Leaf",
                    outcome.message
                ),
            )
            .await;
            ctx.schedules.forget(&uid);
            return Ok(Action::await_change());
        }
    };
    match ctx
        .leaf
        .delete_credential::<Trimble>(&account, &tc.spec.leaf_user_id)
        .await
    {
        Ok(()) => {
            info!(credential = %shown, "deleted the Trimble credential");
            work.event(
                Reason::Deleted,
                "Delete",
                &format!(
                    "Deleted Trimble credential {shown} of Leaf user {} from Leaf",
                    tc.spec.leaf_user_id
                ),
            )
            .await;
            ctx.schedules.forget(&uid);
            Ok(Action::await_change())
        }
        Err(error) => {
            let reason = match error {
                LeafError::Unavailable { .. } | LeafError::InvalidResponse { .. } => {
                    Reason::LeafUnavailable
                }
                LeafError::AuthFailed { .. } | LeafError::Config { .. } => Reason::LeafAuthFailed,
                LeafError::Rejected { .. } | LeafError::AlreadyExists { .. } => {
                    Reason::CredentialRejected
                }
            };
            let message = format!(
                "Deleting: cannot delete Trimble credential {shown} from Leaf: {error}. Retrying; set \
                 spec.deletionPolicy: Orphan to finish the deletion and leave the credential in Leaf"
            );
            warn!(%error, "failed to delete the Trimble credential");
            let base = work.current.clone();
            work.write(base, &Outcome::new(reason, message.clone()))
                .await?;
            let retry = ctx.schedules.failed(&uid, error.retry_after(), None);
            Err(Error::Waiting {
                reason,
                message,
                retry,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_patch_removes_every_absent_field() {
        let status = TrimbleConnectionStatus {
            credential_id: Some("c1".to_string()),
            ..TrimbleConnectionStatus::default()
        };
        let patch = status_patch(&status);
        let fields = patch["status"].as_object().expect("status object");
        assert_eq!(fields["credentialId"], "c1");
        for absent in [
            "pendingCreate",
            "secretFingerprint",
            "conditions",
            "recentEvents",
        ] {
            assert!(
                fields[absent].is_null(),
                "{absent} must be sent as null: {patch}"
            );
        }
    }
}
