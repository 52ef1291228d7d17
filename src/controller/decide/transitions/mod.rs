//! What each step does to the status: pure functions from (facts, the status on the server, Leaf's
//! answer) to the status to write, the `Ready` outcome, when to look again and the Events to
//! publish.
//!
//! A step of the engine reads as: fence → one Leaf call → transition → write. Every rule about
//! what an answer means (is the write in doubt? is the token spent? is this credential ours now?)
//! lives here or in [`super::answers`], where a table test pins it; the executors only carry the
//! answer from the port to the function and the result to the API server.
//!
//! - [`create`]: the intent before a POST, what its answer means, and the resumption of a create
//!   that was in doubt;
//! - [`delete`]: the intent before a DELETE (rotation, replacement, deletion) and its answer;
//! - [`look`]: the periodic check of our credential and the adoption of a matching one;
//! - [`hold`]: the steps that write nothing to Leaf (waits, conflicts, values that cannot be sent);
//! - [`observe`]: what `managementPolicy: Observe` reports instead of a write.

pub mod create;
pub mod delete;
pub mod hold;
pub mod link;
pub mod look;
pub mod observe;
pub mod release;

use super::{Facts, SENT_TOKENS_KEPT, SecretFact};
use crate::controller::decide::Next;
use crate::controller::status::{self, Outcome, SecretNote};
use crate::crd::{CredentialEventSummary, PendingCreate, TrimbleConnectionStatus};
use crate::leaf::{Credential, LeafError};
use crate::reason::Reason;

/// The result of a step: what to write, what it means, when to look again, what to announce.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// The status to write (the writer adds the conditions for `outcome`).
    pub status: TrimbleConnectionStatus,
    pub outcome: Outcome,
    pub next: Next,
    /// Kubernetes Events to publish once the status is written.
    pub notices: Vec<Notice>,
    /// Leaf's error events seen for the first time, announced once the status (which remembers
    /// them) is written, so that a restart cannot announce one twice.
    pub leaf_events: Vec<CredentialEventSummary>,
}

impl Transition {
    pub fn new(status: TrimbleConnectionStatus, outcome: Outcome, next: Next) -> Self {
        Self {
            status,
            outcome,
            next,
            notices: Vec::new(),
            leaf_events: Vec::new(),
        }
    }

    /// With a Kubernetes Event to publish after the write.
    pub fn notice(mut self, reason: Reason, action: &'static str, note: String) -> Self {
        self.notices.push(Notice {
            reason,
            action,
            note,
        });
        self
    }
}

/// A Kubernetes Event about the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub reason: Reason,
    pub action: &'static str,
    pub note: String,
}

/// The status a step starts from: the one on the server, without a DELETE record whose window
/// has closed (that DELETE can no longer land; the read the step was chosen from shows its
/// result).
pub fn base(f: &Facts, current: &TrimbleConnectionStatus) -> TrimbleConnectionStatus {
    let mut base = current.clone();
    if base
        .pending_delete
        .as_ref()
        .is_some_and(|pending| f.windows.delete_left(pending, f.now).is_zero())
    {
        base.pending_delete = None;
    }
    base
}

/// A failed Leaf call that leaves nothing in doubt: its reason on the resource and backoff.
pub fn leaf_failed(status: TrimbleConnectionStatus, error: &LeafError, doing: &str) -> Transition {
    let reason = status::leaf_error_reason(error);
    let message = match reason {
        Reason::LeafUnavailable => format!("{doing}: {error}; retrying with backoff"),
        Reason::LeafAuthFailed => format!(
            "{doing}: {error}; check the Leaf API account (spec.leafAuthSecretRef or the operator's default account)"
        ),
        _ => format!("{doing}: {error}"),
    };
    Transition::new(
        status,
        Outcome::new(reason, message),
        Next::Backoff {
            retry_after: error.retry_after(),
        },
    )
}

/// Copies what Leaf reports about the credential into the status.
pub fn fill(next: &mut TrimbleConnectionStatus, credential: &Credential) {
    next.credential_id = Some(credential.id.clone());
    next.credential_status = Some(credential.raw_status.clone());
    next.scopes = credential.scopes.clone();
    next.leaf_created_time = credential.created_time.clone();
}

/// Remembers the refresh token `pending` sent (newest first, a bounded list): it is never sent
/// again.
pub fn remember_sent(next: &mut TrimbleConnectionStatus, pending: &PendingCreate) {
    if let Some(token) = &pending.refresh_token_fingerprint {
        next.sent_refresh_tokens.retain(|sent| sent != token);
        next.sent_refresh_tokens.insert(0, token.clone());
        next.sent_refresh_tokens.truncate(SENT_TOKENS_KEPT);
    }
}

/// Ends a create whose doubt closed without a credential of its own in sight, for a step that
/// does not send again: its refresh token may have been used (its credential could have been
/// replaced or removed before any GET saw it), so it counts as sent.
pub fn close_doubt(next: &mut TrimbleConnectionStatus) {
    if let Some(pending) = next.pending_create.take() {
        remember_sent(next, &pending);
    }
}

/// Forgets everything about a credential in `next` (it is gone, or not ours).
pub fn forget_credential(next: &mut TrimbleConnectionStatus) {
    next.credential_id = None;
    next.credential_status = None;
    next.scopes.clear();
    next.leaf_created_time = None;
    next.recent_events.clear();
    next.last_create = None;
}

/// Where the Secret stands relative to the credential recorded in `status`.
pub fn secret_note(f: &Facts, status: &TrimbleConnectionStatus) -> SecretNote {
    match &f.secret {
        SecretFact::Missing { .. } => SecretNote::Missing,
        SecretFact::Invalid { .. } => SecretNote::Invalid,
        // Connected by the grower's link: there are no values to compare.
        SecretFact::NotConfigured => SecretNote::Sent,
        SecretFact::Present { fingerprint, .. } => {
            let unchanged = status.secret_fingerprint.as_deref() == Some(fingerprint)
                || status.adopted_secret_fingerprint.as_deref() == Some(fingerprint);
            if status.secret_fingerprint.is_none()
                && status.adopted_secret_fingerprint.as_deref() == Some(fingerprint)
            {
                SecretNote::AdoptedUnsent
            } else if !unchanged && f.token_sent_before() {
                SecretNote::ReusedToken
            } else {
                SecretNote::Sent
            }
        }
    }
}

/// The names messages use.
pub fn user(f: &Facts) -> &str {
    &f.spec.leaf_user_id
}

pub fn secret_name(f: &Facts) -> &str {
    f.spec
        .credentials_secret_ref
        .as_ref()
        .map_or("(none: the grower connects through a Magic Link)", |s| {
            s.name.as_str()
        })
}

/// The `Ready` outcome the status shows now (to keep it, writing nothing).
pub fn current_outcome(status: &TrimbleConnectionStatus, otherwise: Reason) -> Outcome {
    Outcome::new(
        status::ready_reason(status).unwrap_or(otherwise),
        status::ready_message(status),
    )
}
