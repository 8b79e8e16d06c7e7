//! `env [get K | set K=V ... | unset K ...]`: the app's config vars.
//!
//! `set` and `unset` patch `App.spec.env`; the operator turns the change into the next
//! Release and points the App at it (operator/README.md, "Config"), and the command prints
//! that release's version.

use std::collections::BTreeMap;
use std::time::Duration;

use flynn_crds::validation::validate_env_name;
use flynn_crds::{App, names};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::{Wait, split_pair, wait_for};
use crate::cli::{EnvArgs, EnvCommand};
use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::output::{self, Format, note};

const EXAMPLE: &str = "flynn env set GREETING=hello";

pub async fn env(ctx: &Ctx, args: &EnvArgs) -> Result<()> {
    let app = ctx.app().await?;
    let name = app.name_any();
    match &args.command {
        None => match ctx.output {
            Format::Table => output::print_out(&env_text(&app.spec.env)),
            format => output::print_data(format, &app.spec.env),
        },
        Some(EnvCommand::Get { key }) => match app.spec.env.get(key) {
            Some(value) => output::print_out(&format!("{value}\n")),
            None => Err(Error::EnvNotSet {
                key: key.clone(),
                app: name,
            }),
        },
        Some(EnvCommand::Set { pairs, timeout }) => {
            let mut changes = BTreeMap::new();
            for pair in pairs {
                let (k, v) = split_pair(pair, EXAMPLE)?;
                validate_env_name(k)
                    .map_err(|e| Error::bad_argument(pair, e.to_string(), EXAMPLE))?;
                changes.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            change(ctx, &app, changes, *timeout).await
        }
        Some(EnvCommand::Unset { keys, timeout }) => {
            let mut changes = BTreeMap::new();
            for key in keys {
                if !app.spec.env.contains_key(key) {
                    return Err(Error::EnvNotSet {
                        key: key.clone(),
                        app: name,
                    });
                }
                changes.insert(key.clone(), Value::Null);
            }
            change(ctx, &app, changes, *timeout).await
        }
    }
}

/// `K=V` lines, sorted, for people and for `eval`/`.env` files alike.
pub fn env_text(env: &BTreeMap<String, String>) -> String {
    env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Applies `changes` (a value sets, null removes) and waits for the operator's release.
async fn change(
    ctx: &Ctx,
    app: &App,
    changes: BTreeMap<String, Value>,
    timeout: u64,
) -> Result<()> {
    let name = app.name_any();
    let unchanged = changes.iter().all(|(k, v)| match v {
        Value::String(s) => app.spec.env.get(k) == Some(s),
        _ => !app.spec.env.contains_key(k),
    });
    if unchanged {
        let current = app
            .spec
            .release
            .as_deref()
            .and_then(names::parse_release_name)
            .map(|(_, v)| v);
        return output::print_out(&match current {
            Some(v) => format!("No change: still release v{v}\n"),
            None => "No change\n".to_owned(),
        });
    }
    let before = app.spec.release.clone();
    ctx.api::<App>()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"env": changes}})),
        )
        .await
        .map_err(Error::kube(format!("changing the config of app {name}")))?;
    if before.is_none() {
        note(
            ctx.ui,
            "saved: the app has no release yet, so its first release gets this config",
        );
        return Ok(());
    }
    let apps = ctx.api::<App>();
    let version = wait_for(
        ctx,
        "the operator to create the new release",
        Duration::from_secs(timeout),
        "the config is saved; is the operator running? (`kubectl -n flynn-system get pods`)",
        || async {
            let app = apps
                .get(&name)
                .await
                .map_err(Error::kube(format!("getting app {name}")))?;
            Ok(
                match app
                    .spec
                    .release
                    .as_deref()
                    .filter(|r| Some(*r) != before.as_deref())
                {
                    Some(release) => match names::parse_release_name(release) {
                        Some((_, v)) => Wait::Done(v),
                        None => Wait::Pending(format!("app points at {release}")),
                    },
                    None => Wait::Pending("waiting for the operator".into()),
                },
            )
        },
    )
    .await?;
    output::print_out(&format!("Created release v{version}\n"))
}
