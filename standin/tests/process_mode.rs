//! The `leaf-standin` binary: flags, the printed address, the Leaf contract and the `/_standin/`
//! control endpoints over real HTTP, the in-doubt writes (late, failed after apply, read lag)
//! included.

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

/// Polls `GET {url}` until its JSON answer satisfies `check`; panics after 20 s.
async fn wait_for_json(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if check(&json_of(http.get(url)).await) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn in_doubt_writes_from_flags_and_control_endpoints() {
    let (_process, origin) = start(&[
        "--token",
        "tok",
        "--user",
        "u1",
        "--late-next",
        "delete:1:1500",
        "--fail-after-apply-next",
        "POST:1",
        "--read-lag-ms",
        "800",
    ]);
    let http = http();
    let control = |path: &str| format!("{origin}/_standin/{path}");
    let credentials = credentials_url(&origin, "u1");
    let faults = json_of(http.get(control("faults"))).await;
    assert_eq!(
        faults["lateNext"],
        json!([{"method": "DELETE", "count": 1, "delayMs": 1500}])
    );
    assert_eq!(
        faults["failAfterApplyNext"],
        json!([{"method": "POST", "count": 1, "status": 503}])
    );

    // Applied, answered 503; under the read lag, GET shows it only later.
    let created = send(
        http.post(&credentials)
            .bearer_auth("tok")
            .json(&json!({"clientId": "c", "clientSecret": "s", "refreshToken": "r"})),
    )
    .await;
    assert_eq!(created.status(), 503);
    assert_eq!(
        send(http.get(control("users/u1/credential")))
            .await
            .status(),
        200,
        "applied"
    );
    assert_eq!(
        send(http.get(&credentials).bearer_auth("tok"))
            .await
            .status(),
        404,
        "not visible yet"
    );
    let mut visible = false;
    for _ in 0..400 {
        if send(http.get(&credentials).bearer_auth("tok"))
            .await
            .status()
            == 200
        {
            visible = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(visible, "visible after the lag");

    // A late DELETE: its client gives up, it lands later.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(
        impatient
            .delete(&credentials)
            .bearer_auth("tok")
            .send()
            .await
            .is_err()
    );
    // Conditions, not sleeps: the DELETE was processed, then nothing is pending any more.
    wait_for_json(&http, &control("counters"), "the late DELETE", |c| {
        c["late"] == 1
    })
    .await;
    wait_for_json(&http, &control("pending"), "no pending request", |p| {
        p == &json!({"late": 0, "held": 0})
    })
    .await;
    assert_eq!(
        send(http.get(control("users/u1/credential")))
            .await
            .status(),
        404,
        "the late DELETE was applied"
    );
    let counters = json_of(http.get(control("counters"))).await;
    assert_eq!(counters["late"], 1);
    assert_eq!(counters["failedAfterApply"], 1);
    assert_eq!(counters["injectedFailures"], 1);

    // The control endpoints: one object or an array, per method; count 0 removes; bad input
    // is refused, not fatal.
    let patched = json_of(http.post(control("faults")).json(&json!({
        "lateNext": [{"method": "post", "count": 2, "delayMs": 100},
                     {"method": "GET", "count": 1, "delayMs": 5}],
        "failAfterApplyNext": {"method": "delete", "count": 1, "status": 502},
    })))
    .await;
    assert_eq!(patched["lateNext"].as_array().unwrap().len(), 2);
    assert_eq!(
        patched["failAfterApplyNext"],
        json!([{"method": "DELETE", "count": 1, "status": 502}])
    );
    let patched = json_of(
        http.post(control("faults"))
            .json(&json!({"lateNext": {"method": "POST", "count": 0, "delayMs": 0}})),
    )
    .await;
    assert_eq!(
        patched["lateNext"],
        json!([{"method": "GET", "count": 1, "delayMs": 5}])
    );
    for bad in [
        json!({"lateNext": {"method": "POST"}}),
        json!({"failAfterApplyNext": {"method": "POST", "count": -1}}),
        json!({"lateNext": {"method": "POST", "count": 1, "delayMs": 1, "extra": 1}}),
    ] {
        let refused = send(http.post(control("faults")).json(&bad)).await;
        assert!(
            refused.status().is_client_error(),
            "{bad}: {}",
            refused.status()
        );
    }
    assert_eq!(send(http.delete(control("faults"))).await.status(), 204);
    let cleared = json_of(http.get(control("faults"))).await;
    assert_eq!(
        (&cleared["lateNext"], &cleared["failAfterApplyNext"]),
        (&json!([]), &json!([]))
    );

    // No read lag any more: a write shows at once.
    assert_eq!(
        send(
            http.post(control("behaviour"))
                .json(&json!({"readLagMs": 0}))
        )
        .await
        .status(),
        204
    );
    let created = send(
        http.post(&credentials)
            .bearer_auth("tok")
            .json(&json!({"clientId": "c", "clientSecret": "s", "refreshToken": "r2"})),
    )
    .await;
    assert_eq!(created.status(), 201);
    assert_eq!(
        send(http.get(&credentials).bearer_auth("tok"))
            .await
            .status(),
        200
    );
}

#[test]
fn malformed_in_doubt_flags_are_refused() {
    for args in [
        ["--late-next", "DELETE:1"],
        ["--late-next", "DELETE:x:100"],
        ["--fail-after-apply-next", "POST:1:99999"],
        ["--fail-after-apply-next", "P0ST:1"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_leaf-standin"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .expect("run leaf-standin");
        assert_eq!(output.status.code(), Some(2), "{args:?} is a usage error");
        assert!(output.stdout.is_empty(), "{args:?} never listened");
    }
}
