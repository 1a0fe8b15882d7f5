//! The control loop's cumulative figures for `/metrics` ([`Totals`]): every interval
//! the loop takes from the data plane is added here (counts by status class and failure
//! kind, the duration histogram's buckets and sum), and every rollback is counted by
//! its trigger. The loop writes them; `crate::metrics` reads a copy when scraped.

use std::collections::BTreeMap;

use serin_config::Snapshot;
use serin_proxy::shadow::ShadowInterval;
use serin_proxy::Interval;

use serin_judge::rollout::Decision;

/// Upper bounds, in seconds, of `serin_request_duration_seconds`' buckets: 1 ms to 10 s.
pub const DURATION_BUCKETS_S: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in microseconds, the unit of the data plane's histograms.
const DURATION_BUCKETS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// The `trigger` of a rollback that a person asked for (`abort`).
pub const MANUAL_TRIGGER: &str = "manual";

/// Everything one version has answered since serin started (or since the version was
/// added by a reload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionTotals {
    /// Upstream responses by status class: index 0 = 1xx … 4 = 5xx (`metrics::CLASSES`).
    pub responses: [u64; 5],
    pub connect_errors: u64,
    pub timeouts: u64,
    pub resets: u64,
    /// Requests per duration bucket, not cumulative: index i counts latencies above
    /// bound i − 1 and up to bound i of [`DURATION_BUCKETS_S`]; the last, those above 10 s.
    pub buckets: [u64; DURATION_BUCKETS_S.len() + 1],
    /// Sum of the latencies, in microseconds.
    pub duration_sum_us: u64,
    /// Requests with a latency: responses and upstream failures (as the histogram).
    pub duration_count: u64,
}

impl VersionTotals {
    /// Adds one drained interval. Each distinct latency recorded in the interval's
    /// HdrHistogram (3 significant digits) is counted once with its count, at the
    /// middle of its resolution step.
    pub fn add(&mut self, interval: &Interval) {
        for (total, n) in self.responses.iter_mut().zip(interval.responses) {
            *total += n;
        }
        self.connect_errors += interval.connect_errors;
        self.timeouts += interval.timeouts;
        self.resets += interval.resets;
        let histogram = &interval.latency_us;
        for recorded in histogram.iter_recorded() {
            let us = histogram.median_equivalent(recorded.value_iterated_to());
            let n = recorded.count_at_value();
            let bucket = DURATION_BUCKETS_US.partition_point(|bound| *bound < us);
            self.buckets[bucket] += n;
            self.duration_sum_us = self.duration_sum_us.saturating_add(us.saturating_mul(n));
            self.duration_count += n;
        }
    }

    pub(crate) fn failures(&self, kind: &str) -> u64 {
        match kind {
            "connect" => self.connect_errors,
            "timeout" => self.timeouts,
            _ => self.resets,
        }
    }

    /// The histogram's buckets as prometheus-client takes them: (upper bound in
    /// seconds, count in that bucket alone), ending with +Inf.
    pub(crate) fn histogram_buckets(&self) -> [(f64, u64); DURATION_BUCKETS_S.len() + 1] {
        let mut out = [(f64::INFINITY, 0); DURATION_BUCKETS_S.len() + 1];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = (
                DURATION_BUCKETS_S.get(i).copied().unwrap_or(f64::INFINITY),
                self.buckets[i],
            );
        }
        out
    }
}

/// The control loop's cumulative figures for `/metrics`: per service and version, and
/// rollbacks per service and trigger.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    versions: BTreeMap<String, BTreeMap<String, VersionTotals>>,
    rollbacks: BTreeMap<String, BTreeMap<String, u64>>,
    /// Shadow copies, by service and canary.
    shadow: BTreeMap<String, BTreeMap<String, ShadowTotals>>,
}

/// What shadow copies to one canary did since serin started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShadowTotals {
    pub sent: u64,
    /// Not sent: `max_in_flight` copies were in flight on the worker.
    pub dropped_in_flight: u64,
    /// Not copied: the body was over `max_body` or not read whole.
    pub dropped_body: u64,
    pub compared: u64,
    pub mismatched: u64,
    pub not_compared: u64,
}

impl Totals {
    /// Adds the intervals of `service`'s versions, as taken from the data plane.
    pub fn add(&mut self, service: &str, versions: &[(String, Interval)]) {
        if !self.versions.contains_key(service) {
            self.versions.insert(service.to_string(), BTreeMap::new());
        }
        let Some(by_version) = self.versions.get_mut(service) else {
            return;
        };
        for (version, interval) in versions {
            match by_version.get_mut(version) {
                Some(totals) => totals.add(interval),
                None => {
                    let mut totals = VersionTotals::default();
                    totals.add(interval);
                    by_version.insert(version.clone(), totals);
                }
            }
        }
    }

    /// Adds what copies of `service`'s requests to its `canary` did over an interval.
    pub fn add_shadow(&mut self, service: &str, canary: &str, taken: &ShadowInterval) {
        let t = self
            .shadow
            .entry(service.to_string())
            .or_default()
            .entry(canary.to_string())
            .or_default();
        t.sent += taken.sent;
        t.dropped_in_flight += taken.dropped_in_flight;
        t.dropped_body += taken.dropped_body;
        t.compared += taken.compared;
        t.mismatched += taken.mismatched;
        t.not_compared += taken.not_compared;
    }

    /// Every (service, canary) that shadow copies went to, with their totals.
    pub fn shadows(&self) -> impl Iterator<Item = (&str, &str, &ShadowTotals)> {
        self.shadow.iter().flat_map(|(s, by_canary)| {
            by_canary
                .iter()
                .map(move |(c, t)| (s.as_str(), c.as_str(), t))
        })
    }

    /// Counts one rollback of `service`'s canary.
    pub fn count_rollback(&mut self, service: &str, trigger: &str) {
        *self
            .rollbacks
            .entry(service.to_string())
            .or_default()
            .entry(trigger.to_string())
            .or_default() += 1;
    }

    /// Forgets services and versions that `snapshot` no longer configures; the others
    /// keep their totals.
    pub fn retain(&mut self, snapshot: &Snapshot) {
        self.versions.retain(|service, by_version| {
            snapshot.service(service).is_some_and(|s| {
                by_version.retain(|version, _| s.versions.iter().any(|v| v.name == *version));
                true
            })
        });
        self.rollbacks
            .retain(|service, _| snapshot.service(service).is_some());
        self.shadow
            .retain(|service, _| snapshot.service(service).is_some());
    }

    /// What `version` of `service` has answered so far.
    pub fn version(&self, service: &str, version: &str) -> Option<&VersionTotals> {
        self.versions.get(service)?.get(version)
    }

    /// The triggers `service`'s rollbacks were counted with.
    pub fn triggers(&self, service: &str) -> impl Iterator<Item = &str> {
        self.rollbacks
            .get(service)
            .into_iter()
            .flat_map(|t| t.keys().map(String::as_str))
    }

    /// How often `service`'s canary was rolled back with `trigger`.
    pub fn rollbacks(&self, service: &str, trigger: &str) -> u64 {
        self.rollbacks
            .get(service)
            .and_then(|t| t.get(trigger))
            .copied()
            .unwrap_or(0)
    }
}

/// The `trigger` label of a `rolled_back` decision: the kind of the rule that was
/// breached (`error_rate`, `latency`, `burn_rate`, `success`), or `manual` for an abort.
pub fn rollback_trigger(decision: &Decision) -> &'static str {
    match &decision.breach {
        _ if decision.manual => MANUAL_TRIGGER,
        Some(breach) => breach.kind,
        None => "unknown",
    }
}
