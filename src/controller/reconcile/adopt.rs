//! A credential exists in Leaf that this resource did not create: `adoptionPolicy` decides
//! between adopting it, replacing it, and a Conflict that waits for a person.

use kube::runtime::controller::Action;
use tracing::info;

use super::Error;
use super::work::Work;
use crate::controller::status::Outcome;
use crate::crd::{AdoptionPolicy, TrimbleConnectionStatus};
use crate::leaf::{Credential, LeafAccount};
use crate::reason::Reason;
use crate::secret::TrimbleSecret;

impl Work<'_> {
    pub(super) async fn adopt_or_conflict(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
        mut next: TrimbleConnectionStatus,
        credential: Credential,
    ) -> Result<Action, Error> {
        let matches = credential.client_id.as_deref() == Some(secret.client_id.as_str());
        let conflict = |why: &str| {
            Outcome::new(
                Reason::Conflict,
                format!(
                    "Leaf user {} already has Trimble credential {} that this resource did not create; {why}",
                    self.user(),
                    credential.id
                ),
            )
        };
        match self.tc.spec.adoption_policy {
            AdoptionPolicy::AdoptMatching if matches => {
                next.secret_fingerprint = Some(secret.fingerprint.clone());
                let action = self.check(account, next, &credential).await?;
                info!(credential = %credential.id, "adopted the existing Trimble credential");
                self.event(
                    Reason::Adopted,
                    "Adopt",
                    &format!(
                        "Adopted the existing Trimble credential {} of Leaf user {}: its clientId matches Secret {:?}",
                        credential.id,
                        self.user(),
                        self.secret_name()
                    ),
                )
                .await;
                Ok(action)
            }
            AdoptionPolicy::AdoptMatching => {
                let outcome = conflict(
                    "its clientId differs from the Secret's, so adoptionPolicy AdoptMatching leaves it alone. \
                     Set adoptionPolicy: Replace to replace it, or remove it from Leaf",
                );
                self.hold_conflict(next, outcome).await
            }
            AdoptionPolicy::Never => {
                let outcome = conflict(
                    "adoptionPolicy Never leaves it alone. Set adoptionPolicy: AdoptMatching or Replace, or remove it from Leaf",
                );
                self.hold_conflict(next, outcome).await
            }
            AdoptionPolicy::Replace => {
                let doing = "deleting the existing Trimble credential (adoptionPolicy Replace)";
                if let Some(action) = self.delete_in_leaf(account, &next, doing).await? {
                    return Ok(action);
                }
                info!(credential = %credential.id, "deleted the existing Trimble credential to replace it");
                next.credential_id = None;
                self.create(account, secret, next, None).await
            }
        }
    }

    /// Records the Conflict without claiming the credential: nothing of it is ours, so neither a
    /// later check nor a deletion may touch it.
    async fn hold_conflict(
        &mut self,
        mut next: TrimbleConnectionStatus,
        outcome: Outcome,
    ) -> Result<Action, Error> {
        next.credential_id = None;
        next.credential_status = None;
        next.pending_create = None;
        self.write(next, &outcome).await?;
        Ok(self.wait_for_person())
    }
}
