//! When kube-runtime looks at an object again: each way a reconcile can end, recorded in the
//! per-object schedule and turned into a wait. The simulation runs this same mapping.

use std::time::{Duration, Instant};

use super::observe::Pace;
use crate::controller::backoff::{STALLED_RECHECK, Schedules};
use crate::controller::engine::{Applied, Cleaned};

/// How a reconcile of one object ended.
pub enum Ended<'a> {
    Applied(&'a Applied),
    Cleaned(&'a Cleaned),
    /// Stopped before finishing its step (a failed status write, the fence).
    Interrupted,
    /// A failure before any decision (an API read): retried with backoff.
    Failed,
    /// Waiting on purpose, for this long (kube-runtime keeps the finalizer on an error).
    Retry(Duration),
}

/// Records how the reconcile of `uid` ended and returns when to look again (`None`: only a
/// change of the object or its Secrets brings the next reconcile).
pub fn requeue(
    schedules: &Schedules,
    uid: &str,
    pace: Option<&Pace>,
    ended: Ended<'_>,
    now: Instant,
) -> Option<Duration> {
    match (ended, pace) {
        (Ended::Applied(Applied::Quiet(requeue)), _) => *requeue,
        (Ended::Applied(Applied::Done(finished)), Some(pace)) => {
            schedules.record(uid, &pace.inputs, &finished.next, pace.interval, now)
        }
        (Ended::Cleaned(Cleaned::Released), _) => {
            schedules.forget(uid);
            None
        }
        (Ended::Cleaned(Cleaned::Again { next, .. }), Some(pace)) => Some(
            schedules
                .record(uid, &pace.inputs, next, pace.interval, now)
                .unwrap_or(STALLED_RECHECK),
        ),
        (Ended::Retry(wait), _) => Some(wait),
        (Ended::Interrupted | Ended::Failed, _)
        | (Ended::Applied(Applied::Done(_)) | Ended::Cleaned(Cleaned::Again { .. }), None) => {
            Some(schedules.failed(uid, now))
        }
    }
}
