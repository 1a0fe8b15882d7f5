//! Rollback drills on the control side: starting one on a running rollout (the data
//! plane's `fault::Drill` published in the service's view), marking every decision
//! taken while it runs (`drill: true` on the timeline and in webhooks), ending it — at
//! its time, when the rollout rolls back or is promoted, by hand, or at a reload (a new
//! view carries no drill) — and its report: did the rollout roll back, how long from
//! the first fault to weight 0, how many client requests saw a fault, did every webhook
//! get the decision.
//!
//! A drill is never saved: a restart ends it with the process.
//!
//! Fleet mode (docs/fleet.md, "Rollback drills"): a drill given on any instance is a
//! fleet command; the leader starts it here ([`Control::start_fleet_drill`], recording
//! `drill_started` once) and writes its [`FleetDrill`] record, which every instance
//! applies ([`Control::apply_fleet_drill`]) by injecting the same faults into its own
//! canary requests until the record's `until_ms`. Each instance ends it on its own at
//! that time (etcd or not), at a rollback or promotion it adopts, or when the record
//! is deleted; only the leader records `drill_ended` (`Control::set_fleet_leading`).
//! Each tick an instance publishes the faults it injected since the last
//! ([`Control::unpublished_drill_faults`]), which the leader sums for every report.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use serin_judge::rollout::{Decision, DecisionKind, Phase};
use serin_judge::window::Sample;
use serin_proxy::fault::{Drill, Fault, ALL};

use super::{Control, ServiceControl};
use crate::notify::Delivery;
use crate::wire::{
    rfc3339, DrillFaults, DrillNotification, DrillOrder, DrillReport, FleetCommand, FleetDrill,
    TimelineEvent, DRILL_FORMAT,
};

/// The longest drill and the longest added latency a drill may have.
pub const MAX_DRILL: Duration = Duration::from_secs(3600);
pub const MAX_DRILL_LATENCY: Duration = Duration::from_secs(60);

/// What a person asks a drill to inject, checked (`crate::admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrillRequest {
    /// Share of the canary's requests answered 503, in basis points (0..=10 000).
    pub errors: u32,
    /// Added before each of the canary's other requests (at most [`MAX_DRILL_LATENCY`]).
    pub latency: Duration,
    /// How long it runs (at most [`MAX_DRILL`]).
    pub length: Duration,
}

/// Why a drill cannot start or end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrillRefused {
    UnknownService,
    /// The service has no rollout, or its rollout is in this phase (not progressing).
    NoRollout,
    NotRunning(Phase),
    /// A drill runs already, until then (ms).
    Running(u64),
    /// `DELETE`: no drill runs.
    NoDrill,
    Fleet,
}

/// What ended a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Expired,
    RolledBack,
    Promoted,
    Deleted,
    Reload,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Expired => "expired",
            Ended::RolledBack => "rolled_back",
            Ended::Promoted => "promoted",
            Ended::Deleted => "deleted",
            Ended::Reload => "reload",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Ended::Expired => "the drill's time is up",
            Ended::RolledBack => "the rollout rolled back",
            Ended::Promoted => "the rollout was promoted",
            Ended::Deleted => "ended by hand",
            Ended::Reload => "a reload ends every drill",
        }
    }
}

/// A drill of one service, running or the last one that ended.
pub(super) struct DrillRun {
    request: DrillRequest,
    /// The data plane's side: its counts of injected faults.
    handle: Arc<Drill>,
    canary: String,
    started_ms: u64,
    until_ms: u64,
    canary_weight_at_start: u32,
    /// The rollback decision taken while it ran: when, and whether by hand.
    rolled_back: Option<(u64, bool)>,
    /// The notifications of the decisions taken while it ran.
    notified: Vec<(DecisionKind, u64, Arc<Delivery>)>,
    ended: Option<(u64, Ended)>,
    /// Fleet mode: the id of the fleet's drill this is.
    fleet_id: Option<String>,
    /// Fleet mode: the faults (503s, delayed) already published in a sample record.
    published: (u64, u64),
}

/// How a drill starts here.
struct Start {
    request: DrillRequest,
    started_ms: u64,
    until_ms: u64,
    /// The canary's weight when it began (the leader's, for the fleet's drill).
    canary_weight_at_start: Option<u32>,
    fleet_id: Option<String>,
    /// Whether `drill_started` goes on the timeline here (a fleet's follower: no).
    record: bool,
}

impl DrillRequest {
    /// The request a fleet command carries.
    pub fn of_order(order: &DrillOrder) -> DrillRequest {
        DrillRequest {
            errors: order.errors_bp.min(ALL),
            latency: Duration::from_millis(order.latency_ms),
            length: Duration::from_millis(order.for_ms),
        }
    }

    /// What a fleet command carries of this request.
    pub fn order(&self) -> DrillOrder {
        DrillOrder {
            errors_bp: self.errors,
            latency_ms: self.latency.as_millis() as u64,
            for_ms: self.length.as_millis() as u64,
        }
    }
}

impl DrillRun {
    fn running(&self) -> bool {
        self.ended.is_none()
    }

    fn report(&self, service: &str, instance: Option<&str>) -> DrillReport {
        let (errors, delayed) = (self.handle.aborted(), self.handle.delayed());
        let rollback = self
            .notified
            .iter()
            .find(|(kind, ..)| *kind == DecisionKind::RolledBack)
            .map(|(.., delivery)| delivery.counts())
            .filter(|c| c.targets > 0);
        DrillReport {
            service: service.to_string(),
            canary: self.canary.clone(),
            state: if self.running() { "running" } else { "ended" }.to_string(),
            errors: percent(self.request.errors),
            latency_ms: self.request.latency.as_millis() as u64,
            for_s: self.request.length.as_secs(),
            started_at: rfc3339(self.started_ms),
            started_at_ms: self.started_ms,
            ends_at: rfc3339(self.until_ms),
            ended_at: self.ended.map(|(ms, _)| rfc3339(ms)),
            ended_by: self.ended.map(|(_, by)| by.as_str().to_string()),
            canary_weight_at_start: self.canary_weight_at_start,
            rolled_back: self.rolled_back.is_some(),
            rolled_back_by_hand: self.rolled_back.is_some_and(|(_, manual)| manual),
            injection_to_zero_ms: self
                .rolled_back
                .map(|(ms, _)| ms.saturating_sub(self.started_ms)),
            faults: DrillFaults {
                errors,
                delayed,
                total: errors + delayed,
                instance: instance.map(str::to_string),
                fleet: None,
            },
            notifications: self
                .notified
                .iter()
                .map(|(kind, at_ms, delivery)| {
                    let c = delivery.counts();
                    DrillNotification {
                        event: *kind,
                        at: rfc3339(*at_ms),
                        webhooks: c.targets,
                        delivered: c.delivered,
                        failed: c.failed,
                        dropped: c.dropped,
                        pending: c.targets.saturating_sub(c.delivered + c.failed + c.dropped),
                    }
                })
                .collect(),
            rollback_notified: rollback.map(|c| c.delivered == c.targets),
        }
    }
}

/// `bp` basis points as a percentage: `10%`, `2.5%`.
fn percent(bp: u32) -> String {
    if bp.is_multiple_of(100) {
        format!("{}%", bp / 100)
    } else {
        format!("{}%", f64::from(bp) / 100.0)
    }
}

/// Each service's drill, running or the last that ended.
pub(super) type Drills = BTreeMap<String, DrillRun>;

/// The figures `/metrics` shows of one service's drills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrillMetrics {
    pub active: bool,
    /// Faults injected by the drills of the service since serin started (those that
    /// ended before the current one included).
    pub errors: u64,
    pub delayed: u64,
}

impl Control {
    pub(super) fn drills(&self) -> MutexGuard<'_, Drills> {
        self.drills.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a drill on `service`'s running rollout: its canary's requests get the
    /// faults of `request` from now until `request.length` has passed.
    pub fn start_drill(
        &self,
        service: &str,
        request: DrillRequest,
        now_ms: u64,
    ) -> Result<DrillReport, DrillRefused> {
        if self.fleet.is_some() {
            return Err(DrillRefused::Fleet);
        }
        self.check_drill(service, now_ms)?;
        self.begin_drill(
            service,
            Start {
                request,
                started_ms: now_ms,
                until_ms: now_ms + request.length.as_millis() as u64,
                canary_weight_at_start: None,
                fleet_id: None,
                record: true,
            },
            now_ms,
        )
    }

    /// Whether a drill may start on `service` now: its rollout progresses and no drill
    /// runs on it (the fleet's instance checks before sending the command, the leader
    /// again before starting it).
    pub fn check_drill(&self, service: &str, now_ms: u64) -> Result<(), DrillRefused> {
        let mut services = self.lock();
        let s = services
            .iter_mut()
            .find(|s| s.name == service)
            .ok_or(DrillRefused::UnknownService)?;
        // A drill whose time is up but which no tick has ended yet ends now, first.
        self.end_drill_if_due(s, now_ms);
        let run = s.rollout.as_ref().ok_or(DrillRefused::NoRollout)?;
        if run.state.phase != Phase::Progressing {
            return Err(DrillRefused::NotRunning(run.state.phase));
        }
        if let Some(d) = self.drills().get(service).filter(|d| d.running()) {
            return Err(DrillRefused::Running(d.until_ms));
        }
        Ok(())
    }

    /// Fleet mode, on the leader: starts the drill `command` asks for here (recording
    /// `drill_started` once for the fleet) and returns the record every instance
    /// applies. `Err` says why it does not start.
    pub fn start_fleet_drill(
        &self,
        command: &FleetCommand,
        now_ms: u64,
    ) -> Result<FleetDrill, DrillRefused> {
        let Some(order) = command.drill.as_ref() else {
            return Err(DrillRefused::NoDrill);
        };
        let request = DrillRequest::of_order(order);
        if request.length.is_zero() || request.length > MAX_DRILL {
            return Err(DrillRefused::NoDrill);
        }
        let request = DrillRequest {
            latency: request.latency.min(MAX_DRILL_LATENCY),
            ..request
        };
        self.check_drill(&command.service, now_ms)?;
        let until_ms = now_ms + request.length.as_millis() as u64;
        let report = self.begin_drill(
            &command.service,
            Start {
                request,
                started_ms: now_ms,
                until_ms,
                canary_weight_at_start: None,
                fleet_id: Some(command.id.clone()),
                record: true,
            },
            now_ms,
        )?;
        Ok(FleetDrill {
            format: DRILL_FORMAT,
            id: command.id.clone(),
            service: command.service.clone(),
            canary: report.canary,
            errors_bp: request.errors,
            latency_ms: request.latency.as_millis() as u64,
            for_ms: request.length.as_millis() as u64,
            started_at: rfc3339(now_ms),
            started_at_ms: now_ms,
            until: rfc3339(until_ms),
            until_ms,
            canary_weight_at_start: report.canary_weight_at_start,
            instance: command.instance.clone(),
        })
    }

    /// Fleet mode, every instance: injects the fleet's drill `record` into this
    /// instance's canary requests until its `until_ms`. `Ok(true)` when it started
    /// here, `Ok(false)` when it runs (or ran) here already or its time is up.
    pub fn apply_fleet_drill(&self, record: &FleetDrill, now_ms: u64) -> Result<bool, String> {
        let fleet_id = Some(record.id.clone());
        let running = self
            .drills()
            .get(&record.service)
            .map(|d| (d.fleet_id == fleet_id, d.running()));
        match running {
            Some((true, _)) => return Ok(false),
            Some((false, true)) => {
                // Another drill runs here (a record this instance missed the end of).
                self.end_drill_quietly(&record.service, now_ms);
            }
            _ => {}
        }
        if now_ms >= record.until_ms {
            return Ok(false);
        }
        let request = DrillRequest::of_order(&DrillOrder {
            errors_bp: record.errors_bp,
            latency_ms: record.latency_ms,
            for_ms: record.for_ms,
        });
        let request = DrillRequest {
            latency: request.latency.min(MAX_DRILL_LATENCY),
            ..request
        };
        self.begin_drill(
            &record.service,
            Start {
                request,
                started_ms: record.started_at_ms,
                // Never longer than the drill asked for, whatever the clocks say.
                until_ms: record
                    .until_ms
                    .min(now_ms + request.length.min(MAX_DRILL).as_millis() as u64),
                canary_weight_at_start: Some(record.canary_weight_at_start),
                fleet_id,
                record: false,
            },
            now_ms,
        )
        .map(|_| true)
        .map_err(|refused| format!("the drill cannot start here: {refused:?}"))
    }

    /// Fleet mode, every instance: the fleet's drill record of `service` was deleted
    /// (the drill ended on the leader): it ends here too, if it still runs.
    pub fn end_drill_quietly(&self, service: &str, now_ms: u64) {
        let mut services = self.lock();
        let Some(s) = services.iter_mut().find(|s| s.name == service) else {
            return;
        };
        if let Some(due) = self.drill_end_due(s, now_ms) {
            self.finish_drill(s, due.unwrap_or(Ended::Deleted), now_ms);
        }
    }

    /// Fleet mode, a leader taking over: the fleet's drill `record` found in etcd. One
    /// whose time is up, or that ended here while this instance followed (unrecorded),
    /// gets its `drill_ended` recorded now, so the leader's txn deletes the record; one
    /// still to run is applied here (from then on it ends as any drill on the leader).
    pub fn take_over_fleet_drill(&self, record: &FleetDrill, now_ms: u64) {
        let over_here = self
            .drills()
            .get(&record.service)
            .filter(|d| d.fleet_id.as_deref() == Some(record.id.as_str()))
            .map(|d| d.ended);
        match over_here {
            // Runs here: it ends (recorded) at its time, or now if that has passed.
            Some(None) => {
                let mut services = self.lock();
                if let Some(s) = services.iter_mut().find(|s| s.name == record.service) {
                    self.end_drill_if_due(s, now_ms);
                }
            }
            Some(Some((_, ended))) => self.record_fleet_drill_end(record, ended.reason(), now_ms),
            None if now_ms >= record.until_ms => {
                self.record_fleet_drill_end(record, Ended::Expired.reason(), now_ms)
            }
            None => {
                if let Err(why) = self.apply_fleet_drill(record, now_ms) {
                    tracing::warn!(service = %record.service, id = %record.id, "the fleet's drill: {why}");
                }
            }
        }
    }

    /// Records `drill_ended` for the fleet's drill `record`, which no longer runs here.
    fn record_fleet_drill_end(&self, record: &FleetDrill, why: &str, now_ms: u64) {
        let mut services = self.lock();
        let Some(s) = services.iter_mut().find(|s| s.name == record.service) else {
            return;
        };
        let reason = format!("drill ended: {why} (recorded by the fleet's new leader)");
        tracing::warn!(service = %record.service, %reason, "rollback drill ended");
        let name = s.name.clone();
        self.record_drill(&name, s, DecisionKind::DrillEnded, reason, false, now_ms);
    }

    /// Fleet mode: the leader set the canary to 0 at `at_ms` (a rolled-back state
    /// adopted here): the running drill's report says so.
    pub(super) fn note_fleet_rollback(&self, service: &str, at_ms: u64) {
        if let Some(d) = self
            .drills()
            .get_mut(service)
            .filter(|d| d.running() && d.rolled_back.is_none())
        {
            d.rolled_back = Some((at_ms, false));
        }
    }

    /// Fleet mode, each tick: the faults `service`'s drill injected here since the last
    /// call, as its sample record's [`crate::intake::drill_column`]; `None` when there
    /// are none. A drill that ended gives the faults of its last moments once more.
    pub(super) fn unpublished_drill_faults(&self, service: &str) -> Option<(String, Sample)> {
        let mut drills = self.drills();
        let d = drills.get_mut(service)?;
        let now = (d.handle.aborted(), d.handle.delayed());
        let errors = now.0.saturating_sub(d.published.0);
        let delayed = now.1.saturating_sub(d.published.1);
        d.published = now;
        (errors + delayed > 0).then(|| {
            (
                crate::intake::drill_column(&d.canary),
                Sample {
                    requests: errors + delayed,
                    errors,
                    ..Sample::default()
                },
            )
        })
    }

    /// Fleet mode: the fleet's drill of each service that ran here (running or the last
    /// that ended): (service, its id, when it started in Unix ms).
    pub fn fleet_drills(&self) -> Vec<(String, String, u64)> {
        self.drills()
            .iter()
            .filter_map(|(service, d)| {
                d.fleet_id
                    .as_ref()
                    .map(|id| (service.clone(), id.clone(), d.started_ms))
            })
            .collect()
    }

    /// Fleet mode: the id of `service`'s fleet drill that runs (or ran) here.
    pub fn fleet_drill_id(&self, service: &str) -> Option<String> {
        self.drills().get(service).and_then(|d| d.fleet_id.clone())
    }

    /// Whether a drill runs on `service` here.
    pub fn drill_runs(&self, service: &str) -> bool {
        self.drill_running(service)
    }

    /// Fleet mode: whether the fleet's drill `id` runs (or ran) on `service` here.
    pub fn fleet_drill_runs(&self, service: &str, id: &str) -> bool {
        self.drills()
            .get(service)
            .is_some_and(|d| d.fleet_id.as_deref() == Some(id))
    }

    /// Fleet mode: whether this instance leads the fleet (it records the drill's end).
    pub fn set_fleet_leading(&self, leading: bool) {
        self.fleet_leading.store(leading, Ordering::Relaxed);
    }

    /// Starts `start` on `service`'s rollout: the data plane's faults, the run, and
    /// (with `start.record`) `drill_started` on the timeline.
    fn begin_drill(
        &self,
        service: &str,
        start: Start,
        now_ms: u64,
    ) -> Result<DrillReport, DrillRefused> {
        let mut services = self.lock();
        let s = services
            .iter_mut()
            .find(|s| s.name == service)
            .ok_or(DrillRefused::UnknownService)?;
        let run = s.rollout.as_mut().ok_or(DrillRefused::NoRollout)?;
        let request = start.request;
        let fault = Fault {
            errors: request.errors.min(ALL),
            latency: request.latency,
        };
        let left = Duration::from_millis(start.until_ms.saturating_sub(now_ms));
        let handle = self
            .dataplane
            .start_drill(&run.weights, fault, Instant::now() + left)
            .ok_or(DrillRefused::UnknownService)?;
        self.keep_drill_totals(service);
        self.drills().insert(
            service.to_string(),
            DrillRun {
                request,
                handle,
                canary: run.canary.clone(),
                started_ms: start.started_ms,
                until_ms: start.until_ms,
                canary_weight_at_start: start
                    .canary_weight_at_start
                    .unwrap_or(run.state.canary_weight),
                rolled_back: None,
                notified: Vec::new(),
                ended: None,
                fleet_id: start.fleet_id,
                published: (0, 0),
            },
        );
        let reason = format!(
            "drill: {} of the canary's requests answered 503 by serin, {} added to the others, for {}",
            percent(request.errors),
            humantime::format_duration(request.latency),
            humantime::format_duration(request.length)
        );
        tracing::warn!(service, %reason, "rollback drill started");
        if start.record {
            self.record_drill(service, s, DecisionKind::DrillStarted, reason, true, now_ms);
        }
        Ok(self.drills()[service].report(service, self.fleet_instance()))
    }

    /// Ends `service`'s running drill by hand.
    pub fn end_drill(&self, service: &str, now_ms: u64) -> Result<DrillReport, DrillRefused> {
        let mut services = self.lock();
        let s = services
            .iter_mut()
            .find(|s| s.name == service)
            .ok_or(DrillRefused::UnknownService)?;
        if !self.drills().get(service).is_some_and(DrillRun::running) {
            return Err(DrillRefused::NoDrill);
        }
        self.finish_drill(s, Ended::Deleted, now_ms);
        self.drills()
            .get(service)
            .map(|d| d.report(service, self.fleet_instance()))
            .ok_or(DrillRefused::NoDrill)
    }

    /// The report of `service`'s drill: the running one, or the last that ended.
    pub fn drill_report(&self, service: &str) -> Option<DrillReport> {
        self.drills()
            .get(service)
            .map(|d| d.report(service, self.fleet_instance()))
    }

    /// Every service's drill figures for `/metrics`, by service name.
    pub fn drill_metrics(&self) -> BTreeMap<String, DrillMetrics> {
        self.drills()
            .iter()
            .map(|(service, d)| {
                let mut m = self.drill_totals(service);
                m.active = d.running();
                m.errors += d.handle.aborted();
                m.delayed += d.handle.delayed();
                (service.clone(), m)
            })
            .collect()
    }

    fn drill_totals(&self, service: &str) -> DrillMetrics {
        self.drill_totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .copied()
            .unwrap_or_default()
    }

    /// Whether a drill runs on `service` (the decisions recorded now carry `drill`).
    pub(super) fn drill_running(&self, service: &str) -> bool {
        self.drills().get(service).is_some_and(DrillRun::running)
    }

    /// Notes a decision taken while `service`'s drill runs: a rollback, and what
    /// becomes of its notification.
    pub(super) fn note_drill_decision(
        &self,
        service: &str,
        event: &TimelineEvent,
        delivery: Option<Arc<Delivery>>,
    ) {
        let mut drills = self.drills();
        let Some(d) = drills.get_mut(service).filter(|d| d.running()) else {
            return;
        };
        if event.event == DecisionKind::RolledBack && d.rolled_back.is_none() {
            d.rolled_back = Some((event.at_ms, event.manual));
        }
        if let Some(delivery) = delivery {
            d.notified.push((event.event, event.at_ms, delivery));
        }
    }

    /// Ends `service`'s drill when it is due (each tick): its time is up, or the rollout
    /// rolled back, was promoted or is gone.
    pub(super) fn end_drill_if_due(&self, s: &mut ServiceControl, now_ms: u64) {
        if let Some(Some(ended)) = self.drill_end_due(s, now_ms) {
            self.finish_drill(s, ended, now_ms);
        }
    }

    /// Whether `s` has a running drill (`None`: it has none) and, if so, how it ends
    /// now: its rollout rolled back, was promoted or is gone, or its time is up
    /// (`Some(None)`: none of those yet).
    fn drill_end_due(&self, s: &ServiceControl, now_ms: u64) -> Option<Option<Ended>> {
        let until_ms = self
            .drills()
            .get(&s.name)
            .filter(|d| d.running())
            .map(|d| d.until_ms)?;
        Some(match s.rollout.as_ref().map(|r| r.state.phase) {
            Some(Phase::RolledBack) => Some(Ended::RolledBack),
            Some(Phase::Promoted) => Some(Ended::Promoted),
            None => Some(Ended::Reload),
            _ if now_ms >= until_ms => Some(Ended::Expired),
            _ => None,
        })
    }

    /// A reload published a view without drills: every running drill ended with it.
    pub(super) fn end_drills_at_reload(&self, services: &mut [ServiceControl], now_ms: u64) {
        let running: Vec<String> = self
            .drills()
            .iter()
            .filter(|(_, d)| d.running())
            .map(|(name, _)| name.clone())
            .collect();
        for name in running {
            match services.iter_mut().find(|s| s.name == name) {
                Some(s) => self.finish_drill(s, Ended::Reload, now_ms),
                None => {
                    if let Some(d) = self.drills().get_mut(&name) {
                        d.ended = Some((now_ms, Ended::Reload));
                    }
                }
            }
        }
    }

    /// Takes the drill out of the data plane's view, records `drill_ended` and marks it
    /// ended.
    fn finish_drill(&self, s: &mut ServiceControl, ended: Ended, now_ms: u64) {
        if let Some(run) = s.rollout.as_ref() {
            self.dataplane.end_drill(&run.weights);
        }
        let counts = self
            .drills()
            .get(&s.name)
            .map(|d| (d.handle.aborted(), d.handle.delayed()));
        let reason = match counts {
            Some((errors, delayed)) => format!(
                "drill ended: {}; {errors} requests answered 503 and {delayed} delayed by serin",
                ended.reason()
            ),
            None => format!("drill ended: {}", ended.reason()),
        };
        tracing::warn!(service = %s.name, %reason, "rollback drill ended");
        let name = s.name.clone();
        let manual = ended == Ended::Deleted;
        // In a fleet, the leader records the fleet's drill ending, once.
        if self.fleet.is_none() || self.fleet_leading.load(Ordering::Relaxed) {
            self.record_drill(&name, s, DecisionKind::DrillEnded, reason, manual, now_ms);
        }
        if let Some(d) = self.drills().get_mut(&name) {
            d.ended = Some((now_ms, ended));
        }
    }

    /// Records a drill's own decision on the rollout's timeline (and to the webhooks
    /// that want it).
    fn record_drill(
        &self,
        service: &str,
        s: &mut ServiceControl,
        kind: DecisionKind,
        reason: String,
        manual: bool,
        now_ms: u64,
    ) {
        let Some(run) = s.rollout.as_mut() else {
            return;
        };
        let decision = Decision {
            kind,
            reason: Some(reason),
            breach: None,
            manual,
        };
        let previous = self.notifier.wants(kind).then(|| self.weights_of(service));
        self.record(
            service,
            run,
            &s.window,
            &decision,
            previous.as_ref(),
            now_ms,
        );
    }

    /// Keeps the counts of a drill that a new one replaces, for `/metrics`.
    pub(super) fn keep_drill_totals(&self, service: &str) {
        let Some((errors, delayed)) = self
            .drills()
            .get(service)
            .map(|d| (d.handle.aborted(), d.handle.delayed()))
        else {
            return;
        };
        let mut totals = self.drill_totals.lock().unwrap_or_else(|p| p.into_inner());
        let t = totals.entry(service.to_string()).or_default();
        t.errors += errors;
        t.delayed += delayed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_read_as_percentages() {
        assert_eq!(percent(1_000), "10%");
        assert_eq!(percent(250), "2.5%");
        assert_eq!(percent(ALL), "100%");
        assert_eq!(percent(0), "0%");
    }
}
