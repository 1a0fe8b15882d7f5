//! The writer of the rollout state files and timeline lines: a thread of its own
//! (`serin-state`), so the control loop — which also serves the admin API — never
//! writes or fsyncs a file, and a slow or hung disk delays no weight change.
//!
//! The loop hands over what is to be written and goes on: a rollout's state
//! ([`StateWriter::save`]; the latest of a service replaces one not yet written) and
//! a timeline line ([`StateWriter::append`]; in order, at most [`MAX_LINES`] waiting,
//! the oldest dropped past that with a warning). The thread writes with
//! `crate::state::save` (atomic: temporary file, fsync, rename) and appends lines. A
//! state that fails to save is logged once and retried, 1 s later then doubling up to
//! 30 s, until it is saved or a newer one replaces it; never fatal. A line that fails
//! to append is logged and dropped: the timeline keeps it in memory.
//! [`StateWriter::flush`] waits (bounded) until everything handed over is written:
//! at shutdown, and before a restart reads the files.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::state;
use crate::wire::SavedState;

/// Timeline lines waiting at most; past it the oldest is dropped.
pub const MAX_LINES: usize = 10_000;
/// The first wait before a failed state is saved again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What waits to be written.
#[derive(Debug, Default)]
struct Pending {
    /// The newest state of each service not yet saved.
    states: BTreeMap<String, SavedState>,
    /// Lines to append, in order: (file, line with its newline).
    lines: VecDeque<(PathBuf, String)>,
    /// Lines dropped from a full queue since the last warning.
    dropped: u64,
    /// The states of the batch being written.
    in_flight: BTreeMap<String, SavedState>,
    /// States that failed and wait for `retry_at`.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Services whose state failed to save, logged once until it is saved.
    failing: BTreeSet<String>,
    /// The thread is writing a batch.
    writing: bool,
    stop: bool,
}

/// One batch taken for writing.
#[derive(Debug, Default)]
struct Batch {
    states: Vec<SavedState>,
    lines: Vec<(PathBuf, String)>,
}

impl Pending {
    fn save(&mut self, state: SavedState) {
        self.states.insert(state.service.clone(), state);
    }

    fn append(&mut self, file: PathBuf, line: String) {
        if self.lines.len() >= MAX_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back((file, line));
    }

    /// Whether something can be written at `now`.
    fn ready(&self, now: Instant) -> bool {
        !self.lines.is_empty()
            || (!self.states.is_empty() && self.retry_at.is_none_or(|at| now >= at))
    }

    fn is_empty(&self) -> bool {
        self.states.is_empty() && self.lines.is_empty() && !self.writing
    }

    /// Everything that can be written at `now`.
    fn take(&mut self, now: Instant) -> Batch {
        let states: Vec<SavedState> = if self.retry_at.is_none_or(|at| now >= at) {
            std::mem::take(&mut self.states).into_values().collect()
        } else {
            Vec::new()
        };
        self.in_flight = states
            .iter()
            .map(|s| (s.service.clone(), s.clone()))
            .collect();
        Batch {
            states,
            lines: self.lines.drain(..).collect(),
        }
    }

    /// `failed` states go back, unless a newer one came meanwhile; they are retried
    /// after the backoff. Returns the services newly failing (to log once).
    fn settle(&mut self, saved: Vec<String>, failed: Vec<SavedState>, now: Instant) -> Vec<String> {
        self.in_flight.clear();
        for service in saved {
            self.failing.remove(&service);
        }
        let mut newly = Vec::new();
        if failed.is_empty() {
            self.retry_at = None;
            self.backoff = Duration::ZERO;
            return newly;
        }
        self.backoff = (self.backoff * 2).clamp(RETRY_FIRST, RETRY_MAX);
        self.retry_at = Some(now + self.backoff);
        for state in failed {
            if self.failing.insert(state.service.clone()) {
                newly.push(state.service.clone());
            }
            self.states.entry(state.service.clone()).or_insert(state);
        }
        newly
    }
}

struct Shared {
    pending: Mutex<Pending>,
    /// The thread waits on it for work.
    work: Condvar,
    /// `flush` waits on it for an empty queue.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle the control loop and the timelines hand writes to. Cloning it shares the
/// writer; the thread ends when the last handle is dropped (after writing what waits).
#[derive(Clone)]
pub struct StateWriter {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for StateWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWriter").finish_non_exhaustive()
    }
}

/// Tells the thread to end when the last handle goes; it is not joined, as it may be
/// stuck on a disk that does not answer.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.work.notify_all();
    }
}

impl StateWriter {
    /// Starts the writer's thread. If the thread cannot be started, writes are made on
    /// the caller's thread instead (logged).
    pub fn start(state_dir: &Path) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let thread = shared.clone();
        let dir = state_dir.to_path_buf();
        if let Err(err) = std::thread::Builder::new()
            .name("serin-state".into())
            .spawn(move || run(&thread, &dir))
        {
            tracing::error!(error = %err, "cannot start the state writer's thread; rollout state is not saved");
        }
        Self {
            _stop: Arc::new(StopOnDrop(shared.clone())),
            shared,
        }
    }

    /// Saves `state` (replacing a state of its service not yet written).
    pub fn save(&self, state: SavedState) {
        self.shared.lock().save(state);
        self.shared.work.notify_one();
    }

    /// The newest state of `service` handed over and not yet known to be on disk: what
    /// reading its file would give once the writer has caught up.
    pub fn unwritten(&self, service: &str) -> Option<SavedState> {
        let pending = self.shared.lock();
        pending
            .states
            .get(service)
            .or_else(|| pending.in_flight.get(service))
            .cloned()
    }

    /// Appends `line` (ending with a newline) to `file`.
    pub fn append(&self, file: PathBuf, line: String) {
        let dropped = {
            let mut pending = self.shared.lock();
            pending.append(file, line);
            std::mem::take(&mut pending.dropped)
        };
        self.shared.work.notify_one();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                waiting = MAX_LINES,
                "timeline lines wait for a disk that does not keep up; the oldest was dropped (the timeline keeps them in memory)"
            );
        }
    }

    /// Waits at most `timeout` for everything handed over to be written; false if it
    /// was not (a failing or hung disk).
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut pending = self.shared.lock();
        // Failed states wait for their retry: try them now.
        pending.retry_at = None;
        self.shared.work.notify_one();
        while !pending.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            pending = match self.shared.done.wait_timeout(pending, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

/// The thread: waits for work, writes it, settles failures; ends on stop once nothing
/// is left to write.
fn run(shared: &Shared, dir: &Path) {
    let mut pending = shared.lock();
    loop {
        let now = Instant::now();
        if !pending.ready(now) {
            if pending.stop {
                break;
            }
            if pending.is_empty() {
                shared.done.notify_all();
            }
            let wait = pending
                .retry_at
                .filter(|_| !pending.states.is_empty())
                .map_or(RETRY_MAX, |at| at.saturating_duration_since(now));
            pending = match shared.work.wait_timeout(pending, wait) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            continue;
        }
        let batch = pending.take(now);
        pending.writing = true;
        drop(pending);
        let (saved, failed) = write(dir, batch);
        pending = shared.lock();
        pending.writing = false;
        let stopping = pending.stop;
        for service in pending.settle(saved, failed, Instant::now()) {
            tracing::warn!(service, "the rollout state is not saved yet; retrying");
        }
        if stopping && pending.retry_at.is_some() {
            // Stopping with a disk that fails: what could not be written is given up.
            tracing::warn!("the state writer stops with unsaved rollout state");
            break;
        }
    }
    shared.done.notify_all();
}

/// Writes `batch`: the services whose state was saved, and the states that failed.
fn write(dir: &Path, batch: Batch) -> (Vec<String>, Vec<SavedState>) {
    let mut saved = Vec::new();
    let mut failed = Vec::new();
    for state in batch.states {
        match state::save(dir, &state) {
            Ok(()) => saved.push(state.service),
            Err(err) => {
                tracing::debug!(service = %state.service, error = %err, "cannot save the rollout state");
                failed.push(state);
            }
        }
    }
    for (file, line) in batch.lines {
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(&file))
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(err) = written {
            tracing::warn!(file = %file.display(), error = %err, "cannot append to the timeline file; the event is kept in memory");
        }
    }
    (saved, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_judge::rollout::RolloutState;

    fn state(service: &str, at: u64) -> SavedState {
        SavedState {
            format: crate::wire::STATE_FORMAT,
            service: service.into(),
            fingerprint: "f".into(),
            rollout: (&RolloutState::new(at)).into(),
            detectors: None,
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("serin-persist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_latest_state_of_a_service_wins() {
        let mut p = Pending::default();
        p.save(state("api", 1));
        p.save(state("web", 1));
        p.save(state("api", 2));
        let batch = p.take(Instant::now());
        let at: Vec<(String, u64)> = batch
            .states
            .iter()
            .map(|s| (s.service.clone(), s.rollout.started_ms))
            .collect();
        assert_eq!(at, vec![("api".into(), 2), ("web".into(), 1)]);
    }

    #[test]
    fn a_state_being_written_is_still_the_newest_known() {
        let mut p = Pending::default();
        p.save(state("api", 1));
        let _batch = p.take(Instant::now());
        assert_eq!(
            p.in_flight.get("api").map(|s| s.rollout.started_ms),
            Some(1)
        );
        p.settle(vec!["api".into()], Vec::new(), Instant::now());
        assert!(p.in_flight.is_empty());
    }

    #[test]
    fn a_failed_state_is_retried_later_unless_a_newer_one_came() {
        let now = Instant::now();
        let mut p = Pending::default();
        p.save(state("api", 1));
        p.save(state("web", 1));
        let batch = p.take(now);
        // Meanwhile a newer state of web arrived.
        p.save(state("web", 2));
        let newly = p.settle(Vec::new(), batch.states, now);
        assert_eq!(newly, vec!["api".to_string(), "web".to_string()]);
        assert!(!p.ready(now), "not before the backoff");
        assert!(p.ready(now + RETRY_FIRST));
        let again = p.take(now + RETRY_FIRST);
        let at: Vec<u64> = again.states.iter().map(|s| s.rollout.started_ms).collect();
        assert_eq!(at, vec![1, 2], "api's failed state, web's newer one");
        // Failing again: logged once, the wait doubles.
        assert!(p.settle(Vec::new(), again.states, now).is_empty());
        assert!(!p.ready(now + RETRY_FIRST));
        assert!(p.ready(now + 2 * RETRY_FIRST));
        // Saved: the next failure is logged again.
        let batch = p.take(now + 2 * RETRY_FIRST);
        p.settle(
            batch.states.iter().map(|s| s.service.clone()).collect(),
            Vec::new(),
            now,
        );
        assert!(p.is_empty());
        p.save(state("api", 3));
        let batch = p.take(now);
        assert_eq!(
            p.settle(Vec::new(), batch.states, now),
            vec!["api".to_string()]
        );
    }

    #[test]
    fn the_backoff_stops_doubling_at_its_maximum() {
        let now = Instant::now();
        let mut p = Pending::default();
        for _ in 0..20 {
            p.settle(Vec::new(), vec![state("api", 1)], now);
        }
        assert_eq!(p.backoff, RETRY_MAX);
    }

    #[test]
    fn lines_keep_their_order_and_a_full_queue_drops_the_oldest() {
        let mut p = Pending::default();
        for i in 0..MAX_LINES + 2 {
            p.append(PathBuf::from("t"), format!("{i}\n"));
        }
        assert_eq!(p.dropped, 2);
        let lines = p.take(Instant::now()).lines;
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines[0].1, "2\n");
        assert_eq!(lines[MAX_LINES - 1].1, format!("{}\n", MAX_LINES + 1));
    }

    #[test]
    fn written_in_the_background_and_flushed() {
        let dir = scratch("flush");
        let writer = StateWriter::start(&dir);
        writer.save(state("api", 1));
        writer.save(state("api", 2));
        writer.append(dir.join("api.timeline.jsonl"), "one\n".into());
        writer.append(dir.join("api.timeline.jsonl"), "two\n".into());
        assert!(writer.flush(Duration::from_secs(10)));
        assert_eq!(writer.unwritten("api"), None, "all written");
        let saved = state::load(&dir, "api")
            .ok()
            .flatten()
            .map(|p| p.rollout.started_ms);
        assert_eq!(saved, Some(2));
        let lines = std::fs::read_to_string(dir.join("api.timeline.jsonl")).unwrap_or_default();
        assert_eq!(lines, "one\ntwo\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_state_that_cannot_be_saved_is_saved_once_the_directory_can_be_written() {
        let base = scratch("retry");
        std::fs::create_dir_all(&base).unwrap_or_else(|e| panic!("{e}"));
        // A file where the directory should be: saving fails.
        let dir = base.join("state");
        std::fs::write(&dir, "x").unwrap_or_else(|e| panic!("{e}"));
        let writer = StateWriter::start(&dir);
        writer.save(state("api", 7));
        assert!(
            !writer.flush(Duration::from_millis(300)),
            "it cannot be written yet"
        );
        let unwritten = writer.unwritten("api").map(|p| p.rollout.started_ms);
        assert_eq!(
            unwritten,
            Some(7),
            "what a reload reads instead of the file"
        );
        std::fs::remove_file(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(writer.flush(Duration::from_secs(10)), "retried and written");
        let saved = state::load(&dir, "api")
            .ok()
            .flatten()
            .map(|p| p.rollout.started_ms);
        assert_eq!(saved, Some(7));
        let _ = std::fs::remove_dir_all(&base);
    }
}
