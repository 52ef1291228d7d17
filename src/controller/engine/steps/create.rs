//! Create: the crash-safe POST, and the resumption of one that was in doubt.
//!
//! The intent (`status.pendingCreate`, with the start time and a hash of the clientId sent) is on
//! the server before the POST. From then on the create is in doubt until Leaf answers, or until a
//! GET shows the credential it made, or until its window closes: the chooser sends nothing again
//! meanwhile, whatever Leaf says.

use tracing::{info, warn};

use super::{
    Input, Interrupted, Ports, StatusWriter, fill, forget_credential, leaf_failed, remember_sent,
};
use super::{secret_name, user};
use crate::controller::decide::Next;
use crate::controller::status::{self, Outcome, SecretNote};
use crate::crd::{PendingCreate, TrimbleConnectionStatus};
use crate::leaf::{Credential, LeafError};
use crate::reason::Reason;
use crate::secret::client_id_fingerprint;

/// Records the intent, then POSTs the Secret's values. `rotating`: the credential our status
/// names is gone and this one replaces it (the Events and reasons say Rotated).
pub(super) async fn create<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    rotating: bool,
) -> Result<Next, Interrupted> {
    let Some(secret) = input.secret else {
        // The chooser creates only from a complete Secret; this is a caller's mistake, not Leaf's.
        return Err(Interrupted::WriteStatus(
            "a create was chosen without the Secret's values".into(),
        ));
    };
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("a create"));
    }
    let pending = PendingCreate {
        secret_fingerprint: secret.fingerprint.clone(),
        started_at: w.ports.now().to_string(),
        client_id_fingerprint: Some(client_id_fingerprint(&secret.client_id)),
        refresh_token_fingerprint: Some(secret.refresh_token_fingerprint.clone()),
    };
    let mut next = w.current().clone();
    next.pending_create = Some(pending.clone());
    let step = if rotating {
        Outcome::new(
            Reason::Rotating,
            "Rotating: creating the Trimble credential in Leaf from the changed Secret",
        )
    } else {
        Outcome::new(Reason::Creating, "Creating the Trimble credential in Leaf")
    };
    // This write must land before the POST: it is what a restart decides from.
    w.write(next.clone(), &step).await?;
    // The write took time: the lease may have moved meanwhile.
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("the POST"));
    }
    match w.ports.create_credential(secret).await {
        Ok(credential) => record(w, input, next, &pending, credential, rotating, false).await,
        Err(error) if error.may_have_applied() => {
            // No answer, a 5xx, or an unreadable success: the POST may have created the
            // credential. pendingCreate stays; the next attempt starts with a GET.
            leaf_failed(w, next, &error, "creating the Trimble credential in Leaf").await
        }
        Err(LeafError::AlreadyExists { detail }) => {
            // Leaf says a credential is there: perhaps one an earlier attempt of ours made and a
            // GET did not show yet. Never conclude "someone else's" from this answer: look again
            // (pendingCreate stays, so the chooser recognises our own if it is ours).
            let message = format!(
                "Leaf answered that Leaf user {} already has a Trimble credential ({detail}); looking again \
                 before deciding (it may be the one this create made)",
                user(input)
            );
            w.write(next, &Outcome::new(Reason::Creating, message))
                .await?;
            Ok(Next::Backoff { retry_after: None })
        }
        Err(error @ LeafError::UserNotFound { .. }) => {
            next.pending_create = None;
            forget_credential(&mut next);
            let message = format!(
                "{error}. Leaf has no user {:?}: check spec.leafUserId (it is immutable: delete this TrimbleConnection \
                 and create one with the right id), or the Leaf account and API URL in use",
                user(input)
            );
            warn!(%error, "Leaf has no such user");
            w.write(next, &Outcome::new(Reason::LeafUserNotFound, message))
                .await?;
            Ok(Next::Person)
        }
        Err(error @ LeafError::Rejected { .. }) => {
            // Leaf refused these values: nothing was created, and sending them again would be
            // refused again. Remember them as used until the Secret changes.
            next.pending_create = None;
            forget_credential(&mut next);
            next.secret_fingerprint = Some(pending.secret_fingerprint.clone());
            next.adopted_secret_fingerprint = None;
            remember_sent(&mut next, &pending);
            let message = format!(
                "{error}. Put corrected values into Secret {:?} (usually a new refresh token from the grower's \
                 Trimble authorization)",
                secret_name(input)
            );
            warn!(%error, "Leaf refused to create the Trimble credential");
            w.write(next, &Outcome::new(Reason::CredentialRejected, message))
                .await?;
            Ok(Next::Person)
        }
        Err(error) => {
            // Refused before anything was created (login refused, 429, 408, a redirect ...): no
            // doubt to resolve later.
            next.pending_create = None;
            leaf_failed(w, next, &error, "creating the Trimble credential in Leaf").await
        }
    }
}

/// The create that was in doubt made `credential`: it is ours, recorded without a POST.
pub(super) async fn resume<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    credential: Credential,
) -> Result<Next, Interrupted> {
    let next = w.current().clone();
    let Some(pending) = next.pending_create.clone() else {
        return Err(Interrupted::WriteStatus(
            "resume chosen without a pending create".into(),
        ));
    };
    let rotating = next.credential_id.is_some();
    info!(credential = %credential.id, "found the credential an interrupted create made; recording it");
    record(w, input, next, &pending, credential, rotating, true).await
}

/// Records `credential`, made by the POST of `pending`, as ours, and announces it.
async fn record<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    mut next: TrimbleConnectionStatus,
    pending: &PendingCreate,
    credential: Credential,
    rotating: bool,
    resumed: bool,
) -> Result<Next, Interrupted> {
    let replaced = next.credential_id.clone();
    next.pending_create = None;
    next.secret_fingerprint = Some(pending.secret_fingerprint.clone());
    next.adopted_secret_fingerprint = None;
    remember_sent(&mut next, pending);
    // Events belong to a credential; a new one starts with none.
    next.recent_events.clear();
    fill(&mut next, &credential);
    let outcome = status::credential_outcome(&credential.status, secret_name(input), SecretNote::Sent);
    w.write(next, &outcome).await?;
    if rotating {
        info!(credential = %credential.id, "rotated the Trimble credential");
    } else {
        info!(credential = %credential.id, "created the Trimble credential");
    }
    announce(w, input, &credential.id, replaced.filter(|_| rotating), resumed).await;
    // The Secret changed while the create was in doubt: rotate at once.
    let secret_moved = input
        .facts
        .secret
        .fingerprint()
        .is_some_and(|now| now != pending.secret_fingerprint);
    Ok(if secret_moved { Next::Soon } else { Next::Check })
}

/// The Normal Event for a credential we made. `resumed`: found by a GET after an interruption
/// rather than answered by the POST.
async fn announce<P: Ports>(
    w: &StatusWriter<'_, P>,
    input: &Input<'_>,
    credential_id: &str,
    rotated_from: Option<String>,
    resumed: bool,
) {
    let suffix = if resumed {
        " (found after an interruption; not created again)"
    } else {
        ""
    };
    let user = user(input);
    match rotated_from {
        Some(old) => {
            let note = format!(
                "Rotated the Trimble credential of Leaf user {user} after Secret {:?} changed: deleted {old}, \
                 created {credential_id}{suffix}",
                secret_name(input)
            );
            w.ports.publish(Reason::Rotated, "Rotate", &note).await;
        }
        None => {
            let note =
                format!("Created Trimble credential {credential_id} for Leaf user {user}{suffix}");
            w.ports.publish(Reason::Created, "Create", &note).await;
        }
    }
}
