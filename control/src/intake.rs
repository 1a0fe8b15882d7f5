//! The data plane's intervals as the judge's samples: the one place where the recorder's
//! types meet the judgement's (serin-judge knows nothing of the data plane).

use serin_judge::window::{Sample, ServiceWindow, SuccessCount};
use serin_proxy::Interval;

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
