//! Rollouts end to end: real serin with its control loop, real backends whose faults
//! are switched at run time, real traffic. Holds and intervals are short so the tests
//! run in seconds; the decisions are polled, never slept for.

use std::time::Duration;

use crate::common::*;
use serin_judge::rollout::{DecisionKind, Phase};

const FAST: &str = "        interval: 100ms\n        window: 5s\n        min_requests: 20\n        confidence: 99%";

fn events(c: &Controlled) -> Vec<DecisionKind> {
    c.control.timeline("api").iter().map(|e| e.event).collect()
}

/// The two versions' backends, `stable` and `canary`, and a state directory.
async fn pair(name: &str) -> (Backend, Backend, TempDir) {
    (
        Backend::start("stable").await,
        Backend::start("canary").await,
        TempDir::new(name),
    )
}

/// The `rollout:` block of service `api`: `canary` against `stable` through `steps`
/// (`{ weight: 50, hold: 1h }`), judged on `rules` (`error_rate: { max: 1% }`) with the
/// [`FAST`] analysis.
fn spec(steps: &[&str], rules: &[&str]) -> String {
    spec_with("", steps, rules)
}

/// [`spec`] with `extra` lines of the rollout block after `canary`.
fn spec_with(extra: &str, steps: &[&str], rules: &[&str]) -> String {
    let mut yaml = format!("      baseline: stable\n      canary: canary\n{extra}      steps:\n");
    for step in steps {
        yaml.push_str(&format!("        - {step}\n"));
    }
    yaml.push_str(&format!("      analysis:\n{FAST}\n        rules:\n"));
    for rule in rules {
        yaml.push_str(&format!("          - {rule}\n"));
    }
    yaml
}

async fn rolled_back(c: &Controlled) {
    eventually(Duration::from_secs(10), "rolled back", || async {
        c.phase() == Phase::RolledBack
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_starts_failing_is_rolled_back_and_gets_no_more_traffic() {
    let (stable, canary, dir) = pair("fail").await;
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        &spec(
            &["{ weight: 30, hold: 1h }", "{ weight: 100 }"],
            &[
                "error_rate: { max: 1% }",
                "error_rate: { max_increase: 0.5% }",
            ],
        ),
    );
    let c = Controlled::start(&yaml).await;
    assert_eq!((c.phase(), c.canary_weight()), (Phase::Progressing, 30));
    let load = Load::start(c.serin.url("/"), 8, Duration::ZERO);
    eventually(
        Duration::from_secs(10),
        "the canary serves traffic",
        || async { canary.hits() > 50 },
    )
    .await;
    // Healthy for a while: no rollback.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.phase(), Phase::Progressing);

    canary.set_status(500);
    eventually(
        Duration::from_secs(10),
        "the failing canary is rolled back",
        || async { c.phase() == Phase::RolledBack },
    )
    .await;
    let hits_at_rollback = canary.hits();
    let stable_at_rollback = stable.hits();
    eventually(
        Duration::from_secs(10),
        "traffic keeps flowing to the baseline",
        || async { stable.hits() > stable_at_rollback + 500 },
    )
    .await;
    let tally = load.stop().await;
    // Only requests already in flight at the rollback (8 clients) may still arrive.
    assert!(
        canary.hits() <= hits_at_rollback + 8,
        "canary got {} requests after the rollback",
        canary.hits() - hits_at_rollback
    );
    assert_eq!(c.canary_weight(), 0);
    assert!(tally.errors.load(std::sync::atomic::Ordering::SeqCst) > 0);

    let timeline = c.control.timeline("api");
    let rolled_back = timeline
        .iter()
        .find(|e| e.event == DecisionKind::RolledBack)
        .expect("a rolled_back event");
    let rule = rolled_back.rule.as_ref().expect("the deciding rule");
    assert_eq!(rule.kind, "error_rate");
    assert!(rule.evidence >= rule.needed);
    assert_eq!(rolled_back.weights.get("canary"), Some(&0));
    assert!(rolled_back.versions["canary"].errors > 0);
    // The state file says so too, once the state writer has written it; and the
    // timeline file.
    let read = |file: &str| std::fs::read_to_string(dir.0.join(file)).unwrap_or_default();
    eventually(
        Duration::from_secs(10),
        "the state file says rolled_back",
        || async { read("api.json").contains("\"rolled_back\"") },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the timeline file has the rollback",
        || async {
            read("api.timeline.jsonl")
                .lines()
                .any(|l| l.contains("\"rolled_back\""))
        },
    )
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_canary_is_rolled_back() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    stable.set_delay(Duration::from_millis(10));
    canary.set_delay(Duration::from_millis(10));
    let dir = TempDir::new("slow");
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        &spec(
            &["{ weight: 50, hold: 1h }", "{ weight: 100 }"],
            &["latency: { percentile: 95, max_increase: 20% }"],
        ),
    );
    let c = Controlled::start(&yaml).await;
    let load = Load::start(c.serin.url("/"), 8, Duration::ZERO);
    eventually(
        Duration::from_secs(10),
        "both versions have traffic",
        || async { canary.hits() > 100 && stable.hits() > 100 },
    )
    .await;
    assert_eq!(c.phase(), Phase::Progressing);
    canary.set_delay(Duration::from_millis(30));
    eventually(
        Duration::from_secs(20),
        "the slow canary is rolled back",
        || async { c.phase() == Phase::RolledBack },
    )
    .await;
    load.stop().await;
    let timeline = c.control.timeline("api");
    let rolled_back = timeline
        .iter()
        .find(|e| e.event == DecisionKind::RolledBack)
        .expect("rolled_back");
    assert_eq!(
        rolled_back.rule.as_ref().map(|r| r.kind.as_str()),
        Some("latency")
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_through_every_step() {
    let (stable, canary, dir) = pair("promote").await;
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        &spec(
            &[
                "{ weight: 10, hold: 300ms }",
                "{ weight: 50, hold: 300ms }",
                "{ weight: 100 }",
            ],
            &[
                "error_rate: { max: 1% }",
                "error_rate: { max_increase: 0.5% }",
                "latency: { percentile: 95, max: 800ms }",
            ],
        ),
    );
    let c = Controlled::start(&yaml).await;
    let load = Load::start(c.serin.url("/"), 4, Duration::ZERO);
    eventually(
        Duration::from_secs(20),
        "the canary is promoted",
        || async { c.phase() == Phase::Promoted },
    )
    .await;
    let stable_after = stable.hits();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = load.stop().await;
    assert_eq!(c.canary_weight(), 100);
    // At most the requests of the 4 clients that were already on their way.
    assert!(
        stable.hits() <= stable_after + 4,
        "the baseline still got traffic after promotion: {} then {}",
        stable_after,
        stable.hits()
    );
    assert_eq!(tally.errors.load(std::sync::atomic::Ordering::SeqCst), 0);
    // A step whose hold ended before the canary had enough requests is held (recorded
    // as `held`) until it has; on a loaded machine that can happen. Nothing else may.
    let decisions: Vec<DecisionKind> = events(&c)
        .into_iter()
        .filter(|e| *e != DecisionKind::Held)
        .collect();
    assert_eq!(
        decisions,
        vec![
            DecisionKind::Started,
            DecisionKind::StepAdvanced,
            DecisionKind::StepAdvanced,
            DecisionKind::Promoted
        ]
    );
    let steps: Vec<u32> = c
        .control
        .timeline("api")
        .iter()
        .filter(|e| e.event != DecisionKind::Held)
        .map(|e| e.weights["canary"])
        .collect();
    assert_eq!(steps, vec![10, 50, 100, 100]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_traffic_holds_and_never_fails() {
    let (stable, canary, dir) = pair("thin").await;
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 50, hold: 200ms }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 5s\n        min_requests: 50\n        rules:\n          - error_rate: { max: 1% }\n",
    );
    let c = Controlled::start(&yaml).await;
    // One request every 100 ms, one of the first canary ones failing.
    canary.set_status(500);
    let load = Load::start(c.serin.url("/"), 1, Duration::from_millis(100));
    eventually(
        Duration::from_secs(10),
        "the canary failed once",
        || async { canary.hits() >= 1 },
    )
    .await;
    canary.set_status(0);
    eventually(Duration::from_secs(10), "the hold is recorded", || async {
        events(&c).contains(&DecisionKind::Held)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.stop().await;
    assert_eq!((c.phase(), c.canary_weight()), (Phase::Progressing, 50));
    let held = c
        .control
        .timeline("api")
        .into_iter()
        .find(|e| e.event == DecisionKind::Held)
        .expect("held");
    assert!(
        held.reason
            .as_deref()
            .unwrap_or("")
            .starts_with("thin traffic"),
        "{:?}",
        held.reason
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_rollback_keeps_the_canary_at_zero() {
    let (stable, canary, dir) = pair("restart").await;
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        &spec(
            &["{ weight: 50, hold: 1h }", "{ weight: 100 }"],
            &["error_rate: { max: 1% }"],
        ),
    );
    canary.set_status(503);
    let c = Controlled::start(&yaml).await;
    let load = Load::start(c.serin.url("/"), 4, Duration::ZERO);
    rolled_back(&c).await;
    load.stop().await;
    c.stop().await;

    // A new serin on the same config and state directory.
    canary.set_status(0);
    let before = canary.hits();
    let again = Controlled::start(&yaml).await;
    assert_eq!(
        (again.phase(), again.canary_weight()),
        (Phase::RolledBack, 0)
    );
    let client = client();
    for user in 0..200 {
        let got = get(
            &client,
            &again.serin.url("/"),
            &[("x-user-id", &format!("u{user}"))],
        )
        .await;
        assert_eq!(got.body, "stable");
    }
    assert_eq!(canary.hits(), before);
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_baseline_hides_a_failing_canary_from_clients() {
    let (stable, canary, dir) = pair("retry").await;
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        &spec_with(
            "      retry_on_baseline: true\n",
            &["{ weight: 50, hold: 1h }", "{ weight: 100 }"],
            &["error_rate: { max: 1% }"],
        ),
    );
    canary.set_status(500);
    let c = Controlled::start(&yaml).await;
    let load = Load::start(c.serin.url("/"), 8, Duration::ZERO);
    rolled_back(&c).await;
    let tally = load.stop().await;
    assert!(canary.hits() > 0, "the canary was never tried");
    assert_eq!(
        tally.errors.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "clients saw canary failures"
    );
    // The failures still counted against the canary: that is what rolled it back.
    let rolled_back = c
        .control
        .timeline("api")
        .into_iter()
        .find(|e| e.event == DecisionKind::RolledBack)
        .expect("rolled_back");
    assert!(rolled_back.versions["canary"].errors > 0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_rollout_spec_starts_a_new_rollout_after_a_restart() {
    let (stable, canary, dir) = pair("respec").await;
    let rollout = |first: u32| {
        spec(
            &[
                &format!("{{ weight: {first}, hold: 1h }}"),
                "{ weight: 100 }",
            ],
            &["error_rate: { max: 1% }"],
        )
    };
    let first = rollout_config(stable.addr, canary.addr, &dir.0, &rollout(20));
    let c = Controlled::start(&first).await;
    c.control.command(
        "api",
        serin_judge::rollout::Event::Abort,
        serin_control::runner::now_ms(),
    );
    assert_eq!(c.phase(), Phase::RolledBack);
    c.stop().await;

    let changed = rollout_config(stable.addr, canary.addr, &dir.0, &rollout(30));
    let again = Controlled::start(&changed).await;
    assert_eq!(
        (again.phase(), again.canary_weight()),
        (Phase::Progressing, 30)
    );
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_state_dir_does_not_stop_a_rollback() {
    let (stable, canary, dir) = pair("unwritable").await;
    // A file where the state directory should be: every save fails.
    let blocked = dir.0.join("not-a-dir");
    std::fs::write(&blocked, "x").expect("write");
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &blocked,
        &spec(
            &["{ weight: 50, hold: 1h }", "{ weight: 100 }"],
            &["error_rate: { max: 1% }"],
        ),
    );
    canary.set_status(500);
    let c = Controlled::start(&yaml).await;
    let load = Load::start(c.serin.url("/"), 4, Duration::ZERO);
    rolled_back(&c).await;
    let at_rollback = canary.hits();
    let stable_then = stable.hits();
    eventually(
        Duration::from_secs(10),
        "the baseline keeps serving",
        || async { stable.hits() > stable_then + 200 },
    )
    .await;
    load.stop().await;
    assert!(canary.hits() <= at_rollback + 4);
    // The decision is still in the in-memory timeline.
    assert!(events(&c).contains(&DecisionKind::RolledBack));
    c.stop().await;
}

/// The ticks each detector of `dir`'s saved `api` rollout has seen.
fn saved_ticks(dir: &std::path::Path) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(dir.join("api.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["detectors"]
        .as_array()?
        .iter()
        .map(|d| d["ticks"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_goes_on_with_the_saved_evidence() {
    let (stable, canary, dir) = pair("evidence").await;
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        &spec(
            &["{ weight: 50, hold: 1h }", "{ weight: 100 }"],
            &[
                "error_rate: { max: 1% }",
                "latency: { percentile: 95, max_increase: 20% }",
            ],
        ),
    );
    let c = Controlled::start(&yaml).await;
    let load = Load::start(c.serin.url("/"), 4, Duration::ZERO);
    eventually(
        Duration::from_secs(10),
        "20 ticks of evidence saved",
        || async { saved_ticks(&dir.0).is_some_and(|t| t.len() == 2 && t[0] >= 20) },
    )
    .await;
    load.stop().await;
    c.stop().await;
    let saved = saved_ticks(&dir.0).expect("saved detectors")[0];

    // A new serin on the same config and state directory: its detectors go on from
    // the saved ones (fresh ones would save 1, 2, … ticks).
    let again = Controlled::start(&yaml).await;
    assert_eq!(again.phase(), Phase::Progressing);
    let load = Load::start(again.serin.url("/"), 4, Duration::ZERO);
    eventually(
        Duration::from_secs(10),
        "the detectors saved again",
        || async { saved_ticks(&dir.0).is_some_and(|t| t[0] != saved) },
    )
    .await;
    let after = saved_ticks(&dir.0).expect("saved detectors")[0];
    assert!(
        after > saved && after <= saved + 5,
        "{saved} ticks saved before the restart, {after} after it"
    );
    load.stop().await;
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_from_before_detectors_were_saved_still_resumes_its_rollout() {
    let (stable, canary, dir) = pair("old-state").await;
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        &spec(
            &[
                "{ weight: 10, hold: 1h }",
                "{ weight: 50, hold: 1h }",
                "{ weight: 100 }",
            ],
            &["error_rate: { max: 1% }"],
        ),
    );
    let snapshot = serin_config::parse_str(&yaml, "test.yaml").expect("config");
    let service = snapshot.service("api").expect("api");
    let fingerprint =
        serin_control::state::fingerprint_v1(service, service.rollout.as_ref().expect("rollout"));
    // As serin wrote it before it saved the detectors: at the second step, begun now.
    let now = serin_control::runner::now_ms();
    let old = format!(
        r#"{{
  "format": 1,
  "service": "api",
  "fingerprint": "{fingerprint}",
  "rollout": {{
    "phase": "progressing",
    "step": 1,
    "canary_weight": 50,
    "started_ms": {now},
    "step_started_ms": {now},
    "since_ms": {now},
    "reason": null,
    "last_hold": null
  }}
}}
"#
    );
    std::fs::write(dir.0.join("api.json"), old).expect("write the old state");

    let c = Controlled::start(&yaml).await;
    assert_eq!((c.phase(), c.canary_weight()), (Phase::Progressing, 50));
    assert_eq!(c.control.status("api").map(|s| s.step), Some(1));
    let load = Load::start(c.serin.url("/"), 4, Duration::ZERO);
    eventually(
        Duration::from_secs(10),
        "fresh detectors saved with the state",
        || async { saved_ticks(&dir.0).is_some_and(|t| t.len() == 1 && t[0] >= 1) },
    )
    .await;
    load.stop().await;
    assert_eq!(c.phase(), Phase::Progressing);
    c.stop().await;
}

/// examples/rollout.yaml, listening on a port of its own, its state in `dir`.
fn example_config(dir: &std::path::Path) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rollout.yaml");
    let text = std::fs::read_to_string(path).expect("examples/rollout.yaml");
    text.replace("listen: 127.0.0.1:8080", "listen: 127.0.0.1:0")
        .replace(
            "state_dir: ./serin-state",
            &format!("state_dir: \"{}\"", dir.display()),
        )
}

/// A state file as the previous serin wrote it (format 1, fingerprint of the spec's
/// debug text) for examples/rollout.yaml.
fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/state/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn weights(c: &Controlled) -> Vec<(String, u32)> {
    c.serin
        .dataplane
        .view()
        .weights_of("api")
        .map(|w| w.map(|(v, w)| (v.to_string(), w)).collect())
        .unwrap_or_default()
}

/// A rollback saved by the previous serin stays rolled back after the upgrade: the
/// format-1 fingerprint is still recognised, and the file is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_saved_by_the_previous_serin_stays_rolled_back_after_the_upgrade() {
    let dir = TempDir::new("v1-rolled-back");
    let old = fixture("v1-rolled-back.json");
    std::fs::write(dir.0.join("api.json"), &old).expect("write the old state");
    let c = Controlled::start(&example_config(&dir.0)).await;
    assert_eq!((c.phase(), c.canary_weight()), (Phase::RolledBack, 0));
    assert_eq!(
        weights(&c),
        vec![("stable".to_string(), 100), ("canary".to_string(), 0)]
    );
    let reason = c.control.status("api").and_then(|s| s.reason);
    assert_eq!(
        reason.as_deref(),
        Some("error_rate max 1% breached: canary error rate 5% against max 1%")
    );
    c.stop().await;
    let after = std::fs::read_to_string(dir.0.join("api.json")).expect("the state file");
    assert_eq!(after, old, "nothing changed, nothing written");
}

/// A rollout in progress saved by the previous serin goes on where it was, with its
/// detectors; its next save is written in the current format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_saved_by_the_previous_serin_goes_on_and_is_saved_in_the_new_format() {
    let dir = TempDir::new("v1-progressing");
    std::fs::write(dir.0.join("api.json"), fixture("v1-progressing.json"))
        .expect("write the old state");
    let c = Controlled::start(&example_config(&dir.0)).await;
    assert_eq!((c.phase(), c.canary_weight()), (Phase::Progressing, 5));
    assert_eq!(
        weights(&c),
        vec![("stable".to_string(), 95), ("canary".to_string(), 5)]
    );
    c.control.command(
        "api",
        serin_judge::rollout::Event::Pause,
        serin_control::runner::now_ms(),
    );
    c.stop().await;
    let text = std::fs::read_to_string(dir.0.join("api.json")).expect("the state file");
    let saved: serin_control::wire::SavedState = serde_json::from_str(&text).expect("a state");
    let snapshot =
        serin_config::parse_str(&example_config(&dir.0), "rollout.yaml").expect("config");
    let service = snapshot.service("api").expect("api");
    let spec = service.rollout.as_ref().expect("rollout");
    assert_eq!(saved.format, serin_control::wire::STATE_FORMAT);
    assert_eq!(
        saved.fingerprint,
        serin_control::state::fingerprint(service, spec)
    );
    assert_eq!(
        (saved.rollout.phase, saved.rollout.canary_weight),
        (Phase::Paused, 5)
    );
    let old: serin_control::wire::SavedState =
        serde_json::from_str(&fixture("v1-progressing.json")).expect("the fixture");
    assert_eq!(saved.detectors, old.detectors, "the evidence went on");
}

/// A state file serin cannot use — corrupt, or written by a newer serin — holds the
/// rollout: paused at canary weight 0, the reason naming the file and what to do, the
/// file untouched, through a reload that changes the spec, until a person acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_serin_cannot_read_holds_the_rollout_with_no_canary_traffic() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let rollout = |first: u32| {
        spec(
            &[
                &format!("{{ weight: {first}, hold: 1h }}"),
                "{ weight: 100 }",
            ],
            &["error_rate: { max: 1% }"],
        )
    };
    for (tag, content, says) in [
        (
            "corrupt",
            "{ \"format\": 2, \"service\": ".to_string(),
            "is unreadable",
        ),
        (
            "newer",
            "{\"format\": 3, \"service\": \"api\", \"rollout\": {\"phase\": \"rolled_back\"}}\n"
                .to_string(),
            "has format 3, written by a newer serin",
        ),
    ] {
        let dir = TempDir::new(tag);
        let file = dir.0.join("api.json");
        std::fs::write(&file, &content).expect("write the state");
        let yaml = rollout_config(stable.addr, canary.addr, &dir.0, &rollout(50));
        let c = Controlled::start(&yaml).await;
        let status = c.control.status("api").expect("a rollout");
        assert_eq!(
            (status.phase, status.canary_weight),
            (Phase::Paused, 0),
            "{tag}"
        );
        let reason = status.reason.unwrap_or_default();
        assert!(
            reason.contains(&file.display().to_string()),
            "{tag}: {reason}"
        );
        assert!(reason.contains(says), "{tag}: {reason}");
        assert!(
            reason.contains("move it away and restart serin"),
            "{tag}: {reason}"
        );
        let timeline = c.control.timeline("api");
        let held: Vec<_> = timeline
            .iter()
            .map(|e| (e.event, e.reason.clone()))
            .collect();
        assert_eq!(
            held,
            vec![(DecisionKind::Paused, Some(reason.clone()))],
            "{tag}"
        );

        let before = canary.hits();
        let client = client();
        for user in 0..100 {
            let got = get(
                &client,
                &c.serin.url("/"),
                &[("x-user-id", &format!("u{user}"))],
            )
            .await;
            assert_eq!(got.body, "stable", "{tag}");
        }
        assert_eq!(canary.hits(), before, "{tag}: the canary got no traffic");
        // Ticks over that traffic judge nothing and save nothing over the file.
        for _ in 0..3 {
            c.control.tick(serin_control::runner::now_ms());
        }
        assert!(c.control.flush(Duration::from_secs(5)));
        assert_eq!(
            std::fs::read_to_string(&file).expect("the file"),
            content,
            "{tag}: left as it is"
        );

        // A reload that changes the spec reads the file again: still held.
        let changed = rollout_config(stable.addr, canary.addr, &dir.0, &rollout(20));
        let snapshot = serin_config::parse_str(&changed, "test.yaml").expect("config");
        c.control
            .reconfigure(snapshot, serin_control::runner::now_ms())
            .expect("reloaded");
        assert_eq!((c.phase(), c.canary_weight()), (Phase::Paused, 0), "{tag}");
        assert_eq!(
            std::fs::read_to_string(&file).expect("the file"),
            content,
            "{tag}: left as it is"
        );

        // A person decides, and the decision replaces the file: abort keeps the canary
        // at 0; resume starts the rollout afresh at its (reloaded) first step.
        let (command, after) = match tag {
            "corrupt" => (serin_judge::rollout::Event::Abort, (Phase::RolledBack, 0)),
            _ => (
                serin_judge::rollout::Event::Resume,
                (Phase::Progressing, 20),
            ),
        };
        c.control
            .command("api", command, serin_control::runner::now_ms());
        assert_eq!((c.phase(), c.canary_weight()), after, "{tag}");
        c.stop().await;
        let text = std::fs::read_to_string(&file).expect("the file");
        let saved: serin_control::wire::SavedState = serde_json::from_str(&text).expect("{tag}");
        assert_eq!(
            (saved.rollout.phase, saved.rollout.canary_weight),
            after,
            "{tag}"
        );
    }
}

/// A state directory whose writes hang (the state file's temporary name is a FIFO that
/// nobody reads: opening it for writing blocks) stops nothing: the control loop starts,
/// rolls the failing canary back in the same tick as before, and answers status while
/// the state writer waits on the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_dir_whose_writes_hang_delays_no_rollback() {
    let (stable, canary, dir) = pair("hung").await;
    let fifo = dir.0.join(".api.json.tmp");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let yaml = rollout_config(
        stable.addr,
        canary.addr,
        &dir.0,
        &spec(
            &["{ weight: 50, hold: 1h }", "{ weight: 100 }"],
            &["error_rate: { max: 1% }"],
        ),
    );
    canary.set_status(500);
    let serin = Serin::start(&yaml).await;
    // Taking the first step saves the state: it must not wait for the disk. (On a
    // thread of its own, which a hang would leave behind without holding up the test.)
    let dataplane = serin.dataplane.clone();
    let (started, control) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = started.send(std::sync::Arc::new(serin_control::runner::Control::new(
            dataplane,
            serin_control::runner::now_ms(),
        )));
    });
    let control = tokio::time::timeout(Duration::from_secs(10), control)
        .await
        .expect("the control loop starts while the state file cannot be written")
        .expect("Control::new");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(control.clone().run(stopped));
    let phase = || control.status("api").map(|s| s.phase);
    assert_eq!(phase(), Some(Phase::Progressing));

    let load = Load::start(serin.url("/"), 4, Duration::ZERO);
    eventually(Duration::from_secs(10), "rolled back", || async {
        phase() == Some(Phase::RolledBack)
    })
    .await;
    let at_rollback = canary.hits();
    let stable_then = stable.hits();
    eventually(
        Duration::from_secs(10),
        "the baseline keeps serving",
        || async { stable.hits() > stable_then + 200 },
    )
    .await;
    load.stop().await;
    assert!(canary.hits() <= at_rollback + 4);
    // Nothing reached the disk, and the loop never waited for it.
    assert!(!dir.0.join("api.json").exists());
    assert!(!control.flush(Duration::from_millis(100)));
    let _ = stop.send(true);
    serin.shutdown(Duration::from_secs(5)).await;
}
