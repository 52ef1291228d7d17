//! Policies and multi-object rules: adoption, conflicts between resources, deletion while Leaf
//! is down, suspend, and Leaf's credential events mirrored to the user.

mod support;

use std::time::Duration;

use support::operator::{Fixture, conditions};

const WAIT: Duration = Duration::from_secs(60);

fn ready_reason(tc: &leaf_operator::crd::TrimbleConnection) -> String {
    conditions(tc)
        .first()
        .map(|c| c.2.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn adopt_matching_adopts_an_existing_credential_with_the_same_client_id_without_posting() {
    let f = Fixture::start("adopt").await;
    let seeded = f.standin.seed_credential("user-adopt", "client-a");
    f.put_credentials("creds", "client-a", "secret-a", "refresh-a")
        .await;
    f.create_tc("farm", "user-adopt", "creds", serde_json::json!({}))
        .await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert_eq!(
        tc.status.clone().unwrap().credential_id.as_deref(),
        Some(seeded.id.as_str())
    );
    assert_eq!(
        f.leaf_calls("user-adopt"),
        vec!["GET 200", "GET events 200"]
    );
    let (kind, note) = f.wait_event("farm", "Adopted", WAIT).await;
    assert_eq!(kind, "Normal");
    assert!(note.contains(&seeded.id), "{note}");
}

#[tokio::test]
async fn adopt_matching_with_another_client_id_is_a_conflict_until_replace_is_chosen() {
    let f = Fixture::start("mismatch").await;
    let seeded = f.standin.seed_credential("user-mismatch", "client-other");
    f.put_credentials("creds", "client-a", "secret-a", "refresh-a")
        .await;
    f.create_tc("farm", "user-mismatch", "creds", serde_json::json!({}))
        .await;
    let tc = f.wait_reason("farm", "Conflict", WAIT).await;
    assert_eq!(
        conditions(&tc),
        vec![
            (
                "Ready".to_string(),
                "False".to_string(),
                "Conflict".to_string()
            ),
            (
                "Stalled".to_string(),
                "True".to_string(),
                "Conflict".to_string()
            ),
        ]
    );
    assert!(tc.status.clone().unwrap().credential_id.is_none());
    assert_eq!(
        f.leaf_calls("user-mismatch"),
        vec!["GET 200"],
        "it touches nothing"
    );
    let (kind, _) = f.wait_event("farm", "Conflict", WAIT).await;
    assert_eq!(kind, "Warning");

    f.patch_spec("farm", serde_json::json!({"adoptionPolicy": "Replace"}))
        .await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let stored = f.standin.credential("user-mismatch").unwrap();
    assert_ne!(stored.id, seeded.id);
    assert_eq!(stored.client_id, "client-a");
    assert_eq!(
        tc.status.unwrap().credential_id.as_deref(),
        Some(stored.id.as_str())
    );
    assert_eq!(f.count_calls("user-mismatch", "DELETE"), 1);
    assert_eq!(f.count_calls("user-mismatch", "POST"), 1);
}

#[tokio::test]
async fn adoption_policy_never_refuses_even_a_matching_credential() {
    let f = Fixture::start("never").await;
    f.standin.seed_credential("user-never", "client-a");
    f.put_credentials("creds", "client-a", "secret-a", "refresh-a")
        .await;
    f.create_tc(
        "farm",
        "user-never",
        "creds",
        serde_json::json!({"adoptionPolicy": "Never"}),
    )
    .await;
    f.wait_reason("farm", "Conflict", WAIT).await;
    assert_eq!(f.count_calls("user-never", "POST"), 0);
    assert_eq!(f.count_calls("user-never", "DELETE"), 0);
}

#[tokio::test]
async fn adoption_policy_replace_deletes_the_existing_credential_and_creates_ours() {
    let f = Fixture::start("replace").await;
    let seeded = f.standin.seed_credential("user-replace", "client-other");
    f.put_credentials("creds", "client-a", "secret-a", "refresh-a")
        .await;
    f.create_tc(
        "farm",
        "user-replace",
        "creds",
        serde_json::json!({"adoptionPolicy": "Replace"}),
    )
    .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert_eq!(
        f.leaf_calls("user-replace"),
        vec!["GET 200", "DELETE 204", "POST 201", "GET events 200"]
    );
    assert_ne!(f.standin.credential("user-replace").unwrap().id, seeded.id);
    f.wait_event("farm", "Created", WAIT).await;
}

#[tokio::test]
async fn the_newer_of_two_resources_for_one_leaf_user_reports_conflict_and_touches_nothing() {
    let f = Fixture::start("conflict").await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-a")
        .await;
    f.create_tc("first", "user-conflict", "creds", serde_json::json!({}))
        .await;
    f.wait_reason("first", "CredentialValid", WAIT).await;
    // creationTimestamp has one-second resolution: make sure the second one is newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let calls_before = f.leaf_calls("user-conflict");

    f.create_tc("second", "user-conflict", "creds", serde_json::json!({}))
        .await;
    let tc = f.wait_reason("second", "Conflict", WAIT).await;
    let message = &tc.status.clone().unwrap().conditions[0].message;
    assert!(
        message.contains(&format!("{}/first", f.namespace)),
        "{message}"
    );
    assert!(conditions(&tc).iter().any(|c| c.0 == "Stalled"));
    assert_eq!(
        f.leaf_calls("user-conflict"),
        calls_before,
        "the loser made no Leaf call"
    );
    assert_eq!(ready_reason(&f.get("first").await), "CredentialValid");

    f.delete_tc("second").await;
    f.wait_gone("second", Duration::from_secs(15)).await;
    assert!(
        f.standin.credential("user-conflict").is_some(),
        "the winner's credential is untouched"
    );
    assert_eq!(f.count_calls("user-conflict", "DELETE"), 0);
}

#[tokio::test]
async fn deleting_the_loser_of_a_conflict_never_deletes_the_winners_credential() {
    let f = Fixture::start("conflict-delete").await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-a")
        .await;
    f.create_tc("first", "user-conflict-del", "creds", serde_json::json!({}))
        .await;
    let first = f.wait_reason("first", "CredentialValid", WAIT).await;
    let id = first.status.unwrap().credential_id.unwrap();
    // creationTimestamp has one-second resolution: make sure the second one is newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.create_tc(
        "second",
        "user-conflict-del",
        "creds",
        serde_json::json!({}),
    )
    .await;
    f.wait_reason("second", "Conflict", WAIT).await;
    // The loser names the winner's credential, as when it recorded it before the older resource
    // was in the operator's store (the stores of several namespaces sync independently).
    let status = serde_json::json!({"status": {"credentialId": id}});
    f.tcs
        .patch_status(
            "second",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
        .expect("write credentialId");
    f.wait_until_status("second", WAIT, |s| {
        s.credential_id.as_deref() == Some(id.as_str())
    })
    .await;

    f.delete_tc("second").await;
    f.wait_gone("second", Duration::from_secs(15)).await;
    assert_eq!(
        f.count_calls("user-conflict-del", "DELETE"),
        0,
        "{:?}",
        f.leaf_calls("user-conflict-del")
    );
    assert_eq!(
        f.standin.credential("user-conflict-del").map(|c| c.id),
        Some(id),
        "the winner's credential is untouched"
    );
}

#[tokio::test]
async fn leaf_down_during_delete_keeps_the_finalizer_until_the_policy_is_switched_to_orphan() {
    let f = Fixture::start("downdelete").await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-a")
        .await;
    f.create_tc("farm", "user-downdelete", "creds", serde_json::json!({}))
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;

    f.standin.set_outage(true);
    f.delete_tc("farm").await;
    let tc = f.wait_reason("farm", "LeafUnavailable", WAIT).await;
    let message = tc.status.clone().unwrap().conditions[0].message.clone();
    assert!(
        message.contains("Deleting") && message.contains("Orphan"),
        "{message}"
    );
    assert_eq!(conditions(&tc)[0].1, "False");
    // It stays while Leaf is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        f.tcs.get_opt("farm").await.unwrap().is_some(),
        "the finalizer waits for Leaf"
    );

    f.patch_spec("farm", serde_json::json!({"deletionPolicy": "Orphan"}))
        .await;
    f.wait_gone("farm", Duration::from_secs(20)).await;
    f.standin.set_outage(false);
    assert!(
        f.standin.credential("user-downdelete").is_some(),
        "left in Leaf"
    );
    f.wait_event("farm", "Orphaned", WAIT).await;
}

#[tokio::test]
async fn suspend_stops_all_leaf_calls_until_resumed() {
    let f = Fixture::start("suspend").await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-a")
        .await;
    f.create_tc(
        "farm",
        "user-suspend",
        "creds",
        serde_json::json!({"suspend": true}),
    )
    .await;
    let tc = f.wait_reason("farm", "Suspended", WAIT).await;
    assert_eq!(
        conditions(&tc),
        vec![(
            "Ready".to_string(),
            "False".to_string(),
            "Suspended".to_string()
        )]
    );
    // A Secret change while suspended changes nothing.
    f.put_credentials("creds", "client-a", "secret-a", "refresh-b")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        f.leaf_calls("user-suspend").is_empty(),
        "{:?}",
        f.leaf_calls("user-suspend")
    );

    f.patch_spec("farm", serde_json::json!({"suspend": false}))
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert_eq!(
        f.standin
            .credential("user-suspend")
            .unwrap()
            .submitted_refresh_token,
        "refresh-b"
    );
}

#[tokio::test]
async fn leaf_credential_events_are_mirrored_once_and_sanitised() {
    let f = Fixture::start_with("events", Default::default(), |o| o.refresh_interval("1s")).await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-a")
        .await;
    f.create_tc("farm", "user-events", "creds", serde_json::json!({}))
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;

    let ok = f.standin.push_event("user-events", 200, None, None);
    let failed = f.standin.push_event("user-events", 401, None, None);
    let tc = f
        .wait_until_status("farm", WAIT, |s| {
            s.recent_events.iter().any(|e| e.id == failed.id)
        })
        .await;
    let recent = tc.status.clone().unwrap().recent_events;
    assert_eq!(recent[0].id, failed.id, "newest first: {recent:?}");
    assert!(recent.iter().any(|e| e.id == ok.id));
    assert_eq!(recent[0].status_code, Some(401));

    // Several more checks: still exactly one Warning for the failed event.
    let standin = f.standin.handle();
    let reads = standin.count("GET", "/users/user-events/trimble-credentials/events");
    support::wait_until("three more event reads", WAIT, || {
        let standin = standin.clone();
        async move {
            let now = standin.count("GET", "/users/user-events/trimble-credentials/events");
            if now >= reads + 3 {
                Ok(())
            } else {
                Err(format!("{now}"))
            }
        }
    })
    .await;
    let leaf_events: Vec<_> = f
        .events("farm")
        .await
        .into_iter()
        .filter(|(_, reason, _)| reason == "LeafCredentialEventError")
        .collect();
    assert_eq!(leaf_events.len(), 1, "{leaf_events:?}");
    let (kind, _, note) = &leaf_events[0];
    assert_eq!(kind, "Warning");
    assert!(note.contains(&failed.id) && note.contains("401"), "{note}");

    // Nothing from the event's headers or body reaches the status or the Event.
    let status_text = serde_json::to_string(&tc.status).unwrap();
    for text in [note.as_str(), status_text.as_str()] {
        for forbidden in [
            "Basic",
            "invalid_grant",
            "event-refresh",
            "access_token",
            "Authorization",
        ] {
            assert!(
                !text.contains(forbidden),
                "{forbidden:?} leaked into {text}"
            );
        }
    }
}

#[tokio::test]
async fn one_operator_watching_two_namespaces_serves_both_and_sees_conflicts_across_them() {
    let control_plane = support::control_plane().await;
    let other = control_plane.create_namespace("second").await;
    let other_ns = other.clone();
    let f = Fixture::start_with("first", Default::default(), move |mut o| {
        o.namespaces.push(other_ns);
        o
    })
    .await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-a")
        .await;
    f.create_tc("farm", "user-multi", "creds", serde_json::json!({}))
        .await;
    let first = f.wait_reason("farm", "CredentialValid", WAIT).await;
    // creationTimestamp has 1 s resolution: the next resource must be newer, not a tie.
    let created = first.metadata.creation_timestamp.unwrap().0.as_second();
    support::wait_until("the next second", WAIT, || async {
        if jiff::Timestamp::now().as_second() > created {
            Ok(())
        } else {
            Err(String::new())
        }
    })
    .await;

    // The same Leaf user from the other namespace: the newer one loses.
    let tcs: kube::Api<leaf_operator::crd::TrimbleConnection> =
        kube::Api::namespaced(f.client.clone(), &other);
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(f.client.clone(), &other);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "creds"},
        "stringData": {"clientId": "client-b", "clientSecret": "s", "refreshToken": "r"}
    }))
    .unwrap();
    secrets.create(&Default::default(), &secret).await.unwrap();
    for (name, user) in [("dup", "user-multi"), ("own", "user-multi-2")] {
        let tc: leaf_operator::crd::TrimbleConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "withleaf.io/v1alpha1", "kind": "TrimbleConnection",
            "metadata": {"name": name},
            "spec": {"leafUserId": user, "credentialsSecretRef": {"name": "creds"}}
        }))
        .unwrap();
        tcs.create(&Default::default(), &tc).await.unwrap();
    }
    support::wait_until("the second namespace to be served", WAIT, || {
        let tcs = tcs.clone();
        async move {
            let dup = tcs.get("dup").await.map_err(|e| e.to_string())?;
            let own = tcs.get("own").await.map_err(|e| e.to_string())?;
            let (dup_reason, own_reason) = (ready_reason(&dup), ready_reason(&own));
            if dup_reason == "Conflict" && own_reason == "CredentialValid" {
                Ok(())
            } else {
                Err(format!("dup {dup_reason:?}, own {own_reason:?}"))
            }
        }
    })
    .await;
    assert_eq!(
        f.standin.credential("user-multi").unwrap().client_id,
        "client-a",
        "the older one keeps it"
    );
}

#[tokio::test]
async fn two_resources_for_one_leaf_user_created_in_the_same_second_agree_on_the_winner_before_either_acts()
 {
    let control_plane = support::control_plane().await;
    let other = control_plane.create_namespace("tie").await;
    let other_ns = other.clone();
    let f = Fixture::start_with("tie", Default::default(), move |mut o| {
        o.namespaces.push(other_ns);
        o
    })
    .await;
    // Same second, same name: the namespace decides. The loser is created first, so without
    // waiting out the tie it would have acted before the winner existed.
    let (winner_ns, loser_ns) = if f.namespace < other {
        (f.namespace.clone(), other.clone())
    } else {
        (other.clone(), f.namespace.clone())
    };
    let user = "user-tie";
    for (namespace, client) in [(&loser_ns, "client-loser"), (&winner_ns, "client-winner")] {
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(f.client.clone(), namespace);
        let secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "creds"},
            "stringData": {"clientId": client, "clientSecret": "s", "refreshToken": format!("r-{client}")}
        }))
        .unwrap();
        secrets.create(&Default::default(), &secret).await.unwrap();
    }
    // Slow reads keep both decisions open long enough for a race to show, if there is one.
    f.standin.slow(Some(("GET", Duration::from_millis(700))));
    // The loser right after a second begins, the winner 0.6 s later in the same second: without
    // agreeing on the winner first, the loser would have started its create by then.
    // Placing an action at a moment of the wall clock is a timed wait by nature (there is no
    // condition to poll: polling at a growing interval can stay in phase with the second).
    let at_subsec = |target_ms: i64| async move {
        let ms = i64::from(jiff::Timestamp::now().subsec_millisecond());
        let wait = (target_ms - ms).rem_euclid(1000);
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    };
    let tc = |namespace: &str| -> kube::Api<leaf_operator::crd::TrimbleConnection> {
        kube::Api::namespaced(f.client.clone(), namespace)
    };
    let object: leaf_operator::crd::TrimbleConnection = serde_json::from_value(serde_json::json!({
        "apiVersion": "withleaf.io/v1alpha1", "kind": "TrimbleConnection",
        "metadata": {"name": "farm"},
        "spec": {"leafUserId": user, "credentialsSecretRef": {"name": "creds"}}
    }))
    .unwrap();
    at_subsec(10).await;
    tc(&loser_ns)
        .create(&Default::default(), &object)
        .await
        .unwrap();
    at_subsec(610).await;
    tc(&winner_ns)
        .create(&Default::default(), &object)
        .await
        .unwrap();
    let (winner, loser) = (tc(&winner_ns), tc(&loser_ns));
    let stamps = (
        winner
            .get("farm")
            .await
            .unwrap()
            .metadata
            .creation_timestamp
            .unwrap()
            .0
            .as_second(),
        loser
            .get("farm")
            .await
            .unwrap()
            .metadata
            .creation_timestamp
            .unwrap()
            .0
            .as_second(),
    );
    assert_eq!(
        stamps.0, stamps.1,
        "the test needs a tie: both in one second"
    );

    support::wait_until(
        "the winner Ready and the loser in Conflict",
        WAIT,
        || async {
            let (w, l) = (
                winner.get("farm").await.map_err(|e| e.to_string())?,
                loser.get("farm").await.map_err(|e| e.to_string())?,
            );
            match (ready_reason(&w).as_str(), ready_reason(&l).as_str()) {
                ("CredentialValid", "Conflict") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(f.count_calls(user, "POST"), 1, "{:?}", f.leaf_calls(user));
    assert_eq!(
        f.standin.credential(user).unwrap().client_id,
        "client-winner"
    );
    let loser_status = loser.get("farm").await.unwrap().status.unwrap();
    assert!(loser_status.credential_id.is_none() && loser_status.pending_create.is_none());
}

/// Leaf calls of `user` that write (POST or DELETE).
fn writes(f: &Fixture, user: &str) -> Vec<String> {
    f.leaf_calls(user)
        .into_iter()
        .filter(|c| c.starts_with("POST") || c.starts_with("DELETE"))
        .collect()
}

#[tokio::test]
async fn observe_only_reads_leaf_says_what_it_would_do_and_never_writes() {
    // The deployment-wide switch: every resource is handled as managementPolicy Observe.
    let f = Fixture::start_with("observe-only", Default::default(), |o| {
        o.env("OBSERVE_ONLY", "true")
    })
    .await;
    f.put_credentials("creds-new", "client-a", "secret-a", "refresh-new")
        .await;
    f.put_credentials("creds-adopt", "client-a", "secret-a", "refresh-adopt")
        .await;
    let existing = f.standin.seed_credential("user-obs-adopt", "client-a");
    f.create_tc("new", "user-obs-new", "creds-new", serde_json::json!({}))
        .await;
    f.create_tc(
        "adopt",
        "user-obs-adopt",
        "creds-adopt",
        serde_json::json!({}),
    )
    .await;

    let new = f.wait_reason("new", "ObserveOnly", WAIT).await;
    let message = support::operator::condition(new.status.as_ref().unwrap(), "Ready")
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains("would create") && message.contains("user-obs-new"),
        "{message}"
    );
    let (kind, note) = f.wait_event("new", "ObserveOnly", WAIT).await;
    assert_eq!(kind, "Normal");
    assert!(note.contains("would create"), "{note}");

    // A credential AdoptMatching would take is reported, not claimed.
    let adopt = f.wait_reason("adopt", "ObserveOnly", WAIT).await;
    let status = adopt.status.clone().unwrap();
    let message = &support::operator::condition(&status, "Ready")
        .unwrap()
        .message;
    assert!(
        message.contains("would adopt") && message.contains(&existing.id),
        "{message}"
    );
    assert_eq!(status.credential_id, None, "nothing is claimed");

    // Looked at again (a person asks): the same answer, and still no write.
    f.poke_and_wait("new", WAIT).await;
    f.delete_tc("adopt").await;
    f.wait_gone("adopt", WAIT).await;
    assert_eq!(
        f.standin.credential("user-obs-adopt").map(|c| c.id),
        Some(existing.id)
    );
    assert!(f.standin.credential("user-obs-new").is_none());
    for user in ["user-obs-new", "user-obs-adopt"] {
        assert!(
            writes(&f, user).is_empty(),
            "{user}: {:?}",
            f.leaf_calls(user)
        );
        assert!(!f.leaf_calls(user).is_empty(), "{user}: Leaf was read");
    }
    // One Event for the create that would happen, however often it was looked at.
    let announced = f
        .event_reasons("new")
        .await
        .iter()
        .filter(|r| *r == "ObserveOnly")
        .count();
    assert_eq!(announced, 1);
}

#[tokio::test]
async fn observe_policy_on_an_owned_credential_keeps_checking_it_but_never_rotates_or_deletes() {
    let f = Fixture::start("observe-owned").await;
    let user = "user-obs-owned";
    f.put_credentials("creds", "client-a", "secret-a", "refresh-1")
        .await;
    f.create_tc("farm", user, "creds", serde_json::json!({}))
        .await;
    let ready = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let ours = ready.status.unwrap().credential_id.expect("created");

    f.tcs
        .patch(
            "farm",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"managementPolicy": "Observe"}})),
        )
        .await
        .expect("switch to Observe");
    // Its own credential is still checked: nothing to hold back.
    f.poke_and_wait("farm", WAIT).await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    let before = writes(&f, user).len();

    // A changed Secret: the rotation is reported, not done.
    f.put_credentials("creds", "client-a", "secret-a", "refresh-2")
        .await;
    let tc = f.wait_reason("farm", "ObserveOnly", WAIT).await;
    let message = &support::operator::condition(tc.status.as_ref().unwrap(), "Ready")
        .unwrap()
        .message;
    assert!(
        message.contains("would rotate") && message.contains(&ours),
        "{message}"
    );
    assert_eq!(
        tc.status.unwrap().credential_id.as_deref(),
        Some(ours.as_str())
    );

    // Deleting it leaves the credential in Leaf, and says what would have been deleted.
    f.delete_tc("farm").await;
    f.wait_gone("farm", WAIT).await;
    support::wait_until("an Event that says what would be deleted", WAIT, || async {
        let events = f.events("farm").await;
        if events
            .iter()
            .any(|(_, r, n)| r == "ObserveOnly" && n.contains("would delete") && n.contains(&ours))
        {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;
    assert_eq!(f.standin.credential(user).map(|c| c.id), Some(ours));
    assert_eq!(
        writes(&f, user).len(),
        before,
        "no write after Observe was set: {:?}",
        f.leaf_calls(user)
    );
}
