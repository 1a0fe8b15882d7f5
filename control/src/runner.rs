//! The control loop: every tick it takes the data plane's intervals, extends each
//! service's window, judges every rollout that is due, applies the state machine's
//! actions (weights through the rollout's `RolloutWeights` handle, which cannot fail),
//! records decisions and hands state and timeline lines to the state writer
//! (`crate::persist`): a tick does no file I/O. It never blocks a request: the data
//! plane only ever sees new weights published.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serin_config::{Rollout, Service, Snapshot};
use serin_proxy::{DataPlane, Report, RolloutWeights, WeightsError};
use tokio::sync::watch;

use serin_judge::analysis::{judge, Input, Spans, Verdict};
use serin_judge::rollout::{
    transition, Action, Decision, DecisionKind, Event, Phase, RolloutState,
};
use serin_judge::rules::{compile, CompiledAnalysis};
use serin_judge::stats::Detector;
use serin_judge::window::{Sample, ServiceWindow};

mod drill;
pub use drill::{DrillMetrics, DrillRefused, DrillRequest, MAX_DRILL, MAX_DRILL_LATENCY};

use crate::notify::{Notifier, RolloutContext};
use crate::persist::StateWriter;
use crate::state;
use crate::timeline::Timeline;
use crate::totals::{rollback_trigger, Totals};
use crate::wire::{
    rfc3339, FleetCommand, FleetCommandKind, Notification, RuleRecord, SavedState, TimelineEvent,
    WindowNumbers, STATE_FORMAT,
};

/// How far back windows reach for services without a rollout (the admin API's view).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
/// Tick of the loop when no rollout asks for a faster one.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A rollout's status as the admin API and the tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutStatus {
    pub phase: Phase,
    pub step: usize,
    pub canary_weight: u32,
    pub since_ms: u64,
    pub reason: Option<String>,
    /// The names of the rollout's baseline and canary versions.
    pub baseline: String,
    pub canary: String,
    /// The canary's weight at each step of the rollout, in order.
    pub steps: Vec<u32>,
}

struct RolloutRun {
    spec: Rollout,
    /// Where its weight changes go: resolved with the table that carries the rollout.
    weights: RolloutWeights,
    baseline: String,
    canary: String,
    fingerprint: String,
    /// The spec's analysis, compiled once: what the judgement and notifications run.
    rules: CompiledAnalysis,
    state: RolloutState,
    detectors: Vec<Detector>,
    /// The detectors changed since the state was last handed to the writer: they are
    /// saved with it after every judged tick, so a restart goes on with them.
    detectors_unsaved: bool,
    /// Its saved state could not be read (`saved_state`): it is not judged and nothing
    /// is saved over the file until a person acts (a command or weights by hand).
    held: bool,
    timeline: Timeline,
    last_eval_ms: u64,
    /// Fleet mode, while etcd is away: this instance's own judgement (detectors and
    /// last judgement) as a safety net, and why it rolled its canary back, if it did.
    local: LocalJudgement,
    /// At a shadow step: the latest copied requests whose answers differed (at most
    /// [`MISMATCH_EXAMPLES`]), shown with the decisions the timeline records.
    mismatches: std::collections::VecDeque<crate::wire::MismatchRecord>,
}

/// Examples of differing answers a timeline event shows at most.
pub const MISMATCH_EXAMPLES: usize = 5;

/// Fleet mode's safety net on one instance (docs/fleet.md, "etcd lost").
#[derive(Debug, Default)]
struct LocalJudgement {
    detectors: Vec<Detector>,
    last_eval_ms: u64,
    /// This instance's canary is at 0 by its own judgement until the fleet's state is
    /// not active any more (the leader rolled back, or a person acted).
    rolled_back: Option<String>,
}

struct ServiceControl {
    name: String,
    window: ServiceWindow,
    /// Fleet mode, on the leader: the fleet's merged numbers (`Control::judge_merged`).
    fleet_window: ServiceWindow,
    rollout: Option<RolloutRun>,
}

/// One service's numbers of one tick on this instance, for the fleet: (end of the
/// tick in unix ms, service, each version's numbers).
pub type TickSamples = (u64, String, Vec<(String, Sample)>);

/// What fleet mode takes from this instance's loop (see `crate::fleet::node`): each
/// tick's own samples to publish, and the states and decisions its steps made, for the
/// leader to write to etcd. Single-node serin has none.
#[derive(Debug, Default)]
pub struct FleetOutbox {
    pub samples: Vec<TickSamples>,
    pub states: Vec<SavedState>,
    pub events: Vec<TimelineEvent>,
}

pub struct Control {
    dataplane: Arc<DataPlane>,
    /// Fleet mode (`cluster` in the config): the rollout state lives in etcd, the
    /// leader judges the fleet's merged numbers, and this instance's loop only collects
    /// its own (`FleetOutbox`) unless it judges as a safety net.
    fleet: Option<Mutex<FleetOutbox>>,
    /// Wakes the fleet publisher after each tick.
    fleet_ticked: tokio::sync::Notify,
    /// Fleet mode: this instance's name, and where commands given here go (to etcd,
    /// for the leader to apply fleet-wide); set once the fleet part runs.
    fleet_instance: Option<String>,
    fleet_commands: std::sync::OnceLock<tokio::sync::mpsc::Sender<FleetCommand>>,
    /// Fleet mode: what the admin API reads of the fleet in etcd (`crate::fleet::view`).
    fleet_reads: std::sync::OnceLock<Arc<dyn crate::fleet::view::FleetReads>>,
    /// Fleet mode: etcd is away, so this instance judges its own traffic as a safety
    /// net (a Fail rolls its own canary back; never a promotion).
    fleet_local: std::sync::atomic::AtomicBool,
    /// Fleet mode: this instance leads the fleet, so a drill ending here is recorded
    /// (a follower's drill ends silently: the leader records it once).
    fleet_leading: std::sync::atomic::AtomicBool,
    /// Fleet mode: since when (Unix ms) etcd has been away; 0 while it is reachable.
    fleet_away_since_ms: AtomicU64,
    state_dir: PathBuf,
    services: Mutex<Vec<ServiceControl>>,
    /// The loop's period (ms): the shortest analysis interval; a reload may change it.
    tick_ms: AtomicU64,
    /// Cumulative figures for /metrics (see `metrics`): taken after `services` when
    /// both are held.
    totals: Mutex<Totals>,
    /// The webhooks of `notify`: decisions are queued there, never waited on.
    notifier: Notifier,
    /// Saves rollout states and timeline lines on a thread of its own.
    writer: StateWriter,
    /// Each service's rollback drill, running or the last that ended (`drill.rs`):
    /// taken after `services` when both are held.
    drills: Mutex<drill::Drills>,
    /// Faults injected by drills a newer one replaced, per service, for `/metrics`.
    drill_totals: Mutex<BTreeMap<String, DrillMetrics>>,
}

impl Control {
    /// Sets up every service's window and rollout from the data plane's current config:
    /// a saved rollout with the same spec resumes (its weights are applied now, before
    /// any request is served); a new one starts at its first step.
    pub fn new(dataplane: Arc<DataPlane>, now_ms: u64) -> Self {
        let view = dataplane.view();
        let snapshot = view.snapshot().clone();
        let state_dir = snapshot.state_dir.clone();
        let writer = StateWriter::start(&state_dir);
        let services = snapshot
            .services
            .iter()
            .enumerate()
            .map(|(i, service)| ServiceControl {
                name: service.name.clone(),
                window: new_window(service),
                fleet_window: new_window(service),
                rollout: view.rollout(i).map(|(spec, weights)| {
                    let saved = saved_state(service, spec, &state_dir, &writer, now_ms);
                    new_run(service, spec, weights, saved, &writer, &state_dir, now_ms)
                }),
            })
            .collect();
        let control = Self {
            dataplane,
            fleet: snapshot
                .cluster
                .is_some()
                .then(|| Mutex::new(FleetOutbox::default())),
            fleet_ticked: tokio::sync::Notify::new(),
            fleet_instance: snapshot.cluster.as_ref().map(|c| c.instance.clone()),
            fleet_commands: std::sync::OnceLock::new(),
            fleet_reads: std::sync::OnceLock::new(),
            fleet_local: std::sync::atomic::AtomicBool::new(false),
            fleet_leading: std::sync::atomic::AtomicBool::new(false),
            fleet_away_since_ms: AtomicU64::new(0),
            state_dir,
            services: Mutex::new(services),
            tick_ms: AtomicU64::new(tick_of(&snapshot).as_millis() as u64),
            totals: Mutex::new(Totals::default()),
            notifier: Notifier::new(&snapshot.notify),
            writer,
            drills: Mutex::new(BTreeMap::new()),
            drill_totals: Mutex::new(BTreeMap::new()),
        };
        {
            let mut services = control.lock();
            for service in services.iter_mut() {
                control.start_or_resume(service, now_ms);
            }
        }
        control
    }

    /// A new rollout takes its first step; a resumed one re-applies its weights; a held
    /// one applies canary weight 0 and records why it is paused.
    fn start_or_resume(&self, service: &mut ServiceControl, now_ms: u64) {
        let name = service.name.clone();
        let Some(run) = service.rollout.as_mut() else {
            return;
        };
        if run.state.phase == Phase::Pending {
            let verdict = Verdict::Pass;
            self.step(&name, run, &service.window, Event::Tick(&verdict), now_ms);
        } else {
            let previous = run.held.then(|| self.weights_of(&name));
            self.apply_weight(&name, run, run.state.canary_weight);
            if run.held {
                // On the timeline and to the webhooks too: a person has to act.
                let decision = Decision {
                    kind: DecisionKind::Paused,
                    reason: run.state.reason.clone(),
                    breach: None,
                    manual: false,
                };
                self.record(
                    &name,
                    run,
                    &service.window,
                    &decision,
                    previous.as_ref(),
                    now_ms,
                );
            }
        }
    }

    /// Adopts a reloaded config: publishes it to the data plane and carries every
    /// rollout over whose spec (the rollout block and its baseline's and canary's names
    /// and endpoints) is unchanged, with its state, weights, evidence and timeline. A
    /// rollout whose spec changed starts afresh; services without a rollout take the
    /// config's weights at once. Nothing changes if the data plane refuses the config.
    pub fn reconfigure(
        &self,
        snapshot: Snapshot,
        now_ms: u64,
    ) -> Result<Vec<String>, serin_proxy::ProxyError> {
        let mut services = self.lock();
        let mut changes = Vec::new();
        // Per service of the new config: whether its rollout is kept, and the canary
        // weight it serves with. Those weights are published with the new table, so not
        // one request sees the config file's weights instead.
        let mut kept: Vec<bool> = Vec::with_capacity(snapshot.services.len());
        let mut canary_weights: Vec<Option<u32>> = Vec::with_capacity(snapshot.services.len());
        // The saved state of rollouts that start (or resume) with this config.
        let mut fresh: Vec<(String, Saved)> = Vec::new();
        for service in &snapshot.services {
            let previous = services.iter().find(|s| s.name == service.name);
            let (keep, weight) = match (
                service.rollout.as_ref(),
                previous.and_then(|p| p.rollout.as_ref()),
            ) {
                (Some(spec), Some(run)) if run.fingerprint == state::fingerprint(service, spec) => {
                    (true, Some(run.state.canary_weight))
                }
                // A new rollout starts at its first step, not at the config's split
                // (or where its saved state says, if it was run before).
                (Some(spec), _) => {
                    let saved = saved_state(service, spec, &self.state_dir, &self.writer, now_ms);
                    let w = match saved.state.phase {
                        Phase::Pending => spec.steps.first().map_or(0, |s| s.weight),
                        _ => saved.state.canary_weight,
                    };
                    fresh.push((service.name.clone(), saved));
                    (false, Some(w))
                }
                (None, _) => (false, None),
            };
            kept.push(keep);
            canary_weights.push(weight);
        }
        let state_dir = self.state_dir.clone();
        if snapshot.state_dir != state_dir {
            tracing::warn!(
                configured = %snapshot.state_dir.display(),
                in_use = %state_dir.display(),
                "state_dir changes take effect on restart"
            );
        }
        let tick = tick_of(&snapshot);
        let view = self
            .dataplane
            .apply_with(snapshot, |i| canary_weights.get(i).copied().flatten())?;
        let snapshot = view.snapshot().clone();
        self.totals().retain(&snapshot);
        self.notifier.reconfigure(&snapshot.notify);

        let mut previous = std::mem::take(&mut *services);
        for ((i, service), keep) in snapshot.services.iter().enumerate().zip(kept) {
            let old = previous
                .iter()
                .position(|s| s.name == service.name)
                .map(|i| previous.swap_remove(i));
            let window = match &old {
                Some(o) if o.window.versions() == version_names(service).as_slice() => {
                    let mut w = o.window.clone();
                    w.set_keep(window_keep(service).as_millis() as u64);
                    w
                }
                _ => new_window(service),
            };
            let had_rollout = old.as_ref().is_some_and(|o| o.rollout.is_some());
            let rollout = match (view.rollout(i), old.and_then(|o| o.rollout)) {
                (Some((spec, weights)), Some(mut run)) if keep => {
                    run.spec = spec.clone();
                    run.rules = compile(&spec.analysis);
                    run.weights = weights;
                    Some(run)
                }
                (Some((spec, weights)), _) => {
                    changes.push(format!(
                        "service \"{}\": {}",
                        service.name,
                        if had_rollout {
                            "the rollout spec changed: a new rollout starts"
                        } else {
                            "a rollout starts"
                        }
                    ));
                    fresh
                        .iter()
                        .position(|(name, ..)| *name == service.name)
                        .map(|i| fresh.swap_remove(i))
                        .map(|(_, saved)| {
                            let writer = &self.writer;
                            new_run(service, spec, weights, saved, writer, &state_dir, now_ms)
                        })
                }
                (None, _) => {
                    if had_rollout {
                        changes.push(format!(
                            "service \"{}\": the rollout was removed; the config's weights apply",
                            service.name
                        ));
                    }
                    None
                }
            };
            let mut control = ServiceControl {
                name: service.name.clone(),
                window,
                fleet_window: new_window(service),
                rollout,
            };
            if !keep {
                self.start_or_resume(&mut control, now_ms);
            } else if let Some(run) = control.rollout.as_ref().filter(|r| shadow_share(r, 0) > 0) {
                // The new table starts with no copies: a shadow step goes on with them.
                self.apply_weight(&control.name, run, run.state.canary_weight);
            }
            services.push(control);
        }
        for gone in previous {
            changes.push(format!("service \"{}\" was removed", gone.name));
        }
        self.end_drills_at_reload(&mut services, now_ms);
        self.tick_ms.store(
            tick.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(changes)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ServiceControl>> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn totals(&self) -> MutexGuard<'_, Totals> {
        self.totals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs ticks until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let ticker_of = |ms: u64| {
            let mut ticker = tokio::time::interval(Duration::from_millis(ms.max(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker
        };
        if self.fleet.is_some() {
            return self.run_aligned(stop).await;
        }
        let mut every = self.tick_ms.load(std::sync::atomic::Ordering::Relaxed);
        let mut ticker = ticker_of(every);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(now_ms()),
                _ = stop.changed() => break,
            }
            // A reload may have asked for another interval.
            let now_every = self.tick_ms.load(std::sync::atomic::Ordering::Relaxed);
            if now_every != every {
                every = now_every;
                ticker = ticker_of(every);
                ticker.tick().await;
            }
        }
    }

    /// Fleet mode's loop: ticks on wall-clock boundaries (`fleet::tick`), so that every
    /// instance's samples cover the same seconds, until `stop` turns true.
    async fn run_aligned(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let every = self.tick_ms();
            let wait = crate::fleet::tick::until_next_tick_ms(now_ms(), every);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                    self.tick(now_ms());
                    self.fleet_ticked.notify_one();
                }
                _ = stop.changed() => break,
            }
        }
    }

    /// The loop's period in ms: the shortest analysis interval.
    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1)
    }

    /// One tick at `now_ms`.
    pub fn tick(&self, now_ms: u64) {
        let intervals = self.dataplane.take_intervals();
        let mut services = self.lock();
        for service in services.iter_mut() {
            if let Some(taken) = intervals.iter().find(|i| i.service == service.name) {
                crate::intake::push_taken(&mut service.window, now_ms, taken);
                self.totals().add(&service.name, &taken.versions);
                if let Some((canary, shadow)) = &taken.shadow {
                    self.totals().add_shadow(&service.name, canary, shadow);
                    if let Some(run) = service.rollout.as_mut() {
                        keep_examples(run, &shadow.examples);
                    }
                }
            }
            if let Some(fleet) = &self.fleet {
                // This instance's numbers go to the fleet; the leader judges them merged.
                let mut versions = intervals
                    .iter()
                    .find(|i| i.service == service.name)
                    .map(crate::intake::samples_of)
                    .unwrap_or_default();
                // The drill's faults go as a column of their own, for the leader's count.
                versions.extend(self.unpublished_drill_faults(&service.name));
                lock(fleet)
                    .samples
                    .push((now_ms, service.name.clone(), versions));
                if self.fleet_local.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = service.name.clone();
                    if let Some(run) = service.rollout.as_mut() {
                        self.judge_locally(&name, run, &service.window, now_ms);
                    }
                }
                // Every instance ends the fleet's drill at its time, with etcd or not.
                self.end_drill_if_due(service, now_ms);
                continue;
            }
            let name = service.name.clone();
            if let Some(run) = service.rollout.as_mut() {
                self.judge_if_due(&name, run, &service.window, now_ms);
            }
            self.end_drill_if_due(service, now_ms);
        }
    }

    /// The per-tick step a single node and a fleet's leader share: if `run` is due at
    /// `now_ms`, judge `window` and apply the verdict to the state machine.
    fn judge_if_due(&self, name: &str, run: &mut RolloutRun, window: &ServiceWindow, now_ms: u64) {
        let interval_ms = run.spec.analysis.interval.as_millis() as u64;
        // A little slack so that ticks arriving a hair early still count.
        if now_ms + interval_ms / 20 < run.last_eval_ms + interval_ms {
            return;
        }
        if !run.state.phase.is_active() || run.held {
            run.last_eval_ms = now_ms;
            return;
        }
        let verdict = self.judge(run, window, now_ms);
        self.step(name, run, window, Event::Tick(&verdict), now_ms);
        run.last_eval_ms = now_ms;
        // A step that changed the state handed the detectors over with it.
        if run.detectors_unsaved {
            self.persist(name, run);
        }
    }

    /// Fleet mode with etcd away: the single node's judgement of this instance's own
    /// window, with detectors of its own; a Fail sets this instance's canary weight to
    /// 0 at once and is sent as a `local_rollback` command for when etcd is back. The
    /// state machine is not stepped: nothing else (a promotion least of all) happens
    /// without the fleet.
    fn judge_locally(&self, name: &str, run: &mut RolloutRun, window: &ServiceWindow, now_ms: u64) {
        let interval_ms = run.spec.analysis.interval.as_millis() as u64;
        if now_ms + interval_ms / 20 < run.local.last_eval_ms + interval_ms
            || !run.state.phase.is_active()
            || run.local.rolled_back.is_some()
        {
            return;
        }
        // The same judgement on this instance's evidence alone: its own detectors and
        // last judgement stand in for the fleet's while it judges.
        std::mem::swap(&mut run.detectors, &mut run.local.detectors);
        std::mem::swap(&mut run.last_eval_ms, &mut run.local.last_eval_ms);
        let fleet_unsaved = run.detectors_unsaved;
        let verdict = self.judge(run, window, now_ms);
        run.detectors_unsaved = fleet_unsaved;
        std::mem::swap(&mut run.detectors, &mut run.local.detectors);
        std::mem::swap(&mut run.last_eval_ms, &mut run.local.last_eval_ms);
        run.local.last_eval_ms = now_ms;
        let Verdict::Fail(breach) = verdict else {
            return;
        };
        let reason = format!(
            "{} (judged on this instance alone while etcd was away)",
            breach.summary
        );
        tracing::warn!(service = name, rule = %breach.rule, summary = %breach.summary, "etcd is away and this instance's canary fails: its canary weight is 0 until the fleet decides");
        run.local.rolled_back = Some(reason.clone());
        self.apply_weight(name, run, 0);
        if let Some(instance) = &self.fleet_instance {
            let command = FleetCommand {
                format: crate::wire::COMMAND_FORMAT,
                id: format!("{instance}-{}-local-{now_ms}", std::process::id()),
                service: name.to_string(),
                command: FleetCommandKind::LocalRollback,
                weights: BTreeMap::new(),
                instance: instance.clone(),
                at: rfc3339(now_ms),
                at_ms: now_ms,
                reason: Some(reason),
                drill: None,
            };
            if let Err(why) = self.submit_fleet_command(command) {
                tracing::warn!(
                    service = name,
                    "the local rollback is not reported to the fleet: {why}"
                );
            }
        }
    }

    /// Fleet mode: whether this instance judges its own traffic (etcd is away); the
    /// first call with `true` also marks since when etcd is away (`/readyz` says so).
    pub fn set_fleet_local(&self, local: bool) {
        if local {
            let _ = self.fleet_away_since_ms.compare_exchange(
                0,
                now_ms().max(1),
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            );
        } else {
            self.fleet_away_since_ms
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        let was = self
            .fleet_local
            .swap(local, std::sync::atomic::Ordering::Relaxed);
        if was != local {
            tracing::info!(
                local,
                "fleet mode: this instance's own judgement as a safety net"
            );
        }
    }

    /// Fleet mode: since when (Unix ms) etcd has been unreachable, if it is now.
    pub fn fleet_away_since_ms(&self) -> Option<u64> {
        match self
            .fleet_away_since_ms
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            since => Some(since),
        }
    }

    /// Fleet mode, `on_etcd_loss: baseline`: every canary of this instance at 0 (the
    /// fleet's state is applied again when etcd is back).
    pub fn fleet_baseline(&self) {
        let mut services = self.lock();
        for service in services.iter_mut() {
            if let Some(run) = service.rollout.as_mut() {
                if run.state.phase.is_active() && run.local.rolled_back.is_none() {
                    run.local.rolled_back = Some("on_etcd_loss: baseline".into());
                    self.apply_weight(&service.name, run, 0);
                }
            }
        }
    }

    /// Fleet mode, on the leader: the fleet's merged numbers of the tick ending at
    /// `end_ms` (`(service, [(version, sample)])`) extend each service's fleet window,
    /// and every rollout due is judged on it, as a single node judges its own. The
    /// states and decisions are then in [`Self::take_fleet_decisions`].
    pub fn judge_merged(&self, end_ms: u64, merged: &[(String, Vec<(String, Sample)>)]) {
        let mut services = self.lock();
        for service in services.iter_mut() {
            let samples = merged
                .iter()
                .find(|(name, _)| *name == service.name)
                .map(|(_, versions)| versions.as_slice())
                .unwrap_or_default();
            let window = &mut service.fleet_window;
            let row = window
                .versions()
                .iter()
                .map(|v| {
                    samples
                        .iter()
                        .find(|(name, _)| name == v)
                        .map(|(_, s)| s.clone())
                        .unwrap_or_default()
                })
                .collect();
            window.push_samples(end_ms, row);
            let name = service.name.clone();
            if let Some(run) = service.rollout.as_mut() {
                self.judge_if_due(&name, run, &service.fleet_window, end_ms);
            }
        }
    }

    /// Fleet mode, on the leader: each service's merged numbers over its window up to
    /// `end_ms` (what [`Self::judge_merged`] judged on), for the fleet's summary.
    pub fn fleet_numbers(&self, end_ms: u64) -> Vec<crate::fleet::view::ServiceNumbers> {
        self.lock()
            .iter()
            .map(|s| {
                let window = s
                    .rollout
                    .as_ref()
                    .map_or(DEFAULT_WINDOW, |r| r.spec.analysis.window)
                    .as_millis() as u64;
                let since = end_ms.saturating_sub(window);
                let numbers = (s.fleet_window.versions().iter().enumerate())
                    .map(|(i, v)| {
                        let all = s.fleet_window.aggregate(i, since);
                        (v.clone(), WindowNumbers::from(&all))
                    })
                    .collect();
                (s.name.clone(), window, numbers)
            })
            .collect()
    }

    /// Fleet mode: a new leadership starts with empty fleet windows, as on any other
    /// instance: one this instance kept while it led before could hold a tick whose
    /// write failed, which the new leadership counts again from etcd.
    pub fn clear_fleet_windows(&self) {
        let snapshot = self.dataplane.snapshot();
        for s in self.lock().iter_mut() {
            if let Some(service) = snapshot.service(&s.name) {
                s.fleet_window = new_window(service);
            }
        }
    }

    /// The data plane this loop steers.
    pub fn dataplane(&self) -> &Arc<DataPlane> {
        &self.dataplane
    }

    /// Fleet mode: where the admin API reads the fleet's summary and timeline (once).
    pub fn connect_fleet_reads(&self, reads: Arc<dyn crate::fleet::view::FleetReads>) {
        let _ = self.fleet_reads.set(reads);
    }

    /// Fleet mode: what the admin API reads of the fleet; `None` on a serin alone.
    pub fn fleet_reads(&self) -> Option<&Arc<dyn crate::fleet::view::FleetReads>> {
        self.fleet_reads.get()
    }

    /// Fleet mode: this instance's samples of the ticks since the last call.
    pub fn take_fleet_samples(&self) -> Vec<TickSamples> {
        self.fleet
            .as_ref()
            .map(|f| std::mem::take(&mut lock(f).samples))
            .unwrap_or_default()
    }

    /// Fleet mode: the states and decisions the steps made since the last call.
    pub fn take_fleet_decisions(&self) -> (Vec<SavedState>, Vec<TimelineEvent>) {
        self.fleet
            .as_ref()
            .map(|f| {
                let mut f = lock(f);
                (std::mem::take(&mut f.states), std::mem::take(&mut f.events))
            })
            .unwrap_or_default()
    }

    /// Fleet mode: resolves after the next tick.
    pub async fn fleet_ticked(&self) {
        self.fleet_ticked.notified().await
    }

    /// Fleet mode: this instance's name (`None`: one serin on its own).
    pub fn fleet_instance(&self) -> Option<&str> {
        self.fleet_instance.as_deref()
    }

    /// Fleet mode: where commands given on this instance are sent (once).
    pub fn connect_fleet_commands(&self, commands: tokio::sync::mpsc::Sender<FleetCommand>) {
        let _ = self.fleet_commands.set(commands);
    }

    /// Fleet mode: hands `command` over to be written to etcd; `Err` says why it cannot
    /// be (not in fleet mode, or too many commands waiting).
    pub fn submit_fleet_command(&self, command: FleetCommand) -> Result<(), String> {
        let Some(commands) = self.fleet_commands.get() else {
            return Err("fleet mode has not started on this instance yet".into());
        };
        commands.try_send(command).map_err(|err| match err {
            tokio::sync::mpsc::error::TrySendError::Full(_) => {
                "too many commands wait for etcd; try again shortly".to_string()
            }
            tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                "this instance's fleet part has stopped".to_string()
            }
        })
    }

    /// Fleet mode, on the leader: applies a command given on any instance through the
    /// same path as a command given here (`Self::command`, `Self::set_weights_manually`).
    /// False (and nothing changes) when it does not apply to the rollout as it stands.
    pub fn apply_fleet_command(&self, command: &FleetCommand, now_ms: u64) -> bool {
        let Some(status) = self.status(&command.service) else {
            return false;
        };
        let active = status.phase.is_active();
        let event = match command.command {
            FleetCommandKind::Promote if active => Event::Promote,
            FleetCommandKind::Pause if active => Event::Pause,
            FleetCommandKind::Resume if active => Event::Resume,
            FleetCommandKind::Abort if active => Event::Abort,
            FleetCommandKind::LocalRollback if active => Event::RolledBackLocally(
                command
                    .reason
                    .as_deref()
                    .unwrap_or("an instance's own judgement while etcd was away"),
            ),
            FleetCommandKind::Weights => {
                let weights: Vec<(&str, u32)> = command
                    .weights
                    .iter()
                    .map(|(v, w)| (v.as_str(), *w))
                    .collect();
                return match self.set_weights_manually(&command.service, &weights, now_ms) {
                    Ok(_) => true,
                    Err(err) => {
                        tracing::warn!(service = %command.service, id = %command.id, error = %err, "a fleet command's weights do not apply");
                        false
                    }
                };
            }
            FleetCommandKind::EndDrill => {
                return match self.end_drill(&command.service, now_ms) {
                    Ok(_) => true,
                    Err(refused) => {
                        tracing::info!(service = %command.service, id = %command.id, ?refused, "a fleet command's drill end does not apply");
                        false
                    }
                };
            }
            _ => return false,
        };
        self.command(&command.service, event, now_ms).is_some()
    }

    /// Fleet mode: every rollout's state as the leader writes it.
    pub fn fleet_states(&self) -> Vec<SavedState> {
        self.lock()
            .iter()
            .filter_map(|s| s.rollout.as_ref().map(|run| saved_of(&s.name, run)))
            .collect()
    }

    /// Fleet mode: adopts a rollout state read from etcd, as a local decision would
    /// apply it (its weights through the rollout's handle). A state of another spec
    /// (another fingerprint) or of an unknown service is refused, with why.
    pub fn adopt(&self, saved: &SavedState) -> Result<bool, String> {
        let mut services = self.lock();
        let Some(service) = services.iter_mut().find(|s| s.name == saved.service) else {
            return Err(format!("no service {:?} in this config", saved.service));
        };
        let Some(run) = service.rollout.as_mut() else {
            return Err(format!(
                "service {:?} has no rollout in this config",
                saved.service
            ));
        };
        if run.fingerprint != saved.fingerprint {
            return Err(format!(
                "its fingerprint {} is not this config's rollout spec ({}); the config's rollout holds",
                saved.fingerprint, run.fingerprint
            ));
        }
        let state = RolloutState::from(saved.rollout.clone());
        let detectors = saved.detectors.clone().unwrap_or_default();
        let changed = state != run.state || detectors != run.detectors;
        if changed {
            run.held = false;
            run.detectors = if detectors.len() == run.rules.rules.len() || detectors.is_empty() {
                detectors
            } else {
                Vec::new()
            };
            run.state = state;
        }
        // A canary this instance rolled back on its own stays at 0 while the fleet's
        // rollout is still active: the leader has yet to take its report.
        if !run.state.phase.is_active() {
            run.local.rolled_back = None;
        }
        if run.state.phase == Phase::RolledBack {
            // The leader's decision, when it set the canary to 0.
            self.note_fleet_rollback(&saved.service, run.state.since_ms);
        }
        let weight = match run.local.rolled_back {
            Some(_) => 0,
            None => run.state.canary_weight,
        };
        // A changed state may start or end a shadow step at the same canary weight (0).
        if changed || self.weights_of(&service.name).get(&run.canary).copied() != Some(weight) {
            self.apply_weight(&saved.service, run, weight);
            return Ok(true);
        }
        Ok(changed)
    }

    fn judge(&self, run: &mut RolloutRun, window: &ServiceWindow, now_ms: u64) -> Verdict {
        let spec = &run.spec;
        let window_since = now_ms.saturating_sub(spec.analysis.window.as_millis() as u64);
        let step_since = run.state.step_started_ms.max(window_since);
        // At a shadow step the canary is judged on its answers to copies, and
        // `mismatch` rules on the comparisons: columns of their own in the window.
        let shadow = shadow_columns(run, window);
        let (b, c) = (spec.baseline, shadow.map_or(spec.canary, |s| s.0));
        let mismatch_window = shadow.map(|s| window.aggregate(s.1, window_since));
        let mismatch_step = shadow.map(|s| window.aggregate(s.1, step_since));
        let mismatch_tick = shadow.map(|s| window.aggregate(s.1, run.last_eval_ms));
        let baseline_window = window.aggregate(b, window_since);
        let canary_window = window.aggregate(c, window_since);
        let baseline_step = window.aggregate(b, step_since);
        let canary_step = window.aggregate(c, step_since);
        // Every tick since the last judgement: the canary's batch, and the baseline's
        // numbers of the same seconds.
        let canary_tick = window.aggregate(c, run.last_eval_ms);
        let baseline_tick = window.aggregate(b, run.last_eval_ms);
        let input = Input {
            baseline_window: &baseline_window,
            canary_window: &canary_window,
            baseline_step: &baseline_step,
            canary_step: &canary_step,
            canary_tick: &canary_tick,
            baseline_tick: &baseline_tick,
            baseline_has_weight: run.state.canary_weight < 100,
            mismatch: match (&mismatch_window, &mismatch_step, &mismatch_tick) {
                (Some(window), Some(step), Some(tick)) => Some(Spans { window, step, tick }),
                _ => None,
            },
        };
        let judgement = judge(&run.rules, &run.detectors, &input);
        if judgement.detectors != run.detectors {
            run.detectors = judgement.detectors;
            run.detectors_unsaved = true;
        }
        judgement.verdict
    }

    /// Applies `event` to the rollout: transition, actions, timeline, notifications,
    /// persistence.
    fn step(
        &self,
        service: &str,
        run: &mut RolloutRun,
        window: &ServiceWindow,
        event: Event<'_>,
        now_ms: u64,
    ) {
        self.step_with(service, run, window, event, now_ms, None);
    }

    /// [`Self::step`], where `previous` are the service's weights before the event
    /// when they were changed already (manual weights); else they are read here.
    fn step_with(
        &self,
        service: &str,
        run: &mut RolloutRun,
        window: &ServiceWindow,
        event: Event<'_>,
        now_ms: u64,
        previous: Option<BTreeMap<String, u32>>,
    ) {
        if !matches!(event, Event::Tick(_)) {
            // A person acted on a held rollout: their decision is saved over the file.
            run.held = false;
        }
        let (next, actions) = transition(&run.spec, &run.state, event, now_ms);
        let changed = next != run.state;
        run.state = next;
        // Weights before the actions, for notifications (read only if one is wanted).
        let notified = actions
            .iter()
            .any(|a| matches!(a, Action::Record(d) if self.notifier.wants(d.kind)));
        let previous = match previous {
            Some(weights) => Some(weights),
            None if notified => Some(self.weights_of(service)),
            None => None,
        };
        for action in actions {
            match action {
                Action::SetCanaryWeight(w) => self.apply_weight(service, run, w),
                Action::Record(decision) => {
                    self.record(service, run, window, &decision, previous.as_ref(), now_ms)
                }
            }
        }
        if changed {
            if matches!(run.state.phase, Phase::Promoted | Phase::RolledBack) {
                run.detectors.clear();
            }
            self.persist(service, run);
        }
    }

    /// Records `decision` on the rollout's timeline, logs it and notifies the webhooks
    /// that want it; `previous` are the weights before it (read if a webhook wants it).
    fn record(
        &self,
        service: &str,
        run: &mut RolloutRun,
        window: &ServiceWindow,
        decision: &Decision,
        previous: Option<&BTreeMap<String, u32>>,
        now_ms: u64,
    ) {
        if decision.kind == DecisionKind::RolledBack {
            self.totals()
                .count_rollback(service, rollback_trigger(decision));
        }
        let window_since = now_ms.saturating_sub(run.spec.analysis.window.as_millis() as u64);
        let versions: BTreeMap<String, WindowNumbers> = window
            .versions()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    v.clone(),
                    WindowNumbers::from(&window.aggregate(i, window_since)),
                )
            })
            .collect();
        let event = TimelineEvent {
            at: rfc3339(now_ms),
            at_ms: now_ms,
            service: service.to_string(),
            event: decision.kind,
            manual: decision.manual,
            state: run.state.phase,
            step: run.state.step,
            weights: self.weights_of(service),
            reason: decision.reason.clone(),
            rule: decision.breach.as_ref().map(RuleRecord::from),
            versions,
            drill: self.drill_running(service),
            mismatches: run.mismatches.iter().cloned().collect(),
        };
        if run.spec.shadow_share(run.state.step).is_none() {
            run.mismatches.clear();
        }
        match &decision.breach {
            Some(b) => {
                tracing::warn!(service, event = ?decision.kind, rule = %b.rule, summary = %b.summary, "rollout decision")
            }
            None => {
                tracing::info!(service, event = ?decision.kind, reason = decision.reason.as_deref().unwrap_or(""), "rollout decision")
            }
        }
        let mut delivery = None;
        if let Some(previous) = previous {
            if self.notifier.wants(decision.kind) {
                let context = RolloutContext {
                    spec: &run.spec,
                    rules: &run.rules,
                    baseline: &run.baseline,
                    canary: &run.canary,
                    started_ms: run.state.started_ms,
                    canary_weight: run.state.canary_weight,
                };
                delivery = Some(self.notifier.send(Notification::new(
                    &event,
                    previous.clone(),
                    &context,
                    window,
                    decision.breach.as_ref(),
                )));
            }
        }
        if event.drill {
            self.note_drill_decision(service, &event, delivery);
        }
        match &self.fleet {
            Some(fleet) => {
                lock(fleet).events.push(event.clone());
                run.timeline.remember(event);
            }
            None => run.timeline.record(event),
        }
    }

    /// Publishes the rollout's canary weight (its baseline gets the rest): a new split
    /// table for the service, nothing that can fail.
    fn apply_weight(&self, service: &str, run: &RolloutRun, canary_weight: u32) {
        let shadow = shadow_share(run, canary_weight);
        self.dataplane
            .set_rollout_weights(&run.weights, canary_weight, shadow);
        tracing::debug!(service, canary_weight, shadow, "rollout weights published");
    }

    /// The weights `service` serves with now, by version.
    fn weights_of(&self, service: &str) -> BTreeMap<String, u32> {
        self.dataplane
            .view()
            .weights_of(service)
            .map(|weights| weights.map(|(v, w)| (v.to_string(), w)).collect())
            .unwrap_or_default()
    }

    /// Hands the rollout's state to the writer (`crate::persist`), which saves it off
    /// this thread and retries a failed save.
    fn persist(&self, service: &str, run: &mut RolloutRun) {
        let saved = saved_of(service, run);
        match &self.fleet {
            // In etcd, written by the leader (`crate::fleet::node`).
            Some(fleet) => lock(fleet).states.push(saved),
            None => self.writer.save(saved),
        }
        run.detectors_unsaved = false;
    }

    /// Waits at most `timeout` for the rollout states and timeline lines handed over so
    /// far to be written (at shutdown); false if they were not.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.writer.flush(timeout)
    }

    /// The rollout status of `service`, if it has a rollout.
    pub fn status(&self, service: &str) -> Option<RolloutStatus> {
        self.lock()
            .iter()
            .find(|s| s.name == service)
            .and_then(|s| s.rollout.as_ref())
            .map(status_of)
    }

    /// Each version's numbers over the ticks that ended after `since_ms`, and the end of
    /// the newest tick (pass it back as `since_ms` to read the next ticks only).
    pub fn numbers_since(
        &self,
        service: &str,
        since_ms: u64,
    ) -> Option<(u64, BTreeMap<String, WindowNumbers>)> {
        let services = self.lock();
        let s = services.iter().find(|s| s.name == service)?;
        let newest = s.window.latest_at().unwrap_or(since_ms).max(since_ms);
        let numbers = s
            .window
            .versions()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    v.clone(),
                    WindowNumbers::from(&s.window.aggregate(i, since_ms)),
                )
            })
            .collect();
        Some((newest, numbers))
    }

    /// The decision log of `service`, oldest first.
    pub fn timeline(&self, service: &str) -> Vec<TimelineEvent> {
        self.lock()
            .iter()
            .find(|s| s.name == service)
            .and_then(|s| s.rollout.as_ref())
            .map(|r| r.timeline.events().cloned().collect())
            .unwrap_or_default()
    }

    /// Every version's cumulative counts and latency histogram, and every service's
    /// rollbacks, as of the last tick (what `/metrics` exposes).
    pub fn metric_totals(&self) -> Totals {
        self.totals().clone()
    }

    /// The webhooks and their counts of notifications delivered, failed and dropped.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// What the data plane reports (its config, the weights in force) and every
    /// rollout's status, read together under the control lock, so that a step and the
    /// weights it set are seen together.
    pub fn statuses_with_report(&self) -> (Report, BTreeMap<String, RolloutStatus>) {
        let services = self.lock();
        let report = self.dataplane.report();
        let statuses = services
            .iter()
            .filter_map(|s| s.rollout.as_ref().map(|r| (s.name.clone(), status_of(r))))
            .collect();
        (report, statuses)
    }

    /// The names of the services, in config order.
    pub fn services(&self) -> Vec<String> {
        self.lock().iter().map(|s| s.name.clone()).collect()
    }

    /// The span the admin API reports `service`'s numbers over: its rollout's analysis
    /// window, or [`DEFAULT_WINDOW`] without a rollout.
    pub fn window_of(&self, service: &str) -> Option<Duration> {
        self.lock().iter().find(|s| s.name == service).map(|s| {
            s.rollout
                .as_ref()
                .map_or(DEFAULT_WINDOW, |r| r.spec.analysis.window)
        })
    }

    /// Sets `service`'s weights by hand (`(version, weight)` pairs; versions not named
    /// keep theirs). They are checked (unknown service or version, all zero) under the
    /// control lock, so no tick or reload comes between the check and the change. A
    /// running rollout is paused first, so it cannot move them back, and the change is
    /// recorded in its timeline as a manual decision.
    pub fn set_weights_manually(
        &self,
        service: &str,
        weights: &[(&str, u32)],
        now_ms: u64,
    ) -> Result<Option<RolloutStatus>, WeightsError> {
        {
            let mut services = self.lock();
            let valid = self.dataplane.validate_weights(service, weights)?;
            // The weights before, for a notification of the change.
            let before = self
                .notifier
                .wants(DecisionKind::ManualWeights)
                .then(|| self.weights_of(service));
            self.dataplane.set_weights(&valid);
            if let Some(s) = services.iter_mut().find(|s| s.name == service) {
                if let Some(run) = s.rollout.as_mut() {
                    // The state holds the canary's weight in force: what a restart
                    // restores, and what fleet followers adopt from the leader.
                    if let Some(weight) = self.weights_of(service).get(&run.canary) {
                        run.state.canary_weight = *weight;
                    }
                    self.step_with(
                        service,
                        run,
                        &s.window,
                        Event::ManualWeights,
                        now_ms,
                        before,
                    );
                }
            }
        }
        Ok(self.status(service))
    }

    /// A person's command (promote, pause, resume, abort) for `service`'s rollout.
    /// Returns the status after it, or `None` when the service has no rollout.
    pub fn command(&self, service: &str, event: Event<'_>, now_ms: u64) -> Option<RolloutStatus> {
        {
            let mut services = self.lock();
            let s = services.iter_mut().find(|s| s.name == service)?;
            let run = s.rollout.as_mut()?;
            if run.held && matches!(event, Event::Resume) {
                // Resuming a held rollout starts it afresh at its first step: a person
                // chose what serin would not do by itself.
                tracing::info!(
                    service,
                    "a held rollout resumed by hand: it starts at its first step"
                );
                run.held = false;
                run.state = RolloutState::new(now_ms);
                run.detectors.clear();
                self.step(service, run, &s.window, Event::Tick(&Verdict::Pass), now_ms);
            } else {
                self.step(service, run, &s.window, event, now_ms);
            }
        }
        self.status(service)
    }
}

fn lock(fleet: &Mutex<FleetOutbox>) -> MutexGuard<'_, FleetOutbox> {
    fleet.lock().unwrap_or_else(|p| p.into_inner())
}

/// `run`'s state as it is saved (a file, or etcd in fleet mode).
fn saved_of(service: &str, run: &RolloutRun) -> SavedState {
    SavedState {
        format: STATE_FORMAT,
        service: service.to_string(),
        fingerprint: run.fingerprint.clone(),
        rollout: (&run.state).into(),
        detectors: Some(run.detectors.clone()),
    }
}

fn tick_of(snapshot: &Snapshot) -> Duration {
    snapshot
        .services
        .iter()
        .filter_map(|s| s.rollout.as_ref().map(|r| r.analysis.interval))
        .min()
        .unwrap_or(DEFAULT_TICK)
}

/// The columns of a service's window: its versions, then with shadow settings the
/// canary's copies and their comparisons (`crate::intake::shadow_column`).
fn version_names(service: &Service) -> Vec<String> {
    let mut names: Vec<String> = service.versions.iter().map(|v| v.name.clone()).collect();
    let shadow = service.rollout.as_ref().filter(|r| r.shadow.is_some());
    if let Some(canary) = shadow.and_then(|r| service.versions.get(r.canary)) {
        names.push(crate::intake::shadow_column(&canary.name));
        names.push(crate::intake::mismatch_column(&canary.name));
    }
    names
}

/// The share of the baseline's requests copied to the canary while `run` serves with
/// `canary_weight` (hundredths of a percent): its shadow step's, while the rollout is
/// active, judged here, and its canary has no weight; else 0.
fn shadow_share(run: &RolloutRun, canary_weight: u32) -> u32 {
    let active = run.state.phase.is_active() && !run.held && run.local.rolled_back.is_none();
    match run.spec.shadow_share(run.state.step) {
        Some(share) if active && canary_weight == 0 => share,
        _ => 0,
    }
}

/// At a shadow step of an active rollout, the window's columns of the canary's copies
/// and of their comparisons.
fn shadow_columns(run: &RolloutRun, window: &ServiceWindow) -> Option<(usize, usize)> {
    run.spec.shadow_share(run.state.step)?;
    let column = |name: String| window.versions().iter().position(|v| *v == name);
    Some((
        column(crate::intake::shadow_column(&run.canary))?,
        column(crate::intake::mismatch_column(&run.canary))?,
    ))
}

/// How far back a service's window reaches.
fn window_keep(service: &Service) -> Duration {
    service
        .rollout
        .as_ref()
        .map_or(DEFAULT_WINDOW, |r| r.analysis.window.max(DEFAULT_WINDOW))
}

fn new_window(service: &Service) -> ServiceWindow {
    ServiceWindow::new(
        version_names(service),
        window_keep(service).as_millis() as u64,
    )
}

/// The fingerprint of `service`'s rollout `spec`, and the state it starts in: the
/// saved one (the newest handed to `writer`, else the file's) if it belongs to the same
/// spec, else a new one. A file that cannot be read (corrupt, from a newer serin,
/// unreadable) holds the rollout: paused at canary weight 0 with the error as its
/// reason, the file left as it is. Starting it afresh instead could send traffic to a
/// canary that was rolled back; a person decides (docs/admin.md, "Saved state").
fn saved_state(
    service: &Service,
    spec: &Rollout,
    state_dir: &std::path::Path,
    writer: &StateWriter,
    now_ms: u64,
) -> Saved {
    let fingerprint = state::fingerprint(service, spec);
    let saved = match writer.unwritten(&service.name) {
        Some(unwritten) => Ok(Some(unwritten)),
        None => state::load(state_dir, &service.name),
    };
    let (state, detectors, held) = match saved {
        Ok(Some(p)) if state::belongs_to(&p, service, spec) => {
            tracing::info!(service = %service.name, state = p.rollout.phase.as_str(), step = p.rollout.step, canary_weight = p.rollout.canary_weight, format = p.format, "resuming the saved rollout");
            (RolloutState::from(p.rollout), Some(p.detectors), false)
        }
        Ok(Some(_)) => {
            tracing::info!(service = %service.name, "the rollout spec changed: starting a new rollout");
            (RolloutState::new(now_ms), None, false)
        }
        Ok(None) => (RolloutState::new(now_ms), None, false),
        Err(err) => {
            tracing::error!(service = %service.name, error = %err, "the rollout is held");
            (held_state(err.to_string(), now_ms), None, true)
        }
    };
    Saved {
        fingerprint,
        state,
        detectors,
        held,
    }
}

/// A rollout held because its saved state could not be read: paused at canary weight
/// 0, at its first step, with `reason`. Nothing saves it until a person acts.
fn held_state(reason: String, now_ms: u64) -> RolloutState {
    RolloutState {
        phase: Phase::Paused,
        canary_weight: 0,
        reason: Some(reason),
        ..RolloutState::new(now_ms)
    }
}

/// What a rollout starts with: its spec's fingerprint, its state, and, when it resumes
/// a saved rollout, the detectors saved with it (`Some(None)`: a file from before
/// detectors were saved).
struct Saved {
    fingerprint: String,
    state: RolloutState,
    detectors: Option<Option<Vec<Detector>>>,
    /// Its saved state could not be read: held until a person acts.
    held: bool,
}

/// A rollout of `service` with its `saved` fingerprint and state, its weights going
/// through `weights`, its timeline written by `writer`.
fn new_run(
    service: &Service,
    spec: &Rollout,
    weights: RolloutWeights,
    saved: Saved,
    writer: &StateWriter,
    state_dir: &std::path::Path,
    now_ms: u64,
) -> RolloutRun {
    let Saved {
        fingerprint,
        state,
        detectors,
        held,
    } = saved;
    let rules = compile(&spec.analysis);
    let detectors = match detectors {
        Some(saved) => resumed_detectors(&service.name, &state, saved, &rules),
        None => Vec::new(),
    };
    RolloutRun {
        baseline: service.versions[spec.baseline].name.clone(),
        canary: service.versions[spec.canary].name.clone(),
        spec: spec.clone(),
        weights,
        rules,
        fingerprint,
        state,
        detectors,
        detectors_unsaved: false,
        held,
        timeline: Timeline::new(
            state_dir.join(format!("{}.timeline.jsonl", service.name)),
            writer.clone(),
        ),
        last_eval_ms: now_ms,
        local: LocalJudgement {
            last_eval_ms: now_ms,
            ..LocalJudgement::default()
        },
        mismatches: Default::default(),
    }
}

/// Keeps the newest of `examples` (what copies' differing answers were) for the
/// timeline, at most [`MISMATCH_EXAMPLES`], while `run` is at a shadow step.
fn keep_examples(run: &mut RolloutRun, examples: &[serin_proxy::shadow::MismatchExample]) {
    if run.spec.shadow_share(run.state.step).is_none() {
        return;
    }
    for e in examples {
        if run.mismatches.len() == MISMATCH_EXAMPLES {
            run.mismatches.pop_front();
        }
        run.mismatches.push_back(crate::wire::MismatchRecord {
            method: e.method.clone(),
            path: e.path.clone(),
            client: e.client,
            canary: e.canary,
            differed: Some(e.differed.to_string()),
        });
    }
}

/// The detectors a resumed rollout goes on with: the saved ones, one per rule; else
/// fresh ones, which spend the rollout's false-rollback budget anew (logged).
fn resumed_detectors(
    service: &str,
    state: &RolloutState,
    saved: Option<Vec<Detector>>,
    rules: &CompiledAnalysis,
) -> Vec<Detector> {
    if !state.phase.is_active() {
        return Vec::new();
    }
    match saved {
        Some(detectors) if detectors.len() == rules.rules.len() => detectors,
        Some(detectors) => {
            tracing::warn!(service, saved = detectors.len(), rules = rules.rules.len(), "the saved detectors do not match the rules; they start afresh, and the rollout's false-rollback budget is spent anew");
            Vec::new()
        }
        None => {
            tracing::info!(service, "the saved rollout state has no detectors (it was written by an older serin); they start afresh, and the rollout's false-rollback budget is spent anew");
            Vec::new()
        }
    }
}

fn status_of(r: &RolloutRun) -> RolloutStatus {
    RolloutStatus {
        phase: r.state.phase,
        step: r.state.step,
        canary_weight: r.state.canary_weight,
        since_ms: r.state.since_ms,
        reason: r.state.reason.clone(),
        baseline: r.baseline.clone(),
        canary: r.canary.clone(),
        steps: r.spec.steps.iter().map(|s| s.weight).collect(),
    }
}
