//! The stages of one transformer layer: Q/K/V by head group, the attention output projection,
//! the norms and the FFN by slab, each a bounded piece of work per call; and the weight
//! streaming they share.

use super::*;

impl<'a> Job<'a> {
    pub(super) fn layer_step<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        index: usize,
        stage: Stage,
        budget: u64,
    ) -> Result<u64> {
        let hp = *self.model.hparams();
        let (e, n) = (hp.n_embd, self.n_tokens);
        let layer = self.current_layer()?;
        let non_finite = self.non_finite();
        let at = |stage| Phase::Layer { index, stage };
        let d = hp.head_dim();
        let (next, spent) = match stage {
            Stage::QkvInit { group, token } => {
                let (h0, heads) = self.group_heads(group);
                let (dg, gw) = (mul(heads, d)?, self.group_width()?);
                let count = self.tokens_for(token, units(BIAS_COST, &[3, dg]), budget);
                let rows = Tokens { first: token, count };
                for (part, col) in [0, gw, mul(2, gw)?].into_iter().enumerate() {
                    let (w, first_row) = qkv_rows(&layer.qkv, part, e)?;
                    let bias = match w.bias {
                        Some(b) => Some((b, add(first_row, mul(h0, d)?)?)),
                        None => None,
                    };
                    self.init_rows(io, bias, Target::Qkv, rows, col, dg)?;
                }
                let next = add(token, count)?;
                let stage = if next >= n {
                    Stage::Qkv { group, row: 0 }
                } else {
                    Stage::QkvInit { group, token: next }
                };
                (at(stage), units(BIAS_COST, &[count, 3, dg]))
            }
            Stage::Qkv { group, row } => {
                // Rows of q, then k, then v for the group's heads.
                let (h0, heads) = self.group_heads(group);
                let (dg, gw) = (mul(heads, d)?, self.group_width()?);
                let part = row.checked_div(dg).ok_or(Error::InvalidState)?;
                let local = row.checked_rem(dg).ok_or(Error::InvalidState)?;
                let (w, first_row) = qkv_rows(&layer.qkv, part, e)?;
                let rows = self.rows_for(&w.weight, e, sub(dg, local)?, budget);
                let (stride, col) = (mul(3, gw)?, add(mul(part, gw)?, local)?);
                let qkv_at = mul(n, e)?;
                let (src, dst) = (&*self.r.x, &mut *self.r.wide);
                let dst = dst.get_mut(add(qkv_at, col)?..).ok_or(Error::InvalidState)?;
                let first = add(add(first_row, mul(h0, d)?)?, local)?;
                let spent = matmul_rows(
                    io,
                    &self.kernels,
                    self.r.chunk,
                    self.r.scratch,
                    &w.weight,
                    first,
                    rows,
                    (0, e),
                    src,
                    e,
                    n,
                    dst,
                    stride,
                    Some(non_finite),
                )?;
                let next = add(row, rows)?;
                let stage = if next < mul(3, dg)? {
                    Stage::Qkv { group, row: next }
                } else if self.model.meta().arch == Arch::NomicBert {
                    Stage::Rope { group, token: 0 }
                } else {
                    Stage::Attention { group, text: 0, head: 0, k0: 0, q0: 0 }
                };
                (at(stage), spent)
            }
            Stage::Rope { group, token } => {
                let (_, heads) = self.group_heads(group);
                let dg = mul(heads, d)?;
                let per_token =
                    units(ROPE_PAIR_COST, &[d / 2]).saturating_add(units(ROPE_COST + FINITE_COST, &[2, dg]));
                let count = self.tokens_for(token, per_token, budget);
                self.rope(group, Tokens { first: token, count })?;
                let next = add(token, count)?;
                let stage = if next >= n {
                    Stage::Attention { group, text: 0, head: 0, k0: 0, q0: 0 }
                } else {
                    Stage::Rope { group, token: next }
                };
                (at(stage), per_token.saturating_mul(count as u64))
            }
            Stage::Attention { group, text, head, k0, q0 } => {
                let (_, len) = self.span(text)?;
                let (_, heads) = self.group_heads(group);
                let ((k0, q0), spent) = self.attention_step(group, text, head, (k0, q0), budget)?;
                let (next_head, next_text, next_group) = (add(head, 1)?, add(text, 1)?, add(group, 1)?);
                let stage = if k0 < len {
                    Stage::Attention { group, text, head, k0, q0 }
                } else if next_head < heads {
                    Stage::Attention { group, text, head: next_head, k0: 0, q0: 0 }
                } else if next_text < self.n_texts {
                    Stage::Attention { group, text: next_text, head: 0, k0: 0, q0: 0 }
                } else if mul(next_group, self.layout.group)? < hp.n_head {
                    Stage::QkvInit { group: next_group, token: 0 }
                } else {
                    Stage::OutInit { token: 0 }
                };
                (at(stage), spent)
            }
            Stage::OutInit { token } => {
                let count = self.tokens_for(token, units(BIAS_COST, &[e]), budget);
                if let Some(b) = layer.attn_out.bias {
                    self.add_vector(io, &b, (0, e), Target::X, Tokens { first: token, count }, 0)?;
                }
                let next = add(token, count)?;
                let stage = if next >= n { Stage::Out { row: 0 } } else { Stage::OutInit { token: next } };
                (at(stage), units(BIAS_COST, &[count, e]))
            }
            Stage::Out { row } => {
                // x += attention output (at the start of the wide region, stride e) · Woᵀ.
                let w = layer.attn_out.weight;
                let rows = self.rows_for(&w, e, sub(e, row)?, budget);
                let (src, dst) = (&*self.r.wide, &mut *self.r.x);
                let spent = matmul_rows(
                    io,
                    &self.kernels,
                    self.r.chunk,
                    self.r.scratch,
                    &w,
                    row,
                    rows,
                    (0, e),
                    src,
                    e,
                    n,
                    dst.get_mut(row..).ok_or(Error::InvalidState)?,
                    e,
                    Some(non_finite),
                )?;
                let next = add(row, rows)?;
                let stage = if next < e { Stage::Out { row: next } } else { Stage::AttnNorm { token: 0 } };
                (at(stage), spent)
            }
            Stage::AttnNorm { token } => {
                let (next, spent) = self.norm_pass(io, &layer.attn_norm, token, budget, false)?;
                let stage =
                    if next >= n { Stage::FfnInit { token: 0 } } else { Stage::AttnNorm { token: next } };
                (at(stage), spent)
            }
            Stage::FfnInit { token } => {
                let count = self.tokens_for(token, units(BIAS_COST, &[e]), budget);
                // y = x (+ bias): y lives at the start of the wide region, n × e.
                for t in span(token, count)? {
                    let src = self.r.x.get(nth_row(t, e)?).ok_or(Error::InvalidState)?;
                    let dst = self.r.wide.get_mut(nth_row(t, e)?).ok_or(Error::InvalidState)?;
                    dst.copy_from_slice(src);
                }
                if let Some(b) = layer.ffn_down.bias {
                    self.add_vector(io, &b, (0, e), Target::Y, Tokens { first: token, count }, 0)?;
                }
                let next = add(token, count)?;
                let stage = if next >= n {
                    Stage::SlabInit { slab: 0, token: 0 }
                } else {
                    Stage::FfnInit { token: next }
                };
                (at(stage), units(BIAS_COST, &[count, e]))
            }
            Stage::SlabInit { slab, token } => {
                let (s0, s1) = self.slab_cols(slab);
                let width = sub(s1, s0)?;
                let count = self.tokens_for(token, units(BIAS_COST, &[2, width]), budget);
                let rows = Tokens { first: token, count };
                for (lin, target) in [(Some(layer.ffn_up), Target::Up), (layer.ffn_gate, Target::Gate)] {
                    let Some(lin) = lin else { continue };
                    self.init_rows(io, None, target, rows, 0, width)?;
                    if let Some(b) = lin.bias {
                        self.add_vector(io, &b, (s0, s1), target, rows, 0)?;
                    }
                }
                let next = add(token, count)?;
                let stage = if next >= n {
                    Stage::Up { slab, row: 0 }
                } else {
                    Stage::SlabInit { slab, token: next }
                };
                (at(stage), units(BIAS_COST, &[count, width]))
            }
            Stage::Up { slab, row } => {
                let (s0, s1) = self.slab_cols(slab);
                let width = sub(s1, s0)?;
                let gated = layer.ffn_gate.is_some();
                let total = if gated { mul(2, width)? } else { width };
                let (lin, local, target) = if row < width {
                    (layer.ffn_up, row, Target::Up)
                } else {
                    (layer.ffn_gate.ok_or(Error::InvalidState)?, sub(row, width)?, Target::Gate)
                };
                let end = if row < width { width } else { total };
                let rows = self.rows_for(&lin.weight, e, sub(end, row)?, budget);
                let (y_h, slab_stride) = (self.wide_offset(target)?, self.layout.slab);
                let (src, dst) = (&*self.r.x, &mut *self.r.wide);
                let dst = dst.get_mut(add(y_h, local)?..).ok_or(Error::InvalidState)?;
                let spent = matmul_rows(
                    io,
                    &self.kernels,
                    self.r.chunk,
                    self.r.scratch,
                    &lin.weight,
                    add(s0, local)?,
                    rows,
                    (0, e),
                    src,
                    e,
                    n,
                    dst,
                    slab_stride,
                    // The activation checks its result, which is not finite where up or gate
                    // is not.
                    None,
                )?;
                let next = add(row, rows)?;
                let stage =
                    if next < total { Stage::Up { slab, row: next } } else { Stage::Act { slab, token: 0 } };
                (at(stage), spent)
            }
            Stage::Act { slab, token } => {
                let (s0, s1) = self.slab_cols(slab);
                let width = sub(s1, s0)?;
                let count = self.tokens_for(token, units(ACT_COST + FINITE_COST, &[width]), budget);
                self.activate(token, count, width, layer.ffn_gate.is_some())?;
                let next = add(token, count)?;
                let stage =
                    if next >= n { Stage::Down { slab, row: 0 } } else { Stage::Act { slab, token: next } };
                (at(stage), units(ACT_COST + FINITE_COST, &[count, width]))
            }
            Stage::Down { slab, row } => {
                let (s0, s1) = self.slab_cols(slab);
                let w = layer.ffn_down.weight;
                let rows = self.rows_for(&w, sub(s1, s0)?, sub(e, row)?, budget);
                let up_at = self.wide_offset(Target::Up)?;
                let (y, h) = self.r.wide.split_at_mut_checked(up_at).ok_or(Error::InvalidState)?;
                let spent = matmul_rows(
                    io,
                    &self.kernels,
                    self.r.chunk,
                    self.r.scratch,
                    &w,
                    row,
                    rows,
                    (s0, s1),
                    h,
                    self.layout.slab,
                    n,
                    y.get_mut(row..).ok_or(Error::InvalidState)?,
                    e,
                    // y accumulates over the slabs, and a NaN or an infinity stays one when
                    // finite values (or more of them) are added: only the last slab's sums are
                    // checked.
                    (s1 >= hp.n_ff).then_some(non_finite),
                )?;
                let next = add(row, rows)?;
                let stage = if next < e {
                    Stage::Down { slab, row: next }
                } else if s1 < hp.n_ff {
                    Stage::SlabInit { slab: add(slab, 1)?, token: 0 }
                } else {
                    Stage::OutNorm { token: 0 }
                };
                (at(stage), spent)
            }
            Stage::OutNorm { token } => {
                let (next, spent) = self.norm_pass(io, &layer.out_norm, token, budget, true)?;
                if next >= n {
                    (self.enter_layer(add(index, 1)?)?, spent)
                } else {
                    (at(Stage::OutNorm { token: next }), spent)
                }
            }
        };
        self.phase = next;
        Ok(spent)
    }

    /// Weight rows (of `k` columns) to process now: what fits the chunk buffer and the budget,
    /// at least one, at most `left`.
    fn rows_for(&self, w: &TensorRef, k: usize, left: usize, budget: u64) -> usize {
        let (_, span) = w.col_span(0, k);
        let fit_chunk = self.r.chunk.len().checked_div(span).unwrap_or(0);
        let per_row = (self.n_tokens as u64).saturating_mul(k as u64).max(1);
        let fit_budget = usize::try_from(budget.checked_div(per_row).unwrap_or(0)).unwrap_or(usize::MAX);
        fit_chunk.min(fit_budget).max(1).min(left)
    }

    /// Columns `[s0, s1)` of the FFN hidden layer in slab `slab`.
    fn slab_cols(&self, slab: usize) -> (usize, usize) {
        let ff = self.model.hparams().n_ff;
        let s0 = slab.saturating_mul(self.layout.slab).min(ff);
        (s0, s0.saturating_add(self.layout.slab).min(ff))
    }

    /// Where `target` starts in the wide region (see [`place`]).
    fn wide_offset(&self, target: Target) -> Result<usize> {
        Ok(place(target, self.n_tokens, &self.plan, self.layout)?.1)
    }

    /// The FFN activation on tokens `[token, token + count)` of the current slab (`width`
    /// columns): up ← GELU(up), or up ← SiLU(gate) ⊙ up; non-finite results are
    /// [`Error::NonFinite`].
    fn activate(&mut self, token: usize, count: usize, width: usize, gated: bool) -> Result<()> {
        let s = self.layout.slab;
        let non_finite = self.non_finite();
        let up_at = self.wide_offset(Target::Up)?;
        let gate_at = self.wide_offset(Target::Gate)?;
        for t in span(token, count)? {
            // Token t's columns, from the start of the up (or gate) region.
            let cols = span(mul(t, s)?, width)?;
            let up_cols = span(add(up_at, cols.start)?, width)?;
            if gated {
                let (up, gate) = self.r.wide.split_at_mut_checked(gate_at).ok_or(Error::InvalidState)?;
                let u = up.get_mut(up_cols).ok_or(Error::InvalidState)?;
                let g = gate.get(cols).ok_or(Error::InvalidState)?;
                for (u, &g) in u.iter_mut().zip(g) {
                    *u *= ops::silu(g);
                }
                ensure_finite(u, non_finite)?;
            } else {
                let u = self.r.wide.get_mut(up_cols).ok_or(Error::InvalidState)?;
                u.iter_mut().for_each(|v| *v = ops::gelu(*v));
                ensure_finite(u, non_finite)?;
            }
        }
        Ok(())
    }

    /// Sets columns `[col, col + width)` of `rows` of `target` to elements `[first, first +
    /// width)` of `bias = Some((tensor, first))`, or to zero.
    fn init_rows<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        bias: Option<(TensorRef, usize)>,
        target: Target,
        rows: Tokens,
        col: usize,
        width: usize,
    ) -> Result<()> {
        let (buf, stride) = self.target(target)?;
        for t in rows.range()? {
            let at = add(mul(t, stride)?, col)?;
            buf.get_mut(span(at, width)?).ok_or(Error::InvalidState)?.fill(0.0);
        }
        match bias {
            Some((b, first)) => self.add_vector(io, &b, (first, add(first, width)?), target, rows, col),
            None => Ok(()),
        }
    }

    /// Adds elements `[c0, c1)` of vector tensor `v` to the columns from `col` on of `rows` of
    /// `target`, in pieces that fit the chunk buffer and scratch.
    fn add_vector<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        v: &TensorRef,
        (c0, c1): (usize, usize),
        target: Target,
        rows: Tokens,
        col: usize,
    ) -> Result<()> {
        let be = v.ty.block_elems() as usize;
        let bb = v.ty.block_bytes() as usize;
        let blocks = |bytes: usize, per_block: usize| bytes.checked_div(per_block).unwrap_or(0);
        let piece = mul(blocks(self.r.chunk.len(), bb).min(blocks(self.r.scratch.len(), be)).max(1), be)?;
        let c1_block_end = c1.checked_next_multiple_of(be).ok_or(Error::InvalidState)?;
        let mut p = c0;
        while p < c1 {
            // Pieces start at block boundaries of the vector.
            let start = sub(p, p.checked_rem(be).ok_or(Error::InvalidState)?)?;
            let end = add(start, piece)?.min(v.cols as usize).min(c1_block_end);
            let (lo, hi) = (p, end.min(c1));
            if hi <= lo {
                // Columns past the vector's end: the caller's range is wrong.
                return Err(Error::InvalidState);
            }
            let (off, bytes) = v.col_span(start, end);
            let raw = self.r.chunk.get_mut(..bytes).ok_or(Error::InvalidState)?;
            read_exact_at(io, v.offset.saturating_add(off), raw)?;
            let vals = self.r.scratch.get_mut(..sub(end, start)?).ok_or(Error::InvalidState)?;
            self.kernels.dequantize(v.ty, raw, vals)?;
            let (buf, stride) =
                target_buf(self.r.x, self.r.wide, place(target, self.n_tokens, &self.plan, self.layout)?)?;
            let src = self.r.scratch.get(sub(lo, start)?..sub(hi, start)?).ok_or(Error::InvalidState)?;
            let dst_col = add(col, sub(lo, c0)?)?;
            for t in rows.range()? {
                let at = add(mul(t, stride)?, dst_col)?;
                let dst = buf.get_mut(span(at, src.len())?).ok_or(Error::InvalidState)?;
                dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
            }
            p = hi;
        }
        Ok(())
    }

    /// A target buffer and its row stride.
    fn target(&mut self, target: Target) -> Result<(&mut [f32], usize)> {
        target_buf(self.r.x, self.r.wide, place(target, self.n_tokens, &self.plan, self.layout)?)
    }
}

/// Where an element-wise pass writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The hidden states.
    X,
    /// The group's Q|K|V after the attention output in the wide region.
    Qkv,
    /// The FFN output y at the start of the wide region (stride n_embd).
    Y,
    /// The slab's up (or only) hidden columns.
    Up,
    /// The slab's gate columns.
    Gate,
}

/// Where a target lies: `(in the wide region, offset, row stride)` — the wide region holds the
/// attention output or FFN output y (n × n_embd) first, then the group's Q|K|V or the slab's up
/// columns (n × slab), then its gate columns.
fn place(target: Target, n_tokens: usize, plan: &Plan, layout: Layout) -> Result<(bool, usize, usize)> {
    let e = plan.n_embd;
    let after_y = mul(n_tokens, e)?;
    Ok(match target {
        Target::X => (false, 0, e),
        Target::Y => (true, 0, e),
        Target::Qkv => (true, after_y, mul(mul(3, layout.group)?, plan.head_dim)?),
        Target::Up => (true, after_y, layout.slab),
        Target::Gate => (true, add(after_y, mul(n_tokens, layout.slab)?)?, layout.slab),
    })
}

/// A target's buffer (from its offset on) and its row stride.
fn target_buf<'r>(
    x: &'r mut [f32],
    wide: &'r mut [f32],
    (in_wide, offset, stride): (bool, usize, usize),
) -> Result<(&'r mut [f32], usize)> {
    let buf = if in_wide { wide } else { x };
    Ok((buf.get_mut(offset..).ok_or(Error::InvalidState)?, stride))
}

/// The matrix holding part `part` (0 = q, 1 = k, 2 = v) of the Q|K|V projection, and the row
/// where that part starts in it.
fn qkv_rows(qkv: &Qkv, part: usize, n_embd: usize) -> Result<(Linear, usize)> {
    Ok(match qkv {
        Qkv::Fused(l) => (*l, mul(part, n_embd)?),
        Qkv::Separate([q, k, v]) => (
            match part {
                0 => *q,
                1 => *k,
                _ => *v,
            },
            0,
        ),
    })
}

/// Reads `rows` weight rows from `first` on (columns `[c0, c1)` of each) into `chunk`,
/// accumulates `out[t·out_stride + r] += Σ W[r]·x[t]` for all `n` tokens, and, given
/// `check = Some(non_finite)`, checks the sums: a NaN or an infinity among them is
/// `non_finite`. Returns the work units.
#[allow(clippy::too_many_arguments)]
fn matmul_rows<S: Source + ?Sized>(
    io: &mut S,
    kernels: &Kernels,
    chunk: &mut [u8],
    scratch: &mut [f32],
    w: &TensorRef,
    first: usize,
    rows: usize,
    (c0, c1): (usize, usize),
    x: &[f32],
    x_stride: usize,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    check: Option<Error>,
) -> Result<u64> {
    let k = c1.saturating_sub(c0);
    let (col_off, span) = w.col_span(c0, c1);
    let raw = chunk.get_mut(..rows.saturating_mul(span)).ok_or(Error::InvalidState)?;
    if span == w.row_bytes() {
        read_exact_at(io, w.row_offset(first), raw)?;
    } else {
        for (i, row) in raw.chunks_exact_mut(span.max(1)).enumerate() {
            read_exact_at(io, w.row_offset(first.saturating_add(i)).saturating_add(col_off), row)?;
        }
    }
    kernels.matmul_acc(w.ty, raw, rows, k, x, x_stride, n, out, out_stride, scratch)?;
    let mut per_token = k as u64;
    if let Some(non_finite) = check {
        for sums in out.chunks(out_stride.max(1)).take(n) {
            ensure_finite(sums.get(..rows).ok_or(Error::InvalidState)?, non_finite)?;
        }
        per_token = per_token.saturating_add(FINITE_COST);
    }
    Ok((rows as u64).saturating_mul(per_token).saturating_mul(n as u64))
}
