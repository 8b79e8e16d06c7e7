//! A router upgrade on one node under load: router B starts on router A's ports while A
//! serves, becomes ready (asked over its own admin socket, as the kubelet's exec probe
//! does), and A gets SIGTERM. Not one request may fail.
//!
//! Runs the `flynn-router` binary twice against a fake Kubernetes API server served here
//! (one HTTP Route, one TCP Route and an EndpointSlice naming a backend on loopback, which
//! the real API server would refuse), so it needs no cluster. It needs
//! `net.ipv4.tcp_migrate_req=1` (which `e2e/cluster/up` sets): without it the connections
//! queued on A's listeners when it closes them are reset;
//! `queued_connections_move_to_the_next_listener_when_one_closes` checks that alone, without
//! depending on timing.

#[path = "support/fake_api.rs"]
mod fake_api;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use fake_api::{route, serve, slice};
use flynn_crds::RouteSpec;
use flynn_router::listener;
use http::Response;
use http_body_util::{BodyExt, Full};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const NAMESPACE: &str = "handover";
const HOST: &str = "handover.test";
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
const SET_MIGRATE_REQ: &str = "Set it with `sysctl -w net.ipv4.tcp_migrate_req=1` \
    (e2e/cluster/up does)";

fn migrate_req() -> bool {
    std::fs::read_to_string(MIGRATE_REQ).is_ok_and(|v| v.trim() == "1")
}

/// What the handover relies on from the kernel: connections whose handshake completed on a
/// listener that closes before accepting them move to another listener of its reuseport
/// group (`net.ipv4.tcp_migrate_req`), instead of being reset.
#[test]
fn queued_connections_move_to_the_next_listener_when_one_closes() {
    const QUEUED: usize = 16;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (moved, reset) = runtime.block_on(async {
        let old = listener::listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = old.local_addr().unwrap();
        // Handshakes complete in the kernel: all of them wait in the old listener's queue.
        let clients: Vec<TcpStream> = (0..QUEUED)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let new = listener::bind(addr).unwrap().listen().unwrap();
        drop(old);
        let mut moved = 0;
        while let Ok(Ok((mut s, _))) =
            tokio::time::timeout(Duration::from_millis(500), new.accept()).await
        {
            moved += 1;
            tokio::io::AsyncWriteExt::write_all(&mut s, b"ok")
                .await
                .unwrap();
        }
        let reset = clients
            .into_iter()
            .filter(|c| {
                c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut buf = [0u8; 2];
                (&*c).read_exact(&mut buf).is_err()
            })
            .count();
        (moved, reset)
    });
    eprintln!("{QUEUED} queued connections: {moved} moved to the new listener, {reset} reset");
    assert!(
        migrate_req(),
        "net.ipv4.tcp_migrate_req is not 1 here: {reset} of the {QUEUED} connections queued on \
         a closing listener were reset. {SET_MIGRATE_REQ}"
    );
    assert_eq!((moved, reset), (QUEUED, 0));
}

#[test]
fn a_second_router_takes_over_the_ports_without_failing_a_request() {
    let dir = TestDir::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tcp_port = free_port();
    let api = runtime.block_on(async { fake_api(backend().await, tcp_port).await });
    let kubeconfig = dir.kubeconfig(api);
    let ports = Ports {
        http: free_port(),
        admin: free_port(),
    };

    let mut a = RouterProcess::start("a", &dir, &kubeconfig, ports);
    a.wait_ready(Duration::from_secs(30));
    let load = Load::start(&[(ports.http, 4), (tcp_port, 2)], 250);
    std::thread::sleep(Duration::from_secs(1));

    let mut b = RouterProcess::start("b", &dir, &kubeconfig, ports);
    let started = Instant::now();
    b.wait_ready(Duration::from_secs(30));
    eprintln!("router b ready after {:?}", started.elapsed());
    // Both serve for a while: B takes its share of the connections.
    std::thread::sleep(Duration::from_secs(1));
    let a_served = a.served();
    a.terminate();
    std::thread::sleep(Duration::from_secs(2));
    let (ok, failed, errors) = load.stop();
    let a_exit = a.wait(Duration::from_secs(10));
    let b_served = b.served();
    b.terminate();
    let b_exit = b.wait(Duration::from_secs(10));

    eprintln!(
        "handover under load: {ok} requests ok, {failed} failed; served by a (before its \
         SIGTERM): {a_served:?}, by b: {b_served:?}; first failures: {errors:?}"
    );
    assert!(
        migrate_req(),
        "net.ipv4.tcp_migrate_req is not 1 here ({failed} of {} requests failed): connections \
         queued on the old router's listeners when it closes them are reset instead of moving \
         to the new router. {SET_MIGRATE_REQ}",
        ok + failed
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the handover: {errors:?}\n{}{}",
        ok + failed,
        a.log(),
        b.log()
    );
    assert!(
        a_exit.success(),
        "router a exited with {a_exit}\n{}",
        a.log()
    );
    assert!(
        b_exit.success(),
        "router b exited with {b_exit}\n{}",
        b.log()
    );
    for (name, served) in [("a", a_served), ("b", b_served)] {
        assert!(
            served.http > 0 && served.tcp > 0,
            "router {name} served {served:?}"
        );
    }
}

/// The addresses both routers share.
#[derive(Debug, Clone, Copy)]
struct Ports {
    http: u16,
    admin: u16,
}

/// A port nothing listens on now (the routers bind it a moment later).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    l.local_addr().unwrap().port()
}

/// Where the routers' sockets, logs and kubeconfig go; removed at the end.
struct TestDir(PathBuf);

impl TestDir {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("flynn-router-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn kubeconfig(&self, api: SocketAddr) -> PathBuf {
        let path = self.0.join("kubeconfig");
        fake_api::write_kubeconfig(&path, api);
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which requests a router served, from its `/metrics`.
#[derive(Debug, Clone, Copy)]
struct Served {
    http: u64,
    tcp: u64,
}

/// One `flynn-router` process; killed if the test ends before it exits.
struct RouterProcess {
    name: &'static str,
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl RouterProcess {
    fn start(name: &'static str, dir: &TestDir, kubeconfig: &Path, ports: Ports) -> Self {
        let socket = dir.0.join(format!("{name}.sock"));
        let log = dir.0.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_flynn-router"))
            .args(["--http-addr", &format!("127.0.0.1:{}", ports.http)])
            .args(["--https-addr", ""])
            .args(["--admin-addr", &format!("127.0.0.1:{}", ports.admin)])
            .arg("--admin-socket")
            .arg(&socket)
            .args(["--tcp-bind-ip", "127.0.0.1"])
            .args(["--namespace", NAMESPACE])
            .args(["--no-status", "--drain-timeout", "5"])
            // The TCP Route's port is any free one (tests/ownership.rs tests the range).
            .args(["--tcp-port-range", "1024-65535"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            name,
            child,
            socket,
            log,
        }
    }

    /// `flynn-router probe --socket <its socket> <path>`: the body, or the exit status and
    /// what it printed.
    fn probe(&self, path: &str) -> Result<String, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_flynn-router"))
            .arg("probe")
            .arg("--socket")
            .arg(&self.socket)
            .arg(path)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.probe("/readyz") {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("router {} not ready: {e}\n{}", self.name, self.log())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn served(&self) -> Served {
        let metrics = self
            .probe("/metrics")
            .unwrap_or_else(|e| panic!("router {}'s metrics: {e}", self.name));
        let sum = |prefix: &str| -> u64 {
            metrics
                .lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        Served {
            http: sum(&format!(
                "flynn_router_http_requests_total{{namespace=\"{NAMESPACE}\",route=\"web\",code_class=\"2xx\"}}"
            )),
            tcp: sum(&format!(
                "flynn_router_tcp_connections_total{{namespace=\"{NAMESPACE}\",route=\"db\"}}"
            )),
        }
    }

    fn terminate(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "router {} did not exit\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- router {} log:\n{log}", self.name)
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clients that each open a new connection per request, at a steady rate, like a load
/// balancer's health checks and short-lived clients do.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    /// `clients` threads per port, each sending `rate` requests per second.
    fn start(clients: &[(u16, usize)], rate: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let interval = Duration::from_secs(1) / rate;
        let started = Instant::now();
        let threads = clients
            .iter()
            .flat_map(|&(port, n)| std::iter::repeat_n(port, n))
            .map(|port| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        match get(port) {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                if errors.len() < 5 {
                                    errors.push(format!(
                                        "port {port} at {:?}: {e}",
                                        started.elapsed()
                                    ));
                                }
                            }
                        }
                        next += interval;
                        match next.checked_duration_since(Instant::now()) {
                            Some(wait) => std::thread::sleep(wait),
                            // Behind (a slow request): no burst to catch up.
                            None => next = Instant::now(),
                        }
                    }
                    errors
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// (succeeded, failed, a few of the failures).
    fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// One request on a new connection; Ok if the backend's 200 came back whole.
fn get(port: u16) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    if answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"\r\n\r\nok\n") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "answer {:?}",
            String::from_utf8_lossy(&answer)
        )))
    }
}

/// The backend both Routes lead to: `ok` to every request.
async fn backend() -> SocketAddr {
    serve(|_req| {
        Response::new(
            Full::new(Bytes::from_static(b"ok\n"))
                .map_err(|e| match e {})
                .boxed(),
        )
    })
    .await
}

/// The fake API server (`support/fake_api.rs`) with an HTTP Route for [`HOST`], a TCP Route
/// on `tcp_port`, and an EndpointSlice of their Service naming `backend`.
async fn fake_api(backend: SocketAddr, tcp_port: u16) -> SocketAddr {
    let routes = vec![
        route(NAMESPACE, "web", RouteSpec::http("app", HOST)),
        route(
            NAMESPACE,
            "db",
            RouteSpec::tcp("app", "web", i32::from(tcp_port)),
        ),
    ];
    fake_api::fake_api(routes, vec![slice(NAMESPACE, "app", backend)]).await
}
