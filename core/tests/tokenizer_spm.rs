//! SentencePiece ("llama") tokenizing against llama.cpp: its own vocab test (`llama-spm.inp` /
//! `.out`, tokenized by llama.cpp's test-tokenizer-0 without BOS and without parsing control
//! tokens), and random strings tokenized by `llama-tokenize` (fixture jsonl). Both lookup modes,
//! many window sizes and step budgets, must give the same ids.

use stepembed_core::io::SliceSource;
use stepembed_core::tokenizer::{
    read_model_vocab, spm_work_bytes, ModelLookup, ModelOptions, ModelVocab, SpmTokenize, Step, TokenIndex,
    TokenIndexBuilder, MIN_MODEL_WINDOW,
};
use stepembed_core::{Error, InputError};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tokenizer");

pub fn load(name: &str) -> (Vec<u8>, ModelVocab, Vec<u8>) {
    let file = std::fs::read(format!("{FIXTURES}/{name}")).unwrap();
    let vocab = read_model_vocab(&mut SliceSource::new(&file), &mut vec![0u8; 4096]).unwrap();
    let mut mem = vec![0u8; TokenIndex::bytes_needed(&vocab).unwrap()];
    let mut b = TokenIndexBuilder::new(&vocab, &mut mem).unwrap();
    let mut scratch = vec![0u8; 4096];
    while b.step(&mut SliceSource::new(&file), &mut scratch, 1000).unwrap() == Step::Pending {}
    b.finish().unwrap();
    (file, vocab, mem)
}

pub fn tokenize(
    file: &[u8],
    vocab: &ModelVocab,
    lookup: ModelLookup<'_>,
    text: &str,
    opts: ModelOptions,
    window: usize,
    budget: u32,
) -> Result<Vec<u32>, Error> {
    let scan = matches!(lookup, ModelLookup::Scan);
    let mut mem = vec![0u8; spm_work_bytes(scan, window)];
    let mut out = vec![0u32; opts.max_tokens];
    let mut t = SpmTokenize::new(vocab, lookup, text, &mut mem, &mut out, opts)?;
    let mut io = SliceSource::new(file);
    while t.step(&mut io, budget)? == Step::Pending {}
    Ok(t.ids().to_vec())
}

fn plain(max_tokens: usize) -> ModelOptions {
    ModelOptions { max_tokens, truncate: false, add_special: false, parse_special: false }
}

/// llama.cpp's vocab test file: inputs separated by `\n__ggml_vocab_test__\n`, one output line
/// of space-separated ids per input.
pub fn vocab_test(name: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(format!("{FIXTURES}/{name}.inp")).unwrap();
    let out = std::fs::read_to_string(format!("{FIXTURES}/{name}.out")).unwrap();
    let mut texts: Vec<String> = inp.split("\n__ggml_vocab_test__\n").map(str::to_owned).collect();
    if texts.last().is_some_and(|t| t.is_empty()) {
        texts.pop();
    }
    let ids: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(texts.len(), ids.len(), "{name}: inputs vs outputs");
    texts.into_iter().zip(ids).collect()
}

#[test]
fn llama_spm_matches_llama_cpp_vocab_test() {
    let (file, vocab, mem) = load("vocab-llama-spm.gguf");
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    let cases = vocab_test("llama-spm");
    assert!(cases.len() > 30);
    for (text, want) in &cases {
        for (lookup, window, budget) in [
            (ModelLookup::Index(ix), 4096, u32::MAX),
            (ModelLookup::Index(ix), MIN_MODEL_WINDOW, 7),
            (ModelLookup::Scan, 4096, u32::MAX),
            (ModelLookup::Scan, MIN_MODEL_WINDOW, 997),
        ] {
            let got = tokenize(&file, &vocab, lookup, text, plain(4096), window, budget).unwrap();
            assert_eq!(
                &got,
                want,
                "{text:?} window {window} budget {budget} scan {}",
                matches!(lookup, ModelLookup::Scan)
            );
        }
    }
}

#[test]
fn bos_eos_and_special_tokens_follow_the_file() {
    let (file, vocab, mem) = load("vocab-llama-spm.gguf");
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    assert!(vocab.add_bos() && !vocab.add_eos() && vocab.add_space_prefix());
    let opts = ModelOptions { max_tokens: 64, truncate: false, add_special: true, parse_special: true };
    // llama-tokenize -p "Hello world" (BOS added; "▁Hello▁world").
    let got = tokenize(&file, &vocab, ModelLookup::Index(ix), "Hello world", opts, 4096, 1).unwrap();
    assert_eq!(got, [1, 15043, 3186]);
    // A control token in the text is matched with parse_special, and the text after it gets the
    // space prefix again.
    let got = tokenize(&file, &vocab, ModelLookup::Scan, "Hello</s>world", opts, 4096, 1).unwrap();
    assert_eq!(got, [1, 15043, 2, 3186]);
    let plain_opts = ModelOptions { parse_special: false, ..opts };
    let a = tokenize(&file, &vocab, ModelLookup::Index(ix), "Hello</s>world", plain_opts, 4096, 3).unwrap();
    assert!(!a.contains(&2), "{a:?}");
    // Empty text: BOS alone.
    assert_eq!(tokenize(&file, &vocab, ModelLookup::Index(ix), "", opts, 4096, 1).unwrap(), [1]);
}

#[test]
fn truncation_keeps_the_first_ids() {
    let (file, vocab, mem) = load("vocab-llama-spm.gguf");
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let full = tokenize(&file, &vocab, ModelLookup::Index(ix), &text, plain(4096), 4096, u32::MAX).unwrap();
    for max in [1usize, 5, 17, full.len()] {
        let opts = ModelOptions { max_tokens: max, truncate: true, add_special: false, parse_special: false };
        for lookup in [ModelLookup::Index(ix), ModelLookup::Scan] {
            let got = tokenize(&file, &vocab, lookup, &text, opts, MIN_MODEL_WINDOW, 50).unwrap();
            assert_eq!(got, full[..max.min(full.len())]);
        }
    }
    let err = tokenize(&file, &vocab, ModelLookup::Index(ix), &text, plain(10), 4096, 50).unwrap_err();
    assert_eq!(err, Error::Input(InputError::TooManyTokens { tokens: 11, max: 10 }));
}

#[test]
fn long_text_through_small_windows_is_the_whole_text_tokenized() {
    let (file, vocab, mem) = load("vocab-llama-spm.gguf");
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    let text: String = (0..400).map(|i| format!("wörd{i} ünïcödé  {}\t", "x".repeat(i % 13))).collect();
    let whole =
        tokenize(&file, &vocab, ModelLookup::Index(ix), &text, plain(1 << 16), 1 << 17, u32::MAX).unwrap();
    for window in [MIN_MODEL_WINDOW, 1000, 5000] {
        for lookup in [ModelLookup::Index(ix), ModelLookup::Scan] {
            let got = tokenize(&file, &vocab, lookup, &text, plain(1 << 16), window, 333).unwrap();
            assert_eq!(got, whole, "window {window}");
        }
    }
}

/// A fixture of `{"text", "ids"}` lines, ids from libllama's `llama_tokenize` with add_special
/// and parse_special on, through both lookups (scan mode on every `scan_every`-th line: each
/// window streams the vocab twice); returns the number of lines.
fn llama_fixture(vocab_file: &str, jsonl: &str, scan_every: usize) -> usize {
    let (file, vocab, mem) = load(vocab_file);
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    let lines = std::fs::read_to_string(format!("{FIXTURES}/{jsonl}")).unwrap();
    let opts = ModelOptions { max_tokens: 4096, truncate: false, add_special: true, parse_special: true };
    let mut n = 0;
    for (i, line) in lines.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = v["text"].as_str().unwrap();
        let want: Vec<u32> =
            v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let got = tokenize(&file, &vocab, ModelLookup::Index(ix), text, opts, 4096, u32::MAX).unwrap();
        assert_eq!(got, want, "line {} {text:?}", i + 1);
        if i % scan_every == 0 {
            let got = tokenize(&file, &vocab, ModelLookup::Scan, text, opts, 4096, 5000).unwrap();
            assert_eq!(got, want, "scan, line {} {text:?}", i + 1);
        }
        n += 1;
    }
    n
}

/// `random-*.jsonl`: tools/tokenizer-fixtures/random_texts.py.
#[test]
fn llama_spm_random_texts_match_llama_cpp() {
    assert_eq!(llama_fixture("vocab-llama-spm.gguf", "random-llama-spm.jsonl", 10), 3000);
}

#[test]
fn gemma3_random_texts_match_llama_cpp() {
    assert_eq!(llama_fixture("vocab-gemma3.gguf", "random-gemma3.jsonl", 10), 3000);
}

/// `names-*.jsonl` (tools/tokenizer-fixtures/name_texts.py): the names llama.cpp re-types by their
/// text, e.g. Gemma 3's user-defined `</s>` becomes a control token.
#[test]
fn names_llama_cpp_retypes_match_llama_cpp() {
    assert_eq!(llama_fixture("vocab-llama-spm.gguf", "names-llama-spm.jsonl", 1), 276);
    assert_eq!(llama_fixture("vocab-gemma3.gguf", "names-gemma3.jsonl", 1), 276);
}

#[test]
fn index_sizes_are_as_documented() {
    let (_, llama, _) = load("vocab-llama-spm.gguf");
    assert_eq!(TokenIndex::bytes_needed(&llama).unwrap(), 690_930);
    let (_, gemma, _) = load("vocab-gemma3.gguf");
    assert_eq!(TokenIndex::bytes_needed(&gemma).unwrap(), 6_247_537);
    assert_eq!(spm_work_bytes(false, 4096), 86 * 4096 + 17);
    assert_eq!(spm_work_bytes(true, 4096), 190 * 4096 + 10_257);
}
