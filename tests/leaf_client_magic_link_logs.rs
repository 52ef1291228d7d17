//! The Leaf client's logs during Magic Link calls, captured at trace level (its own and its HTTP
//! stack's), never show a link's id or URL, whatever happens: success, errors quoting the link,
//! a 5xx after the create landed, a dropped connection, a timeout. A test binary of its own, as
//! `leaf_client_logs`: tracing's per-callsite interest cache is process-wide, so a thread-scoped
//! capture is only reliable when no other test runs alongside.

mod support;

use std::sync::Arc;
use std::time::Duration;

use leaf_operator::leaf::{LeafClient, LeafClientConfig, MagicLinkSettings, NewMagicLink};
use leaf_operator::metrics::Metrics;
use leaf_standin::{StandIn, StandInConfig};
use secrecy::ExposeSecret;
use support::leaf::{PASSWORD, USER, account, assert_no_secrets, open_guard};

/// A tracing writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn magic_link_calls_never_log_a_link_or_its_id() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let standin = StandIn::start(
        StandInConfig::default()
            .with_account("operator", PASSWORD)
            .with_user(USER),
    )
    .await;
    standin.register_app_key("farm-app", "registered-trimble-client");
    let client = LeafClient::new(
        LeafClientConfig {
            origin: standin.origin(),
            request_timeout: Duration::from_millis(500),
            requests_per_second: 0.0,
            ..LeafClientConfig::default()
        },
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let settings = MagicLinkSettings::default();
    let request = NewMagicLink {
        expires_in_seconds: 900,
        settings: &settings,
    };
    let mut errors = Vec::new();

    let created = client
        .create_magic_link(&account(), USER, &request, &open_guard())
        .await
        .unwrap();
    client
        .get_magic_link(&account(), &created.id)
        .await
        .unwrap()
        .unwrap();
    client.list_magic_links(&account()).await.unwrap();
    client.trimble_app_keys(&account(), None).await.unwrap();

    // A create answered 503 after it landed: its link exists, the client never saw it.
    standin.fail_after_apply_next("POST", 1, 503);
    errors.push(
        client
            .create_magic_link(&account(), USER, &request, &open_guard())
            .await
            .unwrap_err(),
    );

    let id = created.id.expose_secret().to_string();
    let link = created.link.expose_secret().to_string();
    // Error answers that quote the id and the link.
    standin.set_fault_path_filter(Some("/magic-link/"));
    standin.fail_every_nth_with_body(
        1,
        500,
        &format!(r#"{{"message":"magic link {id} failed","detail":"see {link}"}}"#),
    );
    errors.push(
        client
            .get_magic_link(&account(), &created.id)
            .await
            .unwrap_err(),
    );
    errors.push(
        client
            .delete_magic_link(&account(), &created.id, &open_guard())
            .await
            .unwrap_err(),
    );
    errors.push(client.list_magic_links(&account()).await.unwrap_err());
    standin.clear_faults();
    // A dropped connection and a timeout on the paths with the id.
    standin.drop_next(1);
    errors.push(
        client
            .get_magic_link(&account(), &created.id)
            .await
            .unwrap_err(),
    );
    standin.late_next("DELETE", 1, Duration::from_secs(2));
    errors.push(
        client
            .delete_magic_link(&account(), &created.id, &open_guard())
            .await
            .unwrap_err(),
    );
    support::wait_for_named(
        "the late delete to land",
        Duration::from_secs(10),
        || async { (standin.late_pending() == 0).then_some(()) },
    )
    .await;
    assert!(standin.magic_links()[0].deleted, "the late delete landed");

    let mut secrets = Vec::new();
    for stored in standin.magic_links() {
        secrets.push(stored.id.clone());
        secrets.push(stored.link.clone());
        secrets.push(stored.link.trim_start_matches("https://").to_string());
    }
    assert_eq!(secrets.len(), 6, "two links were created");
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for operation in [
        "create_magic_link",
        "get_magic_link",
        "list_magic_links",
        "delete_magic_link",
        "app_keys",
    ] {
        assert!(
            logs.contains(&format!("operation=\"{operation}\""))
                || logs.contains(&format!("operation={operation}")),
            "the client logs each request at debug level ({operation} missing):\n{logs}"
        );
    }
    assert_no_secrets(&logs, &secrets);
    assert_eq!(errors.len(), 6);
    for error in &errors {
        assert_no_secrets(&format!("{error} {error:?}"), &secrets);
    }
}
