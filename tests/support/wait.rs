//! Polling helpers: tests wait on observable conditions with a timeout, never on sleeps.

use std::future::Future;
use std::panic::Location;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some(value)` and returns that value; panics after `timeout`,
/// naming the caller's file and line.
///
/// ```ignore
/// let tc = wait_for(Duration::from_secs(30), || async { api.get_opt("x").await.unwrap() }).await;
/// ```
#[track_caller]
pub fn wait_for<T, F, Fut>(timeout: Duration, check: F) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let caller = Location::caller();
    wait_for_named(format!("the condition at {caller}"), timeout, check)
}

/// Like [`wait_for`], with a description of what is awaited for the failure message.
pub async fn wait_for_named<T, F, Fut>(
    what: impl Into<String>,
    timeout: Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let what = what.into();
    match poll(timeout, || {
        let attempt = check();
        async move { attempt.await.ok_or(()) }
    })
    .await
    {
        Ok(value) => value,
        Err(()) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `check` until it returns `Ok(value)`; after `timeout` panics with `what` and the last
/// `Err` it returned, so a failure says what was expected and what came instead.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    match poll(timeout, check).await {
        Ok(value) => value,
        Err(last) => panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}"),
    }
}

/// Checks at least once, then again with a gently growing interval, until `timeout`.
async fn poll<T, E, F, Fut>(timeout: Duration, mut check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(50);
    loop {
        let result = check().await;
        if result.is_ok() || Instant::now() >= deadline {
            return result;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(interval.min(left)).await;
        interval = (interval * 3 / 2).min(Duration::from_millis(500));
    }
}
