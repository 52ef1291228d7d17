//! The main loop, against a real API server and the Leaf stand-in, operator run as a process:
//! create, periodic check, rotation, deletion, and what the user sees of each.

mod support;

use std::time::Duration;

use kube::ResourceExt;
use support::operator::{
    Fixture, assert_one_delete_and_one_post, conditions, default_credentials_fingerprint,
};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn creates_the_credential_and_reports_ready_with_an_event() {
    let f = Fixture::start("create").await;
    f.create_farm_with_default_credentials("user-create").await;

    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let status = tc.status.clone().expect("status");
    assert_eq!(
        conditions(&tc),
        vec![(
            "Ready".to_string(),
            "True".to_string(),
            "CredentialValid".to_string()
        )],
        "only Ready, and True"
    );
    let stored = f
        .standin
        .credential("user-create")
        .expect("the credential exists in Leaf");
    assert_eq!(status.credential_id.as_deref(), Some(stored.id.as_str()));
    assert_eq!(status.credential_status.as_deref(), Some("OK"));
    assert_eq!(status.scopes, stored.scopes);
    assert!(status.leaf_created_time.is_some());
    assert_eq!(
        status.secret_fingerprint.as_deref(),
        Some(default_credentials_fingerprint().as_str())
    );
    assert!(
        status.pending_create.is_none(),
        "intent cleared after the create"
    );
    assert_eq!(stored.client_id, "client-a");
    assert_eq!(stored.submitted_refresh_token, "refresh-a");
    // The create reads the credential's events at once, so that the first check writes nothing.
    assert_eq!(
        f.leaf_calls("user-create"),
        vec!["GET 404", "POST 201", "GET events 200"]
    );
    let (kind, note) = f.wait_event("farm", "Created", WAIT).await;
    assert_eq!(kind, "Normal");
    assert!(note.contains(&stored.id), "{note}");
    assert!(
        tc.finalizers()
            .iter()
            .any(|f| f == "withleaf.io/trimble-credential")
    );
}

#[tokio::test]
async fn a_secret_change_rotates_with_exactly_one_delete_and_one_post() {
    let f = Fixture::start("rotate").await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-1")
        .await;
    f.create_tc("farm", "user-rotate", "creds", serde_json::json!({}))
        .await;
    let before = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let old_id = before.status.clone().unwrap().credential_id.unwrap();
    f.standin.clear_requests();

    f.put_credentials("creds", "client-a", "secret-a", "refresh-2")
        .await;
    let tc = f
        .wait_until_status("farm", WAIT, |s| {
            s.secret_fingerprint.as_deref()
                == Some(
                    leaf_operator::secret::fingerprint("client-a", "secret-a", "refresh-2")
                        .as_str(),
                )
                && s.credential_id.as_deref() != Some(old_id.as_str())
        })
        .await;
    let status = tc.status.clone().unwrap();
    let stored = f.standin.credential("user-rotate").expect("credential");
    assert_eq!(stored.submitted_refresh_token, "refresh-2");
    assert_eq!(status.credential_id.as_deref(), Some(stored.id.as_str()));
    assert_eq!(conditions(&tc)[0].2, "CredentialValid");
    let calls = f.leaf_calls("user-rotate");
    assert_one_delete_and_one_post(&calls);
    let delete = calls.iter().position(|c| c.starts_with("DELETE")).unwrap();
    let post = calls.iter().position(|c| c.starts_with("POST")).unwrap();
    assert!(delete < post, "DELETE before POST: {calls:?}");
    let (kind, note) = f.wait_event("farm", "Rotated", WAIT).await;
    assert_eq!(kind, "Normal");
    assert!(
        note.contains(&old_id) && note.contains(&stored.id),
        "{note}"
    );
}

#[tokio::test]
async fn a_rotation_whose_post_fails_once_is_finished_later_and_still_announced_as_rotated() {
    let f = Fixture::start("rotate-retry").await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-1")
        .await;
    f.create_tc("farm", "user-rotate-retry", "creds", serde_json::json!({}))
        .await;
    let before = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let old_id = before.status.clone().unwrap().credential_id.unwrap();
    f.standin.clear_requests();
    // The rotation's POST is refused once with 429, an answer that proves it was not processed
    // (a 5xx would leave the create in doubt, and its refresh token would never be sent again).
    f.standin
        .set_fault_path_filter(Some("/users/user-rotate-retry/trimble-credentials"));
    f.standin.set_fault_method_filter(Some("POST"));
    f.standin
        .rate_limit_next(1, leaf_standin::RetryAfter::Seconds(1));

    f.put_credentials("creds", "client-a", "secret-a", "refresh-2")
        .await;
    let (kind, note) = f.wait_event("farm", "Rotated", WAIT).await;
    assert_eq!(kind, "Normal");
    let stored = f
        .standin
        .credential("user-rotate-retry")
        .expect("credential");
    assert_eq!(stored.submitted_refresh_token, "refresh-2");
    assert!(
        note.contains(&old_id) && note.contains(&stored.id),
        "{note}"
    );
    let calls = f.leaf_calls("user-rotate-retry");
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("DELETE")).count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("POST"))
            .collect::<Vec<_>>(),
        vec!["POST 429", "POST 201"],
        "{calls:?}"
    );
    let created = f
        .event_reasons("farm")
        .await
        .into_iter()
        .filter(|r| r == "Created")
        .count();
    assert_eq!(created, 1, "only the first create is announced as Created");
    f.wait_reason("farm", "CredentialValid", WAIT).await;
}

#[tokio::test]
async fn unauthenticated_is_reported_and_a_new_refresh_token_makes_it_valid_again() {
    let f = Fixture::start_with("unauth", Default::default(), |o| o.refresh_interval("2s")).await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-1")
        .await;
    f.create_tc("farm", "user-unauth", "creds", serde_json::json!({}))
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;

    assert!(f.standin.set_status("user-unauth", "UNAUTHENTICATED"));
    let tc = f.wait_reason("farm", "CredentialInvalid", WAIT).await;
    assert_eq!(
        conditions(&tc),
        vec![
            (
                "Ready".to_string(),
                "False".to_string(),
                "CredentialInvalid".to_string()
            ),
            (
                "Stalled".to_string(),
                "True".to_string(),
                "CredentialInvalid".to_string()
            ),
        ]
    );
    assert_eq!(
        tc.status.clone().unwrap().credential_status.as_deref(),
        Some("UNAUTHENTICATED")
    );
    let (kind, note) = f.wait_event("farm", "CredentialInvalid", WAIT).await;
    assert_eq!(kind, "Warning");
    assert!(
        note.contains("re-authorize") && note.contains("creds"),
        "{note}"
    );

    f.put_credentials("creds", "client-a", "secret-a", "refresh-2")
        .await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert_eq!(
        conditions(&tc).len(),
        1,
        "Stalled removed: {:?}",
        conditions(&tc)
    );
    f.wait_event("farm", "Rotated", WAIT).await;
    assert_eq!(f.count_calls("user-unauth", "POST"), 2);
}

#[tokio::test]
async fn an_unknown_leaf_status_is_kept_verbatim_and_ready_is_unknown() {
    let f = Fixture::start_with("unknown", Default::default(), |o| o.refresh_interval("2s")).await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-1")
        .await;
    f.create_tc("farm", "user-unknown", "creds", serde_json::json!({}))
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;

    assert!(f.standin.set_status("user-unknown", "Paused_By_Leaf"));
    let tc = f.wait_reason("farm", "CredentialStatusUnknown", WAIT).await;
    let status = tc.status.clone().unwrap();
    assert_eq!(status.credential_status.as_deref(), Some("Paused_By_Leaf"));
    assert_eq!(
        conditions(&tc),
        vec![(
            "Ready".to_string(),
            "Unknown".to_string(),
            "CredentialStatusUnknown".to_string()
        )]
    );
    let message = &status.conditions[0].message;
    assert!(message.contains("Paused_By_Leaf"), "{message}");
}

#[tokio::test]
async fn a_refresh_that_finds_nothing_new_writes_nothing() {
    let f = Fixture::start_with("noop", Default::default(), |o| o.refresh_interval("1s")).await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-1")
        .await;
    f.create_tc("farm", "user-noop", "creds", serde_json::json!({}))
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    // The first check fills recentEvents; wait for it to settle.
    let settled = f
        .wait_until_status("farm", WAIT, |s| !s.recent_events.is_empty())
        .await;
    let version = settled.resource_version();
    let gets_before = f.count_calls("user-noop", "GET");

    let standin = f.standin.handle();
    support::wait_until("three more periodic checks", WAIT, || {
        let standin = standin.clone();
        async move {
            let gets = standin.count("GET", "/users/user-noop/trimble-credentials");
            if gets >= gets_before + 3 {
                Ok(())
            } else {
                Err(format!("{gets} GETs"))
            }
        }
    })
    .await;
    let after = f.get("farm").await;
    assert_eq!(
        after.resource_version(),
        version,
        "no write for a check that found nothing new"
    );
    // Leaf echoes a live refresh token that differs from the Secret's by design: never drift.
    assert_eq!(f.count_calls("user-noop", "POST"), 1);
    assert_eq!(f.count_calls("user-noop", "DELETE"), 0);
}

#[tokio::test]
async fn deleting_removes_the_leaf_credential_then_the_finalizer() {
    let f = Fixture::start("delete").await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-1")
        .await;
    f.create_tc("farm", "user-delete", "creds", serde_json::json!({}))
        .await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let id = tc.status.unwrap().credential_id.unwrap();

    f.delete_tc("farm").await;
    f.wait_gone("farm", WAIT).await;
    assert!(
        f.standin.credential("user-delete").is_none(),
        "credential deleted in Leaf"
    );
    assert_eq!(f.count_calls("user-delete", "DELETE"), 1);
    let (kind, note) = f.wait_event("farm", "Deleted", WAIT).await;
    assert_eq!(kind, "Normal");
    assert!(note.contains(&id), "{note}");
}

#[tokio::test]
async fn orphan_policy_leaves_the_credential_and_releases_at_once() {
    let f = Fixture::start("orphan").await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-1")
        .await;
    f.create_tc(
        "farm",
        "user-orphan",
        "creds",
        serde_json::json!({"deletionPolicy": "Orphan"}),
    )
    .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;

    f.delete_tc("farm").await;
    f.wait_gone("farm", WAIT).await;
    assert!(
        f.standin.credential("user-orphan").is_some(),
        "credential left in Leaf"
    );
    assert_eq!(f.count_calls("user-orphan", "DELETE"), 0);
    f.wait_event("farm", "Orphaned", WAIT).await;
}

#[tokio::test]
async fn a_resource_that_never_created_anything_deletes_without_delay() {
    let f = Fixture::start("never").await;
    // No Secret: it waits in SecretNotFound, and Leaf is never called.
    f.create_tc("farm", "user-never", "missing", serde_json::json!({}))
        .await;
    f.wait_reason("farm", "SecretNotFound", WAIT).await;
    f.delete_tc("farm").await;
    f.wait_gone("farm", Duration::from_secs(15)).await;
    assert!(
        f.leaf_calls("user-never").is_empty(),
        "{:?}",
        f.leaf_calls("user-never")
    );
}

#[tokio::test]
async fn the_reconcile_requested_at_annotation_forces_a_check_and_is_echoed() {
    let f = Fixture::start("requested").await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-1")
        .await;
    f.create_tc("farm", "user-requested", "creds", serde_json::json!({}))
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    let gets = f.count_calls("user-requested", "GET");

    assert!(f.standin.set_status("user-requested", "UNAUTHENTICATED"));
    f.annotate(
        "farm",
        "withleaf.io/reconcile-requested-at",
        "2026-01-01T00:00:00Z",
    )
    .await;
    let tc = f
        .wait_until_status("farm", WAIT, |s| {
            s.last_handled_reconcile_at.as_deref() == Some("2026-01-01T00:00:00Z")
        })
        .await;
    assert_eq!(
        conditions(&tc)[0].2,
        "CredentialInvalid",
        "the forced check saw Leaf's new status"
    );
    assert!(f.count_calls("user-requested", "GET") > gets);
}

#[tokio::test]
async fn missing_permission_and_provider_trouble_are_reported_with_their_own_reasons() {
    let f = Fixture::start_with("perm", Default::default(), |o| o.refresh_interval("1s")).await;
    f.put_credentials("creds", "client-a", "secret-a", "refresh-1")
        .await;
    f.create_tc("farm", "user-perm", "creds", serde_json::json!({}))
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;

    assert!(f.standin.set_status("user-perm", "MISSING_PERMISSION"));
    let tc = f.wait_reason("farm", "MissingPermission", WAIT).await;
    assert_eq!(conditions(&tc)[0].1, "False");
    let (kind, _) = f.wait_event("farm", "MissingPermission", WAIT).await;
    assert_eq!(kind, "Warning");

    assert!(f.standin.set_status("user-perm", "TEMPORARILY_UNAVAILABLE"));
    f.wait_reason("farm", "ProviderUnavailable", WAIT).await;

    assert!(f.standin.set_status("user-perm", "OK"));
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    let (kind, _) = f.wait_event("farm", "CredentialValid", WAIT).await;
    assert_eq!(kind, "Normal", "recovery is announced");
    assert_eq!(
        f.count_calls("user-perm", "POST"),
        1,
        "status changes never re-create"
    );
}

#[tokio::test]
async fn a_warning_that_comes_back_is_folded_into_one_event_series_with_its_count() {
    use k8s_openapi::api::events::v1::Event;
    use kube::api::{Api, ListParams};

    let f = Fixture::start_with("series", Default::default(), |o| o.refresh_interval("2s")).await;
    f.create_farm_with_default_credentials("user-series").await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    for round in 0..2 {
        assert!(f.standin.set_status("user-series", "UNAUTHENTICATED"));
        f.wait_reason("farm", "CredentialInvalid", WAIT).await;
        if round == 0 {
            assert!(f.standin.set_status("user-series", "OK"));
            f.wait_reason("farm", "CredentialValid", WAIT).await;
        }
    }

    let events: Api<Event> = Api::namespaced(f.client.clone(), &f.namespace);
    let invalid: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("CredentialInvalid"))
        .collect();
    assert_eq!(
        invalid.len(),
        1,
        "the second CredentialInvalid is a repeat of the first, not a new Event: {invalid:?}"
    );
    let series = invalid[0]
        .series
        .as_ref()
        .expect("a series on the repeated Event");
    assert_eq!(series.count, 2, "{series:?}");
    assert_eq!(invalid[0].type_.as_deref(), Some("Warning"));
    assert_eq!(
        invalid[0].reporting_controller.as_deref(),
        Some("leaf-operator")
    );
}
