//! Time in the decisions: until when a write may leave, how long after that it may still take
//! effect in Leaf, and how long Leaf's reads may lag behind a write it confirmed.
//!
//! Every write to Leaf (a POST or DELETE of a credential) records its intent with a start time and
//! a send deadline (`sendBy`) before it is sent. The client refuses to send it later than that
//! (`leaf::SendGuard`), so the write can take effect at the latest at `sendBy` plus the request
//! timeout plus the in-doubt margin: its window. A window is measured from the deadline, never
//! from the start, because a login, the rate limiter and a retry after a 401 all happen between
//! the two.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::crd::{LastCreate, PendingCreate, PendingDelete};

/// The durations every window is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// How long after its intent is recorded a write may still be sent: the client's request
    /// timeout, so that a login that takes its own full timeout still fits, then the send.
    pub send_budget: Duration,
    /// How long after it may have left a write may still take effect in Leaf: the request
    /// timeout plus the in-doubt margin (Leaf validates a refresh token with Trimble before it
    /// answers, and a gateway may give up on a request Leaf goes on processing).
    pub after_send: Duration,
    /// How long after a write Leaf confirmed its reads may still show what was there before. Leaf
    /// documents no consistency; the in-doubt margin (60 s by default) is the one number for "how
    /// long Leaf may take to show a write" and is used here too.
    pub read_lag: Duration,
}

impl Windows {
    /// The windows for a client with `request_timeout` and an in-doubt `margin`.
    pub fn new(request_timeout: Duration, margin: Duration) -> Self {
        Self {
            send_budget: request_timeout,
            after_send: request_timeout.saturating_add(margin),
            read_lag: margin,
        }
    }

    /// The send deadline of a write whose intent is recorded at `started`.
    pub fn send_by(&self, started: Timestamp) -> Timestamp {
        plus(started, self.send_budget)
    }

    /// How much longer a write that may leave until `send_by` may still take effect, at `now`.
    pub fn landing_left(&self, send_by: Timestamp, now: Timestamp) -> Duration {
        if super::mutation::on(super::mutation::Mutation::NoInDoubtWait) {
            return Duration::ZERO;
        }
        left_until(plus(send_by, self.after_send), now)
    }

    /// The instant the window of a write that may leave until `send_by` closes.
    pub fn landing_end(&self, send_by: Timestamp) -> Timestamp {
        plus(send_by, self.after_send)
    }

    /// The send deadline of a recorded create: its `sendBy`, or for a record of an older version
    /// (which had none) its start plus the send budget. `None` when unreadable (an edited status).
    pub fn create_send_by(&self, pending: &PendingCreate) -> Option<Timestamp> {
        match &pending.send_by {
            Some(send_by) => send_by.parse().ok(),
            None => pending
                .started_at
                .parse()
                .ok()
                .map(|started| self.send_by(started)),
        }
    }

    /// How much longer the recorded create may still make a credential that a read has not
    /// shown yet. An unreadable record counts as long past (the status was edited by hand).
    pub fn create_left(&self, pending: &PendingCreate, now: Timestamp) -> Duration {
        self.create_send_by(pending)
            .map_or(Duration::ZERO, |send_by| self.seen_left(send_by, now))
    }

    /// How much longer a create that may leave until `send_by` may make something no read shows
    /// yet: its window, then the read-lag allowance. A create that lands at the very end of its
    /// window shows in Leaf's reads only once they have caught up; concluding "nothing landed"
    /// before that would leave our own credential untracked (found by the simulation: a POST
    /// landing 73 s late, reads lagging 48 s behind it).
    pub fn seen_left(&self, send_by: Timestamp, now: Timestamp) -> Duration {
        if super::mutation::on(super::mutation::Mutation::NoInDoubtWait) {
            return Duration::ZERO;
        }
        left_until(plus(plus(send_by, self.after_send), self.read_lag), now)
    }

    /// How much longer the recorded DELETE may still take effect.
    pub fn delete_left(&self, pending: &PendingDelete, now: Timestamp) -> Duration {
        pending
            .send_by
            .parse()
            .map_or(Duration::ZERO, |send_by| self.landing_left(send_by, now))
    }

    /// How much longer Leaf's reads may still show what was there before our last confirmed
    /// create.
    pub fn settling_left(&self, last: Option<&LastCreate>, now: Timestamp) -> Duration {
        last.and_then(|last| last.confirmed_at.parse().ok())
            .map_or(Duration::ZERO, |confirmed| {
                left_until(plus(confirmed, self.read_lag), now)
            })
    }
}

/// `at + by`, saturating at the largest timestamp instead of failing.
pub fn plus(at: Timestamp, by: Duration) -> Timestamp {
    SignedDuration::try_from(by)
        .ok()
        .and_then(|by| at.checked_add(by).ok())
        .unwrap_or(Timestamp::MAX)
}

/// How long from `now` until `end` (zero when past).
pub fn left_until(end: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(end.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn a_window_counts_from_the_send_deadline_not_the_start() {
        let w = Windows::new(Duration::from_secs(30), Duration::from_secs(60));
        let started = at("2026-01-01T00:00:00Z");
        let send_by = w.send_by(started);
        assert_eq!(send_by, at("2026-01-01T00:00:30Z"));
        // Sent at the last moment, it may still land 30 s (timeout) + 60 s (margin) later.
        assert_eq!(
            w.landing_left(send_by, started),
            Duration::from_secs(120),
            "the whole window is left at the start"
        );
        assert_eq!(
            w.landing_left(send_by, at("2026-01-01T00:02:00Z")),
            Duration::ZERO
        );
    }

    #[test]
    fn a_record_of_an_older_version_gets_the_send_budget() {
        let w = Windows::new(Duration::from_secs(30), Duration::from_secs(60));
        let pending = PendingCreate {
            secret_fingerprint: "f".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            send_by: None,
            client_id_fingerprint: None,
            refresh_token_fingerprint: None,
        };
        // The send budget (30 s), the window after it (90 s), the read-lag allowance (60 s).
        assert_eq!(
            w.create_left(&pending, at("2026-01-01T00:01:00Z")),
            Duration::from_secs(120)
        );
        let unreadable = PendingCreate {
            started_at: "garbage".into(),
            ..pending
        };
        assert_eq!(
            w.create_left(&unreadable, at("2026-01-01T00:00:00Z")),
            Duration::ZERO
        );
    }

    #[test]
    fn windows_never_overflow() {
        let w = Windows::new(Duration::MAX, Duration::MAX);
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(w.send_by(now), Timestamp::MAX);
        assert!(w.landing_left(w.send_by(now), now) > Duration::from_secs(1));
        let last = LastCreate {
            confirmed_at: "2026-01-01T00:00:00Z".into(),
            replaced_credential_id: None,
        };
        assert!(w.settling_left(Some(&last), now) > Duration::ZERO);
        assert_eq!(w.settling_left(None, now), Duration::ZERO);
    }
}
