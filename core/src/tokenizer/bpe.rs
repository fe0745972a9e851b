//! Byte-level BPE tokenizing of `"gpt2"` models with the Qwen2 or Llama 3 pre-tokenizer exactly
//! as llama.cpp's `llm_tokenizer_bpe_session` does it, a bounded amount of work per step, in
//! caller memory.
//!
//! # Rules (llama.cpp `llama_vocab::impl::tokenize`, `LLAMA_VOCAB_TYPE_BPE`)
//! 1. Special tokens are cut out of the raw text first ([`special`](super::special)): control and
//!    unknown tokens when [`ModelOptions::parse_special`], user-defined tokens always.
//! 2. Each remaining fragment is split into words by the Qwen2 or Llama 3 pattern
//!    ([`bpe_split`](super::bpe_split)). Llama 3 (llama.cpp's `ignore_merges`): a word that is a
//!    token is that token, without merging.
//! 3. Each word's UTF-8 bytes are written as GPT-2's byte chars (`Ġ` for a space, …); every char
//!    is a symbol. The adjacent pair whose tokens have the lowest merge rank (the leftmost on
//!    ties) is merged, and the new symbol's pairs with its neighbours become candidates; until no
//!    pair has a merge. A symbol is its token; one that is no token is written as the one-byte
//!    entries of its bytes (those that exist).
//! 4. BOS and EOS around it all per the file (`add_bos_token`, `add_eos_token`) when
//!    [`ModelOptions::add_special`].
//!
//! # Words and clusters
//! Special tokens are found by looking every position up in the [`TokenIndex`], a *cluster* at a
//! time: the occurrences that overlap one another, among which llama.cpp's choice is made. Words
//! are merged one at a time; a word must fit the window ([`BpeTokenize::window_bytes`] bytes of
//! raw text), as must a cluster, else the step fails with [`Error::BufferTooSmall`].
//!
//! Merges are looked up by the token ids of their two sides (the [`TokenIndex`] keeps them so);
//! llama.cpp looks them up by text, which differs only for a merge whose sides or result are no
//! token (none in the Qwen2 vocab: every merge joins two tokens into a token).
//!
//! With [`ModelLookup::Scan`] the same rules are applied without an index by the `bpe_scan`
//! module: a batch of text at a time, streaming the merges and the tokens from the file.

use super::bpe_scan::{bpe_scan_bytes, Scan, ScanStats};
use super::bpe_split::{byte_char, word_end};
use super::model_vocab::{ModelKind, ModelVocab, PreTokenizer};
use super::special::{choose, Candidate};
use super::spm::{ModelLookup, ModelOptions};
use super::token_index::TokenIndex;
use super::{Step, MIN_MODEL_WINDOW};
use crate::error::{Error, InputError, Name, Result, Unsupported};
use crate::io::Source;

const NONE: u32 = u32::MAX;

/// Bytes per window byte: the GPT-2 chars of a word (2), its symbols (5 words), the bigram heap
/// (3 entries of 4 words), cluster candidates (one per 2 bytes, 3 words) and the cluster's
/// occupied map (1).
const PER_BYTE: usize = 2 + 5 * 4 + 3 * 4 * 4 + 3 * 4 / 2 + 1;
/// Bytes lost to aligning the caller's buffer to 4 bytes, and to rounding.
const SLACK: usize = 7;

/// Bytes of work memory [`BpeTokenize`] needs for words of up to `window` bytes:
/// `77 × window + 7` with an index (≈ 315 KB for a 4 KiB window), [`bpe_scan_bytes`] in scan
/// mode (`lookup_scan`; ≈ 420 KB for 4 KiB, 44 KB for 256). Saturates instead of overflowing.
pub const fn bpe_work_bytes(lookup_scan: bool, window: usize) -> usize {
    if lookup_scan {
        return bpe_scan_bytes(window);
    }
    window.saturating_mul(PER_BYTE).saturating_add(SLACK)
}

fn window_for(aligned: usize) -> usize {
    (aligned.saturating_sub(3) / PER_BYTE).min(super::MAX_MODEL_WINDOW)
}

/// The work memory, split into its arrays.
struct Parts<'b> {
    sym: &'b mut [[u32; 5]],
    heap: &'b mut [[u32; 4]],
    cand: &'b mut [Candidate],
    chars: &'b mut [u8],
    occ: &'b mut [u8],
}

/// The first `n` elements of `rest`, which keeps the others (`InvalidState` when too short).
pub(super) fn take<'b, T>(rest: &mut &'b mut [T], n: usize) -> Result<&'b mut [T]> {
    let all = core::mem::take(rest);
    let (head, tail) = all.split_at_mut_checked(n).ok_or(Error::InvalidState)?;
    *rest = tail;
    Ok(head)
}

/// [`take`] of `n` arrays of `N` words.
pub(super) fn take_n<'b, const N: usize>(rest: &mut &'b mut [u32], n: usize) -> Result<&'b mut [[u32; N]]>
where
    [u32; N]: bytemuck::Pod,
{
    let words = take(rest, n.checked_mul(N).ok_or(Error::InvalidState)?)?;
    bytemuck::try_cast_slice_mut(words).map_err(|_| Error::InvalidState)
}

fn carve(mem: &mut [u8], w: usize) -> Result<Parts<'_>> {
    let (_, mut words, _) = bytemuck::pod_align_to_mut::<u8, u32>(mem);
    let sym = take_n::<5>(&mut words, w)?;
    let heap = take_n::<4>(&mut words, w.saturating_mul(3))?;
    let cand = take_n::<3>(&mut words, w / 2)?;
    let mut bytes: &mut [u8] = bytemuck::cast_slice_mut(words);
    let chars = take(&mut bytes, w.saturating_mul(2))?;
    let occ = take(&mut bytes, w)?;
    Ok(Parts { sym, heap, cand, chars, occ })
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Looking for special tokens from raw byte `at`; `cluster` is the start of the cluster being
    /// collected, if any.
    Find {
        at: usize,
        cluster: Option<usize>,
    },
    /// Splitting the fragment `[frag_start, frag_end)` into words from raw byte `at`.
    Words {
        at: usize,
    },
    /// Making the symbols and first bigrams of the word that ends at raw byte `end`; `at` is the
    /// next raw byte.
    Init {
        end: usize,
        at: usize,
        n_sym: usize,
        heap: usize,
    },
    /// Merging the current word's bigrams; `heap` entries are live.
    Merge {
        end: usize,
        heap: usize,
    },
    /// Writing the current word's ids from symbol `sym`; the word ends at raw byte `end`.
    Emit {
        end: usize,
        sym: u32,
    },
    Done,
    Failed(Error),
}

/// The ids written so far: BOS (when added), the pieces, and EOS at the end.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ids {
    pub(super) n_out: usize,
    n_pieces: usize,
    max_pieces: usize,
    truncate: bool,
    max_tokens: usize,
    /// EOS, when it is added.
    eos: Option<u32>,
}

impl Ids {
    /// Writes BOS to `out` when the options and the vocab add it. `None` when `max_tokens`
    /// cannot hold BOS and EOS.
    pub(super) fn new(vocab: &ModelVocab, opts: &ModelOptions, out: &mut [u32]) -> Option<Ids> {
        let bos = opts.add_special && vocab.add_bos();
        let eos = opts.add_special && vocab.add_eos();
        let fixed = usize::from(bos).saturating_add(usize::from(eos));
        if opts.max_tokens < fixed {
            return None;
        }
        let mut n_out = 0;
        if bos {
            if let Some(first) = out.first_mut() {
                *first = vocab.bos().unwrap_or(0);
                n_out = 1;
            }
        }
        Some(Ids {
            n_out,
            n_pieces: 0,
            max_pieces: opts.max_tokens.saturating_sub(fixed),
            truncate: opts.truncate,
            max_tokens: opts.max_tokens,
            eos: if eos { Some(vocab.eos().unwrap_or(0)) } else { None },
        })
    }

    /// Appends a piece. `Ok(false)` when the output is full and truncation is on.
    pub(super) fn push(&mut self, out: &mut [u32], id: u32) -> Result<bool> {
        if self.n_pieces >= self.max_pieces {
            if self.truncate {
                return Ok(false);
            }
            let max = self.max_tokens;
            return Err(Error::Input(InputError::TooManyTokens { tokens: max.saturating_add(1), max }));
        }
        *out.get_mut(self.n_out).ok_or(Error::InvalidState)? = id;
        self.n_out = self.n_out.saturating_add(1);
        self.n_pieces = self.n_pieces.saturating_add(1);
        Ok(true)
    }

    /// Writes EOS when it is added.
    pub(super) fn close(&mut self, out: &mut [u32]) -> Result<()> {
        if let Some(eos) = self.eos {
            *out.get_mut(self.n_out).ok_or(Error::InvalidState)? = eos;
            self.n_out = self.n_out.saturating_add(1);
        }
        Ok(())
    }
}

/// Everything but the borrowed buffers.
#[derive(Debug, Clone, Copy)]
struct State<'i> {
    vocab: ModelVocab,
    ix: TokenIndex<'i>,
    w: usize,
    opts: ModelOptions,
    ids: Ids,
    /// Raw bytes whose ids are written or being made.
    consumed: usize,
    /// The fragment of raw text being split.
    frag_start: usize,
    frag_end: usize,
    /// The chosen special tokens of the current cluster (in `cand`, relative to `cluster_start`),
    /// how many there are, the next one, and where the cluster's occurrences end.
    cluster_start: usize,
    n_chosen: usize,
    next_special: usize,
    extent: usize,
    n_cand: usize,
    phase: Phase,
}

/// Index mode or scan mode.
// Held in place by the tokenizer (no allocator to box the large variant in).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Engine<'i> {
    Index(State<'i>),
    Scan(Scan),
}

/// Tokenizes one text with a byte-level BPE vocab, a bounded amount of work per
/// [`BpeTokenize::step`].
///
/// ```text
/// let mut t = BpeTokenize::new(&vocab, ModelLookup::Index(ix), text, &mut work, &mut ids, options)?;
/// while t.step(&mut io, 4096)? == Step::Pending { /* let the host breathe */ }
/// let ids = t.ids(); // BOS … EOS as the options and the file ask
/// ```
///
/// All memory is the caller's: `work` (see [`bpe_work_bytes`]) and `out` (at least
/// `options.max_tokens` ids). Errors poison the machine. Dropping it at any point is fine.
#[derive(Debug)]
pub struct BpeTokenize<'a> {
    eng: Engine<'a>,
    text: &'a str,
    mem: &'a mut [u8],
    out: &'a mut [u32],
}

impl<'a> BpeTokenize<'a> {
    /// Prepares to tokenize `text`. O(1); writes BOS when it is added.
    ///
    /// Errors: [`Unsupported::TokenizerModel`] for a vocab that is not BPE with the Qwen2 or
    /// Llama 3 pre-tokenizer; [`Error::BufferTooSmall`] when `out` is
    /// shorter than `options.max_tokens` or `max_tokens` cannot hold BOS and EOS (counted in ids),
    /// or when `mem` holds less than a [`MIN_MODEL_WINDOW`] window (in bytes; see
    /// [`bpe_work_bytes`] for the mode);
    /// [`Error::PlanMismatch`] for an index of another vocab.
    pub fn new(
        vocab: &ModelVocab,
        lookup: ModelLookup<'a>,
        text: &'a str,
        mem: &'a mut [u8],
        out: &'a mut [u32],
        options: ModelOptions,
    ) -> Result<Self> {
        match vocab.kind() {
            ModelKind::Bpe(PreTokenizer::Qwen2 | PreTokenizer::Llama3) => {}
            ModelKind::Bpe(PreTokenizer::Gpt2) => return Err(unsupported("gpt2/gpt-2")),
            ModelKind::Spm => return Err(unsupported("llama")),
        }
        if let ModelLookup::Index(ix) = lookup {
            if ix.tokens() != vocab.tokens() {
                return Err(Error::PlanMismatch);
            }
        }
        if out.len() < options.max_tokens {
            return Err(Error::BufferTooSmall { needed: options.max_tokens, given: out.len() });
        }
        let fixed = usize::from(options.add_special && vocab.add_bos())
            .saturating_add(usize::from(options.add_special && vocab.add_eos()));
        let aligned = bytemuck::pod_align_to::<u8, u32>(mem).1.len().saturating_mul(4);
        let scan = matches!(lookup, ModelLookup::Scan);
        let too_small =
            Error::BufferTooSmall { needed: bpe_work_bytes(scan, MIN_MODEL_WINDOW), given: mem.len() };
        let fits = Error::BufferTooSmall { needed: fixed, given: options.max_tokens };
        let ids = Ids::new(vocab, &options, out).ok_or(fits)?;
        let w = match lookup {
            ModelLookup::Index(_) => window_for(aligned),
            ModelLookup::Scan => super::bpe_scan::window_for(aligned),
        };
        if w < MIN_MODEL_WINDOW {
            return Err(too_small);
        }
        let ix = match lookup {
            ModelLookup::Index(ix) => ix,
            ModelLookup::Scan => {
                let st = Scan::new(vocab, w, options, ids);
                return Ok(BpeTokenize { eng: Engine::Scan(st), text, mem, out });
            }
        };
        carve(mem, w)?;
        Ok(BpeTokenize {
            eng: Engine::Index(State {
                vocab: *vocab,
                ix,
                w,
                opts: options,
                ids,
                consumed: 0,
                frag_start: 0,
                frag_end: 0,
                cluster_start: 0,
                n_chosen: 0,
                next_special: 0,
                extent: 0,
                n_cand: 0,
                phase: Phase::Find { at: 0, cluster: None },
            }),
            text,
            mem,
            out,
        })
    }

    /// Does at most about `budget` units of work (at least one) and returns [`Step::Pending`]
    /// or [`Step::Done`] (the ids are complete).
    ///
    /// A unit is one raw byte searched for special tokens (plus one per lookup there), one byte
    /// of a word made a symbol, one bigram pushed or popped, or one id written; splitting off a
    /// word costs one unit per 64 bytes it reads. Index mode never touches `io`.
    ///
    /// Scan mode reads the vocab and the merges from `io` (the same file every step) through a
    /// [`BPE_SCAN_SCRATCH`](super::BPE_SCAN_SCRATCH)-byte buffer kept in the work memory; a unit
    /// is one entry streamed plus one per hash-table slot or text position it is compared at, one
    /// merge applied or one id written. A step may overrun by one entry's comparisons, or by the
    /// O(window) layout of a batch (charged at one unit per 64 bytes).
    ///
    /// Errors: [`InputError::TooManyTokens`] when truncation is off and the text needs more
    /// than `max_tokens`; [`Error::BufferTooSmall`] when a word or a cluster of special-token
    /// occurrences does not fit the window; scan mode: I/O and [`crate::Malformed`] errors of the
    /// streams.
    pub fn step<S: Source + ?Sized>(&mut self, io: &mut S, budget: u32) -> Result<Step> {
        let st = match &mut self.eng {
            Engine::Index(st) => st,
            Engine::Scan(sc) => {
                let done = sc.step(self.mem, self.text, self.out, io, budget)?;
                return Ok(if done { Step::Done } else { Step::Pending });
            }
        };
        match st.phase {
            Phase::Done => return Ok(Step::Done),
            Phase::Failed(e) => return Err(e),
            _ => {}
        }
        let given = self.mem.len();
        let mut parts = carve(self.mem, st.w)?;
        let mut left = u64::from(budget.max(1));
        match st.advance(&mut parts, self.text, self.out, &mut left, given) {
            Ok(()) if matches!(st.phase, Phase::Done) => Ok(Step::Done),
            Ok(()) => Ok(Step::Pending),
            Err(e) => {
                st.phase = Phase::Failed(e);
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
        self.out.get(..self.n_out()).unwrap_or_default()
    }

    fn n_out(&self) -> usize {
        match &self.eng {
            Engine::Index(st) => st.ids.n_out,
            Engine::Scan(sc) => sc.ids.n_out,
        }
    }

    /// Gives the buffers back: `(out, number of ids written, work memory)`.
    pub fn into_parts(self) -> (&'a mut [u32], usize, &'a mut [u8]) {
        let n = self.n_out();
        (self.out, n, self.mem)
    }

    /// Whether a step has returned [`Step::Done`].
    pub fn is_done(&self) -> bool {
        match &self.eng {
            Engine::Index(st) => matches!(st.phase, Phase::Done),
            Engine::Scan(sc) => sc.is_done(),
        }
    }

    /// Raw text bytes tokenized so far (index mode: through the word or special token being
    /// written; scan mode: up to the batch being tokenized), and the text's length.
    pub fn progress(&self) -> (u64, u64) {
        let at = match &self.eng {
            _ if self.is_done() => self.text.len(),
            Engine::Index(st) => st.consumed,
            Engine::Scan(sc) => sc.progress(self.text.len()),
        };
        (at as u64, self.text.len() as u64)
    }

    /// Bytes of raw text the longest word may have (chosen from the work memory's size).
    pub fn window_bytes(&self) -> usize {
        match &self.eng {
            Engine::Index(st) => st.w,
            Engine::Scan(sc) => sc.window(),
        }
    }

    /// Scan mode: batches, passes and entries streamed so far (`None` in index mode).
    pub fn scan_stats(&self) -> Option<ScanStats> {
        match &self.eng {
            Engine::Index(_) => None,
            Engine::Scan(sc) => Some(sc.stats),
        }
    }
}

fn unsupported(what: &str) -> Error {
    Error::Unsupported(Unsupported::TokenizerModel(Name::new(what)))
}

fn spend(left: &mut u64, n: u64) {
    *left = left.saturating_sub(n);
}

/// Heap order: the lower rank first, then the lower left symbol.
fn before(a: &[u32; 4], b: &[u32; 4]) -> bool {
    a[0] < b[0] || (a[0] == b[0] && a[1] < b[1])
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
    let last = len.checked_sub(1)?;
    let top = *heap.first()?;
    heap.swap(0, last);
    let mut i = 0usize;
    loop {
        let l = i.saturating_mul(2).saturating_add(1);
        let mut best = i;
        for c in [l, l.saturating_add(1)] {
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

impl State<'_> {
    fn advance(
        &mut self,
        p: &mut Parts<'_>,
        text: &str,
        out: &mut [u32],
        left: &mut u64,
        mem_len: usize,
    ) -> Result<()> {
        while *left > 0 {
            match self.phase {
                Phase::Find { at, cluster } => self.find(p, text, at, cluster, left, mem_len)?,
                Phase::Words { at } => self.words(p, out, text, at, left, mem_len)?,
                Phase::Init { end, at, n_sym, heap } => self.init(p, text, end, (at, n_sym, heap), left)?,
                Phase::Merge { end, heap } => self.merge(p, end, heap, left)?,
                Phase::Emit { end, sym } => self.emit_word(p, out, end, sym, left)?,
                Phase::Done | Phase::Failed(_) => return Ok(()),
            }
        }
        Ok(())
    }

    fn too_small(&self, mem_len: usize) -> Error {
        Error::BufferTooSmall { needed: bpe_work_bytes(false, self.w.saturating_mul(2)), given: mem_len }
    }

    // ---- Special tokens ----

    /// Looks for the next cluster of special-token occurrences from raw byte `at`.
    fn find(
        &mut self,
        p: &mut Parts<'_>,
        text: &str,
        mut at: usize,
        mut cluster: Option<usize>,
        left: &mut u64,
        mem_len: usize,
    ) -> Result<()> {
        let lens = self.vocab.special_lens(self.opts.parse_special);
        let bytes = text.as_bytes();
        while *left > 0 {
            let cluster_done = cluster.is_some() && at >= self.extent;
            if cluster_done || at >= text.len() || (lens == 0 && cluster.is_none()) {
                return self.close_cluster(p, text, cluster, mem_len);
            }
            let b = bytes.get(at).copied().unwrap_or(0);
            spend(left, 1);
            if text.is_char_boundary(at) && self.vocab.special_starts_with(b) {
                for len in 1..=64usize {
                    if lens >> len.saturating_sub(1) & 1 == 0 || at.saturating_add(len) > text.len() {
                        continue;
                    }
                    spend(left, 1);
                    let Some(piece) = bytes.get(at..at.saturating_add(len)) else { continue };
                    let Some(id) = self.ix.lookup(piece) else { continue };
                    if !self.ix.special(id).matched(self.opts.parse_special) {
                        continue;
                    }
                    let start = match cluster {
                        Some(start) => start,
                        None => {
                            cluster = Some(at);
                            self.extent = at;
                            self.n_cand = 0;
                            at
                        }
                    };
                    let Some(slot) = p.cand.get_mut(self.n_cand) else { return Err(self.too_small(mem_len)) };
                    *slot = [at.saturating_sub(start) as u32, len as u32, id];
                    self.n_cand = self.n_cand.saturating_add(1);
                    self.extent = self.extent.max(at.saturating_add(len));
                    if self.extent.saturating_sub(start) > p.occ.len() {
                        return Err(self.too_small(mem_len));
                    }
                }
            }
            at = at.saturating_add(1);
        }
        self.phase = Phase::Find { at, cluster };
        Ok(())
    }

    /// The cluster (or the text) is complete: choose its special tokens, then split the fragment
    /// before the first.
    fn close_cluster(
        &mut self,
        p: &mut Parts<'_>,
        text: &str,
        cluster: Option<usize>,
        mem_len: usize,
    ) -> Result<()> {
        let Some(start) = cluster else {
            self.n_chosen = 0;
            self.next_special = 0;
            self.frag_end = text.len();
            self.phase = Phase::Words { at: self.frag_start };
            return Ok(());
        };
        let span = self.extent.saturating_sub(start);
        let occ = p.occ.get_mut(..span).ok_or(self.too_small(mem_len))?;
        let n = choose(p.cand.get_mut(..self.n_cand).unwrap_or_default(), occ);
        self.cluster_start = start;
        self.n_chosen = n;
        self.next_special = 0;
        self.n_cand = 0;
        self.frag_end = self.special_at(p, 0).map_or(self.extent, |(pos, _, _)| pos);
        self.phase = Phase::Words { at: self.frag_start };
        Ok(())
    }

    /// Chosen special token `k` of the cluster: raw start, end and id.
    fn special_at(&self, p: &Parts<'_>, k: usize) -> Option<(usize, usize, u32)> {
        if k >= self.n_chosen {
            return None;
        }
        let &[pos, len, id] = p.cand.get(k)?;
        let start = self.cluster_start.saturating_add(pos as usize);
        Some((start, start.saturating_add(len as usize), id))
    }

    // ---- Words ----

    /// Splits off the next word of the fragment, or, at its end, writes the special token that
    /// ends it and moves on.
    fn words(
        &mut self,
        p: &Parts<'_>,
        out: &mut [u32],
        text: &str,
        at: usize,
        left: &mut u64,
        mem_len: usize,
    ) -> Result<()> {
        if at < self.frag_end {
            let frag = text.get(self.frag_start..self.frag_end).ok_or(Error::InvalidState)?;
            let rel = at.saturating_sub(self.frag_start);
            let digits = if self.llama3() { 3 } else { 1 };
            let end = word_end(frag, rel, self.w, digits).ok_or(self.too_small(mem_len))?;
            let end = self.frag_start.saturating_add(end.max(rel.saturating_add(1)));
            spend(left, (end.saturating_sub(at) / 64).saturating_add(1) as u64);
            self.consumed = end;
            self.phase = Phase::Init { end, at, n_sym: 0, heap: 0 };
            return Ok(());
        }
        spend(left, 1);
        // The fragment is done: the special token that ends it, if any, then the next fragment.
        let Some((_, special_end, id)) = self.special_at(p, self.next_special) else {
            return self.finish(out);
        };
        if !self.emit(out, id)? {
            return self.finish(out);
        }
        self.next_special = self.next_special.saturating_add(1);
        self.frag_start = special_end;
        self.consumed = special_end;
        self.phase = match self.special_at(p, self.next_special) {
            Some((next_start, _, _)) => {
                self.frag_end = next_start;
                Phase::Words { at: special_end }
            }
            None => Phase::Find { at: self.extent, cluster: None },
        };
        Ok(())
    }

    /// Makes the symbols of the word ending at raw byte `end` and pushes their bigrams, from
    /// `(at, n_sym, heap)`: the next raw byte, the symbols made and the live heap entries.
    fn init(
        &mut self,
        p: &mut Parts<'_>,
        text: &str,
        end: usize,
        (mut at, mut n_sym, mut heap): (usize, usize, usize),
        left: &mut u64,
    ) -> Result<()> {
        let bytes = text.as_bytes();
        while *left > 0 {
            if at >= end {
                self.phase = Phase::Merge { end, heap: self.whole_word(p, n_sym).unwrap_or(heap) };
                return Ok(());
            }
            let b = bytes.get(at).copied().ok_or(Error::InvalidState)?;
            let mut utf8 = [0u8; 4];
            let c = byte_char(b).encode_utf8(&mut utf8).as_bytes();
            let offset = match n_sym.checked_sub(1).and_then(|i| p.sym.get(i)) {
                Some(prev) => prev[0].saturating_add(prev[1]),
                None => 0,
            };
            let dst = p.chars.get_mut(offset as usize..(offset as usize).saturating_add(c.len()));
            dst.ok_or(Error::InvalidState)?.copy_from_slice(c);
            let id = self.ix.lookup(c).unwrap_or(NONE);
            let k = n_sym as u32;
            let prev = if n_sym == 0 { NONE } else { k.saturating_sub(1) };
            *p.sym.get_mut(n_sym).ok_or(Error::InvalidState)? = [offset, c.len() as u32, prev, NONE, id];
            if let Some(ps) = n_sym.checked_sub(1).and_then(|i| p.sym.get_mut(i)) {
                ps[3] = k;
            }
            heap = self.try_bigram(p, prev, k, heap)?;
            n_sym = n_sym.saturating_add(1);
            at = at.saturating_add(1);
            spend(left, 1);
        }
        self.phase = Phase::Init { end, at, n_sym, heap };
        Ok(())
    }

    fn llama3(&self) -> bool {
        self.vocab.kind() == ModelKind::Bpe(PreTokenizer::Llama3)
    }

    /// Llama 3 (llama.cpp's `ignore_merges`): a word of `n_sym` symbols that is a token is that
    /// token, unmerged. Makes it the only symbol and returns the empty heap; `None` otherwise.
    fn whole_word(&self, p: &mut Parts<'_>, n_sym: usize) -> Option<usize> {
        if !self.llama3() || n_sym < 2 {
            return None;
        }
        let last = *p.sym.get(n_sym.checked_sub(1)?)?;
        let len = last[0].checked_add(last[1])?;
        let id = self.ix.lookup(p.chars.get(..len as usize)?)?;
        *p.sym.first_mut()? = [0, len, NONE, NONE, id];
        Some(0)
    }

    /// Pushes the bigram of symbols `l` and `r` when their tokens have a merge.
    fn try_bigram(&self, p: &mut Parts<'_>, l: u32, r: u32, heap: usize) -> Result<usize> {
        if l == NONE || r == NONE {
            return Ok(heap);
        }
        let (Some(ls), Some(rs)) = (p.sym.get(l as usize), p.sym.get(r as usize)) else { return Ok(heap) };
        if ls[4] == NONE || rs[4] == NONE {
            return Ok(heap);
        }
        match self.ix.merge_rank(ls[4], rs[4]) {
            Some(rank) => heap_push(p.heap, heap, [rank, l, r, ls[1].saturating_add(rs[1])]),
            None => Ok(heap),
        }
    }

    /// Pops bigrams, lowest rank first, merging the ones still valid.
    fn merge(&mut self, p: &mut Parts<'_>, end: usize, mut heap: usize, left: &mut u64) -> Result<()> {
        while *left > 0 {
            let Some((top, rest)) = heap_pop(p.heap, heap) else {
                self.phase = Phase::Emit { end, sym: 0 };
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
            let merged = p.chars.get(ls[0] as usize..(ls[0] as usize).saturating_add(size as usize));
            let id = merged.and_then(|m| self.ix.lookup(m)).unwrap_or(NONE);
            let next = rs[3];
            if let Some(x) = p.sym.get_mut(l as usize) {
                x[1] = size;
                x[3] = next;
                x[4] = id;
            }
            if let Some(y) = p.sym.get_mut(r as usize) {
                y[1] = 0;
            }
            if let Some(z) = p.sym.get_mut(next as usize) {
                z[2] = l;
            }
            heap = self.try_bigram(p, ls[2], l, heap)?;
            heap = self.try_bigram(p, l, next, heap)?;
        }
        self.phase = Phase::Merge { end, heap };
        Ok(())
    }

    /// Writes the current word's ids from symbol `sym` on.
    fn emit_word(
        &mut self,
        p: &mut Parts<'_>,
        out: &mut [u32],
        end: usize,
        mut sym: u32,
        left: &mut u64,
    ) -> Result<()> {
        while *left > 0 {
            let Some(&[start, n, _, next, id]) = p.sym.get(sym as usize) else {
                self.phase = Phase::Words { at: end };
                return Ok(());
            };
            spend(left, 1);
            if id != NONE {
                if !self.emit(out, id)? {
                    return self.finish(out);
                }
            } else {
                // No token: the one-byte entries of its bytes.
                let bytes = p.chars.get(start as usize..(start as usize).saturating_add(n as usize));
                for b in bytes.unwrap_or_default().iter() {
                    if let Some(id) = self.ix.lookup(core::slice::from_ref(b)) {
                        if !self.emit(out, id)? {
                            return self.finish(out);
                        }
                    }
                }
            }
            sym = next;
        }
        self.phase = Phase::Emit { end, sym };
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
