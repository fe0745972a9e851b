//! The core's lookups over the generated tables agree with the crates Hugging Face uses on every
//! code point. Run with `cargo test --release` in tools/unicode-tables.

use stepembed_core::tokenizer::unicode;
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::char::{canonical_combining_class, decompose_canonical};

fn all_chars() -> impl Iterator<Item = char> {
    (0..=0x10FFFFu32).filter_map(char::from_u32)
}

#[test]
fn classes_agree_on_every_code_point() {
    for c in all_chars() {
        // HF normalizers/bert.rs
        let hf_control = !matches!(c, '\t' | '\n' | '\r') && c.is_other();
        let hf_whitespace = matches!(c, '\t' | '\n' | '\r') || c.is_whitespace();
        // HF pre_tokenizers/bert.rs
        let hf_punct = c.is_ascii_punctuation() || c.is_punctuation();
        assert_eq!(unicode::is_control(c), hf_control, "is_control {:04X}", c as u32);
        assert_eq!(unicode::is_whitespace(c), hf_whitespace, "is_whitespace {:04X}", c as u32);
        assert_eq!(unicode::is_punctuation(c), hf_punct, "is_punctuation {:04X}", c as u32);
        assert_eq!(unicode::is_mark_nonspacing(c), c.is_mark_nonspacing(), "Mn {:04X}", c as u32);
        assert_eq!(
            unicode::canonical_combining_class(c),
            canonical_combining_class(c),
            "ccc {:04X}",
            c as u32
        );
    }
}

#[test]
fn decompositions_agree_on_every_code_point() {
    for c in all_chars() {
        let mut want = Vec::new();
        decompose_canonical(c, |d| want.push(d));
        assert_eq!(unicode::decompose_canonical(c).as_slice(), want.as_slice(), "NFD {:04X}", c as u32);
    }
}

#[test]
fn tables_are_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../core/src/tokenizer/tables.rs");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_unicode-tables"))
        .args(["--check", path])
        .status()
        .expect("run the generator");
    assert!(status.success(), "core/src/tokenizer/tables.rs is out of date");
}

#[test]
fn bpe_categories_agree_on_every_code_point() {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    for c in all_chars() {
        let cat = get_general_category(c);
        let ext_i = (0x2EBF0..=0x2EE5D).contains(&(c as u32));
        let letter = ext_i
            || matches!(
                cat,
                G::UppercaseLetter
                    | G::LowercaseLetter
                    | G::TitlecaseLetter
                    | G::ModifierLetter
                    | G::OtherLetter
            );
        let number = matches!(cat, G::DecimalNumber | G::LetterNumber | G::OtherNumber);
        assert_eq!(unicode::is_letter(c), letter, "L {:04X}", c as u32);
        assert_eq!(unicode::is_number(c), number, "N {:04X}", c as u32);
        assert_eq!(unicode::is_llama_whitespace(c), c.is_whitespace(), "White_Space {:04X}", c as u32);
    }
}
