//! The spec of a rollout, as the judge reads it: the steps, the analysis and its rules,
//! the failure policy, and the kinds of decision. serin-config builds these from the
//! config file (it depends on this crate, not the other way round); the judge reads no
//! file.

use std::fmt;
use std::time::Duration;

use crate::rules::{Ms, Pct};

/// The data plane counts matching requests for at most this many `success` rules per
/// service (fixed-size counters keep recording allocation-free).
pub const MAX_SUCCESS_RULES: usize = 4;

/// A staged canary rollout of one service: serin moves the canary through `steps`,
/// judging it against the baseline every `analysis.interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Index into the service's versions.
    pub baseline: usize,
    /// Index into the service's versions; differs from `baseline`.
    pub canary: usize,
    /// At least one; shadow steps first, then weights 0–100, strictly increasing.
    pub steps: Vec<Step>,
    pub analysis: Analysis,
    /// Retry an idempotent request (GET, HEAD, OPTIONS without a body) that fails on the
    /// canary (connect error, timeout, 5xx) once on the baseline.
    pub retry_on_baseline: bool,
    pub on_failure: OnFailure,
    /// A rollout that cannot advance for this long (thin traffic, inconclusive data) is
    /// paused with a recorded reason.
    pub progress_deadline: Duration,
    /// How shadow steps copy requests to the canary; `Some` exactly when a step is a
    /// shadow step.
    pub shadow: Option<Shadow>,
}

impl Rollout {
    /// The share of requests copied to the canary at step `step` (hundredths of a
    /// percent), if it is a shadow step.
    pub fn shadow_share(&self, step: usize) -> Option<u32> {
        self.steps.get(step).and_then(|s| s.shadow)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The canary's share in percent, 0–100; the baseline gets 100 − weight. 0 for a
    /// shadow step.
    pub weight: u32,
    /// Time to stay at this step before advancing (the window since the step began must
    /// also pass). `None`: advance as soon as it passes.
    pub hold: Option<Duration>,
    /// A shadow step: copies of this share of the requests the baseline serves go to
    /// the canary, which serves no user; in hundredths of a percent, 1–10 000 (100 %).
    /// `None`: a weight step.
    pub shadow: Option<u32>,
}

/// The rollout's `shadow:` block: which requests are copied to the canary during a
/// shadow step, how many copies may be in flight, and how their answers are compared
/// with the answers the clients got.
#[derive(Debug, Clone, PartialEq)]
pub struct Shadow {
    /// Methods copied, uppercase (default GET and HEAD).
    pub methods: Vec<String>,
    /// Requests with a larger body are not copied, and answers with a larger body are
    /// not compared by body (bytes).
    pub max_body: u64,
    /// Copies in flight per worker; beyond it a copy is dropped, never queued.
    pub max_in_flight: u32,
    /// Compare the status classes of both answers.
    pub compare_status: bool,
    /// Compare a hash of both answers' bodies (up to `max_body`).
    pub compare_body: bool,
    /// Compare both answers' headers, but for those in `ignore_headers` and those
    /// that cannot be compared (framing, hop-by-hop, serin's own). On by default when
    /// `ignore_headers` is given.
    pub compare_headers: bool,
    /// Headers left out of the comparison (lowercase).
    pub ignore_headers: Vec<String>,
}

/// Default `shadow.max_body`: 64 KiB.
pub const DEFAULT_SHADOW_MAX_BODY: u64 = 64 * 1024;
/// Default `shadow.max_in_flight`, per worker.
pub const DEFAULT_SHADOW_MAX_IN_FLIGHT: u32 = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Evaluation tick, at least 100 ms.
    pub interval: Duration,
    /// The sliding window judged at each tick, at least `interval`.
    pub window: Duration,
    /// Canary requests in the window needed to pass a step (not needed to fail).
    pub min_requests: u64,
    /// Probability, over a whole healthy rollout, of not rolling it back: in (0.5, 1).
    pub confidence: f64,
    /// At least one.
    pub rules: Vec<Rule>,
}

/// A threshold the canary must keep. Rates and shares are fractions (1 % = 0.01).
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Canary error rate (5xx and upstream failures) at most `max`.
    ErrorRate { max: f64 },
    /// Canary error rate minus the baseline's, same window, at most `max_increase`.
    ErrorRateIncrease { max_increase: f64 },
    /// Canary latency percentile (0–100, exclusive) at most `max`.
    Latency { percentile: f64, max: Duration },
    /// Canary latency percentile at most (1 + `max_increase`) × the baseline's.
    LatencyIncrease { percentile: f64, max_increase: f64 },
    /// Canary error rate divided by the SLO's error budget (1 − slo) at most `max`.
    BurnRate { slo: f64, max: f64 },
    /// Among canary requests matching `path_prefix` (whole segments) and `method`, the
    /// share answered 2xx or 3xx at least `min`. `slot` numbers the service's success
    /// rules from 0 (below [`MAX_SUCCESS_RULES`]), for the data plane's counters.
    Success {
        path_prefix: String,
        /// Uppercase; `None` matches every method.
        method: Option<String>,
        min: f64,
        slot: usize,
    },
    /// During a shadow step, among copied requests whose answers were compared, the
    /// share where the canary's answer differed from the client's at most `max`.
    Mismatch { max: f64 },
}

impl Rule {
    /// `error_rate`, `latency`, `burn_rate`, `success` or `mismatch`: the key the rule is written
    /// under, and the trigger a rollback it decides is counted by.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::ErrorRate { .. } | Rule::ErrorRateIncrease { .. } => "error_rate",
            Rule::Latency { .. } | Rule::LatencyIncrease { .. } => "latency",
            Rule::BurnRate { .. } => "burn_rate",
            Rule::Success { .. } => "success",
            Rule::Mismatch { .. } => "mismatch",
        }
    }
}

/// The rule as written, shortly: `error_rate max 1%`, `latency p95 max_increase 20%`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::ErrorRate { max } => write!(f, "error_rate max {}", Pct(*max)),
            Rule::ErrorRateIncrease { max_increase } => {
                write!(f, "error_rate max_increase {}", Pct(*max_increase))
            }
            Rule::Latency { percentile, max } => write!(
                f,
                "latency p{percentile} max {}",
                Ms(max.as_secs_f64() * 1000.0)
            ),
            Rule::LatencyIncrease {
                percentile,
                max_increase,
            } => write!(
                f,
                "latency p{percentile} max_increase {}",
                Pct(*max_increase)
            ),
            Rule::BurnRate { slo, max } => write!(f, "burn_rate slo {} max {max}", Pct(*slo)),
            Rule::Success {
                path_prefix,
                method,
                min,
                ..
            } => {
                write!(f, "success ")?;
                if let Some(m) = method {
                    write!(f, "{m} ")?;
                }
                write!(f, "{path_prefix} min {}", Pct(*min))
            }
            Rule::Mismatch { max } => write!(f, "mismatch max {}", Pct(*max)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Canary weight → 0, state `rolled_back`.
    Rollback,
    /// Keep the weights, state `paused`, for a person to decide.
    Pause,
}

/// A rollout decision, as the timeline records it and `notify[].events` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Started,
    StepAdvanced,
    Held,
    Paused,
    Resumed,
    RolledBack,
    Promoted,
    ManualWeights,
    /// A person started a rollback drill: serin injects faults into the canary.
    DrillStarted,
    /// The drill ended (its time was up, the rollout finished, a person or a reload).
    DrillEnded,
}

impl DecisionKind {
    pub const ALL: [DecisionKind; 10] = [
        DecisionKind::Started,
        DecisionKind::StepAdvanced,
        DecisionKind::Held,
        DecisionKind::Paused,
        DecisionKind::Resumed,
        DecisionKind::RolledBack,
        DecisionKind::Promoted,
        DecisionKind::ManualWeights,
        DecisionKind::DrillStarted,
        DecisionKind::DrillEnded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Started => "started",
            DecisionKind::StepAdvanced => "step_advanced",
            DecisionKind::Held => "held",
            DecisionKind::Paused => "paused",
            DecisionKind::Resumed => "resumed",
            DecisionKind::RolledBack => "rolled_back",
            DecisionKind::Promoted => "promoted",
            DecisionKind::ManualWeights => "manual_weights",
            DecisionKind::DrillStarted => "drill_started",
            DecisionKind::DrillEnded => "drill_ended",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == text)
    }
}
