//! A push, from the authorized exec request to receive-pack's exit: authorize, take the
//! App's lock, prepare the repository, register with the hook server, run receive-pack.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use russh::ChannelReadHalf;
use russh::ChannelWriteHalf;
use russh::server::Msg;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::reply::{finish, refuse as refuse_line};
use crate::command::RepoPath;
use crate::hook::server::PushContext;
use crate::hook::{SOCKET_ENV, TOKEN_ENV};
use crate::keys::Identity;
use crate::outcome::PushOutcome;
use crate::receive::{self, Ended};
use crate::shared::Shared;

/// One `git-receive-pack` exec request, as the channel task hands it over.
pub(super) struct PushRequest {
    /// Who the SSH key says is pushing.
    pub identity: Identity,
    /// The App, from the command.
    pub repo: RepoPath,
    /// The client's `GIT_PROTOCOL` (e.g. `version=2`), passed on to receive-pack.
    pub git_protocol: Option<String>,
    pub rx: ChannelReadHalf,
    pub tx: ChannelWriteHalf<Msg>,
    /// Cancelled when the connection ends.
    pub closed: CancellationToken,
}

/// Runs the push; always ends the channel.
pub(super) async fn run(shared: Arc<Shared>, request: PushRequest) {
    let (identity, repo) = (&request.identity, &request.repo);
    let span = tracing::info_span!(
        "push",
        namespace = %repo.namespace,
        app = %repo.app,
        user = %identity.user,
        fingerprint = %identity.fingerprint,
        commit = tracing::field::Empty,
    );
    let started = Instant::now();
    shared.metrics.active_pushes.inc();
    let result = run_inner(&shared, request, span.clone())
        .instrument(span.clone())
        .await;
    shared.metrics.active_pushes.dec();
    shared
        .metrics
        .push_duration
        .observe(started.elapsed().as_secs_f64());
    shared.metrics.push(result);
    span.in_scope(|| {
        tracing::info!(
            result = result.as_str(),
            seconds = started.elapsed().as_secs_f64(),
            "push finished"
        )
    });
}

async fn run_inner(shared: &Shared, request: PushRequest, span: tracing::Span) -> PushOutcome {
    let PushRequest {
        identity,
        repo,
        git_protocol,
        mut rx,
        tx,
        closed,
    } = request;
    let tx = &tx;
    if let Err(denied) = shared.authorizer.authorize(&identity, &repo).await {
        tracing::info!(reason = %denied, "push denied");
        refuse_line(tx, &format!("flynn: {denied}")).await;
        return denied.outcome();
    }
    // Held to the end of the push: receive-pack waits for the hook, which waits for the
    // build and rollout (a build whose client left is being cancelled when this returns).
    let _slot = match shared.pushes.try_take(&repo.namespace) {
        Ok(slot) => slot,
        Err(full) => {
            tracing::info!(reason = %full, "push refused: too many pushes running");
            refuse_line(tx, &format!("flynn: {full}")).await;
            return PushOutcome::TooManyPushes;
        }
    };

    let settings = &shared.settings;
    let (wait_tx, wait_rx) = tokio::sync::oneshot::channel::<String>();
    let user = identity.user.clone();
    let lock = shared
        .locks
        .acquire(&repo, &user, settings.lock_timeout, move |holder| {
            let _ = wait_tx.send(holder.to_owned());
        });
    tokio::pin!(lock);
    let mut waiting = Some(wait_rx);
    let lock = loop {
        tokio::select! {
            lock = &mut lock => break lock,
            holder = async { waiting.as_mut().expect("guarded").await }, if waiting.is_some() => {
                waiting = None;
                if let Ok(holder) = holder {
                    let line = format!("flynn: waiting for the push to {} by {holder} to finish...\n", repo.app);
                    let _ = tx.extended_data_bytes(1, bytes::Bytes::from(line)).await;
                }
            }
            // While waiting, the client may give up: stop waiting then.
            () = receive::client_gone(&mut rx) => return PushOutcome::Cancelled,
        }
    };
    let lock = match lock {
        Ok(l) => Arc::new(l),
        Err(busy) => {
            refuse_line(tx, &format!("flynn: {busy}")).await;
            return PushOutcome::Busy;
        }
    };

    let repo_dir = {
        let (dir, repo, program) = (
            settings.repos_dir.clone(),
            repo.clone(),
            settings.hook_program.clone(),
        );
        let head = settings
            .deploy_branches
            .first()
            .cloned()
            .unwrap_or_else(|| "main".into());
        // The blocking thread does not inherit the push's span: carry it over.
        let span = tracing::Span::current();
        let ensure = move || span.in_scope(|| crate::repo::ensure(&dir, &repo, &program, &head));
        match tokio::task::spawn_blocking(ensure).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "preparing the repository");
                refuse_line(tx, "flynn: the receiver could not prepare the repository; ask the platform operator to check its logs").await;
                return PushOutcome::Error;
            }
            Err(e) => {
                tracing::error!(error = %e, "preparing the repository");
                refuse_line(tx, "flynn: internal error").await;
                return PushOutcome::Error;
            }
        }
    };

    let registration = shared.hooks.register(PushContext {
        repo: repo.clone(),
        repo_dir: repo_dir.clone(),
        identity,
        cancel: closed.child_token(),
        lock,
        span,
        outcome: Mutex::new(None),
    });
    let mut env = vec![
        (SOCKET_ENV, settings.hook_socket.display().to_string()),
        (TOKEN_ENV, registration.token.clone()),
    ];
    if let Some(p) = git_protocol {
        env.push(("GIT_PROTOCOL", p));
    }
    let ended = receive::run(settings, &repo_dir, &env, &mut rx, tx, &shared.metrics).await;
    if matches!(ended, Ended::TooLarge(_) | Ended::ClientGone) {
        // receive-pack was stopped: what it had received must not wait for the next push
        // to this App to be removed (the App's lock is still held here).
        let (dir, span) = (repo_dir.clone(), tracing::Span::current());
        let _ = tokio::task::spawn_blocking(move || {
            span.in_scope(|| crate::repo::remove_stale_quarantines(&dir))
        })
        .await;
    }
    let outcome = *registration
        .context
        .outcome
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match ended {
        Ended::Exited(code) => {
            finish(tx, code).await;
            match (outcome, code) {
                (Some(o), _) => o,
                (None, 0) => PushOutcome::UpToDate,
                (None, _) => PushOutcome::Error,
            }
        }
        Ended::OutOfMemory(code) => {
            // The client was told why (receive::out_of_memory_message); git had removed its
            // quarantine when its unpacking failed.
            finish(tx, code.max(1)).await;
            PushOutcome::GitMemory
        }
        Ended::TooLarge(_) => {
            // The client was told why (receive::too_large_message).
            finish(tx, 1).await;
            PushOutcome::TooLarge
        }
        Ended::ClientGone => {
            // The hook died with receive-pack's group; make sure the build stops too.
            registration.context.cancel.cancel();
            PushOutcome::Cancelled
        }
        Ended::SpawnFailed(e) => {
            tracing::error!(error = %e, program = %settings.git_program.display(), "starting git receive-pack");
            refuse_line(tx, "flynn: the receiver could not start git; ask the platform operator to check its logs").await;
            PushOutcome::Error
        }
    }
}
