//! One GET of the Leaf user's credential decides the step: resolve an interrupted create,
//! create, adopt, rotate, or the periodic check.

use kube::runtime::controller::Action;

use super::Error;
use super::work::Work;
use crate::leaf::{LeafAccount, Trimble};
use crate::secret::TrimbleSecret;

impl Work<'_> {
    /// Everything that talks to Leaf in an apply.
    pub(super) async fn dispatch(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
    ) -> Result<Action, Error> {
        let next = self.current.clone();
        let existing = match self
            .ctx
            .leaf
            .get_credential::<Trimble>(account, self.user())
            .await
        {
            Ok(existing) => existing,
            Err(error) => {
                return self
                    .leaf_failed(next, &error, "reading the Trimble credential from Leaf")
                    .await;
            }
        };
        // 1. A create was under way: did it happen?
        if let Some(pending) = self.current.pending_create.clone() {
            return self
                .resolve_pending(account, secret, next, pending, existing)
                .await;
        }
        match (self.current.credential_id.clone(), existing) {
            // 2. Nothing of ours yet: create, or decide by adoptionPolicy.
            (None, None) => self.create(account, secret, next, None).await,
            (None, Some(credential)) => {
                self.adopt_or_conflict(account, secret, next, credential)
                    .await
            }
            // 3. Ours, and the Secret changed: rotate.
            (Some(old_id), _)
                if self.current.secret_fingerprint.as_deref()
                    != Some(secret.fingerprint.as_str()) =>
            {
                self.rotate(account, secret, next, old_id).await
            }
            // 4. Ours and unchanged: the periodic check.
            (Some(_), Some(credential)) => self.check(account, next, &credential).await,
            (Some(old_id), None) => self.vanished(next, &old_id).await,
        }
    }
}
