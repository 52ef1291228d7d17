//! Shared fixtures of the Leaf client tests (`leaf_client`, `leaf_client_logs`): the test user,
//! the default account and credential values, and one-line calls for that user and account.

use leaf_operator::leaf::{
    Credential, CredentialEvent, Deleted, LeafAccount, LeafClient, LeafError, SendGuard, Trimble,
    TrimbleCreateRequest,
};

/// The Leaf user every test works on (registered in the stand-in).
pub const USER: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";
/// Password of the stand-in account `operator`.
pub const PASSWORD: &str = "operator-password-Zq81";
pub const CLIENT_SECRET: &str = "trimble-client-secret-9kq2";
pub const REFRESH_TOKEN: &str = "trimble-refresh-token-x81n";

/// The default account: `operator` with [`PASSWORD`].
pub fn account() -> LeafAccount {
    LeafAccount::password("operator", PASSWORD)
}

/// A valid create request carrying [`CLIENT_SECRET`] and [`REFRESH_TOKEN`].
pub fn request() -> TrimbleCreateRequest {
    TrimbleCreateRequest {
        client_id: "trimble-client-id".into(),
        client_secret: CLIENT_SECRET.into(),
        refresh_token: REFRESH_TOKEN.into(),
    }
}

fn always() -> bool {
    true
}

/// A write's guard that never refuses: a deadline an hour away and a fence that always holds.
pub fn open_guard() -> SendGuard<'static> {
    SendGuard {
        deadline: std::time::Instant::now() + std::time::Duration::from_secs(3600),
        may_send: &always,
    }
}

/// GET of [`USER`]'s Trimble credential with the default account.
pub async fn get_user_credential(client: &LeafClient) -> Result<Option<Credential>, LeafError> {
    client.get_credential::<Trimble>(&account(), USER).await
}

/// POST of [`request`] for [`USER`] with the default account.
pub async fn create_user_credential(client: &LeafClient) -> Result<Credential, LeafError> {
    client
        .create_credential::<Trimble>(&account(), USER, &request(), &open_guard())
        .await
}

/// The events of [`USER`]'s Trimble credential, with the default account.
pub async fn user_credential_events(
    client: &LeafClient,
) -> Result<Vec<CredentialEvent>, LeafError> {
    client.credential_events::<Trimble>(&account(), USER).await
}

/// DELETE of [`USER`]'s Trimble credential with the default account.
pub async fn delete_user_credential(client: &LeafClient) -> Result<Deleted, LeafError> {
    client
        .delete_credential::<Trimble>(&account(), USER, &open_guard())
        .await
}

/// Fails naming the secret when any of them appears in `text` (or when one is empty, which would
/// make the check vacuous).
#[track_caller]
pub fn assert_no_secrets(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(
            !text.contains(secret),
            "secret {secret:?} leaked into:\n{text}"
        );
    }
}
