//! Cleanup: what deleting a TrimbleConnection does in Leaf, by `deletionPolicy`.
//!
//! A DELETE is sent only right after a GET showed the credential this resource owns, only while
//! the leadership fence holds, and only with its intent on the server. Whatever else Leaf shows
//! is left alone, and the Event says why. A Leaf that does not answer, a write still in doubt or
//! a read that may lag keeps the finalizer, with the reason on the resource.

use tracing::{info, warn};

use super::super::writer::StatusWriter;
use super::super::{Cleaned, Input, Interrupted, Ports};
use super::create::send_by;
use crate::controller::decide::cleanup::{self, CleanupGate, CleanupStep, Release};
use crate::controller::decide::transitions::delete::{self, AfterDelete, Purpose};
use crate::controller::decide::transitions::{Transition, release};
use crate::controller::decide::{Facts, Next};
use crate::leaf::{LeafError, NotSent};
use crate::reason::Reason;

pub(in crate::controller::engine) async fn run<P: Ports>(
    ports: &P,
    input: Input<'_>,
) -> Result<Cleaned, Interrupted> {
    let f = &input.facts;
    let mut w = StatusWriter::new(ports, f.status.clone(), input.generation, None);
    if let Some(not_yet) = super::link::withdraw_for_deletion(&mut w, &input).await? {
        return again(&mut w, not_yet).await;
    }
    match cleanup::gate(f) {
        CleanupGate::Release(why) => return released(&w, f, &why).await,
        CleanupGate::Wait(wait) | CleanupGate::AwaitWrite(wait) => {
            return Ok(Cleaned::Again {
                next: Next::Hold(wait),
                reason: Reason::Deleting,
            });
        }
        CleanupGate::AskLeaf => {}
    }
    let seen = match ports.get_credential().await {
        Ok(seen) => seen,
        Err(error) => {
            warn!(%error, "reading the Trimble credential from Leaf failed during deletion");
            return again(&mut w, release::read_failed(f, &error)).await;
        }
    };
    match cleanup::choose(f, seen.as_ref()) {
        CleanupStep::Release(why) => released(&w, f, &why).await,
        CleanupStep::AwaitInDoubt(left) => again(&mut w, release::await_in_doubt(f, left)).await,
        CleanupStep::AwaitSettle(left) => again(&mut w, release::await_settle(f, left)).await,
        CleanupStep::Delete(credential) => {
            if !ports.may_write() {
                return Err(Interrupted::Fenced("the DELETE"));
            }
            let f = &f.at(ports.now());
            let (intent, pending) =
                delete::intent(f, w.current(), &credential.id, Purpose::Cleanup);
            w.write(intent.status, &intent.outcome).await?;
            if !ports.may_write() {
                return Err(Interrupted::Fenced("the DELETE"));
            }
            let answer = ports
                .delete_credential(send_by(f, Some(&pending.send_by)))
                .await;
            if let Err(LeafError::NotSent(NotSent::Fenced)) = &answer {
                return Err(Interrupted::Fenced("the DELETE"));
            }
            let f = &f.at(ports.now());
            match delete::after(f, w.current().clone(), &pending, answer, Purpose::Cleanup) {
                AfterDelete::Gone { notice, .. } => {
                    info!(credential = %credential.id, "deleted the Trimble credential");
                    if let Some(notice) = notice {
                        ports.publish(&notice).await;
                    }
                    Ok(Cleaned::Released)
                }
                AfterDelete::Stop(transition) => {
                    warn!(credential = %credential.id, message = %transition.outcome.message, "the Trimble credential was not deleted yet");
                    again(&mut w, transition).await
                }
            }
        }
    }
}

/// The finalizer may go: say why, when a person should hear it.
async fn released<P: Ports>(
    w: &StatusWriter<'_, P>,
    f: &Facts,
    why: &Release,
) -> Result<Cleaned, Interrupted> {
    match why {
        Release::NotOurs(credential) => {
            warn!(credential = %credential.id, "not deleting a credential that is not ours");
        }
        Release::NothingLanded => {
            info!("the create in doubt never reached Leaf; nothing to delete")
        }
        Release::ConflictLoser(winner) => {
            info!(%winner, "not deleting the Leaf credential: it belongs to the older resource");
        }
        _ => {}
    }
    if let Some(notice) = release::notice(f, why) {
        w.ports.publish(&notice).await;
    }
    Ok(Cleaned::Released)
}

/// Not yet: write what the resource shows and look again.
async fn again<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    transition: Transition,
) -> Result<Cleaned, Interrupted> {
    let finished = w.finish(transition).await?;
    Ok(Cleaned::Again {
        next: finished.next,
        reason: finished.reason,
    })
}
