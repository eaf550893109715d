//! Server-sent events, as the fal client reads them (eventsource-parser 1.1.2 rules, fal-api.md §9),
//! with one deliberate fix: UTF-8 is decoded across chunk boundaries.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

/// An incremental parser: feed it chunks of bytes as they arrive, take the events it completes.
/// Lines are split on bytes and decoded when they end, so a character split between two chunks
/// survives (the fal client decodes each chunk on its own and corrupts it).
#[derive(Debug, Default)]
pub struct SseParser {
    /// The bytes of the line being read.
    line: Vec<u8>,
    /// A line has ended already (a byte-order mark can only start the first).
    started: bool,
    /// The last byte was `\r`: a `\n` right after it ends no new line.
    after_cr: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
    retry: Option<u64>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last `retry:` value seen (reported, not acted on: the fal client ignores it too).
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Parses a chunk and returns the events it completed. An event is only dispatched by the
    /// blank line that ends it, so an unterminated event at end of stream is never returned.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &b in chunk {
            if core::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut events);
                }
                b'\n' => self.end_line(&mut events),
                _ => self.line.push(b),
            }
        }
        events
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        let bytes = core::mem::take(&mut self.line);
        let mut bytes = bytes.as_slice();
        if !core::mem::replace(&mut self.started, true) {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        let line = String::from_utf8_lossy(bytes);
        if line.is_empty() {
            if self.has_data && !self.data.is_empty() {
                let mut data = core::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                events.push(SseEvent {
                    event: self.event.take(),
                    id: self.last_id.clone(),
                    data,
                });
            }
            self.data.clear();
            self.has_data = false;
            self.event = None;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match crate::text::split_once_byte(&line, b':') {
            Some((field, v)) => (field, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "data" => {
                self.has_data = true;
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => self.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
    }
}

/// Formats one event carrying `data` (each line of it as its own `data:` line).
pub fn format_event(data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 8);
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// A comment line that keeps an idle connection open.
pub const KEEP_ALIVE: &str = ": keep-alive\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn datas(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn the_streaming_transcript_of_appendix_a() {
        let mut p = SseParser::new();
        let mut all = p.feed(b"data: {\"partial\":1}\n\n");
        all.extend(p.feed(b"data: {\"partial\""));
        all.extend(p.feed(b":2}\n\n"));
        all.extend(p.feed(b"data: {\"final\":true}\n\n"));
        assert_eq!(
            datas(&all),
            [r#"{"partial":1}"#, r#"{"partial":2}"#, r#"{"final":true}"#]
        );
    }

    #[test]
    fn line_endings_comments_fields_and_multiline_data() {
        let mut p = SseParser::new();
        let ev = p.feed(b"\xef\xbb\xbf: comment\r\nevent: status\rid: 7\r\ndata:a\ndata:  b\nretry: 100\nignored\n\n");
        assert_eq!(
            ev,
            [SseEvent {
                event: Some("status".into()),
                id: Some("7".into()),
                data: "a\n b".into()
            }]
        );
        assert_eq!(p.retry(), Some(100));
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing_and_the_tail_is_not_dispatched() {
        let mut p = SseParser::new();
        assert!(p.feed(b"event: x\n\n\n: ping\n\n").is_empty());
        assert!(p.feed(b"data: unterminated\n").is_empty());
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_ending() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: x\r").is_empty());
        assert!(
            p.feed(b"\n").is_empty(),
            "the \\n completes the \\r, it is not a blank line"
        );
        assert_eq!(datas(&p.feed(b"\r\n")), ["x"]);
    }

    #[test]
    fn utf8_split_across_chunks_survives() {
        let bytes = "data: {\"m\":\"héllo → 🎨\"}\n\n".as_bytes();
        let mut p = SseParser::new();
        let mut all = Vec::new();
        for b in bytes {
            all.extend(p.feed(std::slice::from_ref(b)));
        }
        assert_eq!(datas(&all), ["{\"m\":\"héllo → 🎨\"}"]);
    }

    #[test]
    fn a_split_byte_order_mark_and_invalid_utf8() {
        let mut p = SseParser::new();
        assert!(p.feed(b"\xef\xbb").is_empty());
        assert_eq!(datas(&p.feed(b"\xbfdata: a\xffb\n\n")), ["a\u{fffd}b"]);
        // Only the stream's first line may start with the mark.
        assert_eq!(datas(&p.feed(b"\xef\xbb\xbfdata: x\n\ndata: y\n\n")), ["y"]);
    }

    #[test]
    fn formatted_events_parse_back() {
        let mut p = SseParser::new();
        let mut text = format_event("line1\nline2");
        text.push_str(KEEP_ALIVE);
        text.push_str(&format_event("{}"));
        assert_eq!(datas(&p.feed(text.as_bytes())), ["line1\nline2", "{}"]);
    }
}
