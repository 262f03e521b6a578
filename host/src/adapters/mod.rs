//! Implementations of the ports against real infrastructure. Only the composition root
//! (the CLI and the server set-up) picks one; the core sees the ports.

/// A query selecting the audit log columns both store adapters read back into an
/// `AuditEntry`, with `$tail` (a literal, because sqlx takes only static SQL) after
/// `FROM audit_log`. Defined before the adapter modules so that both see it.
macro_rules! select_audit {
    ($tail:literal) => {
        concat!(
            "SELECT seq, at, actor, action, project_id, command_id, details, prev_hash, hash \
             FROM audit_log ",
            $tail
        )
    };
}

pub mod event_fanout;
pub mod kubernetes;
pub mod local;
mod outbox;
pub mod postgres;
pub mod sqlite;
pub mod store;
pub mod woodpecker;
pub mod workspace_files;
