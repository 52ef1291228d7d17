//! The index `status.credentialId` -> TrimbleConnection, fed by the controller's watch stream.
//!
//! Leaf's credentials alerts name only the credential id (no Leaf user id), so the alerts
//! receiver needs this map. It is maintained from the same watch events that feed the store
//! (an `inspect` on the stream), so a lookup costs a hash probe instead of a scan of 20,000
//! objects per alert. With one controller per namespace, each scope relists on its own: an
//! `Init`..`InitDone` cycle only drops entries of its own scope.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::crd::TrimbleConnection;

/// One object the index points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indexed {
    pub uid: String,
    pub object: ObjectRef<TrimbleConnection>,
}

/// Memory: about one entry per managed object (20,000 at the issue-12 target), so each entry is
/// kept small: the object reference without its `extra` (kube-runtime matches references by kind,
/// namespace and name only), a one-element list, and no namespace string of its own.
#[derive(Debug, Default)]
struct Inner {
    /// credentialId -> the objects whose status names it (normally one).
    by_credential: HashMap<String, Vec<Indexed>>,
    /// uid -> credentialId, to move or drop an object's entry.
    by_uid: HashMap<String, String>,
    /// Per watch scope (namespace, or "" for all) during a relist: the uids seen so far.
    relisting: HashMap<String, HashSet<String>>,
}

/// `status.credentialId` -> TrimbleConnection for every object the controller watches.
#[derive(Debug, Default)]
pub struct CredentialIndex {
    inner: RwLock<Inner>,
    synced: AtomicBool,
}

impl CredentialIndex {
    /// Applies one watch event of the scope `scope` (`None`: all namespaces).
    pub fn observe(&self, scope: Option<&str>, event: &watcher::Event<TrimbleConnection>) {
        let scope_key = scope.unwrap_or("").to_string();
        let mut inner = self.inner.write().expect("index lock");
        match event {
            watcher::Event::Apply(tc) => inner.upsert(tc),
            watcher::Event::Delete(tc) => inner.remove(&tc.uid().unwrap_or_default()),
            watcher::Event::Init => {
                inner.relisting.insert(scope_key, HashSet::new());
            }
            watcher::Event::InitApply(tc) => {
                inner.upsert(tc);
                if let (Some(seen), Some(uid)) = (inner.relisting.get_mut(&scope_key), tc.uid()) {
                    seen.insert(uid);
                }
            }
            watcher::Event::InitDone => {
                // Whatever this scope held before the relist and did not list again is gone.
                let Some(seen) = inner.relisting.remove(&scope_key) else {
                    return;
                };
                let gone: Vec<String> = inner
                    .by_uid
                    .iter()
                    .filter(|(uid, id)| {
                        scope.is_none_or(|s| inner.namespace_of(uid, id).as_deref() == Some(s))
                    })
                    .filter(|(uid, _)| !seen.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in gone {
                    inner.remove(&uid);
                }
            }
        }
    }

    /// The objects whose `status.credentialId` is `credential_id`.
    pub fn lookup(&self, credential_id: &str) -> Vec<Indexed> {
        self.inner
            .read()
            .expect("index lock")
            .by_credential
            .get(credential_id)
            .cloned()
            .unwrap_or_default()
    }

    /// How many objects have a credential id.
    pub fn len(&self) -> usize {
        self.inner.read().expect("index lock").by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks whether the index reflects a complete listing (every watch scope synced). Until it
    /// does, "not in the index" does not mean "not ours", and the receiver must say so.
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Forgets everything (the controller stopped: this replica no longer watches).
    pub fn clear(&self) {
        self.set_synced(false);
        *self.inner.write().expect("index lock") = Inner::default();
    }
}

impl Inner {
    fn upsert(&mut self, tc: &TrimbleConnection) {
        let Some(uid) = tc.uid() else { return };
        let credential = tc
            .status
            .as_ref()
            .and_then(|s| s.credential_id.clone())
            .filter(|id| !id.is_empty());
        match credential {
            None => self.remove(&uid),
            Some(id) => {
                if self.by_uid.get(&uid).is_some_and(|known| *known == id) {
                    return;
                }
                self.remove(&uid);
                let mut object = ObjectRef::<TrimbleConnection>::new(&tc.name_any());
                if let Some(namespace) = tc.namespace() {
                    object = object.within(&namespace);
                }
                let entries = self.by_credential.entry(id.clone()).or_default();
                entries.reserve_exact(1);
                entries.push(Indexed {
                    uid: uid.clone(),
                    object,
                });
                self.by_uid.insert(uid, id);
            }
        }
    }

    /// The namespace of the object `uid`, indexed under credential `id`.
    fn namespace_of(&self, uid: &str, id: &str) -> Option<String> {
        self.by_credential
            .get(id)?
            .iter()
            .find(|e| e.uid == uid)
            .and_then(|e| e.object.namespace.clone())
    }

    fn remove(&mut self, uid: &str) {
        let Some(id) = self.by_uid.remove(uid) else {
            return;
        };
        if let Some(entries) = self.by_credential.get_mut(&id) {
            entries.retain(|e| e.uid != uid);
            if entries.is_empty() {
                self.by_credential.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{TrimbleConnectionSpec, TrimbleConnectionStatus};

    fn tc(ns: &str, name: &str, credential: Option<&str>) -> TrimbleConnection {
        let spec: TrimbleConnectionSpec = serde_json::from_value(serde_json::json!({
            "leafUserId": "u", "credentialsSecretRef": {"name": "s"}
        }))
        .expect("spec");
        let mut tc = TrimbleConnection::new(name, spec);
        tc.metadata.namespace = Some(ns.to_string());
        tc.metadata.uid = Some(format!("{ns}-{name}"));
        tc.status = Some(TrimbleConnectionStatus {
            credential_id: credential.map(str::to_string),
            ..TrimbleConnectionStatus::default()
        });
        tc
    }

    fn names(index: &CredentialIndex, id: &str) -> Vec<String> {
        index
            .lookup(id)
            .into_iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e.object.namespace.unwrap_or_default(),
                    e.object.name
                )
            })
            .collect()
    }

    #[test]
    fn follows_applies_rotations_and_deletes() {
        let index = CredentialIndex::default();
        index.observe(None, &watcher::Event::Apply(tc("a", "x", None)));
        assert!(index.is_empty(), "no credential yet, nothing to index");
        index.observe(None, &watcher::Event::Apply(tc("a", "x", Some("c1"))));
        assert_eq!(names(&index, "c1"), vec!["a/x"]);
        // A rotation gives the object a new credential id: the old one no longer maps to it.
        index.observe(None, &watcher::Event::Apply(tc("a", "x", Some("c2"))));
        assert!(index.lookup("c1").is_empty());
        assert_eq!(names(&index, "c2"), vec!["a/x"]);
        index.observe(None, &watcher::Event::Delete(tc("a", "x", Some("c2"))));
        assert!(index.lookup("c2").is_empty());
        assert!(index.is_empty());
    }

    #[test]
    fn a_relist_drops_what_its_scope_no_longer_lists_and_nothing_else() {
        let index = CredentialIndex::default();
        index.observe(
            Some("a"),
            &watcher::Event::Apply(tc("a", "kept", Some("c1"))),
        );
        index.observe(
            Some("a"),
            &watcher::Event::Apply(tc("a", "gone", Some("c2"))),
        );
        index.observe(
            Some("b"),
            &watcher::Event::Apply(tc("b", "other", Some("c3"))),
        );
        index.observe(Some("a"), &watcher::Event::Init);
        index.observe(
            Some("a"),
            &watcher::Event::InitApply(tc("a", "kept", Some("c1"))),
        );
        assert_eq!(
            names(&index, "c2"),
            vec!["a/gone"],
            "kept until the relist is complete"
        );
        index.observe(Some("a"), &watcher::Event::InitDone);
        assert_eq!(names(&index, "c1"), vec!["a/kept"]);
        assert!(index.lookup("c2").is_empty(), "not listed again: gone");
        assert_eq!(
            names(&index, "c3"),
            vec!["b/other"],
            "another scope's relist does not touch it"
        );
    }

    #[test]
    fn two_objects_naming_one_credential_are_both_found_and_clear_forgets_all() {
        let index = CredentialIndex::default();
        index.observe(None, &watcher::Event::Apply(tc("a", "x", Some("c1"))));
        index.observe(None, &watcher::Event::Apply(tc("a", "y", Some("c1"))));
        let mut found = names(&index, "c1");
        found.sort();
        assert_eq!(found, vec!["a/x", "a/y"]);
        index.set_synced(true);
        index.clear();
        assert!(!index.is_synced());
        assert!(index.lookup("c1").is_empty());
    }
}
