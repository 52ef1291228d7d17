//! The engine's view of the world: every IO it performs goes through [`Ports`].
//!
//! Production implements it with the Leaf client, the API server and the leader lease
//! (`controller::reconcile::KubePorts`); the simulation test implements it with an in-memory
//! Leaf and Kubernetes that can fail, lag, time out or crash at any of these calls.

use std::future::Future;

use crate::controller::decide::reauth::ReauthSettings;
use crate::controller::decide::transitions::Notice;
use crate::crd::{CredentialEventSummary, TrimbleConnectionStatus};
use crate::leaf::{Credential, CredentialEvent, Deleted, LeafError, MagicLink};
use crate::secret::TrimbleSecret;
use secrecy::SecretString;

/// Why a status write did not land (or may not have).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatusWriteError {
    /// The API server answered with an error (its message: names and codes, never a secret).
    #[error("the API server refused the status write: {0}")]
    Refused(String),
    /// No answer in time; the write may or may not have landed.
    #[error("the API server did not answer the status write in time")]
    TimedOut,
}

/// The IO one reconcile of one TrimbleConnection may perform.
pub trait Ports: Sync {
    /// Now, by the clock every decision uses.
    fn now(&self) -> jiff::Timestamp;

    /// The leadership fence: whether this replica may write to Leaf right now. Checked before a
    /// write's intent is recorded and again right before it is sent (the client checks it once
    /// more immediately before every send, a retry after a 401 included).
    fn may_write(&self) -> bool;

    /// GET the Leaf user's credential (None: Leaf has none).
    fn get_credential(&self) -> impl Future<Output = Result<Option<Credential>, LeafError>> + Send;

    /// POST a credential made of `secret`'s values; never sent after `send_by`
    /// ([`crate::leaf::LeafError::NotSent`] instead) nor past the fence.
    fn create_credential(
        &self,
        secret: &TrimbleSecret,
        send_by: jiff::Timestamp,
    ) -> impl Future<Output = Result<Credential, LeafError>> + Send;

    /// DELETE the Leaf user's credential (Leaf's DELETE names the user, not the credential);
    /// never sent after `send_by` nor past the fence.
    fn delete_credential(
        &self,
        send_by: jiff::Timestamp,
    ) -> impl Future<Output = Result<Deleted, LeafError>> + Send;

    /// The events Leaf logged for the user's credential.
    fn credential_events(
        &self,
    ) -> impl Future<Output = Result<Vec<CredentialEvent>, LeafError>> + Send;

    /// Whether Leaf has the Trimble application registered: the one named `app_name`, or any.
    fn trimble_app_registered(
        &self,
        app_name: Option<&str>,
    ) -> impl Future<Output = Result<bool, LeafError>> + Send;

    /// POST a Magic Link for the grower of the Leaf user; never sent after `send_by` nor past the
    /// fence.
    fn create_magic_link(
        &self,
        settings: &ReauthSettings,
        send_by: jiff::Timestamp,
    ) -> impl Future<Output = Result<MagicLink, LeafError>> + Send;

    /// Leaf's Magic Links for this Leaf user.
    fn user_magic_links(&self) -> impl Future<Output = Result<Vec<MagicLink>, LeafError>> + Send;

    /// One Magic Link (None: Leaf has no such link).
    fn get_magic_link(
        &self,
        id: &SecretString,
    ) -> impl Future<Output = Result<Option<MagicLink>, LeafError>> + Send;

    /// DELETE one Magic Link; never sent after `send_by` nor past the fence.
    fn delete_magic_link(
        &self,
        id: &SecretString,
        send_by: jiff::Timestamp,
    ) -> impl Future<Output = Result<Deleted, LeafError>> + Send;

    /// Whether the Secret `name` may hold the resource's link: it does not exist, or the resource
    /// owns it.
    fn link_secret_free(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool, StatusWriteError>> + Send;

    /// Creates or replaces the Secret `name`, owned by the resource, holding `link` for the
    /// grower. Refused when a Secret of that name exists that the resource does not own.
    fn write_link_secret(
        &self,
        name: &str,
        link: &MagicLink,
    ) -> impl Future<Output = Result<(), StatusWriteError>> + Send;

    /// Deletes the Secret `name` when the resource owns it (nothing when it does not exist).
    fn delete_link_secret(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(), StatusWriteError>> + Send;

    /// Makes the status on the server exactly `status`.
    fn write_status(
        &self,
        status: &TrimbleConnectionStatus,
    ) -> impl Future<Output = Result<(), StatusWriteError>> + Send;

    /// A Kubernetes Event about the resource (best effort).
    fn publish(&self, notice: &Notice) -> impl Future<Output = ()> + Send;

    /// A Kubernetes Event for one of Leaf's credential events (best effort).
    fn publish_leaf_event(&self, event: &CredentialEventSummary)
    -> impl Future<Output = ()> + Send;
}
