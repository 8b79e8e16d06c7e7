//! The slug store over HTTP: auth, signed URLs, checksums, atomic uploads, ranges, metrics.

mod common;

use common::{Shelf, TOKEN, header, http};
use flynn_builder::{digest::Sha256, signing::Access};

fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

fn sha(data: &[u8]) -> String {
    let mut h = Sha256::default();
    h.update(data);
    h.finish_hex()
}

#[tokio::test]
async fn put_get_head_delete_round_trip_with_the_token() {
    let shelf = Shelf::start().await;
    let (k, v) = bearer();
    let auth = [(k, v.as_str())];
    let data = b"slug bytes".repeat(1000);

    let (status, _, body) = http(shelf.addr, "PUT", "/slugs/app/v1.tgz", &auth, &data).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let stored: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(stored["sha256"], sha(&data));
    assert_eq!(stored["size"], data.len());

    let (status, headers, body) = http(shelf.addr, "GET", "/slugs/app/v1.tgz", &auth, b"").await;
    assert_eq!((status, body.len()), (200, data.len()));
    assert_eq!(body, data);
    assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));

    let (status, headers, body) = http(shelf.addr, "HEAD", "/slugs/app/v1.tgz", &auth, b"").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-length"),
        Some(data.len().to_string().as_str())
    );
    assert!(body.is_empty());

    assert_eq!(
        http(shelf.addr, "DELETE", "/slugs/app/v1.tgz", &auth, b"")
            .await
            .0,
        204
    );
    assert_eq!(
        http(shelf.addr, "GET", "/slugs/app/v1.tgz", &auth, b"")
            .await
            .0,
        404
    );
    assert_eq!(
        http(shelf.addr, "DELETE", "/slugs/app/v1.tgz", &auth, b"")
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn without_token_or_signature_nothing_is_allowed() {
    let shelf = Shelf::start().await;
    for method in ["GET", "HEAD", "PUT", "DELETE"] {
        let (status, _, _) = http(shelf.addr, method, "/slugs/x", &[], b"x").await;
        assert_eq!(status, 401, "{method}");
    }
    let wrong = [("Authorization", "Bearer not-the-token")];
    assert_eq!(
        http(shelf.addr, "PUT", "/slugs/x", &wrong, b"x").await.0,
        401
    );
}

#[tokio::test]
async fn signed_urls_grant_exactly_their_object_and_access() {
    let shelf = Shelf::start().await;
    let rw = shelf.signed("/slugs/app/v2.tgz", Access::ReadWrite);
    let target = |url: &str| url.trim_start_matches(&shelf.base()).to_owned();
    assert_eq!(
        http(shelf.addr, "PUT", &target(&rw), &[], b"v2").await.0,
        201
    );

    let read = shelf.signed("/slugs/app/v2.tgz", Access::Read);
    let (status, _, body) = http(shelf.addr, "GET", &target(&read), &[], b"").await;
    assert_eq!((status, body.as_slice()), (200, &b"v2"[..]));
    // A read capability cannot write, and no capability can delete.
    assert_eq!(
        http(shelf.addr, "PUT", &target(&read), &[], b"evil")
            .await
            .0,
        401
    );
    assert_eq!(
        http(shelf.addr, "DELETE", &target(&rw), &[], b"").await.0,
        401
    );
    // Nor does it open another object.
    let other = target(&read).replace("v2.tgz", "v1.tgz");
    assert_eq!(http(shelf.addr, "GET", &other, &[], b"").await.0, 401);
}

#[tokio::test]
async fn a_mismatched_checksum_stores_nothing() {
    let shelf = Shelf::start().await;
    let (k, v) = bearer();
    let zeros = "0".repeat(64);
    let headers = [(k, v.as_str()), ("X-Content-SHA256", zeros.as_str())];
    let (status, _, body) = http(shelf.addr, "PUT", "/slugs/bad", &headers, b"data").await;
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("sha256"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        http(shelf.addr, "HEAD", "/slugs/bad", &[(k, v.as_str())], b"")
            .await
            .0,
        404
    );

    let good = sha(b"data");
    let headers = [(k, v.as_str()), ("X-Content-SHA256", good.as_str())];
    assert_eq!(
        http(shelf.addr, "PUT", "/slugs/good", &headers, b"data")
            .await
            .0,
        201
    );
}

#[tokio::test]
async fn an_interrupted_upload_leaves_no_object() {
    use tokio::io::AsyncWriteExt;
    let shelf = Shelf::start().await;
    let mut s = tokio::net::TcpStream::connect(shelf.addr).await.unwrap();
    let req = format!(
        "PUT /slugs/partial HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 30000000\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // Several upload parts (1 MiB on a directory), so the store has staged data to throw away.
    s.write_all(&vec![7u8; 10 << 20]).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(s);
    let (k, v) = bearer();
    // The staged upload is removed in the background once the server sees the disconnect.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let files = common::files_under(shelf.dir.path());
        if files.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "staged upload left behind: {files:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        http(
            shelf.addr,
            "HEAD",
            "/slugs/partial",
            &[(k, v.as_str())],
            b""
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn range_requests_return_the_asked_bytes() {
    let shelf = Shelf::start().await;
    let (k, v) = bearer();
    let data: Vec<u8> = (0..=255u8).collect();
    assert_eq!(
        http(shelf.addr, "PUT", "/r", &[(k, v.as_str())], &data)
            .await
            .0,
        201
    );

    let (status, headers, body) = http(
        shelf.addr,
        "GET",
        "/r",
        &[(k, v.as_str()), ("Range", "bytes=10-19")],
        b"",
    )
    .await;
    assert_eq!(status, 206);
    assert_eq!(body, &data[10..20]);
    assert_eq!(header(&headers, "content-range"), Some("bytes 10-19/256"));

    let (status, _, body) = http(
        shelf.addr,
        "GET",
        "/r",
        &[(k, v.as_str()), ("Range", "bytes=-6")],
        b"",
    )
    .await;
    assert_eq!((status, body.as_slice()), (206, &data[250..]));

    let (status, headers, _) = http(
        shelf.addr,
        "GET",
        "/r",
        &[(k, v.as_str()), ("Range", "bytes=300-")],
        b"",
    )
    .await;
    assert_eq!(status, 416);
    assert_eq!(header(&headers, "content-range"), Some("bytes */256"));
}

#[tokio::test]
async fn paths_that_escape_or_hide_are_refused() {
    let shelf = Shelf::start().await;
    let (k, v) = bearer();
    for target in ["/.tmp/x", "/a/../../etc/passwd", "/a//b", "/"] {
        let (status, _, _) = http(shelf.addr, "PUT", target, &[(k, v.as_str())], b"x").await;
        assert!(status == 400 || status == 404, "{target}: {status}");
    }
}

#[tokio::test]
async fn health_and_metrics_need_no_token() {
    let shelf = Shelf::start().await;
    assert_eq!(http(shelf.addr, "GET", "/healthz", &[], b"").await.0, 200);
    assert_eq!(http(shelf.addr, "GET", "/readyz", &[], b"").await.0, 200);
    let (k, v) = bearer();
    http(shelf.addr, "PUT", "/m", &[(k, v.as_str())], b"12345").await;
    let (status, _, body) = http(shelf.addr, "GET", "/metrics", &[], b"").await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(
        text.contains("flynn_shelf_requests_total{method=\"PUT\",code=\"201\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("flynn_shelf_received_bytes_total 5"),
        "{text}"
    );
    // The platform's common admin page: which build runs, and the process's own figures.
    assert!(
        text.contains(&format!(
            "flynn_shelf_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
}
