//! `X-Leaf-Signature`: base64 of HMAC-SHA256 over the raw body bytes, keyed with the UTF-8
//! bytes of the webhook secret (Leaf's documented recipe).
//!
//! Verification runs on the bytes exactly as received, before anything parses them: Leaf signs
//! a JSON text with spaces after `:` and `,`, so a re-serialisation would never match. The
//! comparison is constant-time (`Mac::verify_slice`), so a forger learns nothing from timing.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header Leaf signs deliveries with.
pub const HEADER: &str = "X-Leaf-Signature";

/// A base64 HMAC-SHA256 is 44 characters; anything much longer is not a signature and is not
/// decoded at all (a sender cannot make us allocate for a huge header).
const MAX_HEADER_LEN: usize = 128;

/// Why a signature was refused; the label is the `reason` of the rejected-alerts metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// No `X-Leaf-Signature` header.
    Missing,
    /// The header is not base64 of 32 bytes.
    Malformed,
    /// Well-formed, but not the HMAC of this body under any accepted secret.
    Mismatch,
}

impl SignatureError {
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing_signature",
            Self::Malformed => "malformed_signature",
            Self::Mismatch => "bad_signature",
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The header value Leaf would send for `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Decodes a header value into the 32-byte digest it claims, accepting padded or unpadded
/// standard base64 and surrounding whitespace.
fn decode(header: &[u8]) -> Result<Vec<u8>, SignatureError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::Malformed);
    }
    let text = std::str::from_utf8(header)
        .map_err(|_| SignatureError::Malformed)?
        .trim();
    let digest = STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .map_err(|_| SignatureError::Malformed)?;
    if digest.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    Ok(digest)
}

/// Checks `header` (the raw `X-Leaf-Signature` value, if any) against `body` under each of
/// `secrets` in turn (the current secret and, briefly after a change, the previous one).
pub fn verify<'a>(
    secrets: impl IntoIterator<Item = &'a [u8]>,
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let digest = decode(header.ok_or(SignatureError::Missing)?)?;
    for secret in secrets {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
        mac.update(body);
        if mac.verify_slice(&digest).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Leaf's documented example, with its spaces after ':' and ','.
    const BODY: &[u8] = br#"{"source": "REST", "leafUserId": "uuid", "fieldId": "uuid", "timestamp": "2024-06-15T14:30:00.000000Z", "type": "fieldCreated"}"#;

    #[test]
    fn matches_an_independent_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let expected =
            hex::decode("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
                .unwrap();
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            STANDARD.encode(expected)
        );
    }

    #[test]
    fn accepts_the_signed_bytes_and_nothing_else() {
        let header = sign(b"s3cret", BODY);
        let secrets: [&[u8]; 1] = [b"s3cret"];
        assert_eq!(verify(secrets, BODY, Some(header.as_bytes())), Ok(()));
        // The same JSON without the spaces is another byte string: not accepted.
        let compact = br#"{"source":"REST","leafUserId":"uuid","fieldId":"uuid","timestamp":"2024-06-15T14:30:00.000000Z","type":"fieldCreated"}"#;
        assert_eq!(
            verify(secrets, compact, Some(header.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        let other: [&[u8]; 1] = [b"other"];
        assert_eq!(
            verify(other, BODY, Some(header.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(secrets, BODY, None), Err(SignatureError::Missing));
        assert_eq!(
            verify(secrets, BODY, Some(b"not base64!")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(secrets, BODY, Some(STANDARD.encode([0u8; 16]).as_bytes())),
            Err(SignatureError::Malformed),
            "a digest of the wrong length"
        );
    }

    #[test]
    fn the_previous_secret_is_accepted_when_offered_and_padding_is_optional() {
        let header = sign(b"old", BODY);
        let both: [&[u8]; 2] = [b"new", b"old"];
        assert_eq!(verify(both, BODY, Some(header.as_bytes())), Ok(()));
        let unpadded = header.trim_end_matches('=');
        assert_eq!(
            verify(both, BODY, Some(format!(" {unpadded} ").as_bytes())),
            Ok(())
        );
    }

    proptest! {
        #[test]
        fn any_header_and_body_is_answered_without_panicking(
            header in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let secrets: [&[u8]; 1] = [b"secret"];
            let result = verify(secrets, &body, header.as_deref());
            // Random bytes are never a valid signature.
            prop_assert!(result.is_err());
        }

        #[test]
        fn a_signature_verifies_its_body_and_no_changed_byte(
            secret in proptest::collection::vec(any::<u8>(), 0..80),
            body in proptest::collection::vec(any::<u8>(), 1..512),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let header = sign(&secret, &body);
            prop_assert_eq!(verify([secret.as_slice()], &body, Some(header.as_bytes())), Ok(()));
            let mut changed = body.clone();
            let at = flip.index(changed.len());
            changed[at] ^= 1 << bit;
            prop_assert_eq!(
                verify([secret.as_slice()], &changed, Some(header.as_bytes())),
                Err(SignatureError::Mismatch)
            );
        }
    }
}
