//! An incremental server-sent-events parser (the WHATWG `text/event-stream` rules): bytes
//! go in as they arrive, complete events come out.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Feeds on arbitrary byte chunks; a field split across chunks is handled.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
    event: Option<String>,
    id: Option<String>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    skip_lf: bool,
}

/// A line longer than this without a terminator is dropped, so a misbehaving server
/// cannot make the host buffer without limit.
const MAX_LINE: usize = 8 * 1024 * 1024;

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes and returns the events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &b in bytes {
            if self.skip_lf {
                self.skip_lf = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.skip_lf = b == b'\r';
                    let line = std::mem::take(&mut self.buf);
                    if let Some(event) = self.line(&line) {
                        events.push(event);
                    }
                }
                _ if self.buf.len() < MAX_LINE => self.buf.push(b),
                _ => {}
            }
        }
        events
    }

    /// The stream ended; an event without its closing blank line is discarded, as the
    /// specification requires.
    pub fn finish(&mut self) {
        *self = Self::default();
    }

    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            let id = self.id.take();
            return self.data.take().map(|mut data| {
                data.pop();
                SseEvent { id, event, data }
            });
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.find(':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&line[..], ""),
        };
        match field {
            "data" => {
                let data = self.data.get_or_insert_with(String::new);
                data.push_str(value);
                data.push('\n');
            }
            "event" => self.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_across_chunks() {
        let mut p = SseParser::new();
        assert!(p.feed(b"event: mess").is_empty());
        let events = p.feed(b"age\r\ndata: hello\r\nid: 7\r\n\r\ndata: x\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    id: Some("7".into()),
                    event: Some("message".into()),
                    data: "hello".into()
                },
                SseEvent {
                    id: None,
                    event: None,
                    data: "x".into()
                },
            ]
        );
    }

    #[test]
    fn multi_line_data_and_comments() {
        let mut p = SseParser::new();
        let events = p.feed(b": keep-alive\ndata: a\ndata: b\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a\nb");
    }

    #[test]
    fn a_blank_line_without_data_dispatches_nothing() {
        let mut p = SseParser::new();
        assert!(p.feed(b"event: ping\n\n").is_empty());
        let events = p.feed(b"data:\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "");
        assert_eq!(events[0].event, None);
    }

    #[test]
    fn lone_carriage_returns_end_lines() {
        let mut p = SseParser::new();
        let events = p.feed(b"data: one\r\rdata: two\r");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "one");
        let events = p.feed(b"\n\r\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "two");
    }
}
