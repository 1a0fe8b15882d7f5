//! A gate before a future that rarely has anything to do: [`Gate::poll`] polls it
//! only when its own waker fired since it was last polled.
//!
//! A connection's task polls its drain signal and its clock beside hyper's connection
//! future, and `select!` polls every branch on every wakeup: several per request, for
//! futures that are woken a few times a connection (the clock: when a head begins,
//! and on its timer). Each such poll re-registers a timer and a `Notify` waiter. Behind
//! a gate, a poll that was not asked for costs one waker registration and one atomic
//! swap. A future never needs polling unless its waker fired, so nothing is missed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// The waker handed to the gated future; one per [`Gate`], reused for every future
/// behind it.
pub(crate) struct Gate {
    flag: Arc<Flag>,
    waker: Waker,
}

struct Flag {
    /// The gated future's waker fired (or a new future is behind the gate).
    woken: AtomicBool,
    /// The task polling the gate.
    outer: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.outer.wake();
    }
}

impl Gate {
    pub(crate) fn new() -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            outer: AtomicWaker::new(),
        });
        Self {
            waker: Waker::from(Arc::clone(&flag)),
            flag,
        }
    }

    /// A new future is behind the gate: its first poll goes through.
    pub(crate) fn open(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }

    /// Polls `poll` (with the gate's own waker) if the gate's waker fired since the
    /// last time, or [`Gate::open`] was called; `Pending` otherwise. The task of `cx` is
    /// woken when the gate's waker fires.
    pub(crate) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.flag.outer.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        poll(&mut Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set.
    struct Counted<'a> {
        polls: &'a AtomicUsize,
        ready: &'a AtomicBool,
        waker: &'a std::sync::Mutex<Option<Waker>>,
    }

    impl Future for Counted<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.ready.load(Ordering::Relaxed) {
                return Poll::Ready(());
            }
            *self.waker.lock().expect("waker") = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    struct Woken(AtomicUsize);
    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_gated_future_is_polled_only_when_its_waker_fired() {
        let (polls, ready, inner_waker) = (
            AtomicUsize::new(0),
            AtomicBool::new(false),
            std::sync::Mutex::new(None),
        );
        let mut future = std::pin::pin!(Counted {
            polls: &polls,
            ready: &ready,
            waker: &inner_waker,
        });
        let outer = Arc::new(Woken(AtomicUsize::new(0)));
        let outer_waker = Waker::from(Arc::clone(&outer));
        let mut cx = Context::from_waker(&outer_waker);
        let gate = Gate::new();

        // The first poll goes through; later ones do not until the future's waker fires.
        assert!(gate
            .poll(&mut cx, |cx| future.as_mut().poll(cx))
            .is_pending());
        assert!(gate
            .poll(&mut cx, |cx| future.as_mut().poll(cx))
            .is_pending());
        assert!(gate
            .poll(&mut cx, |cx| future.as_mut().poll(cx))
            .is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 1);

        // Its waker fires: the task is woken, and the next poll reaches the future.
        ready.store(true, Ordering::Relaxed);
        let waker = inner_waker
            .lock()
            .expect("waker")
            .take()
            .expect("registered");
        waker.wake();
        assert_eq!(outer.0.load(Ordering::Relaxed), 1);
        assert!(gate.poll(&mut cx, |cx| future.as_mut().poll(cx)).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);

        // A new future behind the gate is polled at once.
        gate.open();
        let mut again = std::pin::pin!(Counted {
            polls: &polls,
            ready: &ready,
            waker: &inner_waker,
        });
        assert!(gate.poll(&mut cx, |cx| again.as_mut().poll(cx)).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 3);
    }
}
