//! The flynn.io API against a real API server: the CRDs install, the examples are accepted,
//! bad manifests are refused with a message naming the field, Release specs cannot change,
//! status is written through the status subresource, and `kubectl get flynn` finds every kind.
//!
//! Needs a cluster (`export KUBECONFIG=$(e2e/cluster/up)`); fails, never skips, without one.
//! `cargo test -p flynn-crds --test api_server -- --nocapture` prints every refusal.

mod common;

use std::time::Duration;

use flynn_crds::{
    App, AppStatus, Formation, ProcessStatus, Release, Route, RouteStatus, conditions,
};
use flynn_e2e::{TestNamespace, install_flynn_crds};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

/// A namespace of its own with the CRDs installed (idempotent: every test does it).
async fn setup(test: &str) -> TestNamespace {
    let ns = TestNamespace::create(test).await;
    if let Err(err) = install_flynn_crds(ns.client()).await {
        panic!("installing the flynn.io CRDs: {err}");
    }
    ns
}

/// Creates one manifest (any Flynn kind) in the namespace.
async fn create(client: &Client, ns: &str, manifest: &Value) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(manifest.clone()).expect("a Kubernetes object");
    let ar = common::api_resource(common::kind_of(&obj));
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .create(&PostParams::default(), &obj)
        .await
}

// --- valid manifests, the bases the bad ones are made from ---------------------------------

fn app() -> Value {
    json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "App",
        "metadata": {"name": "shop"},
        "spec": {"release": "shop-v1", "processes": {"web": 1}},
    })
}

fn release() -> Value {
    json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "Release",
        "metadata": {"name": "shop-v1"},
        "spec": {
            "app": "shop", "version": 1,
            "artifact": {"image": "registry.example.com/shop:1"},
            "configSecret": "shop-v1-env",
            "processes": {"web": {"ports": [{"port": 8080, "name": "http"}]}},
        },
    })
}

fn slug() -> Value {
    json!({"url": "https://shelf.example/slugs/shop.tgz", "sha256": "a".repeat(64), "size": 1024})
}

fn formation() -> Value {
    json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "Formation",
        "metadata": {"name": "shop"},
        "spec": {"app": "shop", "release": "shop-v1", "processes": {"web": 2}},
    })
}

fn http_route() -> Value {
    json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "Route",
        "metadata": {"name": "shop-www"},
        "spec": {"type": "http", "app": "shop", "http": {"domain": "www.shop.example"}},
    })
}

fn tcp_route() -> Value {
    json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "Route",
        "metadata": {"name": "shop-tcp"},
        "spec": {"type": "tcp", "app": "shop", "tcp": {"port": 9000}},
    })
}

/// Edits of a manifest by JSON pointer, for building bad manifests from valid ones.
trait Edit: Sized {
    /// Sets the field at `at`, creating parent objects as needed.
    fn set(self, at: &str, value: Value) -> Self;
    /// Removes the field at `at`.
    fn unset(self, at: &str) -> Self;
}

impl Edit for Value {
    fn set(mut self, at: &str, value: Value) -> Self {
        let (parent, key) = at.rsplit_once('/').expect("a JSON pointer");
        let mut target = &mut self;
        for part in parent.split('/').skip(1) {
            target = target
                .as_object_mut()
                .expect("an object")
                .entry(part)
                .or_insert_with(|| json!({}));
        }
        target
            .as_object_mut()
            .expect("an object")
            .insert(key.to_owned(), value);
        self
    }

    fn unset(mut self, at: &str) -> Self {
        let (parent, key) = at.rsplit_once('/').expect("a JSON pointer");
        if let Some(object) = self.pointer_mut(parent).and_then(Value::as_object_mut) {
            object.remove(key);
        }
        self
    }
}

/// A manifest the API server must refuse, and what its message must contain.
struct Bad {
    case: &'static str,
    manifest: Value,
    expect: &'static [&'static str],
}

fn database() -> Value {
    json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "Resource",
        "metadata": {"name": "shop-postgres"},
        "spec": {"app": "shop", "provider": "postgres"},
    })
}

fn bad(case: &'static str, manifest: Value, expect: &'static [&'static str]) -> Bad {
    Bad {
        case,
        manifest,
        expect,
    }
}

#[rustfmt::skip] // a table: one case per line reads better than rustfmt's layout
fn bad_manifests() -> Vec<Bad> {
    let renamed_app = |name: &str| app().set("/metadata/name", json!(name)).unset("/spec/release");
    let with_slug = || release().set("/spec/artifact", json!({"slug": slug()}));
    let web = |process: Value| release().set("/spec/processes/web", process);
    const KEY_RULE: &str = "every key must be a process type of at most 32";
    const ENV_RULE: &str = "every key must be an environment variable name";
    const PLAIN_RULE: &str = "config vars are not kept in plain text here";
    vec![
        // App
        bad("app name longer than 30", renamed_app("a-very-long-application-name-xyz"), &["metadata.name: an App name must be at most 30 characters"]),
        bad("app name starting with a digit", renamed_app("1shop"), &["metadata.name: an App name must consist of lower-case letters"]),
        bad("app name with a dot", renamed_app("shop.v2"), &["metadata.name: an App name must consist of lower-case letters"]),
        bad("env var name starting with a digit", app().set("/spec/env/1PORT", json!("x")), &["spec.env: Invalid value", ENV_RULE]),
        bad("env var name with a dash", app().set("/spec/env/MY-VAR", json!("x")), &["spec.env: Invalid value", ENV_RULE]),
        bad("process count past int32", app().set("/spec/processes/web", json!(2147483648i64)), &["spec.processes.web", "less than or equal to 2147483647"]),
        bad("deploy timeout past int32", app().set("/spec/deployTimeoutSeconds", json!(2147483648i64)), &["spec.deployTimeoutSeconds", "less than or equal to 2147483647"]),
        bad("negative process count", app().set("/spec/processes/web", json!(-1)), &["spec.processes.web", "greater than or equal to 0"]),
        bad("process type with upper case", app().set("/spec/processes/Web", json!(1)), &["spec.processes: Invalid value", KEY_RULE]),
        bad("process type longer than 32", app().set(&format!("/spec/processes/{}", "p".repeat(33)), json!(1)), &["spec.processes: Invalid value", KEY_RULE]),
        bad("unknown deploy strategy", app().set("/spec/strategy", json!("blue-green")), &["spec.strategy: Unsupported value: \"blue-green\""]),
        bad("zero deploy timeout", app().set("/spec/deployTimeoutSeconds", json!(0)), &["spec.deployTimeoutSeconds", "greater than or equal to 1"]),
        bad("app with config vars in plain text", app().set("/spec/env/DATABASE_URL", json!("postgres://u:pw@db/shop")), &["spec.env: Forbidden", PLAIN_RULE]),
        bad("app pointing at another app's release", app().set("/spec/release", json!("other-v1")), &["spec.release: Invalid value", "spec.release must name a Release of this App"]),
        // Release
        bad("release with both slug and image", release().set("/spec/artifact/slug", slug()), &["spec.artifact: Invalid value", "must set exactly one of slug"]),
        bad("release with no artifact", release().set("/spec/artifact", json!({})), &["spec.artifact: Invalid value", "must set exactly one of slug"]),
        bad("slug sha256 not hex", with_slug().set("/spec/artifact/slug/sha256", json!("xyz")), &["spec.artifact.slug.sha256", "should match"]),
        bad("slug url not http(s)", with_slug().set("/spec/artifact/slug/url", json!("ftp://shelf/s.tgz")), &["spec.artifact.slug.url", "should match"]),
        bad("release version 0", release().set("/spec/version", json!(0)).set("/metadata/name", json!("shop-v0")), &["spec.version", "greater than or equal to 1"]),
        bad("release name not <app>-v<version>", release().set("/metadata/name", json!("shop-v2")), &["metadata.name must be `<spec.app>-v<spec.version>`"]),
        bad("release without processes", release().set("/spec/processes", json!({})), &["spec.processes", "should have at least 1 properties"]),
        bad("release without app", release().unset("/spec/app"), &["spec.app: Required value"]),
        bad("release with config vars in plain text", release().set("/spec/env/DATABASE_URL", json!("postgres://u:pw@db/shop")), &["spec.env: Forbidden", PLAIN_RULE]),
        bad("release config Secret not a name", release().set("/spec/configSecret", json!("../kube-system/x")), &["spec.configSecret", "should match"]),
        bad("release naming another Secret of the namespace", release().set("/spec/configSecret", json!("shop-tls")), &["spec.configSecret: Forbidden", "must be the Release's own config Secret"]),
        bad("release naming another release's config", release().set("/spec/configSecret", json!("billing-v7-env")), &["spec.configSecret: Forbidden", "must be the Release's own config Secret"]),
        bad("release env var name invalid", release().set("/spec/env/a.b", json!("x")), &["spec.env: Invalid value", ENV_RULE]),
        bad("port out of range", web(json!({"ports": [{"port": 70000}]})), &["spec.processes.web.ports[0].port", "less than or equal to 65535"]),
        bad("duplicate port", web(json!({"ports": [{"port": 80}, {"port": 80}]})), &["spec.processes[web].ports[1]: Duplicate value"]),
        bad("duplicate port name", web(json!({"ports": [{"port": 80, "name": "http"}, {"port": 81, "name": "http"}]})), &["spec.processes[web].ports", "port names must be unique"]),
        bad("port name without a letter", web(json!({"ports": [{"port": 80, "name": "8080"}]})), &["spec.processes[web].ports[0]", "name must contain at least one letter"]),
        bad("unknown port protocol", web(json!({"ports": [{"port": 80, "protocol": "SCTP"}]})), &["spec.processes.web.ports[0].protocol: Unsupported value: \"SCTP\""]),
        bad("health check path on a tcp check", web(json!({"healthCheck": {"type": "tcp", "path": "/up"}})), &["spec.processes[web].healthCheck: Forbidden", "healthCheck.path is only used by http checks"]),
        bad("exec health check without a command", web(json!({"healthCheck": {"type": "exec"}})), &["spec.processes[web].healthCheck: Required value", "healthCheck.command is required when type is exec"]),
        bad("health check period past int32", web(json!({"healthCheck": {"type": "tcp", "periodSeconds": 2147483648i64}})), &["periodSeconds", "less than or equal to 2147483647"]),
        bad("request above its limit", web(json!({"resources": {"requests": {"cpu": "1", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "1Gi"}}})), &["a request may not exceed the limit of the same resource"]),
        bad("integer request above a string limit", web(json!({"resources": {"requests": {"memory": 2147483648i64}, "limits": {"memory": "1Gi"}}})), &["a request may not exceed the limit of the same resource"]),
        bad("resource quantity not a quantity", web(json!({"resources": {"requests": {"cpu": "lots"}}})), &["spec.processes.web.resources.requests.cpu", "should match"]),
        // Formation
        bad("formation not named after its app", formation().set("/metadata/name", json!("shop-2")), &["metadata.name must equal spec.app"]),
        bad("formation running another app's release", formation().set("/spec/release", json!("other-v1")), &["spec.release: Invalid value", "spec.release must name a Release of spec.app"]),
        bad("formation negative count", formation().set("/spec/processes/web", json!(-3)), &["spec.processes.web", "greater than or equal to 0"]),
        // Route
        bad("http route without http", http_route().unset("/spec/http"), &["spec: Required value", "spec.http is required when spec.type is http"]),
        bad("http route with a tcp block", http_route().set("/spec/tcp", json!({"port": 9000})), &["spec: Forbidden", "spec.tcp is forbidden when spec.type is http"]),
        bad("tcp route without tcp", tcp_route().unset("/spec/tcp"), &["spec: Required value", "spec.tcp is required when spec.type is tcp"]),
        bad("tcp route with an http block", tcp_route().set("/spec/http", json!({"domain": "x.example"})), &["spec: Forbidden", "spec.http is forbidden when spec.type is tcp"]),
        bad("unknown route type", http_route().set("/spec/type", json!("udp")), &["spec.type: Unsupported value: \"udp\""]),
        bad("domain with upper case", http_route().set("/spec/http/domain", json!("WWW.Shop.example")), &["spec.http.domain", "should match"]),
        bad("domain with a label over 63", http_route().set("/spec/http/domain", json!(format!("{}.shop.example", "a".repeat(64)))), &["spec.http.domain", "should match"]),
        bad("domain with two wildcards", http_route().set("/spec/http/domain", json!("*.*.shop.example")), &["spec.http.domain", "should match"]),
        bad("path not starting with /", http_route().set("/spec/http/path", json!("api")), &["spec.http.path", "should match"]),
        bad("tcp port 0", tcp_route().set("/spec/tcp/port", json!(0)), &["spec.tcp.port", "greater than or equal to 1"]),
        bad("route process with an underscore", http_route().set("/spec/process", json!("web_1")), &["spec.process", "should match"]),
        // Resource
        bad("resource of an unknown provider", database().set("/spec/provider", json!("mysql")), &["spec.provider: Unsupported value: \"mysql\""]),
        bad("resource for an invalid app name", database().set("/spec/app", json!("Shop")), &["spec.app", "should match"]),
        bad("resource env var name invalid", database().set("/spec/env", json!("DATABASE-URL")), &["spec.env", "should match"]),
        bad("resource plan not a name", database().set("/spec/plan", json!("Big Plan")), &["spec.plan", "should match"]),
        bad("unknown deletion policy", database().set("/spec/deletionPolicy", json!("Archive")), &["spec.deletionPolicy: Unsupported value: \"Archive\""]),
        bad("tls secret name invalid", http_route().set("/spec/http/tlsSecretName", json!("My_Cert")), &["spec.http.tlsSecretName", "should match"]),
    ]
}

// --- the tests -------------------------------------------------------------------------------

#[tokio::test]
async fn every_example_is_accepted() {
    let ns = setup("examples").await;
    for (file, docs) in common::examples() {
        for doc in docs {
            let manifest = serde_json::to_value(&doc).unwrap();
            let name = doc.metadata.name.clone().unwrap_or_default();
            if let Err(err) = create(ns.client(), ns.name(), &manifest).await {
                panic!(
                    "{file}: {} {name} was refused: {err}",
                    common::kind_of(&doc)
                );
            }
        }
    }
    // Defaults were applied by the API server.
    let app = ns.api::<App>().get("hello").await.unwrap();
    assert!(app.spec.auto_rollback && app.spec.default_route);
    let route = ns.api::<Route>().get("node-demo-api").await.unwrap();
    assert!(route.spec.http.unwrap().drain_backends);
}

#[tokio::test]
async fn valid_bases_of_the_bad_manifests_are_accepted() {
    let ns = setup("bases").await;
    for manifest in [
        app(),
        release(),
        formation(),
        http_route(),
        tcp_route(),
        database(),
    ] {
        if let Err(err) = create(ns.client(), ns.name(), &manifest).await {
            panic!("{} was refused: {err}", manifest["metadata"]["name"]);
        }
    }
    // An empty spec gets the documented defaults.
    let minimal = json!({"apiVersion": "flynn.io/v1alpha1", "kind": "App", "metadata": {"name": "minimal"}, "spec": {}});
    create(ns.client(), ns.name(), &minimal).await.unwrap();
    let spec = ns.api::<App>().get("minimal").await.unwrap().spec;
    assert_eq!(spec, flynn_crds::AppSpec::default());
    let route = ns.api::<Route>().get("shop-www").await.unwrap().spec;
    assert_eq!(
        route,
        flynn_crds::RouteSpec::http("shop", "www.shop.example")
    );

    // `spec.app` is a selectable field: the operator lists an App's Releases server-side.
    let releases = ns.api::<Release>();
    let of = |app: &str| ListParams::default().fields(&format!("spec.app={app}"));
    assert_eq!(releases.list(&of("shop")).await.unwrap().items.len(), 1);
    assert_eq!(releases.list(&of("other")).await.unwrap().items.len(), 0);
}

/// The valid twins of the range, length and request rules: each at its boundary, so a rule
/// that refused for the wrong reason would refuse one of these.
#[tokio::test]
async fn manifests_at_the_boundaries_are_accepted() {
    let ns = setup("boundaries").await;
    let web = |name: &str, process: Value| {
        release()
            .set("/metadata/name", json!(format!("{name}-v1")))
            .set("/spec/app", json!(name))
            .set("/spec/configSecret", json!(format!("{name}-v1-env")))
            .set("/spec/processes/web", process)
    };
    let good = [
        app()
            .set("/metadata/name", json!("max"))
            .unset("/spec/release")
            .set("/spec/processes/web", json!(2147483647i64))
            .set("/spec/deployTimeoutSeconds", json!(2147483647i64)),
        http_route().set("/metadata/name", json!("long-label")).set(
            "/spec/http/domain",
            json!(format!("{}.shop.example", "a".repeat(63))),
        ),
        // Requests equal to limits in other spellings, and a request with no limit.
        web(
            "equal",
            json!({"resources": {"requests": {"cpu": "0.5", "memory": "1Gi", "ephemeral-storage": "1Gi"}, "limits": {"cpu": "500m", "memory": 1073741824i64}}}),
        ),
        web(
            "period",
            json!({"healthCheck": {"type": "tcp", "periodSeconds": 2147483647i64}}),
        ),
    ];
    for manifest in good {
        if let Err(err) = create(ns.client(), ns.name(), &manifest).await {
            panic!("{} was refused: {err}", manifest["metadata"]["name"]);
        }
    }
}

#[tokio::test]
async fn bad_manifests_are_refused_with_a_message_naming_the_field() {
    let ns = setup("bad-manifests").await;
    let cases = bad_manifests();
    assert!(cases.len() >= 20);
    let mut failures = vec![];
    for Bad {
        case,
        manifest,
        expect,
    } in cases
    {
        match create(ns.client(), ns.name(), &manifest).await {
            Ok(_) => failures.push(format!("{case}: was ACCEPTED")),
            Err(kube::Error::Api(status)) if status.code == 422 => {
                eprintln!("REFUSED {case}: {}", status.message);
                let missing: Vec<_> = expect
                    .iter()
                    .filter(|e| !status.message.contains(**e))
                    .collect();
                if !missing.is_empty() {
                    failures.push(format!(
                        "{case}: message {:?} lacks {missing:?}",
                        status.message
                    ));
                }
            }
            Err(err) => failures.push(format!(
                "{case}: failed with something other than 422 Invalid: {err}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad manifest(s) not refused as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_release_spec_cannot_be_edited_but_its_labels_can() {
    let ns = setup("release-immutable").await;
    create(ns.client(), ns.name(), &release()).await.unwrap();
    let releases = ns.api::<Release>();

    let edit = Patch::Merge(json!({"spec": {"configSecret": "shop-v1-other"}}));
    match releases
        .patch("shop-v1", &PatchParams::default(), &edit)
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 422 => {
            eprintln!("REFUSED editing a Release spec: {}", status.message);
            assert!(
                status
                    .message
                    .contains("Release spec is immutable: create a new Release instead"),
                "{}",
                status.message
            );
        }
        other => panic!("editing a Release spec was not refused: {other:?}"),
    }

    let label = Patch::Merge(json!({"metadata": {"labels": {"flynn.io/pinned": "true"}}}));
    let labelled = releases
        .patch("shop-v1", &PatchParams::default(), &label)
        .await
        .unwrap();
    assert_eq!(labelled.metadata.labels.unwrap()["flynn.io/pinned"], "true");
}

/// A Resource cannot be moved to another App, change provider or change its config var
/// (each would hand one App's data to another, or leave the URL under a stale name); its
/// deletion policy can change (that is what `flynn resource remove --delete-data` does).
#[tokio::test]
async fn a_resource_keeps_its_app_provider_and_env_but_not_its_deletion_policy() {
    let ns = setup("resource-immutable").await;
    create(
        ns.client(),
        ns.name(),
        &database().set("/spec/env", json!("DATABASE_URL")),
    )
    .await
    .unwrap();
    let resources = ns.api::<flynn_crds::Resource>();
    for (case, edit, expect) in [
        (
            "moving it to another app",
            json!({"spec": {"app": "billing"}}),
            "spec.app is immutable",
        ),
        (
            "changing its provider",
            json!({"spec": {"provider": "redis"}}),
            "spec.provider is immutable",
        ),
        (
            "renaming its config var",
            json!({"spec": {"env": "DATABASE_2_URL"}}),
            "spec.env is immutable",
        ),
        (
            "clearing its config var",
            json!({"spec": {"env": null}}),
            "spec.env is immutable",
        ),
    ] {
        match resources
            .patch(
                "shop-postgres",
                &PatchParams::default(),
                &Patch::Merge(edit),
            )
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 422 => {
                eprintln!("REFUSED {case}: {}", status.message);
                assert!(
                    status.message.contains(expect),
                    "{case}: {}",
                    status.message
                );
            }
            other => panic!("{case} was not refused: {other:?}"),
        }
    }
    let delete_data =
        Patch::Merge(json!({"spec": {"deletionPolicy": "Delete", "plan": "standard"}}));
    let patched = resources
        .patch("shop-postgres", &PatchParams::default(), &delete_data)
        .await
        .unwrap();
    assert_eq!(
        patched.spec.deletion_policy,
        flynn_crds::DeletionPolicy::Delete
    );
}

#[tokio::test]
async fn status_is_written_through_the_status_subresource() {
    let ns = setup("status").await;
    create(ns.client(), ns.name(), &app()).await.unwrap();
    create(ns.client(), ns.name(), &http_route()).await.unwrap();
    create(ns.client(), ns.name(), &formation()).await.unwrap();
    // The API server stores times to the second.
    let now = Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap());
    let ready = |type_: &str| {
        conditions::new(
            type_,
            true,
            conditions::reasons::AVAILABLE,
            "all good",
            Some(1),
            now.clone(),
        )
    };

    // App: the operator's status, with a server-side apply as the operator will do it.
    let apps = ns.api::<App>();
    let processes = [(
        "web".to_owned(),
        ProcessStatus {
            desired: 1,
            ready: 1,
            available: 1,
        },
    )]
    .into();
    let status = AppStatus {
        release: Some("shop-v1".into()),
        release_version: Some(1),
        urls: vec!["http://shop.flynn.local".into()],
        process_summary: Some(ProcessStatus::summary(&processes)),
        processes,
        conditions: vec![ready(conditions::types::READY)],
        observed_generation: Some(1),
        rollout: None,
        // Written through the schema too, so a field the CRD lacked would be pruned here.
        last_rollback: Some(flynn_crds::Rollback {
            from: "shop-v2".into(),
            to: "shop-v1".into(),
            reason: "release shop-v2 did not become available within 30s: crash-looping".into(),
            at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-12-07T19:00:00Z".parse().unwrap(),
            ),
        }),
    };
    let patch = json!({"apiVersion": "flynn.io/v1alpha1", "kind": "App", "status": status});
    let written = apps
        .patch_status(
            "shop",
            &PatchParams::apply("flynn-e2e-operator").force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap();
    assert_eq!(written.status.as_ref(), Some(&status));
    assert_eq!(
        written.metadata.generation,
        Some(1),
        "a status write must not bump the generation"
    );

    // The printer columns show it.
    let row = table_row(
        ns.client(),
        &format!("/apis/flynn.io/v1alpha1/namespaces/{}/apps/shop", ns.name()),
    )
    .await;
    assert_eq!(
        &row[..6],
        [
            "shop",
            "shop-v1",
            "1",
            "web=1/1",
            "True",
            "http://shop.flynn.local"
        ]
    );

    // Status sent to the main resource is ignored.
    let sneaky =
        Patch::Merge(json!({"status": {"release": "shop-v9"}, "spec": {"processes": {"web": 3}}}));
    let updated = apps
        .patch("shop", &PatchParams::default(), &sneaky)
        .await
        .unwrap();
    assert_eq!(updated.status.unwrap().release.as_deref(), Some("shop-v1"));
    assert_eq!(updated.spec.processes["web"], 3);

    // Route: the router's status, with a merge patch.
    let routes = ns.api::<Route>();
    let route_status = RouteStatus {
        conditions: vec![ready(conditions::types::ACCEPTED)],
        url: Some("http://www.shop.example".into()),
        observed_generation: Some(1),
        conflicts_with: None,
    };
    let written = routes
        .patch_status(
            "shop-www",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": route_status})),
        )
        .await
        .unwrap();
    assert_eq!(written.status, Some(route_status));
    let row = table_row(
        ns.client(),
        &format!(
            "/apis/flynn.io/v1alpha1/namespaces/{}/routes/shop-www",
            ns.name()
        ),
    )
    .await;
    assert_eq!(
        &row[..9],
        [
            "shop-www",
            "http",
            "www.shop.example",
            "/",
            "",
            "shop",
            "web",
            "True",
            "http://www.shop.example"
        ]
    );

    // Formation.
    let formations = ns.api::<Formation>();
    let summary = json!({"status": {"processSummary": "web=0/2", "observedGeneration": 1}});
    let written = formations
        .patch_status("shop", &PatchParams::default(), &Patch::Merge(summary))
        .await
        .unwrap();
    assert_eq!(
        written.status.unwrap().process_summary.as_deref(),
        Some("web=0/2")
    );
}

#[tokio::test]
async fn every_kind_is_in_the_flynn_category_with_its_short_name() {
    let ns = setup("discovery").await;
    // Discovery can lag a freshly created CRD by a moment.
    let mut last = String::new();
    for _ in 0..60 {
        match ns
            .client()
            .list_api_group_resources("flynn.io/v1alpha1")
            .await
        {
            Ok(list) => {
                let mut found: Vec<_> = list
                    .resources
                    .iter()
                    .filter(|r| !r.name.contains('/'))
                    .filter(|r| {
                        r.categories
                            .as_deref()
                            .unwrap_or_default()
                            .contains(&"flynn".to_owned())
                    })
                    .map(|r| {
                        format!(
                            "{}:{}",
                            r.kind,
                            r.short_names.as_deref().unwrap_or_default().join(",")
                        )
                    })
                    .collect();
                found.sort();
                if found
                    == [
                        "App:flapp",
                        "Formation:flform",
                        "Release:flrel",
                        "Resource:flres",
                        "Route:flroute",
                    ]
                {
                    return;
                }
                last = format!("{found:?}");
            }
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("discovery never listed all five kinds in the flynn category: {last}");
}

/// The cells of the one row `kubectl get` would print for the object at `path`, as strings.
async fn table_row(client: &Client, path: &str) -> Vec<String> {
    let request = http::Request::get(path)
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(vec![])
        .unwrap();
    let table: Value = client.request(request).await.unwrap();
    let cells = table["rows"][0]["cells"]
        .as_array()
        .unwrap_or_else(|| panic!("no table row: {table}"));
    cells
        .iter()
        .map(|c| match c {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })
        .collect()
}
