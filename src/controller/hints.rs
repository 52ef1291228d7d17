//! Hints: the objects Leaf's alerts asked the operator to look at now.
//!
//! An alert is a hint, never the truth: it only makes the next reconcile of that object skip the
//! schedule once and GET the credential from Leaf. A hint is keyed by the object's uid (stable
//! across renames of nothing, and never reused) and is consumed by the reconcile that honours it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this many pending hints, stale ones are dropped (an object deleted before its reconcile
/// ran never takes its hint). Every pending hint is for an object in the index, so the map stays
/// within the number of managed objects anyway.
const PRUNE_ABOVE: usize = 4096;
/// A hint older than this is stale: its reconcile ran (or the object went away) long ago.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// uid -> when an alert asked for a look (the earliest unanswered ask).
#[derive(Debug, Default)]
pub struct Hints {
    pending: Mutex<HashMap<String, Instant>>,
}

impl Hints {
    /// Records that an alert asked for a look at `uid` at `at`. Returns false when a hint for it
    /// was already pending (the earlier time is kept: it is when the question was first asked).
    pub fn nudge(&self, uid: &str, at: Instant) -> bool {
        let mut pending = self.pending.lock().expect("hints lock");
        if pending.len() > PRUNE_ABOVE {
            pending.retain(|_, asked| at.saturating_duration_since(*asked) < STALE_AFTER);
        }
        match pending.get(uid) {
            Some(_) => false,
            None => {
                pending.insert(uid.to_string(), at);
                true
            }
        }
    }

    /// Takes the hint for `uid`, if any: the caller now answers it (one Leaf look per hint).
    pub fn take(&self, uid: &str) -> Option<Instant> {
        self.pending.lock().expect("hints lock").remove(uid)
    }

    /// How many hints wait for their reconcile.
    pub fn len(&self) -> usize {
        self.pending.lock().expect("hints lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_is_taken_once_and_keeps_the_first_time() {
        let hints = Hints::default();
        let first = Instant::now();
        assert!(hints.nudge("uid-1", first));
        assert!(!hints.nudge("uid-1", first + Duration::from_secs(5)));
        assert_eq!(hints.take("uid-1"), Some(first));
        assert_eq!(hints.take("uid-1"), None, "a hint is answered once");
        assert_eq!(hints.take("uid-2"), None);
    }

    #[test]
    fn stale_hints_are_pruned_once_many_are_pending() {
        let hints = Hints::default();
        let old = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            hints.nudge(&format!("old-{i}"), old);
        }
        assert_eq!(hints.len(), PRUNE_ABOVE + 1);
        hints.nudge("new", old + STALE_AFTER + Duration::from_secs(1));
        assert_eq!(hints.len(), 1, "only the fresh hint is left");
        assert!(hints.take("new").is_some());
    }
}
