//! The statistics behind a verdict: confidence bounds for proportions, and the
//! Shiryaev–Roberts e-detector that keeps a rule's false-alarm probability below its
//! budget over a whole rollout however often it is checked (docs/analysis.md).

use serde::{Deserialize, Serialize};

/// Bernoulli KL divergence KL(a ‖ b), in nats.
pub fn kl(a: f64, b: f64) -> f64 {
    let term = |x: f64, y: f64| if x <= 0.0 { 0.0 } else { x * (x / y).ln() };
    let b = b.clamp(1e-300, 1.0 - 1e-16);
    term(a, b) + term(1.0 - a, 1.0 - b)
}

/// Upper confidence bound for a proportion from `k` events in `n` trials, at level
/// `alpha`: the largest p with n·KL(k/n ‖ p) ≤ ln(1/alpha) (Chernoff; valid for one look).
pub fn upper_bound(k: u64, n: u64, alpha: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let p_hat = k as f64 / n as f64;
    let budget = (1.0 / alpha).ln() / n as f64;
    if p_hat >= 1.0 {
        return 1.0;
    }
    bisect(p_hat, 1.0, |p| kl(p_hat, p) <= budget)
}

/// Lower confidence bound, the mirror of [`upper_bound`].
pub fn lower_bound(k: u64, n: u64, alpha: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    1.0 - upper_bound(n - k, n, alpha)
}

/// The smallest count r with P(Bin(n, p) ≥ r) ≤ `alpha`, computed exactly (summing the
/// binomial's probabilities); `None` when even P(Bin(n, p) = n) = pⁿ exceeds it.
///
/// It starts from the Chernoff rank ⌈u·n⌉, where n·KL(u ‖ p) = ln(1/alpha), whose tail
/// is at most `alpha` (P(Bin(n, p) ≥ n·u) ≤ e^(−n·KL(u ‖ p))), and steps down while the
/// exact tail stays within `alpha`: the Chernoff bound overstates the tail by about a
/// factor z·√(2π) at z standard deviations, so the exact rank is lower by a few
/// standard deviations' tenths, a few dozen steps.
pub fn binomial_upper_rank(n: u64, p: f64, alpha: f64) -> Option<u64> {
    if n == 0 || p <= 0.0 {
        return (n > 0).then_some(1);
    }
    let budget = (1.0 / alpha).ln() / n as f64;
    if kl(1.0, p) < budget {
        return None;
    }
    let (mut lo, mut hi) = (p, 1.0);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if kl(mid, p) >= budget {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let mut rank = ((hi * n as f64).ceil() as u64).clamp(1, n);
    // Probabilities relative to alpha, so that none underflows: ln P(X = k) − ln alpha.
    let log_alpha = alpha.ln();
    let rel = |k: u64| (ln_binomial_pmf(n, k, p) - log_alpha).exp();
    let mut tail = 0.0;
    for k in rank..=n {
        let term = rel(k);
        tail += term;
        if term < tail * 1e-17 && (k as f64) > n as f64 * p {
            break;
        }
    }
    while rank > 1 {
        let more = tail + rel(rank - 1);
        if more > 1.0 {
            break;
        }
        tail = more;
        rank -= 1;
    }
    Some(rank)
}

/// ln P(Bin(n, p) = k).
fn ln_binomial_pmf(n: u64, k: u64, p: f64) -> f64 {
    let (n, k) = (n as f64, k as f64);
    ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0)
        + k * p.ln()
        + (n - k) * (1.0 - p).ln()
}

/// ln Γ(x) for x ≥ 1: Stirling's series, after shifting x to at least 10 (error below
/// 1e-12, far finer than a rank needs).
fn ln_gamma(mut x: f64) -> f64 {
    let mut shift = 0.0;
    while x < 10.0 {
        shift -= x.ln();
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    shift + (x - 0.5) * x.ln() - x
        + 0.5 * std::f64::consts::TAU.ln()
        + inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 / 1680.0)))
}

/// Largest x in [lo, hi] with `ok(x)`, given `ok(lo)` and `ok` true then false.
fn bisect(mut lo: f64, mut hi: f64, ok: impl Fn(f64) -> bool) -> f64 {
    if ok(hi) {
        return hi;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if ok(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Odds ratios of the alternatives the detector mixes over: 1.25× to 4096×.
pub const ODDS_RATIOS: [f64; 12] = [
    1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0, 50.0, 150.0, 600.0, 4096.0,
];

/// A mixture Shiryaev–Roberts e-detector for "the proportion of events exceeds θ",
/// with weighted restarts and a fixed threshold.
///
/// Each tick t brings a batch (n, k) and the θ of the null for that tick. For each
/// alternative q_j (θ's odds times an odds ratio) the likelihood ratio
/// LR_j = (q_j/θ)^k ((1−q_j)/(1−θ))^(n−k) has expectation ≤ 1 whenever the true
/// proportion is ≤ θ. The statistic R_j ← (R_j + w_t)·LR_j sums, over every possible
/// start τ of a change, w_τ times the likelihood ratio of the ticks since τ, and
/// D = mean_j R_j. The weights w_t ([`weight`]) sum to 1, so D plus the weights still
/// to come is a nonnegative supermartingale starting at 1, and by Ville's inequality
/// P(D ever reaches 1/α) ≤ α ([`log_threshold`]). After a change the statistic holds the
/// evidence since the change, at the cost ln(1/w_τ) of its start, however long the
/// healthy past: a long healthy past does not dilute new evidence.
///
/// Saved (serde) as `{"ticks": t, "log_r": [ln R_1, …, ln R_12]}`: t the ticks with
/// data seen, then ln R_j as a JSON number for each alternative in the order of
/// [`ODDS_RATIOS`], `null` where R_j = 0 (ln R_j = −∞, which JSON cannot write). A
/// saved detector restored with [`Detector::deserialize`] goes on exactly where it
/// stopped (docs/analysis.md, "Restarts").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "Saved", try_from = "Saved")]
pub struct Detector {
    /// ln R_j per alternative (−∞ when R_j = 0).
    log_r: [f64; ODDS_RATIOS.len()],
    /// Ticks with data seen so far (the t of the weights).
    pub ticks: u64,
}

/// A [`Detector`] as it is saved.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    ticks: u64,
    log_r: Vec<Option<f64>>,
}

impl From<Detector> for Saved {
    fn from(d: Detector) -> Self {
        Saved {
            ticks: d.ticks,
            log_r: d
                .log_r
                .iter()
                .map(|&r| r.is_finite().then_some(r))
                .collect(),
        }
    }
}

impl TryFrom<Saved> for Detector {
    type Error = String;

    fn try_from(saved: Saved) -> Result<Self, String> {
        let want = ODDS_RATIOS.len();
        if saved.log_r.len() != want {
            return Err(format!(
                "a detector has {} values in log_r, {want} expected (one per alternative)",
                saved.log_r.len()
            ));
        }
        let mut log_r = [f64::NEG_INFINITY; ODDS_RATIOS.len()];
        for (r, v) in log_r.iter_mut().zip(saved.log_r) {
            *r = v.unwrap_or(f64::NEG_INFINITY);
        }
        Ok(Detector {
            log_r,
            ticks: saved.ticks,
        })
    }
}

impl Default for Detector {
    fn default() -> Self {
        Self {
            log_r: [f64::NEG_INFINITY; ODDS_RATIOS.len()],
            ticks: 0,
        }
    }
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

impl Detector {
    /// Adds one tick's batch: `k` events among `n` trials, null proportion `theta`.
    /// A tick without trials changes nothing.
    pub fn update(&mut self, n: u64, k: u64, theta: f64) {
        if n == 0 {
            return;
        }
        self.ticks += 1;
        if theta >= 1.0 {
            // No proportion exceeds 1: the likelihood ratio of every alternative is 0.
            self.log_r = [f64::NEG_INFINITY; ODDS_RATIOS.len()];
            return;
        }
        let log_w = weight(self.ticks).ln();
        let theta = theta.max(1e-9);
        let odds = theta / (1.0 - theta);
        let (k, n) = (k as f64, n as f64);
        for (r, &ratio) in self.log_r.iter_mut().zip(ODDS_RATIOS.iter()) {
            let q_odds = odds * ratio;
            let q = q_odds / (1.0 + q_odds);
            let log_lr = k * (q / theta).ln() + (n - k) * ((1.0 - q) / (1.0 - theta)).ln();
            *r = log_add_exp(*r, log_w) + log_lr;
        }
    }

    /// ln D, the log of the detector's value.
    pub fn log_value(&self) -> f64 {
        let sum = self
            .log_r
            .iter()
            .fold(f64::NEG_INFINITY, |acc, &r| log_add_exp(acc, r));
        sum - (ODDS_RATIOS.len() as f64).ln()
    }

    /// Whether the detector has crossed its threshold for false-alarm budget `alpha`.
    pub fn alarmed(&self, alpha: f64) -> bool {
        self.ticks > 0 && self.log_value() >= log_threshold(alpha)
    }
}

/// ln of the detector's threshold for a false-alarm budget `alpha`: ln(1/α), the same
/// at every tick (Ville's inequality; see [`Detector`]).
pub fn log_threshold(alpha: f64) -> f64 {
    -alpha.ln()
}

/// Where the weights of [`weight`] stop being about flat: c in w_t, in ticks.
const FLAT_TICKS: f64 = 20.0;

/// The weight of the t-th tick with data (1-based) as the start of a change:
/// w_t = ln c · (1/ln(t − 1 + c) − 1/ln(t + c)), c = 20. The weights sum to exactly 1
/// over all t (the sum telescopes to ln c / ln c), are about flat over the first c
/// ticks and then fall like 1/(t ln² t): starting the evidence at tick 1 costs
/// ln(1/w) ≈ 4.1 nats, at tick 60 (a minute of 1 s ticks) 6.2, at tick 1 800 10.4.
/// A smaller c would make the first ticks cheaper and every later one dearer; a fault
/// is no likelier in the first seconds of a rollout than later.
pub fn weight(t: u64) -> f64 {
    let a = (t.max(1) as f64) - 1.0 + FLAT_TICKS;
    // 1/ln a − 1/ln(a + 1) = ln(1 + 1/a) / (ln a · ln(a + 1)), without cancellation.
    FLAT_TICKS.ln() * (1.0 / a).ln_1p() / (a.ln() * (a + 1.0).ln())
}

/// The share of a budget given to the look with index `t` (1-based) when looks are
/// tested one at a time: α_t = α·w_t ([`weight`]), which sums to α over all t.
pub fn spend(alpha: f64, t: u64) -> f64 {
    alpha * weight(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_contain_the_estimate_and_shrink_with_data() {
        let (lo, hi) = (lower_bound(10, 1000, 0.01), upper_bound(10, 1000, 0.01));
        assert!(lo < 0.01 && 0.01 < hi, "{lo} {hi}");
        let hi_more = upper_bound(100, 10_000, 0.01);
        assert!(hi_more < hi);
        assert_eq!(upper_bound(0, 0, 0.01), 1.0);
        assert_eq!(lower_bound(0, 0, 0.01), 0.0);
        assert_eq!(upper_bound(5, 5, 0.01), 1.0);
        // 0 of 1000: the bound is about ln(100)/1000.
        let zero = upper_bound(0, 1000, 0.01);
        assert!((0.004..0.005).contains(&zero), "{zero}");
    }

    #[test]
    fn upper_bound_covers_the_truth_at_its_level() {
        // Binomial(200, 0.05) drawn 20 000 times: the 5 % bound misses < 5 % of the time.
        let mut rng = fastrand::Rng::with_seed(7);
        let misses = (0..20_000)
            .filter(|_| {
                let k = (0..200).filter(|_| rng.f64() < 0.05).count() as u64;
                upper_bound(k, 200, 0.05) < 0.05
            })
            .count();
        assert!(misses < 1000, "{misses}");
    }

    /// The figures docs/analysis.md quotes ("The detector"), to one decimal.
    #[test]
    fn the_figures_the_docs_quote() {
        let one = |x: f64| (x * 10.0).round() / 10.0;
        let cost = |t: u64| one(-weight(t).ln());
        assert_eq!(
            [cost(1), cost(60), cost(600), cost(1800), cost(3600)],
            [4.1, 6.2, 9.1, 10.4, 11.3]
        );
        // Five rules at 99 %: 0.2 % each; a relative rule's detector has half of it.
        assert_eq!(
            [one(log_threshold(0.002)), one(log_threshold(0.001))],
            [6.2, 6.9]
        );
        assert_eq!(one((ODDS_RATIOS.len() as f64).ln()), 2.5);
        // 20 of 20 and 10 of 10 failing against 1 %: ln LR of the 4096× alternative.
        let ln_lr = |k: u64, n: u64| {
            let mut d = Detector::default();
            d.update(n, k, 0.01);
            d.log_r[ODDS_RATIOS.len() - 1] - weight(1).ln()
        };
        assert_eq!([one(ln_lr(20, 20)), one(ln_lr(10, 10))], [91.6, 45.8]);
        let mut d = Detector::default();
        d.update(20, 20, 0.01);
        assert_eq!(one(d.log_value()), 85.1);
    }

    #[test]
    fn twenty_of_twenty_failures_alarm_at_once() {
        let mut d = Detector::default();
        d.update(20, 20, 0.01);
        assert!(d.alarmed(0.01 / 6.0), "ln D = {}", d.log_value());
    }

    #[test]
    fn a_healthy_stream_stays_quiet_and_a_late_fault_is_caught_fast() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut d = Detector::default();
        for _ in 0..3600 {
            let k = (0..100).filter(|_| rng.f64() < 0.005).count() as u64;
            d.update(100, k, 0.01);
            assert!(!d.alarmed(0.001));
        }
        // Then every request fails: one tick is enough.
        d.update(100, 100, 0.01);
        assert!(d.alarmed(0.001));
    }

    #[test]
    fn a_persistent_small_breach_is_caught_eventually() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut d = Detector::default();
        let mut ticks = 0;
        while !d.alarmed(0.01) && ticks < 2000 {
            let k = (0..100).filter(|_| rng.f64() < 0.03).count() as u64;
            d.update(100, k, 0.01);
            ticks += 1;
        }
        assert!(ticks < 200, "took {ticks} ticks to see 3 % against 1 %");
    }

    #[test]
    fn the_weights_sum_to_one_and_fall_slowly() {
        // The partial sums telescope to 1 − ln c / ln(T + c).
        for big in [10u64, 1000, 100_000] {
            let total: f64 = (1..=big).map(weight).sum();
            let want = 1.0 - FLAT_TICKS.ln() / (big as f64 + FLAT_TICKS).ln();
            assert!((total - want).abs() < 1e-9, "{big}: {total} vs {want}");
        }
        assert!(weight(1 << 40) > 0.0 && weight(1 << 40) < weight(1 << 39));
        assert_eq!(spend(0.01, 7), 0.01 * weight(7));
        assert!((log_threshold(0.01) - 100f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn the_binomial_rank_is_exact_and_below_chernoffs() {
        // Brute force: P(Bin(n, p) ≥ r) from the probabilities, by the recurrence.
        let tail = |n: u64, p: f64, r: u64| -> f64 {
            let mut pmf = (1.0 - p).powi(n as i32);
            let mut sum = 0.0;
            for k in 0..=n {
                if k >= r {
                    sum += pmf;
                }
                pmf *= (n - k) as f64 / (k + 1) as f64 * p / (1.0 - p);
            }
            sum
        };
        for (n, p, alpha) in [(200, 0.95, 0.01), (500, 0.5, 1e-6), (60, 0.9, 0.2)] {
            let r = binomial_upper_rank(n, p, alpha).expect("a rank");
            assert!(tail(n, p, r) <= alpha, "{n} {p} {alpha}: {r}");
            assert!(
                tail(n, p, r - 1) > alpha,
                "{n} {p} {alpha}: {r} is not the smallest"
            );
        }
        // 0.95^20 = 0.36 > 0.01: no count of 20 is that unlikely.
        assert_eq!(binomial_upper_rank(20, 0.95, 0.01), None);
        // Large n: the exact rank lies below the Chernoff one.
        let (n, p, alpha) = (27_000, 0.95, 1e-6);
        let budget = (1.0f64 / alpha).ln() / n as f64;
        let mut u = p;
        while kl(u, p) < budget {
            u += 1e-6;
        }
        let chernoff = (u * n as f64).ceil() as u64;
        let exact = binomial_upper_rank(n, p, alpha).expect("a rank");
        assert!(
            exact + 10 < chernoff && exact > 25_650 + 100,
            "{exact} {chernoff}"
        );
    }

    #[test]
    fn a_saved_detector_goes_on_where_it_stopped() {
        let mut d = Detector::default();
        d.update(100, 3, 0.01);
        d.update(100, 0, 0.01);
        let json = serde_json::to_string(&d).expect("encode");
        assert!(json.starts_with(r#"{"ticks":2,"log_r":[-"#), "{json}");
        let back: Detector = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, d);
        let (mut a, mut b) = (d, back);
        a.update(100, 40, 0.01);
        b.update(100, 40, 0.01);
        assert_eq!(a.log_value(), b.log_value());

        // Before its first tick every R_j is 0: ln R_j = −∞, which JSON cannot write.
        let fresh = serde_json::to_string(&Detector::default()).expect("encode");
        assert_eq!(
            fresh,
            r#"{"ticks":0,"log_r":[null,null,null,null,null,null,null,null,null,null,null,null]}"#
        );
        let back: Detector = serde_json::from_str(&fresh).expect("decode");
        assert_eq!(back, Detector::default());
        let short = serde_json::from_str::<Detector>(r#"{"ticks":1,"log_r":[0.5]}"#)
            .expect_err("one value");
        assert!(short.to_string().contains("12 expected"), "{short}");
    }

    /// docs/analysis.md ("Restarts") shows how detectors are saved: a detector after 61
    /// ticks of a canary exactly at its threshold (5 of 100 requests against θ = 5 %),
    /// and one before its first tick.
    #[test]
    fn the_saved_detectors_the_docs_show() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/analysis.md"))
                .expect("docs/analysis.md");
        let block = docs
            .split("## Restarts")
            .nth(1)
            .and_then(|s| s.split("```json\n").nth(1))
            .and_then(|s| s.split("```").next())
            .expect("the example of saved detectors");
        let shown: serde_json::Value =
            serde_json::from_str(&format!("{{{block}}}")).expect("the example is JSON");
        let mut d = Detector::default();
        for _ in 0..61 {
            d.update(100, 5, 0.05);
        }
        let real = serde_json::json!({ "detectors": [d, Detector::default()] });
        let (shown, real) = (&shown["detectors"], &real["detectors"]);
        for i in 0..2 {
            assert_eq!(shown[i]["ticks"], real[i]["ticks"], "detector {i}");
            let (a, b) = (&shown[i]["log_r"], &real[i]["log_r"]);
            for j in 0..ODDS_RATIOS.len() {
                match (a[j].as_f64(), b[j].as_f64()) {
                    (Some(x), Some(y)) => assert!((x - y).abs() < 0.006, "{i} {j}: {x} vs {y}"),
                    (x, y) => assert_eq!(x, y, "{i} {j}"),
                }
            }
        }
    }

    #[test]
    fn ticks_without_data_do_not_count() {
        let mut d = Detector::default();
        d.update(0, 0, 0.01);
        assert_eq!(d.ticks, 0);
        assert!(!d.alarmed(0.5));
        assert_eq!(d, Detector::default());
    }
}
