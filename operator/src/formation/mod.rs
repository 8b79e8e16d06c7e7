//! The Formation reconciler: one Deployment per process type and one Service per
//! listening type, built from the Release; status says what runs.
//!
//! validate (the Release exists and has the asked-for types) → build (pure, [`build`]) →
//! apply (server-side apply, skipped when the cached child already matches) → prune
//! children no longer wanted → update status.

pub mod build;

use std::collections::BTreeSet;
use std::sync::Arc;

use flynn_crds::conditions::{self, reasons, types};
use flynn_crds::{Formation, FormationStatus, ProcessStatus, Release, Route};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use crate::cache::{Cache, Child, DeploymentView, FormationView, Polled, Projection};
use crate::error::{Error, KubeResultExt, Result, is_not_found};
use crate::rollout::DeploymentRollout;
use crate::{Context, FIELD_MANAGER};

pub const CONTROLLER: &str = "formation";

pub use crate::cache::APPLIED_HASH;

#[tracing::instrument(skip_all, fields(formation = %formation.name_any(), namespace = formation.namespace().unwrap_or_default()))]
pub async fn reconcile(formation: Arc<FormationView>, ctx: Arc<Context>) -> Result<Action> {
    let formation = Arc::new(ctx.caches.formations.fresh(&formation).object());
    let ns = formation.namespace().unwrap_or_default();
    if let Some(action) = ctx.out_of_scope(Some(&ns)) {
        return Ok(action);
    }
    if formation.metadata.deletion_timestamp.is_some() {
        // Owner references delete the children with the Formation.
        return Ok(Action::await_change());
    }

    let Some(release) = ctx.release(&ns, &formation.spec.release).await? else {
        let msg = format!(
            "release {} does not exist: create it, or point the App at an existing release (kubectl get releases.flynn.io -n {ns})",
            formation.spec.release
        );
        update_status(
            &formation,
            &ctx,
            None,
            Some((reasons::RELEASE_NOT_FOUND, msg)),
            &[],
            None,
        )
        .await?;
        return Ok(Action::await_change());
    };

    let app = formation.spec.app.as_str();
    let draining = draining_processes(&ctx, &ns, app, &release)?;
    let desired = match build::desired(&formation, &release, &ctx.settings, &draining) {
        Ok(d) => d,
        Err(invalid) => {
            let reason = match invalid {
                build::Invalid::UnknownProcessType { .. } => reasons::UNKNOWN_PROCESS_TYPE,
                _ => reasons::NO_PROCESSES,
            };
            // Leave what runs alone: a bad change must not take the app down.
            update_status(
                &formation,
                &ctx,
                None,
                Some((reason, invalid.to_string())),
                &[],
                None,
            )
            .await?;
            return Ok(Action::await_change());
        }
    };

    // From the caches: every change to a child triggers a reconcile (owns), so what is
    // read here is never older than the trigger, and our own writes are in them.
    let existing_deployments = ctx.caches.deployments.of_app(&ns, app);
    let existing_services = ctx.caches.services.of_app(&ns, app);
    let uid = formation.metadata.uid.clone().unwrap_or_default();
    let wanted_deployments: BTreeSet<String> = desired
        .deployments
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let wanted_services: BTreeSet<String> =
        desired.services.iter().map(ResourceExt::name_any).collect();
    // Whether this pass wrote a child: its watch event will trigger the next pass.
    let mut wrote = false;
    // Children whose names are taken by objects the platform did not make: left exactly
    // as they are, and named in the status.
    let mut taken: Vec<String> = Vec::new();
    for d in desired.deployments {
        if let Some(other) = not_ours(&ctx, &ns, &uid, &d, &existing_deployments).await? {
            taken.push(other);
            continue;
        }
        wrote |=
            apply_if_changed(&ctx, &ctx.caches.deployments, &ns, d, &existing_deployments).await?;
    }
    for s in desired.services {
        if let Some(other) = not_ours(&ctx, &ns, &uid, &s, &existing_services).await? {
            taken.push(other);
            continue;
        }
        wrote |= apply_if_changed(&ctx, &ctx.caches.services, &ns, s, &existing_services).await?;
    }
    wrote |= prune(
        &ctx,
        &ctx.caches.deployments,
        &ns,
        &uid,
        &wanted_deployments,
        &existing_deployments,
    )
    .await?;
    wrote |= prune(
        &ctx,
        &ctx.caches.services,
        &ns,
        &uid,
        &wanted_services,
        &existing_services,
    )
    .await?;

    // "Still rolling out" waits for the report already on its way: the Deployment
    // controller's, on a Deployment just written or not yet observed.
    let unobserved = existing_deployments.iter().any(|d| {
        !crate::context::observed_current(
            d.state.status.as_ref().map(|s| s.observed_generation),
            Some(d.state.generation),
        )
    });
    let hold = StatusHold {
        key: crate::per_object::key(CONTROLLER, &ns, &formation.name_any()),
        wrote,
        unobserved,
    };
    let problem = (!taken.is_empty()).then(|| {
        (
            reasons::NOT_OWNED,
            format!(
                "{} already exist{} in namespace {ns} and {} not made by Flynn, so the App's processes cannot use {}: rename or delete {}, or give the App another name",
                taken.join(" and "),
                if taken.len() == 1 { "s" } else { "" },
                if taken.len() == 1 { "was" } else { "were" },
                if taken.len() == 1 { "its name" } else { "their names" },
                if taken.len() == 1 { "it" } else { "them" },
            ),
        )
    });
    let action = update_status(
        &formation,
        &ctx,
        Some(&release),
        problem,
        &existing_deployments,
        Some(hold),
    )
    .await?;
    // An object that is not Flynn's is not watched: look again now and then, so the App
    // runs soon after its owner frees the name.
    Ok(if taken.is_empty() {
        action
    } else {
        Action::requeue(TAKEN_RECHECK)
    })
}

/// How often a child name taken by someone else's object is checked again.
const TAKEN_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// `child`'s name when an object of that name exists that this Formation does not control
/// (made by someone else, e.g. a Deployment `shop-web` a team made by hand): the operator
/// must neither rewrite it nor, through its owner reference, delete it with the App.
///
/// The caches hold only objects labelled as Flynn's, so a miss is asked of the API server:
/// once per child when it is first made (afterwards the child is cached).
async fn not_ours<C: Child>(
    ctx: &Context,
    ns: &str,
    uid: &str,
    child: &C::Kind,
    existing: &[Arc<C>],
) -> Result<Option<String>> {
    let name = child.name_any();
    let kind = <C::Kind as kube::Resource>::kind(&());
    let describe = || format!("{kind} {name}");
    if let Some(cached) = existing.iter().find(|o| o.child().name() == name) {
        return Ok((!cached.child().controlled_by(uid)).then(describe));
    }
    let api: Api<C::Kind> = Api::namespaced(ctx.client.clone(), ns);
    let found = api
        .get_opt(&name)
        .await
        .context(|| format!("reading {kind} {name}"))?;
    Ok(found
        .map(C::project)
        .filter(|o| !o.child().controlled_by(uid))
        .map(|_| describe()))
}

/// The process types of `release` whose pods drain when stopped: every type that listens
/// behind its Service (anything a Route, or another app, may be sending requests to),
/// unless the HTTP Routes the routers serve for it all say `drainBackends: false`.
///
/// Why not "the types a draining Route points at": the App's default Route is made in the
/// same pass as its first Formation, so the pod template would change (and every new app
/// roll its pods a second time) when the Route reached the cache a moment later. Draining
/// by default keeps the template stable; only an explicit opt-out on every Route changes it.
fn draining_processes(
    ctx: &Context,
    ns: &str,
    app: &str,
    release: &Release,
) -> Result<BTreeSet<String>> {
    let routes: Vec<Arc<Route>> = (ctx.caches.routes.of_app(ns, app).iter())
        .map(|r| Arc::new(r.object()))
        .collect();
    Ok(release
        .spec
        .processes
        .iter()
        .filter(|(_, spec)| spec.ports.iter().any(|p| p.service))
        .map(|(process, _)| process)
        .filter(|process| drains(process, routes.iter().map(AsRef::as_ref)))
        .cloned()
        .collect())
}

/// Whether `process` drains, given its App's Routes: unless at least one served HTTP
/// Route targets it and every such Route opts out. A Route the routers do not serve (it
/// lost its domain to an older one, or is invalid) has no say; one not judged yet has.
fn drains<'a>(process: &str, routes: impl IntoIterator<Item = &'a flynn_crds::Route>) -> bool {
    let mut opted_out = false;
    for route in routes {
        let Some(http) = &route.spec.http else {
            continue;
        };
        let served = route
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, types::ACCEPTED))
            .is_none_or(|c| c.status != "False");
        if route.spec.process != process || !served {
            continue;
        }
        if http.drain_backends {
            return true;
        }
        opted_out = true;
    }
    !opted_out
}

/// When an interim status may be held back (see [`crate::per_object::PerObject::hold_interim`]).
struct StatusHold {
    key: crate::per_object::Key,
    /// A child was written in this pass.
    wrote: bool,
    /// A Deployment's controller has not reported on its latest spec: until it does,
    /// all an interim status could say is "waiting for the Deployment controller",
    /// which the App says itself. Under a burst that wait is seconds (the Deployment
    /// controller's client is rate-limited), and writing it would double the
    /// Formation's status writes.
    unobserved: bool,
}

/// Server-side applies `obj` unless the cached copy carries the same applied hash;
/// whether it wrote.
async fn apply_if_changed<C: Child>(
    ctx: &Context,
    cache: &Cache<C>,
    ns: &str,
    mut obj: C::Kind,
    existing: &[Arc<C>],
) -> Result<bool>
where
    C::Kind: serde::Serialize,
{
    type K<C> = <C as Projection>::Kind;
    let name = obj.name_any();
    let body = serde_json::to_vec(&obj).map_err(|e| Error::Serialize(name.clone(), e))?;
    let hash = format!("{:016x}", fnv1a(&body));
    let current = existing.iter().find(|o| o.child().name() == name);
    if current.is_some_and(|c| c.child().applied_hash().as_deref() == Some(hash.as_str())) {
        return Ok(false);
    }
    obj.annotations_mut().insert(APPLIED_HASH.into(), hash);
    let api: Api<K<C>> = Api::namespaced(ctx.client.clone(), ns);
    let mut value = serde_json::to_value(&obj).map_err(|e| Error::Serialize(name.clone(), e))?;
    // Server-side apply needs apiVersion and kind in the body.
    value["apiVersion"] = <K<C> as kube::Resource>::api_version(&()).into();
    value["kind"] = <K<C> as kube::Resource>::kind(&()).into();
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(value),
        )
        .await
        .context(|| format!("applying {} {name}", <K<C> as kube::Resource>::kind(&())))?;
    cache.remember(applied);
    tracing::debug!(kind = %<K<C> as kube::Resource>::kind(&()), %name, "applied");
    Ok(true)
}

/// Deletes children of this Formation (by owner uid) that are no longer wanted: a process
/// type dropped from the Release or the counts, a process that stopped listening.
async fn prune<C: Child>(
    ctx: &Context,
    cache: &Cache<C>,
    ns: &str,
    owner_uid: &str,
    wanted: &BTreeSet<String>,
    existing: &[Arc<C>],
) -> Result<bool> {
    type K<C> = <C as Projection>::Kind;
    let stale: Vec<String> = existing
        .iter()
        // Only what this Formation controls: an owner reference without `controller` can be
        // written by anyone into their own object, and must not get it deleted.
        .filter(|o| o.child().controlled_by(owner_uid))
        .map(|o| o.child().name().to_owned())
        .filter(|n| !wanted.contains(n))
        .collect();
    let api: Api<K<C>> = Api::namespaced(ctx.client.clone(), ns);
    let deleted = !stale.is_empty();
    for name in stale {
        cache.forget(ns, &name);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {
                tracing::info!(kind = %<K<C> as kube::Resource>::kind(&()), %name, "deleted: no longer in the formation")
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(Error::Kube {
                    action: format!("deleting {} {name}", <K<C> as kube::Resource>::kind(&())),
                    source: e,
                });
            }
        }
    }
    Ok(deleted)
}

/// Computes and (if changed) writes the Formation's status. `problem` is a reason and
/// message that make the Formation not Ready regardless of its Deployments. With `hold`,
/// an interim status may wait for the children's reports. Returns what the controller
/// should do next.
async fn update_status(
    formation: &Formation,
    ctx: &Context,
    release: Option<&Release>,
    problem: Option<(&str, String)>,
    deployments: &[Arc<DeploymentView>],
    hold: Option<StatusHold>,
) -> Result<Action> {
    let app = &formation.spec.app;
    let generation = formation.metadata.generation;
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let old = formation.status.clone().unwrap_or_default();
    let mut status = FormationStatus {
        conditions: old.conditions.clone(),
        observed_generation: generation,
        ..Default::default()
    };

    // Per-process counts and rollout state, from the cached Deployments.
    let mut progressing: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut all_complete = problem.is_none();
    for (process, &desired) in &formation.spec.processes {
        let name = flynn_crds::names::deployment_name(app, process);
        let d = deployments
            .iter()
            .map(AsRef::as_ref)
            .find(|d| d.meta.name() == name);
        let (ready, available) = d
            .map(|d| (d.ready_replicas, d.available_replicas))
            .unwrap_or((0, 0));
        status.processes.insert(
            process.clone(),
            ProcessStatus {
                desired,
                ready,
                available,
            },
        );
        let runs_release =
            d.is_some_and(|d| d.template_release.as_deref() == Some(&formation.spec.release));
        match d.map(|d| d.state.rollout()) {
            _ if !runs_release => {
                all_complete = false;
                progressing.push(format!("{name}: updating to {}", formation.spec.release));
            }
            Some(DeploymentRollout::Complete) => {}
            Some(DeploymentRollout::Progressing(msg)) => {
                all_complete = false;
                progressing.push(msg);
            }
            Some(DeploymentRollout::Failed(msg)) => {
                all_complete = false;
                failed.push(msg);
            }
            None => all_complete = false,
        }
    }
    status.process_summary = Some(ProcessStatus::summary(&status.processes));
    if all_complete && release.is_some() {
        status.release = Some(formation.spec.release.clone());
    }

    let (ready, reason, message) = match &problem {
        Some((reason, msg)) => (false, *reason, msg.clone()),
        None if all_complete => (
            true,
            reasons::AVAILABLE,
            format!("every process runs {}", formation.spec.release),
        ),
        None if !failed.is_empty() => (false, reasons::DEPLOY_TIMED_OUT, failed.join("; ")),
        None => (false, reasons::WAITING_FOR_PODS, progressing.join("; ")),
    };
    conditions::set(
        &mut status.conditions,
        conditions::new(
            types::READY,
            ready,
            reason,
            message.clone(),
            generation,
            now.clone(),
        ),
    );
    let (prog, prog_reason, prog_msg) = if problem.is_none() && !all_complete {
        (true, reasons::ROLLING_OUT, message)
    } else {
        (false, reasons::ROLLOUT_COMPLETE, String::new())
    };
    conditions::set(
        &mut status.conditions,
        conditions::new(
            types::PROGRESSING,
            prog,
            prog_reason,
            prog_msg,
            generation,
            now,
        ),
    );

    if status == old {
        return Ok(Action::await_change());
    }
    if let Some(hold) = hold {
        let interim = problem.is_none() && !all_complete && failed.is_empty();
        if interim && hold.unobserved {
            // The Deployment controller's status update is a watch event, which
            // triggers the next pass (a watch that loses events relists, which
            // triggers every object): nothing to requeue. Requeues here were a storm
            // under a burst: every Formation every few seconds while the Deployment
            // controller caught up.
            return Ok(Action::await_change());
        }
        if let Some(wait) = ctx.per_object.hold_interim(hold.key, interim && hold.wrote) {
            return Ok(Action::requeue(wait));
        }
    }
    if let Some((reason, msg)) = &problem
        && conditions::find(&old.conditions, types::READY)
            .is_none_or(|c| c.reason != *reason || c.message != *msg)
    {
        ctx.event(formation, true, reason, msg.clone()).await;
    }
    let status =
        serde_json::to_value(&status).map_err(|e| Error::Serialize(formation.name_any(), e))?;
    ctx.apply_status(&ctx.caches.formations, formation, status)
        .await?;
    Ok(Action::await_change())
}

/// FNV-1a: a stable hash (unlike std's SipHash keys) for the applied-hash annotation.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The Formation an object of its App belongs to (a Release, Deployment or Service), to
/// trigger: Formations are named after their App.
pub fn formation_for<P: Projection>(obj: &P) -> Option<ObjectRef<FormationView>> {
    Some(ObjectRef::new(&flynn_crds::names::formation_name(obj.app()?)).within(&obj.namespace()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(drain: bool, accepted: Option<&str>) -> flynn_crds::Route {
        let mut r = json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Route",
            "metadata": {"name": "shop", "namespace": "team"},
            "spec": {"type": "http", "app": "shop", "process": "web", "http": {"domain": "shop.example", "drainBackends": drain}},
        });
        if let Some(status) = accepted {
            r["status"] = json!({"conditions": [{
                "type": "Accepted", "status": status, "reason": "Conflict", "message": "",
                "lastTransitionTime": "2026-11-26T00:00:00Z"
            }]});
        }
        serde_json::from_value(r).unwrap()
    }

    #[test]
    fn a_process_drains_unless_every_served_route_opts_out() {
        // No Route (yet): drains.
        assert!(drains("web", []));
        assert!(drains("web", [&route(true, None)]));
        assert!(!drains("web", [&route(false, None)]));
        assert!(!drains("web", [&route(false, Some("True"))]));
        // One draining Route is enough.
        assert!(drains(
            "web",
            [&route(false, Some("True")), &route(true, None)]
        ));
        // A Route the routers do not serve has no say.
        assert!(drains("web", [&route(false, Some("False"))]));
        assert!(!drains(
            "web",
            [&route(false, Some("True")), &route(true, Some("False"))]
        ));
        // Another process's Routes have no say either.
        assert!(drains("worker", [&route(false, Some("True"))]));
    }
}
