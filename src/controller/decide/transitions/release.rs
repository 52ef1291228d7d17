//! Deletion's words: the Event that says why a finalizer is released without a DELETE (or after
//! one), and what a resource being deleted shows while it waits.

use std::time::Duration;

use super::{Notice, Transition, current_outcome, user};
use crate::controller::decide::cleanup::Release;
use crate::controller::decide::{Facts, Next};
use crate::controller::status::{self, Outcome};
use crate::leaf::LeafError;
use crate::reason::Reason;

/// The credential id to name before Leaf was read.
pub fn shown(f: &Facts) -> String {
    f.status
        .credential_id
        .clone()
        .unwrap_or_else(|| "(create in progress)".to_string())
}

/// The Event that says why the finalizer goes (None: nothing worth an Event).
pub fn notice(f: &Facts, release: &Release) -> Option<Notice> {
    let user = user(f);
    let shown = shown(f);
    let (reason, action, note) = match release {
        Release::NothingOurs | Release::NothingLanded | Release::ConflictLoser(_) => return None,
        Release::Orphan => (
            Reason::Orphaned,
            "Orphan",
            format!(
                "Left Trimble credential {shown} of Leaf user {user} in Leaf (deletionPolicy: Orphan)"
            ),
        ),
        Release::Observe => (
            Reason::ObserveOnly,
            "Observe",
            format!(
                "Observe only: would delete Trimble credential {shown} of Leaf user {user} (deletionPolicy: Delete); \
                 it is left in Leaf"
            ),
        ),
        Release::NoAccount(outcome) => (
            outcome.reason,
            "Delete",
            format!(
                "{}. Trimble credential {shown} was left in Leaf",
                outcome.message
            ),
        ),
        Release::AlreadyGone => (
            Reason::Deleted,
            "Delete",
            format!("Trimble credential {shown} of Leaf user {user} was already gone from Leaf"),
        ),
        Release::NotOurs(credential) => (
            Reason::DeleteSkipped,
            "Delete",
            format!(
                "Not deleted: Leaf user {user} now has Trimble credential {}, which is not this resource's ({shown}); \
                 it is left in Leaf",
                credential.id
            ),
        ),
    };
    Some(Notice {
        reason,
        action,
        note,
    })
}

/// Reading Leaf failed during deletion: the reason, and the way out.
pub fn read_failed(f: &Facts, error: &LeafError) -> Transition {
    let reason = status::leaf_error_reason(error);
    let message = format!(
        "Deleting: cannot read Trimble credential {} in Leaf: {error}. Retrying; set spec.deletionPolicy: Orphan \
         to finish the deletion and leave the credential in Leaf",
        shown(f)
    );
    Transition::new(
        f.status.clone(),
        Outcome::new(reason, message),
        Next::Backoff {
            retry_after: error.retry_after(),
        },
    )
}

/// A create of this resource may still land: the finalizer stays.
pub fn await_in_doubt(f: &Facts, left: Duration) -> Transition {
    let message = "Deleting: a create of this resource may still complete in Leaf; looking again before deciding \
                   what to delete (set spec.deletionPolicy: Orphan to finish at once)";
    Transition::new(
        super::base(f, &f.status),
        Outcome::new(Reason::Deleting, message),
        Next::Hold(left),
    )
}

/// Leaf's read may lag behind our last create: the status stays, Leaf is read again.
pub fn await_settle(f: &Facts, left: Duration) -> Transition {
    let status = super::base(f, &f.status);
    Transition::new(
        status.clone(),
        current_outcome(&status, Reason::Deleting),
        Next::Hold(left),
    )
}

#[cfg(test)]
mod tests {
    use super::super::super::testing::*;
    use super::*;

    #[test]
    fn only_what_a_person_should_hear_about_is_an_event() {
        let f = Facts {
            status: sent(status_owning(Some("ours")), FP_A),
            ..facts()
        };
        assert!(notice(&f, &Release::NothingOurs).is_none());
        assert!(notice(&f, &Release::ConflictLoser("a/b".into())).is_none());
        let skipped =
            notice(&f, &Release::NotOurs(cred("theirs", CLIENT_OTHER, "OK"))).expect("an Event");
        assert_eq!(skipped.reason, Reason::DeleteSkipped);
        assert!(skipped.note.contains("theirs") && skipped.note.contains("ours"));
        assert_eq!(
            notice(&f, &Release::Orphan).map(|n| n.reason),
            Some(Reason::Orphaned)
        );
    }
}
