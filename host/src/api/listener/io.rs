//! The byte stream under each HTTP connection, [`TimedIo`]: it drops a client that stops
//! reading (the write timeout) and one that stops sending while the server waits on it (the
//! idle timeout).
//!
//! The write timeout is how a slow client is dropped. A response body is only polled when
//! hyper can write, so a client that stops reading leaves its connection parked on a full
//! socket, holding nothing but the socket's and hyper's bounded buffers. A timer is armed
//! only when a write finds the socket full; if the socket accepts nothing before it fires,
//! the write fails with `TimedOut` and hyper closes the connection. The client may
//! reconnect and resume with `Last-Event-ID`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A connection's stream under both timeouts.
///
/// Writes fail with `TimedOut` once they made no progress for the write timeout; that
/// timer exists only while a write is blocked. Reads fail with `TimedOut` once no byte
/// moved either way for the idle timeout while the server waits on the client
/// ([`Activity`]): an idle keep-alive connection or a request body that stopped arriving.
/// Responses being computed or streamed (SSE) are never cut by the idle timeout. Progress
/// only records an instant; the idle timer is re-armed lazily, when a read finds nothing.
pub struct TimedIo<S> {
    inner: S,
    write_timeout: Duration,
    /// Armed when a write first found the socket full; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
    idle_timeout: Duration,
    activity: Arc<Activity>,
    last_progress: Instant,
    idle: Option<Pin<Box<Sleep>>>,
}

impl<S> TimedIo<S> {
    /// Wraps `inner`; a zero timeout is treated as one millisecond.
    pub fn new(
        inner: S,
        write_timeout: Duration,
        idle_timeout: Duration,
        activity: Arc<Activity>,
    ) -> Self {
        let least = Duration::from_millis(1);
        Self {
            inner,
            write_timeout: write_timeout.max(least),
            stalled: None,
            idle_timeout: idle_timeout.max(least),
            activity,
            last_progress: Instant::now(),
            idle: None,
        }
    }

    /// Records a write that moved bytes as progress, then applies the write timeout.
    fn on_written(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.last_progress = Instant::now();
        }
        self.on_write(cx, result)
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
        let timeout = self.write_timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client accepted no data within the write timeout",
        )))
    }

    /// The error once the connection sat idle past the timeout while the server waited on
    /// the client; otherwise arms the timer with `cx`'s waker.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if !self.activity.waiting_on_client() {
            self.idle = None;
            return None;
        }
        let deadline = self.last_progress + self.idle_timeout;
        let timer = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the client sent nothing within the idle timeout",
            )
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.last_progress = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match self.expired(cx) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_written(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_written(cx, result)
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

/// What one connection's requests are doing, shared by its service (which counts) and its
/// [`TimedIo`] (which reads the counts).
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests whose response has not been dropped yet (an SSE stream stays in flight).
    in_flight: AtomicUsize,
    /// In-flight requests whose body the client has not finished sending.
    reading_bodies: AtomicUsize,
}

impl Activity {
    /// True while the server waits on the client: between requests, or for a request body.
    /// A response being computed or streamed is not waiting on the client.
    fn waiting_on_client(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            || self.reading_bodies.load(Ordering::Acquire) > 0
    }

    /// Counts a request from its head until its response is dropped.
    pub fn request(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        ActivityGuard {
            activity: self.clone(),
            counter: Counter::InFlight,
        }
    }

    /// Counts a request body from its head until it ends or is dropped.
    pub fn body(self: &Arc<Self>) -> ActivityGuard {
        self.reading_bodies.fetch_add(1, Ordering::AcqRel);
        ActivityGuard {
            activity: self.clone(),
            counter: Counter::ReadingBody,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Counter {
    InFlight,
    ReadingBody,
}

/// Undoes one count of [`Activity`] when dropped.
#[derive(Debug)]
pub struct ActivityGuard {
    activity: Arc<Activity>,
    counter: Counter,
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let counter = match self.counter {
            Counter::InFlight => &self.activity.in_flight,
            Counter::ReadingBody => &self.activity.reading_bodies,
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A timeout the test never reaches (the write tests never read, so the idle timeout
    /// is never checked in them).
    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_after_the_timeout() {
        // A 4 KiB pipe whose other end is never read: writes block once it is full.
        let (mut writer, _reader) = tokio::io::duplex(4096);
        let mut timed = TimedIo::new(&mut writer, Duration::from_millis(50), HOUR, Arc::default());
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
        let mut timed = TimedIo::new(
            &mut writer,
            Duration::from_millis(200),
            HOUR,
            Arc::default(),
        );
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

    #[tokio::test]
    async fn a_silent_client_is_cut_only_while_the_server_waits_on_it() {
        let activity = Arc::new(Activity::default());
        let (_client, server) = tokio::io::duplex(1024);
        let mut idle = TimedIo::new(server, HOUR, Duration::from_millis(50), activity.clone());
        let mut buf = [0u8; 16];
        // A response in flight (an SSE stream, say): silence is not idleness.
        let request = activity.request();
        let waited = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::io::AsyncReadExt::read(&mut idle, &mut buf),
        )
        .await;
        assert!(
            waited.is_err(),
            "still open while the response is in flight"
        );
        drop(request);
        let error = tokio::io::AsyncReadExt::read(&mut idle, &mut buf)
            .await
            .expect_err("cut once nothing is in flight");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
