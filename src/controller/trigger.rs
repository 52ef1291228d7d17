//! Reconcile triggers from outside the watches: an alert asks kube-runtime to reconcile one
//! object now (`Controller::reconcile_on`).
//!
//! Each running controller (one per watch scope) subscribes with its scope; a trigger goes to the
//! controller whose scope holds the object. Duplicate triggers are harmless: kube-runtime's
//! scheduler merges pending requests for one object, and the channel is fed only by signed,
//! deduplicated alerts for objects in the index.

use std::sync::Mutex;

use futures::Stream;
use futures::channel::mpsc::{self, UnboundedSender};
use kube::runtime::reflector::ObjectRef;

use crate::crd::TrimbleConnection;

type Subscriber = (
    Option<String>,
    UnboundedSender<ObjectRef<TrimbleConnection>>,
);

/// The senders of the running controllers' `reconcile_on` streams.
#[derive(Debug, Default)]
pub struct Triggers {
    subscribers: Mutex<Vec<Subscriber>>,
}

impl Triggers {
    /// The stream of triggers for the controller watching `scope` (`None`: all namespaces).
    pub fn subscribe(
        &self,
        scope: Option<String>,
    ) -> impl Stream<Item = ObjectRef<TrimbleConnection>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers
            .lock()
            .expect("triggers lock")
            .push((scope, tx));
        rx
    }

    /// Asks the controller that watches `object` to reconcile it now. False when no running
    /// controller watches its namespace (a standby replica, or a stopped controller).
    pub fn fire(&self, object: &ObjectRef<TrimbleConnection>) -> bool {
        let mut subscribers = self.subscribers.lock().expect("triggers lock");
        subscribers.retain(|(_, tx)| !tx.is_closed());
        subscribers
            .iter()
            .filter(|(scope, _)| {
                scope
                    .as_deref()
                    .is_none_or(|ns| object.namespace.as_deref() == Some(ns))
            })
            .any(|(_, tx)| tx.unbounded_send(object.clone()).is_ok())
    }

    /// Drops every subscription (the controllers stopped).
    pub fn clear(&self) {
        self.subscribers.lock().expect("triggers lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_trigger_reaches_the_controller_of_its_namespace_only() {
        let triggers = Triggers::default();
        let mut a = Box::pin(triggers.subscribe(Some("a".to_string())));
        let mut b = Box::pin(triggers.subscribe(Some("b".to_string())));
        let object = ObjectRef::<TrimbleConnection>::new("farm").within("b");
        assert!(triggers.fire(&object));
        assert_eq!(b.next().await, Some(object.clone()));
        drop(b);
        assert!(
            !triggers.fire(&object),
            "nobody watches b any more: not delivered"
        );
        let all = ObjectRef::<TrimbleConnection>::new("x").within("a");
        assert!(triggers.fire(&all));
        assert_eq!(a.next().await, Some(all));
        triggers.clear();
        assert!(!triggers.fire(&object));
    }
}
