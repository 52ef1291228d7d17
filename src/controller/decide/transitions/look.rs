//! Looking at a credential: the periodic check of ours, and the adoption of a foreign one whose
//! clientId matches the Secret's (`adoptionPolicy: AdoptMatching`).

use super::{Transition, close_doubt, fill, leaf_failed, secret_name, secret_note, user};
use crate::controller::decide::{Facts, Next};
use crate::controller::status;
use crate::crd::TrimbleConnectionStatus;
use crate::leaf::{Credential, CredentialEvent, LeafError};
use crate::reason::Reason;

/// Records what Leaf reports about `credential` on top of `base`; `events`: Leaf's events, when
/// they were read.
pub fn check(
    f: &Facts,
    mut base: TrimbleConnectionStatus,
    credential: &Credential,
    events: Option<Result<Vec<CredentialEvent>, LeafError>>,
) -> Transition {
    fill(&mut base, credential);
    let mut new_errors = Vec::new();
    match events {
        None => {}
        Some(Err(error)) => {
            return leaf_failed(base, &error, "reading the credential's events from Leaf");
        }
        Some(Ok(events)) => {
            let merged = status::merge_events(&base.recent_events, &events);
            base.recent_events = merged.recent;
            new_errors = merged.new_errors;
        }
    }
    let note = secret_note(f, &base);
    let outcome = status::credential_outcome(&credential.status, secret_name(f), note);
    let mut transition = Transition::new(base, outcome, Next::Check);
    transition.leaf_events = new_errors;
    transition
}

/// The periodic check of our credential. A create whose window closed without a credential of
/// its own in sight ends here too: its token counts as sent.
pub fn check_ours(
    f: &Facts,
    current: &TrimbleConnectionStatus,
    credential: &Credential,
    events: Option<Result<Vec<CredentialEvent>, LeafError>>,
) -> Transition {
    let mut base = super::base(f, current);
    close_doubt(&mut base);
    check(f, base, credential, events)
}

/// Takes over `credential`, whose clientId matches the Secret's. The Secret's values were not
/// sent by us, so they are recorded as found at adoption (`adoptedSecretFingerprint`), never as
/// sent: a later change of the Secret rotates, and a dead adopted credential says exactly what a
/// person can do.
pub fn adopt(
    f: &Facts,
    current: &TrimbleConnectionStatus,
    credential: &Credential,
    events: Option<Result<Vec<CredentialEvent>, LeafError>>,
) -> Transition {
    let events = match events {
        // The events could not be read: nothing is adopted yet, so that the adoption and its
        // Event come together on the next try.
        Some(Err(error)) => {
            return leaf_failed(
                super::base(f, current),
                &error,
                "reading the credential's events from Leaf",
            );
        }
        events => events,
    };
    let mut next = super::base(f, current);
    close_doubt(&mut next);
    next.secret_fingerprint = None;
    next.adopted_secret_fingerprint = f.secret.fingerprint().map(str::to_string);
    next.recent_events.clear();
    next.last_create = None;
    next.credential_source = Some(crate::crd::CredentialSource::Adopted);
    let transition = check(f, next, credential, events);
    let note = format!(
        "Adopted the existing Trimble credential {} of Leaf user {}: its clientId matches Secret {:?}",
        credential.id,
        user(f),
        secret_name(f)
    );
    transition.notice(Reason::Adopted, "Adopt", note)
}

#[cfg(test)]
mod tests {
    use super::super::super::testing::*;
    use super::*;

    #[test]
    fn a_check_that_finds_nothing_new_changes_nothing() {
        let f = Facts {
            status: sent(status_owning(Some("ours")), FP_A),
            ..facts()
        };
        let ours = cred("ours", CLIENT_A, "OK");
        let t = check_ours(&f, &f.status, &ours, Some(Ok(vec![])));
        let mut expected = f.status.clone();
        fill(&mut expected, &ours);
        assert_eq!(t.status, expected);
        assert_eq!(t.outcome.reason, Reason::CredentialValid);
        assert!(t.notices.is_empty() && t.leaf_events.is_empty());
    }

    #[test]
    fn an_adoption_whose_events_cannot_be_read_claims_nothing_yet() {
        let f = facts();
        let theirs = cred("theirs", CLIENT_A, "OK");
        let failed = adopt(
            &f,
            &f.status,
            &theirs,
            Some(Err(LeafError::Unavailable {
                status: Some(503),
                retry_after: None,
                sent: true,
                detail: "down".into(),
            })),
        );
        assert!(failed.notices.is_empty());
        assert!(
            failed.status.credential_id.is_none(),
            "not claimed without its Event"
        );
        assert!(matches!(failed.next, Next::Backoff { .. }));
        let adopted = adopt(&f, &f.status, &theirs, Some(Ok(vec![])));
        assert_eq!(adopted.status.credential_id.as_deref(), Some("theirs"));
        assert_eq!(
            adopted.status.adopted_secret_fingerprint.as_deref(),
            Some(FP_A)
        );
        assert_eq!(adopted.notices[0].reason, Reason::Adopted);
    }
}
