//! Byte-level BPE tokenizer fuzzing: arbitrary bytes → text tokenized against the Qwen2 vocab
//! fixture with fuzzer-chosen options, step budgets and windows. Asserts that nothing panics,
//! that a small window and budget give the ids of one unbounded step over a large window (or
//! fail for want of memory), that scan mode (no index, the tokens and merges streamed from the
//! file) with the small window and budget gives the index's ids (or fails for want of memory;
//! on a corrupted vocab, any typed error or ids of the vocab, no panic), and that every result
//! fits the limit and holds only vocab ids. One
//! input in 256 (that has bytes to patch) corrupts bytes of the vocab first: rebuilding the index
//! of 151 936 tokens and 151 387 merges is slow under the sanitizer.
//!
//! `cargo +nightly fuzz run tokenizer_bpe` (from the repository root).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stepembed_core::io::SliceSource;
use stepembed_core::tokenizer::{
    bpe_work_bytes, read_model_vocab, BpeTokenize, ModelLookup, ModelOptions, ModelVocab, Step, TokenIndex,
    TokenIndexBuilder, MIN_MODEL_WINDOW,
};
use stepembed_core::{Error, InputError};

static VOCAB_FILE: &[u8] = include_bytes!("../../tests/fixtures/tokenizer/vocab-qwen2.gguf");

fn build(file: &[u8]) -> Result<(ModelVocab, Vec<u8>), Error> {
    let vocab = read_model_vocab(&mut SliceSource::new(file), &mut vec![0u8; 4096])?;
    let mut mem = vec![0u8; TokenIndex::bytes_needed(&vocab)?];
    let mut b = TokenIndexBuilder::new(&vocab, &mut mem)?;
    let mut scratch = vec![0u8; 4096];
    while b.step(&mut SliceSource::new(file), &mut scratch, 1 << 16)? == Step::Pending {}
    b.finish()?;
    Ok((vocab, mem))
}

fn fixture() -> &'static (ModelVocab, Vec<u8>) {
    static F: OnceLock<(ModelVocab, Vec<u8>)> = OnceLock::new();
    F.get_or_init(|| build(VOCAB_FILE).expect("fixture vocab"))
}

fn run(
    vocab: &ModelVocab,
    ix: TokenIndex<'_>,
    text: &str,
    o: ModelOptions,
    window: usize,
    budget: u32,
) -> Result<Vec<u32>, Error> {
    let mut mem = vec![0u8; bpe_work_bytes(false, window)];
    let mut out = vec![0u32; o.max_tokens];
    let mut t = BpeTokenize::new(vocab, ModelLookup::Index(ix), text, &mut mem, &mut out, o)?;
    let mut io = SliceSource::new(&[]);
    while t.step(&mut io, budget)? == Step::Pending {}
    Ok(t.ids().to_vec())
}

fn run_scan(
    file: &[u8],
    vocab: &ModelVocab,
    text: &str,
    o: ModelOptions,
    window: usize,
    budget: u32,
) -> Result<Vec<u32>, Error> {
    let mut mem = vec![0u8; bpe_work_bytes(true, window)];
    let mut out = vec![0u32; o.max_tokens];
    let mut t = BpeTokenize::new(vocab, ModelLookup::Scan, text, &mut mem, &mut out, o)?;
    let mut io = SliceSource::new(file);
    while t.step(&mut io, budget.saturating_mul(64))? == Step::Pending {}
    Ok(t.ids().to_vec())
}

fn check(file: &[u8], vocab: &ModelVocab, mem: &[u8], text: &str, ctl: &[u8; 4], corrupted: bool) {
    let Ok(ix) = TokenIndex::open(vocab, mem) else { return };
    let o = ModelOptions {
        max_tokens: 1 + usize::from(ctl[0] >> 2),
        truncate: ctl[0] & 1 == 0,
        add_special: ctl[0] & 2 == 0,
        parse_special: ctl[1] & 1 == 0,
    };
    let budget = 1 + u32::from(ctl[1]) * 37;
    let window = MIN_MODEL_WINDOW + usize::from(ctl[2]) * 5;
    let small = run(vocab, ix, text, o, window, budget);
    let large = run(vocab, ix, text, o, 1 << 13, u32::MAX);
    if !matches!(small, Err(Error::BufferTooSmall { .. })) {
        assert_eq!(small, large, "window {window} budget {budget} differs on {text:?}");
    }
    let scanned = run_scan(file, vocab, text, o, window, budget);
    if corrupted {
        // Merges are matched by text in scan mode, by their sides' ids in the index: a damaged
        // vocab may tokenize differently, never out of the vocab.
        if let Ok(ids) = &scanned {
            assert!(ids.len() <= o.max_tokens && ids.iter().all(|&i| i < vocab.count()));
        }
    } else if !matches!(scanned, Err(Error::BufferTooSmall { .. })) {
        assert_eq!(scanned, large, "scan mode, window {window} budget {budget} differs on {text:?}");
    }
    match large {
        Ok(ids) => {
            assert!(ids.len() <= o.max_tokens);
            if o.add_special && vocab.add_bos() {
                assert_eq!(ids.first().copied(), vocab.bos());
            }
            assert!(ids.iter().all(|&i| i < vocab.count()));
        }
        Err(Error::Input(InputError::TooManyTokens { max, .. })) => {
            assert!(!o.truncate && max == o.max_tokens)
        }
        Err(e) => assert!(corrupted, "fixture vocab failed: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((ctl, rest)) = data.split_first_chunk::<4>() else { return };
    let text = String::from_utf8_lossy(rest);
    if ctl[3] != 255 || rest.len() < 3 {
        let (vocab, mem) = fixture();
        check(VOCAB_FILE, vocab, mem, &text, ctl, false);
        return;
    }
    let start = fixture().0.tokens().offset as usize;
    let mut file = VOCAB_FILE.to_vec();
    for patch in rest.chunks_exact(3).take(8) {
        let at = start + usize::from(u16::from_le_bytes([patch[0], patch[1]])) * 89 % (file.len() - start);
        file[at] = patch[2];
    }
    let Ok((vocab, mem)) = build(&file) else { return };
    check(&file, &vocab, &mem, &text, ctl, true);
});
