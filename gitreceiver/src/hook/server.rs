//! The receiver's end of the hook socket: checks the pushed refs, runs the pipeline and
//! streams its output back to the hook.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::protocol::{RefUpdate, Reply, Request, ZERO_ID};
use crate::Push;
use crate::command::RepoPath;
use crate::keys::Identity;
use crate::locks::AppGuard;
use crate::metrics::Metrics;
use crate::outcome::PushOutcome;
use crate::pipeline::Pipeline;
use crate::settings::{HookMode, Settings};

/// How long the hook may take to send its request after connecting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request accepted (a push of many refs is refused anyway).
const MAX_REQUEST: usize = 1 << 20;

/// A push in progress, as the SSH side registered it.
#[derive(Debug)]
pub struct PushContext {
    pub repo: RepoPath,
    pub repo_dir: PathBuf,
    pub identity: Identity,
    /// Cancelled when the SSH session ends before the push does.
    pub cancel: CancellationToken,
    /// The App's lock; the pipeline keeps a clone until it has finished.
    pub lock: Arc<AppGuard>,
    /// The push's span (app, namespace, user; the commit is recorded here).
    pub span: tracing::Span,
    /// How the hook's part ended (deployed, refused, ...), set by the hook side; `None`
    /// when the hook ran no deploy.
    pub outcome: Mutex<Option<PushOutcome>>,
}

/// Why a set of ref updates is refused; `Display` is the line the pusher reads.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefRefusal {
    #[error("deleting {0} is not allowed: the deploy branch is what the app is built from")]
    Delete(String),
    #[error(
        "{ref_name} was not pushed: only {branches} deploys; push a branch with `git push <remote> <branch>:{first}`"
    )]
    NotDeployBranch {
        ref_name: String,
        branches: String,
        first: String,
    },
    #[error("push one deploy branch at a time (got {0})")]
    Several(String),
    #[error("no ref to update")]
    Nothing,
}

/// The one update to build, or why the push is refused. All-or-nothing, as pre-receive is.
pub fn check_updates<'a>(
    settings: &Settings,
    updates: &'a [RefUpdate],
) -> Result<&'a RefUpdate, RefRefusal> {
    if let Some(u) = updates.iter().find(|u| u.is_delete()) {
        return Err(RefRefusal::Delete(u.ref_name.clone()));
    }
    if let Some(u) = updates
        .iter()
        .find(|u| !settings.is_deploy_ref(&u.ref_name))
    {
        return Err(RefRefusal::NotDeployBranch {
            ref_name: u.ref_name.clone(),
            branches: settings.deploy_branches.join(" or "),
            first: settings
                .deploy_branches
                .first()
                .cloned()
                .unwrap_or_default(),
        });
    }
    match updates {
        [] => Err(RefRefusal::Nothing),
        [one] => Ok(one),
        many => Err(RefRefusal::Several(
            many.iter()
                .map(|u| u.ref_name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// The hook socket's server and the table of pushes in progress.
#[derive(Debug)]
pub struct HookServer {
    settings: Arc<Settings>,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    pushes: Mutex<HashMap<String, Arc<PushContext>>>,
}

/// Keeps a push registered; unregisters on drop.
#[derive(Debug)]
pub struct Registration {
    server: Arc<HookServer>,
    pub token: String,
    pub context: Arc<PushContext>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.server
            .pushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.token);
    }
}

impl HookServer {
    pub fn new(
        settings: Arc<Settings>,
        pipeline: Arc<Pipeline>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            pipeline,
            metrics,
            pushes: Mutex::default(),
        })
    }

    /// Registers a push under a new random token (256 bits) for the hook to present.
    pub fn register(self: &Arc<Self>, context: PushContext) -> Registration {
        let mut bytes = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let context = Arc::new(context);
        self.pushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), context.clone());
        Registration {
            server: self.clone(),
            token,
            context,
        }
    }

    /// Binds the socket (replacing a stale one), readable by this user only.
    pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }

    /// Serves hook connections until `shutdown` is cancelled.
    pub async fn serve(self: Arc<Self>, listener: UnixListener, shutdown: CancellationToken) {
        loop {
            let stream = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a hook connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let server = self.clone();
            tokio::spawn(async move { server.handle(stream).await });
        }
    }

    async fn handle(&self, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut line = String::new();
        let request = async {
            let mut limited = tokio::io::AsyncReadExt::take(&mut read, MAX_REQUEST as u64);
            limited.read_line(&mut line).await
        };
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(_)) => serde_json::from_str::<Request>(&line).ok(),
            _ => None,
        };
        let Some(request) = request else {
            tracing::warn!("malformed or late hook request");
            return;
        };
        let context = self
            .pushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&request.token)
            .cloned();
        let Some(context) = context else {
            let _ = send(&mut write, &Reply::Line(" !     this push is not known to the receiver (it may have restarted): push again".into())).await;
            let _ = send(&mut write, &Reply::Done { accept: false }).await;
            return;
        };
        let span = context.span.clone();
        self.run_push(&context, request, read, write)
            .instrument(span)
            .await;
    }

    async fn run_push(
        &self,
        context: &PushContext,
        request: Request,
        mut read: BufReader<tokio::net::unix::OwnedReadHalf>,
        mut write: tokio::net::unix::OwnedWriteHalf,
    ) {
        let outcome = |o| *context.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(o);
        let update = match check_updates(&self.settings, &request.updates) {
            Ok(u) => u.clone(),
            Err(refusal) => {
                tracing::info!(%refusal, "push refused");
                outcome(PushOutcome::RefusedRef);
                let _ = send(&mut write, &Reply::Line(format!(" !     {refusal}"))).await;
                let _ = send(&mut write, &Reply::Done { accept: false }).await;
                return;
            }
        };
        context.span.record("commit", update.new.as_str());
        // The pushed objects are in the quarantine, inside the repository: its size now is
        // its size if the push is accepted.
        if let Some(refusal) = self.repo_size_refusal(context).await {
            tracing::info!(%refusal, "push refused");
            outcome(PushOutcome::RepoTooLarge);
            for line in refusal.lines() {
                let _ = send(&mut write, &Reply::Line(format!(" !     {line}"))).await;
            }
            let _ = send(&mut write, &Reply::Done { accept: false }).await;
            return;
        }
        if self.settings.hook_mode == HookMode::BenchAcceptWithoutBuild {
            outcome(PushOutcome::Accepted);
            let _ = send(&mut write, &Reply::Done { accept: true }).await;
            return;
        }
        let push = Push {
            namespace: context.repo.namespace.clone(),
            app: context.repo.app.clone(),
            repo: context.repo_dir.clone(),
            quarantine: request.quarantine.map(PathBuf::from),
            commit: update.new.clone(),
            ref_name: update.ref_name.clone(),
            user: context.identity.user.clone(),
            fingerprint: context.identity.fingerprint.clone(),
        };
        if update.old == ZERO_ID {
            tracing::info!("first push of the deploy branch");
        }
        // The App stays locked until the pipeline returns, even if the client left.
        let _lock = context.lock.clone();
        let cancel = context.cancel.child_token();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(256);
        let started = Instant::now();
        let mut peer_open = true;
        let result = {
            let deploy = self.pipeline.deploy(&push, &tx, cancel.clone());
            tokio::pin!(deploy);
            let mut probe = [0u8; 1];
            loop {
                tokio::select! {
                    result = &mut deploy => break result,
                    Some(text) = rx.recv() => {
                        if peer_open && send(&mut write, &Reply::Line(text)).await.is_err() {
                            peer_open = false;
                            tracing::info!("the hook went away: cancelling the build");
                            cancel.cancel();
                        }
                    }
                    // The hook sends nothing after its request: a read returning means it
                    // closed the socket (killed with receive-pack when the client left).
                    _ = tokio::io::AsyncReadExt::read(&mut read, &mut probe), if peer_open => {
                        peer_open = false;
                        tracing::info!("the hook went away: cancelling the build");
                        cancel.cancel();
                    }
                }
            }
        };
        drop(tx);
        while let Ok(text) = rx.try_recv() {
            if peer_open && send(&mut write, &Reply::Line(text)).await.is_err() {
                peer_open = false;
            }
        }
        self.metrics
            .deploy_duration
            .observe(started.elapsed().as_secs_f64());
        let accept = match result {
            Ok(deployed) => {
                // The pipeline logs the deploy with its timings.
                let t = &deployed.timings;
                self.metrics.build_duration.observe(t.build.as_secs_f64());
                self.metrics
                    .rollout_duration
                    .observe(t.rollout.as_secs_f64());
                outcome(PushOutcome::Deployed);
                true
            }
            Err(e) => {
                let cancelled = cancel.is_cancelled();
                outcome(if cancelled {
                    PushOutcome::Cancelled
                } else {
                    PushOutcome::BuildFailed
                });
                tracing::info!(error = %e, cancelled, "push not deployed");
                if peer_open {
                    for line in e.to_string().lines() {
                        let _ = send(&mut write, &Reply::Line(format!(" !     {line}"))).await;
                    }
                }
                false
            }
        };
        if peer_open {
            let _ = send(&mut write, &Reply::Done { accept }).await;
        }
    }
}

impl HookServer {
    /// Why the push makes the App's repository too large, if it does.
    async fn repo_size_refusal(&self, context: &PushContext) -> Option<String> {
        let limit = self.settings.max_repo_bytes;
        let dir = context.repo_dir.clone();
        let size = tokio::task::spawn_blocking(move || crate::repo::disk_usage(&dir)).await;
        match size {
            Ok(Ok(size)) if size > limit => Some(repo_too_large(&context.repo, size, limit)),
            Ok(Ok(_)) => None,
            // Not knowing is no reason to refuse a push; say so in the log.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "measuring the repository");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "measuring the repository");
                None
            }
        }
    }
}

/// What the pusher reads when the repository would grow past the limit.
pub fn repo_too_large(repo: &RepoPath, size: u64, limit: u64) -> String {
    use flynn_builder::output::human_size;
    format!(
        "the repository of {}/{} would hold {} with this push, more than {}, the receiver's limit for one App's repository. Keep large files out of the history (`git filter-repo --strip-blobs-bigger-than 10M`), and ask the platform operator to remove the App's repository on the receiver (the next push sends the history afresh), or to raise --max-repo-bytes (FLYNN_MAX_REPO_BYTES; chart value gitreceiver.maxRepoBytes)",
        repo.namespace,
        repo.app,
        human_size(size),
        human_size(limit)
    )
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut body = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    body.push(b'\n');
    write.write_all(&body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::new("/r".into(), "/s".into(), "/h".into())
    }

    fn update(old: &str, new: &str, r: &str) -> RefUpdate {
        RefUpdate {
            old: old.into(),
            new: new.into(),
            ref_name: r.into(),
        }
    }

    #[test]
    fn only_one_deploy_branch_update_is_built() {
        let s = settings();
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let main = update(&a, &b, "refs/heads/main");
        assert_eq!(check_updates(&s, std::slice::from_ref(&main)), Ok(&main));
        let master = update(ZERO_ID, &b, "refs/heads/master");
        assert_eq!(
            check_updates(&s, std::slice::from_ref(&master)),
            Ok(&master)
        );

        let err = check_updates(&s, &[update(ZERO_ID, &b, "refs/heads/feature")]).unwrap_err();
        assert!(
            err.to_string().contains("only main or master deploys"),
            "{err}"
        );
        assert!(
            err.to_string().contains("git push <remote> <branch>:main"),
            "{err}"
        );
        assert!(matches!(
            check_updates(&s, &[main.clone(), update(ZERO_ID, &b, "refs/tags/v1")]),
            Err(RefRefusal::NotDeployBranch { .. })
        ));
        assert!(matches!(
            check_updates(&s, &[update(&a, ZERO_ID, "refs/heads/main")]),
            Err(RefRefusal::Delete(_))
        ));
        assert!(matches!(
            check_updates(&s, &[main, master]),
            Err(RefRefusal::Several(_))
        ));
    }
}
