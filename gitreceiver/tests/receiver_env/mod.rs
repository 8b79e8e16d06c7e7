//! Runs the receiver in-process against the local cluster and drives it with the real
//! OpenSSH client and git, as a user would.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use flynn_e2e::eventually;
use flynn_gitreceiver::pipeline::{Pipeline, PipelineSettings};
use flynn_gitreceiver::settings::{HookMode, ObjectRef, Settings};
use flynn_gitreceiver::{Running, keys};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Name of the host key Secret in the test namespace.
pub const HOST_KEY_SECRET: &str = "gitreceiver-hostkey";

/// Fails the test (never skips) when a tool is missing, naming the Debian package.
pub fn require_tools() {
    for (tool, package) in [
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("git", "git"),
    ] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(found, "`{tool}` is missing: apt-get install -y {package}");
    }
}

/// The receiver under test, with its repositories and hook socket in a temp dir.
pub struct Receiver {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    client: Client,
    pipeline: Pipeline,
}

impl Receiver {
    /// Settings for a receiver serving `namespace` only: keys, host key and Apps there.
    pub fn settings(dir: &Path, namespace: &str) -> Settings {
        let mut s = Settings::new(
            dir.join("repos"),
            dir.join("hook.sock"),
            PathBuf::from(env!("CARGO_BIN_EXE_flynn-gitreceiver")),
        );
        s.ssh_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        s.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        s.host_key_secret = ObjectRef {
            namespace: namespace.into(),
            name: HOST_KEY_SECRET.into(),
        };
        s.keys_namespace = namespace.into();
        s.default_namespace = namespace.into();
        s.lock_timeout = Duration::from_secs(300);
        s.shutdown_grace = Duration::from_secs(30);
        s
    }

    /// A pipeline that cannot reach its slug store: every deploy fails (after the SSH side
    /// did its part), which is what the SSH tests want.
    pub fn failing_pipeline(client: &Client) -> Pipeline {
        Pipeline::new(
            client.clone(),
            PipelineSettings {
                shelf_url: "http://127.0.0.1:9".into(),
                shelf_pod_url: "http://127.0.0.1:9".into(),
                shelf_token: "not-a-real-token-0123456789".into(),
                ..PipelineSettings::default()
            },
        )
    }

    pub async fn start(client: &Client, namespace: &str, pipeline: Pipeline) -> Self {
        Self::start_with(client, namespace, pipeline, |_| {}).await
    }

    pub async fn start_with(
        client: &Client,
        namespace: &str,
        pipeline: Pipeline,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Self::settings(dir.path(), namespace);
        adjust(&mut settings);
        let running = flynn_gitreceiver::start(settings.clone(), client.clone(), pipeline.clone())
            .await
            .unwrap_or_else(|e| panic!("starting the receiver: {e}"));
        tokio::time::timeout(Duration::from_secs(60), running.ready())
            .await
            .expect("the key registry did not sync within 60 s");
        Self {
            running: Some(running),
            dir,
            settings,
            client: client.clone(),
            pipeline,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn port(&self) -> u16 {
        self.running().ssh_addr.port()
    }

    /// Stops and starts again (same settings, same port), as a pod restart would.
    pub async fn restart(&mut self) {
        let running = self.running.take().unwrap();
        let port = running.ssh_addr.port();
        running.stop().await;
        let mut settings = self.settings.clone();
        settings.ssh_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let running =
            flynn_gitreceiver::start(settings, self.client.clone(), self.pipeline.clone())
                .await
                .unwrap_or_else(|e| panic!("restarting the receiver: {e}"));
        running.ready().await;
        self.running = Some(running);
    }

    /// The bare repository of `namespace/app`.
    pub fn repo(&self, namespace: &str, app: &str) -> PathBuf {
        self.settings
            .repos_dir
            .join(namespace)
            .join(format!("{app}.git"))
    }

    /// Waits until the registry knows `key`.
    pub async fn wait_for_key(&self, key: &SshKey) {
        let running = self.running();
        eventually(
            "the receiver to see the registered key",
            Duration::from_secs(30),
            || async { running.keys().lookup_authorized_key(&key.public) },
            Option::is_some,
        )
        .await;
    }

    /// GET `path` on the ops port: (status line, body).
    pub async fn http_get(&self, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.running().http_addr)
            .await
            .unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (
            head.lines().next().unwrap_or_default().to_owned(),
            body.to_owned(),
        )
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown();
        }
    }
}

/// A client key pair made with ssh-keygen, and the client's known_hosts.
pub struct SshKey {
    pub dir: tempfile::TempDir,
    pub private: PathBuf,
    /// The `authorized_keys` line.
    pub public: String,
}

impl SshKey {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test"])
            .arg("-f")
            .arg(&private)
            .output()
            .expect("ssh-keygen (apt-get install -y openssh-client)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
        Self {
            dir,
            private,
            public: public.trim().to_owned(),
        }
    }

    /// `ssh-keygen -lf`'s fingerprint.
    pub fn fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.private.with_extension("pub"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    }

    /// The ssh command line (for `GIT_SSH_COMMAND`). The host key is pinned under an alias
    /// so a restart on the same port must present the same key.
    pub fn ssh_command(&self, strict: &str) -> String {
        format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o UserKnownHostsFile={} -o StrictHostKeyChecking={strict} -o HostKeyAlias=flynn-test -o ConnectTimeout=20",
            self.private.display(),
            self.dir.path().join("known_hosts").display()
        )
    }

    /// Runs `ssh <args> -p port git@127.0.0.1 <command>` with stdin closed.
    pub fn ssh(&self, port: u16, extra: &[&str], command: Option<&str>) -> Output {
        let cmd = self.ssh_command("accept-new");
        let mut parts = cmd.split(' ').collect::<Vec<_>>();
        let program = parts.remove(0);
        let mut c = Command::new(program);
        c.args(parts)
            .args(extra)
            .args(["-p", &port.to_string(), "git@127.0.0.1"]);
        if let Some(command) = command {
            c.arg(command);
        }
        c.stdin(Stdio::null()).output().unwrap()
    }
}

/// A git working tree with commits.
pub struct WorkTree {
    pub dir: tempfile::TempDir,
}

impl WorkTree {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let t = Self { dir };
        t.git(&["init", "-q", "-b", "main"]);
        t
    }

    pub fn git(&self, args: &[&str]) -> Output {
        git_in(self.dir.path(), args, None)
    }

    pub fn commit_file(&self, path: &str, content: &str) -> String {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
        assert!(self.git(&["add", "-A"]).status.success());
        let out = self.git(&["commit", "-q", "-m", &format!("change {path}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.head()
    }

    pub fn head(&self) -> String {
        String::from_utf8(self.git(&["rev-parse", "HEAD"]).stdout)
            .unwrap()
            .trim()
            .to_owned()
    }

    /// `git push <url> <refspecs>` through `key`.
    pub fn push(&self, key: &SshKey, url: &str, refspecs: &[&str]) -> Output {
        let mut args = vec!["push", url];
        args.extend_from_slice(refspecs);
        git_in(self.dir.path(), &args, Some(&key.ssh_command("accept-new")))
    }
}

pub fn git_in(dir: &Path, args: &[&str], ssh: Option<&str>) -> Output {
    let mut c = Command::new("git");
    c.args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null());
    if let Some(ssh) = ssh {
        c.env("GIT_SSH_COMMAND", ssh);
    }
    c.output().unwrap()
}

/// The remote URL of `namespace/app` on the receiver.
pub fn url(port: u16, namespace: &str, app: &str) -> String {
    format!("ssh://git@127.0.0.1:{port}/{namespace}/{app}.git")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Registers `key` for `user` in the keys namespace, as `flynn key add` does.
pub async fn register_key(client: &Client, namespace: &str, key: &SshKey, user: &str) {
    let secret = keys::key_secret(&key.public, user, &[user, "system:authenticated"]).unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// Lets `user` push to `namespace`: create on releases.flynn.io (a Role and RoleBinding).
pub async fn allow_push(client: &Client, namespace: &str, user: &str) {
    let role = Role {
        metadata: ObjectMeta {
            name: Some("flynn-deployer".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["flynn.io".into()]),
            resources: Some(vec!["releases".into(), "apps".into()]),
            verbs: vec!["create".into(), "get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
    match roles.create(&PostParams::default(), &role).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => panic!("creating the Role: {e}"),
    }
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("deployer-{}", user.replace(['@', '.'], "-"))),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "flynn-deployer".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: user.into(),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// Creates an (empty) App.
pub async fn create_app(client: &Client, namespace: &str, name: &str) {
    let app = flynn_crds::App::new(name, flynn_crds::AppSpec::default());
    Api::<flynn_crds::App>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
}

/// A user name no binding names.
pub fn random_user(prefix: &str) -> String {
    use rand::Rng;
    let n: u32 = rand::rng().random();
    format!("{prefix}-{n:08x}")
}

/// Settings that accept deploy-branch pushes without building (BENCHMARK ONLY mode).
pub fn bench_mode(s: &mut Settings) {
    s.hook_mode = HookMode::BenchAcceptWithoutBuild;
}
