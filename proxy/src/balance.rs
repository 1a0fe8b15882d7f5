//! Least-loaded choice of an endpoint (`lb: p2c_peak_ewma`): power of two choices over
//! a peak-sensitive moving average of latency, as Linkerd balances (Finagle's
//! "P2C + peak EWMA"; the algorithm of tower's `load::PeakEwma` and `balance::p2c`).
//!
//! Each worker keeps its own [`Slot`] per endpoint: its requests in flight to the
//! endpoint and its latency estimate. Only that worker writes it (relaxed atomics, a
//! cache line of its own), so the choice takes no lock and shares no line between
//! workers; each worker balances by what it sees, as Envoy's workers do.
//!
//! - **Estimate** ([`peak_ewma`]): a sample above the estimate replaces it (the peak);
//!   one below moves it by a weight that grows with the time since the last sample
//!   (`DECAY`): a few seconds of a fast endpoint undo a slow spell.
//! - **Decay** ([`decayed`]): read, the estimate shrinks towards zero with the time
//!   since its last sample, so an endpoint avoided since it was slow is tried again.
//! - **Cost**: the estimate times (requests in flight + 1).
//! - **Choice** ([`p2c`]): two distinct endpoints at random, the cheaper wins (the
//!   first drawn on a tie). An endpoint out of rotation is never chosen.
//!
//! A sample is the time to the response head (tower's `CompleteOnResponse`); a timeout
//! counts as one of the timeout's length. A request that got no answer (refused
//! connection, reset) gives no sample, or a refusing endpoint would look fast; passive
//! ejection (`crate::rotation`) takes it out instead.
//!
//! Why not tower's services themselves: `PeakEwma` wraps a `Service` and keeps its
//! estimate behind an `Arc<Mutex<_>>` cloned into each request (a shared lock and a
//! shared reference count on the request path), and `p2c::Balance` owns its services
//! behind `&mut self` and a discovery stream; serin's endpoints are shared pools
//! driven by per-worker connections, chosen after the split. The arithmetic is theirs.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What an endpoint not measured yet costs per request in flight (Linkerd's default
/// RTT); idle, it costs nothing, so that it is tried at once (Finagle's rule).
pub const DEFAULT_RTT_US: f64 = 30_000.0;
/// The time constant of the moving average and of the decay (Linkerd's 10 s).
pub const DECAY_US: f64 = 10_000_000.0;

/// The estimate after a `sample_us` taken at `now_us`, when it was `estimate_us` as of
/// `at_us` (`None`: no sample yet). Decayed to `now_us` first ([`decayed`]); then the
/// sample if it is higher (the peak), else a moving average that weighs the sample by
/// the time since the last one.
pub fn peak_ewma(estimate_us: Option<f64>, at_us: u64, sample_us: f64, now_us: u64) -> f64 {
    let Some(estimate_us) = estimate_us else {
        return sample_us;
    };
    let base = decayed(estimate_us, at_us, now_us);
    if sample_us >= base {
        return sample_us;
    }
    let keep = (-(now_us.saturating_sub(at_us) as f64) / DECAY_US).exp();
    base * keep + sample_us * (1.0 - keep)
}

/// The estimate `estimate_us` of `at_us` read at `now_us`: decayed towards zero.
pub fn decayed(estimate_us: f64, at_us: u64, now_us: u64) -> f64 {
    estimate_us * (-(now_us.saturating_sub(at_us) as f64) / DECAY_US).exp()
}

/// What a request costs at an endpoint of estimate `estimate_us` (`None`: not measured
/// yet) with `pending` requests in flight.
pub fn cost(estimate_us: Option<f64>, pending: u32) -> f64 {
    match estimate_us {
        Some(estimate) => estimate * f64::from(pending + 1),
        None if pending == 0 => 0.0,
        None => DEFAULT_RTT_US * f64::from(pending + 1),
    }
}

/// Power of two choices among `n` endpoints, given the two drawn (`first` ≠ `second`
/// when `n` > 1): the one in rotation of lower `cost`, `first` on a tie. When neither is
/// in rotation, the cheapest that is; `None` when no endpoint is.
pub fn p2c(
    n: usize,
    first: usize,
    second: usize,
    available: impl Fn(usize) -> bool,
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    match (available(first), available(second)) {
        (true, true) if first == second => Some(first),
        (true, true) => Some(if cost(second) < cost(first) {
            second
        } else {
            first
        }),
        (true, false) => Some(first),
        (false, true) => Some(second),
        // Rare: both drawn are out of rotation. All of them, from `first` on.
        (false, false) => (0..n)
            .map(|i| (first + i) % n)
            .filter(|i| available(*i))
            .map(|i| (i, cost(i)))
            .fold(None, |best: Option<(usize, f64)>, (i, c)| match best {
                Some((_, b)) if b <= c => best,
                _ => Some((i, c)),
            })
            .map(|(i, _)| i),
    }
}

/// Two distinct endpoint indices out of `n` (both 0 when `n` is 1), at random.
#[inline]
pub fn draw(n: usize) -> (usize, usize) {
    if n < 2 {
        return (0, 0);
    }
    let first = fastrand::usize(..n);
    let second = fastrand::usize(..n - 1);
    (first, if second >= first { second + 1 } else { second })
}

/// One endpoint's load as the requests of one worker see it.
#[repr(align(64))]
#[derive(Debug)]
pub struct Slot {
    /// Requests sent and not answered yet.
    pending: AtomicU32,
    /// The latency estimate (µs, f64 bits; NaN before the first sample), as of `at_us`.
    estimate: AtomicU64,
    at_us: AtomicU64,
}

impl Slot {
    fn new() -> Self {
        Self {
            pending: AtomicU32::new(0),
            estimate: AtomicU64::new(f64::NAN.to_bits()),
            at_us: AtomicU64::new(0),
        }
    }

    /// What a request costs here at `now_us` ([`cost`] of the decayed estimate).
    #[inline]
    pub fn cost(&self, now_us: u64) -> f64 {
        let estimate = self
            .estimate_us()
            .map(|e| decayed(e, self.at_us.load(Ordering::Relaxed), now_us));
        cost(estimate, self.pending.load(Ordering::Relaxed))
    }

    /// The estimate (µs) as of the last sample; `None` before the first.
    pub fn estimate_us(&self) -> Option<f64> {
        Some(f64::from_bits(self.estimate.load(Ordering::Relaxed))).filter(|e| !e.is_nan())
    }

    /// Requests in flight.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// A request sent at `now_us`: in flight until the [`InFlight`] is dropped.
    #[inline]
    pub fn start(&self, now_us: u64) -> InFlight<'_> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        InFlight {
            slot: self,
            started_us: now_us,
        }
    }

    fn observe(&self, sample_us: f64, now_us: u64) {
        let next = peak_ewma(
            self.estimate_us(),
            self.at_us.load(Ordering::Relaxed),
            sample_us,
            now_us,
        );
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
        self.at_us.store(now_us, Ordering::Relaxed);
    }
}

/// A request in flight to an endpoint; counted as such until dropped.
#[derive(Debug)]
pub struct InFlight<'a> {
    slot: &'a Slot,
    started_us: u64,
}

impl InFlight<'_> {
    /// The answer (or the timeout) came at `now_us`: its latency is a sample.
    #[inline]
    pub fn answered(self, now_us: u64) {
        self.slot.observe(
            now_us.saturating_sub(self.started_us) as f64,
            now_us.max(self.started_us),
        );
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.slot.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One endpoint's load, one [`Slot`] per worker.
#[derive(Debug)]
pub struct EndpointLoad {
    slots: Box<[Slot]>,
}

impl EndpointLoad {
    /// Not measured yet, for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self {
            slots: (0..workers.max(1)).map(|_| Slot::new()).collect(),
        }
    }

    /// Worker `worker`'s slot.
    #[inline]
    pub fn slot(&self, worker: usize) -> &Slot {
        &self.slots[worker % self.slots.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    /// Three endpoints of one worker, all in rotation unless `out` says otherwise.
    struct Three {
        loads: [Slot; 3],
        out: [bool; 3],
    }

    impl Three {
        fn new() -> Self {
            Self {
                loads: [Slot::new(), Slot::new(), Slot::new()],
                out: [false; 3],
            }
        }

        fn choose(&self, first: usize, second: usize, now_us: u64) -> Option<usize> {
            p2c(
                3,
                first,
                second,
                |i| !self.out[i],
                |i| self.loads[i].cost(now_us),
            )
        }

        /// A request to `i` from `at` answered `took` later.
        fn request(&self, i: usize, at: u64, took: u64) {
            self.loads[i].start(at).answered(at + took);
        }

        /// How many of `rounds` × every ordered pair of draws each endpoint wins.
        fn shares(&self, now_us: u64) -> [usize; 3] {
            let mut won = [0; 3];
            for first in 0..3 {
                for second in (0..3).filter(|s| *s != first) {
                    if let Some(i) = self.choose(first, second, now_us) {
                        won[i] += 1;
                    }
                }
            }
            won
        }
    }

    #[test]
    fn a_slow_endpoint_loses_every_draw_against_a_fast_one() {
        let t = Three::new();
        let mut now = 0;
        for _ in 0..20 {
            t.request(0, now, MS);
            t.request(1, now, MS);
            t.request(2, now, 15 * MS);
            now += 5 * MS;
        }
        assert_eq!(
            t.shares(now),
            [3, 3, 0],
            "drawn in 4 of 6 pairs, chosen in none"
        );
        assert_eq!(t.loads[2].estimate_us(), Some(15_000.0), "the peak is kept");
    }

    #[test]
    fn one_slow_answer_is_the_estimate_at_once_and_fast_ones_bring_it_down_over_seconds() {
        let slot = Slot::new();
        slot.start(0).answered(MS);
        slot.start(1_000 * MS).answered(1_050 * MS);
        assert_eq!(
            slot.estimate_us(),
            Some(50_000.0),
            "a peak replaces the estimate"
        );
        // A fast answer a millisecond later barely moves it …
        slot.start(1_051 * MS).answered(1_052 * MS);
        assert!(slot.estimate_us() > Some(49_000.0));
        // … ten seconds of them bring it most of the way down.
        let mut now = 1_052 * MS;
        while now < 11_052 * MS {
            slot.start(now).answered(now + MS);
            now += 10 * MS;
        }
        assert!(
            slot.estimate_us() < Some(20_000.0),
            "{:?}",
            slot.estimate_us()
        );
    }

    #[test]
    fn an_endpoint_with_requests_in_flight_is_avoided() {
        let t = Three::new();
        for i in 0..3 {
            t.request(i, 0, 2 * MS);
        }
        let busy = t.loads[1].start(10 * MS);
        let _also = t.loads[1].start(10 * MS);
        assert_eq!(t.choose(1, 0, 10 * MS), Some(0));
        assert_eq!(t.choose(2, 1, 10 * MS), Some(2));
        assert_eq!(t.shares(10 * MS)[1], 0);
        drop(busy);
        drop(_also);
        assert_eq!(t.loads[1].pending(), 0, "dropped, no longer in flight");
        assert_eq!(
            t.choose(1, 0, 10 * MS),
            Some(1),
            "a tie again: the first drawn"
        );
    }

    #[test]
    fn a_slow_endpoint_is_tried_again_once_its_estimate_has_decayed() {
        let t = Three::new();
        t.request(0, 0, MS);
        t.request(1, 0, MS);
        t.request(2, 0, 20 * MS);
        assert_eq!(t.shares(30 * MS)[2], 0);
        // The fast ones keep answering; the slow one, avoided, gives no sample and its
        // estimate decays until it is drawn and chosen against a fast one.
        let mut now = 30 * MS;
        let came_back = loop {
            t.request(0, now, MS);
            t.request(1, now, MS);
            now += 100 * MS;
            if t.choose(2, 0, now) == Some(2) {
                break now;
            }
            assert!(now < 60_000 * MS, "never tried again");
        };
        assert!(
            came_back > 10_000 * MS,
            "not before seconds of decay: {came_back}"
        );
        // It answers as fast as the others now: they share evenly.
        for i in 0..3 {
            t.request(i, came_back, MS);
        }
        assert_eq!(t.shares(came_back + 10 * MS), [2, 2, 2]);
    }

    #[test]
    fn ties_go_to_the_first_drawn_so_equal_endpoints_share_evenly() {
        let t = Three::new();
        assert_eq!(t.shares(0), [2, 2, 2], "none measured yet");
        for i in 0..3 {
            t.request(i, 0, 3 * MS);
        }
        assert_eq!(t.shares(MS), [2, 2, 2]);
        assert_eq!(t.choose(2, 0, MS), Some(2));
        assert_eq!(t.choose(0, 2, MS), Some(0));
    }

    #[test]
    fn an_endpoint_not_measured_yet_is_tried_at_once_but_one_request_at_a_time() {
        let t = Three::new();
        t.request(0, 0, MS);
        t.request(1, 0, MS);
        assert_eq!(t.choose(0, 2, MS), Some(2), "idle and unmeasured: free");
        let first = t.loads[2].start(MS);
        assert_eq!(
            t.choose(2, 0, MS),
            Some(0),
            "its first request is in flight"
        );
        first.answered(3 * MS);
        assert_eq!(
            t.loads[2].estimate_us(),
            Some(2_000.0),
            "the first sample is the estimate"
        );
    }

    #[test]
    fn one_endpoint_is_chosen_while_in_rotation() {
        let slot = Slot::new();
        let cost = |_| slot.cost(0);
        assert_eq!(p2c(1, 0, 0, |_| true, cost), Some(0));
        assert_eq!(p2c(1, 0, 0, |_| false, cost), None);
    }

    #[test]
    fn an_endpoint_out_of_rotation_is_never_chosen() {
        let mut t = Three::new();
        t.request(0, 0, 50 * MS);
        t.request(1, 0, MS);
        t.request(2, 0, MS);
        t.out[1] = true;
        t.out[2] = true;
        assert_eq!(t.shares(MS), [6, 0, 0], "the slow one is all there is");
        assert_eq!(t.choose(1, 2, MS), Some(0), "neither drawn can serve");
        t.out[0] = true;
        assert_eq!(t.shares(MS), [0, 0, 0]);
        assert_eq!(t.choose(1, 2, MS), None, "all out of rotation");
    }

    #[test]
    fn draws_are_two_distinct_endpoints() {
        assert_eq!(draw(1), (0, 0));
        let mut seen = [[false; 3]; 3];
        for _ in 0..1_000 {
            let (a, b) = draw(3);
            assert_ne!(a, b);
            seen[a][b] = true;
        }
        let pairs = seen.iter().flatten().filter(|s| **s).count();
        assert_eq!(pairs, 6, "every ordered pair comes up");
    }

    #[test]
    fn workers_keep_loads_of_their_own() {
        let load = EndpointLoad::new(2);
        let _busy = load.slot(0).start(0);
        assert_eq!(load.slot(0).pending(), 1);
        assert_eq!(load.slot(1).pending(), 0);
        assert_eq!(load.slot(2).pending(), 1, "worker indices wrap");
    }
}
