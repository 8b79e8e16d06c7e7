//! A pod the CLI starts, talks to and deletes: `flynn run`'s one-off pods, and the client
//! pods of `flynn pg psql|dump|restore` and `flynn redis-cli`.
//!
//! With a TTY the container is attached over the API server's websocket, in raw mode, with
//! window resizes forwarded. Otherwise its output is streamed from its log, which (unlike an
//! attach) loses nothing printed before the stream opens, and input goes in through an attach
//! of stdin alone. The container's exit code is read from the pod's status once it ends.
//! Whatever happens (an error, Ctrl-C) the pod is deleted.

use std::time::Duration;

use flynn_crds::pod_security;
use futures::{AsyncBufReadExt, SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, DeleteParams, LogParams, PostParams, TerminalSize};
use kube::{Api, ResourceExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::context::Ctx;
use crate::errors::{Error, Result, exit};
use crate::output;
use crate::progress::Progress;

/// The container name of the pods the CLI starts.
pub const CONTAINER: &str = "run";

/// How the user's terminal is wired to the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// A TTY: raw mode, keys in, screen out.
    Tty,
    /// Output from the log, our stdin copied into the container's (then closed).
    PipeStdin,
    /// Output from the log only.
    OutputOnly,
}

impl Io {
    /// What this process's stdin and stdout allow: a TTY when both are terminals, piped or
    /// redirected input forwarded otherwise (a closed stdin or /dev/null, as in CI, is not,
    /// so such a pod never waits for input).
    pub fn detect() -> Io {
        use std::io::IsTerminal;
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            Io::Tty
        } else if stdin_is_pipe_or_file() {
            Io::PipeStdin
        } else {
            Io::OutputOnly
        }
    }

    /// Whether the container needs `tty: true`.
    pub fn tty(self) -> bool {
        self == Io::Tty
    }

    /// Whether the container needs its stdin kept open for one attach.
    pub fn stdin(self) -> bool {
        self != Io::OutputOnly
    }
}

/// Creates `pod`; returns its API and name.
pub async fn create(ctx: &Ctx, pod: &Pod, what: &str) -> Result<(Api<Pod>, String)> {
    let api = ctx.api::<Pod>();
    let pod = api
        .create(&PostParams::default(), pod)
        .await
        .map_err(Error::kube(format!("creating the {what} pod")))?;
    let name = pod.name_any();
    Ok((api, name))
}

/// Runs `session` on the pod `name`, then deletes the pod however the session ended
/// (its result, an error, or Ctrl-C, which is [`Error::Interrupted`]).
pub async fn with_pod<T>(
    api: &Api<Pod>,
    name: &str,
    session: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let result = tokio::select! {
        result = session => result,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    };
    delete(api, name).await;
    result
}

/// Deletes the pod at once (best effort: it ended, or the user is leaving).
pub async fn delete(api: &Api<Pod>, name: &str) {
    let _ = api
        .delete(name, &DeleteParams::background().grace_period(0))
        .await;
}

/// Creates `pod`, wires the terminal to it as `io` says, deletes it; its exit code.
pub async fn run_interactive(
    ctx: &Ctx,
    pod: &Pod,
    what: &str,
    io: Io,
    timeout: Duration,
) -> Result<u8> {
    let (api, name) = create(ctx, pod, what).await?;
    with_pod(&api, &name, attach_or_stream(ctx, &api, &name, io, timeout)).await
}

/// Waits for the container, connects the terminal as `io` says; the exit code.
pub async fn attach_or_stream(
    ctx: &Ctx,
    api: &Api<Pod>,
    name: &str,
    io: Io,
    timeout: Duration,
) -> Result<u8> {
    wait_started(ctx, api, name, timeout).await?;
    match io {
        Io::Tty => match attach_tty(api, name).await {
            Ok(()) => {}
            // The command may have ended before we could attach; its log still has everything.
            Err(_) => stream_log(api, name).await?,
        },
        Io::PipeStdin => {
            // Output from the log (which misses nothing), input through an attach of stdin alone.
            let (output, ()) = tokio::join!(
                stream_log(api, name),
                feed_stdin(api, name, tokio::io::stdin())
            );
            output?;
        }
        Io::OutputOnly => stream_log(api, name).await?,
    }
    exit_code(api, name).await
}

/// Whether stdin is a pipe or a file (`... | flynn run`, `flynn run < f`).
fn stdin_is_pipe_or_file() -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata("/dev/stdin")
        .is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_file())
}

/// Copies `input` into the container's stdin, then closes it (EOF). A command that exits
/// without reading it is fine: the attach just fails or ends.
pub async fn feed_stdin(api: &Api<Pod>, name: &str, mut input: impl AsyncRead + Unpin) {
    let params = AttachParams::default()
        .container(CONTAINER)
        .stdin(true)
        .stdout(false)
        .stderr(false);
    let Ok(mut attached) = api.attach(name, &params).await else {
        return;
    };
    if let Some(mut writer) = attached.stdin() {
        let _ = tokio::io::copy(&mut input, &mut writer).await;
        let _ = writer.shutdown().await;
    }
    let _ = attached.join().await;
}

/// Waits until the container runs (or already ended); fails fast on what will not fix itself.
pub async fn wait_started(ctx: &Ctx, api: &Api<Pod>, name: &str, timeout: Duration) -> Result<()> {
    let progress = Progress::start(ctx.ui, format!("starting pod {name}"));
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
                what: format!("pod {name} to start"),
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

/// A failure to attach to pod `name`.
pub fn attach_error(name: &str, problem: &str) -> Error {
    Error::RunFailed {
        pod: name.to_owned(),
        reason: format!("attaching: {problem}"),
    }
}

/// Copies the pod's whole log (stdout and stderr, merged) to stdout until it ends.
pub async fn stream_log(api: &Api<Pod>, name: &str) -> Result<()> {
    stream_log_to(api, name, |line| output::print_out(&format!("{line}\n"))).await
}

/// Hands each line of the pod's whole log (stdout and stderr, merged) to `each` until it ends.
pub async fn stream_log_to(
    api: &Api<Pod>,
    name: &str,
    mut each: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
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
        each(&line)?;
    }
    Ok(())
}

/// The container's exit code, once the kubelet has reported it (0..=255).
pub async fn exit_code(api: &Api<Pod>, name: &str) -> Result<u8> {
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
