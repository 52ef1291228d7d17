//! Gathers the [`Facts`] a decision needs. Two halves: [`read`] does the only IO (the two
//! Secrets, and the conflict checks over the controller's stores); [`facts`] is pure and builds
//! everything else from what was read and what the process knows (the schedule, the polling
//! pace, an alert's hint, the clock). The simulation drives [`facts`] itself, with its own world
//! in place of the API server.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::Error;
use crate::controller::Context;
use crate::controller::backoff::Schedules;
use crate::controller::conflict;
use crate::controller::decide::gate::SECRET_NOT_FOUND_RECHECK;
use crate::controller::decide::reauth;
use crate::controller::decide::{AccountFact, ConflictFact, Facts, Next, SecretFact, Windows};
use crate::controller::link_secret;
use crate::controller::polling::Polling;
use crate::controller::status::Outcome;
use crate::crd::{ManagementPolicy, RECONCILE_REQUESTED_AT_ANNOTATION, TrimbleConnection};
use crate::leaf::LeafAccount;
use crate::reason::Reason;
use crate::secret::{self, SecretError, TrimbleSecret, client_id_fingerprint};

/// What one reconcile found, with the values the executors need.
pub struct Observed {
    pub facts: Facts,
    pub secret: Option<TrimbleSecret>,
    pub account: Option<LeafAccount>,
    pub pace: Pace,
    /// The annotation value this reconcile answers, if it is new.
    pub handled_at: Option<String>,
    /// When the alert this reconcile answers arrived (its hint, taken), for the alert-to-status
    /// histogram.
    pub alert_at: Option<Instant>,
    /// The id of the grower's Magic Link, from its Secret.
    pub link_id: Option<secrecy::SecretString>,
}

/// What the schedule needs of an observation: the key of the Leaf calls' inputs and the pace of
/// the periodic checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pace {
    /// A change of the Secret or the account is worth a Leaf call at once.
    pub inputs: String,
    /// The pace of this resource's periodic checks now (its interval, or the alerts backstop).
    pub interval: Duration,
}

/// Whether the credentials Secret is read: deletion never depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Apply,
    Cleanup,
}

/// The Leaf account a resource uses, as read.
pub enum AccountRead {
    /// No `leafAuthSecretRef`: the operator's default account, if it has one.
    Default(Option<LeafAccount>),
    /// The Secret `leafAuthSecretRef` names (read errors of the API itself excluded).
    Secret(Result<LeafAccount, SecretError>),
}

/// What was read from the API server for one reconcile.
pub struct Reads {
    /// The credentials Secret (None: not read, as during deletion). API errors are excluded: they
    /// end the reconcile before anything is decided.
    pub credentials: Option<Result<TrimbleSecret, SecretError>>,
    pub account: AccountRead,
    /// The conflict checks over every store.
    pub conflict: ConflictFact,
    /// The id of the grower's Magic Link, from the Secret the status names (read only while one
    /// is out; None also when the Secret is gone or not ours).
    pub link_id: Option<secrecy::SecretString>,
}

/// What the process knows besides the object.
pub struct Surroundings<'a> {
    pub polling: Polling,
    pub schedules: &'a Schedules,
    /// An alert asked for a look at this object (its hint, taken by the caller).
    pub alert_at: Option<Instant>,
    pub windows: Windows,
    pub now: jiff::Timestamp,
    pub instant: Instant,
    /// `--observe-only`: handle the resource as `managementPolicy: Observe`.
    pub observe_only: bool,
    /// `--reauthorization-default`.
    pub reauthorization_default: crate::crd::ReauthorizationPolicy,
}

/// Reads the Secrets and checks the stores for `tc`, then builds its facts.
pub(super) async fn observe(
    ctx: &Context,
    tc: &TrimbleConnection,
    purpose: Purpose,
) -> Result<Observed, Error> {
    let reads = read(ctx, tc, purpose).await?;
    let uid = tc.uid().unwrap_or_default();
    // An alert's hint bypasses the schedule once (taken first, so it is always consumed).
    let alert_at = ctx.hints.take(&uid);
    Ok(facts(
        tc,
        reads,
        &Surroundings {
            polling: ctx.polling(),
            schedules: &ctx.schedules,
            alert_at,
            windows: ctx.windows,
            now: jiff::Timestamp::now(),
            instant: Instant::now(),
            observe_only: ctx.observe_only,
            reauthorization_default: ctx.reauthorization_default,
        },
    ))
}

/// The only IO of an observation.
async fn read(ctx: &Context, tc: &TrimbleConnection, purpose: Purpose) -> Result<Reads, Error> {
    let namespace = tc.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let credentials = match purpose {
        Purpose::Apply => match &tc.spec.credentials_secret_ref {
            // Connected by the grower's Magic Link: there is no Secret to read.
            None => None,
            Some(reference) => match secret::read_trimble_secret(&secrets, reference).await {
                Err(error @ SecretError::Api { .. }) => return Err(Error::Secret(error)),
                other => Some(other),
            },
        },
        Purpose::Cleanup => None,
    };
    let account = match &tc.spec.leaf_auth_secret_ref {
        None => AccountRead::Default(ctx.default_account.current()),
        Some(reference) => match secret::read_leaf_account(&secrets, reference).await {
            Err(error @ SecretError::Api { .. }) => return Err(Error::Secret(error)),
            other => AccountRead::Secret(other),
        },
    };
    let conflict = if ctx.is_synced() {
        conflict::check(tc, ctx.all_objects().iter().map(|arc| arc.as_ref()))
    } else {
        ConflictFact::NotSynced
    };
    let link_id = match tc.status.as_ref().and_then(|s| s.magic_link.as_ref()) {
        Some(link) => link_secret::read_id(&secrets, tc, &link.secret_name)
            .await
            .map_err(|error| {
                Error::Secret(SecretError::Api {
                    name: link.secret_name.clone(),
                    source: error,
                })
            })?,
        None => None,
    };
    Ok(Reads {
        credentials,
        account,
        conflict,
        link_id,
    })
}

/// The facts of `tc` from what was read and what the process knows. Pure.
pub fn facts(tc: &TrimbleConnection, reads: Reads, around: &Surroundings<'_>) -> Observed {
    let status = tc.status.clone().unwrap_or_default();
    let (secret_fact, secret) = if tc.spec.credentials_secret_ref.is_none() {
        (SecretFact::NotConfigured, None)
    } else {
        credentials_fact(reads.credentials)
    };
    let (account_fact, account) = account_fact(reads.account);
    // A clock behind the API server's makes a fresh object look created in the future: that is
    // age zero (the tie window applies in full), never "unknown".
    let age = tc.meta().creation_timestamp.as_ref().map(|created| {
        Duration::try_from(around.now.duration_since(created.0)).unwrap_or(Duration::ZERO)
    });
    let inputs = format!(
        "{}/{}",
        secret_fact.fingerprint().unwrap_or("-"),
        account
            .as_ref()
            .map_or_else(|| "-".to_string(), |a| a.account_key().to_string())
    );
    let uid = tc.uid().unwrap_or_default();
    let requested = tc
        .annotations()
        .get(RECONCILE_REQUESTED_AT_ANNOTATION)
        .cloned();
    let annotation_new = requested.is_some() && requested != status.last_handled_reconcile_at;
    let backstop = match around.polling {
        Polling::Backstop(backstop) => Some(backstop),
        Polling::Normal => None,
    };
    let interval = tc.spec.check_interval(backstop);
    let generation_new = tc.meta().generation != status.observed_generation;
    Observed {
        facts: Facts {
            spec: {
                let mut spec = tc.spec.clone();
                if around.observe_only {
                    spec.management_policy = ManagementPolicy::Observe;
                }
                spec
            },
            status,
            secret: secret_fact,
            account: account_fact,
            conflict: reads.conflict,
            age,
            // At the pace that applies now: a check scheduled under the other polling mode moves.
            not_due_for: around
                .schedules
                .wait_at_pace(&uid, &inputs, interval, around.instant),
            forced: around.alert_at.is_some() || annotation_new || generation_new,
            // While alerts are healthy a status change arrives as an alert: the events are read
            // when the status changed or a person asked, not on every backstop check.
            events_every_check: backstop.is_none(),
            reauth: reauth::settings_of(&tc.name_any(), &tc.spec, around.reauthorization_default),
            now: around.now,
            windows: around.windows,
        },
        secret,
        account,
        pace: Pace { inputs, interval },
        handled_at: if annotation_new { requested } else { None },
        alert_at: around.alert_at,
        link_id: reads.link_id,
    }
}

/// The credentials Secret: its fact, and its values when complete.
fn credentials_fact(
    read: Option<Result<TrimbleSecret, SecretError>>,
) -> (SecretFact, Option<TrimbleSecret>) {
    match read {
        None => (
            SecretFact::Missing {
                message: "the credentials Secret is not read during deletion".to_string(),
            },
            None,
        ),
        Some(Ok(secret)) => (
            SecretFact::Present {
                fingerprint: secret.fingerprint.clone(),
                client_id_hash: client_id_fingerprint(&secret.client_id),
                refresh_token_hash: secret.refresh_token_fingerprint.clone(),
            },
            Some(secret),
        ),
        Some(Err(error)) if error.is_not_found() => (
            SecretFact::Missing {
                message: error.to_string(),
            },
            None,
        ),
        Some(Err(error)) => (
            SecretFact::Invalid {
                message: error.to_string(),
            },
            None,
        ),
    }
}

/// The Leaf account for this resource, or the outcome that explains why there is none.
fn account_fact(read: AccountRead) -> (AccountFact, Option<LeafAccount>) {
    match read {
        AccountRead::Default(Some(account)) | AccountRead::Secret(Ok(account)) => {
            (AccountFact::Ready, Some(account))
        }
        AccountRead::Default(None) => (
            AccountFact::Unusable {
                outcome: Outcome::new(
                    Reason::LeafAuthFailed,
                    "No Leaf API account: set spec.leafAuthSecretRef, or configure the operator's default \
                     account (LEAF_USERNAME and LEAF_PASSWORD, or LEAF_TOKEN)",
                ),
                next: Next::Person,
            },
            None,
        ),
        AccountRead::Secret(Err(error)) if error.is_not_found() => (
            AccountFact::Unusable {
                outcome: Outcome::new(
                    Reason::SecretNotFound,
                    format!("Leaf account {error}; waiting for it (spec.leafAuthSecretRef)"),
                ),
                next: Next::Hold(SECRET_NOT_FOUND_RECHECK),
            },
            None,
        ),
        AccountRead::Secret(Err(error)) => (
            AccountFact::Unusable {
                outcome: Outcome::new(
                    Reason::SecretInvalid,
                    format!("Leaf account {error} (spec.leafAuthSecretRef)"),
                ),
                next: Next::Person,
            },
            None,
        ),
    }
}
