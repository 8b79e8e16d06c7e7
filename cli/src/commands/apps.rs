//! `create`, `apps`, `info`, `delete`.

use std::io::IsTerminal;

use flynn_crds::conditions::{self, types};
use flynn_crds::{App, AppSpec, Release, Route, names, validation};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde::Serialize;

use crate::app_ref;
use crate::cli::{CreateArgs, DeleteArgs};
use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::output::{self, Format, Table, note, style};

pub async fn create(ctx: &Ctx, args: &CreateArgs) -> Result<()> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => app_ref::app_name_from_dir(&ctx.cwd).ok_or_else(|| {
            Error::bad_argument(
                ctx.cwd.display().to_string(),
                "this directory's name does not make an app name",
                "flynn create shop",
            )
        })?,
    };
    validation::validate_app_name(&name)
        .map_err(|e| Error::bad_argument(&name, e.to_string(), "flynn create shop"))?;

    // Decide about the git remote before creating anything, so a clash leaves no app behind.
    let remote = if args.no_remote || !app_ref::in_git_repo(&ctx.cwd) {
        None
    } else {
        match ctx.platform().await.git_url() {
            Ok(git_url) => {
                let url = app_ref::remote_url(&git_url, &ctx.namespace, &name);
                match app_ref::git_remote_url(&ctx.cwd, &args.remote) {
                    Some(existing) if existing != url => {
                        return Err(Error::RemoteExists {
                            remote: args.remote.clone(),
                            url: existing,
                        });
                    }
                    Some(_) => None, // already there, pointing here
                    None => Some(url),
                }
            }
            Err(e) => {
                note(ctx.ui, &format!("no git remote added: {e}"));
                None
            }
        }
    };

    let app = App::new(&name, AppSpec::default());
    match ctx.api::<App>().create(&PostParams::default(), &app).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            return Err(Error::AppExists {
                app: name,
                namespace: ctx.namespace.clone(),
            });
        }
        Err(e) => return Err(Error::kube(format!("creating app {name}"))(e)),
    }
    output::print_out(&format!(
        "Created app {name} in namespace {}\n",
        ctx.namespace
    ))?;
    if let Some(url) = remote {
        app_ref::add_remote(&ctx.cwd, &args.remote, &url)?;
        output::print_out(&format!(
            "Added git remote {} {url}\nDeploy with: git push {} main\n",
            args.remote, args.remote
        ))?;
    } else if !args.no_remote && !app_ref::in_git_repo(&ctx.cwd) {
        note(
            ctx.ui,
            "not in a git repository: no remote added (run `git init`, then `flynn create` again or pass -a)",
        );
    }
    Ok(())
}

/// One line of `flynn apps`.
#[derive(Debug, Serialize)]
pub struct AppRow {
    pub name: String,
    pub release: Option<i64>,
    pub processes: String,
    pub ready: String,
    pub url: Option<String>,
    pub created: Option<String>,
}

fn app_row(app: &App) -> AppRow {
    let status = app.status.clone().unwrap_or_default();
    AppRow {
        name: app.name_any(),
        release: status.release_version.or_else(|| {
            app.spec
                .release
                .as_deref()
                .and_then(names::parse_release_name)
                .map(|(_, v)| v)
        }),
        processes: status.process_summary.unwrap_or_default(),
        ready: conditions::find(&status.conditions, types::READY)
            .map_or_else(|| "-".to_owned(), |c| c.status.clone()),
        url: status.urls.first().cloned(),
        created: output::created(&app.metadata).map(|t| t.to_string()),
    }
}

/// The `flynn apps` table (pure, for golden tests).
pub fn apps_table(apps: &[App], now: Timestamp) -> Table {
    let mut table = Table::new(["NAME", "RELEASE", "PROCESSES", "READY", "URL", "AGE"]);
    for app in apps {
        let row = app_row(app);
        table.row(vec![
            row.name,
            row.release.map_or_else(|| "-".into(), |v| format!("v{v}")),
            if row.processes.is_empty() {
                "-".into()
            } else {
                row.processes
            },
            row.ready,
            row.url.unwrap_or_else(|| "-".into()),
            output::age(output::created(&app.metadata), now),
        ]);
    }
    table
}

pub async fn list(ctx: &Ctx) -> Result<()> {
    let mut apps = ctx
        .api::<App>()
        .list(&ListParams::default())
        .await
        .map_err(Error::kube(format!(
            "listing apps in namespace {}",
            ctx.namespace
        )))?
        .items;
    apps.sort_by_key(|a| a.name_any());
    match ctx.output {
        Format::Table if apps.is_empty() => {
            note(
                ctx.ui,
                &format!(
                    "no apps in namespace {}: create one with `flynn create NAME`",
                    ctx.namespace
                ),
            );
            Ok(())
        }
        Format::Table => {
            output::print_out(&apps_table(&apps, Timestamp::now()).render(ctx.ui.color))
        }
        format => output::print_data(format, &apps.iter().map(app_row).collect::<Vec<_>>()),
    }
}

/// `flynn info` as text (pure, for golden tests).
pub fn info_text(app: &App, namespace: &str, color: bool, now: Timestamp) -> String {
    let status = app.status.clone().unwrap_or_default();
    let version = |name: &str| {
        names::parse_release_name(name).map_or_else(|| name.to_owned(), |(_, v)| format!("v{v}"))
    };
    let release = match (&app.spec.release, &status.release) {
        (None, _) => "none yet (git push flynn main, or flynn deploy --image REF)".to_owned(),
        (Some(want), Some(running)) if want == running => version(want),
        (Some(want), Some(running)) => format!("{} (running {})", version(want), version(running)),
        (Some(want), None) => format!("{} (not running yet)", version(want)),
    };
    let processes = if status.processes.is_empty() {
        app.spec
            .processes
            .iter()
            .map(|(t, n)| format!("{t}=?/{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        status.process_summary.clone().unwrap_or_default()
    };
    let field = |name: &str, value: &str| {
        format!(
            "{}{:width$}{value}\n",
            style::bold(color, &format!("{name}:")),
            "",
            width = 12 - name.len() - 1
        )
    };
    let mut out = String::new();
    out += &field("Name", &app.name_any());
    out += &field("Namespace", namespace);
    out += &field("Release", &release);
    out += &field(
        "Processes",
        if processes.is_empty() {
            "-"
        } else {
            &processes
        },
    );
    out += &field(
        "URLs",
        &if status.urls.is_empty() {
            "-".to_owned()
        } else {
            status.urls.join(" ")
        },
    );
    out += &field(
        "Strategy",
        &super::deployment::strategy_name(app.spec.strategy),
    );
    out += &field(
        "Created",
        &format!("{} ago", output::age(output::created(&app.metadata), now)),
    );
    if !status.conditions.is_empty() {
        out += "\n";
        let mut table = Table::new(["CONDITION", "STATUS", "REASON", "MESSAGE"]);
        for c in &status.conditions {
            table.row(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]);
        }
        out += &table.render(color);
    }
    out
}

pub async fn info(ctx: &Ctx) -> Result<()> {
    let app = ctx.app().await?;
    match ctx.output {
        Format::Table => output::print_out(&info_text(
            &app,
            &ctx.namespace,
            ctx.ui.color,
            Timestamp::now(),
        )),
        format => output::print_data(format, &app),
    }
}

pub async fn delete(ctx: &Ctx, args: &DeleteArgs) -> Result<()> {
    let app = ctx.app().await?;
    let name = app.name_any();
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::NotConfirmed { app: name });
        }
        eprint!(
            "Delete app {name} in namespace {} with its releases, pods, routes and pushed code? Type its name to confirm: ",
            ctx.namespace
        );
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .map_err(Error::io("reading the confirmation"))?;
        if answer.trim() != name {
            return Err(Error::NotConfirmed { app: name });
        }
    }
    // Owner references remove the Formation, its Deployments and the default Route; Releases
    // from `git push` or `flynn deploy` and Routes added by hand have no owner, so go too.
    let by_app = ListParams::default().fields(&format!("spec.app={name}"));
    let dp = DeleteParams::background();
    ctx.api::<App>()
        .delete(&name, &dp)
        .await
        .map_err(Error::kube(format!("deleting app {name}")))?;
    ctx.api::<Release>()
        .delete_collection(&dp, &by_app)
        .await
        .map_err(Error::kube(format!("deleting the releases of app {name}")))?;
    ctx.api::<Route>()
        .delete_collection(&dp, &by_app)
        .await
        .map_err(Error::kube(format!("deleting the routes of app {name}")))?;
    output::print_out(&format!("Deleted app {name}\n"))?;
    // Remove the git remote only if it pointed at this very app.
    if let Some(remote) = app_ref::from_git(&ctx.cwd)
        && remote.app == name
        && remote.namespace == ctx.namespace
    {
        app_ref::remove_remote(&ctx.cwd, app_ref::DEFAULT_REMOTE)?;
        output::print_out(&format!("Removed git remote {}\n", app_ref::DEFAULT_REMOTE))?;
    }
    Ok(())
}
