//! A port-forwarded stream that surfaces the port's error channel as an I/O error.
//!
//! The API server reports a failed dial to the pod's port (nothing listening, say) on the
//! port's error channel, not by closing the data stream; without this a reader would wait
//! forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

type ErrorFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// The data stream of one forwarded port plus its error channel.
pub(super) struct ForwardedStream {
    stream: DuplexStream,
    error: Option<ErrorFuture>,
    failed: Option<String>,
}

impl ForwardedStream {
    pub(super) fn new(
        stream: DuplexStream,
        error: impl Future<Output = Option<String>> + Send + 'static,
    ) -> Self {
        Self {
            stream,
            error: Some(Box::pin(error)),
            failed: None,
        }
    }

    /// Errors once the port reported one; `Ok` while it has not (or cannot any more).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(error) = self.error.as_mut()
            && let Poll::Ready(message) = error.as_mut().poll(cx)
        {
            self.error = None;
            self.failed = message;
        }
        match &self.failed {
            Some(message) => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                message.clone(),
            )),
            None => Ok(()),
        }
    }
}

impl AsyncRead for ForwardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ForwardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
