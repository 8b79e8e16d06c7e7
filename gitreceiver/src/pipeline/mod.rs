//! The deploy pipeline a push runs, from the pre-receive hook, with its output relayed to
//! the pusher as `remote:` lines:
//!
//! 1. `archive`: the pushed commit's tree into a `.tar.gz` (git2; the quarantined
//!    objects added as an alternate, so nothing is accepted before the deploy is);
//! 2. into the slug store with the platform token (`store` says where things live);
//! 3. `job`: a slugbuilder Job in the App's namespace, with capability URLs for its
//!    source, slug and cache, and the App's config in a Secret; `logs` follows it,
//!    streaming its output, and reads its result from the termination message;
//! 4. `release`: Release `<app>-v<N+1>` with the slug and the process types, and the App
//!    pointed at it;
//! 5. `rollout`: the operator's rollout followed on the App's status until the release
//!    is Ready, or Degraded / rolled back, which fails the push with the reason.
//!
//! A failure before step 4 leaves the App untouched. Cancelling (the client went away)
//! deletes the build Job, which stops the build. See [`PipelineSettings`] for what a
//! receiver configures.

pub mod archive;
mod error;
mod job;
mod logs;
mod release;
mod rollout;
mod settings;
mod store;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use flynn_builder::{client::HttpClient, output::human_size, signing::SigningKey};
use flynn_crds::App;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{Deployed, Output, Push};

pub use archive::ArchiveError;
pub use error::Error;
pub use job::{BUILD_LABEL, COMMIT_ANNOTATION};
pub use release::meta;
pub use settings::{Limits, PipelineSettings};
pub use store::BuildPaths;

/// The field manager of everything the receiver writes to the API.
pub const FIELD_MANAGER: &str = "flynn-gitreceiver";

/// How long each phase of a deploy took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// The commit's tree into a `.tar.gz`.
    pub archive: Duration,
    /// The tarball into the slug store.
    pub upload: Duration,
    /// Creating the build Job until its result (pod start, buildpacks, slug upload).
    pub build: Duration,
    /// Creating the Release and pointing the App at it.
    pub release: Duration,
    /// The operator's rollout, until the App reported the release Ready.
    pub rollout: Duration,
}

impl Timings {
    /// All phases together.
    pub fn total(&self) -> Duration {
        self.archive + self.upload + self.build + self.release + self.rollout
    }
}

/// Builds and deploys pushes. Cheap to clone; one per receiver.
#[derive(Clone)]
pub struct Pipeline {
    client: kube::Client,
    settings: Arc<PipelineSettings>,
    key: SigningKey,
    store: HttpClient,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Lines to the pusher. A send fails only when the SSH side has gone, which also cancels
/// the deploy, so failures are ignored here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Progress<'a>(&'a Output);

impl Progress<'_> {
    pub(crate) async fn line(&self, line: impl Into<String>) {
        let _ = self.0.send(line.into()).await;
    }
}

/// Runs `fut` unless `cancel` fires first.
async fn unless_cancelled<T>(
    cancel: &CancellationToken,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Error::Cancelled),
        r = fut => r,
    }
}

impl Pipeline {
    /// A pipeline acting with `client` (the receiver's own identity: it creates Jobs,
    /// Secrets and Releases and patches Apps in the Apps' namespaces).
    pub fn new(client: kube::Client, settings: PipelineSettings) -> Self {
        Self {
            key: SigningKey::new(settings.shelf_token.as_bytes()),
            store: HttpClient::new(Some(settings.shelf_token.clone())),
            settings: Arc::new(settings),
            client,
        }
    }

    /// Runs the whole pipeline for `push`, writing progress to `out`. Cancelling `cancel`
    /// (the client went away) stops the build Job and returns promptly.
    ///
    /// Until the Release is created nothing the App runs changes; after that, the
    /// operator's rollout rules (timeout, auto-rollback) decide, and cancelling only stops
    /// the waiting.
    pub async fn deploy(
        &self,
        push: &Push,
        out: &Output,
        cancel: CancellationToken,
    ) -> Result<Deployed, Error> {
        let span = tracing::info_span!(
            "deploy",
            namespace = %push.namespace,
            app = %push.app,
            commit = %short(&push.commit),
            user = %push.user,
        );
        let started = Instant::now();
        let result = self
            .run(push, Progress(out), &cancel)
            .instrument(span.clone())
            .await;
        span.in_scope(|| match &result {
            Ok(d) => tracing::info!(
                release = %d.release,
                seconds = started.elapsed().as_secs_f64(),
                timings = ?d.timings,
                "deployed"
            ),
            Err(e) => tracing::warn!(error = %e, kind = e.kind(), "deploy failed"),
        });
        result
    }

    async fn run(
        &self,
        push: &Push,
        out: Progress<'_>,
        cancel: &CancellationToken,
    ) -> Result<Deployed, Error> {
        let s = &self.settings;
        let apps: Api<App> = Api::namespaced(self.client.clone(), &push.namespace);
        let app = self.app(&apps, push).await?;
        let mut timings = Timings::default();

        // 1. The commit's tree into a tarball.
        let t = Instant::now();
        let source = unless_cancelled(cancel, self.archive(push, cancel)).await?;
        timings.archive = t.elapsed();

        // 2. Into the store.
        let t = Instant::now();
        let job_name = job::job_name(&push.app, &push.commit, &mut rand::rng());
        let paths = BuildPaths::new(&push.namespace, &push.app, &push.commit, &job_name);
        let put_url = format!("{}{}", s.shelf_url.trim_end_matches('/'), paths.source);
        unless_cancelled(cancel, async {
            self.store
                .put_file(&put_url, &source.path, Some(&source.sha256))
                .await
                .map_err(|source| Error::Upload { source })
        })
        .await?;
        timings.upload = t.elapsed();
        tracing::info!(
            files = source.files,
            bytes = source.size,
            archive_ms = timings.archive.as_millis() as u64,
            upload_ms = timings.upload.as_millis() as u64,
            "source stored"
        );
        out.line(format!(
            "-----> Compressing source files... done ({} file{}, {})",
            source.files,
            if source.files == 1 { "" } else { "s" },
            human_size(source.size)
        ))
        .await;
        drop(source);

        // 3. The build.
        let t = Instant::now();
        // Valid until the Job's own deadline has certainly passed: the slug is uploaded
        // at the very end of the build.
        let urls = store::BuildUrls::sign(
            &self.key,
            &s.shelf_pod_url,
            &paths,
            s.build_timeout + Duration::from_secs(300),
        );
        let job = job::build_job(
            &job::BuildJob {
                app: &app,
                name: &job_name,
                commit: &push.commit,
                urls: &urls,
            },
            s,
        );
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let (_, read_for_build) = job::create(&self.client, &job, &app).await?;
        let running = job::RunningJob::new(&self.client, &push.namespace, &job_name);
        tracing::info!(job = %job_name, "build Job created");
        let built = unless_cancelled(
            cancel,
            logs::follow(
                &self.client,
                &push.namespace,
                &job_name,
                s.build_start_timeout,
                s.build_timeout,
                &out,
            ),
        )
        .await;
        let result = match built {
            Ok(r) => {
                running.keep();
                r
            }
            // A build that ran to its end (failed or timed out) stays for `kubectl logs`
            // until its TTL; anything else may still run and is stopped, so it cannot
            // upload a slug nobody will use.
            Err(e @ (Error::BuildFailed { .. } | Error::BuildTimedOut { .. })) => {
                running.keep();
                return Err(e);
            }
            Err(e) => {
                running.delete().await;
                return Err(e);
            }
        };
        timings.build = t.elapsed();
        tracing::info!(
            job = %job_name,
            seconds = timings.build.as_secs_f64(),
            buildpack = %result.buildpack,
            slug_bytes = result.size,
            "built"
        );

        // 4. The Release, and the App pointed at it. Read the App again: its config may
        // have changed during the build (a new Release the App names, or the initial
        // config rewritten), and the Release must carry the current one. While the App
        // names the Release the build read, that read stands (it cannot have changed).
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let t = Instant::now();
        let app = self.app(&apps, push).await?;
        let release::Current {
            release: previous,
            config,
        } = read_for_build.refresh(&self.client, &app).await?;
        let created = release::create_next(&self.client, &app, &config, |version| {
            release::build_release(
                &app,
                previous.as_ref(),
                &config,
                version,
                &result,
                push,
                &job_name,
                s.web_port,
            )
        })
        .await?;
        let release_name = created.name_any();
        let patched = release::point_app(&self.client, &app, &created).await?;
        timings.release = t.elapsed();
        out.line(format!(
            "-----> Releasing {release_name} ({})",
            short(&push.commit)
        ))
        .await;
        tracing::info!(release = %release_name, "released");

        // 5. The rollout, as the operator reports it.
        let t = Instant::now();
        let urls = unless_cancelled(
            cancel,
            rollout::wait(
                &self.client,
                &patched,
                &release_name,
                s.rollout_margin,
                &out,
            ),
        )
        .await?;
        timings.rollout = t.elapsed();
        out.line("=====> Application deployed").await;
        for url in &urls {
            out.line(format!("       {url}")).await;
        }
        Ok(Deployed {
            version: created.spec.version,
            release: release_name,
            urls,
            timings,
        })
    }

    async fn app(&self, apps: &Api<App>, push: &Push) -> Result<App, Error> {
        apps.get_opt(&push.app)
            .await
            .map_err(Error::kube(format!("reading app {}", push.app)))?
            .ok_or_else(|| Error::AppNotFound {
                namespace: push.namespace.clone(),
                app: push.app.clone(),
            })
    }

    async fn archive(
        &self,
        push: &Push,
        cancel: &CancellationToken,
    ) -> Result<archive::SourceArchive, Error> {
        let (repo, quarantine, commit) = (
            push.repo.clone(),
            push.quarantine.clone(),
            push.commit.clone(),
        );
        let tmp = self
            .settings
            .tmp_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let token = cancel.clone();
        let span = tracing::Span::current();
        let (limits, git) = (self.settings.limits, self.settings.git_program.clone());
        tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let request = archive::Request {
                repo: &repo,
                quarantine: quarantine.as_deref(),
                commit: &commit,
                tmp_dir: &tmp,
                git: &git,
                limits,
            };
            archive::archive(&request, &|| token.is_cancelled())
        })
        .await
        .map_err(|e| Error::Archive {
            commit: push.commit.clone(),
            source: ArchiveError::Io(std::io::Error::other(e)),
        })?
        .map_err(|source| match source {
            ArchiveError::Cancelled => Error::Cancelled,
            source if source.is_limit() => Error::SourceRefused {
                commit: short(&push.commit).to_owned(),
                source,
            },
            source => Error::Archive {
                commit: push.commit.clone(),
                source,
            },
        })
    }
}

fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}
