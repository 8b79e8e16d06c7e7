//! The SSH server: accept loop, per-connection handler, per-channel task, and the push a
//! channel's `git-receive-pack` runs.
//!
//! Inside: `handler` (auth, channel requests) hands each session channel to `channel`
//! (its request, refusals), which hands a push to `push`; `channel` and `push` end
//! channels with `reply`. Nothing outside this directory imports it but the receiver.

mod channel;
pub mod config;
mod handler;
mod push;
mod reply;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use handler::Connection;

use crate::shared::Shared;

/// Accepts connections until `stop_accepting` is cancelled. Connections run on `tracker`;
/// each is dropped (disconnected) when `hard_stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    stop_accepting: CancellationToken,
    hard_stop: CancellationToken,
) {
    let throttle = crate::throttle::Throttle::new(
        shared.settings.connection_rate,
        shared.settings.connection_burst,
    );
    loop {
        let (stream, peer) = tokio::select! {
            () = stop_accepting.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting an SSH connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if !throttle.allow(peer.ip(), std::time::Instant::now()) {
            // Closed before the version exchange: no key exchange to pay for.
            shared.metrics.throttled.inc();
            tracing::debug!(%peer, "connection rate limit: closing");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let span = tracing::info_span!("ssh", %peer);
        let config = config.clone();
        let shared = shared.clone();
        let hard_stop = hard_stop.clone();
        tracker.spawn(
            async move {
                shared.metrics.active_sessions.inc();
                run_connection(stream, config, shared.clone(), hard_stop).await;
                shared.metrics.active_sessions.dec();
            }
            .instrument(span),
        );
    }
}

async fn run_connection(
    stream: tokio::net::TcpStream,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    hard_stop: CancellationToken,
) {
    let authenticated = Arc::new(AtomicBool::new(false));
    let closed = CancellationToken::new();
    let handler = Connection::new(
        shared.clone(),
        authenticated.clone(),
        closed.clone(),
        tracing::Span::current(),
    );
    let grace = shared.settings.login_grace;
    // russh has no login grace time: bound the version exchange here and the
    // authentication below, so idle half-open connections cannot pile up.
    let session =
        match tokio::time::timeout(grace, russh::server::run_stream(config, stream, handler)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "SSH handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!("no SSH version exchange within the login grace time");
                return;
            }
        };
    let handle = session.handle();
    let grace_timer = {
        let handle = handle.clone();
        let authenticated = authenticated.clone();
        async move {
            tokio::time::sleep(grace).await;
            if !authenticated.load(Ordering::Relaxed) {
                tracing::info!("not authenticated within the login grace time: disconnecting");
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "login grace time exceeded".into(),
                        String::new(),
                    )
                    .await;
            }
            std::future::pending::<()>().await
        }
    };
    tokio::select! {
        result = session => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "SSH connection ended with an error");
            }
        }
        () = grace_timer => {}
        () = hard_stop.cancelled() => {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "the server is shutting down".into(), String::new())
                .await;
        }
    }
    // Whatever ended the connection, its pushes' client is gone.
    closed.cancel();
}
