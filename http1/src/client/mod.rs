//! The router's own HTTP/1.1 client for requests without a body (the common case: GET,
//! HEAD, ...): per-endpoint pools of idle keep-alive connections ([`ConnPool`]), the request head written
//! with one call from a buffer the connection keeps, the response head parsed with
//! `httparse` and the body streamed from the connection's read buffer by the task that
//! serves the client.
//!
//! Why not hyper's client here: it runs each backend connection as a task of its own and
//! hands every request and response across two channels, plus a fresh read buffer per
//! response; for a proxy that is most of its per-request overhead. Requests with a body
//! and upgrades still go through hyper's client (the router's `http_proxy`).

mod body;
mod chunked;
mod conn;
mod exchange;
mod pool;
pub mod response;

pub use body::{BodyError, Remaining, ResponseBody};
pub use chunked::{ChunkedDecoder, ChunkedError, Decoded, Scanned};
pub use conn::{BackendConn, ConnectError, READ_CHUNK};
pub use exchange::{ExchangeError, MAX_HEAD_BYTES, exchange, exchange_with};
pub use pool::ConnPool;
pub use response::{Framing, HeadError, RawHead, ResponseHead, parse_raw};

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc, time::Duration};

    use http_body_util::BodyExt;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A backend that reads one request head and answers with `parts`, pausing between
    /// them, then closes the connection if `close`.
    async fn backend(parts: &'static [&'static str], close: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                got.extend_from_slice(&buf[..n]);
            }
            for part in parts {
                s.write_all(part.as_bytes()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !close {
                // Keep the connection open until the client is done with it.
                let _ = s.read(&mut buf).await;
            }
        });
        addr
    }

    /// GETs from `addr` and reads the whole body: (body or error, pooled connections).
    async fn get(addr: SocketAddr) -> (Result<String, String>, usize) {
        let pool = Arc::new(ConnPool::default());
        let mut conn = BackendConn::connect(addr, Duration::from_secs(5))
            .await
            .unwrap();
        let head = exchange(&mut conn, false, |out| {
            out.extend_from_slice(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        })
        .await
        .map_err(|e| e.to_string());
        let head = match head {
            Ok(h) => h,
            Err(e) => return (Err(e), 0),
        };
        let body = ResponseBody::new(conn, head.framing, head.keep_alive, pool.clone());
        let body = body
            .collect()
            .await
            .map(|b| String::from_utf8(b.to_bytes().to_vec()).unwrap())
            .map_err(|e| e.to_string());
        let pooled = usize::from(
            pool.checkout(Duration::from_secs(60), std::time::Instant::now())
                .is_some(),
        );
        (body, pooled)
    }

    #[tokio::test]
    async fn chunked_bodies_stream_and_the_connection_is_pooled() {
        let addr = backend(
            &[
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
                "lo\r\n6\r\n world\r\n",
                "0\r\n\r\n",
            ],
            false,
        )
        .await;
        assert_eq!(get(addr).await, (Ok("hello world".into()), 1));
    }

    #[tokio::test]
    async fn length_bodies_end_at_their_length() {
        let addr = backend(
            &["HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe", "llo"],
            false,
        )
        .await;
        assert_eq!(get(addr).await, (Ok("hello".into()), 1));
        let addr = backend(&["HTTP/1.1 204 No Content\r\n\r\n"], false).await;
        assert_eq!(get(addr).await, (Ok(String::new()), 1));
    }

    #[tokio::test]
    async fn close_delimited_bodies_are_not_pooled() {
        let addr = backend(&["HTTP/1.1 200 OK\r\n\r\nsome", " body"], true).await;
        assert_eq!(get(addr).await, (Ok("some body".into()), 0));
    }

    #[tokio::test]
    async fn a_backend_that_does_not_answer_in_time_times_out() {
        let addr = backend(&[], false).await;
        let mut conn = BackendConn::connect(addr, Duration::from_secs(5))
            .await
            .unwrap();
        let start = std::time::Instant::now();
        let got = exchange_with(
            &mut conn,
            |out| out.extend_from_slice(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"),
            |buf| response::parse(buf, false, false),
            Some(start + Duration::from_millis(150)),
        )
        .await;
        assert!(matches!(got, Err(ExchangeError::TimedOut)), "{got:?}");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }

    #[tokio::test]
    async fn truncated_and_malformed_responses_fail_clearly() {
        let addr = backend(&["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"], true).await;
        let (body, pooled) = get(addr).await;
        assert!(body.unwrap_err().contains("before the end of the body"));
        assert_eq!(pooled, 0);
        let addr = backend(
            &["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
            true,
        )
        .await;
        assert!(
            get(addr)
                .await
                .0
                .unwrap_err()
                .contains("invalid chunk size")
        );
        let addr = backend(&["HTTP/1.1 OK\r\n\r\n"], true).await;
        assert!(
            get(addr)
                .await
                .0
                .unwrap_err()
                .contains("malformed response head")
        );
        let addr = backend(&[], true).await;
        assert_eq!(
            get(addr).await.0.unwrap_err(),
            "connection closed before any response"
        );
    }
}
