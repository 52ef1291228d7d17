//! The engine's view of the world: every IO it performs goes through [`Ports`].
//!
//! Production implements it with the Leaf client, the API server and the leader lease
//! (`controller::reconcile::KubePorts`); the simulation test implements it with an in-memory
//! Leaf and Kubernetes that can fail, lag, time out or crash at any of these calls.

use std::future::Future;

use crate::crd::{CredentialEventSummary, TrimbleConnectionStatus};
use crate::leaf::{Credential, CredentialEvent, LeafError};
use crate::reason::Reason;
use crate::secret::TrimbleSecret;

/// The IO one reconcile of one TrimbleConnection may perform.
pub trait Ports: Sync {
    /// Now, by the clock every decision uses.
    fn now(&self) -> jiff::Timestamp;

    /// The leadership fence: whether this replica may write to Leaf right now. Checked
    /// immediately before every POST and DELETE (and before recording a create's intent).
    fn may_write(&self) -> bool;

    /// GET the Leaf user's credential (None: Leaf has none).
    fn get_credential(&self) -> impl Future<Output = Result<Option<Credential>, LeafError>> + Send;

    /// POST a credential made of `secret`'s values.
    fn create_credential(
        &self,
        secret: &TrimbleSecret,
    ) -> impl Future<Output = Result<Credential, LeafError>> + Send;

    /// DELETE the Leaf user's credential (Leaf's DELETE names the user, not the credential).
    fn delete_credential(&self) -> impl Future<Output = Result<(), LeafError>> + Send;

    /// The events Leaf logged for the user's credential.
    fn credential_events(
        &self,
    ) -> impl Future<Output = Result<Vec<CredentialEvent>, LeafError>> + Send;

    /// Makes the status on the server exactly `status`.
    fn write_status(
        &self,
        status: &TrimbleConnectionStatus,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// A Kubernetes Event about the resource (best effort).
    fn publish(&self, reason: Reason, action: &str, note: &str) -> impl Future<Output = ()> + Send;

    /// A Kubernetes Event for one of Leaf's credential events (best effort).
    fn publish_leaf_event(
        &self,
        event: &CredentialEventSummary,
    ) -> impl Future<Output = ()> + Send;
}
