//! One session channel: wait for its request (exec, shell, subsystem), refuse anything but
//! `git-receive-pack`, and hand a push to [`push::run`].

use std::sync::Arc;
use std::time::Duration;

use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio_util::sync::CancellationToken;

use crate::command::{self, Refusal};
use crate::keys::Identity;
use crate::shared::Shared;

use super::push::{self, PushRequest};
use super::reply::refuse;

/// How long a channel may stay open without a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

enum Request {
    Exec(Vec<u8>),
    Shell,
    Subsystem(String),
}

pub(super) async fn serve(
    channel: Channel<Msg>,
    identity: Identity,
    shared: Arc<Shared>,
    closed: CancellationToken,
) {
    let (mut rx, tx) = channel.split();
    let mut git_protocol = None;
    let wait_request = async {
        loop {
            match rx.wait().await {
                Some(ChannelMsg::Exec { command, .. }) => return Some(Request::Exec(command)),
                Some(ChannelMsg::RequestShell { .. }) => return Some(Request::Shell),
                Some(ChannelMsg::RequestSubsystem { name, .. }) => {
                    return Some(Request::Subsystem(name));
                }
                Some(ChannelMsg::SetEnv {
                    variable_name,
                    variable_value,
                    ..
                }) if variable_name == "GIT_PROTOCOL" => {
                    // `version=2` and the like: keep it only if it looks like that.
                    if variable_value.len() <= 64
                        && variable_value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"=:.-_".contains(&b))
                    {
                        git_protocol = Some(variable_value);
                    }
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return None,
                // pty-req (refused by the handler), other env, early data: ignore.
                Some(_) => {}
            }
        }
    };
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, wait_request).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(_) => {
            refuse(&tx, "flynn: no command was sent").await;
            return;
        }
    };
    let command = match request {
        Request::Shell => {
            tracing::info!(user = %identity.user, "shell refused");
            return refuse(&tx, &format!("flynn: {}", Refusal::Shell)).await;
        }
        Request::Subsystem(name) => {
            tracing::info!(user = %identity.user, subsystem = %name, "subsystem refused");
            return refuse(&tx, &format!("flynn: {}", Refusal::Subsystem(name))).await;
        }
        Request::Exec(command) => command,
    };
    let repo = match command::parse(&command, &shared.settings.default_namespace) {
        Ok(r) => r,
        Err(refusal) => {
            tracing::info!(user = %identity.user, command = %String::from_utf8_lossy(&command), "command refused");
            return refuse(&tx, &format!("flynn: {refusal}")).await;
        }
    };
    let request = PushRequest {
        identity,
        repo,
        git_protocol,
        rx,
        tx,
        closed,
    };
    push::run(shared, request).await;
}
