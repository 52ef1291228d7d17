//! The `leaf-standin` binary: flags, the printed address, the Leaf contract and the `/_standin/`
//! control endpoints over real HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{RequestBuilder, Response};
use serde_json::{Value, json};

/// Kills the stand-in process when the test ends, passed or failed.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str]) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leaf-standin"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn leaf-standin");
    let stdout = child.stdout.take().unwrap();
    let process = Process(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the first stdout line");
    let origin = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (process, origin)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Sends `request`; a transport error fails the test.
async fn send(request: RequestBuilder) -> Response {
    request.send().await.unwrap()
}

/// Sends `request` and parses its JSON answer.
async fn json_of(request: RequestBuilder) -> Value {
    send(request).await.json().await.unwrap()
}

/// Logs in as `ops`/`pw` (the account both tests start with) and returns the issued token.
async fn login(http: &reqwest::Client, origin: &str, remember_me: Value) -> String {
    let login = json_of(
        http.post(format!("{origin}/api/authenticate"))
            .json(&json!({"username": "ops", "password": "pw", "rememberMe": remember_me})),
    )
    .await;
    login["id_token"].as_str().unwrap().to_string()
}

/// The Trimble credentials endpoint of `user`.
fn credentials_url(origin: &str, user: &str) -> String {
    format!("{origin}/services/usermanagement/api/users/{user}/trimble-credentials")
}

#[tokio::test]
async fn binary_serves_the_contract_and_the_controls() {
    let (_process, origin) = start(&[
        "--account",
        "ops:pw",
        "--token",
        "tok-1",
        "--user",
        "u1",
        "--token-lifetime-secs",
        "60",
    ]);
    let http = http();

    // Login issues a JWT-shaped token; rememberMe as a string is accepted.
    let token = login(&http, &origin, json!("true")).await;
    assert_eq!(token.split('.').count(), 3);
    let refused = send(
        http.post(format!("{origin}/api/authenticate"))
            .json(&json!({"username": "ops", "password": "wrong"})),
    )
    .await;
    assert_eq!(refused.status(), 401);

    let credentials = credentials_url(&origin, "u1");
    assert_eq!(
        send(http.get(&credentials)).await.status(),
        401,
        "no bearer"
    );
    assert_eq!(
        send(http.get(&credentials).bearer_auth(&token))
            .await
            .status(),
        404
    );
    let incomplete = send(
        http.post(&credentials)
            .bearer_auth("tok-1")
            .json(&json!({"clientId": "c", "clientSecret": "", "refreshToken": "r"})),
    )
    .await;
    assert_eq!(incomplete.status(), 400);
    assert_eq!(
        incomplete.headers()["content-type"],
        "application/problem+json"
    );
    let created = send(
        http.post(&credentials)
            .bearer_auth("tok-1")
            .json(&json!({"clientId": "c", "clientSecret": "s", "refreshToken": "r"})),
    )
    .await;
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["status"], "OK");
    assert_eq!(
        body["clientSecret"], "s",
        "secrets are echoed like the real API"
    );

    // Controls: flip the status, add an event, read the log.
    let control = |path: &str| format!("{origin}/_standin/{path}");
    let flipped = send(
        http.post(control("users/u1/status"))
            .json(&json!({"status": "invalid"})),
    )
    .await;
    assert_eq!(flipped.status(), 204);
    let got = json_of(http.get(&credentials).bearer_auth(&token)).await;
    assert_eq!(got["status"], "invalid");
    send(
        http.post(control("users/u1/events"))
            .json(&json!({"statusCode": 401})),
    )
    .await;
    let events = json_of(
        http.get(format!("{credentials}/events"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(events.as_array().unwrap().len(), 2);

    // Faults: a 429 with Retry-After, then back to normal.
    send(
        http.post(control("faults"))
            .json(&json!({"rateLimitNext": 1, "retryAfterSecs": 9})),
    )
    .await;
    let limited = send(http.get(&credentials).bearer_auth(&token)).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "9");
    assert_eq!(
        send(http.get(&credentials).bearer_auth(&token))
            .await
            .status(),
        200
    );

    // A dropped connection: no answer at all.
    send(http.post(control("faults")).json(&json!({"dropNext": 1}))).await;
    assert!(
        http.get(&credentials)
            .bearer_auth(&token)
            .send()
            .await
            .is_err()
    );

    let log = json_of(http.get(control("requests"))).await;
    let statuses: Vec<Value> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [
            json!(200),
            json!(401),
            json!(401),
            json!(404),
            json!(400),
            json!(201),
            json!(200),
            json!(200),
            json!(429),
            json!(200),
            Value::Null
        ]
    );
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .all(|r| !r.to_string().contains(&token)),
        "the log never holds tokens"
    );
}

#[tokio::test]
async fn expired_tokens_and_unknown_users_are_refused() {
    let (_process, origin) = start(&[
        "--account",
        "ops:pw",
        "--token-lifetime-secs",
        "1",
        "--on-existing",
        "400",
    ]);
    let http = http();
    let token = login(&http, &origin, json!(false)).await;
    let unknown = credentials_url(&origin, "nobody");
    let answer = send(
        http.post(&unknown)
            .bearer_auth(&token)
            .json(&json!({"clientId": "c", "clientSecret": "s", "refreshToken": "r"})),
    )
    .await;
    assert_eq!(answer.status(), 404, "users must be registered");
    // Wait out the one-second lifetime: the token must then be refused.
    let mut status = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = send(http.get(&unknown).bearer_auth(&token))
            .await
            .status()
            .as_u16();
        if status == 401 {
            break;
        }
    }
    assert_eq!(status, 401, "an expired token must be refused");
}
