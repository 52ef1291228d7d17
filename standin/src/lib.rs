//! A strict local stand-in for Leaf's user-management API, for tests and the quickstart.
//!
//! It serves the documented contract statefully (see `shared/design/leaf-api.md`): login with
//! JWT-shaped expiring tokens, a bearer check on every call, per-user Trimble credentials and
//! their events. Where Leaf documents nothing, the behaviour is a switch ([`OnExisting`],
//! [`BadRefresh`]). Faults are injected through [`Faults`]; every request is logged. Writes can
//! be made to end "in doubt" as they may at Leaf: applied after the client gave up
//! ([`LateNext`]), applied but answered with an error ([`FailAfterApplyNext`]), or applied but
//! not yet visible to reads (`Handle::set_read_lag`).
//!
//! Leaf's Alerts (webhooks) and Magic Link (with the Trimble app keys) services are served too,
//! behind the same authentication, faults and request log (`alerts`, `magic_link`).
//!
//! In-process: `StandIn::start(config).await`, then the [`Handle`] methods (reached through
//! `Deref`). Process mode: the `leaf-standin` binary, controlled under `/_standin/`.

mod alerts;
mod control;
mod handle;
mod leaf_api;
mod magic_link;
mod server;
mod state;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use alerts::{
    AlertTamper, CONFIRMATION_BODY, CREDENTIALS_LIMITED_PERMISSION, CREDENTIALS_UNAUTHENTICATED,
    DeliveryAttempt, FailedCall, RETRY_MINUTES, StoredWebhook, credentials_body,
};
pub use handle::Handle;
pub use magic_link::{
    APP_KEYS, DEFAULT_MAX_USAGE, LINK_ORIGIN, LinkRefused, MAGIC_LINK_CREATE, MAGIC_LINKS,
    MAX_EXPIRES_IN, MIN_EXPIRES_IN, PROVIDERS, StoredAppKey, StoredMagicLink,
};
pub use state::{
    BadRefresh, BadRefreshMode, Counters, FailAfterApplyNext, Faults, LateNext, OnExisting,
    RecordedRequest, RetryAfter, StoredCredential, StoredEvent, fake_jwt, http_date, leaf_time,
};

/// How a stand-in starts. Everything can also be changed later through the [`Handle`].
#[derive(Clone, Debug)]
pub struct StandInConfig {
    /// Defaults to `127.0.0.1:0` (a free port).
    pub listen: SocketAddr,
    /// Username/password accounts.
    pub accounts: Vec<(String, String)>,
    /// Static tokens, accepted until removed.
    pub tokens: Vec<String>,
    /// Registered Leaf user ids.
    pub users: Vec<String>,
    /// Create unknown users on first use instead of answering 404.
    pub auto_create_users: bool,
    /// Lifetime of issued tokens (default 24 h, Leaf's `rememberMe=false` lifetime).
    pub token_lifetime: Duration,
    /// Whether issued tokens carry an `exp` claim (default true).
    pub exp_claim: bool,
    pub on_existing: OnExisting,
    pub bad_refresh: BadRefresh,
    pub faults: Faults,
    /// Close a connection that carried no byte for this long, as the load balancer in front of
    /// Leaf would (default `None`: idle keep-alive connections stay open). The benchmark's peer,
    /// provider-http, opens a new connection for every request and never closes idle ones: at a
    /// few thousand resources that exhausts the file descriptors of both sides without this.
    pub idle_timeout: Option<Duration>,
}

impl Default for StandInConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            accounts: Vec::new(),
            tokens: Vec::new(),
            users: Vec::new(),
            auto_create_users: false,
            token_lifetime: Duration::from_secs(24 * 3600),
            exp_claim: true,
            on_existing: OnExisting::default(),
            bad_refresh: BadRefresh::default(),
            faults: Faults::default(),
            idle_timeout: None,
        }
    }
}

impl StandInConfig {
    pub fn with_account(mut self, username: &str, password: &str) -> Self {
        self.accounts
            .push((username.to_string(), password.to_string()));
        self
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.tokens.push(token.to_string());
        self
    }

    pub fn with_user(mut self, id: &str) -> Self {
        self.users.push(id.to_string());
        self
    }
}

/// A running stand-in. Stops (closing every connection) when dropped.
pub struct StandIn {
    addr: SocketAddr,
    handle: Handle,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl StandIn {
    /// Starts serving; panics when the address cannot be bound (use [`StandIn::try_start`]).
    pub async fn start(config: StandInConfig) -> StandIn {
        Self::try_start(config)
            .await
            .expect("leaf-standin: cannot bind its listen address")
    }

    pub async fn try_start(config: StandInConfig) -> std::io::Result<StandIn> {
        let mut state = state::State::new();
        state.accounts = config.accounts.into_iter().collect();
        for token in config.tokens {
            state.add_static_token(token);
        }
        for user in config.users {
            state.users.entry(user).or_default();
        }
        state.auto_create_users = config.auto_create_users;
        state.token_lifetime = config.token_lifetime;
        state.exp_claim = config.exp_claim;
        state.on_existing = config.on_existing;
        state.bad_refresh = config.bad_refresh;
        state.rng = config.faults.seed;
        state.faults = config.faults;
        let shared = Arc::new(Mutex::new(state));
        // Delivery tasks record their attempts in the state they were started from.
        shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .alerts
            .shared = Arc::downgrade(&shared);
        let handle = Handle {
            shared: shared.clone(),
        };
        let app = leaf_api::router(shared).merge(control::router(handle.clone()));
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(server::serve(listener, app, config.idle_timeout));
        Ok(StandIn {
            addr,
            handle,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`, to use as the client's origin.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A cloneable handle on the state (the same methods `StandIn` derefs to).
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Waits until the server task ends (it only ends when aborted): for the binary.
    pub async fn wait(mut self) {
        let _ = (&mut self.server).await;
    }
}

impl Deref for StandIn {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}
