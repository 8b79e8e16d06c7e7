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
