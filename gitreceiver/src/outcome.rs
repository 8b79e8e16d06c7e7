//! How a push ended: one name for the log line `push finished` and the `result` label of
//! `flynn_gitreceiver_pushes_total`.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// How a push ended, from the exec request to receive-pack's exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PushOutcome {
    /// Built, released and rolled out.
    Deployed,
    /// Accepted without a build (the benchmark's hook mode only).
    Accepted,
    /// receive-pack exited 0 and the hook ran no deploy (nothing new for the deploy branch).
    UpToDate,
    /// The build or the rollout failed.
    BuildFailed,
    /// A ref the receiver does not deploy (not a deploy branch, a delete, several).
    RefusedRef,
    /// More data than `--max-push-bytes`.
    TooLarge,
    /// The repository would grow past `--max-repo-bytes`.
    RepoTooLarge,
    /// git ran out of `--max-git-memory` unpacking it.
    GitMemory,
    /// `--max-concurrent-pushes[-per-namespace]` reached.
    TooManyPushes,
    /// The SubjectAccessReview said no.
    Forbidden,
    /// The App does not exist.
    UnknownApp,
    /// Another push held the App's lock past `--lock-timeout-seconds`.
    Busy,
    /// The client went away.
    Cancelled,
    /// The receiver failed (API, repository, git not starting).
    Error,
}

impl PushOutcome {
    /// The name in logs and metric labels (`deployed`, `too_large`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployed => "deployed",
            Self::Accepted => "accepted",
            Self::UpToDate => "up_to_date",
            Self::BuildFailed => "build_failed",
            Self::RefusedRef => "refused_ref",
            Self::TooLarge => "too_large",
            Self::RepoTooLarge => "repo_too_large",
            Self::GitMemory => "git_memory",
            Self::TooManyPushes => "too_many_pushes",
            Self::Forbidden => "forbidden",
            Self::UnknownApp => "unknown_app",
            Self::Busy => "busy",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
        }
    }
}

impl std::fmt::Display for PushOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for PushOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}
