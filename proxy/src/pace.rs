//! How much an HTTP/1.1 upstream connection reads at once, which is how much one chunk
//! of a response body holds.
//!
//! A client that reads slowly keeps its response's last chunks in serin: the ones
//! hyper's server has not written yet (`crate::send` bounds them), the one the upstream
//! connection read ahead for it, and the buffer that one was read into. hyper grows its
//! reads to 400 KiB when the upstream sends fast, so each slow reader held over 500 KiB.
//! Small reads cost a slow reader little and a fast one much: every chunk is one read
//! from the upstream and one write to the client.
//!
//! So [`Paced`] reads [`SMALL`] bytes at a time, and [`BIG`] ones only once the
//! response's reader has kept up for [`KEEP_UP_FOR`] bytes: it asked for each next
//! chunk within [`QUICK`] of the last read (hyper asks only when the previous chunk
//! was taken, and the response body takes it only when the client took most of what
//! it was handed). A reader that falls behind once, and every new exchange (a request
//! written on the connection), starts small again. At most one clock read per read
//! call, and none for a read that finds nothing with no read before it since the last
//! write.
//!
//! Both sizes are a byte under a power of two: hyper's adaptive read buffer then stays
//! at that power of two (a read that fills it would double it), so every read lands in
//! an allocation of its own size, and a slow reader's few chunks pin no larger ones.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A read while the reader has not shown it keeps up: a slow reader holds a few of
/// these.
pub(crate) const SMALL: usize = 8 * 1024 - 1;
/// A read once it has.
pub(crate) const BIG: usize = 64 * 1024 - 1;
/// The longest a reader that keeps up takes to ask for the next chunk.
pub(crate) const QUICK: Duration = Duration::from_millis(10);
/// Bytes read in a row for a reader that kept up before reads grow to [`BIG`].
pub(crate) const KEEP_UP_FOR: usize = 256 * 1024;

/// The read size of one connection.
#[derive(Debug)]
pub(crate) struct ReadPace {
    /// The next read's size.
    size: usize,
    /// Bytes read in a row for a reader that kept up.
    kept_up: usize,
    /// When the last read that returned bytes was asked for, and how many it returned
    /// (`None`: none since the last write).
    last_read: Option<(Instant, usize)>,
}

impl Default for ReadPace {
    fn default() -> Self {
        Self {
            size: SMALL,
            kept_up: 0,
            last_read: None,
        }
    }
}

impl ReadPace {
    /// The reader asks for more at `now`: the size of this read.
    pub(crate) fn asked(&mut self, now: Instant) -> usize {
        if let Some((last, bytes)) = self.last_read.take() {
            if now.saturating_duration_since(last) < QUICK {
                self.kept_up = self.kept_up.saturating_add(bytes);
                if self.kept_up >= KEEP_UP_FOR {
                    self.size = BIG;
                }
            } else {
                self.slow_down();
            }
        }
        self.size
    }

    /// The read asked for at `asked` returned `bytes` (more than none).
    pub(crate) fn read(&mut self, asked: Instant, bytes: usize) {
        self.last_read = Some((asked, bytes));
    }

    /// A request went out: a new response, perhaps to a slower reader.
    pub(crate) fn wrote(&mut self) {
        self.slow_down();
        self.last_read = None;
    }

    fn slow_down(&mut self) {
        self.size = SMALL;
        self.kept_up = 0;
    }
}

/// An HTTP/1.1 upstream connection's IO, reading as [`ReadPace`] says.
pub(crate) struct Paced<T> {
    io: T,
    pace: ReadPace,
}

impl<T> Paced<T> {
    pub(crate) fn new(io: T) -> Self {
        Self {
            io,
            pace: ReadPace::default(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Paced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The clock is read only when it matters: to time this ask against the last
        // read, or to note a read that returned bytes. Most calls are neither (the
        // first read after a request is written, which finds nothing yet).
        let now = this.pace.last_read.is_some().then(Instant::now);
        let size = match now {
            Some(now) => this.pace.asked(now),
            None => this.pace.size,
        };
        let mut capped = buf.take(size);
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut capped))?;
        let n = capped.filled().len();
        // SAFETY: `capped` is the start of `buf`'s unfilled part, and the reader filled
        // (so initialised) its first `n` bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        if n > 0 {
            this.pace.read(now.unwrap_or_else(Instant::now), n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Paced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.pace.wrote();
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.pace.wrote();
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads at `gap` after each previous one until `bytes` were read; the sizes asked.
    fn reads(pace: &mut ReadPace, start: Instant, gap: Duration, bytes: usize) -> Vec<usize> {
        let (mut now, mut total, mut sizes) = (start, 0, Vec::new());
        while total < bytes {
            let size = pace.asked(now);
            pace.read(now, size);
            sizes.push(size);
            total += size;
            now += gap;
        }
        sizes
    }

    #[test]
    fn a_reader_that_keeps_up_gets_big_reads_after_a_while() {
        let mut pace = ReadPace::default();
        let sizes = reads(
            &mut pace,
            Instant::now(),
            Duration::from_micros(50),
            2 << 20,
        );
        let small = sizes.iter().take_while(|s| **s == SMALL).count();
        // Small until 256 KiB were read by a reader keeping up.
        assert_eq!(small, KEEP_UP_FOR.div_ceil(SMALL));
        assert!(sizes[small..].iter().all(|s| *s == BIG), "{sizes:?}");
    }

    #[test]
    fn a_slow_reader_only_gets_small_reads() {
        let mut pace = ReadPace::default();
        let sizes = reads(&mut pace, Instant::now(), Duration::from_secs(1), 1 << 20);
        assert!(sizes.iter().all(|s| *s == SMALL));
        // Just slower than QUICK is slow too.
        let sizes = reads(&mut pace, Instant::now(), QUICK, 1 << 20);
        assert!(sizes.iter().all(|s| *s == SMALL));
    }

    #[test]
    fn one_slow_gap_or_a_new_request_starts_small_again() {
        let start = Instant::now();
        let quick = Duration::from_micros(50);
        let mut pace = ReadPace::default();
        reads(&mut pace, start, quick, 1 << 20);
        assert_eq!(pace.asked(start + Duration::from_secs(2)), SMALL);

        let mut pace = ReadPace::default();
        reads(&mut pace, start, quick, 1 << 20);
        pace.wrote();
        // The next response's reads are judged afresh, the first without a gap.
        let sizes = reads(&mut pace, start, quick, 64 * 1024);
        assert!(sizes.iter().all(|s| *s == SMALL));
    }

    #[tokio::test]
    async fn reads_go_through_in_paced_pieces() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut far, near) = tokio::io::duplex(1 << 20);
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        far.write_all(&data).await.expect("write");
        drop(far);
        let mut paced = Paced::new(near);
        let mut buf = vec![0u8; 1 << 20];
        let mut got = Vec::new();
        loop {
            let n = paced.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            assert!(n <= BIG, "read {n} bytes at once");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
    }
}
