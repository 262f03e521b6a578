//! The one listener connection per process: turns every replica's `NOTIFY`s on
//! `rdev_work`, `rdev_events` (stream and sequence number only), `rdev_cancel`,
//! `rdev_webhooks` and `rdev_approvals` (an approval id) into this process's wake-ups.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio_util::sync::CancellationToken;

use crate::adapters::sql::Signals;
use crate::domain::CommandId;

/// First wait before the listener reconnects; doubles up to the poll fallback.
const LISTEN_RETRY_MIN: Duration = Duration::from_millis(50);

/// Turns NOTIFYs from any replica into in-process signals; reconnects when the connection
/// drops (backing off from 50 ms up to `retry`, so a restarted server is found again within
/// moments), and wakes every worker after a reconnect since notifications may have been lost.
pub(super) async fn listen(
    pool: PgPool,
    signals: Arc<Signals>,
    stop: CancellationToken,
    retry: Duration,
) {
    let mut backoff = LISTEN_RETRY_MIN;
    while !stop.is_cancelled() {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener
                .listen_all([
                    "rdev_work",
                    "rdev_events",
                    "rdev_cancel",
                    "rdev_webhooks",
                    "rdev_approvals",
                ])
                .await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            () = stop.cancelled() => return,
            result = connected => match result {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "postgres listener cannot connect; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {
                            backoff = (backoff * 2).min(retry.max(LISTEN_RETRY_MIN));
                            continue;
                        }
                    }
                }
            },
        };
        backoff = LISTEN_RETRY_MIN;
        signals.wake_workers();
        signals.wake_dispatchers();
        signals.events.resync_all();
        loop {
            let notification = tokio::select! {
                () = stop.cancelled() => return,
                notification = listener.recv() => notification,
            };
            match notification {
                Ok(n) if n.channel() == "rdev_work" => signals.wake_workers(),
                Ok(n) if n.channel() == "rdev_webhooks" => signals.wake_dispatchers(),
                Ok(n) if n.channel() == "rdev_approvals" => {
                    signals.announce_decision(n.payload().to_owned());
                }
                Ok(n) if n.channel() == "rdev_cancel" => {
                    if let Ok(id) = CommandId::parse(n.payload()) {
                        signals.announce_cancel(id);
                    }
                }
                Ok(n) => {
                    if let Some((stream, seq)) = n.payload().rsplit_once(':')
                        && let Ok(seq) = seq.parse()
                        && let Ok(stream) = CommandId::parse(stream)
                    {
                        signals.events.remote_append(&stream, seq);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "postgres listener lost its connection");
                    break;
                }
            }
        }
    }
}
