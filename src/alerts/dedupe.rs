//! Remembers which alerts were acted on, so that a retried or replayed delivery acts once.
//!
//! Leaf sends no event id and retries a delivery at 1, 30, 60 and 240 minutes; failed calls can
//! also be replayed later. An alert's identity is (type, credentialId, timestamp, status). The
//! window is bounded twice: by age (longer than Leaf's retry horizon of about 5.5 hours) and by
//! count (the oldest are forgotten first). Only a keyed 64-bit hash of each identity is kept
//! (SipHash with a random key, so a sender cannot aim at collisions): 20,000 alerts take under
//! a megabyte.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longer than Leaf's last retry (240 minutes after the first failure) plus replay lag.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(6 * 3600);
/// More than one alert per connection of a 20,000-connection fleet.
pub const DEFAULT_CAPACITY: usize = 50_000;

#[derive(Debug)]
struct Inner {
    seen: HashMap<u64, Instant>,
    order: VecDeque<(u64, Instant)>,
}

/// A bounded set of recently acted-on alert identities.
#[derive(Debug)]
pub struct Dedupe {
    inner: Mutex<Inner>,
    hasher: RandomState,
    window: Duration,
    capacity: usize,
}

impl Default for Dedupe {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW, DEFAULT_CAPACITY)
    }
}

impl Dedupe {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                seen: HashMap::new(),
                order: VecDeque::new(),
            }),
            hasher: RandomState::new(),
            window,
            capacity: capacity.max(1),
        }
    }

    /// Records `key` at `now`; true when it was not seen within the window (act on it).
    pub fn first_time(&self, key: impl Hash, now: Instant) -> bool {
        let hash = self.hasher.hash_one(key);
        let mut inner = self.inner.lock().expect("dedupe lock");
        // Forget what aged out, and the oldest beyond the capacity.
        while let Some(&(old, at)) = inner.order.front() {
            let expired = now.saturating_duration_since(at) >= self.window;
            if !expired && inner.order.len() < self.capacity {
                break;
            }
            inner.order.pop_front();
            if inner.seen.get(&old) == Some(&at) {
                inner.seen.remove(&old);
            }
        }
        if inner.seen.contains_key(&hash) {
            return false;
        }
        inner.seen.insert(hash, now);
        inner.order.push_back((hash, now));
        true
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("dedupe lock").seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_refused_and_acts_again_after_it() {
        let dedupe = Dedupe::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        assert!(dedupe.first_time(("a", "c1", "t", "S"), t0));
        assert!(!dedupe.first_time(("a", "c1", "t", "S"), t0 + Duration::from_secs(59)));
        assert!(
            dedupe.first_time(("a", "c1", "t2", "S"), t0),
            "another timestamp is another alert"
        );
        assert!(
            dedupe.first_time(("a", "c1", "t", "S"), t0 + Duration::from_secs(61)),
            "outside the window it is new again"
        );
    }

    #[test]
    fn the_window_never_holds_more_than_its_capacity() {
        let dedupe = Dedupe::new(Duration::from_secs(3600), 3);
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(dedupe.first_time(i, t0));
        }
        assert_eq!(dedupe.len(), 3);
        assert!(dedupe.first_time(0, t0), "the oldest were forgotten first");
        assert!(!dedupe.first_time(9, t0), "the newest are remembered");
    }
}
