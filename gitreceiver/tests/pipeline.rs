//! The deploy pipeline against the local cluster (`e2e/cluster/up`): a pushed commit is
//! archived, stored, built by a real slugbuilder Job, released, and rolled out by the
//! operator (in this process, for the test's namespace) into pods that answer through
//! their Service. The images are built from this workspace's builder (see
//! `pipeline_env::ensure_images`). Fails, never skips, without a cluster.

mod pipeline_env;

use std::time::Duration;

use flynn_crds::{App, Release};
use flynn_e2e::eventually;
use flynn_gitreceiver::pipeline::{BUILD_LABEL, Error, meta};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, Secret, Service},
};
use kube::{Api, ResourceExt, api::ListParams};
use pipeline_env::{Env, FileServer, Repo, curl, deploy_with, releases, the_build_job};
use serde_json::json;
use tokio_util::sync::CancellationToken;

async fn service_ip(env: &Env, name: &str) -> String {
    let svc = eventually(
        &format!("Service {name}"),
        Duration::from_secs(60),
        || async { env.ns.api::<Service>().get_opt(name).await.unwrap() },
        |s| s.is_some(),
    )
    .await
    .unwrap();
    svc.spec.unwrap().cluster_ip.unwrap()
}

/// Waits until the app's web Service answers with a body containing `expect`.
async fn serves(env: &Env, app: &str, expect: &str) {
    let ip = service_ip(env, &format!("{app}-web")).await;
    let expect = expect.to_owned();
    eventually(
        &format!("{app}-web ({ip}:8080) to answer {expect:?}"),
        Duration::from_secs(60),
        || {
            let ip = ip.clone();
            async move {
                tokio::task::spawn_blocking(move || curl(&ip, 8080))
                    .await
                    .unwrap()
            }
        },
        |body| body.as_ref().is_some_and(|b| b.contains(&expect)),
    )
    .await;
}

fn has_line(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[tokio::test]
async fn pushes_deploy_and_redeploy_with_the_cache_and_a_failed_build_changes_nothing() {
    let env = Env::start("pipeline-deploy").await;
    let ns = env.ns.name().to_owned();
    let app = env
        .create_app(
            "py",
            json!({"env": {"GREETING_NAME": "pipeline"}, "deployTimeoutSeconds": 120}),
        )
        .await;
    let repo = Repo::from_fixture("python-web");

    // First push: a cold build, v1, one web process started, serving.
    let push = repo.push(&ns, "py");
    let (result, lines) = env.deploy(&push).await;
    let deployed = result.unwrap_or_else(|e| panic!("first deploy failed: {e}\n{lines:#?}"));
    println!("first deploy timings: {:?}", deployed.timings);
    assert_eq!((deployed.release.as_str(), deployed.version), ("py-v1", 1));
    assert!(
        has_line(&lines, "-----> Compressing source files... done"),
        "{lines:#?}"
    );
    assert!(has_line(&lines, "-----> Python app detected"), "{lines:#?}");
    assert!(
        has_line(&lines, "-----> Installing dependencies"),
        "{lines:#?}"
    );
    // The end: the banner, then the App's URLs (the default Route's, when a router
    // accepted it).
    let done = lines
        .iter()
        .position(|l| l == "=====> Application deployed")
        .unwrap_or_else(|| panic!("no deployed banner: {lines:#?}"));
    let urls: Vec<String> = deployed
        .urls
        .iter()
        .map(|u| format!("       {u}"))
        .collect();
    assert_eq!(lines[done + 1..], urls[..]);

    let v1 = env.ns.api::<Release>().get("py-v1").await.unwrap();
    assert_eq!(v1.spec.meta[meta::COMMIT], push.commit);
    assert_eq!(v1.spec.meta[meta::USER], "alice");
    assert_eq!(v1.spec.meta[meta::FINGERPRINT], "SHA256:test-fingerprint");
    assert_eq!(v1.spec.meta[meta::REF], "refs/heads/main");
    // The config before the first release became v1's own snapshot; none of it is in v1.
    assert!(v1.spec.env.is_empty());
    assert_eq!(v1.spec.config_secret.as_deref(), Some("py-v1-env"));
    let snapshot = env
        .ns
        .api::<k8s_openapi::api::core::v1::Secret>()
        .get("py-v1-env")
        .await
        .unwrap();
    assert_eq!(
        flynn_crds::config::vars(&snapshot).unwrap()["GREETING_NAME"],
        "pipeline"
    );
    assert_eq!(snapshot.owner_references()[0].name, "py-v1");
    assert_eq!(v1.spec.processes["web"].ports[0].port, 8080);
    assert_eq!(v1.owner_references()[0].uid, app.uid().unwrap());
    let slug = v1.spec.artifact.slug.clone().unwrap();
    assert!(
        slug.url
            .starts_with(&format!("{}/slugs/{ns}/py/py-build-", env.shelf.url())),
        "{}",
        slug.url
    );
    assert!(
        !slug.url.contains("expires="),
        "a Release's slug URL must not expire"
    );
    let a = env.ns.api::<App>().get("py").await.unwrap();
    assert_eq!(a.spec.processes["web"], 1, "the first push starts one web");
    assert_eq!(a.status.unwrap().release.as_deref(), Some("py-v1"));
    serves(&env, "py", "Hello, pipeline from Python").await;

    // The build Job: owned by the App, config in a Secret owned by the Job.
    let jobs = env
        .ns
        .api::<Job>()
        .list(&ListParams::default().labels("flynn.io/app=py"))
        .await
        .unwrap()
        .items;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.owner_references()[0].kind, "App");
    assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
    let secret = env
        .ns
        .api::<Secret>()
        .get(&format!("{}-config", job.name_any()))
        .await
        .unwrap();
    assert_eq!(secret.owner_references()[0].uid, job.uid().unwrap());
    assert!(
        env.shelf.has(&format!("/cache/{ns}/py.tgz")),
        "the build cache was saved"
    );
    assert!(
        env.shelf
            .has(&format!("/sources/{ns}/py/{}.tar.gz", push.commit))
    );

    // Second push: v2, from the cache.
    let app_py = std::fs::read_to_string(repo.work.path().join("app.py")).unwrap();
    repo.write(
        "app.py",
        &app_py.replace("from Python", "from Python, again"),
        false,
    );
    repo.commit("second");
    let (result, lines) = env.deploy(&repo.push(&ns, "py")).await;
    let deployed = result.unwrap_or_else(|e| panic!("second deploy failed: {e}\n{lines:#?}"));
    println!("second deploy timings: {:?}", deployed.timings);
    assert_eq!((deployed.release.as_str(), deployed.version), ("py-v2", 2));
    assert!(has_line(&lines, "Restoring build cache"), "{lines:#?}");
    assert!(
        has_line(&lines, "-----> Using cached dependencies"),
        "{lines:#?}"
    );
    serves(&env, "py", "Hello, pipeline from Python, again").await;

    // A push no buildpack detects: the build fails, says why, and nothing changes.
    for f in ["app.py", "requirements.txt", "vendor"] {
        repo.remove(f);
    }
    repo.write("README", "nothing to build here\n", false);
    repo.commit("third");
    let (result, lines) = env.deploy(&repo.push(&ns, "py")).await;
    let err = result.expect_err("a build no buildpack detects must fail");
    assert!(matches!(err, Error::BuildFailed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("build failed: no buildpack detected the app"),
        "{msg}"
    );
    assert!(
        has_line(&lines, " !     no buildpack detected the app"),
        "{lines:#?}"
    );
    assert_eq!(releases(&env, "py").await, ["py-v1", "py-v2"]);
    let a = env.ns.api::<App>().get("py").await.unwrap();
    assert_eq!(a.spec.release.as_deref(), Some("py-v2"));
    serves(&env, "py", "Hello, pipeline from Python, again").await;
}

/// A buildpack whose compile sleeps: a build that is surely running when cancelled.
fn slow_buildpack() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo {
        work: dir,
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

#[tokio::test]
async fn cancelling_a_push_mid_build_deletes_the_build_job() {
    let env = Env::start("pipeline-cancel").await;
    let ns = env.ns.name().to_owned();
    let buildpack = FileServer::start("slow.tgz", slow_buildpack()).await;
    env.create_app("slow", json!({"env": {"BUILDPACK_URL": buildpack.url}}))
        .await;
    let repo = Repo::from_fixture("shell-procfile");
    let push = repo.push(&ns, "slow");

    let cancel = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
    let deploy = tokio::spawn({
        let pipeline = env.pipeline.clone();
        let cancel = cancel.clone();
        async move { pipeline.deploy(&push, &tx, cancel).await }
    });
    let started = tokio::time::timeout(Duration::from_secs(240), async {
        while let Some(line) = rx.recv().await {
            println!("remote: {line}");
            if line.contains("Sleeping for the test") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        started,
        Ok(true),
        "the build did not reach its compile step"
    );

    let jobs: Api<Job> = env.ns.api();
    let job = the_build_job(&env, "slow").await;

    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), deploy)
        .await
        .expect("a cancelled deploy returns promptly")
        .unwrap();
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");

    eventually(
        "the build Job to be deleted",
        Duration::from_secs(30),
        || async { jobs.get_opt(&job).await.unwrap() },
        |j| j.is_none(),
    )
    .await;
    let pods: Api<Pod> = env.ns.api();
    eventually(
        "the build pod to be gone",
        Duration::from_secs(90),
        || async {
            pods.list(&ListParams::default().labels(&format!("{BUILD_LABEL}={job}")))
                .await
                .unwrap()
                .items
                .len()
        },
        |n| *n == 0,
    )
    .await;
    assert!(
        releases(&env, "slow").await.is_empty(),
        "no Release was made"
    );
}

#[tokio::test]
async fn a_web_process_that_exits_is_rolled_back_and_the_push_says_so() {
    let env = Env::start("pipeline-rollback").await;
    let ns = env.ns.name().to_owned();
    // Long enough for the first (good) deploy on a loaded CI machine; the bad one
    // waits all of it.
    env.create_app("sh", json!({"deployTimeoutSeconds": 45}))
        .await;
    let repo = Repo::from_fixture("shell-procfile");
    let (result, lines) = env.deploy(&repo.push(&ns, "sh")).await;
    let deployed = result.unwrap_or_else(|e| panic!("first deploy failed: {e}\n{lines:#?}"));
    assert_eq!(deployed.release, "sh-v1");
    serves(&env, "sh", "Hello from a shell app").await;

    repo.write(
        "Procfile",
        "web: echo 'web is exiting'; exit 3\nworker: sleep infinity\n",
        false,
    );
    repo.commit("a web that exits");
    let (result, lines) = env.deploy(&repo.push(&ns, "sh")).await;
    let err = result.expect_err("a web that exits must not deploy");
    let Error::RolloutFailed {
        release,
        rolled_back_to,
        ..
    } = &err
    else {
        panic!("expected a rollout failure, got {err:?}\n{lines:#?}");
    };
    assert_eq!(release, "sh-v2");
    assert_eq!(rolled_back_to.as_deref(), Some("sh-v1"));
    let msg = err.to_string();
    assert!(msg.contains("release sh-v2 failed to roll out"), "{msg}");
    assert!(msg.contains("Rolled back: sh-v1 is still serving"), "{msg}");
    assert!(msg.contains("web"), "the reason names the process: {msg}");
    let a = env.ns.api::<App>().get("sh").await.unwrap();
    assert_eq!(a.spec.release.as_deref(), Some("sh-v1"));
    serves(&env, "sh", "Hello from a shell app").await;
}

#[tokio::test]
async fn a_push_to_a_missing_app_or_with_a_missing_image_fails_clearly_and_changes_nothing() {
    let env = Env::start("pipeline-refusals").await;
    let ns = env.ns.name().to_owned();
    let repo = Repo::from_fixture("shell-procfile");

    // No such App: nothing is built.
    let (result, _) = env.deploy(&repo.push(&ns, "ghost")).await;
    let err = result.expect_err("a push to a missing app must fail");
    assert!(matches!(err, Error::AppNotFound { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "app ghost does not exist in namespace {ns}: create it first"
        )),
        "{err}"
    );

    // A slugbuilder image the node does not have: the pod cannot start, the push says
    // why at once (not after the start timeout), and the Job is removed.
    env.create_app("noimg", json!({})).await;
    let broken = env.pipeline_with(|s| {
        s.slugbuilder_image = "localhost/flynn-slugbuilder:no-such-tag".into();
    });
    let started = std::time::Instant::now();
    let (result, lines) = deploy_with(&broken, &repo.push(&ns, "noimg")).await;
    let err = result.expect_err("a build whose image is missing must fail");
    assert!(
        matches!(err, Error::BuildNotStarted { .. }),
        "{err:?}\n{lines:#?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("the slugbuilder image localhost/flynn-slugbuilder:no-such-tag cannot be pulled (ErrImageNeverPull"),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    let jobs: Api<Job> = env.ns.api();
    eventually(
        "the stuck build Job to be deleted",
        Duration::from_secs(30),
        || async {
            jobs.list(&ListParams::default().labels("flynn.io/app=noimg"))
                .await
                .unwrap()
                .items
                .len()
        },
        |n| *n == 0,
    )
    .await;
    assert!(releases(&env, "noimg").await.is_empty());
    let a = env.ns.api::<App>().get("noimg").await.unwrap();
    assert_eq!(a.spec.release, None, "the App is untouched");
}
