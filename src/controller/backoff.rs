//! Per-object retry timing: exponential backoff with jitter on failures, jittered periodic checks.
//!
//! kube-runtime has no per-object backoff, and a fixed retry loop is how operators exhaust an
//! external API's limits. Failures double the delay from 1 s up to about 6 minutes (ESO uses
//! 7 min), a success resets it, and a `Retry-After` from Leaf is a floor, never shortened.
//! The state lives in memory: after a restart each object simply starts again at 1 s.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

/// First retry delay.
pub const INITIAL: Duration = Duration::from_secs(1);
/// Longest retry delay (before jitter).
pub const MAX: Duration = Duration::from_secs(360);

/// `INITIAL * 2^failures`, capped at `MAX`, with +-20 % jitter so that objects that failed
/// together do not retry together; never less than `retry_after`.
pub fn delay(failures: u32, retry_after: Option<Duration>) -> Duration {
    let base = INITIAL
        .saturating_mul(2u32.saturating_pow(failures.min(20)))
        .min(MAX);
    let factor = rand::rng().random_range(0.8..1.2);
    let jittered = base.mul_f64(factor);
    match retry_after {
        Some(floor) if floor > jittered => floor,
        _ => jittered,
    }
}

/// `interval` shortened by up to 10 %, so that resources created together spread their checks.
pub fn jittered_interval(interval: Duration) -> Duration {
    let factor = rand::rng().random_range(0.9..=1.0);
    interval.mul_f64(factor)
}

/// When an object may next call Leaf on its own initiative, and how many failures in a row it had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub next_leaf_call: Instant,
    pub failures: u32,
    /// Fingerprint of the Secret when the schedule was set: a different Secret is worth a Leaf
    /// call at once, whatever the schedule says.
    pub fingerprint: Option<String>,
}

/// The schedules of all objects, keyed by the object's uid.
#[derive(Debug, Default)]
pub struct Schedules {
    inner: Mutex<HashMap<String, Schedule>>,
}

impl Schedules {
    pub fn get(&self, uid: &str) -> Option<Schedule> {
        self.inner.lock().expect("schedules lock").get(uid).cloned()
    }

    /// Records a success: failures reset, next periodic check after `interval` (jittered).
    /// Returns the delay until that check.
    pub fn succeeded(&self, uid: &str, interval: Duration, fingerprint: Option<&str>) -> Duration {
        let wait = jittered_interval(interval);
        self.inner.lock().expect("schedules lock").insert(
            uid.to_string(),
            Schedule {
                next_leaf_call: Instant::now() + wait,
                failures: 0,
                fingerprint: fingerprint.map(str::to_string),
            },
        );
        wait
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn failed(
        &self,
        uid: &str,
        retry_after: Option<Duration>,
        fingerprint: Option<&str>,
    ) -> Duration {
        let mut inner = self.inner.lock().expect("schedules lock");
        let failures = inner.get(uid).map_or(0, |s| s.failures);
        let wait = delay(failures, retry_after);
        inner.insert(
            uid.to_string(),
            Schedule {
                next_leaf_call: Instant::now() + wait,
                failures: failures.saturating_add(1),
                fingerprint: fingerprint.map(str::to_string),
            },
        );
        wait
    }

    /// Records that a person must act: no automatic Leaf call before `wait`, and later failures
    /// keep growing from where they were.
    pub fn hold(&self, uid: &str, wait: Duration, fingerprint: Option<&str>) {
        let mut inner = self.inner.lock().expect("schedules lock");
        let failures = inner.get(uid).map_or(0, |s| s.failures);
        inner.insert(
            uid.to_string(),
            Schedule {
                next_leaf_call: Instant::now() + wait,
                failures,
                fingerprint: fingerprint.map(str::to_string),
            },
        );
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
            let d = delay(failures, None).as_secs_f64();
            let base = base as f64;
            assert!(
                d >= base * 0.8 && d <= base * 1.2,
                "failures {failures}: {d}"
            );
        }
        let capped = delay(30, None);
        assert!(
            capped <= MAX.mul_f64(1.2) && capped >= MAX.mul_f64(0.8),
            "{capped:?}"
        );
    }

    #[test]
    fn retry_after_is_a_floor() {
        assert!(delay(0, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let schedules = Schedules::default();
        schedules.failed("a", None, None);
        schedules.failed("a", None, None);
        assert_eq!(schedules.get("a").map(|s| s.failures), Some(2));
        schedules.succeeded("a", Duration::from_secs(60), None);
        assert_eq!(schedules.get("a").map(|s| s.failures), Some(0));
        let first_again = schedules.failed("a", None, None);
        assert!(
            first_again <= Duration::from_millis(1200),
            "{first_again:?}"
        );
    }
}
