//! The tokenizer against Hugging Face's ids: llama.cpp's BERT test set, 500 random strings, and
//! the reference ids of every model fixture — in both lookup modes, on both vocab files — plus
//! properties (never panics, [CLS]…[SEP], modes agree, step budgets and windows do not matter,
//! corrupted vocabs are handled).

use std::path::PathBuf;

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use stepembed_core::gguf::{Event, Reader, Value, MIN_SCRATCH};
use stepembed_core::io::SliceSource;
use stepembed_core::tokenizer::{
    read_vocab, work_bytes, IndexBuilder, Lookup, Mode, Options, Step, Tokenize, Vocab, VocabIndex,
    VocabMeta, MIN_WINDOW_CHARS,
};
use stepembed_core::{Error, InputError, Malformed};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn read(rel: &str) -> Vec<u8> {
    let path = fixtures().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A vocab file in memory with its vocab and a built index (its memory leaked: tests only).
struct Fixture {
    file: Vec<u8>,
    vocab: Vocab,
    index: VocabIndex<'static>,
}

impl Fixture {
    fn load(rel: &str) -> Fixture {
        Fixture::from_bytes(read(rel)).expect("fixture vocab loads")
    }

    fn from_bytes(file: Vec<u8>) -> Result<Fixture, Error> {
        let mut scratch = vec![0u8; 4096];
        let vocab = read_vocab(&mut SliceSource::new(&file), &mut scratch)?;
        let mem = vec![0u8; VocabIndex::bytes_needed(&vocab)?].leak();
        let mut b = IndexBuilder::new(&vocab, mem)?;
        let mut io = SliceSource::new(&file);
        while b.step(&mut io, &mut scratch, 1000)? == Step::Pending {}
        let index = b.finish()?;
        Ok(Fixture { file, vocab, index })
    }
}

/// Tokenizes `text` with the given mode/window/budget; `Err` passes the error through.
fn tokenize_with(
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
    assert!(t.window_chars() >= window, "window {} < {window}", t.window_chars());
    let mut io = SliceSource::new(file);
    let mut steps = 0u64;
    while t.step(&mut io, budget)? == Step::Pending {
        steps += 1;
        assert!(steps < 1 << 32);
    }
    Ok(t.ids().to_vec())
}

const NO_LIMIT: Options = Options { max_tokens: 1 << 16, truncate: false };

/// Both modes, default windows, one big budget.
fn both(fx: &Fixture, text: &str, opts: Options) -> (Result<Vec<u32>, Error>, Result<Vec<u32>, Error>) {
    let a =
        tokenize_with(&fx.file, &fx.vocab, Lookup::Index(fx.index), text, opts, MIN_WINDOW_CHARS, u32::MAX);
    let b = tokenize_with(&fx.file, &fx.vocab, Lookup::Scan, text, opts, 2048, u32::MAX);
    (a, b)
}

fn ids_line(line: &str) -> Vec<u32> {
    line.split_whitespace().map(|t| t.parse().unwrap()).collect()
}

const VOCAB_FILES: [&str; 2] = ["models/vocab-bert-uncased.gguf", "models/minilm-l6-Q4_K_M.gguf"];

/// Counts agreement of both modes with `expected` over `cases`; prints the numbers and panics on
/// any difference.
fn check_corpus(name: &str, fx: &Fixture, cases: &[(String, Vec<u32>, Options)]) {
    let (mut ok_index, mut ok_scan) = (0, 0);
    let mut failures = Vec::new();
    for (text, expected, opts) in cases {
        let (a, b) = both(fx, text, *opts);
        let a = a.unwrap_or_else(|e| panic!("{name}: index mode failed on {text:?}: {e}"));
        let b = b.unwrap_or_else(|e| panic!("{name}: scan mode failed on {text:?}: {e}"));
        if &a == expected {
            ok_index += 1;
        } else {
            failures.push(format!("index {text:?}\n  got  {a:?}\n  want {expected:?}"));
        }
        if &b == expected {
            ok_scan += 1;
        } else {
            failures.push(format!("scan {text:?}\n  got  {b:?}\n  want {expected:?}"));
        }
    }
    eprintln!("{name}: index {ok_index}/{n}, scan {ok_scan}/{n}", n = cases.len());
    assert!(failures.is_empty(), "{name}: {} mismatches:\n{}", failures.len(), failures.join("\n"));
}

fn bge_cases() -> Vec<(String, Vec<u32>, Options)> {
    let inp = String::from_utf8(read("tokenizer/bert-bge.inp")).unwrap();
    let out = String::from_utf8(read("tokenizer/bert-bge.out")).unwrap();
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(texts.pop(), Some(""), "every input is terminated by the marker");
    let expected: Vec<&str> = out.lines().collect();
    assert_eq!(texts.len(), 46);
    assert_eq!(expected.len(), texts.len());
    texts
        .iter()
        .zip(expected)
        .map(|(t, e)| {
            let mut ids = vec![101];
            ids.extend(ids_line(e));
            ids.push(102);
            (t.to_string(), ids, NO_LIMIT)
        })
        .collect()
}

#[test]
fn llama_cpp_bert_bge_test_set() {
    for file in VOCAB_FILES {
        check_corpus(&format!("bert-bge ({file})"), &Fixture::load(file), &bge_cases());
    }
}

fn random_cases() -> Vec<(String, Vec<u32>, Options)> {
    let text = String::from_utf8(read("tokenizer-random.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ids = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            (v["text"].as_str().unwrap().to_string(), ids, NO_LIMIT)
        })
        .collect()
}

#[test]
fn hugging_face_random_strings() {
    let cases = random_cases();
    assert_eq!(cases.len(), 500);
    for file in VOCAB_FILES {
        check_corpus(&format!("tokenizer-random ({file})"), &Fixture::load(file), &cases);
    }
}

/// `{arch}.context_length` of a model file.
fn context_length(file: &[u8]) -> usize {
    let mut scratch = vec![0u8; MIN_SCRATCH.max(4096)];
    let mut reader = Reader::new(&mut scratch).unwrap();
    let mut io = SliceSource::new(file);
    loop {
        match reader.next_event(&mut io).unwrap() {
            Event::Kv { key, value: Value::U32(n) } if key.ends_with(".context_length") => return n as usize,
            Event::Done(_) => panic!("no context length"),
            _ => {}
        }
    }
}

#[test]
fn reference_ids_of_every_model() {
    let mut models = 0;
    for entry in std::fs::read_dir(fixtures().join("reference")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            continue;
        }
        let model = path.file_stem().unwrap().to_str().unwrap().to_string();
        let fx = Fixture::load(&format!("models/{model}.gguf"));
        let max_tokens = context_length(&fx.file);
        let opts = Options { max_tokens, truncate: true };
        let cases: Vec<_> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let ids: Vec<u32> =
                    v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
                (v["text"].as_str().unwrap().to_string(), ids, opts)
            })
            .collect();
        assert_eq!(cases.len(), 25);
        let longest = cases.iter().map(|(_, ids, _)| ids.len()).max().unwrap();
        // The 602-token text is cut at 512 for the bert models; nomic-bert's context is longer.
        assert!(longest == max_tokens || max_tokens > 602, "{model}: {longest} tokens at most");
        check_corpus(&format!("reference {model} (context {max_tokens})"), &fx, &cases);
        models += 1;
    }
    assert!(models >= 5);
}

fn vocab_fixture() -> Fixture {
    Fixture::load(VOCAB_FILES[0])
}

fn tok(fx: &Fixture, text: &str) -> Vec<u32> {
    let (a, b) = both(fx, text, NO_LIMIT);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "modes differ on {text:?}");
    a
}

#[test]
fn hugging_face_rules() {
    let fx = vocab_fixture();
    // Added tokens are matched first, case-sensitively; `[cls]` is text.
    assert_eq!(tok(&fx, "hello [SEP] world"), [101, 7592, 102, 2088, 102]);
    assert_eq!(tok(&fx, "[CLS][PAD][MASK][UNK]x"), [101, 101, 0, 103, 100, 1060, 102]);
    assert_ne!(tok(&fx, "[cls]"), [101, 101, 102]);
    assert_eq!(tok(&fx, "[cls]"), tok(&fx, "[ cls ]"));
    // Controls vanish before the whitespace test: the letters around them join.
    assert_eq!(tok(&fx, "ab\x0ccd"), tok(&fx, "abcd"));
    assert_eq!(tok(&fx, "ab\u{200b}cd\u{ad}"), tok(&fx, "abcd"));
    assert_eq!(tok(&fx, "a\tb\nc\rd"), tok(&fx, "a b c d"));
    // Accents go, case goes, CJK is split per char.
    assert_eq!(tok(&fx, "Héllo WÖRLD"), tok(&fx, "hello world"));
    assert_eq!(tok(&fx, "東京"), tok(&fx, "東 京"));
    // Empty and blank texts are [CLS] [SEP].
    assert_eq!(tok(&fx, ""), [101, 102]);
    assert_eq!(tok(&fx, " \t\n\u{3000}\0\u{fffd}"), [101, 102]);
    // 100 chars: tokenized; 101: [UNK].
    let w100 = "ab".repeat(50);
    assert!(tok(&fx, &w100).len() > 3);
    assert_eq!(tok(&fx, &format!("{w100}a")), [101, 100, 102]);
    assert_eq!(tok(&fx, &format!("x {w100}a y")), [101, 1060, 100, 1061, 102]);
}

#[test]
fn truncation_and_limits() {
    let fx = vocab_fixture();
    let text = "hello world ".repeat(10);
    let full = tok(&fx, &text);
    assert_eq!(full.len(), 22);
    for max in 2..25 {
        let opts = Options { max_tokens: max, truncate: true };
        let (a, b) = both(&fx, &text, opts);
        let want: Vec<u32> = if max >= full.len() {
            full.clone()
        } else {
            let mut v = full[..max - 1].to_vec();
            v.push(102);
            v
        };
        assert_eq!(a.unwrap(), want, "index, max {max}");
        assert_eq!(b.unwrap(), want, "scan, max {max}");
        let strict = Options { max_tokens: max, truncate: false };
        let (a, b) = both(&fx, &text, strict);
        if max >= full.len() {
            assert_eq!(a.unwrap(), full);
            assert_eq!(b.unwrap(), full);
        } else {
            let e = Error::Input(InputError::TooManyTokens { tokens: max + 1, max });
            assert_eq!(a, Err(e));
            assert_eq!(b, Err(e));
        }
    }
    let ix = fx.index;
    let mut mem = vec![0u8; work_bytes(Mode::Index, MIN_WINDOW_CHARS)];
    let mut out = vec![0u32; 4];
    let opts = |max_tokens| Options { max_tokens, truncate: true };
    assert_eq!(
        Tokenize::new(&fx.vocab, Lookup::Index(ix), "x", &mut mem, &mut out, opts(1)).err(),
        Some(Error::BufferTooSmall { needed: 2, given: 1 })
    );
    assert_eq!(
        Tokenize::new(&fx.vocab, Lookup::Index(ix), "x", &mut mem, &mut out, opts(5)).err(),
        Some(Error::BufferTooSmall { needed: 5, given: 4 })
    );
}

#[test]
fn work_memory_is_as_documented() {
    assert_eq!(work_bytes(Mode::Scan, 1000), 22 * 1000 + 10_953);
    assert_eq!(work_bytes(Mode::Index, 1000), 18 * 1000 + 1_737);
    let fx = vocab_fixture();
    assert_eq!(VocabIndex::bytes_needed(&fx.vocab).unwrap(), 565_646);
    assert!(std::mem::size_of::<Vocab>() <= 288);
}

#[test]
fn work_memory_is_exactly_sized_at_any_alignment() {
    let fx = vocab_fixture();
    let (file, vocab, ix) = (&fx.file, fx.vocab, fx.index);
    let opts = Options { max_tokens: 64, truncate: true };
    let text = "The quick brown fox jumps over the lazy dog.";
    let want =
        tokenize_with(file, &vocab, Lookup::Index(ix), text, opts, MIN_WINDOW_CHARS, u32::MAX).unwrap();
    for (lookup, window) in
        [(Lookup::Index(ix), MIN_WINDOW_CHARS), (Lookup::Scan, MIN_WINDOW_CHARS), (Lookup::Scan, 777)]
    {
        let need = work_bytes(lookup.mode(), window);
        let mut backing = vec![0u8; need + 8];
        for shift in 0..4 {
            let mut out = vec![0u32; 64];
            let mem = &mut backing[shift..shift + need];
            let mut t = Tokenize::new(&vocab, lookup, text, mem, &mut out, opts).unwrap();
            assert!(t.window_chars() >= window);
            assert_eq!(t.run(&mut SliceSource::new(file)).unwrap(), want.as_slice());
            let mut out = vec![0u32; 64];
            let small = &mut backing[shift..shift + need - 7];
            match Tokenize::new(&vocab, lookup, text, small, &mut out, opts) {
                Err(Error::BufferTooSmall { .. }) => assert_eq!(window, MIN_WINDOW_CHARS),
                Ok(t) => assert!(t.window_chars() < window && window > MIN_WINDOW_CHARS),
                Err(e) => panic!("{e}"),
            }
        }
    }
    let mut out = vec![0u32; 64];
    let mut mem = vec![0u8; work_bytes(Mode::Scan, MIN_WINDOW_CHARS) - 7];
    assert!(matches!(
        Tokenize::new(&vocab, Lookup::Scan, text, &mut mem, &mut out, opts),
        Err(Error::BufferTooSmall { needed, .. }) if needed == work_bytes(Mode::Scan, MIN_WINDOW_CHARS)
    ));
    // The index of another vocab is refused.
    let other_ix = Fixture::load(VOCAB_FILES[1]).index;
    let mut mem = vec![0u8; work_bytes(Mode::Index, MIN_WINDOW_CHARS)];
    assert_eq!(
        Tokenize::new(&vocab, Lookup::Index(other_ix), text, &mut mem, &mut out, opts).err(),
        Some(Error::PlanMismatch)
    );
}

#[test]
fn vocab_metadata_errors() {
    let fx = vocab_fixture();
    let tokens = fx.vocab.tokens();
    let mut meta = VocabMeta::new();
    assert_eq!(
        meta.loader().err(),
        Some(Error::malformed(Malformed::MissingKey("tokenizer.ggml.tokens"), 0))
    );
    meta.observe("tokenizer.ggml.tokens", &Value::Array(tokens)).unwrap();
    meta.observe("tokenizer.ggml.cls_token_id", &Value::U32(101)).unwrap();
    meta.observe("tokenizer.ggml.unknown_token_id", &Value::I32(100)).unwrap();
    assert_eq!(
        meta.loader().err(),
        Some(Error::malformed(Malformed::MissingKey("tokenizer.ggml.seperator_token_id"), 0))
    );
    meta.observe("tokenizer.ggml.seperator_token_id", &Value::U64(30522)).unwrap();
    assert_eq!(meta.loader().err(), Some(Error::malformed(Malformed::BadVocab, tokens.offset)));
    meta.observe("tokenizer.ggml.seperator_token_id", &Value::U32(102)).unwrap();
    assert!(meta.observe("tokenizer.ggml.mask_token_id", &Value::F32(1.0)).is_err());
    assert!(matches!(
        meta.observe(
            "tokenizer.ggml.model",
            &Value::String(stepembed_core::gguf::Str { offset: 0, len: 5, head: b"llama" })
        ),
        Err(Error::Unsupported(_))
    ));
    meta.observe("general.name", &Value::U8(1)).unwrap();
    let mut loader = meta.loader().unwrap();
    let mut io = SliceSource::new(&fx.file);
    let mut scratch = vec![0u8; 512];
    assert_eq!(loader.vocab().err(), Some(Error::InvalidState));
    let mut steps = 0;
    while loader.step(&mut io, &mut scratch, 1).unwrap() == Step::Pending {
        steps += 1;
    }
    assert!(steps >= 100, "one entry per step up to id 102");
    let v = loader.vocab().unwrap();
    assert_eq!((v.cls(), v.sep(), v.unk(), v.pad(), v.mask()), (101, 102, 100, None, None));
    assert_eq!(v.count(), 30522);
    assert!(matches!(loader.step(&mut io, &mut [0u8; 16], 1), Ok(Step::Done)));
    let mut loader = meta.loader().unwrap();
    assert_eq!(
        loader.step(&mut io, &mut [0u8; 16], 1).err(),
        Some(Error::BufferTooSmall { needed: 512, given: 16 })
    );
}

// ---- properties ----

/// Text that exercises the tokenizer: mixes of vocab words, punctuation, special tokens,
/// combining marks, CJK, controls, and arbitrary chars.
#[derive(Debug, Clone)]
struct Text(String);

impl Arbitrary for Text {
    fn arbitrary(g: &mut Gen) -> Text {
        const PARTS: &[&str] = &[
            "the",
            "The",
            "playing",
            "un",
            "##able",
            " ",
            "  ",
            "\t",
            "\n",
            ".",
            ",",
            "!?",
            "[SEP]",
            "[CLS]",
            "[MASK]",
            "[PAD]",
            "[UNK]",
            "[sep]",
            "[SEP",
            "é",
            "e\u{301}",
            "\u{301}",
            "\u{0903}",
            "\u{1d165}",
            "\u{1d16d}\u{1d165}",
            "東京",
            "\u{f900}",
            "한국어",
            "\u{0130}",
            "ß",
            "ﬀ",
            "\u{200b}",
            "\u{ad}",
            "\0",
            "\u{fffd}",
            "\u{85}",
            "\u{3000}",
            "🦙",
            "123",
            "4,50",
            "€",
            "xxxxxxxxxxxxxxxxxxxxxxxx",
            "ǅ",
            "\u{e000}",
            "\u{10ffff}",
            "\u{0345}",
            "a\u{0327}\u{0301}",
            "\u{0f71}\u{0f72}",
        ];
        let n = usize::arbitrary(g) % 40;
        let mut s = String::new();
        for _ in 0..n {
            match u8::arbitrary(g) % 4 {
                0 => s.push(char::arbitrary(g)),
                1 => s.push_str(&String::arbitrary(g)),
                _ => s.push_str(g.choose(PARTS).unwrap()),
            }
        }
        Text(s)
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Text>> {
        Box::new(self.0.shrink().map(Text))
    }
}

fn shared() -> &'static Fixture {
    static S: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    S.get_or_init(vocab_fixture)
}

fn with_index<R>(f: impl FnOnce(&[u8], &Vocab, VocabIndex<'static>) -> R) -> R {
    let s = shared();
    f(&s.file, &s.vocab, s.index)
}

#[test]
fn property_modes_agree_and_frame_with_cls_sep() {
    fn prop(t: Text, max: u16, truncate: bool) -> TestResult {
        let opts = Options { max_tokens: 2 + usize::from(max % 200), truncate };
        with_index(|file, vocab, ix| {
            let a = tokenize_with(file, vocab, Lookup::Index(ix), &t.0, opts, MIN_WINDOW_CHARS, u32::MAX);
            let b = tokenize_with(file, vocab, Lookup::Scan, &t.0, opts, 300, u32::MAX);
            if a != b {
                return TestResult::error(format!("{:?}: index {a:?} scan {b:?}", t.0));
            }
            match a {
                Ok(ids) => TestResult::from_bool(
                    ids.len() >= 2
                        && ids.len() <= opts.max_tokens
                        && ids[0] == 101
                        && *ids.last().unwrap() == 102
                        && ids.iter().all(|&id| id < vocab.count()),
                ),
                Err(Error::Input(InputError::TooManyTokens { tokens, max })) => {
                    TestResult::from_bool(!truncate && tokens == max + 1 && max == opts.max_tokens)
                }
                Err(e) => TestResult::error(format!("{e}")),
            }
        })
    }
    QuickCheck::new().tests(300).quickcheck(prop as fn(Text, u16, bool) -> TestResult);
}

#[test]
fn property_budgets_and_windows_do_not_matter() {
    fn prop(t: Text, budget: u8, window: u16) -> TestResult {
        let opts = Options { max_tokens: 512, truncate: true };
        let budget = 1 + u32::from(budget % 64);
        let window = MIN_WINDOW_CHARS + usize::from(window % 300);
        with_index(|file, vocab, ix| {
            let want = tokenize_with(file, vocab, Lookup::Index(ix), &t.0, opts, MIN_WINDOW_CHARS, u32::MAX);
            for (lookup, w) in [(Lookup::Index(ix), window), (Lookup::Scan, window)] {
                let got = tokenize_with(file, vocab, lookup, &t.0, opts, w, budget);
                if got != want {
                    return TestResult::error(format!(
                        "{:?} budget {budget} window {w}: {got:?} vs {want:?}",
                        t.0
                    ));
                }
            }
            TestResult::passed()
        })
    }
    QuickCheck::new().tests(150).quickcheck(prop as fn(Text, u8, u16) -> TestResult);
}

#[test]
fn property_never_panics_on_any_str() {
    fn prop(s: String) -> bool {
        let opts = Options { max_tokens: 128, truncate: true };
        with_index(|file, vocab, ix| {
            let a = tokenize_with(file, vocab, Lookup::Index(ix), &s, opts, MIN_WINDOW_CHARS, 7).unwrap();
            let b = tokenize_with(file, vocab, Lookup::Scan, &s, opts, MIN_WINDOW_CHARS, 7).unwrap();
            a == b
        })
    }
    QuickCheck::new().tests(300).quickcheck(prop as fn(String) -> bool);
}

/// Offsets of the entries (u64 length, then bytes) of the vocab array.
fn entry_spans(file: &[u8], vocab: &Vocab) -> Vec<(usize, usize)> {
    let mut at = vocab.tokens().offset as usize;
    (0..vocab.count())
        .map(|_| {
            let len = u64::from_le_bytes(file[at..at + 8].try_into().unwrap()) as usize;
            let span = (at + 8, len);
            at += 8 + len;
            span
        })
        .collect()
}

#[test]
fn property_corrupted_entries_never_match_and_modes_agree() {
    fn prop(hits: Vec<(u16, u8, u8)>, t: Text) -> TestResult {
        let s = shared();
        let spans = entry_spans(&s.file, &s.vocab);
        let mut file = s.file.clone();
        for (entry, at, byte) in hits {
            let (start, len) = spans[usize::from(entry) % spans.len()];
            if len > 0 {
                // Invalid UTF-8 half the time (0x80..=0xff continuation/lead bytes).
                file[start + usize::from(at) % len] = byte | 0x80;
            }
        }
        let fx = match Fixture::from_bytes(file) {
            Ok(fx) => fx,
            // A corrupted special token string is allowed to fail the load: never a panic.
            Err(Error::Malformed { what: Malformed::BadVocab, .. }) => return TestResult::discard(),
            Err(e) => return TestResult::error(format!("{e}")),
        };
        let (a, b) = both(&fx, &t.0, Options { max_tokens: 256, truncate: true });
        match (a, b) {
            (Ok(a), Ok(b)) if a == b => TestResult::passed(),
            (a, b) => TestResult::error(format!("{:?}: {a:?} vs {b:?}", t.0)),
        }
    }
    QuickCheck::new().tests(60).quickcheck(prop as fn(Vec<(u16, u8, u8)>, Text) -> TestResult);
}

#[test]
fn property_arbitrary_file_corruption_never_panics() {
    fn prop(hits: Vec<(u32, u8)>, t: Text) -> bool {
        let s = shared();
        let mut file = s.file.clone();
        let start = s.vocab.tokens().offset as usize - 64;
        let span = file.len() - start;
        for (at, byte) in hits {
            file[start + at as usize % span] = byte;
        }
        // Any outcome but a panic is fine; when both modes finish they agree.
        if let Ok(fx) = Fixture::from_bytes(file) {
            let opts = Options { max_tokens: 64, truncate: true };
            if let (Ok(a), Ok(b)) = both(&fx, &t.0, opts) {
                return a == b;
            }
        }
        true
    }
    QuickCheck::new().tests(60).quickcheck(prop as fn(Vec<(u32, u8)>, Text) -> bool);
}

/// The same logic as the cargo-fuzz target `fuzz/fuzz_targets/tokenizer.rs`, on random bytes.
#[test]
fn property_fuzz_target_logic() {
    fn prop(data: Vec<u8>) -> bool {
        with_index(|file, vocab, ix| {
            let text = String::from_utf8_lossy(&data);
            let opts = Options { max_tokens: 96, truncate: data.first().is_some_and(|b| b & 1 == 0) };
            let a = tokenize_with(file, vocab, Lookup::Index(ix), &text, opts, MIN_WINDOW_CHARS, 3);
            let b = tokenize_with(file, vocab, Lookup::Scan, &text, opts, MIN_WINDOW_CHARS, 5);
            a == b
        })
    }
    QuickCheck::new().tests(300).quickcheck(prop as fn(Vec<u8>) -> bool);
}
