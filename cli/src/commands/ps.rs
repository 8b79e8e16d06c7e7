//! `ps` and `kill`: the app's pods.

use flynn_crds::{labels, names};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use serde::Serialize;

use crate::cli::KillArgs;
use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::output::{self, Format, Table, note};

/// Label on one-off pods from `flynn run` (they have no process type).
pub const ONE_OFF: &str = "flynn.io/one-off";
/// Process type shown for one-off pods.
pub const RUN_TYPE: &str = "run";

/// One line of `flynn ps`.
#[derive(Debug, Serialize)]
pub struct PodRow {
    pub name: String,
    #[serde(rename = "type")]
    pub process: String,
    pub release: Option<i64>,
    pub state: String,
    pub restarts: i32,
    pub created: Option<String>,
}

/// The process type of an app pod (`run` for one-off pods).
pub fn process_of(pod: &Pod) -> String {
    pod.labels()
        .get(labels::PROCESS)
        .cloned()
        .unwrap_or_else(|| RUN_TYPE.to_owned())
}

/// A pod's state in Flynn's words where they fit: `up` (running and ready), `starting`,
/// `down` (terminated), else the container's waiting reason (`CrashLoopBackOff`, ...).
pub fn state(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "stopping".into();
    }
    let status = pod.status.clone().unwrap_or_default();
    let container = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .next();
    let Some(container) = container else {
        return status
            .phase
            .unwrap_or_else(|| "pending".into())
            .to_lowercase();
    };
    let state = container.state.unwrap_or_default();
    if let Some(waiting) = state.waiting {
        return waiting.reason.unwrap_or_else(|| "waiting".into());
    }
    if let Some(terminated) = state.terminated {
        return match terminated.exit_code {
            0 => "down (exit 0)".into(),
            code => format!("crashed (exit {code})"),
        };
    }
    if container.ready {
        "up".into()
    } else {
        "starting".into()
    }
}

fn pod_row(pod: &Pod) -> PodRow {
    let release = pod
        .labels()
        .get(labels::RELEASE)
        .and_then(|r| names::parse_release_name(r))
        .map(|(_, v)| v);
    PodRow {
        name: pod.name_any(),
        process: process_of(pod),
        release,
        state: state(pod),
        restarts: pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum()),
        created: output::created(&pod.metadata).map(|t| t.to_string()),
    }
}

/// The `flynn ps` table (pure, for golden tests).
pub fn ps_table(pods: &[Pod], now: Timestamp) -> Table {
    let mut table = Table::new(["NAME", "TYPE", "RELEASE", "STATE", "RESTARTS", "AGE"]);
    for pod in pods {
        let row = pod_row(pod);
        table.row(vec![
            row.name,
            row.process,
            row.release.map_or_else(|| "-".into(), |v| format!("v{v}")),
            row.state,
            row.restarts.to_string(),
            output::age(output::created(&pod.metadata), now),
        ]);
    }
    table
}

/// The label selector of the app's pods (of one process type, if given).
pub fn pods_selector(app: &str, process: Option<&str>) -> String {
    // Build pods carry the app's label too, but are no process of it.
    let mut selector = format!("{}={app},!{}", labels::APP, labels::BUILD);
    if let Some(process) = process {
        selector.push_str(&format!(",{}={process}", labels::PROCESS));
    }
    selector
}

/// The app's pods, by type then name.
pub async fn app_pods(ctx: &Ctx, app: &str, process: Option<&str>) -> Result<Vec<Pod>> {
    let selector = pods_selector(app, process);
    let mut pods = ctx
        .api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!("listing the pods of app {app}")))?
        .items;
    pods.sort_by_key(|p| (process_of(p), p.name_any()));
    Ok(pods)
}

pub async fn ps(ctx: &Ctx) -> Result<()> {
    let app = ctx.app().await?;
    let pods = app_pods(ctx, &app.name_any(), None).await?;
    match ctx.output {
        Format::Table if pods.is_empty() => {
            note(ctx.ui, "no pods: scale up with `flynn scale web=1`");
            Ok(())
        }
        Format::Table => output::print_out(&ps_table(&pods, Timestamp::now()).render(ctx.ui.color)),
        format => output::print_data(format, &pods.iter().map(pod_row).collect::<Vec<_>>()),
    }
}

pub async fn kill(ctx: &Ctx, args: &KillArgs) -> Result<()> {
    let app = ctx.app().await?.name_any();
    let pod = ctx
        .api::<Pod>()
        .get_opt(&args.pod)
        .await
        .map_err(Error::kube(format!("getting pod {}", args.pod)))?
        .filter(|p| p.labels().get(labels::APP) == Some(&app));
    let Some(pod) = pod else {
        return Err(Error::PodNotFound {
            pod: args.pod.clone(),
            app,
        });
    };
    ctx.api::<Pod>()
        .delete(&pod.name_any(), &DeleteParams::default())
        .await
        .map_err(Error::kube(format!("killing pod {}", args.pod)))?;
    let then = if pod.labels().contains_key(ONE_OFF) {
        ""
    } else {
        " (a replacement starts)"
    };
    output::print_out(&format!("Killed {}{then}\n", args.pod))
}

#[cfg(test)]
mod tests {
    use super::pods_selector;

    #[test]
    fn build_pods_are_not_the_apps_processes() {
        assert_eq!(
            pods_selector("shop", None),
            "flynn.io/app=shop,!flynn.io/build"
        );
        assert_eq!(
            pods_selector("shop", Some("web")),
            "flynn.io/app=shop,!flynn.io/build,flynn.io/process=web"
        );
    }
}
