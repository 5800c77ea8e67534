//! Which certificates the probe trusts: the system store (rustls-native-certs,
//! which honours `SSL_CERT_FILE`) plus the roots in `--ca-file`. One rustls
//! configuration (ring provider) is used for every TLS connection the checks make.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Failure to build the trust store.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("CA file {path} holds no usable certificate")]
    EmptyCaFile { path: PathBuf },
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads every certificate in a PEM file.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TrustError::CaFile {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TrustError::EmptyCaFile {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// System roots plus those of `ca_file`.
pub fn load_roots(ca_file: Option<&Path>) -> Result<RootCertStore, TrustError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "skipping unreadable system certificate");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system roots loaded");
    if let Some(path) = ca_file {
        let (added, ignored) = roots.add_parsable_certificates(read_pem_certs(path)?);
        tracing::info!(path = %path.display(), added, ignored, "extra roots loaded");
    }
    if roots.is_empty() {
        tracing::warn!(
            "no trusted root certificates: every HTTPS check will fail (install ca-certificates or pass --ca-file)"
        );
    }
    Ok(roots)
}

/// The rustls client configuration for checks: ring provider, HTTP/1.1 ALPN.
pub fn client_config(roots: RootCertStore) -> Result<Arc<rustls::ClientConfig>, TrustError> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Checks speak HTTP/1.1 by hand so every phase can be timed.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestCa;

    #[test]
    fn ca_file_roots_are_added() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        let system = load_roots(None).unwrap().len();
        assert_eq!(load_roots(Some(&path)).unwrap().len(), system + 1);
    }

    #[test]
    fn unreadable_or_empty_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = load_roots(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("empty.pem"), "{err}");
    }
}
