//! `shelf`: the slug store's HTTP server. See `flynn_builder::store`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::Parser;
use flynn_builder::store::{LocalStore, server};

/// The slug store: blobs over HTTP, kept in a directory.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SHELF_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Directory holding the objects (a PersistentVolume in the cluster).
    #[arg(long, env = "SHELF_ROOT", default_value = "/var/lib/shelf")]
    root: PathBuf,
    /// Bearer token for writes (and reads without a signed URL); also the URL signing key.
    #[arg(long, env = "SHELF_TOKEN", hide_env_values = true)]
    token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flynn_builder::telemetry::init("info");
    let args = Args::parse();
    anyhow::ensure!(
        args.token.len() >= 16,
        "the token must be at least 16 characters (SHELF_TOKEN)"
    );
    let store = LocalStore::open(&args.root)
        .await
        .with_context(|| format!("opening the store directory {}", args.root.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, root = %args.root.display(), "shelf listening");
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
