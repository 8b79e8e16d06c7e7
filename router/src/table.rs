//! The immutable routing table and the long-lived endpoint state it points at.
//!
//! The watcher builds a whole new [`Table`] for every batch of changes and publishes it with
//! one atomic pointer swap ([`TableHandle`]); request handling only ever loads the current
//! pointer, so the hot path takes no lock and a request sees one consistent table. The
//! [`Endpoint`]s (connection pool, in-flight count) outlive tables: the builder reuses the
//! same `Arc<Endpoint>` for an address that stays, so a table swap drops no pooled connection.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use flynn_http1::client::ConnPool;
use http_body_util::{Either, Empty};
use hyper::client::conn::http1::SendRequest;
use rand::Rng;
use rustls::sign::CertifiedKey;

use crate::{
    matcher::{HostMatcher, NameMap},
    metrics::RouteMetrics,
};

/// `<namespace>/<name>` of a Route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// The Route's namespace.
    pub namespace: String,
    /// The Route's name.
    pub name: String,
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the router sends backends: the client's body, streamed, or nothing, when a safe
/// request without a body is sent again after a pooled connection broke under it.
pub type UpstreamRequestBody = Either<crate::limits::TimedBody, Empty<Bytes>>;

/// One backend address (a ready Pod port) and what the router keeps about it across tables.
#[derive(Debug)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Requests or TCP connections now in flight: the load balancer's measure of load.
    in_flight: AtomicUsize,
    /// Idle keep-alive connections, most recently used last (LIFO keeps few connections warm).
    /// The lock is held for one push or pop, never across I/O.
    idle: Mutex<Vec<IdleConn>>,
    /// Idle connections of the router's own HTTP/1 client (requests without a body); shared
    /// with the response bodies that give their connection back.
    pub conns: Arc<ConnPool>,
}

#[derive(Debug)]
struct IdleConn {
    tx: SendRequest<UpstreamRequestBody>,
    since: Instant,
}

/// Upper bound of idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

impl Endpoint {
    /// A new endpoint with no connections.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            in_flight: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            conns: Arc::default(),
        }
    }

    /// Requests or connections in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one request (or TCP connection) until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// An idle pooled connection younger than `max_idle`, if any.
    pub fn checkout(&self, max_idle: Duration) -> Option<SendRequest<UpstreamRequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.tx.is_closed() && conn.since.elapsed() < max_idle {
                return Some(conn.tx);
            }
        }
        None
    }

    /// Returns a connection whose last response has been read in full.
    pub fn checkin(&self, tx: SendRequest<UpstreamRequestBody>) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(IdleConn {
                tx,
                since: Instant::now(),
            });
        }
    }

    /// Drops every idle connection (the endpoint left the table).
    pub fn close_idle(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.conns.clear();
    }
}

/// Decrements an endpoint's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The ready endpoints of one Service (`<app>-<process>`).
#[derive(Debug, Default)]
pub struct Backend {
    /// `<namespace>/<service>`, for logs.
    pub service: String,
    /// Ready, non-terminating endpoints, sorted by address.
    pub endpoints: Vec<Arc<Endpoint>>,
}

impl Backend {
    /// Load balancing: the power of two random choices, by fewest requests in flight.
    ///
    /// Two random candidates avoid both the herd behaviour of pure least-connections (every
    /// router replica piling onto the same idle endpoint) and the blindness of pure random to
    /// a slow endpoint; it needs no shared state beyond one atomic per endpoint. `exclude`
    /// holds endpoints that already failed to connect for this request.
    pub fn pick(&self, exclude: &[SocketAddr]) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        if exclude.is_empty() {
            return match n {
                0 => None,
                1 => self.endpoints.first(),
                _ => {
                    let mut rng = rand::rng();
                    let a = rng.random_range(0..n);
                    let mut b = rng.random_range(0..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (a, b) = (&self.endpoints[a], &self.endpoints[b]);
                    Some(if b.in_flight() < a.in_flight() { b } else { a })
                }
            };
        }
        // A retry: the least loaded endpoint not tried yet (rare, so a scan is fine).
        self.endpoints
            .iter()
            .filter(|e| !exclude.contains(&e.addr))
            .min_by_key(|e| e.in_flight())
    }

    /// The endpoint at `addr`, if it is ready (sticky sessions).
    pub fn find(&self, addr: SocketAddr) -> Option<&Arc<Endpoint>> {
        self.endpoints
            .binary_search_by_key(&addr, |e| e.addr)
            .ok()
            .map(|i| &self.endpoints[i])
    }
}

/// An HTTP Route as served.
#[derive(Debug)]
pub struct HttpEntry {
    /// Which Route this is.
    pub key: RouteKey,
    /// Where its traffic goes.
    pub backend: Arc<Backend>,
    /// Pin clients to an endpoint with a signed cookie.
    pub sticky: bool,
    /// Redirect plain HTTP to HTTPS.
    pub https_redirect: bool,
    /// The Route's counters, resolved once per table so requests only touch atomics.
    pub metrics: RouteMetrics,
}

/// A TCP Route as served.
#[derive(Debug)]
pub struct TcpEntry {
    /// Which Route this is.
    pub key: RouteKey,
    /// Where its connections go.
    pub backend: Arc<Backend>,
    /// The Route's counters.
    pub metrics: RouteMetrics,
}

/// What the router did with one Route in this table (for status reporting).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteOutcome {
    /// The Route.
    pub key: RouteKey,
    /// The generation the outcome describes.
    pub generation: Option<i64>,
    /// Whether the router serves it.
    pub programmed: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
    /// The Route's `Programmed` condition as last seen, to skip no-op writes.
    pub current: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// `CertificateReady`, for served HTTP Routes naming a TLS Secret.
    pub certificate: Option<CertVerdict>,
    /// The Route's `CertificateReady` condition as last seen.
    pub current_certificate: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// Whether a Route's certificate is used for its host, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertVerdict {
    /// Used.
    pub ready: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

/// One immutable snapshot of everything the router serves.
#[derive(Debug, Default)]
pub struct Table {
    /// Increments with every published table.
    pub generation: u64,
    /// HTTP routes by host and path.
    pub http: HostMatcher<Arc<HttpEntry>>,
    /// TCP routes by listening port.
    pub tcp: HashMap<u16, Arc<TcpEntry>>,
    /// Certificates by server name.
    pub certs: NameMap<Arc<CertifiedKey>>,
    /// Per-Route outcome, for the status reporter.
    pub outcomes: Vec<RouteOutcome>,
}

/// The current table, swappable from the watcher and readable without locks.
#[derive(Debug, Clone)]
pub struct TableHandle(Arc<ArcSwap<Table>>);

impl Default for TableHandle {
    fn default() -> Self {
        Self(Arc::new(ArcSwap::from_pointee(Table::default())))
    }
}

impl TableHandle {
    /// The current table. `arc_swap::Guard` is cheap to hold for one request.
    pub fn load(&self) -> arc_swap::Guard<Arc<Table>> {
        self.0.load()
    }

    /// The current table as an owned `Arc` (for long-lived holders).
    pub fn load_full(&self) -> Arc<Table> {
        self.0.load_full()
    }

    /// Publishes `table`.
    pub fn store(&self, table: Arc<Table>) {
        self.0.store(table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(n: u16) -> Backend {
        Backend {
            service: "ns/svc".into(),
            endpoints: (0..n)
                .map(|i| Arc::new(Endpoint::new(SocketAddr::from(([10, 0, 0, 1], 8000 + i)))))
                .collect(),
        }
    }

    #[test]
    fn pick_avoids_the_busier_of_two() {
        let b = backend(2);
        let _busy: Vec<_> = (0..5).map(|_| b.endpoints[0].start()).collect();
        for _ in 0..50 {
            assert_eq!(b.pick(&[]).unwrap().addr, b.endpoints[1].addr);
        }
    }

    #[test]
    fn pick_spreads_load() {
        let b = backend(4);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(b.pick(&[]).unwrap().addr);
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn retries_exclude_failed_endpoints() {
        let b = backend(3);
        let tried = [b.endpoints[0].addr, b.endpoints[1].addr];
        assert_eq!(b.pick(&tried).unwrap().addr, b.endpoints[2].addr);
        let all: Vec<_> = b.endpoints.iter().map(|e| e.addr).collect();
        assert!(b.pick(&all).is_none());
        assert!(backend(0).pick(&[]).is_none());
    }

    #[test]
    fn in_flight_guard_counts() {
        let e = Arc::new(Endpoint::new(SocketAddr::from(([10, 0, 0, 1], 1))));
        let g = e.start();
        assert_eq!(e.in_flight(), 1);
        drop(g);
        assert_eq!(e.in_flight(), 0);
    }
}
