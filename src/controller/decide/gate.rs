//! The gate: whether a reconcile calls Leaf at all, decided before any Leaf call.
//!
//! Most reconciles are triggered by our own status writes, by Secret changes that do not concern
//! Leaf yet, or arrive before the schedule says the next check is due: for all of those the gate
//! answers without a Leaf call, and usually without a write.

use std::time::Duration;

use super::{AccountFact, ConflictFact, Facts, Next, SecretFact, TIE_WINDOW, transitions};
use crate::controller::status::{self, Outcome};
use crate::reason::Reason;

/// How often the loser of a Leaf-user conflict looks at the stores again.
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(60);
/// How long a resource waits for a missing Secret before looking again on its own (the Secret
/// watch normally triggers much sooner, the moment the Secret appears).
pub const SECRET_NOT_FOUND_RECHECK: Duration = Duration::from_secs(300);
/// How soon a resource looks again while the stores are still syncing.
pub const SYNC_RECHECK: Duration = Duration::from_secs(1);

/// The gate's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// GET the credential from Leaf, then [`super::choose`].
    AskLeaf,
    /// No Leaf call: record `outcome` on the resource, then `next`.
    Report { outcome: Outcome, next: Next },
    /// No Leaf call and nothing to write: reconcile again after `requeue` (None: on a change).
    Quiet { requeue: Option<Duration> },
}

/// Whether to call Leaf, first matching row wins (see the table in [`super`]).
pub fn gate(f: &Facts) -> Gate {
    if f.spec.suspend {
        // Flux's convention: no Leaf calls and no changes; the annotation is not answered either.
        return report(
            Reason::Suspended,
            "spec.suspend is true: no Leaf calls and no changes until it is false",
            Next::AwaitChange,
        );
    }
    match &f.conflict {
        ConflictFact::NotSynced => {
            return Gate::Quiet {
                requeue: Some(SYNC_RECHECK),
            };
        }
        ConflictFact::LosesTo(winner) => {
            let message = format!(
                "Leaf user {} is already managed by the older TrimbleConnection {winner}; this one makes no \
                 change in Leaf while that one exists",
                f.spec.leaf_user_id
            );
            return report(Reason::Conflict, message, Next::Hold(CONFLICT_RECHECK));
        }
        ConflictFact::SecretSharedWith(older) => {
            let (name, key) = f
                .spec
                .credentials_secret_ref
                .as_ref()
                .map_or(("", ""), |s| {
                    (s.name.as_str(), s.refresh_token_key.as_str())
                });
            let message = format!(
                "Secret {name:?} (key {key:?}) also holds the refresh token of the older TrimbleConnection {older}, which is \
                 for another Leaf user; a Trimble refresh token works only once, so this one sends nothing to Leaf \
                 while that one uses the Secret. Give this TrimbleConnection a Secret of its own"
            );
            return report(Reason::Conflict, message, Next::Hold(CONFLICT_RECHECK));
        }
        ConflictFact::Clear => {}
    }
    if !f.owns_anything()
        && let Some(age) = f.age
        && age < TIE_WINDOW
    {
        return Gate::Quiet {
            requeue: Some(TIE_WINDOW - age),
        };
    }
    // Leaf's DELETE names the user, not the credential: while one of ours may still land, nothing
    // is sent for the user (not even a read: it could not resolve the doubt before the window
    // closes). A forced reconcile still gets its answer.
    if let Some(pending) = &f.status.pending_delete {
        let left = f.windows.delete_left(pending, f.now);
        if !left.is_zero() {
            if f.forced {
                return Gate::Report {
                    outcome: transitions::delete::landing_outcome(f, pending),
                    next: Next::Hold(left),
                };
            }
            return Gate::Quiet {
                requeue: Some(left),
            };
        }
    }
    if let AccountFact::Unusable { outcome, next } = &f.account {
        return Gate::Report {
            outcome: outcome.clone(),
            next: next.clone(),
        };
    }
    // The Secret is needed only to create or rotate: a resource that owns a credential keeps
    // checking it without one (the refresh token in it was spent bootstrap material anyway).
    if !f.owns_anything() {
        match &f.secret {
            SecretFact::Missing { message } => {
                return report(
                    Reason::SecretNotFound,
                    format!(
                        "{message}; waiting for it (the operator proceeds as soon as it is created)"
                    ),
                    Next::Hold(SECRET_NOT_FOUND_RECHECK),
                );
            }
            SecretFact::Invalid { message } => {
                let keys = f.spec.credentials_secret_ref.clone().unwrap_or_else(|| {
                    crate::crd::CredentialsSecretRef {
                        name: String::new(),
                        client_id_key: crate::crd::DEFAULT_CLIENT_ID_KEY.to_string(),
                        client_secret_key: crate::crd::DEFAULT_CLIENT_SECRET_KEY.to_string(),
                        refresh_token_key: crate::crd::DEFAULT_REFRESH_TOKEN_KEY.to_string(),
                    }
                });
                return report(
                    Reason::SecretInvalid,
                    format!(
                        "{message}: it needs the Trimble application's client ID and secret and the grower's refresh \
                         token (keys {:?}, {:?}, {:?})",
                        keys.client_id_key, keys.client_secret_key, keys.refresh_token_key
                    ),
                    // The Secret watch brings the fix; no need to look on our own.
                    Next::AwaitChange,
                );
            }
            // No Secret at all: the grower connects through a Magic Link (the chooser decides).
            SecretFact::Present { .. } | SecretFact::NotConfigured => {}
        }
    }
    if refused_already(f) {
        // Sending them again cannot help, and a refresh token must never be sent twice; a forced
        // reconcile still gets its answer (observedGeneration, lastHandledReconcileAt).
        if f.forced {
            return report(
                Reason::CredentialRejected,
                status::ready_message(&f.status),
                Next::AwaitChange,
            );
        }
        return Gate::Quiet { requeue: None };
    }
    if !f.not_due_for.is_zero() && !f.forced {
        return Gate::Quiet {
            requeue: Some(f.not_due_for),
        };
    }
    Gate::AskLeaf
}

fn report(reason: Reason, message: impl Into<String>, next: Next) -> Gate {
    Gate::Report {
        outcome: Outcome::new(reason, message),
        next,
    }
}

/// No credential of ours, nothing in doubt, and Leaf refused exactly these values already.
fn refused_already(f: &Facts) -> bool {
    !f.owns_anything()
        && f.secret.fingerprint().is_some()
        && f.status.secret_fingerprint.as_deref() == f.secret.fingerprint()
        && status::ready_reason(&f.status) == Some(Reason::CredentialRejected)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn gate_table() {
        struct Row {
            name: &'static str,
            facts: Facts,
            expect: Expect,
        }
        enum Expect {
            AskLeaf,
            Report(Reason, Next),
            Quiet(Option<Duration>),
        }
        let rejected = with_reason(status_owning(None), Reason::CredentialRejected, FP_A);
        let rows = vec![
            Row {
                name: "suspended: no call, Suspended, no requeue",
                facts: Facts {
                    spec: spec_with(|s| s.suspend = true),
                    ..facts()
                },
                expect: Expect::Report(Reason::Suspended, Next::AwaitChange),
            },
            Row {
                name: "stores not synced: quiet, look again shortly",
                facts: Facts {
                    conflict: ConflictFact::NotSynced,
                    ..facts()
                },
                expect: Expect::Quiet(Some(SYNC_RECHECK)),
            },
            Row {
                name: "loser of a conflict: Conflict, no call",
                facts: Facts {
                    conflict: ConflictFact::LosesTo("ns/older".into()),
                    ..facts()
                },
                expect: Expect::Report(Reason::Conflict, Next::Hold(CONFLICT_RECHECK)),
            },
            Row {
                name: "shares its Secret with an older resource: Conflict, no call",
                facts: Facts {
                    conflict: ConflictFact::SecretSharedWith("ns/older".into()),
                    ..facts()
                },
                expect: Expect::Report(Reason::Conflict, Next::Hold(CONFLICT_RECHECK)),
            },
            Row {
                name: "a DELETE of ours may still land: no call at all until its window closes",
                facts: Facts {
                    status: deleting(sent(status_owning(Some("c1")), FP_A), "c1", 10),
                    secret: present(FP_B, CLIENT_A),
                    ..facts()
                },
                expect: Expect::Quiet(Some(WINDOW - Duration::from_secs(10))),
            },
            Row {
                name: "a DELETE in doubt, forced: the doubt is reported, still no call",
                facts: Facts {
                    status: deleting(sent(status_owning(Some("c1")), FP_A), "c1", 10),
                    forced: true,
                    ..facts()
                },
                expect: Expect::Report(
                    Reason::Rotating,
                    Next::Hold(WINDOW - Duration::from_secs(10)),
                ),
            },
            Row {
                name: "a DELETE whose window closed: Leaf is read again",
                facts: Facts {
                    status: deleting(sent(status_owning(Some("c1")), FP_A), "c1", 300),
                    ..facts()
                },
                expect: Expect::AskLeaf,
            },
            Row {
                name: "young and owning nothing: wait out the tie window",
                facts: Facts {
                    age: Some(Duration::from_millis(500)),
                    ..facts()
                },
                expect: Expect::Quiet(Some(Duration::from_millis(1000))),
            },
            Row {
                name: "young but owning a credential: no tie wait",
                facts: Facts {
                    age: Some(Duration::from_millis(500)),
                    status: status_owning(Some("c1")),
                    ..facts()
                },
                expect: Expect::AskLeaf,
            },
            Row {
                name: "account unusable: its outcome",
                facts: Facts {
                    account: AccountFact::Unusable {
                        outcome: Outcome::new(Reason::LeafAuthFailed, "no account"),
                        next: Next::Person,
                    },
                    ..facts()
                },
                expect: Expect::Report(Reason::LeafAuthFailed, Next::Person),
            },
            Row {
                name: "Secret missing, owning nothing: SecretNotFound",
                facts: Facts {
                    secret: missing_secret(),
                    ..facts()
                },
                expect: Expect::Report(
                    Reason::SecretNotFound,
                    Next::Hold(SECRET_NOT_FOUND_RECHECK),
                ),
            },
            Row {
                name: "Secret missing, owning a credential: checking goes on",
                facts: Facts {
                    secret: missing_secret(),
                    status: status_owning(Some("c1")),
                    ..facts()
                },
                expect: Expect::AskLeaf,
            },
            Row {
                name: "Secret invalid, create in doubt: the GET resolves the doubt",
                facts: Facts {
                    secret: SecretFact::Invalid {
                        message: "bad".into(),
                    },
                    status: in_doubt(status_owning(None), FP_A, CLIENT_A, 0),
                    ..facts()
                },
                expect: Expect::AskLeaf,
            },
            Row {
                name: "Secret invalid, owning nothing: SecretInvalid until it changes",
                facts: Facts {
                    secret: SecretFact::Invalid {
                        message: "bad".into(),
                    },
                    ..facts()
                },
                expect: Expect::Report(Reason::SecretInvalid, Next::AwaitChange),
            },
            Row {
                name: "values refused already: nothing at all",
                facts: Facts {
                    status: rejected.clone(),
                    ..facts()
                },
                expect: Expect::Quiet(None),
            },
            Row {
                name: "values refused already, forced: re-report, still no call",
                facts: Facts {
                    status: rejected.clone(),
                    forced: true,
                    ..facts()
                },
                expect: Expect::Report(Reason::CredentialRejected, Next::AwaitChange),
            },
            Row {
                name: "refused values, Secret changed: ask Leaf",
                facts: Facts {
                    status: rejected,
                    secret: present(FP_B, CLIENT_A),
                    ..facts()
                },
                expect: Expect::AskLeaf,
            },
            Row {
                name: "not due: quiet until due",
                facts: Facts {
                    not_due_for: Duration::from_secs(30),
                    status: status_owning(Some("c1")),
                    ..facts()
                },
                expect: Expect::Quiet(Some(Duration::from_secs(30))),
            },
            Row {
                name: "not due but forced: ask Leaf",
                facts: Facts {
                    not_due_for: Duration::from_secs(30),
                    forced: true,
                    ..facts()
                },
                expect: Expect::AskLeaf,
            },
            Row {
                name: "due: ask Leaf",
                facts: facts(),
                expect: Expect::AskLeaf,
            },
        ];
        for row in rows {
            let got = gate(&row.facts);
            match (&row.expect, &got) {
                (Expect::AskLeaf, Gate::AskLeaf) => {}
                (
                    Expect::Report(reason, next),
                    Gate::Report {
                        outcome,
                        next: got_next,
                    },
                ) if outcome.reason == *reason && next == got_next => {}
                (Expect::Quiet(requeue), Gate::Quiet { requeue: got }) if requeue == got => {}
                _ => panic!("{}: got {got:?}", row.name),
            }
        }
    }
}
