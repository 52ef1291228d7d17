//! The decision core: pure functions that decide what a reconcile does, with no IO at all.
//!
//! A reconcile first gathers [`Facts`] (the object, its Secrets, the conflict checks, the
//! schedule, the clock), then:
//! 1. [`gate`] decides whether to call Leaf at all;
//! 2. if so, one GET of the Leaf user's credential, and [`choose`] picks the single [`Step`];
//! 3. an executor (`controller::engine::steps`) performs exactly that step: the fence, at most
//!    one Leaf write (a rotation: a DELETE, then the create), and after each Leaf call the pure
//!    [`transitions`] say what the answer means for the status, the reason and the next look.
//!
//! The grower's Magic Link (`spec.reauthorization`) has rows of its own, after the doubt rows:
//! they are in [`reauth`], with their table.
//!
//! Deletion has its own pair, [`cleanup::gate`] and [`cleanup::choose`]. What each of Leaf's
//! answers means for a write (applied, not, maybe) is the table in [`answers`]; the time rules
//! (send deadline, window, read lag) are in [`windows`].
//!
//! Ownership rules every row obeys:
//! - A credential is ours only when its id is `status.credentialId`, or when an in-doubt create
//!   (`status.pendingCreate`) made it. Any other credential is foreign and goes through
//!   `adoptionPolicy`; a DELETE is decided only right after a GET showed the id we own (or a
//!   foreign one that `adoptionPolicy: Replace` allows replacing).
//! - Every write is in doubt from its intent until its answer proves its effect, or until its
//!   window (send deadline + request timeout + margin) closes and a fresh GET shows the result.
//!   While a create may land nothing is POSTed again; while a DELETE may land (it names the user,
//!   not the credential) nothing at all is sent for the Leaf user, and the finalizer stays.
//! - A refresh token that was sent once (`status.sentRefreshTokens`) is never sent again: a
//!   Trimble refresh token works once, even when the Secret goes back to it. Values found in the
//!   Secret when a credential was adopted (`status.adoptedSecretFingerprint`) were never sent by
//!   us; they are sent only on a change of the Secret, or with `adoptionPolicy: Replace` once the
//!   adopted credential is dead.
//! - Leaf's reads may lag: within the read-lag allowance after our last confirmed create
//!   (`status.lastCreate`), a GET that does not show the credential it made is not taken as the
//!   truth (no "ours is gone", no "foreign", no release of the finalizer).
//!
//! ## The state table (apply)
//!
//! | in doubt? | `credentialId` | Leaf GET shows | Secret | policy | step |
//! |---|---|---|---|---|---|
//! | DELETE, window open | any | (not read) | any | any | wait (gate), nothing sent |
//! | DELETE, window closed | - | - | - | - | as below, with the DELETE's doubt cleared |
//! | create, window open | any | nothing, or not made by the pending POST | any | any | `AwaitInDoubt` |
//! | create | any | made by the pending POST | any | any | `Resume` |
//! | create, window closed | - | - | - | - | as below, with the doubt cleared |
//! | no | X, created < read lag ago | anything but X | any | any | `AwaitSettle` |
//! | no | none | nothing | new values | any | `Create` |
//! | no | none | nothing | values or token sent before | any | `NeedNewValues` |
//! | no | none/X | Y (foreign) | clientId matches | AdoptMatching | `Adopt` |
//! | no | none/X | Y (foreign) | clientId differs | AdoptMatching | `Foreign` (Conflict) |
//! | no | none/X | Y (foreign) | any | Never | `Foreign` (Conflict) |
//! | no | none/X | Y (foreign) | present | Replace | `Replace` (DELETE Y, POST) |
//! | no | none/X | Y (foreign) | missing/invalid | AdoptMatching/Replace | `NeedSecret` |
//! | no | X | X | changed since sent/adopted, token never sent | any | `Rotate` (DELETE X, POST) |
//! | no | X | X | changed, but to a token sent before | any | `Check` (the message says so) |
//! | no | X | X (dead, adopted) | adopted values | Replace | `Rotate` |
//! | no | X | X | unchanged, missing or invalid | any | `Check` |
//! | no | X | nothing | new values | any | `Create` (replacing X) |
//! | no | X | nothing | sent values, missing | any | `NeedNewValues` (X vanished) |
//!
//! ## The gate (before any Leaf call), first match wins
//!
//! suspended → Suspended · stores not synced → wait quietly · loses a Leaf-user conflict →
//! Conflict · shares its Secret with an older resource for another Leaf user → Conflict ·
//! younger than the tie window and owns nothing → wait quietly · a DELETE of ours may still land
//! → wait quietly until its window closes · Leaf account unusable → its reason · owns nothing and
//! Secret missing/invalid → SecretNotFound/SecretInvalid · values refused already → nothing (a
//! forced reconcile re-reports) · not due and not forced → wait quietly · otherwise → ask Leaf.

pub mod answers;
pub mod choose;
pub mod cleanup;
pub mod gate;
pub mod mutation;
pub mod reauth;
pub mod transitions;
pub mod windows;

use std::time::Duration;

use jiff::Timestamp;

use crate::controller::status::Outcome;
use crate::crd::{TrimbleConnectionSpec, TrimbleConnectionStatus};

pub use choose::{Step, choose};
pub use gate::{Gate, gate};
pub use windows::Windows;

/// How long after its creationTimestamp a resource that owns nothing waits before its first Leaf
/// write. creationTimestamp is cut to the second, so two resources for one Leaf user created in
/// the same second tie and sort by namespace and name; every resource that shares a timestamp was
/// created before that second ended, and 0.5 s later (the watch's delivery) it is in every store:
/// both sides then compute the same winner before either acts. Measured from the truncated
/// timestamp, the real wait is 0.5 to 1.5 s.
pub const TIE_WINDOW: Duration = Duration::from_millis(1500);

/// Leaf's clock and ours may differ by this much when comparing its `createdTime` with the start
/// of our POST.
pub const CLOCK_SKEW: Duration = Duration::from_secs(120);

/// What is known about the credentials Secret (the values themselves stay with the executor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretFact {
    /// Complete: its fingerprint and the hashes of its clientId and refresh token.
    Present {
        fingerprint: String,
        client_id_hash: String,
        refresh_token_hash: String,
    },
    /// It does not exist; the message names it.
    Missing { message: String },
    /// It exists but cannot be used (missing or empty key); the message names the key.
    Invalid { message: String },
    /// The resource names no credentials Secret: the grower connects through a Magic Link.
    NotConfigured,
}

impl SecretFact {
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            Self::Present { fingerprint, .. } => Some(fingerprint),
            _ => None,
        }
    }
}

/// Whether the Leaf account this resource uses can be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountFact {
    Ready,
    /// No call can be made as this resource: the outcome says why, `next` when to look again.
    Unusable {
        outcome: Outcome,
        next: Next,
    },
}

/// What the Leaf-user conflict check can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConflictFact {
    /// No other resource names this Leaf user (as far as every synced store shows).
    Clear,
    /// Not every store has synced: another resource for this user may not be visible yet.
    NotSynced,
    /// An older resource (`namespace/name`) owns this Leaf user.
    LosesTo(String),
    /// An older resource (`namespace/name`) for another Leaf user reads its refresh token from
    /// the same Secret key: a refresh token works once, so only the older one may send it.
    SecretSharedWith(String),
}

/// Everything a decision depends on, gathered before any Leaf call.
#[derive(Clone, Debug)]
pub struct Facts {
    pub spec: TrimbleConnectionSpec,
    /// The status as the API server holds it now.
    pub status: TrimbleConnectionStatus,
    pub secret: SecretFact,
    pub account: AccountFact,
    pub conflict: ConflictFact,
    /// How long ago the resource was created (None: unknown).
    pub age: Option<Duration>,
    /// How long until the schedule lets this resource call Leaf again (zero: due now).
    pub not_due_for: Duration,
    /// A person asked for a reconcile (new annotation value, new generation, an alert): the
    /// schedule is bypassed.
    pub forced: bool,
    /// Whether every periodic check also reads the credential's events (polling mode). When
    /// false they are read only when the status changed or a person asked.
    pub events_every_check: bool,
    pub now: Timestamp,
    /// The send deadline, the window of a write in doubt and the read-lag allowance.
    pub windows: Windows,
    /// Re-authorization through a Magic Link, when the resource (or the operator's default)
    /// asks for it.
    pub reauth: Option<reauth::ReauthSettings>,
}

impl Facts {
    /// The same facts at `now`: an executor's transitions are computed at the moment of the
    /// answer they interpret (an intent's start, a confirmation's time), not at the moment the
    /// facts were gathered, which a slow read may have made seconds old.
    pub fn at(&self, now: Timestamp) -> Facts {
        Facts {
            now,
            ..self.clone()
        }
    }

    /// The resource owns a credential, or may be creating or deleting one.
    pub fn owns_anything(&self) -> bool {
        self.status.credential_id.is_some()
            || self.status.pending_create.is_some()
            || self.status.pending_delete.is_some()
    }

    /// The Secret's refresh token was sent to Leaf before: it must never be sent again.
    pub fn token_sent_before(&self) -> bool {
        if mutation::on(mutation::Mutation::ForgetSentTokens) {
            return false;
        }
        match &self.secret {
            SecretFact::Present {
                refresh_token_hash, ..
            } => self.status.sent_refresh_tokens.contains(refresh_token_hash),
            _ => false,
        }
    }
}

/// How many refresh tokens `status.sentRefreshTokens` remembers.
pub const SENT_TOKENS_KEPT: usize = 10;

/// When to look again after a reconcile, and what it means for the per-object schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Done: failures reset; the periodic check comes after `refreshInterval` (jittered).
    Check,
    /// Again almost at once, without counting a failure (a step that needs a second pass).
    Soon,
    /// A failed Leaf call: exponential backoff, at least `retry_after`.
    Backoff { retry_after: Option<Duration> },
    /// A person must act: no Leaf call on our own for `STALLED_RECHECK`.
    Person,
    /// Look again after this long, without counting a failure.
    Hold(Duration),
    /// Only a change of the object or its Secrets brings the next reconcile.
    AwaitChange,
}

#[cfg(test)]
mod testing;
