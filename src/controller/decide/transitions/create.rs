//! The create: its intent before the POST, what the POST's answer means, and the resumption of a
//! create that was in doubt.
//!
//! The intent (`status.pendingCreate`: start, send deadline, hashes of what is sent) is on the
//! server before the POST. From then on the create is in doubt until an answer proves its effect
//! ([`super::super::answers`]), or a GET shows the credential it made, or its window closes.

use super::{
    Transition, close_doubt, fill, forget_credential, leaf_failed, remember_sent, secret_name, user,
};
use crate::controller::decide::answers::{self, Effect, Write};
use crate::controller::decide::{Facts, Next, SecretFact};
use crate::controller::status::{self, Outcome, SecretNote};
use crate::crd::{LastCreate, PendingCreate, TrimbleConnectionStatus};
use crate::leaf::{Credential, CredentialEvent, LeafError};
use crate::reason::Reason;

/// The intent of a create from the Secret's values (`None` when the facts hold no complete
/// Secret: the chooser never asks for a create then). `rotating`: it replaces the credential our
/// status names (the reasons and Events say Rotating / Rotated).
pub fn intent(
    f: &Facts,
    current: &TrimbleConnectionStatus,
    rotating: bool,
) -> Option<(Transition, PendingCreate)> {
    let SecretFact::Present {
        fingerprint,
        client_id_hash,
        refresh_token_hash,
    } = &f.secret
    else {
        return None;
    };
    let pending = PendingCreate {
        secret_fingerprint: fingerprint.clone(),
        started_at: f.now.to_string(),
        send_by: Some(f.windows.send_by(f.now).to_string()),
        client_id_fingerprint: Some(client_id_hash.clone()),
        refresh_token_fingerprint: Some(refresh_token_hash.clone()),
    };
    let mut next = super::base(f, current);
    // A rotation's DELETE, if any, is over once this is written: its answer came.
    next.pending_delete = None;
    // An earlier create whose doubt closed unresolved may have used its token: never again.
    close_doubt(&mut next);
    next.pending_create = Some(pending.clone());
    let outcome = if rotating {
        Outcome::new(
            Reason::Rotating,
            "Rotating: creating the Trimble credential in Leaf from the changed Secret",
        )
    } else {
        Outcome::new(Reason::Creating, "Creating the Trimble credential in Leaf")
    };
    Some((Transition::new(next, outcome, Next::Soon), pending))
}

/// What the POST's answer means. `with_intent`: the status as written before the POST.
/// `events`: Leaf's events read right after a successful POST (polling mode), so that the first
/// periodic check finds nothing new to write.
pub fn after(
    f: &Facts,
    with_intent: TrimbleConnectionStatus,
    pending: &PendingCreate,
    answer: Result<Credential, LeafError>,
    events: Option<Result<Vec<CredentialEvent>, LeafError>>,
    rotating: bool,
) -> Transition {
    let error = match answer {
        Ok(credential) => {
            return record(f, with_intent, pending, credential, events, rotating, false);
        }
        Err(error) => error,
    };
    let doing = "creating the Trimble credential in Leaf";
    let mut next = with_intent;
    match (answers::effect(Write::Create, &error), &error) {
        (Effect::Applied | Effect::Maybe, _) => {
            // The POST may have created the credential, now or within its window: the intent
            // stays, nothing is sent again before the window closes, and then only after a GET.
            let end = window_end(f, pending);
            let message = format!(
                "{doing}: {error}. The create may still take effect in Leaf: nothing is sent again before {end}, \
                 and then only after a fresh look at Leaf user {}",
                user(f)
            );
            Transition::new(
                next,
                Outcome::new(Reason::LeafUnavailable, message),
                Next::Backoff {
                    retry_after: error.retry_after(),
                },
            )
        }
        (Effect::NotApplied, LeafError::AlreadyExists { detail }) => {
            // A refusal: this POST made nothing, whatever Leaf holds (a credential the last GET
            // did not show yet, or one made since). The doubt ends here, so nothing Leaf shows
            // can be taken as made by it. Leaf may have exchanged the refresh token with Trimble
            // before it refused: the token counts as spent.
            next.pending_create = None;
            remember_sent(&mut next, pending);
            let message = format!(
                "Leaf answered that Leaf user {} already has a Trimble credential ({detail}); nothing was created by \
                 this request. Looking at Leaf again to decide by spec.adoptionPolicy",
                user(f)
            );
            Transition::new(
                next,
                Outcome::new(
                    if rotating {
                        Reason::Rotating
                    } else {
                        Reason::Creating
                    },
                    message,
                ),
                Next::Backoff { retry_after: None },
            )
        }
        (Effect::NotApplied, LeafError::UserNotFound { .. }) => {
            next.pending_create = None;
            forget_credential(&mut next);
            let message = format!(
                "{error}. Leaf has no user {:?}: check spec.leafUserId (it is immutable: delete this TrimbleConnection \
                 and create one with the right id), or the Leaf account and API URL in use",
                user(f)
            );
            Transition::new(
                next,
                Outcome::new(Reason::LeafUserNotFound, message),
                Next::Person,
            )
        }
        (Effect::NotApplied, LeafError::Rejected { .. }) => {
            // Leaf refused these values: nothing was created, and sending them again would be
            // refused again. Remember them as used until the Secret changes.
            next.pending_create = None;
            forget_credential(&mut next);
            next.secret_fingerprint = Some(pending.secret_fingerprint.clone());
            next.adopted_secret_fingerprint = None;
            remember_sent(&mut next, pending);
            let message = format!(
                "{error}. Put corrected values into Secret {:?} (usually a new refresh token from the grower's \
                 Trimble authorization)",
                secret_name(f)
            );
            Transition::new(
                next,
                Outcome::new(Reason::CredentialRejected, message),
                Next::Person,
            )
        }
        (Effect::NotApplied, _) => {
            // Refused or never sent (login refused, 429, 408, the send deadline passed ...):
            // nothing to resolve later.
            next.pending_create = None;
            leaf_failed(next, &error, doing)
        }
    }
}

/// The create recorded in `pending`, which was in doubt, made `credential`: it is ours, recorded
/// without a POST.
pub fn resume(
    f: &Facts,
    current: &TrimbleConnectionStatus,
    pending: &PendingCreate,
    credential: Credential,
    events: Option<Result<Vec<CredentialEvent>, LeafError>>,
) -> Transition {
    let next = super::base(f, current);
    let rotating = next.credential_id.is_some();
    record(f, next, pending, credential, events, rotating, true)
}

/// Records `credential`, made by the POST of `pending`, as ours, and announces it.
fn record(
    f: &Facts,
    mut next: TrimbleConnectionStatus,
    pending: &PendingCreate,
    credential: Credential,
    events: Option<Result<Vec<CredentialEvent>, LeafError>>,
    rotating: bool,
    resumed: bool,
) -> Transition {
    let replaced = next
        .credential_id
        .clone()
        .filter(|old| *old != credential.id);
    next.pending_create = None;
    next.secret_fingerprint = Some(pending.secret_fingerprint.clone());
    next.adopted_secret_fingerprint = None;
    remember_sent(&mut next, pending);
    // Events belong to a credential; a new one starts with none.
    next.recent_events.clear();
    fill(&mut next, &credential);
    next.credential_source = Some(crate::crd::CredentialSource::Secret);
    // For the read-lag allowance: a GET soon after may still show nothing, or the old one.
    next.last_create = Some(LastCreate {
        confirmed_at: f.now.to_string(),
        replaced_credential_id: replaced.clone(),
    });
    let mut leaf_events = Vec::new();
    // Read right after the POST, the events of the new credential are recorded with it; when the
    // read failed, the next check reads them.
    if let Some(Ok(events)) = events {
        let merged = status::merge_events(&[], &events);
        next.recent_events = merged.recent;
        leaf_events = merged.new_errors;
    }
    let outcome = status::credential_outcome(&credential.status, secret_name(f), SecretNote::Sent);
    // The Secret changed while the create was in doubt: rotate at once.
    let secret_moved = f
        .secret
        .fingerprint()
        .is_some_and(|now| now != pending.secret_fingerprint);
    let mut transition = Transition::new(
        next,
        outcome,
        if secret_moved {
            Next::Soon
        } else {
            Next::Check
        },
    );
    transition.leaf_events = leaf_events;
    let suffix = if resumed {
        " (found after an interruption; not created again)"
    } else {
        ""
    };
    match replaced.filter(|_| rotating) {
        Some(old) => transition.notice(
            Reason::Rotated,
            "Rotate",
            format!(
                "Rotated the Trimble credential of Leaf user {} after Secret {:?} changed: deleted {old}, created {}{suffix}",
                user(f),
                secret_name(f),
                credential.id
            ),
        ),
        None => transition.notice(
            Reason::Created,
            "Create",
            format!(
                "Created Trimble credential {} for Leaf user {}{suffix}",
                credential.id,
                user(f)
            ),
        ),
    }
}

/// When the window of the create recorded in `pending` closes, as text.
pub fn window_end(f: &Facts, pending: &PendingCreate) -> String {
    f.windows.create_send_by(pending).map_or_else(
        || "now".to_string(),
        |send_by| f.windows.landing_end(send_by).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::super::testing::*;
    use super::*;
    use crate::leaf::NotSent;
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    fn answered(code: u16, body: &str) -> LeafError {
        LeafError::from_answer(
            StatusCode::from_u16(code).expect("code"),
            &HeaderMap::new(),
            body,
            true,
        )
    }

    fn intent_of(f: &Facts) -> (TrimbleConnectionStatus, PendingCreate) {
        let (t, pending) = intent(f, &f.status, false).expect("a complete Secret");
        (t.status, pending)
    }

    #[test]
    fn the_intent_records_what_is_sent_and_its_send_deadline() {
        let f = facts();
        let (status, pending) = intent_of(&f);
        assert_eq!(status.pending_create.as_ref(), Some(&pending));
        assert_eq!(pending.started_at, now().to_string());
        assert_eq!(
            pending.send_by.as_deref(),
            Some(windows().send_by(now()).to_string().as_str())
        );
        assert_eq!(pending.secret_fingerprint, FP_A);
        assert!(pending.refresh_token_fingerprint.is_some());
        let without_secret = Facts {
            secret: missing_secret(),
            ..facts()
        };
        assert!(intent(&without_secret, &without_secret.status, false).is_none());
    }

    #[test]
    fn after_create_table() {
        enum Expect {
            /// Recorded as ours.
            Ours,
            /// Still in doubt: the intent stays.
            InDoubt,
            /// Not applied: the intent is cleared; the token counts as sent or not.
            Cleared {
                reason: Reason,
                token_spent: bool,
                next: Next,
            },
        }
        let rows: Vec<(&str, Result<Credential, LeafError>, Expect)> = vec![
            (
                "201",
                Ok(cred_created("new", CLIENT_A, "OK", 0)),
                Expect::Ours,
            ),
            (
                "201 with an unreadable body: applied, found by the next GET",
                Err(LeafError::InvalidResponse { detail: "x".into() }),
                Expect::InDoubt,
            ),
            (
                "503 (maybe applied)",
                Err(answered(503, "")),
                Expect::InDoubt,
            ),
            ("500", Err(answered(500, "")), Expect::InDoubt),
            (
                "timeout",
                Err(LeafError::Unavailable {
                    status: None,
                    retry_after: None,
                    sent: true,
                    detail: "timed out".into(),
                }),
                Expect::InDoubt,
            ),
            (
                "409: this POST made nothing; the token may be spent",
                Err(answered(409, "")),
                Expect::Cleared {
                    reason: Reason::Creating,
                    token_spent: true,
                    next: Next::Backoff { retry_after: None },
                },
            ),
            (
                "400 refresh token refused",
                Err(answered(400, "Invalid refresh token")),
                Expect::Cleared {
                    reason: Reason::CredentialRejected,
                    token_spent: true,
                    next: Next::Person,
                },
            ),
            (
                "404 no such user",
                Err(answered(404, "")),
                Expect::Cleared {
                    reason: Reason::LeafUserNotFound,
                    token_spent: false,
                    next: Next::Person,
                },
            ),
            (
                "429",
                Err(answered(429, "")),
                Expect::Cleared {
                    reason: Reason::LeafUnavailable,
                    token_spent: false,
                    next: Next::Backoff { retry_after: None },
                },
            ),
            (
                "401 after the re-login",
                Err(answered(401, "")),
                Expect::Cleared {
                    reason: Reason::LeafAuthFailed,
                    token_spent: false,
                    next: Next::Backoff { retry_after: None },
                },
            ),
            (
                "not sent: its deadline passed",
                Err(LeafError::NotSent(NotSent::DeadlinePassed)),
                Expect::Cleared {
                    reason: Reason::LeafUnavailable,
                    token_spent: false,
                    next: Next::Backoff { retry_after: None },
                },
            ),
        ];
        for (name, answer, expect) in rows {
            let f = facts();
            let (with_intent, pending) = intent_of(&f);
            let t = after(&f, with_intent.clone(), &pending, answer, None, false);
            match expect {
                Expect::Ours => {
                    assert_eq!(t.status.credential_id.as_deref(), Some("new"), "{name}");
                    assert!(t.status.pending_create.is_none(), "{name}");
                    assert_eq!(t.outcome.reason, Reason::CredentialValid, "{name}");
                    assert_eq!(t.next, Next::Check, "{name}");
                    assert!(t.status.last_create.is_some(), "{name}: read lag starts");
                    assert_eq!(t.notices[0].reason, Reason::Created, "{name}");
                }
                Expect::InDoubt => {
                    assert_eq!(t.status.pending_create, Some(pending.clone()), "{name}");
                    assert_eq!(t.outcome.reason, Reason::LeafUnavailable, "{name}");
                    assert!(
                        t.outcome.message.contains("may still take effect"),
                        "{name}"
                    );
                    assert!(t.notices.is_empty(), "{name}");
                }
                Expect::Cleared {
                    reason,
                    token_spent,
                    next,
                } => {
                    assert!(t.status.pending_create.is_none(), "{name}");
                    assert_eq!(t.outcome.reason, reason, "{name}: {}", t.outcome.message);
                    assert_eq!(t.next, next, "{name}");
                    let token = pending.refresh_token_fingerprint.clone().expect("token");
                    assert_eq!(
                        t.status.sent_refresh_tokens.contains(&token),
                        token_spent,
                        "{name}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_409_ends_the_doubt_so_an_older_same_app_credential_is_never_taken_as_ours() {
        // Issue 16, item 6: the credential Leaf holds predates our POST's arrival (that is why it
        // answered 409); the next GET must see it as foreign, under every policy.
        let f = facts();
        let (with_intent, pending) = intent_of(&f);
        let t = after(
            &f,
            with_intent,
            &pending,
            Err(answered(409, "")),
            None,
            false,
        );
        let later = Facts {
            status: t.status,
            ..facts()
        };
        let mut never = later.clone();
        never.spec.adoption_policy = crate::crd::AdoptionPolicy::Never;
        let theirs = cred_created("theirs", CLIENT_A, "OK", 60);
        assert!(matches!(
            crate::controller::decide::choose(&never, Some(&theirs)),
            crate::controller::decide::Step::Foreign { .. }
        ));
    }

    #[test]
    fn a_new_intent_keeps_the_token_of_an_unresolved_one_as_sent() {
        // Found by the simulation: a create whose doubt closed unresolved, then a create of new
        // values; the Secret later went back to the first token, which Leaf had used.
        let mut f = facts();
        f.status = in_doubt(status_owning(None), FP_A, CLIENT_A, 300);
        let earlier = f.status.pending_create.clone().map(|p| PendingCreate {
            refresh_token_fingerprint: Some(refresh_hash(TOKEN_A)),
            ..p
        });
        f.status.pending_create = earlier;
        f.secret = present_with_token(FP_B, CLIENT_A, TOKEN_B);
        let (t, pending) = intent(&f, &f.status, false).expect("intent");
        assert_eq!(
            pending.refresh_token_fingerprint.as_deref(),
            Some(refresh_hash(TOKEN_B).as_str())
        );
        assert!(
            t.status
                .sent_refresh_tokens
                .contains(&refresh_hash(TOKEN_A))
        );
    }

    #[test]
    fn a_rotation_records_what_it_replaced_and_reads_events_with_the_create() {
        let mut f = facts();
        f.status = sent(status_owning(Some("old")), FP_B);
        let (t, pending) = intent(&f, &f.status, true).expect("intent");
        assert_eq!(t.outcome.reason, Reason::Rotating);
        let event = CredentialEvent {
            id: "e1".into(),
            time: Some(now().to_string()),
            status_code: Some(200),
            summary: "token refresh".into(),
        };
        let done = after(
            &f,
            t.status,
            &pending,
            Ok(cred_created("new", CLIENT_A, "OK", 0)),
            Some(Ok(vec![event])),
            true,
        );
        assert_eq!(
            done.status
                .last_create
                .as_ref()
                .and_then(|l| l.replaced_credential_id.as_deref()),
            Some("old")
        );
        assert_eq!(
            done.status.recent_events.len(),
            1,
            "no write owed to the first check"
        );
        assert_eq!(done.notices[0].reason, Reason::Rotated);
    }
}
