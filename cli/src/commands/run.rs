//! `run [-d] [-e K=V] [--limits cpu=,memory=] -- CMD...`: a one-off pod of the current
//! release.
//!
//! The pod's container is built the way the operator builds a process's container (its
//! `formation::build::container` is private, so this repeats the few lines it needs): a slug
//! runs on the slugrunner image with `SLUG_URL`/`SLUG_SHA256` and the command as a literal
//! command line; an image runs with the command as its entrypoint. Both get the release's
//! env and `FLYNN_APP`/`FLYNN_RELEASE`/`FLYNN_PROCESS_TYPE=run`, and the same security
//! context (Pod Security "restricted": a slug runs as the slug user, an image as its own
//! user, never as root).
//!
//! With stdin and stdout on a terminal the pod gets a TTY, attached over the API server's
//! websocket, in raw mode, with window resizes forwarded. Otherwise the pod's output is
//! streamed from its log, which (unlike an attach) loses nothing printed before the stream
//! opens, and piped input goes in through an attach of stdin alone. Either way the command's
//! exit code becomes flynn's and the pod is deleted.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use flynn_crds::validation::validate_env_name;
use flynn_crds::{Release, labels, pod_security};
use futures::{AsyncBufReadExt, SinkExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{
    AttachParams, DeleteParams, ListParams, LogParams, ObjectMeta, PostParams, TerminalSize,
};
use kube::{Api, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ps::{ONE_OFF, RUN_TYPE};
use super::split_pair;
use crate::cli::RunArgs;
use crate::context::Ctx;
use crate::errors::{Error, Result, exit};
use crate::output::{self, note};
use crate::progress::Progress;

/// The container name of one-off pods.
pub const CONTAINER: &str = "run";

/// What a one-off pod runs.
#[derive(Debug, Clone)]
pub struct OneOff<'a> {
    pub app: &'a str,
    pub release: &'a Release,
    pub command: &'a [String],
    pub env: &'a [(String, String)],
    pub limits: &'a BTreeMap<String, Quantity>,
    pub tty: bool,
    /// Keep the container's stdin open for one attach (a TTY, or input piped to `flynn run`).
    pub stdin: bool,
    /// Required for slug releases.
    pub slugrunner_image: Option<&'a str>,
}

/// The one-off Pod (pure, unit-tested). `None` image means a slug release without a
/// slugrunner image.
pub fn one_off_pod(spec: &OneOff<'_>) -> Option<Pod> {
    let release_name = spec.release.name_any();
    let env_var = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    };
    let mut env: Vec<EnvVar> = spec
        .release
        .spec
        .env
        .iter()
        .map(|(k, v)| env_var(k, v))
        .collect();
    env.push(env_var("FLYNN_APP", spec.app));
    env.push(env_var("FLYNN_RELEASE", &release_name));
    env.push(env_var("FLYNN_PROCESS_TYPE", RUN_TYPE));
    let artifact = &spec.release.spec.artifact;
    // Pod Security "restricted", as the operator's processes: a slug as the slugrunner
    // image's user (it owns /app), an image as its own user, refused by the kubelet if root.
    let (image, command, args, user) = match (&artifact.slug, &artifact.image) {
        (Some(slug), _) => {
            env.push(env_var("SLUG_URL", &slug.url));
            env.push(env_var("SLUG_SHA256", &slug.sha256));
            // slugrunner runs anything but `start <type>` as a literal command line.
            (
                spec.slugrunner_image?.to_owned(),
                None,
                Some(spec.command.to_vec()),
                Some(pod_security::SLUG_USER),
            )
        }
        (None, Some(image)) => (image.clone(), Some(spec.command.to_vec()), None, None),
        (None, None) => return None,
    };
    // -e comes last, so it overrides the release's env (`env` wins over `envFrom` too).
    for (k, v) in spec.env {
        env.retain(|e| &e.name != k);
        env.push(env_var(k, v));
    }
    let mut pod_labels = BTreeMap::from([
        (labels::APP.to_owned(), spec.app.to_owned()),
        (labels::RELEASE.to_owned(), release_name.clone()),
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_FLYNN.to_owned(),
        ),
        (ONE_OFF.to_owned(), "true".to_owned()),
    ]);
    pod_labels.retain(|_, v| !v.is_empty());
    Some(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-run-", spec.app)),
            labels: Some(pod_labels),
            annotations: Some(BTreeMap::from([(
                "flynn.io/release-version".to_owned(),
                spec.release.spec.version.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(5),
            security_context: Some(pod_security::pod_security_context(user)),
            containers: vec![Container {
                name: CONTAINER.into(),
                image: Some(image),
                image_pull_policy: Some("IfNotPresent".into()),
                command,
                args,
                env: Some(env),
                // The release's config vars, from its snapshot Secret (never copied in).
                env_from: flynn_crds::config::env_from(spec.release),
                stdin: Some(spec.tty || spec.stdin),
                stdin_once: Some(spec.tty || spec.stdin),
                tty: Some(spec.tty),
                resources: (!spec.limits.is_empty()).then(|| ResourceRequirements {
                    limits: Some(spec.limits.clone()),
                    ..ResourceRequirements::default()
                }),
                security_context: Some(pod_security::container_security_context()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// Parses `cpu=500m,memory=512Mi` (names and quantities checked as `flynn limit` does).
pub fn parse_limits(text: &str) -> Result<BTreeMap<String, Quantity>> {
    super::limit::parse_quantities(
        text.split(',').filter(|p| !p.is_empty()),
        "flynn run --limits cpu=500m,memory=512Mi -- bash",
    )
}

/// Runs the command; returns the exit code to end with.
pub async fn run(ctx: &Ctx, args: &RunArgs) -> Result<u8> {
    let app = ctx.app().await?;
    let app_name = app.name_any();
    let release = ctx.current_release(&app).await?;
    let mut env = Vec::new();
    for pair in &args.env {
        let (k, v) = split_pair(pair, "flynn run -e DEBUG=1 -- bash")?;
        validate_env_name(k).map_err(|e| {
            Error::bad_argument(pair, e.to_string(), "flynn run -e DEBUG=1 -- bash")
        })?;
        env.push((k.to_owned(), v.to_owned()));
    }
    let limits = args
        .limits
        .as_deref()
        .map(parse_limits)
        .transpose()?
        .unwrap_or_default();
    let tty = !args.detach && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    // Input piped or redirected into `flynn run` is forwarded; a closed stdin or /dev/null
    // (a character device, as in CI) is not, so such a pod never waits for input.
    let stdin = !tty && !args.detach && stdin_is_pipe_or_file();
    let slugrunner = if release.spec.artifact.slug.is_some() {
        Some(slugrunner_image(ctx, &app_name).await?)
    } else {
        None
    };
    let pod = one_off_pod(&OneOff {
        app: &app_name,
        release: &release,
        command: &args.command,
        env: &env,
        limits: &limits,
        tty,
        stdin,
        slugrunner_image: slugrunner.as_deref(),
    })
    .ok_or_else(|| Error::RunFailed {
        pod: format!("{app_name}-run"),
        reason: format!("release {} has no artifact", release.name_any()),
    })?;
    let api = ctx.api::<Pod>();
    let pod = api
        .create(&PostParams::default(), &pod)
        .await
        .map_err(Error::kube("creating the one-off pod"))?;
    let name = pod.name_any();
    if args.detach {
        output::print_out(&format!("{name}\n"))?;
        return Ok(exit::OK);
    }

    // Whatever happens from here on (an error, Ctrl-C), the pod goes.
    let result = tokio::select! {
        result = attach_or_stream(ctx, &api, &name, (tty, stdin), Duration::from_secs(args.timeout)) => result,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    };
    let _ = api
        .delete(&name, &DeleteParams::background().grace_period(0))
        .await;
    result
}

async fn attach_or_stream(
    ctx: &Ctx,
    api: &Api<Pod>,
    name: &str,
    (tty, stdin): (bool, bool),
    timeout: Duration,
) -> Result<u8> {
    wait_started(ctx, api, name, timeout).await?;
    if tty {
        match attach_tty(api, name).await {
            Ok(()) => {}
            // The command may have ended before we could attach; its log still has everything.
            Err(_) => stream_log(api, name).await?,
        }
    } else if stdin {
        // Output from the log (which misses nothing), input through an attach of stdin alone.
        let (output, ()) = tokio::join!(stream_log(api, name), feed_stdin(api, name));
        output?;
    } else {
        stream_log(api, name).await?;
    }
    exit_code(api, name).await
}

/// Whether stdin is a pipe or a file (`... | flynn run`, `flynn run < f`).
fn stdin_is_pipe_or_file() -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata("/dev/stdin")
        .is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_file())
}

/// Copies our stdin into the container's, then closes it (EOF). A command that exits
/// without reading it is fine: the attach just fails or ends.
async fn feed_stdin(api: &Api<Pod>, name: &str) {
    let params = AttachParams::default()
        .container(CONTAINER)
        .stdin(true)
        .stdout(false)
        .stderr(false);
    let Ok(mut attached) = api.attach(name, &params).await else {
        return;
    };
    if let Some(mut writer) = attached.stdin() {
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut writer).await;
        let _ = writer.shutdown().await;
    }
    let _ = attached.join().await;
}

/// Waits until the container runs (or already ended); fails fast on what will not fix itself.
async fn wait_started(ctx: &Ctx, api: &Api<Pod>, name: &str, timeout: Duration) -> Result<()> {
    let progress = Progress::start(ctx.ui, format!("starting one-off pod {name}"));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let pod = api
            .get(name)
            .await
            .map_err(Error::kube(format!("getting pod {name}")))?;
        let status = pod.status.clone().unwrap_or_default();
        let state = status
            .container_statuses
            .as_ref()
            .and_then(|cs| cs.first())
            .and_then(|c| c.state.clone())
            .unwrap_or_default();
        if state.running.is_some() || state.terminated.is_some() {
            progress.done(None);
            return Ok(());
        }
        if let Some(waiting) = &state.waiting {
            let reason = waiting.reason.clone().unwrap_or_default();
            if matches!(
                reason.as_str(),
                "ErrImagePull"
                    | "ImagePullBackOff"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
                    | "ErrImageNeverPull"
            ) {
                let message = waiting.message.clone().unwrap_or_default();
                return Err(Error::RunFailed {
                    pod: name.to_owned(),
                    reason: pod_security::explain_non_root_refusal(&message)
                        .unwrap_or_else(|| format!("{reason}: {message}")),
                });
            }
        }
        if status.phase.as_deref() == Some("Failed") {
            return Err(Error::RunFailed {
                pod: name.to_owned(),
                reason: status.message.unwrap_or_else(|| "the pod failed".into()),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("one-off pod {name} to start"),
                after: timeout,
                hint: format!("`kubectl describe pod {name}` says why it is not running"),
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Restores the terminal on drop, however the session ends.
struct RawMode;

impl RawMode {
    fn enable() -> Result<Self> {
        crossterm::terminal::enable_raw_mode()
            .map_err(Error::io("putting the terminal in raw mode"))?;
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

fn terminal_size() -> Option<TerminalSize> {
    crossterm::terminal::size()
        .ok()
        .map(|(width, height)| TerminalSize { width, height })
}

async fn attach_tty(api: &Api<Pod>, name: &str) -> Result<()> {
    let mut attached = api
        .attach(name, &AttachParams::interactive_tty().container(CONTAINER))
        .await
        .map_err(Error::kube(format!("attaching to pod {name}")))?;
    let mut stdin = attached
        .stdin()
        .ok_or_else(|| attach_error(name, "no stdin"))?;
    let mut stdout = attached
        .stdout()
        .ok_or_else(|| attach_error(name, "no stdout"))?;
    let mut sizes = attached
        .terminal_size()
        .ok_or_else(|| attach_error(name, "no terminal size channel"))?;
    let raw = RawMode::enable()?;

    if let Some(size) = terminal_size() {
        let _ = sizes.send(size).await;
    }
    // SIGWINCH: the user resized the window; tell the pod's TTY.
    let resizes = tokio::spawn(async move {
        let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while winch.recv().await.is_some() {
            if let Some(size) = terminal_size()
                && sizes.send(size).await.is_err()
            {
                return;
            }
        }
    });
    let keys = tokio::spawn(async move {
        let mut input = tokio::io::stdin();
        let mut buf = [0u8; 1024];
        loop {
            match input.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stdin.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut out = tokio::io::stdout();
    let mut buf = [0u8; 8192];
    loop {
        match stdout.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).await.is_err() || out.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    resizes.abort();
    keys.abort();
    let _ = attached.join().await;
    drop(raw);
    Ok(())
}

fn attach_error(name: &str, problem: &str) -> Error {
    Error::RunFailed {
        pod: name.to_owned(),
        reason: format!("attaching: {problem}"),
    }
}

/// Copies the pod's whole log (stdout and stderr, merged) to stdout until it ends.
async fn stream_log(api: &Api<Pod>, name: &str) -> Result<()> {
    let params = LogParams {
        follow: true,
        container: Some(CONTAINER.into()),
        ..LogParams::default()
    };
    let mut lines = api
        .log_stream(name, &params)
        .await
        .map_err(Error::kube(format!("streaming the output of pod {name}")))?
        .lines();
    while let Some(line) = lines.next().await {
        let line = line.map_err(Error::io(format!("reading the output of pod {name}")))?;
        output::print_out(&format!("{line}\n"))?;
    }
    Ok(())
}

/// The container's exit code, once the kubelet has reported it (0..=255).
async fn exit_code(api: &Api<Pod>, name: &str) -> Result<u8> {
    for _ in 0..120 {
        let pod = api
            .get(name)
            .await
            .map_err(Error::kube(format!("getting pod {name}")))?;
        let terminated = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|cs| cs.into_iter().next())
            .and_then(|c| c.state)
            .and_then(|s| s.terminated);
        if let Some(t) = terminated {
            return Ok(u8::try_from(t.exit_code.rem_euclid(256)).unwrap_or(exit::FAILURE));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(Error::Timeout {
        what: format!("pod {name} to report its exit code"),
        after: Duration::from_secs(30),
        hint: format!("`kubectl describe pod {name}`"),
    })
}

/// The slugrunner image: the platform's setting, else what the operator put in this app's
/// Deployments (the operator's own flag, so always the right one).
async fn slugrunner_image(ctx: &Ctx, app: &str) -> Result<String> {
    let platform = ctx.platform().await;
    if let Some(image) = platform.slugrunner_image() {
        return Ok(image);
    }
    let deployments = ctx
        .api::<Deployment>()
        .list(&ListParams::default().labels(&format!("{}={app}", labels::APP)))
        .await
        .map_err(Error::kube(format!("listing the deployments of app {app}")))?;
    let image = deployments
        .items
        .iter()
        .filter_map(|d| d.spec.as_ref()?.template.spec.as_ref())
        .flat_map(|spec| spec.containers.iter())
        .find(|c| c.env.iter().flatten().any(|e| e.name == "SLUG_URL"))
        .and_then(|c| c.image.clone());
    match image {
        Some(image) => Ok(image),
        None => {
            note(
                ctx.ui,
                "the slugrunner image is neither in the platform ConfigMap nor in a running process of this app",
            );
            Err(Error::Platform {
                what: "the slugrunner image",
                problem: platform
                    .missing()
                    .map_or_else(|| "has no slugrunnerImage".to_owned(), str::to_owned),
                env: crate::platform::ENV_SLUGRUNNER_IMAGE,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release(artifact: serde_json::Value) -> Release {
        serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Release",
            "metadata": {"name": "shop-v3"},
            "spec": {"app": "shop", "version": 3, "artifact": artifact,
                     "env": {"GREETING": "hi", "DEBUG": "0"},
                     "processes": {"web": {"args": ["node", "server.js"], "ports": [{"port": 8080}]}}}
        }))
        .unwrap()
    }

    fn container(pod: &Pod) -> &Container {
        &pod.spec.as_ref().unwrap().containers[0]
    }

    fn env(c: &Container) -> Vec<(String, String)> {
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    /// Asserts the container-level fields Pod Security "restricted" checks; returns the
    /// pod-level security context.
    fn restricted(pod: &Pod) -> serde_json::Value {
        let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
        assert_eq!(
            spec["containers"][0]["securityContext"],
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
        );
        spec["securityContext"].clone()
    }

    #[test]
    fn an_image_release_runs_the_command_as_entrypoint() {
        let r = release(json!({"image": "localhost/flynn-smoke:1"}));
        let command = vec!["sh".to_owned(), "-c".into(), "echo hi".into()];
        let pod = one_off_pod(&OneOff {
            app: "shop",
            release: &r,
            command: &command,
            env: &[("DEBUG".into(), "1".into())],
            limits: &parse_limits("cpu=500m,memory=256Mi").unwrap(),
            tty: true,
            stdin: false,
            slugrunner_image: None,
        })
        .unwrap();
        let c = container(&pod);
        assert_eq!(c.image.as_deref(), Some("localhost/flynn-smoke:1"));
        assert_eq!(c.command.as_ref(), Some(&command));
        assert_eq!(c.args, None);
        assert_eq!(
            (c.tty, c.stdin, c.stdin_once),
            (Some(true), Some(true), Some(true))
        );
        assert_eq!(
            env(c),
            [
                ("GREETING", "hi"),
                ("FLYNN_APP", "shop"),
                ("FLYNN_RELEASE", "shop-v3"),
                ("FLYNN_PROCESS_TYPE", "run"),
                ("DEBUG", "1")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["memory"], Quantity("256Mi".into()));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[flynn_crds::labels::APP], "shop");
        assert_eq!(labels[ONE_OFF], "true");
        assert!(
            !labels.contains_key(flynn_crds::labels::PROCESS),
            "no Service or Deployment may select it"
        );
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("shop-run-"));
        // Pod Security "restricted", with the image's own user (none forced).
        assert_eq!(
            restricted(&pod),
            json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
        );
    }

    #[test]
    fn a_slug_release_runs_on_slugrunner_with_the_literal_command() {
        let r = release(
            json!({"slug": {"url": "http://shelf/s.tgz", "sha256": "a".repeat(64), "size": 1}}),
        );
        let command = vec!["bash".to_owned()];
        let spec = OneOff {
            app: "shop",
            release: &r,
            command: &command,
            env: &[],
            limits: &BTreeMap::new(),
            tty: false,
            stdin: false,
            slugrunner_image: Some("localhost/flynn-slugrunner:dev"),
        };
        let pod = one_off_pod(&spec).unwrap();
        let c = container(&pod);
        assert_eq!(c.image.as_deref(), Some("localhost/flynn-slugrunner:dev"));
        assert_eq!(c.command, None);
        assert_eq!(c.args.as_ref(), Some(&command));
        assert!(env(c).contains(&("SLUG_URL".into(), "http://shelf/s.tgz".into())));
        assert_eq!(c.tty, Some(false));
        // Pod Security "restricted", as the slug user (the owner of /app in the image).
        assert_eq!(
            restricted(&pod),
            json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                   "seccompProfile": {"type": "RuntimeDefault"}})
        );
        assert!(
            one_off_pod(&OneOff {
                slugrunner_image: None,
                ..spec
            })
            .is_none()
        );
    }

    #[test]
    fn bad_limits_say_why() {
        assert!(
            parse_limits("gpu=1")
                .unwrap_err()
                .to_string()
                .contains("\"gpu\" is not a resource")
        );
        assert!(parse_limits("cpu").is_err());
        assert!(
            parse_limits("memory=1GB")
                .unwrap_err()
                .to_string()
                .contains("not a quantity")
        );
    }
}
