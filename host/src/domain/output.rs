//! Bounds on what one command may store: the size of each event, the total of its events and
//! the size of its result. A provider (or the program it runs) decides how much it prints;
//! without these bounds one `yes` fills the database, one huge event or result is copied into
//! every replay, webhook and list answer, and the server's memory grows with it.
//!
//! Sizes are counted as stored: the bytes of the JSON the event log, the command record and
//! every reader get. Over a limit the output is cut (never dropped without a trace: a
//! `warning` event says what was cut, with counts) and the command goes on or fails, as
//! [`OnOutputLimit`] says.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::command::CommandStatus;
use super::event::AgentEvent;
use super::queue::Outcome;
use super::result::AgentResult;

/// Largest event by default: the longest line the host's `exec` import hands a provider
/// whole (`LINE_CAP`), so no line a provider read in one piece is cut; a shell's output
/// chunks (64 KiB) never come near it.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// Largest total of one command's events by default: many times the longest build or test
/// log, small enough that a runaway `yes` stops costing storage within a second or two.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 << 20;

/// Largest result by default (its texts and details together): an agent's final answer is a
/// few KiB, and 1 MiB is also the largest prompt a submission may carry.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 1 << 20;

/// Smallest accepted limit: an event's envelope and a useful piece of text must fit.
pub const MIN_LIMIT_BYTES: usize = 1024;

/// Room kept for an event's JSON around its texts (type tag, field names, quotes) when it is
/// cut; an event whose envelope alone is larger (thousands of tool names) is dropped instead.
const ENVELOPE_BYTES: usize = 256;

/// What happens to a command whose output or result goes over a limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOutputLimit {
    /// Cut what is over, say so in a `warning` event and let the command go on.
    #[default]
    Truncate,
    /// Cut what is over, say so, and stop the command: it ends `failed`.
    Fail,
}

impl fmt::Display for OnOutputLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncate => "truncate",
            Self::Fail => "fail",
        })
    }
}

/// A limit setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputLimitError {
    #[error("on_output_limit must be `truncate` or `fail`, not {0:?}")]
    UnknownPolicy(String),
    #[error("{setting} must be at least {MIN_LIMIT_BYTES} bytes, not {value}")]
    TooSmall { setting: &'static str, value: u64 },
}

impl FromStr for OnOutputLimit {
    type Err = OutputLimitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "truncate" => Ok(Self::Truncate),
            "fail" => Ok(Self::Fail),
            other => Err(OutputLimitError::UnknownPolicy(other.to_owned())),
        }
    }
}

/// The three bounds and what to do beyond them; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Largest stored event, in bytes of its JSON.
    pub max_event_bytes: usize,
    /// Largest total of one command's stored events.
    pub max_output_bytes: u64,
    /// Largest result: its session id, error, final text and details together.
    pub max_result_bytes: usize,
    pub on_limit: OnOutputLimit,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            on_limit: OnOutputLimit::Truncate,
        }
    }
}

impl OutputLimits {
    /// Refuses limits too small to hold anything useful.
    pub fn check(&self) -> Result<(), OutputLimitError> {
        let settings = [
            ("max_event_bytes", self.max_event_bytes as u64),
            ("max_output_bytes", self.max_output_bytes),
            ("max_result_bytes", self.max_result_bytes as u64),
        ];
        for (setting, value) in settings {
            if value < MIN_LIMIT_BYTES as u64 {
                return Err(OutputLimitError::TooSmall { setting, value });
            }
        }
        Ok(())
    }

    /// Cuts the result (and the outcome's error) to [`Self::max_result_bytes`]. Returns the
    /// `warning` event saying what was cut, if anything was; under
    /// [`OnOutputLimit::Fail`] a command that would have completed fails.
    pub fn limit_outcome(&self, outcome: &mut Outcome) -> Option<AgentEvent> {
        let max = self.max_result_bytes;
        let mut cuts = Vec::new();
        if let Some(result) = &mut outcome.result {
            cuts = cut_result(result, max);
        }
        if let Some(error) = &mut outcome.error {
            let before = json_text_len(error);
            if cut_text(error, max) < before {
                cuts.push(("error", before, json_text_len(error)));
            }
        }
        if cuts.is_empty() {
            return None;
        }
        let what: Vec<String> = cuts
            .iter()
            .map(|(field, before, after)| format!("{field} cut from {before} to {after} bytes"))
            .collect();
        let message = format!(
            "output limit: the result was over max_result_bytes ({max}): {}",
            what.join(", ")
        );
        if self.on_limit == OnOutputLimit::Fail && outcome.status == CommandStatus::Completed {
            outcome.status = CommandStatus::Failed;
            outcome.error = Some(format!("the result was over max_result_bytes ({max})"));
        }
        Some(AgentEvent::Warning { message })
    }
}

/// Cuts a result's texts and details, in that order of importance, to `max` bytes together;
/// each cut as (field, bytes before, bytes after).
fn cut_result(result: &mut AgentResult, max: usize) -> Vec<(&'static str, usize, usize)> {
    let mut budget = max;
    let mut cuts = Vec::new();
    let texts = [
        ("session_id", &mut result.session_id),
        ("error", &mut result.error),
        ("final_text", &mut result.final_text),
    ];
    for (field, text) in texts {
        if let Some(text) = text {
            let before = json_text_len(text);
            let kept = cut_text(text, budget);
            if kept < before {
                cuts.push((field, before, kept));
            }
            budget -= kept;
        }
    }
    if let Some(details) = &mut result.details {
        let before = json_size(details);
        if before > budget {
            // Cut as text: a prefix of a JSON document is no document.
            let mut text = details.to_string();
            cut_text(&mut text, budget.saturating_sub(2));
            *details = serde_json::Value::String(text);
            cuts.push(("details", before, json_size(details)));
        }
    }
    // Details with no room left are left out rather than kept as an empty text.
    if result.details.as_ref().and_then(|d| d.as_str()) == Some("") {
        result.details = None;
        if let Some(cut) = cuts.last_mut() {
            cut.2 = 0;
        }
    }
    cuts
}

/// What [`OutputGuard::admit`] decided about one event.
#[derive(Debug, Default, PartialEq)]
pub struct Admitted {
    /// The event to store, cut if it had to be; `None` when it is dropped.
    pub event: Option<AgentEvent>,
    /// A `warning` to store right after it: the command's output just reached its limit, or
    /// (under [`OnOutputLimit::Fail`]) the command is stopped.
    pub warning: Option<AgentEvent>,
    /// Under [`OnOutputLimit::Fail`], once: why the command must stop.
    pub stop: Option<String>,
}

/// Applies the event limits to one command's events, in order.
#[derive(Debug)]
pub struct OutputGuard {
    limits: OutputLimits,
    stored: u64,
    cut_events: u64,
    cut_bytes: u64,
    dropped_events: u64,
    dropped_bytes: u64,
    exhausted: bool,
    stopped: bool,
}

impl OutputGuard {
    pub fn new(limits: OutputLimits) -> Self {
        Self {
            limits,
            stored: 0,
            cut_events: 0,
            cut_bytes: 0,
            dropped_events: 0,
            dropped_bytes: 0,
            exhausted: false,
            stopped: false,
        }
    }

    /// Bytes of events admitted so far.
    pub fn stored_bytes(&self) -> u64 {
        self.stored
    }

    /// Cuts `event` to the per-event limit and to what is left of the command's total; once
    /// the total is reached every further event is dropped (and counted).
    pub fn admit(&mut self, mut event: AgentEvent) -> Admitted {
        let size = json_size(&event);
        if self.exhausted {
            self.dropped_events += 1;
            self.dropped_bytes += size as u64;
            return Admitted::default();
        }
        let mut reason = None;
        let mut kept = Some(size);
        let max_event = self.limits.max_event_bytes;
        if size > max_event {
            kept = cut_event(&mut event, max_event);
            self.cut_events += 1;
            self.cut_bytes += (size - kept.unwrap_or(0)) as u64;
            reason = Some(format!(
                "a {} event of {size} bytes was over max_event_bytes ({max_event})",
                event.kind()
            ));
        }
        let mut warning = None;
        let left = self.limits.max_output_bytes.saturating_sub(self.stored);
        if let Some(size) = kept
            && size as u64 > left
        {
            let max = self.limits.max_output_bytes;
            self.exhausted = true;
            // What is left is less than an event, so it fits in `usize`.
            let room = usize::try_from(left).unwrap_or(usize::MAX);
            kept = (room >= ENVELOPE_BYTES)
                .then(|| cut_event(&mut event, room))
                .flatten();
            self.dropped_events += u64::from(kept.is_none());
            self.dropped_bytes += (size - kept.unwrap_or(0)) as u64;
            warning = Some(AgentEvent::Warning {
                message: format!(
                    "output limit: this command's output reached max_output_bytes ({max}); \
                     further output is dropped"
                ),
            });
            reason.get_or_insert(format!("the output was over max_output_bytes ({max})"));
        }
        if kept.is_none() && !self.exhausted {
            self.dropped_events += 1;
        }
        self.stored += kept.unwrap_or(0) as u64;
        let stop = match (self.limits.on_limit, reason) {
            (OnOutputLimit::Fail, Some(reason)) if !self.stopped => {
                self.stopped = true;
                let reason = format!("output limit: {reason}");
                warning = Some(AgentEvent::Warning {
                    message: format!("{reason}; the command is stopped"),
                });
                Some(reason)
            }
            _ => None,
        };
        Admitted {
            event: kept.map(|_| event),
            warning,
            stop,
        }
    }

    /// The closing `warning` with the counts of what was cut and dropped, when anything was.
    pub fn summary(&self) -> Option<AgentEvent> {
        let mut parts = Vec::new();
        if self.cut_events > 0 {
            parts.push(format!(
                "{} event(s) cut to max_event_bytes ({}), {} bytes removed",
                self.cut_events, self.limits.max_event_bytes, self.cut_bytes
            ));
        }
        if self.exhausted {
            parts.push(format!(
                "{} event(s) dropped and {} bytes removed after max_output_bytes ({}) was reached",
                self.dropped_events, self.dropped_bytes, self.limits.max_output_bytes
            ));
        } else if self.dropped_events > 0 {
            parts.push(format!(
                "{} event(s) dropped whole (too large to cut)",
                self.dropped_events
            ));
        }
        (!parts.is_empty()).then(|| AgentEvent::Warning {
            message: format!(
                "output limits: {}; {} bytes of output stored",
                parts.join("; "),
                self.stored
            ),
        })
    }
}

/// Cuts `event` so that its JSON is at most `max` bytes; its new size, or `None` when even
/// its envelope is larger (the event must then be dropped).
fn cut_event(event: &mut AgentEvent, max: usize) -> Option<usize> {
    // JSON payloads become their text, so they can be cut like any text.
    if let AgentEvent::ToolUse { input: data, .. } | AgentEvent::Raw { data, .. } = event
        && json_size(data) > max
    {
        *data = serde_json::Value::String(data.to_string());
    }
    let mut budget = max.saturating_sub(ENVELOPE_BYTES);
    event.map_text(|text| budget -= cut_text(text, budget));
    let size = json_size(event);
    (size <= max).then_some(size)
}

/// Bytes `c` takes inside a JSON string.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Bytes `text` takes inside a JSON string (without its quotes).
fn json_text_len(text: &str) -> usize {
    text.chars().map(escaped_len).sum()
}

/// Cuts `text` at a character boundary so that it takes at most `budget` bytes inside a JSON
/// string; the bytes it takes then.
fn cut_text(text: &mut String, budget: usize) -> usize {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        let len = escaped_len(c);
        if used + len > budget {
            text.truncate(at);
            return used;
        }
        used += len;
    }
    used
}

/// Counts what is written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length of `value`'s JSON, without building it.
pub fn json_size<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and these types always serialize.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OutputStream, ResultStatus};

    fn limits(event: usize, output: u64, on_limit: OnOutputLimit) -> OutputLimits {
        OutputLimits {
            max_event_bytes: event,
            max_output_bytes: output,
            max_result_bytes: 2048,
            on_limit,
        }
    }

    fn output(text: &str) -> AgentEvent {
        AgentEvent::Output {
            stream: OutputStream::Stdout,
            text: text.into(),
        }
    }

    #[test]
    fn a_huge_event_is_cut_to_the_event_limit_at_a_char_boundary() {
        let mut guard = OutputGuard::new(limits(4096, 1 << 20, OnOutputLimit::Truncate));
        let admitted = guard.admit(output(&"é\"".repeat(10_000)));
        let event = admitted.event.expect("kept, cut");
        let size = json_size(&event);
        assert!(size <= 4096 && size > 3000, "{size}");
        assert_eq!(admitted.stop, None, "truncate goes on");
        assert_eq!(admitted.warning, None, "the total is not reached");
        let small = guard.admit(output("fine"));
        assert_eq!(small.event, Some(output("fine")));
        let summary = guard.summary().expect("a cut is summed up");
        assert!(
            matches!(&summary, AgentEvent::Warning { message } if message.contains("1 event(s) cut")),
            "{summary:?}"
        );
    }

    #[test]
    fn the_total_cuts_the_crossing_event_then_drops_the_rest_with_one_warning() {
        let mut guard = OutputGuard::new(limits(4096, 10_000, OnOutputLimit::Truncate));
        let chunk = "y\n".repeat(1500);
        let mut warnings = 0;
        let mut kept = 0;
        for _ in 0..20 {
            let admitted = guard.admit(output(&chunk));
            warnings += usize::from(admitted.warning.is_some());
            kept += admitted.event.map_or(0, |e| json_size(&e));
        }
        assert_eq!(warnings, 1);
        assert!(kept <= 10_000 && kept > 9_000, "{kept}");
        assert_eq!(guard.stored_bytes(), kept as u64);
        let Some(AgentEvent::Warning { message }) = guard.summary() else {
            panic!("a summary")
        };
        assert!(message.contains("dropped"), "{message}");
    }

    #[test]
    fn fail_asks_to_stop_once() {
        let mut guard = OutputGuard::new(limits(1024, 4096, OnOutputLimit::Fail));
        let first = guard.admit(output(&"x".repeat(5000)));
        assert!(
            first
                .stop
                .as_deref()
                .is_some_and(|r| r.contains("max_event_bytes"))
        );
        assert!(
            matches!(&first.warning, Some(AgentEvent::Warning { message }) if message.ends_with("the command is stopped")),
            "{:?}",
            first.warning
        );
        let second = guard.admit(output(&"x".repeat(5000)));
        assert_eq!(second.stop, None);
    }

    #[test]
    fn json_payloads_are_cut_as_text() {
        let mut guard = OutputGuard::new(limits(2048, 1 << 20, OnOutputLimit::Truncate));
        let data = serde_json::json!({"items": vec![123_456_789; 10_000]});
        let admitted = guard.admit(AgentEvent::Raw {
            kind: "dump".into(),
            data,
        });
        let Some(AgentEvent::Raw { data, .. }) = admitted.event else {
            panic!("kept")
        };
        assert!(
            data.as_str()
                .is_some_and(|t| t.starts_with("{\"items\":[123456789,"))
        );
    }

    #[test]
    fn a_result_over_its_limit_is_cut_and_fails_only_under_fail() {
        let mut result = AgentResult::new(ResultStatus::Completed);
        result.final_text = Some("z".repeat(5000));
        result.details = Some(serde_json::json!({"blob": "d".repeat(5000)}));
        let outcome = Outcome {
            status: CommandStatus::Completed,
            result: Some(result),
            error: None,
            usage: Default::default(),
        };
        let mut truncated = outcome.clone();
        let warning = limits(4096, 1 << 20, OnOutputLimit::Truncate).limit_outcome(&mut truncated);
        assert!(
            matches!(&warning, Some(AgentEvent::Warning { message }) if message.contains("final_text cut from 5000 to 2048")),
            "{warning:?}"
        );
        assert_eq!(truncated.status, CommandStatus::Completed);
        let result = truncated.result.expect("result");
        assert!(json_size(&result) < 2048 + 200, "{}", json_size(&result));
        let mut failed = outcome;
        limits(4096, 1 << 20, OnOutputLimit::Fail).limit_outcome(&mut failed);
        assert_eq!(failed.status, CommandStatus::Failed);
        assert!(failed.error.is_some_and(|e| e.contains("max_result_bytes")));
    }

    #[test]
    fn limits_are_checked_and_the_policy_parses() {
        assert!(OutputLimits::default().check().is_ok());
        let tiny = OutputLimits {
            max_event_bytes: 10,
            ..OutputLimits::default()
        };
        assert!(tiny.check().is_err());
        assert_eq!("fail".parse(), Ok(OnOutputLimit::Fail));
        assert!("drop".parse::<OnOutputLimit>().is_err());
    }
}
