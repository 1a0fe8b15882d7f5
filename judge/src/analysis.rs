//! Judging a canary: a pure function of the compiled rules, the detectors' state and
//! the numbers of both versions, returning a verdict and the detectors' next state.
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
//! A Fail quotes numbers that break the rule's limit: the window's, or when the window
//! is still within it (the evidence is the newest ticks'), the step's or the newest
//! tick's, naming that span; when none breaks it, it says that the evidence added up
//! over recent ticks.
//!
//! What each rule means is [`crate::rules`]'s; this module only runs them.
//! docs/analysis.md derives the guarantee: over a whole healthy rollout, however long,
//! P(some rule fails) ≤ 1 − confidence.

use crate::rules::{Baseline, CompiledAnalysis, CompiledRule, Observation, Observed, Span};
use crate::stats::{self, Detector};
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
    /// The baseline over the same tick: relative rules compare the canary's batch with
    /// the baseline's numbers of the same seconds, as well as with its window.
    pub baseline_tick: &'a Aggregate,
    /// Whether the baseline is meant to receive traffic (false at a 100 % canary step);
    /// relative rules are skipped when it is not.
    pub baseline_has_weight: bool,
    /// During a shadow step, the comparisons of copied requests' answers (`requests`:
    /// compared, `errors`: differed), which `mismatch` rules judge; `None` otherwise,
    /// and those rules then neither fail nor hold.
    pub mismatch: Option<Spans<'a>>,
}

/// Numbers over the three spans a verdict reads: the window, the step, the tick.
#[derive(Debug, Clone, Copy)]
pub struct Spans<'a> {
    pub window: &'a Aggregate,
    pub step: &'a Aggregate,
    pub tick: &'a Aggregate,
}

impl<'a> Input<'a> {
    /// The numbers `rule` reads as the canary's: the comparisons for a `mismatch` rule,
    /// else the canary's own; `None` for a `mismatch` rule outside a shadow step.
    fn canary_for(&self, rule: &CompiledRule) -> Option<Spans<'a>> {
        if rule.reads_mismatches() {
            return self.mismatch;
        }
        Some(Spans {
            window: self.canary_window,
            step: self.canary_step,
            tick: self.canary_tick,
        })
    }
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
    /// The rule's position in the analysis (its [`CompiledRule::index`]).
    pub index: usize,
    /// The rule as written, e.g. `error_rate max 1%`.
    pub rule: String,
    /// `error_rate`, `latency`, `burn_rate` or `success`.
    pub kind: &'static str,
    /// The canary's value (rate, ms, burn multiple or share) over the span the summary
    /// quotes: the window, or when the window is within the limit the step or the
    /// newest tick (`breach_numbers`).
    pub observed: f64,
    /// The value it had to keep (absolute rules) or that the baseline set over the same
    /// span (relative).
    pub threshold: f64,
    /// ln of the detector's value, and the ln threshold it crossed.
    pub evidence: f64,
    pub needed: f64,
    /// The numbers in words, e.g. `canary error rate 25% against max 1%`, or with the
    /// span named when it is not the window, `canary p90 350ms in the newest tick
    /// against max 100ms`.
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

/// Judges one tick. `detectors` are the previous tick's (empty at the start).
pub fn judge(analysis: &CompiledAnalysis, detectors: &[Detector], input: &Input<'_>) -> Judgement {
    let rules = &analysis.rules;
    let mut next: Vec<Detector> = (0..rules.len())
        .map(|i| detectors.get(i).cloned().unwrap_or_default())
        .collect();
    let mut fail: Option<Breach> = None;
    let mut checks = Vec::with_capacity(rules.len());

    for (rule, detector) in rules.iter().zip(next.iter_mut()) {
        let baseline = input.baseline_has_weight.then(|| Baseline {
            window: input.baseline_window,
            tick: input.baseline_tick,
            level: stats::spend(rule.budget.baseline, detector.ticks + 1),
        });
        let canary = input.canary_for(rule);
        if let Some(batch) = canary.and_then(|c| rule.batch(c.tick, baseline)) {
            detector.update(batch.trials, batch.failures, batch.theta);
        }
        let alpha = rule.budget.detector;
        if let (None, true, Some(canary)) = (&fail, detector.alarmed(alpha), canary) {
            let (observed, summary) = breach_numbers(rule, canary, input);
            fail = Some(Breach {
                index: rule.index,
                rule: rule.text.clone(),
                kind: rule.kind,
                observed: observed.map_or(f64::NAN, |o| o.value),
                threshold: observed.map_or(f64::NAN, |o| o.limit),
                evidence: detector.log_value(),
                needed: stats::log_threshold(alpha),
                summary,
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

/// The numbers a breach of `rule` quotes, and its summary. The detector's evidence
/// comes from the newest ticks, so when it alarms the window may still be within the
/// limit. The first of the window, the step and the newest tick over which the rule's
/// number breaks the limit is quoted: the window in the words it always had, the others
/// with their span named. When none does (the evidence added up over earlier ticks,
/// diluted in the step and the window), the newest tick's number is quoted (the step's
/// or the window's when the tick has none), and the summary says where the evidence
/// came from rather than let that number pass for the reason.
fn breach_numbers(
    rule: &CompiledRule,
    canary: Spans<'_>,
    input: &Input<'_>,
) -> (Option<Observed>, String) {
    let spans = [
        (Span::Window, canary.window, input.baseline_window),
        (Span::Step, canary.step, input.baseline_step),
        (Span::Tick, canary.tick, input.baseline_tick),
    ];
    let seen = spans.map(|(span, canary, baseline)| (span, rule.observe(canary, baseline).seen()));
    if let Some((span, o)) = seen
        .iter()
        .find_map(|&(span, o)| o.filter(|o| rule.breaks(o)).map(|o| (span, o)))
    {
        return (Some(o), rule.summary(Some(o), span));
    }
    match seen
        .iter()
        .rev()
        .find_map(|&(span, o)| o.map(|o| (span, o)))
    {
        Some((span, o)) => (
            Some(o),
            format!(
                "{}; the evidence that decided added up over recent ticks",
                rule.summary(Some(o), span)
            ),
        ),
        None => (None, rule.summary(None, Span::Window)),
    }
}

/// The point check of one rule on the numbers since the step began.
fn check(rule: &CompiledRule, input: &Input<'_>) -> Check {
    if rule.is_relative() && !input.baseline_has_weight {
        return Check::Ok;
    }
    let Some(canary) = input.canary_for(rule) else {
        return Check::Ok;
    };
    let text = &rule.text;
    match rule.observe(canary.step, input.baseline_step) {
        Observation::NoBaseline => Check::NoData(format!(
            "{text}: no baseline traffic since the step began to compare with"
        )),
        Observation::NoCanary if rule.reads_mismatches() => Check::NoData(format!(
            "{text}: no copied request's answers compared since the step began"
        )),
        Observation::NoCanary if rule.needs_canary_data() => Check::NoData(format!(
            "{text}: no canary request matched since the step began"
        )),
        Observation::NoCanary => Check::Ok,
        Observation::Seen(o) if rule.breaks(&o) => Check::Marginal(format!(
            "{text}: {}, not yet conclusive",
            rule.over_limit(&o)
        )),
        Observation::Seen(_) => Check::Ok,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rules::{compile, Ms};
    use crate::spec::{Analysis, Rule};
    use crate::window::{Sample, ServiceWindow, SuccessCount};

    /// `requests` requests, `errors` failed, latencies spread evenly over [lo_ms, hi_ms].
    fn sample(requests: u64, errors: u64, lo_ms: u64, hi_ms: u64) -> Sample {
        let latency = (0..requests)
            .map(|i| {
                let us = lo_ms * 1000 + (hi_ms - lo_ms) * 1000 * i / requests.max(1);
                (us, us, 1)
            })
            .collect();
        Sample {
            requests,
            errors,
            success: Default::default(),
            latency,
        }
    }

    /// As [`sample`], recorded in 1 ms buckets.
    fn by_ms(requests: u64, errors: u64, lo_ms: u64, hi_ms: u64) -> Sample {
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..requests {
            *counts
                .entry(lo_ms + (hi_ms - lo_ms) * i / requests)
                .or_insert(0) += 1;
        }
        Sample {
            latency: counts
                .into_iter()
                .map(|(ms, n)| (ms * 1000, ms * 1000 + 999, n))
                .collect(),
            ..sample(requests, errors, 0, 0)
        }
    }

    fn agg(requests: u64, errors: u64, lo_ms: u64, hi_ms: u64) -> Aggregate {
        Aggregate::of([&sample(requests, errors, lo_ms, hi_ms)])
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
            baseline_tick: baseline,
            baseline_has_weight: true,
            mismatch: None,
        };
        let compiled = compile(analysis);
        let mut detectors = Vec::new();
        let mut verdict = Verdict::Pass;
        for _ in 0..ticks {
            let j = judge(&compiled, &detectors, &input);
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

    /// Judges one-second ticks 1..=`ticks` as the control loop does, on a fake clock:
    /// `at(t)` gives the baseline's and the canary's samples of tick t, a 30 s window
    /// slides over them, the step began with tick `step_began`, and each verdict sees
    /// the newest tick of both versions. The tick of the first Fail, if any, and its
    /// breach.
    fn run_ticks(
        rules: Vec<Rule>,
        ticks: u64,
        step_began: u64,
        at: impl Fn(u64) -> (Sample, Sample),
    ) -> Option<(u64, Breach)> {
        let compiled = compile(&analysis(rules));
        let mut window = ServiceWindow::new(vec!["stable".into(), "canary".into()], 30_000);
        let mut detectors = Vec::new();
        for t in 1..=ticks {
            let (b, c) = at(t);
            window.push_samples(t * 1000, vec![b, c]);
            let since = (t * 1000).saturating_sub(30_000);
            let (bw, cw) = (window.aggregate(0, since), window.aggregate(1, since));
            let step = since.max((step_began - 1) * 1000);
            let (bs, cs) = (window.aggregate(0, step), window.aggregate(1, step));
            let (bt, ct) = (window.latest(0), window.latest(1));
            let input = Input {
                baseline_window: &bw,
                canary_window: &cw,
                baseline_step: &bs,
                canary_step: &cs,
                canary_tick: &ct,
                baseline_tick: &bt,
                baseline_has_weight: true,
                mismatch: None,
            };
            let judged = judge(&compiled, &detectors, &input);
            detectors = judged.detectors;
            if let Verdict::Fail(b) = judged.verdict {
                return Some((t, b));
            }
        }
        None
    }

    /// An incident that hits both versions at once from tick 61 (a shared dependency
    /// failing) fails no relative rule; the same incident on the canary alone fails it
    /// within a few ticks.
    #[test]
    fn relative_rules_compare_the_canary_with_the_baseline_of_the_same_ticks() {
        // 900 baseline and 100 canary requests a tick; healthy: 0.1 % errors and
        // latencies evenly over 10–100 ms; the incident: 10 % errors, or every latency
        // × 3 (30–300 ms).
        let healthy = |n: u64| by_ms(n, n / 1000, 10, 100);
        type Incident = fn(u64) -> Sample;
        let cases: [(Rule, Incident); 2] = [
            (
                Rule::ErrorRateIncrease {
                    max_increase: 0.005,
                },
                |n| by_ms(n, n / 10, 10, 100),
            ),
            (
                Rule::LatencyIncrease {
                    percentile: 95.0,
                    max_increase: 0.2,
                },
                |n| by_ms(n, n / 1000, 30, 300),
            ),
        ];
        for (rule, incident) in cases {
            let text = rule.to_string();
            let both = run_ticks(vec![rule.clone()], 120, 1, |t| match t {
                ..=60 => (healthy(900), healthy(100)),
                _ => (incident(900), incident(100)),
            });
            assert_eq!(both, None, "{text}: an incident of both versions");
            let canary_only = run_ticks(vec![rule], 120, 1, |t| match t {
                ..=60 => (healthy(900), healthy(100)),
                _ => (healthy(900), incident(100)),
            });
            let Some((at, failed)) = canary_only else {
                panic!("{text}: the canary alone broke and was not failed")
            };
            assert_eq!(failed.rule, text);
            assert!((61..=65).contains(&at), "{text}: failed at tick {at}");
        }
    }

    /// 100 canary requests a tick, healthy (1–10 ms, no error) up to tick 60 and
    /// `incident` from tick 61, the step begun at tick `step_began`: the breach, which
    /// must come at tick 61, when the 30 s window still holds 29 healthy ticks.
    fn breach_at_the_incident(rule: Rule, step_began: u64, incident: Sample) -> Breach {
        let text = rule.to_string();
        let failed = run_ticks(vec![rule], 61, step_began, |t| {
            let canary = if t <= 60 {
                by_ms(100, 0, 1, 10)
            } else {
                incident.clone()
            };
            (by_ms(900, 0, 1, 10), canary)
        });
        let Some((61, breach)) = failed else {
            panic!("{text}: {failed:?}")
        };
        breach
    }

    /// The window may still be within the limit when the newest ticks' evidence fails
    /// the rule: the breach quotes the newest tick then, and says so.
    #[test]
    fn a_breach_quotes_the_newest_tick_when_the_window_is_within_the_limit() {
        let latency = || Rule::Latency {
            percentile: 90.0,
            max: Duration::from_millis(100),
        };
        let b = breach_at_the_incident(latency(), 1, by_ms(100, 0, 350, 400));
        assert!(b.observed >= 350.0 && b.threshold == 100.0, "{b:?}");
        assert_eq!(
            b.summary,
            format!(
                "canary p90 {} in the newest tick against max 100ms",
                Ms(b.observed)
            )
        );

        let b = breach_at_the_incident(Rule::ErrorRate { max: 0.05 }, 1, by_ms(100, 30, 1, 10));
        assert_eq!((b.observed, b.threshold), (0.3, 0.05));
        assert_eq!(
            b.summary,
            "canary error rate 30% in the newest tick against max 5%"
        );
    }

    /// A step begun 6 ticks ago shows the breach before the newest tick alone does.
    #[test]
    fn a_breach_quotes_the_step_before_the_newest_tick() {
        let b = breach_at_the_incident(Rule::ErrorRate { max: 0.04 }, 56, by_ms(100, 30, 1, 10));
        assert_eq!((b.observed, b.threshold), (0.05, 0.04));
        assert_eq!(
            b.summary,
            "canary error rate 5% since the step began against max 4%"
        );
    }

    /// When the window breaks the limit its numbers are quoted, in the words they have
    /// always had, however much worse the newest tick is.
    #[test]
    fn a_breach_quotes_the_window_when_it_breaks_the_limit() {
        let (window, tick) = (agg(1000, 50, 1, 10), agg(100, 50, 1, 10));
        let base = agg(2000, 0, 1, 10);
        let input = Input {
            baseline_window: &base,
            canary_window: &window,
            baseline_step: &base,
            canary_step: &tick,
            canary_tick: &tick,
            baseline_tick: &base,
            baseline_has_weight: true,
            mismatch: None,
        };
        let a = compile(&analysis(vec![Rule::ErrorRate { max: 0.01 }]));
        let j = judge(&a, &[], &input);
        let Verdict::Fail(b) = j.verdict else {
            panic!("{j:?}")
        };
        assert_eq!((b.observed, b.threshold), (0.05, 0.01));
        assert_eq!(b.summary, "canary error rate 5% against max 1%");
    }

    /// When no span breaks the limit (the evidence added up over ticks none shows
    /// alone), the newest tick is quoted with where the evidence came from, not as if
    /// it were the reason.
    #[test]
    fn a_breach_no_span_shows_says_where_the_evidence_came_from() {
        let a = compile(&analysis(vec![Rule::Latency {
            percentile: 90.0,
            max: Duration::from_millis(100),
        }]));
        let (window, tick) = (agg(3000, 0, 10, 100), agg(100, 0, 10, 90));
        let input = Input {
            baseline_window: &window,
            canary_window: &window,
            baseline_step: &window,
            canary_step: &window,
            canary_tick: &tick,
            baseline_tick: &tick,
            baseline_has_weight: true,
            mismatch: None,
        };
        let canary = input.canary_for(&a.rules[0]).expect("the canary's numbers");
        let (observed, summary) = breach_numbers(&a.rules[0], canary, &input);
        let o = observed.expect("observed");
        assert!(o.value < 100.0 && o.limit == 100.0, "{o:?}");
        assert_eq!(
            summary,
            format!(
                "canary p90 {} in the newest tick against max 100ms; \
                 the evidence that decided added up over recent ticks",
                Ms(o.value)
            )
        );
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
            baseline_tick: &none,
            baseline_has_weight: false,
            mismatch: None,
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
        assert_eq!(judge(&compile(&a), &[], &input).verdict, Verdict::Pass);
    }

    /// Judges `ticks` ticks of a shadow step whose copies' comparisons are `compared`
    /// answers a tick, `differed` of them different; the canary's copies are healthy.
    fn judge_mismatch(compared: u64, differed: u64, ticks: usize) -> Verdict {
        let base = agg(2000, 0, 10, 100);
        let copies = agg(200, 0, 10, 100);
        let comparisons = agg(compared, differed, 0, 0);
        let input = Input {
            baseline_window: &base,
            canary_window: &copies,
            baseline_step: &base,
            canary_step: &copies,
            canary_tick: &copies,
            baseline_tick: &base,
            baseline_has_weight: true,
            mismatch: Some(Spans {
                window: &comparisons,
                step: &comparisons,
                tick: &comparisons,
            }),
        };
        let a = compile(&analysis(vec![
            Rule::ErrorRate { max: 0.01 },
            Rule::Mismatch { max: 0.01 },
        ]));
        let mut detectors = Vec::new();
        let mut verdict = Verdict::Pass;
        for _ in 0..ticks {
            let j = judge(&a, &detectors, &input);
            detectors = j.detectors;
            verdict = j.verdict;
            if matches!(verdict, Verdict::Fail(_)) {
                break;
            }
        }
        verdict
    }

    /// `mismatch` is a proportion rule like the others: the share of compared copies
    /// whose answers differed, judged by its own e-detector; it holds without compared
    /// copies in a shadow step, and reads nothing outside one.
    #[test]
    fn the_mismatch_rule_fails_on_evidence_of_differing_answers_only() {
        let Verdict::Fail(b) = judge_mismatch(100, 30, 5) else {
            panic!("30% differing answers should fail mismatch max 1%")
        };
        assert_eq!((b.rule.as_str(), b.kind), ("mismatch max 1%", "mismatch"));
        assert_eq!(
            b.summary,
            "canary answered 30% of compared copies differently from the baseline, against max 1%"
        );
        assert_eq!(short(&judge_mismatch(200, 0, 30)), "pass");
        // 2 % over one tick is over the limit but no proof yet.
        assert_eq!(
            short(&judge_mismatch(100, 2, 1)),
            "hold: mismatch max 1%: canary answers differ in 2% of copies, over 1%, not yet conclusive"
        );
        assert_eq!(
            short(&judge_mismatch(0, 0, 3)),
            "hold: mismatch max 1%: no copied request's answers compared since the step began"
        );
        // Outside a shadow step (no comparisons) the rule neither fails nor holds.
        let canary = agg(200, 0, 10, 100);
        let base = agg(2000, 0, 10, 100);
        let a = analysis(vec![Rule::Mismatch { max: 0.01 }]);
        assert_eq!(short(&judge_n(&a, &base, &canary, 5)), "pass");
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
        let b: Vec<_> = compile(&a).rules.iter().map(|r| r.budget).collect();
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
