//! The steps that write nothing to Leaf: waiting out a write in doubt or a read that may lag,
//! values that cannot be sent again, a foreign credential left alone, and a decision that needs
//! the Secret.

use std::time::Duration;

use super::create::window_end;
use super::{Transition, close_doubt, current_outcome, forget_credential, secret_name, user};
use crate::controller::decide::choose::ForeignWhy;
use crate::controller::decide::gate::SECRET_NOT_FOUND_RECHECK;
use crate::controller::decide::{Facts, Next, SecretFact};
use crate::controller::status::Outcome;
use crate::crd::{AdoptionPolicy, TrimbleConnectionStatus};
use crate::leaf::Credential;
use crate::reason::Reason;

/// A POST may still create a credential: nothing is sent until its window closes. The message
/// names the instant it closes (not the seconds left), so looking again writes nothing.
pub fn await_in_doubt(f: &Facts, current: &TrimbleConnectionStatus, left: Duration) -> Transition {
    let status = super::base(f, current);
    let (started, end) = status
        .pending_create
        .as_ref()
        .map(|p| (p.started_at.clone(), window_end(f, p)))
        .unwrap_or_default();
    let reason = if status.credential_id.is_some() {
        Reason::Rotating
    } else {
        Reason::Creating
    };
    let message = format!(
        "A create sent to Leaf at {started} may still complete (Leaf validates the refresh token with Trimble \
         before it answers); nothing is sent again before {end}, and then only after a fresh look at Leaf user {}",
        user(f)
    );
    Transition::new(status, Outcome::new(reason, message), Next::Hold(left))
}

/// Leaf's read may lag behind our last create: the status stays as it is (nothing written) and
/// Leaf is looked at again after `left`.
pub fn await_settle(f: &Facts, current: &TrimbleConnectionStatus, left: Duration) -> Transition {
    let status = super::base(f, current);
    let outcome = current_outcome(&status, Reason::Creating);
    Transition::new(status, outcome, Next::Hold(left))
}

/// Nothing may be created: the Secret's values were sent already (a refresh token works once),
/// or there is no usable Secret. `vanished`: our credential that is gone from Leaf.
pub fn need_new_values(
    f: &Facts,
    current: &TrimbleConnectionStatus,
    vanished: Option<String>,
    unresolved: bool,
) -> Transition {
    let mut next = super::base(f, current);
    close_doubt(&mut next);
    next.credential_status = None;
    let secret = secret_name(f);
    let gone = match &vanished {
        Some(id) => format!(
            "The Trimble credential {id} no longer exists in Leaf (removed outside this operator). "
        ),
        None => String::new(),
    };
    let unresolved_note = current
        .pending_create
        .as_ref()
        .filter(|_| unresolved)
        .map(|pending| {
            format!(
                "The create sent to Leaf at {} got no answer, and no read of Leaf showed its credential before its \
                 window closed: Leaf may have used its refresh token (its credential may have been removed since), \
                 so that token is never sent again. ",
                pending.started_at
            )
        })
        .unwrap_or_default();
    let fix = match &f.secret {
        SecretFact::Missing { .. } => format!(
            "Put a new refresh token from the grower into Secret {secret:?} (it does not exist now) to create the \
             credential again"
        ),
        SecretFact::Invalid { message } => {
            format!(
                "{message}: put complete values with a new refresh token from the grower into it"
            )
        }
        SecretFact::NotConfigured => format!(
            "This resource names no credentials Secret: set reauthorization.policy: MagicLink for the grower to \
             connect again through a Magic Link, or name a Secret ({secret}) with a new refresh token"
        ),
        SecretFact::Present { .. } if unresolved => format!(
            "Put a new refresh token from the grower into Secret {secret:?} to create the credential"
        ),
        SecretFact::Present { .. } if f.token_sent_before() => format!(
            "The refresh token in Secret {secret:?} was sent to Leaf before and a Trimble refresh token works only \
             once: put a new one from the grower into the Secret to create the credential again"
        ),
        SecretFact::Present { .. } => format!(
            "The values in Secret {secret:?} were sent to Leaf already and a refresh token works only once: put a \
             new one from the grower into the Secret to create the credential again"
        ),
    };
    Transition::new(
        next,
        Outcome::new(
            Reason::CredentialInvalid,
            format!("{gone}{unresolved_note}{fix}"),
        ),
        Next::Person,
    )
}

/// A credential this resource did not create, which adoptionPolicy leaves alone: Conflict.
pub fn foreign(
    f: &Facts,
    current: &TrimbleConnectionStatus,
    credential: &Credential,
    why: ForeignWhy,
) -> Transition {
    let mut next = super::base(f, current);
    let lost = next.credential_id.clone();
    // Nothing of it is ours: neither a later check nor a deletion may touch it.
    close_doubt(&mut next);
    forget_credential(&mut next);
    let what_to_do = match why {
        ForeignWhy::PolicyNever => {
            "adoptionPolicy Never leaves it alone. Set adoptionPolicy: AdoptMatching or Replace, or remove it from Leaf"
        }
        ForeignWhy::NothingToSend => {
            "adoptionPolicy Replace would replace it, but the refresh token in the Secret was sent to Leaf before and \
             works only once. Put a new refresh token from the grower into the Secret to replace it"
        }
        ForeignWhy::NotFromGrower => {
            "this resource has no credentials Secret to compare its clientId with, and the grower's Magic Link did not \
             make it. Remove it from Leaf (the operator then issues a Magic Link for the grower), or delete this \
             resource if it is wanted as it is"
        }
        ForeignWhy::ClientIdDiffers => {
            "its clientId differs from the Secret's (or Leaf did not report one), so adoptionPolicy AdoptMatching leaves \
             it alone. Set adoptionPolicy: Replace to replace it, or remove it from Leaf"
        }
    };
    let ours_gone = match lost {
        Some(ours) => format!("This resource's Trimble credential {ours} is gone from Leaf, and "),
        None => String::new(),
    };
    let message = format!(
        "{ours_gone}Leaf user {} has Trimble credential {} that this resource did not create; {what_to_do}",
        user(f),
        credential.id
    );
    Transition::new(next, Outcome::new(Reason::Conflict, message), Next::Person)
}

/// Deciding about a foreign credential (or creating) needs the Secret, which is not usable.
pub fn need_secret(
    f: &Facts,
    current: &TrimbleConnectionStatus,
    credential: Option<&Credential>,
) -> Transition {
    let purpose = match (credential, f.spec.adoption_policy) {
        (Some(c), AdoptionPolicy::Replace) => format!(
            "it is needed to replace Trimble credential {} of Leaf user {} (adoptionPolicy Replace); nothing is \
             deleted before it can be",
            c.id,
            user(f)
        ),
        (Some(c), _) => format!(
            "it is needed to compare its clientId with Trimble credential {} that Leaf user {} already has \
             (adoptionPolicy AdoptMatching)",
            c.id,
            user(f)
        ),
        (None, _) => "it is needed to create the Trimble credential".to_string(),
    };
    let (reason, message, next) = match &f.secret {
        SecretFact::Invalid { message } => (
            Reason::SecretInvalid,
            format!("{message}; {purpose}"),
            Next::AwaitChange,
        ),
        SecretFact::Missing { message } => (
            Reason::SecretNotFound,
            format!("{message}; {purpose}"),
            Next::Hold(SECRET_NOT_FOUND_RECHECK),
        ),
        SecretFact::NotConfigured => (
            Reason::SecretNotFound,
            format!(
                "spec.credentialsSecretRef is not set and reauthorization.policy is not MagicLink; {purpose}"
            ),
            Next::AwaitChange,
        ),
        // The chooser asks for the Secret only when it is not usable, and an executor only when
        // the Secret's values did not come with the facts: either way, write nothing to Leaf and
        // look again.
        SecretFact::Present { .. } => (
            Reason::SecretNotFound,
            format!("Secret {:?} could not be used; {purpose}", secret_name(f)),
            Next::Hold(SECRET_NOT_FOUND_RECHECK),
        ),
    };
    Transition::new(super::base(f, current), Outcome::new(reason, message), next)
}

#[cfg(test)]
mod tests {
    use super::super::super::testing::*;
    use super::*;

    #[test]
    fn waiting_out_a_create_says_until_when_and_writes_nothing_new_when_looked_at_again() {
        let f = Facts {
            status: in_doubt(status_owning(None), FP_A, CLIENT_A, 5),
            ..facts()
        };
        let first = await_in_doubt(&f, &f.status, WINDOW - Duration::from_secs(5));
        let later = Facts {
            now: now() + jiff::SignedDuration::from_secs(30),
            ..f.clone()
        };
        let second = await_in_doubt(&later, &later.status, WINDOW - Duration::from_secs(35));
        assert_eq!(first.outcome, second.outcome);
        assert!(
            first
                .outcome
                .message
                .contains(&windows().landing_end(windows().send_by(ago(5))).to_string())
        );
    }

    #[test]
    fn a_foreign_credential_ends_every_claim_and_the_doubt() {
        let f = Facts {
            status: created_ago(
                in_doubt(sent(status_owning(Some("ours")), FP_A), FP_B, CLIENT_A, 300),
                100,
                None,
            ),
            ..facts()
        };
        let t = foreign(
            &f,
            &f.status,
            &cred("theirs", CLIENT_OTHER, "OK"),
            ForeignWhy::PolicyNever,
        );
        assert!(t.status.credential_id.is_none());
        assert!(t.status.pending_create.is_none());
        assert!(t.status.last_create.is_none());
        assert_eq!(
            t.status.sent_refresh_tokens.len(),
            0,
            "the pending had no token hash"
        );
        assert_eq!(t.outcome.reason, Reason::Conflict);
    }
}
