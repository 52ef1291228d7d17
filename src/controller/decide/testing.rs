//! Fixtures for the decision tables: a clock, a spec, statuses and credentials in a line each.

use std::time::Duration;

use super::{AccountFact, ConflictFact, Facts, SecretFact, Windows};
use crate::controller::status::{self, Outcome};
use crate::crd::{
    LastCreate, PendingCreate, PendingDelete, TrimbleConnectionSpec, TrimbleConnectionStatus,
};
use crate::leaf::{Credential, CredentialStatus};
use crate::reason::Reason;
use crate::secret::client_id_fingerprint;

pub const FP_A: &str = "fp-a";
pub const FP_B: &str = "fp-b";
pub const CLIENT_A: &str = "client-a";
pub const CLIENT_OTHER: &str = "client-other";
pub const TOKEN_A: &str = "token-a";
pub const TOKEN_B: &str = "token-b";
/// A write may leave until 30 s after its intent and land until 60 s after that: 90 s in all,
/// counted from the intent.
pub const SEND_BUDGET: Duration = Duration::from_secs(30);
pub const AFTER_SEND: Duration = Duration::from_secs(60);
pub const WINDOW: Duration = Duration::from_secs(90);
pub const READ_LAG: Duration = Duration::from_secs(20);
/// How long a create stays in doubt: its window, then the read-lag allowance (a credential that
/// lands at the window's end shows only once reads catch up).
pub const CREATE_DOUBT: Duration = Duration::from_secs(110);
pub const NOW: &str = "2026-06-01T12:00:00Z";

pub fn now() -> jiff::Timestamp {
    NOW.parse().expect("NOW")
}

pub fn ago(seconds: i64) -> jiff::Timestamp {
    now() - jiff::SignedDuration::from_secs(seconds)
}

pub fn spec_with(change: impl FnOnce(&mut TrimbleConnectionSpec)) -> TrimbleConnectionSpec {
    let mut spec: TrimbleConnectionSpec = serde_json::from_value(serde_json::json!({
        "leafUserId": "user-1", "credentialsSecretRef": {"name": "creds"}
    }))
    .expect("spec");
    change(&mut spec);
    spec
}

/// A complete Secret whose refresh token nobody sent.
pub fn present(fingerprint: &str, client_id: &str) -> SecretFact {
    present_with_token(fingerprint, client_id, &format!("token-of-{fingerprint}"))
}

pub fn present_with_token(fingerprint: &str, client_id: &str, token: &str) -> SecretFact {
    SecretFact::Present {
        fingerprint: fingerprint.to_string(),
        client_id_hash: client_id_fingerprint(client_id),
        refresh_token_hash: refresh_hash(token),
    }
}

pub fn refresh_hash(token: &str) -> String {
    crate::secret::refresh_token_fingerprint(token)
}

pub fn missing_secret() -> SecretFact {
    SecretFact::Missing {
        message: "Secret \"creds\" not found".into(),
    }
}

/// Due now, the Secret holding FP_A with CLIENT_A, nothing owned.
pub fn facts() -> Facts {
    Facts {
        spec: spec_with(|_| {}),
        status: TrimbleConnectionStatus::default(),
        secret: present(FP_A, CLIENT_A),
        account: AccountFact::Ready,
        conflict: ConflictFact::Clear,
        age: Some(Duration::from_secs(3600)),
        not_due_for: Duration::ZERO,
        forced: false,
        events_every_check: true,
        now: now(),
        windows: windows(),
        reauth: None,
    }
}

pub fn windows() -> Windows {
    Windows {
        send_budget: SEND_BUDGET,
        after_send: AFTER_SEND,
        read_lag: READ_LAG,
    }
}

pub fn status_owning(id: Option<&str>) -> TrimbleConnectionStatus {
    TrimbleConnectionStatus {
        credential_id: id.map(str::to_string),
        credential_status: id.map(|_| "OK".to_string()),
        ..TrimbleConnectionStatus::default()
    }
}

/// The values with `fingerprint` were sent to Leaf.
pub fn sent(mut status: TrimbleConnectionStatus, fingerprint: &str) -> TrimbleConnectionStatus {
    status.secret_fingerprint = Some(fingerprint.to_string());
    status
}

/// The credential was adopted while the Secret held `fingerprint`.
pub fn adopted_with(
    mut status: TrimbleConnectionStatus,
    fingerprint: &str,
) -> TrimbleConnectionStatus {
    status.secret_fingerprint = None;
    status.adopted_secret_fingerprint = Some(fingerprint.to_string());
    status
}

/// A POST of `fingerprint` with `client_id` started `seconds` ago.
pub fn in_doubt(
    mut status: TrimbleConnectionStatus,
    fingerprint: &str,
    client_id: &str,
    seconds: i64,
) -> TrimbleConnectionStatus {
    status.pending_create = Some(PendingCreate {
        secret_fingerprint: fingerprint.to_string(),
        started_at: ago(seconds).to_string(),
        send_by: Some(windows().send_by(ago(seconds)).to_string()),
        client_id_fingerprint: Some(client_id_fingerprint(client_id)),
        refresh_token_fingerprint: None,
    });
    status
}

/// A DELETE meant for `credential_id` started `seconds` ago.
pub fn deleting(
    mut status: TrimbleConnectionStatus,
    credential_id: &str,
    seconds: i64,
) -> TrimbleConnectionStatus {
    status.pending_delete = Some(PendingDelete {
        credential_id: credential_id.to_string(),
        started_at: ago(seconds).to_string(),
        send_by: windows().send_by(ago(seconds)).to_string(),
    });
    status
}

/// Our create of the credential the status names was confirmed `seconds` ago, replacing
/// `replaced`.
pub fn created_ago(
    mut status: TrimbleConnectionStatus,
    seconds: i64,
    replaced: Option<&str>,
) -> TrimbleConnectionStatus {
    status.last_create = Some(LastCreate {
        confirmed_at: ago(seconds).to_string(),
        replaced_credential_id: replaced.map(str::to_string),
    });
    status
}

pub fn with_reason(
    status: TrimbleConnectionStatus,
    reason: Reason,
    fingerprint: &str,
) -> TrimbleConnectionStatus {
    let next = sent(status.clone(), fingerprint);
    status::finish(
        &status,
        next,
        &Outcome::new(reason, "earlier"),
        Some(1),
        &status::time(now()),
    )
}

pub fn cred(id: &str, client_id: &str, status: &str) -> Credential {
    Credential {
        id: id.to_string(),
        status: CredentialStatus::parse(status),
        raw_status: status.to_string(),
        created_time: None,
        scopes: vec![],
        client_id: Some(client_id.to_string()),
    }
}

/// A credential Leaf created `seconds` ago.
pub fn cred_created(id: &str, client_id: &str, status: &str, seconds: i64) -> Credential {
    Credential {
        created_time: Some(ago(seconds).to_string()),
        ..cred(id, client_id, status)
    }
}
