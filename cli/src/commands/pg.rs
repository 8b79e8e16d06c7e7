//! `pg psql [-- ARGS] | dump -f FILE | restore -f FILE [--clean]`: the app's Postgres
//! database, through a client pod.
//!
//! Each command starts a pod in the App's namespace from the platform's `postgresImage`
//! (psql, pg_dump and pg_restore of the platform's Postgres major version), with the App's
//! label (so the network lets it reach the database) and `PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD`, `PGDATABASE` from the Resource's credentials Secret by reference: the
//! password never passes through the CLI. The pod is deleted when the command ends.
//!
//! `psql` is wired like `flynn run` ([`super::pod_session`]): a TTY on a terminal, else its
//! output from the log and piped input (`flynn pg psql < dump.sql`) through stdin.
//!
//! `dump` and `restore` move the dump through an attach of the pod's stdin, stdout and
//! stderr, which keeps them apart and carries bytes as they are; flow control runs end to
//! end (a full file or a slow pod holds the other side back), so a dump of any size passes
//! through a few buffers of 64 KiB. An attach sees only what the container writes once it is
//! attached, so the pod's shell waits for a line on stdin (`go`) before it starts. `restore`
//! first asks the server its version (`SHOW server_version_num`) and refuses, before sending
//! a byte, a dump made by another major version.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flynn_crds::resource::{Provider, Resource, secret_keys};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use kube::api::AttachParams;
use kube::{Api, ResourceExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::pg_dump_file::{self, HEADER_MAX, Header};
use super::pod_session::{self, CONTAINER, Io};
use super::resource::{self, ClientPod, client_pod, credentials_secret, from_secret};
use crate::cli::{PgArgs, PgCommand, ResourcePick};
use crate::context::Ctx;
use crate::errors::{Error, Result, exit};
use crate::output;
use crate::progress::Progress;

/// The buffer of each attach stream and of the file copies.
const CHUNK: usize = 64 * 1024;

/// Runs a `pg` command; the exit code (psql's own for `psql`).
pub async fn pg(ctx: &Ctx, args: &PgArgs) -> Result<u8> {
    match &args.command {
        PgCommand::Psql { pick, args } => psql(ctx, pick, args).await,
        PgCommand::Dump { pick, file } => dump(ctx, pick, file).await.map(|()| exit::OK),
        PgCommand::Restore { pick, file, clean } => {
            restore(ctx, pick, file, *clean).await.map(|()| exit::OK)
        }
    }
}

/// `PGHOST` ... `PGDATABASE` from the credentials Secret of `r`, by reference.
pub fn pg_env(r: &Resource) -> Vec<EnvVar> {
    let secret = credentials_secret(r);
    [
        ("PGHOST", secret_keys::HOST),
        ("PGPORT", secret_keys::PORT),
        ("PGUSER", secret_keys::USERNAME),
        ("PGPASSWORD", secret_keys::PASSWORD),
        ("PGDATABASE", secret_keys::DATABASE),
    ]
    .into_iter()
    .map(|(name, key)| from_secret(name, &secret, key))
    .collect()
}

/// The shell line of a dump pod: wait for `go` (the CLI is attached), then pg_dump to stdout.
pub const DUMP_SCRIPT: &str =
    r#"read -r go && [ "$go" = go ] || exit 125; exec pg_dump -Fc --no-owner --no-acl"#;

/// The shell line of a restore pod: wait for `go`, say the server's version, wait for
/// `restore` (the CLI checked the dump against it), then pg_restore from stdin.
pub fn restore_script(clean: bool) -> String {
    let clean = if clean { " --clean --if-exists" } else { "" };
    format!(
        r#"read -r go && [ "$go" = go ] || exit 125; v=$(psql -XAtqc 'SHOW server_version_num') || exit 124; echo "server_version_num=$v"; read -r go && [ "$go" = restore ] || exit 0; exec pg_restore --no-owner --no-acl{clean} -d "$PGDATABASE""#
    )
}

struct Target {
    app: String,
    resource: Resource,
    image: String,
}

async fn target(ctx: &Ctx, pick: &ResourcePick) -> Result<Target> {
    let app = ctx.app().await?.name_any();
    let resource = resource::pick(ctx, &app, Provider::Postgres, pick.resource.as_deref()).await?;
    let image = ctx.platform().await.postgres_image()?;
    Ok(Target {
        app,
        resource,
        image,
    })
}

async fn psql(ctx: &Ctx, pick: &ResourcePick, args: &[String]) -> Result<u8> {
    let t = target(ctx, pick).await?;
    let io = Io::detect();
    let mut command = vec!["psql".to_owned()];
    command.extend(args.iter().map(|a| escape_expansion(a)));
    let pod = client_pod(&ClientPod {
        app: &t.app,
        purpose: "psql",
        image: &t.image,
        command,
        env: pg_env(&t.resource),
        io,
    });
    pod_session::run_interactive(ctx, &pod, "psql", io, Duration::from_secs(pick.timeout)).await
}

/// Kubernetes expands `$(VAR)` in a container's command; a user's argument is taken as
/// written (`$$` is a literal `$`).
pub fn escape_expansion(arg: &str) -> String {
    arg.replace('$', "$$")
}

/// A pod whose shell runs `script` once told to, attached with stdin, stdout and stderr.
async fn start_gated(
    ctx: &Ctx,
    t: &Target,
    purpose: &str,
    script: String,
    timeout: Duration,
) -> Result<(Api<Pod>, String)> {
    let pod = client_pod(&ClientPod {
        app: &t.app,
        purpose,
        image: &t.image,
        command: vec!["sh".into(), "-c".into(), script],
        env: pg_env(&t.resource),
        io: Io::PipeStdin,
    });
    let (api, name) = pod_session::create(ctx, &pod, purpose).await?;
    if let Err(e) = pod_session::wait_started(ctx, &api, &name, timeout).await {
        pod_session::delete(&api, &name).await;
        return Err(e);
    }
    Ok((api, name))
}

async fn attach_all(api: &Api<Pod>, name: &str) -> Result<kube::api::AttachedProcess> {
    let mut params = AttachParams::default()
        .container(CONTAINER)
        .stdin(true)
        .stdout(true)
        .stderr(true);
    params.max_stdin_buf_size = Some(CHUNK);
    params.max_stdout_buf_size = Some(CHUNK);
    params.max_stderr_buf_size = Some(CHUNK);
    api.attach(name, &params)
        .await
        .map_err(Error::kube(format!("attaching to pod {name}")))
}

/// Copies the pod's stderr to ours as it comes; the last lines, for the error message.
fn forward_stderr(
    stderr: impl AsyncRead + Unpin + Send + 'static,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut last = std::collections::VecDeque::new();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{line}");
            // The tools' own lines (`pg_restore: error: ...`), not the SQL they quote.
            if line.starts_with("pg_") || line.starts_with("psql:") || line.starts_with("sh:") {
                last.push_back(line);
                if last.len() > 3 {
                    last.pop_front();
                }
            }
        }
        last.into()
    })
}

/// Copies `from` to `to` in chunks, showing the bytes moved; the count.
async fn copy_counting(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    progress: &Progress,
    verb: &str,
    step: u64,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    let mut shown: u64 = 0;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.flush().await?;
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        total += n as u64;
        if total - shown >= step {
            shown = total;
            progress.set(format!("{verb} {}", size(total)));
        }
    }
}

/// How often the progress says how far along: often on a terminal (the line is redrawn),
/// rarely in a log (each is a line).
fn step(ctx: &Ctx) -> u64 {
    if ctx.ui.stderr_tty {
        1 << 20
    } else {
        256 << 20
    }
}

/// A byte count for people: `512 B`, `3.2 MB`, `1.1 GB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1000 => format!("{b} B"),
        b if b < 1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        b if b < 1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b => format!("{:.2} GB", b as f64 / 1e9),
    }
}

/// How a gated session ended: the attach closed cleanly (the kubelet's status came), and
/// the container's exit code, or [`exit::FAILURE`] when the pod is gone (deleted under the
/// session: its exit code went with it, and nothing it sent can be trusted).
async fn finish(
    api: &Api<Pod>,
    name: &str,
    attached: kube::api::AttachedProcess,
    status: Option<
        impl std::future::Future<
            Output = Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
        >,
    >,
) -> Result<(bool, u8)> {
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    let joined = attached.join().await;
    let clean = joined.is_ok() && status.is_some();
    match pod_session::exit_code(api, name).await {
        Ok(code) => Ok((clean, code)),
        Err(e) if e.exit_code() == exit::NOT_FOUND => Ok((false, exit::FAILURE)),
        Err(e) => Err(e),
    }
}

async fn dump(ctx: &Ctx, pick: &ResourcePick, file: &Path) -> Result<()> {
    let t = target(ctx, pick).await?;
    let database = t.resource.name_any();
    let to_stdout = file.as_os_str() == "-";
    let partial = partial_path(file);
    let (api, name) = start_gated(
        ctx,
        &t,
        "pg-dump",
        DUMP_SCRIPT.to_owned(),
        Duration::from_secs(pick.timeout),
    )
    .await?;
    let session = async {
        let mut attached = attach_all(&api, &name).await?;
        let status = attached.take_status();
        let mut stdin = attached
            .stdin()
            .ok_or_else(|| pod_session::attach_error(&name, "no stdin"))?;
        let mut stdout = attached
            .stdout()
            .ok_or_else(|| pod_session::attach_error(&name, "no stdout"))?;
        let stderr = attached
            .stderr()
            .ok_or_else(|| pod_session::attach_error(&name, "no stderr"))?;
        let errors = forward_stderr(stderr);
        stdin
            .write_all(b"go\n")
            .await
            .map_err(Error::io(format!("starting pg_dump in pod {name}")))?;
        let progress = Progress::start(ctx.ui, format!("dumping {database}"));
        let copied = if to_stdout {
            let mut out = tokio::io::stdout();
            copy_counting(&mut stdout, &mut out, &progress, "dumped", step(ctx)).await
        } else {
            let mut out = tokio::fs::File::create(&partial)
                .await
                .map_err(Error::io(format!("creating {}", partial.display())))?;
            let copied = copy_counting(&mut stdout, &mut out, &progress, "dumped", step(ctx)).await;
            match copied {
                Ok(n) => out.sync_all().await.map(|()| n),
                Err(e) => Err(e),
            }
        };
        drop(stdin);
        let (clean, code) = finish(&api, &name, attached, status).await?;
        let last = errors.await.unwrap_or_default();
        let bytes = copied.map_err(Error::io(format!(
            "writing the dump to {}",
            if to_stdout {
                "stdout".to_owned()
            } else {
                partial.display().to_string()
            }
        )))?;
        if !clean {
            return Err(Error::PgFailed {
                what: "pg_dump".into(),
                reason: format!(
                    "the stream from pod {name} was cut off after {} (exit code {code}){}; the dump is incomplete",
                    size(bytes),
                    last_lines(&last)
                ),
            });
        }
        if code != 0 {
            return Err(Error::PgFailed {
                what: "pg_dump".into(),
                reason: format!("exit code {code}{}", last_lines(&last)),
            });
        }
        progress.done(None);
        Ok(bytes)
    };
    let result = pod_session::with_pod(&api, &name, session).await;
    match result {
        Ok(bytes) => {
            if !to_stdout {
                std::fs::rename(&partial, file).map_err(Error::io(format!(
                    "renaming {} to {}",
                    partial.display(),
                    file.display()
                )))?;
            }
            output::note(
                ctx.ui,
                &format!(
                    "Dumped {database} ({}) to {}",
                    size(bytes),
                    if to_stdout {
                        "stdout".to_owned()
                    } else {
                        file.display().to_string()
                    }
                ),
            );
            Ok(())
        }
        Err(e) => {
            if !to_stdout {
                let _ = std::fs::remove_file(&partial);
            }
            Err(e)
        }
    }
}

/// `FILE.partial`, beside `FILE`.
pub fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    file.with_file_name(name)
}

fn last_lines(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!(": {}", lines.join("; "))
    }
}

/// Reads and checks the header of `file`: a custom-format dump, or [`Error::BadDump`].
pub fn read_header(file: &Path) -> Result<Header> {
    use std::io::Read;
    let shown = file.display().to_string();
    let mut head = Vec::with_capacity(HEADER_MAX);
    std::fs::File::open(file)
        .map_err(Error::io(format!("opening {shown}")))?
        .take(HEADER_MAX as u64)
        .read_to_end(&mut head)
        .map_err(Error::io(format!("reading {shown}")))?;
    pg_dump_file::parse(&head).map_err(|e| Error::BadDump {
        file: shown,
        problem: e.to_string(),
        fix: "pass a dump made by `flynn pg dump` or `pg_dump -Fc`; a plain SQL dump loads with `flynn pg psql < FILE`".into(),
    })
}

/// Refuses a dump of another major version than the server's (pure).
pub fn check_versions(file: &Path, header: &Header, server_major: u32) -> Result<()> {
    let server = pg_dump_file::display_major(server_major);
    let made_by = header
        .dump_version
        .as_deref()
        .map(|v| v.split(' ').next().unwrap_or(v).to_owned());
    match header.dump_major() {
        Some(major) if major == server_major => Ok(()),
        dump_major => {
            let what = match (&made_by, dump_major) {
                (Some(v), Some(_)) => format!("it was made by pg_dump {v}"),
                _ => format!(
                    "its header does not say which pg_dump made it (archive version {}.{})",
                    header.archive.0, header.archive.1
                ),
            };
            Err(Error::BadDump {
                file: file.display().to_string(),
                problem: format!(
                    "{what}, and the app's database runs PostgreSQL {server}: pg_restore restores dumps of its own major version only"
                ),
                fix: format!(
                    "dump the source database again with PostgreSQL {server}'s pg_dump (`pg_dump -Fc --no-owner --no-acl`), or as plain SQL (`pg_dump --no-owner --no-acl -f dump.sql`) and load that with `flynn pg psql < dump.sql`"
                ),
            })
        }
    }
}

async fn restore(ctx: &Ctx, pick: &ResourcePick, file: &Path, clean: bool) -> Result<()> {
    // Before anything reaches the cluster: is it a dump at all?
    let header = read_header(file)?;
    let t = target(ctx, pick).await?;
    let database = t.resource.name_any();
    let (api, name) = start_gated(
        ctx,
        &t,
        "pg-restore",
        restore_script(clean),
        Duration::from_secs(pick.timeout),
    )
    .await?;
    let session = async {
        let mut attached = attach_all(&api, &name).await?;
        let status = attached.take_status();
        let mut stdin = attached
            .stdin()
            .ok_or_else(|| pod_session::attach_error(&name, "no stdin"))?;
        let stdout = attached
            .stdout()
            .ok_or_else(|| pod_session::attach_error(&name, "no stdout"))?;
        let stderr = attached
            .stderr()
            .ok_or_else(|| pod_session::attach_error(&name, "no stderr"))?;
        let errors = forward_stderr(stderr);
        stdin
            .write_all(b"go\n")
            .await
            .map_err(Error::io(format!("starting the restore in pod {name}")))?;
        let mut stdout = tokio::io::BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .await
            .map_err(Error::io(format!(
                "reading the server version from pod {name}"
            )))?;
        let server_num = line
            .trim()
            .strip_prefix("server_version_num=")
            .and_then(|v| v.parse::<u32>().ok());
        let Some(server_num) = server_num else {
            drop(stdin);
            let (_, code) = finish(&api, &name, attached, status).await?;
            let last = errors.await.unwrap_or_default();
            return Err(Error::PgFailed {
                what: "asking the server its version".into(),
                reason: format!("psql exit code {code}{}", last_lines(&last)),
            });
        };
        if let Err(refusal) = check_versions(
            file,
            &header,
            pg_dump_file::major_of_version_num(server_num),
        ) {
            let _ = stdin.write_all(b"stop\n").await;
            drop(stdin);
            let _ = finish(&api, &name, attached, status).await;
            return Err(refusal);
        }
        stdin
            .write_all(b"restore\n")
            .await
            .map_err(Error::io(format!("starting pg_restore in pod {name}")))?;
        let progress = Progress::start(ctx.ui, format!("restoring {database}"));
        let mut input = tokio::fs::File::open(file)
            .await
            .map_err(Error::io(format!("opening {}", file.display())))?;
        // pg_restore's output (normally none with -d) goes to stderr with its messages.
        let drain = tokio::spawn(async move {
            let mut lines = stdout.lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
            }
        });
        let sent = copy_counting(&mut input, &mut stdin, &progress, "sent", step(ctx)).await;
        // EOF: pg_restore finishes what it has.
        let _ = stdin.shutdown().await;
        drop(stdin);
        let _ = drain.await;
        let (clean_end, code) = finish(&api, &name, attached, status).await?;
        let last = errors.await.unwrap_or_default();
        progress.done(None);
        if code != 0 {
            return Err(Error::PgFailed {
                what: "pg_restore".into(),
                reason: format!("exit code {code}{}", last_lines(&last)),
            });
        }
        let sent = sent.map_err(Error::io(format!(
            "sending {} to pod {name}",
            file.display()
        )))?;
        if !clean_end {
            return Err(Error::PgFailed {
                what: "pg_restore".into(),
                reason: format!("the stream to pod {name} was cut off after {}", size(sent)),
            });
        }
        Ok(sent)
    };
    let sent = pod_session::with_pod(&api, &name, session).await?;
    output::note(
        ctx.ui,
        &format!(
            "Restored {} ({}) into {database}",
            file.display(),
            size(sent)
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_client_gets_every_pg_variable_from_the_secret() {
        let r: Resource = serde_json::from_value(json!({
            "apiVersion": "flynn.io/v1alpha1", "kind": "Resource",
            "metadata": {"name": "shop-postgres"},
            "spec": {"app": "shop", "provider": "postgres"},
            "status": {"secret": "shop-postgres-credentials"}
        }))
        .unwrap();
        let env = serde_json::to_value(pg_env(&r)).unwrap();
        let names: Vec<&str> = env
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"]
        );
        for e in env.as_array().unwrap() {
            assert!(e.get("value").is_none(), "{e}");
            assert_eq!(
                e["valueFrom"]["secretKeyRef"]["name"],
                "shop-postgres-credentials"
            );
        }
        assert_eq!(env[3]["valueFrom"]["secretKeyRef"]["key"], "password");
    }

    #[test]
    fn a_dump_of_another_major_version_is_refused_and_its_twin_passes() {
        let h = |v: &str| Header {
            archive: (1, 15, 0),
            database: Some("shop".into()),
            server_version: Some(v.into()),
            dump_version: Some(v.into()),
        };
        let f = Path::new("shop.dump");
        assert!(check_versions(f, &h("15.18 (Debian 15.18-0+deb12u1)"), 15).is_ok());
        let err = check_versions(f, &h("16.2"), 15).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("made by pg_dump 16.2"), "{text}");
        assert!(text.contains("runs PostgreSQL 15"), "{text}");
        let hint = err.hint().unwrap();
        assert!(
            hint.contains("PostgreSQL 15's pg_dump") && hint.contains("flynn pg psql < dump.sql"),
            "{hint}"
        );
        assert_eq!(err.exit_code(), exit::USAGE);
        let old = check_versions(f, &h("9.6.24"), 15).unwrap_err();
        assert!(old.to_string().contains("pg_dump 9.6.24"), "{old}");
    }

    #[test]
    fn user_arguments_are_not_expanded_by_kubernetes() {
        assert_eq!(
            escape_expansion("select '$(PGPASSWORD)'"),
            "select '$$(PGPASSWORD)'"
        );
        assert_eq!(escape_expansion("-c"), "-c");
        assert_eq!(
            partial_path(Path::new("/tmp/a.dump")),
            Path::new("/tmp/a.dump.partial")
        );
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1_500_000), "1.5 MB");
    }

    #[test]
    fn the_restore_pod_waits_for_the_cli_twice() {
        let s = restore_script(true);
        assert!(s.starts_with(r#"read -r go && [ "$go" = go ] || exit 125;"#));
        assert!(s.contains(r#"[ "$go" = restore ] || exit 0; exec pg_restore --no-owner --no-acl --clean --if-exists -d "$PGDATABASE""#), "{s}");
        assert!(!restore_script(false).contains("--clean"));
        assert!(DUMP_SCRIPT.contains("exec pg_dump -Fc --no-owner --no-acl"));
    }
}
