//! The JSON merge patch that makes the server's status exactly the one computed.

use crate::crd::TrimbleConnectionStatus;

/// A JSON merge patch that makes the status exactly `status`: absent fields are sent as `null`,
/// so they are removed whoever wrote them (a server-side apply would keep fields another field
/// manager, e.g. `kubectl edit --subresource=status`, had set).
pub(super) fn status_patch(status: &TrimbleConnectionStatus) -> serde_json::Value {
    const FIELDS: [&str; 12] = [
        "observedGeneration",
        "conditions",
        "credentialId",
        "credentialStatus",
        "scopes",
        "leafCreatedTime",
        "secretFingerprint",
        "adoptedSecretFingerprint",
        "sentRefreshTokens",
        "pendingCreate",
        "lastHandledReconcileAt",
        "recentEvents",
    ];
    let mut value = serde_json::to_value(status).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = value.as_object_mut() {
        for field in FIELDS {
            object.entry(field).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_patch_removes_every_absent_field() {
        let status = TrimbleConnectionStatus {
            credential_id: Some("c1".to_string()),
            ..TrimbleConnectionStatus::default()
        };
        let patch = status_patch(&status);
        let fields = patch["status"].as_object().expect("status object");
        assert_eq!(fields["credentialId"], "c1");
        for absent in [
            "pendingCreate",
            "secretFingerprint",
            "conditions",
            "recentEvents",
        ] {
            assert!(
                fields[absent].is_null(),
                "{absent} must be sent as null: {patch}"
            );
        }
    }
}
