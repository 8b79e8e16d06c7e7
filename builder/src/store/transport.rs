//! object_store's HTTP transport, on the crate's own hyper-util client.
//!
//! object_store's built-in transport is reqwest, whose rustls support brings aws-lc-rs (a
//! second TLS crypto library, with a C and assembler build). Its `-base` features leave
//! reqwest out and take any [`HttpConnector`]: this one is hyper-util's pooled client with
//! rustls on ring ([`crate::client::https_connector`]), so the build keeps one TLS stack.
//!
//! object_store retries and signs requests itself; the transport only moves them.

use std::{error::Error as StdError, fmt, future::Future, pin::Pin, time::Duration};

use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector as TcpConnector},
    rt::TokioExecutor,
};
use object_store::{
    ClientConfigKey, ClientOptions,
    client::{
        HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
        HttpResponse, HttpResponseBody, HttpService,
    },
};

/// How long a request may wait for the response's headers. Not a limit on the body: a
/// slug download streams for as long as it takes (object_store's reqwest default, a total
/// request timeout of 30 s, would cut large downloads short).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes object_store's HTTP clients out of hyper-util.
#[derive(Debug, Default, Clone, Copy)]
pub struct HyperConnector;

impl HttpConnector for HyperConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        // reqwest enforces `allow_http` as `https_only`; a custom transport has to do it.
        let allow_http = options
            .get_config_value(&ClientConfigKey::AllowHttp)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(crate::client::https_connector());
        Ok(HttpClient::new(HyperService { client, allow_http }))
    }
}

struct HyperService {
    client: Client<HttpsConnector<TcpConnector>, HttpRequestBody>,
    allow_http: bool,
}

impl fmt::Debug for HyperService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperService")
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

/// A plain-http URL while `allow_http` is off.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing plain http to {0}: allow it for an http:// endpoint (the shelf does when the S3 endpoint is http://)"
)]
struct HttpNotAllowed(String);

/// No response headers within [`RESPONSE_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
#[error("no response within {RESPONSE_TIMEOUT:?}")]
struct ResponseTimeout;

impl HyperService {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if !self.allow_http && req.uri().scheme_str() == Some("http") {
            let authority = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            return Err(HttpError::new(
                HttpErrorKind::Unknown,
                HttpNotAllowed(authority),
            ));
        }
        let resp = tokio::time::timeout(RESPONSE_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| HttpError::new(HttpErrorKind::Timeout, ResponseTimeout))?
            .map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
        let (parts, body) = resp.into_parts();
        let body = body.map_err(|e| HttpError::new(body_error_kind(&e), e));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

/// How object_store should treat a failure while reading a response body: a connection that
/// went away mid-body is `Interrupted` (retried for idempotent requests), anything else is
/// not retried.
fn body_error_kind(e: &hyper::Error) -> HttpErrorKind {
    if e.is_timeout() {
        return HttpErrorKind::Timeout;
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return HttpErrorKind::Interrupted;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ) {
                return HttpErrorKind::Interrupted;
            }
        }
        source = s.source();
    }
    HttpErrorKind::Unknown
}

// `HttpService` is an `#[async_trait]` trait; this is the signature the macro would write,
// spelled out so the crate needs no async-trait dependency of its own.
impl HttpService for HyperService {
    fn call<'life0, 'async_trait>(
        &'life0 self,
        req: HttpRequest,
    ) -> Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.send(req))
    }
}
