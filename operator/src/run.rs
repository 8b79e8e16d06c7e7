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
//! (kube's shared streams would do the fan-out, but a subscriber stalls for good when
//! an object is deleted before it reads it.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use flynn_crds::{App, Formation, Release, Route, labels};
use futures::channel::mpsc::UnboundedSender;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, Config as WatcherConfig};
use kube::{Api, Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::cache::{self, Cache, Cached, Caches, Dictionary, Packed, Slim, Stored};
use crate::metrics::Metrics;
use crate::server::Health;
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

/// A watch that fills a cache (objects trimmed and packed) as the controller it
/// triggers polls it.
fn cached_watch<K: Cached, S: Stored<K>>(
    api: Api<K>,
    config: WatcherConfig,
) -> (
    Cache<K, S>,
    impl Stream<Item = Result<S, watcher::Error>> + Send + 'static,
) {
    let (store, mut writer) = reflector::store::<S>();
    let cache = Cache::new(store);
    let on_delete = cache.on_delete();
    let dictionary = Dictionary::default();
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .map_ok(move |event| {
            let event = cache::pack_event::<K, S>(event, &dictionary);
            // What `reflect` does, for stored types that are not `Resource`s.
            writer.apply_watcher_event(&event);
            if let watcher::Event::Delete(obj) = &event {
                on_delete(obj);
            }
            event
        })
        // Deletions too: a deleted child is re-made, a deleted Route hands its key on.
        .touched_objects();
    (cache, stream)
}

/// Changes to an App's Release, Deployments or Services trigger its Formation, found by
/// the App (a packed copy keeps no owner references; the Formation is named after the
/// App).
fn formation_triggers<K: Cached, S: Stored<K>>(
    objects: impl Stream<Item = Result<S, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = ObjectRef<Packed<Formation>>> + Send + 'static {
    objects.filter_map(|obj| {
        futures::future::ready(match obj {
            Ok(obj) => formation::formation_for(&obj),
            Err(e) => {
                tracing::warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying");
                None
            }
        })
    })
}

/// Sends a trigger; fails only once the controller is gone (shutdown).
fn trigger<T>(tx: &UnboundedSender<T>, obj: T) {
    let _ = tx.unbounded_send(obj);
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
    // Small pages: a page's objects are deserialized whole before they are packed, and
    // that high-water mark stays as RSS (pages of 100 held about 3 MB above the live heap
    // with 1,000 Apps; kube.rs, "reflector memory", on the same effect).
    let wc = WatcherConfig::default().page_size(25).any_semantic();
    let managed = wc.clone().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_FLYNN
    ));

    let (apps, app_stream) = cached_watch::<App, Packed<_>>(api(&client, &settings), wc.clone());
    let app_store = apps.store().clone();
    let (formations, formation_stream) =
        cached_watch::<Formation, Packed<_>>(api(&client, &settings), wc.clone());
    let formation_store = formations.store().clone();
    let (releases, release_stream) =
        cached_watch::<Release, Slim<_>>(api(&client, &settings), wc.clone());
    // Routes from every namespace: conflicts are cluster-wide.
    let (routes, route_stream) =
        cached_watch::<Route, Packed<_>>(Api::all(client.clone()), wc.clone());
    let route_store = routes.store().clone();
    let (deployments, deployment_stream) =
        cached_watch::<Deployment, Slim<_>>(api(&client, &settings), managed.clone());
    let (services, service_stream) =
        cached_watch::<Service, Slim<_>>(api(&client, &settings), managed);
    let caches = Caches {
        apps,
        formations,
        releases,
        routes,
        deployments,
        services,
        synced: tokio::sync::watch::Sender::new(false),
    };
    let mut ctx = Context::new(client.clone(), settings.clone(), metrics, caches);
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
    let (to_apps, app_triggers) = futures::channel::mpsc::unbounded::<ObjectRef<Packed<App>>>();
    let (to_routes, route_triggers) =
        futures::channel::mpsc::unbounded::<ObjectRef<Packed<Route>>>();
    let (to_formations, route_formation_triggers) =
        futures::channel::mpsc::unbounded::<ObjectRef<Packed<Formation>>>();
    // The namespaces of changed Apps and Routes, for the grants (see `grants`).
    let (to_grants, grant_triggers) = futures::channel::mpsc::unbounded::<String>();
    let app_stream = app_stream.inspect_ok({
        let to_grants = to_grants.clone();
        move |a| {
            if let Some(ns) = a.namespace_str() {
                trigger(&to_grants, ns.to_owned());
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
            if let Some(ns) = r.namespace_str() {
                trigger(&to_grants, ns.to_owned());
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
        .reconcile_on(formation_triggers::<Deployment, _>(deployment_stream))
        .reconcile_on(formation_triggers::<Service, _>(service_stream))
        .reconcile_on(formation_triggers::<Release, _>(release_stream))
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
    tokio::join!(app_ctl, formation_ctl, route_ctl, readiness, grants);
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
            if result.is_ok()
                && let Ok(mut f) = ctx.failures.lock()
            {
                f.remove(&key);
            }
            result
        }
        .boxed()
    }
}

fn failure_key<K: Resource<DynamicType = ()>>(controller: &str, obj: &K) -> String {
    format!("{controller}/{}", ObjectRef::from_obj(obj))
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
        let attempts = {
            let mut f = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
            let n = f.entry(failure_key(controller, obj.as_ref())).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let backoff = ctx
            .settings
            .error_backoff
            .saturating_mul(1 << attempts.min(9).saturating_sub(1))
            .min(Duration::from_secs(30));
        tracing::warn!(controller, object = %obj.name_any(), error = %err, attempts, retry_in = ?backoff, "reconcile failed");
        Action::requeue(backoff)
    }
}
