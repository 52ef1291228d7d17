//! The in-process control surface: every knob tests and the `/_standin/` endpoints turn.

use std::time::Duration;

use crate::leaf_api::Shared;
use crate::state::{
    self, BadRefresh, Counters, FailAfterApplyNext, Faults, LateNext, OnExisting, RecordedRequest,
    RetryAfter, State, StoredCredential, StoredEvent,
};

/// A cheap, cloneable handle on a running stand-in's state.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Shared,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handle { .. }")
    }
}

impl Handle {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self
            .shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut state)
    }

    // --- accounts, tokens, users -------------------------------------------------------------

    /// Adds (or changes the password of) a username/password account.
    pub fn add_account(&self, username: &str, password: &str) {
        self.with(|s| {
            s.accounts
                .insert(username.to_string(), password.to_string())
        });
    }

    pub fn remove_account(&self, username: &str) {
        self.with(|s| s.accounts.remove(username));
    }

    /// Adds a static token, accepted until removed; logged as `token:N`.
    pub fn add_token(&self, token: &str) {
        self.with(|s| s.add_static_token(token.to_string()));
    }

    pub fn remove_token(&self, token: &str) {
        self.with(|s| s.static_tokens.remove(token));
    }

    /// Registers a Leaf user (POST for an unknown user answers 404).
    pub fn add_user(&self, id: &str) {
        self.with(|s| {
            s.users.entry(id.to_string()).or_default();
        });
    }

    /// Removes a Leaf user with its credential and events.
    pub fn remove_user(&self, id: &str) {
        self.with(|s| s.users.remove(id));
    }

    /// Creates unknown users on first use instead of answering 404.
    pub fn set_auto_create_users(&self, on: bool) {
        self.with(|s| s.auto_create_users = on);
    }

    /// Lifetime of tokens issued from now on (the `exp` claim and the stand-in's own check).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.with(|s| s.token_lifetime = lifetime);
    }

    /// Whether issued tokens carry an `exp` claim (without it a client can only learn of expiry
    /// from a 401).
    pub fn set_exp_claim(&self, on: bool) {
        self.with(|s| s.exp_claim = on);
    }

    /// Invalidates every issued token: their next use answers 401 (static tokens stay valid).
    pub fn revoke_tokens(&self) {
        self.with(|s| s.issued.clear());
    }

    // --- behaviour where Leaf documents nothing ----------------------------------------------

    pub fn set_on_existing(&self, on_existing: OnExisting) {
        self.with(|s| s.on_existing = on_existing);
    }

    pub fn set_bad_refresh(&self, bad_refresh: BadRefresh) {
        self.with(|s| s.bad_refresh = bad_refresh);
    }

    /// POST answers 201 with an empty body instead of the credential JSON.
    pub fn set_empty_create_answer(&self, on: bool) {
        self.with(|s| s.empty_create_answer = on);
    }

    // --- credentials and events --------------------------------------------------------------

    /// Sets the status of the user's credential to any string; false when there is none. A
    /// change to `UNAUTHENTICATED` or `MISSING_PERMISSION` is delivered as an alert to the
    /// webhook listening to its event, as Leaf does.
    pub fn set_status(&self, user: &str, status: &str) -> bool {
        self.with(|s| {
            let Some(credential) = s.users.get_mut(user).and_then(|u| u.credential.as_mut()) else {
                return false;
            };
            let changed = credential.status != status;
            credential.status = status.to_string();
            credential.flip_after_gets = None;
            let credential = credential.clone();
            if let Some(event) = crate::alerts::event_for_status(status).filter(|_| changed) {
                s.alerts
                    .alert_credential(event, &credential.client_id, &credential.id, status);
            }
            true
        })
    }

    /// Gives the user (created if needed) an existing credential, as if POSTed earlier by someone
    /// else; returns it.
    pub fn seed_credential(&self, user: &str, client_id: &str) -> StoredCredential {
        self.with(|s| {
            let credential =
                s.new_credential(client_id, "seeded-client-secret", "seeded-refresh-token");
            let event = s.new_event(200, None, None);
            let u = s.users.entry(user.to_string()).or_default();
            u.credential = Some(credential.clone());
            u.events.push(event);
            credential
        })
    }

    /// The user's stored credential, secrets included (what Leaf holds).
    pub fn credential(&self, user: &str) -> Option<StoredCredential> {
        self.with(|s| s.users.get(user).and_then(|u| u.credential.clone()))
    }

    /// Appends an event; `None` headers/body get token-like defaults (a Basic auth header and a
    /// token response or an `invalid_grant` error). Returns it.
    pub fn push_event(
        &self,
        user: &str,
        status_code: i32,
        headers: Option<&str>,
        body: Option<&str>,
    ) -> StoredEvent {
        self.with(|s| {
            let event = s.new_event(
                status_code,
                headers.map(str::to_string),
                body.map(str::to_string),
            );
            s.users
                .entry(user.to_string())
                .or_default()
                .events
                .push(event.clone());
            event
        })
    }

    /// Appends an event exactly as given (e.g. with an odd `createdDate`).
    pub fn push_raw_event(&self, user: &str, event: StoredEvent) {
        self.with(|s| {
            s.users
                .entry(user.to_string())
                .or_default()
                .events
                .push(event)
        });
    }

    pub fn events(&self, user: &str) -> Vec<StoredEvent> {
        self.with(|s| {
            s.users
                .get(user)
                .map(|u| u.events.clone())
                .unwrap_or_default()
        })
    }

    // --- faults ------------------------------------------------------------------------------

    pub fn faults(&self) -> Faults {
        self.with(|s| s.faults.clone())
    }

    /// Replaces all fault settings, the pending `late_next` and `fail_after_apply_next` included
    /// (use `Faults::default()` to clear them). Requests already waiting out a delay still land.
    pub fn set_faults(&self, faults: Faults) {
        self.with(|s| {
            s.rng = faults.seed;
            s.fault_counter = 0;
            s.faults = faults;
        });
    }

    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    pub fn set_latency(&self, latency: Duration) {
        self.with(|s| s.faults.latency = latency);
    }

    /// Every call answers 503 while on.
    pub fn set_outage(&self, on: bool) {
        self.with(|s| s.faults.outage = on);
    }

    /// Fails every `n`th request (counted from now) with `status`; 0 turns it off.
    pub fn fail_every_nth(&self, n: u32, status: u16) {
        self.with(|s| {
            s.fault_counter = 0;
            s.faults.fail_every_nth = n;
            s.faults.fail_status = status;
            s.faults.fail_body = None;
        });
    }

    /// Fails every `n`th request with `status` and this body (JSON is sent as problem+json).
    pub fn fail_every_nth_with_body(&self, n: u32, status: u16, body: &str) {
        self.fail_every_nth(n, status);
        self.with(|s| s.faults.fail_body = Some(body.to_string()));
    }

    /// Fails a `share` (0..=1) of requests with `status`, drawn from a generator seeded with `seed`.
    pub fn fail_share(&self, share: f64, seed: u64, status: u16) {
        self.with(|s| {
            s.rng = seed;
            s.faults.seed = seed;
            s.faults.fail_share = share;
            s.faults.fail_status = status;
        });
    }

    /// Answers 429 with this `Retry-After` to the next `n` requests.
    pub fn rate_limit_next(&self, n: u32, retry_after: RetryAfter) {
        self.with(|s| {
            s.faults.rate_limit_next = n;
            s.faults.retry_after = retry_after;
        });
    }

    /// Closes the connection without an answer for the next `n` requests.
    pub fn drop_next(&self, n: u32) {
        self.with(|s| s.faults.drop_next = n);
    }

    /// Answers 401 to the next `n` authenticated calls even when their token is valid.
    pub fn unauthorized_next(&self, n: u32) {
        self.with(|s| s.faults.unauthorized_next = n);
    }

    /// Limits counted faults (drop, 429, 401, 5xx) to paths containing `filter`.
    pub fn set_fault_path_filter(&self, filter: Option<&str>) {
        self.with(|s| s.faults.path_filter = filter.map(str::to_string));
    }

    /// Limits counted faults to requests with this method (e.g. `POST`).
    pub fn set_fault_method_filter(&self, method: Option<&str>) {
        self.with(|s| s.faults.method_filter = method.map(str::to_string));
    }

    /// GET of a credential answers 404 while on, even when one exists (read lag).
    pub fn hide_credentials(&self, on: bool) {
        self.with(|s| s.hide_credentials = on);
    }

    /// Leaf's read lag: GETs of a credential and of its events show the user's state as of `lag`
    /// ago. After a client POST (stores a credential) or DELETE (removes it), GET keeps showing
    /// the state from before that write until `lag` has passed since it; after several writes in
    /// a row, the state before each shows until `lag` after that write. Writes themselves see
    /// the current state (a POST can still meet the credential GET does not show yet), and so do
    /// the controls ([`Handle::credential`], [`Handle::events`]). Zero (the default) turns it
    /// off and forgets the kept states; a new lag applies to writes made from then on.
    /// [`Handle::hide_credentials`] takes precedence.
    pub fn set_read_lag(&self, lag: Duration) {
        self.with(|s| {
            s.read_lag = lag;
            if lag.is_zero() {
                for user in s.users.values_mut() {
                    user.history.clear();
                }
            }
        });
    }

    pub fn read_lag(&self) -> Duration {
        self.with(|s| s.read_lag)
    }

    /// The next `n` credential or Magic Link requests with `method` (e.g. "DELETE", "POST";
    /// logins, webhooks and app keys never) are processed, and answered, only `delay` after they arrived, and processed even if their
    /// client gave up meanwhile: a write that lands after the client's timeout. Requests after
    /// those `n` are served at once. A request is counted when it arrives, unless a counted
    /// fault (drop, 429, 401, 5xx, outage) answers it instead. Replaces what was set for
    /// `method` (other methods keep theirs); `n` = 0 cancels it. Requests already waiting are not
    /// affected. [`Handle::late_pending`] tells when they have landed.
    pub fn late_next(&self, method: &str, n: u32, delay: Duration) {
        let entry = LateNext {
            method: method.trim().to_ascii_uppercase(),
            count: n,
            delay,
        };
        self.with(|s| state::set_next(&mut s.faults.late_next, entry));
    }

    /// How many credential requests arrived and still wait out a delay (from
    /// [`Handle::late_next`] or [`Handle::slow`]) before they are processed. Once it is back to
    /// 0, their effects, log entries and counters are all visible.
    pub fn late_pending(&self) -> u32 {
        self.with(|s| s.late_pending)
    }

    /// The next `n` credential or Magic Link requests with `method` are processed normally (a
    /// POST stores the credential or creates the link, a DELETE removes it), then answered with `status` instead (503 is the usual),
    /// as a gateway does when it times out a backend that finished the work. The body is the
    /// `fail_body` of [`Faults`] (JSON as problem+json), else a plain-text line. Counted in
    /// `injected_failures` and `failed_after_apply`. Whatever the processing answered (404 for a
    /// DELETE without a credential, 409...) is replaced, as the gateway does not know it. With
    /// [`Handle::late_next`] on the same request: processed late, then answered the error.
    /// Replaces what was set for `method`; `n` = 0 cancels it.
    pub fn fail_after_apply_next(&self, method: &str, n: u32, status: u16) {
        let entry = FailAfterApplyNext {
            method: method.trim().to_ascii_uppercase(),
            count: n,
            status,
        };
        self.with(|s| state::set_next(&mut s.faults.fail_after_apply_next, entry));
    }

    /// Holds every credential or Magic Link request with `method` (e.g. "POST"; logins are never
    /// held)
    /// unanswered until [`Handle::release_held`]; a held request is processed even if its client
    /// gave up meanwhile.
    pub fn hold(&self, method: &str) {
        self.with(|s| s.hold_method = Some(method.to_ascii_uppercase()));
    }

    /// How many requests are waiting in the hold.
    pub fn held(&self) -> u32 {
        self.with(|s| s.held)
    }

    /// Lets every held request through and stops holding.
    pub fn release_held(&self) {
        let release = self.with(|s| {
            s.hold_method = None;
            s.release.clone()
        });
        release.notify_waiters();
    }

    /// Answers every credential request with `method` (never logins) only `by` after it arrived,
    /// processing it even if its client gave up meanwhile (a POST that lands after the client's
    /// timeout); they count in [`Handle::late_pending`]. [`Handle::late_next`] wins over it for
    /// the requests it covers. `None` stops it.
    pub fn slow(&self, method: Option<(&str, Duration)>) {
        self.with(|s| {
            s.slow_method = method.map(|(m, by)| (m.to_ascii_uppercase(), by));
        });
    }

    // --- observation -------------------------------------------------------------------------

    /// Every Leaf API request received so far, oldest first (control endpoints are not logged).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.with(|s| s.requests.clone())
    }

    pub fn clear_requests(&self) {
        self.with(|s| s.requests.clear());
    }

    /// Requests with this method whose path ends with `suffix`.
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        self.with(|s| {
            s.requests
                .iter()
                .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.ends_with(suffix))
                .count()
        })
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.with(|s| s.counters.logins)
    }

    pub fn counters(&self) -> Counters {
        self.with(|s| s.counters.clone())
    }

    pub fn reset_counters(&self) {
        self.with(|s| s.counters = Counters::default());
    }
}
