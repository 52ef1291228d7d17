//! Replace and rotate: DELETE the credential a GET just showed, then create from the Secret.
//!
//! Leaf's DELETE names the user, not the credential: it is sent only right after the chooser saw
//! the id it may delete (ours for a rotation, a foreign one under `adoptionPolicy: Replace`),
//! and only while the leadership fence holds. No intent is recorded before it: until the POST
//! starts, a restart simply finds our credential gone (or still there) and decides again.

use tracing::info;

use super::create::create;
use super::{Input, Interrupted, Ports, StatusWriter, leaf_failed};
use crate::controller::decide::Next;
use crate::leaf::Credential;

/// Our credential, and the Secret changed: DELETE, then POST the new values.
pub(super) async fn rotate<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    credential: Credential,
) -> Result<Next, Interrupted> {
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("the DELETE"));
    }
    // No status write before the DELETE (the create writes `Rotating` with its intent): one
    // write fewer per rotation, and nothing a restart would need.
    if let Err(error) = w.ports.delete_credential().await {
        let base = w.current().clone();
        return leaf_failed(w, base, &error, "deleting the old Trimble credential for rotation").await;
    }
    info!(credential = %credential.id, "deleted the old Trimble credential for rotation");
    // The old id stays in the status until the POST's outcome is known, so that every later
    // reconcile knows it is finishing a rotation (and a GET still showing it is not "new").
    create(w, input, true).await
}

/// A foreign credential, adoptionPolicy Replace: DELETE it, then POST ours.
pub(super) async fn replace<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    credential: Credential,
) -> Result<Next, Interrupted> {
    if !w.ports.may_write() {
        return Err(Interrupted::Fenced("the DELETE"));
    }
    if let Err(error) = w.ports.delete_credential().await {
        let base = w.current().clone();
        return leaf_failed(
            w,
            base,
            &error,
            "deleting the existing Trimble credential (adoptionPolicy Replace)",
        )
        .await;
    }
    info!(credential = %credential.id, "deleted the existing Trimble credential to replace it");
    create(w, input, false).await
}
