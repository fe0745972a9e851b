//! BERT uncased WordPiece tokenization, exactly as Hugging Face `tokenizers` 0.23 does it, from
//! the vocab left in the GGUF file, in caller memory, a bounded amount of work per step.
//!
//! # Rules (HF's `BertNormalizer`, `BertPreTokenizer`, `WordPiece`, `TemplateProcessing`)
//! 1. The special tokens named by the file (`tokenizer.ggml.{padding,unknown,cls,seperator,mask}
//!    _token_id`, e.g. `[PAD] [UNK] [CLS] [SEP] [MASK]`) are matched first in the raw text,
//!    case-sensitively, leftmost-longest; the text between them is processed separately.
//! 2. Clean: U+0000, U+FFFD and controls (Cc Cf Co but `\t \n \r`) are dropped, then whitespace
//!    becomes a space. 3. Spaces go around CJK ideographs. 4. NFD, drop Mn, then lowercase
//!    (HF strips accents before lowercasing). 5. Split on whitespace and punctuation (ASCII and
//!    P*), each punctuation char a word. 6. WordPiece: greedy longest match, `##` continuations;
//!    a word of more than 100 chars, or one that cannot be covered, is one `[UNK]`. 7. `[CLS]`
//!    … `[SEP]`; truncation keeps `[CLS]` + the first n − 2 pieces + `[SEP]`.
//!
//! Character classes come from the same crates HF uses, through generated tables (see
//! [`unicode`] and `tools/unicode-tables`); whitespace and lowercasing from `core`'s `char`, as in
//! HF. What cannot match HF exactly: `char::is_whitespace` and `char::to_lowercase` follow the
//! Unicode version of the Rust compiler that builds this crate, HF's those of the compiler that
//! built it (they differ only on code points whose case mapping was added between the two).
//!
//! # Vocab form
//! GGUF stores pieces in "phantom space" form: the word-initial piece `the` as `▁the` (U+2581),
//! the continuation `##ing` as `ing`, control tokens and `[unusedN]` as they are. Lookups use that
//! form directly; an entry that is not UTF-8 simply never matches. When two entries are equal the
//! lower id wins (in both modes).
//!
//! # Driving it (all memory from the caller)
//! 1. Feed the reader's [`Event::Kv`](crate::gguf::Event::Kv)s to [`VocabMeta::observe`]; then
//!    [`VocabMeta::loader`] and [`VocabLoader::step`] until [`Step::Done`] (it reads the entries
//!    up to the highest special id) and take [`VocabLoader::vocab`]. Or, where blocking is fine,
//!    [`read_vocab`].
//! 2. Choose a [`Mode`]:
//!    * Index: size with [`VocabIndex::bytes_needed`] (≈ 580 KB for BERT), build with
//!      [`IndexBuilder::new`] / [`IndexBuilder::step`] (bounded entries per step) /
//!      [`IndexBuilder::finish`], then pass [`Lookup::Index`].
//!    * Scan: nothing to build; pass [`Lookup::Scan`]. The vocab is streamed from the file once
//!      per window of text.
//! 3. Size the work memory with [`work_bytes`] (mode, window chars) and the output with
//!    [`Options::max_tokens`] (untruncated, [`max_ids`] of the text never runs out);
//!    [`Tokenize::new`], then [`Tokenize::step`] until [`Step::Done`]; [`Tokenize::ids`] is
//!    `[CLS] … [SEP]`.
//!
//! Both modes give identical ids. Nothing allocates, nothing panics, nothing is `unsafe`.
//!
//! # SentencePiece models (`tokenizer.ggml.model = "llama"`: Llama 2, Gemma 3)
//! Tokenized exactly as llama.cpp does it ([`SpmTokenize`]; rules in the `spm` module). Driving
//! it has the same shape:
//! 1. Feed the KVs to [`ModelVocabMeta::observe`]; [`ModelVocabMeta::loader`] and
//!    [`ModelVocabLoader::step`] until [`Step::Done`] (one pass over every entry, its type and
//!    score); take [`ModelVocabLoader::vocab`]. Or [`read_model_vocab`].
//! 2. Index: [`TokenIndex::bytes_needed`] (690 930 bytes for Llama 2's 32 000 entries, 6 247 537
//!    for Gemma 3's 262 144), [`TokenIndexBuilder`] step by step, [`ModelLookup::Index`]. Scan:
//!    [`ModelLookup::Scan`], nothing to build (two vocab passes per window of text).
//! 3. [`spm_work_bytes`] (mode, window bytes), [`SpmTokenize::new`] with [`ModelOptions`]
//!    (`add_special`: BOS/EOS per the file; `parse_special`: control tokens in the text), then
//!    [`SpmTokenize::step`] until [`Step::Done`].
//!
//! Where it differs from llama.cpp (none of it occurs in the Llama 2 or Gemma 3 vocab):
//! special tokens of equal length that overlap in the text are taken lowest id first (llama.cpp:
//! `std::sort`'s unspecified order); an entry that occurs twice is looked up as its last id, also
//! when matching special tokens (llama.cpp keeps every special id); llama.cpp's name-based
//! attribute fixes (EOT/FIM tokens made control, per-model lstrip/rstrip) are not applied;
//! entries over [`MAX_ENTRY_BYTES`] never match; empty entries never match (llama.cpp renames them
//! `[EMPTY_i]`); a char with no byte token is the unknown token (llama.cpp throws). A fragment
//! between two cuts (no space inside) longer than the window is [`Error::BufferTooSmall`](crate::Error).
//!
//! # Byte-level BPE models (`tokenizer.ggml.model = "gpt2"`: Qwen2, Llama 3)
//! Tokenized exactly as llama.cpp does it ([`BpeTokenize`]; rules in the `bpe` module): the
//! `qwen2` or `llama-bpe` split hand-coded over generated Unicode 15.1 letter/number tables,
//! GPT-2's byte chars, merges by rank. Driving it is the SPM code with other names: [`ModelVocabMeta`] and
//! [`ModelVocabLoader`] as above; [`TokenIndex::bytes_needed`] (5 163 435 bytes for Qwen2's
//! 151 936 tokens and 151 387 merges, 6 406 332 for Llama 3's 128 256 and 280 147) and [`TokenIndexBuilder`] (it streams the merges after the
//! tokens); [`bpe_work_bytes`] (≈ 315 KB for 4 KiB words), [`BpeTokenize::new`] with
//! [`ModelLookup::Index`] and the same [`ModelOptions`], then [`BpeTokenize::step`]. Scan mode
//! ([`ModelLookup::Scan`]) builds nothing: each batch of text streams the tokens and the merges
//! from the file (twice each with special tokens), in [`bpe_scan_bytes`] of work memory (≈ 420 KB
//! for 4 KiB words, 44 KB for 256; rules in the `bpe_scan` module); both modes give the same
//! ids. The `gpt-2` pre-tokenizer is not split yet ([`Unsupported`](crate::Unsupported)).
//!
//! Where it differs from llama.cpp: as for SPM, the name-based attribute fixes are not applied —
//! in the Qwen2 vocab llama.cpp makes the normal token `</s>` (128 247) a control token, so with
//! `parse_special` the text `</s>` is that one id there and three pieces here; merges are kept by
//! the ids of their sides (a merge of non-tokens, or one whose result is no token, would be lost;
//! there is none in Qwen2); a word (a letter run, a whitespace run with a line break, …) longer
//! than the window is [`Error::BufferTooSmall`](crate::Error), as is a cluster of overlapping
//! special-token occurrences wider than the window.

mod bpe;
mod bpe_scan;
mod bpe_split;
mod index;
mod model_vocab;
mod normalize;
mod special;
mod spm;
#[rustfmt::skip]
mod tables;
mod text;
mod token_index;
mod tokenize;
pub mod unicode;
mod vocab;

pub use bpe::{bpe_work_bytes, BpeTokenize};
pub use bpe_scan::{bpe_scan_bytes, ScanStats, BPE_SCAN_SCRATCH, MAX_BPE_SCAN_WINDOW};
pub use index::{IndexBuilder, VocabIndex};
pub use model_vocab::{
    read_model_vocab, ModelKind, ModelVocab, ModelVocabLoader, ModelVocabMeta, PreTokenizer, MAX_ENTRY_BYTES,
    MAX_SPECIAL_BYTES,
};
pub use normalize::max_ids;
pub use spm::{
    spm_work_bytes, ModelLookup, ModelOptions, SpmTokenize, MAX_MODEL_WINDOW, MIN_MODEL_WINDOW,
    MODEL_SCAN_SCRATCH,
};
pub use text::{TextIndexBuilder, TextLookup, TextTokenize, TextVocab};
pub use token_index::{TokenIndex, TokenIndexBuilder};
pub use tokenize::{
    work_bytes, Lookup, Mode, Options, Tokenize, MAX_WINDOW_CHARS, MIN_WINDOW_CHARS, SCAN_SCRATCH,
};
pub use vocab::{
    read_vocab, TokenizerKind, Vocab, VocabLoader, VocabMeta, MAX_SPECIAL_LEN, MIN_VOCAB_SCRATCH,
};

/// HF's `max_input_chars_per_word`: a longer word is a single `[UNK]`.
pub const MAX_WORD_CHARS: usize = 100;

/// The longest piece in bytes: [`MAX_WORD_CHARS`] chars of up to 4 bytes. Longer vocab entries
/// can never match and are skipped.
pub const MAX_PIECE_BYTES: usize = MAX_WORD_CHARS * 4;

/// The GGUF word-initial marker, U+2581 LOWER ONE EIGHTH BLOCK.
pub const PHANTOM_SPACE: &[u8] = "\u{2581}".as_bytes();

/// What a step of a tokenizer state machine reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Work remains: call `step` again.
    Pending,
    /// Finished; the result can be taken. Later steps return `Done` again.
    Done,
}
