//! Building results: the shapes every provider returns (failed, cancelled) and the words
//! for how a process ended, written once.

use super::bindings::rdev::provider::exec::ExitStatus;
use super::bindings::rdev::provider::types::{AgentResult, ResultStatus};

/// A result with only a status; the provider fills in what it knows.
pub fn with_status(status: ResultStatus) -> AgentResult {
    AgentResult {
        status,
        exit_code: None,
        session_id: None,
        final_text: None,
        error: None,
        cost_usd: None,
        usage: None,
        num_turns: None,
        details_json: None,
    }
}

/// A completed result whose final text is `text`, for providers with nothing else to report.
pub fn completed(text: impl Into<String>) -> AgentResult {
    AgentResult {
        final_text: Some(text.into()),
        ..with_status(ResultStatus::Completed)
    }
}

/// A failed result saying why, keeping the session so that it can still be continued.
pub fn failed(session_id: Option<String>, error: impl Into<String>) -> AgentResult {
    AgentResult {
        session_id,
        error: Some(error.into()),
        ..with_status(ResultStatus::Failed)
    }
}

/// A result for an execution the host cancelled.
pub fn cancelled(session_id: Option<String>) -> AgentResult {
    AgentResult {
        session_id,
        error: Some("cancelled".to_owned()),
        ..with_status(ResultStatus::Cancelled)
    }
}

/// How a process ended, in words that follow "exited with" / "was killed by":
/// `status 3`, `signal 9`, or `no status`.
pub fn exit_words(status: &ExitStatus) -> String {
    match (status.code, status.signal) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "no status".to_owned(),
    }
}
