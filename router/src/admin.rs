//! The operations endpoints: `/metrics`, `/healthz`, `/readyz` (`flynn_telemetry`'s admin
//! server, as in every component), on a TCP address and, optionally, on a unix socket,
//! under the connection limit every listener shares.
//!
//! Why both: during a handover two router processes share the TCP address (see
//! [`crate::listener`]), so a probe to it may be answered by either. The unix socket is this
//! process's alone (in the pod's own emptyDir): `flynn-router probe` ([`crate::probe`]), the
//! kubelet's exec probe, asks this process and no other.

use std::{path::Path, sync::Arc, time::Duration};

use flynn_telemetry::Component;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::watch,
};
use tracing::warn;

use crate::{
    Error,
    limits::{ConnGuard, ConnLimit},
    listener,
    metrics::SharedMetrics,
    server::DrainSignal,
};

/// What the endpoints report. The serving tasks run until they are aborted at shutdown:
/// probes must keep getting `/readyz` 503 while connections drain.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Exported at `/metrics`.
    pub metrics: SharedMetrics,
    /// True once the traffic listeners listen, which they do once the first complete
    /// routing table is published.
    pub serving: watch::Receiver<bool>,
    /// Draining: `/readyz` says 503.
    pub drain: DrainSignal,
    /// The connection limit every listener shares.
    pub limit: ConnLimit,
}

/// Time an admin client has to send a request head (the platform's admin server's).
pub use flynn_telemetry::admin::HEAD_TIMEOUT;

impl Component for Admin {
    fn encode_metrics(&self, out: &mut String) -> std::fmt::Result {
        self.metrics.encode_families(out)
    }

    async fn readiness(&self) -> Result<(), String> {
        if self.drain.is_draining() {
            Err("draining".into())
        } else if *self.serving.borrow() {
            Ok(())
        } else {
            Err("waiting for the first routing table".into())
        }
    }
}

impl Admin {
    /// Serves the endpoints on a TCP listener.
    pub async fn serve_tcp(self, listener: TcpListener) {
        let limit = self.limit.clone();
        let server = self.server();
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    // Over the limit: closed at once.
                    if let Some(guard) = limit.admit("admin") {
                        tokio::spawn(serve(server.clone(), stream, guard));
                    }
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }

    /// Serves the endpoints on a unix socket.
    pub async fn serve_unix(self, listener: UnixListener) {
        let limit = self.limit.clone();
        let server = self.server();
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    if let Some(guard) = limit.admit("admin-socket") {
                        tokio::spawn(serve(server.clone(), stream, guard));
                    }
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }

    fn server(self) -> flynn_telemetry::Admin<Self> {
        flynn_telemetry::Admin::new("flynn_router", env!("CARGO_PKG_VERSION"), Arc::new(self))
    }
}

/// One connection, holding its place under the connection limit until it ends.
async fn serve<I>(server: flynn_telemetry::Admin<Admin>, io: I, _guard: ConnGuard)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    server.serve_connection(io).await;
}

async fn accept_failed(error: std::io::Error) {
    // Typically EMFILE: back off instead of spinning.
    warn!(%error, "admin accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Binds the unix socket at `path`, replacing a socket a previous run left there.
pub fn bind_unix(path: &Path) -> Result<UnixListener, Error> {
    listener::remove_stale_socket(path)
        .and_then(|()| UnixListener::bind(path))
        .map_err(|source| Error::BindUnix {
            path: path.to_owned(),
            source,
        })
}
