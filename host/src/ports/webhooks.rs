//! The webhook outbox. Subscriptions, the events waiting for delivery and every attempt live
//! in the same database as the commands, so an event is written in the same transaction as
//! the change that caused it (a command's terminal status is written by `CommandQueue::finish`,
//! `cancel` and `rescue_expired` together with its outbox rows) and nothing is lost if rdev
//! stops between the two. Both storage adapters implement it and pass the contract suite.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::domain::{
    Delivery, DeliveryAttempt, DueDelivery, NewAuditEntry, NewWebhook, NextStep, ProjectId,
    Webhook, WebhookEvent, WebhookSecret,
};

use super::store::StoreError;

/// A page of a webhook's deliveries, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPage {
    /// Only deliveries with a smaller id (the previous page's `next_before`).
    pub before: Option<i64>,
    /// At most this many (the adapters cap it at 100).
    pub limit: u32,
}

/// Largest page of deliveries.
pub const MAX_DELIVERY_PAGE: u32 = 100;

/// Subscriptions and their outbox.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a subscription, its secret sealed with the master key (bound to the webhook's
    /// id). The project need not exist yet, so that `project.created` can be subscribed to
    /// before the project is created. `Conflict` when the id is taken.
    async fn create_webhook(&self, webhook: NewWebhook) -> Result<Webhook, StoreError>;

    /// The project's subscriptions, oldest first.
    async fn list_webhooks(&self, project: &ProjectId) -> Result<Vec<Webhook>, StoreError>;

    /// `NotFound` unless a webhook with this id belongs to `project`.
    async fn get_webhook(&self, project: &ProjectId, id: &str) -> Result<Webhook, StoreError>;

    /// Removes the subscription with its deliveries. `NotFound` as for `get_webhook`.
    async fn delete_webhook(&self, project: &ProjectId, id: &str) -> Result<(), StoreError>;

    /// Writes `event` to the outbox of every enabled subscription of its project whose
    /// filter matches, and appends `audit` (when given) in the same transaction. Returns
    /// how many deliveries were queued.
    async fn emit(
        &self,
        event: &WebhookEvent,
        audit: Option<NewAuditEntry>,
    ) -> Result<u64, StoreError>;

    /// Takes up to `limit` deliveries that are due, of enabled webhooks, and not leased by
    /// another dispatcher; leases them to `owner` for `lease` and counts the attempt.
    /// Never hands one delivery to two dispatchers at once (on PostgreSQL across replicas).
    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<DueDelivery>, StoreError>;

    /// Records an attempt and what follows from it, fenced by the claim: `Conflict` when the
    /// delivery was claimed again meanwhile (the lease expired).
    async fn record_attempt(
        &self,
        delivery: &DueDelivery,
        attempt: &DeliveryAttempt,
        next: NextStep,
    ) -> Result<(), StoreError>;

    /// Opens a claimed delivery's signing secret with the current master key; the dispatcher
    /// calls it only to sign. `Seal(UndecryptableWebhookSecret)` when the sealed bytes do not
    /// belong to this webhook or this key.
    fn open_secret(&self, delivery: &DueDelivery) -> Result<WebhookSecret, StoreError>;

    /// Changes whenever outbox rows were written (on PostgreSQL by any replica, through
    /// NOTIFY), so a dispatcher wakes at once instead of at its next poll.
    fn delivery_signal(&self) -> watch::Receiver<u64>;

    /// A page of the webhook's deliveries with their attempts. `NotFound` as for
    /// `get_webhook`.
    async fn list_deliveries(
        &self,
        project: &ProjectId,
        webhook: &str,
        page: DeliveryPage,
    ) -> Result<Vec<Delivery>, StoreError>;
}
