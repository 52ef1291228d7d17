//! The Leaf client's logs, captured at trace level (its own and its HTTP stack's), hold no
//! secret. A test binary of its own: tracing's per-callsite interest cache is process-wide, so a
//! thread-scoped capture is only reliable when no other test runs alongside.

mod support;

use std::sync::Arc;
use std::time::Duration;

use leaf_operator::leaf::{LeafAccount, LeafClient, LeafClientConfig, Trimble};
use leaf_operator::metrics::Metrics;
use leaf_standin::{StandIn, StandInConfig};
use support::leaf::{
    CLIENT_SECRET, PASSWORD, REFRESH_TOKEN, USER, assert_no_secrets, create_user_credential,
    get_user_credential, user_credential_events,
};

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
async fn logs_at_trace_level_hold_no_secret() {
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
    let config = LeafClientConfig {
        origin: standin.origin(),
        request_timeout: Duration::from_secs(5),
        requests_per_second: 0.0,
        ..LeafClientConfig::default()
    };
    let client = LeafClient::new(config, Arc::new(Metrics::new())).unwrap();
    create_user_credential(&client).await.unwrap();
    get_user_credential(&client).await.unwrap();
    user_credential_events(&client).await.unwrap();
    standin.fail_every_nth_with_body(
        1,
        400,
        r#"{"detail":"refreshToken=trimble-refresh-token-x81n"}"#,
    );
    let _ = create_user_credential(&client).await.unwrap_err();
    standin.clear_faults();
    let _ = client
        .get_credential::<Trimble>(
            &LeafAccount::password("operator", "wrong-pass-for-log"),
            USER,
        )
        .await
        .unwrap_err();
    standin.drop_next(1);
    let _ = get_user_credential(&client).await.unwrap_err();
    let stored = standin.credential(USER).unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("operation=\"create_credential\"")
            || logs.contains("operation=create_credential"),
        "the client logs each request at debug level:\n{logs}"
    );
    assert_no_secrets(
        &logs,
        &[
            PASSWORD,
            CLIENT_SECRET,
            REFRESH_TOKEN,
            "wrong-pass-for-log",
            stored.refresh_token.as_str(),
            stored.access_token.as_str(),
        ],
    );
    assert!(
        !logs.contains("eyJ"),
        "a JWT-looking string was logged:\n{logs}"
    );
}
