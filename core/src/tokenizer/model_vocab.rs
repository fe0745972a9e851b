//! The vocab of a SentencePiece (`tokenizer.ggml.model = "llama"`) or byte-level BPE (`"gpt2"`)
//! model, as llama.cpp's `llama_vocab::load` reads it: where the token, score, token-type and merge
//! arrays lie in the file, the flags and special ids (with llama.cpp's defaults), and what one
//! streaming pass over the entries learns (which lengths special tokens have, where text may be
//! cut into windows).

use embedded_io::{Read, Seek};

use super::special::{by_name, has_name_rule, NameFacts};
use super::vocab::{Cursor, Entry, FileWindow};
use super::{Step, PHANTOM_SPACE};
use crate::error::{Error, Malformed, Name, Result, Unsupported};
use crate::gguf::{ArrayRef, Event, Reader, Value, ValueType};
use crate::io::{read_exact_at, Source};

/// Bytes of the longest special token matched in raw text; a longer control, unknown or
/// user-defined token is [`Malformed::BadVocab`].
pub const MAX_SPECIAL_BYTES: usize = 64;

/// Chars that may stand right before an inner space of a token (see [`ModelVocab`]); a vocab with
/// more distinct ones is tokenized without window cuts.
const MAX_SPACE_PREDECESSORS: usize = 8;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_ADD_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const KEY_UNK: &str = "tokenizer.ggml.unknown_token_id";

/// The tokenizer algorithm of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// SentencePiece-style bigram merging by score (`"llama"`: Llama 2, Gemma 3, …).
    Spm,
    /// Byte-level BPE with merges by rank (`"gpt2"`), after the given pre-tokenizer split.
    Bpe(PreTokenizer),
}

/// The pre-tokenizer split of a BPE model (`tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `"qwen2"`: contractions, letter runs with one leading non-letter, single digits, …
    Qwen2,
    /// `"llama-bpe"` / `"llama3"` / `"llama-v3"`: as Qwen2 but digits in runs of up to three;
    /// a word that is a whole token is not merged (llama.cpp's `ignore_merges`).
    Llama3,
    /// `"gpt-2"`: GPT-2's split.
    Gpt2,
}

/// How a token is matched in raw text before tokenizing (llama.cpp's token attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    /// An ordinary entry.
    No,
    /// A control or unknown token: matched only when parsing special tokens.
    Control,
    /// A user-defined token: always matched.
    UserDefined,
}

impl Special {
    pub(crate) fn of_type(t: i32) -> Special {
        match t {
            TYPE_UNKNOWN | TYPE_CONTROL => Special::Control,
            TYPE_USER_DEFINED => Special::UserDefined,
            _ => Special::No,
        }
    }

    /// The code kept in the token index.
    pub(crate) fn code(self) -> u8 {
        match self {
            Special::No => 0,
            Special::Control => 1,
            Special::UserDefined => 2,
        }
    }

    pub(crate) fn from_code(c: u8) -> Special {
        match c {
            1 => Special::Control,
            2 => Special::UserDefined,
            _ => Special::No,
        }
    }

    /// Whether a token of this kind is matched in raw text.
    pub(crate) fn matched(self, parse_special: bool) -> bool {
        match self {
            Special::No => false,
            Special::Control => parse_special,
            Special::UserDefined => true,
        }
    }
}

/// Collects the tokenizer metadata of an SPM or BPE model from a GGUF reader's
/// [`Event::Kv`](crate::gguf::Event::Kv)s. No I/O, O(1) per call.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelVocabMeta {
    kind: Option<ModelKind>,
    /// `tokenizer.ggml.pre` was seen and is not one this crate splits like llama.cpp.
    unknown_pre: Option<Name>,
    pre: Option<PreTokenizer>,
    is_bpe: bool,
    tokens: Option<ArrayRef>,
    scores: Option<ArrayRef>,
    types: Option<ArrayRef>,
    merges: Option<ArrayRef>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    add_space_prefix: Option<bool>,
    bos: Option<u64>,
    eos: Option<u64>,
    unk: Option<u64>,
}

impl ModelVocabMeta {
    /// Nothing observed yet.
    pub const fn new() -> Self {
        ModelVocabMeta {
            kind: None,
            unknown_pre: None,
            pre: None,
            is_bpe: false,
            tokens: None,
            scores: None,
            types: None,
            merges: None,
            add_bos: None,
            add_eos: None,
            add_space_prefix: None,
            bos: None,
            eos: None,
            unk: None,
        }
    }

    /// Records `key` if it is one of the tokenizer keys; other keys are ignored.
    ///
    /// Errors: a known key with a value of the wrong type is [`Malformed::WrongValueType`] (at the
    /// array's offset for arrays, else at 0); a `tokenizer.ggml.model` other than `"llama"` and
    /// `"gpt2"` is [`Unsupported::TokenizerModel`].
    pub fn observe(&mut self, key: &str, value: &Value<'_>) -> Result<()> {
        let wrong = Error::malformed(Malformed::WrongValueType, 0);
        let array = |elem: &[ValueType]| match value {
            Value::Array(a) if elem.contains(&a.elem) => Ok(*a),
            Value::Array(a) => Err(Error::malformed(Malformed::WrongValueType, a.offset)),
            _ => Err(wrong),
        };
        let flag = || match value {
            Value::Bool(b) => Ok(Some(*b)),
            _ => Err(wrong),
        };
        match key {
            KEY_MODEL => {
                let Value::String(s) = value else { return Err(wrong) };
                match s.as_str() {
                    Some("llama") => self.kind = Some(ModelKind::Spm),
                    Some("gpt2") => self.is_bpe = true,
                    other => {
                        let name = Name::new(other.unwrap_or("?"));
                        return Err(Error::Unsupported(Unsupported::TokenizerModel(name)));
                    }
                }
            }
            KEY_PRE => {
                let Value::String(s) = value else { return Err(wrong) };
                let name = s.as_str().unwrap_or("?");
                self.pre = match name {
                    "qwen2" => Some(PreTokenizer::Qwen2),
                    "llama-bpe" | "llama3" | "llama-v3" => Some(PreTokenizer::Llama3),
                    "gpt-2" => Some(PreTokenizer::Gpt2),
                    _ => {
                        self.unknown_pre = Some(Name::new(name));
                        None
                    }
                };
            }
            KEY_TOKENS => self.tokens = Some(array(&[ValueType::String])?),
            KEY_SCORES => self.scores = Some(array(&[ValueType::F32, ValueType::I32])?),
            KEY_TYPES => self.types = Some(array(&[ValueType::I32])?),
            KEY_MERGES => self.merges = Some(array(&[ValueType::String])?),
            KEY_ADD_BOS => self.add_bos = flag()?,
            KEY_ADD_EOS => self.add_eos = flag()?,
            KEY_ADD_PREFIX => self.add_space_prefix = flag()?,
            KEY_BOS => self.bos = Some(value.as_u64().ok_or(wrong)?),
            KEY_EOS => self.eos = Some(value.as_u64().ok_or(wrong)?),
            KEY_UNK => self.unk = Some(value.as_u64().ok_or(wrong)?),
            _ => {}
        }
        Ok(())
    }

    /// Checks the arrays and ids, applies llama.cpp's defaults, and returns the loader that streams
    /// the vocab once.
    ///
    /// Errors: [`Malformed::MissingKey`] for an absent model, token array or (BPE) merge array,
    /// or for an absent BOS/EOS id the file asks to add; [`Unsupported::TokenizerModel`] for a BPE
    /// pre-tokenizer other than `qwen2`, `llama-bpe` and `gpt-2`; [`Malformed::BadVocab`] (at the
    /// array) for an empty vocab, one of `u32::MAX` entries or more, or a score or type array
    /// shorter than the vocab.
    pub fn loader(&self) -> Result<ModelVocabLoader> {
        let missing = |k| Error::malformed(Malformed::MissingKey(k), 0);
        let kind = if self.is_bpe {
            match (self.pre, self.unknown_pre) {
                (Some(p), _) => ModelKind::Bpe(p),
                (None, Some(name)) => return Err(Error::Unsupported(Unsupported::TokenizerModel(name))),
                (None, None) => return Err(missing(KEY_PRE)),
            }
        } else {
            self.kind.ok_or(missing(KEY_MODEL))?
        };
        let tokens = self.tokens.ok_or(missing(KEY_TOKENS))?;
        let bad = Error::malformed(Malformed::BadVocab, tokens.offset);
        let count = u32::try_from(tokens.count).ok().filter(|&c| c > 0 && c < u32::MAX).ok_or(bad)?;
        for a in [self.scores, self.types].into_iter().flatten() {
            if a.count < tokens.count {
                return Err(Error::malformed(Malformed::BadVocab, a.offset));
            }
        }
        let merges = match kind {
            ModelKind::Bpe(_) => {
                let m = self.merges.ok_or(missing(KEY_MERGES))?;
                if m.count >= u64::from(u32::MAX) {
                    return Err(Error::malformed(Malformed::BadVocab, m.offset));
                }
                Some(m)
            }
            ModelKind::Spm => None,
        };
        // llama.cpp's defaults, then the file's keys; an id outside the vocab keeps the default
        // (a default outside the vocab is no id).
        let (bos0, eos0, unk0) = match kind {
            ModelKind::Spm => (Some(1), Some(2), Some(0)),
            ModelKind::Bpe(_) => (Some(11), Some(11), None),
        };
        let pick = |given: Option<u64>, default: Option<u32>| {
            let default = default.filter(|&d| d < count);
            match given {
                Some(id) if id < u64::from(count) => Some(id as u32),
                _ => default,
            }
        };
        let bos = pick(self.bos, bos0);
        let eos = pick(self.eos, eos0);
        let unk = pick(self.unk, unk0);
        let add_bos =
            self.add_bos.unwrap_or(matches!(kind, ModelKind::Spm | ModelKind::Bpe(PreTokenizer::Llama3)));
        let add_eos = self.add_eos.unwrap_or(false);
        let add_space_prefix = self.add_space_prefix.unwrap_or(kind == ModelKind::Spm);
        if add_bos && bos.is_none() {
            return Err(missing(KEY_BOS));
        }
        if add_eos && eos.is_none() {
            return Err(missing(KEY_EOS));
        }
        let vocab = ModelVocab {
            kind,
            tokens,
            count,
            scores: self.scores,
            types: self.types,
            merges,
            bos,
            eos,
            unk,
            add_bos,
            add_eos,
            add_space_prefix,
            control_lens: 0,
            user_lens: 0,
            special_first: [0; 4],
            space_predecessors: [0; MAX_SPACE_PREDECESSORS],
            n_space_predecessors: 0,
            cuts: true,
            longest: 0,
            names: NameFacts::default(),
        };
        Ok(ModelVocabLoader {
            vocab,
            cursor: Cursor::new(&tokens),
            types: Column::new(self.types),
            scores: Column::new(self.scores),
            done: false,
            failed: None,
        })
    }
}

/// An SPM or BPE vocab: where its arrays are in the file, its special ids and flags, and what the
/// loader's pass learned. Small and `Copy`; built by [`ModelVocabLoader`] or
/// [`read_model_vocab`].
///
/// *Cuts*: text is tokenized a window at a time, and a window may only end where no token can
/// span: before a space (or `▁`) that follows a char that is neither, when no token has that char
/// right before an inner space or `▁`. The pass records those chars (a vocab with more than a few
/// tokenizes each fragment between special tokens in one window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelVocab {
    kind: ModelKind,
    tokens: ArrayRef,
    count: u32,
    scores: Option<ArrayRef>,
    types: Option<ArrayRef>,
    merges: Option<ArrayRef>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// Bit `n − 1` set: some control/unknown token is `n` bytes long.
    control_lens: u64,
    /// The same for user-defined tokens.
    user_lens: u64,
    /// Bit `b` set: some special token starts with byte `b`.
    special_first: [u64; 4],
    space_predecessors: [u32; MAX_SPACE_PREDECESSORS],
    n_space_predecessors: u8,
    /// False when more distinct chars precede inner spaces than are kept: no cuts.
    cuts: bool,
    /// Bytes of the longest entry.
    longest: u16,
    /// What llama.cpp's rules by token name need to know of the vocab.
    names: NameFacts,
}

impl ModelVocab {
    /// The tokenizer algorithm.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// Number of entries (token ids are `0..count`).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The token array in the file.
    pub fn tokens(&self) -> ArrayRef {
        self.tokens
    }

    /// The score array (`None`: every score is 0, as in llama.cpp).
    pub fn scores(&self) -> Option<ArrayRef> {
        self.scores
    }

    /// The token-type array (`None`: every token is normal).
    pub(crate) fn types(&self) -> Option<ArrayRef> {
        self.types
    }

    /// The merge array (BPE only).
    pub fn merges(&self) -> Option<ArrayRef> {
        self.merges
    }

    /// The BOS id, when there is one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The EOS id, when there is one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The unknown token's id, when there is one.
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    /// Whether a tokenization with special tokens starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether a tokenization with special tokens ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether SPM puts a space before the text and after each special token.
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Bytes of the longest entry (at most [`MAX_ENTRY_BYTES`]).
    pub fn longest_entry(&self) -> usize {
        usize::from(self.longest)
    }

    /// The lengths (bit `n − 1`: `n` bytes) of the special tokens matched in raw text.
    pub(crate) fn special_lens(&self, parse_special: bool) -> u64 {
        if parse_special {
            self.control_lens | self.user_lens
        } else {
            self.user_lens
        }
    }

    /// Whether some special token starts with byte `b`.
    pub(crate) fn special_starts_with(&self, b: u8) -> bool {
        let word = self.special_first.get(usize::from(b >> 6)).copied().unwrap_or(0);
        word >> (b & 63) & 1 != 0
    }

    /// Whether a window may end at byte `at` of `text`: `text[at]` is a space or `▁`, the char
    /// before it is neither, and no token has that char right before an inner space.
    pub(crate) fn is_cut(&self, text: &str, at: usize) -> bool {
        if !self.cuts || at == 0 {
            return false;
        }
        let (Some(before), Some(after)) = (text.get(..at), text.get(at..)) else { return false };
        let starts_space = after.starts_with(' ') || after.as_bytes().starts_with(PHANTOM_SPACE);
        let Some(prev) = before.chars().next_back() else { return false };
        starts_space && !is_space(prev) && !self.precedes_space(prev)
    }

    fn precedes_space(&self, c: char) -> bool {
        let n = usize::from(self.n_space_predecessors);
        self.space_predecessors.get(..n).unwrap_or_default().contains(&u32::from(c))
    }

    /// How entry `text`, of token type `ty`, is matched in raw text: its type, then llama.cpp's
    /// rules by name ([`by_name`]). Valid once the loader's pass is done.
    pub(crate) fn special(&self, text: &[u8], ty: i32) -> Special {
        by_name(text, Special::of_type(ty), self.names)
    }

    /// Records what entry `entry` (of token type `ty`) tells about specials and cuts.
    fn learn(&mut self, entry: &[u8], ty: i32) -> Result<()> {
        self.longest = self.longest.max(entry.len() as u16);
        self.names.learn(entry);
        // A name rule's outcome may depend on entries still to come: count both kinds (the
        // lengths and first bytes only narrow the search for special tokens).
        let named = has_name_rule(entry);
        let special = if named { Special::Control } else { Special::of_type(ty) };
        if special != Special::No && !entry.is_empty() && core::str::from_utf8(entry).is_ok() {
            if entry.len() > MAX_SPECIAL_BYTES {
                return Err(Error::malformed(Malformed::BadVocab, self.tokens.offset));
            }
            let bit = 1u64 << (entry.len().saturating_sub(1) & 63);
            match special {
                _ if named => {
                    self.user_lens |= bit;
                    self.control_lens |= bit;
                }
                Special::UserDefined => self.user_lens |= bit,
                _ => self.control_lens |= bit,
            }
            if let Some(&b) = entry.first() {
                if let Some(w) = self.special_first.get_mut(usize::from(b >> 6)) {
                    *w |= 1 << (b & 63);
                }
            }
        }
        let Ok(s) = core::str::from_utf8(entry) else { return Ok(()) };
        let mut prev: Option<char> = None;
        for c in s.chars() {
            if let Some(p) = prev {
                if is_space(c) && !is_space(p) && !self.precedes_space(p) {
                    let n = usize::from(self.n_space_predecessors);
                    match self.space_predecessors.get_mut(n) {
                        Some(slot) => {
                            *slot = u32::from(p);
                            self.n_space_predecessors = self.n_space_predecessors.saturating_add(1);
                        }
                        None => self.cuts = false,
                    }
                }
            }
            prev = Some(c);
        }
        Ok(())
    }
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\u{2581}'
}

/// Bytes of the longest entry that can ever be looked up; longer entries are skipped (they can
/// never match).
pub const MAX_ENTRY_BYTES: usize = super::MAX_PIECE_BYTES + 3;

/// Elements of a fixed-size array read per file read.
const COLUMN_BATCH: usize = 64;

/// A cached run of a 4-byte-element array (scores or token types), read a batch at a time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    array: Option<ArrayRef>,
    first: u32,
    len: u32,
    buf: [u8; COLUMN_BATCH * 4],
}

impl Column {
    pub(crate) fn new(array: Option<ArrayRef>) -> Self {
        Column { array, first: 0, len: 0, buf: [0; COLUMN_BATCH * 4] }
    }

    /// Element `i` as 4 little-endian bytes; `None` when there is no array.
    pub(crate) fn get<S: Source + ?Sized>(&mut self, io: &mut S, i: u32) -> Result<Option<[u8; 4]>> {
        let Some(a) = self.array else { return Ok(None) };
        if i < self.first || i >= self.first.saturating_add(self.len) {
            let left = a.count.saturating_sub(u64::from(i));
            let n = left.min(COLUMN_BATCH as u64) as usize;
            let at = a.element_offset(u64::from(i)).ok_or(Error::malformed(Malformed::BadVocab, a.offset))?;
            let dst = self.buf.get_mut(..n.saturating_mul(4)).ok_or(Error::InvalidState)?;
            read_exact_at(io, at, dst)?;
            self.first = i;
            self.len = n as u32;
        }
        let k = (i.saturating_sub(self.first) as usize).saturating_mul(4);
        let b = self.buf.get(k..k.saturating_add(4)).ok_or(Error::InvalidState)?;
        Ok(Some([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
            b.get(2).copied().unwrap_or(0),
            b.get(3).copied().unwrap_or(0),
        ]))
    }

    /// Element `i` as an i32 (0 without an array).
    pub(crate) fn i32<S: Source + ?Sized>(&mut self, io: &mut S, i: u32) -> Result<i32> {
        Ok(self.get(io, i)?.map_or(0, i32::from_le_bytes))
    }

    /// Element `i` as a score: f32, or an i32 converted as llama.cpp does (0.0 without an array).
    /// A NaN or infinite score is [`Malformed::BadVocab`].
    pub(crate) fn score<S: Source + ?Sized>(&mut self, io: &mut S, i: u32) -> Result<f32> {
        let Some(a) = self.array else { return Ok(0.0) };
        let Some(b) = self.get(io, i)? else { return Ok(0.0) };
        let v = if a.elem == ValueType::I32 { i32::from_le_bytes(b) as f32 } else { f32::from_le_bytes(b) };
        if !v.is_finite() {
            return Err(Error::malformed(Malformed::BadVocab, a.offset));
        }
        Ok(v)
    }
}

/// Streams every entry of the vocab once (strings, token types and scores), recording what
/// [`ModelVocab`] needs and checking that the scores are finite.
///
/// Created by [`ModelVocabMeta::loader`]. Drive [`ModelVocabLoader::step`] until it returns
/// [`Step::Done`], then take [`ModelVocabLoader::vocab`]. After an error every later step returns
/// it again.
#[derive(Debug, Clone, Copy)]
pub struct ModelVocabLoader {
    vocab: ModelVocab,
    cursor: Cursor,
    types: Column,
    scores: Column,
    done: bool,
    failed: Option<Error>,
}

impl ModelVocabLoader {
    /// Reads at most `budget` entries (at least one) through `scratch` (at least
    /// [`MIN_VOCAB_SCRATCH`](super::MIN_VOCAB_SCRATCH) bytes; it may differ between calls).
    ///
    /// Errors: `scratch` too small is [`Error::BufferTooSmall`]; an entry that does not fit the
    /// array or the file is [`Malformed::LengthTooLarge`] / [`Malformed::Truncated`]; a special
    /// token over [`MAX_SPECIAL_BYTES`] or a non-finite score is [`Malformed::BadVocab`].
    pub fn step<S: Source + ?Sized>(&mut self, io: &mut S, scratch: &mut [u8], budget: u32) -> Result<Step> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let r = self.advance(io, scratch, budget);
        if let Err(e) = r {
            self.failed = Some(e);
        }
        r
    }

    fn advance<S: Source + ?Sized>(&mut self, io: &mut S, scratch: &mut [u8], budget: u32) -> Result<Step> {
        if self.done {
            return Ok(Step::Done);
        }
        let mut win = FileWindow::new(scratch)?;
        let tokens = self.vocab.tokens;
        for _ in 0..budget.max(1) {
            let Some((id, entry)) = self.cursor.next(&tokens, io, &mut win)? else {
                self.done = true;
                return Ok(Step::Done);
            };
            let ty = self.types.i32(io, id)?;
            self.scores.score(io, id)?;
            match entry {
                Entry::Bytes(b) => self.vocab.learn(b, ty)?,
                Entry::Long => {
                    if Special::of_type(ty) != Special::No {
                        return Err(Error::malformed(Malformed::BadVocab, tokens.offset));
                    }
                    self.vocab.cuts = false;
                }
            }
        }
        if u64::from(self.cursor.index) >= tokens.count {
            self.done = true;
            return Ok(Step::Done);
        }
        Ok(Step::Pending)
    }

    /// Entries read so far and in all.
    pub fn progress(&self) -> (u64, u64) {
        (u64::from(self.cursor.index), self.vocab.tokens.count)
    }

    /// The vocab, once a step returned [`Step::Done`]; [`Error::InvalidState`] before.
    pub fn vocab(&self) -> Result<ModelVocab> {
        match (self.failed, self.done) {
            (Some(e), _) => Err(e),
            (None, true) => Ok(self.vocab),
            (None, false) => Err(Error::InvalidState),
        }
    }
}

/// Reads a whole GGUF header, collects the tokenizer metadata and loads the [`ModelVocab`]. Not
/// bounded in time: for tools, tests and hosts that may block.
///
/// `scratch` must hold [`crate::gguf::MIN_SCRATCH`] bytes.
pub fn read_model_vocab<S: Read + Seek + ?Sized>(io: &mut S, scratch: &mut [u8]) -> Result<ModelVocab> {
    let mut meta = ModelVocabMeta::new();
    {
        let mut reader = Reader::new(scratch)?;
        loop {
            match reader.next_event(io)? {
                Event::Kv { key, value } => meta.observe(key, &value)?,
                Event::Done(_) => break,
                _ => {}
            }
        }
    }
    let mut loader = meta.loader()?;
    while loader.step(io, scratch, u32::MAX)? == Step::Pending {}
    loader.vocab()
}
