//! The syntax of Kubernetes labels: label keys, and the label selector of `--label-selector`.
//!
//! Checked at start so that a typo stops the process with a message instead of making the shard
//! silently watch nothing. The same key syntax checks `--leader-pod-label`.

/// Whether `key` is a label key: `name` or `prefix/name`; the name at most 63 alphanumerics,
/// `-`, `_` and `.`, beginning and ending with an alphanumeric; the prefix at most 253 lower-case
/// alphanumerics, `-` and `.`.
pub(super) fn is_label_key(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.len() <= 253
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
        && (prefix.is_empty() || key.contains('/'));
    name_ok && prefix_ok && !(key.contains('/') && prefix.is_empty())
}

/// Whether `value` is a label value: empty, or at most 63 alphanumerics, `-`, `_` and `.`,
/// beginning and ending with an alphanumeric.
fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A syntax check of a Kubernetes label selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`,
/// `k in (a,b)`, `k notin (a,b)`, comma-separated); the error says which term is wrong.
pub(super) fn validate(selector: &str) -> Result<(), String> {
    let selector = selector.trim();
    if selector.is_empty() {
        return Ok(());
    }
    // Split on commas outside parentheses.
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses".to_string());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".to_string());
    }
    terms.push(&selector[start..]);
    for term in terms {
        let term = term.trim();
        if term.is_empty() {
            return Err("an empty term (two commas, or a trailing comma)".to_string());
        }
        let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
        if words.len() == 2
            && (words[1].trim_start().starts_with("in ")
                || words[1].trim_start().starts_with("in(")
                || words[1].trim_start().starts_with("notin"))
        {
            let rest = words[1].trim_start();
            let list = rest
                .strip_prefix("notin")
                .or_else(|| rest.strip_prefix("in"))
                .unwrap_or(rest)
                .trim();
            let Some(inner) = list.strip_prefix('(').and_then(|l| l.strip_suffix(')')) else {
                return Err(format!("{term:?}: `in`/`notin` need a (list)"));
            };
            if !is_label_key(words[0]) || !inner.split(',').all(|v| is_label_value(v.trim())) {
                return Err(format!("{term:?} is not valid"));
            }
            continue;
        }
        let (key, value) = if let Some((k, v)) = term.split_once("!=") {
            (k, Some(v))
        } else if let Some((k, v)) = term.split_once("==") {
            (k, Some(v))
        } else if let Some((k, v)) = term.split_once('=') {
            (k, Some(v))
        } else {
            (term.strip_prefix('!').unwrap_or(term), None)
        };
        if !is_label_key(key.trim()) || !value.is_none_or(|v| is_label_value(v.trim())) {
            return Err(format!("{term:?} is not valid"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_are_checked() {
        for good in [
            "",
            "shard=a",
            "shard==a,team!=x",
            "example.com/shard=a",
            "shard in (a, b),!legacy",
            "env notin (dev)",
            "managed",
        ] {
            assert_eq!(validate(good), Ok(()), "{good}");
        }
        for bad in [
            "shard=a,",
            "=a",
            "shard=a b",
            "shard in a",
            "x in (a",
            "sh@rd=a",
            "/x=a",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_are_a_name_with_an_optional_prefix() {
        for good in ["leader", "withleaf.io/leader", "a", "a.b_c-d"] {
            assert!(is_label_key(good), "{good}");
        }
        for bad in ["", "a b", "/leader", "Ex.ample/x", "leader-", "a/b/c", "x/"] {
            assert!(!is_label_key(bad), "{bad}");
        }
    }
}
