//! Operator settings (flags or environment of the binary; the chart sets them).

use std::time::Duration;

/// What an operator deployment is configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Domain of the default Routes: an App `shop` gets `shop.<default_domain>`.
    pub default_domain: String,
    /// Image that runs slug artifacts (its entrypoint is the slugrunner).
    pub slugrunner_image: String,
    /// Pull policy of the slugrunner image (`IfNotPresent` on a real cluster; the local
    /// cluster has no registry, where `Never` gives a clearer error).
    pub slugrunner_pull_policy: String,
    /// Releases kept per App (older ones are deleted, never the current or running one).
    pub release_history: usize,
    /// Reconciles running at once per controller; bounded so a burst of Apps cannot
    /// open thousands of API connections (kube's default is unbounded).
    pub concurrency: u16,
    /// Only reconcile objects in this namespace (tests run one operator per namespace).
    /// Routes are still read from every namespace, since conflicts are cluster-wide.
    pub namespace: Option<String>,
    /// Skip namespaces carrying this label (the chart sets `flynn.io/test`, so an
    /// installed operator leaves the namespaces of tests, which run their own, alone).
    pub exclude_namespace_label: Option<String>,
    /// How long to wait before retrying a failed reconcile (doubles per failure, capped).
    pub error_backoff: Duration,
    /// How long a pod of a process behind a draining Route (`drainBackends`, the default)
    /// keeps running before its SIGTERM when it is stopped; zero turns draining off.
    pub drain_delay: Duration,
    /// The other components' roles, bound per namespace where they have work.
    pub grants: crate::grants::Grants,
    /// How often every grant is written again, whatever the operator remembers writing:
    /// a binding someone deleted or changed comes back within this.
    pub grants_resync: Duration,
    /// Ports TCP Routes may use (the router is given the same range).
    pub tcp_ports: flynn_crds::ownership::PortRange,
    /// Let Routes' wildcards cover `default_domain` (`*.<default_domain>`), whose names
    /// belong to Apps' default Routes.
    pub allow_default_domain_wildcard: bool,
}

impl Settings {
    /// What Routes may claim, from these settings (the rule itself is in flynn-crds).
    pub fn route_policy(&self) -> flynn_crds::ownership::Policy {
        flynn_crds::ownership::Policy {
            allow_default_domain_wildcard: self.allow_default_domain_wildcard,
            tcp_ports: self.tcp_ports,
            ..Default::default()
        }
        .with_default_domain(&self.default_domain)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_domain: "flynn.local".into(),
            slugrunner_image: "localhost/flynn-slugrunner:dev".into(),
            slugrunner_pull_policy: "IfNotPresent".into(),
            release_history: 10,
            concurrency: 16,
            namespace: None,
            exclude_namespace_label: None,
            error_backoff: Duration::from_secs(1),
            drain_delay: Duration::from_secs(5),
            grants: crate::grants::Grants::default(),
            grants_resync: Duration::from_secs(600),
            tcp_ports: flynn_crds::ownership::PortRange::DEFAULT,
            allow_default_domain_wildcard: false,
        }
    }
}
