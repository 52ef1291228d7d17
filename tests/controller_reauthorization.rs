//! Re-authorization through Leaf Magic Links, on the real control plane against the stand-in: a
//! dead credential becomes a link for the grower, the grower's completion makes the resource Ready
//! with Leaf's new credential (no refresh token POSTed), links are renewed and deleted, a resource
//! without any Secret connects the same way, a missing Trimble application is reported with its
//! fix, and a credential the link does not account for is not taken as the grower's. Every output
//! is scanned for the link.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use leaf_operator::crd::CredentialSource;
use leaf_standin::{StandInConfig, StoredMagicLink};
use support::operator::{Fixture, conditions};

const WAIT: Duration = Duration::from_secs(60);
const APP: &str = "acme-trimble-app";

fn reauthorization() -> serde_json::Value {
    serde_json::json!({"reauthorization": {"policy": "MagicLink", "expiresIn": "1h"}})
}

/// The links the stand-in holds for `user` that are not deleted.
fn live_links(f: &Fixture, user: &str) -> Vec<StoredMagicLink> {
    f.standin
        .magic_links()
        .into_iter()
        .filter(|l| l.leaf_user_id == user && !l.deleted)
        .collect()
}

/// The one live link of `user` (fails on none or several: never two live links).
fn the_link(f: &Fixture, user: &str) -> StoredMagicLink {
    let live = live_links(f, user);
    assert_eq!(live.len(), 1, "exactly one live Magic Link: {live:?}");
    live.into_iter().next().unwrap()
}

/// The link Secret's string values.
async fn link_secret(f: &Fixture, name: &str) -> Option<(String, String)> {
    let secret: Secret = f.secrets.get_opt(name).await.expect("read secret")?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8(v.0.clone()).expect("utf-8"))
            .unwrap_or_default()
    };
    Some((text("link"), text("expiresAt")))
}

/// Waits for reason `AwaitingGrower` and returns the link the grower got.
async fn awaiting_grower(f: &Fixture, name: &str, user: &str) -> StoredMagicLink {
    let tc = f.wait_reason(name, "AwaitingGrower", WAIT).await;
    let status = tc.status.expect("status");
    let out = status.magic_link.expect("status.magicLink");
    assert_eq!(out.secret_name, format!("{name}-magic-link"));
    assert!(out.pending.is_none() && !out.retired, "{out:?}");
    let link = the_link(f, user);
    let (url, expires) = link_secret(f, &out.secret_name)
        .await
        .expect("the link Secret");
    assert_eq!(url, link.link, "the Secret holds the live link");
    assert!(!expires.is_empty());
    link
}

/// Every place a person or a tool can read: the status, its conditions, the Events, the metrics and
/// the operator's whole log. None may hold a link, its id or their base64.
async fn assert_no_link_anywhere(f: &Fixture, name: &str, links: &[StoredMagicLink]) {
    let tc = f.get(name).await;
    let status = serde_json::to_string(&tc.status).unwrap();
    let events = format!("{:?}", f.events(name).await);
    let metrics = match f.operator.http_addr() {
        Some(addr) => reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body"),
        None => panic!("the operator serves /metrics"),
    };
    let log = f.operator.log();
    for link in links {
        for needle in [
            link.id.clone(),
            link.link.clone(),
            STANDARD.encode(&link.id),
            STANDARD.encode(&link.link),
        ] {
            for (place, text) in [
                ("status", &status),
                ("events", &events),
                ("metrics", &metrics),
                ("log", &log),
            ] {
                assert!(
                    !text.contains(&needle),
                    "the link (or its id) is in the {place}"
                );
            }
        }
    }
}

async fn start(prefix: &str) -> Fixture {
    let f = Fixture::start_with(prefix, StandInConfig::default(), |o| o.rust_log("trace")).await;
    f.standin.register_app_key(APP, "client-a");
    f
}

#[tokio::test]
async fn a_dead_credential_becomes_a_link_and_the_growers_completion_makes_it_ready_without_a_post()
{
    let f = start("reauth").await;
    let user = "user-reauth";
    f.put_default_credentials().await;
    f.create_tc("farm", user, "creds", reauthorization()).await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let dead = tc.status.unwrap().credential_id.unwrap();
    assert_eq!(f.count_calls(user, "POST"), 1);

    // The grower revokes access: Leaf reports the credential invalid.
    assert!(f.standin.set_status(user, "invalid"));
    f.poke("farm").await;
    let link = awaiting_grower(&f, "farm", user).await;
    let (kind, note) = f
        .wait_event("farm", "ReauthorizationLinkIssued", WAIT)
        .await;
    assert_eq!(kind, "Warning");
    assert!(note.contains("farm-magic-link"), "{note}");
    // The dead credential went first, with one DELETE; no refresh token was POSTed again.
    assert!(f.standin.credential(user).is_none(), "the dead one is gone");
    assert_eq!(
        f.get("farm")
            .await
            .status
            .unwrap()
            .credential_status
            .as_deref(),
        Some("invalid"),
        "the status shows what Leaf last said of it, not the check before"
    );
    assert_eq!(f.count_calls(user, "DELETE"), 1);
    assert_eq!(f.count_calls(user, "POST"), 1);
    let tc = f.get("farm").await;
    assert_eq!(
        conditions(&tc),
        vec![(
            "Ready".to_string(),
            "False".to_string(),
            "AwaitingGrower".to_string()
        )],
        "waiting for the grower: neither Stalled nor Reconciling"
    );

    // The grower completes it; Leaf creates the credential itself.
    let made = f.standin.complete_magic_link(&link.id).expect("completed");
    assert_ne!(made, dead);
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let status = tc.status.clone().unwrap();
    assert_eq!(status.credential_id.as_deref(), Some(made.as_str()));
    assert_eq!(status.credential_source, Some(CredentialSource::MagicLink));
    f.wait_until_status("farm", WAIT, |s| s.magic_link.is_none())
        .await;
    assert!(
        live_links(&f, user).is_empty(),
        "the link is deleted at Leaf"
    );
    assert!(
        link_secret(&f, "farm-magic-link").await.is_none(),
        "and its Secret removed"
    );
    f.wait_event("farm", "ReauthorizationCompleted", WAIT).await;
    assert_eq!(
        f.count_calls(user, "POST"),
        1,
        "no refresh token POSTed over it"
    );

    // A change of the Secret does not replace the grower's working credential.
    f.put_credentials("creds", "client-a", "secret-a", "refresh-new")
        .await;
    let tc = f.poke_and_wait("farm", WAIT).await;
    assert_eq!(
        tc.status.unwrap().credential_id.as_deref(),
        Some(made.as_str())
    );
    assert_eq!(f.count_calls(user, "POST"), 1);
    assert_no_link_anywhere(&f, "farm", &[link]).await;
}

#[tokio::test]
async fn a_resource_without_a_secret_connects_through_the_link() {
    let f = start("connect").await;
    let user = "user-connect";
    let mut spec = reauthorization();
    spec["credentialsSecretRef"] = serde_json::Value::Null;
    f.create_tc("farm", user, "unused", spec).await;
    let link = awaiting_grower(&f, "farm", user).await;
    assert!(f.leaf_calls(user).iter().all(|c| c.starts_with("GET")));
    let made = f.standin.complete_magic_link(&link.id).expect("completed");
    let tc = f.poke_and_wait("farm", WAIT).await;
    let tc = if tc.status.as_ref().and_then(|s| s.credential_id.clone()) == Some(made.clone()) {
        tc
    } else {
        f.wait_reason("farm", "CredentialValid", WAIT).await
    };
    let status = tc.status.unwrap();
    assert_eq!(status.credential_id.as_deref(), Some(made.as_str()));
    assert_eq!(status.credential_source, Some(CredentialSource::MagicLink));
    assert_eq!(f.count_calls(user, "POST"), 0, "no refresh token anywhere");
    f.wait_until_status("farm", WAIT, |s| s.magic_link.is_none())
        .await;
    assert!(live_links(&f, user).is_empty());
    assert_no_link_anywhere(&f, "farm", &[link]).await;
}

#[tokio::test]
async fn a_crd_refuses_a_resource_with_neither_a_secret_nor_a_link() {
    let f = start("refuse").await;
    let refused = f
        .tcs
        .create(
            &Default::default(),
            &support::objects::trimble_connection(
                "farm",
                "user-refuse",
                "unused",
                serde_json::json!({"credentialsSecretRef": null}),
            ),
        )
        .await
        .expect_err("refused at admission");
    assert!(
        refused.to_string().contains(
            "credentialsSecretRef is required unless reauthorization.policy is MagicLink"
        ),
        "{refused}"
    );
    let refused = f
        .tcs
        .create(
            &Default::default(),
            &support::objects::trimble_connection(
                "farm",
                "user-refuse",
                "creds",
                serde_json::json!({"reauthorization": {"expiresIn": "5m"}}),
            ),
        )
        .await
        .expect_err("refused at admission");
    assert!(
        refused.to_string().contains("between 15m and 8760h"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_missing_trimble_application_is_reported_with_its_fix_and_nothing_is_issued() {
    let f = Fixture::start("appkeys").await;
    let user = "user-appkeys";
    let mut spec = reauthorization();
    spec["credentialsSecretRef"] = serde_json::Value::Null;
    spec["reauthorization"]["appName"] = APP.into();
    f.create_tc("farm", user, "unused", spec).await;
    let tc = f.wait_reason("farm", "MagicLinkAppMissing", WAIT).await;
    let message = conditions_message(&tc);
    assert!(message.contains(APP), "{message}");
    assert!(message.contains("app-keys/Trimble"), "{message}");
    assert!(message.contains("https://widget.withleaf.io"), "{message}");
    assert!(
        conditions(&tc).contains(&(
            "Stalled".to_string(),
            "True".to_string(),
            "MagicLinkAppMissing".to_string()
        )),
        "a person must act"
    );
    assert!(f.standin.magic_links().is_empty(), "no link was issued");
    // Another application is not the one asked for.
    f.standin.register_app_key("someone-elses-app", "client-z");
    f.poke("farm").await;
    let tc = f.poke_and_wait("farm", WAIT).await;
    assert_eq!(
        conditions(&tc)[0].2,
        "MagicLinkAppMissing",
        "{:?}",
        conditions(&tc)
    );
    f.standin.register_app_key(APP, "client-a");
    f.poke("farm").await;
    awaiting_grower(&f, "farm", user).await;
}

fn conditions_message(tc: &leaf_operator::crd::TrimbleConnection) -> String {
    tc.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_expired_or_used_up_link_is_replaced_and_never_two_are_live() {
    let f = start("renew").await;
    let user = "user-renew";
    let mut spec = reauthorization();
    spec["credentialsSecretRef"] = serde_json::Value::Null;
    f.create_tc("farm", user, "unused", spec).await;
    let first = awaiting_grower(&f, "farm", user).await;

    // Leaf expires it: the next look replaces it (deleted first, then a new one).
    assert!(f.standin.expire_magic_link(&first.id));
    f.poke("farm").await;
    let second = wait_for_new_link(&f, user, &first.id).await;
    assert!(
        f.standin
            .magic_links()
            .iter()
            .any(|l| l.id == first.id && l.deleted),
        "the expired one was deleted at Leaf"
    );
    let (url, _) = link_secret(&f, "farm-magic-link").await.unwrap();
    assert_eq!(url, second.link, "the Secret holds the new link");

    // The grower opens it as often as Leaf allows, without finishing: replaced too.
    for _ in 0..second.max_usage {
        f.standin.open_magic_link(&second.id).expect("opened");
    }
    f.poke("farm").await;
    let third = wait_for_new_link(&f, user, &second.id).await;
    the_link(&f, user);
    let made = f.standin.complete_magic_link(&third.id).expect("completed");
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert_eq!(
        tc.status.unwrap().credential_id.as_deref(),
        Some(made.as_str())
    );
    assert_no_link_anywhere(&f, "farm", &[first, second, third]).await;
}

/// Waits until the live link of `user` is another than `old` (and exactly one is live).
async fn wait_for_new_link(f: &Fixture, user: &str, old: &str) -> StoredMagicLink {
    support::wait_until("a new Magic Link", WAIT, || async {
        let live = live_links(f, user);
        match live.as_slice() {
            [one] if one.id != old => Ok(one.clone()),
            other => {
                // Never two at once, at any moment this test looks.
                assert!(other.len() <= 1, "two live Magic Links: {other:?}");
                Err(format!("{other:?}"))
            }
        }
    })
    .await
}

#[tokio::test]
async fn deleting_the_resource_deletes_its_link_and_secret() {
    let f = start("gone").await;
    let user = "user-gone";
    let mut spec = reauthorization();
    spec["credentialsSecretRef"] = serde_json::Value::Null;
    f.create_tc("farm", user, "unused", spec).await;
    let link = awaiting_grower(&f, "farm", user).await;
    f.delete_tc("farm").await;
    f.wait_gone("farm", WAIT).await;
    assert!(live_links(&f, user).is_empty(), "deleted at Leaf");
    assert!(link_secret(&f, "farm-magic-link").await.is_none());
    assert!(
        f.standin.complete_magic_link(&link.id).is_err(),
        "the grower can no longer use it"
    );
}

#[tokio::test]
async fn a_foreign_credential_appearing_while_a_link_is_out_is_not_taken_as_the_growers() {
    let f = start("foreign").await;
    let user = "user-foreign";
    let mut spec = reauthorization();
    spec["credentialsSecretRef"] = serde_json::Value::Null;
    f.create_tc("farm", user, "unused", spec).await;
    let link = awaiting_grower(&f, "farm", user).await;
    // Someone connects the grower elsewhere; the link was never used.
    let foreign = f.standin.seed_credential(user, "client-other");
    f.poke("farm").await;
    let tc = f.wait_reason("farm", "Conflict", WAIT).await;
    let status = tc.status.clone().unwrap();
    assert_ne!(status.credential_id.as_deref(), Some(foreign.id.as_str()));
    assert!(
        conditions_message(&tc).contains("Magic Link did not make it"),
        "{}",
        conditions_message(&tc)
    );
    f.wait_until_status("farm", WAIT, |s| s.magic_link.is_none())
        .await;
    assert!(live_links(&f, user).is_empty(), "the link was withdrawn");
    assert_eq!(
        f.standin.credential(user).map(|c| c.id),
        Some(foreign.id.clone()),
        "the foreign credential is left alone"
    );
    assert_eq!(f.count_calls(user, "DELETE"), 0);
    assert_eq!(f.count_calls(user, "POST"), 0);
    assert!(f.standin.complete_magic_link(&link.id).is_err());
}

#[tokio::test]
async fn new_values_in_the_secret_while_a_link_is_out_withdraw_it_and_are_used() {
    let f = start("secretwins").await;
    let user = "user-secretwins";
    f.put_default_credentials().await;
    f.create_tc("farm", user, "creds", reauthorization()).await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert!(f.standin.set_status(user, "UNAUTHENTICATED"));
    f.poke("farm").await;
    let link = awaiting_grower(&f, "farm", user).await;
    // A person puts a fresh refresh token into the Secret: it wins over the link.
    f.put_credentials("creds", "client-a", "secret-a", "refresh-fresh")
        .await;
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    let status = tc.status.unwrap();
    assert_eq!(status.credential_source, Some(CredentialSource::Secret));
    assert!(status.magic_link.is_none());
    assert!(live_links(&f, user).is_empty(), "the link was withdrawn");
    assert_eq!(
        f.count_calls(user, "POST"),
        2,
        "the first, and the fresh token"
    );
    assert!(f.standin.complete_magic_link(&link.id).is_err());
}

#[tokio::test]
async fn a_link_create_answered_503_after_leaf_issued_it_is_found_not_issued_twice() {
    let f = start("doubt").await;
    let user = "user-doubt";
    // The first POST (the link's create: this resource never POSTs a credential) is applied by
    // Leaf, then answered 503.
    f.standin.fail_after_apply_next("POST", 1, 503);
    let mut spec = reauthorization();
    spec["credentialsSecretRef"] = serde_json::Value::Null;
    f.create_tc("farm", user, "unused", spec).await;
    let link = awaiting_grower(&f, "farm", user).await;
    assert_eq!(
        f.standin.counters().failed_after_apply,
        1,
        "the create was answered 503 after Leaf applied it"
    );
    let created: Vec<_> = f
        .standin
        .magic_links()
        .into_iter()
        .filter(|l| l.leaf_user_id == user)
        .collect();
    assert_eq!(
        created.len(),
        1,
        "the link Leaf issued despite the 503 was found in its list, not issued again: {created:?}"
    );
    assert_eq!(created[0].id, link.id);
    let made = f.standin.complete_magic_link(&link.id).expect("completed");
    let tc = f.wait_reason("farm", "CredentialValid", WAIT).await;
    assert_eq!(
        tc.status.unwrap().credential_id.as_deref(),
        Some(made.as_str())
    );
    assert_no_link_anywhere(&f, "farm", &[link]).await;
}

#[tokio::test]
async fn a_link_secret_name_that_is_someone_elses_secret_is_refused_and_left_alone() {
    let f = start("taken").await;
    let user = "user-taken";
    f.put_secret("farm-magic-link", &[("note", "not the operator's")])
        .await;
    let mut spec = reauthorization();
    spec["credentialsSecretRef"] = serde_json::Value::Null;
    f.create_tc("farm", user, "unused", spec).await;
    let tc = f.wait_reason("farm", "Conflict", WAIT).await;
    assert!(
        conditions_message(&tc).contains("linkSecretName"),
        "{}",
        conditions_message(&tc)
    );
    assert!(f.standin.magic_links().is_empty(), "nothing was issued");
    let secret: Secret = f.secrets.get("farm-magic-link").await.unwrap();
    let data = secret.data.unwrap_or_default();
    assert_eq!(data.len(), 1, "the other Secret is untouched: {data:?}");
    // Another name: the link goes there.
    f.patch_spec(
        "farm",
        serde_json::json!({"reauthorization": {"linkSecretName": "farm-grower-link"}}),
    )
    .await;
    f.wait_reason("farm", "AwaitingGrower", WAIT).await;
    assert!(link_secret(&f, "farm-grower-link").await.is_some());
}

#[tokio::test]
async fn the_operator_default_applies_to_resources_without_their_own_reauthorization() {
    let f = Fixture::start_with("default", StandInConfig::default(), |o| {
        o.env("REAUTHORIZATION_DEFAULT", "MagicLink")
    })
    .await;
    f.standin.register_app_key(APP, "client-a");
    let user = "user-default";
    f.put_default_credentials().await;
    f.create_tc("farm", user, "creds", serde_json::json!({}))
        .await;
    f.wait_reason("farm", "CredentialValid", WAIT).await;
    // One that opts out keeps today's behaviour.
    f.put_credentials("creds-2", "client-a", "secret-a", "refresh-2")
        .await;
    f.create_tc(
        "opted-out",
        "user-opted-out",
        "creds-2",
        serde_json::json!({"reauthorization": {"policy": "None"}}),
    )
    .await;
    f.wait_reason("opted-out", "CredentialValid", WAIT).await;
    assert!(f.standin.set_status(user, "invalid"));
    assert!(f.standin.set_status("user-opted-out", "invalid"));
    f.poke("farm").await;
    f.poke("opted-out").await;
    awaiting_grower(&f, "farm", user).await;
    f.wait_reason("opted-out", "CredentialInvalid", WAIT).await;
    assert!(live_links(&f, "user-opted-out").is_empty());
}
