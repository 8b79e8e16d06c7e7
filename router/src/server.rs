//! Listeners and downstream connections: accept, TLS handshake, HTTP/1.1 or HTTP/2, and the
//! graceful drain on shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::BytesMut;

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use flynn_http1::{head_timer::HeadTimer, server as h1};

pub use flynn_http1::server::DrainSignal;

use crate::{
    http_proxy::{ConnInfo, ForwardHeaders, Proxy, own_server},
    limits::{ConnGuard, ConnLimit, Watched},
};

/// Downstream protocol settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Time a client has to send a complete request head (also bounds the TLS handshake and
    /// how long an idle keep-alive connection waits for its next request). Zero: no limit
    /// on HTTP/1 request heads.
    pub header_timeout: Duration,
    /// Upper bound of a request head, in bytes (HTTP/1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Accept HTTP/2 with prior knowledge on plain-text listeners (h2c).
    pub h2c: bool,
    /// Serve HTTP/1.1 requests without a body with the router's own server
    /// ([`flynn_http1::server`]);
    /// otherwise hyper's server takes every request.
    pub own_http1: bool,
    /// Connections open at once over every listener ([`crate::limits::ConnLimit`]); zero:
    /// derived from `RLIMIT_NOFILE`.
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            h2c: false,
            own_http1: true,
            max_connections: 0,
        }
    }
}

impl ServerOptions {
    /// The own HTTP/1 server's limits on request heads.
    fn head_limits(&self) -> h1::Limits {
        h1::Limits {
            header_timeout: self.header_timeout,
            max_header_bytes: self.max_header_bytes,
        }
    }
}

/// Accepts connections on `listener` until draining starts; each connection runs on
/// `tracker`, so shutdown can wait for in-flight requests.
pub async fn serve_http(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    opts: Arc<ServerOptions>,
    (mut drain, limit): (DrainSignal, ConnLimit),
    tracker: TaskTracker,
) {
    let local_port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let name = if tls.is_some() { "https" } else { "http" };
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = drain.signaled() => return,
        };
        // Over the limit: closed at once (dropped), before any work.
        let Some(guard) = limit.admit(name) else {
            continue;
        };
        let info = ConnInfo {
            peer,
            local_port,
            tls: tls.is_some(),
        };
        tracker.spawn(serve_connection(
            stream,
            info,
            proxy.clone(),
            tls.clone(),
            opts.clone(),
            drain.clone(),
            guard,
        ));
    }
}

/// [`drive!`] for connections whose protocol has no idle limit of its own (HTTP/2): when
/// nothing was read from the client for `$idle`, the connection is asked to finish (GOAWAY:
/// streams in flight complete, no new ones) and close.
macro_rules! drive_idle {
    ($conn:expr, $drain:expr, $peer:expr, $seen:expr, $idle:expr) => {{
        let mut conn = Box::pin($conn);
        let result = tokio::select! {
            biased;
            r = conn.as_mut() => r,
            () = $drain.signaled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            () = $seen.idle_for($idle) => {
                debug!(peer = %$peer, "idle connection; closing it");
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            debug!(peer = %$peer, error = %e, "connection ended with an error");
        }
    }};
}

/// Serves an HTTP/1 connection: with the router's own server first if enabled, then (for
/// what it hands over) hyper's.
macro_rules! serve_http1 {
    ($stream:expr, $own:expr, $svc:expr, $opts:expr, $drain:expr, $peer:expr) => {{
        let mut stream = Some($stream);
        let mut read = BytesMut::new();
        if $opts.own_http1 {
            let limits = $opts.head_limits();
            match h1::serve(stream.take().expect("set above"), &$own, limits, &$drain).await {
                h1::Ended::Closed => {}
                h1::Ended::Hand(s, buffered) => {
                    stream = Some(s);
                    read = buffered;
                }
            }
        }
        if let Some(stream) = stream {
            drive!(
                http1_builder(&$opts)
                    .serve_connection(TokioIo::new(h1::Rewind::new(stream, read)), $svc)
                    .with_upgrades(),
                $drain,
                $peer
            );
        }
    }};
}

/// Drives a hyper connection until it ends, or until draining starts; then asks it to finish
/// the request in flight and close (HTTP/1: `Connection: close`; HTTP/2: GOAWAY).
/// Boxed: inline, hyper's connection state (several KiB) would be part of every
/// connection's future, including the idle keep-alive ones the own server serves.
macro_rules! drive {
    ($conn:expr, $drain:expr, $peer:expr) => {{
        let mut conn = Box::pin($conn);
        let result = tokio::select! {
            // The connection first: it is what wakes the task for almost every poll.
            biased;
            r = conn.as_mut() => r,
            () = $drain.signaled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            debug!(peer = %$peer, error = %e, "connection ended with an error");
        }
    }};
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    info: ConnInfo,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    opts: Arc<ServerOptions>,
    mut drain: DrainSignal,
    guard: ConnGuard,
) {
    let _ = stream.set_nodelay(true);
    let peer: SocketAddr = info.peer;
    // What every request on this connection shares, built once: one reference count per
    // request instead of per-request header allocations.
    let fwd = ForwardHeaders::new(&info, &proxy.opts.trusted_proxies);
    let shared = Arc::new((proxy, fwd));
    let own_shared = shared.clone();
    let own = own_server::Conn {
        proxy: &own_shared.0,
        info,
        fwd: &own_shared.1,
    };
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        // An upgraded connection outlives this task: its tunnel keeps the connection's
        // place under the limit.
        if crate::http_proxy::is_upgrade(&req) {
            req.extensions_mut().insert(guard.clone());
        }
        let shared = shared.clone();
        async move { shared.0.handle_with(req, info, &shared.1).await }
    });
    match tls {
        None if !opts.h2c => {
            // HTTP/1 only: no protocol sniffing.
            serve_http1!(stream, own, svc, opts, drain, peer);
        }
        None => {
            // h2c: HTTP/2 has no idle limit of its own; an idle one is closed after
            // `header_timeout`, as an idle HTTP/1 keep-alive connection is.
            let b = auto_builder(&opts);
            let (stream, seen) = Watched::new(stream);
            drive_idle!(
                b.serve_connection_with_upgrades(TokioIo::new(stream), svc),
                drain,
                peer,
                seen,
                opts.header_timeout
            );
        }
        // Boxed: a TLS stream is several KiB, which plain connections need not carry.
        Some(acceptor) => {
            Box::pin(async move {
                let handshake = acceptor.accept(stream);
                let stream = match tokio::time::timeout(opts.header_timeout, handshake).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                // ALPN decided the protocol: no sniffing, and a client that negotiated h2
                // but sends something else gets its connection closed (RFC 9113 3.4).
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    b.timer(TokioTimer::new()).max_header_list_size(
                        u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX),
                    );
                    let (stream, seen) = Watched::new(stream);
                    drive_idle!(
                        b.serve_connection(TokioIo::new(stream), svc),
                        drain,
                        peer,
                        seen,
                        opts.header_timeout
                    );
                } else {
                    serve_http1!(stream, own, svc, opts, drain, peer);
                }
            })
            .await;
        }
    }
}

fn http1_builder(opts: &ServerOptions) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    // Zero disables the timer. One `HeadTimer` per connection (this builder serves one).
    b.timer(HeadTimer::default())
        .header_read_timeout(Some(opts.header_timeout).filter(|t| !t.is_zero()))
        .max_buf_size(opts.max_header_bytes.max(8192));
    b
}

fn auto_builder(opts: &ServerOptions) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(HeadTimer::default())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX));
    b
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The header read timeout (on [`HeadTimer`]) closes a connection whose next head does
    /// not arrive in time, after a request served on it, and a head that stalls halfway.
    #[tokio::test]
    async fn heads_must_arrive_within_the_header_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let opts = ServerOptions {
            header_timeout: Duration::from_millis(150),
            ..ServerOptions::default()
        };
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let b = http1_builder(&opts);
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        for partial in [false, true] {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 1024];
            let mut answered = Instant::now();
            for _ in 0..3 {
                c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                    .await
                    .unwrap();
                let n = c.read(&mut buf).await.unwrap();
                assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
                answered = Instant::now();
                // Within the timeout between requests: the connection stays.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if partial {
                c.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
            }
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("the connection was not closed")
                .unwrap_or(0);
            // hyper starts the clock when it starts reading the next head.
            let waited = answered.elapsed();
            assert!(
                n == 0 || buf[..n].starts_with(b"HTTP/1.1 408"),
                "partial {partial}"
            );
            assert!(
                waited >= Duration::from_millis(100),
                "closed after {waited:?}"
            );
        }
    }

    /// Draining does not close a connection waiting for its next request at once (the
    /// client may be sending one): a request within the grace is answered, with
    /// `Connection: close`, and a connection that sends nothing is closed after the grace.
    #[tokio::test]
    async fn draining_gives_waiting_connections_a_grace() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = Arc::new(Proxy::new(
            crate::table::TableHandle::default(),
            Arc::new(crate::metrics::Metrics::new()),
            crate::sticky::Sticky::new(b"key"),
            Default::default(),
        ));
        let (drain_tx, drain) = DrainSignal::new();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = listener.accept().await.unwrap();
                let info = ConnInfo {
                    peer,
                    local_port: addr.port(),
                    tls: false,
                };
                let conn = serve_connection(
                    stream,
                    info,
                    proxy.clone(),
                    None,
                    Arc::default(),
                    drain.clone(),
                    ConnLimit::new(0).admit("test").unwrap(),
                );
                tokio::spawn(conn);
            }
        });
        let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let mut buf = [0u8; 4096];
        // No Route: the router's own 404, on a connection that stays open.
        let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
        busy.write_all(request).await.unwrap();
        let n = busy.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 404"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        // Accepted, but no request yet.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;

        drain_tx.send_replace(true);
        let drained = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        busy.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        busy.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 404"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");

        let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
            .await
            .expect("the silent connection was not closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        let waited = drained.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
            "closed {waited:?} after draining started"
        );
    }

    /// What an idle keep-alive connection costs is mostly its task's future, which is as
    /// large as its largest state: hyper's connections and TLS streams are boxed so a plain
    /// HTTP/1 connection does not carry them (it was 19 KiB).
    #[tokio::test]
    async fn a_plain_connection_future_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let proxy = Arc::new(Proxy::new(
            crate::table::TableHandle::default(),
            Arc::new(crate::metrics::Metrics::new()),
            crate::sticky::Sticky::new(b"key"),
            Default::default(),
        ));
        let info = ConnInfo {
            peer: addr,
            local_port: addr.port(),
            tls: false,
        };
        let (_tx, drain) = DrainSignal::new();
        let guard = ConnLimit::new(0).admit("test").unwrap();
        let conn = serve_connection(stream, info, proxy, None, Arc::default(), drain, guard);
        let size = std::mem::size_of_val(&conn);
        assert!(size <= 2048, "a connection's future is {size} bytes");
    }
}
