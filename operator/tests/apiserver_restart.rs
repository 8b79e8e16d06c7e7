//! The operator converges after the API server restarts mid-reconcile. Its own test
//! binary: cargo runs test binaries one at a time, so no other test sees the restart.

mod common;
use common::*;

use flynn_crds::{App, Release};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

#[tokio::test]
async fn the_operator_converges_after_an_api_server_restart() {
    let (ns, _op) = setup("op-restart").await;
    let apps: Api<App> = ns.api();
    let releases: Api<Release> = ns.api();
    let pp = PostParams::default();
    releases
        .create(&pp, &release("rs", 1, NONROOT_IMAGE, json!({})))
        .await
        .unwrap();
    apps.create(
        &pp,
        &app("rs", "rs-v1", json!({"web": 1, "worker": 1}), json!({})),
    )
    .await
    .unwrap();

    // Restart while the operator is creating the Formation, Deployments and Services.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/cluster/restart");
    let out = tokio::process::Command::new(script)
        .arg("kube-apiserver")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{script} kube-apiserver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The operator's watches reconnect with kube's backoff (up to 30 s between tries)
    // and failed reconciles back off too: recovery takes about a minute here.
    eventually(
        "rs to run v1 after the restart",
        std::time::Duration::from_secs(240),
        || get(&apps, "rs"),
        |a| ready(a, "rs-v1", "web=1/1 worker=1/1"),
    )
    .await;
    // The watches came back: a change made after the restart is seen and rolled out.
    ns.api::<Release>()
        .create(&pp, &release("rs", 2, NONROOT_IMAGE, json!({})))
        .await
        .unwrap();
    merge(&apps, "rs", json!({"spec": {"release": "rs-v2"}})).await;
    eventually(
        "rs to run v2",
        T,
        || get(&apps, "rs"),
        |a| ready(a, "rs-v2", "web=1/1 worker=1/1"),
    )
    .await;
}
