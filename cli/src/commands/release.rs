//! `release list | show [VERSION] | rollback [VERSION]` and `deploy --image REF`.

use std::collections::BTreeMap;
use std::time::Duration;

use flynn_crds::rollout::{self, Verdict};
use flynn_crds::{
    App, Artifact, ProcessPort, ProcessSpec, Protocol, Release, ReleaseSpec, names, next_release,
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde_json::json;

use super::limit::quantities_text;
use super::{Wait, split_pair, wait_for};
use crate::cli::{DeployArgs, ReleaseArgs, ReleaseCommand};
use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::output::{self, Format, Table, note, style};

/// Why a release was made (the operator sets it on config changes, `flynn deploy` too).
pub const CAUSE: &str = "flynn.io/cause";

pub async fn release(ctx: &Ctx, args: &ReleaseArgs) -> Result<()> {
    let app = ctx.app().await?;
    match &args.command {
        None | Some(ReleaseCommand::List) => list(ctx, &app).await,
        Some(ReleaseCommand::Show { version }) => show(ctx, &app, version.as_deref()).await,
        Some(ReleaseCommand::Rollback {
            version,
            no_wait,
            timeout,
        }) => rollback(ctx, &app, version.as_deref(), *no_wait, *timeout).await,
    }
}

/// Parses `3`, `v3` or `shop-v3`.
pub fn parse_version(app: &str, text: &str) -> Result<i64> {
    let bad = || Error::bad_argument(text, "expected a release version", "flynn release show 3");
    let number = match names::parse_release_name(text) {
        Some((a, v)) if a == app => return Ok(v),
        _ => text.strip_prefix('v').unwrap_or(text),
    };
    number
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(bad)
}

/// The app's releases, newest first.
pub async fn releases(ctx: &Ctx, app: &str) -> Result<Vec<Release>> {
    let mut releases = ctx
        .api::<Release>()
        .list(&ListParams::default().fields(&format!("spec.app={app}")))
        .await
        .map_err(Error::kube(format!("listing the releases of app {app}")))?
        .items;
    releases.sort_by_key(|r| std::cmp::Reverse(r.spec.version));
    Ok(releases)
}

fn describe_artifact(artifact: &Artifact) -> String {
    match (&artifact.image, &artifact.slug) {
        (Some(image), _) => image.clone(),
        (None, Some(slug)) => format!("slug {}", &slug.sha256[..12.min(slug.sha256.len())]),
        (None, None) => "-".into(),
    }
}

fn state(app: &App, release: &str) -> &'static str {
    let running = app.status.as_ref().and_then(|s| s.release.as_deref()) == Some(release);
    let wanted = app.spec.release.as_deref() == Some(release);
    match (wanted, running) {
        (true, true) => "current",
        (true, false) => "deploying",
        (false, true) => "running",
        (false, false) => "-",
    }
}

/// One line of `flynn release list`.
#[derive(Debug, Serialize)]
pub struct ReleaseRow {
    pub version: i64,
    pub state: String,
    pub artifact: String,
    pub cause: String,
    pub created: Option<String>,
}

fn release_row(app: &App, r: &Release) -> ReleaseRow {
    let cause = r
        .spec
        .meta
        .get(CAUSE)
        .cloned()
        .or_else(|| {
            r.spec
                .meta
                .get("git.commit")
                .map(|c| format!("git {}", &c[..7.min(c.len())]))
        })
        .unwrap_or_else(|| "-".into());
    ReleaseRow {
        version: r.spec.version,
        state: state(app, &r.name_any()).to_owned(),
        artifact: describe_artifact(&r.spec.artifact),
        cause,
        created: output::created(&r.metadata).map(|t| t.to_string()),
    }
}

/// The `flynn release list` table (pure, for golden tests).
pub fn releases_table(app: &App, releases: &[Release], now: Timestamp) -> Table {
    let mut table = Table::new(["VERSION", "STATE", "ARTIFACT", "CAUSE", "AGE"]);
    for r in releases {
        let row = release_row(app, r);
        table.row(vec![
            format!("v{}", row.version),
            row.state,
            row.artifact,
            row.cause,
            output::age(output::created(&r.metadata), now),
        ]);
    }
    table
}

async fn list(ctx: &Ctx, app: &App) -> Result<()> {
    let releases = releases(ctx, &app.name_any()).await?;
    match ctx.output {
        Format::Table if releases.is_empty() => {
            note(
                ctx.ui,
                "no releases yet: `git push flynn main`, or `flynn deploy --image REF`",
            );
            Ok(())
        }
        Format::Table => output::print_out(
            &releases_table(app, &releases, Timestamp::now()).render(ctx.ui.color),
        ),
        format => output::print_data(
            format,
            &releases
                .iter()
                .map(|r| release_row(app, r))
                .collect::<Vec<_>>(),
        ),
    }
}

async fn get_version(ctx: &Ctx, app: &str, version: i64) -> Result<Release> {
    let name = names::release_name(app, version);
    ctx.api::<Release>()
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("getting release {name}")))?
        .ok_or(Error::ReleaseNotFound {
            app: app.to_owned(),
            version,
        })
}

/// `flynn release show` as text (pure).
pub fn show_text(app: &App, r: &Release, color: bool, now: Timestamp) -> String {
    let field = |name: &str, value: &str| {
        format!(
            "{}{:width$}{value}\n",
            style::bold(color, &format!("{name}:")),
            "",
            width = 11 - name.len()
        )
    };
    let mut out = String::new();
    out += &field("Release", &r.name_any());
    out += &field("Version", &r.spec.version.to_string());
    out += &field("State", state(app, &r.name_any()));
    out += &field("Artifact", &describe_artifact(&r.spec.artifact));
    out += &field(
        "Created",
        &format!("{} ago", output::age(output::created(&r.metadata), now)),
    );
    out += &format!("{}\n", style::bold(color, "Processes:"));
    for (process, spec) in &r.spec.processes {
        let command: Vec<&str> = spec
            .command
            .iter()
            .chain(&spec.args)
            .map(String::as_str)
            .collect();
        let ports: Vec<String> = spec.ports.iter().map(|p| p.port.to_string()).collect();
        let mut line = format!(
            "  {process}: {}",
            if command.is_empty() {
                "(default command)".to_owned()
            } else {
                command.join(" ")
            }
        );
        if !ports.is_empty() {
            line += &format!(" (port {})", ports.join(", "));
        }
        if let Some(r) = &spec.resources {
            let mut parts = Vec::new();
            if !r.requests.is_empty() {
                parts.push(format!("requests {}", quantities_text(&r.requests)));
            }
            if !r.limits.is_empty() {
                parts.push(format!("limits {}", quantities_text(&r.limits)));
            }
            line += &format!(" [{}]", parts.join("; "));
        }
        out += &line;
        out += "\n";
    }
    // Names only: values are printed when asked for (`flynn env --values`).
    if let Some(secret) = &r.spec.config_secret {
        out += &format!(
            "{} Secret {secret} (`flynn env` lists its names)\n",
            style::bold(color, "Config:")
        );
    }
    if !r.spec.env.is_empty() {
        out += &format!(
            "{} {} (kept in the release in plain text: `flynn env set` moves them into a Secret)\n",
            style::bold(color, "Config:"),
            r.spec.env.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if !r.spec.meta.is_empty() {
        out += &format!("{}\n", style::bold(color, "Meta:"));
        for (k, v) in &r.spec.meta {
            out += &format!("  {k}: {v}\n");
        }
    }
    out
}

async fn show(ctx: &Ctx, app: &App, version: Option<&str>) -> Result<()> {
    let name = app.name_any();
    let release = match version {
        Some(v) => get_version(ctx, &name, parse_version(&name, v)?).await?,
        None => ctx.current_release(app).await?,
    };
    match ctx.output {
        Format::Table => {
            output::print_out(&show_text(app, &release, ctx.ui.color, Timestamp::now()))
        }
        format => output::print_data(format, &release),
    }
}

async fn rollback(
    ctx: &Ctx,
    app: &App,
    version: Option<&str>,
    no_wait: bool,
    timeout: u64,
) -> Result<()> {
    let name = app.name_any();
    let current = app
        .spec
        .release
        .as_deref()
        .and_then(names::parse_release_name)
        .map(|(_, v)| v)
        .ok_or(Error::NoRelease { app: name.clone() })?;
    let target = match version {
        Some(v) => get_version(ctx, &name, parse_version(&name, v)?).await?,
        None => releases(ctx, &name)
            .await?
            .into_iter()
            .find(|r| r.spec.version < current)
            .ok_or(Error::ReleaseNotFound {
                app: name.clone(),
                version: current - 1,
            })?,
    };
    let target_name = target.name_any();
    if target.spec.version == current {
        return output::print_out(&format!("Already on release v{current}\n"));
    }
    // The config comes back with the release: it is the release's own snapshot.
    let patched = ctx
        .api::<App>()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"release": target_name}})),
        )
        .await
        .map_err(Error::kube(format!("rolling back app {name}")))?;
    if !no_wait {
        let generation = patched.metadata.generation.unwrap_or(0);
        wait_rollout(ctx, &name, &target_name, generation, timeout).await?;
    }
    output::print_out(&format!(
        "Rolled back to release v{}\n",
        target.spec.version
    ))
}

/// Waits until the App runs `release`, judged as `git push` judges it
/// (`flynn_crds::rollout::Waiter`), counting only status written for `generation` (that of
/// the change that pointed the App at it) or later; fails if the operator gave up on it or
/// another writer pointed the App elsewhere. The receiver watches; this polls.
async fn wait_rollout(
    ctx: &Ctx,
    app: &str,
    release: &str,
    generation: i64,
    timeout: u64,
) -> Result<()> {
    let apps = ctx.api::<App>();
    let waiter = std::sync::Mutex::new(rollout::Waiter::new(release, generation));
    wait_for(
        ctx,
        &format!("{release} to roll out"),
        Duration::from_secs(timeout),
        "the release is set; `flynn info` and `flynn ps` show how the rollout is going",
        || async {
            let a = apps
                .get(app)
                .await
                .map_err(Error::kube(format!("getting app {app}")))?;
            let failed = |reason: String| Error::DeployFailed {
                release: release.to_owned(),
                reason,
            };
            let verdict = waiter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .look(&a, std::time::Instant::now());
            match verdict {
                Verdict::Deployed(_) => Ok(Wait::Done(())),
                Verdict::Failed {
                    reason,
                    rolled_back_to: Some(to),
                } => Err(failed(format!("{reason}; rolled back to {to}"))),
                Verdict::Failed { reason, .. } => Err(failed(reason)),
                Verdict::Superseded(now) => {
                    Err(failed(format!("the app was pointed at {now} meanwhile")))
                }
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

/// Creates the app's next release, `make(version)` for the next free version, points the
/// app at it (a first release also starts one `web`, as a first `git push` does on Heroku
/// and Flynn) and, unless `no_wait`, waits for its rollout. The release's version.
pub async fn release_and_roll_out(
    ctx: &Ctx,
    app: &App,
    config: &BTreeMap<String, String>,
    make: impl Fn(i64) -> Release,
    no_wait: bool,
    timeout: u64,
) -> Result<i64> {
    let name = app.name_any();
    let release =
        match next_release::create(&ctx.client, app, config, &PostParams::default(), make).await {
            Ok(r) => r,
            Err(next_release::Error::Kube { action, source }) => {
                return Err(Error::kube(action)(source));
            }
            Err(next_release::Error::Race { app, version }) => {
                return Err(Error::ReleaseRace { app, version });
            }
            // A Release without its snapshot cannot start: delete it again.
            Err(next_release::Error::Snapshot { release, source }) => {
                let _ = ctx
                    .api::<Release>()
                    .delete(&release, &Default::default())
                    .await;
                return Err(Error::kube(format!(
                    "creating the config Secret of release {release}"
                ))(source));
            }
        };
    let version = release.spec.version;
    let release_name = release.name_any();
    let mut spec = json!({"release": release_name});
    if app.spec.processes.is_empty() && release.spec.processes.contains_key("web") {
        spec["processes"] = json!({"web": 1});
    }
    let patched = ctx
        .api::<App>()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .map_err(Error::kube(format!(
            "pointing app {name} at {release_name}"
        )))?;
    if !no_wait {
        let generation = patched.metadata.generation.unwrap_or(0);
        wait_rollout(ctx, &name, &release_name, generation, timeout).await?;
    }
    Ok(version)
}

/// Splits a command line like a shell would, for `--process 'web=sh -c "exec httpd"'`:
/// whitespace separates words, single and double quotes group, backslash escapes.
pub fn split_command(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(next) = chars.next() {
                    word.get_or_insert_with(String::new).push(next);
                }
            }
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err(Error::bad_argument(
            line,
            "a quote is not closed",
            "--process 'web=sh -c \"exec httpd -f\"'",
        ));
    }
    words.extend(word);
    Ok(words)
}

/// The process types of an image release from `--process`/`--port` (with the current
/// release's resources and health check of each type it has), else the current release's,
/// else `web` on port 8080 running the image's own command.
pub fn deploy_processes(
    args: &DeployArgs,
    current: Option<&Release>,
) -> Result<BTreeMap<String, ProcessSpec>> {
    const EXAMPLE: &str =
        "flynn deploy --image REF --process 'web=./server --port 8080' --port web=8080";
    let mut processes: BTreeMap<String, ProcessSpec> = BTreeMap::new();
    for arg in &args.processes {
        let (process, command) = split_pair(arg, EXAMPLE)?;
        flynn_crds::validation::validate_process_type(process)
            .map_err(|e| Error::bad_argument(arg, e.to_string(), EXAMPLE))?;
        let command = split_command(command)?;
        processes.insert(
            process.to_owned(),
            ProcessSpec {
                command,
                ..ProcessSpec::default()
            },
        );
    }
    if processes.is_empty() {
        processes = match current {
            Some(release) => release.spec.processes.clone(),
            None => BTreeMap::from([("web".to_owned(), ProcessSpec::default())]),
        };
    } else if let Some(current) = current {
        // New commands, same limits and health checks (as a `git push` keeps them).
        for (process, spec) in &mut processes {
            if let Some(before) = current.spec.processes.get(process) {
                spec.resources = before.resources.clone();
                spec.health_check = before.health_check.clone();
            }
        }
    }
    let port = |n: i32| ProcessPort {
        port: n,
        name: None,
        protocol: Protocol::Tcp,
        service: true,
    };
    if let Some(web) = processes.get_mut("web")
        && web.ports.is_empty()
    {
        web.ports.push(port(8080));
    }
    for arg in &args.ports {
        let (process, n) = split_pair(arg, EXAMPLE)?;
        let n: i32 = n
            .parse()
            .ok()
            .filter(|n| (1..=65535).contains(n))
            .ok_or_else(|| Error::bad_argument(arg, "PORT must be 1-65535", EXAMPLE))?;
        let spec = processes.get_mut(process).ok_or_else(|| {
            Error::bad_argument(
                arg,
                format!("no process type {process}: add it with --process {process}=COMMAND"),
                EXAMPLE,
            )
        })?;
        spec.ports = vec![port(n)];
    }
    Ok(processes)
}

pub async fn deploy(ctx: &Ctx, args: &DeployArgs) -> Result<()> {
    let app = ctx.app().await?;
    let name = app.name_any();
    if args.image.is_empty() || args.image.contains(char::is_whitespace) {
        return Err(Error::bad_argument(
            &args.image,
            "an image reference has no spaces",
            "flynn deploy --image registry.example.com/shop:1.4",
        ));
    }
    let current = match ctx.current_release(&app).await {
        Ok(r) => Some(r),
        Err(Error::NoRelease { .. } | Error::ReleaseNotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let processes = deploy_processes(args, current.as_ref())?;
    let config = ctx.config(&app, current.as_ref()).await?;
    let version = release_and_roll_out(
        ctx,
        &app,
        &config,
        |version| {
            Release::new(
                &names::release_name(&name, version),
                ReleaseSpec {
                    app: name.clone(),
                    version,
                    artifact: Artifact {
                        image: Some(args.image.clone()),
                        slug: None,
                    },
                    config_secret: flynn_crds::config::snapshot_ref(
                        &names::release_name(&name, version),
                        &config,
                    ),
                    env: BTreeMap::new(),
                    processes: processes.clone(),
                    meta: BTreeMap::from([(
                        CAUSE.to_owned(),
                        format!("flynn deploy --image {}", args.image),
                    )]),
                },
            )
        },
        args.no_wait,
        args.timeout,
    )
    .await?;
    output::print_out(&format!("Deployed release v{version} ({})\n", args.image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_in_three_spellings() {
        assert_eq!(parse_version("shop", "3").unwrap(), 3);
        assert_eq!(parse_version("shop", "v3").unwrap(), 3);
        assert_eq!(parse_version("shop", "shop-v3").unwrap(), 3);
        assert!(parse_version("shop", "latest").is_err());
        assert!(parse_version("shop", "0").is_err());
    }

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(
            split_command(r#"sh -c "echo 'a b'; exec httpd" x\ y"#).unwrap(),
            ["sh", "-c", "echo 'a b'; exec httpd", "x y"]
        );
        assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_command("a ''").unwrap(), ["a", ""]);
        assert!(split_command("sh -c 'oops").is_err());
    }
}
