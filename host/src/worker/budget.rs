//! The running side of budgets: the costs a command reports in its `usage` events are added
//! up as they are stored, and each one that brings the project's month-to-date cost to its
//! budget stops the command (cancelled, with the reason) and announces `budget.exceeded`.

use chrono::Utc;

use super::Context;
use crate::domain::{AgentEvent, CommandRecord, CommandUsage};
use crate::services::budgets;

/// What a command has consumed so far and whether its budget already stopped it.
#[derive(Debug, Default)]
pub(super) struct BudgetWatch {
    pub usage: CommandUsage,
    stopped: bool,
}

impl BudgetWatch {
    /// Counts `event` if it reports usage; with a cost, checks the project's budget and
    /// returns the reason to stop when the month's cost has reached it (once per command).
    pub async fn observe(
        &mut self,
        ctx: &Context,
        command: &CommandRecord,
        event: &AgentEvent,
    ) -> Option<String> {
        let AgentEvent::Usage { usage, cost_usd } = event else {
            return None;
        };
        self.usage.add_event(usage, *cost_usd);
        if self.stopped || cost_usd.is_none() {
            return None;
        }
        let project = &command.project_id;
        let checked = budgets::check(&*ctx.usage, project, self.usage.cost_usd, Utc::now()).await;
        let exceeded = match checked {
            Ok(exceeded) => exceeded?,
            Err(error) => {
                tracing::warn!(command = %command.id, %error, "checking the budget failed; the command goes on");
                return None;
            }
        };
        self.stopped = true;
        let reason = exceeded.reason();
        tracing::warn!(command = %command.id, %reason, "stopping a command over its project's budget");
        let actor = &ctx.config.id;
        if let Err(error) =
            budgets::announce(&*ctx.usage, &exceeded, actor, Some(&command.id)).await
        {
            tracing::warn!(command = %command.id, %error, "announcing the exceeded budget failed");
        }
        Some(reason)
    }
}

/// After `record` finished with `cost_usd`: announces `budget.exceeded` if this cost brought
/// the month to the budget (a provider may report its cost only in its result).
pub(super) async fn after_finish(ctx: &Context, record: &CommandRecord, cost_usd: f64) {
    if cost_usd <= 0.0 {
        return;
    }
    let project = &record.project_id;
    match budgets::check(&*ctx.usage, project, 0.0, Utc::now()).await {
        Ok(Some(exceeded)) => {
            let announced =
                budgets::announce(&*ctx.usage, &exceeded, &ctx.config.id, Some(&record.id));
            if let Err(error) = announced.await {
                tracing::warn!(command = %record.id, %error, "announcing the exceeded budget failed");
            }
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(command = %record.id, %error, "checking the budget failed"),
    }
}
