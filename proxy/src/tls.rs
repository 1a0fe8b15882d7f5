//! TLS on listeners (rustls with the ring provider; no OpenSSL).
//!
//! Each TLS listener gets a [`TlsAcceptor`] built with its table: certificates chosen by
//! SNI (exact name, then a `*.` wildcard one label deep, else the first certificate),
//! TLS 1.3 and, unless `min_version: "1.3"`, 1.2 with rustls's default suites (ECDHE
//! with AES-GCM or ChaCha20-Poly1305 only; groups X25519, P-256, P-384: Mozilla's
//! "intermediate" profile, or "modern" with TLS 1.3 only, as `tests/it/tls_profile.rs`
//! checks with sslyze), and ALPN `h2`/`http/1.1`. A reload builds new acceptors; connections already open
//! keep the certificate they were served.
//!
//! A version with `tls` gets an [`UpstreamTls`] built with its table: its roots (the
//! `ca` file's or the bundled webpki ones), its client certificate if any, and one
//! connector per ALPN offer serin needs: `http/1.1` alone (pooled HTTP/1.1, upgrades,
//! health checks) and the one its `protocol` asks for.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::ring::default_provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName, UnixTime,
};
use serin_config::snapshot::UpstreamProtocol;
use serin_config::{Certificate, KeyKind, Tls, TlsVersion};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

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
        let key = private_key(cert);
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

fn private_key(cert: &Certificate) -> PrivateKeyDer<'static> {
    match cert.key_kind {
        KeyKind::Pkcs8 => PrivatePkcs8KeyDer::from(cert.key.clone()).into(),
        KeyKind::Pkcs1 => PrivatePkcs1KeyDer::from(cert.key.clone()).into(),
        KeyKind::Sec1 => PrivateSec1KeyDer::from(cert.key.clone()).into(),
    }
}

/// The TLS connectors of a version with `tls`, built once per table.
#[derive(Clone)]
pub struct UpstreamTls {
    /// ALPN `http/1.1` only: pooled HTTP/1.1, upgrades and health checks.
    pub http1: TlsConnector,
    /// ALPN as `protocol` asks: `h2` (http2), `h2, http/1.1` (auto), `http/1.1` (http1).
    pub main: TlsConnector,
    /// The settings they were built from, to tell whether a reload changed them.
    pub settings: serin_config::UpstreamTls,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The connectors of version `version` of service `service` with `tls`, speaking
/// `protocol`.
pub fn connectors(
    service: &str,
    version: &str,
    tls: &serin_config::UpstreamTls,
    protocol: UpstreamProtocol,
) -> Result<UpstreamTls, ProxyError> {
    let error = |reason: String| ProxyError::UpstreamTls {
        service: service.to_string(),
        version: version.to_string(),
        reason,
    };
    let provider = Arc::new(default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| error(e.to_string()))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider.clone())))
    } else {
        let mut roots = RootCertStore::empty();
        if tls.ca.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            for der in &tls.ca {
                roots.add(CertificateDer::from(der.clone())).map_err(|e| {
                    let file = tls.ca_file.as_deref().unwrap_or(std::path::Path::new("ca"));
                    error(format!("{}: a root cannot be used: {e}", file.display()))
                })?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match &tls.client {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let chain: Vec<CertificateDer<'static>> = cert
                .chain
                .iter()
                .map(|der| CertificateDer::from(der.clone()))
                .collect();
            builder
                .with_client_auth_cert(chain, private_key(cert))
                .map_err(|e| {
                    error(format!(
                        "the client certificate {} and key {} cannot be used together: {e}; give the key that belongs to the certificate",
                        cert.cert_file.display(),
                        cert.key_file.display()
                    ))
                })?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let http1 = TlsConnector::from(Arc::new(config.clone()));
    config.alpn_protocols = match protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(UpstreamTls {
        http1,
        main: TlsConnector::from(Arc::new(config)),
        settings: tls.clone(),
    })
}

/// `insecure_skip_verify`: accepts any certificate for any name (signatures of the
/// handshake are still checked, so the peer holds the key of what it presented).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
