//! The slugbuilder: app source in, slug out.
//!
//! 1. unpack the source tarball into BUILD_DIR, drop what `.slugignore` lists; write config
//!    vars into ENV_DIR;
//! 2. restore the app's build cache into CACHE_DIR;
//! 3. choose buildpacks: `BUILDPACK_URL`, else the app's `.buildpacks`, else the first of
//!    the builtin list whose `bin/detect` says yes (the builtin list: the image's buildpacks
//!    directory, or `BUILDPACK_URLS` fetched one by one as detection reaches them);
//! 4. run each one's `bin/compile` (sourcing earlier buildpacks' `export`), then the last
//!    one's `bin/release`;
//! 5. work out the process types: the Procfile over the buildpack's defaults;
//! 6. pack BUILD_DIR into `slug.tgz`, upload it and the cache, and report a [`BuildResult`].

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::{
    buildpack::{
        BuildDirs, Buildpack, BuildpackError, BuildpackSource, Detection, ScriptEnv, builtin_order,
        fetch::{self, BuildpackRef},
    },
    client::{ClientError, HttpClient},
    output::{Log, human_size},
    procfile::{Procfile, ProcfileError},
    release::RELEASE_FILE,
    shell,
    slug::{self, SlugError},
    slugignore::{self, SlugIgnore},
};

/// The stack buildpacks are told they run on. Heroku's python buildpack refuses anything it
/// does not know (never the historical `cedar-14`); the Debian bookworm base is close enough
/// to heroku-22/24 for buildpacks that only use the system's tools.
pub const DEFAULT_STACK: &str = "heroku-24";

/// Where the app's source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local tarball (`.tar.gz` or `.tar`).
    File(PathBuf),
    /// A tarball on stdin.
    Stdin,
    /// A tarball at an http(s) URL (a signed store URL).
    Url(String),
}

impl Source {
    /// `-` is stdin, `http(s)://` a URL, anything else a file.
    pub fn parse(s: &str) -> Self {
        if s == "-" {
            Self::Stdin
        } else if s.starts_with("http://") || s.starts_with("https://") {
            Self::Url(s.to_owned())
        } else {
            Self::File(s.into())
        }
    }
}

/// What to build and where to put it.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The app's name, for the output.
    pub app: String,
    /// The source tarball.
    pub source: Source,
    /// Scratch space: each build makes (and removes) a `build-*` directory here holding
    /// `build/`, `cache/`, `env/`, `buildpacks/` and `slug.tgz`.
    pub work_dir: PathBuf,
    /// The builtin buildpacks, in detection order (see [`builtin_order`]).
    pub buildpacks_dir: PathBuf,
    /// A list that replaces the builtin buildpacks (`BUILDPACK_URLS`): fetched on first use,
    /// in order, as detection reaches each (see [`fetch::parse_urls`]). Empty: the
    /// directory above.
    pub buildpack_urls: Vec<BuildpackRef>,
    /// Where fetched git buildpacks of `buildpack_urls` are cached, keyed by URL and ref
    /// (none: fetched by every build).
    pub buildpack_cache: Option<PathBuf>,
    /// Config vars, given to buildpacks as ENV_DIR files. `BUILDPACK_URL` among them picks
    /// the buildpack.
    pub env: BTreeMap<String, String>,
    /// Where to PUT the slug (a store URL, signed with `access=rw` or used with the token).
    pub slug_put_url: Option<String>,
    /// Also (or only) write the slug to this file.
    pub slug_file: Option<PathBuf>,
    /// The slug URL to report (e.g. a signed read-only URL); default: the PUT URL without
    /// its query.
    pub slug_url: Option<String>,
    /// The app's build cache (GET to restore, PUT to save).
    pub cache_url: Option<String>,
    /// Bearer token for the store, when the URLs are not signed.
    pub token: Option<String>,
    /// Refuse slugs larger than this (compressed bytes).
    pub max_slug_size: u64,
    /// `STACK` for buildpacks.
    pub stack: String,
    /// The commit being built (`SOURCE_VERSION`).
    pub source_version: Option<String>,
}

/// The machine-readable outcome of a successful build: what the git receiver needs for the
/// Release. Written as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildResult {
    /// Where the slug is (empty when it was only written to a file).
    pub url: String,
    /// SHA-256 of the slug, lower-case hex.
    pub sha256: String,
    /// Slug size in bytes.
    pub size: u64,
    /// Process types and their commands.
    pub process_types: BTreeMap<String, String>,
    /// The buildpack(s) used, by detected name.
    pub buildpack: String,
    /// Build duration in seconds.
    pub duration_seconds: f64,
}

/// Why a build failed. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The source could not be read or is not a tarball.
    #[error("could not read the app source: {0}")]
    Source(String),
    /// No builtin buildpack's detect matched.
    #[error(
        "no buildpack detected the app; tried: {}. Add the files one of them looks for, set BUILDPACK_URL, or list buildpacks in a .buildpacks file",
        .tried.join(", ")
    )]
    NoBuildpack {
        /// The buildpacks tried, in order.
        tried: Vec<String>,
    },
    /// An explicitly chosen buildpack does not apply.
    #[error("the buildpack {spec} does not apply to this app (bin/detect said no){}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    NotDetected {
        /// The buildpack.
        spec: String,
        /// Its detect's stderr.
        stderr: String,
    },
    /// A buildpack failed.
    #[error(transparent)]
    Buildpack(#[from] BuildpackError),
    /// A buildpack of `BUILDPACK_URLS` could not be fetched.
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    /// The Procfile is malformed.
    #[error("{0}; fix the Procfile and push again")]
    Procfile(#[from] ProcfileError),
    /// Packing failed or the slug is too big.
    #[error(transparent)]
    Slug(#[from] SlugError),
    /// Uploading or downloading failed.
    #[error("slug store: {0}")]
    Store(#[from] ClientError),
    /// Local filesystem trouble.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_owned();
    move |source| BuildError::Io {
        action,
        path,
        source,
    }
}

/// Runs a build, writing the user's output to `log` and reading stdin when the source is.
pub async fn build(opts: &BuildOptions, log: &Log) -> Result<BuildResult, BuildError> {
    let started = Instant::now();
    let client = HttpClient::new(opts.token.clone());
    // A fresh directory per build, removed afterwards: a rerun in the same work dir (or a
    // restarted container) must not build on a previous build's leftovers.
    tokio::fs::create_dir_all(&opts.work_dir)
        .await
        .map_err(io_err("creating", &opts.work_dir))?;
    let scratch = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(&opts.work_dir)
        .map_err(io_err("creating a directory in", &opts.work_dir))?;
    let work = scratch.path();
    let (build_dir, cache_dir, env_dir, bp_dir) = (
        work.join("build"),
        work.join("cache"),
        work.join("env"),
        work.join("buildpacks"),
    );
    for d in [&build_dir, &cache_dir, &env_dir, &bp_dir] {
        tokio::fs::create_dir_all(d)
            .await
            .map_err(io_err("creating", d))?;
    }
    let dirs = BuildDirs {
        build: &build_dir,
        cache: &cache_dir,
        env: &env_dir,
    };

    log.header(&format!("Building {}...", opts.app));
    fetch_source(&opts.source, &client, &build_dir).await?;
    apply_slugignore(&build_dir, log).await?;
    write_env_dir(&env_dir, &opts.env).await?;
    let restored_cache = match &opts.cache_url {
        Some(url) => restore_cache(url, &client, &cache_dir, log).await?,
        None => None,
    };

    let env = ScriptEnv::new(&opts.stack, &build_dir, opts.source_version.as_deref());
    let chosen = choose_buildpacks(opts, &client, &build_dir, &bp_dir, &env, log).await?;

    let mut exports = Vec::new();
    let mut last_release = None;
    for (bp, name) in &chosen {
        bp.compile(name, &dirs, &exports, &env, log).await?;
        if bp.export_file().is_file() {
            exports.push(bp.export_file());
        }
        last_release = Some(bp.release(name, &dirs, &env).await?);
    }
    let (release, release_text) = last_release.unwrap_or_default();

    log.header("Discovering process types");
    let procfile = match tokio::fs::read_to_string(build_dir.join("Procfile")).await {
        Ok(text) => Some(Procfile::parse(&text)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("reading", &build_dir.join("Procfile"))(e)),
    };
    let defaults = release.default_procfile();
    if let Some(p) = &procfile {
        log.info(&format!("Procfile declares types -> {}", list(p.types())));
    }
    if !defaults.is_empty() {
        log.info(&format!(
            "Default types for buildpack -> {}",
            list(defaults.types())
        ));
    }
    let process_types = procfile.unwrap_or_default().merged_over(&defaults);
    if process_types.is_empty() {
        log.info("No process types: add a Procfile (e.g. `web: ./server`) to run anything but `flynn run`");
    }
    write_release_files(&build_dir, &release_text, &release.config_vars()).await?;

    log.header("Compressing...");
    let slug_path = work.join("slug.tgz");
    let (b, s, max) = (build_dir.clone(), slug_path.clone(), opts.max_slug_size);
    let info = tokio::task::spawn_blocking(move || slug::pack(&b, &s, max))
        .await
        .map_err(|e| BuildError::Source(e.to_string()))??;
    log.info(&format!("Done: {}", human_size(info.size)));
    log.header(&format!("Compiled slug size is {}", human_size(info.size)));

    if let Some(url) = &opts.slug_put_url {
        client.put_file(url, &slug_path, Some(&info.sha256)).await?;
    }
    if let Some(file) = &opts.slug_file {
        tokio::fs::copy(&slug_path, file)
            .await
            .map_err(io_err("writing", file))?;
    }
    if let Some(url) = &opts.cache_url {
        save_cache(url, &client, &cache_dir, work, restored_cache.as_deref()).await?;
    }

    let url = opts
        .slug_url
        .clone()
        .or_else(|| {
            opts.slug_put_url
                .as_ref()
                .map(|u| u.split('?').next().unwrap_or(u).to_owned())
        })
        .unwrap_or_default();
    Ok(BuildResult {
        url,
        sha256: info.sha256,
        size: info.size,
        process_types: process_types.to_map(),
        buildpack: chosen
            .iter()
            .map(|(_, n)| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        duration_seconds: round_ms(started.elapsed()),
    })
}

fn round_ms(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

async fn fetch_source(source: &Source, client: &HttpClient, dest: &Path) -> Result<(), BuildError> {
    let reader: Box<dyn AsyncRead + Send + Unpin> = match source {
        Source::File(p) => Box::new(
            tokio::fs::File::open(p)
                .await
                .map_err(|e| BuildError::Source(format!("{}: {e}", p.display())))?,
        ),
        Source::Stdin => Box::new(tokio::io::stdin()),
        Source::Url(u) => Box::new(
            client
                .get(u)
                .await?
                .ok_or_else(|| BuildError::Source("the source URL answered 404 Not Found".into()))?
                .0,
        ),
    };
    unpack_async(reader, dest)
        .await
        .map_err(|e| BuildError::Source(e.to_string()))
}

/// Unpacks a source tarball (gzip'd or plain) from an async reader, on a blocking thread.
async fn unpack_async(
    reader: impl AsyncRead + Send + Unpin + 'static,
    dest: &Path,
) -> Result<(), SlugError> {
    let dest = dest.to_owned();
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    tokio::task::spawn_blocking(move || slug::unpack_source(bridge, &dest))
        .await
        .map_err(|e| SlugError::Corrupt(e.to_string()))?
}

async fn apply_slugignore(build_dir: &Path, log: &Log) -> Result<(), BuildError> {
    let path = build_dir.join(slugignore::FILE);
    let Ok(text) = tokio::fs::read_to_string(&path).await else {
        return Ok(());
    };
    let (dir, ignore) = (build_dir.to_owned(), SlugIgnore::parse(&text));
    let removed = tokio::task::spawn_blocking(move || ignore.apply(&dir))
        .await
        .map_err(|e| BuildError::Source(e.to_string()))?
        .map_err(io_err("applying .slugignore in", build_dir))?;
    if !removed.is_empty() {
        log.header(&format!(
            "Removed {} path(s) listed in .slugignore",
            removed.len()
        ));
    }
    Ok(())
}

async fn write_env_dir(dir: &Path, env: &BTreeMap<String, String>) -> Result<(), BuildError> {
    for (k, v) in env {
        // Names become file names: refuse anything that is not a plain variable name.
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(BuildError::Source(format!(
                "config var name `{k}` is not a valid environment variable name (letters, digits, _)"
            )));
        }
        let p = dir.join(k);
        tokio::fs::write(&p, v)
            .await
            .map_err(io_err("writing", &p))?;
    }
    Ok(())
}

/// Restores the cache; the SHA-256 of the restored tarball, to skip saving it unchanged.
async fn restore_cache(
    url: &str,
    client: &HttpClient,
    dir: &Path,
    log: &Log,
) -> Result<Option<String>, BuildError> {
    let Some((body, len)) = client.get(url).await? else {
        tracing::info!("no build cache yet");
        return Ok(None);
    };
    log.header(&format!(
        "Restoring build cache ({})",
        human_size(len.unwrap_or(0))
    ));
    let (d, bridge) = (dir.to_owned(), tokio_util::io::SyncIoBridge::new(body));
    let unpacked = tokio::task::spawn_blocking(move || slug::unpack(bridge, &d, None))
        .await
        .map_err(|e| SlugError::Corrupt(e.to_string()));
    match unpacked {
        Ok(Ok(info)) => Ok(Some(info.sha256)),
        // A damaged cache must not fail the build: start from an empty one.
        Ok(Err(e)) | Err(e) => {
            log.info(&format!(
                "The build cache is unusable ({e}); building without it"
            ));
            let _ = tokio::fs::remove_dir_all(dir).await;
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(io_err("creating", dir))?;
            Ok(None)
        }
    }
}

/// Packs and uploads the cache, unless it is byte for byte the one restored (packing is
/// deterministic: sorted entries, preserved modes and mtimes), which saves the upload.
async fn save_cache(
    url: &str,
    client: &HttpClient,
    dir: &Path,
    work: &Path,
    restored: Option<&str>,
) -> Result<(), BuildError> {
    let tgz = work.join("cache.tgz");
    let (d, t) = (dir.to_owned(), tgz.clone());
    let info = tokio::task::spawn_blocking(move || slug::pack(&d, &t, u64::MAX))
        .await
        .map_err(|e| BuildError::Source(e.to_string()))??;
    if restored == Some(info.sha256.as_str()) {
        tracing::info!("build cache unchanged; not uploading it");
        return Ok(());
    }
    client.put_file(url, &tgz, Some(&info.sha256)).await?;
    Ok(())
}

async fn choose_buildpacks(
    opts: &BuildOptions,
    client: &HttpClient,
    build_dir: &Path,
    bp_dir: &Path,
    env: &ScriptEnv,
    log: &Log,
) -> Result<Vec<(Buildpack, String)>, BuildError> {
    let explicit: Vec<String> = if let Some(url) = opts
        .env
        .get("BUILDPACK_URL")
        .filter(|u| !u.trim().is_empty())
    {
        vec![url.trim().to_owned()]
    } else {
        match tokio::fs::read_to_string(build_dir.join(".buildpacks")).await {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect(),
            Err(_) => Vec::new(),
        }
    };

    let mut chosen = Vec::new();
    if !explicit.is_empty() {
        for (i, spec) in explicit.iter().enumerate() {
            let bp = Buildpack::install(
                &BuildpackSource::parse(spec),
                &bp_dir.join(format!("{i:02}")),
                client,
            )
            .await?;
            match bp.detect(build_dir, env).await? {
                Detection::Yes(name) => {
                    log.header(&format!("{name} app detected"));
                    chosen.push((bp, name));
                }
                Detection::No(stderr) => {
                    return Err(BuildError::NotDetected {
                        spec: spec.clone(),
                        stderr,
                    });
                }
            }
        }
        return Ok(chosen);
    }

    if !opts.buildpack_urls.is_empty() {
        return detect_from_urls(opts, client, build_dir, bp_dir, env, log).await;
    }

    let order = builtin_order(&opts.buildpacks_dir)
        .await
        .map_err(io_err("listing", &opts.buildpacks_dir))?;
    let mut tried = Vec::new();
    for dir in order {
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Detect runs on the image's pristine copy; only the chosen one is copied to be writable.
        let probe = Buildpack {
            dir: dir.clone(),
            id: id.clone(),
        };
        if let Detection::Yes(name) = probe.detect(build_dir, env).await? {
            let bp =
                Buildpack::install(&BuildpackSource::Dir(dir), &bp_dir.join("00"), client).await?;
            log.header(&format!("{name} app detected"));
            chosen.push((bp, name));
            return Ok(chosen);
        }
        tried.push(id);
    }
    Err(BuildError::NoBuildpack { tried })
}

/// The builtin detection over `BUILDPACK_URLS`: each buildpack is fetched when detection
/// reaches it (a git URL through [`fetch`], with the cache; a directory or tarball as
/// `BUILDPACK_URL` would be), into its own writable directory; the first whose detect says
/// yes is used. A buildpack that cannot be fetched fails the build: the list is the
/// platform's, and skipping one would build the app differently.
async fn detect_from_urls(
    opts: &BuildOptions,
    client: &HttpClient,
    build_dir: &Path,
    bp_dir: &Path,
    env: &ScriptEnv,
    log: &Log,
) -> Result<Vec<(Buildpack, String)>, BuildError> {
    let mut tried = Vec::new();
    for (i, bp) in opts.buildpack_urls.iter().enumerate() {
        let dest = bp_dir.join(format!("{i:02}-{}", bp.name));
        let candidate = match BuildpackSource::parse(&bp.spec()) {
            BuildpackSource::Git { .. } => {
                let f = fetch::fetch(bp, &dest, opts.buildpack_cache.as_deref()).await?;
                tracing::info!(
                    buildpack = %bp.name,
                    url = %bp.spec(),
                    commit = %f.commit,
                    cached = f.cached,
                    "fetched a buildpack"
                );
                Buildpack {
                    dir: dest,
                    id: bp.name.clone(),
                }
            }
            other => Buildpack::install(&other, &dest, client).await?,
        };
        if let Detection::Yes(name) = candidate.detect(build_dir, env).await? {
            log.header(&format!("{name} app detected"));
            return Ok(vec![(candidate, name)]);
        }
        tried.push(bp.name.clone());
    }
    Err(BuildError::NoBuildpack { tried })
}

/// Keeps the buildpack's release output in the slug (for the runner's fallback process
/// types) and turns its config vars into a profile script that the app's own config
/// overrides.
async fn write_release_files(
    build_dir: &Path,
    release_text: &str,
    config_vars: &BTreeMap<String, String>,
) -> Result<(), BuildError> {
    let p = build_dir.join(RELEASE_FILE);
    tokio::fs::write(&p, release_text)
        .await
        .map_err(io_err("writing", &p))?;
    if config_vars.is_empty() {
        return Ok(());
    }
    let dir = build_dir.join(".profile.d");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(io_err("creating", &dir))?;
    let mut script =
        String::from("# Config vars from the buildpack's bin/release; the app's config wins.\n");
    for (k, v) in config_vars {
        if k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            script.push_str(&format!(
                "[ -n \"${{{k}:-}}\" ] || export {k}={}\n",
                shell::quote(v)
            ));
        }
    }
    let p = dir.join("00_config_vars.sh");
    tokio::fs::write(&p, script)
        .await
        .map_err(io_err("writing", &p))?;
    Ok(())
}
