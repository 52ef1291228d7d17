//! The finalizer `withleaf.io/trimble-credential`: which phase an object is in, and adding and
//! removing our entry.
//!
//! The same contract as kube-runtime's `finalizer` helper (add it before the first apply; clean
//! up, then remove it, when the object is being deleted; JSON patches with a `test` so that
//! another controller's concurrent change makes ours fail and retry, never clobber theirs), kept
//! here so that a reconcile returns what it ended in: the helper passes only an `Action` through.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::crd::{FINALIZER, TrimbleConnection};

/// What a reconcile of an object does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not being deleted and our finalizer is missing: add it (its watch event brings the apply).
    AddFinalizer,
    /// Not being deleted, finalizer in place.
    Apply,
    /// Being deleted with our finalizer at this index: clean up, then remove it.
    Cleanup { index: usize },
    /// Being deleted without our finalizer: nothing of ours is left.
    Gone,
}

/// The phase of `tc`.
pub fn phase(tc: &TrimbleConnection) -> Phase {
    let index = tc.finalizers().iter().position(|f| f == FINALIZER);
    match (tc.meta().deletion_timestamp.is_some(), index) {
        (false, None) => Phase::AddFinalizer,
        (false, Some(_)) => Phase::Apply,
        (true, Some(index)) => Phase::Cleanup { index },
        (true, None) => Phase::Gone,
    }
}

/// The JSON patch that adds our finalizer to `tc` (failing if the list changed meanwhile:
/// Kubernetes does not deduplicate finalizers).
pub fn add_patch(tc: &TrimbleConnection) -> serde_json::Value {
    let current = tc.finalizers();
    if current.is_empty() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ])
    }
}

/// The JSON patch that removes our finalizer at `index` (failing if another one moved there).
pub fn remove_patch(index: usize) -> serde_json::Value {
    let path = format!("/metadata/finalizers/{index}");
    json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ])
}

/// Sends a finalizer patch.
pub async fn patch(
    api: &Api<TrimbleConnection>,
    tc: &TrimbleConnection,
    patch: serde_json::Value,
) -> Result<(), kube::Error> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(
        &tc.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(finalizers: &[&str], deleting: bool) -> TrimbleConnection {
        let mut tc: TrimbleConnection = serde_json::from_value(json!({
            "apiVersion": "withleaf.io/v1alpha1", "kind": "TrimbleConnection",
            "metadata": {"name": "farm", "namespace": "ns"},
            "spec": {"leafUserId": "u", "credentialsSecretRef": {"name": "s"}},
        }))
        .expect("tc");
        tc.metadata.finalizers =
            (!finalizers.is_empty()).then(|| finalizers.iter().map(|f| f.to_string()).collect());
        if deleting {
            tc.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
            );
        }
        tc
    }

    #[test]
    fn the_phase_follows_the_deletion_and_our_entry() {
        assert_eq!(phase(&tc(&[], false)), Phase::AddFinalizer);
        assert_eq!(phase(&tc(&["other"], false)), Phase::AddFinalizer);
        assert_eq!(phase(&tc(&[FINALIZER], false)), Phase::Apply);
        assert_eq!(
            phase(&tc(&["other", FINALIZER], true)),
            Phase::Cleanup { index: 1 }
        );
        assert_eq!(phase(&tc(&["other"], true)), Phase::Gone);
    }

    #[test]
    fn patches_test_before_they_change_anything() {
        let empty = add_patch(&tc(&[], false));
        assert_eq!(empty[0]["op"], "test");
        assert_eq!(empty[0]["value"], serde_json::Value::Null);
        assert_eq!(empty[1]["value"], json!([FINALIZER]));
        let other = add_patch(&tc(&["other"], false));
        assert_eq!(other[0]["value"], json!(["other"]));
        assert_eq!(other[1]["path"], "/metadata/finalizers/-");
        let remove = remove_patch(2);
        assert_eq!(remove[0]["path"], "/metadata/finalizers/2");
        assert_eq!(remove[1]["op"], "remove");
        for patch in [empty, other, remove] {
            serde_json::from_value::<json_patch::Patch>(patch).expect("a valid JSON patch");
        }
    }
}
