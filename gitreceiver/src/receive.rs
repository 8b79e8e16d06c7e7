//! Runs `git receive-pack` for a push, wired to the SSH channel: channel data → its stdin,
//! its stdout → channel data, its stderr → extended data (stderr). It runs in a process
//! group of its own, and the whole group (hooks included) is stopped if the client goes
//! away.

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
    /// git could not be started.
    SpawnFailed(std::io::Error),
}

/// Runs `git receive-pack <repo_dir>`.
pub async fn run(
    git: &Path,
    repo_dir: &Path,
    home: &Path,
    env: &[(&str, String)],
    rx: &mut ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    metrics: &Metrics,
) -> Ended {
    let mut cmd = Command::new(git);
    cmd.arg("receive-pack")
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
    let mut input = Input { stdin };
    let client_gone = tokio::select! {
        // A failed write means the session is gone.
        r = outputs => r.is_err(),
        () = input.pump(rx, metrics) => true,
    };
    if client_gone {
        stop_group(&mut child, group).await;
        return Ended::ClientGone;
    }
    // Both pipes closed: receive-pack is exiting. Keep draining the channel meanwhile.
    let status = tokio::select! {
        s = child.wait() => s,
        () = input.pump(rx, metrics) => {
            stop_group(&mut child, group).await;
            return Ended::ClientGone;
        }
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
    tracing::info!("client went away: stopped git receive-pack and its hook");
}

/// Channel → child's stdin.
struct Input {
    stdin: Option<ChildStdin>,
}

impl Input {
    /// Returns when the client closed the channel or the connection; until then forwards
    /// data and EOF. Never stops reading, so the connection never stalls.
    async fn pump(&mut self, rx: &mut ChannelReadHalf, metrics: &Metrics) {
        loop {
            match rx.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    metrics.bytes_received.inc_by(data.len() as u64);
                    if let Some(stdin) = &mut self.stdin
                        && stdin.write_all(&data).await.is_err()
                    {
                        // receive-pack stopped reading (it is exiting): drop the rest.
                        self.stdin = None;
                    }
                }
                Some(ChannelMsg::Eof) => self.stdin = None,
                Some(ChannelMsg::Close) | None => return,
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
