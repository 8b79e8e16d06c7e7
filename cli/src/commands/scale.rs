//! `scale [TYPE=N ...]`: show the formation, or patch `App.spec.processes` and wait until
//! the pods are ready.

use std::collections::BTreeMap;
use std::time::Duration;

use flynn_crds::conditions::{self, types};
use flynn_crds::validation::validate_process_type;
use flynn_crds::{App, ProcessStatus};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde::Serialize;
use serde_json::json;

use super::{Wait, wait_for};
use crate::cli::ScaleArgs;
use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::output::{self, Format, Table};

const EXAMPLE: &str = "flynn scale web=3 worker=1";

/// Parses `TYPE=N` arguments.
pub fn parse_counts(args: &[String]) -> Result<BTreeMap<String, i32>> {
    let mut counts = BTreeMap::new();
    for arg in args {
        let (process, n) = arg
            .split_once('=')
            .ok_or_else(|| Error::bad_argument(arg, "expected TYPE=N", EXAMPLE))?;
        validate_process_type(process)
            .map_err(|e| Error::bad_argument(arg, e.to_string(), EXAMPLE))?;
        let n: i32 = n.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
            Error::bad_argument(arg, "N must be a whole number, 0 or more", EXAMPLE)
        })?;
        if counts.insert(process.to_owned(), n).is_some() {
            return Err(Error::bad_argument(
                arg,
                format!("{process} is given twice"),
                EXAMPLE,
            ));
        }
    }
    Ok(counts)
}

/// One line of the formation.
#[derive(Debug, Serialize)]
pub struct FormationRow {
    #[serde(rename = "type")]
    pub process: String,
    pub desired: i32,
    pub ready: i32,
}

/// Every process type of the release and the app's counts, with ready pods.
pub fn formation_rows(app: &App, release_types: &[String]) -> Vec<FormationRow> {
    let status = app.status.clone().unwrap_or_default();
    let mut all: Vec<String> = release_types.to_vec();
    all.extend(app.spec.processes.keys().cloned());
    all.sort();
    all.dedup();
    all.into_iter()
        .map(|process| FormationRow {
            desired: app.spec.processes.get(&process).copied().unwrap_or(0),
            ready: status.processes.get(&process).map_or(0, |s| s.ready),
            process,
        })
        .collect()
}

/// The formation table (pure, for golden tests).
pub fn formation_table(rows: &[FormationRow]) -> Table {
    let mut table = Table::new(["TYPE", "DESIRED", "READY"]);
    for row in rows {
        table.row(vec![
            row.process.clone(),
            row.desired.to_string(),
            row.ready.to_string(),
        ]);
    }
    table
}

pub async fn scale(ctx: &Ctx, args: &ScaleArgs) -> Result<()> {
    let app = ctx.app().await?;
    let name = app.name_any();
    let release = match ctx.current_release(&app).await {
        Ok(release) => Some(release),
        Err(Error::NoRelease { .. }) => None,
        Err(e) => return Err(e),
    };
    let release_types: Vec<String> = release
        .as_ref()
        .map(|r| r.spec.processes.keys().cloned().collect())
        .unwrap_or_default();

    if args.counts.is_empty() {
        let rows = formation_rows(&app, &release_types);
        return match ctx.output {
            Format::Table => output::print_out(&formation_table(&rows).render(ctx.ui.color)),
            format => output::print_data(format, &rows),
        };
    }

    let counts = parse_counts(&args.counts)?;
    if let Some(release) = &release
        && let Some(unknown) = counts
            .keys()
            .find(|p| !release.spec.processes.contains_key(*p))
    {
        return Err(Error::unknown_process_type(unknown, release));
    }
    let patched = ctx
        .api::<App>()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"processes": counts}})),
        )
        .await
        .map_err(Error::kube(format!("scaling app {name}")))?;
    let summary = counts
        .iter()
        .map(|(p, n)| format!("{p}={n}"))
        .collect::<Vec<_>>()
        .join(" ");
    if release.is_none() {
        output::print_out(&format!(
            "Scaled {summary}; app {name} has no release yet, so nothing runs until one is deployed\n"
        ))?;
        return Ok(());
    }
    if args.no_wait {
        return output::print_out(&format!("Scaled {summary}\n"));
    }
    let generation = patched.metadata.generation.unwrap_or(0);
    let apps = ctx.api::<App>();
    wait_for(
        ctx,
        &format!("{summary} to be ready"),
        Duration::from_secs(args.timeout),
        "`flynn ps` shows the pods and `flynn info` the app's conditions",
        || async {
            let app = apps
                .get(&name)
                .await
                .map_err(Error::kube(format!("getting app {name}")))?;
            Ok(scale_progress(&app, generation, &counts))
        },
    )
    .await?;
    output::print_out(&format!("Scaled {summary}: all ready\n"))
}

/// Whether every scaled type has its count of ready pods, and if not, how far along.
pub fn scale_progress(app: &App, generation: i64, counts: &BTreeMap<String, i32>) -> Wait<()> {
    let status = app.status.clone().unwrap_or_default();
    let seen = status.observed_generation.unwrap_or(0) >= generation;
    let mut done = seen;
    let mut parts = Vec::new();
    for (process, &want) in counts {
        let s = status
            .processes
            .get(process)
            .copied()
            .unwrap_or(ProcessStatus::default());
        done &= s.ready == want && s.desired == want;
        parts.push(format!("{process} {}/{want} ready", s.ready));
    }
    if done {
        return Wait::Done(());
    }
    let mut message = parts.join(", ");
    if let Some(c) = conditions::find(&status.conditions, types::DEGRADED)
        && c.status == conditions::status::TRUE
    {
        message.push_str(&format!(" (degraded: {})", c.message));
    }
    Wait::Pending(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_and_bad_ones_say_why() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_counts(&args(&["web=3", "worker=0"])).unwrap(),
            BTreeMap::from([("web".into(), 3), ("worker".into(), 0)])
        );
        for (bad, problem) in [
            ("web", "expected TYPE=N"),
            ("web=x", "N must be a whole number, 0 or more"),
            ("web=-1", "N must be a whole number, 0 or more"),
            ("Web=1", "invalid process type"),
        ] {
            let err = parse_counts(&args(&[bad])).unwrap_err();
            assert!(err.to_string().contains(problem), "{bad}: {err}");
            assert_eq!(err.exit_code(), crate::errors::exit::USAGE);
        }
    }
}
