//! Removing the repositories of deleted Apps.
//!
//! Why: the bare repository `<repos_dir>/<namespace>/<app>.git` is made on an App's first
//! push and only caches what its developers pushed (so later pushes send only what is new).
//! Deleting the App deleted its Releases, Formation and, through the slug store's own sweep,
//! its slugs, but the repository stayed on the receiver's volume for ever, and a volume
//! that fills refuses every push of every App.
//!
//! A pass lists the Apps of the cluster once, then for each repository whose App is not in
//! the list: takes the App's push lock without waiting (a running push keeps its
//! repository), asks the API server again under the lock (the App may have been created
//! since the list; every push holds the lock while it writes the repository), and only if
//! the App is still absent removes the repository. A pass whose list cannot be read removes
//! nothing. Anything in the directory that is not `<namespace>/<app>.git` with valid names
//! is left alone.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flynn_crds::App;
use flynn_crds::validation::{validate_app_name, validate_dns_label};
use kube::Api;

use crate::command::RepoPath;
use crate::locks::AppLocks;
use crate::shared::Shared;

/// Why a pass did not finish.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The list of Apps could not be read: nothing was removed.
    #[error("listing Apps failed, so no repository was removed: {0}")]
    List(#[source] kube::Error),
    /// The repositories directory could not be read or a repository removed; what was
    /// removed before stays removed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Repositories looked at.
    pub seen: usize,
    /// Repositories removed, as `<namespace>/<app>`.
    pub removed: Vec<String>,
    /// Repositories of missing Apps kept because a push to them was running.
    pub busy: usize,
}

/// Suffix of a repository being removed: renamed first, so a half-removed directory is
/// never taken for a repository, and finished by the next pass if the process dies.
const REMOVING: &str = ".git.removing";

/// One pass over `repos_dir`.
pub async fn collect(
    client: &kube::Client,
    repos_dir: &Path,
    locks: &AppLocks,
) -> Result<Swept, GcError> {
    let apps: HashSet<(String, String)> = flynn_crds::list::all::<App>(client)
        .await
        .map_err(GcError::List)?
        .into_iter()
        .filter_map(|a| Some((a.metadata.namespace?, a.metadata.name?)))
        .collect();
    let dir = repos_dir.to_owned();
    let on_disk = blocking(move || repositories(&dir)).await?;
    let mut swept = Swept::default();
    for repo in on_disk {
        swept.seen += 1;
        if apps.contains(&(repo.namespace.clone(), repo.app.clone())) {
            continue;
        }
        let Some(_guard) = locks.try_acquire(&repo, "the repository cleanup") else {
            swept.busy += 1;
            continue;
        };
        let api: Api<App> = Api::namespaced(client.clone(), &repo.namespace);
        match api.get_opt(&repo.app).await {
            Ok(None) => {}
            Ok(Some(_)) => continue,
            Err(e) => {
                tracing::warn!(namespace = %repo.namespace, app = %repo.app, error = %e, "could not check the App; keeping its repository");
                continue;
            }
        }
        let path = crate::repo::path(repos_dir, &repo);
        blocking(move || remove(&path)).await?;
        tracing::info!(namespace = %repo.namespace, app = %repo.app, "removed the repository of a deleted App");
        swept
            .removed
            .push(format!("{}/{}", repo.namespace, repo.app));
    }
    Ok(swept)
}

/// Runs a pass every `interval` until the task is dropped; failures are logged and the
/// next pass tries again.
pub async fn run(client: kube::Client, shared: Arc<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match collect(&client, &shared.settings.repos_dir, &shared.locks).await {
            Ok(swept) => {
                shared
                    .metrics
                    .repos_removed
                    .inc_by(swept.removed.len() as u64);
                tracing::info!(
                    seen = swept.seen,
                    removed = swept.removed.len(),
                    busy = swept.busy,
                    "repository cleanup pass done"
                );
            }
            Err(e) => tracing::warn!(error = %e, "repository cleanup pass failed"),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, GcError> + Send + 'static,
) -> Result<T, GcError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// The App repositories under `repos_dir`; finishes removals an earlier pass left half done.
fn repositories(repos_dir: &Path) -> Result<Vec<RepoPath>, GcError> {
    let read = |path: &Path| {
        std::fs::read_dir(path).map_err(|source| GcError::Io {
            what: "reading",
            path: path.to_owned(),
            source,
        })
    };
    let mut found = Vec::new();
    if !repos_dir.exists() {
        // No push yet: nothing to sweep.
        return Ok(found);
    }
    let top = read(repos_dir)?;
    for ns in top.flatten() {
        let Some(namespace) = dir_name(&ns) else {
            continue;
        };
        if validate_dns_label(&namespace).is_err() {
            continue;
        }
        for entry in read(&ns.path())?.flatten() {
            let Some(name) = dir_name(&entry) else {
                continue;
            };
            if name.starts_with('.') && name.ends_with(REMOVING) {
                remove_dir(&entry.path())?;
                continue;
            }
            let Some(app) = name.strip_suffix(".git") else {
                continue;
            };
            if validate_app_name(app).is_ok() {
                found.push(RepoPath {
                    namespace: namespace.clone(),
                    app: app.to_owned(),
                });
            }
        }
    }
    Ok(found)
}

/// The entry's name if it is a directory (not followed if a symlink) with a UTF-8 name.
fn dir_name(entry: &std::fs::DirEntry) -> Option<String> {
    entry
        .file_type()
        .ok()
        .filter(|t| t.is_dir())
        .and(entry.file_name().into_string().ok())
}

/// Renames the repository aside, removes it, and removes its namespace's directory if that
/// is now empty.
fn remove(path: &Path) -> Result<(), GcError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".git"))
        .unwrap_or_default();
    let aside = path.with_file_name(format!(".{name}{REMOVING}"));
    std::fs::rename(path, &aside).map_err(|source| GcError::Io {
        what: "renaming",
        path: path.to_owned(),
        source,
    })?;
    remove_dir(&aside)?;
    if let Some(ns_dir) = path.parent() {
        // Fails while another App of the namespace has a repository: that is fine.
        let _ = std::fs::remove_dir(ns_dir);
    }
    Ok(())
}

fn remove_dir(path: &Path) -> Result<(), GcError> {
    std::fs::remove_dir_all(path).map_err(|source| GcError::Io {
        what: "removing",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_app_repositories_only_and_finishes_interrupted_removals() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |p: &str| std::fs::create_dir_all(dir.path().join(p)).unwrap();
        mk("team/shop.git/refs");
        mk("team/api.git");
        mk("team/.old.git.removing/objects");
        mk("team/notes"); // not a repository
        mk("Bad_NS/shop.git"); // not a namespace name
        mk("team/Up.git"); // not an App name
        std::fs::write(dir.path().join("team/file.git"), "").unwrap();
        let mut found: Vec<String> = repositories(dir.path())
            .unwrap()
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace, r.app))
            .collect();
        found.sort();
        assert_eq!(found, ["team/api", "team/shop"]);
        assert!(!dir.path().join("team/.old.git.removing").exists());
        assert!(
            repositories(&dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn removal_takes_the_namespace_directory_once_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("team/shop.git/objects")).unwrap();
        std::fs::create_dir_all(dir.path().join("team/api.git")).unwrap();
        remove(&dir.path().join("team/shop.git")).unwrap();
        assert!(!dir.path().join("team/shop.git").exists());
        assert!(dir.path().join("team/api.git").exists());
        remove(&dir.path().join("team/api.git")).unwrap();
        assert!(!dir.path().join("team").exists());
    }
}
