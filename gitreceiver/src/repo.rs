//! The bare repository kept per App, `<repos_dir>/<namespace>/<app>.git`, and its
//! pre-receive hook. Kept so that incremental pushes send only what is new.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::command::RepoPath;

/// Why the repository could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating repository {path}: {source}")]
    Init {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("configuring repository {path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("installing the pre-receive hook in {path}: {source}")]
    Hook {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the App's repository lives.
pub fn path(repos_dir: &Path, repo: &RepoPath) -> PathBuf {
    // Both parts are validated DNS labels (command::parse): no `/`, no `..`.
    repos_dir
        .join(&repo.namespace)
        .join(format!("{}.git", repo.app))
}

/// Creates the bare repository on first push and (re)installs the hook, which runs
/// `hook_program hook pre-receive`. Idempotent; callers hold the App's lock.
pub fn ensure(
    repos_dir: &Path,
    repo: &RepoPath,
    hook_program: &Path,
    head_branch: &str,
) -> Result<PathBuf, Error> {
    let path = path(repos_dir, repo);
    if !path.join("HEAD").exists() {
        init(&path, head_branch)?;
    }
    remove_stale_quarantines(&path);
    install_hook(&path, hook_program).map_err(|source| Error::Hook {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn init(path: &Path, head_branch: &str) -> Result<(), Error> {
    let mut opts = git2::RepositoryInitOptions::new();
    opts.bare(true)
        .mkpath(true)
        .no_reinit(false)
        .initial_head(head_branch);
    let repo = git2::Repository::init_opts(path, &opts).map_err(|source| Error::Init {
        path: path.to_owned(),
        source,
    })?;
    let config_err = |source| Error::Config {
        path: path.to_owned(),
        source,
    };
    let mut config = repo.config().map_err(config_err)?;
    // Force pushes deploy (Heroku's behaviour); deleting the deploy branch would leave
    // nothing to rebuild from, and the hook refuses deletes anyway.
    config
        .set_bool("receive.denyNonFastForwards", false)
        .map_err(config_err)?;
    config
        .set_bool("receive.denyDeletes", true)
        .map_err(config_err)?;
    // Nobody works in these repositories: no reflogs to keep, and gc runs in the
    // background of receive-pack (receive.autogc, git's default).
    config
        .set_bool("core.logAllRefUpdates", false)
        .map_err(config_err)?;
    tracing::info!(path = %path.display(), "created bare repository");
    Ok(())
}

/// Removes the quarantine directories (`objects/tmp_objdir-incoming-*`) a stopped
/// receive-pack left behind: git does not reliably remove its quarantine when its process
/// group is stopped mid-pack (the receiver's own tests saw it stay), nor after SIGKILL or
/// a receiver that died. Callers hold the App's lock, so no receive-pack of this
/// repository is running: every one of them is stale.
pub fn remove_stale_quarantines(repo: &Path) {
    let Ok(entries) = std::fs::read_dir(repo.join("objects")) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(b"tmp_objdir-incoming-")
        {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "removed a stale push quarantine")
                }
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), error = %e, "removing a stale push quarantine")
                }
            }
        }
    }
}

/// Bytes of the files under `dir` (not following symlinks), walked with an explicit
/// stack: what a repository, with a push's quarantine inside it, takes on disk.
pub fn disk_usage(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Removed meanwhile (git gc, a finished quarantine).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    Ok(total)
}

/// The hook script: exec this binary, which calls back over the receiver's socket.
fn hook_script(hook_program: &Path) -> String {
    let quoted = hook_program.display().to_string().replace('\'', "'\\''");
    format!(
        "#!/bin/sh\n# Installed by flynn-gitreceiver: builds and deploys the push.\nexec '{quoted}' hook pre-receive\n"
    )
}

fn install_hook(repo: &Path, hook_program: &Path) -> std::io::Result<()> {
    let hooks = repo.join("hooks");
    let target = hooks.join("pre-receive");
    let script = hook_script(hook_program);
    if std::fs::read_to_string(&target).is_ok_and(|s| s == script) {
        return Ok(());
    }
    std::fs::create_dir_all(&hooks)?;
    // Written aside and renamed: a concurrent receive-pack never runs half a script.
    let tmp = hooks.join(".pre-receive.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(script.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_bare_repo_with_the_hook_once() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoPath {
            namespace: "ns".into(),
            app: "shop".into(),
        };
        let p = ensure(dir.path(), &repo, Path::new("/usr/bin/x y"), "main").unwrap();
        assert_eq!(p, dir.path().join("ns/shop.git"));
        let r = git2::Repository::open_bare(&p).unwrap();
        let cfg = r.config().unwrap().snapshot().unwrap();
        assert!(!cfg.get_bool("receive.denyNonFastForwards").unwrap());
        assert!(cfg.get_bool("receive.denyDeletes").unwrap());
        let hook = std::fs::read_to_string(p.join("hooks/pre-receive")).unwrap();
        assert!(
            hook.contains("exec '/usr/bin/x y' hook pre-receive"),
            "{hook}"
        );
        let mode = std::fs::metadata(p.join("hooks/pre-receive"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // Again: idempotent, and a changed program path is picked up.
        ensure(dir.path(), &repo, Path::new("/bin/y"), "main").unwrap();
        let hook = std::fs::read_to_string(p.join("hooks/pre-receive")).unwrap();
        assert!(hook.contains("exec '/bin/y'"));
    }

    #[test]
    fn stale_quarantines_are_removed_and_sizes_counted() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoPath {
            namespace: "ns".into(),
            app: "shop".into(),
        };
        let p = ensure(dir.path(), &repo, Path::new("/bin/y"), "main").unwrap();
        let before = disk_usage(&p).unwrap();
        // What a SIGKILLed receive-pack leaves, beside a pack that must stay.
        let stale = p.join("objects/tmp_objdir-incoming-Ab12Cd/pack");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("tmp_pack_x"), vec![0u8; 5000]).unwrap();
        std::fs::write(p.join("objects/pack/keep.pack"), vec![0u8; 3000]).unwrap();
        assert_eq!(disk_usage(&p).unwrap(), before + 8000);
        ensure(dir.path(), &repo, Path::new("/bin/y"), "main").unwrap();
        assert!(!p.join("objects/tmp_objdir-incoming-Ab12Cd").exists());
        assert_eq!(disk_usage(&p).unwrap(), before + 3000);
    }
}
