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
    let embedded = embedded_config("deploy/kubernetes/configmap.yaml");
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

/// Runs kubernetes-validate (strict) on every manifest of `dir`: each passes, one
/// resource a file.
fn strict_schema_check(dir: &str) {
    let dir = workspace(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
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

/// The config a ConfigMap carries under `serin.yaml`, unindented.
fn embedded_config(configmap: &str) -> String {
    std::fs::read_to_string(workspace(configmap))
        .expect("configmap")
        .split_once("  serin.yaml: |\n")
        .expect("the ConfigMap has serin.yaml")
        .1
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_kubernetes_manifests_pass_a_strict_schema_check() {
    strict_schema_check("deploy/kubernetes");
}

#[test]
fn the_fleet_ingress_manifests_pass_a_strict_schema_check() {
    strict_schema_check("deploy/kubernetes/fleet");
    let example = std::fs::read_to_string(workspace("examples/fleet.yaml")).expect("example");
    assert_eq!(
        embedded_config("deploy/kubernetes/fleet/configmap.yaml"),
        example,
        "the fleet ConfigMap must carry examples/fleet.yaml"
    );
}

/// The value of `key: value` on the line of `text` that has it first (quotes removed).
fn value_of<'t>(text: &'t str, key: &str) -> &'t str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in\n{text}"))
        .trim()
        .trim_matches('"')
}

/// The fleet ingress as Kubernetes runs it: 3 replicas; `instance` from the pod's name
/// and etcd's endpoint and password from the Secret, which is mounted where the config
/// reads the password; the config valid with those values in place (fleet builds).
#[test]
fn the_fleet_ingress_takes_its_name_from_the_pod_and_etcd_from_the_secret() {
    let read = |p: &str| std::fs::read_to_string(workspace(p)).expect(p);
    let deployment = read("deploy/kubernetes/fleet/deployment.yaml");
    let secret = read("deploy/kubernetes/fleet/secret.yaml");
    let example = read("examples/fleet.yaml");
    assert_eq!(value_of(&deployment, "replicas:"), "3");
    // The downward API and the Secret, into the variables the config names.
    assert!(example.contains("instance: ${POD_NAME}"), "{example}");
    assert!(
        example.contains(r#"endpoints: ["${ETCD_ENDPOINT}"]"#),
        "{example}"
    );
    let pod_name = deployment
        .split_once("- name: POD_NAME")
        .expect("POD_NAME is set")
        .1;
    assert_eq!(value_of(pod_name, "fieldPath:"), "metadata.name");
    let endpoint = deployment
        .split_once("- name: ETCD_ENDPOINT")
        .expect("ETCD_ENDPOINT is set")
        .1;
    assert_eq!(value_of(endpoint, "name:"), value_of(&secret, "name:"));
    assert_eq!(value_of(endpoint, "key:"), "endpoint");
    // The password file is the Secret's `password`, mounted where the config reads it.
    let password_file = value_of(&example, "password_file:")
        .split_whitespace()
        .next()
        .expect("a path");
    let (dir, file) = password_file.rsplit_once('/').expect("an absolute path");
    let mount = deployment
        .split_once("- name: etcd-password\n              mountPath:")
        .expect("the Secret is mounted")
        .1;
    assert_eq!(mount.lines().next().map(str::trim), Some(dir));
    assert!(
        deployment.contains(&format!("- {{ key: password, path: {file} }}")),
        "{deployment}"
    );
    assert!(deployment.contains(r#"command: ["serin", "ready"]"#));

    // The config is valid with the Secret's values and a pod's name in place.
    let tmp = TempDir::new("fleet-ingress");
    let password = tmp.0.join("password");
    std::fs::write(&password, value_of(&secret, "password:")).expect("password");
    let config = tmp.0.join("serin.yaml");
    std::fs::write(
        &config,
        example.replace(password_file, &password.display().to_string()),
    )
    .expect("config");
    let out = Command::new(SERIN)
        .arg("check")
        .arg(&config)
        .env("POD_NAME", "shop-ingress-7d9f8c6b5-x2x7q")
        .env("ETCD_ENDPOINT", value_of(&secret, "endpoint:"))
        .output()
        .expect("run serin check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if cfg!(feature = "fleet") {
        assert!(out.status.success(), "{text}");
        assert_eq!(text, "ok\n");
    } else {
        assert!(text.contains("built without fleet mode"), "{text}");
    }
}
