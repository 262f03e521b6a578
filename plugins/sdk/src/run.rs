//! Running one program to completion with its output streamed as events: the whole body of
//! a provider that wraps a command-line tool (`git`, `echo`, a linter).

use super::bindings::rdev::provider::exec::{ChunksRead, ExecError, ExitStatus, Process};
use super::bindings::rdev::provider::types::{AgentResult, ProviderError, ResultStatus};
use super::process::CommandBuilder;
use super::{event, process, result};

/// Spawns `command` with stdin closed, streams its output with [`stream_to_completion`] and
/// returns [`command_result`]: a whole provider for a program whose exit code is its verdict.
pub fn run_to_completion(
    command: &CommandBuilder,
    stop_step_ms: u32,
) -> Result<AgentResult, ProviderError> {
    let process = command.spawn().map_err(|e| spawn_error(&e))?;
    process.close_stdin();
    let outcome = stream_to_completion(&process, stop_step_ms)?;
    Ok(command_result(&outcome))
}

/// How a streamed command ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub status: ExitStatus,
    /// The host cancelled the execution and the process was stopped.
    pub cancelled: bool,
}

/// Forwards the process's output as `output` events (chunks, since a tool's output need not
/// be line-shaped) until it closes, then waits for its exit. On cancel it stops the process
/// with [`process::stop`], `stop_step_ms` between each signal.
pub fn stream_to_completion(
    process: &Process,
    stop_step_ms: u32,
) -> Result<Outcome, ProviderError> {
    let cancelled = loop {
        match process::read_chunks(process, None) {
            Ok(ChunksRead::Chunks(chunks)) => {
                let batch: Vec<_> = chunks
                    .into_iter()
                    .map(|c| event::output(c.stream, String::from_utf8_lossy(&c.bytes)))
                    .collect();
                if event::emit_all(&batch).is_err() {
                    break true;
                }
            }
            Ok(ChunksRead::Idle) => {}
            Ok(ChunksRead::Closed) => break false,
            Err(ExecError::Cancelled) => break true,
            Err(e) => return Err(ProviderError::Failed(process::describe(&e))),
        }
    };
    let status = if cancelled {
        process::stop(process, stop_step_ms)
    } else {
        process::wait(process)
    }
    .map_err(|e| ProviderError::Failed(process::describe(&e)))?;
    Ok(Outcome { status, cancelled })
}

/// The result of a finished command: completed on exit 0, failed (saying why) otherwise,
/// cancelled when the host cancelled it. The exit code is always reported.
pub fn command_result(outcome: &Outcome) -> AgentResult {
    let status = &outcome.status;
    let mut result = if outcome.cancelled {
        result::cancelled(None)
    } else {
        match (status.code, status.signal) {
            (Some(0), _) => result::with_status(ResultStatus::Completed),
            (Some(_), _) => {
                result::failed(None, format!("exited with {}", result::exit_words(status)))
            }
            (None, Some(_)) => {
                result::failed(None, format!("killed by {}", result::exit_words(status)))
            }
            (None, None) => result::failed(None, "exited without a status"),
        }
    };
    result.exit_code = status.code;
    result
}

/// The provider error for a spawn that did not happen: cancellation stays cancellation, a
/// denied or missing program means the provider cannot serve the request.
pub fn spawn_error(error: &ExecError) -> ProviderError {
    match error {
        ExecError::Cancelled => ProviderError::Cancelled,
        other => ProviderError::Unavailable(process::describe(other)),
    }
}
