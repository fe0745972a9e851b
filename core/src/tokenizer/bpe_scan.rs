//! Byte-level BPE without an index: the scan mode of [`BpeTokenize`](super::BpeTokenize). The
//! text is tokenized a *batch* (a region of raw text) at a time; each batch streams the vocab
//! and the merges from the file a few times and keeps nothing but the batch in caller memory.
//!
//! # One batch
//! 1. *Specials pass* (only when the vocab has special tokens the options match): the token
//!    array and the token types are streamed; every occurrence of a special token in the region
//!    is recorded (the last entry of equal text decides, as in the index), then llama.cpp's
//!    choice among overlapping occurrences is made ([`choose`]). Only the choices that cannot
//!    depend on text past the region are kept (the region's end may cut a cluster of overlapping
//!    occurrences in two): those before a point no occurrence spans, 64 bytes before the end.
//! 2. *Words*: the fragments between the chosen special tokens are split as in index mode. A
//!    word is taken only when its end is certain: the fragment's end is known, or the text read
//!    to decide the word (at most the word limit + 20 bytes, see `bpe_split::word_end`) lies
//!    before the earliest place an unknown special token could start. The next batch starts at
//!    the first word not taken.
//! 3. *Merge pass*: every adjacent pair of byte chars of every word is a key in a hash table
//!    (by text, `left ␠ right`, the form of the merge strings). The merges are streamed in rank
//!    order; a merge whose text is a current pair is applied there at once, left to right, and
//!    the new pairs are added with the rank that made them (their *birth*). This is llama.cpp's
//!    lowest-rank-first order as long as no pair is born after the rank of its own merge — true
//!    of every trained vocab (a merge can only use tokens made by earlier merges).
//! 4. *Verify pass*: the merges are streamed again up to the latest birth; a pair whose merge
//!    ranks before its birth (also one merged away since) marks its word. Marked words are
//!    redone exactly: from their bytes, one merge per pass, each pass finding the word's
//!    lowest-rank pair (the first hit in rank order, the leftmost on ties). No Qwen2 word needs it.
//! 5. *Vocab pass*: the token array is streamed once more to give every final symbol its id (the
//!    last of equal entries), the one-byte entries for symbols that are no token, and (Llama 3)
//!    the whole word's id.
//!
//! So a batch costs 3 passes over the merges or tokens (4 with special tokens); its memory is
//! [`bpe_scan_bytes`]. Merges are matched by text, as llama.cpp does (the index matches the
//! ids of the two sides: the same whenever both sides and the result are tokens, as in every
//! merge of the Qwen2 vocab). A merge longer than
//! [`MAX_ENTRY_BYTES`](super::MAX_ENTRY_BYTES) never applies (the index cannot hold its sides either).

use super::bpe::{take, take_n, Ids};
use super::bpe_split::{byte_char, word_end};
use super::index::{hash_parts, home};
use super::model_vocab::{Column, ModelKind, ModelVocab, PreTokenizer, Special, MAX_SPECIAL_BYTES};
use super::special::{choose, Candidate};
use super::spm::{occ_key, table_find, ModelOptions, LEN_BITS};
use super::vocab::{Cursor, Entry, FileWindow};
use crate::error::{Error, Result};
use crate::io::Source;

const NONE: u32 = u32::MAX;
/// Raw bytes a batch region holds beyond the word limit (the specials' reach and the split's
/// lookahead).
const MARGIN: usize = 128;
/// Bytes `word_end` may read past the word limit (see `bpe_split::word_end`), rounded up.
const LOOKAHEAD: usize = 20;
/// Bytes of file scratch the passes read the vocab and merges through.
pub const BPE_SCAN_SCRATCH: usize = 4096;
/// The largest word limit (piece lengths are kept in 16 bits).
pub const MAX_BPE_SCAN_WINDOW: usize = 16 << 10;
/// Hash-table slots per region byte.
const SLOTS_PER_BYTE: usize = 4;
/// Bytes per region byte: symbols (4 words), symbol words (1), the hash table (4 slots of 4
/// words), special occurrences (one per 2 bytes, 3 words), the bucket chain (1 word), the
/// escaped text (2), symbol kinds (1) and the chosen-bytes map (1).
const PER_BYTE: usize = 4 * 4 + 4 + SLOTS_PER_BYTE * 16 + 3 * 4 / 2 + 4 + 2 + 1 + 1;
/// Window-independent bytes: the margin's share, bucket heads and one-byte entries (256 words
/// each) and the file scratch.
const FIXED: usize = MARGIN * PER_BYTE + 2 * 256 * 4 + BPE_SCAN_SCRATCH;
/// Bytes lost to aligning the caller's buffer to 4 bytes, and to rounding.
const SLACK: usize = 7;

/// Symbol kinds (bits).
const START: u8 = 1;
const SPECIAL: u8 = 2;
const EXACT: u8 = 4;
const HIT: u8 = 8;
const FINISHED: u8 = 16;
const VIOLATED: u8 = 32;
/// A piece-table entry for a whole word (Llama 3).
const WHOLE: u32 = 1 << 31;

/// Bytes of work memory scan mode needs for words of up to `window` raw bytes:
/// `98 × window + 18 695` (420 103 bytes for a 4 KiB window, 43 783 for 256). Saturates
/// instead of overflowing.
pub const fn bpe_scan_bytes(window: usize) -> usize {
    window.saturating_mul(PER_BYTE).saturating_add(FIXED).saturating_add(SLACK)
}

pub(super) fn window_for(aligned: usize) -> usize {
    (aligned.saturating_sub(FIXED.saturating_add(3)) / PER_BYTE).min(MAX_BPE_SCAN_WINDOW)
}

/// The work memory, split into its arrays.
struct Parts<'b> {
    sym: &'b mut [[u32; 4]],
    aux: &'b mut [u32],
    table: &'b mut [[u32; 4]],
    occ: &'b mut [Candidate],
    next: &'b mut [u32],
    heads: &'b mut [u32],
    singles: &'b mut [u32],
    esc: &'b mut [u8],
    kinds: &'b mut [u8],
    chosen: &'b mut [u8],
}

/// Splits `mem` for a region of `r` raw bytes: the arrays and the file scratch.
fn carve(mem: &mut [u8], r: usize) -> Result<(Parts<'_>, &mut [u8])> {
    let (_, mut words, _) = bytemuck::pod_align_to_mut::<u8, u32>(mem);
    let sym = take_n::<4>(&mut words, r)?;
    let aux = take(&mut words, r)?;
    let table = take_n::<4>(&mut words, r.saturating_mul(SLOTS_PER_BYTE))?;
    let occ = take_n::<3>(&mut words, r / 2)?;
    let next = take(&mut words, r)?;
    let heads = take(&mut words, 256)?;
    let singles = take(&mut words, 256)?;
    let mut bytes: &mut [u8] = bytemuck::cast_slice_mut(words);
    let esc = take(&mut bytes, r.saturating_mul(2))?;
    let kinds = take(&mut bytes, r)?;
    let chosen = take(&mut bytes, r)?;
    let scratch = take(&mut bytes, BPE_SCAN_SCRATCH)?;
    Ok((Parts { sym, aux, table, occ, next, heads, singles, esc, kinds, chosen }, scratch))
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Starting the batch at `ws`.
    Plan,
    Specials(Cursor),
    Build,
    Merge(Cursor),
    Verify(Cursor),
    Exact(Cursor),
    Vocab(Cursor),
    Emit {
        sym: usize,
    },
    Done,
    Failed(Error),
}

/// What one scan has done: passes over the token or merge array, entries streamed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Batches of text.
    pub batches: u32,
    /// Passes over the token array or the merge array (whole or in part).
    pub passes: u32,
    /// Entries (tokens and merges) streamed.
    pub entries: u64,
    /// Words redone one merge per pass (their vocab broke the rank order).
    pub exact_words: u32,
}

/// The scan-mode tokenizer state, without the borrowed buffers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scan {
    vocab: ModelVocab,
    /// Word limit and region bytes.
    w: usize,
    r: usize,
    opts: ModelOptions,
    pub(super) ids: Ids,
    /// The batch: region `[ws, we)`, words and specials taken up to `batch_end`.
    ws: usize,
    we: usize,
    batch_end: usize,
    n_sym: usize,
    esc_len: usize,
    n_occ: usize,
    n_entries: usize,
    max_birth: Option<u32>,
    /// Exact words not finished, and of those the ones without a hit in this pass.
    pending: usize,
    unhit: usize,
    held: (u64, usize),
    types: Column,
    phase: Phase,
    pub(super) stats: ScanStats,
}

fn spend(left: &mut u64, n: u64) {
    *left = left.saturating_sub(n);
}

fn get4(a: &[[u32; 4]], i: usize) -> [u32; 4] {
    a.get(i).copied().unwrap_or([0, 0, NONE, NONE])
}

/// The split of a merge string: bytes of its left side (llama.cpp: the first space after the
/// first byte), when both sides are non-empty.
fn merge_split(t: &[u8]) -> Option<usize> {
    let sp = t.iter().skip(1).position(|&b| b == b' ')?.checked_add(1)?;
    (sp.checked_add(1)? < t.len()).then_some(sp)
}

impl Scan {
    /// A scan with a word limit of `w` bytes (from [`window_for`], at least
    /// [`MIN_MODEL_WINDOW`](super::MIN_MODEL_WINDOW)).
    pub(super) fn new(vocab: &ModelVocab, w: usize, opts: ModelOptions, ids: Ids) -> Self {
        Scan {
            vocab: *vocab,
            w,
            r: w.saturating_add(MARGIN),
            opts,
            ids,
            ws: 0,
            we: 0,
            batch_end: 0,
            n_sym: 0,
            esc_len: 0,
            n_occ: 0,
            n_entries: 0,
            max_birth: None,
            pending: 0,
            unhit: 0,
            held: (0, 0),
            types: Column::new(vocab.types()),
            phase: Phase::Plan,
            stats: ScanStats::default(),
        }
    }

    pub(super) fn window(&self) -> usize {
        self.w
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    pub(super) fn progress(&self, text_len: usize) -> usize {
        if self.is_done() {
            text_len
        } else {
            self.ws
        }
    }

    /// One step; see [`BpeTokenize::step`](super::BpeTokenize::step).
    pub(super) fn step<S: Source + ?Sized>(
        &mut self,
        mem: &mut [u8],
        text: &str,
        out: &mut [u32],
        io: &mut S,
        budget: u32,
    ) -> Result<bool> {
        match self.phase {
            Phase::Done => return Ok(true),
            Phase::Failed(e) => return Err(e),
            _ => {}
        }
        let given = mem.len();
        let (mut p, scratch) = carve(mem, self.r)?;
        let mut left = u64::from(budget.max(1));
        let r = self.advance(&mut p, scratch, text, out, io, &mut left, given);
        match r {
            Ok(()) => Ok(self.is_done()),
            Err(e) => {
                self.phase = Phase::Failed(e);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn advance<S: Source + ?Sized>(
        &mut self,
        p: &mut Parts<'_>,
        scratch: &mut [u8],
        text: &str,
        out: &mut [u32],
        io: &mut S,
        left: &mut u64,
        given: usize,
    ) -> Result<()> {
        while *left > 0 {
            match self.phase {
                Phase::Plan => self.plan(p, text, out, left)?,
                Phase::Specials(c) => self.specials(p, scratch, text, io, c, left)?,
                Phase::Build => self.build(p, text, left, given)?,
                Phase::Merge(c) | Phase::Verify(c) | Phase::Exact(c) => {
                    self.merge_pass(p, scratch, io, c, left)?
                }
                Phase::Vocab(c) => self.vocab_pass(p, scratch, io, c, left)?,
                Phase::Emit { sym } => self.emit_batch(p, out, sym, left)?,
                Phase::Done | Phase::Failed(_) => return Ok(()),
            }
        }
        Ok(())
    }

    fn too_small(&self, given: usize) -> Error {
        Error::BufferTooSmall { needed: bpe_scan_bytes(self.w.saturating_mul(2)), given }
    }

    fn llama3(&self) -> bool {
        self.vocab.kind() == ModelKind::Bpe(PreTokenizer::Llama3)
    }

    fn start_pass(&mut self, c: Cursor) -> Cursor {
        if c.index == 0 {
            self.stats.passes = self.stats.passes.saturating_add(1);
        }
        c
    }

    // ---- Batches ----

    fn plan(&mut self, p: &mut Parts<'_>, text: &str, out: &mut [u32], left: &mut u64) -> Result<()> {
        if self.ws >= text.len() {
            return self.finish(out);
        }
        let mut we = self.ws.saturating_add(self.r).min(text.len());
        while we > self.ws && !text.is_char_boundary(we) {
            we = we.saturating_sub(1);
        }
        self.we = we;
        self.n_sym = 0;
        self.esc_len = 0;
        self.n_occ = 0;
        self.clear_table(p);
        self.max_birth = None;
        self.pending = 0;
        self.stats.batches = self.stats.batches.saturating_add(1);
        spend(left, (p.table.len() / 256) as u64);
        if self.vocab.special_lens(self.opts.parse_special) == 0 {
            self.phase = Phase::Build;
            return Ok(());
        }
        // Chain the region's positions by their first byte; clear the occurrence table.
        p.heads.fill(NONE);
        p.occ.fill([0; 3]);
        let raw = text.as_bytes().get(self.ws..we).unwrap_or_default();
        for (i, &b) in raw.iter().enumerate() {
            if let (Some(h), Some(n)) = (p.heads.get_mut(usize::from(b)), p.next.get_mut(i)) {
                *n = *h;
                *h = i as u32;
            }
        }
        spend(left, (raw.len() / 64).saturating_add(1) as u64);
        self.types = Column::new(self.vocab.types());
        self.phase = Phase::Specials(Cursor::new(&self.vocab.tokens()));
        Ok(())
    }

    /// The specials pass: occurrences of entries that may be special tokens, by (position,
    /// length), the last entry deciding.
    fn specials<S: Source + ?Sized>(
        &mut self,
        p: &mut Parts<'_>,
        scratch: &mut [u8],
        text: &str,
        io: &mut S,
        cursor: Cursor,
        left: &mut u64,
    ) -> Result<()> {
        let mut cursor = self.start_pass(cursor);
        let lens = self.vocab.special_lens(self.opts.parse_special);
        let tokens = self.vocab.tokens();
        let raw = text.as_bytes().get(self.ws..self.we).unwrap_or_default();
        let mut win = FileWindow::resume(scratch, self.held)?;
        loop {
            let next = cursor.next(&tokens, io, &mut win);
            if next.is_err() {
                self.held = (0, 0);
            }
            let Some((id, entry)) = next? else {
                self.held = win.held();
                self.phase = Phase::Build;
                return Ok(());
            };
            self.stats.entries = self.stats.entries.saturating_add(1);
            let mut work = 1u64;
            if let Entry::Bytes(e) = entry {
                let n = e.len();
                let first = e.first().copied().unwrap_or(0);
                if n > 0
                    && n <= MAX_SPECIAL_BYTES
                    && lens >> n.saturating_sub(1) & 1 != 0
                    && self.vocab.special_starts_with(first)
                {
                    let kind = self.vocab.special(e, self.types.i32(io, id)?);
                    let mut q = p.heads.get(usize::from(first)).copied().unwrap_or(NONE);
                    while q != NONE {
                        let i = q as usize;
                        work = work.saturating_add(1);
                        if raw.get(i..i.saturating_add(n)) == Some(e)
                            && text.is_char_boundary(self.ws.saturating_add(i))
                        {
                            self.occ_put(p.occ, i, n, id, kind)?;
                        }
                        q = p.next.get(i).copied().unwrap_or(NONE);
                    }
                }
            }
            spend(left, work);
            if *left == 0 {
                break;
            }
        }
        self.held = win.held();
        self.phase = Phase::Specials(cursor);
        Ok(())
    }

    /// Records that entry `id` of kind `kind` occurs at region byte `pos` (`len` bytes). An
    /// ordinary entry only overrides an earlier special one of the same text.
    fn occ_put(
        &mut self,
        occ: &mut [Candidate],
        pos: usize,
        len: usize,
        id: u32,
        kind: Special,
    ) -> Result<()> {
        let key = occ_key(pos, len);
        match table_find(occ, key) {
            Ok(slot) => {
                if let Some(e) = occ.get_mut(slot) {
                    *e = [key, id, u32::from(kind.code())];
                }
            }
            Err(slot) if kind != Special::No => {
                let full = self.n_occ.saturating_mul(4) >= occ.len().saturating_mul(3);
                match occ.get_mut(slot) {
                    Some(e) if !full => {
                        *e = [key, id, u32::from(kind.code())];
                        self.n_occ = self.n_occ.saturating_add(1);
                    }
                    _ => {
                        return Err(Error::BufferTooSmall {
                            needed: bpe_scan_bytes(self.w.saturating_mul(2)),
                            given: 0,
                        })
                    }
                }
            }
            Err(_) => {}
        }
        Ok(())
    }

    /// Chooses the special tokens, finds where the batch may end, and lays out its words:
    /// symbols, escaped text and the first pairs.
    fn build(&mut self, p: &mut Parts<'_>, text: &str, left: &mut u64, given: usize) -> Result<()> {
        let region = self.we.saturating_sub(self.ws);
        let last_region = self.we >= text.len();
        let no_specials = self.vocab.special_lens(self.opts.parse_special) == 0;
        // The matched occurrences, as candidates (compacted in place).
        let mut n = 0usize;
        if !no_specials {
            for i in 0..p.occ.len() {
                let Some(&[key, id, kind]) = p.occ.get(i) else { break };
                if key == 0 || !Special::from_code(kind as u8).matched(self.opts.parse_special) {
                    continue;
                }
                let k = key.wrapping_sub(1);
                if let Some(slot) = p.occ.get_mut(n) {
                    *slot = [k >> LEN_BITS, k & ((1 << LEN_BITS) - 1), id];
                }
                n = n.saturating_add(1);
            }
        }
        let cands = p.occ.get_mut(..n).unwrap_or_default();
        // `safe`: no occurrence spans it, and every occurrence before it is complete; `bound`:
        // no special token the batch does not know can start before it.
        let (safe, bound) = if last_region || no_specials {
            (region, region)
        } else {
            let mut s = region.saturating_sub(MAX_SPECIAL_BYTES);
            while s > 0 && !text.is_char_boundary(self.ws.saturating_add(s)) {
                s = s.saturating_sub(1);
            }
            cands.sort_unstable_by_key(|c| c[0]);
            for c in cands.iter().rev() {
                let (pos, end) = (c[0] as usize, (c[0] as usize).saturating_add(c[1] as usize));
                if pos < s && end > s {
                    s = pos;
                }
            }
            let limit = region.saturating_sub(MAX_SPECIAL_BYTES);
            let first_after = cands.iter().map(|c| c[0] as usize).filter(|&q| q >= s).min();
            let mut bound = first_after.map_or(limit, |q| q.min(limit)).max(s);
            while bound > s && !text.is_char_boundary(self.ws.saturating_add(bound)) {
                bound = bound.saturating_sub(1);
            }
            (s, bound)
        };
        let n_chosen = choose(cands, p.chosen.get_mut(..region).unwrap_or_default());
        spend(left, (region / 64).saturating_add(n / 16).saturating_add(1) as u64);
        // Words and specials, in order.
        let digits = if self.llama3() { 3 } else { 1 };
        let mut cur = self.ws;
        let mut k = 0usize;
        'fragments: loop {
            let special = p.occ.get(k).copied().filter(|c| k < n_chosen && (c[0] as usize) < safe);
            // The fragment's end when known, else the bound of its words.
            let (end, known) = match special {
                Some(c) => (self.ws.saturating_add(c[0] as usize), true),
                None if last_region || no_specials => (text.len(), true),
                None => (self.ws.saturating_add(bound), false),
            };
            while cur < end {
                let e = if known {
                    let frag = text.get(cur..end).ok_or(Error::InvalidState)?;
                    word_end(frag, 0, self.w, digits).ok_or(self.too_small(given))?
                } else {
                    let avail = end.saturating_sub(cur);
                    if avail < LOOKAHEAD {
                        break 'fragments;
                    }
                    let max = self.w.min(avail.saturating_sub(LOOKAHEAD));
                    let frag = text.get(cur..end).ok_or(Error::InvalidState)?;
                    match word_end(frag, 0, max, digits) {
                        Some(e) => e,
                        None if max == self.w => return Err(self.too_small(given)),
                        None => break 'fragments,
                    }
                };
                let e = cur.saturating_add(e.max(1));
                if e > self.we {
                    break 'fragments;
                }
                self.push_word(p, text, cur, e)?;
                cur = e;
            }
            let Some(c) = special else { break };
            let s = self.n_sym;
            *p.sym.get_mut(s).ok_or(Error::InvalidState)? = [self.esc_len as u32, 0, NONE, NONE];
            *p.kinds.get_mut(s).ok_or(Error::InvalidState)? = SPECIAL;
            *p.aux.get_mut(s).ok_or(Error::InvalidState)? = c[2];
            self.n_sym = s.saturating_add(1);
            cur = end.saturating_add(c[1] as usize);
            k = k.saturating_add(1);
        }
        if cur == self.ws {
            // Nothing certain in a whole region: a cluster of special tokens wider than it.
            return Err(self.too_small(given));
        }
        self.batch_end = cur;
        spend(left, (self.n_sym / 16) as u64);
        self.phase = if self.n_entries > 0 {
            Phase::Merge(Cursor::new(&self.merge_array()?))
        } else {
            Phase::Vocab(Cursor::new(&self.vocab.tokens()))
        };
        Ok(())
    }

    fn merge_array(&self) -> Result<crate::gguf::ArrayRef> {
        self.vocab.merges().ok_or(Error::InvalidState)
    }

    /// Appends the word `text[at..end)` as byte-char symbols, and its pairs.
    fn push_word(&mut self, p: &mut Parts<'_>, text: &str, at: usize, end: usize) -> Result<()> {
        let start = self.n_sym;
        for (j, &b) in text.as_bytes().get(at..end).unwrap_or_default().iter().enumerate() {
            let mut utf8 = [0u8; 4];
            let c = byte_char(b).encode_utf8(&mut utf8).as_bytes();
            let off = self.esc_len;
            let dst = p.esc.get_mut(off..off.saturating_add(c.len())).ok_or(Error::InvalidState)?;
            dst.copy_from_slice(c);
            self.esc_len = off.saturating_add(c.len());
            let i = self.n_sym;
            let prev = if j == 0 { NONE } else { (i as u32).saturating_sub(1) };
            *p.sym.get_mut(i).ok_or(Error::InvalidState)? = [off as u32, c.len() as u32, prev, NONE];
            *p.kinds.get_mut(i).ok_or(Error::InvalidState)? = if j == 0 { START } else { 0 };
            *p.aux.get_mut(i).ok_or(Error::InvalidState)? = start as u32;
            if prev != NONE {
                if let Some(ps) = p.sym.get_mut(prev as usize) {
                    ps[3] = i as u32;
                }
                self.insert_pair(p, prev, i as u32, NONE)?;
            }
            self.n_sym = i.saturating_add(1);
        }
        Ok(())
    }

    fn clear_table(&mut self, p: &mut Parts<'_>) {
        p.table.fill([0, NONE, 0, 0]);
        self.n_entries = 0;
    }

    fn put(&mut self, p: &mut Parts<'_>, h: u32, e: [u32; 4]) -> Result<()> {
        let cap = p.table.len();
        if self.n_entries.saturating_add(1) >= cap {
            return Err(Error::InvalidState);
        }
        let mut at = home(h, cap);
        for _ in 0..cap {
            match p.table.get_mut(at) {
                Some(slot) if slot[1] == NONE => {
                    *slot = e;
                    self.n_entries = self.n_entries.saturating_add(1);
                    return Ok(());
                }
                Some(_) => {}
                None => return Err(Error::InvalidState),
            }
            at = at.saturating_add(1);
            if at >= cap {
                at = 0;
            }
        }
        Err(Error::InvalidState)
    }

    /// Adds the pair of adjacent symbols `l` and `r`, born at merge rank `birth`.
    fn insert_pair(&mut self, p: &mut Parts<'_>, l: u32, r: u32, birth: u32) -> Result<()> {
        let (ls, rs) = (get4(p.sym, l as usize), get4(p.sym, r as usize));
        let a = p.esc.get(ls[0] as usize..(ls[0] as usize).saturating_add(ls[1] as usize));
        let b = p.esc.get(rs[0] as usize..(rs[0] as usize).saturating_add(rs[1] as usize));
        let (Some(a), Some(b)) = (a, b) else { return Err(Error::InvalidState) };
        let h = hash_parts(&[a, b" ", b]);
        self.put(p, h, [h, l, ls[1] << 16 | (rs[1] & 0xffff), birth])
    }

    /// Whether table entry `e` spells the merge `t` (left side `split` bytes).
    fn spells(p: &Parts<'_>, e: &[u32; 4], t: &[u8], split: usize) -> bool {
        let (ll, rl) = ((e[2] >> 16) as usize, (e[2] & 0xffff) as usize);
        if ll != split || split.saturating_add(1).saturating_add(rl) != t.len() {
            return false;
        }
        let off = get4(p.sym, e[1] as usize)[0] as usize;
        let text = p.esc.get(off..off.saturating_add(ll).saturating_add(rl));
        let (Some(text), Some(a), Some(b)) = (text, t.get(..split), t.get(split.saturating_add(1)..)) else {
            return false;
        };
        text.get(..ll) == Some(a) && text.get(ll..) == Some(b)
    }

    /// Whether the pair of entry `e` is a current pair (its left symbol and right neighbour
    /// still have the lengths it was made with).
    fn live(p: &Parts<'_>, e: &[u32; 4]) -> bool {
        let ls = get4(p.sym, e[1] as usize);
        ls[1] == e[2] >> 16 && ls[3] != NONE && get4(p.sym, ls[3] as usize)[1] == e[2] & 0xffff
    }

    /// Merges symbol `l` with its right neighbour; the new pairs are born at `rank`.
    fn apply(&mut self, p: &mut Parts<'_>, l: u32, rank: u32) -> Result<()> {
        let ls = get4(p.sym, l as usize);
        let rs = get4(p.sym, ls[3] as usize);
        let after = rs[3];
        if let Some(x) = p.sym.get_mut(l as usize) {
            x[1] = ls[1].saturating_add(rs[1]);
            x[3] = after;
        }
        if let Some(y) = p.sym.get_mut(ls[3] as usize) {
            y[1] = 0;
        }
        if let Some(z) = p.sym.get_mut(after as usize) {
            z[2] = l;
        }
        if ls[2] != NONE {
            self.insert_pair(p, ls[2], l, rank)?;
        }
        if after != NONE {
            self.insert_pair(p, l, after, rank)?;
        }
        Ok(())
    }

    /// The three kinds of pass over the merges (the phase tells which).
    fn merge_pass<S: Source + ?Sized>(
        &mut self,
        p: &mut Parts<'_>,
        scratch: &mut [u8],
        io: &mut S,
        cursor: Cursor,
        left: &mut u64,
    ) -> Result<()> {
        let mut cursor = self.start_pass(cursor);
        let merges = self.merge_array()?;
        let cap = p.table.len();
        let mut win = FileWindow::resume(scratch, self.held)?;
        let phase = self.phase;
        loop {
            if let (Phase::Verify(_), Some(max)) = (phase, self.max_birth) {
                // No pair was born after the latest birth: nothing more to check.
                if cursor.index >= max {
                    self.held = win.held();
                    break;
                }
            }
            if matches!(phase, Phase::Exact(_)) && self.unhit == 0 {
                self.held = win.held();
                break;
            }
            let next = cursor.next(&merges, io, &mut win);
            if next.is_err() {
                self.held = (0, 0);
            }
            let Some((rank, entry)) = next? else {
                self.held = win.held();
                break;
            };
            self.stats.entries = self.stats.entries.saturating_add(1);
            let mut work = 1u64;
            let t = match entry {
                Entry::Bytes(t) => t,
                Entry::Long => &[],
            };
            if let Some(split) = merge_split(t) {
                let h = hash_parts(&[t]);
                let mut at = home(h, cap);
                let mut hits = 0usize;
                for _ in 0..cap {
                    let e = p.table.get(at).copied().unwrap_or([0, NONE, 0, 0]);
                    if e[1] == NONE {
                        break;
                    }
                    work = work.saturating_add(1);
                    if e[0] == h && Scan::spells(p, &e, t, split) {
                        match phase {
                            Phase::Verify(_) if e[3] != NONE && rank < e[3] => {
                                let s = p.aux.get(e[1] as usize).copied().unwrap_or(0) as usize;
                                if let Some(k) = p.kinds.get_mut(s) {
                                    *k |= VIOLATED;
                                }
                            }
                            Phase::Verify(_) => {}
                            _ if Scan::live(p, &e) => {
                                if let Some(slot) = p.next.get_mut(hits) {
                                    *slot = e[1];
                                    hits = hits.saturating_add(1);
                                }
                            }
                            _ => {}
                        }
                    }
                    at = at.saturating_add(1);
                    if at >= cap {
                        at = 0;
                    }
                }
                if hits > 0 {
                    work = work.saturating_add(hits as u64);
                    self.take_hits(p, hits, rank, split, t.len())?;
                }
            }
            spend(left, work);
            if *left == 0 {
                self.held = win.held();
                self.phase = match phase {
                    Phase::Merge(_) => Phase::Merge(cursor),
                    Phase::Verify(_) => Phase::Verify(cursor),
                    _ => Phase::Exact(cursor),
                };
                return Ok(());
            }
        }
        self.end_merge_pass(p, phase)
    }

    /// Applies (or, for exact words, records) the hits of merge `rank`, left to right.
    fn take_hits(
        &mut self,
        p: &mut Parts<'_>,
        hits: usize,
        rank: u32,
        split: usize,
        len: usize,
    ) -> Result<()> {
        let lens = (split as u32) << 16 | (len.saturating_sub(split).saturating_sub(1) as u32 & 0xffff);
        let list = p.next.get_mut(..hits).unwrap_or_default();
        list.sort_unstable();
        for j in 0..hits {
            let l = p.next.get(j).copied().unwrap_or(NONE);
            // An earlier hit may have merged this one away.
            if !Scan::live(p, &[0, l, lens, 0]) {
                continue;
            }
            let s = p.aux.get(l as usize).copied().unwrap_or(0) as usize;
            let kind = p.kinds.get(s).copied().unwrap_or(0);
            if kind & EXACT == 0 {
                self.apply(p, l, rank)?;
                self.max_birth = Some(self.max_birth.map_or(rank, |m| m.max(rank)));
            } else if kind & (HIT | FINISHED) == 0 {
                // The word's lowest rank, leftmost: merged when the pass ends. (A word start
                // has no predecessor: its `prev` holds the hit meanwhile.)
                if let Some(k) = p.kinds.get_mut(s) {
                    *k |= HIT;
                }
                if let Some(x) = p.sym.get_mut(s) {
                    x[2] = l;
                }
                self.unhit = self.unhit.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// The end of the symbols of the word starting at symbol `s`.
    fn word_end(&self, p: &Parts<'_>, s: usize) -> usize {
        let mut j = s.saturating_add(1);
        while j < self.n_sym && p.kinds.get(j).is_some_and(|&k| k & (START | SPECIAL) == 0) {
            j = j.saturating_add(1);
        }
        j
    }

    /// Makes the word at symbol `s` bytes again, with its first pairs.
    fn reset_word(&mut self, p: &mut Parts<'_>, s: usize) -> Result<()> {
        let end = self.word_end(p, s);
        for i in s..end {
            let off = get4(p.sym, i)[0];
            let next_off = if i.saturating_add(1) < self.n_sym {
                get4(p.sym, i.saturating_add(1))[0]
            } else {
                self.esc_len as u32
            };
            let prev = if i == s { NONE } else { (i as u32).saturating_sub(1) };
            let next = if i.saturating_add(1) == end { NONE } else { (i as u32).saturating_add(1) };
            *p.sym.get_mut(i).ok_or(Error::InvalidState)? = [off, next_off.saturating_sub(off), prev, next];
        }
        for i in s.saturating_add(1)..end {
            self.insert_pair(p, (i as u32).saturating_sub(1), i as u32, NONE)?;
        }
        Ok(())
    }

    fn end_merge_pass(&mut self, p: &mut Parts<'_>, phase: Phase) -> Result<()> {
        match phase {
            Phase::Merge(_) => {
                self.phase = match self.max_birth {
                    Some(_) => Phase::Verify(Cursor::new(&self.merge_array()?)),
                    None => Phase::Vocab(Cursor::new(&self.vocab.tokens())),
                };
            }
            Phase::Verify(_) => {
                // Redo the marked words exactly.
                self.clear_table(p);
                let mut s = 0usize;
                while s < self.n_sym {
                    let end = self.word_end(p, s);
                    let kind = p.kinds.get(s).copied().unwrap_or(0);
                    if kind & VIOLATED != 0 {
                        if let Some(k) = p.kinds.get_mut(s) {
                            *k = START | EXACT;
                        }
                        self.reset_word(p, s)?;
                        self.pending = self.pending.saturating_add(1);
                        self.stats.exact_words = self.stats.exact_words.saturating_add(1);
                    }
                    s = end;
                }
                self.next_exact_pass()?;
            }
            _ => {
                // Merge each exact word's hit; a word without one is finished.
                let mut s = 0usize;
                while s < self.n_sym {
                    let end = self.word_end(p, s);
                    let kind = p.kinds.get(s).copied().unwrap_or(0);
                    if kind & EXACT != 0 && kind & FINISHED == 0 {
                        if kind & HIT != 0 {
                            let l = get4(p.sym, s)[2];
                            if let Some(x) = p.sym.get_mut(s) {
                                x[2] = NONE;
                            }
                            if let Some(k) = p.kinds.get_mut(s) {
                                *k &= !HIT;
                            }
                            self.apply(p, l, NONE)?;
                        } else {
                            if let Some(k) = p.kinds.get_mut(s) {
                                *k |= FINISHED;
                            }
                            self.pending = self.pending.saturating_sub(1);
                        }
                    }
                    s = end;
                }
                self.next_exact_pass()?;
            }
        }
        Ok(())
    }

    fn next_exact_pass(&mut self) -> Result<()> {
        self.unhit = self.pending;
        self.phase = if self.pending > 0 {
            Phase::Exact(Cursor::new(&self.merge_array()?))
        } else {
            Phase::Vocab(Cursor::new(&self.vocab.tokens()))
        };
        Ok(())
    }

    // ---- Vocab pass ----

    /// Puts every final symbol (and, Llama 3, every word of two bytes or more) in the table.
    fn piece_table(&mut self, p: &mut Parts<'_>) -> Result<()> {
        self.clear_table(p);
        p.singles.fill(NONE);
        let mut s = 0usize;
        while s < self.n_sym {
            let end = self.word_end(p, s);
            if p.kinds.get(s).is_some_and(|&k| k & SPECIAL == 0) {
                if self.llama3() && end.saturating_sub(s) >= 2 {
                    let off = get4(p.sym, s)[0] as usize;
                    let stop = if end < self.n_sym { get4(p.sym, end)[0] as usize } else { self.esc_len };
                    let h = hash_parts(&[p.esc.get(off..stop).unwrap_or_default()]);
                    if let Some(a) = p.aux.get_mut(s) {
                        *a = NONE;
                    }
                    self.put(p, h, [h, s as u32, WHOLE | (stop.saturating_sub(off) as u32), 0])?;
                }
                for i in s..end {
                    let [off, len, _, next] = get4(p.sym, i);
                    if len == 0 {
                        continue;
                    }
                    if let Some(x) = p.sym.get_mut(i) {
                        *x = [off, len, NONE, next];
                    }
                    let h = hash_parts(&[p
                        .esc
                        .get(off as usize..(off as usize).saturating_add(len as usize))
                        .unwrap_or_default()]);
                    self.put(p, h, [h, i as u32, len, 0])?;
                }
            }
            s = end;
        }
        Ok(())
    }

    fn vocab_pass<S: Source + ?Sized>(
        &mut self,
        p: &mut Parts<'_>,
        scratch: &mut [u8],
        io: &mut S,
        cursor: Cursor,
        left: &mut u64,
    ) -> Result<()> {
        if cursor.index == 0 {
            self.piece_table(p)?;
            spend(left, (self.n_sym / 16) as u64);
        }
        let mut cursor = self.start_pass(cursor);
        let tokens = self.vocab.tokens();
        let cap = p.table.len();
        let mut win = FileWindow::resume(scratch, self.held)?;
        loop {
            let next = cursor.next(&tokens, io, &mut win);
            if next.is_err() {
                self.held = (0, 0);
            }
            let Some((id, entry)) = next? else {
                self.held = win.held();
                self.phase = Phase::Emit { sym: 0 };
                return Ok(());
            };
            self.stats.entries = self.stats.entries.saturating_add(1);
            let mut work = 1u64;
            if let Entry::Bytes(e) = entry {
                if let [b] = e {
                    if let Some(slot) = p.singles.get_mut(usize::from(*b)) {
                        *slot = id;
                    }
                }
                if !e.is_empty() {
                    let h = hash_parts(&[e]);
                    let mut at = home(h, cap);
                    for _ in 0..cap {
                        let x = p.table.get(at).copied().unwrap_or([0, NONE, 0, 0]);
                        if x[1] == NONE {
                            break;
                        }
                        work = work.saturating_add(1);
                        let len = (x[2] & !WHOLE) as usize;
                        if x[0] == h && len == e.len() {
                            let off = get4(p.sym, x[1] as usize)[0] as usize;
                            if p.esc.get(off..off.saturating_add(len)) == Some(e) {
                                if x[2] & WHOLE != 0 {
                                    if let Some(a) = p.aux.get_mut(x[1] as usize) {
                                        *a = id;
                                    }
                                } else if let Some(s) = p.sym.get_mut(x[1] as usize) {
                                    s[2] = id;
                                }
                            }
                        }
                        at = at.saturating_add(1);
                        if at >= cap {
                            at = 0;
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
        self.phase = Phase::Vocab(cursor);
        Ok(())
    }

    // ---- Output ----

    fn emit_batch(&mut self, p: &mut Parts<'_>, out: &mut [u32], mut i: usize, left: &mut u64) -> Result<()> {
        while *left > 0 {
            if i >= self.n_sym {
                self.ws = self.batch_end;
                self.phase = Phase::Plan;
                return Ok(());
            }
            spend(left, 1);
            let kind = p.kinds.get(i).copied().unwrap_or(0);
            let [off, len, id, _] = get4(p.sym, i);
            if kind & SPECIAL != 0 {
                if !self.emit(out, p.aux.get(i).copied().unwrap_or(0))? {
                    return self.finish(out);
                }
                i = i.saturating_add(1);
                continue;
            }
            if kind & START != 0 && self.llama3() {
                let end = self.word_end(p, i);
                let whole = p.aux.get(i).copied().unwrap_or(NONE);
                if end.saturating_sub(i) >= 2 && whole != NONE {
                    if !self.emit(out, whole)? {
                        return self.finish(out);
                    }
                    i = end;
                    continue;
                }
            }
            if len > 0 {
                if id != NONE {
                    if !self.emit(out, id)? {
                        return self.finish(out);
                    }
                } else {
                    // No token: the one-byte entries of its bytes.
                    let bytes = p.esc.get(off as usize..(off as usize).saturating_add(len as usize));
                    for b in bytes.unwrap_or_default() {
                        let one = p.singles.get(usize::from(*b)).copied().unwrap_or(NONE);
                        if one != NONE && !self.emit(out, one)? {
                            return self.finish(out);
                        }
                    }
                }
            }
            i = i.saturating_add(1);
        }
        self.phase = Phase::Emit { sym: i };
        Ok(())
    }

    /// Appends a piece. `Ok(false)` when the output is full and truncation is on.
    fn emit(&mut self, out: &mut [u32], id: u32) -> Result<bool> {
        self.ids.push(out, id)
    }

    /// Writes EOS when it is added, and stops.
    fn finish(&mut self, out: &mut [u32]) -> Result<()> {
        self.ids.close(out)?;
        self.phase = Phase::Done;
        Ok(())
    }
}
