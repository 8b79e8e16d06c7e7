//! Prometheus metrics (OpenMetrics text on `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::outcome::PushOutcome;

/// How a push ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: PushOutcome,
}

/// The receiver's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Pushes by result ([`PushOutcome::as_str`]).
    pub pushes: Family<ResultLabel, Counter>,
    /// Time from the exec request to receive-pack's exit, builds included.
    pub push_duration: Histogram,
    /// Time the pipeline took (archive, upload, build, release, rollout) per deploy.
    pub deploy_duration: Histogram,
    /// Time the build Job took (pod start, buildpacks, slug upload), successful deploys.
    pub build_duration: Histogram,
    /// Time the rollout took until the App was Ready, successful deploys.
    pub rollout_duration: Histogram,
    /// Bytes of pack data received from clients.
    pub bytes_received: Counter,
    /// SSH connections open now.
    pub active_sessions: Gauge,
    /// Pushes running now (between the exec and receive-pack's exit).
    pub active_pushes: Gauge,
    /// Failed authentications (unknown key, wrong user name).
    pub auth_failures: Counter,
    /// Connections closed by the per-address rate limit.
    pub throttled: Counter,
    /// Repositories of deleted Apps removed.
    pub repos_removed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flynn_gitreceiver");
        let pushes = Family::<ResultLabel, Counter>::default();
        registry.register("pushes", "Pushes by result", pushes.clone());
        let push_duration = Histogram::new(exponential_buckets(0.01, 2.0, 18));
        registry.register(
            "push_duration_seconds",
            "Time from the exec request to the end of receive-pack, builds included",
            push_duration.clone(),
        );
        let deploy_duration = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        registry.register(
            "deploy_duration_seconds",
            "Time the build and deploy pipeline took",
            deploy_duration.clone(),
        );
        let build_duration = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        registry.register(
            "build_duration_seconds",
            "Time the build Job took (successful deploys)",
            build_duration.clone(),
        );
        let rollout_duration = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        registry.register(
            "rollout_duration_seconds",
            "Time the rollout took until the App was Ready (successful deploys)",
            rollout_duration.clone(),
        );
        let bytes_received = Counter::default();
        registry.register(
            "received_bytes",
            "Bytes received from git clients",
            bytes_received.clone(),
        );
        let active_sessions = Gauge::default();
        registry.register(
            "active_sessions",
            "Open SSH connections",
            active_sessions.clone(),
        );
        let active_pushes = Gauge::default();
        registry.register("active_pushes", "Pushes running", active_pushes.clone());
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Rejected SSH authentications",
            auth_failures.clone(),
        );
        let throttled = Counter::default();
        registry.register(
            "throttled_connections",
            "Connections closed by the per-address rate limit",
            throttled.clone(),
        );
        let repos_removed = Counter::default();
        registry.register(
            "repositories_removed",
            "Repositories of deleted Apps removed",
            repos_removed.clone(),
        );
        Self {
            registry,
            throttled,
            repos_removed,
            pushes,
            push_duration,
            deploy_duration,
            build_duration,
            rollout_duration,
            bytes_received,
            active_sessions,
            active_pushes,
            auth_failures,
        }
    }
}

impl Metrics {
    /// Counts one push that ended with `result`.
    pub fn push(&self, result: PushOutcome) {
        self.pushes.get_or_create(&ResultLabel { result }).inc();
    }

    /// Writes the receiver's families (the admin server adds build info, process metrics
    /// and the EOF).
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conventions every family keeps: counters end `_total` (once), histograms of
    /// time end `_seconds`, and a push's `result` label is its outcome's name.
    #[test]
    fn families_follow_the_prometheus_naming_conventions() {
        let m = Metrics::default();
        m.push(PushOutcome::TooManyPushes);
        m.push_duration.observe(0.5);
        let text = m.render();
        let mut counters = 0;
        let mut histograms = 0;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name.starts_with("flynn_gitreceiver_"), "{name}");
            match kind {
                "counter" => {
                    counters += 1;
                    assert!(!name.ends_with("_total"), "{name} would be {name}_total");
                    let samples: Vec<&str> = text
                        .lines()
                        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                        .collect();
                    assert!(
                        samples
                            .iter()
                            .all(|l| l.starts_with(&format!("{name}_total"))),
                        "{samples:?}"
                    );
                }
                "histogram" => {
                    histograms += 1;
                    assert!(name.ends_with("_seconds"), "{name}: a duration in seconds");
                }
                "gauge" => {}
                other => panic!("{name}: unexpected type {other}"),
            }
        }
        assert_eq!((counters, histograms), (5, 4), "{text}");
        assert!(
            text.contains("flynn_gitreceiver_pushes_total{result=\"too_many_pushes\"} 1"),
            "{text}"
        );
    }
}
