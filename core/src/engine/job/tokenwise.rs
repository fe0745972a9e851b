//! The operations done token by token: embedding, initialising and adding biases, copies,
//! residual additions, norms and the FFN activation. Each works on a run of tokens (`tokens`) of the buffers it is
//! given.

use super::interpreter::Place;
use super::*;
use crate::engine::program::Act;
use checked::mul;

/// Token `t`'s values of `place` in its buffer (from the buffer's start, not the place's).
pub(super) fn row(place: Place, t: usize) -> Result<core::ops::Range<usize>> {
    span(add(add(place.offset, mul(t, place.stride)?)?, place.col)?, place.width)
}

impl<'a> Job<'a> {
    /// Embeds token `t`: its row of `token_embd`, plus its position row (bert) and type row 0,
    /// times √n_embd when `scaled` (gemma-embedding).
    pub(super) fn embed_token<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        t: usize,
        scaled: bool,
    ) -> Result<()> {
        let meta = *self.model.meta();
        let e = self.plan.n_embd;
        let non_finite = self.non_finite();
        let id = *self.r.ids.get(t).ok_or(Error::InvalidState)? as usize;
        let pos = self.position_of(t)?;
        let x = self.r.x.get_mut(nth_row(t, e)?).ok_or(Error::InvalidState)?;
        read_row(io, &self.kernels, self.r.chunk, &meta.token_embd, id, x)?;
        let extra = [meta.position_embd.map(|p| (p, pos)), meta.token_types.map(|t| (t, 0))];
        for (tensor, row) in extra.into_iter().flatten() {
            let tmp = self.r.scratch.get_mut(..e).ok_or(Error::InvalidState)?;
            read_row(io, &self.kernels, self.r.chunk, &tensor, row, tmp)?;
            for (a, b) in x.iter_mut().zip(tmp.iter()) {
                *a += *b;
            }
        }
        if scaled {
            let scale = libm::sqrt(e as f64) as f32;
            x.iter_mut().for_each(|v| *v *= scale);
        }
        ensure_finite(x, non_finite)
    }

    /// `dst ← 0`, then `+= bias` (its elements for the rows `dst` holds) when there is one.
    pub(super) fn init<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        dst: Place,
        bias: Option<TensorRef>,
        tokens: core::ops::Range<usize>,
    ) -> Result<()> {
        let buf = self.buffer(Place { offset: 0, ..dst })?;
        for t in tokens.clone() {
            buf.get_mut(row(dst, t)?).ok_or(Error::InvalidState)?.fill(0.0);
        }
        match bias {
            Some(b) => self.add_vector(io, &b, (dst.first, add(dst.first, dst.width)?), dst, tokens),
            None => Ok(()),
        }
    }

    /// Adds elements `[c0, c1)` of vector tensor `v` to `dst`'s columns of each token of
    /// `tokens`, in pieces that fit the chunk buffer and scratch.
    pub(super) fn add_vector<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        v: &TensorRef,
        (c0, c1): (usize, usize),
        dst: Place,
        tokens: core::ops::Range<usize>,
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
            let buf = if dst.in_wide { &mut *self.r.wide } else { &mut *self.r.x };
            let src = self.r.scratch.get(sub(lo, start)?..sub(hi, start)?).ok_or(Error::InvalidState)?;
            let piece_dst = Place { col: add(dst.col, sub(lo, c0)?)?, width: src.len(), ..dst };
            for t in tokens.clone() {
                let d = buf.get_mut(row(piece_dst, t)?).ok_or(Error::InvalidState)?;
                d.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
            }
            p = hi;
        }
        Ok(())
    }

    /// `dst ← src` for each token of `tokens` (the two as wide).
    pub(super) fn copy(&mut self, src: Place, dst: Place, tokens: core::ops::Range<usize>) -> Result<()> {
        if src.width != dst.width {
            return Err(Error::InvalidState);
        }
        for t in tokens {
            let (from, to) = (row(src, t)?, row(dst, t)?);
            match (src.in_wide, dst.in_wide) {
                (false, true) => copy_between(self.r.x, self.r.wide, from, to)?,
                (true, false) => copy_between(self.r.wide, self.r.x, from, to)?,
                (false, false) => copy_within(self.r.x, from, to)?,
                (true, true) => copy_within(self.r.wide, from, to)?,
            }
        }
        Ok(())
    }

    /// `dst ← LayerNorm(src) · weight + bias` for each token of `tokens`. The weight and bias
    /// are read into scratch when the pass starts (token 0) and stay there.
    pub(super) fn layer_norm<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        (weight, bias): (&TensorRef, &TensorRef),
        src: Place,
        dst: Place,
        tokens: core::ops::Range<usize>,
    ) -> Result<()> {
        let e = dst.width;
        let eps = self.model.hparams().eps;
        if tokens.start == 0 {
            // Norm vectors are single rows.
            let (g, b) = self.r.scratch.split_at_mut_checked(e).ok_or(Error::InvalidState)?;
            let b = b.get_mut(..e).ok_or(Error::InvalidState)?;
            read_row(io, &self.kernels, self.r.chunk, weight, 0, g)?;
            read_row(io, &self.kernels, self.r.chunk, bias, 0, b)?;
        }
        let non_finite = self.non_finite();
        let in_place = src.in_wide == dst.in_wide && src.offset == dst.offset && src.col == dst.col;
        for t in tokens {
            if !in_place {
                self.copy(src, dst, t..add(t, 1)?)?;
            }
            let (g, b) = self.r.scratch.split_at_checked(e).ok_or(Error::InvalidState)?;
            let b = b.get(..e).ok_or(Error::InvalidState)?;
            let buf = if dst.in_wide { &mut *self.r.wide } else { &mut *self.r.x };
            let x = buf.get_mut(row(dst, t)?).ok_or(Error::InvalidState)?;
            ops::layer_norm(x, g, b, eps);
            ensure_finite(x, non_finite)?;
        }
        Ok(())
    }

    /// `dst ← RMSNorm(src) · weight` for each token of `tokens`. The weight is read into
    /// scratch when the pass starts (token 0) and stays there.
    pub(super) fn rms_norm<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        weight: &TensorRef,
        src: Place,
        dst: Place,
        tokens: core::ops::Range<usize>,
    ) -> Result<()> {
        let e = dst.width;
        let eps = self.model.hparams().eps;
        if tokens.start == 0 {
            let g = self.r.scratch.get_mut(..e).ok_or(Error::InvalidState)?;
            read_row(io, &self.kernels, self.r.chunk, weight, 0, g)?;
        }
        let non_finite = self.non_finite();
        let in_place = src.in_wide == dst.in_wide && src.offset == dst.offset && src.col == dst.col;
        for t in tokens {
            if !in_place {
                self.copy(src, dst, t..add(t, 1)?)?;
            }
            let g = self.r.scratch.get(..e).ok_or(Error::InvalidState)?;
            let buf = if dst.in_wide { &mut *self.r.wide } else { &mut *self.r.x };
            let x = buf.get_mut(row(dst, t)?).ok_or(Error::InvalidState)?;
            ops::rms_norm(x, g, eps);
            ensure_finite(x, non_finite)?;
        }
        Ok(())
    }

    /// Each head (`weight.cols` wide) of `dst` (the group's Q or K) ← RMSNorm(head) · weight, for
    /// each token of `tokens`. The weight is read into scratch when the pass starts.
    pub(super) fn head_norm<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        weight: &TensorRef,
        dst: Place,
        tokens: core::ops::Range<usize>,
    ) -> Result<()> {
        let d = weight.cols as usize;
        let eps = self.model.hparams().eps;
        if tokens.start == 0 {
            let g = self.r.scratch.get_mut(..d).ok_or(Error::InvalidState)?;
            read_row(io, &self.kernels, self.r.chunk, weight, 0, g)?;
        }
        let non_finite = self.non_finite();
        let g = self.r.scratch.get(..d).ok_or(Error::InvalidState)?;
        for t in tokens {
            let heads = self.r.wide.get_mut(row(dst, t)?).ok_or(Error::InvalidState)?;
            if heads.len().checked_rem(d) != Some(0) {
                return Err(Error::InvalidState);
            }
            for head in heads.chunks_exact_mut(d) {
                ops::rms_norm(head, g, eps);
            }
            ensure_finite(heads, non_finite)?;
        }
        Ok(())
    }

    /// `dst += src` for each token of `tokens` (the two as wide, one in each region).
    pub(super) fn add(&mut self, src: Place, dst: Place, tokens: core::ops::Range<usize>) -> Result<()> {
        let non_finite = self.non_finite();
        let (from, to) = match (src.in_wide, dst.in_wide) {
            (true, false) => (&*self.r.wide, &mut *self.r.x),
            (false, true) => (&*self.r.x, &mut *self.r.wide),
            _ => return Err(Error::InvalidState),
        };
        if src.width != dst.width {
            return Err(Error::InvalidState);
        }
        for t in tokens {
            let s = from.get(row(src, t)?).ok_or(Error::InvalidState)?;
            let d = to.get_mut(row(dst, t)?).ok_or(Error::InvalidState)?;
            d.iter_mut().zip(s).for_each(|(d, &s)| *d += s);
            ensure_finite(d, non_finite)?;
        }
        Ok(())
    }

    /// The FFN activation on the slab's columns of each token of `tokens`: up ← GELU(up), or
    /// up ← SiLU(gate) ⊙ up, or up ← GELU_tanh(gate) ⊙ up; non-finite results are
    /// [`Error::NonFinite`].
    pub(super) fn activate(
        &mut self,
        act: Act,
        up: Place,
        gate: Place,
        tokens: core::ops::Range<usize>,
    ) -> Result<()> {
        let non_finite = self.non_finite();
        for t in tokens {
            let up_cols = row(up, t)?;
            match act {
                Act::SiluGated | Act::GeluTanhGated => {
                    let (u, g) = self.r.wide.split_at_mut_checked(gate.offset).ok_or(Error::InvalidState)?;
                    let u = u.get_mut(up_cols).ok_or(Error::InvalidState)?;
                    let g = g.get(row(Place { offset: 0, ..gate }, t)?).ok_or(Error::InvalidState)?;
                    let f = if act == Act::SiluGated { ops::silu } else { ops::gelu_tanh };
                    for (u, &g) in u.iter_mut().zip(g) {
                        *u *= f(g);
                    }
                    ensure_finite(u, non_finite)?;
                }
                Act::Gelu => {
                    let u = self.r.wide.get_mut(up_cols).ok_or(Error::InvalidState)?;
                    u.iter_mut().for_each(|v| *v = ops::gelu(*v));
                    ensure_finite(u, non_finite)?;
                }
            }
        }
        Ok(())
    }
}

/// `to ← from` between two buffers.
fn copy_between(
    src: &[f32],
    dst: &mut [f32],
    from: core::ops::Range<usize>,
    to: core::ops::Range<usize>,
) -> Result<()> {
    let s = src.get(from).ok_or(Error::InvalidState)?;
    dst.get_mut(to).ok_or(Error::InvalidState)?.copy_from_slice(s);
    Ok(())
}

/// `to ← from` within one buffer (the ranges as long, in bounds: checked first).
fn copy_within(buf: &mut [f32], from: core::ops::Range<usize>, to: core::ops::Range<usize>) -> Result<()> {
    if from.len() != to.len() || from.end.max(to.end) > buf.len() {
        return Err(Error::InvalidState);
    }
    buf.copy_within(from, to.start);
    Ok(())
}
