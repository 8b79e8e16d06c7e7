//! The operator against the local cluster's real API server and node: each test runs an
//! operator scoped to its own namespace, drives it as a user would (apply an App and a
//! Release, patch release and counts) and checks what runs.

use std::time::Duration;

use flynn_crds::conditions::{self, reasons, types};
use flynn_crds::{App, Formation, Release, Route, RouteSpec};
use flynn_e2e::TestNamespace;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

mod common;
use common::*;

#[tokio::test]
async fn an_image_app_runs_scales_and_shrinks() {
    let (ns, op) = setup("op-scale").await;
    let apps: Api<App> = ns.api();
    let releases: Api<Release> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    let services: Api<Service> = ns.api();
    let routes: Api<Route> = ns.api();
    let pp = PostParams::default();
    releases
        .create(&pp, &release("shop", 1, NONROOT_IMAGE, json!({})))
        .await
        .unwrap();
    apps.create(&pp, &app("shop", "shop-v1", json!({"web": 1}), json!({})))
        .await
        .unwrap();

    let a = eventually(
        "shop to run v1 with web=1/1",
        T,
        || get(&apps, "shop"),
        |a| ready(a, "shop-v1", "web=1/1"),
    )
    .await
    .unwrap();
    let status = a.status.unwrap();
    assert_eq!(status.release_version, Some(1));
    assert!(!conditions::is_true(&status.conditions, types::PROGRESSING));
    assert!(!conditions::is_true(&status.conditions, types::DEGRADED));

    // What it made: the Formation, a Deployment and Service for web, the default Route.
    let f = get(&ns.api::<Formation>(), "shop")
        .await
        .expect("a Formation named after the App");
    assert_eq!(f.spec.release, "shop-v1");
    assert_eq!(f.owner_references()[0].kind, "App");
    let d = get(&deployments, "shop-web")
        .await
        .expect("Deployment shop-web");
    assert_eq!(d.labels()["flynn.io/app"], "shop");
    assert!(
        get(&deployments, "shop-worker").await.is_none(),
        "worker is not in the counts"
    );
    let svc = get(&services, "shop-web").await.expect("Service shop-web");
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 8080);
    let r = eventually(
        "the default route to be accepted",
        T,
        || get(&routes, "shop-default"),
        |r| {
            r.as_ref()
                .and_then(|r| r.status.as_ref())
                .is_some_and(|s| conditions::is_true(&s.conditions, types::ACCEPTED))
        },
    )
    .await
    .unwrap();
    assert_eq!(r.spec.http.unwrap().domain, "shop.test.flynn.local");
    // The default Route reaching the cache after the first Deployment changed nothing: one
    // pod template from the start (it drains), so a new app rolls its pods once.
    let d = get(&deployments, "shop-web").await.unwrap();
    assert_eq!(d.metadata.generation, Some(1), "{:?}", d.spec);
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert!(pod.containers[0].lifecycle.is_some(), "web drains");
    eventually(
        "the App to list its URL",
        T,
        || get(&apps, "shop"),
        |a| {
            a.as_ref()
                .and_then(|a| a.status.as_ref())
                .is_some_and(|s| s.urls == ["http://shop.test.flynn.local"])
        },
    )
    .await;

    // Children deleted behind the operator's back are made again (the operator reads
    // them from a cache, which must hear of deletions, not only of changes).
    let old_uid = d.metadata.uid.clone();
    deployments
        .delete("shop-web", &DeleteParams::default())
        .await
        .unwrap();
    services
        .delete("shop-web", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "Deployment shop-web to be made again",
        T,
        || get(&deployments, "shop-web"),
        |d| d.as_ref().is_some_and(|d| d.metadata.uid != old_uid),
    )
    .await;
    eventually(
        "Service shop-web to be made again",
        T,
        || get(&services, "shop-web"),
        Option::is_some,
    )
    .await;

    // Scale up, add a worker, then scale web to zero.
    merge(
        &apps,
        "shop",
        json!({"spec": {"processes": {"web": 2, "worker": 1}}}),
    )
    .await;
    eventually(
        "web=2/2 worker=1/1",
        T,
        || get(&apps, "shop"),
        |a| ready(a, "shop-v1", "web=2/2 worker=1/1"),
    )
    .await;
    merge(&apps, "shop", json!({"spec": {"processes": {"web": 0}}})).await;
    eventually(
        "web=0/0 worker=1/1",
        T,
        || get(&apps, "shop"),
        |a| ready(a, "shop-v1", "web=0/0 worker=1/1"),
    )
    .await;
    let d = get(&deployments, "shop-web")
        .await
        .expect("scaled to zero, not deleted");
    assert_eq!(d.spec.unwrap().replicas, Some(0));

    // Dropping a type from the counts removes its Deployment (and Service).
    merge(&apps, "shop", json!({"spec": {"processes": {"web": null}}})).await;
    eventually(
        "shop-web to be deleted",
        T,
        || get(&deployments, "shop-web"),
        Option::is_none,
    )
    .await;
    eventually(
        "Service shop-web to be deleted",
        T,
        || get(&services, "shop-web"),
        Option::is_none,
    )
    .await;
    assert!(get(&deployments, "shop-worker").await.is_some());

    // Steady state: nothing to write. Reconciles counted, no errors.
    let text = op.metrics.render();
    assert!(
        text.contains("flynn_operator_reconciles_total{controller=\"app\"}"),
        "{text}"
    );
    drop(op);
}

/// `drainBackends` (on by default): a pod being stopped keeps serving, unsignalled, while
/// its endpoint is terminating (the router sends it nothing new), and gets its SIGTERM only
/// after the drain delay. Without it, a process that exits on SIGTERM would break requests
/// in flight.
#[tokio::test]
async fn pods_behind_a_draining_route_outlive_their_endpoint() {
    let (ns, _op) = setup_with("op-drain", |s| s.drain_delay = Duration::from_secs(20)).await;
    let apps: Api<App> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    let pods: Api<Pod> = ns.api();
    let slices: Api<EndpointSlice> = ns.api();
    let pp = PostParams::default();
    // A web process that exits at once on SIGTERM, as many do.
    let r = with_web_script(
        release("drain", 1, NONROOT_IMAGE, json!({})),
        "trap 'exit 0' TERM; busybox httpd -f -p 8080 -h /www & wait",
    );
    ns.api::<Release>().create(&pp, &r).await.unwrap();
    let no_default_route = json!({"defaultRoute": false});
    apps.create(
        &pp,
        &app("drain", "drain-v1", json!({"web": 1}), no_default_route),
    )
    .await
    .unwrap();
    let www = Route::new("www", RouteSpec::http("drain", "www.drain.test"));
    ns.api::<Route>().create(&pp, &www).await.unwrap();
    eventually(
        "drain to run web=1/1",
        T,
        || get(&apps, "drain"),
        |a| ready(a, "drain-v1", "web=1/1"),
    )
    .await;
    let pre_stop_sleep = |d: &Option<Deployment>| {
        let pod = d.as_ref()?.spec.as_ref()?.template.spec.as_ref()?;
        let pre_stop = pod.containers[0].lifecycle.as_ref()?.pre_stop.as_ref()?;
        Some((
            pre_stop.sleep.as_ref()?.seconds,
            pod.termination_grace_period_seconds?,
        ))
    };
    // Routes drain by default: web waits 20 s, then has its 30 s after SIGTERM.
    eventually(
        "web's pods to sleep before SIGTERM",
        T,
        || get(&deployments, "drain-web"),
        |d| pre_stop_sleep(d) == Some((20, 50)),
    )
    .await;
    let web = eventually(
        "the web pod to be ready",
        T,
        || list(&pods, "flynn.io/app=drain,flynn.io/process=web"),
        |pods| {
            pods.len() == 1
                && pods[0]
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_ref())
                    .is_some()
        },
    )
    .await
    .remove(0);
    let name = web.name_any();
    let ip = web.status.unwrap().pod_ip.unwrap();

    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    eventually(
        "the pod's endpoint to be terminating",
        T,
        || list(&slices, "kubernetes.io/service-name=drain-web"),
        |slices| {
            slices.iter().flat_map(|s| &s.endpoints).any(|e| {
                e.addresses.contains(&ip)
                    && e.conditions.as_ref().and_then(|c| c.terminating) == Some(true)
            })
        },
    )
    .await;
    // Well after the router has heard (milliseconds), the process is still running.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = get(&pods, &name).await.expect("the pod is still there");
    let state = still.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap();
    assert!(
        state.running.is_some(),
        "3 s into the drain, web's container is {state:?}"
    );

    // drainBackends: false stops pods at once.
    merge(
        &ns.api::<Route>(),
        "www",
        json!({"spec": {"http": {"drainBackends": false}}}),
    )
    .await;
    eventually(
        "web's pods to stop at once",
        T,
        || get(&deployments, "drain-web"),
        |d| d.is_some() && pre_stop_sleep(d).is_none(),
    )
    .await;
}

/// A config Secret for `release`, as the CLI and the receiver make them.
fn snapshot(release: &Release, vars: &[(&str, &str)]) -> Secret {
    let vars = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    flynn_crds::config::snapshot(release, &vars)
}

/// Issue 17: anyone with `view` read `DATABASE_URL` from the Deployment. Config now comes
/// from each Release's immutable Secret by `envFrom`: no value is written into the App,
/// the Release, the Deployment or its pods; a Release whose Secret is missing does not
/// start, says why and is rolled back; rolling back brings back the old Release's config.
#[tokio::test]
async fn config_vars_come_from_the_release_snapshot_and_are_never_written_in_plain_text() {
    let (ns, _op) = setup("op-config").await;
    let apps: Api<App> = ns.api();
    let releases: Api<Release> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let pp = PostParams::default();
    const V1: &str = "postgres://cfg:v1-s3cret@db/cfg";
    let mut v1 = release("cfg", 1, NONROOT_IMAGE, json!({}));
    v1.spec.config_secret = Some("cfg-v1-env".into());
    let v1 = releases.create(&pp, &v1).await.unwrap();
    secrets
        .create(&pp, &snapshot(&v1, &[("DATABASE_URL", V1)]))
        .await
        .unwrap();
    apps.create(
        &pp,
        &app(
            "cfg",
            "cfg-v1",
            json!({"web": 1}),
            json!({"deployTimeoutSeconds": 30}),
        ),
    )
    .await
    .unwrap();
    eventually(
        "cfg to run v1",
        T,
        || get(&apps, "cfg"),
        |a| ready(a, "cfg-v1", "web=1/1"),
    )
    .await;

    // What anyone with `view` reads names the Secret and never holds the value.
    let d = get(&ns.api::<Deployment>(), "cfg-web").await.unwrap();
    let c = &d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let from = c.env_from.as_ref().expect("envFrom");
    assert_eq!(from[0].secret_ref.as_ref().unwrap().name, "cfg-v1-env");
    let pods = list(&ns.api::<Pod>(), "flynn.io/release=cfg-v1").await;
    assert!(!pods.is_empty());
    let readable = [
        serde_json::to_string(&d).unwrap(),
        serde_json::to_string(&get(&apps, "cfg").await.unwrap()).unwrap(),
        serde_json::to_string(&get(&releases, "cfg-v1").await.unwrap()).unwrap(),
        serde_json::to_string(&pods).unwrap(),
    ];
    for text in &readable {
        assert!(
            !text.contains("v1-s3cret"),
            "a config value in plain text: {text}"
        );
    }
    // The twin: the value is there, in the Secret (so the check above can fail).
    let stored = get(&secrets, "cfg-v1-env").await.unwrap();
    assert_eq!(
        flynn_crds::config::vars(&stored).unwrap()["DATABASE_URL"],
        V1
    );
    assert_eq!(stored.immutable, Some(true));

    // A Release naming a Secret that does not exist never starts: rolled back, and why.
    let mut v2 = release("cfg", 2, NONROOT_IMAGE, json!({}));
    v2.spec.config_secret = Some("cfg-v2-env".into());
    releases.create(&pp, &v2).await.unwrap();
    merge(&apps, "cfg", json!({"spec": {"release": "cfg-v2"}})).await;
    let a = eventually(
        "cfg to roll back from v2",
        Duration::from_secs(120),
        || get(&apps, "cfg"),
        |a| {
            a.as_ref()
                .and_then(|a| condition(a, types::DEGRADED))
                .is_some_and(|c| c.1 == reasons::ROLLED_BACK)
        },
    )
    .await
    .unwrap();
    let (_, _, msg) = condition(&a, types::DEGRADED).unwrap();
    assert!(
        msg.contains("cfg-v2-env"),
        "the missing Secret is named: {msg}"
    );
    assert_eq!(a.spec.release.as_deref(), Some("cfg-v1"));
    // The rollback brings v1's config back (once the Formation has caught up).
    let env_from = |d: &Option<Deployment>| {
        d.as_ref()
            .and_then(|d| d.spec.as_ref()?.template.spec.as_ref())
            .and_then(|p| p.containers[0].env_from.clone())
            .and_then(|f| f[0].secret_ref.as_ref().map(|s| s.name.clone()))
    };
    let deployments: Api<Deployment> = ns.api();
    eventually(
        "the Deployment to name v1's config again",
        T,
        || get(&deployments, "cfg-web"),
        |d| env_from(d).as_deref() == Some("cfg-v1-env"),
    )
    .await;

    // Deleting a Release deletes its snapshot (history pruning takes both).
    releases
        .delete("cfg-v2", &DeleteParams::default())
        .await
        .unwrap();
    let mut v3 = release("cfg", 3, NONROOT_IMAGE, json!({}));
    v3.spec.config_secret = Some("cfg-v3-env".into());
    let v3 = releases.create(&pp, &v3).await.unwrap();
    secrets
        .create(&pp, &snapshot(&v3, &[("DATABASE_URL", "x")]))
        .await
        .unwrap();
    releases
        .delete("cfg-v3", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "v3's snapshot to go with it",
        T,
        || get(&secrets, "cfg-v3-env"),
        |s| s.is_none(),
    )
    .await;
}

#[tokio::test]
async fn a_bad_image_degrades_and_rolls_back() {
    let (ns, _op) = setup("op-rollback").await;
    let apps: Api<App> = ns.api();
    let releases: Api<Release> = ns.api();
    let pp = PostParams::default();
    releases
        .create(&pp, &release("rb", 1, NONROOT_IMAGE, json!({})))
        .await
        .unwrap();
    apps.create(
        &pp,
        &app(
            "rb",
            "rb-v1",
            json!({"web": 1}),
            json!({"deployTimeoutSeconds": 30}),
        ),
    )
    .await
    .unwrap();
    eventually(
        "rb to run v1",
        T,
        || get(&apps, "rb"),
        |a| ready(a, "rb-v1", "web=1/1"),
    )
    .await;

    // An image that cannot be pulled (there is no registry at localhost).
    releases
        .create(
            &pp,
            &release("rb", 2, "localhost/flynn-does-not-exist:1", json!({})),
        )
        .await
        .unwrap();
    merge(&apps, "rb", json!({"spec": {"release": "rb-v2"}})).await;
    eventually(
        "rb to be Progressing",
        T,
        || get(&apps, "rb"),
        |a| {
            a.as_ref()
                .and_then(|a| condition(a, types::PROGRESSING))
                .is_some_and(|c| c.0 == "True")
        },
    )
    .await;
    let a = eventually(
        "rb to roll back",
        T,
        || get(&apps, "rb"),
        |a| {
            a.as_ref()
                .and_then(|a| condition(a, types::DEGRADED))
                .is_some_and(|c| c.1 == reasons::ROLLED_BACK)
        },
    )
    .await
    .unwrap();
    let (_, _, msg) = condition(&a, types::DEGRADED).unwrap();
    assert!(
        msg.contains("rb-v2 did not become available within 30s"),
        "{msg}"
    );
    assert!(msg.contains("image cannot be pulled"), "{msg}");
    assert!(msg.contains("rolled back to rb-v1"), "{msg}");
    // The verdict is written before the App's spec is pointed back (so the spec change
    // cannot overwrite it): the spec follows a moment later.
    eventually(
        "rb's spec to name rb-v1 again",
        T,
        || get(&apps, "rb"),
        |a| {
            a.as_ref()
                .is_some_and(|a| a.spec.release.as_deref() == Some("rb-v1"))
        },
    )
    .await;
    // The old release kept serving throughout, and serves now.
    let a = eventually(
        "rb to be Ready on v1",
        T,
        || get(&apps, "rb"),
        |a| ready(a, "rb-v1", "web=1/1"),
    )
    .await
    .unwrap();
    assert_eq!(
        condition(&a, types::DEGRADED).unwrap().0,
        "True",
        "Degraded stays until a new rollout"
    );
}

#[tokio::test]
async fn a_crash_looping_first_release_says_why() {
    let (ns, _op) = setup("op-crash").await;
    let apps: Api<App> = ns.api();
    let releases: Api<Release> = ns.api();
    let pp = PostParams::default();
    let mut r = release("crash", 1, NONROOT_IMAGE, json!({}));
    r.spec.processes.get_mut("web").unwrap().command =
        vec!["sh".into(), "-c".into(), "echo starting; exit 3".into()];
    releases.create(&pp, &r).await.unwrap();
    apps.create(
        &pp,
        &app(
            "crash",
            "crash-v1",
            json!({"web": 1}),
            json!({"deployTimeoutSeconds": 90}),
        ),
    )
    .await
    .unwrap();
    // Said while the rollout still runs (issue 18: it used to say `RollingOut` with
    // `Degraded=False` until the timeout), whatever state the kubelet has the process in.
    let a = eventually(
        "crash to be Degraded before its deploy timeout",
        Duration::from_secs(80),
        || get(&apps, "crash"),
        |a| {
            a.as_ref()
                .and_then(|a| condition(a, types::DEGRADED))
                .is_some_and(|c| c.0 == "True")
        },
    )
    .await
    .unwrap();
    let (_, reason, msg) = condition(&a, types::DEGRADED).unwrap();
    assert_eq!(reason, reasons::PROCESS_FAILING, "{msg}");
    assert!(msg.contains("exit"), "{msg}");
    let progressing = condition(&a, types::PROGRESSING).unwrap();
    assert_eq!(
        progressing.0, "True",
        "the rollout goes on: {progressing:?}"
    );
    let a = eventually(
        "crash to time out",
        T,
        || get(&apps, "crash"),
        |a| {
            a.as_ref()
                .and_then(|a| condition(a, types::DEGRADED))
                .is_some_and(|c| c.1 == reasons::DEPLOY_TIMED_OUT)
        },
    )
    .await
    .unwrap();
    let (_, reason, msg) = condition(&a, types::DEGRADED).unwrap();
    assert_eq!(reason, reasons::DEPLOY_TIMED_OUT);
    assert!(msg.contains("exit code 3"), "{msg}");
    assert!(msg.contains("no earlier release to roll back to"), "{msg}");
}

#[tokio::test]
async fn bad_input_gets_a_condition_not_a_crash() {
    let (ns, _op) = setup("op-bad").await;
    let apps: Api<App> = ns.api();
    let releases: Api<Release> = ns.api();
    let pp = PostParams::default();

    apps.create(
        &pp,
        &app("missing", "missing-v7", json!({"web": 1}), json!({})),
    )
    .await
    .unwrap();
    let a = eventually(
        "missing to report its release",
        T,
        || get(&apps, "missing"),
        |a| {
            a.as_ref()
                .and_then(|a| condition(a, types::READY))
                .is_some_and(|c| c.1 == reasons::RELEASE_NOT_FOUND)
        },
    )
    .await
    .unwrap();
    let (_, _, msg) = condition(&a, types::READY).unwrap();
    assert!(msg.contains("missing-v7, which does not exist"), "{msg}");

    releases
        .create(&pp, &release("typo", 1, NONROOT_IMAGE, json!({})))
        .await
        .unwrap();
    apps.create(&pp, &app("typo", "typo-v1", json!({"wrker": 1}), json!({})))
        .await
        .unwrap();
    let a = eventually(
        "typo to report the unknown type",
        T,
        || get(&apps, "typo"),
        |a| {
            a.as_ref()
                .and_then(|a| condition(a, types::DEGRADED))
                .is_some_and(|c| c.1 == reasons::UNKNOWN_PROCESS_TYPE)
        },
    )
    .await
    .unwrap();
    let (_, _, msg) = condition(&a, types::DEGRADED).unwrap();
    assert!(
        msg.contains("\"wrker\"") && msg.contains("web, worker"),
        "{msg}"
    );

    // Fixing the input recovers.
    merge(
        &apps,
        "typo",
        json!({"spec": {"processes": {"wrker": null, "worker": 1}}}),
    )
    .await;
    eventually(
        "typo to run",
        T,
        || get(&apps, "typo"),
        |a| ready(a, "typo-v1", "worker=1/1"),
    )
    .await;
}

#[tokio::test]
async fn deleting_an_app_removes_what_it_made() {
    let (ns, _op) = setup("op-delete").await;
    let apps: Api<App> = ns.api();
    let releases: Api<Release> = ns.api();
    let pp = PostParams::default();
    releases
        .create(&pp, &release("gone", 1, NONROOT_IMAGE, json!({})))
        .await
        .unwrap();
    apps.create(&pp, &app("gone", "gone-v1", json!({"web": 1}), json!({})))
        .await
        .unwrap();
    eventually(
        "gone to run",
        T,
        || get(&apps, "gone"),
        |a| ready(a, "gone-v1", "web=1/1"),
    )
    .await;

    apps.delete("gone", &DeleteParams::foreground())
        .await
        .unwrap();
    let (deployments, services) = (ns.api::<Deployment>(), ns.api::<Service>());
    let (formations, routes) = (ns.api::<Formation>(), ns.api::<Route>());
    eventually(
        "the Deployment to go",
        T,
        || get(&deployments, "gone-web"),
        Option::is_none,
    )
    .await;
    eventually(
        "the Service to go",
        T,
        || get(&services, "gone-web"),
        Option::is_none,
    )
    .await;
    eventually(
        "the Formation to go",
        T,
        || get(&formations, "gone"),
        Option::is_none,
    )
    .await;
    eventually(
        "the Route to go",
        T,
        || get(&routes, "gone-default"),
        Option::is_none,
    )
    .await;
}

#[tokio::test]
async fn route_conflicts_go_to_the_oldest() {
    let (ns, _op) = setup("op-routes").await;
    let routes: Api<Route> = ns.api();
    let pp = PostParams::default();
    let domain = format!("{}.conflict.test", ns.name());
    let route = |name: &str| -> Route {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Route", "metadata": {"name": name},
            "spec": {"type": "http", "app": "shop", "http": {"domain": domain, "path": "/"}}
        }))
        .unwrap()
    };
    routes.create(&pp, &route("first")).await.unwrap();
    // creationTimestamp has one-second resolution: make "first" strictly older.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    routes.create(&pp, &route("second")).await.unwrap();

    let conflicted = |r: &Option<Route>| {
        r.as_ref()
            .and_then(|r| r.status.as_ref())
            .is_some_and(|s| conditions::is_true(&s.conditions, types::CONFLICT))
    };
    let second = eventually(
        "second to be in conflict",
        T,
        || get(&routes, "second"),
        conflicted,
    )
    .await
    .unwrap();
    let status = second.status.unwrap();
    assert_eq!(status.conflicts_with, Some(format!("{}/first", ns.name())));
    let first = get(&routes, "first").await.unwrap();
    assert!(conditions::is_true(
        &first.status.unwrap().conditions,
        types::ACCEPTED
    ));

    routes
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "second to be accepted once first is gone",
        T,
        || get(&routes, "second"),
        |r| {
            r.as_ref()
                .and_then(|r| r.status.as_ref())
                .is_some_and(|s| conditions::is_true(&s.conditions, types::ACCEPTED))
        },
    )
    .await;
}

#[tokio::test]
async fn a_standby_takes_over_when_the_leader_dies_or_steps_down() {
    use flynn_operator::leader::{LeaseConfig, acquire};
    let ns = TestNamespace::create("op-lease").await;
    let config = |id: &str| LeaseConfig {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_millis(300),
        ..LeaseConfig::new(ns.name(), "flynn-operator", id)
    };
    let a = acquire(ns.client().clone(), config("a")).await;
    let b = tokio::spawn(acquire(ns.client().clone(), config("b")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!b.is_finished(), "b must stand by while a renews");

    // a dies without a word (no release): b takes over once the lease expires.
    let killed = std::time::Instant::now();
    drop(a);
    // Generous bounds (a loaded CI machine is slow), but b must not take over before a's
    // last renewal (at most a retry period before the kill) has expired.
    let b = tokio::time::timeout(Duration::from_secs(30), b)
        .await
        .expect("b took over")
        .unwrap();
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "b took over after {took:?}, before a's 4s lease expired"
    );
    let lease: k8s_openapi::api::coordination::v1::Lease =
        ns.api().get("flynn-operator").await.unwrap();
    assert_eq!(
        lease.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("b")
    );
    assert_eq!(lease.spec.unwrap().lease_transitions, Some(1));

    // b steps down gracefully: c takes over within a retry period or two.
    let c = tokio::spawn(acquire(ns.client().clone(), config("c")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let released = std::time::Instant::now();
    b.release().await;
    // Handed back, not left to expire: nobody holds it now.
    let lease: k8s_openapi::api::coordination::v1::Lease =
        ns.api().get("flynn-operator").await.unwrap();
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert!(
        holder.is_none() || holder.as_deref() == Some("c"),
        "{holder:?}"
    );
    tokio::time::timeout(Duration::from_secs(30), c)
        .await
        .expect("c took over after the release")
        .unwrap();
    eprintln!(
        "handover after a crash: {took:?}; after a release: {:?}",
        released.elapsed()
    );
}
