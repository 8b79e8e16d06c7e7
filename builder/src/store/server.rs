//! The slug store's HTTP API.
//!
//! | request | auth | does |
//! | --- | --- | --- |
//! | `PUT /<path>` | bearer token or signed URL with `access=rw` | stores the body atomically; `X-Content-SHA256` makes it checked |
//! | `GET`/`HEAD /<path>` | bearer token or signed URL | streams the object; `Range: bytes=...` |
//! | `DELETE /<path>` | bearer token | removes the object |
//! | `GET /healthz`, `/readyz`, `/metrics` | none | liveness, readiness (the backend answers), Prometheus |
//!
//! The last three are `flynn_telemetry`'s admin endpoints, mounted on the API's port rather
//! than one of their own: every client of the store (build Jobs, app pods, the receiver)
//! already reaches this port, and the chart's test checks readiness through the Service.

use std::{future::Future, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use flynn_telemetry::{Admin, Component};
use tokio::net::TcpListener;

use super::{ObjectPath, SHA256_HEADER, Store, StoreError, metrics::Metrics};
use crate::signing::{Access, Capability, SigningKey};

/// What the handlers share.
#[derive(Debug)]
pub struct Shelf {
    /// Where objects live.
    pub store: Store,
    /// The bearer token that allows everything.
    pub token: String,
    /// Verifies signed read URLs.
    pub key: SigningKey,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
}

impl Shelf {
    /// A shelf over `store` whose token also signs read URLs (the platform's components all
    /// hold the token, so one secret is enough; see the crate README).
    /// `store` is any backend: a [`super::LocalStore`], or a [`Store`] from
    /// [`super::BackendSettings::open`].
    pub fn new(store: impl Into<Store>, token: String) -> Self {
        let key = SigningKey::new(token.as_bytes());
        Self {
            store: store.into(),
            token,
            key,
            metrics: Metrics::default(),
        }
    }
}

/// The axum router of the API.
pub fn router(shelf: Arc<Shelf>) -> Router {
    let admin = Admin::new("flynn_shelf", env!("CARGO_PKG_VERSION"), shelf.clone());
    let admin = move |req: Request| {
        let admin = admin.clone();
        async move { admin.respond(req.method(), req.uri().path()).await }
    };
    Router::new()
        .route("/healthz", get(admin.clone()))
        .route("/readyz", get(admin.clone()))
        .route("/metrics", get(admin))
        .fallback(object)
        .with_state(shelf)
}

/// Serves the API on `listener` until `shutdown` completes, then finishes open requests.
pub async fn serve(
    listener: TcpListener,
    shelf: Arc<Shelf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shelf))
        .with_graceful_shutdown(shutdown)
        .await
}

impl Component for Shelf {
    fn encode_metrics(&self, out: &mut String) -> std::fmt::Result {
        self.metrics.encode(out)
    }

    /// Ready when the backend answers, so a Service stops sending requests to a shelf whose
    /// bucket is unreachable or whose credentials were revoked.
    async fn readiness(&self) -> Result<(), String> {
        self.store.check().await.map_err(|e| {
            tracing::warn!(error = %e, "not ready: the backend does not answer");
            e.to_string()
        })
    }
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    m.push('\n');
    (code, m).into_response()
}

async fn object(State(shelf): State<Arc<Shelf>>, req: Request) -> Response {
    let method = req.method().clone();
    let resp = handle(&shelf, req).await;
    shelf
        .metrics
        .request(method.as_str(), resp.status().as_u16());
    resp
}

async fn handle(shelf: &Shelf, req: Request) -> Response {
    let path = match ObjectPath::parse(req.uri().path()) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let method = req.method().clone();
    if !authorized(shelf, req.headers(), req.uri().query(), &path, &method) {
        tracing::debug!(%path, %method, "unauthorized");
        return text(
            StatusCode::UNAUTHORIZED,
            "unauthorized: send `Authorization: Bearer <token>`, or use a signed URL (reads, and uploads with access=rw)",
        );
    }
    match method {
        Method::PUT => put(shelf, &path, req).await,
        Method::GET | Method::HEAD => {
            read(shelf, &path, req.headers(), method == Method::HEAD).await
        }
        Method::DELETE => match shelf.store.delete(&path).await {
            Ok(true) => StatusCode::NO_CONTENT.into_response(),
            Ok(false) => not_found(&path),
            Err(e) => server_error(e),
        },
        _ => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET, HEAD, PUT or DELETE",
            );
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, PUT, DELETE"),
            );
            r
        }
    }
}

fn authorized(
    shelf: &Shelf,
    headers: &HeaderMap,
    query: Option<&str>,
    path: &ObjectPath,
    method: &Method,
) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(token) = bearer {
        // Compare HMACs rather than the strings: constant time without a second primitive.
        return shelf.key.sign(Access::Read, token, None)
            == shelf.key.sign(Access::Read, &shelf.token, None);
    }
    let needed = match *method {
        Method::GET | Method::HEAD => Access::Read,
        Method::PUT => Access::ReadWrite,
        _ => return false,
    };
    let cap = Capability::from_query(query.unwrap_or_default());
    shelf.key.verify(&path.to_string(), needed, &cap)
}

async fn put(shelf: &Shelf, path: &ObjectPath, req: Request) -> Response {
    let expected = match req.headers().get(SHA256_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) if crate::digest::is_sha256_hex(v) => Some(v.to_owned()),
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("{SHA256_HEADER} must be 64 hex digits"),
            );
        }
    };
    let body = req.into_body().into_data_stream();
    match shelf.store.put(path, body, expected.as_deref()).await {
        Ok(stored) => {
            shelf.metrics.bytes_received.inc_by(stored.size);
            tracing::info!(%path, size = stored.size, sha256 = %stored.sha256, "stored");
            (StatusCode::CREATED, axum::Json(stored)).into_response()
        }
        Err(e @ (StoreError::ChecksumMismatch { .. } | StoreError::BadPath(_))) => {
            text(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e @ StoreError::Interrupted(_)) => {
            tracing::warn!(%path, error = %e, "upload failed");
            text(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => server_error(e),
    }
}

fn server_error(e: StoreError) -> Response {
    tracing::error!(error = %e, "store failure");
    text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// A parsed single-range `Range` header, as an inclusive byte range within `len`.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// No usable Range header: the whole object.
    Full,
    /// `start..=end`.
    Part(u64, u64),
    /// A range outside the object (416).
    Unsatisfiable,
}

/// Parses `Range: bytes=a-b | a- | -n` against an object of `len` bytes. Multiple ranges and
/// other units are ignored (the whole object is sent), which RFC 9110 allows.
pub fn parse_range(value: Option<&str>, len: u64) -> RangeSpec {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeSpec::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
        (Ok(start), Err(_)) if b.is_empty() => (start, len.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => (len.saturating_sub(n), len.saturating_sub(1)),
        _ => return RangeSpec::Full,
    };
    if len == 0 || range.0 >= len {
        RangeSpec::Unsatisfiable
    } else {
        RangeSpec::Part(range.0, range.1)
    }
}

/// How often a ranged read starts over when the object is replaced between its lookup and
/// its read.
const RANGE_ATTEMPTS: usize = 3;

async fn read(shelf: &Shelf, path: &ObjectPath, headers: &HeaderMap, head: bool) -> Response {
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // A plain GET is one backend request; the object's size comes with it.
    if !head && range_header.is_none() {
        return match shelf.store.get(path, None, None).await {
            Ok(Some(d)) => {
                shelf.metrics.bytes_sent.inc_by(d.size);
                object_response(StatusCode::OK, d.size, 0..d.size, Body::from_stream(d.body))
            }
            Ok(None) => not_found(path),
            Err(e) => server_error(e),
        };
    }
    // HEAD and ranges need the size first; the read then names the version it sized, so a
    // concurrent replacement fails the read (and starts it over) instead of mixing objects.
    for _ in 0..RANGE_ATTEMPTS {
        let info = match shelf.store.head(path).await {
            Ok(Some(info)) => info,
            Ok(None) => return not_found(path),
            Err(e) => return server_error(e),
        };
        let len = info.size;
        let (status, range) = match parse_range(range_header, len) {
            RangeSpec::Full => (StatusCode::OK, 0..len),
            RangeSpec::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s..e + 1),
            RangeSpec::Unsatisfiable => {
                let mut r = text(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("the object has {len} bytes"),
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
        };
        if head {
            return object_response(status, len, range, Body::empty());
        }
        let want = (status == StatusCode::PARTIAL_CONTENT).then(|| range.clone());
        match shelf.store.get(path, want, info.e_tag.as_deref()).await {
            Ok(Some(d)) => {
                shelf.metrics.bytes_sent.inc_by(d.range.end - d.range.start);
                return object_response(status, d.size, d.range, Body::from_stream(d.body));
            }
            Ok(None) => return not_found(path),
            Err(StoreError::Changed) => {
                tracing::debug!(%path, "object replaced during a ranged read; retrying");
            }
            Err(e) => return server_error(e),
        }
    }
    server_error(StoreError::Changed)
}

fn not_found(path: &ObjectPath) -> Response {
    text(StatusCode::NOT_FOUND, format!("no object at {path}"))
}

/// The response for `range` of an object of `len` bytes.
fn object_response(
    status: StatusCode,
    len: u64,
    range: std::ops::Range<u64>,
    body: Body,
) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, range.end - range.start);
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{len}", range.start, range.end - 1),
        );
    }
    builder
        .body(body)
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range(None, 10), RangeSpec::Full);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), RangeSpec::Part(0, 3));
        assert_eq!(parse_range(Some("bytes=5-"), 10), RangeSpec::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=-4"), 10), RangeSpec::Part(6, 9));
        assert_eq!(parse_range(Some("bytes=-40"), 10), RangeSpec::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), RangeSpec::Part(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeSpec::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeSpec::Full);
    }
}
