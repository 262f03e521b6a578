//! Where usage is accounted and budgets are kept: read by the API (usage totals, budgets,
//! the check before a submission) and by the worker (the month's cost while a command runs).
//! Each finished command's usage is written by `CommandQueue::finish` itself, in the
//! transaction of its status.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::{Budget, DayRange, NewAuditEntry, ProjectId, UsageBucket, WebhookEvent};

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// The project's totals per day and provider over `range`, by day then provider.
    async fn usage(
        &self,
        project: &ProjectId,
        range: DayRange,
    ) -> Result<Vec<UsageBucket>, StoreError>;

    /// The cost of the project's commands that finished within `range`, in US dollars.
    async fn cost(&self, project: &ProjectId, range: DayRange) -> Result<f64, StoreError>;

    /// The project's budget, if it has one.
    async fn budget(&self, project: &ProjectId) -> Result<Option<Budget>, StoreError>;

    /// Sets the project's monthly limit (already checked) and forgets that this month's
    /// was exceeded, so a new limit can fire `budget.exceeded` again. `NotFound` for an
    /// unknown project.
    async fn set_budget(&self, project: &ProjectId, limit_usd: f64) -> Result<Budget, StoreError>;

    /// Removes the project's budget; false when it had none.
    async fn clear_budget(&self, project: &ProjectId) -> Result<bool, StoreError>;

    /// Records that the project's budget was exceeded in `month` (`YYYY-MM`) and, the
    /// first time for that month, writes `event` to the webhook outbox and `audit` to the
    /// trail in the same transaction. True when this call was the first.
    async fn note_exceeded(
        &self,
        project: &ProjectId,
        month: &str,
        event: &WebhookEvent,
        audit: NewAuditEntry,
    ) -> Result<bool, StoreError>;
}
