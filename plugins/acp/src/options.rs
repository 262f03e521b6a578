//! The provider's options: which agent program to run, with which environment, and how
//! long a cancelled turn may take to end. An operator adds an ACP agent by writing a
//! manifest whose fixed `[options]` name the program (docs/providers.md). Pure, so it is
//! unit tested natively.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The agent program when the options name none: OpenCode's ACP mode.
pub const DEFAULT_COMMAND: &str = "opencode";
/// Its arguments.
pub const DEFAULT_ARGS: &[&str] = &["acp"];
/// Time a turn gets after `session/cancel` to answer with `cancelled` before the process is
/// stopped: enough for an agent to abort its model request and say so.
pub const DEFAULT_CANCEL_GRACE_MS: u32 = 5_000;

/// Options a request may set (`options_json`); unknown keys are refused so that a typo does
/// not silently run with defaults. The program must also be granted by the manifest's
/// `exec`, which the host checks at spawn.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// The agent program (argv\[0\]); see [`DEFAULT_COMMAND`].
    pub command: Option<String>,
    /// Its arguments; see [`DEFAULT_ARGS`].
    pub args: Option<Vec<String>>,
    /// See [`DEFAULT_CANCEL_GRACE_MS`].
    pub cancel_grace_ms: Option<u32>,
    /// Plain environment variables for the agent (e.g. turning off its telemetry).
    pub env: BTreeMap<String, String>,
    /// Credentials exported to the agent as environment variables of the same name, when
    /// stored; the host resolves them at spawn (the manifest must grant each), so their
    /// values never enter this guest.
    pub credentials: Vec<String>,
    /// The project's MCP servers, set by the host (the manifest grants `mcp_servers`).
    pub mcp_servers: Vec<rdev_sdk::mcp::McpServer>,
}

impl Options {
    /// Parses `options_json`; the error is the reason in words.
    pub fn parse(json: &str) -> Result<Self, String> {
        let options: Self =
            serde_json::from_str(json).map_err(|e| format!("invalid acp options: {e}"))?;
        if options.command.as_deref().is_some_and(str::is_empty) {
            return Err("invalid acp options: `command` is empty".into());
        }
        let names = options.env.keys().chain(&options.credentials);
        if let Some(bad) = names.into_iter().find(|name| !is_env_name(name)) {
            return Err(format!(
                "invalid acp options: {bad:?} is not an environment variable name"
            ));
        }
        Ok(options)
    }

    /// The program to spawn.
    pub fn command(&self) -> &str {
        self.command.as_deref().unwrap_or(DEFAULT_COMMAND)
    }

    /// Its arguments.
    pub fn args(&self) -> Vec<String> {
        match &self.args {
            Some(args) => args.clone(),
            None => DEFAULT_ARGS.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// See [`DEFAULT_CANCEL_GRACE_MS`].
    pub fn cancel_grace_ms(&self) -> u32 {
        self.cancel_grace_ms.unwrap_or(DEFAULT_CANCEL_GRACE_MS)
    }
}

/// Letters, digits and `_`, not starting with a digit: what every shell accepts.
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_opencode_acp() {
        let options = Options::parse("{}").expect("empty options");
        assert_eq!(options.command(), "opencode");
        assert_eq!(options.args(), ["acp"]);
        assert_eq!(options.cancel_grace_ms(), DEFAULT_CANCEL_GRACE_MS);
    }

    #[test]
    fn options_name_another_agent_and_refuse_typos() {
        let options = Options::parse(r#"{"command":"gemini","args":["--acp"]}"#).expect("ok");
        assert_eq!(options.command(), "gemini");
        assert_eq!(options.args(), ["--acp"]);
        assert!(Options::parse(r#"{"comand":"x"}"#).is_err());
        assert!(Options::parse(r#"{"command":""}"#).is_err());
        assert!(Options::parse("1").is_err());
    }

    #[test]
    fn environment_and_credentials_are_named_like_variables() {
        let options = Options::parse(
            r#"{"env":{"DISABLE_TELEMETRY":"1"},"credentials":["ANTHROPIC_API_KEY"]}"#,
        )
        .expect("ok");
        assert_eq!(options.env["DISABLE_TELEMETRY"], "1");
        assert_eq!(options.credentials, ["ANTHROPIC_API_KEY"]);
        for bad in [
            r#"{"env":{"A=B":"1"}}"#,
            r#"{"credentials":["1KEY"]}"#,
            r#"{"credentials":[""]}"#,
        ] {
            assert!(Options::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
