//! The pushed commit's tree as a `.tar.gz`, what `git archive --format=tar.gz` would make,
//! within the receiver's limits.
//!
//! The pre-receive hook runs before git moves the pushed objects out of quarantine, so the
//! quarantine directory is added as an alternate object directory: the commit is readable
//! without being accepted yet (a failed build then leaves no trace in the repository).
//!
//! What one push may cost the receiver is bounded, whatever the commit holds:
//!
//! - **Memory.** File contents stream from `git cat-file --batch` (run with a low
//!   `core.bigFileThreshold`, so git itself streams large blobs from loose objects and
//!   packs alike) through tar, gzip and a SHA-256 into a temporary file. libgit2 cannot
//!   stream a packed blob (its `Odb::reader` works for loose objects only, and the objects
//!   of earlier pushes are packed by `git gc`): it would load a 2 GB file of zeros, which
//!   git sends as 2 MB, whole. git2 still reads the trees and the objects' headers
//!   (sizes), which are small.
//! - **Stack.** Trees are walked with an explicit stack of open trees, never recursion, and
//!   a directory nested deeper than `max_tree_depth` refuses the push.
//! - **Time and disk.** A first pass sums the sizes of the files (from the objects'
//!   headers, without reading them): a tree whose files add up to more than
//!   `max_source_bytes` is refused before a byte is written, so the temporary file is never
//!   larger than the gzip of that many bytes. The file is deleted when the
//!   [`SourceArchive`] is dropped, on every path (errors, cancellation, unwinding).
//!
//! Like `git archive`: every entry gets the commit's time, executables keep their bit,
//! symlinks stay symlinks, and submodules become empty directories (their commits are not
//! in this repository). Blocking: run it on a blocking thread.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, BufWriter, Read, Write},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use flate2::{Compression, write::GzEncoder};
use flynn_builder::{digest::HashingWriter, output::human_size};
use git2::{ObjectType, Oid, Repository, Tree};

/// Blobs larger than this are streamed by `git cat-file` itself (`core.bigFileThreshold`;
/// git's default, 512 MiB, would have it load anything below that whole).
pub const GIT_STREAM_THRESHOLD: &str = "1m";
/// Longest symlink target accepted (Linux's `PATH_MAX`): a link's target is the content
/// of its blob, read into memory.
const MAX_SYMLINK_TARGET: u64 = 4096;

/// What one archive may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The files of the tree (regular files and symlink targets) may add up to this many
    /// bytes, unpacked.
    pub max_source_bytes: u64,
    /// Directories may nest this deep (`a/b/c/file` is 3 deep).
    pub max_tree_depth: usize,
    /// The tree may hold this many entries (files, directories, symlinks, submodules). Git
    /// shares identical subtrees, so a push of a few KB can name 10^12 paths of empty files:
    /// without this, walking and archiving them would never end.
    pub max_entries: u64,
}

impl Default for Limits {
    /// The receiver's defaults (`--max-source-bytes`, `--max-tree-depth`).
    fn default() -> Self {
        Self {
            max_source_bytes: 1 << 30,
            max_tree_depth: 256,
            max_entries: 1_000_000,
        }
    }
}

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
    /// What the files add up to, unpacked.
    pub source_bytes: u64,
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
    #[error("reading file contents with `{git} cat-file`: {problem}")]
    CatFile { git: String, problem: String },
    #[error(
        "its files add up to more than {} unpacked, the receiver's limit (reached at {path}). Keep large files out of the repository (a build rarely needs them), or ask the platform operator to raise --max-source-bytes (FLYNN_MAX_SOURCE_BYTES; chart value gitreceiver.maxSourceBytes)",
        human_size(*.limit)
    )]
    TooLarge { limit: u64, path: String },
    #[error(
        "directory {path} is nested more than {limit} directories deep, the receiver's limit. Flatten the tree, or ask the platform operator to raise --max-tree-depth (FLYNN_MAX_TREE_DEPTH; chart value gitreceiver.maxTreeDepth)"
    )]
    TooDeep { limit: usize, path: String },
    #[error(
        "it holds more than {limit} files and directories, the receiver's limit (reached at {path}). Keep generated or vendored trees out of the repository, or ask the platform operator to raise --max-entries (FLYNN_MAX_ENTRIES; chart value gitreceiver.maxEntries)"
    )]
    TooManyEntries { limit: u64, path: String },
    #[error("symlink {path} points at a target longer than {MAX_SYMLINK_TARGET} bytes")]
    SymlinkTooLong { path: String },
    #[error("stopped: the push was cancelled")]
    Cancelled,
}

impl ArchiveError {
    /// Whether this is one of the receiver's limits refusing the commit (not a fault).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. } | Self::TooDeep { .. } | Self::TooManyEntries { .. }
        )
    }
}

fn git(what: impl Into<String>) -> impl FnOnce(git2::Error) -> ArchiveError {
    let what = what.into();
    move |source| ArchiveError::Git { what, source }
}

/// Where and how to archive one commit.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The bare repository.
    pub repo: &'a Path,
    /// The pushed objects, if not in the repository yet (the hook's quarantine).
    pub quarantine: Option<&'a Path>,
    /// The commit (40 hex digits).
    pub commit: &'a str,
    /// Where the `.tar.gz` is written.
    pub tmp_dir: &'a Path,
    /// The `git` executable (for `cat-file`).
    pub git: &'a Path,
    pub limits: Limits,
}

/// Archives the commit into a `.tar.gz` in `tmp_dir`. `cancelled` is polled between
/// entries and while a file's content is copied, so a client that went away does not keep
/// a core busy.
pub fn archive(
    req: &Request<'_>,
    cancelled: &dyn Fn() -> bool,
) -> Result<SourceArchive, ArchiveError> {
    let repository =
        Repository::open_bare(req.repo).map_err(git(format!("opening {}", req.repo.display())))?;
    if let Some(q) = req.quarantine {
        repository
            .odb()
            .and_then(|odb| odb.add_disk_alternate(&q.to_string_lossy()))
            .map_err(git(format!(
                "adding the quarantine {} as an alternate object directory",
                q.display()
            )))?;
    }
    let oid =
        Oid::from_str(req.commit).map_err(git(format!("`{}` is not a commit id", req.commit)))?;
    let commit_obj = repository
        .find_commit(oid)
        .map_err(git("reading the commit"))?;
    let tree = commit_obj
        .tree()
        .map_err(git("reading the commit's tree"))?;
    let mtime = u64::try_from(commit_obj.time().seconds()).unwrap_or(0);

    // Pass 1: the limits, from tree objects and object headers only.
    let odb = repository
        .odb()
        .map_err(git("opening the object database"))?;
    let mut source_bytes = 0u64;
    let mut entries = 0u64;
    walk(
        &repository,
        &tree,
        req.limits.max_tree_depth,
        cancelled,
        |path, item| {
            entries += 1;
            if entries > req.limits.max_entries {
                return Err(ArchiveError::TooManyEntries {
                    limit: req.limits.max_entries,
                    path: path.display().to_string(),
                });
            }
            if let Item::File { id, .. } | Item::Symlink { id } = item {
                let (size, _) = odb
                    .read_header(id)
                    .map_err(git(format!("reading {}", path.display())))?;
                source_bytes = source_bytes.saturating_add(size as u64);
                if source_bytes > req.limits.max_source_bytes {
                    return Err(ArchiveError::TooLarge {
                        limit: req.limits.max_source_bytes,
                        path: path.display().to_string(),
                    });
                }
            }
            Ok(())
        },
    )?;

    // Pass 2: the tarball, contents streamed from git.
    let mut blobs = CatFile::start(req.git, req.repo, req.quarantine)?;
    let (file, path) = tempfile::Builder::new()
        .prefix("source-")
        .suffix(".tar.gz")
        .tempfile_in(req.tmp_dir)?
        .into_parts();
    // Level 1: the tarball crosses a local network once and is unpacked once; the CPU a
    // higher level costs is worth more to the builds running on the same nodes.
    let gz = GzEncoder::new(
        HashingWriter::new(BufWriter::with_capacity(256 * 1024, file)),
        Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    let mut files = 0u64;
    let mut written = 0u64;
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    walk(
        &repository,
        &tree,
        req.limits.max_tree_depth,
        cancelled,
        |path, item| {
            let show = || path.display().to_string();
            match item {
                Item::Dir | Item::Submodule => {
                    let mut h = header(tar::EntryType::Directory, 0o755, 0);
                    tar.append_data(&mut h, path, std::io::empty())
                        .map_err(|e| bad_entry(&show(), e))?;
                }
                Item::Symlink { id } => {
                    let target = blobs.read_small(id, MAX_SYMLINK_TARGET, &show)?;
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    tar.append_link(&mut h, path, Path::new(OsStr::from_bytes(&target)))
                        .map_err(|e| bad_entry(&show(), e))?;
                    written += target.len() as u64;
                    files += 1;
                }
                Item::File { id, executable } => {
                    let perm = if executable { 0o755 } else { 0o644 };
                    blobs.stream(id, &show, |size, content| {
                        // The objects' sizes were summed already; this guards against an
                        // object that changed between the passes (it cannot, but the limit
                        // must hold whatever happens).
                        written = written.saturating_add(size);
                        if written > req.limits.max_source_bytes {
                            return Err(ArchiveError::TooLarge {
                                limit: req.limits.max_source_bytes,
                                path: show(),
                            });
                        }
                        let mut h = header(tar::EntryType::Regular, perm, size);
                        let mut content = Cancellable {
                            inner: content,
                            cancelled,
                        };
                        tar.append_data(&mut h, path, &mut content)
                            .map_err(|e| match cancelled() {
                                true => ArchiveError::Cancelled,
                                false => bad_entry(&show(), e),
                            })
                    })?;
                    files += 1;
                }
            }
            Ok(())
        },
    )?;
    blobs.finish()?;
    let gz = tar.into_inner()?;
    let (mut buf, hash) = gz.finish()?.into_parts();
    buf.flush()?;
    buf.get_ref().sync_all()?;
    Ok(SourceArchive {
        path,
        size: hash.len(),
        sha256: hash.finish_hex(),
        files,
        source_bytes: written,
    })
}

/// One entry of a tree, as the walk reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Dir,
    File {
        id: Oid,
        executable: bool,
    },
    Symlink {
        id: Oid,
    },
    /// A gitlink: the commit of another repository.
    Submodule,
}

/// Visits every entry under `root` depth first, parents before children, with its path.
/// An explicit stack of open trees (one per level, so at most `max_depth + 1`) instead of
/// recursion: a tree nested 10,000 deep costs 10,000 small frames on the heap, and is
/// refused at `max_depth` anyway.
fn walk(
    repo: &Repository,
    root: &Tree<'_>,
    max_depth: usize,
    cancelled: &dyn Fn() -> bool,
    mut visit: impl FnMut(&Path, Item) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    // (tree, index of its next entry); `path` is the path of the top tree.
    let mut stack: Vec<(Tree<'_>, usize)> = vec![(root.clone(), 0)];
    let mut path = PathBuf::new();
    loop {
        let Some((tree, next)) = stack.last_mut() else {
            return Ok(());
        };
        let entry = tree.get(*next).map(|e| {
            path.push(OsStr::from_bytes(e.name_bytes()));
            (e.id(), e.kind(), e.filemode())
        });
        *next += 1;
        let Some((id, kind, mode)) = entry else {
            stack.pop();
            path.pop();
            continue;
        };
        if cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        match kind {
            Some(ObjectType::Tree) => {
                // `stack.len()` is the depth of this directory: the root holds depth 1.
                if stack.len() > max_depth {
                    return Err(ArchiveError::TooDeep {
                        limit: max_depth,
                        path: path.display().to_string(),
                    });
                }
                visit(&path, Item::Dir)?;
                let sub = repo
                    .find_tree(id)
                    .map_err(git(format!("reading directory {}", path.display())))?;
                // `path` stays pushed: it is the new top tree's path.
                stack.push((sub, 0));
                continue;
            }
            // git's modes: 120000 symlink, 100755 executable, anything else a file.
            Some(ObjectType::Blob) if mode == 0o120000 => visit(&path, Item::Symlink { id })?,
            Some(ObjectType::Blob) => visit(
                &path,
                Item::File {
                    id,
                    executable: mode & 0o111 != 0,
                },
            )?,
            // A submodule: its commit lives in another repository. `git archive` leaves
            // an empty directory, and so do we.
            Some(ObjectType::Commit) => visit(&path, Item::Submodule)?,
            _ => {}
        }
        path.pop();
    }
}

/// `git cat-file --batch` over the repository (and the quarantine): file contents as
/// streams. Killed on drop.
struct CatFile {
    git: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl CatFile {
    fn start(git: &Path, repo: &Path, quarantine: Option<&Path>) -> Result<Self, ArchiveError> {
        let mut cmd = Command::new(git);
        cmd.arg("-c")
            .arg(format!("core.bigFileThreshold={GIT_STREAM_THRESHOLD}"))
            .arg("--git-dir")
            .arg(repo)
            .args(["cat-file", "--batch"])
            // Nothing of the receiver's environment reaches git but what it needs.
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", repo)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(q) = quarantine {
            cmd.env("GIT_ALTERNATE_OBJECT_DIRECTORIES", q);
        }
        let git_name = git.display().to_string();
        let mut child = cmd.spawn().map_err(|e| ArchiveError::CatFile {
            git: git_name.clone(),
            problem: format!("starting it: {e}"),
        })?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .map(|o| BufReader::with_capacity(64 * 1024, o));
        match (stdin, stdout) {
            (Some(stdin), Some(stdout)) => Ok(Self {
                git: git_name,
                child,
                stdin: Some(stdin),
                stdout,
            }),
            _ => Err(ArchiveError::CatFile {
                git: git_name,
                problem: "no pipes".into(),
            }),
        }
    }

    fn problem(&self, problem: String) -> ArchiveError {
        ArchiveError::CatFile {
            git: self.git.clone(),
            problem,
        }
    }

    /// Asks for `id`; its size. The content follows on `stdout`, then a newline.
    fn request(&mut self, id: Oid, path: &dyn Fn() -> String) -> Result<u64, ArchiveError> {
        let stdin = self.stdin.as_mut().expect("open until finish");
        if let Err(e) = writeln!(stdin, "{id}").and_then(|()| stdin.flush()) {
            return Err(self.problem(format!("asking for {}: {e}", path())));
        }
        let mut line = String::new();
        match (&mut self.stdout).take(256).read_line(&mut line) {
            Ok(n) if n > 0 && line.ends_with('\n') => {}
            Ok(_) => return Err(self.problem(format!("it ended before {}", path()))),
            Err(e) => return Err(self.problem(format!("reading {}: {e}", path()))),
        }
        // `<oid> blob <size>`, or `<oid> missing`.
        let mut parts = line.split_whitespace();
        match (
            parts.next(),
            parts.next(),
            parts.next().map(str::parse::<u64>),
        ) {
            (Some(_), Some("blob"), Some(Ok(size))) => Ok(size),
            _ => Err(self.problem(format!("{}: unexpected answer {:?}", path(), line.trim()))),
        }
    }

    /// Runs `f` with the size and a reader of exactly the content of blob `id`.
    fn stream(
        &mut self,
        id: Oid,
        path: &dyn Fn() -> String,
        f: impl FnOnce(u64, &mut dyn Read) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let size = self.request(id, path)?;
        let mut content = (&mut self.stdout).take(size);
        f(size, &mut content)?;
        if content.limit() != 0 {
            return Err(ArchiveError::CatFile {
                git: self.git.clone(),
                problem: format!("{} ended early", path()),
            });
        }
        self.end_of_object(path)
    }

    /// The content of blob `id`, if it is at most `max` bytes.
    fn read_small(
        &mut self,
        id: Oid,
        max: u64,
        path: &dyn Fn() -> String,
    ) -> Result<Vec<u8>, ArchiveError> {
        let size = self.request(id, path)?;
        if size > max {
            return Err(ArchiveError::SymlinkTooLong { path: path() });
        }
        let mut content = Vec::with_capacity(size as usize);
        if let Err(e) = (&mut self.stdout).take(size).read_to_end(&mut content) {
            return Err(self.problem(format!("reading {}: {e}", path())));
        }
        if content.len() as u64 != size {
            return Err(self.problem(format!("{} ended early", path())));
        }
        self.end_of_object(path)?;
        Ok(content)
    }

    fn end_of_object(&mut self, path: &dyn Fn() -> String) -> Result<(), ArchiveError> {
        let mut nl = [0u8; 1];
        match self.stdout.read_exact(&mut nl) {
            Ok(()) if nl == *b"\n" => Ok(()),
            _ => Err(self.problem(format!("no newline after {}", path()))),
        }
    }

    /// Closes its input and waits for it.
    fn finish(mut self) -> Result<(), ArchiveError> {
        drop(self.stdin.take());
        match self.child.wait() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(self.problem(format!("it exited with {s}"))),
            Err(e) => Err(self.problem(format!("waiting for it: {e}"))),
        }
    }
}

impl Drop for CatFile {
    fn drop(&mut self) {
        // Gone already after `finish`; on an error path, stop it.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A reader that fails once `cancelled` says so (checked every read, i.e. every few
/// tens of KiB of a large file).
struct Cancellable<'a, R> {
    inner: R,
    cancelled: &'a dyn Fn() -> bool,
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if (self.cancelled)() {
            return Err(std::io::Error::other("cancelled"));
        }
        self.inner.read(buf)
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

    fn run(
        repo: &Path,
        quarantine: Option<&Path>,
        commit: &str,
        tmp: &Path,
        limits: Limits,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<SourceArchive, ArchiveError> {
        archive(
            &Request {
                repo,
                quarantine,
                commit,
                tmp_dir: tmp,
                git: Path::new("git"),
                limits,
            },
            cancelled,
        )
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
        let a = run(
            &w.join(".git"),
            None,
            &commit,
            out.path(),
            Limits::default(),
            &|| false,
        )
        .unwrap();
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
        let missing = run(
            bare.path(),
            None,
            &commit,
            out.path(),
            Limits::default(),
            &|| false,
        )
        .unwrap_err();
        assert!(
            missing.to_string().contains("reading the commit"),
            "{missing}"
        );
        let a = run(
            bare.path(),
            Some(&w.join(".git/objects")),
            &commit,
            out.path(),
            Limits::default(),
            &|| false,
        )
        .unwrap();
        assert_eq!(entries(&a)[0].3, "hello\n");
        assert!(matches!(
            run(
                bare.path(),
                Some(&w.join(".git/objects")),
                &commit,
                out.path(),
                Limits::default(),
                &|| true
            ),
            Err(ArchiveError::Cancelled)
        ));
    }

    /// A bare repository holding one commit of a file `f` with `content`.
    fn one_file(content: &[u8]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let blob = repo.blob(content).unwrap();
        let mut tb = repo.treebuilder(None).unwrap();
        tb.insert("f", blob, 0o100644).unwrap();
        let tree = repo.find_tree(tb.write().unwrap()).unwrap();
        let commit = commit_tree(&repo, &tree);
        (dir, commit)
    }

    fn commit_tree(repo: &Repository, tree: &Tree<'_>) -> String {
        let sig =
            git2::Signature::new("t", "t@example.com", &git2::Time::new(1_700_000_000, 0)).unwrap();
        repo.commit(None, &sig, &sig, "one", tree, &[])
            .unwrap()
            .to_string()
    }

    /// A bare repository whose commit nests `depth` directories `d/d/d/...` with a file at
    /// the bottom, built bottom-up from objects (no file system could check it out).
    fn nested(depth: usize) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let blob = repo.blob(b"bottom\n").unwrap();
        let mut tb = repo.treebuilder(None).unwrap();
        tb.insert("file", blob, 0o100644).unwrap();
        let mut id = tb.write().unwrap();
        for _ in 0..depth {
            let mut tb = repo.treebuilder(None).unwrap();
            tb.insert("d", id, 0o040000).unwrap();
            id = tb.write().unwrap();
        }
        let commit = commit_tree(&repo, &repo.find_tree(id).unwrap());
        (dir, commit)
    }

    fn limits(max_source_bytes: u64, max_tree_depth: usize) -> Limits {
        Limits {
            max_source_bytes,
            max_tree_depth,
            ..Limits::default()
        }
    }

    /// A tree of `levels` nested levels, each of `width` entries naming the same subtree,
    /// ending in `width` empty files: width^levels paths from a few KB of objects.
    fn shared_subtrees(width: usize, levels: usize) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let empty = repo.blob(b"").unwrap();
        let mut tb = repo.treebuilder(None).unwrap();
        for i in 0..width {
            tb.insert(format!("f{i}"), empty, 0o100644).unwrap();
        }
        let mut tree = tb.write().unwrap();
        for _ in 1..levels {
            let mut tb = repo.treebuilder(None).unwrap();
            for i in 0..width {
                tb.insert(format!("d{i}"), tree, 0o040000).unwrap();
            }
            tree = tb.write().unwrap();
        }
        let tree = repo.find_tree(tree).unwrap();
        let commit = commit_tree(&repo, &tree);
        (dir, commit)
    }

    #[test]
    fn a_tree_of_shared_subtrees_naming_too_many_paths_is_refused() {
        // The attack: 100^4 = 10^8 empty files (plus their directories) from 4 trees.
        let (repo, commit) = shared_subtrees(100, 4);
        let out = tempfile::tempdir().unwrap();
        let with_entries = |max_entries| Limits {
            max_entries,
            ..Limits::default()
        };
        let err = run(
            repo.path(),
            None,
            &commit,
            out.path(),
            with_entries(10_000),
            &|| false,
        )
        .unwrap_err();
        assert!(
            matches!(err, ArchiveError::TooManyEntries { limit: 10_000, .. }),
            "{err}"
        );
        assert!(err.is_limit());
        let msg = err.to_string();
        assert!(
            msg.contains("more than 10000 files and directories"),
            "{msg}"
        );
        assert!(msg.contains("--max-entries (FLYNN_MAX_ENTRIES"), "{msg}");
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
        // The twin: 100 directories of 100 files, 10,100 entries, exactly at its limit.
        let (repo, commit) = shared_subtrees(100, 2);
        let a = run(
            repo.path(),
            None,
            &commit,
            out.path(),
            with_entries(10_100),
            &|| false,
        )
        .unwrap();
        assert_eq!(a.files, 10_000);
    }

    #[test]
    fn a_tree_larger_than_the_limit_is_refused_before_anything_is_written() {
        let (repo, commit) = one_file(&vec![0u8; 1024 * 1024 + 1]);
        let out = tempfile::tempdir().unwrap();
        let err = run(
            repo.path(),
            None,
            &commit,
            out.path(),
            limits(1 << 20, 8),
            &|| false,
        )
        .unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge { limit, .. } if limit == 1 << 20));
        let msg = err.to_string();
        assert!(msg.contains("more than 1.0M unpacked"), "{msg}");
        assert!(msg.contains("reached at f"), "{msg}");
        assert!(
            msg.contains("--max-source-bytes (FLYNN_MAX_SOURCE_BYTES"),
            "{msg}"
        );
        assert!(err.is_limit());
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "no temporary file is left"
        );

        // The twin, exactly at the limit, is archived with its content.
        let (repo, commit) = one_file(&vec![7u8; 1024 * 1024]);
        let a = run(
            repo.path(),
            None,
            &commit,
            out.path(),
            limits(1 << 20, 8),
            &|| false,
        )
        .unwrap();
        assert_eq!((a.files, a.source_bytes), (1, 1 << 20));
        let e = entries_bytes(&a);
        assert_eq!(e, [("f".to_owned(), vec![7u8; 1024 * 1024])]);
        drop(a);
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "the tarball is deleted with its SourceArchive"
        );
    }

    fn entries_bytes(archive: &SourceArchive) -> Vec<(String, Vec<u8>)> {
        let f = File::open(&archive.path).unwrap();
        let mut t = tar::Archive::new(flate2::read::GzDecoder::new(f));
        t.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut body).unwrap();
                (path, body)
            })
            .collect()
    }

    #[test]
    fn a_tree_nested_deeper_than_the_limit_is_refused_and_its_twin_at_the_limit_is_not() {
        let out = tempfile::tempdir().unwrap();
        let (repo, commit) = nested(9);
        let err = run(
            repo.path(),
            None,
            &commit,
            out.path(),
            limits(1 << 20, 8),
            &|| false,
        )
        .unwrap_err();
        assert!(
            matches!(err, ArchiveError::TooDeep { limit: 8, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("directory d/d/d/d/d/d/d/d/d is nested more than 8"),
            "{msg}"
        );
        assert!(
            msg.contains("--max-tree-depth (FLYNN_MAX_TREE_DEPTH"),
            "{msg}"
        );

        let (repo, commit) = nested(8);
        let a = run(
            repo.path(),
            None,
            &commit,
            out.path(),
            limits(1 << 20, 8),
            &|| false,
        )
        .unwrap();
        let e = entries_bytes(&a);
        assert_eq!(e.len(), 9, "8 directories and the file");
        assert_eq!(
            e[8],
            ("d/d/d/d/d/d/d/d/file".to_owned(), b"bottom\n".to_vec())
        );
    }

    #[test]
    fn a_tree_10000_directories_deep_costs_no_stack() {
        let (repo, commit) = nested(10_000);
        let out = tempfile::tempdir().unwrap();
        // A thread with a 1 MiB stack: recursion over 10,000 levels would overflow it
        // (and abort the test process), the walk's heap stack does not.
        let (repo_path, out_path) = (repo.path().to_owned(), out.path().to_owned());
        let result = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || {
                let refused = run(
                    &repo_path,
                    None,
                    &commit,
                    &out_path,
                    limits(1 << 20, 256),
                    &|| false,
                )
                .map(|_| ());
                // And with the limit out of the way, it is archived whole.
                let whole = run(
                    &repo_path,
                    None,
                    &commit,
                    &out_path,
                    limits(1 << 20, 20_000),
                    &|| false,
                )
                .map(|a| a.files);
                (refused, whole)
            })
            .unwrap()
            .join()
            .expect("the walk overflowed its stack");
        assert!(
            matches!(result.0, Err(ArchiveError::TooDeep { limit: 256, .. })),
            "{:?}",
            result.0
        );
        assert_eq!(result.1.unwrap(), 1);
    }

    #[test]
    fn packed_blobs_stream_from_git() {
        // Objects of earlier pushes live in packs after `git gc` (libgit2 could not
        // stream them): a large packed file is read back exactly.
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        git_cmd(w, &["init", "-q", "-b", "main"]);
        let content: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(w.join("big"), &content).unwrap();
        std::fs::write(w.join("small"), "x\n").unwrap();
        git_cmd(w, &["add", "."]);
        git_cmd(w, &["commit", "-q", "-m", "one"]);
        git_cmd(w, &["gc", "-q"]);
        let commit = git_cmd(w, &["rev-parse", "HEAD"]);
        assert!(
            std::fs::read_dir(w.join(".git/objects/pack"))
                .unwrap()
                .count()
                >= 2,
            "the objects are packed"
        );
        let out = tempfile::tempdir().unwrap();
        let a = run(
            &w.join(".git"),
            None,
            &commit,
            out.path(),
            Limits::default(),
            &|| false,
        )
        .unwrap();
        assert_eq!(
            entries_bytes(&a),
            [
                ("big".to_owned(), content),
                ("small".to_owned(), b"x\n".to_vec())
            ]
        );
    }
}
