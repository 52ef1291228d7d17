//! The chooser: from what Leaf's GET showed, the single step this reconcile performs.
//!
//! Every row of the state table in [`super`] is one arm here, in [`resolve_doubt`] or in
//! [`settling`]; the executors in `controller::engine::steps` do exactly what the step says and
//! nothing else.

use std::time::Duration;

use super::mutation::{self, Mutation};
use super::reauth::{self, LinkStep};
use super::{CLOCK_SKEW, Facts, SecretFact};
use crate::controller::decide::windows::plus;
use crate::crd::{AdoptionPolicy, CredentialSource, PendingCreate};
use crate::leaf::{Credential, CredentialStatus};
use crate::secret::client_id_fingerprint;

/// What one reconcile does after the GET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// POST the Secret's values. `replacing`: the credential our status still names, which is
    /// gone (deleted by a rotation, or vanished).
    Create { replacing: Option<String> },
    /// The in-doubt POST recorded in `pending` made `credential`: record it as ours, no POST.
    Resume {
        credential: Credential,
        pending: PendingCreate,
    },
    /// A POST may still create a credential: nothing is sent for `left`.
    AwaitInDoubt { left: Duration },
    /// A DELETE of ours may still land: nothing is sent for `left` (the gate normally says so
    /// before any read).
    AwaitDelete { left: Duration },
    /// Leaf's read does not show our credential within the read-lag allowance after our last
    /// create (nothing, what it replaced, or a state older still): look again after `left`,
    /// conclude nothing.
    AwaitSettle { left: Duration },
    /// Take over a foreign credential whose clientId matches the Secret's (AdoptMatching).
    Adopt { credential: Credential },
    /// DELETE a foreign credential and create ours (adoptionPolicy Replace).
    Replace { credential: Credential },
    /// DELETE our credential and create one from the Secret's new values.
    Rotate { credential: Credential },
    /// Our credential, nothing to change: copy its status (and events) into ours.
    Check {
        credential: Credential,
        fetch_events: bool,
    },
    /// Nothing can be created from the Secret: its values were sent already (a refresh token works
    /// once) or it is missing. `vanished`: our credential that is gone from Leaf. `unresolved`:
    /// the Secret's token went out in a create whose answer never came and whose credential no
    /// read showed: Leaf may have used it, so it is never sent again.
    NeedNewValues {
        vanished: Option<String>,
        unresolved: bool,
    },
    /// A credential that is not ours and that adoptionPolicy leaves alone: Conflict.
    Foreign {
        credential: Credential,
        why: ForeignWhy,
    },
    /// Deciding (adopt or replace `credential`) or creating needs the Secret, which is missing or
    /// invalid.
    NeedSecret { credential: Option<Credential> },
    /// A step about the grower's Magic Link (`reauthorization`), see [`super::reauth`].
    Link(LinkStep),
}

/// Why a foreign credential is left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForeignWhy {
    /// adoptionPolicy Never.
    PolicyNever,
    /// AdoptMatching, and its clientId is not the Secret's (or Leaf did not say).
    ClientIdDiffers,
    /// Replace, but the Secret holds nothing that may be sent (its refresh token was sent
    /// before): deleting it would leave nothing in its place.
    NothingToSend,
    /// The resource has no credentials Secret (it connects through the grower's Magic Link), and
    /// the credential did not come from that link.
    NotFromGrower,
}

/// What the in-doubt create (if any) turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Doubt {
    /// Nothing is in doubt.
    None,
    /// The POST recorded in the pending create made this credential.
    Landed(Credential),
    /// It may still create one for this long.
    Open(Duration),
    /// The window closed without a credential of it: nothing of that POST exists.
    NothingLanded,
}

/// The step for what Leaf showed (`seen`: the Leaf user's credential, None for 404).
pub fn choose(f: &Facts, seen: Option<&Credential>) -> Step {
    if let Some(pending) = &f.status.pending_delete {
        let left = f.windows.delete_left(pending, f.now);
        if !left.is_zero() {
            return Step::AwaitDelete { left };
        }
        // Closed: the DELETE can no longer land. The read just made shows its result, and the
        // rows below decide from it (the executors clear the record).
    }
    // A create whose doubt closed without a credential of its own in sight may still have used
    // its refresh token: its credential could have been made and removed (or replaced) before
    // any read saw it. Leaf offers no proof that it did not, so that token is never sent again.
    let suspect = match resolve_doubt(f, seen) {
        Doubt::Landed(credential) => {
            if let Some(pending) = f.status.pending_create.clone() {
                return Step::Resume {
                    credential,
                    pending,
                };
            }
            false
        }
        Doubt::Open(left) => return Step::AwaitInDoubt { left },
        Doubt::NothingLanded => {
            !mutation::on(Mutation::ResendUnresolved)
                && f.status
                    .pending_create
                    .as_ref()
                    .is_some_and(|pending| sent_in(f, pending))
        }
        Doubt::None => false,
    };
    let sendable = !f.token_sent_before() && !suspect;
    if let Some(left) = settling(f, seen) {
        return Step::AwaitSettle { left };
    }
    let step = credential_step(f, seen, sendable, suspect);
    // The grower's link comes in only where the credential rows would send nothing new: where they
    // need new values (or there is no Secret at all), or our credential is dead.
    let new_values = matches!(
        step,
        Step::Create { .. } | Step::Rotate { .. } | Step::Replace { .. }
    );
    let needs_values = matches!(
        step,
        Step::NeedNewValues { .. } | Step::NeedSecret { credential: None }
    );
    match reauth::link_step(f, seen, new_values, needs_values) {
        Some(link) => Step::Link(link),
        None => step,
    }
}

/// The credential rows of the state table (everything but the doubt and the link rows).
fn credential_step(f: &Facts, seen: Option<&Credential>, sendable: bool, suspect: bool) -> Step {
    let owned = f.status.credential_id.as_deref();
    match (owned, seen) {
        (None, None) => create_or_not(f, None, sendable, suspect),
        (Some(ours), None) => create_or_not(f, Some(ours.to_string()), sendable, suspect),
        (Some(ours), Some(credential))
            if credential.id == ours || mutation::on(Mutation::AnyCredentialIsOurs) =>
        {
            // A credential the grower made through our Magic Link is never replaced by the
            // Secret's values while it works: the Secret was not what made it.
            let from_link = f.status.credential_source == Some(CredentialSource::MagicLink)
                && credential.status.is_ok();
            if (secret_changed(f) || replace_dead_adopted(f, credential)) && sendable && !from_link
            {
                Step::Rotate {
                    credential: credential.clone(),
                }
            } else {
                Step::Check {
                    credential: credential.clone(),
                    fetch_events: f.events_every_check
                        || f.forced
                        || f.status.credential_status.as_deref() != Some(&credential.raw_status),
                }
            }
        }
        (_, Some(credential)) => foreign(f, credential, sendable),
    }
}

/// Whether the Secret's refresh token is the one `pending` sent (a record of an older version
/// has no token hash: then its values as a whole).
fn sent_in(f: &Facts, pending: &PendingCreate) -> bool {
    match (&f.secret, &pending.refresh_token_fingerprint) {
        (
            SecretFact::Present {
                refresh_token_hash, ..
            },
            Some(sent),
        ) => refresh_token_hash == sent,
        (SecretFact::Present { fingerprint, .. }, None) => {
            *fingerprint == pending.secret_fingerprint
        }
        _ => false,
    }
}

/// Whether the pending create (if any) landed, may still land, or is over.
pub fn resolve_doubt(f: &Facts, seen: Option<&Credential>) -> Doubt {
    let Some(pending) = &f.status.pending_create else {
        return Doubt::None;
    };
    if let Some(credential) = seen
        && made_by(f, pending, credential)
    {
        return Doubt::Landed(credential.clone());
    }
    let left = f.windows.create_left(pending, f.now);
    if left.is_zero() {
        Doubt::NothingLanded
    } else {
        Doubt::Open(left)
    }
}

/// `Some(left)` when what Leaf shows may be a read that lags behind our last confirmed create:
/// anything but the credential it made (nothing, the one it replaced, or what was there before
/// that, which the read may show too). Within the read-lag allowance none of it is taken as the
/// truth: not "ours is gone", not "foreign".
pub fn settling(f: &Facts, seen: Option<&Credential>) -> Option<Duration> {
    if mutation::on(Mutation::NoReadLag) {
        return None;
    }
    let last = f.status.last_create.as_ref()?;
    let left = f.windows.settling_left(Some(last), f.now);
    if left.is_zero() {
        return None;
    }
    // Our dead credential, deleted before the grower's link (a withdrawal: the record names the
    // credential the status still names): nothing is the truth, and it is what lags.
    let owned = f.status.credential_id.as_deref();
    let withdrawn = owned.is_some() && last.replaced_credential_id.as_deref() == owned;
    let lagging = match seen {
        None => owned.is_some() && !withdrawn,
        Some(credential) => owned != Some(credential.id.as_str()) || withdrawn,
    };
    lagging.then_some(left)
}

/// Whether `credential` is the one the POST in `pending` made: not the one our status already
/// names (the one being replaced), with the clientId that POST sent (the Secret may have changed
/// since), and created while that POST could take effect (from its start to the close of its
/// window, each widened by the clock skew between Leaf and us).
///
/// Leaf offers nothing better: its answer to the POST was lost, and the credential's secrets it
/// echoes are the app's and the live tokens, not what we sent. A same-app credential someone else
/// made in those seconds is indistinguishable (docs/troubleshooting.md); a 409 answer, in
/// contrast, proves the POST made nothing and ends the doubt before this rule is asked.
pub fn made_by(f: &Facts, pending: &PendingCreate, credential: &Credential) -> bool {
    if f.status.credential_id.as_deref() == Some(credential.id.as_str()) {
        return false;
    }
    let client_id_matches = match (&credential.client_id, &pending.client_id_fingerprint) {
        (Some(client_id), Some(sent)) => client_id_fingerprint(client_id) == *sent,
        // A pendingCreate written by an older version has no hash: the Secret's clientId now.
        (Some(client_id), None) => match &f.secret {
            SecretFact::Present { client_id_hash, .. } => {
                client_id_fingerprint(client_id) == *client_id_hash
            }
            _ => false,
        },
        // Leaf did not say: the creation time has to do.
        (None, _) => true,
    };
    let skew = jiff::SignedDuration::try_from(CLOCK_SKEW).unwrap_or_default();
    let in_window = match (
        credential.created_at(),
        pending.started_at.parse::<jiff::Timestamp>(),
    ) {
        (Some(created), Ok(started)) => {
            let not_older = created >= started - skew;
            let not_later = f
                .windows
                .create_send_by(pending)
                .is_none_or(|send_by| created <= plus(f.windows.landing_end(send_by), CLOCK_SKEW));
            (not_older && not_later) || mutation::on(Mutation::MadeByIgnoresTime)
        }
        _ => true,
    };
    client_id_matches && in_window
}

/// The Secret holds values neither sent to Leaf nor found at adoption: a person changed it.
fn secret_changed(f: &Facts) -> bool {
    match f.secret.fingerprint() {
        Some(fingerprint) => {
            f.status.secret_fingerprint.as_deref() != Some(fingerprint)
                && f.status.adopted_secret_fingerprint.as_deref() != Some(fingerprint)
        }
        None => false,
    }
}

/// The Secret still holds the values found when `credential` was adopted (never sent by us).
fn holds_adopted_values(f: &Facts) -> bool {
    f.status.secret_fingerprint.is_none()
        && f.secret.fingerprint().is_some()
        && f.status.adopted_secret_fingerprint.as_deref() == f.secret.fingerprint()
}

/// An adopted credential that Leaf reports dead, with adoptionPolicy Replace: the Secret's values
/// (never sent by us) replace it.
fn replace_dead_adopted(f: &Facts, credential: &Credential) -> bool {
    f.spec.adoption_policy == AdoptionPolicy::Replace
        && holds_adopted_values(f)
        && matches!(
            credential.status,
            CredentialStatus::Unauthenticated | CredentialStatus::Invalid
        )
}

/// Nothing of ours in Leaf: create from the Secret if its values may be sent. `sendable`: its
/// refresh token was never sent (nor went out in a create that stayed unresolved: `unresolved`).
fn create_or_not(f: &Facts, replacing: Option<String>, sendable: bool, unresolved: bool) -> Step {
    let may_send = sendable
        && (secret_changed(f)
            || (holds_adopted_values(f) && f.spec.adoption_policy == AdoptionPolicy::Replace));
    if may_send {
        return Step::Create { replacing };
    }
    match (&f.secret, replacing) {
        // Nothing owned and no usable Secret: wait for one (the gate normally says so first).
        (
            SecretFact::Missing { .. } | SecretFact::Invalid { .. } | SecretFact::NotConfigured,
            None,
        ) => Step::NeedSecret { credential: None },
        (_, vanished) => Step::NeedNewValues {
            vanished,
            unresolved,
        },
    }
}

/// A credential that is not ours: adoptionPolicy decides. `sendable`: the Secret's refresh token
/// may be sent (never sent before, nor in a create whose outcome stayed unknown).
fn foreign(f: &Facts, credential: &Credential, sendable: bool) -> Step {
    let credential = credential.clone();
    match (f.spec.adoption_policy, &f.secret) {
        (AdoptionPolicy::Never, _) => Step::Foreign {
            credential,
            why: ForeignWhy::PolicyNever,
        },
        // Nothing to compare its clientId with, nothing to replace it with.
        (_, SecretFact::NotConfigured) => Step::Foreign {
            credential,
            why: ForeignWhy::NotFromGrower,
        },
        (AdoptionPolicy::AdoptMatching, SecretFact::Present { client_id_hash, .. }) => {
            let matches = credential
                .client_id
                .as_deref()
                .is_some_and(|id| client_id_fingerprint(id) == *client_id_hash);
            if matches {
                Step::Adopt { credential }
            } else {
                Step::Foreign {
                    credential,
                    why: ForeignWhy::ClientIdDiffers,
                }
            }
        }
        (AdoptionPolicy::Replace, SecretFact::Present { fingerprint, .. }) => {
            let sendable =
                sendable && f.status.secret_fingerprint.as_deref() != Some(fingerprint.as_str());
            if sendable {
                Step::Replace { credential }
            } else {
                Step::Foreign {
                    credential,
                    why: ForeignWhy::NothingToSend,
                }
            }
        }
        // Comparing clientIds, or creating ours after a DELETE, needs the Secret: never delete
        // what we could not replace.
        (_, SecretFact::Missing { .. } | SecretFact::Invalid { .. }) => Step::NeedSecret {
            credential: Some(credential),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::crd::AdoptionPolicy::{Never, Replace};
    use crate::crd::TrimbleConnectionStatus;

    struct Row {
        name: &'static str,
        facts: Facts,
        seen: Option<Credential>,
        expect: fn(&Step) -> bool,
    }

    fn row(
        name: &'static str,
        facts: Facts,
        seen: Option<Credential>,
        expect: fn(&Step) -> bool,
    ) -> Row {
        Row {
            name,
            facts,
            seen,
            expect,
        }
    }

    #[test]
    fn choose_table() {
        let owned = |id| sent(status_owning(Some(id)), FP_A);
        let adopted = |id| Facts {
            status: adopted_with(status_owning(Some(id)), FP_A),
            ..facts()
        };
        let replace = |mut f: Facts| {
            f.spec.adoption_policy = Replace;
            f
        };
        let never = |mut f: Facts| {
            f.spec.adoption_policy = Never;
            f
        };
        let rows = vec![
            // --- first create
            row("nothing anywhere: create", facts(), None, |s| {
                matches!(s, Step::Create { replacing: None })
            }),
            row(
                "nothing in Leaf, the Secret's values were sent before: no POST",
                Facts {
                    status: sent(status_owning(None), FP_A),
                    ..facts()
                },
                None,
                |s| {
                    matches!(
                        s,
                        Step::NeedNewValues {
                            vanished: None,
                            unresolved: false
                        }
                    )
                },
            ),
            // --- item 1: a credential that is not ours is foreign
            row(
                "ours vanished and the grower reconnected elsewhere: foreign, by policy",
                Facts {
                    status: owned("ours"),
                    ..facts()
                },
                Some(cred("theirs", CLIENT_OTHER, "OK")),
                |s| matches!(s, Step::Foreign { why: ForeignWhy::ClientIdDiffers, credential } if credential.id == "theirs"),
            ),
            row(
                "ours replaced by one with our clientId: adopted, not silently claimed",
                Facts {
                    status: owned("ours"),
                    ..facts()
                },
                Some(cred("theirs", CLIENT_A, "OK")),
                |s| matches!(s, Step::Adopt { credential } if credential.id == "theirs"),
            ),
            row(
                "ours replaced, policy Never: Conflict",
                never(Facts {
                    status: owned("ours"),
                    ..facts()
                }),
                Some(cred("theirs", CLIENT_A, "OK")),
                |s| {
                    matches!(
                        s,
                        Step::Foreign {
                            why: ForeignWhy::PolicyNever,
                            ..
                        }
                    )
                },
            ),
            row(
                "foreign, AdoptMatching, Secret missing: wait for the Secret, delete nothing",
                Facts {
                    secret: missing_secret(),
                    ..facts()
                },
                Some(cred("theirs", CLIENT_A, "OK")),
                |s| {
                    matches!(
                        s,
                        Step::NeedSecret {
                            credential: Some(_)
                        }
                    )
                },
            ),
            row(
                "foreign, Replace: replace it",
                replace(facts()),
                Some(cred("theirs", CLIENT_OTHER, "OK")),
                |s| matches!(s, Step::Replace { credential } if credential.id == "theirs"),
            ),
            row(
                "foreign, Replace, but the Secret's values were sent already: nothing deleted",
                replace(Facts {
                    status: sent(status_owning(Some("ours")), FP_A),
                    ..facts()
                }),
                Some(cred("theirs", CLIENT_OTHER, "OK")),
                |s| {
                    matches!(
                        s,
                        Step::Foreign {
                            why: ForeignWhy::NothingToSend,
                            ..
                        }
                    )
                },
            ),
            row(
                "doubt closed, a foreign one in Leaf, Replace: the doubtful token replaces nothing",
                replace(Facts {
                    status: TrimbleConnectionStatus {
                        pending_create: in_doubt(status_owning(None), FP_A, CLIENT_A, 200)
                            .pending_create
                            .map(|p| PendingCreate {
                                refresh_token_fingerprint: Some(refresh_hash(TOKEN_A)),
                                ..p
                            }),
                        ..status_owning(None)
                    },
                    secret: present_with_token(FP_A, CLIENT_A, TOKEN_A),
                    ..facts()
                }),
                Some(cred("theirs", CLIENT_OTHER, "OK")),
                |s| {
                    matches!(
                        s,
                        Step::Foreign {
                            why: ForeignWhy::NothingToSend,
                            ..
                        }
                    )
                },
            ),
            row(
                "doubt closed, Leaf shows nothing: the token may have been used, never sent again",
                Facts {
                    status: TrimbleConnectionStatus {
                        pending_create: in_doubt(status_owning(None), FP_A, CLIENT_A, 200)
                            .pending_create
                            .map(|p| PendingCreate {
                                refresh_token_fingerprint: Some(refresh_hash(TOKEN_A)),
                                ..p
                            }),
                        ..status_owning(None)
                    },
                    secret: present_with_token(FP_A, CLIENT_A, TOKEN_A),
                    ..facts()
                },
                None,
                |s| {
                    matches!(
                        s,
                        Step::NeedNewValues {
                            vanished: None,
                            unresolved: true
                        }
                    )
                },
            ),
            row(
                "doubt closed, Leaf shows nothing, the Secret has a new token since: create",
                Facts {
                    status: TrimbleConnectionStatus {
                        pending_create: in_doubt(status_owning(None), FP_A, CLIENT_A, 200)
                            .pending_create
                            .map(|p| PendingCreate {
                                refresh_token_fingerprint: Some(refresh_hash(TOKEN_A)),
                                ..p
                            }),
                        ..status_owning(None)
                    },
                    secret: present_with_token(FP_B, CLIENT_A, TOKEN_B),
                    ..facts()
                },
                None,
                |s| matches!(s, Step::Create { replacing: None }),
            ),
            row(
                "foreign, Replace, Secret invalid: nothing deleted",
                replace(Facts {
                    secret: SecretFact::Invalid {
                        message: "x".into(),
                    },
                    ..facts()
                }),
                Some(cred("theirs", CLIENT_OTHER, "OK")),
                |s| {
                    matches!(
                        s,
                        Step::NeedSecret {
                            credential: Some(_)
                        }
                    )
                },
            ),
            row(
                "foreign without a clientId, AdoptMatching: left alone",
                facts(),
                Some(Credential {
                    client_id: None,
                    ..cred("theirs", CLIENT_A, "OK")
                }),
                |s| {
                    matches!(
                        s,
                        Step::Foreign {
                            why: ForeignWhy::ClientIdDiffers,
                            ..
                        }
                    )
                },
            ),
            // --- ours
            row(
                "ours, unchanged: check with events",
                Facts {
                    status: owned("ours"),
                    ..facts()
                },
                Some(cred("ours", CLIENT_A, "OK")),
                |s| {
                    matches!(
                        s,
                        Step::Check {
                            fetch_events: true,
                            ..
                        }
                    )
                },
            ),
            row(
                "ours, unchanged, push mode, same status: check without events",
                Facts {
                    status: owned("ours"),
                    events_every_check: false,
                    ..facts()
                },
                Some(cred("ours", CLIENT_A, "OK")),
                |s| {
                    matches!(
                        s,
                        Step::Check {
                            fetch_events: false,
                            ..
                        }
                    )
                },
            ),
            row(
                "ours, push mode, status changed: check with events",
                Facts {
                    status: owned("ours"),
                    events_every_check: false,
                    ..facts()
                },
                Some(cred("ours", CLIENT_A, "UNAUTHENTICATED")),
                |s| {
                    matches!(
                        s,
                        Step::Check {
                            fetch_events: true,
                            ..
                        }
                    )
                },
            ),
            row(
                "ours, Secret reverted to a token sent before: never rotate to it",
                Facts {
                    status: TrimbleConnectionStatus {
                        sent_refresh_tokens: vec![refresh_hash(TOKEN_B), refresh_hash(TOKEN_A)],
                        ..owned("ours")
                    },
                    secret: present_with_token(FP_B, CLIENT_A, TOKEN_B),
                    ..facts()
                },
                Some(cred("ours", CLIENT_A, "OK")),
                |s| matches!(s, Step::Check { .. }),
            ),
            row(
                "ours vanished, Secret holds a token sent before: no POST",
                Facts {
                    status: TrimbleConnectionStatus {
                        sent_refresh_tokens: vec![refresh_hash(TOKEN_B)],
                        ..owned("ours")
                    },
                    secret: present_with_token(FP_B, CLIENT_A, TOKEN_B),
                    ..facts()
                },
                None,
                |s| {
                    matches!(
                        s,
                        Step::NeedNewValues {
                            vanished: Some(_),
                            ..
                        }
                    )
                },
            ),
            row(
                "ours, Secret changed: rotate",
                Facts {
                    status: owned("ours"),
                    secret: present(FP_B, CLIENT_A),
                    ..facts()
                },
                Some(cred("ours", CLIENT_A, "OK")),
                |s| matches!(s, Step::Rotate { credential } if credential.id == "ours"),
            ),
            // --- item 7: checking needs no Secret
            row(
                "ours, Secret deleted: check goes on",
                Facts {
                    status: owned("ours"),
                    secret: missing_secret(),
                    ..facts()
                },
                Some(cred("ours", CLIENT_A, "OK")),
                |s| matches!(s, Step::Check { .. }),
            ),
            row(
                "ours vanished, Secret unchanged: no re-POST of a spent token",
                Facts {
                    status: owned("ours"),
                    ..facts()
                },
                None,
                |s| matches!(s, Step::NeedNewValues { vanished: Some(id), .. } if id == "ours"),
            ),
            row(
                "ours vanished, Secret has new values: create",
                Facts {
                    status: owned("ours"),
                    secret: present(FP_B, CLIENT_A),
                    ..facts()
                },
                None,
                |s| matches!(s, Step::Create { replacing: Some(id) } if id == "ours"),
            ),
            // --- item 6: adoption records no sent values
            row(
                "adopted and healthy, Secret as adopted: check, never rotate",
                adopted("theirs"),
                Some(cred("theirs", CLIENT_A, "OK")),
                |s| matches!(s, Step::Check { .. }),
            ),
            row(
                "adopted and dead, AdoptMatching: check (the message says what to do)",
                adopted("theirs"),
                Some(cred("theirs", CLIENT_A, "UNAUTHENTICATED")),
                |s| matches!(s, Step::Check { .. }),
            ),
            row(
                "adopted and dead, Replace: the Secret's never-sent values replace it",
                replace(adopted("theirs")),
                Some(cred("theirs", CLIENT_A, "UNAUTHENTICATED")),
                |s| matches!(s, Step::Rotate { .. }),
            ),
            row(
                "adopted and healthy, Replace: left alone",
                replace(adopted("theirs")),
                Some(cred("theirs", CLIENT_A, "OK")),
                |s| matches!(s, Step::Check { .. }),
            ),
            row(
                "adopted, Secret changed after adoption: rotate",
                Facts {
                    secret: present(FP_B, CLIENT_A),
                    ..adopted("theirs")
                },
                Some(cred("theirs", CLIENT_A, "OK")),
                |s| matches!(s, Step::Rotate { .. }),
            ),
            // --- items 2 and 3: a create in doubt
            row(
                "in doubt, GET 404, window open: wait, no second POST",
                Facts {
                    status: in_doubt(status_owning(None), FP_A, CLIENT_A, 5),
                    ..facts()
                },
                None,
                |s| matches!(s, Step::AwaitInDoubt { left } if *left == CREATE_DOUBT - Duration::from_secs(5)),
            ),
            row(
                "in doubt (a record without token hash), GET 404, window closed: never sent again",
                Facts {
                    status: in_doubt(status_owning(None), FP_A, CLIENT_A, 200),
                    ..facts()
                },
                None,
                |s| {
                    matches!(
                        s,
                        Step::NeedNewValues {
                            unresolved: true,
                            ..
                        }
                    )
                },
            ),
            row(
                "in doubt, the POST's credential appeared: resume, no POST",
                Facts {
                    status: in_doubt(status_owning(None), FP_A, CLIENT_A, 5),
                    ..facts()
                },
                Some(cred_created("new", CLIENT_A, "OK", 4)),
                |s| matches!(s, Step::Resume { credential, .. } if credential.id == "new"),
            ),
            row(
                "in doubt, a foreign one appeared (409 case): wait, it is not someone else's yet",
                Facts {
                    status: in_doubt(status_owning(None), FP_A, CLIENT_A, 5),
                    ..facts()
                },
                Some(cred("theirs", CLIENT_OTHER, "OK")),
                |s| matches!(s, Step::AwaitInDoubt { .. }),
            ),
            row(
                "in doubt, window closed, foreign one: policy decides",
                never(Facts {
                    status: in_doubt(status_owning(None), FP_A, CLIENT_A, 200),
                    ..facts()
                }),
                Some(cred("theirs", CLIENT_OTHER, "OK")),
                |s| matches!(s, Step::Foreign { .. }),
            ),
            row(
                "in doubt, a same-clientId credential older than the POST: not ours",
                never(Facts {
                    status: in_doubt(status_owning(None), FP_A, CLIENT_A, 200),
                    ..facts()
                }),
                Some(cred_created("old", CLIENT_A, "OK", 3600)),
                |s| matches!(s, Step::Foreign { .. }),
            ),
            row(
                "rotation in doubt, the old one still shown: wait",
                Facts {
                    status: in_doubt(sent(status_owning(Some("old")), FP_A), FP_B, CLIENT_A, 5),
                    secret: present(FP_B, CLIENT_A),
                    ..facts()
                },
                Some(cred("old", CLIENT_A, "OK")),
                |s| matches!(s, Step::AwaitInDoubt { .. }),
            ),
            row(
                "rotation's create unresolved, the old one still shown: its token is not sent again",
                Facts {
                    status: in_doubt(sent(status_owning(Some("old")), FP_A), FP_B, CLIENT_A, 200),
                    secret: present(FP_B, CLIENT_A),
                    ..facts()
                },
                Some(cred("old", CLIENT_A, "OK")),
                |s| matches!(s, Step::Check { credential, .. } if credential.id == "old"),
            ),
            row(
                "rotation in doubt, the new one appeared: resume",
                Facts {
                    status: in_doubt(sent(status_owning(Some("old")), FP_A), FP_B, CLIENT_A, 5),
                    secret: present(FP_B, CLIENT_A),
                    ..facts()
                },
                Some(cred_created("new", CLIENT_A, "OK", 2)),
                |s| matches!(s, Step::Resume { credential, .. } if credential.id == "new"),
            ),
            row(
                "in doubt after the Secret changed: the POST's clientId decides",
                Facts {
                    status: in_doubt(status_owning(None), FP_A, CLIENT_A, 5),
                    secret: present(FP_B, CLIENT_OTHER),
                    ..facts()
                },
                Some(cred_created("new", CLIENT_A, "OK", 1)),
                |s| matches!(s, Step::Resume { .. }),
            ),
        ];
        for r in rows {
            let step = choose(&r.facts, r.seen.as_ref());
            assert!((r.expect)(&step), "{}: got {step:?}", r.name);
        }
    }

    #[test]
    fn an_unreadable_start_time_closes_the_window() {
        let mut status = in_doubt(status_owning(None), FP_A, CLIENT_A, 5);
        if let Some(pending) = status.pending_create.as_mut() {
            pending.started_at = "garbage".into();
            pending.send_by = Some("garbage".into());
        }
        let f = Facts { status, ..facts() };
        assert!(
            matches!(
                choose(&f, None),
                Step::NeedNewValues {
                    unresolved: true,
                    ..
                }
            ),
            "closed at once, and its values are never sent again"
        );
    }

    #[test]
    fn a_same_app_credential_created_after_the_window_is_not_the_pending_posts() {
        // The window of a create started 400 s ago closed 310 s ago (190 s ago with the clock
        // skew allowed): a credential created 30 s ago was made by someone else, whatever its
        // clientId.
        let mut f = Facts {
            status: in_doubt(status_owning(None), FP_A, CLIENT_A, 400),
            ..facts()
        };
        f.spec.adoption_policy = Never;
        let pending = f.status.pending_create.clone().expect("pending");
        let late = cred_created("late", CLIENT_A, "OK", 30);
        assert!(!made_by(&f, &pending, &late));
        assert!(matches!(choose(&f, Some(&late)), Step::Foreign { .. }));
        let in_time = cred_created("ours", CLIENT_A, "OK", 350);
        assert!(made_by(&f, &pending, &in_time));
    }

    #[test]
    fn read_lag_after_our_create_is_not_taken_as_the_truth() {
        let recent = |seconds| Facts {
            status: created_ago(sent(status_owning(Some("new")), FP_A), seconds, Some("old")),
            ..facts()
        };
        assert_eq!(
            choose(&recent(5), None),
            Step::AwaitSettle {
                left: READ_LAG - Duration::from_secs(5)
            },
            "a 404 right after our create is lag, not 'ours vanished'"
        );
        assert!(
            matches!(
                choose(&recent(5), Some(&cred("old", CLIENT_A, "OK"))),
                Step::AwaitSettle { .. }
            ),
            "the replaced credential, still shown, is lag, not foreign"
        );
        assert!(matches!(
            choose(&recent(5), Some(&cred("new", CLIENT_A, "OK"))),
            Step::Check { .. }
        ));
        assert!(
            matches!(
                choose(&recent(5), Some(&cred("other", CLIENT_OTHER, "OK"))),
                Step::AwaitSettle { .. }
            ),
            "a third credential may be an older state still: decided once reads caught up"
        );
        assert!(
            matches!(
                choose(&recent(30), Some(&cred("other", CLIENT_OTHER, "OK"))),
                Step::Foreign { .. }
            ),
            "after the allowance it is what Leaf holds"
        );
        assert!(
            matches!(
                choose(&recent(60), None),
                Step::NeedNewValues {
                    vanished: Some(_),
                    ..
                }
            ),
            "after the allowance a 404 is believed"
        );
    }

    #[test]
    fn a_delete_in_doubt_holds_everything_and_is_forgotten_once_its_window_closed() {
        let rotating = |seconds| Facts {
            status: deleting(sent(status_owning(Some("old")), FP_A), "old", seconds),
            secret: present(FP_B, CLIENT_A),
            ..facts()
        };
        assert!(matches!(
            choose(&rotating(5), None),
            Step::AwaitDelete { .. }
        ));
        assert_eq!(
            choose(&rotating(200), None),
            Step::Create {
                replacing: Some("old".into())
            },
            "closed, and Leaf shows nothing: the DELETE landed, the rotation goes on"
        );
        assert!(
            matches!(
                choose(&rotating(200), Some(&cred("old", CLIENT_A, "OK"))),
                Step::Rotate { .. }
            ),
            "closed, the old one still there: it did not land, rotate again"
        );
    }
}
