//! An in-memory Leaf as awkward as the real one may be: read lag after writes, POSTs that land
//! after the client gave up, 409/400/silent replace over an existing credential, single-use
//! refresh tokens, an unknown user. It also keeps the books the invariants are checked against:
//! which credentials our POSTs made and which refresh tokens already made a credential.

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;
use leaf_operator::leaf::{Credential, CredentialStatus};

/// Who made a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A POST of the resource under test.
    Ours,
    /// Someone else (the grower reconnecting through another tool).
    Foreign,
}

#[derive(Clone, Debug)]
pub struct Cred {
    pub id: String,
    pub client_id: String,
    /// The refresh token it was made from.
    pub token: String,
    pub status: String,
    pub created: Timestamp,
    pub origin: Origin,
}

impl Cred {
    /// What Leaf's GET answers (its secrets are never part of `Credential`).
    pub fn answer(&self) -> Credential {
        Credential {
            id: self.id.clone(),
            status: CredentialStatus::parse(&self.status),
            raw_status: self.status.clone(),
            created_time: Some(self.created.to_string()),
            scopes: vec!["openid".into()],
            client_id: Some(self.client_id.clone()),
        }
    }
}

/// What a POST over an existing credential answers (Leaf does not document it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExisting {
    Conflict409,
    BadRequest400,
    SilentReplace,
}

/// A POST that outlived its client's timeout: it lands at `lands_at`.
#[derive(Clone, Debug)]
pub struct InFlight {
    pub token: String,
    pub client_id: String,
    pub lands_at: Timestamp,
}

/// Leaf's answer to a POST that arrived.
#[derive(Clone, Debug)]
pub enum PostAnswer {
    Created(Cred),
    Exists { status: u16 },
    RefreshTokenRefused,
    UserNotFound,
}

pub struct LeafModel {
    pub credential: Option<Cred>,
    /// After one of our writes, GET may still show what was there before until this time.
    stale: Option<(Option<Cred>, Timestamp)>,
    pub in_flight: Vec<InFlight>,
    pub on_existing: OnExisting,
    pub user_exists: bool,
    /// Refresh tokens that made a credential: Trimble's are single-use.
    pub spent_tokens: HashSet<String>,
    /// Ids our POSTs made.
    pub ours: HashSet<String>,
    next_id: u64,
}

impl LeafModel {
    pub fn new() -> Self {
        Self {
            credential: None,
            stale: None,
            in_flight: Vec::new(),
            on_existing: OnExisting::Conflict409,
            user_exists: true,
            spent_tokens: HashSet::new(),
            ours: HashSet::new(),
            next_id: 1,
        }
    }

    /// What a GET shows at `now`.
    pub fn visible(&self, now: Timestamp) -> Option<Cred> {
        match &self.stale {
            Some((before, until)) if now < *until => before.clone(),
            _ => self.credential.clone(),
        }
    }

    /// Replaces the credential; GET keeps showing the old one for `lag`.
    pub fn set(&mut self, credential: Option<Cred>, now: Timestamp, lag: Duration) {
        self.stale = if lag.is_zero() {
            None
        } else {
            Some((
                self.visible(now),
                now + jiff::SignedDuration::try_from(lag).unwrap_or_default(),
            ))
        };
        self.credential = credential;
    }

    /// A change someone else made long enough ago that every read shows it.
    pub fn set_settled(&mut self, credential: Option<Cred>) {
        self.stale = None;
        self.credential = credential;
    }

    pub fn new_cred(&mut self, client_id: &str, token: &str, origin: Origin, now: Timestamp) -> Cred {
        let id = format!("cred-{}", self.next_id);
        self.next_id += 1;
        Cred {
            id,
            client_id: client_id.to_string(),
            token: token.to_string(),
            status: "OK".to_string(),
            created: now,
            origin,
        }
    }

    /// A POST of ours arriving at `now`.
    pub fn post(&mut self, client_id: &str, token: &str, now: Timestamp, lag: Duration) -> PostAnswer {
        if !self.user_exists {
            return PostAnswer::UserNotFound;
        }
        if token.starts_with("bad-") || self.spent_tokens.contains(token) {
            return PostAnswer::RefreshTokenRefused;
        }
        if self.credential.is_some() {
            match self.on_existing {
                OnExisting::Conflict409 => return PostAnswer::Exists { status: 409 },
                OnExisting::BadRequest400 => return PostAnswer::Exists { status: 400 },
                OnExisting::SilentReplace => {}
            }
        }
        let cred = self.new_cred(client_id, token, Origin::Ours, now);
        self.spent_tokens.insert(token.to_string());
        self.ours.insert(cred.id.clone());
        self.set(Some(cred.clone()), now, lag);
        PostAnswer::Created(cred)
    }

    /// The POSTs whose time has come, in order of landing.
    pub fn take_landed(&mut self, now: Timestamp) -> Vec<InFlight> {
        let (landed, waiting): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|f| f.lands_at <= now);
        self.in_flight = waiting;
        let mut landed = landed;
        landed.sort_by_key(|f| f.lands_at);
        landed
    }

    /// When the next in-flight POST lands, if any.
    pub fn next_landing(&self) -> Option<Timestamp> {
        self.in_flight.iter().map(|f| f.lands_at).min()
    }
}
