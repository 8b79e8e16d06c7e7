//! The `flynn` CLI (also `kubectl flynn`): Flynn's command line over the flynn.io API.
//!
//! It writes the same App / Release / Formation / Route objects `kubectl apply` does,
//! through the user's kubeconfig and RBAC; nothing is hidden behind a server of its own.
//! `main.rs` only parses arguments and prints errors; [`run`] dispatches to one module per
//! command group in [`commands`].

pub mod app_ref;
pub mod cli;
pub mod commands;
pub mod context;
pub mod errors;
pub mod output;
pub mod platform;
pub mod progress;
pub mod sshkey;

#[cfg(test)]
mod golden;

use cli::{Cli, Command};
use context::Ctx;
use errors::{Error, Result, exit};
use output::Ui;

/// Runs a parsed command line; returns the exit code (`run` passes its command's through).
pub async fn run(cli: Cli, ui: Ui) -> Result<u8> {
    // Commands that need no cluster.
    match &cli.command {
        Command::Completion(args) => {
            return commands::completion::completion(args).map(|()| exit::OK);
        }
        Command::Version => {
            let ctx = Ctx::new(&cli.global, ui).await.ok();
            return commands::version::version(ctx.as_ref())
                .await
                .map(|()| exit::OK);
        }
        _ => {}
    }
    let ctx = Ctx::new(&cli.global, ui).await?;
    // These handle Ctrl-C themselves (they must delete their pod first) and exit with the
    // code of the command they ran.
    match &cli.command {
        Command::Run(args) => return commands::run::run(&ctx, args).await,
        Command::Pg(args) => return commands::pg::pg(&ctx, args).await,
        Command::RedisCli(args) => return commands::redis::redis_cli(&ctx, args).await,
        _ => {}
    }
    tokio::select! {
        result = dispatch(&ctx, &cli.command) => result.map(|()| exit::OK),
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    }
}

async fn dispatch(ctx: &Ctx, command: &Command) -> Result<()> {
    use commands::*;
    match command {
        Command::Create(args) => apps::create(ctx, args).await,
        Command::Apps => apps::list(ctx).await,
        Command::Info => apps::info(ctx).await,
        Command::Delete(args) => apps::delete(ctx, args).await,
        Command::Key(command) => keys::run(ctx, command).await,
        Command::Scale(args) => scale::scale(ctx, args).await,
        Command::Ps => ps::ps(ctx).await,
        Command::Kill(args) => ps::kill(ctx, args).await,
        Command::Log(args) => log::log(ctx, args).await,
        Command::Env(args) => env::env(ctx, args).await,
        Command::Limit(args) => limit::limit(ctx, args).await,
        Command::Deployment(args) => deployment::deployment(ctx, args).await,
        Command::Release(args) => release::release(ctx, args).await,
        Command::Deploy(args) => release::deploy(ctx, args).await,
        Command::Route(args) => route::route(ctx, args).await,
        Command::Resource(args) => resource::resource(ctx, args).await,
        Command::Run(_)
        | Command::Pg(_)
        | Command::RedisCli(_)
        | Command::Version
        | Command::Completion(_) => Ok(()),
    }
}
