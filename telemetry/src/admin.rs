//! The admin server every long-running component runs, on a port of its own:
//!
//! | path       | answer                                                                |
//! |------------|-----------------------------------------------------------------------|
//! | `/metrics` | the component's families, `<component>_build_info`, `process_*`       |
//! | `/healthz` | 200 while the process serves at all (the kubelet's liveness probe)    |
//! | `/readyz`  | 200 when [`Component::readiness`] says so, else 503 with its reason   |
//!
//! Plain HTTP/1.1 on hyper, without a framework: four paths do not need a router, and the
//! same code serves a TCP listener and, for the router's per-process probe, a unix socket
//! ([`Admin::serve_connection`]). Every connection has a head timeout and a lifetime, so a
//! slow or idle client (a scraper that reads slowly, a port scanner) gives its descriptor
//! back.

use std::{convert::Infallible, fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::text,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
};
use tracing::{debug, info, warn};

use crate::process::Process;

/// What a component tells its admin server.
pub trait Component: Send + Sync + 'static {
    /// Writes the component's own metric families in the OpenMetrics text format, without
    /// the closing `# EOF` (`prometheus_client::encoding::text::encode_registry`).
    fn encode_metrics(&self, out: &mut String) -> fmt::Result;

    /// `Ok` when the component can do its work; `Err(why)` makes `/readyz` answer 503 with
    /// `why`, which should say what it waits for.
    fn readiness(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Time a client has to send a request head, and to send its next one on a keep-alive
/// connection (probes and scrapes send theirs at once).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an admin connection stays open.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The admin server of one component. Cheap to clone.
pub struct Admin<C> {
    component: Arc<C>,
    /// `<component>_build_info` and the process collector: no prefix, unlike the
    /// component's registry, so `process_*` keep their standard names.
    own: Arc<Registry>,
}

impl<C> Clone for Admin<C> {
    fn clone(&self) -> Self {
        Self {
            component: self.component.clone(),
            own: self.own.clone(),
        }
    }
}

impl<C> fmt::Debug for Admin<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl<C: Component> Admin<C> {
    /// `name` is the component's metric prefix (`flynn_operator`), `version` its
    /// `CARGO_PKG_VERSION`: `<name>_build_info{version}` is 1, so a dashboard can tell which
    /// build each replica runs during an upgrade.
    pub fn new(name: &str, version: &str, component: Arc<C>) -> Self {
        let mut own = Registry::default();
        let info = Family::<Vec<(&'static str, String)>, Gauge>::default();
        info.get_or_create(&vec![("version", version.to_owned())])
            .set(1);
        own.register(
            format!("{name}_build_info"),
            "The running build: its version as a label, the value is always 1",
            info,
        );
        own.register_collector(Box::new(Process));
        Self {
            component,
            own: Arc::new(own),
        }
    }

    /// The whole exposition, as `/metrics` serves it.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a family that fails to encode is a bug in its
        // labels, and the scrape says so rather than serving a truncated page.
        let r = self
            .component
            .encode_metrics(&mut out)
            .and_then(|()| text::encode_registry(&mut out, &self.own))
            .and_then(|()| text::encode_eof(&mut out));
        if let Err(e) = r {
            warn!(error = %e, "encoding the metrics failed");
            return String::new();
        }
        out
    }

    /// The answer to one request.
    pub async fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n".into());
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match path {
            "/metrics" => {
                let body = self.encode();
                if body.is_empty() {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "encoding the metrics failed (see the log)\n".into(),
                    );
                }
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
                r
            }
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => match self.component.readiness().await {
                Ok(()) => text(StatusCode::OK, "ok\n".into()),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /metrics, /healthz or /readyz\n".into(),
            ),
        }
    }

    /// Accepts on `listener` until `shutdown` resolves. Connections already open end by
    /// themselves within [`CONNECTION_LIFETIME`].
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "serving /metrics, /healthz and /readyz");
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(self.clone().serve_connection(stream));
                    }
                    // Typically EMFILE: back off instead of spinning.
                    Err(error) => {
                        warn!(%error, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    /// Serves one accepted connection (TCP or unix), within [`HEAD_TIMEOUT`] and
    /// [`CONNECTION_LIFETIME`].
    pub async fn serve_connection<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let svc = service_fn(move |req: Request<Incoming>| {
            let admin = self.clone();
            async move { Ok::<_, Infallible>(admin.respond(req.method(), req.uri().path()).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .serve_connection(TokioIo::new(io), svc);
        match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(error = %e, "admin connection ended"),
            Err(_) => debug!("admin connection open too long; closed"),
        }
    }
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A component with one counter, ready when told.
    #[derive(Debug)]
    struct Fake {
        registry: Registry,
        ready: AtomicBool,
    }

    impl Component for Fake {
        fn encode_metrics(&self, out: &mut String) -> fmt::Result {
            text::encode_registry(out, &self.registry)
        }
        async fn readiness(&self) -> Result<(), String> {
            if self.ready.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("waiting for the first table".into())
            }
        }
    }

    fn fake() -> Arc<Fake> {
        let mut registry = Registry::with_prefix("flynn_fake");
        let pushes = Counter::<u64>::default();
        pushes.inc_by(3);
        registry.register("pushes", "Pushes", pushes);
        Arc::new(Fake {
            registry,
            ready: AtomicBool::new(false),
        })
    }

    /// One request over a real socket, as a probe or a scraper sends it.
    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_over_tcp() {
        let component = fake();
        let admin = Admin::new("flynn_fake", "1.2.3", component.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(admin.serve(listener, async {
            let _ = stopped.await;
        }));
        let req =
            |path: &str| format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");

        let metrics = get(addr, &req("/metrics")).await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("application/openmetrics-text"),
            "{metrics}"
        );
        // The component's families keep their prefix; build info and process metrics are
        // there once, with their standard names, and the page ends with one EOF.
        assert!(metrics.contains("flynn_fake_pushes_total 3"), "{metrics}");
        assert!(
            metrics.contains("flynn_fake_build_info{version=\"1.2.3\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("\nprocess_resident_memory_bytes "),
            "{metrics}"
        );
        assert!(
            metrics.contains("\nprocess_cpu_seconds_total "),
            "{metrics}"
        );
        assert!(!metrics.contains("flynn_fake_process_"), "{metrics}");
        assert_eq!(metrics.matches("# EOF").count(), 1, "{metrics}");
        assert!(metrics.ends_with("# EOF\n"), "{metrics}");

        assert!(
            get(addr, &req("/healthz"))
                .await
                .starts_with("HTTP/1.1 200")
        );
        // Not ready: 503 with the component's reason; then ready.
        let not_ready = get(addr, &req("/readyz")).await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(
            not_ready.contains("waiting for the first table"),
            "{not_ready}"
        );
        component.ready.store(true, Ordering::Relaxed);
        assert!(get(addr, &req("/readyz")).await.starts_with("HTTP/1.1 200"));

        // Anything else is refused, beside the valid twins above.
        assert!(get(addr, &req("/debug")).await.starts_with("HTTP/1.1 404"));
        let post = get(
            addr,
            "POST /readyz HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        stop.send(()).unwrap();
        server.await.unwrap();
        // The listener is gone with the server.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_sends_its_head_is_closed() {
        let admin = Admin::new("flynn_fake", "1.2.3", fake());
        let (client, server) = tokio::io::duplex(1024);
        let served = tokio::spawn(admin.serve_connection(server));
        // Paused time: the head timeout fires without waiting for it.
        tokio::time::timeout(HEAD_TIMEOUT * 2, served)
            .await
            .expect("the connection was closed by the head timeout")
            .unwrap();
        drop(client);
    }
}
