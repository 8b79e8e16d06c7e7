//! `flynn-gitreceiver`: the SSH git receiver (`serve`, the default), and the pre-receive
//! hook it installs in its repositories (`hook pre-receive`). Every setting is a flag and a
//! `FLYNN_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flynn_gitreceiver::pipeline::{Limits, Pipeline, PipelineSettings};
use flynn_gitreceiver::settings::{HookMode, ObjectRef, Settings};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "SSH git server: `git push` builds and deploys Flynn apps."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the receiver (the default).
    Serve,
    /// Git hooks, run by `git receive-pack` in the receiver's repositories.
    Hook {
        #[command(subcommand)]
        hook: Hook,
    },
    /// Runs a command (git receive-pack) with its writable memory limited (RLIMIT_DATA):
    /// how the receiver starts git for a push.
    #[command(name = "limited-exec", hide = true)]
    LimitedExec {
        /// The limit, in bytes.
        #[arg(long)]
        max_data_bytes: u64,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
enum Hook {
    /// Reads the ref updates and has the receiver build and deploy them.
    PreReceive,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// SSH listen address.
    #[arg(long, env = "FLYNN_SSH_ADDR", default_value = "0.0.0.0:2222")]
    ssh_addr: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        alias = "metrics-addr",
        env = "FLYNN_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,
    /// Directory of the bare repositories (a persistent volume).
    #[arg(
        long,
        env = "FLYNN_REPOS_DIR",
        default_value = "/var/lib/flynn-gitreceiver/repos"
    )]
    repos_dir: PathBuf,
    /// Unix socket the pre-receive hook calls back on.
    #[arg(
        long,
        env = "FLYNN_HOOK_SOCKET",
        default_value = "/run/flynn-gitreceiver/hook.sock"
    )]
    hook_socket: PathBuf,
    /// The `git` executable.
    #[arg(long, env = "FLYNN_GIT", default_value = "git")]
    git: PathBuf,
    /// The host key Secret, `<namespace>/<name>` (created with a new key if missing).
    #[arg(long, env = "FLYNN_HOST_KEY_SECRET", default_value = "flynn-system/flynn-gitreceiver-hostkey", value_parser = parse_object_ref)]
    host_key_secret: ObjectRef,
    /// Namespace of the SSH key registry.
    #[arg(long, env = "FLYNN_KEYS_NAMESPACE", default_value = "flynn-keys")]
    keys_namespace: String,
    /// Namespace of `<app>.git` paths without one.
    #[arg(long, env = "FLYNN_DEFAULT_NAMESPACE", default_value = "default")]
    default_namespace: String,
    /// A branch whose push deploys (repeatable; the env var is comma-separated).
    #[arg(
        long = "deploy-branch",
        env = "FLYNN_DEPLOY_BRANCHES",
        default_value = "main,master",
        value_delimiter = ','
    )]
    deploy_branches: Vec<String>,
    /// Seconds a push waits for another push to the same app.
    #[arg(long, env = "FLYNN_LOCK_TIMEOUT_SECONDS", default_value_t = 600)]
    lock_timeout_seconds: u64,
    /// Seconds a client has to authenticate.
    #[arg(long, env = "FLYNN_LOGIN_GRACE_SECONDS", default_value_t = 30)]
    login_grace_seconds: u64,
    /// SSH keepalive interval in seconds.
    #[arg(long, env = "FLYNN_KEEPALIVE_SECONDS", default_value_t = 15)]
    keepalive_seconds: u64,
    /// Seconds SIGTERM waits for running pushes (keep below the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "FLYNN_SHUTDOWN_GRACE_SECONDS", default_value_t = 600)]
    shutdown_grace_seconds: u64,
    /// New SSH connections per second allowed from one address (beyond the burst).
    #[arg(long, env = "FLYNN_CONNECTION_RATE", default_value_t = 5.0)]
    connection_rate: f64,
    /// New SSH connections at once allowed from one address.
    #[arg(long, env = "FLYNN_CONNECTION_BURST", default_value_t = 10.0)]
    connection_burst: f64,
    /// Seconds between passes removing the repositories of deleted Apps (0: never).
    #[arg(long, env = "FLYNN_REPO_GC_INTERVAL_SECONDS", default_value_t = 3600)]
    repo_gc_interval_seconds: u64,
    /// Most data one push may send (its pack, as received): bytes, or with a suffix Ki, Mi,
    /// Gi (K, M, G: powers of 1000).
    #[arg(long, env = "FLYNN_MAX_PUSH_BYTES", default_value = "1Gi", value_parser = parse_bytes)]
    max_push_bytes: u64,
    /// Most an App's repository may hold on disk, with a push's objects (bytes or Ki/Mi/Gi).
    #[arg(long, env = "FLYNN_MAX_REPO_BYTES", default_value = "4Gi", value_parser = parse_bytes)]
    max_repo_bytes: u64,
    /// Most writable memory each git process of a push may use (RLIMIT_DATA; bytes or
    /// Ki/Mi/Gi): git rebuilds a file sent as a delta in memory, about twice its size.
    #[arg(long, env = "FLYNN_MAX_GIT_MEMORY", default_value = "256Mi", value_parser = parse_bytes)]
    max_git_memory: u64,
    /// Most pushes running at once; one more is refused at once.
    #[arg(long, env = "FLYNN_MAX_CONCURRENT_PUSHES", default_value_t = flynn_gitreceiver::settings::DEFAULT_MAX_CONCURRENT_PUSHES)]
    max_concurrent_pushes: usize,
    /// Most pushes running at once into the Apps of one namespace.
    #[arg(long, env = "FLYNN_MAX_CONCURRENT_PUSHES_PER_NAMESPACE", default_value_t = flynn_gitreceiver::settings::DEFAULT_MAX_CONCURRENT_PUSHES_PER_NAMESPACE)]
    max_concurrent_pushes_per_namespace: usize,
    #[command(flatten)]
    log: flynn_telemetry::LogArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// The build pipeline's settings (`PipelineSettings`).
#[derive(Debug, clap::Args)]
struct PipelineArgs {
    /// The slug store (shelf) as this receiver reaches it.
    #[arg(
        long,
        env = "FLYNN_SHELF_URL",
        default_value = "http://shelf.flynn-system.svc:8080"
    )]
    shelf_url: String,
    /// The slug store as pods reach it (default: --shelf-url).
    #[arg(long, env = "FLYNN_SHELF_POD_URL")]
    shelf_pod_url: Option<String>,
    /// File holding the slug store's token (a mounted Secret); or set FLYNN_SHELF_TOKEN, or
    /// --shelf-token-secret.
    #[arg(long, env = "FLYNN_SHELF_TOKEN_FILE", conflicts_with = "shelf_token")]
    shelf_token_file: Option<PathBuf>,
    /// The slug store's token (prefer --shelf-token-file or --shelf-token-secret).
    #[arg(long, env = "FLYNN_SHELF_TOKEN", hide_env_values = true)]
    shelf_token: Option<String>,
    /// The Secret the slug store keeps its token in (data key `token`), `<namespace>/<name>`:
    /// read from the API at startup, waiting (up to 5 minutes) for the store to create it.
    /// Needs `get` on that Secret.
    #[arg(
        long,
        env = "FLYNN_SHELF_TOKEN_SECRET",
        value_name = "NAMESPACE/NAME",
        value_parser = parse_object_ref,
        conflicts_with_all = ["shelf_token", "shelf_token_file"]
    )]
    shelf_token_secret: Option<ObjectRef>,
    /// Image of the build Jobs (entrypoint `slugbuilder`).
    #[arg(
        long,
        env = "FLYNN_SLUGBUILDER_IMAGE",
        default_value = "localhost/flynn-slugbuilder:dev"
    )]
    slugbuilder_image: String,
    /// Pull policy of the slugbuilder image.
    #[arg(
        long,
        env = "FLYNN_SLUGBUILDER_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    slugbuilder_pull_policy: String,
    /// Longest a build may run, in seconds.
    #[arg(long, env = "FLYNN_BUILD_TIMEOUT_SECONDS", default_value_t = 900)]
    build_timeout_seconds: u64,
    /// Longest a build pod may stay pending, in seconds.
    #[arg(long, env = "FLYNN_BUILD_START_TIMEOUT_SECONDS", default_value_t = 300)]
    build_start_timeout_seconds: u64,
    /// How long finished build Jobs are kept, in seconds.
    #[arg(long, env = "FLYNN_BUILD_JOB_TTL_SECONDS", default_value_t = 3600)]
    build_job_ttl_seconds: u64,
    /// The port `web` processes listen on ($PORT).
    #[arg(long, env = "FLYNN_WEB_PORT", default_value_t = 8080)]
    web_port: i32,
    /// Extra seconds to wait for the operator's rollout verdict beyond the App's deploy timeout.
    #[arg(long, env = "FLYNN_ROLLOUT_MARGIN_SECONDS", default_value_t = 30)]
    rollout_margin_seconds: u64,
    /// Most the files of a pushed commit may add up to, unpacked (bytes or Ki/Mi/Gi): a
    /// 2 GB file of zeros travels as 2 MB of pack.
    #[arg(long, env = "FLYNN_MAX_SOURCE_BYTES", default_value = "1Gi", value_parser = parse_bytes)]
    max_source_bytes: u64,
    /// How deep the directories of a pushed commit may nest.
    #[arg(long, env = "FLYNN_MAX_TREE_DEPTH", default_value_t = 256)]
    max_tree_depth: usize,
    /// How many files and directories a pushed commit may hold (git shares identical
    /// subtrees: a few KB of pack can name billions of paths).
    #[arg(long, env = "FLYNN_MAX_ENTRIES", default_value_t = 1_000_000)]
    max_entries: u64,
    /// Where source tarballs are written before upload (default: the system's temp dir).
    #[arg(long, env = "FLYNN_TMP_DIR")]
    tmp_dir: Option<PathBuf>,
    /// Buildpacks replacing those in the slugbuilder image: `URL#REF`, comma-separated,
    /// passed to build Jobs as BUILDPACK_URLS (default: the image's).
    #[arg(
        long,
        env = "FLYNN_BUILDPACK_URLS",
        value_name = "URL#REF,...",
        value_delimiter = ','
    )]
    buildpack_urls: Vec<String>,
}

/// Where the slug store's token comes from (no `Debug`: it holds the token).
enum ShelfToken {
    /// Given (flag, environment, file).
    Known(String),
    /// In a Secret the slug store creates: waited for at startup.
    Secret(ObjectRef),
}

/// How long the receiver waits for the slug store to create its token Secret.
const SHELF_TOKEN_WAIT: Duration = Duration::from_secs(300);

impl PipelineArgs {
    /// The token, or where to read it; the file is read here.
    fn shelf_token(&mut self) -> anyhow::Result<ShelfToken> {
        if let Some(secret) = self.shelf_token_secret.take() {
            return Ok(ShelfToken::Secret(secret));
        }
        let token = match (self.shelf_token_file.take(), self.shelf_token.take()) {
            (Some(path), _) => std::fs::read_to_string(&path)
                .map_err(|e| {
                    anyhow::anyhow!("reading the slug store token {}: {e}", path.display())
                })?
                .trim()
                .to_owned(),
            (None, Some(token)) => token,
            (None, None) => anyhow::bail!(
                "no slug store token: set --shelf-token-secret (FLYNN_SHELF_TOKEN_SECRET), --shelf-token-file (FLYNN_SHELF_TOKEN_FILE) or FLYNN_SHELF_TOKEN"
            ),
        };
        anyhow::ensure!(
            token.len() >= flynn_builder::store::token::MIN_LEN,
            "the slug store token is shorter than {} characters",
            flynn_builder::store::token::MIN_LEN
        );
        Ok(ShelfToken::Known(token))
    }

    fn settings(self, shelf_token: String, git_program: PathBuf) -> PipelineSettings {
        PipelineSettings {
            shelf_pod_url: self.shelf_pod_url.unwrap_or_else(|| self.shelf_url.clone()),
            shelf_url: self.shelf_url,
            shelf_token,
            slugbuilder_image: self.slugbuilder_image,
            slugbuilder_pull_policy: self.slugbuilder_pull_policy,
            build_timeout: Duration::from_secs(self.build_timeout_seconds),
            build_start_timeout: Duration::from_secs(self.build_start_timeout_seconds),
            job_ttl: Duration::from_secs(self.build_job_ttl_seconds),
            web_port: self.web_port,
            rollout_margin: Duration::from_secs(self.rollout_margin_seconds),
            tmp_dir: self.tmp_dir,
            limits: Limits {
                max_source_bytes: self.max_source_bytes,
                max_tree_depth: self.max_tree_depth,
                max_entries: self.max_entries,
            },
            git_program,
            buildpack_urls: self
                .buildpack_urls
                .into_iter()
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            ..PipelineSettings::default()
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Hook {
            hook: Hook::PreReceive,
        }) => {
            // No runtime, no logging setup: the hook's stdout is the pusher's terminal.
            return std::process::ExitCode::from(
                flynn_gitreceiver::hook::client::pre_receive() as u8
            );
        }
        Some(Command::LimitedExec {
            max_data_bytes,
            command,
        }) => {
            // Returns only when git could not be started; stderr is the pusher's terminal
            // (the receiver logs receive-pack's exit).
            let e = flynn_gitreceiver::receive::limited_exec(max_data_bytes, &command);
            eprintln!(
                "flynn: the receiver could not start git ({e}); ask the platform operator to check its logs"
            );
            return std::process::ExitCode::from(127);
        }
        Some(Command::Serve) | None => {}
    }
    cli.serve.log.log_format.init("info,kube=warn,russh=warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flynn-gitreceiver: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli.serve)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("flynn-gitreceiver: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    let shelf_token = args.pipeline.shelf_token()?;
    let hook_program = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("finding this program's path for the hook: {e}"))?;
    let settings = Settings {
        ssh_addr: args.ssh_addr,
        http_addr: args.http_addr,
        repos_dir: args.repos_dir,
        hook_socket: args.hook_socket,
        hook_program,
        git_program: args.git.clone(),
        host_key_secret: args.host_key_secret,
        keys_namespace: args.keys_namespace,
        default_namespace: args.default_namespace,
        deploy_branches: args.deploy_branches,
        lock_timeout: Duration::from_secs(args.lock_timeout_seconds),
        login_grace: Duration::from_secs(args.login_grace_seconds),
        keepalive_interval: Duration::from_secs(args.keepalive_seconds),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
        connection_rate: args.connection_rate,
        connection_burst: args.connection_burst,
        max_sessions_per_connection: 2,
        // The benchmark's accept-without-building mode is deliberately not a flag.
        hook_mode: HookMode::Deploy,
        repo_gc_interval: (args.repo_gc_interval_seconds > 0)
            .then(|| Duration::from_secs(args.repo_gc_interval_seconds)),
        max_push_bytes: args.max_push_bytes,
        max_repo_bytes: args.max_repo_bytes,
        max_git_memory: args.max_git_memory,
        max_concurrent_pushes: args.max_concurrent_pushes,
        max_concurrent_pushes_per_namespace: args.max_concurrent_pushes_per_namespace,
    };
    anyhow::ensure!(
        settings.max_concurrent_pushes > 0 && settings.max_concurrent_pushes_per_namespace > 0,
        "--max-concurrent-pushes and --max-concurrent-pushes-per-namespace must be at least 1"
    );
    let git_program = args.git;
    anyhow::ensure!(
        !settings.deploy_branches.is_empty(),
        "--deploy-branches is empty: name at least one branch"
    );
    let config = kube::Config::infer().await.map_err(|e| {
        anyhow::anyhow!("no Kubernetes API configuration ({e}): run in a pod with a ServiceAccount, or set KUBECONFIG")
    })?;
    let client = kube::Client::try_from(config)?;
    let pipeline_args = args.pipeline;
    let running = match shelf_token {
        ShelfToken::Known(token) => {
            let pipeline =
                Pipeline::new(client.clone(), pipeline_args.settings(token, git_program));
            flynn_gitreceiver::start(settings, client, pipeline).await?
        }
        // The slug store creates the Secret; until it has, /readyz says so.
        ShelfToken::Secret(secret) => {
            let pipeline = {
                let client = client.clone();
                async move {
                    let token = flynn_builder::store::token::wait(
                        &client,
                        &secret.namespace,
                        &secret.name,
                        SHELF_TOKEN_WAIT,
                    )
                    .await?;
                    tracing::info!(secret = %format!("{}/{}", secret.namespace, secret.name), "slug store token read");
                    Ok(Pipeline::new(
                        client,
                        pipeline_args.settings(token, git_program),
                    ))
                }
            };
            flynn_gitreceiver::receiver::start_when(settings, client, pipeline).await?
        }
    };
    tracing::info!(ssh = %running.ssh_addr, http = %running.http_addr, "flynn-gitreceiver started");
    wait_for_signal().await;
    tracing::info!("SIGTERM: no new connections; letting running pushes finish");
    running.stop().await;
    Ok(())
}

/// A byte count: digits, optionally followed by Ki, Mi, Gi, Ti (powers of 1024) or K, M, G,
/// T (powers of 1000), as Kubernetes quantities write them.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit: u64 = match &s[digits.len()..] {
        "" => 1,
        "K" => 1000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: write bytes, or a number with Ki, Mi, Gi, Ti (or K, M, G, T)"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{s:?} is not a byte count (e.g. 1073741824, 1Gi, 500Mi)"))
}

/// `<namespace>/<name>`.
fn parse_object_ref(s: &str) -> Result<ObjectRef, String> {
    match s.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok(ObjectRef {
                namespace: namespace.into(),
                name: name.into(),
            })
        }
        _ => Err(format!("{s:?} is not <namespace>/<name>")),
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "installing a SIGTERM handler");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("flynn-gitreceiver").chain(args.iter().copied()))
    }

    #[test]
    fn object_refs_are_namespace_slash_name() {
        assert_eq!(
            parse_object_ref("flynn-system/flynn-shelf-token"),
            Ok(ObjectRef {
                namespace: "flynn-system".into(),
                name: "flynn-shelf-token".into()
            })
        );
        for bad in ["", "/", "name", "ns/", "/name", "a/b/c"] {
            let err = parse_object_ref(bad).unwrap_err();
            assert!(err.contains("<namespace>/<name>"), "{bad}: {err}");
        }
    }

    #[test]
    fn byte_counts_take_kubernetes_suffixes() {
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("500Mi"), Ok(500 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("12345"), Ok(12345));
        for bad in ["", "Gi", "1GB", "-1", "1.5Gi", "99999999999Ti"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        let cli = parse(&["--shelf-token", "0123456789abcdef"]).unwrap();
        assert_eq!(cli.serve.max_push_bytes, 1 << 30);
        assert_eq!(cli.serve.max_repo_bytes, 4 << 30);
        assert_eq!(cli.serve.pipeline.max_source_bytes, 1 << 30);
        assert_eq!(cli.serve.pipeline.max_tree_depth, 256);
        assert_eq!(cli.serve.max_git_memory, 256 << 20);
        assert_eq!(cli.serve.max_concurrent_pushes, 16);
        assert_eq!(cli.serve.max_concurrent_pushes_per_namespace, 4);
    }

    #[test]
    fn limited_exec_takes_the_command_with_its_options() {
        let cli = parse(&[
            "limited-exec",
            "--max-data-bytes=1024",
            "--",
            "git",
            "-c",
            "a=b",
            "receive-pack",
            "/r",
        ])
        .unwrap();
        match cli.command {
            Some(Command::LimitedExec {
                max_data_bytes,
                command,
            }) => {
                assert_eq!(max_data_bytes, 1024);
                assert_eq!(command, ["git", "-c", "a=b", "receive-pack", "/r"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_shelf_token_secret_is_read_from_its_flag() {
        let mut cli = parse(&["--shelf-token-secret", "flynn-system/flynn-shelf-token"]).unwrap();
        match cli.serve.pipeline.shelf_token().unwrap() {
            ShelfToken::Secret(r) => assert_eq!(
                r,
                ObjectRef {
                    namespace: "flynn-system".into(),
                    name: "flynn-shelf-token".into()
                }
            ),
            ShelfToken::Known(_) => panic!("expected the Secret"),
        }
        let err = parse(&["--shelf-token-secret", "flynn-shelf-token"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("<namespace>/<name>"), "{err}");
    }

    #[test]
    fn the_shelf_token_sources_exclude_each_other() {
        for other in [
            ["--shelf-token", "0123456789abcdef"],
            ["--shelf-token-file", "/run/secrets/token"],
        ] {
            let err = parse(&[
                "--shelf-token-secret",
                "flynn-system/flynn-shelf-token",
                other[0],
                other[1],
            ])
            .unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{other:?}: {err}"
            );
        }
        let mut cli = parse(&["--shelf-token", "0123456789abcdef"]).unwrap();
        assert!(matches!(
            cli.serve.pipeline.shelf_token().unwrap(),
            ShelfToken::Known(t) if t == "0123456789abcdef"
        ));
        let mut cli = parse(&["--shelf-token", "short"]).unwrap();
        assert!(cli.serve.pipeline.shelf_token().is_err());
    }
}
