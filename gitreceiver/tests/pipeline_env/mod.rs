//! What tests/pipeline.rs runs a deploy against: the slugbuilder and slugrunner images
//! built from this workspace's builder, a slug store and the operator in this process, an
//! App in a namespace of its own, and git repositories made with the git CLI.
#![allow(dead_code)]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, OnceLock},
    time::Duration,
};

use flynn_builder::store::{LocalStore, server};
use flynn_crds::App;
use flynn_e2e::{TestNamespace, install_flynn_crds};
use flynn_gitreceiver::{
    Push,
    pipeline::{Pipeline, PipelineSettings},
};
use flynn_operator::{Settings, metrics::Metrics, server::Health};
use kube::api::PostParams;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The images' tag: not builder's `test` nor the chart's `dev`, so tests of different
/// crates running at once never swap an image under each other.
pub const TAG: &str = "gitreceiver-test";
/// The node's address: the host and every pod reach it, so the in-process store and
/// file server listen there.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
pub const TOKEN: &str = "gitreceiver-test-token-0123456789";

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

const BINARIES: [&str; 3] = ["slugbuilder", "slugrunner", "shelf"];

/// The newest modification time of the files under `path`.
fn newest(path: &Path) -> std::time::SystemTime {
    let meta = std::fs::metadata(path).unwrap();
    if !meta.is_dir() {
        return meta.modified().unwrap();
    }
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| newest(&e.unwrap().path()))
        .max()
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// Whether `dir` holds the builder's binaries built after its last source change
/// (flynn-builder has no path dependencies, so its sources, manifest and the lock file are
/// everything they are made of).
fn fresh_binaries(dir: &Path) -> bool {
    let sources = [
        workspace().join("builder/src"),
        workspace().join("builder/Cargo.toml"),
        workspace().join("Cargo.lock"),
    ]
    .iter()
    .map(|p| newest(p))
    .max()
    .unwrap();
    BINARIES.iter().all(|b| {
        std::fs::metadata(dir.join(b))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > sources)
    })
}

/// Builds `slugbuilder`, `slugrunner` and `shelf` and loads the images made from them
/// (once per test process). Blocking.
///
/// The binaries are flynn-builder's, a dependency, so cargo gives this test no
/// `CARGO_BIN_EXE_*` for them. Under `cargo test --workspace` they are in the target dir
/// already (builder's own tests need them), and are used when newer than every builder
/// source. Otherwise cargo builds them into a target dir of their own next to the shared
/// one: cargo holds the shared one's lock while tests run, and a build there from inside
/// a test would wait forever. That costs one build of flynn-builder the first time; later
/// ones find it fresh in a second.
pub fn ensure_images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let target = std::env::current_exe()
            .unwrap()
            .ancestors()
            .nth(3)
            .expect("the test runs from <target>/debug/deps")
            .to_owned();
        let mut bin_dir = target.join("debug");
        if !fresh_binaries(&bin_dir) {
            let bins_target = target.join("gitreceiver-test-bins");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = Command::new(&cargo)
                .args(["build", "--locked", "-p", "flynn-builder", "--bins"])
                .env("CARGO_TARGET_DIR", &bins_target)
                .current_dir(workspace())
                .output()
                .unwrap_or_else(|e| panic!("running cargo: {e}"));
            assert!(
                out.status.success(),
                "cargo build -p flynn-builder --bins failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            bin_dir = bins_target.join("debug");
        }
        flynn_e2e::load_builder_images(&bin_dir, TAG);
    });
}

/// A slug store on the node's address, alive as long as the value.
pub struct Shelf {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Shelf {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).await.unwrap();
        let listener = tokio::net::TcpListener::bind((IpAddr::V4(NODE_IP), 0))
            .await
            .expect("binding the node's address 10.88.0.1: is the local cluster up?");
        let addr = listener.local_addr().unwrap();
        let shelf = Arc::new(server::Shelf::new(store, TOKEN.into()));
        let task = tokio::spawn(async move {
            server::serve(listener, shelf, std::future::pending())
                .await
                .unwrap();
        });
        Self { addr, dir, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the store holds `path` (e.g. `/cache/ns/app.tgz`).
    pub fn has(&self, path: &str) -> bool {
        self.dir.path().join(path.trim_start_matches('/')).is_file()
    }
}

impl Drop for Shelf {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one file at `/<name>` over plain HTTP on the node's address (a buildpack
/// tarball, where `BUILDPACK_URL` wants a URL ending in `.tgz`), as long as the value lives.
pub struct FileServer {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    pub async fn start(name: &str, body: Vec<u8>) -> Self {
        let listener = tokio::net::TcpListener::bind((IpAddr::V4(NODE_IP), 0))
            .await
            .unwrap();
        let url = format!("http://{}/{name}", listener.local_addr().unwrap());
        let body = Arc::new(body);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        Self { url, task }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The pipeline's settings for the test images and `shelf`.
fn settings(shelf: &Shelf) -> PipelineSettings {
    PipelineSettings {
        shelf_url: shelf.url(),
        shelf_pod_url: shelf.url(),
        shelf_token: TOKEN.into(),
        slugbuilder_image: format!("localhost/flynn-slugbuilder:{TAG}"),
        slugbuilder_pull_policy: "Never".into(),
        build_timeout: Duration::from_secs(300),
        build_start_timeout: Duration::from_secs(120),
        job_ttl: Duration::from_secs(600),
        ..PipelineSettings::default()
    }
}

/// Everything one test deploys with: its namespace, the operator for it, a store, and the
/// pipeline under test. Stops the operator on drop.
pub struct Env {
    pub ns: TestNamespace,
    pub shelf: Shelf,
    pub pipeline: Pipeline,
    operator: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.operator.cancel();
    }
}

impl Env {
    pub async fn start(test: &str) -> Self {
        tokio::task::spawn_blocking(ensure_images).await.unwrap();
        let ns = TestNamespace::create(test).await;
        install_flynn_crds(ns.client()).await.unwrap();
        let operator = CancellationToken::new();
        tokio::spawn(flynn_operator::run(
            ns.client().clone(),
            Settings {
                namespace: Some(ns.name().to_owned()),
                default_domain: "test.flynn.local".into(),
                slugrunner_image: format!("localhost/flynn-slugrunner:{TAG}"),
                slugrunner_pull_policy: "Never".into(),
                ..Settings::default()
            },
            Arc::new(Metrics::default()),
            Arc::new(Health::default()),
            operator.clone(),
        ));
        let shelf = Shelf::start().await;
        let pipeline = Pipeline::new(ns.client().clone(), settings(&shelf));
        Self {
            ns,
            shelf,
            pipeline,
            operator,
        }
    }

    /// A pipeline like [`Env::pipeline`], with `change` applied to its settings.
    pub fn pipeline_with(&self, change: impl FnOnce(&mut PipelineSettings)) -> Pipeline {
        let mut s = settings(&self.shelf);
        change(&mut s);
        Pipeline::new(self.ns.client().clone(), s)
    }

    /// Creates the App `name` with `spec` (camelCase JSON). Config vars given as
    /// `"env": {...}` go where `flynn env set` puts them before a first release: the
    /// App's initial config Secret (an App keeps none itself).
    pub async fn create_app(&self, name: &str, mut spec: serde_json::Value) -> App {
        let vars: std::collections::BTreeMap<String, String> = spec
            .as_object_mut()
            .and_then(|o| o.remove("env"))
            .map(|e| serde_json::from_value(e).unwrap())
            .unwrap_or_default();
        let app: App = serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "App",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        let app = self
            .ns
            .api::<App>()
            .create(&PostParams::default(), &app)
            .await
            .unwrap();
        if !vars.is_empty() {
            self.ns
                .api::<k8s_openapi::api::core::v1::Secret>()
                .create(
                    &PostParams::default(),
                    &flynn_crds::config::initial(&app, &vars),
                )
                .await
                .unwrap();
        }
        app
    }

    /// Runs a deploy to its end, collecting its output; the result and the lines.
    pub async fn deploy(
        &self,
        push: &Push,
    ) -> (
        Result<flynn_gitreceiver::Deployed, flynn_gitreceiver::pipeline::Error>,
        Vec<String>,
    ) {
        deploy_with(&self.pipeline, push).await
    }
}

/// Runs a deploy with `pipeline` to its end, collecting its output.
pub async fn deploy_with(
    pipeline: &Pipeline,
    push: &Push,
) -> (
    Result<flynn_gitreceiver::Deployed, flynn_gitreceiver::pipeline::Error>,
    Vec<String>,
) {
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let printer = tokio::spawn(async move {
            let mut lines = Vec::new();
            while let Some(line) = rx.recv().await {
                println!("remote: {line}");
                lines.push(line);
            }
            lines
        });
        let result = pipeline.deploy(push, &tx, CancellationToken::new()).await;
        drop(tx);
        (result, printer.await.unwrap())
    }
}

/// An app's git repository, as the receiver sees a push: an empty bare repository, and
/// the pushed objects in a separate directory (the quarantine of the pre-receive hook).
pub struct Repo {
    pub work: tempfile::TempDir,
    pub bare: tempfile::TempDir,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Repo {
    /// A repository whose first commit is builder's fixture app `fixture`.
    pub fn from_fixture(fixture: &str) -> Self {
        let work = tempfile::tempdir().unwrap();
        let src = workspace().join("builder/fixtures/apps").join(fixture);
        let status = Command::new("cp")
            .arg("-a")
            .arg(src.join("."))
            .arg(work.path())
            .status()
            .unwrap();
        assert!(status.success());
        git(work.path(), &["init", "-q", "-b", "main"]);
        let bare = tempfile::tempdir().unwrap();
        git(bare.path(), &["init", "-q", "--bare"]);
        let repo = Self { work, bare };
        repo.commit("first");
        repo
    }

    /// Writes `path` (executable if `exec`).
    pub fn write(&self, path: &str, content: &str, exec: bool) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.work.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Removes `path` (file or directory).
    pub fn remove(&self, path: &str) {
        let p = self.work.path().join(path);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }

    /// Commits everything; the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(self.work.path(), &["add", "-A"]);
        git(
            self.work.path(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(self.work.path(), &["rev-parse", "HEAD"])
    }

    /// The push of the current commit of the work tree to `app` in `namespace`.
    pub fn push(&self, namespace: &str, app: &str) -> Push {
        Push {
            namespace: namespace.into(),
            app: app.into(),
            repo: self.bare.path().to_owned(),
            quarantine: Some(self.work.path().join(".git/objects")),
            commit: git(self.work.path(), &["rev-parse", "HEAD"]),
            ref_name: "refs/heads/main".into(),
            user: "alice".into(),
            fingerprint: "SHA256:test-fingerprint".into(),
        }
    }
}

/// GETs `http://<ip>:<port>/` with curl from the host; the body, if it answered 200.
pub fn curl(ip: &str, port: i32) -> Option<String> {
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "5"])
        .arg(format!("http://{ip}:{port}/"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The names of `app`'s Releases, sorted.
pub async fn releases(env: &Env, app: &str) -> Vec<String> {
    let mut names: Vec<String> = env
        .ns
        .api::<flynn_crds::Release>()
        .list(&kube::api::ListParams::default().fields(&format!("spec.app={app}")))
        .await
        .unwrap()
        .items
        .iter()
        .map(kube::ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

/// The name of the one build Job running for `app`.
pub async fn the_build_job(env: &Env, app: &str) -> String {
    let running = env
        .ns
        .api::<k8s_openapi::api::batch::v1::Job>()
        .list(&kube::api::ListParams::default().labels(&format!("flynn.io/app={app}")))
        .await
        .unwrap()
        .items;
    assert_eq!(running.len(), 1, "one build Job runs");
    kube::ResourceExt::name_any(&running[0])
}
