//! Which worker a thread is: serin runs one single-threaded runtime per worker, and a
//! request stays on its worker from accept to response. Per-worker state (stats shards,
//! upstream connection pools) is indexed by [`index`], so workers never share it.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    static WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as worker `index` (called once when the worker starts).
pub fn set_index(index: usize) {
    INDEX.with(|cell| cell.set(index));
    WORKER.with(|cell| cell.set(true));
}

/// Whether this thread is a worker: it runs one single-threaded runtime, so a task
/// polled here is never polled on another thread.
#[inline]
pub(crate) fn is_worker() -> bool {
    WORKER.with(Cell::get)
}

/// The current thread's worker index. A thread that is no worker (a test's runtime, a
/// benchmark) is given the next free index on first use.
#[inline]
pub fn index() -> usize {
    INDEX.with(|cell| {
        let mut index = cell.get();
        if index == usize::MAX {
            index = NEXT.fetch_add(1, Ordering::Relaxed);
            cell.set(index);
        }
        index
    })
}
