//! `/metrics`, `/healthz` (the process is alive) and `/readyz` (the host key is loaded, the
//! slug store's token is there and the key registry has synced), on their own port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::keys::KeyRegistry;
use crate::metrics::Metrics;

/// What readiness depends on.
#[derive(Debug, Default)]
pub struct Health {
    pub host_key_loaded: AtomicBool,
    /// The pipeline has the slug store's token (`--shelf-token-secret`: once the store has
    /// created its Secret).
    pub shelf_token_loaded: AtomicBool,
    pub keys: KeyRegistry,
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let host_key = s.health.host_key_loaded.load(Ordering::Relaxed);
    let shelf_token = s.health.shelf_token_loaded.load(Ordering::Relaxed);
    let keys = s.health.keys.is_synced();
    match (host_key, shelf_token, keys) {
        (true, true, true) => (StatusCode::OK, "ready".to_owned()),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "starting: host key loaded: {host_key}, slug store token loaded: {shelf_token}, key registry synced: {keys}"
            ),
        ),
    }
}
