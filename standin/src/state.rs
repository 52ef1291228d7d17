//! The stand-in's state: accounts and tokens, users and their Trimble credentials, events, the
//! fault settings and the request log. Pure data and rules; HTTP lives in `leaf_api`/`control`.
//!
//! Read lag: with `State::read_lag` above zero, every client write of a credential (a POST that
//! stores one, a DELETE that removes one) first saves the user's state as it was before the write
//! ([`Snapshot`]). A GET then answers the state as of `now - read_lag`: the snapshot taken by the
//! oldest write younger than the lag, or the current state when there is none. So after two
//! writes in quick succession a reader sees the state before both, then the state between them,
//! then the latest, each switch `read_lag` after the write that ended it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

/// What a POST answers when the user already has a credential (Leaf does not document it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExisting {
    /// 409 problem+json.
    #[default]
    #[serde(alias = "409")]
    Conflict,
    /// 400 problem+json whose detail says the credential already exists.
    #[serde(alias = "400")]
    BadRequest,
    /// 201: the old credential is replaced without a word.
    Replace,
}

/// How the stand-in treats a refresh token it considers bad.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BadRefreshMode {
    /// POST answers 400 problem+json ("Invalid refresh token").
    #[default]
    Reject,
    /// POST answers 201 with status OK; once `after_gets` GETs of the credential have been
    /// answered, its status becomes `UNAUTHENTICATED` and a failed-refresh event is appended.
    Flip,
}

/// Which refresh tokens are bad: exact values, or any value starting with `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BadRefresh {
    pub mode: BadRefreshMode,
    pub tokens: Vec<String>,
    pub prefix: Option<String>,
    /// With [`BadRefreshMode::Flip`]: GETs answered with the old status before the flip (0 = the
    /// very next GET already sees `UNAUTHENTICATED`).
    pub after_gets: u32,
}

impl Default for BadRefresh {
    fn default() -> Self {
        Self {
            mode: BadRefreshMode::Reject,
            tokens: Vec::new(),
            prefix: Some("bad-".to_string()),
            after_gets: 1,
        }
    }
}

impl BadRefresh {
    pub fn is_bad(&self, token: &str) -> bool {
        self.tokens.iter().any(|t| t == token)
            || self.prefix.as_deref().is_some_and(|p| token.starts_with(p))
    }
}

/// The value of a `Retry-After` header sent with injected 429s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RetryAfter {
    /// No header.
    None,
    /// Delay in seconds.
    Seconds(u64),
    /// An HTTP-date this many seconds from the moment of the answer.
    DateIn(u64),
    /// The header value sent verbatim.
    Raw(String),
}

/// Injected faults. Counters (`*_next`) count down as requests consume them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Added before every Leaf API answer.
    #[serde(with = "millis")]
    pub latency: Duration,
    /// Every request answers 503 while on.
    pub outage: bool,
    /// Close the connection without an answer for the next N requests.
    pub drop_next: u32,
    /// Answer 429 (with `retry_after`) to the next N requests.
    pub rate_limit_next: u32,
    pub retry_after: RetryAfter,
    /// Answer 401 to the next N authenticated calls even with a valid token.
    pub unauthorized_next: u32,
    /// Fail every Nth request with `fail_status` (0 = off).
    pub fail_every_nth: u32,
    /// Fail this share (0..=1) of requests with `fail_status`, drawn from a seeded generator.
    pub fail_share: f64,
    pub seed: u64,
    pub fail_status: u16,
    /// Body of injected failures (default: a plain-text line); JSON bodies are sent as
    /// problem+json. Lets tests plant token-like text in error bodies.
    pub fail_body: Option<String>,
    /// When set, the counted faults (drop, 429, 401, 5xx) only hit paths containing this text.
    pub path_filter: Option<String>,
    /// When set, the counted faults only hit requests with this method (e.g. `POST`).
    pub method_filter: Option<String>,
    /// Credential requests to answer late, per method (at most one entry per method). Not
    /// subject to `path_filter`/`method_filter`; a request that gets a counted fault is not
    /// processed, so it does not use one up.
    pub late_next: Vec<LateNext>,
    /// Credential requests to apply, then answer with an error, per method (at most one entry
    /// per method). Same scope as `late_next`.
    pub fail_after_apply_next: Vec<FailAfterApplyNext>,
}

/// The next `count` requests with `method` to the Trimble credential endpoints (`.../trimble-
/// credentials` and its `/events`) or the Magic Link endpoints (`.../magic-link/...`) are processed, and answered, only `delay` after they arrived;
/// they are processed even if their client gave up meanwhile (a write that lands after the
/// client's timeout). Later requests are served at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LateNext {
    /// Upper case (`DELETE`, `POST`, `GET`).
    pub method: String,
    pub count: u32,
    #[serde(rename = "delayMs", with = "millis")]
    pub delay: Duration,
}

/// The next `count` requests with `method` to the Trimble credential or Magic Link endpoints are
/// processed normally (a POST stores the credential or creates the link, a DELETE removes it), then answered with `status`
/// instead, as a gateway does when it times out a backend that finished the work. The body is
/// `Faults::fail_body` (problem+json when JSON) or a plain-text line, like other injected
/// failures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailAfterApplyNext {
    /// Upper case (`DELETE`, `POST`, `GET`).
    pub method: String,
    pub count: u32,
    /// Status of the answer; one that is not a valid HTTP status is sent as 503.
    #[serde(default = "default_fail_status")]
    pub status: u16,
}

fn default_fail_status() -> u16 {
    503
}

/// A "next N requests with this method" fault entry.
pub(crate) trait NextN: Clone {
    fn method(&self) -> &str;
    fn count_mut(&mut self) -> &mut u32;
}

impl NextN for LateNext {
    fn method(&self) -> &str {
        &self.method
    }
    fn count_mut(&mut self) -> &mut u32 {
        &mut self.count
    }
}

impl NextN for FailAfterApplyNext {
    fn method(&self) -> &str {
        &self.method
    }
    fn count_mut(&mut self) -> &mut u32 {
        &mut self.count
    }
}

/// Sets the entry for `entry.method()` (methods match case-insensitively), replacing the one
/// there was; a count of 0 just removes it.
pub(crate) fn set_next<T: NextN>(entries: &mut Vec<T>, mut entry: T) {
    entries.retain(|e| !e.method().eq_ignore_ascii_case(entry.method()));
    if *entry.count_mut() > 0 {
        entries.push(entry);
    }
}

/// Uses up one request of the entry matching `method`, if any (the entry goes when it reaches
/// zero); returns the entry as it was.
pub(crate) fn take_next<T: NextN>(entries: &mut Vec<T>, method: &str) -> Option<T> {
    let index = entries
        .iter()
        .position(|e| e.method().eq_ignore_ascii_case(method))?;
    let taken = entries[index].clone();
    let count = entries[index].count_mut();
    // A count of 0 can only come from a deserialized `Faults`: it detains nothing.
    let live = *count > 0;
    *count = count.saturating_sub(1);
    if *count == 0 {
        entries.remove(index);
    }
    live.then_some(taken)
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            outage: false,
            drop_next: 0,
            rate_limit_next: 0,
            retry_after: RetryAfter::Seconds(1),
            unauthorized_next: 0,
            fail_every_nth: 0,
            fail_share: 0.0,
            seed: 1,
            fail_status: 503,
            fail_body: None,
            path_filter: None,
            method_filter: None,
            late_next: Vec::new(),
            fail_after_apply_next: Vec::new(),
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// One request the stand-in received (control endpoints excluded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// `None` when the connection was dropped without an answer.
    pub status: Option<u16>,
    /// Who called: `user:NAME` for a logged-in account (also on its login), `token:N` for the
    /// Nth static token, `none`/`unknown` otherwise. Never a token value.
    pub account: String,
    /// Arrival time, RFC 3339. The log is in order of answers (or drops), not of arrivals.
    pub at: String,
}

/// A stored Trimble credential, secrets included (it is a test double; tests inspect them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCredential {
    pub id: String,
    pub status: String,
    pub created_time: String,
    pub scopes: Vec<String>,
    pub client_id: String,
    pub client_secret: String,
    /// The refresh token POSTed by the client.
    pub submitted_refresh_token: String,
    /// The live refresh token Leaf holds after using the submitted one (GET echoes this).
    pub refresh_token: String,
    pub access_token: String,
    /// GETs still to answer before a pending flip to `UNAUTHENTICATED` (bad refresh token).
    #[serde(skip)]
    pub flip_after_gets: Option<u32>,
}

/// One event as Leaf returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub id: String,
    pub created_date: String,
    pub status_code: i32,
    pub headers: String,
    pub body: String,
}

#[derive(Clone, Debug, Default)]
pub struct User {
    pub credential: Option<StoredCredential>,
    pub events: Vec<StoredEvent>,
    /// With a read lag: the state before each recent write, oldest first.
    pub(crate) history: VecDeque<Snapshot>,
}

/// A user's credential and events as they were just before a write.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    /// When the write that ended this state happened.
    pub written_at: Instant,
    pub credential: Option<StoredCredential>,
    pub events: Vec<StoredEvent>,
}

/// Snapshots kept per user at most: a test writing in a loop under a long lag must not grow the
/// stand-in without bound. Past it, the oldest goes and readers jump forward to the next.
const MAX_SNAPSHOTS: usize = 256;

impl User {
    /// Call before a client write changes the credential: keeps the state before it, so reads
    /// can lag behind. Without a lag, keeps nothing.
    pub(crate) fn record_write(&mut self, lag: Duration, now: Instant) {
        self.forget_older_than(lag, now);
        if lag.is_zero() {
            return;
        }
        if self.history.len() >= MAX_SNAPSHOTS {
            self.history.pop_front();
        }
        self.history.push_back(Snapshot {
            written_at: now,
            credential: self.credential.clone(),
            events: self.events.clone(),
        });
    }

    /// What a read sees under `lag`: the state before the oldest write less than `lag` ago, or
    /// `None` for the current state.
    pub(crate) fn lagging_view(&mut self, lag: Duration, now: Instant) -> Option<&Snapshot> {
        self.forget_older_than(lag, now);
        self.history.front()
    }

    /// Drops snapshots whose write is at least `lag` old (all of them with no lag).
    fn forget_older_than(&mut self, lag: Duration, now: Instant) {
        while self
            .history
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.written_at) >= lag)
        {
            self.history.pop_front();
        }
    }
}

/// Counts by kind, for quick assertions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub requests: u64,
    pub logins: u64,
    pub failed_logins: u64,
    pub gets: u64,
    pub creates: u64,
    pub deletes: u64,
    pub event_reads: u64,
    pub unauthorized: u64,
    pub dropped: u64,
    /// Every injected error answer, `failed_after_apply` included.
    pub injected_failures: u64,
    /// Requests processed, then answered with an injected error (`fail_after_apply_next`).
    pub failed_after_apply: u64,
    /// Requests answered late by `late_next` (counted when processed).
    pub late: u64,
}

#[derive(Debug)]
pub(crate) struct IssuedToken {
    pub username: String,
    pub expires_at: SystemTime,
}

/// Whole stand-in state, behind one mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub accounts: HashMap<String, String>,
    /// Static token value -> label.
    pub static_tokens: HashMap<String, String>,
    pub issued: HashMap<String, IssuedToken>,
    pub token_lifetime: Duration,
    pub exp_claim: bool,
    pub users: HashMap<String, User>,
    pub auto_create_users: bool,
    pub on_existing: OnExisting,
    pub bad_refresh: BadRefresh,
    /// POST answers 201 with an empty body (Leaf documents the JSON, but clients should cope).
    pub empty_create_answer: bool,
    /// GET of a credential answers 404 even when one exists: Leaf's read lag, made as long as a
    /// test needs.
    pub hide_credentials: bool,
    /// GETs of a credential and its events show the state as of this long ago (see the module
    /// docs); zero: the current state.
    pub read_lag: Duration,
    /// Requests with this method wait (unanswered) until released; they are processed even if
    /// their client gave up meanwhile, as a request that already reached Leaf would be.
    pub hold_method: Option<String>,
    /// How many requests are waiting in the hold now.
    pub held: u32,
    /// Wakes held requests.
    pub release: std::sync::Arc<tokio::sync::Notify>,
    /// Requests with this method are answered only after this delay, and processed even if their
    /// client gave up meanwhile (a POST that lands after the client's timeout).
    pub slow_method: Option<(String, Duration)>,
    /// Requests that arrived and wait out a delay (`late_next` or `slow_method`) before they are
    /// processed.
    pub late_pending: u32,
    pub faults: Faults,
    pub requests: Vec<RecordedRequest>,
    pub counters: Counters,
    /// Requests seen by the counted faults (for `fail_every_nth`).
    pub fault_counter: u64,
    pub rng: u64,
    pub next_id: u64,
    /// Leaf's Alerts service: webhooks, deliveries, failed calls.
    pub alerts: crate::alerts::AlertsState,
    /// Leaf's Magic Link service and the Trimble app keys.
    pub magic: crate::magic_link::MagicLinkState,
}

/// Result of checking a bearer token.
pub(crate) enum Bearer {
    Valid(String),
    Invalid,
}

impl State {
    pub fn new() -> Self {
        Self {
            accounts: HashMap::new(),
            static_tokens: HashMap::new(),
            issued: HashMap::new(),
            token_lifetime: Duration::from_secs(24 * 3600),
            exp_claim: true,
            users: HashMap::new(),
            auto_create_users: false,
            on_existing: OnExisting::default(),
            bad_refresh: BadRefresh::default(),
            empty_create_answer: false,
            hide_credentials: false,
            read_lag: Duration::ZERO,
            hold_method: None,
            held: 0,
            release: std::sync::Arc::new(tokio::sync::Notify::new()),
            slow_method: None,
            late_pending: 0,
            faults: Faults::default(),
            requests: Vec::new(),
            counters: Counters::default(),
            fault_counter: 0,
            rng: 1,
            next_id: 1,
            alerts: crate::alerts::AlertsState::default(),
            magic: crate::magic_link::MagicLinkState::default(),
        }
    }

    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn add_static_token(&mut self, token: String) {
        let label = format!("token:{}", self.static_tokens.len() + 1);
        self.static_tokens.entry(token).or_insert(label);
    }

    /// Issues a JWT-shaped token for `username`, with an `exp` claim unless disabled.
    pub fn issue_token(&mut self, username: &str) -> String {
        let now = SystemTime::now();
        let expires_at = now + self.token_lifetime;
        let exp = expires_at.duration_since(UNIX_EPOCH).unwrap_or_default();
        // Round up so the claim never says the token dies before the stand-in refuses it.
        let exp_secs = exp.as_secs() + u64::from(exp.subsec_nanos() > 0);
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let jti = self.next_id();
        let mut claims =
            serde_json::json!({"sub": username, "iat": iat, "jti": jti, "auth": "ROLE_USER"});
        if self.exp_claim {
            claims["exp"] = serde_json::json!(exp_secs);
        }
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signature =
            URL_SAFE_NO_PAD.encode(format!("standin-signature-{jti}-{iat}-0123456789abcdef"));
        let token = format!("{header}.{payload}.{signature}");
        self.issued.insert(
            token.clone(),
            IssuedToken {
                username: username.to_string(),
                expires_at: UNIX_EPOCH + Duration::from_secs(exp_secs),
            },
        );
        token
    }

    pub fn check_bearer(&self, token: &str) -> Bearer {
        if let Some(label) = self.static_tokens.get(token) {
            return Bearer::Valid(label.clone());
        }
        match self.issued.get(token) {
            Some(issued) if SystemTime::now() < issued.expires_at => {
                Bearer::Valid(format!("user:{}", issued.username))
            }
            _ => Bearer::Invalid,
        }
    }

    /// The user, created on the fly when `auto_create_users` is on.
    pub fn user_mut(&mut self, id: &str) -> Option<&mut User> {
        if self.auto_create_users && !self.users.contains_key(id) {
            self.users.insert(id.to_string(), User::default());
        }
        self.users.get_mut(id)
    }

    /// Next value in [0, 1) from a seeded splitmix64, so fault patterns repeat run to run.
    pub fn next_random(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Builds a credential with generated tokens; the live refresh token differs from the
    /// submitted one, as at Leaf (Trimble refresh tokens are single-use).
    pub fn new_credential(
        &mut self,
        client_id: &str,
        client_secret: &str,
        refresh_token: &str,
    ) -> StoredCredential {
        let n = self.next_id();
        StoredCredential {
            id: format!("00000000-0000-4000-8000-{n:012x}"),
            status: "OK".to_string(),
            created_time: leaf_time(SystemTime::now()),
            scopes: vec!["openid".to_string(), "ag-connect".to_string()],
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            submitted_refresh_token: refresh_token.to_string(),
            refresh_token: format!(
                "live-refresh-{n}-{}",
                STANDARD.encode(format!("rt{n}-0123456789abcdef"))
            ),
            access_token: fake_jwt(&format!("trimble-access-{n}")),
            flip_after_gets: None,
        }
    }

    /// An event like the token refreshes Leaf logs: headers and body carry token-like text.
    pub fn new_event(
        &mut self,
        status_code: i32,
        headers: Option<String>,
        body: Option<String>,
    ) -> StoredEvent {
        let n = self.next_id();
        let headers = headers.unwrap_or_else(|| {
            format!(
                "Authorization: Basic {}\nContent-Type: application/x-www-form-urlencoded",
                STANDARD.encode(format!("client-{n}:client-secret-{n}-0123456789"))
            )
        });
        let body = body.unwrap_or_else(|| {
            if (200..300).contains(&status_code) {
                format!(
                    r#"{{"access_token":"{}","refresh_token":"event-refresh-{n}-abcdef0123456789","expires_in":3600}}"#,
                    fake_jwt(&format!("event-{n}"))
                )
            } else {
                format!(
                    r#"{{"error":"invalid_grant","error_description":"refresh token event-refresh-{n}-abcdef0123456789 is invalid"}}"#
                )
            }
        });
        StoredEvent {
            id: format!("event-{n}"),
            created_date: leaf_time(SystemTime::now()),
            status_code,
            headers,
            body,
        }
    }
}

/// A JWT-looking string (not a valid signature; only its shape matters).
pub fn fake_jwt(subject: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{subject}","exp":4102444800}}"#)),
        URL_SAFE_NO_PAD.encode(format!("signature-of-{subject}-0123456789"))
    )
}

/// Leaf's `createdTime` format: `yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'`.
pub fn leaf_time(at: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// RFC 9110 HTTP-date, for `Retry-After`.
pub fn http_date(at: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&ts)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_generator_repeats_and_spreads() {
        let draw = |seed| {
            let mut state = State::new();
            state.rng = seed;
            (0..1000).map(|_| state.next_random()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let below_half = draw(7).iter().filter(|x| **x < 0.5).count();
        assert!((400..600).contains(&below_half), "{below_half}");
    }

    #[test]
    fn bad_refresh_matches_listed_values_and_the_prefix() {
        let bad = BadRefresh {
            tokens: vec!["exact".into()],
            ..BadRefresh::default()
        };
        assert!(bad.is_bad("exact") && bad.is_bad("bad-anything"));
        assert!(!bad.is_bad("good-token"));
    }

    #[test]
    fn issued_tokens_carry_exp_and_expire() {
        let mut state = State::new();
        state.token_lifetime = Duration::from_secs(60);
        let token = state.issue_token("ops");
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let exp = claims["exp"].as_u64().unwrap();
        assert!(exp >= now + 59 && exp <= now + 61, "{exp} vs {now}");
        assert!(matches!(state.check_bearer(&token), Bearer::Valid(label) if label == "user:ops"));
        state.issued.get_mut(&token).unwrap().expires_at =
            SystemTime::now() - Duration::from_secs(1);
        assert!(matches!(state.check_bearer(&token), Bearer::Invalid));
        state.exp_claim = false;
        let token = state.issue_token("ops");
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert!(claims.get("exp").is_none());
    }

    fn credential_named(id: &str) -> Option<StoredCredential> {
        let mut credential = State::new().new_credential("c", "s", "r");
        credential.id = id.to_string();
        Some(credential)
    }

    /// What a read sees: the id of the credential, or "none".
    fn seen(user: &mut User, lag: Duration, at: Instant) -> String {
        let credential = match user.lagging_view(lag, at) {
            Some(past) => past.credential.clone(),
            None => user.credential.clone(),
        };
        credential.map_or("none".to_string(), |c| c.id)
    }

    #[test]
    fn reads_show_the_state_as_of_the_lag_ago() {
        let lag = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut user = User::default();
        // POST A at 0, DELETE at 4, POST B at 6.
        user.record_write(lag, at(0));
        user.credential = credential_named("A");
        assert_eq!(seen(&mut user, lag, at(0)), "none");
        user.record_write(lag, at(4));
        user.credential = None;
        user.record_write(lag, at(6));
        user.credential = credential_named("B");
        assert_eq!(
            seen(&mut user, lag, at(9)),
            "none",
            "before the first write"
        );
        assert_eq!(seen(&mut user, lag, at(10)), "A", "lag after the POST of A");
        assert_eq!(seen(&mut user, lag, at(14)), "none", "lag after the DELETE");
        assert_eq!(
            seen(&mut user, lag, at(16)),
            "B",
            "lag after the last write"
        );
        assert!(
            user.history.is_empty(),
            "states older than the lag are forgotten"
        );
    }

    #[test]
    fn without_a_lag_reads_see_writes_at_once_and_nothing_is_kept() {
        let mut user = User::default();
        user.record_write(Duration::ZERO, Instant::now());
        user.credential = credential_named("A");
        assert_eq!(seen(&mut user, Duration::ZERO, Instant::now()), "A");
        assert!(user.history.is_empty());
    }

    #[test]
    fn a_long_lag_keeps_a_bounded_history() {
        let lag = Duration::from_secs(3600);
        let t0 = Instant::now();
        let mut user = User::default();
        for i in 0..(MAX_SNAPSHOTS as u64 + 10) {
            user.record_write(lag, t0 + Duration::from_millis(i));
        }
        assert_eq!(user.history.len(), MAX_SNAPSHOTS);
    }

    #[test]
    fn next_n_entries_are_used_up_per_method() {
        let late = |method: &str, count| LateNext {
            method: method.to_string(),
            count,
            delay: Duration::from_secs(1),
        };
        let mut entries = Vec::new();
        set_next(&mut entries, late("DELETE", 2));
        set_next(&mut entries, late("POST", 1));
        set_next(&mut entries, late("POST", 0));
        assert_eq!(entries, vec![late("DELETE", 2)], "a count of 0 cancels");
        assert!(take_next(&mut entries, "POST").is_none());
        assert!(take_next(&mut entries, "delete").is_some(), "any case");
        assert!(take_next(&mut entries, "DELETE").is_some());
        assert!(
            take_next(&mut entries, "DELETE").is_none(),
            "only the next two"
        );
        assert!(entries.is_empty());
        // A zero count that came in through `set_faults` detains nothing and is dropped.
        let mut entries = vec![late("GET", 0)];
        assert!(take_next(&mut entries, "GET").is_none());
        assert!(entries.is_empty());
    }

    #[test]
    fn leaf_time_has_microseconds_and_z() {
        let text = leaf_time(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456));
        assert_eq!(text, "2023-11-14T22:13:20.123456Z");
    }
}
