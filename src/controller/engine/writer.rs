//! The one place a reconcile's status is written, and the Events that announce a new `Ready`.
//!
//! Every write is finished by the pure `controller::status::finish` and skipped when the result
//! equals what the server holds, because GitOps tools refresh on every status write.

use super::Interrupted;
use super::ports::Ports;
use crate::controller::status::{self, Outcome};
use crate::crd::TrimbleConnectionStatus;
use crate::reason::Reason;

/// Writes one object's status and remembers what is on the server.
pub struct StatusWriter<'p, P> {
    pub(super) ports: &'p P,
    /// The status on the server, updated after each of our writes.
    pub(super) current: TrimbleConnectionStatus,
    generation: Option<i64>,
    /// The annotation value this reconcile answers (echoed into `lastHandledReconcileAt`).
    handled_at: Option<String>,
    /// The reason of the last outcome written (or found unchanged): what the reconcile ended in.
    pub(super) last_reason: Option<Reason>,
}

impl<'p, P: Ports> StatusWriter<'p, P> {
    pub fn new(
        ports: &'p P,
        current: TrimbleConnectionStatus,
        generation: Option<i64>,
        handled_at: Option<String>,
    ) -> Self {
        Self {
            ports,
            current,
            generation,
            handled_at,
            last_reason: None,
        }
    }

    /// The status as it is on the server now.
    pub fn current(&self) -> &TrimbleConnectionStatus {
        &self.current
    }

    /// Writes `next` with the conditions for `outcome`, unless that is exactly what is there.
    /// Emits an Event when the `Ready` reason changes to one the user must hear about.
    pub async fn write(
        &mut self,
        mut next: TrimbleConnectionStatus,
        outcome: &Outcome,
    ) -> Result<(), Interrupted> {
        self.last_reason = Some(outcome.reason);
        if self.handled_at.is_some() {
            next.last_handled_reconcile_at = self.handled_at.clone();
        }
        let finished = status::finish(
            &self.current,
            next,
            outcome,
            self.generation,
            &status::time(self.ports.now()),
        );
        if finished == self.current {
            return Ok(());
        }
        self.ports
            .write_status(&finished)
            .await
            .map_err(Interrupted::WriteStatus)?;
        let previous = status::ready_reason(&self.current);
        self.current = finished;
        if previous != Some(outcome.reason) && announces(previous, outcome.reason) {
            self.ports
                .publish(outcome.reason, "Reconcile", &outcome.message)
                .await;
        }
        Ok(())
    }

    /// Writes `outcome` on the status as it is.
    pub async fn report(&mut self, outcome: &Outcome) -> Result<(), Interrupted> {
        let unchanged = self.current.clone();
        self.write(unchanged, outcome).await
    }
}

/// Whether a new `Ready` reason deserves an Event: every warning does; CredentialValid does when
/// it is a recovery (after Creating or Rotating the Created/Rotated Event already says so).
fn announces(previous: Option<Reason>, reason: Reason) -> bool {
    if reason.is_warning() {
        return true;
    }
    reason == Reason::CredentialValid
        && !matches!(
            previous,
            None | Some(Reason::Creating | Reason::Rotating | Reason::CredentialValid)
        )
}
