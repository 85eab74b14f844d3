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
//!
//! The writer's text frames do not go through tungstenite at all: it queues each frame's
//! shared bytes here ([`Texts`]) and this layer writes the frame's header and then the bytes
//! themselves — copied into the buffer when short, straight from the shared bytes when
//! long — at the next write or flush. tungstenite copied every frame into its own buffer
//! before this layer copied it again, and framed a long one as 1 KiB fragments so that its
//! buffer (kept for the connection's whole life) stayed small: in the Node-protocol storm
//! that was a quarter of the hub's CPU (docs/BENCHMARKS.md, "Text frames framed here").
//! tungstenite still writes the control frames (pings, pongs, the close), through
//! [`AsyncWrite`]; queued texts go first, so a control frame only ever falls between two
//! whole text frames, which RFC 6455 allows. Bound: the writer queues at most one batch (its
//! `FLUSH_BYTES` and the frame that crossed it: references to bytes the outbox already
//! counted) before it flushes. What this costs an idle connection: ~48 bytes here and one
//! 64-byte allocation for the queue.

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, ready},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{Bytes, Utf8Bytes};

/// The writer's handle on its connection's queued text frames (see the module's header):
/// it pushes, the [`Batching`] under tungstenite frames and writes them in order.
#[derive(Clone, Default)]
pub(crate) struct Texts(Arc<Mutex<TextQueue>>);

/// What [`Texts`] shares.
#[derive(Default)]
struct TextQueue {
    queue: VecDeque<Bytes>,
    /// Texts were pushed since the last flush that reached this layer and completed. A
    /// flush that left it set never got here: tungstenite stops flushing the layer below it
    /// once the peer's close has been read, and says it flushed (see [`Texts::flushed`]).
    unflushed: bool,
}

impl Texts {
    /// Queues `text` as one text frame; it is written at the connection's next flush (or
    /// before, ahead of a control frame).
    pub(crate) fn push(&self, text: Utf8Bytes) {
        let mut q = self.lock();
        q.queue.push_back(Bytes::from(text));
        q.unflushed = true;
    }

    /// True once every text pushed so far went through a completed flush of the layer. The
    /// writer checks it after each flush: false means the socket is closing and the texts
    /// were not written.
    pub(crate) fn flushed(&self) -> bool {
        !self.lock().unflushed
    }

    fn pop(&self) -> Option<Bytes> {
        crate::outbound::pop_front_shrinking(&mut self.lock().queue)
    }

    /// A flush of the layer completed with nothing left to write.
    fn mark_flushed(&self) {
        let mut q = self.lock();
        if q.queue.is_empty() {
            q.unflushed = false;
        }
    }

    /// The queue; a poisoned lock is taken over (docs/ARCHITECTURE.md, "Rules").
    fn lock(&self) -> std::sync::MutexGuard<'_, TextQueue> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `data` — whole control frames, as tungstenite writes them here (unmasked, at
/// most 125 bytes of payload each) — holds a close frame.
fn holds_close(mut data: &[u8]) -> bool {
    while let [first, second, ..] = *data {
        match first {
            // FIN and close.
            0x88 => return true,
            // FIN and ping or pong.
            0x89 | 0x8A => {}
            // Not a control frame.
            _ => return false,
        }
        data = data
            .get(2 + usize::from(second & 0x7F)..)
            .unwrap_or_default();
    }
    false
}

/// The header of an unmasked, final text frame of `len` bytes (RFC 6455 §5.2): its bytes
/// and how many of them there are.
fn text_header(len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x81; // FIN, text
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if let Ok(short) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&short.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

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
pub(crate) struct Batching<S> {
    inner: S,
    /// Bytes not yet written to `inner` are `buf[at..]`.
    buf: Vec<u8>,
    at: usize,
    cap: usize,
    /// The socket is corked until the flush (a batch longer than `cap`).
    corked: bool,
    /// Text frames the writer queued and this layer has not started.
    texts: Texts,
    /// The text frame being written, and how much of its header and bytes is done.
    current: Option<Bytes>,
    current_at: usize,
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
            texts: Texts::default(),
            current: None,
            current_at: 0,
        }
    }

    /// The handle the connection's writer queues its text frames with.
    pub(crate) fn texts(&self) -> Texts {
        self.texts.clone()
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

impl<S: AsyncWrite + Cork + Unpin> Batching<S> {
    /// Takes `data` into the batch: buffered if it fits, else after what is buffered went
    /// out (corked); one at least `cap` long goes straight to the socket, never copied.
    fn poll_put(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.pending() + data.len() > self.cap {
            self.cork();
            ready!(self.poll_drain(cx))?;
        }
        if data.len() >= self.cap {
            // Empty now: a long write goes straight through, never copied.
            self.cork();
            return Pin::new(&mut self.inner).poll_write(cx, data);
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.cap);
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    /// Puts every queued text frame into the batch, in order: ready once all are in.
    fn poll_texts(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let body = match self.current.take() {
                Some(body) => body,
                None => match self.texts.pop() {
                    Some(body) => {
                        self.current_at = 0;
                        body
                    }
                    None => return Poll::Ready(Ok(())),
                },
            };
            let (head, head_len) = text_header(body.len());
            while self.current_at < head_len + body.len() {
                let part = if self.current_at < head_len {
                    &head[self.current_at..head_len]
                } else {
                    &body[self.current_at - head_len..]
                };
                match self.poll_put(cx, part) {
                    Poll::Ready(Ok(n)) if n > 0 => self.current_at += n,
                    other => {
                        self.current = Some(body);
                        return match other {
                            Poll::Ready(Ok(_)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                            other => other.map_ok(drop),
                        };
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Cork + Unpin> AsyncWrite for Batching<S> {
    /// tungstenite's writes (control frames): after the queued texts. A control frame is
    /// taken whole or not at all — it is shorter than the buffer (`TUNGSTENITE_BUFFER` <
    /// `WRITE_BUFFER`, asserted in `connection`) — so no text can land inside one. A close
    /// is sent on at once: tungstenite writes its answer to a client's close here and then
    /// never flushes this layer again, so it used to be dropped with the buffer and the
    /// client saw its connection reset without the closing handshake.
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_texts(cx))?;
        let n = ready!(this.poll_put(cx, data))?;
        if holds_close(&data[..n]) {
            // Best effort: what the socket does not take now goes with the connection.
            if let Poll::Ready(Ok(())) = this.poll_drain(cx) {
                this.uncork();
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_texts(cx))?;
        ready!(self.poll_drain(cx))?;
        // Under TLS this writes the last record: only then is the batch all in the socket.
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        self.uncork();
        self.texts.mark_flushed();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_texts(cx))?;
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

    /// What tungstenite would have written for `text` as one final text frame.
    fn framed(text: &str) -> Vec<u8> {
        use tokio_tungstenite::tungstenite::protocol::frame::{
            Frame,
            coding::{Data, OpCode},
        };
        let mut out = Vec::new();
        Frame::message(text.as_bytes().to_vec(), OpCode::Data(Data::Text), true)
            .format(&mut out)
            .unwrap();
        out
    }

    #[tokio::test]
    async fn queued_texts_are_framed_as_tungstenite_frames_them_and_in_order() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut w = Batching::new(a, 64);
        let texts = w.texts();
        // Every header length (7-bit, 16-bit, 64-bit), short (buffered) and long (straight
        // from the shared bytes).
        let lens = [0, 1, 125, 126, 65_535, 65_536, 200_000];
        let bodies: Vec<String> = lens
            .iter()
            .map(|&n| (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect())
            .collect();
        let mut want = Vec::new();
        for body in &bodies[..3] {
            texts.push(body.clone().into());
            want.extend(framed(body));
        }
        // A control frame written through tungstenite meanwhile goes after the queued texts,
        // never inside one.
        w.write_all(b"PONG").await.unwrap();
        want.extend_from_slice(b"PONG");
        for body in &bodies[3..] {
            texts.push(body.clone().into());
            want.extend(framed(body));
        }
        w.flush().await.unwrap();
        assert!(texts.lock().queue.is_empty() && w.current.is_none());
        assert!(texts.flushed());
        assert_eq!(
            w.buf.capacity(),
            0,
            "the buffer is given back after the flush"
        );
        let mut got = vec![0u8; want.len()];
        b.read_exact(&mut got).await.unwrap();
        assert!(got == want, "the bytes differ from tungstenite's framing");
    }

    #[tokio::test]
    async fn a_socket_that_takes_a_few_bytes_at_a_time_still_gets_whole_frames_in_order() {
        // A 7-byte pipe: every write is partial or waits, so a text is resumed where it
        // stopped, and the control write waits for the texts queued before it.
        let (a, mut b) = tokio::io::duplex(7);
        let mut w = Batching::new(a, 16);
        let texts = w.texts();
        let bodies: Vec<String> = [3, 130, 70_000, 20]
            .iter()
            .map(|&n| (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect())
            .collect();
        let mut want = Vec::new();
        for body in &bodies[..3] {
            want.extend(framed(body));
        }
        want.extend_from_slice(b"PONG");
        want.extend(framed(&bodies[3]));
        let total = want.len();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; total];
            b.read_exact(&mut got).await.unwrap();
            got
        });
        for body in &bodies[..3] {
            texts.push(body.clone().into());
        }
        w.write_all(b"PONG").await.unwrap();
        texts.push(bodies[3].clone().into());
        assert!(!texts.flushed(), "a pushed text waits for a flush");
        w.flush().await.unwrap();
        assert!(texts.flushed());
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the reader got every byte")
            .unwrap();
        assert!(got == want, "the bytes differ from tungstenite's framing");
    }

    #[test]
    fn a_close_is_found_among_the_control_frames_written_together() {
        let pong = [0x8A, 2, b'h', b'i'];
        let ping = [0x89, 0];
        let close = [0x88, 2, 0x03, 0xE8];
        assert!(!holds_close(&[]));
        assert!(!holds_close(&[pong, [0x89, 0, 0x89, 0]].concat()));
        assert!(holds_close(&close));
        assert!(holds_close(&[&pong[..], &ping, &close].concat()));
        // A pong whose payload looks like a close header is not one, nor are other bytes.
        assert!(!holds_close(&[0x8A, 2, 0x88, 0]));
        assert!(!holds_close(b"hello"));
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
