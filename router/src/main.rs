//! `flynn-router`: flags, logging, runtime, and SIGTERM → graceful drain; `flynn-router
//! probe` for the kubelet's exec probes.

use std::{io::Write, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use flynn_router::{Config, ProxyOptions, Router, ServerOptions, probe, tls};

/// Strowger-style HTTP/TCP router that follows the cluster live.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    // Without a subcommand: run the router.
    #[command(flatten)]
    run: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// GET a path from a running router over its admin unix socket, for exec probes.
    ///
    /// Exits 0 on a 200 (printing the body), 1 on another status (printing it and the body),
    /// 2 if the router does not answer. The socket (`--admin-socket`) is the process's own,
    /// where the admin address may be shared with the router replacing it.
    Probe(ProbeArgs),
}

#[derive(Debug, clap::Args)]
struct ProbeArgs {
    /// The router's admin unix socket.
    #[arg(long, env = "FLYNN_ROUTER_ADMIN_SOCKET")]
    socket: PathBuf,
    /// Time allowed for the whole exchange, seconds (keep it under the probe's
    /// timeoutSeconds, so the kubelet records why).
    #[arg(long, default_value_t = 1.0)]
    timeout: f64,
    /// What to GET: `/readyz`, `/healthz` or `/metrics`.
    path: String,
}

/// The router's flags.
#[derive(Debug, clap::Args)]
struct Args {
    /// Plain HTTP listener.
    #[arg(long, env = "FLYNN_ROUTER_HTTP_ADDR", default_value = "0.0.0.0:80")]
    http_addr: SocketAddr,
    /// HTTPS listener; empty to disable.
    #[arg(long, env = "FLYNN_ROUTER_HTTPS_ADDR", default_value = "0.0.0.0:443")]
    https_addr: String,
    /// Ops listener: /metrics, /healthz, /readyz. Loopback by default: on the host network
    /// a wildcard address is the node's public one. For scraping, bind the pod's IP behind
    /// a Service (e.g. `$(POD_IP):9090`). Shared with the router that replaces this one
    /// during an upgrade, so probes should use --admin-socket.
    #[arg(
        long,
        env = "FLYNN_ROUTER_ADMIN_ADDR",
        default_value = "127.0.0.1:9090"
    )]
    admin_addr: SocketAddr,
    /// The ops endpoints on a unix socket of this process's own too (e.g. in the pod's
    /// emptyDir), for `flynn-router probe`. A socket left at the path is replaced.
    #[arg(long, env = "FLYNN_ROUTER_ADMIN_SOCKET")]
    admin_socket: Option<PathBuf>,
    /// Address that TCP routes' ports are opened on.
    #[arg(long, env = "FLYNN_ROUTER_TCP_BIND_IP", default_value = "0.0.0.0")]
    tcp_bind_ip: std::net::IpAddr,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "FLYNN_ROUTER_NAMESPACE")]
    namespace: Option<String>,
    /// Leave out Routes in namespaces with this label (the project's tests label theirs
    /// and run their own router).
    #[arg(long, env = "FLYNN_ROUTER_EXCLUDE_NAMESPACE_LABEL")]
    exclude_namespace_label: Option<String>,
    /// Serve only Routes of namespaces matching this label selector (default: all).
    #[arg(long, env = "FLYNN_ROUTER_NAMESPACE_SELECTOR")]
    namespace_selector: Option<String>,
    /// Domain of Apps' default Routes, as the operator's --default-domain: wildcards over it
    /// are refused unless --allow-default-domain-wildcard.
    #[arg(
        long,
        env = "FLYNN_ROUTER_DEFAULT_DOMAIN",
        default_value = "flynn.local"
    )]
    default_domain: String,
    /// Serve Routes whose wildcard covers the default domain (as the operator's flag).
    #[arg(long, env = "FLYNN_ROUTER_ALLOW_DEFAULT_DOMAIN_WILDCARD")]
    allow_default_domain_wildcard: bool,
    /// FIRST-LAST: the only ports TCP Routes may make the router listen on (as the
    /// operator's --tcp-port-range).
    #[arg(long, env = "FLYNN_ROUTER_TCP_PORT_RANGE", default_value_t = flynn_crds::ownership::PortRange::DEFAULT)]
    tcp_port_range: flynn_crds::ownership::PortRange,
    /// PEM certificate for names without a Route certificate.
    #[arg(long, env = "FLYNN_ROUTER_DEFAULT_CERT", requires = "default_key")]
    default_cert: Option<String>,
    /// PEM private key of --default-cert.
    #[arg(long, env = "FLYNN_ROUTER_DEFAULT_KEY", requires = "default_cert")]
    default_key: Option<String>,
    /// Key for signing sticky-session cookies (share it between replicas); random if unset.
    #[arg(long, env = "FLYNN_ROUTER_STICKY_KEY", hide_env_values = true)]
    sticky_key: Option<String>,
    /// Accept HTTP/2 with prior knowledge (h2c) on the plain listener.
    #[arg(long, env = "FLYNN_ROUTER_H2C")]
    h2c: bool,
    /// Serve every HTTP/1 request with hyper's server instead of the router's own (which
    /// hands hyper only requests with a body, upgrades and HTTP/1.0).
    #[arg(long, env = "FLYNN_ROUTER_HYPER_HTTP1")]
    hyper_http1: bool,
    /// Do not write Route status.
    #[arg(long)]
    no_status: bool,
    /// Backend connect timeout, seconds.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout: f64,
    /// Time a backend has to start its response to a request without a body, seconds (then
    /// 504); 0 for no limit.
    #[arg(long, env = "FLYNN_ROUTER_BACKEND_TIMEOUT", default_value_t = 60.0)]
    backend_timeout: f64,
    /// Request-head (and TLS handshake, keep-alive idle) timeout, seconds.
    #[arg(long, default_value_t = 30.0)]
    header_timeout: f64,
    /// Maximum request head size, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_header_bytes: usize,
    /// Time allowed for in-flight requests after SIGTERM, seconds.
    #[arg(long, env = "FLYNN_ROUTER_DRAIN_TIMEOUT", default_value_t = 25.0)]
    drain_timeout: f64,
    /// Worker threads; 1 runs everything on one current-thread runtime (fastest per core).
    #[arg(long, env = "FLYNN_ROUTER_WORKERS", default_value_t = 1)]
    workers: usize,
    #[command(flatten)]
    log: flynn_telemetry::LogArgs,
    /// Log every request (target flynn_router::access).
    #[arg(long, env = "FLYNN_ROUTER_ACCESS_LOG")]
    access_log: bool,
    // --- Edge: what the router believes of clients, and what one client may hold. ---
    /// Peers (CIDR[,CIDR...], e.g. a load balancer's range) whose X-Forwarded-For/Proto/
    /// Host/Port and Forwarded headers are kept and extended; everyone else's are replaced.
    /// Empty (the default): no one's.
    #[arg(long, env = "FLYNN_ROUTER_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<flynn_router::forwarded::Cidr>,
    /// Connections open at once over all listeners (HTTP, HTTPS, TCP routes, admin); above
    /// it new ones are accepted and closed. 0: (RLIMIT_NOFILE, raised to its hard limit,
    /// - 256) / 2.
    #[arg(long, env = "FLYNN_ROUTER_MAX_CONNECTIONS", default_value_t = 0)]
    max_connections: usize,
    /// A request body gets this long, seconds, and then one more second per
    /// --body-min-rate bytes received; slower, it is cut off. 0: no limit.
    #[arg(long, env = "FLYNN_ROUTER_BODY_TIMEOUT", default_value_t = 30.0)]
    body_timeout: f64,
    /// Bytes per second a request body must average after --body-timeout.
    #[arg(long, env = "FLYNN_ROUTER_BODY_MIN_RATE", default_value_t = 1024)]
    body_min_rate: u64,
    /// A websocket (upgraded) or TCP route connection with no traffic either way for this
    /// long, seconds, is closed. 0: never.
    #[arg(
        long,
        env = "FLYNN_ROUTER_TUNNEL_IDLE_TIMEOUT",
        default_value_t = 300.0
    )]
    tunnel_idle_timeout: f64,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Probe(args)) => run_probe(&args),
        None => serve(cli.run).map(|()| ExitCode::SUCCESS),
    }
}

/// `flynn-router probe`: quiet but for the answer, which the kubelet records.
fn run_probe(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::try_from_secs_f64(args.timeout).context("--timeout")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(probe::probe(&args.socket, &args.path, timeout)) {
        Ok(body) => {
            std::io::stdout().write_all(&body)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(if e.answered() { 1 } else { 2 }))
        }
    }
}

/// Runs the router until SIGTERM (or Ctrl-C), then drains.
fn serve(args: Args) -> anyhow::Result<()> {
    args.log.log_format.init("info");
    let runtime = if args.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let default_cert = match (&args.default_cert, &args.default_key) {
        (Some(c), Some(k)) => Some(tls::certified_key_from_files(c, k)?),
        _ => None,
    };
    let https_addr = if args.https_addr.is_empty() {
        None
    } else {
        Some(
            args.https_addr
                .parse()
                .with_context(|| format!("--https-addr {:?}", args.https_addr))?,
        )
    };
    let mut config = Config {
        http_addr: args.http_addr,
        https_addr,
        admin_addr: args.admin_addr,
        admin_socket: args.admin_socket,
        tcp_bind_ip: args.tcp_bind_ip,
        namespace: args.namespace,
        exclude_namespace_label: args.exclude_namespace_label.filter(|l| !l.is_empty()),
        namespace_selector: args.namespace_selector.filter(|l| !l.is_empty()),
        route_policy: flynn_crds::ownership::Policy {
            allow_default_domain_wildcard: args.allow_default_domain_wildcard,
            tcp_ports: args.tcp_port_range,
            ..Default::default()
        }
        .with_default_domain(&args.default_domain),
        default_cert,
        report_status: !args.no_status,
        proxy: ProxyOptions {
            connect_timeout: Duration::from_secs_f64(args.connect_timeout),
            access_log: args.access_log,
            backend_timeout: Duration::from_secs_f64(args.backend_timeout),
            trusted_proxies: flynn_router::forwarded::TrustedProxies::new(args.trusted_proxies),
            body_pace: flynn_router::limits::BodyPace {
                grace: Duration::from_secs_f64(args.body_timeout),
                min_rate: args.body_min_rate,
            },
            tunnel_idle_timeout: Duration::from_secs_f64(args.tunnel_idle_timeout),
            ..ProxyOptions::default()
        },
        server: ServerOptions {
            header_timeout: Duration::from_secs_f64(args.header_timeout),
            max_header_bytes: args.max_header_bytes,
            h2c: args.h2c,
            own_http1: !args.hyper_http1,
            max_connections: args.max_connections,
        },
        ..Config::default()
    };
    if let Some(key) = args.sticky_key {
        config.sticky_key = key.into_bytes();
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let router = Router::start(client, config).await?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let failed = tokio::select! {
        _ = term.recv() => None,
        _ = tokio::signal::ctrl_c() => None,
        e = router.failed() => Some(e),
    };
    router
        .shutdown(Duration::from_secs_f64(args.drain_timeout))
        .await;
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
