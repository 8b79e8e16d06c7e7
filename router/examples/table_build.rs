//! Benchmark: building the routing table from 10,000 Routes (two namespaces contending for
//! every other host, as a crowded shared cluster would), against a peer measured in the same
//! run: inserting the same hosts and paths into a bare `HostMatcher`, the least any table
//! build must do. Prints both medians and their ratio.
//!
//! `cargo run --release -p flynn-router --example table_build [ROUTES (10000)] [ROUNDS (15)]`

use std::{sync::Arc, time::Instant};

use flynn_crds::{Route, RouteSpec};
use flynn_router::{
    matcher::HostMatcher,
    metrics::Metrics,
    watch::{Builder, Index},
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

fn route(ns: &str, name: &str, domain: &str, path: &str, created: i64) -> Route {
    let mut spec = RouteSpec::http(name, domain);
    if let Some(h) = spec.http.as_mut() {
        h.path = path.to_owned();
    }
    let mut r = Route::new(name, spec);
    r.metadata.namespace = Some(ns.to_owned());
    r.metadata.generation = Some(1);
    r.metadata.creation_timestamp = Some(Time(
        Timestamp::from_second(1_700_000_000 + created).expect("a valid time"),
    ));
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(15);
    // Host i/2: namespace a's `/`, then namespace b's `/login` of the same host.
    let routes: Vec<Route> = (0..n)
        .map(|i| {
            let (ns, path) = if i % 2 == 0 {
                ("a", "/")
            } else {
                ("b", "/login")
            };
            let i64_i = i64::try_from(i).unwrap_or(i64::MAX);
            route(
                ns,
                &format!("r{i}"),
                &format!("app{}.example.com", i / 2),
                path,
                i64_i,
            )
        })
        .collect();
    let metrics = Arc::new(Metrics::new());
    let mut index = Index::default();
    for r in &routes {
        index.apply_route(r);
    }
    let mut builder = Builder::default();
    let (mut build, mut floor) = (Vec::new(), Vec::new());
    let mut served = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let table = builder.build(&index, &metrics);
        build.push(t.elapsed().as_secs_f64() * 1e3);
        served = table.http.len();

        let t = Instant::now();
        let mut m = HostMatcher::default();
        for r in &routes {
            if let Some(h) = &r.spec.http {
                let _ = m.insert(&h.domain, &h.path, ());
            }
        }
        floor.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&m);
    }
    let (b, f) = (median(build), median(floor));
    println!(
        "{n} Routes, {served} served: table build {b:.2} ms, bare matcher inserts {f:.2} ms, ratio {:.1}",
        b / f
    );
}
