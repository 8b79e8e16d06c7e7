//! What the receiver is configured with. `main.rs` fills it from flags and `FLYNN_*`
//! environment variables; tests and the benchmark build it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default of `--max-push-bytes`: 1 GiB.
pub const DEFAULT_MAX_PUSH_BYTES: u64 = 1 << 30;
/// Default of `--max-repo-bytes`: 4 GiB.
pub const DEFAULT_MAX_REPO_BYTES: u64 = 4 << 30;
/// Default of `--max-git-memory`: 256 MiB. A normal push's `index-pack` needs a few MiB
/// (this repository's 2,000 objects: 6 MiB); what needs more is a file git sent as a delta,
/// which git rebuilds in memory next to its base (about twice the file).
pub const DEFAULT_MAX_GIT_MEMORY: u64 = 256 << 20;
/// Default of `--max-concurrent-pushes`.
pub const DEFAULT_MAX_CONCURRENT_PUSHES: usize = 16;
/// Default of `--max-concurrent-pushes-per-namespace`.
pub const DEFAULT_MAX_CONCURRENT_PUSHES_PER_NAMESPACE: usize = 4;

/// A namespaced object's coordinates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

/// What the pre-receive hook does with a push of the deploy branch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HookMode {
    /// Build and deploy it with the pipeline (the only mode the binary offers).
    #[default]
    Deploy,
    /// BENCHMARK ONLY: accept the push without building, so the benchmark measures the
    /// receive path alone. Not reachable from the command line; never use it in a deployment.
    BenchAcceptWithoutBuild,
}

/// The receiver's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the SSH server listens (port 0: any free port, see `Bound::ssh_addr`).
    pub ssh_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: SocketAddr,
    /// Root of the bare repositories: `<repos_dir>/<namespace>/<app>.git`.
    pub repos_dir: PathBuf,
    /// Unix socket the pre-receive hook calls back on.
    pub hook_socket: PathBuf,
    /// The program the pre-receive hook runs as `<program> hook pre-receive` (this binary).
    pub hook_program: PathBuf,
    /// The `git` executable that runs `receive-pack`.
    pub git_program: PathBuf,
    /// The Secret holding the SSH host key (created on first start).
    pub host_key_secret: ObjectRef,
    /// Namespace of the SSH key registry (Secrets labelled `flynn.io/ssh-key=true`).
    pub keys_namespace: String,
    /// Namespace of `<app>.git` paths that name no namespace.
    pub default_namespace: String,
    /// Branches whose push deploys; every other ref is refused.
    pub deploy_branches: Vec<String>,
    /// How long a push waits for another push to the same App before it is refused.
    pub lock_timeout: Duration,
    /// How long a client has to authenticate.
    pub login_grace: Duration,
    /// SSH keepalive interval; three unanswered ones drop the connection.
    pub keepalive_interval: Duration,
    /// How long SIGTERM waits for running pushes before cutting them off.
    pub shutdown_grace: Duration,
    /// New connections per second per source address (refill of a token bucket).
    pub connection_rate: f64,
    /// New connections at once per source address (the bucket's size).
    pub connection_burst: f64,
    /// Session channels one connection may open (git needs one).
    pub max_sessions_per_connection: usize,
    /// What the hook does with deploy-branch pushes.
    pub hook_mode: HookMode,
    /// How often the repositories of deleted Apps are looked for and removed (`None`: never).
    pub repo_gc_interval: Option<Duration>,
    /// Bytes one push may send (the pack, as received over SSH); past it the push is
    /// stopped and git removes what it had received.
    pub max_push_bytes: u64,
    /// Bytes an App's repository may hold on disk with a push's objects (checked by the
    /// hook, before anything is built or accepted).
    pub max_repo_bytes: u64,
    /// Bytes of writable memory each git process of a push may map (`RLIMIT_DATA` of
    /// receive-pack, inherited by the `index-pack` or `unpack-objects` it runs and by the
    /// hook): past it git fails alone, and the pusher is told which limit it hit.
    pub max_git_memory: u64,
    /// Pushes that may run at once, from their authorization to their end; one more is
    /// refused at once.
    pub max_concurrent_pushes: usize,
    /// Pushes that may run at once into the Apps of one namespace.
    pub max_concurrent_pushes_per_namespace: usize,
}

impl Settings {
    /// Defaults for everything but the paths that depend on the deployment.
    pub fn new(repos_dir: PathBuf, hook_socket: PathBuf, hook_program: PathBuf) -> Self {
        Self {
            ssh_addr: SocketAddr::from(([0, 0, 0, 0], 2222)),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            repos_dir,
            hook_socket,
            hook_program,
            git_program: PathBuf::from("git"),
            host_key_secret: ObjectRef {
                namespace: "flynn-system".into(),
                name: "flynn-gitreceiver-hostkey".into(),
            },
            keys_namespace: "flynn-keys".into(),
            default_namespace: "default".into(),
            deploy_branches: vec!["main".into(), "master".into()],
            lock_timeout: Duration::from_secs(600),
            login_grace: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(600),
            connection_rate: 5.0,
            connection_burst: 10.0,
            max_sessions_per_connection: 2,
            hook_mode: HookMode::Deploy,
            repo_gc_interval: Some(Duration::from_secs(3600)),
            max_push_bytes: DEFAULT_MAX_PUSH_BYTES,
            max_repo_bytes: DEFAULT_MAX_REPO_BYTES,
            max_git_memory: DEFAULT_MAX_GIT_MEMORY,
            max_concurrent_pushes: DEFAULT_MAX_CONCURRENT_PUSHES,
            max_concurrent_pushes_per_namespace: DEFAULT_MAX_CONCURRENT_PUSHES_PER_NAMESPACE,
        }
    }

    /// Whether `ref_name` (`refs/heads/...`) is a deploy branch.
    pub fn is_deploy_ref(&self, ref_name: &str) -> bool {
        ref_name
            .strip_prefix("refs/heads/")
            .is_some_and(|b| self.deploy_branches.iter().any(|d| d == b))
    }
}
