//! The hub-wide memory budget for inbound frames: bytes read from client sockets and not
//! yet done with (being read, parsed, handled, or — for a `message` — waiting in the store
//! queue until its commit).
//!
//! Each connection caps one frame (the hard frame limit, 16 MiB), but thousands of
//! connections sending near-limit frames at once would hold them all. So every socket read
//! is charged to one [`FrameBudget`] as it happens ([`Metered`]), and released when the frame
//! it belonged to is finished with ([`Meter::take`] and [`Charge`]). A read that finds the
//! budget spent is still allowed to start a frame (one read: at most [`READ_CHUNK`] bytes),
//! so small frames always go through; a connection that is in the middle of a frame when
//! the budget is spent gets an error instead of more bytes, and is closed with a reason
//! (1013, try again later). Nobody waits for budget, so nobody can hold it while waiting.
//! The overshoot is bounded by one chunk per connection.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one socket read may add to a connection that holds nothing yet (the WebSocket
/// layer reads in chunks of this size; see `connection::serve`).
pub(crate) const READ_CHUNK: usize = 4096;

/// The hub-wide budget. Cheap to share (`Arc`).
#[derive(Debug)]
pub(crate) struct FrameBudget {
    used: AtomicUsize,
    limit: usize,
}

impl FrameBudget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes charged right now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit in bytes.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    fn release(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

/// One connection's account with the budget: what its socket reads have charged since its
/// last finished frame. Released when dropped.
#[derive(Debug)]
pub(crate) struct Meter {
    budget: Arc<FrameBudget>,
    held: AtomicUsize,
}

impl Meter {
    /// A connection's meter.
    pub(crate) fn new(budget: Arc<FrameBudget>) -> Arc<Self> {
        Arc::new(Self {
            budget,
            held: AtomicUsize::new(0),
        })
    }

    /// Moves what the connection holds into a [`Charge`] (the frame just read is now that
    /// charge's; it may outlive the connection's next reads, say in the store queue).
    pub(crate) fn take(&self) -> Charge {
        Charge {
            budget: self.budget.clone(),
            bytes: self.held.swap(0, Ordering::AcqRel),
        }
    }

    /// Whether a read of `want` bytes may go ahead: always when the connection holds
    /// nothing (it starts a frame with one chunk), otherwise only within the budget.
    fn admit(&self, want: usize) -> bool {
        let held = self.held.load(Ordering::Acquire);
        held == 0 || self.budget.used() + want <= self.budget.limit
    }

    fn charge(&self, n: usize) {
        self.held.fetch_add(n, Ordering::AcqRel);
        self.budget.used.fetch_add(n, Ordering::AcqRel);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.budget.release(*self.held.get_mut());
    }
}

/// Bytes of one finished frame, charged until this is dropped (after the frame was handled,
/// or for a `message`, after it was committed).
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<FrameBudget>,
    bytes: usize,
}

impl Charge {
    /// How many bytes it holds.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// The error a read returns when the budget is spent in the middle of a frame.
#[derive(Debug, thiserror::Error)]
#[error("the hub is over its memory budget for frames in flight ({limit} bytes)")]
pub(crate) struct OverBudget {
    /// The budget.
    pub limit: usize,
}

/// A socket whose reads are charged to a [`Meter`].
#[derive(Debug)]
pub(crate) struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S> Metered<S> {
    /// Charges `inner`'s reads to `meter`.
    pub(crate) fn new(inner: S, meter: Arc<Meter>) -> Self {
        Self { inner, meter }
    }
}

impl<S: crate::batching::Cork> crate::batching::Cork for Metered<S> {
    fn cork(&self, on: bool) {
        self.inner.cork(on);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining().min(READ_CHUNK);
        if !self.meter.admit(want) {
            let limit = self.meter.budget.limit;
            return Poll::Ready(Err(io::Error::other(OverBudget { limit })));
        }
        // Never more than a chunk at once, so the overshoot stays one chunk per connection.
        let n = if buf.remaining() <= READ_CHUNK {
            let before = buf.filled().len();
            ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
            buf.filled().len() - before
        } else {
            let mut tmp = [0u8; READ_CHUNK];
            let mut chunk = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut chunk))?;
            buf.put_slice(chunk.filled());
            chunk.filled().len()
        };
        if n > 0 {
            self.meter.charge(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn reads_are_charged_until_their_frame_is_finished_with() {
        let budget = FrameBudget::new(1 << 20);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let meter = Meter::new(budget.clone());
        let mut s = Metered::new(server, meter.clone());
        client.write_all(&[7u8; 10_000]).await.unwrap();
        let mut buf = vec![0u8; 10_000];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(budget.used(), 10_000);
        let charge = meter.take();
        assert_eq!((charge.bytes(), budget.used()), (10_000, 10_000));
        drop(charge);
        assert_eq!(budget.used(), 0);
        client.write_all(&[7u8; 100]).await.unwrap();
        s.read_exact(&mut buf[..100]).await.unwrap();
        drop(s);
        drop(meter);
        assert_eq!(
            budget.used(),
            0,
            "a closed connection releases what it held"
        );
    }

    #[tokio::test]
    async fn a_frame_in_progress_is_refused_when_the_budget_is_spent_but_a_new_one_may_start() {
        let budget = FrameBudget::new(3 * READ_CHUNK);
        let (mut big_client, big_server) = tokio::io::duplex(1 << 20);
        let mut big = Metered::new(big_server, Meter::new(budget.clone()));
        big_client
            .write_all(&vec![1u8; 8 * READ_CHUNK])
            .await
            .unwrap();
        let mut buf = vec![0u8; 8 * READ_CHUNK];
        let err = big.read_exact(&mut buf).await.unwrap_err();
        assert!(err.to_string().contains("memory budget"), "{err}");
        assert!(
            budget.used() <= budget.limit() + READ_CHUNK,
            "{}",
            budget.used()
        );

        // Another connection starting a small frame still gets its chunk.
        let (mut small_client, small_server) = tokio::io::duplex(1 << 16);
        let small_meter = Meter::new(budget.clone());
        let mut small = Metered::new(small_server, small_meter.clone());
        small_client
            .write_all(b"{\"type\":\"ping\"}")
            .await
            .unwrap();
        let mut frame = [0u8; 15];
        small.read_exact(&mut frame).await.unwrap();
        drop(small_meter.take());
        drop(big);
        assert_eq!(budget.used(), 0);
    }
}
