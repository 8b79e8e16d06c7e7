//! Apps in namespaces that enforce Pod Security "restricted" (`pod-security.kubernetes.io/
//! enforce: restricted`, version `latest`), against the local cluster's real API server and
//! node: a slug app runs as the slug user and serves, writing to `/app` and `/tmp`; an image
//! app whose image runs as root is refused by the kubelet and says why, beside its twin with
//! a non-root image, which runs.

mod common;

use std::net::SocketAddr;

use common::restricted::{
    FileServer, NONROOT_UID, SLUG_PAGE, ensure_slugrunner_image, http_get, restrict, slug_release,
    web_slug,
};
use common::*;
use flynn_crds::conditions::{reasons, types};
use flynn_crds::{App, Release};
use flynn_e2e::{SMOKE_IMAGE, SMOKE_PAGE};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// The slugrunner image's tag for this test binary (not another crate's, so tests of
/// different crates running at once never swap an image under each other).
const TAG: &str = "operator-test";

/// The pods of one App's web process.
async fn web_pods(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    list(pods, &format!("flynn.io/app={app},flynn.io/process=web")).await
}

fn pod_addr(pod: &Pod, port: u16) -> SocketAddr {
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
    SocketAddr::new(ip.expect("a running pod has an IP").parse().unwrap(), port)
}

/// The fields Pod Security "restricted" checks, on a pod the API server admitted; returns
/// its pod-level security context.
fn assert_restricted(pod: &Pod) -> serde_json::Value {
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{spec}");
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &spec["containers"][0]["securityContext"];
    assert_eq!(c["allowPrivilegeEscalation"], false, "{spec}");
    assert_eq!(c["capabilities"]["drop"], json!(["ALL"]), "{spec}");
    spec["securityContext"].clone()
}

/// The namespace really enforces "restricted": a pod without the restricted fields is
/// refused (so the apps below cannot pass for want of enforcement).
async fn assert_enforced(pods: &Api<Pod>) {
    let plain: Pod = serde_json::from_value(json!({
        "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "c", "image": SMOKE_IMAGE}]}
    }))
    .unwrap();
    let err = pods
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &plain,
        )
        .await
        .expect_err("a pod without a securityContext must be refused");
    assert!(
        err.to_string()
            .contains("violates PodSecurity \"restricted:latest\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_slug_app_runs_as_the_slug_user_under_restricted() {
    let image = tokio::task::spawn_blocking(|| ensure_slugrunner_image(TAG))
        .await
        .unwrap();
    let (ns, _op) = setup_with("op-psa-slug", |s| {
        s.slugrunner_image = image.clone();
        s.slugrunner_pull_policy = "Never".into();
    })
    .await;
    restrict(ns.client(), ns.name()).await;
    let pods: Api<Pod> = ns.api();
    assert_enforced(&pods).await;

    let slug = web_slug();
    let server = FileServer::start("py-v1.tgz", slug.bytes.clone()).await;
    let pp = PostParams::default();
    ns.api::<Release>()
        .create(&pp, &slug_release("py", 1, &server.url, &slug))
        .await
        .unwrap();
    let apps: Api<App> = ns.api();
    apps.create(&pp, &app("py", "py-v1", json!({"web": 2}), json!({})))
        .await
        .unwrap();
    eventually(
        "py to run v1 with web=2/2",
        T,
        || get(&apps, "py"),
        |a| ready(a, "py-v1", "web=2/2"),
    )
    .await;

    let web = web_pods(&pods, "py").await;
    assert_eq!(web.len(), 2);
    for pod in &web {
        let sc = assert_restricted(pod);
        assert_eq!(
            (&sc["runAsUser"], &sc["runAsGroup"], &sc["fsGroup"]),
            (&json!(1000), &json!(1000), &json!(1000)),
            "{sc}"
        );
        // It serves, from the slug unpacked into /app, and wrote there and to /tmp as the
        // slug user before it did.
        let addr = pod_addr(pod, 5000);
        let (code, body) = http_get(addr, "/").await.unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(SLUG_PAGE), "{body}");
        assert_eq!(
            http_get(addr, "/whoami.txt").await.unwrap(),
            (200, "1000\n1000\n".to_owned())
        );
        assert_eq!(
            http_get(addr, "/tmp.txt").await.unwrap(),
            (200, "tmp-ok\n".to_owned())
        );
    }
}

#[tokio::test]
async fn a_root_image_is_refused_and_says_why_beside_a_non_root_twin() {
    let (ns, _op) = setup("op-psa-image").await;
    restrict(ns.client(), ns.name()).await;
    let pods: Api<Pod> = ns.api();
    assert_enforced(&pods).await;
    let apps: Api<App> = ns.api();
    let releases: Api<Release> = ns.api();
    let pp = PostParams::default();
    // The same app twice: the smoke image, which runs as root, and its twin with a
    // numeric non-root user.
    releases
        .create(&pp, &release("rooty", 1, SMOKE_IMAGE, json!({})))
        .await
        .unwrap();
    releases
        .create(&pp, &release("twin", 1, NONROOT_IMAGE, json!({})))
        .await
        .unwrap();
    let timeout = json!({"deployTimeoutSeconds": 20});
    apps.create(
        &pp,
        &app("rooty", "rooty-v1", json!({"web": 1}), timeout.clone()),
    )
    .await
    .unwrap();
    apps.create(&pp, &app("twin", "twin-v1", json!({"web": 1}), timeout))
        .await
        .unwrap();

    eventually(
        "twin to run v1 with web=1/1",
        T,
        || get(&apps, "twin"),
        |a| ready(a, "twin-v1", "web=1/1"),
    )
    .await;
    let twin = web_pods(&pods, "twin").await;
    let sc = assert_restricted(&twin[0]);
    assert!(
        sc.get("runAsUser").is_none(),
        "an image runs as its own user ({NONROOT_UID}), none is forced: {sc}"
    );
    let (code, body) = http_get(pod_addr(&twin[0], 8080), "/").await.unwrap();
    assert_eq!((code, body.trim()), (200, SMOKE_PAGE));

    let a = eventually(
        "rooty to be Degraded",
        T,
        || get(&apps, "rooty"),
        |a| {
            a.as_ref()
                .and_then(|a| condition(a, types::DEGRADED))
                .is_some_and(|c| c.0 == "True")
        },
    )
    .await
    .unwrap();
    let (_, reason, msg) = condition(&a, types::DEGRADED).unwrap();
    assert_eq!(reason, reasons::DEPLOY_TIMED_OUT, "{msg}");
    assert!(
        msg.starts_with("release rooty-v1 did not become available within 20s: pod rooty-web-"),
        "{msg}"
    );
    assert!(
        msg.contains("process web cannot start: the image runs as root."),
        "{msg}"
    );
    assert!(
        msg.contains("set a numeric non-root user in the image (e.g. `USER 10001:10001`"),
        "{msg}"
    );
    assert!(msg.contains("no earlier release to roll back to"), "{msg}");
    // The pod was admitted (it passes "restricted"): the kubelet is what refused to start
    // it, because its image's user is root.
    let rooty = web_pods(&pods, "rooty").await;
    assert_eq!(rooty.len(), 1, "{rooty:#?}");
    assert_restricted(&rooty[0]);
    let waiting = rooty[0]
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs[0].state.as_ref())
        .and_then(|s| s.waiting.clone())
        .expect("the container waits");
    assert_eq!(
        waiting.reason.as_deref(),
        Some("CreateContainerConfigError")
    );
    assert!(
        waiting
            .message
            .unwrap_or_default()
            .contains("image will run as root"),
    );
    // The twin is untouched by its sibling's failure.
    assert!(ready(&get(&apps, "twin").await, "twin-v1", "web=1/1"));
}
