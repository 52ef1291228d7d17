//! Two TrimbleConnections that must not both act: the older one wins, the newer one waits.
//!
//! - The same Leaf user: Leaf keeps one Trimble credential per user, so two resources for one user
//!   would delete and re-create each other's credential forever.
//! - The same refresh token (one Secret key) for two Leaf users: a Trimble refresh token works
//!   once, so the second POST of it would be refused, or worse, spend what the first one needs.
//!
//! The order is (creationTimestamp, namespace, name), which every replica computes the same way
//! from its store; the loser sends nothing to Leaf. For a shared Secret two things come before
//! age: a resource that loses its Leaf user sends nothing, so it holds no Secret either; and one
//! that already has a credential in Leaf keeps the Secret, so that a newer one whose Leaf-user
//! conflict ends later does not take over a token that was already used.

use kube::ResourceExt;

use crate::controller::decide::ConflictFact;
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

/// The `namespace/name` of the resource for another Leaf user that holds the Secret key `tc`'s
/// refresh token comes from: among those not losing their own Leaf user, one with a credential
/// before one without, then the older.
pub fn secret_owner_over<'a>(
    tc: &TrimbleConnection,
    others: impl IntoIterator<Item = &'a TrimbleConnection> + Clone,
) -> Option<String> {
    let rank = |tc: &TrimbleConnection| {
        let has_credential = tc
            .status
            .as_ref()
            .is_some_and(|s| s.credential_id.is_some());
        (!has_credential, key(tc))
    };
    let mine = rank(tc);
    // A resource connected by the grower's Magic Link reads no refresh token: it shares nothing.
    let source = |other: &TrimbleConnection| {
        other.spec.credentials_secret_ref.as_ref().map(|secret| {
            (
                other.namespace(),
                secret.name.clone(),
                secret.refresh_token_key.clone(),
            )
        })
    };
    let my_source = source(tc);
    my_source.as_ref()?;
    others
        .clone()
        .into_iter()
        .filter(|other| other.spec.leaf_user_id != tc.spec.leaf_user_id)
        .filter(|other| other.uid() != tc.uid() || other.uid().is_none())
        .filter(|other| source(other) == my_source)
        .filter(|other| winner_over(other, others.clone()).is_none())
        .map(|other| (rank(other), other))
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

/// Both checks over `others` (every object of every store): a lost Leaf user first (it also
/// decides what deletion may touch), then a shared refresh token.
pub fn check<'a>(
    tc: &TrimbleConnection,
    others: impl IntoIterator<Item = &'a TrimbleConnection> + Clone,
) -> ConflictFact {
    if let Some(winner) = winner_over(tc, others.clone()) {
        return ConflictFact::LosesTo(winner);
    }
    match secret_owner_over(tc, others) {
        Some(older) => ConflictFact::SecretSharedWith(older),
        None => ConflictFact::Clear,
    }
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

    fn with_secret(mut tc: TrimbleConnection, secret: &str, key: &str) -> TrimbleConnection {
        let reference = tc.spec.credentials_secret_ref.as_mut().expect("a Secret");
        reference.name = secret.to_string();
        reference.refresh_token_key = key.to_string();
        tc
    }

    #[test]
    fn a_shared_refresh_token_is_refused_to_the_younger_resource_only() {
        let old = tc("a", "old", "u1", "2026-01-01T00:00:00Z");
        let young = tc("a", "young", "u2", "2026-01-02T00:00:00Z");
        let all = [old.clone(), young.clone()];
        assert_eq!(
            check(&young, all.iter()),
            ConflictFact::SecretSharedWith("a/old".to_string())
        );
        assert_eq!(check(&old, all.iter()), ConflictFact::Clear);
        // Another key of the same Secret, another Secret, or another namespace: no conflict.
        for other in [
            with_secret(young.clone(), "s", "otherToken"),
            with_secret(young.clone(), "other-secret", "refreshToken"),
        ] {
            assert_eq!(
                check(&other, [old.clone(), other.clone()].iter()),
                ConflictFact::Clear
            );
        }
        let elsewhere = tc("b", "young", "u2", "2026-01-02T00:00:00Z");
        assert_eq!(
            check(&elsewhere, [old.clone(), elsewhere.clone()].iter()),
            ConflictFact::Clear
        );
        // The same Leaf user is the other conflict, and it comes first.
        let same_user = tc("a", "twin", "u1", "2026-01-03T00:00:00Z");
        assert_eq!(
            check(&same_user, [old, same_user.clone()].iter()),
            ConflictFact::LosesTo("a/old".to_string())
        );
    }

    #[test]
    fn a_resource_that_loses_its_leaf_user_holds_no_secret_and_a_credential_keeps_it() {
        let winner = tc("a", "winner", "u1", "2026-01-01T00:00:00Z");
        let dup = tc("b", "dup", "u1", "2026-01-02T00:00:00Z");
        let own = tc("b", "own", "u2", "2026-01-03T00:00:00Z");
        let all = [winner.clone(), dup.clone(), own.clone()];
        // dup sends nothing (it loses u1), so own may use the Secret they share.
        assert_eq!(check(&own, all.iter()), ConflictFact::Clear);
        assert_eq!(
            check(&dup, all.iter()),
            ConflictFact::LosesTo("a/winner".to_string())
        );
        // The winner goes away after own made its credential: own keeps the Secret.
        let mut own_with_credential = own.clone();
        own_with_credential.status = Some(crate::crd::TrimbleConnectionStatus {
            credential_id: Some("c1".to_string()),
            ..Default::default()
        });
        let after = [dup.clone(), own_with_credential.clone()];
        assert_eq!(
            check(&dup, after.iter()),
            ConflictFact::SecretSharedWith("b/own".to_string())
        );
        assert_eq!(
            check(&own_with_credential, after.iter()),
            ConflictFact::Clear
        );
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
