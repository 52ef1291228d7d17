//! The `leaf-standin` binary: flags, the printed address, the Leaf contract and the `/_standin/`
//! control endpoints over real HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    let login: Value = http
        .post(format!("{origin}/api/authenticate"))
        .json(&json!({"username": "ops", "password": "pw", "rememberMe": "true"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["id_token"].as_str().unwrap().to_string();
    assert_eq!(token.split('.').count(), 3);
    let refused = http
        .post(format!("{origin}/api/authenticate"))
        .json(&json!({"username": "ops", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let credentials = format!("{origin}/services/usermanagement/api/users/u1/trimble-credentials");
    assert_eq!(
        http.get(&credentials).send().await.unwrap().status(),
        401,
        "no bearer"
    );
    assert_eq!(
        http.get(&credentials)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let incomplete = http
        .post(&credentials)
        .bearer_auth("tok-1")
        .json(&json!({"clientId": "c", "clientSecret": "", "refreshToken": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(incomplete.status(), 400);
    assert_eq!(
        incomplete.headers()["content-type"],
        "application/problem+json"
    );
    let created = http
        .post(&credentials)
        .bearer_auth("tok-1")
        .json(&json!({"clientId": "c", "clientSecret": "s", "refreshToken": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["status"], "OK");
    assert_eq!(
        body["clientSecret"], "s",
        "secrets are echoed like the real API"
    );

    // Controls: flip the status, add an event, read the log.
    let control = |path: &str| format!("{origin}/_standin/{path}");
    let flipped = http
        .post(control("users/u1/status"))
        .json(&json!({"status": "invalid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(flipped.status(), 204);
    let got: Value = http
        .get(&credentials)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "invalid");
    http.post(control("users/u1/events"))
        .json(&json!({"statusCode": 401}))
        .send()
        .await
        .unwrap();
    let events: Value = http
        .get(format!("{credentials}/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events.as_array().unwrap().len(), 2);

    // Faults: a 429 with Retry-After, then back to normal.
    http.post(control("faults"))
        .json(&json!({"rateLimitNext": 1, "retryAfterSecs": 9}))
        .send()
        .await
        .unwrap();
    let limited = http
        .get(&credentials)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "9");
    assert_eq!(
        http.get(&credentials)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A dropped connection: no answer at all.
    http.post(control("faults"))
        .json(&json!({"dropNext": 1}))
        .send()
        .await
        .unwrap();
    assert!(
        http.get(&credentials)
            .bearer_auth(&token)
            .send()
            .await
            .is_err()
    );

    let log: Value = http
        .get(control("requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let login: Value = http
        .post(format!("{origin}/api/authenticate"))
        .json(&json!({"username": "ops", "password": "pw", "rememberMe": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["id_token"].as_str().unwrap().to_string();
    let unknown = format!("{origin}/services/usermanagement/api/users/nobody/trimble-credentials");
    let answer = http
        .post(&unknown)
        .bearer_auth(&token)
        .json(&json!({"clientId": "c", "clientSecret": "s", "refreshToken": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404, "users must be registered");
    // Wait out the one-second lifetime: the token must then be refused.
    let mut status = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = http
            .get(&unknown)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 401 {
            break;
        }
    }
    assert_eq!(status, 401, "an expired token must be refused");
}
