//! The common path: a request without a body on the router's own HTTP/1 server
//! ([`flynn_http1::server`]), through its own client. Route it, forward it, and copy the
//! backend's response to the client with its framing as received.

use std::{net::SocketAddr, time::Instant};

use bytes::BytesMut;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info, warn};

use flynn_http1::{
    client::{self as backend, Framing, RawHead},
    host::HostError,
    server::{CopyError, Head, Respond, copy_body},
};

use super::{
    ConnInfo, ForwardHeaders, Local, Proxy,
    request_stamp::{request_id, request_start_at},
    upstream_head::encode_forwarded,
};
use crate::table::HttpEntry;

/// The connection-level context of every request the own server reads: what it answers with.
#[derive(Debug, Clone, Copy)]
pub struct Conn<'a> {
    /// The proxy.
    pub proxy: &'a Proxy,
    /// The client and the listener.
    pub info: ConnInfo,
    /// The forwarding headers of this connection.
    pub fwd: &'a ForwardHeaders,
}

impl Respond for Conn<'_> {
    fn respond<S>(
        &self,
        io: &mut S,
        out: &mut Vec<u8>,
        head: &Head<'_>,
        close: bool,
    ) -> impl Future<Output = Option<Instant>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        respond(io, out, *self, head, close)
    }

    fn refused_host(&self, error: &HostError) {
        debug!(peer = %self.info.peer, %error, "refused a request's Host");
    }
}

/// Writes the response to `head` to `io` (`out` is the connection's write buffer).
/// `close`: the connection closes after this response, so it says `Connection: close`.
/// Returns when the response was complete, or `None` when the connection must close: the
/// backend's response broke off, the client went away, or the body ended with the
/// backend's connection (which the client can only see as the end of its own).
async fn respond<S>(
    io: &mut S,
    out: &mut Vec<u8>,
    conn: Conn<'_>,
    head: &Head<'_>,
    close: bool,
) -> Option<Instant>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let proxy = conn.proxy;
    let entry = proxy
        .table
        .load()
        .http
        .lookup(head.host, head.path())
        .cloned();
    let Some(entry) = entry else {
        proxy.metrics.no_route.inc();
        let local = Local::text(
            StatusCode::NOT_FOUND,
            format!("404 Not Found: no route for host {:?}\n", head.host),
        );
        return local_response(io, out, conn, head, None, local, close, start).await;
    };
    if entry.https_redirect && !conn.info.tls {
        let local = Local::redirect_to_https(head.host, head.target);
        entry.metrics.record(local.status.as_u16(), 0.0);
        return local_response(io, out, conn, head, Some(&entry), local, close, start).await;
    }
    let sticky = if entry.sticky {
        proxy.sticky.from_cookies(head.cookies())
    } else {
        None
    };
    // One id and start time per request, whichever attempt carries it.
    let id = (!head.has_request_id).then(request_id);
    let request_start = request_start_at(start);
    let encode = |buf: &mut Vec<u8>| {
        encode_forwarded(
            buf,
            head.method,
            head.target,
            None,
            || head.header_bytes(),
            conn.fwd,
            id.as_ref(),
            &request_start,
        );
    };
    let is_head = head.is_head();
    let parse = |buf: &mut BytesMut| backend::parse_raw(buf, is_head, out);
    let answered = proxy
        .exchange_any(&entry, sticky, head.is_safe(), start, encode, parse)
        .await;
    let a = match answered {
        Ok(a) => a,
        Err(error) => {
            let local = proxy.failure(&entry, error);
            entry
                .metrics
                .record(local.status.as_u16(), start.elapsed().as_secs_f64());
            return local_response(io, out, conn, head, Some(&entry), local, close, start).await;
        }
    };
    let RawHead {
        status,
        framing,
        keep_alive,
    } = a.head;
    let answered_at = Instant::now();
    entry
        .metrics
        .record(status, (answered_at - start).as_secs_f64());
    // The head is in `out` (from `parse_raw`), without its blank line.
    if entry.sticky && sticky != Some(a.endpoint.addr) {
        out.extend_from_slice(b"set-cookie: ");
        out.extend_from_slice(proxy.sticky.set_cookie(a.endpoint.addr).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A body that ends with the backend's connection ends the client's too.
    let close = close || framing == Framing::UntilClose;
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let addr = a.endpoint.addr;
    let copied = copy_body(
        io,
        out,
        a.conn,
        (framing, keep_alive),
        &a.endpoint.conns,
        answered_at,
    )
    .await;
    drop(a.in_flight);
    match &copied {
        Err(CopyError::Refused(e)) => {
            // Nothing was written yet: the client gets a 502 instead of the framing.
            warn!(route = %entry.key, backend = %addr, error = %e,
                "refused a backend's response body framing");
            let local = Local::text(
                StatusCode::BAD_GATEWAY,
                format!("502 Bad Gateway: backend {addr}: response body: {e}\n"),
            );
            return local_response(io, out, conn, head, Some(&entry), local, true, start).await;
        }
        Err(e @ CopyError::Chunked(_)) => {
            warn!(route = %entry.key, backend = %addr, error = %e,
                "refused a backend's response body framing; closing the client's connection");
        }
        Err(e) => {
            debug!(route = %entry.key, backend = %addr, error = %e, "response body broke off")
        }
        Ok(_) => {}
    }
    access_log(conn, head, Some(&entry), Some(addr), status, start);
    // A response written in one go ends about when it was answered: no clock read.
    copied.ok().filter(|_| !close).map(|in_one_write| {
        if in_one_write {
            answered_at
        } else {
            Instant::now()
        }
    })
}

/// Writes one of the router's own responses.
#[allow(clippy::too_many_arguments)]
async fn local_response<S>(
    io: &mut S,
    out: &mut Vec<u8>,
    conn: Conn<'_>,
    head: &Head<'_>,
    entry: Option<&HttpEntry>,
    local: Local,
    close: bool,
    start: Instant,
) -> Option<Instant>
where
    S: AsyncWrite + Unpin,
{
    out.clear();
    local.encode(out, close);
    access_log(conn, head, entry, None, local.status.as_u16(), start);
    let written = io.write_all(out).await.and(io.flush().await);
    out.clear();
    written.ok().map(|()| Instant::now())
}

fn access_log(
    conn: Conn<'_>,
    head: &Head<'_>,
    entry: Option<&HttpEntry>,
    backend: Option<SocketAddr>,
    status: u16,
    start: Instant,
) {
    if conn.proxy.opts.access_log {
        info!(
            target: "flynn_router::access",
            method = %head.method, host = %head.host, path = %head.path(), status,
            route = ?entry.map(|e| e.key.to_string()), backend = ?backend,
            duration_us = start.elapsed().as_micros() as u64,
            client = %conn.info.peer.ip(),
        );
    }
}
