//! The steps that write nothing to Leaf: waiting out a create in doubt, values that cannot be
//! sent again, a foreign credential left alone, and a decision that needs the Secret.

use std::time::Duration;

use super::{
    Input, Interrupted, Ports, StatusWriter, close_doubt, forget_credential, secret_name, user,
};
use crate::controller::decide::choose::ForeignWhy;
use crate::controller::decide::gate::SECRET_NOT_FOUND_RECHECK;
use crate::controller::decide::{Next, SecretFact};
use crate::controller::status::Outcome;
use crate::crd::AdoptionPolicy;
use crate::leaf::Credential;
use crate::reason::Reason;

/// A POST may still create a credential: nothing is sent until its window closes.
pub(super) async fn await_in_doubt<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    left: Duration,
) -> Result<Next, Interrupted> {
    let started = w
        .current()
        .pending_create
        .as_ref()
        .map(|p| p.started_at.clone())
        .unwrap_or_default();
    let reason = if w.current().credential_id.is_some() {
        Reason::Rotating
    } else {
        Reason::Creating
    };
    let message = format!(
        "A create sent to Leaf at {started} may still complete (Leaf validates the refresh token with Trimble \
         before it answers); nothing is sent again for {}s, and then only after a fresh look at Leaf user {}",
        left.as_secs().max(1),
        user(input)
    );
    w.report(&Outcome::new(reason, message)).await?;
    Ok(Next::Hold(left))
}

/// Nothing may be created: the Secret's values were sent already (a refresh token works once),
/// or there is no usable Secret. `vanished`: our credential that is gone from Leaf.
pub(super) async fn need_new_values<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    vanished: Option<String>,
) -> Result<Next, Interrupted> {
    let mut next = w.current().clone();
    close_doubt(&mut next);
    next.credential_status = None;
    let secret = secret_name(input);
    let gone = match &vanished {
        Some(id) => format!(
            "The Trimble credential {id} no longer exists in Leaf (removed outside this operator). "
        ),
        None => String::new(),
    };
    let fix = match &input.facts.secret {
        SecretFact::Missing { .. } => format!(
            "Put a new refresh token from the grower into Secret {secret:?} (it does not exist now) to create the \
             credential again"
        ),
        SecretFact::Invalid { message } => {
            format!("{message}: put complete values with a new refresh token from the grower into it")
        }
        SecretFact::Present { .. } if input.facts.token_sent_before() => format!(
            "The refresh token in Secret {secret:?} was sent to Leaf before and a Trimble refresh token works only \
             once: put a new one from the grower into the Secret to create the credential again"
        ),
        SecretFact::Present { .. } => format!(
            "The values in Secret {secret:?} were sent to Leaf already and a refresh token works only once: put a \
             new one from the grower into the Secret to create the credential again"
        ),
    };
    let outcome = Outcome::new(Reason::CredentialInvalid, format!("{gone}{fix}"));
    w.write(next, &outcome).await?;
    Ok(Next::Person)
}

/// A credential this resource did not create, which adoptionPolicy leaves alone: Conflict.
pub(super) async fn foreign<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    credential: Credential,
    why: ForeignWhy,
) -> Result<Next, Interrupted> {
    let mut next = w.current().clone();
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
        user(input),
        credential.id
    );
    w.write(next, &Outcome::new(Reason::Conflict, message))
        .await?;
    Ok(Next::Person)
}

/// Deciding about a foreign credential (or creating) needs the Secret, which is not usable.
pub(super) async fn need_secret<P: Ports>(
    w: &mut StatusWriter<'_, P>,
    input: &Input<'_>,
    credential: Option<Credential>,
) -> Result<Next, Interrupted> {
    let purpose = match (&credential, input.facts.spec.adoption_policy) {
        (Some(c), AdoptionPolicy::Replace) => format!(
            "it is needed to replace Trimble credential {} of Leaf user {} (adoptionPolicy Replace); nothing is \
             deleted before it can be",
            c.id,
            user(input)
        ),
        (Some(c), _) => format!(
            "it is needed to compare its clientId with Trimble credential {} that Leaf user {} already has \
             (adoptionPolicy AdoptMatching)",
            c.id,
            user(input)
        ),
        (None, _) => "it is needed to create the Trimble credential".to_string(),
    };
    let (reason, message, next) = match &input.facts.secret {
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
        // The chooser asks for the Secret only when it is not usable; should that change, the
        // safe answer is still to write nothing to Leaf and look again.
        SecretFact::Present { .. } => (
            Reason::SecretNotFound,
            format!("Secret {:?} could not be used; {purpose}", secret_name(input)),
            Next::Hold(SECRET_NOT_FOUND_RECHECK),
        ),
    };
    w.report(&Outcome::new(reason, message)).await?;
    Ok(next)
}
