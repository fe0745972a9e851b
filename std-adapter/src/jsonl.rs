//! Texts from a stream, read one line at a time: JSONL (`{"text": …}` per line, with an
//! optional `"id"`) or plain text (one text per line).
//!
//! # Contract
//! * Lines end with `\n`; the last one may lack it. In JSONL a `\r` before it is JSON
//!   whitespace; in plain text it is removed.
//! * A line holding only whitespace is skipped (it is counted, so line numbers stay those of
//!   the file).
//! * In JSONL every other line must be UTF-8 holding one JSON object with a string member
//!   `"text"` and, optionally, an `"id"` that is a string or a number (other members are
//!   ignored). In plain text every other line must be UTF-8 and is the text as it is.
//! * A line is at most [`MAX_LINE_BYTES`] bytes: memory stays bounded whatever the input.
//! * A bad line is a [`JsonlError`] shown as `NAME:LINE: what` (lines counted from 1).
//!   [`Records`] goes on with the next line after one (unless it was a read error, which ends
//!   the stream); [`TextLines`] ends at the first.

use std::fmt;
use std::io::{BufRead, Read};

/// The longest line [`Records`] accepts, in bytes (newline excluded).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// How the lines of a stream hold their texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// One JSON object `{"text": …, "id": …}` per line.
    Jsonl,
    /// One text per line, as it is.
    Plain,
}

/// One text of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The line it came from, counted from 1.
    pub line: u64,
    /// Its `"id"` member (a JSON string or number), passed through to the output.
    pub id: Option<serde_json::Value>,
    /// Its text.
    pub text: String,
}

/// A bad line of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlError {
    /// The stream's name (its path) as given to [`Records::new`].
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

/// Reads the texts of a stream in order, going on after a bad line. See the module
/// documentation.
#[derive(Debug)]
pub struct Records<R> {
    reader: R,
    name: String,
    format: LineFormat,
    line: u64,
    buf: Vec<u8>,
    /// Set by a read error or the end of the stream.
    finished: bool,
}

impl<R: BufRead> Records<R> {
    /// A reader of `reader`'s texts in `format`; `name` (usually the file's path) prefixes its
    /// errors.
    pub fn new(reader: R, name: impl Into<String>, format: LineFormat) -> Self {
        Records { reader, name: name.into(), format, line: 0, buf: Vec::new(), finished: false }
    }

    /// The number of the last line read (0 before the first).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The next text, or `None` at the end of the stream.
    fn next_record(&mut self) -> Option<Result<Record, JsonlError>> {
        let format = self.format;
        loop {
            let line = match self.next_line()? {
                Ok(line) => line,
                Err(what) => return Some(Err(self.error(what))),
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = match format {
                LineFormat::Jsonl => parse_json_line(line),
                LineFormat::Plain => parse_plain_line(line),
            };
            let line = self.line;
            return Some(parsed.map(|(id, text)| Record { line, id, text }).map_err(|what| self.error(what)));
        }
    }

    /// The next raw line without its `\n`, or `None` at the end of the stream (or after a read
    /// error). A line longer than [`MAX_LINE_BYTES`] is an error, its rest read and dropped.
    fn next_line(&mut self) -> Option<Result<&[u8], String>> {
        if self.finished {
            return None;
        }
        self.buf.clear();
        let limit = MAX_LINE_BYTES as u64 + 1;
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut self.buf);
        if matches!(read, Ok(0)) {
            self.finished = true;
            return None;
        }
        self.line += 1;
        if let Err(e) = read {
            self.finished = true;
            return Some(Err(format!("read failed: {e}")));
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        } else if self.buf.len() > MAX_LINE_BYTES {
            if let Err(e) = self.skip_rest_of_line() {
                self.finished = true;
                return Some(Err(format!("read failed: {e}")));
            }
            return Some(Err(format!("line longer than {MAX_LINE_BYTES} bytes")));
        }
        Some(Ok(&self.buf))
    }

    /// Reads up to and including the next `\n`, a bounded chunk at a time.
    fn skip_rest_of_line(&mut self) -> std::io::Result<()> {
        loop {
            self.buf.clear();
            let n = (&mut self.reader).take(64 << 10).read_until(b'\n', &mut self.buf)?;
            if n == 0 || self.buf.last() == Some(&b'\n') {
                return Ok(());
            }
        }
    }

    fn error(&self, what: String) -> JsonlError {
        JsonlError { name: self.name.clone(), line: self.line, what }
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<Record, JsonlError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

/// The `"id"` and `"text"` of one non-blank JSONL line.
fn parse_json_line(line: &[u8]) -> Result<(Option<serde_json::Value>, String), String> {
    let line = std::str::from_utf8(line).map_err(|e| format!("not UTF-8 ({e})"))?;
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(mut object) = value else { return Err("not a JSON object".to_owned()) };
    let id = match object.remove("id") {
        None => None,
        Some(id @ (serde_json::Value::String(_) | serde_json::Value::Number(_))) => Some(id),
        Some(_) => return Err("\"id\" is neither a string nor a number".to_owned()),
    };
    match object.remove("text") {
        Some(serde_json::Value::String(text)) => Ok((id, text)),
        _ => Err("no \"text\" string".to_owned()),
    }
}

/// The text of one non-blank plain-text line (a final `\r` removed).
fn parse_plain_line(line: &[u8]) -> Result<(Option<serde_json::Value>, String), String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8 ({e})"))?;
    Ok((None, text.to_owned()))
}

/// Reads the texts of a JSONL stream in order, ending at the first bad line: after an error
/// every call returns `None`. See the module documentation.
#[derive(Debug)]
pub struct TextLines<R> {
    records: Records<R>,
    finished: bool,
}

impl<R: BufRead> TextLines<R> {
    /// A reader of `reader`'s texts; `name` (usually the file's path) prefixes its errors.
    pub fn new(reader: R, name: impl Into<String>) -> Self {
        TextLines { records: Records::new(reader, name, LineFormat::Jsonl), finished: false }
    }

    /// The number of the line the last text came from (0 before the first).
    pub fn line(&self) -> u64 {
        self.records.line()
    }
}

impl<R: BufRead> Iterator for TextLines<R> {
    type Item = Result<String, JsonlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let item = self.records.next().map(|r| r.map(|record| record.text));
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

    #[test]
    fn records_carry_ids_and_lines_and_go_on_after_a_bad_line() {
        let input = b"{\"id\": \"a\", \"text\": \"x\"}\n{\"text\": 1}\n\n{\"id\": 7, \"text\": \"y\"}\n{\"id\": [], \"text\": \"z\"}\n";
        let got: Vec<_> = Records::new(&input[..], "in.jsonl", LineFormat::Jsonl).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], Ok(Record { line: 1, id: Some("a".into()), text: "x".into() }));
        assert_eq!(got[1].as_ref().unwrap_err().to_string(), "in.jsonl:2: no \"text\" string");
        assert_eq!(got[2], Ok(Record { line: 4, id: Some(7.into()), text: "y".into() }));
        assert_eq!(
            got[3].as_ref().unwrap_err().to_string(),
            "in.jsonl:5: \"id\" is neither a string nor a number"
        );
    }

    #[test]
    fn plain_lines_are_texts_as_they_are_and_an_overlong_line_is_skipped_whole() {
        let input = format!("a b\r\n\n  {{\"text\": 1}}\n{}\nlast", "x".repeat(MAX_LINE_BYTES + 5));
        let got: Vec<_> = Records::new(input.as_bytes(), "in.txt", LineFormat::Plain)
            .map(|r| r.map(|r| (r.line, r.text)).map_err(|e| e.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                Ok((1, "a b".to_owned())),
                Ok((3, "  {\"text\": 1}".to_owned())),
                Err(format!("in.txt:4: line longer than {MAX_LINE_BYTES} bytes")),
                Ok((5, "last".to_owned())),
            ]
        );
        let bad: Vec<_> = Records::new(&b"caf\xe9\nok"[..], "in.txt", LineFormat::Plain).collect();
        assert!(bad[0].as_ref().unwrap_err().to_string().starts_with("in.txt:1: not UTF-8"));
        assert_eq!(bad[1].as_ref().unwrap().text, "ok");
    }
}
