//! The portable path: scalar dequantization of every computable type and plain-Rust f32 kernels.
//!
//! This is both the fallback on targets without SIMD kernels (thumbv7em, wasm32, …) and the
//! reference ("scalar twin") every SIMD kernel is tested against. Sizes are validated by the
//! callers in [`super`]; the functions here only ever touch what they are given and stop at the
//! shorter of their inputs.

use super::blocks::{layout, scalar as dec, QK, QK_K};
use crate::gguf::GgmlType;

/// Applies a whole-block decoder to every block of `src`, writing consecutive `E`-element runs
/// of `dst`.
#[inline(always)]
fn each<const B: usize, const E: usize>(src: &[u8], dst: &mut [f32], f: fn(&[u8; B], &mut [f32; E])) {
    let (blocks, _) = src.as_chunks::<B>();
    let (outs, _) = dst.as_chunks_mut::<E>();
    for (b, o) in blocks.iter().zip(outs.iter_mut()) {
        f(b, o);
    }
}

/// Decodes the whole blocks of `src` (a computable type) into `dst`. Returns `false` for a type
/// this function does not decode.
pub(crate) fn decode(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match ty {
        GgmlType::F32 => {
            for (o, b) in dst.iter_mut().zip(src.as_chunks::<4>().0) {
                *o = f32::from_le_bytes(*b);
            }
        }
        GgmlType::F16 => {
            for (o, b) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
                *o = super::blocks::f16_at(b[0], b[1]);
            }
        }
        GgmlType::BF16 => {
            for (o, b) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes(*b)) << 16);
            }
        }
        GgmlType::Q4_0 => each::<{ layout::q4_0::BYTES }, QK>(src, dst, dec::q4_0),
        GgmlType::Q4_1 => each::<{ layout::q4_1::BYTES }, QK>(src, dst, dec::q4_1),
        GgmlType::Q5_0 => each::<{ layout::q5_0::BYTES }, QK>(src, dst, dec::q5_0),
        GgmlType::Q5_1 => each::<{ layout::q5_1::BYTES }, QK>(src, dst, dec::q5_1),
        GgmlType::Q8_0 => each::<{ layout::q8_0::BYTES }, QK>(src, dst, dec::q8_0),
        GgmlType::Q2_K => each::<{ layout::q2_k::BYTES }, QK_K>(src, dst, dec::q2_k),
        GgmlType::Q3_K => each::<{ layout::q3_k::BYTES }, QK_K>(src, dst, dec::q3_k),
        GgmlType::Q4_K => each::<{ layout::q4_k::BYTES }, QK_K>(src, dst, dec::q4_k),
        GgmlType::Q5_K => each::<{ layout::q5_k::BYTES }, QK_K>(src, dst, dec::q5_k),
        GgmlType::Q6_K => each::<{ layout::q6_k::BYTES }, QK_K>(src, dst, dec::q6_k),
        GgmlType::IQ4_NL => each::<{ layout::iq4_nl::BYTES }, QK>(src, dst, dec::iq4_nl),
        GgmlType::IQ4_XS => each::<{ layout::iq4_xs::BYTES }, QK_K>(src, dst, dec::iq4_xs),
        _ => return false,
    }
    true
}

/// `Σ a[i]·b[i]` over the common length, with eight independent partial sums (summed pairwise
/// at the end) so the compiler can keep them in vector lanes without reassociating anything.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ac, at) = a.as_chunks::<8>();
    let (bc, bt) = b.as_chunks::<8>();
    let mut acc = [0.0f32; 8];
    for (x, y) in ac.iter().zip(bc) {
        for ((s, &p), &q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
    let mut sum = ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7));
    for (&p, &q) in at.iter().zip(bt) {
        sum += p * q;
    }
    sum
}

/// `y[i] += alpha · x[i]` over the common length.
pub(crate) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

/// `out[t·out_stride + r] += Σ_k w[r·w_stride + k]·x[t·x_stride + k]` for `r < n_rows`,
/// `t < n_tokens`; rows or tokens that would run past their slice are skipped (the caller has
/// validated that none do).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    w: &[f32],
    w_stride: usize,
    n_rows: usize,
    k: usize,
    x: &[f32],
    x_stride: usize,
    n_tokens: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    for t in 0..n_tokens {
        let Some(xt) = row(x, t, x_stride, k) else {
            return;
        };
        let Some(ot) = out.get_mut(t.saturating_mul(out_stride)..) else {
            return;
        };
        for (r, o) in (0..n_rows).zip(ot.iter_mut()) {
            let Some(wr) = row(w, r, w_stride, k) else {
                return;
            };
            *o += dot(wr, xt);
        }
    }
}

/// Row `i` (`len` values at `i·stride`) of a strided matrix, if it lies within `data`.
#[inline(always)]
pub(crate) fn row(data: &[f32], i: usize, stride: usize, len: usize) -> Option<&[f32]> {
    let start = i.checked_mul(stride)?;
    data.get(start..)?.get(..len)
}
