//! `shelf`: the slug store's HTTP server. See `flynn_builder::store`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use flynn_builder::store::{BackendSettings, gc, server};

/// The slug store: blobs over HTTP, kept in a directory or an object storage bucket.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SHELF_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Bearer token for writes (and reads without a signed URL); also the URL signing key.
    #[arg(long, env = "SHELF_TOKEN", hide_env_values = true)]
    token: String,
    /// Where objects live.
    #[command(flatten)]
    backend: BackendSettings,
    /// Seconds between garbage collection passes, which delete the slugs no Release names,
    /// sources, and the build caches of deleted Apps (needs to list Releases and Apps in the
    /// Kubernetes API). 0: never.
    #[arg(long, env = "SHELF_GC_INTERVAL", default_value_t = 3600)]
    gc_interval: u64,
    /// Garbage collection leaves objects younger than this many seconds alone: a build
    /// uploads its slug before its Release exists.
    #[arg(long, env = "SHELF_GC_GRACE", default_value_t = 6 * 3600)]
    gc_grace: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flynn_builder::telemetry::init("info");
    let args = Args::parse();
    anyhow::ensure!(
        args.token.len() >= 16,
        "the token must be at least 16 characters (SHELF_TOKEN)"
    );
    let store = args.backend.open().await?;
    // Not fatal: the backend may come up after the shelf; /readyz reports it meanwhile.
    if let Err(e) = store.check().await {
        tracing::warn!(error = %e, "the backend does not answer yet");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, backend = %args.backend.describe(), "shelf listening");
    if args.gc_interval > 0 {
        // Without API access the store still serves; it only keeps everything.
        match kube::Client::try_default().await {
            Ok(client) => {
                tokio::spawn(gc::run(
                    client,
                    store.clone(),
                    Duration::from_secs(args.gc_interval),
                    Duration::from_secs(args.gc_grace),
                ));
            }
            Err(e) => tracing::warn!(
                error = %e,
                "no Kubernetes API access: garbage collection is off (set SHELF_GC_INTERVAL=0 to say so)"
            ),
        }
    }
    let shelf = Arc::new(server::Shelf::new(store, args.token));
    server::serve(listener, shelf, shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("shelf stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
