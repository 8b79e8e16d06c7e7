//! Driver for router benchmarks 2 and 3 (run by `router/benches/bench.sh`; not part of CI).
//!
//! - `churn-router NS ROUTER_ADDR`: 100 Route writes per second for 30 s through the API
//!   server (create a new host, delete an old one, flip the EndpointSlice between one and two
//!   endpoints); after each create, probes the router every 1 ms until the new host answers
//!   200, and reports the write-acknowledged → served latency.
//! - `churn-nginx CONF_DIR MASTER_PID NGINX_ADDR`: the same changes as nginx server blocks,
//!   each followed by a reload (SIGHUP), probing the same way.
//! - `scale NS N ROUTER_ADDR`: creates N Routes and waits until the last one is served.
//! - `lookup`: the matcher's lookup cost with 10 and with 10,000 hosts.
//! - `idle ADDR N PID`: the memory an idle keep-alive client connection costs process PID
//!   (the proxy serving ADDR): opens N connections, sends one request on each and reads its
//!   answer, then compares PID's RSS with what it was before.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use flynn_crds::{Route, RouteSpec};
use flynn_router::matcher::HostMatcher;
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn status(addr: SocketAddr, host: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

/// Polls every 1 ms until `host` answers 200; the elapsed time since `since`.
async fn until_served(addr: SocketAddr, host: String, since: Instant) -> Option<Duration> {
    let deadline = since + Duration::from_secs(10);
    while Instant::now() < deadline {
        if status(addr, &host).await == Some(200) {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

fn report(name: &str, mut lat: Vec<Duration>, missed: usize) {
    lat.sort();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{name}: {} changes served, {missed} never served within 10 s; write→served p50 {} p99 {} max {}",
        lat.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

fn slice(second: bool) -> serde_json::Value {
    let mut eps =
        vec![serde_json::json!({"addresses": ["10.77.250.2"], "conditions": {"ready": true}})];
    if second {
        eps.push(serde_json::json!({"addresses": ["10.77.250.3"], "conditions": {"ready": true}}));
    }
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "bench-web-1", "labels": {"kubernetes.io/service-name": "bench-web"}},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    })
}

async fn churn_router(ns: &str, addr: SocketAddr) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let routes: Api<Route> = Api::namespaced(client.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client, ns);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut probes = Vec::new();
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < Duration::from_secs(30) {
        tick.tick().await;
        // Rotate through three kinds of change, 100 writes per second in all.
        match i % 3 {
            0 => {
                let host = format!("churn-{i}.test");
                let route = Route::new(&format!("churn-{i}"), RouteSpec::http("bench", &host));
                routes.create(&PostParams::default(), &route).await?;
                let since = Instant::now();
                probes.push(tokio::spawn(until_served(addr, host, since)));
            }
            1 if i > 30 => {
                let _ = routes
                    .delete(&format!("churn-{}", i - 31), &DeleteParams::default())
                    .await;
            }
            _ => {
                slices
                    .patch(
                        "bench-web-1",
                        &PatchParams::apply("bench").force(),
                        &Patch::Apply(slice(i.is_multiple_of(2))),
                    )
                    .await?;
            }
        }
        i += 1;
    }
    let mut lat = Vec::new();
    let mut missed = 0;
    for p in probes {
        match p.await? {
            Some(d) => lat.push(d),
            None => missed += 1,
        }
    }
    println!("{i} API writes in {:.1} s", start.elapsed().as_secs_f64());
    report("router", lat, missed);
    Ok(())
}

async fn churn_nginx(dir: &str, master: &str, addr: SocketAddr) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut probes = Vec::new();
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < Duration::from_secs(30) {
        tick.tick().await;
        match i % 3 {
            0 => {
                let host = format!("churn-{i}.test");
                std::fs::write(
                    format!("{dir}/churn-{i}.conf"),
                    format!(
                        "server {{ listen {addr} ; server_name {host}; location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n"
                    ),
                )?;
            }
            1 if i > 30 => {
                let _ = std::fs::remove_file(format!("{dir}/churn-{}.conf", i - 31));
            }
            _ => {
                let servers = if i.is_multiple_of(2) {
                    "server 10.77.250.2:8080; server 10.77.250.3:8080;"
                } else {
                    "server 10.77.250.2:8080;"
                };
                std::fs::write(
                    format!("{dir}/upstream.conf"),
                    format!("upstream app {{ {servers} keepalive 256; }}\n"),
                )?;
            }
        }
        // nginx applies any change only through a reload.
        std::process::Command::new("kill")
            .args(["-HUP", master])
            .status()?;
        if i.is_multiple_of(3) {
            let since = Instant::now();
            probes.push(tokio::spawn(until_served(
                addr,
                format!("churn-{i}.test"),
                since,
            )));
        }
        i += 1;
    }
    let mut lat = Vec::new();
    let mut missed = 0;
    for p in probes {
        match p.await? {
            Some(d) => lat.push(d),
            None => missed += 1,
        }
    }
    println!("{i} reloads in {:.1} s", start.elapsed().as_secs_f64());
    report("nginx", lat, missed);
    Ok(())
}

async fn scale(ns: &str, n: usize, addr: SocketAddr) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let routes: Api<Route> = Api::namespaced(client, ns);
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let routes = routes.clone();
            async move {
                let r = Route::new(
                    &format!("scale-{i}"),
                    RouteSpec::http("bench", &format!("scale-{i}.test")),
                );
                routes.create(&PostParams::default(), &r).await.map(|_| ())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let created = start.elapsed();
    let served = until_served(addr, format!("scale-{}.test", n - 1), Instant::now()).await;
    println!(
        "{n} Routes created in {:.1} s; the last served {:?} after its write",
        created.as_secs_f64(),
        served
    );
    Ok(())
}

fn lookup() {
    for n in [10usize, 10_000] {
        let mut m = HostMatcher::default();
        for i in 0..n {
            m.insert(&format!("app{i}.example.com"), "/", i).unwrap();
            m.insert(&format!("app{i}.example.com"), "/api", i).unwrap();
        }
        let hosts: Vec<String> = (0..1024)
            .map(|i| format!("app{}.example.com", i % n))
            .collect();
        let iters = 2_000_000;
        let start = Instant::now();
        let mut hit = 0usize;
        for k in 0..iters {
            hit += m
                .lookup(&hosts[k % hosts.len()], "/api/users")
                .copied()
                .unwrap_or(0)
                & 1;
        }
        let ns = start.elapsed().as_nanos() as f64 / iters as f64;
        println!(
            "lookup with {n:>6} hosts ({} routes): {ns:.1} ns ({hit})",
            m.len()
        );
    }
}

/// VmRSS of a process, in kB.
fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// One request on a new connection, its answer read to the end; the connection stays open.
async fn one_request(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n")
        .await?;
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut chunk = [0u8; 512];
        let n = s.read(&mut chunk).await?;
        anyhow::ensure!(
            n > 0,
            "the proxy closed the connection: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        anyhow::ensure!(head.starts_with("http/1.1 200"), "answered {head:?}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no content-length in {head:?}"))?;
        if buf.len() >= end + 4 + len {
            return Ok(s);
        }
    }
}

async fn idle(addr: SocketAddr, n: usize, pid: u32) -> anyhow::Result<()> {
    let before = rss_kb(pid)?;
    let mut conns = Vec::with_capacity(n);
    // In batches: a burst of 10,000 connects overflows the listener's backlog.
    while conns.len() < n {
        let batch = (n - conns.len()).min(200);
        let opened = futures::future::try_join_all((0..batch).map(|_| one_request(addr))).await?;
        conns.extend(opened);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kb(pid)?;
    println!(
        "{n} idle keep-alive connections: RSS {before} -> {after} kB, {:.2} KiB per connection",
        after.saturating_sub(before) as f64 / n as f64
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).cloned().unwrap_or_default();
    match a(0).as_str() {
        "churn-router" => churn_router(&a(1), a(2).parse()?).await,
        "churn-nginx" => churn_nginx(&a(1), &a(2), a(3).parse()?).await,
        "scale" => scale(&a(1), a(2).parse()?, a(3).parse()?).await,
        "idle" => idle(a(1).parse()?, a(2).parse()?, a(3).parse()?).await,
        "lookup" => {
            lookup();
            Ok(())
        }
        _ => anyhow::bail!(
            "usage: bench_driver churn-router NS ADDR | churn-nginx DIR PID ADDR | scale NS N ADDR | lookup \
             | idle ADDR N PID"
        ),
    }
}
