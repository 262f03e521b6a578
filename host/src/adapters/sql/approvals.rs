//! Approvals (`approvals`) and approval policies (`approval_policies`), migration 0080.
//! A request and a decision each commit together with what they record: the stream event,
//! the audit entry and (for a request) the webhook outbox rows; a decision announces its
//! approval id (`NOTIFY rdev_approvals` on PostgreSQL) so the waiting broker hears at once.

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::audit::append_audit;
use super::columns::{Cols, Timestamp, json};
use super::db::{Arg, Notice};
use super::dialect::sql;
use super::webhooks::emit_in;
use super::{Db, SqlStore, Write, db, is_foreign_key_violation, not_found};
use crate::domain::webhook::APPROVAL_REQUESTED;
use crate::domain::{
    Approval, ApprovalStatus, CommandId, HostEvent, NewApproval, NewAuditEntry, Policy, PolicyMode,
    PolicyRule, ProjectId, Resolution, StreamEvent, WebhookEvent,
};
use crate::ports::{ApprovalStore, StoreError};

macro_rules! approval_columns {
    () => {
        "id, command_id, project_id, tool, tool_call_id, input, summary, options, status, \
         decided_by, decided_at, message, remember, created_at, expires_at"
    };
}

/// The reason stored on approvals whose command ended while they were pending.
pub const ORPHAN_REASON: &str =
    "expired: the command ended (or its host was lost) while this approval was pending";

fn approval_from_row<D: Db>(row: &D::Row) -> Result<Approval, StoreError> {
    let cols = Cols::<D>::new(row, "approvals");
    Ok(Approval {
        id: cols.get("id")?,
        command_id: cols.parse("command_id", CommandId::parse)?,
        project_id: cols.parse("project_id", ProjectId::parse)?,
        tool: cols.get("tool")?,
        tool_call_id: cols.get("tool_call_id")?,
        input: cols.json("input")?,
        summary: cols.get("summary")?,
        options: cols.json("options")?,
        status: cols.parse("status", |s| s.parse::<ApprovalStatus>())?,
        decided_by: cols.get("decided_by")?,
        decided_at: cols.time_opt("decided_at")?,
        message: cols.get("message")?,
        remember: cols.get("remember")?,
        created_at: cols.time("created_at")?,
        expires_at: cols.time("expires_at")?,
    })
}

fn policy_from_row<D: Db>(row: &D::Row) -> Result<Policy, StoreError> {
    let cols = Cols::<D>::new(row, "approval_policies");
    let timeout: i64 = cols.get("timeout_secs")?;
    Ok(Policy {
        mode: cols.parse("mode", |s| s.parse::<PolicyMode>())?,
        rules: cols.json("rules")?,
        timeout_secs: u64::try_from(timeout).map_err(|e| cols.corrupt(e))?,
    })
}

/// Inserts `new` with `status` (and, when decided, the resolution) on `w`.
async fn insert_approval<D: Db>(
    w: &mut Write<'_, D>,
    new: &NewApproval,
    resolution: Option<&Resolution>,
) -> Result<Approval, StoreError> {
    let context = "storing an approval";
    let request = &new.request;
    let status = resolution.map_or(ApprovalStatus::Pending, |r| r.status);
    let row = sqlx::query(sql!(
        D,
        concat!(
            "INSERT INTO approvals (id, command_id, project_id, tool, tool_call_id, input, \
             summary, options, status, decided_by, decided_at, message, remember, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             CASE WHEN $10 IS NULL THEN NULL ELSE {now} END, $11, $12, {now}, $13) RETURNING ",
            approval_columns!()
        )
    ))
    .arg(new.id.as_str())
    .arg(new.command_id.as_str())
    .arg(new.project_id.as_str())
    .arg(request.tool.as_str())
    .arg(request.tool_call_id.as_deref())
    .arg(json(&request.input)?)
    .arg(request.summary.as_str())
    .arg(json(&request.options)?)
    .arg(status.as_str())
    .arg(resolution.map(|r| r.decided_by.as_str()))
    .arg(resolution.and_then(|r| r.message.as_deref()))
    .arg(resolution.is_some_and(|r| r.remember))
    .arg(Timestamp(new.expires_at))
    .fetch_one(w.exec())
    .await;
    match row {
        Ok(row) => approval_from_row::<D>(&row),
        Err(error) if is_foreign_key_violation(&error) => {
            Err(not_found("command", &new.command_id))
        }
        Err(error) => Err(StoreError::backend(context, error)),
    }
}

/// The audit entry of a decision, naming the decider.
fn decided_entry(approval: &Approval, resolution: &Resolution) -> NewAuditEntry {
    NewAuditEntry {
        actor: resolution.actor.clone(),
        action: "approval.decided".into(),
        project_id: Some(approval.project_id.to_string()),
        command_id: Some(approval.command_id.to_string()),
        details: serde_json::json!({
            "approval_id": approval.id,
            "tool": approval.tool,
            "status": approval.status,
            "decided_by": resolution.decided_by,
            "remember": resolution.remember,
        }),
    }
}

impl<D: Db> SqlStore<D> {
    /// Appends `event` to the approval's command stream and `audit` in `w`'s transaction,
    /// commits, and publishes the event to this process's subscribers.
    async fn commit_with_records(
        &self,
        mut w: Write<'_, D>,
        approval: &Approval,
        event: HostEvent,
        audit: NewAuditEntry,
    ) -> Result<(), StoreError> {
        let stream = &approval.command_id;
        let publish = self.inner.signals.events.begin_append(stream);
        let stored =
            D::insert_event(w.conn(), stream, &StreamEvent::Host(event), None, false).await?;
        append_audit::<D>(w.conn(), audit, None).await?;
        w.commit().await?;
        publish.publish(&stored);
        Ok(())
    }

    async fn select_policy(
        w: &mut Write<'_, D>,
        project: &ProjectId,
    ) -> Result<Option<Policy>, StoreError> {
        let row = sqlx::query(sql!(
            D,
            "SELECT mode, rules, timeout_secs FROM approval_policies WHERE project_id = $1{for_update}"
        ))
        .arg(project.as_str())
        .fetch_optional(w.exec())
        .await
        .map_err(db("reading an approval policy"))?;
        row.as_ref().map(policy_from_row::<D>).transpose()
    }

    async fn upsert_policy(
        w: &mut Write<'_, D>,
        project: &ProjectId,
        policy: &Policy,
    ) -> Result<(), StoreError> {
        sqlx::query(sql!(
            D,
            "INSERT INTO approval_policies (project_id, mode, rules, timeout_secs, updated_at) \
             VALUES ($1, $2, $3, $4, {now}) ON CONFLICT (project_id) DO UPDATE SET \
             mode = excluded.mode, rules = excluded.rules, timeout_secs = excluded.timeout_secs, \
             updated_at = excluded.updated_at"
        ))
        .arg(project.as_str())
        .arg(policy.mode.as_str())
        .arg(json(&policy.rules)?)
        .arg(i64::try_from(policy.timeout_secs).map_err(|e| StoreError::Invalid(e.to_string()))?)
        .execute(w.exec())
        .await
        .map_err(db("writing an approval policy"))?;
        Ok(())
    }
}

/// Expires, on `conn` inside the caller's transaction, the pending approvals of `command`
/// (a rescue found its host lost). Returns how many changed.
pub(crate) async fn expire_pending_of<D: Db>(
    conn: &mut D::Connection,
    command: &CommandId,
) -> Result<u64, StoreError> {
    use super::db::RowsAffected;
    let done = sqlx::query(sql!(
        D,
        "UPDATE approvals SET status = 'expired', decided_by = 'host', decided_at = {now}, \
         message = $2 WHERE command_id = $1 AND status = 'pending'"
    ))
    .arg(command.as_str())
    .arg(ORPHAN_REASON)
    .execute(D::exec(conn))
    .await
    .map_err(db("expiring approvals of a rescued command"))?;
    Ok(done.rows_affected())
}

#[async_trait]
impl<D: Db> ApprovalStore for SqlStore<D> {
    async fn request(&self, new: NewApproval) -> Result<Approval, StoreError> {
        let mut w = self.transaction("requesting an approval").await?;
        let approval = insert_approval(&mut w, &new, None).await?;
        let data = serde_json::json!({
            "approval_id": approval.id,
            "command_id": approval.command_id,
            "project_id": approval.project_id,
            "tool": approval.tool,
            "summary": approval.summary,
            "expires_at": approval.expires_at,
        });
        let hook = WebhookEvent::new(
            uuid::Uuid::now_v7(),
            APPROVAL_REQUESTED,
            approval.project_id.clone(),
            approval.created_at,
            data,
        );
        emit_in(&mut w, &hook).await?;
        let audit = NewAuditEntry {
            actor: "host".into(),
            action: APPROVAL_REQUESTED.into(),
            project_id: Some(approval.project_id.to_string()),
            command_id: Some(approval.command_id.to_string()),
            details: serde_json::json!({
                "approval_id": approval.id,
                "tool": approval.tool,
                "tool_call_id": approval.tool_call_id,
            }),
        };
        let event = HostEvent::ApprovalRequested {
            approval: Box::new(approval.clone()),
        };
        self.commit_with_records(w, &approval, event, audit).await?;
        Ok(approval)
    }

    async fn record_decided(
        &self,
        new: NewApproval,
        resolution: Resolution,
    ) -> Result<Approval, StoreError> {
        let mut w = self.transaction("recording a policy decision").await?;
        let approval = insert_approval(&mut w, &new, Some(&resolution)).await?;
        let audit = decided_entry(&approval, &resolution);
        let event = HostEvent::ApprovalResolved {
            approval: Box::new(approval.clone()),
        };
        self.commit_with_records(w, &approval, event, audit).await?;
        Ok(approval)
    }

    async fn resolve(&self, id: &str, resolution: Resolution) -> Result<Approval, StoreError> {
        let context = "deciding an approval";
        let mut w = self.transaction(context).await?;
        let row = sqlx::query(sql!(
            D,
            concat!(
                "UPDATE approvals SET status = $2, decided_by = $3, decided_at = {now}, \
                 message = $4, remember = $5 WHERE id = $1 AND status = 'pending' RETURNING ",
                approval_columns!()
            )
        ))
        .arg(id)
        .arg(resolution.status.as_str())
        .arg(resolution.decided_by.as_str())
        .arg(resolution.message.as_deref())
        .arg(resolution.remember)
        .fetch_optional(w.exec())
        .await
        .map_err(db(context))?;
        let Some(row) = row else {
            drop(w);
            let existing = self.get(id).await?;
            return Err(StoreError::Conflict(format!(
                "approval {id} is already {}",
                existing.status.as_str()
            )));
        };
        let approval = approval_from_row::<D>(&row)?;
        w.announce(Notice::Decided(approval.id.clone())).await?;
        let audit = decided_entry(&approval, &resolution);
        let event = HostEvent::ApprovalResolved {
            approval: Box::new(approval.clone()),
        };
        self.commit_with_records(w, &approval, event, audit).await?;
        Ok(approval)
    }

    async fn get(&self, id: &str) -> Result<Approval, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            approval_columns!(),
            " FROM approvals WHERE id = $1"
        ))
        .arg(id);
        self.find(
            query,
            approval_from_row::<D>,
            "reading an approval",
            ("approval", id),
        )
        .await
    }

    async fn list(
        &self,
        project: &ProjectId,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            approval_columns!(),
            " FROM approvals WHERE project_id = $1 AND ($2 IS NULL OR status = $2) \
         ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .arg(project.as_str())
        .arg(status.map(ApprovalStatus::as_str))
        .arg(i64::from(limit.min(1000)));
        self.find_all(query, approval_from_row::<D>, "listing approvals")
            .await
    }

    async fn expire_orphans(&self) -> Result<u64, StoreError> {
        use super::db::RowsAffected;
        let context = "expiring orphaned approvals";
        let mut w = self.write(context).await?;
        let done = sqlx::query(sql!(
            D,
            "UPDATE approvals SET status = 'expired', decided_by = 'host', decided_at = {now}, \
             message = $1 WHERE status = 'pending' AND command_id IN \
             (SELECT id FROM commands WHERE status <> 'running')"
        ))
        .arg(ORPHAN_REASON)
        .execute(w.exec())
        .await
        .map_err(db(context))?;
        w.commit().await?;
        Ok(done.rows_affected())
    }

    async fn policy(&self, project: &ProjectId) -> Result<Option<Policy>, StoreError> {
        let query = sqlx::query(
            "SELECT mode, rules, timeout_secs FROM approval_policies WHERE project_id = $1",
        )
        .arg(project.as_str());
        self.find_optional(query, policy_from_row::<D>, "reading an approval policy")
            .await
    }

    async fn put_policy(&self, project: &ProjectId, policy: &Policy) -> Result<Policy, StoreError> {
        let mut w = self.write("writing an approval policy").await?;
        Self::upsert_policy(&mut w, project, policy).await?;
        w.commit().await?;
        Ok(policy.clone())
    }

    async fn add_rule(&self, project: &ProjectId, rule: PolicyRule) -> Result<Policy, StoreError> {
        let mut w = self.transaction("extending an approval policy").await?;
        // The row exists before it is locked, so two first rules cannot both start from
        // the default and lose one.
        if Self::select_policy(&mut w, project).await?.is_none() {
            let default = Policy::default();
            sqlx::query(sql!(
                D,
                "INSERT INTO approval_policies (project_id, mode, rules, timeout_secs, updated_at) \
                 VALUES ($1, $2, $3, $4, {now}) ON CONFLICT (project_id) DO NOTHING"
            ))
            .arg(project.as_str())
            .arg(default.mode.as_str())
            .arg(json(&default.rules)?)
            .arg(i64::try_from(default.timeout_secs).unwrap_or(i64::MAX))
            .execute(w.exec())
            .await
            .map_err(db("extending an approval policy"))?;
        }
        let mut policy = Self::select_policy(&mut w, project)
            .await?
            .unwrap_or_default();
        if !policy.rules.contains(&rule) {
            policy.rules.push(rule);
            Self::upsert_policy(&mut w, project, &policy).await?;
        }
        w.commit().await?;
        Ok(policy)
    }

    fn decision_signal(&self) -> broadcast::Receiver<String> {
        self.inner.signals.decisions.subscribe()
    }
}
