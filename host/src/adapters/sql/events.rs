//! Per-command event streams (`events`, migrations 0001 and 0060). Appends take the
//! stream's next number from `commands.event_seq` (each database's `Db::insert_event`);
//! subscriptions are the in-process fan-out (`event_fanout`) over this table.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Pool;

use super::columns::Cols;
use super::db::Arg;
use super::{Db, SqlStore, db};
use crate::adapters::event_fanout::{FetchEvents, SUBSCRIPTION_PAGE, follow};
use crate::domain::{CommandId, StreamEvent};
use crate::ports::{EventLog, EventSubscription, StoreError, StoredEvent};

/// A row of `events` (`seq`, `at`, `event`) of `stream`.
pub(crate) fn event_from_row<D: Db>(
    stream: &CommandId,
    row: &D::Row,
) -> Result<StoredEvent, StoreError> {
    let cols = Cols::<D>::new(row, "events");
    Ok(StoredEvent {
        stream: stream.clone(),
        seq: cols.get("seq")?,
        at: cols.time("at")?,
        event: cols.json("event")?,
    })
}

/// Up to `limit` events of `stream` after `after`; shared by `EventLog::read` and the
/// fan-out's fetch of what other replicas appended.
async fn read_events<D: Db>(
    pool: &Pool<D>,
    stream: &CommandId,
    after: i64,
    limit: u32,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, at, event FROM events WHERE stream = $1 AND seq > $2 \
         ORDER BY seq LIMIT $3",
    )
    .arg(stream.as_str())
    .arg(after)
    .arg(i64::from(limit))
    .fetch_all(D::on_pool(pool))
    .await
    .map_err(db("reading events"))?;
    rows.iter()
        .map(|row| event_from_row::<D>(stream, row))
        .collect()
}

/// The fan-out's fetch over the pool (not the store, which owns the fan-out).
pub(crate) fn fetch_events<D: Db>(pool: Pool<D>) -> FetchEvents {
    Arc::new(move |stream, after| {
        let pool = pool.clone();
        Box::pin(async move { read_events(&pool, &stream, after, SUBSCRIPTION_PAGE).await })
    })
}

impl<D: Db> SqlStore<D> {
    /// Appends under `key` (if any; with `running_only` only to a running command) and
    /// publishes the stored event to this process's subscribers after the commit.
    async fn append_keyed(
        &self,
        stream: &CommandId,
        event: &StreamEvent,
        key: Option<&str>,
        running_only: bool,
    ) -> Result<StoredEvent, StoreError> {
        let context = "appending an event";
        let publish = self.inner.signals.events.begin_append(stream);
        let mut w = if D::APPEND_IN_ONE_STATEMENT {
            self.write(context).await?
        } else {
            self.transaction(context).await?
        };
        let stored = D::insert_event(w.conn(), stream, event, key, running_only).await?;
        w.commit().await?;
        publish.publish(&stored);
        Ok(stored)
    }
}

#[async_trait]
impl<D: Db> EventLog for SqlStore<D> {
    async fn append(
        &self,
        stream: &CommandId,
        event: &StreamEvent,
    ) -> Result<StoredEvent, StoreError> {
        self.append_keyed(stream, event, None, false).await
    }

    async fn append_once(
        &self,
        stream: &CommandId,
        event: &StreamEvent,
        key: &str,
    ) -> Result<StoredEvent, StoreError> {
        self.append_keyed(stream, event, Some(key), false).await
    }

    async fn append_while_running(
        &self,
        stream: &CommandId,
        event: &StreamEvent,
        key: &str,
    ) -> Result<StoredEvent, StoreError> {
        self.append_keyed(stream, event, Some(key), true).await
    }

    async fn read_keyed(
        &self,
        stream: &CommandId,
        prefix: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // `_` and `%` are LIKE's wildcards; the prefixes used are plain words and `-`/`:`.
        if prefix.contains(['_', '%', '\\']) {
            return Err(StoreError::Invalid(format!(
                "append key prefix {prefix:?} has a LIKE wildcard"
            )));
        }
        let rows = sqlx::query(
            "SELECT seq, at, event FROM events WHERE stream = $1 AND append_key LIKE $2 \
             ORDER BY seq",
        )
        .arg(stream.as_str())
        .arg(format!("{prefix}%"))
        .fetch_all(D::on_pool(&self.inner.pool))
        .await
        .map_err(db("reading keyed events"))?;
        rows.iter()
            .map(|row| event_from_row::<D>(stream, row))
            .collect()
    }

    async fn read(
        &self,
        stream: &CommandId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        read_events(&self.inner.pool, stream, after, limit).await
    }

    fn subscribe(&self, stream: &CommandId, after: i64) -> EventSubscription {
        follow(
            self.clone(),
            &self.inner.signals.events,
            stream,
            after,
            self.inner.config.poll_fallback,
        )
    }
}
