//! What the queue stores about a command and the lease a worker holds on it. The state
//! machine itself lives in `command.rs`; these are the records around it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::audit::NewAuditEntry;
use super::command::CommandStatus;
use super::event::{HostEvent, StreamEvent};
use super::ids::{CommandId, ProjectId, ProviderName};
use super::provider::Provenance;
use super::request::AgentRequest;
use super::result::AgentResult;

/// The reason written on a running command whose worker disappeared. Agents edit files, so
/// such a command is failed visibly rather than re-run blindly.
pub const HOST_LOST: &str = "host lost";

/// A command to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCommand {
    pub project_id: ProjectId,
    pub provider: ProviderName,
    pub request: AgentRequest,
    /// Same key for the same project → the same command, so client retries do not queue
    /// work twice.
    pub idempotency_key: Option<String>,
    /// Who asked for it (token name, user), for the audit trail.
    pub submitted_by: String,
}

/// A command as the queue knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub id: CommandId,
    pub project_id: ProjectId,
    pub provider: ProviderName,
    pub request: AgentRequest,
    pub status: CommandStatus,
    pub idempotency_key: Option<String>,
    pub submitted_by: String,
    /// Set by anyone who wants the command stopped; the running worker sees it within one
    /// heartbeat.
    pub cancel_requested: bool,
    /// How many times the command was claimed (a rescued command that had not started can
    /// be claimed again).
    pub attempts: u32,
    pub result: Option<AgentResult>,
    /// Why the command failed or was cancelled, when the host rather than the provider knows.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The build that ran it, recorded when its process started; absent before.
    pub provenance: Option<Provenance>,
}

/// sha256 of the serialized request: identifies what was asked in the audit trail without
/// copying a prompt (which may hold anything) into an undeletable log.
pub fn request_digest(request: &AgentRequest) -> String {
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// What a store writes about a command besides its row, in the same transaction, so that a
/// crash leaves all of it or none.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecords {
    /// The next event of the command's stream, if the change opens or ends it.
    pub event: Option<StreamEvent>,
    pub audit: NewAuditEntry,
}

impl CommandRecord {
    /// A new command's stream opens with its `pending` status, and the trail gets
    /// `command.enqueued` (the request's digest, never the prompt) by its submitter.
    pub fn enqueued_records(&self) -> CommandRecords {
        CommandRecords {
            event: Some(StreamEvent::Host(HostEvent::Status {
                status: CommandStatus::Pending,
            })),
            audit: NewAuditEntry {
                actor: self.submitted_by.clone(),
                action: "command.enqueued".into(),
                project_id: Some(self.project_id.to_string()),
                command_id: Some(self.id.to_string()),
                details: serde_json::json!({
                    "provider": self.provider,
                    "request_digest": request_digest(&self.request),
                    "idempotency_key": self.idempotency_key,
                }),
            },
        }
    }

    /// After `actor`'s cancel: a command that ended now (it was pending) gets its `done`
    /// event; a running one only the `command.cancel_requested` entry, its worker writes the
    /// rest when it stops.
    pub fn cancel_records(&self, actor: &str) -> CommandRecords {
        let event = (self.status == CommandStatus::Cancelled).then(|| {
            StreamEvent::Host(HostEvent::Done {
                status: CommandStatus::Cancelled,
                result: None,
                error: self.error.clone(),
            })
        });
        CommandRecords {
            event,
            audit: NewAuditEntry {
                actor: actor.to_owned(),
                action: "command.cancel_requested".into(),
                project_id: Some(self.project_id.to_string()),
                command_id: Some(self.id.to_string()),
                details: serde_json::json!({"status": self.status}),
            },
        }
    }
}

/// The right to write a running command's outcome. `token` is the fencing token: it grows
/// with every claim of the command, and every write is conditional on it, so a worker whose
/// lease expired and was taken over cannot overwrite its successor's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub command_id: CommandId,
    pub owner: String,
    pub token: i64,
    pub expires_at: DateTime<Utc>,
}

/// A claimed command and the lease on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub command: CommandRecord,
    pub lease: Lease,
}

/// What a heartbeat learns besides that the lease still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub cancel_requested: bool,
    pub expires_at: DateTime<Utc>,
}

/// What happened to a command whose lease expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescued {
    pub command_id: CommandId,
    pub project_id: ProjectId,
    /// `Pending` when it goes back to the queue; otherwise its terminal status.
    pub status: CommandStatus,
    pub reason: String,
}

/// Tunables of the queue. Defaults: 30 s lease, 10 s heartbeat, one running command per
/// project, a 5 s safety poll in case a notification is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub lease: Duration,
    pub heartbeat: Duration,
    /// `None` removes the limit; `Some(1)` serializes each project's commands.
    pub max_running_per_project: Option<u32>,
    /// How long a waiting worker sleeps when no notification arrives. A fallback only.
    pub poll_fallback: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            max_running_per_project: Some(1),
            poll_fallback: Duration::from_secs(5),
        }
    }
}

/// Which commands a listing returns, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandFilter {
    pub project_id: Option<ProjectId>,
    pub status: Option<CommandStatus>,
    /// At most this many (the adapters cap it at 1000).
    pub limit: Option<u32>,
    /// Only commands older than this one (the cursor of the last command of a page), so a
    /// listing pages through any number of commands without an offset.
    pub before: Option<CommandCursor>,
}

/// A command's place in its listing: the queue's sequence number, which orders commands
/// newest first and never ties (timestamps may), so paging after it neither skips nor
/// repeats a command. Clients see it only as an opaque string ([`CommandCursor::encode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandCursor(i64);

/// A `before` cursor that no listing handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor of this listing (use the `next` of a previous page)")]
pub struct CursorError;

/// Tells a cursor from any other string a client might send.
const CURSOR_PREFIX: &str = "c1.";

impl CommandCursor {
    /// The cursor of the command stored with queue sequence `seq` (adapters only).
    pub fn from_seq(seq: i64) -> Self {
        Self(seq)
    }

    /// The sequence number to page before (adapters only).
    pub fn seq(self) -> i64 {
        self.0
    }

    /// The opaque text handed to clients as `next`.
    pub fn encode(self) -> String {
        use base64::Engine as _;
        let bytes = self.0.to_be_bytes();
        format!(
            "{CURSOR_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// A cursor a client sent back; anything [`CommandCursor::encode`] did not produce is
    /// refused.
    pub fn parse(text: &str) -> Result<Self, CursorError> {
        use base64::Engine as _;
        let encoded = text.strip_prefix(CURSOR_PREFIX).ok_or(CursorError)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| CursorError)?;
        let bytes: [u8; 8] = bytes.try_into().map_err(|_| CursorError)?;
        let seq = i64::from_be_bytes(bytes);
        if seq <= 0 {
            return Err(CursorError);
        }
        Ok(Self(seq))
    }
}

/// How a running command ended, as its worker writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// A terminal status: completed, failed or cancelled.
    pub status: CommandStatus,
    pub result: Option<AgentResult>,
    pub error: Option<String>,
    /// What the command consumed, stored with the status (one row per command, so a
    /// retried finish counts nothing twice).
    pub usage: super::usage::CommandUsage,
}

#[cfg(test)]
mod cursor_tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_anything_else_is_refused() {
        let cursor = CommandCursor::from_seq(9_001);
        assert_eq!(CommandCursor::parse(&cursor.encode()), Ok(cursor));
        for bad in ["", "9001", "c1.", "c1.!!", "c1.AAAA", "c1.AAAAAAAAAAA"] {
            assert_eq!(CommandCursor::parse(bad), Err(CursorError), "{bad:?}");
        }
    }
}
