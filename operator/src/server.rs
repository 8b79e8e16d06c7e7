//! The operator's admin endpoints (`flynn_telemetry`'s server): `/metrics`, `/healthz`
//! (the process is alive) and `/readyz` (caches synced, or standing by as a non-leader
//! replica).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flynn_telemetry::{Admin, Component};
use prometheus_client::encoding::text::encode_registry;

use crate::metrics::Metrics;

/// Readiness, flipped by the runner.
#[derive(Debug, Default)]
pub struct Health {
    pub ready: AtomicBool,
}

/// What the admin server reports.
#[derive(Debug)]
struct Endpoints {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Component for Endpoints {
    fn encode_metrics(&self, out: &mut String) -> std::fmt::Result {
        encode_registry(out, &self.metrics.registry)
    }

    async fn readiness(&self) -> Result<(), String> {
        if self.health.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("starting: caches not synced yet".into())
        }
    }
}

/// Serves the endpoints until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let endpoints = Arc::new(Endpoints { metrics, health });
    Admin::new("flynn_operator", env!("CARGO_PKG_VERSION"), endpoints)
        .serve(listener, shutdown)
        .await;
    Ok(())
}
