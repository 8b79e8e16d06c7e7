//! Runs `git receive-pack` for a push, wired to the SSH channel: channel data → its stdin,
//! its stdout → channel data, its stderr → extended data (stderr). It runs in a process
//! group of its own, and the whole group (hooks included) is stopped if the client goes
//! away, or sends more than the push limit.
//!
//! git is told to stream large objects (`core.bigFileThreshold`, inherited by the
//! `index-pack` or `unpack-objects` it runs): with git's default, 512 MiB, a file below that
//! is held whole in memory while it is unpacked, in the receiver's container.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use crate::metrics::Metrics;

/// Bytes read from the child's pipes per channel message.
const CHUNK: usize = 64 * 1024;
/// How long the group has to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// How the receive ended.
#[derive(Debug)]
pub enum Ended {
    /// receive-pack exited with this status (128 + signal if killed).
    Exited(u32),
    /// The client closed the channel or the connection first; the group was stopped.
    ClientGone,
    /// The client sent more than the limit (bytes); the group was stopped and the
    /// client told why.
    TooLarge(u64),
    /// git could not be started.
    SpawnFailed(std::io::Error),
}

/// The line a client that sent more than `limit` bytes reads on its terminal.
pub fn too_large_message(limit: u64) -> String {
    format!(
        "flynn: this push is larger than {}, the receiver's limit for the data of one push: push fewer commits at once (`git push <remote> <commit>:main`, then the rest), keep large files out of the repository, or ask the platform operator to raise --max-push-bytes (FLYNN_MAX_PUSH_BYTES; chart value gitreceiver.maxPushBytes)\n",
        flynn_builder::output::human_size(limit)
    )
}

/// Runs `git receive-pack <repo_dir>`; a client sending more than `max_bytes` is stopped.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    git: &Path,
    repo_dir: &Path,
    home: &Path,
    env: &[(&str, String)],
    max_bytes: u64,
    rx: &mut ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    metrics: &Metrics,
) -> Ended {
    let mut cmd = Command::new(git);
    cmd.arg("-c")
        .arg(format!(
            "core.bigFileThreshold={}",
            crate::pipeline::archive::GIT_STREAM_THRESHOLD
        ))
        .arg("receive-pack")
        .arg(repo_dir)
        // Nothing of the receiver's environment (kube credentials, tokens) reaches git or
        // the hook but what they need.
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", home)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ended::SpawnFailed(e),
    };
    let group = child.id().map(|id| Pid::from_raw(id as i32));
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let outputs = async {
        tokio::try_join!(
            copy_out(stdout, |b| tx.data_bytes(b)),
            copy_out(stderr, |b| tx.extended_data_bytes(1, b)),
        )
    };
    let mut input = Input {
        stdin,
        received: 0,
        max_bytes,
    };
    let stopped = tokio::select! {
        // A failed write means the session is gone.
        r = outputs => r.is_err().then_some(Stop::ClientGone),
        stop = input.pump(rx, metrics) => Some(stop),
    };
    if let Some(stop) = stopped {
        return stop_for(stop, &mut child, group, tx).await;
    }
    // Both pipes closed: receive-pack is exiting. Keep draining the channel meanwhile.
    let status = tokio::select! {
        s = child.wait() => s,
        stop = input.pump(rx, metrics) => return stop_for(stop, &mut child, group, tx).await,
    };
    Ended::Exited(match status {
        Ok(s) => exit_code(s),
        Err(_) => 1,
    })
}

fn exit_code(status: std::process::ExitStatus) -> u32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u32,
        (None, Some(sig)) => 128 + sig as u32,
        _ => 1,
    }
}

/// Why the input stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    ClientGone,
    TooLarge(u64),
}

/// Stops the group for `stop`; a push over the limit is told why first (on stderr, which
/// ssh prints as it comes, while git is still sending).
async fn stop_for(
    stop: Stop,
    child: &mut Child,
    group: Option<Pid>,
    tx: &ChannelWriteHalf<Msg>,
) -> Ended {
    match stop {
        Stop::ClientGone => {
            stop_group(child, group).await;
            tracing::info!("client went away: stopped git receive-pack and its hook");
            Ended::ClientGone
        }
        Stop::TooLarge(limit) => {
            tracing::info!(
                limit,
                "push over --max-push-bytes: stopped git receive-pack"
            );
            let _ = tx
                .extended_data_bytes(1, Bytes::from(too_large_message(limit)))
                .await;
            stop_group(child, group).await;
            Ended::TooLarge(limit)
        }
    }
}

/// SIGTERM to the group (git removes its quarantine directory on it), SIGKILL after a grace.
async fn stop_group(child: &mut Child, group: Option<Pid>) {
    let Some(group) = group else { return };
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    } else {
        // The leader is gone; a straggler (the hook) must not outlive the push.
        let _ = killpg(group, Signal::SIGKILL);
    }
}

/// Channel → child's stdin, counted against the push limit.
struct Input {
    stdin: Option<ChildStdin>,
    received: u64,
    max_bytes: u64,
}

impl Input {
    /// Returns when the client closed the channel or the connection, or sent more than
    /// the limit; until then forwards data and EOF. Never stops reading, so the
    /// connection never stalls.
    async fn pump(&mut self, rx: &mut ChannelReadHalf, metrics: &Metrics) -> Stop {
        loop {
            match rx.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    metrics.bytes_received.inc_by(data.len() as u64);
                    self.received = self.received.saturating_add(data.len() as u64);
                    if self.received > self.max_bytes {
                        // Not one byte past the limit reaches git.
                        self.stdin = None;
                        return Stop::TooLarge(self.max_bytes);
                    }
                    if let Some(stdin) = &mut self.stdin
                        && stdin.write_all(&data).await.is_err()
                    {
                        // receive-pack stopped reading (it is exiting): drop the rest.
                        self.stdin = None;
                    }
                }
                Some(ChannelMsg::Eof) => self.stdin = None,
                Some(ChannelMsg::Close) | None => return Stop::ClientGone,
                Some(_) => {}
            }
        }
    }
}

/// Waits until the client closes the channel or the connection (for waits before
/// receive-pack starts; data sent meanwhile is dropped, as git sends none before the ref
/// advertisement).
pub async fn client_gone(rx: &mut ChannelReadHalf) {
    loop {
        match rx.wait().await {
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    }
}

async fn copy_out<R, F, Fut>(pipe: Option<R>, mut send: F) -> Result<(), russh::Error>
where
    R: AsyncRead + Unpin,
    F: FnMut(Bytes) -> Fut,
    Fut: Future<Output = Result<(), russh::Error>>,
{
    let Some(mut pipe) = pipe else { return Ok(()) };
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => send(Bytes::copy_from_slice(&buf[..n])).await?,
        }
    }
}
