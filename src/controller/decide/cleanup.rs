//! Deletion's decisions: whether deleting a TrimbleConnection touches Leaf, and what.
//!
//! Cleanup never depends on the credentials Secret. It releases the finalizer at once whenever
//! there is nothing of ours in Leaf (never created, lost a conflict, Orphan, no Leaf account), and
//! it DELETEs only right after a GET showed the credential we own. A write still in doubt keeps
//! the finalizer until its window closes: a POST landing late is not left behind, and a DELETE
//! landing late (it names the Leaf user) cannot remove the credential of a resource created
//! after this one is gone. A GET that shows nothing within the read-lag allowance after our
//! last create does not release it either.

use std::time::Duration;

use super::choose::{Doubt, resolve_doubt, settling};
use super::{AccountFact, ConflictFact, Facts};
use crate::controller::status::Outcome;
use crate::crd::{DeletionPolicy, ManagementPolicy};
use crate::leaf::Credential;

/// Before any Leaf call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanupGate {
    /// Let the resource go without touching Leaf.
    Release(Release),
    /// The schedule says Leaf failed recently: wait this long before trying again.
    Wait(Duration),
    /// A write of ours may still land: nothing is sent, and the finalizer stays, this long.
    AwaitWrite(Duration),
    /// GET the credential, then [`choose`].
    AskLeaf,
}

/// Why the finalizer is released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release {
    /// Nothing was ever created (or a conflict was lost before anything was).
    NothingOurs,
    /// The Leaf user belongs to this older resource; its credential is not ours to delete.
    ConflictLoser(String),
    /// `deletionPolicy: Orphan`.
    Orphan,
    /// `managementPolicy: Observe`: a DELETE would have been sent; nothing is.
    Observe,
    /// No Leaf account to delete with (its Secret is gone, as when a namespace is deleted).
    NoAccount(Outcome),
    /// Leaf has nothing of ours any more.
    AlreadyGone,
    /// Leaf holds a credential that is not ours: it is left alone.
    NotOurs(Credential),
    /// The create in doubt never landed.
    NothingLanded,
}

/// After the GET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanupStep {
    Release(Release),
    /// DELETE: the GET showed our credential.
    Delete(Credential),
    /// A create (or DELETE) may still land: look again after this long.
    AwaitInDoubt(Duration),
    /// Leaf shows nothing, or what our last create replaced, within the read-lag allowance:
    /// look again after this long.
    AwaitSettle(Duration),
}

/// Whether deleting the resource calls Leaf at all.
pub fn gate(f: &Facts) -> CleanupGate {
    if !f.owns_anything() {
        return CleanupGate::Release(Release::NothingOurs);
    }
    if let ConflictFact::LosesTo(winner) = &f.conflict {
        // A loser may still name the winner's credential in its status (it recorded it before the
        // older resource was in the store): deleting it would pull it from under the winner.
        return CleanupGate::Release(Release::ConflictLoser(winner.clone()));
    }
    // Even Orphan and a lost account wait for a write in doubt: its window is bounded (about two
    // minutes by default), and once the resource is gone nothing would stop it from landing on
    // a resource created after it (a late DELETE removes whatever the Leaf user has; a late POST
    // may silently replace the newer credential).
    if let Some(pending) = &f.status.pending_delete {
        let left = f.windows.delete_left(pending, f.now);
        if !left.is_zero() {
            return CleanupGate::AwaitWrite(left);
        }
    }
    if let Some(pending) = &f.status.pending_create {
        let left = f.windows.create_left(pending, f.now);
        if !left.is_zero() {
            return CleanupGate::AwaitWrite(left);
        }
    }
    if f.spec.deletion_policy == DeletionPolicy::Orphan {
        return CleanupGate::Release(Release::Orphan);
    }
    if f.spec.management_policy == ManagementPolicy::Observe {
        return CleanupGate::Release(Release::Observe);
    }
    if let AccountFact::Unusable { outcome, .. } = &f.account {
        return CleanupGate::Release(Release::NoAccount(outcome.clone()));
    }
    if !f.not_due_for.is_zero() && !f.forced {
        return CleanupGate::Wait(f.not_due_for);
    }
    CleanupGate::AskLeaf
}

/// What to do with what the GET showed.
pub fn choose(f: &Facts, seen: Option<&Credential>) -> CleanupStep {
    if let Some(pending) = &f.status.pending_delete {
        let left = f.windows.delete_left(pending, f.now);
        if !left.is_zero() {
            return CleanupStep::AwaitInDoubt(left);
        }
    }
    match resolve_doubt(f, seen) {
        Doubt::Landed(credential) => return CleanupStep::Delete(credential),
        Doubt::Open(left) => return CleanupStep::AwaitInDoubt(left),
        Doubt::NothingLanded if f.status.credential_id.is_none() => {
            return CleanupStep::Release(match seen {
                Some(credential) => Release::NotOurs(credential.clone()),
                None => Release::NothingLanded,
            });
        }
        Doubt::None | Doubt::NothingLanded => {}
    }
    if let Some(left) = settling(f, seen) {
        return CleanupStep::AwaitSettle(left);
    }
    match (f.status.credential_id.as_deref(), seen) {
        (Some(ours), Some(credential)) if credential.id == ours => {
            CleanupStep::Delete(credential.clone())
        }
        (_, Some(credential)) => CleanupStep::Release(Release::NotOurs(credential.clone())),
        (_, None) => CleanupStep::Release(Release::AlreadyGone),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::controller::decide::Next;
    use crate::reason::Reason;

    #[test]
    fn cleanup_gate_table() {
        let owned = || sent(status_owning(Some("ours")), FP_A);
        let rows: Vec<(&str, Facts, CleanupGate)> = vec![
            (
                "never created: release",
                facts(),
                CleanupGate::Release(Release::NothingOurs),
            ),
            (
                "conflict loser: release, never delete",
                Facts {
                    status: owned(),
                    conflict: ConflictFact::LosesTo("a/b".into()),
                    ..facts()
                },
                CleanupGate::Release(Release::ConflictLoser("a/b".into())),
            ),
            (
                "orphan: release",
                Facts {
                    status: owned(),
                    spec: spec_with(|s| s.deletion_policy = DeletionPolicy::Orphan),
                    ..facts()
                },
                CleanupGate::Release(Release::Orphan),
            ),
            (
                "no account: release",
                Facts {
                    status: owned(),
                    account: AccountFact::Unusable {
                        outcome: Outcome::new(Reason::SecretNotFound, "gone"),
                        next: Next::Person,
                    },
                    ..facts()
                },
                CleanupGate::Release(Release::NoAccount(Outcome::new(
                    Reason::SecretNotFound,
                    "gone",
                ))),
            ),
            (
                "backing off: wait",
                Facts {
                    status: owned(),
                    not_due_for: Duration::from_secs(4),
                    ..facts()
                },
                CleanupGate::Wait(Duration::from_secs(4)),
            ),
            (
                "a DELETE in doubt keeps the finalizer, even with Orphan",
                Facts {
                    status: deleting(owned(), "ours", 10),
                    spec: spec_with(|s| s.deletion_policy = DeletionPolicy::Orphan),
                    ..facts()
                },
                CleanupGate::AwaitWrite(WINDOW - Duration::from_secs(10)),
            ),
            (
                "a create in doubt keeps the finalizer, even with Orphan",
                Facts {
                    status: in_doubt(status_owning(None), FP_A, CLIENT_A, 10),
                    spec: spec_with(|s| s.deletion_policy = DeletionPolicy::Orphan),
                    ..facts()
                },
                CleanupGate::AwaitWrite(CREATE_DOUBT - Duration::from_secs(10)),
            ),
            (
                "a DELETE whose window closed: orphan as asked",
                Facts {
                    status: deleting(owned(), "ours", 300),
                    spec: spec_with(|s| s.deletion_policy = DeletionPolicy::Orphan),
                    ..facts()
                },
                CleanupGate::Release(Release::Orphan),
            ),
            (
                "owned: ask Leaf",
                Facts {
                    status: owned(),
                    ..facts()
                },
                CleanupGate::AskLeaf,
            ),
        ];
        for (name, f, expect) in rows {
            assert_eq!(gate(&f), expect, "{name}");
        }
    }

    #[test]
    fn cleanup_choose_table() {
        let owned = Facts {
            status: sent(status_owning(Some("ours")), FP_A),
            ..facts()
        };
        let ours = cred("ours", CLIENT_A, "OK");
        let theirs = cred("theirs", CLIENT_OTHER, "OK");
        assert_eq!(
            choose(&owned, Some(&ours)),
            CleanupStep::Delete(ours.clone()),
            "ours: delete"
        );
        assert_eq!(
            choose(&owned, Some(&theirs)),
            CleanupStep::Release(Release::NotOurs(theirs.clone())),
            "someone else's: never delete"
        );
        assert_eq!(
            choose(&owned, None),
            CleanupStep::Release(Release::AlreadyGone),
            "gone already"
        );
        let doubt = |seconds| Facts {
            status: in_doubt(status_owning(None), FP_A, CLIENT_A, seconds),
            ..facts()
        };
        assert!(
            matches!(choose(&doubt(5), None), CleanupStep::AwaitInDoubt(_)),
            "a POST may still land"
        );
        assert_eq!(
            choose(&doubt(200), None),
            CleanupStep::Release(Release::NothingLanded)
        );
        let landed = cred_created("new", CLIENT_A, "OK", 1);
        assert_eq!(
            choose(&doubt(5), Some(&landed)),
            CleanupStep::Delete(landed.clone()),
            "the in-doubt POST landed: it is ours"
        );
        assert!(matches!(
            choose(&doubt(5), Some(&theirs)),
            CleanupStep::AwaitInDoubt(_)
        ));
        assert_eq!(
            choose(&doubt(200), Some(&theirs)),
            CleanupStep::Release(Release::NotOurs(theirs.clone()))
        );
    }

    #[test]
    fn a_404_right_after_our_create_keeps_the_finalizer() {
        let just_created = Facts {
            status: created_ago(sent(status_owning(Some("ours")), FP_A), 3, Some("old")),
            ..facts()
        };
        assert_eq!(
            choose(&just_created, None),
            CleanupStep::AwaitSettle(READ_LAG - Duration::from_secs(3)),
            "one 404 within the read-lag allowance is no proof"
        );
        assert_eq!(
            choose(&just_created, Some(&cred("old", CLIENT_A, "OK"))),
            CleanupStep::AwaitSettle(READ_LAG - Duration::from_secs(3)),
            "the replaced one, still shown, is lag"
        );
        let later = Facts {
            status: created_ago(sent(status_owning(Some("ours")), FP_A), 30, Some("old")),
            ..facts()
        };
        assert_eq!(
            choose(&later, None),
            CleanupStep::Release(Release::AlreadyGone)
        );
    }
}
