//! `GET /projects/{id}/events/{stream_id}`: a command's events as server-sent events.
//!
//! `id:` is the event's sequence number, `event:` its type and `data:` its JSON. The store's
//! subscription replays what is stored after `Last-Event-ID` and then follows new events by
//! sequence number, so a reconnecting client sees every event exactly once, and a late one
//! gets the full replay. The stream ends after the terminal `done` event. Each connection has
//! a bounded buffer: a client that leaves it full for `send_timeout` is disconnected (it may
//! resume) instead of making the server hold an unbounded backlog.
//!
//! Browsers' `EventSource` cannot set headers, so this route alone also takes the token as
//! `?access_token=` (see [`super::auth::StreamAuth`]).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::StreamAuth;
use super::error::{ApiError, ApiPath, ApiQuery};
use super::state::AppState;
use crate::domain::{CommandId, ProjectId};
use crate::ports::StoredEvent;

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

fn to_sse(event: &StoredEvent) -> Event {
    let base = Event::default()
        .id(event.seq.to_string())
        .event(event.event.kind());
    match base.clone().json_data(&event.event) {
        Ok(with_data) => with_data,
        // Serializing a domain event cannot fail; keep the stream well-formed regardless.
        Err(_) => base.data("{}"),
    }
}

/// Streams a command's events as server-sent events: `id:` is the sequence number, `event:`
/// the event type and `data:` a JSON `StreamEvent`. Stored events are replayed first; the
/// stream ends after the `done` event.
#[utoipa::path(get, path = "/projects/{id}/events/{stream_id}", tag = "commands",
    security(("bearer" = []), ("access_token" = [])),
    params(
        ("id" = ProjectId, Path, description = "Project id"),
        ("stream_id" = CommandId, Path, description = "Command id (a command's `stream_url`)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this sequence number"),
        StreamQuery,
    ), responses(
    (status = 200, description = "Server-sent events; each `data:` is a StreamEvent", body = String, content_type = "text/event-stream"),
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
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    principal.require_project(&project)?;
    let after = resume_point(&headers, &query)?;
    state.stores.projects.get(&project).await?;
    let not_found = || ApiError::not_found("stream", &stream_id);
    let id = CommandId::parse(&stream_id).map_err(|_| not_found())?;
    let command = state.stores.queue.get(&id).await.map_err(|e| match e {
        crate::ports::StoreError::NotFound { .. } => not_found(),
        other => other.into(),
    })?;
    if command.project_id != project {
        return Err(not_found());
    }

    let mut subscription = state.stores.events.subscribe(&id, after);
    let (tx, rx) = mpsc::channel::<Event>(state.sse.buffer.max(1));
    let config = state.sse;
    let gauge = state.metrics.sse_subscribers.clone();
    let shutdown = state.shutdown.clone();
    gauge.inc();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = subscription.next() => next,
                () = tx.closed() => break,
                () = shutdown.cancelled() => break,
            };
            match next {
                Some(Ok(event)) => {
                    // The common case needs no timer; only a full buffer waits.
                    let sent = match tx.try_send(to_sse(&event)) {
                        Ok(()) => true,
                        Err(TrySendError::Full(event)) => {
                            tx.send_timeout(event, config.send_timeout).await.is_ok()
                        }
                        Err(TrySendError::Closed(_)) => false,
                    };
                    if !sent {
                        tracing::debug!(stream = %id, "SSE client too slow or gone; dropped");
                        break;
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(stream = %id, %error, "event subscription failed");
                    break;
                }
                None => break,
            }
        }
        gauge.dec();
    });
    let events = ReceiverStream::new(rx).map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(config.keep_alive)))
}
