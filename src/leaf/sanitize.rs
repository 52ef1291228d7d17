//! Sanitising text from Leaf before it is kept anywhere: token-like strings and secret-valued keys
//! are replaced, and the result is cut short.
//!
//! Leaf's error bodies and event logs may echo tokens. Rather than trust a format, every excerpt
//! we keep goes through [`excerpt`]: it over-redacts on purpose (a lost UUID-free hex id is cheap,
//! a leaked refresh token is not).

/// Longest excerpt kept, in characters.
pub const MAX_EXCERPT_CHARS: usize = 200;

const REDACTED: &str = "[REDACTED]";

/// Scrubs `text` and collapses whitespace, then truncates to [`MAX_EXCERPT_CHARS`].
pub fn excerpt(text: &str) -> String {
    let scrubbed = scrub(text);
    let collapsed = scrubbed.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&collapsed, MAX_EXCERPT_CHARS)
}

/// Cuts `text` to at most `max` characters, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Replaces token-like words, the word after `Bearer`/`Basic`, and the value of any key whose name
/// suggests a secret (`clientSecret`, `refresh_token`, `password`, `Authorization`, ...).
pub fn scrub(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    // Set after `Bearer`/`Basic`: the next word is a credential whatever it looks like.
    let mut redact_next_word = false;
    while i < chars.len() {
        let c = chars[i];
        if !is_word_char(c) {
            out.push(c);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_word_char(chars[i]) {
            i += 1;
        }
        // Base64 padding belongs to the word when the word ends there.
        while i < chars.len()
            && chars[i] == '='
            && !chars.get(i + 1).is_some_and(|n| is_word_char(*n))
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        if redact_next_word {
            redact_next_word = false;
            out.push_str(REDACTED);
            continue;
        }
        if is_secret_like(&word) {
            out.push_str(REDACTED);
            continue;
        }
        out.push_str(&word);
        let lower = word.to_ascii_lowercase();
        if lower == "bearer" || lower == "basic" {
            redact_next_word = true;
            continue;
        }
        if is_sensitive_key(&lower) {
            i = redact_value_after_key(&chars, i, &mut out);
        }
    }
    out
}

/// After a sensitive key at `i`: if a `:` or `=` follows (past quotes and spaces), copies the
/// separator and replaces the value; returns the index to continue from.
fn redact_value_after_key(chars: &[char], mut i: usize, out: &mut String) -> usize {
    let mut j = i;
    while j < chars.len() && (chars[j] == '"' || chars[j] == '\'' || chars[j] == ' ') {
        j += 1;
    }
    if j >= chars.len() || (chars[j] != ':' && chars[j] != '=') {
        return i;
    }
    j += 1;
    while j < chars.len() && chars[j].is_whitespace() {
        j += 1;
    }
    out.extend(&chars[i..j]);
    i = j;
    match chars.get(i) {
        // Nested objects and arrays: their own keys are scrubbed as the scan goes on.
        None | Some('{') | Some('[') => i,
        Some(&quote @ ('"' | '\'')) => {
            let mut k = i + 1;
            while k < chars.len() && chars[k] != quote {
                if chars[k] == '\\' {
                    k += 1;
                }
                k += 1;
            }
            out.push(quote);
            out.push_str(REDACTED);
            if k < chars.len() {
                out.push(quote);
                k + 1
            } else {
                k
            }
        }
        Some(_) => {
            // An unquoted value runs to the end of the line or the next field separator; this also
            // covers `Authorization: Bearer xyz`.
            let mut k = i;
            while k < chars.len() && !matches!(chars[k], '\n' | '\r' | ',' | ';' | '&' | '}' | ']')
            {
                k += 1;
            }
            out.push_str(REDACTED);
            k
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/' | '~')
}

/// Key names whose values are secrets, compared without case and separators.
fn is_sensitive_key(lower: &str) -> bool {
    let normalized: String = lower
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    [
        "secret",
        "token",
        "password",
        "passwd",
        "pwd",
        "apikey",
        "authorization",
        "cookie",
        "assertion",
        "jwt",
        "code",
    ]
    .iter()
    .any(|needle| normalized.contains(needle))
        && normalized != "statuscode"
        && normalized != "errorcode"
}

/// JWT-looking strings, long base64/hex runs; UUIDs and paths of short segments are kept.
fn is_secret_like(word: &str) -> bool {
    let word = word.trim_matches(|c| c == '.' || c == '/');
    if word.starts_with("eyJ") && word.len() >= 16 {
        return true;
    }
    if word.contains("://") || word.contains('/') {
        return word.split('/').any(is_secret_like);
    }
    if is_uuid(word) {
        return false;
    }
    if word.len() >= 32 && word.chars().all(|c| c.is_ascii_hexdigit()) {
        return true;
    }
    let has_digit = word.chars().any(|c| c.is_ascii_digit());
    let has_alpha = word.chars().any(|c| c.is_ascii_alphabetic());
    // Three dot-separated base64url segments: a JWT even without the usual `eyJ` start.
    let segments: Vec<&str> = word.split('.').collect();
    if segments.len() == 3 && segments.iter().all(|s| s.len() >= 4) && word.len() >= 24 && has_digit
    {
        return true;
    }
    word.len() >= 20 && has_digit && has_alpha
}

fn is_uuid(word: &str) -> bool {
    let parts: Vec<&str> = word.split('-').collect();
    parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1IiwiZXhwIjoxfQ.c2lnbmF0dXJlLXZhbHVl";

    #[test]
    fn jwt_like_strings_are_redacted() {
        let out = scrub(&format!("token was {JWT} here"));
        assert_eq!(out, "token was [REDACTED] here");
    }

    #[test]
    fn bearer_values_are_redacted_even_when_short() {
        assert_eq!(
            scrub("Authorization: Bearer abc"),
            "Authorization: [REDACTED]"
        );
        assert_eq!(scrub("sent bearer abc then"), "sent bearer [REDACTED] then");
    }

    #[test]
    fn values_of_secret_keys_are_redacted_in_json_and_forms() {
        let json = r#"{"clientSecret":"short pw","refresh_token": "x", "password":"p w", "clientId":"cid-1"}"#;
        let out = scrub(json);
        assert!(
            !out.contains("short pw") && !out.contains("\"x\"") && !out.contains("p w"),
            "{out}"
        );
        assert!(out.contains("cid-1"), "{out}");
        let form = "grant_type=refresh_token&refresh_token=abc&client_secret=def";
        let out = scrub(form);
        assert!(!out.contains("abc") && !out.contains("def"), "{out}");
        assert!(out.contains("grant_type=refresh_token"), "{out}");
        assert_eq!(scrub("accessToken=zzz"), "accessToken=[REDACTED]");
    }

    #[test]
    fn long_base64_and_hex_runs_are_redacted_but_uuids_and_words_kept() {
        let hex = "0123456789abcdef0123456789abcdef";
        let b64 = "dGhpcyBpcyBhIHNlY3JldCB0b2tlbg==";
        let uuid = "3fa85f64-5717-4562-b3fc-2c963f66afa6";
        let out = scrub(&format!("a {hex} b {b64} c {uuid} TEMPORARILY_UNAVAILABLE"));
        assert_eq!(
            out,
            format!("a [REDACTED] b [REDACTED] c {uuid} TEMPORARILY_UNAVAILABLE")
        );
        let path = format!("/services/usermanagement/api/users/{uuid}/trimble-credentials");
        assert_eq!(scrub(&path), path);
    }

    #[test]
    fn status_code_keys_are_not_treated_as_secrets() {
        assert_eq!(scrub(r#"{"statusCode": 401}"#), r#"{"statusCode": 401}"#);
    }

    #[test]
    fn excerpt_truncates_to_the_limit_and_collapses_whitespace() {
        let long = "word ".repeat(100);
        let out = excerpt(&long);
        assert_eq!(out.chars().count(), MAX_EXCERPT_CHARS);
        assert!(out.ends_with('…'));
        assert_eq!(excerpt("a\n\n  b"), "a b");
    }
}
