//! serin's TLS defaults checked by sslyze against Mozilla's server-side TLS profiles:
//! "intermediate" for the default listener, "modern" (TLS 1.3 only) for
//! `min_version: "1.3"`.
//!
//! sslyze is a Python tool (PyPI `sslyze`); `scripts/test` installs it. Its compliance check
//! covers protocol versions, cipher suites (TLS 1.2 and 1.3), key exchange groups and
//! their sizes, the certificate (key type and curve, signature algorithm, lifetime,
//! path validation) and TLS vulnerabilities (compression, renegotiation, extended master
//! secret, fallback SCSV, Heartbleed, CCS injection, ROBOT).
//!
//! What it does not check, here or anywhere: OCSP stapling and the HSTS header (sslyze
//! leaves both out of its Mozilla check; serin staples nothing and HSTS is for the
//! application behind it to send). Path validation passes because the test's own CA is
//! given to sslyze with `--certinfo_ca_file`: that checks the chain serin serves is
//! complete and matches the name, not that a public CA would trust it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::common::*;

/// A CA and a leaf it signed for `localhost` (ECDSA P-256 with SHA-256, valid 90 days,
/// as Mozilla recommends), written as `ca.pem`, `leaf.pem` (the chain, leaf first) and
/// `leaf.key` in `dir`.
fn certificates(dir: &Path) {
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 60 * 60);
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "serin test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params.not_before = (now - day).into();
    ca_params.not_after = (now + 90 * day).into();
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    // Path validation (RFC 5280 as sslyze applies it) wants the issuer's key named.
    params.use_authority_key_identifier_extension = true;
    params.not_before = (now - day).into();
    params.not_after = (now + 89 * day).into();
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = params.signed_by(&key, &ca).expect("leaf certificate");

    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
    std::fs::write(dir.join("leaf.pem"), format!("{}{}", leaf.pem(), ca.pem()))
        .expect("write chain");
    std::fs::write(dir.join("leaf.key"), key.serialize_pem()).expect("write key");
}

/// serin with one TLS listener serving `leaf.pem` from `dir`, with `extra` added to
/// its `tls` settings.
async fn serin_with_tls(dir: &Path, extra: &str) -> (Backend, Serin) {
    let backend = Backend::start("stable").await;
    let yaml = stable_only_config(backend.addr).await.replace(
        "{ name: web, listen: 127.0.0.1:0 }",
        &format!(
            "{{ name: web, listen: 127.0.0.1:0, tls: {{ certificates: [ {{ cert: {d}/leaf.pem, key: {d}/leaf.key }} ]{extra} }} }}",
            d = dir.display()
        ),
    );
    let serin = Serin::start(&yaml).await;
    (backend, serin)
}

/// What sslyze reported about one server.
struct Scan {
    /// Its exit status and console report, for messages.
    success: bool,
    report: String,
    /// Its JSON results for the server.
    result: serde_json::Value,
}

impl Scan {
    /// The names of the cipher suites the server accepted for a protocol (sslyze's
    /// field: `tls_1_2_cipher_suites`, ...).
    fn accepted(&self, protocol: &str) -> BTreeSet<String> {
        let field = &self.result["scan_result"][protocol];
        assert_eq!(field["status"], "COMPLETED", "{protocol}: {field}");
        field["result"]["accepted_cipher_suites"]
            .as_array()
            .unwrap_or_else(|| panic!("{protocol}: no accepted_cipher_suites in {field}"))
            .iter()
            .map(|s| {
                s["cipher_suite"]["name"]
                    .as_str()
                    .expect("name")
                    .to_string()
            })
            .collect()
    }

    /// The key exchange groups the server accepted.
    fn groups(&self) -> BTreeSet<String> {
        let field = &self.result["scan_result"]["elliptic_curves"];
        assert_eq!(field["status"], "COMPLETED", "elliptic_curves: {field}");
        field["result"]["supported_curves"]
            .as_array()
            .unwrap_or_else(|| panic!("no supported_curves in {field}"))
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_string())
            .collect()
    }
}

/// Runs sslyze against serin at `port` as `localhost`, checking it against Mozilla's
/// `profile`, trusting `dir/ca.pem`.
async fn sslyze(dir: &Path, port: u16, profile: &str) -> Scan {
    let json = dir.join(format!("sslyze-{profile}.json"));
    let args = vec![
        format!("--mozilla_config={profile}"),
        format!("--certinfo_ca_file={}", dir.join("ca.pem").display()),
        // Written to a file: with `--json_out=-` sslyze skips the compliance check.
        format!("--json_out={}", json.display()),
        // The name the certificate is for, at the address serin listens on.
        format!("localhost:{port}{{127.0.0.1}}"),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new("sslyze").args(&args).output())
        .await
        .expect("sslyze thread");
    let output = match output {
        Ok(output) => output,
        Err(e) => panic!(
            "cannot run sslyze ({e}): install it as scripts/test does \
             (python3 -m pip install sslyze; its script goes to ~/.local/bin or the \
             Python's bin directory, which must be on PATH)"
        ),
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("sslyze wrote no {}: {e}\n{report}", json.display()));
    let mut all: serde_json::Value = serde_json::from_str(&text).expect("sslyze JSON");
    let result = all["server_scan_results"][0].take();
    assert_eq!(
        result["scan_status"], "COMPLETED",
        "sslyze could not scan serin:\n{report}"
    );
    Scan {
        success: output.status.success(),
        report,
        result,
    }
}

/// rustls's TLS 1.3 suites: all three that both profiles allow.
const TLS13_SUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// X25519, P-256 and P-384, as both profiles ask (sslyze's names).
const GROUPS: [&str; 3] = ["X25519", "secp256r1", "secp384r1"];

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_listener_meets_mozilla_intermediate() {
    let dir = TempDir::new("tls-profile");
    certificates(&dir.0);
    let (_backend, serin) = serin_with_tls(&dir.0, "").await;

    let scan = sslyze(&dir.0, serin.addr.port(), "intermediate").await;
    assert!(
        scan.success && scan.report.contains("OK - Compliant."),
        "sslyze finds serin not compliant with Mozilla's intermediate profile:\n{}",
        scan.report
    );

    // What a client can negotiate: TLS 1.2 and 1.3 only, ECDHE with AEAD ciphers only.
    for old in [
        "ssl_2_0_cipher_suites",
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ] {
        assert_eq!(scan.accepted(old), BTreeSet::new(), "{old}");
    }
    assert_eq!(
        scan.accepted("tls_1_2_cipher_suites"),
        names(&[
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ])
    );
    assert_eq!(scan.accepted("tls_1_3_cipher_suites"), names(&TLS13_SUITES));
    assert_eq!(scan.groups(), names(&GROUPS));
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_drops_tls_1_2_and_meets_mozilla_modern() {
    let dir = TempDir::new("tls-profile-13");
    certificates(&dir.0);
    let (_backend, serin) = serin_with_tls(&dir.0, ", min_version: \"1.3\"").await;

    let scan = sslyze(&dir.0, serin.addr.port(), "modern").await;
    assert!(
        scan.success && scan.report.contains("OK - Compliant."),
        "sslyze finds serin with min_version 1.3 not compliant with Mozilla's modern profile:\n{}",
        scan.report
    );
    assert_eq!(scan.accepted("tls_1_2_cipher_suites"), BTreeSet::new());
    assert_eq!(scan.accepted("tls_1_3_cipher_suites"), names(&TLS13_SUITES));
    assert_eq!(scan.groups(), names(&GROUPS));
    serin.shutdown(Duration::from_secs(5)).await;
}
