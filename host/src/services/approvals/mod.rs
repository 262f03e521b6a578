//! Human in the loop: the [`broker::ApprovalBroker`] decides a running agent's permission
//! requests (policy first, else a person, else the timeout) and delivers follow-up input
//! ([`input`]); [`decide`] is how a person's decision (API, CLI) is recorded, and how
//! "remember" extends the project's rules.

pub mod broker;
pub mod input;

pub use broker::ApprovalBroker;

use crate::domain::approval::subject;
use crate::domain::interaction::PermissionRequest;
use crate::domain::{Approval, ApprovalStatus, Principal, Resolution};
use crate::ports::{ApprovalStore, StoreError};

/// A person's answer to a pending approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub allow: bool,
    /// Told to the agent (with a denial, the reason).
    pub message: Option<String>,
    /// Also decide later calls with this tool and subject the same way, in every command
    /// of the project.
    pub remember: bool,
}

/// Records `principal`'s decision of approval `id` (exactly once: `Conflict` when it is no
/// longer pending) and, with `remember`, adds the matching rule to the project's policy.
/// A rule that cannot be added (the list is full) is logged; the decision stands.
pub async fn decide(
    approvals: &dyn ApprovalStore,
    id: &str,
    principal: &Principal,
    choice: Choice,
) -> Result<Approval, StoreError> {
    let resolution = Resolution {
        status: if choice.allow {
            ApprovalStatus::Allowed
        } else {
            ApprovalStatus::Denied
        },
        decided_by: principal.token_id.clone(),
        actor: principal.actor(),
        message: choice.message,
        remember: choice.remember,
    };
    let approval = approvals.resolve(id, resolution).await?;
    if choice.remember
        && let Err(error) = remember(approvals, &approval, choice.allow).await
    {
        tracing::warn!(%error, approval = %approval.id, "extending the project's rules");
    }
    Ok(approval)
}

/// Adds the rule for `approval`'s tool and exact subject unless an equal one exists.
async fn remember(
    approvals: &dyn ApprovalStore,
    approval: &Approval,
    allow: bool,
) -> Result<(), StoreError> {
    let request = PermissionRequest {
        tool_call_id: None,
        tool: approval.tool.clone(),
        input: approval.input.clone(),
        summary: approval.summary.clone(),
        options: Vec::new(),
    };
    let policy = approvals
        .policy(&approval.project_id)
        .await?
        .unwrap_or_default();
    if let Some(rule) = policy.remembered_rule(&approval.tool, subject(&request), allow) {
        approvals.add_rule(&approval.project_id, rule).await?;
    }
    Ok(())
}
