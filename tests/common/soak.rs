//! What the soak runs share (`tests/soak.rs` and `examples/soak.rs`): a deterministic stream of
//! mixed-length texts and the process's resident memory. Only std, so the example can include
//! it with `#[path]`.
#![allow(dead_code)]

/// Length buckets: every run of this many consecutive texts has one text of each length.
pub const BUCKETS: usize = 100;
/// The longest text, in words (a few hundred tokens).
pub const MAX_WORDS: usize = 300;

/// Text `i` of the stream: words of the fixture texts (`words`, at least one) taken round-robin
/// from a place that depends on `i`, and a length from 1 to [`MAX_WORDS`] words such that
/// texts `k·BUCKETS .. (k+1)·BUCKETS` cover every length bucket once (so a warm-up of
/// `BUCKETS` texts has seen the longest).
pub fn soak_text(words: &[&str], i: usize) -> String {
    // 37 is coprime with 100: i ↦ 37·i mod 100 runs through every bucket.
    let bucket = (i * 37) % BUCKETS;
    let len = 1 + bucket * (MAX_WORDS - 1) / (BUCKETS - 1);
    let start = i.wrapping_mul(7919) % words.len();
    (0..len).map(|k| words[(start + k) % words.len()]).collect::<Vec<_>>().join(" ")
}

/// The words of `texts`, split on whitespace.
pub fn words(texts: &[String]) -> Vec<&str> {
    texts.iter().flat_map(|t| t.split_whitespace()).collect()
}

/// The process's resident set (`VmRSS` of /proc/self/status), in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}
