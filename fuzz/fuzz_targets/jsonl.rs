//! The `--input FILE.jsonl` reader (`stepembed::jsonl::TextLines`) on arbitrary bytes, read
//! through a fuzzer-chosen buffer size. Asserts that nothing panics, that the buffer size does
//! not change what is read, that only the last item can be an error, that an error names a line
//! that exists (`NAME:LINE: …`), and that every text is the `"text"` member of its line.
//!
//! `cargo +nightly fuzz run jsonl` (from the repository root).
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use stepembed::jsonl::{JsonlError, TextLines};

/// Every item of `reader`, with the line each text came from.
fn read_all<R: std::io::BufRead>(reader: R) -> Vec<Result<(String, u64), JsonlError>> {
    let mut lines = TextLines::new(reader, "fuzz.jsonl");
    let mut items = Vec::new();
    while let Some(item) = lines.next() {
        items.push(item.map(|text| (text, lines.line())));
    }
    assert!(lines.next().is_none(), "nothing after the end or an error");
    items
}

fuzz_target!(|data: &[u8]| {
    let Some((&capacity, input)) = data.split_first() else { return };
    let whole = read_all(input);
    let chunked = read_all(BufReader::with_capacity(usize::from(capacity).max(1), input));
    assert_eq!(whole, chunked, "the buffer size changed what was read");

    let lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let n_lines = lines.len() as u64 - u64::from(input.ends_with(b"\n") || input.is_empty());
    let mut previous = 0;
    for (i, item) in whole.iter().enumerate() {
        match item {
            Ok((text, line)) => {
                assert!(*line > previous && *line <= n_lines, "line {line} of {n_lines}");
                previous = *line;
                let raw = lines[*line as usize - 1];
                let value: serde_json::Value = serde_json::from_slice(raw).expect("a text's line is JSON");
                assert_eq!(value["text"].as_str(), Some(text.as_str()));
            }
            Err(e) => {
                assert_eq!(i + 1, whole.len(), "only the last item is an error");
                assert!(e.line > previous && e.line <= n_lines, "error at line {} of {n_lines}", e.line);
                assert!(e.to_string().starts_with(&format!("fuzz.jsonl:{}: ", e.line)));
            }
        }
    }
});
