//! Gathers the [`Facts`] a decision needs: the Secrets, the account, the conflict check, the
//! schedule and the clock. The only IO is reading the two Secrets.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::Error;
use crate::controller::Context;
use crate::controller::conflict;
use crate::controller::decide::gate::SECRET_NOT_FOUND_RECHECK;
use crate::controller::decide::{AccountFact, ConflictFact, Facts, Next, SecretFact};
use crate::controller::polling::Polling;
use crate::controller::status::Outcome;
use crate::crd::{RECONCILE_REQUESTED_AT_ANNOTATION, TrimbleConnection};
use crate::leaf::LeafAccount;
use crate::reason::Reason;
use crate::secret::{self, SecretError, TrimbleSecret, client_id_fingerprint};

/// What one reconcile found, with the values the executors need.
pub(super) struct Observed {
    pub facts: Facts,
    pub secret: Option<TrimbleSecret>,
    pub account: Option<LeafAccount>,
    /// The schedule's key: a change of the Secret or the account is worth a Leaf call at once.
    pub inputs: String,
    /// The annotation value this reconcile answers, if it is new.
    pub handled_at: Option<String>,
    /// The pace of this resource's periodic checks now (its interval, or the alerts backstop).
    pub interval: Duration,
    /// When the alert this reconcile answers arrived (its hint, taken here), for the
    /// alert-to-status histogram.
    pub alert_at: Option<Instant>,
}

/// Whether the credentials Secret is read: deletion never depends on it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Apply,
    Cleanup,
}

pub(super) async fn observe(
    ctx: &Context,
    tc: &TrimbleConnection,
    purpose: Purpose,
) -> Result<Observed, Error> {
    let namespace = tc.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let status = tc.status.clone().unwrap_or_default();
    let (secret_fact, secret) = match purpose {
        Purpose::Apply => read_credentials(&secrets, tc).await?,
        Purpose::Cleanup => (
            SecretFact::Missing {
                message: "the credentials Secret is not read during deletion".to_string(),
            },
            None,
        ),
    };
    let (account_fact, account) = read_account(ctx, &secrets, tc).await?;
    let conflict = if !ctx.is_synced() {
        ConflictFact::NotSynced
    } else {
        match conflict::find_winner(tc, &ctx.stores()) {
            Some(winner) => ConflictFact::LosesTo(winner),
            None => ConflictFact::Clear,
        }
    };
    let now = jiff::Timestamp::now();
    let age = tc
        .meta()
        .creation_timestamp
        .as_ref()
        .and_then(|created| Duration::try_from(now.duration_since(created.0)).ok());
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
    let backstop = match ctx.polling() {
        Polling::Backstop(backstop) => Some(backstop),
        Polling::Normal => None,
    };
    let interval = tc.spec.check_interval(backstop);
    let generation_new = tc.meta().generation != status.observed_generation;
    // An alert's hint bypasses the schedule once (taken first, so it is always consumed).
    let alert_at = ctx.hints.take(&uid);
    Ok(Observed {
        facts: Facts {
            spec: tc.spec.clone(),
            status,
            secret: secret_fact,
            account: account_fact,
            conflict,
            age,
            // At the pace that applies now: a check scheduled under the other polling mode moves.
            not_due_for: ctx
                .schedules
                .wait_at_pace(&uid, &inputs, interval, Instant::now()),
            forced: alert_at.is_some() || annotation_new || generation_new,
            // While alerts are healthy a status change arrives as an alert: the events are read
            // when the status changed or a person asked, not on every backstop check.
            events_every_check: backstop.is_none(),
            now,
            in_doubt_window: ctx.in_doubt_window,
        },
        secret,
        account,
        inputs,
        handled_at: if annotation_new { requested } else { None },
        interval,
        alert_at,
    })
}

/// The credentials Secret: its fact, and its values when complete.
async fn read_credentials(
    secrets: &Api<Secret>,
    tc: &TrimbleConnection,
) -> Result<(SecretFact, Option<TrimbleSecret>), Error> {
    match secret::read_trimble_secret(secrets, &tc.spec.credentials_secret_ref).await {
        Ok(secret) => Ok((
            SecretFact::Present {
                fingerprint: secret.fingerprint.clone(),
                client_id_hash: client_id_fingerprint(&secret.client_id),
                refresh_token_hash: secret.refresh_token_fingerprint.clone(),
            },
            Some(secret),
        )),
        Err(error @ SecretError::Api { .. }) => Err(Error::Secret(error)),
        Err(error) if error.is_not_found() => Ok((
            SecretFact::Missing {
                message: error.to_string(),
            },
            None,
        )),
        Err(error) => Ok((
            SecretFact::Invalid {
                message: error.to_string(),
            },
            None,
        )),
    }
}

/// The Leaf account for this resource, or the outcome that explains why there is none.
async fn read_account(
    ctx: &Context,
    secrets: &Api<Secret>,
    tc: &TrimbleConnection,
) -> Result<(AccountFact, Option<LeafAccount>), Error> {
    let Some(reference) = &tc.spec.leaf_auth_secret_ref else {
        return Ok(match ctx.default_account.current() {
            Some(account) => (AccountFact::Ready, Some(account)),
            None => (
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
        });
    };
    match secret::read_leaf_account(secrets, reference).await {
        Ok(account) => Ok((AccountFact::Ready, Some(account))),
        Err(error @ SecretError::Api { .. }) => Err(Error::Secret(error)),
        Err(error) if error.is_not_found() => Ok((
            AccountFact::Unusable {
                outcome: Outcome::new(
                    Reason::SecretNotFound,
                    format!("Leaf account {error}; waiting for it (spec.leafAuthSecretRef)"),
                ),
                next: Next::Hold(SECRET_NOT_FOUND_RECHECK),
            },
            None,
        )),
        Err(error) => Ok((
            AccountFact::Unusable {
                outcome: Outcome::new(
                    Reason::SecretInvalid,
                    format!("Leaf account {error} (spec.leafAuthSecretRef)"),
                ),
                next: Next::Person,
            },
            None,
        )),
    }
}
