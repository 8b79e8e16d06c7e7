//! The slugrunner: fetches a slug into the app directory and runs one of its process types
//! (`start <type>`) or a literal command, as an app container's entrypoint.
//!
//! The command runs as `bash -c` after sourcing `.profile.d/*.sh` and `.profile` (as Heroku
//! does), so `$PORT` expands and `a && b` works. The runner stays as a tiny init (the
//! container's PID 1): a shell as PID 1 would ignore SIGTERM, so the runner puts the app in
//! its own process group, forwards signals to the whole group, reaps orphans, and exits with
//! the app's status.

use std::{
    io::IsTerminal,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
};

use nix::{
    errno::Errno,
    sys::{
        signal::{Signal, kill, killpg},
        wait::{WaitStatus, waitpid},
    },
    unistd::Pid,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    client::{ClientError, HttpClient},
    procfile::{Procfile, ProcfileError},
    release::{BuildpackRelease, RELEASE_FILE, ReleaseError},
    shell,
    slug::{self, SlugError, SlugInfo},
};

/// Runs after the slug is in place: the Heroku profile, then the command in `$1`.
const PRELUDE: &str = r#"cd "$HOME" || exit 1
for f in "$HOME"/.profile.d/*.sh; do [ -f "$f" ] && . "$f"; done
unset f
if [ -f "$HOME/.profile" ]; then . "$HOME/.profile"; fi
hash -r
exec bash -c "$1""#;

/// Where the slug comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlugSource {
    /// An http(s) URL (`SLUG_URL`).
    Url(String),
    /// Standard input (`SLUG_URL=-`).
    Stdin,
}

/// Why the app could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No arguments.
    #[error("nothing to run: give `start <process type>` or a command")]
    NoCommand,
    /// `start` without a type.
    #[error("`start` needs a process type, e.g. `start web`")]
    NoType,
    /// The process type is in neither the Procfile nor the buildpack's defaults.
    #[error(
        "unknown process type `{name}`; this slug has {}",
        if .known.is_empty() { "no process types (add a Procfile)".to_owned() } else { format!("{}", .known.join(", ")) }
    )]
    UnknownType {
        /// What was asked for.
        name: String,
        /// What exists.
        known: Vec<String>,
    },
    /// The Procfile in the slug is malformed.
    #[error("the slug's {0}")]
    Procfile(#[from] ProcfileError),
    /// The `.release` in the slug is malformed.
    #[error("the slug's {RELEASE_FILE}: {0}")]
    Release(#[from] ReleaseError),
    /// Downloading the slug failed.
    #[error("fetching the slug: {0}")]
    Fetch(#[from] ClientError),
    /// The slug URL answered 404.
    #[error("no slug at {0}: was it deleted from the store? Rebuild the app or roll back")]
    NotFound(String),
    /// Unpacking or checking the slug failed.
    #[error(transparent)]
    Slug(#[from] SlugError),
    /// The app directory could not be read, or the app not started.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Downloads (streaming) or reads the slug and unpacks it into `app_dir`, checking `sha256`
/// when given.
pub async fn fetch_slug(
    source: &SlugSource,
    client: &HttpClient,
    app_dir: &Path,
    sha256: Option<&str>,
) -> Result<SlugInfo, RunError> {
    let reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match source {
        SlugSource::Stdin => Box::new(tokio::io::stdin()),
        SlugSource::Url(url) => Box::new(
            client
                .get(url)
                .await?
                .ok_or_else(|| RunError::NotFound(url.split('?').next().unwrap_or(url).to_owned()))?
                .0,
        ),
    };
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let (dir, sha) = (app_dir.to_owned(), sha256.map(str::to_owned));
    let info = tokio::task::spawn_blocking(move || slug::unpack(bridge, &dir, sha.as_deref()))
        .await
        .map_err(|e| SlugError::Corrupt(e.to_string()))??;
    Ok(info)
}

/// The process types of the slug in `app_dir`: its Procfile over the buildpack's defaults.
pub fn process_types(app_dir: &Path) -> Result<Procfile, RunError> {
    let read = |name: &str| match std::fs::read_to_string(app_dir.join(name)) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RunError::Io {
            action: "reading",
            path: app_dir.join(name),
            source,
        }),
    };
    let procfile = read("Procfile")?
        .map(|t| Procfile::parse(&t))
        .transpose()?
        .unwrap_or_default();
    let release = read(RELEASE_FILE)?
        .map(|t| BuildpackRelease::parse(&t))
        .transpose()?
        .unwrap_or_default();
    Ok(procfile.merged_over(&release.default_procfile()))
}

/// The shell command line for `args`: `start <type>` looks the type up, anything else is
/// run as given (each argument one word, as `flynn run` means it). Also returns the type.
pub fn resolve_command(
    app_dir: &Path,
    args: &[String],
) -> Result<(String, Option<String>), RunError> {
    match args {
        [] => Err(RunError::NoCommand),
        [start] if start == "start" => Err(RunError::NoType),
        [start, name] if start == "start" => {
            let types = process_types(app_dir)?;
            match types.get(name) {
                Some(cmd) => Ok((cmd.to_owned(), Some(name.clone()))),
                None => Err(RunError::UnknownType {
                    name: name.clone(),
                    known: types.types().map(str::to_owned).collect(),
                }),
            }
        }
        words => Ok((shell::join(words), None)),
    }
}

/// The app's process: bash running the profile and then `command_line`, with `HOME` set to
/// the app directory and the rest of the environment (release env, `PORT`) inherited.
pub fn app_command(app_dir: &Path, command_line: &str, process_type: Option<&str>) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(PRELUDE)
        .arg("slugrunner")
        .arg(command_line);
    cmd.env("HOME", app_dir).current_dir(app_dir);
    // The signed slug URL is of no use to the app.
    cmd.env_remove("SLUG_URL").env_remove("SLUG_SHA256");
    if let Some(t) = process_type
        && std::env::var_os("DYNO").is_none()
    {
        cmd.env("DYNO", format!("{t}.1"));
    }
    cmd
}

/// Starts `cmd` and waits for it, forwarding SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and
/// SIGUSR2 to it and reaping any other child (as PID 1 must). Returns the exit code to exit
/// with: the app's, or 128 + the signal that killed it.
pub async fn supervise(mut cmd: Command) -> Result<i32, RunError> {
    // Its own process group, so a signal reaches the app's children too (a shell's `a && b`,
    // a server's workers). Not with a terminal: `flynn run bash` must stay in the terminal's
    // foreground group or it stops on the first read.
    let group = !std::io::stdin().is_terminal();
    if group {
        cmd.process_group(0);
    }
    let child = cmd.spawn().map_err(|source| RunError::Io {
        action: "starting the app with",
        path: "bash".into(),
        source,
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    // std's Child would only reap its own pid; the loop below reaps everything.
    drop(child);

    let waiter = tokio::task::spawn_blocking(move || wait_for(pid));
    let kinds = [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
        SignalKind::quit(),
        SignalKind::user_defined1(),
        SignalKind::user_defined2(),
    ];
    let mut streams = Vec::new();
    for k in kinds {
        let s = signal(k).map_err(|source| RunError::Io {
            action: "handling signals of",
            path: "slugrunner".into(),
            source,
        })?;
        streams.push((k, s));
    }
    let forward = async move {
        loop {
            let recvs = streams.iter_mut().map(|(k, s)| {
                let k = *k;
                Box::pin(async move {
                    s.recv().await;
                    k
                })
            });
            let (kind, _, _) = futures::future::select_all(recvs).await;
            let Ok(sig) = Signal::try_from(kind.as_raw_value()) else {
                continue;
            };
            tracing::info!(signal = %sig, "forwarding signal to the app");
            let _ = if group {
                killpg(pid, sig)
            } else {
                kill(pid, sig)
            };
        }
    };
    tokio::select! {
        code = waiter => Ok(code.unwrap_or(1)),
        () = forward => Ok(1),
    }
}

/// Reaps children until `pid` exits; its exit code.
fn wait_for(pid: Pid) -> i32 {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => return 128 + sig as i32,
            Ok(_) | Err(Errno::EINTR) => continue,
            // No children left (someone else reaped ours): nothing to wait for.
            Err(_) => return 1,
        }
    }
}

/// Execs the command in place of this process, without supervision: for `--exec` when the
/// runner is not PID 1 and should disappear from the process tree.
pub fn exec(mut cmd: Command) -> RunError {
    let source = cmd.exec();
    RunError::Io {
        action: "executing",
        path: "bash".into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(procfile: Option<&str>, release: Option<&str>) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        if let Some(p) = procfile {
            std::fs::write(d.path().join("Procfile"), p).unwrap();
        }
        if let Some(r) = release {
            std::fs::write(d.path().join(RELEASE_FILE), r).unwrap();
        }
        d
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn start_looks_up_the_procfile_then_the_buildpack_defaults() {
        let d = app(
            Some("web: ./web\n"),
            Some("default_process_types:\n  web: other\n  console: irb\n"),
        );
        assert_eq!(
            resolve_command(d.path(), &args(&["start", "web"]))
                .unwrap()
                .0,
            "./web"
        );
        assert_eq!(
            resolve_command(d.path(), &args(&["start", "console"]))
                .unwrap()
                .0,
            "irb"
        );
        let err = resolve_command(d.path(), &args(&["start", "clock"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown process type `clock`; this slug has web, console"
        );
    }

    #[test]
    fn other_arguments_are_a_literal_command() {
        let d = app(None, None);
        let (cmd, ty) = resolve_command(d.path(), &args(&["echo", "a b", "$HOME"])).unwrap();
        assert_eq!((cmd.as_str(), ty), ("echo 'a b' '$HOME'", None));
        assert!(matches!(
            resolve_command(d.path(), &[]),
            Err(RunError::NoCommand)
        ));
        assert!(matches!(
            resolve_command(d.path(), &args(&["start"])),
            Err(RunError::NoType)
        ));
        let err = resolve_command(d.path(), &args(&["start", "web"])).unwrap_err();
        assert!(
            err.to_string()
                .contains("no process types (add a Procfile)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn runs_the_command_after_the_profile_and_returns_its_status() {
        let d = app(None, None);
        std::fs::create_dir(d.path().join(".profile.d")).unwrap();
        std::fs::write(d.path().join(".profile.d/a.sh"), "export GREETING=hello\n").unwrap();
        let out = d.path().join("out");
        let cmd = format!("echo \"$GREETING $HOME\" > {} && exit 3", out.display());
        let code = supervise(app_command(d.path(), &cmd, None)).await.unwrap();
        assert_eq!(code, 3);
        let text = std::fs::read_to_string(out).unwrap();
        assert_eq!(text.trim(), format!("hello {}", d.path().display()));
    }
}
