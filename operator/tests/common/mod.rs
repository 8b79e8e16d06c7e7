//! Shared by the operator's integration tests.
#![allow(dead_code)]

pub mod restricted;

use std::sync::Arc;
use std::time::Duration;

use flynn_crds::conditions::{self, types};
use flynn_crds::{App, Release};
pub use flynn_e2e::eventually;
use flynn_e2e::{TestNamespace, ensure_test_images, install_flynn_crds};
use flynn_operator::metrics::Metrics;
use flynn_operator::server::Health;
use flynn_operator::{Settings, run};
use kube::Api;
use kube::api::{Patch, PatchParams};
/// The image of image apps: the smoke image with a non-root user, since the operator runs
/// images with `runAsNonRoot` (the smoke image itself runs as root).
#[allow(unused_imports)] // Not every test file runs image apps.
pub use restricted::NONROOT_IMAGE;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// An operator running in this process for one test namespace; stopped on drop.
pub struct TestOperator {
    pub token: CancellationToken,
    pub metrics: Arc<Metrics>,
}

impl Drop for TestOperator {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub async fn setup(test: &str) -> (TestNamespace, TestOperator) {
    setup_with(test, |_| {}).await
}

/// [`setup`], with settings changed by `change`.
pub async fn setup_with(
    test: &str,
    change: impl FnOnce(&mut Settings),
) -> (TestNamespace, TestOperator) {
    let ns = namespace(test).await;
    let op = start(&ns, change);
    (ns, op)
}

/// A test namespace with the images and CRDs the operator's tests need, and no operator
/// yet (for tests whose settings name the namespace).
pub async fn namespace(test: &str) -> TestNamespace {
    ensure_test_images();
    restricted::ensure_nonroot_image();
    let ns = TestNamespace::create(test).await;
    install_flynn_crds(ns.client()).await.unwrap();
    ns
}

/// Starts an operator for `ns` with its settings changed by `change`.
pub fn start(ns: &TestNamespace, change: impl FnOnce(&mut Settings)) -> TestOperator {
    let mut settings = Settings {
        namespace: Some(ns.name().to_owned()),
        default_domain: "test.flynn.local".into(),
        ..Settings::default()
    };
    change(&mut settings);
    let token = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(run(
        ns.client().clone(),
        settings,
        metrics.clone(),
        Arc::new(Health::default()),
        token.clone(),
    ));
    TestOperator { token, metrics }
}

/// An image Release serving the smoke page on 8080 with busybox httpd (`image`: usually
/// [`NONROOT_IMAGE`]).
pub fn release(app: &str, version: i64, image: &str, env: serde_json::Value) -> Release {
    serde_json::from_value(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "Release",
        "metadata": {"name": format!("{app}-v{version}")},
        "spec": {
            "app": app, "version": version,
            "artifact": {"image": image},
            "env": env,
            "processes": {
                "web": {"command": ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
                        "ports": [{"port": 8080}]},
                "worker": {"command": ["sleep", "infinity"]}
            }
        }
    }))
    .unwrap()
}

pub fn app(
    name: &str,
    release: &str,
    processes: serde_json::Value,
    extra: serde_json::Value,
) -> App {
    let mut spec = json!({"release": release, "processes": processes, "deployTimeoutSeconds": 60});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "App",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

pub fn condition(a: &App, t: &str) -> Option<(String, String, String)> {
    let c = conditions::find(&a.status.as_ref()?.conditions, t)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub async fn get<K>(api: &Api<K>, name: &str) -> Option<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.unwrap()
}

/// The objects of `api` with the labels of `selector` (`k=v,...`).
pub async fn list<K>(api: &Api<K>, selector: &str) -> Vec<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&kube::api::ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
}

/// `release` with its web process running `sh -c script`.
pub fn with_web_script(mut release: Release, script: &str) -> Release {
    release.spec.processes.get_mut("web").unwrap().command =
        ["sh", "-c", script].map(String::from).to_vec();
    release
}

pub async fn merge<K>(api: &Api<K>, name: &str, patch: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

pub fn ready(a: &Option<App>, release: &str, summary: &str) -> bool {
    a.as_ref().is_some_and(|a| {
        let s = a.status.clone().unwrap_or_default();
        s.release.as_deref() == Some(release)
            && s.process_summary.as_deref() == Some(summary)
            && conditions::is_true(&s.conditions, types::READY)
    })
}

pub const T: Duration = Duration::from_secs(90);
