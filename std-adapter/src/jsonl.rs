//! Texts from a JSONL file (`{"text": …}` per line), read one line at a time.
//!
//! # Contract
//! * Lines end with `\n` (a `\r` before it is JSON whitespace); the last one may lack it.
//! * A line holding only whitespace is skipped; every other line must be UTF-8 holding one JSON
//!   object with a string member `"text"` (other members are ignored).
//! * A line is at most [`MAX_LINE_BYTES`] bytes: memory stays bounded whatever the input.
//! * The first bad line ends the reading with a [`JsonlError`] shown as `NAME:LINE: what`
//!   (lines counted from 1, blank ones included), and every later call returns `None`.

use std::fmt;
use std::io::{BufRead, Read};

/// The longest line [`TextLines`] accepts, in bytes (newline excluded).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Reads the texts of a JSONL stream in order. See the module documentation.
#[derive(Debug)]
pub struct TextLines<R> {
    reader: R,
    name: String,
    line: u64,
    buf: Vec<u8>,
    finished: bool,
}

/// A bad line of a JSONL stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlError {
    /// The stream's name (its path) as given to [`TextLines::new`].
    pub name: String,
    /// The line, counted from 1.
    pub line: u64,
    /// What is wrong with it.
    pub what: String,
}

impl fmt::Display for JsonlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.name, self.line, self.what)
    }
}

impl std::error::Error for JsonlError {}

impl<R: BufRead> TextLines<R> {
    /// A reader of `reader`'s texts; `name` (usually the file's path) prefixes its errors.
    pub fn new(reader: R, name: impl Into<String>) -> Self {
        TextLines { reader, name: name.into(), line: 0, buf: Vec::new(), finished: false }
    }

    /// The number of the line the last text came from (0 before the first).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The next text, or `None` after the last line (or after an error).
    fn next_text(&mut self) -> Result<Option<String>, JsonlError> {
        loop {
            let Some(line) = self.next_line()? else { return Ok(None) };
            if !line.iter().all(u8::is_ascii_whitespace) {
                return parse_line(line).map(Some).map_err(|what| self.error(what));
            }
        }
    }

    /// The next raw line without its `\n`, or `None` at the end of the stream.
    fn next_line(&mut self) -> Result<Option<&[u8]>, JsonlError> {
        self.buf.clear();
        let limit = MAX_LINE_BYTES as u64 + 1;
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut self.buf);
        if matches!(read, Ok(0)) {
            return Ok(None);
        }
        self.line += 1;
        if let Err(e) = read {
            return Err(self.error(format!("read failed: {e}")));
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        } else if self.buf.len() > MAX_LINE_BYTES {
            return Err(self.error(format!("line longer than {MAX_LINE_BYTES} bytes")));
        }
        Ok(Some(&self.buf))
    }

    fn error(&self, what: String) -> JsonlError {
        JsonlError { name: self.name.clone(), line: self.line, what }
    }
}

/// The `"text"` string of one non-blank line.
fn parse_line(line: &[u8]) -> Result<String, String> {
    let line = std::str::from_utf8(line).map_err(|e| format!("not UTF-8 ({e})"))?;
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    match value {
        serde_json::Value::Object(mut object) => match object.remove("text") {
            Some(serde_json::Value::String(text)) => Ok(text),
            _ => Err("no \"text\" string".to_owned()),
        },
        _ => Err("not a JSON object".to_owned()),
    }
}

impl<R: BufRead> Iterator for TextLines<R> {
    type Item = Result<String, JsonlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let item = self.next_text().transpose();
        self.finished = !matches!(item, Some(Ok(_)));
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> Vec<Result<String, String>> {
        TextLines::new(input, "in.jsonl").map(|r| r.map_err(|e| e.to_string())).collect()
    }

    #[test]
    fn texts_in_order_blank_lines_skipped_crlf_and_a_missing_last_newline_accepted() {
        let input = b"{\"text\": \"a\"}\n\n  \t\r\n{\"id\": 7, \"text\": \"b\\nc\"}\r\n{\"text\":\"\"}";
        let mut lines = TextLines::new(&input[..], "in.jsonl");
        assert_eq!(lines.next().unwrap().unwrap(), "a");
        assert_eq!(lines.line(), 1);
        assert_eq!(lines.next().unwrap().unwrap(), "b\nc");
        assert_eq!(lines.line(), 4, "blank lines are counted");
        assert_eq!(lines.next().unwrap().unwrap(), "");
        assert!(lines.next().is_none());
        assert!(read_all(b"").is_empty());
        assert!(read_all(b"\n\n").is_empty());
    }

    #[test]
    fn the_first_bad_line_is_the_error_and_the_end() {
        for (input, expected) in [
            (&b"{\"text\": \"a\"}\n{\"text\": 1}\n{\"text\": \"c\"}\n"[..], "in.jsonl:2: no \"text\" string"),
            (b"\n[\"text\"]\n", "in.jsonl:2: not a JSON object"),
            (b"{\"txt\": \"a\"}", "in.jsonl:1: no \"text\" string"),
            (b"{\"text\": \"a\"} {}", "in.jsonl:1: trailing characters at line 1 column 15"),
            (b"{\"text\": \"caf\xe9\"}", "in.jsonl:1: not UTF-8"),
            (b"{\"text\": \"a\"\n}", "in.jsonl:1: EOF while parsing an object"),
        ] {
            let got = read_all(input);
            let err = got.last().unwrap().as_ref().unwrap_err();
            assert!(err.starts_with(expected), "{err} vs {expected}");
            assert!(got[..got.len() - 1].iter().all(Result::is_ok), "only the last item is an error");
        }
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused_without_reading_it_whole() {
        let text = "x".repeat(MAX_LINE_BYTES);
        let fits = format!("{}\n", serde_json::json!({ "text": &text[..MAX_LINE_BYTES - 11] }));
        assert_eq!(fits.len(), MAX_LINE_BYTES + 1);
        assert_eq!(read_all(fits.as_bytes()), [Ok(text[..MAX_LINE_BYTES - 11].to_owned())]);
        let too_long = format!("{{\"text\": \"a\"}}\n{}\n", serde_json::json!({ "text": text }));
        let got = read_all(too_long.as_bytes());
        assert_eq!(
            got,
            [Ok("a".into()), Err(format!("in.jsonl:2: line longer than {MAX_LINE_BYTES} bytes"))]
        );
    }
}
