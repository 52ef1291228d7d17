//! Webhook registration (opt-in, `--alerts-register`): keep one webhook of the default Leaf
//! account pointing at our receiver for the two credentials events, and catch up on missed
//! deliveries from Leaf's failed calls.
//!
//! Which webhook is ours: the one with our name (`--alerts-webhook-name`, by default the Lease
//! name, so each shard has its own). It is reused after a restart when its URL, events and
//! secret are still right.
//!
//! Replacing it (URL or secret changed): Leaf has no update, and an event can belong to only one
//! webhook per account (`400 eventRegisteredTwice`), so "create the new one first" is impossible:
//! the new one would be refused while the old one holds the events. The order is therefore
//! DELETE ours, then POST the new one at once. Deliveries in the gap (one round trip) are lost to
//! push, which is why the replay of failed calls and the polling backstop exist; deliveries still
//! signed with the old secret are accepted for a grace period (see `signing_secret`).
//!
//! A webhook that is not ours holding one of the events is never deleted: the operator says so
//! (state `foreign`, the `alerts_event_registered_twice` counter, a warning) and keeps polling.
//!
//! Replay: Leaf's failed calls for our URL are fed to the same handler as deliveries, without a
//! signature check (they come from Leaf's authenticated API). Dedupe makes a replay of something
//! already acted on a no-op.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use tracing::{info, warn};

use super::handler::{AlertHandler, Source};
use super::payload::{CREDENTIALS_LIMITED_PERMISSION, CREDENTIALS_UNAUTHENTICATED};
use super::signing_secret::SigningKeys;
use crate::controller::polling::{AlertsHealth, Registration};
use crate::default_account::DefaultAccount;
use crate::leaf::alerts::{CreateWebhookError, NewWebhook, Webhook};
use crate::leaf::{LeafClient, LeafError};
use crate::metrics::Metrics;

/// The events the operator registers.
pub const EVENTS: [&str; 2] = [CREDENTIALS_UNAUTHENTICATED, CREDENTIALS_LIMITED_PERMISSION];
/// How far back the first replay after a start looks (Leaf retries for about 5.5 hours).
pub const REPLAY_LOOKBACK: Duration = Duration::from_secs(24 * 3600);
/// Overlap between consecutive replays, for clock skew between Leaf and us.
const REPLAY_OVERLAP: Duration = Duration::from_secs(300);
/// Longest wait before retrying after a failed check.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// What the next registration step is, decided from Leaf's list of webhooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Ours is in place (URL, events and secret right).
    Keep { id: String },
    /// Nothing of ours and the events are free.
    Create,
    /// Ours is outdated: delete these (all ours), then create.
    Replace {
        delete: Vec<String>,
        why: &'static str,
    },
    /// Another webhook owns one of the events: touch nothing.
    Foreign {
        owner_id: String,
        owner_name: String,
        events: Vec<String>,
    },
}

/// Decides from the account's webhooks. `ours` = same name; secrets compared in constant time.
pub fn plan(webhooks: &[Webhook], name: &str, url: &str, secret: &str) -> Plan {
    let ours: Vec<&Webhook> = webhooks.iter().filter(|w| w.name == name).collect();
    let mut foreign_events = Vec::new();
    let mut owner = None;
    for event in EVENTS {
        if let Some(other) = webhooks
            .iter()
            .find(|w| w.name != name && w.events.iter().any(|e| e == event))
        {
            foreign_events.push(event.to_string());
            owner.get_or_insert(other);
        }
    }
    if let Some(owner) = owner {
        return Plan::Foreign {
            owner_id: owner.id.clone(),
            owner_name: owner.name.clone(),
            events: foreign_events,
        };
    }
    let exact = ours.iter().find(|w| {
        same_url(&w.url, url)
            && EVENTS.iter().all(|e| w.events.iter().any(|have| have == e))
            && constant_time_eq(w.secret.expose_secret().as_bytes(), secret.as_bytes())
    });
    match (exact, ours.first()) {
        (Some(w), _) if ours.len() == 1 => Plan::Keep { id: w.id.clone() },
        (_, None) => Plan::Create,
        (exact, Some(first)) => {
            let why = if exact.is_some() {
                "more than one webhook has our name"
            } else if !same_url(&first.url, url) {
                "its URL changed"
            } else if !EVENTS
                .iter()
                .all(|e| first.events.iter().any(|have| have == e))
            {
                "it lacks one of the credentials events"
            } else {
                "its signing secret changed"
            };
            Plan::Replace {
                delete: ours.iter().map(|w| w.id.clone()).collect(),
                why,
            }
        }
    }
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim().trim_end_matches('/') == b.trim().trim_end_matches('/')
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The registration loop's settings.
#[derive(Clone, Debug)]
pub struct RegistrationConfig {
    pub name: String,
    pub url: String,
    pub check_interval: Duration,
}

/// Keeps our webhook registered and replays missed deliveries while this replica leads.
#[derive(Clone)]
pub struct Registrar {
    pub config: RegistrationConfig,
    pub leaf: LeafClient,
    /// The default Leaf account, read anew at every check (a mounted Secret rotates).
    pub account: DefaultAccount,
    pub keys: Arc<SigningKeys>,
    pub handler: Arc<AlertHandler>,
    pub health: Arc<AlertsHealth>,
    pub metrics: Arc<Metrics>,
}

impl Registrar {
    fn set_state(&self, state: Registration) {
        let previous = self.health.registration();
        self.health.set_registration(state);
        let all: Vec<&'static str> = Registration::ALL.iter().map(|r| r.as_str()).collect();
        self.metrics.alerts.set_webhook_state(state.as_str(), &all);
        if previous != state {
            info!(
                from = previous.as_str(),
                to = state.as_str(),
                "webhook registration state changed"
            );
        }
    }

    /// Runs until `stop` resolves. Waits for the signing secret and the controller's index (a
    /// replay before the index is complete would drop alerts as "not ours").
    pub async fn run(self, stop: impl Future<Output = ()> + Send) {
        tokio::pin!(stop);
        self.set_state(Registration::Pending);
        let mut changes = self.keys.subscribe();
        loop {
            if self.keys.is_loaded() && self.handler.is_ready() {
                break;
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        let mut replay_since: Option<jiff::Timestamp> = None;
        loop {
            changes.borrow_and_update();
            let started = jiff::Timestamp::now();
            let state = self.check_once().await;
            self.set_state(state);
            let ok = !matches!(state, Registration::Failing | Registration::Missing);
            if matches!(state, Registration::Registered) {
                self.health.heard_from_leaf(Instant::now());
            }
            if ok {
                let since = replay_since.unwrap_or_else(|| {
                    started
                        .checked_sub(REPLAY_LOOKBACK)
                        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
                });
                if self.replay(since).await {
                    replay_since = Some(
                        started
                            .checked_sub(REPLAY_OVERLAP)
                            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                    );
                }
            }
            let wait = if ok {
                self.config.check_interval
            } else {
                self.config.check_interval.min(RETRY_AFTER_FAILURE)
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
                // A new signing secret: re-register at once.
                _ = changes.changed() => {}
            }
        }
    }

    fn leaf_failed(&self, what: &str, error: LeafError) -> Registration {
        let secret = self.keys.current();
        let secret = secret.as_ref().map(|s| s.expose_secret()).unwrap_or("");
        let error = error.without_values(&[secret]);
        warn!(%error, "webhook registration: {what} failed; polling continues and it is tried again");
        Registration::Failing
    }

    async fn check_once(&self) -> Registration {
        let Some(secret) = self.keys.current() else {
            return Registration::Pending;
        };
        let Some(account) = self.account.current() else {
            warn!("webhook registration: no default Leaf account; polling continues");
            return Registration::Failing;
        };
        let webhooks = match self.leaf.list_webhooks(&account).await {
            Ok(webhooks) => webhooks,
            Err(error) => return self.leaf_failed("listing Leaf's webhooks", error),
        };
        let name = &self.config.name;
        let url = &self.config.url;
        match plan(&webhooks, name, url, secret.expose_secret()) {
            Plan::Keep { .. } => Registration::Registered,
            Plan::Foreign {
                owner_id,
                owner_name,
                events,
            } => {
                self.metrics.alerts.event_registered_twice();
                self.foreign(&owner_id, &owner_name, &events);
                Registration::Foreign
            }
            Plan::Replace { delete, why } => {
                info!(%why, count = delete.len(), "replacing our Leaf webhook: delete, then create (Leaf allows one webhook per event)");
                for id in delete {
                    if let Err(error) = self.leaf.delete_webhook(&account, &id).await {
                        return self.leaf_failed("deleting our outdated webhook", error);
                    }
                    info!(webhook_id = %id, "deleted our outdated Leaf webhook");
                }
                self.create(&account, &secret).await
            }
            Plan::Create => self.create(&account, &secret).await,
        }
    }

    async fn create(
        &self,
        account: &crate::leaf::LeafAccount,
        secret: &secrecy::SecretString,
    ) -> Registration {
        let webhook = NewWebhook {
            name: &self.config.name,
            url: &self.config.url,
            events: &EVENTS,
            secret,
        };
        match self.leaf.create_webhook(account, &webhook).await {
            Ok(id) => {
                info!(webhook_id = %id, name = %self.config.name, url = %self.config.url, "registered the Leaf webhook for the credentials events");
                Registration::Registered
            }
            Err(CreateWebhookError::EventRegisteredTwice) => {
                // Someone registered the events between our list and our create.
                self.metrics.alerts.event_registered_twice();
                self.foreign("unknown", "unknown", &EVENTS.map(str::to_string));
                Registration::Foreign
            }
            Err(CreateWebhookError::Leaf(error)) => {
                self.leaf_failed("creating our webhook", error);
                Registration::Missing
            }
        }
    }

    fn foreign(&self, owner_id: &str, owner_name: &str, events: &[String]) {
        warn!(
            owner_webhook_id = %owner_id,
            owner_webhook_name = %owner_name,
            events = ?events,
            "eventRegisteredTwice: another webhook of this Leaf account already receives the credentials events; \
             it is not ours and is never deleted. Alerts stay off and every connection keeps polling at its refreshInterval. \
             Remove that webhook, or give this operator only the signing secret and forward its deliveries to our receiver"
        );
    }

    /// Replays failed calls for our URL created at or after `since`; false when they could not
    /// be read.
    async fn replay(&self, since: jiff::Timestamp) -> bool {
        let Some(account) = self.account.current() else {
            return false;
        };
        let calls = match self.leaf.failed_calls(&account).await {
            Ok(calls) => calls,
            Err(error) => {
                self.leaf_failed("reading Leaf's failed calls", error);
                return false;
            }
        };
        let mut replayed = 0usize;
        for call in calls {
            if call
                .url
                .as_deref()
                .is_some_and(|u| !same_url(u, &self.config.url))
            {
                continue;
            }
            let created = call
                .created_at
                .as_deref()
                .and_then(super::payload::parse_timestamp);
            if created.is_some_and(|at| at < since) {
                continue;
            }
            let Some(body) = call.request_body else {
                continue;
            };
            self.metrics.alerts.received(Source::FailedCall.as_str());
            self.handler
                .handle(body.as_bytes(), Source::FailedCall, Instant::now());
            replayed += 1;
        }
        if replayed > 0 {
            info!(replayed, "replayed Leaf's failed webhook calls");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn webhook(id: &str, name: &str, url: &str, events: &[&str], secret: &str) -> Webhook {
        Webhook {
            id: id.to_string(),
            name: name.to_string(),
            url: url.to_string(),
            events: events.iter().map(|e| e.to_string()).collect(),
            secret: SecretString::from(secret.to_string()),
        }
    }

    const URL: &str = "https://alerts.example.com/alerts";

    #[test]
    fn the_plan_table() {
        let both = &EVENTS[..];
        let cases: Vec<(&str, Vec<Webhook>, Plan)> = vec![
            ("nothing yet", vec![], Plan::Create),
            (
                "others' webhooks for other events do not matter",
                vec![webhook("x", "fields", URL, &["fieldCreated"], "s")],
                Plan::Create,
            ),
            (
                "ours, intact (trailing slash ignored)",
                vec![webhook("w1", "op", &format!("{URL}/"), both, "s")],
                Plan::Keep {
                    id: "w1".to_string(),
                },
            ),
            (
                "ours, secret changed",
                vec![webhook("w1", "op", URL, both, "old")],
                Plan::Replace {
                    delete: vec!["w1".to_string()],
                    why: "its signing secret changed",
                },
            ),
            (
                "ours, URL changed",
                vec![webhook(
                    "w1",
                    "op",
                    "https://old.example.com/alerts",
                    both,
                    "s",
                )],
                Plan::Replace {
                    delete: vec!["w1".to_string()],
                    why: "its URL changed",
                },
            ),
            (
                "ours, one event only",
                vec![webhook("w1", "op", URL, &EVENTS[..1], "s")],
                Plan::Replace {
                    delete: vec!["w1".to_string()],
                    why: "it lacks one of the credentials events",
                },
            ),
            (
                "another consumer owns an event: never touched, even with ours present",
                vec![
                    webhook("w1", "op", URL, &EVENTS[..1], "s"),
                    webhook("f1", "their-app", "https://them", &EVENTS[1..], "t"),
                ],
                Plan::Foreign {
                    owner_id: "f1".to_string(),
                    owner_name: "their-app".to_string(),
                    events: vec![EVENTS[1].to_string()],
                },
            ),
            (
                "same URL but another name is not ours",
                vec![webhook("f2", "other", URL, both, "s")],
                Plan::Foreign {
                    owner_id: "f2".to_string(),
                    owner_name: "other".to_string(),
                    events: EVENTS.iter().map(|e| e.to_string()).collect(),
                },
            ),
        ];
        for (what, webhooks, expected) in cases {
            assert_eq!(plan(&webhooks, "op", URL, "s"), expected, "{what}");
        }
    }

    #[test]
    fn secrets_compare_by_value_only() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
