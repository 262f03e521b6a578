//! `log`: guest log lines become host `tracing` events tagged with the plugin's name.
//!
//! A guest is untrusted, and the server log is where operators look first: each execution's
//! lines pass a [`LogGate`] that limits how many arrive (a burst, then a steady rate, and a
//! total per execution) and how many bytes, and escapes line breaks and other control
//! characters so that a message cannot start a line of its own that looks like the
//! server's; the values of the plugin's granted credentials (and their common encodings) are
//! redacted. What the gate drops is counted and reported once, when the execution ends.

use std::time::Instant;

use crate::domain::Redactor;
use crate::runtime::abi::latest::rdev::provider::log::{Host, Level};
use crate::runtime::state::{ExecCtx, HostState};

/// Longer messages are cut so a chatty guest cannot flood the host's log with one call.
const MAX_MESSAGE: usize = 4096;
/// Lines a guest may write at once before the steady rate applies.
pub const LOG_BURST: u32 = 100;
/// Lines per second a guest may keep writing after a burst.
pub const LOG_LINES_PER_SEC: u32 = 20;
/// Lines one execution may write in all.
pub const LOG_MAX_LINES: u32 = 2000;
/// Bytes (after escaping) one execution may write in all.
pub const LOG_MAX_BYTES: usize = 512 * 1024;

/// One execution's allowance of guest log lines, with the count of what it refused.
#[derive(Debug)]
pub struct LogGate {
    plugin: String,
    /// The values of the plugin's granted credentials, read at its first line.
    redactor: Option<Redactor>,
    tokens: f64,
    refilled: Instant,
    lines: u32,
    bytes: usize,
    dropped: u64,
}

impl LogGate {
    /// A full burst for `plugin`'s execution.
    pub fn new(plugin: impl Into<String>) -> Self {
        Self {
            plugin: plugin.into(),
            redactor: None,
            tokens: f64::from(LOG_BURST),
            refilled: Instant::now(),
            lines: 0,
            bytes: 0,
            dropped: 0,
        }
    }

    /// The message as it may be logged now, or `None` when a limit refuses it (counted).
    pub fn admit(&mut self, message: &str, now: Instant) -> Option<String> {
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * f64::from(LOG_LINES_PER_SEC))
            .min(f64::from(LOG_BURST));
        let mut line = truncate(message);
        if let Some(redactor) = &self.redactor {
            redactor.redact_str(&mut line);
        }
        let line = escape(&line);
        if self.tokens < 1.0
            || self.lines >= LOG_MAX_LINES
            || self.bytes + line.len() > LOG_MAX_BYTES
        {
            self.dropped += 1;
            return None;
        }
        self.tokens -= 1.0;
        self.lines += 1;
        self.bytes += line.len();
        Some(line)
    }

    /// Redacts the lines from now on with `redactor`.
    pub fn set_redactor(&mut self, redactor: Redactor) {
        self.redactor = Some(redactor);
    }

    /// Lines refused so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Drop for LogGate {
    /// The one warning about what this execution's limits refused.
    fn drop(&mut self) {
        if self.dropped > 0 {
            tracing::warn!(
                plugin = %self.plugin,
                dropped = self.dropped,
                "guest log lines dropped: over {LOG_BURST} at once, {LOG_LINES_PER_SEC}/s, \
                 {LOG_MAX_LINES} lines or {LOG_MAX_BYTES} bytes per execution"
            );
        }
    }
}

/// At most [`MAX_MESSAGE`] bytes, cut at a character boundary and marked.
fn truncate(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let mut cut = MAX_MESSAGE;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &message[..cut])
}

/// Control characters (line breaks, escape sequences, NUL) and Unicode line separators
/// written as Rust-style escapes, so a message stays on its one line and cannot restyle or
/// rewrite a terminal.
pub fn escape(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.extend(c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    out
}

/// A redactor of the credentials `exec`'s plugin is granted: the only values its processes
/// (and so the guest) can see. `None` when one cannot be read: the line is then dropped.
async fn granted_redactor(exec: &ExecCtx) -> Option<Redactor> {
    let mut values = Vec::new();
    for name in exec.manifest.grants.credentials() {
        match exec.secrets.resolve(name).await {
            Ok(Some(value)) => values.push(value.expose().to_owned()),
            Ok(None) => {}
            Err(_) => return None,
        }
    }
    Some(Redactor::new(values))
}

impl Host for HostState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if self.log.redactor.is_none() {
            match granted_redactor(&self.exec).await {
                Some(redactor) => self.log.set_redactor(redactor),
                None => {
                    self.log.dropped += 1;
                    return Ok(());
                }
            }
        }
        let Some(message) = self.log.admit(&message, Instant::now()) else {
            return Ok(());
        };
        let plugin = self.exec.plugin.as_str();
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// How long a guest waits for one more line once its burst is spent.
    const LOG_REFILL: Duration = Duration::from_millis(1000 / LOG_LINES_PER_SEC as u64);

    #[test]
    fn line_breaks_and_escape_sequences_cannot_forge_a_line() {
        let forged = "ok\n2026-01-01T00:00:00Z  INFO rdev: admin token\r\x1b[2K\u{2028}\\n";
        let shown = escape(forged);
        assert!(
            !shown.chars().any(|c| c.is_control() || c == '\u{2028}'),
            "{shown}"
        );
        assert_eq!(
            shown,
            "ok\\n2026-01-01T00:00:00Z  INFO rdev: admin token\\r\\u{1b}[2K\\u{2028}\\\\n"
        );
    }

    #[test]
    fn granted_values_are_redacted_from_lines() {
        let mut gate = LogGate::new("p");
        gate.set_redactor(Redactor::new(["sk-live-0123456789".to_owned()]));
        let line = gate.admit("key sk-live-0123456789", Instant::now());
        assert_eq!(line.as_deref(), Some("key [redacted]"));
    }

    #[test]
    fn a_flood_is_cut_to_the_burst_then_the_rate_then_the_total() {
        let mut gate = LogGate::new("p");
        let start = Instant::now();
        let admitted = (0..1000)
            .filter(|i| gate.admit(&format!("line {i}"), start).is_some())
            .count();
        assert_eq!(admitted, LOG_BURST as usize);
        assert_eq!(gate.dropped(), 1000 - u64::from(LOG_BURST));
        // The rate refills: one more line per refill interval.
        assert!(gate.admit("later", start + LOG_REFILL).is_some());
        assert!(gate.admit("too soon", start + LOG_REFILL).is_none());
        // The total holds whatever the pace.
        let mut gate = LogGate::new("p");
        let mut at = start;
        let mut admitted = 0;
        for _ in 0..(LOG_MAX_LINES + 50) {
            at += Duration::from_secs(1);
            admitted += u32::from(gate.admit("x", at).is_some());
        }
        assert_eq!(admitted, LOG_MAX_LINES);
        // And so do the bytes.
        let mut gate = LogGate::new("p");
        let big = "y".repeat(MAX_MESSAGE * 2);
        let mut bytes = 0;
        for _ in 0..LOG_MAX_LINES {
            at += Duration::from_secs(1);
            bytes += gate.admit(&big, at).map_or(0, |l| l.len());
        }
        assert!(
            bytes <= LOG_MAX_BYTES && bytes > LOG_MAX_BYTES - MAX_MESSAGE - 3,
            "{bytes}"
        );
    }
}
