//! The Alerts API client against the stand-in: the documented shapes (201 + `Location`, the
//! list, 204, `{"items": [...]}`), `eventRegisteredTwice`, and no echoed secret in any `Debug`
//! or error text.

mod support;

use std::sync::Arc;

use leaf_operator::leaf::alerts::{CreateWebhookError, NewWebhook};
use leaf_operator::leaf::{LeafClient, LeafClientConfig};
use leaf_operator::metrics::Metrics;
use leaf_standin::{
    CREDENTIALS_LIMITED_PERMISSION, CREDENTIALS_UNAUTHENTICATED, StandIn, StandInConfig,
};
use secrecy::{ExposeSecret, SecretString};
use support::leaf::{PASSWORD, account, assert_no_secrets};

const WEBHOOK_SECRET: &str = "PLANTED-alerts-client-secret-0b3e";

async fn setup() -> (StandIn, LeafClient, Arc<Metrics>) {
    let standin = StandIn::start(StandInConfig::default().with_account("operator", PASSWORD)).await;
    let metrics = Arc::new(Metrics::new());
    let client = LeafClient::new(
        LeafClientConfig {
            origin: standin.origin(),
            ..LeafClientConfig::default()
        },
        metrics.clone(),
    )
    .unwrap();
    (standin, client, metrics)
}

#[tokio::test]
async fn webhooks_are_created_listed_read_and_deleted_as_documented() {
    let (standin, client, metrics) = setup().await;
    let secret = SecretString::from(WEBHOOK_SECRET);
    let events = [CREDENTIALS_UNAUTHENTICATED, CREDENTIALS_LIMITED_PERMISSION];
    let id = client
        .create_webhook(
            &account(),
            &NewWebhook {
                name: "leaf-operator",
                url: "http://127.0.0.1:9/alerts",
                events: &events,
                secret: &secret,
            },
        )
        .await
        .expect("created");
    assert_eq!(
        standin.webhooks()[0].id,
        id,
        "the id is the Location's last segment"
    );

    let listed = client.list_webhooks(&account()).await.expect("listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].events, events);
    assert_eq!(
        listed[0].secret.expose_secret(),
        WEBHOOK_SECRET,
        "Leaf echoes it"
    );
    let one = client
        .get_webhook(&account(), &id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(one.url, "http://127.0.0.1:9/alerts");
    assert_no_secrets(&format!("{listed:?} {one:?}"), &[WEBHOOK_SECRET]);

    // One webhook per event: a second registration is refused with eventRegisteredTwice.
    let again = client
        .create_webhook(
            &account(),
            &NewWebhook {
                name: "other",
                url: "http://127.0.0.1:9/other",
                events: &events[1..],
                secret: &secret,
            },
        )
        .await;
    assert!(
        matches!(again, Err(CreateWebhookError::EventRegisteredTwice)),
        "{again:?}"
    );

    client
        .delete_webhook(&account(), &id)
        .await
        .expect("deleted");
    client
        .delete_webhook(&account(), &id)
        .await
        .expect("a second delete (404) is success");
    assert!(client.get_webhook(&account(), &id).await.unwrap().is_none());
    assert!(client.list_webhooks(&account()).await.unwrap().is_empty());
    let text = metrics.encode();
    assert!(
        text.contains(r#"operation="create_webhook",status="201""#),
        "{text}"
    );
    assert!(
        text.contains(r#"operation="delete_webhook",status="404""#),
        "{text}"
    );
}

#[tokio::test]
async fn failed_calls_parse_in_both_documented_shapes() {
    let (standin, client, _) = setup().await;
    standin.push_failed_call(leaf_standin::FailedCall {
        api_owner: "owner".into(),
        created_at: "2023-04-21T12:16:30Z".into(),
        url: "https://hooks.example.com/alerts".into(),
        request_body: r#"{"type": "credentialsUnauthenticated", "credentialId": "c1"}"#.into(),
        status: Some(502),
        response: Some("bad gateway".into()),
        connection_error: None,
    });
    standin.push_failed_call(leaf_standin::FailedCall {
        api_owner: "owner".into(),
        created_at: "2023-04-21T12:17:30Z".into(),
        url: "https://hooks.example.com/alerts".into(),
        request_body: "{}".into(),
        status: None,
        response: None,
        connection_error: Some("Connection refused".into()),
    });
    let calls = client.failed_calls(&account()).await.expect("read");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].status, Some(502));
    assert!(calls[0].request_body.as_deref().unwrap().contains("\"c1\""));
    assert_eq!(calls[1].status, None);
    assert_eq!(calls[1].created_at.as_deref(), Some("2023-04-21T12:17:30Z"));
}

#[tokio::test]
async fn a_refused_create_never_quotes_the_secret_it_sent() {
    let (standin, client, _) = setup().await;
    // A short, word-like secret that no token pattern would catch: only removing the value we
    // sent keeps it out of the error.
    const WORDY: &str = "swordfish-orchard";
    // Leaf quoting our body back in an error (a 400 that repeats the request).
    standin.set_fault_path_filter(Some("/alerts/"));
    standin.fail_every_nth_with_body(1, 400, &format!(r#"{{"detail":"bad webhook {WORDY}"}}"#));
    let secret = SecretString::from(WORDY);
    let error = client
        .create_webhook(
            &account(),
            &NewWebhook {
                name: "leaf-operator",
                url: "http://127.0.0.1:9/alerts",
                events: &[CREDENTIALS_UNAUTHENTICATED],
                secret: &secret,
            },
        )
        .await
        .expect_err("refused");
    assert_no_secrets(&format!("{error} {error:?}"), &[WORDY]);
    assert!(
        error.to_string().contains("bad webhook [REDACTED]"),
        "{error}"
    );
}
