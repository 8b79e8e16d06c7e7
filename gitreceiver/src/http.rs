//! `/metrics`, `/healthz` (the process is alive) and `/readyz` (the host key is loaded, the
//! slug store's token is there and the key registry has synced), on their own port:
//! `flynn_telemetry`'s admin server, as in every component.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flynn_telemetry::{Admin, Component};
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

/// What the admin server reports.
#[derive(Debug)]
struct Endpoints {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Component for Endpoints {
    fn encode_metrics(&self, out: &mut String) -> std::fmt::Result {
        self.metrics.encode(out)
    }

    async fn readiness(&self) -> Result<(), String> {
        let host_key = self.health.host_key_loaded.load(Ordering::Relaxed);
        let shelf_token = self.health.shelf_token_loaded.load(Ordering::Relaxed);
        let keys = self.health.keys.is_synced();
        if host_key && shelf_token && keys {
            Ok(())
        } else {
            Err(format!(
                "starting: host key loaded: {host_key}, slug store token loaded: {shelf_token}, key registry synced: {keys}"
            ))
        }
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let endpoints = Arc::new(Endpoints { metrics, health });
    Admin::new("flynn_gitreceiver", env!("CARGO_PKG_VERSION"), endpoints)
        .serve(listener, shutdown)
        .await;
    Ok(())
}
