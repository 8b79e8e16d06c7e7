//! [`Store`]: the shelf's operations on any object_store backend.
//!
//! The HTTP API needs a little more than object_store's trait gives uniformly: uploads that
//! are streamed, checksummed and atomic ([`super::upload`]), downloads whose range is known
//! before the first byte is sent, and a `DELETE` that knows whether there was an object (S3
//! answers 204 either way). This is that layer; every backend goes through it.

use std::{fmt, io, ops::Range, sync::Arc};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, path::Path,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{
    ObjectPath, StoreError, Stored,
    upload::{self, PartSettings},
};

/// Read size for objects that are local files: large reads keep a download at disk speed
/// (object_store's own file stream reads 8 KiB at a time, each on a blocking thread).
const FILE_READ_SIZE: usize = 256 * 1024;

/// Prefix under which readiness probes list; [`ObjectPath`] refuses segments starting with
/// `.`, so no client object is ever under it.
const PROBE: &str = ".shelf-readyz";

/// An object's size and version tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
    /// The backend's version tag (S3 ETag, or the local file's inode, mtime and size), used to
    /// make a ranged read fail instead of mixing two versions of a replaced object.
    pub e_tag: Option<String>,
}

/// An object being read.
pub struct Download {
    /// The whole object's size.
    pub size: u64,
    /// The bytes the body holds.
    pub range: Range<u64>,
    /// The bytes, streamed.
    pub body: BoxStream<'static, io::Result<Bytes>>,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// Objects under paths, on one backend. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    parts: PartSettings,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.objects.to_string())
            .field("parts", &self.parts)
            .finish()
    }
}

fn location(path: &ObjectPath) -> Result<Path, StoreError> {
    // ObjectPath's rules are stricter than object_store's, so this only fails if they drift.
    Path::parse(path.as_str()).map_err(|e| StoreError::BadPath(e.to_string()))
}

impl Store {
    /// A store over any object_store backend.
    pub fn new(objects: Arc<dyn ObjectStore>) -> Self {
        Self {
            objects,
            parts: PartSettings::default(),
        }
    }

    /// Sets how uploads are cut into parts.
    pub fn with_parts(mut self, parts: PartSettings) -> Self {
        self.parts = parts;
        self
    }

    /// The backend.
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    /// Stores the bytes of `body` at `path`, atomically; with `expected` (hex SHA-256), only
    /// if they match it. See [`super::upload`].
    pub async fn put<S, E>(
        &self,
        path: &ObjectPath,
        body: S,
        expected: Option<&str>,
    ) -> Result<Stored, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: fmt::Display,
    {
        let location = location(path)?;
        upload::put_stream(self.objects.as_ref(), &location, body, expected, self.parts).await
    }

    /// The object's size and version; `None` when there is none.
    pub async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectInfo>, StoreError> {
        match self.objects.head(&location(path)?).await {
            Ok(meta) => Ok(Some(ObjectInfo {
                size: meta.size,
                e_tag: meta.e_tag,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the object at `path`: all of it, or `range` (which must lie within it). With
    /// `if_match`, fails with [`StoreError::Changed`] when the object is no longer that
    /// version. `None` when there is no object.
    pub async fn get(
        &self,
        path: &ObjectPath,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<Option<Download>, StoreError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            if_match: if_match.map(str::to_owned),
            ..GetOptions::default()
        };
        let result = match self.objects.get_opts(&location(path)?, options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(object_store::Error::Precondition { .. }) => return Err(StoreError::Changed),
            Err(e) => return Err(e.into()),
        };
        let size = result.meta.size;
        let range = result.range.clone();
        let body = match result.payload {
            GetResultPayload::File(file, _) => {
                let mut file = tokio::fs::File::from_std(file);
                if range.start > 0 {
                    file.seek(io::SeekFrom::Start(range.start)).await?;
                }
                ReaderStream::with_capacity(file.take(range.end - range.start), FILE_READ_SIZE)
                    .boxed()
            }
            GetResultPayload::Stream(s) => s.map_err(io::Error::other).boxed(),
        };
        Ok(Some(Download { size, range, body }))
    }

    /// Deletes the object at `path`; `false` when there was none.
    pub async fn delete(&self, path: &ObjectPath) -> Result<bool, StoreError> {
        // S3 deletes of a missing key succeed, so ask first; a concurrent delete in between
        // is reported as done, which it is.
        if self.head(path).await?.is_none() {
            return Ok(false);
        }
        match self.objects.delete(&location(path)?).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under `prefix` (a path's first segments), with when it was last
    /// written, in seconds since the Unix epoch.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(ObjectPath, i64)>, StoreError> {
        let prefix = Path::parse(prefix).map_err(|e| StoreError::BadPath(e.to_string()))?;
        let mut listed = self.objects.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = listed.try_next().await? {
            // Names the API could not have made (staging files, the readiness probe).
            if let Ok(path) = ObjectPath::parse(meta.location.as_ref()) {
                out.push((path, meta.last_modified.timestamp()));
            }
        }
        Ok(out)
    }

    /// Whether the backend answers and the bucket is there: a listing under a prefix no
    /// object can have. (A lookup would not do: S3 answers a missing bucket and a missing key
    /// alike, with 404.) The credentials need list access, which S3 also requires to answer
    /// 404 rather than 403 for a missing object.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.objects
            .list_with_delimiter(Some(&Path::from(PROBE)))
            .await?;
        Ok(())
    }
}
