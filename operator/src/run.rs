//! Wiring: the watches, the caches they fill, and the three controllers on top.
//!
//! Children are cached from the same reflected streams that trigger their owners, so a
//! reconcile never sees a trigger before the cache holds the change behind it.

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

    let (releases, releases_writer) = reflector::store::<Release>();
    let release_stream = watcher::watcher(api::<Release>(&client, &settings), wc.clone())
        .default_backoff()
        .modify(|r| r.managed_fields_mut().clear())
        .reflect(releases_writer)
        .applied_objects();

    // Routes from every namespace: conflicts are cluster-wide.
    let (routes, routes_writer) = reflector::store::<Route>();
    let route_stream = watcher::watcher(Api::<Route>::all(client.clone()), wc.clone())
        .default_backoff()
        .modify(|r| r.managed_fields_mut().clear())
        .reflect(routes_writer)
        .applied_objects();

    let (deployments, deployments_writer) = reflector::store::<Deployment>();
    let deployment_stream =
        watcher::watcher(api::<Deployment>(&client, &settings), managed.clone())
            .default_backoff()
            .modify(|d| {
                d.managed_fields_mut().clear();
                // Only the template's labels matter here (which release it runs).
                if let Some(spec) = d.spec.as_mut() {
                    spec.template.spec = None;
                }
            })
            .reflect(deployments_writer)
            .touched_objects();

    let (services, services_writer) = reflector::store::<Service>();
    let service_stream = watcher::watcher(api::<Service>(&client, &settings), managed)
        .default_backoff()
        .modify(|s| s.managed_fields_mut().clear())
        .reflect(services_writer)
        .touched_objects();

    let mut ctx = Context::new(
        client.clone(),
        settings.clone(),
        metrics,
        releases,
        routes.clone(),
        deployments,
        services,
    );
    if let Some(label) = &settings.exclude_namespace_label {
        // Only namespaces with the label are cached: a tiny store, read by `in_scope`.
        let (store, writer) = reflector::store();
        let stream = watcher::watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            WatcherConfig::default().labels(label),
        )
        .default_backoff()
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
        .watches_stream(release_stream, |r| app::app_for_release(&r))
        .watches(Api::<Route>::all(client.clone()), wc.clone(), |r| {
            app::app_for_route(&r)
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            instrumented(app::CONTROLLER, app::reconcile),
            error_policy(app::CONTROLLER),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    let formations = Controller::new(api::<Formation>(&client, &settings), wc.clone())
        .with_config(config.clone())
        .owns_stream(deployment_stream)
        .owns_stream(service_stream)
        .watches(api::<Release>(&client, &settings), wc.clone(), |r| {
            formation::formation_for_release(&r)
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            instrumented(formation::CONTROLLER, formation::reconcile),
            error_policy(formation::CONTROLLER),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    let routes_for_mapper = routes.clone();
    let route_ctl = Controller::for_stream(route_stream, routes)
        .with_config(config)
        .watches(Api::<Route>::all(client.clone()), wc, move |r| {
            route::contenders(&r, &routes_for_mapper.state())
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            instrumented(route::CONTROLLER, route::reconcile),
            error_policy(route::CONTROLLER),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    // Ready once the caches the reconcilers read have their first full list.
    let readiness = {
        let ctx = ctx.clone();
        async move {
            let _ = ctx.releases.wait_until_ready().await;
            let _ = ctx.routes.wait_until_ready().await;
            let _ = ctx.deployments.wait_until_ready().await;
            let _ = ctx.services.wait_until_ready().await;
            health
                .ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("caches synced; reconciling");
        }
    };
    tokio::join!(apps, formations, route_ctl, readiness);
    Ok(())
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
/// (1 s, 2 s, 4 s ... 5 min), so one broken object neither spins nor waits forever.
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
            .min(Duration::from_secs(300));
        tracing::warn!(controller, object = %obj.name_any(), error = %err, attempts, retry_in = ?backoff, "reconcile failed");
        Action::requeue(backoff)
    }
}
