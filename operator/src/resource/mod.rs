//! The Resource controller: a `Resource` → its store made by a provider, its credentials
//! Secret, and a Release of its App with the URL as a config var.
//!
//! One reconcile, in order (each step can stop it, saying why in `Ready`):
//! 1. deleting → [`cleanup`]: a Release without the var, then the provider drops or
//!    retains the data, then the finalizer goes;
//! 2. the finalizer is added, so a deletion always passes through step 1;
//! 3. the provider is enabled (`ProviderDisabled`) and has the plan (`UnknownPlan`);
//! 4. the App exists (`AppNotFound`; a change to an App triggers its Resources);
//! 5. no older Resource of the App gives its URL under the same var (`EnvConflict`);
//! 6. the credentials Secret is written (a new random password only when it has none);
//! 7. the provider makes or updates the store with the Secret's password
//!    (`ServiceUnavailable` while its service cannot be reached, retried with backoff);
//! 8. the App's current Release carries the URL, or a new one is made ([`release`]).
//!
//! Steps 6 before 7 is what makes an interrupted reconcile converge: the password exists
//! (in the Secret) before anything that checks it, so an operator stopped in between
//! leaves nothing with a lost password, and the next pass sets the same one.

pub mod postgres;
pub mod provider;
pub mod redis;
pub mod release;
pub mod secret;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flynn_crds::conditions::reasons;
use flynn_crds::resource::{FINALIZER, Resource};
use flynn_crds::{App, config, next_release};
use futures::{Stream, StreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Config as WatcherConfig;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use self::provider::{ProviderError, Provisioned, Registry, Request};
use self::release::{Outcome, Want};
use self::status::Report;
use crate::Context;
use crate::context::Scope;

/// The controller's name (metrics, failure counts).
pub const CONTROLLER: &str = "resource";

/// Why a reconcile failed (the API or the cluster; a provider's service being down is a
/// status, not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "app {app} names release {release}, which does not exist: roll back to one that does \
         (flynn release rollback)"
    )]
    ReleaseMissing { app: String, release: String },
    #[error(transparent)]
    Release(#[from] next_release::Error),
    #[error(transparent)]
    Config(#[from] config::LoadError),
    #[error(transparent)]
    Provider(ProviderError),
    #[error(transparent)]
    Secret(#[from] secret::Error),
}

impl Error {
    /// Short, bounded label for the `errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } | Error::Provider(ProviderError::Kube { .. }) => "api",
            Error::ReleaseMissing { .. } => "release_missing",
            Error::Release(_) => "release",
            Error::Config(_) => "config",
            Error::Provider(ProviderError::Unavailable(_)) => "unavailable",
            Error::Secret(_) => "secret",
        }
    }
}

/// An App by namespace and name.
type AppKey = (String, String);

/// What the controller shares between reconciles.
pub struct ResourceContext {
    pub base: Arc<Context>,
    pub providers: Registry,
    /// Every Resource in scope (the controller's own reflector).
    pub store: Store<Resource>,
    /// One Release change at a time per App: two Resources of one App added together would
    /// otherwise each make a Release from the config before the other's.
    app_locks: Mutex<HashMap<AppKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for ResourceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceContext")
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

impl ResourceContext {
    fn app_lock(&self, ns: &str, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.app_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((ns.to_owned(), app.to_owned()))
            .or_default()
            .clone()
    }

    fn backoff(&self, r: &Resource) -> Duration {
        let key = crate::per_object::key(
            CONTROLLER,
            r.namespace().as_deref().unwrap_or_default(),
            &r.name_any(),
        );
        let attempts = self.base.per_object.failed(key);
        self.base
            .settings
            .error_backoff
            .saturating_mul(1 << attempts.min(9).saturating_sub(1))
            .min(Duration::from_secs(30))
    }

    fn succeeded(&self, r: &Resource) {
        self.base.per_object.succeeded(&crate::per_object::key(
            CONTROLLER,
            r.namespace().as_deref().unwrap_or_default(),
            &r.name_any(),
        ));
    }
}

/// The registry of the providers these settings enable (a disabled one stays registered,
/// so its Resources say how to enable it).
pub fn providers(settings: &crate::Settings) -> Registry {
    Registry::default()
        .with(Arc::new(postgres::Postgres {
            settings: settings.postgres.clone(),
        }))
        .with(Arc::new(redis::Redis {
            settings: settings.redis.clone(),
        }))
}

/// The older of two Resources: by creation time, then name.
fn older_first(r: &Resource) -> (Option<k8s_openapi::jiff::Timestamp>, String) {
    (
        r.metadata.creation_timestamp.as_ref().map(|t| t.0),
        r.name_any(),
    )
}

/// The oldest other Resource of the same App giving its URL under the same var, if it is
/// older than `r` (the winner keeps the var; Resources being deleted no longer count).
pub fn env_conflict<'a>(
    r: &Resource,
    all: impl IntoIterator<Item = &'a Resource>,
) -> Option<&'a Resource> {
    all.into_iter()
        .filter(|o| {
            o.namespace() == r.namespace()
                && o.metadata.uid != r.metadata.uid
                && o.spec.app == r.spec.app
                && o.env_name() == r.env_name()
                && o.metadata.deletion_timestamp.is_none()
        })
        .min_by_key(|o| older_first(o))
        .filter(|o| older_first(o) < older_first(r))
}

/// Reconciles one Resource (see the module doc).
#[tracing::instrument(skip_all, fields(resource = %r.name_any(), namespace = r.namespace().unwrap_or_default()))]
pub async fn reconcile(r: Arc<Resource>, ctx: Arc<ResourceContext>) -> Result<Action, Error> {
    let start = Instant::now();
    let result = reconcile_inner(r, &ctx).await;
    ctx.base.metrics.observe(CONTROLLER, start.elapsed());
    result
}

async fn reconcile_inner(r: Arc<Resource>, ctx: &ResourceContext) -> Result<Action, Error> {
    let ns = r.namespace().unwrap_or_default();
    match ctx.base.scope(Some(&ns)) {
        Scope::In => {}
        Scope::Out => return Ok(Action::await_change()),
        Scope::Unknown => return Ok(Action::requeue(Duration::from_millis(500))),
    }
    let client = &ctx.base.client;
    let mut report = Report::new(&r);
    if r.metadata.deletion_timestamp.is_some() {
        return cleanup(&r, ctx, report).await;
    }
    if !r.finalizers().iter().any(|f| f == FINALIZER) {
        add_finalizer(client, &r).await?;
    }
    let Some(provider) = ctx.providers.get(r.spec.provider) else {
        let msg = format!("this operator has no {} provider", r.spec.provider);
        return report
            .not_ready(ctx, reasons::PROVIDER_DISABLED, msg, Action::await_change())
            .await;
    };
    if let Some(why) = provider.disabled() {
        return report
            .not_ready(ctx, reasons::PROVIDER_DISABLED, why, Action::await_change())
            .await;
    }
    let plan = match provider::plan(provider.as_ref(), r.spec.plan.as_deref()) {
        Ok(p) => p,
        Err(msg) => {
            return report
                .not_ready(ctx, reasons::UNKNOWN_PLAN, msg, Action::await_change())
                .await;
        }
    };
    report.status.plan = Some(plan.name.to_owned());
    let app = Api::<App>::namespaced(client.clone(), &ns)
        .get_opt(&r.spec.app)
        .await
        .map_err(|source| Error::Kube {
            action: format!("reading app {}", r.spec.app),
            source,
        })?;
    let Some(app) = app else {
        let msg = format!(
            "app {} does not exist in namespace {ns}: create it (flynn create {}), and this \
             Resource is provisioned for it",
            r.spec.app, r.spec.app
        );
        // Creating the App triggers this Resource (see `run`).
        return report
            .not_ready(ctx, reasons::APP_NOT_FOUND, msg, Action::await_change())
            .await;
    };
    let all = ctx.store.state();
    if let Some(older) = env_conflict(&r, all.iter().map(|o| o.as_ref())) {
        let msg = format!(
            "Resource {} (older) already gives app {} its URL as {}: delete one of them, or \
             add this one under another name (flynn resource add {} --env NAME)",
            older.name_any(),
            r.spec.app,
            r.env_name(),
            r.spec.provider
        );
        // The older one's deletion is not a change of this one: look again now and then.
        return report
            .not_ready(
                ctx,
                reasons::ENV_CONFLICT,
                msg,
                Action::requeue(Duration::from_secs(10)),
            )
            .await;
    }
    let connection = provider.connection(&r);
    report.status.provider_ids = connection.ids.clone();
    let creds = match secret::ensure(client, &r, provider.as_ref(), &connection).await {
        Ok(c) => c,
        // Someone else's Secret of that name: said in status, and looked at again now and
        // then (its deletion is not a change of this Resource).
        Err(e @ secret::Error::NotOurs { .. }) => {
            return report
                .not_ready(
                    ctx,
                    reasons::PROVISIONING,
                    e.to_string(),
                    Action::requeue(Duration::from_secs(10)),
                )
                .await;
        }
        Err(e) => return Err(e.into()),
    };
    report.status.secret = Some(creds.name.clone());
    let request = Request {
        client,
        resource: &r,
        plan,
        password: &creds.password,
        connection: &connection,
    };
    let waiting = match provider.provision(&request).await {
        Ok(Provisioned::Ready) => None,
        Ok(Provisioned::Waiting(msg)) => Some(msg),
        Err(ProviderError::Unavailable(msg)) => {
            let retry = ctx.backoff(&r);
            return report
                .not_ready(
                    ctx,
                    reasons::SERVICE_UNAVAILABLE,
                    format!("{msg}; retrying in {}s", retry.as_secs().max(1)),
                    Action::requeue(retry),
                )
                .await;
        }
        Err(e) => return Err(Error::Provider(e)),
    };
    let lock = ctx.app_lock(&ns, &r.spec.app);
    let outcome = {
        let _held = lock.lock().await;
        release::converge(
            client,
            &app,
            r.env_name(),
            Want::Set(&creds.url),
            &format!("flynn resource add {} ({})", r.spec.provider, r.env_name()),
        )
        .await?
    };
    let message = match &outcome {
        Outcome::Released(name) => {
            report.status.release = Some(name.clone());
            ctx.base
                .event(
                    r.as_ref(),
                    false,
                    "Released",
                    format!("release {name} of app {} has {}", r.spec.app, r.env_name()),
                )
                .await;
            format!("release {name} of app {} has {}", r.spec.app, r.env_name())
        }
        Outcome::Unchanged(Some(name)) => {
            format!("release {name} of app {} has {}", r.spec.app, r.env_name())
        }
        Outcome::Unchanged(None) | Outcome::Initial => format!(
            "app {} has no release yet: its first release gets {}",
            r.spec.app,
            r.env_name()
        ),
    };
    ctx.succeeded(&r);
    match waiting {
        Some(msg) => {
            report
                .not_ready(
                    ctx,
                    reasons::PROVISIONING,
                    msg,
                    Action::requeue(Duration::from_secs(5)),
                )
                .await
        }
        None => {
            report
                .ready(
                    ctx,
                    message,
                    Action::requeue(ctx.base.settings.resource_resync),
                )
                .await
        }
    }
}

/// A deleted Resource: the App's Release without the var, then the data, then the
/// finalizer.
async fn cleanup(r: &Resource, ctx: &ResourceContext, mut report: Report) -> Result<Action, Error> {
    if !r.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let client = &ctx.base.client;
    let ns = r.namespace().unwrap_or_default();
    let data = match r.spec.deletion_policy {
        flynn_crds::resource::DeletionPolicy::Delete => "deleting its data",
        flynn_crds::resource::DeletionPolicy::Retain => "retaining its data",
    };
    report
        .not_ready(
            ctx,
            reasons::DELETING,
            format!(
                "removing {} from app {}, then {data}",
                r.env_name(),
                r.spec.app
            ),
            Action::await_change(),
        )
        .await?;
    let app = Api::<App>::namespaced(client.clone(), &ns)
        .get_opt(&r.spec.app)
        .await
        .map_err(|source| Error::Kube {
            action: format!("reading app {}", r.spec.app),
            source,
        })?;
    // The Secret is read only while the App is there: the operator may read Secrets only
    // in namespaces holding an App (see `grants`), and without it there is no config to
    // change.
    let live_app = app.filter(|a| a.metadata.deletion_timestamp.is_none());
    let creds = match &live_app {
        Some(_) => secret::read(client, r).await?,
        None => None,
    };
    if let (Some(app), Some(creds)) = (&live_app, &creds) {
        let lock = ctx.app_lock(&ns, &r.spec.app);
        let _held = lock.lock().await;
        let outcome = release::converge(
            client,
            app,
            r.env_name(),
            Want::UnsetIf(&creds.url),
            &format!(
                "flynn resource remove {} ({})",
                r.spec.provider,
                r.env_name()
            ),
        )
        .await?;
        if let Outcome::Released(name) = outcome {
            ctx.base
                .event(
                    r,
                    false,
                    "Released",
                    format!(
                        "release {name} of app {} no longer has {}",
                        r.spec.app,
                        r.env_name()
                    ),
                )
                .await;
        }
    }
    if let Some(provider) = ctx.providers.get(r.spec.provider) {
        if let Some(why) = provider.disabled() {
            // Nothing can be made while disabled; one that was made before is reported.
            ctx.base
                .event(
                    r,
                    true,
                    "NotDeprovisioned",
                    format!("the {} provider is disabled, so its store (if any) was left as it is: {why}", r.spec.provider),
                )
                .await;
        } else {
            let plan = provider::plan(provider.as_ref(), r.spec.plan.as_deref())
                .unwrap_or(&provider.plans()[0]);
            let connection = provider.connection(r);
            let request = Request {
                client,
                resource: r,
                plan,
                password: "",
                connection: &connection,
            };
            match provider.deprovision(&request, r.spec.deletion_policy).await {
                Ok(()) => {}
                Err(ProviderError::Unavailable(msg)) => {
                    let retry = ctx.backoff(r);
                    return report
                        .not_ready(
                            ctx,
                            reasons::SERVICE_UNAVAILABLE,
                            format!("deleting: {msg}; retrying in {}s", retry.as_secs().max(1)),
                            Action::requeue(retry),
                        )
                        .await;
                }
                Err(e) => return Err(Error::Provider(e)),
            }
        }
    }
    remove_finalizer(client, r).await?;
    ctx.base.per_object.forget(CONTROLLER, &ns, &r.name_any());
    Ok(Action::await_change())
}

async fn add_finalizer(client: &kube::Client, r: &Resource) -> Result<(), Error> {
    let api: Api<Resource> = Api::namespaced(client.clone(), &r.namespace().unwrap_or_default());
    let mut finalizers = r.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    // The resourceVersion makes it a compare-and-swap: finalizers another writer added
    // meanwhile are not lost.
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": r.resource_version(),
    }});
    api.patch(
        &r.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::Kube {
        action: format!("adding finalizer {FINALIZER}"),
        source,
    })?;
    Ok(())
}

async fn remove_finalizer(client: &kube::Client, r: &Resource) -> Result<(), Error> {
    let api: Api<Resource> = Api::namespaced(client.clone(), &r.namespace().unwrap_or_default());
    let finalizers: Vec<&String> = r.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": r.resource_version(),
    }});
    match api
        .patch(
            &r.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!("removing finalizer {FINALIZER}"),
            source,
        }),
    }
}

/// Runs the Resource controller until `shutdown`: Resources in scope, re-reconciled when
/// their App changes (`app_changes`: the namespace and name of each App the operator's
/// App watch saw change), and the retention sweep of the Postgres provider.
pub async fn run(
    base: Arc<Context>,
    app_changes: impl Stream<Item = (String, String)> + Send + 'static,
    shutdown: CancellationToken,
) {
    let settings = base.settings.clone();
    let api: Api<Resource> = match &settings.namespace {
        Some(ns) => Api::namespaced(base.client.clone(), ns),
        None => Api::all(base.client.clone()),
    };
    let controller = Controller::new(api, WatcherConfig::default().any_semantic());
    let store = controller.store();
    let ctx = Arc::new(ResourceContext {
        base: base.clone(),
        providers: providers(&settings),
        store: store.clone(),
        app_locks: Mutex::default(),
    });
    let by_app = {
        let store = store.clone();
        app_changes.flat_map(move |(ns, app)| {
            let refs: Vec<ObjectRef<Resource>> = store
                .state()
                .iter()
                .filter(|r| r.namespace().as_deref() == Some(ns.as_str()) && r.spec.app == app)
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect();
            futures::stream::iter(refs)
        })
    };
    let controller = controller
        .with_config(ControllerConfig::default().concurrency(settings.concurrency))
        .reconcile_on(by_app)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|outcome| {
            if let Err(e) = outcome {
                use kube::runtime::controller::Error as CtlError;
                if !matches!(
                    e,
                    CtlError::ReconcilerFailed(..) | CtlError::ObjectNotFound(_)
                ) {
                    tracing::warn!(error = %e, "resource controller error");
                }
            }
            futures::future::ready(())
        });
    let sweep = sweep_retained(settings.clone(), shutdown);
    tokio::join!(controller, sweep);
}

fn error_policy(r: Arc<Resource>, err: &Error, ctx: Arc<ResourceContext>) -> Action {
    ctx.base.metrics.error(CONTROLLER, err.metric_label());
    let backoff = ctx.backoff(&r);
    tracing::warn!(controller = CONTROLLER, object = %r.name_any(), error = %err, retry_in = ?backoff, "reconcile failed");
    Action::requeue(backoff)
}

/// Drops the retained Postgres databases whose retention has passed, every
/// `resource_sweep_interval`, until `shutdown`.
async fn sweep_retained(settings: Arc<crate::Settings>, shutdown: CancellationToken) {
    if settings.postgres.host.is_none() {
        return;
    }
    let pg = postgres::Postgres {
        settings: settings.postgres.clone(),
    };
    let mut tick = tokio::time::interval(settings.resource_sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match pg.sweep(settings.resource_retention).await {
            Ok(dropped) if !dropped.is_empty() => {
                tracing::info!(?dropped, "dropped retained databases past their retention");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "sweeping retained databases failed; trying again later")
            }
        }
    }
}
