//! Fixture paths shared by the integration tests.
#![allow(dead_code)]

pub mod engine;
pub mod faulty;
pub mod gguf_layout;
pub mod gguf_writer;
pub mod soak;
pub mod tiny_bert;

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
pub const MODELS: &[&str] =
    &["minilm-l6-Q4_K_M", "bert-tiny-F16", "bert-tiny-Q8_0", "bert-synth-2L-Q4_K_M", "nomic-small-2L-Q4_K_M"];

/// Reads a fixture file whole.
pub fn read(rel: &str) -> Vec<u8> {
    let p = fixture(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Parses a JSON fixture.
pub fn json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The big shared fixtures (`../shared/fixtures` beside the repository, or
/// `$STEPEMBED_SHARED_FIXTURES`). `None`, with a loud warning, when absent — unless
/// `STEPEMBED_REQUIRE_SHARED=1` (CI), where absence fails the test.
pub fn shared_fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("STEPEMBED_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    if dir.join("models").is_dir() {
        return Some(dir);
    }
    if std::env::var("STEPEMBED_REQUIRE_SHARED").is_ok_and(|v| !v.is_empty() && v != "0") {
        panic!("shared fixtures required but not found at {}", dir.display());
    }
    // Straight to stderr, not through `eprintln!`, which the test harness would capture.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!!!! SKIPPED: shared fixtures not found at {} — the 768-dim benchmark-model \
         tests did not run (set STEPEMBED_SHARED_FIXTURES) !!!!!!!!!!\n",
        dir.display()
    );
    None
}

/// The texts of `tests/fixtures/texts.jsonl`.
pub fn texts() -> Vec<String> {
    String::from_utf8(read("texts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_owned())
        .collect()
}
