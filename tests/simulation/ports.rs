//! The engine's [`Ports`] over the simulated world, for one reconcile by one replica.
//!
//! Each call takes the next injected [`Fault`]: a crash (the process dies at that await: the
//! engine's future is dropped there), a timeout whose request lands later or never, a 5xx with or
//! without effect, a 429 with any `Retry-After`, read lag, a slow call during which the world
//! moves on (the Lease may change hands, a write in flight may land, the Secret or Leaf may
//! change), a slow send (a login or the rate limiter) that may take a write past its deadline,
//! or the replica cut off from the API server. A write is checked against the real
//! `leaf::SendGuard` right before it leaves, with the replica's real `Fence`.

use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use leaf_operator::controller::decide::reauth::ReauthSettings;
use leaf_operator::controller::decide::transitions::Notice;
use leaf_operator::controller::engine::{Ports, StatusWriteError};
use leaf_operator::crd::{CredentialEventSummary, TrimbleConnectionStatus};
use leaf_operator::leaf::{Credential, CredentialEvent, Deleted, LeafError, MagicLink, SendGuard};
use leaf_operator::secret::TrimbleSecret;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};

use crate::leaf::{DeleteAnswer, InFlight, PostAnswer, Write};
use crate::world::{Aim, Arrival, Fault, LATEST_LANDING, LONGEST_LAG, World};

/// How one simulated IO call ends.
enum Io<T> {
    Answer(T),
    /// The process died, or its work was aborted, at this await.
    Dead,
}

/// [`Ports`] for one reconcile of the object's `incarnation` by `replica`.
pub struct SimPorts<'w> {
    world: &'w Mutex<World>,
    replica: usize,
    incarnation: u32,
    /// What the last read showed, and when: what a write of this reconcile was decided on.
    last_read: Mutex<(Option<String>, Option<Timestamp>)>,
}

impl<'w> SimPorts<'w> {
    pub fn new(world: &'w Mutex<World>, replica: usize, incarnation: u32) -> Self {
        Self {
            world,
            replica,
            incarnation,
            last_read: Mutex::new((None, None)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.lock().expect("world"))
    }

    /// Whether this reconcile still runs: its process up, its term not ended.
    fn alive(&self, w: &World) -> bool {
        let replica = &w.replicas[self.replica];
        replica.leading && replica.up(w.now) && w.object.incarnation == self.incarnation
    }

    /// The frame of every call: changes of the world and slowness first, then the call's own
    /// fault (an outage answers every Leaf call with 503 without consuming one).
    fn begin(&self, w: &mut World, aim: Aim) -> Io<Option<Fault>> {
        if !self.alive(w) {
            return Io::Dead;
        }
        let leaf_call = aim != Aim::Status;
        loop {
            if leaf_call && w.outage {
                return Io::Answer(Some(Fault::ServerError503));
            }
            match w.next_fault(aim) {
                Some(Fault::Change(change)) => w.change(&change),
                Some(Fault::CutOff(secs)) => w.cut_off(self.replica, u64::from(secs)),
                Some(Fault::Pause(secs)) => {
                    // Everything of this process stops, this call included, then goes on.
                    w.pause(self.replica, u64::from(secs));
                    let to = w.now + SignedDuration::from_secs(i64::from(secs));
                    w.advance_to(to);
                    if !self.alive(w) {
                        return Io::Dead;
                    }
                }
                Some(Fault::CrashBefore) => {
                    w.crash(self.replica);
                    return Io::Dead;
                }
                fault => {
                    if std::env::var("SIM_DEBUG").is_ok() {
                        eprintln!(
                            "{} replica {} {aim:?} call, fault {fault:?}",
                            w.now, self.replica
                        );
                    }
                    return Io::Answer(fault);
                }
            }
        }
    }

    /// Lets `secs` pass inside the call; false when the work did not survive them.
    fn pass(&self, w: &mut World, secs: u8) -> bool {
        let to = w.now + SignedDuration::from_secs(i64::from(secs));
        w.advance_to(to);
        self.alive(w)
    }

    fn record_read(&self, seen: Option<&str>, at: Timestamp) {
        *self.last_read.lock().expect("last read") = (seen.map(str::to_string), Some(at));
    }

    fn read<T>(&self, read: impl FnOnce(&mut World) -> T) -> Io<Result<T, LeafError>> {
        self.with(|w| {
            let fault = match self.begin(w, Aim::Read) {
                Io::Dead => return Io::Dead,
                Io::Answer(fault) => fault,
            };
            let now = w.now;
            w.books.call(now);
            match fault {
                Some(Fault::CrashAfter) => {
                    w.crash(self.replica);
                    Io::Dead
                }
                Some(Fault::TimeoutLost | Fault::TimeoutLate(_)) => Io::Answer(Err(timeout())),
                Some(
                    Fault::ServerError | Fault::ServerError503 | Fault::ServerErrorApplied { .. },
                ) => Io::Answer(Err(answer(503, None, "upstream failure", false))),
                Some(Fault::RateLimited(value)) => {
                    Io::Answer(Err(answer(429, Some(&value), "Too many requests", false)))
                }
                Some(Fault::Slow(secs) | Fault::SlowSend(secs)) => {
                    let value = read(w);
                    if self.pass(w, secs) {
                        Io::Answer(Ok(value))
                    } else {
                        Io::Dead
                    }
                }
                _ => Io::Answer(Ok(read(w))),
            }
        })
    }

    /// A write (POST or DELETE) that may leave until `send_by` (the replica's clock).
    fn send(&self, write: Write, send_by: Timestamp) -> Io<Result<Arrival, LeafError>> {
        let aim = match write {
            Write::Post { .. } => Aim::Post,
            Write::Delete => Aim::Delete,
        };
        self.with(|w| {
            let mut fault = match self.begin(w, aim) {
                Io::Dead => return Io::Dead,
                Io::Answer(fault) => fault,
            };
            let now = w.now;
            w.books.call(now);
            if let Some(Fault::SlowSend(secs)) = fault {
                // A login or the rate limiter: time passes before the write may leave.
                if !self.pass(w, secs) {
                    return Io::Dead;
                }
                // What happens to the write once it leaves is a fault of its own (it may, say,
                // land late as well).
                fault = w.next_fault(aim);
            }
            let replica = &w.replicas[self.replica];
            let deadline = if w.mutations.no_send_deadline {
                w.instant_at(Timestamp::MAX.min(w.now + SignedDuration::from_hours(24)))
            } else {
                w.instant_at(send_by - replica.skew)
            };
            let now_instant = w.instant();
            let fence = replica.fence.clone();
            let no_fence = w.mutations.no_fence;
            let may_send = move || no_fence || fence.holds_at(now_instant);
            let guard = SendGuard {
                deadline,
                may_send: &may_send,
            };
            if let Err(refused) = guard.check(now_instant) {
                return Io::Answer(Err(refused));
            }
            let id = w.request_id();
            let now = w.now;
            let holder = w.lease.holder;
            let incarnation = self.incarnation;
            w.books
                .leaves(now, &write, id, self.replica, holder, incarnation, &w.leaf);
            let (decided_on, decided_at) = self.last_read.lock().expect("last read").clone();
            let lag = match fault {
                Some(Fault::Lag(secs)) => Duration::from_secs(u64::from(secs)).min(LONGEST_LAG),
                _ => w.leaf.read_lag,
            };
            let mut flight = InFlight {
                id,
                write,
                incarnation,
                sent_at: now,
                lands_at: now,
                decided_on,
                decided_at,
                policy: w.object.spec.adoption_policy,
                lag,
            };
            match fault {
                Some(Fault::CrashAfter) => {
                    w.arrive(&flight);
                    w.crash(self.replica);
                    Io::Dead
                }
                Some(Fault::TimeoutLost) => Io::Answer(Err(timeout())),
                Some(Fault::TimeoutLate(secs)) => {
                    let late = Duration::from_secs(u64::from(secs)).min(LATEST_LANDING);
                    flight.lands_at = now + SignedDuration::try_from(late).unwrap_or_default();
                    if late.is_zero() {
                        w.arrive(&flight);
                    } else {
                        w.leaf.in_flight.push(flight);
                    }
                    Io::Answer(Err(timeout()))
                }
                Some(Fault::ServerError) => {
                    w.books.answered(id);
                    Io::Answer(Err(answer(502, None, "bad gateway", true)))
                }
                Some(Fault::ServerError503) => {
                    w.books.answered(id);
                    Io::Answer(Err(answer(503, None, "Leaf is down for maintenance", true)))
                }
                Some(Fault::ServerErrorApplied { status }) => {
                    w.arrive(&flight);
                    Io::Answer(Err(answer(status, None, "upstream failure", true)))
                }
                Some(Fault::RateLimited(value)) => {
                    w.books.answered(id);
                    Io::Answer(Err(answer(429, Some(&value), "Too many requests", true)))
                }
                Some(Fault::Slow(secs)) => {
                    let arrival = w.arrive(&flight);
                    w.books.answered(id);
                    if self.pass(w, secs) {
                        Io::Answer(Ok(arrival))
                    } else {
                        Io::Dead
                    }
                }
                _ => {
                    let arrival = w.arrive(&flight);
                    w.books.answered(id);
                    Io::Answer(Ok(arrival))
                }
            }
        })
    }
}

impl SimPorts<'_> {
    /// A Magic Link write (its create or DELETE): the faults of a write, the real `SendGuard`;
    /// `apply` is Leaf taking it (a lost answer may or may not have been applied).
    fn link_write<T>(
        &self,
        aim: Aim,
        send_by: Timestamp,
        apply: impl FnOnce(&mut World) -> Result<T, LeafError>,
    ) -> Io<Result<T, LeafError>> {
        self.with(|w| {
            let mut fault = match self.begin(w, aim) {
                Io::Dead => return Io::Dead,
                Io::Answer(fault) => fault,
            };
            let now = w.now;
            w.books.call(now);
            if let Some(Fault::SlowSend(secs)) = fault {
                if !self.pass(w, secs) {
                    return Io::Dead;
                }
                fault = w.next_fault(aim);
            }
            let replica = &w.replicas[self.replica];
            let deadline = w.instant_at(send_by - replica.skew);
            let now_instant = w.instant();
            let fence = replica.fence.clone();
            let no_fence = w.mutations.no_fence;
            let may_send = move || no_fence || fence.holds_at(now_instant);
            let guard = SendGuard {
                deadline,
                may_send: &may_send,
            };
            if let Err(refused) = guard.check(now_instant) {
                return Io::Answer(Err(refused));
            }
            match fault {
                Some(Fault::CrashAfter) => {
                    let _ = apply(w);
                    w.crash(self.replica);
                    Io::Dead
                }
                Some(Fault::TimeoutLost) => Io::Answer(Err(timeout())),
                Some(Fault::ServerError | Fault::ServerError503) => {
                    Io::Answer(Err(answer(503, None, "upstream failure", true)))
                }
                Some(Fault::RateLimited(value)) => {
                    Io::Answer(Err(answer(429, Some(&value), "Too many requests", true)))
                }
                Some(Fault::TimeoutLate(_)) => {
                    let _ = apply(w);
                    Io::Answer(Err(timeout()))
                }
                Some(Fault::ServerErrorApplied { status }) => {
                    let _ = apply(w);
                    Io::Answer(Err(answer(status, None, "upstream failure", true)))
                }
                Some(Fault::Slow(secs)) => {
                    let value = apply(w);
                    if self.pass(w, secs) {
                        Io::Answer(value)
                    } else {
                        Io::Dead
                    }
                }
                _ => Io::Answer(apply(w)),
            }
        })
    }

    /// A write to the API server other than the status (the link Secret).
    fn api_write(&self, apply: impl FnOnce(&mut World)) -> Io<Result<(), StatusWriteError>> {
        self.with(|w| {
            let fault = match self.begin(w, Aim::Status) {
                Io::Dead => return Io::Dead,
                Io::Answer(fault) => fault,
            };
            if w.replicas[self.replica].cut_off(w.now) {
                return Io::Answer(Err(StatusWriteError::Refused(
                    "the API server cannot be reached".into(),
                )));
            }
            match fault {
                Some(Fault::CrashAfter) => {
                    apply(w);
                    w.crash(self.replica);
                    Io::Dead
                }
                Some(
                    Fault::TimeoutLost
                    | Fault::ServerError
                    | Fault::ServerError503
                    | Fault::RateLimited(_),
                ) => Io::Answer(Err(StatusWriteError::Refused(
                    "the API server refused the write".into(),
                ))),
                Some(Fault::TimeoutLate(_) | Fault::ServerErrorApplied { .. }) => {
                    apply(w);
                    Io::Answer(Err(StatusWriteError::TimedOut))
                }
                _ => {
                    apply(w);
                    Io::Answer(Ok(()))
                }
            }
        })
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
        sent: true,
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
    if let Some(delay) = error.retry_after() {
        assert!(
            delay <= leaf_operator::leaf::MAX_RETRY_AFTER,
            "Retry-After {retry_after:?} gave {delay:?}, beyond the cap"
        );
    }
    error
}

impl Ports for SimPorts<'_> {
    fn now(&self) -> Timestamp {
        self.with(|w| w.replicas[self.replica].clock(w.now))
    }

    fn may_write(&self) -> bool {
        self.with(|w| w.mutations.no_fence || w.replicas[self.replica].fence.holds_at(w.instant()))
    }

    async fn get_credential(&self) -> Result<Option<Credential>, LeafError> {
        let read = self.read(|w| {
            let now = w.now;
            if w.leaf.lagging(now) {
                w.books.tally.lagged_reads += 1;
            }
            (w.leaf.visible(now), now)
        });
        match read {
            Io::Answer(Ok((seen, at))) => {
                if std::env::var("SIM_DEBUG").is_ok() {
                    eprintln!("  read shows {seen:?}");
                }
                self.record_read(seen.as_ref().map(|c| c.id.as_str()), at);
                Ok(seen.map(|c| c.answer()))
            }
            Io::Answer(Err(error)) => Err(error),
            Io::Dead => dead().await,
        }
    }

    async fn create_credential(
        &self,
        secret: &TrimbleSecret,
        send_by: Timestamp,
    ) -> Result<Credential, LeafError> {
        use secrecy::ExposeSecret;
        let write = Write::Post {
            client_id: secret.client_id.clone(),
            token: secret.refresh_token.expose_secret().to_string(),
        };
        match self.send(write, send_by) {
            Io::Answer(Ok(Arrival::Post(answer))) => match answer {
                PostAnswer::Created(cred) => Ok(cred.answer()),
                PostAnswer::Exists { status } => Err(self::answer(
                    status,
                    None,
                    r#"{"detail":"Trimble credentials already exist for this user"}"#,
                    true,
                )),
                PostAnswer::RefreshTokenRefused => Err(self::answer(
                    400,
                    None,
                    r#"{"detail":"Invalid refresh token"}"#,
                    true,
                )),
                PostAnswer::UserNotFound => Err(self::answer(
                    404,
                    None,
                    r#"{"detail":"User not found"}"#,
                    true,
                )),
            },
            Io::Answer(Ok(Arrival::Delete(_))) => unreachable!("a POST"),
            Io::Answer(Err(error)) => Err(error),
            Io::Dead => dead().await,
        }
    }

    async fn delete_credential(&self, send_by: Timestamp) -> Result<Deleted, LeafError> {
        match self.send(Write::Delete, send_by) {
            Io::Answer(Ok(Arrival::Delete(DeleteAnswer::Removed(_)))) => Ok(Deleted::Removed),
            Io::Answer(Ok(Arrival::Delete(DeleteAnswer::NothingThere))) => {
                Ok(Deleted::NothingThere)
            }
            Io::Answer(Ok(Arrival::Post(_))) => unreachable!("a DELETE"),
            Io::Answer(Err(error)) => Err(error),
            Io::Dead => dead().await,
        }
    }

    async fn credential_events(&self) -> Result<Vec<CredentialEvent>, LeafError> {
        match self.read(|_| Vec::new()) {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn trimble_app_registered(&self, _app_name: Option<&str>) -> Result<bool, LeafError> {
        match self.read(|w| w.leaf.app_registered) {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn create_magic_link(
        &self,
        settings: &ReauthSettings,
        send_by: Timestamp,
    ) -> Result<MagicLink, LeafError> {
        let incarnation = self.incarnation;
        let expires_in = settings.expires_in;
        let answer = self.link_write(Aim::Post, send_by, |w| {
            if !w.leaf.app_registered {
                return Err(self::answer(
                    400,
                    None,
                    r#"{"message":"Application info for provider Trimble not found"}"#,
                    true,
                ));
            }
            let now = w.now;
            Ok(w.leaf.issue_link(incarnation, now, expires_in))
        });
        match answer {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn user_magic_links(&self) -> Result<Vec<MagicLink>, LeafError> {
        let read = self.read(|w| {
            let skew = w.leaf.skew;
            w.leaf
                .links
                .iter()
                .filter(|l| !l.deleted)
                .map(|l| l.answer(skew))
                .collect()
        });
        match read {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn get_magic_link(&self, id: &SecretString) -> Result<Option<MagicLink>, LeafError> {
        let id = id.expose_secret().to_string();
        let read = self.read(|w| {
            let skew = w.leaf.skew;
            w.leaf
                .links
                .iter()
                .find(|l| l.id == id && !l.deleted)
                .map(|l| l.answer(skew))
        });
        match read {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn delete_magic_link(
        &self,
        id: &SecretString,
        send_by: Timestamp,
    ) -> Result<Deleted, LeafError> {
        let id = id.expose_secret().to_string();
        let answer = self.link_write(Aim::Delete, send_by, |w| {
            match w.leaf.links.iter_mut().find(|l| l.id == id && !l.deleted) {
                Some(link) => {
                    link.deleted = true;
                    Ok(Deleted::Removed)
                }
                None => Ok(Deleted::NothingThere),
            }
        });
        match answer {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn link_secret_free(&self, _name: &str) -> Result<bool, StatusWriteError> {
        // The simulated namespace holds no Secret of that name but the resource's own.
        Ok(true)
    }

    async fn write_link_secret(
        &self,
        _name: &str,
        link: &MagicLink,
    ) -> Result<(), StatusWriteError> {
        let id = link.id.expose_secret().to_string();
        let incarnation = self.incarnation;
        let written = self.api_write(|w| {
            if let Some(sim) = w.leaf.links.iter_mut().find(|l| l.id == id) {
                sim.handed_out = true;
            }
            w.link_secret = Some((incarnation, id));
        });
        match written {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn delete_link_secret(&self, _name: &str) -> Result<(), StatusWriteError> {
        let incarnation = self.incarnation;
        let deleted = self.api_write(|w| {
            if w.link_secret
                .as_ref()
                .is_some_and(|(owner, _)| *owner == incarnation)
            {
                w.link_secret = None;
            }
        });
        match deleted {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn write_status(&self, status: &TrimbleConnectionStatus) -> Result<(), StatusWriteError> {
        let done = self.with(|w| {
            let fault = match self.begin(w, Aim::Status) {
                Io::Dead => return Io::Dead,
                Io::Answer(fault) => fault,
            };
            if w.replicas[self.replica].cut_off(w.now) {
                return Io::Answer(Err(StatusWriteError::Refused(
                    "the API server cannot be reached".into(),
                )));
            }
            match fault {
                Some(Fault::CrashAfter) => {
                    w.write_status(status);
                    w.crash(self.replica);
                    Io::Dead
                }
                Some(
                    Fault::TimeoutLost
                    | Fault::ServerError
                    | Fault::ServerError503
                    | Fault::RateLimited(_),
                ) => Io::Answer(Err(StatusWriteError::Refused(
                    "the API server refused the write".into(),
                ))),
                Some(Fault::TimeoutLate(_) | Fault::ServerErrorApplied { .. }) => {
                    w.write_status(status);
                    Io::Answer(Err(StatusWriteError::TimedOut))
                }
                Some(Fault::Slow(secs) | Fault::SlowSend(secs)) => {
                    w.write_status(status);
                    if self.pass(w, secs) {
                        Io::Answer(Ok(()))
                    } else {
                        Io::Dead
                    }
                }
                _ => {
                    w.write_status(status);
                    Io::Answer(Ok(()))
                }
            }
        });
        match done {
            Io::Answer(answer) => answer,
            Io::Dead => dead().await,
        }
    }

    async fn publish(&self, _notice: &Notice) {}

    async fn publish_leaf_event(&self, _event: &CredentialEventSummary) {}
}
