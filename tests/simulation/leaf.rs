//! An in-memory Leaf as awkward as the real one may be: writes that land after the client gave up
//! (or after it was answered 503), reads that lag behind writes, 409/400/silent replace over an
//! existing credential, single-use refresh tokens, an unknown user, and a clock of its own.
//!
//! It keeps the ground truth the invariants judge from: which request made each credential (and
//! for which incarnation of the resource), which tokens Leaf has used, and when each write took
//! effect. Nothing here asks the operator's code what it thinks.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use leaf_operator::leaf::{Credential, CredentialStatus};

/// Who made a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A POST of the resource: its incarnation and the request id.
    Ours { incarnation: u32, request: u64 },
    /// Someone else (the grower reconnecting through another tool).
    Foreign,
    /// Leaf itself, when the grower completed Magic Link `link`, issued by `incarnation`.
    Grower { incarnation: u32, link: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cred {
    pub id: String,
    pub client_id: String,
    /// The refresh token it was made from.
    pub token: String,
    pub status: String,
    /// By Leaf's clock.
    pub created: Timestamp,
    /// By the world's clock.
    pub created_world: Timestamp,
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

    pub fn is_ours(&self, incarnation: u32) -> bool {
        matches!(self.origin, Origin::Ours { incarnation: i, .. } if i == incarnation)
    }

    /// Made by Leaf from a Magic Link `incarnation` issued.
    pub fn made_through_link_of(&self, incarnation: u32) -> bool {
        matches!(self.origin, Origin::Grower { incarnation: i, .. } if i == incarnation)
    }
}

/// A Magic Link as Leaf holds it, with the ground truth of who issued it.
#[derive(Clone, Debug)]
pub struct SimLink {
    pub number: u64,
    /// Its id (the bearer part of its URL).
    pub id: String,
    pub incarnation: u32,
    /// By Leaf's clock.
    pub created: Timestamp,
    pub expires_world: Timestamp,
    pub last_accessed: Option<Timestamp>,
    pub usage: u64,
    pub deleted: bool,
    /// Its URL reached a Secret: a person can give it to the grower.
    pub handed_out: bool,
}

impl SimLink {
    pub fn live(&self, now: Timestamp) -> bool {
        !self.deleted && now < self.expires_world
    }

    /// What Leaf's GET and list answer.
    pub fn answer(&self, skew: SignedDuration) -> leaf_operator::leaf::MagicLink {
        leaf_operator::leaf::MagicLink {
            id: self.id.clone().into(),
            link: format!("https://magic-link.withleaf.io/{}", self.id).into(),
            leaf_user_id: Some("user-1".into()),
            created_at: Some(self.created),
            expires_at: Some(self.expires_world + skew),
            last_accessed_at: self.last_accessed,
            usage_count: Some(self.usage),
            max_usage: Some(MAX_USAGE),
            provider: Some("Trimble".into()),
            widget: Some("AUTHENTICATION".into()),
        }
    }
}

/// Leaf's example `maxUsage`.
pub const MAX_USAGE: u64 = 3;

/// What a POST over an existing credential answers (Leaf does not document it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExisting {
    Conflict409,
    BadRequest400,
    SilentReplace,
}

/// A write as Leaf receives it.
#[derive(Clone, Debug)]
pub enum Write {
    Post { client_id: String, token: String },
    Delete,
}

/// A write on its way: sent by a replica for an incarnation; it takes effect at `lands_at`.
#[derive(Clone, Debug)]
pub struct InFlight {
    pub id: u64,
    pub write: Write,
    pub incarnation: u32,
    pub sent_at: Timestamp,
    pub lands_at: Timestamp,
    /// The credential the operator's last read showed when it decided, and when it read.
    pub decided_on: Option<String>,
    pub decided_at: Option<Timestamp>,
    /// The adoption policy when it left.
    pub policy: leaf_operator::crd::AdoptionPolicy,
    /// GETs show the state before it for this long after it lands.
    pub lag: Duration,
}

/// Leaf's answer to a POST that arrived.
#[derive(Clone, Debug)]
pub enum PostAnswer {
    Created(Cred),
    Exists { status: u16 },
    RefreshTokenRefused,
    UserNotFound,
}

/// Leaf's answer to a DELETE that arrived.
#[derive(Clone, Debug)]
pub enum DeleteAnswer {
    Removed(Cred),
    NothingThere,
}

pub struct LeafModel {
    pub credential: Option<Cred>,
    /// After a write, GET may still show what was there before until this time.
    stale: Option<(Option<Cred>, Timestamp)>,
    pub in_flight: Vec<InFlight>,
    pub on_existing: OnExisting,
    /// Whether a POST refused with 409/400 had already exchanged its token at Trimble.
    pub spends_on_conflict: bool,
    pub user_exists: bool,
    /// Leaf's clock is the world's plus this.
    pub skew: SignedDuration,
    /// How long reads lag behind each write of ours (a fault may set one write's own).
    pub read_lag: Duration,
    /// Refresh tokens Leaf has used: Trimble's are single-use.
    pub spent: HashSet<String>,
    /// Every credential Leaf ever held, by id (a claim is judged by what the credential was,
    /// also when it is gone by the time the claim lands).
    pub ever: HashMap<String, Cred>,
    next_id: u64,
    /// Magic Links, deleted ones included (ground truth for the one-live-link invariant).
    pub links: Vec<SimLink>,
    /// Leaf has the Trimble application registered (`/app-keys/Trimble`).
    pub app_registered: bool,
}

impl LeafModel {
    pub fn new(skew: SignedDuration) -> Self {
        Self {
            credential: None,
            stale: None,
            in_flight: Vec::new(),
            on_existing: OnExisting::Conflict409,
            spends_on_conflict: false,
            user_exists: true,
            skew,
            read_lag: Duration::ZERO,
            spent: HashSet::new(),
            ever: HashMap::new(),
            next_id: 1,
            links: Vec::new(),
            app_registered: true,
        }
    }

    /// A Magic Link issued at `now` for `incarnation`, valid for `expires_in`.
    pub fn issue_link(
        &mut self,
        incarnation: u32,
        now: Timestamp,
        expires_in: Duration,
    ) -> leaf_operator::leaf::MagicLink {
        let number = self.links.len() as u64 + 1;
        let link = SimLink {
            number,
            id: format!("ml{number:08x}secret"),
            incarnation,
            created: now + self.skew,
            expires_world: now + SignedDuration::try_from(expires_in).unwrap_or_default(),
            last_accessed: None,
            usage: 0,
            deleted: false,
            handed_out: false,
        };
        let answer = link.answer(self.skew);
        self.links.push(link);
        answer
    }

    /// The grower opens the newest live link a person could have given them; with `complete`,
    /// they authorize Trimble and Leaf creates the credential (replacing what the user has).
    pub fn grower_uses(&mut self, now: Timestamp, complete: bool) -> bool {
        let leaf_now = now + self.skew;
        let Some(link) = self
            .links
            .iter_mut()
            .rev()
            .find(|l| l.live(now) && l.handed_out && l.usage < MAX_USAGE)
        else {
            return false;
        };
        link.usage += 1;
        link.last_accessed = Some(leaf_now);
        if !complete {
            return true;
        }
        let origin = Origin::Grower {
            incarnation: link.incarnation,
            link: link.number,
        };
        let number = link.number;
        let cred = self.new_cred("client-a", &format!("grower-{number}"), origin, now);
        self.set_settled(Some(cred));
        true
    }

    /// What a GET shows at `now`.
    pub fn visible(&self, now: Timestamp) -> Option<Cred> {
        match &self.stale {
            Some((before, until)) if now < *until => before.clone(),
            _ => self.credential.clone(),
        }
    }

    /// Whether a GET at `now` may show something other than the truth.
    pub fn lagging(&self, now: Timestamp) -> bool {
        self.stale.as_ref().is_some_and(|(_, until)| now < *until)
    }

    /// Replaces the credential; GET keeps showing what it showed before for `lag`.
    fn set(&mut self, credential: Option<Cred>, now: Timestamp, lag: Duration) {
        let shown = self.visible(now);
        self.stale = (!lag.is_zero()).then(|| {
            let until = now + SignedDuration::try_from(lag).unwrap_or_default();
            // A second write within a lag keeps the first's "before" (the oldest state shown).
            match &self.stale {
                Some((before, old_until)) if now < *old_until => {
                    (before.clone(), until.max(*old_until))
                }
                _ => (shown, until),
            }
        });
        self.credential = credential;
    }

    /// A change someone else made long enough ago that every read shows it.
    pub fn set_settled(&mut self, credential: Option<Cred>) {
        self.stale = None;
        self.credential = credential;
    }

    pub fn new_cred(
        &mut self,
        client_id: &str,
        token: &str,
        origin: Origin,
        now: Timestamp,
    ) -> Cred {
        let id = format!("cred-{}", self.next_id);
        self.next_id += 1;
        let cred = Cred {
            id,
            client_id: client_id.to_string(),
            token: token.to_string(),
            status: "OK".to_string(),
            created: now + self.skew,
            created_world: now,
            origin,
        };
        self.ever.insert(cred.id.clone(), cred.clone());
        cred
    }

    /// A POST of ours arriving at `now`.
    pub fn post(
        &mut self,
        client_id: &str,
        token: &str,
        origin: Origin,
        now: Timestamp,
        lag: Duration,
    ) -> PostAnswer {
        if !self.user_exists {
            return PostAnswer::UserNotFound;
        }
        if token.starts_with("bad-") || self.spent.contains(token) {
            return PostAnswer::RefreshTokenRefused;
        }
        if self.credential.is_some() {
            let status = match self.on_existing {
                OnExisting::Conflict409 => Some(409),
                OnExisting::BadRequest400 => Some(400),
                OnExisting::SilentReplace => None,
            };
            if let Some(status) = status {
                if self.spends_on_conflict {
                    self.spent.insert(token.to_string());
                }
                return PostAnswer::Exists { status };
            }
        }
        let cred = self.new_cred(client_id, token, origin, now);
        self.spent.insert(token.to_string());
        self.set(Some(cred.clone()), now, lag);
        PostAnswer::Created(cred)
    }

    /// A DELETE arriving at `now`: it removes whatever the user has.
    pub fn delete(&mut self, now: Timestamp, lag: Duration) -> DeleteAnswer {
        match self.credential.clone() {
            Some(removed) => {
                self.set(None, now, lag);
                DeleteAnswer::Removed(removed)
            }
            None => DeleteAnswer::NothingThere,
        }
    }

    /// The writes whose time has come, in order of landing.
    pub fn take_landed(&mut self, now: Timestamp) -> Vec<InFlight> {
        let (mut landed, waiting): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|f| f.lands_at <= now);
        self.in_flight = waiting;
        landed.sort_by_key(|f| (f.lands_at, f.id));
        landed
    }

    /// When the next write in flight lands, if any.
    pub fn next_landing(&self) -> Option<Timestamp> {
        self.in_flight.iter().map(|f| f.lands_at).min()
    }
}
