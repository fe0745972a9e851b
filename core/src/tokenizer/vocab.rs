//! The vocab as it lies in the GGUF file: where the token array is, the special token ids, the
//! strings of the special tokens (the only entries kept in memory), and a resumable cursor that
//! streams the entries.

use embedded_io::{Read, Seek};

use super::{Step, MAX_PIECE_BYTES, PHANTOM_SPACE};
use crate::error::{Error, Malformed, Name, Result, Unsupported};
use crate::gguf::{ArrayRef, Event, Reader, Value, ValueType};
use crate::io::{read_at_most, Source};

/// Bytes of a special token's string kept inline in [`Vocab`]; a longer special token is
/// [`Malformed::BadVocab`].
pub const MAX_SPECIAL_LEN: usize = 32;

/// The smallest scratch buffer that streams a vocab ([`VocabLoader::step`],
/// [`IndexBuilder::step`](super::IndexBuilder::step)): an entry's length and the longest entry
/// that can ever match fit in it. 4 KiB reads the file in fewer, larger pieces.
pub const MIN_VOCAB_SCRATCH: usize = 512;

/// Number of special tokens a vocab can name (`[PAD]` `[UNK]` `[CLS]` `[SEP]` `[MASK]`).
const SPECIAL_KINDS: usize = 5;

const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_MODEL: &str = "tokenizer.ggml.model";
/// The special-id keys, in the order of `VocabMeta::ids`.
const KEY_IDS: [&str; SPECIAL_KINDS] = [
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.cls_token_id",
    "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.mask_token_id",
];
const PAD: usize = 0;
const UNK: usize = 1;
const CLS: usize = 2;
const SEP: usize = 3;
const MASK: usize = 4;

/// The tokenizer algorithm a file names (`tokenizer.ggml.model`; WordPiece when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenizerKind {
    /// `"bert"`: WordPiece, what [`Tokenize`](super::Tokenize) computes.
    #[default]
    WordPiece,
    /// `"llama"`: SentencePiece-style (Gemma, Llama 2).
    SentencePiece,
    /// `"gpt2"`: byte-level BPE (Qwen).
    Bpe,
}

impl TokenizerKind {
    /// The `tokenizer.ggml.model` string.
    pub const fn name(self) -> &'static str {
        match self {
            TokenizerKind::WordPiece => "bert",
            TokenizerKind::SentencePiece => "llama",
            TokenizerKind::Bpe => "gpt2",
        }
    }
}

/// Collects the tokenizer metadata from a GGUF reader's [`Event::Kv`]s.
///
/// Feed it every KV ([`VocabMeta::observe`] ignores the ones it does not need), then turn it into
/// a [`VocabLoader`] with [`VocabMeta::loader`]. No I/O, O(1) per call.
#[derive(Debug, Clone, Copy, Default)]
pub struct VocabMeta {
    tokens: Option<ArrayRef>,
    ids: [Option<u64>; SPECIAL_KINDS],
    kind: TokenizerKind,
    /// Whether `"llama"` and `"gpt2"` models are accepted ([`VocabMeta::any_model`]).
    any_model: bool,
}

impl VocabMeta {
    /// Nothing observed yet; a WordPiece vocab is expected.
    pub const fn new() -> Self {
        VocabMeta {
            tokens: None,
            ids: [None; SPECIAL_KINDS],
            kind: TokenizerKind::WordPiece,
            any_model: false,
        }
    }

    /// Nothing observed yet; any [`TokenizerKind`] is accepted and remembered (what a model
    /// loader needs, whose jobs may take token ids).
    pub const fn any_model() -> Self {
        VocabMeta { any_model: true, ..VocabMeta::new() }
    }

    /// Records `key` if it is one of the tokenizer keys (`tokenizer.ggml.tokens`, `.model`, the
    /// five `*_token_id`s); other keys are ignored.
    ///
    /// Errors: a known key with a value of the wrong type is [`Malformed::WrongValueType`] (at the
    /// token array's offset for `tokens`, else at offset 0: the reader does not report a KV's
    /// position); a `tokenizer.ggml.model` other than `"bert"` (or, for [`VocabMeta::any_model`],
    /// `"llama"` and `"gpt2"`) is [`Unsupported::TokenizerModel`].
    pub fn observe(&mut self, key: &str, value: &Value<'_>) -> Result<()> {
        let wrong = Error::malformed(Malformed::WrongValueType, 0);
        if key == KEY_TOKENS {
            match value {
                Value::Array(a) if a.elem == ValueType::String => self.tokens = Some(*a),
                Value::Array(a) => return Err(Error::malformed(Malformed::WrongValueType, a.offset)),
                _ => return Err(wrong),
            }
        } else if key == KEY_MODEL {
            let model = match value {
                Value::String(s) => s.as_str(),
                _ => return Err(wrong),
            };
            self.kind = match model {
                Some("bert") => TokenizerKind::WordPiece,
                Some("llama") if self.any_model => TokenizerKind::SentencePiece,
                Some("gpt2") if self.any_model => TokenizerKind::Bpe,
                other => {
                    let name = Name::new(other.unwrap_or("?"));
                    return Err(Error::Unsupported(Unsupported::TokenizerModel(name)));
                }
            };
        } else if let Some(k) = KEY_IDS.iter().position(|&k| k == key) {
            let id = value.as_u64().ok_or(wrong)?;
            if let Some(slot) = self.ids.get_mut(k) {
                *slot = Some(id);
            }
        }
        Ok(())
    }

    /// Checks that the token array and (for WordPiece) the `[UNK]`, `[CLS]` and `[SEP]` ids are
    /// present and that every special id is inside the vocab, and returns the loader that reads
    /// the special tokens' strings.
    ///
    /// Errors: [`Malformed::MissingKey`] (offset 0) for an absent key; [`Malformed::BadVocab`] (at
    /// the token array) for an empty vocab, one of more than `u32::MAX` entries, or a special id
    /// outside it.
    pub fn loader(&self) -> Result<VocabLoader> {
        let tokens = self.tokens.ok_or(Error::malformed(Malformed::MissingKey(KEY_TOKENS), 0))?;
        let bad = Error::malformed(Malformed::BadVocab, tokens.offset);
        let count = u32::try_from(tokens.count).map_err(|_| bad)?;
        if count == 0 {
            return Err(bad);
        }
        let mut ids = [None; SPECIAL_KINDS];
        for (k, (dst, src)) in ids.iter_mut().zip(self.ids).enumerate() {
            match src {
                Some(id) if id < u64::from(count) => *dst = Some(id as u32),
                Some(_) => return Err(bad),
                None if self.kind == TokenizerKind::WordPiece && matches!(k, UNK | CLS | SEP) => {
                    let key = KEY_IDS.get(k).copied().unwrap_or(KEY_TOKENS);
                    return Err(Error::malformed(Malformed::MissingKey(key), 0));
                }
                None => {}
            }
        }
        let last = ids.iter().flatten().copied().max().unwrap_or(0);
        let specials = [Special::EMPTY; SPECIAL_KINDS];
        let vocab = Vocab { tokens, count, ids, specials, n_specials: 0, kind: self.kind };
        Ok(VocabLoader { vocab, cursor: Cursor::new(&tokens), last, done: false, failed: None })
    }
}

/// A special token matched in raw text: its id and string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Special {
    id: u32,
    len: u8,
    bytes: [u8; MAX_SPECIAL_LEN],
}

impl Special {
    const EMPTY: Special = Special { id: 0, len: 0, bytes: [0; MAX_SPECIAL_LEN] };

    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

/// Streams the vocab's first entries up to the highest special id, keeping the special tokens'
/// strings; yields the [`Vocab`] the tokenizer works from.
///
/// Created by [`VocabMeta::loader`]. Drive [`VocabLoader::step`] until it returns
/// [`Step::Done`], then take [`VocabLoader::vocab`]. After an error every later step returns it
/// again.
#[derive(Debug, Clone, Copy)]
pub struct VocabLoader {
    vocab: Vocab,
    cursor: Cursor,
    last: u32,
    done: bool,
    failed: Option<Error>,
}

impl VocabLoader {
    /// Reads at most `budget` entries (at least one), each through at most one read of `scratch`
    /// (any buffer of at least [`MIN_VOCAB_SCRATCH`] bytes; it may differ between calls).
    ///
    /// Errors: `scratch` too small is [`Error::BufferTooSmall`]; an entry that does not fit the
    /// array or the file is [`Malformed::LengthTooLarge`] / [`Malformed::Truncated`]; a special
    /// token longer than [`MAX_SPECIAL_LEN`] is [`Malformed::BadVocab`]. A special token that
    /// is not UTF-8 or empty is kept out of the text matching (it can never occur in a `&str`).
    pub fn step<S: Source + ?Sized>(&mut self, io: &mut S, scratch: &mut [u8], budget: u32) -> Result<Step> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        match self.advance(io, scratch, budget) {
            Ok(step) => Ok(step),
            Err(e) => {
                self.failed = Some(e);
                Err(e)
            }
        }
    }

    fn advance<S: Source + ?Sized>(&mut self, io: &mut S, scratch: &mut [u8], budget: u32) -> Result<Step> {
        if self.done {
            return Ok(Step::Done);
        }
        let mut win = FileWindow::new(scratch)?;
        let tokens = self.vocab.tokens;
        for _ in 0..budget.max(1) {
            if self.cursor.index > self.last {
                self.done = true;
                return Ok(Step::Done);
            }
            let Some((id, entry)) = self.cursor.next(&tokens, io, &mut win)? else {
                self.done = true;
                return Ok(Step::Done);
            };
            for k in 0..SPECIAL_KINDS {
                if self.vocab.ids.get(k).copied().flatten() == Some(id) {
                    self.vocab.add_special(id, entry)?;
                    break;
                }
            }
        }
        if self.cursor.index > self.last {
            self.done = true;
            return Ok(Step::Done);
        }
        Ok(Step::Pending)
    }

    /// Entries read so far and entries to read (up to the highest special id).
    pub fn progress(&self) -> (u64, u64) {
        (u64::from(self.cursor.index), u64::from(self.last).saturating_add(1))
    }

    /// The vocab, once a step returned [`Step::Done`]; [`Error::InvalidState`] before.
    pub fn vocab(&self) -> Result<Vocab> {
        match (self.failed, self.done) {
            (Some(e), _) => Err(e),
            (None, true) => Ok(self.vocab),
            (None, false) => Err(Error::InvalidState),
        }
    }
}

/// The vocab of a model: where its entries are in the file, the special token ids, and the
/// special tokens' strings. Small (about 280 bytes) and `Copy`; built by [`VocabLoader`] or
/// [`read_vocab`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vocab {
    tokens: ArrayRef,
    count: u32,
    ids: [Option<u32>; SPECIAL_KINDS],
    /// The special tokens matched in raw text, in the order pad, unk, cls, sep, mask.
    specials: [Special; SPECIAL_KINDS],
    n_specials: u8,
    kind: TokenizerKind,
}

impl Vocab {
    /// Number of entries (token ids are `0..count`).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The tokenizer algorithm the file names.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// The token array in the file.
    pub fn tokens(&self) -> ArrayRef {
        self.tokens
    }

    /// The `[CLS]` id, first token of every sequence.
    pub fn cls(&self) -> u32 {
        self.ids.get(CLS).copied().flatten().unwrap_or(0)
    }

    /// The `[SEP]` id, last token of every sequence.
    pub fn sep(&self) -> u32 {
        self.ids.get(SEP).copied().flatten().unwrap_or(0)
    }

    /// The `[UNK]` id, for words the vocab cannot cover.
    pub fn unk(&self) -> u32 {
        self.ids.get(UNK).copied().flatten().unwrap_or(0)
    }

    /// The `[PAD]` id, when the file names one.
    pub fn pad(&self) -> Option<u32> {
        self.ids.get(PAD).copied().flatten()
    }

    /// The `[MASK]` id, when the file names one.
    pub fn mask(&self) -> Option<u32> {
        self.ids.get(MASK).copied().flatten()
    }

    /// Records `entry` as the string of special token `id` (once per distinct id).
    fn add_special(&mut self, id: u32, entry: Entry<'_>) -> Result<()> {
        let bad = Error::malformed(Malformed::BadVocab, self.tokens.offset);
        let bytes = match entry {
            Entry::Bytes(b) => b,
            Entry::Long => return Err(bad),
        };
        if bytes.len() > MAX_SPECIAL_LEN {
            return Err(bad);
        }
        if bytes.is_empty() || core::str::from_utf8(bytes).is_err() {
            // Can never occur in a `&str`: nothing to match.
            return Ok(());
        }
        let n = usize::from(self.n_specials);
        let slot = self.specials.get_mut(n).ok_or(bad)?;
        slot.id = id;
        slot.len = bytes.len() as u8;
        for (d, s) in slot.bytes.iter_mut().zip(bytes) {
            *d = *s;
        }
        self.n_specials = self.n_specials.saturating_add(1);
        Ok(())
    }

    /// The special token matched at the start of `rest` (leftmost-longest, as HF's added
    /// vocabulary): its index for [`Vocab::special_id`] and its length in bytes.
    pub(crate) fn match_special(&self, rest: &[u8]) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for (i, s) in self.specials.iter().take(usize::from(self.n_specials)).enumerate() {
            let b = s.as_bytes();
            if !b.is_empty() && rest.starts_with(b) && best.is_none_or(|(_, len)| b.len() > len) {
                best = Some((i, b.len()));
            }
        }
        best
    }

    /// The id of special token `index` (from [`Vocab::match_special`]).
    pub(crate) fn special_id(&self, index: usize) -> u32 {
        self.specials.get(index).map_or(self.unk(), |s| s.id)
    }
}

/// Reads a whole GGUF header with [`Reader`], collects the tokenizer metadata and loads the
/// [`Vocab`]. Not bounded in time (it walks all metadata and the tensor table): for tools, tests
/// and hosts that may block; the engine drives [`VocabMeta`] and [`VocabLoader`] itself.
///
/// `scratch` must hold [`crate::gguf::MIN_SCRATCH`] bytes.
pub fn read_vocab<S: Read + Seek + ?Sized>(io: &mut S, scratch: &mut [u8]) -> Result<Vocab> {
    let mut meta = VocabMeta::new();
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

/// A vocab entry as streamed: its bytes, or just its length when it is longer than any piece can
/// be (such an entry can never match).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Entry<'b> {
    Bytes(&'b [u8]),
    Long,
}

/// Splits a stored entry into (word-initial?, piece): `▁the` is the word-initial piece `the`,
/// `ing` the continuation piece `##ing`; `[CLS]` and `[unused0]` are continuation-form keys that
/// no piece can equal (pieces never contain `[`).
pub(crate) fn classify(raw: &[u8]) -> (bool, &[u8]) {
    match raw.strip_prefix(PHANTOM_SPACE) {
        Some(rest) => (true, rest),
        None => (false, raw),
    }
}

/// The position of the next entry of a vocab stream. `Copy`, so a stream can be paused and
/// resumed across steps with any scratch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// Id of the next entry.
    pub(crate) index: u32,
    /// Absolute file offset of its u64 length.
    pos: u64,
}

impl Cursor {
    pub(crate) fn new(tokens: &ArrayRef) -> Self {
        Cursor { index: 0, pos: tokens.offset }
    }

    /// The next entry and its id, or `None` after the last (of `tokens.count`, capped at u32).
    pub(crate) fn next<'w, S: Source + ?Sized>(
        &mut self,
        tokens: &ArrayRef,
        io: &mut S,
        win: &'w mut FileWindow<'_>,
    ) -> Result<Option<(u32, Entry<'w>)>> {
        if u64::from(self.index) >= tokens.count {
            return Ok(None);
        }
        let at = self.pos;
        let end = tokens.offset.saturating_add(tokens.byte_len);
        let len_bytes = win.bytes(io, at, 8)?;
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0xff; 8]));
        let start = at.saturating_add(8);
        if start > end || len > end.saturating_sub(start) {
            return Err(Error::malformed(Malformed::LengthTooLarge(len), at));
        }
        let id = self.index;
        self.index = self.index.saturating_add(1);
        self.pos = start.saturating_add(len);
        let max = (MAX_PIECE_BYTES.saturating_add(PHANTOM_SPACE.len())) as u64;
        if len > max {
            return Ok(Some((id, Entry::Long)));
        }
        let bytes = win.bytes(io, start, len as usize)?;
        Ok(Some((id, Entry::Bytes(bytes))))
    }
}

/// A run of file bytes held in a caller's scratch buffer.
#[derive(Debug)]
pub(crate) struct FileWindow<'s> {
    buf: &'s mut [u8],
    start: u64,
    len: usize,
}

impl<'s> FileWindow<'s> {
    /// An empty window over `buf` ([`MIN_VOCAB_SCRATCH`] bytes at least).
    pub(crate) fn new(buf: &'s mut [u8]) -> Result<Self> {
        if buf.len() < MIN_VOCAB_SCRATCH {
            return Err(Error::BufferTooSmall { needed: MIN_VOCAB_SCRATCH, given: buf.len() });
        }
        Ok(FileWindow { buf, start: 0, len: 0 })
    }

    /// A window over `buf` that still holds the file bytes `[start, start + len)` from an earlier
    /// step (the caller keeps `buf` and the file unchanged in between).
    pub(crate) fn resume(buf: &'s mut [u8], (start, len): (u64, usize)) -> Result<Self> {
        let mut w = FileWindow::new(buf)?;
        if len <= w.buf.len() {
            w.start = start;
            w.len = len;
        }
        Ok(w)
    }

    /// What [`FileWindow::resume`] needs to pick up where this window is.
    pub(crate) fn held(&self) -> (u64, usize) {
        (self.start, self.len)
    }

    /// File bytes `[pos, pos + n)`, reading (one `read_at_most` of the whole buffer) when they are
    /// not held already. `n` is at most [`MIN_VOCAB_SCRATCH`].
    fn bytes<S: Source + ?Sized>(&mut self, io: &mut S, pos: u64, n: usize) -> Result<&[u8]> {
        let held_end = self.start.saturating_add(self.len as u64);
        let held = pos >= self.start && pos.checked_add(n as u64).is_some_and(|e| e <= held_end);
        if !held {
            self.len = read_at_most(io, pos, self.buf)?;
            self.start = pos;
            if self.len < n {
                return Err(Error::malformed(Malformed::Truncated, pos));
            }
        }
        let from = usize::try_from(pos.saturating_sub(self.start)).unwrap_or(usize::MAX);
        self.buf.get(from..from.saturating_add(n)).ok_or(Error::malformed(Malformed::Truncated, pos))
    }
}
