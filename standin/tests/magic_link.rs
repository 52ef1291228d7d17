//! The stand-in's Magic Link service and Trimble app keys over HTTP: the documented shapes, the
//! refusals (with the status codes chosen where Leaf is silent), expiry and usage, the grower's
//! consent creating or replacing the Trimble credential, and the controls in process mode.

use leaf_standin::{LINK_ORIGIN, LinkRefused, StandIn, StandInConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "magic-link-test-token";
const USER: &str = "3fa85f64-5717-4562-b3fc-2c963f66afa6";
const CLIENT_ID: &str = "registered-trimble-client";

async fn leaf() -> StandIn {
    let leaf = StandIn::start(StandInConfig::default().with_token(TOKEN).with_user(USER)).await;
    leaf.register_app_key("farm-app", CLIENT_ID);
    leaf
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn create_url(leaf: &StandIn, user: &str) -> String {
    format!(
        "{}/services/widgets/api/magic-link/users/{user}/authentication",
        leaf.origin()
    )
}

fn link_url(leaf: &StandIn, id: Option<&str>) -> String {
    let base = format!(
        "{}/services/widgets/api/magic-link/authentication",
        leaf.origin()
    );
    id.map_or(base.clone(), |id| format!("{base}/{id}"))
}

async fn create(leaf: &StandIn, user: &str, body: Value) -> (StatusCode, Value) {
    let response = http()
        .post(create_url(leaf, user))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn create_ok(leaf: &StandIn) -> String {
    let (status, body) = create(leaf, USER, json!({"expiresIn": 900, "provider": "Trimble"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn get(url: String) -> (StatusCode, Value) {
    let response = http().get(url).bearer_auth(TOKEN).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn time(value: &Value) -> jiff::Timestamp {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn create_answers_201_with_the_documented_shape_and_a_link_naming_the_id() {
    let leaf = leaf().await;
    let before = jiff::Timestamp::now();
    let (status, body) = create(
        &leaf,
        USER,
        json!({"expiresIn": 3600, "provider": "Trimble",
               "settings": {"companyName": "Acme", "showLeafUserName": false}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap();
    assert_eq!(body["leafUserId"], USER);
    assert_eq!(body["link"], format!("{LINK_ORIGIN}/{id}"));
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        4,
        "only id, leafUserId, link, expiresAt: {body}"
    );
    let expires_text = body["expiresAt"].as_str().unwrap();
    assert_eq!(
        expires_text.split('.').nth(1).map(str::len),
        Some(10),
        "nanoseconds and Z as in Leaf's create example: {expires_text}"
    );
    let expires = time(&body["expiresAt"]);
    let lifetime = expires.duration_since(before).as_secs();
    assert!((3599..=3601).contains(&lifetime), "{lifetime}");
    assert_eq!(id.len(), 36, "a UUID: {id}");

    let second = create_ok(&leaf).await;
    assert_ne!(second, id, "ids are fresh");
    let stored = leaf.magic_links();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].settings["companyName"], "Acme");
    assert_eq!(stored[0].max_usage, 3);
    assert_eq!(
        stored[1]
            .expires_at
            .duration_since(stored[1].created_at)
            .as_secs(),
        900,
        "a 900 s link as asked"
    );
}

#[tokio::test]
async fn expires_in_defaults_to_900() {
    let leaf = leaf().await;
    let (status, body) = create(&leaf, USER, json!({"provider": "Trimble"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let link = &leaf.magic_links()[0];
    assert_eq!(
        link.expires_at.duration_since(link.created_at).as_secs(),
        900
    );
}

#[tokio::test]
async fn invalid_creates_are_400_with_a_message() {
    let leaf = leaf().await;
    for (body, needle) in [
        (json!({"provider": "Trimbel"}), "provider"),
        (json!({}), "provider"),
        (json!({"provider": "trimble"}), "provider"),
        (
            json!({"provider": "Trimble", "expiresIn": 899}),
            "expiresIn",
        ),
        (
            json!({"provider": "Trimble", "expiresIn": 31_536_001}),
            "expiresIn",
        ),
        (
            json!({"provider": "Trimble", "expiresIn": "900"}),
            "expiresIn",
        ),
        (json!({"provider": "Trimble", "settings": "x"}), "settings"),
        (json!(["Trimble"]), "JSON object"),
    ] {
        let (status, answer) = create(&leaf, USER, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body} -> {answer}");
    }
    let (status, _) = create(
        &leaf,
        USER,
        json!({"provider": "Trimble", "expiresIn": 31_536_000}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "one year is the documented maximum"
    );
    assert_eq!(
        leaf.magic_links().len(),
        1,
        "no refused create stored a link"
    );
}

#[tokio::test]
async fn without_an_app_key_for_the_provider_create_is_400_naming_it() {
    let leaf = leaf().await;
    assert!(leaf.remove_app_key("farm-app"));
    let (status, body) = create(&leaf, USER, json!({"provider": "Trimble"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "Application info for provider Trimble not found"
    );
    // A documented provider the stand-in has no app for is refused the same way.
    leaf.register_app_key("farm-app", CLIENT_ID);
    let (status, body) = create(&leaf, USER, json!({"provider": "JohnDeere"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "Application info for provider JohnDeere not found"
    );
    assert!(leaf.magic_links().is_empty());
}

#[tokio::test]
async fn an_unknown_user_is_404_unless_users_are_created_on_the_fly() {
    let leaf = leaf().await;
    let (status, body) = create(&leaf, "nobody", json!({"provider": "Trimble"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["message"].is_string(), "{body}");
    leaf.set_auto_create_users(true);
    let (status, body) = create(&leaf, "nobody", json!({"provider": "Trimble"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["leafUserId"], "nobody");
}

#[tokio::test]
async fn get_list_and_delete_follow_the_documented_shapes() {
    let leaf = leaf().await;
    let id = create_ok(&leaf).await;
    let other = create_ok(&leaf).await;

    let (status, link) = get(link_url(&leaf, Some(&id))).await;
    assert_eq!(status, StatusCode::OK);
    for (key, expected) in [
        ("id", json!(id)),
        ("link", json!(format!("{LINK_ORIGIN}/{id}"))),
        ("leafUserId", json!(USER)),
        ("maxUsage", json!(3)),
        ("usageCount", json!(0)),
        ("widget", json!("AUTHENTICATION")),
        ("provider", json!("Trimble")),
        ("lastAccessedAt", Value::Null),
        ("settings", json!({})),
    ] {
        assert_eq!(link[key], expected, "{key} in {link}");
    }
    assert!(time(&link["createdAt"]) < time(&link["expiresAt"]));

    let (status, all) = get(link_url(&leaf, None)).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str(), other.as_str()]);

    let response = http()
        .delete(link_url(&leaf, Some(&id)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "", "an empty body");
    let response = http()
        .delete(link_url(&leaf, Some(&id)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "deleted twice");
    assert_eq!(
        get(link_url(&leaf, Some(&id))).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(link_url(&leaf, Some("no-such-link"))).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, all) = get(link_url(&leaf, None)).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert!(leaf.magic_links()[0].deleted, "the control still shows it");
}

#[tokio::test]
async fn every_magic_link_and_app_key_route_requires_the_bearer_token() {
    let leaf = leaf().await;
    let id = create_ok(&leaf).await;
    let origin = leaf.origin();
    let app_keys = format!("{origin}/services/usermanagement/api/app-keys/Trimble");
    let requests = [
        http()
            .post(create_url(&leaf, USER))
            .json(&json!({"provider": "Trimble"})),
        http().get(link_url(&leaf, None)),
        http().get(link_url(&leaf, Some(&id))),
        http().delete(link_url(&leaf, Some(&id))),
        http().get(&app_keys),
        http().get(format!("{app_keys}/farm-app")),
        http().delete(format!("{app_keys}/farm-app")),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = http()
        .get(link_url(&leaf, None))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(leaf.magic_links().len(), 1);
    assert!(!leaf.magic_links()[0].deleted);
    assert_eq!(leaf.app_keys().len(), 1);
}

#[tokio::test]
async fn an_expired_link_is_still_returned_until_deleted_and_cannot_be_used() {
    let leaf = leaf().await;
    let id = create_ok(&leaf).await;
    assert!(leaf.expire_magic_link(&id));
    let (status, link) = get(link_url(&leaf, Some(&id))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(time(&link["expiresAt"]) < jiff::Timestamp::now());
    assert_eq!(leaf.open_magic_link(&id), Err(LinkRefused::Expired));
    assert_eq!(leaf.complete_magic_link(&id), Err(LinkRefused::Expired));
    assert!(leaf.credential(USER).is_none());
    assert_eq!(leaf.magic_links()[0].usage_count, 0);
}

#[tokio::test]
async fn opening_counts_uses_up_to_max_usage() {
    let leaf = leaf().await;
    let id = create_ok(&leaf).await;
    leaf.set_magic_link_max_usage(1);
    let single = create_ok(&leaf).await;

    for _ in 0..3 {
        leaf.open_magic_link(&id).unwrap();
    }
    assert_eq!(leaf.open_magic_link(&id), Err(LinkRefused::UsedUp));
    let (_, link) = get(link_url(&leaf, Some(&id))).await;
    assert_eq!(link["usageCount"], 3);
    assert_eq!(link["maxUsage"], 3);
    let accessed = time(&link["lastAccessedAt"]);
    assert!(accessed >= time(&link["createdAt"]));

    leaf.open_magic_link(&single).unwrap();
    assert_eq!(leaf.complete_magic_link(&single), Err(LinkRefused::UsedUp));
    assert_eq!(
        leaf.open_magic_link("no-such-link"),
        Err(LinkRefused::Unknown)
    );
}

#[tokio::test]
async fn completing_creates_the_trimble_credential_as_a_post_would() {
    let leaf = leaf().await;
    let id = create_ok(&leaf).await;
    let credential_id = leaf.complete_magic_link(&id).unwrap();

    let credentials = format!(
        "{}/services/usermanagement/api/users/{USER}/trimble-credentials",
        leaf.origin()
    );
    let (status, credential) = get(credentials.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(credential["id"], credential_id.as_str());
    assert_eq!(credential["status"], "OK");
    assert_eq!(credential["clientId"], CLIENT_ID);
    let created = time(&credential["createdTime"]);
    assert!(jiff::Timestamp::now().duration_since(created).as_secs() < 60);
    let (status, events) = get(format!("{credentials}/events")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    assert_eq!(leaf.magic_links()[0].usage_count, 1);
}

#[tokio::test]
async fn completing_replaces_a_credential_the_user_already_had() {
    let leaf = leaf().await;
    let old = leaf.seed_credential(USER, "old-client");
    leaf.push_event(USER, 400, None, None);
    let id = create_ok(&leaf).await;
    let new_id = leaf.complete_magic_link(&id).unwrap();
    assert_ne!(new_id, old.id);
    let now = leaf.credential(USER).unwrap();
    assert_eq!(now.id, new_id);
    assert_eq!(now.client_id, CLIENT_ID);
    assert_eq!(
        leaf.events(USER).len(),
        1,
        "the old credential's events went"
    );
}

#[tokio::test]
async fn completing_needs_a_registered_app_and_an_existing_user() {
    let leaf = leaf().await;
    let id = create_ok(&leaf).await;
    leaf.remove_app_key("farm-app");
    assert_eq!(leaf.complete_magic_link(&id), Err(LinkRefused::NoAppKey));
    leaf.register_app_key("farm-app", CLIENT_ID);
    leaf.remove_user(USER);
    assert_eq!(leaf.complete_magic_link(&id), Err(LinkRefused::UserGone));
    assert_eq!(leaf.magic_links()[0].usage_count, 0, "no use was counted");
}

#[tokio::test]
async fn app_keys_never_show_secrets_and_refuse_duplicates() {
    let leaf = StandIn::start(StandInConfig::default().with_token(TOKEN)).await;
    let base = format!(
        "{}/services/usermanagement/api/app-keys/Trimble",
        leaf.origin()
    );
    let body = json!({"applicationName": "Farm", "clientId": "cid-PLANTED",
                      "clientSecret": "secret-PLANTED"});
    let post = || {
        http()
            .post(format!("{base}/farm"))
            .bearer_auth(TOKEN)
            .json(&body)
    };
    let response = post().send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let text = response.text().await.unwrap();
    assert!(!text.contains("PLANTED"), "{text}");
    assert_eq!(post().send().await.unwrap().status(), StatusCode::CONFLICT);
    let (status, one) = get(format!("{base}/farm")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["provider"], "Trimble");
    assert_eq!(one["appName"], "farm");
    assert_eq!(one["clientEnvironment"], Value::Null);
    assert!(one["createdTime"].is_string());
    assert!(!one.to_string().contains("PLANTED"), "{one}");
    let (_, all) = get(base.clone()).await;
    assert_eq!(all, json!([one]));
    assert_eq!(get(format!("{base}/other")).await.0, StatusCode::NOT_FOUND);

    let bad = http()
        .post(format!("{base}/other"))
        .bearer_auth(TOKEN)
        .json(&json!({"applicationName": "x", "clientId": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        bad.status(),
        StatusCode::BAD_REQUEST,
        "clientSecret missing"
    );

    let put = http()
        .put(format!("{base}/farm"))
        .bearer_auth(TOKEN)
        .json(&json!({"applicationName": "Farm", "clientId": "cid-2", "clientSecret": "s2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(leaf.app_keys()[0].client_id, "cid-2");
    let put = http()
        .put(format!("{base}/other"))
        .bearer_auth(TOKEN)
        .json(&json!({"applicationName": "Farm", "clientId": "c", "clientSecret": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NOT_FOUND);

    let delete = |name: &str| {
        http()
            .delete(format!("{base}/{name}"))
            .bearer_auth(TOKEN)
            .send()
    };
    assert_eq!(delete("farm").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        delete("farm").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert!(leaf.app_keys().is_empty());
}

#[tokio::test]
async fn a_create_can_fail_after_it_was_applied() {
    let leaf = leaf().await;
    leaf.fail_after_apply_next("POST", 1, 503);
    let (status, _) = create(&leaf, USER, json!({"provider": "Trimble"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(leaf.magic_links().len(), 1, "the link exists at Leaf");
    assert_eq!(leaf.counters().failed_after_apply, 1);
    // Path filters reach the Magic Link routes like any other.
    leaf.set_fault_path_filter(Some("/magic-link/"));
    leaf.fail_every_nth(1, 502);
    assert_eq!(get(link_url(&leaf, None)).await.0, StatusCode::BAD_GATEWAY);
    let credentials = format!(
        "{}/services/usermanagement/api/users/{USER}/trimble-credentials",
        leaf.origin()
    );
    assert_eq!(
        get(credentials).await.0,
        StatusCode::NOT_FOUND,
        "other paths are not hit"
    );
}

#[tokio::test]
async fn the_controls_drive_the_grower_side_over_http() {
    let leaf = leaf().await;
    let control = |path: &str| http().post(format!("{}/_standin/{path}", leaf.origin()));
    let response = control("app-keys/second")
        .json(&json!({"clientId": "c2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(leaf.app_keys().len(), 2);
    let response = control("magic-links/settings")
        .json(&json!({"maxUsage": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let id = create_ok(&leaf).await;
    assert_eq!(leaf.magic_links()[0].max_usage, 2);

    let open = control(&format!("magic-links/{id}/open"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::NO_CONTENT);
    let complete = control(&format!("magic-links/{id}/complete"))
        .send()
        .await
        .unwrap();
    assert_eq!(complete.status(), StatusCode::OK);
    let body: Value = complete.json().await.unwrap();
    assert_eq!(
        body["credentialId"].as_str(),
        Some(leaf.credential(USER).unwrap().id.as_str())
    );
    let again = control(&format!("magic-links/{id}/open"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::GONE, "used up at 2");
    let unknown = control("magic-links/nope/complete").send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let listed: Value = http()
        .get(format!("{}/_standin/magic-links", leaf.origin()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["usageCount"], 2);
    let expire = control(&format!("magic-links/{id}/expire"))
        .send()
        .await
        .unwrap();
    assert_eq!(expire.status(), StatusCode::NO_CONTENT);
    assert!(leaf.magic_links()[0].is_expired(jiff::Timestamp::now()));
}

/// Kills the stand-in process when the test ends, passed or failed.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_magic_links_with_its_app_key_flag_and_controls() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_leaf-standin"))
        .args(["--listen", "127.0.0.1:0", "--token", TOKEN, "--user", USER])
        .args(["--app-key", &format!("farm-app:{CLIENT_ID}")])
        .args(["--magic-link-max-usage", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn leaf-standin");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let process = Process(child);
    let mut line = String::new();
    let mut stdout = BufReader::new(stdout);
    stdout.read_line(&mut line).unwrap();
    let origin = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();

    let response = http()
        .post(format!(
            "{origin}/services/widgets/api/magic-link/users/{USER}/authentication"
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"provider": "Trimble"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let link: Value = http()
        .get(format!(
            "{origin}/services/widgets/api/magic-link/authentication/{id}"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(link["maxUsage"], 1, "from --magic-link-max-usage");
    let complete = http()
        .post(format!("{origin}/_standin/magic-links/{id}/complete"))
        .send()
        .await
        .unwrap();
    assert_eq!(complete.status(), StatusCode::OK);
    let credential: Value = http()
        .get(format!("{origin}/_standin/users/{USER}/credential"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(credential["clientId"], CLIENT_ID, "from --app-key");

    // Stop it and read everything it printed: no link or id in its output.
    drop(process);
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut printed).unwrap();
    std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut printed).unwrap();
    assert!(
        !printed.contains(&id),
        "the stand-in printed a link id: {printed}"
    );
}
