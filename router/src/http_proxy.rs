//! HTTP reverse proxying: one request in, one request out to a ready endpoint.
//!
//! Per request: load the current table (an atomic pointer read), match host + path, pick an
//! endpoint (sticky cookie, else power of two choices), take an idle keep-alive connection to
//! it or open one, forward the request with its body streamed, and stream the response back.
//! A request that never reached a backend (connect failure, or a pooled connection that had
//! closed before the request was written) is retried on another endpoint; anything later is
//! a 502, since the backend may have acted on it.

use std::{
    cell::RefCell,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version,
    header::{self, HOST},
    uri::PathAndQuery,
};
use http_body_util::{Either, Empty, Full};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::http1::SendRequest,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::{
    backend::{self, BackendConn, ConnectError, ExchangeError, ResponseBody, ResponseHead},
    forwarded::{ClientHeader, Forwarding, HostError, TrustedProxies, classify, real_client},
    limits::{BodyPace, ConnGuard, TimedBody},
    metrics::SharedMetrics,
    sticky::Sticky,
    table::{Endpoint, HttpEntry, InFlight, TableHandle, UpstreamRequestBody},
};

/// The body of every response the proxy sends: a backend's, streamed, or one of ours.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

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

/// The forwarding header values of one downstream connection, built once per connection
/// (not per request): a request clones them, which only bumps a reference count.
#[derive(Debug, Clone)]
pub struct ForwardHeaders {
    /// The client's address (`X-Forwarded-For`, appended to a trusted proxy's chain).
    client_ip: HeaderValue,
    /// `for=<client>` of the `Forwarded` element the router adds (RFC 7239 6: an IPv6
    /// address is quoted and bracketed).
    forwarded_for: HeaderValue,
    /// `X-Forwarded-Port`.
    port: HeaderValue,
    /// `X-Forwarded-Proto`.
    proto: HeaderValue,
    /// The peer is a trusted proxy (`--trusted-proxies`): the forwarding headers it sends
    /// are kept (and extended), not replaced.
    trusted: bool,
    /// The trusted proxies, to find the client in a trusted proxy's chain (`X-Real-IP`).
    proxies: TrustedProxies,
}

impl ForwardHeaders {
    /// The values for requests arriving on `conn`; the forwarding headers of its requests
    /// are believed only if its peer is in `trusted`.
    pub fn new(conn: &ConnInfo, trusted: &TrustedProxies) -> Self {
        let peer = conn.peer.ip().to_canonical();
        let ip = peer.to_string();
        let forwarded_for = match peer {
            std::net::IpAddr::V4(_) => format!("for={ip}"),
            std::net::IpAddr::V6(_) => format!("for=\"[{ip}]\""),
        };
        let value = |s: String| {
            HeaderValue::from_maybe_shared(Bytes::from(s))
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        };
        Self {
            client_ip: value(ip),
            forwarded_for: value(forwarded_for),
            port: HeaderValue::from(conn.local_port),
            proto: HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
            trusted: trusted.contains(peer),
            proxies: trusted.clone(),
        }
    }
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

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_REQUEST_START: HeaderName = HeaderName::from_static("x-request-start");

/// Connection-level headers that describe one hop and must not be forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

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

    /// Sends `req` to one of `entry`'s endpoints; returns the response and who answered.
    async fn forward(
        &self,
        entry: &HttpEntry,
        mut req: Request<Incoming>,
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
        // The connection's place under the limit goes with its tunnel (the server put it in
        // the request's extensions).
        let downstream_upgrade = upgrade.then(|| {
            let guard = req.extensions_mut().remove::<ConnGuard>();
            (hyper::upgrade::on(&mut req), guard)
        });
        prepare_request(&mut req, fwd, upgrade);
        let pace = self.opts.body_pace;
        let mut req = req.map(|body| Either::Left(TimedBody::new(body, pace)));
        // A safe request without a body can be sent again when a connection breaks after it
        // was written but before any answer (a backend closing an idle keep-alive connection,
        // a pod exiting): the client never learns of it. Anything else is not replayed.
        let replay = (!upgrade).then(|| Replay::of(&req)).flatten();
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last_error = None;
        for attempt in 0..self.opts.max_attempts.max(1) {
            let Some(endpoint) = attempt_endpoint(entry, attempt, sticky, &tried) else {
                break;
            };
            let in_flight = endpoint.start();

            // An idle pooled connection first. If it turns out closed before our request was
            // written, hyper hands the request back and we open a fresh connection below.
            if !upgrade && let Some(mut tx) = self.pooled_sender(&endpoint).await {
                match tx.try_send_request(req).await {
                    Ok(resp) => {
                        return self.respond(entry, resp, &endpoint, tx, in_flight, sticky);
                    }
                    Err(mut e) => match (e.take_message(), &replay) {
                        (Some(r), _) => req = r,
                        (None, Some(replay)) => {
                            debug!(route = %entry.key, backend = %endpoint.addr, error = %e.into_error(),
                                "pooled connection broke under a safe request; sending it again");
                            entry.metrics.replay();
                            req = replay.request();
                        }
                        (None, None) => {
                            let error = ProxyError::Backend {
                                addr: endpoint.addr,
                                source: e.into_error(),
                            };
                            return self.failed(entry, Some(error));
                        }
                    },
                }
            }

            // Boxed: a rare path, kept out of the future every request builds and moves.
            let connecting = Box::pin(connect(endpoint.addr, self.opts.connect_timeout, upgrade));
            let mut tx = match connecting.await {
                Ok(tx) => tx,
                Err(e) => {
                    debug!(route = %entry.key, error = %e, "backend connect failed; trying another");
                    entry.metrics.connect_error();
                    tried.push(endpoint.addr);
                    last_error = Some(e);
                    continue;
                }
            };
            let resp = match tx.send_request(req).await {
                Ok(resp) => resp,
                Err(source) => {
                    let error = ProxyError::Backend {
                        addr: endpoint.addr,
                        source,
                    };
                    match &replay {
                        // The endpoint accepted and then dropped the connection (exiting):
                        // another endpoint gets the request.
                        Some(replay) => {
                            debug!(route = %entry.key, %error, "backend dropped a safe request; trying another");
                            entry.metrics.replay();
                            tried.push(endpoint.addr);
                            last_error = Some(error);
                            req = replay.request();
                            continue;
                        }
                        None => return self.failed(entry, Some(error)),
                    }
                }
            };
            if let Some(down) = downstream_upgrade {
                return (
                    self.upgraded(entry, resp, down, in_flight),
                    Some(endpoint.addr),
                );
            }
            return self.respond(entry, resp, &endpoint, tx, in_flight, sticky);
        }
        self.failed(entry, last_error)
    }

    /// [`Proxy::forward`] for a request without a body (and no upgrade), on the router's own
    /// HTTP/1 client. The request is only read, never consumed or rewritten: its head is
    /// written for the backend straight from the client's ([`encode_forwarded_head`]), and
    /// sending it again needs no copy.
    async fn forward_bodiless(
        &self,
        entry: &HttpEntry,
        req: &Request<Incoming>,
        fwd: &ForwardHeaders,
        sticky: Option<SocketAddr>,
    ) -> (Response<ProxyBody>, Option<SocketAddr>) {
        // RFC 9110 9.2.1: a proxy may repeat a safe request the client did not see fail.
        let safe = is_safe(req.method());
        let head_request = req.method() == http::Method::HEAD;
        // One id and start time per request, whichever attempt carries it.
        let id = (!req.headers().contains_key(&X_REQUEST_ID)).then(request_id);
        let now = Instant::now();
        let start = request_start_at(now);
        let encode = |out: &mut Vec<u8>| encode_forwarded_head(out, req, fwd, id.as_ref(), &start);
        let parse = |buf: &mut BytesMut| backend::response::parse(buf, head_request, false);
        let answered = self
            .exchange_any(entry, sticky, safe, now, encode, parse)
            .await;
        match answered {
            Ok(a) => self.respond_raw(entry, a.head, a.conn, &a.endpoint, a.in_flight, sticky),
            Err(last_error) => self.failed(entry, last_error),
        }
    }

    /// Sends a request without a body to one of `entry`'s endpoints on the router's own
    /// HTTP/1 client (`encode` writes its head, `parse` reads the response head, as in
    /// [`backend::exchange_with`]) and returns the first answer; `now` is about the time of
    /// the request. A request that never reached a backend goes to another endpoint; so
    /// does a `safe` one whose connection broke before any answer (RFC 9110 9.2.1: a proxy
    /// may repeat a safe request the client did not see fail). Otherwise the error: `None`
    /// when there was no endpoint to try.
    pub(crate) async fn exchange_any<T>(
        &self,
        entry: &HttpEntry,
        sticky: Option<SocketAddr>,
        safe: bool,
        now: Instant,
        encode: impl Fn(&mut Vec<u8>),
        mut parse: impl FnMut(&mut BytesMut) -> Result<Option<T>, backend::HeadError>,
    ) -> Result<Answered<T>, Option<ProxyError>> {
        let timeout = self.opts.backend_timeout;
        let deadline = (!timeout.is_zero()).then(|| now + timeout);
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last_error = None;
        for attempt in 0..self.opts.max_attempts.max(1) {
            let Some(endpoint) = attempt_endpoint(entry, attempt, sticky, &tried) else {
                break;
            };
            let in_flight = endpoint.start();

            // An idle pooled connection first. If the backend closed it while it was idle
            // (the keep-alive race), the request either never left (write failed) or got no
            // answer; a safe one is sent again on a fresh connection below.
            if let Some(mut conn) = endpoint.conns.checkout(self.opts.pool_idle_timeout, now) {
                match backend::exchange_with(&mut conn, &encode, &mut parse, deadline).await {
                    Ok(head) => {
                        return Ok(Answered {
                            head,
                            conn,
                            endpoint,
                            in_flight,
                        });
                    }
                    Err(e) if e.never_sent() => {
                        debug!(route = %entry.key, backend = %endpoint.addr, error = %e,
                            "pooled connection was closed; opening a new one");
                    }
                    Err(e) if e.no_response() && safe => {
                        debug!(route = %entry.key, backend = %endpoint.addr, error = %e,
                            "pooled connection broke under a safe request; sending it again");
                        entry.metrics.replay();
                    }
                    Err(source) => {
                        let addr = endpoint.addr;
                        return Err(Some(ProxyError::Exchange { addr, source }));
                    }
                }
            }

            // Boxed: a rare path, kept out of the future every request builds and moves.
            let connecting = Box::pin(BackendConn::connect(
                endpoint.addr,
                self.opts.connect_timeout,
            ));
            let mut conn = match connecting.await {
                Ok(conn) => conn,
                Err(e) => {
                    debug!(route = %entry.key, error = %e, "backend connect failed; trying another");
                    entry.metrics.connect_error();
                    tried.push(endpoint.addr);
                    last_error = Some(e.into());
                    continue;
                }
            };
            match backend::exchange_with(&mut conn, &encode, &mut parse, deadline).await {
                Ok(head) => {
                    return Ok(Answered {
                        head,
                        conn,
                        endpoint,
                        in_flight,
                    });
                }
                // The endpoint accepted and then dropped the connection (exiting): another
                // endpoint gets the request, if it surely never arrived or may be repeated.
                Err(source) if source.never_sent() || (source.no_response() && safe) => {
                    let error = ProxyError::Exchange {
                        addr: endpoint.addr,
                        source,
                    };
                    debug!(route = %entry.key, %error, "backend dropped the request; trying another");
                    entry.metrics.replay();
                    tried.push(endpoint.addr);
                    last_error = Some(error);
                }
                Err(source) => {
                    let addr = endpoint.addr;
                    return Err(Some(ProxyError::Exchange { addr, source }));
                }
            }
        }
        Err(last_error)
    }

    /// The response to a request that got no backend answer: a 502 naming the failure, a 504
    /// when the backend did not answer in time, or a 503 when the route had no endpoint to
    /// try.
    pub(crate) fn failure(&self, entry: &HttpEntry, error: Option<ProxyError>) -> Local {
        match error {
            Some(ProxyError::Exchange {
                addr,
                source: ExchangeError::TimedOut,
            }) => {
                warn!(route = %entry.key, backend = %addr, "backend timed out");
                Local::text(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "504 Gateway Timeout: backend {addr} sent no response within {:?}\n",
                        self.opts.backend_timeout
                    ),
                )
            }
            Some(error) => {
                warn!(route = %entry.key, %error, "backend failed");
                Local::text(
                    StatusCode::BAD_GATEWAY,
                    format!("502 Bad Gateway: {error}\n"),
                )
            }
            None => Local::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "503 Service Unavailable: no ready endpoint for route {} (service {})\n",
                    entry.key, entry.backend.service
                ),
            ),
        }
    }

    /// [`Proxy::failure`] as hyper's response, answered by no backend.
    fn failed(
        &self,
        entry: &HttpEntry,
        error: Option<ProxyError>,
    ) -> (Response<ProxyBody>, Option<SocketAddr>) {
        (self.failure(entry, error).into_response(), None)
    }

    /// The client's response from a backend's response head; its body streams from `conn`.
    fn respond_raw(
        &self,
        entry: &HttpEntry,
        head: ResponseHead,
        conn: BackendConn,
        endpoint: &Arc<Endpoint>,
        in_flight: InFlight,
        sticky: Option<SocketAddr>,
    ) -> (Response<ProxyBody>, Option<SocketAddr>) {
        let ResponseHead {
            status,
            mut headers,
            framing,
            keep_alive,
            ..
        } = head;
        // The backend module left hop-by-hop headers out already.
        if entry.sticky
            && sticky != Some(endpoint.addr)
            && let Ok(v) = HeaderValue::from_str(&self.sticky.set_cookie(endpoint.addr))
        {
            headers.append(header::SET_COOKIE, v);
        }
        let body = UpstreamBody {
            inner: Upstream::Raw(ResponseBody::new(
                conn,
                framing,
                keep_alive,
                endpoint.clone(),
            )),
            in_flight: Some(in_flight),
        };
        let mut resp = Response::new(Either::Left(body));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        (resp, Some(endpoint.addr))
    }

    /// An idle keep-alive connection to `endpoint` for hyper's client: one of its own, else
    /// one of the router's client (a request with a body must not open a new connection
    /// while idle ones wait, and must see the keep-alive race like any other request).
    async fn pooled_sender(&self, endpoint: &Endpoint) -> Option<SendRequest<UpstreamRequestBody>> {
        if let Some(mut tx) = endpoint.checkout(self.opts.pool_idle_timeout)
            && tx.ready().await.is_ok()
        {
            return Some(tx);
        }
        let conn = endpoint
            .conns
            .checkout(self.opts.pool_idle_timeout, Instant::now())?;
        let mut tx = handshake(conn.stream, endpoint.addr, false).await.ok()?;
        tx.ready().await.ok()?;
        Some(tx)
    }

    fn respond(
        &self,
        entry: &HttpEntry,
        resp: Response<Incoming>,
        endpoint: &Arc<Endpoint>,
        tx: SendRequest<UpstreamRequestBody>,
        in_flight: InFlight,
        sticky: Option<SocketAddr>,
    ) -> (Response<ProxyBody>, Option<SocketAddr>) {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        if entry.sticky
            && sticky != Some(endpoint.addr)
            && let Ok(v) = HeaderValue::from_str(&self.sticky.set_cookie(endpoint.addr))
        {
            parts.headers.append(header::SET_COOKIE, v);
        }
        let body = UpstreamBody {
            inner: Upstream::Hyper {
                body,
                pool: Some((endpoint.clone(), tx)),
            },
            in_flight: Some(in_flight),
        };
        (
            Response::from_parts(parts, Either::Left(body)),
            Some(endpoint.addr),
        )
    }

    /// Completes an Upgrade (websockets, ...): on `101` both connections are handed to a task
    /// that copies bytes both ways until either side closes.
    fn upgraded(
        &self,
        entry: &HttpEntry,
        mut resp: Response<Incoming>,
        (downstream, guard): (hyper::upgrade::OnUpgrade, Option<ConnGuard>),
        in_flight: InFlight,
    ) -> Response<ProxyBody> {
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, false);
            let body = UpstreamBody {
                inner: Upstream::Hyper { body, pool: None },
                in_flight: Some(in_flight),
            };
            return Response::from_parts(parts, Either::Left(body));
        }
        let upstream = hyper::upgrade::on(&mut resp);
        let route = entry.key.to_string();
        let idle = self.opts.tunnel_idle_timeout;
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let _guard = guard;
            match tokio::try_join!(downstream, upstream) {
                Ok((down, up)) => {
                    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                    if let Err(e) = crate::limits::splice(&mut down, &mut up, idle).await {
                        debug!(%route, error = %e, "upgraded connection ended");
                    }
                }
                Err(e) => debug!(%route, error = %e, "upgrade failed"),
            }
        });
        let (parts, _) = resp.into_parts();
        Response::from_parts(parts, Either::Right(Full::new(Bytes::new())))
    }
}

/// The head of a safe request without a body, kept to send it again.
#[derive(Debug)]
struct Replay {
    method: http::Method,
    uri: Uri,
    version: http::Version,
    /// The headers, in order. A list taken from [`REPLAY_HEADERS`] and given back on drop:
    /// keeping the copy costs reference counts, not allocations (it is made for every safe
    /// request and almost never used).
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Methods RFC 9110 calls safe (9.2.1): a proxy may repeat them without the client's
/// consent.
fn is_safe(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    )
}

/// The endpoint an attempt goes to: the sticky one on the first attempt (if it is still
/// ready), otherwise the balancer's pick among those not tried yet.
fn attempt_endpoint(
    entry: &HttpEntry,
    attempt: usize,
    sticky: Option<SocketAddr>,
    tried: &[SocketAddr],
) -> Option<Arc<Endpoint>> {
    let pinned = if attempt == 0 {
        sticky.and_then(|a| entry.backend.find(a))
    } else {
        None
    };
    pinned.or_else(|| entry.backend.pick(tried)).cloned()
}

thread_local! {
    /// Header lists of finished replays, for the next ones.
    static REPLAY_HEADERS: RefCell<Vec<Vec<(HeaderName, HeaderValue)>>> =
        const { RefCell::new(Vec::new()) };
}

impl Replay {
    /// Only methods RFC 9110 calls safe (9.2.1), and only without a body: those a proxy may
    /// repeat without the client's consent.
    fn of(req: &Request<UpstreamRequestBody>) -> Option<Self> {
        if !(is_safe(req.method()) && req.body().is_end_stream()) {
            return None;
        }
        let mut headers = REPLAY_HEADERS
            .with_borrow_mut(|free| free.pop())
            .unwrap_or_default();
        headers.extend(req.headers().iter().map(|(n, v)| (n.clone(), v.clone())));
        Some(Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers,
        })
    }

    fn request(&self) -> Request<UpstreamRequestBody> {
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        let headers = req.headers_mut();
        headers.reserve(self.headers.len());
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        req
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let mut headers = std::mem::take(&mut self.headers);
        headers.clear();
        if headers.capacity() <= 64 {
            REPLAY_HEADERS.with_borrow_mut(|free| {
                if free.len() < 256 {
                    free.push(headers);
                }
            });
        }
    }
}

/// Opens a connection to a backend and starts its connection task.
async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    upgrades: bool,
) -> Result<SendRequest<UpstreamRequestBody>, ProxyError> {
    let conn = BackendConn::connect(addr, timeout).await?;
    handshake(conn.stream, addr, upgrades).await
}

/// Starts hyper's client on an open connection, its connection task spawned.
async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    upgrades: bool,
) -> Result<SendRequest<UpstreamRequestBody>, ProxyError> {
    let (tx, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::Backend { addr, source })?;
    if upgrades {
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(%addr, error = %e, "backend connection ended");
            }
        });
    } else {
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%addr, error = %e, "backend connection ended");
            }
        });
    }
    Ok(tx)
}

/// The 400 for a request whose `Host` was refused; the connection closes after it.
fn bad_host(e: HostError) -> Response<ProxyBody> {
    debug!(error = %e, "refused a request's Host");
    let mut resp = text_response(StatusCode::BAD_REQUEST, e.body());
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// An HTTP/1.1 protocol switch (`Connection: upgrade` + `Upgrade`).
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Writes the head [`prepare_request`] would make of `req` (no upgrade), without touching the
/// request ([`encode_forwarded`] over its headers).
fn encode_forwarded_head<B>(
    out: &mut Vec<u8>,
    req: &Request<B>,
    fwd: &ForwardHeaders,
    id: Option<&HeaderValue>,
    start: &HeaderValue,
) {
    // Backends get origin-form (`/path?query`), whatever form the client used.
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let headers = || {
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    };
    let authority = req.uri().authority().map(|a| a.as_str());
    encode_forwarded(
        out,
        req.method().as_str(),
        target,
        authority,
        headers,
        fwd,
        id,
        start,
    );
}

/// Writes the head of a request without a body as the backend gets it, in one pass over the
/// client's headers (names in any case; `headers` makes an iterator over them): hop-by-hop
/// headers (and those `Connection` names) are skipped, the forwarding headers
/// ([`write_forwarding`]), `X-Request-Id` (`id`, when the client sent none) and
/// `X-Request-Start` are written after the client's headers. `authority` becomes the
/// `Host` header when the client sent none (HTTP/2's `:authority`, an absolute-form target).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_forwarded<'a, I: Iterator<Item = (&'a [u8], &'a [u8])>>(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    authority: Option<&str>,
    headers: impl Fn() -> I,
    fwd: &ForwardHeaders,
    id: Option<&HeaderValue>,
    start: &HeaderValue,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // HTTP/1 backends need a Host header.
    let mut host: &[u8] = b"";
    if let Some(authority) = authority
        && !headers().any(|(n, _)| n.eq_ignore_ascii_case(b"host"))
    {
        host = authority.as_bytes();
        line(out, b"host", host);
    }
    // Headers a `Connection` header names are hop-by-hop too (allocates only if there are).
    let named: Vec<&[u8]> = headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| backend::hop::tokens(v))
        .filter(|t| !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"upgrade"))
        .collect();
    // What a trusted proxy said (allocates only if it said something).
    let mut prior = Prior::default();
    for (name, value) in headers() {
        if backend::hop::is_hop_by_hop(name) || named.iter().any(|t| t.eq_ignore_ascii_case(name)) {
            continue;
        }
        match classify(name) {
            ClientHeader::Ordinary => {}
            ClientHeader::Forwarding(kind) => {
                // An untrusted client's are dropped: the router writes its own below.
                if fwd.trusted {
                    prior.add(kind, value);
                }
                continue;
            }
            ClientHeader::Claim if fwd.trusted => {}
            ClientHeader::Claim | ClientHeader::Underscore => continue,
        }
        if name.eq_ignore_ascii_case(b"x-request-start") {
            continue;
        }
        if name.eq_ignore_ascii_case(b"host") {
            host = value;
        }
        line(out, name, value);
    }
    write_forwarding(out, fwd, host, &prior);
    if let Some(id) = id {
        line(out, b"x-request-id", id.as_bytes());
    }
    line(out, b"x-request-start", start.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The forwarding headers a trusted proxy sent, in order.
#[derive(Debug, Default)]
struct Prior<'a> {
    /// `X-Forwarded-For` and `Forwarded` values: every line, joined.
    chains: Vec<(Forwarding, &'a [u8])>,
    /// The first `X-Forwarded-Proto`, `-Host`, `-Port`.
    proto: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
    port: Option<&'a [u8]>,
}

impl<'a> Prior<'a> {
    fn add(&mut self, kind: Forwarding, value: &'a [u8]) {
        // Only visible ASCII is passed on (a value `http` would refuse is dropped).
        if value.is_empty()
            || !value
                .iter()
                .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            return;
        }
        match kind {
            Forwarding::For | Forwarding::Forwarded => self.chains.push((kind, value)),
            Forwarding::Proto => {
                self.proto.get_or_insert(value);
            }
            Forwarding::Host => {
                self.host.get_or_insert(value);
            }
            Forwarding::Port => {
                self.port.get_or_insert(value);
            }
            // Not read: a proxy may pass a client's own on (the chain decides).
            Forwarding::RealIp => {}
        }
    }

    /// The lines of one chain header, in order.
    fn lines(&self, kind: Forwarding) -> impl DoubleEndedIterator<Item = &'a [u8]> + Clone {
        self.chains
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|&(_, v)| v)
    }

    /// The values of one chain header, each followed by `, `.
    fn chain(&self, kind: Forwarding, out: &mut Vec<u8>) {
        for v in self.lines(kind) {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
}

/// Writes `X-Forwarded-For`, `-Proto`, `-Host`, `-Port`, `Forwarded` and `X-Real-IP` for a
/// request with `host` (already validated) from `fwd`'s connection: set from the peer, the
/// listener and `host`; for a trusted proxy (`prior` holds what it sent), its chains
/// extended by the peer, its `X-Forwarded-Proto/Host/Port` kept, and `X-Real-IP` the client
/// its chain names ([`real_client`]).
fn write_forwarding(out: &mut Vec<u8>, fwd: &ForwardHeaders, host: &[u8], prior: &Prior<'_>) {
    out.extend_from_slice(b"x-forwarded-for: ");
    prior.chain(Forwarding::For, out);
    out.extend_from_slice(fwd.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    line(
        out,
        b"x-forwarded-proto",
        prior.proto.unwrap_or(fwd.proto.as_bytes()),
    );
    if let Some(host) = prior.host.or((!host.is_empty()).then_some(host)) {
        line(out, b"x-forwarded-host", host);
    }
    line(
        out,
        b"x-forwarded-port",
        prior.port.unwrap_or(fwd.port.as_bytes()),
    );
    out.extend_from_slice(b"forwarded: ");
    prior.chain(Forwarding::Forwarded, out);
    out.extend_from_slice(fwd.forwarded_for.as_bytes());
    if !host.is_empty() {
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(host);
        out.push(b'"');
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(fwd.proto.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"x-real-ip: ");
    match fwd
        .trusted
        .then(|| {
            real_client(
                prior.lines(Forwarding::For),
                prior.lines(Forwarding::Forwarded),
                &fwd.proxies,
            )
        })
        .flatten()
    {
        Some(ip) => {
            use std::io::Write as _;
            let _ = write!(out, "{ip}");
        }
        None => out.extend_from_slice(fwd.client_ip.as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
}

/// Rewrites a downstream request into the request sent to the backend.
fn prepare_request<B>(req: &mut Request<B>, fwd: &ForwardHeaders, upgrade: bool) {
    // HTTP/2 carries the host in `:authority`; HTTP/1 backends need a Host header.
    if !req.headers().contains_key(HOST)
        && let Some(authority) = req.uri().authority()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(HOST, v);
    }
    // Backends get origin-form (`/path?query`), whatever form the client used.
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
    *req.version_mut() = Version::HTTP_11;

    let headers = req.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }

    // The same headers as `encode_forwarded` writes, by the same code: the client's
    // forwarding headers (and the claims and underscore names it may not send) are taken
    // out, and what `write_forwarding` makes of them (and of the connection) put in.
    let mut written = Vec::new();
    // Allocates only when the client sent any.
    let mut drop: Vec<HeaderName> = Vec::new();
    {
        let mut prior = Prior::default();
        for (name, value) in headers.iter() {
            match classify(name.as_str().as_bytes()) {
                ClientHeader::Ordinary => continue,
                ClientHeader::Forwarding(kind) if fwd.trusted => prior.add(kind, value.as_bytes()),
                ClientHeader::Claim if fwd.trusted => continue,
                ClientHeader::Forwarding(_) | ClientHeader::Claim | ClientHeader::Underscore => {}
            }
            // A name with several values comes once per value: removed once.
            if drop.last() != Some(name) {
                drop.push(name.clone());
            }
        }
        let host = headers.get(HOST).map_or(&b""[..], HeaderValue::as_bytes);
        write_forwarding(&mut written, fwd, host, &prior);
        written.extend_from_slice(b"\r\n");
    }
    for name in &drop {
        headers.remove(name);
    }
    let written = Bytes::from(written);
    let mut fields = [httparse::EMPTY_HEADER; 6];
    if let Ok(httparse::Status::Complete((_, fields))) =
        httparse::parse_headers(&written, &mut fields)
    {
        for f in fields.iter() {
            let at = f.value.as_ptr() as usize - written.as_ptr() as usize;
            // The static names: no allocation per header.
            let ClientHeader::Forwarding(kind) = classify(f.name.as_bytes()) else {
                continue;
            };
            let name = match kind {
                Forwarding::For => &X_FORWARDED_FOR,
                Forwarding::Proto => &X_FORWARDED_PROTO,
                Forwarding::Host => &X_FORWARDED_HOST,
                Forwarding::Port => &X_FORWARDED_PORT,
                Forwarding::Forwarded => &FORWARDED,
                Forwarding::RealIp => &X_REAL_IP,
            };
            if let Ok(value) = HeaderValue::from_maybe_shared(written.slice(at..at + f.value.len()))
            {
                headers.append(name.clone(), value);
            }
        }
    }
    // Keep a request id the client (or an outer proxy) set, so one id follows the request.
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), request_id());
    }
    // Heroku's format: milliseconds since the epoch, for queue-time measurements.
    headers.insert(X_REQUEST_START.clone(), request_start());
}

thread_local! {
    /// Small header values are cut from one shared buffer, so that making one costs a copy
    /// into it rather than an allocation (the buffer is freed once no value points into it).
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    /// A monotonic time and the wall-clock time since the epoch read with it.
    static EPOCH_ANCHOR: std::cell::Cell<Option<(Instant, Duration)>> =
        const { std::cell::Cell::new(None) };
    /// The last `X-Request-Start` value: requests in the same millisecond share it.
    static REQUEST_START: RefCell<(u128, HeaderValue)> =
        const { RefCell::new((0, HeaderValue::from_static("t=0"))) };
}

/// A header value of at most 64 bytes written by `write` into the scratch buffer.
fn scratch_value(write: impl FnOnce(&mut BytesMut)) -> HeaderValue {
    let bytes = SCRATCH.with_borrow_mut(|buf| {
        if buf.capacity() - buf.len() < 64 {
            *buf = BytesMut::with_capacity(4096);
        }
        write(buf);
        buf.split().freeze()
    });
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A new random request id: 32 lower-case hex digits.
pub(crate) fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id = rand::random::<u128>();
    let mut digits = [0u8; 32];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    scratch_value(|buf| buf.extend_from_slice(&digits))
}

/// `t=<milliseconds since the epoch>`, now.
pub(crate) fn request_start() -> HeaderValue {
    request_start_at(Instant::now())
}

/// `t=<milliseconds since the epoch>` at `now`, a time the caller read anyway: the wall
/// clock is read once a second per thread and the milliseconds since then are added, so a
/// request costs no second clock read.
pub(crate) fn request_start_at(now: Instant) -> HeaderValue {
    let ms = EPOCH_ANCHOR.with(|anchor| {
        let recent = anchor.get().and_then(|(at, epoch)| {
            let since = now.checked_duration_since(at)?;
            (since < Duration::from_secs(1)).then_some(epoch + since)
        });
        recent.unwrap_or_else(|| {
            let epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            anchor.set(Some((now, epoch)));
            epoch
        })
    });
    let ms = ms.as_millis();
    REQUEST_START.with_borrow_mut(|(last, value)| {
        if *last != ms {
            let mut digits = [0u8; 40];
            let mut n = ms;
            let mut at = digits.len();
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            *value = scratch_value(|buf| {
                buf.extend_from_slice(b"t=");
                buf.extend_from_slice(&digits[at..]);
            });
            *last = ms;
        }
        value.clone()
    })
}

/// Removes hop-by-hop headers, including those a `Connection` header names. For an upgrade,
/// `Upgrade` (and the `Connection: upgrade` set afterwards) must pass.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Headers listed in `Connection` are hop-by-hop too. The usual tokens, `keep-alive` and
    // `upgrade`, name headers that are removed (or, for an upgrade, kept) below anyway: they
    // are skipped without building a `HeaderName` (an allocation for `keep-alive`).
    let mut named: Vec<HeaderName> = Vec::new();
    for token in headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        if token.eq_ignore_ascii_case("keep-alive") || token.eq_ignore_ascii_case("upgrade") {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            named.push(name);
        }
    }
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if !upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// A `308` to the same host and path over HTTPS.
fn redirect_to_https(host: &str, uri: &Uri) -> Response<ProxyBody> {
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Local::redirect_to_https(host, pq).into_response()
}

/// A plain-text response generated by the router.
pub fn text_response(status: StatusCode, body: String) -> Response<ProxyBody> {
    Local::text(status, body).into_response()
}

/// A response the router makes itself (404, 502, 503, the HTTPS redirect), for either
/// server: hyper's ([`Local::into_response`]) or the router's own HTTP/1 one
/// ([`Local::encode`]).
#[derive(Debug)]
pub struct Local {
    /// The status.
    pub status: StatusCode,
    /// A plain-text body saying what happened.
    pub body: String,
    /// `Location`, for redirects.
    pub location: Option<String>,
}

impl Local {
    /// A plain-text response.
    pub fn text(status: StatusCode, body: String) -> Self {
        Self {
            status,
            body,
            location: None,
        }
    }

    /// `308` to the same host (without its port) and path over HTTPS.
    pub fn redirect_to_https(host: &str, path_and_query: &str) -> Self {
        let host = crate::matcher::strip_port(host);
        let location = format!("https://{host}{path_and_query}");
        Self {
            status: StatusCode::PERMANENT_REDIRECT,
            body: format!("308 Permanent Redirect: {location}\n"),
            location: Some(location),
        }
    }

    /// As a response for hyper's server.
    pub fn into_response(self) -> Response<ProxyBody> {
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from(self.body))));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(v) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    }

    /// As HTTP/1.1 bytes, appended to `out`; `close` adds `Connection: close`.
    pub fn encode(&self, out: &mut Vec<u8>, close: bool) {
        use std::io::Write as _;
        let status = self.status;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.body.len()
        );
        if let Some(location) = self
            .location
            .as_deref()
            .filter(|l| HeaderValue::from_str(l).is_ok())
        {
            let _ = write!(out, "location: {location}\r\n");
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body.as_bytes());
    }
}

/// A backend's answer to a request sent on the router's own HTTP/1 client
/// ([`Proxy::exchange_any`]): the response head, the connection its body follows on, and
/// who answered.
#[derive(Debug)]
pub(crate) struct Answered<T> {
    pub head: T,
    pub conn: BackendConn,
    pub endpoint: Arc<Endpoint>,
    pub in_flight: InFlight,
}

/// A backend's response body, streamed; when it has been read to the end the connection goes
/// back to the endpoint's pool, and the endpoint's in-flight count drops.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Upstream,
    in_flight: Option<InFlight>,
}

/// Which client fetched the response.
#[derive(Debug)]
enum Upstream {
    /// hyper's (requests with a body, upgrades): the connection goes back to the pool here.
    Hyper {
        body: Incoming,
        pool: Option<(Arc<Endpoint>, SendRequest<UpstreamRequestBody>)>,
    },
    /// The router's own, which pools its connection itself.
    Raw(ResponseBody),
}

/// Why a backend's response body broke off.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    /// hyper's client.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// The router's own.
    #[error(transparent)]
    Raw(#[from] backend::BodyError),
}

impl UpstreamBody {
    fn finish(&mut self) {
        if let Upstream::Hyper { pool, .. } = &mut self.inner
            && let Some((endpoint, tx)) = pool.take()
        {
            endpoint.checkin(tx);
        }
        self.in_flight = None;
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let polled = match &mut self.inner {
            Upstream::Hyper { body, .. } => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(UpstreamBodyError::from))),
            Upstream::Raw(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(UpstreamBodyError::from))),
        };
        if let Poll::Ready(None) = polled {
            self.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Upstream::Hyper { body, .. } => body.is_end_stream(),
            Upstream::Raw(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Upstream::Hyper { body, .. } => body.size_hint(),
            Upstream::Raw(body) => body.size_hint(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper does not poll a body it knows is empty (204, HEAD, Content-Length: 0), and a
        // client may go away mid-body: pool the connection only if the response was complete.
        if self.is_end_stream() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ConnInfo {
        ConnInfo {
            peer: "10.1.2.3:5555".parse().unwrap(),
            local_port: 443,
            tls: true,
        }
    }

    fn untrusted() -> ForwardHeaders {
        ForwardHeaders::new(&info(), &TrustedProxies::default())
    }

    fn trusted() -> ForwardHeaders {
        let proxies = TrustedProxies::new(["10.1.0.0/16".parse().unwrap()]);
        let fwd = ForwardHeaders::new(&info(), &proxies);
        assert!(fwd.trusted);
        fwd
    }

    /// A spoofed chain from an untrusted client is replaced; the same chain from a trusted
    /// proxy is extended, and its proto/host/port kept. Both paths (one-pass head and
    /// `HeaderMap` rewrite) agree.
    #[test]
    fn forwarding_headers_are_believed_only_from_trusted_proxies() {
        let build = || {
            Request::builder()
                .uri("/")
                .header("host", "shop.test")
                .header("X-Forwarded-For", "6.6.6.6")
                .header("x-forwarded-for", "7.7.7.7")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "bank.test")
                .header("x-forwarded-port", "8443")
                .header("forwarded", "for=6.6.6.6;proto=https")
                .body(())
                .unwrap()
        };
        let v6 = ConnInfo {
            peer: "[2001:db8::5]:1".parse().unwrap(),
            local_port: 80,
            tls: false,
        };
        let cases = [
            (
                untrusted(),
                [
                    "10.1.2.3",
                    "https",
                    "shop.test",
                    "443",
                    "for=10.1.2.3;host=\"shop.test\";proto=https",
                ],
            ),
            (
                trusted(),
                [
                    "6.6.6.6, 7.7.7.7, 10.1.2.3",
                    "https",
                    "bank.test",
                    "8443",
                    "for=6.6.6.6;proto=https, for=10.1.2.3;host=\"shop.test\";proto=https",
                ],
            ),
            (
                ForwardHeaders::new(&v6, &TrustedProxies::default()),
                [
                    "2001:db8::5",
                    "http",
                    "shop.test",
                    "80",
                    "for=\"[2001:db8::5]\";host=\"shop.test\";proto=http",
                ],
            ),
        ];
        for (fwd, want) in cases {
            let mut req = build();
            prepare_request(&mut req, &fwd, false);
            let names = [
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-forwarded-port",
                "forwarded",
            ];
            for (name, want) in names.iter().zip(want) {
                let all: Vec<_> = req.headers().get_all(*name).iter().collect();
                assert_eq!(all, [want], "{name} (trusted: {})", fwd.trusted);
            }
            let mut out = Vec::new();
            encode_forwarded_head(&mut out, &build(), &fwd, None, &request_start());
            let text = String::from_utf8(out).unwrap();
            for (name, want) in names.iter().zip(want) {
                assert_eq!(
                    text.matches(&format!("\r\n{name}: ")).count(),
                    1,
                    "{name} in {text}"
                );
                assert!(text.contains(&format!("\r\n{name}: {want}\r\n")), "{text}");
            }
        }
    }

    #[test]
    fn requests_get_forwarding_headers_and_lose_hop_by_hop_ones() {
        let mut req = Request::builder()
            .uri("https://example.com/a?b=c")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "1")
            .header("keep-alive", "timeout=5")
            .header("x-forwarded-for", "192.0.2.1")
            .header("te", "trailers")
            .body(())
            .unwrap();
        *req.version_mut() = Version::HTTP_2;
        prepare_request(&mut req, &untrusted(), false);
        let h = req.headers();
        assert_eq!(req.uri(), "/a?b=c");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(h["host"], "example.com");
        // The client is no trusted proxy: its X-Forwarded-For is replaced.
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(
            h["forwarded"],
            "for=10.1.2.3;host=\"example.com\";proto=https"
        );
        assert_eq!(h["x-request-id"].len(), 32);
        assert!(h["x-request-start"].to_str().unwrap().starts_with("t="));
        for gone in ["connection", "x-private", "keep-alive", "te"] {
            assert!(!h.contains_key(gone), "{gone} was forwarded");
        }
    }

    /// The one-pass head of a request without a body says what `prepare_request` says.
    #[test]
    fn forwarded_heads_match_prepared_requests() {
        let build = || {
            let mut req = Request::builder()
                .method("GET")
                .uri("https://example.com/a?b=c")
                .header("connection", "keep-alive, x-private, close")
                .header("x-private", "1")
                .header("close", "1")
                .header("keep-alive", "timeout=5")
                .header("x-forwarded-for", "192.0.2.1")
                .header("x-forwarded-for", "192.0.2.9")
                .header("x-forwarded-proto", "gopher")
                .header("te", "trailers")
                .header("upgrade", "h2c")
                .header("accept", "a")
                .header("accept", "b")
                .header("x-request-id", "given")
                .header("x-real-ip", "6.6.6.6")
                .header("true-client-ip", "6.6.6.6")
                .header("x_forwarded_for", "6.6.6.6")
                .header("x-team-trace", "abc")
                .body(())
                .unwrap();
            *req.version_mut() = Version::HTTP_2;
            req
        };
        for fwd in [untrusted(), trusted()] {
            heads_match(&build, &fwd);
        }
    }

    /// Claims about the client other than the forwarding headers: an untrusted client's are
    /// dropped and `X-Real-IP` is its address; a trusted proxy's are passed on and
    /// `X-Real-IP` is the client its chain names; a name with `_` is dropped from both. The
    /// two paths agree.
    #[test]
    fn client_claims_are_dropped_unless_from_a_trusted_proxy() {
        let build = || {
            Request::builder()
                .uri("/")
                .header("host", "shop.test")
                .header("x-forwarded-for", "6.6.6.6, 203.0.113.7")
                .header("x-real-ip", "6.6.6.6")
                .header("true-client-ip", "6.6.6.6")
                .header("x-forwarded-ssl", "on")
                .header("x_real_ip", "6.6.6.6")
                .header("x-team-trace", "abc")
                .header("x-request-id", "given")
                .body(())
                .unwrap()
        };
        for (fwd, real_ip, claims_kept) in [
            (untrusted(), "10.1.2.3", false),
            (trusted(), "203.0.113.7", true),
        ] {
            let mut req = build();
            prepare_request(&mut req, &fwd, false);
            let h = req.headers();
            assert_eq!(h.get_all("x-real-ip").iter().count(), 1);
            assert_eq!(h["x-real-ip"], real_ip);
            assert_eq!(h.contains_key("true-client-ip"), claims_kept);
            assert_eq!(h.contains_key("x-forwarded-ssl"), claims_kept);
            assert!(!h.contains_key("x_real_ip"));
            assert_eq!(h["x-team-trace"], "abc");
            let mut out = Vec::new();
            encode_forwarded_head(&mut out, &build(), &fwd, None, &request_start());
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text.matches("x-real-ip: ").count(), 1, "{text}");
            assert!(
                text.contains(&format!("\r\nx-real-ip: {real_ip}\r\n")),
                "{text}"
            );
            assert_eq!(text.contains("true-client-ip"), claims_kept, "{text}");
            assert_eq!(text.contains("x-forwarded-ssl"), claims_kept, "{text}");
            assert!(!text.contains("x_real_ip"), "{text}");
            assert!(text.contains("\r\nx-team-trace: abc\r\n"), "{text}");
            heads_match(&build, &fwd);
        }
    }

    fn heads_match(build: &impl Fn() -> Request<()>, fwd: &ForwardHeaders) {
        let fwd = fwd.clone();
        let start = request_start();
        let mut out = Vec::new();
        encode_forwarded_head(&mut out, &build(), &fwd, None, &start);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(&out).unwrap().is_complete());
        assert_eq!(parsed.method, Some("GET"));
        assert_eq!(
            parsed.path,
            build().uri().path_and_query().map(PathAndQuery::as_str)
        );
        let mut fast: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let mut prepared = build();
        prepare_request(&mut prepared, &fwd, false);
        prepared
            .headers_mut()
            .insert(X_REQUEST_START.clone(), start.clone());
        let mut slow: Vec<(String, String)> = prepared
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        fast.sort();
        slow.sort();
        assert_eq!(fast, slow);
        // No id from the client: the generated one.
        let mut req = build();
        req.headers_mut().remove("x-request-id");
        let id = request_id();
        let mut out = Vec::new();
        encode_forwarded_head(&mut out, &req, &fwd, Some(&id), &start);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(&format!("x-request-id: {}\r\n", id.to_str().unwrap())));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn generated_header_values() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 32);
            assert!(
                id.as_bytes()
                    .iter()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let start = request_start();
        let t: u128 = start
            .to_str()
            .unwrap()
            .strip_prefix("t=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(t.abs_diff(ms) < 1000, "{t} vs {ms}");
        // From the anchored clock: a later instant is later by as much.
        let parse = |v: HeaderValue| -> u128 { v.to_str().unwrap()[2..].parse().unwrap() };
        let now = Instant::now();
        let (a, b) = (
            request_start_at(now),
            request_start_at(now + Duration::from_millis(250)),
        );
        assert_eq!(parse(b) - parse(a.clone()), 250);
        assert!(parse(a).abs_diff(ms) < 1000);
        // Many values from one scratch buffer stay intact.
        let ids: Vec<_> = (0..500).map(|_| request_id()).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| id.len() == 32));
    }

    #[test]
    fn connection_tokens_name_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("Keep-Alive, close, X-Gone"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("close", HeaderValue::from_static("1"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn replays_copy_safe_heads_only() {
        let req = Request::builder()
            .method("GET")
            .uri("/a?b")
            .header("host", "example.com")
            .header("accept", "text/html")
            .header("accept", "text/plain")
            .body(Either::Right(Empty::new()))
            .unwrap();
        for _ in 0..3 {
            let replay = Replay::of(&req).unwrap();
            let again = replay.request();
            assert_eq!(again.method(), req.method());
            assert_eq!(again.uri(), req.uri());
            assert_eq!(again.headers(), req.headers());
        }
        let post = Request::builder()
            .method("POST")
            .uri("/")
            .body(Either::Right(Empty::new()))
            .unwrap();
        assert!(Replay::of(&post).is_none());
    }

    #[test]
    fn request_ids_are_kept() {
        let mut req = Request::builder()
            .uri("/")
            .header("host", "example.com")
            .header("x-request-id", "abc")
            .body(())
            .unwrap();
        prepare_request(&mut req, &untrusted(), false);
        assert_eq!(req.headers()["x-request-id"], "abc");
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut req = Request::builder()
            .uri("/ws")
            .header("host", "example.com")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(&req));
        prepare_request(&mut req, &untrusted(), true);
        assert_eq!(req.headers()["upgrade"], "websocket");
        assert_eq!(req.headers()["connection"], "upgrade");
    }

    #[test]
    fn redirects_keep_path_and_query() {
        let uri: Uri = "/x?y=1".parse().unwrap();
        let resp = redirect_to_https("example.com:80", &uri);
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(resp.headers()["location"], "https://example.com/x?y=1");
    }
}
