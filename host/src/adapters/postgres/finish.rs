//! Finishes written in batches. Each commit costs a WAL flush (and, with the work NOTIFY,
//! holds PostgreSQL's global notify lock), so finishes that arrive while one batch is being
//! written go together in the next: alone when the queue is quiet, hundreds per statement
//! when it is busy. Each command's usage row is written in the same transaction.

use std::sync::Arc;

use sqlx::Postgres;
use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::PgStore;
use crate::adapters::sql::commands::{command_columns, command_from_row, lost};
use crate::adapters::sql::usage::record_usage;
use crate::adapters::sql::webhooks::emit_for_command;
use crate::adapters::sql::{Signals, Write, db};
use crate::domain::{CommandRecord, Lease, Outcome};
use crate::ports::StoreError;

/// Most finishes written in one statement.
const FINISH_BATCH: usize = 256;

/// One `finish` waiting for the batch writer.
pub(super) struct FinishJob {
    lease: Lease,
    outcome: Outcome,
    reply: oneshot::Sender<Result<CommandRecord, StoreError>>,
}

/// Hands the finish to the batch writer and waits for its answer.
pub(super) async fn finish(
    store: &PgStore,
    lease: &Lease,
    outcome: Outcome,
) -> Result<CommandRecord, StoreError> {
    let (reply, answer) = oneshot::channel();
    let job = FinishJob {
        lease: lease.clone(),
        outcome,
        reply,
    };
    let stopped = || StoreError::backend("finishing a command", "the batch writer stopped");
    store
        .inner
        .state
        .finishes
        .send(job)
        .map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())?
}

/// Writes finishes in batches until every store clone is dropped: takes what has queued up
/// (at most `FINISH_BATCH`, one per command so each row is fenced once), writes it in one
/// statement and answers each caller. A command named twice waits for the next batch.
pub(super) async fn write_finishes(
    pool: PgPool,
    signals: Arc<Signals>,
    mut jobs: mpsc::UnboundedReceiver<FinishJob>,
) {
    let mut waiting: Vec<FinishJob> = Vec::new();
    loop {
        if waiting.is_empty() {
            match jobs.recv().await {
                Some(job) => waiting.push(job),
                None => return,
            }
        }
        while waiting.len() < FINISH_BATCH * 2
            && let Ok(job) = jobs.try_recv()
        {
            waiting.push(job);
        }
        let mut batch = Vec::with_capacity(waiting.len().min(FINISH_BATCH));
        let mut later = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for job in waiting.drain(..) {
            if batch.len() < FINISH_BATCH && ids.insert(job.lease.command_id.clone()) {
                batch.push(job);
            } else {
                later.push(job);
            }
        }
        waiting = later;
        let result = finish_batch(&pool, &signals, &batch).await;
        for job in batch {
            let answer = match &result {
                Ok(rows) => rows
                    .iter()
                    .find(|r| r.id == job.lease.command_id)
                    .cloned()
                    .ok_or_else(|| lost(&job.lease)),
                Err(error) => Err(error.clone()),
            };
            let _ = job.reply.send(answer);
        }
    }
}

/// The batch's rows in one UPDATE; each row is written only under its own lease token, and
/// a command missing from the result lost its lease.
async fn finish_batch(
    pool: &PgPool,
    signals: &Arc<Signals>,
    batch: &[FinishJob],
) -> Result<Vec<CommandRecord>, StoreError> {
    let context = "finishing commands";
    let mut ids = Vec::with_capacity(batch.len());
    let mut tokens = Vec::with_capacity(batch.len());
    let mut owners = Vec::with_capacity(batch.len());
    let mut statuses = Vec::with_capacity(batch.len());
    let mut results = Vec::with_capacity(batch.len());
    let mut errors = Vec::with_capacity(batch.len());
    for job in batch {
        ids.push(job.lease.command_id.as_str().to_owned());
        tokens.push(job.lease.token);
        owners.push(job.lease.owner.as_str());
        statuses.push(job.outcome.status.as_str());
        results.push(
            job.outcome
                .result
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Invalid(e.to_string()))?,
        );
        errors.push(job.outcome.error.clone());
    }
    // The terminal status and its webhook events commit together: a crash cannot lose one.
    let mut w = Write::<Postgres>::begin(pool, signals, None, true, context).await?;
    let rows = sqlx::query(concat!(
        "UPDATE commands SET status = f_status, result = f_result::jsonb, error = f_error, \
         finished_at = now(), lease_owner = NULL, lease_expires_at = NULL \
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) \
           AS f(f_id, f_token, f_status, f_result, f_error, f_owner) \
         WHERE id = f_id AND lease_token = f_token AND lease_owner = f_owner \
         AND status = 'running' RETURNING ",
        command_columns!()
    ))
    .bind(ids)
    .bind(tokens)
    .bind(statuses)
    .bind(results)
    .bind(errors)
    .bind(owners)
    .fetch_all(w.exec())
    .await
    .map_err(db(context))?;
    let records = rows
        .iter()
        .map(command_from_row::<Postgres>)
        .collect::<Result<Vec<_>, _>>()?;
    for record in &records {
        emit_for_command(&mut w, record).await?;
        if let Some(job) = batch.iter().find(|j| j.lease.command_id == record.id) {
            record_usage::<Postgres>(w.conn(), record, &job.outcome.usage).await?;
        }
    }
    w.commit().await?;
    Ok(records)
}
