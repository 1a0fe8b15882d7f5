//! A client connection's clocks: `limits.idle_timeout` (nothing in flight and no
//! bytes moving), `limits.header_read_timeout` (an HTTP/1.1 request head that has
//! begun but not ended) and `limits.send_timeout` (the client takes nothing of what
//! serin sends: `crate::send`).
//!
//! hyper's own HTTP/1.1 header timer starts as soon as a keep-alive connection goes
//! idle, so it cannot tell a slow head from a quiet connection; serin turns it off and
//! keeps the clocks here. [`Tracked`] wraps the connection's IO and counts that bytes
//! moved (and, for writes, how many, or that the socket refused them); the service
//! counts requests in flight ([`InFlight`], held by the response body [`Counted`] or
//! dropped with a cancelled request); [`Activity::expired`] runs beside the connection
//! in its own task, reads the clock, and says when and how to end it. Everything lives
//! on the connection's task, so the atomics are never contended: a read costs one
//! relaxed increment, a write four, a request two more and one clock read when its
//! head begins.
//!
//! An HTTP/1.1 connection quiet for [`PARK_AFTER`] is *parked*: serin asks hyper to
//! finish it ([`Activity::parking`] keeps the socket open), takes the socket back,
//! and waits for it to become readable holding no buffers, as nginx does with idle
//! keep-alive connections. hyper keeps two 8 KiB buffers per connection for the
//! connection's life; a parked connection holds only its socket and this clock.
//!
//! [`Tracked`] also watches an HTTP/1.1 connection's bytes for framing hyper
//! normalises without a trace in the request it hands over ([`FramingScan`]): a head
//! with two Content-Length lines (hyper keeps one) or with Content-Length and
//! Transfer-Encoding (hyper drops the Content-Length). The service takes the
//! connection's flag with the next request, and neither that request's client
//! connection nor its upstream one is reused (`crate::conn::NormalisedFraming`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::send::{BodySend, SendClock, SendWatch};

/// No request head is being read.
const NO_HEAD: u64 = u64::MAX;

/// How a connection's clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Nothing in flight and no bytes moved for `idle_timeout`: close it politely
    /// (HTTP/2: `GOAWAY`).
    Idle,
    /// A request head began and did not end in time (or stalled): drop it.
    Head,
    /// The client took nothing of what serin sends for `send_timeout`: drop it.
    Send,
    /// Quiet for [`PARK_AFTER`] with nothing in flight and no head begun: the
    /// connection may be parked until it is readable or this deadline (when it would
    /// have been idle for `idle_timeout`) passes.
    Quiet(Instant),
}

/// How long an HTTP/1.1 connection is quiet before it is parked. Long enough that a
/// connection under load never is (each park and wake costs a new hyper connection
/// and its buffers), short enough that idle ones hold no buffers.
pub(crate) const PARK_AFTER: Duration = Duration::from_secs(1);

/// What a connection is doing, shared by its IO, its service and its clock.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    /// Bumped whenever bytes move or a response ends. No clock is read for it: the
    /// clock notices a change when it next looks (at least four times per
    /// `idle_timeout`), so the IO path costs one uncontended increment.
    moves: AtomicU32,
    /// Requests handed to the service.
    started: AtomicU32,
    /// Responses whose body is done (sent or dropped).
    finished: AtomicU32,
    /// Milliseconds since `base` when the first byte of a head not yet handed to the
    /// service arrived, or [`NO_HEAD`].
    head_since: AtomicU64,
    /// `started` when that head began: once it changes, the head has been read.
    head_of: AtomicU32,
    /// HTTP/2 has no head to time: its frames move without a request in flight. Set
    /// by the server once it knows the protocol (ALPN or the preface).
    h2: AtomicBool,
    /// Wakes the clock when a head begins: its deadline is earlier than the idle one.
    head_began: tokio::sync::Notify,
    /// The connection is being parked: its IO's shutdown must keep the socket open.
    parking: AtomicBool,
    /// A request head whose framing hyper normalises was read ([`FramingScan`]) and
    /// no request has been handed to the service since.
    normalised_framing: AtomicBool,
    /// What the client takes of what serin sends.
    send: SendClock,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    send_timeout: Duration,
}

impl Activity {
    pub(crate) fn new(
        idle_timeout: Duration,
        header_read_timeout: Duration,
        send_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            moves: AtomicU32::new(0),
            started: AtomicU32::new(0),
            finished: AtomicU32::new(0),
            head_since: AtomicU64::new(NO_HEAD),
            head_of: AtomicU32::new(0),
            h2: AtomicBool::new(false),
            head_began: tokio::sync::Notify::new(),
            parking: AtomicBool::new(false),
            normalised_framing: AtomicBool::new(false),
            send: SendClock::default(),
            idle_timeout,
            header_read_timeout,
            send_timeout,
        })
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// While set, the connection's IO ignores shutdown: hyper ends the connection,
    /// serin keeps the socket.
    pub(crate) fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Ordering::Relaxed);
    }

    /// Whether a head with normalised framing was read since the previous request was
    /// handed to the service; clears it. Asked once per request. It may be a later
    /// head than the request's own (pipelined): that request's connection then closes
    /// and the later one is never served, which is as safe.
    pub(crate) fn take_normalised_framing(&self) -> bool {
        // A load first: the clean path writes nothing.
        self.normalised_framing.load(Ordering::Relaxed)
            && self.normalised_framing.swap(false, Ordering::Relaxed)
    }

    /// Requests handed to the service so far.
    pub(crate) fn requests(&self) -> u32 {
        self.started.load(Ordering::Relaxed)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(NO_HEAD - 1)
    }

    fn in_flight(&self) -> bool {
        self.started.load(Ordering::Relaxed) != self.finished.load(Ordering::Relaxed)
    }

    fn request_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    fn response_finished(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    fn head_pending(&self) -> Option<u64> {
        let since = self.head_since.load(Ordering::Relaxed);
        (since != NO_HEAD
            && self.head_of.load(Ordering::Relaxed) == self.started.load(Ordering::Relaxed))
        .then_some(since)
    }

    /// The connection speaks HTTP/2: no head is timed from now on, and the preface
    /// read to tell the protocol is no head either.
    pub(crate) fn set_http2(&self) {
        self.h2.store(true, Ordering::Relaxed);
        self.head_since.store(NO_HEAD, Ordering::Relaxed);
    }

    fn read(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
        if self.h2.load(Ordering::Relaxed) || self.in_flight() || self.head_pending().is_some() {
            return;
        }
        self.head_of
            .store(self.started.load(Ordering::Relaxed), Ordering::Relaxed);
        self.head_since.store(self.now(), Ordering::Relaxed);
        self.head_began.notify_one();
    }

    /// What became of a write: bytes moved, or the socket took none for now.
    fn note_write(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.moves.fetch_add(1, Ordering::Relaxed);
                self.send.wrote(*n);
            }
            Poll::Pending => self.send.refused(),
            Poll::Ready(_) => {}
        }
    }

    /// Resolves when the connection should end, or with `park`, be parked. Looks every
    /// quarter of `idle_timeout` (an idle connection is closed between 1 and 1.25 ×
    /// `idle_timeout` after it went quiet), or after [`PARK_AFTER`] when parking, and at
    /// least every quarter of `send_timeout`; the start of a head wakes it at once.
    pub(crate) async fn expired(&self, park: bool) -> Expiry {
        let idle = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(NO_HEAD / 4);
        let head = u64::try_from(self.header_read_timeout.as_millis()).unwrap_or(NO_HEAD / 4);
        let park_after = u64::try_from(PARK_AFTER.as_millis()).unwrap_or(NO_HEAD / 4);
        // Parking a connection that would be closed as soon is no use.
        let park = park && park_after < idle;
        let mut send = SendWatch::new(self.send_timeout, &self.send, self.now());
        let step = if park { park_after } else { (idle / 4).max(1) }.min(send.step());
        let mut seen = self.moves.load(Ordering::Relaxed);
        let mut quiet_since = self.now();
        loop {
            let now = self.now();
            if send.look(&self.send, now) {
                return Expiry::Send;
            }
            let moves = self.moves.load(Ordering::Relaxed);
            if moves != seen {
                (seen, quiet_since) = (moves, now);
            }
            let quiet = quiet_since.saturating_add(idle);
            let (deadline, expiry) = if self.in_flight() {
                // A request in flight is never cut; look again later.
                (now.saturating_add(step), None)
            } else {
                match self.head_pending() {
                    Some(since) => (quiet.min(since.saturating_add(head)), Some(Expiry::Head)),
                    None if park => (
                        quiet_since.saturating_add(park_after),
                        Some(Expiry::Quiet(self.base + Duration::from_millis(quiet))),
                    ),
                    None => (quiet, Some(Expiry::Idle)),
                }
            };
            match expiry {
                Some(expiry) if deadline <= now => return expiry,
                _ => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(self.base + Duration::from_millis(deadline.min(now.saturating_add(step)))) => {}
                        _ = self.head_began.notified() => {}
                    }
                }
            }
        }
    }
}

/// IO that can say when it is readable without reading: what a parked connection
/// waits on.
pub(crate) trait ReadReady {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for tokio::net::TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_read_ready(self, cx)
    }
}

/// hyper reads until the TLS stream has no plaintext left before a connection is
/// parked, so the socket's readiness is the stream's.
impl ReadReady for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// Header lines whose repetition or combination hyper normalises, as they begin.
const CONTENT_LENGTH: &[u8] = b"content-length:";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding:";

/// What the start of the line being scanned is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum LineStart {
    /// Nothing yet.
    #[default]
    Empty,
    /// A carriage return alone so far: the line may be the empty line ending a head.
    Cr,
    /// A prefix of [`CONTENT_LENGTH`] or [`TRANSFER_ENCODING`] so far (all of it once
    /// `at` is its length).
    ContentLength,
    TransferEncoding,
    /// Anything else: the rest of the line does not matter.
    Other,
}

/// Spots a request head whose framing hyper normalises, in an HTTP/1.1 connection's
/// bytes as they are read: at least two Content-Length lines, or Content-Length and
/// Transfer-Encoding. hyper refuses every other ambiguous framing itself.
///
/// Lines are found with memchr; the first bytes of each line (at most 18) are matched,
/// ignoring case, against the two names and their colon, which is how hyper's parser
/// must see them (no space before the colon, no folding). The match carries across
/// reads in four bytes of state, so a line split anywhere is seen whole. An empty line
/// ends a head and resets the counts. The scanner does not know where bodies are, so a
/// body's lines are scanned as if they were headers: that can only find a head that is
/// not there (the connection is then closed after its next answer, never refused), and
/// cannot hide one, since every header line of a head starts after a line feed and a
/// head ends at its own empty line.
#[derive(Debug, Default)]
pub(crate) struct FramingScan {
    start: LineStart,
    /// Bytes of the line matched so far (no more than the longer name).
    at: u8,
    /// Content-Length and Transfer-Encoding lines since the last empty line.
    content_length: u8,
    transfer_encoding: u8,
}

impl FramingScan {
    /// Scans `bytes`, read right after those scanned before; true if a head with
    /// normalised framing was seen in them.
    pub(crate) fn scan(&mut self, mut bytes: &[u8]) -> bool {
        let mut found = false;
        while let Some(end) = memchr::memchr(b'\n', bytes) {
            self.extend(&bytes[..end]);
            found |= self.line_ended();
            bytes = &bytes[end + 1..];
        }
        self.extend(bytes);
        found
    }

    /// Matches the next bytes of the current line, as far as they matter.
    fn extend(&mut self, part: &[u8]) {
        for &b in part {
            let at = usize::from(self.at);
            let (name, kind) = match self.start {
                LineStart::Other => return,
                LineStart::Empty => {
                    self.start = match b.to_ascii_lowercase() {
                        b'\r' => LineStart::Cr,
                        b'c' => LineStart::ContentLength,
                        b't' => LineStart::TransferEncoding,
                        _ => LineStart::Other,
                    };
                    self.at = 1;
                    continue;
                }
                LineStart::Cr => {
                    self.start = LineStart::Other;
                    return;
                }
                LineStart::ContentLength => (CONTENT_LENGTH, LineStart::ContentLength),
                LineStart::TransferEncoding => (TRANSFER_ENCODING, LineStart::TransferEncoding),
            };
            if at == name.len() {
                // The whole name and its colon: what follows is the value.
                return;
            }
            self.start = if b.to_ascii_lowercase() == name[at] {
                kind
            } else {
                LineStart::Other
            };
            self.at += 1;
        }
    }

    fn line_ended(&mut self) -> bool {
        let (start, at) = (std::mem::take(&mut self.start), usize::from(self.at));
        self.at = 0;
        match start {
            LineStart::Empty | LineStart::Cr => {
                self.content_length = 0;
                self.transfer_encoding = 0;
                return false;
            }
            LineStart::ContentLength if at == CONTENT_LENGTH.len() => {
                self.content_length = self.content_length.saturating_add(1);
            }
            LineStart::TransferEncoding if at == TRANSFER_ENCODING.len() => {
                self.transfer_encoding = self.transfer_encoding.saturating_add(1);
            }
            _ => return false,
        }
        self.content_length >= 2 || (self.content_length >= 1 && self.transfer_encoding >= 1)
    }
}

/// A connection's IO, noting when bytes move.
pub(crate) struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
    /// Bytes already read from `inner` and to be read again first: the sniffed start
    /// of a connection, or what hyper had read when the connection was parked. They
    /// were scanned when first read.
    prefix: Bytes,
    framing: FramingScan,
}

impl<I> Tracked<I> {
    pub(crate) fn new(inner: I, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            prefix: Bytes::new(),
            framing: FramingScan::default(),
        }
    }

    /// `bytes` are read again before anything more from the socket.
    pub(crate) fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        // A head that began before the park is timed from now.
        self.activity.read();
        if self.prefix.is_empty() {
            self.prefix = bytes;
        } else {
            let mut joined = bytes::BytesMut::with_capacity(bytes.len() + self.prefix.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.prefix);
            self.prefix = joined.freeze();
        }
    }
}

impl<I: ReadReady> Tracked<I> {
    /// Resolves when the socket has something to read (or an error, or EOF).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        if !self.prefix.is_empty() {
            return Ok(());
        }
        std::future::poll_fn(|cx| self.inner.poll_read_ready(cx)).await
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if buf.filled().len() > before {
                this.activity.read();
                if !this.activity.h2.load(Ordering::Relaxed)
                    && this.framing.scan(&buf.filled()[before..])
                {
                    this.activity
                        .normalised_framing
                        .store(true, Ordering::Relaxed);
                }
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.activity.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.activity.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        // Only a stream with its own buffer (TLS) can refuse a flush.
        match polled {
            Poll::Pending => this.activity.send.refused(),
            Poll::Ready(Ok(())) => this.activity.send.flushed(),
            Poll::Ready(Err(_)) => {}
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.parking.load(Ordering::Relaxed) {
            // hyper ends a connection being parked; the socket stays open.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// One request in flight on a connection: counted as finished when dropped, whether
/// with its response body (sent or abandoned) or with a request future cancelled
/// before any response (an HTTP/2 stream reset, a client gone).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    /// The service was handed a request.
    pub(crate) fn start(activity: &Arc<Activity>) -> Self {
        activity.request_started();
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.response_finished();
    }
}

pin_project_lite::pin_project! {
    /// The service future of a connection: the forwarding future, its response body
    /// wrapped in [`Counted`]. Written out rather than an `async` block, which would
    /// hold the request a second time in every connection's future slot.
    pub(crate) struct Counting<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F> Counting<F> {
    pub(crate) fn new(inner: F, in_flight: InFlight) -> Self {
        Self {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl<F, B> std::future::Future for Counting<F>
where
    F: std::future::Future<Output = Result<http::Response<B>, std::convert::Infallible>>,
{
    type Output = Result<http::Response<Counted<B>>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(response)) = this.inner.poll(cx) else {
            return Poll::Pending;
        };
        let in_flight = this.in_flight.take().map(|in_flight| {
            let activity = &in_flight.0;
            let send = BodySend::new(&activity.send, activity.h2.load(Ordering::Relaxed));
            (in_flight, send)
        });
        Poll::Ready(Ok(response.map(|inner| Counted { inner, in_flight })))
    }
}

/// A response body that tells the connection's [`Activity`] when it is done (dropped),
/// and what it hands out ([`BodySend`]).
pub struct Counted<B> {
    inner: B,
    in_flight: Option<(InFlight, BodySend)>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some((in_flight, send)) = &mut this.in_flight {
            std::task::ready!(send.poll_ready(&in_flight.0.send, cx));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some((in_flight, send))) =
            (&polled, &mut this.in_flight)
        {
            if let Some(data) = frame.data_ref() {
                send.handed(&in_flight.0.send, data.len(), this.inner.is_end_stream());
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        if let Some((in_flight, send)) = &mut self.in_flight {
            send.end(&in_flight.0.send);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether scanning `bytes`, split into reads at `splits`, finds normalised framing.
    fn scanned(bytes: &[u8], splits: &[usize]) -> bool {
        let mut scan = FramingScan::default();
        let mut found = false;
        let mut from = 0;
        for &at in splits.iter().chain(std::iter::once(&bytes.len())) {
            found |= scan.scan(&bytes[from..at]);
            from = at;
        }
        found
    }

    /// The same answer whether the bytes come in one read, in two split at any offset,
    /// or one byte at a time.
    fn found_however_read(bytes: &[u8]) -> bool {
        let whole = scanned(bytes, &[]);
        for at in 0..=bytes.len() {
            assert_eq!(scanned(bytes, &[at]), whole, "split at {at}: {bytes:?}");
        }
        let each: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(scanned(bytes, &each), whole, "byte by byte: {bytes:?}");
        whole
    }

    #[test]
    fn heads_whose_framing_hyper_normalises_are_found() {
        for head in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: a\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 4\r\nCONTENT-LENGTH: 4\r\n\r\n",
            "POST / HTTP/1.1\r\ncOnTeNt-LeNgTh:4\r\ntRaNsFeR-eNcOdInG:chunked\r\n\r\n",
            // Bare line feeds, as hyper accepts them.
            "POST / HTTP/1.1\nHost: a\nContent-Length: 4\nContent-Length: 4\n\nabcd",
            // The second request of a keep-alive connection.
            "GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            // After a body that does not end with a line feed.
            "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(found_however_read(head.as_bytes()), "{head:?}");
        }
    }

    #[test]
    fn clean_heads_are_not_found() {
        for head in [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
            // One per head, over several heads.
            "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nxPOST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            // Names that only begin alike, or are not at the start of a line.
            "POST / HTTP/1.1\r\nContent-Length-X: 4\r\nX-Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
            "POST / HTTP/1.1\r\nX: Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
            "POST / HTTP/1.1\r\nContent-Lengt: 4\r\nTransfer-Encodin: chunked\r\nContent-Length: 4\r\n\r\nabcd",
            // A long line is not mistaken for a short one.
            "GET / HTTP/1.1\r\nX-Long: content-length: content-length: content-length:\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(!found_however_read(head.as_bytes()), "{head:?}");
        }
    }

    #[test]
    fn a_body_can_only_add_a_false_alarm() {
        // Lines in a body look like headers to the scanner: the connection would be
        // closed after the answer, nothing worse.
        let body = "POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\nContent-Length: 1\r\nContent-Length: 1\r\n";
        assert!(found_however_read(body.as_bytes()));
    }
}
