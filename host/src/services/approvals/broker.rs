//! The broker: the [`Interaction`] port over the approvals store and the project's policy.
//!
//! A request is decided by the policy when a rule or the mode says so (stored as an already
//! decided approval, so the trail shows it), else stored pending and waited for. The wait
//! ends on the first of: the store's decision signal naming the approval (on PostgreSQL a
//! `NOTIFY`, so a decision posted to any replica arrives at once), a poll of the row (the
//! fallback when a signal was lost), the approval's expiry (settled `expired`, a denial),
//! or the command's cancel (settled `cancelled`). Settling goes through the store's
//! decide-once update, so a person's decision racing an expiry or a cancel has exactly one
//! winner and the broker reports the winner. Follow-up input is in [`super::input`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::domain::approval::Verdict;
use crate::domain::interaction::{Allow, Decision, Deny, PermissionOption, PermissionRequest};
use crate::domain::{Approval, ApprovalStatus, NewApproval, Resolution};
use crate::ports::interaction::InputReceiver;
use crate::ports::{
    ApprovalStore, EventLog, Interaction, InteractionContext, InteractionError, StoreError,
};

/// How often a waiting request re-reads its approval when no signal arrived.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);

/// Who settles an approval that no person decided (timeout, cancel).
const HOST: &str = "host";

/// Decides permission requests by policy or by a person, and delivers follow-up input.
pub struct ApprovalBroker {
    approvals: Arc<dyn ApprovalStore>,
    events: Arc<dyn EventLog>,
    poll: Duration,
}

impl ApprovalBroker {
    /// A broker over the approvals store and the event log (for follow-up input).
    pub fn new(approvals: Arc<dyn ApprovalStore>, events: Arc<dyn EventLog>) -> Self {
        Self {
            approvals,
            events,
            poll: DEFAULT_POLL,
        }
    }

    /// Changes how often a waiting request re-reads its approval (tests shorten it).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Records a decision the policy made without asking.
    async fn decided_by_policy(
        &self,
        new: NewApproval,
        status: ApprovalStatus,
        reason: String,
    ) -> Result<Decision, InteractionError> {
        let resolution = Resolution {
            status,
            decided_by: "policy".into(),
            actor: "policy".into(),
            message: Some(reason),
            remember: false,
        };
        let approval = self
            .approvals
            .record_decided(new, resolution)
            .await
            .map_err(unavailable)?;
        Ok(decision_of(&approval))
    }

    /// Stores `new` pending and waits for its decision, expiry or the command's cancel.
    async fn ask(
        &self,
        ctx: &InteractionContext,
        new: NewApproval,
    ) -> Result<Decision, InteractionError> {
        // Subscribed before the row exists, so no decision can slip between.
        let mut decided = self.approvals.decision_signal();
        let approval = self.approvals.request(new).await.map_err(unavailable)?;
        let mut guard = SettleOnDrop {
            approvals: self.approvals.clone(),
            id: Some(approval.id.clone()),
        };
        let left = (approval.expires_at - Utc::now())
            .to_std()
            .unwrap_or_default();
        let expiry = Instant::now() + left;
        let mut poll = tokio::time::interval_at(Instant::now() + self.poll, self.poll);
        let mut signal_open = true;
        loop {
            tokio::select! {
                () = ctx.cancel.cancelled() => {
                    guard.disarm();
                    let message = "cancelled: the command was cancelled while this approval \
                                   was pending";
                    settle(&*self.approvals, &approval.id, ApprovalStatus::Cancelled, message)
                        .await
                        .ok();
                    return Err(InteractionError::Cancelled);
                }
                () = tokio::time::sleep_until(expiry) => {
                    guard.disarm();
                    let message = format!(
                        "expired: nobody decided within {} s, so the call is denied",
                        left.as_secs().max(1)
                    );
                    let settled =
                        settle(&*self.approvals, &approval.id, ApprovalStatus::Expired, &message)
                            .await?;
                    return Ok(decision_of(&settled));
                }
                signal = decided.recv(), if signal_open => match signal {
                    Ok(id) if id != approval.id => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => {
                        signal_open = false;
                        continue;
                    }
                },
                _ = poll.tick() => {}
            }
            match self.approvals.get(&approval.id).await {
                Ok(current) if current.status != ApprovalStatus::Pending => {
                    guard.disarm();
                    return Ok(decision_of(&current));
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, approval = %approval.id, "re-reading a pending approval")
                }
            }
        }
    }
}

#[async_trait]
impl Interaction for ApprovalBroker {
    async fn request_permission(
        &self,
        ctx: &InteractionContext,
        request: PermissionRequest,
    ) -> Result<Decision, InteractionError> {
        let policy = self
            .approvals
            .policy(&ctx.project_id)
            .await
            .map_err(unavailable)?
            .unwrap_or_default();
        let verdict = policy.evaluate(&request, ctx.permissions);
        let expires_at = Utc::now()
            + chrono::Duration::from_std(policy.timeout()).unwrap_or(chrono::Duration::MAX);
        let new = NewApproval {
            id: NewApproval::new_id(),
            command_id: ctx.command_id.clone(),
            project_id: ctx.project_id.clone(),
            request,
            expires_at,
        };
        match verdict {
            Verdict::Allow { reason } => {
                self.decided_by_policy(new, ApprovalStatus::Allowed, reason)
                    .await
            }
            Verdict::Deny { reason } => {
                self.decided_by_policy(new, ApprovalStatus::Denied, reason)
                    .await
            }
            Verdict::Ask => self.ask(ctx, new).await,
        }
    }

    async fn open_input(&self, ctx: &InteractionContext) -> Option<InputReceiver> {
        Some(super::input::open(self.events.clone(), ctx))
    }

    async fn input_taken(&self, ctx: &InteractionContext, input_id: &str) {
        super::input::delivered(&*self.events, &ctx.command_id, input_id).await;
    }
}

fn unavailable(error: StoreError) -> InteractionError {
    InteractionError::Unavailable(format!("the approval store failed: {error}"))
}

/// Settles a pending approval as the host; when a person decided first, their decision.
async fn settle(
    approvals: &dyn ApprovalStore,
    id: &str,
    status: ApprovalStatus,
    message: &str,
) -> Result<Approval, InteractionError> {
    let resolution = Resolution {
        status,
        decided_by: HOST.into(),
        actor: HOST.into(),
        message: Some(message.to_owned()),
        remember: false,
    };
    match approvals.resolve(id, resolution).await {
        Ok(approval) => Ok(approval),
        Err(StoreError::Conflict(_)) => approvals.get(id).await.map_err(unavailable),
        Err(error) => Err(unavailable(error)),
    }
}

/// Settles the approval `cancelled` when the wait is dropped before it ended (the runtime
/// drops it after the cancel grace, or when the execution is killed).
struct SettleOnDrop {
    approvals: Arc<dyn ApprovalStore>,
    id: Option<String>,
}

impl SettleOnDrop {
    fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for SettleOnDrop {
    fn drop(&mut self) {
        let (Some(id), Ok(runtime)) = (self.id.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let approvals = self.approvals.clone();
        runtime.spawn(async move {
            let message = "cancelled: the command stopped waiting for this approval";
            if let Err(error) = settle(&*approvals, &id, ApprovalStatus::Cancelled, message).await {
                tracing::warn!(%error, approval = %id, "settling an abandoned approval");
            }
        });
    }
}

/// What the agent is told about a decided approval.
pub fn decision_of(approval: &Approval) -> Decision {
    let remember = approval.remember;
    if approval.status == ApprovalStatus::Allowed {
        return Decision::Allow(Allow {
            updated_input: None,
            remember,
            option_id: option_for(&approval.options, true, remember),
        });
    }
    let message = approval
        .message
        .clone()
        .unwrap_or_else(|| format!("{}: the call may not run", approval.status.as_str()));
    Decision::Deny(Deny {
        message: Some(message),
        remember,
        option_id: option_for(&approval.options, false, remember),
        interrupt: false,
    })
}

/// The agent's option that means this decision: the exact kind, else any of the same
/// direction.
fn option_for(options: &[PermissionOption], allow: bool, remember: bool) -> Option<String> {
    let same_way = |o: &&PermissionOption| o.kind.allows() == allow;
    options
        .iter()
        .filter(same_way)
        .find(|o| o.kind.remembers() == remember)
        .or_else(|| options.iter().find(same_way))
        .map(|o| o.id.clone())
}
