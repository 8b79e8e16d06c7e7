//! The local-directory backend.
//!
//! Uploads go to a file in `<root>/.tmp` and are renamed into place only once complete and
//! checksummed, so readers never see a partial object and a failed upload leaves nothing
//! behind. `.tmp` sits in the same directory tree so the rename never crosses filesystems.

use std::{
    io,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::{fs, io::AsyncWriteExt};

use super::{ObjectPath, StoreError};
use crate::digest::Sha256;

/// Name of the staging directory under the root.
const STAGING: &str = ".tmp";

/// Objects as files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// What an upload stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stored {
    /// SHA-256 of the object, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Removes a staged upload unless it was committed.
struct Staged {
    path: PathBuf,
    committed: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl LocalStore {
    /// A store in `root`, created if missing. Leftovers of uploads interrupted by a crash are
    /// removed.
    pub async fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        let staging = root.join(STAGING);
        if fs::try_exists(&staging).await? {
            fs::remove_dir_all(&staging).await?;
        }
        fs::create_dir_all(&staging).await?;
        Ok(Self { root })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file(&self, path: &ObjectPath) -> PathBuf {
        self.root.join(path.as_str())
    }

    /// Stores the bytes of `body` at `path`, atomically; with `expected` (hex SHA-256), only
    /// if they match it.
    pub async fn put<S, E>(
        &self,
        path: &ObjectPath,
        mut body: S,
        expected: Option<&str>,
    ) -> Result<Stored, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let staged = Staged {
            path: self
                .root
                .join(STAGING)
                .join(format!("{:016x}", rand::random::<u64>())),
            committed: false,
        };
        let mut staged = staged;
        let file = fs::File::create(&staged.path).await?;
        let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, file);
        let mut hash = Sha256::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Interrupted(e.to_string()))?;
            hash.update(&chunk);
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        let file = out.into_inner();
        // Durable before visible: a crash after the rename must not leave an empty slug.
        file.sync_all().await?;
        drop(file);
        let stored = Stored {
            size: hash.len(),
            sha256: hash.finish_hex(),
        };
        if let Some(expected) = expected
            && !expected.eq_ignore_ascii_case(&stored.sha256)
        {
            return Err(StoreError::ChecksumMismatch {
                expected: expected.to_owned(),
                actual: stored.sha256,
            });
        }
        let dest = self.file(path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).await?;
        }
        fs::rename(&staged.path, &dest).await?;
        staged.committed = true;
        Ok(stored)
    }

    /// The object at `path` opened for reading, with its size; `None` when there is none.
    pub async fn open_object(
        &self,
        path: &ObjectPath,
    ) -> Result<Option<(fs::File, u64)>, StoreError> {
        match fs::File::open(self.file(path)).await {
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
        match fs::remove_file(self.file(path)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
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
        assert_eq!(
            std::fs::read_dir(dir.path().join(STAGING)).unwrap().count(),
            0
        );

        let stored = store
            .put(&p, body(vec![Ok("he"), Ok("llo")]), None)
            .await
            .unwrap();
        assert_eq!(stored.size, 5);
        assert_eq!(store.open_object(&p).await.unwrap().unwrap().1, 5);
        assert!(
            store
                .open_object(&ObjectPath::parse("a").unwrap())
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.delete(&p).await.unwrap());
        assert!(!store.delete(&p).await.unwrap());
    }
}
