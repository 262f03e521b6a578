//! The shell provider: `sh -c <prompt>` in the project's workspace. Output is streamed as
//! chunks (a shell command's output need not be line-shaped); the exit code decides the
//! status.

use rdev_sdk::exec::{ChunksRead, ExecError};
use rdev_sdk::process::{self, CommandBuilder};
use rdev_sdk::{
    AgentRequest, AgentResult, Capability, CleanupRequest, Provider, ProviderCapabilities,
    ProviderError, ResultStatus, event,
};

struct Shell;

/// How long a cancelled command gets between each of SIGINT, SIGTERM and SIGKILL.
const STOP_STEP_MS: u32 = 2_000;

impl Provider for Shell {
    fn capabilities() -> ProviderCapabilities {
        ProviderCapabilities {
            description: "Runs the prompt with `sh -c` in the project's workspace".into(),
            capabilities: Capability::STREAMING | Capability::CANCEL,
        }
    }

    fn execute(request: AgentRequest) -> Result<AgentResult, ProviderError> {
        let process = CommandBuilder::new("sh")
            .arg("-c")
            .arg(request.prompt.as_str())
            .working_dir(request.working_dir.clone())
            .spawn()
            .map_err(|e| spawn_error(&e))?;
        process.close_stdin();

        let cancelled = loop {
            match process::read_chunks(&process, None) {
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
            process::stop(&process, STOP_STEP_MS)
        } else {
            process::wait(&process)
        }
        .map_err(|e| ProviderError::Failed(process::describe(&e)))?;

        let mut result = AgentResult {
            status: ResultStatus::Completed,
            exit_code: status.code,
            session_id: None,
            final_text: None,
            error: None,
            cost_usd: None,
            usage: None,
            num_turns: None,
            details_json: None,
        };
        if cancelled {
            result.status = ResultStatus::Cancelled;
            result.error = Some("cancelled".into());
        } else if status.code != Some(0) {
            result.status = ResultStatus::Failed;
            result.error = Some(match (status.code, status.signal) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => "exited without a status".into(),
            });
        }
        Ok(result)
    }

    fn cancel(_request: CleanupRequest) -> Result<(), ProviderError> {
        // Nothing outlives the instance: the host kills the process group when it drops it.
        Ok(())
    }
}

fn spawn_error(error: &ExecError) -> ProviderError {
    match error {
        ExecError::Cancelled => ProviderError::Cancelled,
        other => ProviderError::Unavailable(process::describe(other)),
    }
}

rdev_sdk::export_provider!(Shell);
