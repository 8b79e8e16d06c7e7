//! TLS termination: certificates from Secrets, chosen by SNI from the current table.
//!
//! The rustls `ServerConfig` is built once; its certificate resolver reads the current table on
//! every handshake, so a new or renewed certificate is served as soon as the table that holds
//! it is published, without touching listeners or existing connections.

use std::sync::Arc;

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::table::TableHandle;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// `tls.crt` holds no PEM certificate.
    #[error("tls.crt holds no PEM certificate: {0}")]
    NoCertificate(String),
    /// `tls.key` holds no usable PEM private key.
    #[error("tls.key holds no PEM private key: {0}")]
    NoKey(String),
    /// The key's type is not supported.
    #[error("unsupported private key: {0}")]
    UnsupportedKey(rustls::Error),
    /// The Secret lacks a key.
    #[error("the Secret has no {0}")]
    Missing(&'static str),
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a Route's certificate is not used for its host (the `CertificateReady` condition).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertProblem {
    /// No `kubernetes.io/tls` Secret of that name in the Route's namespace.
    #[error(
        "no Secret {secret} of type kubernetes.io/tls in namespace {namespace}: create it there \
         (a certificate is only taken from the Route's own namespace)"
    )]
    SecretNotFound {
        /// The Secret's name.
        secret: String,
        /// The Route's namespace.
        namespace: String,
    },
    /// The router may not read Secrets in the namespace (yet): the platform grants it per
    /// namespace, and the router retries.
    #[error(
        "the router cannot read Secrets in namespace {namespace} yet ({why}); it retries, and \
         uses the certificate once the platform grants it access"
    )]
    AccessPending {
        /// The Route's namespace.
        namespace: String,
        /// The API server's answer.
        why: String,
    },
    /// `tls.crt` / `tls.key` could not be read.
    #[error("Secret {secret}: {error}")]
    Malformed {
        /// The Secret's name.
        secret: String,
        /// What is wrong.
        error: String,
    },
    /// The private key is not the certificate's.
    #[error(
        "Secret {secret}: tls.key is not the private key of the certificate in tls.crt (its \
         public key differs): put the matching key in tls.key"
    )]
    KeyMismatch {
        /// The Secret's name.
        secret: String,
    },
    /// The certificate does not name the host.
    #[error(
        "the certificate in Secret {secret} does not cover {host}: its subjectAltName dNSNames \
         must name {host}{wild} (the subject CN is not used)"
    )]
    HostNotCovered {
        /// The Secret's name.
        secret: String,
        /// The Route's host.
        host: String,
        /// How a wildcard could cover it, if one can.
        wild: String,
    },
}

impl CertProblem {
    /// The `CertificateReady` reason.
    pub fn reason(&self) -> &'static str {
        use flynn_crds::conditions::reasons;
        match self {
            Self::SecretNotFound { .. } => reasons::SECRET_NOT_FOUND,
            Self::AccessPending { .. } => reasons::SECRET_ACCESS_PENDING,
            Self::Malformed { .. } => reasons::MALFORMED,
            Self::KeyMismatch { .. } => reasons::KEY_MISMATCH,
            Self::HostNotCovered { .. } => reasons::HOST_NOT_COVERED,
        }
    }
}

/// Why a Secret's certificate and key cannot be used at all (whatever the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretProblem {
    /// Not PEM, missing, or an unsupported key.
    Malformed(String),
    /// The key is not the certificate's.
    KeyMismatch,
}

/// A Secret's certificate and key, checked to belong together: what the index keeps.
pub fn secret_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, SecretProblem> {
    let key =
        certified_key(cert_pem, key_pem).map_err(|e| SecretProblem::Malformed(e.to_string()))?;
    match key.keys_match() {
        Ok(()) => Ok(key),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(SecretProblem::KeyMismatch)
        }
        // ring's keys all know their public key; an unknown one is not refused.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(key),
        Err(e) => Err(SecretProblem::Malformed(format!("tls.crt: {e}"))),
    }
}

/// A label no certificate names: checking `<probe>.<suffix>` tells whether a certificate
/// covers every name of one more label under `suffix`, i.e. has the wildcard itself.
const WILDCARD_PROBE: &str = "flynn-wildcard-coverage-check";

/// Whether the end-entity certificate of `key` covers `host`: RFC 6125 as webpki (the
/// verifier browsers' rules follow) implements it: subjectAltName dNSNames only, never the
/// subject CN; `*` only as the whole left-most label, matching exactly one label. A
/// wildcard host is covered only by a wildcard name for the same suffix.
pub fn covers(key: &CertifiedKey, host: &flynn_crds::host::Host) -> bool {
    use flynn_crds::host::Host;
    let Ok(der) = key.end_entity_cert() else {
        return false;
    };
    let Ok(cert) = rustls::server::ParsedCertificate::try_from(der) else {
        return false;
    };
    let name = match host {
        Host::Exact(name) => name.clone(),
        Host::Wildcard(suffix) => format!("{WILDCARD_PROBE}.{suffix}"),
    };
    let Ok(server_name) = rustls::pki_types::ServerName::try_from(name) else {
        return false;
    };
    rustls::client::verify_server_name(&cert, &server_name).is_ok()
}

/// Parses a PEM certificate chain and private key into a signing identity.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::NoCertificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate("empty".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertError::NoKey(e.to_string()))?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(CertError::UnsupportedKey)?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// Loads a certificate and key from PEM files (the default certificate).
pub fn certified_key_from_files(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, CertError> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|source| CertError::Read {
            path: path.to_owned(),
            source,
        })
    };
    certified_key(&read(cert)?, &read(key)?)
}

/// Chooses the certificate for a handshake from the current table.
#[derive(Debug)]
pub struct SniResolver {
    table: TableHandle,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        // A host whose own certificate is unusable, or another namespace's name under a
        // wildcard, finds nothing (never the wildcard's certificate): the default, if any.
        hello
            .server_name()
            .and_then(|name| table.certs.get(name).cloned())
            .or_else(|| self.default.clone())
    }
}

/// The server configuration: SNI from `table`, ALPN `h2` then `http/1.1`, ring crypto.
pub fn server_config(
    table: TableHandle,
    default: Option<Arc<CertifiedKey>>,
    http2: bool,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver { table, default }));
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}
