//! Shadow steps end to end: real serin with its control loop, real backends, real
//! traffic. The canary's backend tells copies from client requests by the
//! `x-serin-shadow: 1` header they carry; what clients got is what the load saw.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::common::*;
use serin_judge::rollout::Phase;

const FAST: &str = "        interval: 100ms\n        window: 5s\n        min_requests: 20\n        confidence: 99%";

fn is_copy(seen: &Seen) -> bool {
    seen.headers
        .get("x-serin-shadow")
        .is_some_and(|v| v.as_bytes() == b"1")
}

/// The rollout block: a shadow step held an hour (only a failure ends it), then 100 %.
fn shadow_rollout(shadow_block: &str, rules: &str) -> String {
    format!(
        "      baseline: stable\n      canary: canary\n      steps:\n        - {{ shadow: 100%, hold: 1h }}\n        - {{ weight: 100 }}\n{shadow_block}      analysis:\n{FAST}\n        rules:\n{rules}"
    )
}

/// `/metrics` as Prometheus would read it: the line of `series`' value.
fn metric(c: &Controlled, series: &str) -> Option<f64> {
    let text = serin_control::metrics::render(
        &c.serin.dataplane,
        Some(&c.control),
        None,
        serin_control::metrics::Format::Prometheus,
    )
    .expect("metrics render");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_copies_is_rolled_back_in_shadow_having_served_no_user() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    // 30 % of what reaches the canary is answered 500.
    canary.state.fail_tenths.store(3, Ordering::SeqCst);
    let dir = TempDir::new("shadow-fail");
    let rules = "          - error_rate: { max: 1% }\n";
    let yaml = rollout_config(stable.addr, canary.addr, &dir.0, &shadow_rollout("", rules));
    let c = Controlled::start(&yaml).await;
    assert_eq!((c.phase(), c.canary_weight()), (Phase::Progressing, 0));
    let load = Load::start(c.serin.url("/"), 8, Duration::ZERO);
    eventually(
        Duration::from_secs(20),
        "the canary failing in shadow is rolled back",
        || async { c.phase() == Phase::RolledBack },
    )
    .await;
    let tally = load.stop().await;

    // The canary saw copies only: not one client request reached it.
    let seen = canary.seen();
    assert!(seen.len() >= 20, "the canary saw {} copies", seen.len());
    let from_clients = seen.iter().filter(|s| !is_copy(s)).count();
    assert_eq!(from_clients, 0, "client requests reached the canary");
    // Clients never saw the canary's 500s: every answer came from the baseline.
    assert_eq!(tally.errors.load(Ordering::SeqCst), 0);
    let by_version = tally.by_version.lock().expect("tally").clone();
    assert_eq!(by_version.keys().collect::<Vec<_>>(), ["stable"]);

    let timeline = c.control.timeline("api");
    let rolled_back = timeline
        .iter()
        .find(|e| e.event == serin_judge::rollout::DecisionKind::RolledBack)
        .expect("a rolled_back event");
    assert_eq!(rolled_back.step, 0);
    let reason = rolled_back.reason.as_deref().unwrap_or_default();
    assert!(
        reason.ends_with("(in shadow: the canary served no user)"),
        "{reason}"
    );
    assert_eq!(
        rolled_back.rule.as_ref().map(|r| r.kind.as_str()),
        Some("error_rate")
    );
    // The copies' numbers are their own column, not the canary's live numbers.
    assert_eq!(rolled_back.versions["canary"].requests, 0);
    assert!(rolled_back.versions["canary:shadow"].errors > 0);

    // After the rollback no more copies go.
    let copies = canary.hits();
    let load = Load::start(c.serin.url("/"), 4, Duration::ZERO);
    let stable_now = stable.hits();
    eventually(
        Duration::from_secs(10),
        "traffic keeps flowing to the baseline",
        || async { stable.hits() > stable_now + 200 },
    )
    .await;
    load.stop().await;
    // Copies already in flight at the rollback (at most 8 clients' worth) may land.
    assert!(
        canary.hits() <= copies + 8,
        "{} copies after the rollback",
        canary.hits() - copies
    );
    assert!(
        metric(
            &c,
            "serin_shadow_copies_sent_total{service=\"api\",version=\"canary\"}"
        )
        .unwrap_or(0.0)
            >= 20.0
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_answering_200_with_another_body_fails_mismatch() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    // Both answer 200; the bodies are their names: "stable" and "canary".
    let dir = TempDir::new("shadow-mismatch");
    let rules = "          - error_rate: { max: 1% }\n          - mismatch: { max: 1% }\n";
    let block =
        "      shadow:\n        compare: { status: true, body: true, ignore_headers: [date] }\n";
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        &shadow_rollout(block, rules),
    );
    let c = Controlled::start(&yaml).await;
    let load = Load::start(c.serin.url("/mismatch/here?secret=1"), 8, Duration::ZERO);
    eventually(
        Duration::from_secs(20),
        "the canary answering differently is rolled back",
        || async { c.phase() == Phase::RolledBack },
    )
    .await;
    let tally = load.stop().await;
    assert_eq!(tally.errors.load(Ordering::SeqCst), 0);
    assert!(canary.seen().iter().all(is_copy));

    let timeline = c.control.timeline("api");
    let rolled_back = timeline
        .iter()
        .find(|e| e.event == serin_judge::rollout::DecisionKind::RolledBack)
        .expect("a rolled_back event");
    let rule = rolled_back.rule.as_ref().expect("the deciding rule");
    assert_eq!(
        (rule.kind.as_str(), rule.rule.as_str()),
        ("mismatch", "mismatch max 1%")
    );
    // A few examples of differing answers: method, path, both statuses; no query.
    let examples = &rolled_back.mismatches;
    assert!(!examples.is_empty() && examples.len() <= 5, "{examples:?}");
    let e = &examples[0];
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.client, e.canary),
        ("GET", "/mismatch/here", Some(200), Some(200))
    );
    assert_eq!(e.differed.as_deref(), Some("body"));
    assert!(
        metric(
            &c,
            "serin_shadow_mismatches_total{service=\"api\",version=\"canary\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    c.stop().await;
}

/// A canary whose answers carry one more header (`x-version: 2`) than the baseline's,
/// bodies alike, with headers compared leaving out `ignore`: its rollout's phase once
/// `copies` copies were compared, and the timeline's examples of differing answers.
async fn canary_adding_a_header(
    ignore: &str,
    copies: f64,
) -> (Phase, Vec<serin_control::wire::MismatchRecord>) {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    for b in [&stable, &canary] {
        b.state.body_len.store(16, Ordering::SeqCst);
    }
    *canary.state.extra_header.lock().expect("extra header") = Some(("x-version", "2"));
    let dir = TempDir::new("shadow-headers");
    let rules = "          - mismatch: { max: 1% }\n";
    let block = format!(
        "      shadow:\n        compare: {{ status: true, body: true, ignore_headers: [{ignore}] }}\n"
    );
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        &shadow_rollout(&block, rules),
    );
    let c = Controlled::start(&yaml).await;
    let load = Load::start(c.serin.url("/items"), 8, Duration::ZERO);
    let compared = "serin_shadow_compared_total{service=\"api\",version=\"canary\"}";
    eventually(
        Duration::from_secs(20),
        "the copies are compared, or the canary is rolled back",
        || async {
            c.phase() == Phase::RolledBack || metric(&c, compared).unwrap_or(0.0) >= copies
        },
    )
    .await;
    let tally = load.stop().await;
    assert_eq!(tally.errors.load(Ordering::SeqCst), 0);
    assert!(canary.seen().iter().all(is_copy));
    let examples = c
        .control
        .timeline("api")
        .iter()
        .find(|e| e.event == serin_judge::rollout::DecisionKind::RolledBack)
        .map(|e| e.mismatches.clone())
        .unwrap_or_default();
    let phase = c.phase();
    c.stop().await;
    (phase, examples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_adding_a_header_fails_mismatch_unless_the_header_is_ignored() {
    // `x-backend` names each backend: ignored in both runs.
    let (phase, examples) = canary_adding_a_header("date, x-backend", 200.0).await;
    assert_eq!(phase, Phase::RolledBack);
    let e = examples.first().expect("an example of differing answers");
    assert_eq!(
        (e.client, e.canary, e.differed.as_deref()),
        (Some(200), Some(200), Some("header x-version")),
        "the header is named, never its value"
    );

    let (phase, examples) = canary_adding_a_header("date, x-backend, x-version", 200.0).await;
    assert_eq!(phase, Phase::Progressing, "200 copies compared alike");
    assert!(examples.is_empty(), "{examples:?}");
}

/// The median of `n` sequential GETs' latencies through `url`.
async fn median_latency(url: &str, n: usize) -> Duration {
    let client = client();
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let got = get(&client, url, &[("x-user-id", &format!("u{i}"))]).await;
        took.push(started.elapsed());
        assert_eq!(got.body, "stable");
    }
    took.sort();
    took[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_canary_adds_nothing_to_clients_latency_and_copies_beyond_max_in_flight_are_dropped()
{
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    canary.set_delay(Duration::from_secs(5));
    let dir = TempDir::new("shadow-slow");
    // A rule a 5 s canary keeps, so that the shadow step goes on.
    let rules = "          - latency: { percentile: 50, max: 1m }\n";
    let block = "      shadow:\n        max_in_flight: 2\n";
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        &shadow_rollout(block, rules),
    );
    let c = Controlled::start(&yaml).await;
    // The same baseline without a rollout: no shadow.
    let plain = Serin::start(&stable_only_config(stable.addr).await).await;

    let without = median_latency(&plain.url("/"), 40).await;
    let with = median_latency(&c.serin.url("/"), 40).await;
    eprintln!("median latency: {with:?} with a 5 s canary in shadow, {without:?} without");
    // Loose: the copies' 5 s never reach a client.
    assert!(
        with < without + Duration::from_millis(250) && with < Duration::from_secs(1),
        "median {with:?} with shadow against {without:?} without"
    );
    // Copies within max_in_flight were sent: the canary was asked, though slowly.
    eventually(
        Duration::from_secs(5),
        "copies within max_in_flight reach the canary",
        || async { canary.hits() >= 1 },
    )
    .await;
    // At most max_in_flight copies per worker slot (2 slots in tests) reached the
    // canary; the others were dropped and counted.
    assert!(
        canary.hits() <= 4,
        "{} copies reached the canary",
        canary.hits()
    );
    let dropped = "serin_shadow_copies_dropped_total{service=\"api\",version=\"canary\",reason=\"in_flight\"}";
    eventually(
        Duration::from_secs(5),
        "the dropped copies are counted",
        || async { metric(&c, dropped).unwrap_or(0.0) >= 36.0 },
    )
    .await;
    assert_eq!(c.phase(), Phase::Progressing);
    plain.shutdown(Duration::from_secs(1)).await;
    c.stop().await;
}

async fn post(client: &TestClient, url: &str, body: &'static str) -> Got {
    let req = Request::post(url)
        .header("x-user-id", "poster")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    send(client, req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_copied_only_when_listed() {
    for (block, posts_copied) in [
        ("", false),
        ("      shadow:\n        methods: [GET, POST]\n", true),
    ] {
        let (stable, canary) = (
            Backend::start("stable").await,
            Backend::start("canary").await,
        );
        let dir = TempDir::new("shadow-post");
        let rules = "          - error_rate: { max: 1% }\n";
        let yaml = rollout_config(
            stable.addr,
            canary.addr,
            &dir.0,
            &shadow_rollout(block, rules),
        );
        let c = Controlled::start(&yaml).await;
        let client = client();
        for _ in 0..10 {
            assert_eq!(
                post(&client, &c.serin.url("/orders"), "order-1").await.body,
                "stable"
            );
            assert_eq!(
                get(&client, &c.serin.url("/orders"), &[]).await.body,
                "stable"
            );
        }
        eventually(
            Duration::from_secs(5),
            "the GETs' copies arrive",
            || async {
                canary
                    .seen()
                    .iter()
                    .filter(|s| s.method == http::Method::GET)
                    .count()
                    == 10
            },
        )
        .await;
        let posts = || {
            canary
                .seen()
                .iter()
                .filter(|s| s.method == http::Method::POST)
                .count()
        };
        if posts_copied {
            eventually(
                Duration::from_secs(5),
                "the POSTs' copies arrive",
                || async { posts() == 10 },
            )
            .await;
            // Each copy carries the client's body.
            assert_eq!(canary.received(), 10 * "order-1".len());
        } else {
            assert_eq!(posts(), 0, "POST copied without being listed");
        }
        assert!(canary.seen().iter().all(is_copy));
        assert_eq!(stable.hits(), 20);
        c.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_requests_are_not_copied_and_a_reload_keeps_the_shadow_step_copying() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let dir = TempDir::new("shadow-force");
    let config = |max_in_flight: u32| {
        let rollout = shadow_rollout(
            &format!("      shadow:\n        max_in_flight: {max_in_flight}\n"),
            "          - error_rate: { max: 1% }\n",
        );
        format!(
            "state_dir: \"{}\"\n{}",
            dir.0.display(),
            two_versions(
                stable.addr,
                canary.addr,
                &format!(
                    "    split:\n      weights: {{ stable: 100, canary: 0 }}\n      sticky: {{ header: x-user-id }}\n      force: {{ header: x-version }}\n    rollout:\n{rollout}"
                ),
            )
        )
    };
    let c = Controlled::start(&config(16)).await;
    let client = client();
    let url = c.serin.url("/");
    // Forced to the baseline: answered by it, not copied.
    let got = get(&client, &url, &[("x-version", "stable")]).await;
    assert_eq!(got.body, "stable");
    // Forced to the canary: the canary answers it live, as without shadowing.
    let got = get(&client, &url, &[("x-version", "canary")]).await;
    assert_eq!(got.body, "canary");
    // Not forced: the baseline answers, a copy goes to the canary.
    assert_eq!(
        get(&client, &url, &[("x-user-id", "u1")]).await.body,
        "stable"
    );
    eventually(
        Duration::from_secs(5),
        "the unforced request's copy arrives",
        || async { canary.hits() == 2 },
    )
    .await;
    let seen = canary.seen();
    assert!(!is_copy(&seen[0]), "the forced request is live");
    assert!(is_copy(&seen[1]), "the unforced request is a copy");

    // A reload that keeps the rollout's spec keeps its shadow step copying.
    let snapshot =
        serin_config::parse_str(&config(32), "reload.yaml").unwrap_or_else(|e| panic!("{e}"));
    c.control
        .reconfigure(snapshot, serin_control::runner::now_ms())
        .expect("reload");
    assert_eq!((c.phase(), c.canary_weight()), (Phase::Progressing, 0));
    assert_eq!(
        get(&client, &url, &[("x-user-id", "u2")]).await.body,
        "stable"
    );
    eventually(
        Duration::from_secs(5),
        "copies go on after the reload",
        || async { canary.hits() == 3 },
    )
    .await;
    assert!(is_copy(&canary.last_seen()));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_advances_from_shadow_to_its_first_weight_step_and_copies_end() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let dir = TempDir::new("shadow-advance");
    let rollout = format!(
        "      baseline: stable\n      canary: canary\n      steps:\n        - {{ shadow: 100%, hold: 1s }}\n        - {{ weight: 30, hold: 1h }}\n        - {{ weight: 100 }}\n      analysis:\n{FAST}\n        rules:\n          - error_rate: {{ max: 1% }}\n          - mismatch: {{ max: 1% }}\n"
    );
    let yaml = rollout_config(stable.addr, canary.addr, &dir.0, &rollout);
    let c = Controlled::start(&yaml).await;
    let load = Load::start(c.serin.url("/"), 4, Duration::ZERO);
    eventually(
        Duration::from_secs(20),
        "the canary passes its shadow step",
        || async { c.control.status("api").is_some_and(|s| s.step == 1) },
    )
    .await;
    assert_eq!((c.phase(), c.canary_weight()), (Phase::Progressing, 30));
    let copies = canary.seen().iter().filter(|s| is_copy(s)).count();
    assert!(copies >= 20, "{copies} copies before the weight step");
    // At the weight step users reach the canary, and copies end.
    eventually(
        Duration::from_secs(10),
        "users reach the canary at its first weight step",
        || async { canary.seen().iter().filter(|s| !is_copy(s)).count() >= 100 },
    )
    .await;
    load.stop().await;
    let copies_after = canary.seen().iter().filter(|s| is_copy(s)).count();
    // Only copies in flight when the step changed (4 clients) may land after it.
    assert!(
        copies_after <= copies + 4,
        "{} copies after the weight step",
        copies_after - copies
    );
    let timeline = c.control.timeline("api");
    let advanced = timeline
        .iter()
        .find(|e| e.event == serin_judge::rollout::DecisionKind::StepAdvanced)
        .expect("a step_advanced event");
    assert_eq!(advanced.weights.get("canary"), Some(&30));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_bodies_over_max_body_are_not_compared_and_counted() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    // Both answer 64 KiB bodies of the same bytes; only 1 KiB is compared.
    stable.state.body_len.store(64 * 1024, Ordering::SeqCst);
    canary.state.body_len.store(64 * 1024, Ordering::SeqCst);
    let dir = TempDir::new("shadow-large");
    let rules = "          - error_rate: { max: 1% }\n          - mismatch: { max: 1% }\n";
    let block =
        "      shadow:\n        max_body: 1KiB\n        compare: { status: true, body: true }\n";
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        &shadow_rollout(block, rules),
    );
    let c = Controlled::start(&yaml).await;
    let client = client();
    for i in 0..30 {
        let got = get(
            &client,
            &c.serin.url("/"),
            &[("x-user-id", &format!("u{i}"))],
        )
        .await;
        assert_eq!(got.body.len(), 64 * 1024);
    }
    let not_compared = "serin_shadow_not_compared_total{service=\"api\",version=\"canary\"}";
    eventually(
        Duration::from_secs(10),
        "the 30 copies are counted as not compared",
        || async { metric(&c, not_compared) == Some(30.0) },
    )
    .await;
    let compared = "serin_shadow_compared_total{service=\"api\",version=\"canary\"}";
    assert_eq!(metric(&c, compared), Some(0.0));
    // Nothing compared is no evidence either way: the shadow step goes on.
    assert_eq!(c.phase(), Phase::Progressing);
    c.stop().await;
}
