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

use super::interpreter::{Pc, Place, Q8Held};
use super::parts::{multiply_split, Parallel, Product};
use super::*;
use crate::engine::program::{Buf, Tensor};
use crate::quant::{has_q8_kernel, matmul_q8_scratch_len, q8_blocks, quantize_q8, BlockQ8};
use checked::mul;

impl<'a> Job<'a> {
    /// The input length `k` of a product of `w` over `src` when it runs on the int8 kernel: in
    /// [`Mode::Fast`], for a weight type that has one, `k` a whole number of 32-element blocks,
    /// the blocks of the job's tokens fitting the int8 region and a weight panel the scratch.
    /// `None`: the f32 path.
    pub(super) fn q8_k(&self, w: &TensorRef, src: Place) -> Option<usize> {
        let k = src.width;
        let fits = q8_blocks(k, self.n_tokens).is_some_and(|b| b <= self.r.q8.len());
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

    /// Quantizes tokens `tokens` of `src` (its `src.width` columns) into the int8 region for
    /// the product at `pc`, `src.width / 32` blocks per token from token 0 on; after the last
    /// token the region holds `src` for later products. A NaN or an infinity is the current
    /// stage's [`Error::NonFinite`].
    pub(super) fn quantize(&mut self, src: Place, pc: Pc, tokens: core::ops::Range<usize>) -> Result<()> {
        self.q8_held = None;
        let complete = tokens.end == self.n_tokens;
        let non_finite = self.non_finite();
        let k = src.width;
        let buf: &[f32] = if src.in_wide { self.r.wide } else { self.r.x };
        let from = add(src.offset, add(mul(tokens.start, src.stride)?, src.col)?)?;
        let x = buf.get(from..).ok_or(Error::InvalidState)?;
        let dst = self.r.q8.get_mut(mul(tokens.start, k / 32)?..).ok_or(Error::InvalidState)?;
        quantize_q8(x, src.stride, k, tokens.len(), dst).map_err(|e| match e {
            Error::NonFinite { .. } => non_finite,
            e => e,
        })?;
        if complete {
            self.q8_held = Some(Q8Held { src, by: pc.operation() });
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
        let raw = read_rows(io, self.r.chunk, w, first, count, cols)?;
        let (x, out) = apart(self.r.x, self.r.wide, src, Place { col: add(dst.col, rows.start)?, ..dst })?;
        let input = match q8 {
            true => Activations::Q8(self.r.q8, src.width / 32),
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
/// (blocks apart, [`Mode::Fast`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Activations<'b> {
    F32(&'b [f32], usize),
    Q8(&'b [BlockQ8], usize),
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
        Activations::Q8(xq, stride) => {
            kernels.matmul_q8_acc(ty, raw, rows, k, xq, stride, n, out, out_stride, scratch)
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
