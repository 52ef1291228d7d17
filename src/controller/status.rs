//! Pure status logic: (old status, what was observed, now) -> new status, conditions and new events.
//!
//! Nothing here does IO, so every rule (kstatus conditions, transition times, the Leaf event
//! window) is unit-tested without an API server. The reconciler compares the result with the
//! current status and writes only when they differ.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{CredentialEventSummary, TrimbleConnectionStatus};
use crate::leaf::{CredentialEvent, CredentialStatus, LeafError};
use crate::reason::{CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED, Reason};

/// How many Leaf events `status.recentEvents` keeps.
pub const MAX_RECENT_EVENTS: usize = 10;

/// The outcome of one reconcile as the user should see it on the `Ready` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub reason: Reason,
    pub message: String,
}

impl Outcome {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// `Ready`'s status for a reason: True only for a valid credential, Unknown when Leaf says
/// something the operator cannot interpret, False for everything else.
pub fn ready_status(reason: Reason) -> &'static str {
    match reason {
        Reason::CredentialValid => "True",
        Reason::CredentialStatusUnknown => "Unknown",
        _ => "False",
    }
}

/// Whether the operator is still working towards the desired state on its own (kstatus
/// `Reconciling`): true for transient steps and waits, false for settled and stalled states.
pub fn is_reconciling(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::Creating
            | Reason::Rotating
            | Reason::Deleting
            | Reason::LeafUnavailable
            | Reason::SecretNotFound
            | Reason::Reauthorizing
    )
}

/// `at`, truncated to whole seconds as the API server stores `metav1.Time`, so a status read back
/// compares equal to the one written.
pub fn time(at: jiff::Timestamp) -> Time {
    Time(jiff::Timestamp::from_second(at.as_second()).unwrap_or(at))
}

fn upsert(
    conditions: &mut Vec<Condition>,
    old: &[Condition],
    type_: &str,
    status: &str,
    outcome: &Outcome,
    generation: Option<i64>,
    now: &Time,
) {
    // kstatus and the API conventions: lastTransitionTime moves only when `status` changes.
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: outcome.reason.as_str().to_string(),
        message: outcome.message.clone(),
        observed_generation: generation,
        last_transition_time,
    });
}

/// Sets `observedGeneration` and the conditions of `next` from `outcome`: `Ready` always,
/// `Reconciling` and `Stalled` only while true. Transition times are kept from `old` when a
/// condition's status did not change.
pub fn finish(
    old: &TrimbleConnectionStatus,
    mut next: TrimbleConnectionStatus,
    outcome: &Outcome,
    generation: Option<i64>,
    now: &Time,
) -> TrimbleConnectionStatus {
    let mut conditions = Vec::with_capacity(3);
    upsert(
        &mut conditions,
        &old.conditions,
        CONDITION_READY,
        ready_status(outcome.reason),
        outcome,
        generation,
        now,
    );
    if is_reconciling(outcome.reason) {
        upsert(
            &mut conditions,
            &old.conditions,
            CONDITION_RECONCILING,
            "True",
            outcome,
            generation,
            now,
        );
    }
    if outcome.reason.is_stalled() {
        upsert(
            &mut conditions,
            &old.conditions,
            CONDITION_STALLED,
            "True",
            outcome,
            generation,
            now,
        );
    }
    next.conditions = conditions;
    next.observed_generation = generation;
    next
}

/// The current `Ready` reason recorded in a status, if any (and if it is one of ours).
pub fn ready_reason(status: &TrimbleConnectionStatus) -> Option<Reason> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .and_then(|c| c.reason.parse().ok())
}

/// The `Ready` message now on the resource.
pub fn ready_message(status: &TrimbleConnectionStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Longest Leaf status string copied into messages; the full string is kept in `credentialStatus`.
const MAX_STATUS_IN_MESSAGE: usize = 64;

/// Where the Secret's values stand, for the message that tells a person what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretNote {
    /// The Secret holds the values that were sent to Leaf (or a change the operator acts on).
    Sent,
    /// The credential was adopted and the Secret still holds the values found then: this operator
    /// never sent them, so it cannot know whether its refresh token is the spent one.
    AdoptedUnsent,
    /// The Secret does not exist now (it is needed only to create or rotate).
    Missing,
    /// The Secret exists but cannot be used now (a key is missing or empty).
    Invalid,
    /// The Secret changed, but to a refresh token that was sent to Leaf before: it is not sent
    /// again (a Trimble refresh token works once).
    ReusedToken,
}

/// What Leaf's credential status means for `Ready`; `note` says where the Secret stands.
pub fn credential_outcome(
    status: &CredentialStatus,
    secret_name: &str,
    note: SecretNote,
) -> Outcome {
    let mut outcome = match status {
        CredentialStatus::Ok => Outcome::new(
            Reason::CredentialValid,
            "Leaf reports the Trimble credential as OK",
        ),
        CredentialStatus::Unauthenticated | CredentialStatus::Invalid => {
            let what_to_do = match note {
                SecretNote::AdoptedUnsent => format!(
                    "The values in Secret {secret_name:?} were never sent by this operator (the credential was adopted). \
                     If its refresh token is a new one from the grower, set spec.adoptionPolicy: Replace to replace \
                     the credential with it; otherwise put a new refresh token from the grower into the Secret, and \
                     the operator rotates it in"
                ),
                SecretNote::Missing => format!(
                    "The grower must re-authorize Leaf through Trimble, and the new refresh token must be put into \
                     Secret {secret_name:?} (it does not exist now); the operator then rotates it in"
                ),
                SecretNote::Sent | SecretNote::Invalid | SecretNote::ReusedToken => format!(
                    "The grower must re-authorize Leaf through Trimble, and the new refresh token must be put into \
                     Secret {secret_name:?}; the operator then rotates it in"
                ),
            };
            Outcome::new(
                Reason::CredentialInvalid,
                format!(
                    "Leaf reports the Trimble credential as {}. {what_to_do}",
                    shown(status.as_str())
                ),
            )
        }
        CredentialStatus::MissingPermission => Outcome::new(
            Reason::MissingPermission,
            "Leaf reports MISSING_PERMISSION: the grower's Trimble authorization lacks a permission Leaf needs; \
             the grower must authorize again with the required permissions",
        ),
        CredentialStatus::TemporarilyUnavailable => Outcome::new(
            Reason::ProviderUnavailable,
            "Leaf reports TEMPORARILY_UNAVAILABLE: Trimble is not answering Leaf; nothing to do but wait",
        ),
        CredentialStatus::Other(value) => Outcome::new(
            Reason::CredentialStatusUnknown,
            format!(
                "Leaf reports the status {:?}, which this operator does not know",
                shown(value)
            ),
        ),
    };
    let secret_gone = match note {
        SecretNote::Missing => Some("does not exist"),
        SecretNote::Invalid => Some("cannot be used"),
        SecretNote::Sent | SecretNote::AdoptedUnsent | SecretNote::ReusedToken => None,
    };
    if let Some(why) = secret_gone
        && outcome.reason != Reason::CredentialInvalid
    {
        outcome.message.push_str(&format!(
            ". Secret {secret_name:?} {why}; it is needed only to rotate or re-create the credential"
        ));
    }
    if note == SecretNote::ReusedToken {
        outcome.message.push_str(&format!(
            ". Secret {secret_name:?} changed, but its refresh token was sent to Leaf before and a Trimble refresh \
             token works only once: it is not sent again; put a new one from the grower into the Secret to rotate"
        ));
    }
    outcome
}

/// A Leaf status string as it may appear in a message: printable and short.
fn shown(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_STATUS_IN_MESSAGE)
        .collect()
}

/// The reason a failed Leaf call puts on the resource: transient trouble is `LeafUnavailable`
/// (retried with backoff), a refused identity `LeafAuthFailed`, a refused request
/// `CredentialRejected` (both need a person).
pub fn leaf_error_reason(error: &LeafError) -> Reason {
    match error {
        LeafError::Unavailable { .. } | LeafError::InvalidResponse { .. } => {
            Reason::LeafUnavailable
        }
        LeafError::AuthFailed { .. } | LeafError::Config { .. } => Reason::LeafAuthFailed,
        LeafError::NotSent(crate::leaf::NotSent::DeadlinePassed) => Reason::LeafUnavailable,
        LeafError::NotSent(crate::leaf::NotSent::Fenced) => Reason::LeadershipLost,
        LeafError::UserNotFound { .. } => Reason::LeafUserNotFound,
        LeafError::Rejected { .. } | LeafError::AlreadyExists { .. } => Reason::CredentialRejected,
    }
}

fn parse_time(time: Option<&str>) -> Option<jiff::Timestamp> {
    let text = time?;
    text.parse::<jiff::Timestamp>().ok().or_else(|| {
        // Leaf documents `yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'`, but may omit the zone.
        text.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    })
}

/// Result of merging Leaf's events into `status.recentEvents`.
#[derive(Debug, PartialEq, Eq)]
pub struct MergedEvents {
    /// Newest first, at most [`MAX_RECENT_EVENTS`].
    pub recent: Vec<CredentialEventSummary>,
    /// Events not seen before whose status code is an error (>= 400), oldest first, so the
    /// Kubernetes Events appear in the order they happened.
    pub new_errors: Vec<CredentialEventSummary>,
}

/// Merges the events Leaf returned with the ones already recorded.
///
/// An event is new when its id is not recorded and, if the recorded window is full, it is newer
/// than the oldest recorded event (older ones have been seen and then dropped from the window).
/// The window lives in the status, so a restarted operator does not announce old events again.
pub fn merge_events(known: &[CredentialEventSummary], fetched: &[CredentialEvent]) -> MergedEvents {
    let known_ids: HashSet<&str> = known.iter().map(|e| e.id.as_str()).collect();
    let window_full = known.len() >= MAX_RECENT_EVENTS;
    let oldest_known = known
        .iter()
        .filter_map(|e| parse_time(e.time.as_deref()))
        .min();

    let mut all: Vec<CredentialEventSummary> = fetched
        .iter()
        .map(|e| CredentialEventSummary {
            id: e.id.clone(),
            time: e.time.clone(),
            status_code: e.status_code,
            summary: e.summary.clone(),
        })
        .collect();
    // Leaf documents no order: sort newest first ourselves (undated ones last, stable otherwise).
    all.sort_by(|a, b| {
        let (ta, tb) = (parse_time(a.time.as_deref()), parse_time(b.time.as_deref()));
        tb.cmp(&ta)
    });
    let mut seen = HashSet::new();
    all.retain(|e| seen.insert(e.id.clone()));

    let mut new_errors: Vec<CredentialEventSummary> = all
        .iter()
        .take(MAX_RECENT_EVENTS)
        .filter(|e| !known_ids.contains(e.id.as_str()))
        .filter(|e| {
            !window_full
                || match (parse_time(e.time.as_deref()), oldest_known) {
                    (Some(time), Some(oldest)) => time > oldest,
                    _ => false,
                }
        })
        .filter(|e| e.status_code.is_some_and(|code| code >= 400))
        .cloned()
        .collect();
    new_errors.reverse();

    all.truncate(MAX_RECENT_EVENTS);
    // Leaf returns nothing once events age out (30 days): keep what we had rather than blanking it.
    let recent = if all.is_empty() { known.to_vec() } else { all };
    MergedEvents { recent, new_errors }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    fn event(id: &str, minute: u32, code: i32) -> CredentialEvent {
        CredentialEvent {
            id: id.to_string(),
            time: Some(format!("2026-01-01T00:{minute:02}:00.000000Z")),
            status_code: Some(code),
            summary: format!("HTTP {code}"),
        }
    }

    #[test]
    fn ready_is_always_present_and_reconciling_stalled_only_while_true() {
        let old = TrimbleConnectionStatus::default();
        let t = time("2026-01-01T00:00:00Z");
        let creating = finish(
            &old,
            old.clone(),
            &Outcome::new(Reason::Creating, "m"),
            Some(1),
            &t,
        );
        let types: Vec<_> = creating
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, vec![("Ready", "False"), ("Reconciling", "True")]);
        let invalid = finish(
            &creating,
            creating.clone(),
            &Outcome::new(Reason::SecretInvalid, "m"),
            Some(1),
            &t,
        );
        let types: Vec<_> = invalid
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, vec![("Ready", "False"), ("Stalled", "True")]);
        let valid = finish(
            &invalid,
            invalid.clone(),
            &Outcome::new(Reason::CredentialValid, "m"),
            Some(2),
            &t,
        );
        let types: Vec<_> = valid
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, vec![("Ready", "True")]);
        assert!(
            valid
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(2))
        );
        assert_eq!(valid.observed_generation, Some(2));
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let old = TrimbleConnectionStatus::default();
        let t1 = time("2026-01-01T00:00:00Z");
        let t2 = time("2026-01-01T01:00:00Z");
        let a = finish(
            &old,
            old.clone(),
            &Outcome::new(Reason::Creating, "a"),
            Some(1),
            &t1,
        );
        let b = finish(
            &a,
            a.clone(),
            &Outcome::new(Reason::LeafUnavailable, "b"),
            Some(1),
            &t2,
        );
        assert_eq!(
            b.conditions[0].last_transition_time, t1,
            "Ready stayed False"
        );
        assert_eq!(b.conditions[0].reason, "LeafUnavailable");
        let c = finish(
            &b,
            b.clone(),
            &Outcome::new(Reason::CredentialValid, "c"),
            Some(1),
            &t2,
        );
        assert_eq!(c.conditions[0].last_transition_time, t2);
        let d = finish(
            &c,
            c.clone(),
            &Outcome::new(Reason::CredentialValid, "c"),
            Some(1),
            &t2,
        );
        assert_eq!(
            c, d,
            "the same observation gives the same status (no write)"
        );
    }

    #[test]
    fn leaf_statuses_map_to_reasons_and_unknown_is_kept() {
        let secret = "creds";
        assert_eq!(
            credential_outcome(&CredentialStatus::Ok, secret, SecretNote::Sent).reason,
            Reason::CredentialValid
        );
        let invalid = credential_outcome(
            &CredentialStatus::parse("invalid"),
            secret,
            SecretNote::Sent,
        );
        assert_eq!(invalid.reason, Reason::CredentialInvalid);
        assert!(invalid.message.contains("re-authorize") && invalid.message.contains("creds"));
        assert_eq!(
            credential_outcome(
                &CredentialStatus::parse("UNAUTHENTICATED"),
                secret,
                SecretNote::Sent
            )
            .reason,
            Reason::CredentialInvalid
        );
        assert_eq!(
            credential_outcome(
                &CredentialStatus::parse("TEMPORARILY_UNAVAILABLE"),
                secret,
                SecretNote::Sent
            )
            .reason,
            Reason::ProviderUnavailable
        );
        let other = credential_outcome(
            &CredentialStatus::parse("PAUSED_BY_LEAF"),
            secret,
            SecretNote::Sent,
        );
        assert_eq!(other.reason, Reason::CredentialStatusUnknown);
        assert!(other.message.contains("PAUSED_BY_LEAF"));
        assert_eq!(ready_status(other.reason), "Unknown");
    }

    #[test]
    fn an_invalid_credential_says_exactly_what_to_do_for_where_the_secret_stands() {
        let dead = CredentialStatus::Unauthenticated;
        let adopted = credential_outcome(&dead, "creds", SecretNote::AdoptedUnsent);
        assert_eq!(adopted.reason, Reason::CredentialInvalid);
        assert!(
            adopted.message.contains("never sent by this operator")
                && adopted.message.contains("adoptionPolicy: Replace"),
            "{}",
            adopted.message
        );
        let missing = credential_outcome(&dead, "creds", SecretNote::Missing);
        assert!(
            missing.message.contains("does not exist now"),
            "{}",
            missing.message
        );
        let valid_without_secret =
            credential_outcome(&CredentialStatus::Ok, "creds", SecretNote::Missing);
        assert_eq!(valid_without_secret.reason, Reason::CredentialValid);
        assert!(
            valid_without_secret
                .message
                .contains("needed only to rotate or re-create"),
            "{}",
            valid_without_secret.message
        );
        let huge = CredentialStatus::parse(&"X\u{7}".repeat(10_000));
        let unknown = credential_outcome(&huge, "creds", SecretNote::Sent);
        assert!(unknown.message.len() < 200, "{}", unknown.message.len());
    }

    #[test]
    fn leaf_failures_map_to_transient_or_stalled_reasons() {
        let unavailable = LeafError::Unavailable {
            status: Some(503),
            retry_after: None,
            sent: true,
            detail: "d".to_string(),
        };
        assert_eq!(leaf_error_reason(&unavailable), Reason::LeafUnavailable);
        assert!(!leaf_error_reason(&unavailable).is_stalled());
        let auth = LeafError::AuthFailed {
            status: Some(401),
            retry_after: None,
            detail: "d".to_string(),
        };
        assert_eq!(leaf_error_reason(&auth), Reason::LeafAuthFailed);
        let rejected = LeafError::Rejected {
            status: 400,
            detail: "d".to_string(),
        };
        assert_eq!(leaf_error_reason(&rejected), Reason::CredentialRejected);
        assert!(leaf_error_reason(&rejected).is_stalled());
    }

    #[test]
    fn events_are_sorted_newest_first_capped_and_errors_announced_once() {
        let fetched: Vec<_> = (0..12)
            .map(|i| event(&format!("e{i}"), i, if i % 2 == 0 { 401 } else { 200 }))
            .collect();
        let first = merge_events(&[], &fetched);
        assert_eq!(first.recent.len(), MAX_RECENT_EVENTS);
        assert_eq!(first.recent[0].id, "e11");
        // Only errors within the window are announced, oldest first.
        let ids: Vec<_> = first.new_errors.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec!["e2", "e4", "e6", "e8", "e10"]);

        let again = merge_events(&first.recent, &fetched);
        assert!(
            again.new_errors.is_empty(),
            "nothing new: {:?}",
            again.new_errors
        );
        assert_eq!(again.recent, first.recent);

        let mut more = fetched.clone();
        more.push(event("e12", 30, 500));
        let third = merge_events(&first.recent, &more);
        assert_eq!(third.new_errors.len(), 1);
        assert_eq!(third.new_errors[0].id, "e12");
        assert_eq!(third.recent[0].id, "e12");
    }

    #[test]
    fn empty_answer_keeps_the_recorded_events() {
        let first = merge_events(&[], &[event("a", 1, 200)]);
        let second = merge_events(&first.recent, &[]);
        assert_eq!(second.recent, first.recent);
        assert!(second.new_errors.is_empty());
    }
}
