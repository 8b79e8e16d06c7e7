//! The router against the local cluster's API server: Routes and EndpointSlices are created
//! for real, backends listen in a network namespace the test creates, and traffic goes
//! through an in-process router watching only the test's namespace.

mod support;

use std::{
    future::Future, net::SocketAddr, panic::AssertUnwindSafe, sync::Arc, sync::atomic::Ordering,
    time::Duration,
};

use bytes::Bytes;
use flynn_crds::{Route, RouteSpec, conditions};
use flynn_e2e::{TestNamespace, install_flynn_crds};
use futures::FutureExt;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::{core::v1::Secret, discovery::v1::EndpointSlice};
use kube::api::{DeleteParams, PostParams};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn setup(test: &str) -> TestNamespace {
    let ns = TestNamespace::create(test).await;
    install_flynn_crds(ns.client()).await.unwrap();
    ns
}

async fn create_route(ns: &TestNamespace, name: &str, spec: RouteSpec) {
    ns.api::<Route>()
        .create(&PostParams::default(), &Route::new(name, spec))
        .await
        .unwrap();
}

/// A router serving `domain` from `app`'s web Service, whose endpoints are `backends`;
/// returns once the first request is answered with 200.
async fn serve_app(
    ns: &TestNamespace,
    domain: &str,
    backends: &[&Backend],
) -> flynn_router::Router {
    let eps: Vec<_> = backends.iter().map(|b| (b.addr.ip(), true)).collect();
    put_slice(&ns.api(), "app-web-1", "app-web", 8080, &eps).await;
    let router = router(ns.client().clone(), ns.name()).await;
    create_route(ns, "app", RouteSpec::http("app", domain)).await;
    let addr = router.http_addr;
    eventually(&format!("{domain} is served"), || async {
        get(addr, domain, "/").await.status == 200
    })
    .await;
    router
}

fn http_spec(app: &str, domain: &str, path: &str) -> RouteSpec {
    let mut spec = RouteSpec::http(app, domain);
    spec.http.as_mut().unwrap().path = path.to_owned();
    spec
}

#[tokio::test]
async fn http_routes_follow_routes_and_endpoints_live() {
    let ns = setup("router-http").await;
    let net = Netns::create();
    let a = Backend::http(&net, "a", 8080).await;
    let b = Backend::http(&net, "b", 8080).await;
    let slices = ns.api::<EndpointSlice>();
    let router = router(ns.client().clone(), ns.name()).await;
    let addr = router.http_addr;

    // No route: a clear 404.
    let got = get(addr, "nothing.test", "/").await;
    assert_eq!(got.status, 404);
    assert!(got.body.contains("no route"), "{}", got.body);

    // A Route to shop's web process, whose Service shop-web has endpoint a.
    put_slice(
        &slices,
        "shop-web-1",
        "shop-web",
        8080,
        &[(a.addr.ip(), true)],
    )
    .await;
    create_route(&ns, "shop", http_spec("shop", "shop.test", "/")).await;
    eventually("shop.test serves a", || async {
        get(addr, "shop.test", "/").await.body == "a"
    })
    .await;

    // Forwarding headers reach the backend.
    let got = get(addr, "Shop.Test:80", "/headers").await;
    let h: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-port"], addr.port().to_string());
    assert_eq!(h["x-request-id"].as_str().unwrap().len(), 32);
    assert!(h["x-request-start"].as_str().unwrap().starts_with("t="));
    let mut c = H1::connect(addr).await;
    let got = c
        .get("shop.test", "/headers", &[("x-request-id", "given-id")])
        .await;
    assert!(
        got.body.contains("\"x-request-id\":\"given-id\""),
        "{}",
        got.body
    );

    // A longer prefix to another app with no endpoints: 503 with a clear body; the rest of
    // the host still goes to shop.
    create_route(&ns, "api", http_spec("api", "shop.test", "/api")).await;
    eventually("shop.test/api is routed", || async {
        get(addr, "shop.test", "/api/x").await.status == 503
    })
    .await;
    let got = get(addr, "shop.test", "/api/x").await;
    assert!(got.body.contains("no ready endpoint"), "{}", got.body);
    assert_eq!(get(addr, "shop.test", "/apis").await.body, "a");

    // Endpoints appear: traffic flows, on the same keep-alive client connection.
    put_slice(
        &slices,
        "api-web-1",
        "api-web",
        8080,
        &[(b.addr.ip(), true)],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.get("shop.test", "/api/x", &[]).await.body != "b" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shop.test/api never served b"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Endpoints change: shop moves from a to b; a not-ready endpoint gets nothing.
    put_slice(
        &slices,
        "shop-web-1",
        "shop-web",
        8080,
        &[(a.addr.ip(), false), (b.addr.ip(), true)],
    )
    .await;
    eventually("shop.test serves b", || async {
        get(addr, "shop.test", "/").await.body == "b"
    })
    .await;
    let before = a.hits.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(c.get("shop.test", "/", &[]).await.body, "b");
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), before, "a is not ready");

    // The Route changes: shop.test moves to another domain.
    let mut r = ns.api::<Route>().get("shop").await.unwrap();
    r.spec.http.as_mut().unwrap().domain = "store.test".into();
    ns.api::<Route>()
        .replace("shop", &PostParams::default(), &r)
        .await
        .unwrap();
    eventually("store.test is routed", || async {
        get(addr, "store.test", "/").await.status == 200
    })
    .await;
    assert_eq!(get(addr, "shop.test", "/").await.status, 404);

    // The router says so in the Route's status.
    eventually("Programmed=True on the route", || async {
        let r = ns.api::<Route>().get("shop").await.unwrap();
        r.status.as_ref().is_some_and(|s| {
            conditions::find(&s.conditions, conditions::types::PROGRAMMED).is_some_and(|c| {
                c.status == "True" && c.observed_generation == r.metadata.generation
            })
        })
    })
    .await;

    // Ops endpoints.
    let admin = router.admin_addr;
    assert_eq!(get(admin, "x", "/healthz").await.status, 200);
    assert_eq!(get(admin, "x", "/readyz").await.status, 200);
    let metrics = get(admin, "x", "/metrics").await.body;
    assert!(
        metrics.contains(&format!(
            "flynn_router_http_requests_total{{namespace=\"{}\",route=\"shop\",code_class=\"2xx\"}}",
            ns.name()
        )),
        "{metrics}"
    );
    assert!(metrics.contains("flynn_router_table_generation"));
    assert!(metrics.contains("flynn_router_http_request_duration_seconds_bucket"));
    router.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn conflicting_routes_keep_the_oldest_and_report_it() {
    let ns = setup("router-conflict").await;
    let net = Netns::create();
    let a = Backend::http(&net, "a", 8080).await;
    put_slice(
        &ns.api(),
        "one-web-1",
        "one-web",
        8080,
        &[(a.addr.ip(), true)],
    )
    .await;
    let router = router(ns.client().clone(), ns.name()).await;
    create_route(&ns, "first", RouteSpec::http("one", "dup.test")).await;
    eventually("first is served", || async {
        get(router.http_addr, "dup.test", "/").await.body == "a"
    })
    .await;
    create_route(&ns, "second", RouteSpec::http("two", "dup.test")).await;
    eventually("second is reported as not programmed", || async {
        let r = ns.api::<Route>().get("second").await.unwrap();
        r.status.as_ref().is_some_and(|s| {
            conditions::find(&s.conditions, conditions::types::PROGRAMMED).is_some_and(|c| {
                c.status == "False" && c.reason == conditions::reasons::CONFLICTING_ROUTE
            })
        })
    })
    .await;
    assert_eq!(get(router.http_addr, "dup.test", "/").await.body, "a");
    router.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn killed_backends_get_no_more_traffic_and_no_request_fails() {
    let ns = setup("router-retry").await;
    let net = Netns::create();
    let backends = [
        Backend::http(&net, "a", 8080).await,
        Backend::http(&net, "b", 8080).await,
        Backend::http(&net, "c", 8080).await,
    ];
    let refs: Vec<&Backend> = backends.iter().map(|b| &**b).collect();
    let router = serve_app(&ns, "app.test", &refs).await;
    let addr = router.http_addr;

    // Warm pooled connections to all three, then kill one while its EndpointSlice still lists
    // it as ready (the kubelet has not noticed yet): every request must still succeed.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(H1::connect(addr).await);
    }
    for _ in 0..10 {
        for c in &mut clients {
            assert_eq!(c.get("app.test", "/", &[]).await.status, 200);
        }
    }
    backends[0].kill();
    for i in 0..60 {
        for c in &mut clients {
            let got = c.get("app.test", "/", &[]).await;
            assert_eq!(got.status, 200, "request {i}: {}", got.body);
            assert_ne!(got.body, "a");
        }
        // Also on fresh connections.
        assert_eq!(get(addr, "app.test", "/").await.status, 200);
    }
    let metrics = get(router.admin_addr, "x", "/metrics").await.body;
    assert!(
        metrics.contains("flynn_router_backend_connect_errors_total"),
        "{metrics}"
    );

    // With every endpoint dead: 502 with a body saying why.
    backends[1].kill();
    backends[2].kill();
    let got = get(addr, "app.test", "/").await;
    assert_eq!(got.status, 502, "{}", got.body);
    assert!(got.body.contains("Bad Gateway"), "{}", got.body);
    router.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn safe_requests_are_replayed_when_a_pooled_connection_closes_under_them() {
    let ns = setup("router-replay").await;
    let net = Netns::create();
    let backend = Backend::one_request_per_connection(&net, "racy", 8080).await;
    let router = serve_app(&ns, "app.test", &[&backend]).await;
    let addr = router.http_addr;

    // Every GET after the first finds a pooled connection the backend closes under it: the
    // router sends it again on a new connection and the client sees only 200s.
    let mut client = H1::connect(addr).await;
    for i in 0..20 {
        let got = client.get("app.test", "/", &[]).await;
        assert_eq!(got.status, 200, "GET {i}: {}", got.body);
        assert_eq!(got.body, "racy");
    }
    let metrics = get(router.admin_addr, "x", "/metrics").await.body;
    let replays: u64 = metrics
        .lines()
        .find(|l| l.starts_with("flynn_router_backend_replays_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no replay counter in {metrics}"));
    assert!(
        replays >= 19,
        "{replays} replays for 20 requests on pooled connections"
    );

    // A request with a body is not repeated behind the client's back: it fails with 502.
    let pooled = get(addr, "app.test", "/").await;
    assert_eq!(pooled.status, 200);
    let resp = TcpStream::connect(addr).await;
    let mut stream = resp.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the router closed without answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    router.shutdown(Duration::from_secs(5)).await;
}

fn cert(name: &str) -> (String, String, CertificateDer<'static>) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (
        c.cert.pem(),
        c.signing_key.serialize_pem(),
        c.cert.der().clone(),
    )
}

async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    (tls, peer)
}

#[tokio::test]
async fn tls_by_sni_http2_and_https_redirect() {
    let ns = setup("router-tls").await;
    let net = Netns::create();
    let a = Backend::http(&net, "a", 8080).await;
    put_slice(
        &ns.api(),
        "app-web-1",
        "app-web",
        8080,
        &[(a.addr.ip(), true)],
    )
    .await;
    let secrets = ns.api::<Secret>();
    let mut der = Vec::new();
    for (name, host) in [("a-tls", "a.test"), ("b-tls", "b.test")] {
        let (crt, key, d) = cert(host);
        der.push(d);
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": crt, "tls.key": key},
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let router = router(ns.client().clone(), ns.name()).await;
    for (route, host, secret) in [("a", "a.test", "a-tls"), ("b", "b.test", "b-tls")] {
        let mut spec = RouteSpec::http("app", host);
        let http = spec.http.as_mut().unwrap();
        http.tls_secret_name = Some(secret.into());
        http.https_redirect = true;
        create_route(&ns, route, spec).await;
    }
    let https = router.https_addr.unwrap();
    assert!(
        router
            .wait_for(Duration::from_secs(20), |t| t.certs.len() == 2)
            .await
    );

    // Each name gets its own certificate.
    for (host, want) in [("a.test", &der[0]), ("b.test", &der[1])] {
        let (tls, peer) = tls_connect(https, host, want, &[b"http/1.1"]).await;
        assert_eq!(&peer, want, "{host} got the wrong certificate");
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/headers")
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let got = collect(tx.send_request(req).await.unwrap()).await;
        assert_eq!(got.status, 200);
        assert!(
            got.body.contains("\"x-forwarded-proto\":\"https\""),
            "{}",
            got.body
        );
    }

    // HTTP/2 by ALPN.
    let (tls, _) = tls_connect(https, "a.test", &der[0], &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut tx = h2_client(tls).await;
    for _ in 0..3 {
        let req = http::Request::get("https://a.test/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let got = collect(tx.send_request(req).await.unwrap()).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, "a");
    }

    // Plain HTTP is redirected.
    let got = get(router.http_addr, "a.test", "/x?y=1").await;
    assert_eq!(got.status, 308);
    assert_eq!(got.headers["location"], "https://a.test/x?y=1");
    router.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn websocket_upgrades_are_spliced() {
    let ns = setup("router-ws").await;
    let net = Netns::create();
    let a = Backend::http(&net, "a", 8080).await;
    put_slice(
        &ns.api(),
        "ws-web-1",
        "ws-web",
        8080,
        &[(a.addr.ip(), true)],
    )
    .await;
    let router = router(ns.client().clone(), ns.name()).await;
    create_route(&ns, "ws", RouteSpec::http("ws", "ws.test")).await;
    eventually("ws.test is served", || async {
        get(router.http_addr, "ws.test", "/").await.status == 200
    })
    .await;

    let mut s = TcpStream::connect(router.http_addr).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "EOF in response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for msg in [&b"hello"[..], b"second frame", &[0x81, 0x02, b'h', b'i']] {
        s.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg);
    }
    drop(s);
    router.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn tcp_routes_open_and_close_listeners() {
    let ns = setup("router-tcp").await;
    let net = Netns::create();
    let e1 = Backend::echo(&net, "e1", 5432).await;
    let e2 = Backend::echo(&net, "e2", 5432).await;
    put_slice(
        &ns.api(),
        "db-pg-1",
        "db-pg",
        5432,
        &[(e1.addr.ip(), true), (e2.addr.ip(), true)],
    )
    .await;
    let port = flynn_e2e::free_port();
    // The platform's TCP port range is the test's free port (tests/ownership.rs tests the range).
    let router = router_with(ns.client().clone(), ns.name(), |c| {
        c.route_policy.tcp_ports = flynn_crds::ownership::PortRange {
            first: port,
            last: port,
        };
    })
    .await;
    create_route(&ns, "db", RouteSpec::tcp("db", "pg", i32::from(port))).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    eventually("the TCP route listens", || async {
        TcpStream::connect(addr).await.is_ok()
    })
    .await;
    for i in 0..10 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let msg = format!("ping {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
    assert!(e1.hits.load(Ordering::SeqCst) > 0 && e2.hits.load(Ordering::SeqCst) > 0);

    // A connection opened before the Route goes away keeps working; new ones are refused.
    let mut open = TcpStream::connect(addr).await.unwrap();
    ns.api::<Route>()
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the listener closes", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    open.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    router.shutdown(Duration::from_secs(5)).await;
}

/// The Route's `Programmed` condition, if the router has written one.
async fn programmed(ns: &TestNamespace, route: &str) -> Option<(String, String, String)> {
    let r = ns.api::<Route>().get(route).await.unwrap();
    let s = r.status?;
    let c = conditions::find(&s.conditions, conditions::types::PROGRAMMED)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_tcp_route_whose_port_is_taken_says_so_and_opens_once_it_is_free() {
    let ns = setup("router-tcp-busy").await;
    let net = Netns::create();
    let e1 = Backend::echo(&net, "e1", 5432).await;
    put_slice(&ns.api(), "db-pg-1", "db-pg", 5432, &[(e1.addr.ip(), true)]).await;
    // Another process holds the port the Route asks for.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = squatter.local_addr().unwrap().port();
    let router = router_with(ns.client().clone(), ns.name(), |c| {
        c.route_policy.tcp_ports = flynn_crds::ownership::PortRange {
            first: port,
            last: port,
        };
    })
    .await;
    create_route(&ns, "db", RouteSpec::tcp("db", "pg", i32::from(port))).await;
    eventually(
        "Programmed=False, PortUnavailable, naming the port",
        || async {
            programmed(&ns, "db")
                .await
                .is_some_and(|(status, reason, message)| {
                    status == "False"
                        && reason == conditions::reasons::PORT_UNAVAILABLE
                        && message.contains(&format!(":{port}"))
                })
        },
    )
    .await;

    drop(squatter);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    eventually("the Route listens once the port is free", || async {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            return false;
        };
        let mut buf = [0u8; 4];
        s.write_all(b"ping").await.is_ok()
            && s.read_exact(&mut buf).await.is_ok()
            && &buf == b"ping"
    })
    .await;
    eventually("Programmed=True", || async {
        programmed(&ns, "db")
            .await
            .is_some_and(|(status, _, _)| status == "True")
    })
    .await;
    router.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn sticky_sessions_pin_clients() {
    let ns = setup("router-sticky").await;
    let net = Netns::create();
    let mut eps = Vec::new();
    let mut backends = Vec::new();
    for n in ["a", "b", "c"] {
        let b = Backend::http(&net, n, 8080).await;
        eps.push((b.addr.ip(), true));
        backends.push(b);
    }
    put_slice(&ns.api(), "app-web-1", "app-web", 8080, &eps).await;
    let router = router(ns.client().clone(), ns.name()).await;
    let mut spec = RouteSpec::http("app", "sticky.test");
    spec.http.as_mut().unwrap().sticky = true;
    create_route(&ns, "app", spec).await;
    eventually("sticky.test is served", || async {
        get(router.http_addr, "sticky.test", "/").await.status == 200
    })
    .await;
    let first = get(router.http_addr, "sticky.test", "/").await;
    let cookie = first.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("flynn-sticky="), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..20 {
        // New connections each time: stickiness is the cookie's doing.
        let got = H1::connect(router.http_addr)
            .await
            .get("sticky.test", "/", &[("cookie", &cookie)])
            .await;
        assert_eq!(got.body, first.body);
        assert!(!got.headers.contains_key("set-cookie"));
    }
    // A forged cookie is ignored (and replaced).
    let got = get_with_cookie(router.http_addr, "flynn-sticky=10.77.0.99:8080.00").await;
    assert_eq!(got.status, 200);
    assert!(got.headers.contains_key("set-cookie"));
    router.shutdown(Duration::from_secs(5)).await;
}

async fn get_with_cookie(addr: SocketAddr, cookie: &str) -> Got {
    H1::connect(addr)
        .await
        .get("sticky.test", "/", &[("cookie", cookie)])
        .await
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let ns = setup("router-drain").await;
    let net = Netns::create();
    let a = Backend::http(&net, "a", 8080).await;
    let router = serve_app(&ns, "drain.test", &[&a]).await;
    let addr = router.http_addr;
    let slow = tokio::spawn(async move { get(addr, "drain.test", "/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let admin = router.admin_addr;
    let started = tokio::time::Instant::now();
    // A long grace period, so "it ended with the last request" and "it waited the grace
    // out" stay far apart on a loaded machine.
    let shutdown = tokio::spawn(router.shutdown(Duration::from_secs(60)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        get(admin, "x", "/readyz").await.status,
        503,
        "not ready while draining"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "new connections are refused"
    );
    let got = slow.await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "a");
    shutdown.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "drain waited for nothing else ({:?})",
        started.elapsed()
    );
}

/// Runs one step of a test with several: a failing step's panic is printed and the test
/// goes on, so that one run names every step that fails.
async fn step(failed: &mut Vec<&'static str>, name: &'static str, f: impl Future<Output = ()>) {
    eprintln!("--- step {name}");
    if AssertUnwindSafe(f).catch_unwind().await.is_err() {
        failed.push(name);
    }
}

/// A bodiless HTTP/1.1 request for `raw.test`, with `extra` header lines (CRLF-ended).
fn raw_request(method: &str, target: &str, extra: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nhost: raw.test\r\n{extra}\r\n").into_bytes()
}

/// Asserts that `r` is `200` with body `hello`, as the scripted backend's `/len` is.
fn assert_hello(r: &RawResponse, what: &str) {
    assert_eq!(r.status, 200, "{what}: status; got {r}");
    assert_eq!(r.text(), "hello", "{what}: body; got {r}");
}

/// The scripted backend behind Route `raw` (host `raw.test`), once the router at `addr`
/// serves it.
async fn serve_scripted(ns: &TestNamespace, net: &Netns, addr: SocketAddr) -> Arc<Backend> {
    let backend = Backend::scripted(net, "raw", 8080).await;
    put_slice(
        &ns.api(),
        "raw-web-1",
        "raw-web",
        8080,
        &[(backend.addr.ip(), true)],
    )
    .await;
    create_route(ns, "raw", RouteSpec::http("raw", "raw.test")).await;
    eventually("raw.test is served", || async {
        get(addr, "raw.test", "/len").await.status == 200
    })
    .await;
    backend
}

/// A chunked response's trailers reach an HTTP/2 client (here h2c), whose requests hyper's
/// server takes: the router's own client decodes the body and hands its trailer fields on
/// as a trailers frame.
#[tokio::test]
async fn chunked_trailers_reach_http2_clients() {
    use http_body_util::BodyExt;
    let ns = setup("router-trailers").await;
    let net = Netns::create();
    let router = router_with(ns.client().clone(), ns.name(), |c| c.server.h2c = true).await;
    let addr = router.http_addr;
    let _backend = serve_scripted(&ns, &net, addr).await;

    let mut tx = h2_client(TcpStream::connect(addr).await.unwrap()).await;
    for _ in 0..2 {
        let req = http::Request::get("http://raw.test/chunked")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap();
        let trailers = body.trailers().cloned().expect("the response's trailers");
        assert_eq!(trailers["x-sum"], "11");
        assert_eq!(body.to_bytes(), "hello world");
    }
    router.shutdown(Duration::from_secs(5)).await;
}

/// The router's own HTTP/1.1 server at the byte level, against a backend whose exact bytes
/// the test knows: framing kept as received, hop-by-hop headers dropped, pipelining, the
/// hand-over of a connection to hyper mid-way, and what it must refuse.
#[tokio::test]
async fn own_http1_server_keeps_framing_pipelines_and_hands_over_to_hyper() {
    let ns = setup("router-own-h1").await;
    let net = Netns::create();
    let router = router(ns.client().clone(), ns.name()).await;
    let addr = router.http_addr;
    let _backend = serve_scripted(&ns, &net, addr).await;
    let mut failed = Vec::new();

    step(
        &mut failed,
        "1 length body, hop-by-hop headers dropped",
        async {
            let mut c = RawClient::connect(addr).await;
            c.send(&raw_request("GET", "/len", "")).await;
            let r = c.expect("GET /len", false).await;
            assert_hello(&r, "GET /len");
            assert_eq!(
                r.framing,
                RawFraming::Length(5),
                "GET /len framing; got {r}"
            );
            assert_eq!(r.header("x-kept"), Some("1"), "x-kept forwarded; got {r}");
            for gone in ["x-private", "keep-alive"] {
                assert!(r.header(gone).is_none(), "{gone} is hop-by-hop; got {r}");
            }
            assert!(
                !r.all("connection")
                    .iter()
                    .any(|v| v.to_ascii_lowercase().contains("x-private")),
                "the backend's Connection header is not forwarded; got {r}"
            );
        },
    )
    .await;

    step(&mut failed, "2 pipelining", async {
        let mut c = RawClient::connect(addr).await;
        let mut three = Vec::new();
        for _ in 0..3 {
            three.extend_from_slice(&raw_request("GET", "/len", ""));
        }
        c.send(&three).await;
        for i in 1..=3 {
            let r = c.expect(&format!("pipelined GET /len #{i}"), false).await;
            assert_hello(&r, &format!("pipelined GET /len #{i}"));
        }
        // Mixed framings in one write, answered in order.
        let mut mixed = raw_request("GET", "/headers?n=1", "");
        mixed.extend_from_slice(&raw_request("GET", "/chunked", ""));
        mixed.extend_from_slice(&raw_request("GET", "/headers?n=3", ""));
        c.send(&mixed).await;
        let r = c.expect("pipelined GET /headers?n=1", false).await;
        assert!(
            r.text().starts_with("GET /headers?n=1 HTTP/1.1\r\n"),
            "first pipelined answer is for /headers?n=1; got {r}"
        );
        let r = c.expect("pipelined GET /chunked", false).await;
        assert_eq!(r.text(), "hello world", "pipelined GET /chunked; got {r}");
        let r = c.expect("pipelined GET /headers?n=3", false).await;
        assert!(
            r.text().starts_with("GET /headers?n=3 HTTP/1.1\r\n"),
            "third pipelined answer is for /headers?n=3; got {r}"
        );
    })
    .await;

    step(
        &mut failed,
        "3 chunked body and trailer forwarded verbatim",
        async {
            let mut c = RawClient::connect(addr).await;
            c.send(&raw_request("GET", "/chunked", "")).await;
            let r = c.expect("GET /chunked", false).await;
            assert_eq!(r.status, 200, "GET /chunked status; got {r}");
            assert_eq!(
                r.header("transfer-encoding"),
                Some("chunked"),
                "GET /chunked keeps its framing; got {r}"
            );
            assert_eq!(r.header("trailer"), Some("x-sum"), "GET /chunked; got {r}");
            assert!(
                r.header("content-length").is_none(),
                "no content-length beside chunked; got {r}"
            );
            assert_eq!(
                r.wire_body, SCRIPTED_CHUNKED_BODY,
                "GET /chunked: chunks and trailer as the backend sent them; got {r}"
            );
            assert_eq!(r.trailers, [("x-sum".to_owned(), "11".to_owned())], "{r}");
            c.send(&raw_request("GET", "/len", "")).await;
            let r = c.expect("GET /len after a chunked response", false).await;
            assert_hello(&r, "GET /len after a chunked response");
        },
    )
    .await;

    step(
        &mut failed,
        "4 close-delimited body closes the client connection",
        async {
            let mut c = RawClient::connect(addr).await;
            c.send(&raw_request("GET", "/close", "")).await;
            // Reading a close-delimited body waits for EOF: it fails if the router keeps the
            // connection open.
            let r = c.expect("GET /close", false).await;
            assert_eq!(r.status, 200, "GET /close status; got {r}");
            assert_eq!(
                r.header("connection"),
                Some("close"),
                "GET /close says connection: close; got {r}"
            );
            assert_eq!(r.text(), "until close", "GET /close body; got {r}");
            assert_eq!(r.header("content-type"), Some("text/plain"), "{r}");
        },
    )
    .await;

    step(
        &mut failed,
        "5 own server, then hyper, on one connection",
        async {
            let mut c = RawClient::connect(addr).await;
            c.send(&raw_request("GET", "/len", "")).await;
            assert_hello(&c.expect("GET /len (own server)", false).await, "GET /len");
            c.send(b"POST /post HTTP/1.1\r\nhost: raw.test\r\ncontent-length: 3\r\n\r\nabc")
                .await;
            let r = c.expect("POST /post (handed to hyper)", false).await;
            assert_eq!(r.status, 200, "POST /post status; got {r}");
            assert_eq!(r.text(), "got 3 bytes", "POST /post body; got {r}");
            c.send(&raw_request("GET", "/len", "")).await;
            let r = c.expect("GET /len after the POST", false).await;
            assert_hello(&r, "GET /len after the POST");
        },
    )
    .await;

    step(&mut failed, "6 HTTP/1.0", async {
        let mut c = RawClient::connect(addr).await;
        c.send(b"GET /len HTTP/1.0\r\nhost: raw.test\r\n\r\n").await;
        let r = c.expect("HTTP/1.0 GET /len", false).await;
        assert_hello(&r, "HTTP/1.0 GET /len");
    })
    .await;

    step(
        &mut failed,
        "7 HEAD, then GET on the same connection",
        async {
            let mut c = RawClient::connect(addr).await;
            c.send(&raw_request("HEAD", "/len", "")).await;
            let r = c.expect("HEAD /len", true).await;
            assert_eq!(r.status, 200, "HEAD /len status; got {r}");
            assert_eq!(
                r.header("content-length"),
                Some("5"),
                "HEAD /len keeps content-length; got {r}"
            );
            c.send(&raw_request("GET", "/len", "")).await;
            // A body after the HEAD response would show up at the start of this one.
            let r = c.expect("GET /len after HEAD", false).await;
            assert_hello(&r, "GET /len after HEAD");
        },
    )
    .await;

    step(&mut failed, "8 connection: close from the client", async {
        let mut c = RawClient::connect(addr).await;
        c.send(&raw_request("GET", "/len", "connection: close\r\n"))
            .await;
        let r = c.expect("GET /len with connection: close", false).await;
        assert_hello(&r, "GET /len with connection: close");
        assert_eq!(
            r.header("connection"),
            Some("close"),
            "the response says connection: close; got {r}"
        );
        if let Err(e) = c.closed().await {
            panic!("the router closes after connection: close: {e}");
        }
    })
    .await;

    step(&mut failed, "9 forwarded request head", async {
        let mut c = RawClient::connect(addr).await;
        c.send(&raw_request(
            "GET",
            "/headers",
            "x-forwarded-for: 1.2.3.4\r\nconnection: keep-alive, x-drop\r\nx-drop: 1\r\n\
             keep-alive: 300\r\n",
        ))
        .await;
        let r = c.expect("GET /headers", false).await;
        assert_eq!(r.status, 200, "GET /headers status; got {r}");
        let seen = r.text();
        let lines: Vec<(String, String)> = seen
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let values = |name: &str| -> Vec<&str> {
            lines
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert!(
            seen.starts_with("GET /headers HTTP/1.1\r\n"),
            "backend saw: {seen:?}"
        );
        assert_eq!(values("host"), ["raw.test"], "backend saw: {seen:?}");
        // The client is no trusted proxy: its X-Forwarded-For is replaced (tests/edge.rs has
        // the trusted twin).
        assert_eq!(
            values("x-forwarded-for"),
            ["127.0.0.1"],
            "backend saw: {seen:?}"
        );
        assert_eq!(values("x-request-id").len(), 1, "backend saw: {seen:?}");
        assert_eq!(values("x-request-start").len(), 1, "backend saw: {seen:?}");
        for gone in ["connection", "keep-alive", "x-drop"] {
            assert!(
                values(gone).is_empty(),
                "{gone} reached the backend: {seen:?}"
            );
        }
    })
    .await;

    step(&mut failed, "10 request head over 64 KiB", async {
        let big = format!("x-big: {}\r\n", "a".repeat(70_000));
        let request = raw_request("GET", "/len", &big);
        // In one write, and with its end arriving after the first 65,000 bytes were read.
        for split in [None, Some(65_000)] {
            let what = format!("a {}-byte head, split at {split:?}", request.len());
            let mut c = RawClient::connect(addr).await;
            let sent = match split {
                None => c.try_send(&request).await,
                Some(at) => {
                    let first = c.try_send(&request[..at]).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    match first {
                        Ok(()) => c.try_send(&request[at..]).await,
                        e => e,
                    }
                }
            };
            // The router may answer and close before all of it is written.
            if let Err(e) = sent {
                eprintln!("{what}: write: {e}");
            }
            match c.response(false).await {
                Ok(r) => {
                    eprintln!("{what}: answered {}", r.status);
                    assert!(
                        r.status != 200 && (400..500).contains(&r.status),
                        "{what}: want 431 (or a close); got {r}"
                    );
                }
                Err(e) => eprintln!("{what}: no response ({e})"),
            }
        }
    })
    .await;

    step(&mut failed, "11 no Host header", async {
        let mut c = RawClient::connect(addr).await;
        c.send(b"GET /len HTTP/1.1\r\n\r\n").await;
        let r = c.expect("GET /len without Host", false).await;
        assert!(
            (400..500).contains(&r.status),
            "GET /len without Host: want a 4xx; got {r}"
        );
        let mut c = RawClient::connect(addr).await;
        c.send(&raw_request("GET", "/len", "")).await;
        let r = c
            .expect("GET /len on a new connection after it", false)
            .await;
        assert_hello(&r, "GET /len on a new connection after it");
    })
    .await;

    assert!(failed.is_empty(), "failed steps: {failed:?}");
    router.shutdown(Duration::from_secs(5)).await;
}

/// A backend that takes the request and never answers: the client gets a 504 naming the
/// backend once `backend_timeout` has passed, through the own HTTP/1 server and through
/// hyper's (HTTP/1.0), and the route keeps serving.
#[tokio::test]
async fn backends_that_do_not_answer_get_a_504() {
    let ns = setup("router-timeout").await;
    let net = Netns::create();
    let backend = Backend::scripted(&net, "slow", 8080).await;
    put_slice(
        &ns.api(),
        "slow-web-1",
        "slow-web",
        8080,
        &[(backend.addr.ip(), true)],
    )
    .await;
    let timeout = Duration::from_millis(500);
    let router = router_with(ns.client().clone(), ns.name(), |c| {
        c.proxy.backend_timeout = timeout;
    })
    .await;
    create_route(&ns, "slow", RouteSpec::http("slow", "slow.test")).await;
    let addr = router.http_addr;
    eventually("slow.test is served", || async {
        get(addr, "slow.test", "/len").await.status == 200
    })
    .await;
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let mut c = RawClient::connect(addr).await;
        let start = std::time::Instant::now();
        c.send(format!("GET /hang {version}\r\nhost: slow.test\r\n\r\n").as_bytes())
            .await;
        let r = c.expect(&format!("GET /hang {version}"), false).await;
        let waited = start.elapsed();
        assert_eq!(r.status, 504, "{version}: got {r}");
        assert!(
            r.text().contains("504 Gateway Timeout: backend")
                && r.text().contains("sent no response within 500ms"),
            "{version}: got {r}"
        );
        assert!(waited >= timeout, "{version}: answered after {waited:?}");
    }
    assert_eq!(get(addr, "slow.test", "/len").await.status, 200);
}
