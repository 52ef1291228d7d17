//! Create: the fence, the intent on the server, the POST, and what its answer means.

use tracing::{info, warn};

use super::super::writer::StatusWriter;
use super::super::{Finished, Input, Interrupted, Ports};
use crate::controller::decide::Facts;
use crate::controller::decide::transitions::{self, hold};
use crate::crd::TrimbleConnectionStatus;
use crate::leaf::{CredentialEvent, LeafError, NotSent};

/// Records the intent, then POSTs the Secret's values. `rotating`: the credential our status
/// names is gone and this one replaces it (the Events and reasons say Rotated).
pub(super) async fn create<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    rotating: bool,
) -> Result<Finished, Interrupted> {
    let f = &input.facts.at(w.ports.now());
    let (Some(secret), Some((intent, pending))) = (
        input.secret,
        transitions::create::intent(f, w.current(), rotating),
    ) else {
        // The chooser creates only from a complete Secret: without its values, send nothing.
        let waiting = hold::need_secret(f, w.current(), None);
        return w.finish(waiting).await;
    };
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("a create"));
    }
    // This write must land before the POST: it is what a restart (or the next leader) decides
    // from.
    w.write(intent.status, &intent.outcome).await?;
    // The write took time: the lease may have moved meanwhile (the client checks once more
    // immediately before the send).
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("the POST"));
    }
    let send_by = send_by(f, pending.send_by.as_deref());
    let answer = w.ports.create_credential(secret, send_by).await;
    if let Err(LeafError::NotSent(NotSent::Fenced)) = &answer {
        return Err(Interrupted::Fenced("the POST"));
    }
    let events = match &answer {
        Ok(_) => events_with_the_create(w, f).await,
        Err(_) => None,
    };
    match &answer {
        Ok(credential) if rotating => {
            info!(credential = %credential.id, "rotated the Trimble credential")
        }
        Ok(credential) => info!(credential = %credential.id, "created the Trimble credential"),
        Err(error) => warn!(%error, "creating the Trimble credential in Leaf failed"),
    }
    let with_intent: TrimbleConnectionStatus = w.current().clone();
    let f = &input.facts.at(w.ports.now());
    let transition = transitions::create::after(f, with_intent, &pending, answer, events, rotating);
    w.finish(transition).await
}

/// In polling mode, Leaf's events are read right after a create (or its resumption) and recorded
/// with it: the event Leaf logs for the new credential would otherwise be the one change the first
/// periodic check writes. A failed read is left to that check.
pub(super) async fn events_with_the_create<P: Ports>(
    w: &StatusWriter<'_, P>,
    f: &Facts,
) -> Option<Result<Vec<CredentialEvent>, LeafError>> {
    if f.events_every_check {
        Some(w.ports.credential_events().await)
    } else {
        None
    }
}

/// The send deadline as a timestamp (a record without one was written by this same reconcile, so
/// an unreadable one cannot happen; now is the safe answer: nothing is sent).
pub(super) fn send_by(f: &Facts, recorded: Option<&str>) -> jiff::Timestamp {
    recorded.and_then(|text| text.parse().ok()).unwrap_or(f.now)
}
