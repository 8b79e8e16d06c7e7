//! The router: an HTTP/TCP reverse proxy (Flynn's strowger) whose routing table is built from
//! watched Routes, EndpointSlices and TLS Secrets and swapped atomically: no reloads, ever.
//!
//! [`Router::start`] binds the listeners and spawns everything on the current Tokio runtime;
//! the binary (`src/main.rs`) only parses flags, sets up logging and waits for SIGTERM.
//!
//! Module map: [`watch`] (index + table builder) → [`table`] (immutable table, endpoints,
//! load balancing) → [`matcher`] (host + path); [`server`] (listeners, drain) →
//! [`http_proxy`] (forwarding) / [`tcp_proxy`]; [`tls`] (SNI); [`sticky`]; [`status`]
//! (Route `Programmed` condition); [`metrics`] and [`admin`].

pub mod admin;
pub mod backend;
pub mod h1;
pub mod head_timer;
pub mod http_proxy;
pub mod matcher;
pub mod metrics;
pub mod server;
pub mod status;
pub mod sticky;
pub mod table;
pub mod tcp_proxy;
pub mod tls;
pub mod watch;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rustls::sign::CertifiedKey;
use tokio::{net::TcpListener, sync::watch as channel, task::JoinHandle};
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub use http_proxy::ProxyOptions;
pub use server::ServerOptions;
pub use table::{Table, TableHandle};

/// How to run a router.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain HTTP listener.
    pub http_addr: SocketAddr,
    /// HTTPS listener (TLS by SNI), if any.
    pub https_addr: Option<SocketAddr>,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin_addr: SocketAddr,
    /// Address TCP routes' ports are opened on.
    pub tcp_bind_ip: IpAddr,
    /// Watch one namespace only (default: all).
    pub namespace: Option<String>,
    /// Leave out Routes in namespaces carrying this label.
    pub exclude_namespace_label: Option<String>,
    /// Certificate for names no Route's Secret covers.
    pub default_cert: Option<Arc<CertifiedKey>>,
    /// HMAC key of sticky-session cookies; replicas must share it.
    pub sticky_key: Vec<u8>,
    /// Offer HTTP/2 by ALPN on the TLS listener.
    pub http2: bool,
    /// Write Route `Programmed` conditions.
    pub report_status: bool,
    /// Backend side.
    pub proxy: ProxyOptions,
    /// Downstream side.
    pub server: ServerOptions,
}

impl Default for Config {
    fn default() -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Self {
            http_addr: SocketAddr::new(any, 80),
            https_addr: Some(SocketAddr::new(any, 443)),
            admin_addr: SocketAddr::new(any, 9090),
            tcp_bind_ip: any,
            namespace: None,
            exclude_namespace_label: None,
            default_cert: None,
            sticky_key: rand::random::<[u8; 32]>().to_vec(),
            http2: true,
            report_status: true,
            proxy: ProxyOptions::default(),
            server: ServerOptions::default(),
        }
    }
}

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A running router.
#[derive(Debug)]
pub struct Router {
    /// Where plain HTTP is served (the bound address, useful with port 0).
    pub http_addr: SocketAddr,
    /// Where HTTPS is served.
    pub https_addr: Option<SocketAddr>,
    /// Where the ops endpoints are served.
    pub admin_addr: SocketAddr,
    /// The live table.
    pub table: TableHandle,
    /// Metrics.
    pub metrics: metrics::SharedMetrics,
    ready: Arc<AtomicBool>,
    drain: channel::Sender<bool>,
    generations: channel::Receiver<u64>,
    tracker: TaskTracker,
    background: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

impl Router {
    /// Binds the listeners and starts watching and serving on the current runtime.
    pub async fn start(client: kube::Client, config: Config) -> Result<Self, Error> {
        let table = TableHandle::default();
        let metrics = Arc::new(metrics::Metrics::new());
        let ready = Arc::new(AtomicBool::new(false));
        let (drain_tx, drain) = server::DrainSignal::new();
        let (published, generations) = channel::channel(0u64);
        let tracker = TaskTracker::new();
        let mut background = Vec::new();

        let http = bind(config.http_addr).await?;
        let http_addr = http.local_addr().map_err(|source| Error::Bind {
            addr: config.http_addr,
            source,
        })?;
        let admin = bind(config.admin_addr).await?;
        let admin_addr = admin.local_addr().map_err(|source| Error::Bind {
            addr: config.admin_addr,
            source,
        })?;
        let proxy = Arc::new(http_proxy::Proxy::new(
            table.clone(),
            metrics.clone(),
            sticky::Sticky::new(&config.sticky_key),
            config.proxy.clone(),
        ));
        let server_opts = Arc::new(config.server.clone());

        background.push(tokio::spawn(admin::serve(
            admin,
            metrics.clone(),
            ready.clone(),
            drain.clone(),
        )));
        let ctx = watch::WatchContext {
            table: table.clone(),
            metrics: metrics.clone(),
            published,
            ready: ready.clone(),
        };
        let client2 = client.clone();
        let namespace = config.namespace.clone();
        let exclude = config.exclude_namespace_label.clone();
        background.push(tokio::spawn(async move {
            if let Err(e) = watch::run(client2, namespace, exclude, ctx).await {
                error!(error = %e, "watching the cluster stopped");
            }
        }));
        let (port_problems, port_problems_rx) = channel::channel(Default::default());
        if config.report_status {
            background.push(tokio::spawn(status::run(
                client,
                table.clone(),
                generations.clone(),
                port_problems_rx,
            )));
        }
        tracker.spawn(server::serve_http(
            http,
            proxy.clone(),
            None,
            server_opts.clone(),
            drain.clone(),
            tracker.clone(),
        ));
        let mut https_addr = None;
        if let Some(addr) = config.https_addr {
            let listener = bind(addr).await?;
            https_addr = Some(
                listener
                    .local_addr()
                    .map_err(|source| Error::Bind { addr, source })?,
            );
            let tls = tls::server_config(table.clone(), config.default_cert.clone(), config.http2)?;
            tracker.spawn(server::serve_http(
                listener,
                proxy,
                Some(tokio_rustls::TlsAcceptor::from(tls)),
                server_opts,
                drain.clone(),
                tracker.clone(),
            ));
        }
        let tcp = tcp_proxy::TcpProxy {
            table: table.clone(),
            bind_ip: config.tcp_bind_ip,
            connect_timeout: config.proxy.connect_timeout,
            max_attempts: config.proxy.max_attempts,
            problems: port_problems,
        };
        tracker.spawn(tcp.run(generations.clone(), drain, tracker.clone()));
        info!(%http_addr, ?https_addr, %admin_addr, "router listening");
        Ok(Self {
            http_addr,
            https_addr,
            admin_addr,
            table,
            metrics,
            ready,
            drain: drain_tx,
            generations,
            tracker,
            background,
        })
    }

    /// Whether the first complete table has been published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Waits until a published table satisfies `pred` (tests, benchmarks); false on timeout.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Table) -> bool) -> bool {
        let mut generations = self.generations.clone();
        let check = async {
            loop {
                if self.is_ready() && pred(&self.table.load()) {
                    return;
                }
                if generations.changed().await.is_err() {
                    // No more tables will come; keep the caller's timeout semantics.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, check).await.is_ok()
    }

    /// Graceful drain: stop accepting, let requests and TCP connections in flight finish
    /// (HTTP/1 keep-alive connections are closed after their current response, HTTP/2 ones
    /// get GOAWAY), for at most `timeout`; then stop watching.
    pub async fn shutdown(self, timeout: Duration) {
        info!("draining");
        self.drain.send_replace(true);
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = self.tracker.len(),
                "drain timeout: closing the remaining connections"
            );
        }
        for task in &self.background {
            task.abort();
        }
        info!("stopped");
    }
}
