//! `http.tls`: the server's certificate and key, and with `cacert` mutual
//! TLS, where a client certificate the CA signed names the user (its
//! subject's common name, as zot does). The files are read at start and
//! again on SIGHUP; a reload that fails keeps what was loaded, and
//! connections already open keep the session they negotiated.

use anyhow::{bail, Context, Result};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// What `http.tls` names.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `cacert`: client certificates signed by this CA are accepted.
    pub cacert: Option<PathBuf>,
    /// A client may connect without a certificate (and sign in another
    /// way): true when some other way of signing in is configured.
    pub certificate_optional: bool,
}

/// The acceptor in use; replaced as a whole on reload.
pub struct Tls {
    settings: TlsSettings,
    current: RwLock<TlsAcceptor>,
}

impl Tls {
    pub fn load(settings: &TlsSettings) -> Result<Tls> {
        let config = server_config(settings)?;
        Ok(Tls {
            settings: settings.clone(),
            current: RwLock::new(TlsAcceptor::from(Arc::new(config))),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        match self.current.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Read the files again (SIGHUP). New connections get what was read;
    /// on error nothing changes.
    pub fn reload(&self) -> Result<()> {
        let config = server_config(&self.settings)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        match self.current.write() {
            Ok(mut a) => *a = acceptor,
            Err(poisoned) => *poisoned.into_inner() = acceptor,
        }
        Ok(())
    }
}

fn server_config(s: &TlsSettings) -> Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = read_certs(&s.cert, "http.tls.cert")?;
    let key = PrivateKeyDer::from_pem_file(&s.key)
        .map_err(|e| anyhow::anyhow!("http.tls.key: no private key in {}: {e}", s.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("http.tls: the TLS library refused its default protocol versions")?;
    let builder = match &s.cacert {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca, "http.tls.cacert")? {
                roots.add(c).with_context(|| {
                    format!("http.tls.cacert: {} is not a CA certificate", ca.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if s.certificate_optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .context("http.tls.cacert: cannot verify clients with it")?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("http.tls: the key does not go with the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("{key}: cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{key}: {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("{key}: no certificate in {}", path.display());
    }
    Ok(certs)
}

/// The user a verified client certificate names: its subject's common name.
pub fn certificate_user(der: &[u8]) -> Option<String> {
    use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let cn = x509_cert::der::oid::db::rfc4519::CN;
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == cn)
        .find_map(|atv| {
            atv.value
                .decode_as::<Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_string())
                .or_else(|_| {
                    atv.value
                        .decode_as::<PrintableStringRef<'_>>()
                        .map(|s| s.as_str().to_string())
                })
                .ok()
        })
        .filter(|s| !s.is_empty())
}
