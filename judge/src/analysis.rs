//! Judging a canary: a pure function of the rules, the detectors' state and the
//! numbers of both versions, returning a verdict and the detectors' next state.
//!
//! * **Fail** only with evidence: each rule feeds its e-detector ([`crate::stats`]) one
//!   batch per tick; a rule fails when its detector crosses the threshold for its share
//!   of the false-alarm budget, 1 − confidence split evenly over the rules. Strong
//!   evidence (20 of 20 requests failing) is enough whatever `min_requests` says.
//! * **Hold** when the data cannot pass: fewer than `min_requests` canary requests since
//!   the step began, no baseline traffic for a relative rule, no request matching a
//!   success rule, or an observed value over a threshold that is not (yet) proven.
//! * **Pass** otherwise.
//!
//! docs/analysis.md derives the guarantee: over a whole healthy rollout, however long,
//! P(some rule fails) ≤ 1 − confidence.

use std::fmt;

use crate::spec::{Analysis, Rule};

use crate::stats::{self, upper_bound, Detector};
use crate::window::Aggregate;

/// The numbers a verdict is judged on.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Both versions over the sliding window (the comparison for relative rules).
    pub baseline_window: &'a Aggregate,
    pub canary_window: &'a Aggregate,
    /// Both versions since the current step began (at most the window): what a Pass
    /// is judged on.
    pub baseline_step: &'a Aggregate,
    pub canary_step: &'a Aggregate,
    /// The canary's newest tick: the batch the detectors take.
    pub canary_tick: &'a Aggregate,
    /// Whether the baseline is meant to receive traffic (false at a 100 % canary step);
    /// relative rules are skipped when it is not.
    pub baseline_has_weight: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    Hold(String),
    Fail(Breach),
}

/// The rule that failed and the numbers that made it fail.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// The rule as written, e.g. `error_rate max 1%`.
    pub rule: String,
    /// `error_rate`, `latency`, `burn_rate` or `success`.
    pub kind: &'static str,
    /// The canary's value over the window (rate, ms, burn multiple or share).
    pub observed: f64,
    /// The value it had to keep (absolute rules) or that the baseline set (relative).
    pub threshold: f64,
    /// ln of the detector's value, and the ln threshold it crossed.
    pub evidence: f64,
    pub needed: f64,
    /// The numbers in words, e.g. `canary error rate 25% against max 1%`.
    pub summary: String,
}

/// The outcome of one judgement.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub verdict: Verdict,
    /// One per rule, to be passed back in at the next tick.
    pub detectors: Vec<Detector>,
}

/// What one rule's point check found.
enum Check {
    Ok,
    /// Cannot be judged yet (reason).
    NoData(String),
    /// Over its threshold on the observed numbers (reason), without proof yet.
    Marginal(String),
}

pub fn rule_text(rule: &Rule) -> String {
    match rule {
        Rule::ErrorRate { max } => format!("error_rate max {}", Pct(*max)),
        Rule::ErrorRateIncrease { max_increase } => {
            format!("error_rate max_increase {}", Pct(*max_increase))
        }
        Rule::Latency { percentile, max } => format!(
            "latency p{percentile} max {}",
            Ms(max.as_secs_f64() * 1000.0)
        ),
        Rule::LatencyIncrease {
            percentile,
            max_increase,
        } => {
            format!("latency p{percentile} max_increase {}", Pct(*max_increase))
        }
        Rule::BurnRate { slo, max } => format!("burn_rate slo {} max {max}", Pct(*slo)),
        Rule::Success {
            path_prefix,
            method,
            min,
            ..
        } => format!(
            "success {}{path_prefix} min {}",
            method
                .as_deref()
                .map(|m| format!("{m} "))
                .unwrap_or_default(),
            Pct(*min)
        ),
    }
}

pub fn rule_kind(rule: &Rule) -> &'static str {
    match rule {
        Rule::ErrorRate { .. } | Rule::ErrorRateIncrease { .. } => "error_rate",
        Rule::Latency { .. } | Rule::LatencyIncrease { .. } => "latency",
        Rule::BurnRate { .. } => "burn_rate",
        Rule::Success { .. } => "success",
    }
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

/// Upper confidence bound, at level `alpha`, for the `p`-quantile of `agg` in µs: the
/// order statistic at the rank the number of values below the quantile exceeds with
/// probability ≤ alpha (Chernoff bound on that binomial count).
fn quantile_upper_us(agg: &Aggregate, p: f64, alpha: f64) -> Option<u64> {
    let n = agg.latency_count();
    if n == 0 {
        return None;
    }
    let budget = (1.0 / alpha).ln() / n as f64;
    // Smallest u > p with KL(u‖p) ≥ budget: then P(Bin(n, p) ≥ n·u) ≤ alpha.
    let (mut lo, mut hi) = (p, 1.0);
    if stats::kl(1.0, p) < budget {
        return None;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if stats::kl(mid, p) >= budget {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let rank = (hi * n as f64).ceil() as u64;
    agg.value_at_rank(rank.max(1))
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

/// The budget of each rule, in order: 1 − confidence split evenly over the rules; a
/// relative rule gives half of its share to its detector and half to its baseline
/// bounds. The shares sum to 1 − confidence (docs/analysis.md, "The budget").
pub fn budgets(analysis: &Analysis) -> Vec<Budget> {
    let share = (1.0 - analysis.confidence) / analysis.rules.len().max(1) as f64;
    analysis
        .rules
        .iter()
        .map(|rule| match rule {
            Rule::ErrorRateIncrease { .. } | Rule::LatencyIncrease { .. } => Budget {
                detector: share / 2.0,
                baseline: share / 2.0,
            },
            _ => Budget {
                detector: share,
                baseline: 0.0,
            },
        })
        .collect()
}

/// Judges one tick. `detectors` are the previous tick's (empty at the start).
pub fn judge(analysis: &Analysis, detectors: &[Detector], input: &Input<'_>) -> Judgement {
    let rules = &analysis.rules;
    let budgets = budgets(analysis);
    let mut next: Vec<Detector> = (0..rules.len())
        .map(|i| detectors.get(i).cloned().unwrap_or_default())
        .collect();
    let mut fail: Option<Breach> = None;
    let mut checks = Vec::with_capacity(rules.len());

    for ((rule, detector), budget) in rules.iter().zip(next.iter_mut()).zip(&budgets) {
        let tick = input.canary_tick;
        let cw = input.canary_window;
        let (alpha_detector, breach_at): (f64, Option<(f64, f64)>) = match rule {
            Rule::ErrorRate { max } => {
                detector.update(tick.requests, tick.errors, *max);
                (budget.detector, cw.error_rate().map(|r| (r, *max)))
            }
            Rule::BurnRate { slo, max } => {
                let theta = max * (1.0 - slo);
                if theta < 1.0 {
                    detector.update(tick.requests, tick.errors, theta);
                }
                (
                    budget.detector,
                    cw.error_rate().map(|r| (r / (1.0 - slo), *max)),
                )
            }
            Rule::Latency { percentile, max } => {
                let max_us = max.as_micros() as u64;
                let theta = 1.0 - percentile / 100.0;
                detector.update(tick.latency_count(), tick.count_above(max_us), theta);
                (
                    budget.detector,
                    cw.quantile_ms(percentile / 100.0)
                        .map(|ms| (ms, max.as_secs_f64() * 1000.0)),
                )
            }
            Rule::Success { min, slot, .. } => {
                let s = tick.success.get(*slot).copied().unwrap_or_default();
                detector.update(s.matched, s.matched - s.succeeded, 1.0 - min);
                let w = cw.success.get(*slot).copied().unwrap_or_default();
                (
                    budget.detector,
                    (w.matched > 0).then(|| (w.succeeded as f64 / w.matched as f64, *min)),
                )
            }
            Rule::ErrorRateIncrease { max_increase } => {
                let b = input.baseline_window;
                let mut shown = None;
                if input.baseline_has_weight && b.requests > 0 {
                    let level = stats::spend(budget.baseline, detector.ticks + 1);
                    let theta = (upper_bound(b.errors, b.requests, level) + max_increase).min(1.0);
                    if theta < 1.0 {
                        detector.update(tick.requests, tick.errors, theta);
                    }
                    if let (Some(c), Some(b)) = (cw.error_rate(), b.error_rate()) {
                        shown = Some((c - b, *max_increase));
                    }
                }
                (budget.detector, shown)
            }
            Rule::LatencyIncrease {
                percentile,
                max_increase,
            } => {
                let b = input.baseline_window;
                let p = percentile / 100.0;
                let mut shown = None;
                if input.baseline_has_weight {
                    let level = stats::spend(budget.baseline, detector.ticks + 1);
                    if let Some(upper) = quantile_upper_us(b, p, level) {
                        let threshold_us = (upper as f64 * (1.0 + max_increase)) as u64;
                        detector.update(
                            tick.latency_count(),
                            tick.count_above(threshold_us),
                            1.0 - p,
                        );
                    }
                    if let (Some(c), Some(b)) = (cw.quantile_ms(p), b.quantile_ms(p)) {
                        shown = Some((c, b * (1.0 + max_increase)));
                    }
                }
                (budget.detector, shown)
            }
        };
        if fail.is_none() && detector.alarmed(alpha_detector) {
            let (observed, threshold) = breach_at.unwrap_or((f64::NAN, f64::NAN));
            let summary = summarize(rule, observed, threshold);
            fail = Some(Breach {
                summary,
                rule: rule_text(rule),
                kind: rule_kind(rule),
                observed,
                threshold,
                evidence: detector.log_value(),
                needed: stats::log_threshold(detector.ticks, alpha_detector),
            });
        }
        checks.push(check(rule, input));
    }

    let verdict = if let Some(breach) = fail {
        Verdict::Fail(breach)
    } else if input.canary_step.requests < analysis.min_requests {
        Verdict::Hold(format!(
            "thin traffic: {} canary requests since the step began, {} needed",
            input.canary_step.requests, analysis.min_requests
        ))
    } else if let Some(reason) = checks.iter().find_map(|c| match c {
        Check::NoData(r) => Some(r.clone()),
        _ => None,
    }) {
        Verdict::Hold(reason)
    } else if let Some(reason) = checks.iter().find_map(|c| match c {
        Check::Marginal(r) => Some(r.clone()),
        _ => None,
    }) {
        Verdict::Hold(reason)
    } else {
        Verdict::Pass
    };
    Judgement {
        verdict,
        detectors: next,
    }
}

fn summarize(rule: &Rule, observed: f64, threshold: f64) -> String {
    if observed.is_nan() {
        return "canary over its threshold in the newest ticks".to_string();
    }
    match rule {
        Rule::ErrorRate { .. } => format!(
            "canary error rate {} against max {}",
            Pct(observed),
            Pct(threshold)
        ),
        Rule::ErrorRateIncrease { .. } => format!(
            "canary error rate {} above the baseline's, against max_increase {}",
            Pct(observed),
            Pct(threshold)
        ),
        Rule::Latency { percentile, .. } => {
            format!(
                "canary p{percentile} {} against max {}",
                Ms(observed),
                Ms(threshold)
            )
        }
        Rule::LatencyIncrease { percentile, .. } => format!(
            "canary p{percentile} {} against {} allowed from the baseline",
            Ms(observed),
            Ms(threshold)
        ),
        Rule::BurnRate { .. } => format!("canary burn rate {observed:.2} against max {threshold}"),
        Rule::Success { .. } => format!(
            "canary success {} against min {}",
            Pct(observed),
            Pct(threshold)
        ),
    }
}

/// The point check of one rule on the numbers since the step began.
fn check(rule: &Rule, input: &Input<'_>) -> Check {
    let c = input.canary_step;
    let b = input.baseline_step;
    let text = rule_text(rule);
    let no_baseline = || {
        Check::NoData(format!(
            "{text}: no baseline traffic since the step began to compare with"
        ))
    };
    let marginal = |what: String| Check::Marginal(format!("{text}: {what}, not yet conclusive"));
    match rule {
        Rule::ErrorRate { max } => match c.error_rate() {
            Some(r) if r > *max => {
                marginal(format!("canary error rate {} over {}", Pct(r), Pct(*max)))
            }
            _ => Check::Ok,
        },
        Rule::BurnRate { slo, max } => match c.error_rate() {
            Some(r) if r / (1.0 - slo) > *max => marginal(format!(
                "canary burn rate {:.2} over {max}",
                r / (1.0 - slo)
            )),
            _ => Check::Ok,
        },
        Rule::Latency { percentile, max } => {
            let max_ms = max.as_secs_f64() * 1000.0;
            match c.quantile_ms(percentile / 100.0) {
                Some(ms) if ms > max_ms => marginal(format!(
                    "canary p{percentile} {} over {}",
                    Ms(ms),
                    Ms(max_ms)
                )),
                _ => Check::Ok,
            }
        }
        Rule::Success { min, slot, .. } => {
            let s = c.success.get(*slot).copied().unwrap_or_default();
            if s.matched == 0 {
                return Check::NoData(format!(
                    "{text}: no canary request matched since the step began"
                ));
            }
            let share = s.succeeded as f64 / s.matched as f64;
            if share < *min {
                marginal(format!("canary success {} under {}", Pct(share), Pct(*min)))
            } else {
                Check::Ok
            }
        }
        Rule::ErrorRateIncrease { max_increase } => {
            if !input.baseline_has_weight {
                return Check::Ok;
            }
            match (c.error_rate(), b.error_rate()) {
                (_, None) => no_baseline(),
                (Some(cr), Some(br)) if cr - br > *max_increase => marginal(format!(
                    "canary error rate {} is {} over the baseline's {}",
                    Pct(cr),
                    Pct(cr - br),
                    Pct(br)
                )),
                _ => Check::Ok,
            }
        }
        Rule::LatencyIncrease {
            percentile,
            max_increase,
        } => {
            if !input.baseline_has_weight {
                return Check::Ok;
            }
            let p = percentile / 100.0;
            match (c.quantile_ms(p), b.quantile_ms(p)) {
                (_, None) => no_baseline(),
                (Some(cm), Some(bm)) if cm > bm * (1.0 + max_increase) => marginal(format!(
                    "canary p{percentile} {} over {} (baseline {} + {})",
                    Ms(cm),
                    Ms(bm * (1.0 + max_increase)),
                    Ms(bm),
                    Pct(*max_increase)
                )),
                _ => Check::Ok,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::window::{Sample, SuccessCount};

    /// `requests` requests, `errors` failed, latencies spread evenly over [lo_ms, hi_ms].
    fn agg(requests: u64, errors: u64, lo_ms: u64, hi_ms: u64) -> Aggregate {
        let latency = (0..requests)
            .map(|i| {
                let us = lo_ms * 1000 + (hi_ms - lo_ms) * 1000 * i / requests.max(1);
                (us, us, 1)
            })
            .collect();
        Aggregate::of([&Sample {
            requests,
            errors,
            success: Default::default(),
            latency,
        }])
    }

    fn analysis(rules: Vec<Rule>) -> Analysis {
        Analysis {
            interval: Duration::from_secs(1),
            window: Duration::from_secs(30),
            min_requests: 50,
            confidence: 0.99,
            rules,
        }
    }

    /// Judges the same numbers (tick = step = window) `ticks` times in a row.
    fn judge_n(
        analysis: &Analysis,
        baseline: &Aggregate,
        canary: &Aggregate,
        ticks: usize,
    ) -> Verdict {
        let input = Input {
            baseline_window: baseline,
            canary_window: canary,
            baseline_step: baseline,
            canary_step: canary,
            canary_tick: canary,
            baseline_has_weight: true,
        };
        let mut detectors = Vec::new();
        let mut verdict = Verdict::Pass;
        for _ in 0..ticks {
            let j = judge(analysis, &detectors, &input);
            detectors = j.detectors;
            verdict = j.verdict;
            if matches!(verdict, Verdict::Fail(_)) {
                break;
            }
        }
        verdict
    }

    fn short(v: &Verdict) -> String {
        match v {
            Verdict::Pass => "pass".into(),
            Verdict::Hold(r) => format!("hold: {r}"),
            Verdict::Fail(b) => format!("fail: {}", b.rule),
        }
    }

    #[test]
    fn table_of_verdicts() {
        let all = || {
            vec![
                Rule::ErrorRate { max: 0.01 },
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
                Rule::BurnRate {
                    slo: 0.999,
                    max: 4.0,
                },
            ]
        };
        let healthy_base = agg(2000, 4, 10, 100);
        type Case<'a> = (&'a str, Vec<Rule>, Aggregate, Aggregate, usize, &'a str);
        let cases: Vec<Case> = vec![
            ("20 of 20 failing fails at once, below min_requests", all(), healthy_base.clone(), agg(20, 20, 10, 100), 1, "fail: error_rate max 1%"),
            ("thin healthy traffic holds", all(), healthy_base.clone(), agg(10, 0, 10, 100), 5, "hold: thin traffic: 10 canary requests since the step began, 50 needed"),
            ("one tick of thin traffic with an error holds", all(), healthy_base.clone(), agg(10, 1, 10, 100), 1, "hold: thin traffic: 10 canary requests since the step began, 50 needed"),
            ("a healthy canary passes", all(), healthy_base.clone(), agg(200, 0, 10, 100), 30, "pass"),
            ("observed over the threshold without proof holds", vec![Rule::ErrorRate { max: 0.01 }], healthy_base.clone(), agg(100, 2, 10, 100), 1, "hold: error_rate max 1%: canary error rate 2% over 1%, not yet conclusive"),
            ("a slow canary fails the absolute latency rule", vec![Rule::Latency { percentile: 95.0, max: Duration::from_millis(800) }], healthy_base.clone(), agg(200, 0, 500, 1500), 3, "fail: latency p95 max 800ms"),
            ("a canary twice as slow fails the relative latency rule", vec![Rule::LatencyIncrease { percentile: 95.0, max_increase: 0.2 }], healthy_base.clone(), agg(200, 0, 20, 200), 10, "fail: latency p95 max_increase 20%"),
            ("5% errors against a 0.2% baseline fails max_increase", vec![Rule::ErrorRateIncrease { max_increase: 0.005 }], healthy_base.clone(), agg(200, 10, 10, 100), 10, "fail: error_rate max_increase 0.5%"),
            ("a baseline as bad as the canary is no evidence", vec![Rule::ErrorRateIncrease { max_increase: 0.005 }], agg(2000, 100, 10, 100), agg(200, 10, 10, 100), 30, "pass"),
            ("no baseline traffic holds a relative rule", vec![Rule::ErrorRateIncrease { max_increase: 0.005 }], Aggregate::default(), agg(200, 0, 10, 100), 3, "hold: error_rate max_increase 0.5%: no baseline traffic since the step began to compare with"),
            ("burn rate 10x the budget fails", vec![Rule::BurnRate { slo: 0.999, max: 4.0 }], healthy_base.clone(), agg(200, 2, 10, 100), 30, "fail: burn_rate slo 99.9% max 4"),
        ];
        let mut failures = Vec::new();
        for (name, rules, baseline, canary, ticks, want) in cases {
            let got = short(&judge_n(&analysis(rules), &baseline, &canary, ticks));
            if got != want {
                failures.push(format!("{name}:\n   got  {got}\n   want {want}"));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn success_rules_judge_only_matching_requests() {
        let rules = vec![Rule::Success {
            path_prefix: "/checkout".into(),
            method: Some("POST".into()),
            min: 0.97,
            slot: 0,
        }];
        let with = |matched, succeeded| {
            let mut a = agg(500, 0, 10, 100);
            a.success[0] = SuccessCount { matched, succeeded };
            a
        };
        let base = agg(2000, 0, 10, 100);
        assert_eq!(
            short(&judge_n(&analysis(rules.clone()), &base, &with(0, 0), 3)),
            "hold: success POST /checkout min 97%: no canary request matched since the step began"
        );
        assert_eq!(
            short(&judge_n(&analysis(rules.clone()), &base, &with(100, 99), 5)),
            "pass"
        );
        assert_eq!(
            short(&judge_n(&analysis(rules), &base, &with(100, 50), 1)),
            "fail: success POST /checkout min 97%"
        );
    }

    #[test]
    fn relative_rules_are_skipped_when_the_baseline_has_no_weight() {
        let canary = agg(200, 0, 10, 100);
        let none = Aggregate::default();
        let input = Input {
            baseline_window: &none,
            canary_window: &canary,
            baseline_step: &none,
            canary_step: &canary,
            canary_tick: &canary,
            baseline_has_weight: false,
        };
        let a = analysis(vec![
            Rule::ErrorRateIncrease {
                max_increase: 0.005,
            },
            Rule::LatencyIncrease {
                percentile: 99.0,
                max_increase: 0.1,
            },
        ]);
        assert_eq!(judge(&a, &[], &input).verdict, Verdict::Pass);
    }

    #[test]
    fn the_budgets_spend_exactly_one_minus_confidence() {
        let a = analysis(vec![
            Rule::ErrorRate { max: 0.01 },
            Rule::ErrorRateIncrease {
                max_increase: 0.005,
            },
            Rule::LatencyIncrease {
                percentile: 95.0,
                max_increase: 0.2,
            },
            Rule::BurnRate {
                slo: 0.999,
                max: 4.0,
            },
        ]);
        let b = budgets(&a);
        let near = |x: f64, y: f64| (x - y).abs() < 1e-12;
        assert!(near(b[0].detector, 0.0025) && b[0].baseline == 0.0, "{b:?}");
        assert!(
            near(b[1].detector, 0.00125) && near(b[1].baseline, 0.00125),
            "{b:?}"
        );
        assert!(
            near(b[2].detector, 0.00125) && near(b[2].baseline, 0.00125),
            "{b:?}"
        );
        let total: f64 = b.iter().map(|b| b.detector + b.baseline).sum();
        assert!(near(total, 0.01), "{total}");
    }

    #[test]
    fn a_failure_carries_its_numbers() {
        let j = judge_n(
            &analysis(vec![Rule::ErrorRate { max: 0.01 }]),
            &agg(2000, 0, 1, 2),
            &agg(100, 100, 1, 2),
            1,
        );
        let Verdict::Fail(b) = j else { panic!("{j:?}") };
        assert_eq!((b.kind, b.observed, b.threshold), ("error_rate", 1.0, 0.01));
        assert_eq!(b.summary, "canary error rate 100% against max 1%");
        assert!(b.evidence >= b.needed);
    }
}
