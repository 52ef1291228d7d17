//! What the controller is built from: the namespaces it watches and the label selector of this
//! shard.

use super::Config;

impl Config {
    /// The label selector of the TrimbleConnection watch, if any.
    pub fn label_selector(&self) -> Option<String> {
        let selector = self.label_selector.trim();
        (!selector.is_empty()).then(|| selector.to_string())
    }

    /// The namespaces to watch; empty means all.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut namespaces: Vec<&str> = self
            .watch_namespaces
            .iter()
            .map(|ns| ns.trim())
            .filter(|ns| !ns.is_empty())
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        namespaces
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    #[test]
    fn namespaces_are_split_trimmed_and_deduplicated() {
        let config = parse(&["--watch-namespaces", "b, a,,b"]);
        assert_eq!(config.namespaces(), vec!["a", "b"]);
    }

    #[test]
    fn the_label_selector_is_checked_at_start_and_trimmed() {
        let config = parse(&["--label-selector", "shard=a,"]);
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("LABEL_SELECTOR")
        );
        assert_eq!(
            parse(&["--label-selector", " shard=a "])
                .label_selector()
                .as_deref(),
            Some("shard=a")
        );
        assert_eq!(parse(&["--label-selector", " "]).label_selector(), None);
    }
}
