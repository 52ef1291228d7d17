//! Re-authorization through a Leaf Magic Link: when only the grower can help, which link step a
//! reconcile takes, and whether a credential that appeared came from the grower's link. Pure.
//!
//! Leaf hosts Trimble's consent flow behind a Magic Link: once the grower completes it, Leaf
//! itself creates the Trimble credential on the Leaf user (we never see a refresh token). A link
//! is a bearer URL whose last segment is its id, so the status keeps only a fingerprint of the id;
//! the id and URL live in a Secret the resource owns (`reauthorization.linkSecretName`).
//!
//! ## The link rows, after the credential's own doubt rows, first match wins
//!
//! | `status.magicLink` | Leaf GET shows | Secret | step |
//! |---|---|---|---|
//! | retired | any | any | `DeleteRetired`: DELETE it at Leaf, delete its Secret, forget it |
//! | create in doubt | any | any | `FindLink`: Leaf's list decides (ours found: record it; window open: wait; closed: forget, issue again) |
//! | out, policy no longer MagicLink | any | any | `Retire` |
//! | out | a credential that is not ours | any | `JudgeArrival`: the link's own record decides |
//! | out | ours, valid | any | `Retire` (valid again) |
//! | out | nothing, or ours not valid | new values never sent | `Retire` (a person chose the Secret; the create follows) |
//! | out | nothing, or ours not valid | other | renewal due: `Retire` (then a new link) · else `AwaitGrower` |
//! | none, policy MagicLink | ours, invalid or missing permission | no new values | `Withdraw`: DELETE it first |
//! | none, policy MagicLink | what the credential rows call `NeedNewValues`, or no Secret configured | | `Issue` |
//!
//! `JudgeArrival`: a credential is ours by the link when the link was used (`usageCount` above
//! zero) and the credential was created after the link was (and, when Leaf says, no earlier than
//! the grower last opened it), each widened by the clock skew. Otherwise it is foreign: the link is
//! retired and `adoptionPolicy` decides as for any foreign credential.
//!
//! Why `Withdraw` first: Leaf keeps one Trimble credential per user and does not document what a
//! completed link does to one that exists. Deleting our dead credential before any link is out
//! makes the grower's completion the only way a credential appears (so the evidence above is
//! clear), and no DELETE of ours can ever be in flight while the grower may be completing a link
//! (Leaf's DELETE names the user: it would remove the grower's new credential). Its events stay in
//! `status.recentEvents`.

use std::time::Duration;

use jiff::Timestamp;

use super::mutation::{self, Mutation};
use super::{CLOCK_SKEW, Facts, SecretFact};
use crate::crd::{
    LinkSettings, MagicLinkStatus, PendingLink, Reauthorization, ReauthorizationPolicy,
    TrimbleConnectionSpec, parse_go_duration,
};
use crate::leaf::{Credential, CredentialStatus, MagicLink};
use crate::secret::magic_link_fingerprint;
use secrecy::ExposeSecret;

/// How often Leaf is asked whether the grower completed the link (no webhook announces a new
/// credential, so it is polled).
pub const AWAIT_GROWER_POLL: Duration = Duration::from_secs(30);
/// A link is renewed when less than this share of its lifetime is left (at most
/// [`RENEW_BEFORE_MAX`] before it expires).
pub const RENEW_SHARE: u32 = 5;
pub const RENEW_BEFORE_MAX: Duration = Duration::from_secs(3600);
/// Default lifetime of a link (`reauthorization.expiresIn`).
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(7 * 24 * 3600);
/// Leaf's bounds for a link's lifetime: 900 seconds to a year.
pub const MIN_EXPIRES_IN: Duration = Duration::from_secs(900);
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a resource whose Trimble application is not registered with Leaf waits before asking
/// again on its own (a forced reconcile asks at once).
pub const APP_MISSING_RECHECK: Duration = Duration::from_secs(600);

/// The re-authorization a resource has, its own or the operator's default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReauthSettings {
    pub expires_in: Duration,
    /// The Secret the link is written into.
    pub link_secret_name: String,
    /// The Trimble application that must be registered with Leaf (None: any).
    pub app_name: Option<String>,
    pub settings: LinkSettings,
}

/// The re-authorization of the resource `name` with `spec`: its own, or the operator's `default`
/// policy when it has none. None: no links (policy `None`).
pub fn settings_of(
    name: &str,
    spec: &TrimbleConnectionSpec,
    default: ReauthorizationPolicy,
) -> Option<ReauthSettings> {
    let reauth = spec.reauthorization.clone().unwrap_or(Reauthorization {
        policy: default,
        ..Reauthorization::default()
    });
    if reauth.policy != ReauthorizationPolicy::MagicLink {
        return None;
    }
    // The schema bounds it; an older object without that validation is clamped to Leaf's bounds.
    let expires_in = reauth
        .expires_in
        .as_deref()
        .and_then(parse_go_duration)
        .map_or(DEFAULT_EXPIRES_IN, |d| {
            d.clamp(MIN_EXPIRES_IN, MAX_EXPIRES_IN)
        });
    Some(ReauthSettings {
        expires_in,
        link_secret_name: reauth
            .link_secret_name
            .unwrap_or_else(|| format!("{name}-magic-link")),
        app_name: reauth.app_name,
        settings: reauth.settings.unwrap_or_default(),
    })
}

/// What a link's record at Leaf says, without the link itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRecord {
    pub fingerprint: String,
    pub leaf_user_id: Option<String>,
    pub created_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub last_accessed_at: Option<Timestamp>,
    pub usage_count: Option<u64>,
}

impl LinkRecord {
    /// The record of `link`, with a fingerprint in place of its id and nothing of its URL.
    pub fn of(link: &MagicLink) -> Self {
        Self {
            fingerprint: magic_link_fingerprint(link.id.expose_secret()),
            leaf_user_id: link.leaf_user_id.clone(),
            created_at: link.created_at,
            expires_at: link.expires_at,
            last_accessed_at: link.last_accessed_at,
            usage_count: link.usage_count,
        }
    }
}

/// What a reconcile does about the grower's link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkStep {
    /// The link is no longer wanted: DELETE it at Leaf, delete its Secret, forget it.
    DeleteRetired,
    /// A link create got no clear answer: look for its link in Leaf's list.
    FindLink,
    /// A credential that is not ours appeared while the link is out: read the link's record and
    /// judge whether the grower's completion made it.
    JudgeArrival { credential: Credential },
    /// Mark the link retired (the next reconcile deletes it).
    Retire { why: RetireWhy },
    /// Wait for the grower; `renew_in`: until the link is renewed.
    AwaitGrower { renew_in: Duration },
    /// Our credential is dead and no link is out: DELETE it, then issue a link.
    Withdraw { credential: Credential },
    /// Check Leaf has the Trimble application, then issue a link.
    Issue,
}

/// Why a link is retired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetireWhy {
    /// The credential is valid again.
    ValidAgain,
    /// The Secret holds values never sent: a person chose them over the grower's link.
    NewSecretValues,
    /// It expires soon: a new one replaces it (never two live links).
    Renew,
    /// `reauthorization.policy` is no longer MagicLink.
    PolicyOff,
    /// A credential appeared that the link does not account for.
    NotFromLink,
    /// The grower can no longer use it: opened as often as Leaf allows (`maxUsage`), or gone from
    /// Leaf (deleted by someone else).
    Unusable,
}

/// Whether the link the status names can still serve the grower, from its record at Leaf now
/// (None: Leaf has no such link). A link Leaf does not show yet, moments after it was made, is
/// given the read-lag allowance before it counts as gone.
pub fn still_usable(f: &Facts, link: &MagicLinkStatus, record: Option<&MagicLink>) -> bool {
    match record {
        Some(record) => !record.is_used_up() && !record.is_expired(f.now),
        None => {
            let created = link
                .created_at
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok());
            let skew = jiff::SignedDuration::try_from(CLOCK_SKEW).unwrap_or_default();
            let lag = jiff::SignedDuration::try_from(f.windows.read_lag).unwrap_or_default();
            created.is_some_and(|created| f.now < created + skew + lag)
        }
    }
}

/// The link step for what Leaf showed, when there is one. `base`: what the credential rows chose
/// (their `NeedNewValues` is where a link is issued). `new_values`: the Secret holds values that
/// may be sent and were never sent (a create or rotation would follow).
pub fn link_step(
    f: &Facts,
    seen: Option<&Credential>,
    new_values: bool,
    base_needs_values: bool,
) -> Option<LinkStep> {
    if let Some(link) = &f.status.magic_link {
        return Some(step_with_link(f, link, seen, new_values));
    }
    f.reauth.as_ref()?;
    let owned = f.status.credential_id.as_deref();
    if let Some(credential) = seen
        && Some(credential.id.as_str()) == owned
    {
        return (needs_grower(&credential.status) && !new_values).then(|| LinkStep::Withdraw {
            credential: credential.clone(),
        });
    }
    let no_secret = matches!(f.secret, SecretFact::NotConfigured);
    (seen.is_none() && (base_needs_values || no_secret)).then_some(LinkStep::Issue)
}

fn step_with_link(
    f: &Facts,
    link: &MagicLinkStatus,
    seen: Option<&Credential>,
    new_values: bool,
) -> LinkStep {
    if link.retired {
        return LinkStep::DeleteRetired;
    }
    if link.pending.is_some() {
        return LinkStep::FindLink;
    }
    if f.reauth.is_none() {
        return LinkStep::Retire {
            why: RetireWhy::PolicyOff,
        };
    }
    let owned = f.status.credential_id.as_deref();
    match seen {
        Some(credential) if Some(credential.id.as_str()) != owned => {
            return LinkStep::JudgeArrival {
                credential: credential.clone(),
            };
        }
        Some(credential) if credential.status.is_ok() => {
            return LinkStep::Retire {
                why: RetireWhy::ValidAgain,
            };
        }
        _ => {}
    }
    if new_values {
        return LinkStep::Retire {
            why: RetireWhy::NewSecretValues,
        };
    }
    let renew_in = renew_in(f, link);
    if renew_in.is_zero() && mutation::on(Mutation::RenewWithoutDelete) {
        return LinkStep::Issue;
    }
    if renew_in.is_zero() {
        LinkStep::Retire {
            why: RetireWhy::Renew,
        }
    } else {
        LinkStep::AwaitGrower { renew_in }
    }
}

/// Leaf's statuses that only the grower authorizing again can fix.
pub fn needs_grower(status: &CredentialStatus) -> bool {
    matches!(
        status,
        CredentialStatus::Invalid
            | CredentialStatus::Unauthenticated
            | CredentialStatus::MissingPermission
    )
}

/// How long until the link should be renewed (zero: now; an unreadable expiry: now).
pub fn renew_in(f: &Facts, link: &MagicLinkStatus) -> Duration {
    let Some(expires_at) = link
        .expires_at
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
    else {
        return Duration::ZERO;
    };
    let lifetime = f
        .reauth
        .as_ref()
        .map_or(DEFAULT_EXPIRES_IN, |r| r.expires_in);
    let margin = (lifetime / RENEW_SHARE).min(RENEW_BEFORE_MAX);
    let left = Duration::try_from(expires_at.duration_since(f.now)).unwrap_or(Duration::ZERO);
    left.saturating_sub(margin)
}

/// Whether `credential` came from the grower completing the link `record` describes: the link was
/// used, and the credential was created after the link was created and no earlier than the grower
/// last opened it (Leaf's clock on both sides, widened by the clock skew).
pub fn came_from_link(record: &LinkRecord, credential: &Credential) -> bool {
    if mutation::on(Mutation::AnyArrivalIsTheGrowers) {
        return true;
    }
    let used = record.usage_count.is_some_and(|count| count > 0);
    let skew = jiff::SignedDuration::try_from(CLOCK_SKEW).unwrap_or_default();
    let Some(created) = credential.created_at() else {
        return false;
    };
    let after_link = record
        .created_at
        .is_some_and(|link_created| created >= link_created - skew);
    let after_access = record
        .last_accessed_at
        .is_none_or(|accessed| created >= accessed - skew);
    used && after_link && after_access
}

/// Of the links in Leaf's list (already narrowed to this Leaf user), the one the create in
/// `pending` made: created while that POST could take effect, the newest if several.
pub fn made_by_pending<'a>(
    f: &Facts,
    pending: &PendingLink,
    records: &'a [LinkRecord],
) -> Option<&'a LinkRecord> {
    let skew = jiff::SignedDuration::try_from(CLOCK_SKEW).unwrap_or_default();
    let started: Timestamp = pending.started_at.parse().ok()?;
    let send_by: Timestamp = pending.send_by.parse().ok()?;
    let end = f.windows.landing_end(send_by) + skew;
    records
        .iter()
        .filter(|record| {
            record
                .leaf_user_id
                .as_deref()
                .is_none_or(|user| user == f.spec.leaf_user_id)
        })
        .filter(|record| {
            record
                .created_at
                .is_some_and(|created| created >= started - skew && created <= end)
        })
        .max_by_key(|record| record.created_at)
}

/// How long a link create in `pending` may still land (zero: its window closed).
pub fn pending_left(f: &Facts, pending: &PendingLink) -> Duration {
    pending.send_by.parse().map_or(Duration::ZERO, |send_by| {
        f.windows.seen_left(send_by, f.now)
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::crd::TrimbleConnectionStatus;

    fn reauth() -> ReauthSettings {
        ReauthSettings {
            expires_in: Duration::from_secs(3600),
            link_secret_name: "tc-magic-link".to_string(),
            app_name: None,
            settings: LinkSettings::default(),
        }
    }

    fn with_reauth(mut f: Facts) -> Facts {
        f.reauth = Some(reauth());
        f
    }

    fn link_out(f: &Facts, expires_in: Duration) -> MagicLinkStatus {
        MagicLinkStatus {
            secret_name: "tc-magic-link".to_string(),
            fingerprint: Some("fp".to_string()),
            created_at: Some(f.now.to_string()),
            expires_at: Some((f.now + expires_in).to_string()),
            pending: None,
            retired: false,
        }
    }

    fn status_with(
        credential_id: Option<&str>,
        link: Option<MagicLinkStatus>,
    ) -> TrimbleConnectionStatus {
        let mut status = sent(status_owning(credential_id), FP_A);
        status.magic_link = link;
        status
    }

    fn record(created: Timestamp, used: u64, accessed: Option<Timestamp>) -> LinkRecord {
        LinkRecord {
            fingerprint: "fp".to_string(),
            leaf_user_id: Some("user-1".to_string()),
            created_at: Some(created),
            expires_at: None,
            last_accessed_at: accessed,
            usage_count: Some(used),
        }
    }

    #[test]
    fn link_rows() {
        let hour = Duration::from_secs(3600);
        let base = with_reauth(facts());
        let out = link_out(&base, hour);
        let mut retired = out.clone();
        retired.retired = true;
        let mut pending = out.clone();
        pending.pending = Some(PendingLink {
            started_at: base.now.to_string(),
            send_by: base.now.to_string(),
        });
        let at = |status| Facts {
            status,
            ..base.clone()
        };
        // (name, facts, what Leaf shows, new values in the Secret, credential rows need values, step)
        type Case = (
            &'static str,
            Facts,
            Option<Credential>,
            bool,
            bool,
            LinkStep,
        );
        let cases: Vec<Case> = vec![
            (
                "retired: delete it first",
                at(status_with(Some("c1"), Some(retired))),
                Some(cred("c1", CLIENT_A, "OK")),
                false,
                false,
                LinkStep::DeleteRetired,
            ),
            (
                "create in doubt: Leaf's list decides",
                at(status_with(None, Some(pending))),
                None,
                false,
                true,
                LinkStep::FindLink,
            ),
            (
                "a credential not ours while the link is out: judged by the link",
                at(status_with(Some("c1"), Some(out.clone()))),
                Some(cred("c2", CLIENT_A, "OK")),
                false,
                false,
                LinkStep::JudgeArrival {
                    credential: cred("c2", CLIENT_A, "OK"),
                },
            ),
            (
                "ours valid again: retire",
                at(status_with(Some("c1"), Some(out.clone()))),
                Some(cred("c1", CLIENT_A, "OK")),
                false,
                false,
                LinkStep::Retire {
                    why: RetireWhy::ValidAgain,
                },
            ),
            (
                "new values in the Secret: retire, the create follows",
                at(status_with(Some("c1"), Some(out.clone()))),
                None,
                true,
                true,
                LinkStep::Retire {
                    why: RetireWhy::NewSecretValues,
                },
            ),
            (
                "nothing yet: wait for the grower until renewal",
                at(status_with(Some("c1"), Some(out.clone()))),
                None,
                false,
                true,
                LinkStep::AwaitGrower {
                    renew_in: hour - hour / RENEW_SHARE,
                },
            ),
            (
                "expires within the margin: renew",
                at(status_with(
                    Some("c1"),
                    Some(link_out(&base, Duration::from_secs(60))),
                )),
                None,
                false,
                true,
                LinkStep::Retire {
                    why: RetireWhy::Renew,
                },
            ),
            (
                "ours dead, no link: withdraw it first",
                at(status_with(Some("c1"), None)),
                Some(cred("c1", CLIENT_A, "invalid")),
                false,
                false,
                LinkStep::Withdraw {
                    credential: cred("c1", CLIENT_A, "invalid"),
                },
            ),
            (
                "ours missing permission, no link: withdraw it first",
                at(status_with(Some("c1"), None)),
                Some(cred("c1", CLIENT_A, "MISSING_PERMISSION")),
                false,
                false,
                LinkStep::Withdraw {
                    credential: cred("c1", CLIENT_A, "MISSING_PERMISSION"),
                },
            ),
            (
                "vanished after its token was spent: issue",
                at(status_with(Some("c1"), None)),
                None,
                false,
                true,
                LinkStep::Issue,
            ),
        ];
        for (name, f, seen, new_values, needs, expected) in cases {
            assert_eq!(
                link_step(&f, seen.as_ref(), new_values, needs),
                Some(expected),
                "{name}"
            );
        }
    }

    #[test]
    fn without_the_policy_nothing_is_issued_and_an_out_link_is_retired() {
        let f = facts();
        let dead = cred("c1", CLIENT_A, "invalid");
        let owning = Facts {
            status: status_with(Some("c1"), None),
            ..f.clone()
        };
        assert_eq!(link_step(&owning, Some(&dead), false, false), None);
        assert_eq!(link_step(&owning, None, false, true), None);
        let out = Facts {
            status: status_with(Some("c1"), Some(link_out(&f, Duration::from_secs(3600)))),
            ..f
        };
        assert_eq!(
            link_step(&out, None, false, true),
            Some(LinkStep::Retire {
                why: RetireWhy::PolicyOff
            })
        );
    }

    #[test]
    fn new_values_beat_a_withdrawal_and_a_foreign_credential_is_left_to_the_credential_rows() {
        let f = with_reauth(Facts {
            status: status_with(Some("c1"), None),
            ..facts()
        });
        let dead = cred("c1", CLIENT_A, "invalid");
        assert_eq!(link_step(&f, Some(&dead), true, false), None);
        let foreign = cred("c9", CLIENT_A, "OK");
        assert_eq!(link_step(&f, Some(&foreign), false, false), None);
    }

    #[test]
    fn a_credential_is_ours_by_the_link_only_with_its_use_and_times() {
        let now: Timestamp = "2026-12-06T12:00:00Z".parse().unwrap();
        let minute = jiff::SignedDuration::from_mins(1);
        let made_at = |t: Timestamp| {
            let mut c = cred("c2", CLIENT_A, "OK");
            c.created_time = Some(t.to_string());
            c
        };
        let link_created = now - minute * 10;
        let accessed = now - minute * 2;
        let used = record(link_created, 1, Some(accessed));
        assert!(came_from_link(&used, &made_at(now)), "used, created after");
        assert!(
            !came_from_link(&record(link_created, 0, None), &made_at(now)),
            "never used: not from the link"
        );
        assert!(
            !came_from_link(&used, &made_at(link_created - minute * 10)),
            "created before the link"
        );
        assert!(
            !came_from_link(&used, &made_at(accessed - minute * 5)),
            "created before the grower opened it"
        );
        let mut no_time = made_at(now);
        no_time.created_time = None;
        assert!(
            !came_from_link(&used, &no_time),
            "no creation time: no evidence"
        );
    }

    #[test]
    fn a_lost_create_answer_is_found_by_its_time_and_user() {
        let f = with_reauth(facts());
        let pending = PendingLink {
            started_at: f.now.to_string(),
            send_by: f.windows.send_by(f.now).to_string(),
        };
        let minute = jiff::SignedDuration::from_mins(1);
        let older = record(f.now - minute * 30, 0, None);
        let mine = record(f.now + jiff::SignedDuration::from_secs(2), 0, None);
        let mut other_user = mine.clone();
        other_user.leaf_user_id = Some("someone-else".to_string());
        assert_eq!(
            made_by_pending(&f, &pending, &[older.clone(), mine.clone()]),
            Some(&mine)
        );
        assert_eq!(made_by_pending(&f, &pending, &[older, other_user]), None);
    }

    #[test]
    fn the_resource_setting_beats_the_operator_default_and_leafs_bounds_hold() {
        use crate::crd::ReauthorizationPolicy::{MagicLink, None as Off};
        let spec = |extra: serde_json::Value| {
            spec_with(|s| s.reauthorization = serde_json::from_value(extra).unwrap())
        };
        let none = spec(serde_json::Value::Null);
        assert_eq!(settings_of("farm", &none, Off), None);
        let by_default = settings_of("farm", &none, MagicLink).expect("the default applies");
        assert_eq!(by_default.link_secret_name, "farm-magic-link");
        assert_eq!(by_default.expires_in, DEFAULT_EXPIRES_IN);
        let opted_out = spec(serde_json::json!({"policy": "None"}));
        assert_eq!(settings_of("farm", &opted_out, MagicLink), None);
        let own =
            spec(serde_json::json!({"expiresIn": "2h", "linkSecretName": "x", "appName": "app"}));
        let own = settings_of("farm", &own, Off).expect("its own policy (MagicLink by default)");
        assert_eq!(own.expires_in, Duration::from_secs(7200));
        assert_eq!(own.link_secret_name, "x");
        assert_eq!(own.app_name.as_deref(), Some("app"));
        // An object stored before the schema's bounds: clamped to Leaf's.
        let short = spec(serde_json::json!({"expiresIn": "1m"}));
        assert_eq!(
            settings_of("farm", &short, Off).unwrap().expires_in,
            MIN_EXPIRES_IN
        );
        let long = spec(serde_json::json!({"expiresIn": "20000h"}));
        assert_eq!(
            settings_of("farm", &long, Off).unwrap().expires_in,
            MAX_EXPIRES_IN
        );
    }
}
