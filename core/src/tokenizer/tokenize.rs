//! The tokenizing step machine: text → `[CLS] pieces… [SEP]` in a caller's `&mut [u32]`.
//!
//! The text is normalized and split into words into a *window* in caller memory (chars, and one
//! item per word, special token or over-long word). When the window is full, or the text ends,
//! its words are matched against the vocab and resolved into ids, then the window is reused.
//!
//! * [`Mode::Index`]: each word is tokenized greedily with [`VocabIndex`] lookups, longest
//!   piece first, exactly as Hugging Face's WordPiece does.
//! * [`Mode::Scan`]: no index. One pass over the vocab streamed from the file records, for every
//!   char position of every word in the window, the longest vocab piece that starts there (the
//!   lowest id among equal entries). Greedy longest-match-first only ever asks "the longest piece
//!   at position p", so resolving the window from that table gives HF's result with one vocab
//!   pass per window instead of one file read per lookup. Candidate positions are bucketed by
//!   (word-initial?, first two UTF-8 bytes), so each entry is compared only where it could start;
//!   one-byte entries go to a 256-slot table applied after the pass.
//!
//! Both modes resolve a word the same way: all its pieces when every greedy step found one, else
//! a single `[UNK]`; a word of more than 100 chars is `[UNK]` without a lookup.

use super::index::VocabIndex;
use super::normalize::{Buffers, Normalizer, QUEUE_CAPACITY, RUN_CAPACITY, SPECIAL_EVENT};
use super::unicode::is_punctuation;
use super::vocab::{classify, Cursor, Entry, FileWindow, TokenizerKind, Vocab};
use super::{Step, MAX_PIECE_BYTES, MAX_WORD_CHARS};
use crate::error::{Error, InputError, Name, Result, Unsupported};
use crate::io::Source;

/// How pieces are looked up in the vocab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Through a [`VocabIndex`] in caller memory: fast, no I/O while tokenizing.
    Index,
    /// By streaming the vocab from the file once per window of text: tiny memory.
    Scan,
}

/// Where pieces are looked up: a built index, or the file itself.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'i> {
    /// [`Mode::Index`] with this index (built from the same vocab).
    Index(VocabIndex<'i>),
    /// [`Mode::Scan`]: the vocab is streamed from the source given to [`Tokenize::step`].
    Scan,
}

impl Lookup<'_> {
    /// The mode of this lookup.
    pub fn mode(&self) -> Mode {
        match self {
            Lookup::Index(_) => Mode::Index,
            Lookup::Scan => Mode::Scan,
        }
    }
}

/// The length limit of a tokenization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Most ids written, `[CLS]` and `[SEP]` included (a model's context length, e.g. 512). At
    /// least 2.
    pub max_tokens: usize,
    /// `true`: keep `[CLS]` + the first `max_tokens − 2` pieces + `[SEP]`, as HF's truncation does.
    /// `false`: a text needing more is [`InputError::TooManyTokens`].
    pub truncate: bool,
}

/// The smallest window: one word of [`MAX_WORD_CHARS`] chars.
pub const MIN_WINDOW_CHARS: usize = MAX_WORD_CHARS;
/// The largest window [`Tokenize`] uses; memory beyond it is left unused.
pub const MAX_WINDOW_CHARS: usize = 1 << 20;
/// Bytes of file scratch a [`Mode::Scan`] window reads the vocab through.
pub const SCAN_SCRATCH: usize = 4096;
/// Buckets of candidate positions, by a hash of (word-initial?, first two UTF-8 bytes).
const BUCKETS: usize = 1024;
/// Scan's table of one-byte pieces: (word-initial?, ASCII byte) → lowest id.
const SINGLES: usize = 256;
const NONE: u32 = u32::MAX;

/// u32 words per window char: the char, its best id, two item words, and for Scan a bucket link.
const fn words_per_char(mode: Mode) -> usize {
    match mode {
        Mode::Index => 4,
        Mode::Scan => 5,
    }
}

/// u32 words independent of the window: the reorder run, the event queue, Scan's bucket heads.
const fn fixed_words(mode: Mode) -> usize {
    let buckets = match mode {
        Mode::Index => 0,
        Mode::Scan => BUCKETS + SINGLES,
    };
    RUN_CAPACITY.saturating_add(QUEUE_CAPACITY).saturating_add(buckets)
}

const fn fixed_bytes(mode: Mode) -> usize {
    match mode {
        Mode::Index => 0,
        Mode::Scan => SCAN_SCRATCH,
    }
}

/// Bytes lost to aligning the caller's buffer to 4 bytes (at most 3 at each end).
const ALIGN_LOSS: usize = 6;
/// Bytes lost to rounding the byte arrays up to whole u32 words.
const ROUNDING: usize = 3;

const fn per_char_bytes(mode: Mode) -> usize {
    words_per_char(mode).saturating_mul(4).saturating_add(2)
}

/// Bytes of the window-independent parts, rounding included.
const fn fixed_total(mode: Mode) -> usize {
    fixed_words(mode).saturating_mul(4).saturating_add(fixed_bytes(mode)).saturating_add(ROUNDING)
}

/// Bytes of work memory [`Tokenize`] needs for a window of `window_chars` chars in `mode`,
/// alignment slack included: `22 × window + 10 953` for Scan (≈ 33 KB for a 1 000-char window,
/// 13 KB at [`MIN_WINDOW_CHARS`]), `18 × window + 1 737` for Index (≈ 3.5 KB at the minimum).
///
/// The window bounds how much text is normalized ahead: Index mode needs no more than the
/// minimum; in Scan mode each window costs one pass over the vocab file, so a window holding the
/// whole text (about 6 chars per token for English) needs a single pass. Saturates instead of
/// overflowing.
pub const fn work_bytes(mode: Mode, window_chars: usize) -> usize {
    window_chars
        .saturating_mul(per_char_bytes(mode))
        .saturating_add(fixed_total(mode))
        .saturating_add(ALIGN_LOSS)
}

/// The largest window that `aligned` bytes (already 4-aligned) of work memory hold.
fn window_for(mode: Mode, aligned: usize) -> usize {
    let w = aligned.saturating_sub(fixed_total(mode)).checked_div(per_char_bytes(mode));
    w.unwrap_or(0).min(MAX_WINDOW_CHARS)
}

/// The work memory, split into its arrays.
struct Parts<'b> {
    run: &'b mut [u32],
    queue: &'b mut [u32],
    chars: &'b mut [u32],
    best_id: &'b mut [u32],
    items: &'b mut [u32],
    next: &'b mut [u32],
    heads: &'b mut [u32],
    singles: &'b mut [u32],
    best_len: &'b mut [u8],
    rem: &'b mut [u8],
    scratch: &'b mut [u8],
}

fn take<'b, T>(rest: &mut &'b mut [T], n: usize) -> Result<&'b mut [T]> {
    let all = core::mem::take(rest);
    if all.len() < n {
        return Err(Error::InvalidState);
    }
    let (head, tail) = all.split_at_mut(n);
    *rest = tail;
    Ok(head)
}

fn carve(mem: &mut [u8], mode: Mode, w: usize) -> Result<Parts<'_>> {
    let (_, mut words, _) = bytemuck::pod_align_to_mut::<u8, u32>(mem);
    let scan = mode == Mode::Scan;
    let run = take(&mut words, RUN_CAPACITY)?;
    let queue = take(&mut words, QUEUE_CAPACITY)?;
    let chars = take(&mut words, w)?;
    let best_id = take(&mut words, w)?;
    let items = take(&mut words, w.saturating_mul(2))?;
    let next = take(&mut words, if scan { w } else { 0 })?;
    let heads = take(&mut words, if scan { BUCKETS } else { 0 })?;
    let singles = take(&mut words, if scan { SINGLES } else { 0 })?;
    let mut bytes: &mut [u8] = bytemuck::cast_slice_mut(words);
    let best_len = take(&mut bytes, w)?;
    let rem = take(&mut bytes, w)?;
    let scratch = take(&mut bytes, fixed_bytes(mode))?;
    Ok(Parts { run, queue, chars, best_id, items, next, heads, singles, best_len, rem, scratch })
}

/// The window's fill state.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    /// Chars stored.
    fill: usize,
    /// Items stored (completed words, special tokens, over-long words).
    items: usize,
    /// First char of the word being built, and its stored length.
    word_start: usize,
    word_len: usize,
    /// The word being built has passed [`MAX_WORD_CHARS`]: it will be `[UNK]`, its chars are
    /// dropped.
    word_long: bool,
    /// The window holds the end of the text.
    last: bool,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Fill,
    /// Scan mode: streaming the vocab over the window.
    Scan(Cursor),
    /// Index mode: greedy lookups; `pos` is the next word position (or `NONE` at an item start).
    Index {
        item: usize,
        pos: usize,
    },
    Resolve {
        item: usize,
    },
    Done,
    Failed(Error),
}

/// A pre-tokenizer action of one normalized event.
#[derive(Debug, Clone, Copy)]
enum Action {
    EndWord,
    AddChar(u32),
    Push(u32),
}

/// Everything but the borrowed buffers.
#[derive(Debug, Clone, Copy)]
struct State<'i> {
    vocab: Vocab,
    lookup: Lookup<'i>,
    mode: Mode,
    w: usize,
    max: usize,
    truncate: bool,
    n_out: usize,
    norm: Normalizer,
    win: Window,
    /// An event whose action `.1` could not be done yet (the window was full).
    pending: Option<(u32, u8)>,
    phase: Phase,
    /// Bytes of the longest word in a Scan window (longer entries are skipped).
    longest_word: usize,
    /// The file bytes Scan's scratch holds (kept across steps: the scratch is in `mem`).
    held: (u64, usize),
}

/// Tokenizes one text, a bounded amount of work per [`Tokenize::step`].
///
/// ```text
/// let mut t = Tokenize::new(&vocab, lookup, text, &mut work, &mut ids, options)?;
/// while t.step(&mut io, 4096)? == Step::Pending { /* let the host breathe */ }
/// let ids = t.ids(); // [CLS] … [SEP]
/// ```
///
/// All memory is the caller's: `work` (see [`work_bytes`]) and `out` (at least
/// `options.max_tokens` ids). Errors poison the machine: every later step returns the same
/// error. Dropping it at any point is fine.
#[derive(Debug)]
pub struct Tokenize<'a> {
    st: State<'a>,
    text: &'a str,
    mem: &'a mut [u8],
    out: &'a mut [u32],
}

impl<'a> Tokenize<'a> {
    /// Prepares to tokenize `text` with `vocab`, looking pieces up through `lookup`, working in
    /// `mem` and writing ids to `out`. O(1); writes `[CLS]`.
    ///
    /// The window is the largest that `mem` holds (see [`work_bytes`]).
    ///
    /// Errors: [`Error::BufferTooSmall`] when `options.max_tokens` < 2 (needed 2), when `out` is
    /// shorter than `options.max_tokens` (counted in ids), or when `mem` holds less than a
    /// [`MIN_WINDOW_CHARS`] window (counted in bytes); [`Error::PlanMismatch`] when the index was
    /// built from another vocab; [`Unsupported::TokenizerModel`] when the vocab is not a WordPiece
    /// one.
    pub fn new(
        vocab: &Vocab,
        lookup: Lookup<'a>,
        text: &'a str,
        mem: &'a mut [u8],
        out: &'a mut [u32],
        options: Options,
    ) -> Result<Self> {
        if vocab.kind() != TokenizerKind::WordPiece {
            return Err(Error::Unsupported(Unsupported::TokenizerModel(Name::new(vocab.kind().name()))));
        }
        if options.max_tokens < 2 {
            return Err(Error::BufferTooSmall { needed: 2, given: options.max_tokens });
        }
        if out.len() < options.max_tokens {
            return Err(Error::BufferTooSmall { needed: options.max_tokens, given: out.len() });
        }
        if let Lookup::Index(ix) = &lookup {
            if ix.tokens() != vocab.tokens() {
                return Err(Error::PlanMismatch);
            }
        }
        let mode = lookup.mode();
        // The aligned part of `mem` is what counts.
        let aligned = {
            let (_, words, _) = bytemuck::pod_align_to::<u8, u32>(mem);
            words.len().saturating_mul(4)
        };
        let w = window_for(mode, aligned);
        if w < MIN_WINDOW_CHARS {
            return Err(Error::BufferTooSmall {
                needed: work_bytes(mode, MIN_WINDOW_CHARS),
                given: mem.len(),
            });
        }
        // Validates the layout once, so that later carving cannot fail.
        carve(mem, mode, w)?;
        if let Some(first) = out.first_mut() {
            *first = vocab.cls();
        }
        Ok(Tokenize {
            st: State {
                vocab: *vocab,
                lookup,
                mode,
                w,
                max: options.max_tokens,
                truncate: options.truncate,
                n_out: 1,
                norm: Normalizer::new(),
                win: Window::default(),
                pending: None,
                phase: Phase::Fill,
                longest_word: 0,
                held: (0, 0),
            },
            text,
            mem,
            out,
        })
    }

    /// Does at most about `budget` units of work (at least one; see below) and returns
    /// [`Step::Pending`] (call again) or [`Step::Done`] (the ids are complete, `[SEP]` included).
    ///
    /// A unit is one raw char normalized, one normalized char placed, one vocab entry streamed
    /// (Scan; plus one per window position it is compared at), one index lookup, or one word
    /// resolved. A step may overrun its budget by one position's lookups (≤ 100), one entry's
    /// comparisons (≤ one per window char), or Scan's O(window) setup before and after a pass
    /// (charged at one unit per 64 chars). Scan mode reads the vocab from `io` through a
    /// [`SCAN_SCRATCH`]-byte buffer, at most one read per entry (the buffer is kept between
    /// steps, so `io` must stay the same file); Index mode never touches `io`.
    ///
    /// Errors: [`InputError::TooManyTokens`] when truncation is off and the text needs more than
    /// `max_tokens`; I/O and [`crate::Malformed`] errors of the vocab stream (Scan).
    pub fn step<S: Source + ?Sized>(&mut self, io: &mut S, budget: u32) -> Result<Step> {
        match self.st.phase {
            Phase::Done => return Ok(Step::Done),
            Phase::Failed(e) => return Err(e),
            _ => {}
        }
        let mut parts = carve(self.mem, self.st.mode, self.st.w)?;
        let mut left = u64::from(budget.max(1));
        match self.st.advance(&mut parts, self.text, self.out, io, &mut left) {
            Ok(()) if matches!(self.st.phase, Phase::Done) => Ok(Step::Done),
            Ok(()) => Ok(Step::Pending),
            Err(e) => {
                self.st.phase = Phase::Failed(e);
                Err(e)
            }
        }
    }

    /// Steps until done. Not bounded: for hosts that may block (tools, tests).
    pub fn run<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<&[u32]> {
        while self.step(io, u32::MAX)? == Step::Pending {}
        Ok(self.ids())
    }

    /// The ids written so far: `[CLS]` and the pieces; after [`Step::Done`] the whole sequence
    /// ending in `[SEP]`.
    pub fn ids(&self) -> &[u32] {
        self.out.get(..self.st.n_out).unwrap_or_default()
    }

    /// Whether a step has returned [`Step::Done`].
    pub fn is_done(&self) -> bool {
        matches!(self.st.phase, Phase::Done)
    }

    /// Text bytes consumed so far and the text's length.
    pub fn progress(&self) -> (u64, u64) {
        (self.st.norm.position() as u64, self.text.len() as u64)
    }

    /// Chars of text the window holds (chosen from the work memory's size).
    pub fn window_chars(&self) -> usize {
        self.st.w
    }

    /// Gives the buffers back: `(out, number of ids written, work memory)`.
    pub fn into_parts(self) -> (&'a mut [u32], usize, &'a mut [u8]) {
        (self.out, self.st.n_out, self.mem)
    }
}

fn char_at(chars: &[u32], i: usize) -> char {
    chars.get(i).and_then(|&c| char::from_u32(c)).unwrap_or('\0')
}

fn item_at(items: &[u32], i: usize) -> (u32, u32) {
    let j = i.saturating_mul(2);
    (items.get(j).copied().unwrap_or(0), items.get(j.saturating_add(1)).copied().unwrap_or(0))
}

fn spend(left: &mut u64, n: u64) {
    *left = left.saturating_sub(n);
}

impl State<'_> {
    fn advance<S: Source + ?Sized>(
        &mut self,
        p: &mut Parts<'_>,
        text: &str,
        out: &mut [u32],
        io: &mut S,
        left: &mut u64,
    ) -> Result<()> {
        while *left > 0 {
            match self.phase {
                Phase::Fill => {
                    if !self.fill(p, text, left)? {
                        return Ok(());
                    }
                    self.start_match(p, left);
                }
                Phase::Scan(cursor) => {
                    if self.scan(p, io, cursor, left)? {
                        self.apply_singles(p);
                        spend(left, (self.win.fill / 64) as u64);
                        self.phase = Phase::Resolve { item: 0 };
                    }
                }
                Phase::Index { item, pos } => {
                    let Lookup::Index(ix) = self.lookup else {
                        return Err(Error::InvalidState);
                    };
                    if self.index_match(p, &ix, item, pos, left) {
                        self.phase = Phase::Resolve { item: 0 };
                    }
                }
                Phase::Resolve { item } => self.resolve(p, out, item, left)?,
                Phase::Done | Phase::Failed(_) => return Ok(()),
            }
        }
        Ok(())
    }

    // ---- Fill: normalize and pre-tokenize into the window ----

    /// Fills the window. `Ok(true)` when it must be matched (full, or the text has ended),
    /// `Ok(false)` when the budget ran out.
    fn fill(&mut self, p: &mut Parts<'_>, text: &str, left: &mut u64) -> Result<bool> {
        while *left > 0 {
            let (ev, stage) = match self.pending.take() {
                Some(x) => x,
                None => match self.norm.pop(p.queue) {
                    Some(ev) => (ev, 0),
                    None => {
                        if self.norm.is_done() {
                            self.win.last = true;
                            return Ok(true);
                        }
                        let mut buf = Buffers { run: &mut *p.run, queue: &mut *p.queue };
                        self.norm.refill(text, &self.vocab, &mut buf)?;
                        spend(left, 1);
                        continue;
                    }
                },
            };
            let (actions, n) = self.actions(ev);
            for s in usize::from(stage)..n {
                let Some(&a) = actions.get(s) else { break };
                if !self.act(p, a) {
                    self.pending = Some((ev, s as u8));
                    return Ok(true);
                }
            }
            spend(left, 1);
        }
        Ok(false)
    }

    /// BertPreTokenizer on one normalized event: whitespace ends a word, punctuation is a word of
    /// its own, a special token ends the word and stands alone.
    fn actions(&self, ev: u32) -> ([Action; 3], usize) {
        if ev & SPECIAL_EVENT != 0 {
            let id = self.vocab.special_id((ev & !SPECIAL_EVENT) as usize);
            return ([Action::EndWord, Action::Push(id), Action::EndWord], 2);
        }
        let c = char::from_u32(ev).unwrap_or(' ');
        if c.is_whitespace() {
            ([Action::EndWord; 3], 1)
        } else if is_punctuation(c) {
            ([Action::EndWord, Action::AddChar(ev), Action::EndWord], 3)
        } else {
            ([Action::AddChar(ev); 3], 1)
        }
    }

    /// Does one action; `false` when the window has no room for it (nothing changed then).
    fn act(&mut self, p: &mut Parts<'_>, a: Action) -> bool {
        let win = &mut self.win;
        match a {
            Action::AddChar(c) => {
                if win.word_long {
                    return true;
                }
                if win.word_len >= MAX_WORD_CHARS {
                    win.word_long = true;
                    win.fill = win.word_start;
                    win.word_len = 0;
                    return true;
                }
                let Some(slot) = p.chars.get_mut(win.fill) else {
                    return false;
                };
                *slot = c;
                win.fill = win.fill.saturating_add(1);
                win.word_len = win.word_len.saturating_add(1);
                true
            }
            Action::EndWord => {
                if win.word_len == 0 && !win.word_long {
                    return true;
                }
                let item = if win.word_long {
                    (self.vocab.unk(), 0)
                } else {
                    (win.word_start as u32, win.word_len as u32)
                };
                if !push_item(p.items, win, item) {
                    return false;
                }
                win.word_start = win.fill;
                win.word_len = 0;
                win.word_long = false;
                true
            }
            Action::Push(id) => push_item(p.items, win, (id, 0)),
        }
    }

    /// Moves to matching the window's completed items.
    fn start_match(&mut self, p: &mut Parts<'_>, left: &mut u64) {
        let has_words = (0..self.win.items).any(|i| item_at(p.items, i).1 != 0);
        if !has_words {
            self.phase = Phase::Resolve { item: 0 };
            return;
        }
        match self.mode {
            Mode::Index => self.phase = Phase::Index { item: 0, pos: NONE as usize },
            Mode::Scan => {
                self.build_buckets(p);
                spend(left, (self.win.fill / 64) as u64);
                self.phase = Phase::Scan(Cursor::new(&self.vocab.tokens()));
            }
        }
    }

    // ---- Scan mode ----

    /// Chains every position of the window's words into its bucket: (word-initial?, the first
    /// two UTF-8 bytes from it, within the word). A position with a single byte left in its word
    /// is only reachable by one-byte pieces, which go through `singles` instead.
    fn build_buckets(&mut self, p: &mut Parts<'_>) {
        p.heads.fill(NONE);
        p.singles.fill(NONE);
        self.longest_word = 0;
        for i in 0..self.win.items {
            let (start, len) = item_at(p.items, i);
            if len == 0 {
                continue;
            }
            let (s, n) = (start as usize, len as usize);
            let end = s.saturating_add(n);
            let mut bytes = 0usize;
            for q in s..end {
                let c = char_at(p.chars, q);
                let mut b = [0u8; 4];
                let enc = c.encode_utf8(&mut b).as_bytes();
                let b0 = enc.first().copied().unwrap_or(0);
                let b1 = match enc.get(1) {
                    Some(&b1) => Some(b1),
                    None if q.saturating_add(1) < end => {
                        let mut nb = [0u8; 4];
                        char_at(p.chars, q.saturating_add(1)).encode_utf8(&mut nb).as_bytes().first().copied()
                    }
                    None => None,
                };
                if let Some(b1) = b1 {
                    let key = bucket(q == s, b0, b1);
                    if let (Some(h), Some(nx)) = (p.heads.get_mut(key), p.next.get_mut(q)) {
                        *nx = *h;
                        *h = q as u32;
                    }
                }
                if let Some(r) = p.rem.get_mut(q) {
                    *r = end.saturating_sub(q) as u8;
                }
                if let Some(b) = p.best_len.get_mut(q) {
                    *b = 0;
                }
                bytes = bytes.saturating_add(c.len_utf8());
            }
            self.longest_word = self.longest_word.max(bytes);
        }
    }

    /// After a pass: a position no longer piece starts at takes the one-byte piece of its char.
    fn apply_singles(&mut self, p: &mut Parts<'_>) {
        for i in 0..self.win.items {
            let (start, len) = item_at(p.items, i);
            let (s, end) = (start as usize, (start as usize).saturating_add(len as usize));
            for q in s..end {
                let c = p.chars.get(q).copied().unwrap_or(NONE);
                if c >= 0x80 || p.best_len.get(q).copied().unwrap_or(1) != 0 {
                    continue;
                }
                let id = p.singles.get(single(q == s, c as u8)).copied().unwrap_or(NONE);
                if id != NONE {
                    set_best(p, q, 1, id);
                }
            }
        }
    }

    /// Streams vocab entries over the window. `Ok(true)` when the pass is complete.
    fn scan<S: Source + ?Sized>(
        &mut self,
        p: &mut Parts<'_>,
        io: &mut S,
        mut cursor: Cursor,
        left: &mut u64,
    ) -> Result<bool> {
        let tokens = self.vocab.tokens();
        let mut win = FileWindow::resume(&mut *p.scratch, self.held)?;
        while *left > 0 {
            let next = cursor.next(&tokens, io, &mut win);
            if next.is_err() {
                self.held = (0, 0);
            }
            let Some((id, entry)) = next? else {
                self.held = win.held();
                return Ok(true);
            };
            let mut work = 1u64;
            if let Entry::Bytes(raw) = entry {
                let (initial, piece) = classify(raw);
                if let [b] = piece {
                    // One byte: ASCII, or invalid UTF-8 that never matches.
                    if let Some(slot) = p.singles.get_mut(single(initial, *b)).filter(|_| *b < 0x80) {
                        if *slot == NONE {
                            *slot = id;
                        }
                    }
                } else if let (Some(&b0), Some(&b1)) = (piece.first(), piece.get(1)) {
                    if piece.len() > self.longest_word {
                        spend(left, work);
                        continue;
                    }
                    let mut q = p.heads.get(bucket(initial, b0, b1)).copied().unwrap_or(NONE);
                    while q != NONE {
                        let qi = q as usize;
                        work = work.saturating_add(1);
                        let l = match_at(p.chars, p.rem.get(qi).copied().unwrap_or(0), qi, piece);
                        if let (Some(best), Some(bid)) = (p.best_len.get_mut(qi), p.best_id.get_mut(qi)) {
                            if l > *best {
                                *best = l;
                                *bid = id;
                            }
                        }
                        q = p.next.get(qi).copied().unwrap_or(NONE);
                    }
                }
            }
            spend(left, work);
        }
        self.held = win.held();
        self.phase = Phase::Scan(cursor);
        Ok(false)
    }

    // ---- Index mode ----

    /// Greedy lookups for the window's words. `true` when every word is done.
    fn index_match(
        &mut self,
        p: &mut Parts<'_>,
        ix: &VocabIndex<'_>,
        mut item: usize,
        mut pos: usize,
        left: &mut u64,
    ) -> bool {
        let mut buf = [0u8; MAX_PIECE_BYTES];
        let mut offs = [0u16; MAX_WORD_CHARS + 1];
        while item < self.win.items {
            if *left == 0 {
                self.phase = Phase::Index { item, pos };
                return false;
            }
            let (start, len) = item_at(p.items, item);
            let (s, end) = (start as usize, (start as usize).saturating_add(len as usize));
            if len == 0 || (pos != NONE as usize && pos >= end) {
                item = item.saturating_add(1);
                pos = NONE as usize;
                continue;
            }
            if pos == NONE as usize {
                pos = s;
            }
            // UTF-8 of chars[pos..end]; offs[k] = bytes of the first k chars.
            let mut n = 0usize;
            let mut k = 0usize;
            for q in pos..end {
                let c = char_at(p.chars, q);
                let Some(dst) = buf.get_mut(n..n.saturating_add(c.len_utf8())) else { break };
                c.encode_utf8(dst);
                n = n.saturating_add(c.len_utf8());
                k = k.saturating_add(1);
                if let Some(o) = offs.get_mut(k) {
                    *o = n as u16;
                }
            }
            let mut found = None;
            for l in (1..=k).rev() {
                let nb = usize::from(offs.get(l).copied().unwrap_or(0));
                if nb > ix.longest_piece() {
                    continue;
                }
                spend(left, 1);
                if let Some(id) = ix.lookup(pos == s, buf.get(..nb).unwrap_or_default()) {
                    found = Some((l, id));
                    break;
                }
            }
            match found {
                Some((l, id)) => {
                    set_best(p, pos, l as u8, id);
                    pos = pos.saturating_add(l);
                }
                None => {
                    set_best(p, pos, 0, 0);
                    item = item.saturating_add(1);
                    pos = NONE as usize;
                }
            }
        }
        true
    }

    // ---- Resolve: ids out ----

    fn resolve(&mut self, p: &mut Parts<'_>, out: &mut [u32], mut item: usize, left: &mut u64) -> Result<()> {
        while item < self.win.items {
            if *left == 0 {
                self.phase = Phase::Resolve { item };
                return Ok(());
            }
            spend(left, 1);
            let (a, len) = item_at(p.items, item);
            item = item.saturating_add(1);
            if len == 0 {
                if !self.emit(out, a)? {
                    return self.finish(out);
                }
                continue;
            }
            let (s, end) = (a as usize, (a as usize).saturating_add(len as usize));
            let mut q = s;
            let mut covered = true;
            while q < end {
                let l = usize::from(p.best_len.get(q).copied().unwrap_or(0));
                if l == 0 {
                    covered = false;
                    break;
                }
                q = q.saturating_add(l);
            }
            if !covered {
                if !self.emit(out, self.vocab.unk())? {
                    return self.finish(out);
                }
                continue;
            }
            let mut q = s;
            while q < end {
                let id = p.best_id.get(q).copied().unwrap_or(0);
                if !self.emit(out, id)? {
                    return self.finish(out);
                }
                q = q.saturating_add(usize::from(p.best_len.get(q).copied().unwrap_or(1)).max(1));
            }
        }
        if self.win.last {
            return self.finish(out);
        }
        // Reuse the window: the word being built moves to the front.
        let win = &mut self.win;
        let (from, to) = (win.word_start, win.fill);
        if from < to && to <= p.chars.len() {
            p.chars.copy_within(from..to, 0);
        }
        win.fill = to.saturating_sub(from);
        win.word_start = 0;
        win.items = 0;
        self.phase = Phase::Fill;
        Ok(())
    }

    /// Appends a piece. `Ok(false)` when the sequence is full and truncation is on.
    fn emit(&mut self, out: &mut [u32], id: u32) -> Result<bool> {
        // [CLS] + pieces + [SEP] <= max.
        if self.n_out.saturating_add(1) >= self.max {
            if self.truncate {
                return Ok(false);
            }
            let tokens = self.max.saturating_add(1);
            return Err(Error::Input(InputError::TooManyTokens { tokens, max: self.max }));
        }
        let slot = out.get_mut(self.n_out).ok_or(Error::InvalidState)?;
        *slot = id;
        self.n_out = self.n_out.saturating_add(1);
        Ok(true)
    }

    /// Writes `[SEP]` and stops.
    fn finish(&mut self, out: &mut [u32]) -> Result<()> {
        let slot = out.get_mut(self.n_out).ok_or(Error::InvalidState)?;
        *slot = self.vocab.sep();
        self.n_out = self.n_out.saturating_add(1);
        self.phase = Phase::Done;
        Ok(())
    }
}

fn push_item(items: &mut [u32], win: &mut Window, (a, b): (u32, u32)) -> bool {
    let j = win.items.saturating_mul(2);
    let Some(pair) = items.get_mut(j..j.saturating_add(2)) else {
        return false;
    };
    if let [x, y] = pair {
        *x = a;
        *y = b;
    }
    win.items = win.items.saturating_add(1);
    true
}

/// The bucket of positions whose word continues with bytes `b0 b1`.
fn bucket(initial: bool, b0: u8, b1: u8) -> usize {
    let k = u32::from(initial) << 16 | u32::from(b0) << 8 | u32::from(b1);
    // The top 10 bits: an index below BUCKETS.
    (k.wrapping_mul(0x9e37_79b1) >> 22) as usize
}

/// The `singles` slot of a one-byte ASCII piece.
fn single(initial: bool, b: u8) -> usize {
    usize::from(initial) << 7 | usize::from(b & 0x7f)
}

fn set_best(p: &mut Parts<'_>, pos: usize, len: u8, id: u32) {
    if let (Some(l), Some(i)) = (p.best_len.get_mut(pos), p.best_id.get_mut(pos)) {
        *l = len;
        *i = id;
    }
}

/// Chars of the window matched by `piece` at `q` (within the `rem` chars left in its word), or 0.
fn match_at(chars: &[u32], rem: u8, q: usize, piece: &[u8]) -> u8 {
    let mut off = 0usize;
    for i in 0..rem {
        let c = char_at(chars, q.saturating_add(usize::from(i)));
        let mut b = [0u8; 4];
        let e = c.encode_utf8(&mut b).as_bytes();
        let end = off.saturating_add(e.len());
        if piece.get(off..end) != Some(e) {
            return 0;
        }
        off = end;
        if off == piece.len() {
            return i.saturating_add(1);
        }
    }
    0
}
