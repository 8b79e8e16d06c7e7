//! Heroku classic buildpacks: where they come from, and running their `bin/detect`,
//! `bin/compile` and `bin/release`.
//!
//! Buildpacks are untrusted code (the app can name any git URL), so they run with a clean
//! environment: nothing of the slugbuilder's own environment (store URLs, tokens) leaks
//! into them.

pub mod fetch;

use std::{
    collections::BTreeMap,
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Command,
    sync::mpsc,
};

use crate::{
    client::HttpClient,
    output::{Log, indent_line},
    release::{BuildpackRelease, ReleaseError},
    shell,
};

/// Where a buildpack comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildpackSource {
    /// A directory on this machine (`/path` or `file:///path`).
    Dir(PathBuf),
    /// A git repository, at `reference` (branch, tag or commit) when given: `URL#ref`.
    Git {
        /// The clone URL.
        url: String,
        /// The ref after `#`.
        reference: Option<String>,
    },
    /// A `.tgz`/`.tar.gz`/`.tar` at an http(s) URL.
    Tarball(String),
}

impl BuildpackSource {
    /// Parses a `BUILDPACK_URL` or `.buildpacks` line.
    pub fn parse(spec: &str) -> Self {
        let spec = spec.trim();
        if let Some(p) = spec.strip_prefix("file://") {
            return Self::Dir(PathBuf::from(p));
        }
        if spec.starts_with('/') {
            return Self::Dir(PathBuf::from(spec));
        }
        let (url, reference) = match spec.rsplit_once('#') {
            Some((u, r)) if !r.is_empty() => (u, Some(r.to_owned())),
            _ => (spec.trim_end_matches('#'), None),
        };
        let is_http = url.starts_with("http://") || url.starts_with("https://");
        if is_http && [".tgz", ".tar.gz", ".tar"].iter().any(|s| url.ends_with(s)) {
            return Self::Tarball(url.to_owned());
        }
        Self::Git {
            url: url.to_owned(),
            reference,
        }
    }
}

/// A buildpack failed, or could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BuildpackError {
    /// Installing (copying, cloning, downloading) failed.
    #[error("could not install buildpack {spec}: {reason}")]
    Install {
        /// The buildpack as named.
        spec: String,
        /// Why.
        reason: String,
    },
    /// Fetching a git buildpack failed.
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    /// A script could not be started.
    #[error("could not run {script}: {source}")]
    Spawn {
        /// The script.
        script: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `bin/compile` exited non-zero.
    #[error("the {name} buildpack's bin/compile failed with {status}; see its output above")]
    CompileFailed {
        /// The buildpack's name.
        name: String,
        /// The exit status.
        status: String,
    },
    /// `bin/release` exited non-zero.
    #[error("the {name} buildpack's bin/release failed with {status}: {stderr}")]
    ReleaseFailed {
        /// The buildpack's name.
        name: String,
        /// The exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `bin/release` printed something unparseable.
    #[error("the {name} buildpack: {source}")]
    Release {
        /// The buildpack's name.
        name: String,
        /// The parse error.
        #[source]
        source: ReleaseError,
    },
}

/// An installed buildpack: a writable directory with `bin/detect`, `bin/compile` and maybe
/// `bin/release`. Writable, because buildpacks write their `export` file next to `bin/`.
#[derive(Debug, Clone)]
pub struct Buildpack {
    /// Its directory.
    pub dir: PathBuf,
    /// What it was called (directory name or URL), until `detect` names it.
    pub id: String,
}

/// The environment every buildpack script gets (and nothing else of the slugbuilder's).
#[derive(Debug, Clone, Default)]
pub struct ScriptEnv {
    vars: BTreeMap<String, String>,
}

impl ScriptEnv {
    /// The base environment: `PATH`, `LANG`, `TMPDIR` from ours, plus `STACK`, `HOME`,
    /// `SOURCE_VERSION` and curl timeouts (which python and ruby buildpacks honour).
    pub fn new(stack: &str, home: &Path, source_version: Option<&str>) -> Self {
        let mut vars = BTreeMap::new();
        for k in [
            "PATH",
            "LANG",
            "TMPDIR",
            "http_proxy",
            "https_proxy",
            "no_proxy",
        ] {
            if let Ok(v) = std::env::var(k) {
                vars.insert(k.to_owned(), v);
            }
        }
        vars.entry("PATH".into())
            .or_insert_with(|| "/usr/local/bin:/usr/bin:/bin".into());
        vars.insert("STACK".into(), stack.into());
        vars.insert("HOME".into(), home.display().to_string());
        vars.insert("CURL_CONNECT_TIMEOUT".into(), "30".into());
        vars.insert("CURL_TIMEOUT".into(), "600".into());
        if let Some(v) = source_version {
            vars.insert("SOURCE_VERSION".into(), v.into());
        }
        Self { vars }
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.env_clear().envs(&self.vars);
    }
}

impl Buildpack {
    /// Installs the buildpack from `source` into `dest` (which must not exist yet).
    pub async fn install(
        source: &BuildpackSource,
        dest: &Path,
        client: &HttpClient,
    ) -> Result<Self, BuildpackError> {
        let spec = match source {
            BuildpackSource::Dir(d) => d.display().to_string(),
            BuildpackSource::Git { url, reference } => match reference {
                Some(r) => format!("{url}#{r}"),
                None => url.clone(),
            },
            BuildpackSource::Tarball(u) => u.split('?').next().unwrap_or(u).to_owned(),
        };
        let fail = |reason: String| BuildpackError::Install {
            spec: spec.clone(),
            reason,
        };
        match source {
            BuildpackSource::Dir(dir) => {
                if !dir.join("bin/compile").is_file() {
                    return Err(fail("it has no bin/compile".into()));
                }
                // A copy, so the image's buildpacks stay pristine and `export` is writable.
                run_quiet(Command::new("cp").arg("-a").arg(dir).arg(dest))
                    .await
                    .map_err(fail)?;
            }
            BuildpackSource::Git { url, reference } => {
                // The one git path (see `fetch`): uncached, as an app's own buildpack URL
                // may name a branch that moves.
                let bp = fetch::BuildpackRef {
                    name: fetch::name_from_url(url),
                    url: url.clone(),
                    reference: reference.clone(),
                };
                fetch::fetch(&bp, dest, None).await?;
            }
            BuildpackSource::Tarball(url) => {
                let (body, _) = client
                    .get(url)
                    .await
                    .map_err(|e| fail(e.to_string()))?
                    .ok_or_else(|| fail("the URL answered 404 Not Found".into()))?;
                let dest2 = dest.to_owned();
                let reader = tokio_util::io::SyncIoBridge::new(body);
                let gz = url.ends_with("gz");
                tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(&dest2)?;
                    if gz {
                        tar::Archive::new(flate2::read::GzDecoder::new(reader)).unpack(&dest2)
                    } else {
                        tar::Archive::new(reader).unpack(&dest2)
                    }
                })
                .await
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(format!("unpacking: {e}")))?;
                hoist_single_directory(dest)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
        if !dest.join("bin/compile").is_file() {
            return Err(fail("it has no bin/compile".into()));
        }
        make_scripts_executable(dest)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            dir: dest.to_owned(),
            id: spec,
        })
    }

    fn script(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    /// Runs `bin/detect BUILD_DIR`: `Ok(Some(name))` when it applies, `Ok(None)` with its
    /// stderr kept in `Err`-free form otherwise (see [`Detection`]).
    pub async fn detect(
        &self,
        build_dir: &Path,
        env: &ScriptEnv,
    ) -> Result<Detection, BuildpackError> {
        let script = self.script("detect");
        let mut cmd = Command::new(&script);
        env.apply(&mut cmd);
        cmd.arg(build_dir)
            .current_dir(build_dir)
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .await
            .map_err(|source| BuildpackError::Spawn { script, source })?;
        let name = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        // herokuish treats empty stdout as "no" too: the name is part of the contract.
        if out.status.success() && !name.is_empty() {
            Ok(Detection::Yes(name))
        } else {
            Ok(Detection::No(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ))
        }
    }

    /// Runs `bin/compile BUILD_DIR CACHE_DIR ENV_DIR` after sourcing `exports` (the `export`
    /// files of earlier buildpacks), streaming its stdout and stderr to `log` line by line.
    pub async fn compile(
        &self,
        name: &str,
        dirs: &BuildDirs<'_>,
        exports: &[PathBuf],
        env: &ScriptEnv,
        log: &Log,
    ) -> Result<(), BuildpackError> {
        let script = self.script("compile");
        let mut prelude = String::new();
        for e in exports {
            prelude.push_str(&format!(
                ". {} || exit 1; ",
                shell::quote(&e.display().to_string())
            ));
        }
        prelude.push_str("exec \"$0\" \"$@\"");
        let mut cmd = Command::new("bash");
        env.apply(&mut cmd);
        cmd.arg("-c")
            .arg(prelude)
            .arg(&script)
            .args([dirs.build, dirs.cache, dirs.env])
            .current_dir(dirs.build)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| BuildpackError::Spawn {
            script: script.clone(),
            source,
        })?;
        let (tx, mut rx) = mpsc::channel::<String>(256);
        let readers = [
            child
                .stdout
                .take()
                .map(|s| tokio::spawn(forward_lines(s, tx.clone()))),
            child
                .stderr
                .take()
                .map(|s| tokio::spawn(forward_lines(s, tx.clone()))),
        ];
        drop(tx);
        while let Some(line) = rx.recv().await {
            log.line(&indent_line(&line));
        }
        for r in readers.into_iter().flatten() {
            let _ = r.await;
        }
        let status = child
            .wait()
            .await
            .map_err(|source| BuildpackError::Spawn { script, source })?;
        if status.success() {
            Ok(())
        } else {
            Err(BuildpackError::CompileFailed {
                name: name.to_owned(),
                status: describe(status),
            })
        }
    }

    /// Runs `bin/release BUILD_DIR CACHE_DIR` when present, after sourcing `exports`.
    /// Returns the parsed release and its raw text.
    pub async fn release(
        &self,
        name: &str,
        dirs: &BuildDirs<'_>,
        env: &ScriptEnv,
    ) -> Result<(BuildpackRelease, String), BuildpackError> {
        let script = self.script("release");
        if !script.is_file() {
            return Ok((BuildpackRelease::default(), String::new()));
        }
        let mut cmd = Command::new(&script);
        env.apply(&mut cmd);
        cmd.arg(dirs.build)
            .arg(dirs.cache)
            .current_dir(dirs.build)
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .await
            .map_err(|source| BuildpackError::Spawn { script, source })?;
        if !out.status.success() {
            return Err(BuildpackError::ReleaseFailed {
                name: name.to_owned(),
                status: describe(out.status),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let release = BuildpackRelease::parse(&text).map_err(|source| BuildpackError::Release {
            name: name.to_owned(),
            source,
        })?;
        Ok((release, text))
    }

    /// The `export` file this buildpack may have written during compile.
    pub fn export_file(&self) -> PathBuf {
        self.dir.join("export")
    }
}

/// The outcome of `bin/detect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    /// It applies; the buildpack's name.
    Yes(String),
    /// It does not; its stderr (shown when the buildpack was chosen explicitly).
    No(String),
}

/// The three directories of the buildpack API.
#[derive(Debug, Clone, Copy)]
pub struct BuildDirs<'a> {
    /// BUILD_DIR: the app, becomes the slug.
    pub build: &'a Path,
    /// CACHE_DIR: kept between builds of the app.
    pub cache: &'a Path,
    /// ENV_DIR: one file per config var.
    pub env: &'a Path,
}

/// The buildpacks baked into the builder image, in detection order: the subdirectories of
/// `dir` named in its `order` file (one per line), else all of them sorted by name (so
/// `10-python`, `20-static`, ... order themselves).
pub async fn builtin_order(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let order = dir.join("order");
    if let Ok(text) = tokio::fs::read_to_string(&order).await {
        return Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| dir.join(l))
            .collect());
    }
    let mut names = Vec::new();
    let mut rd = tokio::fs::read_dir(dir).await?;
    while let Some(e) = rd.next_entry().await? {
        if e.file_type().await?.is_dir() {
            names.push(e.path());
        }
    }
    names.sort();
    Ok(names)
}

async fn forward_lines(r: impl AsyncRead + Unpin, tx: mpsc::Sender<String>) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send(line).await.is_err() {
            break;
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

async fn run_quiet(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Tarballs from GitHub and the like hold one top-level directory; use its contents.
async fn hoist_single_directory(dest: &Path) -> io::Result<()> {
    if dest.join("bin").is_dir() {
        return Ok(());
    }
    let mut rd = tokio::fs::read_dir(dest).await?;
    let mut entries = Vec::new();
    while let Some(e) = rd.next_entry().await? {
        entries.push(e.path());
    }
    if let [only] = entries.as_slice()
        && only.is_dir()
    {
        let tmp = dest.with_extension("hoist");
        tokio::fs::rename(only, &tmp).await?;
        tokio::fs::remove_dir(dest).await?;
        tokio::fs::rename(&tmp, dest).await?;
    }
    Ok(())
}

/// `chmod +x bin/*`, as heroku-buildpack-multi does: tarballs and zips lose modes.
async fn make_scripts_executable(dir: &Path) -> io::Result<()> {
    let mut rd = tokio::fs::read_dir(dir.join("bin")).await?;
    while let Some(e) = rd.next_entry().await? {
        let meta = e.metadata().await?;
        if meta.is_file() {
            let mut perm = meta.permissions();
            perm.set_mode(perm.mode() | 0o755);
            tokio::fs::set_permissions(e.path(), perm).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildpack_urls() {
        assert_eq!(
            BuildpackSource::parse("/buildpacks/python"),
            BuildpackSource::Dir("/buildpacks/python".into())
        );
        assert_eq!(
            BuildpackSource::parse("file:///bp"),
            BuildpackSource::Dir("/bp".into())
        );
        assert_eq!(
            BuildpackSource::parse("https://github.com/heroku/heroku-buildpack-go#v231"),
            BuildpackSource::Git {
                url: "https://github.com/heroku/heroku-buildpack-go".into(),
                reference: Some("v231".into())
            }
        );
        assert_eq!(
            BuildpackSource::parse("https://example.com/bp.tgz"),
            BuildpackSource::Tarball("https://example.com/bp.tgz".into())
        );
        assert_eq!(
            BuildpackSource::parse("git@example.com:bp.git"),
            BuildpackSource::Git {
                url: "git@example.com:bp.git".into(),
                reference: None
            }
        );
    }
}
