//! NOT_YET: being written. Archive → slug store → slugbuilder Job → Release → rollout.

use tokio_util::sync::CancellationToken;

use crate::{Deployed, Output, Push};

/// Builds and deploys pushes.
#[derive(Clone, Debug)]
pub struct Pipeline {}

/// Why a push was not deployed; its `Display` is what the pusher reads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the build pipeline is not built yet")]
    NotYet,
}

impl Pipeline {
    /// Runs the whole pipeline for `push`, writing progress to `out`. Cancelling `cancel`
    /// (the client went away) stops the build Job and returns promptly.
    pub async fn deploy(
        &self,
        push: &Push,
        out: &Output,
        cancel: CancellationToken,
    ) -> Result<Deployed, Error> {
        let _ = (push, out, cancel);
        Err(Error::NotYet)
    }
}
