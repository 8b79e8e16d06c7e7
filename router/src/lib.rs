//! The router: an HTTP/TCP reverse proxy (Flynn's strowger) whose routing table is built from
//! watched Routes, EndpointSlices and TLS Secrets and swapped atomically: no reloads, ever.
//!
//! [`Router::start`] binds the listeners and spawns everything on the current Tokio runtime;
//! the traffic listeners listen once the first complete routing table is published, so that
//! a router replacing another on the same ports ([`listener`]) takes no connection it cannot
//! route. The binary (`src/main.rs`) only parses flags, sets up logging and waits for SIGTERM
//! (or runs [`probe`]).
//!
//! Module map: [`watch`] (index + table builder) → [`table`] (immutable table, endpoints,
//! load balancing) → [`matcher`] (host + path); [`server`] (listeners, drain) →
//! [`http_proxy`] (forwarding; the HTTP/1 wire code, the own server and backend client, is the
//! crate `flynn-http1`) / [`tcp_proxy`]; [`listener`] (shared ports); [`tls`] (SNI),
//! [`secrets`] (only the TLS Secrets Routes name, read by name);
//! [`sticky`]; [`status`] (Route `Programmed` condition); [`metrics`], [`admin`] and [`probe`].

pub mod admin;
pub mod forwarded;
pub mod http_proxy;
pub mod limits;
pub mod listener;
pub mod matcher;
pub mod metrics;
pub mod probe;
pub mod secrets;
pub mod server;
pub mod status;
pub mod sticky;
pub mod table;
pub mod tcp_proxy;
pub mod tls;
pub mod watch;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rustls::sign::CertifiedKey;
use tokio::{sync::watch as channel, task::JoinHandle};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::{admin::Admin, listener::Bound, server::DrainSignal, tcp_proxy::TcpProxy};

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
    /// The same on a unix socket of this process's own, for `flynn-router probe`.
    pub admin_socket: Option<PathBuf>,
    /// Address TCP routes' ports are opened on.
    pub tcp_bind_ip: IpAddr,
    /// Watch one namespace only (default: all).
    pub namespace: Option<String>,
    /// Leave out Routes in namespaces carrying this label.
    pub exclude_namespace_label: Option<String>,
    /// Serve only Routes of namespaces matching this label selector (a router shard, or a
    /// test's router over the namespaces it made).
    pub namespace_selector: Option<String>,
    /// What Routes may claim: the default domain, wildcards over it, TCP ports (the same
    /// settings as the operator's).
    pub route_policy: flynn_crds::ownership::Policy,
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
            // Loopback: on the host network a wildcard is the node's public address.
            admin_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090),
            admin_socket: None,
            tcp_bind_ip: any,
            namespace: None,
            exclude_namespace_label: None,
            namespace_selector: None,
            route_policy: flynn_crds::ownership::Policy::default(),
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
    /// The admin unix socket could not be bound.
    #[error("listening on {}: {source}", path.display())]
    BindUnix {
        /// The socket's path.
        path: PathBuf,
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
    serving: channel::Receiver<bool>,
    failure: channel::Receiver<Option<Arc<Error>>>,
    drain: channel::Sender<bool>,
    generations: channel::Receiver<u64>,
    tracker: TaskTracker,
    background: Vec<JoinHandle<()>>,
    admin_socket: Option<PathBuf>,
}

impl Router {
    /// Binds the listeners and starts watching on the current runtime; the HTTP, HTTPS and
    /// TCP route listeners listen once the first complete table is published
    /// ([`Router::is_ready`]), the admin endpoints at once.
    pub async fn start(client: kube::Client, config: Config) -> Result<Self, Error> {
        let table = TableHandle::default();
        let metrics = Arc::new(metrics::Metrics::new());
        listener::check_migrate_req(&metrics);
        // Every bind first: a port that is taken fails the start before anything runs.
        let sockets = Sockets::bind(&config, &table)?;
        let (http_addr, https_addr) = (sockets.http.local_addr(), sockets.https_addr());
        let admin_addr = sockets.admin_addr;

        let (drain_tx, drain) = server::DrainSignal::new();
        let (published, generations) = channel::channel(0u64);
        let (serving_tx, serving) = channel::channel(false);
        let (failure_tx, failure) = channel::channel(None);
        let tracker = TaskTracker::new();
        let mut background = Vec::new();

        // One limit for every listener, admin included.
        let limit = limits::ConnLimit::new(match config.server.max_connections {
            0 => limits::default_max_connections(),
            n => n,
        });
        info!(max_connections = limit.max(), "connection limit");
        let admin = Admin {
            metrics: metrics.clone(),
            serving: serving.clone(),
            drain: drain.clone(),
            limit: limit.clone(),
        };
        if let Some(unix) = sockets.admin_unix {
            background.push(tokio::spawn(admin.clone().serve_unix(unix)));
        }
        background.push(tokio::spawn(admin.serve_tcp(sockets.admin_tcp)));
        let ready = Arc::new(AtomicBool::new(false));
        let ctx = watch::WatchContext {
            table: table.clone(),
            metrics: metrics.clone(),
            published,
            ready: ready.clone(),
            policy: config.route_policy.clone(),
            namespace_selector: config.namespace_selector.clone(),
        };
        background.push(tokio::spawn(watch_cluster(
            client.clone(),
            config.namespace.clone(),
            config.exclude_namespace_label.clone(),
            ctx,
        )));
        let (port_problems, port_problems_rx) = channel::channel(Default::default());
        if config.report_status {
            background.push(tokio::spawn(status::run(
                client,
                table.clone(),
                generations.clone(),
                port_problems_rx,
            )));
        }
        let traffic = Traffic {
            http: sockets.http,
            https: sockets.https,
            proxy: Arc::new(http_proxy::Proxy::new(
                table.clone(),
                metrics.clone(),
                sticky::Sticky::new(&config.sticky_key),
                config.proxy.clone(),
            )),
            server: Arc::new(config.server.clone()),
            tcp: TcpProxy {
                table: table.clone(),
                bind_ip: config.tcp_bind_ip,
                connect_timeout: config.proxy.connect_timeout,
                max_attempts: config.proxy.max_attempts,
                problems: port_problems,
                limit: limit.clone(),
                idle_timeout: config.proxy.tunnel_idle_timeout,
            },
            limit,
            tracker: tracker.clone(),
            drain,
        };
        let first_table = generations.clone();
        tracker.spawn(async move {
            let served = traffic.serve_when_ready(first_table, &ready, serving_tx);
            if let Err(e) = served.await {
                error!(error = %e, "cannot serve");
                failure_tx.send_replace(Some(Arc::new(e)));
            }
        });
        info!(
            %http_addr, ?https_addr, %admin_addr,
            "router bound; listening once the first routing table is published"
        );
        Ok(Self {
            http_addr,
            https_addr,
            admin_addr,
            table,
            metrics,
            serving,
            failure,
            drain: drain_tx,
            generations,
            tracker,
            background,
            admin_socket: config.admin_socket,
        })
    }

    /// Whether the router serves: the first complete table is published and the listeners
    /// listen (what `/readyz` says, until draining starts).
    pub fn is_ready(&self) -> bool {
        *self.serving.borrow()
    }

    /// Resolves if the router cannot serve: a listener bound at start failed to listen once
    /// the first table came (another process took the port in between). Pending otherwise.
    pub async fn failed(&self) -> Arc<Error> {
        let mut failure = self.failure.clone();
        match failure.wait_for(Option::is_some).await {
            Ok(failed) => failed.clone().expect("waited for Some"),
            // The task ended without failing.
            Err(_) => std::future::pending().await,
        }
    }

    /// Waits until a published table satisfies `pred` (tests, benchmarks); false on timeout.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Table) -> bool) -> bool {
        let mut generations = self.generations.clone();
        let mut serving = self.serving.clone();
        let check = async {
            // Tables published before the listeners listen are not served yet.
            if serving.wait_for(|s| *s).await.is_err() {
                // It never will be (the listeners failed); keep the timeout semantics.
                std::future::pending::<()>().await;
            }
            loop {
                if pred(&self.table.load()) {
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
        if let Some(path) = &self.admin_socket
            && let Err(e) = std::fs::remove_file(path)
        {
            warn!(path = %path.display(), error = %e, "removing the admin socket");
        }
        info!("stopped");
    }
}

/// Watches the cluster and publishes tables until the watch streams end.
async fn watch_cluster(
    client: kube::Client,
    namespace: Option<String>,
    exclude_label: Option<String>,
    ctx: watch::WatchContext,
) {
    if let Err(e) = watch::run(client, namespace, exclude_label, ctx).await {
        error!(error = %e, "watching the cluster stopped");
    }
}

/// Every socket the router opens at start.
struct Sockets {
    /// Bound; listening once the first table is published.
    http: Bound,
    https: Option<(Bound, TlsAcceptor)>,
    /// Listening: probes and metrics are served from the start.
    admin_tcp: tokio::net::TcpListener,
    admin_addr: SocketAddr,
    admin_unix: Option<tokio::net::UnixListener>,
}

impl Sockets {
    fn bind(config: &Config, table: &TableHandle) -> Result<Self, Error> {
        let http = listener::bind(config.http_addr)?;
        let https = match config.https_addr {
            Some(addr) => {
                let bound = listener::bind(addr)?;
                let tls =
                    tls::server_config(table.clone(), config.default_cert.clone(), config.http2)?;
                Some((bound, TlsAcceptor::from(tls)))
            }
            None => None,
        };
        let admin_tcp = listener::listen(config.admin_addr)?;
        let admin_addr = admin_tcp.local_addr().map_err(|source| Error::Bind {
            addr: config.admin_addr,
            source,
        })?;
        let admin_unix = config
            .admin_socket
            .as_deref()
            .map(admin::bind_unix)
            .transpose()?;
        Ok(Self {
            http,
            https,
            admin_tcp,
            admin_addr,
            admin_unix,
        })
    }

    fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().map(|(bound, _)| bound.local_addr())
    }
}

/// The traffic listeners, bound at start, and what serving them takes.
struct Traffic {
    http: Bound,
    https: Option<(Bound, TlsAcceptor)>,
    proxy: Arc<http_proxy::Proxy>,
    server: Arc<ServerOptions>,
    tcp: TcpProxy,
    tracker: TaskTracker,
    drain: DrainSignal,
    limit: limits::ConnLimit,
}

impl Traffic {
    /// Waits for the first complete table (`ready`, announced on `generations`), then listens
    /// and serves until draining starts, and says so on `serving`. Nothing listens if
    /// draining starts first.
    async fn serve_when_ready(
        self,
        mut generations: channel::Receiver<u64>,
        ready: &AtomicBool,
        serving: channel::Sender<bool>,
    ) -> Result<(), Error> {
        let mut drain = self.drain.clone();
        tokio::select! {
            published = generations.wait_for(|_| ready.load(Ordering::SeqCst)) => {
                // The watcher stopped before the first table: there is nothing to serve.
                if published.is_err() {
                    return Ok(());
                }
            }
            () = drain.signaled() => return Ok(()),
        }
        let http = self.http.listen()?;
        let https = match self.https {
            Some((bound, tls)) => Some((bound.listen()?, tls)),
            None => None,
        };
        self.tracker.spawn(server::serve_http(
            http,
            self.proxy.clone(),
            None,
            self.server.clone(),
            (self.drain.clone(), self.limit.clone()),
            self.tracker.clone(),
        ));
        if let Some((listener, tls)) = https {
            self.tracker.spawn(server::serve_http(
                listener,
                self.proxy,
                Some(tls),
                self.server,
                (self.drain.clone(), self.limit),
                self.tracker.clone(),
            ));
        }
        // TCP route ports open per table from here on, the first one included.
        self.tracker
            .spawn(self.tcp.run(generations, self.drain, self.tracker.clone()));
        serving.send_replace(true);
        info!("listening; ready");
        Ok(())
    }
}
