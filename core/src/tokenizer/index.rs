//! The vocab hash index: every entry that can match a piece, in caller memory, for O(1) lookups.
//!
//! Layout of the caller's buffer (after aligning it to 4 bytes):
//! `slots: [u32; cap]` (open addressing, linear probing; 0 = empty, else id + 1),
//! `spans: [u32; count + 1]` (entry `id`'s key is `bytes[spans[id] & MASK .. spans[id + 1] & MASK]`,
//! bit 31 = word-initial), `bytes` (the keys: entries with the `▁` prefix removed).
//! `cap = count + count / 2 + 1` keeps the load under 2/3.

use super::vocab::{classify, Cursor, Entry, FileWindow, Vocab};
use super::{Step, MAX_PIECE_BYTES};
use crate::error::{Error, Malformed, Result};
use crate::gguf::ArrayRef;
use crate::io::Source;

const INITIAL: u32 = 1 << 31;
const OFFSET_MASK: u32 = INITIAL - 1;

/// Slots of the hash table for `count` entries.
fn capacity(count: u32) -> u64 {
    let n = u64::from(count);
    n.saturating_add(n / 2).saturating_add(1)
}

/// Upper bound of the key bytes: the array's bytes less the u64 length of each entry.
fn key_bytes(tokens: &ArrayRef) -> u64 {
    tokens.byte_len.saturating_sub(tokens.count.saturating_mul(8))
}

/// FNV-1a over the word-initial flag and the piece, then murmur3's finalizer (good high bits for
/// the multiply-shift reduction).
fn hash(initial: bool, piece: &[u8]) -> u32 {
    hash_parts(&[&[u8::from(initial)], piece])
}

/// FNV-1a over the concatenation of `parts`, then murmur3's finalizer.
pub(super) fn hash_parts(parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in parts.iter().flat_map(|p| p.iter()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The home slot of hash `h` in a table of `cap` slots.
pub(super) fn home(h: u32, cap: usize) -> usize {
    ((u64::from(h).wrapping_mul(cap as u64)) >> 32) as usize
}

/// The vocab's hash index: a borrowed view of a caller buffer filled by [`IndexBuilder`].
///
/// Lookups are pure memory operations: no I/O, no allocation. `Copy` (it only borrows).
#[derive(Debug, Clone, Copy)]
pub struct VocabIndex<'m> {
    slots: &'m [u32],
    spans: &'m [u32],
    bytes: &'m [u8],
    tokens: ArrayRef,
    longest: usize,
}

impl<'m> VocabIndex<'m> {
    /// Bytes of caller memory an index of `vocab` needs (including 3 bytes of alignment slack):
    /// `4 × (count + count/2 + 1) + 4 × (count + 1) + (array bytes − 8 × count) + 3` — about
    /// 580 KB for a 30 522-entry BERT vocab.
    ///
    /// Errors: [`Malformed::Overflow`] (at the token array) when that does not fit `usize` or the
    /// key bytes exceed 2 GiB.
    pub fn bytes_needed(vocab: &Vocab) -> Result<usize> {
        let tokens = vocab.tokens();
        let overflow = Error::malformed(Malformed::Overflow, tokens.offset);
        let keys = key_bytes(&tokens);
        if keys > u64::from(OFFSET_MASK) {
            return Err(overflow);
        }
        let words = capacity(vocab.count())
            .checked_add(u64::from(vocab.count()))
            .and_then(|w| w.checked_add(1))
            .ok_or(overflow)?;
        let total = words
            .checked_mul(4)
            .and_then(|b| b.checked_add(keys))
            .and_then(|b| b.checked_add(3))
            .ok_or(overflow)?;
        usize::try_from(total).map_err(|_| overflow)
    }

    /// The index a finished [`IndexBuilder`] left in `mem` for `vocab`, viewed again (for a
    /// caller that keeps the memory but not the borrow, e.g. an embedder owning both). O(count):
    /// finds the longest key.
    ///
    /// `mem` must be the memory the builder of this vocab filled and finished; anything else
    /// gives wrong lookups (never a panic). Too short a buffer is [`Error::BufferTooSmall`].
    pub fn open(vocab: &Vocab, mem: &'m [u8]) -> Result<Self> {
        let needed = VocabIndex::bytes_needed(vocab)?;
        let too_small = Error::BufferTooSmall { needed, given: mem.len() };
        if mem.len() < needed {
            return Err(too_small);
        }
        let tokens = vocab.tokens();
        let cap = capacity(vocab.count()) as usize;
        let n_spans = (vocab.count() as usize).saturating_add(1);
        let keys = key_bytes(&tokens) as usize;
        let (table, bytes) = split_memory(mem, cap.saturating_add(n_spans), keys).ok_or(too_small)?;
        let (slots, spans) = table.split_at_checked(cap).ok_or(too_small)?;
        let longest = spans
            .windows(2)
            .map(|w| match w {
                [a, b] => ((b & OFFSET_MASK).saturating_sub(a & OFFSET_MASK)) as usize,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        Ok(VocabIndex { slots, spans, bytes, tokens, longest })
    }

    /// The id of the piece `piece` — word-initial (`initial`, stored as `▁piece`) or a
    /// continuation (`##piece`, stored as `piece`) — if the vocab has it. When an entry occurs
    /// twice, the lower id. O(1) expected; at most one probe per slot.
    pub fn lookup(&self, initial: bool, piece: &[u8]) -> Option<u32> {
        if piece.is_empty() || piece.len() > self.longest {
            return None;
        }
        self.find(initial, piece).ok()
    }

    /// The array this index was built from.
    pub fn tokens(&self) -> ArrayRef {
        self.tokens
    }

    /// Bytes of the longest key stored.
    pub fn longest_piece(&self) -> usize {
        self.longest
    }

    /// `Ok(id)` when found, `Err(slot)` with the empty slot that ends the probe otherwise
    /// (`Err(usize::MAX)` in a full table).
    fn find(&self, initial: bool, piece: &[u8]) -> core::result::Result<u32, usize> {
        find(self.slots, self.spans, self.bytes, initial, piece)
    }
}

fn find(
    slots: &[u32],
    spans: &[u32],
    bytes: &[u8],
    initial: bool,
    piece: &[u8],
) -> core::result::Result<u32, usize> {
    let cap = slots.len();
    if cap == 0 {
        return Err(usize::MAX);
    }
    let mut at = home(hash(initial, piece), cap);
    for _ in 0..cap {
        let v = slots.get(at).copied().unwrap_or(0);
        if v == 0 {
            return Err(at);
        }
        let id = v.wrapping_sub(1);
        if key(spans, bytes, id) == Some((initial, piece)) {
            return Ok(id);
        }
        at = at.saturating_add(1);
        if at >= cap {
            at = 0;
        }
    }
    Err(usize::MAX)
}

/// The stored key of entry `id`.
fn key<'b>(spans: &[u32], bytes: &'b [u8], id: u32) -> Option<(bool, &'b [u8])> {
    let i = id as usize;
    let start = *spans.get(i)?;
    let end = *spans.get(i.checked_add(1)?)? & OFFSET_MASK;
    let k = bytes.get((start & OFFSET_MASK) as usize..end as usize)?;
    Some((start & INITIAL != 0, k))
}

/// Builds a [`VocabIndex`] in caller memory by streaming the vocab once, a bounded number of
/// entries per [`IndexBuilder::step`].
///
/// Entries longer than any piece can be (over 400 bytes) and duplicates (the later id) are not
/// stored; an entry that is not UTF-8 is stored but can never equal a piece (pieces are UTF-8).
#[derive(Debug)]
pub struct IndexBuilder<'m> {
    slots: &'m mut [u32],
    spans: &'m mut [u32],
    bytes: &'m mut [u8],
    tokens: ArrayRef,
    cursor: Cursor,
    fill: usize,
    longest: usize,
    done: bool,
    failed: Option<Error>,
}

/// The index's memory: `words` u32s (slots, then spans) from the first 4-byte boundary of `mem`
/// on, then `keys` bytes right after them — the keys need no alignment, so at most 3 bytes are
/// lost to it, the slack [`VocabIndex::bytes_needed`] counts. `None` when `mem` is too short.
fn split_memory(mem: &[u8], words: usize, keys: usize) -> Option<(&[u32], &[u8])> {
    let head = bytemuck::pod_align_to::<u8, u32>(mem).0.len();
    let table_bytes = words.checked_mul(4)?;
    let (table, rest) = mem.get(head..)?.split_at_checked(table_bytes)?;
    Some((bytemuck::try_cast_slice(table).ok()?, rest.get(..keys)?))
}

/// [`split_memory`] for building the index.
fn split_memory_mut(mem: &mut [u8], words: usize, keys: usize) -> Option<(&mut [u32], &mut [u8])> {
    let head = bytemuck::pod_align_to::<u8, u32>(mem).0.len();
    let table_bytes = words.checked_mul(4)?;
    let (table, rest) = mem.get_mut(head..)?.split_at_mut_checked(table_bytes)?;
    Some((bytemuck::try_cast_slice_mut(table).ok()?, rest.get_mut(..keys)?))
}

impl<'m> IndexBuilder<'m> {
    /// A builder for `vocab`'s index in `mem`, which must hold [`VocabIndex::bytes_needed`] bytes
    /// (else [`Error::BufferTooSmall`]). O(count): clears the slots.
    pub fn new(vocab: &Vocab, mem: &'m mut [u8]) -> Result<Self> {
        let needed = VocabIndex::bytes_needed(vocab)?;
        let given = mem.len();
        if given < needed {
            return Err(Error::BufferTooSmall { needed, given });
        }
        let tokens = vocab.tokens();
        let cap = capacity(vocab.count()) as usize;
        let n_spans = (vocab.count() as usize).saturating_add(1);
        let keys = key_bytes(&tokens) as usize;
        let too_small = Error::BufferTooSmall { needed, given };
        let (table, bytes) = split_memory_mut(mem, cap.saturating_add(n_spans), keys).ok_or(too_small)?;
        let (slots, spans) = table.split_at_mut(cap);
        slots.fill(0);
        if let Some(first) = spans.first_mut() {
            *first = 0;
        }
        Ok(IndexBuilder {
            slots,
            spans,
            bytes,
            tokens,
            cursor: Cursor::new(&tokens),
            fill: 0,
            longest: 0,
            done: false,
            failed: None,
        })
    }

    /// Streams and inserts at most `budget` entries (at least one), each through at most one read
    /// of `scratch` (at least [`MIN_VOCAB_SCRATCH`](super::MIN_VOCAB_SCRATCH) bytes, may differ
    /// between calls). Returns [`Step::Done`] once every entry is in; then call
    /// [`IndexBuilder::finish`]. After an error every later step returns it again.
    pub fn step<S: Source + ?Sized>(&mut self, io: &mut S, scratch: &mut [u8], budget: u32) -> Result<Step> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        match self.advance(io, scratch, budget) {
            Ok(s) => Ok(s),
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
        let tokens = self.tokens;
        for _ in 0..budget.max(1) {
            let Some((id, entry)) = self.cursor.next(&tokens, io, &mut win)? else {
                self.done = true;
                return Ok(Step::Done);
            };
            let mut flag = 0;
            if let Entry::Bytes(raw) = entry {
                let (initial, piece) = classify(raw);
                if !piece.is_empty() && piece.len() <= MAX_PIECE_BYTES {
                    match find(self.slots, self.spans, self.bytes, initial, piece) {
                        Ok(_) => {} // a duplicate: the lower id keeps it
                        Err(slot) => {
                            let end = self.fill.saturating_add(piece.len());
                            let bad = Error::malformed(Malformed::BadVocab, tokens.offset);
                            let dst = self.bytes.get_mut(self.fill..end).ok_or(bad)?;
                            dst.copy_from_slice(piece);
                            *self.slots.get_mut(slot).ok_or(bad)? = id.saturating_add(1);
                            self.fill = end;
                            self.longest = self.longest.max(piece.len());
                            flag = if initial { INITIAL } else { 0 };
                        }
                    }
                }
            }
            let i = id as usize;
            if let Some(s) = self.spans.get_mut(i) {
                *s |= flag;
            }
            if let Some(s) = self.spans.get_mut(i.saturating_add(1)) {
                // `fill` <= key bytes < 2^31 (checked by `bytes_needed`).
                *s = self.fill as u32;
            }
        }
        if u64::from(self.cursor.index) >= tokens.count {
            self.done = true;
            return Ok(Step::Done);
        }
        Ok(Step::Pending)
    }

    /// Entries inserted so far and in all.
    pub fn progress(&self) -> (u64, u64) {
        (u64::from(self.cursor.index), self.tokens.count)
    }

    /// The finished index; [`Error::InvalidState`] before a step returned [`Step::Done`] (or the
    /// step's error after a failure).
    pub fn finish(self) -> Result<VocabIndex<'m>> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if !self.done {
            return Err(Error::InvalidState);
        }
        Ok(VocabIndex {
            slots: self.slots,
            spans: self.spans,
            bytes: self.bytes,
            tokens: self.tokens,
            longest: self.longest,
        })
    }
}
