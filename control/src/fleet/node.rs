//! One instance's part in the fleet (docs/fleet.md, "Roles"): it joins under its name,
//! publishes its own samples every tick, applies the rollout state the leader writes,
//! and campaigns; while it leads, it merges the live instances' samples per tick, runs
//! the single node's judgement on them (`Control::judge_merged`) and writes state,
//! timeline and the fleet's summary (`P/summary`) in one txn fenced by its leadership.
//! It also hands the admin API its session's connection (`reads::EtcdReads`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{GetOptions, PutOptions, SortOrder, SortTarget, TxnOp};
use serin_config::{Cluster, OnEtcdLoss};
use tokio::sync::watch;

use super::client::{decode_record, names_service, Etcd, FleetError, Keys, Record, Timeouts};
use super::election::{self, Leadership};
use super::lease::{EtcdHealth, Lease};
use super::members::{self, MemberInfo};
use super::reads::{read_summary, EtcdReads};
use super::sample::{SampleRecord, ServiceSample};
use super::tick::{self, Collector, Outbox};
use super::view::{encode_bounded, summarize, take_drill_faults, DrillTally, Tally};
use super::watch::{Change, PrefixWatch, WatchItem};
use super::weights;
use crate::runner::{now_ms, Control, TickSamples};
use crate::wire::{
    FleetCommand, FleetCommandKind, FleetDrill, FleetWeights, SavedState, TimelineEvent,
};
use serin_judge::rollout::DecisionKind;

/// Commands given here that may wait for etcd at once.
const COMMAND_QUEUE: usize = 64;

/// Longest wait between two attempts to reach etcd.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Why this instance cannot take part in the fleet at all (it must not serve as a
/// member: its name is another live instance's).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Fatal(FleetError);

/// Runs this instance's part in the fleet until `stop` turns true. Returns an error only
/// when the instance must not go on (its name is taken); etcd being away is retried.
pub async fn run(
    control: Arc<Control>,
    cluster: Cluster,
    admin: String,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Fatal> {
    let (commands_tx, mut commands) = tokio::sync::mpsc::channel(COMMAND_QUEUE);
    control.connect_fleet_commands(commands_tx);
    let reads = Arc::new(EtcdReads::default());
    control.connect_fleet_reads(reads.clone());
    let mut backoff = Duration::from_millis(200);
    // Since when this instance has been without etcd (from the start, too).
    let mut away_since = Instant::now();
    // The lease of this instance's last session: after a cut, etcd may still hold the
    // name with it for a moment, and that must not read as another instance's name.
    let mut previous_lease: Option<i64> = None;
    loop {
        let session = tokio::select! {
            s = join_as(&cluster, &admin, &mut previous_lease) => s,
            _ = stop.changed() => return Ok(()),
        };
        match session {
            Ok((etcd, lease)) => {
                backoff = Duration::from_millis(200);
                previous_lease = Some(lease.id());
                control.set_fleet_local(false);
                reads.set(Some(etcd.clone()));
                tracing::info!(instance = %cluster.instance, prefix = %etcd.keys().prefix(), "joined the fleet");
                tokio::select! {
                    _ = member(&control, &cluster, &etcd, &lease, &mut commands) => {}
                    _ = stop.changed() => {
                        let _ = lease.revoke().await;
                        return Ok(());
                    }
                }
                reads.set(None);
                tracing::warn!(instance = %cluster.instance, "lost the fleet's lease; joining again");
                control.set_fleet_local(true);
                away_since = Instant::now();
            }
            Err(err @ FleetError::NameTaken { .. }) => return Err(Fatal(err)),
            Err(err) => {
                control.set_fleet_local(true);
                if cluster.on_etcd_loss == OnEtcdLoss::Baseline
                    && away_since.elapsed() >= cluster.lease_ttl
                {
                    control.fleet_baseline();
                }
                tracing::warn!(error = %err, retry_in = ?backoff, "cannot reach the fleet's etcd; serving with the weights in force");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Connects, takes a lease and this instance's name. `previous` is the lease of this
/// instance's last session, revoked first: what it still holds is this instance's own.
pub async fn join(
    cluster: &Cluster,
    admin: &str,
    previous: Option<i64>,
) -> Result<(Etcd, Lease), FleetError> {
    let mut previous = previous;
    join_as(cluster, admin, &mut previous).await
}

/// [`join`], and `previous` becomes the lease this attempt takes as soon as it has it:
/// a failed attempt's write of the name may have gone through with its answer lost (a
/// cut mid-call), and the next attempt must see that lease as its own, not a stranger's.
pub async fn join_as(
    cluster: &Cluster,
    admin: &str,
    previous: &mut Option<i64>,
) -> Result<(Etcd, Lease), FleetError> {
    let etcd = Etcd::connect(&cluster.etcd, Timeouts::default()).await?;
    if let Some(id) = *previous {
        let mut client = etcd.client();
        let what = format!("revoking the lease {id:x} of this instance's last session");
        match etcd.call(what, client.lease_revoke(id)).await {
            Ok(_) => {}
            // Expired already: etcd has no such lease, and nothing is held with it.
            Err(FleetError::Etcd {
                source: etcd_client::Error::GRpcStatus(status),
                ..
            }) if status.message().contains("lease not found") => {}
            Err(err) => return Err(err),
        }
    }
    let lease = Lease::grant(&etcd, cluster.lease_ttl).await?;
    *previous = Some(lease.id());
    let info = MemberInfo {
        instance: cluster.instance.clone(),
        started_at_ms: now_ms(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        admin: admin.to_string(),
    };
    members::join(&etcd, &lease, &info).await?;
    Ok((etcd, lease))
}

/// Everything a member does while its lease lives: publish, apply, campaign and lead.
async fn member(
    control: &Arc<Control>,
    cluster: &Cluster,
    etcd: &Etcd,
    lease: &Lease,
    commands: &mut tokio::sync::mpsc::Receiver<FleetCommand>,
) {
    let mut health = lease.health();
    let ttl = lease.ttl();
    let baseline = cluster.on_etcd_loss == OnEtcdLoss::Baseline;
    // etcd away: this instance judges its own traffic (and with `baseline`, its canary
    // goes to 0 once the lease would have expired); back: the fleet's state again.
    let expired = async move {
        loop {
            let now = Instant::now();
            let current = health.borrow_and_update().clone();
            match current {
                EtcdHealth::Expired { .. } => return,
                EtcdHealth::Reachable { .. } => control.set_fleet_local(false),
                ref lost @ EtcdHealth::Lost { .. } => {
                    control.set_fleet_local(true);
                    if baseline && lost.lease_lost(now, ttl) {
                        control.fleet_baseline();
                    }
                }
            }
            tokio::select! {
                changed = health.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    };
    let leading = AtomicBool::new(false);
    tokio::select! {
        _ = publish(control, cluster, etcd, lease, &leading) => {}
        _ = apply_states(control, etcd) => {}
        _ = apply_weights(control, etcd) => {}
        _ = apply_drills(control, etcd) => {}
        _ = send_commands(etcd, commands) => {}
        _ = campaign(control, cluster, etcd, lease, &leading) => {}
        _ = expired => {}
    }
}

/// Every tick: this instance's samples under `P/samples/<instance>`, with its lease. A
/// put that fails is folded into the next one (`tick::Outbox`).
async fn publish(
    control: &Control,
    cluster: &Cluster,
    etcd: &Etcd,
    lease: &Lease,
    leading: &AtomicBool,
) {
    let key = etcd.keys().sample(&cluster.instance);
    let mut outbox = Outbox::default();
    loop {
        control.fleet_ticked().await;
        if !leading.load(Ordering::Relaxed) {
            // Only the leader writes decisions; a follower's are the leader's to make.
            drop(control.take_fleet_decisions());
        }
        let taken = control.take_fleet_samples();
        if let Some(record) = record_of(&taken, control.tick_ms()) {
            outbox.push(record);
        }
        let Some(pending) = outbox.pending() else {
            continue;
        };
        let mut client = etcd.client();
        let put = client.put(
            key.as_str(),
            pending.encode(),
            Some(PutOptions::new().with_lease(lease.id())),
        );
        match etcd.call(format!("writing {key}"), put).await {
            Ok(_) => outbox.published(),
            Err(err) => tracing::warn!(error = %err, "the tick's samples wait for the next put"),
        }
    }
}

/// This tick's samples as one record: the tick that ended at the loop's tick.
fn record_of(taken: &[TickSamples], tick_ms: u64) -> Option<SampleRecord> {
    let (end_ms, ..) = taken.first()?;
    // The loop ticks at a boundary (a hair after it): the tick before it ended there.
    let tick = tick::tick_index(end_ms + tick_ms / 2, tick_ms).saturating_sub(1);
    let mut record = SampleRecord {
        tick,
        ticks: 1,
        services: Vec::new(),
    };
    for (_, service, versions) in taken {
        let mut versions = versions.clone();
        versions.sort_by(|a, b| a.0.cmp(&b.0));
        record.merge(&SampleRecord {
            tick,
            ticks: 1,
            services: vec![ServiceSample {
                service: service.clone(),
                versions,
            }],
        });
    }
    Some(record)
}

/// Writes the commands given on this instance to `P/commands/<service>/<id>`, where the
/// leader takes them (they outlive this instance's lease: a command is not lost with
/// the instance it was given on). One that etcd did not take is tried again.
async fn send_commands(etcd: &Etcd, commands: &mut tokio::sync::mpsc::Receiver<FleetCommand>) {
    while let Some(command) = commands.recv().await {
        let key = format!("{}{}", etcd.keys().commands(&command.service), command.id);
        let json = match serde_json::to_vec(&command) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(error = %err, "cannot encode a fleet command");
                continue;
            }
        };
        loop {
            let mut client = etcd.client();
            match etcd
                .call(
                    format!("writing {key}"),
                    client.put(key.as_str(), json.clone(), None),
                )
                .await
            {
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "the command waits for etcd");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    std::future::pending::<()>().await
}

/// A command record read from `key`, if it is one of this serin's.
pub fn decode_command(under: &str, key: &[u8], value: &[u8]) -> Result<FleetCommand, String> {
    decode_record(under, key, value)
}

impl Record for FleetCommand {
    const KEY: &'static str = "command";
    const WHAT: &'static str = "fleet command";
    const FORMAT: u32 = crate::wire::COMMAND_FORMAT;
    fn format(&self) -> u32 {
        self.format
    }
    /// A command is stored under `<service>/<id>`.
    fn check_name(&self, name: &str) -> Result<(), String> {
        if name == format!("{}/{}", self.service, self.id) {
            Ok(())
        } else {
            Err(format!(
                "it names service {:?} and id {:?}",
                self.service, self.id
            ))
        }
    }
}

/// Applies every rollout state written under `P/state/` through the same path as a
/// local decision. Data that is not a state of this config is logged and ignored.
async fn apply_states(control: &Control, etcd: &Etcd) {
    let under = etcd.keys().states();
    let mut watch = PrefixWatch::new(etcd, under.clone(), None);
    let mut complaints = Complaints::default();
    loop {
        match watch.next().await {
            WatchItem::Snapshot { kvs, .. } => {
                for (key, value, _) in kvs {
                    apply_state(control, &under, &key, &value, &mut complaints);
                }
            }
            WatchItem::Change(Change::Put { key, value, .. }) => {
                apply_state(control, &under, &key, &value, &mut complaints)
            }
            WatchItem::Change(Change::Delete { .. }) => {}
        }
    }
}

/// How often the fleet's weights are applied again: a reload gives a service without a
/// rollout its file's weights, and the fleet's must come back over them.
const WEIGHTS_AGAIN: Duration = Duration::from_secs(1);

/// Applies the weights set by hand fleet-wide (`P/weights/<service>`, services without
/// a rollout) as they are written, and again after a reload; those that do not apply
/// here are logged.
async fn apply_weights(control: &Control, etcd: &Etcd) {
    let under = etcd.keys().weights();
    let mut watch = PrefixWatch::new(etcd, under.clone(), None);
    let mut complaints = Complaints::default();
    // The fleet's records, by service.
    let mut held: BTreeMap<String, FleetWeights> = BTreeMap::new();
    loop {
        let kvs = tokio::select! {
            item = watch.next() => match item {
                WatchItem::Snapshot { kvs, .. } => {
                    held.clear();
                    kvs.into_iter().map(|(k, v, _)| (k, v)).collect()
                }
                WatchItem::Change(Change::Put { key, value, .. }) => vec![(key, value)],
                WatchItem::Change(Change::Delete { key, .. }) => {
                    if let Some(service) = Keys::name_under(&key, &under) {
                        held.remove(service);
                    }
                    Vec::new()
                }
            },
            _ = tokio::time::sleep(WEIGHTS_AGAIN) => {
                for record in held.values() {
                    if let Ok(true) = weights::apply(control, record) {
                        tracing::info!(service = %record.service, weights = ?record.weights, "applied the fleet's weights again (a reload had set the file's)");
                    }
                }
                continue;
            }
        };
        for (key, value) in kvs {
            let shown = String::from_utf8_lossy(&key).into_owned();
            let decoded = weights::decode(&under, &key, &value);
            if let Ok(record) = &decoded {
                held.insert(record.service.clone(), record.clone());
            }
            match decoded {
                Ok(record) => match weights::apply(control, &record) {
                    Ok(true) => {
                        tracing::info!(service = %record.service, weights = ?record.weights, instance = %record.instance, "applied the fleet's weights set by hand")
                    }
                    Ok(false) => {}
                    Err(why) => complaints.warn(&shown, &format!("not applied: {why}")),
                },
                Err(why) => complaints.warn(&shown, &format!("ignored: {why}")),
            }
        }
    }
}

/// Applies the fleet's drills (`P/drill/<service>`): each instance injects a drill's
/// faults into its own canary requests until its `until_ms` (and ends it there on its
/// own, etcd or not); a deleted record ends it here.
async fn apply_drills(control: &Control, etcd: &Etcd) {
    let under = etcd.keys().drills();
    let mut watch = PrefixWatch::new(etcd, under.clone(), None);
    let mut complaints = Complaints::default();
    loop {
        let kvs: Vec<(Vec<u8>, Vec<u8>)> = match watch.next().await {
            WatchItem::Snapshot { kvs, .. } => kvs.into_iter().map(|(k, v, _)| (k, v)).collect(),
            WatchItem::Change(Change::Put { key, value, .. }) => vec![(key, value)],
            WatchItem::Change(Change::Delete { key, .. }) => {
                if let Some(service) = Keys::name_under(&key, &under) {
                    control.end_drill_quietly(service, now_ms());
                }
                Vec::new()
            }
        };
        for (key, value) in kvs {
            let shown = String::from_utf8_lossy(&key).into_owned();
            match decode_drill(&under, &key, &value) {
                Ok(record) => match control.apply_fleet_drill(&record, now_ms()) {
                    Ok(true) => {
                        tracing::warn!(service = %record.service, id = %record.id, until = %record.until, "applied the fleet's rollback drill")
                    }
                    Ok(false) => {}
                    Err(why) => complaints.warn(&shown, &format!("not applied: {why}")),
                },
                Err(why) => complaints.warn(&shown, &format!("ignored: {why}")),
            }
        }
    }
}

/// A drill record read from `key`, if it is one of this serin's.
pub fn decode_drill(under: &str, key: &[u8], value: &[u8]) -> Result<FleetDrill, String> {
    decode_record(under, key, value)
}

impl Record for FleetDrill {
    const KEY: &'static str = "drill";
    const WHAT: &'static str = "fleet drill";
    const FORMAT: u32 = crate::wire::DRILL_FORMAT;
    fn format(&self) -> u32 {
        self.format
    }
    fn check_name(&self, name: &str) -> Result<(), String> {
        names_service(&self.service, name)
    }
}

fn apply_state(
    control: &Control,
    under: &str,
    key: &[u8],
    value: &[u8],
    complaints: &mut Complaints,
) {
    let shown = String::from_utf8_lossy(key);
    match decode_state(under, key, value) {
        Ok(saved) => match control.adopt(&saved) {
            Ok(true) => tracing::info!(
                service = %saved.service,
                state = saved.rollout.phase.as_str(),
                step = saved.rollout.step,
                canary_weight = saved.rollout.canary_weight,
                "applied the fleet's rollout state"
            ),
            Ok(false) => {}
            Err(why) => complaints.warn(&shown, &format!("not applied: {why}")),
        },
        Err(why) => complaints.warn(&shown, &format!("ignored: {why}")),
    }
}

/// A state record read from `key`, if it is one of this serin's.
pub fn decode_state(under: &str, key: &[u8], value: &[u8]) -> Result<SavedState, String> {
    decode_record(under, key, value)
}

impl Record for SavedState {
    const KEY: &'static str = "state";
    const WHAT: &'static str = "rollout state";
    const FORMAT: u32 = crate::wire::STATE_FORMAT;
    fn format(&self) -> u32 {
        self.format
    }
    fn check_name(&self, name: &str) -> Result<(), String> {
        names_service(&self.service, name)
    }
}

/// Warnings about bad data under the prefix, at most one a minute per key.
#[derive(Default)]
struct Complaints {
    last: BTreeMap<String, Instant>,
}

impl Complaints {
    fn warn(&mut self, key: &str, message: &str) {
        let now = Instant::now();
        if self.last.len() > 1024 {
            self.last.clear();
        }
        match self.last.get(key) {
            Some(at) if now.duration_since(*at) < Duration::from_secs(60) => {}
            _ => {
                self.last.insert(key.to_string(), now);
                tracing::warn!(key, "{message}");
            }
        }
    }
}

/// Campaigns; while elected, leads; when leadership is lost, campaigns again.
async fn campaign(
    control: &Control,
    cluster: &Cluster,
    etcd: &Etcd,
    lease: &Lease,
    leading: &AtomicBool,
) {
    loop {
        match election::campaign(etcd, lease, cluster.instance.as_bytes().to_vec()).await {
            Ok(leadership) => {
                tracing::info!(instance = %cluster.instance, "leading the fleet");
                leading.store(true, Ordering::Relaxed);
                control.set_fleet_leading(true);
                let why = tokio::select! {
                    led = lead(control, etcd, &leadership) => led.err().map_or_else(String::new, |e| e.to_string()),
                    reason = leadership.lost(lease) => format!("{reason:?}"),
                };
                leading.store(false, Ordering::Relaxed);
                control.set_fleet_leading(false);
                tracing::warn!(instance = %cluster.instance, why, "no longer leading the fleet");
                let _ = leadership.resign(etcd).await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "campaigning for the fleet's leadership");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The leader's work until a fenced write fails (an error: it is not leader any more).
async fn lead(control: &Control, etcd: &Etcd, leadership: &Leadership) -> Result<(), FleetError> {
    let keys = etcd.keys().clone();
    // Where the fleet stands: the states in etcd are adopted (detectors with them);
    // rollouts without one are written as they stand here.
    let mut client = etcd.client();
    let states = etcd
        .call(
            format!("reading {}", keys.states()),
            client.get(keys.states(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
    let mut complaints = Complaints::default();
    let mut written: Vec<String> = Vec::new();
    for kv in states.kvs() {
        if let Ok(saved) = decode_state(&keys.states(), kv.key(), kv.value()) {
            if control.adopt(&saved).is_ok() {
                written.push(saved.service.clone());
            }
        } else {
            apply_state(
                control,
                &keys.states(),
                kv.key(),
                kv.value(),
                &mut complaints,
            );
        }
    }
    let mut seqs: BTreeMap<String, u64> = BTreeMap::new();
    let mut pending = Pending::default();
    for saved in control.fleet_states() {
        let next = next_seq(etcd, &keys, &saved.service).await?;
        seqs.insert(saved.service.clone(), next);
        if !written.contains(&saved.service) {
            // The fleet's first state of this rollout: its start goes on the timeline.
            pending.events.extend(control.timeline(&saved.service));
            pending.states.push(saved);
        }
    }
    // Decisions this instance made before it led are not the fleet's.
    drop(control.take_fleet_decisions());
    // The fleet's drills: one that ended while no one led (or while this instance
    // followed, unrecorded) is recorded ended now, and its record deleted with that.
    let drills = etcd
        .call(
            format!("reading {}", keys.drills()),
            client.get(keys.drills(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
    for kv in drills.kvs() {
        if let Ok(record) = decode_drill(&keys.drills(), kv.key(), kv.value()) {
            control.take_over_fleet_drill(&record, now_ms());
        }
    }
    let (states, events) = control.take_fleet_decisions();
    pending.states.extend(states);
    pending.events.extend(events);
    write(etcd, leadership, &keys, &mut seqs, &mut pending).await?;

    let tick_ms = control.tick_ms();
    // The records already in etcd of ticks after the last one the fleet judged (the
    // summary says which) are counted: the last leader may have died before judging
    // them. Without a summary, from the tick under way, whose records may be judged.
    let last_summary = match read_summary(etcd).await {
        Ok(summary) => summary,
        Err(why) => {
            tracing::warn!(error = %why, "counting the samples from the tick under way");
            None
        }
    };
    let summary_tick = last_summary.as_ref().map(|s| s.tick);
    // The fleet's drill faults counted so far go on from the last leader's count.
    let mut drill_tally = DrillTally::continuing(last_summary.as_ref());
    let mut collector = Collector::taking_over(summary_tick, tick::tick_index(now_ms(), tick_ms));
    control.clear_fleet_windows();
    let mut samples = PrefixWatch::new(etcd, keys.samples(), None);
    // No judgement before the samples already in etcd are read: a tick judged first
    // would leave the last leader's unjudged records counted as judged.
    let mut samples_read = false;
    let mut tally = Tally::default();
    let leader = control.fleet_instance().unwrap_or_default();
    let commands_under = format!("{}commands/", keys.prefix());
    let mut commands = PrefixWatch::new(etcd, commands_under.clone(), None);
    let mut taken = super::taken::Taken::default();
    // Samples have a quarter of a tick after its end to arrive; later ones fold over.
    let grace = tick_ms / 4;
    loop {
        let now = now_ms();
        let next_judgement = tick::until_next_tick_ms(now.saturating_sub(grace), tick_ms);
        tokio::select! {
            item = samples.next() => match item {
                WatchItem::Change(Change::Put { key, value, .. }) => {
                    let Some(instance) = Keys::name_under(&key, &keys.samples()) else { continue };
                    match SampleRecord::decode(&value) {
                        Ok(record) => {
                            collector.accept(instance, &record);
                            tally.seen(instance);
                        }
                        Err(err) => complaints.warn(&String::from_utf8_lossy(&key), &format!("ignored: not a sample record: {err}")),
                    }
                }
                WatchItem::Change(Change::Delete { key, .. }) => {
                    if let Some(instance) = Keys::name_under(&key, &keys.samples()) {
                        collector.forget(instance);
                        tally.forget(instance);
                    }
                }
                // The samples in etcd (on taking over, or after compaction): those of
                // ticks not judged yet are counted.
                WatchItem::Snapshot { kvs, .. } => {
                    samples_read = true;
                    for (key, value, _) in kvs {
                        let Some(instance) = Keys::name_under(&key, &keys.samples()) else { continue };
                        match SampleRecord::decode(&value) {
                            Ok(record) => {
                                let counted = collector.accept_stored(instance, &record);
                                tracing::debug!(instance, tick = record.tick, ?counted, "a stored sample record");
                                tally.seen(instance);
                            }
                            Err(err) => complaints.warn(&String::from_utf8_lossy(&key), &format!("ignored: not a sample record: {err}")),
                        }
                    }
                }
            },
            item = commands.next() => {
                let given: Vec<(Vec<u8>, Vec<u8>)> = match item {
                    WatchItem::Snapshot { kvs, .. } => kvs.into_iter().map(|(k, v, _)| (k, v)).collect(),
                    WatchItem::Change(Change::Put { key, value, .. }) => vec![(key, value)],
                    WatchItem::Change(Change::Delete { .. }) => Vec::new(),
                };
                for (key, value) in given {
                    let shown = String::from_utf8_lossy(&key).into_owned();
                    match decode_command(&commands_under, &key, &value) {
                        // Taken already; its delete is pending or was written again.
                        Ok(command) if !taken.first_time(&command.id) => {
                            tracing::debug!(service = %command.service, id = %command.id, "a fleet command taken already");
                        }
                        // Weights on a service without a rollout: no rollout state
                        // holds them, so the leader writes them for every instance.
                        Ok(command) if command.command == FleetCommandKind::Weights && control.status(&command.service).is_none() => {
                            match weights::set_by_command(control, &command, now_ms()) {
                                Ok(record) => {
                                    tracing::info!(service = %command.service, id = %command.id, instance = %command.instance, weights = ?record.weights, "fleet command: weights");
                                    pending.weights.push(record);
                                }
                                Err(why) => tracing::warn!(service = %command.service, id = %command.id, error = %why, "a fleet command's weights do not apply"),
                            }
                        }
                        Ok(command) if command.command == FleetCommandKind::Drill => {
                            match control.start_fleet_drill(&command, now_ms()) {
                                Ok(record) => {
                                    tracing::warn!(service = %command.service, id = %command.id, instance = %command.instance, until = %record.until, "fleet command: drill");
                                    pending.drills.push(record);
                                }
                                Err(why) => tracing::warn!(service = %command.service, id = %command.id, refused = ?why, "a fleet command's drill does not start"),
                            }
                        }
                        Ok(command) => {
                            let applied = control.apply_fleet_command(&command, now_ms());
                            tracing::info!(service = %command.service, id = %command.id, instance = %command.instance, command = ?command.command, applied, "fleet command");
                        }
                        Err(why) => complaints.warn(&shown, &format!("ignored: {why}")),
                    }
                    // Taken (or not one): deleted with the state it led to.
                    pending.deletes.push(shown);
                }
                let (states, events) = control.take_fleet_decisions();
                pending.states.extend(states);
                pending.events.extend(events);
                write(etcd, leadership, &keys, &mut seqs, &mut pending).await?;
            }
            _ = tokio::time::sleep(Duration::from_millis(next_judgement)) => {
                if !samples_read {
                    // The next tick judges this one's samples with its own.
                    tracing::debug!("the samples in etcd not read yet; judging at the next tick");
                    continue;
                }
                let ended = tick::tick_index(now_ms().saturating_sub(grace), tick_ms).saturating_sub(1);
                let mut merged = collector.judge(ended).unwrap_or_default();
                let end_ms = tick::tick_start_ms(ended + 1, tick_ms);
                // The drills' faults are counted apart: no judgement sees them.
                let faults = take_drill_faults(&mut merged.record, &mut merged.counts);
                drill_tally.count(&control.fleet_drills(), end_ms, &faults);
                let numbers: Vec<_> = merged
                    .record
                    .services
                    .into_iter()
                    .map(|s| (s.service, s.versions))
                    .collect();
                control.judge_merged(end_ms, &numbers);
                let (states, events) = control.take_fleet_decisions();
                pending.states.extend(states);
                pending.events.extend(events);
                // What every instance shows of the fleet, fenced with the state it led to.
                let services = control.fleet_numbers(end_ms);
                let keep = services.iter().map(|(_, w, _)| *w).max().unwrap_or(0);
                tally.push(end_ms, merged.counts, keep);
                let mut summary = summarize(leader, ended, end_ms, &tally, &services);
                drill_tally.attach(&mut summary);
                match encode_bounded(summary) {
                    Some(json) => pending.summary = Some(json),
                    None => complaints.warn(&keys.summary(), "not written: the fleet's summary is over its bound (thousands of services)"),
                }
                write(etcd, leadership, &keys, &mut seqs, &mut pending).await?;
            }
        }
    }
}

/// States and decisions not yet written.
#[derive(Default)]
struct Pending {
    states: Vec<SavedState>,
    events: Vec<TimelineEvent>,
    /// Commands taken: deleted in the txn that writes what they did.
    deletes: Vec<String>,
    /// The newest `P/summary`.
    summary: Option<Vec<u8>>,
    /// Weights set by hand on services without a rollout (`P/weights/<service>`).
    weights: Vec<FleetWeights>,
    /// Drills started (`P/drill/<service>`); each is deleted with its `drill_ended`.
    drills: Vec<FleetDrill>,
}

/// Writes `pending` in one txn fenced by `leadership`. A fence that fails ends the
/// leadership (the error); etcd away keeps them for the next write.
async fn write(
    etcd: &Etcd,
    leadership: &Leadership,
    keys: &Keys,
    seqs: &mut BTreeMap<String, u64>,
    pending: &mut Pending,
) -> Result<(), FleetError> {
    if pending.states.is_empty()
        && pending.events.is_empty()
        && pending.deletes.is_empty()
        && pending.summary.is_none()
        && pending.weights.is_empty()
        && pending.drills.is_empty()
    {
        return Ok(());
    }
    let mut ops = Vec::new();
    // The newest state of each service only.
    let mut newest: BTreeMap<&str, &SavedState> = BTreeMap::new();
    for saved in &pending.states {
        newest.insert(saved.service.as_str(), saved);
    }
    for saved in newest.values() {
        match serde_json::to_vec(saved) {
            Ok(json) => ops.push(TxnOp::put(keys.state(&saved.service), json, None)),
            Err(err) => tracing::error!(error = %err, "cannot encode a rollout state"),
        }
    }
    let mut next = seqs.clone();
    for event in &pending.events {
        let seq = next.entry(event.service.clone()).or_insert(1);
        match serde_json::to_vec(event) {
            Ok(json) => ops.push(TxnOp::put(keys.timeline(&event.service, *seq), json, None)),
            Err(err) => tracing::error!(error = %err, "cannot encode a timeline event"),
        }
        *seq += 1;
    }
    for key in &pending.deletes {
        ops.push(TxnOp::delete(key.as_str(), None));
    }
    for record in &pending.weights {
        match serde_json::to_vec(record) {
            Ok(json) => ops.push(TxnOp::put(
                format!("{}{}", keys.weights(), record.service),
                json,
                None,
            )),
            Err(err) => tracing::error!(error = %err, "cannot encode the fleet's weights"),
        }
    }
    for (service, record) in drill_changes(&pending.drills, &pending.events) {
        let key = format!("{}{service}", keys.drills());
        match record.map(serde_json::to_vec) {
            Some(Ok(json)) => ops.push(TxnOp::put(key, json, None)),
            Some(Err(err)) => tracing::error!(error = %err, "cannot encode the fleet's drill"),
            None => ops.push(TxnOp::delete(key, None)),
        }
    }
    if let Some(summary) = &pending.summary {
        ops.push(TxnOp::put(keys.summary(), summary.clone(), None));
    }
    match leadership.fenced_txn(etcd, ops).await {
        Ok(_) => {
            *seqs = next;
            *pending = Pending::default();
            Ok(())
        }
        Err(err) if err.is_not_leader() => Err(err),
        Err(err) => {
            tracing::warn!(error = %err, "the fleet's rollout state waits for etcd");
            Ok(())
        }
    }
}

/// What becomes of each service's `P/drill/<service>` in one write: the drill started
/// (put), or deleted when a `drill_ended` is among `events`. etcd takes one op per key
/// in a txn, so a drill started and ended in the same write is only deleted.
fn drill_changes<'a>(
    started: &'a [FleetDrill],
    events: &[TimelineEvent],
) -> BTreeMap<String, Option<&'a FleetDrill>> {
    let mut changes: BTreeMap<String, Option<&FleetDrill>> = BTreeMap::new();
    for record in started {
        changes.insert(record.service.clone(), Some(record));
    }
    for event in events {
        if event.event != DecisionKind::DrillEnded {
            continue;
        }
        let started_ms = changes
            .get(&event.service)
            .and_then(|r| r.map(|r| r.started_at_ms));
        // The end of an earlier drill does not delete the one started after it.
        if started_ms.is_none_or(|ms| event.at_ms >= ms) {
            changes.insert(event.service.clone(), None);
        }
    }
    changes
}

/// The sequence number the next decision of `service` takes on the timeline.
async fn next_seq(etcd: &Etcd, keys: &Keys, service: &str) -> Result<u64, FleetError> {
    let under = format!("{}timeline/{service}/", keys.prefix());
    let mut client = etcd.client();
    let newest = etcd
        .call(
            format!("reading {under}"),
            client.get(
                under.as_str(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(1),
                ),
            ),
        )
        .await?;
    Ok(newest
        .kvs()
        .first()
        .and_then(|kv| Keys::name_under(kv.key(), &under))
        .and_then(|seq| seq.parse::<u64>().ok())
        .map_or(1, |seq| seq + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::COMMAND_FORMAT;
    use serin_judge::window::Sample;

    fn sample(requests: u64) -> Sample {
        Sample {
            requests,
            ..Sample::default()
        }
    }

    #[test]
    fn a_ticks_samples_are_one_record_of_the_tick_that_just_ended() {
        // The loop ticks a hair after the boundary of tick 1 765 000 001 (500 ms ticks).
        let end_ms = 1_765_000_001 * 500 + 3;
        let taken = vec![
            (
                end_ms,
                "web".to_string(),
                vec![("v1".to_string(), sample(2))],
            ),
            (
                end_ms,
                "api".to_string(),
                vec![
                    ("stable".to_string(), sample(7)),
                    ("canary".to_string(), sample(1)),
                ],
            ),
        ];
        let record = record_of(&taken, 500).expect("a record");
        assert_eq!((record.tick, record.ticks), (1_765_000_000, 1));
        let services: Vec<_> = record.services.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(
            services,
            ["api", "web"],
            "sorted by name, as the merge needs"
        );
        assert_eq!(record.sample("api", "stable").map(|s| s.requests), Some(7));
        assert_eq!(record.sample("api", "canary").map(|s| s.requests), Some(1));
        // A loop a little early still names the tick that is ending.
        let early = vec![(1_765_000_001 * 500 - 4, "api".to_string(), Vec::new())];
        assert_eq!(record_of(&early, 500).map(|r| r.tick), Some(1_765_000_000));
        assert_eq!(record_of(&[], 500), None);
    }

    #[test]
    fn only_this_serins_states_under_their_own_key_are_applied() {
        let under = "/p/state/";
        let state = r#"{"format":2,"service":"api","fingerprint":"f","rollout":{"phase":"progressing","step":0,"canary_weight":10,"started_ms":1,"since_ms":1,"step_started_ms":1,"reason":null}}"#;
        match decode_state(under, b"/p/state/api", state.as_bytes()) {
            Ok(saved) => assert_eq!(saved.rollout.canary_weight, 10),
            Err(why) => panic!("{why}"),
        }
        let err = decode_state(under, b"/p/state/web", state.as_bytes()).expect_err("another key");
        assert!(err.contains("names service \"api\""), "{err}");
        let err = decode_state(under, b"/p/state/api", b"\x00garbage").expect_err("not JSON");
        assert!(err.starts_with("not a rollout state"), "{err}");
        let newer = state.replace("\"format\":2", "\"format\":99");
        let err = decode_state(under, b"/p/state/api", newer.as_bytes()).expect_err("newer");
        assert!(err.contains("newer than this serin's"), "{err}");
    }

    fn drill(service: &str, started_at_ms: u64) -> FleetDrill {
        FleetDrill {
            format: crate::wire::DRILL_FORMAT,
            id: format!("web-2-1-{started_at_ms}"),
            service: service.into(),
            canary: "canary".into(),
            errors_bp: 1_000,
            latency_ms: 0,
            for_ms: 60_000,
            started_at: String::new(),
            started_at_ms,
            until: String::new(),
            until_ms: started_at_ms + 60_000,
            canary_weight_at_start: 5,
            instance: "web-2".into(),
        }
    }

    fn ended(service: &str, at_ms: u64) -> TimelineEvent {
        TimelineEvent {
            at: String::new(),
            at_ms,
            service: service.into(),
            event: DecisionKind::DrillEnded,
            manual: false,
            state: serin_judge::rollout::Phase::Progressing,
            step: 0,
            weights: BTreeMap::new(),
            reason: None,
            rule: None,
            versions: BTreeMap::new(),
            drill: true,
            mismatches: Vec::new(),
        }
    }

    #[test]
    fn a_drills_record_is_put_when_it_starts_and_deleted_once_when_it_ends() {
        let started = [drill("api", 1_000), drill("web", 1_000)];
        let changes = drill_changes(&started, &[ended("web", 2_000), ended("old", 500)]);
        let shown: Vec<(&str, Option<u64>)> = changes
            .iter()
            .map(|(s, r)| (s.as_str(), r.map(|r| r.started_at_ms)))
            .collect();
        // One op per key: `web` started and ended in the same write is only deleted.
        assert_eq!(shown, [("api", Some(1_000)), ("old", None), ("web", None)]);
        // The end of the drill before it does not delete a drill just started.
        let changes = drill_changes(&started[..1], &[ended("api", 900)]);
        assert_eq!(changes["api"].map(|r| r.started_at_ms), Some(1_000));
        assert!(drill_changes(&[], &[]).is_empty());
    }

    #[test]
    fn only_this_serins_drills_under_their_own_key_are_applied() {
        let under = "/p/drill/";
        let json = serde_json::to_vec(&drill("api", 1_000)).expect("encode");
        assert_eq!(
            decode_drill(under, b"/p/drill/api", &json).map(|r| r.until_ms),
            Ok(61_000)
        );
        let err = decode_drill(under, b"/p/drill/web", &json).expect_err("another key");
        assert!(err.contains("names service \"api\""), "{err}");
        let err = decode_drill(under, b"/p/drill/api", b"{}").expect_err("not a drill");
        assert!(err.starts_with("not a fleet drill"), "{err}");
        let mut newer = drill("api", 1_000);
        newer.format = 99;
        let json = serde_json::to_vec(&newer).expect("encode");
        let err = decode_drill(under, b"/p/drill/api", &json).expect_err("newer");
        assert!(err.contains("newer than this serin's"), "{err}");
    }

    #[test]
    fn a_command_is_taken_only_under_its_service_and_id() {
        let command = FleetCommand {
            format: COMMAND_FORMAT,
            id: "web-2-7-1".into(),
            service: "api".into(),
            command: FleetCommandKind::Promote,
            weights: BTreeMap::new(),
            instance: "web-2".into(),
            at: "2025-11-24T16:00:00.000Z".into(),
            at_ms: 1_764_000_000_000,
            reason: None,
            drill: None,
        };
        let json = serde_json::to_vec(&command).expect("encode");
        let under = "/p/commands/";
        assert_eq!(
            decode_command(under, b"/p/commands/api/web-2-7-1", &json),
            Ok(command)
        );
        assert!(decode_command(under, b"/p/commands/web/web-2-7-1", &json).is_err());
        assert!(decode_command(under, b"/p/commands/api/web-2-7-1", b"{}").is_err());
    }
}
