//! Source tarball → slugbuilder → slug in the store → slugrunner serving HTTP on `$PORT`,
//! all as local processes (the binaries cargo built for this test).
//!
//! The Python and static fixtures use the machine's `python3`, as the builder and runner
//! images use their stack's.

mod common;

use std::{
    path::Path,
    process::{Output, Stdio},
    time::Duration,
};

use common::{Shelf, copy_app, fixtures, script, source_tarball, wait_for_http};
use flynn_builder::{build::BuildResult, signing::Access};
use flynn_e2e::free_port;
use tokio::process::{Child, Command};

const SLUGBUILDER: &str = env!("CARGO_BIN_EXE_slugbuilder");
const SLUGRUNNER: &str = env!("CARGO_BIN_EXE_slugrunner");

/// Runs the slugbuilder binary on the app in `app_dir`; its output and result.
async fn slugbuild(
    app_dir: &Path,
    shelf: &Shelf,
    name: &str,
    extra: &[&str],
) -> (Output, Option<BuildResult>, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let src = source_tarball(app_dir, work.path());
    let result = work.path().join("result.json");
    let out = Command::new(SLUGBUILDER)
        .arg("--app")
        .arg(name)
        .arg("--source")
        .arg(&src)
        .arg("--work-dir")
        .arg(work.path().join("w"))
        .arg("--buildpacks-dir")
        .arg(fixtures().join("buildpacks"))
        .arg("--slug-put-url")
        .arg(shelf.signed(&format!("/slugs/{name}/slug.tgz"), Access::ReadWrite))
        .arg("--slug-url")
        .arg(shelf.key.signed_url(
            &shelf.base(),
            &format!("/slugs/{name}/slug.tgz"),
            Access::Read,
            None,
        ))
        .arg("--cache-url")
        .arg(shelf.signed(&format!("/cache/{name}.tgz"), Access::ReadWrite))
        .arg("--result")
        .arg(&result)
        .args(extra)
        .env_remove("SHELF_TOKEN")
        .output()
        .await
        .unwrap();
    let parsed = std::fs::read(&result)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    (out, parsed, work)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts the slugrunner binary on a slug URL.
fn slugrun(result: &BuildResult, port: u16, args: &[&str]) -> (Child, tempfile::TempDir) {
    let app = tempfile::tempdir().unwrap();
    let child = Command::new(SLUGRUNNER)
        .args(args)
        .env("SLUG_URL", &result.url)
        .env("SLUG_SHA256", &result.sha256)
        .env("APP_DIR", app.path())
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, app)
}

async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the app stopped within 10 s of SIGTERM")
        .unwrap()
}

#[tokio::test]
async fn python_app_builds_into_the_store_and_runs_on_port() {
    let shelf = Shelf::start().await;
    let (out, result, _work) =
        slugbuild(&fixtures().join("apps/python-web"), &shelf, "py", &[]).await;
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = result.expect("a JSON result");
    for line in [
        "-----> Building py...",
        "-----> Python app detected",
        "-----> Installing dependencies from requirements.txt",
        "       Installed greeting",
        "-----> Discovering process types",
        "       Default types for buildpack -> web",
        "-----> Compiled slug size is ",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert_eq!(result.buildpack, "Python");
    assert_eq!(result.process_types["web"], "python3 app.py");
    let stored = std::fs::metadata(shelf.dir.path().join("slugs/py/slug.tgz")).unwrap();
    assert_eq!(stored.len(), result.size);

    let port = free_port();
    let (mut child, _app) = slugrun(&result, port, &["start", "web"]);
    let body = wait_for_http(port, Duration::from_secs(20)).await;
    assert_eq!(body, "Hello, world from Python\n");
    let status = terminate(&mut child).await;
    // Python dies of the forwarded SIGTERM: the runner exits 128 + 15.
    assert_eq!(status.code(), Some(143), "{status}");
}

#[tokio::test]
async fn second_build_of_an_app_uses_its_cache() {
    let shelf = Shelf::start().await;
    let app = fixtures().join("apps/python-web");
    let (first, _, _w1) = slugbuild(&app, &shelf, "cached", &[]).await;
    assert!(first.status.success(), "{}", stdout(&first));
    assert!(!stdout(&first).contains("Restoring build cache"));
    let cache_object = shelf.dir.path().join("cache/cached.tgz");
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let first_inode = inode(&cache_object);

    let (second, result, _w2) = slugbuild(&app, &shelf, "cached", &[]).await;
    let text = stdout(&second);
    assert!(second.status.success(), "{text}");
    assert!(text.contains("-----> Restoring build cache"), "{text}");
    assert!(text.contains("-----> Using cached dependencies"), "{text}");
    assert!(!text.contains("Installed greeting"), "{text}");
    assert_eq!(
        inode(&cache_object),
        first_inode,
        "an unchanged cache is not uploaded again"
    );
    assert_eq!(result.unwrap().process_types["web"], "python3 app.py");
}

#[tokio::test]
async fn static_site_is_served_by_its_small_server_without_slugignored_files() {
    let shelf = Shelf::start().await;
    let app = copy_app("static-site");
    std::fs::write(app.path().join("public/design.psd"), "layers").unwrap();
    std::fs::write(
        app.path().join(".slugignore"),
        "# kept out of the slug\n*.psd\n",
    )
    .unwrap();
    let (out, result, _w) = slugbuild(app.path(), &shelf, "site", &[]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("-----> Removed 1 path(s) listed in .slugignore"),
        "{text}"
    );
    let result = result.unwrap();
    assert_eq!(result.buildpack, "Static");
    let port = free_port();
    let (mut child, _app) = slugrun(&result, port, &["start", "web"]);
    let body = wait_for_http(port, Duration::from_secs(20)).await;
    assert!(body.contains("<h1>Hello from a static site</h1>"), "{body}");
    let addr = ([127, 0, 0, 1], port).into();
    assert_eq!(
        common::http(addr, "GET", "/design.psd", &[], b"").await.0,
        404
    );
    terminate(&mut child).await;
}

#[tokio::test]
async fn shell_app_runs_web_and_worker_and_stops_on_sigterm() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let shelf = Shelf::start().await;
    let (out, result, _w) =
        slugbuild(&fixtures().join("apps/shell-procfile"), &shelf, "sh", &[]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Procfile declares types -> web, worker"),
        "{text}"
    );
    let result = result.unwrap();
    assert_eq!(result.buildpack, "Procfile");

    let port = free_port();
    let (mut web, _a) = slugrun(&result, port, &["start", "web"]);
    assert_eq!(
        wait_for_http(port, Duration::from_secs(20)).await,
        format!("Hello from a shell app on port {port}\n")
    );
    terminate(&mut web).await;

    // The worker is a shell loop (bash stays the parent of `sleep`): SIGTERM must still end it.
    let (mut worker, _b) = slugrun(&result, free_port(), &["start", "worker"]);
    let mut lines = BufReader::new(worker.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_deref(), Some("worker worker.1 working"));
    terminate(&mut worker).await;
}

#[tokio::test]
async fn literal_commands_run_in_the_app_with_its_profile() {
    let shelf = Shelf::start().await;
    let (out, result, _w) =
        slugbuild(&fixtures().join("apps/python-web"), &shelf, "run", &[]).await;
    assert!(out.status.success(), "{}", stdout(&out));
    let (child, _app) = slugrun(
        &result.unwrap(),
        free_port(),
        &[
            "python3",
            "-c",
            "import greeting, os; print(greeting.hello('run'), os.environ['PYTHONUNBUFFERED'])",
        ],
    );
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "Hello, run 1\n");
}

#[tokio::test]
async fn slugrunner_refuses_unknown_types_bad_checksums_and_corrupt_slugs() {
    let shelf = Shelf::start().await;
    let (out, result, _w) =
        slugbuild(&fixtures().join("apps/shell-procfile"), &shelf, "bad", &[]).await;
    assert!(out.status.success(), "{}", stdout(&out));
    let mut result = result.unwrap();

    let run = |result: &BuildResult, args: &[&str]| {
        let (child, app) = slugrun(result, free_port(), args);
        async move {
            let out = child.wait_with_output().await.unwrap();
            drop(app);
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, err) = run(&result, &["start", "clock"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("unknown process type `clock`; this slug has web, worker"),
        "{err}"
    );

    let good = result.sha256.clone();
    result.sha256 = "ab".repeat(32);
    let (code, err) = run(&result, &["start", "web"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("the slug's sha256 is {good}")),
        "{err}"
    );

    // Overwrite the slug with garbage, through the store.
    let put = shelf.signed("/slugs/bad/slug.tgz", Access::ReadWrite);
    let target = put.trim_start_matches(&shelf.base()).to_owned();
    assert_eq!(
        common::http(shelf.addr, "PUT", &target, &[], b"garbage")
            .await
            .0,
        201
    );
    result.sha256 = String::new();
    let (code, err) = run(&result, &["start", "web"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("the slug is corrupt"), "{err}");

    let missing = BuildResult {
        url: shelf.signed("/slugs/none.tgz", Access::Read),
        ..result.clone()
    };
    let (code, err) = run(&missing, &["start", "web"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("no slug at"), "{err}");
}

#[tokio::test]
async fn no_detected_buildpack_names_those_tried() {
    let shelf = Shelf::start().await;
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join("README"), "nothing to see").unwrap();
    let (out, result, _w) = slugbuild(app.path(), &shelf, "none", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out)
            .contains(" !     no buildpack detected the app; tried: python, static, procfile."),
        "{}",
        stdout(&out)
    );
    assert!(
        result.is_none(),
        "the result file holds an error, not a build result"
    );
}

#[tokio::test]
async fn a_failing_compile_reports_its_exit_code_and_keeps_its_output() {
    let shelf = Shelf::start().await;
    let app = copy_app("shell-procfile");
    let bp = tempfile::tempdir().unwrap();
    script(&bp.path().join("bin/detect"), "#!/bin/sh\necho Failing\n");
    script(
        &bp.path().join("bin/compile"),
        "#!/bin/sh\necho 'compiling...'\necho 'oops' >&2\nexit 7\n",
    );
    let url = format!("BUILDPACK_URL={}", bp.path().display());
    let (out, _, w) = slugbuild(app.path(), &shelf, "fail", &["--env", &url]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("       compiling...\n"), "{text}");
    assert!(text.contains("       oops\n"), "{text}");
    assert!(
        text.contains("the Failing buildpack's bin/compile failed with exit code 7"),
        "{text}"
    );
    let err: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path().join("result.json")).unwrap()).unwrap();
    assert!(err["error"].as_str().unwrap().contains("exit code 7"));
    assert!(
        !shelf.dir.path().join("slugs/fail/slug.tgz").exists(),
        "nothing was uploaded"
    );
}

#[tokio::test]
async fn a_bad_procfile_names_its_line() {
    let shelf = Shelf::start().await;
    let app = copy_app("shell-procfile");
    std::fs::write(
        app.path().join("Procfile"),
        "web: bin/web\n<<<<<<< HEAD\nworker: x\n",
    )
    .unwrap();
    let (out, _, _w) = slugbuild(app.path(), &shelf, "proc", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(" !     Procfile line 2: expected `<type>: <command>`"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn a_slug_over_the_limit_is_refused() {
    let shelf = Shelf::start().await;
    let (out, _, _w) = slugbuild(
        &fixtures().join("apps/static-site"),
        &shelf,
        "big",
        &["--max-slug-size", "100"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("over the limit of 100 B"),
        "{}",
        stdout(&out)
    );
    assert!(!shelf.dir.path().join("slugs/big/slug.tgz").exists());
}

#[tokio::test]
async fn buildpacks_file_runs_several_with_exports_env_dir_and_release() {
    let bps = tempfile::tempdir().unwrap();
    let first = bps.path().join("first");
    let second = bps.path().join("second");
    script(&first.join("bin/detect"), "#!/bin/sh\necho First\n");
    // The first writes an export file for later buildpacks and reads a config var from ENV_DIR.
    script(
        &first.join("bin/compile"),
        "#!/bin/bash\nset -e\necho \"export FROM_FIRST=yes\" > \"$(dirname \"$0\")/../export\"\ncp \"$3/MESSAGE\" \"$1/message.txt\"\n",
    );
    script(&second.join("bin/detect"), "#!/bin/sh\necho Second\n");
    script(
        &second.join("bin/compile"),
        "#!/bin/bash\nset -e\necho \"-----> second sees FROM_FIRST=$FROM_FIRST and STACK=$STACK\"\n[ -z \"$SECRET_OF_THE_BUILDER\" ]\n",
    );
    script(
        &second.join("bin/release"),
        "#!/bin/sh\nprintf -- '---\\nconfig_vars:\\n  FROM_RELEASE: \"it is set\"\\ndefault_process_types:\\n  web: cat message.txt\\n  console: bash\\n'\n",
    );
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join("Procfile"), "console: sh\n").unwrap();
    std::fs::write(
        app.path().join(".buildpacks"),
        format!("file://{}\n\n{}\n", first.display(), second.display()),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = source_tarball(app.path(), work.path());
    let out = Command::new(SLUGBUILDER)
        .args(["--app", "multi", "--env", "MESSAGE=from the env dir"])
        .arg("--source")
        .arg(&src)
        .arg("--work-dir")
        .arg(work.path().join("w"))
        .arg("--buildpacks-dir")
        .arg(fixtures().join("buildpacks"))
        .arg("--slug-file")
        .arg(work.path().join("slug.tgz"))
        .env("SECRET_OF_THE_BUILDER", "must not reach buildpacks")
        .output()
        .await
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("-----> First app detected\n-----> Second app detected\n"),
        "{text}"
    );
    assert!(
        text.contains("-----> second sees FROM_FIRST=yes and STACK=heroku-24"),
        "{text}"
    );
    assert!(
        text.contains("Procfile declares types -> console"),
        "{text}"
    );
    // Without --result and outside Kubernetes, the result is the last line of stdout.
    let result: BuildResult = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(result.buildpack, "First, Second");
    assert_eq!(result.process_types["console"], "sh", "the Procfile wins");
    assert_eq!(result.process_types["web"], "cat message.txt");
    assert_eq!(result.url, "");

    // The slug runs from stdin, with the release's config var and the app's override.
    let app_dir = tempfile::tempdir().unwrap();
    let slug = std::fs::File::open(work.path().join("slug.tgz")).unwrap();
    let out = Command::new(SLUGRUNNER)
        .args(["bash", "-c", "echo \"$(cat message.txt); $FROM_RELEASE\""])
        .env("SLUG_URL", "-")
        .env("APP_DIR", app_dir.path())
        .stdin(slug)
        .output()
        .await
        .unwrap();
    assert_eq!(
        stdout(&out),
        "from the env dir; it is set\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(SLUGRUNNER)
        .args(["bash", "-c", "echo $FROM_RELEASE"])
        .env("APP_DIR", app_dir.path())
        .env("FROM_RELEASE", "the app's config wins")
        .output()
        .await
        .unwrap();
    assert_eq!(stdout(&out), "the app's config wins\n");
}

#[tokio::test]
async fn an_explicit_buildpack_that_does_not_apply_shows_why() {
    let shelf = Shelf::start().await;
    let app = copy_app("static-site");
    let url = format!(
        "BUILDPACK_URL=file://{}",
        fixtures().join("buildpacks/python").display()
    );
    let (out, _, _w) = slugbuild(app.path(), &shelf, "wrong", &["--env", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out)
            .contains("does not apply to this app (bin/detect said no): no requirements.txt"),
        "{}",
        stdout(&out)
    );
}
