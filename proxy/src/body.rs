//! A client's request body on its way upstream: `limits.request_buffer` and
//! `limits.body_read_timeout` (nginx's `client_body_buffer_size` and
//! `client_body_timeout`).
//!
//! - **Small bodies are read first.** A body of a declared length up to
//!   `request_buffer` is read whole before an upstream connection is taken
//!   (`read_whole`), each read within `body_read_timeout`: a client that sends it
//!   slowly, or never, holds no upstream connection, and the upstream never sees the
//!   request. Most such bodies come with their head and are taken as they are, with no
//!   timer and no copy; one that comes in pieces is copied into one buffer of its
//!   declared length. A request in flight holds at most `request_buffer` bytes so.
//! - **Other bodies stream** ([`Streamed`]): chunked ones, and larger ones. Each read
//!   may wait at most `body_read_timeout` for the client; then the body fails, hyper
//!   aborts the upstream request, and the client is answered 408. The timer is made
//!   the first time a read waits, so a body that is already there costs none.
//! - **Whose fault.** `BodyWatch` says how a streamed body is doing: waiting for the
//!   client, ended, or timed out. A request that fails or times out while its body
//!   waits for the client is the client's doing, not the version's.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Either, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// What serin sends upstream: the client's body streamed (within
/// `limits.max_request_body`), or read whole (also an empty body: a retry).
pub type UpstreamBody = Either<Limited<Streamed<Incoming>>, Buffered>;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The client sent nothing of its request body for `limits.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing of its request body for {0:?} (limits.body_read_timeout)")]
pub struct BodyReadTimeout(pub Duration);

/// The declared length of `body`, when it is to be read whole: something to read, and
/// no more than `request_buffer` bytes.
pub(crate) fn to_buffer<B: Body>(body: &B, request_buffer: u64) -> Option<u64> {
    let len = body.size_hint().exact()?;
    (len > 0 && len <= request_buffer && !body.is_end_stream()).then_some(len)
}

/// How a body that was to be read whole was not.
#[derive(Debug)]
pub(crate) enum Unread {
    /// A read waited `body_read_timeout`.
    TimedOut,
    /// The client's body broke (it closed the connection, reset the stream).
    Failed(hyper::Error),
}

/// `req` with its body streamed upstream through [`Streamed`] and `Limited` to
/// `body_limit` bytes, and the body's watch unless it is empty.
pub(crate) fn streamed(
    req: Request<Incoming>,
    read_timeout: Duration,
    body_limit: usize,
) -> (Request<UpstreamBody>, Option<Arc<BodyWatch>>) {
    let (parts, body) = req.into_parts();
    let (streamed, watch) = Streamed::new(body, read_timeout);
    let body = Either::Left(Limited::new(streamed, body_limit));
    (Request::from_parts(parts, body), watch)
}

/// `req` with its body of `len` bytes read whole ([`to_buffer`]), each read within
/// `read_timeout`.
pub(crate) async fn read_whole(
    req: Request<Incoming>,
    len: u64,
    read_timeout: Duration,
) -> Result<Request<UpstreamBody>, Unread> {
    let (parts, mut body) = req.into_parts();
    let mut whole = Whole::default();
    // Usually all of it came with the head: no timer, nothing copied.
    let first = std::future::poll_fn(|cx| Poll::Ready(whole.take_ready(&mut body, len, cx))).await;
    match first {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(err)) => return Err(Unread::Failed(err)),
        Poll::Pending => whole.read_rest(&mut body, len, read_timeout).await?,
    }
    Ok(Request::from_parts(parts, Either::Right(whole.into_body())))
}

/// A body being read whole.
#[derive(Debug, Default)]
struct Whole {
    /// The first piece, kept as it came while it is the only one.
    first: Option<Bytes>,
    /// All pieces, once there is more than one.
    joined: Option<BytesMut>,
    trailers: Option<Box<HeaderMap>>,
    ended: bool,
}

impl Whole {
    fn add(&mut self, frame: Frame<Bytes>, len: u64) {
        match frame.into_data() {
            Ok(data) => match (&mut self.joined, self.first.take()) {
                (Some(joined), _) => joined.extend_from_slice(&data),
                (None, None) => self.first = Some(data),
                (None, Some(first)) => {
                    let capacity = usize::try_from(len).unwrap_or(usize::MAX);
                    let mut joined =
                        BytesMut::with_capacity(capacity.max(first.len() + data.len()));
                    joined.extend_from_slice(&first);
                    joined.extend_from_slice(&data);
                    self.joined = Some(joined);
                }
            },
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    self.trailers = Some(Box::new(trailers));
                }
            }
        }
    }

    /// Takes every frame that is there now: `Ready(Ok)` at the end of the body,
    /// `Pending` when the client has not sent the rest yet.
    fn take_ready(
        &mut self,
        body: &mut Incoming,
        len: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), hyper::Error>> {
        while !self.ended {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.add(frame, len);
                    self.ended = body.is_end_stream();
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(err)),
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads until the end of the body, each read within `read_timeout`.
    async fn read_rest(
        &mut self,
        body: &mut Incoming,
        len: u64,
        read_timeout: Duration,
    ) -> Result<(), Unread> {
        while !self.ended {
            match tokio::time::timeout(read_timeout, body.frame()).await {
                Err(_elapsed) => return Err(Unread::TimedOut),
                Ok(Some(Ok(frame))) => {
                    self.add(frame, len);
                    self.ended = body.is_end_stream();
                }
                Ok(Some(Err(err))) => return Err(Unread::Failed(err)),
                Ok(None) => self.ended = true,
            }
        }
        Ok(())
    }

    fn into_body(self) -> Buffered {
        let data = match (self.joined, self.first) {
            (Some(joined), _) => Some(joined.freeze()),
            (None, first) => first,
        };
        Buffered {
            data: data.filter(|d| !d.is_empty()),
            trailers: self.trailers,
        }
    }
}

/// A body held whole: its data, then its trailers if it had any (rare: boxed, so the
/// body, carried in every request's future, stays small).
#[derive(Debug, Default)]
pub struct Buffered {
    data: Option<Bytes>,
    trailers: Option<Box<HeaderMap>>,
}

impl Buffered {
    /// No body: a request sent again without the client's.
    pub fn empty() -> Self {
        Self::default()
    }

    /// `data` as a whole body (a shadow copy's), without trailers.
    pub(crate) fn of(data: Option<Bytes>) -> Self {
        Self {
            data: data.filter(|d| !d.is_empty()),
            trailers: None,
        }
    }

    /// The body's data, if it has any.
    pub(crate) fn data(&self) -> Option<&Bytes> {
        self.data.as_ref()
    }
}

impl Body for Buffered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(*t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// How a streamed body is doing, for the request it belongs to; and what the body
/// needs only while it waits (kept here so the body, carried in every request's
/// future, stays small).
#[derive(Debug)]
pub(crate) struct BodyWatch {
    state: AtomicU8,
    read_timeout: Duration,
}

/// The body's last read found nothing yet: it waits for the client.
const WAITING: u8 = 1;
/// The body was read to its end.
const ENDED: u8 = 2;
/// The body gave up waiting (`limits.body_read_timeout`).
const TIMED_OUT: u8 = 4;
/// The body's timer is set for the current wait.
const ARMED: u8 = 8;

impl BodyWatch {
    /// The body gave up waiting for the client.
    pub(crate) fn timed_out(&self) -> bool {
        self.is(TIMED_OUT)
    }

    /// The body is not all read, and its last read waited for the client: what the
    /// request waits for now is the client's.
    pub(crate) fn waits_for_client(&self) -> bool {
        self.state.load(Ordering::Relaxed) & (WAITING | ENDED) == WAITING
    }

    fn is(&self, bit: u8) -> bool {
        self.state.load(Ordering::Relaxed) & bit != 0
    }

    fn set(&self, bit: u8, on: bool) {
        if on {
            self.state.fetch_or(bit, Ordering::Relaxed);
        } else {
            self.state.fetch_and(!bit, Ordering::Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    /// A client's body streamed upstream, each read waiting at most
    /// `limits.body_read_timeout`.
    pub struct Streamed<B> {
        #[pin]
        inner: B,
        // Made the first time a read waits.
        timer: Option<Pin<Box<Sleep>>>,
        // `None` for a body that was empty from the start (never read).
        watch: Option<Arc<BodyWatch>>,
    }
}

impl<B: Body> Streamed<B> {
    /// `inner`, and the watch of it when it has anything to read.
    pub(crate) fn new(inner: B, read_timeout: Duration) -> (Self, Option<Arc<BodyWatch>>) {
        let watch = (!inner.is_end_stream()).then(|| {
            Arc::new(BodyWatch {
                state: AtomicU8::new(0),
                read_timeout,
            })
        });
        let streamed = Self {
            inner,
            timer: None,
            watch: watch.clone(),
        };
        (streamed, watch)
    }
}

impl<B> Body for Streamed<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        // hyper does not read a body that is empty from the start.
        let Some(watch) = this.watch.as_deref() else {
            return polled.map(|frame| frame.map(|f| f.map_err(Into::into)));
        };
        match polled {
            Poll::Ready(frame) => {
                watch.set(WAITING | ARMED, false);
                if frame.is_none() || this.inner.is_end_stream() {
                    watch.set(ENDED, true);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timer = match this.timer {
                    Some(timer) if watch.is(ARMED) => timer,
                    // The first wait since a read: the clock starts now.
                    timer => {
                        let deadline = Instant::now() + watch.read_timeout;
                        watch.set(WAITING | ARMED, true);
                        match timer {
                            Some(timer) => {
                                timer.as_mut().reset(deadline);
                                timer
                            }
                            None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                    }
                };
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                watch.set(TIMED_OUT, true);
                Poll::Ready(Some(Err(Box::new(BodyReadTimeout(watch.read_timeout)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn only_small_bodies_of_a_declared_length_are_read_first() {
        let sized = |n: usize| Full::new(Bytes::from(vec![b'x'; n]));
        assert_eq!(to_buffer(&sized(16 * 1024), 16 * 1024), Some(16 * 1024));
        assert_eq!(to_buffer(&sized(1), 16 * 1024), Some(1));
        assert_eq!(to_buffer(&sized(16 * 1024 + 1), 16 * 1024), None);
        // Nothing to read, or buffering turned off.
        assert_eq!(to_buffer(&sized(0), 16 * 1024), None);
        assert_eq!(to_buffer(&sized(10), 0), None);
        // No declared length (chunked): streamed.
        let (_tx, chunked) = channel_body();
        assert_eq!(to_buffer(&chunked, 16 * 1024), None);
    }

    /// A body whose data arrives through a channel, ending when it is dropped.
    fn channel_body() -> (
        tokio::sync::mpsc::Sender<Bytes>,
        impl Body<Data = Bytes, Error = std::convert::Infallible>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        struct Rx(tokio::sync::mpsc::Receiver<Bytes>);
        impl Body for Rx {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
                self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
            }
        }
        (tx, Rx(rx))
    }

    #[tokio::test(start_paused = true)]
    async fn a_streamed_body_fails_when_the_client_sends_nothing_for_the_timeout() {
        let (tx, body) = channel_body();
        let (streamed, watch) = Streamed::new(body, Duration::from_secs(10));
        let watch = watch.expect("a body to watch");
        let mut streamed = std::pin::pin!(streamed);
        tx.send(Bytes::from_static(b"first")).await.expect("send");
        let frame = streamed.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), "first");
        assert!(!watch.waits_for_client());
        // 9 s of silence, a piece, 9 s more: each wait is under the timeout.
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(9)).await;
            tx.send(Bytes::from_static(b"second")).await.expect("send");
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tx);
        });
        let frame = streamed.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), "second");
        let started = Instant::now();
        let err = streamed
            .frame()
            .await
            .expect("a frame")
            .expect_err("the read timed out");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(err.is::<BodyReadTimeout>(), "{err}");
        assert!(watch.timed_out());
        assert!(watch.waits_for_client());
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_read_to_its_end_does_not_wait_for_the_client() {
        let (tx, body) = channel_body();
        let (streamed, watch) = Streamed::new(body, Duration::from_secs(10));
        let watch = watch.expect("a body to watch");
        let mut streamed = std::pin::pin!(streamed);
        tx.send(Bytes::from_static(b"all")).await.expect("send");
        drop(tx);
        assert!(streamed.frame().await.expect("a frame").is_ok());
        assert!(streamed.frame().await.is_none());
        assert!(!watch.waits_for_client());
        assert!(!watch.timed_out());
    }

    #[test]
    fn an_empty_body_has_nothing_to_watch() {
        let (_, watch) = Streamed::new(Full::new(Bytes::new()), Duration::from_secs(1));
        assert!(watch.is_none());
    }

    #[tokio::test]
    async fn a_body_in_pieces_is_joined_with_its_trailers() {
        let mut whole = Whole::default();
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("6"));
        whole.add(Frame::data(Bytes::from_static(b"abc")), 6);
        whole.add(Frame::data(Bytes::from_static(b"def")), 6);
        whole.add(Frame::trailers(trailers.clone()), 6);
        let body = whole.into_body();
        assert_eq!(body.size_hint().exact(), Some(6));
        let collected = body.collect().await.expect("a whole body");
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "abcdef");
        assert!(Buffered::empty().is_end_stream());
    }
}
