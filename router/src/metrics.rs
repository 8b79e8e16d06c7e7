//! Prometheus metrics: per Route requests by status class, latency, backend connect errors;
//! table generation and build-and-swap time.
//!
//! Label lookups (a read lock and a hash) happen once per Route per table build: the table
//! holds the resolved counters, so a request only increments atomics.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatusLabels {
    route: String,
    code: &'static str,
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
    requests: Family<RouteStatusLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    connect_errors: Family<RouteLabels, Counter>,
    replays: Family<RouteLabels, Counter>,
    tcp_connections: Family<RouteLabels, Counter>,
    /// Requests that matched no Route.
    pub no_route: Counter,
    /// Generation of the published table.
    pub table_generation: Gauge,
    /// Time to build and publish a table.
    pub table_swap_seconds: Histogram,
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
            "HTTP requests by Route and status class",
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
        Self {
            registry,
            requests,
            latency,
            connect_errors,
            replays,
            tcp_connections,
            no_route,
            table_generation,
            table_swap_seconds,
        }
    }

    /// The counters of one Route (`<namespace>/<name>`).
    pub fn route(&self, route: &str) -> RouteMetrics {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        RouteMetrics {
            by_class: CLASSES.map(|code| {
                self.requests
                    .get_or_create(&RouteStatusLabels {
                        route: route.to_owned(),
                        code,
                    })
                    .clone()
            }),
            latency: self.latency.get_or_create(&labels).clone(),
            connect_errors: self.connect_errors.get_or_create(&labels).clone(),
            replays: self.replays.get_or_create(&labels).clone(),
            tcp_connections: self.tcp_connections.get_or_create(&labels).clone(),
        }
    }

    /// Removes a deleted Route's series.
    pub fn forget_route(&self, route: &str) {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        for code in CLASSES {
            self.requests.remove(&RouteStatusLabels {
                route: route.to_owned(),
                code,
            });
        }
        self.latency.remove(&labels);
        self.connect_errors.remove(&labels);
        self.replays.remove(&labels);
        self.tcp_connections.remove(&labels);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// One Route's metric handles (each an `Arc` to the registered series).
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    latency: Histogram,
    /// Failed connects to this Route's backends.
    pub connect_errors: Counter,
    /// Safe requests sent again after a backend connection broke under them.
    pub replays: Counter,
    /// TCP connections proxied for this Route.
    pub tcp_connections: Counter,
}

impl RouteMetrics {
    /// Records one response.
    pub fn record(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.latency.observe(seconds);
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
        m.route("ns/a").record(200, 0.001);
        m.route("ns/a").record(503, 0.001);
        m.route("ns/a").connect_errors.inc();
        let text = m.encode();
        assert!(
            text.contains(r#"flynn_router_http_requests_total{route="ns/a",code="2xx"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"flynn_router_http_requests_total{route="ns/a",code="5xx"} 1"#));
        assert!(text.contains(r#"flynn_router_backend_connect_errors_total{route="ns/a"} 1"#));
    }
}
