//! Valid configs and what they compile to: the documented example, every default, and
//! how host patterns, path prefixes and endpoints are stored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serin_config::snapshot::{
    DEFAULT_ANALYSIS_INTERVAL, DEFAULT_ANALYSIS_WINDOW, DEFAULT_CONFIDENCE, DEFAULT_MIN_REQUESTS,
    DEFAULT_NOTIFY_RETRIES, DEFAULT_NOTIFY_TIMEOUT, DEFAULT_PROGRESS_DEADLINE, DEFAULT_STATE_DIR,
    MAX_SUCCESS_RULES,
};
use serin_config::{
    load_file, parse_str, AccessLog, AccessLogFormat, AdminToken, Analysis, DecisionKind, Endpoint,
    HostMatch, LoadBalancing, NotifyFormat, OnEtcdLoss, OnFailure, Rollout, Rule, Snapshot, Split,
    Step, Sticky, Telemetry, Timeouts, Tracing,
};

fn workspace(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn load(path: &str) -> Snapshot {
    let path = workspace(path);
    match load_file(&path) {
        Ok(snapshot) => snapshot,
        Err(err) => panic!(
            "{} should be valid:\n{}",
            path.display(),
            err.lines().join("\n")
        ),
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a socket address")
}

fn endpoints(list: &[&str]) -> Vec<Endpoint> {
    list.iter()
        .map(|a| Endpoint {
            authority: a.to_string(),
        })
        .collect()
}

#[test]
fn quickstart_compiles_to_the_documented_snapshot() {
    let s = load("examples/quickstart.yaml");

    assert_eq!(s.admin.listen, addr("127.0.0.1:9901"));

    assert_eq!(s.listeners.len(), 1);
    assert_eq!(s.listeners[0].name, "web");
    assert_eq!(s.listeners[0].listen, addr("127.0.0.1:8080"));

    assert_eq!(s.routes.len(), 1);
    let route = &s.routes[0];
    assert_eq!(route.listener, 0);
    assert_eq!(route.host, HostMatch::Any);
    assert_eq!(route.path_prefix, "/");
    assert_eq!(route.service, 0);

    assert_eq!(s.services.len(), 1);
    let api = &s.services[0];
    assert_eq!(api.name, "api");
    let versions: Vec<(&str, u32, &[Endpoint])> = api
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.weight, v.endpoints.as_slice()))
        .collect();
    assert_eq!(
        versions,
        [
            ("stable", 90, endpoints(&["127.0.0.1:9001"]).as_slice()),
            ("canary", 10, endpoints(&["127.0.0.1:9002"]).as_slice()),
        ]
    );
    assert_eq!(
        api.split,
        Split {
            sticky: Some(Sticky::Header("x-user-id".to_string())),
            force_header: Some("x-serin-version".to_string()),
        }
    );
    assert_eq!(
        api.timeouts,
        Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(15),
        }
    );
    assert_eq!(api.rollout, None);
    assert_eq!(s.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(api.version_index("canary"), Some(1));
    assert_eq!(s.service("api"), Some(api));
    assert_eq!(s.listener("web"), Some(&s.listeners[0]));
}

#[test]
fn what_is_left_out_takes_its_default() {
    let s = load("tests/fixtures/valid/defaults.yaml");
    // No admin: loopback port 9901.
    assert_eq!(s.admin.listen, addr("127.0.0.1:9901"));
    // No match: any host, every path.
    assert_eq!(s.routes[0].host, HostMatch::Any);
    assert_eq!(s.routes[0].path_prefix, "/");
    let api = &s.services[0];
    // One version and no split: it takes all traffic; no sticky, no force header.
    assert_eq!(api.versions.len(), 1);
    assert_eq!(api.versions[0].weight, 100);
    assert_eq!(api.split, Split::default());
    assert_eq!(api.split.sticky, None);
    assert_eq!(api.split.force_header, None);
    // No timeouts: connect 5s, request 15s.
    assert_eq!(
        api.timeouts,
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(15),
        }
    );
    assert_eq!(api.timeouts, Timeouts::default());
    // No telemetry: no tracing, no access log.
    assert_eq!(s.telemetry, Telemetry::default());
    assert_eq!(s.telemetry.tracing, None);
    assert_eq!(s.telemetry.access_log.format, AccessLogFormat::Off);
}

#[test]
fn telemetry_compiles_to_the_tracing_and_access_log_settings() {
    let s = load("tests/fixtures/valid/telemetry.yaml");
    assert_eq!(
        s.telemetry,
        Telemetry {
            tracing: Some(Tracing {
                otlp_endpoint: "http://127.0.0.1:4318".to_string(),
                traces_url: "http://127.0.0.1:4318/v1/traces".to_string(),
                sample_ratio: 0.05,
                service_name: "serin-edge".to_string(),
            }),
            access_log: AccessLog {
                format: AccessLogFormat::Json,
                sample_ratio: 0.5,
            },
        }
    );
}

/// The telemetry keys of `text`, appended to a minimal config.
fn telemetry(text: &str) -> Telemetry {
    let config = format!(
        "listeners: [{{ name: web, listen: 127.0.0.1:8080 }}]\n\
         routes: [{{ listener: web, service: api }}]\n\
         services: [{{ name: api, versions: [{{ name: stable, endpoints: [127.0.0.1:9001] }}] }}]\n\
         telemetry:\n{text}"
    );
    match parse_str(&config, "telemetry") {
        Ok(s) => s.telemetry,
        Err(err) => panic!("{text} should be valid:\n{}", err.lines().join("\n")),
    }
}

/// The `limits` of a config with `text` as its `limits:` mapping.
fn limits(text: &str) -> serin_config::Limits {
    let config = format!(
        "listeners: [{{ name: web, listen: 127.0.0.1:8080 }}]\n\
         routes: [{{ listener: web, service: api }}]\n\
         services: [{{ name: api, versions: [{{ name: stable, endpoints: [127.0.0.1:9001] }}] }}]\n\
         limits: {text}\n"
    );
    match parse_str(&config, "limits") {
        Ok(s) => s.limits,
        Err(err) => panic!("{text} should be valid:\n{}", err.lines().join("\n")),
    }
}

#[test]
fn slow_client_limits_default_and_take_their_bounds() {
    let defaults = limits("{}");
    assert_eq!(defaults.request_buffer, 16 * 1024);
    assert_eq!(defaults.body_read_timeout, Duration::from_secs(10));
    assert_eq!(defaults.send_timeout, Duration::from_secs(60));
    assert_eq!(defaults, serin_config::Limits::default());

    let set = limits("{ request_buffer: 1MiB, body_read_timeout: 1m 30s, send_timeout: 500ms }");
    assert_eq!(set.request_buffer, 1024 * 1024);
    assert_eq!(set.body_read_timeout, Duration::from_secs(90));
    assert_eq!(set.send_timeout, Duration::from_millis(500));
    // 0 turns buffering off; a plain number is bytes.
    assert_eq!(limits("{ request_buffer: 0 }").request_buffer, 0);
    assert_eq!(limits("{ request_buffer: 4096 }").request_buffer, 4096);
}

#[test]
fn tracing_defaults_and_where_spans_are_sent() {
    let url = |endpoint: &str| {
        telemetry(&format!("  tracing: {{ otlp_endpoint: \"{endpoint}\" }}\n"))
            .tracing
            .expect("tracing on")
            .traces_url
    };
    // The base URL gets the traces path of OTLP/HTTP; a full one is kept.
    assert_eq!(
        url("http://127.0.0.1:4318"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        url("http://127.0.0.1:4318/"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        url(" http://otel.internal:4318/v1/traces "),
        "http://otel.internal:4318/v1/traces"
    );
    assert_eq!(url("http://gw:8080/otlp/"), "http://gw:8080/otlp/v1/traces");
    assert_eq!(url("HTTP://collector"), "http://collector/v1/traces");
    assert_eq!(url("http://[::1]:4318"), "http://[::1]:4318/v1/traces");

    let defaults = telemetry("  tracing: { otlp_endpoint: http://127.0.0.1:4318 }\n")
        .tracing
        .expect("tracing on");
    assert_eq!(defaults.sample_ratio, 1.0);
    assert_eq!(defaults.service_name, "serin");
    // 0 and 1 are ratios too, written as integers.
    let never = telemetry("  tracing: { otlp_endpoint: http://c:4318, sample_ratio: 0 }\n");
    assert_eq!(never.tracing.map(|t| t.sample_ratio), Some(0.0));
    // Without an endpoint tracing is off, whatever else is given.
    assert_eq!(
        telemetry("  tracing: { sample_ratio: 0.1, service_name: edge }\n").tracing,
        None
    );
}

#[test]
fn access_log_formats_and_sampling() {
    let log = |text: &str| telemetry(&format!("  access_log: {text}\n")).access_log;
    assert_eq!(
        log("{ format: json }"),
        AccessLog {
            format: AccessLogFormat::Json,
            sample_ratio: 1.0
        }
    );
    assert_eq!(
        log("{ format: text, sample_ratio: 0.25 }"),
        AccessLog {
            format: AccessLogFormat::Text,
            sample_ratio: 0.25
        }
    );
    assert_eq!(log("{ format: off }"), AccessLog::default());
    assert_eq!(telemetry("  {}\n"), Telemetry::default());
}

#[test]
fn the_admin_token_is_read_from_its_file_trimmed_and_never_shown() {
    let s = load("tests/fixtures/valid/admin_token.yaml");
    // `admin` without `listen`: the default address.
    assert_eq!(s.admin.listen, addr("127.0.0.1:9901"));
    assert_eq!(s.admin.token_file, Some(PathBuf::from("admin.token")));
    let token = s.admin.token.as_ref().expect("the token");
    assert_eq!(token.as_str(), "s3cr3t-t0ken");
    assert!(!format!("{s:?}").contains("s3cr3t"));
    // Without `token_file` there is no token.
    assert_eq!(load("tests/fixtures/valid/defaults.yaml").admin.token, None);
}

#[test]
fn allowed_hosts_are_stored_lowercase_without_a_trailing_dot() {
    let config = |admin: &str| {
        format!(
            "admin: {admin}\n\
             listeners: [{{ name: web, listen: 127.0.0.1:8080 }}]\n\
             routes: [{{ listener: web, service: api }}]\n\
             services: [{{ name: api, versions: [{{ name: stable, endpoints: [127.0.0.1:9001] }}] }}]\n"
        )
    };
    let hosts = |admin: &str| match parse_str(&config(admin), "admin") {
        Ok(s) => s.admin.allowed_hosts,
        Err(err) => panic!("{admin} should be valid:\n{}", err.lines().join("\n")),
    };
    assert_eq!(
        hosts("{ allowed_hosts: [Serin, serin-admin.monitoring.svc.cluster.local., localhost] }"),
        [
            "serin",
            "serin-admin.monitoring.svc.cluster.local",
            "localhost"
        ]
    );
    // Left out, empty or null: no name besides IP addresses and localhost.
    for none in [
        "{ listen: 127.0.0.1:9901 }",
        "{ allowed_hosts: [] }",
        "{ allowed_hosts: }",
    ] {
        assert_eq!(hosts(none), Vec::<String>::new(), "{none}");
    }
    assert_eq!(
        load("tests/fixtures/valid/defaults.yaml")
            .admin
            .allowed_hosts,
        Vec::<String>::new()
    );
}

#[test]
fn drills_are_off_unless_the_config_turns_them_on() {
    let config = |admin: &str| {
        format!(
            "admin: {admin}\n\
             listeners: [{{ name: web, listen: 127.0.0.1:8080 }}]\n\
             routes: [{{ listener: web, service: api }}]\n\
             services: [{{ name: api, versions: [{{ name: stable, endpoints: [127.0.0.1:9001] }}] }}]\n"
        )
    };
    let drills = |admin: &str| match parse_str(&config(admin), "admin") {
        Ok(s) => s.admin.drills,
        Err(err) => panic!("{admin} should be valid:\n{}", err.lines().join("\n")),
    };
    assert!(drills("{ drills: true }"));
    assert!(!drills("{ drills: false }"));
    assert!(!drills("{ listen: 127.0.0.1:9901 }"));
    assert!(!load("tests/fixtures/valid/defaults.yaml").admin.drills);
    let err = parse_str(&config("{ drills: yes please }"), "admin").expect_err("not a boolean");
    assert!(err.to_string().contains("admin.drills"), "{err}");
}

#[test]
fn webhooks_take_their_defaults_and_never_show_their_secrets() {
    let s = load("tests/fixtures/valid/notify.yaml");
    assert_eq!(s.notify.len(), 2);
    let plain = &s.notify[0];
    // No port: 80; the host is stored lowercase; the path as written.
    assert_eq!(plain.url.as_str(), "http://hooks.internal:80/serin");
    assert_eq!(plain.url.authority(), "hooks.internal:80");
    assert_eq!(plain.events, [DecisionKind::RolledBack]);
    assert_eq!(plain.format, NotifyFormat::Json);
    assert_eq!(plain.timeout, DEFAULT_NOTIFY_TIMEOUT);
    assert_eq!(plain.retries, DEFAULT_NOTIFY_RETRIES);
    assert!(plain.headers.is_empty());

    let full = &s.notify[1];
    assert_eq!(
        full.url.as_str(),
        "http://[::1]:7000/hooks/T0000/s3cr3t-path?channel=ops"
    );
    assert_eq!(full.url.redacted(), "http://[::1]:7000/…");
    assert_eq!(full.events, DecisionKind::ALL);
    assert!(full.wants(DecisionKind::Held) && !plain.wants(DecisionKind::Held));
    assert_eq!(full.format, NotifyFormat::Slack);
    assert_eq!(full.timeout, Duration::from_millis(1500));
    assert_eq!(full.retries, 0);
    let headers: Vec<(&str, &str)> = full
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.expose()))
        .collect();
    assert_eq!(
        headers,
        [
            ("authorization", "Bearer t0k3n-value"),
            ("x-team", "platform")
        ]
    );
    // A logged snapshot shows neither header values nor the URL's path and query.
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("t0k3n") && !shown.contains("platform"),
        "{shown}"
    );
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("channel"),
        "{shown}"
    );
    // Without `notify`, no webhook.
    assert!(load("tests/fixtures/valid/defaults.yaml").notify.is_empty());
}

#[test]
fn an_admin_token_is_printable_ascii_without_spaces() {
    assert!(AdminToken::new("a b").is_err());
    assert!(AdminToken::new("tab\there").is_err());
    assert!(AdminToken::new("\n\t ").is_err());
    assert!(AdminToken::new("é").is_err());
    assert_eq!(
        AdminToken::new(" \tAbc-123_~+/=\r\n").map(|t| t.as_str().to_string()),
        Ok("Abc-123_~+/=".to_string())
    );
}

#[test]
fn host_patterns_and_prefixes_are_stored_normalised() {
    let s = load("tests/fixtures/valid/matches.yaml");
    assert_eq!(s.listeners[0].listen, addr("[::1]:8080"));
    let routes: Vec<(&HostMatch, &str)> = s
        .routes
        .iter()
        .map(|r| (&r.host, r.path_prefix.as_str()))
        .collect();
    assert_eq!(
        routes,
        [
            // `*.Example.com`: a lowercase suffix, with its dot.
            (&HostMatch::Suffix(".example.com".to_string()), "/"),
            // An exact host is stored lowercase; `/api/` and `/api` are one prefix.
            (&HostMatch::Exact("shop.example.com".to_string()), "/api"),
            (&HostMatch::Any, "/"),
            // Host omitted: any host. Trailing slashes go.
            (&HostMatch::Any, "/static"),
            // An IPv6 host, with or without brackets, as the proxy sees it (no brackets).
            (&HostMatch::Exact("::1".to_string()), "/"),
            (&HostMatch::Exact("10.0.0.1".to_string()), "/"),
        ]
    );
}

#[test]
fn endpoints_may_be_ip_addresses_or_dns_names() {
    let s = load("tests/fixtures/valid/endpoints.yaml");
    assert_eq!(
        s.services[0].versions[0].endpoints,
        endpoints(&[
            "127.0.0.1:9001",
            "[::1]:9001",
            "api.internal:80",
            "api-2.internal:8080",
            "localhost:65535",
            "[2001:db8::1]:443",
        ])
    );
}

#[test]
fn cookie_sticky_relative_weights_and_partial_timeouts() {
    let s = load("tests/fixtures/valid/cookie_sticky.yaml");
    assert_eq!(s.admin.listen, addr("[::1]:9901"));
    let shop = &s.services[0];
    let weights: Vec<(&str, u32)> = shop
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.weight))
        .collect();
    // Declared order is the order of `versions`, not of `weights`.
    assert_eq!(weights, [("v1", 3), ("v2", 0), ("v3", 1)]);
    assert_eq!(
        shop.split,
        Split {
            // A cookie name keeps its case; header names are lowercased.
            sticky: Some(Sticky::Cookie("Session_ID".to_string())),
            force_header: Some("x-shop-version".to_string()),
        }
    );
    assert_eq!(
        shop.timeouts,
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(90),
        }
    );
    assert_eq!(
        s.services[1].timeouts,
        Timeouts {
            connect: Duration::from_millis(500),
            request: Duration::from_secs(15),
        }
    );
    assert_eq!(s.routes[1].listener, 1);
}

/// YAML anchors, aliases and `<<` merge keys: a version and timeouts written once and
/// used again, with a key overriding what a merge brings.
#[test]
fn anchors_aliases_and_merges_repeat_what_they_name() {
    let yaml = "\
listeners: [{ name: web, listen: 127.0.0.1:8080 }]
routes:
  - { listener: web, match: { path_prefix: /a }, service: a }
  - { listener: web, match: { path_prefix: /b }, service: b }
  - { listener: web, match: { path_prefix: /c }, service: c }
services:
  - name: a
    versions:
      - &stable { name: stable, endpoints: [127.0.0.1:9001, 127.0.0.1:9002] }
    timeouts: &timeouts { connect: 2s, request: 20s }
  - name: b
    versions:
      - { <<: *stable, endpoints: [127.0.0.1:9003] }
    timeouts: { <<: *timeouts, request: 5s }
  - name: c
    versions: [*stable]
    timeouts: *timeouts
";
    let s = match parse_str(yaml, "inline") {
        Ok(s) => s,
        Err(err) => panic!("{}", err.lines().join("\n")),
    };
    let by_name = |name: &str| {
        let service = s.services.iter().find(|x| x.name == name).expect("service");
        let v = &service.versions[0];
        (v.name.clone(), v.endpoints.clone(), service.timeouts)
    };
    let timeouts = |connect, request| Timeouts {
        connect: Duration::from_secs(connect),
        request: Duration::from_secs(request),
    };
    let both = endpoints(&["127.0.0.1:9001", "127.0.0.1:9002"]);
    assert_eq!(
        by_name("a"),
        ("stable".to_string(), both.clone(), timeouts(2, 20))
    );
    assert_eq!(
        by_name("b"),
        (
            "stable".to_string(),
            endpoints(&["127.0.0.1:9003"]),
            timeouts(2, 5)
        )
    );
    assert_eq!(by_name("c"), ("stable".to_string(), both, timeouts(2, 20)));
}

#[test]
fn port_zero_never_clashes() {
    let s = load("tests/fixtures/valid/ephemeral_ports.yaml");
    assert_eq!(s.admin.listen, addr("127.0.0.1:0"));
    assert_eq!(s.listeners.len(), 3);
    let weights: Vec<u32> = s.services[0].versions.iter().map(|v| v.weight).collect();
    assert_eq!(weights, [100, 0]);
}

#[test]
fn duration_syntax() {
    for (text, want) in [
        ("500ms", Duration::from_millis(500)),
        ("2s", Duration::from_secs(2)),
        ("1m 30s", Duration::from_secs(90)),
        ("1m30s", Duration::from_secs(90)),
        ("1.5s", Duration::from_millis(1500)),
        ("2 sec", Duration::from_secs(2)),
        ("1h", Duration::from_secs(3600)),
        // The longest accepted.
        ("365d", Duration::from_secs(365 * 24 * 3600)),
    ] {
        let yaml = format!(
            "listeners: [{{ name: web, listen: 127.0.0.1:8080 }}]\n\
             routes: [{{ listener: web, service: api }}]\n\
             services:\n\
             \x20 - name: api\n\
             \x20   versions: [{{ name: stable, endpoints: [127.0.0.1:9001] }}]\n\
             \x20   timeouts: {{ connect: {text}, request: {text} }}\n"
        );
        let s = match parse_str(&yaml, "inline") {
            Ok(s) => s,
            Err(err) => panic!("{text}: {}", err.lines().join("\n")),
        };
        assert_eq!(s.services[0].timeouts.connect, want, "{text}");
        assert_eq!(s.services[0].timeouts.request, want, "{text}");
    }
}

#[test]
fn host_match_exact_is_case_insensitive_and_whole() {
    let exact = HostMatch::Exact("shop.example.com".to_string());
    assert!(exact.matches("shop.example.com"));
    assert!(exact.matches("SHOP.Example.COM"));
    assert!(!exact.matches("example.com"));
    assert!(!exact.matches("api.shop.example.com"));
    assert!(!exact.matches("shop.example.com.evil"));
    assert!(!exact.matches(""));
}

#[test]
fn host_match_suffix_needs_a_label_before_the_suffix() {
    let suffix = HostMatch::Suffix(".example.com".to_string());
    assert!(suffix.matches("shop.example.com"));
    assert!(suffix.matches("a.b.example.com"));
    assert!(suffix.matches("API.EXAMPLE.COM"));
    // Not the bare domain, not a host that only ends in the same letters.
    assert!(!suffix.matches("example.com"));
    assert!(!suffix.matches(".example.com"));
    assert!(!suffix.matches("badexample.com"));
    assert!(!suffix.matches("example.com.evil"));
    // A multi-byte host never panics on a split inside a character.
    assert!(!suffix.matches("é.example.co"));
    assert!(suffix.matches("é.example.com"));
}

#[test]
fn host_match_any_matches_everything_and_specificity_orders_them() {
    assert!(HostMatch::Any.matches("anything.example"));
    assert!(HostMatch::Any.matches(""));
    let exact = HostMatch::Exact("a.example.com".to_string());
    let suffix = HostMatch::Suffix(".example.com".to_string());
    assert!(exact.specificity() > suffix.specificity());
    assert!(suffix.specificity() > HostMatch::Any.specificity());
}

/// The quickstart file is the documented format, and docs/config.md starts with it:
/// parsing its text gives the same snapshot as loading the file.
#[test]
fn parse_str_and_load_file_agree() {
    let path = workspace("examples/quickstart.yaml");
    let text = std::fs::read_to_string(&path).expect("the example");
    let parsed = parse_str(&text, "quickstart").expect("valid");
    assert_eq!(parsed, load("examples/quickstart.yaml"));
}

/// docs/config.md starts with the quickstart example, copied exactly.
#[test]
fn the_docs_show_the_quickstart_example_verbatim() {
    let example = std::fs::read_to_string(workspace("examples/quickstart.yaml")).expect("example");
    let docs = std::fs::read_to_string(workspace("docs/config.md")).expect("docs");
    assert!(
        docs.contains(&format!("```yaml\n{example}```\n")),
        "docs/config.md must show examples/quickstart.yaml exactly"
    );
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// examples/rollout.yaml, field by field. Percentages are the doubles nearest to the
/// decimals written (`99.9%` is the literal `0.999`), so they compare exactly.
#[test]
fn the_rollout_example_compiles_to_the_documented_rollout() {
    let s = load("examples/rollout.yaml");
    assert_eq!(s.state_dir, PathBuf::from("./serin-state"));
    let api = &s.services[0];
    // The configured weights stay as written; the rollout owns the split at run time.
    let weights: Vec<(&str, u32)> = api
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.weight))
        .collect();
    assert_eq!(weights, [("stable", 100), ("canary", 0)]);
    assert_eq!(
        api.split.sticky,
        Some(Sticky::Header("x-user-id".to_string()))
    );
    assert_eq!(
        api.rollout,
        Some(Rollout {
            shadow: None,
            baseline: 0,
            canary: 1,
            steps: vec![
                Step {
                    shadow: None,
                    weight: 5,
                    hold: Some(secs(30)),
                },
                Step {
                    shadow: None,
                    weight: 25,
                    hold: Some(secs(60)),
                },
                Step {
                    shadow: None,
                    weight: 50,
                    hold: Some(secs(60)),
                },
                Step {
                    shadow: None,
                    weight: 100,
                    hold: None,
                },
            ],
            analysis: Analysis {
                interval: secs(1),
                window: secs(30),
                min_requests: 50,
                confidence: 0.99,
                rules: vec![
                    Rule::ErrorRate { max: 0.01 },
                    Rule::ErrorRateIncrease {
                        max_increase: 0.005,
                    },
                    Rule::Latency {
                        percentile: 95.0,
                        max: Duration::from_millis(800),
                    },
                    Rule::LatencyIncrease {
                        percentile: 95.0,
                        max_increase: 0.2,
                    },
                    Rule::BurnRate {
                        slo: 0.999,
                        max: 4.0,
                    },
                    Rule::Success {
                        path_prefix: "/checkout".to_string(),
                        method: Some("POST".to_string()),
                        min: 0.97,
                        slot: 0,
                    },
                ],
            },
            retry_on_baseline: true,
            on_failure: OnFailure::Rollback,
            progress_deadline: DEFAULT_PROGRESS_DEADLINE,
        })
    );
}

#[test]
fn a_rollout_leaves_out_what_has_a_default() {
    let s = load("tests/fixtures/valid/rollout_defaults.yaml");
    // No state_dir: ./serin-state.
    assert_eq!(s.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(s.state_dir, PathBuf::from("./serin-state"));
    let rollout = s.services[0].rollout.as_ref().expect("a rollout");
    assert_eq!(
        *rollout,
        Rollout {
            shadow: None,
            baseline: 0,
            canary: 1,
            steps: vec![Step {
                shadow: None,
                weight: 100,
                hold: None,
            }],
            // Only the rules given: interval 1s, window 30s, 50 requests, 99%.
            analysis: Analysis {
                interval: DEFAULT_ANALYSIS_INTERVAL,
                window: DEFAULT_ANALYSIS_WINDOW,
                min_requests: DEFAULT_MIN_REQUESTS,
                confidence: DEFAULT_CONFIDENCE,
                rules: vec![Rule::ErrorRate { max: 0.02 }],
            },
            // No retry on the baseline, roll back on failure, 10 minutes to progress.
            retry_on_baseline: false,
            on_failure: OnFailure::Rollback,
            progress_deadline: DEFAULT_PROGRESS_DEADLINE,
        }
    );
    assert_eq!(rollout.analysis.interval, secs(1));
    assert_eq!(rollout.analysis.window, secs(30));
    assert_eq!(rollout.analysis.min_requests, 50);
    assert_eq!(rollout.analysis.confidence, 0.99);
    assert_eq!(rollout.progress_deadline, secs(600));
}

#[test]
fn a_rollout_with_every_choice_and_the_limits_of_each_value() {
    let s = load("tests/fixtures/valid/rollout_choices.yaml");
    assert_eq!(s.state_dir, PathBuf::from("/var/lib/serin"));
    let shop = &s.services[0];
    let weights: Vec<u32> = shop.versions.iter().map(|v| v.weight).collect();
    assert_eq!(weights, [10, 90, 0]);
    let rollout = shop.rollout.as_ref().expect("a rollout");
    // Versions by index, whatever their place among the versions.
    assert_eq!((rollout.baseline, rollout.canary), (1, 2));
    assert_eq!(
        rollout.steps,
        [
            // A step may start at 0.
            Step {
                shadow: None,
                weight: 0,
                hold: Some(secs(90)),
            },
            Step {
                shadow: None,
                weight: 1,
                hold: None,
            },
            Step {
                shadow: None,
                weight: 99,
                hold: Some(secs(7200)),
            },
        ]
    );
    let analysis = &rollout.analysis;
    // The shortest interval, and a window of one interval.
    assert_eq!(analysis.interval, Duration::from_millis(100));
    assert_eq!(analysis.window, Duration::from_millis(100));
    assert_eq!(analysis.min_requests, 1);
    assert_eq!(analysis.confidence, 0.999);
    assert_eq!(
        analysis.rules,
        [
            // Slots number the success rules in order, whatever lies between them;
            // methods are stored uppercase, prefixes as routes store theirs.
            Rule::Success {
                path_prefix: "/checkout".to_string(),
                method: Some("POST".to_string()),
                min: 1.0,
                slot: 0,
            },
            // A latency increase may exceed 100%.
            Rule::LatencyIncrease {
                percentile: 99.9,
                max_increase: 1.5,
            },
            // No method: every method.
            Rule::Success {
                path_prefix: "/".to_string(),
                method: None,
                min: 0.001,
                slot: 1,
            },
            Rule::BurnRate {
                slo: 0.9999,
                max: 14.4,
            },
            Rule::Success {
                path_prefix: "/cart".to_string(),
                method: Some("GET".to_string()),
                min: 0.995,
                slot: 2,
            },
            Rule::ErrorRate { max: 0.999 },
            Rule::Success {
                path_prefix: "/api".to_string(),
                method: Some("PATCH".to_string()),
                min: 0.5,
                slot: 3,
            },
        ]
    );
    // As many success rules as a service may have.
    assert_eq!(MAX_SUCCESS_RULES, 4);
    assert!(!rollout.retry_on_baseline);
    assert_eq!(rollout.on_failure, OnFailure::Pause);
    assert_eq!(rollout.progress_deadline, secs(300));
}

/// A percentage is the double nearest to the decimal written divided by 100; a
/// tolerance covers nothing here, the comparisons are exact.
#[test]
fn percentages_are_the_nearest_fraction() {
    for (text, want) in [
        ("1%", 0.01),
        ("0.5%", 0.005),
        ("99.9%", 0.999),
        ("99.99%", 0.9999),
        ("12.345%", 0.12345),
        ("0.001%", 0.00001),
        ("50%", 0.5),
        ("1 %", 0.01),
        (".5%", 0.005),
        ("\"7%\"", 0.07),
    ] {
        let yaml = format!(
            "listeners: [{{ name: web, listen: 127.0.0.1:8080 }}]\n\
             routes: [{{ listener: web, service: api }}]\n\
             services:\n\
             \x20 - name: api\n\
             \x20   versions: [{{ name: a, endpoints: [127.0.0.1:9001] }}, {{ name: b, endpoints: [127.0.0.1:9002] }}]\n\
             \x20   split: {{ weights: {{ a: 100, b: 0 }} }}\n\
             \x20   rollout:\n\
             \x20     baseline: a\n\
             \x20     canary: b\n\
             \x20     steps: [{{ weight: 100 }}]\n\
             \x20     analysis: {{ rules: [{{ error_rate: {{ max: {text} }} }}] }}\n"
        );
        let s = match parse_str(&yaml, "inline") {
            Ok(s) => s,
            Err(err) => panic!("{text}: {}", err.lines().join("\n")),
        };
        let rules = &s.services[0]
            .rollout
            .as_ref()
            .expect("a rollout")
            .analysis
            .rules;
        assert_eq!(rules, &[Rule::ErrorRate { max: want }], "{text}");
    }
}

/// The rollout example is also a valid fixture, byte for byte.
#[test]
fn the_rollout_fixture_is_the_example() {
    let example = std::fs::read_to_string(workspace("examples/rollout.yaml")).expect("example");
    let fixture =
        std::fs::read_to_string(workspace("tests/fixtures/valid/rollout.yaml")).expect("fixture");
    assert_eq!(example, fixture);
    assert_eq!(
        load("tests/fixtures/valid/rollout.yaml"),
        load("examples/rollout.yaml")
    );
}

/// docs/config.md shows the rollout example, copied exactly.
#[test]
fn the_docs_show_the_rollout_example_verbatim() {
    let example = std::fs::read_to_string(workspace("examples/rollout.yaml")).expect("example");
    let docs = std::fs::read_to_string(workspace("docs/config.md")).expect("docs");
    assert!(
        docs.contains(&format!("```yaml\n{example}```\n")),
        "docs/config.md must show examples/rollout.yaml exactly"
    );
}

#[test]
fn watched_files_are_every_certificate_and_key_once_relative_ones_from_the_config_dir() {
    let dir = std::env::temp_dir().join(format!("serin-watched-files-{}", std::process::id()));
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("create the certs directory");
    let pem = |label: &str| format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
    std::fs::write(certs.join("a.pem"), pem("CERTIFICATE")).expect("write a.pem");
    std::fs::write(certs.join("b.pem"), pem("CERTIFICATE")).expect("write b.pem");
    std::fs::write(certs.join("shared.key"), pem("PRIVATE KEY")).expect("write shared.key");
    let other = dir.join("other.key");
    std::fs::write(&other, pem("PRIVATE KEY")).expect("write other.key");
    let config = dir.join("serin.yaml");
    let text = format!(
        "listeners:
  - {{ name: plain, listen: 127.0.0.1:0 }}
  - name: secure
    listen: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: certs/a.pem, key: certs/shared.key }}
        - {{ cert: {b}, key: certs/shared.key }}
  - name: secure2
    listen: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: certs/a.pem, key: {other} }}
routes:
  - {{ listener: plain, service: api }}
services:
  - name: api
    versions:
      - {{ name: stable, endpoints: [127.0.0.1:9001] }}
",
        b = certs.join("b.pem").display(),
        other = other.display(),
    );
    std::fs::write(&config, text).expect("write the config");
    let snapshot = load_file(&config).unwrap_or_else(|err| panic!("{}", err.lines().join("\n")));
    let _ = std::fs::remove_dir_all(&dir);
    // In the order written, each once; the listener without TLS adds nothing.
    assert_eq!(
        snapshot.watched_files(),
        [
            certs.join("a.pem"),
            certs.join("shared.key"),
            certs.join("b.pem"),
            other,
        ]
    );
    // Without TLS nothing besides the config file is read.
    assert!(load("tests/fixtures/valid/defaults.yaml")
        .watched_files()
        .is_empty());
}

#[test]
fn cluster_compiles_with_its_password_read_and_its_endpoints_normalised() {
    let s = load("tests/fixtures/valid/cluster.yaml");
    let cluster = s.cluster.expect("cluster");
    assert_eq!(
        cluster.etcd.endpoints,
        [
            "http://etcd-0.etcd:2379",
            "http://etcd-1.etcd:2379",
            "http://10.0.0.7:2379",
            "http://[::1]:2379"
        ]
    );
    assert_eq!(cluster.etcd.prefix, "/serin/prod/");
    assert_eq!(cluster.etcd.tls, None);
    let auth = cluster.etcd.auth.expect("auth");
    assert_eq!(auth.username, "serin");
    assert_eq!(auth.password.expose(), "correct horse");
    assert_eq!(
        auth.password_file,
        workspace("tests/fixtures/valid/etcd.password")
    );
    assert!(!format!("{auth:?}").contains("horse"), "{auth:?}");
    assert_eq!(cluster.instance, "ingress-7");
    assert_eq!(cluster.lease_ttl, Duration::from_secs(10));
    assert_eq!(cluster.on_etcd_loss, OnEtcdLoss::Baseline);
}

#[test]
fn cluster_defaults_are_hostname_pid_5s_and_hold() {
    let s = load("tests/fixtures/valid/cluster_defaults.yaml");
    let cluster = s.cluster.expect("cluster");
    assert_eq!(cluster.etcd.endpoints, ["https://etcd.internal:2379"]);
    assert_eq!(cluster.etcd.prefix, "/");
    let tls = cluster.etcd.tls.expect("https endpoints use TLS");
    assert_eq!(tls.ca_pem, None, "the bundled roots");
    assert_eq!(tls.client, None);
    assert_eq!(cluster.etcd.auth, None);
    let pid = format!("-{}", std::process::id());
    assert!(cluster.instance.ends_with(&pid), "{}", cluster.instance);
    assert!(cluster.instance.len() > pid.len(), "{}", cluster.instance);
    assert_eq!(cluster.lease_ttl, Duration::from_secs(5));
    assert_eq!(cluster.on_etcd_loss, OnEtcdLoss::Hold);
    assert!(load("examples/quickstart.yaml").cluster.is_none());
}

/// `${VAR}` in `instance` is the environment variable's value (cargo sets
/// CARGO_PKG_NAME for the tests it runs).
#[test]
fn cluster_instance_expands_environment_variables() {
    let text = "listeners: [{ name: web, listen: 127.0.0.1:8080 }]\n\
        routes: [{ listener: web, service: api }]\n\
        services: [{ name: api, versions: [{ name: stable, endpoints: [127.0.0.1:9001] }] }]\n\
        cluster: { etcd: { endpoints: [http://127.0.0.1:2379], prefix: /p/ }, instance: \"${CARGO_PKG_NAME}-a.b\" }\n";
    let s = match parse_str(text, "inline") {
        Ok(s) => s,
        Err(err) => panic!("{}", err.lines().join("\n")),
    };
    assert_eq!(s.cluster.expect("cluster").instance, "serin-config-a.b");
}

#[test]
fn a_versions_lb_and_idle_timeout_default_to_round_robin_and_60s() {
    let yaml = r#"
listeners: [{ name: web, listen: 127.0.0.1:0 }]
routes: [{ listener: web, service: api }]
services:
  - name: api
    versions:
      - { name: stable, endpoints: [127.0.0.1:9001] }
      - { name: canary, endpoints: [127.0.0.1:9002, 127.0.0.1:9003], lb: p2c_peak_ewma, idle_timeout: 5s }
    split: { weights: { stable: 90, canary: 10 } }
"#;
    let snapshot = parse_str(yaml, "lb").unwrap_or_else(|e| panic!("{e}"));
    let [stable, canary] = &snapshot.services[0].versions[..] else {
        panic!("two versions");
    };
    assert_eq!(
        (stable.lb, stable.idle_timeout),
        (LoadBalancing::RoundRobin, Duration::from_secs(60))
    );
    assert_eq!(
        (canary.lb, canary.idle_timeout),
        (LoadBalancing::P2cPeakEwma, Duration::from_secs(5))
    );
}

/// The shadow steps and block as the docs write them: a shadow step has no weight and
/// its share in hundredths of a percent; the block's defaults; methods beyond GET and
/// HEAD are accepted with a warning.
#[test]
fn shadow_steps_and_their_settings_compile_with_defaults_and_a_warning_for_unsafe_methods() {
    let yaml = |shadow_block: &str| {
        format!(
            r#"
listeners: [{{ name: web, listen: 127.0.0.1:0 }}]
routes: [{{ listener: web, service: api }}]
services:
  - name: api
    versions:
      - {{ name: stable, endpoints: [127.0.0.1:9001] }}
      - {{ name: canary, endpoints: [127.0.0.1:9002] }}
    split: {{ weights: {{ stable: 100, canary: 0 }} }}
    rollout:
      baseline: stable
      canary: canary
      steps:
        - {{ shadow: 12.5%, hold: 1m }}
        - {{ shadow: 100%, hold: 5m }}
        - {{ weight: 5, hold: 30s }}
{shadow_block}
      analysis:
        rules: [{{ error_rate: {{ max: 1% }} }}, {{ mismatch: {{ max: 1% }} }}]
"#
        )
    };
    let defaults = parse_str(&yaml(""), "shadow").unwrap_or_else(|e| panic!("{e}"));
    let rollout = defaults.services[0].rollout.as_ref().expect("a rollout");
    let shares: Vec<(u32, Option<u32>)> =
        rollout.steps.iter().map(|s| (s.weight, s.shadow)).collect();
    assert_eq!(shares, vec![(0, Some(1250)), (0, Some(10_000)), (5, None)]);
    assert_eq!(rollout.analysis.rules[1], Rule::Mismatch { max: 0.01 });
    let shadow = rollout.shadow.as_ref().expect("shadow settings");
    assert_eq!(shadow.methods, ["GET", "HEAD"]);
    assert_eq!((shadow.max_body, shadow.max_in_flight), (64 * 1024, 256));
    assert_eq!((shadow.compare_status, shadow.compare_body), (true, false));
    assert!(
        !shadow.compare_headers,
        "headers are compared when asked for"
    );
    assert!(defaults.warnings().is_empty(), "{:?}", defaults.warnings());

    let listed = parse_str(
        &yaml(
            "      shadow:\n        methods: [get, POST]\n        max_body: 1KiB\n        max_in_flight: 8\n        compare: { status: true, body: true, ignore_headers: [Date, x-request-id] }",
        ),
        "shadow",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let shadow = listed.services[0]
        .rollout
        .as_ref()
        .and_then(|r| r.shadow.as_ref())
        .expect("shadow");
    assert_eq!(shadow.methods, ["GET", "POST"]);
    assert_eq!((shadow.max_body, shadow.max_in_flight), (1024, 8));
    assert!(shadow.compare_body);
    assert!(
        shadow.compare_headers,
        "ignore_headers given: the others are compared"
    );
    assert_eq!(shadow.ignore_headers, ["date", "x-request-id"]);
    assert_eq!(
        listed.warnings(),
        vec!["services[0].rollout.shadow.methods: POST requests of service \"api\" are copied to the canary during shadow steps, so it acts on each of them as well as the baseline does; make sure it skips side effects of requests marked `x-serin-shadow: 1`".to_string()]
    );
}

/// examples/shadow.yaml: a shadow step first, the `shadow:` block as written, and a
/// `mismatch` rule.
#[test]
fn the_shadow_example_compiles_to_a_shadow_step_and_its_settings() {
    let s = load("examples/shadow.yaml");
    let rollout = s.services[0].rollout.as_ref().expect("a rollout");
    let steps: Vec<(u32, Option<u32>)> =
        rollout.steps.iter().map(|s| (s.weight, s.shadow)).collect();
    assert_eq!(
        steps,
        vec![(0, Some(10_000)), (5, None), (25, None), (100, None)]
    );
    assert_eq!(rollout.steps[0].hold, Some(Duration::from_secs(300)));
    let shadow = rollout.shadow.as_ref().expect("shadow settings");
    assert_eq!(shadow.methods, ["GET", "HEAD"]);
    assert_eq!((shadow.max_body, shadow.max_in_flight), (64 * 1024, 256));
    assert!(shadow.compare_status && shadow.compare_body && shadow.compare_headers);
    assert_eq!(shadow.ignore_headers, ["date", "x-request-id"]);
    assert_eq!(rollout.analysis.rules[2], Rule::Mismatch { max: 0.01 });
    assert!(s.warnings().is_empty());
}
