//! The simulated world: one TrimbleConnection and its Secret as the API server holds them, the
//! in-memory Leaf, the operator's in-memory schedules and leadership, and a simulated clock.
//!
//! [`World::reconcile`] runs the operator's real `engine::apply` / `engine::cleanup` on facts
//! built the way `controller::reconcile::observe` builds them. Every IO the engine performs goes
//! through [`SimPorts`], which takes the next injected [`Fault`]: a crash (the process dies at that
//! await: the engine's future is dropped there), a timeout whose request lands later or never, a
//! 5xx, a 429 with any `Retry-After`, read lag, or a lost leadership. The books every invariant is
//! checked against are kept as the world changes.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use leaf_operator::controller::backoff::Schedules;
use leaf_operator::controller::decide::{AccountFact, ConflictFact, Facts, SecretFact};
use leaf_operator::controller::engine::{self, Applied, Cleaned, Input, Interrupted, Ports};
use leaf_operator::crd::{
    AdoptionPolicy, CredentialEventSummary, DeletionPolicy, TrimbleConnectionSpec,
    TrimbleConnectionStatus,
};
use leaf_operator::leaf::{Credential, CredentialEvent, LeafError};
use leaf_operator::reason::Reason;
use leaf_operator::secret::{self, TrimbleSecret, client_id_fingerprint};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

use crate::leaf::{InFlight, LeafModel, Origin, PostAnswer};

/// The client's request timeout and the operator's in-doubt margin, as configured by default.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const IN_DOUBT_MARGIN: Duration = Duration::from_secs(60);
/// A POST that outlived its timeout lands at most this long after it was sent: Leaf's own
/// processing bound. It must be (and is, by the default margin) inside the in-doubt window.
pub const LATEST_LANDING: Duration = Duration::from_secs(55);
/// The most Leaf calls one resource may make in any minute.
pub const CALLS_PER_MINUTE: usize = 30;

/// What happens at one IO call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The process dies before the call has any effect.
    CrashBefore,
    /// The call takes effect, then the process dies before it sees the answer.
    CrashAfter,
    /// No answer in time; the request never arrived.
    TimeoutLost,
    /// No answer in time; the request arrives and takes effect `secs` later (a POST) or now.
    TimeoutLate(u8),
    /// A 5xx; nothing happened.
    ServerError,
    /// 503, as Leaf answers while it is down; nothing happened.
    ServerError503,
    /// A 5xx although the request took effect.
    ServerErrorApplied,
    /// 429 with this `Retry-After` text.
    RateLimited(String),
    /// The change made by this call shows in GETs only after this many seconds.
    Lag(u8),
    /// This replica loses the leader lease here, and the leader loop aborts its work at this await.
    LoseLeadership,
    /// The lease runs out here unnoticed by the work: the call goes on; only the fence knows.
    LeaseRunsOut,
}

/// A Secret as it may be in the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretState {
    Complete {
        client_id: String,
        client_secret: String,
        refresh_token: String,
    },
    /// A key is missing.
    Incomplete,
    Missing,
}

/// Counts kept for the report.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub reconciles: u64,
    pub crashes: u64,
    pub posts: u64,
    pub deletes: u64,
    /// POSTs of a token that had made a credential the operator never saw (see invariant 1).
    pub blind_resends: u64,
}

pub struct World {
    pub now: Timestamp,
    /// The monotonic clock the schedules use, `start + (now - start_time)`.
    start: Instant,
    start_time: Timestamp,
    // --- Kubernetes
    pub spec: TrimbleConnectionSpec,
    pub status: TrimbleConnectionStatus,
    pub generation: i64,
    pub created: Timestamp,
    pub annotation: Option<String>,
    pub deleting: bool,
    pub gone: bool,
    pub secret: SecretState,
    // --- Leaf
    pub leaf: LeafModel,
    // --- the operator process
    pub schedules: Schedules,
    pub leader: bool,
    /// A watch event is waiting (our own status write, a Secret or spec change, a restart).
    pub triggered: bool,
    /// The requeue kube-runtime holds for the object.
    pub due: Option<Timestamp>,
    /// The process is restarting after a crash until then (kubelet's back-off).
    pub down_until: Option<Timestamp>,
    recent_crashes: u32,
    pub faults: VecDeque<Fault>,
    /// Leaf is down: every call answers 503 (nothing happens) until it is back.
    pub outage: bool,
    // --- the books
    pub violations: Vec<String>,
    /// Times of every Leaf call of the resource.
    pub calls: Vec<Timestamp>,
    /// Credentials the resource was entitled to take over (adoption by policy, or the in-doubt
    /// rule: a credential with the clientId of its own in-doubt POST).
    pub entitled: HashSet<String>,
    /// Refresh tokens the operator knows made a credential.
    pub known_spent: HashSet<String>,
    /// The reconcile under way has deleted a credential.
    pub deleted_this_reconcile: bool,
    pub tally: Tally,
    pub tokens_issued: u64,
}

impl World {
    pub fn new(policy: AdoptionPolicy) -> Self {
        let start_time: Timestamp = "2026-06-01T00:00:00Z".parse().expect("start");
        let mut spec: TrimbleConnectionSpec = serde_json::from_value(serde_json::json!({
            "leafUserId": "user-1", "credentialsSecretRef": {"name": "creds"}
        }))
        .expect("spec");
        spec.adoption_policy = policy;
        Self {
            now: start_time,
            start: Instant::now(),
            start_time,
            spec,
            status: TrimbleConnectionStatus::default(),
            generation: 1,
            created: start_time,
            annotation: None,
            deleting: false,
            gone: false,
            secret: SecretState::Complete {
                client_id: "client-a".into(),
                client_secret: "app-secret".into(),
                refresh_token: "rt-0".into(),
            },
            leaf: LeafModel::new(),
            schedules: Schedules::default(),
            leader: true,
            triggered: true,
            due: None,
            down_until: None,
            recent_crashes: 0,
            faults: VecDeque::new(),
            outage: false,
            violations: Vec::new(),
            calls: Vec::new(),
            entitled: HashSet::new(),
            known_spent: HashSet::new(),
            deleted_this_reconcile: false,
            tally: Tally::default(),
            tokens_issued: 0,
        }
    }

    fn instant(&self) -> Instant {
        let elapsed = self.now.duration_since(self.start_time);
        self.start + Duration::try_from(elapsed).unwrap_or_default()
    }

    pub fn fresh_token(&mut self) -> String {
        self.tokens_issued += 1;
        format!("rt-{}", self.tokens_issued)
    }

    pub fn violation(&mut self, what: String) {
        self.violations.push(format!("at {}: {what}", self.now));
    }

    fn secret_values(&self) -> Option<TrimbleSecret> {
        let SecretState::Complete {
            client_id,
            client_secret,
            refresh_token,
        } = &self.secret
        else {
            return None;
        };
        let k8s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "creds"},
            "stringData": {"clientId": client_id, "clientSecret": client_secret, "refreshToken": refresh_token}
        }))
        .expect("secret");
        secret::parse_trimble_secret(&k8s, &self.spec.credentials_secret_ref).ok()
    }

    /// The facts, as `controller::reconcile::observe` gathers them.
    fn facts(&self, secret: Option<&TrimbleSecret>) -> (Facts, String, Option<String>) {
        let secret_fact = match (&self.secret, secret) {
            (_, Some(values)) => SecretFact::Present {
                fingerprint: values.fingerprint.clone(),
                client_id_hash: client_id_fingerprint(&values.client_id),
                refresh_token_hash: values.refresh_token_fingerprint.clone(),
            },
            (SecretState::Missing, None) => SecretFact::Missing {
                message: "Secret \"creds\" not found".into(),
            },
            _ => SecretFact::Invalid {
                message: "Secret \"creds\" has no key \"refreshToken\"".into(),
            },
        };
        let inputs = format!("{}/account", secret_fact.fingerprint().unwrap_or("-"));
        let uid = "uid-1";
        let annotation_new =
            self.annotation.is_some() && self.annotation != self.status.last_handled_reconcile_at;
        let generation_new = Some(self.generation) != self.status.observed_generation;
        let facts = Facts {
            spec: self.spec.clone(),
            status: self.status.clone(),
            secret: secret_fact,
            account: AccountFact::Ready,
            conflict: ConflictFact::Clear,
            age: Duration::try_from(self.now.duration_since(self.created)).ok(),
            not_due_for: self.schedules.wait(uid, &inputs, self.instant()),
            forced: annotation_new || generation_new,
            events_every_check: true,
            now: self.now,
            in_doubt_window: REQUEST_TIMEOUT + IN_DOUBT_MARGIN,
        };
        let handled = if annotation_new {
            self.annotation.clone()
        } else {
            None
        };
        (facts, inputs, handled)
    }

    /// Whether a reconcile would run now.
    pub fn wants_reconcile(&self) -> bool {
        !self.gone
            && self.leader
            && self.down_until.is_none_or(|until| until <= self.now)
            && (self.triggered || self.due.is_some_and(|due| due <= self.now))
    }

    /// The next time something happens on its own (a requeue, a restart, a POST landing).
    pub fn next_event(&self) -> Option<Timestamp> {
        let mut next = self.leaf.next_landing();
        let mut consider = |t: Option<Timestamp>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Timestamp| n.min(t)));
            }
        };
        if !self.gone && self.leader {
            consider(self.due);
            consider(self.down_until);
        }
        next
    }

    /// Moves the clock to `to`, landing the POSTs whose time came (each at its own time).
    pub fn advance_to(&mut self, to: Timestamp) {
        if to <= self.now {
            return;
        }
        self.now = to;
        for landed in self.leaf.take_landed(to) {
            self.land(landed);
        }
    }

    /// A POST whose client gave up arrives now; nobody hears Leaf's answer.
    fn land(&mut self, post: InFlight) {
        let now = self.now;
        let _ = self
            .leaf
            .post(&post.client_id, &post.token, now, Duration::ZERO);
    }

    /// Everything a process crash loses, and when the new process starts.
    fn crashed(&mut self) {
        self.tally.crashes += 1;
        self.recent_crashes = self.recent_crashes.saturating_add(1);
        // kubelet's CrashLoopBackOff: 10 s doubling to 5 minutes.
        let delay = Duration::from_secs(10)
            .saturating_mul(2u32.saturating_pow(self.recent_crashes.min(5) - 1))
            .min(Duration::from_secs(300));
        self.down_until = Some(self.now + SignedDuration::try_from(delay).unwrap_or_default());
        self.schedules = Schedules::default();
        self.due = None;
        self.triggered = true;
    }

    pub fn regain_leadership(&mut self) {
        if !self.leader {
            self.leader = true;
            // A new term starts with fresh controllers: every object is reconciled once.
            self.triggered = true;
        }
    }

    fn record_call(&mut self) {
        self.calls.push(self.now);
        let since = self.now - SignedDuration::from_secs(60);
        let in_last_minute = self.calls.iter().filter(|t| **t > since).count();
        if in_last_minute > CALLS_PER_MINUTE {
            self.violation(format!(
                "{in_last_minute} Leaf calls in one minute (at most {CALLS_PER_MINUTE})"
            ));
        }
    }

    /// What happens at the next Leaf call: an outage answers 503 to all of them; otherwise the
    /// next injected fault, if any.
    fn next_fault(&mut self) -> Option<Fault> {
        if self.outage {
            return Some(Fault::ServerError503);
        }
        self.faults.pop_front()
    }

    /// What happens at the next status write (an outage of Leaf does not touch the API server).
    fn next_write_fault(&mut self) -> Option<Fault> {
        self.faults.pop_front()
    }
}

/// How one simulated IO call ends.
enum Io<T> {
    Answer(T),
    /// The process died (or lost leadership) at this await.
    Dead,
}

/// [`Ports`] over the shared world.
pub struct SimPorts<'w> {
    pub world: &'w Mutex<World>,
}

impl SimPorts<'_> {
    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.lock().expect("world"))
    }
}

/// The engine's future stops here for good: the process is gone.
async fn dead<T>() -> T {
    std::future::pending().await
}

fn timeout() -> LeafError {
    LeafError::Unavailable {
        status: None,
        retry_after: None,
        maybe_applied: true,
        detail: "request timed out".into(),
    }
}

fn answer(code: u16, retry_after: Option<&str>, body: &str, is_create: bool) -> LeafError {
    let mut headers = HeaderMap::new();
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(RETRY_AFTER, value);
    }
    let error = LeafError::from_answer(
        StatusCode::from_u16(code).expect("status"),
        &headers,
        body,
        is_create,
    );
    if let Some(delay) = error.retry_after()
        && delay > leaf_operator::leaf::MAX_RETRY_AFTER
    {
        panic!("Retry-After {retry_after:?} gave {delay:?}, beyond the cap");
    }
    error
}

fn lag_of(fault: &Option<Fault>) -> Duration {
    match fault {
        Some(Fault::Lag(secs)) => Duration::from_secs(u64::from(*secs % 8)),
        _ => Duration::ZERO,
    }
}

impl World {
    /// The common frame of a read: a crash, a lost leadership, a timeout, a 5xx or 429 instead of
    /// the answer.
    fn read_fault(&mut self, fault: Option<Fault>) -> Io<Option<LeafError>> {
        self.record_call();
        match fault {
            Some(Fault::CrashBefore | Fault::CrashAfter) => {
                self.crashed();
                Io::Dead
            }
            Some(Fault::LoseLeadership) => {
                self.leader = false;
                Io::Dead
            }
            Some(Fault::TimeoutLost | Fault::TimeoutLate(_)) => Io::Answer(Some(timeout())),
            Some(Fault::ServerError | Fault::ServerError503 | Fault::ServerErrorApplied) => {
                Io::Answer(Some(answer(503, None, "upstream failure", false)))
            }
            Some(Fault::RateLimited(value)) => {
                Io::Answer(Some(answer(429, Some(&value), "Too many requests", false)))
            }
            Some(Fault::LeaseRunsOut) => {
                self.leader = false;
                Io::Answer(None)
            }
            Some(Fault::Lag(_)) | None => Io::Answer(None),
        }
    }

    fn check_leader_for_write(&mut self, what: &str) {
        if !self.leader {
            self.violation(format!("{what} sent while not leading"));
        }
    }

    fn do_get(&mut self) -> Io<Result<Option<Credential>, LeafError>> {
        let fault = self.next_fault();
        match self.read_fault(fault) {
            Io::Dead => Io::Dead,
            Io::Answer(Some(error)) => Io::Answer(Err(error)),
            Io::Answer(None) => Io::Answer(Ok(self.leaf.visible(self.now).map(|c| c.answer()))),
        }
    }

    fn do_events(&mut self) -> Io<Result<Vec<CredentialEvent>, LeafError>> {
        let fault = self.next_fault();
        match self.read_fault(fault) {
            Io::Dead => Io::Dead,
            Io::Answer(Some(error)) => Io::Answer(Err(error)),
            Io::Answer(None) => Io::Answer(Ok(Vec::new())),
        }
    }

    fn do_post(&mut self, secret: &TrimbleSecret) -> Io<Result<Credential, LeafError>> {
        use secrecy::ExposeSecret;
        let fault = self.next_fault();
        self.record_call();
        self.tally.posts += 1;
        self.check_leader_for_write("a POST");
        let token = secret.refresh_token.expose_secret().to_string();
        let client_id = secret.client_id.clone();
        let still_held = self
            .leaf
            .credential
            .as_ref()
            .is_some_and(|c| c.token == token);
        if self.known_spent.contains(&token) || still_held {
            self.violation(format!(
                "POST of refresh token {token} that already made a credential the operator knew of"
            ));
        } else if self.leaf.spent_tokens.contains(&token) {
            self.tally.blind_resends += 1;
            if self.deleted_this_reconcile {
                self.violation(format!(
                    "deleted a credential, then POSTed refresh token {token} whose earlier use was never confirmed"
                ));
            }
        }
        if self.leaf.in_flight.iter().any(|f| f.token == token) {
            self.violation(format!(
                "POST of refresh token {token} while an earlier POST of it may still land"
            ));
        }
        let lag = lag_of(&fault);
        let now = self.now;
        let arrive = |world: &mut World| world.leaf.post(&client_id, &token, now, lag);
        let to_error = |answer: PostAnswer| -> Result<Credential, LeafError> {
            match answer {
                PostAnswer::Created(cred) => Ok(cred.answer()),
                PostAnswer::Exists { status } => Err(crate::world::answer(
                    status,
                    None,
                    r#"{"detail":"Trimble credentials already exist for this user"}"#,
                    true,
                )),
                PostAnswer::RefreshTokenRefused => Err(crate::world::answer(
                    400,
                    None,
                    r#"{"detail":"Invalid refresh token"}"#,
                    true,
                )),
                PostAnswer::UserNotFound => Err(crate::world::answer(
                    404,
                    None,
                    r#"{"detail":"User not found"}"#,
                    true,
                )),
            }
        };
        match fault {
            Some(Fault::CrashBefore) => {
                self.crashed();
                Io::Dead
            }
            Some(Fault::LoseLeadership) => {
                self.leader = false;
                Io::Dead
            }
            Some(Fault::CrashAfter) => {
                arrive(self);
                self.crashed();
                Io::Dead
            }
            Some(Fault::TimeoutLost) => Io::Answer(Err(timeout())),
            Some(Fault::TimeoutLate(secs)) => {
                let late = Duration::from_secs(u64::from(secs)).min(LATEST_LANDING);
                if late.is_zero() {
                    arrive(self);
                } else {
                    self.leaf.in_flight.push(InFlight {
                        token: token.clone(),
                        client_id: client_id.clone(),
                        lands_at: now + SignedDuration::try_from(late).unwrap_or_default(),
                    });
                }
                Io::Answer(Err(timeout()))
            }
            Some(Fault::ServerError) => Io::Answer(Err(answer(502, None, "bad gateway", true))),
            Some(Fault::ServerError503) => {
                Io::Answer(Err(answer(503, None, "Leaf is down for maintenance", true)))
            }
            Some(Fault::ServerErrorApplied) => {
                arrive(self);
                Io::Answer(Err(answer(500, None, "internal error", true)))
            }
            Some(Fault::RateLimited(value)) => {
                Io::Answer(Err(answer(429, Some(&value), "Too many requests", true)))
            }
            Some(Fault::Lag(_) | Fault::LeaseRunsOut) | None => {
                if fault == Some(Fault::LeaseRunsOut) {
                    // Ran out while the request was on its way: it was sent while leading.
                    self.leader = false;
                }
                let answer = arrive(self);
                if let PostAnswer::Created(cred) = &answer {
                    self.known_spent.insert(cred.token.clone());
                }
                Io::Answer(to_error(answer))
            }
        }
    }

    /// Whether `cred` is what the in-doubt rule recognises as made by the create in doubt.
    fn recognised_in_doubt(&self, cred: &crate::leaf::Cred) -> bool {
        self.status.pending_create.as_ref().is_some_and(|p| {
            let same_client = p.client_id_fingerprint.as_deref()
                == Some(client_id_fingerprint(&cred.client_id).as_str());
            let started: Option<Timestamp> = p.started_at.parse().ok();
            same_client
                && started.is_none_or(|started| {
                    cred.created
                        >= started
                            - SignedDuration::try_from(
                                leaf_operator::controller::decide::CLOCK_SKEW,
                            )
                            .unwrap_or_default()
                })
        })
    }

    fn do_delete(&mut self) -> Io<Result<(), LeafError>> {
        let fault = self.next_fault();
        self.record_call();
        self.tally.deletes += 1;
        self.check_leader_for_write("a DELETE");
        let lag = lag_of(&fault);
        let apply = |world: &mut World| {
            if let Some(removed) = world.leaf.credential.clone() {
                let entitled = removed.origin == Origin::Ours
                    || world.entitled.contains(&removed.id)
                    || world.spec.adoption_policy == AdoptionPolicy::Replace
                    || world.recognised_in_doubt(&removed);
                if !entitled {
                    world.violation(format!(
                        "DELETE removed credential {} that this resource neither created nor adopted",
                        removed.id
                    ));
                }
                let now = world.now;
                world.leaf.set(None, now, lag);
                world.deleted_this_reconcile = true;
            }
        };
        match fault {
            Some(Fault::CrashBefore) => {
                self.crashed();
                Io::Dead
            }
            Some(Fault::LoseLeadership) => {
                self.leader = false;
                Io::Dead
            }
            Some(Fault::CrashAfter) => {
                apply(self);
                self.crashed();
                Io::Dead
            }
            Some(Fault::TimeoutLost) => Io::Answer(Err(timeout())),
            Some(Fault::TimeoutLate(_)) => {
                apply(self);
                Io::Answer(Err(timeout()))
            }
            Some(Fault::ServerError | Fault::ServerError503) => {
                Io::Answer(Err(answer(503, None, "unavailable", false)))
            }
            Some(Fault::ServerErrorApplied) => {
                apply(self);
                Io::Answer(Err(answer(500, None, "internal error", false)))
            }
            Some(Fault::RateLimited(value)) => {
                Io::Answer(Err(answer(429, Some(&value), "Too many requests", false)))
            }
            Some(Fault::Lag(_) | Fault::LeaseRunsOut) | None => {
                if fault == Some(Fault::LeaseRunsOut) {
                    self.leader = false;
                }
                apply(self);
                Io::Answer(Ok(()))
            }
        }
    }

    fn do_write_status(&mut self, status: &TrimbleConnectionStatus) -> Io<Result<(), String>> {
        let fault = self.next_write_fault();
        let write = |world: &mut World| {
            world.claims(status);
            world.status = status.clone();
            // Our own write comes back through the watch.
            world.triggered = true;
        };
        match fault {
            Some(Fault::CrashBefore) => {
                self.crashed();
                Io::Dead
            }
            Some(Fault::LoseLeadership) => {
                self.leader = false;
                Io::Dead
            }
            Some(Fault::CrashAfter) => {
                write(self);
                self.crashed();
                Io::Dead
            }
            Some(
                Fault::TimeoutLost
                | Fault::ServerError
                | Fault::ServerError503
                | Fault::RateLimited(_),
            ) => Io::Answer(Err("the API server refused the write".into())),
            Some(Fault::TimeoutLate(_) | Fault::ServerErrorApplied) => {
                write(self);
                Io::Answer(Err("the API server did not answer in time".into()))
            }
            Some(Fault::Lag(_) | Fault::LeaseRunsOut) | None => {
                if fault == Some(Fault::LeaseRunsOut) {
                    self.leader = false;
                }
                write(self);
                Io::Answer(Ok(()))
            }
        }
    }

    /// A status naming a credential id claims it: only ours, or one the policy lets us adopt, or
    /// one the in-doubt rule recognises (the clientId of our own in-doubt POST: Leaf offers no
    /// other way to tell, see docs/troubleshooting.md).
    fn claims(&mut self, status: &TrimbleConnectionStatus) {
        let Some(id) = status.credential_id.clone() else {
            return;
        };
        if self.status.credential_id.as_deref() == Some(id.as_str()) {
            return;
        }
        if self.leaf.ours.contains(&id) {
            if let Some(cred) = self.leaf.credential.clone().filter(|c| c.id == id) {
                self.known_spent.insert(cred.token);
            }
            return;
        }
        let Some(cred) = self.leaf.credential.clone().filter(|c| c.id == id) else {
            self.violation(format!(
                "status claims credential {id}, which Leaf does not hold"
            ));
            return;
        };
        let secret_client = match &self.secret {
            SecretState::Complete { client_id, .. } => Some(client_id.clone()),
            _ => None,
        };
        let by_policy = self.spec.adoption_policy == AdoptionPolicy::AdoptMatching
            && secret_client.as_deref() == Some(cred.client_id.as_str());
        if self.recognised_in_doubt(&cred) {
            // Resumed: from now on the operator knows this token made a credential.
            self.known_spent.insert(cred.token.clone());
        }
        if by_policy || self.recognised_in_doubt(&cred) {
            self.entitled.insert(id);
        } else {
            self.violation(format!(
                "status claims credential {id} ({:?}, clientId {}) under adoptionPolicy {:?}",
                cred.origin, cred.client_id, self.spec.adoption_policy
            ));
        }
    }
}

impl Ports for SimPorts<'_> {
    fn now(&self) -> Timestamp {
        self.with(|w| w.now)
    }

    fn may_write(&self) -> bool {
        // Leadership is lost only at awaits (the IO calls); the fence only reads it.
        self.with(|w| w.leader)
    }

    async fn get_credential(&self) -> Result<Option<Credential>, LeafError> {
        match self.with(World::do_get) {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn create_credential(&self, secret: &TrimbleSecret) -> Result<Credential, LeafError> {
        match self.with(|w| w.do_post(secret)) {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn delete_credential(&self) -> Result<(), LeafError> {
        match self.with(World::do_delete) {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn credential_events(&self) -> Result<Vec<CredentialEvent>, LeafError> {
        match self.with(World::do_events) {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn write_status(&self, status: &TrimbleConnectionStatus) -> Result<(), String> {
        match self.with(|w| w.do_write_status(status)) {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn publish(&self, _reason: Reason, _action: &str, _note: &str) {}

    async fn publish_leaf_event(&self, _event: &CredentialEventSummary) {}
}

/// Runs one reconcile of the world's object now, as kube-runtime would.
pub fn reconcile(cell: &Mutex<World>) {
    let (facts, inputs, handled_at, secret, generation, deleting, interval) = {
        let mut w = cell.lock().expect("world");
        w.triggered = false;
        w.down_until = None;
        w.deleted_this_reconcile = false;
        w.tally.reconciles += 1;
        let secret = w.secret_values();
        let (facts, inputs, handled_at) = w.facts(secret.as_ref());
        (
            facts,
            inputs,
            handled_at,
            secret,
            Some(w.generation),
            w.deleting,
            w.spec.refresh_interval(),
        )
    };
    let ports = SimPorts { world: cell };
    let input = Input {
        facts,
        secret: secret.as_ref(),
        generation,
        handled_at,
    };
    enum Ran {
        Applied(Result<Applied, Interrupted>),
        Cleaned(Result<Cleaned, Interrupted>),
    }
    // Every simulated IO answers at once or never: one poll finishes the reconcile, or the
    // process died at one of its awaits and the future is dropped there.
    let ran = if deleting {
        engine::cleanup(&ports, input)
            .now_or_never()
            .map(Ran::Cleaned)
    } else {
        engine::apply(&ports, input)
            .now_or_never()
            .map(Ran::Applied)
    };
    let mut w = cell.lock().expect("world");
    let now = w.now;
    let instant = w.instant();
    let after = |wait: Option<Duration>| {
        wait.map(|d| now + SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
    };
    match ran {
        None => {}
        Some(Ran::Applied(Ok(Applied::Quiet(requeue)))) => w.due = after(requeue),
        Some(Ran::Applied(Ok(Applied::Done { next, .. })))
        | Some(Ran::Cleaned(Ok(Cleaned::Again { next, .. }))) => {
            let wait = w
                .schedules
                .record("uid-1", &inputs, &next, interval, instant);
            w.due = after(wait);
        }
        Some(Ran::Cleaned(Ok(Cleaned::Released))) => {
            w.gone = true;
            w.due = None;
        }
        Some(
            Ran::Applied(Err(Interrupted::Fenced(_))) | Ran::Cleaned(Err(Interrupted::Fenced(_))),
        ) => {
            // The leader loop aborts the controller on the same doubt.
            w.leader = false;
        }
        Some(Ran::Applied(Err(_)) | Ran::Cleaned(Err(_))) => {
            let wait = w.schedules.failed("uid-1", instant);
            w.due = after(Some(wait));
        }
    }
    w.check_tracked();
}

impl World {
    /// Every credential our POSTs made that Leaf still holds is tracked: named by the status, or
    /// covered by a create in doubt (unless the resource is gone with Orphan).
    pub fn check_tracked(&mut self) {
        if let Some(cred) = self.leaf.credential.clone()
            && cred.origin == Origin::Ours
            && !self.gone
        {
            let tracked = self.status.credential_id.as_deref() == Some(cred.id.as_str())
                || self.status.pending_create.is_some();
            if !tracked {
                self.violation(format!(
                    "credential {} made by this resource is not tracked (status names {:?}, nothing in doubt)",
                    cred.id, self.status.credential_id
                ));
            }
        }
        if !self.leaf.in_flight.is_empty() && self.status.pending_create.is_none() && !self.gone {
            self.violation("a POST of this resource may still land but nothing is in doubt".into());
        }
    }

    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }
}
