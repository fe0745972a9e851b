//! Tokenizer fuzzing: arbitrary bytes → text (UTF-8 as is, else lossily decoded) tokenized
//! against the fixture vocab in both lookup modes, with fuzzer-chosen options, step budgets and
//! window sizes. Asserts that nothing panics, both modes give the same ids (or the same error),
//! and every result is `[CLS] … [SEP]` within the limit. One input in eight also corrupts bytes
//! of the vocab file first (loads may then fail; when both modes finish they must agree).
//!
//! `cargo +nightly fuzz run tokenizer` (from the repository root).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stepembed_core::io::SliceSource;
use stepembed_core::tokenizer::{
    read_vocab, work_bytes, IndexBuilder, Lookup, Options, Step, Tokenize, Vocab, VocabIndex,
    MIN_WINDOW_CHARS,
};
use stepembed_core::{Error, InputError};

static VOCAB_FILE: &[u8] = include_bytes!("../../tests/fixtures/models/vocab-bert-uncased.gguf");

/// Builds the index of `vocab` in `mem`.
fn build_index<'m>(file: &[u8], vocab: &Vocab, mem: &'m mut Vec<u8>) -> Result<VocabIndex<'m>, Error> {
    mem.clear();
    mem.resize(VocabIndex::bytes_needed(vocab)?, 0);
    let mut b = IndexBuilder::new(vocab, mem)?;
    let mut scratch = vec![0u8; 4096];
    let mut io = SliceSource::new(file);
    while b.step(&mut io, &mut scratch, 4096)? == Step::Pending {}
    b.finish()
}

fn load_vocab(file: &[u8]) -> Result<Vocab, Error> {
    read_vocab(&mut SliceSource::new(file), &mut vec![0u8; 4096])
}

/// The fixture's vocab and index, built once; the index memory is a static (no leak).
fn fixture() -> (&'static Vocab, VocabIndex<'static>) {
    static MEM: OnceLock<(Vocab, Vec<u8>)> = OnceLock::new();
    static INDEX: OnceLock<VocabIndex<'static>> = OnceLock::new();
    let (vocab, mem) = MEM.get_or_init(|| {
        let vocab = load_vocab(VOCAB_FILE).expect("fixture vocab");
        let mut mem = Vec::new();
        build_index(VOCAB_FILE, &vocab, &mut mem).expect("fixture index");
        (vocab, mem)
    });
    let ix = INDEX.get_or_init(|| VocabIndex::open(vocab, mem).expect("fixture index view"));
    (vocab, *ix)
}

fn run(
    file: &[u8],
    vocab: &Vocab,
    lookup: Lookup<'_>,
    text: &str,
    opts: Options,
    window: usize,
    budget: u32,
) -> Result<Vec<u32>, Error> {
    let mut mem = vec![0u8; work_bytes(lookup.mode(), window)];
    let mut out = vec![0u32; opts.max_tokens];
    let mut t = Tokenize::new(vocab, lookup, text, &mut mem, &mut out, opts)?;
    let mut io = SliceSource::new(file);
    while t.step(&mut io, budget)? == Step::Pending {}
    Ok(t.ids().to_vec())
}

fn check(file: &[u8], vocab: &Vocab, ix: VocabIndex<'_>, text: &str, ctl: &[u8; 4], corrupted: bool) {
    let opts = Options { max_tokens: 2 + usize::from(ctl[0] >> 1), truncate: ctl[0] & 1 == 0 };
    let budget = 1 + u32::from(ctl[1]) * 37;
    let window = MIN_WINDOW_CHARS + usize::from(ctl[2]) * 3;
    let a = run(file, vocab, Lookup::Index(ix), text, opts, window, budget);
    let b = run(file, vocab, Lookup::Scan, text, opts, window + usize::from(ctl[3]), budget ^ 5);
    assert_eq!(a, b, "modes disagree on {text:?}");
    match a {
        Ok(ids) => {
            assert!(ids.len() >= 2 && ids.len() <= opts.max_tokens);
            assert_eq!(ids.first(), Some(&vocab.cls()));
            assert_eq!(ids.last(), Some(&vocab.sep()));
        }
        Err(Error::Input(InputError::TooManyTokens { tokens, max })) => {
            assert!(!opts.truncate && max == opts.max_tokens && tokens == max + 1);
        }
        // Only a corrupted vocab stream can fail otherwise (both modes alike, checked above).
        Err(e) => assert!(corrupted, "fixture vocab failed: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((ctl, rest)) = data.split_first_chunk::<4>() else { return };
    let lossy;
    let text = match std::str::from_utf8(rest) {
        Ok(t) => t,
        Err(_) => {
            lossy = String::from_utf8_lossy(rest);
            &lossy
        }
    };
    if ctl[3] & 7 != 7 {
        let (vocab, ix) = fixture();
        check(VOCAB_FILE, vocab, ix, text, ctl, false);
        return;
    }
    // Corrupt the vocab: the text's first bytes are (offset, value) patches in the token array.
    let (vocab, _) = fixture();
    let start = vocab.tokens().offset as usize;
    let mut file = VOCAB_FILE.to_vec();
    for patch in rest.chunks_exact(3).take(8) {
        let at = start + usize::from(u16::from_le_bytes([patch[0], patch[1]])) * 7 % (file.len() - start);
        file[at] = patch[2];
    }
    let Ok(vocab) = load_vocab(&file) else { return };
    let mut mem = Vec::new();
    let Ok(ix) = build_index(&file, &vocab, &mut mem) else { return };
    check(&file, &vocab, ix, text, ctl, true);
});
