//! What each of Leaf's answers means for a write: applied, not applied, or maybe.
//!
//! A write whose effect is unknown is *in doubt*: its intent stays recorded and nothing else is
//! sent for the Leaf user until its window closes (see [`super::windows`]) and a fresh read of
//! Leaf shows the result. Only an answer that proves the request was not processed counts as
//! "not applied"; every other failure counts as "maybe", because the cost of the two mistakes is
//! not the same: a "maybe" that was not applied costs a wait of about two minutes, a "not
//! applied" that was applied sends a single-use refresh token twice (the second POST is refused,
//! or replaces the first credential) or lets a late DELETE remove the credential that replaced
//! it.
//!
//! | answer | POST (create) | DELETE | why |
//! |---|---|---|---|
//! | 2xx, body read | applied | applied | Leaf said so |
//! | 2xx, body unreadable | applied | applied | a success status is Leaf's word; the next GET names the credential |
//! | 404 | not applied (no such user) | nothing was there: applied, unless a read may still lag | processed, found nothing |
//! | 409, or 400 saying "already exists" | not applied | - | Leaf refused because a credential is there; a refresh token it may have used first counts as spent |
//! | other 400, 422 and other 4xx | not applied | not applied | refused by validation, before any effect |
//! | 401, 403 (also after the one re-login) | not applied | not applied | authentication comes before Leaf's handler |
//! | 408, 425 | not applied | not applied | the server says it did not process the request (RFC 9110, RFC 8470) |
//! | 429 | not applied | not applied | a rate limiter refuses before forwarding to the handler |
//! | 301, 307, 308 | not applied | not applied | "repeat it at another URI": not processed here (never followed) |
//! | 302, 303, other 3xx | maybe | maybe | a 303 or 302 is how a server answers *after* processing a POST |
//! | 1xx as a final answer | maybe | maybe | nothing proves it was not processed |
//! | 500, 502, 503, 504 and every other 5xx | maybe | maybe | a gateway or load balancer answers 5xx after the backend processed the request |
//! | no connection could be made | not applied | not applied | nothing was sent |
//! | timeout, connection reset, answer cut off | maybe | maybe | it may have reached Leaf |
//! | not sent: send deadline passed, or the fence refused | not applied | not applied | it never left |
//! | refused login (no token) | not applied | not applied | it never left |
//!
//! What happens next is the business of the transitions ([`super::transitions`]): after "not
//! applied" the intent is cleared and the failure is reported with backoff; after "maybe" the
//! intent stays and the resource waits until the window closes, then reads Leaf again.

use crate::leaf::LeafError;

/// A write to Leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// POST of a credential.
    Create,
    /// DELETE of the Leaf user's credential.
    Delete,
}

/// What a failed write's answer says about its effect in Leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// It took effect although the call failed (a success we could not read).
    Applied,
    /// It certainly did not take effect.
    NotApplied,
    /// It may have taken effect, now or later: in doubt.
    Maybe,
}

/// The effect of a write that failed with `error` (the table in the module doc).
pub fn effect(write: Write, error: &LeafError) -> Effect {
    let effect = effect_as_written(write, error);
    if write == Write::Delete
        && effect == Effect::Maybe
        && super::mutation::on(super::mutation::Mutation::DeleteNeverInDoubt)
    {
        return Effect::NotApplied;
    }
    effect
}

fn effect_as_written(write: Write, error: &LeafError) -> Effect {
    match error {
        LeafError::NotSent(_) | LeafError::Config { .. } | LeafError::AuthFailed { .. } => {
            Effect::NotApplied
        }
        LeafError::UserNotFound { .. }
        | LeafError::Rejected { .. }
        | LeafError::AlreadyExists { .. } => Effect::NotApplied,
        LeafError::InvalidResponse { .. } => match write {
            Write::Create => Effect::Applied,
            // The DELETE reads no body; should it ever, an unreadable success is still a success.
            Write::Delete => Effect::Applied,
        },
        LeafError::Unavailable {
            status: None, sent, ..
        } => {
            if *sent {
                Effect::Maybe
            } else {
                Effect::NotApplied
            }
        }
        LeafError::Unavailable {
            status: Some(code), ..
        } => status_effect(*code),
    }
}

/// The effect of an answer with status `code` that the client classified as "try again".
fn status_effect(code: u16) -> Effect {
    match code {
        408 | 425 | 429 => Effect::NotApplied,
        301 | 307 | 308 => Effect::NotApplied,
        // Any other 4xx that reached here was refused before any effect.
        400..=499 => Effect::NotApplied,
        _ => Effect::Maybe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaf::NotSent;
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    fn answered(code: u16, body: &str, is_create: bool) -> LeafError {
        LeafError::from_answer(
            StatusCode::from_u16(code).expect("code"),
            &HeaderMap::new(),
            body,
            is_create,
        )
    }

    fn transport(sent: bool) -> LeafError {
        LeafError::Unavailable {
            status: None,
            retry_after: None,
            sent,
            detail: "x".into(),
        }
    }

    #[test]
    fn the_write_by_answer_table() {
        use Effect::*;
        let rows: Vec<(&str, LeafError, Effect, Effect)> = vec![
            (
                "unreadable success",
                LeafError::InvalidResponse { detail: "x".into() },
                Applied,
                Applied,
            ),
            ("404", answered(404, "", true), NotApplied, NotApplied),
            ("409", answered(409, "", true), NotApplied, NotApplied),
            (
                "400 already exists",
                answered(400, r#"{"detail":"already exists"}"#, true),
                NotApplied,
                NotApplied,
            ),
            (
                "400 validation",
                answered(400, "clientId is required", true),
                NotApplied,
                NotApplied,
            ),
            ("422", answered(422, "", true), NotApplied, NotApplied),
            ("401", answered(401, "", true), NotApplied, NotApplied),
            ("403", answered(403, "", true), NotApplied, NotApplied),
            ("408", answered(408, "", true), NotApplied, NotApplied),
            ("425", answered(425, "", true), NotApplied, NotApplied),
            ("429", answered(429, "", true), NotApplied, NotApplied),
            ("301", answered(301, "", true), NotApplied, NotApplied),
            ("307", answered(307, "", true), NotApplied, NotApplied),
            ("308", answered(308, "", true), NotApplied, NotApplied),
            ("302", answered(302, "", true), Maybe, Maybe),
            ("303", answered(303, "", true), Maybe, Maybe),
            ("500", answered(500, "", true), Maybe, Maybe),
            ("502", answered(502, "", true), Maybe, Maybe),
            ("503", answered(503, "", true), Maybe, Maybe),
            ("504", answered(504, "", true), Maybe, Maybe),
            ("599", answered(599, "", true), Maybe, Maybe),
            ("no connection", transport(false), NotApplied, NotApplied),
            ("timeout or reset", transport(true), Maybe, Maybe),
            (
                "send deadline passed",
                LeafError::NotSent(NotSent::DeadlinePassed),
                NotApplied,
                NotApplied,
            ),
            (
                "fenced",
                LeafError::NotSent(NotSent::Fenced),
                NotApplied,
                NotApplied,
            ),
        ];
        for (name, error, create, delete) in rows {
            assert_eq!(effect(Write::Create, &error), create, "POST, {name}");
            assert_eq!(effect(Write::Delete, &error), delete, "DELETE, {name}");
        }
    }

    proptest::proptest! {
        /// Every 5xx is in doubt, whatever the body: a gateway may answer after Leaf processed it.
        #[test]
        fn every_server_error_is_in_doubt(code in 500u16..600, body in ".{0,80}") {
            let error = answered(code, &body, true);
            proptest::prop_assert_eq!(effect(Write::Create, &error), Effect::Maybe);
            proptest::prop_assert_eq!(effect(Write::Delete, &error), Effect::Maybe);
        }
    }
}
