//! The per-tick sample record an instance publishes at `P/samples/<instance>`: its
//! counts and sparse latency buckets for each service and version, over the ticks since
//! its last successful put; a compact, versioned binary encoding of it; and the exact
//! merge of several records (the leader's sum over instances, and an instance's fold of
//! ticks it could not publish).
//!
//! Encoding, format 1 (every integer an unsigned LEB128 varint):
//!
//! ```text
//! 0x01                                  format version
//! tick  ticks                           last tick covered, and how many (≥ 1)
//! n_services { name n_versions {        name: length, then UTF-8 bytes
//!     name requests errors
//!     n_success { matched succeeded }   at most MAX_SUCCESS_RULES
//!     n_buckets { start count }         start: see put_bucket_start (the gap since
//! } }                                   the previous bucket, in buckets; the width,
//!                                       hi − lo, only when it changes)
//! ```
//!
//! Buckets are kept as the recorder's (lowest µs, highest µs, count), so a record is
//! exact whatever histogram made it, and merging records is merging histograms. Delta
//! coding keeps a bucket to about 2 bytes (see the test `a_realistic_tick_is_small`).
//! Decoding is hostile-input safe: every length is checked against the bytes left, names
//! are bounded, and buckets must ascend without overlap.

use std::collections::BTreeMap;

use serin_judge::spec::MAX_SUCCESS_RULES;
use serin_judge::window::{Sample, SuccessCount};

/// The format byte this module writes and reads.
pub const FORMAT: u8 = 1;
/// The longest service or version name a record may hold.
pub const MAX_NAME: usize = 255;

/// One instance's numbers over ticks `tick + 1 - ticks ..= tick`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleRecord {
    /// The last tick covered (wall-clock aligned: see [`super::tick`]).
    pub tick: u64,
    /// How many ticks the record covers, ending at `tick`: more than 1 when earlier
    /// ticks could not be published and were folded in.
    pub ticks: u64,
    /// Per service, sorted by name.
    pub services: Vec<ServiceSample>,
}

/// One service's numbers, per version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSample {
    pub service: String,
    /// (version name, its numbers), sorted by name.
    pub versions: Vec<(String, Sample)>,
}

/// Why bytes are not a sample record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the record is empty")]
    Empty,
    #[error("format {0} is not one this serin reads (it reads format {FORMAT}); is every instance of the fleet the same version?")]
    Format(u8),
    #[error("the record ends inside {0}")]
    Truncated(&'static str),
    #[error("{0} does not fit in 64 bits")]
    Overflow(&'static str),
    #[error("{what} is {len} bytes long, more than {MAX_NAME}")]
    NameTooLong { what: &'static str, len: u64 },
    #[error("a {0} name is not UTF-8")]
    NotUtf8(&'static str),
    #[error("it covers 0 ticks, or more ticks than there have been")]
    Ticks,
    #[error("a version has {0} success counts, more than {MAX_SUCCESS_RULES}")]
    TooManySuccessRules(u64),
    #[error("latency buckets overlap, are out of order, or end past 2^64")]
    Buckets,
    #[error("{0} extra bytes follow the record")]
    Trailing(usize),
}

impl SampleRecord {
    /// The record's bytes, format [`FORMAT`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(FORMAT);
        put(&mut out, self.tick);
        put(&mut out, self.ticks);
        put(&mut out, self.services.len() as u64);
        for service in &self.services {
            put_name(&mut out, &service.service);
            put(&mut out, service.versions.len() as u64);
            for (version, sample) in &service.versions {
                put_name(&mut out, version);
                put(&mut out, sample.requests);
                put(&mut out, sample.errors);
                // Trailing rules that matched nothing are left out.
                let used = sample
                    .success
                    .iter()
                    .rposition(|s| *s != SuccessCount::default())
                    .map_or(0, |i| i + 1);
                put(&mut out, used as u64);
                for s in &sample.success[..used] {
                    put(&mut out, s.matched);
                    put(&mut out, s.succeeded);
                }
                put(&mut out, sample.latency.len() as u64);
                let (mut next, mut last_width) = (0u64, 0u64);
                for &(lo, hi, count) in &sample.latency {
                    let width = hi.saturating_sub(lo);
                    put_bucket_start(&mut out, lo.saturating_sub(next), width, last_width);
                    put(&mut out, count);
                    next = hi.saturating_add(1);
                    last_width = width;
                }
            }
        }
        out
    }

    /// The record `bytes` hold, or why they hold none.
    pub fn decode(bytes: &[u8]) -> Result<SampleRecord, DecodeError> {
        let (&format, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if format != FORMAT {
            return Err(DecodeError::Format(format));
        }
        let mut r = Reader(rest);
        let tick = r.varint("the tick")?;
        let ticks = r.varint("the tick count")?;
        if ticks == 0 || ticks - 1 > tick {
            return Err(DecodeError::Ticks);
        }
        let n_services = r.count("the services")?;
        let mut services = Vec::with_capacity(n_services);
        for _ in 0..n_services {
            let service = r.name("service")?;
            let n_versions = r.count("the versions")?;
            let mut versions = Vec::with_capacity(n_versions);
            for _ in 0..n_versions {
                let version = r.name("version")?;
                let mut sample = Sample {
                    requests: r.varint("the requests")?,
                    errors: r.varint("the errors")?,
                    ..Sample::default()
                };
                let n_success = r.varint("the success counts")?;
                if n_success > MAX_SUCCESS_RULES as u64 {
                    return Err(DecodeError::TooManySuccessRules(n_success));
                }
                for s in sample.success.iter_mut().take(n_success as usize) {
                    s.matched = r.varint("a success count")?;
                    s.succeeded = r.varint("a success count")?;
                }
                let n_buckets = r.count("the latency buckets")?;
                sample.latency.reserve_exact(n_buckets);
                // Where the next bucket may start: none after one that ends at u64::MAX.
                let (mut next, mut width) = (Some(0u64), 0u64);
                for _ in 0..n_buckets {
                    let gap;
                    (gap, width) = r.bucket_start(width)?;
                    let lo = next
                        .and_then(|n| n.checked_add(gap))
                        .ok_or(DecodeError::Buckets)?;
                    let hi = lo.checked_add(width).ok_or(DecodeError::Buckets)?;
                    let count = r.varint("a latency bucket")?;
                    sample.latency.push((lo, hi, count));
                    next = hi.checked_add(1);
                }
                versions.push((version, sample));
            }
            services.push(ServiceSample { service, versions });
        }
        if !r.0.is_empty() {
            return Err(DecodeError::Trailing(r.0.len()));
        }
        Ok(SampleRecord {
            tick,
            ticks,
            services,
        })
    }

    /// Adds `other`'s numbers to this record's: services and versions matched by name
    /// (ones only `other` has are added), counts summed, buckets summed by bucket. The
    /// ticks covered become the union's span: from the earlier start to the later end.
    /// Exact, associative and commutative (on records whose lists are sorted by name,
    /// which [`SampleRecord::decode`] does not require but every encoder here writes).
    pub fn merge(&mut self, other: &SampleRecord) {
        if self.ticks == 0 {
            self.tick = other.tick;
            self.ticks = other.ticks;
        } else if other.ticks != 0 {
            let first = self.first_tick().min(other.first_tick());
            self.tick = self.tick.max(other.tick);
            self.ticks = self.tick - first + 1;
        }
        for theirs in &other.services {
            let at = match self
                .services
                .binary_search_by(|s| s.service.as_str().cmp(&theirs.service))
            {
                Ok(at) => at,
                Err(at) => {
                    self.services.insert(
                        at,
                        ServiceSample {
                            service: theirs.service.clone(),
                            versions: Vec::new(),
                        },
                    );
                    at
                }
            };
            let versions = &mut self.services[at].versions;
            for (name, sample) in &theirs.versions {
                match versions.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                    Ok(i) => merge_sample(&mut versions[i].1, sample),
                    Err(i) => versions.insert(i, (name.clone(), sample.clone())),
                }
            }
        }
    }

    /// The first tick covered.
    pub fn first_tick(&self) -> u64 {
        (self.tick + 1).saturating_sub(self.ticks)
    }

    /// The numbers of `version` of `service`, if the record has them.
    pub fn sample(&self, service: &str, version: &str) -> Option<&Sample> {
        let s = self.services.iter().find(|s| s.service == service)?;
        s.versions
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, s)| s)
    }
}

/// Adds `other` to `into`: counts summed, latency buckets summed by (lo, hi).
pub fn merge_sample(into: &mut Sample, other: &Sample) {
    into.requests = into.requests.saturating_add(other.requests);
    into.errors = into.errors.saturating_add(other.errors);
    for (a, b) in into.success.iter_mut().zip(other.success) {
        a.matched = a.matched.saturating_add(b.matched);
        a.succeeded = a.succeeded.saturating_add(b.succeeded);
    }
    if other.latency.is_empty() {
        return;
    }
    let sorted = |b: &[(u64, u64, u64)]| b.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1));
    if sorted(&into.latency) && sorted(&other.latency) {
        // The usual case (decoded records and the recorder's buckets ascend): one pass.
        let mut merged = Vec::with_capacity(into.latency.len() + other.latency.len());
        let (mut a, mut b) = (
            into.latency.iter().peekable(),
            other.latency.iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) => match (x.0, x.1).cmp(&(y.0, y.1)) {
                    std::cmp::Ordering::Less => a.next().copied(),
                    std::cmp::Ordering::Greater => b.next().copied(),
                    std::cmp::Ordering::Equal => {
                        a.next();
                        b.next();
                        Some((x.0, x.1, x.2.saturating_add(y.2)))
                    }
                },
                (Some(_), None) => a.next().copied(),
                (None, Some(_)) => b.next().copied(),
                (None, None) => None,
            };
            match next {
                Some(bucket) => merged.push(bucket),
                None => break,
            }
        }
        into.latency = merged;
        return;
    }
    let mut buckets: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for &(lo, hi, n) in into.latency.iter().chain(&other.latency) {
        let count = buckets.entry((lo, hi)).or_default();
        *count = count.saturating_add(n);
    }
    into.latency = buckets
        .into_iter()
        .map(|((lo, hi), n)| (lo, hi, n))
        .collect();
}

/// Appends `value` as an unsigned LEB128 varint (7 bits a byte, low first).
fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends where a bucket of `width` starts, `gap` µs after the previous one ended:
/// a head `buckets << 2 | new_width << 1 | remainder`, where `buckets` is the gap in whole
/// buckets of `width + 1` (HdrHistogram's buckets start at multiples of their size, so
/// the gap is a few buckets, one byte, and the remainder is 0); then the width when it
/// differs from `last_width` (the widths double only at powers of two); then the
/// remainder in µs, if any.
fn put_bucket_start(out: &mut Vec<u8>, gap: u64, width: u64, last_width: u64) {
    let size = width.saturating_add(1);
    let (mut buckets, mut rest) = (gap / size, gap % size);
    if buckets > u64::MAX >> 2 {
        // Only with a width of 0 this far out: the remainder form holds it.
        (buckets, rest) = (0, gap);
    }
    let new_width = width != last_width;
    put(
        out,
        buckets << 2 | u64::from(new_width) << 1 | u64::from(rest != 0),
    );
    if new_width {
        put(out, width);
    }
    if rest != 0 {
        put(out, rest);
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    // Names come from the config, which bounds them far below this; cut to stay decodable.
    let mut len = name.len().min(MAX_NAME);
    while !name.is_char_boundary(len) {
        len -= 1;
    }
    put(out, len as u64);
    out.extend_from_slice(&name.as_bytes()[..len]);
}

/// The bytes of a record still to read.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for (i, &byte) in self.0.iter().enumerate() {
            let bits = u64::from(byte & 0x7f);
            let shift = 7 * i as u32;
            if shift >= 64 || (shift == 63 && bits > 1) {
                return Err(DecodeError::Overflow(what));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err(DecodeError::Truncated(what))
    }

    /// A bucket's start written by [`put_bucket_start`], after a bucket of
    /// `last_width`: (the gap in µs, the bucket's width).
    fn bucket_start(&mut self, last_width: u64) -> Result<(u64, u64), DecodeError> {
        let head = self.varint("a latency bucket")?;
        let width = if head & 2 != 0 {
            self.varint("a latency bucket")?
        } else {
            last_width
        };
        let rest = if head & 1 != 0 {
            self.varint("a latency bucket")?
        } else {
            0
        };
        let gap = (head >> 2)
            .checked_mul(width.saturating_add(1))
            .and_then(|g| g.checked_add(rest))
            .ok_or(DecodeError::Buckets)?;
        Ok((gap, width))
    }

    /// A count of items that follow, each at least one byte: bounded by the bytes left,
    /// so a hostile count cannot make a large allocation.
    fn count(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.varint(what)?;
        if n > self.0.len() as u64 {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n as usize)
    }

    fn name(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.varint(what)?;
        if len > MAX_NAME as u64 {
            return Err(DecodeError::NameTooLong { what, len });
        }
        let len = len as usize;
        if len > self.0.len() {
            return Err(DecodeError::Truncated(what));
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;
    use proptest::prelude::*;

    /// A histogram like the recorder's (proxy/src/record.rs).
    fn histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
    }

    /// A histogram's recorded buckets, as intake::sample_of takes them.
    fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64, u64)> {
        h.iter_recorded()
            .map(|v| {
                let hi = v.value_iterated_to();
                (h.lowest_equivalent(hi), hi, v.count_since_last_iteration())
            })
            .collect()
    }

    fn sample_of(latencies: &[u64], errors: u64, success: [(u64, u64); 2]) -> Sample {
        let mut h = histogram();
        for &l in latencies {
            h.record(l).expect("within bounds");
        }
        let mut s = Sample {
            requests: latencies.len() as u64 + errors,
            errors,
            latency: buckets(&h),
            ..Sample::default()
        };
        s.success[0] = SuccessCount {
            matched: success[0].0,
            succeeded: success[0].1,
        };
        s.success[1] = SuccessCount {
            matched: success[1].0,
            succeeded: success[1].1,
        };
        s
    }

    fn record(tick: u64, versions: &[(&str, Sample)]) -> SampleRecord {
        SampleRecord {
            tick,
            ticks: 1,
            services: vec![ServiceSample {
                service: "api".into(),
                versions: versions
                    .iter()
                    .map(|(n, s)| (n.to_string(), s.clone()))
                    .collect(),
            }],
        }
    }

    /// Lognormal latencies in µs around `median_us`, from a seeded generator.
    fn lognormal(rng: &mut fastrand::Rng, n: usize, median_us: f64, sigma: f64) -> Vec<u64> {
        (0..n)
            .map(|_| {
                // Box–Muller: a standard normal from two uniforms.
                let (u1, u2) = (rng.f64().max(f64::MIN_POSITIVE), rng.f64());
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (median_us * (sigma * z).exp()).clamp(1.0, 3.6e9) as u64
            })
            .collect()
    }

    #[test]
    fn a_realistic_tick_is_small() {
        // 1 000 req/s over a 1 s tick, 95 % to stable and 5 % to the canary, latencies
        // lognormal around 20 ms.
        let mut rng = fastrand::Rng::with_seed(7);
        let stable = sample_of(&lognormal(&mut rng, 950, 20_000.0, 0.6), 3, [(0, 0); 2]);
        let canary = sample_of(&lognormal(&mut rng, 50, 20_000.0, 0.6), 0, [(0, 0); 2]);
        let rec = record(1_765_000_000, &[("canary", canary), ("stable", stable)]);
        let bytes = rec.encode();
        let buckets: usize = rec.services[0]
            .versions
            .iter()
            .map(|(_, s)| s.latency.len())
            .sum();
        eprintln!(
            "a tick of 1 000 requests over 2 versions: {} bytes, {buckets} latency buckets",
            bytes.len()
        );
        assert_eq!(SampleRecord::decode(&bytes), Ok(rec));
        // About 2 bytes a bucket: its start and its count, mostly a byte each.
        assert!(bytes.len() < 5 * buckets / 2 + 64, "{} bytes", bytes.len());
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics_or_large_allocations() {
        assert_eq!(SampleRecord::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            SampleRecord::decode(&[2, 1, 1, 0]),
            Err(DecodeError::Format(2))
        );
        assert_eq!(SampleRecord::decode(&[1, 5, 0, 0]), Err(DecodeError::Ticks));
        assert_eq!(SampleRecord::decode(&[1, 5, 7, 0]), Err(DecodeError::Ticks));
        // A count of 2^63 services in four bytes.
        let mut huge = vec![1, 5, 1];
        put(&mut huge, 1 << 63);
        assert_eq!(
            SampleRecord::decode(&huge),
            Err(DecodeError::Truncated("the services"))
        );
        let eleven = [
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(
            SampleRecord::decode(&eleven),
            Err(DecodeError::Overflow("the tick"))
        );
        let mut long_name = vec![1, 5, 1, 1];
        put(&mut long_name, 256);
        assert!(matches!(
            SampleRecord::decode(&long_name),
            Err(DecodeError::NameTooLong { len: 256, .. })
        ));
        let mut bytes = record(9, &[("v", sample_of(&[10, 20], 0, [(0, 0); 2]))]).encode();
        bytes.push(0);
        assert_eq!(SampleRecord::decode(&bytes), Err(DecodeError::Trailing(1)));
        // A bucket as wide as all of u64 is a record (the encoder writes it), but a
        // second bucket after it would start past 2^64.
        let mut widest = vec![1, 5, 1, 1, 1, b'a', 1, 1, b'v', 1, 0, 0, 1];
        put(&mut widest, 2);
        put(&mut widest, u64::MAX);
        put(&mut widest, 1);
        assert!(SampleRecord::decode(&widest).is_ok());
        let mut overflow = vec![1, 5, 1, 1, 1, b'a', 1, 1, b'v', 1, 0, 0, 2];
        put(&mut overflow, 2);
        put(&mut overflow, u64::MAX);
        put(&mut overflow, 1);
        put(&mut overflow, 0);
        put(&mut overflow, 1);
        assert_eq!(SampleRecord::decode(&overflow), Err(DecodeError::Buckets));
        // A gap of 2^61 buckets of 16 µs.
        let mut far = vec![1, 5, 1, 1, 1, b'a', 1, 1, b'v', 1, 0, 0, 1];
        put(&mut far, (1 << 61) << 2 | 2);
        put(&mut far, 15);
        put(&mut far, 1);
        assert_eq!(SampleRecord::decode(&far), Err(DecodeError::Buckets));
    }

    #[test]
    fn buckets_out_of_order_still_merge_by_bucket() {
        let mut a = Sample {
            latency: vec![(20, 20, 1), (10, 10, 2)],
            ..Sample::default()
        };
        let b = Sample {
            latency: vec![(10, 10, 3), (30, 31, 1)],
            ..Sample::default()
        };
        merge_sample(&mut a, &b);
        assert_eq!(a.latency, [(10, 10, 5), (20, 20, 1), (30, 31, 1)]);
    }

    #[test]
    fn merge_spans_the_ticks_of_both() {
        let mut a = record(10, &[]);
        a.merge(&record(12, &[]));
        assert_eq!((a.first_tick(), a.tick, a.ticks), (10, 12, 3));
        let mut empty = SampleRecord::default();
        empty.merge(&a);
        assert_eq!(empty, a);
    }

    fn latencies() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(
            prop_oneof![1u64..2_000, 2_000u64..200_000, 200_000u64..60_000_000],
            0..60,
        )
    }

    fn instance() -> impl Strategy<Value = (Vec<u64>, Vec<u64>, u64, u64, u64)> {
        (latencies(), latencies(), 0u64..50, 0u64..1_000, 0u64..1_000)
    }

    fn record_of(
        tick: u64,
        (a, b, errors, m, s): &(Vec<u64>, Vec<u64>, u64, u64, u64),
    ) -> SampleRecord {
        record(
            tick,
            &[
                ("canary", sample_of(b, 0, [(*m, (*s).min(*m)), (0, 0)])),
                ("stable", sample_of(a, *errors, [(0, 0), (*s, 0)])),
            ],
        )
    }

    /// Ascending, non-overlapping buckets of any widths and gaps, not only
    /// HdrHistogram's.
    fn any_buckets() -> impl Strategy<Value = Vec<(u64, u64, u64)>> {
        let size = prop_oneof![0u64..4, 0u64..100_000, Just(u64::MAX >> 3)];
        prop::collection::vec((size.clone(), size, 0u64..u64::MAX), 0..40).prop_map(|parts| {
            let mut next = 0u64;
            let mut buckets = Vec::new();
            for (gap, width, count) in parts {
                let Some(lo) = next.checked_add(gap) else {
                    break;
                };
                let Some(hi) = lo.checked_add(width) else {
                    break;
                };
                buckets.push((lo, hi, count));
                let Some(after) = hi.checked_add(1) else {
                    break;
                };
                next = after;
            }
            buckets
        })
    }

    proptest! {
        #[test]
        fn any_buckets_survive_the_wire(latency in any_buckets()) {
            let sample = Sample { requests: 1, latency, ..Sample::default() };
            let rec = record(3, &[("v", sample)]);
            prop_assert_eq!(SampleRecord::decode(&rec.encode()), Ok(rec));
        }

        #[test]
        fn encode_then_decode_is_identity(inst in instance(), tick in 0u64..u64::MAX / 2, ticks in 1u64..100) {
            let mut rec = record_of(tick, &inst);
            rec.ticks = ticks.min(tick + 1);
            prop_assert_eq!(SampleRecord::decode(&rec.encode()), Ok(rec));
        }

        #[test]
        fn merge_is_associative_commutative_and_equals_merging_the_histograms(
            a in instance(), b in instance(), c in instance(),
        ) {
            let (ra, rb, rc) = (record_of(7, &a), record_of(7, &b), record_of(7, &c));
            let mut ab_c = ra.clone();
            ab_c.merge(&rb);
            ab_c.merge(&rc);
            let mut bc = rb.clone();
            bc.merge(&rc);
            let mut a_bc = ra.clone();
            a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut c_b_a = rc.clone();
            c_b_a.merge(&rb);
            c_b_a.merge(&ra);
            prop_assert_eq!(&ab_c, &c_b_a);

            // The same requests recorded into one histogram per version.
            let mut stable = histogram();
            let mut canary = histogram();
            for (s, c, ..) in [&a, &b, &c] {
                for &l in s { stable.record(l).expect("in bounds"); }
                for &l in c { canary.record(l).expect("in bounds"); }
            }
            let merged = ab_c.sample("api", "stable").expect("stable");
            prop_assert_eq!(&merged.latency, &buckets(&stable));
            prop_assert_eq!(merged.requests, stable.len() + a.2 + b.2 + c.2);
            prop_assert_eq!(&ab_c.sample("api", "canary").expect("canary").latency, &buckets(&canary));
            // And it survives the wire.
            prop_assert_eq!(SampleRecord::decode(&ab_c.encode()), Ok(ab_c.clone()));
        }
    }
}
