//! The HTTP listener: rdev's own accept loop over hyper's HTTP/1 connections, so that what an
//! unauthenticated client can hold is bounded before any handler runs.
//!
//! - Caps ([`limits`]): connections in total and per peer address; beyond them a `503` is
//!   written on the socket and it is closed.
//! - Timeouts: hyper's header-read timeout (slowloris, and sockets that send nothing), an
//!   idle timeout while the server waits on the client and the write timeout that drops a
//!   client which stops reading (both [`io::TimedIo`]). An SSE stream is
//!   a response in flight, so the idle timeout never cuts it; its keep-alives and the write
//!   timeout are its rules.
//! - Accept errors (out of file descriptors) back off from 5 ms to 1 s instead of spinning.
//! - `TCP_NODELAY` on every connection: event streams write many small frames, and with
//!   Nagle's algorithm a frame written while the previous one is unacknowledged waits for
//!   the peer's delayed ACK (up to 40 ms on Linux).

pub mod io;
pub mod limits;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

pub use io::{Activity, ActivityGuard, TimedIo};
pub use limits::{ConnectionLimits, Gate, Permit, Refused};

/// Serves `app` on `listener` under `limits` until `shutdown`, then lets open connections
/// finish their current request (streams end on the same token) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    write_timeout: Duration,
    shutdown: CancellationToken,
) {
    let gate = Gate::new(limits);
    let connections = TaskTracker::new();
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                let pause = backoff.next(&error);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let permit = match gate.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(why) => {
                tracing::debug!(%peer, ?why, "connection refused over the cap");
                gate.refuse(stream, why);
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::default());
        let io = TimedIo::new(stream, write_timeout, limits.idle_timeout, activity.clone());
        let service = hyper::service::service_fn({
            let app = app.clone();
            move |request: http::Request<Incoming>| {
                serve_one(app.clone(), activity.clone(), request)
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let connection = builder.serve_connection(TokioIo::new(io), service);
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// One request through the router, counted in the connection's [`Activity`] from its head
/// until its response body is dropped, its body until the client finished sending it.
async fn serve_one(
    app: Router,
    activity: Arc<Activity>,
    request: http::Request<Incoming>,
) -> Result<http::Response<Body>, Infallible> {
    let in_flight = activity.request();
    let request = request.map(|body| {
        let reading = (!hyper::body::Body::is_end_stream(&body)).then(|| activity.body());
        Body::new(Counted {
            inner: body,
            guard: reading,
        })
    });
    let response = app.oneshot(request).await?;
    Ok(response.map(|body| {
        Body::new(Counted {
            inner: body,
            guard: Some(in_flight),
        })
    }))
}

/// A body that holds an [`ActivityGuard`] until it ends or is dropped.
struct Counted<B> {
    inner: B,
    guard: Option<ActivityGuard>,
}

impl<B> hyper::body::Body for Counted<B>
where
    B: hyper::body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Errors of one connection that `accept` reports but that say nothing about the listener.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

/// Pauses after failed accepts (EMFILE, ENFILE, ENOMEM): doubling from 5 ms to 1 s, logged
/// once per streak of failures, reset by the next accepted connection.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn next(&mut self, error: &std::io::Error) -> Duration {
        if self.failures == 0 {
            tracing::error!(%error, "accept failed; backing off until connections close");
        }
        let pause = Self::FIRST
            .saturating_mul(1 << self.failures.min(8))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        pause
    }

    fn reset(&mut self) {
        if self.failures > 0 {
            tracing::info!(failed = self.failures, "accepting connections again");
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_to_a_second_and_reset() {
        let mut backoff = AcceptBackoff::default();
        let error = std::io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<Duration> = (0..10).map(|_| backoff.next(&error)).collect();
        assert_eq!(pauses[0], Duration::from_millis(5));
        assert_eq!(pauses[1], Duration::from_millis(10));
        assert_eq!(*pauses.last().expect("pauses"), Duration::from_secs(1));
        backoff.reset();
        assert_eq!(backoff.next(&error), Duration::from_millis(5));
    }
}
