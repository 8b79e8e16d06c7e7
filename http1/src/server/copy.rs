//! Copying a backend's response body to the client with its framing as received: the
//! router's own server forwards chunked framing as is (validated on the way by
//! [`crate::client::ChunkedDecoder::scan`]), so a small response costs one write.

use std::time::Instant;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::{BackendConn, ChunkedError, ConnPool, Framing, READ_CHUNK, Remaining};

/// Why a response body could not be copied to its end.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The backend's socket failed.
    #[error("reading from the backend: {0}")]
    Backend(#[source] std::io::Error),
    /// The backend closed before the end of a body whose end it had announced.
    #[error("the backend closed the connection before the end of the body")]
    Truncated,
    /// Broken chunked framing after part of the response went out (the client's connection
    /// must be cut).
    #[error("response body: {0}")]
    Chunked(#[from] ChunkedError),
    /// Framing refused before anything of the response was written (the client can still
    /// get a 502).
    #[error("response body: {0}")]
    Refused(ChunkedError),
    /// The client's socket failed.
    #[error("writing to the client: {0}")]
    Client(#[source] std::io::Error),
}

/// Copies the response body from `backend` to the client, after the head waiting in `out`:
/// the head and what of the body came with it go in one write. The connection goes back to
/// `pool` (its endpoint's) when the body was read in full and nothing follows it. Returns
/// whether the whole response went in that first write.
pub async fn copy_body<S>(
    io: &mut S,
    out: &mut Vec<u8>,
    mut backend: BackendConn,
    (framing, keep_alive): (Framing, bool),
    pool: &ConnPool,
    answered_at: Instant,
) -> Result<bool, CopyError>
where
    S: AsyncWrite + Unpin,
{
    let mut left = Remaining::of(framing);
    let mut first = true;
    loop {
        // The body's share of what is buffered.
        let take = match &mut left {
            Remaining::Done => 0,
            Remaining::Length(n) => {
                let take = usize::try_from(*n)
                    .unwrap_or(usize::MAX)
                    .min(backend.read.len());
                *n -= take as u64;
                if *n == 0 {
                    left = Remaining::Done;
                }
                take
            }
            Remaining::Chunked(decoder) => {
                let scanned = match decoder.scan(&backend.read) {
                    Ok(s) => s,
                    Err(e) if first => return Err(CopyError::Refused(e)),
                    Err(e) => return Err(e.into()),
                };
                if scanned.done {
                    left = Remaining::Done;
                }
                scanned.body
            }
            Remaining::UntilClose => backend.read.len(),
        };
        let written = if first {
            // The head and the first of the body: one write.
            out.extend_from_slice(&backend.read[..take]);
            let w = io.write_all(out).await;
            out.clear();
            w
        } else {
            io.write_all(&backend.read[..take]).await
        };
        written.map_err(CopyError::Client)?;
        backend.read.advance(take);
        if matches!(left, Remaining::Done) {
            io.flush().await.map_err(CopyError::Client)?;
            if keep_alive && backend.read.is_empty() {
                pool.checkin(backend, answered_at);
            }
            return Ok(first);
        }
        first = false;
        if backend.read.capacity() - backend.read.len() < READ_CHUNK / 2 {
            backend.read.reserve(READ_CHUNK);
        }
        match backend.stream.read_buf(&mut backend.read).await {
            Ok(0) if matches!(left, Remaining::UntilClose) => left = Remaining::Done,
            Ok(0) => return Err(CopyError::Truncated),
            Ok(_) => {}
            Err(e) => return Err(CopyError::Backend(e)),
        }
    }
}
