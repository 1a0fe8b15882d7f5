//! `GET /metrics` on the admin listener: what a Prometheus scraping serin sees after
//! known traffic, rollout decisions and reloads, that hostile requests cannot add
//! series, and that `promtool check metrics` finds nothing to say about it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::process::SerinProcess;
use crate::common::*;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serin_control::admin::{Admin, AdminContext, Health};
use serin_judge::rollout::Phase;

/// Analysis fast enough for tests: a tick every 100 ms.
const FAST: &str = "        interval: 100ms\n        window: 5s\n        min_requests: 20\n        confidence: 99%";

/// A rollout held at 20 % until a person acts.
const HELD: &str = "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 20, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 10s\n        rules:\n          - error_rate: { max: 50% }\n";

/// One scrape: every sample as `name{k="v",…}` (labels sorted) → value.
#[derive(Debug)]
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample without a value: {line}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("not a number in {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("labels end with }");
                    let labels: BTreeMap<&str, &str> = inner
                        .split(',')
                        .filter(|l| !l.is_empty())
                        .map(|l| {
                            let (k, v) = l.split_once('=').expect("label=value");
                            (k, v.trim_matches('"'))
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            let previous = samples.insert(key(name, &labels), value);
            assert!(previous.is_none(), "a series twice: {line}\n{text}");
        }
        Scrape { text, samples }
    }

    /// The value of the series `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        self.samples.get(&key(name, &labels)).copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in\n{}", self.text))
    }

    /// Every series' name and labels, without values.
    fn series(&self) -> BTreeSet<String> {
        self.samples.keys().cloned().collect()
    }

    /// Whether any series has `label` = `value`.
    fn any_with(&self, label: &str, value: &str) -> bool {
        let needle = format!("{label}=\"{value}\"");
        self.samples.keys().any(|k| k.contains(&needle))
    }
}

fn key(name: &str, labels: &BTreeMap<&str, &str>) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// `GET /metrics` on `admin` (no token), as Prometheus text.
async fn scrape(admin: SocketAddr) -> Scrape {
    let got = get(&client(), &format!("http://{admin}/metrics"), &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(
        got.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Scrape::parse(got.body)
}

/// Scrapes `admin` until `ready` holds for a scrape (the totals are as fresh as the
/// control loop's last tick), and returns that scrape.
async fn scrape_when(admin: SocketAddr, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let last = RefCell::new(None);
    eventually(Duration::from_secs(10), what, || async {
        let s = scrape(admin).await;
        let ok = ready(&s);
        *last.borrow_mut() = Some(s);
        ok
    })
    .await;
    last.into_inner().expect("scraped at least once")
}

/// serin with its control loop and its admin API in this process.
struct Metered {
    c: Controlled,
    admin: Admin,
}

impl Metered {
    async fn start(yaml: &str, token: Option<&str>) -> Metered {
        let c = Controlled::start(yaml).await;
        let health = std::sync::Arc::new(Health::default());
        health.set_ready();
        let context = AdminContext {
            control: Some(c.control.clone()),
            token: token.map(str::to_string),
            ..AdminContext::new(health, c.serin.dataplane.clone())
        };
        let admin = Admin::bind("127.0.0.1:0".parse().expect("addr"), context)
            .await
            .expect("bind the admin API");
        Metered { c, admin }
    }

    async fn scrape(&self) -> Scrape {
        scrape(self.admin.local_addr).await
    }

    async fn scrape_when(&self, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
        scrape_when(self.admin.local_addr, what, ready).await
    }

    async fn admin_call(&self, method: Method, path: &str, body: &str) -> Got {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin.local_addr))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        send(&client(), req).await
    }

    async fn stop(self) {
        self.admin.shutdown().await;
        self.c.stop().await;
    }
}

/// `api` with `stable` and `canary` (weights 100/0, forced by `x-serin-version`) and
/// `broken`, whose endpoint refuses connections.
async fn three_versions(stable: SocketAddr, canary: SocketAddr) -> String {
    let broken = closed_port().await;
    api_service(
        &format!(
            "      - {{ name: stable, endpoints: [{stable}] }}
      - {{ name: canary, endpoints: [{canary}] }}
      - {{ name: broken, endpoints: [{broken}] }}"
        ),
        "    split:
      weights: { stable: 100, canary: 0, broken: 0 }
      force: { header: x-serin-version }
    timeouts: { connect: 1s, request: 5s }",
    )
}

/// `n` requests forced to `version`; returns the statuses clients saw.
async fn forced(url: &str, version: &str, n: usize) -> Vec<StatusCode> {
    let client = client();
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        statuses.push(
            get(&client, url, &[("x-serin-version", version)])
                .await
                .status,
        );
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_per_version_class_and_failure_kind() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    canary.set_status(503);
    let m = Metered::start(&three_versions(stable.addr, canary.addr).await, None).await;
    let url = m.c.serin.url("/");
    assert!(forced(&url, "stable", 30).await.iter().all(|s| *s == 200));
    assert!(forced(&url, "canary", 10).await.iter().all(|s| *s == 503));
    assert_eq!(
        forced(&url, "broken", 1).await,
        vec![StatusCode::BAD_GATEWAY]
    );
    assert_eq!((stable.hits(), canary.hits()), (30, 10));

    let requests = "serin_requests_total";
    let s = m
        .scrape_when("the tick after the traffic is in the counters", |s| {
            s.get(
                "serin_upstream_failures_total",
                &[
                    ("service", "api"),
                    ("version", "broken"),
                    ("kind", "connect"),
                ],
            ) == Some(1.0)
                && s.get(
                    requests,
                    &[("service", "api"), ("version", "stable"), ("class", "2xx")],
                ) == Some(30.0)
                && s.get(
                    requests,
                    &[("service", "api"), ("version", "canary"), ("class", "5xx")],
                ) == Some(10.0)
        })
        .await;
    // Every class and kind of every version is there, at 0 when nothing happened.
    for (version, class, n) in [
        ("stable", "2xx", 30.0),
        ("stable", "3xx", 0.0),
        ("stable", "4xx", 0.0),
        ("stable", "5xx", 0.0),
        ("canary", "2xx", 0.0),
        ("canary", "5xx", 10.0),
        ("broken", "2xx", 0.0),
        ("broken", "5xx", 0.0),
    ] {
        let labels = [("service", "api"), ("version", version), ("class", class)];
        assert_eq!(s.value(requests, &labels), n, "{version} {class}");
    }
    // No upgrade was asked for: no 101.
    assert_eq!(
        s.get(
            requests,
            &[("service", "api"), ("version", "stable"), ("class", "1xx")]
        ),
        Some(0.0)
    );
    for (version, kind, n) in [
        ("broken", "connect", 1.0),
        ("broken", "timeout", 0.0),
        ("broken", "reset", 0.0),
        ("stable", "connect", 0.0),
        ("canary", "timeout", 0.0),
    ] {
        let labels = [("service", "api"), ("version", version), ("kind", kind)];
        assert_eq!(
            s.value("serin_upstream_failures_total", &labels),
            n,
            "{version} {kind}"
        );
    }

    // The histogram counts every request that reached a version (responses and
    // failures); its buckets are cumulative and end at the count.
    let bounds = [
        "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5",
        "5.0", "10.0", "+Inf",
    ];
    for (version, n) in [("stable", 30.0), ("canary", 10.0), ("broken", 1.0)] {
        let labels = [("service", "api"), ("version", version)];
        let count = s.value("serin_request_duration_seconds_count", &labels);
        assert_eq!(count, n, "{version}");
        let sum = s.value("serin_request_duration_seconds_sum", &labels);
        assert!(sum > 0.0 && sum < n * 5.0, "{version}: sum {sum}");
        let mut previous = 0.0;
        for le in bounds {
            let bucket = s.value(
                "serin_request_duration_seconds_bucket",
                &[("service", "api"), ("version", version), ("le", le)],
            );
            assert!(
                bucket >= previous,
                "{version}: le={le} {bucket} < {previous}"
            );
            previous = bucket;
        }
        assert_eq!(previous, count, "{version}: the +Inf bucket is the count");
    }

    // The counters only grow: more traffic adds to them.
    forced(&url, "stable", 5).await;
    m.scrape_when("the next 5 requests add up", |s| {
        s.get(
            requests,
            &[("service", "api"), ("version", "stable"), ("class", "2xx")],
        ) == Some(35.0)
            && s.get(
                "serin_request_duration_seconds_count",
                &[("service", "api"), ("version", "stable")],
            ) == Some(35.0)
    })
    .await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_and_rollout_gauges_follow_the_admin_api() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let dir = TempDir::new("metrics-weights");
    let m = Metered::start(
        &rollout_config(stable.addr, canary.addr, &dir.0, HELD),
        None,
    )
    .await;
    let weight = |s: &Scrape, version| {
        s.value(
            "serin_version_weight",
            &[("service", "api"), ("version", version)],
        )
    };
    let state = |s: &Scrape, state| {
        s.value(
            "serin_rollout_state",
            &[("service", "api"), ("state", state)],
        )
    };
    let s = m.scrape().await;
    assert_eq!((weight(&s, "stable"), weight(&s, "canary")), (80.0, 20.0));
    assert_eq!(state(&s, "progressing"), 1.0);
    for other in ["pending", "paused", "promoted", "rolled_back"] {
        assert_eq!(state(&s, other), 0.0, "{other}");
    }
    assert_eq!(s.value("serin_rollout_step", &[("service", "api")]), 0.0);

    let got = m
        .admin_call(
            Method::PUT,
            "/api/v1/services/api/weights",
            r#"{"stable": 60, "canary": 40}"#,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    // Weights and states are read at scrape time: no tick to wait for.
    let s = m.scrape().await;
    assert_eq!((weight(&s, "stable"), weight(&s, "canary")), (60.0, 40.0));
    assert_eq!((state(&s, "paused"), state(&s, "progressing")), (1.0, 0.0));

    let got = m
        .admin_call(Method::POST, "/api/v1/services/api/promote", "")
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let s = m.scrape().await;
    assert_eq!((weight(&s, "stable"), weight(&s, "canary")), (0.0, 100.0));
    assert_eq!((state(&s, "promoted"), state(&s, "paused")), (1.0, 0.0));
    // A promotion is no rollback.
    assert_eq!(
        s.value(
            "serin_rollbacks_total",
            &[("service", "api"), ("trigger", "manual")]
        ),
        0.0
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_gauge_follows_a_healthy_rollout() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let dir = TempDir::new("metrics-step");
    let m = Metered::start(
        &rollout_config(
            stable.addr,
            canary.addr,
            &dir.0,
            &format!(
                "      baseline: stable\n      canary: canary\n      steps:\n        - {{ weight: 10, hold: 200ms }}\n        - {{ weight: 50, hold: 1h }}\n        - {{ weight: 100 }}\n      analysis:\n{FAST}\n        rules:\n          - error_rate: {{ max: 5% }}\n"
            ),
        ),
        None,
    )
    .await;
    assert_eq!(
        m.scrape()
            .await
            .value("serin_rollout_step", &[("service", "api")]),
        0.0
    );
    let load = Load::start(m.c.serin.url("/"), 4, Duration::ZERO);
    let s = m
        .scrape_when("the rollout reaches step 1", |s| {
            s.get("serin_rollout_step", &[("service", "api")]) == Some(1.0)
        })
        .await;
    load.stop().await;
    assert_eq!(
        s.value(
            "serin_rollout_state",
            &[("service", "api"), ("state", "progressing")]
        ),
        1.0
    );
    assert_eq!(
        s.value(
            "serin_version_weight",
            &[("service", "api"), ("version", "canary")]
        ),
        50.0
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollbacks_are_counted_by_trigger() {
    // By hand.
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let dir = TempDir::new("metrics-abort");
    let m = Metered::start(
        &rollout_config(stable.addr, canary.addr, &dir.0, HELD),
        None,
    )
    .await;
    let rollbacks = |s: &Scrape, trigger| {
        s.value(
            "serin_rollbacks_total",
            &[("service", "api"), ("trigger", trigger)],
        )
    };
    let s = m.scrape().await;
    // Every trigger the rollout can have is there before anything happens.
    assert_eq!(
        (rollbacks(&s, "manual"), rollbacks(&s, "error_rate")),
        (0.0, 0.0)
    );
    let got = m
        .admin_call(Method::POST, "/api/v1/services/api/abort", "")
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let s = m.scrape().await;
    assert_eq!(
        (rollbacks(&s, "manual"), rollbacks(&s, "error_rate")),
        (1.0, 0.0)
    );
    assert_eq!(
        s.value(
            "serin_rollout_state",
            &[("service", "api"), ("state", "rolled_back")]
        ),
        1.0
    );
    // Aborting again changes nothing, and is not counted again.
    m.admin_call(Method::POST, "/api/v1/services/api/abort", "")
        .await;
    assert_eq!(rollbacks(&m.scrape().await, "manual"), 1.0);
    m.stop().await;

    // By the analysis: a canary answering 503 against `error_rate max 1%`.
    let dir = TempDir::new("metrics-rollback");
    canary.set_status(503);
    let m = Metered::start(
        &rollout_config(
            stable.addr,
            canary.addr,
            &dir.0,
            &format!(
                "      baseline: stable\n      canary: canary\n      steps:\n        - {{ weight: 50, hold: 1h }}\n        - {{ weight: 100 }}\n      analysis:\n{FAST}\n        rules:\n          - error_rate: {{ max: 1% }}\n          - latency: {{ percentile: 95, max: 5s }}\n"
            ),
        ),
        None,
    )
    .await;
    let load = Load::start(m.c.serin.url("/"), 4, Duration::ZERO);
    eventually(
        Duration::from_secs(20),
        "the failing canary is rolled back",
        || async { m.c.phase() == Phase::RolledBack },
    )
    .await;
    load.stop().await;
    let s = m.scrape().await;
    assert_eq!(rollbacks(&s, "error_rate"), 1.0);
    assert_eq!(
        (rollbacks(&s, "manual"), rollbacks(&s, "latency")),
        (0.0, 0.0)
    );
    assert_eq!(
        s.value(
            "serin_version_weight",
            &[("service", "api"), ("version", "canary")]
        ),
        0.0
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_hosts_and_paths_add_no_series() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let m = Metered::start(
        &two_versions(
            stable.addr,
            canary.addr,
            "    split: { weights: { stable: 50, canary: 50 }, force: { header: x-serin-version } }",
        ),
        None,
    )
    .await;
    let url = m.c.serin.url("/");
    forced(&url, "stable", 5).await;
    let total = |s: &Scrape| {
        ["stable", "canary"]
            .iter()
            .map(|v| {
                s.value(
                    "serin_request_duration_seconds_count",
                    &[("service", "api"), ("version", v)],
                )
            })
            .sum::<f64>()
    };
    let before = m
        .scrape_when("the first requests are counted", |s| total(s) == 5.0)
        .await;

    let client = client();
    let n = 200;
    for i in 0..n {
        let path = format!("/{}/{}?q={}", fastrand_like(i), "%2e%2e/%00", i * 7919);
        let req = Request::get(format!("http://{}{path}", m.c.serin.addr))
            .header(
                "host",
                format!("h{}.evil-{}.example:{}", i, i * 31, 1000 + i),
            )
            .header("x-serin-version", format!("v{i}"))
            .header("x-user-id", format!("user-{i}"))
            .header("x-forwarded-host", format!("x{i}.example"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let got = send(&client, req).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    }
    let after = m
        .scrape_when("the hostile requests are counted", |s| {
            total(s) == 5.0 + n as f64
        })
        .await;
    assert_eq!(after.series(), before.series(), "{}", after.text);
    assert!(!after.text.contains("evil"), "{}", after.text);
    m.stop().await;
}

/// A path segment that differs for every `i`.
fn fastrand_like(i: usize) -> String {
    format!("{:x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_no_token_and_speak_openmetrics_when_asked() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let m = Metered::start(
        &two_versions(
            stable.addr,
            canary.addr,
            "    split: { weights: { stable: 90, canary: 10 } }",
        ),
        Some("s3cr3t"),
    )
    .await;
    let admin = m.admin.local_addr;
    let s = scrape(admin).await;
    assert_eq!(
        s.value(
            "serin_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(
        s.value(
            "serin_version_weight",
            &[("service", "api"), ("version", "stable")]
        ),
        90.0
    );
    // A wrong token does not matter either; the API itself stays closed.
    let got = get(
        &client(),
        &format!("http://{admin}/metrics"),
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    let got = get(&client(), &format!("http://{admin}/api/v1/services"), &[]).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);

    // Prometheus asks for OpenMetrics, and gets it: counters named without _total in
    // their TYPE, units, and the closing # EOF.
    let got = get(
        &client(),
        &format!("http://{admin}/metrics"),
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(got.body.ends_with("\n# EOF\n"), "{}", got.body);
    assert!(
        got.body.contains("\n# TYPE serin_requests counter\n"),
        "{}",
        got.body
    );
    assert!(
        got.body
            .contains("\n# UNIT serin_request_duration_seconds seconds\n"),
        "{}",
        got.body
    );
    assert!(
        got.body
            .contains("serin_requests_total{service=\"api\",version=\"canary\",class=\"2xx\"} 0\n"),
        "{}",
        got.body
    );
    // The text format for everyone else: same samples, counters typed with _total.
    assert!(
        s.text.contains("\n# TYPE serin_requests_total counter\n"),
        "{}",
        s.text
    );
    assert!(
        !s.text.contains("# EOF") && !s.text.contains("# UNIT"),
        "{}",
        s.text
    );

    let got = m.admin_call(Method::POST, "/metrics", "").await;
    assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED);
    m.stop().await;
}

/// Writes `text` as serin's config at `path`.
fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).expect("write the config");
}

async fn reload(serin: &SerinProcess) -> StatusCode {
    let req = Request::post(format!("{}/api/v1/reload", serin.admin_url()))
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(&client(), req).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_counted_and_totals_survive_them() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let dir = TempDir::new("metrics-reload");
    let config = dir.0.join("serin.yaml");
    let both = format!(
        "{}  - name: web\n    versions:\n      - {{ name: v1, endpoints: [{}] }}\n",
        two_versions(
            stable.addr,
            canary.addr,
            "    split: { weights: { stable: 100, canary: 0 } }"
        ),
        stable.addr
    );
    write(&config, &both);
    let serin = SerinProcess::start(&config, 1, &["--no-watch"], &[]);
    let stable_2xx = [("service", "api"), ("version", "stable"), ("class", "2xx")];
    let reloads = |s: &Scrape, result| s.value("serin_config_reloads_total", &[("result", result)]);

    let s = scrape(serin.admin).await;
    assert_eq!((reloads(&s, "success"), reloads(&s, "failure")), (0.0, 0.0));
    assert_eq!(s.value("serin_config_last_reload_success", &[]), 1.0);
    // The real process reports its own figures.
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(s.value(name, &[]) > 0.0, "{name}");
    }
    assert!(s.value("process_cpu_seconds_total", &[]) >= 0.0);

    let client = client();
    for _ in 0..20 {
        assert_eq!(
            get(&client, &serin.url("/"), &[]).await.status,
            StatusCode::OK
        );
    }
    scrape_when(serin.admin, "20 requests to stable are counted", |s| {
        s.get("serin_requests_total", &stable_2xx) == Some(20.0)
    })
    .await;

    // A broken file: counted as a failure, nothing else changes.
    write(&config, "listeners: []\nservices: [}\n");
    assert_eq!(reload(&serin).await, StatusCode::UNPROCESSABLE_ENTITY);
    let s = scrape(serin.admin).await;
    assert_eq!((reloads(&s, "success"), reloads(&s, "failure")), (0.0, 1.0));
    assert_eq!(s.value("serin_config_last_reload_success", &[]), 0.0);
    assert_eq!(s.value("serin_requests_total", &stable_2xx), 20.0);
    assert!(s.any_with("service", "web") && s.any_with("version", "canary"));

    // Fixed, without `canary` and `web`: their series are gone, stable's totals stay.
    write(
        &config,
        &two_versions(stable.addr, canary.addr, "").replace(
            &format!("      - {{ name: canary, endpoints: [{}] }}\n", canary.addr),
            "",
        ),
    );
    assert_eq!(reload(&serin).await, StatusCode::OK);
    let s = scrape(serin.admin).await;
    assert_eq!((reloads(&s, "success"), reloads(&s, "failure")), (1.0, 1.0));
    assert_eq!(s.value("serin_config_last_reload_success", &[]), 1.0);
    assert_eq!(s.value("serin_requests_total", &stable_2xx), 20.0);
    assert!(!s.any_with("service", "web"), "{}", s.text);
    assert!(!s.any_with("version", "canary"), "{}", s.text);

    for _ in 0..5 {
        assert_eq!(
            get(&client, &serin.url("/"), &[]).await.status,
            StatusCode::OK
        );
    }
    scrape_when(serin.admin, "the totals go on after the reload", |s| {
        s.get("serin_requests_total", &stable_2xx) == Some(25.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_nothing_to_say() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    canary.set_status(404);
    let dir = TempDir::new("metrics-promtool");
    let broken = closed_port().await;
    let mut yaml = rollout_config(stable.addr, canary.addr, &dir.0, HELD);
    yaml.push_str(&format!(
        "  - name: web\n    versions:\n      - {{ name: v1, endpoints: [{broken}] }}\n"
    ));
    yaml = yaml.replace(
        "service: api }\n",
        "service: api }\n  - { listener: web, match: { host: \"*\", path_prefix: /web }, service: web }\n",
    );
    let config = dir.0.join("serin.yaml");
    write(&config, &yaml);
    let serin = SerinProcess::start(&config, 2, &[], &[]);
    let client = client();
    for i in 0..50 {
        let user = format!("user-{i}");
        let got = get(&client, &serin.url("/"), &[("x-user-id", &user)]).await;
        assert!(matches!(got.status.as_u16(), 200 | 404), "{}", got.status);
    }
    let got = get(&client, &serin.url("/web/x"), &[]).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    let s = scrape_when(serin.admin, "the traffic is counted", |s| {
        s.get(
            "serin_upstream_failures_total",
            &[("service", "web"), ("version", "v1"), ("kind", "connect")],
        ) == Some(1.0)
            && s.get(
                "serin_request_duration_seconds_count",
                &[("service", "api"), ("version", "stable")],
            )
            .zip(s.get(
                "serin_request_duration_seconds_count",
                &[("service", "api"), ("version", "canary")],
            ))
            .is_some_and(|(a, b)| a + b == 50.0)
    })
    .await;

    let text = s.text.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let mut child = match Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "promtool is not installed, and this test checks serin's /metrics with it: \
                 install it with `apt-get install prometheus` (Debian/Ubuntu; scripts/test does \
                 this), or put Prometheus' promtool on PATH"
            ),
            Err(err) => panic!("cannot run promtool: {err}"),
        };
        child
            .stdin
            .take()
            .expect("promtool's stdin")
            .write_all(text.as_bytes())
            .expect("write the scrape to promtool");
        child.wait_with_output().expect("promtool finishes")
    })
    .await
    .expect("join");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(
        said, "",
        "promtool check metrics complained about\n{}",
        s.text
    );
    assert!(
        checked.status.success(),
        "promtool exited {}",
        checked.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failovers_ejected_endpoints_and_connections_are_exported() {
    let stable = Backend::start("stable").await;
    let dead = closed_port().await;
    let yaml = two_versions(
        stable.addr,
        dead,
        "    split: { weights: { stable: 50, canary: 50 }, sticky: { header: x-user-id } }",
    )
    .replace(
        &format!("endpoints: [{dead}]"),
        &format!("endpoints: [{dead}], eject: {{ consecutive_failures: 2, for: 1h }}"),
    );
    let m = Metered::start(&yaml, None).await;
    let client = client();
    let users: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    for user in &users {
        let got = get(&client, &m.c.serin.url("/"), &[("x-user-id", user)]).await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "stable"));
    }
    // Every user whose cohort is the canary's failed over to stable.
    let view = m.c.serin.dataplane.view();
    let split = view.split(0);
    let canary_users = users
        .iter()
        .filter(|u| split.pick_sticky(u.as_bytes()) == 1)
        .count();
    assert!(canary_users > 0);
    let s = m.scrape().await;
    assert_eq!(
        s.value(
            "serin_failovers_total",
            &[("service", "api"), ("version", "canary")]
        ),
        canary_users as f64
    );
    assert_eq!(
        s.value(
            "serin_failovers_total",
            &[("service", "api"), ("version", "stable")]
        ),
        0.0
    );
    let dead = dead.to_string();
    assert_eq!(
        s.value(
            "serin_endpoint_up",
            &[
                ("service", "api"),
                ("version", "canary"),
                ("endpoint", &dead)
            ]
        ),
        0.0
    );
    let live = stable.addr.to_string();
    assert_eq!(
        s.value(
            "serin_endpoint_up",
            &[
                ("service", "api"),
                ("version", "stable"),
                ("endpoint", &live)
            ]
        ),
        1.0
    );
    assert!(s.value("serin_connections_open", &[]) >= 1.0);
    assert_eq!(s.value("serin_connections_refused_total", &[]), 0.0);
    m.stop().await;
}
