//! The git receiver: an SSH server taking `git push`, authorized by Kubernetes RBAC, that
//! builds the pushed commit with the slugbuilder Job, creates the Release and follows the
//! rollout, streaming everything back to the pusher's terminal.

pub mod pipeline;

use std::path::PathBuf;

/// A push that `git receive-pack` accepted into the App's bare repository, for the deploy
/// branch, as the pre-receive hook sees it: the objects are in the quarantine directory,
/// not yet reachable from any ref.
#[derive(Clone, Debug)]
pub struct Push {
    pub namespace: String,
    pub app: String,
    /// The App's bare repository.
    pub repo: PathBuf,
    /// `GIT_QUARANTINE_PATH` of the hook: where the pushed objects are until the hook
    /// accepts them. `None` when the objects are already in the repository.
    pub quarantine: Option<PathBuf>,
    /// The pushed commit (40 hex digits).
    pub commit: String,
    /// The ref pushed, e.g. `refs/heads/main`.
    pub ref_name: String,
    /// The Kubernetes user the SSH key belongs to.
    pub user: String,
    /// The SSH key's fingerprint (`SHA256:...`).
    pub fingerprint: String,
}

/// What a successful push deployed.
#[derive(Clone, Debug)]
pub struct Deployed {
    /// The Release's name (`<app>-v<version>`).
    pub release: String,
    pub version: i64,
    /// The App's URLs from its status.
    pub urls: Vec<String>,
}

/// Lines for the pusher's terminal (no trailing newline); git shows them as `remote:` lines.
pub type Output = tokio::sync::mpsc::Sender<String>;
