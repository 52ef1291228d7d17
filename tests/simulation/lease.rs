//! Two replicas and the Lease between them, with the real timings (15 s lease renewed every 5 s,
//! a standby polling every 2 s, the leader confirming every 2 s and stopping 3 s before an
//! unconfirmed lease would expire) and the real `leader::Fence`.
//!
//! Each replica's clock differs from the world's by a fixed skew (up to ±1.4 s: the fence's 3 s
//! safety margin is what covers two of them). While nothing disturbs the leader the Lease is
//! simply held and renewed; the model computes the few instants that matter when something does:
//! a replica cut off from the API server (its renewals hang, so it stops at its own deadline,
//! and the standby takes over once the Lease looks expired by the standby's clock), a crash, a
//! partition that heals in time.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use leaf_operator::controller::backoff::Schedules;
use leaf_operator::leader::{EXPIRY_SAFETY_MARGIN, Fence};

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
pub const POLL_EVERY: Duration = Duration::from_secs(2);
pub const CONFIRM_EVERY: Duration = leaf_operator::leader::LEASE_CHECK_EVERY;

/// The Lease object as the API server holds it.
#[derive(Clone, Debug)]
pub struct Lease {
    pub holder: Option<usize>,
    /// When the holder last renewed it, by the world's clock (what it wrote is this plus its
    /// skew).
    pub renewed: Timestamp,
}

/// One operator process.
pub struct Replica {
    pub skew: SignedDuration,
    /// Phases of its renew, confirm and poll loops.
    pub phase: SignedDuration,
    pub fence: Fence,
    pub schedules: Schedules,
    /// Runs the controller.
    pub leading: bool,
    /// The requeue kube-runtime holds for the object.
    pub due: Option<Timestamp>,
    /// A watch event is waiting (a status write, a Secret or spec change, the controller starting).
    pub triggered: bool,
    /// Restarting after a crash until then (kubelet's back-off).
    pub down_until: Option<Timestamp>,
    pub recent_crashes: u32,
    /// Cut off from the API server until then: renewals hang, reads and writes fail.
    pub cut_off_until: Option<Timestamp>,
    /// Its process is stopped until then (its lease loop with it).
    pub paused_until: Option<Timestamp>,
}

impl Replica {
    pub fn new(skew: SignedDuration, phase: SignedDuration) -> Self {
        Self {
            skew,
            phase,
            fence: Fence::elected(),
            schedules: Schedules::default(),
            leading: false,
            due: None,
            triggered: false,
            down_until: None,
            recent_crashes: 0,
            cut_off_until: None,
            paused_until: None,
        }
    }

    pub fn clock(&self, now: Timestamp) -> Timestamp {
        now + self.skew
    }

    pub fn up(&self, now: Timestamp) -> bool {
        self.down_until.is_none_or(|until| until <= now)
    }

    pub fn cut_off(&self, now: Timestamp) -> bool {
        self.cut_off_until.is_some_and(|until| now < until)
    }

    pub fn paused(&self, now: Timestamp) -> bool {
        self.paused_until.is_some_and(|until| now < until)
    }
}

/// The first tick of a loop with `period` and `phase` at or after `at` (ticks at `origin + phase +
/// k·period`).
pub fn next_tick(
    origin: Timestamp,
    phase: SignedDuration,
    period: Duration,
    at: Timestamp,
) -> Timestamp {
    let period = SignedDuration::try_from(period).expect("period");
    let first = origin + phase;
    if at <= first {
        return first;
    }
    let since = at.duration_since(first);
    let periods = since.as_nanos().div_euclid(period.as_nanos());
    let tick = first + period * i32::try_from(periods).unwrap_or(i32::MAX);
    if tick < at { tick + period } else { tick }
}

/// The last tick at or before `at`.
pub fn last_tick(
    origin: Timestamp,
    phase: SignedDuration,
    period: Duration,
    at: Timestamp,
) -> Timestamp {
    let next = next_tick(origin, phase, period, at);
    if next == at {
        at
    } else {
        next - SignedDuration::try_from(period).expect("period")
    }
}

/// The fence's deadline for a lease renewed at `renewed` (world time), on the simulation's
/// monotonic clock: what the leader loop's confirmation sets, the safety margin taken off.
pub fn fence_deadline(
    to_instant: impl Fn(Timestamp) -> Instant,
    renewed: Timestamp,
    margin: Duration,
) -> Instant {
    let valid = renewed + SignedDuration::try_from(LEASE_DURATION).expect("duration");
    let until = valid - SignedDuration::try_from(margin).expect("margin");
    to_instant(until)
}

/// The margin the leader loop takes off (a mutation run sets 0).
pub fn margin(zero: bool) -> Duration {
    if zero {
        Duration::ZERO
    } else {
        EXPIRY_SAFETY_MARGIN
    }
}
