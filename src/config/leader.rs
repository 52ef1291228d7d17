//! What leader election is built from, and this replica's place in it: the Lease settings and
//! the fence, the replica's identity, its own Pod, and the label the leader wears on that Pod.

use super::{Config, selector};
use crate::alerts::polling_switch::OwnPod;
use crate::leader::{Fence, LeaderElectionConfig};

impl Config {
    /// The Lease and its timing, when leader election is on (`identity`: see [`Config::identity`]).
    pub fn leader_election(&self, identity: String) -> Option<LeaderElectionConfig> {
        if !self.leader_election {
            return None;
        }
        let mut election = LeaderElectionConfig::new(
            self.leader_election_namespace.clone().unwrap_or_default(),
            self.leader_election_lease_name.clone(),
            identity,
        );
        election.lease_duration = self.leader_election_lease_duration;
        election.renew_every = self.leader_election_renew_period;
        election.standby_poll = self.leader_election_retry_period;
        Some(election)
    }

    /// The fence every Leaf write passes: held only while leading when leader election is on,
    /// always open without it.
    pub fn fence(&self) -> Fence {
        if self.leader_election {
            Fence::elected()
        } else {
            Fence::unelected()
        }
    }

    /// This replica's identity: POD_NAME, else the host name.
    pub fn identity(&self) -> String {
        self.pod_name
            .clone()
            .filter(|name| !name.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "leaf-operator".to_string())
    }

    /// The Pod to label and the label key, when `--leader-pod-label` is set and usable.
    pub fn leader_pod_label(&self) -> Option<(OwnPod, String)> {
        let key = self.leader_pod_label.trim();
        if !selector::is_label_key(key) {
            return None;
        }
        Some((self.own_pod()?, key.to_string()))
    }

    /// The operator's own Pod, when POD_NAME and POD_NAMESPACE say which (as in the chart).
    pub fn own_pod(&self) -> Option<OwnPod> {
        let non_empty = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        Some(OwnPod {
            name: non_empty(&self.pod_name)?,
            namespace: non_empty(&self.leader_election_namespace)?,
            uid: non_empty(&self.pod_uid),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{ConfigError, parse};

    #[test]
    fn the_own_pod_needs_its_name_and_namespace() {
        let pod = parse(&[
            "--pod-name",
            "op-1",
            "--leader-election-namespace",
            "ops",
            "--pod-uid",
            "u-1",
        ])
        .own_pod()
        .expect("a pod");
        assert_eq!(
            (
                pod.name.as_str(),
                pod.namespace.as_str(),
                pod.uid.as_deref()
            ),
            ("op-1", "ops", Some("u-1"))
        );
        let no_namespace = parse(&["--pod-name", "op-1", "--leader-election-namespace", ""]);
        assert_eq!(no_namespace.own_pod(), None);
    }

    #[test]
    fn the_leader_pod_label_needs_a_pod_and_a_label_key() {
        let pod = ["--pod-name", "op-1", "--leader-election-namespace", "ops"];
        let with = |label: &str| {
            let mut args = pod.to_vec();
            args.extend(["--leader-pod-label", label]);
            parse(&args)
        };
        assert_eq!(with("withleaf.io/leader").validate(), Ok(()));
        assert_eq!(
            with("withleaf.io/leader")
                .leader_pod_label()
                .map(|(p, k)| (p.name, k)),
            Some(("op-1".to_string(), "withleaf.io/leader".to_string()))
        );
        assert_eq!(with("").leader_pod_label(), None, "off");
        for bad in ["a b", "/leader", "Ex.ample/x", "leader-"] {
            assert!(
                matches!(with(bad).validate(), Err(ConfigError::BadLeaderPodLabel(_))),
                "{bad}"
            );
        }
        let no_pod = parse(&[
            "--leader-pod-label",
            "leader",
            "--leader-election-namespace",
            "",
        ]);
        assert!(matches!(
            no_pod.validate(),
            Err(ConfigError::BadLeaderPodLabel(_))
        ));
    }

    #[test]
    fn leader_election_takes_the_lease_settings_from_the_flags() {
        let off = parse(&[]);
        assert!(off.leader_election("op-1".to_string()).is_none());
        assert!(
            off.fence().holds(),
            "without election, Leaf writes always pass"
        );
        let on = parse(&[
            "--leader-election",
            "--leader-election-namespace",
            "ops",
            "--leader-election-lease-name",
            "leaf-operator-shard-a",
            "--leader-election-lease-duration",
            "30s",
            "--leader-election-renew-period",
            "10s",
            "--leader-election-retry-period",
            "3s",
        ]);
        assert!(!on.fence().holds(), "with election, not before leading");
        let election = on
            .leader_election("op-1".to_string())
            .expect("leader election on");
        assert_eq!(
            (
                election.namespace.as_str(),
                election.lease_name.as_str(),
                election.identity.as_str()
            ),
            ("ops", "leaf-operator-shard-a", "op-1")
        );
        assert_eq!(
            (
                election.lease_duration,
                election.renew_every,
                election.standby_poll,
                election.stop_timeout
            ),
            (
                Duration::from_secs(30),
                Duration::from_secs(10),
                Duration::from_secs(3),
                Duration::from_secs(10)
            )
        );
    }

    #[test]
    fn the_identity_is_the_pod_name_when_given() {
        assert_eq!(parse(&["--pod-name", "op-1"]).identity(), "op-1");
    }
}
