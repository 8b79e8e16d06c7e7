//! The operator's errors. Each says which object and what failed; `metric_label` gives
//! the bounded label used in the `errors` counter.

/// An error while reconciling one object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed (network, conflict, permission, validation).
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    /// The object is missing a field the API server should have guaranteed.
    #[error("{0} has no {1}")]
    MissingField(String, &'static str),

    /// Serializing an object for server-side apply failed (a bug, not bad input).
    #[error("serializing {0}: {1}")]
    Serialize(String, #[source] serde_json::Error),
}

impl Error {
    /// Short, bounded label for the `errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(resp) if resp.code == 409 => "conflict",
                kube::Error::Api(resp) if resp.code == 422 => "invalid",
                kube::Error::Api(resp) if resp.code == 403 => "forbidden",
                kube::Error::Api(resp) if resp.code == 404 => "not_found",
                kube::Error::Api(_) => "api",
                _ => "transport",
            },
            Error::MissingField(..) => "missing_field",
            Error::Serialize(..) => "serialize",
        }
    }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds "what we were doing" to a kube error.
pub(crate) trait KubeResultExt<T> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T> KubeResultExt<T> for std::result::Result<T, kube::Error> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Kube {
            action: action(),
            source,
        })
    }
}

/// Whether a kube error is a 404.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(resp) if resp.code == 404)
}
