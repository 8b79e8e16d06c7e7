//! Prometheus metrics (`/metrics`): reconciles, errors by kind and reason, durations.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// GET, LIST-or-GET, WATCH, POST, PUT, PATCH or DELETE.
    pub verb: &'static str,
}

/// The operator's metrics, registered in one registry.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Requests to the API server, by verb (see [`ApiCallLayer`]).
    pub api_requests: Family<ApiLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flynn_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            // 1 ms .. ~16 s
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        let leader = Gauge::default();
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, by controller",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by controller and reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration, by controller",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the active leader",
            leader.clone(),
        );
        registry.register(
            "api_requests",
            "Requests to the Kubernetes API server, by verb",
            api_requests.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            api_requests,
        }
    }
}

impl Metrics {
    pub fn observe(&self, controller: &'static str, took: Duration) {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn error(&self, controller: &'static str, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { controller, reason })
            .inc();
    }

    /// Writes (POST, PUT, PATCH, DELETE) made so far.
    pub fn api_writes(&self) -> u64 {
        ["POST", "PUT", "PATCH", "DELETE"]
            .iter()
            .map(|verb| self.api_requests.get_or_create(&ApiLabels { verb }).get())
            .sum()
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A tower layer for kube's client that counts API requests by verb, so the operator's
/// cost per App is visible (`flynn_operator_api_requests_total`).
#[derive(Clone, Debug)]
pub struct ApiCallLayer(pub Family<ApiLabels, Counter>);

impl<S> tower::Layer<S> for ApiCallLayer {
    type Service = ApiCall<S>;
    fn layer(&self, inner: S) -> ApiCall<S> {
        ApiCall {
            inner,
            counter: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ApiCall<S> {
    inner: S,
    counter: Family<ApiLabels, Counter>,
}

impl<S, B> tower::Service<http::Request<B>> for ApiCall<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let verb = match *req.method() {
            http::Method::GET if req.uri().query().is_some_and(|q| q.contains("watch=true")) => {
                "WATCH"
            }
            http::Method::GET => "GET",
            http::Method::POST => "POST",
            http::Method::PUT => "PUT",
            http::Method::PATCH => "PATCH",
            http::Method::DELETE => "DELETE",
            _ => "OTHER",
        };
        self.counter.get_or_create(&ApiLabels { verb }).inc();
        self.inner.call(req)
    }
}
