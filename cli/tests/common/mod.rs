//! Runs the real `flynn` binary against the local cluster, in a namespace of the test's own
//! with an operator running in this process for it (as operator/tests/common does).
#![allow(dead_code)]

/// Slug apps and the non-root image for Pod Security "restricted" namespaces, shared with
/// the operator's tests.
#[path = "../../../operator/tests/common/restricted.rs"]
pub mod restricted;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flynn_e2e::{LOCAL_CLUSTER_KUBECONFIG, TestNamespace, ensure_test_images, install_flynn_crds};
pub use flynn_e2e::{SMOKE_IMAGE, can_i, eventually};
use flynn_operator::metrics::Metrics;
use flynn_operator::server::Health;
use flynn_operator::{Settings, run};
/// The image of the test apps: the smoke image with a non-root user, since image apps run
/// with `runAsNonRoot` (the smoke image itself runs as root).
pub use restricted::NONROOT_IMAGE;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub const T: Duration = Duration::from_secs(120);
pub const GIT_URL: &str = "ssh://git@flynn.test:2222";
/// The web command of the test apps: print a line naming the pod, then serve the smoke page.
pub const WEB: &str =
    "web=sh -c 'echo \"hello from $HOSTNAME\"; exec busybox httpd -f -p 8080 -h /www'";

pub struct Env {
    pub ns: TestNamespace,
    token: CancellationToken,
    /// The working directory `flynn` runs in (no git repository unless a test makes one).
    pub dir: TempDir,
    /// $HOME of `flynn` (for ~/.ssh).
    pub home: TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// What a `flynn` run printed and how it ended.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts success; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "flynn failed: {self:#?}");
        &self.stdout
    }

    /// Asserts a failure with `code` whose stderr says `message` (and a hint); returns stderr.
    #[track_caller]
    pub fn fails(&self, code: i32, message: &str) -> &str {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        assert!(
            self.stderr.contains(message),
            "stderr lacks {message:?}: {self:#?}"
        );
        assert!(self.stderr.contains("hint: "), "no hint: {self:#?}");
        &self.stderr
    }
}

pub fn flynn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_flynn")
}

pub fn kubeconfig() -> String {
    std::env::var("KUBECONFIG").unwrap_or_else(|_| LOCAL_CLUSTER_KUBECONFIG.to_owned())
}

pub async fn setup(test: &str) -> Env {
    setup_with(test, |_| {}).await
}

/// [`setup`], with the operator's settings changed by `change`.
pub async fn setup_with(test: &str, change: impl FnOnce(&mut Settings)) -> Env {
    ensure_test_images();
    restricted::ensure_nonroot_image();
    let ns = TestNamespace::create(test).await;
    install_flynn_crds(ns.client()).await.unwrap();
    let mut settings = Settings {
        namespace: Some(ns.name().to_owned()),
        default_domain: "test.flynn.local".into(),
        ..Settings::default()
    };
    change(&mut settings);
    let token = CancellationToken::new();
    tokio::spawn(run(
        ns.client().clone(),
        settings,
        Arc::new(Metrics::default()),
        Arc::new(Health::default()),
        token.clone(),
    ));
    Env {
        ns,
        token,
        dir: TempDir::new().unwrap(),
        home: TempDir::new().unwrap(),
    }
}

impl Env {
    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// The environment every `flynn` run gets: the cluster, the test's keys namespace and
    /// git URL (instead of the chart's ConfigMap), no colour.
    pub fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KUBECONFIG", kubeconfig()),
            ("FLYNN_GIT_URL", GIT_URL.to_owned()),
            ("FLYNN_KEYS_NAMESPACE", self.name().to_owned()),
            ("HOME", self.home.path().display().to_string()),
            ("NO_COLOR", "1".to_owned()),
        ]
    }

    /// `flynn -n <ns> ARGS` in `dir`, stdin closed.
    pub fn command_in(&self, dir: &Path, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(flynn_bin());
        cmd.arg("-n").arg(self.name()).args(args);
        cmd.current_dir(dir)
            .env_remove("FLYNN_APP")
            .envs(self.envs());
        cmd.stdin(std::process::Stdio::null());
        cmd.kill_on_drop(true);
        cmd
    }

    pub async fn flynn_in(&self, dir: &Path, args: &[&str]) -> Out {
        let out = self.command_in(dir, args).output().await.unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub async fn flynn(&self, args: &[&str]) -> Out {
        self.flynn_in(self.dir.path(), args).await
    }

    /// `flynn create APP` and `flynn deploy --image` of the (non-root) smoke image with
    /// [`WEB`]; waits for the rollout (the deploy command does).
    pub async fn deploy_app(&self, app: &str) {
        self.flynn(&["create", app, "--no-remote"]).await.ok();
        self.deploy(app).await;
    }

    /// `flynn deploy --image` of the smoke image with [`WEB`] to the existing `app`.
    pub async fn deploy(&self, app: &str) {
        let out = self
            .flynn(&[
                "-a",
                app,
                "deploy",
                "--image",
                NONROOT_IMAGE,
                "--process",
                WEB,
                "--port",
                "web=8080",
                "--timeout",
                "180",
            ])
            .await;
        assert!(out.ok().contains("Deployed release v1"), "{out:#?}");
    }
}

/// Replaces what differs between runs: the namespace, ages (`42s`, `5m`, ...).
pub fn normalize(text: &str, ns: &str) -> String {
    let text = text.replace(ns, "<ns>");
    text.lines()
        .map(|line| {
            let mut rest = line;
            // Keep the column spacing: replace ages in place, padding to the same width.
            let mut out = String::new();
            while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
                out.push_str(&rest[..start]);
                rest = &rest[start..];
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let word = &rest[..end];
                let is_age = word.len() >= 2
                    && word[..word.len() - 1].bytes().all(|b| b.is_ascii_digit())
                    && word.ends_with(['s', 'm', 'h', 'd']);
                out.push_str(if is_age { "<age>" } else { word });
                rest = &rest[end..];
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

pub fn golden(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.txt"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
