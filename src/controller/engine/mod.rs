//! The reconcile engine: the decision core's answers carried out, through [`Ports`] only.
//!
//! [`apply`] runs the gate, one GET, the chooser and the one executor the chooser picked;
//! [`cleanup`] does the same for a deletion. Neither touches kube-runtime, the API server or
//! Leaf except through `Ports`, so the simulation runs exactly this code against its in-memory
//! world, with a crash, timeout or lost leadership injected at any of its awaits.

mod ports;
mod steps;
mod writer;

use crate::controller::decide::transitions::Transition;
use crate::controller::decide::{self, Facts, Gate, Next};
use crate::reason::Reason;
use crate::secret::TrimbleSecret;

pub use ports::{Ports, StatusWriteError};
pub use writer::StatusWriter;

/// What a reconcile starts from.
pub struct Input<'a> {
    pub facts: Facts,
    /// The Secret's values, when it is complete (what `facts.secret` describes).
    pub secret: Option<&'a TrimbleSecret>,
    /// `metadata.generation`, for `observedGeneration`.
    pub generation: Option<i64>,
    /// The `reconcile-requested-at` value this reconcile answers.
    pub handled_at: Option<String>,
    /// The id of the grower's Magic Link, from its Secret (when the status says one is out).
    pub link_id: Option<secrecy::SecretString>,
}

/// Why a reconcile stopped before finishing its step.
#[derive(Debug, thiserror::Error)]
pub enum Interrupted {
    #[error("failed to write the status: {0}")]
    StatusWrite(#[from] StatusWriteError),
    /// The leadership fence refused a Leaf write: another replica may be leading.
    #[error(
        "not sending {0} to Leaf: this replica cannot prove that it still holds the leader lease"
    )]
    Fenced(&'static str),
}

impl Interrupted {
    pub fn reason(&self) -> Reason {
        match self {
            Self::StatusWrite(_) => Reason::KubeApiError,
            Self::Fenced(_) => Reason::LeadershipLost,
        }
    }
}

/// How a step ended: when to look again, and the `Ready` reason it left on the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub next: Next,
    pub reason: Reason,
}

/// How an apply ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The step ran.
    Done(Finished),
    /// Nothing to do now; reconcile again after this long (None: on a change).
    Quiet(Option<std::time::Duration>),
}

/// One apply: gate, GET, choose, execute.
pub async fn apply<P: Ports>(ports: &P, input: Input<'_>) -> Result<Applied, Interrupted> {
    let gate = decide::gate(&input.facts);
    // Suspend is not an answer to `reconcile-requested-at`: the annotation is echoed only once a
    // reconcile actually runs.
    let handled_at = if input.facts.spec.suspend {
        None
    } else {
        input.handled_at.clone()
    };
    let mut writer = StatusWriter::new(
        ports,
        input.facts.status.clone(),
        input.generation,
        handled_at,
    );
    let finished = match gate {
        Gate::Quiet { requeue } => return Ok(Applied::Quiet(requeue)),
        Gate::Report { outcome, next } => {
            let status = input.facts.status.clone();
            writer
                .finish(Transition::new(status, outcome, next))
                .await?
        }
        Gate::AskLeaf => match ports.get_credential().await {
            Err(error) => {
                tracing::warn!(%error, "reading the Trimble credential from Leaf failed");
                writer
                    .finish(decide::transitions::leaf_failed(
                        input.facts.status.clone(),
                        &error,
                        "reading the Trimble credential from Leaf",
                    ))
                    .await?
            }
            Ok(seen) => {
                let step = decide::choose(&input.facts, seen.as_ref());
                steps::execute(&mut writer, &input, step).await?
            }
        },
    };
    Ok(Applied::Done(finished))
}

/// How a cleanup ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Cleaned {
    /// Nothing (more) to do in Leaf: the finalizer may go.
    Released,
    /// Not yet: look again per `next`; `reason` is what the resource shows.
    Again { next: Next, reason: Reason },
}

/// One cleanup: gate, GET, choose, execute.
pub async fn cleanup<P: Ports>(ports: &P, input: Input<'_>) -> Result<Cleaned, Interrupted> {
    steps::cleanup::run(ports, input).await
}
