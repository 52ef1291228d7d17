//! The executors: one per [`Step`], each doing exactly what its step says.

mod adopt;
mod check;
pub(super) mod cleanup;
mod create;
mod hold;
mod replace;

use tracing::warn;

use super::writer::StatusWriter;
use super::{Input, Interrupted, Ports};
use crate::controller::decide::{Next, SENT_TOKENS_KEPT, SecretFact, Step};
use crate::controller::status::{self, Outcome, SecretNote};
use crate::crd::{PendingCreate, TrimbleConnectionStatus};
use crate::leaf::{Credential, LeafError};
use crate::reason::Reason;

/// Runs the executor of `step`.
pub(super) async fn execute<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    step: Step,
) -> Result<Next, Interrupted> {
    match step {
        Step::Create { replacing } => create::create(w, input, replacing.is_some()).await,
        Step::Resume { credential } => create::resume(w, input, credential).await,
        Step::AwaitInDoubt { left } => hold::await_in_doubt(w, input, left).await,
        Step::Adopt { credential } => adopt::adopt(w, input, credential).await,
        Step::Replace { credential } => replace::replace(w, input, credential).await,
        Step::Rotate { credential } => replace::rotate(w, input, credential).await,
        Step::Check {
            credential,
            fetch_events,
        } => {
            let base = w.current().clone();
            check::check(w, input, base, &credential, fetch_events).await
        }
        Step::NeedNewValues { vanished } => hold::need_new_values(w, input, vanished).await,
        Step::Foreign { credential, why } => hold::foreign(w, input, credential, why).await,
        Step::NeedSecret { credential } => hold::need_secret(w, input, credential).await,
    }
}

/// Records a failed Leaf call: the reason on the resource with `next` as its status, and the
/// backoff before the next try.
pub(super) async fn leaf_failed<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    next: TrimbleConnectionStatus,
    error: &LeafError,
    doing: &str,
) -> Result<Next, Interrupted> {
    let reason = status::leaf_error_reason(error);
    let message = match reason {
        Reason::LeafUnavailable => format!("{doing}: {error}; retrying with backoff"),
        Reason::LeafAuthFailed => format!(
            "{doing}: {error}; check the Leaf API account (spec.leafAuthSecretRef or the operator's default account)"
        ),
        _ => format!("{doing}: {error}"),
    };
    warn!(%error, reason = reason.as_str(), "{doing}");
    w.write(next, &Outcome::new(reason, message)).await?;
    Ok(Next::Backoff {
        retry_after: error.retry_after(),
    })
}

/// Copies what Leaf reports about the credential into the status.
pub(super) fn fill(next: &mut TrimbleConnectionStatus, credential: &Credential) {
    next.credential_id = Some(credential.id.clone());
    next.credential_status = Some(credential.raw_status.clone());
    next.scopes = credential.scopes.clone();
    next.leaf_created_time = credential.created_time.clone();
}

/// Remembers the refresh token `pending` sent (newest first, a bounded list): it is never sent
/// again.
pub(super) fn remember_sent(next: &mut TrimbleConnectionStatus, pending: &PendingCreate) {
    if let Some(token) = &pending.refresh_token_fingerprint {
        next.sent_refresh_tokens.retain(|sent| sent != token);
        next.sent_refresh_tokens.insert(0, token.clone());
        next.sent_refresh_tokens.truncate(SENT_TOKENS_KEPT);
    }
}

/// Ends a create whose doubt closed without a credential of its own in sight, for a step that
/// does not send again: its refresh token may have been used (its credential could have been
/// replaced or removed before any GET saw it), so it counts as sent.
pub(super) fn close_doubt(next: &mut TrimbleConnectionStatus) {
    if let Some(pending) = next.pending_create.take() {
        remember_sent(next, &pending);
    }
}

/// Forgets everything about a credential in `next` (it is gone, or not ours).
pub(super) fn forget_credential(next: &mut TrimbleConnectionStatus) {
    next.credential_id = None;
    next.credential_status = None;
    next.scopes.clear();
    next.leaf_created_time = None;
    next.recent_events.clear();
}

/// Where the Secret stands relative to the credential recorded in `status`.
pub(super) fn secret_note(input: &Input<'_>, status: &TrimbleConnectionStatus) -> SecretNote {
    match &input.facts.secret {
        SecretFact::Missing { .. } => SecretNote::Missing,
        SecretFact::Invalid { .. } => SecretNote::Invalid,
        SecretFact::Present { fingerprint, .. } => {
            let unchanged = status.secret_fingerprint.as_deref() == Some(fingerprint)
                || status.adopted_secret_fingerprint.as_deref() == Some(fingerprint);
            if status.secret_fingerprint.is_none()
                && status.adopted_secret_fingerprint.as_deref() == Some(fingerprint)
            {
                SecretNote::AdoptedUnsent
            } else if !unchanged && input.facts.token_sent_before() {
                SecretNote::ReusedToken
            } else {
                SecretNote::Sent
            }
        }
    }
}

/// The names messages use.
pub(super) fn user<'a>(input: &'a Input<'_>) -> &'a str {
    &input.facts.spec.leaf_user_id
}

pub(super) fn secret_name<'a>(input: &'a Input<'_>) -> &'a str {
    &input.facts.spec.credentials_secret_ref.name
}
