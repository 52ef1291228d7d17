//! Leaf's answers read for what they say: a wrong Leaf user is not a bad Secret, "try again"
//! statuses are not rejections, a refused login is shared and not repeated per resource, and no
//! header value can crash the operator.

mod support;

use std::time::Duration;

use leaf_standin::RetryAfter;
use support::operator::{Fixture, condition};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_wrong_leaf_user_id_is_its_own_reason_naming_the_spec_field() {
    let f = Fixture::start("no-user").await;
    f.standin.set_auto_create_users(false);
    f.create_farm_with_default_credentials("no-such-leaf-user")
        .await;
    let tc = f.wait_reason("farm", "LeafUserNotFound", WAIT).await;
    let status = tc.status.unwrap();
    let ready = condition(&status, "Ready").unwrap();
    assert!(
        ready.message.contains("spec.leafUserId"),
        "{}",
        ready.message
    );
    assert!(
        !ready.message.contains("into Secret"),
        "the Secret is not what to fix: {}",
        ready.message
    );
    assert_eq!(
        condition(&status, "Stalled").map(|c| c.status.as_str()),
        Some("True"),
        "a person has to act"
    );
    let (kind, _) = f.wait_event("farm", "LeafUserNotFound", WAIT).await;
    assert_eq!(kind, "Warning");
    // Nothing about the Secret's values is concluded: they are not marked as used.
    assert_eq!(status.secret_fingerprint, None);
    assert!(status.sent_refresh_tokens.is_empty());
}

#[tokio::test]
async fn request_timeout_too_early_and_redirects_are_retried_not_rejections() {
    let f = Fixture::start("retryable").await;
    // Only the credential POSTs fail (a login is a POST too).
    f.standin
        .set_fault_path_filter(Some("/trimble-credentials"));
    f.standin.set_fault_method_filter(Some("POST"));
    for (code, user) in [(408, "user-408"), (425, "user-425"), (307, "user-307")] {
        f.standin.fail_every_nth(1, code);
        let name = format!("farm-{code}");
        // A Secret per resource: one refresh token is never shared by two Leaf users.
        let secret = format!("creds-{code}");
        f.put_credentials(&secret, "client-a", "secret-a", &format!("refresh-{code}"))
            .await;
        f.create_tc(&name, user, &secret, serde_json::json!({}))
            .await;
        let tc = f.wait_reason(&name, "LeafUnavailable", WAIT).await;
        let message = condition(tc.status.as_ref().unwrap(), "Ready")
            .unwrap()
            .message
            .clone();
        assert!(message.contains(&format!("HTTP {code}")), "{message}");
        assert!(
            tc.status.unwrap().pending_create.is_none(),
            "nothing is in doubt after {code}"
        );
        f.standin.fail_every_nth(0, code);
        f.wait_reason(&name, "CredentialValid", WAIT).await;
        assert_eq!(f.count_calls(user, "POST"), 2, "{:?}", f.leaf_calls(user));
    }
}

#[tokio::test]
async fn a_refused_login_is_shared_by_every_resource_and_retried_at_once_when_the_account_changes()
{
    let f = Fixture::start("login").await;
    f.standin.add_account("team-b", "right-password-Qx1");
    f.put_secret(
        "team-b-leaf",
        &[("username", "team-b"), ("password", "wrong-password-Zz9")],
    )
    .await;
    let names: Vec<String> = (0..8).map(|i| format!("farm-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let secret = format!("creds-{i}");
        f.put_credentials(&secret, "client-a", "secret-a", &format!("refresh-{i}"))
            .await;
        f.create_tc(
            name,
            &format!("user-login-{i}"),
            &secret,
            serde_json::json!({"leafAuthSecretRef": {"name": "team-b-leaf"}}),
        )
        .await;
    }
    for name in &names {
        f.wait_reason(name, "LeafAuthFailed", WAIT).await;
    }
    // Eight resources, one account: the refusals are not multiplied by the resources.
    let refused = f.standin.counters().failed_logins;
    assert!(
        refused <= 3,
        "{refused} failed logins for one wrong password and 8 resources"
    );

    f.put_secret(
        "team-b-leaf",
        &[("username", "team-b"), ("password", "right-password-Qx1")],
    )
    .await;
    let fixed = std::time::Instant::now();
    for name in &names {
        f.wait_reason(name, "CredentialValid", WAIT).await;
    }
    assert!(
        fixed.elapsed() < Duration::from_secs(20),
        "a corrected account is tried at once, not after the backoff: {:?}",
        fixed.elapsed()
    );
}

#[tokio::test]
async fn absurd_retry_after_values_never_crash_the_operator() {
    let mut f = Fixture::start("retry-after").await;
    for (i, value) in [
        "1e20",
        "18446744073709551615",
        "-3",
        "Thu, 01 Jan 2150 00:00:00 GMT",
    ]
    .into_iter()
    .enumerate()
    {
        f.standin
            .rate_limit_next(1, RetryAfter::Raw(value.to_string()));
        let name = format!("farm-{i}");
        let secret = format!("creds-{i}");
        f.put_credentials(&secret, "client-a", "secret-a", &format!("refresh-{i}"))
            .await;
        f.create_tc(
            &name,
            &format!("user-ra-{i}"),
            &secret,
            serde_json::json!({}),
        )
        .await;
        let tc = f.wait_reason(&name, "LeafUnavailable", WAIT).await;
        assert!(
            condition(tc.status.as_ref().unwrap(), "Ready")
                .unwrap()
                .message
                .contains("429"),
            "{tc:?}"
        );
        assert!(
            f.operator.is_running(),
            "Retry-After {value:?} stopped the operator"
        );
        // The backoff is capped (6 minutes at most): a person's request goes through now.
        f.poke(&name).await;
        f.wait_reason(&name, "CredentialValid", WAIT).await;
    }
    assert!(!f.operator.log().contains("panicked"), "a panic was logged");
}
