//! The rollout state machine as a pure transition function:
//! `(spec, state, event, now) → (state, actions)`. Time is passed in, never read, so
//! the tests drive it with a fake clock; the runner applies the actions.
//!
//! ```text
//! pending ─tick─▶ progressing{0} ─pass & hold over─▶ progressing{1} … ─▶ promoted
//!                      │  ▲                                  
//!        fail (rollback)│  │resume        hold past progress_deadline, pause,
//!                      ▼  │              manual weights, fail (on_failure: pause)
//!                 rolled_back   paused ◀──────────────────────────────────
//! ```
//! A failing canary is rolled back from `progressing` and from `paused` alike;
//! `promoted` and `rolled_back` are final until the rollout's spec changes.

use crate::spec::{OnFailure, Rollout};
use serde::{Deserialize, Serialize};

use crate::analysis::{Breach, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Pending,
    Progressing,
    Paused,
    Promoted,
    RolledBack,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
        }
    }

    /// Still moving: the canary is judged and may be rolled back.
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Pending | Phase::Progressing | Phase::Paused)
    }
}

/// Where a rollout stands; persisted on every transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutState {
    pub phase: Phase,
    /// Index into the spec's steps.
    pub step: usize,
    /// The canary's share in percent; the baseline has 100 − this.
    pub canary_weight: u32,
    /// Wall-clock milliseconds since the Unix epoch.
    pub started_ms: u64,
    pub step_started_ms: u64,
    /// When the current phase began.
    pub since_ms: u64,
    /// Why the rollout is in this phase (paused, rolled back, promoted by hand).
    pub reason: Option<String>,
    /// The last hold reason recorded, so an unchanged hold is not recorded every tick.
    pub last_hold: Option<String>,
}

impl RolloutState {
    pub fn new(now_ms: u64) -> Self {
        Self {
            phase: Phase::Pending,
            step: 0,
            canary_weight: 0,
            started_ms: now_ms,
            step_started_ms: now_ms,
            since_ms: now_ms,
            reason: None,
            last_hold: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// An analysis tick with its verdict.
    Tick(&'a Verdict),
    Promote,
    Pause,
    Resume,
    Abort,
    /// Fleet mode: one instance, judging its own traffic while the fleet could not
    /// decide, found the canary failing and rolled its own canary back; the reason says
    /// what it found. A rollback by the analysis, not by hand.
    RolledBackLocally(&'a str),
    /// Weights were set by hand: the rollout stops moving them.
    ManualWeights,
}

/// Defined with the spec: the config's `notify[].events` name the same decisions.
pub use crate::spec::DecisionKind;

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub kind: DecisionKind,
    pub reason: Option<String>,
    /// The rule and numbers that decided a failure.
    pub breach: Option<Breach>,
    /// Taken by a person (admin API), not by the analysis.
    pub manual: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Give the canary this share (percent) and the baseline the rest.
    SetCanaryWeight(u32),
    Record(Decision),
}

fn decision(kind: DecisionKind, reason: Option<String>) -> Action {
    Action::Record(Decision {
        kind,
        reason,
        breach: None,
        manual: false,
    })
}

fn manual(kind: DecisionKind, reason: &str) -> Action {
    Action::Record(Decision {
        kind,
        reason: Some(reason.to_string()),
        breach: None,
        manual: true,
    })
}

/// Moves to step `index` (weight, clock); a final 100 % step without hold promotes.
fn enter_step(
    spec: &Rollout,
    state: &mut RolloutState,
    index: usize,
    now_ms: u64,
    actions: &mut Vec<Action>,
    kind: DecisionKind,
) {
    let step = spec.steps[index];
    state.phase = Phase::Progressing;
    state.step = index;
    state.step_started_ms = now_ms;
    state.since_ms = now_ms;
    state.reason = None;
    state.last_hold = None;
    state.canary_weight = step.weight;
    actions.push(Action::SetCanaryWeight(step.weight));
    actions.push(decision(kind, None));
    if index + 1 == spec.steps.len() && step.hold.is_none() && step.weight == 100 {
        promote(state, now_ms, actions, None);
    }
}

fn promote(
    state: &mut RolloutState,
    now_ms: u64,
    actions: &mut Vec<Action>,
    by_hand: Option<&str>,
) {
    state.phase = Phase::Promoted;
    state.since_ms = now_ms;
    state.reason = by_hand.map(str::to_string);
    if state.canary_weight != 100 {
        state.canary_weight = 100;
        actions.push(Action::SetCanaryWeight(100));
    }
    actions.push(match by_hand {
        Some(reason) => manual(DecisionKind::Promoted, reason),
        None => decision(DecisionKind::Promoted, None),
    });
}

fn roll_back(
    state: &mut RolloutState,
    now_ms: u64,
    actions: &mut Vec<Action>,
    reason: String,
    breach: Option<Breach>,
    by_hand: bool,
) {
    state.phase = Phase::RolledBack;
    state.since_ms = now_ms;
    state.reason = Some(reason.clone());
    state.canary_weight = 0;
    actions.push(Action::SetCanaryWeight(0));
    actions.push(Action::Record(Decision {
        kind: DecisionKind::RolledBack,
        reason: Some(reason),
        breach,
        manual: by_hand,
    }));
}

fn pause(state: &mut RolloutState, now_ms: u64, reason: String) {
    state.phase = Phase::Paused;
    state.since_ms = now_ms;
    state.reason = Some(reason);
}

fn format_duration_ms(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
}

/// The next state and what to do, for `event` at `now_ms`.
pub fn transition(
    spec: &Rollout,
    state: &RolloutState,
    event: Event<'_>,
    now_ms: u64,
) -> (RolloutState, Vec<Action>) {
    let mut next = state.clone();
    let mut actions = Vec::new();
    match (state.phase, event) {
        (Phase::Promoted | Phase::RolledBack, _) => {}

        (Phase::Pending, Event::Tick(_)) => {
            next.started_ms = now_ms;
            enter_step(
                spec,
                &mut next,
                0,
                now_ms,
                &mut actions,
                DecisionKind::Started,
            );
        }

        (Phase::Progressing | Phase::Paused, Event::Tick(Verdict::Fail(breach))) => {
            let mut reason = format!("{} breached: {}", breach.rule, breach.summary);
            if spec.shadow_share(state.step).is_some() {
                reason.push_str(" (in shadow: the canary served no user)");
            }
            match spec.on_failure {
                OnFailure::Rollback => roll_back(
                    &mut next,
                    now_ms,
                    &mut actions,
                    reason,
                    Some(breach.clone()),
                    false,
                ),
                OnFailure::Pause if state.phase == Phase::Progressing => {
                    pause(&mut next, now_ms, reason.clone());
                    actions.push(Action::Record(Decision {
                        kind: DecisionKind::Paused,
                        reason: Some(reason),
                        breach: Some(breach.clone()),
                        manual: false,
                    }));
                }
                OnFailure::Pause => {}
            }
        }

        (Phase::Progressing, Event::Tick(verdict)) => {
            let step = spec.steps[state.step];
            let hold_ms = step.hold.map_or(0, |h| h.as_millis() as u64);
            let hold_over_at = state.step_started_ms.saturating_add(hold_ms);
            if now_ms < hold_over_at {
                return (next, actions);
            }
            match verdict {
                Verdict::Pass if state.step + 1 < spec.steps.len() => {
                    enter_step(
                        spec,
                        &mut next,
                        state.step + 1,
                        now_ms,
                        &mut actions,
                        DecisionKind::StepAdvanced,
                    );
                }
                Verdict::Pass => promote(&mut next, now_ms, &mut actions, None),
                Verdict::Hold(reason) => {
                    let waited = now_ms - hold_over_at;
                    let deadline = spec.progress_deadline.as_millis() as u64;
                    if waited >= deadline {
                        let why = format!(
                            "progress deadline: step {} could not advance for {} ({reason})",
                            state.step,
                            format_duration_ms(waited)
                        );
                        pause(&mut next, now_ms, why.clone());
                        actions.push(decision(DecisionKind::Paused, Some(why)));
                    } else if state.last_hold.as_deref() != Some(reason.as_str()) {
                        next.last_hold = Some(reason.clone());
                        actions.push(decision(DecisionKind::Held, Some(reason.clone())));
                    }
                }
                Verdict::Fail(_) => {}
            }
        }

        (Phase::Paused, Event::Tick(_)) => {}

        (_, Event::Promote) => promote(&mut next, now_ms, &mut actions, Some("promoted by hand")),
        (_, Event::Abort) => roll_back(
            &mut next,
            now_ms,
            &mut actions,
            "aborted by hand".to_string(),
            None,
            true,
        ),
        (_, Event::RolledBackLocally(reason)) => roll_back(
            &mut next,
            now_ms,
            &mut actions,
            reason.to_string(),
            None,
            false,
        ),
        (Phase::Progressing | Phase::Pending, Event::Pause) => {
            pause(&mut next, now_ms, "paused by hand".to_string());
            actions.push(manual(DecisionKind::Paused, "paused by hand"));
        }
        (Phase::Paused, Event::Pause) => {}
        (Phase::Paused, Event::Resume) => {
            next.phase = Phase::Progressing;
            next.step_started_ms = now_ms;
            next.since_ms = now_ms;
            next.reason = None;
            next.last_hold = None;
            actions.push(manual(DecisionKind::Resumed, "resumed by hand"));
        }
        (Phase::Progressing | Phase::Pending, Event::Resume) => {}
        (_, Event::ManualWeights) => {
            pause(&mut next, now_ms, "weights set by hand".to_string());
            actions.push(manual(DecisionKind::ManualWeights, "weights set by hand"));
        }
    }
    (next, actions)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::spec::{Analysis, Rule, Step};

    use super::*;

    fn spec(on_failure: OnFailure) -> Rollout {
        let s = |weight, hold: Option<u64>| Step {
            shadow: None,
            weight,
            hold: hold.map(Duration::from_secs),
        };
        Rollout {
            shadow: None,
            baseline: 0,
            canary: 1,
            steps: vec![
                s(5, Some(30)),
                s(25, Some(60)),
                s(50, Some(60)),
                s(100, None),
            ],
            analysis: Analysis {
                interval: Duration::from_secs(1),
                window: Duration::from_secs(30),
                min_requests: 50,
                confidence: 0.99,
                rules: vec![Rule::ErrorRate { max: 0.01 }],
            },
            retry_on_baseline: false,
            on_failure,
            progress_deadline: Duration::from_secs(600),
        }
    }

    fn breach() -> Breach {
        Breach {
            index: 0,
            rule: "error_rate max 1%".into(),
            kind: "error_rate",
            observed: 0.5,
            threshold: 0.01,
            evidence: 30.0,
            needed: 12.0,
            summary: "canary error rate 50% against max 1%".into(),
        }
    }

    fn kinds(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::SetCanaryWeight(w) => format!("weight {w}"),
                Action::Record(d) => format!("{:?}", d.kind),
            })
            .collect()
    }

    const S: u64 = 1000;

    /// Runs events at times (seconds) and checks phase, step and weight after each.
    #[test]
    fn table_of_transitions() {
        let pass = Verdict::Pass;
        let hold = Verdict::Hold("thin traffic".into());
        let other_hold = Verdict::Hold("no baseline".into());
        let fail = Verdict::Fail(breach());
        type Row<'a> = (u64, Event<'a>, Phase, usize, u32, &'a [&'a str]);
        let cases: Vec<(&str, OnFailure, Vec<Row>)> = vec![
            (
                "a healthy canary walks every step and is promoted",
                OnFailure::Rollback,
                vec![
                    (
                        0,
                        Event::Tick(&pass),
                        Phase::Progressing,
                        0,
                        5,
                        &["weight 5", "Started"],
                    ),
                    (29, Event::Tick(&pass), Phase::Progressing, 0, 5, &[]),
                    (
                        30,
                        Event::Tick(&pass),
                        Phase::Progressing,
                        1,
                        25,
                        &["weight 25", "StepAdvanced"],
                    ),
                    (
                        90,
                        Event::Tick(&pass),
                        Phase::Progressing,
                        2,
                        50,
                        &["weight 50", "StepAdvanced"],
                    ),
                    (
                        150,
                        Event::Tick(&pass),
                        Phase::Promoted,
                        3,
                        100,
                        &["weight 100", "StepAdvanced", "Promoted"],
                    ),
                    (151, Event::Tick(&fail), Phase::Promoted, 3, 100, &[]),
                ],
            ),
            (
                "a failure rolls back in the same tick, even during a hold, and stays rolled back",
                OnFailure::Rollback,
                vec![
                    (
                        0,
                        Event::Tick(&pass),
                        Phase::Progressing,
                        0,
                        5,
                        &["weight 5", "Started"],
                    ),
                    (
                        10,
                        Event::Tick(&fail),
                        Phase::RolledBack,
                        0,
                        0,
                        &["weight 0", "RolledBack"],
                    ),
                    (11, Event::Tick(&pass), Phase::RolledBack, 0, 0, &[]),
                    (12, Event::Resume, Phase::RolledBack, 0, 0, &[]),
                    (13, Event::Promote, Phase::RolledBack, 0, 0, &[]),
                ],
            ),
            (
                "holds are recorded once per reason after the hold time, then the deadline pauses",
                OnFailure::Rollback,
                vec![
                    (
                        0,
                        Event::Tick(&hold),
                        Phase::Progressing,
                        0,
                        5,
                        &["weight 5", "Started"],
                    ),
                    (20, Event::Tick(&hold), Phase::Progressing, 0, 5, &[]),
                    (30, Event::Tick(&hold), Phase::Progressing, 0, 5, &["Held"]),
                    (31, Event::Tick(&hold), Phase::Progressing, 0, 5, &[]),
                    (
                        32,
                        Event::Tick(&other_hold),
                        Phase::Progressing,
                        0,
                        5,
                        &["Held"],
                    ),
                    (629, Event::Tick(&hold), Phase::Progressing, 0, 5, &["Held"]),
                    (630, Event::Tick(&hold), Phase::Paused, 0, 5, &["Paused"]),
                    (700, Event::Tick(&pass), Phase::Paused, 0, 5, &[]),
                    (
                        701,
                        Event::Tick(&fail),
                        Phase::RolledBack,
                        0,
                        0,
                        &["weight 0", "RolledBack"],
                    ),
                ],
            ),
            (
                "pause, resume restarts the step's hold, abort rolls back",
                OnFailure::Rollback,
                vec![
                    (
                        0,
                        Event::Tick(&pass),
                        Phase::Progressing,
                        0,
                        5,
                        &["weight 5", "Started"],
                    ),
                    (10, Event::Pause, Phase::Paused, 0, 5, &["Paused"]),
                    (40, Event::Tick(&pass), Phase::Paused, 0, 5, &[]),
                    (50, Event::Resume, Phase::Progressing, 0, 5, &["Resumed"]),
                    (79, Event::Tick(&pass), Phase::Progressing, 0, 5, &[]),
                    (
                        80,
                        Event::Tick(&pass),
                        Phase::Progressing,
                        1,
                        25,
                        &["weight 25", "StepAdvanced"],
                    ),
                    (
                        81,
                        Event::Abort,
                        Phase::RolledBack,
                        1,
                        0,
                        &["weight 0", "RolledBack"],
                    ),
                ],
            ),
            (
                "manual promote and manual weights",
                OnFailure::Rollback,
                vec![
                    (
                        0,
                        Event::Tick(&pass),
                        Phase::Progressing,
                        0,
                        5,
                        &["weight 5", "Started"],
                    ),
                    (
                        1,
                        Event::ManualWeights,
                        Phase::Paused,
                        0,
                        5,
                        &["ManualWeights"],
                    ),
                    (
                        2,
                        Event::Promote,
                        Phase::Promoted,
                        0,
                        100,
                        &["weight 100", "Promoted"],
                    ),
                ],
            ),
            (
                "on_failure: pause keeps the weights",
                OnFailure::Pause,
                vec![
                    (
                        0,
                        Event::Tick(&pass),
                        Phase::Progressing,
                        0,
                        5,
                        &["weight 5", "Started"],
                    ),
                    (5, Event::Tick(&fail), Phase::Paused, 0, 5, &["Paused"]),
                    (6, Event::Tick(&fail), Phase::Paused, 0, 5, &[]),
                ],
            ),
        ];
        for (name, on_failure, rows) in cases {
            let spec = spec(on_failure);
            let mut state = RolloutState::new(0);
            for (i, (at, event, phase, step, weight, want)) in rows.into_iter().enumerate() {
                let (next, actions) = transition(&spec, &state, event, at * S);
                assert_eq!(
                    (next.phase, next.step, next.canary_weight, kinds(&actions)),
                    (
                        phase,
                        step,
                        weight,
                        want.iter().map(|s| s.to_string()).collect::<Vec<_>>()
                    ),
                    "{name}: row {i} ({event:?} at {at}s)"
                );
                state = next;
            }
        }
    }

    #[test]
    fn a_rollback_records_the_rule_and_numbers() {
        let spec = spec(OnFailure::Rollback);
        let (state, _) = transition(&spec, &RolloutState::new(0), Event::Tick(&Verdict::Pass), 0);
        let fail = Verdict::Fail(breach());
        let (state, actions) = transition(&spec, &state, Event::Tick(&fail), 3 * S);
        assert_eq!(
            state.reason.as_deref(),
            Some("error_rate max 1% breached: canary error rate 50% against max 1%")
        );
        let Some(Action::Record(d)) = actions.last() else {
            panic!("no record: {actions:?}")
        };
        assert_eq!((d.kind, d.manual), (DecisionKind::RolledBack, false));
        assert_eq!(d.breach.as_ref().map(|b| b.kind), Some("error_rate"));
    }

    #[test]
    fn a_rollback_one_instance_made_alone_is_the_analysis_decision_with_its_reason() {
        let spec = spec(OnFailure::Rollback);
        let (state, _) = transition(&spec, &RolloutState::new(0), Event::Tick(&Verdict::Pass), 0);
        let found = "error_rate max 1% breached (judged on web-2 alone while etcd was away)";
        let (state, actions) = transition(&spec, &state, Event::RolledBackLocally(found), 3 * S);
        assert_eq!((state.phase, state.canary_weight), (Phase::RolledBack, 0));
        assert_eq!(state.reason.as_deref(), Some(found));
        assert_eq!(kinds(&actions), vec!["weight 0", "RolledBack"]);
        let Some(Action::Record(d)) = actions.last() else {
            panic!("no record: {actions:?}")
        };
        assert_eq!((d.kind, d.manual), (DecisionKind::RolledBack, false));
        assert_eq!(d.reason.as_deref(), Some(found));
    }

    #[test]
    fn a_shadow_step_gives_the_canary_no_weight_and_a_failure_in_it_says_so() {
        let mut spec = spec(OnFailure::Rollback);
        spec.steps.insert(
            0,
            Step {
                weight: 0,
                hold: Some(Duration::from_secs(10)),
                shadow: Some(10_000),
            },
        );
        let (s, actions) = transition(&spec, &RolloutState::new(0), Event::Tick(&Verdict::Pass), 0);
        assert_eq!((s.step, s.canary_weight), (0, 0));
        assert_eq!(kinds(&actions), vec!["weight 0", "Started"]);
        // It advances to the first weight step as a weight step does.
        let (passed, actions) = transition(&spec, &s, Event::Tick(&Verdict::Pass), 10 * S);
        assert_eq!((passed.step, passed.canary_weight), (1, 5));
        assert_eq!(kinds(&actions), vec!["weight 5", "StepAdvanced"]);
        // A failure in it rolls back, and the reason says the canary served no user.
        let fail = Verdict::Fail(breach());
        let (failed, actions) = transition(&spec, &s, Event::Tick(&fail), 3 * S);
        assert_eq!((failed.phase, failed.canary_weight), (Phase::RolledBack, 0));
        assert_eq!(kinds(&actions), vec!["weight 0", "RolledBack"]);
        assert_eq!(
            failed.reason.as_deref(),
            Some("error_rate max 1% breached: canary error rate 50% against max 1% (in shadow: the canary served no user)")
        );
    }

    #[test]
    fn a_single_step_of_100_percent_promotes_at_once() {
        let mut spec = spec(OnFailure::Rollback);
        spec.steps = vec![Step {
            shadow: None,
            weight: 100,
            hold: None,
        }];
        let (state, actions) =
            transition(&spec, &RolloutState::new(0), Event::Tick(&Verdict::Pass), 0);
        assert_eq!((state.phase, state.canary_weight), (Phase::Promoted, 100));
        assert_eq!(kinds(&actions), vec!["weight 100", "Started", "Promoted"]);
    }

    #[test]
    fn a_last_step_below_100_promotes_to_100_after_it_passes() {
        let mut spec = spec(OnFailure::Rollback);
        spec.steps = vec![
            Step {
                shadow: None,
                weight: 10,
                hold: None,
            },
            Step {
                shadow: None,
                weight: 50,
                hold: Some(Duration::from_secs(5)),
            },
        ];
        let (s, _) = transition(&spec, &RolloutState::new(0), Event::Tick(&Verdict::Pass), 0);
        let (s, _) = transition(&spec, &s, Event::Tick(&Verdict::Pass), S);
        assert_eq!((s.step, s.canary_weight), (1, 50));
        let (s, _) = transition(&spec, &s, Event::Tick(&Verdict::Pass), 6 * S);
        assert_eq!((s.phase, s.canary_weight), (Phase::Promoted, 100));
    }
}
