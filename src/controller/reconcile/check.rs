//! The periodic check of a credential this resource owns: Leaf's status and events, copied into
//! the status, and error events announced once.

use kube::runtime::controller::Action;

use super::Error;
use super::work::Work;
use crate::controller::status::{self, Outcome};
use crate::crd::TrimbleConnectionStatus;
use crate::leaf::{Credential, LeafAccount, Trimble};
use crate::reason::Reason;

/// Copies what Leaf reports about the credential into the status.
pub(super) fn fill(next: &mut TrimbleConnectionStatus, credential: &Credential) {
    next.credential_id = Some(credential.id.clone());
    next.credential_status = Some(credential.raw_status.clone());
    next.scopes = credential.scopes.clone();
    next.leaf_created_time = credential.created_time.clone();
}

impl Work<'_> {
    /// Leaf's status and events for a credential we own.
    pub(super) async fn check(
        &mut self,
        account: &LeafAccount,
        mut next: TrimbleConnectionStatus,
        credential: &Credential,
    ) -> Result<Action, Error> {
        fill(&mut next, credential);
        let events = match self
            .ctx
            .leaf
            .credential_events::<Trimble>(account, self.user())
            .await
        {
            Ok(events) => events,
            Err(error) => {
                return self
                    .leaf_failed(next, &error, "reading the credential's events from Leaf")
                    .await;
            }
        };
        let merged = status::merge_events(&self.current.recent_events, &events);
        next.recent_events = merged.recent;
        let outcome = status::credential_outcome(&credential.status, self.secret_name());
        self.write(next, &outcome).await?;
        // Recorded in the status first, so a restart cannot announce the same Leaf event twice.
        for event in &merged.new_errors {
            self.ctx.events.publish_leaf_event(&self.tc, event).await;
        }
        Ok(self.next_check())
    }

    /// Our credential is gone from Leaf. It is not created again from the same values: the
    /// refresh token was consumed by the first create, so only a person can supply a new one.
    pub(super) async fn vanished(
        &mut self,
        mut next: TrimbleConnectionStatus,
        old_id: &str,
    ) -> Result<Action, Error> {
        next.credential_status = None;
        let message = format!(
            "The Trimble credential {old_id} no longer exists in Leaf (removed outside this operator). \
             The Secret's refresh token was used already and cannot be sent again: put a new one from the \
             grower into Secret {:?} to create the credential again",
            self.secret_name()
        );
        self.write(next, &Outcome::new(Reason::CredentialInvalid, message))
            .await?;
        Ok(self.next_check())
    }
}
