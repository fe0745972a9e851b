//! The scalar twin of the integer kernels: the reference every SIMD path equals bit for bit, and
//! the portable path.
//!
//! # The arithmetic (every path does exactly this)
//! For weight row `r` and token `t`, with `acc = 0.0f32`, for each 32-element block `j` in order
//! and each of its sub-blocks `s` in order (one, or the two 16-element halves):
//!
//! ```text
//! I   = Σ_{i in s} u[r][i] · q[t][i] − o · S[t][j][s]        (exact, i32)
//! acc = acc + (scale[r][j][s] · d[t][j]) · (I as f32)
//! acc = acc + min[r][j][s] · (d[t][j] · (S[t][j][s] as f32))  (types with a minimum only)
//! ```
//!
//! where `u` are the panel's unsigned codes, `o` the type's offset, `q`, `d` and `S` the token's
//! int8 values, block scale and sub-block sum. Each step is one f32 operation rounded on its own
//! (no fused multiply-add), and the SIMD kernels keep one 32-bit lane per weight row, so they
//! perform the same operations in the same order and get the same bits. Then
//! `out[t][r] += acc`.

use super::panel::{Form, CODE_WORDS, FIELD, ROWS};
use super::BlockQ8;

/// The exact integer part of sub-block `sub` of a panel block for the row in `lane`: groups
/// `groups` of four codes (word `16 g + lane`, little-endian) times the token block's values,
/// minus `offset · S`.
#[inline(always)]
fn int_dot(
    codes: &[u32],
    lane: usize,
    x: &BlockQ8,
    groups: core::ops::Range<usize>,
    offset: i32,
    s: i32,
) -> i32 {
    let mut sum = 0i32;
    for g in groups {
        let at = g.wrapping_mul(ROWS).wrapping_add(lane);
        let (Some(u), Some(q)) = (codes.get(at), x.group(g)) else {
            break;
        };
        for (u, &q) in u.to_le_bytes().into_iter().zip(q) {
            // |u · q| ≤ 255 · 127 and 32 of them: far inside i32.
            sum = sum.wrapping_add(i32::from(u).wrapping_mul(i32::from(q)));
        }
    }
    sum.wrapping_sub(offset.wrapping_mul(s))
}

/// `Σ` over the blocks of one panel row (`lane`) times one token's blocks, in the order of the
/// module documentation.
fn row_dot(form: Form, panel: &[f32], lane: usize, x: &[BlockQ8]) -> f32 {
    let mut acc = 0.0f32;
    for (unit, xb) in panel.chunks_exact(form.block_words()).zip(x) {
        let (codes, fields) = unit.split_at(CODE_WORDS.min(unit.len()));
        let codes: &[u32] = bytemuck::cast_slice(codes);
        let whole = [(0..8, None)];
        let halves = [(0..4, Some(0)), (4..8, Some(1))];
        let subs: &[_] = if form.halves { &halves } else { &whole };
        for ((groups, half), f) in subs.iter().cloned().zip(fields.chunks_exact(form.sub_words())) {
            let s = xb.sub_sum(half);
            let i = int_dot(codes, lane, xb, groups, form.offset, s);
            let scale = f.get(lane).copied().unwrap_or(0.0);
            acc += (scale * xb.d) * (i as f32);
            if form.has_min {
                let min = f.get(FIELD.wrapping_add(lane)).copied().unwrap_or(0.0);
                acc += min * (xb.d * (s as f32));
            }
        }
    }
    acc
}

/// `out[t·out_stride + r] += row r of the panel · token t` for the first `n_rows` (≤ 16) rows of
/// a panel of `n_blocks` blocks and `n_tokens` tokens of `xq` (`xq_stride` blocks apart).
/// Whatever does not fit the slices is skipped (the caller has validated every size).
#[allow(clippy::too_many_arguments)]
pub(crate) fn panel_tokens(
    form: Form,
    panel: &[f32],
    n_rows: usize,
    n_blocks: usize,
    xq: &[BlockQ8],
    xq_stride: usize,
    n_tokens: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    for t in 0..n_tokens {
        let x = xq.get(t.saturating_mul(xq_stride)..).and_then(|x| x.get(..n_blocks));
        let o = out.get_mut(t.saturating_mul(out_stride)..).and_then(|o| o.get_mut(..n_rows.min(ROWS)));
        let (Some(x), Some(o)) = (x, o) else { return };
        for (lane, o) in o.iter_mut().enumerate() {
            *o += row_dot(form, panel, lane, x);
        }
    }
}
