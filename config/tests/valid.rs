//! Valid configs and what they compile to: the documented example, every default, and
//! how host patterns, path prefixes and endpoints are stored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serin_config::{load_file, parse_str, Endpoint, HostMatch, Snapshot, Split, Sticky, Timeouts};

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
