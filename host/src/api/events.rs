//! `GET /projects/{id}/events/{stream_id}`: a command's events as server-sent events.
//!
//! `id:` is the event's sequence number, `event:` its type and `data:` its JSON. The store's
//! subscription replays what is stored after `Last-Event-ID` and then follows new events by
//! sequence number, so a reconnecting client sees every event exactly once, and a late one
//! gets the full replay. The stream ends after the terminal `done` event. Nothing is buffered
//! per subscriber: the body is read from the stream's shared channel when the connection can
//! write, and a client that stops reading is disconnected by the listener's write timeout
//! (it may resume) instead of making the server hold a backlog.
//!
//! Browsers' `EventSource` cannot set headers, so this route alone also takes the token as
//! `?access_token=` (see [`super::auth::StreamAuth`]).

use std::convert::Infallible;
use std::sync::Arc;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::StreamAuth;
use super::error::{ApiError, ApiPath, ApiQuery, StoreContext};
use super::state::AppState;
use crate::domain::{CommandId, ProjectId};
use crate::ports::{EventSubscription, StoredEvent};

/// Query of the stream route, for clients that cannot set headers.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this sequence number (as the `Last-Event-ID` header does).
    pub last_event_id: Option<String>,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(stream))
}

fn resume_point(headers: &HeaderMap, query: &StreamQuery) -> Result<i64, ApiError> {
    let raw = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("invalid").to_owned())
        .or_else(|| query.last_event_id.clone());
    match raw {
        None => Ok(0),
        Some(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|seq| *seq >= 0)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    "Last-Event-ID must be a sequence number this stream sent",
                )
            }),
    }
}

/// One event as an SSE frame. Compact JSON has no line breaks, so `data:` is one line.
fn frame(event: &StoredEvent) -> Bytes {
    let data = serde_json::to_string(&event.event)
        // Serializing a domain event cannot fail; keep the stream well-formed regardless.
        .unwrap_or_else(|_| "{}".to_owned());
    let kind = event.event.kind();
    let mut out = BytesMut::with_capacity(data.len() + kind.len() + 40);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(event.seq.to_string().as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// A comment line: clients ignore it, proxies see a live connection.
const KEEP_ALIVE: &[u8] = b":\n\n";

/// Counts an open stream for `/metrics` until the response body is dropped.
struct SubscriberGauge(Gauge);

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The response body, polled by the connection itself: no task and no buffer of its own
/// per subscriber. Each event's frame is encoded once per stream ([`crate::ports::DeliveredEvent::wire`]);
/// the keep-alive timer is re-armed only when it fires, not once per event.
struct SseBody {
    subscription: EventSubscription,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    keep_alive: Pin<Box<Sleep>>,
    interval: Duration,
    last_sent: Instant,
    stream: CommandId,
    _gauge: SubscriberGauge,
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        match this.subscription.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(event))) => {
                this.last_sent = Instant::now();
                return Poll::Ready(Some(Ok(event.wire(frame))));
            }
            Poll::Ready(Some(Err(error))) => {
                tracing::warn!(stream = %this.stream, %error, "event subscription failed");
                return Poll::Ready(None);
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        while this.keep_alive.as_mut().poll(cx).is_ready() {
            let due = this.last_sent + this.interval;
            let now = Instant::now();
            if now >= due {
                this.last_sent = now;
                this.keep_alive.as_mut().reset(now + this.interval);
                return Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE))));
            }
            this.keep_alive.as_mut().reset(due);
        }
        Poll::Pending
    }
}

/// True when a client resuming after `after` has already seen the stream's end: nothing is
/// stored after it, and the event at `after` is the terminal one or does not exist (an id
/// past the end). A finished command whose `done` is not stored yet is followed as usual.
async fn ended_before(state: &AppState, id: &CommandId, after: i64) -> Result<bool, ApiError> {
    if after == 0 || !state.stores.events.read(id, after, 1).await?.is_empty() {
        return Ok(false);
    }
    let at = state.stores.events.read(id, after - 1, 1).await?;
    Ok(at
        .first()
        .is_none_or(|event| event.seq != after || event.event.is_terminal()))
}

/// Streams a command's events as server-sent events: `id:` is the sequence number, `event:`
/// the event type and `data:` a JSON `StreamEvent`. Stored events are replayed first; the
/// stream ends after the `done` event; resuming at or past it answers 204 at once.
#[utoipa::path(get, path = "/projects/{id}/events/{stream_id}", tag = "commands",
    security(("bearer" = []), ("access_token" = [])),
    params(
        ("id" = ProjectId, Path, description = "Project id"),
        ("stream_id" = CommandId, Path, description = "Command id (a command's `stream_url`)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this sequence number"),
        StreamQuery,
    ), responses(
    (status = 200, description = "Server-sent events; each `data:` is a StreamEvent", body = String, content_type = "text/event-stream"),
    (status = 204, description = "Last-Event-ID is at or past the end of a finished stream"),
    (status = 400, description = "Invalid Last-Event-ID or project id"),
    (status = 403, description = "The token may not access this project"),
    (status = 404, description = "No such project or command"),
))]
async fn stream(
    State(state): State<Arc<AppState>>,
    StreamAuth(principal): StreamAuth,
    ApiPath((project, stream_id)): ApiPath<(ProjectId, String)>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require_project(&project)?;
    let after = resume_point(&headers, &query)?;
    state.stores.projects.get(&project).await?;
    let not_found = || ApiError::not_found("stream", &stream_id);
    let id = CommandId::parse(&stream_id).map_err(|_| not_found())?;
    let command = state
        .stores
        .queue
        .get(&id)
        .await
        .map_err(|e| ApiError::from_store(e, StoreContext::ReadingStream(&stream_id)))?;
    if command.project_id != project {
        return Err(not_found());
    }
    if command.status.is_terminal() && ended_before(&state, &id, after).await? {
        // 204 also tells a browser's `EventSource` not to reconnect.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }

    let subscription = state.stores.events.subscribe(&id, after);
    state.metrics.sse_subscribers.inc();
    let interval = state.sse.keep_alive.max(Duration::from_millis(1));
    let body = SseBody {
        subscription,
        shutdown: Box::pin(state.shutdown.clone().cancelled_owned()),
        keep_alive: Box::pin(tokio::time::sleep(interval)),
        interval,
        last_sent: Instant::now(),
        stream: id,
        _gauge: SubscriberGauge(state.metrics.sse_subscribers.clone()),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
