//! Bounded writes: a client that stops reading must not keep a connection (and what is
//! queued for it) forever.
//!
//! When a client stops reading, its socket's buffers fill and every write to it waits.
//! Every write of a connection's writer (a batch, a ping, the close frame) is therefore
//! bounded by [`bounded`]: it fails once the socket has accepted no byte for the limit
//! (the heartbeat interval). The limit is on progress, not on the whole write, so a client
//! on a slow link that takes a minute to read a 4 MiB page is not cut off while it is
//! reading. [`Watched`] is the socket that records when it last accepted bytes.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

/// When a socket last accepted bytes. Shared by the socket and the writer.
#[derive(Debug)]
pub(crate) struct Progress {
    base: Instant,
    /// Nanoseconds after `base` of the last write that moved bytes.
    last: AtomicU64,
}

impl Progress {
    /// A fresh record (as if bytes had just moved).
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// When bytes last moved.
    pub(crate) fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    fn mark(&self) {
        self.last
            .store(self.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// A write made no progress for the whole limit: the client is not reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stalled(pub Duration);

/// Runs the write `fut` until it completes, or until the socket has taken no byte for
/// `limit` (counted from the start of this write at the earliest).
pub(crate) async fn bounded<F: Future>(
    fut: F,
    progress: &Progress,
    limit: Duration,
) -> Result<F::Output, Stalled> {
    tokio::pin!(fut);
    // Most writes complete at once (they only fill the write buffer): no timer for those.
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Ok(out);
    }
    let started = Instant::now();
    loop {
        let due = progress.last().max(started) + limit;
        tokio::select! {
            biased;
            out = &mut fut => return Ok(out),
            _ = tokio::time::sleep_until(due) => {
                if progress.last().max(started) + limit <= Instant::now() {
                    return Err(Stalled(limit));
                }
            }
        }
    }
}

/// A socket that records in a [`Progress`] when its writes move bytes (and, made with
/// [`Watched::both_ways`], its reads too).
#[derive(Debug)]
pub(crate) struct Watched<S> {
    inner: S,
    progress: Arc<Progress>,
    reads: bool,
}

impl<S> Watched<S> {
    /// Watches `inner`'s writes.
    pub(crate) fn new(inner: S, progress: Arc<Progress>) -> Self {
        Self {
            inner,
            progress,
            reads: false,
        }
    }

    /// Watches `inner`'s reads and writes: the progress then says when bytes last moved
    /// either way (how the HTTP side finds an idle connection).
    pub(crate) fn both_ways(inner: S, progress: Arc<Progress>) -> Self {
        Self {
            inner,
            progress,
            reads: true,
        }
    }
}

impl<S: crate::batching::Cork> crate::batching::Cork for Watched<S> {
    fn cork(&self, on: bool) {
        self.inner.cork(on);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.reads && buf.filled().len() > before {
            self.progress.mark();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res
            && *n > 0
        {
            self.progress.mark();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &res
            && *n > 0
        {
            self.progress.mark();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_limit_and_a_slow_reader_is_not_cut_off() {
        let limit = Duration::from_secs(5);
        let (mut client, server) = tokio::io::duplex(1024);
        let progress = Progress::new();
        let mut s = Watched::new(server, progress.clone());
        // Nobody reads: the write stalls once the pipe is full, and fails after the limit.
        let stalled = bounded(s.write_all(&[0u8; 64 << 10]), &progress, limit).await;
        assert_eq!(stalled.unwrap_err(), Stalled(limit));

        // A reader that takes 1 KiB every 2 s (well within the limit) gets all of it, though
        // the whole write takes far longer than the limit.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut got = 0;
            while got < 16 << 10 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                got += client.read(&mut buf).await.unwrap();
            }
            got
        });
        let started = Instant::now();
        bounded(s.write_all(&[0u8; 14 << 10]), &progress, limit)
            .await
            .unwrap()
            .unwrap();
        assert!(started.elapsed() > limit);
        drop(s);
        reader.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn reads_count_only_when_both_ways_are_watched() {
        for both in [false, true] {
            let (a, mut b) = tokio::io::duplex(64);
            let progress = Progress::new();
            let mut s = if both {
                Watched::both_ways(a, progress.clone())
            } else {
                Watched::new(a, progress.clone())
            };
            let t0 = progress.last();
            tokio::time::advance(Duration::from_secs(1)).await;
            b.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            s.read_exact(&mut one).await.unwrap();
            assert_eq!(progress.last() > t0, both);
        }
    }
}
