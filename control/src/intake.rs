//! The data plane's intervals as the judge's samples: the one place where the recorder's
//! types meet the judgement's (serin-judge knows nothing of the data plane).

use serin_judge::window::{Sample, ServiceWindow, SuccessCount};
use serin_proxy::{Interval, ServiceInterval};

/// The window column of the canary's answers to shadow copies, kept apart from its
/// live numbers. Version names cannot hold `:`, so no version has this name.
pub fn shadow_column(canary: &str) -> String {
    format!("{canary}:shadow")
}

/// The window column of the comparisons of copies' answers: `requests` compared,
/// `errors` differed (what a `mismatch` rule judges).
pub fn mismatch_column(canary: &str) -> String {
    format!("{canary}:mismatch")
}

/// Fleet mode: the sample-record column in which an instance publishes the faults its
/// drill injected in a tick: `requests` saw a fault, `errors` of them were answered 503
/// (the rest delayed). No window has this column, so no rule ever judges it; the
/// leader takes it out of the merged record before judging (`crate::fleet::view`).
pub fn drill_column(canary: &str) -> String {
    format!("{canary}{DRILL_SUFFIX}")
}

/// The end of every [`drill_column`] name.
pub const DRILL_SUFFIX: &str = ":drill";

/// Every column's numbers of one taken interval, by name: each version's; then, with
/// shadow settings, the canary's copies' ([`shadow_column`]) and the comparisons'
/// ([`mismatch_column`]). Fleet mode publishes them as they are: a sample record
/// carries any name.
pub fn samples_of(taken: &ServiceInterval) -> Vec<(String, Sample)> {
    let mut samples: Vec<(String, Sample)> = taken
        .versions
        .iter()
        .map(|(v, i)| (v.clone(), sample_of(i)))
        .collect();
    if let Some((canary, shadow)) = &taken.shadow {
        samples.push((shadow_column(canary), sample_of(&shadow.stats)));
        samples.push((
            mismatch_column(canary),
            Sample {
                requests: shadow.compared,
                errors: shadow.mismatched,
                ..Sample::default()
            },
        ));
    }
    samples
}

/// Adds the tick ending at `at_ms` to `window` from a taken interval, shadow columns
/// included (see [`samples_of`]); a column with no numbers gets an empty sample.
pub fn push_taken(window: &mut ServiceWindow, at_ms: u64, taken: &ServiceInterval) {
    let mut samples = samples_of(taken);
    let row = window
        .versions()
        .iter()
        .map(|name| {
            samples
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| samples.swap_remove(i).1)
                .unwrap_or_default()
        })
        .collect();
    window.push_samples(at_ms, row);
}

/// One version's numbers over one tick, from the interval its shards were merged into.
pub fn sample_of(interval: &Interval) -> Sample {
    let h = &interval.latency_us;
    let latency = h
        .iter_recorded()
        .map(|v| {
            let hi = v.value_iterated_to();
            (h.lowest_equivalent(hi), hi, v.count_since_last_iteration())
        })
        .collect();
    Sample {
        requests: interval.requests(),
        errors: interval.errors(),
        success: interval.success.map(|s| SuccessCount {
            matched: s.matched,
            succeeded: s.succeeded,
        }),
        latency,
    }
}

/// Adds the tick ending at `at_ms` to `window`; versions are matched by name (a version
/// that has no interval gets an empty sample).
pub fn push(window: &mut ServiceWindow, at_ms: u64, intervals: &[(String, Interval)]) {
    let samples = window
        .versions()
        .iter()
        .map(|name| {
            intervals
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, i)| sample_of(i))
                .unwrap_or_default()
        })
        .collect();
    window.push_samples(at_ms, samples);
}
