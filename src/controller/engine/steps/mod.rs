//! The executors: one per [`Step`], each doing exactly what its step says: the fence, at most one
//! Leaf call (a rotation: the DELETE, then the create), the pure transition for its answer, and
//! the write.

pub(super) mod cleanup;
mod create;
mod link;
mod replace;

use super::writer::StatusWriter;
use super::{Finished, Input, Interrupted, Ports};
use crate::controller::decide::Next;
use crate::controller::decide::Step;
use crate::controller::decide::reauth::LinkStep;
use crate::controller::decide::transitions::delete::{self, Purpose};
use crate::controller::decide::transitions::observe::{self, Would};
use crate::controller::decide::transitions::{self, Transition, hold, look};
use crate::crd::ManagementPolicy;

/// Runs the executor of `step`.
pub(super) async fn execute<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    step: Step,
) -> Result<Finished, Interrupted> {
    // After the read the step was chosen from: its transition is computed at this moment.
    let f = &input.facts.at(w.ports.now());
    if f.spec.management_policy == ManagementPolicy::Observe
        && let Some(what) = held_back(&step)
    {
        return w.finish(observe::would(f, w.current(), what)).await;
    }
    let transition = match step {
        Step::Create { replacing } => {
            return create::create(w, input, replacing.is_some()).await;
        }
        Step::Resume {
            credential,
            pending,
        } => {
            tracing::info!(credential = %credential.id, "found the credential an interrupted create made; recording it");
            let events = create::events_with_the_create(w, f).await;
            transitions::create::resume(f, w.current(), &pending, credential, events)
        }
        Step::AwaitInDoubt { left } => hold::await_in_doubt(f, w.current(), left),
        Step::AwaitDelete { left } => match &w.current().pending_delete {
            Some(pending) => Transition::new(
                w.current().clone(),
                delete::landing_outcome(f, pending),
                Next::Hold(left),
            ),
            None => hold::await_settle(f, w.current(), left),
        },
        Step::AwaitSettle { left } => hold::await_settle(f, w.current(), left),
        Step::Adopt { credential } => {
            let events = w.ports.credential_events().await;
            let transition = look::adopt(f, w.current(), &credential, Some(events));
            if !transition.notices.is_empty() {
                tracing::info!(credential = %credential.id, "adopted the existing Trimble credential");
            }
            transition
        }
        Step::Replace { credential } => {
            return replace::replace(w, input, &credential, Purpose::Replace).await;
        }
        Step::Rotate { credential } => {
            return replace::replace(w, input, &credential, Purpose::Rotate).await;
        }
        Step::Check {
            credential,
            fetch_events,
        } => {
            let events = if fetch_events {
                Some(w.ports.credential_events().await)
            } else {
                None
            };
            look::check_ours(f, w.current(), &credential, events)
        }
        Step::NeedNewValues {
            vanished,
            unresolved,
        } => hold::need_new_values(f, w.current(), vanished, unresolved),
        Step::Foreign { credential, why } => hold::foreign(f, w.current(), &credential, why),
        Step::NeedSecret { credential } => hold::need_secret(f, w.current(), credential.as_ref()),
        Step::Link(step) => return link::run(w, input, step).await,
    };
    w.finish(transition).await
}

/// What `managementPolicy: Observe` holds back of `step`: every write to Leaf, and the adoption
/// (a claim that later writes would act on). None: the step runs as under `Full`.
fn held_back(step: &Step) -> Option<Would<'_>> {
    match step {
        // Also the create that finishes a rotation or replacement whose DELETE was sent under
        // Full: nothing more is written once Observe is set.
        Step::Create { .. } => Some(Would::Create),
        Step::Rotate { credential } => Some(Would::Rotate(credential)),
        Step::Replace { credential } => Some(Would::Replace(credential)),
        Step::Adopt { credential } => Some(Would::Adopt(credential)),
        Step::Link(LinkStep::Issue) => Some(Would::IssueLink),
        Step::Link(LinkStep::Withdraw { credential }) => Some(Would::Withdraw(credential)),
        _ => None,
    }
}
