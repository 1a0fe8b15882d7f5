//! Rollback drills end to end: serin with its control loop and admin API in this
//! process, real backends and real traffic. A drill injects faults into the canary's
//! answers (clients see serin's 503, the canary's backend never sees those requests),
//! the rollout's rules react, and the drill's report, timeline and webhooks say what
//! happened; a drill ends on its own, at a reload, and is refused when it may not run.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use serin_control::admin::{Admin, AdminContext, Health};
use serin_control::runner::now_ms;
use serin_judge::rollout::Phase;
use tokio::net::TcpListener;

const TOKEN: &str = "drill-t0ken";

/// A rollout held at 30 % whose error-rate rule a healthy canary passes.
const GUARDED: &str = "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 30, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 5s\n        min_requests: 20\n        confidence: 99%\n        rules:\n          - error_rate: { max: 1% }\n";

/// A rollout held at 30 % judged on latency alone, which a drill's instant 503s never
/// fail: the drill runs until its end.
const LATENCY_ONLY: &str = "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 30, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 5s\n        rules:\n          - latency: { percentile: 99, max: 10s }\n";

/// Webhook bodies received, in order.
#[derive(Clone, Default)]
struct Hook(Arc<Mutex<Vec<Value>>>);

impl Hook {
    async fn start() -> (Hook, String) {
        let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind hook");
        let url = format!("http://{}/hook", socket.local_addr().expect("addr"));
        let hook = Hook::default();
        let got = hook.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                let got = got.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let got = got.clone();
                        async move {
                            let bytes = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if let Ok(body) = serde_json::from_slice(&bytes) {
                                got.0.lock().expect("hook").push(body);
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (hook, url)
    }

    fn got(&self) -> Vec<Value> {
        self.0.lock().expect("hook").clone()
    }
}

struct Setup {
    stable: Backend,
    canary: Backend,
    c: Controlled,
    admin: Admin,
    client: TestClient,
    yaml: String,
    _dir: TempDir,
}

impl Setup {
    /// `api` with stable and canary and `rollout` (none if empty), `admin.drills` as
    /// `drills`, the admin token `token`, and `extra` appended to the config.
    async fn start(rollout: &str, drills: bool, token: Option<&str>, extra: &str) -> Setup {
        let (stable, canary) = (
            Backend::start("stable").await,
            Backend::start("canary").await,
        );
        let dir = TempDir::new("drill");
        let yaml = if rollout.is_empty() {
            format!(
                "state_dir: \"{}\"\n{}",
                dir.0.display(),
                two_versions(
                    stable.addr,
                    canary.addr,
                    "    split: { weights: { stable: 70, canary: 30 } }"
                )
            )
        } else {
            rollout_config(stable.addr, canary.addr, &dir.0, rollout)
        };
        let yaml = format!(
            "{}{extra}",
            yaml.replace(
                "admin: { listen: 127.0.0.1:0 }",
                &format!("admin: {{ listen: 127.0.0.1:0, drills: {drills} }}")
            )
        );
        let c = Controlled::start(&yaml).await;
        let health = Arc::new(Health::default());
        health.set_ready();
        let context = AdminContext {
            control: Some(c.control.clone()),
            token: token.map(str::to_string),
            ..AdminContext::new(health, c.serin.dataplane.clone())
        };
        let admin = Admin::bind("127.0.0.1:0".parse().expect("addr"), context)
            .await
            .expect("bind the admin API");
        Setup {
            stable,
            canary,
            c,
            admin,
            client: client(),
            yaml,
            _dir: dir,
        }
    }

    async fn call(&self, method: Method, path: &str, body: &str, token: Option<&str>) -> Got {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin.local_addr))
            .header("content-type", "application/json");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        send(&self.client, req).await
    }

    /// Starts a drill on `api` with the token.
    async fn drill(&self, body: &str) -> Got {
        self.call(
            Method::POST,
            "/api/v1/services/api/drill",
            body,
            Some(TOKEN),
        )
        .await
    }

    async fn report(&self) -> Value {
        let got = self
            .call(Method::GET, "/api/v1/services/api/drill", "", Some(TOKEN))
            .await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        json(&got)
    }

    fn timeline(&self) -> Vec<Value> {
        self.c
            .control
            .timeline("api")
            .iter()
            .map(|e| serde_json::to_value(e).expect("event"))
            .collect()
    }

    fn events(&self) -> Vec<String> {
        self.timeline()
            .iter()
            .map(|e| e["event"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// Requests as new users until one is answered by the canary's backend itself (200).
    async fn canary_answers_normally(&self) -> bool {
        for n in 0..200 {
            let user = format!("probe-{n}");
            let got = get(
                &self.client,
                &self.c.serin.url("/"),
                &[("x-user-id", &user)],
            )
            .await;
            if got.headers.get("x-serin-version").map(|v| v.as_bytes()) == Some(b"canary") {
                return got.status == StatusCode::OK && got.headers.get("x-serin-fault").is_none();
            }
        }
        false
    }

    async fn stop(self) {
        self.admin.shutdown().await;
        self.c.stop().await;
    }
}

fn json(got: &Got) -> Value {
    serde_json::from_str(&got.body).unwrap_or_else(|e| panic!("{e}: {}", got.body))
}

fn error_of(got: &Got, status: StatusCode) -> String {
    assert_eq!(got.status, status, "{}", got.body);
    json(got)["error"].as_str().expect("error").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_rolls_back_a_healthy_canary_and_reports_the_numbers() {
    let (hook, url) = Hook::start().await;
    let notify = format!(
        "notify:\n  - {{ url: \"{url}\", events: [rolled_back, drill_started, drill_ended] }}\n"
    );
    let s = Setup::start(GUARDED, true, Some(TOKEN), &notify).await;
    let load = Load::start(s.c.serin.url("/"), 8, Duration::ZERO);
    eventually(
        Duration::from_secs(10),
        "the canary serves traffic",
        || async { s.canary.hits() > 50 },
    )
    .await;
    assert_eq!(s.c.phase(), Phase::Progressing, "a healthy canary");
    assert_eq!(load.errors(), 0);

    let started = s
        .drill(r#"{"errors": "20%", "latency": "+5ms", "for": "2m"}"#)
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let started = json(&started);
    assert_eq!(started["state"], "running");
    assert_eq!(started["errors"], "20%");
    assert_eq!(started["latency_ms"], 5);
    assert_eq!(started["for_s"], 120);
    assert_eq!(started["canary_weight_at_start"], 30);
    let canary_hits_at_start = s.canary.hits();

    eventually(
        Duration::from_secs(20),
        "the drill's faults roll the canary back",
        || async { s.c.phase() == Phase::RolledBack },
    )
    .await;
    let tally = load.stop().await;
    let faulted = tally.errors.load(std::sync::atomic::Ordering::SeqCst) as u64;

    eventually(
        Duration::from_secs(10),
        "the drill ends with the rollback",
        || async { s.report().await["state"] == "ended" },
    )
    .await;
    let report = s.report().await;
    assert_eq!(report["ended_by"], "rolled_back", "{report}");
    assert_eq!(report["rolled_back"], true);
    assert_eq!(report["rolled_back_by_hand"], false);
    let to_zero = report["injection_to_zero_ms"]
        .as_u64()
        .expect("a time to 0");
    assert!(to_zero < 20_000, "{report}");
    // Every 503 a client saw was the drill's (the stable and canary backends answer
    // 200), and every one is in the report.
    assert!(faulted > 0);
    assert_eq!(
        report["faults"]["errors"].as_u64(),
        Some(faulted),
        "{report}"
    );
    let delayed = report["faults"]["delayed"].as_u64().expect("delayed");
    assert!(delayed > 0, "{report}");
    // The 503s never reached the canary's backend; the delayed requests did (and at
    // most the 8 clients' requests already under way when the drill began).
    let canary_during = (s.canary.hits() - canary_hits_at_start) as u64;
    assert!(
        (delayed..=delayed + 8).contains(&canary_during),
        "{canary_during} canary hits: {report}"
    );

    // The timeline: the drill's start, the rollback it caused (marked), its end.
    let timeline = s.timeline();
    let at = |event: &str| {
        timeline
            .iter()
            .find(|e| e["event"] == event)
            .unwrap_or_else(|| panic!("no {event} in {timeline:?}"))
            .clone()
    };
    assert_eq!(at("drill_started")["drill"], true);
    assert_eq!(at("drill_started")["manual"], true);
    assert_eq!(at("rolled_back")["drill"], true);
    assert_eq!(at("drill_ended")["drill"], true);
    assert!(at("drill_ended")["reason"]
        .as_str()
        .is_some_and(|r| r.contains("the rollout rolled back")));
    assert!(at("started").get("drill").is_none(), "before the drill");

    // The webhook got the rollback marked as a drill, and the report says so.
    eventually(
        Duration::from_secs(10),
        "the webhook gets the rollback",
        || async { s.report().await["rollback_notified"] == true },
    )
    .await;
    let got = hook.got();
    let rolled_back = got
        .iter()
        .find(|n| n["event"] == "rolled_back")
        .expect("the rollback was sent");
    assert_eq!(rolled_back["drill"], true);
    let report = s.report().await;
    let notified: Vec<&str> = report["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| n["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(notified, ["drill_started", "rolled_back", "drill_ended"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drills_503_says_it_is_a_drill_and_only_the_canary_gets_it() {
    let s = Setup::start(LATENCY_ONLY, true, Some(TOKEN), "").await;
    let started = s.drill(r#"{"errors": "100%", "for": "1m"}"#).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let (mut canary, mut stable) = (0, 0);
    for n in 0..60 {
        let user = format!("user-{n}");
        let got = get(&s.client, &s.c.serin.url("/"), &[("x-user-id", &user)]).await;
        match got.headers.get("x-serin-version").map(|v| v.as_bytes()) {
            Some(b"canary") => {
                canary += 1;
                assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(got.headers["x-serin-fault"], "drill");
                assert!(
                    got.body
                        .contains("fault injected by a serin rollback drill"),
                    "{}",
                    got.body
                );
            }
            _ => {
                stable += 1;
                assert_eq!(got.status, StatusCode::OK);
            }
        }
    }
    assert!(canary > 0 && stable > 0, "{canary} canary, {stable} stable");
    assert_eq!(s.canary.hits(), 0, "no drill 503 reached the canary");
    assert_eq!(s.stable.hits(), stable);
    let report = s.report().await;
    assert_eq!(report["faults"]["errors"], canary as u64);
    // The service's view and /metrics say a drill runs.
    let view = s
        .call(Method::GET, "/api/v1/services/api", "", Some(TOKEN))
        .await;
    assert_eq!(json(&view)["drill"]["state"], "running", "{}", view.body);
    let metrics = s.call(Method::GET, "/metrics", "", None).await.body;
    assert!(
        metrics.contains("serin_drill_active{service=\"api\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "serin_drill_faults_total{{service=\"api\",fault=\"error\"}} {canary}\n"
        )),
        "{metrics}"
    );
    let ended = s
        .call(
            Method::DELETE,
            "/api/v1/services/api/drill",
            "",
            Some(TOKEN),
        )
        .await;
    assert_eq!(ended.status, StatusCode::OK);
    let view = s
        .call(Method::GET, "/api/v1/services/api", "", Some(TOKEN))
        .await;
    assert!(json(&view).get("drill").is_none(), "{}", view.body);
    let metrics = s.call(Method::GET, "/metrics", "", None).await.body;
    assert!(
        metrics.contains("serin_drill_active{service=\"api\"} 0\n"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_expires_on_its_own() {
    let s = Setup::start(LATENCY_ONLY, true, Some(TOKEN), "").await;
    let started = s.drill(r#"{"errors": "100%", "for": "1s"}"#).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert!(!s.canary_answers_normally().await, "faults while it runs");
    eventually(
        Duration::from_secs(10),
        "the drill ends at its time",
        || async { s.report().await["state"] == "ended" },
    )
    .await;
    let report = s.report().await;
    assert_eq!(report["ended_by"], "expired", "{report}");
    assert_eq!(report["rolled_back"], false);
    assert_eq!(report["injection_to_zero_ms"], Value::Null);
    assert!(
        s.canary_answers_normally().await,
        "the canary answers again"
    );
    assert_eq!(s.c.phase(), Phase::Progressing);
    let ended = s
        .timeline()
        .into_iter()
        .find(|e| e["event"] == "drill_ended")
        .expect("drill_ended on the timeline");
    assert!(ended["reason"]
        .as_str()
        .is_some_and(|r| r.contains("the drill's time is up")));
    assert_eq!(ended["manual"], false);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_ends_a_drill_and_delete_ends_one_early() {
    let s = Setup::start(LATENCY_ONLY, true, Some(TOKEN), "").await;
    assert_eq!(
        s.drill(r#"{"errors": "100%", "for": "1h"}"#).await.status,
        StatusCode::OK
    );
    let again = s.drill(r#"{"errors": "100%", "for": "1h"}"#).await;
    let err = error_of(&again, StatusCode::CONFLICT);
    assert!(err.contains("a drill runs on \"api\" already"), "{err}");
    assert!(!s.canary_answers_normally().await, "faults while it runs");

    let snapshot = serin_config::parse_str(&s.yaml, "test.yaml").expect("valid config");
    s.c.control
        .reconfigure(snapshot, now_ms())
        .expect("reconfigured");
    assert!(
        s.canary_answers_normally().await,
        "no fault after the reload"
    );
    let report = s.report().await;
    assert_eq!(report["state"], "ended");
    assert_eq!(report["ended_by"], "reload", "{report}");
    assert_eq!(s.events().last().map(String::as_str), Some("drill_ended"));

    // A new drill, ended by hand.
    assert_eq!(
        s.drill(r#"{"errors": "100%", "for": "1h"}"#).await.status,
        StatusCode::OK
    );
    assert!(!s.canary_answers_normally().await, "faults while it runs");
    let ended = s
        .call(
            Method::DELETE,
            "/api/v1/services/api/drill",
            "",
            Some(TOKEN),
        )
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    assert_eq!(json(&ended)["ended_by"], "deleted");
    assert!(s.canary_answers_normally().await, "no fault after DELETE");
    let again = s
        .call(
            Method::DELETE,
            "/api/v1/services/api/drill",
            "",
            Some(TOKEN),
        )
        .await;
    let err = error_of(&again, StatusCode::CONFLICT);
    assert!(err.contains("no drill runs on \"api\""), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_is_refused_without_admin_drills() {
    let s = Setup::start(GUARDED, false, Some(TOKEN), "").await;
    let got = s.drill(r#"{"errors": "10%", "for": "1m"}"#).await;
    let err = error_of(&got, StatusCode::FORBIDDEN);
    assert!(err.contains("set `admin.drills: true`"), "{err}");
    assert!(s.canary_answers_normally().await);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_needs_the_token_even_when_the_api_has_none() {
    let s = Setup::start(GUARDED, true, None, "").await;
    let got = s
        .call(
            Method::POST,
            "/api/v1/services/api/drill",
            r#"{"errors": "10%", "for": "1m"}"#,
            None,
        )
        .await;
    let err = error_of(&got, StatusCode::FORBIDDEN);
    assert!(err.contains("needs the admin token"), "{err}");
    assert!(err.contains("admin.token_file"), "{err}");
    // The rest of the API answers without one.
    let view = s.call(Method::GET, "/api/v1/services/api", "", None).await;
    assert_eq!(view.status, StatusCode::OK);
    s.stop().await;

    let s = Setup::start(GUARDED, true, Some(TOKEN), "").await;
    let got = s
        .call(
            Method::POST,
            "/api/v1/services/api/drill",
            r#"{"errors": "10%", "for": "1m"}"#,
            None,
        )
        .await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{}", got.body);
    let got = s
        .call(
            Method::POST,
            "/api/v1/services/api/drill",
            r#"{"errors": "10%", "for": "1m"}"#,
            Some("wrong"),
        )
        .await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{}", got.body);
    assert!(s.canary_answers_normally().await, "no drill started");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_is_refused_without_a_running_rollout_or_with_a_bad_body() {
    let s = Setup::start("", true, Some(TOKEN), "").await;
    let err = error_of(
        &s.drill(r#"{"errors": "10%", "for": "1m"}"#).await,
        StatusCode::CONFLICT,
    );
    assert!(err.contains("service \"api\" has no rollout"), "{err}");
    let unknown = s
        .call(
            Method::POST,
            "/api/v1/services/nope/drill",
            r#"{"errors": "10%", "for": "1m"}"#,
            Some(TOKEN),
        )
        .await;
    let err = error_of(&unknown, StatusCode::NOT_FOUND);
    assert!(err.contains("service \"nope\" is not defined"), "{err}");
    let none = s
        .call(Method::GET, "/api/v1/services/api/drill", "", Some(TOKEN))
        .await;
    let err = error_of(&none, StatusCode::NOT_FOUND);
    assert!(err.contains("no drill has run"), "{err}");
    s.stop().await;

    let s = Setup::start(GUARDED, true, Some(TOKEN), "").await;
    let err = error_of(
        &s.drill(r#"{"errors": "150%", "latency": "+90s", "for": "3h"}"#)
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert!(
        err.contains("errors: \"150%\" is not from 0% to 100%"),
        "{err}"
    );
    assert!(err.contains("latency: 1m 30s is longer"), "{err}");
    assert!(
        err.contains("for: 3h is longer than the longest drill, 1h"),
        "{err}"
    );
    // A paused rollout judges nothing: refused.
    s.c.control
        .command("api", serin_judge::rollout::Event::Pause, now_ms());
    let err = error_of(
        &s.drill(r#"{"errors": "10%", "for": "1m"}"#).await,
        StatusCode::CONFLICT,
    );
    assert!(err.contains("is paused, not progressing"), "{err}");
    assert!(s.canary_answers_normally().await, "no drill started");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serin_drill_follows_the_drill_and_prints_its_report() {
    use crate::common::process::{ops, stderr, stdout};
    let (_hook, url) = Hook::start().await;
    let notify = format!("notify:\n  - {{ url: \"{url}\", events: [rolled_back] }}\n");
    let s = Setup::start(GUARDED, true, Some(TOKEN), &notify).await;
    let admin = format!("http://{}", s.admin.local_addr);
    let load = Load::start(s.c.serin.url("/"), 8, Duration::ZERO);
    eventually(
        Duration::from_secs(10),
        "the canary serves traffic",
        || async { s.canary.hits() > 50 },
    )
    .await;

    let out = ops(
        &[
            "drill",
            "api",
            "--errors",
            "20%",
            "--latency",
            "+2ms",
            "--for",
            "2m",
            "--admin",
            &admin,
        ],
        Some(TOKEN),
    )
    .await;
    load.stop().await;
    let (text, said) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.starts_with("drill started on api: 20% of canary canary's requests answered 503 by serin, 2 ms added to the others"),
        "{said}"
    );
    assert!(
        text.starts_with("drill on api ended (the rollout rolled back) at "),
        "{text}"
    );
    assert!(
        text.contains("rolled back:  yes, by the rollout's rules, canary weight 0 "),
        "{text}"
    );
    let report = s.report().await;
    assert!(
        text.contains(&format!(
            "clients hit:  {} requests saw an injected fault ({} answered 503, {} delayed)",
            report["faults"]["total"], report["faults"]["errors"], report["faults"]["delayed"]
        )),
        "{text}\n{report}"
    );
    assert!(
        text.contains("webhooks:     every webhook received the rollback (1 of 1)"),
        "{text}"
    );
    assert_eq!(s.c.phase(), Phase::RolledBack);

    // Refused: the API's message, exit 1; a usage error, exit 2.
    let out = ops(
        &[
            "drill", "api", "--errors", "20%", "--for", "1m", "--admin", &admin,
        ],
        Some(TOKEN),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the rollout of \"api\" is rolled_back, not progressing"),
        "{}",
        stderr(&out)
    );
    let out = ops(
        &["drill", "api", "--errors", "20%", "--admin", &admin],
        Some(TOKEN),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--for"), "{}", stderr(&out));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_in_fleet_mode_goes_to_the_leader_and_none_starts_here_alone() {
    // Control in fleet mode whose fleet part does not run: the drill cannot be handed
    // to the leader, and this instance does not inject it on its own.
    let etcd = closed_port().await;
    let cluster =
        format!("cluster: {{ etcd: {{ endpoints: [\"http://{etcd}\"], prefix: /serin/drill-test/ }}, instance: web-1 }}\n");
    let s = Setup::start(GUARDED, true, Some(TOKEN), &cluster).await;
    let err = error_of(
        &s.drill(r#"{"errors": "10%", "for": "1m"}"#).await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert!(
        err.contains("cannot send the command to the fleet: fleet mode has not started"),
        "{err}"
    );
    assert!(s.canary_answers_normally().await, "no drill started");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_drill_is_judged_as_the_canarys_latency() {
    let rollout = "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 30, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 5s\n        min_requests: 20\n        confidence: 99%\n        rules:\n          - latency: { percentile: 90, max: 100ms }\n";
    let s = Setup::start(rollout, true, Some(TOKEN), "").await;
    let load = Load::start(s.c.serin.url("/"), 8, Duration::ZERO);
    eventually(
        Duration::from_secs(10),
        "the canary serves traffic",
        || async { s.canary.hits() > 50 },
    )
    .await;
    assert_eq!(s.c.phase(), Phase::Progressing, "a fast canary");
    let started = s.drill(r#"{"latency": "+300ms", "for": "2m"}"#).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    eventually(
        Duration::from_secs(20),
        "the added latency rolls the canary back",
        || async { s.c.phase() == Phase::RolledBack },
    )
    .await;
    let tally = load.stop().await;
    assert_eq!(
        tally.errors.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a latency drill answers no 503"
    );
    let rolled_back = s
        .timeline()
        .into_iter()
        .find(|e| e["event"] == "rolled_back")
        .expect("rolled_back on the timeline");
    assert_eq!(rolled_back["rule"]["kind"], "latency", "{rolled_back}");
    assert_eq!(rolled_back["drill"], true);
    // The delay is the canary's latency, as the judge saw it: the rule decided on its
    // evidence, and the canary's numbers at the decision hold the delayed requests.
    // (The rule's `observed` is the p90 of the span its summary quotes: the window's
    // when it breaks the limit, else the step's or the newest tick's. The window may
    // still be dominated by the fast requests from before the drill when the evidence
    // is already in.)
    let rule = &rolled_back["rule"];
    assert!(
        rule["evidence"].as_f64() >= rule["needed"].as_f64(),
        "{rolled_back}"
    );
    let p99 = rolled_back["versions"]["canary"]["p99_ms"]
        .as_f64()
        .expect("the canary's p99");
    assert!(
        p99 >= 300.0,
        "the canary's latency includes the delay: {rolled_back}"
    );
    let report = s.report().await;
    assert_eq!(report["faults"]["errors"], 0);
    assert!(report["faults"]["delayed"].as_u64() > Some(0), "{report}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_ends_a_drill() {
    let s = Setup::start(LATENCY_ONLY, true, Some(TOKEN), "").await;
    let started = s.drill(r#"{"errors": "100%", "for": "1h"}"#).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert!(!s.canary_answers_normally().await, "faults while it runs");
    let Setup {
        stable: _stable,
        canary,
        c,
        admin,
        client,
        yaml,
        _dir,
    } = s;
    admin.shutdown().await;
    c.stop().await;

    // serin again on the same config and state_dir: the rollout resumes, no drill.
    let again = Controlled::start(&yaml).await;
    assert_eq!(again.phase(), Phase::Progressing);
    assert!(again.control.drill_report("api").is_none());
    let mut canary_answered = false;
    for n in 0..200 {
        let user = format!("probe-{n}");
        let got = get(&client, &again.serin.url("/"), &[("x-user-id", &user)]).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        assert!(got.headers.get("x-serin-fault").is_none());
        canary_answered |= got.headers["x-serin-version"] == "canary";
    }
    assert!(canary_answered && canary.hits() > 0);
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_past_its_time_gives_way_to_a_new_one_before_any_tick() {
    // A control loop that never ticks by itself: time is what the calls say.
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let dir = TempDir::new("drill-untick");
    let serin = Serin::start(&rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        LATENCY_ONLY,
    ))
    .await;
    let t0 = now_ms();
    let control = serin_control::runner::Control::new(serin.dataplane.clone(), t0);
    let drill = serin_control::runner::DrillRequest {
        errors: 10_000,
        latency: Duration::ZERO,
        length: Duration::from_secs(1),
    };
    control
        .start_drill("api", drill, t0)
        .expect("the first drill");
    assert_eq!(
        control.start_drill("api", drill, t0 + 500),
        Err(serin_control::runner::DrillRefused::Running(t0 + 1_000))
    );
    let second = control
        .start_drill("api", drill, t0 + 1_000)
        .expect("the first drill's time is up");
    assert_eq!(second.state, "running");
    let events: Vec<String> = control
        .timeline("api")
        .iter()
        .map(|e| e.event.as_str().to_string())
        .collect();
    assert_eq!(
        events,
        ["started", "drill_started", "drill_ended", "drill_started"]
    );
    serin.shutdown(Duration::from_secs(5)).await;
}
