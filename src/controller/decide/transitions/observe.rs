//! `managementPolicy: Observe` (or `--observe-only`): the step that would write to Leaf is not
//! run; the resource says what it would have done, and Leaf is looked at again at the next check.
//!
//! Only writes are held back: the periodic check of a credential this resource owns, the
//! resumption of its own create that was in doubt, conflicts and waits behave as under `Full`,
//! since none of them sends anything to Leaf. An adoption is held back too: it changes no Leaf
//! state, but it makes the credential this resource's, for later rotations and the deletion.

use super::{Transition, secret_name, user};
use crate::controller::decide::{Facts, Next};
use crate::controller::status::{self, Outcome};
use crate::crd::TrimbleConnectionStatus;
use crate::leaf::Credential;
use crate::reason::Reason;

/// A write (or claim) that `Full` would make now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Would<'a> {
    Create,
    Rotate(&'a Credential),
    Replace(&'a Credential),
    Adopt(&'a Credential),
    /// Delete a dead credential, then issue a Magic Link for the grower.
    Withdraw(&'a Credential),
    /// Issue a Magic Link for the grower.
    IssueLink,
}

impl Would<'_> {
    /// The Event's action.
    pub fn action(&self) -> &'static str {
        match self {
            Would::Create => "Create",
            Would::Rotate(_) => "Rotate",
            Would::Replace(_) => "Replace",
            Would::Adopt(_) => "Adopt",
            Would::Withdraw(_) => "Delete",
            Would::IssueLink => "IssueMagicLink",
        }
    }
}

/// The resource reports what it would do; the status keeps everything else. An Event is published
/// only when the message changes, so that a resource observed at every check writes nothing new.
pub fn would(f: &Facts, current: &TrimbleConnectionStatus, what: Would<'_>) -> Transition {
    let user = user(f);
    let secret = secret_name(f);
    let message = match what {
        Would::Create => format!(
            "Observe only: would create a Trimble credential for Leaf user {user} from Secret {secret:?}"
        ),
        Would::Rotate(credential) => format!(
            "Observe only: would rotate Trimble credential {} of Leaf user {user} (delete it, then create one from \
             the changed Secret {secret:?})",
            credential.id
        ),
        Would::Replace(credential) => format!(
            "Observe only: would replace Trimble credential {} of Leaf user {user}, which this resource did not \
             create (adoptionPolicy Replace: delete it, then create one from Secret {secret:?})",
            credential.id
        ),
        Would::Withdraw(credential) => format!(
            "Observe only: would delete the dead Trimble credential {} of Leaf user {user} (Leaf reports it as {}) \
             and issue a Magic Link for the grower to authorize Trimble again",
            credential.id, credential.raw_status
        ),
        Would::IssueLink => format!(
            "Observe only: would issue a Magic Link for the grower of Leaf user {user} to authorize Trimble"
        ),
        Would::Adopt(credential) => format!(
            "Observe only: would adopt Trimble credential {} of Leaf user {user} (its clientId is the Secret's; \
             Leaf reports it as {})",
            credential.id, credential.raw_status
        ),
    };
    let changed = status::ready_reason(current) != Some(Reason::ObserveOnly)
        || status::ready_message(current) != message;
    let transition = Transition::new(
        super::base(f, current),
        Outcome::new(Reason::ObserveOnly, message.clone()),
        Next::Check,
    );
    if changed {
        transition.notice(Reason::ObserveOnly, what.action(), message)
    } else {
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decide::testing::{cred, facts};

    #[test]
    fn each_held_back_write_says_what_it_would_do_and_announces_it_once() {
        let f = facts();
        let theirs = cred("c-9", "client-a", "OK");
        for (what, words) in [
            (Would::Create, "would create a Trimble credential"),
            (
                Would::Rotate(&theirs),
                "would rotate Trimble credential c-9",
            ),
            (
                Would::Replace(&theirs),
                "would replace Trimble credential c-9",
            ),
            (Would::Adopt(&theirs), "would adopt Trimble credential c-9"),
        ] {
            let first = would(&f, &f.status, what.clone());
            assert_eq!(first.outcome.reason, Reason::ObserveOnly);
            assert!(
                first.outcome.message.contains(words),
                "{}",
                first.outcome.message
            );
            assert_eq!(first.notices.len(), 1, "{words}");
            assert_eq!(first.next, Next::Check);
            // Nothing of the status changes but the conditions the writer adds.
            assert_eq!(first.status, f.status);

            // The next check finds the same: nothing new to announce.
            let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(f.now);
            let shown = status::finish(
                &f.status,
                first.status.clone(),
                &first.outcome,
                Some(1),
                &now,
            );
            let again = would(&f, &shown, what);
            assert!(again.notices.is_empty(), "{words}: announced twice");
        }
    }
}
