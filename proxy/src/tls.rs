//! TLS on listeners (rustls with the ring provider; no OpenSSL).
//!
//! Each TLS listener gets a [`TlsAcceptor`] built with its table: certificates chosen by
//! SNI (exact name, then a `*.` wildcard one label deep, else the first certificate),
//! TLS 1.3 and, unless `min_version: "1.3"`, 1.2 with rustls's default suites (ECDHE
//! with AES-GCM or ChaCha20-Poly1305 only; groups X25519, P-256, P-384: Mozilla's
//! "intermediate" profile, or "modern" with TLS 1.3 only, as `tests/tls_profile.rs`
//! checks with sslyze), and ALPN `h2`/`http/1.1`. A reload builds new acceptors; connections already open
//! keep the certificate they were served.

use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use serin_config::{KeyKind, Tls, TlsVersion};
pub use tokio_rustls::TlsAcceptor;

use crate::error::ProxyError;

/// Picks a certificate by the name the client asked for.
#[derive(Debug)]
struct SniResolver {
    /// Lowercase DNS names (`*.example.com` for wildcards) of each certificate.
    certificates: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl SniResolver {
    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = name.map(str::to_ascii_lowercase) {
            let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
            for wanted in std::iter::once(Some(&name)).chain(std::iter::once(wildcard.as_ref())) {
                let Some(wanted) = wanted else { continue };
                if let Some((_, key)) = self
                    .certificates
                    .iter()
                    .find(|(names, _)| names.iter().any(|n| n == wanted))
                {
                    return Some(key.clone());
                }
            }
        }
        self.certificates.first().map(|(_, key)| key.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// The acceptor of a listener's `tls` settings.
pub fn acceptor(listener: &str, tls: &Tls) -> Result<TlsAcceptor, ProxyError> {
    let provider = Arc::new(default_provider());
    let error = |file: &std::path::Path, reason: String| ProxyError::Tls {
        listener: listener.to_string(),
        file: file.display().to_string(),
        reason,
    };
    let mut certificates = Vec::with_capacity(tls.certificates.len());
    for cert in &tls.certificates {
        let chain: Vec<CertificateDer<'static>> = cert
            .chain
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect();
        let key: PrivateKeyDer<'static> = match cert.key_kind {
            KeyKind::Pkcs8 => PrivatePkcs8KeyDer::from(cert.key.clone()).into(),
            KeyKind::Pkcs1 => PrivatePkcs1KeyDer::from(cert.key.clone()).into(),
            KeyKind::Sec1 => PrivateSec1KeyDer::from(cert.key.clone()).into(),
        };
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| error(&cert.key_file, format!("the key cannot be used: {e}")))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| {
            error(
                &cert.key_file,
                format!(
                    "the key does not belong to {}: {e}",
                    cert.cert_file.display()
                ),
            )
        })?;
        let leaf = certified
            .end_entity_cert()
            .map_err(|e| error(&cert.cert_file, format!("no leaf certificate: {e}")))?;
        let parsed = webpki::EndEntityCert::try_from(leaf).map_err(|e| {
            error(
                &cert.cert_file,
                format!("the certificate cannot be parsed: {e:?}"),
            )
        })?;
        let names: Vec<String> = parsed
            .valid_dns_names()
            .map(str::to_ascii_lowercase)
            .collect();
        certificates.push((names, Arc::new(certified)));
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| ProxyError::Tls {
            listener: listener.to_string(),
            file: String::new(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certificates }));
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}
