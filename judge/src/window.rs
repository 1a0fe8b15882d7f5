//! Sliding windows of per-version samples, one sample per control tick.
//!
//! A tick's latency histogram is kept sparse (the recorded buckets only), so a 30 s
//! window of 1 s ticks costs a few KB per version rather than 30 dense histograms.
//! Windows are merged on demand into an [`Aggregate`].

use std::collections::{BTreeMap, VecDeque};

use crate::spec::MAX_SUCCESS_RULES;

/// Requests matching one `success` rule, and how many of them were answered 2xx/3xx.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SuccessCount {
    pub matched: u64,
    pub succeeded: u64,
}

/// One version's numbers over one tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub requests: u64,
    pub errors: u64,
    pub success: [SuccessCount; MAX_SUCCESS_RULES],
    /// Recorded latency buckets: (lowest µs, highest µs, count), ascending.
    pub latency: Vec<(u64, u64, u64)>,
}

/// One version's numbers over a span of ticks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregate {
    pub requests: u64,
    pub errors: u64,
    pub success: [SuccessCount; MAX_SUCCESS_RULES],
    /// (lowest µs, highest µs, count) by bucket, ascending.
    latency: Vec<(u64, u64, u64)>,
}

impl Aggregate {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Self {
        let mut agg = Aggregate::default();
        let mut buckets: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for s in samples {
            agg.requests += s.requests;
            agg.errors += s.errors;
            for (a, b) in agg.success.iter_mut().zip(s.success) {
                a.matched += b.matched;
                a.succeeded += b.succeeded;
            }
            for &(lo, hi, n) in &s.latency {
                *buckets.entry((lo, hi)).or_default() += n;
            }
        }
        agg.latency = buckets
            .into_iter()
            .map(|((lo, hi), n)| (lo, hi, n))
            .collect();
        agg
    }

    /// Requests with a recorded latency (answered or failed upstream).
    pub fn latency_count(&self) -> u64 {
        self.latency.iter().map(|b| b.2).sum()
    }

    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// The latency at rank ⌈q·n⌉ (1-based), in µs, taking each bucket's highest value.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let n = self.latency_count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        self.value_at_rank(rank)
    }

    /// The `rank`-th smallest latency (1-based), bucket's highest value; `None` past n.
    pub fn value_at_rank(&self, rank: u64) -> Option<u64> {
        let mut seen = 0;
        for &(_, hi, n) in &self.latency {
            seen += n;
            if seen >= rank {
                return Some(hi);
            }
        }
        None
    }

    /// Requests certainly slower than `threshold_us` (whole bucket above it).
    pub fn count_above(&self, threshold_us: u64) -> u64 {
        self.latency
            .iter()
            .filter(|&&(lo, _, _)| lo > threshold_us)
            .map(|b| b.2)
            .sum()
    }

    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.quantile_us(q).map(|us| us as f64 / 1000.0)
    }
}

/// The ticks of one service: for each tick, its end time and one sample per version.
#[derive(Debug, Clone)]
pub struct ServiceWindow {
    versions: Vec<String>,
    ticks: VecDeque<(u64, Vec<Sample>)>,
    /// Ticks older than this (ms) are dropped.
    keep_ms: u64,
}

impl ServiceWindow {
    pub fn new(versions: Vec<String>, keep_ms: u64) -> Self {
        Self {
            versions,
            ticks: VecDeque::new(),
            keep_ms,
        }
    }

    pub fn versions(&self) -> &[String] {
        &self.versions
    }

    /// Changes how far back the window reaches (a reload changed the analysis window).
    pub fn set_keep(&mut self, keep_ms: u64) {
        self.keep_ms = keep_ms;
    }

    /// Adds the tick ending at `at_ms`: one sample per version, in the order of
    /// [`Self::versions`].
    pub fn push_samples(&mut self, at_ms: u64, samples: Vec<Sample>) {
        self.ticks.push_back((at_ms, samples));
        while let Some(&(first, _)) = self.ticks.front() {
            if at_ms.saturating_sub(first) >= self.keep_ms {
                self.ticks.pop_front();
            } else {
                break;
            }
        }
    }

    /// Version `index` over the ticks that ended after `since_ms`.
    pub fn aggregate(&self, index: usize, since_ms: u64) -> Aggregate {
        Aggregate::of(
            self.ticks
                .iter()
                .filter(|(at, _)| *at > since_ms)
                .filter_map(|(_, samples)| samples.get(index)),
        )
    }

    /// Version `index` over the newest tick only.
    pub fn latest(&self, index: usize) -> Aggregate {
        Aggregate::of(self.ticks.back().and_then(|(_, s)| s.get(index)))
    }

    /// The ticks, oldest first: each one's end time and samples (one per version).
    pub fn ticks(&self) -> impl DoubleEndedIterator<Item = (u64, &[Sample])> + '_ {
        self.ticks.iter().map(|(at, s)| (*at, s.as_slice()))
    }

    /// End time of the newest tick.
    pub fn latest_at(&self) -> Option<u64> {
        self.ticks.back().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(requests: u64, errors: u64, latencies_us: &[u64]) -> Sample {
        Sample {
            requests,
            errors,
            success: Default::default(),
            latency: latencies_us.iter().map(|&v| (v, v, 1)).collect(),
        }
    }

    #[test]
    fn window_keeps_only_recent_ticks() {
        let mut w = ServiceWindow::new(vec!["stable".into()], 3000);
        for t in 1..=5u64 {
            w.push_samples(t * 1000, vec![sample(10, t, &[t * 100])]);
        }
        // Ticks at 3000, 4000, 5000 are kept.
        let all = w.aggregate(0, 0);
        assert_eq!((all.requests, all.errors), (30, 12));
        let recent = w.aggregate(0, 4000);
        assert_eq!((recent.requests, recent.errors), (10, 5));
        assert_eq!(w.latest(0).errors, 5);
    }

    #[test]
    fn quantiles_and_counts_from_buckets() {
        let agg = Aggregate::of([&sample(4, 0, &[100, 200, 300, 400])]);
        assert_eq!(agg.quantile_us(0.5), Some(200));
        assert_eq!(agg.quantile_us(0.95), Some(400));
        assert_eq!(agg.count_above(250), 2);
        assert_eq!(agg.error_rate(), Some(0.0));
        assert_eq!(Aggregate::default().quantile_us(0.5), None);
    }
}
