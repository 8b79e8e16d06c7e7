//! The slug store ("shelf"): blobs under paths over HTTP, kept by an object_store backend.
//!
//! - [`objects`]: [`Store`], the operations the API needs on any backend: streamed,
//!   checksummed, atomic uploads ([`upload`]), ranged streamed reads, deletes.
//! - [`backend`]: choosing the backend from settings: a local directory ([`local`], the
//!   default, a PersistentVolume in the cluster), S3 or an S3-compatible server, GCS, Azure.
//! - [`transport`]: the cloud backends' HTTP transport (hyper-util, rustls on ring).
//! - [`server`]: the HTTP API: `PUT`/`GET`/`HEAD`/`DELETE /<path>`, Range requests, a bearer
//!   token for everything and [signed URLs](crate::signing) for reads.
//! - [`gc`]: removing the slugs, sources and build caches that nothing needs any more.
//! - [`metrics`]: Prometheus counters for `/metrics`.
//! - [`token`]: the store's token in a Secret the store creates once (`--token-secret`), and
//!   waiting for it (the git receiver).

pub mod backend;
pub mod gc;
pub mod local;
pub mod metrics;
pub mod objects;
pub mod server;
pub mod token;
pub mod transport;
pub mod upload;

use std::fmt;

pub use backend::{BackendKind, BackendSettings, OpenError, S3Settings};
pub use local::LocalStore;
pub use objects::{Download, ObjectInfo, Store};
pub use upload::PartSettings;

/// Request header carrying the SHA-256 (hex) a client expects its upload to have; the store
/// refuses the upload, keeping nothing, when the body does not match.
pub const SHA256_HEADER: &str = "x-content-sha256";

/// Longest accepted object path.
const MAX_PATH_LEN: usize = 1024;

/// A validated object path: `/`-separated segments, none empty, none starting with `.`
/// (which also rules out `.` and `..`, and keeps the store's own names, such as its readiness
/// probe, unreachable), none with `#` (the local backend stages uploads as `<object>#<n>`;
/// in a URL it would start the fragment anyway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath(String);

impl ObjectPath {
    /// Validates `path` (with or without a leading `/`).
    pub fn parse(path: &str) -> Result<Self, StoreError> {
        let p = path.trim_start_matches('/');
        let bad = |why: &str| StoreError::BadPath(format!("`{path}` {why}"));
        if p.is_empty() {
            return Err(bad("is empty"));
        }
        if p.len() > MAX_PATH_LEN {
            return Err(bad("is too long"));
        }
        for seg in p.split('/') {
            if seg.is_empty() {
                return Err(bad("has an empty segment"));
            }
            if seg.starts_with('.') {
                return Err(bad("has a segment starting with `.`"));
            }
            if seg.chars().any(|c| c.is_control() || c == '\\') {
                return Err(bad("contains control characters or `\\`"));
            }
            if seg.contains('#') {
                return Err(bad("contains `#`"));
            }
        }
        Ok(Self(p.to_owned()))
    }

    /// The path without its leading `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an upload stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stored {
    /// SHA-256 of the object, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object path is not acceptable.
    #[error("bad object path: {0}")]
    BadPath(String),
    /// The upload's SHA-256 is not the one the client announced.
    #[error(
        "upload refused: its sha256 is {actual} but the {SHA256_HEADER} header says {expected}"
    )]
    ChecksumMismatch {
        /// What the client announced.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The client's body stream failed (disconnect, timeout).
    #[error("upload interrupted: {0}")]
    Interrupted(String),
    /// The filesystem failed.
    #[error("store filesystem error: {0}")]
    Io(#[from] std::io::Error),
    /// The backend failed (an S3 error answer, a connection failure after retries, ...).
    #[error("store backend error: {0}")]
    Backend(#[from] object_store::Error),
    /// A conditional read found the object replaced since it was looked up.
    #[error("the object changed while it was being read")]
    Changed,
    /// A multipart upload was used after it completed or was aborted (a bug).
    #[error("the upload was already finished")]
    UploadFinished,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_cannot_escape_or_hide() {
        assert_eq!(
            ObjectPath::parse("/slugs/app/v1.tgz").unwrap().as_str(),
            "slugs/app/v1.tgz"
        );
        for bad in [
            "",
            "/",
            "a//b",
            "../etc/passwd",
            "a/../b",
            ".tmp/x",
            "a/.hidden",
            "a\\b",
            "a/b#1",
        ] {
            assert!(ObjectPath::parse(bad).is_err(), "{bad}");
        }
    }
}
