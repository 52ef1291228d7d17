//! The one list of condition types and PascalCase reasons, shared by conditions, Events and metrics.
//!
//! Add a reason here and nowhere else: every `reason:` the operator writes comes from this enum.

use std::fmt;

/// Condition type that is always present.
pub const CONDITION_READY: &str = "Ready";
/// Condition type present (True) only while the operator is working towards the desired state.
pub const CONDITION_RECONCILING: &str = "Reconciling";
/// Condition type present (True) only while progress needs a person.
pub const CONDITION_STALLED: &str = "Stalled";

/// Why a TrimbleConnection is in the state it is in, and why an Event was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    Conflict,
    Suspended,
    Deleting,
    // Event-only reasons.
    Created,
    Adopted,
    Rotated,
    Deleted,
    Orphaned,
    /// One of Leaf's credential events reported an error status code.
    LeafCredentialEventError,
    /// Metric-only: a reconcile failed on a Kubernetes API call (retried with backoff).
    KubeApiError,
}

impl Reason {
    /// Every reason, for metrics that pre-register their label values and for docs.
    pub const ALL: &'static [Reason] = &[
        Reason::CredentialValid,
        Reason::CredentialInvalid,
        Reason::MissingPermission,
        Reason::ProviderUnavailable,
        Reason::CredentialStatusUnknown,
        Reason::Creating,
        Reason::Rotating,
        Reason::SecretNotFound,
        Reason::SecretInvalid,
        Reason::LeafAuthFailed,
        Reason::LeafUnavailable,
        Reason::CredentialRejected,
        Reason::Conflict,
        Reason::Suspended,
        Reason::Deleting,
        Reason::Created,
        Reason::Adopted,
        Reason::Rotated,
        Reason::Deleted,
        Reason::Orphaned,
        Reason::LeafCredentialEventError,
        Reason::KubeApiError,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::CredentialValid => "CredentialValid",
            Reason::CredentialInvalid => "CredentialInvalid",
            Reason::MissingPermission => "MissingPermission",
            Reason::ProviderUnavailable => "ProviderUnavailable",
            Reason::CredentialStatusUnknown => "CredentialStatusUnknown",
            Reason::Creating => "Creating",
            Reason::Rotating => "Rotating",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretInvalid => "SecretInvalid",
            Reason::LeafAuthFailed => "LeafAuthFailed",
            Reason::LeafUnavailable => "LeafUnavailable",
            Reason::CredentialRejected => "CredentialRejected",
            Reason::Conflict => "Conflict",
            Reason::Suspended => "Suspended",
            Reason::Deleting => "Deleting",
            Reason::Created => "Created",
            Reason::Adopted => "Adopted",
            Reason::Rotated => "Rotated",
            Reason::Deleted => "Deleted",
            Reason::Orphaned => "Orphaned",
            Reason::LeafCredentialEventError => "LeafCredentialEventError",
            Reason::KubeApiError => "KubeApiError",
        }
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
                | Reason::Conflict
                | Reason::LeafAuthFailed
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
                | Reason::Conflict
                | Reason::LeafCredentialEventError
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_and_pascal_case() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let name = reason.as_str();
            assert!(seen.insert(name), "{name} listed twice");
            assert!(
                name.chars().next().unwrap().is_ascii_uppercase(),
                "{name} is not PascalCase"
            );
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric()),
                "{name} is not one word"
            );
            assert_eq!(format!("{reason:?}"), name, "Debug and as_str disagree");
        }
    }
}
