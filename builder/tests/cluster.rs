//! In the local cluster (`e2e/cluster/up`): the slug store as a Pod, a build as a Job that
//! reports its result in the termination message, and the slug running in a Pod that
//! serves HTTP on `$PORT`. The images are built from the binaries cargo built for this test
//! (`builder/image/build --bin-dir`), so the test checks this code, not a stale image.
//! Fails, never skips, without a cluster.

mod common;

use std::{path::Path, time::Duration};

use common::{TOKEN, fixtures};
use flynn_builder::{
    build::BuildResult,
    signing::{Access, SigningKey, unix_now},
};
use flynn_e2e::{TestNamespace, eventually};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ConfigMap, Pod, Service},
};
use kube::{
    Api,
    api::{LogParams, PostParams},
};
use serde_json::json;

const TAG: &str = "test";

fn build_images() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_slugrunner"))
        .parent()
        .unwrap();
    flynn_e2e::load_builder_images(bin_dir, TAG);
}

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let obj: K = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap()
}

fn ready(p: &Option<Pod>) -> bool {
    p.as_ref()
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(p: &Option<Pod>) -> String {
    p.as_ref()
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

async fn logs(pods: &Api<Pod>, name: &str) -> String {
    pods.logs(name, &LogParams::default())
        .await
        .unwrap_or_else(|e| format!("(no logs: {e})"))
}

#[tokio::test]
async fn a_build_job_makes_a_slug_that_a_pod_runs() {
    // Images first: the namespace helper would otherwise wait for them.
    tokio::task::spawn_blocking(build_images).await.unwrap();
    let ns = TestNamespace::create("builder").await;
    let pods: Api<Pod> = ns.api();
    let builder_image = format!("localhost/flynn-slugbuilder:{TAG}");
    let runner_image = format!("localhost/flynn-slugrunner:{TAG}");

    // The slug store, with an emptyDir for objects.
    create::<Pod>(
        &pods,
        json!({
            "metadata": {"name": "shelf", "labels": {"app": "shelf"}},
            "spec": {
                "containers": [{
                    "name": "shelf",
                    "image": builder_image,
                    "imagePullPolicy": "Never",
                    "command": ["/usr/local/bin/shelf"],
                    "env": [{"name": "SHELF_TOKEN", "value": TOKEN}],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1},
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/shelf"}],
                }],
                "volumes": [{"name": "data", "emptyDir": {}}],
            }
        }),
    )
    .await;
    create::<Service>(
        &ns.api(),
        json!({
            "metadata": {"name": "shelf"},
            "spec": {"selector": {"app": "shelf"}, "ports": [{"port": 8080, "targetPort": 8080}]}
        }),
    )
    .await;

    let shelf = eventually(
        "the slug store to be Ready",
        Duration::from_secs(120),
        || async { pods.get_opt("shelf").await.unwrap() },
        |p| ready(p) || phase(p) == "Failed",
    )
    .await;
    assert!(
        ready(&shelf),
        "the slug store did not start:\n{}",
        logs(&pods, "shelf").await
    );

    // The source as a ConfigMap: no need to reach the pod network from the test.
    let src = flynn_builder::slug::tar_gz_dir(&fixtures().join("apps/python-web")).unwrap();
    create::<ConfigMap>(
        &ns.api(),
        json!({
            "metadata": {"name": "source"},
            "binaryData": {"source.tgz": k8s_openapi::ByteString(src)},
        }),
    )
    .await;

    let base = format!("http://shelf.{}.svc:8080", ns.name());
    let key = SigningKey::new(TOKEN.as_bytes());
    let expires = Some(unix_now() + 600);
    let slug_path = "/slugs/py/v1.tgz";
    create::<Job>(
        &ns.api(),
        json!({
            "metadata": {"name": "build"},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "slugbuilder",
                        "image": builder_image,
                        "imagePullPolicy": "Never",
                        "args": [
                            "--app", "py",
                            "--source", "/src/source.tgz",
                            "--slug-put-url", key.signed_url(&base, slug_path, Access::ReadWrite, expires),
                            "--slug-url", key.signed_url(&base, slug_path, Access::Read, None),
                            "--cache-url", key.signed_url(&base, "/cache/py.tgz", Access::ReadWrite, expires),
                        ],
                        "volumeMounts": [{"name": "src", "mountPath": "/src"}],
                    }],
                    "volumes": [{"name": "src", "configMap": {"name": "source"}}],
                }},
            }
        }),
    )
    .await;

    let build_pod = eventually(
        "the build Job's pod to finish",
        Duration::from_secs(180),
        || async {
            pods.list(&kube::api::ListParams::default().labels("job-name=build"))
                .await
                .unwrap()
                .items
                .into_iter()
                .next()
        },
        |p| matches!(phase(p).as_str(), "Succeeded" | "Failed"),
    )
    .await
    .unwrap();
    let name = build_pod.metadata.name.clone().unwrap();
    let build_log = logs(&pods, &name).await;
    assert_eq!(
        phase(&Some(build_pod.clone())),
        "Succeeded",
        "build failed:\n{build_log}"
    );
    assert!(
        build_log.contains("-----> Python app detected"),
        "{build_log}"
    );
    assert!(
        build_log.contains("-----> Compiled slug size is"),
        "{build_log}"
    );

    // The result travels in the termination message, as the git receiver will read it.
    let message = build_pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|cs| cs.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .and_then(|t| t.message)
        .expect("a termination message");
    let result: BuildResult = serde_json::from_str(message.trim()).unwrap();
    assert_eq!(result.process_types["web"], "python3 app.py");
    assert!(
        result.url.starts_with(&format!("{base}{slug_path}?sig=")),
        "{}",
        result.url
    );

    // The app, as the operator runs it: the runner image, SLUG_URL, SLUG_SHA256, PORT, `start web`.
    create::<Pod>(
        &pods,
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "web",
                    "image": runner_image,
                    "imagePullPolicy": "Never",
                    "args": ["start", "web"],
                    "env": [
                        {"name": "SLUG_URL", "value": result.url},
                        {"name": "SLUG_SHA256", "value": result.sha256},
                        {"name": "PORT", "value": "5000"},
                        {"name": "GREETING_NAME", "value": "cluster"},
                    ],
                    "ports": [{"containerPort": 5000}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 5000}, "periodSeconds": 1},
                }],
            }
        }),
    )
    .await;
    let web = eventually(
        "the app pod to be Ready",
        Duration::from_secs(120),
        || async { pods.get_opt("web").await.unwrap() },
        |p| ready(p) || phase(p) == "Failed",
    )
    .await;
    let web_log = logs(&pods, "web").await;
    assert!(ready(&web), "the app did not become ready:\n{web_log}");
    // The readiness probe's requests reached the app on $PORT.
    assert!(web_log.contains("\"GET / HTTP/1.1\" 200"), "{web_log}");
}
