//! The matrix product `dst += src · Wᵀ`, weight-stationary: a run of weight rows is read into
//! the chunk buffer once and applied to every token of the job.
//!
//! Its unit is one weight row. The rows of one call are read together ([`read_rows`]) and then
//! multiplied ([`multiply`]); any sub-range of those rows can be multiplied on its own, into
//! its own output columns, which is the seam for splitting a call over threads or for another
//! kernel (8-bit activations) taking the same rows.

use super::interpreter::Place;
use super::*;
use checked::mul;

impl<'a> Job<'a> {
    /// `dst += src · W[rows]ᵀ` for all tokens: `rows` are units of `dst`'s selection (rows
    /// `dst.first + rows` of `w`), over the columns `src` holds (`[src.first, src.first +
    /// src.width)` of each weight row). With `check = Some(non_finite)`, the new sums are
    /// checked for NaN and infinity.
    pub(super) fn matmul<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        w: &TensorRef,
        src: Place,
        dst: Place,
        rows: core::ops::Range<usize>,
        check: Option<Error>,
    ) -> Result<()> {
        let n = self.n_tokens;
        let count = rows.len();
        let first = add(dst.first, rows.start)?;
        let cols = (src.first, add(src.first, src.width)?);
        let raw = read_rows(io, self.r.chunk, w, first, count, cols)?;
        let (x, out) = apart(self.r.x, self.r.wide, src, Place { col: add(dst.col, rows.start)?, ..dst })?;
        multiply(
            &self.kernels,
            w.ty,
            raw,
            count,
            src.width,
            x,
            src.stride,
            n,
            out,
            dst.stride,
            self.r.scratch,
        )?;
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
    x: &[f32],
    x_stride: usize,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    scratch: &mut [f32],
) -> Result<()> {
    kernels.matmul_acc(ty, raw, rows, k, x, x_stride, n, out, out_stride, scratch)
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
