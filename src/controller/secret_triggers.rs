//! Which TrimbleConnections a Secret event concerns, without a store scan per listed Secret.
//!
//! Secrets are watched as metadata only. A Secret changed or deleted after the listing is mapped by
//! one scan of the store (as kube-runtime's `watches` mapper would). A listing (every start, and
//! every relist after a watch gap) is different: mapping each of its N Secrets by a scan cost
//! N × N comparisons and N copies of the store's list (4·10⁸ at 20,000). Here the listed Secrets are
//! only remembered (a 64-bit hash of namespace and name each) and mapped together when the listing
//! is done, in one scan: N + N. A hash collision triggers a reconcile that was not needed, which
//! finds nothing to do; it can never skip one.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::crd::TrimbleConnection;

/// A Secret's identity within the watch: its namespace and name, hashed.
fn secret_key(namespace: Option<&str>, name: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    namespace.hash(&mut hasher);
    name.hash(&mut hasher);
    hasher.finish()
}

/// The keys of the Secrets `tc` reads: its credentials and, if set, its Leaf account.
fn referenced_keys(tc: &TrimbleConnection) -> impl Iterator<Item = u64> + '_ {
    let namespace = tc.metadata.namespace.as_deref();
    tc.spec
        .credentials_secret_ref
        .as_ref()
        .map(|r| &r.name)
        .into_iter()
        .chain(tc.spec.leaf_auth_secret_ref.as_ref().map(|r| &r.name))
        .map(move |name| secret_key(namespace, name))
}

/// Maps Secret watch events to the TrimbleConnections to reconcile; holds only the keys of a
/// listing in progress.
#[derive(Debug, Default)]
pub struct SecretMapper {
    listing: Option<HashSet<u64>>,
}

impl SecretMapper {
    /// The objects among `tcs` (the store's content now) that `event` concerns.
    pub fn on_event(
        &mut self,
        event: &watcher::Event<PartialObjectMeta<Secret>>,
        tcs: impl FnOnce() -> Vec<Arc<TrimbleConnection>>,
    ) -> Vec<ObjectRef<TrimbleConnection>> {
        let wanted: HashSet<u64> = match event {
            watcher::Event::Init => {
                self.listing = Some(HashSet::new());
                return Vec::new();
            }
            watcher::Event::InitApply(secret) => {
                let key = secret_key(secret.namespace().as_deref(), &secret.name_any());
                self.listing.get_or_insert_default().insert(key);
                return Vec::new();
            }
            watcher::Event::InitDone => self.listing.take().unwrap_or_default(),
            watcher::Event::Apply(secret) | watcher::Event::Delete(secret) => {
                HashSet::from([secret_key(
                    secret.namespace().as_deref(),
                    &secret.name_any(),
                )])
            }
        };
        if wanted.is_empty() {
            return Vec::new();
        }
        tcs()
            .iter()
            .filter(|tc| referenced_keys(tc).any(|key| wanted.contains(&key)))
            .map(|tc| ObjectRef::from_obj(tc.as_ref()))
            .collect()
    }
}

/// The reconcile triggers of a Secret watch, for `Controller::reconcile_on`. Watch errors are
/// retried by the watcher's backoff and logged here (metadata only: nothing secret in them).
pub fn secret_triggers(
    secrets: impl Stream<Item = Result<watcher::Event<PartialObjectMeta<Secret>>, watcher::Error>>
    + Send
    + 'static,
    store: Store<TrimbleConnection>,
) -> impl Stream<Item = ObjectRef<TrimbleConnection>> + Send + 'static {
    let mut mapper = SecretMapper::default();
    secrets.flat_map(move |event| {
        let objects = match event {
            Ok(event) => mapper.on_event(&event, || store.state()),
            Err(error) => {
                tracing::warn!(%error, "watching Secrets failed; retrying");
                Vec::new()
            }
        };
        futures::stream::iter(objects)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TrimbleConnectionSpec;

    fn tc(
        namespace: &str,
        name: &str,
        credentials: &str,
        account: Option<&str>,
    ) -> Arc<TrimbleConnection> {
        let mut spec = serde_json::json!({
            "leafUserId": "u", "credentialsSecretRef": {"name": credentials}
        });
        if let Some(account) = account {
            spec["leafAuthSecretRef"] = serde_json::json!({"name": account});
        }
        let spec: TrimbleConnectionSpec = serde_json::from_value(spec).expect("spec");
        let mut tc = TrimbleConnection::new(name, spec);
        tc.metadata.namespace = Some(namespace.to_string());
        Arc::new(tc)
    }

    fn secret(namespace: &str, name: &str) -> PartialObjectMeta<Secret> {
        let mut secret = PartialObjectMeta::<Secret>::default();
        secret.metadata.name = Some(name.to_string());
        secret.metadata.namespace = Some(namespace.to_string());
        secret
    }

    fn store() -> Vec<Arc<TrimbleConnection>> {
        vec![
            tc("a", "one", "creds-1", None),
            tc("a", "two", "creds-2", Some("account")),
            tc("a", "three", "creds-3", Some("account")),
            tc("b", "one", "creds-1", None),
        ]
    }

    fn names(objects: Vec<ObjectRef<TrimbleConnection>>) -> Vec<String> {
        let mut names: Vec<_> = objects
            .into_iter()
            .map(|o| format!("{}/{}", o.namespace.unwrap_or_default(), o.name))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_change_after_the_listing_maps_to_every_reader_of_that_secret_in_its_namespace() {
        let mut mapper = SecretMapper::default();
        let changed = watcher::Event::Apply(secret("a", "creds-1"));
        assert_eq!(names(mapper.on_event(&changed, store)), vec!["a/one"]);
        let account = watcher::Event::Delete(secret("a", "account"));
        assert_eq!(
            names(mapper.on_event(&account, store)),
            vec!["a/three", "a/two"]
        );
        let unrelated = watcher::Event::Apply(secret("a", "tls"));
        assert!(mapper.on_event(&unrelated, store).is_empty());
    }

    #[test]
    fn a_listing_maps_once_when_done_with_one_look_at_the_store() {
        let mut mapper = SecretMapper::default();
        let mut looks = 0;
        let mut store_looked_at = || {
            looks += 1;
            store()
        };
        assert!(
            mapper
                .on_event(&watcher::Event::Init, &mut store_looked_at)
                .is_empty()
        );
        for (namespace, name) in [
            ("a", "creds-1"),
            ("b", "creds-1"),
            ("a", "account"),
            ("a", "tls"),
        ] {
            let listed = watcher::Event::InitApply(secret(namespace, name));
            assert!(
                mapper.on_event(&listed, &mut store_looked_at).is_empty(),
                "nothing is mapped while the listing runs"
            );
        }
        let done = mapper.on_event(&watcher::Event::InitDone, &mut store_looked_at);
        assert_eq!(names(done), vec!["a/one", "a/three", "a/two", "b/one"]);
        assert_eq!(looks, 1, "one scan of the store for the whole listing");
        // The next listing starts empty: what the previous one saw is not mapped again.
        mapper.on_event(&watcher::Event::Init, store);
        mapper.on_event(&watcher::Event::InitApply(secret("b", "creds-1")), store);
        assert_eq!(
            names(mapper.on_event(&watcher::Event::InitDone, store)),
            vec!["b/one"]
        );
    }

    #[test]
    fn an_empty_listing_does_not_look_at_the_store() {
        let mut mapper = SecretMapper::default();
        mapper.on_event(&watcher::Event::Init, store);
        let done = mapper.on_event(&watcher::Event::InitDone, || {
            panic!("an empty listing needs no scan")
        });
        assert!(done.is_empty());
    }
}
