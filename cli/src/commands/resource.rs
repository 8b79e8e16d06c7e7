//! `resource [list] | add postgres|redis | remove NAME`: the app's databases, as Flynn's
//! `flynn resource` gave them.
//!
//! A `Resource` (`flynn_crds::Resource`) is reconciled by the operator: the provider makes
//! the store, writes its credentials into a Secret and makes a release of the App with the
//! URL under the Resource's config var. `add` names the Resource `<app>-<provider>` (then
//! `-2`, `-3`, ... when that name is taken, also by another `add` racing this one) with the
//! first `DATABASE_URL`, `DATABASE_2_URL`, ... no other Resource of the App uses, and waits
//! for it and for the rollout of its release. `remove` deletes it (the operator makes the
//! release without the variable); the data goes only with `--delete-data`.
//!
//! Also here, for `flynn pg` and `flynn redis-cli`: which Resource a client session uses
//! ([`pick`]) and the client pod ([`client_pod`]).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use flynn_crds::conditions::{self, reasons, types};
use flynn_crds::resource::{DeletionPolicy, Provider, Resource, ResourceSpec, secret_name};
use flynn_crds::rollout::{Verdict, Waiter};
use flynn_crds::{App, labels, pod_security};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, Pod, PodSpec, SecretKeySelector,
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde_json::json;

use super::pod_session::{CONTAINER, Io};
use super::ps::ONE_OFF;
use super::{Wait, wait_for};
use crate::cli::{ResourceArgs, ResourceCommand};
use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::output::{self, Format, Table, note};

/// How many names (`<app>-postgres`, `-2`, ...) `add` tries before giving up.
const MAX_NTH: usize = 100;

/// Reasons of `Ready=False` that waiting does not fix: `add` reports them and removes the
/// Resource again.
pub const TERMINAL_REASONS: [&str; 4] = [
    reasons::APP_NOT_FOUND,
    reasons::ENV_CONFLICT,
    reasons::UNKNOWN_PLAN,
    reasons::PROVIDER_DISABLED,
];

/// The user the client pods (psql, pg_dump, redis-cli) run as: any non-root user will do
/// (Pod Security "restricted"), the client images' own may be a name or root.
pub const CLIENT_UID: i64 = 65532;

pub async fn resource(ctx: &Ctx, args: &ResourceArgs) -> Result<()> {
    match &args.command {
        None | Some(ResourceCommand::List) => list(ctx).await,
        Some(ResourceCommand::Add {
            provider,
            plan,
            no_wait,
            timeout,
        }) => add(ctx, *provider, plan.as_deref(), *no_wait, *timeout).await,
        Some(ResourceCommand::Remove {
            name,
            delete_data,
            yes,
            timeout,
        }) => remove(ctx, name, *delete_data, *yes, *timeout).await,
    }
}

/// The Resources of `app`, by name.
pub async fn app_resources(ctx: &Ctx, app: &str) -> Result<Vec<Resource>> {
    let mut items = ctx
        .api::<Resource>()
        .list(&ListParams::default().fields(&format!("spec.app={app}")))
        .await
        .map_err(Error::kube(format!("listing the resources of app {app}")))?
        .items;
    items.sort_by_key(ResourceExt::name_any);
    Ok(items)
}

/// The name of the `n`th (1-based) Resource of `provider` for `app`: `shop-postgres`,
/// `shop-postgres-2`, ...
pub fn nth_name(app: &str, provider: Provider, n: usize) -> String {
    if n <= 1 {
        format!("{app}-{provider}")
    } else {
        format!("{app}-{provider}-{n}")
    }
}

/// The candidates `add` tries, in order: `(n, name, env)` for each `n` whose config var no
/// Resource of the App uses yet.
pub fn candidates(
    app: &str,
    provider: Provider,
    existing: &[Resource],
) -> impl Iterator<Item = (String, String)> {
    let used: Vec<String> = existing
        .iter()
        .map(|r| {
            r.status
                .as_ref()
                .and_then(|s| s.env.clone())
                .unwrap_or_else(|| r.env_name().to_owned())
        })
        .collect();
    let app = app.to_owned();
    (1..=MAX_NTH).filter_map(move |n| {
        let env = provider.nth_env(n);
        (!used.contains(&env)).then(|| (nth_name(&app, provider, n), env))
    })
}

/// The Resource `add` creates (pure).
pub fn new_resource(
    name: &str,
    app: &str,
    provider: Provider,
    plan: Option<&str>,
    env: &str,
) -> Resource {
    let mut r = Resource::new(
        name,
        ResourceSpec {
            app: app.to_owned(),
            provider,
            plan: plan.map(str::to_owned),
            env: Some(env.to_owned()),
            deletion_policy: DeletionPolicy::Retain,
        },
    );
    r.metadata.labels = Some(BTreeMap::from([(labels::APP.to_owned(), app.to_owned())]));
    r
}

async fn add(
    ctx: &Ctx,
    provider: Provider,
    plan: Option<&str>,
    no_wait: bool,
    timeout: u64,
) -> Result<()> {
    let app = ctx.app().await?;
    let app_name = app.name_any();
    let existing = app_resources(ctx, &app_name).await?;
    let api = ctx.api::<Resource>();
    let mut made = None;
    for (name, env) in candidates(&app_name, provider, &existing) {
        let resource = new_resource(&name, &app_name, provider, plan, &env);
        match api.create(&PostParams::default(), &resource).await {
            Ok(r) => {
                made = Some(r);
                break;
            }
            // Another `add` (or anyone) took the name first: the next one.
            Err(kube::Error::Api(s)) if s.is_already_exists() => continue,
            Err(e) => return Err(Error::kube(format!("creating resource {name}"))(e)),
        }
    }
    let Some(made) = made else {
        return Err(Error::bad_argument(
            provider.as_str(),
            format!("app {app_name} has {MAX_NTH} {provider} resources already"),
            "flynn resource remove NAME",
        ));
    };
    let name = made.name_any();
    let env = made.env_name().to_owned();
    if no_wait {
        return output::print_out(&format!("Created resource {name} ({provider}, {env})\n"));
    }
    let ready = wait_ready(ctx, &name, Duration::from_secs(timeout)).await?;
    let release = ready.status.as_ref().and_then(|s| s.release.clone());
    let Some(release) = release else {
        note(
            ctx.ui,
            &format!("the app has no release yet: its first release gets {env}"),
        );
        return output::print_out(&format!("Created resource {name} ({provider}, {env})\n"));
    };
    wait_release(ctx, &app_name, &release, Duration::from_secs(timeout)).await?;
    let version = flynn_crds::names::parse_release_name(&release).map_or(0, |(_, v)| v);
    output::print_out(&format!(
        "Created resource {name} ({provider}, {env}) in release v{version}\n"
    ))
}

/// What a Resource's `Ready` condition says, as the CLI reacts to it.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// Ready (for the current generation).
    Ready,
    /// Refused for good: reason, message.
    Refused(String, String),
    /// Not yet: what to show while waiting.
    Waiting(String),
}

/// Judges `r` (pure): ready, refused, or what it is waiting for. Only a condition written
/// for the Resource's current generation counts as `Ready`.
pub fn readiness(r: &Resource) -> Readiness {
    let status = r.status.clone().unwrap_or_default();
    let generation = r.metadata.generation.unwrap_or(0);
    let Some(ready) = conditions::find(&status.conditions, types::READY) else {
        return Readiness::Waiting("waiting for the operator to take it up".into());
    };
    let fresh = ready.observed_generation.unwrap_or(generation) >= generation;
    if ready.status == conditions::status::TRUE && fresh {
        return Readiness::Ready;
    }
    if ready.status == conditions::status::FALSE
        && TERMINAL_REASONS.contains(&ready.reason.as_str())
    {
        return Readiness::Refused(ready.reason.clone(), ready.message.clone());
    }
    let message = if ready.message.is_empty() {
        ready.reason.clone()
    } else {
        format!("{}: {}", ready.reason, ready.message)
    };
    Readiness::Waiting(message)
}

/// Waits until the Resource `name` is Ready; a terminal refusal removes it again and fails.
async fn wait_ready(ctx: &Ctx, name: &str, timeout: Duration) -> Result<Resource> {
    let api = ctx.api::<Resource>();
    let result = wait_for(
        ctx,
        &format!("resource {name}"),
        timeout,
        &format!(
            "the resource is created and the operator keeps at it: `flynn resource list` shows how it goes; `flynn resource remove {name}` removes it"
        ),
        || async {
            let r = api
                .get(name)
                .await
                .map_err(Error::kube(format!("getting resource {name}")))?;
            Ok(match readiness(&r) {
                Readiness::Ready => Wait::Done(Ok(r)),
                Readiness::Refused(reason, message) => Wait::Done(Err((reason, message))),
                Readiness::Waiting(why) => Wait::Pending(format!("resource {name}: {why}")),
            })
        },
    )
    .await?;
    match result {
        Ok(r) => Ok(r),
        Err((reason, message)) => {
            // Nothing half-made stays behind: the operator releases what it made.
            let _ = api.delete(name, &DeleteParams::default()).await;
            Err(Error::ResourceRefused {
                resource: name.to_owned(),
                reason,
                message,
            })
        }
    }
}

/// Waits until the App runs `release` (the one the operator made with the resource's URL),
/// as `flynn env set` waits for its own: [`flynn_crds::rollout::Waiter`], counting status
/// written for the App's generation once it points at the release.
async fn wait_release(ctx: &Ctx, app: &str, release: &str, timeout: Duration) -> Result<()> {
    let apps = ctx.api::<App>();
    let waiter: std::sync::Mutex<Option<Waiter>> = std::sync::Mutex::new(None);
    wait_for(
        ctx,
        &format!("{release} to roll out"),
        timeout,
        "the resource is ready; `flynn info` and `flynn ps` show how the rollout is going",
        || async {
            let a = apps
                .get(app)
                .await
                .map_err(Error::kube(format!("getting app {app}")))?;
            let mut waiter = waiter.lock().unwrap_or_else(|e| e.into_inner());
            if waiter.is_none() {
                // The operator points the App at the release; until it has, there is no
                // generation to judge the rollout by.
                if a.spec.release.as_deref() != Some(release) {
                    return Ok(Wait::Pending(format!(
                        "waiting for app {app} to point at {release}"
                    )));
                }
                *waiter = Some(Waiter::new(release, a.metadata.generation.unwrap_or(0)));
            }
            let Some(w) = waiter.as_mut() else {
                return Ok(Wait::Pending(String::new()));
            };
            let failed = |reason: String| Error::DeployFailed {
                release: release.to_owned(),
                reason,
            };
            match w.look(&a, Instant::now()) {
                Verdict::Deployed(_) => Ok(Wait::Done(())),
                Verdict::Failed {
                    reason,
                    rolled_back_to: Some(to),
                } => Err(failed(format!("{reason}; rolled back to {to}"))),
                Verdict::Failed { reason, .. } => Err(failed(reason)),
                // A later release (another change, or another resource) carries the URL too.
                Verdict::Superseded(_) => Ok(Wait::Done(())),
                Verdict::PointsElsewhere(now) => {
                    Ok(Wait::Pending(format!("the app points at {now}")))
                }
                Verdict::Progressing => {
                    let summary = a.status.and_then(|s| s.process_summary).unwrap_or_default();
                    Ok(Wait::Pending(format!("rolling out {release} {summary}")))
                }
            }
        },
    )
    .await
}

/// One row of `flynn resource list` (and its `-o json|yaml`).
#[derive(Debug, Serialize)]
pub struct ResourceRow {
    pub name: String,
    pub provider: String,
    pub env: String,
    pub plan: String,
    pub ready: bool,
    /// The `Ready` condition's reason (`Provisioned`, `ServiceUnavailable`, ...).
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

pub fn resource_row(r: &Resource) -> ResourceRow {
    let status = r.status.clone().unwrap_or_default();
    let ready = conditions::find(&status.conditions, types::READY);
    ResourceRow {
        name: r.name_any(),
        provider: r.spec.provider.to_string(),
        env: status
            .env
            .clone()
            .unwrap_or_else(|| r.env_name().to_owned()),
        plan: status
            .plan
            .clone()
            .or_else(|| r.spec.plan.clone())
            .unwrap_or_else(|| "default".into()),
        ready: readiness(r) == Readiness::Ready,
        reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
        message: ready.map(|c| c.message.clone()).unwrap_or_default(),
        release: status.release,
        secret: status.secret,
    }
}

/// The `flynn resource list` table (pure, for golden tests). READY is `yes`, else the
/// reason why not (`-` before the operator has said anything).
pub fn resources_table(resources: &[Resource], now: Timestamp) -> Table {
    let mut table = Table::new(["NAME", "PROVIDER", "ENV", "PLAN", "READY", "AGE"]);
    for r in resources {
        let row = resource_row(r);
        let ready = match (row.ready, row.reason.as_str()) {
            (true, _) => "yes".to_owned(),
            (false, "") => "-".to_owned(),
            (false, reason) => reason.to_owned(),
        };
        table.row(vec![
            row.name,
            row.provider,
            row.env,
            row.plan,
            ready,
            output::age(output::created(&r.metadata), now),
        ]);
    }
    table
}

async fn list(ctx: &Ctx) -> Result<()> {
    let app = ctx.app().await?;
    let resources = app_resources(ctx, &app.name_any()).await?;
    match ctx.output {
        Format::Table if resources.is_empty() => {
            note(
                ctx.ui,
                "no resources: add one with `flynn resource add postgres` (or redis)",
            );
            Ok(())
        }
        Format::Table => {
            output::print_out(&resources_table(&resources, Timestamp::now()).render(ctx.ui.color))
        }
        format => output::print_data(
            format,
            &resources.iter().map(resource_row).collect::<Vec<_>>(),
        ),
    }
}

/// The Resource `name` of the app, or [`Error::ResourceNotFound`] (also when it belongs to
/// another app of the namespace).
pub async fn get(ctx: &Ctx, app: &str, name: &str) -> Result<Resource> {
    ctx.api::<Resource>()
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("getting resource {name}")))?
        .filter(|r| r.spec.app == app)
        .ok_or_else(|| Error::ResourceNotFound {
            resource: name.to_owned(),
            app: app.to_owned(),
        })
}

/// What the data of `r` is, for the confirmation (`database shop_postgres, role ...`).
pub fn data_description(r: &Resource) -> String {
    let ids = r
        .status
        .as_ref()
        .map(|s| &s.provider_ids)
        .filter(|ids| !ids.is_empty());
    match ids {
        Some(ids) => ids
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        None => format!("everything stored in {} {}", r.spec.provider, r.name_any()),
    }
}

async fn remove(ctx: &Ctx, name: &str, delete_data: bool, yes: bool, timeout: u64) -> Result<()> {
    // The App need not exist any more: its resources can still be removed.
    let app = ctx.app_name()?;
    let r = get(ctx, &app, name).await?;
    let api = ctx.api::<Resource>();
    if delete_data {
        if !yes {
            if !std::io::stdin().is_terminal() {
                return Err(Error::DataNotConfirmed {
                    resource: name.to_owned(),
                });
            }
            eprint!(
                "Delete resource {name} AND ITS DATA ({})? This cannot be undone. Type its name to confirm: ",
                data_description(&r)
            );
            let mut answer = String::new();
            std::io::stdin()
                .read_line(&mut answer)
                .map_err(Error::io("reading the confirmation"))?;
            if answer.trim() != name {
                return Err(Error::DataNotConfirmed {
                    resource: name.to_owned(),
                });
            }
        }
        // First the policy, then the delete: the operator reads the policy when it lets go.
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deletionPolicy": "Delete"}})),
        )
        .await
        .map_err(Error::kube(format!(
            "setting the deletion policy of {name}"
        )))?;
    }
    api.delete(name, &DeleteParams::default())
        .await
        .map_err(Error::kube(format!("deleting resource {name}")))?;
    wait_for(
        ctx,
        &format!("resource {name} to be removed"),
        Duration::from_secs(timeout),
        "it is being deleted: the operator removes its config var from the app first",
        || async {
            Ok(match api.get_opt(name).await {
                Ok(None) => Wait::Done(()),
                Ok(Some(r)) => Wait::Pending(match readiness(&r) {
                    Readiness::Waiting(why) => format!("removing {name}: {why}"),
                    _ => format!("removing {name}"),
                }),
                Err(e) => return Err(Error::kube(format!("getting resource {name}"))(e)),
            })
        },
    )
    .await?;
    let kept = if delete_data || r.spec.deletion_policy == DeletionPolicy::Delete {
        "its data was deleted"
    } else {
        "its data is kept until the platform's retention expires"
    };
    output::print_out(&format!("Removed resource {name}; {kept}\n"))
}

/// The Resource of `provider` a client session uses: `-r NAME`, else the app's only one.
/// It must be Ready ([`Error::ResourceNotReady`] says why not).
pub async fn pick(
    ctx: &Ctx,
    app: &str,
    provider: Provider,
    flag: Option<&str>,
) -> Result<Resource> {
    let r = match flag {
        Some(name) => {
            let r = get(ctx, app, name).await?;
            if r.spec.provider != provider {
                return Err(Error::bad_argument(
                    name,
                    format!("it is a {} resource, not {provider}", r.spec.provider),
                    format!("flynn resource list, then -r with a {provider} resource"),
                ));
            }
            r
        }
        None => {
            let mut of_kind: Vec<Resource> = app_resources(ctx, app)
                .await?
                .into_iter()
                .filter(|r| r.spec.provider == provider)
                .collect();
            match of_kind.len() {
                0 => {
                    return Err(Error::NoResource {
                        app: app.to_owned(),
                        provider: provider.to_string(),
                    });
                }
                1 => of_kind.remove(0),
                _ => {
                    return Err(Error::WhichResource {
                        app: app.to_owned(),
                        provider: provider.to_string(),
                        names: of_kind
                            .iter()
                            .map(ResourceExt::name_any)
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
    };
    match readiness(&r) {
        Readiness::Ready => Ok(r),
        Readiness::Refused(reason, message) => Err(Error::ResourceNotReady {
            resource: r.name_any(),
            why: format!("{reason}: {message}"),
        }),
        Readiness::Waiting(why) => Err(Error::ResourceNotReady {
            resource: r.name_any(),
            why,
        }),
    }
}

/// The credentials Secret of `r`: the one its status names, else the conventional name.
pub fn credentials_secret(r: &Resource) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.secret.clone())
        .unwrap_or_else(|| secret_name(&r.name_any()))
}

/// An env var from a key of `secret` (the value never passes through the CLI).
pub fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// A client pod (psql, pg_dump, redis-cli) for a Resource.
#[derive(Debug, Clone)]
pub struct ClientPod<'a> {
    pub app: &'a str,
    /// What it is for, in its generated name (`shop-psql-`).
    pub purpose: &'a str,
    pub image: &'a str,
    pub command: Vec<String>,
    pub env: Vec<EnvVar>,
    pub io: Io,
}

/// The client Pod (pure, unit-tested): in the App's namespace with the App's label (the
/// network lets the App's pods reach its stores), Pod Security "restricted", deleted by
/// the CLI when done.
pub fn client_pod(spec: &ClientPod<'_>) -> Pod {
    let mut env = spec.env.clone();
    // psql keeps its history in $HOME; the client user has no home in the image.
    env.push(EnvVar {
        name: "HOME".into(),
        value: Some("/tmp".into()),
        value_from: None,
    });
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-{}-", spec.app, spec.purpose)),
            labels: Some(BTreeMap::from([
                (labels::APP.to_owned(), spec.app.to_owned()),
                (
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_FLYNN.to_owned(),
                ),
                (ONE_OFF.to_owned(), "true".to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            enable_service_links: Some(false),
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(5),
            security_context: Some(pod_security::pod_security_context(Some(CLIENT_UID))),
            containers: vec![Container {
                name: CONTAINER.into(),
                image: Some(spec.image.to_owned()),
                image_pull_policy: Some("IfNotPresent".into()),
                command: Some(spec.command.clone()),
                env: Some(env),
                stdin: Some(spec.io.stdin()),
                stdin_once: Some(spec.io.stdin()),
                tty: Some(spec.io.tty()),
                security_context: Some(pod_security::container_security_context()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resource(
        name: &str,
        provider: &str,
        env: Option<&str>,
        status: serde_json::Value,
    ) -> Resource {
        let mut spec = json!({"app": "shop", "provider": provider});
        if let Some(env) = env {
            spec["env"] = json!(env);
        }
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Resource",
            "metadata": {"name": name, "generation": 2},
            "spec": spec, "status": status,
        }))
        .unwrap()
    }

    fn ready(status: &str, reason: &str, message: &str, generation: i64) -> serde_json::Value {
        json!({"conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": "2026-01-02T03:04:05Z"}]})
    }

    #[test]
    fn add_takes_the_first_free_config_var_and_its_name() {
        let mut c = candidates("shop", Provider::Postgres, &[]);
        assert_eq!(
            c.next(),
            Some(("shop-postgres".into(), "DATABASE_URL".into()))
        );
        assert_eq!(
            c.next(),
            Some(("shop-postgres-2".into(), "DATABASE_2_URL".into()))
        );
        // DATABASE_URL is taken (by a Resource without spec.env: the default), a Redis does
        // not count against Postgres names.
        let taken = [
            resource("shop-postgres", "postgres", None, json!({})),
            resource("shop-redis", "redis", Some("REDIS_URL"), json!({})),
        ];
        let mut c = candidates("shop", Provider::Postgres, &taken);
        assert_eq!(
            c.next(),
            Some(("shop-postgres-2".into(), "DATABASE_2_URL".into()))
        );
        let mut c = candidates("shop", Provider::Redis, &taken);
        assert_eq!(
            c.next(),
            Some(("shop-redis-2".into(), "REDIS_2_URL".into()))
        );
        // A freed first var is used again.
        let second = [resource(
            "shop-postgres-2",
            "postgres",
            Some("DATABASE_2_URL"),
            json!({}),
        )];
        assert_eq!(
            candidates("shop", Provider::Postgres, &second).next(),
            Some(("shop-postgres".into(), "DATABASE_URL".into()))
        );
        let r = new_resource(
            "shop-postgres",
            "shop",
            Provider::Postgres,
            Some("small"),
            "DATABASE_URL",
        );
        assert_eq!(r.spec.env.as_deref(), Some("DATABASE_URL"));
        assert_eq!(r.spec.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(r.labels()[labels::APP], "shop");
    }

    #[test]
    fn readiness_tells_terminal_refusals_from_waiting() {
        let r = |status| resource("shop-postgres", "postgres", None, status);
        assert_eq!(
            readiness(&r(ready("True", "Provisioned", "", 2))),
            Readiness::Ready
        );
        // Ready for an older generation: not yet.
        assert!(matches!(
            readiness(&r(ready("True", "Provisioned", "", 1))),
            Readiness::Waiting(_)
        ));
        assert_eq!(
            readiness(&r(ready(
                "False",
                "ServiceUnavailable",
                "postgres is down",
                2
            ))),
            Readiness::Waiting("ServiceUnavailable: postgres is down".into())
        );
        assert_eq!(
            readiness(&r(ready(
                "False",
                "EnvConflict",
                "DATABASE_URL is shop-db's",
                2
            ))),
            Readiness::Refused("EnvConflict".into(), "DATABASE_URL is shop-db's".into())
        );
        for reason in TERMINAL_REASONS {
            assert!(matches!(
                readiness(&r(ready("False", reason, "m", 2))),
                Readiness::Refused(..)
            ));
        }
        assert!(matches!(readiness(&r(json!({}))), Readiness::Waiting(_)));
    }

    #[test]
    fn a_client_pod_gets_credentials_by_reference_and_runs_restricted() {
        let pod = client_pod(&ClientPod {
            app: "shop",
            purpose: "psql",
            image: "localhost/flynn-postgres:15",
            command: vec!["psql".into()],
            env: vec![from_secret(
                "PGPASSWORD",
                "shop-postgres-credentials",
                "password",
            )],
            io: Io::Tty,
        });
        let value = serde_json::to_value(&pod).unwrap();
        let c = &value["spec"]["containers"][0];
        assert_eq!(
            c["env"][0],
            json!({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {
                "name": "shop-postgres-credentials", "key": "password", "optional": false}}})
        );
        assert_eq!(
            (c["tty"].clone(), c["stdin"].clone()),
            (json!(true), json!(true))
        );
        assert_eq!(
            c["securityContext"],
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
        );
        assert_eq!(
            value["spec"]["securityContext"]["runAsNonRoot"],
            json!(true)
        );
        assert_eq!(
            value["spec"]["securityContext"]["runAsUser"],
            json!(CLIENT_UID)
        );
        assert_eq!(value["metadata"]["labels"]["flynn.io/app"], "shop");
        assert_eq!(value["metadata"]["generateName"], "shop-psql-");
        assert_eq!(value["spec"]["automountServiceAccountToken"], json!(false));
    }
}
