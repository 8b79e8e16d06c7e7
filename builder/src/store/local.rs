//! The local-directory backend: object_store's [`LocalFileSystem`] with fsync on.
//!
//! Why object_store's and not a directory layout of our own: with `with_fsync(true)` it keeps
//! the guarantees the store needs. Every write (a `put`, or a multipart upload's completion)
//! goes to a staging file beside its destination (`<object>#<n>`, same directory, so never
//! across filesystems), is `sync_all`ed, renamed into place, and the directory is fsynced: a
//! crash never leaves an empty or partial object, and an acknowledged upload survives one.
//! A failed or aborted upload removes its staging file. Going through the same trait as S3
//! keeps one upload path ([`super::upload`]) for every backend.
//!
//! What it does not do is clean up staging files of uploads cut short by a crash (a killed
//! process runs no destructor): [`LocalStore::open`] sweeps them, which is why only one
//! shelf may use a directory at a time (the chart's single replica with a ReadWriteOnce
//! volume). Object names ending in `#<digits>` are reserved for staging; [`ObjectPath`]
//! refuses `#` altogether.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use futures::Stream;
use object_store::{ObjectStore, local::LocalFileSystem};
use tokio::fs;

use super::{ObjectPath, PartSettings, Store, StoreError};

pub use super::Stored;

/// Bytes per part of an upload: a disk has no minimum part size, and small parts keep an
/// upload's memory small (part size × (concurrency + 1)).
pub const PART_SIZE: usize = 1024 * 1024;

/// Where uploads were staged before object_store's layout; removed on open.
const LEGACY_STAGING: &str = ".tmp";

/// Objects as files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    store: Store,
}

impl LocalStore {
    /// A store in `root`, created if missing. Leftovers of uploads interrupted by a crash are
    /// removed.
    pub async fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).await?;
        let legacy = root.join(LEGACY_STAGING);
        if fs::try_exists(&legacy).await? {
            fs::remove_dir_all(&legacy).await?;
        }
        let sweep_root = root.clone();
        let swept = tokio::task::spawn_blocking(move || sweep_staging(&sweep_root))
            .await
            .map_err(io::Error::other)??;
        if swept > 0 {
            tracing::info!(root = %root.display(), files = swept, "removed staging files of interrupted uploads");
        }
        let fs = LocalFileSystem::new_with_prefix(&root)
            .map_err(io::Error::other)?
            .with_fsync(true);
        Ok(Self {
            root,
            store: Store::new(Arc::new(fs)).with_parts(PartSettings {
                size: PART_SIZE,
                ..PartSettings::default()
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The object_store backend.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.objects().clone()
    }

    /// The backend-independent operations on this directory.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores the bytes of `body` at `path`, atomically; with `expected` (hex SHA-256), only
    /// if they match it.
    pub async fn put<S, E>(
        &self,
        path: &ObjectPath,
        body: S,
        expected: Option<&str>,
    ) -> Result<Stored, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.store.put(path, body, expected).await
    }

    /// The object at `path` opened for reading, with its size; `None` when there is none.
    pub async fn open_object(
        &self,
        path: &ObjectPath,
    ) -> Result<Option<(fs::File, u64)>, StoreError> {
        match fs::File::open(self.root.join(path.as_str())).await {
            Ok(f) => {
                let meta = f.metadata().await?;
                // A directory (a path prefix of other objects) is not an object.
                if !meta.is_file() {
                    return Ok(None);
                }
                Ok(Some((f, meta.len())))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the object at `path`; `false` when there was none.
    pub async fn delete(&self, path: &ObjectPath) -> Result<bool, StoreError> {
        self.store.delete(path).await
    }
}

impl From<LocalStore> for Store {
    fn from(local: LocalStore) -> Self {
        local.store
    }
}

/// Whether `name` is a LocalFileSystem staging file: `<object>#<digits>`.
fn is_staging(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes staging files under `dir`; how many.
fn sweep_staging(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // Not following symlinks: the tree is the store's own.
        let kind = entry.file_type()?;
        if kind.is_dir() {
            removed += sweep_staging(&entry.path())?;
        } else if kind.is_file() && entry.file_name().to_str().is_some_and(is_staging) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(
        parts: Vec<Result<&'static str, &'static str>>,
    ) -> impl Stream<Item = Result<Bytes, &'static str>> + Unpin {
        futures::stream::iter(
            parts
                .into_iter()
                .map(|p| p.map(|s| Bytes::from_static(s.as_bytes()))),
        )
    }

    /// Regular files under `dir`.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.extend(files(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    #[tokio::test]
    async fn failed_uploads_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).await.unwrap();
        let p = ObjectPath::parse("a/b").unwrap();

        let err = store
            .put(&p, body(vec![Ok("half"), Err("reset")]), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Interrupted(_)));
        let err = store
            .put(&p, body(vec![Ok("x")]), Some(&"0".repeat(64)))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::ChecksumMismatch { .. }));
        assert!(store.open_object(&p).await.unwrap().is_none());
        assert_eq!(files(dir.path()), Vec::<PathBuf>::new());

        let stored = store
            .put(&p, body(vec![Ok("he"), Ok("llo")]), None)
            .await
            .unwrap();
        assert_eq!(stored.size, 5);
        assert_eq!(store.open_object(&p).await.unwrap().unwrap().1, 5);
        assert_eq!(files(dir.path()), vec![dir.path().join("a/b")]);
        assert!(
            store
                .open_object(&ObjectPath::parse("a").unwrap())
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .store()
                .head(&ObjectPath::parse("a").unwrap())
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.delete(&p).await.unwrap());
        assert!(!store.delete(&p).await.unwrap());
    }

    #[tokio::test]
    async fn multipart_uploads_are_staged_and_aborted_or_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::from(LocalStore::open(dir.path()).await.unwrap()).with_parts(PartSettings {
                size: 4,
                concurrency: 2,
            });
        let p = ObjectPath::parse("slugs/app/v1.tgz").unwrap();
        let err = store
            .put(&p, body(vec![Ok("0123456789"), Err("reset")]), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Interrupted(_)));
        let err = store
            .put(&p, body(vec![Ok("0123456789")]), Some(&"0".repeat(64)))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::ChecksumMismatch { .. }));
        assert_eq!(files(dir.path()), Vec::<PathBuf>::new());

        store
            .put(&p, body(vec![Ok("01234"), Ok("56789")]), None)
            .await
            .unwrap();
        assert_eq!(files(dir.path()), vec![dir.path().join("slugs/app/v1.tgz")]);
        assert_eq!(
            std::fs::read(dir.path().join("slugs/app/v1.tgz")).unwrap(),
            b"0123456789"
        );
    }

    #[tokio::test]
    async fn open_sweeps_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("slugs/app")).unwrap();
        std::fs::create_dir_all(dir.path().join(".tmp")).unwrap();
        std::fs::write(dir.path().join(".tmp/0123"), "old layout").unwrap();
        std::fs::write(dir.path().join("slugs/app/v1.tgz#1"), "partial").unwrap();
        std::fs::write(dir.path().join("slugs/app/v1.tgz"), "whole").unwrap();
        LocalStore::open(dir.path()).await.unwrap();
        assert_eq!(files(dir.path()), vec![dir.path().join("slugs/app/v1.tgz")]);
    }

    #[test]
    fn staging_names() {
        assert!(is_staging("v1.tgz#1"));
        assert!(is_staging("a#23"));
        assert!(!is_staging("v1.tgz"));
        assert!(!is_staging("a#"));
        assert!(!is_staging("a#1b"));
    }
}
