//! What every instance shows of the fleet (docs/fleet.md, "What every instance
//! shows"): the leader's summary of each judged tick, `P/summary` ([`FleetSummary`]),
//! and the reads an instance's admin API makes of etcd when asked ([`FleetReads`]).
//!
//! The summary is bounded whatever the fleet's size: per service, the merged numbers
//! the judgement used and the first [`FleetSummary::LISTED`] live instances by name
//! with their own counts; the rest is a count. Instances read it (and the fleet's
//! timeline) when their API is asked, never by a watch, so a tick costs etcd one put of
//! it, not one per instance.
//!
//! The summary also carries each service's fleet drill faults: the leader takes the
//! instances' `<canary>:drill` entries out of a tick's merged record
//! ([`take_drill_faults`]) and sums them over the drill's span ([`DrillTally`]); an
//! instance's drill report shows that sum ([`fleet_faults`]).
//!
//! Pure: the leader's [`Tally`] of per-instance counts, [`DrillTally`] and
//! [`summarize`] take their numbers and times as parameters.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;

use super::sample::SampleRecord;
use crate::intake::DRILL_SUFFIX;
use crate::wire::{
    rfc3339, Counts, FleetDrillFaults, FleetFaults, FleetSummary, FleetView, MemberNumbers,
    ServiceSummary, TimelineEvent, WindowNumbers, SUMMARY_FORMAT,
};

/// An instance's counts of one tick (or several), by (service, version).
pub type Counted = BTreeMap<(String, String), Counts>;

/// The counts of `record`, by (service, version).
pub fn counted(record: &SampleRecord) -> Counted {
    let mut out = Counted::new();
    add_record(&mut out, record);
    out
}

/// Adds `record`'s counts to `into`.
pub fn add_record(into: &mut Counted, record: &SampleRecord) {
    for service in &record.services {
        for (version, sample) in &service.versions {
            let c = into
                .entry((service.service.clone(), version.clone()))
                .or_default();
            c.requests += sample.requests;
            c.errors += sample.errors;
        }
    }
}

/// Adds `from` to `into`.
pub fn add_counted(into: &mut Counted, from: &Counted) {
    for (key, c) in from {
        let sum = into.entry(key.clone()).or_default();
        sum.requests += c.requests;
        sum.errors += c.errors;
    }
}

/// The leader's per-instance counts over the last judged ticks, for the summary: only
/// for the first [`FleetSummary::LISTED`] live instances by name, so its size does not
/// grow with the fleet. An instance's numbers count from when it was listed.
#[derive(Debug, Default)]
pub struct Tally {
    /// Every live instance (its sample key exists).
    live: BTreeSet<String>,
    /// Each judged tick's end (Unix ms) and the listed instances' counts in it.
    ticks: VecDeque<(u64, BTreeMap<String, Counted>)>,
}

impl Tally {
    /// `instance` published a record: it is live.
    pub fn seen(&mut self, instance: &str) {
        if !self.live.contains(instance) {
            self.live.insert(instance.to_string());
        }
    }

    /// `instance` left (its sample key was deleted with its lease).
    pub fn forget(&mut self, instance: &str) {
        self.live.remove(instance);
        for (_, counts) in &mut self.ticks {
            counts.remove(instance);
        }
    }

    /// Live instances.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    fn listed(&self) -> impl Iterator<Item = &String> {
        self.live.iter().take(FleetSummary::LISTED)
    }

    /// The judged tick ending at `end_ms` had these counts per instance; ticks that
    /// ended `keep_ms` or more before it are dropped.
    pub fn push(&mut self, end_ms: u64, mut counts: BTreeMap<String, Counted>, keep_ms: u64) {
        let listed: BTreeSet<&String> = self.listed().collect();
        counts.retain(|instance, _| listed.contains(instance));
        while self
            .ticks
            .front()
            .is_some_and(|(at, _)| at.saturating_add(keep_ms) <= end_ms)
        {
            self.ticks.pop_front();
        }
        self.ticks.push_back((end_ms, counts));
    }

    /// `service`'s listed instances with their counts of `versions` over the ticks that
    /// ended after `since_ms`, and how many live instances are not listed.
    pub fn members(
        &self,
        service: &str,
        versions: &[String],
        since_ms: u64,
        at_most: usize,
    ) -> (Vec<MemberNumbers>, u64) {
        let members = self
            .listed()
            .take(at_most)
            .map(|instance| {
                let mut numbers = MemberNumbers {
                    instance: instance.clone(),
                    versions: versions
                        .iter()
                        .map(|v| (v.clone(), Counts::default()))
                        .collect(),
                };
                for (_, counts) in self.ticks.iter().filter(|(at, _)| *at > since_ms) {
                    let Some(counted) = counts.get(instance) else {
                        continue;
                    };
                    for ((s, v), c) in counted {
                        if s == service {
                            let sum = numbers.versions.entry(v.clone()).or_default();
                            sum.requests += c.requests;
                            sum.errors += c.errors;
                        }
                    }
                }
                numbers
            })
            .collect::<Vec<_>>();
        let more = self.live.len().saturating_sub(members.len()) as u64;
        (members, more)
    }
}

/// Takes the drill columns (`crate::intake::drill_column`) out of a tick's merged
/// `record` and out of each instance's `counts`, so that no judgement, window or
/// member's numbers ever sees them, and returns each service's faults over every
/// instance: `requests` saw a fault, `errors` of them were answered 503.
pub fn take_drill_faults(
    record: &mut SampleRecord,
    counts: &mut BTreeMap<String, Counted>,
) -> BTreeMap<String, Counts> {
    let mut faults: BTreeMap<String, Counts> = BTreeMap::new();
    for service in &mut record.services {
        service.versions.retain(|(version, sample)| {
            if !version.ends_with(DRILL_SUFFIX) {
                return true;
            }
            let sum = faults.entry(service.service.clone()).or_default();
            sum.requests += sample.requests;
            sum.errors += sample.errors;
            false
        });
    }
    for counted in counts.values_mut() {
        counted.retain(|(_, version), _| !version.ends_with(DRILL_SUFFIX));
    }
    faults
}

/// The leader's sum of each service's fleet drill faults, over the ticks since the
/// drill started; published in the summary (`ServiceSummary::drill`).
#[derive(Debug, Default)]
pub struct DrillTally {
    /// Per service: when its drill started (Unix ms; 0 when continued from a summary)
    /// and its faults so far.
    by_service: BTreeMap<String, (u64, FleetDrillFaults)>,
}

impl DrillTally {
    /// A new leader continues the counts of the summary the last one wrote (it counts
    /// the records of the ticks after that summary's).
    pub fn continuing(summary: Option<&FleetSummary>) -> Self {
        let by_service = summary
            .into_iter()
            .flat_map(|s| &s.services)
            .filter_map(|s| Some((s.service.clone(), (0, s.drill.clone()?))))
            .collect();
        Self { by_service }
    }

    /// Adds the faults of a judged tick ending at `end_ms`: `drills` are the fleet's
    /// drills (service, id, start in Unix ms); a service's count starts afresh with a
    /// new drill id, and faults of ticks that ended before its drill began are not its.
    pub fn count(
        &mut self,
        drills: &[(String, String, u64)],
        end_ms: u64,
        faults: &BTreeMap<String, Counts>,
    ) {
        for (service, id, started_ms) in drills {
            let entry = self.by_service.entry(service.clone()).or_default();
            if entry.1.id != *id {
                *entry = (
                    *started_ms,
                    FleetDrillFaults {
                        id: id.clone(),
                        ..FleetDrillFaults::default()
                    },
                );
            }
            let Some(c) = faults.get(service).filter(|_| end_ms > entry.0) else {
                continue;
            };
            entry.1.total += c.requests;
            entry.1.errors += c.errors;
            entry.1.delayed += c.requests.saturating_sub(c.errors);
        }
    }

    /// Puts each service's count in `summary`.
    pub fn attach(&self, summary: &mut FleetSummary) {
        for s in &mut summary.services {
            s.drill = self.by_service.get(&s.service).map(|(_, f)| f.clone());
        }
    }
}

/// What an instance's drill report shows of the fleet's drill `id` on `service`, from
/// the summary it read (or why it has no numbers).
pub fn fleet_faults(
    service: &str,
    id: &str,
    summary: Result<Option<&FleetSummary>, &str>,
) -> FleetFaults {
    let note = |why: &str| FleetFaults {
        note: Some(why.to_string()),
        ..FleetFaults::default()
    };
    let summary = match summary {
        Err(why) => return note(why),
        Ok(None) => return note("no leader has judged a tick of this fleet yet"),
        Ok(Some(summary)) => summary,
    };
    let counted = summary
        .services
        .iter()
        .find(|s| s.service == service)
        .and_then(|s| s.drill.as_ref())
        .filter(|d| d.id == id);
    match counted {
        Some(d) => FleetFaults {
            errors: d.errors,
            delayed: d.delayed,
            total: d.total,
            counted_to: Some(summary.at.clone()),
            note: None,
        },
        None => note(&format!(
            "the leader {} has not counted this drill's faults yet",
            summary.leader
        )),
    }
}

/// One service's merged numbers as the leader judged them: (service, its window in ms,
/// each version's numbers over the window).
pub type ServiceNumbers = (String, u64, BTreeMap<String, WindowNumbers>);

/// The summary the leader `leader` writes after judging tick `tick`, which ended at
/// `end_ms`.
pub fn summarize(
    leader: &str,
    tick: u64,
    end_ms: u64,
    tally: &Tally,
    services: &[ServiceNumbers],
) -> FleetSummary {
    let at_most = FleetSummary::LISTED.min(FleetSummary::LISTED_IN_ALL / services.len().max(1));
    FleetSummary {
        format: SUMMARY_FORMAT,
        leader: leader.to_string(),
        tick,
        at: rfc3339(end_ms),
        at_ms: end_ms,
        instances: tally.live() as u64,
        services: services
            .iter()
            .map(|(service, window_ms, versions)| {
                let names: Vec<String> = versions.keys().cloned().collect();
                let since = end_ms.saturating_sub(*window_ms);
                let (members, more_members) = tally.members(service, &names, since, at_most);
                ServiceSummary {
                    service: service.clone(),
                    window_s: *window_ms as f64 / 1000.0,
                    versions: versions.clone(),
                    members,
                    more_members,
                    drill: None,
                }
            })
            .collect(),
    }
}

/// The most bytes of `P/summary`: it is written in the txn of the rollout's state,
/// which must never fail for its sake (etcd refuses a request over 1.5 MiB).
pub const MAX_SUMMARY_BYTES: usize = 512 * 1024;

/// `summary` as JSON within [`MAX_SUMMARY_BYTES`]: without the instances' own numbers
/// if it must, `None` if even that is too much (thousands of services).
pub fn encode_bounded(mut summary: FleetSummary) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(&summary).ok()?;
    if json.len() <= MAX_SUMMARY_BYTES {
        return Some(json);
    }
    for service in &mut summary.services {
        service.more_members += service.members.len() as u64;
        service.members.clear();
    }
    serde_json::to_vec(&summary)
        .ok()
        .filter(|json| json.len() <= MAX_SUMMARY_BYTES)
}

/// What `instance` shows of `service` in the fleet, from the summary it read (or why
/// it has none).
pub fn view_of(
    instance: &str,
    service: &str,
    summary: Result<Option<&FleetSummary>, &str>,
) -> FleetView {
    let mut view = FleetView {
        instance: instance.to_string(),
        leader: None,
        judged_at: None,
        instances: 0,
        window_s: None,
        versions: BTreeMap::new(),
        members: Vec::new(),
        more_members: 0,
        note: None,
    };
    match summary {
        Err(why) => view.note = Some(why.to_string()),
        Ok(None) => {
            view.note = Some("no leader has judged a tick of this fleet yet".to_string());
        }
        Ok(Some(summary)) => {
            view.leader = Some(summary.leader.clone());
            view.judged_at = Some(summary.at.clone());
            view.instances = summary.instances;
            match summary.services.iter().find(|s| s.service == service) {
                Some(s) => {
                    view.window_s = Some(s.window_s);
                    view.versions = s.versions.clone();
                    view.members = s.members.clone();
                    view.more_members = s.more_members;
                }
                None => {
                    view.note = Some(format!(
                        "the leader {} does not serve {service:?} (a config that differs)",
                        summary.leader
                    ))
                }
            }
        }
    }
    view
}

/// A future the admin API awaits.
pub type Reading<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// The fleet's records an instance reads from etcd when its admin API is asked; `Err`
/// says why they cannot be read now.
pub trait FleetReads: Send + Sync {
    /// `P/summary`; `None` before any leader wrote one.
    fn summary(&self) -> Reading<'_, Option<FleetSummary>>;
    /// The newest [`crate::timeline::KEEP`] decisions of `service`, oldest first.
    fn timeline(&self, service: String) -> Reading<'_, Vec<TimelineEvent>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::sample::ServiceSample;
    use serin_judge::window::Sample;

    fn counts(pairs: &[(&str, u64, u64)]) -> Counted {
        pairs
            .iter()
            .map(|(v, r, e)| {
                (
                    ("api".to_string(), v.to_string()),
                    Counts {
                        requests: *r,
                        errors: *e,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_records_counts_are_by_service_and_version() {
        let sample = |requests, errors| Sample {
            requests,
            errors,
            ..Sample::default()
        };
        let record = SampleRecord {
            tick: 7,
            ticks: 1,
            services: vec![ServiceSample {
                service: "api".into(),
                versions: vec![
                    ("canary".into(), sample(3, 1)),
                    ("stable".into(), sample(9, 0)),
                ],
            }],
        };
        let mut c = counted(&record);
        assert_eq!(c, counts(&[("canary", 3, 1), ("stable", 9, 0)]));
        add_counted(&mut c, &counts(&[("canary", 1, 1)]));
        assert_eq!(c, counts(&[("canary", 4, 2), ("stable", 9, 0)]));
    }

    #[test]
    fn a_drills_faults_are_summed_over_instances_and_ticks_and_kept_from_the_judgement() {
        let sample = |requests, errors| Sample {
            requests,
            errors,
            ..Sample::default()
        };
        // One tick's records of two instances: each has its drill column beside its
        // versions' numbers.
        let record = |stable, faults: u64, errors| SampleRecord {
            tick: 7,
            ticks: 1,
            services: vec![ServiceSample {
                service: "api".into(),
                versions: vec![
                    ("canary".into(), sample(40, 30)),
                    (
                        crate::intake::drill_column("canary"),
                        sample(faults, errors),
                    ),
                    ("stable".into(), sample(stable, 0)),
                ],
            }],
        };
        let (web1, web2) = (record(100, 30, 30), record(90, 25, 20));
        let mut merged = web1.clone();
        merged.merge(&web2);
        let mut per_instance: BTreeMap<String, Counted> = [
            ("web-1".to_string(), counted(&web1)),
            ("web-2".to_string(), counted(&web2)),
        ]
        .into_iter()
        .collect();
        let faults = take_drill_faults(&mut merged, &mut per_instance);
        assert_eq!(
            faults["api"],
            Counts {
                requests: 55,
                errors: 50
            }
        );
        // What is judged and listed has no drill column left.
        let versions: Vec<&str> = merged.services[0]
            .versions
            .iter()
            .map(|(v, _)| v.as_str())
            .collect();
        assert_eq!(versions, ["canary", "stable"]);
        assert_eq!(merged.sample("api", "canary").map(|s| s.requests), Some(80));
        assert!(per_instance
            .values()
            .all(|c| c.keys().all(|(_, v)| !v.ends_with(DRILL_SUFFIX))));

        // Over the drill's span: ticks that ended before it began are not its; a new
        // drill counts afresh.
        let mut tally = DrillTally::default();
        let drills = |id: &str, started_ms| vec![("api".to_string(), id.to_string(), started_ms)];
        tally.count(&drills("d1", 10_500), 10_000, &faults);
        tally.count(&drills("d1", 10_500), 11_000, &faults);
        tally.count(&drills("d1", 10_500), 12_000, &faults);
        let mut summary = summarize(
            "web-2",
            11,
            12_000,
            &Tally::default(),
            &[("api".into(), 30_000, BTreeMap::new())],
        );
        tally.attach(&mut summary);
        let expected = FleetDrillFaults {
            id: "d1".into(),
            errors: 100,
            delayed: 10,
            total: 110,
        };
        assert_eq!(summary.services[0].drill.as_ref(), Some(&expected));
        // Every instance's report shows it beside its own count.
        let shown = fleet_faults("api", "d1", Ok(Some(&summary)));
        assert_eq!((shown.total, shown.errors, shown.delayed), (110, 100, 10));
        assert_eq!(shown.counted_to.as_deref(), Some(summary.at.as_str()));
        let other = fleet_faults("api", "d0", Ok(Some(&summary)));
        assert!(other.note.is_some_and(|n| n.contains("has not counted")));
        let away = fleet_faults("api", "d1", Err("etcd is away"));
        assert_eq!(
            (away.total, away.note.as_deref()),
            (0, Some("etcd is away"))
        );
        // A new leader goes on from the summary; a new drill starts from 0.
        let mut next = DrillTally::continuing(Some(&summary));
        next.count(&drills("d1", 10_500), 13_000, &faults);
        next.attach(&mut summary);
        assert_eq!(
            summary.services[0].drill.as_ref().map(|d| d.total),
            Some(165)
        );
        next.count(&drills("d2", 13_200), 14_000, &BTreeMap::new());
        next.attach(&mut summary);
        assert_eq!(
            summary.services[0]
                .drill
                .as_ref()
                .map(|d| (d.id.as_str(), d.total)),
            Some(("d2", 0))
        );
    }

    #[test]
    fn members_are_counted_over_the_window_and_listed_up_to_the_bound() {
        let mut tally = Tally::default();
        for i in 0..70 {
            tally.seen(&format!("web-{i:02}"));
        }
        let tick = |a: u64, b: u64| {
            [
                ("web-00".to_string(), counts(&[("stable", a, 0)])),
                ("web-69".to_string(), counts(&[("stable", b, 1)])),
            ]
            .into_iter()
            .collect::<BTreeMap<_, _>>()
        };
        tally.push(1_000, tick(5, 5), 2_000);
        tally.push(2_000, tick(7, 7), 2_000);
        tally.push(3_000, tick(11, 11), 2_000);
        let versions = vec!["stable".to_string(), "canary".to_string()];
        let (members, more) = tally.members("api", &versions, 1_000, FleetSummary::LISTED);
        assert_eq!(members.len(), FleetSummary::LISTED);
        assert_eq!(more, 70 - FleetSummary::LISTED as u64);
        assert_eq!(members[0].instance, "web-00");
        assert_eq!(
            members[0].versions["stable"].requests, 18,
            "ticks after 1 000 ms"
        );
        assert_eq!(members[0].versions["canary"], Counts::default());
        assert!(
            members.iter().all(|m| m.instance != "web-69"),
            "past the bound"
        );
        assert_eq!(
            tally.ticks.len(),
            2,
            "a tick older than the window is dropped"
        );
        tally.forget("web-00");
        let (members, more) = tally.members("api", &versions, 0, FleetSummary::LISTED);
        assert_eq!(members[0].instance, "web-01");
        assert_eq!(more, 69 - FleetSummary::LISTED as u64);
    }

    #[test]
    fn the_summary_stays_small_whatever_the_fleets_size() {
        let size = |n: usize, service_count: usize| {
            let mut tally = Tally::default();
            let names: Vec<String> = (0..n).map(|i| format!("ingress-7d9f8c-{i:05}")).collect();
            for name in &names {
                tally.seen(name);
            }
            let per_tick = || {
                (names.iter())
                    .map(|n| {
                        (
                            n.clone(),
                            counts(&[("stable", 1234, 5), ("canary", 123, 1)]),
                        )
                    })
                    .collect()
            };
            for tick in 1..=30 {
                tally.push(tick * 1_000, per_tick(), 30_000);
            }
            let merged: BTreeMap<String, WindowNumbers> = ["stable", "canary"]
                .into_iter()
                .map(|v| {
                    let numbers = WindowNumbers {
                        requests: 1_234_567,
                        errors: 1_234,
                        error_rate: Some(0.000_999_5),
                        p50_ms: Some(12.345),
                        p95_ms: Some(45.678),
                        p99_ms: Some(123.456),
                    };
                    (v.to_string(), numbers)
                })
                .collect();
            let services: Vec<ServiceNumbers> = (0..service_count)
                .map(|i| {
                    (
                        if i == 0 {
                            "api".to_string()
                        } else {
                            format!("api-{i}")
                        },
                        30_000,
                        merged.clone(),
                    )
                })
                .collect();
            let summary = summarize("ingress-7d9f8c-00000", 1, 30_000, &tally, &services);
            serde_json::to_vec(&summary).map_or(0, |json| json.len())
        };
        let (at_3, at_64, at_1000) = (size(3, 1), size(64, 1), size(1000, 1));
        // Many services list fewer instances each: 1 024 in all.
        let at_100_services = size(1000, 100);
        eprintln!("… and {at_100_services} bytes for 100 services at 1 000 instances");
        assert!(at_100_services < 256 * 1024, "{at_100_services} bytes");
        eprintln!("P/summary, one service of two versions: {at_3} bytes at 3 instances, {at_64} at 64, {at_1000} at 1 000");
        assert!(at_64 < 10 * 1024, "{at_64} bytes at 64 instances");
        assert!(
            at_1000 <= at_64 + 16,
            "{at_1000} bytes at 1 000 against {at_64} at 64"
        );
    }

    #[test]
    fn a_summary_too_large_for_the_txn_drops_the_instances_then_itself() {
        // Instance names of 250 characters (255 at most), one listed for each of 1 024
        // services of 4 versions: too much with them, not without.
        let mut tally = Tally::default();
        for i in 0..1_000 {
            tally.seen(&format!("{i:0250}"));
        }
        let merged: BTreeMap<String, WindowNumbers> = ["stable", "canary", "blue", "green"]
            .into_iter()
            .map(|v| (v.to_string(), WindowNumbers::default()))
            .collect();
        let services: Vec<ServiceNumbers> = (0..1_024)
            .map(|i| (format!("service-{i:05}"), 30_000, merged.clone()))
            .collect();
        let summary = summarize("web-1", 1, 30_000, &tally, &services);
        let whole = serde_json::to_vec(&summary).map_or(0, |j| j.len());
        assert!(whole > MAX_SUMMARY_BYTES, "{whole} bytes");
        let json = encode_bounded(summary).expect("the merged numbers fit");
        assert!(json.len() <= MAX_SUMMARY_BYTES);
        let read: FleetSummary = serde_json::from_slice(&json).expect("a summary");
        assert!(read
            .services
            .iter()
            .all(|s| s.members.is_empty() && s.more_members == 1_000));
        let services: Vec<ServiceNumbers> = (0..20_000)
            .map(|i| (format!("service-{i:05}"), 30_000, merged.clone()))
            .collect();
        let summary = summarize("web-1", 1, 30_000, &tally, &services);
        assert_eq!(encode_bounded(summary), None, "not written at all");
    }

    #[test]
    fn the_summary_and_an_instances_view_of_it() {
        let mut tally = Tally::default();
        tally.seen("web-1");
        tally.seen("web-2");
        tally.push(
            10_000,
            [
                ("web-1".to_string(), counts(&[("stable", 4, 0)])),
                ("web-2".to_string(), counts(&[("stable", 6, 1)])),
            ]
            .into_iter()
            .collect(),
            5_000,
        );
        let merged: BTreeMap<String, WindowNumbers> = [(
            "stable".to_string(),
            WindowNumbers {
                requests: 10,
                errors: 1,
                ..WindowNumbers::default()
            },
        )]
        .into_iter()
        .collect();
        let summary = summarize(
            "web-2",
            19,
            10_000,
            &tally,
            &[("api".into(), 5_000, merged)],
        );
        assert_eq!(
            (summary.leader.as_str(), summary.tick, summary.instances),
            ("web-2", 19, 2)
        );
        let view = view_of("web-1", "api", Ok(Some(&summary)));
        assert_eq!(view.leader.as_deref(), Some("web-2"));
        assert_eq!(view.window_s, Some(5.0));
        let sum: u64 = view
            .members
            .iter()
            .map(|m| m.versions["stable"].requests)
            .sum();
        assert_eq!(sum, view.versions["stable"].requests);
        let other = view_of("web-1", "web", Ok(Some(&summary)));
        assert!(other.note.is_some_and(|n| n.contains("does not serve")));
        let away = view_of("web-1", "api", Err("etcd is away"));
        assert_eq!(
            (away.leader, away.note.as_deref()),
            (None, Some("etcd is away"))
        );
    }
}
