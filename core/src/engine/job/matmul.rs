//! The matrix product `dst += src · Wᵀ`, weight-stationary: a run of weight rows is read into
//! the chunk buffer once and applied to every token of the job.
//!
//! Its unit is one weight row. The rows of one call are read together ([`read_rows`]) and then
//! multiplied ([`multiply`]); any sub-range of those rows can be multiplied on its own, into
//! its own output columns, which is the seam for splitting a call over threads.
//!
//! In [`Mode::Fast`], a product whose weights have an int8 kernel ([`Job::q8_k`]) first
//! quantizes every token's input row into the int8 region, one token per unit (the operation's
//! first `n_tokens` units, [`Job::matmul_lead`]), then multiplies the weight rows with those
//! blocks ([`Kernels::matmul_q8_acc`]: no f32 decoding of the weights). The region keeps the
//! last input quantized until an operation writes it: the products of every head group over
//! the same hidden states, and an FFN slab's up and gate, quantize it once. Each token's blocks
//! and each row's sums depend on nothing else, so any budget gives the same bits.
//!
//! The region has two halves: the blocks, and their residual ([`quantize_q8_refined`]): a
//! token whose int8 row is off by more than [`REFINE_ABOVE`] of its norm (large channels set
//! the scale of its blocks) gets the blocks of what the first pass missed, and every weight row
//! multiplies those too ([`Kernels::matmul_q8r_acc`]); a row unit then costs the refined tokens
//! twice, known once the input is quantized ([`Q8Held::refined`]).
//!
//! [`REFINE_ABOVE`]: crate::quant::REFINE_ABOVE

use super::interpreter::{Pc, Place, Q8Held};
use super::parts::{multiply_split, Parallel, Product};
use super::*;
use crate::engine::program::{Buf, Tensor};
use crate::quant::{has_q8_kernel, matmul_q8_scratch_len, q8_blocks, quantize_q8_refined, BlockQ8};
use checked::mul;

impl<'a> Job<'a> {
    /// The input length `k` of a product of `w` over `src` when it runs on the int8 kernel: in
    /// [`Mode::Fast`], for a weight type that has one, `k` a whole number of 32-element blocks,
    /// the blocks of the job's tokens fitting the int8 region and a weight panel the scratch.
    /// `None`: the f32 path.
    pub(super) fn q8_k(&self, w: &TensorRef, src: Place) -> Option<usize> {
        let k = src.width;
        let fits = q8_blocks(k, self.n_tokens).is_some_and(|b| b <= self.r.q8.len() / 2);
        let panel_fits = matmul_q8_scratch_len(k) <= self.r.scratch.len();
        let fast = self.options.mode == Mode::Fast && has_q8_kernel(w.ty);
        (fast && k > 0 && fits && panel_fits).then_some(k)
    }

    /// Units of the product at `pc` that quantize its input before any weight row: one per token
    /// on the int8 path, none on the f32 path nor when the int8 region already holds that input
    /// (quantized by an earlier product and not written since). The same for every unit of the
    /// product.
    pub(super) fn matmul_lead(&self, w: Tensor, src: Buf, pc: Pc) -> Result<usize> {
        let w = self.tensor(w).ok_or(Error::InvalidState)?;
        let src = self.place(src, pc)?;
        let held = self.q8_held.is_some_and(|h| h.src == src && h.by != pc.operation());
        Ok(match self.q8_k(&w, src) {
            Some(_) if !held => self.n_tokens,
            _ => 0,
        })
    }

    /// Tokens of `src` whose int8 blocks have a residual, for the product of `w` over it: those
    /// [`Job::quantize`] counted when the region holds `src` and the product runs on the int8
    /// path, else 0.
    pub(super) fn q8_refined(&self, w: &TensorRef, src: Place) -> usize {
        match self.q8_held {
            Some(h) if h.src == src && self.q8_k(w, src).is_some() => h.refined,
            _ => 0,
        }
    }

    /// Quantizes tokens `tokens` of `src` (its `src.width` columns) into the int8 region for
    /// the product at `pc`, `src.width / 32` blocks per token from token 0 on; after the last
    /// token the region holds `src` for later products. A NaN or an infinity is the current
    /// stage's [`Error::NonFinite`].
    pub(super) fn quantize(&mut self, src: Place, pc: Pc, tokens: core::ops::Range<usize>) -> Result<()> {
        self.q8_held = None;
        if tokens.start == 0 {
            self.q8_refined = 0;
        }
        let complete = tokens.end == self.n_tokens;
        let non_finite = self.non_finite();
        let k = src.width;
        let buf: &[f32] = if src.in_wide { self.r.wide } else { self.r.x };
        let from = add(src.offset, add(mul(tokens.start, src.stride)?, src.col)?)?;
        let x = buf.get(from..).ok_or(Error::InvalidState)?;
        let (blocks, residual) = halves(self.r.q8);
        let at = mul(tokens.start, k / 32)?;
        let dst = blocks.get_mut(at..).ok_or(Error::InvalidState)?;
        let res = residual.get_mut(at..).ok_or(Error::InvalidState)?;
        let refined = quantize_q8_refined(x, src.stride, k, tokens.len(), dst, res).map_err(|e| match e {
            Error::NonFinite { .. } => non_finite,
            e => e,
        })?;
        self.q8_refined = add(self.q8_refined, refined)?;
        if complete {
            self.q8_held = Some(Q8Held { src, by: pc.operation(), refined: self.q8_refined });
        }
        Ok(())
    }

    /// `dst += src · W[rows]ᵀ` for all tokens: `rows` are units of `dst`'s selection (rows
    /// `dst.first + rows` of `w`), over the columns `src` holds (`[src.first, src.first +
    /// src.width)` of each weight row); on the int8 path from the blocks [`Job::quantize`] made
    /// of them. With `check = Some(non_finite)`, the new sums are checked for NaN and infinity.
    /// `par` runs the parts the rows are split into ([`multiply_split`]).
    pub(super) fn matmul<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        w: &TensorRef,
        (src, dst): (Place, Place),
        rows: core::ops::Range<usize>,
        check: Option<Error>,
        par: &dyn Parallel,
    ) -> Result<()> {
        let n = self.n_tokens;
        let count = rows.len();
        let first = add(dst.first, rows.start)?;
        let cols = (src.first, add(src.first, src.width)?);
        let q8 = self.q8_k(w, src).is_some();
        let refined = self.q8_refined(w, src);
        let raw = read_rows(io, self.r.chunk, w, first, count, cols)?;
        let (x, out) = apart(self.r.x, self.r.wide, src, Place { col: add(dst.col, rows.start)?, ..dst })?;
        let input = match q8 {
            true => {
                let (blocks, residual) = halves(self.r.q8);
                let residual = (refined > 0).then_some(&*residual);
                Activations::Q8(blocks, residual, src.width / 32)
            }
            false => Activations::F32(x, src.stride),
        };
        let (ty, k, out_stride, kernels) = (w.ty, src.width, dst.stride, self.kernels);
        let product =
            Product { kernels, ty, raw, rows: count, k, input, n_tokens: n, out: &mut *out, out_stride };
        let scratch_len = self.plan.scratch;
        multiply_split(par, product, self.r.scratch, self.r.parts, self.plan.parts, scratch_len)?;
        if let Some(non_finite) = check {
            for sums in out.chunks(dst.stride.max(1)).take(n) {
                ensure_finite(sums.get(..count).ok_or(Error::InvalidState)?, non_finite)?;
            }
        }
        Ok(())
    }
}

/// Reads rows `[first, first + count)` of `w`, columns `[c0, c1)` of each (whole blocks), into
/// `chunk`; returns the bytes read.
pub(super) fn read_rows<'c, S: Source + ?Sized>(
    io: &mut S,
    chunk: &'c mut [u8],
    w: &TensorRef,
    first: usize,
    count: usize,
    (c0, c1): (usize, usize),
) -> Result<&'c [u8]> {
    let (col_off, span) = w.col_span(c0, c1);
    let raw = chunk.get_mut(..mul(count, span)?).ok_or(Error::InvalidState)?;
    if span == w.row_bytes() {
        read_exact_at(io, w.row_offset(first), raw)?;
    } else {
        for (i, row) in raw.chunks_exact_mut(span.max(1)).enumerate() {
            read_exact_at(io, w.row_offset(first.saturating_add(i)).saturating_add(col_off), row)?;
        }
    }
    Ok(raw)
}

/// A matrix product's input rows with their stride: f32 values (floats apart), or int8 blocks
/// and, where some token has one, their residual (blocks apart, [`Mode::Fast`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Activations<'b> {
    F32(&'b [f32], usize),
    Q8(&'b [BlockQ8], Option<&'b [BlockQ8]>, usize),
}

/// The int8 region's two halves: the blocks of the input, and their residual
/// ([`quantize_q8_refined`]), each room for the same blocks.
fn halves(q8: &mut [BlockQ8]) -> (&mut [BlockQ8], &mut [BlockQ8]) {
    let half = q8.len() / 2;
    let (blocks, rest) = q8.split_at_mut(half);
    (blocks, rest.get_mut(..half).unwrap_or_default())
}

/// `out[t·out_stride + r] += Σ W[r]·x[t]` for the `rows` weight rows of `raw` (`k` columns of
/// type `ty` each) and `n` tokens of `x`. Rows are independent of each other: any split of
/// `raw` into runs of whole rows, each with its part of `out`, computes the same.
#[allow(clippy::too_many_arguments)]
pub(super) fn multiply(
    kernels: &Kernels,
    ty: crate::gguf::GgmlType,
    raw: &[u8],
    rows: usize,
    k: usize,
    x: Activations<'_>,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    scratch: &mut [f32],
) -> Result<()> {
    match x {
        Activations::F32(x, stride) => {
            kernels.matmul_acc(ty, raw, rows, k, x, stride, n, out, out_stride, scratch)
        }
        Activations::Q8(xq, None, stride) => {
            kernels.matmul_q8_acc(ty, raw, rows, k, xq, stride, n, out, out_stride, scratch)
        }
        Activations::Q8(xq, Some(xr), stride) => {
            kernels.matmul_q8r_acc(ty, raw, rows, k, (xq, xr), stride, n, out, out_stride, scratch)
        }
    }
}

/// `src`'s values (from its column on) and `dst`'s (likewise), borrowed together: from the two
/// regions, or from one split between them (the one that starts later must not reach back into
/// the other, which the kernel's size checks enforce).
fn apart<'b>(
    x: &'b mut [f32],
    wide: &'b mut [f32],
    src: Place,
    dst: Place,
) -> Result<(&'b [f32], &'b mut [f32])> {
    let at = |p: Place| add(p.offset, p.col);
    let (s, d) = match (src.in_wide, dst.in_wide) {
        (false, true) => (x.get(at(src)?..), wide.get_mut(at(dst)?..)),
        (true, false) => (wide.get(at(src)?..), x.get_mut(at(dst)?..)),
        (same, _) => {
            let buf = if same { wide } else { x };
            if src.offset > dst.offset {
                let (lo, hi) = buf.split_at_mut_checked(src.offset).ok_or(Error::InvalidState)?;
                (hi.get(src.col..), lo.get_mut(at(dst)?..))
            } else {
                let (lo, hi) = buf.split_at_mut_checked(dst.offset).ok_or(Error::InvalidState)?;
                (lo.get(at(src)?..), hi.get_mut(dst.col..))
            }
        }
    };
    Ok((s.ok_or(Error::InvalidState)?, d.ok_or(Error::InvalidState)?))
}
