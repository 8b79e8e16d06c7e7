//! Prometheus metrics (`/metrics`): reconciles, errors by kind and reason, durations, API
//! requests by verb and response code, objects the watches could not read.
//!
//! Names follow Prometheus' conventions: counters end in `_total` (the client library
//! appends it), durations in `_seconds`, a response's status code is the `code` label.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

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
    /// GET (a get or a list), WATCH, POST, PUT, PATCH or DELETE.
    pub verb: &'static str,
    /// The response's status code (`200`, `409`, ...), or `timeout` when none came within
    /// [`API_REQUEST_TIMEOUT`], or `error` when the connection failed.
    pub code: Code,
}

/// The `code` label: a status code, or why there is none.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Code {
    Status(u16),
    Timeout,
    Error,
}

impl prometheus_client::encoding::EncodeLabelValue for Code {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        match self {
            Code::Status(code) => write!(encoder, "{code}"),
            Code::Timeout => encoder.write_str("timeout"),
            Code::Error => encoder.write_str("error"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
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
    /// Requests to the API server, by verb and response code (see [`ApiCallLayer`]).
    pub api_requests: Family<ApiLabels, Counter>,
    /// Watched objects skipped because they could not be parsed, by kind (see
    /// [`crate::unreadable`]).
    pub unreadable: Family<KindLabels, Counter>,
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
        let unreadable = Family::<KindLabels, Counter>::default();
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
            "Requests to the Kubernetes API server, by verb and response code",
            api_requests.clone(),
        );
        registry.register(
            "unreadable_objects",
            "Watched objects skipped because they could not be parsed, by kind",
            unreadable.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            api_requests,
            unreadable,
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

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// How long a request to the API server (a write, a get, a list page; not a watch) may
/// wait for its response before it fails with `code="timeout"`. The API server gives up
/// on its side after 60 s; a reconcile stuck that long on one call holds up its object,
/// and under a stalled connection, every object.
pub const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A tower layer for kube's client: each request to the API server is counted by verb
/// and response code (`flynn_operator_api_requests_total`), so the operator's cost per
/// App and its failures are visible, and every request but a watch has
/// [`API_REQUEST_TIMEOUT`].
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

/// The request's verb, as the metric names it.
fn verb<B>(req: &http::Request<B>) -> &'static str {
    match *req.method() {
        http::Method::GET if req.uri().query().is_some_and(|q| q.contains("watch=true")) => "WATCH",
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// The request timed out (see [`API_REQUEST_TIMEOUT`]).
#[derive(Debug, thiserror::Error)]
#[error("no response from the API server within {0:?}")]
pub struct TimedOut(Duration);

impl<S, B, R> tower::Service<http::Request<B>> for ApiCall<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), tower::BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let verb = verb(&req);
        let counter = self.counter.clone();
        let response = self.inner.call(req);
        async move {
            let result = if verb == "WATCH" {
                response.await.map_err(Into::into)
            } else {
                match tokio::time::timeout(API_REQUEST_TIMEOUT, response).await {
                    Ok(r) => r.map_err(Into::into),
                    Err(_) => Err(TimedOut(API_REQUEST_TIMEOUT).into()),
                }
            };
            let code = match &result {
                Ok(resp) => Code::Status(resp.status().as_u16()),
                Err(e) if e.is::<TimedOut>() => Code::Timeout,
                Err(_) => Code::Error,
            };
            counter.get_or_create(&ApiLabels { verb, code }).inc();
            result
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_requests_are_counted_with_their_code() {
        let m = Metrics::default();
        m.api_requests
            .get_or_create(&ApiLabels {
                verb: "PATCH",
                code: Code::Status(409),
            })
            .inc();
        m.api_requests
            .get_or_create(&ApiLabels {
                verb: "POST",
                code: Code::Timeout,
            })
            .inc();
        m.observe("app", Duration::from_millis(5));
        let text = m.render();
        assert!(
            text.contains(r#"flynn_operator_api_requests_total{verb="PATCH",code="409"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"flynn_operator_api_requests_total{verb="POST",code="timeout"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"flynn_operator_reconciles_total{controller="app"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"flynn_operator_reconcile_duration_seconds_count{controller="app"} 1"#),
            "{text}"
        );
    }
}
