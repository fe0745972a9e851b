//! Special tokens matched in raw text before tokenizing, as llama.cpp's
//! `tokenizer_st_partition` does it.
//!
//! llama.cpp takes the special tokens longest first and cuts every occurrence of each out of the
//! text fragments that are left, leftmost first. That is a greedy choice by priority — (length
//! descending, then token order, then position) — of occurrences that overlap nothing chosen
//! before: [`choose`] makes it over a window's candidates. llama.cpp orders tokens of equal length
//! with `std::sort` (unspecified); here the lower id goes first, which only matters when two
//! special tokens of the same length overlap in the text.

use super::model_vocab::Special;

/// An occurrence of a special token in raw text: byte position, length in bytes, token id.
pub(crate) type Candidate = [u32; 3];

/// Tokens llama.cpp makes control tokens by their text whatever their stored type
/// (`llama_vocab::impl::load`, llama-cpp-python 0.3.36: the end-of-turn, end-of-message,
/// fill-in-the-middle and end-of-generation names), so that they are matched in raw text.
/// llama.cpp marks each fill-in-the-middle kind on the first of its names its hash map yields
/// (and only when the file names no id for that kind); here every listed name is marked, which
/// differs only for a vocab holding two names of one kind as ordinary tokens.
const CONTROL_NAMES: &[&str] = &[
    // End of turn, message or generation.
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "[e~[",
    // Fill in the middle: prefix, suffix, middle, pad, repository, file separator.
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<\u{ff5c}fim\u{2581}begin\u{ff5c}>",
    "<PRE>",
    "\u{2581}<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<\u{ff5c}fim\u{2581}hole\u{ff5c}>",
    "<SUF>",
    "\u{2581}<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<\u{ff5c}fim\u{2581}end\u{ff5c}>",
    "<MID>",
    "\u{2581}<MID>",
    "<|code_middle|>",
    "<|middle|>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

/// Tokens llama.cpp always makes user-defined (matched in raw text even without parsing special
/// tokens): gpt-oss's.
const USER_NAMES: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// What llama.cpp's name rules need to know of the whole vocab: which of the names that decide
/// the two exceptions below it holds. Collected by [`NameFacts::learn`] over every entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct NameFacts(u8);

const HAS_RETURN: u8 = 1;
const HAS_CALL: u8 = 2;
const HAS_CALLS: u8 = 4;
const HAS_FLUSH: u8 = 8;
const HAS_TOOL_RESPONSE: u8 = 16;

impl NameFacts {
    /// Records entry `text`.
    pub(crate) fn learn(&mut self, text: &[u8]) {
        self.0 |= match text {
            b"<|return|>" => HAS_RETURN,
            b"<|call|>" => HAS_CALL,
            b"<|calls|>" => HAS_CALLS,
            b"<|flush|>" => HAS_FLUSH,
            b"<|tool_response>" => HAS_TOOL_RESPONSE,
            _ => 0,
        };
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// o200k_harmony and solar-open: `<|end|>` is user-defined when the vocab also has
    /// `<|return|>` and `<|call|>`, or `<|call|>` / `<|calls|>` and `<|flush|>`.
    fn end_is_user(self) -> bool {
        (self.has(HAS_RETURN) && self.has(HAS_CALL))
            || ((self.has(HAS_CALL) || self.has(HAS_CALLS)) && self.has(HAS_FLUSH))
    }

    /// Gemma 4: `</s>` is an ordinary token when the vocab has `<|tool_response>`. (llama.cpp
    /// also does it for plamo's `<|plamo:eos|>`, a tokenizer this crate does not load.)
    fn s_is_normal(self) -> bool {
        self.has(HAS_TOOL_RESPONSE)
    }
}

/// How entry `text`, of stored kind `stored`, is matched in raw text once llama.cpp's rules by
/// name are applied (in its order: control names, user-defined names, then the two exceptions).
pub(crate) fn by_name(text: &[u8], stored: Special, facts: NameFacts) -> Special {
    if text == b"</s>" && facts.s_is_normal() {
        return Special::No;
    }
    if text == b"<|end|>" && facts.end_is_user() {
        return Special::UserDefined;
    }
    named(text).unwrap_or(stored)
}

/// Whether llama.cpp's name rules may change the kind of entry `text` (a vocab's pass records
/// such an entry as both kinds of special token, since the rules' outcome depends on entries
/// seen later).
pub(crate) fn has_name_rule(text: &[u8]) -> bool {
    named(text).is_some()
}

/// The kind the name lists give `text`, if they hold it. Every listed name starts with `<`,
/// `[`, `_` or `▁` (byte 0xE2): other entries, nearly all of a vocab, are refused on their
/// first byte.
fn named(text: &[u8]) -> Option<Special> {
    if !matches!(text.first(), Some(b'<' | b'[' | b'_' | 0xE2)) {
        return None;
    }
    let is = |names: &[&str]| names.iter().any(|n| n.as_bytes() == text);
    if is(USER_NAMES) {
        Some(Special::UserDefined)
    } else if is(CONTROL_NAMES) {
        Some(Special::Control)
    } else {
        None
    }
}

/// Keeps, of `cands`, the occurrences llama.cpp cuts out, sorted by position, at the front;
/// returns how many. `occupied` (one byte per raw byte of the window, the candidates' positions
/// relative to it) is cleared and used as the map of chosen bytes. O(n log n + chosen bytes).
pub(crate) fn choose(cands: &mut [Candidate], occupied: &mut [u8]) -> usize {
    occupied.fill(0);
    cands.sort_unstable_by(|a, b| b[1].cmp(&a[1]).then(a[2].cmp(&b[2])).then(a[0].cmp(&b[0])));
    let mut kept = 0usize;
    for i in 0..cands.len() {
        let Some(&[pos, len, id]) = cands.get(i) else { break };
        let span = (pos as usize)..(pos as usize).saturating_add(len as usize);
        let Some(bytes) = occupied.get_mut(span) else { continue };
        if bytes.iter().any(|&b| b != 0) {
            continue;
        }
        bytes.fill(1);
        if let Some(slot) = cands.get_mut(kept) {
            *slot = [pos, len, id];
        }
        kept = kept.saturating_add(1);
    }
    if let Some(chosen) = cands.get_mut(..kept) {
        chosen.sort_unstable_by_key(|c| c[0]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_override_the_stored_kind_as_llama_cpp_does() {
        let none = NameFacts::default();
        assert_eq!(by_name(b"</s>", Special::No, none), Special::Control);
        assert_eq!(by_name(b"</s>", Special::UserDefined, none), Special::Control);
        assert_eq!(by_name(b"<|fim_prefix|>", Special::No, none), Special::Control);
        assert_eq!(by_name("\u{2581}<PRE>".as_bytes(), Special::No, none), Special::Control);
        assert_eq!(by_name(b"<|channel|>", Special::Control, none), Special::UserDefined);
        assert_eq!(by_name(b"<|end|>", Special::No, none), Special::Control);
        assert_eq!(by_name(b"hello", Special::No, none), Special::No);
        assert_eq!(by_name(b"<s>", Special::Control, none), Special::Control);
        assert_eq!(by_name(b"<eos", Special::No, none), Special::No);

        let mut harmony = NameFacts::default();
        harmony.learn(b"<|return|>");
        assert_eq!(by_name(b"<|end|>", Special::Control, harmony), Special::Control);
        harmony.learn(b"<|call|>");
        assert_eq!(by_name(b"<|end|>", Special::Control, harmony), Special::UserDefined);
        let mut solar = NameFacts::default();
        solar.learn(b"<|calls|>");
        solar.learn(b"<|flush|>");
        assert_eq!(by_name(b"<|end|>", Special::No, solar), Special::UserDefined);

        let mut gemma4 = NameFacts::default();
        gemma4.learn(b"<|tool_response>");
        assert_eq!(by_name(b"</s>", Special::Control, gemma4), Special::No);
        assert_eq!(by_name(b"<eos>", Special::No, gemma4), Special::Control);
        assert!(has_name_rule(b"</s>") && has_name_rule(b"<|start|>") && !has_name_rule(b"<s>"));
        for name in CONTROL_NAMES.iter().chain(USER_NAMES) {
            assert!(has_name_rule(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn longest_first_then_leftmost() {
        // "abcd" with specials "bcd" (id 7) and "ab" (id 3): llama.cpp cuts "bcd" first.
        let mut c = [[0, 2, 3], [1, 3, 7]];
        let mut occ = [0u8; 4];
        assert_eq!(choose(&mut c, &mut occ), 1);
        assert_eq!(c[0], [1, 3, 7]);
        // "aaaa" with "aa": leftmost occurrences, non-overlapping.
        let mut c = [[2, 2, 5], [1, 2, 5], [0, 2, 5]];
        let mut occ = [0u8; 4];
        assert_eq!(choose(&mut c, &mut occ), 2);
        assert_eq!(&c[..2], &[[0, 2, 5], [2, 2, 5]]);
    }
}
