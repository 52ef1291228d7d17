//! Rotate and replace, one executor: DELETE the credential a GET just showed (ours for a
//! rotation, a foreign one under `adoptionPolicy: Replace`), then create from the Secret.
//!
//! Leaf's DELETE names the user, not the credential: it is sent only right after the chooser saw
//! the id it may delete, only while the leadership fence holds, and only with its intent on the
//! server. A DELETE in doubt stops here: nothing else is sent for the user until its window
//! closes.

use tracing::{info, warn};

use super::super::writer::StatusWriter;
use super::super::{Finished, Input, Interrupted, Ports};
use super::create::{create, send_by};
use crate::controller::decide::transitions::delete::{self, AfterDelete, Purpose};
use crate::controller::decide::transitions::hold;
use crate::leaf::{Credential, LeafError, NotSent};

pub(super) async fn replace<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    credential: &Credential,
    purpose: Purpose,
) -> Result<Finished, Interrupted> {
    let f = &input.facts.at(w.ports.now());
    if input.secret.is_none() {
        // Never delete what could not be replaced at once.
        let waiting = hold::need_secret(f, w.current(), Some(credential));
        return w.finish(waiting).await;
    }
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("the DELETE"));
    }
    let (intent, pending) = delete::intent(f, w.current(), &credential.id, purpose);
    w.write(intent.status, &intent.outcome).await?;
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("the DELETE"));
    }
    let answer = w
        .ports
        .delete_credential(send_by(f, Some(&pending.send_by)))
        .await;
    if let Err(LeafError::NotSent(NotSent::Fenced)) = &answer {
        return Err(Interrupted::Fenced("the DELETE"));
    }
    if let Err(error) = &answer {
        warn!(%error, credential = %credential.id, "deleting the Trimble credential in Leaf failed");
    }
    let f = &input.facts.at(w.ports.now());
    match delete::after(f, w.current().clone(), &pending, answer, purpose) {
        AfterDelete::Gone { .. } => {
            info!(credential = %credential.id, ?purpose, "deleted the Trimble credential; creating ours");
            // The create's intent clears the DELETE's record in the same write: its answer came.
            create(w, input, purpose == Purpose::Rotate).await
        }
        AfterDelete::Stop(transition) => w.finish(transition).await,
    }
}
