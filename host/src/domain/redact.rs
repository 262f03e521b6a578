//! Removing credential values from what providers print or return, before it is stored,
//! streamed, audited, sent to a webhook or logged.
//!
//! A substring redactor catches what it knows the shape of: each value as it is, and the
//! common encodings of it (base64 and base64url, padded or not and at any byte alignment
//! inside a longer encoded text, hex in either case, URL-encoding). It cannot catch a value
//! transformed any other way (reversed, split by other characters, compressed, encrypted,
//! encoded twice, spelled out): a provider that runs code with a credential can always
//! exfiltrate it, and redaction only keeps honest output from spreading it.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use super::event::{AgentEvent, OutputStream};
use super::result::AgentResult;

/// What replaces a credential value.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not redacted: replacing every "a" would destroy the output
/// and protect nothing.
pub const MIN_REDACTED_LEN: usize = 4;

/// Values at least this long are also looked for inside longer base64 texts, where only
/// the characters that depend on the value alone can be matched (about 4/3 of its length
/// minus two); shorter ones would leave too few to match without false positives.
pub const MIN_EMBEDDED_BASE64_LEN: usize = 12;

/// Replaces known credential values, and the encodings of them, in texts. Its `Debug` shows
/// only how many values it holds.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Every form looked for, longest first, so a form containing another is replaced whole.
    forms: Vec<String>,
    values: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.values)
    }
}

/// The forms a value may take in output: itself and its common encodings.
fn forms(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    let mut forms = vec![
        value.to_owned(),
        hex::encode(bytes),
        hex::encode_upper(bytes),
        url::form_urlencoded::byte_serialize(bytes).collect(),
    ];
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        forms.push(engine.encode(bytes));
    }
    if bytes.len() >= MIN_EMBEDDED_BASE64_LEN {
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            forms.extend((0..3).map(|offset| embedded_base64(engine, bytes, offset)));
        }
    }
    forms
}

/// The characters of the base64 of `offset` unknown bytes, then `bytes`, then more unknown
/// bytes, that depend on `bytes` alone: how the value shows inside a longer encoded text.
fn embedded_base64(engine: &impl Engine, bytes: &[u8], offset: usize) -> String {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(bytes);
    let encoded = engine.encode(&padded);
    let first = (offset * 8).div_ceil(6);
    let last = (padded.len() * 8) / 6;
    encoded.get(first..last).unwrap_or_default().to_owned()
}

impl Redactor {
    /// A redactor for `values`; those shorter than [`MIN_REDACTED_LEN`] are ignored.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let values: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_REDACTED_LEN)
            .collect();
        let mut forms: Vec<String> = values
            .iter()
            .flat_map(|v| forms(v))
            .filter(|f| f.len() >= MIN_REDACTED_LEN)
            .collect();
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        Self {
            forms,
            values: values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// Redacts one string in place.
    pub fn redact_str(&self, text: &mut String) {
        for form in &self.forms {
            if text.contains(form.as_str()) {
                *text = text.replace(form.as_str(), REDACTED);
            }
        }
    }

    /// Redacts every string inside a JSON value (keys stay: they are the provider's schema).
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => self.redact_str(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.redact_json(v)),
            _ => {}
        }
    }

    /// Redacts every text an event carries.
    pub fn redact(&self, event: &mut AgentEvent) {
        if !self.forms.is_empty() {
            event.map_text(|text| self.redact_str(text));
        }
    }

    /// Redacts what a provider returned: its texts, session id and details.
    pub fn redact_result(&self, result: &mut AgentResult) {
        if self.forms.is_empty() {
            return;
        }
        for text in [
            &mut result.session_id,
            &mut result.final_text,
            &mut result.error,
        ]
        .into_iter()
        .flatten()
        {
            self.redact_str(text);
        }
        if let Some(details) = &mut result.details {
            self.redact_json(details);
        }
    }

    /// The length of the longest end of `text` that could be the start of a form: what must
    /// wait for the next piece of a stream before it can be told apart from a credential.
    fn unfinished_tail(&self, text: &str) -> usize {
        let mut longest = 0;
        for form in &self.forms {
            let most = (form.len() - 1).min(text.len());
            for len in (longest + 1..=most).rev() {
                if form.is_char_boundary(len)
                    && text.is_char_boundary(text.len() - len)
                    && text.ends_with(&form[..len])
                {
                    longest = len;
                    break;
                }
            }
        }
        longest
    }
}

/// Which pieces of a stream continue each other: a provider's stdout, its stderr, and its
/// partial message and thinking deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Output(OutputStream),
    Message,
    Thinking,
}

/// Redacts one command's events in order, also catching a value split across events of one
/// stream: the end of a piece that could begin a value is held back and put before the
/// next piece of the same stream (or sent alone by [`StreamRedactor::finish`]).
#[derive(Debug, Default)]
pub struct StreamRedactor {
    redactor: Redactor,
    /// At most one entry per piece.
    held: Vec<(Piece, String)>,
}

impl StreamRedactor {
    pub fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            held: Vec::new(),
        }
    }

    /// The event redacted, or `None` when all of its text is held back for now.
    pub fn push(&mut self, mut event: AgentEvent) -> Option<AgentEvent> {
        let (piece, text) = match &mut event {
            AgentEvent::Output { stream, text } => (Piece::Output(*stream), text),
            AgentEvent::Message {
                text,
                partial: true,
            } => (Piece::Message, text),
            AgentEvent::Thinking {
                text,
                partial: true,
            } => (Piece::Thinking, text),
            _ => {
                self.redactor.redact(&mut event);
                return Some(event);
            }
        };
        if let Some(at) = self.held.iter().position(|(p, _)| *p == piece) {
            text.insert_str(0, &self.held.swap_remove(at).1);
        }
        self.redactor.redact_str(text);
        let keep = self.redactor.unfinished_tail(text);
        if keep > 0 {
            let tail = text.split_off(text.len() - keep);
            self.held.push((piece, tail));
        }
        (!text.is_empty()).then_some(event)
    }

    /// What is still held back, as events of their streams: the stream has ended.
    pub fn finish(&mut self) -> Vec<AgentEvent> {
        std::mem::take(&mut self.held)
            .into_iter()
            .map(|(piece, text)| match piece {
                Piece::Output(stream) => AgentEvent::Output { stream, text },
                Piece::Message => AgentEvent::Message {
                    text,
                    partial: true,
                },
                Piece::Thinking => AgentEvent::Thinking {
                    text,
                    partial: true,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sk-live-0123456789abcdef";

    fn redacted(redactor: &Redactor, text: &str) -> String {
        let mut text = text.to_owned();
        redactor.redact_str(&mut text);
        text
    }

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

    #[test]
    fn common_encodings_are_caught_alone_and_inside_longer_texts() {
        let redactor = Redactor::new([SECRET.to_owned(), "p@ss word/+=".to_owned()]);
        for prefix in ["", "a", "ab", "abc"] {
            let framed = format!("{prefix}{SECRET}:tail");
            for encoded in [
                STANDARD.encode(&framed),
                URL_SAFE_NO_PAD.encode(&framed),
                hex::encode(&framed),
                hex::encode_upper(&framed),
            ] {
                let shown = redacted(&redactor, &encoded);
                assert!(shown.contains(REDACTED), "{prefix:?} {encoded} -> {shown}");
            }
        }
        let url = redacted(&redactor, "u=p%40ss+word%2F%2B%3D&x=1");
        assert_eq!(url, "u=[redacted]&x=1");
        assert_eq!(redacted(&redactor, "unrelated text"), "unrelated text");
    }

    #[test]
    fn results_are_redacted_in_every_text_and_in_details() {
        let redactor = Redactor::new([SECRET.to_owned()]);
        let mut result = AgentResult::failed(format!("bad key {SECRET}"));
        result.final_text = Some(STANDARD.encode(SECRET));
        result.session_id = Some(SECRET.to_owned());
        result.details = Some(serde_json::json!({"denied": [{"input": SECRET}]}));
        redactor.redact_result(&mut result);
        let shown = serde_json::to_string(&result).expect("serializes");
        assert!(!shown.contains("sk-live"), "{shown}");
        assert!(!shown.contains(&STANDARD.encode(SECRET)), "{shown}");
    }

    #[test]
    fn a_value_split_across_events_of_one_stream_is_caught() {
        let mut stream = StreamRedactor::new(Redactor::new([SECRET.to_owned()]));
        let output = |text: &str| AgentEvent::Output {
            stream: OutputStream::Stdout,
            text: text.into(),
        };
        let mut shown = String::new();
        let mut take = |event: Option<AgentEvent>| {
            if let Some(AgentEvent::Output {
                stream: OutputStream::Stdout,
                text,
            }) = event
            {
                shown.push_str(&text);
            }
        };
        take(stream.push(output("token: sk-li")));
        // Another stream in between does not release the held piece.
        let stderr = stream.push(AgentEvent::Output {
            stream: OutputStream::Stderr,
            text: "sk-live-".into(),
        });
        assert_eq!(stderr, None);
        take(stream.push(output("ve-0123")));
        take(stream.push(output("456789abcdef done sk")));
        for event in stream.finish() {
            take(Some(event));
        }
        assert_eq!(shown, "token: [redacted] done sk");
    }
}
