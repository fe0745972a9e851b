//! Byte-level BPE without an index, measured: memory, steps, bytes read and time of scan mode
//! against index mode on the Qwen2 vocab fixture.
//!
//! ```text
//! cargo run --release --example bpe_scan -- [VOCAB.gguf] [--text TEXT] [--budget UNITS] [--window BYTES]
//! ```
//! Without `--text` it tokenizes the "128" text of `tests/fixtures/bench-texts.json`.

use std::time::{Duration, Instant};

use stepembed::core::io::SliceSource;
use stepembed::core::tokenizer::{
    bpe_scan_bytes, bpe_work_bytes, read_model_vocab, BpeTokenize, ModelLookup, ModelOptions, Step,
    TokenIndex, TokenIndexBuilder,
};

/// A source that counts the bytes read and the reads.
struct Counting<'a> {
    inner: SliceSource<'a>,
    bytes: u64,
    reads: u64,
}

impl embedded_io::ErrorType for Counting<'_> {
    type Error = <SliceSource<'static> as embedded_io::ErrorType>::Error;
}

impl embedded_io::Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        self.reads += 1;
        Ok(n)
    }
}

impl embedded_io::Seek for Counting<'_> {
    fn seek(&mut self, pos: embedded_io::SeekFrom) -> Result<u64, Self::Error> {
        self.inner.seek(pos)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut path = String::from("tests/fixtures/tokenizer/vocab-qwen2.gguf");
    let mut text: Option<String> = None;
    let mut budget = 4096u32;
    let mut window = 4096usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--text" => text = args.next(),
            "--budget" => budget = args.next().ok_or("--budget N")?.parse()?,
            "--window" => window = args.next().ok_or("--window N")?.parse()?,
            _ => path = a,
        }
    }
    let text = match text {
        Some(t) => t,
        None => {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string("tests/fixtures/bench-texts.json")?)?;
            v["128"].as_str().ok_or("bench-texts.json has no \"128\"")?.to_owned()
        }
    };
    let file = std::fs::read(&path)?;
    let vocab = read_model_vocab(&mut SliceSource::new(&file), &mut vec![0u8; 4096])?;
    let opts = ModelOptions { max_tokens: 1 << 16, truncate: false, add_special: true, parse_special: true };

    // Index mode: build the index once, then tokenize.
    let t0 = Instant::now();
    let index_bytes = TokenIndex::bytes_needed(&vocab)?;
    let mut ix_mem = vec![0u8; index_bytes];
    let mut b = TokenIndexBuilder::new(&vocab, &mut ix_mem)?;
    let mut scratch = vec![0u8; 4096];
    while b.step(&mut SliceSource::new(&file), &mut scratch, 4096)? == Step::Pending {}
    let ix = b.finish()?;
    let build = t0.elapsed();
    let mut work = vec![0u8; bpe_work_bytes(false, window)];
    let mut out = vec![0u32; opts.max_tokens];
    let t1 = Instant::now();
    let mut t = BpeTokenize::new(&vocab, ModelLookup::Index(ix), &text, &mut work, &mut out, opts)?;
    let want = t.run(&mut SliceSource::new(&[]))?.to_vec();
    let index_time = t1.elapsed();

    // Scan mode: nothing built; every step bounded by `budget` units.
    let mut work = vec![0u8; bpe_scan_bytes(window)];
    let mut out = vec![0u32; opts.max_tokens];
    let mut io = Counting { inner: SliceSource::new(&file), bytes: 0, reads: 0 };
    let t2 = Instant::now();
    let mut t = BpeTokenize::new(&vocab, ModelLookup::Scan, &text, &mut work, &mut out, opts)?;
    let (mut steps, mut longest) = (0u64, Duration::ZERO);
    let mut times = Vec::new();
    loop {
        let s = Instant::now();
        let r = t.step(&mut io, budget)?;
        longest = longest.max(s.elapsed());
        times.push(s.elapsed());
        steps += 1;
        if r == Step::Done {
            break;
        }
    }
    let scan_time = t2.elapsed();
    assert_eq!(t.ids(), want.as_slice(), "scan and index differ");
    let stats = t.scan_stats().unwrap_or_default();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!("text: {} bytes, {} tokens (scan == index)", text.len(), want.len());
    println!(
        "index: {index_bytes} B index + {} B work = {} B; build {:.1} ms, tokenize {:.3} ms",
        bpe_work_bytes(false, window),
        index_bytes + bpe_work_bytes(false, window),
        build.as_secs_f64() * 1e3,
        index_time.as_secs_f64() * 1e3
    );
    println!(
        "scan:  {} B work (window {window}); {steps} steps of budget {budget}, longest {:.3} ms, total {:.1} ms",
        bpe_scan_bytes(window),
        longest.as_secs_f64() * 1e3,
        scan_time.as_secs_f64() * 1e3
    );
    println!("scan:  step time median {:.3} ms, p99 {:.3} ms", at(0.5), at(0.99));
    println!(
        "scan:  {} batches, {} passes, {} entries streamed, {} exact words; {} bytes read in {} reads",
        stats.batches, stats.passes, stats.entries, stats.exact_words, io.bytes, io.reads
    );
    Ok(())
}
