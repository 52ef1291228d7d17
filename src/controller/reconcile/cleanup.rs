//! Cleanup: what deleting a TrimbleConnection does in Leaf, by `deletionPolicy`.
//!
//! It never depends on the credentials Secret, and it releases the finalizer at once whenever
//! there is nothing of ours in Leaf (never created, lost a conflict, Orphan, no Leaf account).
//! Only a Leaf that does not answer a DELETE keeps it, with the reason on the resource, until
//! Leaf answers or the policy is switched to Orphan.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::runtime::controller::Action;
use tracing::{info, warn};

use super::work::Work;
use super::{Error, fresh};
use crate::controller::Context;
use crate::controller::conflict;
use crate::controller::status::{self, Outcome};
use crate::crd::{DeletionPolicy, TrimbleConnection};
use crate::leaf::Trimble;
use crate::reason::Reason;

pub(super) async fn cleanup(
    tc: Arc<TrimbleConnection>,
    ctx: &Context,
    failure: &Mutex<Option<Reason>>,
) -> Result<Action, Error> {
    let Some(tc) = fresh(&tc, ctx).await? else {
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
    if let Some(winner) = conflict::find_winner(&tc, &ctx.stores()) {
        // The Leaf user's credential belongs to the older resource: a loser of the conflict may
        // still name it in its status (it recorded it before the older resource was in the
        // store), and deleting it here would pull the credential from under the winner.
        info!(%winner, "not deleting the Leaf credential: it belongs to the older resource");
        ctx.schedules.forget(&uid);
        return Ok(Action::await_change());
    }
    let shown = credential.unwrap_or_else(|| "(create in progress)".to_string());
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
            let reason = status::leaf_error_reason(&error);
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
