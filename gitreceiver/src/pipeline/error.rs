//! Why a push was not deployed.
//!
//! The `Display` of [`Error`] is the last thing the pusher reads (as `remote:` lines, after
//! ` !     `), so each message says what went wrong in the user's terms and what to do
//! about it; the cause stays reachable through `source()` for the receiver's logs.

use std::time::Duration;

/// Why a push was not deployed; its `Display` is what the pusher reads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The App does not exist (it was deleted after the SSH side checked it).
    #[error(
        "app {app} does not exist in namespace {namespace}: create it first (`flynn create {app}`), then push again"
    )]
    AppNotFound { namespace: String, app: String },

    /// The pushed commit could not be turned into a source tarball.
    #[error("could not archive commit {commit}: {source}")]
    Archive {
        commit: String,
        #[source]
        source: super::archive::ArchiveError,
    },

    /// The pushed commit is over one of the receiver's limits (its files' total size, its
    /// tree's depth); the message names the setting that raises it.
    #[error("commit {commit} was not built: {source}")]
    SourceRefused {
        commit: String,
        #[source]
        source: super::archive::ArchiveError,
    },

    /// The source tarball could not be stored.
    #[error(
        "could not upload the source to the slug store: {source}. The store may be down: ask the platform operator to check the shelf (kubectl -n flynn-system get pods)"
    )]
    Upload {
        #[source]
        source: flynn_builder::client::ClientError,
    },

    /// A Kubernetes API request failed.
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    /// The App's config vars could not be read (see `flynn_crds::config`).
    #[error("could not read the config of app {app}: {source}")]
    Config {
        app: String,
        #[source]
        source: flynn_crds::config::LoadError,
    },

    /// The build pod never started (image missing, unschedulable, ...).
    #[error("the build could not start: {reason}")]
    BuildNotStarted { reason: String },

    /// The slugbuilder ran and failed (no buildpack, compile error, slug too large, ...).
    #[error("build failed: {reason}")]
    BuildFailed { reason: String },

    /// The build ran longer than the build timeout and was stopped.
    #[error("build timed out: it ran longer than {}s and was stopped. Make the build faster (a .slugignore, a warm cache), or ask the platform operator to raise the build timeout", .limit.as_secs())]
    BuildTimedOut { limit: Duration },

    /// The build pod disappeared or ended in a way the receiver cannot read.
    #[error(
        "the build ended without a result: {reason}. Push again; if it keeps happening, ask the platform operator to check the build Job {job}"
    )]
    BuildLost { job: String, reason: String },

    /// Reading the build log failed.
    #[error("could not follow the build log of {pod}: {source}")]
    Logs {
        pod: String,
        #[source]
        source: std::io::Error,
    },

    /// Another writer kept taking the next Release version.
    #[error(
        "could not create the next release of {app}: other releases kept taking version {version}; push again"
    )]
    ReleaseRace { app: String, version: i64 },

    /// The new Release did not roll out and the operator gave up on it.
    #[error("{}", rollout_failed(.release, .reason, .rolled_back_to.as_deref()))]
    RolloutFailed {
        release: String,
        reason: String,
        /// The Release auto-rollback restored, if it did.
        rolled_back_to: Option<String>,
    },

    /// The operator did not report the rollout's end in time.
    #[error("release {release} has not finished rolling out after {}s: {state}. The App points at it and the operator goes on (see `flynn info` or `kubectl describe app`)", .waited.as_secs())]
    RolloutTimedOut {
        release: String,
        waited: Duration,
        state: String,
    },

    /// Someone pointed the App at another Release while this one rolled out.
    #[error(
        "the app was pointed at {now} while {release} was rolling out (another push or a rollback): this push's release is not the one running"
    )]
    Superseded { release: String, now: String },

    /// The pusher went away; the build was stopped.
    #[error("push cancelled: the build was stopped")]
    Cancelled,
}

fn rollout_failed(release: &str, reason: &str, rolled_back_to: Option<&str>) -> String {
    match rolled_back_to {
        Some(previous) => format!(
            "release {release} failed to roll out: {reason}. Rolled back: {previous} is still serving. Fix the app (check `flynn log`) and push again"
        ),
        None => format!(
            "release {release} failed to roll out: {reason}. It was not rolled back (no earlier release, or autoRollback is off): the App still points at it. Fix the app and push again, or roll back with `flynn release rollback`"
        ),
    }
}

impl Error {
    pub(crate) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }

    /// A short name for logs and metrics (`build_failed`, `rollout_failed`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AppNotFound { .. } => "app_not_found",
            Self::Archive { .. } => "archive",
            Self::SourceRefused { .. } => "source_limit",
            Self::Upload { .. } => "upload",
            Self::Kube { .. } => "kubernetes",
            Self::Config { .. } => "config",
            Self::BuildNotStarted { .. } => "build_not_started",
            Self::BuildFailed { .. } => "build_failed",
            Self::BuildTimedOut { .. } => "build_timed_out",
            Self::BuildLost { .. } => "build_lost",
            Self::Logs { .. } => "logs",
            Self::ReleaseRace { .. } => "release_race",
            Self::RolloutFailed { .. } => "rollout_failed",
            Self::RolloutTimedOut { .. } => "rollout_timed_out",
            Self::Superseded { .. } => "superseded",
            Self::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_failures_say_what_serves_now() {
        let rolled_back = Error::RolloutFailed {
            release: "shop-v3".into(),
            reason: "pod shop-web-1: process web is crash-looping".into(),
            rolled_back_to: Some("shop-v2".into()),
        };
        assert_eq!(
            rolled_back.to_string(),
            "release shop-v3 failed to roll out: pod shop-web-1: process web is crash-looping. Rolled back: shop-v2 is still serving. Fix the app (check `flynn log`) and push again"
        );
        let stuck = Error::RolloutFailed {
            release: "shop-v1".into(),
            reason: "timed out".into(),
            rolled_back_to: None,
        };
        assert!(
            stuck.to_string().contains("the App still points at it"),
            "{stuck}"
        );
        assert_eq!(stuck.kind(), "rollout_failed");
    }
}
