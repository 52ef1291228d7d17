//! Rotation: the Secret's values changed and Leaf has no update call, so the credential is
//! deleted and created again from the new values.

use kube::runtime::controller::Action;

use super::Error;
use super::create::pending;
use super::work::Work;
use crate::controller::status::Outcome;
use crate::crd::TrimbleConnectionStatus;
use crate::leaf::LeafAccount;
use crate::reason::Reason;
use crate::secret::TrimbleSecret;

impl Work<'_> {
    /// DELETE the current credential `old_id`, then create one from the Secret.
    pub(super) async fn rotate(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
        mut next: TrimbleConnectionStatus,
        old_id: String,
    ) -> Result<Action, Error> {
        // The intent covers the DELETE too: a restart after it finds pendingCreate and decides
        // from a GET whether the old credential is still there.
        next.pending_create = Some(pending(secret));
        self.write(
            next.clone(),
            &Outcome::new(
                Reason::Rotating,
                "Rotating: the Secret changed; replacing the Trimble credential in Leaf",
            ),
        )
        .await?;
        let doing = "deleting the old Trimble credential for rotation";
        if let Some(action) = self.delete_in_leaf(account, &next, doing).await? {
            return Ok(action);
        }
        // The old id stays in `next` until the POST's outcome is known: if the POST fails, the
        // retry (pendingCreate, then a GET) must still know it is finishing a rotation, so that
        // it announces `Rotated` rather than `Created`. A GET that still finds the old id means
        // the DELETE did not happen.
        next.credential_status = None;
        self.post(account, secret, next, Some(old_id)).await
    }
}
