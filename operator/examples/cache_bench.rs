//! What `Cache::of_app` costs as the number of Apps grows: the same lookups against a
//! cache of 100 Apps and one of 10,000, in one run, printed as a ratio, beside the same
//! ratio for a scan of the store (what `of_app` did before the index), the peer. An index
//! lookup's ratio stays near 1 (what grows is only the CPU caches' misses on a larger
//! heap); a scan's grows with the number of Apps (about 100).
//!
//!   cargo run --release -p flynn-operator --example cache_bench

use std::hint::black_box;
use std::time::Instant;

use flynn_crds::Route;
use flynn_operator::cache::RouteView;
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

/// Nanoseconds per `of_app` + `claiming` pair over a cache of `apps` Apps; with `scan`,
/// per scan of the store for the same App instead.
fn per_lookup(apps: usize, lookups: usize, scan: bool) -> f64 {
    let (cache, mut feed) = Cache::<RouteView>::new();
    for i in 0..apps {
        feed.apply(&watcher::Event::Apply(RouteView::project(route(i))));
    }
    let names: Vec<(String, String)> = (0..lookups)
        .map(|i| {
            let i = (i * 7919) % apps;
            (format!("app{i}"), format!("host app{i}.example.com"))
        })
        .collect();
    let start = Instant::now();
    for (app, claim) in &names {
        if scan {
            let found = cache
                .store()
                .state()
                .into_iter()
                .filter(|r| r.spec.app == *app)
                .count();
            assert_eq!(black_box(found), 1);
        } else {
            assert_eq!(black_box(cache.of_app("bench", app)).len(), 1);
            assert_eq!(black_box(cache.claiming(claim)).len(), 1);
        }
    }
    start.elapsed().as_nanos() as f64 / lookups as f64
}

fn main() {
    let lookups = 200_000;
    // Warm up, then the small cache and the large one in turn, best of three.
    per_lookup(100, lookups / 10, false);
    let best = |apps: usize, n: usize, scan: bool| {
        (0..3)
            .map(|_| per_lookup(apps, n, scan))
            .fold(f64::MAX, f64::min)
    };
    let (small, large) = (best(100, lookups, false), best(10_000, lookups, false));
    let (small_scan, large_scan) = (best(100, 20_000, true), best(10_000, 200, true));
    println!("cache lookups, best of 3 runs:");
    println!(
        "  index (of_app + claiming): 100 Apps {small:.0} ns, 10,000 Apps {large:.0} ns = {:.2}x",
        large / small
    );
    println!(
        "  peer, a scan of the store: 100 Apps {small_scan:.0} ns, 10,000 Apps {large_scan:.0} ns = {:.2}x",
        large_scan / small_scan
    );
}
