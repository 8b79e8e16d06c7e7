//! The store's garbage collection against a real API server (the local cluster): objects no
//! Release or App needs go, once older than the grace period; everything else stays.

use std::time::Duration;

use bytes::Bytes;
use flynn_builder::store::{LocalStore, ObjectPath, gc};
use flynn_crds::{App, Release};
use flynn_e2e::{TestNamespace, install_flynn_crds};
use kube::api::PostParams;
use serde_json::json;

#[tokio::test]
async fn unused_slugs_sources_and_caches_go_after_the_grace_period() {
    let ns = TestNamespace::create("store-gc").await;
    install_flynn_crds(ns.client()).await.unwrap();
    let n = ns.name();
    let release: Release = serde_json::from_value(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "Release",
        "metadata": {"name": "shop-v1"},
        "spec": {
            "app": "shop", "version": 1,
            "artifact": {"slug": {
                "url": format!("http://flynn-shelf.flynn-system/slugs/{n}/shop/b1.tgz?sig=x"),
                "sha256": "a".repeat(64), "size": 5
            }},
            "processes": {"web": {"ports": [{"port": 8080}]}}
        }
    }))
    .unwrap();
    ns.api::<Release>()
        .create(&PostParams::default(), &release)
        .await
        .unwrap();
    let app: App = serde_json::from_value(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "App",
        "metadata": {"name": "shop"},
        "spec": {"release": "shop-v1", "processes": {"web": 1}}
    }))
    .unwrap();
    ns.api::<App>()
        .create(&PostParams::default(), &app)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    let kept = [
        format!("/slugs/{n}/shop/b1.tgz"), // shop-v1's slug
        format!("/cache/{n}/shop.tgz"),    // App shop exists
        "/backups/not-ours.tgz".to_owned(),
    ];
    let unused = [
        format!("/slugs/{n}/shop/b0.tgz"), // a pruned Release's
        format!("/sources/{n}/shop/0123abc.tar.gz"),
        format!("/cache/{n}/gone.tgz"), // a deleted App's
    ];
    for path in kept.iter().chain(&unused) {
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"bytes"))]);
        store
            .put(&ObjectPath::parse(path).unwrap(), body, None)
            .await
            .unwrap();
    }
    let client = ns.client();

    // Everything is younger than an hour: nothing goes.
    let swept = gc::collect(client, store.store(), Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        swept.seen, 5,
        "the listing covers slugs, sources and caches"
    );
    assert!(swept.deleted.is_empty(), "{swept:?}");

    let swept = gc::collect(client, store.store(), Duration::ZERO)
        .await
        .unwrap();
    let mut deleted = swept.deleted.clone();
    deleted.sort();
    let mut expected = unused.to_vec();
    expected.sort();
    assert_eq!(deleted, expected);
    for path in &kept {
        let path = ObjectPath::parse(path).unwrap();
        assert!(
            store.store().head(&path).await.unwrap().is_some(),
            "{path:?} was deleted"
        );
    }
    for path in &unused {
        let path = ObjectPath::parse(path).unwrap();
        assert!(
            store.store().head(&path).await.unwrap().is_none(),
            "{path:?} is still there"
        );
    }
}
