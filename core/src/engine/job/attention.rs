//! Attention of one head group: rotary positions (nomic-bert) and online-softmax attention,
//! resumable at any key block and query tile.

use super::*;

impl<'a> Job<'a> {
    /// Rotary positions on the Q and K of group `group`'s heads, for `tokens`.
    pub(super) fn rope(&mut self, group: usize, tokens: Tokens) -> Result<()> {
        let hp = *self.model.hparams();
        let d = hp.head_dim();
        let (_, heads) = self.group_heads(group);
        let non_finite = self.non_finite();
        let gw = self.group_width()?;
        let (qkv_at, stride, width) = (mul(self.n_tokens, hp.n_embd)?, mul(3, gw)?, mul(heads, d)?);
        // In the attention region (free until attention): the (cos, sin) pairs of one position,
        // then each pair's frequency as an f32 pair (high, low) that sums to its f64 value.
        let freqs = self.r.attn.get_mut(span(d, d)?).ok_or(Error::InvalidState)?;
        for (i, f) in freqs.chunks_exact_mut(2).enumerate() {
            let exact = ops::inv_freq(hp.rope_base, i, d);
            let hi = exact as f32;
            f.copy_from_slice(&[hi, (exact - f64::from(hi)) as f32]);
        }
        for t in tokens.range()? {
            let pos = self.position_of(t)?;
            let (pairs, freqs) = self.r.attn.split_at_mut_checked(d).ok_or(Error::InvalidState)?;
            for (pair, f) in pairs.chunks_exact_mut(2).zip(freqs.chunks_exact(2)) {
                let exact = f.iter().map(|&v| f64::from(v)).sum::<f64>();
                let (c, s) = ops::rotation(pos, exact);
                pair.copy_from_slice(&[c, s]);
            }
            let pairs = &*pairs;
            // Q then K of token t: each `heads · d` floats, `gw` apart.
            let q_at = add(qkv_at, mul(t, stride)?)?;
            for at in [q_at, add(q_at, gw)?] {
                let vecs = self.r.wide.get_mut(span(at, width)?).ok_or(Error::InvalidState)?;
                for head in vecs.chunks_exact_mut(d) {
                    ops::rope(head, pairs);
                }
                ensure_finite(vecs, non_finite)?;
            }
        }
        Ok(())
    }

    /// Online-softmax attention of text `text` for head `head` of group `group`: the key block
    /// starting at `k0` (before the text's end) against query tiles from `q0` on, until about
    /// `budget` units are spent. Returns where to go on (`(k0, q0)`, `k0 ≥ len` when the head is
    /// done) and the units.
    ///
    /// Key blocks are the outer loop so that each block's values are transposed once for all
    /// queries. The accumulators are the head's columns of the attention output itself (start of
    /// the wide region, stride n_embd); the running max and sum of every query live in the
    /// attention region. The last key block normalises each query's row.
    pub(super) fn attention_step(
        &mut self,
        group: usize,
        text: usize,
        head: usize,
        (k0, q0): (usize, usize),
        budget: u64,
    ) -> Result<((usize, usize), u64)> {
        let hp = *self.model.hparams();
        let (e, d) = (hp.n_embd, hp.head_dim());
        let (h0, _) = self.group_heads(group);
        let non_finite = self.non_finite();
        let gw = self.group_width()?;
        let (qkv_at, stride) = (mul(self.n_tokens, e)?, mul(3, gw)?);
        let (start, len) = self.span(text)?;
        let (q_tile, k_tile) = (self.plan.q_tile, self.plan.k_tile);
        let tk = k_tile.min(sub(len, k0)?);
        if tk == 0 {
            return Err(Error::InvalidState);
        }
        let scale = 1.0 / libm::sqrtf(d as f32);
        let pair_cost = units(2, &[d]).saturating_add(ATTENTION_PAIR_COST);
        let (scores, rest) =
            self.r.attn.split_at_mut_checked(mul(q_tile, k_tile)?).ok_or(Error::InvalidState)?;
        let (values_t, rest) = rest.split_at_mut_checked(mul(k_tile, d)?).ok_or(Error::InvalidState)?;
        let (run_max, rest) = rest.split_at_mut_checked(len).ok_or(Error::InvalidState)?;
        let run_sum = rest.get_mut(..len).ok_or(Error::InvalidState)?;
        // Token t's q of this head is at `q_of(t)`; its k and v follow at `gw` and `2·gw`. Query
        // i's output row (its accumulator) is `out_of(i)` in the attention output.
        let q_col = mul(head, d)?;
        let q_of = |t: usize| add(mul(t, stride)?, q_col);
        let out_col = mul(add(h0, head)?, d)?;
        let out_of = |i: usize| span(add(mul(add(start, i)?, e)?, out_col)?, d);
        let (ctx, qkv) = self.r.wide.split_at_mut_checked(qkv_at).ok_or(Error::InvalidState)?;
        let qkv = &*qkv;
        if (k0, q0) == (0, 0) {
            run_max.fill(f32::NEG_INFINITY);
            run_sum.fill(0.0);
            for i in 0..len {
                ctx.get_mut(out_of(i)?).ok_or(Error::InvalidState)?.fill(0.0);
            }
        }
        let vt = values_t.get_mut(..mul(d, tk)?).ok_or(Error::InvalidState)?;
        let first_key = add(start, k0)?;
        if q0 == 0 {
            // The block's values, transposed so that each head dimension is a row: value j is
            // column j.
            for j in 0..tk {
                let v_at = add(q_of(add(first_key, j)?)?, mul(2, gw)?)?;
                let v = qkv.get(span(v_at, d)?).ok_or(Error::InvalidState)?;
                for (dim, &x) in vt.chunks_exact_mut(tk).zip(v) {
                    *dim.get_mut(j).ok_or(Error::InvalidState)? = x;
                }
            }
        }
        let keys = qkv.get(add(q_of(first_key)?, gw)?..).ok_or(Error::InvalidState)?;
        let last_block = add(k0, tk)? >= len;
        let (mut q0, mut spent) = (q0, 0u64);
        while q0 < len && (spent == 0 || spent < budget) {
            let tq = q_tile.min(sub(len, q0)?);
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
                    let acc = ctx.get_mut(out_of(i)?).ok_or(Error::InvalidState)?;
                    acc.iter_mut().for_each(|v| *v *= correction);
                }
                *l = *l * correction + ops::exp_and_sum(row, scale, m_new);
                *m = m_new;
            }
            // Accumulators += P·V.
            let acc = ctx.get_mut(out_of(q0)?.start..).ok_or(Error::InvalidState)?;
            self.kernels.gemm_f32_acc(vt, tk, d, tk, block, tk, tq, acc, e)?;
            if last_block {
                for i in tile {
                    let l = *run_sum.get(i).ok_or(Error::InvalidState)?;
                    let out = ctx.get_mut(out_of(i)?).ok_or(Error::InvalidState)?;
                    out.iter_mut().for_each(|v| *v /= l);
                    ensure_finite(out, non_finite)?;
                }
            }
            spent = spent.saturating_add(units(pair_cost, &[tq, tk]));
            q0 = add(q0, tq)?;
        }
        let next = if q0 < len { (k0, q0) } else { (add(k0, tk)?, 0) };
        Ok((next, spent))
    }

    /// The first head of group `group` and how many heads it has (none past the last group).
    pub(super) fn group_heads(&self, group: usize) -> (usize, usize) {
        let n_head = self.model.hparams().n_head;
        let h0 = group.saturating_mul(self.layout.group).min(n_head);
        (h0, self.layout.group.min(n_head.saturating_sub(h0)))
    }

    /// Floats of q (or k, or v) per token in the group layout: a full group's worth.
    pub(super) fn group_width(&self) -> Result<usize> {
        mul(self.layout.group, self.model.hparams().head_dim())
    }
}
