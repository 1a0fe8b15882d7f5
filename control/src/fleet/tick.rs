//! Ticks aligned on the wall clock, so that every instance's tick `n` covers the same
//! span (`[n·tick_ms, (n+1)·tick_ms)` since the Unix epoch) and the leader can add them
//! up; and the two folds that keep every sample counted exactly once when puts are late:
//!
//! * [`Outbox`] (every instance): a tick's sample that could not be put is folded into
//!   the next one, so a record covers the ticks since the last successful put.
//! * [`Collector`] (the leader): records by (instance, tick), a record seen twice dropped,
//!   one for a tick already judged folded into the next judgement; a new leader's
//!   counts the records stored in etcd of ticks the last leader did not judge.
//!
//! Pure: time is a parameter (`unix_ms`), never read here.

use std::collections::{BTreeMap, HashMap};

use super::sample::SampleRecord;
use super::view::{add_counted, add_record, Counted};

/// The tick `unix_ms` falls in, for ticks of `tick_ms` (> 0) milliseconds.
pub fn tick_index(unix_ms: u64, tick_ms: u64) -> u64 {
    unix_ms / tick_ms.max(1)
}

/// When tick `index` starts, in Unix milliseconds.
pub fn tick_start_ms(index: u64, tick_ms: u64) -> u64 {
    index.saturating_mul(tick_ms.max(1))
}

/// How long from `unix_ms` until the next tick starts (a full tick on a boundary).
pub fn until_next_tick_ms(unix_ms: u64, tick_ms: u64) -> u64 {
    let tick_ms = tick_ms.max(1);
    tick_ms - unix_ms % tick_ms
}

/// An instance's samples not yet published: each tick's record is folded into what is
/// pending, so the next put covers every tick since the last one that succeeded.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: Option<SampleRecord>,
}

impl Outbox {
    /// Adds a tick's record to what is pending.
    pub fn push(&mut self, record: SampleRecord) {
        match &mut self.pending {
            Some(pending) => pending.merge(&record),
            None => self.pending = Some(record),
        }
    }

    /// What the next put should write, if anything is pending.
    pub fn pending(&self) -> Option<&SampleRecord> {
        self.pending.as_ref()
    }

    /// The put of what [`Outbox::pending`] returned succeeded: those ticks are published.
    pub fn published(&mut self) {
        self.pending = None;
    }
}

/// What [`Collector::accept`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Counted for the judgement of this tick.
    ForTick(u64),
    /// Its ticks were judged already: counted for the next judgement, this tick.
    FoldedInto(u64),
    /// The instance's record for this tick (or a later one) was counted already.
    Duplicate,
    /// Read on taking over: a tick the last leader judged already (not counted again).
    JudgedBefore,
}

/// The leader's intake of the instances' records, per tick to judge.
#[derive(Debug, Default)]
pub struct Collector {
    /// The last tick judged; records up to it go to the next judgement.
    judged_through: Option<u64>,
    /// The last tick counted of each instance.
    last_tick: HashMap<String, u64>,
    /// The merged records of each tick not yet judged.
    ticks: BTreeMap<u64, Merged>,
}

/// The instances' records for one tick, added up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Merged {
    pub record: SampleRecord,
    /// The instances counted, sorted.
    pub instances: Vec<String>,
    /// Each instance's counts in `record` (for the fleet's summary).
    pub counts: BTreeMap<String, Counted>,
}

impl Collector {
    /// A collector that starts judging after `judged_through` (a new leader: the tick the
    /// state it read was judged at), or from the first record (`None`).
    pub fn new(judged_through: Option<u64>) -> Self {
        Self {
            judged_through,
            ..Self::default()
        }
    }

    /// Counts `record`, published by `instance`, once.
    pub fn accept(&mut self, instance: &str, record: &SampleRecord) -> Accepted {
        if self
            .last_tick
            .get(instance)
            .is_some_and(|&last| record.tick <= last)
        {
            return Accepted::Duplicate;
        }
        self.last_tick.insert(instance.to_string(), record.tick);
        let (tick, accepted) = match self.judged_through {
            Some(judged) if record.tick <= judged => (judged + 1, Accepted::FoldedInto(judged + 1)),
            _ => (record.tick, Accepted::ForTick(record.tick)),
        };
        let merged = self.ticks.entry(tick).or_default();
        merged.record.merge(record);
        // A late record widens the span, but the judgement is of `tick`.
        merged.record.tick = merged.record.tick.max(tick);
        if let Err(at) = merged
            .instances
            .binary_search_by(|i| i.as_str().cmp(instance))
        {
            merged.instances.insert(at, instance.to_string());
        }
        add_record(
            merged.counts.entry(instance.to_string()).or_default(),
            record,
        );
        accepted
    }

    /// Counts `record`, read from etcd as it stood (a new leader's first read of
    /// `P/samples/`, or after compaction): a record of an instance not seen yet whose
    /// ticks were judged (by the last leader, when taking over) is not counted again;
    /// one of later ticks is counted as if it had just come.
    pub fn accept_stored(&mut self, instance: &str, record: &SampleRecord) -> Accepted {
        let judged = self.judged_through.is_some_and(|j| record.tick <= j);
        if judged && !self.last_tick.contains_key(instance) {
            self.last_tick.insert(instance.to_string(), record.tick);
            return Accepted::JudgedBefore;
        }
        self.accept(instance, record)
    }

    /// Takes everything counted for ticks up to `tick`, merged, for its judgement; later
    /// records for those ticks fold into the next. `None` when nothing was counted.
    pub fn judge(&mut self, tick: u64) -> Option<Merged> {
        if self.judged_through.is_some_and(|j| tick <= j) {
            return None;
        }
        self.judged_through = Some(tick);
        let later = self.ticks.split_off(&(tick + 1));
        let due = std::mem::replace(&mut self.ticks, later);
        let mut out: Option<Merged> = None;
        for (_, merged) in due {
            match &mut out {
                None => out = Some(merged),
                Some(out) => {
                    out.record.merge(&merged.record);
                    for (instance, counted) in &merged.counts {
                        add_counted(out.counts.entry(instance.clone()).or_default(), counted);
                    }
                    for i in merged.instances {
                        if let Err(at) = out.instances.binary_search(&i) {
                            out.instances.insert(at, i);
                        }
                    }
                }
            }
        }
        out
    }

    /// The last tick judged.
    pub fn judged_through(&self) -> Option<u64> {
        self.judged_through
    }

    /// Where a new leader starts: after the last tick the fleet judged (`P/summary`'s
    /// tick), so that the records in etcd of ticks after it are counted; without a
    /// summary, after the tick under way, `now_tick` (its records may have been judged).
    pub fn taking_over(summary_tick: Option<u64>, now_tick: u64) -> Self {
        Self::new(Some(summary_tick.map_or(now_tick, |j| j.min(now_tick))))
    }

    /// Forgets an instance that left (its lease expired), so its name can come back.
    pub fn forget(&mut self, instance: &str) {
        self.last_tick.remove(instance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::sample::ServiceSample;
    use serin_judge::window::Sample;

    /// A fake clock: Unix milliseconds, moved by hand.
    struct Clock(u64);

    fn rec(tick: u64, requests: u64) -> SampleRecord {
        SampleRecord {
            tick,
            ticks: 1,
            services: vec![ServiceSample {
                service: "api".into(),
                versions: vec![(
                    "stable".into(),
                    Sample {
                        requests,
                        ..Sample::default()
                    },
                )],
            }],
        }
    }

    fn requests(m: &Merged) -> u64 {
        m.record.sample("api", "stable").map_or(0, |s| s.requests)
    }

    #[test]
    fn ticks_are_aligned_on_the_wall_clock() {
        let mut clock = Clock(1_765_000_000_999);
        assert_eq!(tick_index(clock.0, 1_000), 1_765_000_000);
        assert_eq!(until_next_tick_ms(clock.0, 1_000), 1);
        clock.0 += 1;
        assert_eq!(tick_index(clock.0, 1_000), 1_765_000_001);
        assert_eq!(tick_start_ms(1_765_000_001, 1_000), clock.0);
        assert_eq!(until_next_tick_ms(clock.0, 1_000), 1_000);
        // Two instances whose clocks read 300 ms apart within one tick agree on it.
        assert_eq!(tick_index(12_100, 500), tick_index(12_400, 500));
        assert_eq!(tick_index(5, 0), 5, "a zero tick length is taken as 1 ms");
    }

    #[test]
    fn an_unpublished_tick_is_folded_into_the_next_put() {
        let mut outbox = Outbox::default();
        outbox.push(rec(10, 5));
        // The put of tick 10 failed; tick 11 comes.
        outbox.push(rec(11, 7));
        let pending = outbox.pending().expect("pending").clone();
        assert_eq!((pending.first_tick(), pending.tick), (10, 11));
        assert_eq!(
            pending.sample("api", "stable").map(|s| s.requests),
            Some(12)
        );
        outbox.published();
        assert!(outbox.pending().is_none());
        outbox.push(rec(12, 1));
        assert_eq!(
            outbox.pending().map(|p| (p.first_tick(), p.tick)),
            Some((12, 12))
        );
    }

    #[test]
    fn each_record_is_counted_once_and_late_ones_fold_into_the_next_judgement() {
        let mut c = Collector::new(None);
        assert_eq!(c.accept("a", &rec(10, 1)), Accepted::ForTick(10));
        assert_eq!(c.accept("b", &rec(10, 2)), Accepted::ForTick(10));
        // A watch that resumed delivers a's put again.
        assert_eq!(c.accept("a", &rec(10, 1)), Accepted::Duplicate);
        assert_eq!(c.accept("a", &rec(11, 4)), Accepted::ForTick(11));
        let t10 = c.judge(10).expect("tick 10");
        assert_eq!(
            (requests(&t10), t10.instances.clone()),
            (3, vec!["a".into(), "b".into()])
        );
        assert_eq!(c.judge(10), None, "a tick is judged once");
        // c's tick 10 comes after it was judged: it counts in tick 11.
        assert_eq!(c.accept("c", &rec(10, 8)), Accepted::FoldedInto(11));
        let t11 = c.judge(11).expect("tick 11");
        assert_eq!(requests(&t11), 12);
        assert_eq!((t11.record.first_tick(), t11.record.tick), (10, 11));
        assert_eq!(t11.instances, ["a", "c"]);
        // Each instance's own counts, for the fleet's summary: they add up to the tick's.
        let own = |i: &str| t11.counts[i][&("api".to_string(), "stable".to_string())].requests;
        assert_eq!((own("a"), own("c")), (4, 8));
        assert_eq!(c.judge(12), None);
        // An instance that left and came back with the same name starts afresh.
        c.forget("a");
        assert_eq!(c.accept("a", &rec(5, 1)), Accepted::FoldedInto(13));
    }

    #[test]
    fn a_new_leader_counts_the_records_in_etcd_of_ticks_the_last_leader_did_not_judge() {
        // 500 ms ticks. The last leader judged tick 20 (its summary says so) and died;
        // another takes over during tick 26, the lease's TTL later.
        let clock = Clock(26 * 500 + 120);
        let mut c = Collector::taking_over(Some(20), tick_index(clock.0, 500));
        // etcd holds each instance's last put: a's is of tick 20, judged already.
        assert_eq!(c.accept_stored("a", &rec(20, 5)), Accepted::JudgedBefore);
        // b's and c's are of tick 25, which no leader judged: counted, not lost.
        assert_eq!(c.accept_stored("b", &rec(25, 7)), Accepted::ForTick(25));
        assert_eq!(c.accept_stored("c", &rec(25, 3)), Accepted::ForTick(25));
        // The live watch then brings tick 26's, and b's put of 25 once more.
        assert_eq!(c.accept("a", &rec(26, 1)), Accepted::ForTick(26));
        assert_eq!(c.accept("b", &rec(25, 7)), Accepted::Duplicate);
        let first = c.judge(26).expect("the first judgement");
        assert_eq!(requests(&first), 7 + 3 + 1, "tick 25's records are in it");
        assert_eq!(first.instances, ["a", "b", "c"]);

        // Without a summary (no leader judged yet, or an older serin's), the tick under
        // way is where it starts, as the records in etcd may have been judged.
        let mut c = Collector::taking_over(None, 26);
        assert_eq!(c.accept_stored("b", &rec(25, 7)), Accepted::JudgedBefore);
        assert_eq!(c.judged_through(), Some(26));
        // A summary from a clock ahead of this one does not skip ticks to come.
        assert_eq!(
            Collector::taking_over(Some(40), 26).judged_through(),
            Some(26)
        );
        // After compaction, a stored record of an instance already counted is no new one.
        let mut c = Collector::new(Some(30));
        assert_eq!(c.accept("a", &rec(31, 1)), Accepted::ForTick(31));
        assert_eq!(c.accept_stored("a", &rec(31, 1)), Accepted::Duplicate);
    }

    #[test]
    fn a_new_leader_judges_after_the_tick_the_state_was_judged_at() {
        let mut c = Collector::new(Some(20));
        assert_eq!(c.accept("a", &rec(20, 1)), Accepted::FoldedInto(21));
        assert_eq!(c.accept("b", &rec(21, 1)), Accepted::ForTick(21));
        assert_eq!(c.judge(20), None);
        assert_eq!(c.judge(21).map(|m| requests(&m)), Some(2));
        assert_eq!(c.judged_through(), Some(21));
    }
}
