//! `env [--values] | get K | set K=V ... | unset K ...`: the app's config vars.
//!
//! Config vars are Secrets (`flynn_crds::config`): the current release's immutable
//! snapshot, or, before the first release, the app's initial Secret. `set` and `unset`
//! make the next release (same artifact and process types) with a new snapshot and point
//! the app at it, as a push does; before the first release they rewrite the initial
//! Secret, which the first push copies. Values are printed only when asked for:
//! `flynn env --values`, `flynn env get K`.

use std::collections::BTreeMap;

use flynn_crds::validation::validate_env_name;
use flynn_crds::{App, Release, ReleaseSpec, config, names};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};

use super::release::{CAUSE, release_and_roll_out};
use super::split_pair;
use crate::cli::{EnvArgs, EnvCommand, EnvWaitArgs};
use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::output::{self, Format, note};

const EXAMPLE: &str = "flynn env set GREETING=hello";

pub async fn env(ctx: &Ctx, args: &EnvArgs) -> Result<()> {
    let app = ctx.app().await?;
    let name = app.name_any();
    let current = ctx.current_release_opt(&app).await?;
    let vars = ctx.config(&app, current.as_ref()).await?;
    match &args.command {
        None if args.values => match ctx.output {
            Format::Table => output::print_out(&env_text(&vars)),
            format => output::print_data(format, &vars),
        },
        None => {
            let names: Vec<&String> = vars.keys().collect();
            match ctx.output {
                Format::Table => {
                    output::print_out(&names.iter().map(|k| format!("{k}\n")).collect::<String>())
                }
                format => output::print_data(format, &names),
            }
        }
        Some(EnvCommand::Get { key }) => match vars.get(key) {
            Some(value) => output::print_out(&format!("{value}\n")),
            None => Err(Error::EnvNotSet {
                key: key.clone(),
                app: name,
            }),
        },
        Some(EnvCommand::Set { pairs, wait }) => {
            let mut next = vars.clone();
            let mut keys = Vec::new();
            for pair in pairs {
                let (k, v) = split_pair(pair, EXAMPLE)?;
                // The key only: the value may be a secret, and errors end up in logs.
                validate_env_name(k).map_err(|e| Error::bad_argument(k, e.to_string(), EXAMPLE))?;
                next.insert(k.to_owned(), v.to_owned());
                keys.push(k.to_owned());
            }
            let cause = format!("flynn env set {}", keys.join(", "));
            change(ctx, &app, current.as_ref(), &vars, next, cause, wait).await
        }
        Some(EnvCommand::Unset { keys, wait }) => {
            let mut next = vars.clone();
            for key in keys {
                if next.remove(key).is_none() {
                    return Err(Error::EnvNotSet {
                        key: key.clone(),
                        app: name,
                    });
                }
            }
            let cause = format!("flynn env unset {}", keys.join(", "));
            change(ctx, &app, current.as_ref(), &vars, next, cause, wait).await
        }
    }
}

/// `K=V` lines, sorted, for people and for `eval`/`.env` files alike.
pub fn env_text(env: &BTreeMap<String, String>) -> String {
    env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Makes `next` the app's config: the next release (or, before the first, the initial
/// Secret). `cause` names the keys, never the values: it is kept in the release.
async fn change(
    ctx: &Ctx,
    app: &App,
    current: Option<&Release>,
    before: &BTreeMap<String, String>,
    next: BTreeMap<String, String>,
    cause: String,
    wait: &EnvWaitArgs,
) -> Result<()> {
    let name = app.name_any();
    // A release still carrying plain-text config is always re-released: the new one keeps
    // the same vars in a Secret instead.
    let legacy = current.is_some_and(|r| !r.spec.env.is_empty());
    if &next == before && !legacy {
        return output::print_out(&match current {
            Some(r) => format!("No change: still release v{}\n", r.spec.version),
            None => "No change\n".to_owned(),
        });
    }
    let Some(current) = current else {
        save_initial(ctx, app, &next).await?;
        note(
            ctx.ui,
            "saved: the app has no release yet, so its first release gets this config",
        );
        return Ok(());
    };
    let version = release_and_roll_out(
        ctx,
        app,
        &next,
        |version| {
            let mut meta = current.spec.meta.clone();
            meta.insert(CAUSE.to_owned(), cause.clone());
            let release = names::release_name(&name, version);
            Release::new(
                &release,
                ReleaseSpec {
                    app: name.clone(),
                    version,
                    artifact: current.spec.artifact.clone(),
                    config_secret: config::snapshot_ref(&release, &next),
                    env: BTreeMap::new(),
                    processes: current.spec.processes.clone(),
                    meta,
                },
            )
        },
        wait.no_wait,
        wait.timeout,
    )
    .await?;
    output::print_out(&format!("Created release v{version}\n"))
}

/// Writes the app's initial config Secret (before its first release), whole.
async fn save_initial(ctx: &Ctx, app: &App, vars: &BTreeMap<String, String>) -> Result<()> {
    let secret = config::initial(app, vars);
    let secret_name = secret.name_any();
    // An apply with the whole data: keys removed by `unset` go too.
    let mut body = serde_json::to_value(&secret).unwrap_or_default();
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    ctx.api::<Secret>()
        .patch(
            &secret_name,
            &PatchParams::apply("flynn").force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube(format!("saving config Secret {secret_name}")))?;
    Ok(())
}
