//! `deployment [set --strategy S --timeout N --auto-rollback on|off]`: how the App's new
//! releases roll out (Flynn's `flynn deployment`). These are App fields, so a change takes
//! effect from the next rollout; it makes no release.

use flynn_crds::{App, DeployStrategy};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::cli::{DeploymentArgs, DeploymentCommand, Strategy};
use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::output::{self, Format};

/// What `flynn deployment` shows.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub strategy: DeployStrategy,
    pub deploy_timeout_seconds: i32,
    pub auto_rollback: bool,
}

impl Settings {
    fn of(app: &App) -> Self {
        Self {
            strategy: app.spec.strategy,
            deploy_timeout_seconds: app.spec.deploy_timeout_seconds,
            auto_rollback: app.spec.auto_rollback,
        }
    }
}

pub async fn deployment(ctx: &Ctx, args: &DeploymentArgs) -> Result<()> {
    let app = ctx.app().await?;
    let Some(DeploymentCommand::Set {
        strategy,
        timeout,
        auto_rollback,
    }) = &args.command
    else {
        return show(ctx, &Settings::of(&app));
    };
    let patch = patch(*strategy, *timeout, *auto_rollback)?;
    let name = app.name_any();
    let patched = ctx
        .api::<App>()
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!(
            "changing the deployment settings of app {name}"
        )))?;
    show(ctx, &Settings::of(&patched))
}

fn show(ctx: &Ctx, settings: &Settings) -> Result<()> {
    match ctx.output {
        Format::Table => output::print_out(&settings_text(settings)),
        format => output::print_data(format, settings),
    }
}

/// The settings for people (pure, for tests).
pub fn settings_text(s: &Settings) -> String {
    format!(
        "Strategy:       {}\nTimeout:        {}s\nAuto-rollback:  {}\n",
        strategy_name(s.strategy),
        s.deploy_timeout_seconds,
        if s.auto_rollback { "on" } else { "off" }
    )
}

/// `rolling`, `all-at-once`, `one-by-one`: as in the App manifest.
pub fn strategy_name(s: DeployStrategy) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The merge patch of `set` (pure): only what is named; naming nothing is a usage error.
pub fn patch(
    strategy: Option<Strategy>,
    timeout: Option<u32>,
    auto_rollback: Option<bool>,
) -> Result<Value> {
    let mut spec = Map::new();
    if let Some(s) = strategy {
        let s = match s {
            Strategy::Rolling => DeployStrategy::Rolling,
            Strategy::AllAtOnce => DeployStrategy::AllAtOnce,
            Strategy::OneByOne => DeployStrategy::OneByOne,
        };
        spec.insert("strategy".into(), strategy_name(s).into());
    }
    if let Some(t) = timeout {
        spec.insert("deployTimeoutSeconds".into(), t.into());
    }
    if let Some(on) = auto_rollback {
        spec.insert("autoRollback".into(), on.into());
    }
    if spec.is_empty() {
        return Err(Error::bad_argument(
            "set",
            "nothing to change: give --strategy, --timeout or --auto-rollback",
            "flynn deployment set --strategy one-by-one --timeout 600",
        ));
    }
    Ok(json!({ "spec": spec }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_patches_only_what_it_names() {
        assert_eq!(
            patch(Some(Strategy::OneByOne), Some(600), None).unwrap(),
            json!({"spec": {"strategy": "one-by-one", "deployTimeoutSeconds": 600}})
        );
        assert_eq!(
            patch(None, None, Some(false)).unwrap(),
            json!({"spec": {"autoRollback": false}})
        );
        let err = patch(None, None, None).unwrap_err().to_string();
        assert!(err.contains("nothing to change"), "{err}");
    }

    #[test]
    fn settings_read_like_info() {
        let s = Settings {
            strategy: DeployStrategy::AllAtOnce,
            deploy_timeout_seconds: 300,
            auto_rollback: true,
        };
        assert_eq!(
            settings_text(&s),
            "Strategy:       all-at-once\nTimeout:        300s\nAuto-rollback:  on\n"
        );
    }
}
