//! One keep-alive TCP connection to a backend, with the buffers it reuses for every request.

use std::{
    io,
    net::SocketAddr,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::head_timer::Deadline;

/// Read buffer reserved at a time: a typical response head and a small body in one read.
pub const READ_CHUNK: usize = 8 * 1024;

/// A connection to a backend and its buffers (reused while the connection is pooled, so a
/// request on a warm connection allocates none).
#[derive(Debug)]
pub struct BackendConn {
    pub(crate) stream: TcpStream,
    /// Bytes read and not consumed yet. Response heads and bodies are cut out of it.
    pub(crate) read: BytesMut,
    /// The request head is encoded here, then written with one call.
    pub(crate) write: Vec<u8>,
    /// Whether this connection already carried a request (a failure before any response
    /// on a reused connection may be the backend having closed it while idle).
    pub(crate) reused: bool,
    /// The response-head timeout: one sleep for the connection's life, moved forward only
    /// when it fires early, not registered per request.
    pub(crate) answer_by: Deadline,
}

/// Why opening a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket error (refused, unreachable, ...).
    #[error("connecting to {addr}: {source}")]
    Io {
        /// The endpoint.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// No answer within the connect timeout.
    #[error("connecting to {addr}: no answer within {timeout:?}")]
    Timeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The limit.
        timeout: Duration,
    },
}

impl BackendConn {
    /// Opens a connection to `addr`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, ConnectError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
            Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
        };
        // Small requests and responses must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            read: BytesMut::new(),
            write: Vec::new(),
            reused: false,
            answer_by: Deadline::default(),
        })
    }

    /// The socket, for another client (hyper's, for a request with a body on a pooled
    /// connection); what was buffered is dropped (an idle connection has nothing buffered).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Whether an idle connection still looks usable: the backend has neither closed it nor
    /// sent anything unasked. Costs a syscall only when the runtime saw the socket become
    /// readable; a close it has not seen yet is caught when the request fails.
    pub fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}
