//! The operator never takes over an object it did not make: a Deployment or Service that
//! already has an App's child name is left exactly as it was (not rewritten, not deleted
//! with the App), and the App says which object is in the way.

mod common;

use common::*;
use flynn_crds::conditions::{self, reasons, types};
use flynn_crds::{App, Release, labels};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// A team's own Deployment `name`, made by hand (not by Flynn), with `extra_labels`.
fn foreign_deployment(name: &str, extra_labels: serde_json::Value) -> Deployment {
    let mut labels = json!({"team": "ours"});
    labels
        .as_object_mut()
        .unwrap()
        .extend(extra_labels.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"team": "ours"}},
            "template": {
                "metadata": {"labels": {"team": "ours"}},
                "spec": {"containers": [{"name": "c", "image": NONROOT_IMAGE}]}
            }
        }
    }))
    .unwrap()
}

/// A team's own Service `name`, labelled as if Flynn had made it (what a cached impostor
/// looks like: only the owner reference tells it apart).
fn impostor_service(name: &str, app: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            labels::MANAGED_BY: labels::MANAGED_BY_FLYNN, labels::APP: app, "team": "ours"
        }},
        "spec": {"selector": {"team": "ours"}, "ports": [{"port": 9999}]}
    }))
    .unwrap()
}

fn conflict(a: &Option<App>) -> Option<(String, String, String)> {
    a.as_ref().and_then(|a| condition(a, types::CONFLICT))
}

#[tokio::test]
async fn children_named_like_a_teams_own_objects_are_left_alone() {
    let (ns, _op) = setup("takeover").await;
    let apps: Api<App> = ns.api();
    let releases: Api<Release> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    let services: Api<Service> = ns.api();
    let pp = PostParams::default();

    // The team's own objects, with the names the App `shop` would give its web process.
    let mine = deployments
        .create(&pp, &foreign_deployment("shop-web", json!({})))
        .await
        .unwrap();
    let theirs = services
        .create(&pp, &impostor_service("shop-web", "shop"))
        .await
        .unwrap();

    for app_name in ["shop", "other"] {
        releases
            .create(&pp, &release(app_name, 1, NONROOT_IMAGE, json!({})))
            .await
            .unwrap();
        apps.create(
            &pp,
            &app(
                app_name,
                &format!("{app_name}-v1"),
                json!({"web": 1}),
                json!({}),
            ),
        )
        .await
        .unwrap();
    }

    // The attack's App says what is in the way, and how to get out of it.
    let a = eventually(
        "shop to report a Conflict",
        T,
        || get(&apps, "shop"),
        |a| conflict(a).is_some_and(|(s, ..)| s == "True"),
    )
    .await
    .unwrap();
    let (_, reason, msg) = condition(&a, types::CONFLICT).unwrap();
    assert_eq!(reason, reasons::NOT_OWNED);
    assert!(
        msg.contains("Deployment shop-web") && msg.contains("Service shop-web"),
        "{msg}"
    );
    assert!(msg.contains("rename or delete"), "{msg}");
    let status = a.status.clone().unwrap();
    assert!(
        conditions::is_true(&status.conditions, types::DEGRADED),
        "{:?}",
        status.conditions
    );
    // The valid twin in the same namespace runs.
    eventually(
        "other to run v1",
        T,
        || get(&apps, "other"),
        |a| ready(a, "other-v1", "web=1/1"),
    )
    .await;

    // Exactly as they were: same generation, spec and metadata, no owner added. (The
    // Deployment controller writes the Deployment's status, so not its resourceVersion.)
    let d = get(&deployments, "shop-web").await.unwrap();
    assert_eq!(
        d.metadata.generation, mine.metadata.generation,
        "the Deployment was written"
    );
    assert_eq!(d.spec, mine.spec);
    assert_eq!(d.metadata.labels, mine.metadata.labels);
    assert!(
        !d.annotations().keys().any(|k| k.starts_with("flynn.io/")),
        "{:?}",
        d.annotations()
    );
    assert!(d.owner_references().is_empty());
    let s = get(&services, "shop-web").await.unwrap();
    assert_eq!(
        s.resource_version(),
        theirs.resource_version(),
        "the Service was written"
    );

    // Deleting the App leaves them be.
    apps.delete("shop", &DeleteParams::default()).await.unwrap();
    eventually("shop to be gone", T, || get(&apps, "shop"), Option::is_none).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        get(&deployments, "shop-web").await.is_some(),
        "deleted with the App"
    );
    assert!(
        get(&services, "shop-web").await.is_some(),
        "deleted with the App"
    );
}

#[tokio::test]
async fn the_conflict_clears_once_the_name_is_free() {
    let (ns, _op) = setup("takeover-clear").await;
    let apps: Api<App> = ns.api();
    let deployments: Api<Deployment> = ns.api();
    let pp = PostParams::default();
    deployments
        .create(&pp, &foreign_deployment("cafe-web", json!({})))
        .await
        .unwrap();
    ns.api::<Release>()
        .create(&pp, &release("cafe", 1, NONROOT_IMAGE, json!({})))
        .await
        .unwrap();
    apps.create(&pp, &app("cafe", "cafe-v1", json!({"web": 1}), json!({})))
        .await
        .unwrap();
    eventually(
        "cafe to report a Conflict",
        T,
        || get(&apps, "cafe"),
        |a| conflict(a).is_some_and(|(s, ..)| s == "True"),
    )
    .await;

    deployments
        .delete("cafe-web", &DeleteParams::default())
        .await
        .unwrap();
    let a = eventually(
        "cafe to run once its name is free",
        T,
        || get(&apps, "cafe"),
        |a| ready(a, "cafe-v1", "web=1/1"),
    )
    .await
    .unwrap();
    let (s, reason, _) = condition(&a, types::CONFLICT).unwrap();
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("False", reasons::NAMES_FREE)
    );
    let d = get(&deployments, "cafe-web").await.unwrap();
    assert_eq!(
        d.labels()[labels::APP],
        "cafe",
        "the App's own Deployment now"
    );
}
