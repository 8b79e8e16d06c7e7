//! Prometheus metrics of the slug store.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode_registry},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Labels of a request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// Response status code.
    pub code: u16,
}

/// The store's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Bytes stored by successful uploads.
    pub bytes_received: Counter,
    /// Bytes of object bodies sent (as announced by the responses).
    pub bytes_sent: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flynn_shelf");
        let requests = Family::<RequestLabels, Counter>::default();
        let bytes_received = Counter::default();
        let bytes_sent = Counter::default();
        registry.register(
            "requests",
            "HTTP requests by method and status code",
            requests.clone(),
        );
        registry.register(
            "received_bytes",
            "Bytes stored by successful uploads",
            bytes_received.clone(),
        );
        registry.register("sent_bytes", "Bytes of objects sent", bytes_sent.clone());
        Self {
            registry,
            requests,
            bytes_received,
            bytes_sent,
        }
    }
}

impl Metrics {
    /// Counts a request.
    pub fn request(&self, method: &str, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                code,
            })
            .inc();
    }

    /// Writes the store's families (the admin server adds the rest and the EOF).
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        encode_registry(out, &self.registry)
    }
}
