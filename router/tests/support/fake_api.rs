//! A Kubernetes API server that knows a fixed set of Routes and EndpointSlices, for the
//! tests that need no cluster (`edge.rs`, `handover.rs`): their backends listen on loopback,
//! which the real API server refuses in an EndpointSlice. Lists return the objects; watches
//! stay open and quiet.
//!
//! Included with `#[path = "support/fake_api.rs"] mod fake_api;` (not through
//! `support/mod.rs`, whose network namespaces and cluster helpers these tests do not use).

#![allow(dead_code)]

use std::{convert::Infallible, net::SocketAddr, path::Path};

use bytes::Bytes;
use flynn_crds::{Route, RouteSpec};
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{
    body::{Frame, Incoming},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The body of every response [`serve`] sends.
pub type Body = BoxBody<Bytes, Infallible>;

/// Serves HTTP/1.1 (with upgrades) on a loopback port with `answer`.
pub async fn serve<F>(answer: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Response<Body> + Clone + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let resp = answer(req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Route `name` in `namespace`, as the API server would list it.
pub fn route(namespace: &str, name: &str, spec: RouteSpec) -> Value {
    let mut route = serde_json::to_value(Route::new(name, spec)).unwrap();
    route["metadata"] = json!({
        "name": name,
        "namespace": namespace,
        "uid": format!("uid-{name}"),
        "resourceVersion": "1",
        "generation": 1,
        "creationTimestamp": "2026-01-01T00:00:00Z",
    });
    route
}

/// The EndpointSlice of App `app`'s `web` Service in `namespace`: one ready endpoint,
/// `backend`.
pub fn slice(namespace: &str, app: &str, backend: SocketAddr) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{app}-web-1"),
            "namespace": namespace,
            "resourceVersion": "1",
            "labels": {"kubernetes.io/service-name": format!("{app}-web")},
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": backend.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [backend.ip().to_string()], "conditions": {"ready": true}}],
    })
}

/// The API server: lists of Routes answer `routes`, of EndpointSlices `slices`, of anything
/// else nothing; every watch stays open and sends nothing.
pub async fn fake_api(routes: Vec<Value>, slices: Vec<Value>) -> SocketAddr {
    serve(move |req| {
        let watch = req.uri().query().unwrap_or("").contains("watch=true");
        let items = match req.uri().path().rsplit('/').next() {
            Some("routes") => routes.clone(),
            Some("endpointslices") => slices.clone(),
            _ => vec![],
        };
        let mut resp = if watch {
            Response::new(
                StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, Infallible>>())
                    .boxed(),
            )
        } else {
            let list = json!({
                "apiVersion": "v1",
                "kind": "List",
                "metadata": {"resourceVersion": "1"},
                "items": items,
            });
            Response::new(Full::new(Bytes::from(list.to_string())).boxed())
        };
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        resp
    })
    .await
}

/// Writes a kubeconfig at `path` that points at the fake API server `api` (for the
/// `flynn-router` binary).
pub fn write_kubeconfig(path: &Path, api: SocketAddr) {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": format!("http://{api}")}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    });
    // JSON is YAML.
    std::fs::write(path, config.to_string()).unwrap();
}
