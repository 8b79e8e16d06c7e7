//! The router in front of real Pods: a Deployment and a Service `<app>-web` as the operator
//! makes them; the EndpointSlice controller, not the test, says which endpoints are ready.

mod support;

use std::time::Duration;

use flynn_crds::{Route, RouteSpec};
use flynn_e2e::{TestNamespace, install_flynn_crds};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::*;

const SMOKE_IMAGE: &str = "localhost/flynn-smoke:1";
const PAGE: &str = "hello from flynn-smoke";

#[tokio::test]
async fn routes_reach_real_pods_and_follow_scaling() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/cluster/test-images");
    let out = std::process::Command::new(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns = TestNamespace::create("router-pods").await;
    install_flynn_crds(ns.client()).await.unwrap();
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "smoke-web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"flynn.io/app": "smoke", "flynn.io/process": "web"}},
            "template": {
                "metadata": {"labels": {"flynn.io/app": "smoke", "flynn.io/process": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "web",
                    "image": SMOKE_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
                    "ports": [{"containerPort": 8080, "name": "web"}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
                }]}
            }
        }
    }))
    .unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "smoke-web"},
        "spec": {
            "selector": {"flynn.io/app": "smoke", "flynn.io/process": "web"},
            "ports": [{"name": "web", "port": 80, "targetPort": 8080}]
        }
    }))
    .unwrap();
    ns.api::<Service>()
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let router = router(ns.client().clone(), ns.name()).await;
    ns.api::<Route>()
        .create(
            &PostParams::default(),
            &Route::new("smoke", RouteSpec::http("smoke", "smoke.test")),
        )
        .await
        .unwrap();
    let addr = router.http_addr;
    assert!(
        router
            .wait_for(Duration::from_secs(120), |t| t
                .http
                .lookup("smoke.test", "/")
                .is_some_and(|e| e.backend.endpoints.len() == 2))
            .await,
        "two ready pods never showed up"
    );
    for _ in 0..10 {
        let got = get(addr, "smoke.test", "/").await;
        assert_eq!(got.status, 200);
        assert!(got.body.contains(PAGE), "{}", got.body);
    }

    // Scaled to zero: the endpoints go, and the router answers 503.
    ns.api::<Deployment>()
        .patch(
            "smoke-web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    eventually("503 after scaling to zero", || async {
        get(addr, "smoke.test", "/").await.status == 503
    })
    .await;
    router.shutdown(Duration::from_secs(5)).await;
}
