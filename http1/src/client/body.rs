//! A backend's response body, read from its connection as the client's side asks for it,
//! and the connection's return to its pool once the body has been read in full.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::{
    BackendConn, ConnPool,
    chunked::{ChunkedDecoder, ChunkedError, Decoded},
    conn::READ_CHUNK,
    response::Framing,
};

/// Why a response body could not be read to its end (the client's connection is cut, as
/// a proxy cannot signal that otherwise).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The socket failed.
    #[error("reading the response body: {0}")]
    Read(#[source] io::Error),
    /// The backend closed before the body was complete.
    #[error("the backend closed the connection before the end of the body")]
    Truncated,
    /// Broken chunked framing.
    #[error("response body: {0}")]
    Chunked(#[from] ChunkedError),
}

/// What is left of a response body, for either way of reading it: decoded here
/// ([`ResponseBody`]), or copied with its framing by the router's own server ([`crate::server::copy_body`]).
#[derive(Debug)]
pub enum Remaining {
    /// This many bytes.
    Length(u64),
    /// The rest of a chunked body, from this position.
    Chunked(ChunkedDecoder),
    /// Everything until the backend closes.
    UntilClose,
    /// Nothing.
    Done,
}

impl Remaining {
    /// All of a body framed as `framing`.
    pub fn of(framing: Framing) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => Self::UntilClose,
        }
    }
}

/// A response body streamed from its backend connection.
#[derive(Debug)]
pub struct ResponseBody {
    /// The connection, until the body is complete (then pooled or closed).
    conn: Option<BackendConn>,
    state: Remaining,
    /// A chunked body's trailer fields, read and not yet yielded (boxed: they are rare, and
    /// an inline `HeaderMap` would add about 100 bytes to every response body).
    trailers: Option<Box<http::HeaderMap>>,
    keep_alive: bool,
    /// Where the connection goes back when the body is complete (its endpoint's pool).
    pool: Arc<ConnPool>,
}

impl ResponseBody {
    /// The body of a response whose head was just read from `conn`.
    pub fn new(conn: BackendConn, framing: Framing, keep_alive: bool, pool: Arc<ConnPool>) -> Self {
        let state = Remaining::of(framing);
        let mut body = Self {
            conn: Some(conn),
            state,
            trailers: None,
            keep_alive,
            pool,
        };
        if matches!(body.state, Remaining::Done) {
            body.finish();
        }
        body
    }

    /// The body is complete: the connection goes back to the pool if it can carry another
    /// request (keep-alive, and nothing unread beyond this response).
    fn finish(&mut self) {
        self.state = Remaining::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.read.is_empty()
        {
            self.pool.checkin(conn, std::time::Instant::now());
        }
    }

    /// The next piece of the body from what is buffered, if any.
    fn buffered(&mut self) -> Result<Option<Bytes>, BodyError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let data = match &mut self.state {
            Remaining::Done => return Ok(None),
            Remaining::Length(left) => {
                if conn.read.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(conn.read.len());
                *left -= n as u64;
                let data = conn.read.split_to(n).freeze();
                if *left == 0 {
                    self.finish();
                }
                data
            }
            Remaining::Chunked(decoder) => match decoder.decode(&mut conn.read)? {
                Decoded::Data(data) => data,
                Decoded::NeedMore => return Ok(None),
                Decoded::End => {
                    self.trailers = decoder.take_trailers().map(Box::new);
                    self.finish();
                    return Ok(None);
                }
            },
            Remaining::UntilClose => {
                if conn.read.is_empty() {
                    return Ok(None);
                }
                conn.read.split().freeze()
            }
        };
        Ok(Some(data))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            match this.buffered() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {
                    if let Some(trailers) = this.trailers.take() {
                        return Poll::Ready(Some(Ok(Frame::trailers(*trailers))));
                    }
                }
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if matches!(this.state, Remaining::Done) {
                return Poll::Ready(None);
            }
            if conn.read.capacity() - conn.read.len() < READ_CHUNK / 2 {
                conn.read.reserve(READ_CHUNK);
            }
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.stream),
                cx,
                &mut conn.read
            ));
            match (read, &this.state) {
                (Ok(0), Remaining::UntilClose) => {
                    this.state = Remaining::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                (Ok(0), _) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(BodyError::Truncated)));
                }
                (Ok(_), _) => {}
                (Err(e), _) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(BodyError::Read(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, Remaining::Done) && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            Remaining::Length(n) => SizeHint::with_exact(n),
            Remaining::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
