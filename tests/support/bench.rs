//! Measuring helpers of the benchmarks: a process's memory and CPU from `/proc`, percentiles,
//! environment knobs, and applying many objects with bounded parallelism.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

unsafe extern "C" {
    fn sysconf(name: i32) -> i64;
}
const SC_CLK_TCK: i32 = 2;

/// Resident memory now and at its peak, and CPU seconds used, of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub cpu_secs: f64,
}

/// `VmRSS`, `VmHWM` (from `/proc/PID/status`) and utime + stime (from `/proc/PID/stat`).
pub fn process_stats(pid: u32) -> ProcessStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|close| stat[close + 1..].split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15; after the command name they are at index 11 and 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { sysconf(SC_CLK_TCK) }.max(1) as f64;
    ProcessStats {
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
        cpu_secs: (ticks(11) + ticks(12)) / hz,
    }
}

/// The value of environment variable `key` parsed, or `default` when unset or blank; panics
/// naming the variable when it does not parse.
pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key}={value:?} is not a valid value")),
        _ => default,
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of `samples`; `None` when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Runs `f(i)` for i in 0..n with at most `parallel` in flight; panics on the first error.
pub async fn for_each_parallel<F, Fut, E>(n: usize, parallel: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    futures::stream::iter((0..n).map(|i| {
        let fut = f(i);
        async move { fut.await.map_err(|e| format!("item {i}: {e}")) }
    }))
    .buffer_unordered(parallel)
    .try_collect::<Vec<()>>()
    .await
    .unwrap_or_else(|e| panic!("applying objects failed: {e}"));
}

/// `12.3 s`, or `850 ms` below a second.
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
