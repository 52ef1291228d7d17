//! Helpers of the alerts tests: an operator with the receiver on a known port, signed and forged
//! posts, raw HTTP for chunked bodies, and reading single metric samples.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::operator::{Fixture, OperatorOptions};
use super::wait::wait_until;

/// The webhook signing secret the tests plant (and scan for).
pub const SIGNING_SECRET: &str = "PLANTED-webhook-signing-secret-4e1d";
/// The Kubernetes Secret that holds it, in the test's namespace.
pub const SIGNING_SECRET_NAME: &str = "leaf-alerts";

/// A free loopback port (bound, then released) for the receiver, whose URL must be known before
/// the operator starts so that it can register it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Operator options with the receiver on `port`, the signing secret in the test namespace and,
/// with `register`, webhook registration checked every second.
pub fn with_alerts(options: OperatorOptions, port: u16, register: bool) -> OperatorOptions {
    let namespace = options.namespaces[0].clone();
    let mut options = options;
    options.env.extend([
        ("LEAF_ALERTS_ADDR".to_string(), format!("127.0.0.1:{port}")),
        (
            "LEAF_ALERTS_SECRET_NAME".to_string(),
            format!("{namespace}/{SIGNING_SECRET_NAME}"),
        ),
        ("LEAF_ALERTS_CHECK_INTERVAL".to_string(), "1s".to_string()),
    ]);
    if register {
        options.env.extend([
            ("LEAF_ALERTS_REGISTER".to_string(), "true".to_string()),
            ("LEAF_ALERTS_WEBHOOK_URL".to_string(), receiver_url(port)),
            (
                "LEAF_ALERTS_WEBHOOK_NAME".to_string(),
                "leaf-operator-test".to_string(),
            ),
        ]);
    }
    options
}

pub fn receiver_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/alerts")
}

/// Puts the signing secret into the Kubernetes Secret the operator watches.
pub async fn put_signing_secret(f: &Fixture, value: &str) {
    f.put_secret(SIGNING_SECRET_NAME, &[("secret", value)])
        .await;
}

/// `X-Leaf-Signature` for `body` under `secret`.
pub fn sign(secret: &str, body: &str) -> String {
    leaf_operator::alerts::signature::sign(secret.as_bytes(), body.as_bytes())
}

/// POSTs `body` to the receiver with this signature header (if any); returns the status.
pub async fn post(port: u16, body: &str, signature: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(receiver_url(port))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(signature) = signature {
        request = request.header("X-Leaf-Signature", signature);
    }
    request
        .send()
        .await
        .expect("the receiver answers")
        .status()
        .as_u16()
}

/// POSTs `body` signed with `secret`.
pub async fn post_signed(port: u16, secret: &str, body: &str) -> u16 {
    post(port, body, Some(&sign(secret, body))).await
}

/// POSTs `total` bytes with chunked transfer encoding (no Content-Length) over a raw socket and
/// returns the status code of the answer: the bounded read must stop it without a length hint.
pub async fn post_chunked(port: u16, signature: &str, total: usize) -> u16 {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Leaf-Signature: {signature}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let chunk = vec![b'a'; 8192];
    let mut sent = 0;
    while sent < total {
        let piece = &chunk[..chunk.len().min(total - sent)];
        let frame = format!("{:x}\r\n", piece.len());
        // The server may answer and close before everything is sent: stop writing then.
        if stream.write_all(frame.as_bytes()).await.is_err()
            || stream.write_all(piece).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
        sent += piece.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in {line:?}"))
}

/// Waits until the receiver answers (the signing secret loaded and the controller's index
/// synced): an unsigned confirmation is the one request that changes nothing.
pub async fn wait_receiver_ready(port: u16) {
    wait_until(
        "the alerts receiver to be ready",
        Duration::from_secs(60),
        || async {
            let status = post(
                port,
                r#"{"message": "confirmation of webhook upon registration"}"#,
                None,
            )
            .await;
            if status == 200 {
                Ok(())
            } else {
                Err(format!("HTTP {status}"))
            }
        },
    )
    .await
}

/// A credentials alert body the way Leaf writes it.
pub fn credentials_alert(
    event: &str,
    credential_id: &str,
    status: &str,
    timestamp: &str,
) -> String {
    leaf_standin::credentials_body(event, "client-a", credential_id, status, timestamp)
}

/// The operator's current metrics text.
pub async fn metrics(f: &Fixture) -> String {
    let addr = f.operator.http_addr().expect("the operator's HTTP address");
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// The value of one sample, e.g. `leaf_operator_alerts_verified_total` or
/// `leaf_operator_alerts_rejected_total{reason="bad_signature"}`; 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Waits until `series` has at least `at_least`; returns the metrics text.
pub async fn wait_metric(f: &Fixture, series: &str, at_least: f64) -> String {
    wait_until(
        &format!("{series} >= {at_least}"),
        Duration::from_secs(60),
        || async {
            let text = metrics(f).await;
            let value = sample(&text, series);
            if value >= at_least {
                Ok(text)
            } else {
                Err(format!("{series} = {value}"))
            }
        },
    )
    .await
}

/// A raw TCP connection to the receiver, for clients that misbehave on purpose.
pub async fn connect(port: u16) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the receiver")
}

/// Reads from `stream` until the receiver closes it; returns what it sent and how long that took
/// from `since`, or panics after `timeout` (the receiver kept the connection open).
pub async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    since: std::time::Instant,
    timeout: Duration,
) -> (String, Duration) {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = timeout.saturating_sub(since.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the receiver kept the connection open for {timeout:?}; it sent {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        since.elapsed(),
    )
}

/// Leaf's timestamp format (microseconds, `Z`) for `now` moved by `offset_secs`.
pub fn leaf_timestamp(offset_secs: i64) -> String {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(offset_secs);
    at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The webhook name `with_alerts` registers under.
pub const WEBHOOK_NAME: &str = "leaf-operator-test";
/// The ConfigMap where the operator keeps the id of its webhook (the default Lease name +
/// `-alerts-webhook`, next to the signing Secret).
pub const WEBHOOK_RECORD: &str = "leaf-operator-alerts-webhook";

/// The data of the webhook record ConfigMap in the test's namespace, if it exists.
pub async fn webhook_record(f: &Fixture) -> Option<BTreeMap<String, String>> {
    Api::<ConfigMap>::namespaced(f.client.clone(), &f.namespace)
        .get_opt(WEBHOOK_RECORD)
        .await
        .expect("read the webhook record")
        .map(|cm| cm.data.unwrap_or_default())
}

/// Waits until the webhook record holds webhook `id` and no create in doubt; returns its data.
pub async fn wait_record_id(f: &Fixture, id: &str) -> BTreeMap<String, String> {
    wait_until(
        &format!("the webhook record to hold {id} and no create in doubt"),
        Duration::from_secs(60),
        || async {
            let data = webhook_record(f).await.unwrap_or_default();
            let settled = data.get("webhookId").map(String::as_str) == Some(id)
                && !data.keys().any(|k| k.starts_with("create"));
            if settled {
                Ok(data)
            } else {
                Err(format!("{data:?}"))
            }
        },
    )
    .await
}

/// Waits for an Event about the operator's Pod `pod` with `reason` whose note contains
/// `containing`; returns (type, note).
pub async fn wait_pod_event(
    f: &Fixture,
    pod: &str,
    reason: &str,
    containing: &str,
) -> (String, String) {
    wait_until(
        &format!("an Event {reason} about Pod {pod} saying {containing:?}"),
        Duration::from_secs(60),
        || async {
            let events = f.events(pod).await;
            events
                .iter()
                .find(|(_, r, note)| r == reason && note.contains(containing))
                .map(|(kind, _, note)| (kind.clone(), note.clone()))
                .ok_or_else(|| format!("{events:?}"))
        },
    )
    .await
}
