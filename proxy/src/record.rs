//! Stage 6, record: per-version latency histograms and outcome counters.
//!
//! Each version owns a [`VersionStats`] split into shards, one per worker (a thread
//! records into the shard of its [`crate::worker::index`]). Recording locks only the
//! caller's shard, so the lock is never contended by another request; the only other
//! party is the control loop's [`VersionStats::take`], once per tick. Recording does
//! not allocate: the histograms are sized for their whole range up front.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serin_config::snapshot::MAX_SUCCESS_RULES;

/// Latency is recorded in microseconds with 3 significant digits, from 1 µs up to
/// this bound (longer latencies are recorded as the bound).
pub const MAX_TRACKED_LATENCY_US: u64 = 3_600_000_000;
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// What became of one proxied request, as far as the version that served it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Response(u16),
    /// No connection to the upstream could be made (refused, unreachable, connect timeout).
    ConnectError,
    /// The upstream did not answer within the request timeout.
    Timeout,
    /// The connection broke before a complete response head arrived.
    Reset,
    /// The client went away before the upstream answered: not the version's fault.
    ClientGone,
}

impl Outcome {
    /// Whether this outcome counts against the version (server-side failures only).
    pub fn is_error(self) -> bool {
        match self {
            Outcome::Response(status) => status >= 500,
            Outcome::ConnectError | Outcome::Timeout | Outcome::Reset => true,
            Outcome::ClientGone => false,
        }
    }
}

/// Counts and latencies of one version over some span of time.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Latency of answered requests (upstream responses and upstream failures), in µs.
    pub latency_us: Histogram<u64>,
    /// Upstream responses by status class: index 0 = 1xx … 4 = 5xx.
    pub responses: [u64; 5],
    pub connect_errors: u64,
    pub timeouts: u64,
    pub resets: u64,
    pub client_gone: u64,
    /// Per `success` rule of the service (by slot): requests that matched it, and how
    /// many of those were answered 2xx or 3xx.
    pub success: [SuccessCount; MAX_SUCCESS_RULES],
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SuccessCount {
    pub matched: u64,
    pub succeeded: u64,
}

impl Default for Interval {
    fn default() -> Self {
        Self {
            latency_us: new_histogram(),
            responses: [0; 5],
            connect_errors: 0,
            timeouts: 0,
            resets: 0,
            client_gone: 0,
            success: [SuccessCount::default(); MAX_SUCCESS_RULES],
        }
    }
}

impl Interval {
    /// Requests the version answered or failed (client-gone requests excluded).
    pub fn requests(&self) -> u64 {
        self.responses.iter().sum::<u64>() + self.upstream_failures()
    }

    /// Connect errors, timeouts and resets.
    pub fn upstream_failures(&self) -> u64 {
        self.connect_errors + self.timeouts + self.resets
    }

    /// 5xx responses plus upstream failures.
    pub fn errors(&self) -> u64 {
        self.responses[4] + self.upstream_failures()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Interval) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        for (a, b) in self.responses.iter_mut().zip(other.responses) {
            *a += b;
        }
        self.connect_errors += other.connect_errors;
        self.timeouts += other.timeouts;
        self.resets += other.resets;
        self.client_gone += other.client_gone;
        for (a, b) in self.success.iter_mut().zip(other.success) {
            a.matched += b.matched;
            a.succeeded += b.succeeded;
        }
    }

    fn record(&mut self, outcome: Outcome, latency: Duration, success_rules: u8) {
        if success_rules != 0 && outcome != Outcome::ClientGone {
            let ok = matches!(outcome, Outcome::Response(200..=399));
            for (slot, count) in self.success.iter_mut().enumerate() {
                if success_rules & (1 << slot) != 0 {
                    count.matched += 1;
                    count.succeeded += u64::from(ok);
                }
            }
        }
        match outcome {
            Outcome::Response(status) => {
                let class = (status / 100).clamp(1, 5) as usize - 1;
                self.responses[class] += 1;
            }
            Outcome::ConnectError => self.connect_errors += 1,
            Outcome::Timeout => self.timeouts += 1,
            Outcome::Reset => self.resets += 1,
            Outcome::ClientGone => {
                self.client_gone += 1;
                return;
            }
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(us.max(1));
    }

    fn reset(&mut self) {
        self.latency_us.reset();
        self.responses = [0; 5];
        self.connect_errors = 0;
        self.timeouts = 0;
        self.resets = 0;
        self.client_gone = 0;
        self.success = [SuccessCount::default(); MAX_SUCCESS_RULES];
    }
}

fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure here is a bug.
    Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_US, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// One cache-line-aligned shard, so two workers never write the same line.
#[repr(align(128))]
struct Shard(Mutex<Interval>);

/// The recorder of one version of one service.
pub struct VersionStats {
    shards: Box<[Shard]>,
}

impl VersionStats {
    /// `shards` is normally the number of worker threads.
    pub fn new(shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Shard(Mutex::new(Interval::default())))
            .collect();
        Self { shards }
    }

    /// Records one request. Allocation-free; locks only this thread's shard.
    pub fn record(&self, outcome: Outcome, latency: Duration) {
        self.record_matching(outcome, latency, 0);
    }

    /// Records one request that matched the `success` rules whose slots are set in
    /// `success_rules` (bit i = slot i).
    pub fn record_matching(&self, outcome: Outcome, latency: Duration, success_rules: u8) {
        let shard = &self.shards[crate::worker::index() % self.shards.len()];
        let mut interval = shard
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        interval.record(outcome, latency, success_rules);
    }

    /// Everything recorded since the previous take; the shards start afresh.
    pub fn take(&self) -> Interval {
        let mut taken = Interval::default();
        for shard in self.shards.iter() {
            let mut interval = shard
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            taken.merge(&interval);
            interval.reset();
        }
        taken
    }
}

impl std::fmt::Debug for VersionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionStats")
            .field("shards", &self.shards.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_returns_what_was_recorded_once() {
        let stats = VersionStats::new(2);
        stats.record(Outcome::Response(200), Duration::from_millis(3));
        stats.record(Outcome::Response(503), Duration::from_millis(5));
        stats.record(Outcome::ConnectError, Duration::from_millis(1));
        stats.record(Outcome::Timeout, Duration::from_secs(15));
        stats.record(Outcome::ClientGone, Duration::from_millis(9));
        let first = stats.take();
        assert_eq!(first.responses, [0, 1, 0, 0, 1]);
        assert_eq!(first.requests(), 4);
        assert_eq!(first.errors(), 3);
        assert_eq!(first.client_gone, 1);
        assert_eq!(first.latency_us.len(), 4);
        assert!(first.latency_us.max() >= 15_000_000 - 15_000);
        let second = stats.take();
        assert_eq!(second.requests(), 0);
        assert_eq!(second.latency_us.len(), 0);
    }

    #[test]
    fn records_from_many_threads_all_arrive() {
        let stats = std::sync::Arc::new(VersionStats::new(2));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        stats.record(Outcome::Response(200), Duration::from_micros(250));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("recording thread panicked");
        }
        assert_eq!(stats.take().responses[1], 4000);
    }

    #[test]
    fn success_rules_count_matching_requests_and_their_2xx_3xx() {
        let stats = VersionStats::new(1);
        stats.record_matching(Outcome::Response(201), Duration::from_millis(1), 0b01);
        stats.record_matching(Outcome::Response(302), Duration::from_millis(1), 0b11);
        stats.record_matching(Outcome::Response(402), Duration::from_millis(1), 0b01);
        stats.record_matching(Outcome::Timeout, Duration::from_millis(1), 0b10);
        stats.record_matching(Outcome::ClientGone, Duration::from_millis(1), 0b01);
        stats.record(Outcome::Response(500), Duration::from_millis(1));
        let i = stats.take();
        assert_eq!(
            i.success[0],
            SuccessCount {
                matched: 3,
                succeeded: 2
            }
        );
        assert_eq!(
            i.success[1],
            SuccessCount {
                matched: 2,
                succeeded: 1
            }
        );
        assert_eq!(i.success[2], SuccessCount::default());
    }

    #[test]
    fn latency_beyond_the_bound_saturates() {
        let stats = VersionStats::new(1);
        stats.record(Outcome::Response(200), Duration::from_secs(100_000));
        let interval = stats.take();
        assert_eq!(interval.latency_us.len(), 1);
    }
}
