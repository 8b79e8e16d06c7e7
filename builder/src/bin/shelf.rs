//! `shelf`: the slug store's HTTP server. See `flynn_builder::store`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use flynn_builder::store::{
    BackendSettings, gc, server,
    token::{self, SecretRef},
};

/// The slug store: blobs over HTTP, kept in a directory or an object storage bucket.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SHELF_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Bearer token for writes (and reads without a signed URL); also the URL signing key.
    /// Or --token-secret.
    #[arg(long, env = "SHELF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The Secret holding the token (data key `token`), `NAMESPACE/NAME`: read at startup,
    /// and created with a new random token if it does not exist (never overwritten). Needs
    /// `get` on that Secret and `create` on Secrets in its namespace.
    #[arg(
        long,
        env = "SHELF_TOKEN_SECRET",
        value_name = "NAMESPACE/NAME",
        conflicts_with = "token"
    )]
    token_secret: Option<SecretRef>,
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
    #[command(flatten)]
    log: flynn_telemetry::LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.log_format.init("info");
    // The API client serves the token Secret and garbage collection.
    let client = if args.token_secret.is_some() || args.gc_interval > 0 {
        Some(kube::Client::try_default().await)
    } else {
        None
    };
    let token = match (&args.token, &args.token_secret) {
        (Some(token), _) => {
            anyhow::ensure!(
                token.len() >= token::MIN_LEN,
                "the token must be at least {} characters (SHELF_TOKEN)",
                token::MIN_LEN
            );
            token.clone()
        }
        (None, Some(secret)) => {
            let client = match &client {
                Some(Ok(client)) => client,
                Some(Err(e)) => anyhow::bail!(
                    "--token-secret {secret} needs the Kubernetes API, and there is no configuration ({e}): run in a pod with a ServiceAccount, or set KUBECONFIG"
                ),
                None => unreachable!("a client is made when there is a token Secret"),
            };
            let token = token::ensure(client, &secret.namespace, &secret.name).await?;
            tracing::info!(secret = %secret, "token read from its Secret");
            token
        }
        (None, None) => anyhow::bail!(
            "no token: set SHELF_TOKEN, or --token-secret NAMESPACE/NAME (SHELF_TOKEN_SECRET) to keep it in a Secret"
        ),
    };
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
        match client {
            Some(Ok(client)) => {
                tokio::spawn(gc::run(
                    client,
                    store.clone(),
                    Duration::from_secs(args.gc_interval),
                    Duration::from_secs(args.gc_grace),
                ));
            }
            Some(Err(e)) => tracing::warn!(
                error = %e,
                "no Kubernetes API access: garbage collection is off (set SHELF_GC_INTERVAL=0 to say so)"
            ),
            None => {}
        }
    }
    let shelf = Arc::new(server::Shelf::new(store, token));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("shelf").chain(args.iter().copied()))
    }

    #[test]
    fn the_token_secret_is_namespace_slash_name() {
        let args = parse(&["--token-secret", "flynn-system/flynn-shelf-token"]).unwrap();
        assert_eq!(
            args.token_secret,
            Some(SecretRef {
                namespace: "flynn-system".into(),
                name: "flynn-shelf-token".into()
            })
        );
        assert_eq!(args.token, None);
        for bad in ["flynn-shelf-token", "a/b/c", "/name", "ns/"] {
            let err = parse(&["--token-secret", bad]).unwrap_err().to_string();
            assert!(err.contains("<namespace>/<name>"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_token_and_a_token_secret_exclude_each_other() {
        let err = parse(&[
            "--token",
            "0123456789abcdef",
            "--token-secret",
            "flynn-system/flynn-shelf-token",
        ])
        .unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{err}"
        );
        assert_eq!(
            parse(&["--token", "0123456789abcdef"])
                .unwrap()
                .token
                .as_deref(),
            Some("0123456789abcdef")
        );
    }
}
