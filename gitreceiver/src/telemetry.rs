//! Logging: `RUST_LOG` filters, `LOG_FORMAT=json` (or `--log-format json`) switches to JSON
//! lines. Push logs carry the push span's fields (app, namespace, user, commit).

/// Installs the global subscriber.
pub fn init(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,russh=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.init();
    }
}
