//! Golden files for every JSON shape serin writes or serves (`serin_control::wire`):
//! each test serializes a fixed value exactly as serin does (the admin API and the
//! state file: pretty, with a final newline; timeline and access lines: one line
//! each) and compares it byte for byte with `tests/golden/<name>`, then reads the file
//! back and gets the same value.
//!
//! A failure here means a shape users, scripts, the CLI, the dashboard or files on
//! disk see has changed. If that is meant, run
//! `SERIN_UPDATE_GOLDEN=1 cargo test -p serin-control --test wire`, review the diff of
//! `tests/golden/`, and say what changed in docs/admin.md.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serin_control::wire::*;
use serin_judge::rollout::{DecisionKind, Phase};
use serin_judge::stats::Detector;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

#[derive(Clone, Copy)]
enum Form {
    /// `serde_json::to_vec_pretty` and a newline: the admin API, state files.
    Pretty,
    /// One line per value, each with its newline: the timeline file.
    Lines,
}

fn encode<T: Serialize>(values: &[T], form: Form) -> String {
    match form {
        Form::Pretty => {
            let mut text = String::new();
            for v in values {
                text.push_str(&serde_json::to_string_pretty(v).expect("encode"));
                text.push('\n');
            }
            text
        }
        Form::Lines => values
            .iter()
            .map(|v| serde_json::to_string(v).expect("encode") + "\n")
            .collect(),
    }
}

/// Compares `values` encoded in `form` with the golden file `name`, and reads the file
/// back into the same values.
fn golden<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    name: &str,
    values: &[T],
    form: Form,
) {
    let path = repo("tests/golden").join(name);
    let encoded = encode(values, form);
    if std::env::var_os("SERIN_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(repo("tests/golden")).expect("create tests/golden");
        std::fs::write(&path, &encoded).expect("write the golden file");
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with SERIN_UPDATE_GOLDEN=1 cargo test -p serin-control --test wire",
            path.display()
        )
    });
    if encoded != expected {
        panic!(
            "the JSON shape of {name} changed:\n{}\nIf this is meant: SERIN_UPDATE_GOLDEN=1 cargo test \
             -p serin-control --test wire, review the diff of tests/golden/, and say what \
             changed in docs/admin.md (scripts, the CLI, the dashboard and files on disk read \
             this shape).",
            diff(&expected, &encoded)
        );
    }
    let read: Vec<T> = match form {
        Form::Pretty if values.len() == 1 => {
            vec![serde_json::from_str(&expected).expect("read back")]
        }
        Form::Pretty => unreachable!("one pretty value per golden file"),
        Form::Lines => expected
            .lines()
            .map(|l| serde_json::from_str(l).expect("read back"))
            .collect(),
    };
    assert_eq!(
        read, values,
        "{name} reads back as the value it was written from"
    );
}

/// The lines that differ, `-` golden, `+` now.
fn diff(expected: &str, got: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let mut out = String::new();
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                if let Some(x) = x {
                    out.push_str(&format!("{:>4} - {x}\n", i + 1));
                }
                if let Some(y) = y {
                    out.push_str(&format!("{:>4} + {y}\n", i + 1));
                }
            }
        }
    }
    out
}

const T0: u64 = 1_795_322_696_090;

fn numbers(requests: u64, errors: u64, p50: f64) -> WindowNumbers {
    WindowNumbers {
        requests,
        errors,
        error_rate: Some(errors as f64 / requests as f64),
        p50_ms: Some(p50),
        p95_ms: Some(4.211),
        p99_ms: Some(4.379),
    }
}

fn weights(canary: u32) -> BTreeMap<String, u32> {
    [
        ("canary".to_string(), canary),
        ("stable".to_string(), 100 - canary),
    ]
    .into_iter()
    .collect()
}

fn breach() -> RuleRecord {
    RuleRecord {
        rule: "error_rate max 1%".into(),
        kind: "error_rate".into(),
        observed: Some(0.05),
        threshold: Some(0.01),
        summary: "canary error rate 5% against max 1%".into(),
        evidence: 7.571153514636084,
        needed: 6.396929655216145,
    }
}

fn timeline() -> Vec<TimelineEvent> {
    vec![
        TimelineEvent {
            mismatches: Vec::new(),
            at: rfc3339(T0),
            at_ms: T0,
            service: "api".into(),
            event: DecisionKind::Started,
            manual: false,
            state: Phase::Progressing,
            step: 0,
            weights: weights(5),
            reason: None,
            rule: None,
            versions: [
                ("canary".to_string(), WindowNumbers::default()),
                ("stable".to_string(), WindowNumbers::default()),
            ]
            .into_iter()
            .collect(),
            drill: false,
        },
        TimelineEvent {
            mismatches: Vec::new(),
            at: rfc3339(T0 + 10_000),
            at_ms: T0 + 10_000,
            service: "api".into(),
            event: DecisionKind::RolledBack,
            manual: false,
            state: Phase::RolledBack,
            step: 0,
            weights: weights(0),
            reason: Some("error_rate max 1% breached: canary error rate 5% against max 1%".into()),
            rule: Some(breach()),
            versions: [
                ("canary".to_string(), numbers(120, 6, 3.551)),
                ("stable".to_string(), numbers(2000, 0, 3.693)),
            ]
            .into_iter()
            .collect(),
            drill: false,
        },
    ]
}

#[test]
fn saved_state() {
    let state = SavedState {
        format: STATE_FORMAT,
        service: "api".into(),
        fingerprint: "9120eed979d20b93".into(),
        rollout: SavedRollout {
            phase: Phase::Progressing,
            step: 1,
            canary_weight: 25,
            started_ms: T0,
            step_started_ms: T0 + 30_000,
            since_ms: T0,
            reason: None,
            last_hold: Some("canary has 12 of 50 requests needed in the window".into()),
        },
        detectors: Some(vec![Detector::default()]),
    };
    golden("saved_state.json", &[state], Form::Pretty);
}

#[test]
fn timeline_lines() {
    golden("timeline.jsonl", &timeline(), Form::Lines);
}

#[test]
fn timeline_as_the_api_serves_it() {
    golden("timeline.json", &[timeline()], Form::Pretty);
}

fn service_view() -> ServiceView {
    let version = |requests, errors, rps| VersionView {
        requests,
        errors,
        error_rate: Some(errors as f64 / requests as f64),
        rps,
        p50_ms: Some(3.5),
        p95_ms: Some(7.9),
        p99_ms: None,
    };
    ServiceView {
        name: "api".into(),
        weights: vec![("stable".into(), 75), ("canary".into(), 25)],
        rollout: RolloutView {
            state: "progressing".into(),
            step: Some(1),
            since: Some(rfc3339(T0)),
            reason: None,
            baseline: Some("stable".into()),
            canary: Some("canary".into()),
            steps: Some(vec![5, 25, 50, 100]),
        },
        window_s: Some(30.0),
        versions: vec![
            ("stable".into(), version(3000, 3, 100.0)),
            ("canary".into(), version(1000, 1, 33.333)),
        ],
        drill: None,
        fleet: None,
    }
}

fn members() -> Vec<MemberNumbers> {
    let member = |instance: &str, stable: u64, canary: u64| MemberNumbers {
        instance: instance.into(),
        versions: [
            (
                "canary".to_string(),
                Counts {
                    requests: canary,
                    errors: 0,
                },
            ),
            (
                "stable".to_string(),
                Counts {
                    requests: stable,
                    errors: 1,
                },
            ),
        ]
        .into_iter()
        .collect(),
    };
    vec![member("web-1", 1000, 300), member("web-2", 2000, 700)]
}

fn merged() -> BTreeMap<String, WindowNumbers> {
    [
        ("canary".to_string(), numbers(1000, 0, 3.551)),
        ("stable".to_string(), numbers(3000, 2, 3.693)),
    ]
    .into_iter()
    .collect()
}

#[test]
fn the_fleets_weights_of_a_service_without_a_rollout() {
    let weights = FleetWeights {
        format: WEIGHTS_FORMAT,
        service: "web".into(),
        weights: [("v1".to_string(), 60), ("v2".to_string(), 40)]
            .into_iter()
            .collect(),
        config_weights: [("v1".to_string(), 100), ("v2".to_string(), 0)]
            .into_iter()
            .collect(),
        instance: "web-2".into(),
        at: rfc3339(T0),
        at_ms: T0,
    };
    golden("fleet_weights.json", &[weights], Form::Pretty);
}

#[test]
fn the_fleets_summary() {
    let summary = FleetSummary {
        format: SUMMARY_FORMAT,
        leader: "web-2".into(),
        tick: 3_590_645_392,
        at: rfc3339(T0),
        at_ms: T0,
        instances: 66,
        services: vec![ServiceSummary {
            service: "api".into(),
            window_s: 30.0,
            versions: merged(),
            members: members(),
            more_members: 64,
            drill: Some(FleetDrillFaults {
                id: "web-2-1764000000000-4".into(),
                errors: 120,
                delayed: 1_130,
                total: 1_250,
            }),
        }],
    };
    golden("fleet_summary.json", &[summary], Form::Pretty);
}

#[test]
fn a_service_of_a_fleet() {
    let mut view = service_view();
    view.fleet = Some(FleetView {
        instance: "web-1".into(),
        leader: Some("web-2".into()),
        judged_at: Some(rfc3339(T0)),
        instances: 2,
        window_s: Some(30.0),
        versions: merged(),
        members: members(),
        more_members: 0,
        note: None,
    });
    golden("service_in_a_fleet.json", &[view], Form::Pretty);
}

#[test]
fn a_service_with_a_rollout() {
    golden("service.json", &[service_view()], Form::Pretty);
}

#[test]
fn a_service_without_a_rollout_or_a_control_loop() {
    let view = ServiceView {
        name: "web".into(),
        weights: vec![("v1".into(), 100)],
        rollout: RolloutView {
            state: "none".into(),
            step: None,
            since: None,
            reason: None,
            baseline: None,
            canary: None,
            steps: None,
        },
        window_s: None,
        versions: Vec::new(),
        drill: None,
        fleet: None,
    };
    golden("service_without_rollout.json", &[view], Form::Pretty);
}

#[test]
fn the_list_of_services() {
    golden("services.json", &[vec![service_view()]], Form::Pretty);
}

fn reload(ok: bool) -> LastReload {
    LastReload {
        at: rfc3339(T0),
        ok,
        errors: if ok {
            Vec::new()
        } else {
            vec!["services[0].split.weights.canary: 120 is over 100; weights are 0 to 100".into()]
        },
        trigger: "api".into(),
        unchanged: false,
    }
}

#[test]
fn the_config_status() {
    let status = ConfigStatus {
        path: "/etc/serin/serin.yaml".into(),
        hash: "0123456789abcdef".into(),
        loaded_at: rfc3339(T0),
        last_reload: Some(reload(true)),
        reloads: ReloadCounts {
            success: 3,
            failure: 1,
        },
    };
    golden("config_status.json", &[status], Form::Pretty);
}

#[test]
fn a_reload_applied() {
    golden("reload.json", &[reload(true)], Form::Pretty);
}

#[test]
fn a_reload_refused() {
    let refused = ReloadRefused {
        error: "the config was not applied (1 error); the previous config keeps serving: fix \
                the file (`serin check FILE` lists the problems) and reload again"
            .into(),
        reload: reload(false),
    };
    golden("reload_refused.json", &[refused], Form::Pretty);
}

#[test]
fn an_error() {
    let error = ApiError {
        error:
            "service \"apu\" is not defined (defined: api, web); GET /api/v1/services lists them"
                .into(),
    };
    golden("error.json", &[error], Form::Pretty);
}

#[test]
fn a_notification() {
    let events = timeline();
    let rolled_back = &events[1];
    let notification = Notification {
        event: DecisionKind::RolledBack,
        service: "api".into(),
        version: "canary".into(),
        baseline: "stable".into(),
        previous_weights: weights(5),
        new_weights: weights(0),
        rollout_started_at: rfc3339(T0),
        breach_started_at: Some(rfc3339(T0 + 7_000)),
        breach_started_at_source: Some(BreachStartSource::FirstFailingTick),
        window: "30s".into(),
        metrics: rolled_back.versions.clone(),
        rule: Some(breach()),
        reason: rolled_back.reason.clone(),
        action: "canary weight set to 0 (was 5)".into(),
        manual: false,
        drill: false,
        status: NotificationStatus {
            state: Phase::RolledBack,
            step: 0,
            steps: 4,
            canary_weight: 0,
        },
        at: rfc3339(T0 + 10_000),
    };
    golden("notification.json", &[notification], Form::Pretty);
}

/// A rollback drill's events (each marked `drill`) and its report.
#[test]
fn a_drill() {
    let event = |at_ms: u64, event, manual, weight, reason: &str| TimelineEvent {
        at: rfc3339(at_ms),
        at_ms,
        service: "api".into(),
        event,
        manual,
        state: if weight == 0 {
            Phase::RolledBack
        } else {
            Phase::Progressing
        },
        step: 0,
        weights: weights(weight),
        reason: Some(reason.into()),
        rule: None,
        versions: BTreeMap::new(),
        drill: true,
        mismatches: Vec::new(),
    };
    let events = vec![
        event(
            T0,
            DecisionKind::DrillStarted,
            true,
            5,
            "drill: 10% of the canary's requests answered 503 by serin, 300ms added to the others, for 2m",
        ),
        event(
            T0 + 2_400,
            DecisionKind::RolledBack,
            false,
            0,
            "error_rate max 1% breached: canary error rate 9.8% against max 1%",
        ),
        event(
            T0 + 2_500,
            DecisionKind::DrillEnded,
            false,
            0,
            "drill ended: the rollout rolled back; 41 requests answered 503 and 377 delayed by serin",
        ),
    ];
    golden("drill_timeline.jsonl", &events, Form::Lines);
    let report = DrillReport {
        service: "api".into(),
        canary: "canary".into(),
        state: "ended".into(),
        errors: "10%".into(),
        latency_ms: 300,
        for_s: 120,
        started_at: rfc3339(T0),
        started_at_ms: T0,
        ends_at: rfc3339(T0 + 120_000),
        ended_at: Some(rfc3339(T0 + 2_500)),
        ended_by: Some("rolled_back".into()),
        canary_weight_at_start: 5,
        rolled_back: true,
        rolled_back_by_hand: false,
        injection_to_zero_ms: Some(2_400),
        faults: DrillFaults {
            errors: 41,
            delayed: 377,
            total: 418,
            instance: None,
            fleet: None,
        },
        notifications: vec![DrillNotification {
            event: DecisionKind::RolledBack,
            at: rfc3339(T0 + 2_400),
            webhooks: 2,
            delivered: 2,
            failed: 0,
            dropped: 0,
            pending: 0,
        }],
        rollback_notified: Some(true),
    };
    golden("drill.json", std::slice::from_ref(&report), Form::Pretty);
    // In a fleet: this instance's faults, and every instance's as the leader counted them.
    let mut in_a_fleet = report;
    in_a_fleet.faults.instance = Some("web-1".into());
    in_a_fleet.faults.fleet = Some(FleetFaults {
        errors: 120,
        delayed: 1_130,
        total: 1_250,
        counted_to: Some(rfc3339(T0 + 3_000)),
        note: None,
    });
    golden("drill_in_a_fleet.json", &[in_a_fleet], Form::Pretty);
}

/// A rollback at a shadow step, with examples of copies whose answers differed: what
/// differed, a header by its name only.
#[test]
fn a_rollback_in_shadow() {
    let mismatch = |path: &str, canary, differed: Option<&str>| MismatchRecord {
        method: "GET".into(),
        path: path.into(),
        client: Some(200),
        canary,
        differed: differed.map(Into::into),
    };
    let event = TimelineEvent {
        at: rfc3339(T0 + 10_000),
        at_ms: T0 + 10_000,
        service: "api".into(),
        event: DecisionKind::RolledBack,
        manual: false,
        state: Phase::RolledBack,
        step: 0,
        weights: weights(0),
        reason: Some(
            "mismatch max 1% breached: canary mismatch rate 50% against max 1% (in shadow: the \
             canary served no user)"
                .into(),
        ),
        rule: None,
        versions: BTreeMap::new(),
        drill: false,
        mismatches: vec![
            mismatch("/items", Some(200), Some("header x-version")),
            mismatch("/items/7", None, Some("status")),
            // Recorded before what differed was kept.
            mismatch("/", Some(500), None),
        ],
    };
    golden("timeline_shadow.jsonl", &[event], Form::Lines);
}

/// The files the previous release wrote (tests/fixtures/state, for
/// examples/rollout.yaml) read back byte for byte through today's types: the shapes
/// did not change, only the meaning of the fingerprint (format 2).
#[test]
fn fleet_commands() {
    let at_ms = 1_764_000_000_000;
    let command = |id: &str, command, weights: &[(&str, u32)], reason: Option<&str>| FleetCommand {
        format: COMMAND_FORMAT,
        id: id.to_string(),
        service: "api".to_string(),
        command,
        weights: weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
        instance: "web-2".to_string(),
        at: rfc3339(at_ms),
        at_ms,
        reason: reason.map(str::to_string),
        drill: None,
    };
    let drill = FleetCommand {
        drill: Some(DrillOrder {
            errors_bp: 1_000,
            latency_ms: 300,
            for_ms: 120_000,
        }),
        ..command("web-2-1764000000000-4", FleetCommandKind::Drill, &[], None)
    };
    golden(
        "fleet_commands.jsonl",
        &[
            command(
                "web-2-1764000000000-1",
                FleetCommandKind::Promote,
                &[],
                None,
            ),
            command(
                "web-2-1764000000000-2",
                FleetCommandKind::Weights,
                &[("stable", 80), ("canary", 20)],
                None,
            ),
            command(
                "web-2-1764000000000-3",
                FleetCommandKind::LocalRollback,
                &[],
                Some("error_rate: canary 12.5% > 1%"),
            ),
            drill,
            command(
                "web-2-1764000000000-5",
                FleetCommandKind::EndDrill,
                &[],
                None,
            ),
        ],
        Form::Lines,
    );
}

/// `P/drill/<service>`: the drill every instance of a fleet injects until `until_ms`.
#[test]
fn the_fleets_drill() {
    let started_ms = 1_764_000_000_000;
    let drill = FleetDrill {
        format: DRILL_FORMAT,
        id: "web-2-1764000000000-4".into(),
        service: "api".into(),
        canary: "canary".into(),
        errors_bp: 1_000,
        latency_ms: 300,
        for_ms: 120_000,
        started_at: rfc3339(started_ms),
        started_at_ms: started_ms,
        until: rfc3339(started_ms + 120_000),
        until_ms: started_ms + 120_000,
        canary_weight_at_start: 5,
        instance: "web-2".into(),
    };
    golden("fleet_drill.json", &[drill], Form::Pretty);
}

#[test]
fn the_previous_releases_files_read_back_byte_for_byte() {
    for name in ["v1-progressing.json", "v1-rolled-back.json"] {
        let path = repo("tests/fixtures/state").join(name);
        let text = std::fs::read_to_string(&path).expect("fixture");
        let state: SavedState = serde_json::from_str(&text).expect("a state");
        assert_eq!(state.format, 1);
        assert_eq!(encode(&[state], Form::Pretty), text, "{name}");
    }
    let text =
        std::fs::read_to_string(repo("tests/fixtures/state/v1-timeline.jsonl")).expect("fixture");
    let events: Vec<TimelineEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event"))
        .collect();
    assert_eq!(encode(&events, Form::Lines), text);
}
