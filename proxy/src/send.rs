//! What a client takes of what serin sends it: `limits.send_timeout` (nginx's
//! `send_timeout`), and how much of a response may wait in serin for a slow reader.
//!
//! [`SendClock`] is shared by a connection's IO (`crate::idle::Tracked`), its response
//! bodies (`crate::idle::Counted`) and its clock (`crate::idle::Activity::expired`).
//! All of them run on the connection's worker, so its atomics are never contended, and
//! nothing here reads the time: only the clock does, when it looks.
//!
//! - **A stalled write.** The IO counts the bytes it wrote and notes a write the
//!   socket refused. A refused write with nothing written since, for `send_timeout`,
//!   ends the connection (HTTP/1.1 and HTTP/2): the client reads nothing.
//! - **A waiting HTTP/2 stream.** An HTTP/2 client can also take nothing by not opening
//!   a stream's flow-control window: serin then writes nothing at all, and the socket
//!   never refuses. A response body that handed hyper a chunk and has not been asked
//!   for the next is waiting for the client; it counts itself in the slot of the
//!   current turn of a ring of [`RING`] slots, which the clock turns every quarter of
//!   `send_timeout`. When the slot about to be reused still counts a body, that body
//!   has waited at least `send_timeout` (at most 1.25 ×) for the client to take one
//!   chunk (one upstream read, `crate::pace`, or one HTTP/2 frame): the connection
//!   ends. A stream that gets window, however slowly, is asked for its next chunk once
//!   the last one went out.
//! - **Unsent bytes, HTTP/1.1.** hyper's HTTP/1.1 server buffers a response until its
//!   write buffer holds `max_buf_size` bytes, a size that is also the longest request
//!   head it can read (`limits.max_header_bytes`, up to 1 MiB). So a response body on
//!   HTTP/1.1 hands hyper its next chunk only once everything it handed out was
//!   written, and the IO wakes it when bytes go out: hyper holds one chunk of it at a
//!   time (`crate::pace` bounds the chunks). A client that takes what it is sent never
//!   waits on this: its socket takes each chunk at once. HTTP/2 bounds each stream
//!   with the server's `max_send_buf_size` ([`H2_SEND_BUF`]) instead.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;

/// What hyper's HTTP/2 server buffers of one stream's response for a client that has
/// not opened its window for it (hyper's default is 400 KiB): one frame.
pub(crate) const H2_SEND_BUF: usize = 16 * 1024;

/// Slots of the ring of waiting HTTP/2 bodies; the clock turns it every quarter of
/// `send_timeout`, so a body is noticed after four to five quarters.
const RING: usize = 5;

/// What a connection's IO and response bodies tell its clock about sending.
#[derive(Debug, Default)]
pub(crate) struct SendClock {
    /// Bytes written to the client so far.
    written: AtomicU64,
    /// The socket refused the last write (nothing written since).
    refused: AtomicBool,
    /// Turns of the ring so far; a waiting body counts itself in `turn % RING`.
    turn: AtomicU32,
    /// HTTP/2 response bodies waiting for the client, by the turn they began waiting.
    waiting: [AtomicU32; RING],
    /// An HTTP/1.1 body waiting for what it handed out to be written.
    unsent_drained: AtomicWaker,
}

impl SendClock {
    /// The IO wrote `n` bytes (more than none).
    pub(crate) fn wrote(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        self.refused.store(false, Ordering::Relaxed);
        self.unsent_drained.wake();
    }

    /// The socket took nothing of a write; it wakes the writer when it can.
    pub(crate) fn refused(&self) {
        self.refused.store(true, Ordering::Relaxed);
    }

    /// Everything the IO had buffered went out (a flush that completed).
    pub(crate) fn flushed(&self) {
        self.refused.store(false, Ordering::Relaxed);
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn wait(&self) -> usize {
        let slot = self.turn.load(Ordering::Relaxed) as usize % RING;
        self.waiting[slot].fetch_add(1, Ordering::Relaxed);
        slot
    }

    fn done_waiting(&self, slot: usize) {
        self.waiting[slot].fetch_sub(1, Ordering::Relaxed);
    }
}

/// One response body's part: on HTTP/1.1 what it handed out against what was written,
/// on HTTP/2 whether it waits for the client.
#[derive(Debug)]
pub(crate) enum BodySend {
    Http1 {
        /// Bytes of data the body handed out.
        handed: u64,
        /// The connection's written bytes when the body began.
        base: u64,
    },
    Http2 {
        /// The ring slot the body counts itself in while it waits.
        waiting: Option<usize>,
    },
}

impl BodySend {
    pub(crate) fn new(clock: &SendClock, http2: bool) -> Self {
        if http2 {
            Self::Http2 { waiting: None }
        } else {
            Self::Http1 {
                handed: 0,
                base: clock.written(),
            }
        }
    }

    /// Before the body is asked for its next frame: `Pending` while bytes an HTTP/1.1
    /// body handed out are unsent (woken when some are written); a waiting HTTP/2 body
    /// is no longer waiting.
    pub(crate) fn poll_ready(&mut self, clock: &SendClock, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Self::Http1 { handed, base } => {
                // What was written since the body began includes its head: a little
                // slack, never a wait for bytes that will not be written.
                let unsent = |clock: &SendClock| clock.written().wrapping_sub(*base) < *handed;
                if unsent(clock) {
                    clock.unsent_drained.register(cx.waker());
                    // Written meanwhile: the wake may have come before the register.
                    if unsent(clock) {
                        return Poll::Pending;
                    }
                }
            }
            Self::Http2 { waiting } => {
                if let Some(slot) = waiting.take() {
                    clock.done_waiting(slot);
                }
            }
        }
        Poll::Ready(())
    }

    /// The body handed out `len` bytes of data; `last`: and nothing will follow.
    pub(crate) fn handed(&mut self, clock: &SendClock, len: usize, last: bool) {
        match self {
            Self::Http1 { handed, .. } => *handed += len as u64,
            Self::Http2 { waiting } => {
                if !last && waiting.is_none() {
                    *waiting = Some(clock.wait());
                }
            }
        }
    }

    /// The body is done with (dropped).
    pub(crate) fn end(&mut self, clock: &SendClock) {
        if let Self::Http2 { waiting } = self {
            if let Some(slot) = waiting.take() {
                clock.done_waiting(slot);
            }
        }
    }
}

/// The connection clock's view of a [`SendClock`] between its looks.
#[derive(Debug)]
pub(crate) struct SendWatch {
    timeout_ms: u64,
    /// `written` when the clock last looked.
    written: u64,
    /// When the clock first saw the current refused write (ms on the clock's base).
    refused_since: Option<u64>,
    /// When the ring turns next.
    next_turn: u64,
}

impl SendWatch {
    pub(crate) fn new(send_timeout: Duration, clock: &SendClock, now: u64) -> Self {
        let timeout_ms = u64::try_from(send_timeout.as_millis()).unwrap_or(u64::MAX / 4);
        let mut watch = Self {
            timeout_ms,
            written: clock.written(),
            refused_since: None,
            next_turn: 0,
        };
        watch.next_turn = now.saturating_add(watch.step());
        watch
    }

    /// How often the clock must look (ms): a quarter of `send_timeout`.
    pub(crate) fn step(&self) -> u64 {
        (self.timeout_ms / 4).max(1)
    }

    /// Whether the client has taken nothing for `send_timeout`, as of `now` (ms);
    /// also turns the ring when a quarter of `send_timeout` has passed since it last
    /// did (never more than once per look, so a late look is never early).
    pub(crate) fn look(&mut self, clock: &SendClock, now: u64) -> bool {
        let written = clock.written();
        if !clock.refused.load(Ordering::Relaxed) {
            self.refused_since = None;
        } else if written != self.written {
            // Bytes went out since the last look, then a write was refused.
            self.refused_since = Some(now);
        } else {
            let since = *self.refused_since.get_or_insert(now);
            if now.saturating_sub(since) >= self.timeout_ms {
                return true;
            }
        }
        self.written = written;
        if now >= self.next_turn {
            let next = clock.turn.load(Ordering::Relaxed).wrapping_add(1);
            // Bodies counted here began waiting four turns ago or earlier.
            if clock.waiting[next as usize % RING].load(Ordering::Relaxed) != 0 {
                return true;
            }
            clock.turn.store(next, Ordering::Relaxed);
            self.next_turn = now.saturating_add(self.step());
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    const TIMEOUT: Duration = Duration::from_millis(1000);

    /// The first `now` (looking every `step` ms from `start`) at which `watch` says the
    /// client took nothing, or `None` before `until`.
    fn expires(
        watch: &mut SendWatch,
        clock: &SendClock,
        start: u64,
        step: u64,
        until: u64,
    ) -> Option<u64> {
        (start..=until)
            .step_by(step as usize)
            .find(|&now| watch.look(clock, now))
    }

    #[test]
    fn a_refused_write_with_nothing_written_since_expires_after_the_timeout() {
        let clock = SendClock::default();
        let mut watch = SendWatch::new(TIMEOUT, &clock, 0);
        clock.wrote(100);
        assert!(!watch.look(&clock, 250));
        clock.refused();
        // First seen refused at 500: cut at 1500, not before.
        let at = expires(&mut watch, &clock, 500, 250, 5000);
        assert_eq!(at, Some(1500));
    }

    #[test]
    fn any_byte_written_restarts_the_wait() {
        let clock = SendClock::default();
        let mut watch = SendWatch::new(TIMEOUT, &clock, 0);
        clock.refused();
        assert!(!watch.look(&clock, 250));
        // A slow reader: a few bytes go out every 900 ms, each time refused again.
        for t in (1150..10_000).step_by(900) {
            clock.wrote(32);
            clock.refused();
            assert!(!watch.look(&clock, t), "cut a reader taking bytes at {t}");
            assert!(!watch.look(&clock, t + 450));
        }
    }

    #[test]
    fn writes_that_go_through_never_expire() {
        let clock = SendClock::default();
        let mut watch = SendWatch::new(TIMEOUT, &clock, 0);
        clock.wrote(1);
        assert_eq!(expires(&mut watch, &clock, 0, 250, 60_000), None);
    }

    #[test]
    fn an_http2_body_waiting_for_the_client_expires_between_one_and_one_and_a_quarter_timeouts() {
        for began in [0u64, 1, 249, 250, 999] {
            let clock = SendClock::default();
            let mut watch = SendWatch::new(TIMEOUT, &clock, 0);
            // The clock looks every 250 ms; the body hands out a chunk at `began`.
            let mut body = BodySend::new(&clock, true);
            let mut now = 0;
            while now < began {
                assert!(!watch.look(&clock, now));
                now += 250;
            }
            body.handed(&clock, 16 * 1024, false);
            let at = expires(&mut watch, &clock, now, 250, 10_000).expect("expires");
            let waited = at - began;
            assert!(
                (1000..=1250).contains(&waited),
                "began at {began}, cut after {waited} ms"
            );
            body.end(&clock);
        }
    }

    #[test]
    fn an_http2_body_asked_for_more_in_time_never_expires() {
        let clock = SendClock::default();
        let mut watch = SendWatch::new(TIMEOUT, &clock, 0);
        let mut body = BodySend::new(&clock, true);
        let mut cx = Context::from_waker(Waker::noop());
        for now in (0..20_000).step_by(250) {
            // A chunk taken every 750 ms: never a whole timeout.
            if now % 750 == 0 {
                assert!(body.poll_ready(&clock, &mut cx).is_ready());
                body.handed(&clock, 16 * 1024, false);
            }
            assert!(!watch.look(&clock, now), "cut at {now}");
        }
        // The last chunk is no wait; a body dropped while waiting counts no more.
        body.end(&clock);
        assert!(body.poll_ready(&clock, &mut cx).is_ready());
        body.handed(&clock, 10, true);
        assert_eq!(expires(&mut watch, &clock, 20_000, 250, 30_000), None);
    }

    #[test]
    fn a_late_look_turns_the_ring_once() {
        let clock = SendClock::default();
        let mut watch = SendWatch::new(TIMEOUT, &clock, 0);
        let mut body = BodySend::new(&clock, true);
        body.handed(&clock, 1, false);
        // The clock was held up for 10 s: the body waited, but one look is one turn.
        assert!(!watch.look(&clock, 10_000));
        assert!(!watch.look(&clock, 10_250));
        assert!(!watch.look(&clock, 10_500));
        assert!(!watch.look(&clock, 10_750));
        assert!(watch.look(&clock, 11_000));
    }

    #[test]
    fn an_http1_body_hands_out_its_next_chunk_once_the_last_was_written() {
        let clock = SendClock::default();
        clock.wrote(5000); // an earlier response
        let mut body = BodySend::new(&clock, false);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(body.poll_ready(&clock, &mut cx).is_ready());
        body.handed(&clock, 10_000, false);
        assert!(body.poll_ready(&clock, &mut cx).is_pending());
        clock.wrote(200); // the head
        clock.wrote(9_799);
        assert!(body.poll_ready(&clock, &mut cx).is_pending());
        clock.wrote(1);
        assert!(body.poll_ready(&clock, &mut cx).is_ready());
        body.handed(&clock, 10_000, false);
        assert!(body.poll_ready(&clock, &mut cx).is_pending());
        clock.wrote(10_000);
        assert!(body.poll_ready(&clock, &mut cx).is_ready());
    }

    #[test]
    fn a_write_wakes_an_http1_body_holding_back() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let clock = SendClock::default();
        let mut body = BodySend::new(&clock, false);
        body.handed(&clock, 1, false);
        assert!(body.poll_ready(&clock, &mut cx).is_pending());
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        clock.wrote(1);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    }
}
