//! Wiring: the watches, the caches they fill, and the three controllers on top.
//!
//! Reconcilers read what they act on fresh from the API (a GET or a labelled LIST), and
//! every change that matters triggers them (owned children, Releases, Routes), so they
//! never act on a cache that lags its trigger. Only the Route controller keeps a cache:
//! every Route in the cluster, for conflicts, filled by the very stream that triggers it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flynn_crds::{App, Formation, Release, Route, labels};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, Config as WatcherConfig};
use kube::{Api, Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::server::Health;
use crate::{Context, Error, Settings, app, formation, route};

fn api<K>(client: &Client, settings: &Settings) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match &settings.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
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
    let shutdown_ns = shutdown.clone();
    // Small pages: a relist buffers a second copy of the store (kube.rs, "reflector memory").
    let wc = WatcherConfig::default().page_size(100).any_semantic();
    let managed = wc.clone().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_FLYNN
    ));

    // Routes from every namespace: conflicts are cluster-wide. The Route controller's own
    // cache, filled by the stream that triggers it.
    let (routes, routes_writer) = reflector::store::<Route>();
    let route_stream = watcher::watcher(Api::<Route>::all(client.clone()), wc.clone())
        .default_backoff()
        .modify(|r| r.managed_fields_mut().clear())
        .reflect(routes_writer)
        .applied_objects();

    let mut ctx = Context::new(client.clone(), settings.clone(), metrics, routes.clone());
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
        tokio::spawn(async move {
            tokio::select! {
                () = stream => {}
                () = shutdown_ns.cancelled() => {}
            }
        });
        let _ = store.wait_until_ready().await;
        ctx.excluded_namespaces = Some(store);
    }
    let ctx = Arc::new(ctx);
    let config = ControllerConfig::default().concurrency(settings.concurrency);

    let apps = Controller::new(api::<App>(&client, &settings), wc.clone())
        .with_config(config.clone())
        .owns(api::<Formation>(&client, &settings), wc.clone())
        .watches(api::<Release>(&client, &settings), wc.clone(), |r| {
            app::app_for_release(&r)
        })
        // Only the Routes of Apps in scope: in a cluster of 10,000 Routes, a scoped
        // operator must not schedule (and skip) a reconcile for each change.
        .watches(api::<Route>(&client, &settings), wc.clone(), |r| {
            app::app_for_route(&r)
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            instrumented(app::CONTROLLER, app::reconcile),
            error_policy(app::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_outcome);

    let formations = Controller::new(api::<Formation>(&client, &settings), wc.clone())
        .with_config(config.clone())
        .owns(api::<Deployment>(&client, &settings), managed.clone())
        .owns(api::<Service>(&client, &settings), managed)
        .watches(api::<Release>(&client, &settings), wc.clone(), |r| {
            formation::formation_for_release(&r)
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            instrumented(formation::CONTROLLER, formation::reconcile),
            error_policy(formation::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_outcome);

    let routes_for_mapper = routes.clone();
    let scope = settings.namespace.clone();
    let route_ctl = Controller::for_stream(route_stream, routes)
        .with_config(config)
        .watches(Api::<Route>::all(client.clone()), wc, move |r| {
            let mut contenders = route::contenders(&r, &routes_for_mapper.state());
            contenders.retain(|o| scope.is_none() || o.namespace == scope);
            contenders
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            instrumented(route::CONTROLLER, route::reconcile),
            error_policy(route::CONTROLLER),
            ctx.clone(),
        )
        .for_each(log_outcome);

    // Ready once the Route cache has its first full list (the other controllers read
    // the API directly).
    let readiness = {
        let ctx = ctx.clone();
        async move {
            let _ = ctx.routes.wait_until_ready().await;
            health
                .ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("caches synced; reconciling");
        }
    };
    tokio::join!(apps, formations, route_ctl, readiness);
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
