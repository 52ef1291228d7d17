//! A token bucket shared by every caller of one client (and its clones), logins included.
//!
//! Callers reserve a slot under a short lock and then sleep outside it, so waiting callers are
//! served in the order they arrived and never hold the lock across an await.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// `None` disables limiting.
    limit: Option<Limit>,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct Limit {
    per_second: f64,
    burst: f64,
}

#[derive(Debug)]
struct State {
    /// Available tokens; negative when callers have reserved future tokens.
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub(crate) fn new(requests_per_second: f64, burst: u32) -> Self {
        let limit = (requests_per_second.is_finite() && requests_per_second > 0.0).then(|| Limit {
            per_second: requests_per_second,
            burst: f64::from(burst.max(1)),
        });
        Self {
            state: Mutex::new(State {
                tokens: limit.map_or(0.0, |l| l.burst),
                last: Instant::now(),
            }),
            limit,
        }
    }

    /// How long the caller must wait for its slot; reserves the slot.
    fn reserve(&self) -> Duration {
        let Some(limit) = self.limit else {
            return Duration::ZERO;
        };
        let mut state = self.state.lock().expect("rate limiter lock");
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(state.last).as_secs_f64();
        state.tokens = (state.tokens + elapsed * limit.per_second).min(limit.burst);
        state.last = now;
        state.tokens -= 1.0;
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / limit.per_second)
        }
    }

    /// Waits until one more request may go out.
    pub(crate) async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn burst_goes_at_once_then_the_rate_applies() {
        let limiter = RateLimiter::new(50.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(20),
            "{:?}",
            start.elapsed()
        );
        for _ in 0..10 {
            limiter.acquire().await;
        }
        // Ten more at 50/s need 200 ms.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(195) && elapsed < Duration::from_millis(400),
            "{elapsed:?}"
        );
    }

    #[tokio::test]
    async fn zero_rate_means_unlimited() {
        let limiter = RateLimiter::new(0.0, 1);
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
