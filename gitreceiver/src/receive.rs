//! Runs `git receive-pack` for a push, wired to the SSH channel: channel data → its stdin,
//! its stdout → channel data, its stderr → extended data (stderr). It runs in a process
//! group of its own, and the whole group (hooks included) is stopped if the client goes
//! away, or sends more than the push limit.
//!
//! git is told to stream large objects (`core.bigFileThreshold`, inherited by the
//! `index-pack` or `unpack-objects` it runs): with git's default, 512 MiB, a file below that
//! is held whole in memory while it is unpacked, in the receiver's container.
//!
//! What git cannot stream is a delta: a pack may send a file as a delta against another
//! (a 900 MiB file of zeros, then the same with one byte more: a few KB of pack), and git
//! rebuilds it in memory next to its base. So receive-pack starts under a memory limit
//! (`RLIMIT_DATA`, `--max-git-memory`), inherited by everything it runs: past it git's
//! allocation fails, that git process exits, and this push alone fails, with a line saying
//! which limit it hit. Why `RLIMIT_DATA` and not `RLIMIT_AS`: it counts what can become
//! resident (heap, anonymous and writable private mappings) and not git's read-only mmaps
//! of packs, nor the address space glibc reserves for each thread's arena (64 MiB each,
//! never touched), so one figure means the same for a big repository and a small one.
//! Why not a cgroup per push: the receiver runs unprivileged, without a delegated cgroup.
//! The limit is set by this binary itself (`flynn-gitreceiver limited-exec`), which then
//! execs git: the workspace forbids `unsafe`, which a `pre_exec` would need.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use crate::metrics::Metrics;
use crate::settings::Settings;

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
    /// receive-pack exited with this status after a git process of the push ran out of
    /// its memory limit (`--max-git-memory`); the client was told why.
    OutOfMemory(u32),
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

/// The line a client whose push took git past `limit` bytes of memory reads.
pub fn out_of_memory_message(limit: u64) -> String {
    format!(
        "flynn: git ran out of memory unpacking this push: each git process of a push may use {}, the receiver's limit. git rebuilds a file it received as a delta against another in memory, next to that other file (about twice the file's size): keep large files out of the repository (git sends a changed file as a delta against its earlier version), or ask the platform operator to raise --max-git-memory (FLYNN_MAX_GIT_MEMORY; chart value gitreceiver.maxGitMemory)\n",
        flynn_builder::output::human_size(limit)
    )
}

/// What git prints when an allocation fails: `xmalloc`'s "Out of memory, malloc failed",
/// `xmmap`'s "mmap failed: Cannot allocate memory", a thread whose stack cannot be mapped.
const OUT_OF_MEMORY_MARKERS: [&[u8]; 3] = [
    b"Out of memory",
    b"Cannot allocate memory",
    b"unable to create thread",
];

/// The subcommand of this binary that sets the memory limit and execs git.
pub const LIMITED_EXEC: &str = "limited-exec";

/// The command line that runs `git receive-pack <repo_dir>` under the push's memory limit:
/// `<this binary> limited-exec --max-data-bytes N -- git -c ... receive-pack <repo_dir>`.
fn receive_pack(settings: &Settings, repo_dir: &Path) -> Command {
    let limit = settings.max_git_memory;
    let mut cmd = Command::new(&settings.hook_program);
    cmd.arg(LIMITED_EXEC)
        .arg(format!("--max-data-bytes={limit}"))
        .arg("--")
        .arg(&settings.git_program)
        .arg("-c")
        .arg(format!(
            "core.bigFileThreshold={}",
            crate::pipeline::archive::GIT_STREAM_THRESHOLD
        ))
        // git keeps delta bases it may need again, up to 96 MiB by default: a quarter of
        // the limit leaves the rest to the objects being rebuilt.
        .arg("-c")
        .arg(format!("core.deltaBaseCacheLimit={}", limit / 4))
        .arg("receive-pack")
        .arg(repo_dir);
    cmd
}

/// `limited-exec`: limits this process's writable memory to `max_data_bytes`
/// (`RLIMIT_DATA`, soft and hard, so git cannot raise it) and replaces it with `command`,
/// which keeps the limit, as does everything it starts. Returns only on failure.
pub fn limited_exec(max_data_bytes: u64, command: &[OsString]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = command.split_first() else {
        return std::io::Error::other("limited-exec: no command given");
    };
    if let Err(e) = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_DATA,
        max_data_bytes,
        max_data_bytes,
    ) {
        return std::io::Error::other(format!("limited-exec: setting RLIMIT_DATA: {e}"));
    }
    std::process::Command::new(program).args(args).exec()
}

/// Runs `git receive-pack <repo_dir>`; a client sending more than `--max-push-bytes` is
/// stopped, and git runs under `--max-git-memory`.
pub async fn run(
    settings: &Settings,
    repo_dir: &Path,
    env: &[(&str, String)],
    rx: &mut ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    metrics: &Metrics,
) -> Ended {
    let max_bytes = settings.max_push_bytes;
    let home = &settings.repos_dir;
    let mut cmd = receive_pack(settings, repo_dir);
    cmd
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

    // git's own error reaches the client as it is (in side-band 2, inside stdout, or on
    // stderr); both are watched for it so the client is told which limit it was.
    let out_of_memory = AtomicBool::new(false);
    let outputs = async {
        tokio::try_join!(
            copy_out(stdout, &out_of_memory, |b| tx.data_bytes(b)),
            copy_out(stderr, &out_of_memory, |b| tx.extended_data_bytes(1, b)),
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
    let code = match status {
        Ok(s) => exit_code(s),
        Err(_) => 1,
    };
    if out_of_memory.load(Ordering::Relaxed) {
        let limit = settings.max_git_memory;
        tracing::info!(limit, "git ran out of --max-git-memory unpacking the push");
        let _ = tx
            .extended_data_bytes(1, Bytes::from(out_of_memory_message(limit)))
            .await;
        return Ended::OutOfMemory(code);
    }
    Ended::Exited(code)
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

/// Copies `pipe` to the client with `send`, setting `out_of_memory` when git says an
/// allocation failed.
async fn copy_out<R, F, Fut>(
    pipe: Option<R>,
    out_of_memory: &AtomicBool,
    mut send: F,
) -> Result<(), russh::Error>
where
    R: AsyncRead + Unpin,
    F: FnMut(Bytes) -> Fut,
    Fut: Future<Output = Result<(), russh::Error>>,
{
    let Some(mut pipe) = pipe else { return Ok(()) };
    let mut buf = vec![0u8; CHUNK];
    let mut watch = MarkerWatch::default();
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => {
                if watch.saw_in(&buf[..n]) {
                    out_of_memory.store(true, Ordering::Relaxed);
                }
                send(Bytes::copy_from_slice(&buf[..n])).await?
            }
        }
    }
}

/// Finds [`OUT_OF_MEMORY_MARKERS`] in a stream read in chunks, also across two chunks.
#[derive(Debug, Default)]
struct MarkerWatch {
    /// The end of the previous chunk, shorter than the longest marker.
    tail: Vec<u8>,
}

impl MarkerWatch {
    fn saw_in(&mut self, chunk: &[u8]) -> bool {
        let longest = OUT_OF_MEMORY_MARKERS
            .iter()
            .map(|m| m.len())
            .max()
            .unwrap_or(0);
        let mut hay = std::mem::take(&mut self.tail);
        hay.extend_from_slice(chunk);
        let found = OUT_OF_MEMORY_MARKERS
            .iter()
            .any(|m| hay.windows(m.len()).any(|w| w == *m));
        let keep = hay.len().min(longest - 1);
        self.tail = hay.split_off(hay.len() - keep);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_running_out_of_memory_is_seen_across_chunks() {
        let mut w = MarkerWatch::default();
        assert!(!w.saw_in(b"0040\x02remote: Resolving deltas: 100% (1/1)\n"));
        assert!(!w.saw_in(b"\x02fatal: Out of me"));
        assert!(w.saw_in(b"mory, malloc failed (tried to allocate 943718401 bytes)\n"));
        let mut w = MarkerWatch::default();
        assert!(w.saw_in(b"fatal: mmap failed: Cannot allocate memory"));
        // The twin: a normal push's output.
        let mut w = MarkerWatch::default();
        for chunk in [
            &b"000eunpack ok\n"[..],
            b"0019ok refs/heads/main\n",
            b"0000",
        ] {
            assert!(!w.saw_in(chunk));
        }
    }

    #[test]
    fn the_message_names_the_limit_and_how_to_raise_it() {
        let m = out_of_memory_message(256 << 20);
        assert!(m.contains("256.0M"), "{m}");
        assert!(
            m.contains(
                "--max-git-memory (FLYNN_MAX_GIT_MEMORY; chart value gitreceiver.maxGitMemory)"
            ),
            "{m}"
        );
    }
}
