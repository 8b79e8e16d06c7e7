//! Memory the caches hold per App, by kind, without a cluster: the objects of one
//! converged App (`fixtures/hello-objects.json`, taken from the demo app: App, Release,
//! Formation, Route, Deployment, Service) copied under N names, projected and fed to the
//! caches as a watch would, one object at a time, the growth of the process's RSS read
//! after each kind (so the allocator's overhead counts, as it does in the operator). The peer is the same
//! objects held whole (the k8s-openapi/CRD structs, what a plain kube reflector keeps).
//!
//! This is the quick loop for the cache layout; the operator's RSS under load is
//! `scale_bench`'s figure (it adds the allocator's fragmentation and the runtime).
//!
//!   cargo run --release -p flynn-operator --example cache_memory [APPS]

use flynn_operator::cache::{
    AppView, Cache, DeploymentView, FormationView, Projection, ReleaseView, RouteView, ServiceView,
};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The process's resident set, in bytes.
fn rss() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's resident pages");
    pages * 4096.0
}

/// The fixture object of `kind`, renamed for App number `i` (name, app references and
/// uid change, as they do between Apps).
fn object(fixture: &Value, kind: &str, i: usize) -> Value {
    let text = fixture[kind].to_string();
    let text = text
        .replace("hello", &format!("app{i:05}"))
        .replace("d9643e81", &format!("{i:08x}"));
    let mut v: Value = serde_json::from_str(&text).expect("JSON");
    v["metadata"]["resourceVersion"] = Value::String(format!("{}", 100_000 + i));
    v["metadata"]["uid"] = Value::String(format!("{i:08x}-0000-4000-8000-{i:012x}"));
    v
}

/// Bytes of RSS per object a cache of `P` adds over `apps` objects, and what the whole
/// objects kept in a Vec add (the peer). Both are kept until the end of the run, so no
/// kind reuses memory another freed.
fn per_object<P: Projection>(
    fixture: &Value,
    kind: &str,
    apps: usize,
    keep: &mut Vec<Box<dyn std::any::Any>>,
) -> (f64, f64)
where
    P::Kind: DeserializeOwned,
{
    let parse = |i: usize| -> P::Kind {
        serde_json::from_value(object(fixture, kind, i)).expect("a valid object")
    };
    let before = rss();
    let (cache, mut feed) = Cache::<P>::new();
    feed.apply(&watcher::Event::Init);
    for i in 0..apps {
        feed.apply(&watcher::Event::InitApply(P::project(parse(i))));
    }
    feed.apply(&watcher::Event::InitDone);
    let cached = rss() - before;
    assert_eq!(cache.store().state().len(), apps);

    let before = rss();
    let whole: Vec<P::Kind> = (0..apps).map(parse).collect();
    let whole_bytes = rss() - before;
    keep.push(Box::new((cache, whole)));
    std::mem::forget(feed); // its writer keeps the store: kept with it, to the end
    (cached / apps as f64, whole_bytes / apps as f64)
}

fn main() {
    let apps: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("APPS is a number"))
        .unwrap_or(20_000);
    let fixture: Value = serde_json::from_str(include_str!("fixtures/hello-objects.json"))
        .expect("fixtures/hello-objects.json");
    let mut keep = Vec::new();
    let rows = [
        (
            "App",
            per_object::<AppView>(&fixture, "app", apps, &mut keep),
        ),
        (
            "Release",
            per_object::<ReleaseView>(&fixture, "release", apps, &mut keep),
        ),
        (
            "Formation",
            per_object::<FormationView>(&fixture, "formation", apps, &mut keep),
        ),
        (
            "Route",
            per_object::<RouteView>(&fixture, "route", apps, &mut keep),
        ),
        (
            "Deployment",
            per_object::<DeploymentView>(&fixture, "deployment", apps, &mut keep),
        ),
        (
            "Service",
            per_object::<ServiceView>(&fixture, "service", apps, &mut keep),
        ),
    ];
    println!("RSS added per App by the caches ({apps} Apps); peer: the whole objects in a Vec");
    let (mut total, mut peer) = (0.0, 0.0);
    for (kind, (cached, whole)) in rows {
        println!("  {kind:<11} {cached:>7.0} B   whole {whole:>7.0} B");
        total += cached;
        peer += whole;
    }
    println!(
        "  total       {total:>7.0} B = {:.2} KiB   whole {peer:>7.0} B = {:.2} KiB ({:.2}x)",
        total / 1024.0,
        peer / 1024.0,
        total / peer
    );
}
