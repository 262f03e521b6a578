//! The command's result once a turn is over: read from the session's messages, or made from
//! what a broken stream left.

use rdev_sdk::v0_2::{AgentResult, ResultStatus, result};
use serde_json::{Value, json};

use crate::Run;
use crate::api::Fail;
use crate::events;

impl Run {
    /// The result, from the session's messages. `completed` says `session.idle` ended the
    /// turn; otherwise it was cancelled. `stream_error` is a `session.error` seen on the
    /// stream, which fails the turn even when no message carries it.
    pub(super) fn finish(
        &mut self,
        session: &str,
        completed: bool,
        stream_error: Option<String>,
    ) -> AgentResult {
        let path = format!("/session/{session}/message");
        let messages = match self.api.json("GET", &path, None) {
            // Moment 4: a cancel after the turn ended interrupts only this fetch; the next
            // call works again, and the finished turn stands.
            Err(Fail::Cancelled) => {
                self.cancelled = true;
                self.api.json("GET", &path, None)
            }
            other => other,
        };
        let messages = match messages {
            Ok(messages) => messages,
            Err(Fail::Cancelled) => Value::Null,
            Err(Fail::Connect(e) | Fail::Other(e)) => {
                return if completed {
                    result::failed(Some(session.to_owned()), e)
                } else {
                    result::cancelled(Some(session.to_owned()))
                };
            }
        };
        let turn = events::turn_outcome(&messages, self.prompts).unwrap_or_default();
        let mut result = AgentResult {
            status: ResultStatus::Completed,
            exit_code: None,
            session_id: Some(session.to_owned()),
            final_text: turn.final_text.clone().or_else(|| {
                (!self.final_text_seen.is_empty()).then(|| self.final_text_seen.clone())
            }),
            error: None,
            cost_usd: Some(turn.cost_usd),
            usage: Some(turn.usage.into()),
            num_turns: Some(turn.steps),
            details_json: Some(
                json!({
                    "opencode_version": self.version,
                    "host_run_server": self.api.host_run,
                    "error_name": turn.error_name,
                })
                .to_string(),
            ),
        };
        if !completed {
            result.status = ResultStatus::Cancelled;
            result.error = Some("cancelled".into());
        } else if let Some(error) = turn.error.or(stream_error) {
            result.status = ResultStatus::Failed;
            result.error = Some(error);
        }
        result
    }

    /// The result of a turn whose server went away.
    pub(super) fn broken(&mut self, session: String, why: String) -> AgentResult {
        let error = format!("opencode server stopped mid-turn: {why}");
        let mut result = result::failed(Some(session), error);
        if !self.final_text_seen.is_empty() {
            result.final_text = Some(self.final_text_seen.clone());
        }
        result
    }
}
