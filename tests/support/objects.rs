//! The Kubernetes objects tests create, in one line each, and the waits on them.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use leaf_operator::crd::TrimbleConnection;

use super::wait::wait_until;

/// A Secret with these string values.
pub fn secret(name: &str, values: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        string_data: Some(
            values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

/// The usual credentials Secret: clientId, clientSecret and refreshToken.
pub fn credentials(
    name: &str,
    client_id: &str,
    client_secret: &str,
    refresh_token: &str,
) -> Secret {
    secret(
        name,
        &[
            ("clientId", client_id),
            ("clientSecret", client_secret),
            ("refreshToken", refresh_token),
        ],
    )
}

/// A TrimbleConnection for `user` using Secret `secret`; `extra` is merged into its spec.
pub fn trimble_connection(
    name: &str,
    user: &str,
    secret: &str,
    extra: serde_json::Value,
) -> TrimbleConnection {
    let mut spec = serde_json::json!({
        "leafUserId": user,
        "credentialsSecretRef": {"name": secret},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "withleaf.io/v1alpha1",
        "kind": "TrimbleConnection",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a valid TrimbleConnection")
}

/// Creates `object`, retrying while the API server refuses (fault tests stop it); an object
/// that already exists counts as created.
pub async fn create_retrying<K>(api: &Api<K>, object: &K)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut attempt = 0;
    loop {
        match api.create(&PostParams::default(), object).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => return,
            Err(e) if attempt < 20 => {
                attempt += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("failed to create {object:?}: {e}"),
        }
    }
}

/// The Ready condition's (status, reason).
pub fn ready(tc: &TrimbleConnection) -> Option<(String, String)> {
    tc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Waits until exactly `count` TrimbleConnections exist behind `api` and all are Ready=True.
pub async fn wait_all_ready(api: &Api<TrimbleConnection>, count: usize, timeout: Duration) {
    wait_until(
        &format!("{count} TrimbleConnections to be Ready"),
        timeout,
        || async {
            let list = api
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let not_ready: Vec<String> = list
                .items
                .iter()
                .filter(|tc| ready(tc).is_none_or(|(status, _)| status != "True"))
                .map(|tc| {
                    format!(
                        "{}={:?}",
                        tc.metadata.name.as_deref().unwrap_or("?"),
                        ready(tc)
                    )
                })
                .collect();
            if list.items.len() == count && not_ready.is_empty() {
                Ok(())
            } else {
                let shown: Vec<&String> = not_ready.iter().take(5).collect();
                Err(format!(
                    "{} exist, {} not ready, e.g. {shown:?}",
                    list.items.len(),
                    not_ready.len()
                ))
            }
        },
    )
    .await;
}
