//! The Leaf client's Magic Link and Trimble app key calls against the leaf-standin over real
//! HTTP: each call's answer, the classification of failures (a 5xx after the link was created
//! is "maybe applied"), 404s, the send guard, the metrics, and that a link's id and URL never
//! reach an error's Display or Debug. The logs are checked in `leaf_client_magic_link_logs`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use leaf_operator::controller::decide::answers::{Effect, Write, effect};
use leaf_operator::leaf::{
    Deleted, LeafClient, LeafClientConfig, LeafError, MagicLink, MagicLinkSettings, NewMagicLink,
    NotSent, SendGuard,
};
use leaf_operator::metrics::Metrics;
use leaf_standin::{LINK_ORIGIN, StandIn, StandInConfig};
use secrecy::{ExposeSecret, SecretString};
use support::leaf::{PASSWORD, USER, account, assert_no_secrets, open_guard};

const CLIENT_ID: &str = "registered-trimble-client";

async fn standin() -> StandIn {
    let standin = StandIn::start(
        StandInConfig::default()
            .with_account("operator", PASSWORD)
            .with_user(USER),
    )
    .await;
    standin.register_app_key("farm-app", CLIENT_ID);
    standin
}

fn client(standin: &StandIn, metrics: Arc<Metrics>) -> LeafClient {
    LeafClient::new(
        LeafClientConfig {
            origin: standin.origin(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            requests_per_second: 0.0,
            burst: 1,
        },
        metrics,
    )
    .expect("client")
}

fn new_link(settings: &MagicLinkSettings) -> NewMagicLink<'_> {
    NewMagicLink {
        expires_in_seconds: 3600,
        settings,
    }
}

async fn create(client: &LeafClient, user: &str) -> Result<MagicLink, LeafError> {
    client
        .create_magic_link(
            &account(),
            user,
            &new_link(&MagicLinkSettings::default()),
            &open_guard(),
        )
        .await
}

/// Fails when the error's Display or Debug shows any of the link's secret parts.
#[track_caller]
fn assert_hides(error: &LeafError, id: &str, link: &str) {
    let text = format!("{error} {error:?}");
    assert_no_secrets(&text, &[id, link, link.trim_start_matches("https://")]);
}

#[tokio::test]
async fn create_get_list_and_delete_a_link() {
    let standin = standin().await;
    let metrics = Arc::new(Metrics::new());
    let client = client(&standin, metrics.clone());
    let settings = MagicLinkSettings {
        company_name: Some("Acme Agronomy".into()),
        disconnect_enabled: Some(true),
        ..MagicLinkSettings::default()
    };

    let before = jiff::Timestamp::now();
    let created = client
        .create_magic_link(&account(), USER, &new_link(&settings), &open_guard())
        .await
        .unwrap();
    let stored = standin.magic_links();
    assert_eq!(stored.len(), 1);
    assert_eq!(created.id.expose_secret(), stored[0].id);
    assert_eq!(created.link.expose_secret(), stored[0].link);
    assert_eq!(
        created.link.expose_secret(),
        format!("{LINK_ORIGIN}/{}", stored[0].id)
    );
    assert_eq!(created.leaf_user_id.as_deref(), Some(USER));
    let lifetime = created.expires_at.unwrap().duration_since(before).as_secs();
    assert!((3598..=3601).contains(&lifetime), "{lifetime}");
    assert_eq!(
        stored[0].settings,
        serde_json::json!({"companyName": "Acme Agronomy", "disconnectEnabled": true}),
        "only the settings given are sent"
    );
    assert_eq!(stored[0].provider, "Trimble");

    let got = client
        .get_magic_link(&account(), &created.id)
        .await
        .unwrap()
        .expect("the link exists");
    assert_eq!(got.id.expose_secret(), created.id.expose_secret());
    assert_eq!(got.link.expose_secret(), created.link.expose_secret());
    assert_eq!((got.usage_count, got.max_usage), (Some(0), Some(3)));
    assert_eq!(got.widget.as_deref(), Some("AUTHENTICATION"));
    assert_eq!(got.provider.as_deref(), Some("Trimble"));
    assert_eq!(got.last_accessed_at, None);
    assert!(got.created_at.is_some());
    assert!(!got.is_expired(jiff::Timestamp::now()) && !got.is_used_up());

    standin.add_user("someone-else");
    let other = create(&client, "someone-else").await.unwrap();
    let all = client.list_magic_links(&account()).await.unwrap();
    assert_eq!(all.len(), 2);
    let mine: Vec<&MagicLink> = all
        .iter()
        .filter(|l| l.leaf_user_id.as_deref() == Some(USER))
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].id.expose_secret(), created.id.expose_secret());

    let removed = client
        .delete_magic_link(&account(), &created.id, &open_guard())
        .await
        .unwrap();
    assert_eq!(removed, Deleted::Removed);
    let again = client
        .delete_magic_link(&account(), &created.id, &open_guard())
        .await
        .unwrap();
    assert_eq!(again, Deleted::NothingThere);
    assert!(
        client
            .get_magic_link(&account(), &created.id)
            .await
            .unwrap()
            .is_none()
    );
    let left = client.list_magic_links(&account()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id.expose_secret(), other.id.expose_secret());

    let text = metrics.encode();
    for operation in [
        "create_magic_link",
        "get_magic_link",
        "list_magic_links",
        "delete_magic_link",
    ] {
        assert!(
            text.contains(&format!("operation=\"{operation}\"")),
            "{operation} missing from:\n{text}"
        );
    }
    assert!(
        !text.contains(created.id.expose_secret()),
        "a link id in the metrics"
    );
}

#[tokio::test]
async fn a_link_shows_its_use_and_its_expiry() {
    let standin = standin().await;
    let client = client(&standin, Arc::new(Metrics::new()));
    let created = create(&client, USER).await.unwrap();
    standin.open_magic_link(created.id.expose_secret()).unwrap();
    let got = client
        .get_magic_link(&account(), &created.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.usage_count, Some(1));
    assert!(got.last_accessed_at.is_some());
    assert!(standin.expire_magic_link(created.id.expose_secret()));
    let got = client
        .get_magic_link(&account(), &created.id)
        .await
        .unwrap()
        .expect("an expired link is still there until deleted");
    assert!(got.is_expired(jiff::Timestamp::now()));
}

#[tokio::test]
async fn refusals_of_a_create_are_classified_and_not_applied() {
    let standin = standin().await;
    let client = client(&standin, Arc::new(Metrics::new()));

    let error = create(&client, "no-such-user").await.unwrap_err();
    assert!(matches!(error, LeafError::UserNotFound { .. }), "{error:?}");
    assert_eq!(effect(Write::Create, &error), Effect::NotApplied);

    let error = client
        .create_magic_link(
            &account(),
            USER,
            &NewMagicLink {
                expires_in_seconds: 60,
                settings: &MagicLinkSettings::default(),
            },
            &open_guard(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LeafError::Rejected { status: 400, detail } if detail.contains("expiresIn")),
        "{error:?}"
    );

    standin.remove_app_key("farm-app");
    let error = create(&client, USER).await.unwrap_err();
    assert!(
        matches!(&error, LeafError::Rejected { status: 400, detail }
            if detail.contains("Application info for provider Trimble not found")),
        "{error:?}"
    );
    assert_eq!(effect(Write::Create, &error), Effect::NotApplied);
    assert!(standin.magic_links().is_empty());
}

#[tokio::test]
async fn a_create_answered_503_after_leaf_made_the_link_is_maybe_applied() {
    let standin = standin().await;
    let client = client(&standin, Arc::new(Metrics::new()));
    standin.fail_after_apply_next("POST", 1, 503);
    let error = create(&client, USER).await.unwrap_err();
    assert!(
        matches!(
            error,
            LeafError::Unavailable {
                status: Some(503),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(effect(Write::Create, &error), Effect::Maybe);
    let stored = standin.magic_links();
    assert_eq!(stored.len(), 1, "the link exists at Leaf");
    let listed = client.list_magic_links(&account()).await.unwrap();
    assert_eq!(listed[0].id.expose_secret(), stored[0].id);
    assert_hides(&error, &stored[0].id, &stored[0].link);
}

#[tokio::test]
async fn a_create_that_lands_after_the_client_gave_up_is_maybe_applied() {
    let standin = standin().await;
    let client = LeafClient::new(
        LeafClientConfig {
            origin: standin.origin(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_millis(300),
            requests_per_second: 0.0,
            burst: 1,
        },
        Arc::new(Metrics::new()),
    )
    .unwrap();
    // Log in first, so the timeout below hits the create itself.
    client.list_magic_links(&account()).await.unwrap();
    standin.late_next("POST", 1, Duration::from_millis(900));
    let error = create(&client, USER).await.unwrap_err();
    assert!(
        matches!(error, LeafError::Unavailable { sent: true, .. }),
        "{error:?}"
    );
    assert_eq!(effect(Write::Create, &error), Effect::Maybe);
    support::wait_for_named(
        "the late create to land",
        Duration::from_secs(10),
        || async { (standin.late_pending() == 0).then_some(()) },
    )
    .await;
    let stored = standin.magic_links();
    assert_eq!(stored.len(), 1, "it landed after the timeout");
    assert_hides(&error, &stored[0].id, &stored[0].link);
}

#[tokio::test]
async fn a_delete_answered_503_after_it_was_applied_is_maybe_and_hides_the_id() {
    let standin = standin().await;
    let client = client(&standin, Arc::new(Metrics::new()));
    let created = create(&client, USER).await.unwrap();
    let id = created.id.expose_secret().to_string();
    let link = created.link.expose_secret().to_string();
    standin.fail_after_apply_next("DELETE", 1, 503);
    standin.fail_every_nth_with_body(
        0,
        503,
        &format!(r#"{{"message":"gateway timeout deleting {id} ({link})"}}"#),
    );
    let error = client
        .delete_magic_link(&account(), &created.id, &open_guard())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            LeafError::Unavailable {
                status: Some(503),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(effect(Write::Delete, &error), Effect::Maybe);
    assert!(standin.magic_links()[0].deleted, "applied at Leaf");
    assert!(
        error.to_string().contains("gateway timeout deleting"),
        "the body is quoted, minus the link: {error}"
    );
    assert_hides(&error, &id, &link);
}

#[tokio::test]
async fn errors_of_reads_quoting_the_link_never_show_it() {
    let standin = standin().await;
    let client = client(&standin, Arc::new(Metrics::new()));
    let created = create(&client, USER).await.unwrap();
    let id = created.id.expose_secret().to_string();
    let link = created.link.expose_secret().to_string();
    standin.set_fault_path_filter(Some("/magic-link/"));
    for (status, body) in [
        (400, format!("bad magic link {id}")),
        (
            500,
            format!(r#"{{"detail":"link {link} failed","message":"id {id}"}}"#),
        ),
        (404, format!("no link at /magic-link/authentication/{id}")),
    ] {
        standin.fail_every_nth_with_body(1, status, &body);
        match client.get_magic_link(&account(), &created.id).await {
            Ok(None) => assert_eq!(status, 404),
            Ok(Some(_)) => panic!("an injected {status} answered a link"),
            Err(error) => assert_hides(&error, &id, &link),
        }
        let error = client
            .delete_magic_link(&account(), &created.id, &open_guard())
            .await;
        if let Err(error) = &error {
            assert_hides(error, &id, &link);
        }
    }
    standin.clear_faults();
    standin.drop_next(1);
    let error = client
        .get_magic_link(&account(), &created.id)
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert_hides(&error, &id, &link);
}

#[tokio::test]
async fn a_closed_guard_sends_no_magic_link_write() {
    let standin = standin().await;
    let client = client(&standin, Arc::new(Metrics::new()));
    let created = create(&client, USER).await.unwrap();
    let fenced = || false;
    let guard = SendGuard {
        deadline: std::time::Instant::now() + Duration::from_secs(60),
        may_send: &fenced,
    };
    let error = client
        .create_magic_link(
            &account(),
            USER,
            &new_link(&MagicLinkSettings::default()),
            &guard,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, LeafError::NotSent(NotSent::Fenced)),
        "{error:?}"
    );
    let error = client
        .delete_magic_link(&account(), &created.id, &guard)
        .await
        .unwrap_err();
    assert!(
        matches!(error, LeafError::NotSent(NotSent::Fenced)),
        "{error:?}"
    );
    let stored = standin.magic_links();
    assert_eq!(stored.len(), 1, "no second link");
    assert!(!stored[0].deleted, "not deleted");
    assert_eq!(standin.count("POST", "/authentication"), 1);
    assert_eq!(standin.count("DELETE", stored[0].id.as_str()), 0);
}

#[tokio::test]
async fn trimble_app_keys_are_listed_by_name_without_secrets() {
    let standin = standin().await;
    let metrics = Arc::new(Metrics::new());
    let client = client(&standin, metrics.clone());
    let all = client.trimble_app_keys(&account(), None).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].app_name, "farm-app");
    assert!(all[0].created_time.is_some());
    let one = client
        .trimble_app_keys(&account(), Some("farm-app"))
        .await
        .unwrap();
    assert_eq!(one, all);
    let none = client
        .trimble_app_keys(&account(), Some("other-app"))
        .await
        .unwrap();
    assert!(none.is_empty(), "404 for a name is no app");
    standin.remove_app_key("farm-app");
    assert!(
        client
            .trimble_app_keys(&account(), None)
            .await
            .unwrap()
            .is_empty()
    );
    standin.set_fault_path_filter(Some("/app-keys/"));
    standin.fail_every_nth(1, 502);
    let error = client.trimble_app_keys(&account(), None).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(metrics.encode().contains("operation=\"app_keys\""));
}

#[test]
fn a_magic_link_debug_shows_neither_id_nor_link() {
    let link = MagicLink {
        id: SecretString::from("PLANTED-id"),
        link: SecretString::from("https://magic-link.withleaf.io/PLANTED-id"),
        leaf_user_id: Some(USER.into()),
        created_at: None,
        expires_at: None,
        last_accessed_at: None,
        usage_count: None,
        max_usage: None,
        provider: None,
        widget: None,
    };
    let debug = format!("{link:?}");
    assert!(!debug.contains("PLANTED"), "{debug}");
    assert!(debug.contains(USER));
}

/// A Leaf whose create answers 201 with `body`, for answers the stand-in never gives.
async fn leaf_answering_create_with(body: &'static str) -> String {
    let app = axum::Router::new().route(
        "/services/widgets/api/magic-link/users/{user}/authentication",
        axum::routing::post(move || async move { (axum::http::StatusCode::CREATED, body) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_created_answer_without_a_readable_link_is_invalid_and_counts_as_applied() {
    for body in [
        "<html>created</html>",
        r#"{"leafUserId": "u"}"#,
        r#"{"id": "3b73923c-724a-44c7-a516-a775e81b27dd", "leafUserId": "u"}"#,
    ] {
        let origin = leaf_answering_create_with(body).await;
        let client = LeafClient::new(
            LeafClientConfig {
                origin,
                requests_per_second: 0.0,
                ..LeafClientConfig::default()
            },
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let error = client
            .create_magic_link(
                &leaf_operator::leaf::LeafAccount::token("static-token"),
                USER,
                &new_link(&MagicLinkSettings::default()),
                &open_guard(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, LeafError::InvalidResponse { .. }),
            "{body}: {error:?}"
        );
        assert_eq!(effect(Write::Create, &error), Effect::Applied, "{body}");
        assert_hides(
            &error,
            "3b73923c-724a-44c7-a516-a775e81b27dd",
            "https://magic-link.withleaf.io/3b73923c-724a-44c7-a516-a775e81b27dd",
        );
    }
}
