//! Each rule compiled once into the test it is: which requests are trials, which of
//! them are failures, the largest share of failures a canary keeping the rule can have
//! (θ, the null), and for relative rules how the baseline sets the cutoff or θ; plus the
//! number the rule states and the limit it must keep, for the point checks, the breach
//! summary and the notifications.
//!
//! This is the only place that knows what each kind of rule means. The judgement
//! ([`crate::analysis`]), the control loop's notifications and the judgement
//! benchmark's simulation all work on a [`CompiledRule`]; adding a kind of rule touches
//! the schema ([`crate::spec::Rule`]), the config's validation and [`compile`].

use std::fmt;

use crate::spec::{Analysis, Rule};
use crate::stats;
use crate::window::Aggregate;

/// An analysis compiled once, when its spec is read: its rules as tests, and what a
/// Pass needs.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledAnalysis {
    pub rules: Vec<CompiledRule>,
    /// Canary requests since the step began needed to pass it.
    pub min_requests: u64,
}

/// A rule of an analysis, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    /// Its position in the analysis's rules (the detector it feeds has the same).
    pub index: usize,
    /// As written, e.g. `error_rate max 1%`.
    pub text: String,
    /// `error_rate`, `latency`, `burn_rate` or `success`.
    pub kind: &'static str,
    /// Its share of the false-alarm budget.
    pub budget: Budget,
    pub test: Test,
    pub value: Value,
}

/// A one-sided test on a proportion: among the canary's trials in a tick, failures
/// occur with probability at most θ when the canary keeps the rule (docs/analysis.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Test {
    pub events: Events,
    pub null: Null,
}

/// Which requests are trials, and which of them count as failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Events {
    /// Trials: requests. Failures: errors.
    Errors,
    /// Trials: requests with a latency. Failures: those certainly slower than the cutoff
    /// (their whole histogram bucket above it).
    SlowerThan(Cutoff),
    /// Trials: requests matching the `success` rule counted in `slot`. Failures: those
    /// not answered 2xx/3xx.
    Unsuccessful { slot: usize },
    /// Trials: copied requests whose two answers were compared. Failures: those whose
    /// answers differed. Read from the comparisons' numbers (`requests`: compared,
    /// `errors`: differed), which [`crate::analysis::Input::mismatch`] gives during a
    /// shadow step.
    Mismatches,
}

/// The latency a request must certainly exceed to count as a failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cutoff {
    Fixed {
        us: u64,
    },
    /// `factor` × the baseline's `p`-quantile: its upper bound over the window, or its
    /// value in the same tick less one standard error when that is higher.
    Baseline {
        p: f64,
        factor: f64,
    },
}

/// θ, the null's share of failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Null {
    Fixed(f64),
    /// The baseline's error rate plus `increase`: its upper bound over the window, or
    /// its rate in the same tick less one standard error when that is higher.
    BaselinePlus {
        increase: f64,
    },
}

/// The number a rule states and the limit it must keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// The error rate, at most `max`.
    ErrorRate { max: f64 },
    /// The error rate divided by the error budget `per` (1 − slo), at most `max`.
    BurnRate { per: f64, max: f64 },
    /// The `p`-quantile of latency (`percentile` = 100·p, as written), at most `max_ms`.
    Quantile {
        p: f64,
        percentile: f64,
        max_ms: f64,
    },
    /// The share of matching requests answered 2xx/3xx, at least `min`.
    SuccessShare { slot: usize, min: f64 },
    /// The canary's error rate minus the baseline's, at most `increase`.
    ErrorRateIncrease { increase: f64 },
    /// The canary's `p`-quantile, at most `factor` × the baseline's.
    QuantileRatio {
        p: f64,
        percentile: f64,
        factor: f64,
    },
    /// The share of compared copies whose answers differed, at most `max`.
    MismatchShare { max: f64 },
}

/// A rule's share of the false-alarm budget 1 − confidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// For the rule's detector.
    pub detector: f64,
    /// For a relative rule's baseline bounds, spent over looks with [`stats::spend`]
    /// (0 for an absolute rule).
    pub baseline: f64,
}

/// Compiles every rule of `analysis`, in order: 1 − confidence is split evenly over
/// the rules, and a relative rule gives half of its share to its detector and half to
/// its baseline bounds, so the shares sum to 1 − confidence (docs/analysis.md, "The
/// budget").
pub fn compile(analysis: &Analysis) -> CompiledAnalysis {
    let share = (1.0 - analysis.confidence) / analysis.rules.len().max(1) as f64;
    let rules = analysis
        .rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let (test, value) = test_of(rule);
            let budget = if test.uses_baseline() {
                Budget {
                    detector: share / 2.0,
                    baseline: share / 2.0,
                }
            } else {
                Budget {
                    detector: share,
                    baseline: 0.0,
                }
            };
            CompiledRule {
                index,
                text: rule.to_string(),
                kind: rule.kind(),
                budget,
                test,
                value,
            }
        })
        .collect();
    CompiledAnalysis {
        rules,
        min_requests: analysis.min_requests,
    }
}

fn test_of(rule: &Rule) -> (Test, Value) {
    let fixed = |events, theta| Test {
        events,
        null: Null::Fixed(theta),
    };
    match *rule {
        Rule::ErrorRate { max } => (fixed(Events::Errors, max), Value::ErrorRate { max }),
        Rule::BurnRate { slo, max } => {
            let per = 1.0 - slo;
            (
                fixed(Events::Errors, max * per),
                Value::BurnRate { per, max },
            )
        }
        Rule::Latency { percentile, max } => {
            let p = percentile / 100.0;
            let us = max.as_micros().min(u128::from(u64::MAX)) as u64;
            (
                fixed(Events::SlowerThan(Cutoff::Fixed { us }), 1.0 - p),
                Value::Quantile {
                    p,
                    percentile,
                    max_ms: max.as_secs_f64() * 1000.0,
                },
            )
        }
        Rule::Success { min, slot, .. } => (
            fixed(Events::Unsuccessful { slot }, 1.0 - min),
            Value::SuccessShare { slot, min },
        ),
        Rule::Mismatch { max } => (fixed(Events::Mismatches, max), Value::MismatchShare { max }),
        Rule::ErrorRateIncrease { max_increase } => (
            Test {
                events: Events::Errors,
                null: Null::BaselinePlus {
                    increase: max_increase,
                },
            },
            Value::ErrorRateIncrease {
                increase: max_increase,
            },
        ),
        Rule::LatencyIncrease {
            percentile,
            max_increase,
        } => {
            let p = percentile / 100.0;
            let factor = 1.0 + max_increase;
            (
                fixed(Events::SlowerThan(Cutoff::Baseline { p, factor }), 1.0 - p),
                Value::QuantileRatio {
                    p,
                    percentile,
                    factor,
                },
            )
        }
    }
}

impl Test {
    /// Whether the baseline sets the cutoff or θ (a relative rule).
    pub fn uses_baseline(&self) -> bool {
        matches!(self.events, Events::SlowerThan(Cutoff::Baseline { .. }))
            || matches!(self.null, Null::BaselinePlus { .. })
    }
}

/// What a tick gives a rule's detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batch {
    pub trials: u64,
    pub failures: u64,
    /// The null's share of failures for this tick.
    pub theta: f64,
}

/// The numbers a relative rule compares the canary's tick with.
#[derive(Debug, Clone, Copy)]
pub struct Baseline<'a> {
    /// The baseline over the window.
    pub window: &'a Aggregate,
    /// The baseline over the same tick as the canary's batch: an incident that hits
    /// both versions at once raises the cutoff or θ with it.
    pub tick: &'a Aggregate,
    /// Bounds over the window are taken at this level (the look's share of the rule's
    /// baseline budget).
    pub level: f64,
}

impl CompiledRule {
    /// This tick's batch of the canary's numbers `tick`: trials, failures and θ. `None`
    /// when it gives no evidence: a relative rule without a `baseline` (no baseline
    /// weight) or without a bound at its level, or θ ≥ 1 (no share of failures can
    /// exceed it).
    pub fn batch(&self, tick: &Aggregate, baseline: Option<Baseline<'_>>) -> Option<Batch> {
        let (trials, failures) = match self.test.events {
            Events::Errors | Events::Mismatches => (tick.requests, tick.errors),
            Events::SlowerThan(cutoff) => {
                let us = match cutoff {
                    Cutoff::Fixed { us } => us,
                    Cutoff::Baseline { p, factor } => {
                        let b = baseline?;
                        let upper = quantile_upper_us(b.window, p, b.level)?;
                        let now = quantile_lower_us(b.tick, p, SAME_TICK_LEVEL).unwrap_or(0);
                        (upper.max(now) as f64 * factor) as u64
                    }
                };
                (tick.latency_count(), tick.count_above(us))
            }
            Events::Unsuccessful { slot } => {
                let s = tick.success.get(slot).copied().unwrap_or_default();
                (s.matched, s.matched - s.succeeded)
            }
        };
        let theta = match self.test.null {
            Null::Fixed(theta) => theta,
            Null::BaselinePlus { increase } => {
                let b = baseline?;
                if b.window.requests == 0 {
                    return None;
                }
                let upper = stats::upper_bound(b.window.errors, b.window.requests, b.level);
                let now = stats::lower_bound(b.tick.errors, b.tick.requests, SAME_TICK_LEVEL);
                upper.max(now) + increase
            }
        };
        (theta < 1.0).then_some(Batch {
            trials,
            failures,
            theta,
        })
    }

    /// The rule's number on the canary's numbers `canary` (and the baseline's
    /// `baseline`, for a relative rule), against its limit.
    pub fn observe(&self, canary: &Aggregate, baseline: &Aggregate) -> Observation {
        let seen = |value: f64, limit: f64| {
            Observation::Seen(Observed {
                value,
                limit,
                canary: value,
                baseline: None,
            })
        };
        let relative =
            |c: Option<f64>, b: Option<f64>, seen: &dyn Fn(f64, f64) -> Observed| match (c, b) {
                (_, None) => Observation::NoBaseline,
                (None, Some(_)) => Observation::NoCanary,
                (Some(c), Some(b)) => Observation::Seen(seen(c, b)),
            };
        let or_none = |o: Option<Observation>| o.unwrap_or(Observation::NoCanary);
        match self.value {
            Value::ErrorRate { max } | Value::MismatchShare { max } => {
                or_none(canary.error_rate().map(|r| seen(r, max)))
            }
            Value::BurnRate { per, max } => or_none(canary.error_rate().map(|r| {
                Observation::Seen(Observed {
                    value: r / per,
                    limit: max,
                    canary: r,
                    baseline: None,
                })
            })),
            Value::Quantile { p, max_ms, .. } => {
                or_none(canary.quantile_ms(p).map(|ms| seen(ms, max_ms)))
            }
            Value::SuccessShare { slot, min } => {
                let s = canary.success.get(slot).copied().unwrap_or_default();
                or_none((s.matched > 0).then(|| seen(s.succeeded as f64 / s.matched as f64, min)))
            }
            Value::ErrorRateIncrease { increase } => {
                relative(canary.error_rate(), baseline.error_rate(), &|c, b| {
                    Observed {
                        value: c - b,
                        limit: increase,
                        canary: c,
                        baseline: Some(b),
                    }
                })
            }
            Value::QuantileRatio { p, factor, .. } => {
                relative(canary.quantile_ms(p), baseline.quantile_ms(p), &|c, b| {
                    Observed {
                        value: c,
                        limit: b * factor,
                        canary: c,
                        baseline: Some(b),
                    }
                })
            }
        }
    }

    /// Whether `o` breaks the limit: below it for a success share, above it for
    /// everything else.
    pub fn breaks(&self, o: &Observed) -> bool {
        match self.value {
            Value::SuccessShare { .. } => o.value < o.limit,
            _ => o.value > o.limit,
        }
    }

    /// Whether a step can pass without canary numbers for this rule: a `success` rule
    /// needs a matching request, a `mismatch` rule (in a shadow step) a compared copy;
    /// other rules have nothing to hold for.
    pub fn needs_canary_data(&self) -> bool {
        matches!(
            self.test.events,
            Events::Unsuccessful { .. } | Events::Mismatches
        )
    }

    /// Whether the rule reads the comparisons of copied requests (`mismatch`), not the
    /// canary's own numbers.
    pub fn reads_mismatches(&self) -> bool {
        matches!(self.test.events, Events::Mismatches)
    }

    /// Whether the rule compares the canary with the baseline.
    pub fn is_relative(&self) -> bool {
        self.test.uses_baseline()
    }

    /// The latency percentile the rule reads from spans of numbers (a fraction), if any.
    pub fn quantile(&self) -> Option<f64> {
        match self.value {
            Value::Quantile { p, .. } | Value::QuantileRatio { p, .. } => Some(p),
            _ => None,
        }
    }

    /// A breach in words, the rule's number over `span` against its limit, e.g.
    /// `canary error rate 25% against max 1%` over the window, `canary p90 350ms in
    /// the newest tick against max 100ms` over the tick.
    pub fn summary(&self, observed: Option<Observed>, span: Span) -> String {
        let Some(o) = observed else {
            return "canary over its threshold in the newest ticks".to_string();
        };
        let (v, t) = (o.value, o.limit);
        let s = span.words();
        match self.value {
            Value::ErrorRate { .. } => {
                format!("canary error rate {}{s} against max {}", Pct(v), Pct(t))
            }
            Value::ErrorRateIncrease { .. } => format!(
                "canary error rate {} above the baseline's{s}, against max_increase {}",
                Pct(v),
                Pct(t)
            ),
            Value::Quantile { percentile, .. } => {
                format!("canary p{percentile} {}{s} against max {}", Ms(v), Ms(t))
            }
            Value::QuantileRatio { percentile, .. } => format!(
                "canary p{percentile} {}{s} against {} allowed from the baseline{}",
                Ms(v),
                Ms(t),
                span.again()
            ),
            Value::BurnRate { .. } => format!("canary burn rate {v:.2}{s} against max {t}"),
            Value::SuccessShare { .. } => {
                format!("canary success {}{s} against min {}", Pct(v), Pct(t))
            }
            Value::MismatchShare { .. } => format!(
                "canary answered {} of compared copies differently from the baseline{s}, against max {}",
                Pct(v),
                Pct(t)
            ),
        }
    }

    /// Why numbers over the limit hold a step, e.g. `canary error rate 2% over 1%`.
    pub fn over_limit(&self, o: &Observed) -> String {
        let (v, t) = (o.value, o.limit);
        let b = o.baseline.unwrap_or(f64::NAN);
        match self.value {
            Value::ErrorRate { .. } => format!("canary error rate {} over {}", Pct(v), Pct(t)),
            Value::BurnRate { .. } => format!("canary burn rate {v:.2} over {t}"),
            Value::Quantile { percentile, .. } => {
                format!("canary p{percentile} {} over {}", Ms(v), Ms(t))
            }
            Value::SuccessShare { .. } => {
                format!("canary success {} under {}", Pct(v), Pct(t))
            }
            Value::MismatchShare { .. } => {
                format!(
                    "canary answers differ in {} of copies, over {}",
                    Pct(v),
                    Pct(t)
                )
            }
            Value::ErrorRateIncrease { .. } => format!(
                "canary error rate {} is {} over the baseline's {}",
                Pct(o.canary),
                Pct(v),
                Pct(b)
            ),
            Value::QuantileRatio {
                percentile, factor, ..
            } => format!(
                "canary p{percentile} {} over {} (baseline {} + {})",
                Ms(v),
                Ms(t),
                Ms(b),
                Pct(factor - 1.0)
            ),
        }
    }
}

/// The span of numbers a breach's summary quotes: the analysis window, the current
/// step, or the newest tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Window,
    Step,
    Tick,
}

impl Span {
    /// Where the quoted number comes from, in words; nothing for the window, which a
    /// summary quotes unless it is within the limit.
    fn words(self) -> &'static str {
        match self {
            Span::Window => "",
            Span::Step => " since the step began",
            Span::Tick => " in the newest tick",
        }
    }

    /// The same span once more, for the baseline's number it is compared with.
    fn again(self) -> &'static str {
        match self {
            Span::Window => "",
            Span::Step => " since then",
            Span::Tick => " in that tick",
        }
    }
}

/// What [`CompiledRule::observe`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation {
    Seen(Observed),
    /// The canary has no numbers the rule reads (no request, none matching).
    NoCanary,
    /// A relative rule, and the baseline has none.
    NoBaseline,
}

impl Observation {
    pub fn seen(self) -> Option<Observed> {
        match self {
            Observation::Seen(o) => Some(o),
            _ => None,
        }
    }
}

/// A rule's number and its limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// In the rule's unit: a fraction, ms, a burn multiple, a success share; for
    /// `error_rate max_increase`, the canary's rate minus the baseline's.
    pub value: f64,
    pub limit: f64,
    /// The canary's own number (its error rate for a burn rate or an increase).
    pub canary: f64,
    /// A relative rule's baseline value (its error rate, its quantile in ms).
    pub baseline: Option<f64>,
}

/// The level of the lower bounds taken of the baseline's numbers in the same tick as
/// the canary's batch: ln(1/level) = 1/2, about one standard error below the tick's
/// own value. Raising the cutoff or θ only with what the tick shows beyond its noise
/// keeps an incident that hits both versions from failing the canary without making a
/// noisy tick cost evidence when nothing happened (docs/analysis.md, "Same ticks").
pub const SAME_TICK_LEVEL: f64 = 0.606_530_659_712_633_4; // e^(−1/2)

/// Lower confidence bound, at level `alpha`, for the `p`-quantile of `agg` in µs: the
/// mirror of [`quantile_upper_us`], the order statistic at rank ⌊u·n⌋ for the largest
/// u < p with n·KL(u ‖ p) ≥ ln(1/alpha). `None` without such a rank.
pub fn quantile_lower_us(agg: &Aggregate, p: f64, alpha: f64) -> Option<u64> {
    let n = agg.latency_count();
    if n == 0 {
        return None;
    }
    let budget = (1.0 / alpha).ln() / n as f64;
    if stats::kl(0.0, p) < budget {
        return None;
    }
    let (mut lo, mut hi) = (0.0, p);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if stats::kl(mid, p) >= budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    match (lo * n as f64).floor() as u64 {
        0 => None,
        rank => agg.value_at_rank(rank),
    }
}

/// Upper confidence bound, at level `alpha`, for the `p`-quantile of `agg` in µs: the
/// order statistic at the rank the number of values below the quantile reaches with
/// probability ≤ alpha (that count is binomial; its tail is summed exactly).
pub fn quantile_upper_us(agg: &Aggregate, p: f64, alpha: f64) -> Option<u64> {
    let rank = quantile_upper_rank(agg.latency_count(), p, alpha)?;
    agg.value_at_rank(rank)
}

/// The rank (1-based) of [`quantile_upper_us`]'s order statistic among `n` values: the
/// smallest r with P(Bin(n, p) ≥ r) ≤ alpha ([`stats::binomial_upper_rank`]). At most
/// r − 1 values lie below the true quantile except with probability ≤ alpha, so the
/// r-th smallest is at least the quantile. `None` when no rank is high enough.
pub fn quantile_upper_rank(n: u64, p: f64, alpha: f64) -> Option<u64> {
    stats::binomial_upper_rank(n, p, alpha)
}

/// A fraction shown as a percentage.
pub struct Pct(pub f64);

impl fmt::Display for Pct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0 * 100.0;
        if (v - v.round()).abs() < 1e-9 {
            write!(f, "{}%", v.round())
        } else {
            write!(f, "{}%", (v * 1000.0).round() / 1000.0)
        }
    }
}

/// Milliseconds, shortly.
pub struct Ms(pub f64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 100.0 || (self.0 - self.0.round()).abs() < 1e-9 {
            write!(f, "{}ms", self.0.round())
        } else {
            write!(f, "{:.2}ms", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::window::{Sample, SuccessCount};

    fn analysis(rules: Vec<Rule>) -> Analysis {
        Analysis {
            interval: Duration::from_secs(1),
            window: Duration::from_secs(30),
            min_requests: 50,
            confidence: 0.99,
            rules,
        }
    }

    /// `n` requests, `errors` of them failed, latencies 1..=n ms.
    fn numbers(n: u64, errors: u64) -> Aggregate {
        Aggregate::of([&Sample {
            requests: n,
            errors,
            success: Default::default(),
            latency: (1..=n).map(|ms| (ms * 1000, ms * 1000, 1)).collect(),
        }])
    }

    #[test]
    fn each_kind_of_rule_compiles_to_its_test() {
        let a = analysis(vec![
            Rule::ErrorRate { max: 0.01 },
            Rule::BurnRate {
                slo: 0.999,
                max: 4.0,
            },
            Rule::Latency {
                percentile: 95.0,
                max: Duration::from_millis(800),
            },
            Rule::Success {
                path_prefix: "/checkout".into(),
                method: Some("POST".into()),
                min: 0.97,
                slot: 2,
            },
            Rule::ErrorRateIncrease {
                max_increase: 0.005,
            },
            Rule::LatencyIncrease {
                percentile: 99.0,
                max_increase: 0.2,
            },
        ]);
        let compiled = compile(&a);
        let near = |x: f64, y: f64| (x - y).abs() < 1e-12;
        let got: Vec<(usize, &str, &str, Events, bool)> = compiled
            .rules
            .iter()
            .map(|r| {
                (
                    r.index,
                    r.text.as_str(),
                    r.kind,
                    r.test.events,
                    r.is_relative(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "error_rate max 1%", "error_rate", Events::Errors, false),
                (
                    1,
                    "burn_rate slo 99.9% max 4",
                    "burn_rate",
                    Events::Errors,
                    false
                ),
                (
                    2,
                    "latency p95 max 800ms",
                    "latency",
                    Events::SlowerThan(Cutoff::Fixed { us: 800_000 }),
                    false
                ),
                (
                    3,
                    "success POST /checkout min 97%",
                    "success",
                    Events::Unsuccessful { slot: 2 },
                    false
                ),
                (
                    4,
                    "error_rate max_increase 0.5%",
                    "error_rate",
                    Events::Errors,
                    true
                ),
                (
                    5,
                    "latency p99 max_increase 20%",
                    "latency",
                    Events::SlowerThan(Cutoff::Baseline {
                        p: 0.99,
                        factor: 1.2
                    }),
                    true
                ),
            ]
        );
        let theta = |i: usize| match compiled.rules[i].test.null {
            Null::Fixed(t) => t,
            Null::BaselinePlus { .. } => f64::NAN,
        };
        assert!(near(theta(0), 0.01) && near(theta(1), 0.004) && near(theta(2), 0.05));
        assert!(near(theta(3), 0.03) && near(theta(5), 0.01));
        assert_eq!(
            compiled.rules[4].test.null,
            Null::BaselinePlus { increase: 0.005 }
        );
        // 1 % over six rules; the two relative ones halve theirs.
        let share = 0.01 / 6.0;
        assert!(near(compiled.rules[0].budget.detector, share));
        assert!(near(compiled.rules[4].budget.detector, share / 2.0));
        assert!(near(compiled.rules[4].budget.baseline, share / 2.0));
        let total: f64 = compiled
            .rules
            .iter()
            .map(|r| r.budget.detector + r.budget.baseline)
            .sum();
        assert!(near(total, 0.01), "{total}");
    }

    #[test]
    fn a_tick_becomes_the_batch_its_rule_counts() {
        let a = analysis(vec![
            Rule::Latency {
                percentile: 95.0,
                max: Duration::from_millis(90),
            },
            Rule::LatencyIncrease {
                percentile: 50.0,
                max_increase: 0.5,
            },
            Rule::ErrorRateIncrease { max_increase: 0.1 },
            Rule::Success {
                path_prefix: "/".into(),
                method: None,
                min: 0.9,
                slot: 0,
            },
        ]);
        let rules = compile(&a).rules;
        let mut tick = numbers(100, 3);
        tick.success[0] = SuccessCount {
            matched: 40,
            succeeded: 37,
        };
        // 10 of the 100 latencies are above 90 ms.
        let b = rules[0].batch(&tick, None).expect("a batch");
        assert_eq!((b.trials, b.failures), (100, 10));
        // Relative rules need the baseline.
        assert_eq!(rules[1].batch(&tick, None), None);
        assert_eq!(rules[2].batch(&tick, None), None);
        // Against a baseline of 1..=1000 ms the upper bound of its median lies above
        // 500 ms, and the cutoff, 1.5 × that, above every latency of the tick.
        let window = numbers(1000, 0);
        let baseline = Some(Baseline {
            window: &window,
            tick: &Aggregate::default(),
            level: 0.001,
        });
        let upper = quantile_upper_us(&window, 0.5, 0.001).expect("a bound");
        assert!((500_000..600_000).contains(&upper), "{upper}");
        let b = rules[1].batch(&tick, baseline).expect("a batch");
        assert_eq!((b.trials, b.failures, b.theta), (100, 0, 0.5));
        // θ = the baseline's upper bound (0 errors of 1000 at 0.1 %: ln(1000)/1000) + 0.1.
        let b = rules[2].batch(&tick, baseline).expect("a batch");
        assert_eq!((b.trials, b.failures), (100, 3));
        assert!((0.106..0.108).contains(&b.theta), "{}", b.theta);
        let b = rules[3].batch(&tick, None).expect("a batch");
        assert_eq!((b.trials, b.failures), (40, 3));
    }

    /// A breach's words name the span of the numbers they quote, except the window's,
    /// which read as they always have.
    #[test]
    fn a_summary_names_the_span_it_quotes_unless_the_window() {
        let rules = compile(&analysis(vec![
            Rule::ErrorRateIncrease {
                max_increase: 0.005,
            },
            Rule::LatencyIncrease {
                percentile: 95.0,
                max_increase: 0.2,
            },
            Rule::Success {
                path_prefix: "/".into(),
                method: None,
                min: 0.97,
                slot: 0,
            },
        ]))
        .rules;
        let seen = |value, limit| {
            Some(Observed {
                value,
                limit,
                canary: value,
                baseline: None,
            })
        };
        let got = [
            rules[0].summary(seen(0.05, 0.005), Span::Tick),
            rules[1].summary(seen(200.0, 120.0), Span::Window),
            rules[1].summary(seen(200.0, 120.0), Span::Step),
            rules[1].summary(seen(200.0, 120.0), Span::Tick),
            rules[2].summary(seen(0.9, 0.97), Span::Step),
        ];
        assert_eq!(
            got,
            [
                "canary error rate 5% above the baseline's in the newest tick, against max_increase 0.5%",
                "canary p95 200ms against 120ms allowed from the baseline",
                "canary p95 200ms since the step began against 120ms allowed from the baseline since then",
                "canary p95 200ms in the newest tick against 120ms allowed from the baseline in that tick",
                "canary success 90% since the step began against min 97%",
            ]
        );
    }

    #[test]
    fn a_success_share_breaks_its_limit_from_below() {
        let a = analysis(vec![
            Rule::Success {
                path_prefix: "/".into(),
                method: None,
                min: 0.9,
                slot: 0,
            },
            Rule::ErrorRate { max: 0.05 },
        ]);
        let rules = compile(&a).rules;
        let mut c = numbers(100, 3);
        c.success[0] = SuccessCount {
            matched: 10,
            succeeded: 8,
        };
        let none = Aggregate::default();
        let share = rules[0].observe(&c, &none).seen().expect("seen");
        assert!(rules[0].breaks(&share));
        assert_eq!(rules[0].over_limit(&share), "canary success 80% under 90%");
        let rate = rules[1].observe(&c, &none).seen().expect("seen");
        assert!(!rules[1].breaks(&rate));
        assert_eq!(
            rules[0].observe(&numbers(10, 0), &none),
            Observation::NoCanary
        );
    }
}
