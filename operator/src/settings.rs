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
    /// The platform's Postgres service (the `postgres` provider; disabled without a host).
    pub postgres: crate::resource::postgres::PostgresSettings,
    /// How Redis Resources run (the `redis` provider; disabled without an image).
    pub redis: crate::resource::redis::RedisSettings,
    /// How long a retained Postgres database is kept after its Resource was deleted.
    pub resource_retention: Duration,
    /// How often retained databases past their retention are looked for.
    pub resource_sweep_interval: Duration,
    /// How often a provisioned Resource is reconciled again, changed or not (the password
    /// set again, a Release restored after a push that raced the Resource).
    pub resource_resync: Duration,
}

/// A duration written `<number><unit>`, unit `s`, `m`, `h` or `d` (`7d`, `90m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: write a number and s, m, h or d, e.g. 7d");
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(bad)
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
            postgres: crate::resource::postgres::PostgresSettings {
                port: 5432,
                admin_user: "postgres".into(),
                ..Default::default()
            },
            redis: crate::resource::redis::RedisSettings::default(),
            resource_retention: Duration::from_secs(7 * 86_400),
            resource_sweep_interval: Duration::from_secs(3600),
            resource_resync: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit_and_others_say_how_to_write_one() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "7", "d", "7w", "-1d", "1.5h"] {
            assert!(
                parse_duration(bad).unwrap_err().contains("e.g. 7d"),
                "{bad}"
            );
        }
    }
}
