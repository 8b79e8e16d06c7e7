//! The own server's loop on its own, with a stand-in for the router's policy: which
//! connections it serves, which it hands to hyper, and what it refuses, each beside a valid
//! twin.
//!
//! `cargo test -p flynn-http1 --test server`

use std::{future::Future, time::Duration, time::Instant};

use flynn_http1::server::{DrainSignal, Ended, Head, Limits, Respond, encode_text, serve};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Answers every request with its method, target and host.
struct Echo;

impl Respond for Echo {
    fn respond<S>(
        &self,
        io: &mut S,
        out: &mut Vec<u8>,
        head: &Head<'_>,
        close: bool,
    ) -> impl Future<Output = Option<Instant>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let body = format!("{} {} {}\n", head.method, head.target, head.host);
        out.clear();
        encode_text(out, StatusCode::OK, &body, None, close);
        async move {
            let written = io.write_all(out).await;
            out.clear();
            written.ok().map(|()| Instant::now())
        }
    }
}

const LIMITS: Limits = Limits {
    header_timeout: Duration::from_secs(5),
    max_header_bytes: 1024,
};

/// What the server wrote for `input` (sent, then the client's end closed) and how the
/// connection ended: `None` when closed, the bytes handed to hyper otherwise.
async fn served(input: &[u8], limits: Limits) -> (String, Option<Vec<u8>>) {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let (_tx, drain) = DrainSignal::new();
    client.write_all(input).await.unwrap();
    client.shutdown().await.unwrap();
    let handed = match serve(server, &Echo, limits, &drain).await {
        Ended::Closed => None,
        Ended::Hand(_stream, read) => Some(read.to_vec()),
    };
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    (String::from_utf8(out).unwrap(), handed)
}

const TWO_GETS: &[u8] =
    b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\nGET /b?c HTTP/1.1\r\nhost: x.test\r\n\r\n";

#[tokio::test]
async fn pipelined_requests_are_served_in_order() {
    let (out, handed) = served(TWO_GETS, LIMITS).await;
    assert_eq!(handed, None);
    let a = out.find("GET /a x.test").expect(&out);
    let b = out.find("GET /b?c x.test").expect(&out);
    assert!(a < b, "{out}");
    assert!(!out.contains("connection: close"), "{out}");
}

#[tokio::test]
async fn a_request_asking_to_close_is_the_last() {
    let (out, _) = served(
        b"GET /a HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x.test\r\n\r\n",
        LIMITS,
    )
    .await;
    assert!(out.contains("GET /a x.test"), "{out}");
    assert!(out.contains("connection: close"), "{out}");
    assert!(!out.contains("GET /b"), "{out}");
}

/// A missing or repeated Host is a 400 that never echoes the value, and the connection
/// closes: the pipelined request after it is not served (beside [`TWO_GETS`], served).
#[tokio::test]
async fn requests_without_one_valid_host_are_refused() {
    for bad in [
        &b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nHost: x.test\r\n\r\n"[..],
        b"GET /a HTTP/1.1\r\nHost: x.test\r\nHost: evil.test\r\n\r\nGET /b HTTP/1.1\r\nHost: x.test\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: <script>\r\n\r\nGET /b HTTP/1.1\r\nHost: x.test\r\n\r\n",
    ] {
        let (out, handed) = served(bad, LIMITS).await;
        let text = String::from_utf8_lossy(bad);
        assert_eq!(handed, None, "{text:?}");
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text:?}: {out}");
        assert!(out.contains("connection: close"), "{text:?}: {out}");
        assert!(!out.contains("evil") && !out.contains("<script>"), "{out}");
        assert!(!out.contains("GET /b"), "{text:?}: {out}");
    }
}

/// What the own server does not serve goes to hyper with every byte read so far, and
/// nothing written: a body, HTTP/1.0, an upgrade, an absolute-form target.
#[tokio::test]
async fn other_requests_are_handed_over_untouched() {
    for input in [
        &b"POST /a HTTP/1.1\r\nHost: x.test\r\ncontent-length: 2\r\n\r\nhi"[..],
        b"GET /a HTTP/1.0\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET http://x.test/a HTTP/1.1\r\nHost: x.test\r\n\r\n",
    ] {
        let (out, handed) = served(input, LIMITS).await;
        let text = String::from_utf8_lossy(input);
        assert_eq!(handed.as_deref(), Some(input), "{text:?}");
        assert_eq!(out, "", "{text:?}");
    }
    // A served request before one that is handed over: its bytes are the rest.
    let mut input = TWO_GETS[..33].to_vec();
    input.extend_from_slice(b"POST /a HTTP/1.1\r\nHost: x.test\r\ncontent-length: 2\r\n\r\nhi");
    let (out, handed) = served(&input, LIMITS).await;
    assert!(out.contains("GET /a x.test"), "{out}");
    assert_eq!(handed.as_deref(), Some(&input[33..]));
}

/// A head over the limit is a 431 (the same head under a larger limit is served).
#[tokio::test]
async fn heads_over_the_limit_are_refused() {
    let head = format!(
        "GET /a HTTP/1.1\r\nHost: x.test\r\nx-pad: {}\r\n\r\n",
        "p".repeat(200)
    );
    let small = Limits {
        max_header_bytes: 128,
        ..LIMITS
    };
    let (out, handed) = served(head.as_bytes(), small).await;
    assert_eq!(handed, None);
    assert!(
        out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{out}"
    );
    let (out, _) = served(head.as_bytes(), LIMITS).await;
    assert!(out.contains("GET /a x.test"), "{out}");
}

/// A head that stops halfway gets a 408 when the header timeout passes, and the connection
/// closes; a client that sends nothing is closed without one.
#[tokio::test]
async fn heads_must_arrive_in_time() {
    let limits = Limits {
        header_timeout: Duration::from_millis(100),
        ..LIMITS
    };
    let (_tx, drain) = DrainSignal::new();
    for (sent, answer) in [
        (
            &b"GET /a HTTP/1.1\r\nHo"[..],
            "HTTP/1.1 408 Request Timeout\r\n",
        ),
        (b"", ""),
    ] {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(sent).await.unwrap();
        // The client's end stays open: only the timeout can end the connection.
        let ended = serve(server, &Echo, limits, &drain).await;
        assert!(matches!(ended, Ended::Closed));
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert!(String::from_utf8_lossy(&out).starts_with(answer), "{out:?}");
        if answer.is_empty() {
            assert!(out.is_empty(), "{out:?}");
        }
    }
}
