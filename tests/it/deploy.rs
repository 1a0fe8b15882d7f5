//! The example configs and the Kubernetes manifests: every one is valid, as `serin check`
//! and a Kubernetes schema validator (kubernetes-validate, schemas bundled) see it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::process::SERIN;
use crate::common::TempDir;

fn workspace(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn check(config: &Path) -> (bool, String) {
    let out = Command::new(SERIN)
        .arg("check")
        .arg(config)
        .output()
        .expect("run serin check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_sidecar_example_is_valid_and_the_configmap_carries_it() {
    let (ok, out) = check(&workspace("examples/sidecar.yaml"));
    assert!(ok, "{out}");
    let example = std::fs::read_to_string(workspace("examples/sidecar.yaml")).expect("example");
    let configmap =
        std::fs::read_to_string(workspace("deploy/kubernetes/configmap.yaml")).expect("configmap");
    let embedded: String = configmap
        .split_once("  serin.yaml: |\n")
        .expect("the ConfigMap has serin.yaml")
        .1
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        embedded, example,
        "the ConfigMap must carry examples/sidecar.yaml"
    );
}

#[test]
fn the_ingress_example_is_valid_with_its_certificates_in_place() {
    // The example names certs/ beside it; make them in a copy's directory.
    let dir = TempDir::new("ingress");
    std::fs::create_dir_all(dir.0.join("certs")).expect("certs dir");
    for (file, names) in [
        ("shop", vec!["shop.example.com".to_string()]),
        (
            "api",
            vec![
                "api.example.com".to_string(),
                "*.api.example.com".to_string(),
            ],
        ),
    ] {
        let cert = rcgen::generate_simple_self_signed(names).expect("certificate");
        std::fs::write(dir.0.join(format!("certs/{file}.pem")), cert.cert.pem()).expect("cert");
        std::fs::write(
            dir.0.join(format!("certs/{file}.key")),
            cert.signing_key.serialize_pem(),
        )
        .expect("key");
    }
    let config = dir.0.join("ingress.yaml");
    std::fs::copy(workspace("examples/ingress.yaml"), &config).expect("copy the example");
    let (ok, out) = check(&config);
    assert!(ok, "{out}");
    // Without them, the check names both files it could not read.
    let (ok, out) = check(&workspace("examples/ingress.yaml"));
    assert!(!ok);
    assert!(
        out.contains("certs/shop.pem") && out.contains("certs/api.key"),
        "{out}"
    );
}

#[test]
fn the_kubernetes_manifests_pass_a_strict_schema_check() {
    let dir = workspace("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    // As a module, so that it runs wherever pip put its scripts.
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(&files)
        .output()
        .unwrap_or_else(|err| panic!("cannot run python3 ({err})"));
    if String::from_utf8_lossy(&out.stderr).contains("No module named kubernetes_validate") {
        panic!("kubernetes-validate is missing: install it with `python3 -m pip install kubernetes-validate` (scripts/test does)");
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches(" passed for resource ").count(),
        files.len(),
        "{text}"
    );
}
