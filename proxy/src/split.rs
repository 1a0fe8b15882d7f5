//! Stage 4, split: which version of a service serves a request.
//!
//! Order: a `force` header naming a defined version → that version; a `sticky` key →
//! the key's cohort point; otherwise the next point of the service's weighted sequence.
//!
//! Points lie in `[0, 10000)`. Versions take consecutive ranges in declared order,
//! counted down from the top, so the last declared version (the canary, by
//! convention) holds `[0, w)`: with two versions a user is on the canary iff their
//! point < canary weight × 100. Raising the canary's weight only widens its range, so
//! it only adds users and never moves a canary user back.
//!
//! Unkeyed requests walk all 10 000 points in a fixed stride (coprime with 10 000,
//! near the golden ratio), so every 10 000 consecutive requests split exactly by weight
//! and any shorter run is close to it. Nothing here allocates or locks.
//!
//! A [`SplitTable`] is built from weights (`crate::weights`, which publishes a new one
//! when a service's weights change); a [`Selector`], from the service's config with the
//! table.

use std::sync::atomic::{AtomicU64, Ordering};

use http::header::HeaderName;
use http::HeaderMap;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

pub const POINTS: u32 = 10_000;
/// ≈ 0.618 × 10 000 and coprime with 10 000: the unkeyed sequence visits every point
/// once per 10 000 requests, well spread.
const STRIDE: u64 = 6_181;

/// The weight ranges of one service's versions, plus its unkeyed sequence.
#[derive(Debug)]
pub struct SplitTable {
    /// `lower[i]`: version i holds points in `[lower[i], lower[i-1])` (`lower[-1]` = 10 000).
    lower: Box<[u32]>,
    /// Seeds the sticky hash, so cohorts of different services are independent.
    seed: u64,
    next: AtomicU64,
}

impl SplitTable {
    /// `weights` in declared order; not all zero (the config guarantees it). If they
    /// are, every point goes to the first version.
    pub fn new(service: &str, weights: &[u32]) -> Self {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut cumulative = 0u64;
        let lower = weights
            .iter()
            .map(|&w| {
                cumulative += u64::from(w);
                let top_share = (cumulative * u64::from(POINTS))
                    .checked_div(total)
                    .unwrap_or(u64::from(POINTS));
                POINTS - top_share.min(u64::from(POINTS)) as u32
            })
            .collect();
        Self {
            lower,
            seed: xxh3_64(service.as_bytes()),
            // Start each table at a different place in the sequence.
            next: AtomicU64::new(fastrand::u64(..)),
        }
    }

    /// The version holding `point`.
    #[inline]
    pub fn version_at(&self, point: u32) -> usize {
        for (i, &lower) in self.lower.iter().enumerate() {
            if point >= lower {
                return i;
            }
        }
        self.lower.len().saturating_sub(1)
    }

    /// A user's cohort point: stable for the same key and service, across restarts and
    /// across serin versions (xxh3 is a fixed algorithm).
    #[inline]
    pub fn cohort_point(&self, key: &[u8]) -> u32 {
        (xxh3_64_with_seed(key, self.seed) % u64::from(POINTS)) as u32
    }

    /// The next point of the unkeyed sequence.
    #[inline]
    pub fn next_point(&self) -> u32 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n.wrapping_mul(STRIDE) % u64::from(POINTS)) as u32
    }

    /// Version for a request with a sticky key.
    #[inline]
    pub fn pick_sticky(&self, key: &[u8]) -> usize {
        self.version_at(self.cohort_point(key))
    }

    /// Version for a request without one.
    #[inline]
    pub fn pick_weighted(&self) -> usize {
        self.version_at(self.next_point())
    }

    pub fn versions(&self) -> usize {
        self.lower.len()
    }

    /// Version `i`'s share of the points (0 = no weight).
    pub fn weight_of(&self, i: usize) -> u32 {
        let upper = if i == 0 { POINTS } else { self.lower[i - 1] };
        upper.saturating_sub(self.lower.get(i).copied().unwrap_or(upper))
    }
}

/// How a request of one service picks its version before the weights do: the force
/// header, and the sticky key. Built with the table, from the service's config.
#[derive(Debug)]
pub struct Selector {
    force_header: Option<HeaderName>,
    sticky: Option<StickyKey>,
    /// The versions' names in declared order, which the force header names.
    names: Box<[Box<str>]>,
}

/// Where a service's sticky key is read.
#[derive(Debug, Clone)]
pub enum StickyKey {
    Header(HeaderName),
    Cookie(Box<str>),
}

impl Selector {
    pub fn new(
        force_header: Option<HeaderName>,
        sticky: Option<StickyKey>,
        names: impl IntoIterator<Item = Box<str>>,
    ) -> Self {
        Self {
            force_header,
            sticky,
            names: names.into_iter().collect(),
        }
    }

    /// Picks the version (an index in declared order) for a request with `headers`.
    #[inline]
    pub fn choose(&self, split: &SplitTable, headers: &HeaderMap) -> usize {
        self.forced(headers)
            .unwrap_or_else(|| self.unforced(split, headers))
    }

    /// The version the force header names, if it names one.
    #[inline]
    pub fn forced(&self, headers: &HeaderMap) -> Option<usize> {
        let name = self.force_header.as_ref()?;
        let wanted = headers.get(name)?.as_bytes();
        self.names.iter().position(|v| v.as_bytes() == wanted)
    }

    /// The sticky cohort's version, else the next weighted pick of `split`.
    #[inline]
    pub fn unforced(&self, split: &SplitTable, headers: &HeaderMap) -> usize {
        match &self.sticky {
            Some(StickyKey::Header(name)) => {
                if let Some(key) = headers.get(name).filter(|v| !v.is_empty()) {
                    return split.pick_sticky(key.as_bytes());
                }
            }
            Some(StickyKey::Cookie(name)) => {
                if let Some(key) = cookie_value(headers, name) {
                    return split.pick_sticky(key.as_bytes());
                }
            }
            None => {}
        }
        split.pick_weighted()
    }
}

/// The value of cookie `name` in the request's Cookie header(s), if present and non-empty.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name && !c.value().is_empty())
        .and_then(|c| c.value_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(table: &SplitTable, n: usize) -> Vec<usize> {
        let mut counts = vec![0; table.versions()];
        for _ in 0..n {
            counts[table.pick_weighted()] += 1;
        }
        counts
    }

    #[test]
    fn two_versions_canary_holds_the_bottom_of_the_range() {
        let t = SplitTable::new("api", &[90, 10]);
        assert_eq!(t.version_at(0), 1);
        assert_eq!(t.version_at(999), 1);
        assert_eq!(t.version_at(1000), 0);
        assert_eq!(t.version_at(9999), 0);
    }

    #[test]
    fn every_ten_thousand_unkeyed_requests_split_exactly() {
        let t = SplitTable::new("api", &[90, 10]);
        assert_eq!(shares(&t, 10_000), vec![9000, 1000]);
        let t = SplitTable::new("api", &[1, 1, 2]);
        assert_eq!(shares(&t, 20_000), vec![5000, 5000, 10_000]);
    }

    #[test]
    fn short_runs_stay_close_to_the_weights() {
        let t = SplitTable::new("api", &[95, 5]);
        let counts = shares(&t, 200);
        assert!((8..=12).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn zero_weight_gets_nothing() {
        let t = SplitTable::new("api", &[100, 0]);
        assert_eq!(shares(&t, 10_000), vec![10_000, 0]);
        let t = SplitTable::new("api", &[0, 100]);
        assert_eq!(shares(&t, 10_000), vec![0, 10_000]);
        let t = SplitTable::new("api", &[50, 0, 50]);
        assert_eq!(shares(&t, 10_000), vec![5000, 0, 5000]);
    }

    #[test]
    fn raising_the_canary_weight_only_adds_users() {
        for (before, after) in [(5, 25), (25, 50), (50, 100), (1, 2)] {
            let a = SplitTable::new("api", &[100 - before, before]);
            let b = SplitTable::new("api", &[100 - after, after]);
            for user in 0..20_000u32 {
                let key = format!("user-{user}");
                if a.pick_sticky(key.as_bytes()) == 1 {
                    assert_eq!(b.pick_sticky(key.as_bytes()), 1, "{key} left the canary");
                }
            }
        }
    }

    #[test]
    fn relative_weights_need_not_sum_to_100() {
        let t = SplitTable::new("api", &[3, 1]);
        assert_eq!(shares(&t, 10_000), vec![7500, 2500]);
    }

    #[test]
    fn cohorts_differ_between_services() {
        let a = SplitTable::new("api", &[50, 50]);
        let b = SplitTable::new("web", &[50, 50]);
        let differ = (0..1000)
            .filter(|u| {
                let key = format!("user-{u}");
                a.pick_sticky(key.as_bytes()) != b.pick_sticky(key.as_bytes())
            })
            .count();
        assert!((350..=650).contains(&differ), "{differ}");
    }
}
