//! What `Cache::of_app` costs as the number of Apps grows: the same lookups against a
//! cache of 100 Apps and one of 10,000, in one run, printed as a ratio (1.0 = the
//! lookup does not depend on how many Apps there are; a scan of the store would be ~100).
//!
//!   cargo run --release -p flynn-operator --example cache_bench

use std::hint::black_box;
use std::time::Instant;

use flynn_crds::Route;
use flynn_operator::cache::{Cache, Projection};
use kube::runtime::watcher;
use serde_json::json;

fn route(i: usize) -> Route {
    serde_json::from_value(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "Route",
        "metadata": {"name": format!("app{i}"), "namespace": "bench", "resourceVersion": format!("{}", i + 1),
            "uid": "1dcfd75f-5569-4fd7-bab6-80762db95d51", "generation": 1},
        "spec": {"type": "http", "app": format!("app{i}"), "process": "web",
            "http": {"domain": format!("app{i}.example.com"), "path": "/"}},
    }))
    .expect("a valid Route")
}

/// Nanoseconds per `of_app` + `claiming` pair over a cache of `apps` Apps.
fn per_lookup(apps: usize, lookups: usize) -> f64 {
    let (cache, mut feed) = Cache::<Route>::new();
    for i in 0..apps {
        feed.apply(&watcher::Event::Apply(Route::project(route(i))));
    }
    let names: Vec<(String, String)> = (0..lookups)
        .map(|i| {
            let i = (i * 7919) % apps;
            (format!("app{i}"), format!("host app{i}.example.com"))
        })
        .collect();
    let start = Instant::now();
    for (app, claim) in &names {
        assert_eq!(black_box(cache.of_app("bench", app)).len(), 1);
        assert_eq!(black_box(cache.claiming(claim)).len(), 1);
    }
    start.elapsed().as_nanos() as f64 / lookups as f64
}

fn main() {
    let lookups = 200_000;
    // Warm up, then the peer (100 Apps) and the subject (10,000 Apps) in turn, twice.
    per_lookup(100, lookups / 10);
    let mut small = f64::MAX;
    let mut large = f64::MAX;
    for _ in 0..3 {
        small = small.min(per_lookup(100, lookups));
        large = large.min(per_lookup(10_000, lookups));
    }
    println!("cache lookups (of_app + claiming), best of 3 runs of {lookups}:");
    println!("  100 Apps:    {small:.0} ns per lookup");
    println!("  10,000 Apps: {large:.0} ns per lookup");
    println!(
        "  10,000 / 100 Apps: {:.2}x (1.0 = independent of the number of Apps)",
        large / small
    );
}
