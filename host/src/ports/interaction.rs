//! The seam between a running provider and the people (or policy) who decide for it.
//!
//! A provider on ABI 0.2 calls the `interaction` host interface; the runtime turns each call
//! into a call of this port, so the runtime knows nothing of approvals, stores or APIs and the
//! host's approval service (the broker) knows nothing of WebAssembly.
//!
//! # Contract for an implementation
//!
//! **Permission requests** ([`Interaction::request_permission`]):
//! - The call *blocks the provider* until it returns: the agent waits for its tool call while
//!   it is pending. Return when a decision exists: from a person (API, CLI, dashboard), from
//!   the project's policy (rules first, then its default mode), or from the approval timeout.
//! - **Never allow by default.** A timeout is a [`Decision::Deny`] with a message that says
//!   so (the approval is then `expired`), not an error. An implementation that cannot reach
//!   its store answers `Err(InteractionError::Unavailable)`; the provider treats that as a
//!   denial too.
//! - **Cancellation**: `ctx.cancel` fires when the command is cancelled or reaches its own
//!   timeout. Return `Err(InteractionError::Cancelled)` promptly once it fires (mark the
//!   approval `cancelled`). The runtime stops waiting [`CANCEL_GRACE`] after the token fired
//!   and drops the future; it is also dropped when the execution is killed or the worker
//!   stops, so bookkeeping must not rely on the future running to completion (a guard that
//!   settles the approval on drop, or a sweep of approvals whose command ended).
//! - The runtime has validated the request's bounds
//!   ([`PermissionRequest::validate`](crate::domain::interaction::PermissionRequest::validate))
//!   before calling; everything in it is still guest-controlled text: store and show it, never
//!   interpret it as markup or commands.
//! - **"Always"**: a decision with `remember: true` (or the agent's `allow_always` /
//!   `reject_always` option) tells the *agent* to stop asking for such calls in its session;
//!   extending the *project's* rules with it is the implementation's job, so that later
//!   commands are decided without asking.
//! - Calls for one command arrive one at a time (a provider is single-threaded), but calls of
//!   different commands arrive concurrently.
//!
//! **Follow-up input** ([`Interaction::open_input`]):
//! - Called once when an execution of a provider that takes input starts; return the
//!   receiving end of a channel and keep the sender, keyed by the command id, for the API's
//!   `POST /commands/{id}/input` (or a NOTIFY from another replica) to send into.
//! - The runtime drops the receiver when the execution ends, so `Sender::is_closed()` is the
//!   truth about "this command can take input now"; anything still queued then is dropped
//!   (it was not delivered).
//! - Delivery: the provider takes input with `interaction.next-input`; while input waits, its
//!   blocking reads (process output, event streams) return early so it notices at once. When
//!   a provider takes it, the agent receives it as a new user message in the same session
//!   (queued behind the turn under way when the agent cannot take it mid-turn).
//! - Return `None` when no input can be delivered for this command; the provider then sees
//!   its input closed and finishes as soon as its work is done.
//! - [`Interaction::input_taken`] is awaited each time the provider takes an input, before
//!   it sees it: record the delivery there (the host reports undelivered input at the end).

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::interaction::{Decision, FollowUp, PermissionRequest};
use crate::domain::{CommandId, PolicyMode, ProjectId, ProviderName};

/// How long the runtime still waits for [`Interaction::request_permission`] to return after
/// the execution's cancel token fired, before it drops the call.
pub const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// The receiving end of a command's follow-up input.
pub type InputReceiver = mpsc::Receiver<FollowUp>;

/// Which execution a call belongs to.
#[derive(Debug, Clone)]
pub struct InteractionContext {
    pub command_id: CommandId,
    pub project_id: ProjectId,
    pub provider: ProviderName,
    /// Fires when the command is cancelled or reaches its timeout.
    pub cancel: CancellationToken,
    /// The command's own `permissions`, which narrow its project's policy.
    pub permissions: Option<PolicyMode>,
}

/// Why no decision was returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InteractionError {
    /// The command was cancelled (or timed out) while the request was pending.
    #[error("cancelled")]
    Cancelled,
    /// The approval service could not take the request (its store is down …).
    #[error("no decision could be obtained: {0}")]
    Unavailable(String),
}

/// Asks for decisions and delivers follow-up input; see the module documentation for the
/// contract.
#[async_trait]
pub trait Interaction: Send + Sync {
    /// Blocks until the tool call described by `request` is allowed or denied, or the
    /// command is cancelled.
    async fn request_permission(
        &self,
        ctx: &InteractionContext,
        request: PermissionRequest,
    ) -> Result<Decision, InteractionError>;

    /// Opens the follow-up input channel of a starting execution, or `None` when input
    /// cannot reach it.
    async fn open_input(&self, ctx: &InteractionContext) -> Option<InputReceiver>;

    /// The provider took input `input_id` (called before the provider sees it), so the host
    /// can tell the inputs it delivered from those it never did. Nothing by default.
    async fn input_taken(&self, _ctx: &InteractionContext, _input_id: &str) {}
}

/// What a host without an approval service answers: every request is denied, with a message
/// that says why, and no input reaches a command. Safe as a default because it never allows.
#[derive(Debug, Clone, Copy, Default)]
pub struct NobodyToAsk;

/// The message of [`NobodyToAsk`]'s denials.
pub const NOBODY_TO_ASK: &str =
    "denied: this rdev host has no approval service, and tool calls are never allowed by default";

#[async_trait]
impl Interaction for NobodyToAsk {
    async fn request_permission(
        &self,
        _ctx: &InteractionContext,
        _request: PermissionRequest,
    ) -> Result<Decision, InteractionError> {
        Ok(Decision::deny(NOBODY_TO_ASK))
    }

    async fn open_input(&self, _ctx: &InteractionContext) -> Option<InputReceiver> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nobody_to_ask_denies_with_a_reason_and_takes_no_input() {
        let ctx = InteractionContext {
            command_id: CommandId::from_uuid(uuid::Uuid::nil()),
            project_id: ProjectId::parse("p").unwrap(),
            provider: ProviderName::parse("claude").unwrap(),
            cancel: CancellationToken::new(),
            permissions: None,
        };
        let request = PermissionRequest {
            tool_call_id: None,
            tool: "Bash".into(),
            input: serde_json::json!({"command": "rm -rf /"}),
            summary: "rm -rf /".into(),
            options: Vec::new(),
        };
        let decision = NobodyToAsk.request_permission(&ctx, request).await;
        assert_eq!(decision, Ok(Decision::deny(NOBODY_TO_ASK)));
        assert!(NobodyToAsk.open_input(&ctx).await.is_none());
    }
}
