//! The grower's Magic Link: the intent before a link is issued, what Leaf's answers mean, the
//! judgement of a credential that appeared while a link was out, retiring and deleting a link.
//!
//! The link itself never passes through here: these functions see a [`LinkRecord`] (times, use
//! count, a fingerprint of the id) and write only that into the status. The executor writes the
//! link into its Secret before the status says it is out, so a status that names a link always has
//! a Secret holding it (or a create in doubt that Leaf's list resolves).

use std::time::Duration;

use super::{Transition, close_doubt, current_outcome, fill, leaf_failed, user};
use crate::controller::decide::answers::{self, Effect, Write};
use crate::controller::decide::reauth::{
    self, APP_MISSING_RECHECK, AWAIT_GROWER_POLL, LinkRecord, RetireWhy,
};
use crate::controller::decide::{Facts, Next};
use crate::controller::status::{self, Outcome};
use crate::crd::{
    CredentialSource, LastCreate, MagicLinkStatus, PendingLink, TrimbleConnectionStatus,
};
use crate::leaf::{Credential, CredentialEvent, LeafError};
use crate::reason::Reason;

/// The Secret the link goes into (the resource's setting, or the default name).
fn secret_name(f: &Facts) -> String {
    f.reauth.as_ref().map_or_else(
        || "the Magic Link Secret".to_string(),
        |r| r.link_secret_name.clone(),
    )
}

/// Leaf has no Trimble application registered (or not the one `reauthorization.appName` names):
/// no link can be issued. Nothing is written to Leaf.
pub fn app_missing(f: &Facts, current: &TrimbleConnectionStatus) -> Transition {
    let app = f
        .reauth
        .as_ref()
        .and_then(|r| r.app_name.clone())
        .map_or_else(
            || "No Trimble application is registered with Leaf".to_string(),
            |name| format!("The Trimble application {name:?} is not registered with Leaf"),
        );
    let message = format!(
        "{app}, so no Magic Link can be issued for Leaf user {}. Register it (POST \
         /services/usermanagement/api/app-keys/Trimble/{{appName}} with applicationName, clientId and clientSecret) \
         and add https://widget.withleaf.io as an Authentication Callback URL of the Trimble application; the \
         operator checks again every {} minutes, or at once when reconcile-requested-at changes",
        user(f),
        APP_MISSING_RECHECK.as_secs() / 60
    );
    Transition::new(
        super::base(f, current),
        Outcome::new(Reason::MagicLinkAppMissing, message),
        Next::Hold(APP_MISSING_RECHECK),
    )
}

/// The Secret the link would go into exists and belongs to someone else: nothing is issued.
pub fn secret_taken(f: &Facts, current: &TrimbleConnectionStatus) -> Transition {
    let message = format!(
        "Secret {:?} exists and is not owned by this TrimbleConnection, so the grower's Magic Link cannot be written \
         into it and none is issued: set spec.reauthorization.linkSecretName to a name no other Secret uses",
        secret_name(f)
    );
    Transition::new(
        super::base(f, current),
        Outcome::new(Reason::Conflict, message),
        Next::Person,
    )
}

/// The intent before asking Leaf for a link: on the server before the POST, so that a lost answer
/// is looked for in Leaf's list instead of a second link issued.
pub fn issue_intent(f: &Facts, current: &TrimbleConnectionStatus) -> (Transition, PendingLink) {
    let pending = PendingLink {
        started_at: f.now.to_string(),
        send_by: f.windows.send_by(f.now).to_string(),
    };
    let mut next = super::base(f, current);
    close_doubt(&mut next);
    next.magic_link = Some(MagicLinkStatus {
        secret_name: secret_name(f),
        pending: Some(pending.clone()),
        ..MagicLinkStatus::default()
    });
    let message = format!(
        "Issuing a Magic Link for the grower of Leaf user {} to authorize Trimble",
        user(f)
    );
    (
        Transition::new(
            next,
            Outcome::new(Reason::Reauthorizing, message),
            Next::Soon,
        ),
        pending,
    )
}

/// Leaf issued the link `record` (its URL is in its Secret already): wait for the grower.
pub fn issued(f: &Facts, with_intent: TrimbleConnectionStatus, record: &LinkRecord) -> Transition {
    let mut next = with_intent;
    let link = MagicLinkStatus {
        secret_name: secret_name(f),
        fingerprint: Some(record.fingerprint.clone()),
        created_at: record.created_at.map(|t| t.to_string()),
        expires_at: record.expires_at.map(|t| t.to_string()),
        pending: None,
        retired: false,
    };
    next.magic_link = Some(link.clone());
    let note = format!(
        "Issued a Magic Link for the grower of Leaf user {} to authorize Trimble: it is in Secret {:?} (key \
         link){}. Give it to the grower only: it is a bearer link",
        user(f),
        link.secret_name,
        expiry_text(&link)
    );
    let mut transition = await_grower(f, next.clone(), &link);
    transition.status = next;
    transition.notice(Reason::ReauthorizationLinkIssued, "IssueMagicLink", note)
}

/// Waiting for the grower: the same text on every look (so a look that finds nothing new writes
/// nothing), again after the poll interval or at renewal, whichever comes first.
pub fn await_grower(
    f: &Facts,
    current: TrimbleConnectionStatus,
    link: &MagicLinkStatus,
) -> Transition {
    let renew_in = reauth::renew_in(f, link);
    let message = format!(
        "Waiting for the grower of Leaf user {} to authorize Trimble through the Magic Link in Secret {:?}{}: \
         give them the link (kubectl get secret {} -o jsonpath='{{.data.link}}' | base64 -d). The operator renews \
         it before it expires and the resource becomes Ready once Leaf has the grower's credential",
        user(f),
        link.secret_name,
        expiry_text(link),
        link.secret_name
    );
    Transition::new(
        current,
        Outcome::new(Reason::AwaitingGrower, message),
        Next::Hold(AWAIT_GROWER_POLL.min(renew_in.max(Duration::from_secs(1)))),
    )
}

fn expiry_text(link: &MagicLinkStatus) -> String {
    link.expires_at
        .as_deref()
        .map(|at| format!(" (valid until {at})"))
        .unwrap_or_default()
}

/// A link create failed. Certainly not applied: forget the intent, back off. Maybe applied: the
/// intent stays and Leaf's list decides on the next look.
pub fn issue_failed(with_intent: TrimbleConnectionStatus, error: &LeafError) -> Transition {
    let mut next = with_intent;
    match answers::effect(Write::Create, error) {
        Effect::NotApplied => {
            next.magic_link = None;
            leaf_failed(next, error, "issuing a Magic Link for the grower")
        }
        Effect::Applied | Effect::Maybe => {
            let message = format!(
                "Issuing a Magic Link for the grower: {error}. Leaf may have issued it: the operator looks for it in \
                 Leaf's list of links before issuing another"
            );
            Transition::new(
                next,
                Outcome::new(Reason::Reauthorizing, message),
                Next::Backoff {
                    retry_after: error.retry_after(),
                },
            )
        }
    }
}

/// Leaf's list after a link create in doubt: `found` is the link that create made. None: while the
/// create may still land, wait; once it cannot, forget it (a new link is issued).
pub fn after_search(
    f: &Facts,
    current: &TrimbleConnectionStatus,
    pending: &PendingLink,
    found: Option<&LinkRecord>,
) -> Transition {
    let base = super::base(f, current);
    if let Some(record) = found {
        return issued(f, base, record);
    }
    let left = reauth::pending_left(f, pending);
    let mut next = base;
    if left.is_zero() {
        next.magic_link = None;
        let message = "A Magic Link create got no clear answer and Leaf's list does not show its link: issuing \
                       a new one"
            .to_string();
        return Transition::new(
            next,
            Outcome::new(Reason::Reauthorizing, message),
            Next::Soon,
        );
    }
    let message = format!(
        "A Magic Link create got no clear answer and Leaf's list does not show its link yet: looking again within \
         {}s before issuing another",
        left.as_secs().max(1)
    );
    Transition::new(
        next,
        Outcome::new(Reason::Reauthorizing, message),
        Next::Hold(left.min(AWAIT_GROWER_POLL)),
    )
}

/// The link is no longer wanted: mark it, and delete it on the next look (before anything else).
pub fn retire(f: &Facts, current: &TrimbleConnectionStatus, why: RetireWhy) -> Transition {
    let mut next = super::base(f, current);
    if let Some(link) = &mut next.magic_link {
        link.retired = true;
    }
    let outcome = match why {
        RetireWhy::ValidAgain => current_outcome(&next, Reason::CredentialValid),
        RetireWhy::NewSecretValues => Outcome::new(
            Reason::Reauthorizing,
            "The credentials Secret holds new values: withdrawing the grower's Magic Link, then using them",
        ),
        RetireWhy::Renew => Outcome::new(
            Reason::Reauthorizing,
            "The grower's Magic Link expires soon: replacing it with a new one",
        ),
        RetireWhy::PolicyOff => Outcome::new(
            Reason::Reauthorizing,
            "reauthorization.policy is no longer MagicLink: withdrawing the grower's Magic Link",
        ),
        RetireWhy::Unusable => Outcome::new(
            Reason::Reauthorizing,
            "The grower's Magic Link can no longer be used (opened as often as Leaf allows, or gone from Leaf): \
             replacing it with a new one",
        ),
        RetireWhy::NotFromLink => Outcome::new(
            Reason::Reauthorizing,
            format!(
                "A Trimble credential appeared for Leaf user {} that the grower's Magic Link does not account for: \
                 withdrawing the link; adoptionPolicy decides about the credential",
                user(f)
            ),
        ),
    };
    Transition::new(next, outcome, Next::Soon)
}

/// The retired link is gone at Leaf (deleted, or nothing there) and its Secret removed.
pub fn deleted(f: &Facts, current: &TrimbleConnectionStatus) -> Transition {
    let mut next = super::base(f, current);
    let name = next
        .magic_link
        .take()
        .map(|link| link.secret_name)
        .unwrap_or_default();
    let outcome = match status::ready_reason(&next) {
        // A renewal or a withdrawal goes on at once; the reason it showed stays meanwhile.
        Some(reason) => Outcome::new(reason, status::ready_message(&next)),
        None => Outcome::new(Reason::Reauthorizing, "Withdrew the grower's Magic Link"),
    };
    Transition::new(next, outcome, Next::Soon).notice(
        Reason::MagicLinkDeleted,
        "DeleteMagicLink",
        format!("Deleted the grower's Magic Link at Leaf and its Secret {name:?}"),
    )
}

/// Whether the credential that appeared came from the grower's link (`record`: the link's record
/// at Leaf now; None: Leaf no longer has it, so nothing accounts for the credential).
pub fn judged(
    f: &Facts,
    current: &TrimbleConnectionStatus,
    credential: &Credential,
    record: Option<&LinkRecord>,
    events: Option<Result<Vec<CredentialEvent>, LeafError>>,
) -> Transition {
    let from_link = record.is_some_and(|record| reauth::came_from_link(record, credential));
    if !from_link {
        return retire(f, current, RetireWhy::NotFromLink);
    }
    let mut next = super::base(f, current);
    close_doubt(&mut next);
    let replaced = next
        .credential_id
        .clone()
        .filter(|old| *old != credential.id);
    // Events belong to a credential; the grower's new one starts with its own.
    next.recent_events.clear();
    fill(&mut next, credential);
    next.credential_source = Some(CredentialSource::MagicLink);
    // The Secret's values (if any) made nothing here: recorded as found, so that only a later
    // change of the Secret counts as new values.
    next.adopted_secret_fingerprint = f.secret.fingerprint().map(str::to_string);
    next.secret_fingerprint = None;
    next.last_create = Some(LastCreate {
        confirmed_at: f.now.to_string(),
        replaced_credential_id: replaced,
    });
    if let Some(link) = &mut next.magic_link {
        link.retired = true;
    }
    let mut leaf_events = Vec::new();
    if let Some(Ok(events)) = events {
        let merged = status::merge_events(&next.recent_events, &events);
        next.recent_events = merged.recent;
        leaf_events = merged.new_errors;
    }
    let outcome = status::credential_outcome(
        &credential.status,
        super::secret_name(f),
        status::SecretNote::Sent,
    );
    let mut transition = Transition::new(next, outcome, Next::Soon).notice(
        Reason::ReauthorizationCompleted,
        "CompleteMagicLink",
        format!(
            "The grower completed the Magic Link: Leaf created Trimble credential {} for Leaf user {}",
            credential.id,
            user(f)
        ),
    );
    transition.leaf_events = leaf_events;
    transition
}

#[cfg(test)]
mod tests {
    use super::super::super::testing::*;
    use super::*;
    use crate::controller::decide::reauth::ReauthSettings;
    use crate::crd::LinkSettings;

    fn with_reauth() -> Facts {
        Facts {
            reauth: Some(ReauthSettings {
                expires_in: Duration::from_secs(3600),
                link_secret_name: "tc-magic-link".to_string(),
                app_name: None,
                settings: LinkSettings::default(),
            }),
            ..facts()
        }
    }

    fn record(f: &Facts) -> LinkRecord {
        LinkRecord {
            fingerprint: "fp-link".to_string(),
            leaf_user_id: Some("user-1".to_string()),
            created_at: Some(f.now),
            expires_at: Some(f.now + jiff::SignedDuration::from_hours(1)),
            last_accessed_at: None,
            usage_count: Some(0),
        }
    }

    #[test]
    fn an_issued_link_is_recorded_without_the_link_and_announced_as_a_warning() {
        let f = with_reauth();
        let (intent, _) = issue_intent(&f, &status_owning(Some("dead")));
        assert!(intent.status.magic_link.as_ref().unwrap().pending.is_some());
        let t = issued(&f, intent.status, &record(&f));
        let link = t.status.magic_link.as_ref().expect("link");
        assert_eq!(link.fingerprint.as_deref(), Some("fp-link"));
        assert!(link.pending.is_none());
        assert_eq!(t.outcome.reason, Reason::AwaitingGrower);
        assert_eq!(t.notices[0].reason, Reason::ReauthorizationLinkIssued);
        assert!(Reason::ReauthorizationLinkIssued.is_warning());
        assert!(t.outcome.message.contains("tc-magic-link"));
        assert_eq!(t.next, Next::Hold(AWAIT_GROWER_POLL));
    }

    #[test]
    fn a_failed_issue_keeps_its_intent_only_when_leaf_may_have_issued_it() {
        let f = with_reauth();
        let (intent, _) = issue_intent(&f, &TrimbleConnectionStatus::default());
        let lost = LeafError::Unavailable {
            status: Some(503),
            retry_after: None,
            sent: true,
            detail: "x".into(),
        };
        let t = issue_failed(intent.status.clone(), &lost);
        assert!(
            t.status.magic_link.as_ref().unwrap().pending.is_some(),
            "503: maybe"
        );
        let refused = LeafError::Rejected {
            status: 400,
            detail: "bad".into(),
        };
        let t = issue_failed(intent.status, &refused);
        assert!(t.status.magic_link.is_none(), "400: not applied");
    }

    #[test]
    fn a_credential_from_the_link_becomes_ours_and_the_link_is_retired() {
        let f = with_reauth();
        let mut current = sent(status_owning(Some("dead")), FP_A);
        current.magic_link = Some(MagicLinkStatus {
            secret_name: "tc-magic-link".into(),
            fingerprint: Some("fp-link".into()),
            created_at: Some(ago(600).to_string()),
            ..MagicLinkStatus::default()
        });
        let mut used = record(&f);
        used.created_at = Some(ago(600));
        used.usage_count = Some(1);
        let mut new = cred("fresh", CLIENT_A, "OK");
        new.created_time = Some(ago(10).to_string());
        let t = judged(&f, &current, &new, Some(&used), None);
        assert_eq!(t.status.credential_id.as_deref(), Some("fresh"));
        assert_eq!(
            t.status.credential_source,
            Some(CredentialSource::MagicLink)
        );
        assert!(t.status.magic_link.as_ref().unwrap().retired);
        assert_eq!(t.outcome.reason, Reason::CredentialValid);
        assert_eq!(
            t.status
                .last_create
                .as_ref()
                .unwrap()
                .replaced_credential_id
                .as_deref(),
            Some("dead")
        );
        // Unused link: not ours; the link is retired and nothing is claimed.
        let t = judged(&f, &current, &new, Some(&record(&f)), None);
        assert_eq!(t.status.credential_id.as_deref(), Some("dead"));
        assert!(t.status.magic_link.as_ref().unwrap().retired);
        let t = judged(&f, &current, &new, None, None);
        assert_eq!(t.status.credential_id.as_deref(), Some("dead"));
    }
}
