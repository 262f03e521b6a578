//! What `rdev exec`, `rdev run` and `rdev logs` share about printing a command: streamed
//! text printed once, `--option KEY=VALUE`, and the exit code a finished command gives.

use anyhow::bail;

use crate::domain::ResultStatus;

/// Exit code of a completed request.
pub const EXIT_COMPLETED: i32 = 0;
/// Exit code of a failed request without an exit code of its own.
pub const EXIT_FAILED: i32 = 1;
/// Exit code of a cancelled request (128 + SIGINT, as shells report Ctrl-C).
pub const EXIT_CANCELLED: i32 = 130;

/// The exit code for how a request ended: 0 completed, 130 cancelled, and for a failure the
/// provider's own exit code when it has a usable one (a shell's `exit 3` gives 3), else 1.
pub fn exit_code_for(status: ResultStatus, provider_code: Option<i32>) -> i32 {
    match status {
        ResultStatus::Completed => EXIT_COMPLETED,
        ResultStatus::Cancelled => EXIT_CANCELLED,
        ResultStatus::Failed => provider_code
            .filter(|code| (1..=255).contains(code))
            .unwrap_or(EXIT_FAILED),
    }
}

/// The flags `rdev run` and `rdev exec` share about what the provider is asked: model,
/// session and provider options.
#[derive(Debug, Default, clap::Args)]
pub struct PromptArgs {
    /// Model, for providers that choose one.
    #[arg(long)]
    pub model: Option<String>,
    /// Continue this provider session (the id a finished command prints).
    #[arg(long)]
    pub session: Option<String>,
    /// Provider option KEY=VALUE (repeatable); VALUE is JSON when it parses, else a string.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
}

impl PromptArgs {
    /// The `--option`s as a map; the first malformed one is the error.
    pub fn option_map(&self) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        self.options.iter().map(|o| parse_option(o)).collect()
    }
}

/// Parses one `--option KEY=VALUE`: VALUE is JSON when it parses, else a string.
pub fn parse_option(option: &str) -> anyhow::Result<(String, serde_json::Value)> {
    let Some((key, value)) = option.split_once('=') else {
        bail!("--option {option:?} is not KEY=VALUE");
    };
    if key.is_empty() {
        bail!("--option {option:?} has no KEY");
    }
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

/// Providers stream a message as deltas (`partial`) and then send it whole; a terminal must
/// show it once. This turns each message event into the text still to print.
#[derive(Debug, Default)]
pub struct StreamedText {
    /// Printed before a message's first text (e.g. `thinking: `).
    prefix: &'static str,
    /// The deltas printed since the last whole message.
    pending: String,
}

impl StreamedText {
    /// A joiner whose messages start with `prefix`.
    pub fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            pending: String::new(),
        }
    }

    /// The text to print for a message event. A delta is printed as it is; the whole
    /// message then only completes what the deltas did not show and ends the line. A whole
    /// message that does not continue the deltas is printed on a line of its own.
    pub fn message(&mut self, text: &str, partial: bool) -> String {
        let started = !self.pending.is_empty();
        if partial {
            let prefix = if started { "" } else { self.prefix };
            self.pending.push_str(text);
            return format!("{prefix}{text}");
        }
        let pending = std::mem::take(&mut self.pending);
        let mut out = match text.strip_prefix(pending.as_str()) {
            Some(rest) if started => rest.to_owned(),
            _ if started && !pending.ends_with('\n') => format!("\n{}{text}", self.prefix),
            _ => format!("{}{text}", self.prefix),
        };
        if !text.ends_with('\n') {
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(events: &[(&str, bool)]) -> String {
        let mut joiner = StreamedText::default();
        events
            .iter()
            .map(|(text, partial)| joiner.message(text, *partial))
            .collect()
    }

    #[test]
    fn deltas_then_the_whole_message_print_it_once() {
        assert_eq!(
            printed(&[("Hel", true), ("lo there", true), ("Hello there", false)]),
            "Hello there\n"
        );
        assert_eq!(printed(&[("Hello", false)]), "Hello\n");
        assert_eq!(
            printed(&[("a\n", true), ("a\n", false), ("b", false)]),
            "a\nb\n"
        );
    }

    #[test]
    fn a_whole_message_longer_than_its_deltas_completes_them() {
        assert_eq!(printed(&[("Hel", true), ("Hello!", false)]), "Hello!\n");
    }

    #[test]
    fn a_different_whole_message_gets_its_own_line() {
        assert_eq!(printed(&[("abc", true), ("xyz", false)]), "abc\nxyz\n");
    }

    #[test]
    fn the_prefix_starts_each_message_once() {
        let mut joiner = StreamedText::new("thinking: ");
        assert_eq!(joiner.message("a", true), "thinking: a");
        assert_eq!(joiner.message("b", true), "b");
        assert_eq!(joiner.message("ab", false), "\n");
        assert_eq!(joiner.message("c", false), "thinking: c\n");
    }

    #[test]
    fn exit_codes_follow_the_provider_when_it_failed_with_one() {
        assert_eq!(exit_code_for(ResultStatus::Completed, Some(0)), 0);
        assert_eq!(exit_code_for(ResultStatus::Failed, Some(3)), 3);
        assert_eq!(exit_code_for(ResultStatus::Failed, None), 1);
        assert_eq!(exit_code_for(ResultStatus::Failed, Some(0)), 1);
        assert_eq!(exit_code_for(ResultStatus::Failed, Some(-9)), 1);
        assert_eq!(exit_code_for(ResultStatus::Cancelled, Some(3)), 130);
    }

    #[test]
    fn options_are_key_equals_json_or_string() {
        assert_eq!(
            parse_option("n=3").unwrap(),
            ("n".to_owned(), serde_json::json!(3))
        );
        assert_eq!(
            parse_option("mode=plan").unwrap(),
            ("mode".to_owned(), serde_json::json!("plan"))
        );
        assert!(parse_option("novalue").is_err());
        assert!(parse_option("=1").is_err());
    }
}
