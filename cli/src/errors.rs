//! Every way a `flynn` command can fail, each with the fix and an exit code.
//!
//! The message says what is wrong; [`Error::hint`] says what to do about it; main prints
//! both and exits with [`Error::exit_code`]. The codes are part of the CLI's interface
//! (documented in `flynn --help` and the README), so scripts can tell "not found" from
//! "timed out" without parsing text.

use std::time::Duration;

/// Exit codes of `flynn` (besides `run`, which passes the command's own through).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any failure not listed below (an API error, a failed one-off pod, ...).
    pub const FAILURE: u8 = 1;
    /// Bad usage or input: an unknown flag, a malformed argument, no app here.
    pub const USAGE: u8 = 2;
    /// Something named does not exist: app, release, route, pod, key, config var.
    pub const NOT_FOUND: u8 = 3;
    /// A conflict: the app or key already exists, a route domain or port is taken.
    pub const CONFLICT: u8 = 4;
    /// A wait ran out of time (`--timeout`); the change itself was made.
    pub const TIMEOUT: u8 = 5;
    /// The cluster could not be reached, or refused the request (authentication, RBAC).
    pub const CLUSTER: u8 = 6;
    /// Interrupted (Ctrl-C), as shells report SIGINT.
    pub const INTERRUPTED: u8 = 130;
}

/// The `--help` paragraph listing the exit codes, as a literal for `concat!`.
#[macro_export]
macro_rules! exit_codes_help {
    () => {
        "Exit codes:
  0  success
  1  failure (an API error, a one-off pod that could not run, ...)
  2  bad usage or input (a malformed argument, no app here)
  3  not found (app, release, route, pod, key, config var)
  4  conflict (the app or key exists already, a route's domain or port is taken)
  5  timed out waiting (the change was made; see `flynn info` / `flynn ps`)
  6  cannot reach the cluster, or not allowed (kubeconfig, RBAC)
  130  interrupted
  `flynn run` exits with the command's own exit code."
    };
}

/// The `--help` paragraph listing the exit codes.
pub const EXIT_CODES_HELP: &str = exit_codes_help!();

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no app here: this directory has no `flynn` git remote")]
    NoApp,
    #[error("app {app:?} not found in namespace {namespace}")]
    AppNotFound { app: String, namespace: String },
    #[error("app {app:?} already exists in namespace {namespace}")]
    AppExists { app: String, namespace: String },
    #[error("app {app} has no release yet")]
    NoRelease { app: String },
    #[error("release v{version} of app {app} not found")]
    ReleaseNotFound { app: String, version: i64 },
    #[error("invalid argument {arg:?}: {problem}")]
    BadArgument {
        arg: String,
        problem: String,
        example: String,
    },
    #[error("process type {process:?} is not in release {release} (it has: {available})")]
    UnknownProcessType {
        process: String,
        release: String,
        available: String,
    },
    #[error("config var {key} is not set on app {app}")]
    EnvNotSet { key: String, app: String },
    #[error(transparent)]
    Config(flynn_crds::config::LoadError),
    #[error("other releases of app {app} were being made at the same time (last tried v{version})")]
    ReleaseRace { app: String, version: i64 },
    #[error("pod {pod} is not a pod of app {app}")]
    PodNotFound { pod: String, app: String },
    #[error("route {route} is not a route of app {app}")]
    RouteNotFound { route: String, app: String },
    #[error("route {route} exists already")]
    RouteExists { route: String },
    #[error("{what} is already routed by {owner}")]
    RouteConflict { what: String, owner: String },
    /// The operator refused the Route (another namespace owns its host or port, a port
    /// outside the platform's range, a wildcard the platform does not allow); `why` is its
    /// `Accepted` message, which says what to do.
    #[error("{what} was refused: {why}")]
    RouteRefused { what: String, why: String },
    #[error("no SSH public key found (looked at {looked_at})")]
    NoKeyFile { looked_at: String },
    #[error("cannot read SSH public key {path}: {problem}")]
    BadKey { path: String, problem: String },
    #[error("key {fingerprint} is registered by another user ({owner})")]
    KeyTaken { fingerprint: String, owner: String },
    #[error("no key {fingerprint} registered for {user}")]
    KeyNotFound { fingerprint: String, user: String },
    #[error("refusing to delete app {app} without confirmation")]
    NotConfirmed { app: String },
    #[error("git remote {remote} already exists and points at {url}")]
    RemoteExists { remote: String, url: String },
    #[error(
        "the platform does not say {what}: the ConfigMap flynn-system/flynn-platform {problem}"
    )]
    Platform {
        what: &'static str,
        problem: String,
        env: &'static str,
    },
    /// The platform ConfigMap has no client image for a provider (`postgresImage`,
    /// `redisImage`): the chart installs it with the provider.
    #[error("the platform has no {what}: the ConfigMap flynn-system/flynn-platform {problem}")]
    PlatformImage {
        what: &'static str,
        problem: String,
        chart_value: &'static str,
        env: &'static str,
    },
    #[error("resource {resource} is not a resource of app {app}")]
    ResourceNotFound { resource: String, app: String },
    #[error("app {app} has no {provider} resource")]
    NoResource { app: String, provider: String },
    #[error("app {app} has several {provider} resources: {names}")]
    WhichResource {
        app: String,
        provider: String,
        names: String,
    },
    /// The Resource exists but is not Ready; `why` is its condition's reason and message.
    #[error("resource {resource} is not ready: {why}")]
    ResourceNotReady { resource: String, why: String },
    /// The operator refused the Resource for good (its Ready condition's terminal reason).
    #[error("resource {resource} was refused ({reason}): {message}")]
    ResourceRefused {
        resource: String,
        reason: String,
        message: String,
    },
    #[error("refusing to delete the data of resource {resource} without confirmation")]
    DataNotConfirmed { resource: String },
    /// A dump `flynn pg restore` cannot (or should not) restore, with what to do instead.
    #[error("cannot restore {file}: {problem}")]
    BadDump {
        file: String,
        problem: String,
        fix: String,
    },
    /// `pg_dump` or `pg_restore` failed, or the stream from the pod was lost.
    #[error("{what} failed: {reason}")]
    PgFailed { what: String, reason: String },
    #[error("timed out after {}s waiting for {what}", after.as_secs())]
    Timeout {
        what: String,
        after: Duration,
        hint: String,
    },
    #[error("release {release} did not roll out: {reason}")]
    DeployFailed { release: String, reason: String },
    #[error("one-off pod {pod} failed: {reason}")]
    RunFailed { pod: String, reason: String },
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("cannot reach the Kubernetes API server ({action}): {source}")]
    Unreachable {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("{action}: {}", api_message(source))]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{action}: {detail}")]
    Git { action: String, detail: String },
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

impl Error {
    /// A closure mapping a kube error from `action` (e.g. "creating app shop") to an
    /// [`Error`]: transport failures become [`Error::Unreachable`], API answers [`Error::Api`].
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| match source {
            kube::Error::Api(_) => Error::Api { action, source },
            source => Error::Unreachable { action, source },
        }
    }

    /// An I/O error while doing `action`.
    pub fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let action = action.into();
        move |source| Error::Io { action, source }
    }

    /// `process` is not a process type of `release`.
    pub fn unknown_process_type(process: &str, release: &flynn_crds::Release) -> Error {
        Error::UnknownProcessType {
            process: process.to_owned(),
            release: release.metadata.name.clone().unwrap_or_default(),
            available: release.spec.process_types(),
        }
    }

    /// A malformed argument, with an example of a good one.
    pub fn bad_argument(
        arg: impl Into<String>,
        problem: impl Into<String>,
        example: impl Into<String>,
    ) -> Error {
        Error::BadArgument {
            arg: arg.into(),
            problem: problem.into(),
            example: example.into(),
        }
    }

    fn status(&self) -> Option<&kube::core::Status> {
        match self {
            Error::Api {
                source: kube::Error::Api(status),
                ..
            } => Some(status),
            _ => None,
        }
    }

    /// The exit code main ends with (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        use Error::*;
        match self {
            NoApp
            | BadArgument { .. }
            | UnknownProcessType { .. }
            | BadKey { .. }
            | NotConfirmed { .. }
            | DataNotConfirmed { .. }
            | WhichResource { .. }
            | BadDump { .. } => exit::USAGE,
            AppNotFound { .. }
            | NoRelease { .. }
            | ReleaseNotFound { .. }
            | EnvNotSet { .. }
            | Config(_)
            | PodNotFound { .. }
            | RouteNotFound { .. }
            | NoKeyFile { .. }
            | KeyNotFound { .. }
            | Platform { .. }
            | PlatformImage { .. }
            | ResourceNotFound { .. }
            | NoResource { .. } => exit::NOT_FOUND,
            AppExists { .. }
            | RouteExists { .. }
            | RouteConflict { .. }
            | RouteRefused { .. }
            | KeyTaken { .. }
            | ReleaseRace { .. }
            | RemoteExists { .. } => exit::CONFLICT,
            Timeout { .. } => exit::TIMEOUT,
            Kubeconfig(_) | Unreachable { .. } => exit::CLUSTER,
            Interrupted => exit::INTERRUPTED,
            Api { .. } => match self.status() {
                Some(s) if s.is_not_found() => exit::NOT_FOUND,
                Some(s) if s.is_already_exists() || s.is_conflict() => exit::CONFLICT,
                Some(s) if s.is_forbidden() || s.code == 401 => exit::CLUSTER,
                Some(s) if s.is_invalid() => exit::USAGE,
                _ => exit::FAILURE,
            },
            ResourceRefused { reason, .. } => match reason.as_str() {
                flynn_crds::conditions::reasons::APP_NOT_FOUND => exit::NOT_FOUND,
                flynn_crds::conditions::reasons::ENV_CONFLICT => exit::CONFLICT,
                flynn_crds::conditions::reasons::UNKNOWN_PLAN => exit::USAGE,
                _ => exit::FAILURE,
            },
            DeployFailed { .. }
            | RunFailed { .. }
            | ResourceNotReady { .. }
            | PgFailed { .. }
            | Io { .. }
            | Git { .. } => exit::FAILURE,
        }
    }

    /// How to fix it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        use Error::*;
        Some(match self {
            NoApp => "run `flynn create` here, or pass -a APP".into(),
            AppNotFound { namespace, .. } => format!(
                "`flynn -n {namespace} apps` lists the apps there; create one with `flynn create NAME`, or pick another namespace with -n"
            ),
            AppExists { .. } => "pick another name, or use the existing app with -a NAME".into(),
            NoRelease { .. } => {
                "push code with `git push flynn main`, or deploy an image with `flynn deploy --image REF`".into()
            }
            ReleaseNotFound { .. } => "`flynn release list` shows the app's releases".into(),
            BadArgument { example, .. } => format!("for example: {example}"),
            UnknownProcessType { .. } => {
                "scale one of the release's process types (`flynn scale` lists them)".into()
            }
            EnvNotSet { .. } => "`flynn env` lists the app's config vars".into(),
            Config(_) => "`flynn release list` shows the app's releases".into(),
            ReleaseRace { .. } => "try again: `flynn release list` shows what was made".into(),
            PodNotFound { .. } => "`flynn ps` lists the app's pods".into(),
            RouteNotFound { .. } => "`flynn route list` lists the app's routes".into(),
            RouteExists { .. } => {
                "`flynn route list` shows it; remove it first, or add a different route".into()
            }
            RouteConflict { .. } => {
                "choose another domain, path or port, or remove the other route first".into()
            }
            RouteRefused { .. } => {
                "the route was removed again; `flynn route list` shows the app's routes".into()
            }
            NoKeyFile { .. } => {
                "create a key with `ssh-keygen -t ed25519`, or pass the .pub file: `flynn key add FILE`".into()
            }
            BadKey { .. } => {
                "pass an OpenSSH public key file (one line: `ssh-ed25519 AAAA... comment`), e.g. ~/.ssh/id_ed25519.pub".into()
            }
            KeyTaken { .. } => {
                "use another key (`ssh-keygen -t ed25519 -f ~/.ssh/flynn`), or ask its owner to remove it".into()
            }
            KeyNotFound { .. } => "`flynn key list` shows your keys and their fingerprints".into(),
            NotConfirmed { app } => format!("pass --yes to delete {app} without asking"),
            RemoteExists { remote, .. } => format!(
                "pass --remote OTHER for a different remote name, or remove it: `git remote remove {remote}`"
            ),
            Platform { env, .. } => format!(
                "install the platform (`helm install flynn charts/flynn -n flynn-system --create-namespace`), or set {env}"
            ),
            PlatformImage {
                chart_value, env, ..
            } => format!(
                "the chart installs it with the provider: `helm upgrade flynn charts/flynn -n flynn-system --reuse-values --set {chart_value}=true`, or set {env} to an image with the client"
            ),
            ResourceNotFound { .. } => "`flynn resource list` lists the app's resources".into(),
            NoResource { provider, .. } => format!("add one with `flynn resource add {provider}`"),
            WhichResource { .. } => "pick one with -r NAME (`flynn resource list` lists them)".into(),
            ResourceNotReady { .. } => {
                "`flynn resource list` shows its state; the operator keeps trying while the service is unavailable".into()
            }
            ResourceRefused { reason, resource, .. } => match reason.as_str() {
                flynn_crds::conditions::reasons::APP_NOT_FOUND => {
                    "create the app first (`flynn create`), or pass -a with an existing one".into()
                }
                flynn_crds::conditions::reasons::ENV_CONFLICT => {
                    "another resource of the app holds that config var: `flynn resource list` shows it".into()
                }
                flynn_crds::conditions::reasons::UNKNOWN_PLAN => {
                    "pick one of the provider's plans with --plan, or leave --plan out for the default".into()
                }
                _ => format!(
                    "ask the platform team to enable the provider; remove the resource with `flynn resource remove {resource}`"
                ),
            },
            DataNotConfirmed { resource } => {
                format!("pass --yes to delete the data of {resource} without asking")
            }
            BadDump { fix, .. } => fix.clone(),
            PgFailed { .. } => {
                "its messages are above; `flynn resource list` shows the resource's state".into()
            }
            Timeout { hint, .. } => hint.clone(),
            DeployFailed { .. } => {
                "`flynn info` shows the app's conditions, `flynn log` its output, `flynn ps` its pods".into()
            }
            RunFailed { .. } => "`flynn ps` and `kubectl describe pod` show more".into(),
            Kubeconfig(_) => {
                "set KUBECONFIG, or pick a context from `kubectl config get-contexts` with --context; for the local cluster: export KUBECONFIG=$(e2e/cluster/up)".into()
            }
            Unreachable { .. } => {
                "check that the cluster is up and your kubeconfig points at it (`kubectl cluster-info`; --context picks another)".into()
            }
            Api { .. } => match self.status() {
                Some(s) if s.is_forbidden() => {
                    "your Kubernetes user lacks the permission: ask a cluster admin for a Role on flynn.io resources in this namespace".into()
                }
                Some(s) if s.code == 401 => "your credentials were refused: refresh your kubeconfig".into(),
                Some(s) if s.is_not_found() && s.message.starts_with("namespaces ") => {
                    "create the namespace (`kubectl create namespace NAME`), or pick another with -n".into()
                }
                Some(s) if s.is_not_found() && s.message.contains("the server could not find the requested resource") => {
                    "the flynn.io CRDs are not installed: install the platform (`helm install flynn charts/flynn -n flynn-system --create-namespace`)".into()
                }
                _ => return None,
            },
            Io { .. } | Git { .. } | Interrupted => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_names_the_problem_and_the_fix() {
        let e = Error::NoApp;
        assert_eq!(
            e.to_string(),
            "no app here: this directory has no `flynn` git remote"
        );
        assert_eq!(e.hint().unwrap(), "run `flynn create` here, or pass -a APP");
        assert_eq!(e.exit_code(), exit::USAGE);

        let e = Error::bad_argument("web=x", "N must be a whole number ≥ 0", "flynn scale web=3");
        assert_eq!(e.exit_code(), exit::USAGE);
        assert_eq!(e.hint().unwrap(), "for example: flynn scale web=3");
    }

    #[test]
    fn api_errors_map_to_exit_codes_by_status() {
        let status = |code: u16, reason: &str| {
            kube::Error::Api(Box::new(
                kube::core::Status::failure("m", reason).with_code(code),
            ))
        };
        let e = Error::kube("getting app x")(status(404, "NotFound"));
        assert_eq!(e.exit_code(), exit::NOT_FOUND);
        let e = Error::kube("creating app x")(status(409, "AlreadyExists"));
        assert_eq!(e.exit_code(), exit::CONFLICT);
        let e = Error::kube("listing apps")(status(403, "Forbidden"));
        assert_eq!(e.exit_code(), exit::CLUSTER);
        assert!(e.hint().unwrap().contains("permission"));
        assert_eq!(e.to_string(), "listing apps: m");
    }
}
