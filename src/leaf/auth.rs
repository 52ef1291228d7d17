//! The per-account token cache: one login shared by concurrent callers, renewal before the JWT's
//! `exp`, invalidation after a 401, and one shared backoff after a refused login.
//!
//! A refused login is remembered per account: until its backoff (1 s doubling, capped) has passed
//! every caller gets the same refusal without a request, so N resources on a wrong password cause
//! one failed login per period, not N (Leaf could lock the account). A changed password or token
//! is a different account key, so a fixed Secret is tried at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use super::account::{AccountKey, LeafAccount};
use super::error::{LeafError, MAX_RETRY_AFTER};

/// First wait after a refused login; it doubles with each refusal up to [`MAX_RETRY_AFTER`].
const FIRST_LOGIN_BACKOFF: Duration = Duration::from_secs(1);

/// Renew at most this long before `exp` ...
const MAX_RENEW_MARGIN: Duration = Duration::from_secs(60);
/// ... and at most this share of the token's remaining life at login, for short-lived tokens.
const RENEW_MARGIN_FRACTION: f64 = 0.2;

struct CachedToken {
    token: SecretString,
    /// When to log in again; `None` when the token carries no usable `exp` (kept until a 401).
    renew_at: Option<Instant>,
}

impl CachedToken {
    fn new(token: SecretString) -> Self {
        let renew_at = jwt_expiry(token.expose_secret()).and_then(|exp| renew_at(exp, unix_now()));
        Self { token, renew_at }
    }

    fn is_fresh(&self) -> bool {
        self.renew_at.is_none_or(|at| Instant::now() < at)
    }
}

/// What is known about an account's login.
enum Login {
    Token(CachedToken),
    /// Leaf refused the last login: no new attempt before `until`.
    Refused {
        until: Instant,
        refusals: u32,
        status: Option<u16>,
        detail: String,
    },
}

type Slot = Arc<tokio::sync::Mutex<Option<Login>>>;

/// Tokens by account. Each account has its own async lock, held across a login, so concurrent
/// callers for one account wait for a single login instead of each logging in.
#[derive(Default)]
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<AccountKey, Slot>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache { .. }")
    }
}

impl TokenCache {
    fn slot(&self, key: AccountKey) -> Slot {
        self.slots
            .lock()
            .expect("token cache lock")
            .entry(key)
            .or_default()
            .clone()
    }

    /// The bearer token for `account`, logging in with `login` when none is cached or it is due
    /// for renewal. Static tokens are returned as they are.
    pub(crate) async fn token<F, Fut>(
        &self,
        account: &LeafAccount,
        login: F,
    ) -> Result<SecretString, LeafError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SecretString, LeafError>>,
    {
        if let LeafAccount::Token(token) = account {
            return Ok(token.clone());
        }
        let slot = self.slot(account.account_key());
        let mut cached = slot.lock().await;
        let refusals = match cached.as_ref() {
            Some(Login::Token(token)) if token.is_fresh() => return Ok(token.token.clone()),
            Some(Login::Refused {
                until,
                refusals,
                status,
                detail,
            }) => {
                let left = until.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    return Err(LeafError::AuthFailed {
                        status: *status,
                        retry_after: Some(left),
                        detail: format!(
                            "{detail} (the login was refused; not trying again for {}s)",
                            left.as_secs().max(1)
                        ),
                    });
                }
                *refusals
            }
            _ => 0,
        };
        match login().await {
            Ok(token) => {
                *cached = Some(Login::Token(CachedToken::new(token.clone())));
                Ok(token)
            }
            Err(LeafError::AuthFailed { status, detail, .. }) => {
                let wait = FIRST_LOGIN_BACKOFF
                    .saturating_mul(2u32.saturating_pow(refusals.min(20)))
                    .min(MAX_RETRY_AFTER);
                *cached = Some(Login::Refused {
                    until: Instant::now() + wait,
                    refusals: refusals.saturating_add(1),
                    status,
                    detail: detail.clone(),
                });
                Err(LeafError::AuthFailed {
                    status,
                    retry_after: Some(wait),
                    detail,
                })
            }
            // Leaf being down says nothing about the password: not remembered.
            Err(other) => Err(other),
        }
    }

    /// Forgets `used` after Leaf answered 401 to it; a token already replaced by another caller's
    /// fresh login is kept, so a burst of 401s still causes one login.
    pub(crate) async fn invalidate(&self, account: &LeafAccount, used: &SecretString) {
        if !account.can_login() {
            return;
        }
        let slot = self.slot(account.account_key());
        let mut cached = slot.lock().await;
        if matches!(cached.as_ref(), Some(Login::Token(t)) if t.token.expose_secret() == used.expose_secret())
        {
            *cached = None;
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// When to renew a token expiring at `exp` (Unix seconds), seen at `now`. `None` when `exp` is
/// already past: with a skewed clock we would otherwise log in on every call, so we trust the
/// token until Leaf answers 401.
fn renew_at(exp: f64, now: f64) -> Option<Instant> {
    let remaining = exp - now;
    if !remaining.is_finite() || remaining <= 0.0 {
        return None;
    }
    let remaining = Duration::from_secs_f64(remaining.min(10.0 * 365.0 * 86_400.0));
    let margin = MAX_RENEW_MARGIN.min(remaining.mul_f64(RENEW_MARGIN_FRACTION));
    Some(Instant::now() + (remaining - margin))
}

/// The `exp` claim of a JWT-shaped token, read without verifying the signature (we only need to
/// know when Leaf will stop accepting it).
pub(crate) fn jwt_expiry(token: &str) -> Option<f64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match claims.get("exp")? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS512"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn exp_is_read_from_the_payload() {
        assert_eq!(
            jwt_expiry(&jwt(r#"{"sub":"u","exp":1700000000}"#)),
            Some(1_700_000_000.0)
        );
        assert_eq!(jwt_expiry(&jwt(r#"{"sub":"u"}"#)), None);
        assert_eq!(jwt_expiry("not-a-jwt"), None);
        assert_eq!(jwt_expiry("a.!!!.c"), None);
        // Padded base64 is tolerated too.
        let padded = format!("h.{}==.s", URL_SAFE_NO_PAD.encode(r#"{"exp":5}"#));
        assert_eq!(jwt_expiry(&padded), Some(5.0));
    }

    #[test]
    fn renewal_leaves_a_margin_proportionate_to_the_lifetime() {
        let now = Instant::now();
        let at = renew_at(1000.0 + 3600.0, 1000.0).unwrap();
        let lead = at.duration_since(now);
        assert!(
            lead <= Duration::from_secs(3541) && lead >= Duration::from_secs(3539),
            "{lead:?}"
        );
        let at = renew_at(1010.0, 1000.0).unwrap();
        let lead = at.duration_since(now);
        assert!(
            lead <= Duration::from_secs(9) && lead >= Duration::from_secs(7),
            "{lead:?}"
        );
        assert!(renew_at(999.0, 1000.0).is_none());
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_login() {
        let cache = Arc::new(TokenCache::default());
        let logins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let account = LeafAccount::password("u", "p");
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, logins, account) = (cache.clone(), logins.clone(), account.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .token(&account, || async {
                        logins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(SecretString::from("tok"))
                    })
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().expose_secret(), "tok");
        }
        assert_eq!(logins.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_login_is_shared_and_not_repeated_until_its_backoff_passes() {
        let cache = TokenCache::default();
        let logins = std::sync::atomic::AtomicUsize::new(0);
        let account = LeafAccount::password("u", "wrong");
        let refuse = || async {
            logins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(LeafError::AuthFailed {
                status: Some(401),
                retry_after: None,
                detail: "Bad credentials".into(),
            })
        };
        for _ in 0..20 {
            let error = cache.token(&account, refuse).await.unwrap_err();
            let wait = error.retry_after().expect("a backoff");
            assert!(wait <= FIRST_LOGIN_BACKOFF, "{wait:?}");
        }
        assert_eq!(logins.load(std::sync::atomic::Ordering::SeqCst), 1, "one refused login");
        // A corrected password is another account: tried at once.
        let fixed = LeafAccount::password("u", "right");
        let token = cache
            .token(&fixed, || async { Ok(SecretString::from("tok")) })
            .await
            .unwrap();
        assert_eq!(token.expose_secret(), "tok");
    }
}
