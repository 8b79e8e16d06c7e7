//! The router as an edge facing the internet, tried as a hostile client would: spoofed
//! forwarding headers, malformed `Host`s, a backend's framing that a strict parser would
//! refuse, and thousands of held connections. Each refusal is tested beside a valid twin.
//!
//! Needs no cluster: the router runs against a fake Kubernetes API server served here (its
//! Routes and an EndpointSlice naming backends on loopback, which the real API server
//! would refuse); in-process for the protocol tests, as the `flynn-router` binary for the
//! load test (so that its RSS and file descriptors are its own).
//!
//! `cargo test -p flynn-router --test edge`

#[path = "support/fake_api.rs"]
mod fake_api;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use fake_api::{route, serve, slice};
use flynn_crds::RouteSpec;
use flynn_router::{Config, Router, forwarded::TrustedProxies};
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const NAMESPACE: &str = "edge";
/// Forwards to the echo backend.
const SHOP: &str = "shop.test";
/// The same, with `httpsRedirect`.
const SECURE: &str = "secure.test";
/// Forwards to the backend that answers raw bytes chosen by the path.
const RAW: &str = "raw.test";

/// The forwarding headers a backend got, as response headers `x-got-<name>` (lines joined
/// with ` | `), and the names of all it got as `x-got-names` (comma-separated, in order);
/// an upgrade is answered with `101` and then echoes.
async fn echo_backend() -> SocketAddr {
    serve(|mut req: Request<Incoming>| {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")).boxed());
        let names: Vec<&str> = req.headers().iter().map(|(n, _)| n.as_str()).collect();
        resp.headers_mut().insert(
            "x-got-names",
            header::HeaderValue::from_str(&names.join(",")).unwrap(),
        );
        for name in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
            "forwarded",
            "host",
            "x-real-ip",
            "x-team-trace",
        ] {
            let all: Vec<&str> = req
                .headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            let v = header::HeaderValue::from_str(&all.join(" | ")).unwrap();
            resp.headers_mut().insert(
                header::HeaderName::try_from(format!("x-got-{name}")).unwrap(),
                v,
            );
        }
        if req.headers().contains_key(header::UPGRADE) {
            *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut().insert(
                header::UPGRADE,
                header::HeaderValue::from_static("websocket"),
            );
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("upgrade"),
            );
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
        } else {
            // Bodies are read (slow bodies are the router's business).
            tokio::spawn(async move {
                let _ = req.into_body().collect().await;
            });
        }
        resp
    })
    .await
}

/// A backend that answers each request with raw bytes chosen by its path (see [`FRAMINGS`]).
async fn raw_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&got);
                let path = line
                    .split(' ')
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/');
                let answer = FRAMINGS
                    .iter()
                    .find(|(name, ..)| *name == path)
                    .map_or("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", |f| {
                        f.1
                    });
                let _ = s.write_all(answer.as_bytes()).await;
                // One response per connection: the router must not pool a broken one.
                let _ = s.shutdown().await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

/// (path, the backend's answer, whether the router must refuse it with a 502). Each
/// refused framing sits next to its valid twin.
const FRAMINGS: &[(&str, &str, bool)] = &[
    (
        "trailer-bare-lf",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-a: 1\nx-b: 2\r\n\r\n",
        true,
    ),
    (
        "trailer-crlf",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-a: 1\r\nx-b: 2\r\n\r\n",
        false,
    ),
    (
        "size-bare-lf",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        true,
    ),
    (
        "size-crlf",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        false,
    ),
    (
        "ext-invalid",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;a=b c\r\nabc\r\n0\r\n\r\n",
        true,
    ),
    (
        "ext-valid",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;a=\"b c\"\r\nabc\r\n0\r\n\r\n",
        false,
    ),
    (
        "trailer-fold",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-a: 1\r\n folded\r\n\r\n",
        true,
    ),
    (
        "head-fold",
        "HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 3\r\n\r\nabc",
        true,
    ),
    (
        "head-plain",
        "HTTP/1.1 200 OK\r\nx-a: 1 folded\r\ncontent-length: 3\r\n\r\nabc",
        false,
    ),
    (
        "cl-te",
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        true,
    ),
    (
        "te-only",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        false,
    ),
    (
        "cl-conflict",
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc",
        true,
    ),
    (
        "cl-same",
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc",
        false,
    ),
];

/// The fake API server (`support/fake_api.rs`) with the three Routes: [`SHOP`] and
/// [`SECURE`] to `echo`, [`RAW`] to `raw`.
async fn fake_api(echo: SocketAddr, raw: SocketAddr) -> SocketAddr {
    let mut secure = RouteSpec::http("shop", SECURE);
    if let Some(http) = secure.http.as_mut() {
        http.https_redirect = true;
    }
    let routes = vec![
        route(NAMESPACE, "shop", RouteSpec::http("shop", SHOP)),
        route(NAMESPACE, "secure", secure),
        route(NAMESPACE, "raw", RouteSpec::http("raw", RAW)),
    ];
    let slices = vec![slice(NAMESPACE, "shop", echo), slice(NAMESPACE, "raw", raw)];
    fake_api::fake_api(routes, slices).await
}

struct Edge {
    router: Router,
    cert: CertificateDer<'static>,
}

/// A router in-process against the fake API, its listeners on loopback.
async fn edge(tweak: impl FnOnce(&mut Config)) -> Edge {
    let api = fake_api(echo_backend().await, raw_backend().await).await;
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{api}").parse().unwrap()))
            .unwrap();
    let c = rcgen::generate_simple_self_signed(vec![SHOP.to_owned()]).unwrap();
    let default_cert = flynn_router::tls::certified_key(
        c.cert.pem().as_bytes(),
        c.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let lo = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut config = Config {
        http_addr: SocketAddr::new(lo, 0),
        https_addr: Some(SocketAddr::new(lo, 0)),
        admin_addr: SocketAddr::new(lo, 0),
        tcp_bind_ip: lo,
        namespace: Some(NAMESPACE.to_owned()),
        default_cert: Some(default_cert),
        report_status: false,
        sticky_key: b"test".to_vec(),
        ..Config::default()
    };
    tweak(&mut config);
    let router = Router::start(client, config).await.unwrap();
    assert!(
        router
            .wait_for(Duration::from_secs(20), |t| t
                .http
                .lookup(RAW, "/")
                .is_some())
            .await,
        "the router never served the fake API's Routes"
    );
    Edge {
        router,
        cert: c.cert.der().clone(),
    }
}

/// One HTTP/2 client connection; the handle of the task driving it.
type H2c = (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
);

impl Edge {
    /// An HTTP/2 connection without TLS (the router needs `server.h2c`).
    async fn h2c(&self) -> H2c {
        let tcp = TcpStream::connect(self.router.http_addr).await.unwrap();
        let (tx, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await
        .unwrap();
        (tx, tokio::spawn(conn))
    }

    async fn tls(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = TcpStream::connect(self.router.https_addr.unwrap())
            .await
            .unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(SHOP).unwrap(), tcp)
            .await
            .unwrap()
    }
}

/// A response as read off the wire: status, headers (lower-case names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    raw: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Writes `request` on a new connection and reads one response head (and what follows
/// within a moment).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, request: &[u8]) -> Answer {
    io.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(Duration::from_millis(300)), io.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            // Quiet for a moment after a complete head: done.
            Err(_) if got.windows(4).any(|w| w == b"\r\n\r\n") => break,
            Err(_) if left.is_zero() => break,
            Err(_) => {}
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let raw = String::from_utf8_lossy(&got).into_owned();
    match resp.parse(&got) {
        Ok(httparse::Status::Complete(_)) => Answer {
            status: resp.code.unwrap(),
            headers: resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            raw,
        },
        _ => Answer {
            status: 0,
            headers: Vec::new(),
            raw,
        },
    }
}

async fn plain(edge: &Edge, request: &str) -> Answer {
    let tcp = TcpStream::connect(edge.router.http_addr).await.unwrap();
    exchange(tcp, request.as_bytes()).await
}

const SPOOF: &str = "X-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\n\
    X-Forwarded-Proto: https\r\nX-Forwarded-Host: bank.test\r\nX-Forwarded-Port: 8443\r\n\
    Forwarded: for=6.6.6.6;proto=https\r\n";

/// A request with `SPOOF`'s headers on every way it reaches a backend: the own HTTP/1
/// server, hyper's (a body, HTTP/1.0), an upgrade, and TLS (HTTP/2: its own tests).
async fn forwarded_headers(edge: &Edge) -> Vec<(&'static str, Answer)> {
    forwarded_with(edge, SPOOF).await
}

/// [`forwarded_headers`] with `SPOOF` = `spoof` (header lines, each ending in CRLF).
async fn forwarded_with(edge: &Edge, spoof: &str) -> Vec<(&'static str, Answer)> {
    let mut answers = Vec::new();
    for (path, request) in [
        (
            "own h1",
            format!("GET / HTTP/1.1\r\nHost: {SHOP}\r\n{spoof}\r\n"),
        ),
        (
            "hyper, body",
            format!("POST / HTTP/1.1\r\nHost: {SHOP}\r\n{spoof}content-length: 2\r\n\r\nhi"),
        ),
        (
            "hyper, 1.0",
            format!("GET / HTTP/1.0\r\nHost: {SHOP}\r\n{spoof}\r\n"),
        ),
        (
            "upgrade",
            format!(
                "GET /ws HTTP/1.1\r\nHost: {SHOP}\r\n{spoof}connection: upgrade\r\n\
                 upgrade: websocket\r\n\r\n"
            ),
        ),
    ] {
        answers.push((path, plain(edge, &request).await));
    }
    let request = format!("GET / HTTP/1.1\r\nHost: {SHOP}\r\n{spoof}\r\n");
    answers.push(("tls", exchange(edge.tls().await, request.as_bytes()).await));
    answers
}

/// Client-supplied forwarding headers are replaced from an untrusted peer, on every path;
/// from a trusted proxy the chain is extended and its proto/host/port kept.
#[tokio::test]
async fn spoofed_forwarding_headers_are_replaced_unless_from_a_trusted_proxy() {
    let untrusted = edge(|_| {}).await;
    for (path, a) in forwarded_headers(&untrusted).await {
        assert!(a.status == 200 || a.status == 101, "{path}: {}", a.raw);
        let tls = path == "tls";
        let port = if tls {
            untrusted.router.https_addr.unwrap().port()
        } else {
            untrusted.router.http_addr.port()
        };
        let proto = if tls { "https" } else { "http" };
        assert_eq!(
            a.header("x-got-x-forwarded-for"),
            Some("127.0.0.1"),
            "{path}"
        );
        assert_eq!(a.header("x-got-x-forwarded-proto"), Some(proto), "{path}");
        assert_eq!(a.header("x-got-x-forwarded-host"), Some(SHOP), "{path}");
        assert_eq!(
            a.header("x-got-x-forwarded-port"),
            Some(port.to_string().as_str()),
            "{path}"
        );
        let forwarded = format!("for=127.0.0.1;host=\"{SHOP}\";proto={proto}");
        assert_eq!(
            a.header("x-got-forwarded"),
            Some(forwarded.as_str()),
            "{path}"
        );
    }
    untrusted.router.shutdown(Duration::from_secs(1)).await;

    // The twin: the same requests from a trusted proxy.
    let trusted = edge(|c| {
        c.proxy.trusted_proxies = TrustedProxies::new(["127.0.0.0/8".parse().unwrap()]);
    })
    .await;
    for (path, a) in forwarded_headers(&trusted).await {
        assert!(a.status == 200 || a.status == 101, "{path}: {}", a.raw);
        let proto = if path == "tls" { "https" } else { "http" };
        assert_eq!(
            a.header("x-got-x-forwarded-for"),
            Some("6.6.6.6, 7.7.7.7, 127.0.0.1"),
            "{path}"
        );
        assert_eq!(a.header("x-got-x-forwarded-proto"), Some("https"), "{path}");
        assert_eq!(
            a.header("x-got-x-forwarded-host"),
            Some("bank.test"),
            "{path}"
        );
        assert_eq!(a.header("x-got-x-forwarded-port"), Some("8443"), "{path}");
        let forwarded =
            format!("for=6.6.6.6;proto=https, for=127.0.0.1;host=\"{SHOP}\";proto={proto}");
        assert_eq!(
            a.header("x-got-forwarded"),
            Some(forwarded.as_str()),
            "{path}"
        );
    }
    trusted.router.shutdown(Duration::from_secs(1)).await;
}

/// Headers other than the forwarding ones that backends read the client from (frameworks,
/// CGI/PHP/WSGI/Rack, CDNs' conventions), sent by a client to pose as someone else.
const CLAIMS: &[&str] = &[
    "X-Real-IP",
    "True-Client-IP",
    "Client-IP",
    "X-Forwarded-Ssl",
    "X-Forwarded-Scheme",
    "X-Client-IP",
    "X-Cluster-Client-IP",
    "X-Original-Forwarded-For",
    "X-Forwarded",
    "Forwarded-For",
    "CF-Connecting-IP",
    "Fastly-Client-IP",
    "X-Forwarded-Prefix",
];

/// Names with `_`: CGI, PHP, WSGI and Rack read `X_Forwarded_For` as `HTTP_X_FORWARDED_FOR`.
const UNDERSCORED: &[&str] = &["X_Forwarded_For", "X_Real_IP", "X_Team_Trace"];

/// The attacking head: the forwarding headers of `SPOOF`, every claim and underscore name
/// (each `6.6.6.6`), and the valid twin, an ordinary custom header `X-Team-Trace: abc`.
fn claims_head() -> String {
    let mut head = SPOOF.to_owned();
    for name in CLAIMS.iter().chain(UNDERSCORED) {
        head.push_str(&format!("{name}: 6.6.6.6\r\n"));
    }
    head.push_str("X-Team-Trace: abc\r\n");
    head
}

/// The header names a backend got (the `x-got-names` of the echo backend).
fn got_names(a: &Answer) -> Vec<String> {
    a.header("x-got-names")
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// From an untrusted client, none of the claims or underscore names reach the backend, on
/// any path, and `X-Real-IP` is the peer; an ordinary custom header does. The twin: from a
/// trusted proxy the claims are passed on (as its `X-Forwarded-Proto` is), `X-Real-IP` is
/// the client its `X-Forwarded-For` names, and underscore names are still dropped.
#[tokio::test]
async fn client_identity_claims_never_reach_the_backend_unless_from_a_trusted_proxy() {
    let head = claims_head();
    let untrusted = edge(|c| c.server.h2c = true).await;
    let mut answers = forwarded_with(&untrusted, &head).await;
    // HTTP/2 (h2c) too.
    {
        let (mut tx, _conn) = untrusted.h2c().await;
        let mut req = Request::builder().uri(format!("http://{SHOP}/"));
        for name in CLAIMS.iter().chain(UNDERSCORED) {
            req = req.header(*name, "6.6.6.6");
        }
        let req = req
            .header("x-team-trace", "abc")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        answers.push((
            "h2c",
            Answer {
                status: resp.status().as_u16(),
                headers,
                raw: String::new(),
            },
        ));
    }
    for (path, a) in &answers {
        assert!(a.status == 200 || a.status == 101, "{path}: {}", a.raw);
        let names = got_names(a);
        for name in CLAIMS.iter().chain(UNDERSCORED) {
            let name = name.to_ascii_lowercase();
            let count = names.iter().filter(|n| **n == name).count();
            let want = usize::from(name == "x-real-ip");
            assert_eq!(count, want, "{path}: {name} in {names:?}");
        }
        assert_eq!(a.header("x-got-x-real-ip"), Some("127.0.0.1"), "{path}");
        assert_eq!(
            a.header("x-got-x-forwarded-for"),
            Some("127.0.0.1"),
            "{path}"
        );
        assert_eq!(a.header("x-got-x-team-trace"), Some("abc"), "{path}");
    }
    untrusted.router.shutdown(Duration::from_secs(1)).await;

    let trusted = edge(|c| {
        c.proxy.trusted_proxies = TrustedProxies::new(["127.0.0.0/8".parse().unwrap()]);
    })
    .await;
    for (path, a) in forwarded_with(&trusted, &head).await {
        assert!(a.status == 200 || a.status == 101, "{path}: {}", a.raw);
        let names = got_names(&a);
        for name in CLAIMS {
            let name = name.to_ascii_lowercase();
            assert!(names.contains(&name), "{path}: {name} not in {names:?}");
        }
        for name in UNDERSCORED {
            let name = name.to_ascii_lowercase();
            assert!(!names.contains(&name), "{path}: {name} in {names:?}");
        }
        assert_eq!(
            a.header("x-got-x-forwarded-for"),
            Some("6.6.6.6, 7.7.7.7, 127.0.0.1"),
            "{path}"
        );
        // The proxy appended 7.7.7.7 (its client); 6.6.6.6 is what that client claimed.
        assert_eq!(a.header("x-got-x-real-ip"), Some("7.7.7.7"), "{path}");
        assert_eq!(a.header("x-got-x-team-trace"), Some("abc"), "{path}");
    }
    trusted.router.shutdown(Duration::from_secs(1)).await;
}

/// HTTP/2 (h2c, served by hyper): the same replacement.
#[tokio::test]
async fn http2_requests_get_the_same_forwarding_headers() {
    let edge = edge(|c| c.server.h2c = true).await;
    let (mut tx, _conn) = edge.h2c().await;
    let req = Request::builder()
        .uri(format!("http://{SHOP}/"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-forwarded-host", "bank.test")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["x-got-x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-got-x-forwarded-host"], SHOP);
    assert_eq!(h["x-got-host"], SHOP);
    assert_eq!(
        h["x-got-forwarded"],
        format!("for=127.0.0.1;host=\"{SHOP}\";proto=http").as_str()
    );
    // An :authority another Host header contradicts: refused, not routed by either.
    let req = Request::builder()
        .uri(format!("http://{SHOP}/"))
        .header("host", "bank.test")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&body).contains("bank"), "{body:?}");
    edge.router.shutdown(Duration::from_secs(1)).await;
}

/// HTTP/2 has no idle limit of its own: a connection that sends nothing for
/// `header_timeout` gets GOAWAY and is closed; its twin, busy all along, stays open.
#[tokio::test]
async fn idle_http2_connections_are_closed() {
    let edge = edge(|c| {
        c.server.h2c = true;
        c.server.header_timeout = Duration::from_millis(800);
    })
    .await;
    let connect = || edge.h2c();
    let get = || {
        Request::builder()
            .uri(format!("http://{SHOP}/"))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap()
    };
    let (mut idle, idle_conn) = connect().await;
    let (mut busy, busy_conn) = connect().await;
    assert_eq!(idle.send_request(get()).await.unwrap().status(), 200);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2000) {
        assert_eq!(busy.send_request(get()).await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        idle_conn.is_finished(),
        "the idle HTTP/2 connection is still open"
    );
    assert!(
        !busy_conn.is_finished(),
        "the busy HTTP/2 connection was closed"
    );
    edge.router.shutdown(Duration::from_secs(1)).await;
}

/// RFC 9112 3.2: a missing, repeated or malformed Host, or an absolute-form target that
/// names another authority, is a 400 on both servers, and the value is never reflected
/// (the HTTPS redirect's Location, the 404 body, the 400 body); each beside its valid twin.
#[tokio::test]
async fn malformed_hosts_are_refused_and_never_reflected() {
    let edge = edge(|_| {}).await;
    let evil = "evil.test/<script>";
    for (bad, good) in [
        // The redirect route: the twin gets a Location naming only the host.
        (
            format!("GET /x HTTP/1.1\r\nHost: {evil}\r\n\r\n"),
            format!("GET /x HTTP/1.1\r\nHost: {SECURE}\r\n\r\n"),
        ),
        (
            format!("GET /x HTTP/1.1\r\nHost: {SECURE}\r\nHost: {evil}\r\n\r\n"),
            format!("GET /x HTTP/1.1\r\nHost: {SECURE}\r\nX-Host: {evil}\r\n\r\n"),
        ),
        (
            "GET /x HTTP/1.1\r\n\r\n".to_owned(),
            format!("GET /x HTTP/1.1\r\nHost: {SECURE}\r\n\r\n"),
        ),
        // Absolute-form (hyper's server): the authority must be the Host.
        (
            format!("GET http://{SECURE}/x HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
            format!("GET http://{SECURE}/x HTTP/1.1\r\nHost: {SECURE}\r\n\r\n"),
        ),
        // With a body (hyper's server).
        (
            format!(
                "POST /x HTTP/1.1\r\nHost: {evil}\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            format!(
                "POST /x HTTP/1.1\r\nHost: {SECURE}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
    ] {
        let a = plain(&edge, &bad).await;
        assert_eq!(a.status, 400, "{bad:?}: {}", a.raw);
        assert!(a.header("location").is_none(), "{bad:?}: {}", a.raw);
        assert!(!a.raw.contains("evil"), "reflected: {}", a.raw);
        assert!(!a.raw.contains("<script>"), "reflected: {}", a.raw);
        assert_eq!(a.header("connection"), Some("close"), "{}", a.raw);
        let a = plain(&edge, &good).await;
        assert_eq!(a.status, 308, "{good:?}: {}", a.raw);
        assert_eq!(
            a.header("location"),
            Some(format!("https://{SECURE}/x").as_str()),
            "{good:?}"
        );
        assert!(!a.raw.contains("evil"), "{}", a.raw);
    }
    // No route: the 404 names a valid host only.
    let a = plain(&edge, "GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n").await;
    assert_eq!(a.status, 404, "{}", a.raw);
    let a = plain(&edge, "GET / HTTP/1.1\r\nHost: \"nowhere\"\r\n\r\n").await;
    assert_eq!(a.status, 400, "{}", a.raw);
    assert!(!a.raw.contains("nowhere"), "{}", a.raw);
    edge.router.shutdown(Duration::from_secs(1)).await;
}

/// A backend's framing that a strict parser would not accept from a client is refused with
/// a 502, not forwarded; its valid twin is forwarded whole.
#[tokio::test]
async fn backend_framing_a_strict_parser_refuses_is_a_502() {
    let edge = edge(|_| {}).await;
    for (path, answer, refused) in FRAMINGS {
        for method in ["GET", "POST"] {
            // The own server and client (GET), and hyper's (a request with a body).
            let request = if method == "GET" {
                format!("GET /{path} HTTP/1.1\r\nHost: {RAW}\r\n\r\n")
            } else {
                format!("POST /{path} HTTP/1.1\r\nHost: {RAW}\r\ncontent-length: 1\r\n\r\nx")
            };
            let a = plain(&edge, &request).await;
            let head_refused = !answer.contains("\r\n\r\n3");
            if !refused {
                assert_eq!(a.status, 200, "{path} ({method}): {}", a.raw);
                assert!(a.raw.contains("abc"), "{path}: {}", a.raw);
                if answer.contains("0\r\n") {
                    assert!(a.raw.ends_with("0\r\n\r\n") || a.raw.ends_with("x-b: 2\r\n\r\n"));
                }
            } else if method == "GET" || head_refused {
                // Nothing of it was sent yet: a 502 that says why.
                assert_eq!(a.status, 502, "{path} ({method}): {}", a.raw);
                assert!(a.raw.contains("502 Bad Gateway: backend"), "{}", a.raw);
            } else {
                // hyper's client and server (a request with a body): hyper decodes the body
                // and its server encodes it anew, so no framing is forwarded as received:
                // its decoder refuses the body (the client's connection closes before the
                // body's end) or, for an extension it skips unread, the client gets the
                // body without it.
                for attack in ["x-b", "folded", ";a=", "3\nabc"] {
                    assert!(!a.raw.contains(attack), "{path}: forwarded {}", a.raw);
                }
            }
        }
    }
    edge.router.shutdown(Duration::from_secs(1)).await;
}

/// The admin listener is on loopback unless told otherwise, and a client that sends half
/// a head is closed after the admin head timeout, while a probe is answered.
#[tokio::test]
async fn the_admin_listener_is_loopback_and_times_out_slow_heads() {
    assert!(Config::default().admin_addr.ip().is_loopback());
    let edge = edge(|_| {}).await;
    let mut slow = TcpStream::connect(edge.router.admin_addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let start = Instant::now();
    let a = exchange(
        TcpStream::connect(edge.router.admin_addr).await.unwrap(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(15), slow.read(&mut buf))
        .await
        .expect("the slow admin client was never closed")
        .unwrap_or(0);
    let waited = start.elapsed();
    assert!(
        n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        waited >= flynn_router::admin::HEAD_TIMEOUT - Duration::from_millis(500),
        "closed after {waited:?}"
    );
    edge.router.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------
// Held connections, against the binary.

/// The router binary against the fake API, with small limits.
struct Process {
    child: Child,
    http: SocketAddr,
    dir: PathBuf,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (RSS in KiB, open file descriptors) of the router process.
    fn usage(&self) -> (u64, usize) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count();
        (rss, fds)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_binary(api: SocketAddr, max_connections: usize) -> Process {
    let dir = std::env::temp_dir().join(format!("flynn-router-edge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    fake_api::write_kubeconfig(&kubeconfig, api);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let http: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_flynn-router"))
        .args(["--http-addr", &http.to_string()])
        .args(["--https-addr", "", "--admin-addr", "127.0.0.1:0"])
        .args(["--namespace", NAMESPACE, "--no-status"])
        .args(["--max-connections", &max_connections.to_string()])
        .args(["--header-timeout", "3", "--body-timeout", "3"])
        .args(["--body-min-rate", "1024", "--tunnel-idle-timeout", "3"])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let process = Process { child, http, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(tcp) = TcpStream::connect(http).await {
            let a = exchange(
                tcp,
                format!("GET / HTTP/1.1\r\nHost: {SHOP}\r\n\r\n").as_bytes(),
            )
            .await;
            if a.status == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the router binary never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    process
}

/// Whether the router closed `conn` (EOF or reset) within `wait`.
async fn closed(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or the like: read on to the close.
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// 3,000 idle connections, 100 slowloris heads, 100 slow bodies and 20 idle websockets
/// against a router limited to 2,000 connections: the excess is accepted and closed at
/// once; the router's descriptors stay under the limit; once the held ones hit their
/// timeouts (3 s) the router has closed them, frees their descriptors and memory, and
/// answers a normal request. Figures are printed (`--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connections_are_shed_and_freed() {
    // This test process holds the client side of every connection.
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
        assert!(
            hard >= 8192,
            "RLIMIT_NOFILE hard limit {hard}: raise it (ulimit -Hn)"
        );
    }
    const LIMIT: usize = 2000;
    const IDLE: usize = 3000;
    let api = fake_api(echo_backend().await, raw_backend().await).await;
    let router = start_binary(api, LIMIT).await;
    let before = router.usage();

    // Slow clients first (they are under the limit), then the idle flood.
    let mut slow_heads = Vec::new();
    for _ in 0..100 {
        let mut c = TcpStream::connect(router.http).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: sh").await.unwrap();
        slow_heads.push(c);
    }
    let mut slow_bodies = Vec::new();
    for _ in 0..100 {
        let mut c = TcpStream::connect(router.http).await.unwrap();
        c.write_all(
            format!("POST / HTTP/1.1\r\nHost: {SHOP}\r\ncontent-length: 100000\r\n\r\nx")
                .as_bytes(),
        )
        .await
        .unwrap();
        slow_bodies.push(c);
    }
    let mut tunnels = Vec::new();
    for _ in 0..20 {
        let mut c = TcpStream::connect(router.http).await.unwrap();
        c.write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {SHOP}\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 101"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        tunnels.push(c);
    }
    let flood_start = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(router.http).await.unwrap());
    }
    // Keep the slow ones trickling: a byte per 500 ms each.
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            for c in slow_heads.iter_mut().chain(slow_bodies.iter_mut()) {
                let _ = c.write_all(b"x").await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (slow_heads, slow_bodies)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = router.usage();

    // The excess was accepted and closed at once.
    let mut shed = 0;
    for c in idle.iter_mut().rev().take(1200) {
        if closed(c, Duration::from_millis(5)).await {
            shed += 1;
        }
    }
    let held = LIMIT - 220;
    assert!(
        shed >= IDLE - held - 50,
        "only {shed} of the {} connections over the limit were closed",
        IDLE - held
    );
    // No descriptor exhaustion: at most the limit, plus the listeners, the API watches and
    // the tunnels' backend sides.
    assert!(
        peak.1 <= LIMIT + 200,
        "{} descriptors open for a limit of {LIMIT}",
        peak.1
    );

    // After the timeouts (3 s, measured from the flood), every held connection is closed
    // by the router.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(flood_start.elapsed())).await;
    let mut still_open = 0;
    for c in idle.iter_mut().chain(tunnels.iter_mut()) {
        if !closed(c, Duration::from_millis(200)).await {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "idle connections and tunnels left open");
    let (mut slow_heads, mut slow_bodies) = trickle.await.unwrap();
    for (what, conns) in [
        ("slow head", &mut slow_heads),
        ("slow body", &mut slow_bodies),
    ] {
        for c in conns.iter_mut() {
            assert!(
                closed(c, Duration::from_secs(3)).await,
                "a {what} kept its connection"
            );
        }
    }
    // And a normal request is answered.
    let a = exchange(
        TcpStream::connect(router.http).await.unwrap(),
        format!("GET / HTTP/1.1\r\nHost: {SHOP}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    drop((idle, tunnels, slow_heads, slow_bodies));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = router.usage();
    println!(
        "router RSS/fds: before {} KiB / {}, with {IDLE} idle + 220 slow held {} KiB / {}, \
         after the timeouts {} KiB / {}; {shed} connections shed at once",
        before.0, before.1, peak.0, peak.1, after.0, after.1
    );
    assert!(
        after.1 <= before.1 + 20,
        "descriptors not given back: {} before, {} after",
        before.1,
        after.1
    );
}
