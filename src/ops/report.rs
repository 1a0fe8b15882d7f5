//! `serin report SERVICE`: a Markdown post-mortem draft of a rollout, written from the
//! admin API's `GET /api/v1/services/{name}` and `GET /api/v1/services/{name}/timeline`:
//! what was rolled back or promoted and when, how long and at what share of traffic
//! the canary served, the rule that decided with its numbers, the timeline, each
//! version's numbers behind every decision, and the sections people fill in.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use serin_control::runner::now_ms;
use serin_control::wire::{rfc3339, RuleRecord, ServiceView, TimelineEvent, WindowNumbers};
use serin_judge::rollout::DecisionKind;

use super::{base_url, decode, failed, millis, runtime, segment, send, AdminArgs, Failure};

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The service (as named in the config).
    pub service: String,
    /// Only decisions from then on: a span back from now (`2h`, `30m`) or a time
    /// (RFC 3339, e.g. `2026-11-22T04:00:00Z`). Default: every decision serin keeps.
    #[arg(long, value_name = "DURATION|RFC3339", value_parser = parse_since)]
    pub since: Option<Since>,
    /// Write the report to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Where the report starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before now.
    Ago(Duration),
    /// At this time.
    At(SystemTime),
}

impl Since {
    fn as_ms(self, now_ms: u64) -> u64 {
        match self {
            Since::Ago(span) => now_ms.saturating_sub(span.as_millis() as u64),
            Since::At(at) => at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
}

fn parse_since(text: &str) -> Result<Since, String> {
    let text = text.trim();
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Ok(Since::At(at));
    }
    humantime::parse_duration(text)
        .map(Since::Ago)
        .map_err(|_| {
            format!(
                "\"{text}\" is neither a span back from now (e.g. 2h, 30m, 1h 30m) nor a time \
             (RFC 3339, e.g. 2026-11-22T04:00:00Z)"
            )
        })
}

pub fn report(args: ReportArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let service_path = format!("/api/v1/services/{}", segment(&args.service));
    let timeline_path = format!("{service_path}/timeline");
    let fetched = runtime.block_on(async {
        let view = send(&args.admin.admin, Method::GET, &service_path, None).await?;
        let timeline = send(&args.admin.admin, Method::GET, &timeline_path, None).await?;
        Ok::<_, Failure>((view, timeline))
    });
    let (view, timeline) = match fetched {
        Ok(bodies) => bodies,
        Err(failure) => return failed(failure),
    };
    let now = now_ms();
    let drafted = decode::<ServiceView>(&view).and_then(|view| {
        let events: Vec<TimelineEvent> = decode(&timeline)?;
        let since = args.since.map(|s| s.as_ms(now));
        let events: Vec<TimelineEvent> = events
            .into_iter()
            .filter(|e| since.is_none_or(|since| e.at_ms >= since))
            .collect();
        if events.is_empty() {
            return Err(match since {
                Some(since) => format!(
                    "\"{}\" has no rollout decisions since {}, so there is nothing to report; \
                     give an earlier --since (`serin timeline {}` lists the decisions)",
                    args.service,
                    rfc3339(since),
                    args.service
                ),
                None => format!(
                    "\"{}\" has no rollout decisions, so there is nothing to report (a service \
                     without a rollout has none; `serin timeline {}` lists the decisions)",
                    args.service, args.service
                ),
            });
        }
        let source = base_url(&args.admin.admin).unwrap_or_else(|_| args.admin.admin.clone());
        Ok(render(&Draft {
            view: &view,
            events: &events,
            since,
            now_ms: now,
            source: &source,
        }))
    });
    let text = match drafted {
        Ok(text) => text,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    match &args.output {
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => {
                println!(
                    "wrote the post-mortem draft of \"{}\" to {}",
                    args.service,
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!(
                    "error: cannot write the report to {}: {err}; give a --output in a \
                     directory that exists and is writable, or leave it out to print it",
                    path.display()
                );
                ExitCode::FAILURE
            }
        },
    }
}

/// What the report is written from.
struct Draft<'a> {
    view: &'a ServiceView,
    /// Oldest first, already cut at `since`.
    events: &'a [TimelineEvent],
    since: Option<u64>,
    now_ms: u64,
    /// The admin API the figures came from.
    source: &'a str,
}

impl Draft<'_> {
    fn canary(&self) -> &str {
        let declared = self.view.weights.last().map(|(v, _)| v.as_str());
        self.view
            .rollout
            .canary
            .as_deref()
            .or(declared)
            .unwrap_or("canary")
    }

    fn baseline(&self) -> &str {
        let declared = self.view.weights.first().map(|(v, _)| v.as_str());
        self.view
            .rollout
            .baseline
            .as_deref()
            .or(declared)
            .unwrap_or("baseline")
    }

    /// The service's versions in declared order, then any others the timeline names.
    fn versions(&self) -> Vec<String> {
        let mut out: Vec<String> = self.view.weights.iter().map(|(v, _)| v.clone()).collect();
        let named: BTreeSet<&String> = self
            .events
            .iter()
            .flat_map(|e| e.weights.keys().chain(e.versions.keys()))
            .collect();
        for v in named {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        out
    }

    /// The newest rollback or promotion.
    fn outcome(&self) -> Option<&TimelineEvent> {
        self.events
            .iter()
            .rev()
            .find(|e| matches!(e.event, DecisionKind::RolledBack | DecisionKind::Promoted))
    }
}

/// How long the canary served, and at which shares of traffic.
#[derive(Debug, PartialEq)]
struct Exposure {
    total_ms: u64,
    from_ms: Option<u64>,
    to_ms: u64,
    /// (share in percent, ms at that share), in the order the shares came.
    shares: Vec<(f64, u64)>,
    /// Whether the canary still takes traffic under a running rollout.
    ongoing: bool,
}

/// The canary's share of traffic under `event`'s weights, in percent.
fn share(event: &TimelineEvent, canary: &str) -> f64 {
    let total: u64 = event.weights.values().map(|w| u64::from(*w)).sum();
    let mine = event.weights.get(canary).copied().unwrap_or(0);
    if total == 0 {
        0.0
    } else {
        f64::from(mine) * 100.0 / total as f64
    }
}

/// Each decision's weights hold until the next decision (or now, for a rollout still
/// running); a finished rollout exposes nothing more.
fn exposure(events: &[TimelineEvent], canary: &str, now_ms: u64) -> Exposure {
    let mut out = Exposure {
        total_ms: 0,
        from_ms: None,
        to_ms: 0,
        shares: Vec::new(),
        ongoing: false,
    };
    for (i, event) in events.iter().enumerate() {
        if !event.state.is_active() {
            continue;
        }
        let next = events.get(i + 1);
        let end = next.map_or(now_ms, |n| n.at_ms).max(event.at_ms);
        let share = share(event, canary);
        if share <= 0.0 {
            continue;
        }
        if next.is_none() {
            out.ongoing = true;
        }
        let span = end - event.at_ms;
        out.total_ms += span;
        out.from_ms.get_or_insert(event.at_ms);
        out.to_ms = end;
        match out.shares.iter_mut().find(|(s, _)| *s == share) {
            Some((_, ms)) => *ms += span,
            None => out.shares.push((share, span)),
        }
    }
    out
}

fn render(d: &Draft<'_>) -> String {
    let mut out = String::new();
    let service = &d.view.name;
    let (canary, baseline) = (d.canary(), d.baseline());
    let _ = writeln!(out, "# Post-mortem draft: rollout of `{service}`");
    let _ = writeln!(out);
    let span = match d.since {
        Some(since) => format!("decisions since {}", rfc3339(since)),
        None => "every decision serin keeps in memory (the newest 1000)".to_string(),
    };
    let _ = writeln!(
        out,
        "_Drafted by `serin report` at {} from the admin API at {}; {span}. The numbers are \
         serin's own, per version, over the rollout's analysis window at each decision. \
         Cause, Impact and Action items are for people to fill in._",
        rfc3339(d.now_ms),
        d.source
    );

    let _ = writeln!(out, "\n## Summary\n");
    let _ = writeln!(
        out,
        "- **Versions:** canary `{canary}` against baseline `{baseline}`."
    );
    let outcome = d.outcome();
    let _ = match outcome {
        Some(e) => writeln!(out, "- **Outcome:** {}.", outcome_words(e)),
        None => {
            let r = &d.view.rollout;
            writeln!(
                out,
                "- **Outcome:** no rollback or promotion in this span; the rollout is {}{} as of {}.",
                r.state.replace('_', " "),
                r.step.map(|s| format!(" at step {s}")).unwrap_or_default(),
                rfc3339(d.now_ms)
            )
        }
    };
    let exposed = exposure(d.events, canary, d.now_ms);
    let _ = match exposed.from_ms {
        None => writeln!(
            out,
            "- **Canary exposure:** `{canary}` took no traffic in this span."
        ),
        Some(from) => {
            let shares: Vec<String> = exposed
                .shares
                .iter()
                .map(|(share, ms)| format!("{} of traffic for {}", pct(*share), duration(*ms)))
                .collect();
            let peak = exposed.shares.iter().map(|(s, _)| *s).fold(0.0, f64::max);
            writeln!(
                out,
                "- **Canary exposure:** `{canary}` took traffic for {} (from {} to {}{}), at \
                 most {} of it: {}.",
                duration(exposed.total_ms),
                rfc3339(from),
                rfc3339(exposed.to_ms),
                if exposed.ongoing {
                    ", and still does"
                } else {
                    ""
                },
                pct(peak),
                shares.join(", then ")
            )
        }
    };
    if let Some(e) = outcome {
        let _ = match (&e.rule, e.manual) {
            (Some(rule), _) => writeln!(out, "- **Deciding rule:** {}", rule_words(rule)),
            (None, true) => writeln!(
                out,
                "- **Decided by:** a person through the admin API ({}).",
                e.reason.as_deref().unwrap_or("no reason given")
            ),
            (None, false) => writeln!(
                out,
                "- **Decided by:** serin{}.",
                e.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        };
        let numbers: Vec<String> = d
            .versions()
            .iter()
            .filter_map(|v| e.versions.get(v).map(|n| numbers_words(v, n)))
            .collect();
        if !numbers.is_empty() {
            let _ = writeln!(out, "- **At the decision:** {}.", numbers.join("; "));
        }
    }

    let versions = d.versions();
    let _ = writeln!(out, "\n## Timeline\n");
    let _ = writeln!(
        out,
        "| Time (UTC) | TimelineEvent | By | State | Step | Weights | Reason / rule |"
    );
    let _ = writeln!(out, "|---|---|---|---|---:|---|---|");
    for e in d.events {
        let weights: Vec<String> = versions
            .iter()
            .filter_map(|v| e.weights.get(v).map(|w| format!("{v} {w}")))
            .collect();
        let why = match (&e.rule, &e.reason) {
            (Some(rule), _) => format!("`{}`: {}", rule.rule, rule.summary),
            (None, Some(reason)) => reason.clone(),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            e.at,
            e.event.as_str(),
            if e.manual { "hand" } else { "serin" },
            e.state.as_str(),
            e.step,
            cell(&weights.join(", ")),
            cell(&why)
        );
    }

    let _ = writeln!(out, "\n## Numbers behind each decision\n");
    let _ = writeln!(
        out,
        "Each version over the rollout's analysis window when the decision was taken."
    );
    for e in d.events {
        let _ = writeln!(
            out,
            "\n### {} · {} (step {})\n",
            e.at,
            e.event.as_str(),
            e.step
        );
        if let Some(rule) = &e.rule {
            let _ = writeln!(out, "Rule: {}\n", rule_words(rule));
        } else if let Some(reason) = &e.reason {
            let _ = writeln!(out, "Reason: {reason}\n");
        }
        let _ = writeln!(
            out,
            "| Version | Requests | Errors | Error rate | p95 | p99 |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
        for v in &versions {
            let Some(n) = e.versions.get(v) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {v} | {} | {} | {} | {} | {} |",
                n.requests,
                n.errors,
                n.error_rate.map_or_else(dash, rate),
                n.p95_ms.map_or_else(dash, millis),
                n.p99_ms.map_or_else(dash, millis)
            );
        }
        if !e.mismatches.is_empty() {
            let _ = writeln!(
                out,
                "\nCopies whose answers differed at the shadow step (the newest {}):\n",
                e.mismatches.len()
            );
            let _ = writeln!(
                out,
                "| Method | Path | Client got | Canary answered | Differed in |"
            );
            let _ = writeln!(out, "|---|---|---:|---:|---|");
            let status =
                |s: Option<u16>| s.map_or_else(|| "no answer".to_string(), |s| s.to_string());
            for m in &e.mismatches {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    cell(&m.method),
                    cell(&m.path),
                    status(m.client),
                    status(m.canary),
                    m.differed.as_deref().map_or_else(|| "–".to_string(), cell)
                );
            }
        }
    }

    let _ = writeln!(
        out,
        "\n## Cause\n\n<!-- What made the canary fail, or pass? -->"
    );
    let _ = writeln!(
        out,
        "\n## Impact\n\n<!-- Who saw what, for how long: the exposure and error numbers above help. -->"
    );
    let _ = writeln!(
        out,
        "\n## Action items\n\n<!-- - [ ] what, who, by when -->"
    );
    out
}

fn outcome_words(e: &TimelineEvent) -> String {
    let how = match (e.event, e.manual) {
        (DecisionKind::RolledBack, true) => "rolled back by hand",
        (DecisionKind::RolledBack, false) => "rolled back automatically",
        (DecisionKind::Promoted, true) => "promoted by hand",
        _ => "promoted automatically",
    };
    let why = match (&e.rule, &e.reason) {
        (Some(rule), _) => format!(": `{}` was breached", rule.rule),
        (None, Some(reason)) => format!(" ({reason})"),
        (None, None) => String::new(),
    };
    let drill = if e.drill {
        " — during a rollback drill: the canary's faults were injected by serin (`serin drill`), \
         a rehearsal, not an incident"
    } else {
        ""
    };
    format!("**{how}** at {} at step {}{why}{drill}", e.at, e.step)
}

fn rule_words(rule: &RuleRecord) -> String {
    let value = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| rule_value(&rule.kind, v));
    format!(
        "`{}` ({}): {}. Observed {}, threshold {}; evidence {:.2} against the {:.2} needed \
         (natural logs).",
        rule.rule,
        rule.kind,
        rule.summary,
        value(rule.observed),
        value(rule.threshold),
        rule.evidence,
        rule.needed
    )
}

/// A rule's observed value or threshold in its own unit.
fn rule_value(kind: &str, v: f64) -> String {
    match kind {
        "error_rate" | "success" | "mismatch" => rate(v),
        "latency" => millis(v),
        "burn_rate" => format!("{v:.2}×"),
        _ => format!("{v}"),
    }
}

fn numbers_words(version: &str, n: &WindowNumbers) -> String {
    let mut words = format!("`{version}` {} requests, {} errors", n.requests, n.errors);
    if let Some(r) = n.error_rate {
        let _ = write!(words, " ({})", rate(r));
    }
    if let (Some(p95), Some(p99)) = (n.p95_ms, n.p99_ms) {
        let _ = write!(words, ", p95 {}, p99 {}", millis(p95), millis(p99));
    }
    words
}

fn rate(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

fn pct(share: f64) -> String {
    if share.fract() == 0.0 {
        format!("{share:.0}%")
    } else {
        format!("{share:.1}%")
    }
}

fn duration(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
    }
}

fn dash() -> String {
    "-".to_string()
}

/// Text that stays in its table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use serin_control::wire::RolloutView;
    use serin_judge::rollout::Phase;

    use super::*;

    fn event(at_ms: u64, event: DecisionKind, state: Phase, canary: u32) -> TimelineEvent {
        TimelineEvent {
            at: rfc3339(at_ms),
            at_ms,
            service: "api".into(),
            event,
            manual: false,
            state,
            step: 0,
            weights: [
                ("stable".to_string(), 100 - canary),
                ("canary".to_string(), canary),
            ]
            .into_iter()
            .collect(),
            reason: None,
            rule: None,
            versions: Default::default(),
            drill: false,
            mismatches: Vec::new(),
        }
    }

    const T0: u64 = 1_795_322_696_000;

    #[test]
    fn exposure_adds_up_each_share_until_the_outcome() {
        let events = [
            event(T0, DecisionKind::Started, Phase::Progressing, 5),
            event(T0 + 10_000, DecisionKind::Held, Phase::Progressing, 5),
            event(
                T0 + 30_000,
                DecisionKind::StepAdvanced,
                Phase::Progressing,
                25,
            ),
            event(T0 + 36_300, DecisionKind::RolledBack, Phase::RolledBack, 0),
        ];
        let e = exposure(&events, "canary", T0 + 999_000);
        assert_eq!(
            e,
            Exposure {
                total_ms: 36_300,
                from_ms: Some(T0),
                to_ms: T0 + 36_300,
                shares: vec![(5.0, 30_000), (25.0, 6_300)],
                ongoing: false,
            }
        );
        // A rollout still running exposes the canary until now.
        let e = exposure(&events[..3], "canary", T0 + 40_000);
        assert_eq!(e.shares, vec![(5.0, 30_000), (25.0, 10_000)]);
        assert!(e.ongoing);
        // A canary at 0 was not exposed.
        let e = exposure(
            &[event(T0, DecisionKind::Started, Phase::Progressing, 0)],
            "canary",
            T0 + 5,
        );
        assert_eq!((e.total_ms, e.from_ms), (0, None));
    }

    #[test]
    fn the_report_has_every_section_and_the_deciding_numbers() {
        let mut failed = event(T0 + 12_000, DecisionKind::RolledBack, Phase::RolledBack, 0);
        failed.reason =
            Some("error_rate max 1% breached: canary error rate 31% against max 1%".into());
        failed.rule = Some(RuleRecord {
            rule: "error_rate max 1%".into(),
            kind: "error_rate".into(),
            observed: Some(0.31),
            threshold: Some(0.01),
            summary: "canary error rate 31% against max 1%".into(),
            evidence: 14.2,
            needed: 6.9,
        });
        failed.versions.insert(
            "canary".into(),
            WindowNumbers {
                requests: 262,
                errors: 81,
                error_rate: Some(81.0 / 262.0),
                p50_ms: None,
                p95_ms: Some(6.879),
                p99_ms: Some(9.02),
            },
        );
        failed.versions.insert(
            "stable".into(),
            WindowNumbers {
                requests: 2301,
                errors: 0,
                error_rate: Some(0.0),
                p50_ms: None,
                p95_ms: Some(4.791),
                p99_ms: Some(5.079),
            },
        );
        let events = [
            event(T0, DecisionKind::Started, Phase::Progressing, 10),
            failed,
        ];
        let text = rolled_back_report(vec![10, 100], &events);
        for needed in [
            "# Post-mortem draft: rollout of `api`\n",
            "\n## Summary\n",
            "- **Versions:** canary `canary` against baseline `stable`.\n",
            "- **Outcome:** **rolled back automatically** at 2026-11-22T04:45:08.000Z at step 0: `error_rate max 1%` was breached.\n",
            "- **Canary exposure:** `canary` took traffic for 12.0s (from 2026-11-22T04:44:56.000Z to 2026-11-22T04:45:08.000Z), at most 10% of it: 10% of traffic for 12.0s.\n",
            "- **Deciding rule:** `error_rate max 1%` (error_rate): canary error rate 31% against max 1%. Observed 31.00%, threshold 1.00%; evidence 14.20 against the 6.90 needed (natural logs).\n",
            "- **At the decision:** `stable` 2301 requests, 0 errors (0.00%), p95 4.79ms, p99 5.08ms; `canary` 262 requests, 81 errors (30.92%), p95 6.88ms, p99 9.02ms.\n",
            "\n## Timeline\n",
            "| 2026-11-22T04:44:56.000Z | started | serin | progressing | 0 | stable 90, canary 10 |  |\n",
            "| 2026-11-22T04:45:08.000Z | rolled_back | serin | rolled_back | 0 | stable 100, canary 0 | `error_rate max 1%`: canary error rate 31% against max 1% |\n",
            "\n## Numbers behind each decision\n",
            "### 2026-11-22T04:45:08.000Z · rolled_back (step 0)\n",
            "| canary | 262 | 81 | 30.92% | 6.88ms | 9.02ms |\n",
            "\n## Cause\n",
            "\n## Impact\n",
            "\n## Action items\n",
        ] {
            assert!(text.contains(needed), "missing {needed:?} in\n{text}");
        }
    }

    #[test]
    fn a_rollback_during_a_drill_is_said_to_be_a_rehearsal() {
        let mut rolled_back = event(T0, DecisionKind::RolledBack, Phase::RolledBack, 0);
        rolled_back.reason = Some("error_rate max 1% breached".into());
        assert_eq!(
            outcome_words(&rolled_back),
            "**rolled back automatically** at 2026-11-22T04:44:56.000Z at step 0 (error_rate max 1% breached)"
        );
        rolled_back.drill = true;
        assert!(outcome_words(&rolled_back).ends_with(
            " — during a rollback drill: the canary's faults were injected by serin (`serin drill`), a rehearsal, not an incident"
        ));
    }

    /// The report of `events` for `api`, rolled back at step 0 of `steps` (canary
    /// weights), drawn a minute after [`T0`].
    fn rolled_back_report(steps: Vec<u32>, events: &[TimelineEvent]) -> String {
        let view = ServiceView {
            name: "api".into(),
            weights: vec![("stable".into(), 100), ("canary".into(), 0)],
            rollout: RolloutView {
                state: "rolled_back".into(),
                step: Some(0),
                since: None,
                reason: None,
                baseline: Some("stable".into()),
                canary: Some("canary".into()),
                steps: Some(steps),
            },
            window_s: None,
            versions: Vec::new(),
            drill: None,
            fleet: None,
        };
        render(&Draft {
            view: &view,
            events,
            since: None,
            now_ms: T0 + 60_000,
            source: "http://127.0.0.1:9901",
        })
    }

    #[test]
    fn differing_answers_of_a_shadow_step_are_listed_with_their_decision() {
        let mut failed = event(T0 + 5_000, DecisionKind::RolledBack, Phase::RolledBack, 0);
        failed.mismatches = vec![
            serin_control::wire::MismatchRecord {
                method: "GET".into(),
                path: "/items|x".into(),
                client: Some(200),
                canary: Some(500),
                differed: Some("status".into()),
            },
            serin_control::wire::MismatchRecord {
                method: "HEAD".into(),
                path: "/".into(),
                client: Some(200),
                canary: None,
                differed: None,
            },
        ];
        let events = [failed];
        let text = rolled_back_report(vec![0, 100], &events);
        for needed in [
            "Copies whose answers differed at the shadow step (the newest 2):\n",
            "| GET | /items\\|x | 200 | 500 | status |\n",
            "| HEAD | / | 200 | no answer | – |\n",
        ] {
            assert!(text.contains(needed), "missing {needed:?} in\n{text}");
        }
    }

    #[test]
    fn since_is_a_span_or_a_time() {
        assert_eq!(parse_since("2h"), Ok(Since::Ago(Duration::from_secs(7200))));
        assert_eq!(
            parse_since("2026-11-22T04:44:56Z").map(|s| s.as_ms(0)),
            Ok(T0)
        );
        assert_eq!(Since::Ago(Duration::from_secs(1)).as_ms(T0), T0 - 1000);
        let err = parse_since("yesterday").expect_err("not a span or a time");
        assert!(err.contains("neither a span back from now"), "{err}");
    }

    #[test]
    fn cells_keep_their_pipes_and_lines() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
