//! `serin report`: the post-mortem draft of a rollout driven on a real `serin run`, by
//! hand and by the analysis, and the errors a person gets for what cannot be reported.

use std::process::Output;
use std::time::Duration;

use crate::common::process::{ops, stderr, stdout, SerinProcess};
use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

/// Runs `serin ARGS` to completion.
async fn serin(args: &[&str]) -> Output {
    ops(args, None).await
}

/// `serin run` with `api` (stable and canary under `rollout`) and `web` (no rollout).
async fn start(rollout: &str, canary_status: u16) -> (Backend, Backend, SerinProcess, TempDir) {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    canary.set_status(canary_status);
    let dir = TempDir::new("report");
    let mut yaml = rollout_config(stable.addr, canary.addr, &dir.0, rollout);
    yaml.push_str(&format!(
        "  - name: web\n    versions:\n      - {{ name: v1, endpoints: [{}] }}\n",
        stable.addr
    ));
    let config = dir.0.join("serin.yaml");
    std::fs::write(&config, yaml).expect("write the config");
    let running = SerinProcess::start(&config, 1, &[], &[]);
    (stable, canary, running, dir)
}

async fn api_get(serin: &SerinProcess, path: &str) -> Value {
    let got = get(&client(), &format!("{}{path}", serin.admin_url()), &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    serde_json::from_str(&got.body).expect("JSON")
}

/// The timeline's newest `rolled_back` event.
async fn rollback_event(serin: &SerinProcess) -> Value {
    let timeline = api_get(serin, "/api/v1/services/api/timeline").await;
    timeline
        .as_array()
        .and_then(|events| events.iter().rev().find(|e| e["event"] == "rolled_back"))
        .cloned()
        .unwrap_or_else(|| panic!("no rolled_back event in {timeline}"))
}

/// The row of `version` in a numbers table, from the event's numbers.
fn numbers_row(event: &Value, version: &str) -> String {
    let n = &event["versions"][version];
    let requests = n["requests"].as_u64().expect("requests");
    let errors = n["errors"].as_u64().expect("errors");
    let rate = n["error_rate"]
        .as_f64()
        .map_or("-".to_string(), |r| format!("{:.2}%", r * 100.0));
    format!("| {version} | {requests} | {errors} | {rate} |")
}

const SECTIONS: [&str; 6] = [
    "\n## Summary\n",
    "\n## Timeline\n",
    "\n## Numbers behind each decision\n",
    "\n## Cause\n",
    "\n## Impact\n",
    "\n## Action items\n",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_aborted_by_hand() {
    let held = "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 20, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 30s\n        rules:\n          - error_rate: { max: 50% }\n";
    let (stable, canary, serin_run, dir) = start(held, 0).await;
    let client = client();
    for _ in 0..50 {
        let got = get(&client, &serin_run.url("/"), &[]).await;
        assert_eq!(got.status, StatusCode::OK);
    }
    let canary_hits = canary.hits() as u64;
    assert_eq!(stable.hits() as u64 + canary_hits, 50);
    eventually(
        Duration::from_secs(10),
        "the requests are in the numbers",
        || async {
            let view = api_get(&serin_run, "/api/v1/services/api").await;
            view["versions"]["canary"]["requests"] == canary_hits
        },
    )
    .await;
    let abort = Request::post(format!(
        "{}/api/v1/services/api/abort",
        serin_run.admin_url()
    ))
    .body(Full::new(Bytes::new()))
    .expect("request");
    assert_eq!(send(&client, abort).await.status, StatusCode::OK);
    let event = rollback_event(&serin_run).await;
    assert_eq!(event["versions"]["canary"]["requests"], canary_hits);

    let file = dir.0.join("postmortem.md");
    let out = serin(&[
        "report",
        "api",
        "--admin",
        &serin_run.admin_url(),
        "--output",
        file.to_str().expect("utf-8 path"),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "wrote the post-mortem draft of \"api\" to {}\n",
            file.display()
        )
    );
    let report = std::fs::read_to_string(&file).expect("the report file");
    assert!(
        report.starts_with("# Post-mortem draft: rollout of `api`\n"),
        "{report}"
    );
    for section in SECTIONS {
        assert!(report.contains(section), "no {section:?} in\n{report}");
    }
    for needed in [
        "- **Versions:** canary `canary` against baseline `stable`.".to_string(),
        format!(
            "- **Outcome:** **rolled back by hand** at {} at step 0 (aborted by hand).",
            event["at"].as_str().expect("at")
        ),
        "at most 20% of it: 20% of traffic for".to_string(),
        "- **Decided by:** a person through the admin API (aborted by hand).".to_string(),
        "| started | serin | progressing | 0 | stable 80, canary 20 |".to_string(),
        "| rolled_back | hand | rolled_back | 0 | stable 100, canary 0 | aborted by hand |"
            .to_string(),
        numbers_row(&event, "canary"),
        numbers_row(&event, "stable"),
        format!("`canary` {canary_hits} requests, 0 errors (0.00%)"),
    ] {
        assert!(report.contains(&needed), "missing {needed:?} in\n{report}");
    }
    // Nothing is filled in for people.
    assert!(
        report
            .trim_end()
            .ends_with("## Action items\n\n<!-- - [ ] what, who, by when -->"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_rolled_back_by_its_error_rate_rule() {
    let failing = "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 50, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 5s\n        min_requests: 20\n        confidence: 99%\n        rules:\n          - error_rate: { max: 1% }\n";
    let (_stable, _canary, serin_run, _dir) = start(failing, 503).await;
    let load = Load::start(serin_run.url("/"), 4, Duration::ZERO);
    eventually(
        Duration::from_secs(20),
        "the canary is rolled back",
        || async {
            api_get(&serin_run, "/api/v1/services/api").await["rollout"]["state"] == "rolled_back"
        },
    )
    .await;
    load.stop().await;
    let event = rollback_event(&serin_run).await;
    let errors = event["versions"]["canary"]["errors"]
        .as_u64()
        .expect("errors");
    assert!(errors > 0, "{event}");

    // Printed, with every decision since a minute ago.
    let out = serin(&[
        "report",
        "api",
        "--since",
        "1m",
        "--admin",
        &serin_run.admin_url(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = stdout(&out);
    for section in SECTIONS {
        assert!(report.contains(section), "no {section:?} in\n{report}");
    }
    let rule = &event["rule"];
    for needed in [
        format!(
            "- **Outcome:** **rolled back automatically** at {} at step 0: `error_rate max 1%` was breached.",
            event["at"].as_str().expect("at")
        ),
        format!(
            "- **Deciding rule:** `error_rate max 1%` (error_rate): {}. Observed {:.2}%, threshold 1.00%;",
            rule["summary"].as_str().expect("summary"),
            rule["observed"].as_f64().expect("observed") * 100.0
        ),
        "at most 50% of it".to_string(),
        "decisions since ".to_string(),
        numbers_row(&event, "canary"),
        format!("| rolled_back | serin | rolled_back | 0 | stable 100, canary 0 | `error_rate max 1%`: {} |", rule["summary"].as_str().expect("summary")),
    ] {
        assert!(report.contains(&needed), "missing {needed:?} in\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_reported_is_said() {
    let held = "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 20, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 10s\n        rules:\n          - error_rate: { max: 50% }\n";
    let (_stable, _canary, serin_run, dir) = start(held, 0).await;
    let admin = serin_run.admin_url();

    let out = serin(&["report", "web", "--admin", &admin]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: \"web\" has no rollout decisions, so there is nothing to report (a service without a rollout has none; `serin timeline web` lists the decisions)\n"
    );
    assert_eq!(stdout(&out), "");

    let out = serin(&["report", "nope", "--admin", &admin]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: service \"nope\" is not defined (defined: api, web)"),
        "{}",
        stderr(&out)
    );

    let out = serin(&[
        "report",
        "api",
        "--since",
        "2099-01-01T00:00:00Z",
        "--admin",
        &admin,
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: \"api\" has no rollout decisions since 2099-01-01T00:00:00.000Z, so there is nothing to report; give an earlier --since (`serin timeline api` lists the decisions)\n"
    );

    let out = serin(&["report", "api", "--since", "yesterday", "--admin", &admin]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("\"yesterday\" is neither a span back from now (e.g. 2h, 30m, 1h 30m) nor a time (RFC 3339, e.g. 2026-11-22T04:00:00Z)"),
        "{}",
        stderr(&out)
    );

    let nowhere = dir.0.join("missing-dir").join("report.md");
    let out = serin(&[
        "report",
        "api",
        "--admin",
        &admin,
        "--output",
        nowhere.to_str().expect("utf-8 path"),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: cannot write the report to {}: No such file or directory",
            nowhere.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!nowhere.exists());
}
