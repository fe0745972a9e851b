//! Special tokens matched in raw text before tokenizing, as llama.cpp's
//! `tokenizer_st_partition` does it.
//!
//! llama.cpp takes the special tokens longest first and cuts every occurrence of each out of the
//! text fragments that are left, leftmost first. That is a greedy choice by priority — (length
//! descending, then token order, then position) — of occurrences that overlap nothing chosen
//! before: [`choose`] makes it over a window's candidates. llama.cpp orders tokens of equal length
//! with `std::sort` (unspecified); here the lower id goes first, which only matters when two
//! special tokens of the same length overlap in the text.

/// An occurrence of a special token in raw text: byte position, length in bytes, token id.
pub(crate) type Candidate = [u32; 3];

/// Keeps, of `cands`, the occurrences llama.cpp cuts out, sorted by position, at the front;
/// returns how many. `occupied` (one byte per raw byte of the window, the candidates' positions
/// relative to it) is cleared and used as the map of chosen bytes. O(n log n + chosen bytes).
pub(crate) fn choose(cands: &mut [Candidate], occupied: &mut [u8]) -> usize {
    occupied.fill(0);
    cands.sort_unstable_by(|a, b| b[1].cmp(&a[1]).then(a[2].cmp(&b[2])).then(a[0].cmp(&b[0])));
    let mut kept = 0usize;
    for i in 0..cands.len() {
        let Some(&[pos, len, id]) = cands.get(i) else { break };
        let span = (pos as usize)..(pos as usize).saturating_add(len as usize);
        let Some(bytes) = occupied.get_mut(span) else { continue };
        if bytes.iter().any(|&b| b != 0) {
            continue;
        }
        bytes.fill(1);
        if let Some(slot) = cands.get_mut(kept) {
            *slot = [pos, len, id];
        }
        kept = kept.saturating_add(1);
    }
    if let Some(chosen) = cands.get_mut(..kept) {
        chosen.sort_unstable_by_key(|c| c[0]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_first_then_leftmost() {
        // "abcd" with specials "bcd" (id 7) and "ab" (id 3): llama.cpp cuts "bcd" first.
        let mut c = [[0, 2, 3], [1, 3, 7]];
        let mut occ = [0u8; 4];
        assert_eq!(choose(&mut c, &mut occ), 1);
        assert_eq!(c[0], [1, 3, 7]);
        // "aaaa" with "aa": leftmost occurrences, non-overlapping.
        let mut c = [[2, 2, 5], [1, 2, 5], [0, 2, 5]];
        let mut occ = [0u8; 4];
        assert_eq!(choose(&mut c, &mut occ), 2);
        assert_eq!(&c[..2], &[[0, 2, 5], [2, 2, 5]]);
    }
}
