//! Following a build: wait for its pod to start (saying why it does not), stream its log to
//! the pusher line by line as it is written, and read the result from the container's
//! termination message.
//!
//! The log is followed with timestamps so that, if the API server or kubelet drops the
//! stream while the build still runs, it is reopened from the last line seen without
//! repeating or losing lines.

use std::time::Duration;

use flynn_builder::build::BuildResult;
use futures::AsyncBufReadExt;
use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{ContainerStateTerminated, Pod},
    },
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ListParams, LogParams},
};
use tokio::time::Instant;

use super::{
    Error, Progress,
    job::{BUILD_LABEL, CONTAINER},
};

/// How often pod and Job status are read while waiting for a start or an end.
const POLL: Duration = Duration::from_millis(500);
/// How long a terminated container's status may take to carry its termination message
/// after its log ended.
const END_GRACE: Duration = Duration::from_secs(60);
/// How often in a row a dropped log stream is reopened without a new line before giving up.
const MAX_REOPENS: u32 = 10;

/// Follows the build Job `job` in `namespace` to its end; the build's result.
pub async fn follow(
    client: &kube::Client,
    namespace: &str,
    job: &str,
    start_timeout: Duration,
    build_timeout: Duration,
    out: &Progress<'_>,
) -> Result<BuildResult, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let watch = Watch {
        pods: &pods,
        jobs: &jobs,
        job,
        build_timeout,
    };
    let pod = watch.started(start_timeout, out).await?;
    stream(&pods, &pod, out).await?;
    let terminated = watch.terminated(&pod).await?;
    result(job, &terminated)
}

struct Watch<'a> {
    pods: &'a Api<Pod>,
    jobs: &'a Api<Job>,
    job: &'a str,
    build_timeout: Duration,
}

/// What the pod of a build is doing.
#[derive(Debug, PartialEq)]
enum PodState {
    /// No pod yet, or it is being scheduled or created: the message says why, if known.
    Pending(Option<String>),
    /// It can never start.
    Stuck(String),
    /// Its container runs or has run: its log can be read.
    Started,
}

impl Watch<'_> {
    async fn pod(&self) -> Result<Option<Pod>, Error> {
        let list = self
            .pods
            .list(&ListParams::default().labels(&format!("{BUILD_LABEL}={}", self.job)))
            .await
            .map_err(Error::kube(format!(
                "reading the pod of build Job {}",
                self.job
            )))?;
        Ok(list.items.into_iter().next())
    }

    /// The Job's failure, if the Job controller declared one (deadline, pod gone).
    async fn job_failure(&self) -> Result<Option<Error>, Error> {
        let job = self
            .jobs
            .get_opt(self.job)
            .await
            .map_err(Error::kube(format!("reading build Job {}", self.job)))?;
        let Some(job) = job else {
            return Ok(Some(Error::BuildLost {
                job: self.job.to_owned(),
                reason: "the build Job was deleted".into(),
            }));
        };
        let failed = job
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Failed" && c.status == "True");
        Ok(failed.map(|c| match c.reason.as_deref() {
            Some("DeadlineExceeded") => Error::BuildTimedOut {
                limit: self.build_timeout,
            },
            _ => Error::BuildFailed {
                reason: c
                    .message
                    .unwrap_or_else(|| c.reason.unwrap_or_else(|| "the build Job failed".into())),
            },
        }))
    }

    /// Waits until the build container has started; its pod's name.
    async fn started(&self, timeout: Duration, out: &Progress<'_>) -> Result<String, Error> {
        let deadline = Instant::now() + timeout;
        let mut said = None;
        loop {
            let pod = self.pod().await?;
            match (pod_state(pod.as_ref()), pod) {
                (PodState::Started, Some(p)) => return Ok(p.metadata.name.unwrap_or_default()),
                (PodState::Stuck(reason), _) => return Err(Error::BuildNotStarted { reason }),
                (PodState::Pending(why), _) => {
                    if let Some(why) = why
                        && said.as_ref() != Some(&why)
                    {
                        out.line(format!("-----> Waiting for the build to start: {why}"))
                            .await;
                        said = Some(why);
                    }
                }
                (PodState::Started, None) => {}
            }
            if let Some(e) = self.job_failure().await? {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(Error::BuildNotStarted {
                    reason: format!(
                        "its pod did not start within {}s{}. Ask the platform operator to check the cluster's capacity (kubectl describe job {})",
                        timeout.as_secs(),
                        said.map(|s| format!(" ({s})")).unwrap_or_default(),
                        self.job
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for the build container's end; its terminated state.
    async fn terminated(&self, pod_name: &str) -> Result<ContainerStateTerminated, Error> {
        let deadline = Instant::now() + END_GRACE;
        loop {
            let pod = self.pod().await?;
            if let Some(t) = pod.as_ref().and_then(terminated) {
                return Ok(t);
            }
            if let Some(e) = self.job_failure().await? {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(Error::BuildLost {
                    job: self.job.to_owned(),
                    reason: format!(
                        "its log ended but pod {pod_name} did not report how the build ended"
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn container_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)
}

fn terminated(pod: &Pod) -> Option<ContainerStateTerminated> {
    container_status(pod)?.state.as_ref()?.terminated.clone()
}

/// Where a build pod stands, and why it waits (pure).
fn pod_state(pod: Option<&Pod>) -> PodState {
    let Some(pod) = pod else {
        return PodState::Pending(None);
    };
    if let Some(c) = container_status(pod) {
        let state = c.state.as_ref();
        if state.is_some_and(|s| s.running.is_some() || s.terminated.is_some()) {
            return PodState::Started;
        }
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            let message = w.message.clone().unwrap_or_default();
            let detail = if message.is_empty() {
                reason.clone()
            } else {
                format!("{reason}: {message}")
            };
            return match reason.as_str() {
                "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" | "InvalidImageName" => {
                    PodState::Stuck(format!(
                        "the slugbuilder image {} cannot be pulled ({detail}). Ask the platform operator to check the receiver's slugbuilder image setting",
                        c.image
                    ))
                }
                "ContainerCreating" | "PodInitializing" | "" => PodState::Pending(None),
                _ => PodState::Pending(Some(detail)),
            };
        }
    }
    let unschedulable = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
        .map(|c| {
            format!(
                "not scheduled yet: {}",
                c.message.as_deref().unwrap_or("no reason given")
            )
        });
    PodState::Pending(unschedulable)
}

/// Where the log stream stands, so a reopened stream (which the API server starts at
/// a whole second, `sinceTime`) repeats no line and loses none.
#[derive(Debug, Default)]
struct Position {
    /// The timestamp of the last line shown.
    last: Option<Timestamp>,
    /// How many lines with exactly that timestamp were shown (lines read in one chunk by
    /// the runtime can share one).
    at_last: usize,
    /// Lines at `last` still to skip in the current stream.
    skip_at_last: usize,
}

impl Position {
    /// A new stream starts (from `last`, if any).
    fn reopen(&mut self) {
        self.skip_at_last = self.at_last;
    }

    /// Whether a line stamped `ts` is new; records it if so.
    fn admit(&mut self, ts: Option<Timestamp>) -> bool {
        let (Some(ts), Some(last)) = (ts, self.last) else {
            if ts.is_some() {
                (self.last, self.at_last) = (ts, 1);
            }
            return true;
        };
        if ts < last {
            return false;
        }
        if ts == last {
            if self.skip_at_last > 0 {
                self.skip_at_last -= 1;
                return false;
            }
            self.at_last += 1;
            return true;
        }
        (self.last, self.at_last, self.skip_at_last) = (Some(ts), 1, 0);
        true
    }
}

/// Streams the build container's log to `out` until it ends.
async fn stream(pods: &Api<Pod>, pod: &str, out: &Progress<'_>) -> Result<(), Error> {
    let mut pos = Position::default();
    // Reopens that brought no new line; a quiet build may outlast the client's read
    // timeout now and then, which is not a reason to give up.
    let mut fruitless = 0;
    loop {
        let params = LogParams {
            container: Some(CONTAINER.into()),
            follow: true,
            timestamps: true,
            since_time: pos.last,
            ..Default::default()
        };
        pos.reopen();
        let mut shown = 0usize;
        match pods.log_stream(pod, &params).await {
            Ok(reader) => {
                let mut reader = Box::pin(reader);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(pod, error = %e, "the build log stream broke");
                            break;
                        }
                    }
                    let line = String::from_utf8_lossy(&buf);
                    let (ts, text) = split_timestamp(line.trim_end_matches(['\n', '\r']));
                    if pos.admit(ts) {
                        out.line(text.to_owned()).await;
                        shown += 1;
                    }
                }
            }
            // A container that has just started may refuse its log for a moment.
            Err(e) => tracing::debug!(pod, error = %e, "opening the build log failed"),
        }
        // The stream ends when the container does, or when a connection drops: only the
        // pod can tell which.
        let current = pods
            .get_opt(pod)
            .await
            .map_err(Error::kube(format!("reading build pod {pod}")))?;
        match current {
            Some(p) if terminated(&p).is_none() => {}
            _ => return Ok(()),
        }
        fruitless = if shown == 0 { fruitless + 1 } else { 0 };
        if fruitless > MAX_REOPENS {
            return Err(Error::Logs {
                pod: pod.to_owned(),
                source: std::io::Error::other("the log stream kept dropping"),
            });
        }
        tracing::info!(pod, "the build log stream ended early; reopening it");
        tokio::time::sleep(POLL).await;
    }
}

/// Splits the RFC 3339 timestamp the kubelet puts before each line (`timestamps=true`).
fn split_timestamp(line: &str) -> (Option<Timestamp>, &str) {
    match line.split_once(' ') {
        Some((ts, rest)) => match ts.parse::<Timestamp>() {
            Ok(t) => (Some(t), rest),
            Err(_) => (None, line),
        },
        // A line with only a timestamp is an empty line of output.
        None => match line.parse::<Timestamp>() {
            Ok(t) => (Some(t), ""),
            Err(_) => (None, line),
        },
    }
}

/// What the slugbuilder wrote as its termination message.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Outcome {
    Failed { error: String },
    Built(BuildResult),
}

/// The build's result from its container's end (pure).
fn result(job: &str, t: &ContainerStateTerminated) -> Result<BuildResult, Error> {
    let message = t.message.as_deref().unwrap_or("").trim();
    match serde_json::from_str::<Outcome>(message) {
        Ok(Outcome::Built(r)) if t.exit_code == 0 => Ok(r),
        Ok(Outcome::Failed { error }) => Err(Error::BuildFailed { reason: error }),
        _ => {
            let reason = t.reason.as_deref().unwrap_or("");
            let hint = match reason {
                "OOMKilled" => {
                    ": it ran out of memory. Make the build use less, or ask the platform operator to raise the build memory limit"
                }
                _ => "",
            };
            if t.exit_code == 0 {
                Err(Error::BuildLost {
                    job: job.to_owned(),
                    reason: format!(
                        "the slugbuilder succeeded but its result is unreadable ({message:?})"
                    ),
                })
            } else {
                Err(Error::BuildFailed {
                    reason: format!(
                        "the slugbuilder exited with code {}{}{hint}",
                        t.exit_code,
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(" ({reason})")
                        }
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "b-1"}, "status": status})).unwrap()
    }

    #[test]
    fn pending_pods_say_why_and_pull_errors_are_final() {
        assert_eq!(pod_state(None), PodState::Pending(None));
        let p = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False", "message": "0/1 nodes: insufficient memory"}]}),
        );
        assert_eq!(
            pod_state(Some(&p)),
            PodState::Pending(Some(
                "not scheduled yet: 0/1 nodes: insufficient memory".into()
            ))
        );
        let p = pod(
            json!({"containerStatuses": [{"name": CONTAINER, "image": "localhost/flynn-slugbuilder:x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "image not present"}}}]}),
        );
        let PodState::Stuck(msg) = pod_state(Some(&p)) else {
            panic!()
        };
        assert!(msg.contains("localhost/flynn-slugbuilder:x cannot be pulled (ErrImageNeverPull: image not present)"), "{msg}");
        let p = pod(
            json!({"containerStatuses": [{"name": CONTAINER, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(pod_state(Some(&p)), PodState::Pending(None));
        let p = pod(
            json!({"containerStatuses": [{"name": CONTAINER, "image": "x", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}}}]}),
        );
        assert_eq!(pod_state(Some(&p)), PodState::Started);
    }

    #[test]
    fn log_timestamps_are_split_off() {
        let (ts, text) = split_timestamp("2026-11-26T01:02:03.123456789Z -----> Building app...");
        assert_eq!(text, "-----> Building app...");
        assert_eq!(ts.unwrap().to_string(), "2026-11-26T01:02:03.123456789Z");
        assert_eq!(split_timestamp("2026-11-26T01:02:03Z").1, "");
        assert_eq!(
            split_timestamp("no timestamp here"),
            (None, "no timestamp here")
        );
    }

    #[test]
    fn a_reopened_stream_repeats_and_loses_no_line() {
        let t = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        let mut pos = Position::default();
        // Two lines of one chunk share a timestamp: both are shown.
        assert!(pos.admit(t("2026-11-26T01:00:00.5Z")));
        assert!(pos.admit(t("2026-11-26T01:00:01.1Z")));
        assert!(pos.admit(t("2026-11-26T01:00:01.1Z")));
        // Reopened from 01:00:01: the server repeats that second.
        pos.reopen();
        assert!(!pos.admit(t("2026-11-26T01:00:01.0Z")));
        assert!(!pos.admit(t("2026-11-26T01:00:01.1Z")));
        assert!(!pos.admit(t("2026-11-26T01:00:01.1Z")));
        // A third line of that same chunk arrived only now: shown.
        assert!(pos.admit(t("2026-11-26T01:00:01.1Z")));
        assert!(pos.admit(t("2026-11-26T01:00:02Z")));
        assert!(pos.admit(None), "an unstamped line is always shown");
    }

    fn ended(code: i32, reason: &str, message: &str) -> ContainerStateTerminated {
        ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.into()),
            message: Some(message.into()),
            ..Default::default()
        }
    }

    #[test]
    fn results_and_failures_come_from_the_termination_message() {
        let ok = result(
            "j",
            &ended(
                0,
                "Completed",
                r#"{"url":"http://s/x?sig=1","sha256":"ab","size":3,"process_types":{"web":"bin/web"},"buildpack":"Procfile","duration_seconds":1.5}"#,
            ),
        )
        .unwrap();
        assert_eq!(ok.process_types["web"], "bin/web");
        let Err(Error::BuildFailed { reason }) = result(
            "j",
            &ended(1, "Error", r#"{"error": "no buildpack detected the app"}"#),
        ) else {
            panic!()
        };
        assert_eq!(reason, "no buildpack detected the app");
        let e = result("j", &ended(137, "OOMKilled", "")).unwrap_err();
        assert!(
            e.to_string()
                .contains("exited with code 137 (OOMKilled): it ran out of memory"),
            "{e}"
        );
        assert!(matches!(
            result("j", &ended(0, "Completed", "garbage")),
            Err(Error::BuildLost { .. })
        ));
    }
}
