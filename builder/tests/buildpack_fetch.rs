//! Fetching buildpacks from git, with real `git` against buildpack repositories served by a
//! local `git daemon`: the image-time `slugbuilder fetch-buildpacks` (layout, `order`,
//! recorded commits, the cache working with the daemon stopped), the default
//! `builder/buildpacks/heroku.list` itself (its GitHub URLs rewritten to the daemon with
//! git's `url.<base>.insteadOf`), a build whose `BUILDPACK_URLS` point at the daemon, and
//! each way a fetch fails (unknown ref, unreachable repository, no `bin/detect`) beside the
//! case that works.

mod common;

use std::{
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{fixtures, script, source_tarball};
use flynn_builder::{build::BuildResult, buildpack::fetch};
use flynn_e2e::free_port;

const SLUGBUILDER: &str = env!("CARGO_BIN_EXE_slugbuilder");

/// `git daemon` serving the repositories under a temporary base path on 127.0.0.1, until
/// stopped or dropped.
struct GitDaemon {
    base: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl GitDaemon {
    fn start() -> Self {
        let base = tempfile::tempdir().unwrap();
        let port = free_port();
        // git-daemon itself rather than `git daemon`, which would run it as a child that
        // outlives a killed `git`.
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
        let daemon = Path::new(text(&exec_path.stdout).trim()).join("git-daemon");
        let child = Command::new(&daemon)
            .arg("--export-all")
            .arg(format!("--base-path={}", base.path().display()))
            .arg(format!("--port={port}"))
            .args(["--reuseaddr", "--listen=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (Debian's git ships it)", daemon.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            base,
            port,
            child: Some(child),
        }
    }

    /// `git://127.0.0.1:PORT/`.
    fn root(&self) -> String {
        format!("git://127.0.0.1:{}/", self.port)
    }

    /// The URL of the repository at `path` under the base.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.root())
    }

    /// A new repository at `path` under the base; see [`Repo`].
    fn repo(&self, path: &str) -> Repo {
        Repo::init(&self.base.path().join(path))
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "git daemon still listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A git repository served by the daemon.
struct Repo {
    dir: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Repo {
    fn init(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        git(dir, &["init", "--quiet"]);
        Self {
            dir: dir.to_owned(),
        }
    }

    /// Writes `files` (`path`, contents; under `bin/` executable), commits them and tags the
    /// commit `tag` (annotated). The commit.
    fn commit(&self, files: &[(&str, &str)], tag: &str) -> String {
        for (path, body) in files {
            let p = self.dir.join(path);
            if path.starts_with("bin/") {
                script(&p, body);
            } else {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, body).unwrap();
            }
        }
        git(&self.dir, &["add", "--all"]);
        git(
            &self.dir,
            &["commit", "--quiet", "--allow-empty", "-m", tag],
        );
        git(&self.dir, &["tag", "-a", tag, "-m", tag]);
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    /// Copies a directory's contents into the work tree (to commit next).
    fn copy_in(&self, from: &Path) {
        let ok = Command::new("cp")
            .arg("-a")
            .arg(from.join("."))
            .arg(&self.dir)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

/// A buildpack whose detect says `name` when the app has `marker`.
fn buildpack_files(name: &str, marker: &str) -> [(String, String); 2] {
    [
        (
            "bin/detect".into(),
            format!(
                "#!/bin/sh\n[ -f \"$1/{marker}\" ] || {{ echo 'no {marker}' >&2; exit 1; }}\necho {name}\n"
            ),
        ),
        (
            "bin/compile".into(),
            format!("#!/bin/sh\necho '-----> {name} compiled'\n"),
        ),
    ]
}

fn commit_buildpack(repo: &Repo, name: &str, marker: &str, tag: &str) -> String {
    let files = buildpack_files(name, marker);
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_str()))
        .collect();
    repo.commit(&refs, tag)
}

fn fetch_buildpacks(list: &Path, out: &Path, cache: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(SLUGBUILDER);
    cmd.arg("fetch-buildpacks")
        .arg("--list")
        .arg(list)
        .arg("--out")
        .arg(out)
        .env_remove("BUILDPACK_CACHE_DIR")
        .envs(env.iter().copied());
    if let Some(c) = cache {
        cmd.arg("--cache").arg(c);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn order(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(fetch::ORDER_FILE))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// `buildpacks.lock` as (name, `URL#REF`, commit) triples.
fn lock(dir: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(dir.join(fetch::LOCK_FILE))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o111 == 0o111
}

#[test]
fn a_pinned_list_is_laid_out_with_its_commits_and_refetched_from_the_cache_offline() {
    let mut daemon = GitDaemon::start();
    let alpha = daemon.repo("packs/alpha");
    let alpha_v1 = commit_buildpack(&alpha, "Alpha", "alpha.txt", "v1");
    // A later release: the pin (v1) must win over the newest commit.
    alpha.commit(&[("README", "v2")], "v2");
    let beta = daemon.repo("packs/heroku-buildpack-beta.git");
    let beta_v3 = commit_buildpack(&beta, "Beta", "beta.txt", "v3");
    // Then bin/compile without its executable bit, pinned by commit: fetched executable.
    std::fs::set_permissions(
        beta.dir.join("bin/compile"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    git(&beta.dir, &["update-index", "--chmod=-x", "bin/compile"]);
    git(&beta.dir, &["commit", "--quiet", "-m", "not executable"]);
    let beta_head = git(&beta.dir, &["rev-parse", "HEAD"]);
    assert_ne!(beta_head, beta_v3);

    let work = tempfile::tempdir().unwrap();
    let list = work.path().join("list");
    // Listed beta first: the order is the list's, not the names'. Beta is pinned by commit.
    std::fs::write(
        &list,
        format!(
            "# test list\nbeta {}#{beta_head}\n\nalpha {}#v1\n",
            daemon.url("packs/heroku-buildpack-beta.git"),
            daemon.url("packs/alpha"),
        ),
    )
    .unwrap();
    let cache = work.path().join("cache");
    let out1 = work.path().join("out1");
    let out = fetch_buildpacks(&list, &out1, Some(&cache), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "beta {}#{beta_head} {beta_head}\nalpha {}#v1 {alpha_v1}\n",
            daemon.url("packs/heroku-buildpack-beta.git"),
            daemon.url("packs/alpha"),
        )
    );
    assert_eq!(order(&out1), ["beta", "alpha"]);
    assert_eq!(
        lock(&out1),
        [
            (
                "beta".to_owned(),
                format!(
                    "{}#{beta_head}",
                    daemon.url("packs/heroku-buildpack-beta.git")
                ),
                beta_head.clone()
            ),
            (
                "alpha".to_owned(),
                format!("{}#v1", daemon.url("packs/alpha")),
                alpha_v1.clone()
            ),
        ]
    );
    // The v1 tree, without .git, scripts executable.
    assert!(out1.join("alpha/bin/detect").is_file());
    assert!(
        !out1.join("alpha/README").exists(),
        "v2's file is not in v1"
    );
    assert!(!out1.join("alpha/.git").exists());
    assert!(is_executable(&out1.join("beta/bin/compile")));
    let detect = Command::new(out1.join("alpha/bin/detect"))
        .arg(work.path())
        .output()
        .unwrap();
    assert!(!detect.status.success(), "no alpha.txt in the work dir");

    // The same pins again with the daemon gone: all from the cache, same layout and commits.
    daemon.stop();
    let out2 = work.path().join("out2");
    let again = fetch_buildpacks(&list, &out2, Some(&cache), &[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        text(&again.stdout)
            .lines()
            .filter(|l| l.ends_with(" (cached)"))
            .count(),
        2,
        "{}",
        text(&again.stdout)
    );
    assert_eq!(order(&out2), ["beta", "alpha"]);
    assert_eq!(lock(&out2), lock(&out1));
    assert!(is_executable(&out2.join("beta/bin/compile")));
    // Refetching into the same directory replaces the buildpacks in it.
    std::fs::write(out1.join("alpha/stale"), "x").unwrap();
    let same = fetch_buildpacks(&list, &out1, Some(&cache), &[]);
    assert!(same.status.success(), "{}", text(&same.stderr));
    assert!(!out1.join("alpha/stale").exists());

    // Without the cache, the stopped daemon is a fetch failure that says so.
    let uncached = fetch_buildpacks(&list, &work.path().join("out3"), None, &[]);
    assert_eq!(uncached.status.code(), Some(1));
    let err = text(&uncached.stderr);
    assert!(
        err.contains(&format!(
            "could not fetch the alpha buildpack from {}: fatal: unable to connect to 127.0.0.1",
            daemon.url("packs/alpha")
        )),
        "{err}"
    );
    assert!(
        err.contains("2 of 2 buildpacks could not be fetched"),
        "{err}"
    );
}

#[test]
fn the_default_heroku_list_is_fetched_in_heroku_order_through_insteadof() {
    let list_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("buildpacks/heroku.list");
    let list = fetch::parse_list(&std::fs::read_to_string(&list_file).unwrap()).unwrap();
    let names: Vec<&str> = list.iter().map(|b| b.name.as_str()).collect();
    // Heroku's classic detection order, then the static-site buildpack.
    assert_eq!(
        names,
        [
            "ruby", "nodejs", "clojure", "python", "java", "gradle", "scala", "php", "go", "static"
        ]
    );
    for bp in &list {
        let r = bp.reference.as_deref().unwrap();
        assert!(
            r.starts_with('v') && r[1..].bytes().all(|b| b.is_ascii_digit()),
            "{} is pinned to a release tag: {r}",
            bp.name
        );
        let expected = if bp.name == "static" {
            "https://github.com/dokku/heroku-buildpack-nginx".to_owned()
        } else {
            format!("https://github.com/heroku/heroku-buildpack-{}", bp.name)
        };
        assert_eq!(bp.url, expected);
    }

    // The same repositories and tags, served locally; git rewrites the GitHub URLs.
    let daemon = GitDaemon::start();
    let mut commits = Vec::new();
    for bp in &list {
        let path = bp.url.strip_prefix("https://github.com/").unwrap();
        let repo = daemon.repo(path);
        commits.push(commit_buildpack(
            &repo,
            &bp.name,
            "never",
            bp.reference.as_deref().unwrap(),
        ));
    }
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("buildpacks");
    let key = format!("url.{}.insteadOf", daemon.root());
    let out = fetch_buildpacks(
        &list_file,
        &out_dir,
        Some(&work.path().join("cache")),
        &[
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", &key),
            ("GIT_CONFIG_VALUE_0", "https://github.com/"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    let expected: Vec<String> = list
        .iter()
        .zip(&commits)
        .map(|(bp, c)| format!("{} {} {c}", bp.name, bp.spec()))
        .collect();
    assert_eq!(printed, expected);
    assert_eq!(order(&out_dir), names);
    let locked = lock(&out_dir);
    for ((bp, commit), (name, spec, locked_commit)) in list.iter().zip(&commits).zip(&locked) {
        assert_eq!((name, spec, locked_commit), (&bp.name, &bp.spec(), commit));
        let detect = std::fs::read_to_string(out_dir.join(&bp.name).join("bin/detect")).unwrap();
        assert!(detect.contains(&format!("echo {}\n", bp.name)), "{detect}");
    }
}

/// Runs the slugbuilder on `app` with `extra` args and env; its output and result.
fn slugbuild(
    app: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Output, Option<BuildResult>, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let src = source_tarball(app, work.path());
    let result = work.path().join("result.json");
    let out = Command::new(SLUGBUILDER)
        .args(["--app", "fetched"])
        .arg("--source")
        .arg(&src)
        .arg("--work-dir")
        .arg(work.path().join("w"))
        .arg("--buildpacks-dir")
        .arg(fixtures().join("buildpacks"))
        .arg("--slug-file")
        .arg(work.path().join("slug.tgz"))
        .arg("--result")
        .arg(&result)
        .args(extra)
        .env_remove("BUILDPACK_URLS")
        .env_remove("BUILDPACK_CACHE_DIR")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let parsed = std::fs::read(&result)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    (out, parsed, work)
}

#[test]
fn buildpack_urls_replace_the_builtin_buildpacks_and_are_fetched_in_order() {
    let mut daemon = GitDaemon::start();
    // A Ruby-like buildpack that does not apply, then the fixture Python buildpack served
    // from git under another name (so it cannot be mistaken for the builtin one).
    commit_buildpack(
        &daemon.repo("heroku-buildpack-ruby"),
        "Ruby",
        "Gemfile",
        "v1",
    );
    let python = daemon.repo("heroku-buildpack-python");
    python.copy_in(&fixtures().join("buildpacks/python"));
    python.commit(
        &[(
            "bin/detect",
            "#!/usr/bin/env bash\n[ -f \"$1/requirements.txt\" ] || exit 1\necho 'Served Python'\n",
        )],
        "v351",
    );
    let urls = format!(
        "{}#v1,\n{}#v351",
        daemon.url("heroku-buildpack-ruby"),
        daemon.url("heroku-buildpack-python")
    );
    let app = fixtures().join("apps/python-web");
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().display().to_string();
    let (out, result, _w) = slugbuild(
        &app,
        &["--buildpack-cache", &cache_arg],
        &[("BUILDPACK_URLS", &urls)],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for line in [
        "-----> Served Python app detected",
        "       Installed greeting",
        "       Default types for buildpack -> web",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    let result = result.expect("a JSON result");
    assert_eq!(result.buildpack, "Served Python");
    assert_eq!(result.process_types["web"], "python3 app.py");

    // An app none of them detects names the list's buildpacks, not the image's.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("README"), "nothing").unwrap();
    let (out, _, _w) = slugbuild(empty.path(), &[], &[("BUILDPACK_URLS", &urls)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(" !     no buildpack detected the app; tried: ruby, python."),
        "{}",
        text(&out.stdout)
    );

    // The app's BUILDPACK_URL still wins over the list.
    let own = format!(
        "BUILDPACK_URL=file://{}",
        fixtures().join("buildpacks/python").display()
    );
    let (out, result, _w) = slugbuild(&app, &["--env", &own], &[("BUILDPACK_URLS", &urls)]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(result.unwrap().buildpack, "Python");

    // An app's own git BUILDPACK_URL goes through the same fetch.
    let own = format!(
        "BUILDPACK_URL={}#v351",
        daemon.url("heroku-buildpack-python")
    );
    let (out, result, _w) = slugbuild(&app, &["--env", &own], &[]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(result.unwrap().buildpack, "Served Python");

    // With the daemon gone, the build cache of fetched buildpacks still builds the app.
    daemon.stop();
    let (out, result, _w) = slugbuild(
        &app,
        &["--buildpack-cache", &cache_arg],
        &[("BUILDPACK_URLS", &urls)],
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(result.unwrap().buildpack, "Served Python");
    // ... and without it, the build fails naming the buildpack, its URL and git's reason.
    let (out, result, w) = slugbuild(&app, &[], &[("BUILDPACK_URLS", &urls)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(result.is_none());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            " !     could not fetch the ruby buildpack from {}: fatal: unable to connect",
            daemon.url("heroku-buildpack-ruby")
        )),
        "{stdout}"
    );
    let err: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path().join("result.json")).unwrap()).unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("Check the URL"),
        "{err}"
    );
}

#[test]
fn fetch_failures_name_the_buildpack_its_url_and_the_cause() {
    let daemon = GitDaemon::start();
    let good = daemon.repo("good");
    let good_v1 = commit_buildpack(&good, "Good", "x", "v1");
    commit_buildpack(&good, "Good", "x", "v2");
    let no_detect = daemon.repo("no-detect");
    no_detect.commit(&[("bin/compile", "#!/bin/sh\n")], "v1");
    let cnb = daemon.repo("cnb");
    cnb.commit(
        &[
            ("bin/build", "#!/bin/sh\n"),
            ("buildpack.toml", "api = \"0.10\"\n"),
        ],
        "v1",
    );
    let nowhere = format!("git://127.0.0.1:{}/good", free_port());

    let work = tempfile::tempdir().unwrap();
    let run = |name: &str, lines: &str| {
        let list = work.path().join(format!("{name}.list"));
        std::fs::write(&list, lines).unwrap();
        let out_dir = work.path().join(name);
        (fetch_buildpacks(&list, &out_dir, None, &[]), out_dir)
    };
    let valid = format!("good {}#v1\n", daemon.url("good"));

    // The valid list.
    let (out, dir) = run("valid", &valid);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(lock(&dir)[0].2, good_v1);

    // Each twin: the valid line plus a broken one; only the broken one is reported, and
    // no order file is written.
    let cases = [
        (
            "unknown-ref",
            format!("bad {}#v404\n", daemon.url("good")),
            vec![
                format!(
                    "the bad buildpack's repository {} has no branch, tag or commit `v404` (fatal: couldn't find remote ref v404); its newest tags: v2, v1. Fix the ref after `#` in {}#v404",
                    daemon.url("good"),
                    daemon.url("good")
                ),
            ],
        ),
        (
            "unreachable",
            format!("bad {nowhere}#v1\n"),
            vec![
                format!("could not fetch the bad buildpack from {nowhere}: fatal: unable to connect to 127.0.0.1"),
                "Connection refused".to_owned(),
                "Check the URL, and that the builder can reach it".to_owned(),
            ],
        ),
        (
            "not-exported",
            format!("bad {}#v1\n", daemon.url("missing")),
            vec![format!(
                "could not fetch the bad buildpack from {}: fatal: remote error: access denied or repository not exported: /missing",
                daemon.url("missing")
            )],
        ),
        (
            "no-detect",
            format!("bad {}#v1\n", daemon.url("no-detect")),
            vec![format!(
                "the bad buildpack ({}#v1, commit {}) has no bin/detect: it is not a Heroku classic buildpack, which has bin/detect and bin/compile. Point it at a classic buildpack",
                daemon.url("no-detect"),
                git(&no_detect.dir, &["rev-parse", "HEAD"])
            )],
        ),
        (
            "cnb",
            format!("bad {}#v1\n", daemon.url("cnb")),
            vec!["has no bin/detect: it is not a Heroku classic buildpack, which has bin/detect and bin/compile (its bin/build and buildpack.toml make it a Cloud Native Buildpack".to_owned()],
        ),
    ];
    for (case, bad, needles) in cases {
        let (out, dir) = run(case, &format!("{valid}{bad}"));
        assert_eq!(out.status.code(), Some(1), "{case}");
        let err = text(&out.stderr);
        for needle in needles {
            assert!(
                err.contains(&needle),
                "{case}: missing `{needle}` in:\n{err}"
            );
        }
        assert!(!err.contains("the good buildpack"), "{case}: {err}");
        assert!(
            err.contains("1 of 2 buildpacks could not be fetched"),
            "{case}: {err}"
        );
        assert!(!dir.join(fetch::ORDER_FILE).exists(), "{case}");
        assert!(!dir.join("bad").exists(), "{case}");
    }

    // A malformed list is refused before any fetch, with its line.
    let (out, _) = run("unpinned", &format!("{valid}bad {}\n", daemon.url("good")));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("line 2: `{}` is not pinned", daemon.url("good"))),
        "{}",
        text(&out.stderr)
    );

    // At build time, an unknown ref in BUILDPACK_URLS fails the build with the same cause.
    let (out, _, _w) = slugbuild(
        &fixtures().join("apps/python-web"),
        &[],
        &[("BUILDPACK_URLS", &format!("{}#v404", daemon.url("good")))],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(" !     the good buildpack's repository"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("has no branch, tag or commit `v404`"),
        "{}",
        text(&out.stdout)
    );
}
