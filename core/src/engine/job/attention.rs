//! Attention of one head group: rotary positions and online-softmax attention, text by text.
//!
//! Attention's unit is a tile: a key block of one query head of one text against a tile of its
//! queries. A text's tiles go head by head, and within a head key block by key block (each
//! block's values are transposed once, for all its query tiles). Under a mask (causal, or a
//! sliding window) the scores of hidden pairs are −∞, and a tile whose pairs are all hidden is
//! skipped.

use super::interpreter::{Pc, Place};
use super::tokenwise::row;
use super::*;
use crate::engine::program::Buf;
use checked::{mul, units};

/// Where a tile is in its text: the query head (within the group), the first key, the first
/// query.
struct Tile {
    head: usize,
    k0: usize,
    q0: usize,
}

/// Which keys a query sees (positions within its text).
#[derive(Debug, Clone, Copy)]
struct Mask {
    /// Only keys at or before the query.
    causal: bool,
    /// Only keys at most this far from the query, on either side.
    window: Option<usize>,
}

impl Mask {
    /// Whether query `i` sees key `j`.
    fn sees(&self, i: usize, j: usize) -> bool {
        (!self.causal || j <= i) && self.window.is_none_or(|w| i.abs_diff(j) <= w)
    }

    /// Whether every query of `queries` sees every key of `keys` (non-empty ranges).
    fn sees_all(&self, queries: &core::ops::Range<usize>, keys: &core::ops::Range<usize>) -> bool {
        let (q_last, k_last) = (queries.end.saturating_sub(1), keys.end.saturating_sub(1));
        self.sees(queries.start, k_last) && self.sees(q_last, keys.start)
    }

    /// Whether some query of `queries` sees some key of `keys` (non-empty ranges).
    fn sees_any(&self, queries: &core::ops::Range<usize>, keys: &core::ops::Range<usize>) -> bool {
        let (q_last, k_last) = (queries.end.saturating_sub(1), keys.end.saturating_sub(1));
        let causal_ok = !self.causal || keys.start <= q_last;
        let window_ok = self.window.is_none_or(|w| {
            keys.start <= q_last.saturating_add(w) && queries.start <= k_last.saturating_add(w)
        });
        causal_ok && window_ok
    }
}

impl<'a> Job<'a> {
    /// Rotary positions on the Q and K of the head group at `pc`, for `tokens`: the first
    /// `n_rot` dimensions of each head, with the base (and position scale) of the current
    /// layer's kind.
    pub(super) fn rope(&mut self, pc: Pc, tokens: core::ops::Range<usize>) -> Result<()> {
        let hp = *self.model.hparams();
        let (d, rot) = (hp.head_dim_k, hp.n_rot);
        let sliding = self.layer.as_ref().is_some_and(|l| l.sliding);
        let (base, scale) = if sliding { (hp.rope_base_swa, 1.0) } else { (hp.rope_base, hp.rope_scale) };
        let non_finite = self.non_finite();
        let (q, k) = (self.place(Buf::Q, pc)?, self.place(Buf::K, pc)?);
        // In the attention region (free until attention): the (cos, sin) pairs of one position,
        // then each pair's frequency as an f32 pair (high, low) that sums to its f64 value.
        let freqs = self.r.attn.get_mut(span(rot, rot)?).ok_or(Error::InvalidState)?;
        for (i, f) in freqs.chunks_exact_mut(2).enumerate() {
            let exact = ops::inv_freq(base, i, rot) * f64::from(scale);
            let hi = exact as f32;
            f.copy_from_slice(&[hi, (exact - f64::from(hi)) as f32]);
        }
        for t in tokens {
            let pos = self.position_of(t)?;
            let (pairs, freqs) = self.r.attn.split_at_mut_checked(rot).ok_or(Error::InvalidState)?;
            for (pair, f) in pairs.chunks_exact_mut(2).zip(freqs.chunks_exact(2)) {
                let exact = f.iter().map(|&v| f64::from(v)).sum::<f64>();
                let (c, s) = ops::rotation(pos, exact);
                pair.copy_from_slice(&[c, s]);
            }
            let pairs = &*pairs;
            for place in [q, k] {
                let vecs = self.r.wide.get_mut(row(place, t)?).ok_or(Error::InvalidState)?;
                for head in vecs.chunks_exact_mut(d) {
                    ops::rope(head.get_mut(..rot).ok_or(Error::InvalidState)?, pairs);
                }
                ensure_finite(vecs, non_finite)?;
            }
        }
        Ok(())
    }

    /// The tiles of text `pc.text` for the head group at `pc`.
    pub(super) fn attention_tiles(&self, pc: Pc) -> Result<usize> {
        let (_, len) = self.span(pc.text)?;
        let heads = mul(self.group_heads(pc.iter).1, self.model.hparams().heads_per_kv())?;
        let blocks = len.div_ceil(self.plan.k_tile.max(1));
        mul(mul(heads, blocks)?, len.div_ceil(self.plan.q_tile.max(1)))
    }

    /// The work units of one (full) tile of text `text`: per (query, key) pair, the two dot
    /// products of the head's width and the softmax's bookkeeping.
    pub(super) fn attention_tile_cost(&self, text: usize) -> Result<u64> {
        let (_, len) = self.span(text)?;
        let d = self.model.hparams().head_dim_k;
        let pair = units(2, &[d]).saturating_add(ATTENTION_PAIR_COST);
        Ok(units(pair, &[self.plan.q_tile.min(len), self.plan.k_tile.min(len)]))
    }

    /// The tile at unit `unit` of a text of `len` tokens.
    fn tile(&self, unit: usize, len: usize) -> Result<Tile> {
        let (q_tiles, blocks) =
            (len.div_ceil(self.plan.q_tile.max(1)), len.div_ceil(self.plan.k_tile.max(1)));
        let per_head = mul(q_tiles, blocks)?;
        let head = unit.checked_div(per_head).ok_or(Error::InvalidState)?;
        let within = unit.checked_rem(per_head).ok_or(Error::InvalidState)?;
        let block = within.checked_div(q_tiles).ok_or(Error::InvalidState)?;
        let q_tile = within.checked_rem(q_tiles).ok_or(Error::InvalidState)?;
        Ok(Tile { head, k0: mul(block, self.plan.k_tile)?, q0: mul(q_tile, self.plan.q_tile)? })
    }

    /// Online-softmax attention of text `pc.text`: its tiles `[pc.unit, pc.unit + count)`.
    ///
    /// The accumulators are the head's columns of the attention output itself ([`Buf::Ctx`]);
    /// the running max and sum of every query live in the attention region. A head's first tile
    /// clears them; a key block's first tile transposes its values; the tiles of the last key
    /// block normalise their queries' rows.
    pub(super) fn attention(&mut self, pc: Pc, count: usize) -> Result<()> {
        let hp = *self.model.hparams();
        let (d, dv, r) = (hp.head_dim_k, hp.head_dim_v, hp.heads_per_kv());
        let non_finite = self.non_finite();
        let (q, k, v, ctx) = (
            self.place(Buf::Q, pc)?,
            self.place(Buf::K, pc)?,
            self.place(Buf::V, pc)?,
            self.place(Buf::Ctx, pc)?,
        );
        let (h0, _) = self.group_heads(pc.iter);
        let stride = q.stride;
        let (start, len) = self.span(pc.text)?;
        let (q_tile, k_tile) = (self.plan.q_tile, self.plan.k_tile);
        let scale = 1.0 / libm::sqrtf(d as f32);
        let sliding = self.layer.as_ref().is_some_and(|l| l.sliding);
        let mask = Mask { causal: hp.causal, window: sliding.then_some(hp.sliding_window / 2) };
        let masked = mask.causal || mask.window.is_some();
        for unit in span(pc.unit, count)? {
            let Tile { head, k0, q0 } = self.tile(unit, len)?;
            let kv = head.checked_div(r).ok_or(Error::InvalidState)?;
            let tk = k_tile.min(sub(len, k0)?);
            let tq = q_tile.min(sub(len, q0)?);
            if tk == 0 || tq == 0 {
                return Err(Error::InvalidState);
            }
            let (scores, rest) =
                self.r.attn.split_at_mut_checked(mul(q_tile, k_tile)?).ok_or(Error::InvalidState)?;
            let (values_t, rest) = rest.split_at_mut_checked(mul(k_tile, dv)?).ok_or(Error::InvalidState)?;
            let (run_max, rest) = rest.split_at_mut_checked(len).ok_or(Error::InvalidState)?;
            let run_sum = rest.get_mut(..len).ok_or(Error::InvalidState)?;
            // Token t's q of this head, its k and its v, from the start of the group's region;
            // query i's output row (its accumulator) in the attention output.
            let in_row = |p: Place, t: usize, col: usize| add(add(mul(t, stride)?, p.col)?, col);
            let q_of = |t: usize| in_row(q, t, mul(head, d)?);
            let k_of = |t: usize| in_row(k, t, mul(kv, d)?);
            let v_of = |t: usize| in_row(v, t, mul(kv, dv)?);
            let out_col = add(ctx.col, mul(add(mul(h0, r)?, head)?, dv)?)?;
            let out_of =
                |i: usize| span(add(add(ctx.offset, mul(add(start, i)?, ctx.stride)?)?, out_col)?, dv);
            let (ctx_buf, qkv) = self.r.wide.split_at_mut_checked(q.offset).ok_or(Error::InvalidState)?;
            let qkv = &*qkv;
            if (k0, q0) == (0, 0) {
                run_max.fill(f32::NEG_INFINITY);
                run_sum.fill(0.0);
                for i in 0..len {
                    ctx_buf.get_mut(out_of(i)?).ok_or(Error::InvalidState)?.fill(0.0);
                }
            }
            let vt = values_t.get_mut(..mul(dv, tk)?).ok_or(Error::InvalidState)?;
            let first_key = add(start, k0)?;
            if q0 == 0 {
                // The block's values, transposed so that each head dimension is a row: value j
                // is column j.
                for j in 0..tk {
                    let v = qkv.get(span(v_of(add(first_key, j)?)?, dv)?).ok_or(Error::InvalidState)?;
                    for (dim, &x) in vt.chunks_exact_mut(tk).zip(v) {
                        *dim.get_mut(j).ok_or(Error::InvalidState)? = x;
                    }
                }
            }
            let tile = span(q0, tq)?;
            let key_range = span(k0, tk)?;
            if !masked || mask.sees_any(&tile, &key_range) {
                let keys = qkv.get(k_of(first_key)?..).ok_or(Error::InvalidState)?;
                // Scores of the tile: S = Q·Kᵀ; −∞ where the mask hides a pair.
                let queries = qkv.get(q_of(add(start, q0)?)?..).ok_or(Error::InvalidState)?;
                let block = scores.get_mut(..mul(tq, tk)?).ok_or(Error::InvalidState)?;
                block.fill(0.0);
                self.kernels.gemm_f32_acc(keys, stride, tk, d, queries, stride, tq, block, tk)?;
                if masked && !mask.sees_all(&tile, &key_range) {
                    for (i, row) in tile.clone().zip(block.chunks_exact_mut(tk)) {
                        for (j, s) in key_range.clone().zip(row.iter_mut()) {
                            if !mask.sees(i, j) {
                                *s = f32::NEG_INFINITY;
                            }
                        }
                    }
                }
                // Online softmax: rescale what was accumulated when the running max grows; the
                // scores become unnormalised probabilities (a row that sees no key yet, none).
                for (i, row) in tile.clone().zip(block.chunks_exact_mut(tk)) {
                    let m = run_max.get_mut(i).ok_or(Error::InvalidState)?;
                    let l = run_sum.get_mut(i).ok_or(Error::InvalidState)?;
                    let m_new = m.max(ops::scaled_max(row, scale));
                    if m_new == f32::NEG_INFINITY {
                        row.fill(0.0);
                        continue;
                    }
                    let correction = ops::exp(*m - m_new);
                    if correction != 1.0 {
                        let acc = ctx_buf.get_mut(out_of(i)?).ok_or(Error::InvalidState)?;
                        acc.iter_mut().for_each(|v| *v *= correction);
                    }
                    *l = *l * correction + ops::exp_and_sum(row, scale, m_new);
                    *m = m_new;
                }
                // Accumulators += P·V.
                let acc = ctx_buf.get_mut(out_of(q0)?.start..).ok_or(Error::InvalidState)?;
                self.kernels.gemm_f32_acc(vt, tk, dv, tk, block, tk, tq, acc, ctx.stride)?;
            }
            if add(k0, tk)? >= len {
                for i in tile {
                    let l = *run_sum.get(i).ok_or(Error::InvalidState)?;
                    let out = ctx_buf.get_mut(out_of(i)?).ok_or(Error::InvalidState)?;
                    out.iter_mut().for_each(|v| *v /= l);
                    ensure_finite(out, non_finite)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Mask;

    /// `sees_all` and `sees_any` agree with `sees` over every pair of every tile.
    #[test]
    fn tile_tests_agree_with_the_pairs() {
        let masks = [
            Mask { causal: true, window: None },
            Mask { causal: false, window: Some(3) },
            Mask { causal: true, window: Some(2) },
            Mask { causal: false, window: Some(0) },
        ];
        for mask in masks {
            for (q0, k0) in (0..12).flat_map(|q| (0..12).map(move |k| (q, k))) {
                for (tq, tk) in [(1, 1), (2, 3), (4, 4), (5, 2)] {
                    let (queries, keys) = (q0..q0 + tq, k0..k0 + tk);
                    let pairs = || queries.clone().flat_map(|i| keys.clone().map(move |j| (i, j)));
                    let all = pairs().all(|(i, j)| mask.sees(i, j));
                    let any = pairs().any(|(i, j)| mask.sees(i, j));
                    assert_eq!(mask.sees_all(&queries, &keys), all, "{mask:?} {queries:?} {keys:?}");
                    assert_eq!(mask.sees_any(&queries, &keys), any, "{mask:?} {queries:?} {keys:?}");
                }
            }
        }
        let window = Mask { causal: false, window: Some(16) };
        assert!(window.sees(20, 4) && window.sees(4, 20) && !window.sees(21, 4) && !window.sees(4, 21));
    }
}
