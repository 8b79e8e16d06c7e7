//! Prometheus metrics: per Route requests by status class, latency, backend connect errors;
//! table generation and build-and-swap time.
//!
//! Naming follows Prometheus's conventions: counters end in `_total` (prometheus-client adds
//! it on exposition), durations in `_seconds`; a Route is two labels, `namespace` and
//! `route` (its name), so that one can select a namespace's Routes without a regex; a
//! status class (`2xx`) is `code_class`, since `code` means the status code itself.
//!
//! Label lookups (a read lock and a hash) happen once per Route per table build: the table
//! holds the resolved counters, so a request only increments atomics.

use std::sync::{Arc, OnceLock};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// One Route: its namespace and its name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    namespace: String,
    route: String,
}

/// One Route and a status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatusLabels {
    namespace: String,
    route: String,
    code_class: &'static str,
}

impl RouteStatusLabels {
    fn of(route: &RouteLabels, code_class: &'static str) -> Self {
        Self {
            namespace: route.namespace.clone(),
            route: route.route.clone(),
            code_class,
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn latency_histogram() -> Histogram {
    // 100 µs .. ~26 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 19,
    ))
}

/// Every metric the router exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: Arc<RouteFamilies>,
    /// Requests that matched no Route.
    pub no_route: Counter,
    /// Generation of the published table.
    pub table_generation: Gauge,
    /// Time to build and publish a table.
    pub table_swap_seconds: Histogram,
    /// `net.ipv4.tcp_migrate_req` at start: 1 if connections queued on this router's
    /// listeners move to its successor when it stops, 0 if they are reset.
    pub tcp_migrate_req: Gauge,
    /// TLS Secrets whose certificate the router holds (only Secrets served Routes name).
    pub tls_secrets_held: Gauge,
    /// Bytes of `tls.crt` and `tls.key` of the Secrets held.
    pub tls_secret_bytes_held: Gauge,
    /// Reads of one named Secret (a list by name), whatever they found.
    pub tls_secret_reads: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flynn_router");
        let requests = Family::<RouteStatusLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by Route (namespace, route) and status class (code_class)",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response head, by Route",
            latency.clone(),
        );
        let connect_errors = Family::<RouteLabels, Counter>::default();
        registry.register(
            "backend_connect_errors",
            "Failed connections to backends, by Route",
            connect_errors.clone(),
        );
        let replays = Family::<RouteLabels, Counter>::default();
        registry.register(
            "backend_replays",
            "Safe requests sent again after a backend connection broke before answering, by Route",
            replays.clone(),
        );
        let tcp_connections = Family::<RouteLabels, Counter>::default();
        registry.register(
            "tcp_connections",
            "Proxied TCP connections, by Route",
            tcp_connections.clone(),
        );
        let no_route = Counter::default();
        registry.register(
            "http_no_route",
            "HTTP requests that matched no Route (404)",
            no_route.clone(),
        );
        let table_generation = Gauge::default();
        registry.register(
            "table_generation",
            "Generation of the routing table being served",
            table_generation.clone(),
        );
        let table_swap_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.00001, 2.0, 20),
        );
        registry.register(
            "table_swap_seconds",
            "Time to build and publish a routing table",
            table_swap_seconds.clone(),
        );
        let tcp_migrate_req = Gauge::default();
        registry.register(
            "tcp_migrate_req",
            "net.ipv4.tcp_migrate_req at start: 1 if connections queued on the listeners move \
             to the next router when this one stops, 0 if they are reset",
            tcp_migrate_req.clone(),
        );
        let tls_secrets_held = Gauge::default();
        registry.register(
            "tls_secrets_held",
            "TLS Secrets whose certificate the router holds: only those a served Route names",
            tls_secrets_held.clone(),
        );
        let tls_secret_bytes_held = Gauge::default();
        registry.register(
            "tls_secrets_held_bytes",
            "Bytes of tls.crt and tls.key of the TLS Secrets held",
            tls_secret_bytes_held.clone(),
        );
        let tls_secret_reads = Counter::default();
        registry.register(
            "tls_secret_reads",
            "Reads of one TLS Secret a Route names (a list by its name)",
            tls_secret_reads.clone(),
        );
        Self {
            registry,
            families: Arc::new(RouteFamilies {
                requests,
                latency,
                connect_errors,
                replays,
                tcp_connections,
            }),
            no_route,
            table_generation,
            table_swap_seconds,
            tcp_migrate_req,
            tls_secrets_held,
            tls_secret_bytes_held,
            tls_secret_reads,
        }
    }

    /// The counters of the Route `name` in `namespace`, registered on first use.
    pub fn route(&self, namespace: &str, name: &str) -> RouteMetrics {
        RouteMetrics(Arc::new(RouteSeries {
            labels: RouteLabels {
                namespace: namespace.to_owned(),
                route: name.to_owned(),
            },
            families: self.families.clone(),
            handles: OnceLock::new(),
        }))
    }

    /// Removes a deleted Route's series.
    pub fn forget_route(&self, namespace: &str, name: &str) {
        let f = &self.families;
        let labels = RouteLabels {
            namespace: namespace.to_owned(),
            route: name.to_owned(),
        };
        for code_class in CLASSES {
            f.requests
                .remove(&RouteStatusLabels::of(&labels, code_class));
        }
        f.latency.remove(&labels);
        f.connect_errors.remove(&labels);
        f.replays.remove(&labels);
        f.tcp_connections.remove(&labels);
    }

    /// Writes the router's families (the admin server adds build info, process metrics and
    /// the EOF).
    pub fn encode_families(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The per-Route metric families.
#[derive(Debug)]
struct RouteFamilies {
    requests: Family<RouteStatusLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    connect_errors: Family<RouteLabels, Counter>,
    replays: Family<RouteLabels, Counter>,
    tcp_connections: Family<RouteLabels, Counter>,
}

/// One Route's metrics. Its series are registered on its first request or connection,
/// not when the Route is programmed: nine series with their labels and a 19-bucket
/// histogram are ~1.5 KB per Route, most of the router's memory with 10,000 Routes of
/// which few see traffic. So a Route that never had traffic has no series (absent,
/// rather than zero). After registration each event touches only atomics.
#[derive(Debug, Clone)]
pub struct RouteMetrics(Arc<RouteSeries>);

#[derive(Debug)]
struct RouteSeries {
    labels: RouteLabels,
    families: Arc<RouteFamilies>,
    handles: OnceLock<Handles>,
}

/// A Route's registered series (each an `Arc` to the series in the registry).
#[derive(Debug)]
struct Handles {
    by_class: [Counter; 5],
    latency: Histogram,
    connect_errors: Counter,
    replays: Counter,
    tcp_connections: Counter,
}

impl RouteMetrics {
    fn handles(&self) -> &Handles {
        let s = &self.0;
        s.handles.get_or_init(|| {
            let f = &s.families;
            let labels = &s.labels;
            Handles {
                by_class: CLASSES.map(|code_class| {
                    f.requests
                        .get_or_create(&RouteStatusLabels::of(labels, code_class))
                        .clone()
                }),
                latency: f.latency.get_or_create(labels).clone(),
                connect_errors: f.connect_errors.get_or_create(labels).clone(),
                replays: f.replays.get_or_create(labels).clone(),
                tcp_connections: f.tcp_connections.get_or_create(labels).clone(),
            }
        })
    }

    /// Records one response.
    pub fn record(&self, status: u16, seconds: f64) {
        let h = self.handles();
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        h.by_class[class].inc();
        h.latency.observe(seconds);
    }

    /// A failed connect to one of the Route's backends.
    pub fn connect_error(&self) {
        self.handles().connect_errors.inc();
    }

    /// A safe request sent again after a backend connection broke under it.
    pub fn replay(&self) {
        self.handles().replays.inc();
    }

    /// A TCP connection proxied for the Route.
    pub fn tcp_connection(&self) {
        self.handles().tcp_connections.inc();
    }
}

/// Shared metrics.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_series_are_shared_between_tables() {
        let m = Metrics::new();
        m.route("ns", "a").record(200, 0.001);
        m.route("ns", "a").record(503, 0.001);
        m.route("ns", "a").connect_error();
        // A Route without traffic has no series.
        let _idle = m.route("ns", "idle");
        let text = m.encode();
        assert!(
            text.contains(
                r#"flynn_router_http_requests_total{namespace="ns",route="a",code_class="2xx"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"flynn_router_http_requests_total{namespace="ns",route="a",code_class="5xx"} 1"#
        ));
        assert!(
            text.contains(
                r#"flynn_router_backend_connect_errors_total{namespace="ns",route="a"} 1"#
            )
        );
        assert!(!text.contains("idle"), "{text}");
        // A Route of the same name in another namespace is another series.
        m.route("other", "a").record(200, 0.001);
        let text = m.encode();
        assert!(
            text.contains(
                r#"flynn_router_http_requests_total{namespace="other",route="a",code_class="2xx"} 1"#
            ),
            "{text}"
        );
        m.forget_route("ns", "a");
        let text = m.encode();
        assert!(!text.contains(r#"namespace="ns""#), "{text}");
        assert!(text.contains(r#"namespace="other""#), "{text}");
    }

    /// Every family follows the naming conventions: counters `_total`, durations `_seconds`,
    /// no `code` label holding a class, no `route` label holding `namespace/name`.
    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        let r = m.route("ns", "a");
        r.record(200, 0.001);
        r.connect_error();
        r.replay();
        r.tcp_connection();
        m.no_route.inc();
        m.tls_secret_reads.inc();
        let text = m.encode();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line.split(' ').skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            if kind == "counter" {
                assert!(
                    text.contains(&format!("\n{name}_total")),
                    "{name}: a counter's series end in _total"
                );
            }
            if name.contains("duration") || name.contains("time") {
                assert!(name.ends_with("_seconds"), "{name}");
            }
        }
        assert!(!text.contains("code=\""), "{text}");
        assert!(!text.contains("ns/a"), "{text}");
    }
}
