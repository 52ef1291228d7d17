//! Cleanup: what deleting a TrimbleConnection does in Leaf, by `deletionPolicy`.
//!
//! A DELETE is sent only right after a GET showed the credential this resource owns, and only
//! while the leadership fence holds. Whatever else Leaf shows is left alone, and the Event says
//! why. Only a Leaf that does not answer (or a create still in doubt) keeps the finalizer, with
//! the reason on the resource, until Leaf answers or the policy is switched to Orphan.

use tracing::{info, warn};

use super::super::{Cleaned, Input};
use super::{Interrupted, Ports, StatusWriter, user};
use crate::controller::decide::cleanup::{self, CleanupGate, CleanupStep, Release};
use crate::controller::decide::Next;
use crate::controller::status::{self, Outcome};
use crate::reason::Reason;

pub(in crate::controller::engine) async fn run<P: Ports>(
    ports: &P,
    input: Input<'_>,
) -> Result<Cleaned, Interrupted> {
    let mut w = StatusWriter::new(
        ports,
        input.facts.status.clone(),
        input.generation,
        None,
    );
    let shown = shown(&input);
    match cleanup::gate(&input.facts) {
        CleanupGate::Release(release) => {
            announce(&w, &input, &shown, &release).await;
            return Ok(Cleaned::Released);
        }
        CleanupGate::Wait(wait) => {
            return Ok(Cleaned::Again {
                next: Next::Hold(wait),
                reason: Reason::Deleting,
            });
        }
        CleanupGate::AskLeaf => {}
    }
    let seen = match ports.get_credential().await {
        Ok(seen) => seen,
        Err(error) => return failed(&mut w, &shown, &error, "read").await,
    };
    match cleanup::choose(&input.facts, seen.as_ref()) {
        CleanupStep::Release(release) => {
            announce(&w, &input, &shown, &release).await;
            Ok(Cleaned::Released)
        }
        CleanupStep::AwaitInDoubt(left) => {
            let message = format!(
                "Deleting: a create of this resource may still complete in Leaf; looking again in {}s before \
                 deciding what to delete (set spec.deletionPolicy: Orphan to finish at once)",
                left.as_secs().max(1)
            );
            w.report(&Outcome::new(Reason::Deleting, message)).await?;
            Ok(Cleaned::Again {
                next: Next::Hold(left),
                reason: Reason::Deleting,
            })
        }
        CleanupStep::Delete(credential) => {
            if !ports.may_write() {
                return Err(Interrupted::Fenced("the DELETE"));
            }
            if let Err(error) = ports.delete_credential().await {
                return failed(&mut w, &credential.id, &error, "delete").await;
            }
            info!(credential = %credential.id, "deleted the Trimble credential");
            let note = format!(
                "Deleted Trimble credential {} of Leaf user {} from Leaf",
                credential.id,
                user(&input)
            );
            ports.publish(Reason::Deleted, "Delete", &note).await;
            Ok(Cleaned::Released)
        }
    }
}

/// The credential id to name in messages before the GET.
fn shown(input: &Input<'_>) -> String {
    input
        .facts
        .status
        .credential_id
        .clone()
        .unwrap_or_else(|| "(create in progress)".to_string())
}

/// A failed Leaf call during deletion: the reason on the resource, and the backoff.
async fn failed<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    shown: &str,
    error: &crate::leaf::LeafError,
    verb: &str,
) -> Result<Cleaned, Interrupted> {
    let reason = status::leaf_error_reason(error);
    let message = format!(
        "Deleting: cannot {verb} Trimble credential {shown} in Leaf: {error}. Retrying; set \
         spec.deletionPolicy: Orphan to finish the deletion and leave the credential in Leaf"
    );
    warn!(%error, "failed to delete the Trimble credential");
    w.report(&Outcome::new(reason, message)).await?;
    Ok(Cleaned::Again {
        next: Next::Backoff {
            retry_after: error.retry_after(),
        },
        reason,
    })
}

/// The Event (or log line) that says why nothing was deleted.
async fn announce<P: Ports>(w: &StatusWriter<'_, P>, input: &Input<'_>, shown: &str, release: &Release) {
    let user = user(input);
    match release {
        Release::NothingOurs => {}
        Release::NothingLanded => {
            info!("the create in doubt never reached Leaf; nothing to delete");
        }
        Release::ConflictLoser(winner) => {
            info!(%winner, "not deleting the Leaf credential: it belongs to the older resource");
        }
        Release::Orphan => {
            let note = format!("Left Trimble credential {shown} of Leaf user {user} in Leaf (deletionPolicy: Orphan)");
            w.ports.publish(Reason::Orphaned, "Orphan", &note).await;
        }
        Release::NoAccount(outcome) => {
            let note = format!("{}. Trimble credential {shown} was left in Leaf", outcome.message);
            w.ports.publish(outcome.reason, "Delete", &note).await;
        }
        Release::AlreadyGone => {
            let note = format!("Trimble credential {shown} of Leaf user {user} was already gone from Leaf");
            w.ports.publish(Reason::Deleted, "Delete", &note).await;
        }
        Release::NotOurs(credential) => {
            let note = format!(
                "Not deleted: Leaf user {user} now has Trimble credential {}, which is not this resource's ({shown}); \
                 it is left in Leaf",
                credential.id
            );
            warn!(credential = %credential.id, "not deleting a credential that is not ours");
            w.ports.publish(Reason::DeleteSkipped, "Delete", &note).await;
        }
    }
}
