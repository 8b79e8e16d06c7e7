//! A push, from the authorized exec request to receive-pack's exit: authorize, take the
//! App's lock, prepare the repository, register with the hook server, run receive-pack.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use russh::ChannelReadHalf;
use russh::ChannelWriteHalf;
use russh::server::Msg;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Shared;
use crate::command::RepoPath;
use crate::hook::server::PushContext;
use crate::hook::{SOCKET_ENV, TOKEN_ENV};
use crate::keys::Identity;
use crate::receive::{self, Ended};
use crate::ssh::refuse_line;

/// Runs the push; always ends the channel.
pub async fn run(
    shared: Arc<Shared>,
    identity: Identity,
    repo: RepoPath,
    git_protocol: Option<String>,
    rx: ChannelReadHalf,
    tx: ChannelWriteHalf<Msg>,
    closed: CancellationToken,
) {
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
    let result = run_inner(
        &shared,
        identity,
        repo,
        git_protocol,
        rx,
        &tx,
        closed,
        span.clone(),
    )
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
            result,
            seconds = started.elapsed().as_secs_f64(),
            "push finished"
        )
    });
}

#[allow(clippy::too_many_arguments)]
async fn run_inner(
    shared: &Arc<Shared>,
    identity: Identity,
    repo: RepoPath,
    git_protocol: Option<String>,
    mut rx: ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    closed: CancellationToken,
    span: tracing::Span,
) -> &'static str {
    if let Err(denied) = shared.authorizer.authorize(&identity, &repo).await {
        tracing::info!(reason = %denied, "push denied");
        refuse_line(tx, &format!("flynn: {denied}")).await;
        return denied.kind();
    }
    // Held to the end of the push: receive-pack waits for the hook, which waits for the
    // build and rollout (a build whose client left is being cancelled when this returns).
    let _slot = match shared.pushes.try_take(&repo.namespace) {
        Ok(slot) => slot,
        Err(full) => {
            tracing::info!(reason = %full, "push refused: too many pushes running");
            refuse_line(tx, &format!("flynn: {full}")).await;
            return "too_many_pushes";
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
            () = receive::client_gone(&mut rx) => return "cancelled",
        }
    };
    let lock = match lock {
        Ok(l) => Arc::new(l),
        Err(busy) => {
            refuse_line(tx, &format!("flynn: {busy}")).await;
            return "busy";
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
                return "error";
            }
            Err(e) => {
                tracing::error!(error = %e, "preparing the repository");
                refuse_line(tx, "flynn: internal error").await;
                return "error";
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
            crate::ssh::finish(tx, code).await;
            match (outcome, code) {
                (Some(o), _) => o.label(),
                (None, 0) => "up_to_date",
                (None, _) => "error",
            }
        }
        Ended::OutOfMemory(code) => {
            // The client was told why (receive::out_of_memory_message); git had removed its
            // quarantine when its unpacking failed.
            crate::ssh::finish(tx, code.max(1)).await;
            "git_memory"
        }
        Ended::TooLarge(_) => {
            // The client was told why (receive::too_large_message).
            crate::ssh::finish(tx, 1).await;
            "too_large"
        }
        Ended::ClientGone => {
            // The hook died with receive-pack's group; make sure the build stops too.
            registration.context.cancel.cancel();
            "cancelled"
        }
        Ended::SpawnFailed(e) => {
            tracing::error!(error = %e, program = %settings.git_program.display(), "starting git receive-pack");
            refuse_line(tx, "flynn: the receiver could not start git; ask the platform operator to check its logs").await;
            "error"
        }
    }
}
