//! The one list of condition types and PascalCase reasons, shared by conditions, Events and metrics.
//!
//! Add a reason here and nowhere else: every `reason:` the operator writes comes from this enum,
//! its string is the variant's name (derived, so the two cannot drift apart) and `Reason::iter()`
//! lists them all for metrics, docs and tests.

use strum::{EnumIter, EnumString, IntoStaticStr};

pub use strum::IntoEnumIterator;

/// Condition type that is always present.
pub const CONDITION_READY: &str = "Ready";
/// Condition type present (True) only while the operator is working towards the desired state.
pub const CONDITION_RECONCILING: &str = "Reconciling";
/// Condition type present (True) only while progress needs a person.
pub const CONDITION_STALLED: &str = "Stalled";

/// Why a TrimbleConnection is in the state it is in, and why an Event was emitted.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EnumIter, EnumString, IntoStaticStr,
)]
pub enum Reason {
    // Ready reasons (also Event reasons where the contract lists them).
    CredentialValid,
    CredentialInvalid,
    MissingPermission,
    ProviderUnavailable,
    /// Leaf reports a status string the operator does not know.
    CredentialStatusUnknown,
    Creating,
    Rotating,
    SecretNotFound,
    SecretInvalid,
    LeafAuthFailed,
    LeafUnavailable,
    CredentialRejected,
    /// Leaf has no user `spec.leafUserId` (it answered a create with 404).
    LeafUserNotFound,
    Conflict,
    Suspended,
    /// `managementPolicy: Observe` (or `--observe-only`) held back a write to Leaf: the message
    /// (and the Event) says what would have been done.
    ObserveOnly,
    Deleting,
    /// Only the grower can make the connection work again, and a Magic Link for them is in the
    /// Secret the message names: waiting for the grower, not a failure of the platform.
    AwaitingGrower,
    /// Preparing the grower's Magic Link (deleting the dead credential, issuing or renewing the
    /// link).
    Reauthorizing,
    /// No Trimble application is registered with Leaf (`/app-keys/Trimble`), so no Magic Link can
    /// be issued: a person must register it.
    MagicLinkAppMissing,
    // Event-only reasons.
    Created,
    Adopted,
    Rotated,
    Deleted,
    Orphaned,
    /// A Magic Link for the grower was issued (or renewed) and written into its Secret.
    ReauthorizationLinkIssued,
    /// The grower completed the Magic Link and Leaf created the credential.
    ReauthorizationCompleted,
    /// The grower's Magic Link was deleted at Leaf and its Secret removed.
    MagicLinkDeleted,
    /// The resource went away without a DELETE in Leaf because the credential there is not the
    /// one this resource owns (or nothing of it was ever created).
    DeleteSkipped,
    /// One of Leaf's credential events reported an error status code.
    LeafCredentialEventError,
    // Event-only reasons about the operator's own Pod.
    /// Leaf's alerts are healthy: periodic checks run at the long backstop interval.
    PollingBackstop,
    /// Leaf's alerts cannot be trusted (silent too long, webhook missing or owned by another
    /// consumer): periodic checks are back at each resource's refreshInterval.
    PollingFallback,
    /// Metric-only: a reconcile failed on a Kubernetes API call (retried with backoff).
    KubeApiError,
    /// Metric-only: a reconcile stopped before a Leaf write because this replica could not prove
    /// that it still holds the leader lease.
    LeadershipLost,
}

impl Reason {
    /// The reason as written into conditions, Events and metric labels (the variant's name).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// True for the situations that need a person; they set `Stalled=True` and are not retried hot.
    /// MissingPermission is one: only the grower authorizing again with the permissions Leaf needs
    /// ends it, so GitOps tools must show it as failed (kstatus Failed, Argo CD Degraded) rather than
    /// wait for it.
    pub const fn is_stalled(self) -> bool {
        matches!(
            self,
            Reason::SecretInvalid
                | Reason::MissingPermission
                | Reason::CredentialInvalid
                | Reason::CredentialRejected
                | Reason::LeafUserNotFound
                | Reason::Conflict
                | Reason::LeafAuthFailed
                | Reason::MagicLinkAppMissing
        )
    }

    /// True when an Event with this reason is a Warning rather than Normal.
    pub const fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::CredentialInvalid
                | Reason::MissingPermission
                | Reason::ProviderUnavailable
                | Reason::CredentialStatusUnknown
                | Reason::SecretNotFound
                | Reason::SecretInvalid
                | Reason::LeafAuthFailed
                | Reason::LeafUnavailable
                | Reason::CredentialRejected
                | Reason::LeafUserNotFound
                | Reason::Conflict
                | Reason::DeleteSkipped
                | Reason::LeafCredentialEventError
                | Reason::PollingFallback
                | Reason::MagicLinkAppMissing
                | Reason::ReauthorizationLinkIssued
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_one_pascal_case_word_that_parses_back() {
        for reason in Reason::iter() {
            let name = reason.as_str();
            assert!(
                name.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
                "{name} is not PascalCase"
            );
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric()),
                "{name} is not one word"
            );
            assert_eq!(name.parse::<Reason>().ok(), Some(reason));
            assert_eq!(format!("{reason:?}"), name, "Debug and as_str disagree");
        }
    }
}
