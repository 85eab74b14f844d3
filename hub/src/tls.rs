//! `wss://`: TLS for the hub's listener (rustls with the `ring` provider, TLS 1.2 and 1.3),
//! configured from a PEM certificate chain and private key.

use std::{path::PathBuf, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::TlsAcceptor;

use crate::HubError;

/// Where the hub's certificate and key are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Builds the TLS acceptor, with errors that name the file at fault.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, HubError> {
    let bad = |what: &str, path: &PathBuf, e: &dyn std::fmt::Display| {
        HubError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad("reading certificate", &files.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("parsing certificate", &files.cert, &e))?;
    if certs.is_empty() {
        return Err(bad("no certificate in", &files.cert, &"empty PEM"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| bad("reading private key", &files.key, &e))?;
    // The process-default provider, which rustls takes from its crate features: `ring`, the
    // only one this workspace enables (see the root Cargo.toml). Naming
    // `rustls::crypto::ring::default_provider()` here instead is deprecated since rustls
    // 0.23.48 (ring has no post-quantum key exchange).
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| HubError::Tls(format!("certificate and key do not fit together: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
