//! The pushed commit's tree as a `.tar.gz`, what `git archive --format=tar.gz` would make.
//!
//! The pre-receive hook runs before git moves the pushed objects out of quarantine, so the
//! quarantine directory is added as an alternate object directory: the commit is readable
//! without being accepted yet (a failed build then leaves no trace in the repository).
//!
//! The tarball streams into a temporary file through gzip and a SHA-256, so a large
//! repository never sits in memory; only one blob at a time does (libgit2 cannot stream
//! packed blobs). Like `git archive`: every entry gets the commit's time, executables keep
//! their bit, symlinks stay symlinks, and submodules become empty directories (their
//! commits are not in this repository). Blocking: run it on a blocking thread.

use std::{
    io::{BufWriter, Write},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use flate2::{Compression, write::GzEncoder};
use flynn_builder::digest::HashingWriter;
use git2::{ObjectType, Oid, Repository, Tree};

/// The source tarball of one commit, in a temporary file deleted on drop.
#[derive(Debug)]
pub struct SourceArchive {
    /// The `.tar.gz`.
    pub path: tempfile::TempPath,
    /// Its SHA-256, lower-case hex (the store checks the upload against it).
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Regular files and symlinks in it.
    pub files: u64,
}

/// Archiving a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{what}: {source}")]
    Git {
        what: String,
        #[source]
        source: git2::Error,
    },
    #[error("writing the tarball: {0}")]
    Io(#[from] std::io::Error),
    #[error("stopped: the push was cancelled")]
    Cancelled,
}

fn git(what: impl Into<String>) -> impl FnOnce(git2::Error) -> ArchiveError {
    let what = what.into();
    move |source| ArchiveError::Git { what, source }
}

/// Archives `commit` of the bare repository `repo` (with the pushed objects in
/// `quarantine`, if given) into a `.tar.gz` in `tmp_dir`. `cancelled` is polled between
/// entries so a client that went away does not keep a core busy.
pub fn archive(
    repo: &Path,
    quarantine: Option<&Path>,
    commit: &str,
    tmp_dir: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<SourceArchive, ArchiveError> {
    let repository =
        Repository::open_bare(repo).map_err(git(format!("opening {}", repo.display())))?;
    if let Some(q) = quarantine {
        repository
            .odb()
            .and_then(|odb| odb.add_disk_alternate(&q.to_string_lossy()))
            .map_err(git(format!(
                "adding the quarantine {} as an alternate object directory",
                q.display()
            )))?;
    }
    let oid = Oid::from_str(commit).map_err(git(format!("`{commit}` is not a commit id")))?;
    let commit_obj = repository
        .find_commit(oid)
        .map_err(git("reading the commit"))?;
    let tree = commit_obj
        .tree()
        .map_err(git("reading the commit's tree"))?;
    let mtime = u64::try_from(commit_obj.time().seconds()).unwrap_or(0);

    let (file, path) = tempfile::Builder::new()
        .prefix("source-")
        .suffix(".tar.gz")
        .tempfile_in(tmp_dir)?
        .into_parts();
    // Level 1: the tarball crosses a local network once and is unpacked once; the CPU a
    // higher level costs is worth more to the builds running on the same nodes.
    let gz = GzEncoder::new(
        HashingWriter::new(BufWriter::with_capacity(256 * 1024, file)),
        Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    let mut walk = Walk {
        repo: &repository,
        tar: &mut tar,
        mtime,
        files: 0,
        cancelled,
    };
    walk.tree(&tree, &PathBuf::new())?;
    let files = walk.files;
    let gz = tar.into_inner()?;
    let (mut buf, hash) = gz.finish()?.into_parts();
    buf.flush()?;
    buf.get_ref().sync_all()?;
    Ok(SourceArchive {
        path,
        size: hash.len(),
        sha256: hash.finish_hex(),
        files,
    })
}

struct Walk<'a, W: Write> {
    repo: &'a Repository,
    tar: &'a mut tar::Builder<W>,
    mtime: u64,
    files: u64,
    cancelled: &'a dyn Fn() -> bool,
}

impl<W: Write> Walk<'_, W> {
    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn tree(&mut self, tree: &Tree<'_>, dir: &Path) -> Result<(), ArchiveError> {
        for entry in tree.iter() {
            if (self.cancelled)() {
                return Err(ArchiveError::Cancelled);
            }
            let path = dir.join(std::ffi::OsStr::from_bytes(entry.name_bytes()));
            let show = || path.display().to_string();
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let mut h = self.header(tar::EntryType::Directory, 0o755, 0);
                    self.tar
                        .append_data(&mut h, &path, std::io::empty())
                        .map_err(|e| bad_entry(&show(), e))?;
                    let sub = entry
                        .to_object(self.repo)
                        .and_then(|o| o.peel_to_tree())
                        .map_err(git(format!("reading directory {}", show())))?;
                    self.tree(&sub, &path)?;
                }
                Some(ObjectType::Blob) => {
                    let blob = self
                        .repo
                        .find_blob(entry.id())
                        .map_err(git(format!("reading {}", show())))?;
                    let content = blob.content();
                    // git's modes: 100755 executable, 120000 symlink, anything else a file.
                    match entry.filemode() {
                        0o120000 => {
                            let mut h = self.header(tar::EntryType::Symlink, 0o777, 0);
                            let target = Path::new(std::ffi::OsStr::from_bytes(content));
                            self.tar
                                .append_link(&mut h, &path, target)
                                .map_err(|e| bad_entry(&show(), e))?;
                        }
                        mode => {
                            let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                            let mut h =
                                self.header(tar::EntryType::Regular, perm, content.len() as u64);
                            self.tar
                                .append_data(&mut h, &path, content)
                                .map_err(|e| bad_entry(&show(), e))?;
                        }
                    }
                    self.files += 1;
                }
                // A submodule: its commit lives in another repository. `git archive`
                // leaves an empty directory, and so do we.
                Some(ObjectType::Commit) => {
                    let mut h = self.header(tar::EntryType::Directory, 0o755, 0);
                    self.tar
                        .append_data(&mut h, &path, std::io::empty())
                        .map_err(|e| bad_entry(&show(), e))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The tar writer refuses paths it cannot represent safely (`..`, absolute): say which.
fn bad_entry(path: &str, e: std::io::Error) -> ArchiveError {
    ArchiveError::Io(std::io::Error::new(e.kind(), format!("{path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs::File, process::Command};

    fn git_cmd(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn entries(archive: &SourceArchive) -> Vec<(String, tar::EntryType, u32, String)> {
        let f = File::open(&archive.path).unwrap();
        let mut t = tar::Archive::new(flate2::read::GzDecoder::new(f));
        t.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let kind = e.header().entry_type();
                let mode = e.header().mode().unwrap();
                let mut body = String::new();
                if kind == tar::EntryType::Symlink {
                    body = e.link_name().unwrap().unwrap().display().to_string();
                } else {
                    std::io::Read::read_to_string(&mut e, &mut body).unwrap();
                }
                (path, kind, mode, body)
            })
            .collect()
    }

    #[test]
    fn archives_files_modes_symlinks_and_directories_of_a_commit() {
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        git_cmd(w, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(w.join("bin")).unwrap();
        std::fs::write(w.join("Procfile"), "web: bin/web\n").unwrap();
        std::fs::write(w.join("bin/web"), "#!/bin/sh\necho hi\n").unwrap();
        std::os::unix::fs::symlink("bin/web", w.join("start")).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(w.join("bin/web"))
            .status()
            .unwrap();
        git_cmd(w, &["add", "."]);
        git_cmd(w, &["commit", "-q", "-m", "one"]);
        let commit = git_cmd(w, &["rev-parse", "HEAD"]);

        let out = tempfile::tempdir().unwrap();
        let a = archive(&w.join(".git"), None, &commit, out.path(), &|| false).unwrap();
        assert_eq!(a.files, 3);
        assert_eq!(a.size, std::fs::metadata(&a.path).unwrap().len());
        let e = entries(&a);
        let find = |p: &str| e.iter().find(|x| x.0.trim_end_matches('/') == p).unwrap();
        assert_eq!(find("Procfile").2, 0o644);
        assert_eq!(find("Procfile").3, "web: bin/web\n");
        assert_eq!(find("bin").1, tar::EntryType::Directory);
        assert_eq!(find("bin/web").2, 0o755);
        assert_eq!(find("start").1, tar::EntryType::Symlink);
        assert_eq!(find("start").3, "bin/web");
    }

    #[test]
    fn reads_pushed_objects_from_the_quarantine() {
        // A bare repository that has never seen the commit, and a second object directory
        // holding it: what the pre-receive hook sees.
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        git_cmd(w, &["init", "-q", "-b", "main"]);
        std::fs::write(w.join("README"), "hello\n").unwrap();
        git_cmd(w, &["add", "."]);
        git_cmd(w, &["commit", "-q", "-m", "one"]);
        let commit = git_cmd(w, &["rev-parse", "HEAD"]);
        let bare = tempfile::tempdir().unwrap();
        git_cmd(bare.path(), &["init", "-q", "--bare"]);

        let out = tempfile::tempdir().unwrap();
        let missing = archive(bare.path(), None, &commit, out.path(), &|| false).unwrap_err();
        assert!(
            missing.to_string().contains("reading the commit"),
            "{missing}"
        );
        let a = archive(
            bare.path(),
            Some(&w.join(".git/objects")),
            &commit,
            out.path(),
            &|| false,
        )
        .unwrap();
        assert_eq!(entries(&a)[0].3, "hello\n");
        assert!(matches!(
            archive(
                bare.path(),
                Some(&w.join(".git/objects")),
                &commit,
                out.path(),
                &|| true
            ),
            Err(ArchiveError::Cancelled)
        ));
    }
}
