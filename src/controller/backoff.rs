//! Per-object retry timing: exponential backoff on failures, jittered periodic checks, and the
//! in-memory schedule that keeps a reconcile from calling Leaf before its time.
//!
//! kube-runtime has no per-object backoff, and a fixed retry loop is how operators exhaust an
//! external API's limits. Failures double the delay from 1 s up to about 6 minutes (ESO uses
//! 7 min), a success resets it, and a `Retry-After` from Leaf is a floor, never shortened (Leaf's
//! own value is clamped to [`MAX`] by the client, so no header can park an object for years).
//!
//! Time is an argument everywhere, never read here, so that the simulation drives these rules
//! with its own clock. The jitter is derived from the object's uid and attempt rather than drawn:
//! objects that failed together still spread out, and a replayed simulation sees the same delays.
//! The state lives in memory: after a restart each object simply starts again at 1 s.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::controller::decide::Next;
use crate::controller::decide::mutation::{self, Mutation};

/// First retry delay.
pub const INITIAL: Duration = Duration::from_secs(1);
/// Longest retry delay (before jitter).
pub const MAX: Duration = Duration::from_secs(360);
/// How long a resource that needs a person waits before the operator looks at Leaf again.
pub const STALLED_RECHECK: Duration = Duration::from_secs(300);
/// How soon "again, at once" is (a Secret changed while a create was being resolved).
pub const SOON: Duration = Duration::from_millis(100);

/// A factor in [0.8, 1.2) that depends only on `uid` and `attempt`.
fn jitter(uid: &str, attempt: u32, salt: &str) -> f64 {
    let mut hasher = DefaultHasher::new();
    (uid, attempt, salt).hash(&mut hasher);
    // 53 random bits as a fraction in [0, 1).
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    0.8 + 0.4 * unit
}

/// `INITIAL * 2^failures`, capped at `MAX`, with +-20 % jitter so that objects that failed
/// together do not retry together; never less than `retry_after` (itself capped at `MAX`).
pub fn delay(uid: &str, failures: u32, retry_after: Option<Duration>) -> Duration {
    let base = INITIAL
        .saturating_mul(2u32.saturating_pow(failures.min(20)))
        .min(MAX);
    let jittered = base.mul_f64(jitter(uid, failures, "backoff"));
    match retry_after.map(|floor| floor.min(MAX)) {
        Some(floor) if floor > jittered => floor,
        _ => jittered,
    }
}

/// `interval` shortened by up to 10 %, so that resources created together spread their checks.
pub fn jittered_interval(uid: &str, interval: Duration, attempt: u32) -> Duration {
    // Reuses the [0.8, 1.2) factor, mapped onto [0.9, 1.0].
    let factor = 0.9 + (jitter(uid, attempt, "interval") - 0.8) / 4.0;
    interval.mul_f64(factor)
}

/// `now + wait`, without the panic an absurd `wait` would cause.
pub fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(MAX))
        .unwrap_or(now)
}

/// When an object may next call Leaf on its own initiative, and how many failures in a row it had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub next_leaf_call: Instant,
    pub failures: u32,
    /// How many periodic checks were scheduled (varies the interval's jitter).
    pub checks: u32,
    /// Identifies the inputs of the Leaf calls (Secret fingerprint and Leaf account) when the
    /// schedule was set: different inputs are worth a Leaf call at once, whatever it says. A hash
    /// (see [`inputs_hash`]): one per connection, 20,000 at the issue-12 scale, where the text
    /// cost about 100 bytes each.
    pub inputs: u64,
    /// For a periodic check: when it was scheduled and the jitter attempt it used, so that the
    /// check can be re-paced when the interval changes (alerts healthy or not).
    pub periodic: Option<(Instant, u32)>,
}

/// What [`Schedule::inputs`] keeps of the inputs' text. A collision (odds 2⁻⁶⁴ per change) would
/// only delay the reaction to changed inputs until the object's next scheduled call.
fn inputs_hash(inputs: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    inputs.hash(&mut hasher);
    hasher.finish()
}

/// The schedules of all objects, keyed by the object's uid.
#[derive(Debug, Default)]
pub struct Schedules {
    inner: Mutex<HashMap<String, Schedule>>,
    /// Replaces every `refreshInterval` (tests only; see `Config::test_refresh_interval`).
    interval_override: Option<Duration>,
}

impl Schedules {
    /// Schedules whose periodic checks come every `interval` whatever the resources say: for
    /// tests that must observe periodic checks quicker than the schema's 1 minute minimum.
    pub fn with_interval_override(interval: Option<Duration>) -> Self {
        Self {
            interval_override: interval,
            ..Self::default()
        }
    }

    pub fn get(&self, uid: &str) -> Option<Schedule> {
        self.inner.lock().expect("schedules lock").get(uid).cloned()
    }

    /// How long until `uid` may call Leaf with `inputs`: zero when due, when nothing is
    /// recorded, or when the inputs changed.
    pub fn wait(&self, uid: &str, inputs: &str, now: Instant) -> Duration {
        match self.get(uid) {
            Some(schedule) if schedule.inputs == inputs_hash(inputs) => {
                schedule.next_leaf_call.saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        }
    }

    /// Like [`Schedules::wait`], with a periodic check re-paced to `interval`, the pace that
    /// applies now: when polling switches between the alerts backstop and the normal interval,
    /// a check scheduled under the old pace comes when the new pace says, counted from when it
    /// was scheduled (the same jitter). Failures, holds and other waits are kept as recorded.
    pub fn wait_at_pace(
        &self,
        uid: &str,
        inputs: &str,
        interval: Duration,
        now: Instant,
    ) -> Duration {
        match self.get(uid) {
            Some(schedule) if schedule.inputs == inputs_hash(inputs) => self
                .next_at_pace(uid, &schedule, interval)
                .saturating_duration_since(now),
            _ => Duration::ZERO,
        }
    }

    /// Whether the pace `interval` brings `uid`'s periodic check sooner than the pace `than`
    /// did. The object's pending wake-up (kube-runtime's requeue) was set for the old pace, by
    /// the check itself or by a reconcile that found it not due yet, so it would come too late:
    /// the object needs a nudge.
    pub fn sooner_at_pace(&self, uid: &str, interval: Duration, than: Duration) -> bool {
        self.get(uid).is_some_and(|schedule| {
            schedule.periodic.is_some()
                && self.next_at_pace(uid, &schedule, interval)
                    < self.next_at_pace(uid, &schedule, than)
        })
    }

    fn next_at_pace(&self, uid: &str, schedule: &Schedule, interval: Duration) -> Instant {
        match schedule.periodic {
            Some((from, attempt)) => {
                let interval = self.interval_override.unwrap_or(interval);
                later(from, jittered_interval(uid, interval, attempt))
            }
            None => schedule.next_leaf_call,
        }
    }

    /// Records what a reconcile decided and returns when to look again (`None`: only a change
    /// of the object or its Secrets brings the next reconcile).
    pub fn record(
        &self,
        uid: &str,
        inputs: &str,
        next: &Next,
        refresh_interval: Duration,
        now: Instant,
    ) -> Option<Duration> {
        self.record_hashed(uid, inputs_hash(inputs), next, refresh_interval, now)
    }

    fn record_hashed(
        &self,
        uid: &str,
        inputs: u64,
        next: &Next,
        refresh_interval: Duration,
        now: Instant,
    ) -> Option<Duration> {
        let refresh_interval = self.interval_override.unwrap_or(refresh_interval);
        let mut inner = self.inner.lock().expect("schedules lock");
        let previous = inner.get(uid).cloned();
        let failures = previous.as_ref().map_or(0, |s| s.failures);
        let checks = previous.as_ref().map_or(0, |s| s.checks);
        let (wait, failures, checks) = match next {
            Next::Check => (
                jittered_interval(uid, refresh_interval, checks),
                0,
                checks.wrapping_add(1),
            ),
            Next::Soon => (SOON, failures, checks),
            Next::Backoff { .. } if mutation::on(Mutation::NoBackoff) => (SOON, failures, checks),
            Next::Backoff { retry_after } => (
                delay(uid, failures, *retry_after),
                failures.saturating_add(1),
                checks,
            ),
            Next::Person => (STALLED_RECHECK, failures, checks),
            Next::Hold(wait) => ((*wait).min(MAX), failures, checks),
            Next::AwaitChange => return None,
        };
        let periodic = matches!(next, Next::Check).then(|| (now, checks.wrapping_sub(1)));
        inner.insert(
            uid.to_string(),
            Schedule {
                next_leaf_call: later(now, wait),
                failures,
                checks,
                inputs,
                periodic,
            },
        );
        Some(wait)
    }

    /// Records a failure outside Leaf (an API error): backoff as for a failed Leaf call, the
    /// recorded inputs kept. Returns the wait.
    pub fn failed(&self, uid: &str, now: Instant) -> Duration {
        let inputs = self.get(uid).map_or_else(|| inputs_hash(""), |s| s.inputs);
        let retry = Next::Backoff { retry_after: None };
        self.record_hashed(uid, inputs, &retry, MAX, now)
            .unwrap_or(INITIAL)
    }

    pub fn forget(&self, uid: &str) {
        self.inner.lock().expect("schedules lock").remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_from_one_second_and_is_capped() {
        for (failures, base) in [(0u32, 1u64), (1, 2), (2, 4), (5, 32)] {
            let d = delay("a", failures, None).as_secs_f64();
            let base = base as f64;
            assert!(
                d >= base * 0.8 && d <= base * 1.2,
                "failures {failures}: {d}"
            );
        }
        let capped = delay("a", 30, None);
        assert!(
            capped <= MAX.mul_f64(1.2) && capped >= MAX.mul_f64(0.8),
            "{capped:?}"
        );
    }

    #[test]
    fn retry_after_is_a_floor_but_never_beyond_the_cap() {
        assert!(delay("a", 0, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
        assert_eq!(delay("a", 0, Some(Duration::MAX)), MAX);
    }

    #[test]
    fn jitter_spreads_objects_and_repeats_for_the_same_one() {
        let delays: std::collections::HashSet<_> = (0..20)
            .map(|i| delay(&format!("uid-{i}"), 3, None))
            .collect();
        assert!(delays.len() > 15, "{delays:?}");
        assert_eq!(delay("x", 3, None), delay("x", 3, None));
        let interval = Duration::from_secs(600);
        for i in 0..50 {
            let d = jittered_interval(&format!("u{i}"), interval, i);
            assert!(d <= interval && d >= interval.mul_f64(0.9), "{d:?}");
        }
    }

    #[test]
    fn success_resets_failures_and_new_inputs_are_due_at_once() {
        let schedules = Schedules::default();
        let now = Instant::now();
        let retry = Next::Backoff { retry_after: None };
        schedules.record("a", "k1", &retry, Duration::from_secs(60), now);
        schedules.record("a", "k1", &retry, Duration::from_secs(60), now);
        assert_eq!(schedules.get("a").map(|s| s.failures), Some(2));
        assert!(schedules.wait("a", "k1", now) > Duration::from_secs(1));
        assert_eq!(schedules.wait("a", "k2", now), Duration::ZERO);
        schedules.record("a", "k1", &Next::Check, Duration::from_secs(60), now);
        assert_eq!(schedules.get("a").map(|s| s.failures), Some(0));
        let first_again = schedules
            .record("a", "k1", &retry, Duration::from_secs(60), now)
            .expect("a retry");
        assert!(
            first_again <= Duration::from_millis(1200),
            "{first_again:?}"
        );
    }

    #[test]
    fn a_periodic_check_is_re_paced_from_when_it_was_scheduled() {
        let schedules = Schedules::default();
        let t0 = Instant::now();
        let day = Duration::from_secs(24 * 3600);
        let ten_minutes = Duration::from_secs(600);
        let wait = schedules
            .record("a", "k", &Next::Check, day, t0)
            .expect("a periodic check");
        assert_eq!(schedules.wait_at_pace("a", "k", day, t0), wait);
        // Alerts fell silent: the normal pace applies, counted from t0 with the same jitter.
        let later_on = t0 + Duration::from_secs(120);
        let repaced = schedules.wait_at_pace("a", "k", ten_minutes, later_on);
        assert!(
            repaced <= ten_minutes - Duration::from_secs(120)
                && repaced >= ten_minutes.mul_f64(0.9) - Duration::from_secs(120),
            "{repaced:?}"
        );
        assert!(schedules.sooner_at_pace("a", ten_minutes, day));
        assert!(!schedules.sooner_at_pace("a", day, day));
        assert!(
            !schedules.sooner_at_pace("a", 2 * day, day),
            "later is not sooner"
        );
        // Back and forth: recorded under one pace, compared between any two.
        assert!(schedules.sooner_at_pace("a", ten_minutes, 2 * day));
        assert!(!schedules.sooner_at_pace("a", day, ten_minutes));
        // Past the new pace: due now.
        assert_eq!(
            schedules.wait_at_pace("a", "k", ten_minutes, t0 + ten_minutes),
            Duration::ZERO
        );
        // A longer pace lengthens it too (alerts became healthy).
        schedules.record("b", "k", &Next::Check, ten_minutes, t0);
        assert!(schedules.wait_at_pace("b", "k", day, t0) > ten_minutes);
        // Other inputs are due at once; failures and holds are not periodic and keep their wait.
        assert_eq!(
            schedules.wait_at_pace("a", "other", day, t0),
            Duration::ZERO
        );
        let retry = Next::Backoff { retry_after: None };
        let backoff = schedules
            .record("c", "k", &retry, day, t0)
            .expect("a retry");
        assert_eq!(schedules.wait_at_pace("c", "k", ten_minutes, t0), backoff);
        assert!(!schedules.sooner_at_pace("c", Duration::from_millis(1), day));
        assert!(!schedules.sooner_at_pace("unknown", ten_minutes, day));
    }

    #[test]
    fn the_test_override_also_applies_when_re_pacing() {
        let schedules = Schedules::with_interval_override(Some(Duration::from_secs(2)));
        let t0 = Instant::now();
        schedules.record("a", "k", &Next::Check, Duration::from_secs(600), t0);
        assert!(
            schedules.wait_at_pace("a", "k", Duration::from_secs(86_400), t0)
                <= Duration::from_secs(2)
        );
    }

    #[test]
    fn later_never_panics() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) >= now);
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
