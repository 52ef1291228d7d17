//! Webhook registration (opt-in, `--alerts-register`): keep one webhook of the default Leaf
//! account pointing at our receiver for the two credentials events, and catch up on missed
//! deliveries from Leaf's failed calls.
//!
//! ## Which webhook is ours: the id we created
//!
//! Leaf's webhooks carry no owner, label or creation time: only id, name, URL, events and the
//! secret. Deciding "ours" by name (as this module once did) made two clusters on one Leaf
//! account, installed with the chart's defaults, delete each other's webhook at every check
//! (issue 16). Ours is now the webhook whose **id** this operator created or adopted, kept in the
//! cluster in a ConfigMap ([`super::webhook_record`], which says where and why). Any other
//! webhook, whatever its name or URL, is **foreign**: never deleted, reported (state `foreign`,
//! the `leaf_operator_alerts_foreign_webhook` gauge, the `event_registered_twice` counter, a
//! warning, and a Warning Event `PollingFallback` with action `RegisterWebhook` on the operator's
//! own Pod), and polling stays at each resource's interval. A foreign webhook that holds none of
//! our two events is not in our way and is not reported.
//!
//! [`plan`] decides from Leaf's list and the record, as a pure function (its table is in the
//! tests): ours by id intact → keep; ours by id with another name, URL, secret or a missing event
//! → replace; our events held by any webhook not ours → foreign; nothing of ours (none yet, or
//! the id we hold is gone from Leaf's list) and the events free → create.
//!
//! ## Replacing ours (name, URL or secret changed)
//!
//! Leaf has no update, and an event can belong to only one webhook per account (`400
//! eventRegisteredTwice`), so "create the new one first" is impossible: the new one would be
//! refused while the old one holds the events. The order is therefore DELETE ours (by id), then
//! POST the new one at once. Deliveries in the gap (one round trip) are lost to push, which is
//! why the replay of failed calls and the polling backstop exist; deliveries still signed with
//! the old secret are accepted for a grace period (see `signing_secret`). A DELETE answered 204
//! or 404 is done; any other answer (or none) stops the check before the POST (state `failing`,
//! tried again at the next check).
//!
//! ## Crash safety of our own create
//!
//! A POST has no idempotency key and its answer can be lost after Leaf applied it. So before
//! every POST the record gets an *intent* (when it started, the name and URL sent, a fingerprint
//! of the secret sent), and the intent is closed only when the id is recorded. While an intent
//! is open, a webhook with exactly the intent's name, URL and secret (Leaf echoes secrets in its
//! list; fingerprints compared in constant time) holding both events is the lost create's result:
//! it is **adopted** (its id recorded), not created again and not called foreign. An intent with
//! no such webhook in a list taken more than the in-doubt window (`--leaf-timeout` +
//! `--leaf-in-doubt-margin`) after its POST began is closed: that POST can no longer land, and a
//! webhook appearing later was not made by it. Each answer to the POST:
//!
//! | Leaf's answer | What the operator does |
//! |---|---|
//! | 201 with the id in `Location` (or in the body) | records the id, closes the intent: `registered` |
//! | 201 with neither a readable `Location` nor a body id | the webhook exists but is unnamed: lists again at once and adopts it by the intent |
//! | 400 `eventRegisteredTwice` | someone holds an event: lists again at once; the holder is adopted if it is our lost create (an earlier POST that landed late), else it is foreign |
//! | any other 4xx, 5xx, a timeout or a lost connection | intent left open, state `missing`; the next check (within 30 s) adopts the webhook if the POST landed, else POSTs again |
//!
//! POSTing again while an earlier POST may still land cannot make two webhooks: Leaf refuses a
//! second webhook for the same events, and the refusal leads to the adoption above.
//!
//! **Upgrading** from the version that found its webhook by name: when the ConfigMap does not
//! exist at all, a webhook with exactly our name, URL and current secret, holding both events,
//! is adopted once. Only such a webhook delivers to our receiver with our secret, so it cannot be
//! another cluster's. Once the ConfigMap exists (even empty), only the id and an open intent make
//! a webhook ours. Deleting the ConfigMap by hand thus makes our webhook foreign unless it still
//! matches exactly; delete the webhook at Leaf too and the next check registers a new one.
//!
//! Before every POST and DELETE the leadership fence is checked (as the controller does), and
//! every record write is a compare-and-swap, so a replica that lost the lease writes nothing.
//!
//! ## Replay
//!
//! Leaf's failed calls for our URL are fed to the same handler as deliveries, without a
//! signature check (they come from Leaf's authenticated API). Dedupe makes a replay of something
//! already acted on a no-op.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use tracing::{info, warn};

use super::handler::{AlertHandler, Source};
use super::payload::{CREDENTIALS_LIMITED_PERMISSION, CREDENTIALS_UNAUTHENTICATED};
use super::polling_switch::OwnPod;
use super::signing_secret::SigningKeys;
use super::webhook_record::{CreateIntent, RecordStore, Stored, WebhookRecord, secret_fingerprint};
use crate::controller::Context;
use crate::controller::polling::{AlertsHealth, Registration};
use crate::default_account::DefaultAccount;
use crate::leaf::alerts::{CreateWebhookError, NewWebhook, Webhook};
use crate::leaf::{LeafAccount, LeafError};
use crate::reason::Reason;

/// The events the operator registers.
pub const EVENTS: [&str; 2] = [CREDENTIALS_UNAUTHENTICATED, CREDENTIALS_LIMITED_PERMISSION];
/// How far back the first replay after a start looks (Leaf retries for about 5.5 hours).
pub const REPLAY_LOOKBACK: Duration = Duration::from_secs(24 * 3600);
/// Overlap between consecutive replays, for clock skew between Leaf and us.
const REPLAY_OVERLAP: Duration = Duration::from_secs(300);
/// Longest wait before retrying after a failed check.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// Lists of Leaf's webhooks one check may take: the first, and one after each create answer
/// that asks for another look (201 without an id, eventRegisteredTwice).
const MAX_LISTS: usize = 3;
/// A foreign webhook that stays is announced again on the Pod this often (Kubernetes keeps
/// Events for an hour by default, so one stays visible while the problem lasts).
const REPORT_AGAIN: Duration = Duration::from_secs(3600);
/// The Event's action (the polling switches use `Polling`).
pub const EVENT_ACTION: &str = "RegisterWebhook";

/// What we want registered.
#[derive(Clone, Copy, Debug)]
pub struct Desired<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub secret: &'a str,
}

/// Why a webhook not yet recorded is ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adoption {
    /// It matches the open intent: our create landed but its answer was lost.
    LostAnswer,
    /// There is no record at all and it matches us exactly: registered by the version that
    /// found its webhook by name.
    Upgrade,
}

impl Adoption {
    fn as_str(self) -> &'static str {
        match self {
            Self::LostAnswer => "our create's answer was lost; it matches the create in doubt",
            Self::Upgrade => {
                "no record yet (first start of this version); it matches our name, URL and secret exactly"
            }
        }
    }
}

/// A webhook holding one of our events that is not ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    pub name: String,
    /// It has our webhook name: most likely another cluster or deployment on this Leaf account
    /// installed with the same defaults.
    pub same_name: bool,
    pub same_url: bool,
}

impl Owner {
    /// The `name` label of `leaf_operator_alerts_foreign_webhook`.
    pub fn label(&self) -> &'static str {
        if self.same_name { "same" } else { "other" }
    }
}

/// What the next registration step is, decided from Leaf's list of webhooks and our record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Ours (by id) is in place: name, URL, events and secret right.
    Keep { id: String },
    /// Record this webhook's id as ours, then decide again.
    Adopt { id: String, why: Adoption },
    /// Nothing of ours at Leaf and the events are free.
    Create { why: &'static str },
    /// Ours (by id) is outdated: delete it, then create.
    Replace { delete: String, why: &'static str },
    /// A webhook that is not ours holds one of the events: touch nothing. `close_intent`: the
    /// create in doubt can no longer land (its window passed and nothing matches it).
    Foreign {
        owner: Owner,
        events: Vec<String>,
        close_intent: bool,
    },
}

fn holds(webhook: &Webhook, event: &str) -> bool {
    webhook.events.iter().any(|e| e == event)
}

fn holds_all(webhook: &Webhook) -> bool {
    EVENTS.iter().all(|e| holds(webhook, e))
}

fn intent_matches(intent: &CreateIntent, webhook: &Webhook) -> bool {
    webhook.name == intent.name
        && same_url(&webhook.url, &intent.url)
        && constant_time_eq(
            secret_fingerprint(webhook.secret.expose_secret()).as_bytes(),
            intent.secret_fingerprint.as_bytes(),
        )
}

/// Whether `intent` began more than `in_doubt` before `now` (a clock that went back counts as
/// not yet).
fn in_doubt_passed(intent: &CreateIntent, now: Timestamp, in_doubt: Duration) -> bool {
    let window = SignedDuration::try_from(in_doubt).unwrap_or(SignedDuration::MAX);
    now.duration_since(intent.started_at) > window
}

/// Decides from the account's `webhooks` and our `record` (None: there is no ConfigMap).
/// Secrets are compared in constant time; `now` and `in_doubt` decide whether an open intent can
/// still be answered by a webhook appearing.
pub fn plan(
    webhooks: &[Webhook],
    desired: &Desired<'_>,
    record: Option<&WebhookRecord>,
    now: Timestamp,
    in_doubt: Duration,
) -> Plan {
    let held = record.and_then(|r| r.webhook_id.as_deref());
    let intent = record.and_then(|r| r.intent.as_ref());
    let is_ours = |w: &Webhook| held.is_some_and(|id| id == w.id);

    // 1. A webhook we made but have not recorded. Only one webhook can hold our events, so
    //    there is at most one.
    let adoptable = webhooks
        .iter()
        .filter(|w| !is_ours(w) && holds_all(w))
        .find_map(|w| {
            let why = match (record, intent) {
                (None, _) => (w.name == desired.name
                    && same_url(&w.url, desired.url)
                    && constant_time_eq(
                        w.secret.expose_secret().as_bytes(),
                        desired.secret.as_bytes(),
                    ))
                .then_some(Adoption::Upgrade),
                (Some(_), Some(intent)) => {
                    intent_matches(intent, w).then_some(Adoption::LostAnswer)
                }
                (Some(_), None) => None,
            }?;
            Some((w, why))
        });
    if let Some((webhook, why)) = adoptable {
        return Plan::Adopt {
            id: webhook.id.clone(),
            why,
        };
    }

    // 2. Our events held by anything else: foreign, whatever its name or URL.
    let mut foreign_events = Vec::new();
    let mut owner: Option<&Webhook> = None;
    for event in EVENTS {
        if let Some(other) = webhooks.iter().find(|w| !is_ours(w) && holds(w, event)) {
            foreign_events.push(event.to_string());
            owner.get_or_insert(other);
        }
    }
    if let Some(owner) = owner {
        return Plan::Foreign {
            owner: Owner {
                id: owner.id.clone(),
                name: owner.name.clone(),
                same_name: owner.name == desired.name,
                same_url: same_url(&owner.url, desired.url),
            },
            events: foreign_events,
            close_intent: intent.is_some_and(|i| in_doubt_passed(i, now, in_doubt)),
        };
    }

    // 3. Ours by id.
    let Some(ours) = webhooks.iter().find(|w| is_ours(w)) else {
        return Plan::Create {
            why: if held.is_some() {
                "the webhook we registered is gone from Leaf"
            } else {
                "none registered yet"
            },
        };
    };
    let why = if ours.name != desired.name {
        "its name changed"
    } else if !same_url(&ours.url, desired.url) {
        "its URL changed"
    } else if !holds_all(ours) {
        "it lacks one of the credentials events"
    } else if !constant_time_eq(
        ours.secret.expose_secret().as_bytes(),
        desired.secret.as_bytes(),
    ) {
        "its signing secret changed"
    } else {
        return Plan::Keep {
            id: ours.id.clone(),
        };
    };
    Plan::Replace {
        delete: ours.id.clone(),
        why,
    }
}

/// What a create's answer leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterCreate {
    /// Record this id as ours and close the intent.
    Record(String),
    /// Look at Leaf's list again now: the webhook may exist (unnamed 201, or our own earlier
    /// create holding the events).
    Relist,
    /// Nothing known: keep the intent open; the next check adopts or POSTs again.
    Missing,
}

/// The table of the module doc, as code.
pub fn after_create(answer: &Result<String, CreateWebhookError>) -> AfterCreate {
    match answer {
        Ok(id) => AfterCreate::Record(id.clone()),
        Err(CreateWebhookError::CreatedWithoutId | CreateWebhookError::EventRegisteredTwice) => {
            AfterCreate::Relist
        }
        Err(CreateWebhookError::Leaf(_)) => AfterCreate::Missing,
    }
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim().trim_end_matches('/') == b.trim().trim_end_matches('/')
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A webhook name from Leaf, fit for a log line or an Event note: control characters dropped and
/// at most 80 characters.
fn printable(name: &str) -> String {
    let visible = || name.chars().filter(|c| !c.is_control());
    let mut clean: String = visible().take(80).collect();
    if visible().count() > 80 {
        clean.push('…');
    }
    clean
}

/// The note of the Event about a foreign webhook (no secret, no URL: a URL may carry a token).
pub fn foreign_note(owner: &Owner, events: &[String], record: &str, held: Option<&str>) -> String {
    let why = match (owner.same_name, owner.same_url) {
        (true, false) => {
            "It has this operator's webhook name but another URL: most likely another cluster or              deployment using the same Leaf account (Leaf gives each event to one webhook per              account, so only one of them can receive alerts). Give each its own Leaf account, or              let this one poll"
        }
        (true, true) => {
            "It has this operator's webhook name and URL but this operator did not create it (another              signing secret, or created outside a create in doubt). If it is a leftover of this              operator, delete it at Leaf and the next check registers ours"
        }
        (false, _) => {
            "Remove that webhook, or have its owner forward the deliveries to this receiver and use              secret-only mode"
        }
    };
    let ours = match held {
        Some(id) => format!("holds webhook {id}"),
        None => "holds no webhook".to_string(),
    };
    format!(
        "Leaf webhook {} (name {:?}) of the default Leaf account already receives {}; this operator          did not create it (its record, ConfigMap {record}, {ours}), so it never deletes it. {why}.          Until then alerts are off here and every TrimbleConnection is polled at its refreshInterval.",
        printable(&owner.id),
        printable(&owner.name),
        events.join(" and "),
    )
}

/// Where the record lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordLocation {
    pub namespace: String,
    pub name: String,
}

/// The registration loop's settings.
#[derive(Clone, Debug)]
pub struct RegistrationConfig {
    pub name: String,
    pub url: String,
    pub check_interval: Duration,
    /// The ConfigMap holding the id of our webhook.
    pub record: RecordLocation,
}

/// How one step of a check ended.
enum Step {
    Done(Registration),
    Relist,
}

/// Keeps our webhook registered and replays missed deliveries while this replica leads.
#[derive(Clone)]
pub struct Registrar {
    config: RegistrationConfig,
    ctx: Arc<Context>,
    /// The default Leaf account, read anew at every check (a mounted Secret rotates).
    account: DefaultAccount,
    keys: Arc<SigningKeys>,
    handler: Arc<AlertHandler>,
    health: Arc<AlertsHealth>,
    record: RecordStore,
    /// The operator's own Pod, which the Event about a foreign webhook is about.
    pod: Option<OwnPod>,
    /// The foreign webhook last announced on the Pod, and when.
    announced: Option<(String, Instant)>,
}

impl Registrar {
    pub fn new(
        config: RegistrationConfig,
        ctx: Arc<Context>,
        account: DefaultAccount,
        keys: Arc<SigningKeys>,
        handler: Arc<AlertHandler>,
        health: Arc<AlertsHealth>,
        pod: Option<OwnPod>,
    ) -> Self {
        let record = RecordStore::new(
            ctx.client.clone(),
            &config.record.namespace,
            &config.record.name,
        );
        Self {
            config,
            ctx,
            account,
            keys,
            handler,
            health,
            record,
            pod,
            announced: None,
        }
    }

    fn set_state(&self, state: Registration) {
        let previous = self.health.registration();
        self.health.set_registration(state);
        let all: Vec<&'static str> = Registration::ALL.iter().map(|r| r.as_str()).collect();
        self.ctx
            .metrics
            .alerts
            .set_webhook_state(state.as_str(), &all);
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
    pub async fn run(mut self, stop: impl Future<Output = ()> + Send) {
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

    fn record_failed(&self, error: &super::webhook_record::RecordError) -> Registration {
        warn!(%error, "webhook registration: nothing is sent to Leaf without the record; polling continues and it is tried again");
        Registration::Failing
    }

    fn record_label(&self) -> String {
        format!("{}/{}", self.record.namespace, self.record.name)
    }

    async fn check_once(&mut self) -> Registration {
        let Some(secret) = self.keys.current() else {
            return Registration::Pending;
        };
        let Some(account) = self.account.current() else {
            warn!("webhook registration: no default Leaf account; polling continues");
            return Registration::Failing;
        };
        // Read at every check (one GET every --alerts-check-interval): a person may have
        // edited or deleted it, and a standby that became leader must see the last leader's.
        let (mut stored, unreadable) = match self.record.load().await {
            Ok(loaded) => loaded,
            Err(error) => return self.record_failed(&error),
        };
        if !unreadable.is_empty() {
            warn!(
                configmap = %self.record_label(),
                keys = ?unreadable,
                "webhook record: these keys could not be read and count as absent (a webhook only they would prove ours is treated as foreign, never deleted)"
            );
        }
        let config = self.config.clone();
        let desired = Desired {
            name: &config.name,
            url: &config.url,
            secret: secret.expose_secret(),
        };
        for _ in 0..MAX_LISTS {
            let webhooks = match self.ctx.leaf.list_webhooks(&account).await {
                Ok(webhooks) => webhooks,
                Err(error) => return self.leaf_failed("listing Leaf's webhooks", error),
            };
            // An adoption is decided again on the same list (then keep or replace); it closes
            // the intent, so it happens at most once.
            let mut adopted = false;
            loop {
                let decided = plan(
                    &webhooks,
                    &desired,
                    stored.record.as_ref(),
                    Timestamp::now(),
                    self.ctx.windows.send_budget + self.ctx.windows.after_send,
                );
                match decided {
                    Plan::Keep { id } => {
                        self.not_foreign();
                        let webhook = webhooks.iter().find(|w| w.id == id);
                        let record = stored.record.as_ref();
                        if record.and_then(|r| r.webhook_id.as_deref()) != Some(id.as_str())
                            || record.is_some_and(|r| r.intent.is_some())
                        {
                            let (name, url) = webhook
                                .map(|w| (w.name.as_str(), w.url.as_str()))
                                .unwrap_or((desired.name, desired.url));
                            if let Err(error) = self
                                .record
                                .save(&mut stored, WebhookRecord::holding(&id, name, url))
                                .await
                            {
                                warn!(%error, "webhook registration: our webhook is intact; the record is written at a later check");
                            }
                        }
                        return Registration::Registered;
                    }
                    Plan::Adopt { id, why } if !adopted => {
                        adopted = true;
                        let Some(webhook) = webhooks.iter().find(|w| w.id == id) else {
                            return Registration::Failing;
                        };
                        let record = WebhookRecord::holding(&id, &webhook.name, &webhook.url);
                        if let Err(error) = self.record.save(&mut stored, record).await {
                            return self.record_failed(&error);
                        }
                        info!(webhook_id = %id, configmap = %self.record_label(), why = why.as_str(), "adopted our Leaf webhook: its id is recorded");
                    }
                    Plan::Adopt { .. } => {
                        warn!(
                            "webhook registration: an adoption did not settle; tried again at the next check"
                        );
                        return Registration::Failing;
                    }
                    Plan::Foreign {
                        owner,
                        events,
                        close_intent,
                    } => {
                        if close_intent {
                            self.close_intent(&mut stored).await;
                        }
                        let held = stored.record.as_ref().and_then(|r| r.webhook_id.clone());
                        self.foreign(&owner, &events, held.as_deref()).await;
                        return Registration::Foreign;
                    }
                    Plan::Create { why } => {
                        match self.create(&account, &secret, &mut stored, None, why).await {
                            Step::Done(state) => return state,
                            Step::Relist => break,
                        }
                    }
                    Plan::Replace { delete, why } => {
                        match self
                            .create(&account, &secret, &mut stored, Some(&delete), why)
                            .await
                        {
                            Step::Done(state) => return state,
                            Step::Relist => break,
                        }
                    }
                }
            }
        }
        warn!(
            lists = MAX_LISTS,
            "webhook registration: Leaf's webhooks did not settle within one check; tried again at the next"
        );
        Registration::Missing
    }

    async fn close_intent(&self, stored: &mut Stored) {
        let mut record = stored.record.clone().unwrap_or_default();
        record.intent = None;
        match self.record.save(stored, record).await {
            Ok(()) => info!(
                configmap = %self.record_label(),
                "webhook registration: the create in doubt can no longer land (its window passed and nothing matches it); closed"
            ),
            Err(error) => {
                warn!(%error, "webhook registration: could not close the create in doubt; tried again at the next check")
            }
        }
    }

    /// Records the intent, deletes `delete` (ours, outdated) if given, then POSTs.
    async fn create(
        &mut self,
        account: &LeafAccount,
        secret: &SecretString,
        stored: &mut Stored,
        delete: Option<&str>,
        why: &'static str,
    ) -> Step {
        let mut record = stored.record.clone().unwrap_or_default();
        if delete.is_none() {
            // The id we held (if any) is gone from Leaf: nothing to keep of it.
            record = WebhookRecord::default();
        }
        record.intent = Some(CreateIntent {
            started_at: Timestamp::now(),
            name: self.config.name.clone(),
            url: self.config.url.clone(),
            secret_fingerprint: secret_fingerprint(secret.expose_secret()),
        });
        if let Err(error) = self.record.save(stored, record).await {
            return Step::Done(self.record_failed(&error));
        }
        if let Some(id) = delete {
            if !self.ctx.fence.holds() {
                info!("webhook registration: not certainly leading; no Leaf write");
                return Step::Done(Registration::Pending);
            }
            info!(%why, webhook_id = %id, "replacing our Leaf webhook: delete it by id, then create (Leaf allows one webhook per event)");
            if let Err(error) = self.ctx.leaf.delete_webhook(account, id).await {
                return Step::Done(self.leaf_failed("deleting our outdated webhook", error));
            }
            info!(webhook_id = %id, "deleted our outdated Leaf webhook");
        } else {
            info!(%why, "creating our Leaf webhook");
        }
        if !self.ctx.fence.holds() {
            info!("webhook registration: not certainly leading; no Leaf write");
            return Step::Done(Registration::Pending);
        }
        let webhook = NewWebhook {
            name: &self.config.name,
            url: &self.config.url,
            events: &EVENTS,
            secret,
        };
        let answer = self.ctx.leaf.create_webhook(account, &webhook).await;
        match after_create(&answer) {
            AfterCreate::Record(id) => {
                info!(webhook_id = %id, name = %self.config.name, url = %self.config.url, "registered the Leaf webhook for the credentials events");
                self.not_foreign();
                let record = WebhookRecord::holding(&id, &self.config.name, &self.config.url);
                if let Err(error) = self.record.save(stored, record).await {
                    warn!(%error, "webhook registration: the new webhook's id could not be recorded; the next check adopts it by the create in doubt");
                }
                Step::Done(Registration::Registered)
            }
            AfterCreate::Relist => {
                if let Err(error) = &answer {
                    info!(%error, "webhook registration: looking at Leaf's webhooks again");
                }
                Step::Relist
            }
            AfterCreate::Missing => {
                if let Err(CreateWebhookError::Leaf(error)) = answer {
                    self.leaf_failed(
                        "creating our webhook (it may have been created all the same: the next check adopts it then)",
                        error,
                    );
                }
                Step::Done(Registration::Missing)
            }
        }
    }

    /// Nothing foreign holds our events (any more).
    fn not_foreign(&mut self) {
        self.ctx.metrics.alerts.set_foreign_webhook(None);
        self.announced = None;
    }

    async fn foreign(&mut self, owner: &Owner, events: &[String], held: Option<&str>) {
        let metrics = &self.ctx.metrics.alerts;
        metrics.event_registered_twice();
        metrics.set_foreign_webhook(Some(owner.label()));
        warn!(
            owner_webhook_id = %printable(&owner.id),
            owner_webhook_name = %printable(&owner.name),
            same_name = owner.same_name,
            same_url = owner.same_url,
            our_webhook_id = held.unwrap_or(""),
            events = ?events,
            "eventRegisteredTwice: another webhook of this Leaf account already receives the credentials events; \
             this operator did not create it (not the id in its record) and never deletes it. Alerts stay off and every \
             connection keeps polling at its refreshInterval. Remove that webhook, or give this operator only the \
             signing secret and forward its deliveries to our receiver"
        );
        let Some(pod) = &self.pod else {
            return;
        };
        let due = match &self.announced {
            Some((id, at)) => id != &owner.id || at.elapsed() >= REPORT_AGAIN,
            None => true,
        };
        if due {
            let note = foreign_note(owner, events, &self.record_label(), held);
            self.ctx
                .events
                .publish_about(
                    pod.reference(),
                    Reason::PollingFallback,
                    EVENT_ACTION,
                    &note,
                )
                .await;
            self.announced = Some((owner.id.clone(), Instant::now()));
        }
    }

    /// Replays failed calls for our URL created at or after `since`; false when they could not
    /// be read.
    async fn replay(&self, since: jiff::Timestamp) -> bool {
        let Some(account) = self.account.current() else {
            return false;
        };
        let calls = match self.ctx.leaf.failed_calls(&account).await {
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
            self.ctx
                .metrics
                .alerts
                .received(Source::FailedCall.as_str());
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
    const OTHER_URL: &str = "https://alerts.other-cluster.example.com/alerts";
    const BOTH: &[&str] = &EVENTS;
    const IN_DOUBT: Duration = Duration::from_secs(70);

    fn now() -> Timestamp {
        "2026-03-01T10:00:00Z".parse().unwrap()
    }

    fn holding(id: &str) -> Option<WebhookRecord> {
        Some(WebhookRecord::holding(id, "op", URL))
    }

    /// A record with a create in doubt for ("op", `url`, `secret`) that began `ago` before now.
    fn intent(held: Option<&str>, url: &str, secret: &str, ago: u64) -> Option<WebhookRecord> {
        Some(WebhookRecord {
            webhook_id: held.map(str::to_string),
            intent: Some(CreateIntent {
                started_at: now() - SignedDuration::from_secs(ago as i64),
                name: "op".to_string(),
                url: url.to_string(),
                secret_fingerprint: secret_fingerprint(secret),
            }),
            ..WebhookRecord::default()
        })
    }

    fn foreign(id: &str, name: &str, same_name: bool, same_url: bool, close: bool) -> Plan {
        Plan::Foreign {
            owner: Owner {
                id: id.to_string(),
                name: name.to_string(),
                same_name,
                same_url,
            },
            events: EVENTS.iter().map(|e| e.to_string()).collect(),
            close_intent: close,
        }
    }

    #[test]
    fn the_plan_table() {
        let replace = |id: &str, why: &'static str| Plan::Replace {
            delete: id.to_string(),
            why,
        };
        // (what, Leaf's webhooks, our record, expected); we want ("op", URL, secret "s").
        let cases: Vec<(&str, Vec<Webhook>, Option<WebhookRecord>, Plan)> = vec![
            (
                "nothing at Leaf, no record: create",
                vec![],
                None,
                Plan::Create {
                    why: "none registered yet",
                },
            ),
            (
                "others' webhooks for other events do not matter",
                vec![webhook("x", "fields", URL, &["fieldCreated"], "s")],
                Some(WebhookRecord::default()),
                Plan::Create {
                    why: "none registered yet",
                },
            ),
            (
                "ours by id, intact (trailing slash ignored): keep",
                vec![webhook("w1", "op", &format!("{URL}/"), BOTH, "s")],
                holding("w1"),
                Plan::Keep {
                    id: "w1".to_string(),
                },
            ),
            (
                "ours by id, URL changed: replace it by id",
                vec![webhook("w1", "op", OTHER_URL, BOTH, "s")],
                holding("w1"),
                replace("w1", "its URL changed"),
            ),
            (
                "ours by id, secret changed",
                vec![webhook("w1", "op", URL, BOTH, "old")],
                holding("w1"),
                replace("w1", "its signing secret changed"),
            ),
            (
                "ours by id, one event only",
                vec![webhook("w1", "op", URL, &EVENTS[..1], "s")],
                holding("w1"),
                replace("w1", "it lacks one of the credentials events"),
            ),
            (
                "ours by id under another name (the name setting changed)",
                vec![webhook("w1", "renamed", URL, BOTH, "s")],
                holding("w1"),
                replace("w1", "its name changed"),
            ),
            (
                "ours by id is gone from Leaf: create again",
                vec![webhook("x", "fields", URL, &["fieldCreated"], "s")],
                holding("w1"),
                Plan::Create {
                    why: "the webhook we registered is gone from Leaf",
                },
            ),
            (
                "same name, another URL, an id we do not hold: foreign, never deleted",
                vec![webhook("w9", "op", OTHER_URL, BOTH, "t")],
                Some(WebhookRecord::default()),
                foreign("w9", "op", true, false, false),
            ),
            (
                "same name, another URL, while we hold another id: foreign",
                vec![webhook("w9", "op", OTHER_URL, BOTH, "t")],
                holding("w1"),
                foreign("w9", "op", true, false, false),
            ),
            (
                "same name, URL and secret but no intent and a record exists: foreign",
                vec![webhook("w9", "op", URL, BOTH, "s")],
                Some(WebhookRecord::default()),
                foreign("w9", "op", true, true, false),
            ),
            (
                "same name, URL and secret while our create is in doubt: adopted",
                vec![webhook("w9", "op", URL, BOTH, "s")],
                intent(None, URL, "s", 5),
                Plan::Adopt {
                    id: "w9".to_string(),
                    why: Adoption::LostAnswer,
                },
            ),
            (
                "adopted however long ago the create began, while the intent is open",
                vec![webhook("w9", "op", URL, BOTH, "s")],
                intent(None, URL, "s", 86_400),
                Plan::Adopt {
                    id: "w9".to_string(),
                    why: Adoption::LostAnswer,
                },
            ),
            (
                "the intent's secret, rotated since: adopted (then replaced)",
                vec![webhook("w9", "op", URL, BOTH, "old")],
                intent(None, URL, "old", 5),
                Plan::Adopt {
                    id: "w9".to_string(),
                    why: Adoption::LostAnswer,
                },
            ),
            (
                "an open intent, but another secret: foreign",
                vec![webhook("w9", "op", URL, BOTH, "t")],
                intent(None, URL, "s", 5),
                foreign("w9", "op", true, true, false),
            ),
            (
                "an open intent, but another URL: foreign",
                vec![webhook("w9", "op", OTHER_URL, BOTH, "s")],
                intent(None, URL, "s", 5),
                foreign("w9", "op", true, false, false),
            ),
            (
                "an intent past the in-doubt window with a foreign holder: foreign, intent closed",
                vec![webhook("f1", "their-app", "https://them", BOTH, "t")],
                intent(None, URL, "s", 71),
                foreign("f1", "their-app", false, false, true),
            ),
            (
                "an intent within the window and nothing at Leaf: create again (Leaf refuses a twin)",
                vec![],
                intent(None, URL, "s", 5),
                Plan::Create {
                    why: "none registered yet",
                },
            ),
            (
                "a replace in doubt: the old one was deleted, the new one landed: adopted",
                vec![webhook("w2", "op", URL, BOTH, "s")],
                intent(Some("w1"), URL, "s", 5),
                Plan::Adopt {
                    id: "w2".to_string(),
                    why: Adoption::LostAnswer,
                },
            ),
            (
                "no record at all (upgrade): exactly our name, URL and secret is adopted",
                vec![webhook("w0", "op", URL, BOTH, "s")],
                None,
                Plan::Adopt {
                    id: "w0".to_string(),
                    why: Adoption::Upgrade,
                },
            ),
            (
                "no record at all: our name with another URL is foreign",
                vec![webhook("w9", "op", OTHER_URL, BOTH, "s")],
                None,
                foreign("w9", "op", true, false, false),
            ),
            (
                "no record at all: our name and URL with another secret is foreign",
                vec![webhook("w9", "op", URL, BOTH, "t")],
                None,
                foreign("w9", "op", true, true, false),
            ),
            (
                "another consumer owns an event: nothing touched, even ours",
                vec![
                    webhook("w1", "op", URL, &EVENTS[..1], "s"),
                    webhook("f1", "their-app", "https://them", &EVENTS[1..], "t"),
                ],
                holding("w1"),
                Plan::Foreign {
                    owner: Owner {
                        id: "f1".to_string(),
                        name: "their-app".to_string(),
                        same_name: false,
                        same_url: false,
                    },
                    events: vec![EVENTS[1].to_string()],
                    close_intent: false,
                },
            ),
            (
                "a webhook with our name but none of our events is left alone",
                vec![
                    webhook("w1", "op", URL, BOTH, "s"),
                    webhook("w7", "op", OTHER_URL, &["fieldCreated"], "t"),
                ],
                holding("w1"),
                Plan::Keep {
                    id: "w1".to_string(),
                },
            ),
        ];
        let desired = Desired {
            name: "op",
            url: URL,
            secret: "s",
        };
        for (what, webhooks, record, expected) in cases {
            assert_eq!(
                plan(&webhooks, &desired, record.as_ref(), now(), IN_DOUBT),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn after_an_adoption_the_plan_keeps_or_replaces_by_id() {
        let desired = Desired {
            name: "op",
            url: URL,
            secret: "s",
        };
        for (secret, expected) in [
            (
                "s",
                Plan::Keep {
                    id: "w9".to_string(),
                },
            ),
            (
                "old",
                Plan::Replace {
                    delete: "w9".to_string(),
                    why: "its signing secret changed",
                },
            ),
        ] {
            let webhooks = vec![webhook("w9", "op", URL, BOTH, secret)];
            let record = intent(None, URL, secret, 5);
            let Plan::Adopt { id, .. } =
                plan(&webhooks, &desired, record.as_ref(), now(), IN_DOUBT)
            else {
                panic!("adopt first");
            };
            let adopted = WebhookRecord::holding(&id, "op", URL);
            assert_eq!(
                plan(&webhooks, &desired, Some(&adopted), now(), IN_DOUBT),
                expected
            );
        }
    }

    #[test]
    fn what_each_create_answer_leads_to() {
        let cases = [
            (Ok("w1".to_string()), AfterCreate::Record("w1".to_string())),
            (
                Err(CreateWebhookError::CreatedWithoutId),
                AfterCreate::Relist,
            ),
            (
                Err(CreateWebhookError::EventRegisteredTwice),
                AfterCreate::Relist,
            ),
            (
                Err(CreateWebhookError::Leaf(LeafError::InvalidResponse {
                    detail: "503".to_string(),
                })),
                AfterCreate::Missing,
            ),
        ];
        for (answer, expected) in cases {
            assert_eq!(after_create(&answer), expected, "{answer:?}");
        }
    }

    #[test]
    fn the_foreign_note_names_the_webhook_and_the_likely_cause_but_no_url() {
        let owner = Owner {
            id: "w9".to_string(),
            name: "leaf-operator".to_string(),
            same_name: true,
            same_url: false,
        };
        let events: Vec<String> = EVENTS.iter().map(|e| e.to_string()).collect();
        let note = foreign_note(&owner, &events, "ops/leaf-operator-alerts-webhook", None);
        assert!(
            note.contains("w9") && note.contains("\"leaf-operator\""),
            "{note}"
        );
        assert!(note.contains("another cluster"), "{note}");
        assert!(note.contains("ops/leaf-operator-alerts-webhook"), "{note}");
        assert!(note.contains("holds no webhook"), "{note}");
        assert!(!note.contains("https://"), "{note}");
        assert!(note.len() < 1000, "fits an Event note: {}", note.len());
        let other = Owner {
            name: "their-app\u{7}".repeat(20),
            same_name: false,
            ..owner
        };
        let note = foreign_note(&other, &events, "ops/x", Some("w1"));
        assert!(note.contains("secret-only mode") && note.contains("holds webhook w1"));
        assert!(!note.contains('\u{7}'), "control characters dropped");
        assert_eq!(owner_label(true), "same");
        assert_eq!(owner_label(false), "other");
    }

    fn owner_label(same_name: bool) -> &'static str {
        Owner {
            id: String::new(),
            name: String::new(),
            same_name,
            same_url: false,
        }
        .label()
    }

    #[test]
    fn secrets_compare_by_value_only() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
