//! The router's own HTTP/1.1 server for the request almost every client sends: HTTP/1.1,
//! no body, no upgrade. One task per client connection reads the head into a buffer the
//! connection keeps and hands it, parsed, to the caller's [`Respond`]: the router writes
//! the backend's request head straight from it (with its own client, [`crate::client`]),
//! and the backend's response head, with hop-by-hop headers left out, and its body, with
//! its framing as received ([`copy_body`]), back to the client: a small response costs one
//! read and one write on each side.
//!
//! Why not hyper's server here: per request it builds a `Request` (a `HeaderMap`, an
//! `Incoming` body), hands it to the service as a future it moves into place, and encodes
//! the response from another `HeaderMap`. For a proxy that only looks at a few headers,
//! that was about a third of its user-space CPU per request (perf, `router/benches/bench.sh`
//! with `PHASES=profile`).
//!
//! Anything else (a request with a body, an upgrade, `Expect`, HTTP/1.0, an absolute-form
//! target, a head that is not valid HTTP/1) hands the connection, with the bytes already
//! read, to hyper's server ([`Ended::Hand`]), which serves it from then on. A head over the
//! size limit gets a 431 here.

mod buffers;
mod copy;
mod drain;
mod local;
pub mod request;
mod rewind;

use std::{
    future::Future,
    pin::pin,
    task::Poll,
    time::{Duration, Instant},
};

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub use copy::{CopyError, copy_body};
pub use drain::DrainSignal;
pub use local::encode_text;
pub use request::Head;
pub use rewind::Rewind;

use self::buffers::Buffers;
use crate::{head_timer::Deadline, host::HostError};

/// How serving a connection ended.
#[derive(Debug)]
pub enum Ended<S> {
    /// The connection is closed (or to be dropped).
    Closed,
    /// hyper's server takes over the connection; the bytes already read come first.
    Hand(S, BytesMut),
}

/// What the server answers: the caller's policy (the router routes and forwards).
pub trait Respond {
    /// Writes the response to `head` to `io` (`out` is the connection's write buffer,
    /// reused for every response). `close`: the connection closes after this response, so
    /// it must say `Connection: close`. Returns when the response was complete, or `None` when the
    /// connection must close (the response broke off, the client went away, or the body
    /// ended with the backend's connection).
    fn respond<S>(
        &self,
        io: &mut S,
        out: &mut Vec<u8>,
        head: &Head<'_>,
        close: bool,
    ) -> impl Future<Output = Option<Instant>>
    where
        S: AsyncRead + AsyncWrite + Unpin;

    /// A head was refused for its `Host` (a 400 follows, and the connection closes): for the
    /// caller's log, which knows the client.
    fn refused_host(&self, error: &HostError) {
        tracing::debug!(%error, "refused a request's Host");
    }
}

/// The limits on reading request heads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a complete head, from when the connection started waiting
    /// for it (zero: no limit).
    pub header_timeout: Duration,
    /// Upper bound of a head, in bytes (a 431 beyond).
    pub max_header_bytes: usize,
}

/// How long a connection that is waiting for a request when draining starts may still send
/// one, which is answered with `Connection: close`. Closed at once, it would fail a request
/// the client was sending at that moment (the client cannot tell that the close came
/// first); this also covers a connection accepted just before draining whose request has not
/// arrived yet. A client that is idle for longer meets the close as it would meet the idle
/// timeout.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Serves HTTP/1.1 requests on `io` until the client closes, a head times out, draining
/// starts (after `DRAIN_GRACE` for a connection waiting for its next request), or a request
/// needs hyper.
pub async fn serve<S, R>(mut io: S, respond: &R, opts: Limits, drain: &DrainSignal) -> Ended<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Respond,
{
    // Taken while the connection has a request to serve, given back while it waits.
    let mut bufs = Buffers::default();
    let mut deadline = Deadline::default();
    // One drain future for the connection's life: polled only while the connection waits
    // for a head, it stays registered instead of registering for every request.
    let mut drained_rx = drain.clone();
    let mut drained = pin!(drained_rx.signaled());
    let mut waiting_since = Instant::now();
    loop {
        let wait = Wait {
            timeout: opts.header_timeout,
            since: waiting_since,
            max_bytes: opts.max_header_bytes,
        };
        match fill_head(&mut io, &mut bufs, &wait, &mut deadline, drained.as_mut()).await {
            Filled::Head => {}
            Filled::TooLarge => return too_large(io, opts.max_header_bytes).await,
            Filled::Closed => return Ended::Closed,
        }
        // The parsed head (room for 100 headers) and the exchange with the backend live in
        // an allocation of their own while the request is served, not in this future, which
        // an idle keep-alive connection keeps.
        let served = Box::pin(serve_one(&mut io, &mut bufs, respond, opts, drain)).await;
        match served {
            One::Served(Some(at)) => waiting_since = at,
            One::Served(None) => {
                let _ = io.shutdown().await;
                return Ended::Closed;
            }
            One::TooLarge => return too_large(io, opts.max_header_bytes).await,
            One::Hand => return Ended::Hand(io, std::mem::take(&mut bufs.read)),
        }
    }
}

/// What serving the buffered request head came to.
enum One {
    /// Answered; when the response was written if the connection stays open.
    Served(Option<Instant>),
    /// Complete, but over the size limit (its end came in the read that crossed it).
    TooLarge,
    /// For hyper's server.
    Hand,
}

/// Serves the complete head at the start of `bufs.read`.
async fn serve_one<S, R>(
    io: &mut S,
    bufs: &mut Buffers,
    respond: &R,
    opts: Limits,
    drain: &DrainSignal,
) -> One
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Respond,
{
    bufs.room_to_write();
    let mut headers = [httparse::EMPTY_HEADER; request::MAX_HEADERS];
    let (head, len) = match request::parse(&bufs.read, &mut headers) {
        request::Parsed::Serve(head, len) if len <= opts.max_header_bytes => (head, len),
        request::Parsed::Serve(..) => return One::TooLarge,
        // Partial: `head_complete` saw the blank line; httparse disagrees only on broken
        // heads, which hyper answers.
        request::Parsed::Partial | request::Parsed::Hand => return One::Hand,
        request::Parsed::Refuse(e) => {
            // The value is never echoed; the connection closes after the 400.
            respond.refused_host(&e);
            bufs.write.clear();
            encode_text(
                &mut bufs.write,
                StatusCode::BAD_REQUEST,
                &e.body(),
                None,
                true,
            );
            let _ = io.write_all(&bufs.write).await;
            bufs.write.clear();
            return One::Served(None);
        }
    };
    let close = !head.keep_alive || drain.is_draining();
    let done = respond.respond(io, &mut bufs.write, &head, close).await;
    bufs.read.advance(len);
    One::Served(done.filter(|_| !close))
}

/// The limits on reading one head.
struct Wait {
    /// Zero: no limit.
    timeout: Duration,
    /// When the connection started waiting for this head.
    since: Instant,
    max_bytes: usize,
}

enum Filled {
    /// `read` starts with a complete head.
    Head,
    /// Over the size limit and not complete.
    TooLarge,
    Closed,
}

/// Reads until `read` holds a complete head. A connection idle between requests when draining
/// starts gets [`DRAIN_GRACE`] to send one; one whose head does not arrive in time is closed
/// (with a `408` if part of the head came).
async fn fill_head<S>(
    io: &mut S,
    bufs: &mut Buffers,
    wait: &Wait,
    deadline: &mut Deadline,
    mut drained: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Filled
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut searched = 0;
    // Set once draining started while the connection was idle.
    let mut grace: Option<Instant> = None;
    loop {
        if !bufs.read.is_empty() && request::head_complete(&bufs.read, &mut searched) {
            return Filled::Head;
        }
        if bufs.read.len() >= wait.max_bytes {
            return Filled::TooLarge;
        }
        let idle = bufs.read.is_empty();
        let limit = (!wait.timeout.is_zero())
            .then(|| wait.since + wait.timeout)
            .into_iter()
            .chain(grace)
            .min();
        let event = std::future::poll_fn(|cx| {
            bufs.room_to_read();
            if let Poll::Ready(r) =
                tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut *io), cx, &mut bufs.read)
            {
                return Poll::Ready(Event::Read(r));
            }
            if idle {
                // Nothing to keep while the connection waits for its next request.
                bufs.release();
                // Not polled again once it fired: the head that may come is the last.
                if grace.is_none() && drained.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Drained);
                }
            }
            if let Some(limit) = limit
                && deadline.poll_until(cx, limit).is_ready()
            {
                return Poll::Ready(Event::TimedOut);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Read(Ok(0) | Err(_)) => return Filled::Closed,
            Event::Read(Ok(_)) => {}
            Event::Drained => grace = Some(Instant::now() + DRAIN_GRACE),
            Event::TimedOut => {
                if !idle {
                    let _ = io
                        .write_all(
                            b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n\
                              content-length: 0\r\n\r\n",
                        )
                        .await;
                }
                return Filled::Closed;
            }
        }
    }
}

/// Answers a head over `max` bytes with a 431 and closes. (Not left to hyper: its limit is
/// on its read buffer, and a head that completes in the read crossing it gets through.)
async fn too_large<S: AsyncWrite + Unpin>(mut io: S, max: usize) -> Ended<S> {
    let mut out = Vec::new();
    encode_text(
        &mut out,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        &format!("431 Request Header Fields Too Large: the request head is over {max} bytes\n"),
        None,
        true,
    );
    if io.write_all(&out).await.is_ok() {
        let _ = io.shutdown().await;
    }
    Ended::Closed
}

enum Event {
    Read(std::io::Result<usize>),
    Drained,
    TimedOut,
}
