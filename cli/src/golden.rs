//! Golden tests of every table and text view: fixed objects and a fixed `now` in, the exact
//! text out, compared with `cli/tests/golden/<name>.txt`. `UPDATE_GOLDEN=1` rewrites the
//! files (then review the diff).

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use crate::commands::{apps, keys, limit, ps, release, resource, route, scale};
use crate::sshkey::PublicKey;

const NOW: &str = "2026-01-02T03:04:05Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn check(name: &str, actual: &str) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{name} differs from {}", path.display());
}

fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn shop() -> flynn_crds::App {
    from(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "App",
        "metadata": {"name": "shop", "creationTimestamp": "2025-12-30T03:04:05Z"},
        "spec": {"release": "shop-v3", "processes": {"web": 3, "worker": 1}},
        "status": {
            "release": "shop-v2", "releaseVersion": 2,
            "urls": ["http://shop.flynn.local", "https://www.shop.example"],
            "processes": {"web": {"desired": 3, "ready": 2, "available": 2}, "worker": {"desired": 1, "ready": 1, "available": 1}},
            "processSummary": "web=2/3 worker=1/1",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "RollingOut", "message": "rolling out shop-v3: web 2/3 updated", "lastTransitionTime": "2026-01-02T03:03:00Z"},
                {"type": "Progressing", "status": "True", "reason": "RollingOut", "message": "shop-v3", "lastTransitionTime": "2026-01-02T03:03:00Z"}
            ]
        }
    }))
}

fn new_app() -> flynn_crds::App {
    from(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "App",
        "metadata": {"name": "api-gateway", "creationTimestamp": "2026-01-02T03:03:55Z"},
        "spec": {}
    }))
}

fn releases() -> Vec<flynn_crds::Release> {
    let r = |v: i64,
             artifact: serde_json::Value,
             meta: serde_json::Value,
             created: &str|
     -> flynn_crds::Release {
        // v1 was made before config moved to Secrets: its config is in the Release.
        let config = if v == 1 {
            json!({"env": {"GREETING": "hi"}})
        } else {
            json!({"configSecret": format!("shop-v{v}-env")})
        };
        let mut r = json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Release",
            "metadata": {"name": format!("shop-v{v}"), "creationTimestamp": created},
            "spec": {"app": "shop", "version": v, "artifact": artifact, "meta": meta,
                     "processes": {"web": {"command": ["busybox", "httpd", "-f", "-p", "8080"], "ports": [{"port": 8080}]},
                                   "worker": {"args": ["rake", "jobs:work"]}}}
        });
        for (k, val) in config.as_object().unwrap() {
            r["spec"][k] = val.clone();
        }
        from(r)
    };
    let slug = json!({"slug": {"url": "http://shelf/s.tgz", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "size": 1}});
    vec![
        r(
            3,
            json!({"image": "localhost/flynn-smoke:1"}),
            json!({"flynn.io/cause": "config change from shop-v2"}),
            "2026-01-02T03:00:05Z",
        ),
        r(
            2,
            json!({"image": "localhost/flynn-smoke:1"}),
            json!({"flynn.io/cause": "flynn deploy --image localhost/flynn-smoke:1"}),
            "2026-01-01T03:04:05Z",
        ),
        r(
            1,
            slug,
            json!({"git.commit": "6f1c7f3e2b9d4a1c8e5f"}),
            "2025-12-20T03:04:05Z",
        ),
    ]
}

fn pod(
    name: &str,
    process: Option<&str>,
    release: &str,
    state: serde_json::Value,
    ready: bool,
    restarts: i32,
    created: &str,
) -> Pod {
    let mut labels = json!({"flynn.io/app": "shop", "flynn.io/release": release});
    match process {
        Some(p) => labels["flynn.io/process"] = json!(p),
        None => labels["flynn.io/one-off"] = json!("true"),
    }
    from(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "creationTimestamp": created},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "c", "image": "i", "imageID": "", "ready": ready, "restartCount": restarts, "state": state
        }]}
    }))
}

#[test]
fn apps_table() {
    check(
        "apps",
        &apps::apps_table(&[new_app(), shop()], now()).render(false),
    );
}

#[test]
fn info_text() {
    check("info", &apps::info_text(&shop(), "team-a", false, now()));
    check(
        "info-new",
        &apps::info_text(&new_app(), "team-a", false, now()),
    );
}

#[test]
fn formation_table() {
    let rows = scale::formation_rows(&shop(), &["web".into(), "worker".into(), "clock".into()]);
    check("scale", &scale::formation_table(&rows).render(false));
}

#[test]
fn ps_table() {
    let running = json!({"running": {"startedAt": "2026-01-02T03:00:00Z"}});
    let pods = [
        pod(
            "shop-web-6d5f7b8c9d-x2k4q",
            Some("web"),
            "shop-v3",
            running.clone(),
            true,
            0,
            "2026-01-02T03:03:35Z",
        ),
        pod(
            "shop-web-6d5f7b8c9d-zz9pl",
            Some("web"),
            "shop-v3",
            running.clone(),
            false,
            0,
            "2026-01-02T03:04:00Z",
        ),
        pod(
            "shop-web-7c4b9f6d5e-abcde",
            Some("web"),
            "shop-v2",
            running.clone(),
            true,
            2,
            "2026-01-01T03:04:05Z",
        ),
        pod(
            "shop-worker-5b6c7d8e9f-qwert",
            Some("worker"),
            "shop-v2",
            json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            false,
            14,
            "2026-01-01T23:04:05Z",
        ),
        pod(
            "shop-run-h7x2k",
            None,
            "shop-v3",
            json!({"terminated": {"exitCode": 3}}),
            false,
            0,
            "2026-01-02T02:04:05Z",
        ),
    ];
    check("ps", &ps::ps_table(&pods, now()).render(false));
}

#[test]
fn releases_table() {
    check(
        "release-list",
        &release::releases_table(&shop(), &releases(), now()).render(false),
    );
    check(
        "release-show",
        &release::show_text(&shop(), &releases()[2], false, now()),
    );
}

#[test]
fn limits() {
    let mut v3 = releases().remove(0);
    v3.spec.processes.get_mut("web").unwrap().resources = Some(from(json!({
        "requests": {"cpu": "100m"}, "limits": {"cpu": "500m", "memory": "512Mi"}
    })));
    check("limit", &limit::limits_table(&v3).render(false));
    check(
        "release-show-limits",
        &release::show_text(&shop(), &v3, false, now()),
    );
}

#[test]
fn routes_table() {
    let r = |name: &str, spec: serde_json::Value, status: serde_json::Value| -> flynn_crds::Route {
        from(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Route",
            "metadata": {"name": name, "creationTimestamp": "2026-01-02T01:04:05Z"},
            "spec": spec, "status": status
        }))
    };
    let accepted = |url: &str| {
        json!({"url": url, "conditions": [
        {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": NOW},
        {"type": "Conflict", "status": "False", "reason": "Accepted", "message": "", "lastTransitionTime": NOW}]})
    };
    let routes = [
        r(
            "shop-default",
            json!({"type": "http", "app": "shop", "http": {"domain": "shop.flynn.local"}}),
            accepted("http://shop.flynn.local"),
        ),
        r(
            "shop-api.shop.example-api",
            json!({"type": "http", "app": "shop", "process": "api", "http": {"domain": "api.shop.example", "path": "/api", "tlsSecretName": "api-tls", "sticky": true}}),
            json!({"conflictsWith": "team-b/legacy-api", "conditions": [
            {"type": "Accepted", "status": "False", "reason": "ConflictingRoute", "message": "", "lastTransitionTime": NOW},
            {"type": "Conflict", "status": "True", "reason": "ConflictingRoute", "message": "", "lastTransitionTime": NOW}]}),
        ),
        r(
            "shop-tcp-5432",
            json!({"type": "tcp", "app": "shop", "process": "db", "tcp": {"port": 5432}}),
            json!({}),
        ),
    ];
    check(
        "route-list",
        &route::routes_table(&routes, now()).render(false),
    );
}

#[test]
fn keys_table() {
    let key = PublicKey::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeXkViPtiFektWYayOx67JDvpxURqdVPPUCOY0/Ij1q alice@laptop").unwrap();
    let mut secret: Secret = keys::key_secret(
        &key,
        "alice",
        &["developers".into(), "system:authenticated".into()],
        None,
    )
    .unwrap();
    secret.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2025-11-02T03:04:05Z".parse().unwrap(),
        ));
    check(
        "key-list",
        &keys::keys_table(&[secret.clone()], now()).render(false),
    );
    // The Secret itself, exactly as gitreceiver/README.md specifies it.
    check("key-secret", &serde_saphyr::to_string(&secret).unwrap());
}

#[test]
fn resources_table() {
    let r = |name: &str,
             spec: serde_json::Value,
             status: serde_json::Value|
     -> flynn_crds::Resource {
        from(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Resource",
            "metadata": {"name": name, "generation": 1, "creationTimestamp": "2026-01-02T02:04:05Z"},
            "spec": spec, "status": status
        }))
    };
    let ready = |status: &str, reason: &str, message: &str| {
        json!({"type": "Ready", "status": status, "reason": reason, "message": message,
               "observedGeneration": 1, "lastTransitionTime": NOW})
    };
    let resources = [
        r(
            "shop-postgres",
            json!({"app": "shop", "provider": "postgres", "env": "DATABASE_URL"}),
            json!({"env": "DATABASE_URL", "plan": "hobby", "secret": "shop-postgres-credentials",
                   "release": "shop-v4", "conditions": [ready("True", "Provisioned", "")]}),
        ),
        r(
            "shop-postgres-2",
            json!({"app": "shop", "provider": "postgres", "env": "DATABASE_2_URL", "plan": "large"}),
            json!({"conditions": [ready("False", "ServiceUnavailable", "cannot reach postgres.flynn-system:5432")]}),
        ),
        r(
            "shop-redis",
            json!({"app": "shop", "provider": "redis", "env": "REDIS_URL"}),
            json!({}),
        ),
    ];
    check(
        "resource-list",
        &resource::resources_table(&resources, now()).render(false),
    );
    let rows: Vec<_> = resources.iter().map(resource::resource_row).collect();
    check(
        "resource-list-json",
        &(serde_json::to_string_pretty(&rows).unwrap() + "\n"),
    );
}
