//! The Secret that hands the grower's Magic Link to a person: written, read and deleted only when
//! the TrimbleConnection owns it (its controller ownerReference), so that a `linkSecretName` that
//! names someone else's Secret never overwrites or deletes it.
//!
//! Keys: `link` (the bearer URL to give the grower), `expiresAt` (RFC 3339), `leafUserId`, and
//! `id` (Leaf's id of the link, which the operator needs to delete it; it is the last segment of
//! the URL, so it is as secret as the link).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};

use crate::crd::{FIELD_MANAGER, TrimbleConnection};
use crate::leaf::MagicLink;

/// Key of the link URL.
pub const LINK_KEY: &str = "link";
/// Key of the link's id.
pub const ID_KEY: &str = "id";
/// Key of the expiry.
pub const EXPIRES_AT_KEY: &str = "expiresAt";
/// Label on every link Secret (with the TrimbleConnection's name as value).
pub const LINK_LABEL: &str = "withleaf.io/magic-link-for";

/// Why the link Secret could not be written or deleted (never holds a link).
#[derive(Debug, thiserror::Error)]
pub enum LinkSecretError {
    #[error(
        "Secret {0:?} exists and is not owned by this TrimbleConnection: set reauthorization.linkSecretName to a \
         name no other Secret uses"
    )]
    NotOurs(String),
    #[error("the API server refused a change of Secret {name:?}: {error}")]
    Api { name: String, error: String },
}

/// Whether `secret` belongs to `tc` (its controller ownerReference names tc's uid).
pub fn owned_by(secret: &Secret, tc: &TrimbleConnection) -> bool {
    let Some(uid) = tc.uid() else {
        return false;
    };
    secret
        .owner_references()
        .iter()
        .any(|owner| owner.uid == uid && owner.controller == Some(true))
}

/// The Secret holding `link` for `tc`.
pub fn build(tc: &TrimbleConnection, name: &str, link: &MagicLink) -> Secret {
    let mut data = BTreeMap::new();
    let mut put = |key: &str, value: &str| {
        data.insert(key.to_string(), ByteString(value.as_bytes().to_vec()));
    };
    put(LINK_KEY, link.link.expose_secret());
    put(ID_KEY, link.id.expose_secret());
    put("leafUserId", &tc.spec.leaf_user_id);
    if let Some(expires_at) = link.expires_at {
        put(EXPIRES_AT_KEY, &expires_at.to_string());
    }
    let owner = OwnerReference {
        api_version: TrimbleConnection::api_version(&()).to_string(),
        kind: TrimbleConnection::kind(&()).to_string(),
        name: tc.name_any(),
        uid: tc.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: tc.namespace(),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "leaf-operator".to_string(),
                ),
                (LINK_LABEL.to_string(), tc.name_any()),
            ])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Writes `link` into the Secret `name`, unless a Secret of that name belongs to someone else.
pub async fn write(
    api: &Api<Secret>,
    tc: &TrimbleConnection,
    name: &str,
    link: &MagicLink,
) -> Result<(), LinkSecretError> {
    let api_error = |error: kube::Error| LinkSecretError::Api {
        name: name.to_string(),
        error: error.to_string(),
    };
    if let Some(existing) = api.get_opt(name).await.map_err(api_error)?
        && !owned_by(&existing, tc)
    {
        return Err(LinkSecretError::NotOurs(name.to_string()));
    }
    let secret = build(tc, name, link);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&secret))
        .await
        .map_err(api_error)?;
    Ok(())
}

/// Deletes the Secret `name` when `tc` owns it; a missing one is fine.
pub async fn delete(
    api: &Api<Secret>,
    tc: &TrimbleConnection,
    name: &str,
) -> Result<(), LinkSecretError> {
    let api_error = |error: kube::Error| LinkSecretError::Api {
        name: name.to_string(),
        error: error.to_string(),
    };
    match api.get_opt(name).await.map_err(api_error)? {
        Some(existing) if owned_by(&existing, tc) => {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
                Err(error) => Err(api_error(error)),
            }
        }
        // Someone else's Secret of that name: not ours to delete.
        Some(_) | None => Ok(()),
    }
}

/// The link id in the Secret `name`, when tc owns it and it has one.
pub async fn read_id(
    api: &Api<Secret>,
    tc: &TrimbleConnection,
    name: &str,
) -> Result<Option<SecretString>, kube::Error> {
    let Some(secret) = api.get_opt(name).await? else {
        return Ok(None);
    };
    if !owned_by(&secret, tc) {
        return Ok(None);
    }
    Ok(secret
        .data
        .as_ref()
        .and_then(|data| data.get(ID_KEY))
        .and_then(|value| String::from_utf8(value.0.clone()).ok())
        .filter(|id| !id.is_empty())
        .map(SecretString::from))
}
