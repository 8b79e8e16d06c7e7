//! Streaming, atomic, checksummed uploads through object_store.
//!
//! The body is hashed as it arrives and cut into parts of a fixed size. A body that ends
//! within the first part is stored with one `put` (a single atomic request on every
//! backend). A longer one becomes a multipart upload whose parts go out while the body is
//! still arriving (a few at a time, so memory stays at `part_size × (concurrency + 1)`), and
//! which is completed, and so made visible, only when the body ended and its SHA-256 matched.
//! On any failure (the client went away, a checksum mismatch, a backend error, or the
//! request being dropped) the upload is aborted: S3 discards the parts, the local directory
//! removes its staging file. No backend ever shows a partial object.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::{MultipartUpload, ObjectStore, PutPayload, path::Path};
use tokio::task::JoinSet;

use super::{StoreError, Stored};
use crate::digest::Sha256;

/// How parts are cut and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSettings {
    /// Bytes per part (S3 wants at least 5 MiB for every part but the last).
    pub size: usize,
    /// Parts in flight at once.
    pub concurrency: usize,
}

impl Default for PartSettings {
    fn default() -> Self {
        Self {
            size: 8 * 1024 * 1024,
            concurrency: 2,
        }
    }
}

/// Stores `body` at `location`, atomically; with `expected` (hex SHA-256), only if it matches.
pub(super) async fn put_stream<S, E>(
    store: &dyn ObjectStore,
    location: &Path,
    mut body: S,
    expected: Option<&str>,
    parts: PartSettings,
) -> Result<Stored, StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let part_size = parts.size.max(1);
    let mut hash = Sha256::default();
    let mut pending = Pending::default();
    let mut upload: Option<Multipart> = None;

    let received: Result<(), StoreError> = async {
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| StoreError::Interrupted(e.to_string()))?;
            hash.update(&chunk);
            while pending.len + chunk.len() >= part_size {
                pending.push(chunk.split_to(part_size - pending.len));
                let part = pending.take();
                let multipart = match &mut upload {
                    Some(m) => m,
                    None => upload.insert(Multipart::start(store, location).await?),
                };
                multipart.send(part, parts.concurrency).await?;
            }
            pending.push(chunk);
        }
        Ok(())
    }
    .await;
    if let Err(e) = received {
        if let Some(m) = upload {
            m.abort(location).await;
        }
        return Err(e);
    }

    let stored = Stored {
        size: hash.len(),
        sha256: hash.finish_hex(),
    };
    if let Some(expected) = expected
        && !expected.eq_ignore_ascii_case(&stored.sha256)
    {
        if let Some(m) = upload {
            m.abort(location).await;
        }
        return Err(StoreError::ChecksumMismatch {
            expected: expected.to_owned(),
            actual: stored.sha256,
        });
    }

    match upload {
        None => {
            store
                .put_opts(location, pending.take(), Default::default())
                .await?;
        }
        Some(mut m) => {
            let last = pending.take();
            let result = async {
                if last.content_length() > 0 {
                    m.send(last, parts.concurrency).await?;
                }
                m.complete().await
            }
            .await;
            if let Err(e) = result {
                m.abort(location).await;
                return Err(e);
            }
        }
    }
    Ok(stored)
}

/// Bytes received but not yet sent, kept as the chunks they arrived in (no copying).
#[derive(Default)]
struct Pending {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Pending {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk);
        }
    }

    fn take(&mut self) -> PutPayload {
        self.len = 0;
        std::mem::take(&mut self.chunks).into_iter().collect()
    }
}

/// A multipart upload in progress; aborted on drop unless completed.
struct Multipart {
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: JoinSet<object_store::Result<()>>,
}

impl Multipart {
    async fn start(store: &dyn ObjectStore, location: &Path) -> Result<Self, StoreError> {
        let upload = store
            .put_multipart_opts(location, Default::default())
            .await?;
        tracing::debug!(%location, "multipart upload started");
        Ok(Self {
            upload: Some(upload),
            in_flight: JoinSet::new(),
        })
    }

    /// Sends the next part, first waiting while `concurrency` parts are in flight.
    async fn send(&mut self, part: PutPayload, concurrency: usize) -> Result<(), StoreError> {
        while self.in_flight.len() >= concurrency.max(1) {
            self.join_one().await?;
        }
        let upload = self.upload.as_mut().ok_or(StoreError::UploadFinished)?;
        // Spawned, so parts go out while the request body is still being read.
        self.in_flight.spawn(upload.put_part(part));
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), StoreError> {
        match self.in_flight.join_next().await {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e.into()),
            Some(Err(e)) => Err(StoreError::Io(std::io::Error::other(e))),
        }
    }

    async fn complete(&mut self) -> Result<(), StoreError> {
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        let mut upload = self.upload.take().ok_or(StoreError::UploadFinished)?;
        if let Err(e) = upload.complete().await {
            // Completion failed: the parts are still there, so abort them.
            self.upload = Some(upload);
            return Err(e.into());
        }
        Ok(())
    }

    async fn abort(mut self, location: &Path) {
        self.in_flight.shutdown().await;
        if let Some(mut upload) = self.upload.take() {
            match upload.abort().await {
                Ok(()) => tracing::debug!(%location, "multipart upload aborted"),
                // Nothing visible is left either way; S3 keeps the parts of an upload it could
                // not abort until a lifecycle rule removes them.
                Err(e) => {
                    tracing::warn!(%location, error = %e, "aborting the multipart upload failed")
                }
            }
        }
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        // The request was dropped mid-upload (the connection closed): the in-flight parts are
        // cancelled with the JoinSet, and the upload is aborted in the background.
        if let Some(mut upload) = self.upload.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                match upload.abort().await {
                    Ok(()) => tracing::debug!("dropped multipart upload aborted"),
                    Err(e) => {
                        tracing::warn!(error = %e, "aborting a dropped multipart upload failed")
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::{ObjectStoreExt, memory::InMemory};

    use super::*;

    fn body(
        parts: Vec<Result<Vec<u8>, &'static str>>,
    ) -> impl Stream<Item = Result<Bytes, &'static str>> + Unpin {
        futures::stream::iter(parts.into_iter().map(|p| p.map(Bytes::from)))
    }

    fn small_parts() -> PartSettings {
        PartSettings {
            size: 4,
            concurrency: 2,
        }
    }

    async fn objects(store: &InMemory) -> usize {
        store.list(None).count().await
    }

    #[tokio::test]
    async fn bodies_longer_than_a_part_go_multipart_and_arrive_whole() {
        let store = InMemory::new();
        let loc = Path::from("a/b");
        let data: Vec<u8> = (0..=250u8).collect();
        let chunks = data.chunks(7).map(|c| Ok(c.to_vec())).collect();
        let stored = put_stream(&store, &loc, body(chunks), None, small_parts())
            .await
            .unwrap();
        assert_eq!(stored.size, data.len() as u64);
        let got = store.get(&loc).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), data.as_slice());
    }

    #[tokio::test]
    async fn failed_or_mismatched_uploads_leave_no_object() {
        let store = InMemory::new();
        let loc = Path::from("x");
        // Interrupted after two full parts were sent.
        let err = put_stream(
            &store,
            &loc,
            body(vec![Ok(vec![1; 9]), Err("reset")]),
            None,
            small_parts(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Interrupted(_)), "{err}");
        // Checksum mismatch, multipart and single-put.
        for len in [10, 2] {
            let err = put_stream(
                &store,
                &loc,
                body(vec![Ok(vec![1; len])]),
                Some(&"0".repeat(64)),
                small_parts(),
            )
            .await
            .unwrap_err();
            assert!(matches!(err, StoreError::ChecksumMismatch { .. }), "{err}");
        }
        assert_eq!(objects(&store).await, 0);
    }

    #[tokio::test]
    async fn empty_and_exact_multiple_bodies() {
        let store = InMemory::new();
        for len in [0usize, 4, 8] {
            let loc = Path::from(format!("len-{len}"));
            let stored = put_stream(
                &store,
                &loc,
                body(vec![Ok(vec![9; len])]),
                None,
                small_parts(),
            )
            .await
            .unwrap();
            assert_eq!(stored.size, len as u64);
            assert_eq!(store.head(&loc).await.unwrap().size, len as u64);
        }
    }
}
