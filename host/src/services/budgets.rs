//! Budgets enforced: whether a project's month-to-date cost has reached its monthly limit
//! (asked by the API before it queues a command and by the worker whenever a running command
//! reports a cost), and the `budget.exceeded` announcement, sent once per project and month.

use chrono::{DateTime, Utc};

use crate::domain::usage::{exceeded_reason, exhausted};
use crate::domain::webhook::BUDGET_EXCEEDED;
use crate::domain::{CommandId, DayRange, NewAuditEntry, ProjectId, WebhookEvent};
use crate::ports::{StoreError, UsageStore};

/// A project whose budget is used up: its limit and what it has spent this month.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    pub project_id: ProjectId,
    pub monthly_limit_usd: f64,
    pub spent_usd: f64,
    /// The month (UTC) the spending is counted in.
    pub month: DayRange,
}

impl Exceeded {
    /// The words a refused or stopped command carries.
    pub fn reason(&self) -> String {
        exceeded_reason(&self.project_id, self.monthly_limit_usd, self.spent_usd)
    }
}

/// The project's budget, if it has one and `running_usd` (the cost a running command has
/// reported so far, not yet stored) plus the month's stored cost at `now` reaches it.
pub async fn check(
    store: &dyn UsageStore,
    project: &ProjectId,
    running_usd: f64,
    now: DateTime<Utc>,
) -> Result<Option<Exceeded>, StoreError> {
    let Some(budget) = store.budget(project).await? else {
        return Ok(None);
    };
    let month = DayRange::month_of(now);
    let spent = store.cost(project, month).await? + running_usd;
    Ok(
        exhausted(budget.monthly_limit_usd, spent).then(|| Exceeded {
            project_id: project.clone(),
            monthly_limit_usd: budget.monthly_limit_usd,
            spent_usd: spent,
            month,
        }),
    )
}

/// Announces `exceeded` (webhook `budget.exceeded` and an audit entry by `actor`) unless it
/// was already announced for its month; `command` is the command that crossed the limit or
/// was refused. True when this call announced it.
pub async fn announce(
    store: &dyn UsageStore,
    exceeded: &Exceeded,
    actor: &str,
    command: Option<&CommandId>,
) -> Result<bool, StoreError> {
    let month = exceeded.month.month_key();
    let data = serde_json::json!({
        "project_id": exceeded.project_id,
        "month": month,
        "monthly_limit_usd": exceeded.monthly_limit_usd,
        "spent_usd": exceeded.spent_usd,
        "command_id": command,
    });
    let event = WebhookEvent::new(
        uuid::Uuid::now_v7(),
        BUDGET_EXCEEDED,
        exceeded.project_id.clone(),
        Utc::now(),
        data.clone(),
    );
    let audit = NewAuditEntry {
        actor: actor.to_owned(),
        action: "project.budget_exceeded".to_owned(),
        project_id: Some(exceeded.project_id.to_string()),
        command_id: command.map(ToString::to_string),
        details: data,
    };
    store
        .note_exceeded(&exceeded.project_id, &month, &event, audit)
        .await
}
