//! What a receiver deployment configures about its pipeline (flags of the binary; the chart
//! sets them). Plain data, so `main.rs` maps flags onto it and tests build it directly.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

pub use super::archive::Limits;

/// Settings of [`Pipeline`](super::Pipeline).
#[derive(Clone)]
pub struct PipelineSettings {
    /// The slug store as this receiver reaches it, for uploading sources, e.g.
    /// `http://shelf.flynn-system.svc:8080`.
    pub shelf_url: String,
    /// The slug store as pods (build Jobs, app containers) reach it; the URLs in Jobs and
    /// Releases start with this. Often the same as `shelf_url`, but not when the receiver
    /// runs outside the cluster (development, tests).
    pub shelf_pod_url: String,
    /// The store's bearer token: uploads sources with it, and signs the capability URLs
    /// the Jobs and Releases get (it never leaves the receiver).
    pub shelf_token: String,
    /// The slugbuilder image (entrypoint `slugbuilder`).
    pub slugbuilder_image: String,
    /// Its pull policy (`IfNotPresent` on a real cluster; `Never` for images loaded into a
    /// local node, which gives a clear error instead of a pull attempt).
    pub slugbuilder_pull_policy: String,
    /// Longest a build may run (the Job's `activeDeadlineSeconds`). Default 15 minutes,
    /// Heroku's compile limit.
    pub build_timeout: Duration,
    /// Longest a build pod may stay pending (scheduling, image pull) before the push fails.
    pub build_start_timeout: Duration,
    /// How long a finished build Job (and its pod and log) stays for `kubectl logs`
    /// (`ttlSecondsAfterFinished`).
    pub job_ttl: Duration,
    /// Resource requests of the build container (`cpu`, `memory`, ...: quantities).
    pub build_requests: BTreeMap<String, String>,
    /// Resource limits of the build container.
    pub build_limits: BTreeMap<String, String>,
    /// The port `web` processes listen on (`$PORT`); the operator exposes it through the
    /// `<app>-web` Service, which the router sends traffic to. Flynn's was 8080.
    pub web_port: i32,
    /// Waited for a rollout beyond the App's `deployTimeoutSeconds`, so the operator's
    /// own verdict (rolled back, timed out) arrives before the receiver gives up.
    pub rollout_margin: Duration,
    /// Where source tarballs are written before upload (the system's temp dir if `None`).
    /// Each push in flight writes at most one, never larger than the gzip of
    /// `limits.max_source_bytes`; it is deleted when the push ends, however it ends.
    pub tmp_dir: Option<PathBuf>,
    /// What archiving one commit may cost: its files' total size, its tree's depth.
    pub limits: Limits,
    /// The `git` executable (`cat-file` streams the files into the tarball).
    pub git_program: PathBuf,
    /// Buildpacks (`URL#REF`) that replace the ones baked into the slugbuilder image, given
    /// to each build Job as `BUILDPACK_URLS` (fetched by the build). Empty: the image's.
    pub buildpack_urls: Vec<String>,
}

impl std::fmt::Debug for PipelineSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineSettings")
            .field("shelf_url", &self.shelf_url)
            .field("shelf_pod_url", &self.shelf_pod_url)
            .field("shelf_token", &"..")
            .field("slugbuilder_image", &self.slugbuilder_image)
            .field("slugbuilder_pull_policy", &self.slugbuilder_pull_policy)
            .field("build_timeout", &self.build_timeout)
            .field("build_start_timeout", &self.build_start_timeout)
            .field("job_ttl", &self.job_ttl)
            .field("build_requests", &self.build_requests)
            .field("build_limits", &self.build_limits)
            .field("web_port", &self.web_port)
            .field("rollout_margin", &self.rollout_margin)
            .field("tmp_dir", &self.tmp_dir)
            .field("limits", &self.limits)
            .field("git_program", &self.git_program)
            .field("buildpack_urls", &self.buildpack_urls)
            .finish()
    }
}

impl Default for PipelineSettings {
    /// The in-cluster defaults of the chart; `shelf_token` must still be set.
    fn default() -> Self {
        let shelf = "http://shelf.flynn-system.svc:8080".to_owned();
        Self {
            shelf_url: shelf.clone(),
            shelf_pod_url: shelf,
            shelf_token: String::new(),
            slugbuilder_image: "localhost/flynn-slugbuilder:dev".into(),
            slugbuilder_pull_policy: "IfNotPresent".into(),
            build_timeout: Duration::from_secs(15 * 60),
            build_start_timeout: Duration::from_secs(5 * 60),
            job_ttl: Duration::from_secs(60 * 60),
            build_requests: BTreeMap::from([
                ("cpu".into(), "250m".into()),
                ("memory".into(), "256Mi".into()),
            ]),
            build_limits: BTreeMap::from([("memory".into(), "2Gi".into())]),
            web_port: 8080,
            rollout_margin: Duration::from_secs(30),
            tmp_dir: None,
            limits: Limits::default(),
            git_program: PathBuf::from("git"),
            buildpack_urls: Vec::new(),
        }
    }
}
