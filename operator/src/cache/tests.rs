use super::*;
use flynn_crds::Route;
use kube::ResourceExt;
use serde_json::json;

fn route(ns: &str, name: &str, app: &str, rv: &str, domain: &str) -> Route {
    serde_json::from_value(json!({
        "apiVersion": "flynn.io/v1alpha1", "kind": "Route",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
            "uid": "1dcfd75f-5569-4fd7-bab6-80762db95d51", "generation": 1,
            "managedFields": [{"manager": "flynn-operator", "operation": "Apply"}],
            "labels": {"flynn.io/app": app}},
        "spec": {"type": "http", "app": app, "process": "web",
            "http": {"domain": domain, "path": "/"}},
        "status": {"url": format!("http://{domain}"), "observedGeneration": 1},
    }))
    .unwrap()
}

fn apply(feed: &mut Feed<RouteView>, r: Route) {
    feed.apply(&watcher::Event::Apply(RouteView::project(r)));
}

fn rv(r: &Arc<RouteView>) -> Option<u64> {
    r.revision()
}

#[test]
fn lists_select_by_app_and_claim() {
    let (cache, mut feed) = Cache::<RouteView>::new();
    apply(
        &mut feed,
        route("a", "shop", "shop", "1", "shop.example.com"),
    );
    apply(
        &mut feed,
        route("b", "shop", "shop", "2", "Shop.Example.com."),
    );
    apply(
        &mut feed,
        route("a", "blog", "blog", "3", "blog.example.com"),
    );
    apply(&mut feed, route("c", "all", "edge", "4", "*.example.com"));
    let of_shop = cache.of_app("a", "shop");
    assert_eq!(of_shop.len(), 1);
    assert_eq!(of_shop[0].namespace().as_deref(), Some("a"));
    assert!(
        of_shop[0].object().metadata.managed_fields.is_none(),
        "projected"
    );
    assert_eq!(cache.claiming("host shop.example.com").len(), 2);
    assert!(cache.of_app("a", "nope").is_empty());
    // A wildcard's change reaches the Routes of the exact hosts it covers, and itself.
    let mut affected: Vec<String> = cache
        .affected_by("host *.example.com")
        .iter()
        .map(ToString::to_string)
        .collect();
    affected.sort();
    assert_eq!(affected.len(), 4, "{affected:?}");
    assert_eq!(cache.affected_by("host blog.example.com").len(), 1);
}

#[test]
fn an_object_that_changes_app_or_claim_leaves_its_old_keys() {
    let (cache, mut feed) = Cache::<RouteView>::new();
    apply(&mut feed, route("a", "r", "shop", "1", "shop.example.com"));
    apply(&mut feed, route("a", "r", "blog", "2", "blog.example.com"));
    assert!(cache.of_app("a", "shop").is_empty());
    assert!(cache.claiming("host shop.example.com").is_empty());
    assert_eq!(cache.of_app("a", "blog").len(), 1);
    assert_eq!(cache.claiming("host blog.example.com").len(), 1);
}

#[test]
fn our_newer_write_stands_in_until_the_watch_delivers_it() {
    let (cache, mut feed) = Cache::<RouteView>::new();
    apply(
        &mut feed,
        route("a", "shop", "shop", "5", "shop.example.com"),
    );
    // We wrote version 6 (a new domain); the watch still has 5.
    cache.remember(route("a", "shop", "shop", "6", "new.example.com"));
    assert_eq!(rv(&cache.get("a", "shop").unwrap()), Some(6));
    assert_eq!(rv(&cache.of_app("a", "shop")[0]), Some(6));
    // Lists select our copy by its own claim, not the stale one's.
    assert!(cache.claiming("host shop.example.com").is_empty());
    assert_eq!(cache.claiming("host new.example.com").len(), 1);
    // An older write than the store's copy does not stand in.
    let stale = cache.store().get(&store_ref("a", "shop")).unwrap();
    assert_eq!(rv(&cache.fresh(&stale)), Some(6));
    // The watch catches up with 7: the store answers again, and the write is dropped.
    apply(
        &mut feed,
        route("a", "shop", "shop", "7", "new.example.com"),
    );
    assert_eq!(rv(&cache.get("a", "shop").unwrap()), Some(7));
    assert_eq!(cache.overlay_len(), 0);
}

#[test]
fn a_created_object_is_listed_before_the_watch_has_it_and_forgotten_on_delete() {
    let (cache, mut feed) = Cache::<RouteView>::new();
    let created = route("a", "shop", "shop", "9", "shop.example.com");
    cache.remember(created.clone());
    assert_eq!(cache.of_app("a", "shop").len(), 1);
    assert_eq!(cache.claiming("host shop.example.com").len(), 1);
    feed.apply(&watcher::Event::Delete(RouteView::project(created)));
    assert!(cache.of_app("a", "shop").is_empty());
    assert!(cache.get("a", "shop").is_none());
    assert_eq!(cache.overlay_len(), 0);
}

#[test]
fn a_relist_drops_the_keys_of_objects_deleted_while_the_watch_was_down() {
    let (cache, mut feed) = Cache::<RouteView>::new();
    feed.apply(&watcher::Event::Init);
    for (name, rv) in [("shop", "1"), ("blog", "2")] {
        let r = route("a", name, name, rv, &format!("{name}.example.com"));
        feed.apply(&watcher::Event::InitApply(RouteView::project(r)));
    }
    feed.apply(&watcher::Event::InitDone);
    assert_eq!(cache.of_app("a", "blog").len(), 1);
    // The watch restarts; `blog` was deleted meanwhile, so the relist lacks it.
    feed.apply(&watcher::Event::Init);
    let r = route("a", "shop", "shop", "3", "shop.example.com");
    feed.apply(&watcher::Event::InitApply(RouteView::project(r)));
    feed.apply(&watcher::Event::InitDone);
    assert!(cache.of_app("a", "blog").is_empty());
    assert!(cache.claiming("host blog.example.com").is_empty());
    assert_eq!(cache.index.read().unwrap().apps(), 1);
    assert_eq!(cache.of_app("a", "shop").len(), 1);
}

#[test]
fn namespace_listing_is_sorted_and_sees_our_writes() {
    let (cache, mut feed) = Cache::<RouteView>::new();
    apply(&mut feed, route("a", "b", "b", "1", "b.example.com"));
    apply(&mut feed, route("a", "a", "a", "2", "a.example.com"));
    apply(&mut feed, route("z", "c", "c", "3", "c.example.com"));
    cache.remember(route("a", "a", "a", "4", "a2.example.com"));
    let names: Vec<String> = cache
        .in_namespace("a")
        .iter()
        .map(|r| format!("{}@{}", r.name_any(), rv(r).unwrap()))
        .collect();
    assert_eq!(names, ["a@4", "b@1"]);
}

#[test]
fn what_the_controllers_keep_per_object_leaves_with_the_object() {
    use crate::per_object::{PerObject, key};
    let per_object = Arc::new(PerObject::default());
    let (_cache, feed) = Cache::<RouteView>::new();
    let mut feed = feed.on_delete({
        let per_object = per_object.clone();
        move |ns: &str, name: &str| per_object.forget("route", ns, name)
    });
    let gone = route("a", "shop", "shop", "1", "shop.example.com");
    let twin = route("b", "shop", "shop", "2", "shop.example.com");
    for r in [&gone, &twin] {
        apply(&mut feed, r.clone());
        let ns = r.metadata.namespace.as_deref().unwrap();
        per_object.failed(key("route", ns, "shop"));
        assert!(
            per_object
                .hold_interim(key("route", ns, "shop"), true)
                .is_some()
        );
    }
    assert_eq!(per_object.sizes(), (2, 2));
    feed.apply(&watcher::Event::Delete(RouteView::project(gone)));
    // The deleted Route's entries are gone; its twin in another namespace keeps its own.
    assert_eq!(per_object.sizes(), (1, 1));
    assert!(
        per_object
            .hold_interim(key("route", "b", "shop"), true)
            .is_some()
    );
}
