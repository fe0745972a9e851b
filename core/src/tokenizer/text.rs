//! One interface over the three tokenizers, chosen by the model's vocab: WordPiece
//! ([`Tokenize`]), SentencePiece ([`SpmTokenize`]) and byte-level BPE ([`BpeTokenize`]). What a
//! job or a host needs to size, build and drive whichever one a model file asks for.

use super::{
    bpe_work_bytes, spm_work_bytes, work_bytes, BpeTokenize, IndexBuilder, Lookup, Mode, ModelKind,
    ModelLookup, ModelOptions, ModelVocab, Options, SpmTokenize, Step, TokenIndex, TokenIndexBuilder,
    Tokenize, Vocab, VocabIndex, MIN_MODEL_WINDOW, MIN_WINDOW_CHARS,
};
use crate::error::{Error, Result};
use crate::io::Source;

/// A model's vocab as its tokenizer needs it. Small and `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextVocab {
    /// `tokenizer.ggml.model = "bert"`.
    WordPiece(Vocab),
    /// `"llama"` (SentencePiece) or `"gpt2"` (byte-level BPE).
    Model(ModelVocab),
}

impl TextVocab {
    /// Whether the tokenizer can look pieces up by streaming the vocab ([`Mode::Scan`]): every
    /// tokenizer can (BPE streams its merges too).
    pub fn has_scan(&self) -> bool {
        true
    }

    /// Bytes of the index [`Mode::Index`] builds ([`VocabIndex::bytes_needed`] or
    /// [`TokenIndex::bytes_needed`]).
    pub fn index_bytes(&self) -> Result<usize> {
        match self {
            TextVocab::WordPiece(v) => VocabIndex::bytes_needed(v),
            TextVocab::Model(v) => TokenIndex::bytes_needed(v),
        }
    }

    /// The smallest window: in chars of normalized text for WordPiece, in bytes of escaped text
    /// for the others.
    pub fn min_window(&self) -> usize {
        match self {
            TextVocab::WordPiece(_) => MIN_WINDOW_CHARS,
            TextVocab::Model(_) => MIN_MODEL_WINDOW,
        }
    }

    /// Bytes of work memory the tokenizer needs in `mode` with a window of `window` (see
    /// [`TextVocab::min_window`] for its unit). Saturates instead of overflowing.
    pub fn work_bytes(&self, mode: Mode, window: usize) -> usize {
        let scan = mode == Mode::Scan;
        match self {
            TextVocab::WordPiece(_) => work_bytes(mode, window),
            TextVocab::Model(v) => match v.kind() {
                ModelKind::Spm => spm_work_bytes(scan, window),
                ModelKind::Bpe(_) => bpe_work_bytes(scan, window),
            },
        }
    }
}

/// Builds the index of any vocab ([`Mode::Index`]) in caller memory of
/// [`TextVocab::index_bytes`], a bounded number of entries per step.
// Held in place by its caller (no allocator to box the large variant in).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum TextIndexBuilder<'m> {
    /// A WordPiece [`VocabIndex`].
    WordPiece(IndexBuilder<'m>),
    /// A SentencePiece or BPE [`TokenIndex`].
    Model(TokenIndexBuilder<'m>),
}

impl<'m> TextIndexBuilder<'m> {
    /// Prepares to build `vocab`'s index in `mem`. Errors: those of [`IndexBuilder::new`] and
    /// [`TokenIndexBuilder::new`].
    pub fn new(vocab: &TextVocab, mem: &'m mut [u8]) -> Result<Self> {
        Ok(match vocab {
            TextVocab::WordPiece(v) => TextIndexBuilder::WordPiece(IndexBuilder::new(v, mem)?),
            TextVocab::Model(v) => TextIndexBuilder::Model(TokenIndexBuilder::new(v, mem)?),
        })
    }

    /// Reads at most `budget` vocab entries (at least one) from `io` through `scratch`; call
    /// again until [`Step::Done`], then [`TextIndexBuilder::finish`].
    pub fn step<S: Source + ?Sized>(&mut self, io: &mut S, scratch: &mut [u8], budget: u32) -> Result<Step> {
        match self {
            TextIndexBuilder::WordPiece(b) => b.step(io, scratch, budget),
            TextIndexBuilder::Model(b) => b.step(io, scratch, budget),
        }
    }

    /// The finished index, as the lookup jobs take.
    pub fn finish(self) -> Result<TextLookup<'m>> {
        Ok(match self {
            TextIndexBuilder::WordPiece(b) => TextLookup::WordPiece(b.finish()?),
            TextIndexBuilder::Model(b) => TextLookup::Model(b.finish()?),
        })
    }
}

/// Where pieces are looked up, for any vocab.
#[derive(Debug, Clone, Copy)]
pub enum TextLookup<'i> {
    /// By streaming the vocab from the source given to `step` ([`Mode::Scan`]).
    Scan,
    /// Through a WordPiece [`VocabIndex`] built from the same vocab.
    WordPiece(VocabIndex<'i>),
    /// Through a SentencePiece or BPE [`TokenIndex`] built from the same vocab.
    Model(TokenIndex<'i>),
}

impl TextLookup<'_> {
    /// The mode of this lookup.
    pub fn mode(&self) -> Mode {
        match self {
            TextLookup::Scan => Mode::Scan,
            TextLookup::WordPiece(_) | TextLookup::Model(_) => Mode::Index,
        }
    }
}

impl<'i> From<Lookup<'i>> for TextLookup<'i> {
    fn from(lookup: Lookup<'i>) -> Self {
        match lookup {
            Lookup::Index(ix) => TextLookup::WordPiece(ix),
            Lookup::Scan => TextLookup::Scan,
        }
    }
}

impl<'i> From<ModelLookup<'i>> for TextLookup<'i> {
    fn from(lookup: ModelLookup<'i>) -> Self {
        match lookup {
            ModelLookup::Index(ix) => TextLookup::Model(ix),
            ModelLookup::Scan => TextLookup::Scan,
        }
    }
}

/// A text being tokenized by the model's own tokenizer.
///
/// WordPiece adds `[CLS]` … `[SEP]`; SentencePiece and BPE add BOS and EOS as the file's
/// `add_bos_token` / `add_eos_token` ask and match control tokens in the text (llama.cpp's
/// `add_special` and `parse_special`, as `llama-embedding` tokenizes), like WordPiece matches
/// `[CLS]` and friends. A text longer than `max_tokens` is cut keeping the leading and trailing
/// special tokens, or refused when `truncate` is off.
// Held in place by its job (no allocator to box the large variant in).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum TextTokenize<'a> {
    /// WordPiece.
    WordPiece(Tokenize<'a>),
    /// SentencePiece.
    Spm(SpmTokenize<'a>),
    /// Byte-level BPE.
    Bpe(BpeTokenize<'a>),
}

impl<'a> TextTokenize<'a> {
    /// Prepares to tokenize `text` with `vocab`'s tokenizer, working in `mem` (at least
    /// [`TextVocab::work_bytes`] for the lookup's mode and a window) and writing ids to `out`
    /// (at least `options.max_tokens`). O(1).
    ///
    /// Errors: those of the tokenizer's `new`, and [`Error::PlanMismatch`] for an index built for
    /// another kind of vocab.
    pub fn new(
        vocab: &TextVocab,
        lookup: TextLookup<'a>,
        text: &'a str,
        mem: &'a mut [u8],
        out: &'a mut [u32],
        options: Options,
    ) -> Result<Self> {
        let model_lookup = |lookup| match lookup {
            TextLookup::Scan => Ok(ModelLookup::Scan),
            TextLookup::Model(ix) => Ok(ModelLookup::Index(ix)),
            TextLookup::WordPiece(_) => Err(Error::PlanMismatch),
        };
        let model_options = ModelOptions {
            max_tokens: options.max_tokens,
            truncate: options.truncate,
            add_special: true,
            parse_special: true,
        };
        Ok(match vocab {
            TextVocab::WordPiece(v) => {
                let lookup = match lookup {
                    TextLookup::Scan => Lookup::Scan,
                    TextLookup::WordPiece(ix) => Lookup::Index(ix),
                    TextLookup::Model(_) => return Err(Error::PlanMismatch),
                };
                TextTokenize::WordPiece(Tokenize::new(v, lookup, text, mem, out, options)?)
            }
            TextVocab::Model(v) => match v.kind() {
                ModelKind::Spm => TextTokenize::Spm(SpmTokenize::new(
                    v,
                    model_lookup(lookup)?,
                    text,
                    mem,
                    out,
                    model_options,
                )?),
                ModelKind::Bpe(_) => TextTokenize::Bpe(BpeTokenize::new(
                    v,
                    model_lookup(lookup)?,
                    text,
                    mem,
                    out,
                    model_options,
                )?),
            },
        })
    }

    /// Does at most `budget` units of the tokenizer's work (its own unit: chars, bytes or
    /// pieces; at least one), reading the vocab from `io` in scan mode. After [`Step::Done`]
    /// the ids are complete.
    pub fn step<S: Source + ?Sized>(&mut self, io: &mut S, budget: u32) -> Result<Step> {
        match self {
            TextTokenize::WordPiece(t) => t.step(io, budget),
            TextTokenize::Spm(t) => t.step(io, budget),
            TextTokenize::Bpe(t) => t.step(io, budget),
        }
    }

    /// The ids written so far (all of them after [`Step::Done`]).
    pub fn ids(&self) -> &[u32] {
        match self {
            TextTokenize::WordPiece(t) => t.ids(),
            TextTokenize::Spm(t) => t.ids(),
            TextTokenize::Bpe(t) => t.ids(),
        }
    }

    /// Gives the buffers back: `(out, number of ids written, work memory)`.
    pub fn into_parts(self) -> (&'a mut [u32], usize, &'a mut [u8]) {
        match self {
            TextTokenize::WordPiece(t) => t.into_parts(),
            TextTokenize::Spm(t) => t.into_parts(),
            TextTokenize::Bpe(t) => t.into_parts(),
        }
    }
}
