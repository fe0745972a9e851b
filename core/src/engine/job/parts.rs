//! Splitting a step's matrix product into parts a host may run on several threads.
//!
//! The unit is a run of whole weight rows of the chunk just read: each part multiplies its rows
//! with every token's input into its own output columns. The first part writes the job's
//! output in place; every other part works in an output tile and a decode scratch of its own
//! (the plan's extra-part space, [`Plan::with_threads`]), which are copied in before and out
//! after. A row's sum is never split, and each row's result does not depend on which rows share
//! a call, so any split — and any thread count — gives the same bits.
//!
//! The core stays single-threaded: [`Parallel`] is the host's, and the job only hands it
//! [`Part`]s, which are `Send`.

use super::matmul::{multiply, Activations};
use super::*;
use crate::engine::plan::{MAX_PARTS, PART_TILE};
use crate::gguf::GgmlType;
use checked::mul;

/// Rows of a part are a multiple of this (the kernels' row tiles stay whole), except the first
/// part's, which takes what is left.
const ROW_GRAIN: usize = 4;

/// The least multiply-adds an extra part is given (a few tens of microseconds): handing a part to
/// another thread and waiting for it costs microseconds, so smaller products run whole.
const MIN_PART_WORK: usize = 1 << 19;

/// Runs the parts of a step ([`Job::step_parallel`]).
pub trait Parallel {
    /// Calls [`Part::run`] once on every part of `parts` — in any order, on any threads, at the
    /// same time or not — and returns when all have returned. A part left unrun fails its step
    /// with [`Error::InvalidState`].
    fn run(&self, parts: &mut [Part<'_>]);
}

/// Runs the parts one after another on the calling thread (what [`Job::step`] uses).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequential;

impl Parallel for Sequential {
    fn run(&self, parts: &mut [Part<'_>]) {
        parts.iter_mut().for_each(Part::run);
    }
}

/// One part of a matrix product: some weight rows times every token's input. Bounded work
/// (its share of the step's budget); touches only its own memory.
#[derive(Debug)]
pub struct Part<'p> {
    kernels: Kernels,
    ty: GgmlType,
    raw: &'p [u8],
    rows: usize,
    k: usize,
    input: Activations<'p>,
    n_tokens: usize,
    out: &'p mut [f32],
    out_stride: usize,
    scratch: &'p mut [f32],
    result: Result<()>,
}

impl Part<'_> {
    /// Computes the part. Call once; a second call would add its sums twice.
    pub fn run(&mut self) {
        let Part {
            kernels, ty, raw, rows, k, input, n_tokens, ref mut out, out_stride, ref mut scratch, ..
        } = *self;
        self.result = multiply(&kernels, ty, raw, rows, k, input, n_tokens, out, out_stride, scratch);
    }

    /// A part with nothing to do (fills the unused slots of the parts array).
    fn idle() -> Self {
        Part {
            kernels: Kernels::scalar(),
            ty: GgmlType::F32,
            raw: &[],
            rows: 0,
            k: 0,
            input: Activations::F32(&[], 0),
            n_tokens: 0,
            out: &mut [],
            out_stride: 0,
            scratch: &mut [],
            result: Err(Error::InvalidState),
        }
    }
}

// A host hands parts to other threads.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Part<'static>>();
};

/// A matrix product of one chunk of weight rows, ready to split: `rows` rows of `raw` (whole
/// rows, `raw.len() / rows` bytes each) of `k` columns of type `ty`, over `n_tokens` tokens of
/// `input`, added to `out` (`out_stride` floats per token).
pub(super) struct Product<'b> {
    pub kernels: Kernels,
    pub ty: GgmlType,
    pub raw: &'b [u8],
    pub rows: usize,
    pub k: usize,
    pub input: Activations<'b>,
    pub n_tokens: usize,
    pub out: &'b mut [f32],
    pub out_stride: usize,
}

/// The rows each extra part takes when `rows` rows of `k` columns over `n_tokens` tokens are split
/// into up to `parts` parts: `(rows per extra part, extra parts)`; `(0, 0)` when the product is
/// not split. Every extra part's rows fit its tile and hold at least [`MIN_PART_WORK`]
/// multiply-adds; the first part takes the rest (at least as many).
fn split(rows: usize, k: usize, n_tokens: usize, parts: usize) -> (usize, usize) {
    let fit = PART_TILE.checked_div(n_tokens).unwrap_or(0);
    let even = rows.checked_div(parts).unwrap_or(0);
    let share = (even.min(fit) / ROW_GRAIN).saturating_mul(ROW_GRAIN);
    let work = share.saturating_mul(k).saturating_mul(n_tokens);
    if parts < 2 || share == 0 || work < MIN_PART_WORK {
        return (0, 0);
    }
    (share, parts.saturating_sub(1))
}

/// Computes `p`, split into at most `parts` parts run by `par`: the first in place with
/// `scratch`, the others in `spare` (each `plan.part_floats()` floats: a [`PART_TILE`] output
/// tile, then `scratch_len` floats of decode scratch).
pub(super) fn multiply_split(
    par: &dyn Parallel,
    p: Product<'_>,
    scratch: &mut [f32],
    spare: &mut [f32],
    parts: usize,
    scratch_len: usize,
) -> Result<()> {
    let (share, extra) = split(p.rows, p.k, p.n_tokens, parts.min(MAX_PARTS));
    let first = sub(p.rows, mul(share, extra)?)?;
    let row_bytes = p.raw.len().checked_div(p.rows).unwrap_or(0);
    let each = add(PART_TILE, scratch_len)?;
    let stride = p.out_stride.max(1);
    // Copy each extra part's output columns into its tile (the kernels add to what is there).
    for (i, space) in spare.chunks_exact_mut(each.max(1)).take(extra).enumerate() {
        let col = add(first, mul(i, share)?)?;
        let tile = space.get_mut(..mul(share, p.n_tokens)?).ok_or(Error::InvalidState)?;
        for (t, dst) in tile.chunks_exact_mut(share).enumerate() {
            let from = add(mul(t, stride)?, col)?;
            dst.copy_from_slice(p.out.get(from..add(from, share)?).ok_or(Error::InvalidState)?);
        }
    }
    {
        let mut slots: [Part<'_>; MAX_PARTS] = core::array::from_fn(|_| Part::idle());
        let part = |raw, rows, out, out_stride, scratch| Part {
            kernels: p.kernels,
            ty: p.ty,
            raw,
            rows,
            k: p.k,
            input: p.input,
            n_tokens: p.n_tokens,
            out,
            out_stride,
            scratch,
            result: Err(Error::InvalidState),
        };
        let (head, mut tail) = p.raw.split_at_checked(mul(first, row_bytes)?).ok_or(Error::InvalidState)?;
        let [slot0, others @ ..] = &mut slots;
        *slot0 = part(head, first, &mut *p.out, p.out_stride, scratch);
        for (slot, space) in others.iter_mut().zip(spare.chunks_exact_mut(each.max(1))).take(extra) {
            let (raw, rest) = tail.split_at_checked(mul(share, row_bytes)?).ok_or(Error::InvalidState)?;
            tail = rest;
            let (tile, scratch) = space.split_at_mut_checked(PART_TILE).ok_or(Error::InvalidState)?;
            *slot = part(raw, share, tile, share, scratch);
        }
        let used = slots.get_mut(..add(extra, 1)?).ok_or(Error::InvalidState)?;
        // A product left whole needs no other thread.
        if extra == 0 {
            Sequential.run(used);
        } else {
            par.run(used);
        }
        used.iter().try_for_each(|part| part.result)?;
    }
    // Copy each extra part's sums back into its output columns.
    for (i, space) in spare.chunks_exact(each.max(1)).take(extra).enumerate() {
        let col = add(first, mul(i, share)?)?;
        let tile = space.get(..mul(share, p.n_tokens)?).ok_or(Error::InvalidState)?;
        for (t, src) in tile.chunks_exact(share).enumerate() {
            let from = add(mul(t, stride)?, col)?;
            p.out.get_mut(from..add(from, share)?).ok_or(Error::InvalidState)?.copy_from_slice(src);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_parts_fit_their_tiles_and_take_whole_grains() {
        for rows in [0, 1, 7, 8, 9, 33, 151, 4096] {
            for n in [1, 2, 16, 128, 512, 2048, PART_TILE + 1] {
                for parts in 0..=MAX_PARTS {
                    let (share, extra) = split(rows, 768, n, parts);
                    assert!(share * n <= PART_TILE && share % ROW_GRAIN == 0);
                    assert!(extra == 0 || share * 768 * n >= MIN_PART_WORK);
                    assert!(extra < parts.max(1) && share * extra <= rows);
                    assert!(rows - share * extra >= share, "the first part takes at least a share");
                }
            }
        }
    }
}
