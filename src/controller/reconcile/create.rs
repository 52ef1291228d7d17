//! The crash-safe create: the intent is on the server before the POST, and an interrupted create
//! is resolved from a GET, never by posting the same values again.

use std::time::Duration;

use kube::runtime::controller::Action;
use tracing::{info, warn};

use super::Error;
use super::check::fill;
use super::work::{Work, schedule_key};
use crate::controller::status::{self, Outcome};
use crate::crd::{PendingCreate, TrimbleConnectionStatus};
use crate::leaf::{Credential, LeafAccount, LeafError, Trimble, TrimbleCreateRequest};
use crate::reason::Reason;
use crate::secret::{TrimbleSecret, client_id_fingerprint};

/// The intent recorded before a POST of `secret`'s values.
pub(super) fn pending(secret: &TrimbleSecret) -> PendingCreate {
    PendingCreate {
        secret_fingerprint: secret.fingerprint.clone(),
        started_at: jiff::Timestamp::now().to_string(),
        client_id_fingerprint: Some(client_id_fingerprint(&secret.client_id)),
    }
}

/// Whether `credential` is the one the interrupted create `pending` made. Its clientId is compared
/// with the one that create sent (the Secret may have changed since); a pendingCreate written by an
/// older version has no such hash, and then the Secret's current clientId is what it has to go on.
fn made_by(pending: &PendingCreate, secret: &TrimbleSecret, credential: &Credential) -> bool {
    let Some(client_id) = credential.client_id.as_deref() else {
        return true;
    };
    match &pending.client_id_fingerprint {
        Some(sent) => *sent == client_id_fingerprint(client_id),
        None => client_id == secret.client_id,
    }
}

impl Work<'_> {
    /// Records the intent, then creates the credential.
    pub(super) async fn create(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
        mut next: TrimbleConnectionStatus,
        rotating_from: Option<String>,
    ) -> Result<Action, Error> {
        next.pending_create = Some(pending(secret));
        let step = match &rotating_from {
            Some(_) => Outcome::new(
                Reason::Rotating,
                "Rotating: creating the Trimble credential in Leaf from the changed Secret",
            ),
            None => Outcome::new(Reason::Creating, "Creating the Trimble credential in Leaf"),
        };
        // This write must land before the POST: it is what a restart decides from.
        self.write(next.clone(), &step).await?;
        self.post(account, secret, next, rotating_from).await
    }

    /// The POST itself; `next.pendingCreate` is already on the server.
    pub(super) async fn post(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
        mut next: TrimbleConnectionStatus,
        rotating_from: Option<String>,
    ) -> Result<Action, Error> {
        let request = TrimbleCreateRequest {
            client_id: secret.client_id.clone(),
            client_secret: secret.client_secret.clone(),
            refresh_token: secret.refresh_token.clone(),
        };
        match self
            .ctx
            .leaf
            .create_credential::<Trimble>(account, self.user(), &request)
            .await
        {
            Ok(credential) => {
                next.pending_create = None;
                next.secret_fingerprint = Some(secret.fingerprint.clone());
                // Events belong to a credential; a new one starts with none.
                next.recent_events.clear();
                fill(&mut next, &credential);
                let outcome = status::credential_outcome(&credential.status, self.secret_name());
                self.write(next, &outcome).await?;
                match &rotating_from {
                    Some(_) => info!(credential = %credential.id, "rotated the Trimble credential"),
                    None => info!(credential = %credential.id, "created the Trimble credential"),
                }
                self.announce(&credential.id, rotating_from.as_deref(), false)
                    .await;
                Ok(self.next_check())
            }
            Err(LeafError::AlreadyExists { .. }) => {
                // Nothing was created; someone else's credential is there. Decide by adoptionPolicy.
                next.pending_create = None;
                next.credential_id = None;
                self.write(
                    next,
                    &Outcome::new(Reason::Creating, "Leaf already has a Trimble credential for this user; deciding by adoptionPolicy"),
                )
                .await?;
                let wait = self.ctx.schedules.failed(&self.uid, None, None);
                Ok(Action::requeue(wait))
            }
            Err(error @ LeafError::Rejected { .. }) => {
                // Leaf refused these values: nothing was created, and sending them again would be
                // refused again. Remember them as used until the Secret changes.
                next.pending_create = None;
                next.credential_id = None;
                next.credential_status = None;
                next.scopes.clear();
                next.leaf_created_time = None;
                next.secret_fingerprint = Some(secret.fingerprint.clone());
                let message = format!(
                    "{error}. Put corrected values into Secret {:?} (usually a new refresh token from the grower's Trimble authorization)",
                    self.secret_name()
                );
                warn!(%error, "Leaf refused to create the Trimble credential");
                self.write(next, &Outcome::new(Reason::CredentialRejected, message))
                    .await?;
                Ok(self.wait_for_person())
            }
            Err(error) => {
                if matches!(
                    error,
                    LeafError::AuthFailed { .. } | LeafError::Config { .. }
                ) {
                    // Refused before anything was created: no doubt to resolve later.
                    next.pending_create = None;
                }
                // Otherwise (no answer, 5xx) the POST may have happened: pendingCreate stays and
                // the next attempt starts with a GET.
                self.leaf_failed(next, &error, "creating the Trimble credential in Leaf")
                    .await
            }
        }
    }

    /// A create was under way when the last reconcile ended: `existing` (from a GET) says whether
    /// it happened.
    pub(super) async fn resolve_pending(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
        mut next: TrimbleConnectionStatus,
        pending: PendingCreate,
        existing: Option<Credential>,
    ) -> Result<Action, Error> {
        let rotating_from = self.current.credential_id.clone();
        match existing {
            None => self.create(account, secret, next, rotating_from).await,
            Some(credential) if rotating_from.as_deref() == Some(credential.id.as_str()) => {
                // The old credential is still there: the rotation's DELETE did not happen.
                self.rotate(account, secret, next, credential.id).await
            }
            Some(credential) if made_by(&pending, secret, &credential) => {
                self.resume_created(account, secret, next, pending, credential, rotating_from)
                    .await
            }
            Some(credential) => {
                next.pending_create = None;
                next.credential_id = None;
                self.adopt_or_conflict(account, secret, next, credential)
                    .await
            }
        }
    }

    /// After a restart: the credential the interrupted POST created is there. It is ours.
    async fn resume_created(
        &mut self,
        account: &LeafAccount,
        secret: &TrimbleSecret,
        mut next: TrimbleConnectionStatus,
        pending: PendingCreate,
        credential: Credential,
        rotating_from: Option<String>,
    ) -> Result<Action, Error> {
        next.pending_create = None;
        next.secret_fingerprint = Some(pending.secret_fingerprint.clone());
        next.recent_events.clear();
        info!(credential = %credential.id, "found the credential an interrupted create made; recording it");
        // The check records it and schedules the next one; if the Secret changed meanwhile, the
        // fingerprint differs and the next reconcile rotates.
        let action = self.check(account, next, &credential).await?;
        self.announce(&credential.id, rotating_from.as_deref(), true)
            .await;
        if pending.secret_fingerprint != secret.fingerprint {
            // The Secret changed while the create was in doubt: rotate at once.
            self.ctx.schedules.succeeded(
                &self.uid,
                self.refresh_interval(),
                Some(&schedule_key(&pending.secret_fingerprint, account)),
            );
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        Ok(action)
    }

    /// The Normal Event (and the rotation metric) for a credential we made. `resumed`: found by
    /// the GET after an interruption rather than answered by the POST.
    async fn announce(&self, credential_id: &str, rotated_from: Option<&str>, resumed: bool) {
        let suffix = if resumed {
            " (found after an interruption; not created again)"
        } else {
            ""
        };
        let user = self.user();
        match rotated_from {
            Some(old) => {
                self.ctx.metrics.record_rotation();
                // A resumed rotation no longer knows which Secret change started it.
                let cause = if resumed {
                    String::new()
                } else {
                    format!(" after Secret {:?} changed", self.secret_name())
                };
                let note = format!(
                    "Rotated the Trimble credential of Leaf user {user}{cause}: deleted {old}, created {credential_id}{suffix}"
                );
                self.event(Reason::Rotated, "Rotate", &note).await;
            }
            None => {
                let note = format!(
                    "Created Trimble credential {credential_id} for Leaf user {user}{suffix}"
                );
                self.event(Reason::Created, "Create", &note).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::leaf::CredentialStatus;

    fn secret(client_id: &str) -> TrimbleSecret {
        TrimbleSecret {
            client_id: client_id.to_string(),
            client_secret: SecretString::from("cs"),
            refresh_token: SecretString::from("rt"),
            fingerprint: format!("fp-{client_id}"),
        }
    }

    fn credential(client_id: Option<&str>) -> Credential {
        Credential {
            id: "c1".to_string(),
            status: CredentialStatus::Ok,
            raw_status: "OK".to_string(),
            created_time: None,
            scopes: vec![],
            client_id: client_id.map(str::to_string),
        }
    }

    #[test]
    fn an_interrupted_create_recognises_its_credential_after_the_secret_changed() {
        let in_doubt = pending(&secret("app-a"));
        let now = secret("app-b");
        assert!(made_by(&in_doubt, &now, &credential(Some("app-a"))));
        assert!(!made_by(&in_doubt, &now, &credential(Some("app-b"))));
        assert!(made_by(&in_doubt, &now, &credential(None)));
    }

    #[test]
    fn a_pending_create_from_before_the_hash_falls_back_to_the_current_client_id() {
        let mut old = pending(&secret("app-a"));
        old.client_id_fingerprint = None;
        assert!(made_by(&old, &secret("app-a"), &credential(Some("app-a"))));
        assert!(!made_by(&old, &secret("app-a"), &credential(Some("other"))));
    }

    #[test]
    fn the_client_id_hash_does_not_contain_the_client_id() {
        let recorded = pending(&secret("PLANTED-client-id"));
        let hash = recorded.client_id_fingerprint.expect("recorded");
        assert_eq!(hash.len(), 16);
        assert!(!hash.contains("PLANTED"));
    }
}
