//! Choosing and opening the store's backend from settings (flags or `SHELF_*` variables).
//!
//! | backend | settings | credentials |
//! | --- | --- | --- |
//! | `local` (default) | `SHELF_ROOT` | – |
//! | `s3` | `SHELF_BUCKET`, `SHELF_S3_ENDPOINT` (S3-compatible servers; path-style), `SHELF_S3_REGION` | `SHELF_S3_ACCESS_KEY_ID`/`SHELF_S3_SECRET_ACCESS_KEY`, else object_store's `AWS_*` (keys, session token, web identity, ECS) |
//! | `gcs` | `SHELF_BUCKET` | object_store's `GOOGLE_*` (`GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`, ...), else the metadata server |
//! | `azure` | `SHELF_BUCKET` (the container) | object_store's `AZURE_*` (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ...) |
//!
//! `SHELF_PREFIX` puts every object under a key prefix in the bucket. All cloud backends talk
//! HTTP through [`super::transport::HyperConnector`].

use std::{fmt, path::PathBuf, sync::Arc};

use object_store::{
    ObjectStore, aws::AmazonS3Builder, azure::MicrosoftAzureBuilder,
    gcp::GoogleCloudStorageBuilder, prefix::PrefixStore,
};

use super::{LocalStore, Store, transport::HyperConnector, upload::PartSettings};

/// The local backend's directory unless set: where the chart mounts the volume.
pub const DEFAULT_ROOT: &str = "/var/lib/shelf";

/// Which backend holds the objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// A directory (a PersistentVolume in the cluster).
    Local,
    /// Amazon S3 or an S3-compatible server (SeaweedFS, MinIO, Ceph RGW, R2).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Local => "local",
            Self::S3 => "s3",
            Self::Gcs => "gcs",
            Self::Azure => "azure",
        })
    }
}

/// The backend settings, as flags of the `shelf` binary (each also a `SHELF_*` variable).
#[derive(Debug, Clone, clap::Args)]
pub struct BackendSettings {
    /// Where objects live.
    #[arg(long = "backend", env = "SHELF_BACKEND", value_enum, default_value_t = BackendKind::Local)]
    pub kind: BackendKind,
    /// local: the directory holding the objects (a PersistentVolume in the cluster).
    #[arg(long, env = "SHELF_ROOT", default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// s3, gcs, azure: the bucket (the container on Azure).
    #[arg(long, env = "SHELF_BUCKET")]
    pub bucket: Option<String>,
    /// s3, gcs, azure: a key prefix for every object, to share a bucket.
    #[arg(long, env = "SHELF_PREFIX")]
    pub prefix: Option<String>,
    /// S3 settings.
    #[command(flatten)]
    pub s3: S3Settings,
    /// Uploads are written in parts of this size; a smaller upload is one request. Default:
    /// 1M for a directory, 8M for object storage (S3 needs at least 5M).
    #[arg(long, env = "SHELF_PART_SIZE", value_parser = parse_part_size)]
    pub part_size: Option<usize>,
    /// Parts of one upload in flight at once (memory per upload: part size × (this + 1)).
    #[arg(long, env = "SHELF_UPLOAD_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub upload_concurrency: u16,
}

/// S3 settings; unset ones come from object_store's `AWS_*` variables.
#[derive(Clone, Default, clap::Args)]
pub struct S3Settings {
    /// S3 endpoint URL, for S3-compatible servers (e.g. http://seaweedfs:8333); unset:
    /// AWS (or `AWS_ENDPOINT`). An http:// endpoint allows plain http.
    #[arg(long = "s3-endpoint", env = "SHELF_S3_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Region (default: `AWS_REGION`, else us-east-1, which S3-compatible servers accept).
    #[arg(long = "s3-region", env = "SHELF_S3_REGION")]
    pub region: Option<String>,
    /// Access key id (default: `AWS_ACCESS_KEY_ID`).
    #[arg(long = "s3-access-key-id", env = "SHELF_S3_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// Secret access key (default: `AWS_SECRET_ACCESS_KEY`).
    #[arg(
        long = "s3-secret-access-key",
        env = "SHELF_S3_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub secret_access_key: Option<String>,
    /// Address buckets as `<bucket>.<endpoint>` instead of `<endpoint>/<bucket>` (path
    /// style, the default, which SeaweedFS and MinIO need).
    #[arg(
        long = "s3-virtual-hosted-style",
        env = "SHELF_S3_VIRTUAL_HOSTED_STYLE"
    )]
    pub virtual_hosted_style: bool,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| ".."),
            )
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish()
    }
}

impl BackendSettings {
    /// A local directory, with default upload settings.
    pub fn local(root: impl Into<PathBuf>) -> Self {
        Self {
            kind: BackendKind::Local,
            root: root.into(),
            bucket: None,
            prefix: None,
            s3: S3Settings::default(),
            part_size: None,
            upload_concurrency: 2,
        }
    }

    /// An S3 bucket, with default upload settings.
    pub fn s3(bucket: impl Into<String>, s3: S3Settings) -> Self {
        Self {
            kind: BackendKind::S3,
            bucket: Some(bucket.into()),
            s3,
            ..Self::local(DEFAULT_ROOT)
        }
    }

    /// Where the objects are, for logs.
    pub fn describe(&self) -> String {
        let prefix = self
            .prefix
            .as_deref()
            .map(|p| format!("/{}", p.trim_matches('/')))
            .unwrap_or_default();
        match self.kind {
            BackendKind::Local => format!("local directory {}", self.root.display()),
            BackendKind::S3 => format!(
                "s3://{}{prefix} at {}",
                self.bucket.as_deref().unwrap_or("?"),
                self.s3.endpoint.as_deref().unwrap_or("AWS")
            ),
            BackendKind::Gcs => format!("gs://{}{prefix}", self.bucket.as_deref().unwrap_or("?")),
            BackendKind::Azure => {
                format!(
                    "azure container {}{prefix}",
                    self.bucket.as_deref().unwrap_or("?")
                )
            }
        }
    }

    /// Opens the backend. Cloud backends make no request here: [`Store::check`] tells
    /// whether they answer.
    pub async fn open(&self) -> Result<Store, OpenError> {
        let parts = PartSettings {
            size: self.part_size.unwrap_or(match self.kind {
                // No minimum part size on a disk: small parts keep an upload's memory small.
                BackendKind::Local => super::local::PART_SIZE,
                _ => PartSettings::default().size,
            }),
            concurrency: usize::from(self.upload_concurrency),
        };
        let objects: Arc<dyn ObjectStore> = match self.kind {
            BackendKind::Local => {
                let local =
                    LocalStore::open(&self.root)
                        .await
                        .map_err(|source| OpenError::Local {
                            root: self.root.clone(),
                            source,
                        })?;
                return Ok(Store::from(local).with_parts(parts));
            }
            BackendKind::S3 => self.with_prefix(self.s3_builder()?.build()?),
            BackendKind::Gcs => self.with_prefix(
                GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(self.bucket()?)
                    .with_http_connector(HyperConnector)
                    .build()?,
            ),
            BackendKind::Azure => self.with_prefix(
                MicrosoftAzureBuilder::from_env()
                    .with_container_name(self.bucket()?)
                    .with_http_connector(HyperConnector)
                    .build()?,
            ),
        };
        Ok(Store::new(objects).with_parts(parts))
    }

    fn bucket(&self) -> Result<&str, OpenError> {
        self.bucket
            .as_deref()
            .filter(|b| !b.is_empty())
            .ok_or(OpenError::NoBucket(self.kind))
    }

    /// The S3 client's builder: object_store's `AWS_*` variables, then the settings.
    pub fn s3_builder(&self) -> Result<AmazonS3Builder, OpenError> {
        let s3 = &self.s3;
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(self.bucket()?)
            .with_virtual_hosted_style_request(s3.virtual_hosted_style)
            .with_http_connector(HyperConnector);
        if let Some(endpoint) = &s3.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        // object_store's default region is us-east-1 already; AWS_REGION overrides it.
        if let Some(region) = &s3.region {
            b = b.with_region(region);
        }
        if let Some(id) = &s3.access_key_id {
            b = b.with_access_key_id(id);
        }
        if let Some(secret) = &s3.secret_access_key {
            b = b.with_secret_access_key(secret);
        }
        Ok(b)
    }

    fn with_prefix<T: ObjectStore>(&self, store: T) -> Arc<dyn ObjectStore> {
        match self.prefix.as_deref().map(|p| p.trim_matches('/')) {
            Some(p) if !p.is_empty() => Arc::new(PrefixStore::new(store, p)),
            _ => Arc::new(store),
        }
    }
}

/// The backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The local directory could not be created or swept.
    #[error("opening the store directory {}: {source}", root.display())]
    Local {
        /// The directory.
        root: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A cloud backend without a bucket.
    #[error("the {0} backend needs a bucket (SHELF_BUCKET, --bucket)")]
    NoBucket(BackendKind),
    /// object_store refused the configuration (a bad endpoint URL, missing credentials, ...).
    #[error("configuring the store backend: {0}")]
    Config(#[from] object_store::Error),
}

/// Parses a part size like `8M`, `16777216` or `512K`.
fn parse_part_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    match num.trim().parse::<usize>().map(|n| n.checked_mul(mul)) {
        Ok(Some(n)) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a size like 8M")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes() {
        assert_eq!(parse_part_size("8M"), Ok(8 << 20));
        assert_eq!(parse_part_size("512k"), Ok(512 << 10));
        assert_eq!(parse_part_size("100"), Ok(100));
        assert!(parse_part_size("0").is_err());
        assert!(parse_part_size("big").is_err());
    }

    #[tokio::test]
    async fn cloud_backends_need_a_bucket() {
        let mut s = BackendSettings::s3("", S3Settings::default());
        assert!(matches!(
            s.open().await,
            Err(OpenError::NoBucket(BackendKind::S3))
        ));
        s.kind = BackendKind::Gcs;
        assert!(matches!(
            s.open().await,
            Err(OpenError::NoBucket(BackendKind::Gcs))
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = S3Settings {
            secret_access_key: Some("hunter2".into()),
            ..S3Settings::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
