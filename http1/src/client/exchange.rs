//! Sending one request head on a backend connection and reading the response head.

use std::{io, pin::Pin, task::Poll, time::Instant};

use tokio::io::AsyncWriteExt;

use super::{
    BackendConn,
    conn::READ_CHUNK,
    response::{self, HeadError, ResponseHead},
};

/// Upper bound of a response head, in bytes (hyper's client allows about 400 KiB; 64 KiB
/// is what the router allows request heads).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Why a request on a backend connection got no usable response head.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The request could not be written: the backend cannot have acted on it (a partial
    /// head is not a request).
    #[error("writing the request: {0}")]
    Write(#[source] io::Error),
    /// The connection closed (or was reset) before any byte of a response: on a reused
    /// connection, typically the backend closing it while idle, just as we sent on it.
    #[error("connection closed before any response")]
    Closed,
    /// Reading the response head failed after it had started.
    #[error("reading the response head: {0}")]
    Read(#[source] io::Error),
    /// The response head is not valid HTTP/1.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The response head is larger than we read.
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// No complete response head by the deadline (the backend may still act on the
    /// request: not retried).
    #[error("no response by the backend timeout")]
    TimedOut,
}

impl ExchangeError {
    /// The request never reached the backend: safe to send anywhere again.
    pub fn never_sent(&self) -> bool {
        matches!(self, Self::Write(_))
    }

    /// The backend went away without answering; it may or may not have seen the request.
    pub fn no_response(&self) -> bool {
        matches!(self, Self::Closed)
    }
}

/// Writes a request head without a body (`encode` writes it into the connection's buffer)
/// and reads the response head. The body, if any, is left in `conn.read` and on the socket
/// for [`super::ResponseBody`]. `head_request`: the request is HEAD (no response body).
pub async fn exchange(
    conn: &mut BackendConn,
    head_request: bool,
    encode: impl FnOnce(&mut Vec<u8>),
) -> Result<ResponseHead, ExchangeError> {
    exchange_with(
        conn,
        encode,
        |buf| response::parse(buf, head_request, false),
        None,
    )
    .await
}

/// [`exchange`] with the response head parsed by `parse` (`Ok(None)`: not complete yet),
/// e.g. [`response::parse_raw`], and complete by `deadline` if one is given.
pub async fn exchange_with<T>(
    conn: &mut BackendConn,
    encode: impl FnOnce(&mut Vec<u8>),
    mut parse: impl FnMut(&mut bytes::BytesMut) -> Result<Option<T>, HeadError>,
    deadline: Option<Instant>,
) -> Result<T, ExchangeError> {
    conn.write.clear();
    encode(&mut conn.write);
    conn.stream
        .write_all(&conn.write)
        .await
        .map_err(ExchangeError::Write)?;
    let mut received = false;
    loop {
        if received && let Some(head) = parse(&mut conn.read)? {
            return Ok(head);
        }
        if conn.read.len() >= MAX_HEAD_BYTES {
            return Err(ExchangeError::HeadTooLarge);
        }
        if conn.read.capacity() - conn.read.len() < READ_CHUNK / 2 {
            conn.read.reserve(READ_CHUNK);
        }
        let read = std::future::poll_fn(|cx| {
            let read =
                tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.read);
            if read.is_ready() {
                return read.map(Some);
            }
            match deadline {
                Some(at) if conn.answer_by.poll_until(cx, at).is_ready() => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await;
        let Some(read) = read else {
            return Err(ExchangeError::TimedOut);
        };
        match read {
            Ok(0) if !received => return Err(ExchangeError::Closed),
            Ok(0) => {
                return Err(ExchangeError::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the response head",
                )));
            }
            Ok(_) => received = true,
            Err(e) if !received && is_reset(&e) => return Err(ExchangeError::Closed),
            Err(e) => return Err(ExchangeError::Read(e)),
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}
