//! Test support: backends in a network namespace of the test's own, EndpointSlices naming
//! them, a router in-process, and a small HTTP client.
//!
//! The API server refuses EndpointSlice addresses on loopback, so backends listen on
//! addresses in `10.77.<n>.0/24` inside a namespace that each test creates (`ip netns add` +
//! a veth pair) and deletes when dropped. A backend's socket is created by a thread that has
//! entered the namespace; the socket stays there while Tokio drives it from any thread.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use flynn_router::{Config, Router};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a veth pair to the host: host side `10.77.<n>.1/24`.
pub struct Netns {
    pub name: String,
    subnet: u8,
    next: AtomicUsize,
}

impl Netns {
    pub fn create() -> Self {
        let used = String::from_utf8(
            Command::new("ip")
                .args(["-4", "-o", "addr"])
                .output()
                .expect("ip addr")
                .stdout,
        )
        .unwrap();
        // Tests of one process take turns through the subnets from a random start; other
        // processes' subnets show up in `ip addr`.
        static NEXT: std::sync::OnceLock<AtomicUsize> = std::sync::OnceLock::new();
        let next = NEXT.get_or_init(|| AtomicUsize::new(rand::random_range(0..254)));
        let subnet = loop {
            let n = (next.fetch_add(1, Ordering::SeqCst) % 254 + 1) as u8;
            if !used.contains(&format!("10.77.{n}.")) {
                break n;
            }
        };
        let tag: u32 = rand::random_range(0..0xff_ffff);
        let name = format!("flrt-{tag:06x}");
        let host_if = format!("flrt{tag:06x}h");
        ip(&["netns", "add", &name]);
        let ns = Self {
            name: name.clone(),
            subnet,
            next: AtomicUsize::new(10),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("10.77.{subnet}.1/24"),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ns
    }

    /// A fresh address inside the namespace.
    pub fn new_ip(&self) -> Ipv4Addr {
        let k = self.next.fetch_add(1, Ordering::SeqCst) as u8;
        let addr = Ipv4Addr::new(10, 77, self.subnet, k);
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        addr
    }

    /// A listener on `addr` inside the namespace.
    pub fn listen(&self, addr: SocketAddr) -> TcpListener {
        let path = format!("/run/netns/{}", self.name);
        let std = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            // The address was just added: wait for DAD-free IPv4 to be usable.
            let l = std::net::TcpListener::bind(addr).expect("bind in netns");
            l.set_nonblocking(true).unwrap();
            l
        })
        .join()
        .unwrap();
        TcpListener::from_std(std).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with it the host end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A test HTTP backend: answers `<name>` with `x-backend: <name>`; `/headers` answers the
/// request headers as JSON; `/slow` waits 500 ms; an Upgrade request gets `101` and an echo.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Backend {
    pub async fn http(ns: &Netns, name: &str, port: u16) -> Arc<Self> {
        let addr = SocketAddr::new(IpAddr::V4(ns.new_ip()), port);
        let listener = ns.listen(addr);
        let hits = Arc::new(AtomicUsize::new(0));
        let (n, h) = (name.to_owned(), hits.clone());
        let task = tokio::spawn(async move {
            // Connections live in the set: aborting the accept task kills them all, like a
            // crashed process.
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, h) = (n.clone(), h.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(n.clone(), h.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Arc::new(Self {
            name: name.to_owned(),
            addr,
            hits,
            task: Mutex::new(Some(task)),
        })
    }

    /// A TCP echo backend.
    pub async fn echo(ns: &Netns, name: &str, port: u16) -> Arc<Self> {
        let addr = SocketAddr::new(IpAddr::V4(ns.new_ip()), port);
        let listener = ns.listen(addr);
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                h.fetch_add(1, Ordering::SeqCst);
                conns.spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Arc::new(Self {
            name: name.to_owned(),
            addr,
            hits,
            task: Mutex::new(Some(task)),
        })
    }

    /// A backend that answers one request per connection, keeps the connection open, and
    /// closes it when the next request arrives, without answering: a keep-alive close that
    /// crosses the proxy's next request (an idle timeout, a process exiting).
    pub async fn one_request_per_connection(ns: &Netns, name: &str, port: u16) -> Arc<Self> {
        let addr = SocketAddr::new(IpAddr::V4(ns.new_ip()), port);
        let listener = ns.listen(addr);
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let body = name.to_owned();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, body) = (h.clone(), body.clone());
                conns.spawn(async move {
                    if read_head(&mut stream).await.is_none() {
                        return;
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-backend: {body}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    // The next request is read, then the connection closes unanswered.
                    let _ = read_head(&mut stream).await;
                });
            }
        });
        Arc::new(Self {
            name: name.to_owned(),
            addr,
            hits,
            task: Mutex::new(Some(task)),
        })
    }

    /// Kills the backend: its listener and every connection close.
    pub fn kill(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads one request head (up to the blank line); `None` when the connection ends first.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

async fn handle(
    name: String,
    hits: Arc<AtomicUsize>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    if req.headers().contains_key(http::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Full::new(Bytes::new()))
            .unwrap();
        return Ok(resp);
    }
    let body = match req.uri().path() {
        "/headers" => {
            let h: BTreeMap<String, String> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            serde_json::to_string(&h).unwrap()
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            name.clone()
        }
        _ => name.clone(),
    };
    Ok(Response::builder()
        .header("x-backend", &name)
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

/// Creates or replaces EndpointSlice `name` for Service `service`: `(addr, ready)` pairs, all
/// on `port`.
pub async fn put_slice(
    api: &Api<EndpointSlice>,
    name: &str,
    service: &str,
    port: u16,
    endpoints: &[(IpAddr, bool)],
) {
    let eps: Vec<_> = endpoints
        .iter()
        .map(|(ip, ready)| json!({"addresses": [ip.to_string()], "conditions": {"ready": ready}}))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": "flynn-router-tests",
        }},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": port, "protocol": "TCP"}],
        "endpoints": eps,
    });
    api.patch(
        name,
        &PatchParams::apply("flynn-router-tests").force(),
        &Patch::Apply(&slice),
    )
    .await
    .unwrap();
}

/// A router on loopback ephemeral ports, watching only `namespace`.
pub async fn router(client: kube::Client, namespace: &str) -> Router {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let config = Config {
        http_addr: SocketAddr::new(lo, 0),
        https_addr: Some(SocketAddr::new(lo, 0)),
        admin_addr: SocketAddr::new(lo, 0),
        tcp_bind_ip: lo,
        namespace: Some(namespace.to_owned()),
        sticky_key: b"test".to_vec(),
        ..Config::default()
    };
    let r = Router::start(client, config).await.unwrap();
    assert!(
        r.wait_for(Duration::from_secs(30), |_| true).await,
        "router never became ready"
    );
    r
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One HTTP/1.1 client connection.
pub struct H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl H1 {
    pub async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        Self(tx)
    }

    pub async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Got {
        let mut b = Request::get(path).header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.0.ready().await.unwrap();
        let resp = self
            .0
            .send_request(b.body(Empty::new()).unwrap())
            .await
            .unwrap();
        collect(resp).await
    }
}

pub async fn collect(resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// One request on a new connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Got {
    H1::connect(addr).await.get(host, path, &[]).await
}

/// Polls until `f` holds (the router follows the API server asynchronously).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
