//! Persistence of approvals and approval policies (migration 0080). Both SQL databases
//! implement it and pass the contract suite (`tests/tests/store_contract.rs`).

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::store::StoreError;
use crate::domain::{
    Approval, ApprovalStatus, NewApproval, Policy, PolicyRule, ProjectId, Resolution,
};

/// Approvals and the policies that decide them.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Stores a pending approval and, in the same transaction, appends its
    /// `approval_requested` event to the command's stream, its `approval.requested` audit
    /// entry and its `approval.requested` webhook outbox rows. `NotFound` for an unknown
    /// command.
    async fn request(&self, new: NewApproval) -> Result<Approval, StoreError>;

    /// Stores an approval the policy decided at once (never pending), with its
    /// `approval_resolved` event and `approval.decided` audit entry.
    async fn record_decided(
        &self,
        new: NewApproval,
        resolution: Resolution,
    ) -> Result<Approval, StoreError>;

    /// Decides a pending approval, exactly once: `Conflict` when it is no longer pending,
    /// `NotFound` when it does not exist. Writes the `approval_resolved` event and the
    /// `approval.decided` audit entry naming the decider in the same transaction, and
    /// announces the decision on [`ApprovalStore::decision_signal`] of every replica.
    async fn resolve(&self, id: &str, resolution: Resolution) -> Result<Approval, StoreError>;

    async fn get(&self, id: &str) -> Result<Approval, StoreError>;

    /// The project's approvals, newest first, optionally only those in `status`; at most
    /// `limit` (capped at 1000).
    async fn list(
        &self,
        project: &ProjectId,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError>;

    /// Expires the pending approvals of commands that are no longer running (their host
    /// was lost, they finished or were cancelled while the broker could not settle them);
    /// returns how many changed.
    async fn expire_orphans(&self) -> Result<u64, StoreError>;

    /// The project's policy; `None` when it has none (then [`Policy::default`] applies).
    async fn policy(&self, project: &ProjectId) -> Result<Option<Policy>, StoreError>;

    /// Replaces the project's policy (already validated).
    async fn put_policy(&self, project: &ProjectId, policy: &Policy) -> Result<Policy, StoreError>;

    /// Appends `rule` to the project's rules (starting from the default policy) unless an
    /// equal rule is there, atomically with respect to other writers of the policy.
    async fn add_rule(&self, project: &ProjectId, rule: PolicyRule) -> Result<Policy, StoreError>;

    /// Ids of approvals decided on any replica, as they are decided. Best effort: a lagging
    /// receiver re-reads the approvals it waits for.
    fn decision_signal(&self) -> broadcast::Receiver<String>;
}
