//! Requests without a body that hyper's server read (HTTP/2, HTTP/1.0, what the own server
//! hands over): through the router's own client. The request is only read, never
//! rewritten, so sending it again costs nothing.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use bytes::BytesMut;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Either;
use hyper::body::Incoming;

use flynn_http1::client::{self as backend, BackendConn, ResponseBody, ResponseHead};

use super::{
    ForwardHeaders, Proxy, ProxyBody,
    request_stamp::{request_id, request_start_at},
    upstream_body::{Upstream, UpstreamBody},
    upstream_head::{X_REQUEST_ID, encode_forwarded_head},
};
use crate::table::{Endpoint, HttpEntry, InFlight};

impl Proxy {
    /// [`Proxy::forward`] for a request without a body (and no upgrade), on the router's own
    /// HTTP/1 client. The request is only read, never consumed or rewritten: its head is
    /// written for the backend straight from the client's ([`encode_forwarded_head`]), and
    /// sending it again needs no copy.
    pub(crate) async fn forward_bodiless(
        &self,
        entry: &HttpEntry,
        req: &Request<Incoming>,
        fwd: &ForwardHeaders,
        sticky: Option<SocketAddr>,
    ) -> (Response<ProxyBody>, Option<SocketAddr>) {
        // RFC 9110 9.2.1: a proxy may repeat a safe request the client did not see fail.
        let safe = flynn_http1::method::is_safe(req.method().as_str());
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

    /// The client's response from a backend's response head; its body streams from `conn`.
    pub(crate) fn respond_raw(
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
                endpoint.conns.clone(),
            )),
            in_flight: Some(in_flight),
        };
        let mut resp = Response::new(Either::Left(body));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        (resp, Some(endpoint.addr))
    }
}
