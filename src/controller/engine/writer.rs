//! The one place a reconcile's status is written, and the Events that go with it.
//!
//! Every write is finished by the pure `controller::status::finish` and skipped when the result
//! equals what the server holds, because GitOps tools refresh on every status write.

use super::ports::Ports;
use super::{Finished, Interrupted};
use crate::controller::decide::transitions::{Notice, Transition};
use crate::controller::status::{self, Outcome};
use crate::crd::TrimbleConnectionStatus;
use crate::reason::Reason;

/// Writes one object's status and remembers what is on the server.
pub struct StatusWriter<'p, P> {
    pub(super) ports: &'p P,
    /// The status on the server, updated after each of our writes.
    current: TrimbleConnectionStatus,
    generation: Option<i64>,
    /// The annotation value this reconcile answers (echoed into `lastHandledReconcileAt`).
    handled_at: Option<String>,
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
        self.ports.write_status(&finished).await?;
        let previous = status::ready_reason(&self.current);
        self.current = finished;
        if previous != Some(outcome.reason) && announces(previous, outcome.reason) {
            self.ports
                .publish(&Notice {
                    reason: outcome.reason,
                    action: "Reconcile",
                    note: outcome.message.clone(),
                })
                .await;
        }
        Ok(())
    }

    /// Writes a transition's status, then publishes its Events (recorded in the status first, so
    /// a restart cannot announce a Leaf event twice).
    pub async fn finish(&mut self, transition: Transition) -> Result<Finished, Interrupted> {
        let Transition {
            status,
            outcome,
            next,
            notices,
            leaf_events,
        } = transition;
        self.write(status, &outcome).await?;
        for notice in &notices {
            self.ports.publish(notice).await;
        }
        for event in &leaf_events {
            self.ports.publish_leaf_event(event).await;
        }
        Ok(Finished {
            next,
            reason: outcome.reason,
        })
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
