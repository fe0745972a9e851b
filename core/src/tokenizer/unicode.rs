//! The character classes of Hugging Face's `BertNormalizer` and `BertPreTokenizer`, answered from
//! the generated `tables` module (HF's own crates, Unicode 8.0 categories and Unicode
//! 9.0.0 normalization data) and from `core`'s `char` methods where HF calls the same ones.
//!
//! Every function is a constant-time or binary-search lookup; none allocates or panics.

use super::tables;

/// Most chars one canonical decomposition produces ([`decompose_canonical`]).
pub const MAX_DECOMPOSITION: usize = tables::MAX_DECOMPOSITION;

fn in_ranges(ranges: &[(u32, u32)], c: char) -> bool {
    let cp = u32::from(c);
    ranges
        .binary_search_by(|&(first, last)| {
            if last < cp {
                core::cmp::Ordering::Less
            } else if first > cp {
                core::cmp::Ordering::Greater
            } else {
                core::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// HF's `is_control`: categories Cc, Cf and Co (`unicode_categories::is_other`, Unicode 8.0),
/// except `\t`, `\n` and `\r`. Unassigned code points are not control.
pub fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && in_ranges(tables::CONTROL, c)
}

/// HF's `is_whitespace`: `\t`, `\n`, `\r` and Rust's `char::is_whitespace` (the White_Space
/// property of the Unicode version of the compiler this crate is built with, as in HF).
pub fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// HF's `is_bert_punc`: ASCII punctuation, or categories Pc Pd Pe Pf Pi Po Ps (Unicode 8.0).
pub fn is_punctuation(c: char) -> bool {
    in_ranges(tables::PUNCTUATION, c)
}

/// Category Mn (Unicode 8.0), the marks HF's `strip_accents` removes after NFD.
pub fn is_mark_nonspacing(c: char) -> bool {
    in_ranges(tables::MARK_NONSPACING, c)
}

/// HF's `is_chinese_char`: the CJK ideograph blocks that get spaces around them.
pub fn is_chinese_char(c: char) -> bool {
    matches!(
        u32::from(c),
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

/// The canonical combining class (Unicode 9.0.0); 0 for starters.
pub fn canonical_combining_class(c: char) -> u8 {
    let cp = u32::from(c);
    match tables::COMBINING_CLASS.binary_search_by(|&(first, last, _)| {
        if last < cp {
            core::cmp::Ordering::Less
        } else if first > cp {
            core::cmp::Ordering::Greater
        } else {
            core::cmp::Ordering::Equal
        }
    }) {
        Ok(i) => tables::COMBINING_CLASS.get(i).map_or(0, |&(_, _, class)| class),
        Err(_) => 0,
    }
}

/// A char's full canonical decomposition: at most [`MAX_DECOMPOSITION`] chars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decomposition {
    chars: [char; MAX_DECOMPOSITION],
    len: u8,
}

impl Decomposition {
    /// The decomposed chars (the char itself when it does not decompose).
    pub fn as_slice(&self) -> &[char] {
        self.chars.get(..usize::from(self.len)).unwrap_or(&self.chars)
    }

    fn one(c: char) -> Self {
        Decomposition { chars: [c; MAX_DECOMPOSITION], len: 1 }
    }
}

const HANGUL_S_BASE: u32 = 0xAC00;
const HANGUL_L_BASE: u32 = 0x1100;
const HANGUL_V_BASE: u32 = 0x1161;
const HANGUL_T_BASE: u32 = 0x11A7;
const HANGUL_V_COUNT: u32 = 21;
const HANGUL_T_COUNT: u32 = 28;
const HANGUL_N_COUNT: u32 = HANGUL_V_COUNT * HANGUL_T_COUNT;
const HANGUL_S_COUNT: u32 = 19 * HANGUL_N_COUNT;

/// The full canonical decomposition of `c` (NFD of a single char, before reordering), as
/// `unicode-normalization-alignments` 0.1.12 computes it; Hangul syllables algorithmically.
pub fn decompose_canonical(c: char) -> Decomposition {
    let cp = u32::from(c);
    if cp < 0x80 {
        return Decomposition::one(c);
    }
    if let Some(s) = cp.checked_sub(HANGUL_S_BASE).filter(|&s| s < HANGUL_S_COUNT) {
        // All terms are bounded by the Hangul constants: no overflow, no invalid chars.
        let l = HANGUL_L_BASE.saturating_add(s / HANGUL_N_COUNT);
        let v = HANGUL_V_BASE.saturating_add((s % HANGUL_N_COUNT) / HANGUL_T_COUNT);
        let t = s % HANGUL_T_COUNT;
        let mut d = Decomposition::one(c);
        d.chars[0] = char::from_u32(l).unwrap_or(c);
        d.chars[1] = char::from_u32(v).unwrap_or(c);
        d.len = 2;
        if t != 0 {
            d.chars[2] = char::from_u32(HANGUL_T_BASE.saturating_add(t)).unwrap_or(c);
            d.len = 3;
        }
        return d;
    }
    let Ok(i) = tables::DECOMPOSITION.binary_search_by_key(&cp, |&(k, _, _)| k) else {
        return Decomposition::one(c);
    };
    let Some(&(_, start, len)) = tables::DECOMPOSITION.get(i) else {
        return Decomposition::one(c);
    };
    let start = usize::from(start);
    let Some(src) = tables::DECOMPOSED.get(start..start.saturating_add(usize::from(len))) else {
        return Decomposition::one(c);
    };
    let mut d = Decomposition::one(c);
    for (dst, &s) in d.chars.iter_mut().zip(src) {
        *dst = s;
    }
    d.len = len.min(MAX_DECOMPOSITION as u8);
    d
}

/// llama.cpp's `\p{L}` (`unicode_cpt_flags::is_letter`): categories Lu Ll Lt Lm Lo, Unicode 15.1.
pub fn is_letter(c: char) -> bool {
    in_ranges(tables::LETTER, c)
}

/// llama.cpp's `\p{N}` (`unicode_cpt_flags::is_number`): categories Nd Nl No, Unicode 15.1.
pub fn is_number(c: char) -> bool {
    in_ranges(tables::NUMBER, c)
}

/// llama.cpp's `\s` (`unicode_cpt_flags::is_whitespace`): the White_Space property, as listed
/// in its Unicode 15.1 data.
pub fn is_llama_whitespace(c: char) -> bool {
    matches!(
        u32::from(c),
        0x09..=0x0D | 0x20 | 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000
    )
}
