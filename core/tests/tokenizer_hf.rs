//! The SPM and BPE tokenizers against Hugging Face `tokenizers`, with the HF tokenizer built from
//! the same vocab GGUF by transformers' GGUF converter (`tests/fixtures/reference/tokenizer-hf/`,
//! written by `tools/tokenizer-fixtures/hf_from_gguf.py`). stepembed follows llama.cpp, so where
//! HF differs, the test asserts that the text is in one of the documented classes of difference
//! and that stepembed gives llama.cpp's ids there (README, "Tokenizers against Hugging Face"):
//!
//! * qwen2 (byte-level BPE): no difference.
//! * gemma3 (SPM): texts with a run of 32 or more spaces. The vocab has user-defined tokens of 2 … 31
//!   spaces, which llama.cpp matches whole (the longest first); HF's converter respells them as
//!   `▁` runs and rebuilds merges for them, which cut a longer run into other pieces.
//! * llama-spm (SPM, `add_space_prefix`): texts that start with a space or hold a special token.
//!   llama.cpp gives every fragment that starts the text or follows a special token a `▁` prefix;
//!   HF's `Metaspace` (prepend scheme "first") gives it only to a fragment at the start of the text
//!   that does not already start with one. The test checks that exact rule on every text: HF's ids
//!   are stepembed's ids per fragment, with the prefix or without it (the vocab with
//!   `add_space_prefix = false`) as that rule says.
//!
//! Sources: `texts.jsonl` and `tokenizer/random-<vocab>.jsonl` with BOS/EOS and special tokens
//! parsed (llama.cpp ids in `tokenizer/texts-<vocab>.jsonl` and the random file itself), and
//! llama.cpp's vocab test `tokenizer/<vocab>.inp` (ids in `.out`) with neither.

use stepembed_core::io::SliceSource;
use stepembed_core::tokenizer::{
    bpe_work_bytes, read_model_vocab, spm_work_bytes, BpeTokenize, ModelKind, ModelLookup, ModelOptions,
    ModelVocab, SpmTokenize, Step, TokenIndex, TokenIndexBuilder,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
const WINDOW: usize = 1 << 16;

struct Vocab {
    file: Vec<u8>,
    vocab: ModelVocab,
    index: Vec<u8>,
}

impl Vocab {
    fn open(file: Vec<u8>) -> Vocab {
        let vocab = read_model_vocab(&mut SliceSource::new(&file), &mut vec![0u8; 4096]).unwrap();
        let mut index = vec![0u8; TokenIndex::bytes_needed(&vocab).unwrap()];
        let mut b = TokenIndexBuilder::new(&vocab, &mut index).unwrap();
        let mut scratch = vec![0u8; 4096];
        while b.step(&mut SliceSource::new(&file), &mut scratch, 1 << 16).unwrap() == Step::Pending {}
        b.finish().unwrap();
        Vocab { file, vocab, index }
    }

    fn tokenize(&self, text: &str, special: bool) -> Vec<u32> {
        let opts = ModelOptions {
            max_tokens: 1 << 16,
            truncate: false,
            add_special: special,
            parse_special: special,
        };
        let ix = ModelLookup::Index(TokenIndex::open(&self.vocab, &self.index).unwrap());
        let mut out = vec![0u32; opts.max_tokens];
        let mut io = SliceSource::new(&self.file);
        if matches!(self.vocab.kind(), ModelKind::Spm) {
            let mut mem = vec![0u8; spm_work_bytes(false, WINDOW)];
            let mut t = SpmTokenize::new(&self.vocab, ix, text, &mut mem, &mut out, opts).unwrap();
            while t.step(&mut io, u32::MAX).unwrap() == Step::Pending {}
            t.ids().to_vec()
        } else {
            let mut mem = vec![0u8; bpe_work_bytes(false, WINDOW)];
            let mut t = BpeTokenize::new(&self.vocab, ix, text, &mut mem, &mut out, opts).unwrap();
            while t.step(&mut io, u32::MAX).unwrap() == Step::Pending {}
            t.ids().to_vec()
        }
    }
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| u32::try_from(x.as_u64().unwrap()).unwrap()).collect()
}

/// One text: where it is from, whether BOS/EOS and special tokens apply, llama.cpp's and HF's ids.
struct Case {
    src: String,
    line: usize,
    text: String,
    special: bool,
    llama: Vec<u32>,
    hf: Vec<u32>,
}

/// `(text, llama.cpp ids)` of a `{"text", "ids"}` JSONL file.
fn jsonl(rel: &str) -> Vec<(String, Vec<u32>)> {
    read(rel)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["text"].as_str().unwrap().to_owned(), ids_of(&v["ids"]))
        })
        .collect()
}

/// llama.cpp's vocab test: inputs split on `\n__ggml_vocab_test__\n`, one line of ids each.
fn vocab_test(rel_inp: &str) -> Vec<(String, Vec<u32>)> {
    let mut texts: Vec<String> = read(rel_inp).split("\n__ggml_vocab_test__\n").map(str::to_owned).collect();
    if texts.last().is_some_and(|t| t.is_empty()) {
        texts.pop();
    }
    let out = read(&rel_inp.replace(".inp", ".out"));
    let ids: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(texts.len(), ids.len(), "{rel_inp}");
    texts.into_iter().zip(ids).collect()
}

/// Every case of `reference/tokenizer-hf/<name>.jsonl`: per source a header line
/// `{"src", "count", "add_special_tokens"}`, then `count` lines of HF ids in the source's order.
fn cases(name: &str) -> Vec<Case> {
    let hf = read(&format!("reference/tokenizer-hf/{name}.jsonl"));
    let mut lines = hf.lines();
    let mut out = Vec::new();
    while let Some(head) = lines.next() {
        let head: serde_json::Value = serde_json::from_str(head).unwrap();
        let src = head["src"].as_str().unwrap().to_owned();
        let count = usize::try_from(head["count"].as_u64().unwrap()).unwrap();
        let special = head["add_special_tokens"].as_bool().unwrap();
        let reference = if src.ends_with(".inp") {
            assert!(!special, "{src}: llama.cpp's vocab test adds and parses no special tokens");
            vocab_test(&src)
        } else if src == "texts.jsonl" {
            // The texts with their llama.cpp ids for this vocab (llama_text_ids.py).
            let with_ids = jsonl(&format!("tokenizer/texts-{name}.jsonl"));
            let texts: Vec<String> = read("texts.jsonl")
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_owned()
                })
                .collect();
            assert_eq!(with_ids.iter().map(|(t, _)| t).collect::<Vec<_>>(), texts.iter().collect::<Vec<_>>());
            with_ids
        } else {
            jsonl(&src)
        };
        assert_eq!(reference.len(), count, "{src}");
        for (i, (text, llama)) in reference.into_iter().enumerate() {
            let hf: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
            out.push(Case { src: src.clone(), line: i + 1, text, special, llama, hf: ids_of(&hf) });
        }
    }
    out
}

/// Per source, in order: (source, texts, texts where HF's ids are stepembed's).
fn tally<'c>(cases: &'c [Case], ours: &[Vec<u32>]) -> Vec<(&'c str, usize, usize)> {
    let mut t: Vec<(&str, usize, usize)> = Vec::new();
    for (c, o) in cases.iter().zip(ours) {
        if t.last().is_none_or(|(s, _, _)| *s != c.src) {
            t.push((&c.src, 0, 0));
        }
        let last = t.last_mut().unwrap();
        last.1 += 1;
        last.2 += usize::from(c.hf == *o);
    }
    t
}

/// Runs stepembed on every case, asserts it equals llama.cpp on each, and returns its ids.
fn stepembed_equals_llama_cpp(v: &Vocab, cases: &[Case]) -> Vec<Vec<u32>> {
    cases
        .iter()
        .map(|c| {
            let got = v.tokenize(&c.text, c.special);
            assert_eq!(got, c.llama, "{} line {}: {:?}", c.src, c.line, c.text);
            got
        })
        .collect()
}

/// Asserts that every text where HF's ids are not stepembed's is in `class`; returns how many
/// texts are in it.
fn differences_in_class(cases: &[Case], ours: &[Vec<u32>], class: impl Fn(&str) -> bool) -> usize {
    let mut members = 0;
    for (c, o) in cases.iter().zip(ours) {
        let member = class(&c.text);
        members += usize::from(member);
        assert!(
            member || c.hf == *o,
            "{} line {}: HF differs on {:?}\n ours {o:?}\n HF   {:?}",
            c.src,
            c.line,
            c.text,
            c.hf
        );
    }
    members
}

#[test]
fn qwen2_equals_hf_on_every_text() {
    let v = Vocab::open(read_bytes("tokenizer/vocab-qwen2.gguf"));
    let cases = cases("qwen2");
    let ours = stepembed_equals_llama_cpp(&v, &cases);
    assert_eq!(
        tally(&cases, &ours),
        [
            ("texts.jsonl", 25, 25),
            ("tokenizer/random-qwen2.jsonl", 3000, 3000),
            ("tokenizer/qwen2.inp", 46, 46)
        ]
    );
}

/// The longest run of U+0020 in `text`.
fn longest_space_run(text: &str) -> usize {
    text.split(|c| c != ' ').map(str::len).max().unwrap_or(0)
}

#[test]
fn gemma3_differs_from_hf_only_on_runs_of_32_or_more_spaces() {
    let v = Vocab::open(read_bytes("tokenizer/vocab-gemma3.gguf"));
    let cases = cases("gemma3");
    let ours = stepembed_equals_llama_cpp(&v, &cases);
    // The vocab's space tokens: 2 … 31 spaces, user-defined; 32 spaces is no token.
    for n in 2..=31 {
        assert_eq!(v.tokenize(&" ".repeat(n), false).len(), 1, "{n} spaces");
    }
    // llama-tokenize: 32 spaces are 31 + "▁", 64 are 31 + 31 + 2; HF gives 16 + 16 and 16 × 4.
    assert_eq!(v.tokenize(&" ".repeat(32), false), [167, 236743]);
    assert_eq!(v.tokenize(&" ".repeat(64), false), [167, 167, 138]);
    let long_runs = differences_in_class(&cases, &ours, |t| longest_space_run(t) >= 32);
    assert_eq!(
        tally(&cases, &ours),
        [("texts.jsonl", 25, 25), ("tokenizer/random-gemma3.jsonl", 3000, 2992)]
    );
    // Each of the 8 texts with such a run is one of the 8 differences.
    assert_eq!(long_runs, 8);
}

/// llama-spm's special tokens (unknown and control; it has no user-defined ones).
const LLAMA_SPECIALS: [(&str, u32); 3] = [("<unk>", 0), ("<s>", 1), ("</s>", 2)];

/// `text` cut at the special tokens, as both tokenizers cut it: the fragments between them
/// (possibly empty) and the special ids, `fragments.len() == specials.len() + 1`.
fn split_specials(text: &str) -> (Vec<&str>, Vec<u32>) {
    let (mut fragments, mut specials) = (Vec::new(), Vec::new());
    let (mut start, mut at) = (0, 0);
    while at < text.len() {
        let rest = &text[at..];
        if let Some((s, id)) =
            LLAMA_SPECIALS.iter().filter(|(s, _)| rest.starts_with(s)).max_by_key(|(s, _)| s.len())
        {
            fragments.push(&text[start..at]);
            specials.push(*id);
            at += s.len();
            start = at;
        } else {
            at += rest.chars().next().unwrap().len_utf8();
        }
    }
    fragments.push(&text[start..]);
    (fragments, specials)
}

/// The llama-spm vocab with `tokenizer.ggml.add_space_prefix = false` added as a KV after the
/// header, with an unknown u8 KV (`testpad`) that makes the two 64 bytes, so everything after
/// them (the empty data section) keeps its 32-byte alignment.
fn without_space_prefix(file: &[u8]) -> Vec<u8> {
    let kv = |key: &[u8], ty: u32, value: u8| {
        [&(key.len() as u64).to_le_bytes()[..], key, &ty.to_le_bytes(), &[value]].concat()
    };
    let kvs = [kv(b"tokenizer.ggml.add_space_prefix", 7, 0), kv(b"testpad", 0, 0)].concat();
    assert_eq!(kvs.len(), 64);
    let kv_count = u64::from_le_bytes(file[16..24].try_into().unwrap());
    [&file[..16], &(kv_count + 2).to_le_bytes(), &kvs, &file[24..]].concat()
}

/// HF's ids for llama-spm by the rule of the module doc, built from stepembed's ids per fragment:
/// the fragment that starts the text keeps the `▁` prefix unless it starts with a space (or `▁`);
/// every other fragment has none.
fn hf_rule(with: &Vocab, without: &Vocab, text: &str, special: bool) -> Vec<u32> {
    // HF matches special tokens whether or not llama.cpp was asked to: texts tokenized without
    // (llama.cpp's vocab test) must hold none for the two to be comparable.
    let (fragments, specials) = split_specials(text);
    assert!(special || specials.is_empty(), "{text:?}");
    let mut ids = Vec::new();
    if special && with.vocab.add_bos() {
        ids.push(with.vocab.bos().unwrap());
    }
    for (k, f) in fragments.iter().enumerate() {
        let first = k == 0 && !f.starts_with([' ', '\u{2581}']);
        if !f.is_empty() {
            ids.extend(if first { with.tokenize(f, false) } else { without.tokenize(f, false) });
        }
        ids.extend(specials.get(k));
    }
    assert!(!with.vocab.add_eos());
    ids
}

#[test]
fn llama_spm_differs_from_hf_only_by_the_space_prefix_rule() {
    let file = read_bytes("tokenizer/vocab-llama-spm.gguf");
    let without = Vocab::open(without_space_prefix(&file));
    let with = Vocab::open(file);
    assert!(with.vocab.add_space_prefix() && !without.vocab.add_space_prefix());
    for (s, id) in LLAMA_SPECIALS {
        assert_eq!(with.tokenize(s, true), [1, id], "{s}");
    }
    // The two prefix rules on one text (ids checked with llama-tokenize and HF):
    // "▁Hello", "▁world" vs "world" after the control token.
    assert_eq!(with.tokenize("Hello</s>world", true), [1, 15043, 2, 3186]);
    assert_eq!(without.tokenize("world", false), [11526]);
    assert_eq!(hf_rule(&with, &without, "Hello</s>world", true), [1, 15043, 2, 11526]);

    let cases = cases("llama-spm");
    let ours = stepembed_equals_llama_cpp(&with, &cases);
    let in_class =
        differences_in_class(&cases, &ours, |t| t.starts_with(' ') || !split_specials(t).1.is_empty());
    for c in &cases {
        // The rule gives HF's ids on every text, in the class or not.
        assert_eq!(
            hf_rule(&with, &without, &c.text, c.special),
            c.hf,
            "{} line {}: {:?}",
            c.src,
            c.line,
            c.text
        );
    }
    assert_eq!(
        tally(&cases, &ours),
        [
            ("texts.jsonl", 25, 24),
            ("tokenizer/random-llama-spm.jsonl", 3000, 1757),
            ("tokenizer/llama-spm.inp", 46, 31)
        ]
    );
    // In the class: 1 + 1352 + 15 texts, of which 1 + 1243 + 15 differ (the others, e.g. texts whose
    // only special token ends them, come out the same both ways).
    assert_eq!(in_class, 1 + 1352 + 15);
}

fn read_bytes(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}
