//! What one client may hold: the global connection limit, the pace a request body must keep,
//! and the idle limit of tunnels (upgraded connections, TCP routes).
//!
//! The router faces the internet: a client that opens connections and sends nothing, sends
//! a head or a body a byte at a time, or holds a websocket open without traffic, costs a
//! file descriptor (two, with the backend's) and memory for as long as the router lets it.
//! Heads have `--header-timeout` (which also bounds a keep-alive connection's wait for its
//! next request); this module bounds the rest:
//!
//! - [`ConnLimit`]: every listener (HTTP, HTTPS, TCP routes, admin) counts its open
//!   connections against one limit; above it a new connection is accepted and closed at
//!   once (not left in the kernel's queue, where it would wait and time out), and the
//!   router keeps serving the ones it has. The default leaves room in `RLIMIT_NOFILE` for
//!   each connection's backend side and the router's own files ([`default_max_connections`]).
//! - [`TimedBody`]: a request body must arrive at `min_rate` bytes/s on average after a
//!   grace period (Apache's `mod_reqtimeout` rule): the deadline starts at `grace` and moves
//!   by one second for every `min_rate` bytes received. An upload at any real speed never
//!   meets it; a body sent a byte every few seconds does.
//! - [`splice`]: bytes copied both ways until either side closes, or until nothing moved
//!   for the idle limit.

use std::{
    future::Future as _,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::warn;

/// The connection limit every listener shares.
#[derive(Debug, Clone)]
pub struct ConnLimit(Arc<Counts>);

#[derive(Debug)]
struct Counts {
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
    /// Seconds since `since` of the last warning (at most one per 10 s).
    warned: AtomicU64,
    since: Instant,
}

/// One connection's place under the limit; clones share it, and it is given back when the
/// last clone is dropped (an upgraded connection's tunnel keeps one).
#[derive(Debug, Clone)]
pub struct ConnGuard(#[allow(dead_code)] Arc<Slot>);

#[derive(Debug)]
struct Slot(Arc<Counts>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnLimit {
    /// At most `max` connections at once (0: no limit).
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Counts {
            max: if max == 0 { usize::MAX } else { max },
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            warned: AtomicU64::new(0),
            since: Instant::now(),
        }))
    }

    /// A place for a connection just accepted on `listener`, or `None` when the limit is
    /// reached: the caller closes the connection.
    pub fn admit(&self, listener: &str) -> Option<ConnGuard> {
        let c = &self.0;
        let admitted = c
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < c.max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            return Some(ConnGuard(Arc::new(Slot(self.0.clone()))));
        }
        let refused = c.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = c.since.elapsed().as_secs() + 10;
        let last = c.warned.load(Ordering::Relaxed);
        if now >= last + 10
            && c.warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(
                listener,
                max = c.max,
                refused,
                "connection limit reached: closing new connections until some end \
                 (--max-connections)"
            );
        }
        None
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the limit was reached, since start.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.0.max
    }
}

/// File descriptors kept for the router's own use (listeners, the API server, logs).
const RESERVED_FDS: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard one (the soft default, 1024 on many
/// systems, is no limit for a proxy), and returns a connection limit that fits in it: each
/// client connection may hold a backend connection too, so half of what is left after
/// [`RESERVED_FDS`]; at least 64.
pub fn default_max_connections() -> usize {
    let nofile = raise_nofile();
    usize::try_from((nofile.saturating_sub(RESERVED_FDS) / 2).max(64)).unwrap_or(usize::MAX)
}

/// The soft `RLIMIT_NOFILE`, raised to the hard limit first if it can be.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((mut soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        soft = hard;
    }
    // RLIM_INFINITY: a large number of its own.
    soft.min(1 << 20)
}

/// How fast a request body must arrive (zero `grace`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    /// Time allowed before the rate counts.
    pub grace: Duration,
    /// Bytes per second, on average, from then on.
    pub min_rate: u64,
}

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
pub enum BodyTimeout {
    /// Too slow.
    #[error(
        "the request body arrived slower than {min_rate} bytes/s ({received} bytes in \
         {elapsed:?})"
    )]
    TooSlow {
        /// The pace's rate.
        min_rate: u64,
        /// Bytes received.
        received: u64,
        /// Since the body started.
        elapsed: Duration,
    },
    /// The client's body failed.
    #[error(transparent)]
    Client(#[from] hyper::Error),
}

/// A client's request body that fails once it falls behind its [`BodyPace`].
#[derive(Debug)]
pub struct TimedBody {
    inner: Incoming,
    pace: BodyPace,
    start: Instant,
    received: u64,
    /// Armed for the current deadline; `None` without a pace.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TimedBody {
    /// `inner`, paced by `pace` from now.
    pub fn new(inner: Incoming, pace: BodyPace) -> Self {
        Self {
            inner,
            pace,
            start: Instant::now(),
            received: 0,
            sleep: None,
        }
    }

    fn deadline(&self) -> Instant {
        let earned = if self.pace.min_rate == 0 {
            Duration::MAX
        } else {
            Duration::from_secs_f64(self.received as f64 / self.pace.min_rate as f64)
        };
        self.start
            + self
                .pace
                .grace
                .saturating_add(earned)
                .min(Duration::from_secs(1 << 30))
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BodyTimeout;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyTimeout>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if this.pace.grace.is_zero() {
            return Poll::Pending;
        }
        let deadline = this.deadline();
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        if sleep.deadline() != deadline.into() {
            sleep.as_mut().reset(deadline.into());
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout::TooSlow {
                min_rate: this.pace.min_rate,
                received: this.received,
                elapsed: this.start.elapsed(),
            }))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a tunnel ended.
#[derive(Debug, thiserror::Error)]
pub enum TunnelEnd {
    /// Either side failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Nothing moved either way for the idle limit.
    #[error("idle for {0:?}")]
    Idle(Duration),
}

/// Copies bytes both ways between `a` and `b` until either side closes, or until nothing
/// was read from either for `idle` (zero: no limit). Returns the bytes copied each way.
pub async fn splice<A, B>(a: &mut A, b: &mut B, idle: Duration) -> Result<(u64, u64), TunnelEnd>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let base = Instant::now();
    // Milliseconds since `base` of the last read that brought bytes.
    let last = AtomicU64::new(0);
    let mut a = Active {
        io: a,
        last: &last,
        base,
    };
    let mut b = Active {
        io: b,
        last: &last,
        base,
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    let watchdog = async {
        if idle.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let seen = last.load(Ordering::Relaxed);
            tokio::time::sleep_until((base + Duration::from_millis(seen) + idle).into()).await;
            if last.load(Ordering::Relaxed) == seen {
                return;
            }
        }
    };
    tokio::select! {
        copied = copy => Ok(copied?),
        () = watchdog => Err(TunnelEnd::Idle(idle)),
    }
}

/// When a connection last brought bytes ([`Watched`]), for an idle limit on connections
/// whose protocol has none of its own (HTTP/2).
#[derive(Debug)]
pub struct Seen {
    base: Instant,
    /// Milliseconds since `base` of the last read that brought bytes.
    last: AtomicU64,
}

impl Seen {
    /// Resolves once nothing was read for `idle` (never, for zero).
    pub async fn idle_for(&self, idle: Duration) {
        if idle.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let seen = self.last.load(Ordering::Relaxed);
            let at = self.base + Duration::from_millis(seen) + idle;
            tokio::time::sleep_until(at.into()).await;
            if self.last.load(Ordering::Relaxed) == seen {
                return;
            }
        }
    }
}

/// A stream that records in a [`Seen`] when it last read something.
#[derive(Debug)]
pub struct Watched<T> {
    io: T,
    seen: Arc<Seen>,
}

impl<T> Watched<T> {
    /// `io`, watched from now.
    pub fn new(io: T) -> (Self, Arc<Seen>) {
        let seen = Arc::new(Seen {
            base: Instant::now(),
            last: AtomicU64::new(0),
        });
        (
            Self {
                io,
                seen: seen.clone(),
            },
            seen,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = u64::try_from(self.seen.base.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.seen.last.store(ms, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A stream that records when it last read something.
struct Active<'a, T: ?Sized> {
    io: &'a mut T,
    last: &'a AtomicU64,
    base: Instant,
}

impl<T: AsyncRead + Unpin + ?Sized> AsyncRead for Active<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin + ?Sized> AsyncWrite for Active<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn the_limit_admits_up_to_max_and_frees_places() {
        let limit = ConnLimit::new(2);
        let a = limit.admit("test").unwrap();
        let a2 = a.clone();
        let _b = limit.admit("test").unwrap();
        assert!(limit.admit("test").is_none());
        assert_eq!((limit.open(), limit.refused()), (2, 1));
        drop(a);
        // A clone (an upgraded connection's tunnel) still holds the place.
        assert!(limit.admit("test").is_none());
        drop(a2);
        assert!(limit.admit("test").is_some());
        assert!(default_max_connections() >= 64);
    }

    /// An idle tunnel ends after the idle limit; one with traffic does not.
    #[tokio::test]
    async fn idle_tunnels_end() {
        let (mut a, mut a_far) = tokio::io::duplex(64);
        let (mut b, mut b_far) = tokio::io::duplex(64);
        let start = Instant::now();
        let tunnel =
            tokio::spawn(async move { splice(&mut a, &mut b, Duration::from_millis(300)).await });
        // Traffic every 100 ms for 600 ms keeps it open.
        for _ in 0..6 {
            a_far.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            b_far.read_exact(&mut byte).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!tunnel.is_finished(), "closed while busy");
        let ended = tunnel.await.unwrap();
        assert!(matches!(ended, Err(TunnelEnd::Idle(_))), "{ended:?}");
        // The last byte moved at about 500 ms: it ended 300 ms after that, not before.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(780), "{waited:?}");
    }
}
