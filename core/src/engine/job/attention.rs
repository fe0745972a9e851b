//! Attention of one head group: rotary positions and online-softmax attention, text by text.
//!
//! Attention's unit is a tile: a key block of one query head of one text against a tile of its
//! queries. A text's tiles go head by head, and within a head key block by key block (each
//! block's values are transposed once, for all its query tiles).

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

impl<'a> Job<'a> {
    /// Rotary positions on the Q and K of the head group at `pc`, for `tokens`.
    pub(super) fn rope(&mut self, pc: Pc, tokens: core::ops::Range<usize>) -> Result<()> {
        let hp = *self.model.hparams();
        let d = hp.head_dim_k;
        let non_finite = self.non_finite();
        let (q, k) = (self.place(Buf::Q, pc)?, self.place(Buf::K, pc)?);
        // In the attention region (free until attention): the (cos, sin) pairs of one position,
        // then each pair's frequency as an f32 pair (high, low) that sums to its f64 value.
        let freqs = self.r.attn.get_mut(span(d, d)?).ok_or(Error::InvalidState)?;
        for (i, f) in freqs.chunks_exact_mut(2).enumerate() {
            let exact = ops::inv_freq(hp.rope_base, i, d);
            let hi = exact as f32;
            f.copy_from_slice(&[hi, (exact - f64::from(hi)) as f32]);
        }
        for t in tokens {
            let pos = self.position_of(t)?;
            let (pairs, freqs) = self.r.attn.split_at_mut_checked(d).ok_or(Error::InvalidState)?;
            for (pair, f) in pairs.chunks_exact_mut(2).zip(freqs.chunks_exact(2)) {
                let exact = f.iter().map(|&v| f64::from(v)).sum::<f64>();
                let (c, s) = ops::rotation(pos, exact);
                pair.copy_from_slice(&[c, s]);
            }
            let pairs = &*pairs;
            for place in [q, k] {
                let vecs = self.r.wide.get_mut(row(place, t)?).ok_or(Error::InvalidState)?;
                for head in vecs.chunks_exact_mut(d) {
                    ops::rope(head, pairs);
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
            let keys = qkv.get(k_of(first_key)?..).ok_or(Error::InvalidState)?;
            // Scores of the tile: S = Q·Kᵀ.
            let queries = qkv.get(q_of(add(start, q0)?)?..).ok_or(Error::InvalidState)?;
            let block = scores.get_mut(..mul(tq, tk)?).ok_or(Error::InvalidState)?;
            block.fill(0.0);
            self.kernels.gemm_f32_acc(keys, stride, tk, d, queries, stride, tq, block, tk)?;
            // Online softmax: rescale what was accumulated when the running max grows; the
            // scores become unnormalised probabilities.
            let tile = span(q0, tq)?;
            for (i, row) in tile.clone().zip(block.chunks_exact_mut(tk)) {
                let m = run_max.get_mut(i).ok_or(Error::InvalidState)?;
                let l = run_sum.get_mut(i).ok_or(Error::InvalidState)?;
                let m_new = m.max(ops::scaled_max(row, scale));
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
