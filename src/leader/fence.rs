//! The leadership fence: whether this replica may write to Leaf at this instant.
//!
//! Leader election alone is not enough: between losing the lease and noticing it, a replica could
//! still POST or DELETE while the new leader does the same. The fence closes that gap from the
//! inside. The leader loop keeps a deadline, "the lease is certainly ours until then" (its last
//! confirmed renewal plus the lease duration, minus a safety margin), and revokes it the moment
//! anything is in doubt; every POST and DELETE checks it immediately before it is sent.

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A cheap, cloneable view of the leadership state.
#[derive(Clone, Debug)]
pub struct Fence {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug)]
enum State {
    /// No leader election: this is the only replica, it may always write.
    Unelected,
    /// Elected: writes are allowed until `until` (None: not leading).
    Elected { until: Option<Instant> },
}

impl Fence {
    /// A fence that always holds, for running without leader election.
    pub fn unelected() -> Self {
        Self {
            inner: Arc::new(Mutex::new(State::Unelected)),
        }
    }

    /// A fence that holds only while [`Fence::hold_until`] says so.
    pub fn elected() -> Self {
        Self {
            inner: Arc::new(Mutex::new(State::Elected { until: None })),
        }
    }

    /// Whether a Leaf write may be sent now.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    /// Whether a Leaf write may be sent at `now` (the simulation runs its own clock).
    pub fn holds_at(&self, now: Instant) -> bool {
        match &*self.inner.lock().expect("fence lock") {
            State::Unelected => true,
            State::Elected { until } => until.is_some_and(|until| now < until),
        }
    }

    /// The lease is certainly ours until `until` (already shortened by the safety margin).
    pub fn hold_until(&self, until: Instant) {
        if let State::Elected { until: current } = &mut *self.inner.lock().expect("fence lock") {
            *current = Some(until);
        }
    }

    /// Leadership is in doubt or gone: no Leaf write from now on.
    pub fn revoke(&self) {
        if let State::Elected { until } = &mut *self.inner.lock().expect("fence lock") {
            *until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_elected_fence_holds_only_until_its_deadline_or_revocation() {
        assert!(Fence::unelected().holds());
        let fence = Fence::elected();
        assert!(!fence.holds(), "not leading yet");
        fence.hold_until(Instant::now() + Duration::from_secs(60));
        assert!(fence.holds());
        let clone = fence.clone();
        clone.revoke();
        assert!(!fence.holds(), "clones share the state");
        fence.hold_until(Instant::now() - Duration::from_millis(1));
        assert!(!fence.holds(), "a passed deadline does not hold");
    }
}
