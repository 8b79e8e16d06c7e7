//! The receiver assembled: host key, key registry, hook socket, SSH server, the ops
//! endpoints and the repository cleanup, with graceful shutdown. `main.rs`, the tests and
//! the benchmark start it here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::authz::Authorizer;
use crate::hook::server::HookServer;
use crate::http::Health;
use crate::locks::AppLocks;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::settings::Settings;
use crate::shared::Shared;

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listening on {addr} ({what}): {source}")]
    Listen {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    HostKey(#[from] crate::hostkey::Error),
    #[error(transparent)]
    ShelfToken(#[from] flynn_builder::store::token::TokenError),
}

/// A running receiver.
#[derive(Debug)]
pub struct Running {
    /// Where SSH is served (the real port when the settings said 0).
    pub ssh_addr: SocketAddr,
    /// Where `/metrics`, `/healthz`, `/readyz` are served.
    pub http_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Waits until the key registry has synced (what `/readyz` reports).
    pub async fn ready(&self) {
        while !self.health.keys.is_synced() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The key registry (tests wait for a key they registered).
    pub fn keys(&self) -> &crate::keys::KeyRegistry {
        &self.health.keys
    }

    /// Starts a graceful shutdown: no new connections; running pushes get the shutdown
    /// grace period.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the receiver has stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// [`shutdown`](Self::shutdown) and [`wait`](Self::wait).
    pub async fn stop(self) {
        self.shutdown();
        self.wait().await;
    }
}

/// Starts the receiver: loads (or creates) the host key, starts the key registry, binds
/// the ops port, the hook socket and the SSH port. SSH connections are accepted once the
/// registry has synced.
pub async fn start(
    settings: Settings,
    client: Client,
    pipeline: Pipeline,
) -> Result<Running, StartError> {
    start_when(settings, client, async { Ok(pipeline) }).await
}

/// [`start`] with a pipeline that is not ready yet: `pipeline` resolves once it is (it waits
/// for the slug store to create its token Secret, `--shelf-token-secret`). Meanwhile
/// `/healthz` answers and `/readyz` says what is missing; the hook socket and SSH port are
/// bound after it. Its error stops the start.
pub async fn start_when(
    settings: Settings,
    client: Client,
    pipeline: impl Future<Output = Result<Pipeline, StartError>>,
) -> Result<Running, StartError> {
    let settings = Arc::new(settings);
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());

    let http = TcpListener::bind(settings.http_addr)
        .await
        .map_err(|source| StartError::Listen {
            what: "metrics and health",
            addr: settings.http_addr.to_string(),
            source,
        })?;
    let http_addr = http.local_addr().map_err(|source| StartError::Listen {
        what: "metrics and health",
        addr: settings.http_addr.to_string(),
        source,
    })?;
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(crate::http::serve(
        http,
        metrics.clone(),
        health.clone(),
        http_stop.clone().cancelled_owned(),
    ));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.host_key_secret.namespace);
    let host_key = crate::hostkey::load_or_create(&secrets, &settings.host_key_secret.name).await?;
    tracing::info!(
        fingerprint = %host_key.public_key().fingerprint(Default::default()),
        "SSH host key loaded"
    );
    health.host_key_loaded.store(true, Ordering::Relaxed);
    let config = Arc::new(crate::ssh::config::server_config(&settings, host_key));

    let pipeline = match pipeline.await {
        Ok(p) => p,
        Err(e) => {
            http_stop.cancel();
            let _ = http_task.await;
            return Err(e);
        }
    };
    health.shelf_token_loaded.store(true, Ordering::Relaxed);

    let keys = health.keys.clone();
    let registry_task = tokio::spawn(
        keys.clone()
            .run(Api::namespaced(client.clone(), &settings.keys_namespace)),
    );

    let hook_listener =
        HookServer::bind(&settings.hook_socket).map_err(|source| StartError::Listen {
            what: "hook socket",
            addr: settings.hook_socket.display().to_string(),
            source,
        })?;
    let hooks = HookServer::new(settings.clone(), Arc::new(pipeline), metrics.clone());
    let hook_stop = CancellationToken::new();
    let hook_task = tokio::spawn(hooks.clone().serve(hook_listener, hook_stop.clone()));

    let ssh = TcpListener::bind(settings.ssh_addr)
        .await
        .map_err(|source| StartError::Listen {
            what: "SSH",
            addr: settings.ssh_addr.to_string(),
            source,
        })?;
    let ssh_addr = ssh.local_addr().map_err(|source| StartError::Listen {
        what: "SSH",
        addr: settings.ssh_addr.to_string(),
        source,
    })?;

    let shared = Arc::new(Shared {
        settings: settings.clone(),
        keys: keys.clone(),
        authorizer: Authorizer::new(client.clone()),
        locks: AppLocks::default(),
        pushes: crate::admission::PushSlots::new(
            settings.max_concurrent_pushes,
            settings.max_concurrent_pushes_per_namespace,
        ),
        hooks,
        metrics: metrics.clone(),
    });
    let gc_task = settings
        .repo_gc_interval
        .map(|every| tokio::spawn(crate::gc::run(client, shared.clone(), every)));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let tracker = TaskTracker::new();
            let hard_stop = CancellationToken::new();
            // Refusing every key because the registry is still empty would be wrong:
            // connections wait in the backlog until it has synced.
            tokio::select! {
                () = async { while !keys.is_synced() { tokio::time::sleep(Duration::from_millis(50)).await } } => {
                    tracing::info!(addr = %ssh_addr, "accepting SSH connections");
                    let accept = crate::ssh::serve(ssh, config, shared, tracker.clone(), shutdown.clone(), hard_stop.clone());
                    accept.await;
                }
                () = shutdown.cancelled() => {}
            }
            tracker.close();
            if !tracker.is_empty() {
                tracing::info!(connections = tracker.len(), grace = ?settings.shutdown_grace, "shutting down: waiting for running pushes");
            }
            if tokio::time::timeout(settings.shutdown_grace, tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!("shutdown grace period over: disconnecting the remaining clients");
                hard_stop.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(15), tracker.wait()).await;
            }
            hook_stop.cancel();
            let _ = hook_task.await;
            registry_task.abort();
            if let Some(gc) = gc_task {
                gc.abort();
            }
            http_stop.cancel();
            let _ = http_task.await;
            let _ = std::fs::remove_file(&settings.hook_socket);
            tracing::info!("stopped");
        }
    });
    Ok(Running {
        ssh_addr,
        http_addr,
        metrics,
        health,
        shutdown,
        task,
    })
}
