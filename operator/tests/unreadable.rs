//! An object the operator cannot parse, against the real API server: reported on itself
//! (a Warning Event) and in the metric, and skipped, while its readable twin in the same
//! list is reconciled as usual (not a watch stuck retrying the list).

use flynn_crds::{App, Formation, Release};
use flynn_operator::metrics::KindLabels;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

mod common;
use common::*;

/// A status field past its type's range: the App status schema takes any integer (the
/// status is the operator's to write), the operator's `i32` does not. The kind of object
/// another writer, or another version, can leave behind.
const PAST_I32: u64 = 3_000_000_000;

#[tokio::test]
async fn an_unreadable_app_is_reported_and_skipped_and_its_twin_is_reconciled() {
    let ns = namespace("op-unreadable").await;
    let apps: Api<App> = ns.api();
    let releases: Api<Release> = ns.api();
    let formations: Api<Formation> = ns.api();
    let pp = PostParams::default();
    for name in ["broken", "twin"] {
        releases
            .create(&pp, &release(name, 1, NONROOT_IMAGE, json!({})))
            .await
            .unwrap();
        apps.create(
            &pp,
            &app(name, &format!("{name}-v1"), json!({"web": 0}), json!({})),
        )
        .await
        .unwrap();
    }
    // The attack on `broken`, and the same status with a value that fits on its twin,
    // both before any operator runs, so its first list holds both.
    let status = |desired: u64| {
        Patch::Merge(json!({"status": {"processes": {"web": {"desired": desired}}}}))
    };
    let params = PatchParams::default();
    // Untyped: the answer holds the value `App` cannot parse.
    let untyped: Api<DynamicObject> = Api::namespaced_with(
        ns.client().clone(),
        ns.name(),
        &ApiResource::erase::<App>(&()),
    );
    untyped.patch_status("broken", &params, &status(PAST_I32))
        .await
        .expect("the API server accepts a status integer past i32 (if it now refuses it, this test needs another unreadable input)");
    apps.patch_status("twin", &params, &status(1))
        .await
        .unwrap();

    let op = start(&ns, |_| {});

    // The twin is reconciled: the list that holds `broken` did not stop the watch.
    eventually(
        "the twin's Formation",
        T,
        || get(&formations, "twin"),
        Option::is_some,
    )
    .await;
    // `broken` is reported on itself, saying what did not parse and how to fix it.
    let events: Api<Event> = ns.api();
    let event = eventually(
        "an Unreadable Event on broken",
        T,
        || async {
            events
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("Unreadable")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
                })
        },
        Option::is_some,
    )
    .await
    .unwrap();
    let note = event.note.unwrap_or_default();
    assert!(note.contains(&PAST_I32.to_string()), "{note}");
    assert!(note.contains("kubectl edit app broken"), "{note}");
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(
        !events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Unreadable")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("twin")),
        "the twin is not reported"
    );
    let skipped = op
        .metrics
        .unreadable
        .get_or_create(&KindLabels { kind: "App".into() })
        .get();
    assert!(
        skipped >= 1,
        "unreadable_objects_total{{kind=\"App\"}} = {skipped}"
    );
    // Skipped: no Formation was made for it.
    assert!(get(&formations, "broken").await.is_none());

    // Fixed, it is read and reconciled like any other.
    apps.patch_status("broken", &params, &status(0))
        .await
        .unwrap();
    eventually(
        "broken's Formation once its status is readable",
        T,
        || get(&formations, "broken"),
        Option::is_some,
    )
    .await;
}
