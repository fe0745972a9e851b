//! Writes `core/src/tokenizer/tables.rs`: the Unicode data the no_std tokenizer needs to normalize
//! and pre-tokenize text exactly as Hugging Face `tokenizers` (BertNormalizer, BertPreTokenizer)
//! does.
//!
//! The data is not copied from the Unicode Character Database: it is read out of the very crates
//! Hugging Face uses, by calling their functions on every code point, so the core reproduces their
//! (older) Unicode versions rather than the current ones.
//!
//! * `unicode_categories` 0.1.1 — `is_other()` (Cc, Cf, Co: HF's "control"), `is_punctuation()`
//!   (P*), `is_mark_nonspacing()` (Mn). Its data is Unicode 8.0 (checked below).
//! * `unicode-normalization-alignments` 0.1.12 — `decompose_canonical` (full canonical
//!   decompositions, Hangul algorithmic) and `canonical_combining_class`, Unicode 9.0.0.
//!
//! * `unicode-general-category` 0.6.0 (Unicode 15.0) — `get_general_category` for the letters
//!   (L*) and numbers (N*) of llama.cpp's BPE pre-tokenizers, whose data is Unicode 15.1: the
//!   letters 15.1 added (CJK Unified Ideographs Extension I, Lo) are added here; 15.1 added no
//!   number and moved no code point between categories.
//!
//! Usage (from this directory):
//!
//! ```text
//! cargo run --release -- ../../core/src/tokenizer/tables.rs          # regenerate
//! cargo run --release -- --check ../../core/src/tokenizer/tables.rs  # exit 1 if out of date
//! cargo test --release                                               # core agrees on every char
//! ```
//!
//! Besides writing the tables it asserts the facts the core's streaming normalizer relies on
//! (see `check_invariants`); a new crate version that broke one would fail here, not silently.

use std::fmt::Write as _;
use std::process::ExitCode;

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::char::{canonical_combining_class, decompose_canonical};
use unicode_normalization_alignments::UNICODE_VERSION;

/// Unicode 15.1's new letters: CJK Unified Ideographs Extension I (category Lo).
const CJK_EXT_I: std::ops::RangeInclusive<u32> = 0x2EBF0..=0x2EE5D;

/// Hangul syllables, decomposed algorithmically by the core (and by the crate).
const HANGUL_FIRST: u32 = 0xAC00;
const HANGUL_LAST: u32 = 0xD7A3;

/// The longest canonical decomposition the core's buffers are sized for.
const MAX_DECOMPOSITION: usize = 4;

fn all_chars() -> impl Iterator<Item = char> {
    (0..=0x10FFFFu32).filter_map(char::from_u32)
}

/// HF's `is_control` before its `\t \n \r` exception.
fn is_other(c: char) -> bool {
    c.is_other()
}

/// HF's `is_bert_punc`.
fn is_bert_punc(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

fn is_mn(c: char) -> bool {
    c.is_mark_nonspacing()
}

/// `\p{L}` as llama.cpp's Unicode 15.1 data has it.
fn is_letter(c: char) -> bool {
    use unicode_general_category::GeneralCategory as G;
    CJK_EXT_I.contains(&(c as u32))
        || matches!(
            unicode_general_category::get_general_category(c),
            G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter
        )
}

/// `\p{N}` (Unicode 15.0 = 15.1 for this category).
fn is_number(c: char) -> bool {
    use unicode_general_category::GeneralCategory as G;
    matches!(
        unicode_general_category::get_general_category(c),
        G::DecimalNumber | G::LetterNumber | G::OtherNumber
    )
}

/// HF's `is_chinese_char`.
fn is_chinese(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

fn decompose(c: char) -> Vec<char> {
    let mut out = Vec::new();
    decompose_canonical(c, |d| out.push(d));
    out
}

/// Inclusive ranges of the code points where `pred` holds.
fn ranges(pred: impl Fn(char) -> bool) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for c in all_chars() {
        if !pred(c) {
            continue;
        }
        let cp = c as u32;
        match out.last_mut() {
            Some((_, end)) if *end + 1 == cp => *end = cp,
            _ => out.push((cp, cp)),
        }
    }
    out
}

/// Inclusive ranges of equal, non-zero canonical combining class.
fn ccc_ranges() -> Vec<(u32, u32, u8)> {
    let mut out: Vec<(u32, u32, u8)> = Vec::new();
    for c in all_chars() {
        let class = canonical_combining_class(c);
        if class == 0 {
            continue;
        }
        let cp = c as u32;
        match out.last_mut() {
            Some((_, end, k)) if *end + 1 == cp && *k == class => *end = cp,
            _ => out.push((cp, cp, class)),
        }
    }
    out
}

/// Hangul syllable decomposition (Unicode section 3.12), as the core computes it.
fn hangul(c: u32) -> Vec<char> {
    let s = c - HANGUL_FIRST;
    let l = 0x1100 + s / (21 * 28);
    let v = 0x1161 + (s % (21 * 28)) / 28;
    let t = 0x11A7 + s % 28;
    let mut out = vec![char::from_u32(l).unwrap(), char::from_u32(v).unwrap()];
    if t != 0x11A7 {
        out.push(char::from_u32(t).unwrap());
    }
    out
}

/// Every fact the core's normalizer relies on. Panics (this is a build tool) naming the culprit.
fn check_invariants() {
    // unicode_categories has no version constant: its data is Unicode 8.0 — it knows U+08E3
    // (ARABIC TURNED DAMMA BELOW, new in 8.0) but not U+08D4 (ARABIC SMALL HIGH WORD AR-RUB,
    // new in 9.0).
    assert!(is_mn('\u{08E3}') && !is_mn('\u{08D4}'), "unicode_categories is no longer Unicode 8.0");
    assert_eq!(UNICODE_VERSION, (9, 0, 0), "unicode-normalization-alignments changed Unicode version");
    assert_eq!(unicode_general_category::UNICODE_VERSION, (15, 0, 0), "unicode-general-category changed");
    let unassigned = |cp| {
        char::from_u32(cp).is_some_and(|c| {
            unicode_general_category::get_general_category(c)
                == unicode_general_category::GeneralCategory::Unassigned
        })
    };
    assert!(CJK_EXT_I.clone().all(unassigned), "Unicode 15.1's letters are already in the crate");

    for c in all_chars() {
        let d = decompose(c);
        assert!(d.len() <= MAX_DECOMPOSITION, "{c:?} decomposes to {} chars", d.len());
        let cp = c as u32;
        if (HANGUL_FIRST..=HANGUL_LAST).contains(&cp) {
            assert_eq!(d, hangul(cp), "Hangul {cp:04X}");
        }
        let class = canonical_combining_class(c);
        if class != 0 {
            // A non-starter never splits a word, so a run of them belongs to a single word: a run
            // longer than 100 kept chars makes that word [UNK] whatever its order, which bounds
            // the core's reordering buffer.
            assert!(!c.is_whitespace() && !is_bert_punc(c), "non-starter {cp:04X} splits words");
            assert!(!is_chinese(c), "non-starter {cp:04X} is a CJK ideograph");
        }
        if is_chinese(c) {
            // CJK ideographs are spaced before NFD; they must stay one starter through it.
            assert_eq!(d.len(), 1, "CJK {cp:04X} decomposes to several chars");
            assert_eq!(class, 0, "CJK {cp:04X} is a non-starter");
            assert_eq!(canonical_combining_class(d[0]), 0, "CJK {cp:04X} decomposes to a non-starter");
        }
    }
}

fn render() -> String {
    let control = ranges(is_other);
    let punct = ranges(is_bert_punc);
    let mn = ranges(is_mn);
    let letter = ranges(is_letter);
    let number = ranges(is_number);
    let ccc = ccc_ranges();
    let mut decomp: Vec<(u32, Vec<char>)> = Vec::new();
    for c in all_chars() {
        let cp = c as u32;
        if (HANGUL_FIRST..=HANGUL_LAST).contains(&cp) {
            continue;
        }
        let d = decompose(c);
        if d != [c] {
            decomp.push((cp, d));
        }
    }
    let max_len = decomp.iter().map(|(_, d)| d.len()).max().unwrap_or(0);

    let mut s = String::new();
    let (ma, mi, pa) = UNICODE_VERSION;
    writeln!(
        s,
        "//! Unicode tables for the tokenizer. GENERATED by tools/unicode-tables — do not edit.
//!
//! Regenerate (from tools/unicode-tables): `cargo run --release -- ../../core/src/tokenizer/tables.rs`;
//! check it is current: `cargo run --release -- --check ../../core/src/tokenizer/tables.rs`.
//!
//! Read out of the crates Hugging Face tokenizers 0.23 uses, by calling them on every code point:
//! * `unicode_categories` 0.1.1 (Unicode 8.0 data): [`CONTROL`] = `is_other()` (Cc, Cf, Co),
//!   [`PUNCTUATION`] = `is_ascii_punctuation() || is_punctuation()` (P*),
//!   [`MARK_NONSPACING`] = `is_mark_nonspacing()` (Mn);
//! * `unicode-normalization-alignments` 0.1.12 (Unicode {ma}.{mi}.{pa}):
//!   [`COMBINING_CLASS`] = `canonical_combining_class()` (non-zero classes only),
//!   [`DECOMPOSITION`] / [`DECOMPOSED`] = `decompose_canonical()` (full canonical decompositions;
//!   Hangul syllables U+AC00..=U+D7A3 are left to the algorithm of Unicode section 3.12).
//!
//! And, for llama.cpp's byte-level BPE pre-tokenizers (its data is Unicode 15.1), from
//! `unicode-general-category` 0.6.0 (Unicode 15.0) plus the letters 15.1 added (U+2EBF0..=U+2EE5D):
//! [`LETTER`] = categories L* (`\\p{{L}}`), [`NUMBER`] = categories N* (`\\p{{N}}`).
//!
//! Range tables hold sorted, disjoint, inclusive `(first, last)` code point ranges."
    )
    .unwrap();
    writeln!(s).unwrap();
    writeln!(s, "/// The longest canonical decomposition, in chars.").unwrap();
    writeln!(s, "pub(crate) const MAX_DECOMPOSITION: usize = {max_len};").unwrap();
    writeln!(s).unwrap();
    write_ranges(&mut s, "CONTROL", "HF `is_other()`: categories Cc, Cf and Co (Unicode 8.0).", &control);
    write_ranges(
        &mut s,
        "PUNCTUATION",
        "HF `is_bert_punc`: ASCII punctuation and categories Pc Pd Pe Pf Pi Po Ps (Unicode 8.0).",
        &punct,
    );
    write_ranges(&mut s, "MARK_NONSPACING", "HF `is_mark_nonspacing()`: category Mn (Unicode 8.0).", &mn);
    write_ranges(&mut s, "LETTER", "llama.cpp `\\p{L}`: categories Lu Ll Lt Lm Lo (Unicode 15.1).", &letter);
    write_ranges(&mut s, "NUMBER", "llama.cpp `\\p{N}`: categories Nd Nl No (Unicode 15.1).", &number);

    writeln!(s, "/// Non-zero canonical combining classes (Unicode {ma}.{mi}.{pa}): `(first, last, class)`.")
        .unwrap();
    writeln!(s, "pub(crate) static COMBINING_CLASS: &[(u32, u32, u8)] = &[").unwrap();
    for (a, b, k) in &ccc {
        writeln!(s, "    (0x{a:04X}, 0x{b:04X}, {k}),").unwrap();
    }
    writeln!(s, "];\n").unwrap();

    writeln!(
        s,
        "/// Canonical decompositions (Unicode {ma}.{mi}.{pa}), sorted by code point, Hangul syllables excluded:
/// `(code point, start in DECOMPOSED, length)`."
    )
    .unwrap();
    writeln!(s, "pub(crate) static DECOMPOSITION: &[(u32, u16, u8)] = &[").unwrap();
    let mut flat: Vec<char> = Vec::new();
    for (cp, d) in &decomp {
        writeln!(s, "    (0x{cp:04X}, {}, {}),", flat.len(), d.len()).unwrap();
        flat.extend(d);
    }
    writeln!(s, "];\n").unwrap();
    assert!(flat.len() <= usize::from(u16::MAX));
    writeln!(s, "/// The chars of every decomposition in [`DECOMPOSITION`], concatenated.").unwrap();
    writeln!(s, "pub(crate) static DECOMPOSED: &[char] = &[").unwrap();
    for chunk in flat.chunks(8) {
        let line: Vec<String> = chunk.iter().map(|c| format!("'\\u{{{:04X}}}'", *c as u32)).collect();
        writeln!(s, "    {},", line.join(", ")).unwrap();
    }
    writeln!(s, "];").unwrap();
    s
}

fn write_ranges(s: &mut String, name: &str, doc: &str, ranges: &[(u32, u32)]) {
    writeln!(s, "/// {doc}").unwrap();
    writeln!(s, "pub(crate) static {name}: &[(u32, u32)] = &[").unwrap();
    for chunk in ranges.chunks(4) {
        let line: Vec<String> = chunk.iter().map(|(a, b)| format!("(0x{a:04X}, 0x{b:04X})")).collect();
        writeln!(s, "    {},", line.join(", ")).unwrap();
    }
    writeln!(s, "];\n").unwrap();
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (check, path) = match args.as_slice() {
        [flag, path] if flag == "--check" => (true, path.clone()),
        [path] if !path.starts_with('-') => (false, path.clone()),
        _ => {
            eprintln!("usage: unicode-tables [--check] PATH/TO/core/src/tokenizer/tables.rs");
            return ExitCode::from(2);
        }
    };
    check_invariants();
    let text = render();
    if check {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == text {
            println!("{path} is up to date");
            ExitCode::SUCCESS
        } else {
            eprintln!("{path} is out of date: regenerate it with `cargo run --release -- {path}`");
            ExitCode::FAILURE
        }
    } else {
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        println!("wrote {path}");
        ExitCode::SUCCESS
    }
}
