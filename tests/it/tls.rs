//! TLS on a listener: the certificate chosen by SNI, ALPN h2, X-Forwarded-Proto.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::process::SerinProcess;
use crate::common::*;
use bytes::Bytes;
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
    try_handshake(addr, trusted, name, alpn)
        .await
        .expect("TLS handshake")
}

async fn try_handshake(
    addr: std::net::SocketAddr,
    trusted: &[CertificateDer<'static>],
    name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
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
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from(name.to_string()).expect("server name"),
            tcp,
        )
        .await
}

/// An HTTP/1.1 client connection over TLS to `addr` for `name` (trusting `trusted`),
/// and its connection task.
async fn h1_over_tls(
    addr: std::net::SocketAddr,
    trusted: &CertificateDer<'static>,
    name: &str,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let tls = handshake(addr, std::slice::from_ref(trusted), name, &[b"http/1.1"]).await;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http/1.1");
    (sender, tokio::spawn(conn))
}

/// `GET /` for shop.example on `sender`: the status and the body.
async fn get_shop(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) -> (StatusCode, Bytes) {
    let req = http::Request::get("/")
        .header("host", "shop.example")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body)
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
    let (mut sender, _conn) = h1_over_tls(serin.addr, &shop, "shop.example").await;
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

/// The leaf certificate a new connection to `addr` is served for `name`; `None` when the
/// handshake fails (a certificate that `trusted` does not hold).
async fn served(
    addr: std::net::SocketAddr,
    trusted: &[CertificateDer<'static>],
    name: &str,
) -> Option<CertificateDer<'static>> {
    let tls = try_handshake(addr, trusted, name, &[b"http/1.1"])
        .await
        .ok()?;
    Some(
        tls.get_ref()
            .1
            .peer_certificates()?
            .first()?
            .clone()
            .into_owned(),
    )
}

/// Puts `from` in `to`'s place by renaming, as cert-manager and editors do.
fn rename_over(from: &Path, to: &Path) {
    std::fs::rename(from, to).expect("rename into place");
}

async fn config_status(serin: &SerinProcess) -> serde_json::Value {
    let got = get(
        &client(),
        &format!("{}/api/v1/config", serin.admin_url()),
        &[],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    serde_json::from_str(&got.body).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_files_are_served_to_new_connections_and_a_bad_one_changes_nothing() {
    let backend = Backend::start("stable").await;
    let dir = TempDir::new("tls-rotate");
    // The certificates live beside the config, in a directory of their own.
    let certs = dir.0.join("certs");
    std::fs::create_dir(&certs).expect("create the certs directory");
    let old = certificate(&certs, "site", &["shop.example"]);
    let yaml = stable_only_config(backend.addr).await.replace(
        "{ name: web, listen: 127.0.0.1:0 }",
        "{ name: web, listen: 127.0.0.1:0, tls: { certificates: [ { cert: certs/site.pem, key: certs/site.key } ] } }",
    );
    let config = dir.0.join("serin.yaml");
    std::fs::write(&config, yaml).expect("write the config");
    let mut serin = SerinProcess::start(&config, 1, &[], &[]);
    assert_eq!(
        served(serin.web, std::slice::from_ref(&old), "shop.example").await,
        Some(old.clone())
    );

    // A connection opened before the rotation.
    let (mut open, _conn) = h1_over_tls(serin.web, &old, "shop.example").await;
    let request = || {
        http::Request::get("/")
            .header("host", "shop.example")
            .body(Empty::<Bytes>::new())
            .expect("request")
    };
    let response = open.send_request(request()).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.expect("body");

    // Rotated: new files written beside the old ones, then renamed over them.
    let new = certificate(&certs, "next", &["shop.example"]);
    assert_ne!(new, old);
    rename_over(&certs.join("next.key"), &certs.join("site.key"));
    rename_over(&certs.join("next.pem"), &certs.join("site.pem"));
    let both = [old.clone(), new.clone()];
    eventually(
        Duration::from_secs(10),
        "new connections get the rotated certificate",
        || async { served(serin.web, &both, "shop.example").await.as_ref() == Some(&new) },
    )
    .await;
    let status = config_status(&serin).await;
    assert_eq!(status["last_reload"]["ok"], true, "{status}");
    assert_eq!(status["last_reload"]["trigger"], "file", "{status}");
    assert_eq!(status["reloads"]["failure"], 0, "{status}");

    // The connection opened before keeps working.
    assert_eq!(
        get_shop(&mut open).await,
        (StatusCode::OK, Bytes::from_static(b"stable"))
    );

    // A broken certificate: the reload fails, says which file, and the rotated
    // certificate keeps being served.
    let garbage = certs.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write garbage");
    rename_over(&garbage, &certs.join("site.pem"));
    eventually(
        Duration::from_secs(10),
        "the reload of the broken certificate fails",
        || async { config_status(&serin).await["reloads"]["failure"] != 0 },
    )
    .await;
    let status = config_status(&serin).await;
    assert_eq!(status["reloads"]["failure"], 1, "{status}");
    let site = certs.join("site.pem").display().to_string();
    assert_eq!(status["last_reload"]["ok"], false, "{status}");
    assert_eq!(status["last_reload"]["trigger"], "file", "{status}");
    let errors = status["last_reload"]["errors"].to_string();
    assert!(errors.contains(&site), "{errors}");
    assert!(errors.contains("holds no PEM certificate"), "{errors}");
    serin.wait_for("the failure logged with the file", |line| {
        line["message"]
            .as_str()
            .is_some_and(|m| m.contains(&site) && m.contains("holds no PEM certificate"))
    });
    assert_eq!(
        served(serin.web, &both, "shop.example").await,
        Some(new.clone())
    );
    let response = open.send_request(request()).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    // Reading the files is no change: the one failed reload was the last.
    let last = config_status(&serin).await;
    assert_eq!(last["reloads"], status["reloads"], "{last}");
    assert_eq!(
        last["last_reload"]["at"], status["last_reload"]["at"],
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tls_connection_is_parked_and_serves_its_next_request() {
    let backend = Backend::start("stable").await;
    let dir = TempDir::new("tls-park");
    let shop = certificate(&dir.0, "shop", &["shop.example"]);
    let yaml = stable_only_config(backend.addr).await.replace(
        "{ name: web, listen: 127.0.0.1:0 }",
        &format!(
            "{{ name: web, listen: 127.0.0.1:0, tls: {{ certificates: [ {{ cert: {d}/shop.pem, key: {d}/shop.key }} ] }} }}",
            d = dir.0.display()
        ),
    );
    let serin = Serin::start(&yaml).await;
    let (mut sender, conn) = h1_over_tls(serin.addr, &shop, "shop.example").await;
    let parked = || {
        serin
            .dataplane
            .parked_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for _ in 0..2 {
        assert_eq!(
            get_shop(&mut sender).await,
            (StatusCode::OK, Bytes::from_static(b"stable"))
        );
        eventually(Duration::from_secs(5), "the connection parked", || async {
            parked() == 1
        })
        .await;
    }
    assert!(!conn.is_finished(), "the client's connection ended");
    assert_eq!(backend.hits(), 2);
    serin.shutdown(Duration::from_secs(5)).await;
}

/// A client config trusting `trusted`, offering HTTP/1.1, with its own session cache.
fn resuming_client(trusted: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
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
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A new TLS connection with `config`, one `GET /` on it (which also takes the
/// server's session tickets in), and how its handshake went.
async fn connect_and_get(
    addr: std::net::SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> (rustls::HandshakeKind, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = TlsConnector::from(config.clone())
        .connect(ServerName::try_from("shop.example").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let kind = tls.get_ref().1.handshake_kind().expect("handshake done");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http/1.1");
    tokio::spawn(conn);
    let (status, body) = get_shop(&mut sender).await;
    assert_eq!(status, StatusCode::OK);
    (kind, String::from_utf8_lossy(&body).into_owned())
}

/// A weight change (a rollout's promotion, weights set by hand) publishes new weights
/// and leaves the listener's TLS acceptor alone, so its session cache too: clients
/// resume their sessions across it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_resumes_its_session_across_weight_changes() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let dir = TempDir::new("tls-resume");
    let cert = certificate(&dir.0, "shop", &["shop.example"]);
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 50, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 1h\n        window: 1h\n        rules:\n          - error_rate: { max: 1% }\n",
    )
    .replace(
        "{ name: web, listen: 127.0.0.1:0 }",
        &format!(
            "{{ name: web, listen: 127.0.0.1:0, tls: {{ certificates: [ {{ cert: {d}/shop.pem, key: {d}/shop.key }} ] }} }}",
            d = dir.0.display()
        ),
    );
    let c = Controlled::start(&yaml).await;
    let config = resuming_client(&[cert]);
    let (first, _) = connect_and_get(c.serin.addr, &config).await;
    assert_eq!(first, rustls::HandshakeKind::Full);

    // The rollout moves the canary to 100: every request goes to it, and the client
    // resumes its session.
    c.control.command(
        "api",
        serin_judge::rollout::Event::Promote,
        serin_control::runner::now_ms(),
    );
    assert_eq!(c.canary_weight(), 100);
    for _ in 0..3 {
        let (kind, body) = connect_and_get(c.serin.addr, &config).await;
        assert_eq!(
            (kind, body.as_str()),
            (rustls::HandshakeKind::Resumed, "canary")
        );
    }

    // Weights set by hand: the same.
    c.control
        .set_weights_manually(
            "api",
            &[("stable", 100), ("canary", 0)],
            serin_control::runner::now_ms(),
        )
        .expect("valid weights");
    let (kind, body) = connect_and_get(c.serin.addr, &config).await;
    assert_eq!(
        (kind, body.as_str()),
        (rustls::HandshakeKind::Resumed, "stable")
    );
    c.stop().await;
}

/// A reload that leaves a listener's TLS settings as they were keeps its acceptor and
/// its session cache; one that changes its certificate starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_tls_sessions_unless_the_listener_tls_changed() {
    let backend = Backend::start("stable").await;
    let dir = TempDir::new("tls-reload-resume");
    let cert = certificate(&dir.0, "shop", &["shop.example"]);
    let next = certificate(&dir.0, "next", &["shop.example"]);
    let yaml = stable_only_config(backend.addr).await.replace(
        "{ name: web, listen: 127.0.0.1:0 }",
        &format!(
            "{{ name: web, listen: 127.0.0.1:0, tls: {{ certificates: [ {{ cert: {d}/shop.pem, key: {d}/shop.key }} ] }} }}",
            d = dir.0.display()
        ),
    );
    let serin = Serin::start(&yaml).await;
    // One client, trusting both certificates, with one session cache.
    let config = resuming_client(&[cert, next]);
    let (first, _) = connect_and_get(serin.addr, &config).await;
    assert_eq!(first, rustls::HandshakeKind::Full);

    // Another limit, the same TLS: the session resumes.
    let reloaded = yaml.replace("services:", "limits: { idle_timeout: 61s }\nservices:");
    let snapshot = serin_config::parse_str(&reloaded, "test.yaml").expect("config");
    serin.dataplane.apply(snapshot).expect("reload");
    let (kind, body) = connect_and_get(serin.addr, &config).await;
    assert_eq!(
        (kind, body.as_str()),
        (rustls::HandshakeKind::Resumed, "stable")
    );

    // Another certificate: a new acceptor, whose cache knows no session.
    let renewed = reloaded
        .replace("/shop.pem", "/next.pem")
        .replace("/shop.key", "/next.key");
    let snapshot = serin_config::parse_str(&renewed, "test.yaml").expect("config");
    serin.dataplane.apply(snapshot).expect("reload");
    let (kind, _) = connect_and_get(serin.addr, &config).await;
    assert_eq!(kind, rustls::HandshakeKind::Full);
    serin.shutdown(Duration::from_secs(5)).await;
}
