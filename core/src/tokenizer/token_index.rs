//! The token index of an SPM or BPE vocab: every entry by its exact bytes, with its score and
//! special kind, and (BPE) every merge by its pair of token ids — in caller memory, O(1) lookups.
//!
//! Layout of the caller's buffer (after aligning it to 4 bytes), all u32 words first:
//! `slots [cap]` (open addressing, linear probing; 0 = empty, else id + 1), `spans [count + 1]`
//! (entry `id` is `keys[spans[id] .. spans[id + 1]]`), `scores [count]` (f32 bits; SPM only),
//! `merge_slots [mcap]` (rank + 1) and `pairs [2 × merges]` (left id, right id; BPE only); then the
//! bytes `kinds [count]` (special kind codes) and `keys`. `cap = n + n / 2 + 1` keeps the load
//! under 2/3.
//!
//! As in llama.cpp's `token_to_id`, an entry that occurs twice is found as its *last* id; a merge
//! that occurs twice keeps its *first* rank.

use super::index::{hash_parts, home};
use super::model_vocab::{Column, ModelKind, ModelVocab, Special, MAX_ENTRY_BYTES};
use super::vocab::{Cursor, Entry, FileWindow};
use super::Step;
use crate::error::{Error, Malformed, Result};
use crate::gguf::ArrayRef;
use crate::io::Source;

/// No id / no rank.
const NONE: u32 = u32::MAX;

fn capacity(n: u64) -> u64 {
    n.saturating_add(n / 2).saturating_add(1)
}

/// Upper bound of the key bytes: the array's bytes less the u64 length of each entry.
fn key_bytes(tokens: &ArrayRef) -> u64 {
    tokens.byte_len.saturating_sub(tokens.count.saturating_mul(8))
}

/// The sizes of the index's arrays.
#[derive(Debug, Clone, Copy)]
struct Shape {
    cap: usize,
    count: usize,
    scores: usize,
    mcap: usize,
    merges: usize,
    keys: usize,
}

impl Shape {
    fn of(vocab: &ModelVocab) -> Result<Shape> {
        let tokens = vocab.tokens();
        let overflow = Error::malformed(Malformed::Overflow, tokens.offset);
        let n = u64::from(vocab.count());
        let m = vocab.merges().map_or(0, |a| a.count);
        let keys = key_bytes(&tokens);
        let spm = vocab.kind() == ModelKind::Spm;
        let cast = |v: u64| usize::try_from(v).map_err(|_| overflow);
        Ok(Shape {
            cap: cast(capacity(n))?,
            count: cast(n)?,
            scores: if spm { cast(n)? } else { 0 },
            mcap: if m > 0 { cast(capacity(m))? } else { 0 },
            merges: cast(m)?,
            keys: cast(keys)?,
        })
    }

    fn words(&self) -> Option<usize> {
        self.cap
            .checked_add(self.count)?
            .checked_add(1)?
            .checked_add(self.scores)?
            .checked_add(self.mcap)?
            .checked_add(self.merges.checked_mul(2)?)
    }

    fn bytes(&self) -> Option<usize> {
        self.words()?.checked_mul(4)?.checked_add(self.count)?.checked_add(self.keys)?.checked_add(3)
    }
}

/// The arrays of the index, borrowed from the caller's buffer.
#[derive(Debug)]
struct Arrays<'m, W, B> {
    slots: W,
    spans: W,
    scores: W,
    merge_slots: W,
    pairs: W,
    kinds: B,
    keys: B,
    _m: core::marker::PhantomData<&'m ()>,
}

fn split_words<'a>(w: &mut &'a mut [u32], n: usize) -> Option<&'a mut [u32]> {
    let all = core::mem::take(w);
    let (a, b) = all.split_at_mut_checked(n)?;
    *w = b;
    Some(a)
}

fn carve_mut(mem: &mut [u8], s: Shape) -> Option<Arrays<'_, &mut [u32], &mut [u8]>> {
    let head = bytemuck::pod_align_to::<u8, u32>(mem).0.len();
    let (table, rest) = mem.get_mut(head..)?.split_at_mut_checked(s.words()?.checked_mul(4)?)?;
    let mut words: &mut [u32] = bytemuck::try_cast_slice_mut(table).ok()?;
    let (kinds, rest) = rest.split_at_mut_checked(s.count)?;
    let keys = rest.get_mut(..s.keys)?;
    Some(Arrays {
        slots: split_words(&mut words, s.cap)?,
        spans: split_words(&mut words, s.count.checked_add(1)?)?,
        scores: split_words(&mut words, s.scores)?,
        merge_slots: split_words(&mut words, s.mcap)?,
        pairs: split_words(&mut words, s.merges.checked_mul(2)?)?,
        kinds,
        keys,
        _m: core::marker::PhantomData,
    })
}

/// The token index: a borrowed view of a caller buffer filled by [`TokenIndexBuilder`]. Lookups
/// are pure memory operations. `Copy` (it only borrows).
#[derive(Debug, Clone, Copy)]
pub struct TokenIndex<'m> {
    slots: &'m [u32],
    spans: &'m [u32],
    scores: &'m [u32],
    merge_slots: &'m [u32],
    pairs: &'m [u32],
    kinds: &'m [u8],
    keys: &'m [u8],
    tokens: ArrayRef,
}

impl<'m> TokenIndex<'m> {
    /// Bytes of caller memory the index of `vocab` needs (3 of them alignment slack):
    /// `4 × (1.5 n + 1 + n + 1 [+ n for SPM scores] [+ 1.5 m + 1 + 2 m for m BPE merges]) + n +
    /// (token array bytes − 8 n)` — 690 930 bytes for Llama 2's 32 000 tokens, 6 247 537 for
    /// Gemma 3's 262 144.
    ///
    /// Errors: [`Malformed::Overflow`] (at the token array) when that does not fit `usize` or the
    /// keys exceed 4 GiB.
    pub fn bytes_needed(vocab: &ModelVocab) -> Result<usize> {
        let overflow = Error::malformed(Malformed::Overflow, vocab.tokens().offset);
        let s = Shape::of(vocab)?;
        if u32::try_from(s.keys).is_err() {
            return Err(overflow);
        }
        s.bytes().ok_or(overflow)
    }

    /// The index a finished [`TokenIndexBuilder`] left in `mem` for `vocab`, viewed again. O(1).
    ///
    /// `mem` must be the memory the builder of this vocab filled and finished; anything else gives
    /// wrong lookups (never a panic). Too short a buffer is [`Error::BufferTooSmall`].
    pub fn open(vocab: &ModelVocab, mem: &'m [u8]) -> Result<Self> {
        let needed = TokenIndex::bytes_needed(vocab)?;
        let too_small = Error::BufferTooSmall { needed, given: mem.len() };
        let s = Shape::of(vocab)?;
        let head = bytemuck::pod_align_to::<u8, u32>(mem).0.len();
        let words = s.words().ok_or(too_small)?;
        let (table, rest) =
            mem.get(head..).and_then(|m| m.split_at_checked(words.saturating_mul(4))).ok_or(too_small)?;
        let mut w: &[u32] = bytemuck::try_cast_slice(table).map_err(|_| too_small)?;
        let mut take = |n: usize| {
            let (a, b) = w.split_at_checked(n).ok_or(too_small)?;
            w = b;
            Ok::<_, Error>(a)
        };
        let slots = take(s.cap)?;
        let spans = take(s.count.saturating_add(1))?;
        let scores = take(s.scores)?;
        let merge_slots = take(s.mcap)?;
        let pairs = take(s.merges.saturating_mul(2))?;
        let (kinds, rest) = rest.split_at_checked(s.count).ok_or(too_small)?;
        let keys = rest.get(..s.keys).ok_or(too_small)?;
        Ok(TokenIndex { slots, spans, scores, merge_slots, pairs, kinds, keys, tokens: vocab.tokens() })
    }

    /// The id of the entry whose bytes are `a` followed by `b` (the last such id), if any. O(1)
    /// expected.
    pub fn lookup2(&self, a: &[u8], b: &[u8]) -> Option<u32> {
        find(self.slots, self.spans, self.keys, a, b).ok().map(|(id, _)| id)
    }

    /// The id of the entry `text` (the last such id), if any.
    pub fn lookup(&self, text: &[u8]) -> Option<u32> {
        self.lookup2(text, &[])
    }

    /// The score of entry `id` (0.0 for a BPE vocab or an id outside it).
    pub fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).map_or(0.0, |&b| f32::from_bits(b))
    }

    /// How entry `id` is matched in raw text.
    pub(crate) fn special(&self, id: u32) -> Special {
        Special::from_code(self.kinds.get(id as usize).copied().unwrap_or(0))
    }

    /// The rank of the merge of tokens `left` and `right` (BPE), if there is one.
    pub fn merge_rank(&self, left: u32, right: u32) -> Option<u32> {
        find_merge(self.merge_slots, self.pairs, left, right).ok()
    }

    /// The token array this index was built from.
    pub fn tokens(&self) -> ArrayRef {
        self.tokens
    }
}

/// `Ok((id, slot))` when `a ‖ b` is stored, else `Err(slot)`: the empty slot ending the probe
/// (`usize::MAX` in a full table).
fn find(
    slots: &[u32],
    spans: &[u32],
    keys: &[u8],
    a: &[u8],
    b: &[u8],
) -> core::result::Result<(u32, usize), usize> {
    let cap = slots.len();
    if cap == 0 {
        return Err(usize::MAX);
    }
    let mut at = home(hash_parts(&[a, b]), cap);
    let len = a.len().saturating_add(b.len());
    for _ in 0..cap {
        let v = slots.get(at).copied().unwrap_or(0);
        if v == 0 {
            return Err(at);
        }
        let id = v.wrapping_sub(1);
        if let Some(k) = key(spans, keys, id) {
            if k.len() == len && k.get(..a.len()) == Some(a) && k.get(a.len()..) == Some(b) {
                return Ok((id, at));
            }
        }
        at = at.saturating_add(1);
        if at >= cap {
            at = 0;
        }
    }
    Err(usize::MAX)
}

fn key<'k>(spans: &[u32], keys: &'k [u8], id: u32) -> Option<&'k [u8]> {
    let i = id as usize;
    let start = *spans.get(i)? as usize;
    let end = *spans.get(i.checked_add(1)?)? as usize;
    keys.get(start..end)
}

fn merge_hash(left: u32, right: u32) -> u32 {
    hash_parts(&[&left.to_le_bytes(), &right.to_le_bytes()])
}

/// `Ok(rank)` when the pair is stored, else `Err(slot)` as [`find`].
fn find_merge(slots: &[u32], pairs: &[u32], left: u32, right: u32) -> core::result::Result<u32, usize> {
    let cap = slots.len();
    if cap == 0 {
        return Err(usize::MAX);
    }
    let mut at = home(merge_hash(left, right), cap);
    for _ in 0..cap {
        let v = slots.get(at).copied().unwrap_or(0);
        if v == 0 {
            return Err(at);
        }
        let rank = v.wrapping_sub(1) as usize;
        let l = pairs.get(rank.saturating_mul(2)).copied();
        let r = pairs.get(rank.saturating_mul(2).saturating_add(1)).copied();
        if l == Some(left) && r == Some(right) {
            return Ok(v.wrapping_sub(1));
        }
        at = at.saturating_add(1);
        if at >= cap {
            at = 0;
        }
    }
    Err(usize::MAX)
}

/// Where a builder is.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Tokens,
    Merges,
    Done,
}

/// Builds a [`TokenIndex`] in caller memory by streaming the vocab (and, for BPE, the merges)
/// once, a bounded number of entries per [`TokenIndexBuilder::step`].
#[derive(Debug)]
pub struct TokenIndexBuilder<'m> {
    a: Arrays<'m, &'m mut [u32], &'m mut [u8]>,
    vocab: ModelVocab,
    cursor: Cursor,
    types: Column,
    scores: Column,
    fill: usize,
    stage: Stage,
    failed: Option<Error>,
}

impl<'m> TokenIndexBuilder<'m> {
    /// A builder for `vocab`'s index in `mem`, which must hold [`TokenIndex::bytes_needed`] bytes
    /// (else [`Error::BufferTooSmall`]). O(count): clears the hash slots.
    pub fn new(vocab: &ModelVocab, mem: &'m mut [u8]) -> Result<Self> {
        let needed = TokenIndex::bytes_needed(vocab)?;
        let given = mem.len();
        let too_small = Error::BufferTooSmall { needed, given };
        if given < needed {
            return Err(too_small);
        }
        let a = carve_mut(mem, Shape::of(vocab)?).ok_or(too_small)?;
        a.slots.fill(0);
        a.merge_slots.fill(0);
        if let Some(first) = a.spans.first_mut() {
            *first = 0;
        }
        Ok(TokenIndexBuilder {
            a,
            vocab: *vocab,
            cursor: Cursor::new(&vocab.tokens()),
            types: Column::new(vocab.types()),
            scores: Column::new(vocab.scores()),
            fill: 0,
            stage: Stage::Tokens,
            failed: None,
        })
    }

    /// Streams and inserts at most `budget` entries or merges (at least one), each through at most
    /// one read of `scratch` (at least [`MIN_VOCAB_SCRATCH`](super::MIN_VOCAB_SCRATCH) bytes).
    /// Returns [`Step::Done`] once everything is in; then call [`TokenIndexBuilder::finish`].
    /// After an error every later step returns it again.
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
        let mut win = FileWindow::new(scratch)?;
        for _ in 0..budget.max(1) {
            match self.stage {
                Stage::Done => return Ok(Step::Done),
                Stage::Tokens => {
                    let tokens = self.vocab.tokens();
                    match self.cursor.next(&tokens, io, &mut win)? {
                        Some((id, entry)) => self.insert_token(io, id, entry)?,
                        None => match self.vocab.merges() {
                            Some(m) => {
                                self.cursor = Cursor::new(&m);
                                self.stage = Stage::Merges;
                            }
                            None => self.stage = Stage::Done,
                        },
                    }
                }
                Stage::Merges => {
                    let Some(m) = self.vocab.merges() else {
                        self.stage = Stage::Done;
                        continue;
                    };
                    match self.cursor.next(&m, io, &mut win)? {
                        Some((rank, entry)) => self.insert_merge(rank, entry)?,
                        None => self.stage = Stage::Done,
                    }
                }
            }
        }
        Ok(if matches!(self.stage, Stage::Done) { Step::Done } else { Step::Pending })
    }

    fn insert_token<S: Source + ?Sized>(&mut self, io: &mut S, id: u32, entry: Entry<'_>) -> Result<()> {
        let bad = Error::malformed(Malformed::BadVocab, self.vocab.tokens().offset);
        let ty = self.types.i32(io, id)?;
        let score = self.scores.score(io, id)?;
        let i = id as usize;
        if let Some(s) = self.a.scores.get_mut(i) {
            *s = score.to_bits();
        }
        if let Some(k) = self.a.kinds.get_mut(i) {
            *k = match entry {
                Entry::Bytes(text) => self.vocab.special(text, ty),
                Entry::Long => Special::of_type(ty),
            }
            .code();
        }
        if let Entry::Bytes(text) = entry {
            if !text.is_empty() && text.len() <= MAX_ENTRY_BYTES {
                let slot = match find(self.a.slots, self.a.spans, self.a.keys, text, &[]) {
                    // A duplicate: the later id takes the slot (its own key is stored too).
                    Ok((_, slot)) => slot,
                    Err(slot) => slot,
                };
                let end = self.fill.saturating_add(text.len());
                self.a.keys.get_mut(self.fill..end).ok_or(bad)?.copy_from_slice(text);
                self.fill = end;
                *self.a.slots.get_mut(slot).ok_or(bad)? = id.saturating_add(1);
            }
        }
        // `fill` <= key bytes < 2^32 (checked by `bytes_needed`).
        *self.a.spans.get_mut(i.saturating_add(1)).ok_or(bad)? = self.fill as u32;
        Ok(())
    }

    fn insert_merge(&mut self, rank: u32, entry: Entry<'_>) -> Result<()> {
        let bad = Error::malformed(Malformed::BadVocab, self.vocab.merges().map_or(0, |m| m.offset));
        let (mut left, mut right) = (NONE, NONE);
        if let Entry::Bytes(text) = entry {
            // llama.cpp splits at the first space after the first byte; no space: no merge.
            if let Some(sp) = text.iter().skip(1).position(|&b| b == b' ') {
                let sp = sp.saturating_add(1);
                let (a, b) = (
                    text.get(..sp).unwrap_or_default(),
                    text.get(sp.saturating_add(1)..).unwrap_or_default(),
                );
                let l = find(self.a.slots, self.a.spans, self.a.keys, a, &[]).ok().map(|(id, _)| id);
                let r = find(self.a.slots, self.a.spans, self.a.keys, b, &[]).ok().map(|(id, _)| id);
                if let (Some(l), Some(r)) = (l, r) {
                    (left, right) = (l, r);
                }
            }
        }
        let j = (rank as usize).saturating_mul(2);
        if let Some([x, y]) = self.a.pairs.get_mut(j..j.saturating_add(2)) {
            *x = left;
            *y = right;
        }
        if left != NONE {
            if let Err(slot) = find_merge(self.a.merge_slots, self.a.pairs, left, right) {
                // (A pair already present keeps its first rank.)
                *self.a.merge_slots.get_mut(slot).ok_or(bad)? = rank.saturating_add(1);
            }
        }
        Ok(())
    }

    /// Entries and merges inserted so far, and in all.
    pub fn progress(&self) -> (u64, u64) {
        let m = self.vocab.merges().map_or(0, |m| m.count);
        let done = match self.stage {
            Stage::Tokens => u64::from(self.cursor.index),
            Stage::Merges => self.vocab.tokens().count.saturating_add(u64::from(self.cursor.index)),
            Stage::Done => self.vocab.tokens().count.saturating_add(m),
        };
        (done, self.vocab.tokens().count.saturating_add(m))
    }

    /// The finished index; [`Error::InvalidState`] before a step returned [`Step::Done`] (or the
    /// step's error after a failure).
    pub fn finish(self) -> Result<TokenIndex<'m>> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if !matches!(self.stage, Stage::Done) {
            return Err(Error::InvalidState);
        }
        Ok(TokenIndex {
            slots: self.a.slots,
            spans: self.a.spans,
            scores: self.a.scores,
            merge_slots: self.a.merge_slots,
            pairs: self.a.pairs,
            kinds: self.a.kinds,
            keys: self.a.keys,
            tokens: self.vocab.tokens(),
        })
    }
}
