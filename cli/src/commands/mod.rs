//! One module per command group; each command is an async function of the [`Ctx`].

pub mod apps;
pub mod completion;
pub mod deployment;
pub mod env;
pub mod keys;
pub mod limit;
pub mod log;
pub mod pg;
pub mod pg_dump_file;
pub mod pod_session;
pub mod ps;
pub mod redis;
pub mod release;
pub mod resource;
pub mod route;
pub mod run;
pub mod scale;
pub mod version;

use std::future::Future;
use std::time::Duration;

use crate::context::Ctx;
use crate::errors::{Error, Result};
use crate::progress::Progress;

/// One look at something being waited for.
#[derive(Debug)]
pub enum Wait<T> {
    /// Finished, with the result.
    Done(T),
    /// Not yet; the message says how far along (`web 1/3 ready`).
    Pending(String),
}

/// Polls `check` every half second, showing its message as progress, until it is done or
/// `timeout` passes ([`Error::Timeout`] with `hint`).
pub async fn wait_for<T, F, Fut>(
    ctx: &Ctx,
    what: &str,
    timeout: Duration,
    hint: &str,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Wait<T>>>,
{
    let progress = Progress::start(ctx.ui, format!("waiting for {what}"));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await? {
            Wait::Done(value) => {
                progress.done(None);
                return Ok(value);
            }
            Wait::Pending(message) => progress.set(message),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                after: timeout,
                hint: hint.to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Splits `K=V` (the value may contain '=').
pub fn split_pair<'a>(arg: &'a str, example: &str) -> Result<(&'a str, &'a str)> {
    arg.split_once('=')
        .ok_or_else(|| Error::bad_argument(arg, "expected KEY=VALUE", example))
}
