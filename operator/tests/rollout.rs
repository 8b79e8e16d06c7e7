//! A rollout under load, end to end: the operator replaces an App's pods while clients send
//! it requests through the router, and no request fails.
//!
//! The requests take a second each (a CGI script that sleeps) and are POSTs, which the
//! router never repeats, and the web process exits at once on SIGTERM, as many do. So the
//! only way none fails is the whole chain: new pods get traffic only once ready, an old
//! pod's endpoint turns terminating and the router stops sending it requests, and the pod
//! keeps running (drainBackends) until the requests it has finish. With the drain delay at
//! 0, requests in flight on the stopped pods fail with 502s.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use flynn_crds::{App, Release};
use flynn_router::{Config, Router};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "slow.test.flynn.local";
/// Requests in flight at any time.
const CLIENTS: usize = 8;

/// A web process with `/cgi-bin/slow`, which answers after a second, and no SIGTERM grace.
const WEB: &str = r#"mkdir -p /tmp/www/cgi-bin && printf '#!/bin/sh\nsleep 1\necho Content-Type: text/plain\necho\necho slow done\n' > /tmp/www/cgi-bin/slow && chmod +x /tmp/www/cgi-bin/slow && trap 'exit 0' TERM; busybox httpd -f -p 8080 -h /tmp/www & wait"#;

#[tokio::test]
async fn a_rollout_under_load_fails_no_request() {
    let (ns, _op) = setup("op-rollout").await;
    let apps: Api<App> = ns.api();
    let pods: Api<Pod> = ns.api();
    let pp = PostParams::default();
    let release = with_web_script(release("slow", 1, NONROOT_IMAGE, json!({})), WEB);
    ns.api::<Release>().create(&pp, &release).await.unwrap();
    apps.create(&pp, &app("slow", "slow-v1", json!({"web": 2}), json!({})))
        .await
        .unwrap();
    eventually(
        "slow to run web=2/2",
        T,
        || get(&apps, "slow"),
        |a| ready(a, "slow-v1", "web=2/2"),
    )
    .await;

    let lo = std::net::Ipv4Addr::LOCALHOST.into();
    let config = Config {
        http_addr: SocketAddr::new(lo, 0),
        https_addr: None,
        admin_addr: SocketAddr::new(lo, 0),
        tcp_bind_ip: lo,
        namespace: Some(ns.name().to_owned()),
        ..Config::default()
    };
    let router = Router::start(ns.client().clone(), config).await.unwrap();
    assert!(
        router
            .wait_for(T, |t| t.http.lookup(HOST, "/").is_some_and(|e| e
                .backend
                .endpoints
                .len()
                == 2))
            .await,
        "the router never had both pods of the default route"
    );
    let addr = router.http_addr;
    assert_eq!(
        slow_post(addr).await,
        Ok(200),
        "a request before the rollout"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match slow_post(addr).await {
                        Ok(200) => ok += 1,
                        other => failed.push(other),
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    // A new Release (as a config change makes), and every pod replaced.
    let v2 = with_web_script(common::release("slow", 2, NONROOT_IMAGE, json!({})), WEB);
    ns.api::<Release>()
        .create(&PostParams::default(), &v2)
        .await
        .unwrap();
    merge(&apps, "slow", json!({"spec": {"release": "slow-v2"}})).await;
    eventually(
        "slow to run v2",
        T,
        || get(&apps, "slow"),
        |a| ready(a, "slow-v2", "web=2/2"),
    )
    .await;
    eventually(
        "the v1 pods to be gone",
        T,
        || list(&pods, "flynn.io/release=slow-v1"),
        |pods| pods.is_empty(),
    )
    .await;
    stop.store(true, Ordering::Relaxed);

    let (mut ok, mut failed) = (0, Vec::new());
    for client in clients {
        let (o, f) = client.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    // Each client waited out the rollout (several seconds) one second at a time.
    assert!(ok >= 3 * CLIENTS, "only {ok} requests were answered");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollout: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    router.shutdown(Duration::from_secs(5)).await;
}

/// POSTs to `/cgi-bin/slow` through the router on a connection of its own; the status, or
/// what went wrong.
async fn slow_post(router: SocketAddr) -> Result<u16, String> {
    let mut s = TcpStream::connect(router)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(
        format!(
            "POST /cgi-bin/slow HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\
             Connection: close\r\n\r\norder"
        )
        .as_bytes(),
    )
    .await
    .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut response))
        .await
        .map_err(|_| "no response in 30 s".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    if status != 200 || !text.contains("slow done\n") {
        return Err(format!("{status}: {text:?}"));
    }
    Ok(status)
}
