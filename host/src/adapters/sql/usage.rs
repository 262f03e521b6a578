//! Usage accounting and budgets (`command_usage`, `budgets`, migration 0120). A command's
//! usage row is written by [`record_usage`] inside the transaction of its finish, keyed by
//! the command, so a finish retried after a lost acknowledgement counts nothing twice.

use async_trait::async_trait;

use super::audit::append_audit;
use super::columns::Cols;
use super::db::{Arg, RowsAffected};
use super::dialect::sql;
use super::webhooks::emit_in;
use super::{Db, SqlStore, Write, db};
use crate::domain::usage::{day_key, parse_day_key};
use crate::domain::{
    Budget, CommandRecord, CommandUsage, DayRange, NewAuditEntry, ProjectId, UsageBucket,
    WebhookEvent,
};
use crate::ports::{StoreError, UsageStore};

/// Tokens as stored: a count beyond `i64::MAX` is stored as that.
fn count(tokens: u64) -> i64 {
    i64::try_from(tokens).unwrap_or(i64::MAX)
}

/// Writes what `record`'s command consumed, filed under the day it finished, on `conn`
/// inside the finish's transaction. A row already there (a retried finish) stays as it is.
pub(crate) async fn record_usage<D: Db>(
    conn: &mut D::Connection,
    record: &CommandRecord,
    usage: &CommandUsage,
) -> Result<(), StoreError> {
    let finished = record.finished_at.unwrap_or(record.created_at);
    let t = &usage.tokens;
    sqlx::query(
        "INSERT INTO command_usage (command_id, project_id, provider, day, input_tokens, \
         output_tokens, cache_read_tokens, cache_write_tokens, cost_usd) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (command_id) DO NOTHING",
    )
    .arg(record.id.as_str())
    .arg(record.project_id.as_str())
    .arg(record.provider.as_str())
    .arg(day_key(finished.date_naive()))
    .arg(count(t.input_tokens))
    .arg(count(t.output_tokens))
    .arg(count(t.cache_read_tokens))
    .arg(count(t.cache_write_tokens))
    .arg(usage.cost_usd)
    .execute(D::exec(conn))
    .await
    .map_err(db("recording a command's usage"))?;
    Ok(())
}

fn bucket_from_row<D: Db>(row: &D::Row) -> Result<UsageBucket, StoreError> {
    let cols = Cols::<D>::new(row, "command_usage");
    let tokens = |column: &str| -> Result<u64, StoreError> {
        let n: i64 = cols.get(column)?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    Ok(UsageBucket {
        day: cols.parse("day", |d| {
            parse_day_key(&d).ok_or_else(|| format!("day {d:?} is not YYYY-MM-DD"))
        })?,
        provider: cols.get("provider")?,
        commands: tokens("commands")?,
        input_tokens: tokens("input_tokens")?,
        output_tokens: tokens("output_tokens")?,
        cache_read_tokens: tokens("cache_read_tokens")?,
        cache_write_tokens: tokens("cache_write_tokens")?,
        cost_usd: cols.get("cost_usd")?,
    })
}

fn budget_from_row<D: Db>(row: &D::Row) -> Result<Budget, StoreError> {
    let cols = Cols::<D>::new(row, "budgets");
    Ok(Budget {
        project_id: cols.parse("project_id", ProjectId::parse)?,
        monthly_limit_usd: cols.get("monthly_limit_usd")?,
        updated_at: cols.time("updated_at")?,
    })
}

#[async_trait]
impl<D: Db> UsageStore for SqlStore<D> {
    async fn usage(
        &self,
        project: &ProjectId,
        range: DayRange,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        let query = sqlx::query(
            "SELECT day, provider, CAST(COUNT(*) AS BIGINT) AS commands, \
         CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
         CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
         CAST(SUM(cache_read_tokens) AS BIGINT) AS cache_read_tokens, \
         CAST(SUM(cache_write_tokens) AS BIGINT) AS cache_write_tokens, \
         SUM(cost_usd) AS cost_usd \
         FROM command_usage WHERE project_id = $1 AND day >= $2 AND day <= $3 \
         GROUP BY day, provider ORDER BY day, provider",
        )
        .arg(project.as_str())
        .arg(day_key(range.from))
        .arg(day_key(range.to));
        self.find_all(query, bucket_from_row::<D>, "reading usage")
            .await
    }

    async fn cost(&self, project: &ProjectId, range: DayRange) -> Result<f64, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(cost_usd), 0.0) AS cost_usd FROM command_usage \
             WHERE project_id = $1 AND day >= $2 AND day <= $3",
        )
        .arg(project.as_str())
        .arg(day_key(range.from))
        .arg(day_key(range.to))
        .fetch_one(self.exec())
        .await
        .map_err(db("reading a project's cost"))?;
        Cols::<D>::new(&row, "command_usage").get("cost_usd")
    }

    async fn budget(&self, project: &ProjectId) -> Result<Option<Budget>, StoreError> {
        let query = sqlx::query(
            "SELECT project_id, monthly_limit_usd, updated_at FROM budgets WHERE project_id = $1",
        )
        .arg(project.as_str());
        self.find_optional(query, budget_from_row::<D>, "reading a budget")
            .await
    }

    async fn set_budget(&self, project: &ProjectId, limit_usd: f64) -> Result<Budget, StoreError> {
        let query = sqlx::query(sql!(
            D,
            "INSERT INTO budgets (project_id, monthly_limit_usd, exceeded_month, updated_at) \
             VALUES ($1, $2, NULL, {now}) ON CONFLICT (project_id) DO UPDATE SET \
             monthly_limit_usd = excluded.monthly_limit_usd, exceeded_month = NULL, \
             updated_at = excluded.updated_at \
             RETURNING project_id, monthly_limit_usd, updated_at"
        ))
        .arg(project.as_str())
        .arg(limit_usd);
        self.put_for_project(query, budget_from_row::<D>, "storing a budget", project)
            .await
    }

    async fn clear_budget(&self, project: &ProjectId) -> Result<bool, StoreError> {
        let query = sqlx::query("DELETE FROM budgets WHERE project_id = $1").arg(project.as_str());
        self.remove(query, "removing a budget").await
    }

    async fn note_exceeded(
        &self,
        project: &ProjectId,
        month: &str,
        event: &WebhookEvent,
        audit: NewAuditEntry,
    ) -> Result<bool, StoreError> {
        let context = "recording an exceeded budget";
        let mut w: Write<'_, D> = self.transaction(context).await?;
        let done = sqlx::query(
            "UPDATE budgets SET exceeded_month = $2 WHERE project_id = $1 \
             AND (exceeded_month IS NULL OR exceeded_month <> $2)",
        )
        .arg(project.as_str())
        .arg(month)
        .execute(w.exec())
        .await
        .map_err(db(context))?;
        let first = done.rows_affected() == 1;
        if first {
            append_audit::<D>(w.conn(), audit, None).await?;
            emit_in(&mut w, event).await?;
        }
        w.commit().await?;
        Ok(first)
    }
}
