//! The `commands` table (migrations 0001, 0090 `provenance`): its row mapping and the statements the queue and
//! each database's claims share.

use super::audit::append_audit;
use super::columns::{Cols, json};
use super::db::Arg;
use super::dialect::sql;
use super::{Db, db, is_foreign_key_violation, not_found};
use crate::domain::{
    Claim, CommandId, CommandRecord, CommandRecords, CommandStatus, HOST_LOST, Lease, NewCommand,
    ProjectId, ProviderName,
};
use crate::ports::{StoreError, StoredEvent};

/// The columns of a `CommandRecord` and its lease, for `SELECT` and `RETURNING`.
macro_rules! command_columns {
    () => {
        "id, project_id, provider, request, status, idempotency_key, submitted_by, \
         cancel_requested, attempts, result, error, created_at, started_at, finished_at, \
         lease_owner, lease_token, lease_expires_at, provenance"
    };
}
pub(crate) use command_columns;

pub(crate) fn command_from_row<D: Db>(row: &D::Row) -> Result<CommandRecord, StoreError> {
    let cols = Cols::<D>::new(row, "commands");
    let attempts: i32 = cols.get("attempts")?;
    Ok(CommandRecord {
        id: cols.parse("id", CommandId::parse)?,
        project_id: cols.parse("project_id", ProjectId::parse)?,
        provider: cols.parse("provider", ProviderName::parse)?,
        request: cols.json("request")?,
        status: cols.parse("status", |s| s.parse::<CommandStatus>())?,
        idempotency_key: cols.get("idempotency_key")?,
        submitted_by: cols.get("submitted_by")?,
        cancel_requested: cols.get("cancel_requested")?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        result: cols.json_opt("result")?,
        error: cols.get("error")?,
        created_at: cols.time("created_at")?,
        started_at: cols.time_opt("started_at")?,
        finished_at: cols.time_opt("finished_at")?,
        provenance: cols.json_opt("provenance")?,
    })
}

/// A command just claimed and its lease, from a row of [`command_columns!`].
pub(crate) fn claim_from_row<D: Db>(row: &D::Row) -> Result<Claim, StoreError> {
    let command = command_from_row::<D>(row)?;
    let cols = Cols::<D>::new(row, "commands");
    let owner: Option<String> = cols.get("lease_owner")?;
    let lease = Lease {
        command_id: command.id.clone(),
        owner: owner.unwrap_or_default(),
        token: cols.get("lease_token")?,
        expires_at: cols.time_opt("lease_expires_at")?.unwrap_or_default(),
    };
    Ok(Claim { command, lease })
}

/// Inserts a pending command on `conn`; `None` when its idempotency key is taken in its
/// project, `NotFound` for an unknown project.
pub(crate) async fn insert_command<D: Db>(
    conn: &mut D::Connection,
    id: &CommandId,
    command: &NewCommand,
) -> Result<Option<CommandRecord>, StoreError> {
    let inserted = sqlx::query(sql!(
        D,
        concat!(
            "INSERT INTO commands (id, project_id, provider, request, status, idempotency_key, \
             submitted_by, created_at) VALUES ($1, $2, $3, $4, 'pending', $5, $6, {now}) \
             ON CONFLICT (project_id, idempotency_key) DO NOTHING RETURNING ",
            command_columns!()
        )
    ))
    .arg(id.as_str())
    .arg(command.project_id.as_str())
    .arg(command.provider.as_str())
    .arg(json(&command.request)?)
    .arg(&command.idempotency_key)
    .arg(&command.submitted_by)
    .fetch_optional(D::exec(conn))
    .await;
    match inserted {
        Err(error) if is_foreign_key_violation(&error) => {
            Err(not_found("project", &command.project_id))
        }
        other => other
            .map_err(db("enqueueing a command"))?
            .as_ref()
            .map(command_from_row::<D>)
            .transpose(),
    }
}

/// Writes what a command change records (`CommandRecords`) on `conn`, inside the caller's
/// transaction: the stream event first, then the audit entry, whose lock is thus held for
/// the shortest time. Returns the stored event for the fan-out, to publish after the commit.
pub(crate) async fn write_records<D: Db>(
    conn: &mut D::Connection,
    stream: &CommandId,
    records: CommandRecords,
) -> Result<Option<StoredEvent>, StoreError> {
    let event = match &records.event {
        Some(event) => Some(D::insert_event(&mut *conn, stream, event, None, false).await?),
        None => None,
    };
    append_audit::<D>(conn, records.audit, None).await?;
    Ok(event)
}

/// The rescue rule, checked against the state machine: a cancel wins; a command whose
/// process never started (or whose provider is idempotent) is queued again; otherwise it
/// failed because its host was lost.
pub(crate) fn rescue_decision(
    cancel_requested: bool,
    started: bool,
    idempotent: bool,
) -> Result<(CommandStatus, &'static str), StoreError> {
    let decision = if cancel_requested {
        (CommandStatus::Cancelled, "cancelled; its host was lost")
    } else if !started || idempotent {
        CommandStatus::Running.check_requeue()?;
        return Ok((CommandStatus::Pending, "lease expired; queued again"));
    } else {
        (CommandStatus::Failed, HOST_LOST)
    };
    CommandStatus::Running.check_transition(decision.0)?;
    Ok(decision)
}

/// A lease write changed `rows` rows: one, or the lease is lost.
pub(crate) fn fenced(rows: u64, lease: &Lease) -> Result<(), StoreError> {
    if rows == 1 { Ok(()) } else { Err(lost(lease)) }
}

pub(crate) fn lost(lease: &Lease) -> StoreError {
    StoreError::LeaseLost {
        command: lease.command_id.to_string(),
        token: lease.token,
    }
}
