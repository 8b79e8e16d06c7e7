//! Wiring: the watches, the caches they fill, and the three controllers on top.
//!
//! Each kind is watched once. The watch fills the kind's cache and triggers the
//! controller that polls it (the primary kind of the App, Formation and Route
//! controllers; the children and Releases of the Formation controller); a controller
//! triggered by a kind it does not poll (the App controller by Formations, Releases and
//! Routes; the Route controller by a contender's change) is sent the trigger *after*
//! the event is in the cache, so no reconcile reads a cache older than its trigger.
//! Reconcilers only run once every cache holds its first full list: a child missing
//! from a half-filled cache would be re-applied, and an operator restarting over
//! converged Apps must write nothing.
//!
//! This works around a limitation of kube's shared streams (`reflect_shared`), which would
//! otherwise do the fan-out: they do not pass deletions on to subscribers
//! (<https://github.com/kube-rs/kube/issues/1590>), and a subscriber stalls for good when
//! an object is deleted before it reads it; a deleted child must be re-made and a deleted
//! Route must hand its key on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flynn_crds::labels;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, Config as WatcherConfig};
use kube::{Api, Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::cache::{
    AppView, Cache, Caches, DeploymentView, Feed, FormationView, Projection, ReleaseView,
    RouteView, ServiceView,
};
use crate::metrics::{KindLabels, Metrics};
use crate::per_object::{self, PerObject};
use crate::server::Health;
use crate::unreadable::{Lenient, Unreadable};
use crate::{Context, Error, Settings, app, formation, grants, route};

fn api<K>(client: &Client, settings: &Settings) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match &settings.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A watch event of objects parsed one by one, as the cache takes it: the readable ones
/// projected; an unreadable one sent to `unreadable` and skipped (its deletion still
/// removes the copy the cache holds).
fn project_event<P: Projection>(
    event: watcher::Event<Lenient<P::Kind>>,
    cache: &Cache<P>,
    unreadable: &UnboundedSender<Unreadable>,
) -> Option<watcher::Event<P>> {
    use watcher::Event;
    let readable = |obj: Lenient<P::Kind>| match obj.parsed {
        Ok(obj) => Some(P::project(obj)),
        Err(_) => {
            if let Some(u) = obj.unreadable() {
                let _ = unreadable.unbounded_send(u);
            }
            None
        }
    };
    match event {
        Event::Apply(obj) => readable(obj).map(Event::Apply),
        Event::InitApply(obj) => readable(obj).map(Event::InitApply),
        Event::Delete(obj) => {
            let (ns, name) = (obj.namespace(), obj.name_any());
            match obj.parsed {
                Ok(obj) => Some(Event::Delete(P::project(obj))),
                Err(_) => cache
                    .store()
                    .get(&ObjectRef::new(&name).within(&ns.unwrap_or_default()))
                    .map(|held| Event::Delete((*held).clone())),
            }
        }
        Event::Init => Some(Event::Init),
        Event::InitDone => Some(Event::InitDone),
    }
}

/// A watch that fills `P`'s cache, yielding each object it changed (deletions too: a
/// deleted child is re-made, a deleted Route hands its key on) for the controller it
/// triggers. `deleted` is told of each deletion, after the cache.
fn cached_watch<P: Projection>(
    api: Api<Lenient<P::Kind>>,
    config: WatcherConfig,
    unreadable: UnboundedSender<Unreadable>,
    deleted: impl Fn(&str, &str) + Send + 'static,
) -> (
    Cache<P>,
    impl Stream<Item = Result<P, watcher::Error>> + Send + 'static,
) {
    let (cache, feed): (Cache<P>, Feed<P>) = Cache::new();
    let mut feed = feed.on_delete(deleted);
    let reader = cache.clone();
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .try_filter_map(move |event| {
            let event = project_event(event, &reader, &unreadable);
            if let Some(event) = &event {
                feed.apply(event);
            }
            futures::future::ready(Ok(event))
        })
        .touched_objects();
    (cache, stream)
}

/// Changes to an App's Release, Deployments or Services trigger its Formation, found by
/// the App (the Formation is named after the App).
fn formation_triggers<P: Projection>(
    objects: impl Stream<Item = Result<P, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = ObjectRef<FormationView>> + Send + 'static {
    objects.filter_map(|obj| {
        futures::future::ready(match obj {
            Ok(obj) => formation::formation_for(&obj),
            Err(e) => {
                tracing::warn!(error = %e, kind = %P::kind(&()), "watch failed; retrying");
                None
            }
        })
    })
}

/// Sends a trigger; fails only once the controller is gone (shutdown).
fn trigger<T>(tx: &UnboundedSender<T>, obj: T) {
    let _ = tx.unbounded_send(obj);
}

/// Reports each unreadable object: a Warning Event on it and the metric.
async fn report_unreadable(ctx: Arc<Context>, mut unreadable: UnboundedReceiver<Unreadable>) {
    while let Some(u) = unreadable.next().await {
        let kind = u.reference.kind.clone().unwrap_or_default();
        ctx.metrics
            .unreadable
            .get_or_create(&KindLabels { kind: kind.clone() })
            .inc();
        tracing::warn!(
            kind,
            namespace = u.reference.namespace.as_deref().unwrap_or_default(),
            name = u.reference.name.as_deref().unwrap_or_default(),
            error = %u.error,
            "skipping an object the operator cannot read"
        );
        ctx.event_on(&u.reference, true, "Unreadable", u.note())
            .await;
    }
}

/// Runs the controllers until `shutdown` is cancelled; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop_namespaces = CancellationToken::new();
    let _stop_namespaces_on_return = stop_namespaces.clone().drop_guard();
    // Small pages: a page's objects are deserialized whole before they are projected, and
    // that high-water mark stays as RSS (pages of 100 held about 3 MB above the live heap
    // with 1,000 Apps; kube.rs, "reflector memory", on the same effect).
    let wc = WatcherConfig::default().page_size(25).any_semantic();
    let managed = wc.clone().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_FLYNN
    ));
    let (to_report, unreadable) = futures::channel::mpsc::unbounded::<Unreadable>();
    let per_object = Arc::new(PerObject::default());
    // What the controllers keep per object leaves with the object.
    let forget = |controller: &'static str| {
        let per_object = per_object.clone();
        move |ns: &str, name: &str| per_object.forget(controller, ns, name)
    };
    let nothing = |_: &str, _: &str| {};

    let (apps, app_stream) = cached_watch::<AppView>(
        api(&client, &settings),
        wc.clone(),
        to_report.clone(),
        forget(app::CONTROLLER),
    );
    let app_store = apps.store().clone();
    let (formations, formation_stream) = cached_watch::<FormationView>(
        api(&client, &settings),
        wc.clone(),
        to_report.clone(),
        forget(formation::CONTROLLER),
    );
    let formation_store = formations.store().clone();
    let (releases, release_stream) = cached_watch::<ReleaseView>(
        api(&client, &settings),
        wc.clone(),
        to_report.clone(),
        nothing,
    );
    // Routes from every namespace: conflicts are cluster-wide.
    let (routes, route_stream) = cached_watch::<RouteView>(
        Api::all(client.clone()),
        wc.clone(),
        to_report.clone(),
        forget(route::CONTROLLER),
    );
    let route_store = routes.store().clone();
    let (deployments, deployment_stream) = cached_watch::<DeploymentView>(
        api(&client, &settings),
        managed.clone(),
        to_report.clone(),
        nothing,
    );
    let (services, service_stream) =
        cached_watch::<ServiceView>(api(&client, &settings), managed, to_report, nothing);
    let caches = Caches {
        apps,
        formations,
        releases,
        routes,
        deployments,
        services,
        synced: tokio::sync::watch::Sender::new(false),
    };
    let mut ctx = Context::new(
        client.clone(),
        settings.clone(),
        metrics,
        caches,
        per_object,
    );
    if settings.exclude_namespace_label.is_some() {
        // Namespace metadata (names and labels only), read by `Context::scope`.
        let (store, writer) = reflector::store();
        let stream = watcher::watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            WatcherConfig::default(),
        )
        .default_backoff()
        .modify(|ns| ns.managed_fields_mut().clear())
        .reflect(writer)
        .for_each(|_| futures::future::ready(()));
        let stop = stop_namespaces.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stream => {}
                () = stop.cancelled() => {}
            }
        });
        let _ = store.wait_until_ready().await;
        ctx.excluded_namespaces = Some(store);
    }
    let ctx = Arc::new(ctx);
    let config = ControllerConfig::default().concurrency(settings.concurrency);

    // Fan-out: triggers for controllers that do not poll the watch themselves.
    let (to_apps, app_triggers) = futures::channel::mpsc::unbounded::<ObjectRef<AppView>>();
    let (to_routes, route_triggers) = futures::channel::mpsc::unbounded::<ObjectRef<RouteView>>();
    let (to_formations, route_formation_triggers) =
        futures::channel::mpsc::unbounded::<ObjectRef<FormationView>>();
    // The namespaces of changed Apps and Routes, for the grants (see `grants`).
    let (to_grants, grant_triggers) = futures::channel::mpsc::unbounded::<String>();
    // The Apps that changed, for the Resource controller (a Resource waiting for its App,
    // or whose App's Release lost its URL to a push or a rollback).
    let (to_resources, resource_triggers) = futures::channel::mpsc::unbounded::<(String, String)>();
    let app_stream = app_stream.inspect_ok({
        let to_grants = to_grants.clone();
        move |a| {
            if let Some(ns) = a.namespace() {
                trigger(&to_resources, (ns.clone(), a.name_any()));
                trigger(&to_grants, ns);
            }
        }
    });
    let formation_stream = formation_stream.inspect_ok({
        let to_apps = to_apps.clone();
        move |f| {
            app::app_for(f)
                .into_iter()
                .for_each(|r| trigger(&to_apps, r))
        }
    });
    let release_stream = release_stream.inspect_ok({
        let to_apps = to_apps.clone();
        move |r| {
            app::app_for(r)
                .into_iter()
                .for_each(|a| trigger(&to_apps, a))
        }
    });
    let route_stream = route_stream.inspect_ok({
        let scope = settings.namespace.clone();
        let ctx = ctx.clone();
        move |r| {
            if let Some(ns) = r.namespace() {
                trigger(&to_grants, ns);
            }
            // Only the Routes of Apps in scope: in a cluster of 10,000 Routes, a scoped
            // operator must not schedule (and skip) a reconcile for each change.
            let in_scope = |ns: &Option<String>| scope.is_none() || *ns == scope;
            app::app_for(r)
                .filter(|a| in_scope(&a.namespace))
                .into_iter()
                .for_each(|a| trigger(&to_apps, a));
            // Whether a process drains (`drainBackends`) is in its pod template.
            formation::formation_for(r)
                .filter(|f| in_scope(&f.namespace))
                .into_iter()
                .for_each(|f| trigger(&to_formations, f));
            // A changed Route may take a host or port from, or hand it to, another one.
            crate::route::affected(&ctx.caches.routes, r)
                .into_iter()
                .filter(|c| in_scope(&c.namespace))
                .for_each(|c| trigger(&to_routes, c));
        }
    });

    let app_ctl = Controller::for_stream(app_stream, app_store)
        .with_config(config.clone())
        .reconcile_on(app_triggers)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            instrumented(app::CONTROLLER, app::reconcile),
            error_policy(app::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_outcome);
    let formation_ctl = Controller::for_stream(formation_stream, formation_store)
        .with_config(config.clone())
        .reconcile_on(formation_triggers(deployment_stream))
        .reconcile_on(formation_triggers(service_stream))
        .reconcile_on(formation_triggers(release_stream))
        .reconcile_on(route_formation_triggers)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            instrumented(formation::CONTROLLER, formation::reconcile),
            error_policy(formation::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_outcome);
    let route_ctl = Controller::for_stream(route_stream, route_store)
        .with_config(config)
        .reconcile_on(route_triggers)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            instrumented(route::CONTROLLER, route::reconcile),
            error_policy(route::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_outcome);

    let readiness = {
        let ctx = ctx.clone();
        async move {
            ctx.caches.sync().await;
            health
                .ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("caches synced; reconciling");
        }
    };
    let grants = grants::run(ctx.clone(), grant_triggers, shutdown.clone());
    let resources = crate::resource::run(ctx.clone(), resource_triggers, shutdown.clone());
    let reports = {
        let shutdown = shutdown.clone();
        let reports = report_unreadable(ctx.clone(), unreadable);
        async move {
            tokio::select! {
                () = reports => {}
                () = shutdown.cancelled() => {}
            }
        }
    };
    tokio::join!(
        app_ctl,
        formation_ctl,
        route_ctl,
        readiness,
        grants,
        resources,
        reports
    );
    Ok(())
}

/// Logs what the controller machinery reports beyond reconcile results (those are
/// logged by the error policy): a trigger watch that fails, e.g. for lack of permission.
fn log_outcome<K, E1, E2>(
    outcome: Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<E1, E2>>,
) -> futures::future::Ready<()>
where
    K: Resource,
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
{
    use kube::runtime::controller::Error as CtlError;
    match outcome {
        Ok(_) | Err(CtlError::ReconcilerFailed(..)) | Err(CtlError::ObjectNotFound(_)) => {}
        Err(e) => tracing::warn!(error = %e, "controller error"),
    }
    futures::future::ready(())
}

type ReconcileFuture = futures::future::BoxFuture<'static, Result<Action, Error>>;

/// Wraps a reconciler with its metrics and resets the object's failure count on success.
fn instrumented<K, F, Fut>(
    controller: &'static str,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<Context>) -> ReconcileFuture
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    move |obj: Arc<K>, ctx: Arc<Context>| {
        let key = failure_key(controller, obj.as_ref());
        async move {
            // Cheap once they are: a reconcile on half-filled caches would re-apply
            // children it cannot see yet.
            ctx.caches.wait_synced().await;
            let start = Instant::now();
            let result = reconcile(obj, ctx.clone()).await;
            ctx.metrics.observe(controller, start.elapsed());
            if result.is_ok() {
                ctx.per_object.succeeded(&key);
            }
            result
        }
        .boxed()
    }
}

fn failure_key<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    obj: &K,
) -> per_object::Key {
    per_object::key(
        controller,
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default(),
    )
}

/// Logs and counts the error, then retries with exponential backoff per object
/// (1 s, 2 s, 4 s ... 30 s, like the watchers' own backoff), so one broken object neither
/// spins nor, after an outage, waits long to be retried.
fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()> + ResourceExt,
{
    move |obj, err, ctx| {
        ctx.metrics.error(controller, err.metric_label());
        let attempts = ctx.per_object.failed(failure_key(controller, obj.as_ref()));
        let backoff = ctx
            .settings
            .error_backoff
            .saturating_mul(1 << attempts.min(9).saturating_sub(1))
            .min(Duration::from_secs(30));
        tracing::warn!(controller, object = %obj.name_any(), error = %err, attempts, retry_in = ?backoff, "reconcile failed");
        Action::requeue(backoff)
    }
}
