//! The streaming normalizer: raw text in, a queue of normalized chars and special-token events out,
//! one raw char (or one special token) per [`Normalizer::refill`].
//!
//! It composes Hugging Face's steps per char, in HF's order: added-token split (raw text,
//! leftmost-longest, case-sensitive) → clean (drop U+0000, U+FFFD and controls, whitespace to
//! `' '`) → spaces around CJK ideographs → NFD (decomposition, then canonical reordering of each
//! run of non-starters) → drop Mn → `to_lowercase`. Pre-tokenization (whitespace and punctuation
//! splits) is left to the consumer.
//!
//! Canonical reordering needs the whole run of non-starters. Only the kept (non-Mn) ones are
//! buffered — dropping Mn commutes with the stable sort by class — in a buffer of
//! [`RUN_CAPACITY`] chars. A longer run cannot be reordered exactly, but it does not need to be: no
//! non-starter is whitespace or punctuation (asserted by the table generator), so the whole run
//! lands in one word, which then has more than 100 chars and becomes `[UNK]` whatever its order.

use super::unicode::{
    canonical_combining_class, decompose_canonical, is_chinese_char, is_control, is_mark_nonspacing,
    is_whitespace, MAX_DECOMPOSITION,
};
use super::vocab::Vocab;
use super::MAX_WORD_CHARS;
use crate::error::{Error, Result};

/// Kept non-starters buffered for canonical reordering (see the module docs).
pub(crate) const RUN_CAPACITY: usize = MAX_WORD_CHARS;

/// Queue entries one refill can produce at most: every char of the run and of one char's
/// decomposition flushed once, the decomposition's starters, each lowercased to at most 3 chars,
/// plus a boundary and a special-token event.
pub(crate) const QUEUE_CAPACITY: usize = 3 * (RUN_CAPACITY + 2 * MAX_DECOMPOSITION) + 8;

/// Queue event: the special token `vocab.special(i)` (a char is its code point, below 0x110000).
pub(crate) const SPECIAL_EVENT: u32 = 0x8000_0000;

/// An upper bound on the ids `text` tokenizes to, `[CLS]` and `[SEP]` included, whatever the
/// vocab: sizing [`Options::max_tokens`](super::Options::max_tokens) with it, an untruncated
/// tokenization never fails with [`InputError::TooManyTokens`](crate::InputError::TooManyTokens).
///
/// Why it holds: every piece covers at least one normalized char, or is a special token, which
/// covers at least one raw char of its own (matched in the raw text, never normalized). A raw
/// char yields the chars the [`Normalizer`] makes of it — its NFD decomposition without Mn marks,
/// each lowercased (NFD can turn one char into several, e.g. a Hangul syllable into 3 jamo) —
/// and none when it is dropped or becomes a space. So the bound counts each raw char as that
/// many, and at least 1.
/// Work: O(`text.len()`).
pub fn max_ids(text: &str) -> usize {
    text.chars().map(|c| normalized_len(c).max(1)).fold(2, usize::saturating_add)
}

/// How many chars the normalizer makes of the raw char `c`, outside special tokens (spaces
/// excluded: they only separate words).
fn normalized_len(c: char) -> usize {
    if c == '\0' || c == '\u{FFFD}' || is_control(c) || is_whitespace(c) {
        return 0;
    }
    let decomposition = decompose_canonical(c);
    let kept = decomposition.as_slice().iter().filter(|d| !is_mark_nonspacing(**d));
    kept.map(|d| d.to_lowercase().count()).fold(0, usize::saturating_add)
}

/// Where the normalizer is in the text. The run and queue live in caller memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Normalizer {
    /// Next raw byte of the text to read.
    pos: usize,
    /// Kept non-starters buffered in `run` (packed `class << 24 | char`).
    run_len: usize,
    /// Queue entries `[head, len)` are pending.
    head: usize,
    len: usize,
    /// The end of the text has been reached and flushed.
    finished: bool,
}

/// The queue and the run buffer, borrowed from the caller's memory for one call.
pub(crate) struct Buffers<'b> {
    pub(crate) run: &'b mut [u32],
    pub(crate) queue: &'b mut [u32],
}

impl Normalizer {
    pub(crate) const fn new() -> Self {
        Normalizer { pos: 0, run_len: 0, head: 0, len: 0, finished: false }
    }

    /// Raw bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Whether the whole text has been consumed and every event handed out.
    pub(crate) fn is_done(&self) -> bool {
        self.finished && self.head >= self.len
    }

    /// The next queued event, if any.
    pub(crate) fn pop(&mut self, queue: &[u32]) -> Option<u32> {
        if self.head >= self.len {
            return None;
        }
        let ev = queue.get(self.head).copied();
        self.head = self.head.saturating_add(1);
        if self.head >= self.len {
            self.head = 0;
            self.len = 0;
        }
        ev
    }

    /// Normalizes the next raw char (or special token) of `text` into the queue. Call only when
    /// [`Normalizer::pop`] returned `None`. Bounded: at most [`QUEUE_CAPACITY`] events.
    pub(crate) fn refill(&mut self, text: &str, vocab: &Vocab, buf: &mut Buffers<'_>) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        let rest = text.as_bytes().get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            self.flush(buf)?;
            self.push(buf.queue, u32::from(' '))?;
            self.finished = true;
            return Ok(());
        }
        if let Some((index, len)) = vocab.match_special(rest) {
            // Added tokens split the text: the segments around them are normalized apart.
            self.flush(buf)?;
            self.push(buf.queue, u32::from(' '))?;
            self.push(buf.queue, SPECIAL_EVENT | index as u32)?;
            self.pos = self.pos.saturating_add(len);
            return Ok(());
        }
        let Some(c) = text.get(self.pos..).and_then(|s| s.chars().next()) else {
            // `pos` always sits on a char boundary (special tokens are valid UTF-8); be safe.
            self.pos = text.len();
            return Ok(());
        };
        self.pos = self.pos.saturating_add(c.len_utf8());
        // clean_text
        if c == '\0' || c == '\u{FFFD}' || is_control(c) {
            return Ok(());
        }
        let c = if is_whitespace(c) { ' ' } else { c };
        // handle_chinese_chars, then NFD
        if is_chinese_char(c) {
            self.decomposed(' ', buf)?;
            for d in decompose_canonical(c).as_slice() {
                self.decomposed(*d, buf)?;
            }
            self.decomposed(' ', buf)?;
        } else {
            for d in decompose_canonical(c).as_slice() {
                self.decomposed(*d, buf)?;
            }
        }
        Ok(())
    }

    /// One char of the NFD stream: reorder, strip Mn, lowercase.
    fn decomposed(&mut self, d: char, buf: &mut Buffers<'_>) -> Result<()> {
        let class = canonical_combining_class(d);
        if class == 0 {
            self.flush(buf)?;
            if !is_mark_nonspacing(d) {
                self.push_lower(buf.queue, d)?;
            }
            return Ok(());
        }
        if is_mark_nonspacing(d) {
            return Ok(());
        }
        if self.run_len >= buf.run.len().min(RUN_CAPACITY) {
            // Over 100 kept non-starters: their word is [UNK] in any order (module docs).
            self.flush(buf)?;
        }
        // Stable insertion by class: after every buffered char of class <= `class`.
        let run = buf.run.get_mut(..self.run_len.saturating_add(1)).ok_or(Error::InvalidState)?;
        let packed = u32::from(class) << 24 | u32::from(d);
        let mut at = self.run_len;
        while at > 0 {
            let prev = run.get(at.saturating_sub(1)).copied().unwrap_or(0);
            if prev >> 24 <= u32::from(class) {
                break;
            }
            if let Some(slot) = run.get_mut(at) {
                *slot = prev;
            }
            at = at.saturating_sub(1);
        }
        if let Some(slot) = run.get_mut(at) {
            *slot = packed;
        }
        self.run_len = self.run_len.saturating_add(1);
        Ok(())
    }

    /// Emits the buffered run (already in canonical order), lowercased.
    fn flush(&mut self, buf: &mut Buffers<'_>) -> Result<()> {
        let n = self.run_len;
        self.run_len = 0;
        for &packed in buf.run.get(..n).unwrap_or_default() {
            let c = char::from_u32(packed & 0x00FF_FFFF).unwrap_or('\u{FFFD}');
            self.push_lower(buf.queue, c)?;
        }
        Ok(())
    }

    fn push_lower(&mut self, queue: &mut [u32], c: char) -> Result<()> {
        for l in c.to_lowercase() {
            self.push(queue, u32::from(l))?;
        }
        Ok(())
    }

    fn push(&mut self, queue: &mut [u32], ev: u32) -> Result<()> {
        // Bounded by QUEUE_CAPACITY per refill (see its docs); overflow would be a bug here.
        let slot = queue.get_mut(self.len).ok_or(Error::InvalidState)?;
        *slot = ev;
        self.len = self.len.saturating_add(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::max_ids;

    #[test]
    fn max_ids_counts_what_nfd_and_lowercasing_make_of_each_char() {
        assert_eq!(max_ids(""), 2);
        assert_eq!(max_ids("a b"), 2 + 3, "a space counts as 1 (a special token may cover it)");
        // A Hangul syllable decomposes into 2 or 3 jamo, each of which can be its own piece.
        assert_eq!(max_ids("말"), 2 + 3);
        assert_eq!(max_ids("가"), 2 + 2);
        // U+0130 decomposes into I + U+0307 (Mn, dropped), which lowercases to one char.
        assert_eq!(max_ids("İ"), 2 + 1);
        // A combining mark alone yields nothing, but still counts 1.
        assert_eq!(max_ids("\u{301}"), 2 + 1);
        // U+1E09 (ḉ) decomposes into c + U+0327 + U+0301: one kept char.
        assert_eq!(max_ids("\u{1E09}"), 2 + 1);
        assert_eq!(max_ids(&"word ".repeat(600)), 2 + 3000);
    }
}
