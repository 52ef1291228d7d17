//! What the benchmark's peer (Crossplane's provider-http, wired as in `tests/support/peer.rs`)
//! does where this operator has a feature: each test tries one row of the feature table in
//! BENCHMARKS.md against the real provider-http, the real API server and the Leaf stand-in, and
//! asserts what was observed. A test here fails when the peer behaves differently from what the
//! table says, so the table cannot go stale silently.
//!
//! Secret values are planted with recognisable markers and only ever compared, never printed:
//! failure messages say whether a value was found, not what it was. The peer's log is not
//! printed either (only its path), since what it contains is one of the findings.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use leaf_standin::{StandIn, StandInConfig};
use support::ControlPlane;
use support::peer::{self, Peer, PeerOptions};
use support::wait_until;

const TOKEN: &str = "peer-probe-static-token";
const WAIT: Duration = Duration::from_secs(60);
/// Poll interval of the probes' peer: short, so that "after the next observation" comes soon.
const POLL: Duration = Duration::from_secs(2);
const CLIENT_SECRET: &str = "probe-client-secret-PLANTED-51c2";
const REFRESH_TOKEN: &str = "probe-refresh-token-PLANTED-9e07";

/// One probe's world: a namespace, a stand-in, a ProviderConfig and a running peer.
struct World {
    _exclusive: tokio::sync::MutexGuard<'static, ()>,
    namespace: String,
    standin: StandIn,
    peer: Peer,
    requests: Api<DynamicObject>,
    secrets: Api<Secret>,
}

impl World {
    async fn start(prefix: &str, standin_config: StandInConfig) -> World {
        let exclusive = peer::exclusive().await;
        let control_plane: &ControlPlane = support::control_plane().await;
        let dir = peer::peer_dir().unwrap_or_else(|e| panic!("the peer is not available:\n{e}"));
        peer::install_crds(control_plane, &dir).await;
        let client = control_plane.client();
        let namespace = control_plane.create_namespace(prefix).await;
        let mut standin_config = standin_config.with_token(TOKEN);
        standin_config.auto_create_users = true;
        let standin = StandIn::start(standin_config).await;
        peer::create_provider_config(&client, &namespace, TOKEN).await;
        let peer = Peer::start(
            control_plane,
            &dir,
            PeerOptions {
                poll: POLL,
                max_reconcile_rate: 10,
            },
        )
        .await;
        World {
            _exclusive: exclusive,
            requests: peer::requests(&client, &namespace),
            secrets: Api::namespaced(client, &namespace),
            namespace,
            standin,
            peer,
        }
    }

    async fn put_credentials(&self, name: &str, client_id: &str, client_secret: &str) {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            string_data: Some(
                [
                    ("clientId".to_string(), client_id.to_string()),
                    ("clientSecret".to_string(), client_secret.to_string()),
                    ("refreshToken".to_string(), REFRESH_TOKEN.to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        match self.secrets.get_opt(name).await.expect("read Secret") {
            None => {
                self.secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .expect("create Secret");
            }
            Some(_) => {
                self.secrets
                    .patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({"stringData": secret.string_data})),
                    )
                    .await
                    .expect("patch Secret");
            }
        }
    }

    async fn create_request(&self, request: DynamicObject) {
        self.requests
            .create(&PostParams::default(), &request)
            .await
            .expect("create Request");
    }

    fn request(&self, name: &str, user: &str, secret: &str) -> DynamicObject {
        peer::leaf_request(name, &self.namespace, &self.standin.origin(), user, secret)
    }

    async fn wait_ready(&self, name: &str) -> DynamicObject {
        self.wait_request(name, "Ready=True", peer::is_ready).await
    }

    async fn wait_request(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&DynamicObject) -> bool,
    ) -> DynamicObject {
        let check = &check;
        wait_until(&format!("Request {name}: {what}"), WAIT, || async move {
            let r = self.requests.get(name).await.map_err(|e| e.to_string())?;
            if check(&r) {
                Ok(r)
            } else {
                Err(peer::describe(&r))
            }
        })
        .await
    }

    /// Leaf calls for `user` as "METHOD STATUS" (e.g. "POST 201"), in order.
    fn calls(&self, user: &str) -> Vec<String> {
        let marker = format!("/users/{user}/trimble-credentials");
        self.standin
            .requests()
            .into_iter()
            .filter(|r| r.path.contains(&marker))
            .map(|r| {
                let what = if r.path.ends_with("/events") {
                    format!("{} events", r.method)
                } else {
                    r.method.clone()
                };
                match r.status {
                    Some(status) => format!("{what} {status}"),
                    None => format!("{what} dropped"),
                }
            })
            .collect()
    }

    /// Waits until the peer has called Leaf for `user` at least `count` times more than `before`
    /// (each poll is one GET): "the peer has looked again".
    async fn wait_calls(&self, user: &str, before: usize, count: usize) -> Vec<String> {
        wait_until(
            &format!("{count} more Leaf calls for {user}"),
            WAIT,
            || async {
                let calls = self.calls(user);
                if calls.len() >= before + count {
                    Ok(calls)
                } else {
                    Err(format!("{calls:?}"))
                }
            },
        )
        .await
    }
}

/// Whether `needle` occurs in the Request as the API server returns it (status included).
fn request_contains(request: &DynamicObject, needle: &str) -> bool {
    serde_json::to_string(request)
        .expect("JSON")
        .contains(needle)
}

#[tokio::test]
async fn the_peer_copies_leafs_secrets_and_live_tokens_into_the_request_status() {
    let w = World::start("peer-redaction", StandInConfig::default()).await;
    w.put_credentials("creds", "client-a", CLIENT_SECRET).await;
    w.create_request(w.request("farm", "user-redaction", "creds"))
        .await;
    w.wait_ready("farm").await;
    // The next observation rewrites the status with Leaf's GET answer.
    let before = w.calls("user-redaction").len();
    w.wait_calls("user-redaction", before, 1).await;
    let request = w
        .wait_request("farm", "a status with Leaf's answer", |r| {
            r.data.pointer("/status/response/body").is_some()
        })
        .await;
    let stored = w
        .standin
        .credential("user-redaction")
        .expect("Leaf holds the credential");
    // What Leaf's GET echoes in clear (leaf-api.md): the Secret's clientSecret, Leaf's live
    // refresh token and access token.
    let found = [
        ("clientSecret", request_contains(&request, CLIENT_SECRET)),
        (
            "Leaf's refreshToken",
            request_contains(&request, &stored.refresh_token),
        ),
        (
            "Leaf's accessToken",
            request_contains(&request, &stored.access_token),
        ),
    ];
    assert!(
        found.iter().all(|(_, found)| *found),
        "which secret values the Request holds (true = in clear): {found:?}"
    );
    // Where: the last response, and its cached copy.
    let field_holds = |pointer: &str| {
        request
            .data
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .is_some_and(|body| {
                body.contains(CLIENT_SECRET)
                    && body.contains(&stored.refresh_token)
                    && body.contains(&stored.access_token)
            })
    };
    assert_eq!(
        (
            field_holds("/status/response/body"),
            field_holds("/status/cache/response/body")
        ),
        (true, true),
        "(status.response.body, status.cache.response.body) hold all three values in clear"
    );
    // The request the peer sent is shown with placeholders, not values.
    let sent_body = request
        .data
        .pointer("/status/requestDetails/body")
        .map(|b| b.to_string())
        .unwrap_or_default();
    assert!(
        !sent_body.contains(CLIENT_SECRET) && !sent_body.contains(REFRESH_TOKEN),
        "status.requestDetails holds the sent body with its placeholders only"
    );
    let log = w.peer.log();
    assert!(
        !log.contains(CLIENT_SECRET)
            && !log.contains(REFRESH_TOKEN)
            && !log.contains(&stored.access_token),
        "provider-http's log (at its default level) holds none of the secret values"
    );
}

#[tokio::test]
async fn a_changed_secret_is_never_rotated_into_leaf() {
    let w = World::start("peer-rotation", StandInConfig::default()).await;
    w.put_credentials("creds", "client-a", CLIENT_SECRET).await;
    w.create_request(w.request("farm", "user-rotation", "creds"))
        .await;
    w.wait_ready("farm").await;
    w.put_credentials("creds", "client-a", "probe-client-secret-NEW-77d1")
        .await;
    let before = w.calls("user-rotation").len();
    // Two more observations after the change: the peer has had every chance to act.
    let calls = w.wait_calls("user-rotation", before, 2).await;
    let after: Vec<&String> = calls[before..].iter().collect();
    assert!(
        after.iter().all(|c| c.starts_with("GET ")),
        "only GETs after the Secret changed: {after:?}"
    );
    let stored = w.standin.credential("user-rotation").expect("credential");
    assert!(
        stored.client_secret == CLIENT_SECRET,
        "Leaf still holds the old clientSecret"
    );
    let request = w.requests.get("farm").await.expect("get Request");
    assert!(
        peer::is_ready(&request),
        "and the Request still says Ready: {}",
        peer::describe(&request)
    );
}

/// The closest a Request can come to a rotation: an UPDATE mapping (Leaf has no update call, so
/// it can only POST again) and a custom up-to-date check comparing the clientSecret Leaf echoes
/// with the Secret's. Leaf refuses a second POST (409 here; undocumented in Leaf): no rotation,
/// the refused POST comes again at every poll, and the conditions never show it.
#[tokio::test]
async fn a_request_that_posts_again_on_a_changed_secret_is_refused_by_leaf_at_every_poll() {
    let w = World::start("peer-rotation-update", StandInConfig::default()).await;
    w.put_credentials("creds", "client-a", CLIENT_SECRET).await;
    let namespace = w.namespace.clone();
    let request = peer::leaf_request_with(
        "farm",
        &w.namespace,
        &w.standin.origin(),
        "user-update",
        "creds",
        |for_provider| {
            let mappings = for_provider["mappings"].as_array_mut().expect("mappings");
            mappings.push(serde_json::json!({
                "action": "UPDATE", "method": "POST", "url": ".payload.baseUrl",
                "body": "{clientId: .payload.body.clientId, clientSecret: .payload.body.clientSecret, refreshToken: .payload.body.refreshToken}",
            }));
            // The placeholder must be in the logic itself: provider-http resolves placeholders
            // in the logic and the response, not in `.payload` (comparing with
            // `.payload.body.clientSecret` never holds, and the UPDATE fires at every poll).
            for_provider["expectedResponseCheck"] = serde_json::json!({
                "type": "CUSTOM",
                "logic": format!("(.response.body.clientSecret == \"{{{{ creds:{namespace}:clientSecret }}}}\")"),
            });
        },
    );
    w.create_request(request).await;
    w.wait_ready("farm").await;
    // Unchanged Secret: the check holds (placeholders are resolved in it), no second POST.
    let before = w.calls("user-update").len();
    let calls = w.wait_calls("user-update", before, 2).await;
    assert!(
        calls[before..].iter().all(|c| c == "GET 200"),
        "only observations while the Secret is unchanged: {:?}",
        &calls[before..]
    );
    let before = calls.len();
    w.put_credentials("creds", "client-a", "probe-client-secret-NEW-3b9a")
        .await;
    let calls = wait_until("two POSTs after the Secret changed", WAIT, || async {
        let calls = w.calls("user-update");
        let posts = calls[before..]
            .iter()
            .filter(|c| c.starts_with("POST "))
            .count();
        if posts >= 2 {
            Ok(calls)
        } else {
            Err(format!("{:?}", &calls[before..]))
        }
    })
    .await;
    let after = &calls[before..];
    assert!(
        after
            .iter()
            .filter(|c| c.starts_with("POST "))
            .all(|c| c == "POST 409"),
        "Leaf refuses every second POST: {after:?}"
    );
    assert!(
        !after.iter().any(|c| c.starts_with("DELETE")),
        "the peer never deletes to rotate: {after:?}"
    );
    let stored = w.standin.credential("user-update").expect("credential");
    assert!(
        stored.client_secret == CLIENT_SECRET,
        "Leaf still holds the old clientSecret"
    );
    let request = w.requests.get("farm").await.expect("get Request");
    assert!(
        peer::is_ready(&request)
            && peer::condition(&request, "Synced").is_some_and(|(s, _, _)| s == "True"),
        "the conditions do not show the refusal: {}",
        peer::describe(&request)
    );
}

#[tokio::test]
async fn a_credential_leaf_marks_invalid_stays_ready_and_leafs_events_are_never_read() {
    let w = World::start("peer-invalid", StandInConfig::default()).await;
    w.put_credentials("creds", "client-a", CLIENT_SECRET).await;
    w.create_request(w.request("farm", "user-invalid", "creds"))
        .await;
    w.wait_ready("farm").await;
    assert!(w.standin.set_status("user-invalid", "UNAUTHENTICATED"));
    let before = w.calls("user-invalid").len();
    let calls = w.wait_calls("user-invalid", before, 2).await;
    let request = w.requests.get("farm").await.expect("get Request");
    assert!(
        peer::is_ready(&request),
        "the Request stays Ready although Leaf says the grower must re-authorize: {}",
        peer::describe(&request)
    );
    assert!(
        !calls.iter().any(|c| c.contains("events")),
        "the peer never reads the credential's events: {calls:?}"
    );
}

#[tokio::test]
async fn an_existing_credential_of_another_client_is_adopted_silently_and_deleted_with_the_request()
{
    let w = World::start("peer-conflict", StandInConfig::default()).await;
    let theirs = w
        .standin
        .seed_credential("user-conflict", "someone-elses-client");
    w.put_credentials("creds", "client-a", CLIENT_SECRET).await;
    w.create_request(w.request("farm", "user-conflict", "creds"))
        .await;
    let request = w.wait_ready("farm").await;
    assert!(
        !w.calls("user-conflict")
            .iter()
            .any(|c| c.starts_with("POST")),
        "no POST: the peer took the existing credential for its own: {:?}",
        w.calls("user-conflict")
    );
    assert_eq!(
        w.standin.credential("user-conflict").map(|c| c.id),
        Some(theirs.id.clone()),
        "Leaf still holds the other client's credential, now reported Ready: {}",
        peer::describe(&request)
    );
    w.requests
        .delete("farm", &DeleteParams::default())
        .await
        .expect("delete Request");
    wait_until("the Request to be gone", WAIT, || async {
        match w
            .requests
            .get_opt("farm")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(r) => Err(peer::describe(&r)),
        }
    })
    .await;
    assert!(
        w.standin.credential("user-conflict").is_none(),
        "deleting the Request deleted the other client's credential in Leaf: {:?}",
        w.calls("user-conflict")
    );
}

#[tokio::test]
async fn a_peer_killed_during_its_post_stops_until_a_human_removes_the_pending_annotation() {
    let mut w = World::start("peer-crash", StandInConfig::default()).await;
    w.put_credentials("creds", "client-a", CLIENT_SECRET).await;
    // A slow Leaf keeps the POST in flight long enough to kill the peer in the middle.
    w.standin.set_latency(Duration::from_secs(2));
    w.create_request(w.request("farm", "user-crash", "creds"))
        .await;
    // Arrivals: the OBSERVE GET (404), then the CREATE POST.
    let handle = w.standin.handle();
    wait_until("the POST to reach Leaf", WAIT, || {
        let handle = handle.clone();
        async move {
            let arrived = handle.counters().requests;
            if arrived >= 2 {
                Ok(())
            } else {
                Err(format!("{arrived} requests arrived"))
            }
        }
    })
    .await;
    w.peer.kill();
    w.standin.set_latency(Duration::ZERO);
    w.peer.restart().await;
    let request = w
        .wait_request(
            "farm",
            "Synced=False: the creation result is unknown",
            |r| {
                peer::condition(r, "Synced").is_some_and(|(s, _, m)| {
                    s == "False" && m.contains("cannot determine creation result")
                })
            },
        )
        .await;
    assert!(
        !peer::is_ready(&request),
        "not Ready: {}",
        peer::describe(&request)
    );
    let annotations = request.metadata.annotations.clone().unwrap_or_default();
    assert!(
        annotations.contains_key("crossplane.io/external-create-pending"),
        "the pending annotation stays: {annotations:?}"
    );
    let posts = |w: &World| {
        w.calls("user-crash")
            .iter()
            .filter(|c| c.starts_with("POST"))
            .count()
    };
    assert!(
        posts(&w) <= 1,
        "no second POST: {:?}",
        w.calls("user-crash")
    );
    // The human step: remove the annotation. Removing it alone starts nothing: crossplane's
    // event filter ignores changes of that annotation (a first version of this test waited 60 s
    // after removing it, 30 polls, and saw no reconcile), so the same patch changes another
    // annotation, as a human would have to (or restart the provider, or wait for its 1 h resync).
    w.requests
        .patch(
            "farm",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                "crossplane.io/external-create-pending": null,
                "leaf-operator.test/nudge": "1",
            }}})),
        )
        .await
        .expect("remove the annotation");
    w.wait_ready("farm").await;
    // Counted by Leaf when it stores a credential: a POST cut off by the kill may not be logged.
    assert_eq!(
        w.standin.counters().creates,
        1,
        "exactly one credential created in all: {:?}",
        w.calls("user-crash")
    );
}

#[tokio::test]
async fn the_peer_cannot_renew_its_leaf_token_and_stays_ready_on_401() {
    let w = World::start("peer-token", StandInConfig::default()).await;
    w.put_credentials("creds", "client-a", CLIENT_SECRET).await;
    w.create_request(w.request("farm", "user-token", "creds"))
        .await;
    w.wait_ready("farm").await;
    // The token expires (Leaf tokens live 24 h or 30 days; a static one is what the peer holds).
    w.standin.remove_token(TOKEN);
    let before = w.calls("user-token").len();
    let calls = w.wait_calls("user-token", before, 2).await;
    assert!(
        calls[before..].iter().all(|c| c == "GET 401"),
        "every call after the expiry is refused: {:?}",
        &calls[before..]
    );
    assert_eq!(
        w.standin.logins(),
        0,
        "the peer has no way to log in to Leaf"
    );
    let request = w.requests.get("farm").await.expect("get Request");
    eprintln!("after the token expired: {}", peer::describe(&request));
    assert!(
        peer::is_ready(&request),
        "the Request stays Ready while every Leaf call is refused: {}",
        peer::describe(&request)
    );
}
