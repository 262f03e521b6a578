//! The git provider: `git <prompt split into arguments>` in the project's workspace. No shell
//! is involved, so `;`, `|`, `$(…)` and globs in the prompt are plain characters; quotes
//! group words as a shell's would. A leading `git` word is accepted and dropped, so both
//! `status --short` and `git status --short` work.

pub mod split;

use rdev_sdk::process::CommandBuilder;
use rdev_sdk::{
    AgentRequest, AgentResult, Capability, CleanupRequest, Provider, ProviderCapabilities,
    ProviderError, run,
};

struct Git;

/// How long a cancelled git gets between each of SIGINT, SIGTERM and SIGKILL.
const STOP_STEP_MS: u32 = 2_000;

/// The arguments git runs with, from the prompt.
pub fn arguments(prompt: &str) -> Result<Vec<String>, ProviderError> {
    let mut args = split::split(prompt)
        .map_err(|e| ProviderError::InvalidRequest(format!("cannot split the prompt: {e}")))?;
    if args.first().is_some_and(|a| a == "git") {
        args.remove(0);
    }
    if args.is_empty() {
        return Err(ProviderError::InvalidRequest(
            "the prompt names no git subcommand".to_owned(),
        ));
    }
    Ok(args)
}

impl Provider for Git {
    fn capabilities() -> ProviderCapabilities {
        ProviderCapabilities {
            description: "Runs git with the prompt as its arguments, without a shell".into(),
            capabilities: Capability::STREAMING | Capability::CANCEL,
        }
    }

    fn execute(request: AgentRequest) -> Result<AgentResult, ProviderError> {
        let args = arguments(&request.prompt)?;
        let command = CommandBuilder::new("git")
            .args(args)
            // Never wait for a password nobody can type, never page.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_PAGER", "cat")
            .working_dir(request.working_dir.clone());
        run::run_to_completion(&command, STOP_STEP_MS)
    }

    fn cancel(_request: CleanupRequest) -> Result<(), ProviderError> {
        // Nothing outlives the instance: the host kills the process group when it drops it.
        Ok(())
    }
}

rdev_sdk::export_provider!(Git);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_git_is_dropped() {
        assert_eq!(arguments("git status -s").expect("args"), ["status", "-s"]);
        assert_eq!(
            arguments("log --oneline").expect("args"),
            ["log", "--oneline"]
        );
        assert_eq!(
            arguments("commit -m 'fix: the thing'").expect("args"),
            ["commit", "-m", "fix: the thing"]
        );
    }

    #[test]
    fn empty_or_unbalanced_prompts_are_invalid() {
        for bad in ["", "   ", "git", "commit -m 'open"] {
            assert!(
                matches!(arguments(bad), Err(ProviderError::InvalidRequest(_))),
                "{bad:?} accepted"
            );
        }
    }
}
