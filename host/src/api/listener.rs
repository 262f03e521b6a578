//! The HTTP listener: accepted connections get `TCP_NODELAY` and a write timeout.
//!
//! Event streams write many small frames: with Nagle's algorithm a frame written while the
//! previous one is still unacknowledged waits for the peer's delayed ACK (up to 40 ms on
//! Linux), so `TCP_NODELAY` is what keeps SSE delivery in the sub-millisecond range.
//!
//! The write timeout is how a slow client is dropped. A response body is only polled when
//! hyper can write, so a client that stops reading leaves its connection parked on a full
//! socket, holding nothing but the socket's and hyper's bounded buffers. [`WriteTimeout`]
//! arms a timer only when a write finds the socket full; if the socket accepts nothing
//! before it fires, the write fails with `TimedOut` and hyper closes the connection. The
//! client may reconnect and resume with `Last-Event-ID`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// Accepts TCP connections for `axum::serve`, wrapping each in [`WriteTimeout`].
pub struct TunedListener {
    inner: TcpListener,
    write_timeout: Duration,
}

impl TunedListener {
    /// `write_timeout` bounds how long a connection may leave every write pending.
    pub fn new(inner: TcpListener, write_timeout: Duration) -> Self {
        Self {
            inner,
            write_timeout,
        }
    }
}

impl axum::serve::Listener for TunedListener {
    type Io = WriteTimeout<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%addr, %error, "could not set TCP_NODELAY");
        }
        (WriteTimeout::new(stream, self.write_timeout), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A stream whose writes fail with `TimedOut` once they have made no progress for the
/// timeout. Reads are untouched; the timer exists only while a write is blocked.
pub struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write first found the socket full; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    /// Wraps `inner`; a zero timeout is treated as one millisecond.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout: timeout.max(Duration::from_millis(1)),
            stalled: None,
        }
    }

    /// Turns a write's `Pending` into an error once the stall outlived the timeout; the
    /// timer's waker is the writer's, so hyper is woken to see the error.
    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let timeout = self.timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client accepted no data within the write timeout",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_after_the_timeout() {
        // A 4 KiB pipe whose other end is never read: writes block once it is full.
        let (mut writer, _reader) = tokio::io::duplex(4096);
        let mut timed = WriteTimeout::new(&mut writer, Duration::from_millis(50));
        let chunk = vec![0u8; 1024];
        let error = loop {
            if let Err(error) = timed.write_all(&chunk).await {
                break error;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn progress_before_the_timeout_keeps_the_stream_open() {
        let (mut writer, mut reader) = tokio::io::duplex(1024);
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut sink)
                .await
                .map(|_| sink.len())
        });
        let mut timed = WriteTimeout::new(&mut writer, Duration::from_millis(200));
        for _ in 0..64 {
            timed
                .write_all(&[1u8; 1024])
                .await
                .expect("the reader keeps up");
        }
        drop(timed);
        drop(writer);
        assert_eq!(drain.await.expect("drain").expect("read"), 64 * 1024);
    }
}
