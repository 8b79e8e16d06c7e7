//! `log [-f] [-t TYPE] [--lines N] [--since DUR] [--raw]`: the app's logs, merged.
//!
//! Without `-f` every pod's log is fetched with timestamps and the lines are merged in time
//! order. With `-f` a watch on the app's pods starts a follower for each pod once its
//! container runs, so pods that start later (a scale-up, a restart) join the stream.

use std::collections::HashMap;
use std::time::Duration;

use flynn_crds::validation::validate_process_type;
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::LogParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;

use super::ps::{app_pods, pods_selector, process_of};
use crate::cli::LogArgs;
use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::output::{self, style};

/// Parses `30s`, `10m`, `2h`, `1d` (or plain seconds) into seconds.
pub fn parse_duration(text: &str) -> Result<i64> {
    let bad = || {
        Error::bad_argument(
            text,
            "expected a duration like 30s, 10m, 2h or 1d",
            "flynn log --since 10m",
        )
    };
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: i64 = number.parse().map_err(|_| bad())?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    Ok(n * factor)
}

/// Formats log lines: `web[shop-web-6d5f-x2k4q]: line`, coloured per pod on a terminal.
#[derive(Debug, Clone, Copy)]
pub struct LinePrinter {
    pub raw: bool,
    pub color: bool,
}

impl LinePrinter {
    pub fn format(&self, process: &str, pod: &str, line: &str) -> String {
        if self.raw {
            format!("{line}\n")
        } else {
            let prefix = format!("{process}[{pod}]:");
            format!("{} {line}\n", style::by_key(self.color, pod, &prefix))
        }
    }
}

/// Whether a pod's container has started, so the API server has a log for it.
fn has_log(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
}

fn is_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map_or(0, |c| c.restart_count)
}

pub async fn log(ctx: &Ctx, args: &LogArgs) -> Result<()> {
    let app = ctx.app().await?.name_any();
    if let Some(process) = &args.process {
        validate_process_type(process)
            .map_err(|e| Error::bad_argument(process, e.to_string(), "flynn log -t web"))?;
    }
    let since = args.since.as_deref().map(parse_duration).transpose()?;
    let printer = LinePrinter {
        raw: args.raw,
        color: ctx.ui.color,
    };
    if args.follow {
        follow(ctx, &app, args, since, printer).await
    } else {
        snapshot(ctx, &app, args, since, printer).await
    }
}

async fn snapshot(
    ctx: &Ctx,
    app: &str,
    args: &LogArgs,
    since: Option<i64>,
    printer: LinePrinter,
) -> Result<()> {
    let api = ctx.api::<Pod>();
    let mut lines: Vec<(Timestamp, String)> = Vec::new();
    let pods = app_pods(ctx, app, args.process.as_deref()).await?;
    if pods.is_empty() {
        crate::output::note(
            ctx.ui,
            "no pods, so no logs: scale up with `flynn scale web=1`",
        );
    }
    for pod in pods {
        if !has_log(&pod) {
            continue;
        }
        let name = pod.name_any();
        let params = LogParams {
            timestamps: true,
            tail_lines: args.lines,
            since_seconds: since,
            ..LogParams::default()
        };
        let text = match api.logs(&name, &params).await {
            Ok(text) => text,
            // The pod went away between the list and the read: nothing to show.
            Err(kube::Error::Api(s)) if s.is_not_found() => continue,
            Err(e) => return Err(Error::kube(format!("reading the log of pod {name}"))(e)),
        };
        let process = process_of(&pod);
        for line in text.lines() {
            // Each line is `<RFC 3339 timestamp> <text>`; sort on the parsed time.
            let (time, rest) = line.split_once(' ').unwrap_or((line, ""));
            let time = time.parse::<Timestamp>().unwrap_or(Timestamp::UNIX_EPOCH);
            lines.push((time, printer.format(&process, &name, rest)));
        }
    }
    lines.sort_by_key(|(time, _)| *time);
    output::print_out(&lines.into_iter().map(|(_, l)| l).collect::<String>())
}

/// A pod being followed: how often its container had restarted when following began.
#[derive(Debug)]
struct Followed {
    restarts: i32,
    active: bool,
}

async fn follow(
    ctx: &Ctx,
    app: &str,
    args: &LogArgs,
    since: Option<i64>,
    printer: LinePrinter,
) -> Result<()> {
    let api = ctx.api::<Pod>();
    let selector = pods_selector(app, args.process.as_deref());
    // The watcher re-lists after a dropped watch (with backoff); a failed attempt is retried,
    // not fatal: `log -f` is meant to run for hours.
    let mut events = watcher(api.clone(), watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    let (line_tx, mut line_rx) = mpsc::channel::<String>(1024);
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<String>();
    let mut followed: HashMap<String, Followed> = HashMap::new();
    // Pods listed before the first InitDone existed when we started: they get --lines. Pods
    // that start later are shown from their first line, so a scale-up is seen whole.
    let mut initial = true;

    loop {
        tokio::select! {
            event = events.next() => {
                let event = match event {
                    None => return Ok(()),
                    Some(Err(_)) => continue,
                    Some(Ok(event)) => event,
                };
                let pod = match event {
                    watcher::Event::InitDone => { initial = false; continue }
                    watcher::Event::Init | watcher::Event::Delete(_) => continue,
                    watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => pod,
                };
                let name = pod.name_any();
                let params = match followed.get(&name) {
                    None if has_log(&pod) => LogParams {
                        follow: true,
                        tail_lines: if initial { args.lines } else { None },
                        since_seconds: since,
                        ..LogParams::default()
                    },
                    // A restarted container: follow its new log from now on.
                    Some(f) if !f.active && is_running(&pod) && restarts(&pod) > f.restarts => LogParams {
                        follow: true,
                        since_time: Some(Timestamp::now()),
                        ..LogParams::default()
                    },
                    _ => continue,
                };
                followed.insert(name.clone(), Followed { restarts: restarts(&pod), active: true });
                spawn_follower(api.clone(), pod, params, printer, line_tx.clone(), ended_tx.clone());
            }
            Some(line) = line_rx.recv() => output::print_out(&line)?,
            Some(name) = ended_rx.recv() => {
                if let Some(f) = followed.get_mut(&name) {
                    f.active = false;
                }
            }
        }
    }
}

fn spawn_follower(
    api: Api<Pod>,
    pod: Pod,
    params: LogParams,
    printer: LinePrinter,
    lines: mpsc::Sender<String>,
    ended: mpsc::UnboundedSender<String>,
) {
    let name = pod.name_any();
    let process = process_of(&pod);
    tokio::spawn(async move {
        // Retry briefly: right after a container starts the kubelet may not serve its log yet.
        for _ in 0..10 {
            match api.log_stream(&name, &params).await {
                Ok(stream) => {
                    let mut stream = stream.lines();
                    while let Some(Ok(line)) = stream.next().await {
                        if lines
                            .send(printer.format(&process, &name, &line))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    break;
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        let _ = ended.send(name);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), 30);
        assert_eq!(parse_duration("10m").unwrap(), 600);
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert_eq!(parse_duration("1d").unwrap(), 86400);
        assert_eq!(parse_duration("45").unwrap(), 45);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn lines_are_prefixed_with_type_and_pod() {
        let p = LinePrinter {
            raw: false,
            color: false,
        };
        assert_eq!(p.format("web", "shop-web-1", "hi"), "web[shop-web-1]: hi\n");
        let raw = LinePrinter {
            raw: true,
            color: false,
        };
        assert_eq!(raw.format("web", "shop-web-1", "hi"), "hi\n");
    }
}
