//! The operations endpoints: `/metrics`, `/healthz`, `/readyz`, on a TCP address and,
//! optionally, on a unix socket.
//!
//! Why both: during a handover two router processes share the TCP address (see
//! [`crate::listener`]), so a probe to it may be answered by either. The unix socket is this
//! process's alone (in the pod's own emptyDir): `flynn-router probe` ([`crate::probe`]), the
//! kubelet's exec probe, asks this process and no other.

use std::{convert::Infallible, path::Path, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::watch,
};
use tracing::{debug, warn};

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

/// Time an admin client has to send a request head, and to send its next one on a
/// keep-alive connection (probes and scrapes send theirs at once).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an admin connection stays open: a client that reads `/metrics` slowly, or
/// keeps sending requests, gives its descriptor back then.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

impl Admin {
    /// Serves the endpoints on a TCP listener.
    pub async fn serve_tcp(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    // Over the limit: closed at once.
                    if let Some(guard) = self.limit.admit("admin") {
                        tokio::spawn(self.clone().serve_connection(stream, guard));
                    }
                }
                Err(e) => self.accept_failed(e).await,
            }
        }
    }

    /// Serves the endpoints on a unix socket.
    pub async fn serve_unix(self, listener: UnixListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    if let Some(guard) = self.limit.admit("admin-socket") {
                        tokio::spawn(self.clone().serve_connection(stream, guard));
                    }
                }
                Err(e) => self.accept_failed(e).await,
            }
        }
    }

    async fn accept_failed(&self, error: std::io::Error) {
        // Typically EMFILE: back off instead of spinning.
        warn!(%error, "admin accept failed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    async fn serve_connection<I>(self, io: I, _guard: ConnGuard)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let svc = service_fn(move |req: Request<Incoming>| {
            let resp = self.respond(req.uri().path());
            async move { Ok::<_, Infallible>(resp) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .serve_connection(TokioIo::new(io), svc);
        match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(error = %e, "admin connection ended"),
            Err(_) => debug!("admin connection open too long; closed"),
        }
    }

    fn respond(&self, path: &str) -> Response<Full<Bytes>> {
        match path {
            "/metrics" => {
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.encode())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                r
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.drain.is_draining() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else if *self.serving.borrow() {
                    text(StatusCode::OK, "ok\n")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "waiting for the first routing table\n",
                    )
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
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

fn text(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = code;
    r
}
