//! The git provider: `git <prompt split into arguments>` in the project's workspace. No shell
//! is involved, so `;`, `|`, `$(…)` and globs in the prompt are plain characters; quotes
//! group words as a shell's would. A leading `git` word is accepted and dropped, so both
//! `status --short` and `git status --short` work. What the prompt may ask of git is checked
//! against allow-lists first ([`policy`]), and git runs with configuration that keeps it from
//! starting other programs (no hooks, fsmonitor, pager, editor or `ext::` transport).

pub mod policy;
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
    policy::check(&args)
        .map_err(|refusal| ProviderError::InvalidRequest(format!("refused: {refusal}")))?;
    Ok(args)
}

/// Configuration given to every git run through `GIT_CONFIG_COUNT` (command-line scope, so it
/// wins over the repository's and the user's files): whatever a workspace's configuration
/// says, git runs no hooks, no fsmonitor daemon, no pager, no editor and no ssh wrapper, and
/// does not treat a bare repository it stumbles upon as its repository.
const FORCED_CONFIG: &[(&str, &str)] = &[
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.pager", "cat"),
    ("core.editor", ":"),
    ("sequence.editor", ":"),
    ("core.sshCommand", "ssh"),
    ("protocol.ext.allow", "never"),
    ("safe.bareRepository", "explicit"),
];

/// The environment every git run gets: [`FORCED_CONFIG`], no prompts, no pager, and only
/// network transports (no `ext::`, no `file://` or local paths outside git's own checks).
fn git_env() -> Vec<(String, String)> {
    let mut env = vec![
        // Never wait for a password nobody can type, never page, never open an editor.
        ("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned()),
        ("GIT_PAGER".to_owned(), "cat".to_owned()),
        ("GIT_EDITOR".to_owned(), ":".to_owned()),
        ("GIT_SEQUENCE_EDITOR".to_owned(), ":".to_owned()),
        (
            "GIT_ALLOW_PROTOCOL".to_owned(),
            "https:http:ssh:git".to_owned(),
        ),
        (
            "GIT_CONFIG_COUNT".to_owned(),
            FORCED_CONFIG.len().to_string(),
        ),
    ];
    for (i, (key, value)) in FORCED_CONFIG.iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}"), (*key).to_owned()));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), (*value).to_owned()));
    }
    env
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
        let command = git_env()
            .into_iter()
            .fold(CommandBuilder::new("git").args(args), |c, (k, v)| {
                c.env(k, v)
            })
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
