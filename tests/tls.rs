//! TLS on a listener: the certificate chosen by SNI, ALPN h2, X-Forwarded-Proto.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `names`, written as PEM files in `dir`.
fn certificate(dir: &std::path::Path, file: &str, names: &[&str]) -> CertificateDer<'static> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
    std::fs::write(dir.join(format!("{file}.pem")), cert.cert.pem()).expect("write cert");
    std::fs::write(
        dir.join(format!("{file}.key")),
        cert.signing_key.serialize_pem(),
    )
    .expect("write key");
    cert.cert.der().clone()
}

async fn handshake(
    addr: std::net::SocketAddr,
    trusted: &[CertificateDer<'static>],
    name: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.clone()).expect("trust the certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from(name.to_string()).expect("server name"),
            tcp,
        )
        .await
        .expect("TLS handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_alpn_h2_is_served() {
    let backend = Backend::start("stable").await;
    let dir = TempDir::new("tls");
    let shop = certificate(&dir.0, "shop", &["shop.example"]);
    let api = certificate(&dir.0, "api", &["api.example", "*.api.example"]);
    let yaml = stable_only_config(backend.addr).await
    .replace(
        "{ name: web, listen: 127.0.0.1:0 }",
        &format!(
            "{{ name: web, listen: 127.0.0.1:0, tls: {{ certificates: [ {{ cert: {d}/shop.pem, key: {d}/shop.key }}, {{ cert: {d}/api.pem, key: {d}/api.key }} ] }} }}",
            d = dir.0.display()
        ),
    );
    let serin = Serin::start(&yaml).await;
    let both = [shop.clone(), api.clone()];

    // Each name gets its own certificate; a wildcard covers one label.
    for (name, expected) in [
        ("shop.example", &shop),
        ("api.example", &api),
        ("v2.api.example", &api),
    ] {
        let tls = handshake(serin.addr, &both, name, &[b"http/1.1"]).await;
        let presented = tls.get_ref().1.peer_certificates().expect("a certificate");
        assert_eq!(&presented[0], expected, "{name}");
    }

    // HTTP/1.1 over TLS: the backend is told the client used https.
    let tls = handshake(
        serin.addr,
        std::slice::from_ref(&shop),
        "shop.example",
        &[b"http/1.1"],
    )
    .await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http/1.1");
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "shop.example")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(backend.last_seen().headers["x-forwarded-proto"], "https");

    // ALPN h2.
    let tls = handshake(
        serin.addr,
        std::slice::from_ref(&api),
        "api.example",
        &[b"h2", b"http/1.1"],
    )
    .await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let req = http::Request::get("https://api.example/")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"stable");
    serin.shutdown(Duration::from_secs(5)).await;
}
