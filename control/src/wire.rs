//! The wire types: every record serin writes or serves as JSON, defined once.
//!
//! * saved rollout state, `state_dir/<service>.json`: [`SavedState`] (format
//!   [`STATE_FORMAT`]; `crate::state` reads older formats and refuses newer ones);
//! * timeline events, one per line of `state_dir/<service>.timeline.jsonl` and the
//!   list `GET /api/v1/services/{name}/timeline` answers: [`TimelineEvent`];
//! * the admin API's payloads: [`ServiceView`] (one service, its rollout and its
//!   numbers; every command and weight change answers with it too), [`ConfigStatus`],
//!   [`LastReload`] (`POST /api/v1/reload`), [`ReloadRefused`], [`DrillReport`]
//!   (`…/drill`), and [`ApiError`] for every error;
//! * webhook notifications: [`Notification`];
//! * fleet mode's commands, `P/commands/<service>/<id>` in etcd: [`FleetCommand`],
//!   and the weights of a service without a rollout, `P/weights/<service>`:
//!   [`FleetWeights`]; the fleet's running drill, `P/drill/<service>`: [`FleetDrill`];
//! * fleet mode's summary, `P/summary` in etcd: [`FleetSummary`], and what a service's
//!   view shows of it: [`FleetView`].
//!
//! These are separate from the in-memory types the judge and the control loop work
//! with (`RolloutState`, `RolloutStatus`, `Aggregate`, …), which may change freely: a
//! change here changes what users, scripts, the CLI (`serin status`, `timeline`,
//! `report`), the dashboard (`ui/ui.js`) and files already on disk see, and the golden
//! files under `tests/golden/` pin every shape byte for byte. Fields are written in
//! the order they are declared. The names of phases and decisions are the judge's
//! [`Phase`] and [`DecisionKind`], written in snake_case.
//!
//! Times are written twice where a program and a person both read them: milliseconds
//! since the Unix epoch (`*_ms`) and [`rfc3339`] (UTC, milliseconds).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serin_judge::rollout::{DecisionKind, Phase, RolloutState};
use serin_judge::stats::Detector;

/// `ms` since the Unix epoch as RFC 3339, UTC, with milliseconds:
/// `2026-11-22T04:44:56.090Z`.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

// ---------------------------------------------------------------------------------
// Saved state

/// The format of the state files this serin writes. 1: the spec fingerprint was a hash
/// of the spec's Rust debug output (`crate::state::fingerprint_v1`); 2: of its
/// canonical encoding (`crate::state::canonical_spec`).
pub const STATE_FORMAT: u32 = 2;

/// `state_dir/<service>.json`: where a rollout stands, and the evidence it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// [`STATE_FORMAT`] when written by this serin.
    pub format: u32,
    pub service: String,
    /// Of the rollout's spec (its version is the file's format): a different spec
    /// starts a new rollout.
    pub fingerprint: String,
    pub rollout: SavedRollout,
    /// The rules' detectors, in the order of the rules (docs/analysis.md, "Restarts");
    /// absent from files written before serin saved them, empty once the rollout is
    /// finished.
    #[serde(default)]
    pub detectors: Option<Vec<Detector>>,
}

/// A rollout's state as it is saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRollout {
    pub phase: Phase,
    /// Index into the spec's steps, from 0.
    pub step: usize,
    /// The canary's weight in percent.
    pub canary_weight: u32,
    pub started_ms: u64,
    pub step_started_ms: u64,
    /// When the rollout entered its phase.
    pub since_ms: u64,
    pub reason: Option<String>,
    /// The last hold reason recorded (an unchanged hold is not recorded again).
    pub last_hold: Option<String>,
}

impl From<&RolloutState> for SavedRollout {
    fn from(s: &RolloutState) -> Self {
        Self {
            phase: s.phase,
            step: s.step,
            canary_weight: s.canary_weight,
            started_ms: s.started_ms,
            step_started_ms: s.step_started_ms,
            since_ms: s.since_ms,
            reason: s.reason.clone(),
            last_hold: s.last_hold.clone(),
        }
    }
}

impl From<SavedRollout> for RolloutState {
    fn from(s: SavedRollout) -> Self {
        Self {
            phase: s.phase,
            step: s.step,
            canary_weight: s.canary_weight,
            started_ms: s.started_ms,
            step_started_ms: s.step_started_ms,
            since_ms: s.since_ms,
            reason: s.reason,
            last_hold: s.last_hold,
        }
    }
}

// ---------------------------------------------------------------------------------
// Timeline

/// One decision of a rollout: a line of `<service>.timeline.jsonl`, an element of the
/// timeline the admin API serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    pub at_ms: u64,
    pub service: String,
    pub event: DecisionKind,
    /// Taken by a person through the admin API.
    #[serde(default)]
    pub manual: bool,
    /// The rollout's phase after the decision.
    pub state: Phase,
    pub step: usize,
    /// Every version's weight after the decision.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    pub reason: Option<String>,
    /// The rule that decided a failure.
    pub rule: Option<RuleRecord>,
    /// Each version over the analysis window.
    #[serde(default)]
    pub versions: BTreeMap<String, WindowNumbers>,
    /// Taken while a rollback drill ran (serin injected the canary's faults): written
    /// only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub drill: bool,
    /// At a shadow step: a few of the latest copied requests whose answers differed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<MismatchRecord>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A copied request whose two answers differed: its method, its path (no query), the
/// status the client got and the canary's (`None`: no answer), and what differed
/// first. Never a header value or a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MismatchRecord {
    pub method: String,
    pub path: String,
    pub client: Option<u16>,
    pub canary: Option<u16>,
    /// `status`, `body` or `header NAME` (absent in records saved before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differed: Option<String>,
}

/// A rule that failed, with its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// The rule as written: `error_rate max 1%`.
    pub rule: String,
    /// `error_rate`, `latency`, `burn_rate` or `success`.
    pub kind: String,
    pub observed: Option<f64>,
    pub threshold: Option<f64>,
    pub summary: String,
    /// ln of the evidence and the ln threshold it crossed.
    pub evidence: f64,
    pub needed: f64,
}

/// A version's numbers over a span.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowNumbers {
    pub requests: u64,
    pub errors: u64,
    /// errors / requests; null without requests.
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

// ---------------------------------------------------------------------------------
// Fleet commands

/// The format of the fleet commands this serin writes.
pub const COMMAND_FORMAT: u32 = 1;

/// A command given on any instance of a fleet, for the leader to apply fleet-wide
/// (`P/commands/<service>/<id>` in etcd; docs/fleet.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetCommand {
    /// [`COMMAND_FORMAT`] when written by this serin.
    pub format: u32,
    /// Unique within the fleet: the instance's name, its start and a counter.
    pub id: String,
    pub service: String,
    pub command: FleetCommandKind,
    /// `weights`: each named version's weight; the others keep theirs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, u32>,
    /// The instance it was given on.
    pub instance: String,
    pub at: String,
    pub at_ms: u64,
    /// `local_rollback`: what the instance's own judgement found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `drill`: the faults asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillOrder>,
}

/// The faults a `drill` command asks for, as checked on the instance it was given on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillOrder {
    /// Share of the canary's requests answered 503, in basis points (0..=10 000).
    pub errors_bp: u32,
    /// Added before each of the canary's other requests.
    pub latency_ms: u64,
    /// How long it runs.
    pub for_ms: u64,
}

/// The format of the fleet drill records this serin writes.
pub const DRILL_FORMAT: u32 = 1;

/// `P/drill/<service>` in etcd: the rollback drill running on the fleet, written by its
/// leader when it starts one and deleted when it ends; every instance injects its faults
/// into its own canary requests until `until_ms` (docs/fleet.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetDrill {
    /// [`DRILL_FORMAT`] when written by this serin.
    pub format: u32,
    /// The command's id: an instance applies a drill once.
    pub id: String,
    pub service: String,
    pub canary: String,
    pub errors_bp: u32,
    pub latency_ms: u64,
    pub for_ms: u64,
    /// When the leader started it, and when it ends on every instance (wall clock).
    pub started_at: String,
    pub started_at_ms: u64,
    pub until: String,
    pub until_ms: u64,
    /// The canary's weight when it began.
    pub canary_weight_at_start: u32,
    /// The instance it was given on.
    pub instance: String,
}

/// The format of the fleet weights records this serin writes.
pub const WEIGHTS_FORMAT: u32 = 1;

/// `P/weights/<service>` in etcd: weights set by hand on a service without a rollout,
/// written by the fleet's leader for every instance to apply (docs/fleet.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetWeights {
    /// [`WEIGHTS_FORMAT`] when written by this serin.
    pub format: u32,
    pub service: String,
    /// Every version's weight, as set.
    pub weights: BTreeMap<String, u32>,
    /// The config's weights of the service when they were set: an instance whose config
    /// gives it other weights (the config changed since) keeps its config's.
    pub config_weights: BTreeMap<String, u32>,
    /// The instance the command was given on.
    pub instance: String,
    pub at: String,
    pub at_ms: u64,
}

/// What a [`FleetCommand`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetCommandKind {
    Promote,
    Pause,
    Resume,
    Abort,
    Weights,
    /// An instance cut off from etcd rolled its own canary back.
    LocalRollback,
    /// Start a rollback drill fleet-wide ([`FleetCommand::drill`] says its faults).
    Drill,
    /// End the fleet's running drill.
    EndDrill,
}

// ---------------------------------------------------------------------------------
// Admin API

/// A service as `GET /api/v1/services/{name}` shows it (and `GET /api/v1/services`
/// lists them; commands and weight changes answer with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    /// Each version's weight, in the order the config declares the versions.
    #[serde(with = "in_order")]
    pub weights: Vec<(String, u32)>,
    pub rollout: RolloutView,
    /// The span `versions` covers, in seconds: the analysis window (30 s without a
    /// rollout), or the time serin has been up if that is shorter. Null without a
    /// control loop.
    #[serde(default)]
    pub window_s: Option<f64>,
    /// Each version's numbers over `window_s`, in declared order; empty without a
    /// control loop.
    #[serde(with = "in_order")]
    pub versions: Vec<(String, VersionView)>,
    /// The rollback drill running on the service, if one is: left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillReport>,
    /// Fleet mode: the fleet as its leader last judged it; left out on a serin alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetView>,
}

/// Fleet mode: one service as the fleet's leader last judged it, in its view
/// (`GET /api/v1/services/{name}`), read from [`FleetSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    /// The instance that answered.
    pub instance: String,
    /// The leader that wrote the summary; null before any leader judged a tick.
    pub leader: Option<String>,
    /// The end of the tick the leader judged last (RFC 3339); null as `leader`.
    pub judged_at: Option<String>,
    /// Live instances in the fleet, as the leader counts them.
    pub instances: u64,
    /// The span of `versions` and of each member's numbers, in seconds.
    pub window_s: Option<f64>,
    /// Each version's numbers over the whole fleet: what the judgement used.
    pub versions: BTreeMap<String, WindowNumbers>,
    /// The first instances by name ([`FleetSummary`] says how many), with their own
    /// numbers over the same span.
    pub members: Vec<MemberNumbers>,
    /// The live instances past `members`.
    pub more_members: u64,
    /// Why the fleet's numbers are missing (etcd cannot be read, no leader yet).
    pub note: Option<String>,
}

/// The format of the fleet summaries this serin writes.
pub const SUMMARY_FORMAT: u32 = 1;

/// `P/summary` in etcd: what the fleet's leader judged on at its last tick, for every
/// instance to show (read when asked, not watched). Bounded: per service, the merged
/// numbers and the first [`FleetSummary::LISTED`] live instances by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetSummary {
    /// [`SUMMARY_FORMAT`] when written by this serin.
    pub format: u32,
    pub leader: String,
    /// The last tick judged (tick `n` is `[n·tick, (n+1)·tick)` since the Unix epoch):
    /// a new leader counts the samples of later ticks only.
    pub tick: u64,
    /// The end of that tick: RFC 3339, and Unix ms.
    pub at: String,
    pub at_ms: u64,
    /// Live instances (those with a sample record under `P/samples/`).
    pub instances: u64,
    pub services: Vec<ServiceSummary>,
}

impl FleetSummary {
    /// Instances listed with their own numbers, per service.
    pub const LISTED: usize = 64;
    /// Instances listed over all services: with more than 16 services, fewer a service.
    pub const LISTED_IN_ALL: usize = 1024;
}

/// One service in a [`FleetSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub service: String,
    /// The span of the numbers: the rollout's analysis window (30 s without one).
    pub window_s: f64,
    /// Each version's numbers over the fleet's window.
    pub versions: BTreeMap<String, WindowNumbers>,
    /// The first [`FleetSummary::LISTED`] live instances by name, with their numbers.
    pub members: Vec<MemberNumbers>,
    /// Live instances not listed.
    pub more_members: u64,
    /// The faults the fleet's last drill of this service injected, every instance's
    /// added up over the drill's span; left out when no drill ran since this leader
    /// (or the one before it) led.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<FleetDrillFaults>,
}

/// The faults of the fleet's drill `id`, summed over every instance's sample records
/// (the `<canary>:drill` column, `crate::intake::drill_column`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetDrillFaults {
    /// The drill's id (its command's).
    pub id: String,
    pub errors: u64,
    pub delayed: u64,
    pub total: u64,
}

/// One instance's counts of a service over the summary's span.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNumbers {
    pub instance: String,
    pub versions: BTreeMap<String, Counts>,
}

/// Requests and errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    /// `none` without a rollout; else pending, progressing, paused, promoted or rolled_back.
    pub state: String,
    pub step: Option<usize>,
    /// When the rollout entered its state (RFC 3339).
    pub since: Option<String>,
    pub reason: Option<String>,
    /// The versions the rollout moves traffic between; left out without a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// The canary's weight at each step, in order (`step` indexes them); left out
    /// without a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<u32>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionView {
    pub requests: u64,
    pub errors: u64,
    /// errors / requests; null without requests.
    pub error_rate: Option<f64>,
    /// Requests per second over the window (or over the time up, if shorter).
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// An error as the API reports every error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// What `GET /api/v1/config` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// The config file.
    pub path: String,
    /// xxh3-64 of the file's bytes that are serving now, as 16 hex digits.
    pub hash: String,
    /// When the serving config was loaded (RFC 3339).
    pub loaded_at: String,
    /// The newest reload attempt, if there was one.
    pub last_reload: Option<LastReload>,
    pub reloads: ReloadCounts,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadCounts {
    pub success: u64,
    pub failure: u64,
}

/// The outcome of one reload attempt (what `POST /api/v1/reload` answers when it
/// applied the file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastReload {
    /// RFC 3339.
    pub at: String,
    pub ok: bool,
    /// Why it failed, one line per problem, each with its path; empty when `ok`.
    #[serde(default)]
    pub errors: Vec<String>,
    /// What caused the attempt: `file`, `signal`, `api` or `startup`.
    pub trigger: String,
    /// True when the file's content equals what is serving (nothing to apply).
    #[serde(default)]
    pub unchanged: bool,
}

/// A reload that was refused (422): why, and the attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadRefused {
    pub error: String,
    #[serde(flatten)]
    pub reload: LastReload,
}

/// A rollback drill as `GET`, `POST` and `DELETE /api/v1/services/{name}/drill` answer
/// it, and as `serin drill` prints it at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub service: String,
    /// The version the faults went to: the rollout's canary.
    pub canary: String,
    /// `running` or `ended`.
    pub state: String,
    /// The share of the canary's requests answered 503 by serin, as given (`10%`).
    pub errors: String,
    /// Added before each of the canary's other requests, in ms.
    pub latency_ms: u64,
    /// How long the drill was to run, in seconds.
    pub for_s: u64,
    /// RFC 3339, UTC, milliseconds; and ms since the Unix epoch.
    pub started_at: String,
    pub started_at_ms: u64,
    /// When it ends (ended) on its own.
    pub ends_at: String,
    pub ended_at: Option<String>,
    /// What ended it: `expired`, `rolled_back`, `promoted`, `deleted` (by hand) or
    /// `reload` (a reload or a removed rollout); null while it runs.
    pub ended_by: Option<String>,
    /// The canary's weight when the faults began.
    pub canary_weight_at_start: u32,
    /// Whether the rollout rolled back while the drill ran, and whether a person did it.
    pub rolled_back: bool,
    pub rolled_back_by_hand: bool,
    /// From the first injected fault's drill start to the decision that set the
    /// canary's weight to 0, in ms; null without a rollback.
    pub injection_to_zero_ms: Option<u64>,
    /// Client requests that saw an injected fault.
    pub faults: DrillFaults,
    /// The webhook notifications of the decisions taken while it ran, in order.
    pub notifications: Vec<DrillNotification>,
    /// Whether every webhook that wanted the rollback decision received it; null when
    /// there was no rollback or no webhook wanted it.
    pub rollback_notified: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillFaults {
    /// Answered 503 by serin.
    pub errors: u64,
    /// Delayed by the added latency.
    pub delayed: u64,
    pub total: u64,
    /// Fleet mode: the instance whose clients these are (each instance counts the faults
    /// it injected itself); left out on a serin alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Fleet mode: every instance's faults added up, as the leader last counted them
    /// (`P/summary`); left out on a serin alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetFaults>,
}

/// A fleet drill's faults over every instance, as a report shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetFaults {
    pub errors: u64,
    pub delayed: u64,
    pub total: u64,
    /// The end of the last tick the leader counted (RFC 3339): an instance's faults of
    /// the tick under way come a tick later.
    pub counted_to: Option<String>,
    /// Why there are no numbers (etcd away, no count yet); null with them.
    pub note: Option<String>,
}

/// What became of one notification sent while a drill ran (the notifier's delivery
/// record): of the webhooks that wanted it, how many received it, gave up or dropped
/// it; `pending` are still trying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillNotification {
    pub event: DecisionKind,
    pub at: String,
    pub webhooks: u32,
    pub delivered: u32,
    pub failed: u32,
    pub dropped: u32,
    pub pending: u32,
}

// ---------------------------------------------------------------------------------
// Notifications

/// What a webhook is sent (the `json` format; `slack` sends the words of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The decision: `rolled_back`, `promoted`, `paused`, `step_advanced`, …
    pub event: DecisionKind,
    pub service: String,
    /// The version being rolled out (the canary).
    pub version: String,
    /// The version it is judged against.
    pub baseline: String,
    /// Every version's weight before the decision and after it.
    pub previous_weights: BTreeMap<String, u32>,
    pub new_weights: BTreeMap<String, u32>,
    /// RFC 3339, UTC, milliseconds.
    pub rollout_started_at: String,
    /// For a decision a rule made (a failure): when the failing evidence started.
    pub breach_started_at: Option<String>,
    /// How `breach_started_at` was found.
    pub breach_started_at_source: Option<BreachStartSource>,
    /// The span `metrics` cover: the rollout's analysis window, e.g. `30s`.
    pub window: String,
    /// Each version's numbers over the window.
    pub metrics: BTreeMap<String, WindowNumbers>,
    /// The rule that decided a failure, with the numbers that made it fail.
    pub rule: Option<RuleRecord>,
    /// Why, in words (a hold's reason, "promoted by hand", the breach).
    pub reason: Option<String>,
    /// What serin did, e.g. `canary weight set to 0 (was 30)`.
    pub action: String,
    /// Taken by a person through the admin API.
    pub manual: bool,
    /// Taken while a rollback drill ran: the faults were serin's, not an incident.
    #[serde(default)]
    pub drill: bool,
    pub status: NotificationStatus,
    /// When the decision was taken: RFC 3339, UTC, milliseconds.
    pub at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreachStartSource {
    /// The start of the oldest tick of the unbroken run of ticks, up to the decision,
    /// in which the canary's own numbers were over the rule's threshold.
    FirstFailingTick,
    /// The newest tick alone was not over the threshold (the evidence is cumulative),
    /// so the time of the decision is given.
    Decision,
}

/// The rollout after the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationStatus {
    pub state: Phase,
    /// Index of the current step, from 0.
    pub step: usize,
    /// How many steps the rollout has.
    pub steps: usize,
    /// The canary's weight now (after weights set by hand, theirs).
    pub canary_weight: u32,
}

/// A list of pairs as a JSON object, keys in the list's order (and back).
mod in_order {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde::ser::{Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        pairs: &[(String, T)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<(String, T)>, D::Error> {
        struct Pairs<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Pairs<T> {
            type Value = Vec<(String, T)>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(pairs)
            }
        }
        d.deserialize_map(Pairs(PhantomData))
    }
}
