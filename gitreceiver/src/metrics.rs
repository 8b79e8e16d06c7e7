//! Prometheus metrics (OpenMetrics text on `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a push ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// The receiver's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Pushes by result: deployed, accepted (bench mode), up_to_date, build_failed,
    /// refused_ref, too_large (--max-push-bytes), repo_too_large (--max-repo-bytes),
    /// git_memory (--max-git-memory), too_many_pushes (--max-concurrent-pushes[-per-namespace]),
    /// forbidden, unknown_app, unknown_key, busy, cancelled, error.
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
    pub fn push(&self, result: &str) {
        self.pushes
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
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
