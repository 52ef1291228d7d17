//! What an alert does: find the TrimbleConnection owning its credential and ask for a reconcile
//! now. Shared by the receiver (after the signature verified) and the replay of Leaf's failed
//! calls (trusted: they come from Leaf's authenticated API).
//!
//! The alert is only a hint. Its `status` is never written anywhere: the reconcile it triggers
//! GETs the credential from Leaf, which is the truth (alerts come unordered and may be stale).

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info};

use super::dedupe::Dedupe;
use super::payload::{self, Payload, PayloadError};
use crate::controller::Context;

/// Where an alert body came from (the metric's `source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Receiver,
    FailedCall,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receiver => "receiver",
            Self::FailedCall => "failed_calls",
        }
    }
}

/// What an alert led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Reconciles of this many objects were asked for.
    Triggered(usize),
    /// Acted on already within the dedupe window (a retry or a replay).
    Duplicate,
    /// No TrimbleConnection here owns the credential.
    Unmanaged,
    /// A credentials event of another provider.
    OtherProvider,
    /// The registration confirmation (changes nothing).
    Confirmation,
    /// An event type this operator does not act on.
    IgnoredType,
    /// Unreadable after all.
    Malformed(PayloadError),
}

impl Handled {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Triggered(_) => "triggered",
            Self::Duplicate => "duplicate",
            Self::Unmanaged => "unmanaged",
            Self::OtherProvider => "other_provider",
            Self::Confirmation => "confirmation",
            Self::IgnoredType => "ignored_type",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// Turns trusted alert bodies into reconcile triggers.
pub struct AlertHandler {
    ctx: Arc<Context>,
    dedupe: Dedupe,
}

impl AlertHandler {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self::with_dedupe(ctx, Dedupe::default())
    }

    pub fn with_dedupe(ctx: Arc<Context>, dedupe: Dedupe) -> Self {
        Self { ctx, dedupe }
    }

    /// Whether "not in the index" means "not ours": the controller's watches have synced.
    pub fn is_ready(&self) -> bool {
        self.ctx.credentials.is_synced()
    }

    /// Handles one body that is trusted (verified, or from Leaf's API). Counts the outcome.
    pub fn handle(&self, body: &[u8], source: Source, now: Instant) -> Handled {
        self.handle_parsed(payload::parse(body), source, now)
    }

    /// [`AlertHandler::handle`] for a body already parsed (the receiver also reads its
    /// timestamp).
    pub fn handle_parsed(
        &self,
        parsed: Result<Payload, PayloadError>,
        source: Source,
        now: Instant,
    ) -> Handled {
        let handled = self.decide(parsed, source, now);
        let metrics = &self.ctx.metrics.alerts;
        if let Handled::Malformed(error) = handled {
            metrics.rejected("malformed");
            debug!(
                source = source.as_str(),
                problem = error.label(),
                "alert body unreadable"
            );
        }
        metrics.handled(source.as_str(), handled.as_str());
        handled
    }

    fn decide(
        &self,
        parsed: Result<Payload, PayloadError>,
        source: Source,
        now: Instant,
    ) -> Handled {
        let alert = match parsed {
            Ok(Payload::Credentials(alert)) => alert,
            Ok(Payload::Confirmation) => {
                info!(
                    source = source.as_str(),
                    "Leaf confirmed the webhook registration"
                );
                return Handled::Confirmation;
            }
            Ok(Payload::Other { event_type, .. }) => {
                debug!(source = source.as_str(), %event_type, "alert of another type ignored");
                return Handled::IgnoredType;
            }
            Err(error) => return Handled::Malformed(error),
        };
        if !alert.is_trimble() {
            return Handled::OtherProvider;
        }
        let targets = self.ctx.credentials.lookup(&alert.credential_id);
        if targets.is_empty() {
            debug!(
                source = source.as_str(),
                credential_id = %alert.credential_id,
                "alert for a credential no TrimbleConnection here owns"
            );
            return Handled::Unmanaged;
        }
        // Recorded only for managed credentials: an alert that arrived before its object was in
        // the index is acted on when Leaf retries it or it is replayed.
        if !self.dedupe.first_time(alert.dedupe_key(), now) {
            debug!(source = source.as_str(), credential_id = %alert.credential_id, "alert acted on already");
            return Handled::Duplicate;
        }
        for target in &targets {
            self.ctx.hints.nudge(&target.uid, now);
            let delivered = self.ctx.triggers.fire(&target.object);
            info!(
                source = source.as_str(),
                event = alert.event.as_str(),
                credential_id = %alert.credential_id,
                alert_status = alert.status.as_deref().unwrap_or(""),
                namespace = target.object.namespace.as_deref().unwrap_or(""),
                trimbleconnection = %target.object.name,
                delivered,
                "Leaf alert: checking the credential now"
            );
        }
        Handled::Triggered(targets.len())
    }
}
