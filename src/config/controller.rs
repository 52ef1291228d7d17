//! What the controller is built from: its [`Settings`] (the concurrency, the label selector of
//! this shard, the windows of a write in doubt, the schedules) and the namespaces it watches.

use std::sync::Arc;

use super::Config;
use crate::controller::Settings;
use crate::controller::backoff::Schedules;
use crate::controller::decide::Windows;
use crate::controller::polling::AlertsHealth;
use crate::default_account::DefaultAccount;
use crate::leader::Fence;

impl Config {
    /// The controller's settings. The parts other modules build, and share with the controller,
    /// are handed in: the default Leaf account, the fence of leader election, the alerts health.
    pub fn controller_settings(
        &self,
        default_account: DefaultAccount,
        fence: Fence,
        alerts_health: Option<Arc<AlertsHealth>>,
    ) -> Settings {
        Settings {
            default_account,
            fence,
            windows: Windows::new(self.leaf_timeout, self.leaf_in_doubt_margin),
            schedules: Schedules::with_interval_override(self.test_refresh_interval),
            concurrency: self.concurrency,
            label_selector: self.label_selector(),
            alerts_health,
            observe_only: self.observe_only,
            reauthorization_default: self.reauthorization_default,
        }
    }

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
    use crate::controller::decide::Windows;
    use std::time::Duration;

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

    #[test]
    fn the_controller_settings_come_from_the_flags() {
        let config = parse(&[
            "--concurrency",
            "3",
            "--label-selector",
            "shard=a",
            "--leaf-timeout",
            "20s",
            "--leaf-in-doubt-margin",
            "40s",
        ]);
        let settings = config.controller_settings(
            crate::default_account::DefaultAccount::none(),
            crate::leader::Fence::unelected(),
            None,
        );
        assert_eq!(settings.concurrency, 3);
        assert_eq!(settings.label_selector.as_deref(), Some("shard=a"));
        assert_eq!(
            settings.windows,
            Windows {
                send_budget: Duration::from_secs(20),
                after_send: Duration::from_secs(60),
                read_lag: Duration::from_secs(40),
            },
            "sent within the request timeout, landing within timeout + margin after it, reads lag by the margin"
        );
        assert!(settings.alerts_health.is_none());
    }
}
