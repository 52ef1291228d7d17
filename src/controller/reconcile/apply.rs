//! Apply: read what the resource references, stop early wherever Leaf has nothing new to say,
//! and hand the rest to [`Work::dispatch`].
//!
//! The early stops are what keep a reconcile triggered by our own status write free of Leaf
//! calls and writes: suspend, a Leaf-user conflict, a missing account or Secret, values Leaf
//! refused already, and a schedule that says the next check is not due.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::work::{Work, schedule_key};
use super::{CONFLICT_RECHECK, Error, SECRET_NOT_FOUND_RECHECK, STALLED_RECHECK, fresh};
use crate::controller::Context;
use crate::controller::conflict;
use crate::controller::status::{self, Outcome};
use crate::crd::{RECONCILE_REQUESTED_AT_ANNOTATION, TrimbleConnection, TrimbleConnectionStatus};
use crate::reason::{CONDITION_READY, Reason};
use crate::secret::{self, SecretError, TrimbleSecret};

pub(super) async fn apply(
    tc: Arc<TrimbleConnection>,
    ctx: &Context,
    failure: &Mutex<Option<Reason>>,
) -> Result<Action, Error> {
    let Some(tc) = fresh(&tc, ctx).await? else {
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
    let forced = ctx.hints.take(&work.uid).is_some() || annotation_new || generation_new;
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

    if let Some(winner) = conflict::find_winner(&tc, &ctx.stores()) {
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
    let secret = match read_secret(&mut work, base.clone()).await? {
        Ok(secret) => secret,
        Err(action) => return Ok(action),
    };

    if refused_already(&work.current, &secret) {
        // Sending them again cannot help, and a refresh token must never be sent twice; a forced
        // reconcile still gets its answer (observedGeneration, lastHandledReconcileAt).
        if forced {
            let outcome = Outcome::new(Reason::CredentialRejected, ready_message(&work.current));
            work.write(base, &outcome).await?;
        }
        return Ok(Action::await_change());
    }

    work.schedule_key = schedule_key(&secret.fingerprint, &account);
    if let Some(schedule) = ctx.schedules.get(&work.uid) {
        let now = Instant::now();
        let same_inputs = schedule.fingerprint.as_deref() == Some(work.schedule_key.as_str());
        if now < schedule.next_leaf_call
            && !forced
            && same_inputs
            && is_leaf_state(status::ready_reason(&work.current))
        {
            return Ok(Action::requeue(schedule.next_leaf_call - now));
        }
    }
    work.dispatch(&account, &secret).await
}

/// The credentials Secret, or the action after recording why it cannot be used.
async fn read_secret(
    work: &mut Work<'_>,
    base: TrimbleConnectionStatus,
) -> Result<Result<TrimbleSecret, Action>, Error> {
    let tc = work.tc.clone();
    let reference = &tc.spec.credentials_secret_ref;
    let error = match secret::read_trimble_secret(&work.secrets, reference).await {
        Ok(secret) => return Ok(Ok(secret)),
        Err(error @ SecretError::Api { .. }) => return Err(Error::Secret(error)),
        Err(error) => error,
    };
    if error.is_not_found() {
        let message =
            format!("{error}; waiting for it (the operator proceeds as soon as it is created)");
        work.write(base, &Outcome::new(Reason::SecretNotFound, message))
            .await?;
        return Ok(Err(Action::requeue(SECRET_NOT_FOUND_RECHECK)));
    }
    let message = format!(
        "{error}: it needs the Trimble application's client ID and secret and the grower's refresh token \
         (keys {:?}, {:?}, {:?})",
        reference.client_id_key, reference.client_secret_key, reference.refresh_token_key
    );
    work.write(base, &Outcome::new(Reason::SecretInvalid, message))
        .await?;
    // The Secret watch brings the fix; no need to look on our own.
    Ok(Err(Action::await_change()))
}

/// No credential of ours, nothing in doubt, and Leaf refused exactly these values already.
fn refused_already(current: &TrimbleConnectionStatus, secret: &TrimbleSecret) -> bool {
    current.credential_id.is_none()
        && current.pending_create.is_none()
        && current.secret_fingerprint.as_deref() == Some(secret.fingerprint.as_str())
        && status::ready_reason(current) == Some(Reason::CredentialRejected.as_str())
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

/// The `Ready` message now on the resource.
fn ready_message(status: &TrimbleConnectionStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PendingCreate;
    use secrecy::SecretString;

    fn secret(fingerprint: &str) -> TrimbleSecret {
        TrimbleSecret {
            client_id: "id".to_string(),
            client_secret: SecretString::from("cs"),
            refresh_token: SecretString::from("rt"),
            fingerprint: fingerprint.to_string(),
        }
    }

    fn rejected(fingerprint: &str) -> TrimbleConnectionStatus {
        let next = TrimbleConnectionStatus {
            secret_fingerprint: Some(fingerprint.to_string()),
            ..TrimbleConnectionStatus::default()
        };
        status::finish(
            &TrimbleConnectionStatus::default(),
            next,
            &Outcome::new(Reason::CredentialRejected, "refused"),
            Some(1),
            &status::now(),
        )
    }

    #[test]
    fn refused_values_are_not_sent_again_but_changed_values_are() {
        assert!(refused_already(&rejected("f1"), &secret("f1")));
        assert!(!refused_already(&rejected("f1"), &secret("f2")));
        let in_doubt = TrimbleConnectionStatus {
            pending_create: Some(PendingCreate {
                secret_fingerprint: "f1".to_string(),
                started_at: "2026-01-01T00:00:00Z".to_string(),
                client_id_fingerprint: None,
            }),
            ..rejected("f1")
        };
        assert!(
            !refused_already(&in_doubt, &secret("f1")),
            "a create in doubt is resolved from a GET first"
        );
    }
}
