//! Which endpoint an attempt goes to, and when a request is sent again.
//!
//! A request that surely never reached a backend (connect failure, a pooled connection
//! closed before the request was written) goes to another endpoint; so does a safe one
//! (RFC 9110 9.2.1, [`flynn_http1::method::is_safe`]) whose connection broke before any
//! answer, which the client never learns of. Anything later is a 502 (or a 504 past the
//! backend timeout), since the backend may have acted on it.

use std::{cell::RefCell, net::SocketAddr, sync::Arc, time::Instant};

use bytes::BytesMut;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Body;
use tracing::debug;

use flynn_http1::{
    client::{self as backend, BackendConn},
    method::is_safe,
};

use super::{Proxy, ProxyError};
use crate::table::{Endpoint, HttpEntry, InFlight, UpstreamRequestBody};

impl Proxy {
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

/// The head of a safe request without a body, kept to send it again.
#[derive(Debug)]
pub(crate) struct Replay {
    method: http::Method,
    uri: Uri,
    version: http::Version,
    /// The headers, in order. A list taken from [`REPLAY_HEADERS`] and given back on drop:
    /// keeping the copy costs reference counts, not allocations (it is made for every safe
    /// request and almost never used).
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// The endpoint an attempt goes to: the sticky one on the first attempt (if it is still
/// ready), otherwise the balancer's pick among those not tried yet.
pub(crate) fn attempt_endpoint(
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
    pub(crate) fn of(req: &Request<UpstreamRequestBody>) -> Option<Self> {
        if !(is_safe(req.method().as_str()) && req.body().is_end_stream()) {
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

    pub(crate) fn request(&self) -> Request<UpstreamRequestBody> {
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
