//! Requests with a body, and upgrades: through hyper's client, the body streamed at the
//! pace [`crate::limits::TimedBody`] enforces. A pooled connection of either client is
//! used first; a request hyper hands back unsent, or a safe bodiless one whose connection
//! broke before any answer ([`super::retry::Replay`]), goes to another endpoint.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use flynn_http1::client::BackendConn;

use super::{
    ForwardHeaders, Proxy, ProxyBody, ProxyError,
    retry::{Replay, attempt_endpoint},
    upstream_body::{Upstream, UpstreamBody},
    upstream_head::{prepare_request, strip_hop_by_hop},
};
use crate::{
    limits::{ConnGuard, TimedBody},
    table::{Endpoint, HttpEntry, InFlight, UpstreamRequestBody},
};

impl Proxy {
    /// [`Proxy::forward`] for a request with a body, or an upgrade (`upgrade`), through
    /// hyper's client; `sticky`: the endpoint its cookie names.
    pub(crate) async fn forward_with_body(
        &self,
        entry: &HttpEntry,
        mut req: Request<Incoming>,
        fwd: &ForwardHeaders,
        upgrade: bool,
        sticky: Option<SocketAddr>,
    ) -> (Response<ProxyBody>, Option<SocketAddr>) {
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

    /// An idle keep-alive connection to `endpoint` for hyper's client: one of its own, else
    /// one of the router's client (a request with a body must not open a new connection
    /// while idle ones wait, and must see the keep-alive race like any other request).
    pub(crate) async fn pooled_sender(
        &self,
        endpoint: &Endpoint,
    ) -> Option<SendRequest<UpstreamRequestBody>> {
        if let Some(mut tx) = endpoint.checkout(self.opts.pool_idle_timeout)
            && tx.ready().await.is_ok()
        {
            return Some(tx);
        }
        let conn = endpoint
            .conns
            .checkout(self.opts.pool_idle_timeout, Instant::now())?;
        let mut tx = handshake(conn.into_stream(), endpoint.addr, false)
            .await
            .ok()?;
        tx.ready().await.ok()?;
        Some(tx)
    }

    pub(crate) fn respond(
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
    pub(crate) fn upgraded(
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

/// Opens a connection to a backend and starts its connection task.
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    upgrades: bool,
) -> Result<SendRequest<UpstreamRequestBody>, ProxyError> {
    let conn = BackendConn::connect(addr, timeout).await?;
    handshake(conn.into_stream(), addr, upgrades).await
}

/// Starts hyper's client on an open connection, its connection task spawned.
pub(crate) async fn handshake(
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
