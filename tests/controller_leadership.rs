//! Leadership: a replica that cannot prove it holds the lease writes nothing more to Leaf. A
//! lost lease revokes the fence at once and aborts the work in flight (no draining), and the next
//! term resolves whatever was in doubt without sending anything twice. The leader (only) labels
//! its own Pod, which the alerts receiver's Service selects.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{Patch, PatchParams};
use support::operator::{Fixture, OperatorOptions};

const WAIT: Duration = Duration::from_secs(90);
const LEASE: &str = "leaf-operator";

async fn leader_fixture(prefix: &str) -> Fixture {
    let f = Fixture::start_with(prefix, Default::default(), |o: OperatorOptions| {
        o.leader_election("replica-a")
    })
    .await;
    f.operator
        .wait_for_log("became leader", Duration::from_secs(30))
        .await;
    f
}

/// Another identity takes the lease for an hour, as a new leader elsewhere would.
async fn steal_lease(f: &Fixture) {
    let leases: Api<Lease> = Api::namespaced(f.client.clone(), &f.namespace);
    let now = MicroTime(jiff::Timestamp::now());
    leases
        .patch(
            LEASE,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "holderIdentity": "replica-elsewhere",
                "leaseDurationSeconds": 3600,
                "acquireTime": now,
                "renewTime": now,
            }})),
        )
        .await
        .expect("steal the lease");
}

/// The other identity lets the lease go (expired long ago): the replica takes it again.
async fn give_lease_back(f: &Fixture) {
    let leases: Api<Lease> = Api::namespaced(f.client.clone(), &f.namespace);
    let long_ago = MicroTime("2020-01-01T00:00:00Z".parse().expect("time"));
    leases
        .patch(
            LEASE,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "leaseDurationSeconds": 1,
                "renewTime": long_ago,
            }})),
        )
        .await
        .expect("release the lease");
}

#[tokio::test]
async fn losing_leadership_during_a_slow_post_sends_nothing_more_and_the_next_term_resumes_it() {
    let f = leader_fixture("lead-post").await;
    let user = "user-lead-post";
    f.standin.hold("POST");
    f.create_farm_with_default_credentials(user).await;
    support::wait_until("the POST to reach Leaf", WAIT, || async {
        if f.standin.held() == 1 {
            Ok(())
        } else {
            Err(format!("{:?}", f.leaf_calls(user)))
        }
    })
    .await;

    steal_lease(&f).await;
    f.operator
        .wait_for_log("leadership is in doubt", Duration::from_secs(20))
        .await;
    // The POST that already reached Leaf completes there, with no one left to hear the answer.
    f.standin.release_held();
    support::wait_until("the held POST to be processed", WAIT, || async {
        f.standin
            .credential(user)
            .map(|_| ())
            .ok_or_else(|| format!("{:?}", f.leaf_calls(user)))
    })
    .await;
    let while_stolen = f.leaf_calls(user);

    give_lease_back(&f).await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let stored = f.standin.credential(user).expect("the credential");
    assert_eq!(tc.status.unwrap().credential_id, Some(stored.id));
    assert_eq!(
        f.count_calls(user, "POST"),
        1,
        "the next term recognised the POST's credential: {:?}",
        f.leaf_calls(user)
    );
    assert!(
        while_stolen
            .iter()
            .filter(|c| c.starts_with("POST"))
            .count()
            == 1,
        "{while_stolen:?}"
    );
    assert!(f.operator.log().matches("became leader").count() >= 2);
}

#[tokio::test]
async fn losing_leadership_during_a_rotation_stops_before_the_post_and_the_next_term_finishes_it() {
    let f = leader_fixture("lead-rotate").await;
    let user = "user-lead-rotate";
    f.create_farm_with_default_credentials(user).await;
    let before = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let old = before.status.unwrap().credential_id.unwrap();

    f.standin.hold("DELETE");
    f.put_credentials("creds", "client-a", "secret-a", "refresh-rotated")
        .await;
    support::wait_until("the rotation's DELETE to reach Leaf", WAIT, || async {
        if f.standin.held() == 1 {
            Ok(())
        } else {
            Err(format!("{:?}", f.leaf_calls(user)))
        }
    })
    .await;
    steal_lease(&f).await;
    f.operator
        .wait_for_log("leadership is in doubt", Duration::from_secs(20))
        .await;
    f.standin.release_held();
    support::wait_until("the held DELETE to be processed", WAIT, || async {
        match f.standin.credential(user) {
            None => Ok(()),
            Some(c) => Err(format!("still {}: {:?}", c.id, f.leaf_calls(user))),
        }
    })
    .await;
    // The work was aborted at the DELETE: nothing can send the POST while the lease is elsewhere.
    assert_eq!(f.count_calls(user, "POST"), 1, "{:?}", f.leaf_calls(user));

    give_lease_back(&f).await;
    f.wait_event("farm", "Rotated", WAIT).await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let stored = f.standin.credential(user).expect("the new credential");
    assert_ne!(stored.id, old);
    assert_eq!(stored.submitted_refresh_token, "refresh-rotated");
    assert_eq!(tc.status.unwrap().credential_id, Some(stored.id));
    let calls = f.leaf_calls(user);
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("DELETE")).count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("POST")).count(),
        2,
        "{calls:?}"
    );
}

/// The label values of one Pod as a watch sees them change (consecutive repeats folded).
fn watch_label(
    client: kube::Client,
    namespace: &str,
    pod: &str,
    key: &'static str,
) -> std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let shared = seen.clone();
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={pod}"));
    tokio::spawn(async move {
        let mut stream = watcher(pods, config).applied_objects().boxed();
        while let Some(Ok(pod)) = stream.next().await {
            let value = pod.metadata.labels.and_then(|l| l.get(key).cloned());
            let mut seen = shared.lock().unwrap();
            if seen.last() != Some(&value) {
                seen.push(value);
            }
        }
    });
    seen
}

#[tokio::test]
async fn the_leader_labels_its_own_pod_only_while_it_leads_and_clears_a_stale_label_first() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;
    const LABEL: &str = "withleaf.io/leader";
    let control_plane = support::control_plane().await;
    control_plane.install_crd().await;
    let namespace = control_plane.create_namespace("lead-label").await;
    let client = control_plane.client();
    // The Pod this replica runs as, still labelled by a container of it that died leading; and
    // the lease held elsewhere for a few more seconds, so the replica starts as a standby.
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "replica-a", "labels": {LABEL: "true", "app": "leaf-operator"}},
        "spec": {"containers": [{"name": "operator", "image": "leaf-operator"}]},
    }))
    .expect("a Pod");
    Api::<Pod>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &pod)
        .await
        .expect("create the Pod");
    let now = MicroTime(jiff::Timestamp::now());
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": LEASE},
        "spec": {"holderIdentity": "replica-elsewhere", "leaseDurationSeconds": 6,
                 "acquireTime": now, "renewTime": now},
    }))
    .expect("a Lease");
    Api::<Lease>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &lease)
        .await
        .expect("create the Lease");
    let seen = watch_label(client, &namespace, "replica-a", LABEL);
    support::wait_until("the watch to see the Pod", WAIT, || async {
        if seen.lock().unwrap().is_empty() {
            Err("nothing yet".to_string())
        } else {
            Ok(())
        }
    })
    .await;

    let f = Fixture::start_in(namespace, Default::default(), |o: OperatorOptions| {
        o.leader_election("replica-a")
            .env("LEADER_POD_LABEL", LABEL)
    })
    .await;
    let on = Some("true".to_string());
    let label_is = |expected: Vec<Option<String>>| {
        let seen = seen.clone();
        async move {
            support::wait_until("the label's history", WAIT, || async {
                let history = seen.lock().unwrap().clone();
                if history == expected {
                    Ok(())
                } else {
                    Err(format!("{history:?}"))
                }
            })
            .await
        }
    };
    // Cleared as a standby, set once it leads and its caches synced.
    label_is(vec![on.clone(), None, on.clone()]).await;
    assert!(f.operator.log().contains("became leader"));

    // Leadership lost: cleared; back: set again.
    steal_lease(&f).await;
    label_is(vec![on.clone(), None, on.clone(), None]).await;
    give_lease_back(&f).await;
    label_is(vec![on.clone(), None, on.clone(), None, on.clone()]).await;
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), &f.namespace);
    let labels = pods
        .get("replica-a")
        .await
        .expect("the Pod")
        .metadata
        .labels;
    assert_eq!(
        labels.and_then(|l| l.get("app").cloned()).as_deref(),
        Some("leaf-operator"),
        "other labels untouched"
    );
}
