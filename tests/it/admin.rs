//! The admin API end to end: serin with its control loop in this process, the admin
//! listener on a free port, real backends and real traffic. Every endpoint, its effect
//! on the traffic the backends see, and every refusal a user can meet.

use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use serin_control::admin::{Admin, AdminContext, Health};
use serin_control::reload::ReloadHandle;
use serin_control::wire::{ConfigStatus, LastReload, ReloadCounts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A rollout that stays at 20 % until a person acts.
const HELD: &str = "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 20, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 5s\n        rules:\n          - error_rate: { max: 50% }\n";

struct Setup {
    stable: Backend,
    canary: Backend,
    c: Controlled,
    admin: Admin,
    client: TestClient,
    _dir: TempDir,
}

impl Setup {
    /// `api` with stable and canary, with the rollout [`HELD`] or split 70/30 without
    /// one; the admin API with `token` and `reload`.
    async fn start(rollout: bool, token: Option<&str>, reload: Option<ReloadHandle>) -> Setup {
        Setup::start_with(rollout, token, reload, &[]).await
    }

    /// [`Setup::start`] with `allowed_hosts`.
    async fn start_with(
        rollout: bool,
        token: Option<&str>,
        reload: Option<ReloadHandle>,
        allowed_hosts: &[&str],
    ) -> Setup {
        let (stable, canary) = (
            Backend::start("stable").await,
            Backend::start("canary").await,
        );
        let dir = TempDir::new("admin");
        let yaml = if rollout {
            rollout_config(stable.addr, canary.addr, &dir.0, HELD)
        } else {
            format!(
                "state_dir: \"{}\"\n{}",
                dir.0.display(),
                two_versions(
                    stable.addr,
                    canary.addr,
                    "    split: { weights: { stable: 70, canary: 30 } }"
                )
            )
        };
        let c = Controlled::start(&yaml).await;
        let health = std::sync::Arc::new(Health::default());
        health.set_ready();
        let context = AdminContext {
            control: Some(c.control.clone()),
            reload,
            token: token.map(str::to_string),
            allowed_hosts: allowed_hosts.iter().map(|h| h.to_string()).collect(),
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
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.local_addr, path)
    }

    async fn call(&self, method: Method, path: &str, body: &str, headers: &[(&str, &str)]) -> Got {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        send(&self.client, req).await
    }

    async fn get(&self, path: &str) -> Got {
        self.call(Method::GET, path, "", &[]).await
    }

    async fn post(&self, path: &str) -> Got {
        self.call(Method::POST, path, "", &[]).await
    }

    /// A PUT of a JSON body, as the serin CLI sends it.
    async fn put(&self, path: &str, body: &str) -> Got {
        self.call(
            Method::PUT,
            path,
            body,
            &[("content-type", "application/json")],
        )
        .await
    }

    /// `request` (raw bytes, `{admin}` replaced by the admin address) on a connection of
    /// its own: what a browser would send, untouched by any client library.
    async fn raw(&self, request: &str) -> Raw {
        let request = request.replace("{admin}", &self.admin.local_addr.to_string());
        let mut stream = tokio::net::TcpStream::connect(self.admin.local_addr)
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        Raw::parse(&out)
    }

    /// The rollout as a person would check it: state, weights and the timeline's events.
    async fn rollout(&self) -> (String, Value, Vec<String>) {
        let view = body(&self.get("/api/v1/services/api").await);
        let events = body(&self.get("/api/v1/services/api/timeline").await);
        let events = events
            .as_array()
            .expect("an array")
            .iter()
            .map(|e| e["event"].as_str().expect("event").to_string())
            .collect();
        (
            view["rollout"]["state"]
                .as_str()
                .expect("state")
                .to_string(),
            view["weights"].clone(),
            events,
        )
    }

    /// `n` requests through serin, without a sticky key.
    async fn traffic(&self, n: usize) {
        for _ in 0..n {
            let got = get(&self.client, &self.c.serin.url("/"), &[]).await;
            assert!(got.status.is_success() || got.status.is_server_error());
        }
    }

    async fn stop(self) {
        self.admin.shutdown().await;
        self.c.stop().await;
    }
}

/// A response read off the wire.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn parse(bytes: &[u8]) -> Raw {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete head: {text:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status: {head}"));
        Raw {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_string(),
        }
    }

    /// The `error` of a JSON error answer with `status`.
    fn refused(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}\n\n{}", self.head, self.body);
        assert!(
            self.head.contains("\r\ncontent-type: application/json\r\n"),
            "{}",
            self.head
        );
        let value: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body));
        value["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {}", self.body))
            .to_string()
    }
}

fn body(got: &Got) -> Value {
    serde_json::from_str(&got.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", got.body))
}

/// The `error` of a JSON error answer with `status`.
fn refused(got: &Got, status: StatusCode) -> String {
    assert_eq!(got.status, status, "{}", got.body);
    assert_eq!(
        got.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    body(got)["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {}", got.body))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_show_weights_and_the_numbers_of_known_traffic() {
    let s = Setup::start(false, None, None).await;
    s.canary.set_status(500);
    s.traffic(40).await;
    assert_eq!(s.stable.hits() + s.canary.hits(), 40);

    // The numbers arrive with the next control tick.
    let (stable_hits, canary_hits) = (s.stable.hits() as u64, s.canary.hits() as u64);
    eventually(
        Duration::from_secs(5),
        "the window holds all 40 requests",
        || async {
            let view = body(&s.get("/api/v1/services/api").await);
            view["versions"]["stable"]["requests"] == json!(stable_hits)
                && view["versions"]["canary"]["requests"] == json!(canary_hits)
        },
    )
    .await;
    let view = body(&s.get("/api/v1/services/api").await);
    assert_eq!(view["name"], "api");
    assert_eq!(view["weights"], json!({"stable": 70, "canary": 30}));
    assert_eq!(
        view["rollout"],
        json!({"state": "none", "step": null, "since": null, "reason": null})
    );
    let stable = &view["versions"]["stable"];
    let canary = &view["versions"]["canary"];
    assert_eq!(stable["errors"], 0);
    assert_eq!(stable["error_rate"], 0.0);
    assert_eq!(canary["errors"], json!(canary_hits));
    assert_eq!(canary["error_rate"], 1.0);
    // rps: requests over the span covered, which is the time up during the first 30 s.
    let span = view["window_s"].as_f64().expect("window_s");
    assert!(span > 0.0 && span < 30.0, "{span}");
    let rps = stable["rps"].as_f64().expect("rps");
    assert!(
        (rps - stable_hits as f64 / span).abs() < 0.01 * rps.max(1.0),
        "{rps} vs {stable_hits}/{span}"
    );
    for p in ["p50_ms", "p95_ms", "p99_ms"] {
        assert!(
            stable[p].as_f64().is_some_and(|ms| ms > 0.0),
            "{p}: {stable}"
        );
    }
    // Versions in the order the config declares them.
    let text = s.get("/api/v1/services/api").await.body;
    assert!(
        text.find("\"stable\"").expect("stable") < text.find("\"canary\"").expect("canary"),
        "{text}"
    );

    // The list holds the same view.
    let list = s.get("/api/v1/services").await;
    assert_eq!(list.status, StatusCode::OK);
    let list = body(&list);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["name"], "api");
    assert_eq!(
        list[0]["versions"]["stable"]["requests"],
        json!(stable_hits)
    );

    // A service without a rollout has an empty timeline and takes no rollout command.
    let timeline = s.get("/api/v1/services/api/timeline").await;
    assert_eq!(
        (timeline.status, body(&timeline)),
        (StatusCode::OK, json!([]))
    );
    let message = refused(
        &s.post("/api/v1/services/api/promote").await,
        StatusCode::CONFLICT,
    );
    assert_eq!(
        message,
        "service \"api\" has no rollout, so there is nothing to promote; add services[].rollout to the config to run one, or move traffic by hand with PUT /api/v1/services/api/weights"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_moves_all_traffic_to_the_canary_and_is_on_the_timeline() {
    let s = Setup::start(true, None, None).await;
    let view = body(&s.get("/api/v1/services/api").await);
    assert_eq!(view["rollout"]["state"], "progressing");
    assert_eq!(view["rollout"]["step"], 0);
    assert!(view["rollout"]["since"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(view["weights"], json!({"stable": 80, "canary": 20}));

    let got = s.post("/api/v1/services/api/promote").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let view = body(&got);
    assert_eq!(view["rollout"]["state"], "promoted");
    assert_eq!(view["rollout"]["reason"], "promoted by hand");
    assert_eq!(view["weights"], json!({"stable": 0, "canary": 100}));

    let stable_before = s.stable.hits();
    s.traffic(30).await;
    assert_eq!(
        s.stable.hits(),
        stable_before,
        "stable got traffic after promote"
    );

    let timeline = s.get("/api/v1/services/api/timeline").await;
    assert_eq!(timeline.status, StatusCode::OK);
    let events = body(&timeline);
    let kinds: Vec<&str> = events
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| e["event"].as_str().expect("event"))
        .collect();
    assert_eq!(kinds, ["started", "promoted"]);
    let promoted = &events[1];
    assert_eq!(promoted["manual"], true);
    assert_eq!(promoted["state"], "promoted");
    assert_eq!(promoted["weights"], json!({"stable": 0, "canary": 100}));
    assert!(promoted["at"].as_str().is_some_and(|t| t.ends_with('Z')));

    // Promoting again changes nothing; aborting a promoted rollout is refused.
    assert_eq!(
        s.post("/api/v1/services/api/promote").await.status,
        StatusCode::OK
    );
    let message = refused(
        &s.post("/api/v1/services/api/abort").await,
        StatusCode::CONFLICT,
    );
    assert!(
        message.starts_with("the rollout of \"api\" is already promoted (promoted by hand), so there is nothing to abort"),
        "{message}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_abort() {
    let s = Setup::start(true, None, None).await;
    let view = body(&s.post("/api/v1/services/api/pause").await);
    assert_eq!(view["rollout"]["state"], "paused");
    assert_eq!(view["rollout"]["reason"], "paused by hand");
    assert_eq!(view["weights"], json!({"stable": 80, "canary": 20}));

    let view = body(&s.post("/api/v1/services/api/resume").await);
    assert_eq!(view["rollout"]["state"], "progressing");
    assert_eq!(view["rollout"]["reason"], Value::Null);

    let got = s.post("/api/v1/services/api/abort").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let view = body(&got);
    assert_eq!(view["rollout"]["state"], "rolled_back");
    assert_eq!(view["rollout"]["reason"], "aborted by hand");
    assert_eq!(view["weights"], json!({"stable": 100, "canary": 0}));
    // GET sees it too, and the canary gets no more requests.
    assert_eq!(
        body(&s.get("/api/v1/services/api").await)["weights"]["canary"],
        0
    );
    let canary_before = s.canary.hits();
    s.traffic(50).await;
    assert_eq!(
        s.canary.hits(),
        canary_before,
        "canary got traffic after abort"
    );

    let events = body(&s.get("/api/v1/services/api/timeline").await);
    let kinds: Vec<(&str, bool)> = events
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| (e["event"].as_str().expect("event"), e["manual"] == true))
        .collect();
    assert_eq!(
        kinds,
        [
            ("started", false),
            ("paused", true),
            ("resumed", true),
            ("rolled_back", true)
        ]
    );
    // A finished rollout takes no pause or resume.
    for verb in ["pause", "resume", "promote"] {
        let message = refused(
            &s.post(&format!("/api/v1/services/api/{verb}")).await,
            StatusCode::CONFLICT,
        );
        assert!(
            message.contains(&format!(
                "is already rolled_back (aborted by hand), so there is nothing to {verb}"
            )),
            "{message}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_set_by_hand_change_the_split_and_pause_the_rollout() {
    let s = Setup::start(true, None, None).await;
    let got = s
        .put(
            "/api/v1/services/api/weights",
            r#"{"stable": 0, "canary": 100}"#,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let view = body(&got);
    assert_eq!(view["weights"], json!({"stable": 0, "canary": 100}));
    assert_eq!(view["rollout"]["state"], "paused");
    assert_eq!(view["rollout"]["reason"], "weights set by hand");
    s.traffic(40).await;
    assert_eq!((s.stable.hits(), s.canary.hits()), (0, 40));

    // Paused: the control loop leaves the weights alone, however many ticks pass.
    for later in 1..=3 {
        s.c.control
            .tick(serin_control::runner::now_ms() + later * 1000);
    }
    assert_eq!(
        body(&s.get("/api/v1/services/api").await)["weights"],
        json!({"stable": 0, "canary": 100})
    );

    // 80/20 splits the next requests about 80/20.
    let got = s
        .put(
            "/api/v1/services/api/weights",
            r#"{"stable": 80, "canary": 20}"#,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    s.traffic(100).await;
    let canary = s.canary.hits() - 40;
    assert_eq!(s.stable.hits() + canary, 100);
    assert!((15..=25).contains(&canary), "canary got {canary} of 100");

    // A version not named keeps its weight.
    let view = body(
        &s.put("/api/v1/services/api/weights", r#"{"canary": 0}"#)
            .await,
    );
    assert_eq!(view["weights"], json!({"stable": 80, "canary": 0}));

    let events = body(&s.get("/api/v1/services/api/timeline").await);
    let manual: Vec<&Value> = events
        .as_array()
        .expect("an array")
        .iter()
        .filter(|e| e["event"] == "manual_weights")
        .collect();
    assert_eq!(manual.len(), 3, "{events}");
    assert!(manual.iter().all(|e| e["manual"] == true));
    assert_eq!(manual[0]["weights"], json!({"stable": 0, "canary": 100}));
    assert_eq!(manual[2]["weights"], json!({"stable": 80, "canary": 0}));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_weights_are_refused_with_what_is_wrong() {
    let s = Setup::start(true, None, None).await;
    let path = "/api/v1/services/api/weights";
    let cases: &[(&str, &str)] = &[
        (
            r#"{"stable": 80, "canry": 20}"#,
            r#""canry": service "api" has no version "canry" (versions: stable, canary)"#,
        ),
        (
            r#"{"stable": 101}"#,
            r#""stable": the weight must be an integer from 0 to 100, got 101"#,
        ),
        (
            r#"{"stable": 80.5}"#,
            r#""stable": the weight must be an integer from 0 to 100, got 80.5"#,
        ),
        (
            r#"{"stable": -1}"#,
            r#""stable": the weight must be an integer from 0 to 100, got -1"#,
        ),
        (
            r#"{"stable": "80"}"#,
            r#""stable": the weight must be an integer from 0 to 100, got "80""#,
        ),
        (
            r#"{"stable": 0, "canary": 0}"#,
            r#"every version of "api" would have weight 0 and nothing could be served; give at least one version a weight above 0"#,
        ),
        (
            r#"{}"#,
            r#"the body names no version; send a JSON object of version to weight (0 to 100), e.g. {"stable": 80, "canary": 20}"#,
        ),
        (
            r#"[80, 20]"#,
            r#"the body is not a JSON object; send a JSON object of version to weight (0 to 100), e.g. {"stable": 80, "canary": 20}"#,
        ),
    ];
    for (sent, expected) in cases {
        let message = refused(&s.put(path, sent).await, StatusCode::BAD_REQUEST);
        assert_eq!(message, *expected, "{sent}");
    }
    let message = refused(&s.put(path, "stable=80").await, StatusCode::BAD_REQUEST);
    assert!(message.starts_with("the body is not JSON ("), "{message}");

    let huge = format!(r#"{{"stable": 80, "pad": "{}"}}"#, "x".repeat(70 * 1024));
    let message = refused(&s.put(path, &huge).await, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        message.starts_with("the body is larger than 64 KiB"),
        "{message}"
    );

    // Nothing of it was applied.
    let view = body(&s.get("/api/v1/services/api").await);
    assert_eq!(view["weights"], json!({"stable": 80, "canary": 20}));
    assert_eq!(view["rollout"]["state"], "progressing");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_paths_and_wrong_methods() {
    let s = Setup::start(true, None, None).await;
    let not_defined =
        "service \"nope\" is not defined (defined: api); GET /api/v1/services lists them";
    for got in [
        s.get("/api/v1/services/nope").await,
        s.get("/api/v1/services/nope/timeline").await,
        s.post("/api/v1/services/nope/abort").await,
        s.put("/api/v1/services/nope/weights", r#"{"stable": 1}"#)
            .await,
    ] {
        assert_eq!(refused(&got, StatusCode::NOT_FOUND), not_defined);
    }
    let message = refused(&s.get("/api/v1/nothing").await, StatusCode::NOT_FOUND);
    assert!(
        message.starts_with("no such endpoint: /api/v1/nothing; the API has /api/v1/services"),
        "{message}"
    );
    refused(&s.get("/").await, StatusCode::NOT_FOUND);

    // A change is never made by GET: 405 with the method that does it.
    for (path, allow) in [
        ("/api/v1/services/api/promote", "POST"),
        ("/api/v1/services/api/abort", "POST"),
        ("/api/v1/services/api/weights", "PUT"),
        ("/api/v1/reload", "POST"),
    ] {
        let got = s.get(path).await;
        let message = refused(&got, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            message,
            format!("GET is not allowed on {path}; use {allow}")
        );
        assert_eq!(got.headers["allow"], allow);
    }
    let got = s
        .call(Method::DELETE, "/api/v1/services/api", "", &[])
        .await;
    refused(&got, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(got.headers["allow"], "GET, HEAD");
    let got = s.post("/api/v1/services/api/weights").await;
    assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(got.headers["allow"], "PUT");
    let got = s.post("/healthz").await;
    assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(got.headers["allow"], "GET, HEAD");
    // The rollout was not touched by any of it.
    assert_eq!(s.c.phase(), serin_judge::rollout::Phase::Progressing);

    // Without a reload loop, reload and config say so.
    let message = refused(
        &s.post("/api/v1/reload").await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert_eq!(
        message,
        "this process has no reload loop; restart serin to apply a changed config"
    );
    refused(
        &s.get("/api/v1/config").await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_everything_but_the_health_checks() {
    let s = Setup::start(true, Some("s3cr3t"), None).await;
    let path = "/api/v1/services/api";

    let got = s.get(path).await;
    let message = refused(&got, StatusCode::UNAUTHORIZED);
    assert!(
        message.starts_with("this endpoint needs the admin token"),
        "{message}"
    );
    assert_eq!(got.headers["www-authenticate"], "Bearer realm=\"serin\"");

    let got = s
        .call(Method::GET, path, "", &[("authorization", "Bearer wrong")])
        .await;
    let message = refused(&got, StatusCode::UNAUTHORIZED);
    assert!(message.starts_with("the admin token is wrong"), "{message}");
    assert!(got.headers["www-authenticate"]
        .to_str()
        .is_ok_and(|v| v.starts_with("Bearer ") && v.contains("invalid_token")));

    let with = [("authorization", "Bearer s3cr3t")];
    let got = s.call(Method::GET, path, "", &with).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(body(&got)["name"], "api");

    // Changes need it too; without it nothing changes.
    let got = s.post("/api/v1/services/api/abort").await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    let got = s
        .put("/api/v1/services/api/weights", r#"{"canary": 0}"#)
        .await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.c.canary_weight(), 20);
    let got = s
        .call(Method::POST, "/api/v1/services/api/abort", "", &with)
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(s.c.canary_weight(), 0);

    // Unknown paths do not tell anything without the token either.
    assert_eq!(
        s.get("/api/v1/nothing").await.status,
        StatusCode::UNAUTHORIZED
    );

    // Health checks stay open.
    let got = s.get("/healthz").await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "ok\n"));
    let got = s.get("/readyz").await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "ready\n"));
    s.stop().await;
}

fn config_status() -> ConfigStatus {
    ConfigStatus {
        path: "/etc/serin/serin.yaml".to_string(),
        hash: "0123456789abcdef".to_string(),
        loaded_at: "2026-11-22T04:00:00.000Z".to_string(),
        last_reload: None,
        reloads: ReloadCounts::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_runs_through_the_reload_loop_and_reports_its_outcome() {
    let (handle, mut loop_end) = ReloadHandle::new(config_status());
    let s = Setup::start(false, None, Some(handle)).await;

    let got = s.get("/api/v1/config").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(
        body(&got),
        json!({
            "path": "/etc/serin/serin.yaml",
            "hash": "0123456789abcdef",
            "loaded_at": "2026-11-22T04:00:00.000Z",
            "last_reload": null,
            "reloads": {"success": 0, "failure": 0}
        })
    );

    // This test is the reload loop: it answers the first reload with success and the
    // second with the file's errors.
    let answers = tokio::spawn(async move {
        let mut triggers = Vec::new();
        for ok in [true, false] {
            let request = loop_end.requests.recv().await.expect("a reload request");
            triggers.push(request.trigger);
            let outcome = LastReload {
                at: "2026-11-22T04:01:00.000Z".to_string(),
                ok,
                errors: if ok {
                    Vec::new()
                } else {
                    vec![
                        "/etc/serin/serin.yaml: listeners: at least one listener is required"
                            .to_string(),
                    ]
                },
                trigger: request.trigger.to_string(),
                unchanged: false,
            };
            loop_end.status.send_modify(|s| {
                s.last_reload = Some(outcome.clone());
                if ok {
                    s.reloads.success += 1;
                } else {
                    s.reloads.failure += 1;
                }
            });
            request
                .reply
                .expect("the API waits")
                .send(outcome)
                .expect("reply");
        }
        (triggers, loop_end)
    });

    let got = s.post("/api/v1/reload").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(
        body(&got),
        json!({"at": "2026-11-22T04:01:00.000Z", "ok": true, "errors": [], "trigger": "api", "unchanged": false})
    );

    let got = s.post("/api/v1/reload").await;
    assert_eq!(got.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.body);
    let failed = body(&got);
    assert_eq!(
        failed["error"],
        "the config was not applied (1 error); the previous config keeps serving: fix the file (`serin check FILE` lists the problems) and reload again"
    );
    assert_eq!(failed["ok"], false);
    assert_eq!(
        failed["errors"],
        json!(["/etc/serin/serin.yaml: listeners: at least one listener is required"])
    );

    let (triggers, loop_end) = answers.await.expect("the answering task");
    assert_eq!(triggers, ["api", "api"]);
    let status = body(&s.get("/api/v1/config").await);
    assert_eq!(status["reloads"], json!({"success": 1, "failure": 1}));
    assert_eq!(status["last_reload"]["ok"], false);

    // With the reload loop gone, a reload cannot happen.
    drop(loop_end);
    let message = refused(
        &s.post("/api/v1/reload").await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert_eq!(
        message,
        "the reload loop has stopped; restart serin to apply a changed config"
    );
    s.stop().await;
}

/// A browser's "simple" request: no preflight, so it reaches serin from any page.
fn browser_post(path: &str, host: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: text/plain\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

const NAMES: &str = "the admin API answers only requests whose Host is an IP address, localhost, \
     or a name in admin.allowed_hosts, so that no web page can reach it through a DNS name its \
     author controls (DNS rebinding)";
const CLIENTS: &str = "changes are taken from the dashboard this listener serves at /ui, and from \
     clients that send no Origin header, such as the serin CLI and curl";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_site_cannot_change_a_rollout() {
    let s = Setup::start(true, None, None).await;
    let before = s.rollout().await;
    assert_eq!(
        before,
        (
            "progressing".to_string(),
            json!({"stable": 80, "canary": 20}),
            vec!["started".to_string()]
        )
    );
    let commands = [
        "/api/v1/services/api/pause",
        "/api/v1/services/api/abort",
        "/api/v1/services/api/promote",
        "/api/v1/reload",
    ];

    // Through DNS rebinding: the page's own name, pointed at the admin listener.
    for path in commands {
        let got = s
            .raw(&browser_post(
                path,
                "evil.example",
                "Origin: http://evil.example\r\n",
            ))
            .await;
        assert_eq!(
            got.refused(403),
            format!(
                "refused: the request names the admin API \"evil.example\" (its Host header), \
                 which is not one of its names; {NAMES}. If you reach serin by this name, add \
                 \"evil.example\" to admin.allowed_hosts in the config and restart serin, or \
                 use its IP address"
            ),
            "{path}"
        );
    }

    // Cross-site requests to the admin address itself, as a browser sends them.
    let own = format!("http://{}", s.admin.local_addr);
    for path in commands {
        let got = s
            .raw(&browser_post(
                path,
                "{admin}",
                "Origin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\n",
            ))
            .await;
        assert_eq!(
            got.refused(403),
            format!(
                "refused: a POST the browser marks as sent by another site \
                 (`Sec-Fetch-Site: cross-site`) cannot change anything here; {CLIENTS}"
            ),
            "{path}"
        );
        // A browser without Fetch Metadata still sends its Origin.
        let got = s
            .raw(&browser_post(
                path,
                "{admin}",
                "Origin: http://evil.example\r\n",
            ))
            .await;
        assert_eq!(
            got.refused(403),
            format!(
                "refused: a POST sent by a web page of http://evil.example, which is not the \
                 admin API's own origin ({own}), cannot change anything here; {CLIENTS}"
            ),
            "{path}"
        );
        // A page on another port of the same machine is another origin.
        let got = s
            .raw(&browser_post(
                path,
                "{admin}",
                "Origin: http://127.0.0.1:1\r\n",
            ))
            .await;
        assert!(
            got.refused(403)
                .starts_with("refused: a POST sent by a web page of http://127.0.0.1:1,"),
            "{path}"
        );
        // A sandboxed frame or a file: page.
        let got = s
            .raw(&browser_post(path, "{admin}", "Origin: null\r\n"))
            .await;
        assert_eq!(
            got.refused(403),
            format!(
                "refused: a POST sent by a web page with `Origin: null` (a sandboxed frame, a \
                 file: page or a redirect) cannot change anything here; {CLIENTS}"
            ),
            "{path}"
        );
    }
    // Weights as a cross-site form would send them.
    let got = s
        .raw(
            "PUT /api/v1/services/api/weights HTTP/1.1\r\nHost: {admin}\r\n\
             Origin: http://evil.example\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 12\r\nConnection: close\r\n\r\n{\"canary\":0}",
        )
        .await;
    assert!(got
        .refused(403)
        .starts_with("refused: a PUT sent by a web page of http://evil.example,"));

    // Nothing changed: still progressing at 80/20, nothing on the timeline.
    assert_eq!(s.rollout().await, before);
    assert_eq!(s.c.phase(), serin_judge::rollout::Phase::Progressing);
    s.traffic(20).await;
    assert!(s.canary.hits() > 0, "the canary still takes its share");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_name_reads_nothing_and_learns_nothing_of_the_token() {
    let s = Setup::start(true, Some("s3cr3t"), None).await;
    let get = |path: &str, host: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
    };
    let not_ours = format!(
        "refused: the request names the admin API \"evil.example\" (its Host header), which is \
         not one of its names; {NAMES}. If you reach serin by this name, add \"evil.example\" to \
         admin.allowed_hosts in the config and restart serin, or use its IP address"
    );
    // The API, /metrics, the dashboard and unknown paths: 403 before the token's 401 or a
    // 404 could tell anything, with the token or without.
    for path in [
        "/api/v1/services",
        "/api/v1/services/api/timeline",
        "/api/v1/config",
        "/metrics",
        "/ui",
        "/ui/ui.js",
        "/nothing",
    ] {
        for extra in ["", "Authorization: Bearer s3cr3t\r\n"] {
            let got = s.raw(&get(path, "evil.example:9901", extra)).await;
            assert_eq!(got.refused(403), not_ours, "{path} {extra}");
            assert!(!got.body.contains("canary"), "{}", got.body);
        }
    }
    // A change from the rebound page: refused for its Host, before its origin or token.
    let got = s
        .raw(&browser_post(
            "/api/v1/services/api/abort",
            "EVIL.example.",
            "Origin: http://EVIL.example.\r\n",
        ))
        .await;
    assert_eq!(got.refused(403), not_ours);
    // A change from another page to the right address: refused for its origin, before
    // the token.
    let got = s
        .raw(&browser_post(
            "/api/v1/services/api/abort",
            "{admin}",
            "Origin: http://evil.example\r\n",
        ))
        .await;
    assert!(got
        .refused(403)
        .starts_with("refused: a POST sent by a web page of http://evil.example,"));

    // HTTP/1.1 without a Host.
    let got = s
        .raw("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(
        got.refused(403),
        format!(
            "refused: the request has no Host header; {NAMES}. Send the address you connect \
             to as the Host, as browsers, curl and the serin CLI do"
        )
    );
    let got = s
        .raw(&get("/metrics", "evil.example", "Host: 127.0.0.1\r\n"))
        .await;
    assert!(got
        .refused(403)
        .starts_with("refused: the request names its host more than once"));

    // Probes pass whatever they call serin.
    let got = s.raw(&get("/healthz", "evil.example", "")).await;
    assert_eq!((got.status, got.body.as_str()), (200, "ok\n"));
    let got = s.raw(&get("/readyz", "evil.example", "")).await;
    assert_eq!((got.status, got.body.as_str()), (200, "ready\n"));
    let got = s
        .raw("GET /readyz HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!((got.status, got.body.as_str()), (200, "ready\n"));

    // With a Host that names it, the token decides as before.
    let got = s.raw(&get("/api/v1/services", "{admin}", "")).await;
    assert!(got
        .refused(401)
        .starts_with("this endpoint needs the admin token"));
    let got = s
        .raw(&get(
            "/api/v1/services/api",
            "{admin}",
            "Authorization: Bearer s3cr3t\r\n",
        ))
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(s.c.phase(), serin_judge::rollout::Phase::Progressing);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_addresses_loopback_names_and_allowed_hosts_reach_the_api() {
    let s = Setup::start_with(true, None, None, &["serin-admin.example"]).await;
    let port = s.admin.local_addr.port();
    for host in [
        "{admin}".to_string(),
        format!("localhost:{port}"),
        format!("LOCALHOST.:{port}"),
        "dashboard.localhost".to_string(),
        // An address other than the one connected to: a pod IP behind a Service, [::1].
        "10.1.2.3:9901".to_string(),
        "[::1]:9901".to_string(),
        format!("serin-admin.example:{port}"),
        "Serin-Admin.Example.".to_string(),
    ] {
        for path in ["/api/v1/services/api", "/metrics", "/ui"] {
            let got = s
                .raw(&format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                ))
                .await;
            assert_eq!(got.status, 200, "{host} {path}: {}", got.body);
        }
    }
    for host in [
        "serin-admin.example.evil.example",
        "serin-admin",
        "localhost.evil.example",
    ] {
        let got = s
            .raw(&format!(
                "GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert!(
            got.refused(403)
                .contains(&format!("add \"{host}\" to admin.allowed_hosts")),
            "{host}"
        );
    }
    // HTTP/1.0 has no Host to send.
    let got = s.raw("GET /api/v1/services/api HTTP/1.0\r\n\r\n").await;
    assert_eq!(got.status, 200, "{}", got.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_own_requests_and_clients_without_an_origin_change_the_rollout() {
    let s = Setup::start_with(true, None, None, &["serin-admin.example"]).await;
    let port = s.admin.local_addr.port();
    // The dashboard's fetch: its own origin, same-origin by Fetch Metadata.
    let got = s
        .raw(
            "POST /api/v1/services/api/pause HTTP/1.1\r\nHost: {admin}\r\n\
             Origin: http://{admin}\r\nSec-Fetch-Site: same-origin\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
        )
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(s.c.phase(), serin_judge::rollout::Phase::Paused);
    // The dashboard opened by a listed name.
    let got = s
        .raw(&format!(
            "POST /api/v1/services/api/resume HTTP/1.1\r\nHost: serin-admin.example:{port}\r\n\
             Origin: http://serin-admin.example:{port}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(s.c.phase(), serin_judge::rollout::Phase::Progressing);
    // JSON with a charset, from the page's own origin.
    let weights = r#"{"stable": 60, "canary": 40}"#;
    let got = s
        .raw(&format!(
            "PUT /api/v1/services/api/weights HTTP/1.1\r\nHost: localhost:{port}\r\n\
             Origin: http://localhost:{port}\r\nContent-Type: application/json; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{weights}",
            weights.len()
        ))
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(s.rollout().await.1, json!({"stable": 60, "canary": 40}));
    // curl: no Origin at all.
    let got = s
        .raw(
            "POST /api/v1/services/api/abort HTTP/1.1\r\nHost: {admin}\r\nUser-Agent: curl/8.15.0\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(s.c.phase(), serin_judge::rollout::Phase::RolledBack);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_taken_as_json_only() {
    let s = Setup::start(true, None, None).await;
    let before = s.rollout().await;
    let put = |content_type: &str| {
        let body = r#"{"canary": 0}"#;
        format!(
            "PUT /api/v1/services/api/weights HTTP/1.1\r\nHost: {{admin}}\r\n{content_type}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let example = "send `Content-Type: application/json` with it, e.g. curl -X PUT -H \
         'Content-Type: application/json' -d '{\"stable\": 80, \"canary\": 20}' URL (the serin \
         CLI sends it)";
    let got = s.raw(&put("")).await;
    assert_eq!(
        got.refused(415),
        format!(
            "PUT /api/v1/services/api/weights takes a JSON body and the request has no \
             Content-Type; {example}"
        )
    );
    assert!(
        got.head.contains("\r\naccept: application/json\r\n"),
        "{}",
        got.head
    );
    // What curl -d sends, what a form sends, what a "simple" fetch sends.
    for content_type in [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/plain;charset=UTF-8",
    ] {
        let got = s
            .raw(&put(&format!("Content-Type: {content_type}\r\n")))
            .await;
        assert_eq!(
            got.refused(415),
            format!(
                "PUT /api/v1/services/api/weights takes a JSON body and the request has \
                 Content-Type \"{content_type}\"; {example}"
            )
        );
    }
    assert_eq!(s.rollout().await, before);
    let got = s
        .raw(&put("Content-Type: Application/JSON; charset=utf-8\r\n"))
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(s.rollout().await.1, json!({"stable": 80, "canary": 0}));
    s.stop().await;
}

/// Property tests of the JSON bodies the API takes (`PUT …/weights`, the only endpoint
/// that reads one): whatever the bytes, the API answers in bounded time with success or
/// a 4xx whose message names what was wrong, and never panics.
mod bodies {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Method, Request, StatusCode};
    use http_body_util::{BodyExt, Full};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use serde_json::Value;
    use serin_control::admin::{handle, AdminContext, Health};

    use super::*;

    const WEIGHTS: &str = "/api/v1/services/api/weights";

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => Just("stable".to_string()),
            4 => Just("canary".to_string()),
            1 => "[ -~]{0,10}",
            1 => "\\PC{0,6}",
        ]
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            3 => (0u64..=100).prop_map(Value::from),
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::from),
            1 => (95u64..=105).prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            1 => any::<f64>().prop_filter_map("a finite number", |f| {
                serde_json::Number::from_f64(f).map(Value::Number)
            }),
            1 => "[ -~]{0,12}".prop_map(Value::from),
        ]
    }

    /// Any JSON value, nested a few levels.
    fn json() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..8)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    /// An object of weights, mostly well-formed.
    fn weights() -> impl Strategy<Value = Value> {
        prop::collection::vec((key(), leaf()), 0..4)
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
    }

    fn text(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).unwrap_or_default()
    }

    /// What a client might send as the body.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            1 => prop::collection::vec(any::<u8>(), 0..2048),
            1 => json().prop_map(|v| text(&v)),
            3 => weights().prop_map(|v| text(&v)),
            // A body cut short, or with one byte changed.
            1 => (weights(), any::<prop::sample::Index>()).prop_map(|(v, at)| {
                let mut t = text(&v);
                t.truncate(at.index(t.len() + 1));
                t
            }),
            1 => (weights(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, at, byte)| {
                let mut t = text(&v);
                let i = at.index(t.len());
                t[i] = byte;
                t
            }),
            // Nested far deeper than any weights.
            1 => (1usize..20_000, prop_oneof![Just("["), Just("{\"stable\":")])
                .prop_map(|(n, open)| open.repeat(n).into_bytes()),
        ]
    }

    /// Sends `body` as `content_type` to `PUT …/weights`: the status and the answer.
    async fn put(
        context: &AdminContext,
        content_type: &str,
        body: &[u8],
    ) -> Result<(StatusCode, Value), TestCaseError> {
        let request = Request::builder()
            .method(Method::PUT)
            .uri(WEIGHTS)
            .header("host", "127.0.0.1:9901")
            .header("content-type", content_type)
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| TestCaseError::fail(format!("request: {e}")))?;
        // Bounded: nothing a body holds may keep the API busy (a loose bound: the
        // machine is shared).
        let response = tokio::time::timeout(Duration::from_secs(5), handle(context, request))
            .await
            .map_err(|_| TestCaseError::fail("no answer within 5 s"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| TestCaseError::fail(format!("body: {e}")))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            TestCaseError::fail(format!(
                "the answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        Ok((status, value))
    }

    /// Whether `message`, the answer to `sent`, names what was wrong with it.
    fn names_the_problem(sent: &[u8], message: &str) -> bool {
        const EXAMPLE: &str = "send a JSON object of version to weight (0 to 100), e.g. {\"stable\": 80, \"canary\": 20}";
        let object = serde_json::from_slice::<Value>(sent).ok();
        match object {
            None => message.starts_with("the body is not JSON (") && message.ends_with(EXAMPLE),
            Some(Value::Object(object)) if object.is_empty() => {
                message == format!("the body names no version; {EXAMPLE}")
            }
            Some(Value::Object(object)) => {
                message.starts_with("every version of \"api\" would have weight 0")
                    || object
                        .keys()
                        .any(|k| message.starts_with(&format!("\"{k}\": ")))
            }
            Some(_) => message == format!("the body is not a JSON object; {EXAMPLE}"),
        }
    }

    fn check(sent: &[u8], status: StatusCode, answer: &Value) -> Result<(), TestCaseError> {
        let shown = String::from_utf8_lossy(&sent[..sent.len().min(300)]);
        if status == StatusCode::OK {
            // Applied: every version named has the weight it was given.
            let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(sent) else {
                return Err(TestCaseError::fail(format!("200 for {shown}")));
            };
            for (version, weight) in &object {
                prop_assert_eq!(&answer["weights"][version], weight, "{}", shown);
            }
            return Ok(());
        }
        prop_assert!(
            status.is_client_error(),
            "{} for {}: {}",
            status,
            shown,
            answer
        );
        let message = answer["error"].as_str().unwrap_or_default();
        if sent.len() > serin_control::admin::MAX_BODY {
            prop_assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}", message);
            prop_assert!(
                message.starts_with("the body is larger than 64 KiB"),
                "{}",
                message
            );
            return Ok(());
        }
        prop_assert!(
            status == StatusCode::BAD_REQUEST && names_the_problem(sent, message),
            "{} for {}: {:?}",
            status,
            shown,
            message
        );
        Ok(())
    }

    /// A runtime, a held rollout (not on any socket) and an admin context for it.
    fn setup() -> (tokio::runtime::Runtime, Controlled, AdminContext, TempDir) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = TempDir::new("admin-bodies");
        let yaml = rollout_config(
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1:2".parse().expect("addr"),
            &dir.0,
            HELD,
        );
        let c = runtime.block_on(Controlled::start(&yaml));
        let context = AdminContext {
            control: Some(c.control.clone()),
            ..AdminContext::new(
                std::sync::Arc::new(Health::default()),
                c.serin.dataplane.clone(),
            )
        };
        (runtime, c, context, dir)
    }

    fn config(cases: u32) -> Config {
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        }
    }

    #[test]
    fn any_weights_body_is_applied_or_refused_with_what_is_wrong() {
        let (runtime, c, context, _dir) = setup();
        let mut runner = TestRunner::new(config(512));
        let outcome = runner.run(&body(), |sent| {
            let (status, answer) = runtime.block_on(put(&context, "application/json", &sent))?;
            check(&sent, status, &answer)
        });
        runtime.block_on(c.stop());
        if let Err(failure) = outcome {
            panic!("{failure}");
        }
    }

    #[test]
    fn a_body_not_declared_json_is_refused_before_it_is_read() {
        let (runtime, c, context, _dir) = setup();
        let mut runner = TestRunner::new(config(256));
        // (Content-Type, whether it declares JSON)
        let content_type = prop_oneof![
            "[ -~]{0,40}"
                .prop_filter("not JSON", |t| !t.to_ascii_lowercase().contains("json"))
                .prop_map(|t| (t, false)),
            prop_oneof![
                Just("text/plain"),
                Just("text/plain;charset=UTF-8"),
                Just("application/x-www-form-urlencoded"),
                Just("multipart/form-data; boundary=x"),
                Just("application/jsonp"),
                Just("application/merge-patch+json"),
                Just("text/json"),
            ]
            .prop_map(|t| (t.to_string(), false)),
            prop_oneof![
                Just("application/json"),
                Just("application/json; charset=utf-8"),
                Just("APPLICATION/JSON"),
                Just("application/json;charset=\"utf-8\""),
            ]
            .prop_map(|t| (t.to_string(), true)),
        ];
        let outcome = runner.run(&(content_type, body()), |((content_type, json), sent)| {
            let (status, answer) = runtime.block_on(put(&context, &content_type, &sent))?;
            if json {
                return check(&sent, status, &answer);
            }
            prop_assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{}",
                content_type
            );
            let message = answer["error"].as_str().unwrap_or_default();
            prop_assert!(
                message.starts_with("PUT /api/v1/services/api/weights takes a JSON body"),
                "{}",
                message
            );
            Ok(())
        });
        runtime.block_on(c.stop());
        if let Err(failure) = outcome {
            panic!("{failure}");
        }
    }
}
