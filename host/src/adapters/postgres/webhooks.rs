//! Webhook subscriptions and their outbox on PostgreSQL (migrations 0030, 0050). Dispatchers
//! on several replicas claim due rows with `FOR UPDATE SKIP LOCKED` and a lease, so no
//! delivery is sent by two of them at once, and a replica that dies mid-attempt leaves its
//! rows to the others when the lease expires. Writing outbox rows NOTIFYs `rdev_webhooks` in
//! the same transaction, which wakes every replica's dispatcher at commit. Signing secrets
//! are sealed with the master key, bound to the webhook's id.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::PgConnection;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use tokio::sync::watch;

use super::{PgStore, corrupt, db};
use crate::adapters::master_key::nonce;
use crate::adapters::outbox::ClaimedRow;
use crate::adapters::sql::audit::append_audit;
use crate::domain::{
    CommandRecord, Delivery, DeliveryAttempt, DeliveryStatus, DueDelivery, NewAuditEntry,
    NewWebhook, NextStep, ProjectId, SealedWebhookSecret, Webhook, WebhookEvent, WebhookSecret,
    webhook::GONE_REASON,
};
use crate::ports::{DeliveryPage, MAX_DELIVERY_PAGE, StoreError, WebhookStore};

const WEBHOOK_COLUMNS: &str = "id, project_id, url, event_types, description, enabled, \
                               disabled_reason, created_at, updated_at";

fn webhook_from_row(row: &PgRow) -> Result<Webhook, StoreError> {
    let bad = corrupt("webhooks");
    let get = |e: sqlx::Error| bad(e.to_string());
    let project: String = row.try_get("project_id").map_err(get)?;
    let Json(event_types): Json<Vec<String>> = row.try_get("event_types").map_err(get)?;
    Ok(Webhook {
        id: row.try_get("id").map_err(get)?,
        project_id: ProjectId::parse(project).map_err(|e| bad(e.to_string()))?,
        url: row.try_get("url").map_err(get)?,
        event_types,
        description: row.try_get("description").map_err(get)?,
        enabled: row.try_get("enabled").map_err(get)?,
        disabled_reason: row.try_get("disabled_reason").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
    })
}

/// Fans `event` out to every enabled, matching subscription of its project, on `conn`
/// (inside the caller's transaction, under the write lock). The filter rule is
/// `domain::webhook::filter_matches`.
pub(super) async fn emit_in(
    conn: &mut PgConnection,
    event: &WebhookEvent,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries (event_id, webhook_id, project_id, event_type, payload, \
         status, next_attempt_at) \
         SELECT $1, w.id, w.project_id, $3, $4, 'pending', now() FROM webhooks w \
         WHERE w.project_id = $2 AND w.enabled AND ( \
           jsonb_array_length(w.event_types) = 0 \
           OR jsonb_exists_any(w.event_types, ARRAY[$3::text, '*']))",
    )
    .bind(&event.id)
    .bind(event.project_id.as_str())
    .bind(&event.event_type)
    .bind(event.body())
    .execute(&mut *conn)
    .await
    .map_err(db("writing webhook events"))?;
    if done.rows_affected() > 0 {
        // Delivered at commit to every replica's listener. Only when rows were written: a
        // NOTIFY holds the global notify lock through commit.
        sqlx::query("SELECT pg_notify('rdev_webhooks', '')")
            .execute(&mut *conn)
            .await
            .map_err(db("writing webhook events"))?;
    }
    Ok(done.rows_affected())
}

/// The terminal-status event of `command`, written on `conn` in the transaction that set the
/// status. Nothing for a non-terminal status.
pub(super) async fn emit_for_command(
    conn: &mut PgConnection,
    command: &CommandRecord,
) -> Result<(), StoreError> {
    if let Some(event) = WebhookEvent::for_command(uuid::Uuid::now_v7(), command) {
        emit_in(conn, &event).await?;
    }
    Ok(())
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound {
        kind: "webhook",
        id: id.to_owned(),
    }
}

fn attempt_from_row(row: &PgRow) -> Result<(i64, DeliveryAttempt), StoreError> {
    let bad = corrupt("webhook_attempts");
    let get = |e: sqlx::Error| bad(e.to_string());
    let attempt: i32 = row.try_get("attempt").map_err(get)?;
    let duration: i64 = row.try_get("duration_ms").map_err(get)?;
    let status: Option<i32> = row.try_get("status_code").map_err(get)?;
    Ok((
        row.try_get("delivery_seq").map_err(get)?,
        DeliveryAttempt {
            attempt: u32::try_from(attempt).unwrap_or(0),
            started_at: row.try_get("started_at").map_err(get)?,
            duration_ms: u64::try_from(duration).unwrap_or(0),
            status_code: status.and_then(|s| u16::try_from(s).ok()),
            error: row.try_get("error").map_err(get)?,
        },
    ))
}

fn delivery_from_row(row: &PgRow) -> Result<Delivery, StoreError> {
    let bad = corrupt("webhook_deliveries");
    let get = |e: sqlx::Error| bad(e.to_string());
    let status: String = row.try_get("status").map_err(get)?;
    let payload: String = row.try_get("payload").map_err(get)?;
    let time = |column: &str| -> Result<Option<chrono::DateTime<Utc>>, StoreError> {
        row.try_get(column).map_err(get)
    };
    let status: DeliveryStatus = status.parse().map_err(&bad)?;
    Ok(Delivery {
        id: row.try_get("seq").map_err(get)?,
        event_id: row.try_get("event_id").map_err(get)?,
        event_type: row.try_get("event_type").map_err(get)?,
        status,
        payload: serde_json::from_str(&payload).map_err(|e| bad(e.to_string()))?,
        next_attempt_at: if status == DeliveryStatus::Pending {
            time("next_attempt_at")?
        } else {
            None
        },
        created_at: row.try_get("created_at").map_err(get)?,
        finished_at: time("finished_at")?,
        attempts: Vec::new(),
    })
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_webhook(&self, webhook: NewWebhook) -> Result<Webhook, StoreError> {
        let key = self.inner.key.load();
        let sealed = SealedWebhookSecret::seal(&key, &webhook.id, webhook.secret.expose(), nonce());
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhooks (id, project_id, url, event_types, description, \
             sealed_secret, key_fingerprint, enabled) VALUES ($1, $2, $3, $4, $5, $6, $7, true) \
             ON CONFLICT (id) DO NOTHING RETURNING {WEBHOOK_COLUMNS}"
        )))
        .bind(&webhook.id)
        .bind(webhook.project_id.as_str())
        .bind(&webhook.url)
        .bind(Json(&webhook.event_types))
        .bind(&webhook.description)
        .bind(sealed.0)
        .bind(key.fingerprint())
        .fetch_optional(self.pool_ref())
        .await
        .map_err(db("creating a webhook"))?;
        match row {
            Some(row) => webhook_from_row(&row),
            None => Err(StoreError::Conflict(format!(
                "webhook {} already exists",
                webhook.id
            ))),
        }
    }

    async fn list_webhooks(&self, project: &ProjectId) -> Result<Vec<Webhook>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE project_id = $1 \
             ORDER BY created_at, id"
        )))
        .bind(project.as_str())
        .fetch_all(self.pool_ref())
        .await
        .map_err(db("listing webhooks"))?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn get_webhook(&self, project: &ProjectId, id: &str) -> Result<Webhook, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE project_id = $1 AND id = $2"
        )))
        .bind(project.as_str())
        .bind(id)
        .fetch_optional(self.pool_ref())
        .await
        .map_err(db("reading a webhook"))?;
        row.map_or_else(|| Err(not_found(id)), |row| webhook_from_row(&row))
    }

    async fn delete_webhook(&self, project: &ProjectId, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM webhooks WHERE project_id = $1 AND id = $2")
            .bind(project.as_str())
            .bind(id)
            .execute(self.pool_ref())
            .await
            .map_err(db("deleting a webhook"))?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    async fn emit(
        &self,
        event: &WebhookEvent,
        audit: Option<NewAuditEntry>,
    ) -> Result<u64, StoreError> {
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .map_err(db("writing webhook events"))?;
        if let Some(entry) = audit {
            append_audit::<sqlx::Postgres>(&mut tx, entry, None).await?;
        }
        let queued = emit_in(&mut tx, event).await?;
        tx.commit().await.map_err(db("writing webhook events"))?;
        Ok(queued)
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        // One statement: the claim and the join with each webhook's URL and sealed secret.
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "WITH claimed AS ( \
               UPDATE webhook_deliveries SET lease_owner = $1, \
               lease_expires_at = now() + make_interval(secs => $2), attempts = attempts + 1 \
               WHERE seq IN ( \
                 SELECT d.seq FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                 WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND w.enabled \
                   AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now()) \
                 ORDER BY d.next_attempt_at, d.seq LIMIT $3 FOR UPDATE OF d SKIP LOCKED) \
               RETURNING seq, event_id, webhook_id, project_id, event_type, payload, attempts, \
                 next_attempt_at) \
             SELECT c.seq, c.event_id, c.webhook_id, c.project_id, c.event_type, c.payload, \
               c.attempts::bigint AS attempts, w.url, w.sealed_secret \
             FROM claimed c JOIN webhooks w ON w.id = c.webhook_id \
             ORDER BY c.next_attempt_at, c.seq",
        )
        .bind(owner)
        .bind(lease.as_secs_f64())
        .bind(i64::from(limit))
        .fetch_all(self.pool_ref())
        .await
        .map_err(db("claiming webhook deliveries"))?;
        rows.into_iter().map(|row| row.into_due(owner)).collect()
    }

    fn open_secret(&self, delivery: &DueDelivery) -> Result<WebhookSecret, StoreError> {
        Ok(delivery
            .secret
            .open(&self.inner.key.load(), &delivery.webhook_id)?)
    }

    fn delivery_signal(&self) -> watch::Receiver<u64> {
        self.inner.signals.deliveries.subscribe()
    }

    async fn record_attempt(
        &self,
        delivery: &DueDelivery,
        attempt: &DeliveryAttempt,
        next: NextStep,
    ) -> Result<(), StoreError> {
        let (status, next_at) = match next {
            NextStep::Delivered => (DeliveryStatus::Delivered, None),
            NextStep::RetryAt(at) => (DeliveryStatus::Pending, Some(at)),
            NextStep::GiveUp | NextStep::Disable => (DeliveryStatus::Failed, None),
        };
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .map_err(db("recording a webhook attempt"))?;
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $4, next_attempt_at = $5, \
             lease_owner = NULL, lease_expires_at = NULL, \
             finished_at = CASE WHEN $4 = 'pending' THEN NULL ELSE now() END \
             WHERE seq = $1 AND attempts = $2 AND lease_owner = $3 AND status = 'pending'",
        )
        .bind(delivery.id)
        .bind(i32::try_from(delivery.attempt).unwrap_or(i32::MAX))
        .bind(&delivery.owner)
        .bind(status.as_str())
        .bind(next_at)
        .execute(&mut *tx)
        .await
        .map_err(db("recording a webhook attempt"))?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "delivery {} was claimed again; attempt {} not recorded",
                delivery.id, delivery.attempt
            )));
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_seq, attempt, started_at, duration_ms, \
             status_code, error) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(delivery.id)
        .bind(i32::try_from(attempt.attempt).unwrap_or(i32::MAX))
        .bind(attempt.started_at)
        .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
        .bind(attempt.status_code.map(i32::from))
        .bind(&attempt.error)
        .execute(&mut *tx)
        .await
        .map_err(db("recording a webhook attempt"))?;
        if next == NextStep::Disable {
            sqlx::query(
                "UPDATE webhooks SET enabled = false, disabled_reason = $2, updated_at = now() \
                 WHERE id = $1",
            )
            .bind(&delivery.webhook_id)
            .bind(GONE_REASON)
            .execute(&mut *tx)
            .await
            .map_err(db("disabling a webhook"))?;
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'cancelled', finished_at = now(), \
                 lease_owner = NULL, lease_expires_at = NULL \
                 WHERE webhook_id = $1 AND status = 'pending'",
            )
            .bind(&delivery.webhook_id)
            .execute(&mut *tx)
            .await
            .map_err(db("disabling a webhook"))?;
        }
        tx.commit().await.map_err(db("recording a webhook attempt"))
    }

    async fn list_deliveries(
        &self,
        project: &ProjectId,
        webhook: &str,
        page: DeliveryPage,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.get_webhook(project, webhook).await?;
        let limit = i64::from(page.limit.clamp(1, MAX_DELIVERY_PAGE));
        let before = page.before.unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT seq, event_id, event_type, status, payload, next_attempt_at, created_at, \
             finished_at FROM webhook_deliveries WHERE webhook_id = $1 AND seq < $2 \
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(webhook)
        .bind(before)
        .bind(limit)
        .fetch_all(self.pool_ref())
        .await
        .map_err(db("listing webhook deliveries"))?;
        let mut deliveries = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let (Some(newest), Some(oldest)) = (deliveries.first(), deliveries.last()) else {
            return Ok(deliveries);
        };
        let attempts = sqlx::query(
            "SELECT a.delivery_seq, a.attempt, a.started_at, a.duration_ms, a.status_code, \
             a.error FROM webhook_attempts a JOIN webhook_deliveries d ON d.seq = a.delivery_seq \
             WHERE d.webhook_id = $1 AND a.delivery_seq BETWEEN $2 AND $3 \
             ORDER BY a.delivery_seq, a.attempt",
        )
        .bind(webhook)
        .bind(oldest.id)
        .bind(newest.id)
        .fetch_all(self.pool_ref())
        .await
        .map_err(db("listing webhook attempts"))?;
        let mut by_delivery: HashMap<i64, Vec<DeliveryAttempt>> = HashMap::new();
        for row in &attempts {
            let (seq, attempt) = attempt_from_row(row)?;
            by_delivery.entry(seq).or_default().push(attempt);
        }
        for delivery in &mut deliveries {
            delivery.attempts = by_delivery.remove(&delivery.id).unwrap_or_default();
        }
        Ok(deliveries)
    }
}
