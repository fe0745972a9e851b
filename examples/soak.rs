//! Soak run: embeds N (default 10 000) mixed-length texts (1 to 300 words, drawn
//! deterministically from the fixture texts) in one process through one `Embedder`, printing
//! the resident memory (VmRSS) every 1 000 texts and, at the end, its growth after the warm-up
//! (the first 100 texts, which cover every length).
//!
//! ```sh
//! cargo run --release --example soak -- MODEL.gguf [N]
//! ```

#[path = "../tests/common/soak.rs"]
mod soak;

use std::error::Error;
use std::time::Instant;

use soak::{rss_kib, soak_text, words, BUCKETS};
use stepembed::Embedder;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().ok_or("usage: soak MODEL.gguf [N]")?;
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let fixture_texts: Vec<String> = std::fs::read_to_string("tests/fixtures/texts.jsonl")?
        .lines()
        .map(|l| -> Result<String, Box<dyn Error>> {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(v["text"].as_str().ok_or("a text line without \"text\"")?.to_owned())
        })
        .collect::<Result<_, _>>()?;
    let words = words(&fixture_texts);
    let mut embedder = Embedder::open(&model)?;
    let start = Instant::now();
    let (mut after_warm_up, mut peak_after, mut tokens) = (0, 0, 0usize);
    println!("start: VmRSS {} KiB", rss_kib());
    for i in 0..n {
        let text = soak_text(&words, i);
        tokens += embedder.tokenize(&text)?.len();
        embedder.embed(&text)?;
        let done = i + 1;
        if done == BUCKETS {
            after_warm_up = rss_kib();
            println!("after warm-up ({done} texts): VmRSS {after_warm_up} KiB");
        } else if done > BUCKETS {
            peak_after = peak_after.max(rss_kib());
        }
        if done % 1000 == 0 {
            let secs = start.elapsed().as_secs_f64();
            println!("{done} texts, {tokens} tokens, {secs:.1} s: VmRSS {} KiB", rss_kib());
        }
    }
    println!(
        "growth after warm-up: {} KiB (VmRSS {after_warm_up} KiB after {BUCKETS} texts, highest after {peak_after} KiB)",
        peak_after.saturating_sub(after_warm_up)
    );
    Ok(())
}
