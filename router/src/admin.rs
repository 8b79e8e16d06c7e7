//! The operations endpoint: `/metrics`, `/healthz`, `/readyz`.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

use crate::{metrics::SharedMetrics, server::DrainSignal};

/// Serves the ops endpoints until draining finishes (the task is aborted at shutdown: probes
/// must keep answering `/readyz` 503 while connections drain).
pub async fn serve(
    listener: TcpListener,
    metrics: SharedMetrics,
    ready: Arc<AtomicBool>,
    drain: DrainSignal,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, ready, drain) = (metrics.clone(), ready.clone(), drain.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = match req.uri().path() {
                    "/metrics" => {
                        let mut r = Response::new(Full::new(Bytes::from(metrics.encode())));
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            http::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        r
                    }
                    "/healthz" => Response::new(Full::new(Bytes::from_static(b"ok\n"))),
                    "/readyz" => {
                        if drain.is_draining() {
                            status(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                        } else if ready.load(Ordering::SeqCst) {
                            Response::new(Full::new(Bytes::from_static(b"ok\n")))
                        } else {
                            status(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "waiting for the first routing table\n",
                            )
                        }
                    }
                    _ => status(StatusCode::NOT_FOUND, "not found\n"),
                };
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn status(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = code;
    r
}
