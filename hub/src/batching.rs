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
//!
//! A flush longer than `cap` (a queue of whole peer lists after a registration storm of the
//! Node relay's clients, a long listing) leaves in several writes. Each write pushed alone
//! is a TCP segment of its own, and on loopback each segment is also received — and its
//! reader woken — on the hub's CPU: three quarters of the hub's time in that storm
//! (docs/BENCHMARKS.md). So the socket is corked (`TCP_CORK`) from the first write the
//! batch could not hold until the flush has written everything: the kernel then sends full
//! segments, and the tail at the flush. A flush that fits in the buffer is one write, as
//! before, and never corks. (A pong the reader half writes meanwhile flushes this layer too,
//! which only ends the batching early: its bytes still go in order.) A connection that
//! fails or stalls mid-batch stays corked, which is harmless: it is being closed, and the
//! kernel sends what is queued with the FIN. Linux and Android only; elsewhere the flush
//! is written as before.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// A socket that can be corked: the TCP stream under however many layers (the connection's
/// progress and budget, TLS).
pub(crate) trait Cork {
    /// Holds partial segments back (`on`) or sends them and stops holding them. Only a
    /// hint for the kernel's segmenting: a failure changes no byte, so it is ignored.
    fn cork(&self, on: bool);
}

impl Cork for TcpStream {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn cork(&self, on: bool) {
        let _ = socket2::SockRef::from(self).set_tcp_cork(on);
    }

    /// No `TCP_CORK` here (macOS has `TCP_NOPUSH`, with other semantics): not corked.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn cork(&self, _: bool) {}
}

impl<S: Cork> Cork for tokio_rustls::server::TlsStream<S> {
    fn cork(&self, on: bool) {
        self.get_ref().0.cork(on);
    }
}

/// Collects writes until a flush (or `cap` bytes), then frees its buffer.
#[derive(Debug)]
pub(crate) struct Batching<S> {
    inner: S,
    /// Bytes not yet written to `inner` are `buf[at..]`.
    buf: Vec<u8>,
    at: usize,
    cap: usize,
    /// The socket is corked until the flush (a batch longer than `cap`).
    corked: bool,
}

impl<S> Batching<S> {
    /// Batches writes to `inner`, holding at most `cap` bytes.
    pub(crate) fn new(inner: S, cap: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            at: 0,
            cap,
            corked: false,
        }
    }

    /// Bytes waiting for the socket.
    fn pending(&self) -> usize {
        self.buf.len() - self.at
    }
}

impl<S: Cork> Batching<S> {
    /// More of this batch follows what is about to go out: full segments only until the
    /// flush.
    fn cork(&mut self) {
        if !self.corked {
            self.corked = true;
            self.inner.cork(true);
        }
    }

    /// The batch is written: its tail goes out now.
    fn uncork(&mut self) {
        if self.corked {
            self.corked = false;
            self.inner.cork(false);
        }
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

impl<S: AsyncWrite + Cork + Unpin> AsyncWrite for Batching<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending() + data.len() > this.cap {
            this.cork();
            ready!(this.poll_drain(cx))?;
        }
        if data.len() >= this.cap {
            // Empty now: a long write goes straight through, never copied.
            this.cork();
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
        // Under TLS this writes the last record: only then is the batch all in the socket.
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        self.uncork();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        self.uncork();
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    impl Cork for DuplexStream {
        fn cork(&self, _: bool) {}
    }

    /// `f`'s output, which must come within a few seconds.
    #[cfg(target_os = "linux")]
    async fn within<F: Future>(what: &str, f: F) -> F::Output {
        let limit = std::time::Duration::from_secs(5);
        tokio::time::timeout(limit, f).await.expect(what)
    }

    #[cfg(target_os = "linux")]
    fn corked(s: &TcpStream) -> bool {
        socket2::SockRef::from(s).tcp_cork().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_batch_longer_than_the_buffer_is_corked_until_its_flush() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (client, accepted) = tokio::join!(
            TcpStream::connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        let (mut client, server) = (client.unwrap(), accepted.unwrap().0);
        server.set_nodelay(true).unwrap();
        let mut w = Batching::new(server, 16);

        // Fits: one write at the flush, never corked.
        w.write_all(b"short").await.unwrap();
        w.flush().await.unwrap();
        assert!(!corked(&w.inner), "a flush within the buffer does not cork");

        // Longer than the buffer: corked from the first write it cannot hold...
        for _ in 0..5 {
            w.write_all(b"0123456789").await.unwrap();
        }
        assert!(
            corked(&w.inner),
            "the batch's first writes wait for the rest of it"
        );
        // ... and the tail goes out with the flush.
        w.flush().await.unwrap();
        assert!(!corked(&w.inner), "the flush sends the tail");
        let mut got = vec![0u8; 55];
        within(
            "all of it arrives after the flush",
            client.read_exact(&mut got),
        )
        .await
        .unwrap();
        assert_eq!(&got[..5], b"short");
        assert_eq!(&got[5..], "0123456789".repeat(5).as_bytes());

        // A single write of at least the buffer's size goes straight through, corked too.
        w.write_all(&[b'x'; 32]).await.unwrap();
        assert!(corked(&w.inner));
        w.flush().await.unwrap();
        assert!(!corked(&w.inner));

        // A shutdown in the middle of a long batch sends its tail too.
        for _ in 0..3 {
            w.write_all(b"0123456789").await.unwrap();
        }
        assert!(corked(&w.inner));
        w.shutdown().await.unwrap();
        assert!(!corked(&w.inner), "the shutdown sends the tail");
        let mut rest = Vec::new();
        within("the rest and the FIN arrive", client.read_to_end(&mut rest))
            .await
            .unwrap();
        assert_eq!(rest.len(), 32 + 30);
    }

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
