//! Removing credential values from what providers print, before it is stored or streamed.

use super::event::AgentEvent;

/// What replaces a credential value.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not redacted: replacing every "a" would destroy the output
/// and protect nothing.
pub const MIN_REDACTED_LEN: usize = 4;

/// Replaces known credential values in events. Its `Debug` shows only how many values it
/// holds.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.values.len())
    }
}

impl Redactor {
    /// Longest values first, so a value containing another is replaced whole.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_REDACTED_LEN)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self { values }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Redacts one string in place.
    pub fn redact_str(&self, text: &mut String) {
        for value in &self.values {
            if text.contains(value.as_str()) {
                *text = text.replace(value.as_str(), REDACTED);
            }
        }
    }

    /// Redacts every text an event carries.
    pub fn redact(&self, event: &mut AgentEvent) {
        if !self.values.is_empty() {
            event.map_text(|text| self.redact_str(text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_replaced_and_debug_hides_them() {
        let redactor = Redactor::new(["sk-secret-1".to_owned(), "ab".to_owned()]);
        let mut event = AgentEvent::Message {
            text: "key=sk-secret-1 ab".into(),
            partial: false,
        };
        redactor.redact(&mut event);
        assert_eq!(
            event,
            AgentEvent::Message {
                text: "key=[redacted] ab".into(),
                partial: false
            }
        );
        assert!(!format!("{redactor:?}").contains("sk-secret"));
    }
}
