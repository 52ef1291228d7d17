//! The simulated world: the TrimbleConnection and its Secret as the API server holds them (one
//! incarnation after another when it is deleted and re-created), two operator replicas and their
//! Lease, the in-memory Leaf, the faults waiting for the next IO calls, and the books the
//! invariants are judged from. Time is the world's; each replica and Leaf read it with a skew.
//!
//! [`reconcile`] runs the operator's real code for the leader: the facts builder
//! (`reconcile::observe::facts`), `engine::apply` / `engine::cleanup` through [`SimPorts`], and the
//! requeue mapping (`reconcile::requeue::requeue`) into the replica's real `Schedules`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use leaf_operator::controller::decide::{ConflictFact, Windows};
use leaf_operator::controller::engine::{self, Applied, Cleaned, Input, Interrupted};
use leaf_operator::controller::polling::Polling;
use leaf_operator::controller::reconcile::observe::{self, AccountRead, Reads, Surroundings};
use leaf_operator::controller::reconcile::requeue::{Ended, requeue};
use leaf_operator::crd::{
    AdoptionPolicy, DeletionPolicy, RECONCILE_REQUESTED_AT_ANNOTATION, TrimbleConnection,
    TrimbleConnectionSpec, TrimbleConnectionStatus,
};
use leaf_operator::leaf::LeafAccount;
use leaf_operator::secret::{self, SecretError, TrimbleSecret};

use crate::judge::Books;
use crate::leaf::{Cred, DeleteAnswer, InFlight, LeafModel, Origin, PostAnswer, Write};
use crate::lease::{self, CONFIRM_EVERY, LEASE_DURATION, Lease, POLL_EVERY, RENEW_EVERY, Replica};
use crate::ports::SimPorts;

/// The client's request timeout and the operator's in-doubt margin, as configured by default.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const IN_DOUBT_MARGIN: Duration = Duration::from_secs(60);
/// A write that left lands at most this long after (Leaf's processing bound): within the request
/// timeout plus the margin, as the operator assumes.
pub const LATEST_LANDING: Duration = Duration::from_secs(85);
/// Reads lag behind a write by at most this much (within the read-lag allowance, the margin).
pub const LONGEST_LAG: Duration = Duration::from_secs(50);

pub fn windows() -> Windows {
    Windows::new(REQUEST_TIMEOUT, IN_DOUBT_MARGIN)
}

/// Which IO call a fault is aimed at: the next one, whatever it is, or the next of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aim {
    Next,
    /// A GET of the credential or its events.
    Read,
    Post,
    Delete,
    /// A status write to the API server.
    Status,
}

/// A fault waiting for the call it is aimed at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aimed {
    pub aim: Aim,
    pub fault: Fault,
}

/// A change of the world that may happen while a reconcile waits on an IO call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    NewToken,
    ForeignAppears { same_client: bool },
    CredentialVanishes,
}

/// What happens at one IO call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The process dies before the call has any effect.
    CrashBefore,
    /// The call takes effect, then the process dies before it sees the answer.
    CrashAfter,
    /// No answer in time; the request never arrived.
    TimeoutLost,
    /// No answer in time; the request takes effect `secs` later.
    TimeoutLate(u8),
    /// A 5xx; nothing happened.
    ServerError,
    /// 503, as Leaf answers while it is down; nothing happened.
    ServerError503,
    /// A 5xx (500 or 503) although the request took effect.
    ServerErrorApplied { status: u16 },
    /// 429 with this `Retry-After` text.
    RateLimited(String),
    /// Reads show the state before this write for this many seconds.
    Lag(u8),
    /// The call takes this long; the world moves on meanwhile.
    Slow(u8),
    /// A write waits this long (a login, the rate limiter) before it may leave.
    SlowSend(u8),
    /// The replica is cut off from the API server for this long, from this call on (renewals
    /// hang, reads and status writes fail; Leaf stays reachable).
    CutOff(u8),
    /// The world changes while the call is under way (between the operator's read and its write).
    Change(Change),
    /// The replica's whole process stops for this long at this call (a long pause of the
    /// runtime, a frozen VM): its lease loop stops too, then everything resumes where it was.
    Pause(u8),
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

/// The TrimbleConnection as the API server holds it.
pub struct Object {
    pub incarnation: u32,
    pub spec: TrimbleConnectionSpec,
    pub status: TrimbleConnectionStatus,
    pub generation: i64,
    pub created: Timestamp,
    pub annotation: Option<String>,
    pub deleting: bool,
    pub gone: bool,
}

/// Mutations the simulation itself applies (the rules of the lease loop and the client).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimMutations {
    /// The leader loop takes no safety margin off its deadline.
    pub fence_margin_zero: bool,
    /// The client sends a write whatever the fence says.
    pub no_fence: bool,
    /// The client sends a write after its send deadline.
    pub no_send_deadline: bool,
}

pub struct World {
    pub now: Timestamp,
    start: Instant,
    pub start_time: Timestamp,
    pub object: Object,
    pub secret: SecretState,
    pub leaf: LeafModel,
    pub replicas: [Replica; 2],
    pub lease: Lease,
    /// The lease's holder stopped renewing (cut off, crashed, stepped down).
    pub lease_frozen: bool,
    /// The next IO calls fail or change the world this way.
    pub faults: VecDeque<Aimed>,
    /// Leaf is down: every call answers 503 (nothing happens) until it is back.
    pub outage: bool,
    /// Alerts healthy: periodic checks run at the backstop pace.
    pub polling: Polling,
    /// An alert asked for a look.
    pub hint: Option<Instant>,
    pub books: Books,
    pub tokens_issued: u64,
    next_request: u64,
    pub mutations: SimMutations,
    /// The link Secret on the API server: the incarnation that owns it and the link id in it.
    pub link_secret: Option<(u32, String)>,
}

impl World {
    pub fn new(policy: AdoptionPolicy, shape: Shape) -> Self {
        let start_time: Timestamp = "2026-06-01T00:00:00Z".parse().expect("start");
        let mut spec: TrimbleConnectionSpec = serde_json::from_value(serde_json::json!({
            "leafUserId": "user-1", "credentialsSecretRef": {"name": "creds"}
        }))
        .expect("spec");
        spec.adoption_policy = policy;
        spec.reauthorization = shape.reauth.then(magic_link_policy);
        if shape.reauth && shape.no_secret {
            spec.credentials_secret_ref = None;
        }
        let mut replicas = [
            Replica::new(shape.skews[0], shape.phases[0]),
            Replica::new(shape.skews[1], shape.phases[1]),
        ];
        replicas[0].leading = true;
        replicas[0].triggered = true;
        let world = Self {
            now: start_time,
            start: Instant::now(),
            start_time,
            object: Object {
                incarnation: 1,
                spec,
                status: TrimbleConnectionStatus::default(),
                generation: 1,
                created: start_time,
                annotation: None,
                deleting: false,
                gone: false,
            },
            secret: SecretState::Complete {
                client_id: "client-a".into(),
                client_secret: "app-secret".into(),
                refresh_token: "rt-0".into(),
            },
            leaf: LeafModel::new(shape.leaf_skew),
            replicas,
            lease: Lease {
                holder: Some(0),
                renewed: start_time,
            },
            lease_frozen: false,
            faults: VecDeque::new(),
            outage: false,
            polling: Polling::Normal,
            hint: None,
            books: Books::default(),
            tokens_issued: 0,
            next_request: 1,
            mutations: SimMutations::default(),
            link_secret: None,
        };
        world.refresh_fences();
        world
    }

    /// The world's instant on the monotonic clock the schedules and the fence use.
    pub fn instant_at(&self, at: Timestamp) -> Instant {
        let elapsed = at.duration_since(self.start_time);
        self.start + Duration::try_from(elapsed).unwrap_or_default()
    }

    pub fn instant(&self) -> Instant {
        self.instant_at(self.now)
    }

    pub fn fresh_token(&mut self) -> String {
        self.tokens_issued += 1;
        format!("rt-{}", self.tokens_issued)
    }

    pub fn violation(&mut self, what: String) {
        let now = self.now;
        self.books.violation(now, what);
    }

    pub fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    // --- leadership

    /// The replica that runs the controller now, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..2).find(|&r| {
            let replica = &self.replicas[r];
            replica.leading && replica.up(self.now) && !replica.paused(self.now)
        })
    }

    /// When the holder last renewed, seen at `now`: its last renew tick while it renews
    /// undisturbed, else the time it stopped.
    fn renewed(&self) -> Timestamp {
        match self.lease.holder {
            Some(h) if !self.lease_frozen => lease::last_tick(
                self.start_time,
                self.replicas[h].phase,
                RENEW_EVERY,
                self.now,
            )
            .max(self.lease.renewed),
            _ => self.lease.renewed,
        }
    }

    /// Sets every leader's fence from the renewal its confirmation last saw.
    pub fn refresh_fences(&self) {
        let margin = lease::margin(self.mutations.fence_margin_zero);
        for (r, replica) in self.replicas.iter().enumerate() {
            // A replica confirms only while it can read the Lease and the Lease names it.
            if replica.leading
                && self.lease.holder == Some(r)
                && !replica.cut_off(self.now)
                && !replica.paused(self.now)
                && replica.up(self.now)
            {
                let renewed = self.renewed();
                replica.fence.hold_until(lease::fence_deadline(
                    |t| self.instant_at(t),
                    renewed,
                    margin,
                ));
            }
        }
    }

    /// The holder stops renewing at `now` (cut off or crashed): the Lease keeps its last renewal.
    fn freeze_lease(&mut self, replica: usize) {
        if self.lease.holder == Some(replica) && !self.lease_frozen {
            self.lease.renewed = self.renewed();
            self.lease_frozen = true;
        }
    }

    /// When a cut-off leader gives up (its lease could not be confirmed before it would expire).
    fn step_down_time(&self, r: usize) -> Option<Timestamp> {
        let replica = &self.replicas[r];
        if !replica.leading || !replica.up(self.now) || replica.paused(self.now) {
            return None;
        }
        let holds = self.lease.holder == Some(r);
        if holds && !self.lease_frozen {
            return None;
        }
        let margin = SignedDuration::try_from(lease::margin(self.mutations.fence_margin_zero))
            .expect("margin");
        let due = if holds {
            self.lease.renewed + SignedDuration::try_from(LEASE_DURATION).expect("d") - margin
        } else if replica.cut_off(self.now) {
            // It cannot read that another holds it: its own deadline ends it.
            self.lease.renewed.min(self.now) + SignedDuration::from_secs(15) - margin
        } else {
            self.now
        };
        Some(lease::next_tick(
            self.start_time,
            replica.phase,
            CONFIRM_EVERY,
            due.max(self.now),
        ))
    }

    /// When standby `r` takes the Lease over.
    fn acquire_time(&self, r: usize) -> Option<Timestamp> {
        let replica = &self.replicas[r];
        if replica.leading
            || !replica.up(self.now)
            || replica.cut_off(self.now)
            || replica.paused(self.now)
        {
            return None;
        }
        let from = match self.lease.holder {
            None => self.now,
            Some(h) if h == r => self.now,
            Some(h) => {
                if !self.lease_frozen {
                    return None;
                }
                // Expired by this replica's clock: renewed (written by the holder's clock) + 15 s.
                let written = self.lease.renewed + self.replicas[h].skew;
                let expired = written + SignedDuration::try_from(LEASE_DURATION).expect("d");
                (expired - replica.skew).max(self.now)
            }
        };
        Some(lease::next_tick(
            self.start_time,
            replica.phase,
            POLL_EVERY,
            from,
        ))
    }

    /// When a holder whose cut-off ended renews again.
    fn renew_time(&self, r: usize) -> Option<Timestamp> {
        let replica = &self.replicas[r];
        (self.lease.holder == Some(r)
            && self.lease_frozen
            && replica.leading
            && replica.up(self.now)
            && !replica.cut_off(self.now)
            && !replica.paused(self.now))
        .then(|| lease::next_tick(self.start_time, replica.phase, RENEW_EVERY, self.now))
    }

    fn step_down(&mut self, r: usize) {
        let replica = &mut self.replicas[r];
        replica.fence.revoke();
        replica.leading = false;
        replica.due = None;
        replica.triggered = false;
        self.freeze_lease(r);
    }

    fn acquire(&mut self, r: usize) {
        if self.lease.holder != Some(r) {
            self.books.tally.leader_changes += 1;
        }
        self.lease = Lease {
            holder: Some(r),
            renewed: self.now,
        };
        self.lease_frozen = false;
        let replica = &mut self.replicas[r];
        replica.leading = true;
        // A new term starts its controller: every object is reconciled once.
        replica.triggered = true;
        self.refresh_fences();
    }

    /// Replica `r` dies now; kubelet restarts it with a back-off.
    pub fn crash(&mut self, r: usize) {
        self.books.tally.crashes += 1;
        self.freeze_lease(r);
        let now = self.now;
        let replica = &mut self.replicas[r];
        replica.recent_crashes = replica.recent_crashes.saturating_add(1);
        // kubelet's CrashLoopBackOff: 10 s doubling to 5 minutes.
        let delay = Duration::from_secs(10)
            .saturating_mul(2u32.saturating_pow(replica.recent_crashes.min(5) - 1))
            .min(Duration::from_secs(300));
        replica.down_until = Some(now + SignedDuration::try_from(delay).unwrap_or_default());
        // A new process: empty schedules, a fence that holds nothing, no controller.
        replica.schedules = Default::default();
        replica.fence = leaf_operator::leader::Fence::elected();
        replica.leading = false;
        replica.due = None;
        replica.triggered = false;
    }

    pub fn cut_off(&mut self, r: usize, secs: u64) {
        let until = self.now + SignedDuration::from_secs(secs as i64);
        let replica = &mut self.replicas[r];
        replica.cut_off_until = Some(replica.cut_off_until.map_or(until, |u| u.max(until)));
        if self.replicas[r].leading {
            self.freeze_lease(r);
        }
    }

    /// Replica `r`'s process stops for `secs` (its lease loop with it).
    pub fn pause(&mut self, r: usize, secs: u64) {
        let until = self.now + SignedDuration::from_secs(secs as i64);
        self.replicas[r].paused_until = Some(until);
        self.freeze_lease(r);
    }

    /// Everything recovers: no cut-off, every replica up.
    pub fn heal(&mut self) {
        for replica in &mut self.replicas {
            replica.cut_off_until = None;
            replica.paused_until = None;
            replica.recent_crashes = 0;
        }
    }

    // --- time

    /// Whether the leader would reconcile now.
    pub fn wants_reconcile(&self) -> Option<usize> {
        let r = self.leader()?;
        let replica = &self.replicas[r];
        (!self.object.gone && (replica.triggered || replica.due.is_some_and(|due| due <= self.now)))
            .then_some(r)
    }

    /// The next time something happens on its own, a requeue of the leader included (the
    /// driver runs the reconcile then).
    pub fn next_event(&self) -> Option<Timestamp> {
        let due = self
            .leader()
            .and_then(|r| self.replicas[r].due)
            .filter(|_| !self.object.gone);
        match (self.next_world_event(), due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next time the world itself changes: a write landing, a lease event, a restart, the
    /// end of a cut-off or a pause.
    fn next_world_event(&self) -> Option<Timestamp> {
        let mut next = self.leaf.next_landing();
        let mut consider = |t: Option<Timestamp>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Timestamp| n.min(t)));
            }
        };
        for r in 0..2 {
            let replica = &self.replicas[r];
            consider(replica.down_until.filter(|t| *t > self.now));
            consider(replica.cut_off_until.filter(|t| *t > self.now));
            consider(replica.paused_until.filter(|t| *t > self.now));
            consider(self.step_down_time(r));
            consider(self.acquire_time(r));
            consider(self.renew_time(r));
        }
        next
    }

    /// Moves the clock to `to`, handling each change of the world on the way at its own time
    /// (reconciles that come due meanwhile are the driver's: a call in progress holds them up).
    pub fn advance_to(&mut self, to: Timestamp) {
        let mut same_instant = 0;
        while let Some(next) = self.next_world_event().filter(|t| *t <= to) {
            same_instant = if next <= self.now {
                same_instant + 1
            } else {
                0
            };
            if same_instant > 10 {
                // Handling an instant again and again: a model error, not a schedule.
                let now = self.now;
                self.books
                    .violation(now, format!("the simulated world is stuck at {now}"));
                break;
            }
            self.now = next.max(self.now);
            self.handle_events();
        }
        if to > self.now {
            self.now = to;
            self.handle_events();
        }
        self.refresh_fences();
    }

    fn handle_events(&mut self) {
        let now = self.now;
        for landed in self.leaf.take_landed(now) {
            self.land(landed);
        }
        for r in 0..2 {
            if self.replicas[r].cut_off_until.is_some_and(|t| t <= now) {
                self.replicas[r].cut_off_until = None;
            }
            if self.replicas[r].paused_until.is_some_and(|t| t <= now) {
                self.replicas[r].paused_until = None;
            }
            if self.replicas[r].down_until.is_some_and(|t| t <= now) {
                // Restarted: a standby until its lease loop acquires.
                self.replicas[r].down_until = None;
            }
        }
        for r in 0..2 {
            if self.step_down_time(r) == Some(now) {
                self.step_down(r);
            }
        }
        for r in 0..2 {
            if self.renew_time(r) == Some(now) {
                self.lease.renewed = now;
                self.lease_frozen = false;
            }
        }
        for r in 0..2 {
            if self.acquire_time(r) == Some(now) {
                self.acquire(r);
            }
        }
        self.refresh_fences();
    }

    // --- Leaf writes

    /// A write of ours arrives at Leaf now: its effect, judged, and Leaf's answer.
    pub fn arrive(&mut self, flight: &InFlight) -> Arrival {
        let now = self.now;
        self.books.applies(now, flight.id, flight.sent_at);
        match &flight.write {
            Write::Post { client_id, token } => {
                let previous = self.leaf.credential.clone();
                let origin = Origin::Ours {
                    incarnation: flight.incarnation,
                    request: flight.id,
                };
                let spent_before = self.leaf.spent.contains(token);
                let answer = self.leaf.post(client_id, token, origin, now, flight.lag);
                if !spent_before && self.leaf.spent.contains(token) {
                    // Created, or refused after Leaf used it (a 409 when it spends on conflict).
                    self.books.spent(flight.incarnation, token);
                }
                if let (PostAnswer::Created(_), Some(replaced)) = (&answer, previous) {
                    self.removes(flight, &replaced);
                }
                Arrival::Post(answer)
            }
            Write::Delete => {
                let answer = self.leaf.delete(now, flight.lag);
                if let DeleteAnswer::Removed(removed) = &answer {
                    let removed = removed.clone();
                    self.removes(flight, &removed);
                }
                Arrival::Delete(answer)
            }
        }
    }

    /// A write whose client gave up lands now; nobody hears Leaf's answer.
    pub fn land(&mut self, flight: InFlight) {
        self.books.tally.late_landings += 1;
        self.arrive(&flight);
    }

    fn removes(&mut self, flight: &InFlight, removed: &Cred) {
        let now = self.now;
        self.books.removes(
            now,
            flight,
            removed,
            flight.decided_on.as_deref(),
            flight.decided_at,
            flight.policy,
            windows().after_send + windows().send_budget,
        );
    }

    // --- the object

    /// The object as the API server would serve it.
    pub fn tc(&self) -> TrimbleConnection {
        let o = &self.object;
        let mut tc = TrimbleConnection::new("farm", o.spec.clone());
        tc.metadata.namespace = Some("ns".into());
        tc.metadata.uid = Some(format!("uid-{}", o.incarnation));
        tc.metadata.generation = Some(o.generation);
        // creationTimestamp is cut to the second, as the API server stores it.
        tc.metadata.creation_timestamp = Some(Time(
            Timestamp::from_second(o.created.as_second()).unwrap_or(o.created),
        ));
        if let Some(value) = &o.annotation {
            tc.metadata.annotations = Some(
                [(RECONCILE_REQUESTED_AT_ANNOTATION.to_string(), value.clone())]
                    .into_iter()
                    .collect(),
            );
        }
        if o.deleting {
            tc.metadata.deletion_timestamp = Some(Time(o.created));
        }
        tc.status = Some(o.status.clone());
        tc
    }

    fn secret_read(&self) -> Result<TrimbleSecret, SecretError> {
        match &self.secret {
            SecretState::Missing => Err(SecretError::NotFound {
                name: "creds".into(),
            }),
            SecretState::Incomplete => Err(SecretError::MissingKey {
                name: "creds".into(),
                key: "refreshToken".into(),
            }),
            SecretState::Complete {
                client_id,
                client_secret,
                refresh_token,
            } => {
                let k8s: Secret = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "creds"},
                    "stringData": {"clientId": client_id, "clientSecret": client_secret, "refreshToken": refresh_token}
                }))
                .expect("secret");
                let reference = self
                    .object
                    .spec
                    .credentials_secret_ref
                    .as_ref()
                    .expect("the simulated resource names its Secret");
                secret::parse_trimble_secret(&k8s, reference)
            }
        }
    }

    pub fn secret_client(&self) -> Option<&str> {
        self.object.spec.credentials_secret_ref.as_ref()?;
        match &self.secret {
            SecretState::Complete { client_id, .. } => Some(client_id),
            _ => None,
        }
    }

    /// The status write of `replica` lands (or not: cut off from the API server).
    pub fn write_status(&mut self, status: &TrimbleConnectionStatus) {
        let now = self.now;
        let incarnation = self.object.incarnation;
        if let Some(id) = status.credential_id.clone()
            && self.object.status.credential_id.as_deref() != Some(id.as_str())
        {
            let policy = self.object.spec.adoption_policy;
            let client = self.secret_client().map(str::to_string);
            let window = windows().after_send + windows().send_budget;
            self.books.claims(
                now,
                incarnation,
                &id,
                &self.leaf,
                policy,
                client.as_deref(),
                window,
            );
        }
        let new_intent = status.pending_create.as_ref().is_some_and(|p| {
            self.object
                .status
                .pending_create
                .as_ref()
                .map(|q| &q.started_at)
                != Some(&p.started_at)
        });
        if new_intent && let Some(client) = self.secret_client() {
            let client = client.to_string();
            self.books.intents.push((incarnation, client, now));
        }
        // Stored as the API server stores it: the operator's merge patch applied to what was
        // there, so a field the patch forgets to remove stays, as it would on a real server.
        let mut stored = serde_json::json!({ "status": &self.object.status });
        json_patch::merge(
            &mut stored,
            &leaf_operator::controller::reconcile::status_patch::status_patch(status),
        );
        self.object.status =
            serde_json::from_value(stored["status"].take()).expect("a status the CRD accepts");
        // Our own write comes back through the watch.
        if let Some(r) = self.leader() {
            self.replicas[r].triggered = true;
        }
    }

    /// Invariant 3 for the live incarnation.
    pub fn check_tracked(&mut self) {
        if self.object.gone {
            return;
        }
        let now = self.now;
        let incarnation = self.object.incarnation;
        let status = self.object.status.clone();
        self.books.tracked(now, incarnation, &status, &self.leaf);
        self.books.links(now, incarnation, &status, &self.leaf);
    }

    /// The finalizer goes.
    fn release(&mut self) {
        let now = self.now;
        let incarnation = self.object.incarnation;
        let delete = self.object.spec.deletion_policy == DeletionPolicy::Delete;
        self.books.released(now, incarnation, delete, &self.leaf);
        self.object.gone = true;
        for replica in &mut self.replicas {
            replica.due = None;
            replica.triggered = false;
        }
    }

    /// A new incarnation of the resource (same name and spec, a new uid and an empty status).
    pub fn recreate(&mut self) {
        let spec = self.object.spec.clone();
        self.books.tally.recreations += 1;
        self.object = Object {
            incarnation: self.object.incarnation + 1,
            spec: TrimbleConnectionSpec {
                deletion_policy: DeletionPolicy::Delete,
                ..spec
            },
            status: TrimbleConnectionStatus::default(),
            generation: 1,
            created: self.now,
            annotation: None,
            deleting: false,
            gone: false,
        };
        if let Some(r) = self.leader() {
            self.replicas[r].triggered = true;
        }
    }

    /// A change of the world (a transition, or at an IO call).
    pub fn change(&mut self, change: &Change) {
        let now = self.now;
        match change {
            Change::NewToken => {
                let token = self.fresh_token();
                let client_id = self.secret_client().unwrap_or("client-a").to_string();
                self.secret = SecretState::Complete {
                    client_id,
                    client_secret: "app-secret".into(),
                    refresh_token: token,
                };
                self.poke();
            }
            Change::ForeignAppears { same_client } => {
                let client = if *same_client {
                    "client-a"
                } else {
                    "client-elsewhere"
                };
                let token = format!("foreign-{}", self.fresh_token());
                let cred = self.leaf.new_cred(client, &token, Origin::Foreign, now);
                self.leaf.set_settled(Some(cred));
            }
            Change::CredentialVanishes => self.leaf.set_settled(None),
        }
    }

    /// A watch event for the leader (a Secret or spec change).
    pub fn poke(&mut self) {
        if let Some(r) = self.leader() {
            self.replicas[r].triggered = true;
        }
    }

    /// The first fault aimed at a call of kind `aim` (or at the next call, whatever it is).
    pub fn next_fault(&mut self, aim: Aim) -> Option<Fault> {
        let at = self
            .faults
            .iter()
            .position(|f| f.aim == Aim::Next || f.aim == aim)?;
        self.faults.remove(at).map(|f| f.fault)
    }
}

/// `reauthorization` as a user would write it: Magic Links valid for an hour (renewed 12 minutes
/// before they expire).
pub fn magic_link_policy() -> leaf_operator::crd::Reauthorization {
    serde_json::from_value(serde_json::json!({"policy": "MagicLink", "expiresIn": "1h"}))
        .expect("reauthorization")
}

/// What Leaf answered a write that arrived.
pub enum Arrival {
    Post(PostAnswer),
    Delete(DeleteAnswer),
}

/// The fixed shape of one schedule's world: clock skews and loop phases.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub skews: [SignedDuration; 2],
    pub phases: [SignedDuration; 2],
    pub leaf_skew: SignedDuration,
    /// The resource has `reauthorization.policy: MagicLink` (a Magic Link for the grower when
    /// its credential dies).
    pub reauth: bool,
    /// With `reauth`: the resource names no Secret at all, and connects through the grower's
    /// Magic Link from the start.
    pub no_secret: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            skews: [SignedDuration::ZERO; 2],
            phases: [SignedDuration::ZERO, SignedDuration::from_millis(700)],
            leaf_skew: SignedDuration::ZERO,
            reauth: false,
            no_secret: false,
        }
    }
}

/// Runs one reconcile of the object by the leader `r`, as kube-runtime would.
pub fn reconcile(cell: &Mutex<World>, r: usize) {
    let prepared = {
        let mut w = cell.lock().expect("world");
        w.books.tally.reconciles += 1;
        let replica = &mut w.replicas[r];
        replica.triggered = false;
        replica.due = None;
        if w.replicas[r].cut_off(w.now) {
            // Its reads of the object and the Secret fail: the reconcile ends before deciding.
            let uid = format!("uid-{}", w.object.incarnation);
            let instant = w.instant();
            let wait = requeue(&w.replicas[r].schedules, &uid, None, Ended::Failed, instant);
            let now = w.now;
            w.replicas[r].due =
                wait.map(|d| now + SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX));
            return;
        }
        let tc = w.tc();
        let deleting = w.object.deleting;
        // The link Secret, read as `link_secret::read_id` reads it: only one this incarnation owns.
        let link_id = w
            .link_secret
            .as_ref()
            .filter(|(owner, _)| *owner == w.object.incarnation)
            .filter(|_| w.object.status.magic_link.is_some())
            .map(|(_, id)| secrecy::SecretString::from(id.clone()));
        let reads = Reads {
            credentials: (!deleting && w.object.spec.credentials_secret_ref.is_some())
                .then(|| w.secret_read()),
            account: AccountRead::Default(Some(LeafAccount::token("leaf-token"))),
            conflict: ConflictFact::Clear,
            link_id,
        };
        let alert_at = w.hint.take();
        let replica_now = w.replicas[r].clock(w.now);
        let instant = w.instant();
        let observed = observe::facts(
            &tc,
            reads,
            &Surroundings {
                polling: w.polling,
                schedules: &w.replicas[r].schedules,
                alert_at,
                windows: windows(),
                now: replica_now,
                instant,
                observe_only: false,
                reauthorization_default: leaf_operator::crd::ReauthorizationPolicy::None,
            },
        );
        (
            observed,
            deleting,
            tc.metadata.generation,
            format!("uid-{}", w.object.incarnation),
            w.object.incarnation,
        )
    };
    let (mut observed, deleting, generation, uid, incarnation) = prepared;
    let secret = observed.secret.take();
    let pace = observed.pace.clone();
    let ports = SimPorts::new(cell, r, incarnation);
    let input = Input {
        facts: observed.facts,
        secret: secret.as_ref(),
        generation,
        handled_at: observed.handled_at,
        link_id: observed.link_id.take(),
    };
    enum Ran {
        Applied(Result<Applied, Interrupted>),
        Cleaned(Result<Cleaned, Interrupted>),
    }
    // Every simulated IO answers at once (time moves inside a call when a fault says so) or
    // never: one poll finishes the reconcile, or the process died at one of its awaits and the
    // future is dropped there.
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
    if w.object.incarnation != incarnation || !w.replicas[r].leading {
        // The work was aborted (leadership lost) or the object is another one now.
        w.check_tracked();
        return;
    }
    let now = w.now;
    let instant = w.instant();
    let schedules = &w.replicas[r].schedules;
    let wait = match &ran {
        None => {
            w.check_tracked();
            return;
        }
        Some(Ran::Applied(Ok(applied))) => requeue(
            schedules,
            &uid,
            Some(&pace),
            Ended::Applied(applied),
            instant,
        ),
        Some(Ran::Cleaned(Ok(cleaned))) => requeue(
            schedules,
            &uid,
            Some(&pace),
            Ended::Cleaned(cleaned),
            instant,
        ),
        Some(Ran::Applied(Err(_)) | Ran::Cleaned(Err(_))) => {
            requeue(schedules, &uid, Some(&pace), Ended::Interrupted, instant)
        }
    };
    if matches!(
        ran,
        Some(Ran::Applied(Err(Interrupted::Fenced(_))) | Ran::Cleaned(Err(Interrupted::Fenced(_))))
    ) {
        w.books.tally.fenced += 1;
    }
    w.replicas[r].due =
        wait.map(|d| now + SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX));
    if std::env::var("SIM_DEBUG").is_ok() {
        let next = match &ran {
            Some(Ran::Applied(Ok(Applied::Done(finished)))) => format!("{finished:?}"),
            Some(Ran::Applied(Ok(Applied::Quiet(q)))) => format!("quiet {q:?}"),
            Some(Ran::Cleaned(Ok(c))) => format!("{c:?}"),
            _ => "interrupted".to_string(),
        };
        eprintln!(
            "{now} replica {r} reconciled: {next}, due {:?}",
            w.replicas[r].due
        );
    }
    if let Some(Ran::Cleaned(Ok(Cleaned::Released))) = ran {
        w.release();
    }
    w.check_tracked();
}
