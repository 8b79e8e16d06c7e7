//! The head a backend gets, on both ways of writing it; replays; redirects.

use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{Either, Empty};

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{Version, uri::PathAndQuery};

use super::{local::*, request_stamp::*, retry::*, upstream_head::*, *};

fn info() -> ConnInfo {
    ConnInfo {
        peer: "10.1.2.3:5555".parse().unwrap(),
        local_port: 443,
        tls: true,
    }
}

fn untrusted() -> ForwardHeaders {
    ForwardHeaders::new(&info(), &TrustedProxies::default())
}

fn trusted() -> ForwardHeaders {
    let proxies = TrustedProxies::new(["10.1.0.0/16".parse().unwrap()]);
    let fwd = ForwardHeaders::new(&info(), &proxies);
    assert!(fwd.trusted);
    fwd
}

/// A spoofed chain from an untrusted client is replaced; the same chain from a trusted
/// proxy is extended, and its proto/host/port kept. Both paths (one-pass head and
/// `HeaderMap` rewrite) agree.
#[test]
fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let build = || {
        Request::builder()
            .uri("/")
            .header("host", "shop.test")
            .header("X-Forwarded-For", "6.6.6.6")
            .header("x-forwarded-for", "7.7.7.7")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "bank.test")
            .header("x-forwarded-port", "8443")
            .header("forwarded", "for=6.6.6.6;proto=https")
            .body(())
            .unwrap()
    };
    let v6 = ConnInfo {
        peer: "[2001:db8::5]:1".parse().unwrap(),
        local_port: 80,
        tls: false,
    };
    let cases = [
        (
            untrusted(),
            [
                "10.1.2.3",
                "https",
                "shop.test",
                "443",
                "for=10.1.2.3;host=\"shop.test\";proto=https",
            ],
        ),
        (
            trusted(),
            [
                "6.6.6.6, 7.7.7.7, 10.1.2.3",
                "https",
                "bank.test",
                "8443",
                "for=6.6.6.6;proto=https, for=10.1.2.3;host=\"shop.test\";proto=https",
            ],
        ),
        (
            ForwardHeaders::new(&v6, &TrustedProxies::default()),
            [
                "2001:db8::5",
                "http",
                "shop.test",
                "80",
                "for=\"[2001:db8::5]\";host=\"shop.test\";proto=http",
            ],
        ),
    ];
    for (fwd, want) in cases {
        let mut req = build();
        prepare_request(&mut req, &fwd, false);
        let names = [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
            "forwarded",
        ];
        for (name, want) in names.iter().zip(want) {
            let all: Vec<_> = req.headers().get_all(*name).iter().collect();
            assert_eq!(all, [want], "{name} (trusted: {})", fwd.trusted);
        }
        let mut out = Vec::new();
        encode_forwarded_head(&mut out, &build(), &fwd, None, &request_start());
        let text = String::from_utf8(out).unwrap();
        for (name, want) in names.iter().zip(want) {
            assert_eq!(
                text.matches(&format!("\r\n{name}: ")).count(),
                1,
                "{name} in {text}"
            );
            assert!(text.contains(&format!("\r\n{name}: {want}\r\n")), "{text}");
        }
    }
}

#[test]
fn requests_get_forwarding_headers_and_lose_hop_by_hop_ones() {
    let mut req = Request::builder()
        .uri("https://example.com/a?b=c")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "1")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "192.0.2.1")
        .header("te", "trailers")
        .body(())
        .unwrap();
    *req.version_mut() = Version::HTTP_2;
    prepare_request(&mut req, &untrusted(), false);
    let h = req.headers();
    assert_eq!(req.uri(), "/a?b=c");
    assert_eq!(req.version(), Version::HTTP_11);
    assert_eq!(h["host"], "example.com");
    // The client is no trusted proxy: its X-Forwarded-For is replaced.
    assert_eq!(h["x-forwarded-for"], "10.1.2.3");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-port"], "443");
    assert_eq!(h["x-forwarded-host"], "example.com");
    assert_eq!(
        h["forwarded"],
        "for=10.1.2.3;host=\"example.com\";proto=https"
    );
    assert_eq!(h["x-request-id"].len(), 32);
    assert!(h["x-request-start"].to_str().unwrap().starts_with("t="));
    for gone in ["connection", "x-private", "keep-alive", "te"] {
        assert!(!h.contains_key(gone), "{gone} was forwarded");
    }
}

/// The one-pass head of a request without a body says what `prepare_request` says.
#[test]
fn forwarded_heads_match_prepared_requests() {
    let build = || {
        let mut req = Request::builder()
            .method("GET")
            .uri("https://example.com/a?b=c")
            .header("connection", "keep-alive, x-private, close")
            .header("x-private", "1")
            .header("close", "1")
            .header("keep-alive", "timeout=5")
            .header("x-forwarded-for", "192.0.2.1")
            .header("x-forwarded-for", "192.0.2.9")
            .header("x-forwarded-proto", "gopher")
            .header("te", "trailers")
            .header("upgrade", "h2c")
            .header("accept", "a")
            .header("accept", "b")
            .header("x-request-id", "given")
            .header("x-real-ip", "6.6.6.6")
            .header("true-client-ip", "6.6.6.6")
            .header("x_forwarded_for", "6.6.6.6")
            .header("x-team-trace", "abc")
            .body(())
            .unwrap();
        *req.version_mut() = Version::HTTP_2;
        req
    };
    for fwd in [untrusted(), trusted()] {
        heads_match(&build, &fwd);
    }
}

/// Claims about the client other than the forwarding headers: an untrusted client's are
/// dropped and `X-Real-IP` is its address; a trusted proxy's are passed on and
/// `X-Real-IP` is the client its chain names; a name with `_` is dropped from both. The
/// two paths agree.
#[test]
fn client_claims_are_dropped_unless_from_a_trusted_proxy() {
    let build = || {
        Request::builder()
            .uri("/")
            .header("host", "shop.test")
            .header("x-forwarded-for", "6.6.6.6, 203.0.113.7")
            .header("x-real-ip", "6.6.6.6")
            .header("true-client-ip", "6.6.6.6")
            .header("x-forwarded-ssl", "on")
            .header("x_real_ip", "6.6.6.6")
            .header("x-team-trace", "abc")
            .header("x-request-id", "given")
            .body(())
            .unwrap()
    };
    for (fwd, real_ip, claims_kept) in [
        (untrusted(), "10.1.2.3", false),
        (trusted(), "203.0.113.7", true),
    ] {
        let mut req = build();
        prepare_request(&mut req, &fwd, false);
        let h = req.headers();
        assert_eq!(h.get_all("x-real-ip").iter().count(), 1);
        assert_eq!(h["x-real-ip"], real_ip);
        assert_eq!(h.contains_key("true-client-ip"), claims_kept);
        assert_eq!(h.contains_key("x-forwarded-ssl"), claims_kept);
        assert!(!h.contains_key("x_real_ip"));
        assert_eq!(h["x-team-trace"], "abc");
        let mut out = Vec::new();
        encode_forwarded_head(&mut out, &build(), &fwd, None, &request_start());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("x-real-ip: ").count(), 1, "{text}");
        assert!(
            text.contains(&format!("\r\nx-real-ip: {real_ip}\r\n")),
            "{text}"
        );
        assert_eq!(text.contains("true-client-ip"), claims_kept, "{text}");
        assert_eq!(text.contains("x-forwarded-ssl"), claims_kept, "{text}");
        assert!(!text.contains("x_real_ip"), "{text}");
        assert!(text.contains("\r\nx-team-trace: abc\r\n"), "{text}");
        heads_match(&build, &fwd);
    }
}

fn heads_match(build: &impl Fn() -> Request<()>, fwd: &ForwardHeaders) {
    let fwd = fwd.clone();
    let start = request_start();
    let mut out = Vec::new();
    encode_forwarded_head(&mut out, &build(), &fwd, None, &start);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    assert!(parsed.parse(&out).unwrap().is_complete());
    assert_eq!(parsed.method, Some("GET"));
    assert_eq!(
        parsed.path,
        build().uri().path_and_query().map(PathAndQuery::as_str)
    );
    let mut fast: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut prepared = build();
    prepare_request(&mut prepared, &fwd, false);
    prepared
        .headers_mut()
        .insert(X_REQUEST_START.clone(), start.clone());
    let mut slow: Vec<(String, String)> = prepared
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    fast.sort();
    slow.sort();
    assert_eq!(fast, slow);
    // No id from the client: the generated one.
    let mut req = build();
    req.headers_mut().remove("x-request-id");
    let id = request_id();
    let mut out = Vec::new();
    encode_forwarded_head(&mut out, &req, &fwd, Some(&id), &start);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(&format!("x-request-id: {}\r\n", id.to_str().unwrap())));
    assert!(text.ends_with("\r\n\r\n"));
}

#[test]
fn generated_header_values() {
    let a = request_id();
    let b = request_id();
    assert_ne!(a, b);
    for id in [&a, &b] {
        assert_eq!(id.len(), 32);
        assert!(
            id.as_bytes()
                .iter()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let start = request_start();
    let t: u128 = start
        .to_str()
        .unwrap()
        .strip_prefix("t=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(t.abs_diff(ms) < 1000, "{t} vs {ms}");
    // From the anchored clock: a later instant is later by as much.
    let parse = |v: HeaderValue| -> u128 { v.to_str().unwrap()[2..].parse().unwrap() };
    let now = Instant::now();
    let (a, b) = (
        request_start_at(now),
        request_start_at(now + Duration::from_millis(250)),
    );
    assert_eq!(parse(b) - parse(a.clone()), 250);
    assert!(parse(a).abs_diff(ms) < 1000);
    // Many values from one scratch buffer stay intact.
    let ids: Vec<_> = (0..500).map(|_| request_id()).collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    assert!(ids.iter().all(|id| id.len() == 32));
}

#[test]
fn connection_tokens_name_hop_by_hop_headers() {
    let mut h = HeaderMap::new();
    h.insert(
        "connection",
        HeaderValue::from_static("Keep-Alive, close, X-Gone"),
    );
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert("close", HeaderValue::from_static("1"));
    h.insert("x-gone", HeaderValue::from_static("1"));
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("x-kept", HeaderValue::from_static("1"));
    strip_hop_by_hop(&mut h, false);
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h.contains_key("x-kept"));
}

#[test]
fn replays_copy_safe_heads_only() {
    let req = Request::builder()
        .method("GET")
        .uri("/a?b")
        .header("host", "example.com")
        .header("accept", "text/html")
        .header("accept", "text/plain")
        .body(Either::Right(Empty::new()))
        .unwrap();
    for _ in 0..3 {
        let replay = Replay::of(&req).unwrap();
        let again = replay.request();
        assert_eq!(again.method(), req.method());
        assert_eq!(again.uri(), req.uri());
        assert_eq!(again.headers(), req.headers());
    }
    let post = Request::builder()
        .method("POST")
        .uri("/")
        .body(Either::Right(Empty::new()))
        .unwrap();
    assert!(Replay::of(&post).is_none());
}

#[test]
fn request_ids_are_kept() {
    let mut req = Request::builder()
        .uri("/")
        .header("host", "example.com")
        .header("x-request-id", "abc")
        .body(())
        .unwrap();
    prepare_request(&mut req, &untrusted(), false);
    assert_eq!(req.headers()["x-request-id"], "abc");
}

#[test]
fn upgrades_keep_their_headers() {
    let mut req = Request::builder()
        .uri("/ws")
        .header("host", "example.com")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(())
        .unwrap();
    assert!(is_upgrade(&req));
    prepare_request(&mut req, &untrusted(), true);
    assert_eq!(req.headers()["upgrade"], "websocket");
    assert_eq!(req.headers()["connection"], "upgrade");
}

#[test]
fn redirects_keep_path_and_query() {
    let uri: Uri = "/x?y=1".parse().unwrap();
    let resp = redirect_to_https("example.com:80", &uri);
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()["location"], "https://example.com/x?y=1");
}
