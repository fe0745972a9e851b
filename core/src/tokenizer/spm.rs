//! SentencePiece-style tokenizing of `"llama"` models (Llama 2, Gemma 3, …) exactly as
//! llama.cpp's `llm_tokenizer_spm` does it, a bounded amount of work per step, in caller memory.
//!
//! # Rules (llama.cpp `llama_vocab::impl::tokenize`, `LLAMA_VOCAB_TYPE_SPM`)
//! 1. Special tokens are cut out of the raw text first ([`special`](super::special)): control and
//!    unknown tokens when [`ModelOptions::parse_special`], user-defined tokens always.
//! 2. Each remaining fragment gets a leading space when the file's `add_space_prefix` is set and
//!    the fragment starts the text or follows a special token; then every space becomes `▁`.
//! 3. The fragment is split into chars; every adjacent pair whose concatenation is a vocab entry
//!    is a candidate bigram. The candidate with the highest score (the leftmost on ties) is
//!    merged, and the new symbol's pairs with its neighbours become candidates; until none is
//!    left. A symbol is its token; a char that is no token is its UTF-8 bytes as `<0xXX>` tokens
//!    (or, failing those, the one-byte entries).
//! 4. BOS and EOS around it all per the file (`add_bos_token`, `add_eos_token`) when
//!    [`ModelOptions::add_special`].
//!
//! # Windows
//! The text is tokenized a window at a time: a window ends only at a *cut* (see
//! [`ModelVocab`]), where no token and no special token can span, so windows give exactly the
//! ids of the whole text. A fragment between two cuts must fit one window, else the step fails
//! with [`Error::BufferTooSmall`].
//!
//! * [`ModelLookup::Index`]: lookups in the [`TokenIndex`].
//! * [`ModelLookup::Scan`]: no index. Each window costs two passes over the vocab streamed from
//!   the file: one for the special tokens, one recording every entry that occurs in the window
//!   (by position and length, in a hash table in the work memory); merging then asks that table.
//!   A window whose occurrences do not fit is halved and redone.

use super::model_vocab::{Column, ModelVocab, Special};
use super::special::{choose, Candidate};
use super::token_index::TokenIndex;
use super::vocab::{Cursor, Entry, FileWindow};
use super::Step;
use crate::error::{Error, InputError, Result};
use crate::io::Source;

/// Where an SPM or BPE tokenizer looks entries up.
#[derive(Debug, Clone, Copy)]
pub enum ModelLookup<'i> {
    /// Through a [`TokenIndex`] built from the same vocab: no I/O while tokenizing.
    Index(TokenIndex<'i>),
    /// By streaming the vocab from the file given to `step`, twice per window of text.
    Scan,
}

impl ModelLookup<'_> {
    fn is_scan(&self) -> bool {
        matches!(self, ModelLookup::Scan)
    }
}

/// What to tokenize with, and the length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelOptions {
    /// Most ids written, BOS and EOS included.
    pub max_tokens: usize,
    /// `true`: keep the first ids that fit (BOS + pieces + EOS); `false`: a longer result is
    /// [`InputError::TooManyTokens`].
    pub truncate: bool,
    /// Add BOS / EOS as the file asks (llama.cpp's `add_special`).
    pub add_special: bool,
    /// Match control tokens (`<bos>`, `<start_of_turn>`, …) in the text (llama.cpp's
    /// `parse_special`); user-defined tokens are matched either way.
    pub parse_special: bool,
}

/// The smallest window, in bytes of escaped text.
pub const MIN_MODEL_WINDOW: usize = 256;
/// The largest window; memory beyond it is left unused.
pub const MAX_MODEL_WINDOW: usize = 1 << 20;
/// Bytes of file scratch a scan pass reads the vocab through.
pub const MODEL_SCAN_SCRATCH: usize = 4096;

const NONE: u32 = u32::MAX;
/// Buckets of window positions by their first two bytes (scan passes).
const BUCKETS: usize = 1024;
/// Occurrence-table slots per window byte (scan), and the most occurrences per byte kept.
const TABLE_PER_BYTE: usize = 8;
const TABLE_LOAD_PER_BYTE: usize = 6;
/// Bits of an occurrence key given to its length.
pub(super) const LEN_BITS: u32 = 11;

/// Bytes per window byte: u32 words for candidates (3), items (2), symbols (4) and the heap
/// (12), plus the escaped text and the occupied map (1 each); scan adds the occurrence table (3
/// words per slot), bucket links and item ends.
const INDEX_PER_BYTE: usize = (3 + 2 + 4 + 12) * 4 + 2;
const SCAN_PER_BYTE: usize = INDEX_PER_BYTE + (3 * TABLE_PER_BYTE + 2) * 4;
/// Window-independent bytes: two item words; scan adds the bucket heads, the byte-token and
/// one-byte-entry tables and the file scratch.
const INDEX_FIXED: usize = 2 * 4;
const SCAN_FIXED: usize = (2 + BUCKETS + 512) * 4 + MODEL_SCAN_SCRATCH;
/// Bytes lost to aligning the caller's buffer to 4 bytes, and to rounding.
const SLACK: usize = 9;

const fn per_byte(scan: bool) -> usize {
    if scan {
        SCAN_PER_BYTE
    } else {
        INDEX_PER_BYTE
    }
}

const fn fixed(scan: bool) -> usize {
    if scan {
        SCAN_FIXED
    } else {
        INDEX_FIXED
    }
}

const fn fixed_bytes(scan: bool) -> usize {
    if scan {
        MODEL_SCAN_SCRATCH
    } else {
        0
    }
}

/// Bytes of work memory [`SpmTokenize`] needs for a window of `window` bytes of escaped text,
/// alignment slack included: `86 × window + 17` for Index (≈ 350 KB for a 4 KiB window),
/// `190 × window + 10 257` for Scan (`lookup_scan`). Saturates instead of overflowing.
pub const fn spm_work_bytes(lookup_scan: bool, window: usize) -> usize {
    window.saturating_mul(per_byte(lookup_scan)).saturating_add(fixed(lookup_scan)).saturating_add(SLACK)
}

fn window_for(scan: bool, aligned: usize) -> usize {
    let w = aligned.saturating_sub(fixed(scan).saturating_add(3)).checked_div(per_byte(scan)).unwrap_or(0);
    w.min(MAX_MODEL_WINDOW)
}

/// The work memory, split into its arrays.
struct Parts<'b> {
    cand: &'b mut [Candidate],
    items: &'b mut [u32],
    sym: &'b mut [[u32; 4]],
    heap: &'b mut [[u32; 4]],
    table: &'b mut [[u32; 3]],
    next: &'b mut [u32],
    item_end: &'b mut [u32],
    heads: &'b mut [u32],
    bytetab: &'b mut [u32],
    singles: &'b mut [u32],
    esc: &'b mut [u8],
    occ: &'b mut [u8],
    scratch: &'b mut [u8],
}

fn take<'b, T>(rest: &mut &'b mut [T], n: usize) -> Result<&'b mut [T]> {
    let all = core::mem::take(rest);
    let (head, tail) = all.split_at_mut_checked(n).ok_or(Error::InvalidState)?;
    *rest = tail;
    Ok(head)
}

fn take3<'b>(rest: &mut &'b mut [u32], n: usize) -> Result<&'b mut [[u32; 3]]> {
    let words = take(rest, n.checked_mul(3).ok_or(Error::InvalidState)?)?;
    bytemuck::try_cast_slice_mut(words).map_err(|_| Error::InvalidState)
}

fn take4<'b>(rest: &mut &'b mut [u32], n: usize) -> Result<&'b mut [[u32; 4]]> {
    let words = take(rest, n.checked_mul(4).ok_or(Error::InvalidState)?)?;
    bytemuck::try_cast_slice_mut(words).map_err(|_| Error::InvalidState)
}

fn carve(mem: &mut [u8], scan: bool, w: usize) -> Result<Parts<'_>> {
    let (_, mut words, _) = bytemuck::pod_align_to_mut::<u8, u32>(mem);
    let s = |n: usize| if scan { n } else { 0 };
    let cand = take3(&mut words, w)?;
    let items = take(&mut words, w.saturating_add(1).saturating_mul(2))?;
    let sym = take4(&mut words, w)?;
    let heap = take4(&mut words, w.saturating_mul(3))?;
    let table = take3(&mut words, s(w.saturating_mul(TABLE_PER_BYTE)))?;
    let next = take(&mut words, s(w))?;
    let item_end = take(&mut words, s(w))?;
    let heads = take(&mut words, s(BUCKETS))?;
    let bytetab = take(&mut words, s(256))?;
    let singles = take(&mut words, s(256))?;
    let mut bytes: &mut [u8] = bytemuck::cast_slice_mut(words);
    let esc = take(&mut bytes, w)?;
    let occ = take(&mut bytes, w)?;
    let scratch = take(&mut bytes, fixed_bytes(scan))?;
    Ok(Parts { cand, items, sym, heap, table, next, item_end, heads, bytetab, singles, esc, occ, scratch })
}

/// The current window of raw text.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    /// Raw byte range.
    start: usize,
    end: usize,
    /// Most raw bytes this attempt may take.
    limit: usize,
    /// A fragment starts at `start` right after a special token (or the text's start).
    after_special: bool,
    n_cand: usize,
    n_items: usize,
    esc_len: usize,
    /// Occurrences in the scan table.
    n_table: usize,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Looking for the window's end: `at` is the next raw byte, `cut` the last cut seen.
    Plan {
        at: usize,
        cut: usize,
    },
    /// Index mode: special-token lookups at raw position `at`.
    Candidates {
        at: usize,
    },
    /// Scan mode, first pass: special tokens in the raw window.
    ScanSpecials(Cursor),
    /// Choosing the special tokens and building the escaped fragments.
    Build,
    /// Scan mode, second pass: every entry in the escaped window.
    ScanTokens(Cursor),
    /// Making the symbols and first bigrams of text item `item`; `at` is its next char.
    Init {
        item: usize,
        at: usize,
        n_sym: usize,
        heap: usize,
    },
    /// Merging item `item`'s bigrams; `heap` entries are live.
    Merge {
        item: usize,
        heap: usize,
    },
    /// Writing item `item`'s ids; `sym` is the next symbol.
    Emit {
        item: usize,
        sym: u32,
    },
    Done,
    Failed(Error),
}

/// Everything but the borrowed buffers.
#[derive(Debug, Clone, Copy)]
struct State<'i> {
    vocab: ModelVocab,
    lookup: ModelLookup<'i>,
    scan: bool,
    w: usize,
    opts: ModelOptions,
    /// Ids written, and the most pieces (between BOS and EOS) that may be.
    n_out: usize,
    max_pieces: usize,
    n_pieces: usize,
    win: Window,
    phase: Phase,
    held: (u64, usize),
    types: Column,
    scores: Column,
}

/// Tokenizes one text with an SPM vocab, a bounded amount of work per [`SpmTokenize::step`].
///
/// ```text
/// let mut t = SpmTokenize::new(&vocab, lookup, text, &mut work, &mut ids, options)?;
/// while t.step(&mut io, 4096)? == Step::Pending { /* let the host breathe */ }
/// let ids = t.ids(); // BOS … EOS as the options and the file ask
/// ```
///
/// All memory is the caller's: `work` (see [`spm_work_bytes`]) and `out` (at least
/// `options.max_tokens` ids). Errors poison the machine. Dropping it at any point is fine.
#[derive(Debug)]
pub struct SpmTokenize<'a> {
    st: State<'a>,
    text: &'a str,
    mem: &'a mut [u8],
    out: &'a mut [u32],
}

impl<'a> SpmTokenize<'a> {
    /// Prepares to tokenize `text`. O(1); writes BOS when it is added.
    ///
    /// Errors: [`Error::BufferTooSmall`] when `out` is shorter than `options.max_tokens` or
    /// `max_tokens` cannot hold BOS and EOS (counted in ids), or when `mem` holds less than a
    /// [`MIN_MODEL_WINDOW`] window (in bytes); [`Error::PlanMismatch`] for an index of another
    /// vocab.
    pub fn new(
        vocab: &ModelVocab,
        lookup: ModelLookup<'a>,
        text: &'a str,
        mem: &'a mut [u8],
        out: &'a mut [u32],
        options: ModelOptions,
    ) -> Result<Self> {
        if out.len() < options.max_tokens {
            return Err(Error::BufferTooSmall { needed: options.max_tokens, given: out.len() });
        }
        let bos = options.add_special && vocab.add_bos();
        let eos = options.add_special && vocab.add_eos();
        let fixed = usize::from(bos).saturating_add(usize::from(eos));
        if options.max_tokens < fixed {
            return Err(Error::BufferTooSmall { needed: fixed, given: options.max_tokens });
        }
        if let ModelLookup::Index(ix) = &lookup {
            if ix.tokens() != vocab.tokens() {
                return Err(Error::PlanMismatch);
            }
        }
        let scan = lookup.is_scan();
        let aligned = bytemuck::pod_align_to::<u8, u32>(mem).1.len().saturating_mul(4);
        let w = window_for(scan, aligned);
        if w < MIN_MODEL_WINDOW {
            return Err(Error::BufferTooSmall {
                needed: spm_work_bytes(scan, MIN_MODEL_WINDOW),
                given: mem.len(),
            });
        }
        carve(mem, scan, w)?;
        let mut n_out = 0;
        if bos {
            if let Some(first) = out.first_mut() {
                *first = vocab.bos().unwrap_or(0);
                n_out = 1;
            }
        }
        let win = Window { limit: w.saturating_mul(2) / 3, after_special: true, ..Window::default() };
        Ok(SpmTokenize {
            st: State {
                vocab: *vocab,
                lookup,
                scan,
                w,
                opts: options,
                n_out,
                max_pieces: options.max_tokens.saturating_sub(fixed),
                n_pieces: 0,
                win,
                phase: Phase::Plan { at: 0, cut: 0 },
                held: (0, 0),
                types: Column::new(vocab.types()),
                scores: Column::new(vocab.scores()),
            },
            text,
            mem,
            out,
        })
    }

    /// Does at most about `budget` units of work (at least one) and returns [`Step::Pending`]
    /// or [`Step::Done`] (the ids are complete).
    ///
    /// A unit is one raw byte planned, one special-token lookup, one vocab entry streamed (Scan;
    /// plus one per window position it is compared at), one bigram pushed or popped, or one id
    /// written. A step may overrun by one entry's comparisons, or by the O(window) setup of a
    /// window (charged at one unit per 64 bytes). Scan mode reads the vocab from `io` through a
    /// [`MODEL_SCAN_SCRATCH`]-byte buffer kept between steps (`io` must stay the same file);
    /// Index mode never touches `io`.
    ///
    /// Errors: [`InputError::TooManyTokens`] when truncation is off and the text needs more
    /// than `max_tokens`; [`Error::BufferTooSmall`] when a fragment between two cuts does not fit
    /// the window; I/O and [`crate::Malformed`] errors of the vocab stream (Scan).
    pub fn step<S: Source + ?Sized>(&mut self, io: &mut S, budget: u32) -> Result<Step> {
        match self.st.phase {
            Phase::Done => return Ok(Step::Done),
            Phase::Failed(e) => return Err(e),
            _ => {}
        }
        let given = self.mem.len();
        let mut parts = carve(self.mem, self.st.scan, self.st.w)?;
        let mut left = u64::from(budget.max(1));
        match self.st.advance(&mut parts, self.text, self.out, io, &mut left, given) {
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

    /// The ids written so far (all of them after [`Step::Done`]).
    pub fn ids(&self) -> &[u32] {
        self.out.get(..self.st.n_out).unwrap_or_default()
    }

    /// Gives the buffers back: `(out, number of ids written, work memory)`.
    pub fn into_parts(self) -> (&'a mut [u32], usize, &'a mut [u8]) {
        (self.out, self.st.n_out, self.mem)
    }

    /// Whether a step has returned [`Step::Done`].
    pub fn is_done(&self) -> bool {
        matches!(self.st.phase, Phase::Done)
    }

    /// Raw text bytes tokenized so far, and the text's length.
    pub fn progress(&self) -> (u64, u64) {
        (self.st.win.start as u64, self.text.len() as u64)
    }

    /// Bytes of escaped text a window holds (chosen from the work memory's size).
    pub fn window_bytes(&self) -> usize {
        self.st.w
    }
}

fn spend(left: &mut u64, n: u64) {
    *left = left.saturating_sub(n);
}

fn item_at(items: &[u32], i: usize) -> (u32, u32) {
    let j = i.saturating_mul(2);
    (items.get(j).copied().unwrap_or(0), items.get(j.saturating_add(1)).copied().unwrap_or(0))
}

/// The bucket of a position whose bytes start `b0 b1`.
fn bucket(b0: u8, b1: u8) -> usize {
    let k = u32::from(b0) << 8 | u32::from(b1);
    (k.wrapping_mul(0x9e37_79b1) >> 22) as usize
}

/// Heap order: the higher score first, then the lower left symbol.
fn before(a: &[u32; 4], b: &[u32; 4]) -> bool {
    let (sa, sb) = (f32::from_bits(a[0]), f32::from_bits(b[0]));
    sa > sb || (sa == sb && a[1] < b[1])
}

fn heap_push(heap: &mut [[u32; 4]], len: usize, e: [u32; 4]) -> Result<usize> {
    *heap.get_mut(len).ok_or(Error::InvalidState)? = e;
    let mut i = len;
    while i > 0 {
        let parent = i.saturating_sub(1) / 2;
        match (heap.get(i), heap.get(parent)) {
            (Some(c), Some(p)) if before(c, p) => heap.swap(i, parent),
            _ => break,
        }
        i = parent;
    }
    Ok(len.saturating_add(1))
}

fn heap_pop(heap: &mut [[u32; 4]], len: usize) -> Option<([u32; 4], usize)> {
    let top = *heap.first()?;
    let last = len.checked_sub(1)?;
    heap.swap(0, last);
    let mut i = 0usize;
    loop {
        let l = i.saturating_mul(2).saturating_add(1);
        let r = l.saturating_add(1);
        let mut best = i;
        for c in [l, r] {
            if c < last {
                if let (Some(x), Some(y)) = (heap.get(c), heap.get(best)) {
                    if before(x, y) {
                        best = c;
                    }
                }
            }
        }
        if best == i {
            break;
        }
        heap.swap(i, best);
        i = best;
    }
    Some((top, last))
}

/// The hex digits llama.cpp writes byte tokens with.
const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn byte_token_text(b: u8) -> [u8; 6] {
    let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
    let lo = HEX.get(usize::from(b & 15)).copied().unwrap_or(b'0');
    [b'<', b'0', b'x', hi, lo, b'>']
}

/// The byte of a `<0xXX>` entry.
fn byte_of_token(entry: &[u8]) -> Option<u8> {
    let [b'<', b'0', b'x', hi, lo, b'>'] = entry else { return None };
    let digit = |d: &u8| HEX.iter().position(|h| h == d);
    Some((digit(hi)? as u8) << 4 | digit(lo)? as u8)
}

/// Table key of an occurrence at escaped position `pos` of `len` bytes (both bounded by the
/// window and [`MAX_ENTRY_BYTES`](super::model_vocab::MAX_ENTRY_BYTES)); never 0.
pub(super) fn occ_key(pos: usize, len: usize) -> u32 {
    ((pos as u32) << LEN_BITS | (len as u32 & ((1 << LEN_BITS) - 1))).wrapping_add(1)
}

fn table_home(key: u32, cap: usize) -> usize {
    (u64::from(key.wrapping_mul(0x9e37_79b1)).wrapping_mul(cap as u64) >> 32) as usize
}

/// The table slot of `key`: `Ok` when present, `Err` the empty slot to insert at (or
/// `Err(usize::MAX)` when full).
pub(super) fn table_find(table: &[[u32; 3]], key: u32) -> core::result::Result<usize, usize> {
    let cap = table.len();
    if cap == 0 {
        return Err(usize::MAX);
    }
    let mut at = table_home(key, cap);
    for _ in 0..cap {
        match table.get(at) {
            Some(e) if e[0] == key => return Ok(at),
            Some(e) if e[0] == 0 => return Err(at),
            _ => {}
        }
        at = at.saturating_add(1);
        if at >= cap {
            at = 0;
        }
    }
    Err(usize::MAX)
}

impl State<'_> {
    fn advance<S: Source + ?Sized>(
        &mut self,
        p: &mut Parts<'_>,
        text: &str,
        out: &mut [u32],
        io: &mut S,
        left: &mut u64,
        mem_len: usize,
    ) -> Result<()> {
        while *left > 0 {
            match self.phase {
                Phase::Plan { at, cut } => self.plan(text, out, at, cut, left, mem_len)?,
                Phase::Candidates { at } => self.candidates(p, text, at, left),
                Phase::ScanSpecials(c) => self.scan_specials(p, text, io, c, left)?,
                Phase::Build => self.build(p, text, left),
                Phase::ScanTokens(c) => self.scan_tokens(p, io, c, left)?,
                Phase::Init { item, at, n_sym, heap } => self.init(p, item, at, n_sym, heap, left)?,
                Phase::Merge { item, heap } => self.merge(p, item, heap, left)?,
                Phase::Emit { item, sym } => self.emit_item(p, out, item, sym, left)?,
                Phase::Done | Phase::Failed(_) => return Ok(()),
            }
        }
        Ok(())
    }

    // ---- Plan: where the window ends ----

    fn plan(
        &mut self,
        text: &str,
        out: &mut [u32],
        mut at: usize,
        mut cut: usize,
        left: &mut u64,
        mem_len: usize,
    ) -> Result<()> {
        let start = self.win.start;
        if start >= text.len() {
            return self.finish(out);
        }
        let bound = start.saturating_add(self.win.limit);
        if at == 0 {
            at = start.saturating_add(1);
        }
        while *left > 0 {
            if text.len() <= bound {
                // The rest of the text fits the limit.
                self.win.end = text.len();
                return self.start_window(left);
            }
            if at > bound {
                if cut <= start {
                    let needed = spm_work_bytes(self.scan, self.w.saturating_mul(2));
                    return Err(Error::BufferTooSmall { needed, given: mem_len });
                }
                self.win.end = cut;
                return self.start_window(left);
            }
            if text.is_char_boundary(at) && self.vocab.is_cut(text, at) {
                cut = at;
            }
            at = at.saturating_add(1);
            spend(left, 1);
        }
        self.phase = Phase::Plan { at, cut };
        Ok(())
    }

    fn start_window(&mut self, left: &mut u64) -> Result<()> {
        self.win.n_cand = 0;
        self.win.n_items = 0;
        self.win.esc_len = 0;
        self.win.n_table = 0;
        if self.vocab.special_lens(self.opts.parse_special) == 0 {
            self.phase = Phase::Build;
        } else if self.scan {
            self.phase = Phase::ScanSpecials(Cursor::new(&self.vocab.tokens()));
            self.types = Column::new(self.vocab.types());
            spend(left, 1);
        } else {
            self.phase = Phase::Candidates { at: self.win.start };
        }
        Ok(())
    }

    /// The window holds more than its memory: halve it and plan again.
    fn shrink(&mut self) -> Result<()> {
        let len = self.win.end.saturating_sub(self.win.start);
        self.win.limit = len / 2;
        if self.win.limit == 0 {
            return Err(Error::BufferTooSmall {
                needed: spm_work_bytes(self.scan, self.w.saturating_mul(2)),
                given: 0,
            });
        }
        self.phase = Phase::Plan { at: 0, cut: 0 };
        Ok(())
    }

    // ---- Special tokens ----

    fn candidates(&mut self, p: &mut Parts<'_>, text: &str, mut at: usize, left: &mut u64) {
        let ModelLookup::Index(ix) = self.lookup else { return };
        let lens = self.vocab.special_lens(self.opts.parse_special);
        let bytes = text.as_bytes();
        let (start, end) = (self.win.start, self.win.end);
        while *left > 0 {
            if at >= end {
                self.phase = Phase::Build;
                return;
            }
            let b = bytes.get(at).copied().unwrap_or(0);
            spend(left, 1);
            if text.is_char_boundary(at) && self.vocab.special_starts_with(b) {
                for len in 1..=64usize {
                    if lens >> len.saturating_sub(1) & 1 == 0 || at.saturating_add(len) > end {
                        continue;
                    }
                    spend(left, 1);
                    let Some(piece) = bytes.get(at..at.saturating_add(len)) else { continue };
                    let Some(id) = ix.lookup(piece) else { continue };
                    if !ix.special(id).matched(self.opts.parse_special) {
                        continue;
                    }
                    let Some(slot) = p.cand.get_mut(self.win.n_cand) else {
                        // More candidates than the window holds: a smaller window.
                        if self.shrink().is_err() {
                            self.phase = Phase::Failed(Error::BufferTooSmall { needed: 0, given: 0 });
                        }
                        return;
                    };
                    *slot = [(at.saturating_sub(start)) as u32, len as u32, id];
                    self.win.n_cand = self.win.n_cand.saturating_add(1);
                }
            }
            at = at.saturating_add(1);
        }
        self.phase = Phase::Candidates { at };
    }

    /// Chains the raw window's positions by their first two bytes.
    fn raw_buckets(&mut self, p: &mut Parts<'_>, text: &str) {
        p.heads.fill(NONE);
        let bytes = text.as_bytes();
        let (start, end) = (self.win.start, self.win.end);
        for q in start..end.saturating_sub(1) {
            let i = q.saturating_sub(start);
            let (b0, b1) =
                (bytes.get(q).copied().unwrap_or(0), bytes.get(q.saturating_add(1)).copied().unwrap_or(0));
            if let (Some(h), Some(n)) = (p.heads.get_mut(bucket(b0, b1)), p.next.get_mut(i)) {
                *n = *h;
                *h = i as u32;
            }
        }
    }

    fn scan_specials<S: Source + ?Sized>(
        &mut self,
        p: &mut Parts<'_>,
        text: &str,
        io: &mut S,
        mut cursor: Cursor,
        left: &mut u64,
    ) -> Result<()> {
        if cursor.index == 0 {
            self.raw_buckets(p, text);
            p.table.fill([0; 3]);
            spend(left, (self.w / 8) as u64);
        }
        let lens = self.vocab.special_lens(self.opts.parse_special);
        let tokens = self.vocab.tokens();
        let bytes = text.as_bytes();
        let (start, end) = (self.win.start, self.win.end);
        let raw = bytes.get(start..end).unwrap_or_default();
        let mut win = FileWindow::resume(&mut *p.scratch, self.held)?;
        // At least one entry per call, so that a pass always advances.
        loop {
            let next = cursor.next(&tokens, io, &mut win);
            if next.is_err() {
                self.held = (0, 0);
            }
            let Some((id, entry)) = next? else {
                self.held = win.held();
                return self.collect_specials(p, left);
            };
            let ty = self.types.i32(io, id)?;
            let mut work = 1u64;
            if let Entry::Bytes(e) = entry {
                let n = e.len();
                let first = e.first().copied().unwrap_or(0);
                if n > 0
                    && n <= 64
                    && lens >> n.saturating_sub(1) & 1 != 0
                    && self.vocab.special_starts_with(first)
                {
                    let kind = self.vocab.special(e, ty).code();
                    if n == 1 {
                        for (i, &b) in raw.iter().enumerate() {
                            work = work.saturating_add(1);
                            if b == first && text.is_char_boundary(start.saturating_add(i)) {
                                self.table_put(p.table, i, 1, id, u32::from(kind))?;
                            }
                        }
                    } else {
                        let mut q = p
                            .heads
                            .get(bucket(first, e.get(1).copied().unwrap_or(0)))
                            .copied()
                            .unwrap_or(NONE);
                        while q != NONE {
                            let i = q as usize;
                            work = work.saturating_add(1);
                            if raw.get(i..i.saturating_add(n)) == Some(e)
                                && text.is_char_boundary(start.saturating_add(i))
                            {
                                self.table_put(p.table, i, n, id, u32::from(kind))?;
                            }
                            q = p.next.get(i).copied().unwrap_or(NONE);
                        }
                    }
                }
            }
            if matches!(self.phase, Phase::Plan { .. }) {
                // The table overflowed: the window was halved.
                self.held = win.held();
                return Ok(());
            }
            spend(left, work);
            if *left == 0 {
                break;
            }
        }
        self.held = win.held();
        self.phase = Phase::ScanSpecials(cursor);
        Ok(())
    }

    /// Records an occurrence (last id wins); halves the window when the table is too full.
    fn table_put(
        &mut self,
        table: &mut [[u32; 3]],
        pos: usize,
        len: usize,
        id: u32,
        value: u32,
    ) -> Result<()> {
        if matches!(self.phase, Phase::Plan { .. }) {
            return Ok(());
        }
        let key = occ_key(pos, len);
        match table_find(table, key) {
            Ok(slot) => {
                if let Some(e) = table.get_mut(slot) {
                    *e = [key, id, value];
                }
            }
            Err(slot) => {
                let full = self.win.n_table >= self.w.saturating_mul(TABLE_LOAD_PER_BYTE);
                match table.get_mut(slot) {
                    Some(e) if !full => {
                        *e = [key, id, value];
                        self.win.n_table = self.win.n_table.saturating_add(1);
                    }
                    _ => self.shrink()?,
                }
            }
        }
        Ok(())
    }

    /// After the specials pass: the table's matched occurrences become candidates.
    fn collect_specials(&mut self, p: &mut Parts<'_>, left: &mut u64) -> Result<()> {
        let mut n = 0usize;
        for e in p.table.iter() {
            if e[0] == 0 || !Special::from_code(e[2] as u8).matched(self.opts.parse_special) {
                continue;
            }
            let key = e[0].wrapping_sub(1);
            let Some(slot) = p.cand.get_mut(n) else { return self.shrink() };
            *slot = [key >> LEN_BITS, key & ((1 << LEN_BITS) - 1), e[1]];
            n = n.saturating_add(1);
        }
        spend(left, (p.table.len() / 64) as u64);
        self.win.n_cand = n;
        self.phase = Phase::Build;
        Ok(())
    }

    // ---- Build: the escaped fragments and the items ----

    fn build(&mut self, p: &mut Parts<'_>, text: &str, left: &mut u64) {
        let (start, end) = (self.win.start, self.win.end);
        let raw_len = end.saturating_sub(start);
        let n = choose(
            p.cand.get_mut(..self.win.n_cand).unwrap_or_default(),
            p.occ.get_mut(..raw_len).unwrap_or_default(),
        );
        spend(left, (raw_len / 64).saturating_add(self.win.n_cand / 16) as u64);
        let mut esc = 0usize;
        let mut items = 0usize;
        let mut r = start;
        let mut after_special = self.win.after_special;
        let mut ok = true;
        for k in 0..=n {
            let (frag_end, special) = match p.cand.get(k) {
                Some(&[pos, len, id]) if k < n => {
                    let at = start.saturating_add(pos as usize);
                    (at, Some((at.saturating_add(len as usize), id)))
                }
                _ => (end, None),
            };
            if r < frag_end {
                let prefix = after_special && self.vocab.add_space_prefix();
                let s = esc;
                ok &= push_escaped(p.esc, &mut esc, prefix, text.get(r..frag_end).unwrap_or_default());
                ok &= push_pair(p.items, &mut items, s as u32, esc.saturating_sub(s) as u32);
                after_special = false;
            }
            if let Some((next, id)) = special {
                ok &= push_pair(p.items, &mut items, id, 0);
                r = next;
                after_special = true;
            }
        }
        if !ok {
            if self.shrink().is_err() {
                self.phase = Phase::Failed(Error::BufferTooSmall { needed: 0, given: 0 });
            }
            return;
        }
        self.win.after_special = after_special;
        self.win.esc_len = esc;
        self.win.n_items = items;
        if self.scan {
            self.phase = Phase::ScanTokens(Cursor::new(&self.vocab.tokens()));
            self.scores = Column::new(self.vocab.scores());
        } else {
            self.phase = Phase::Init { item: 0, at: 0, n_sym: 0, heap: 0 };
        }
    }

    // ---- Scan mode: every entry occurring in the escaped window ----

    fn esc_buckets(&mut self, p: &mut Parts<'_>) {
        p.heads.fill(NONE);
        p.table.fill([0; 3]);
        p.bytetab.fill(NONE);
        p.singles.fill(NONE);
        self.win.n_table = 0;
        for i in 0..self.win.n_items {
            let (s, len) = item_at(p.items, i);
            if len == 0 {
                continue;
            }
            let (s, e) = (s as usize, (s as usize).saturating_add(len as usize));
            for q in s..e.saturating_sub(1) {
                let b0 = p.esc.get(q).copied().unwrap_or(0);
                if b0 & 0xC0 == 0x80 {
                    continue; // not a char start
                }
                let b1 = p.esc.get(q.saturating_add(1)).copied().unwrap_or(0);
                if let (Some(h), Some(n), Some(ie)) =
                    (p.heads.get_mut(bucket(b0, b1)), p.next.get_mut(q), p.item_end.get_mut(q))
                {
                    *n = *h;
                    *h = q as u32;
                    *ie = e as u32;
                }
            }
        }
    }

    fn scan_tokens<S: Source + ?Sized>(
        &mut self,
        p: &mut Parts<'_>,
        io: &mut S,
        mut cursor: Cursor,
        left: &mut u64,
    ) -> Result<()> {
        if cursor.index == 0 {
            self.esc_buckets(p);
            spend(left, (self.w / 8) as u64);
        }
        let tokens = self.vocab.tokens();
        let mut win = FileWindow::resume(&mut *p.scratch, self.held)?;
        // At least one entry per call, so that a pass always advances.
        loop {
            let next = cursor.next(&tokens, io, &mut win);
            if next.is_err() {
                self.held = (0, 0);
            }
            let Some((id, entry)) = next? else {
                self.held = win.held();
                self.phase = Phase::Init { item: 0, at: 0, n_sym: 0, heap: 0 };
                return Ok(());
            };
            let score = self.scores.score(io, id)?;
            let mut work = 1u64;
            if let Entry::Bytes(e) = entry {
                if let Some(b) = byte_of_token(e) {
                    if let Some(slot) = p.bytetab.get_mut(usize::from(b)) {
                        *slot = id;
                    }
                }
                match e {
                    [] => {}
                    [b] => {
                        if let Some(slot) = p.singles.get_mut(usize::from(*b)) {
                            *slot = id;
                        }
                    }
                    [b0, b1, ..] => {
                        let n = e.len();
                        let mut q = p.heads.get(bucket(*b0, *b1)).copied().unwrap_or(NONE);
                        while q != NONE {
                            let i = q as usize;
                            work = work.saturating_add(1);
                            let fits =
                                i.saturating_add(n) <= p.item_end.get(i).copied().unwrap_or(0) as usize;
                            if fits && p.esc.get(i..i.saturating_add(n)) == Some(e) {
                                self.table_put(p.table, i, n, id, score.to_bits())?;
                                if matches!(self.phase, Phase::Plan { .. }) {
                                    self.held = win.held();
                                    return Ok(());
                                }
                            }
                            q = p.next.get(i).copied().unwrap_or(NONE);
                        }
                    }
                }
            }
            spend(left, work);
            if *left == 0 {
                break;
            }
        }
        self.held = win.held();
        self.phase = Phase::ScanTokens(cursor);
        Ok(())
    }

    // ---- Merging ----

    /// The entry spelled by escaped bytes `[pos, pos + len)`: its id and score.
    fn find(&self, p: &Parts<'_>, pos: usize, len: usize) -> Option<(u32, f32)> {
        match self.lookup {
            ModelLookup::Index(ix) => {
                let id = ix.lookup(p.esc.get(pos..pos.saturating_add(len))?)?;
                Some((id, ix.score(id)))
            }
            ModelLookup::Scan if len == 1 => {
                let id = p.singles.get(usize::from(*p.esc.get(pos)?)).copied().filter(|&i| i != NONE)?;
                Some((id, 0.0))
            }
            ModelLookup::Scan => {
                let slot = table_find(p.table, occ_key(pos, len)).ok()?;
                let e = p.table.get(slot)?;
                Some((e[1], f32::from_bits(e[2])))
            }
        }
    }

    /// The id written for byte `b` of a char that is no token.
    fn byte_id(&self, p: &Parts<'_>, b: u8) -> Option<u32> {
        let found = match self.lookup {
            ModelLookup::Index(ix) => ix.lookup(&byte_token_text(b)).or_else(|| ix.lookup(&[b])),
            ModelLookup::Scan => {
                let t = p.bytetab.get(usize::from(b)).copied().filter(|&i| i != NONE);
                t.or_else(|| p.singles.get(usize::from(b)).copied().filter(|&i| i != NONE))
            }
        };
        found.or(self.vocab.unk())
    }

    /// Pushes the bigram of symbols `l` and `r` when their concatenation is an entry.
    fn try_bigram(&self, p: &mut Parts<'_>, base: usize, l: u32, r: u32, heap: usize) -> Result<usize> {
        if l == NONE || r == NONE {
            return Ok(heap);
        }
        let (Some(&ls), Some(&rs)) = (p.sym.get(l as usize), p.sym.get(r as usize)) else { return Ok(heap) };
        let size = ls[1].saturating_add(rs[1]);
        match self.find(p, base.saturating_add(ls[0] as usize), size as usize) {
            Some((_, score)) => heap_push(p.heap, heap, [score.to_bits(), l, r, size]),
            None => Ok(heap),
        }
    }

    fn init(
        &mut self,
        p: &mut Parts<'_>,
        item: usize,
        mut at: usize,
        mut n_sym: usize,
        mut heap: usize,
        left: &mut u64,
    ) -> Result<()> {
        if item >= self.win.n_items {
            return self.next_window(left);
        }
        let (s, len) = item_at(p.items, item);
        if len == 0 {
            // A special token: written as it is.
            self.phase = Phase::Emit { item, sym: 0 };
            return Ok(());
        }
        let (s, len) = (s as usize, len as usize);
        while *left > 0 {
            if at >= len {
                self.phase = Phase::Merge { item, heap };
                return Ok(());
            }
            let b = p.esc.get(s.saturating_add(at)).copied().unwrap_or(0);
            let n = utf8_len(b).min(len.saturating_sub(at));
            let k = n_sym as u32;
            let prev = if n_sym == 0 { NONE } else { k.wrapping_sub(1) };
            *p.sym.get_mut(n_sym).ok_or(Error::InvalidState)? = [at as u32, n as u32, prev, NONE];
            if let Some(ps) = n_sym.checked_sub(1).and_then(|i| p.sym.get_mut(i)) {
                ps[3] = k;
            }
            heap = self.try_bigram(p, s, prev, k, heap)?;
            n_sym = n_sym.saturating_add(1);
            at = at.saturating_add(n);
            spend(left, 1);
        }
        self.phase = Phase::Init { item, at, n_sym, heap };
        Ok(())
    }

    /// Pops bigrams, highest score first, merging the ones still valid.
    fn merge(&mut self, p: &mut Parts<'_>, item: usize, mut heap: usize, left: &mut u64) -> Result<()> {
        let (s, _) = item_at(p.items, item);
        let base = s as usize;
        while *left > 0 {
            let Some((top, rest)) = heap_pop(p.heap, heap) else {
                self.phase = Phase::Emit { item, sym: 0 };
                return Ok(());
            };
            heap = rest;
            spend(left, 1);
            let [_, l, r, size] = top;
            let (Some(&ls), Some(&rs)) = (p.sym.get(l as usize), p.sym.get(r as usize)) else { continue };
            // Stale: one side was merged away, or grew since.
            if ls[1] == 0 || rs[1] == 0 || ls[1].saturating_add(rs[1]) != size {
                continue;
            }
            let next = rs[3];
            if let Some(x) = p.sym.get_mut(l as usize) {
                x[1] = size;
                x[3] = next;
            }
            if let Some(y) = p.sym.get_mut(r as usize) {
                y[1] = 0;
            }
            if let Some(z) = p.sym.get_mut(next as usize) {
                z[2] = l;
            }
            heap = self.try_bigram(p, base, ls[2], l, heap)?;
            heap = self.try_bigram(p, base, l, next, heap)?;
        }
        self.phase = Phase::Merge { item, heap };
        Ok(())
    }

    /// Writes the ids of item `item` from symbol `sym` on.
    fn emit_item(
        &mut self,
        p: &mut Parts<'_>,
        out: &mut [u32],
        item: usize,
        mut sym: u32,
        left: &mut u64,
    ) -> Result<()> {
        let (a, len) = item_at(p.items, item);
        if len == 0 {
            spend(left, 1);
            if !self.emit(out, a)? {
                return self.finish(out);
            }
            self.phase = Phase::Init { item: item.saturating_add(1), at: 0, n_sym: 0, heap: 0 };
            return Ok(());
        }
        let base = a as usize;
        while *left > 0 {
            let Some(&[start, n, _, next]) = p.sym.get(sym as usize) else {
                self.phase = Phase::Init { item: item.saturating_add(1), at: 0, n_sym: 0, heap: 0 };
                return Ok(());
            };
            let pos = base.saturating_add(start as usize);
            match self.find(p, pos, n as usize) {
                Some((id, _)) => {
                    spend(left, 1);
                    if !self.emit(out, id)? {
                        return self.finish(out);
                    }
                }
                None => {
                    // A char that is no token (at most 4 bytes): its bytes.
                    for q in pos..pos.saturating_add(n as usize) {
                        spend(left, 1);
                        let b = p.esc.get(q).copied().unwrap_or(0);
                        if let Some(id) = self.byte_id(p, b) {
                            if !self.emit(out, id)? {
                                return self.finish(out);
                            }
                        }
                    }
                }
            }
            sym = next;
        }
        self.phase = Phase::Emit { item, sym };
        Ok(())
    }

    /// Appends a piece. `Ok(false)` when the output is full and truncation is on.
    fn emit(&mut self, out: &mut [u32], id: u32) -> Result<bool> {
        if self.n_pieces >= self.max_pieces {
            if self.opts.truncate {
                return Ok(false);
            }
            let max = self.opts.max_tokens;
            return Err(Error::Input(InputError::TooManyTokens { tokens: max.saturating_add(1), max }));
        }
        *out.get_mut(self.n_out).ok_or(Error::InvalidState)? = id;
        self.n_out = self.n_out.saturating_add(1);
        self.n_pieces = self.n_pieces.saturating_add(1);
        Ok(true)
    }

    /// The window is done: on to the next one.
    fn next_window(&mut self, left: &mut u64) -> Result<()> {
        spend(left, 1);
        self.win.start = self.win.end;
        self.win.limit = self.w.saturating_mul(2) / 3;
        self.phase = Phase::Plan { at: 0, cut: 0 };
        Ok(())
    }

    /// Writes EOS when it is added, and stops.
    fn finish(&mut self, out: &mut [u32]) -> Result<()> {
        if self.opts.add_special && self.vocab.add_eos() {
            *out.get_mut(self.n_out).ok_or(Error::InvalidState)? = self.vocab.eos().unwrap_or(0);
            self.n_out = self.n_out.saturating_add(1);
        }
        self.phase = Phase::Done;
        Ok(())
    }
}

/// Bytes of the UTF-8 char starting with byte `b` (llama.cpp's `unicode_len_utf8`).
fn utf8_len(b: u8) -> usize {
    match b >> 4 {
        0xC | 0xD => 2,
        0xE => 3,
        0xF => 4,
        _ => 1,
    }
}

/// Appends `frag` to `esc` with spaces as `▁`, after a `▁` when `prefix`. `false` when it does
/// not fit.
fn push_escaped(esc: &mut [u8], len: &mut usize, prefix: bool, frag: &str) -> bool {
    let mut put = |bytes: &[u8]| {
        let end = len.saturating_add(bytes.len());
        match esc.get_mut(*len..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                *len = end;
                true
            }
            None => false,
        }
    };
    if prefix && !put(super::PHANTOM_SPACE) {
        return false;
    }
    for piece in frag.split(' ').enumerate() {
        if piece.0 > 0 && !put(super::PHANTOM_SPACE) {
            return false;
        }
        if !put(piece.1.as_bytes()) {
            return false;
        }
    }
    true
}

fn push_pair(items: &mut [u32], n: &mut usize, a: u32, b: u32) -> bool {
    let j = n.saturating_mul(2);
    match items.get_mut(j..j.saturating_add(2)) {
        Some([x, y]) => {
            *x = a;
            *y = b;
            *n = n.saturating_add(1);
            true
        }
        _ => false,
    }
}
