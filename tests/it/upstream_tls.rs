//! TLS to upstreams: a version with `tls` reaches a backend served over rustls with a
//! certificate of a test CA; verification, ALPN and mutual TLS as a user sees them.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::process::SerinProcess;
use crate::common::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

const BODY: &str = "answered over TLS by the backend\n";

/// A test CA and certificates it signs, written as PEM files into `dir`.
struct TestCa {
    dir: TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let dir = TempDir::new("uptls");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.0.join("ca.pem"), cert.pem()).expect("write CA");
        TestCa {
            dir,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` signed by the CA, as `{file}.pem` and `{file}.key`.
    fn issue(&self, file: &str, names: &[&str]) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("sign");
        std::fs::write(self.path(&format!("{file}.pem")), cert.pem()).expect("write cert");
        std::fs::write(self.path(&format!("{file}.key")), key.serialize_pem()).expect("write key");
    }

    fn path(&self, file: &str) -> String {
        self.dir.0.join(file).display().to_string()
    }
}

/// A backend served over TLS with the CA's `server` certificate; it answers [`BODY`]
/// and counts the requests it answered, with their HTTP version.
struct TlsBackend {
    addr: std::net::SocketAddr,
    answered: Arc<AtomicUsize>,
    versions: Arc<Mutex<Vec<http::Version>>>,
}

impl TlsBackend {
    /// `alpn`: the protocols it offers; `client_ca`: require a client certificate of it.
    async fn start(ca: &TestCa, alpn: &[&[u8]], client_ca: bool) -> TlsBackend {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(ca.path("server.pem"))
                .expect("read cert")
                .collect::<Result<_, _>>()
                .expect("parse cert");
        let key = PrivateKeyDer::from_pem_file(ca.path("server.key")).expect("read key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = if client_ca {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca.path("ca.pem")).expect("read CA") {
                roots.add(cert.expect("parse CA")).expect("trust CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, key).expect("server config");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answered = Arc::new(AtomicUsize::new(0));
        let versions = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (answered.clone(), versions.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, count, seen) = (acceptor.clone(), count.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (count, seen) = (count.clone(), seen.clone());
                        async move {
                            seen.lock().unwrap().push(req.version());
                            count.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(BODY))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsBackend {
            addr,
            answered,
            versions,
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

/// serin's config with one version `stable` at `backend`, with `version_extra` (e.g.
/// `tls: {...}`) added to it.
fn config(backend: std::net::SocketAddr, version_extra: &str) -> String {
    one_version(backend, &format!(", {version_extra}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_with_ca_reaches_its_backend_over_tls() {
    let ca = TestCa::new();
    ca.issue("server", &["api.internal", "127.0.0.1"]);
    let backend = TlsBackend::start(&ca, &[b"http/1.1"], false).await;

    // The endpoint's IP is verified against the certificate's IP SAN.
    let by_ip = Serin::start(&config(
        backend.addr,
        &format!("tls: {{ ca: {} }}", ca.path("ca.pem")),
    ))
    .await;
    let got = get(&client(), &by_ip.url("/hello"), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, BODY);
    assert_eq!(backend.answered(), 1);

    // And `server_name` is the name verified.
    let by_name = Serin::start(&config(
        backend.addr,
        &format!(
            "tls: {{ ca: {}, server_name: api.internal }}",
            ca.path("ca.pem")
        ),
    ))
    .await;
    let got = get(&client(), &by_name.url("/hello"), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, BODY);
    assert_eq!(backend.answered(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_certificate_does_not_cover_is_a_502_and_reaches_nothing() {
    let ca = TestCa::new();
    ca.issue("server", &["api.internal"]);
    let backend = TlsBackend::start(&ca, &[b"http/1.1"], false).await;
    let serin = Serin::start(&config(
        backend.addr,
        &format!(
            "tls: {{ ca: {}, server_name: other.internal }}",
            ca.path("ca.pem")
        ),
    ))
    .await;
    let got = get(&client(), &serin.url("/hello"), &[]).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        got.body,
        "502 Bad Gateway: cannot connect to version \"stable\" of service \"api\"\n"
    );
    assert_eq!(backend.answered(), 0);

    // Without `ca`, the bundled roots do not know the test CA either.
    let serin = Serin::start(&config(backend.addr, "tls: { server_name: api.internal }")).await;
    let got = get(&client(), &serin.url("/hello"), &[]).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(backend.answered(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_connects_and_is_warned_about() {
    let ca = TestCa::new();
    ca.issue("server", &["api.internal"]);
    let backend = TlsBackend::start(&ca, &[b"http/1.1"], false).await;
    let yaml = config(
        backend.addr,
        "tls: { server_name: nobody.example, insecure_skip_verify: true }",
    );
    let serin = Serin::start(&yaml).await;
    let got = get(&client(), &serin.url("/hello"), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, BODY);
    assert_eq!(backend.answered(), 1);

    let file = ca.dir.0.join("serin.yaml");
    std::fs::write(&file, &yaml).expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_serin"))
        .arg("check")
        .arg(&file)
        .output()
        .expect("run serin check");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\nwarning: services[0].versions[0].tls.insecure_skip_verify: version \"stable\" of service \"api\" does not verify its endpoints' certificates at all, so anyone on the network path can impersonate them; give `ca` (and `server_name`) instead\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_auto_speaks_what_the_backend_chose() {
    let ca = TestCa::new();
    ca.issue("server", &["127.0.0.1"]);
    let tls = format!("protocol: auto, tls: {{ ca: {} }}", ca.path("ca.pem"));

    // A backend offering h2 is spoken to over HTTP/2, though the client spoke HTTP/1.1.
    let h2 = TlsBackend::start(&ca, &[b"h2", b"http/1.1"], false).await;
    let serin = Serin::start(&config(h2.addr, &tls)).await;
    for _ in 0..3 {
        let got = get(&client(), &serin.url("/hello"), &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, BODY);
    }
    assert_eq!(*h2.versions.lock().unwrap(), vec![http::Version::HTTP_2; 3]);

    // One offering only http/1.1 gets HTTP/1.1, though the client spoke HTTP/2.
    let h1 = TlsBackend::start(&ca, &[b"http/1.1"], false).await;
    let serin = Serin::start(&config(h1.addr, &tls)).await;
    for _ in 0..3 {
        let got = get(&h2_client(), &serin.url("/hello"), &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, BODY);
    }
    assert_eq!(
        *h1.versions.lock().unwrap(),
        vec![http::Version::HTTP_11; 3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let ca = TestCa::new();
    ca.issue("server", &["127.0.0.1"]);
    ca.issue("client", &["serin.internal"]);
    let backend = TlsBackend::start(&ca, &[b"http/1.1"], true).await;

    let without = Serin::start(&config(
        backend.addr,
        &format!("tls: {{ ca: {} }}", ca.path("ca.pem")),
    ))
    .await;
    let got = get(&client(), &without.url("/hello"), &[]).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(backend.answered(), 0);

    let with = Serin::start(&config(
        backend.addr,
        &format!(
            "tls: {{ ca: {}, cert: {}, key: {} }}",
            ca.path("ca.pem"),
            ca.path("client.pem"),
            ca.path("client.key")
        ),
    ))
    .await;
    let got = get(&client(), &with.url("/hello"), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, BODY);
    assert_eq!(backend.answered(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_go_over_tls() {
    let ca = TestCa::new();
    ca.issue("server", &["127.0.0.1"]);
    let backend = TlsBackend::start(&ca, &[b"http/1.1"], false).await;
    let serin = Serin::start(&config(
        backend.addr,
        &format!(
            "tls: {{ ca: {} }}, health: {{ path: /healthz, interval: 100ms, timeout: 90ms }}",
            ca.path("ca.pem")
        ),
    ))
    .await;
    // Checks that pass over TLS reach the backend as requests.
    eventually(
        std::time::Duration::from_secs(10),
        "health checks over TLS",
        || {
            let answered = backend.answered();
            async move { answered >= 2 }
        },
    )
    .await;
    let got = get(&client(), &serin.url("/hello"), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_bundle_replaced_on_disk_is_trusted_without_a_signal() {
    // The backend's certificate is of a CA the config's bundle does not hold yet.
    let ca = TestCa::new();
    ca.issue("server", &["127.0.0.1"]);
    let other = TestCa::new();
    let backend = TlsBackend::start(&ca, &[b"http/1.1"], false).await;
    let dir = TempDir::new("uptls-rotate");
    let trust = dir.0.join("trust");
    std::fs::create_dir(&trust).expect("create the trust directory");
    std::fs::copy(other.path("ca.pem"), trust.join("ca.pem")).expect("write the bundle");
    let path = dir.0.join("serin.yaml");
    std::fs::write(&path, config(backend.addr, "tls: { ca: trust/ca.pem }"))
        .expect("write the config");
    let serin = SerinProcess::start(&path, 1, &[], &[]);
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(backend.answered(), 0);

    // The bundle is replaced the way a secret mount or an editor does it: a rename.
    std::fs::copy(ca.path("ca.pem"), trust.join("ca.pem.new")).expect("write the new bundle");
    std::fs::rename(trust.join("ca.pem.new"), trust.join("ca.pem")).expect("rename it over");
    eventually(
        std::time::Duration::from_secs(10),
        "the new CA bundle is trusted",
        || async { get(&client(), &serin.url("/"), &[]).await.status == StatusCode::OK },
    )
    .await;
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!(got.body, BODY);
}
