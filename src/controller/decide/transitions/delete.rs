//! The DELETE: its intent and what its answer means, for a rotation, a replacement
//! (`adoptionPolicy: Replace`) and the deletion of the resource.
//!
//! Leaf's DELETE names the Leaf user, not the credential: one that lands late removes whatever
//! the user has at that moment, a credential created after it included. So its intent
//! (`status.pendingDelete`: which credential a GET just showed, the start and the send deadline)
//! is on the server before it is sent, and a DELETE whose effect is unknown keeps everything for
//! the user on hold (no POST, no second DELETE, no release of the finalizer) until its window has
//! closed and a fresh GET shows the result.

use super::{Notice, Transition, leaf_failed, user};
use crate::controller::decide::answers::{self, Effect, Write};
use crate::controller::decide::{Facts, Next};
use crate::controller::status::Outcome;
use crate::crd::{PendingDelete, TrimbleConnectionStatus};
use crate::leaf::{Deleted, LeafError};
use crate::reason::Reason;

/// Why a credential is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Ours, and the Secret changed: a create follows.
    Rotate,
    /// A foreign one, `adoptionPolicy: Replace`: a create follows.
    Replace,
    /// The resource is being deleted.
    Cleanup,
    /// Ours is dead (invalid, missing permission) and the grower re-authorizes through a Magic
    /// Link: it goes first, so that the grower's new credential is the only one that can appear.
    Withdraw,
}

impl Purpose {
    fn doing(self) -> &'static str {
        match self {
            Purpose::Rotate => "deleting the old Trimble credential for rotation",
            Purpose::Replace => "deleting the existing Trimble credential (adoptionPolicy Replace)",
            Purpose::Cleanup => "deleting the Trimble credential",
            Purpose::Withdraw => {
                "deleting the dead Trimble credential before the grower re-authorizes"
            }
        }
    }

    fn reason(self) -> Reason {
        match self {
            Purpose::Rotate => Reason::Rotating,
            Purpose::Replace => Reason::Creating,
            Purpose::Cleanup => Reason::Deleting,
            Purpose::Withdraw => Reason::Reauthorizing,
        }
    }
}

/// The intent of a DELETE of `credential_id`, which a GET just showed.
pub fn intent(
    f: &Facts,
    current: &TrimbleConnectionStatus,
    credential_id: &str,
    purpose: Purpose,
) -> (Transition, PendingDelete) {
    let pending = PendingDelete {
        credential_id: credential_id.to_string(),
        started_at: f.now.to_string(),
        send_by: f.windows.send_by(f.now).to_string(),
    };
    let mut next = super::base(f, current);
    next.pending_delete = Some(pending.clone());
    let message = match purpose {
        Purpose::Rotate => format!(
            "Rotating: deleting Trimble credential {credential_id} (Leaf has no update), then creating one from the \
             changed Secret"
        ),
        Purpose::Replace => format!(
            "Replacing Trimble credential {credential_id} of Leaf user {} (adoptionPolicy Replace): deleting it, then \
             creating ours",
            user(f)
        ),
        Purpose::Cleanup => {
            format!("Deleting: deleting Trimble credential {credential_id} from Leaf")
        }
        Purpose::Withdraw => format!(
            "Deleting the dead Trimble credential {credential_id} of Leaf user {}, then issuing a Magic Link for the \
             grower to authorize Trimble again",
            user(f)
        ),
    };
    (
        Transition::new(next, Outcome::new(purpose.reason(), message), Next::Soon),
        pending,
    )
}

/// What the DELETE's answer means.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterDelete {
    /// It is gone and nothing of the DELETE is in doubt: the step goes on (a rotation creates, a
    /// deletion releases the finalizer). The status has the record cleared; `notice` is the
    /// Event for a deletion.
    Gone {
        status: TrimbleConnectionStatus,
        notice: Option<Notice>,
    },
    /// Stop here: write this and look again as it says.
    Stop(Transition),
}

/// What the DELETE's answer means. `with_intent`: the status as written before it.
pub fn after(
    f: &Facts,
    with_intent: TrimbleConnectionStatus,
    pending: &PendingDelete,
    answer: Result<Deleted, LeafError>,
    purpose: Purpose,
) -> AfterDelete {
    let mut next = with_intent;
    let gone = |mut next: TrimbleConnectionStatus| {
        next.pending_delete = None;
        let notice = (purpose == Purpose::Cleanup).then(|| Notice {
            reason: Reason::Deleted,
            action: "Delete",
            note: format!(
                "Deleted Trimble credential {} of Leaf user {} from Leaf",
                pending.credential_id,
                user(f)
            ),
        });
        AfterDelete::Gone {
            status: next,
            notice,
        }
    };
    match answer {
        Ok(Deleted::Removed) => gone(next),
        Ok(Deleted::NothingThere) => {
            let settling = f.windows.settling_left(next.last_create.as_ref(), f.now);
            if settling.is_zero() {
                return gone(next);
            }
            // Leaf found nothing to delete moments after our create: its reads may lag, so the
            // credential may still exist. Look again once they have caught up.
            next.pending_delete = None;
            let message = format!(
                "{}: Leaf found no credential for Leaf user {} moments after it was created; its reads may lag, \
                 so the operator looks again in {}s before concluding anything",
                capitalised(purpose.doing()),
                user(f),
                settling.as_secs().max(1)
            );
            AfterDelete::Stop(Transition::new(
                next,
                Outcome::new(purpose.reason(), message),
                Next::Hold(settling),
            ))
        }
        Err(error) => match answers::effect(Write::Delete, &error) {
            Effect::NotApplied => {
                next.pending_delete = None;
                let mut failed = leaf_failed(next, &error, purpose.doing());
                if purpose == Purpose::Cleanup {
                    failed.outcome.message.push_str(
                        ". Set spec.deletionPolicy: Orphan to finish the deletion and leave the credential in Leaf",
                    );
                }
                AfterDelete::Stop(failed)
            }
            Effect::Applied | Effect::Maybe => {
                // The record stays: whatever the user has when it lands is removed, so nothing
                // is sent for the user until its window has closed.
                let left = f.windows.delete_left(pending, f.now);
                let message = format!(
                    "{}: {error}. {}",
                    capitalised(purpose.doing()),
                    landing_text(f, pending)
                );
                AfterDelete::Stop(Transition::new(
                    next,
                    Outcome::new(Reason::LeafUnavailable, message),
                    Next::Hold(left),
                ))
            }
        },
    }
}

/// Our dead credential is gone (`status`: the DELETE's record cleared): the grower's link comes
/// next. The credential's id stays, so that the next look sees "ours vanished" and issues the link,
/// and its last events stay in `recentEvents` (Leaf forgets them with the credential).
pub fn withdrawn(f: &Facts, mut status: TrimbleConnectionStatus) -> Transition {
    let id = status.credential_id.clone().unwrap_or_default();
    // For the read-lag allowance: a read that still shows it right after is not believed (it
    // would be withdrawn again and again, a DELETE each time).
    status.last_create = Some(crate::crd::LastCreate {
        confirmed_at: f.now.to_string(),
        replaced_credential_id: status.credential_id.clone(),
    });
    Transition::new(
        status,
        Outcome::new(
            Reason::Reauthorizing,
            format!(
                "Deleted the dead Trimble credential {id} of Leaf user {}: issuing a Magic Link for the grower",
                user(f)
            ),
        ),
        Next::Soon,
    )
    .notice(
        Reason::Deleted,
        "Delete",
        format!(
            "Deleted the dead Trimble credential {id} of Leaf user {} so that the grower can authorize Trimble again \
             through a Magic Link",
            user(f)
        ),
    )
}

/// What a resource whose DELETE is in doubt says (the gate's answer to a forced reconcile).
pub fn landing_outcome(f: &Facts, pending: &PendingDelete) -> Outcome {
    let reason = if f.status.credential_id.as_deref() == Some(pending.credential_id.as_str()) {
        Reason::Rotating
    } else {
        Reason::Creating
    };
    Outcome::new(
        reason,
        format!(
            "A DELETE of Trimble credential {} got no clear answer. {}",
            pending.credential_id,
            landing_text(f, pending)
        ),
    )
}

fn landing_text(f: &Facts, pending: &PendingDelete) -> String {
    let end = pending.send_by.parse().map_or_else(
        |_| "now".to_string(),
        |send_by| f.windows.landing_end(send_by).to_string(),
    );
    format!(
        "It may still take effect, and Leaf's DELETE removes whatever credential Leaf user {} has when it lands: \
         nothing is sent for that user before {end}, and then only after a fresh look",
        user(f)
    )
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::testing::*;
    use super::*;
    use crate::leaf::NotSent;
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    fn answered(code: u16) -> LeafError {
        LeafError::from_answer(
            StatusCode::from_u16(code).expect("code"),
            &HeaderMap::new(),
            "",
            false,
        )
    }

    fn timeout() -> LeafError {
        LeafError::Unavailable {
            status: None,
            retry_after: None,
            sent: true,
            detail: "request timed out".into(),
        }
    }

    #[test]
    fn after_delete_table() {
        let owned = Facts {
            status: sent(status_owning(Some("ours")), FP_A),
            ..facts()
        };
        let just_created = Facts {
            status: created_ago(sent(status_owning(Some("ours")), FP_A), 2, None),
            ..facts()
        };
        enum Expect {
            Gone,
            InDoubt,
            NotApplied(Reason),
            Settle,
        }
        let rows: Vec<(&str, &Facts, Result<Deleted, LeafError>, Expect)> = vec![
            ("204", &owned, Ok(Deleted::Removed), Expect::Gone),
            ("404", &owned, Ok(Deleted::NothingThere), Expect::Gone),
            (
                "404 moments after our create: lag, look again",
                &just_created,
                Ok(Deleted::NothingThere),
                Expect::Settle,
            ),
            ("timeout", &owned, Err(timeout()), Expect::InDoubt),
            ("503", &owned, Err(answered(503)), Expect::InDoubt),
            ("500", &owned, Err(answered(500)), Expect::InDoubt),
            (
                "429",
                &owned,
                Err(answered(429)),
                Expect::NotApplied(Reason::LeafUnavailable),
            ),
            (
                "403",
                &owned,
                Err(answered(403)),
                Expect::NotApplied(Reason::LeafAuthFailed),
            ),
            (
                "not sent, deadline",
                &owned,
                Err(LeafError::NotSent(NotSent::DeadlinePassed)),
                Expect::NotApplied(Reason::LeafUnavailable),
            ),
        ];
        for purpose in [Purpose::Rotate, Purpose::Replace, Purpose::Cleanup] {
            for (name, f, answer, expect) in &rows {
                let (t, pending) = intent(f, &f.status, "ours", purpose);
                assert_eq!(t.status.pending_delete.as_ref(), Some(&pending));
                let answer = match answer {
                    Ok(deleted) => Ok(*deleted),
                    Err(error) => Err(match error {
                        LeafError::NotSent(why) => LeafError::NotSent(*why),
                        LeafError::Unavailable { status, .. } if status.is_none() => timeout(),
                        other => answered(other.status().expect("a status")),
                    }),
                };
                let result = after(f, t.status, &pending, answer, purpose);
                match (expect, result) {
                    (Expect::Gone, AfterDelete::Gone { status, notice }) => {
                        assert!(status.pending_delete.is_none(), "{purpose:?} {name}");
                        assert_eq!(
                            notice.is_some(),
                            purpose == Purpose::Cleanup,
                            "{purpose:?} {name}"
                        );
                    }
                    (Expect::InDoubt, AfterDelete::Stop(t)) => {
                        assert_eq!(
                            t.status.pending_delete,
                            Some(pending.clone()),
                            "{purpose:?} {name}: the record stays"
                        );
                        assert_eq!(t.next, Next::Hold(WINDOW), "{purpose:?} {name}");
                        assert!(
                            t.outcome.message.contains("nothing is sent for that user"),
                            "{}",
                            t.outcome.message
                        );
                    }
                    (Expect::NotApplied(reason), AfterDelete::Stop(t)) => {
                        assert!(t.status.pending_delete.is_none(), "{purpose:?} {name}");
                        assert_eq!(t.outcome.reason, *reason, "{purpose:?} {name}");
                        assert!(matches!(t.next, Next::Backoff { .. }), "{purpose:?} {name}");
                    }
                    (Expect::Settle, AfterDelete::Stop(t)) => {
                        assert!(t.status.pending_delete.is_none(), "{purpose:?} {name}");
                        assert_eq!(
                            t.next,
                            Next::Hold(READ_LAG - std::time::Duration::from_secs(2)),
                            "{purpose:?} {name}"
                        );
                    }
                    (_, got) => panic!("{purpose:?} {name}: got {got:?}"),
                }
            }
        }
    }

    #[test]
    fn the_forced_answer_during_a_doubt_is_the_same_every_time() {
        let f = Facts {
            status: deleting(sent(status_owning(Some("c1")), FP_A), "c1", 10),
            ..facts()
        };
        let pending = f.status.pending_delete.clone().expect("pending");
        let first = landing_outcome(&f, &pending);
        let later = Facts {
            now: now() + jiff::SignedDuration::from_secs(20),
            ..f.clone()
        };
        assert_eq!(
            first,
            landing_outcome(&later, &pending),
            "no status write per look"
        );
        assert_eq!(first.reason, Reason::Rotating);
    }
}
