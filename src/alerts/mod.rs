//! Leaf alerts: Leaf pushes credentials events, the operator listens, and polling becomes the
//! backstop (issue 12).
//!
//! - [`receiver`]: `POST /alerts` on its own port; verifies [`signature`] before [`payload`]
//!   parses anything; 401 / 413 / 408 / 400 / 503 for what it refuses. [`connections`] serves it
//!   within bounds (header and body read timeouts, one request per connection, a connection
//!   limit), and [`freshness`] decides which verified deliveries count as hearing from Leaf.
//! - [`handler`]: maps a credential id to its TrimbleConnection through the controller's
//!   `CredentialIndex`, [`dedupe`]s retries, and triggers a reconcile at once (a hint: the
//!   reconcile GETs the credential from Leaf, the truth).
//! - [`registration`]: opt-in registration of our webhook with Leaf's Alerts API: ours is the id
//!   we created (kept in the [`webhook_record`] ConfigMap, with the intent of a create in doubt),
//!   its safe replacement, foreign webhooks (never deleted, reported), and the replay of failed
//!   calls.
//! - [`signing_secret`]: the signing secret from a Kubernetes Secret, watched.
//! - [`routing`]: the leader labels its own Pod so that the receiver's Service routes to it.
//! - whether alerts are healthy enough for polling to become the backstop is
//!   `controller::polling`: the schedule reads it, this module reports to it, and
//!   [`polling_switch`] announces and applies each switch (metric, Event on the Pod, re-pacing).
//!
//! Layering: this module sits above `controller` (it uses the index, hints and triggers in the
//! controller's `Context`, and reports to the polling health the `Context` was built with);
//! `controller` never imports it.

pub mod connections;
pub mod dedupe;
pub mod freshness;
pub mod handler;
mod log_gate;
pub mod payload;
pub mod polling_switch;
pub mod receiver;
pub mod registration;
pub mod routing;
pub mod signature;
pub mod signing_secret;
pub mod webhook_record;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::controller::Context;
use crate::default_account::DefaultAccount;
use crate::http::HttpError;

use crate::controller::polling::{AlertsHealth, HealthConfig, Registration};
use handler::AlertHandler;
use polling_switch::{OwnPod, PollingSwitch};
use registration::{Registrar, RegistrationConfig};
use signing_secret::{SecretLocation, SigningKeys};

/// The alerts settings, from the configuration.
#[derive(Clone, Debug)]
pub struct AlertsConfig {
    pub addr: SocketAddr,
    pub secret: SecretLocation,
    /// Set when the operator registers the webhook itself (`--alerts-register`).
    pub registration: Option<RegistrationConfig>,
    pub health: HealthConfig,
    /// The operator's own Pod, for the Events announcing a polling switch (None: no Events).
    pub pod: Option<OwnPod>,
}

impl AlertsConfig {
    /// The alerts health these settings start with: `Pending` until the first registration check
    /// when the operator registers the webhook, else `SecretOnly` (someone else registered it).
    ///
    /// Made before the controller's `Context`, which holds it from the start (the schedule reads
    /// it), and then handed to [`Alerts::start`], which reports to it.
    pub fn new_health(&self) -> Arc<AlertsHealth> {
        let initial = if self.registration.is_some() {
            Registration::Pending
        } else {
            Registration::SecretOnly
        };
        Arc::new(AlertsHealth::new(self.health, initial))
    }
}

/// A running receiver, and the registration loop to run while this replica leads.
pub struct Alerts {
    pub addr: SocketAddr,
    pub health: Arc<AlertsHealth>,
    registrar: Option<Registrar>,
    ctx: Arc<Context>,
    pod: Option<OwnPod>,
}

impl Alerts {
    /// Starts watching the signing secret and serving the receiver (on every replica: a standby
    /// answers 503, so Leaf retries until the leader gets it).
    ///
    /// `health` is the one `ctx` holds (from [`AlertsConfig::new_health`]): the receiver and the
    /// registration loop report to it, the schedule reads it.
    pub async fn start(
        config: AlertsConfig,
        health: Arc<AlertsHealth>,
        ctx: Arc<Context>,
        account: DefaultAccount,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Alerts, HttpError> {
        let keys = Arc::new(SigningKeys::default());
        tokio::spawn(signing_secret::watch(
            ctx.client.clone(),
            config.secret.clone(),
            keys.clone(),
        ));
        let initial = health.registration();
        let all: Vec<&'static str> = Registration::ALL.iter().map(|r| r.as_str()).collect();
        ctx.metrics.alerts.set_webhook_state(initial.as_str(), &all);
        if config.registration.is_some() {
            ctx.metrics.alerts.set_foreign_webhook(None);
        }
        let handler = Arc::new(AlertHandler::new(ctx.clone()));
        let receiver = Arc::new(receiver::Receiver::new(
            keys.clone(),
            handler.clone(),
            health.clone(),
            ctx.metrics.clone(),
        ));
        let addr = receiver::serve(config.addr, receiver, shutdown).await?;
        let registrar = config.registration.map(|registration| {
            Registrar::new(
                registration,
                ctx.clone(),
                account,
                keys.clone(),
                handler.clone(),
                health.clone(),
                config.pod.clone(),
            )
        });
        Ok(Alerts {
            addr,
            health,
            registrar,
            ctx,
            pod: config.pod,
        })
    }

    /// The work to run while this replica leads: the registration loop (if registering) and the
    /// polling switch.
    pub fn leader_work<S>(&self, stop: S) -> impl Future<Output = ()> + Send + 'static + use<S>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let registrar = self.registrar.clone();
        let switch = PollingSwitch {
            ctx: self.ctx.clone(),
            health: self.health.clone(),
            pod: self.pod.clone(),
        };
        async move {
            let stop = futures::FutureExt::shared(stop);
            let switch = switch.run(stop.clone());
            match registrar {
                Some(registrar) => {
                    futures::join!(registrar.run(stop), switch);
                }
                None => switch.await,
            }
        }
    }
}

/// The default interval between registration checks.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(600);
