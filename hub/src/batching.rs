//! A connection's write buffer that is given back after every flush.
//!
//! tungstenite's own write buffer keeps the capacity of the largest batch it ever held
//! (it drains without shrinking): after a presence storm every connection kept ~16 KiB it
//! would never use again (issue 16). So tungstenite writes each frame straight through
//! (`write_buffer_size(0)`) into this layer, which collects a flush's frames in one buffer —
//! small frames still leave in one `sendto` per flush — and frees it once a flush has
//! written it all. An idle connection holds no write buffer at all; a busy one allocates one
//! per flush (a few hundred nanoseconds beside the syscall it saves).
//!
//! Bound: the buffer never holds more than its `cap` (a write that does not fit waits for
//! the socket to take what is buffered; one at least `cap` long, arriving with the buffer
//! empty, goes straight to the socket).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Collects writes until a flush (or `cap` bytes), then frees its buffer.
#[derive(Debug)]
pub(crate) struct Batching<S> {
    inner: S,
    /// Bytes not yet written to `inner` are `buf[at..]`.
    buf: Vec<u8>,
    at: usize,
    cap: usize,
}

impl<S> Batching<S> {
    /// Batches writes to `inner`, holding at most `cap` bytes.
    pub(crate) fn new(inner: S, cap: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            at: 0,
            cap,
        }
    }

    /// Bytes waiting for the socket.
    fn pending(&self) -> usize {
        self.buf.len() - self.at
    }
}

impl<S: AsyncWrite + Unpin> Batching<S> {
    /// Writes what is buffered to `inner`; ready once it is all written, and then the
    /// buffer's memory is given back.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.at < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.at += n;
        }
        // Freed, not kept: this is what an idle connection does not hold.
        self.buf = Vec::new();
        self.at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Batching<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Batching<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending() + data.len() > this.cap {
            ready!(this.poll_drain(cx))?;
        }
        if data.len() >= this.cap {
            // Empty now: a long write goes straight through, never copied.
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.buf.capacity() == 0 {
            this.buf.reserve_exact(this.cap);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_writes_leave_together_at_the_flush_and_the_buffer_is_freed() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = Batching::new(a, 64);
        w.write_all(b"hello ").await.unwrap();
        w.write_all(b"world").await.unwrap();
        assert_eq!(w.pending(), 11);
        let mut got = [0u8; 11];
        // Nothing reached the socket before the flush.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), b.read(&mut got))
                .await
                .is_err()
        );
        w.flush().await.unwrap();
        assert_eq!(w.buf.capacity(), 0);
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
    }

    #[tokio::test]
    async fn never_holds_more_than_its_cap() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = Batching::new(a, 8);
        w.write_all(b"12345").await.unwrap();
        // Does not fit beside what is buffered: the buffer goes out first.
        w.write_all(b"6789").await.unwrap();
        assert!(w.pending() <= 8);
        // Longer than the cap: straight through.
        w.write_all(b"abcdefghijkl").await.unwrap();
        assert!(w.buf.capacity() <= 8);
        w.flush().await.unwrap();
        let mut got = [0u8; 21];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"123456789abcdefghijkl");
    }
}
