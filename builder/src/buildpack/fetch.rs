//! Fetching buildpacks from git: the one code path for every git buildpack, used
//!
//! - when the builder image is built (`slugbuilder fetch-buildpacks --list FILE --out DIR`,
//!   [`fetch_list`]): a list of pinned buildpacks (`builder/buildpacks/heroku.list`) laid out
//!   the way `--buildpacks-dir` reads it, one directory per buildpack, an `order` file and a
//!   `buildpacks.lock` recording the commit each ref resolved to;
//! - by a build (`BUILDPACK_URLS`, the chart's `slugbuilder.buildpacks`), each buildpack of
//!   the list on first use, while detection walks it in order;
//! - for an app's own `BUILDPACK_URL` or `.buildpacks` git URLs.
//!
//! A fetch is a shallow `git fetch` of the one ref into an empty repository (branches, tags
//! and full commit ids alike; an abbreviated commit falls back to fetching every branch and
//! tag), a checkout of the commit it resolved to, and the tree without `.git`. With a cache
//! directory, the tree is kept under a key of URL and ref, and later fetches of the same
//! URL and ref copy it without any network access: refs are taken to be immutable (release
//! tags, commits); a cached branch stays as first fetched until its entry is removed.
//!
//! git runs with the caller's environment (proxies, `url.<base>.insteadOf`, credentials
//! helpers) but never prompts (`GIT_TERMINAL_PROMPT=0`): a repository that wants a password
//! fails like an unreachable one.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use futures::StreamExt as _;
use tokio::process::Command;

use crate::digest;

/// The file of a fetched list's directory naming its buildpacks in detection order (what
/// [`builtin_order`](super::builtin_order) reads).
pub const ORDER_FILE: &str = "order";
/// The file of a fetched list's directory recording, per buildpack, `NAME URL#REF COMMIT`.
pub const LOCK_FILE: &str = "buildpacks.lock";

/// A buildpack to fetch: a name (its directory) and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildpackRef {
    /// The directory name, and how errors and `tried:` lists call it.
    pub name: String,
    /// The git URL (anything `git fetch` takes), without the `#ref`.
    pub url: String,
    /// The branch, tag or commit after `#`; `None` fetches the default branch.
    pub reference: Option<String>,
}

impl BuildpackRef {
    /// A `URL#REF` spec, named after its repository ([`name_from_url`]).
    pub fn from_spec(spec: &str) -> Self {
        let spec = spec.trim();
        let (url, reference) = split_ref(spec);
        Self {
            name: name_from_url(url),
            url: url.to_owned(),
            reference,
        }
    }

    /// `URL#REF` (or `URL`), as written.
    pub fn spec(&self) -> String {
        match &self.reference {
            Some(r) => format!("{}#{r}", self.url),
            None => self.url.clone(),
        }
    }

    /// The key of this URL and ref in a cache directory: readable, and unique per URL+ref.
    fn cache_key(&self) -> String {
        let hash = digest::hex(
            ring::digest::digest(&ring::digest::SHA256, self.spec().as_bytes()).as_ref(),
        );
        let repo = sanitize(
            self.url
                .trim_end_matches('/')
                .rsplit(['/', ':'])
                .next()
                .unwrap_or_default()
                .trim_end_matches(".git"),
        );
        let reference = sanitize(self.reference.as_deref().unwrap_or("HEAD"));
        format!("{repo}-{reference}-{}", &hash[..16])
    }
}

fn split_ref(spec: &str) -> (&str, Option<String>) {
    match spec.rsplit_once('#') {
        Some((u, r)) if !r.is_empty() => (u, Some(r.to_owned())),
        _ => (spec.trim_end_matches('#'), None),
    }
}

/// Keeps letters, digits, `.`, `_` and `-`; anything else becomes `-`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A buildpack's name from its URL: the repository's last path segment without `.git` (or
/// a tarball suffix) and without a `heroku-buildpack-` or `buildpack-` prefix:
/// `https://github.com/heroku/heroku-buildpack-nodejs.git` is `nodejs`.
pub fn name_from_url(url: &str) -> String {
    let last = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or_default();
    let mut name = last;
    for suffix in [".git", ".tgz", ".tar.gz", ".tar"] {
        name = name.strip_suffix(suffix).unwrap_or(name);
    }
    for prefix in ["heroku-buildpack-", "buildpack-"] {
        name = name.strip_prefix(prefix).unwrap_or(name);
    }
    let name = sanitize(name).trim_start_matches('.').to_owned();
    if name.is_empty() {
        "buildpack".into()
    } else {
        name
    }
}

/// A malformed buildpack list.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ListError {
    /// 1-based.
    pub line: usize,
    /// What is wrong and how to write it.
    pub message: String,
}

/// Parses a buildpack list file (`builder/buildpacks/heroku.list`): one `NAME URL#REF` per
/// line, blank lines and `#` comments ignored. Every buildpack must be pinned (`#REF`), and
/// names must be unique directory names.
pub fn parse_list(text: &str) -> Result<Vec<BuildpackRef>, ListError> {
    let mut out: Vec<BuildpackRef> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| ListError {
            line: i + 1,
            message,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, spec] = fields[..] else {
            return Err(err(format!(
                "expected `NAME URL#REF` (two fields), got `{line}`"
            )));
        };
        if name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || name == ORDER_FILE
            || name == LOCK_FILE
        {
            return Err(err(format!(
                "`{name}` is not a usable buildpack name: letters, digits, `.`, `_` and `-`, not starting with `.`, not `{ORDER_FILE}` or `{LOCK_FILE}`"
            )));
        }
        if out.iter().any(|b| b.name == name) {
            return Err(err(format!("the name `{name}` is used twice")));
        }
        let (url, reference) = split_ref(spec);
        let Some(reference) = reference else {
            return Err(err(format!(
                "`{url}` is not pinned: add `#` and a release tag or commit (e.g. `{url}#v1`), so that image builds are reproducible"
            )));
        };
        out.push(BuildpackRef {
            name: name.to_owned(),
            url: url.to_owned(),
            reference: Some(reference),
        });
    }
    Ok(out)
}

/// Parses `BUILDPACK_URLS`: `URL#REF` items separated by commas or newlines (blank items and
/// lines starting with `#` ignored), named after their repositories, a repeated name
/// getting `-2`, `-3`, ... so every buildpack has its own directory.
pub fn parse_urls(text: &str) -> Vec<BuildpackRef> {
    let mut out: Vec<BuildpackRef> = Vec::new();
    for item in text.split([',', '\n']).map(str::trim) {
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        let mut bp = BuildpackRef::from_spec(item);
        let base = bp.name.clone();
        let mut n = 1;
        while out.iter().any(|b| b.name == bp.name) {
            n += 1;
            bp.name = format!("{base}-{n}");
        }
        out.push(bp);
    }
    out
}

/// A buildpack could not be fetched. Each message names the buildpack, its URL and what git
/// said, and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The repository could not be reached (no such host or repository, refused, needs
    /// credentials).
    #[error(
        "could not fetch the {name} buildpack from {url}: {git}. Check the URL, and that the builder can reach it (network, proxy, DNS; a private repository needs credentials git can use)"
    )]
    Unreachable {
        /// The buildpack.
        name: String,
        /// Its URL.
        url: String,
        /// git's message.
        git: String,
    },
    /// The repository answered but has no such branch, tag or commit.
    #[error(
        "the {name} buildpack's repository {url} has no branch, tag or commit `{reference}` ({git}){}. Fix the ref after `#` in {url}#{reference}",
        if .tags.is_empty() { String::new() } else { format!("; its newest tags: {}", .tags.join(", ")) }
    )]
    UnknownRef {
        /// The buildpack.
        name: String,
        /// Its URL.
        url: String,
        /// The ref asked for.
        reference: String,
        /// git's message.
        git: String,
        /// The repository's newest tags, as a hint.
        tags: Vec<String>,
    },
    /// The checkout is not a classic buildpack.
    #[error(
        "the {name} buildpack ({spec}, commit {commit}) has no bin/{missing}: it is not a Heroku classic buildpack, which has bin/detect and bin/compile{}. Point it at a classic buildpack, or at a ref that has bin/{missing}",
        if *.cnb { " (its bin/build and buildpack.toml make it a Cloud Native Buildpack, which this builder does not run)" } else { "" }
    )]
    NotABuildpack {
        /// The buildpack.
        name: String,
        /// `URL#REF`.
        spec: String,
        /// The commit checked out.
        commit: String,
        /// `detect` or `compile`.
        missing: &'static str,
        /// It looks like a Cloud Native Buildpack.
        cnb: bool,
    },
    /// Another git step failed (checkout, submodules).
    #[error("the {name} buildpack ({spec}): {action} failed: {git}")]
    Git {
        /// The buildpack.
        name: String,
        /// `URL#REF`.
        spec: String,
        /// The step.
        action: &'static str,
        /// git's message.
        git: String,
    },
    /// The list's output directory could not be written.
    #[error("{action} {}: {source}", .path.display())]
    Output {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Local filesystem trouble.
    #[error("the {name} buildpack: {action} {}: {source}", .path.display())]
    Io {
        /// The buildpack.
        name: String,
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Several buildpacks of a list failed: each error, in list order.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct FetchErrors(pub Vec<FetchError>);

/// A fetched buildpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// What was fetched.
    pub buildpack: BuildpackRef,
    /// The commit the ref resolved to (full hex).
    pub commit: String,
    /// Where it is now: a writable tree with executable `bin/*` and no `.git`.
    pub dir: PathBuf,
    /// It came from the cache (no network).
    pub cached: bool,
}

/// Fetches `bp` into `dest` (which must not exist yet), through `cache` when given.
pub async fn fetch(
    bp: &BuildpackRef,
    dest: &Path,
    cache: Option<&Path>,
) -> Result<Fetched, FetchError> {
    let io = |action: &'static str, path: &Path| {
        let (name, path) = (bp.name.clone(), path.to_owned());
        move |source| FetchError::Io {
            name,
            action,
            path,
            source,
        }
    };
    let done = |commit: String, cached: bool| Fetched {
        buildpack: bp.clone(),
        commit,
        dir: dest.to_owned(),
        cached,
    };
    let Some(cache) = cache else {
        let parent = dest.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io("creating", parent))?;
        let staging = staging_dir(parent, bp).map_err(io("creating a directory in", parent))?;
        let commit = clone_into(bp, &staging.path().join("tree")).await?;
        tokio::fs::rename(staging.path().join("tree"), dest)
            .await
            .map_err(io("moving the checkout to", dest))?;
        return Ok(done(commit, false));
    };

    let entry = cache.join(bp.cache_key());
    if let Some(commit) = cached_commit(&entry).await {
        copy_tree(&entry.join("tree"), dest)
            .await
            .map_err(|e| io("copying the cached buildpack to", dest)(std::io::Error::other(e)))?;
        return Ok(done(commit, true));
    }
    tokio::fs::create_dir_all(cache)
        .await
        .map_err(io("creating the cache", cache))?;
    let staging = staging_dir(cache, bp).map_err(io("creating a directory in", cache))?;
    let commit = clone_into(bp, &staging.path().join("tree")).await?;
    let commit_file = staging.path().join("commit");
    tokio::fs::write(&commit_file, format!("{commit}\n"))
        .await
        .map_err(io("writing", &commit_file))?;
    // Complete entries only: a rename, so a concurrent or interrupted fetch never leaves a
    // half-written entry. If another fetch got there first, its entry is as good.
    if tokio::fs::rename(staging.path(), &entry).await.is_err()
        && cached_commit(&entry).await.is_none()
    {
        return Err(io("adding to the cache", &entry)(std::io::Error::other(
            "could not move the checkout into the cache",
        )));
    }
    copy_tree(&entry.join("tree"), dest)
        .await
        .map_err(|e| io("copying the cached buildpack to", dest)(std::io::Error::other(e)))?;
    Ok(done(commit, false))
}

fn staging_dir(parent: &Path, bp: &BuildpackRef) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!(".fetch-{}-", bp.name))
        .tempdir_in(parent)
}

async fn cached_commit(entry: &Path) -> Option<String> {
    let commit = tokio::fs::read_to_string(entry.join("commit")).await.ok()?;
    let commit = commit.trim();
    (!commit.is_empty() && entry.join("tree/bin/detect").is_file()).then(|| commit.to_owned())
}

async fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    run(Command::new("cp").arg("-a").arg(from).arg(to)).await
}

/// Fetches `bp` at its ref into `dir` (created), checks it is a classic buildpack, drops
/// `.git` and makes `bin/*` executable. Returns the commit.
async fn clone_into(bp: &BuildpackRef, dir: &Path) -> Result<String, FetchError> {
    let spec = bp.spec();
    let git_err = |action: &'static str| {
        let (name, spec) = (bp.name.clone(), spec.clone());
        move |git| FetchError::Git {
            name,
            spec,
            action,
            git,
        }
    };
    run(git(None)
        .args(["-c", "init.defaultBranch=main", "init", "--quiet"])
        .arg(dir))
    .await
    .map_err(git_err("git init"))?;
    let wanted = bp.reference.as_deref().unwrap_or("HEAD");
    let shallow = run(git(Some(dir))
        .args(["fetch", "--quiet", "--depth=1", "--no-tags", "--"])
        .arg(&bp.url)
        .arg(wanted))
    .await;
    let commit = match shallow {
        Ok(()) => rev_parse(dir, "FETCH_HEAD^{commit}")
            .await
            .map_err(git_err("resolving the fetched ref"))?,
        Err(fetch_msg) => {
            // Why: an unreachable repository, or a ref it does not have?
            let listed = git(None)
                .args(["ls-remote", "--tags", "--refs", "--"])
                .arg(&bp.url)
                .stdin(Stdio::null())
                .output()
                .await;
            let tags = match listed {
                Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.split('\t').nth(1)?.strip_prefix("refs/tags/"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
                _ => {
                    return Err(FetchError::Unreachable {
                        name: bp.name.clone(),
                        url: bp.url.clone(),
                        git: fetch_msg,
                    });
                }
            };
            let unknown = || FetchError::UnknownRef {
                name: bp.name.clone(),
                url: bp.url.clone(),
                reference: wanted.to_owned(),
                git: fetch_msg.clone(),
                tags: newest(tags.clone(), 5),
            };
            // An abbreviated commit cannot be fetched by name: fetch everything, look it up.
            if !(wanted.len() >= 4 && wanted.bytes().all(|b| b.is_ascii_hexdigit())) {
                return Err(unknown());
            }
            run(git(Some(dir))
                .args(["fetch", "--quiet", "--"])
                .arg(&bp.url)
                .args([
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ]))
            .await
            .map_err(|git| FetchError::Unreachable {
                name: bp.name.clone(),
                url: bp.url.clone(),
                git,
            })?;
            rev_parse(dir, &format!("{wanted}^{{commit}}"))
                .await
                .map_err(|_| unknown())?
        }
    };
    run(git(Some(dir))
        .args([
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--detach",
        ])
        .arg(&commit))
    .await
    .map_err(git_err("checking out the commit"))?;
    if dir.join(".gitmodules").is_file() {
        run(git(Some(dir)).args([
            "submodule",
            "update",
            "--quiet",
            "--init",
            "--recursive",
            "--depth=1",
        ]))
        .await
        .map_err(git_err("fetching its submodules"))?;
    }
    for (missing, path) in [("detect", "bin/detect"), ("compile", "bin/compile")] {
        if !dir.join(path).is_file() {
            return Err(FetchError::NotABuildpack {
                name: bp.name.clone(),
                spec,
                commit,
                missing,
                cnb: dir.join("bin/build").is_file() && dir.join("buildpack.toml").is_file(),
            });
        }
    }
    let io = |action: &'static str, path: PathBuf| {
        let name = bp.name.clone();
        move |source| FetchError::Io {
            name,
            action,
            path,
            source,
        }
    };
    tokio::fs::remove_dir_all(dir.join(".git"))
        .await
        .map_err(io("removing", dir.join(".git")))?;
    super::make_scripts_executable(dir)
        .await
        .map_err(io("making scripts executable in", dir.join("bin")))?;
    Ok(commit)
}

/// The newest `n` tags, by version-aware comparison (`v99` before `v100`).
fn newest(mut tags: Vec<String>, n: usize) -> Vec<String> {
    fn key(t: &str) -> Vec<(u64, String)> {
        // Alternating runs of digits (compared as numbers) and the rest.
        let mut parts = Vec::new();
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits > 0 {
                parts.push((rest[..digits].parse().unwrap_or(u64::MAX), String::new()));
                rest = &rest[digits..];
            } else {
                let end = rest
                    .find(|c: char| c.is_ascii_digit())
                    .unwrap_or(rest.len());
                parts.push((0, rest[..end].to_owned()));
                rest = &rest[end..];
            }
        }
        parts
    }
    tags.sort_by_cached_key(|t| std::cmp::Reverse(key(t)));
    tags.truncate(n);
    tags
}

fn git(dir: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    // Never wait for a password; give up on a stalled transfer after a minute.
    cmd.env("GIT_TERMINAL_PROMPT", "0").args([
        "-c",
        "http.lowSpeedLimit=1000",
        "-c",
        "http.lowSpeedTime=60",
    ]);
    cmd
}

async fn rev_parse(dir: &Path, rev: &str) -> Result<String, String> {
    let out = git(Some(dir))
        .args(["rev-parse", "--verify", "--quiet", rev])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("running git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!("{rev} is not a commit here"))
    }
}

/// Runs a command; its stderr (all lines, joined) when it fails.
async fn run(cmd: &mut Command) -> Result<(), String> {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("could not run {program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let msg = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    Err(if msg.is_empty() {
        format!("{program} failed with {}", out.status)
    } else {
        msg
    })
}

/// Fetches a list into `out` (created if needed) the way `--buildpacks-dir` reads it:
/// `out/<name>/` per buildpack (replacing an existing one), `out/order` with the names in
/// list order, and `out/buildpacks.lock` with `NAME URL#REF COMMIT` lines. Up to `jobs`
/// fetches run at once. On failure, every failed buildpack is reported and `order` and
/// `buildpacks.lock` are left as they were.
pub async fn fetch_list(
    list: &[BuildpackRef],
    out: &Path,
    cache: Option<&Path>,
    jobs: usize,
) -> Result<Vec<Fetched>, FetchErrors> {
    let io_one = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| FetchError::Output {
            action,
            path,
            source,
        }
    };
    tokio::fs::create_dir_all(out)
        .await
        .map_err(|e| FetchErrors(vec![io_one("creating", out)(e)]))?;
    let results: Vec<Result<Fetched, FetchError>> = futures::stream::iter(list)
        .map(|bp| async move {
            let staging = out.join(format!(".{}.fetching", bp.name));
            let _ = tokio::fs::remove_dir_all(&staging).await;
            let mut fetched = fetch(bp, &staging, cache).await;
            if let Ok(f) = &mut fetched {
                let dest = out.join(&bp.name);
                let _ = tokio::fs::remove_dir_all(&dest).await;
                if let Err(source) = tokio::fs::rename(&staging, &dest).await {
                    let _ = tokio::fs::remove_dir_all(&staging).await;
                    return Err(FetchError::Io {
                        name: bp.name.clone(),
                        action: "moving into place",
                        path: dest,
                        source,
                    });
                }
                f.dir = dest;
            } else {
                let _ = tokio::fs::remove_dir_all(&staging).await;
            }
            fetched
        })
        .buffered(jobs.max(1))
        .collect()
        .await;
    let (ok, errors): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    if !errors.is_empty() {
        return Err(FetchErrors(
            errors.into_iter().filter_map(Result::err).collect(),
        ));
    }
    let fetched: Vec<Fetched> = ok.into_iter().filter_map(Result::ok).collect();
    let mut order = String::from(
        "# Detection order (first match wins); written by slugbuilder fetch-buildpacks.\n",
    );
    let mut lock =
        String::from("# NAME URL#REF COMMIT, as fetched by slugbuilder fetch-buildpacks.\n");
    for f in &fetched {
        order.push_str(&format!("{}\n", f.buildpack.name));
        lock.push_str(&format!(
            "{} {} {}\n",
            f.buildpack.name,
            f.buildpack.spec(),
            f.commit
        ));
    }
    for (file, text) in [(ORDER_FILE, order), (LOCK_FILE, lock)] {
        let path = out.join(file);
        tokio::fs::write(&path, text)
            .await
            .map_err(|e| FetchErrors(vec![io_one("writing", &path)(e)]))?;
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_repositories() {
        for (url, name) in [
            (
                "https://github.com/heroku/heroku-buildpack-nodejs",
                "nodejs",
            ),
            ("https://github.com/heroku/heroku-buildpack-go.git", "go"),
            ("git@github.com:dokku/buildpack-nginx.git", "nginx"),
            ("git://127.0.0.1:9418/my%20pack/", "my-20pack"),
            ("https://example.com/bp.tgz", "bp"),
            ("https://example.com/.git", "buildpack"),
        ] {
            assert_eq!(name_from_url(url), name, "{url}");
        }
    }

    #[test]
    fn lists_need_names_urls_and_pins() {
        let list = parse_list(
            "# comment\n\nruby https://github.com/heroku/heroku-buildpack-ruby#v361\n  go git://h/go#0123abc  \n",
        )
        .unwrap();
        assert_eq!(
            list,
            vec![
                BuildpackRef {
                    name: "ruby".into(),
                    url: "https://github.com/heroku/heroku-buildpack-ruby".into(),
                    reference: Some("v361".into()),
                },
                BuildpackRef {
                    name: "go".into(),
                    url: "git://h/go".into(),
                    reference: Some("0123abc".into()),
                },
            ]
        );
        for (text, msg) in [
            ("ruby\n", "line 1: expected `NAME URL#REF`"),
            (
                "\nruby https://x/ruby\n",
                "line 2: `https://x/ruby` is not pinned",
            ),
            (
                "order https://x/o#v1\n",
                "`order` is not a usable buildpack name",
            ),
            ("a/b https://x/o#v1\n", "`a/b` is not a usable"),
            (
                "a https://x/a#v1\na https://x/b#v2\n",
                "line 2: the name `a` is used twice",
            ),
        ] {
            let e = parse_list(text).unwrap_err().to_string();
            assert!(e.contains(msg), "{text:?}: {e}");
        }
    }

    #[test]
    fn urls_split_on_commas_and_newlines_with_unique_names() {
        let urls = parse_urls(
            " https://github.com/heroku/heroku-buildpack-python#v351,\n# a comment\nhttps://x/heroku-buildpack-python.git , git://y/go\n,",
        );
        let got: Vec<_> = urls.iter().map(|b| (b.name.as_str(), b.spec())).collect();
        assert_eq!(
            got,
            vec![
                (
                    "python",
                    "https://github.com/heroku/heroku-buildpack-python#v351".to_owned()
                ),
                (
                    "python-2",
                    "https://x/heroku-buildpack-python.git".to_owned()
                ),
                ("go", "git://y/go".to_owned()),
            ]
        );
    }

    #[test]
    fn cache_keys_differ_per_url_and_ref() {
        let a = BuildpackRef::from_spec("https://github.com/heroku/heroku-buildpack-go#v231");
        let b = BuildpackRef::from_spec("https://github.com/heroku/heroku-buildpack-go#v230");
        let c = BuildpackRef::from_spec("https://example.com/heroku-buildpack-go#v231");
        assert!(
            a.cache_key().starts_with("heroku-buildpack-go-v231-"),
            "{}",
            a.cache_key()
        );
        assert_ne!(a.cache_key(), b.cache_key());
        assert_ne!(a.cache_key(), c.cache_key());
        assert_eq!(a.cache_key(), a.clone().cache_key());
    }

    #[test]
    fn newest_tags_sort_by_version() {
        let tags = ["v99", "v100", "v2", "list", "v100.1"]
            .map(String::from)
            .to_vec();
        assert_eq!(newest(tags, 3), ["v100.1", "v100", "v99"]);
    }
}
