//! Which verified deliveries count as hearing from Leaf, and so may keep polling at the backstop.
//!
//! A signature proves that Leaf wrote a body, not when it sent it: the same bytes verify for as
//! long as the secret lives. Were every verified delivery "Leaf is alive now", one captured
//! delivery replayed every few minutes would keep polling at the daily backstop long after Leaf
//! fell silent, and revoked credentials would go unnoticed for a day. So a delivery counts only
//! when its own `timestamp` is within [`WINDOW`] of our clock. A delivery that does not count is
//! still answered 200 and handled as before (acted on once; its repeats are duplicates): whether
//! it is news about a credential is the handler's business, this rule only decides what it says
//! about Leaf's health.
//!
//! The registration confirmation has no timestamp, and its bytes are always the same, so its
//! signature is the same for every registration under one secret: a captured one would verify
//! forever. A signed confirmation therefore counts once per signing secret ([`ConfirmationGate`]):
//! Leaf sends one per registration, and a new registration comes with a new secret when the
//! operator registers (with the same one only after the webhook vanished, which the registration
//! check reports on its own). After a restart the gate is empty again, so one replay then buys at
//! most one quiet limit. An unsigned confirmation proves nothing and never counts (the receiver
//! handles it before any of this).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How far a delivery's `timestamp` may be from our clock, either way, and still count.
///
/// Ten minutes: a first delivery arrives within seconds of its timestamp and Leaf's first retry
/// a minute later, both well inside; a clock that drifted minutes off (ours or Leaf's) still
/// counts, and a worse one fails safe (polling at the normal pace, and
/// `alerts_freshness_total{freshness="stale"}` rising beside `alerts_verified_total`). Leaf's
/// later retries (30, 60 and 240 minutes) are stale: they still act, but cannot be told from a
/// replay. A replay can keep alerts "healthy" for at most this window plus the quiet limit after
/// Leaf sent the original (40 minutes at the defaults), instead of forever.
pub const WINDOW: Duration = Duration::from_secs(10 * 60);

/// What a verified body says about when it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentAt {
    /// An event: its `timestamp`, or None when missing or unreadable (also an unreadable body).
    Timestamp(Option<jiff::Timestamp>),
    /// The registration confirmation; `first` when it is the first under the current secret.
    Confirmation { first: bool },
}

/// Whether a verified delivery counts as hearing from Leaf, and why (the metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Sent within the window: counts.
    Fresh,
    /// The first signed confirmation under this secret: Leaf registered the webhook just now.
    FirstConfirmation,
    /// Sent longer ago than the window: a late retry or a replay.
    Stale,
    /// Dated further ahead than the window: a clock far off, or a forgery with the secret.
    FutureDated,
    /// No readable timestamp: nothing says when it was sent.
    NoTimestamp,
    /// A signed confirmation after the first under this secret: a replay, or a re-registration
    /// the registration check reports anyway.
    RepeatedConfirmation,
}

impl Freshness {
    /// Whether it refreshes `AlertsHealth::heard_from_leaf`.
    pub fn counts(self) -> bool {
        matches!(self, Self::Fresh | Self::FirstConfirmation)
    }

    /// The `freshness` label of `leaf_operator_alerts_freshness_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::FirstConfirmation => "first_confirmation",
            Self::Stale => "stale",
            Self::FutureDated => "future_dated",
            Self::NoTimestamp => "no_timestamp",
            Self::RepeatedConfirmation => "repeated_confirmation",
        }
    }
}

/// The rule: a timestamp within `window` of `now` either way (inclusive) is fresh; a
/// confirmation counts the first time under its secret.
pub fn freshness(sent: SentAt, now: jiff::Timestamp, window: Duration) -> Freshness {
    let at = match sent {
        SentAt::Confirmation { first: true } => return Freshness::FirstConfirmation,
        SentAt::Confirmation { first: false } => return Freshness::RepeatedConfirmation,
        SentAt::Timestamp(None) => return Freshness::NoTimestamp,
        SentAt::Timestamp(Some(at)) => at,
    };
    // Compared in nanoseconds as i128: no timestamp jiff can hold overflows it.
    let age_ns = now.as_nanosecond() - at.as_nanosecond();
    let window_ns = i128::try_from(window.as_nanos()).unwrap_or(i128::MAX);
    if age_ns > window_ns {
        Freshness::Stale
    } else if -age_ns > window_ns {
        Freshness::FutureDated
    } else {
        Freshness::Fresh
    }
}

/// Remembers under which signing secret a signed confirmation was last counted.
#[derive(Debug, Default)]
pub struct ConfirmationGate {
    /// The signing keys' generation (see `SigningKeys::generation`) plus one; 0: none yet.
    counted_under: AtomicU64,
}

impl ConfirmationGate {
    /// True for the first confirmation under `generation` of the signing keys, false after.
    pub fn first_under(&self, generation: u64) -> bool {
        let mark = generation.wrapping_add(1);
        self.counted_under.swap(mark, Ordering::AcqRel) != mark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_freshness_table() {
        let now: jiff::Timestamp = "2026-06-15T12:00:00Z".parse().unwrap();
        let at = |offset_secs: i64| Some(now + jiff::SignedDuration::from_secs(offset_secs));
        let window = WINDOW;
        let edge = 600;
        // (what the body says, expected)
        let cases = [
            (SentAt::Timestamp(at(0)), Freshness::Fresh),
            (SentAt::Timestamp(at(-2)), Freshness::Fresh),
            (SentAt::Timestamp(at(-60)), Freshness::Fresh), // Leaf's first retry
            (SentAt::Timestamp(at(-edge)), Freshness::Fresh),
            (SentAt::Timestamp(at(-edge - 1)), Freshness::Stale),
            (SentAt::Timestamp(at(-30 * 60)), Freshness::Stale), // Leaf's second retry
            (SentAt::Timestamp(at(-400 * 86_400)), Freshness::Stale), // an old capture
            (SentAt::Timestamp(at(90)), Freshness::Fresh),       // a clock 90 s ahead
            (SentAt::Timestamp(at(edge)), Freshness::Fresh),
            (SentAt::Timestamp(at(edge + 1)), Freshness::FutureDated),
            (SentAt::Timestamp(at(365 * 86_400)), Freshness::FutureDated),
            (SentAt::Timestamp(None), Freshness::NoTimestamp),
            (
                SentAt::Confirmation { first: true },
                Freshness::FirstConfirmation,
            ),
            (
                SentAt::Confirmation { first: false },
                Freshness::RepeatedConfirmation,
            ),
        ];
        for (sent, expected) in cases {
            assert_eq!(freshness(sent, now, window), expected, "{sent:?}");
        }
        let counting: Vec<Freshness> = cases
            .iter()
            .map(|(_, f)| *f)
            .filter(|f| f.counts())
            .collect();
        assert!(
            counting
                .iter()
                .all(|f| matches!(f, Freshness::Fresh | Freshness::FirstConfirmation)),
            "{counting:?}"
        );
    }

    #[test]
    fn the_extremes_of_time_do_not_overflow() {
        let window = Duration::MAX;
        assert_eq!(
            freshness(
                SentAt::Timestamp(Some(jiff::Timestamp::MIN)),
                jiff::Timestamp::MAX,
                WINDOW
            ),
            Freshness::Stale
        );
        assert_eq!(
            freshness(
                SentAt::Timestamp(Some(jiff::Timestamp::MAX)),
                jiff::Timestamp::MIN,
                WINDOW
            ),
            Freshness::FutureDated
        );
        assert_eq!(
            freshness(
                SentAt::Timestamp(Some(jiff::Timestamp::MIN)),
                jiff::Timestamp::MAX,
                window
            ),
            Freshness::Fresh
        );
    }

    #[test]
    fn a_confirmation_counts_once_per_signing_secret() {
        let gate = ConfirmationGate::default();
        assert!(gate.first_under(1), "the first under the loaded secret");
        assert!(!gate.first_under(1), "a repeat: a replay");
        assert!(!gate.first_under(1));
        assert!(gate.first_under(2), "a new secret, a new registration");
        assert!(!gate.first_under(2));
    }
}
