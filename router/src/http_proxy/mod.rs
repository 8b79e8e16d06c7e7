//! HTTP reverse proxying: one request in, one request out to a ready endpoint.
//!
//! Per request: load the current table (an atomic pointer read), match host + path, pick an
//! endpoint (sticky cookie, else power of two choices), take an idle keep-alive connection to
//! it or open one, forward the request with its body streamed, and stream the response back.
//! A request that never reached a backend (connect failure, or a pooled connection that had
//! closed before the request was written) is retried on another endpoint; anything later is
//! a 502, since the backend may have acted on it.
//!
//! The three forwarding paths, by what the client sent and which server read it:
//! - a request without a body on the router's own HTTP/1 server ([`own_server`]), through
//!   its own client: the common case;
//! - a request without a body on hyper's server (HTTP/2, HTTP/1.0, ...) through the own
//!   client ([`bodiless`]);
//! - a request with a body, or an upgrade, through hyper's client ([`with_body`]).
//!
//! Shared by the three: which endpoint an attempt goes to and when a request is sent again
//! ([`retry`]), the head the backend gets ([`upstream_head`], [`request_stamp`]), the
//! responses the router makes itself ([`local`]) and the backend's body on its way back
//! ([`upstream_body`]).

mod bodiless;
pub mod local;
pub mod own_server;
pub(crate) mod request_stamp;
pub(crate) mod retry;
#[cfg(test)]
mod tests;
pub mod upstream_body;
pub mod upstream_head;
mod with_body;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{Request, Response, StatusCode};
use hyper::body::{Body, Incoming};
use tracing::info;

use flynn_http1::client::{ConnectError, ExchangeError};

use self::local::{bad_host, redirect_to_https};
pub(crate) use self::upstream_head::is_upgrade;
pub use self::{
    local::{Local, text_response},
    upstream_body::{ProxyBody, UpstreamBody, UpstreamBodyError},
    upstream_head::ForwardHeaders,
};
use crate::{
    forwarded::TrustedProxies,
    limits::BodyPace,
    metrics::SharedMetrics,
    sticky::Sticky,
    table::{HttpEntry, TableHandle},
};

/// Settings of the proxy's backend side.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Limit on establishing a TCP connection to a backend.
    pub connect_timeout: Duration,
    /// Idle pooled connections older than this are not reused (backends close idle
    /// connections too; reusing one that is about to close wastes a retry).
    pub pool_idle_timeout: Duration,
    /// Endpoints tried per request when connecting fails.
    pub max_attempts: usize,
    /// Time a backend has to send the response head of a request without a body, from
    /// when the router got the request (zero: no limit); then the client gets a 504.
    /// Requests with a body have none: an upload may take longer than any fixed limit.
    pub backend_timeout: Duration,
    /// Log every request as JSON (`target: flynn_router::access`).
    pub access_log: bool,
    /// Peers whose `X-Forwarded-*` and `Forwarded` headers are kept (and extended) rather
    /// than replaced ([`crate::forwarded`]).
    pub trusted_proxies: TrustedProxies,
    /// The pace a request body must keep ([`crate::limits::TimedBody`]).
    pub body_pace: BodyPace,
    /// An upgraded (websocket) connection with no traffic either way for this long is
    /// closed (zero: never).
    pub tunnel_idle_timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(30),
            max_attempts: 3,
            backend_timeout: Duration::from_secs(60),
            access_log: false,
            trusted_proxies: TrustedProxies::default(),
            body_pace: BodyPace {
                grace: Duration::from_secs(30),
                min_rate: 1024,
            },
            tunnel_idle_timeout: Duration::from_secs(300),
        }
    }
}

/// What the proxy knows about the downstream connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client.
    pub peer: SocketAddr,
    /// The router's port the client connected to (`X-Forwarded-Port`).
    pub local_port: u16,
    /// Whether the connection is TLS (`X-Forwarded-Proto`).
    pub tls: bool,
}
/// Why forwarding a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// TCP connect failed: the request never left; safe to retry elsewhere.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// TCP connect took longer than the connect timeout.
    #[error("connecting to {addr}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The limit.
        timeout: Duration,
    },
    /// The backend's answer was unusable, or its connection broke before the answer
    /// (the router's own HTTP/1 client).
    #[error("backend {addr}: {source}")]
    Exchange {
        /// The endpoint.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: ExchangeError,
    },
    /// The backend failed the request or its connection broke.
    #[error("backend {addr}: {source}")]
    Backend {
        /// The endpoint.
        addr: SocketAddr,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
}

impl From<ConnectError> for ProxyError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Io { addr, source } => Self::Connect { addr, source },
            ConnectError::Timeout { addr, timeout } => Self::ConnectTimeout { addr, timeout },
        }
    }
}

/// The HTTP proxy shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    pub(crate) table: TableHandle,
    pub(crate) metrics: SharedMetrics,
    pub(crate) sticky: Sticky,
    pub(crate) opts: ProxyOptions,
}
impl Proxy {
    /// A proxy serving `table`.
    pub fn new(
        table: TableHandle,
        metrics: SharedMetrics,
        sticky: Sticky,
        opts: ProxyOptions,
    ) -> Self {
        Self {
            table,
            metrics,
            sticky,
            opts,
        }
    }

    /// Handles one request; never fails (errors become 4xx/5xx responses).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let fwd = ForwardHeaders::new(&conn, &self.opts.trusted_proxies);
        self.handle_with(req, conn, &fwd).await
    }

    /// [`Proxy::handle`] with the connection's forwarding headers already built (the server
    /// builds them once per connection).
    pub async fn handle_with(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        fwd: &ForwardHeaders,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let start = Instant::now();
        // RFC 9112 3.2: no Host, two, a malformed one, or one the target's authority
        // contradicts: 400, and the value is never echoed.
        let host = match crate::forwarded::request_host(&req) {
            Ok(host) => host,
            Err(e) => {
                let resp = bad_host(e);
                self.access_log(&req, "", None, None, resp.status(), start);
                return Ok(resp);
            }
        };
        let entry = {
            // The guard is dropped before any await: a request holds its route's `Arc`, not
            // the table, so a swap is never delayed by slow requests.
            let table = self.table.load();
            table.http.lookup(host, req.uri().path()).cloned()
        };
        let Some(entry) = entry else {
            self.metrics.no_route.inc();
            let resp = text_response(
                StatusCode::NOT_FOUND,
                format!("404 Not Found: no route for host {host:?}\n"),
            );
            self.access_log(&req, host, None, None, resp.status(), start);
            return Ok(resp);
        };
        if entry.https_redirect && !conn.tls {
            let resp = redirect_to_https(host, req.uri());
            entry.metrics.record(resp.status().as_u16(), 0.0);
            return Ok(resp);
        }
        // Only the access log needs these after the request is handed on: copy them only then.
        let logged = self.opts.access_log.then(|| {
            (
                req.method().clone(),
                host.to_owned(),
                req.uri().path().to_owned(),
            )
        });
        let (resp, backend) = self.forward(&entry, req, fwd).await;
        let status = resp.status();
        entry
            .metrics
            .record(status.as_u16(), start.elapsed().as_secs_f64());
        if let Some((method, host, path)) = logged {
            info!(
                target: "flynn_router::access",
                method = %method, host = %host, path = %path, status = status.as_u16(),
                route = %entry.key, backend = ?backend,
                duration_us = start.elapsed().as_micros() as u64,
                client = %conn.peer.ip(),
            );
        }
        Ok(resp)
    }

    /// Sends `req` to one of `entry`'s endpoints by the path it takes (module doc); returns
    /// the response and who answered.
    async fn forward(
        &self,
        entry: &HttpEntry,
        req: Request<Incoming>,
        fwd: &ForwardHeaders,
    ) -> (Response<ProxyBody>, Option<SocketAddr>) {
        let upgrade = is_upgrade(&req);
        let sticky = if entry.sticky {
            self.sticky.from_headers(req.headers())
        } else {
            None
        };
        if !upgrade && req.body().is_end_stream() {
            return self.forward_bodiless(entry, &req, fwd, sticky).await;
        }
        self.forward_with_body(entry, req, fwd, upgrade, sticky)
            .await
    }

    fn access_log(
        &self,
        req: &Request<Incoming>,
        host: &str,
        route: Option<&str>,
        backend: Option<SocketAddr>,
        status: StatusCode,
        start: Instant,
    ) {
        if self.opts.access_log {
            info!(
                target: "flynn_router::access",
                method = %req.method(), host = %host, path = %req.uri().path(),
                status = status.as_u16(), route = ?route, backend = ?backend,
                duration_us = start.elapsed().as_micros() as u64,
            );
        }
    }
}
