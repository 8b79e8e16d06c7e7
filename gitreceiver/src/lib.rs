//! The git receiver: an SSH server taking `git push`, authorized by Kubernetes RBAC, that
//! builds the pushed commit with the slugbuilder Job, creates the Release and follows the
//! rollout, streaming everything back to the pusher's terminal.
//!
//! The SSH half: [`ssh`] (russh server), [`keys`] (the key registry), [`authz`]
//! (SubjectAccessReview), [`command`] (what may be run), [`admission`] (how many pushes
//! at once), [`locks`] (one push per App),
//! [`repo`] and [`receive`] (bare repositories and `git receive-pack`), [`hook`] (the
//! pre-receive hook and its callback socket, which runs the [`pipeline`]), [`receiver`]
//! (all of it assembled), [`gc`] (removing the repositories of deleted Apps), [`http`] and
//! [`metrics`] (ops). [`shared`] is what every connection shares; [`outcome`] how a push
//! ended.

pub mod admission;
pub mod authz;
pub mod command;
pub mod gc;
pub mod hook;
pub mod hostkey;
pub mod http;
pub mod keys;
pub mod locks;
pub mod metrics;
pub mod outcome;
pub mod pipeline;
pub mod receive;
pub mod receiver;
pub mod repo;
pub mod settings;
pub mod shared;
pub mod ssh;
pub mod throttle;

pub use outcome::PushOutcome;
pub use receiver::{Running, StartError, start};
pub use settings::Settings;
pub use shared::Shared;

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
    /// How long each phase took (archive, upload, build, release, rollout).
    pub timings: pipeline::Timings,
}

/// Lines for the pusher's terminal (no trailing newline); git shows them as `remote:` lines.
pub type Output = tokio::sync::mpsc::Sender<String>;
