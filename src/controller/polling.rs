//! Are Leaf's alerts healthy enough for polling to become the backstop?
//!
//! Pure bookkeeping, no IO: the registration loop reports its state, the receiver and the
//! registration check report when Leaf was last heard from, and the schedule asks
//! [`AlertsHealth::polling`]. While alerts are healthy the periodic check runs at the long
//! backstop interval; otherwise (no receiver, registration missing or owned by another consumer,
//! or Leaf silent for longer than `quiet_limit`) it falls back to each resource's own interval.
//!
//! "Heard from Leaf" is a fresh verified delivery (its timestamp within minutes of now: a replay
//! of an old one does not count), the first signed confirmation under a signing secret, or a
//! registration check that found our webhook intact (`alerts::freshness`). Silence alone is normal for a quiet fleet, which is why the
//! registration check counts: it proves every `check_interval` that the webhook still exists.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default backstop interval while alerts are healthy.
pub const DEFAULT_BACKSTOP_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Default silence after which alerts are no longer trusted (three registration checks).
pub const DEFAULT_QUIET_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Where the webhook registration stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// No receiver: alerts are off.
    Disabled,
    /// The receiver runs with a signing secret only; someone else registered (or forwards) the
    /// webhook, so the operator cannot check it and relies on hearing deliveries.
    SecretOnly,
    /// Registration is on but has not completed a first check yet.
    Pending,
    /// Our webhook holds both credentials events with the current secret and URL.
    Registered,
    /// Our webhook is absent and could not be created (yet).
    Missing,
    /// Another webhook of the Leaf account owns one of the events (`eventRegisteredTwice`).
    Foreign,
    /// Leaf's Alerts API failed (unavailable, refused our account ...).
    Failing,
}

impl Registration {
    pub const ALL: [Registration; 7] = [
        Self::Disabled,
        Self::SecretOnly,
        Self::Pending,
        Self::Registered,
        Self::Missing,
        Self::Foreign,
        Self::Failing,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::SecretOnly => "secret_only",
            Self::Pending => "pending",
            Self::Registered => "registered",
            Self::Missing => "missing",
            Self::Foreign => "foreign",
            Self::Failing => "failing",
        }
    }
}

/// How often resources should be checked right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polling {
    /// Alerts cannot be trusted: each resource's own `refreshInterval`.
    Normal,
    /// Alerts are healthy: this long backstop interval (a resource's explicitly shorter
    /// `refreshInterval` still wins; the schedule decides that).
    Backstop(Duration),
}

/// The numbers the decision uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    pub backstop_interval: Duration,
    pub quiet_limit: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            backstop_interval: DEFAULT_BACKSTOP_INTERVAL,
            quiet_limit: DEFAULT_QUIET_LIMIT,
        }
    }
}

#[derive(Debug)]
struct State {
    registration: Registration,
    last_heard: Option<Instant>,
}

/// Shared by the receiver, the registration loop, the schedule and the switch announcer.
#[derive(Debug)]
pub struct AlertsHealth {
    config: HealthConfig,
    state: Mutex<State>,
}

impl AlertsHealth {
    pub fn new(config: HealthConfig, registration: Registration) -> Self {
        Self {
            config,
            state: Mutex::new(State {
                registration,
                last_heard: None,
            }),
        }
    }

    /// The numbers the decision uses.
    pub fn config(&self) -> HealthConfig {
        self.config
    }

    /// Alerts off: always [`Polling::Normal`].
    pub fn disabled() -> Self {
        Self::new(HealthConfig::default(), Registration::Disabled)
    }

    pub fn set_registration(&self, registration: Registration) {
        self.state.lock().expect("health lock").registration = registration;
    }

    pub fn registration(&self) -> Registration {
        self.state.lock().expect("health lock").registration
    }

    /// Leaf was heard from at `at` (kept monotonic: an older report never moves it back).
    pub fn heard_from_leaf(&self, at: Instant) {
        let mut state = self.state.lock().expect("health lock");
        if state.last_heard.is_none_or(|last| last < at) {
            state.last_heard = Some(at);
        }
    }

    pub fn last_heard(&self) -> Option<Instant> {
        self.state.lock().expect("health lock").last_heard
    }

    /// The polling mode at `now`.
    pub fn polling(&self, now: Instant) -> Polling {
        self.decide(now).0
    }

    /// The polling mode at `now` with a short reason (for the metric label and the Event text).
    pub fn decide(&self, now: Instant) -> (Polling, &'static str) {
        let state = self.state.lock().expect("health lock");
        match state.registration {
            Registration::Registered | Registration::SecretOnly => {}
            other => return (Polling::Normal, other.as_str()),
        }
        match state.last_heard {
            None => (Polling::Normal, "not_heard_yet"),
            Some(at) if now.saturating_duration_since(at) > self.config.quiet_limit => {
                (Polling::Normal, "quiet")
            }
            Some(_) => (Polling::Backstop(self.config.backstop_interval), "healthy"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn health(registration: Registration) -> AlertsHealth {
        AlertsHealth::new(
            HealthConfig {
                backstop_interval: 24 * HOUR,
                quiet_limit: HOUR,
            },
            registration,
        )
    }

    #[test]
    fn the_decision_table() {
        let t0 = Instant::now();
        let backstop = Polling::Backstop(24 * HOUR);
        // (registration, heard at, asked at, expected, reason)
        let cases = [
            (
                Registration::Disabled,
                Some(t0),
                t0,
                Polling::Normal,
                "disabled",
            ),
            (
                Registration::Pending,
                Some(t0),
                t0,
                Polling::Normal,
                "pending",
            ),
            (
                Registration::Missing,
                Some(t0),
                t0,
                Polling::Normal,
                "missing",
            ),
            (
                Registration::Foreign,
                Some(t0),
                t0,
                Polling::Normal,
                "foreign",
            ),
            (
                Registration::Failing,
                Some(t0),
                t0,
                Polling::Normal,
                "failing",
            ),
            (
                Registration::Registered,
                None,
                t0,
                Polling::Normal,
                "not_heard_yet",
            ),
            (
                Registration::Registered,
                Some(t0),
                t0 + HOUR,
                backstop,
                "healthy",
            ),
            (
                Registration::Registered,
                Some(t0),
                t0 + HOUR + Duration::from_secs(1),
                Polling::Normal,
                "quiet",
            ),
            (Registration::SecretOnly, Some(t0), t0, backstop, "healthy"),
            (
                Registration::SecretOnly,
                None,
                t0,
                Polling::Normal,
                "not_heard_yet",
            ),
        ];
        for (registration, heard, now, expected, reason) in cases {
            let h = health(registration);
            if let Some(at) = heard {
                h.heard_from_leaf(at);
            }
            assert_eq!(h.decide(now), (expected, reason), "{registration:?}");
        }
    }

    #[test]
    fn hearing_again_restores_the_backstop_and_old_news_does_not_count() {
        let t0 = Instant::now();
        let h = health(Registration::Registered);
        h.heard_from_leaf(t0);
        let later = t0 + 2 * HOUR;
        assert_eq!(h.polling(later), Polling::Normal);
        h.heard_from_leaf(t0 - HOUR);
        assert_eq!(
            h.last_heard(),
            Some(t0),
            "an older report never moves it back"
        );
        h.heard_from_leaf(later);
        assert_eq!(h.polling(later), Polling::Backstop(24 * HOUR));
        h.set_registration(Registration::Foreign);
        assert_eq!(h.polling(later), Polling::Normal);
        assert_eq!(AlertsHealth::disabled().polling(later), Polling::Normal);
    }
}
