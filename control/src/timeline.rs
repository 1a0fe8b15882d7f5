//! The decision log: every rollout decision with its time, step, weights, the window
//! numbers of each version and the rule that decided. Kept in memory (bounded) and
//! appended as JSON Lines to `state_dir/<service>.timeline.jsonl` by the state writer
//! (`crate::persist`), off the control loop. The records are `crate::wire`'s.

use std::collections::VecDeque;
use std::path::PathBuf;

use serin_judge::analysis::Breach;
use serin_judge::window::Aggregate;

use crate::persist::StateWriter;
use crate::wire::{RuleRecord, TimelineEvent, WindowNumbers};

/// Events kept in memory per service.
pub const KEEP: usize = 1000;

impl From<&Breach> for RuleRecord {
    fn from(b: &Breach) -> Self {
        let finite = |v: f64| v.is_finite().then_some(v);
        Self {
            rule: b.rule.clone(),
            kind: b.kind.to_string(),
            observed: finite(b.observed),
            threshold: finite(b.threshold),
            summary: b.summary.clone(),
            evidence: b.evidence,
            needed: b.needed,
        }
    }
}

impl From<&Aggregate> for WindowNumbers {
    fn from(a: &Aggregate) -> Self {
        Self {
            requests: a.requests,
            errors: a.errors,
            error_rate: a.error_rate(),
            p50_ms: a.quantile_ms(0.50),
            p95_ms: a.quantile_ms(0.95),
            p99_ms: a.quantile_ms(0.99),
        }
    }
}

#[derive(Debug)]
pub struct Timeline {
    events: VecDeque<TimelineEvent>,
    file: PathBuf,
    writer: StateWriter,
}

impl Timeline {
    /// A timeline whose events `writer` appends to `file`.
    pub fn new(file: PathBuf, writer: StateWriter) -> Self {
        Self {
            events: VecDeque::new(),
            file,
            writer,
        }
    }

    /// Keeps `event` and hands it to the writer for the file; a failed write is
    /// logged, never fatal.
    pub fn record(&mut self, event: TimelineEvent) {
        match serde_json::to_string(&event) {
            Ok(mut line) => {
                line.push('\n');
                self.writer.append(self.file.clone(), line);
            }
            Err(err) => tracing::warn!(error = %err, "cannot encode a timeline event"),
        }
        if self.events.len() == KEEP {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Keeps `event` without writing it (fleet mode: the leader writes it to etcd).
    pub fn remember(&mut self, event: TimelineEvent) {
        if self.events.len() == KEEP {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Oldest first.
    pub fn events(&self) -> impl Iterator<Item = &TimelineEvent> {
        self.events.iter()
    }
}
