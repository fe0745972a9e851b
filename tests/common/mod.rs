//! Fixture paths shared by the integration tests.
#![allow(dead_code)]

pub mod gguf_writer;

use std::path::PathBuf;

/// The repository's committed fixtures (`tests/fixtures`).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A committed fixture file.
pub fn fixture(rel: &str) -> PathBuf {
    fixtures().join(rel)
}

/// The small fixture models committed with the repository.
pub const MODELS: &[&str] = &[
    "minilm-l6-Q4_K_M",
    "bert-tiny-F16",
    "bert-tiny-Q8_0",
    "bert-synth-2L-Q4_K_M",
    "nomic-small-2L-Q4_K_M",
];

/// Reads a fixture file whole.
pub fn read(rel: &str) -> Vec<u8> {
    let p = fixture(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Parses a JSON fixture.
pub fn json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}
