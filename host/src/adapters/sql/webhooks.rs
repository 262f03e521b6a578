//! Webhook subscriptions, their outbox and delivery history (`webhooks`,
//! `webhook_deliveries`, `webhook_attempts`, migrations 0030 and 0050). Outbox rows are
//! written in the transaction that records what they announce (a command's status, an audit
//! entry), and that commit wakes the dispatchers (`Notice::Deliveries`). Claiming due rows
//! is each database's own (`Db::claim_deliveries`). Signing secrets are sealed with the
//! master key, bound to the webhook's id.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::audit::append_audit;
use super::columns::{Cols, Timestamp, json};
use super::db::{Arg, Notice, RowsAffected};
use super::dialect::sql;
use super::outbox::reseal_secret;
use super::{Db, SqlStore, Write, db};
use crate::adapters::master_key::nonce;
use crate::domain::{
    CommandRecord, Delivery, DeliveryAttempt, DeliveryStatus, DueDelivery, MasterKey,
    NewAuditEntry, NewWebhook, NextStep, ProjectId, SealedWebhookSecret, Webhook, WebhookEvent,
    WebhookSecret, webhook::GONE_REASON,
};
use crate::ports::{DeliveryPage, MAX_DELIVERY_PAGE, StoreError, WebhookStore};

macro_rules! webhook_columns {
    () => {
        "id, project_id, url, event_types, description, enabled, disabled_reason, created_at, \
         updated_at"
    };
}

fn webhook_from_row<D: Db>(row: &D::Row) -> Result<Webhook, StoreError> {
    let cols = Cols::<D>::new(row, "webhooks");
    Ok(Webhook {
        id: cols.get("id")?,
        project_id: cols.parse("project_id", ProjectId::parse)?,
        url: cols.get("url")?,
        event_types: cols.json("event_types")?,
        description: cols.get("description")?,
        enabled: cols.get("enabled")?,
        disabled_reason: cols.get("disabled_reason")?,
        created_at: cols.time("created_at")?,
        updated_at: cols.time("updated_at")?,
    })
}

/// Fans `event` out to every enabled, matching subscription of its project, in `w`'s
/// transaction; when any row was written, the commit wakes the dispatchers. The filter
/// rule is `domain::webhook::filter_matches`. Returns how many deliveries were queued.
pub(crate) async fn emit_in<D: Db>(
    w: &mut Write<'_, D>,
    event: &WebhookEvent,
) -> Result<u64, StoreError> {
    let done = sqlx::query(sql!(
        D,
        "INSERT INTO webhook_deliveries (event_id, webhook_id, project_id, event_type, payload, \
         status, next_attempt_at, created_at) \
         SELECT $1, w.id, w.project_id, $3, $4, 'pending', {now}, {now} FROM webhooks w \
         WHERE w.project_id = $2 AND w.enabled AND {event_type_matches}"
    ))
    .arg(event.id.as_str())
    .arg(event.project_id.as_str())
    .arg(event.event_type.as_str())
    .arg(event.body())
    .execute(w.exec())
    .await
    .map_err(db("writing webhook events"))?;
    let queued = done.rows_affected();
    if queued > 0 {
        w.announce(Notice::Deliveries).await?;
    }
    Ok(queued)
}

/// The terminal-status event of `command`, written in the transaction that set the status.
/// Nothing for a non-terminal status.
pub(crate) async fn emit_for_command<D: Db>(
    w: &mut Write<'_, D>,
    command: &CommandRecord,
) -> Result<(), StoreError> {
    if let Some(event) = WebhookEvent::for_command(uuid::Uuid::now_v7(), command) {
        emit_in(w, &event).await?;
    }
    Ok(())
}

/// Seals webhook signing secrets with `new` on `conn`: every plaintext one migration 0050
/// left in `legacy_secret` (at start-up: SQL cannot encrypt with the operator's key; finding
/// none the second time), and, given `old` (in `rotate_key`'s transaction), every sealed one
/// again. The rule per row is `outbox::reseal_secret`. Returns how many rows changed.
pub(crate) async fn seal_secrets<D: Db>(
    conn: &mut D::Connection,
    old: Option<&MasterKey>,
    new: &MasterKey,
) -> Result<u64, StoreError> {
    let context = "sealing webhook secrets";
    let rows = sqlx::query(sql!(
        D,
        "SELECT id, legacy_secret, sealed_secret FROM webhooks \
         WHERE legacy_secret IS NOT NULL OR $1 ORDER BY id{for_update}"
    ))
    .arg(old.is_some())
    .fetch_all(D::exec(conn))
    .await
    .map_err(db(context))?;
    let mut changed = 0;
    for row in &rows {
        let cols = Cols::<D>::new(row, "webhooks");
        let id: String = cols.get("id")?;
        let (legacy, sealed) = (cols.get("legacy_secret")?, cols.get("sealed_secret")?);
        let Some(resealed) = reseal_secret(&id, legacy, sealed, old, new)? else {
            continue;
        };
        sqlx::query(
            "UPDATE webhooks SET sealed_secret = $2, key_fingerprint = $3, legacy_secret = NULL \
             WHERE id = $1",
        )
        .arg(id.as_str())
        .arg(resealed)
        .arg(new.fingerprint().as_str())
        .execute(D::exec(conn))
        .await
        .map_err(db(context))?;
        changed += 1;
    }
    Ok(changed)
}

fn attempt_from_row<D: Db>(row: &D::Row) -> Result<(i64, DeliveryAttempt), StoreError> {
    let cols = Cols::<D>::new(row, "webhook_attempts");
    let attempt: i32 = cols.get("attempt")?;
    let duration: i64 = cols.get("duration_ms")?;
    let status: Option<i32> = cols.get("status_code")?;
    Ok((
        cols.get("delivery_seq")?,
        DeliveryAttempt {
            attempt: u32::try_from(attempt).unwrap_or(0),
            started_at: cols.time("started_at")?,
            duration_ms: u64::try_from(duration).unwrap_or(0),
            status_code: status.and_then(|s| u16::try_from(s).ok()),
            error: cols.get("error")?,
        },
    ))
}

fn delivery_from_row<D: Db>(row: &D::Row) -> Result<Delivery, StoreError> {
    let cols = Cols::<D>::new(row, "webhook_deliveries");
    let status: DeliveryStatus = cols.parse("status", |s| s.parse())?;
    let payload: String = cols.get("payload")?;
    Ok(Delivery {
        id: cols.get("seq")?,
        event_id: cols.get("event_id")?,
        event_type: cols.get("event_type")?,
        status,
        payload: serde_json::from_str(&payload).map_err(|e| cols.corrupt(e))?,
        next_attempt_at: if status == DeliveryStatus::Pending {
            cols.time_opt("next_attempt_at")?
        } else {
            None
        },
        created_at: cols.time("created_at")?,
        finished_at: cols.time_opt("finished_at")?,
        attempts: Vec::new(),
    })
}

/// Disables webhook `id` after a 410 and cancels its pending deliveries, in `w`.
async fn disable<D: Db>(w: &mut Write<'_, D>, id: &str) -> Result<(), StoreError> {
    sqlx::query(sql!(
        D,
        "UPDATE webhooks SET enabled = FALSE, disabled_reason = $2, updated_at = {now} \
         WHERE id = $1"
    ))
    .arg(id)
    .arg(GONE_REASON)
    .execute(w.exec())
    .await
    .map_err(db("disabling a webhook"))?;
    sqlx::query(sql!(
        D,
        "UPDATE webhook_deliveries SET status = 'cancelled', finished_at = {now}, \
         lease_owner = NULL, lease_expires_at = NULL \
         WHERE webhook_id = $1 AND status = 'pending'"
    ))
    .arg(id)
    .execute(w.exec())
    .await
    .map_err(db("disabling a webhook"))?;
    Ok(())
}

/// Every attempt of the deliveries `oldest..=newest` of `webhook`, by delivery.
async fn attempts_of<D: Db>(
    store: &SqlStore<D>,
    webhook: &str,
    oldest: i64,
    newest: i64,
) -> Result<HashMap<i64, Vec<DeliveryAttempt>>, StoreError> {
    let rows = sqlx::query(
        "SELECT a.delivery_seq, a.attempt, a.started_at, a.duration_ms, a.status_code, \
         a.error FROM webhook_attempts a JOIN webhook_deliveries d ON d.seq = a.delivery_seq \
         WHERE d.webhook_id = $1 AND a.delivery_seq BETWEEN $2 AND $3 \
         ORDER BY a.delivery_seq, a.attempt",
    )
    .arg(webhook)
    .arg(oldest)
    .arg(newest)
    .fetch_all(store.exec())
    .await
    .map_err(db("listing webhook attempts"))?;
    let mut by_delivery: HashMap<i64, Vec<DeliveryAttempt>> = HashMap::new();
    for row in &rows {
        let (seq, attempt) = attempt_from_row::<D>(row)?;
        by_delivery.entry(seq).or_default().push(attempt);
    }
    Ok(by_delivery)
}

#[async_trait]
impl<D: Db> WebhookStore for SqlStore<D> {
    async fn create_webhook(&self, webhook: NewWebhook) -> Result<Webhook, StoreError> {
        // The key is read under SQLite's write lock, so a rotation cannot slip in between.
        let mut w = self.write("creating a webhook").await?;
        let key = self.inner.key.load();
        let sealed = SealedWebhookSecret::seal(&key, &webhook.id, webhook.secret.expose(), nonce());
        let row = sqlx::query(sql!(
            D,
            concat!(
                "INSERT INTO webhooks (id, project_id, url, event_types, description, \
                 sealed_secret, key_fingerprint, enabled, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, {now}, {now}) \
                 ON CONFLICT (id) DO NOTHING RETURNING ",
                webhook_columns!()
            )
        ))
        .arg(&webhook.id)
        .arg(webhook.project_id.as_str())
        .arg(&webhook.url)
        .arg(json(&webhook.event_types)?)
        .arg(&webhook.description)
        .arg(sealed.0)
        .arg(key.fingerprint().as_str())
        .fetch_optional(w.exec())
        .await
        .map_err(db("creating a webhook"))?;
        w.commit().await?;
        match row {
            Some(row) => webhook_from_row::<D>(&row),
            None => Err(StoreError::Conflict(format!(
                "webhook {} already exists",
                webhook.id
            ))),
        }
    }

    async fn list_webhooks(&self, project: &ProjectId) -> Result<Vec<Webhook>, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            webhook_columns!(),
            " FROM webhooks WHERE project_id = $1 ORDER BY created_at, id"
        ))
        .arg(project.as_str());
        self.find_all(query, webhook_from_row::<D>, "listing webhooks")
            .await
    }

    async fn get_webhook(&self, project: &ProjectId, id: &str) -> Result<Webhook, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            webhook_columns!(),
            " FROM webhooks WHERE project_id = $1 AND id = $2"
        ))
        .arg(project.as_str())
        .arg(id);
        self.find(
            query,
            webhook_from_row::<D>,
            "reading a webhook",
            ("webhook", id),
        )
        .await
    }

    async fn delete_webhook(&self, project: &ProjectId, id: &str) -> Result<(), StoreError> {
        let query = sqlx::query("DELETE FROM webhooks WHERE project_id = $1 AND id = $2")
            .arg(project.as_str())
            .arg(id);
        self.change_one(query, "deleting a webhook", ("webhook", id))
            .await
    }

    async fn emit(
        &self,
        event: &WebhookEvent,
        audit: Option<NewAuditEntry>,
    ) -> Result<u64, StoreError> {
        let mut w = self.transaction("writing webhook events").await?;
        if let Some(entry) = audit {
            append_audit::<D>(w.conn(), entry, None).await?;
        }
        let queued = emit_in(&mut w, event).await?;
        w.commit().await?;
        Ok(queued)
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        D::claim_deliveries(self, owner, limit, lease).await
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
        let context = "recording a webhook attempt";
        let (status, next_at) = match next {
            NextStep::Delivered => (DeliveryStatus::Delivered, None),
            NextStep::RetryAt(at) => (DeliveryStatus::Pending, Some(Timestamp(at))),
            NextStep::GiveUp | NextStep::Disable => (DeliveryStatus::Failed, None),
        };
        let mut w = self.transaction(context).await?;
        let done = sqlx::query(sql!(
            D,
            "UPDATE webhook_deliveries SET status = $4, next_attempt_at = $5, \
             lease_owner = NULL, lease_expires_at = NULL, \
             finished_at = CASE WHEN $4 = 'pending' THEN NULL ELSE {now} END \
             WHERE seq = $1 AND attempts = $2 AND lease_owner = $3 AND status = 'pending'"
        ))
        .arg(delivery.id)
        .arg(i32::try_from(delivery.attempt).unwrap_or(i32::MAX))
        .arg(delivery.owner.as_str())
        .arg(status.as_str())
        .arg(next_at)
        .execute(w.exec())
        .await
        .map_err(db(context))?;
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
        .arg(delivery.id)
        .arg(i32::try_from(attempt.attempt).unwrap_or(i32::MAX))
        .arg(Timestamp(attempt.started_at))
        .arg(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
        .arg(attempt.status_code.map(i32::from))
        .arg(&attempt.error)
        .execute(w.exec())
        .await
        .map_err(db(context))?;
        if next == NextStep::Disable {
            disable(&mut w, &delivery.webhook_id).await?;
        }
        w.commit().await
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
        .arg(webhook)
        .arg(before)
        .arg(limit)
        .fetch_all(self.exec())
        .await
        .map_err(db("listing webhook deliveries"))?;
        let mut deliveries = rows
            .iter()
            .map(delivery_from_row::<D>)
            .collect::<Result<Vec<_>, _>>()?;
        let (Some(newest), Some(oldest)) = (deliveries.first(), deliveries.last()) else {
            return Ok(deliveries);
        };
        let mut attempts = attempts_of(self, webhook, oldest.id, newest.id).await?;
        for delivery in &mut deliveries {
            delivery.attempts = attempts.remove(&delivery.id).unwrap_or_default();
        }
        Ok(deliveries)
    }
}
