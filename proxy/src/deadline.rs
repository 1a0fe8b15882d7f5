//! `request_timeout` without a timer per request: a worker's requests waiting for an
//! answer share one list of deadlines and one clock task ([`timeout_at`]).
//!
//! `tokio::time::timeout` puts each request in tokio's timer wheel and takes it out
//! again when the answer comes: two passes through the wheel's lock and linked lists,
//! about 600 instructions of a request that costs 40 000. Almost no request ever
//! reaches its deadline, so serin arms the clock lazily instead:
//!
//! - a request puts its deadline and waker in its worker's list (a slab: a vacated
//!   slot is reused, so nothing is allocated once the list has grown) and takes them
//!   out when it ends: a few dozen instructions, no lock (the list is the worker
//!   thread's own; a worker runs one single-threaded runtime);
//! - one clock task per worker sleeps until the earliest deadline it knows of. A
//!   request that ends does not re-arm it (tokio-util's `DelayQueue` would, each time
//!   the earliest entry goes, which under load is most times): when the clock wakes
//!   for a deadline whose request has already been answered, it looks through the
//!   list, wakes the requests whose deadline has passed and sleeps until the earliest
//!   one left. With equal timeouts that is one look per `request_timeout`. A new
//!   deadline earlier than the armed one (a service with a shorter timeout, or an
//!   idle list) wakes the clock to re-arm.
//!
//! A deadline fires at the time tokio's timer would fire it (the clock sleeps until
//! the exact earliest deadline); only the look-through is deferred.
//!
//! Off a worker thread (a test's or a benchmark's multi-threaded runtime, where a task
//! can move between threads) the timeout falls back to tokio's own sleep.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use slab::Slab;
use tokio::time::{Instant, Sleep};

/// The answer did not come before the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// One waiting request.
struct Entry {
    at: Instant,
    waker: Option<Waker>,
    fired: bool,
}

/// A worker's deadlines.
#[derive(Default)]
struct List {
    entries: Slab<Entry>,
    /// The deadline the clock task sleeps until (an entry's, perhaps gone since), or
    /// `None` when it waits for a first entry.
    armed: Option<Instant>,
    /// The clock task's waker, to re-arm it earlier.
    clock: Option<Waker>,
    /// Whether this thread's runtime runs the clock task.
    running: bool,
    /// How many times the clock task has looked through the list.
    looks: u64,
}

thread_local! {
    static LIST: RefCell<List> = RefCell::new(List::default());
}

/// Resolves to `fut`'s output, or to [`Elapsed`] once `at` has passed first.
pub(crate) fn timeout_at<F: Future>(at: Instant, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        at,
        slot: Slot::Unregistered,
    }
}

enum Slot {
    Unregistered,
    /// In this worker's list.
    Listed(usize),
    /// Off a worker thread.
    Tokio(Pin<Box<Sleep>>),
}

pin_project_lite::pin_project! {
    /// See [`timeout_at`].
    pub(crate) struct Timeout<F> {
        #[pin]
        fut: F,
        at: Instant,
        slot: Slot,
    }

    impl<F> PinnedDrop for Timeout<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Slot::Listed(key) = this.slot {
                unlist(key);
            }
        }
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match this.slot {
            Slot::Listed(key) => {
                if fired(*key, cx.waker()) {
                    return Poll::Ready(Err(Elapsed));
                }
            }
            Slot::Tokio(sleep) => {
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Elapsed));
                }
            }
            Slot::Unregistered => {
                if crate::worker::is_worker() {
                    *this.slot = Slot::Listed(list(*this.at, cx.waker()));
                } else {
                    let mut sleep = Box::pin(tokio::time::sleep_until(*this.at));
                    let ready = sleep.as_mut().poll(cx).is_ready();
                    *this.slot = Slot::Tokio(sleep);
                    if ready {
                        return Poll::Ready(Err(Elapsed));
                    }
                }
            }
        }
        Poll::Pending
    }
}

/// Puts a deadline in this worker's list; starts the clock task on first use, and
/// wakes it when `at` is earlier than what it sleeps until.
fn list(at: Instant, waker: &Waker) -> usize {
    LIST.with(|cell| {
        let mut list = cell.borrow_mut();
        if !list.running {
            list.running = true;
            tokio::spawn(clock());
        }
        let key = list.entries.insert(Entry {
            at,
            waker: Some(waker.clone()),
            fired: false,
        });
        if list.armed.is_none_or(|armed| at < armed) {
            list.armed = Some(at);
            if let Some(clock) = &list.clock {
                clock.wake_by_ref();
            }
        }
        key
    })
}

/// Whether the deadline at `key` has passed; keeps its waker current.
fn fired(key: usize, waker: &Waker) -> bool {
    LIST.with(|cell| {
        let mut list = cell.borrow_mut();
        let Some(entry) = list.entries.get_mut(key) else {
            return false;
        };
        if entry.fired {
            return true;
        }
        match &mut entry.waker {
            Some(w) if w.will_wake(waker) => {}
            w => *w = Some(waker.clone()),
        }
        false
    })
}

/// Takes a deadline out of the list. Never panics: a thread being torn down may have
/// dropped its list already.
fn unlist(key: usize) {
    let _ = LIST.try_with(|cell| {
        if let Ok(mut list) = cell.try_borrow_mut() {
            list.entries.try_remove(key);
        }
    });
}

/// Marks the clock task gone when its runtime drops it, so a later runtime on the
/// same thread starts its own.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        let _ = LIST.try_with(|cell| {
            if let Ok(mut list) = cell.try_borrow_mut() {
                list.running = false;
                list.clock = None;
                list.armed = None;
            }
        });
    }
}

/// The worker's clock task: sleeps until the armed deadline, then wakes the requests
/// whose deadlines have passed and arms the earliest one left.
async fn clock() {
    let _running = Running;
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
    let mut due: Vec<Waker> = Vec::new();
    loop {
        std::future::poll_fn(|cx| {
            LIST.with(|cell| {
                let mut list = cell.borrow_mut();
                match &list.clock {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => list.clock = Some(cx.waker().clone()),
                }
                let Some(at) = list.armed else {
                    return Poll::Pending;
                };
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                sleep.as_mut().poll(cx)
            })
        })
        .await;
        let now = Instant::now();
        LIST.with(|cell| {
            let mut list = cell.borrow_mut();
            list.looks += 1;
            let mut next: Option<Instant> = None;
            for (_, entry) in list.entries.iter_mut() {
                if entry.fired {
                    continue;
                }
                if entry.at <= now {
                    entry.fired = true;
                    due.extend(entry.waker.take());
                } else if next.is_none_or(|n| entry.at < n) {
                    next = Some(entry.at);
                }
            }
            list.armed = next;
        });
        // Woken outside the borrow: a wake may drop a task, and with it a request.
        for waker in due.drain(..) {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Runs `f` on a paused single-threaded runtime on a thread marked as a worker,
    /// as serin's workers are.
    fn on_worker<F: Future<Output = ()> + Send + 'static>(f: F) {
        std::thread::spawn(move || {
            crate::worker::set_index(0);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a runtime");
            rt.block_on(f);
        })
        .join()
        .expect("the test thread");
    }

    fn listed() -> usize {
        LIST.with(|cell| cell.borrow().entries.len())
    }

    #[test]
    fn an_answer_before_the_deadline_is_returned_and_leaves_nothing_listed() {
        on_worker(async {
            let start = Instant::now();
            let answer = timeout_at(start + Duration::from_secs(1), async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                7
            })
            .await;
            assert_eq!(answer, Ok(7));
            assert_eq!(listed(), 0);
        });
    }

    #[test]
    fn a_deadline_fires_when_it_passes_not_before() {
        on_worker(async {
            let start = Instant::now();
            let never = std::future::pending::<()>();
            let out = timeout_at(start + Duration::from_millis(300), never).await;
            assert_eq!(out, Err(Elapsed));
            let waited = start.elapsed();
            assert!(
                waited >= Duration::from_millis(300) && waited < Duration::from_millis(302),
                "fired after {waited:?}"
            );
            assert_eq!(listed(), 0);
        });
    }

    #[test]
    fn a_shorter_deadline_listed_after_a_longer_one_fires_on_time() {
        on_worker(async {
            let start = Instant::now();
            let long = tokio::spawn(timeout_at(
                start + Duration::from_secs(30),
                std::future::pending::<()>(),
            ));
            tokio::task::yield_now().await;
            let short = timeout_at(
                start + Duration::from_millis(50),
                std::future::pending::<()>(),
            );
            assert_eq!(short.await, Err(Elapsed));
            assert!(start.elapsed() < Duration::from_millis(52));
            assert!(!long.is_finished());
            long.abort();
        });
    }

    #[test]
    fn answered_requests_do_not_rearm_the_clock_and_later_deadlines_still_fire() {
        on_worker(async {
            let start = Instant::now();
            // A thousand requests answered within their 1 s deadline, one after another
            // over 2 s: the clock is armed for the first and not re-armed as they go; it
            // looks through the list when a deadline it armed passes, about once a second.
            for i in 0..1000u64 {
                let at = Instant::now() + Duration::from_secs(1);
                let out = timeout_at(at, tokio::time::sleep(Duration::from_millis(2))).await;
                assert_eq!(out, Ok(()), "request {i}");
            }
            assert_eq!(listed(), 0);
            let looks = LIST.with(|cell| cell.borrow().looks);
            assert!(
                looks <= 3,
                "{looks} looks through the list for 1000 requests"
            );
            // One that is never answered, listed long after the first deadline passed.
            let at = Instant::now() + Duration::from_secs(1);
            let out = timeout_at(at, std::future::pending::<()>()).await;
            assert_eq!(out, Err(Elapsed));
            assert!(Instant::now() >= at && Instant::now() < at + Duration::from_millis(2));
            assert!(start.elapsed() >= Duration::from_secs(3));
        });
    }

    #[test]
    fn many_waiting_requests_each_fire_at_their_own_deadline() {
        on_worker(async {
            let start = Instant::now();
            let late = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for i in 0..200u64 {
                let at = start + Duration::from_millis(10 + (i * 37) % 500);
                let late = late.clone();
                tasks.push(tokio::spawn(async move {
                    let out = timeout_at(at, std::future::pending::<()>()).await;
                    assert_eq!(out, Err(Elapsed));
                    if Instant::now() > at + Duration::from_millis(1) || Instant::now() < at {
                        late.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                t.await.expect("the request's task");
            }
            assert_eq!(late.load(Ordering::Relaxed), 0);
            assert_eq!(listed(), 0);
        });
    }

    #[test]
    fn a_dropped_request_leaves_its_slot_and_an_idle_list_rearms_on_the_next() {
        on_worker(async {
            let start = Instant::now();
            {
                let gone = timeout_at(start + Duration::from_secs(5), std::future::pending::<()>());
                let mut gone = std::pin::pin!(gone);
                let _ = gone.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                assert_eq!(listed(), 1);
            }
            assert_eq!(listed(), 0);
            // The clock wakes at 5 s for nothing and goes idle.
            tokio::time::sleep(Duration::from_secs(6)).await;
            let at = Instant::now() + Duration::from_millis(20);
            assert_eq!(
                timeout_at(at, std::future::pending::<()>()).await,
                Err(Elapsed)
            );
            assert!(Instant::now() < at + Duration::from_millis(2));
        });
    }

    #[test]
    fn off_a_worker_thread_the_timeout_still_fires() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let at = Instant::now() + Duration::from_millis(20);
            assert_eq!(
                timeout_at(at, std::future::pending::<()>()).await,
                Err(Elapsed)
            );
            assert_eq!(
                timeout_at(at + Duration::from_secs(5), async { 3 }).await,
                Ok(3)
            );
        });
    }
}
