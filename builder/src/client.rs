//! A small streaming HTTP(S) client for the slug store and slug URLs.
//!
//! hyper-util's client (as kube's), with rustls on ring and the system's CA certificates.
//! Bodies stream both ways: slugs go from a file to the socket and from the socket into the
//! tar decoder, never whole into memory.

use std::{io, path::Path, sync::Arc};

use bytes::Bytes;
use futures::TryStreamExt;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::store::SHA256_HEADER;

type Body = BoxBody<Bytes, io::Error>;

/// How long connecting to a server may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// How long a refused or failed connection is retried. A store that was just started
/// (or whose Service kube-proxy has not programmed yet) refuses for a moment; since no
/// byte of the request was sent, retrying is safe for every method.
const CONNECT_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// An HTTP request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not an http(s) URL.
    #[error("`{0}` is not a valid http(s) URL")]
    BadUrl(String),
    /// Connecting or talking to the server failed.
    #[error("{method} {url}: {source}")]
    Transport {
        /// The method.
        method: Method,
        /// The URL, without its query (which may hold a signature).
        url: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with an error status.
    #[error("{method} {url}: the server answered {status}: {body}")]
    Status {
        /// The method.
        method: Method,
        /// The URL, without its query.
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the response body (the store explains its refusals there).
        body: String,
    },
    /// Reading a local file to upload failed.
    #[error("reading {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The client; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Body>,
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("token", &self.token.as_ref().map(|_| ".."))
            .finish()
    }
}

fn redact(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

/// The HTTP(S) connector of every client in the crate (this one, and the store's object
/// storage backends): rustls on ring with the system's CA certificates, plain http allowed
/// (the in-cluster store), a bounded connect time.
pub(crate) fn https_connector() -> HttpsConnector<HttpConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(b) => b,
        Err(e) => {
            // A minimal image may lack CA certificates; plain http (the in-cluster store)
            // still works, https fails at handshake with a clear rustls error.
            tracing::debug!(error = %e, "no system CA certificates; https will not verify");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                })
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    // A store that does not answer must fail the build or the app start, not hang it.
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    builder.https_or_http().enable_http1().wrap_connector(http)
}

impl HttpClient {
    /// A client that sends `token` as a bearer token when given (to the store), or nothing
    /// (for signed URLs).
    pub fn new(token: Option<String>) -> Self {
        let connector = https_connector();
        let inner = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            inner,
            token: token.map(Into::into),
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Body,
        headers: &[(&str, String)],
    ) -> Result<http::Response<Incoming>, ClientError> {
        let uri: http::Uri = url.parse().map_err(|_| ClientError::BadUrl(redact(url)))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(ClientError::BadUrl(redact(url)));
        }
        let mut req = Request::builder().method(method.clone()).uri(uri);
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(body)
            .map_err(|_| ClientError::BadUrl(redact(url)))?;
        let resp = self
            .inner
            .request(req)
            .await
            .map_err(|e| ClientError::Transport {
                method: method.clone(),
                url: redact(url),
                source: Box::new(e),
            })?;
        Ok(resp)
    }

    /// [`Self::send`], retried while the connection itself fails (see
    /// [`CONNECT_RETRY_FOR`]); `body` makes a fresh body for each attempt.
    async fn send_retrying<F, Fut>(
        &self,
        method: Method,
        url: &str,
        body: F,
        headers: &[(&str, String)],
    ) -> Result<http::Response<Incoming>, ClientError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Body, ClientError>>,
    {
        let deadline = tokio::time::Instant::now() + CONNECT_RETRY_FOR;
        let mut pause = std::time::Duration::from_millis(200);
        loop {
            match self.send(method.clone(), url, body().await?, headers).await {
                Err(ClientError::Transport { source, .. })
                    if is_connect_error(source.as_ref())
                        && tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(url = %redact(url), error = %source, "connecting failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    async fn check(
        method: Method,
        url: &str,
        resp: http::Response<Incoming>,
    ) -> Result<http::Response<Incoming>, ClientError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = match resp.into_body().collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes())
                .chars()
                .take(500)
                .collect::<String>(),
            Err(_) => String::new(),
        };
        Err(ClientError::Status {
            method,
            url: redact(url),
            status,
            body: body.trim().to_owned(),
        })
    }

    /// GETs `url` as a byte stream and its length when announced; `None` on 404.
    pub async fn get(
        &self,
        url: &str,
    ) -> Result<Option<(impl AsyncRead + Send + Unpin + 'static, Option<u64>)>, ClientError> {
        let resp = self
            .send_retrying(Method::GET, url, || async { Ok(empty()) }, &[])
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = Self::check(Method::GET, url, resp).await?;
        let len = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let stream = resp
            .into_body()
            .into_data_stream()
            .map_err(io::Error::other);
        Ok(Some((StreamReader::new(stream), len)))
    }

    /// PUTs the file at `path` to `url`, streaming; with `sha256`, the store checks it.
    pub async fn put_file(
        &self,
        url: &str,
        path: &Path,
        sha256: Option<&str>,
    ) -> Result<(), ClientError> {
        let file_err = |source| ClientError::File {
            path: path.display().to_string(),
            source,
        };
        let len = tokio::fs::metadata(path).await.map_err(file_err)?.len();
        let mut headers = vec![(header::CONTENT_LENGTH.as_str(), len.to_string())];
        if let Some(s) = sha256 {
            headers.push((SHA256_HEADER, s.to_owned()));
        }
        let body = || async {
            let file = tokio::fs::File::open(path).await.map_err(file_err)?;
            let stream = ReaderStream::with_capacity(file, 256 * 1024).map_ok(Frame::data);
            Ok(BodyExt::boxed(StreamBody::new(stream)))
        };
        let resp = self.send_retrying(Method::PUT, url, body, &headers).await?;
        Self::check(Method::PUT, url, resp).await?;
        Ok(())
    }

    /// DELETEs `url`; a missing object is not an error.
    pub async fn delete(&self, url: &str) -> Result<(), ClientError> {
        let resp = self
            .send_retrying(Method::DELETE, url, || async { Ok(empty()) }, &[])
            .await?;
        if resp.status() != StatusCode::NOT_FOUND {
            Self::check(Method::DELETE, url, resp).await?;
        }
        Ok(())
    }
}

/// Whether an error of the HTTP client is a failure to connect (nothing was sent).
fn is_connect_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    e.downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(hyper_util::client::legacy::Error::is_connect)
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}
