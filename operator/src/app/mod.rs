//! The App reconciler: an App → its Formation and default Route; a config change → a
//! new Release; rollout tracking with `Degraded` and auto-rollback; Release history.
//!
//! validate (the Release exists) → build (pure, [`build`]) → apply → update status.

pub mod build;

use std::sync::Arc;

use flynn_crds::conditions::{self, reasons, types};
use flynn_crds::{App, Release, Route, labels, names};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use crate::cache::{AppView, Polled, Projection, ReleaseView};
use crate::error::{Error, KubeResultExt, Result, is_not_found};
use crate::rollout::{Diagnosis, diagnose};
use crate::{Context, FIELD_MANAGER};

pub const CONTROLLER: &str = "app";

#[tracing::instrument(skip_all, fields(app = %app.name_any(), namespace = app.namespace().unwrap_or_default()))]
pub async fn reconcile(app: Arc<AppView>, ctx: Arc<Context>) -> Result<Action> {
    let app = Arc::new(ctx.caches.apps.fresh(&app).object());
    let ns = app.namespace().unwrap_or_default();
    if let Some(action) = ctx.out_of_scope(Some(&ns)) {
        return Ok(action);
    }
    if app.metadata.deletion_timestamp.is_some() {
        // Owner references delete the Formation, Routes and Releases with the App.
        return Ok(Action::await_change());
    }
    let name = app.name_any();
    let apps: Api<App> = Api::namespaced(ctx.client.clone(), &ns);

    // Everything read comes from the caches, and every change that matters triggers a
    // reconcile (owned Formation, Releases and Routes of the App), so nothing read here
    // is older than its trigger.
    let routes: Vec<Arc<Route>> = (ctx.caches.routes.of_app(&ns, &name).iter())
        .map(|r| Arc::new(r.object()))
        .collect();
    // Whether this pass wrote a child: its watch event will trigger the next pass.
    let mut wrote = apply_default_route(&app, &ctx, &ns, &routes).await?;

    let mut formation = None;
    if let Some(target) = &app.spec.release {
        if ctx.release(&ns, target).await?.is_none() {
            let known = app_releases(&ctx, &ns, &name)
                .iter()
                .map(|r| r.id.name.to_string())
                .collect::<Vec<_>>();
            let msg = format!(
                "spec.release names {target}, which does not exist; existing releases: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
            write_problem(&app, &ctx, reasons::RELEASE_NOT_FOUND, msg).await?;
            return Ok(Action::await_change());
        }

        let desired = build::formation(&app, target);
        formation = ctx
            .caches
            .formations
            .get(&ns, &names::formation_name(&name))
            .map(|f| f.object());
        if formation.as_ref().is_none_or(|f| {
            f.spec != desired.spec || f.owner_references() != desired.owner_references()
        }) {
            // The apply answers with the object as stored: no second read.
            let applied = apply(&ctx, &ns, &desired).await?;
            formation = Some(ctx.caches.formations.remember(applied).object());
            wrote = true;
        }
    }

    let urls = urls(&routes, &name);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut observed = build::Observed {
        app: &app,
        formation: formation.as_ref(),
        now,
        diagnosis: None,
        urls,
    };
    let mut decision = build::decide(&observed);
    if decision.needs_diagnosis {
        observed.diagnosis =
            Some(diagnose_pods(&ctx, &ns, &name, app.spec.release.as_deref()).await?);
        decision = build::decide(&observed);
    }
    default_route_condition(
        &app,
        &routes,
        &ctx.settings.default_domain,
        &mut decision.status.conditions,
        observed.now.clone(),
    );

    // A status that only says "still rolling out" waits for the report already on its
    // way (the Formation's or a Route's), which would supersede it at once.
    let interim = conditions::is_true(&decision.status.conditions, types::PROGRESSING)
        && decision.events.is_empty()
        && decision.rollback_to.is_none();
    let children_pending = wrote
        || formation.as_ref().is_some_and(|f| {
            !crate::context::observed_current(
                f.status.as_ref().and_then(|s| s.observed_generation),
                f.metadata.generation,
            )
        })
        || routes.iter().any(|r| {
            !crate::context::observed_current(
                r.status.as_ref().and_then(|s| s.observed_generation),
                r.metadata.generation,
            )
        });
    if app.status.as_ref() != Some(&decision.status)
        && let Some(wait) = ctx.per_object.hold_interim(
            crate::per_object::key(CONTROLLER, &ns, &name),
            interim && children_pending,
        )
    {
        return Ok(Action::requeue(wait));
    }

    for e in &decision.events {
        ctx.event(app.as_ref(), e.warning, e.reason, e.note.clone())
            .await;
    }
    // The status goes first: the spec change of a rollback triggers the next reconcile,
    // which must find `RolledBack` recorded, not compute a fresh rollout from the status
    // before it (and overwrite the verdict).
    write_status(&app, &ctx, &decision.status).await?;
    if let Some(previous) = &decision.rollback_to {
        roll_back(&app, &ctx, &apps, previous).await?;
    }
    // History is pruned when a rollout completes: that is when a Release becomes old.
    if decision.events.iter().any(|e| e.reason == build::DEPLOYED) {
        prune_history(&app, &ctx, &ns, decision.status.release.as_deref()).await?;
    }

    Ok(match decision.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// The App's Releases, from the cache.
fn app_releases(ctx: &Context, ns: &str, app: &str) -> Vec<Arc<ReleaseView>> {
    ctx.caches.releases.of_app(ns, app)
}

/// Points the App back at `previous`. Its config comes back with it: config lives in
/// each Release's snapshot Secret, not in the App.
async fn roll_back(app: &App, ctx: &Context, apps: &Api<App>, previous: &str) -> Result<()> {
    let patch = serde_json::json!({"spec": {"release": previous}});
    patch_spec(ctx, apps, app, &patch, || {
        format!("rolling app {} back to {previous}", app.name_any())
    })
    .await?;
    tracing::warn!(to = %previous, "rollout failed: rolled back");
    Ok(())
}

/// A merge patch of the App's spec, remembered in the cache (the next reconcile must
/// see it even if the watch has not delivered it yet).
async fn patch_spec(
    ctx: &Context,
    apps: &Api<App>,
    app: &App,
    patch: &serde_json::Value,
    action: impl FnOnce() -> String,
) -> Result<()> {
    let patched = apps
        .patch(
            &app.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .context(action)?;
    ctx.caches.apps.remember(patched);
    Ok(())
}

/// Applies (or, when turned off, deletes) the App's default Route; whether it wrote.
async fn apply_default_route(
    app: &App,
    ctx: &Context,
    ns: &str,
    existing: &[Arc<Route>],
) -> Result<bool> {
    let route_name = names::default_route_name(&app.name_any());
    let routes: Api<Route> = Api::namespaced(ctx.client.clone(), ns);
    if app.spec.default_route {
        let route = build::default_route(app, &ctx.settings.default_domain);
        let current = existing.iter().find(|r| r.name_any() == route_name);
        if current.is_none_or(|c| {
            c.spec != route.spec || c.owner_references() != route.owner_references()
        }) {
            let applied = apply(ctx, ns, &route).await?;
            ctx.caches.routes.remember(applied);
            return Ok(true);
        }
    } else if existing.iter().any(|r| r.name_any() == route_name) {
        ctx.caches.routes.forget(ns, &route_name);
        match routes.delete(&route_name, &DeleteParams::default()).await {
            Ok(_) => return Ok(true),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(Error::Kube {
                    action: format!("deleting route {route_name}"),
                    source: e,
                });
            }
        }
    }
    Ok(false)
}

/// Server-side apply of an object the App owns.
async fn apply<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .context(|| format!("applying {} {name}", K::kind(&())))
}

/// The App's `DefaultRouteAccepted` condition, from its default Route's `Accepted`: an App
/// of the same name in another namespace may hold `<app>.<defaultDomain>` already, and the
/// second App must say so, with what to do, rather than silently have no address. Absent
/// while the App has no default Route, or its verdict is not in yet.
fn default_route_condition(
    app: &App,
    routes: &[Arc<Route>],
    default_domain: &str,
    conds: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    now: Time,
) {
    let route_name = names::default_route_name(&app.name_any());
    let verdict = routes
        .iter()
        .filter(|_| app.spec.default_route)
        .find(|r| r.name_any() == route_name)
        .and_then(|r| conditions::find(&r.status.as_ref()?.conditions, types::ACCEPTED));
    let Some(verdict) = verdict else {
        conds.retain(|c| c.type_ != types::DEFAULT_ROUTE_ACCEPTED);
        return;
    };
    let host = format!("{}.{default_domain}", app.name_any());
    let (ok, message) = if verdict.status == conditions::status::TRUE {
        (
            true,
            format!("the default Route {route_name} serves {host}"),
        )
    } else if verdict.reason == reasons::HOST_OWNED_BY_NAMESPACE {
        (
            false,
            format!(
                "the default Route {route_name} is not served: {}. An App named {} in that \
                 namespace has this address: rename this App, or set spec.defaultRoute: \
                 false and route another domain to it (`flynn route add http <domain>`)",
                verdict
                    .message
                    .split("; ")
                    .next()
                    .unwrap_or(&verdict.message),
                app.name_any()
            ),
        )
    } else {
        (
            false,
            format!(
                "the default Route {route_name} is not served: {}",
                verdict.message
            ),
        )
    };
    conditions::set(
        conds,
        conditions::new(
            types::DEFAULT_ROUTE_ACCEPTED,
            ok,
            &verdict.reason,
            message,
            app.metadata.generation,
            now,
        ),
    );
}

/// URLs of the App's accepted Routes, the default Route's first.
fn urls(routes: &[Arc<Route>], app: &str) -> Vec<String> {
    let default = names::default_route_name(app);
    let mut mine: Vec<&Route> = routes
        .iter()
        .map(AsRef::as_ref)
        .filter(|r| r.spec.app == app)
        .filter(|r| {
            r.status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, types::ACCEPTED))
        })
        .collect();
    mine.sort_by_key(|r| (r.name_any() != default, r.name_any()));
    mine.iter()
        .filter_map(|r| r.status.as_ref()?.url.clone())
        .collect()
}

/// The most telling reason the target release's pods are not ready ("" if none stands out).
async fn diagnose_pods(
    ctx: &Context,
    ns: &str,
    app: &str,
    release: Option<&str>,
) -> Result<Diagnosis> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut selector = format!("{}={app}", labels::APP);
    if let Some(r) = release {
        selector.push_str(&format!(",{}={r}", labels::RELEASE));
    }
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .context(|| format!("listing pods of app {app}"))?;
    Ok(diagnose(&list.items).unwrap_or(Diagnosis {
        message: String::new(),
        failing: false,
    }))
}

async fn write_problem(app: &App, ctx: &Context, reason: &str, msg: String) -> Result<()> {
    let mut status = app.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = app.metadata.generation;
    status.observed_generation = generation;
    conditions::set(
        &mut status.conditions,
        conditions::new(
            types::READY,
            false,
            reason,
            msg.clone(),
            generation,
            now.clone(),
        ),
    );
    conditions::set(
        &mut status.conditions,
        conditions::new(types::DEGRADED, true, reason, msg.clone(), generation, now),
    );
    if app.status.as_ref() != Some(&status) {
        ctx.event(app, true, reason, msg).await;
    }
    write_status(app, ctx, &status).await
}

async fn write_status(app: &App, ctx: &Context, status: &flynn_crds::AppStatus) -> Result<()> {
    if app.status.as_ref() == Some(status) {
        return Ok(());
    }
    let status = serde_json::to_value(status).map_err(|e| Error::Serialize(app.name_any(), e))?;
    ctx.apply_status(&ctx.caches.apps, app, status).await
}

/// Deletes the oldest Releases beyond the history setting, never the target or the
/// running one.
async fn prune_history(app: &App, ctx: &Context, ns: &str, running: Option<&str>) -> Result<()> {
    let releases = app_releases(ctx, ns, &app.name_any());
    if releases.len() <= ctx.settings.release_history {
        return Ok(());
    }
    let releases: Vec<Release> = releases.iter().map(|r| r.to_release()).collect();
    let refs: Vec<&Release> = releases.iter().collect();
    let protect: Vec<&str> = [app.spec.release.as_deref(), running]
        .into_iter()
        .flatten()
        .collect();
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), ns);
    for name in build::releases_to_prune(&refs, ctx.settings.release_history, &protect) {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.caches.releases.forget(ns, &name);
                tracing::info!(release = %name, "deleted: beyond the release history");
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(Error::Kube {
                    action: format!("deleting release {name}"),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

/// The App an object belongs to (a Formation, Release or Route of it), to trigger.
pub fn app_for<P: Projection>(obj: &P) -> Option<ObjectRef<AppView>> {
    Some(ObjectRef::new(obj.app()?).within(&obj.namespace()?))
}
