//! The JSON merge patch that makes the server's status exactly the one computed.

use std::sync::LazyLock;

use crate::crd::TrimbleConnectionStatus;

/// Every field of the status, from its schema: a field added later is removed like the others,
/// with no list to keep in step (a forgotten one would stay on the server once set).
static STATUS_FIELDS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let schema =
        serde_json::to_value(schemars::schema_for!(TrimbleConnectionStatus)).unwrap_or_default();
    schema["properties"]
        .as_object()
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
});

/// A JSON merge patch that makes the status exactly `status`: absent fields are sent as `null`,
/// so they are removed whoever wrote them (a server-side apply would keep fields another field
/// manager, e.g. `kubectl edit --subresource=status`, had set).
pub fn status_patch(status: &TrimbleConnectionStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = value.as_object_mut() {
        for field in STATUS_FIELDS.iter() {
            object
                .entry(field.clone())
                .or_insert(serde_json::Value::Null);
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
            "pendingDelete",
            "lastCreate",
            "secretFingerprint",
            "conditions",
            "recentEvents",
            "lastHandledReconcileAt",
        ] {
            assert!(
                fields[absent].is_null(),
                "{absent} must be sent as null: {patch}"
            );
        }
    }

    #[test]
    fn every_field_of_a_full_status_is_in_the_patch_list() {
        // The list comes from the schema; a full status must name nothing outside it.
        let full = serde_json::json!({
            "observedGeneration": 1, "credentialId": "c", "pendingDelete": {
                "credentialId": "c", "startedAt": "2026-01-01T00:00:00Z",
                "sendBy": "2026-01-01T00:00:30Z"
            },
            "lastCreate": {"confirmedAt": "2026-01-01T00:00:00Z"}
        });
        let status: TrimbleConnectionStatus = serde_json::from_value(full).expect("status");
        let patch = status_patch(&status);
        let serialized = serde_json::to_value(&status).expect("json");
        for key in serialized.as_object().expect("object").keys() {
            assert!(STATUS_FIELDS.contains(key), "{key} missing from the list");
        }
        assert_eq!(patch["status"]["pendingDelete"]["credentialId"], "c");
    }
}
