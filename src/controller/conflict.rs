//! Two TrimbleConnections naming the same Leaf user: the older one wins, the newer one waits.
//!
//! Leaf keeps one Trimble credential per user, so two resources for one user would delete and
//! re-create each other's credential forever. The order is (creationTimestamp, namespace, name),
//! which every replica computes the same way from its store; the loser touches nothing in Leaf.

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::crd::TrimbleConnection;

type Key = (Option<jiff::Timestamp>, String, String);

fn key(tc: &TrimbleConnection) -> Key {
    (
        tc.metadata.creation_timestamp.as_ref().map(|t| t.0),
        tc.namespace().unwrap_or_default(),
        tc.name_any(),
    )
}

/// The `namespace/name` of the resource that owns `tc`'s Leaf user, when that is not `tc`.
pub fn winner_over<'a>(
    tc: &TrimbleConnection,
    others: impl IntoIterator<Item = &'a TrimbleConnection>,
) -> Option<String> {
    let mine = key(tc);
    others
        .into_iter()
        .filter(|other| other.spec.leaf_user_id == tc.spec.leaf_user_id)
        .filter(|other| other.uid() != tc.uid() || other.uid().is_none())
        .map(|other| (key(other), other))
        .filter(|(other_key, _)| *other_key < mine)
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, other)| {
            format!(
                "{}/{}",
                other.namespace().unwrap_or_default(),
                other.name_any()
            )
        })
}

/// Looks for an older resource naming the same Leaf user in any of the controller's stores.
pub fn find_winner(tc: &TrimbleConnection, stores: &[Store<TrimbleConnection>]) -> Option<String> {
    let all: Vec<_> = stores.iter().flat_map(|store| store.state()).collect();
    winner_over(tc, all.iter().map(|arc| arc.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TrimbleConnectionSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn tc(ns: &str, name: &str, user: &str, created: &str) -> TrimbleConnection {
        let spec: TrimbleConnectionSpec = serde_json::from_value(serde_json::json!({
            "leafUserId": user, "credentialsSecretRef": {"name": "s"}
        }))
        .expect("spec");
        let mut tc = TrimbleConnection::new(name, spec);
        tc.metadata.namespace = Some(ns.to_string());
        tc.metadata.uid = Some(format!("{ns}-{name}"));
        tc.metadata.creation_timestamp = Some(Time(created.parse().expect("time")));
        tc
    }

    #[test]
    fn the_newer_resource_loses_and_ties_break_by_namespace_then_name() {
        let old = tc("b", "old", "u1", "2026-01-01T00:00:00Z");
        let new = tc("a", "new", "u1", "2026-01-02T00:00:00Z");
        let other_user = tc("a", "x", "u2", "2025-01-01T00:00:00Z");
        let all = [old.clone(), new.clone(), other_user];
        assert_eq!(winner_over(&new, &all), Some("b/old".to_string()));
        assert_eq!(winner_over(&old, &all), None);

        let twin_a = tc("a", "z", "u3", "2026-01-01T00:00:00Z");
        let twin_b = tc("b", "a", "u3", "2026-01-01T00:00:00Z");
        let twins = [twin_a.clone(), twin_b.clone()];
        assert_eq!(winner_over(&twin_b, &twins), Some("a/z".to_string()));
        assert_eq!(winner_over(&twin_a, &twins), None);
    }
}
