//! Rollout notifications end to end: webhook receivers on loopback get what the control
//! loop decided, as the config asks; receivers that are down, hang or fail never hold a
//! rollback up, and every outcome is counted. Deliveries are polled, never slept for.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::process::SerinProcess;
use crate::common::*;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use serin_control::notify::NotifyCounts;
use serin_control::runner::now_ms;
use serin_judge::rollout::{DecisionKind, Event, Phase};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const FAST: &str = "        interval: 100ms\n        window: 5s\n        min_requests: 20\n        confidence: 99%";

/// A rollout held at 30 % (its hold never ends in a test) with a tight error-rate rule.
fn held_rollout() -> String {
    format!(
        "      baseline: stable\n      canary: canary\n      steps:\n        - {{ weight: 30, hold: 1h }}\n        - {{ weight: 100 }}\n      analysis:\n{FAST}\n        rules:\n          - error_rate: {{ max: 1% }}\n"
    )
}

/// One `notify` item: `url`, `events` (a YAML list's inside) and `extra` keys (each a
/// `key: value` line of the item).
fn target(url: &str, events: &str, extra: &[&str]) -> String {
    let mut item = format!("  - url: \"{url}\"\n    events: [{events}]\n");
    for line in extra {
        item.push_str(&format!("    {line}\n"));
    }
    item
}

/// The rollout config of `stable` and `canary` with the `notify` items `targets`.
fn config(stable: &Backend, canary: &Backend, dir: &TempDir, targets: &[String]) -> String {
    format!(
        "{}notify:\n{}",
        rollout_config(stable.addr, canary.addr, &dir.0, &held_rollout()),
        targets.concat()
    )
}

/// What a receiver got in one request.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Received>>,
    /// Statuses to answer with, in order; 200 once they run out.
    script: Mutex<VecDeque<u16>>,
}

/// A webhook receiver on loopback that answers as scripted.
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let socket = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = socket.local_addr().expect("receiver addr");
        let state = Arc::new(ReceiverState {
            got: Mutex::new(Vec::new()),
            script: Mutex::new(script.iter().copied().collect()),
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = socket.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let headers = req.headers().clone();
                            let bytes = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                                Value::String(String::from_utf8_lossy(&bytes).into_owned())
                            });
                            st.got.lock().expect("got").push(Received {
                                path,
                                headers,
                                body,
                            });
                            let status = st.script.lock().expect("script").pop_front();
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *resp.status_mut() =
                                StatusCode::from_u16(status.unwrap_or(200)).expect("status");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn got(&self) -> Vec<Received> {
        self.state.got.lock().expect("got").clone()
    }

    fn events(&self) -> Vec<String> {
        self.got()
            .iter()
            .map(|r| r.body["event"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

/// A receiver that accepts connections and never answers; counts the connections.
async fn hanging_receiver() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, accepted)
}

fn counts(c: &Controlled) -> NotifyCounts {
    c.control.notifier().counts()
}

/// The end of the control loop's newest tick.
fn newest_tick(c: &Controlled) -> u64 {
    c.control.numbers_since("api", 0).expect("api").0
}

/// Sends steady load until the canary answers 500s, and waits for the rollback.
async fn fail_the_canary(c: &Controlled, canary: &Backend) -> Load {
    let load = Load::start(c.serin.url("/"), 8, Duration::ZERO);
    eventually(
        Duration::from_secs(10),
        "the canary serves traffic",
        || async { canary.hits() > 50 },
    )
    .await;
    canary.set_status(500);
    eventually(
        Duration::from_secs(10),
        "the failing canary is rolled back",
        || async { c.phase() == Phase::RolledBack },
    )
    .await;
    load
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_rollback_sends_the_incident() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let hook = Receiver::start(&[]).await;
    let dir = TempDir::new("notify-rollback");
    let yaml = config(
        &stable,
        &canary,
        &dir,
        &[target(
            &hook.url("/hooks/serin"),
            "rolled_back, promoted, paused, step_advanced",
            &[
                "format: json",
                "timeout: 2s",
                "headers: { Authorization: \"Bearer t0ken\" }",
            ],
        )],
    );
    let c = Controlled::start(&yaml).await;
    let load = fail_the_canary(&c, &canary).await;
    eventually(
        Duration::from_secs(10),
        "the webhook gets the rollback",
        || async { !hook.got().is_empty() },
    )
    .await;
    load.stop().await;

    // Only the subscribed decision: the start and the holds are not sent.
    assert_eq!(hook.events(), ["rolled_back"]);
    let got = &hook.got()[0];
    assert_eq!(got.path, "/hooks/serin");
    assert_eq!(got.headers["authorization"], "Bearer t0ken");
    assert_eq!(got.headers["content-type"], "application/json");
    let n = &got.body;
    assert_eq!(n["event"], "rolled_back");
    assert_eq!(n["service"], "api");
    assert_eq!(n["version"], "canary");
    assert_eq!(n["baseline"], "stable");
    assert_eq!(n["previous_weights"], json!({ "stable": 70, "canary": 30 }));
    assert_eq!(n["new_weights"], json!({ "stable": 100, "canary": 0 }));
    assert_eq!(n["action"], "canary weight set to 0 (was 30)");
    assert_eq!(n["manual"], false);
    assert_eq!(
        n["status"],
        json!({ "state": "rolled_back", "step": 0, "steps": 2, "canary_weight": 0 })
    );
    assert_eq!(n["window"], "5s");
    // The rule that decided, with its numbers.
    assert_eq!(n["rule"]["rule"], "error_rate max 1%");
    assert_eq!(n["rule"]["kind"], "error_rate");
    assert_eq!(n["rule"]["threshold"], 0.01);
    let observed = n["rule"]["observed"].as_f64().expect("observed");
    assert!(observed > 0.01, "{n}");
    assert!(n["rule"]["summary"]
        .as_str()
        .is_some_and(|s| s.starts_with("canary error rate ")));
    // Both versions' numbers over the window: the canary failing, the baseline not.
    let (c_numbers, s_numbers) = (&n["metrics"]["canary"], &n["metrics"]["stable"]);
    assert!(c_numbers["errors"].as_u64() > Some(0), "{n}");
    assert!(c_numbers["error_rate"].as_f64() > Some(0.01), "{n}");
    assert!(s_numbers["requests"].as_u64() > Some(0), "{n}");
    assert_eq!(s_numbers["errors"], 0);
    for numbers in [c_numbers, s_numbers] {
        assert!(
            numbers["p95_ms"].is_number() && numbers["p99_ms"].is_number(),
            "{n}"
        );
    }
    // Times: RFC 3339 with milliseconds, so their text sorts as they do.
    let time = |key: &str| n[key].as_str().expect(key).to_string();
    let (started, breach, at) = (
        time("rollout_started_at"),
        time("breach_started_at"),
        time("at"),
    );
    assert!(started <= breach && breach <= at, "{n}");
    assert!(["first_failing_tick", "decision"]
        .contains(&n["breach_started_at_source"].as_str().unwrap_or("")));
    // The same decision as the timeline's.
    let timeline = c.control.timeline("api");
    let recorded = timeline
        .iter()
        .find(|e| e.event == DecisionKind::RolledBack)
        .expect("rolled_back on the timeline");
    assert_eq!(n["at"], recorded.at.as_str());
    assert_eq!(
        c_numbers["requests"].as_u64(),
        Some(recorded.versions["canary"].requests)
    );
    eventually(
        Duration::from_secs(5),
        "the delivery is counted",
        || async { counts(&c).delivered == 1 },
    )
    .await;
    assert_eq!(
        counts(&c),
        NotifyCounts {
            delivered: 1,
            failed: 0,
            dropped: 0
        }
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_promote_is_sent_and_unsubscribed_decisions_are_not() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let hook = Receiver::start(&[]).await;
    let dir = TempDir::new("notify-promote");
    let yaml = config(
        &stable,
        &canary,
        &dir,
        &[target(&hook.url("/"), "paused, promoted", &[])],
    );
    let c = Controlled::start(&yaml).await;
    // started (at start), paused, resumed, promoted: two of them are subscribed.
    c.control.command("api", Event::Pause, now_ms());
    c.control.command("api", Event::Resume, now_ms());
    let status = c.control.command("api", Event::Promote, now_ms());
    assert_eq!(status.map(|s| s.phase), Some(Phase::Promoted));
    eventually(
        Duration::from_secs(10),
        "the webhook gets the promotion",
        || async { hook.got().len() >= 2 },
    )
    .await;
    // One queue per target, sent in order: nothing else came before or between.
    assert_eq!(hook.events(), ["paused", "promoted"]);
    let paused = &hook.got()[0].body;
    assert_eq!(paused["manual"], true);
    assert_eq!(paused["reason"], "paused by hand");
    assert_eq!(
        paused["action"],
        "weights kept: the canary stays at 30, paused for a person to decide"
    );
    let n = &hook.got()[1].body;
    assert_eq!(n["manual"], true);
    assert_eq!(n["reason"], "promoted by hand");
    assert_eq!(n["previous_weights"], json!({ "stable": 70, "canary": 30 }));
    assert_eq!(n["new_weights"], json!({ "stable": 0, "canary": 100 }));
    assert_eq!(n["action"], "canary weight set to 100 (was 30)");
    assert_eq!(n["status"]["state"], "promoted");
    assert_eq!(n["rule"], Value::Null);
    assert_eq!(n["breach_started_at"], Value::Null);
    assert_eq!(n["breach_started_at_source"], Value::Null);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_set_by_hand_are_sent_with_the_weights_before_them() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let hook = Receiver::start(&[]).await;
    let dir = TempDir::new("notify-weights");
    let yaml = config(
        &stable,
        &canary,
        &dir,
        &[target(&hook.url("/"), "manual_weights", &[])],
    );
    let c = Controlled::start(&yaml).await;
    c.control
        .set_weights_manually("api", &[("stable", 50), ("canary", 50)], now_ms())
        .expect("weights set");
    eventually(
        Duration::from_secs(10),
        "the webhook gets the change",
        || async { !hook.got().is_empty() },
    )
    .await;
    assert_eq!(hook.events(), ["manual_weights"]);
    let n = &hook.got()[0].body;
    assert_eq!(n["manual"], true);
    assert_eq!(n["previous_weights"], json!({ "stable": 70, "canary": 30 }));
    assert_eq!(n["new_weights"], json!({ "stable": 50, "canary": 50 }));
    assert_eq!(n["action"], "canary weight set to 50 (was 30)");
    assert_eq!(
        n["status"],
        json!({ "state": "paused", "step": 0, "steps": 2, "canary_weight": 50 })
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slack_format_is_a_text_naming_the_service_and_the_canary() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let hook = Receiver::start(&[]).await;
    let dir = TempDir::new("notify-slack");
    let yaml = config(
        &stable,
        &canary,
        &dir,
        &[target(
            &hook.url("/services/T0/B0/x"),
            "paused",
            &["format: slack"],
        )],
    );
    let c = Controlled::start(&yaml).await;
    c.control.command("api", Event::Pause, now_ms());
    eventually(
        Duration::from_secs(10),
        "the webhook gets the pause",
        || async { !hook.got().is_empty() },
    )
    .await;
    let got = &hook.got()[0];
    assert_eq!(got.headers["content-type"], "application/json");
    let body = got.body.as_object().expect("a JSON object");
    assert_eq!(body.keys().collect::<Vec<_>>(), ["text"]);
    let text = body["text"].as_str().expect("text is a string");
    assert!(
        text.starts_with("serin: api: the rollout of canary canary was paused by hand at 30%."),
        "{text}"
    );
    assert!(text.contains("Reason: paused by hand."), "{text}");
    assert!(
        text.contains("weights canary 30, stable 70 → canary 30, stable 70"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_is_down_or_hangs_does_not_hold_the_rollback_up() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let down = closed_port().await;
    let (hangs, accepted) = hanging_receiver().await;
    let dir = TempDir::new("notify-down");
    // Both are sent the start, at once: the hanging one is still on it at the rollback.
    let yaml = config(
        &stable,
        &canary,
        &dir,
        &[
            target(
                &format!("http://{down}/hook"),
                "started, rolled_back",
                &["retries: 1"],
            ),
            target(
                &format!("http://{hangs}/hook"),
                "started, rolled_back",
                &["timeout: 1s", "retries: 1"],
            ),
        ],
    );
    let c = Controlled::start(&yaml).await;
    let load = fail_the_canary(&c, &canary).await;
    // The canary gets nothing any more, and the control loop goes on ticking.
    let weight = |name: &str| {
        c.serin
            .dataplane
            .view()
            .weights_of("api")
            .and_then(|mut weights| weights.find(|(v, _)| *v == name).map(|(_, w)| w))
    };
    assert_eq!((weight("stable"), weight("canary")), (Some(100), Some(0)));
    assert_eq!(c.canary_weight(), 0);
    let tick = newest_tick(&c);
    eventually(
        Duration::from_secs(5),
        "the control loop keeps ticking",
        || async { newest_tick(&c) > tick },
    )
    .await;
    load.stop().await;
    // Two notifications to each, each tried twice, none delivered.
    eventually(
        Duration::from_secs(30),
        "every delivery fails and is counted",
        || async { counts(&c).failed == 4 },
    )
    .await;
    assert_eq!(
        counts(&c),
        NotifyCounts {
            delivered: 0,
            failed: 4,
            dropped: 0
        }
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_other_client_errors_are_not() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let flaky = Receiver::start(&[500, 500]).await;
    let throttled = Receiver::start(&[429]).await;
    let wrong = Receiver::start(&[404]).await;
    let dir = TempDir::new("notify-retry");
    let yaml = config(
        &stable,
        &canary,
        &dir,
        &[
            target(&flaky.url("/flaky"), "paused", &[]),
            target(&throttled.url("/throttled"), "paused", &[]),
            target(&wrong.url("/wrong"), "paused", &[]),
        ],
    );
    let c = Controlled::start(&yaml).await;
    c.control.command("api", Event::Pause, now_ms());
    eventually(
        Duration::from_secs(20),
        "two deliveries succeed after retries and one fails",
        || async {
            counts(&c)
                == NotifyCounts {
                    delivered: 2,
                    failed: 1,
                    dropped: 0,
                }
        },
    )
    .await;
    // 500, 500, then 200: three times the same notification.
    assert_eq!(flaky.events(), ["paused", "paused", "paused"]);
    let bodies: Vec<Value> = flaky.got().into_iter().map(|r| r.body).collect();
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    // 429 is retried too.
    assert_eq!(throttled.events(), ["paused", "paused"]);
    // 404 is not: once.
    assert_eq!(wrong.events(), ["paused"]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_where_later_decisions_go() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let (before, after) = (Receiver::start(&[]).await, Receiver::start(&[]).await);
    let dir = TempDir::new("notify-reload");
    let yaml = config(
        &stable,
        &canary,
        &dir,
        &[target(&before.url("/"), "paused, resumed", &[])],
    );
    let c = Controlled::start(&yaml).await;
    c.control.command("api", Event::Pause, now_ms());
    eventually(
        Duration::from_secs(10),
        "the first webhook gets the pause",
        || async { before.events() == ["paused"] },
    )
    .await;
    let reloaded = config(
        &stable,
        &canary,
        &dir,
        &[target(&after.url("/"), "resumed", &[])],
    );
    let snapshot = serin_config::parse_str(&reloaded, "test.yaml").expect("valid config");
    let changes = c
        .control
        .reconfigure(snapshot, now_ms())
        .expect("reconfigured");
    // The rollout's spec did not change: it stays paused, where it was.
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(c.phase(), Phase::Paused);
    c.control.command("api", Event::Resume, now_ms());
    eventually(
        Duration::from_secs(10),
        "the new webhook gets the resume",
        || async { after.events() == ["resumed"] },
    )
    .await;
    assert_eq!(before.events(), ["paused"]);
    c.stop().await;
}

/// The real binary: a webhook's URL path and header values never reach the logs,
/// whatever happens to the delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serin_run_never_logs_a_webhooks_secrets() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let failing = Receiver::start(&[503]).await;
    let down = closed_port().await;
    let dir = TempDir::new("notify-secrets");
    let secret_header = "headers: { Authorization: \"Bearer n0t-in-the-logs\" }";
    let yaml = config(
        &stable,
        &canary,
        &dir,
        &[
            target(
                &failing.url("/hooks/s3cret-path?key=s3cret-query"),
                "paused",
                &["retries: 0", secret_header],
            ),
            target(
                &format!("http://{down}/hooks/s3cret-path"),
                "paused",
                &["retries: 0", secret_header],
            ),
        ],
    );
    let path = dir.0.join("serin.yaml");
    std::fs::write(&path, yaml).expect("write the config");
    let mut serin = SerinProcess::start(&path, 1, &["--no-watch"], &[]);
    let paused = send(
        &client(),
        Request::post(format!("{}/api/v1/services/api/pause", serin.admin_url()))
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.body);
    for _ in 0..2 {
        let line = serin.wait_for("a failed delivery", |l| {
            l["message"] == "notification not delivered"
        });
        let text = line.to_string();
        assert!(text.contains("/…"), "{text}");
    }
    // The receiver got the request, header and all.
    assert_eq!(failing.got().len(), 1);
    assert_eq!(
        failing.got()[0].headers["authorization"],
        "Bearer n0t-in-the-logs"
    );
    for line in serin.all_logged() {
        let text = line.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("n0t-in-the-logs"),
            "a secret in the logs: {text}"
        );
    }
}
