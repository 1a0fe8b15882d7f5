//! The judgement benchmark, simulated half: how often does the analysis roll back a
//! HEALTHY canary (false rollbacks), and how fast does it catch a broken one?
//!
//! Drives `serin_judge::analysis::judge` and `serin_judge::rollout::transition`
//! the way the runner does, on a simulated clock (no sleeping): every tick each version
//! gets a `window::Sample` of that tick's requests, errors and latency buckets (the
//! buckets of the recorder's own histogram, 1 µs..3 600 s, 3 significant digits), the
//! samples go into a `window::ServiceWindow`, and the judge sees
//!
//! * `baseline_window`, `canary_window`: ticks ending after now − window;
//! * `baseline_step`, `canary_step`: ticks ending after max(step start, now − window);
//! * `canary_tick`, `baseline_tick`: the newest tick;
//! * `baseline_has_weight`: canary weight < 100.
//!
//! The verdict goes to `rollout::transition`, whose `SetCanaryWeight` sets the split
//! of the following ticks. Every run is seeded (seed = rollout index): the same
//! command prints the same table.
//!
//! ```text
//! cargo bench --bench judgement                      # false rollbacks, 200 rollouts per rate
//! cargo bench --bench judgement -- --quick           # 20 rollouts per rate (CI smoke)
//! cargo bench --bench judgement -- --rollouts 50 --rates 5,50
//! cargo bench --bench judgement -- --detect          # time to detect two faults, 50 seeds
//! cargo bench --bench judgement -- --all             # both
//! cargo bench --bench judgement -- --boundary        # a canary exactly at a threshold, 500 rollouts
//! ```
//!
//! A run ends when the rollout is promoted or rolled back. A paused rollout is still
//! judged (as the runner does), so it runs on to the time limit and counts as paused
//! unless it is rolled back meanwhile. docs/analysis.md quotes and explains the tables.
//!
//! Speed. A 30-minute rollout is 1 800 ticks, and at 500 canary req/s the baseline
//! gets 9 500 req/s at the 5 % step, so a run draws millions of latencies and merges
//! thousands of histogram buckets per tick. Two shortcuts keep the default run within
//! a few minutes on two cores, and both are checked:
//!
//! * latencies are drawn as histogram buckets from an alias table holding the exact
//!   lognormal probability of every bucket (`--sampler box-muller` draws each latency
//!   with Box–Muller and records it in a real `serin_proxy::Interval` instead; the
//!   tables agree, and it is up to 25× slower); at start-up both samplers draw 10⁶
//!   latencies and their p50, p95, p99 and p99.9 are printed beside the exact ones;
//! * the window and step aggregates are kept incrementally and handed to the judge
//!   with the buckets it cannot read merged: below the rank of the lowest percentile
//!   any rule asks about, and for the canary also above the rank of the highest one.
//!   `judge` reads nothing else of them (it counts above thresholds only on the newest
//!   tick, which is never merged), so its answer is the same; every
//!   `--verify-every` ticks (and the first ticks of every step) the judgement is
//!   recomputed from `ServiceWindow::aggregate` with full buckets and must be equal,
//!   verdict and detectors alike, or the run panics.

use std::collections::VecDeque;
use std::f64::consts::TAU;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serin_judge::analysis::{judge, Input, Judgement, Verdict};
use serin_judge::rollout::{transition, Action, Event, Phase, RolloutState};
use serin_judge::rules::{compile, quantile_upper_rank, CompiledAnalysis, Cutoff, Events, Null};
use serin_judge::spec::{Analysis, OnFailure, Rollout, Rule, Step};
use serin_judge::stats::{log_threshold, lower_bound, spend, upper_bound, Detector};
use serin_judge::window::{Aggregate, Sample, ServiceWindow};
use serin_proxy::Interval;

const BASELINE: usize = 0;
const CANARY: usize = 1;
/// Latencies above this are recorded as this (their probability here is below 1e-30).
const MAX_US: u64 = 60_000_000;
/// Baseline request rate cap, req/s (a 500 req/s canary at 5 % would otherwise ask
/// for 9 500; the cap only matters for faster canaries).
const BASELINE_CAP: f64 = 20_000.0;
/// The latency fault's factor.
const SLOWER: f64 = 1.5;
/// The factor of a latency incident that hits both versions at once: p95 ≈ 403 ms, still
/// within the documented `latency p95 max 800ms`.
const BOTH_SLOWER: f64 = 3.0;

// ---------------------------------------------------------------------------------
// Latency buckets and distributions

/// The buckets of the recorder's histogram, ascending, from 1 µs to past `MAX_US`.
struct Table {
    lo: Vec<u64>,
    hi: Vec<u64>,
}

impl Table {
    fn new() -> Self {
        let h = &Interval::default().latency_us;
        let (mut lo, mut hi) = (Vec::new(), Vec::new());
        let mut v = 1;
        while v <= MAX_US {
            let (l, u) = (h.lowest_equivalent(v), h.highest_equivalent(v));
            lo.push(l);
            hi.push(u);
            v = u + 1;
        }
        Self { lo, hi }
    }

    fn len(&self) -> usize {
        self.lo.len()
    }

    fn index(&self, lo: u64) -> u32 {
        match self.lo.binary_search(&lo) {
            Ok(i) => i as u32,
            Err(_) => panic!("bucket starting at {lo} µs is not a bucket of the recorder"),
        }
    }
}

/// Walker/Vose alias table. One draw takes one 64-bit random number: its high half
/// picks the entry, its low half decides between the entry and its alias (32-bit
/// resolution, far finer than the tails that matter here).
struct Alias {
    /// P(keep entry i) · 2³², saturated.
    keep: Vec<u64>,
    alias: Vec<u32>,
}

impl Alias {
    fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut prob = vec![1.0; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s];
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // What is left has probability 1 up to rounding.
        let keep = prob
            .iter()
            .map(|p| ((p * 4_294_967_296.0).round() as u64).min(1 << 32))
            .collect();
        Self { keep, alias }
    }

    fn draw(&self, rng: &mut fastrand::Rng) -> usize {
        let r = rng.u64(..);
        let i = (((r >> 32) * self.keep.len() as u64) >> 32) as usize;
        if (r & 0xffff_ffff) < self.keep[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }
}

/// Lognormal latency: ln(µs) ~ N(ln median, sigma²), recorded as whole µs (floor),
/// at least 1, as the recorder does with `Duration::as_micros`.
struct Latency {
    mu: f64,
    sigma: f64,
    alias: Alias,
}

impl Latency {
    fn new(table: &Table, median_ms: f64, sigma: f64) -> Self {
        let mu = (median_ms * 1000.0).ln();
        let density = |y: f64| {
            let z = (y - mu) / sigma;
            (-0.5 * z * z).exp() / (sigma * TAU.sqrt())
        };
        // P(lo ≤ floor(X) ≤ hi) = P(ln lo ≤ ln X < ln(hi + 1)), by Simpson's rule in ln X
        // (buckets are at most 1/1024 wide in ln X where the probability is).
        let weights: Vec<f64> = table
            .lo
            .iter()
            .zip(&table.hi)
            .map(|(&lo, &hi)| {
                let (a, b) = ((lo as f64).ln(), ((hi + 1) as f64).ln());
                (b - a) / 6.0 * (density(a) + 4.0 * density(0.5 * (a + b)) + density(b))
            })
            .collect();
        let total: f64 = weights.iter().sum();
        assert!(
            (total - 1.0).abs() < 1e-9,
            "bucket probabilities sum to {total}"
        );
        Self {
            mu,
            sigma,
            alias: Alias::new(&weights),
        }
    }

    fn draw_us(&self, z: f64) -> u64 {
        ((self.mu + self.sigma * z).exp().floor() as u64).clamp(1, MAX_US)
    }
}

// ---------------------------------------------------------------------------------
// Random counts

fn normal_pair(rng: &mut fastrand::Rng) -> (f64, f64) {
    let u1 = 1.0 - rng.f64(); // (0, 1]
    let u2 = rng.f64();
    let r = (-2.0 * u1.ln()).sqrt();
    (r * (TAU * u2).cos(), r * (TAU * u2).sin())
}

/// Poisson(lambda): exact below 30, normal approximation above.
fn poisson(rng: &mut fastrand::Rng, lambda: f64) -> u64 {
    if lambda <= 0.0 {
        0
    } else if lambda < 30.0 {
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = rng.f64();
        while p > limit {
            k += 1;
            p *= rng.f64();
        }
        k
    } else {
        (lambda + lambda.sqrt() * normal_pair(rng).0)
            .round()
            .max(0.0) as u64
    }
}

/// Binomial(n, p), by skipping geometric gaps between events (cost O(n·p + 1)).
fn binomial(rng: &mut fastrand::Rng, n: u64, p: f64) -> u64 {
    if p <= 0.0 || n == 0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    if p > 0.5 {
        return n - binomial(rng, n, 1.0 - p);
    }
    let ln_q = (1.0 - p).ln();
    let (mut k, mut pos) = (0, 0u64);
    loop {
        let gap = ((1.0 - rng.f64()).ln() / ln_q).floor();
        if gap >= (n - pos) as f64 {
            return k;
        }
        pos += gap as u64 + 1;
        k += 1;
        if pos >= n {
            return k;
        }
    }
}

// ---------------------------------------------------------------------------------
// One tick of one version

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sampler {
    Alias,
    BoxMuller,
}

/// Requests of one kind within a tick.
struct Segment<'a> {
    requests: u64,
    error_p: f64,
    latency: &'a Latency,
}

/// A tick's numbers as bucket indices, for the incremental windows.
#[derive(Default)]
struct TickCounts {
    requests: u64,
    errors: u64,
    buckets: Vec<(u32, u64)>,
}

/// Draws one version's tick.
struct Recorder {
    dense: Vec<u64>,
    interval: Interval,
}

impl Recorder {
    fn new(table: &Table) -> Self {
        Self {
            dense: vec![0; table.len()],
            interval: Interval::default(),
        }
    }

    fn tick(
        &mut self,
        rng: &mut fastrand::Rng,
        table: &Table,
        sampler: Sampler,
        segments: &[Segment<'_>],
    ) -> (Sample, TickCounts) {
        let mut requests = 0;
        let mut errors = 0;
        for s in segments {
            requests += s.requests;
            errors += binomial(rng, s.requests, s.error_p);
        }
        match sampler {
            Sampler::Alias => {
                let (mut lo, mut hi) = (usize::MAX, 0);
                for s in segments {
                    for _ in 0..s.requests {
                        let i = s.latency.alias.draw(rng);
                        self.dense[i] += 1;
                        lo = lo.min(i);
                        hi = hi.max(i);
                    }
                }
                let mut latency = Vec::new();
                let mut buckets = Vec::new();
                if lo <= hi {
                    for i in lo..=hi {
                        let c = std::mem::take(&mut self.dense[i]);
                        if c > 0 {
                            latency.push((table.lo[i], table.hi[i], c));
                            buckets.push((i as u32, c));
                        }
                    }
                }
                let sample = Sample {
                    requests,
                    errors,
                    success: Default::default(),
                    latency,
                };
                let counts = TickCounts {
                    requests,
                    errors,
                    buckets,
                };
                (sample, counts)
            }
            Sampler::BoxMuller => {
                // The recorder's own path: an Interval, then the control loop's intake.
                let iv = &mut self.interval;
                iv.latency_us.reset();
                iv.responses = [0, requests - errors, 0, 0, errors];
                for s in segments {
                    let mut left = s.requests;
                    while left > 0 {
                        let (z1, z2) = normal_pair(rng);
                        iv.latency_us.saturating_record(s.latency.draw_us(z1));
                        left -= 1;
                        if left > 0 {
                            iv.latency_us.saturating_record(s.latency.draw_us(z2));
                            left -= 1;
                        }
                    }
                }
                let sample = serin_control::intake::sample_of(iv);
                assert_eq!((sample.requests, sample.errors), (requests, errors));
                let buckets = sample
                    .latency
                    .iter()
                    .map(|&(lo, _, c)| (table.index(lo), c))
                    .collect();
                let counts = TickCounts {
                    requests,
                    errors,
                    buckets,
                };
                (sample, counts)
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Incremental windows

/// Dense bucket counts of a span of ticks.
struct Acc {
    counts: Vec<u64>,
    /// Occupied index range, inclusive (lo > hi when empty).
    lo: usize,
    hi: usize,
    n: u64,
    requests: u64,
    errors: u64,
}

impl Acc {
    fn new(len: usize) -> Self {
        Self {
            counts: vec![0; len],
            lo: usize::MAX,
            hi: 0,
            n: 0,
            requests: 0,
            errors: 0,
        }
    }

    fn add(&mut self, t: &TickCounts) {
        self.requests += t.requests;
        self.errors += t.errors;
        for &(i, c) in &t.buckets {
            let i = i as usize;
            self.counts[i] += c;
            self.n += c;
            self.lo = self.lo.min(i);
            self.hi = self.hi.max(i);
        }
    }

    fn sub(&mut self, t: &TickCounts) {
        self.requests -= t.requests;
        self.errors -= t.errors;
        for &(i, c) in &t.buckets {
            self.counts[i as usize] -= c;
            self.n -= c;
        }
        if self.n == 0 {
            self.lo = usize::MAX;
            self.hi = 0;
            return;
        }
        while self.counts[self.lo] == 0 {
            self.lo += 1;
        }
        while self.counts[self.hi] == 0 {
            self.hi -= 1;
        }
    }

    /// Values certainly above `us` (whole bucket above it), as `Aggregate::count_above`.
    fn count_above(&self, table: &Table, us: u64) -> u64 {
        if self.lo > self.hi {
            return 0;
        }
        (self.lo..=self.hi)
            .filter(|&i| table.lo[i] > us)
            .map(|i| self.counts[i])
            .sum()
    }

    fn clear(&mut self) {
        if self.lo <= self.hi {
            self.counts[self.lo..=self.hi].fill(0);
        }
        *self = Self {
            counts: std::mem::take(&mut self.counts),
            ..Self::new(0)
        };
    }

    /// The aggregate the judge gets, with the buckets it cannot read merged: those whose
    /// cumulative count stays below rank ⌈p_low·n⌉ into one (lowest lo, its highest hi),
    /// and those after the bucket holding rank `high` (see [`High`]) into another.
    /// `judge` reads a window or step aggregate only through its totals and the values
    /// at ranks from ⌈p·n⌉ up (p a rule's percentile): the canary's only at ⌈p·n⌉, the
    /// baseline window's also at the rank of its confidence bound.
    fn aggregate(&self, table: &Table, p_low: f64, high: High) -> Aggregate {
        let mut latency = Vec::new();
        if self.n > 0 {
            let rank = |p: f64| ((p * self.n as f64).ceil() as u64).clamp(1, self.n);
            let r_low = rank(p_low);
            let r_high = match high {
                High::All => u64::MAX,
                High::Quantile(p) => rank(p),
                High::Bound { p, level } => {
                    // The largest rank `quantile_upper_us` can read at any level down to
                    // the smallest (the rank grows as the level falls); past it, and one
                    // more for good measure, nothing is read. Without a bound at the
                    // smallest level a larger one may still have one, at a rank up to n:
                    // merge nothing above.
                    quantile_upper_rank(self.n, p, level)
                        .map_or(u64::MAX, |r| r + 1)
                        .max(rank(p))
                }
            };
            let mut seen = 0;
            let mut below: Option<(u64, u64, u64)> = None;
            let mut above: Option<(u64, u64, u64)> = None;
            for i in self.lo..=self.hi {
                let c = self.counts[i];
                if c == 0 {
                    continue;
                }
                let before = seen;
                seen += c;
                let merge = |m: Option<(u64, u64, u64)>| match m {
                    None => (table.lo[i], table.hi[i], c),
                    Some((lo, _, n)) => (lo, table.hi[i], n + c),
                };
                if seen < r_low {
                    below = Some(merge(below));
                } else if before >= r_high {
                    above = Some(merge(above));
                } else {
                    latency.extend(below.take());
                    latency.push((table.lo[i], table.hi[i], c));
                }
            }
            latency.extend(above);
        }
        Aggregate::of([&Sample {
            requests: self.requests,
            errors: self.errors,
            success: Default::default(),
            latency,
        }])
    }
}

/// Which high ranks of an aggregate the judge may read.
#[derive(Clone, Copy)]
enum High {
    All,
    /// Up to rank ⌈p·n⌉.
    Quantile(f64),
    /// Up to the rank of the baseline's upper confidence bound for the p-quantile at
    /// any level ≥ `level`.
    Bound {
        p: f64,
        level: f64,
    },
}

/// The lowest and highest percentile any rule reads, as fractions ((1, 0) when none does).
fn quantile_range(rules: &CompiledAnalysis) -> (f64, f64) {
    rules
        .rules
        .iter()
        .filter_map(|r| r.quantile())
        .fold((1.0, 0.0), |(lo, hi), p| (f64::min(lo, p), f64::max(hi, p)))
}

// ---------------------------------------------------------------------------------
// Scenarios

#[derive(Clone, Copy)]
enum Traffic {
    /// The canary gets `rate` req/s at any weight below 100; the baseline
    /// rate·(100 − w)/w, capped at `BASELINE_CAP`.
    Canary { rate: f64 },
    /// `rate` req/s split by weight.
    Total { rate: f64 },
}

#[derive(Clone, Copy)]
enum Fault {
    None,
    /// The canary answers 100 % 5xx from a uniformly random moment in [at, at + 1 s).
    Errors {
        at_ms: u64,
    },
    /// Every canary latency × `SLOWER` from `at_ms`.
    Slower {
        at_ms: u64,
    },
    /// Every latency of both versions × `BOTH_SLOWER` from `at_ms`: an incident of
    /// something both depend on, which must not fail the canary.
    BothSlower {
        at_ms: u64,
    },
}

struct Scenario {
    label: String,
    rollout: Rollout,
    traffic: Traffic,
    /// Error probability of the baseline, and of the canary before any fault.
    background_errors: f64,
    canary_errors: f64,
    fault: Fault,
    /// Simulated time limit, ms.
    limit_ms: u64,
}

#[derive(Clone, Debug)]
enum End {
    Promoted,
    RolledBack {
        rule: String,
    },
    Paused {
        reason: String,
    },
    /// Still running at the time limit.
    Running,
}

#[derive(Clone, Debug)]
struct Outcome {
    end: End,
    /// Ticks judged after the rollout started (1 800 for a 30-minute rollout that never
    /// waited).
    ticks: u64,
    end_ms: u64,
    onset_ms: f64,
    /// Per rule, the largest ln D − ln(threshold) seen (≥ 0 is an alarm).
    closest: Vec<f64>,
    /// The first time (ms) a fixed-sample 99 % test on the window, repeated every tick,
    /// would have called the canary bad (see [`naive_fails`]).
    naive_ms: Option<u64>,
    verified: u64,
    cpu: Duration,
}

struct Shared {
    table: Table,
    healthy: Latency,
    slower: Latency,
    both_slower: Latency,
    sampler: Sampler,
    verify_every: u64,
}

fn run(scn: &Scenario, sh: &Shared, seed: u64) -> Outcome {
    let started = Instant::now();
    let spec = &scn.rollout;
    let analysis = &spec.analysis;
    let interval_ms = analysis.interval.as_millis() as u64;
    let window_ms = analysis.window.as_millis() as u64;
    // As the runner does: compiled once, when the spec is read.
    let rules = compile(analysis);
    let (p_low, p_high) = quantile_range(&rules);
    let canary_high = High::Quantile(p_high);
    // The baseline window: up to the rank of the widest confidence bound a relative
    // latency rule can take in this run (its level falls with the detector's ticks,
    // which are at most the run's ticks).
    let max_ticks = scn.limit_ms / interval_ms + 1;
    let baseline_high = rules
        .rules
        .iter()
        .filter_map(|r| match r.test.events {
            Events::SlowerThan(Cutoff::Baseline { p, .. }) => Some(High::Bound {
                p,
                level: spend(r.budget.baseline, max_ticks + 1),
            }),
            _ => None,
        })
        .fold(canary_high, |acc, b| match (acc, b) {
            (High::Bound { p: p1, level: l1 }, High::Bound { p: p2, level: l2 }) => High::Bound {
                p: p1.max(p2),
                level: l1.min(l2),
            },
            (_, b) => b,
        });
    let table = &sh.table;
    let mut rng = fastrand::Rng::with_seed(seed);

    let onset_ms = match scn.fault {
        Fault::None => f64::INFINITY,
        Fault::Errors { at_ms } => at_ms as f64 + 1000.0 * rng.f64(),
        Fault::Slower { at_ms } | Fault::BothSlower { at_ms } => at_ms as f64,
    };

    let mut window = ServiceWindow::new(vec!["stable".into(), "canary".into()], window_ms);
    let mut ticks: VecDeque<(u64, [TickCounts; 2])> = VecDeque::new();
    let mut acc = [Acc::new(table.len()), Acc::new(table.len())];
    let mut step_acc = [Acc::new(table.len()), Acc::new(table.len())];
    let mut rec = [Recorder::new(table), Recorder::new(table)];
    let mut closest = vec![f64::NEG_INFINITY; analysis.rules.len()];
    let mut verified = 0;
    let mut naive_ms = None;

    // As the runner does when it finds a pending rollout: start it at once.
    let mut detectors: Vec<Detector> = Vec::new();
    let (mut state, actions) =
        transition(spec, &RolloutState::new(0), Event::Tick(&Verdict::Pass), 0);
    let mut weight = 0;
    apply(&actions, &mut weight);

    let mut k: u64 = 1;
    let mut judged_ticks = 0;
    let end = loop {
        let now = k * interval_ms;
        if now > scn.limit_ms {
            break match &state.reason {
                Some(reason) if state.phase == Phase::Paused => End::Paused {
                    reason: reason.clone(),
                },
                _ => End::Running,
            };
        }
        let start = now - interval_ms;
        let secs = interval_ms as f64 / 1000.0;
        let (rate_c, rate_b) = match scn.traffic {
            Traffic::Canary { rate } => match weight {
                0 => (0.0, BASELINE_CAP.min(rate * 19.0)),
                100 => (rate, 0.0),
                w => (
                    rate,
                    (rate * f64::from(100 - w) / f64::from(w)).min(BASELINE_CAP),
                ),
            },
            Traffic::Total { rate } => (
                rate * f64::from(weight) / 100.0,
                rate * f64::from(100 - weight) / 100.0,
            ),
        };
        // The healthy share of this tick (the rest is after the fault's onset).
        let healthy_share = ((onset_ms - start as f64) / interval_ms as f64).clamp(0.0, 1.0);
        let (fault_error_p, fault_latency, baseline_fault_latency) = match scn.fault {
            Fault::None => (scn.canary_errors, &sh.healthy, &sh.healthy),
            Fault::Errors { .. } => (1.0, &sh.healthy, &sh.healthy),
            Fault::Slower { .. } => (scn.canary_errors, &sh.slower, &sh.healthy),
            Fault::BothSlower { .. } => (scn.canary_errors, &sh.both_slower, &sh.both_slower),
        };
        let canary_segments = [
            Segment {
                requests: poisson(&mut rng, rate_c * secs * healthy_share),
                error_p: scn.canary_errors,
                latency: &sh.healthy,
            },
            Segment {
                requests: poisson(&mut rng, rate_c * secs * (1.0 - healthy_share)),
                error_p: fault_error_p,
                latency: fault_latency,
            },
        ];
        // The baseline shares only an incident of both versions.
        let baseline_healthy = match scn.fault {
            Fault::BothSlower { .. } => healthy_share,
            _ => 1.0,
        };
        let baseline_segments = [
            Segment {
                requests: poisson(&mut rng, rate_b * secs * baseline_healthy),
                error_p: scn.background_errors,
                latency: &sh.healthy,
            },
            Segment {
                requests: poisson(&mut rng, rate_b * secs * (1.0 - baseline_healthy)),
                error_p: scn.background_errors,
                latency: baseline_fault_latency,
            },
        ];
        let (b_sample, b_counts) =
            rec[BASELINE].tick(&mut rng, table, sh.sampler, &baseline_segments);
        let (c_sample, c_counts) = rec[CANARY].tick(&mut rng, table, sh.sampler, &canary_segments);
        window.push_samples(now, vec![b_sample, c_sample]);
        acc[BASELINE].add(&b_counts);
        acc[CANARY].add(&c_counts);
        ticks.push_back((now, [b_counts, c_counts]));
        let since_window = now.saturating_sub(window_ms);
        while ticks.front().is_some_and(|(at, _)| *at <= since_window) {
            let (_, [b, c]) = ticks.pop_front().expect("front");
            acc[BASELINE].sub(&b);
            acc[CANARY].sub(&c);
        }

        let bw = acc[BASELINE].aggregate(table, p_low, baseline_high);
        let cw = acc[CANARY].aggregate(table, p_low, canary_high);
        // Within the first window of a step, the step's own ticks.
        let step_young = state.step_started_ms > since_window;
        let (bs, cs) = if step_young {
            for (v, a) in step_acc.iter_mut().enumerate() {
                a.clear();
                for (_, t) in ticks.iter().filter(|(at, _)| *at > state.step_started_ms) {
                    a.add(&t[v]);
                }
            }
            (
                Some(step_acc[BASELINE].aggregate(table, p_low, canary_high)),
                Some(step_acc[CANARY].aggregate(table, p_low, canary_high)),
            )
        } else {
            (None, None)
        };
        let ct = window.latest(CANARY);
        let bt = window.latest(BASELINE);
        let input = Input {
            baseline_window: &bw,
            canary_window: &cw,
            baseline_step: bs.as_ref().unwrap_or(&bw),
            canary_step: cs.as_ref().unwrap_or(&cw),
            canary_tick: &ct,
            baseline_tick: &bt,
            baseline_has_weight: weight < 100,
            mismatch: None,
        };
        let judged = judge(&rules, &detectors, &input);
        judged_ticks += 1;

        let step_age_ticks = now.saturating_sub(state.step_started_ms) / interval_ms;
        if sh.verify_every > 0 && (k.is_multiple_of(sh.verify_every) || step_age_ticks <= 2) {
            verify(
                &window, &state, now, window_ms, weight, &rules, &detectors, &judged, seed,
            );
            verified += 1;
        }

        detectors = judged.detectors;
        if naive_ms.is_none() && naive_fails(&rules, table, &acc) {
            naive_ms = Some(now);
        }
        for ((c, d), r) in closest.iter_mut().zip(&detectors).zip(&rules.rules) {
            if d.ticks > 0 {
                *c = c.max(d.log_value() - log_threshold(r.budget.detector));
            }
        }
        let (next, actions) = transition(spec, &state, Event::Tick(&judged.verdict), now);
        apply(&actions, &mut weight);
        state = next;
        match state.phase {
            Phase::Promoted => break End::Promoted,
            Phase::RolledBack => {
                let rule = match &judged.verdict {
                    Verdict::Fail(b) => b.rule.clone(),
                    other => format!("?? {other:?}"),
                };
                break End::RolledBack { rule };
            }
            // A paused rollout is still judged, and rolled back if it fails.
            Phase::Pending | Phase::Progressing | Phase::Paused => {}
        }
        k += 1;
    };
    Outcome {
        end,
        ticks: judged_ticks,
        end_ms: k * interval_ms,
        onset_ms,
        closest,
        naive_ms,
        verified,
        cpu: started.elapsed(),
    }
}

/// What peeking does: each rule as a FIXED-sample one-sided test at 99 % (serin's
/// Chernoff bounds at level 1 %, no correction for repetition) on the 30 s window,
/// run every tick. Rules with a fixed θ and cutoff: the lower bound of the window's
/// share of failures above θ; `error_rate max_increase`: the canary's lower bound minus
/// the baseline's upper bound (each at 0.5 %) above the increase. Relative latency
/// rules, success rules (the simulation sends no matching requests) and mismatch rules
/// (it has no shadow step) are not tested.
fn naive_fails(rules: &CompiledAnalysis, table: &Table, acc: &[Acc; 2]) -> bool {
    let (b, c) = (&acc[BASELINE], &acc[CANARY]);
    rules.rules.iter().any(|rule| {
        let (n, k) = match rule.test.events {
            Events::Errors => (c.requests, c.errors),
            Events::SlowerThan(Cutoff::Fixed { us }) => (c.n, c.count_above(table, us)),
            Events::SlowerThan(Cutoff::Baseline { .. })
            | Events::Unsuccessful { .. }
            | Events::Mismatches => return false,
        };
        match rule.test.null {
            Null::Fixed(theta) => lower_bound(k, n, 0.01) > theta,
            Null::BaselinePlus { increase } => {
                b.requests > 0
                    && lower_bound(k, n, 0.005) - upper_bound(b.errors, b.requests, 0.005)
                        > increase
            }
        }
    })
}

fn apply(actions: &[Action], weight: &mut u32) {
    for a in actions {
        if let Action::SetCanaryWeight(w) = a {
            *weight = *w;
        }
    }
}

/// Judges the same tick from `ServiceWindow` aggregates with every bucket and checks
/// that the verdict and the detectors are the ones the merged aggregates gave.
#[allow(clippy::too_many_arguments)]
fn verify(
    window: &ServiceWindow,
    state: &RolloutState,
    now: u64,
    window_ms: u64,
    weight: u32,
    rules: &CompiledAnalysis,
    detectors: &[Detector],
    judged: &Judgement,
    seed: u64,
) {
    let since_window = now.saturating_sub(window_ms);
    let since_step = state.step_started_ms.max(since_window);
    let bw = window.aggregate(BASELINE, since_window);
    let cw = window.aggregate(CANARY, since_window);
    let bs = window.aggregate(BASELINE, since_step);
    let cs = window.aggregate(CANARY, since_step);
    let ct = window.latest(CANARY);
    let bt = window.latest(BASELINE);
    let full = judge(
        rules,
        detectors,
        &Input {
            baseline_window: &bw,
            canary_window: &cw,
            baseline_step: &bs,
            canary_step: &cs,
            canary_tick: &ct,
            baseline_tick: &bt,
            baseline_has_weight: weight < 100,
            mismatch: None,
        },
    );
    assert_eq!(
        (&full.verdict, &full.detectors),
        (&judged.verdict, &judged.detectors),
        "seed {seed}, t = {now} ms: merged buckets changed the judgement"
    );
}

// ---------------------------------------------------------------------------------
// Specs

fn rollout(steps: Vec<Step>, interval: Duration, rules: Vec<Rule>) -> Rollout {
    Rollout {
        shadow: None,
        baseline: BASELINE,
        canary: CANARY,
        steps,
        analysis: Analysis {
            interval,
            window: Duration::from_secs(30),
            min_requests: 50,
            confidence: 0.99,
            rules,
        },
        retry_on_baseline: false,
        on_failure: OnFailure::Rollback,
        progress_deadline: Duration::from_secs(600),
    }
}

fn step(weight: u32, hold_s: Option<u64>) -> Step {
    Step {
        shadow: None,
        weight,
        hold: hold_s.map(Duration::from_secs),
    }
}

/// The documented rollout: 5 %, 25 %, 50 % for 10 minutes each, then 100 %.
fn documented_steps() -> Vec<Step> {
    vec![
        step(5, Some(600)),
        step(25, Some(600)),
        step(50, Some(600)),
        step(100, None),
    ]
}

/// The documented rules, with `error_rate max` as given.
fn rules(error_max: f64, burn_rate: bool) -> Vec<Rule> {
    let mut r = vec![
        Rule::ErrorRate { max: error_max },
        Rule::ErrorRateIncrease {
            max_increase: 0.005,
        },
        Rule::Latency {
            percentile: 95.0,
            max: Duration::from_millis(800),
        },
        Rule::LatencyIncrease {
            percentile: 95.0,
            max_increase: 0.2,
        },
    ];
    if burn_rate {
        r.push(Rule::BurnRate {
            slo: 0.999,
            max: 4.0,
        });
    }
    r
}

// ---------------------------------------------------------------------------------
// Running many

fn run_all(
    scenarios: &[Scenario],
    jobs: &[(usize, u64)],
    sh: &Shared,
    threads: usize,
) -> Vec<Vec<Outcome>> {
    let next = AtomicUsize::new(0);
    let done = Mutex::new(vec![None; jobs.len()]);
    let finished = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(scn, seed)) = jobs.get(j) else {
                    break;
                };
                let outcome = run(&scenarios[scn], sh, seed);
                done.lock().expect("results")[j] = Some(outcome);
                let f = finished.fetch_add(1, Ordering::Relaxed) + 1;
                if f.is_multiple_of((jobs.len() / 20).max(1)) || f == jobs.len() {
                    eprint!("\r  {f}/{} runs", jobs.len());
                }
            });
        }
    });
    eprintln!();
    let done = done.into_inner().expect("results");
    let mut by_scenario: Vec<Vec<Outcome>> = scenarios.iter().map(|_| Vec::new()).collect();
    for (&(scn, _), o) in jobs.iter().zip(done) {
        by_scenario[scn].push(o.expect("every job ran"));
    }
    by_scenario
}

/// One-sided 95 % upper confidence bound (Clopper–Pearson) for a proportion, k of n.
fn upper95(k: usize, n: usize) -> f64 {
    if k >= n {
        return 1.0;
    }
    let cdf = |p: f64| -> f64 {
        let mut term = (1.0 - p).powi(n as i32); // P(X = 0)
        let mut sum = term;
        for i in 1..=k {
            term *= (n - i + 1) as f64 / i as f64 * p / (1.0 - p);
            sum += term;
        }
        sum
    };
    let (mut lo, mut hi) = (k as f64 / n as f64, 1.0);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) > 0.05 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

fn pct(x: f64) -> String {
    let v = x * 100.0;
    if v >= 10.0 {
        format!("{v:.0} %")
    } else if v >= 0.1 {
        format!("{v:.1} %")
    } else {
        format!("{v:.2} %")
    }
}

struct Options {
    rollouts: Option<usize>,
    quick: bool,
    rates: Vec<f64>,
    false_rollbacks: bool,
    detect: bool,
    boundary: bool,
    seeds: usize,
    sampler: Sampler,
    verify_every: u64,
    threads: usize,
    slow_rate_rollouts: Option<usize>,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        rollouts: None,
        quick: false,
        rates: vec![5.0, 50.0, 500.0],
        false_rollbacks: true,
        detect: false,
        boundary: false,
        seeds: 50,
        sampler: Sampler::Alias,
        verify_every: 600,
        threads: 2,
        slow_rate_rollouts: None,
    };
    let mut args = std::env::args().skip(1);
    let number = |name: &str, v: Option<String>| -> Result<u64, String> {
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a whole number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            // `cargo bench` passes --bench to harness = false targets.
            "--bench" => {}
            "--quick" => o.quick = true,
            "--rollouts" => o.rollouts = Some(number("--rollouts", args.next())? as usize),
            "--rates" => {
                let v = args.next().ok_or("--rates needs a list such as 5,50,500")?;
                o.rates = v
                    .split(',')
                    .map(|r| {
                        r.trim()
                            .parse::<f64>()
                            .map_err(|_| format!("bad rate {r:?}"))
                    })
                    .collect::<Result<_, _>>()?;
                if o.rates.iter().any(|r| *r <= 0.0) {
                    return Err("rates must be positive".into());
                }
            }
            "--detect" => {
                o.detect = true;
                o.false_rollbacks = false;
            }
            "--boundary" => {
                o.boundary = true;
                o.false_rollbacks = false;
            }
            "--all" => {
                o.detect = true;
                o.false_rollbacks = true;
            }
            "--seeds" => o.seeds = number("--seeds", args.next())? as usize,
            "--sampler" => {
                o.sampler = match args.next().as_deref() {
                    Some("alias") => Sampler::Alias,
                    Some("box-muller") => Sampler::BoxMuller,
                    _ => return Err("--sampler is alias or box-muller".into()),
                }
            }
            "--verify-every" => o.verify_every = number("--verify-every", args.next())?,
            "--threads" => o.threads = number("--threads", args.next())?.max(1) as usize,
            "--slow-rate-rollouts" => {
                o.slow_rate_rollouts = Some(number("--slow-rate-rollouts", args.next())? as usize)
            }
            "-h" | "--help" => {
                return Err(
                    "usage: cargo bench --bench judgement -- [--quick] [--rollouts N] \
                     [--rates 5,50,500] [--detect | --boundary | --all] [--seeds N] \
                     [--sampler alias|box-muller] [--verify-every N (0: never)] [--threads N]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if o.quick {
        o.rollouts.get_or_insert(20);
        if o.seeds == 50 {
            o.seeds = 10;
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let table = Table::new();
    let sh = Shared {
        healthy: Latency::new(&table, 50.0, 0.6),
        slower: Latency::new(&table, 50.0 * SLOWER, 0.6),
        both_slower: Latency::new(&table, 50.0 * BOTH_SLOWER, 0.6),
        table,
        sampler: opts.sampler,
        verify_every: opts.verify_every,
    };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    println!("# serin judgement, simulated\n");
    println!(
        "`cargo bench --bench judgement{}{}` · sampler {:?} · {} threads · every {} ticks \
         (and the first 3 of each step) re-judged on full buckets\n",
        if args.is_empty() { "" } else { " -- " },
        args.join(" "),
        opts.sampler,
        opts.threads,
        opts.verify_every
    );
    let wall = Instant::now();
    sampler_check(&sh);
    if opts.false_rollbacks {
        false_rollbacks(&opts, &sh);
    }
    if opts.detect {
        detection(&opts, &sh);
    }
    if opts.boundary {
        boundary(&opts, &sh);
    }
    println!("\nwall time {:.1} s", wall.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}

/// Draws 10⁶ healthy latencies with each sampler and prints their quantiles beside the
/// lognormal's (recorded values are bucket tops, at most 0.1 % above the true value).
fn sampler_check(sh: &Shared) {
    let table = &sh.table;
    let n = 1_000_000;
    let qs: [(f64, f64); 4] = [
        (0.5, 0.0),
        (0.95, 1.644_853_6),
        (0.99, 2.326_347_9),
        (0.999, 3.090_232_3),
    ];
    let mut rec = Recorder::new(table);
    let mut rng = fastrand::Rng::with_seed(12_345);
    let seg = [Segment {
        requests: n,
        error_p: 0.0,
        latency: &sh.healthy,
    }];
    let line = |name: &str, values: Vec<f64>| {
        let cells: Vec<String> = values.iter().map(|v| format!("{v:.2} ms")).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    println!("| latency sampler (10⁶ draws) | p50 | p95 | p99 | p99.9 |");
    println!("|---|---:|---:|---:|---:|");
    line(
        "exact lognormal",
        qs.iter().map(|(_, z)| 50.0 * (0.6 * z).exp()).collect(),
    );
    for sampler in [Sampler::Alias, Sampler::BoxMuller] {
        let (_, counts) = rec.tick(&mut rng, table, sampler, &seg);
        let mut acc = Acc::new(table.len());
        acc.add(&counts);
        let agg = acc.aggregate(table, 0.0, High::All);
        line(
            &format!("{sampler:?}"),
            qs.iter()
                .map(|(q, _)| agg.quantile_ms(*q).unwrap_or(f64::NAN))
                .collect(),
        );
    }
    println!();
}

fn documented_scenario(
    label: &str,
    rate: f64,
    rules: Vec<Rule>,
    baseline_errors: f64,
    canary_errors: f64,
) -> Scenario {
    Scenario {
        label: label.to_string(),
        rollout: rollout(documented_steps(), Duration::from_secs(1), rules),
        traffic: Traffic::Canary { rate },
        background_errors: baseline_errors,
        canary_errors,
        fault: Fault::None,
        // Three 10-minute holds, each possibly followed by the 10-minute progress
        // deadline, then a little more (a paused rollout is still judged).
        limit_ms: 3_700_000,
    }
}

/// Runs every job, heaviest (fastest canary) first so that the threads end together.
fn run_rollouts(
    scenarios: &[Scenario],
    mut jobs: Vec<(usize, u64)>,
    sh: &Shared,
    opts: &Options,
) -> Vec<Vec<Outcome>> {
    jobs.sort_by_key(|&(scn, seed)| {
        let rate = match scenarios[scn].traffic {
            Traffic::Canary { rate } | Traffic::Total { rate } => rate,
        };
        (std::cmp::Reverse(rate as u64), scn, seed)
    });
    eprintln!("{} rollouts", jobs.len());
    let mut results = run_all(scenarios, &jobs, sh, opts.threads);
    // run_all returns each scenario's outcomes in job order: put them in seed order.
    for (scn, outcomes) in results.iter_mut().enumerate() {
        let mut seeds: Vec<u64> = jobs.iter().filter(|j| j.0 == scn).map(|j| j.1).collect();
        let mut paired: Vec<(u64, Outcome)> = seeds.drain(..).zip(outcomes.drain(..)).collect();
        paired.sort_by_key(|p| p.0);
        outcomes.extend(paired.into_iter().map(|p| p.1));
    }
    results
}

/// The table of a set of rollout scenarios, and its notes.
fn rollout_table(scenarios: &[Scenario], results: &[Vec<Outcome>]) {
    println!(
        "| row | R canary req/s | rollouts | false rollbacks | 95 % upper bound | promoted | \
         paused | mean ticks judged | closest approach ln D − ln(1/α): max (rule) / median | \
         fixed 99 % test repeated every tick | CPU s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    let mut notes = Vec::new();
    for (scn, outcomes) in scenarios.iter().zip(results) {
        let rate = match scn.traffic {
            Traffic::Canary { rate } | Traffic::Total { rate } => rate,
        };
        let n = outcomes.len();
        let mut rolled = 0;
        let mut promoted = 0;
        let mut paused = 0;
        let mut running = 0;
        let mut by_rule: Vec<(String, usize)> = Vec::new();
        for (seed, o) in outcomes.iter().enumerate() {
            match &o.end {
                End::Promoted => promoted += 1,
                End::RolledBack { rule } => {
                    rolled += 1;
                    notes.push(format!(
                        "{} R={rate} seed {seed}: rolled back at {} s by `{rule}`",
                        scn.label,
                        o.end_ms / 1000
                    ));
                    match by_rule.iter_mut().find(|(r, _)| r == rule) {
                        Some((_, c)) => *c += 1,
                        None => by_rule.push((rule.clone(), 1)),
                    }
                }
                End::Paused { reason } => {
                    paused += 1;
                    notes.push(format!(
                        "{} R={rate} seed {seed}: paused: {reason}",
                        scn.label
                    ));
                }
                End::Running => running += 1,
            }
        }
        let mean_ticks = outcomes.iter().map(|o| o.ticks as f64).sum::<f64>() / n.max(1) as f64;
        let texts: Vec<String> = scn
            .rollout
            .analysis
            .rules
            .iter()
            .map(Rule::to_string)
            .collect();
        let (mut best, mut best_rule) = (f64::NEG_INFINITY, String::new());
        let mut per_rollout = Vec::new();
        for o in outcomes {
            per_rollout.push(o.closest.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            for (c, t) in o.closest.iter().zip(&texts) {
                if *c > best {
                    best = *c;
                    best_rule = t.clone();
                }
            }
        }
        per_rollout.sort_by(f64::total_cmp);
        let median = per_rollout
            .get(per_rollout.len() / 2)
            .copied()
            .unwrap_or(f64::NAN);
        let cpu: f64 = outcomes.iter().map(|o| o.cpu.as_secs_f64()).sum();
        let naive = outcomes.iter().filter(|o| o.naive_ms.is_some()).count();
        let mut rolled_text = rolled.to_string();
        if !by_rule.is_empty() {
            let list: Vec<String> = by_rule.iter().map(|(r, c)| format!("{c}× {r}")).collect();
            let _ = write!(rolled_text, " ({})", list.join(", "));
        }
        if running > 0 {
            notes.push(format!(
                "{} R={rate}: {running} still running at the time limit",
                scn.label
            ));
        }
        println!(
            "| {} | {rate} | {n} | {rolled_text} | {} | {promoted} | {paused} | {mean_ticks:.1} \
             | {best:.1} ({best_rule}) / {median:.1} | {naive} | {cpu:.1} |",
            scn.label,
            pct(upper95(rolled, n)),
        );
    }
    let verified: u64 = results.iter().flatten().map(|o| o.verified).sum();
    println!(
        "\n95 % upper bound: one-sided Clopper–Pearson bound on P(false rollback) from these \
         rollouts alone. Closest approach: ln D − ln(1/α), a detector's value against its \
         threshold (a rollback needs ≥ 0), highest over all ticks and rules of a rollout; \
         the table gives its maximum over the rollouts (with the rule) and its median. \
         Mean ticks judged: 1 800 when every step passed as soon as its hold was over. \
         Fixed 99 % test repeated every tick: rollouts in which some rule, tested as if \
         once (one-sided, 99 %, Chernoff bounds) on the window, would have failed at some \
         tick (every rule but relative latency rules is tested this way). \
         {verified} judgements were re-computed on full buckets and agreed."
    );
    for n in notes {
        println!("\n- {n}");
    }
}

fn false_rollbacks(opts: &Options, sh: &Shared) {
    let rollouts = opts.rollouts.unwrap_or(200);
    let rows: [(&str, f64, f64, bool); 2] = [("A", 0.01, 0.02, false), ("B", 0.0005, 0.01, true)];
    let mut scenarios = Vec::new();
    let mut jobs = Vec::new();
    for &(row, bg, error_max, burn) in &rows {
        for &rate in &opts.rates {
            let n = match opts.slow_rate_rollouts {
                Some(s) if rate >= 500.0 => s.min(rollouts),
                _ => rollouts,
            };
            let idx = scenarios.len();
            scenarios.push(documented_scenario(
                row,
                rate,
                rules(error_max, burn),
                bg,
                bg,
            ));
            jobs.extend((0..n as u64).map(|seed| (idx, seed)));
        }
    }
    eprint!("false rollbacks: ");
    let results = run_rollouts(&scenarios, jobs, sh, opts);

    println!("## False rollbacks of a healthy canary\n");
    println!(
        "Rollout: steps 5 % hold 600 s, 25 % hold 600 s, 50 % hold 600 s, 100 %; analysis \
         interval 1 s, window 30 s, min_requests 50, confidence 99 %, on_failure rollback, \
         progress_deadline 10 min. Canary and baseline draw from the same distributions \
         (latency lognormal, median 50 ms, sigma 0.6, so p95 ≈ 134 ms; errors Bernoulli per \
         request). The canary gets R req/s at every step, the baseline R·(100 − w)/w \
         (at most {BASELINE_CAP} req/s); Poisson counts per tick. Seed = rollout index. \
         \"Healthy\" means within every threshold of the row's rules:\n"
    );
    for &(row, bg, error_max, burn) in &rows {
        let texts: Vec<String> = rules(error_max, burn).iter().map(Rule::to_string).collect();
        let alpha = 0.01 / texts.len() as f64;
        println!(
            "- **{row}**: background errors {}; rules `{}` (α = 1 % / {} = {} per rule; \
             relative rules half on the detector, half on the baseline's bound){}",
            pct(bg),
            texts.join("`, `"),
            texts.len(),
            alpha,
            if burn {
                ". The full documented rule set."
            } else {
                ". The documented set without `burn_rate slo 99.9% max 4` (which allows at \
                 most 0.4 % errors, so 1 % is a real breach) and with `error_rate max` 2 % \
                 instead of 1 % (so that 1 % is within it)."
            }
        );
    }
    println!();
    rollout_table(&scenarios, &results);
    if let Some(s) = opts.slow_rate_rollouts {
        println!("\nRates ≥ 500 req/s ran {s} rollouts only (--slow-rate-rollouts).");
    }
}

/// The worst case the guarantee covers: a canary exactly at a rule's threshold, with
/// that rule alone, so that its whole budget (1 %) is at stake.
fn boundary(opts: &Options, sh: &Shared) {
    let rollouts = opts.rollouts.unwrap_or(500);
    let rate = 50.0;
    let rows: Vec<(&str, Rule, f64, f64, &str)> = vec![
        (
            "C1",
            Rule::ErrorRate { max: 0.01 },
            0.01,
            0.01,
            "canary and baseline errors 1 %, exactly the rule's max",
        ),
        (
            "C2",
            Rule::Latency {
                percentile: 95.0,
                max: Duration::from_millis(135),
            },
            0.001,
            0.001,
            "latency lognormal median 50 ms sigma 0.6 for both: p95 = 134.2 ms, \
             P(latency > 135 ms) = 4.9 %",
        ),
        (
            "C3",
            Rule::ErrorRateIncrease {
                max_increase: 0.005,
            },
            0.01,
            0.015,
            "baseline errors 1 %, canary 1.5 %: exactly the allowed increase",
        ),
    ];
    let mut scenarios = Vec::new();
    let mut jobs = Vec::new();
    for (label, rule, base, canary, _) in &rows {
        let idx = scenarios.len();
        scenarios.push(documented_scenario(
            label,
            rate,
            vec![rule.clone()],
            *base,
            *canary,
        ));
        jobs.extend((0..rollouts as u64).map(|seed| (idx, seed)));
    }
    eprint!("boundary: ");
    let results = run_rollouts(&scenarios, jobs, sh, opts);
    println!("\n## A canary exactly at a threshold\n");
    println!(
        "The documented rollout and analysis settings (confidence 99 %), one rule per row so \
         that it has the whole 1 % budget; the canary sits exactly on the rule's threshold, \
         the worst case the guarantee covers (P(rollback) ≤ 1 %). R = {rate} canary req/s.\n"
    );
    for (label, rule, _, _, what) in &rows {
        println!("- **{label}**: `{rule}`; {what}.");
    }
    println!();
    rollout_table(&scenarios, &results);
}

fn detection(opts: &Options, sh: &Shared) {
    let seeds = opts.seeds;
    let mut scenarios = Vec::new();
    let mut jobs = Vec::new();
    let cases = [
        (
            "100 % 5xx from a random moment in [60 s, 61 s)",
            Fault::Errors { at_ms: 60_000 },
        ),
        (
            "every latency × 1.5 (p95 +50 %) from 60 s",
            Fault::Slower { at_ms: 60_000 },
        ),
        (
            "both versions: every latency × 3 (p95 ≈ 400 ms) from 60 s",
            Fault::BothSlower { at_ms: 60_000 },
        ),
    ];
    for (name, fault) in cases {
        for interval in [Duration::from_secs(1), Duration::from_millis(250)] {
            let idx = scenarios.len();
            scenarios.push(Scenario {
                label: format!("{name} | {} ms", interval.as_millis()),
                rollout: rollout(
                    vec![step(10, Some(3600)), step(100, None)],
                    interval,
                    rules(0.01, true),
                ),
                traffic: Traffic::Total { rate: 1000.0 },
                background_errors: 0.001,
                canary_errors: 0.001,
                fault,
                limit_ms: 60_000 + 600_000,
            });
            jobs.extend((0..seeds as u64).map(|seed| (idx, seed)));
        }
    }
    eprintln!("detection: {} runs", jobs.len());
    let results = run_all(&scenarios, &jobs, sh, opts.threads);
    let texts: Vec<String> = rules(0.01, true).iter().map(Rule::to_string).collect();
    println!("\n## Time to detect a broken canary\n");
    println!(
        "1 000 req/s in all, canary at 10 % (steps 10 % hold 3600 s, 100 %), so 100 req/s on \
         the canary and 900 on the baseline. Healthy: 0.1 % errors, latency lognormal median \
         50 ms sigma 0.6. Rules: the full documented set `{}`; window 30 s, confidence 99 %. \
         Time to detect: from the fault's onset to the end of the tick whose verdict is Fail \
         (the tick during which the fault starts carries it for the rest of that tick). \
         {seeds} seeds each; a run that has not failed 600 s after the onset counts as \
         not detected. The last fault hits both versions at once (something both depend \
         on): the canary keeps every rule, and any rollback is a false one.\n",
        texts.join("`, `")
    );
    println!("| fault | interval | detected | median | mean | max | min | failing rule | failed before the fault | CPU s |");
    println!("|---|---|---:|---:|---:|---:|---:|---|---:|---:|");
    for (scn, outcomes) in scenarios.iter().zip(&results) {
        let mut times: Vec<f64> = Vec::new();
        let mut early = 0;
        let mut by_rule: Vec<(String, usize)> = Vec::new();
        for o in outcomes {
            if let End::RolledBack { rule } = &o.end {
                if (o.end_ms as f64) < o.onset_ms {
                    early += 1;
                    continue;
                }
                times.push((o.end_ms as f64 - o.onset_ms) / 1000.0);
                match by_rule.iter_mut().find(|(r, _)| r == rule) {
                    Some((_, c)) => *c += 1,
                    None => by_rule.push((rule.clone(), 1)),
                }
            }
        }
        times.sort_by(f64::total_cmp);
        let median = match times.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => times[n / 2],
            n => 0.5 * (times[n / 2 - 1] + times[n / 2]),
        };
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        let secs = |t: Option<f64>| match t {
            Some(t) if t.is_finite() => format!("{t:.2} s"),
            _ => "–".to_string(),
        };
        let rules: Vec<String> = by_rule.iter().map(|(r, c)| format!("{c}× {r}")).collect();
        let cpu: f64 = outcomes.iter().map(|o| o.cpu.as_secs_f64()).sum();
        println!(
            "| {} | {}/{} | {} | {} | {} | {} | {} | {early} | {cpu:.1} |",
            scn.label,
            times.len(),
            outcomes.len(),
            secs(Some(median)),
            secs(Some(mean)),
            secs(times.last().copied()),
            secs(times.first().copied()),
            rules.join(", "),
        );
    }
}
