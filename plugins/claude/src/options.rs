//! The provider's options and the `claude` command line they produce. Pure, so it is unit
//! tested natively.

use serde::Deserialize;

/// Options a request may set (`options_json`); unknown keys are refused so that a typo does
/// not silently run with defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// `--allowedTools`: tools that run without a permission prompt (e.g. `Bash(git *)`).
    pub allowed_tools: Vec<String>,
    /// `--disallowedTools`.
    pub disallowed_tools: Vec<String>,
    /// `--permission-mode` (`default`, `acceptEdits`, `plan`, `bypassPermissions` …).
    pub permission_mode: Option<String>,
    /// `--include-partial-messages`: stream text deltas as partial events.
    pub include_partial_messages: bool,
    /// `--max-turns`.
    pub max_turns: Option<u32>,
    /// `--append-system-prompt`.
    pub append_system_prompt: Option<String>,
    /// `CLAUDE_CODE_MAX_RETRIES`: how often the CLI retries a failing API call.
    pub max_retries: Option<u32>,
    /// Time the CLI gets after SIGINT to write its final result before it is terminated.
    pub cancel_grace_ms: Option<u32>,
    /// The idle watchdog: no output for this long cancels a hung CLI.
    pub idle_timeout_secs: Option<u32>,
    /// The project's MCP servers, set by the host (the manifest grants `mcp_servers`):
    /// `--mcp-config`.
    pub mcp_servers: Vec<rdev_sdk::mcp::McpServer>,
}

/// Retries when neither the options nor the request say: the CLI's own default (10, with
/// backoff) keeps a failing API busy for minutes.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
pub const DEFAULT_CANCEL_GRACE_MS: u32 = 5_000;
/// Long tool runs print nothing through the CLI, so the default watchdog is generous.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u32 = 1_800;

impl Options {
    /// Parses the request's options (`{}` for none).
    pub fn parse(json: &str) -> Result<Self, String> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let options: Self =
            serde_json::from_str(json).map_err(|e| format!("invalid claude options: {e}"))?;
        for value in options
            .allowed_tools
            .iter()
            .chain(&options.disallowed_tools)
            .chain(&options.permission_mode)
        {
            if value.starts_with('-') || value.is_empty() {
                return Err(format!("invalid claude option value {value:?}"));
            }
        }
        Ok(options)
    }
}

/// What the command line is built from (the prompt is not: it goes to stdin).
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    pub session_id: Option<&'a str>,
    pub model: Option<&'a str>,
    pub options: &'a Options,
}

/// The bidirectional mode: messages in and out as stream-json lines, and every permission
/// prompt sent to rdev as a `can_use_tool` control request on stdout.
const BASE_ARGS: [&str; 8] = [
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--permission-prompt-tool",
    "stdio",
];

/// The arguments after `claude`. No prompt among them: it is written to stdin as a `user`
/// message, so a prompt starting with `-` can never be read as a flag.
pub fn args(inv: Invocation<'_>) -> Result<Vec<String>, String> {
    let mut args: Vec<String> = BASE_ARGS.map(str::to_owned).into();
    let o = inv.options;
    if let Some(session) = inv.session_id {
        if session.is_empty() || session.starts_with('-') {
            return Err(format!("invalid session id {session:?}"));
        }
        args.extend(["--resume".to_owned(), session.to_owned()]);
    }
    if let Some(model) = inv.model {
        if model.is_empty() || model.starts_with('-') {
            return Err(format!("invalid model {model:?}"));
        }
        args.extend(["--model".to_owned(), model.to_owned()]);
    }
    if !o.allowed_tools.is_empty() {
        args.extend(["--allowedTools".to_owned(), o.allowed_tools.join(",")]);
    }
    if !o.disallowed_tools.is_empty() {
        args.extend(["--disallowedTools".to_owned(), o.disallowed_tools.join(",")]);
    }
    if let Some(mode) = &o.permission_mode {
        args.extend(["--permission-mode".to_owned(), mode.clone()]);
    }
    if o.include_partial_messages {
        args.push("--include-partial-messages".to_owned());
    }
    if let Some(turns) = o.max_turns {
        args.extend(["--max-turns".to_owned(), turns.to_string()]);
    }
    if let Some(prompt) = &o.append_system_prompt {
        args.extend(["--append-system-prompt".to_owned(), prompt.clone()]);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(options: &str, session: Option<&str>, model: Option<&str>) -> Vec<String> {
        let options = Options::parse(options).unwrap();
        args(Invocation {
            session_id: session,
            model,
            options: &options,
        })
        .unwrap()
    }

    #[test]
    fn no_options_give_the_bidirectional_mode_alone() {
        assert_eq!(build("{}", None, None), BASE_ARGS);
    }

    #[test]
    fn every_option_maps_to_its_flag() {
        let args = build(
            r#"{"allowed_tools":["Bash","Read"],"disallowed_tools":["WebFetch"],
                "permission_mode":"acceptEdits","include_partial_messages":true,
                "max_turns":3,"append_system_prompt":"be brief"}"#,
            Some("abc-123"),
            Some("claude-sonnet-4-5"),
        );
        let joined = args.join(" ");
        for part in [
            "--resume abc-123",
            "--model claude-sonnet-4-5",
            "--allowedTools Bash,Read",
            "--disallowedTools WebFetch",
            "--permission-mode acceptEdits",
            "--include-partial-messages",
            "--max-turns 3",
            "--append-system-prompt be brief",
        ] {
            assert!(joined.contains(part), "{part} missing from {joined}");
        }
        assert_eq!(args[..BASE_ARGS.len()], BASE_ARGS);
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(Options::parse(r#"{"allowedTools":["Bash"]}"#).is_err());
        assert!(Options::parse(r#"{"permission_mode":"--dangerously"}"#).is_err());
        assert!(Options::parse("[1]").is_err());
        assert_eq!(Options::parse("").unwrap(), Options::default());
        let options = Options::default();
        let inv = |session| Invocation {
            session_id: session,
            model: None,
            options: &options,
        };
        assert!(args(inv(Some("--fork"))).is_err());
        assert!(args(inv(Some(""))).is_err());
    }
}
