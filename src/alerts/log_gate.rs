//! A log line at most once per interval, counting what it held back: a flood of forged posts or
//! of connections must not become a flood of log lines (the metrics count every one).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets a log line through at most once per `every` and counts what it held back.
#[derive(Debug)]
pub struct LogGate {
    started: Instant,
    every_ms: u64,
    /// Milliseconds since `started` of the last line let through, plus one (0: never).
    last_ms: AtomicU64,
    held_back: AtomicU64,
}

impl LogGate {
    pub fn new(every: Duration) -> Self {
        Self {
            started: Instant::now(),
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            last_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when this line may be logged.
    pub fn pass(&self, now: Instant) -> Option<u64> {
        let now_ms =
            u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(0) + 1;
        let last = self.last_ms.load(Ordering::Acquire);
        let due = last == 0 || now_ms.saturating_sub(last) >= self.every_ms;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::AcqRel));
        }
        self.held_back.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_gate_lets_one_line_a_second_through_and_counts_the_rest() {
        let gate = LogGate::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(gate.pass(t0), Some(0));
        assert_eq!(gate.pass(t0 + Duration::from_millis(10)), None);
        assert_eq!(gate.pass(t0 + Duration::from_millis(900)), None);
        assert_eq!(gate.pass(t0 + Duration::from_millis(1100)), Some(2));
        assert_eq!(gate.pass(t0 + Duration::from_millis(1200)), None);
    }
}
