//! `git push` over SSH through the whole pipeline, against the local cluster: the real
//! OpenSSH client and git, the receiver in this process, a real slugbuilder Job, the
//! operator (in this process) rolling out into pods. First push, incremental push, force
//! push, and a client that disconnects mid-build.

mod pipeline_env;
mod receiver_env;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use flynn_e2e::eventually;
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use pipeline_env::{Env, FileServer, Repo, releases, the_build_job};
use receiver_env::*;
use serde_json::json;

fn branch(receiver: &Receiver, ns: &str, app: &str) -> Option<String> {
    let repo = git2::Repository::open_bare(receiver.repo(ns, app)).ok()?;
    let r = repo.find_reference("refs/heads/main").ok()?;
    r.target().map(|o| o.to_string())
}

/// "Total N" of git's push output: how many objects were sent.
fn objects_sent(stderr: &str) -> usize {
    stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Total ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

async fn setup(env: &Env) -> (Receiver, SshKey) {
    require_tools();
    let receiver = Receiver::start(env.ns.client(), env.ns.name(), env.pipeline.clone()).await;
    let key = SshKey::generate();
    let user = random_user("dev");
    register_key(env.ns.client(), env.ns.name(), &key, &user).await;
    allow_push(env.ns.client(), env.ns.name(), &user).await;
    receiver.wait_for_key(&key).await;
    (receiver, key)
}

fn push(repo: &Repo, key: &SshKey, url: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["push"];
    all.extend_from_slice(args);
    all.push(url);
    all.push("main");
    let out = git_in(repo.work.path(), &all, Some(&key.ssh_command("accept-new")));
    println!("--- git push {args:?}\n{}", stderr(&out));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_incremental_and_force_pushes_deploy() {
    let env = Env::start("ssh-push-deploys").await;
    let ns = env.ns.name().to_owned();
    env.create_app("py", json!({"deployTimeoutSeconds": 120}))
        .await;
    let (receiver, key) = setup(&env).await;
    let remote = url(receiver.port(), &ns, "py");
    let repo = Repo::from_fixture("python-web");

    // First push: the build streams as `remote:` lines and the push succeeds.
    let out = push(&repo, &key, &remote, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "first push failed:\n{err}");
    assert!(err.contains("remote: -----> Python app detected"), "{err}");
    assert!(err.contains("remote: =====> Application deployed"), "{err}");
    assert_eq!(
        branch(&receiver, &ns, "py"),
        Some(pipeline_env::git(repo.work.path(), &["rev-parse", "HEAD"]))
    );
    assert_eq!(releases(&env, "py").await.len(), 1);

    // A memory limit on web (what `flynn limit set web memory=256Mi` makes: v2)...
    let api = env.ns.api::<flynn_crds::Release>();
    let mut v2 = api.get("py-v1").await.unwrap();
    v2.metadata = kube::api::ObjectMeta {
        name: Some("py-v2".into()),
        ..Default::default()
    };
    v2.spec.version = 2;
    v2.spec.processes.get_mut("web").unwrap().resources =
        Some(serde_json::from_value(json!({"limits": {"memory": "256Mi"}})).unwrap());
    api.create(&Default::default(), &v2).await.unwrap();
    env.ns
        .api::<flynn_crds::App>()
        .patch(
            "py",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"spec": {"release": "py-v2"}})),
        )
        .await
        .unwrap();

    // Incremental: only the new objects travel.
    repo.write("NOTES", "second\n", false);
    let second = repo.commit("second");
    let out = push(&repo, &key, &remote, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "second push failed:\n{err}");
    assert!(
        objects_sent(&err) <= 3,
        "an incremental push sends only the new commit:\n{err}"
    );
    assert_eq!(branch(&receiver, &ns, "py"), Some(second));
    assert_eq!(releases(&env, "py").await.len(), 3);
    // ...outlives the push: new code, same limits.
    let v3 = api.get("py-v3").await.unwrap();
    let web = &v3.spec.processes["web"];
    assert_eq!(web.resources.as_ref().unwrap().limits["memory"].0, "256Mi");
    assert_ne!(v3.spec.artifact, v2.spec.artifact);

    // Force push of a rewritten commit deploys too.
    pipeline_env::git(
        repo.work.path(),
        &["commit", "-q", "--amend", "-m", "rewritten"],
    );
    let rewritten = pipeline_env::git(repo.work.path(), &["rev-parse", "HEAD"]);
    let out = push(&repo, &key, &remote, &["--force"]);
    let err = stderr(&out);
    assert!(out.status.success(), "force push failed:\n{err}");
    assert!(err.contains("(forced update)"), "{err}");
    assert_eq!(branch(&receiver, &ns, "py"), Some(rewritten));
    assert_eq!(releases(&env, "py").await.len(), 4);

    let (_, metrics) = receiver.http_get("/metrics").await;
    assert!(
        metrics.contains("flynn_gitreceiver_pushes_total{result=\"deployed\"} 3"),
        "{metrics}"
    );
}

/// A buildpack whose compile sleeps: a build that is surely running when the client leaves.
fn slow_buildpack() -> Vec<u8> {
    let repo = Repo {
        work: tempfile::tempdir().unwrap(),
        bare: tempfile::tempdir().unwrap(),
    };
    repo.write("bin/detect", "#!/usr/bin/env bash\necho Slow\n", true);
    repo.write(
        "bin/compile",
        "#!/usr/bin/env bash\necho '-----> Sleeping for the test'\nexec sleep 600\n",
        true,
    );
    flynn_builder::slug::tar_gz_dir(repo.work.path()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_build_cancels_the_build() {
    let env = Env::start("ssh-push-disconnect").await;
    let ns = env.ns.name().to_owned();
    let buildpack = FileServer::start("slow.tgz", slow_buildpack()).await;
    env.create_app("slow", json!({"env": {"BUILDPACK_URL": buildpack.url}}))
        .await;
    let (receiver, key) = setup(&env).await;
    let remote = url(receiver.port(), &ns, "slow");
    let repo = Repo::from_fixture("shell-procfile");

    // git and its ssh in a process group of their own, so the test can kill both, as a
    // closed laptop lid would.
    let mut git = Command::new("git")
        .args(["push", &remote, "main"])
        .current_dir(repo.work.path())
        .env("GIT_SSH_COMMAND", key.ssh_command("accept-new"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr = git.stderr.take().unwrap();
    let saw_build = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return false };
            println!("{line}");
            if line.contains("Sleeping for the test") {
                return true;
            }
        }
        false
    });
    let saw_build = tokio::time::timeout(Duration::from_secs(240), saw_build).await;
    assert!(
        matches!(saw_build, Ok(Ok(true))),
        "the build did not reach its compile step"
    );

    let jobs: Api<Job> = env.ns.api();
    let job = the_build_job(&env, "slow").await;

    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(git.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = git.wait();

    eventually(
        "the build Job to be deleted",
        Duration::from_secs(60),
        || async { jobs.get_opt(&job).await.unwrap() },
        |j| j.is_none(),
    )
    .await;
    assert_eq!(releases(&env, "slow").await.len(), 0, "no Release was made");
    assert_eq!(branch(&receiver, &ns, "slow"), None, "main did not move");
    let repo_dir = receiver.repo(&ns, "slow");
    eventually(
        "git receive-pack of the gone client to be stopped",
        Duration::from_secs(30),
        || async {
            let out = Command::new("pgrep")
                .args(["-f", &format!("receive-pack {}", repo_dir.display())])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).lines().count()
        },
        |n| *n == 0,
    )
    .await;
    let (_, metrics) = receiver.http_get("/metrics").await;
    assert!(
        metrics.contains("flynn_gitreceiver_pushes_total{result=\"cancelled\"} 1"),
        "{metrics}"
    );
}
