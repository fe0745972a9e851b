//! The output formats of `stepembed embed`: JSON lines, the OpenAI `/v1/embeddings` response,
//! and a NumPy `.npy` matrix. Each is written a row at a time, so memory does not grow with the
//! number of texts.
//!
//! Floats are written as f32: JSON numbers are the shortest decimal that parses back to the
//! same f32, `.npy` values are little-endian `<f4`.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::output::Output;
use super::CliError;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line: {"index", "id"?, "text"?, "tokens", "truncated", "embedding"}
    Jsonl,
    /// One JSON document shaped like the OpenAI /v1/embeddings response
    Openai,
    /// A float32 matrix in NumPy's .npy format, one row per text (needs --output)
    Npy,
}

/// One embedded text.
#[derive(Debug)]
pub(super) struct Row<'a> {
    /// Its position among the input's texts, from 0 (texts skipped by --skip-errors counted).
    pub index: usize,
    /// The input's `"id"`, passed through.
    pub id: Option<&'a serde_json::Value>,
    /// The input text, with --echo-text.
    pub text: Option<&'a str>,
    /// Tokens embedded, [CLS] and [SEP] included.
    pub tokens: usize,
    /// Whether the text had more tokens than were embedded.
    pub truncated: bool,
    pub embedding: &'a [f32],
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("index", &self.index)?;
        if let Some(id) = self.id {
            map.serialize_entry("id", id)?;
        }
        if let Some(text) = self.text {
            map.serialize_entry("text", text)?;
        }
        map.serialize_entry("tokens", &self.tokens)?;
        map.serialize_entry("truncated", &self.truncated)?;
        map.serialize_entry("embedding", self.embedding)?;
        map.end()
    }
}

/// One entry of the OpenAI response's `"data"`.
struct OpenAiEntry<'a>(&'a Row<'a>);

impl Serialize for OpenAiEntry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("object", "embedding")?;
        map.serialize_entry("index", &self.0.index)?;
        map.serialize_entry("embedding", self.0.embedding)?;
        map.end()
    }
}

/// Writes rows in one [`Format`] to an [`Output`].
#[derive(Debug)]
pub(super) struct RowWriter {
    format: Format,
    /// The model's name, for the OpenAI response.
    model: String,
    /// Floats per row, for the `.npy` header.
    dims: usize,
    rows: usize,
    tokens: usize,
}

/// Bytes of the `.npy` header: room for any shape, a multiple of 64 as the format asks.
const NPY_HEADER_BYTES: usize = 128;

impl RowWriter {
    pub(super) fn new(format: Format, model: String, dims: usize) -> Self {
        RowWriter { format, model, dims, rows: 0, tokens: 0 }
    }

    /// Writes one row.
    pub(super) fn row(&mut self, out: &mut Output, row: &Row<'_>) -> Result<(), CliError> {
        if self.rows == 0 {
            self.begin(out)?;
        }
        match self.format {
            Format::Jsonl => {
                let mut line = to_json(row)?;
                line.push('\n');
                out.write_str(&line)?;
            }
            Format::Openai => {
                let separator = if self.rows == 0 { "" } else { "," };
                out.write_str(&format!("{separator}{}", to_json(&OpenAiEntry(row))?))?;
            }
            Format::Npy => {
                let bytes: Vec<u8> = row.embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
                out.write_bytes(&bytes)?;
            }
        }
        self.rows += 1;
        self.tokens += row.tokens;
        Ok(())
    }

    /// Writes what follows the last row (and what precedes the first, if there was none).
    pub(super) fn finish(&mut self, out: &mut Output) -> Result<(), CliError> {
        if self.rows == 0 {
            self.begin(out)?;
        }
        match self.format {
            Format::Jsonl => Ok(()),
            Format::Openai => {
                let tail = serde_json::json!({
                    "prompt_tokens": self.tokens,
                    "total_tokens": self.tokens,
                });
                out.write_str(&format!("],\"model\":{},\"usage\":{tail}}}\n", to_json(&self.model)?))
            }
            Format::Npy => out.rewrite_start(&npy_header(self.rows, self.dims)),
        }
    }

    fn begin(&self, out: &mut Output) -> Result<(), CliError> {
        match self.format {
            Format::Jsonl => Ok(()),
            Format::Openai => out.write_str("{\"object\":\"list\",\"data\":["),
            // The row count is known at the end only: the header is written again then.
            Format::Npy => out.write_bytes(&npy_header(0, self.dims)),
        }
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, CliError> {
    serde_json::to_string(value).map_err(|e| CliError::Message(format!("JSON: {e}")))
}

/// The `.npy` v1.0 header of a C-order `rows × dims` little-endian f32 matrix, padded with
/// spaces to [`NPY_HEADER_BYTES`].
pub(super) fn npy_header(rows: usize, dims: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dims}), }}");
    // Magic, version 1.0, the 2-byte header length, the dict, spaces, a newline.
    let len = NPY_HEADER_BYTES - 10;
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&(len as u16).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header.resize(NPY_HEADER_BYTES - 1, b' ');
    header.push(b'\n');
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_headers_have_a_fixed_length_for_any_shape() {
        for (rows, dims) in [(0, 384), (3, 8), (usize::MAX, usize::MAX)] {
            let h = npy_header(rows, dims);
            assert_eq!(h.len(), NPY_HEADER_BYTES);
            assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
            assert_eq!(usize::from(u16::from_le_bytes([h[8], h[9]])), NPY_HEADER_BYTES - 10);
            let dict = std::str::from_utf8(&h[10..]).unwrap();
            assert!(dict.starts_with(&format!(
                "{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dims}), }}"
            )));
            assert!(dict.ends_with(" \n"));
        }
    }
}
