//! The command line: every command, flag and `--help` example.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::errors::EXIT_CODES_HELP;
use crate::output::Format;

/// Flynn on Kubernetes: create apps, `git push` them, scale, configure and route them.
#[derive(Debug, Parser)]
#[command(
    name = "flynn",
    version,
    after_help = EXIT_CODES_HELP,
    after_long_help = concat!(
        "Examples:\n",
        "  flynn create shop && git push flynn main\n",
        "  flynn scale web=3\n",
        "  flynn log -f\n\n",
        "The app is -a APP, else the one the `flynn` git remote of this directory names.\n",
        "Also works as `kubectl flynn` when installed as kubectl-flynn.\n\n",
        crate::exit_codes_help!(),
    ),
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes (listed under their own heading in every `--help`).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The kubeconfig context to use (default: the current one).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of the app (default: the git remote's, else the context's, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAME")]
    pub namespace: Option<String>,
    /// The app (default: the one the `flynn` git remote of this directory names).
    #[arg(
        short = 'a',
        long,
        global = true,
        value_name = "APP",
        env = "FLYNN_APP"
    )]
    pub app: Option<String>,
    /// Output format of lists and objects.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an app, and a git remote `flynn` to push it to.
    #[command(
        after_help = "Examples:\n  flynn create shop\n  flynn create              # named after this directory\n  flynn create shop --remote staging"
    )]
    Create(CreateArgs),
    /// List the apps in the namespace.
    #[command(after_help = "Example:\n  flynn apps\n  flynn -n team-a apps -o json")]
    Apps,
    /// Show an app: release, processes, URLs and conditions.
    #[command(after_help = "Examples:\n  flynn info\n  flynn -a shop info -o yaml")]
    Info,
    /// Delete an app with its releases, pods, routes and pushed code.
    #[command(after_help = "Examples:\n  flynn delete\n  flynn -a shop delete --yes")]
    Delete(DeleteArgs),
    /// Register, list and remove the SSH keys `git push` authenticates with.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show the formation, or change how many processes of each type run.
    #[command(
        after_help = "Examples:\n  flynn scale                 # show the formation\n  flynn scale web=3 worker=1\n  flynn scale web=0 --no-wait"
    )]
    Scale(ScaleArgs),
    /// List the app's pods: type, release, state, restarts, age.
    #[command(after_help = "Example:\n  flynn ps\n  flynn ps -o json")]
    Ps,
    /// Kill a pod (its Deployment starts a replacement).
    #[command(after_help = "Example:\n  flynn kill shop-web-6d5f7b8c9d-x2k4q")]
    Kill(KillArgs),
    /// Show the app's logs, merged across its pods.
    #[command(
        after_help = "Examples:\n  flynn log\n  flynn log -f -t web\n  flynn log --lines 50 --since 10m --raw"
    )]
    Log(LogArgs),
    /// Run a one-off command in a new pod of the current release.
    #[command(
        after_help = "Examples:\n  flynn run bash\n  flynn run -e DEBUG=1 -- rake db:migrate\n  flynn run -d -- ./worker --once     # detached: prints the pod's name\n\nWith stdin and stdout on a terminal the pod gets a TTY (window resizes follow);\notherwise its output is streamed. The command's exit code is flynn's."
    )]
    Run(RunArgs),
    /// Show or change config vars (each change makes a new release).
    #[command(
        after_help = "Examples:\n  flynn env                     # names only\n  flynn env --values            # K=V lines\n  flynn env get DATABASE_URL\n  flynn env set GREETING=hi DEBUG=1\n  flynn env unset DEBUG\n\nConfig vars are kept in Secrets (one immutable snapshot per release), never in\nthe App, Release or Deployment: a rollback brings back the config it ran with."
    )]
    Env(EnvArgs),
    /// Show or change the CPU and memory of each process type (each change makes a new release).
    #[command(
        after_help = "Examples:\n  flynn limit\n  flynn limit set web memory=512Mi cpu=500m      # limits (requests default to them)\n  flynn limit set web --requests cpu=100m        # what the scheduler reserves\n  flynn limit unset web cpu\n\nQuantities are Kubernetes': cpu in cores (0.5, 500m), memory in bytes (512Mi, 1Gi).\nA git push keeps them."
    )]
    Limit(LimitArgs),
    /// Show or change how new releases roll out: strategy, timeout, automatic rollback.
    #[command(
        after_help = "Examples:\n  flynn deployment\n  flynn deployment set --strategy one-by-one --timeout 600\n  flynn deployment set --auto-rollback off\n\nStrategies: rolling (up to 25% more pods, never fewer), all-at-once, one-by-one."
    )]
    Deployment(DeploymentArgs),
    /// List, show and roll back releases.
    #[command(
        after_help = "Examples:\n  flynn release list\n  flynn release show 3\n  flynn release rollback      # to the previous version\n  flynn release rollback 2"
    )]
    Release(ReleaseArgs),
    /// Release a container image (a new release of the app); it must run as a non-root user.
    #[command(
        after_help = "Examples:\n  flynn deploy --image registry.example.com/shop:1.4\n  flynn deploy --image localhost/flynn-smoke-nonroot:1 \\\n      --process 'web=busybox httpd -f -p 8080 -h /www' --port web=8080"
    )]
    Deploy(DeployArgs),
    /// List, add and remove HTTP and TCP routes.
    #[command(
        after_help = "Examples:\n  flynn route\n  flynn route add http www.example.com\n  flynn route add http example.com/api -t api --tls-secret example-com-tls\n  flynn route add tcp --port 5432 -t db\n  flynn route update shop-www.example.com --tls-secret www-tls --https-redirect\n  flynn route remove shop-www.example.com"
    )]
    Route(RouteArgs),
    /// Add, list and remove the app's databases (Postgres, Redis), each given to it as a config var.
    #[command(
        after_help = "Examples:\n  flynn resource add postgres        # DATABASE_URL, in a new release\n  flynn resource add redis --plan small\n  flynn resource list\n  flynn resource remove shop-postgres\n  flynn resource remove shop-postgres --delete-data --yes\n\nThe URL is kept in a Secret and reaches the app's processes from there; it is\nnever written into the App, Release or Deployment."
    )]
    Resource(ResourceArgs),
    /// Postgres: a psql session, a dump to a file, a restore from one.
    #[command(
        after_help = "Examples:\n  flynn pg psql\n  flynn pg psql -- -c 'select count(*) from users'\n  flynn pg dump -f shop.dump\n  flynn pg dump -f - | gzip > shop.dump.gz\n  flynn pg restore -f shop.dump --clean\n\nDumps are pg_dump's custom format (-Fc), streamed: a large dump needs no memory."
    )]
    Pg(PgArgs),
    /// A redis-cli session with the app's Redis.
    #[command(
        name = "redis-cli",
        after_help = "Examples:\n  flynn redis-cli\n  flynn redis-cli -- get greeting\n  flynn redis-cli -r shop-redis-2 -- info memory"
    )]
    RedisCli(RedisCliArgs),
    /// Show the client, platform and Kubernetes versions.
    #[command(after_help = "Example:\n  flynn version")]
    Version,
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  flynn completion bash > /etc/bash_completion.d/flynn\n  flynn completion zsh > \"${fpath[1]}/_flynn\"\n  flynn completion fish > ~/.config/fish/completions/flynn.fish"
    )]
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The app's name (default: this directory's name).
    pub name: Option<String>,
    /// Name of the git remote to add.
    #[arg(long, short = 'r', default_value = "flynn", value_name = "NAME")]
    pub remote: String,
    /// Don't add a git remote.
    #[arg(long, conflicts_with = "remote")]
    pub no_remote: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Don't ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Register an SSH public key for your Kubernetes user.
    #[command(
        after_help = "Examples:\n  flynn key add                     # ~/.ssh/id_ed25519.pub, else ~/.ssh/id_rsa.pub\n  flynn key add ~/.ssh/work.pub\n  flynn key add --expires 90d       # pushes with it are refused after 90 days\n\nThe key carries your user and groups as the API server names them now; run\n`flynn key add` again after your groups change (it updates the key)."
    )]
    Add {
        /// The public key file (default: ~/.ssh/id_ed25519.pub, then ~/.ssh/id_rsa.pub).
        file: Option<PathBuf>,
        /// When the key stops working: a duration (90d, 12h, 30m) or an RFC 3339 time
        /// (default: never). Adding the key again sets a new expiry.
        #[arg(long, value_name = "DURATION|TIME")]
        expires: Option<String>,
    },
    /// List your registered keys.
    #[command(after_help = "Example:\n  flynn key list")]
    List,
    /// Remove one of your keys.
    #[command(
        after_help = "Example:\n  flynn key remove SHA256:X7DkcHCYtpLn0IvvXNX/bxwF3VHLGjW2M/cU2eIl96E"
    )]
    Remove {
        /// The key's fingerprint as `flynn key list` shows it (`SHA256:...`).
        fingerprint: String,
    },
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// New counts, `TYPE=N` (types not named keep their count).
    #[arg(value_name = "TYPE=N")]
    pub counts: Vec<String>,
    /// Return once the change is made, without waiting for the pods.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the pods to be ready (seconds).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The pod, as `flynn ps` lists it.
    pub pod: String,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Keep streaming, including pods that start later.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only this process type.
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub process: Option<String>,
    /// Lines per pod from the end of its log (-n is the namespace, as everywhere).
    #[arg(long, alias = "tail", value_name = "LINES")]
    pub lines: Option<i64>,
    /// Only lines newer than this: `30s`, `10m`, `2h`, `1d`.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Lines only, without the type and pod prefix.
    #[arg(long)]
    pub raw: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Leave the pod running and print its name instead of attaching.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// An extra environment variable, `K=V` (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Resource limits, e.g. `cpu=500m,memory=512Mi`.
    #[arg(long, value_name = "cpu=,memory=")]
    pub limits: Option<String>,
    /// How long the pod may take to start (seconds).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(subcommand)]
    pub command: Option<EnvCommand>,
    /// Print the values too (`K=V` lines); without it only the names are listed.
    #[arg(long)]
    pub values: bool,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Print one config var's value.
    Get { key: String },
    /// Set config vars (one new release for all of them).
    Set {
        #[arg(required = true, value_name = "K=V")]
        pairs: Vec<String>,
        #[command(flatten)]
        wait: EnvWaitArgs,
    },
    /// Remove config vars (one new release for all of them).
    Unset {
        #[arg(required = true, value_name = "K")]
        keys: Vec<String>,
        #[command(flatten)]
        wait: EnvWaitArgs,
    },
}

#[derive(Debug, Args)]
pub struct EnvWaitArgs {
    /// Don't wait for the rollout.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the rollout (seconds).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct DeploymentArgs {
    #[command(subcommand)]
    pub command: Option<DeploymentCommand>,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Change the settings named; the others stay.
    Set {
        /// How a new release replaces the running one.
        #[arg(long, value_enum)]
        strategy: Option<Strategy>,
        /// Seconds a rollout may take before it counts as failed.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=i64::from(i32::MAX)))]
        timeout: Option<u32>,
        /// Whether a failed rollout points the app back at the previous release (on/off).
        #[arg(long, value_name = "on|off", value_parser = clap::builder::BoolishValueParser::new())]
        auto_rollback: Option<bool>,
    },
}

/// `App.spec.strategy`, as the command line spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    Rolling,
    AllAtOnce,
    OneByOne,
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    #[command(subcommand)]
    pub command: Option<LimitCommand>,
}

#[derive(Debug, Subcommand)]
pub enum LimitCommand {
    /// Set limits (or, with --requests, requests) of one process type.
    Set {
        /// The process type, e.g. web.
        process: String,
        /// `cpu=500m`, `memory=512Mi`, `ephemeral-storage=1Gi`, or an extended resource.
        #[arg(required = true, value_name = "RESOURCE=QUANTITY")]
        pairs: Vec<String>,
        #[command(flatten)]
        change: LimitChangeArgs,
    },
    /// Remove limits (or, with --requests, requests) of one process type.
    Unset {
        /// The process type, e.g. web.
        process: String,
        /// `cpu`, `memory`, ...
        #[arg(required = true, value_name = "RESOURCE")]
        resources: Vec<String>,
        #[command(flatten)]
        change: LimitChangeArgs,
    },
}

#[derive(Debug, Args)]
pub struct LimitChangeArgs {
    /// Change requests (what the scheduler reserves) instead of limits.
    #[arg(long)]
    pub requests: bool,
    /// Don't wait for the rollout.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the rollout (seconds).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    pub command: Option<ReleaseCommand>,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// List the app's releases, newest first.
    List,
    /// Show a release (default: the current one).
    Show { version: Option<String> },
    /// Point the app at an older release (default: the one before the current).
    Rollback {
        version: Option<String>,
        /// Don't wait for the rollout.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the rollout (seconds).
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        timeout: u64,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The container image to run.
    #[arg(long, required = true, value_name = "REF")]
    pub image: String,
    /// A process type and its command, `TYPE=COMMAND` (repeatable; default: the current
    /// release's process types, or `web` running the image's own command).
    #[arg(long = "process", short = 'p', value_name = "TYPE=COMMAND")]
    pub processes: Vec<String>,
    /// The port a process type listens on, `TYPE=PORT` (repeatable; `web` defaults to 8080).
    #[arg(long = "port", value_name = "TYPE=PORT")]
    pub ports: Vec<String>,
    /// Don't wait for the rollout.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the rollout (seconds).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    #[command(subcommand)]
    pub command: Option<RouteCommand>,
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// List the app's routes.
    List,
    /// Add a route.
    #[command(subcommand)]
    Add(RouteAdd),
    /// Change a route's process type, certificate, stickiness, HTTPS redirect or draining,
    /// in place (the domain, path and port stay; remove and add for those).
    Update(RouteUpdateArgs),
    /// Remove a route by name (see `flynn route list`).
    Remove { name: String },
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  flynn route update shop-www.example.com --tls-secret www-example-com-tls --https-redirect\n  flynn route update shop-www.example.com --no-sticky -t web\n  flynn route update shop-tcp-5432 -t db"
)]
pub struct RouteUpdateArgs {
    /// The route's name (see `flynn route list`).
    pub name: String,
    /// The process type that gets the traffic.
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub process: Option<String>,
    /// A kubernetes.io/tls Secret in the app's namespace with the certificate.
    #[arg(long, value_name = "NAME")]
    pub tls_secret: Option<String>,
    /// Use the router's default certificate again.
    #[arg(long, conflicts_with = "tls_secret")]
    pub no_tls_secret: bool,
    /// Pin each client to one pod with a cookie.
    #[arg(long)]
    pub sticky: bool,
    #[arg(long, conflicts_with = "sticky")]
    pub no_sticky: bool,
    /// Answer plain-HTTP requests with a redirect to HTTPS.
    #[arg(long)]
    pub https_redirect: bool,
    #[arg(long, conflicts_with = "https_redirect")]
    pub no_https_redirect: bool,
    /// Let the router drain the process's pods before they stop (the default).
    #[arg(long)]
    pub drain_backends: bool,
    #[arg(long, conflicts_with = "drain_backends")]
    pub no_drain_backends: bool,
}

#[derive(Debug, Subcommand)]
pub enum RouteAdd {
    /// Route HTTP(S) requests for DOMAIN[/PATH] to a process type.
    Http {
        /// `www.example.com`, `example.com/api` or `*.example.com`.
        #[arg(value_name = "DOMAIN[/PATH]")]
        target: String,
        /// The process type that gets the traffic.
        #[arg(short = 't', long = "type", default_value = "web", value_name = "TYPE")]
        process: String,
        /// A kubernetes.io/tls Secret in the app's namespace with the certificate.
        #[arg(long, value_name = "NAME")]
        tls_secret: Option<String>,
        /// Pin each client to one pod with a cookie.
        #[arg(long)]
        sticky: bool,
        /// Answer plain-HTTP requests with a redirect to HTTPS.
        #[arg(long)]
        https_redirect: bool,
        /// Stop the process's pods at once instead of letting the router drain them first
        /// (by default a stopped pod keeps running a few seconds before its SIGTERM).
        #[arg(long)]
        no_drain_backends: bool,
    },
    /// Route TCP connections on a router port to a process type.
    Tcp {
        /// The router's port (default: a free one).
        #[arg(long)]
        port: Option<u16>,
        /// The process type that gets the traffic.
        #[arg(short = 't', long = "type", default_value = "web", value_name = "TYPE")]
        process: String,
    },
}

#[derive(Debug, Args)]
pub struct ResourceArgs {
    #[command(subcommand)]
    pub command: Option<ResourceCommand>,
}

/// The providers as the command line names them (`flynn_crds::resource::Provider`).
fn provider_parser() -> impl clap::builder::TypedValueParser<Value = flynn_crds::resource::Provider>
{
    use clap::builder::TypedValueParser;
    use flynn_crds::resource::Provider;
    clap::builder::PossibleValuesParser::new(Provider::ALL.map(Provider::as_str))
        .try_map(|name| name.parse::<Provider>())
}

#[derive(Debug, Subcommand)]
pub enum ResourceCommand {
    /// List the app's resources (the default).
    List,
    /// Add a resource: a new database (or Redis) of the app, its URL in a new release.
    Add {
        /// What to add.
        #[arg(value_name = "PROVIDER", value_parser = provider_parser())]
        provider: flynn_crds::resource::Provider,
        /// The provider's plan (its size and limits); default: the provider's default.
        #[arg(long, value_name = "PLAN")]
        plan: Option<String>,
        /// Return once the resource is created, without waiting for it and the new release.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the resource and the rollout of the new release (seconds).
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Remove a resource: a release without its config var; the data is kept unless
    /// --delete-data.
    Remove {
        /// The resource's name (see `flynn resource list`).
        name: String,
        /// Delete the data too (asks first, unless --yes).
        #[arg(long)]
        delete_data: bool,
        /// Don't ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// How long to wait for the resource to be gone (seconds).
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        timeout: u64,
    },
}

/// Which resource of the app a client session uses.
#[derive(Debug, Args)]
pub struct ResourcePick {
    /// The resource (default: the app's only one of the kind).
    #[arg(short = 'r', long = "resource", value_name = "RESOURCE")]
    pub resource: Option<String>,
    /// How long the client pod may take to start (seconds).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct PgArgs {
    #[command(subcommand)]
    pub command: PgCommand,
}

#[derive(Debug, Subcommand)]
pub enum PgCommand {
    /// Open psql on the app's database (a TTY when stdin is a terminal).
    Psql {
        #[command(flatten)]
        pick: ResourcePick,
        /// Arguments for psql, after `--`.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Dump the database (pg_dump's custom format) to a file, streamed.
    Dump {
        #[command(flatten)]
        pick: ResourcePick,
        /// Where to write the dump; `-` is stdout.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// Restore a custom-format dump (`flynn pg dump`, `pg_dump -Fc`) into the database.
    Restore {
        #[command(flatten)]
        pick: ResourcePick,
        /// The dump to restore.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Drop the dump's objects before creating them again.
        #[arg(long)]
        clean: bool,
    },
}

#[derive(Debug, Args)]
pub struct RedisCliArgs {
    #[command(flatten)]
    pub pick: ResourcePick,
    /// Arguments for redis-cli, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    fn parse_error(args: &[&str]) -> String {
        use clap::Parser;
        super::Cli::try_parse_from(args)
            .map(|c| panic!("{args:?} parsed: {c:?}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn resource_and_client_arguments_are_checked() {
        use clap::Parser;
        // An unknown provider names the choices; its twin parses.
        let e = parse_error(&["flynn", "resource", "add", "mysql"]);
        assert!(
            e.contains("invalid value 'mysql'") && e.contains("[possible values: postgres, redis]"),
            "{e}"
        );
        let ok =
            super::Cli::try_parse_from(["flynn", "resource", "add", "redis", "--plan", "small"])
                .unwrap();
        assert!(matches!(
            ok.command,
            super::Command::Resource(super::ResourceArgs {
                command: Some(super::ResourceCommand::Add {
                    provider: flynn_crds::resource::Provider::Redis,
                    ..
                })
            })
        ));
        let e = parse_error(&["flynn", "resource", "remove"]);
        assert!(e.contains("<NAME>"), "{e}");
        let e = parse_error(&["flynn", "pg", "dump"]);
        assert!(e.contains("--file <FILE>"), "{e}");
        let e = parse_error(&["flynn", "pg", "restore", "--clean"]);
        assert!(e.contains("--file <FILE>"), "{e}");
        // psql's own arguments come after `--` only, so they cannot be taken for flynn's.
        let e = parse_error(&["flynn", "pg", "psql", "-c", "select 1"]);
        assert!(e.contains("unexpected argument '-c'"), "{e}");
        let ok = super::Cli::try_parse_from([
            "flynn",
            "pg",
            "psql",
            "-r",
            "shop-postgres-2",
            "--",
            "-c",
            "select 1",
        ])
        .unwrap();
        let super::Command::Pg(super::PgArgs {
            command: super::PgCommand::Psql { pick, args },
        }) = ok.command
        else {
            panic!("not psql")
        };
        assert_eq!(pick.resource.as_deref(), Some("shop-postgres-2"));
        assert_eq!(args, ["-c", "select 1"]);
        let ok = super::Cli::try_parse_from(["flynn", "redis-cli", "--", "get", "k"]).unwrap();
        assert!(matches!(ok.command, super::Command::RedisCli(ref a) if a.args == ["get", "k"]));
    }

    #[test]
    fn every_command_has_an_example() {
        let cli = super::Cli::command();
        let mut missing = Vec::new();
        for command in cli.get_subcommands().filter(|c| c.get_name() != "help") {
            let has = |c: &clap::Command| {
                c.get_after_help()
                    .is_some_and(|h| h.to_string().contains("flynn "))
            };
            if command.has_subcommands() {
                // Groups (key, env, release, route) show examples on the group or each subcommand.
                if !has(command) && !command.get_subcommands().all(has) {
                    missing.push(command.get_name().to_owned());
                }
            } else if !has(command) {
                missing.push(command.get_name().to_owned());
            }
        }
        assert!(missing.is_empty(), "no example in --help: {missing:?}");
    }
}
