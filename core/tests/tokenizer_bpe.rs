//! Byte-level BPE ("gpt2", Qwen2 pre-tokenizer) against llama.cpp: its own vocab test
//! (`qwen2.inp` / `.out`, tokenized by llama.cpp's test-tokenizer-0 without BOS and without
//! parsing control tokens), and random strings tokenized by libllama (fixture jsonl). Windows
//! and step budgets must not change the ids.

use stepembed_core::io::SliceSource;
use stepembed_core::tokenizer::{
    bpe_scan_bytes, bpe_work_bytes, read_model_vocab, BpeTokenize, ModelKind, ModelLookup, ModelOptions,
    ModelVocab, PreTokenizer, Step, TokenIndex, TokenIndexBuilder, MIN_MODEL_WINDOW,
};
use stepembed_core::{Error, InputError, Malformed, Unsupported};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tokenizer");

fn load(name: &str) -> (Vec<u8>, ModelVocab, Vec<u8>) {
    index(std::fs::read(format!("{FIXTURES}/{name}")).unwrap())
}

fn index(file: Vec<u8>) -> (Vec<u8>, ModelVocab, Vec<u8>) {
    let vocab = read_model_vocab(&mut SliceSource::new(&file), &mut vec![0u8; 4096]).unwrap();
    let mut mem = vec![0u8; TokenIndex::bytes_needed(&vocab).unwrap()];
    let mut b = TokenIndexBuilder::new(&vocab, &mut mem).unwrap();
    let mut scratch = vec![0u8; 4096];
    while b.step(&mut SliceSource::new(&file), &mut scratch, 1000).unwrap() == Step::Pending {}
    b.finish().unwrap();
    (file, vocab, mem)
}

fn tokenize(
    vocab: &ModelVocab,
    ix: TokenIndex<'_>,
    text: &str,
    opts: ModelOptions,
    window: usize,
    budget: u32,
) -> Result<Vec<u32>, Error> {
    let mut mem = vec![0u8; bpe_work_bytes(false, window)];
    let mut out = vec![0u32; opts.max_tokens];
    let mut t = BpeTokenize::new(vocab, ModelLookup::Index(ix), text, &mut mem, &mut out, opts)?;
    let mut io = SliceSource::new(&[]);
    let mut steps = 0u64;
    let mut seen = 0;
    while t.step(&mut io, budget)? == Step::Pending {
        steps += 1;
        assert!(steps < 10_000_000, "no progress");
        let (at, len) = t.progress();
        assert!(at >= seen && at <= len);
        seen = at;
    }
    assert!(t.is_done());
    assert_eq!(t.progress(), (text.len() as u64, text.len() as u64));
    Ok(t.ids().to_vec())
}

/// Scan mode: no index, the vocab and the merges streamed from `file`.
fn scan(
    file: &[u8],
    vocab: &ModelVocab,
    text: &str,
    opts: ModelOptions,
    window: usize,
    budget: u32,
) -> Result<Vec<u32>, Error> {
    let mut mem = vec![0u8; bpe_work_bytes(true, window)];
    let mut out = vec![0u32; opts.max_tokens];
    let mut t = BpeTokenize::new(vocab, ModelLookup::Scan, text, &mut mem, &mut out, opts)?;
    assert_eq!(t.window_bytes(), window);
    let mut io = SliceSource::new(file);
    let mut steps = 0u64;
    let mut seen = 0;
    while t.step(&mut io, budget)? == Step::Pending {
        steps += 1;
        assert!(steps < 100_000_000, "no progress");
        let (at, len) = t.progress();
        assert!(at >= seen && at <= len);
        seen = at;
    }
    assert!(t.is_done());
    assert_eq!(t.progress(), (text.len() as u64, text.len() as u64));
    Ok(t.ids().to_vec())
}

fn plain(max_tokens: usize) -> ModelOptions {
    ModelOptions { max_tokens, truncate: false, add_special: false, parse_special: false }
}

fn full(max_tokens: usize) -> ModelOptions {
    ModelOptions { max_tokens, truncate: false, add_special: true, parse_special: true }
}

/// llama.cpp's vocab test file: inputs separated by `\n__ggml_vocab_test__\n`, one output line
/// of space-separated ids per input.
fn vocab_test(name: &str) -> Vec<(String, Vec<u32>)> {
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

/// A fixture of `{"text", "ids"}` lines, ids from libllama's `llama_tokenize` with add_special
/// and parse_special on.
fn llama_fixture(name: &str) -> Vec<(String, Vec<u32>)> {
    let lines = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
    lines
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let ids = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            (v["text"].as_str().unwrap().to_owned(), ids)
        })
        .collect()
}

#[test]
fn qwen2_matches_llama_cpp_vocab_test() {
    let (_, vocab, mem) = load("vocab-qwen2.gguf");
    assert_eq!(vocab.kind(), ModelKind::Bpe(PreTokenizer::Qwen2));
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    let cases = vocab_test("qwen2");
    assert!(cases.len() > 30);
    for (text, want) in &cases {
        for (window, budget) in [(4096, u32::MAX), (MIN_MODEL_WINDOW, 1), (MIN_MODEL_WINDOW, 7), (1000, 997)]
        {
            let got = tokenize(&vocab, ix, text, plain(4096), window, budget).unwrap();
            assert_eq!(&got, want, "{text:?} window {window} budget {budget}");
        }
    }
}

/// `random-qwen2.jsonl`: `{"text", "ids"}` lines, ids from libllama's `llama_tokenize` with
/// add_special and parse_special on (tools/tokenizer-fixtures/random_texts.py).
#[test]
fn qwen2_random_texts_match_llama_cpp() {
    let (_, vocab, mem) = load("vocab-qwen2.gguf");
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    let cases = llama_fixture("random-qwen2.jsonl");
    assert_eq!(cases.len(), 3000);
    for (i, (text, want)) in cases.iter().enumerate() {
        let got = tokenize(&vocab, ix, text, full(4096), 4096, u32::MAX).unwrap();
        assert_eq!(&got, want, "line {} {text:?}", i + 1);
        if i % 10 == 0 {
            let got = tokenize(&vocab, ix, text, full(4096), MIN_MODEL_WINDOW, 13).unwrap();
            assert_eq!(&got, want, "small window, line {} {text:?}", i + 1);
        }
    }
}

/// The Qwen2 vocab with `tokenizer.ggml.pre = "llama3"` (as `vocab_only.py --pre llama3` writes
/// it): the Llama 3 split (digits three at a time), whole-word tokens unmerged, BOS added.
fn qwen2_as_llama3() -> (Vec<u8>, ModelVocab, Vec<u8>) {
    let file = std::fs::read(format!("{FIXTURES}/vocab-qwen2.gguf")).unwrap();
    let old: Vec<u8> =
        [&b"tokenizer.ggml.pre"[..], &8u32.to_le_bytes(), &5u64.to_le_bytes(), b"qwen2"].concat();
    let new: Vec<u8> =
        [&b"tokenizer.ggml.pre"[..], &8u32.to_le_bytes(), &6u64.to_le_bytes(), b"llama3"].concat();
    let at = file.windows(old.len()).position(|w| w == old.as_slice()).unwrap();
    let patched = [&file[..at], &new, &file[at + old.len()..]].concat();
    index(patched)
}

/// `random-qwen2-llama3.jsonl`: 1000 random texts tokenized by libllama with that vocab.
#[test]
fn llama3_split_random_texts_match_llama_cpp() {
    let (_, vocab, mem) = qwen2_as_llama3();
    assert_eq!(vocab.kind(), ModelKind::Bpe(PreTokenizer::Llama3));
    assert!(vocab.add_bos());
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    let cases = llama_fixture("random-qwen2-llama3.jsonl");
    assert_eq!(cases.len(), 1000);
    for (i, (text, want)) in cases.iter().enumerate() {
        let window = if i % 10 == 0 { MIN_MODEL_WINDOW } else { 4096 };
        let got = tokenize(&vocab, ix, text, full(4096), window, 1 + i as u32 % 50).unwrap();
        assert_eq!(&got, want, "line {} {text:?}", i + 1);
    }
}

/// `names-qwen2.jsonl` (tools/tokenizer-fixtures/name_texts.py): the names llama.cpp re-types by
/// their text, e.g. this vocab's ordinary token `</s>` becomes a control token; index and scan.
#[test]
fn names_llama_cpp_retypes_match_llama_cpp() {
    let (file, vocab, mem) = load("vocab-qwen2.gguf");
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    let cases = llama_fixture("names-qwen2.jsonl");
    assert_eq!(cases.len(), 276);
    assert!(cases.iter().any(|(t, ids)| t == "a</s>b" && ids.contains(&128247)));
    for (text, want) in &cases {
        let got = tokenize(&vocab, ix, text, full(4096), 4096, u32::MAX).unwrap();
        assert_eq!(&got, want, "index {text:?}");
        let got = scan(&file, &vocab, text, full(4096), 4096, u32::MAX).unwrap();
        assert_eq!(&got, want, "scan {text:?}");
    }
    // Without parse_special a re-typed name is text, as a control token is.
    let got = tokenize(&vocab, ix, "a</s>b", plain(64), 4096, u32::MAX).unwrap();
    assert!(!got.contains(&128247), "{got:?}");
}

#[test]
fn special_tokens_follow_the_options() {
    let (_, vocab, mem) = load("vocab-qwen2.gguf");
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    // Qwen2 adds neither BOS nor EOS.
    assert!(!vocab.add_bos() && !vocab.add_eos());
    // llama-tokenize: "Hello world<|im_start|> [PAD151646]x" -> 9707 1879 151644 220 151646 87.
    let text = "Hello world<|im_start|> [PAD151646]x";
    let got = tokenize(&vocab, ix, text, full(64), 4096, 1).unwrap();
    assert_eq!(got, [9707, 1879, 151644, 220, 151646, 87]);
    // Without parse_special the control token is text; the user-defined one is still matched.
    let got = tokenize(&vocab, ix, text, plain(64), 4096, 3).unwrap();
    assert!(!got.contains(&151644) && got.contains(&151646), "{got:?}");
    assert_eq!(tokenize(&vocab, ix, "", full(64), 4096, 1).unwrap(), Vec::<u32>::new());
    // Adjacent specials and specials at both ends.
    let got = tokenize(&vocab, ix, "<|im_end|><|im_end|>a<|endoftext|>", full(64), 4096, 2).unwrap();
    assert_eq!(got, [151645, 151645, 64, 151643]);
}

#[test]
fn truncation_keeps_the_first_ids() {
    let (_, vocab, mem) = load("vocab-qwen2.gguf");
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let whole = tokenize(&vocab, ix, &text, plain(4096), 4096, u32::MAX).unwrap();
    for max in [1usize, 5, 17, whole.len()] {
        let opts = ModelOptions { max_tokens: max, truncate: true, ..plain(max) };
        let got = tokenize(&vocab, ix, &text, opts, MIN_MODEL_WINDOW, 50).unwrap();
        assert_eq!(got, whole[..max.min(whole.len())]);
    }
    let err = tokenize(&vocab, ix, &text, plain(10), 4096, 50).unwrap_err();
    assert_eq!(err, Error::Input(InputError::TooManyTokens { tokens: 11, max: 10 }));
}

#[test]
fn long_text_through_small_windows_is_the_whole_text_tokenized() {
    let (_, vocab, mem) = load("vocab-qwen2.gguf");
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    let text: String =
        (0..400).map(|i| format!("wörd{i} ünïcödé  {}\t<|im_end|>", "x".repeat(i % 13))).collect();
    let whole = tokenize(&vocab, ix, &text, full(1 << 16), 1 << 17, u32::MAX).unwrap();
    for window in [MIN_MODEL_WINDOW, 1000] {
        assert_eq!(
            tokenize(&vocab, ix, &text, full(1 << 16), window, 333).unwrap(),
            whole,
            "window {window}"
        );
    }
}

#[test]
fn a_word_longer_than_the_window_is_an_error() {
    let (_, vocab, mem) = load("vocab-qwen2.gguf");
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    let text = "a".repeat(5000);
    let err = tokenize(&vocab, ix, &text, plain(4096), 1000, 100).unwrap_err();
    assert!(matches!(err, Error::BufferTooSmall { .. }), "{err:?}");
    // With a window that holds it, it is tokenized.
    assert!(!tokenize(&vocab, ix, &text, plain(4096), 8192, 100).unwrap().is_empty());
}

#[test]
fn other_vocabs_and_small_memory_are_refused() {
    let (_, vocab, mem) = load("vocab-qwen2.gguf");
    let mut work = vec![0u8; bpe_work_bytes(false, 4096)];
    let mut out = vec![0u32; 16];
    // Scan mode needs its own (larger) minimum.
    let mut small = vec![0u8; bpe_work_bytes(true, MIN_MODEL_WINDOW) - 8];
    let err = BpeTokenize::new(&vocab, ModelLookup::Scan, "x", &mut small, &mut out, plain(16)).unwrap_err();
    assert_eq!(
        err,
        Error::BufferTooSmall { needed: bpe_work_bytes(true, MIN_MODEL_WINDOW), given: small.len() }
    );
    let (_, spm, spm_mem) = load("vocab-llama-spm.gguf");
    let spm_ix = TokenIndex::open(&spm, &spm_mem).unwrap();
    let err =
        BpeTokenize::new(&spm, ModelLookup::Index(spm_ix), "x", &mut work, &mut out, plain(16)).unwrap_err();
    assert!(matches!(err, Error::Unsupported(Unsupported::TokenizerModel(_))), "{err:?}");
    // An index of another vocab.
    let err = BpeTokenize::new(&vocab, ModelLookup::Index(spm_ix), "x", &mut work, &mut out, plain(16))
        .unwrap_err();
    assert_eq!(err, Error::PlanMismatch);
    let _ = mem;
}

#[test]
fn index_and_work_sizes_are_as_documented() {
    let (_, vocab, _) = load("vocab-qwen2.gguf");
    assert_eq!(vocab.count(), 151_936);
    assert_eq!(vocab.merges().unwrap().count, 151_387);
    assert_eq!(TokenIndex::bytes_needed(&vocab).unwrap(), 5_163_435);
    assert_eq!(bpe_work_bytes(false, 4096), 77 * 4096 + 7);
    assert_eq!(bpe_work_bytes(true, 4096), bpe_scan_bytes(4096));
    assert_eq!(bpe_scan_bytes(4096), 98 * 4096 + 18_695);
    assert_eq!(bpe_scan_bytes(MIN_MODEL_WINDOW), 43_783);
}

#[test]
fn scan_matches_llama_cpp_vocab_test() {
    let (file, vocab, _) = load("vocab-qwen2.gguf");
    for (i, (text, want)) in vocab_test("qwen2").iter().enumerate() {
        let got = scan(&file, &vocab, text, plain(4096), 4096, u32::MAX).unwrap();
        assert_eq!(&got, want, "{text:?}");
        if i % 4 == 0 {
            let got = scan(&file, &vocab, text, plain(4096), MIN_MODEL_WINDOW, 997).unwrap();
            assert_eq!(&got, want, "{text:?} small window");
        }
    }
}

/// Scan mode gives llama.cpp's ids on all of `random-qwen2.jsonl` (and so the index's), also
/// through small windows and budgets.
#[test]
fn scan_random_texts_match_llama_cpp() {
    let (file, vocab, _) = load("vocab-qwen2.gguf");
    let cases = llama_fixture("random-qwen2.jsonl");
    assert_eq!(cases.len(), 3000);
    for (i, (text, want)) in cases.iter().enumerate() {
        let (window, budget) =
            if i % 10 == 0 { (MIN_MODEL_WINDOW, 1 + i as u32 % 997) } else { (4096, u32::MAX) };
        let got = scan(&file, &vocab, text, full(4096), window, budget).unwrap();
        assert_eq!(&got, want, "line {} {text:?} window {window}", i + 1);
    }
}

#[test]
fn scan_llama3_split_random_texts_match_llama_cpp() {
    let (file, vocab, _) = qwen2_as_llama3();
    let cases = llama_fixture("random-qwen2-llama3.jsonl");
    assert_eq!(cases.len(), 1000);
    for (i, (text, want)) in cases.iter().enumerate() {
        let window = if i % 10 == 0 { MIN_MODEL_WINDOW } else { 4096 };
        let got = scan(&file, &vocab, text, full(4096), window, 1 + (i as u32 % 50) * 1000).unwrap();
        assert_eq!(&got, want, "line {} {text:?}", i + 1);
    }
}

#[test]
fn scan_equals_index_on_long_texts_specials_and_truncation() {
    let (file, vocab, mem) = load("vocab-qwen2.gguf");
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    // Many batches: special tokens, long words and whitespace runs across batch ends.
    let text: String = (0..400)
        .map(|i| format!("wörd{i} ünïcödé  {}\t<|im_end|>{}\n\n   ", "x".repeat(i % 13), " ".repeat(i % 7)))
        .collect();
    let whole = tokenize(&vocab, ix, &text, full(1 << 16), 1 << 17, u32::MAX).unwrap();
    for (window, budget) in [(MIN_MODEL_WINDOW, 333), (1000, 5000), (4096, u32::MAX)] {
        assert_eq!(
            scan(&file, &vocab, &text, full(1 << 16), window, budget).unwrap(),
            whole,
            "window {window}"
        );
    }
    // Special tokens per the options, as in index mode.
    let text = "Hello world<|im_start|> [PAD151646]x";
    assert_eq!(scan(&file, &vocab, text, full(64), 4096, 1).unwrap(), [9707, 1879, 151644, 220, 151646, 87]);
    assert_eq!(
        scan(&file, &vocab, text, plain(64), 4096, 3).unwrap(),
        tokenize(&vocab, ix, text, plain(64), 4096, 3).unwrap()
    );
    let got = scan(&file, &vocab, "<|im_end|><|im_end|>a<|endoftext|>", full(64), 4096, 2).unwrap();
    assert_eq!(got, [151645, 151645, 64, 151643]);
    assert_eq!(scan(&file, &vocab, "", full(64), 4096, 1).unwrap(), Vec::<u32>::new());
    // Truncation keeps the first ids; without it, too many ids is an error.
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let whole = tokenize(&vocab, ix, &text, plain(4096), 4096, u32::MAX).unwrap();
    for max in [1usize, 5, 17, whole.len()] {
        let opts = ModelOptions { max_tokens: max, truncate: true, ..plain(max) };
        assert_eq!(
            scan(&file, &vocab, &text, opts, MIN_MODEL_WINDOW, 50).unwrap(),
            whole[..max.min(whole.len())]
        );
    }
    let err = scan(&file, &vocab, &text, plain(10), 4096, 50).unwrap_err();
    assert_eq!(err, Error::Input(InputError::TooManyTokens { tokens: 11, max: 10 }));
    // A word longer than the window is the same error as with an index.
    let long = "a".repeat(5000);
    assert!(matches!(scan(&file, &vocab, &long, plain(4096), 1000, 100), Err(Error::BufferTooSmall { .. })));
    assert_eq!(
        scan(&file, &vocab, &long, plain(4096), 8192, 100000).unwrap(),
        tokenize(&vocab, ix, &long, plain(4096), 8192, 100).unwrap()
    );
}

/// A truncated file, or merge and token lengths that run past their arrays, are typed errors of
/// the stream (never a panic, never ids).
#[test]
fn scan_of_a_corrupt_vocab_is_a_typed_error() {
    let (file, vocab, _) = load("vocab-qwen2.gguf");
    let text = "Hello world, this is a test <|im_start|> of corrupt files.";
    let merges = vocab.merges().unwrap();
    // Cut inside the merges (the vocab's metadata still says they are there).
    let cut = &file[..(merges.offset + merges.byte_len / 2) as usize];
    let err = scan(cut, &vocab, text, full(256), 4096, 10_000).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Malformed { what: Malformed::Truncated | Malformed::LengthTooLarge(_), .. }
                | Error::Io { .. }
        ),
        "{err:?}"
    );
    // A merge length past the array's end.
    let mut bad = file.clone();
    let m0 = merges.offset as usize;
    bad[m0..m0 + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let err = scan(&bad, &vocab, text, full(256), 4096, 10_000).unwrap_err();
    assert!(matches!(err, Error::Malformed { what: Malformed::LengthTooLarge(_), .. }), "{err:?}");
    // A token length past the array's end (the specials pass reads the tokens first).
    let mut bad = file.clone();
    let t0 = vocab.tokens().offset as usize;
    bad[t0..t0 + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let err = scan(&bad, &vocab, text, full(256), 4096, 10_000).unwrap_err();
    assert!(matches!(err, Error::Malformed { what: Malformed::LengthTooLarge(_), .. }), "{err:?}");
    // The error poisons the tokenizer: a later step returns it again.
    let mut mem = vec![0u8; bpe_work_bytes(true, 4096)];
    let mut out = vec![0u32; 256];
    let mut t = BpeTokenize::new(&vocab, ModelLookup::Scan, text, &mut mem, &mut out, full(256)).unwrap();
    let mut io = SliceSource::new(&bad);
    let e1 = loop {
        match t.step(&mut io, 1000) {
            Ok(Step::Pending) => {}
            Ok(Step::Done) => panic!("tokenized a corrupt vocab"),
            Err(e) => break e,
        }
    };
    assert_eq!(t.step(&mut io, 1000).unwrap_err(), e1);
    // Random byte damage in the token and merge arrays: an error or ids of the vocab, no panic.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..40 {
        let mut bad = file.clone();
        for _ in 0..8 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = t0 + (seed as usize) % (bad.len() - t0);
            bad[at] = (seed >> 32) as u8;
        }
        if let Ok(ids) = scan(&bad, &vocab, text, full(256), MIN_MODEL_WINDOW, 7777) {
            assert!(ids.iter().all(|&i| i < vocab.count()));
        }
    }
}

/// A GGUF file holding only a `gpt2` / `qwen2` vocab with these tokens and merges.
fn tiny_bpe(tokens: &[&str], merges: &[&str]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn kv_str(out: &mut Vec<u8>, k: &str, v: &str) {
        string(out, k);
        out.extend_from_slice(&8u32.to_le_bytes());
        string(out, v);
    }
    fn kv_arr(out: &mut Vec<u8>, k: &str, v: &[&str]) {
        string(out, k);
        out.extend_from_slice(&9u32.to_le_bytes());
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        for s in v {
            string(out, s);
        }
    }
    let mut f = b"GGUF".to_vec();
    f.extend_from_slice(&3u32.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes());
    f.extend_from_slice(&4u64.to_le_bytes());
    kv_str(&mut f, "tokenizer.ggml.model", "gpt2");
    kv_str(&mut f, "tokenizer.ggml.pre", "qwen2");
    kv_arr(&mut f, "tokenizer.ggml.tokens", tokens);
    kv_arr(&mut f, "tokenizer.ggml.merges", merges);
    f
}

/// A vocab whose merge "ab c" ranks before "a b", the merge that makes its left side: the merge
/// pass alone would stop at "ab" "c"; the verify pass sees the pair born after its rank and the
/// word is redone one lowest-rank merge at a time, as llama.cpp (and the index) merge it.
#[test]
fn scan_redoes_words_whose_merges_break_the_rank_order() {
    let file = tiny_bpe(&["a", "b", "c", "ab", "abc", "bc", "x"], &["ab c", "a b", "b c", "x x"]);
    let (file, vocab, mem) = index(file);
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    for text in ["abc", "abc abc", "xabcx", "abcabc", "cab", "bcab", "xxxx abc"] {
        let want = tokenize(&vocab, ix, text, plain(64), 4096, u32::MAX).unwrap();
        let mut mem = vec![0u8; bpe_work_bytes(true, 4096)];
        let mut out = vec![0u32; 64];
        let mut t = BpeTokenize::new(&vocab, ModelLookup::Scan, text, &mut mem, &mut out, plain(64)).unwrap();
        let got = t.run(&mut SliceSource::new(&file)).unwrap().to_vec();
        assert_eq!(got, want, "{text:?}");
        let stats = t.scan_stats().unwrap();
        assert_eq!(stats.exact_words > 0, text.contains("abc"), "{text:?} {stats:?}");
    }
    assert_eq!(tokenize(&vocab, ix, "abc", plain(64), 4096, 1).unwrap(), [4]);
}

/// Random texts of many batches (special tokens, whitespace runs, digits, letters of several
/// scripts, emoji) through small windows and budgets: scan mode gives the index's ids, or both
/// refuse a word longer than the window.
#[test]
fn scan_equals_index_on_random_multi_batch_texts() {
    let (file, vocab, mem) = load("vocab-qwen2.gguf");
    let ix = TokenIndex::open(&vocab, &mem).unwrap();
    let palette = [
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        " \n ",
        "a",
        "Hello",
        " world",
        "ünï",
        "日本語",
        "1",
        "2024",
        "'s",
        "'LL",
        "!!",
        "...",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "[PAD151646]",
        "<|im_",
        "|>",
        "👍🏽",
        "\u{3000}",
        "x",
        "-",
        "é",
        "ß",
        "ـ",
        "ي",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for case in 0..120 {
        let n = (next() % 400) as usize;
        let text: String = (0..n).map(|_| palette[(next() % palette.len() as u64) as usize]).collect();
        let opts = if case % 3 == 0 { plain(1 << 14) } else { full(1 << 14) };
        let want = tokenize(&vocab, ix, &text, opts, 4096, u32::MAX);
        let window = [MIN_MODEL_WINDOW, 300, 1000][case % 3];
        let index_small = tokenize(&vocab, ix, &text, opts, window, 4096);
        let got = scan(&file, &vocab, &text, opts, window, 1 + (next() % 20_000) as u32);
        match (&got, &index_small) {
            (Err(Error::BufferTooSmall { .. }), Err(Error::BufferTooSmall { .. })) => {}
            _ => assert_eq!(got, want, "case {case} window {window}: {text:?}"),
        }
    }
}
