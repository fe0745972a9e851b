//! wasm32 simd128 kernels: a 3-row × 4-token f32 micro-kernel (12 accumulators, so that with
//! the weight and token vectors they fit the 16 xmm registers engines map `v128` to on x86-64),
//! `dot` and `axpy`. Built only when the whole crate is compiled with `target_feature =
//! "simd128"` (a wasm engine refuses a module whose instructions it lacks, so there is nothing to
//! detect at run time). simd128 has no fused multiply-add: products are rounded, then added.

use core::arch::wasm32::{
    f32x4_add, f32x4_extract_lane, f32x4_mul, f32x4_splat, v128, v128_load, v128_store,
};

use super::{gemm_driver, gemm_in_bounds, k_blocks, row_blocks};
use crate::quant::scalar;

/// The simd128 table's token (simd128 is always present where this module is compiled).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Simd128(());

impl Simd128 {
    /// The token.
    pub(crate) fn new() -> Option<Self> {
        Some(Simd128(()))
    }

    /// See [`scalar::gemm`]; out-of-bounds shapes do nothing (callers validate first).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        self,
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
        // wasm32 `#[target_feature]` functions are safe to call: an engine without the feature
        // refuses to load the module.
        gemm(w, w_stride, n_rows, k, x, x_stride, n_tokens, out, out_stride)
    }

    /// `Σ a[i]·b[i]` over the common length.
    pub(crate) fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        dot(a, b)
    }

    /// `y[i] += alpha·x[i]` over the common length.
    pub(crate) fn axpy(self, alpha: f32, x: &[f32], y: &mut [f32]) {
        axpy(alpha, x, y)
    }
}

#[inline(always)]
fn load(a: &[f32; 4]) -> v128 {
    // SAFETY: `a` is 16 readable bytes; `v128.load` has no alignment requirement.
    unsafe { v128_load(a.as_ptr().cast()) }
}

#[inline(always)]
fn store(o: &mut [f32; 4], v: v128) {
    // SAFETY: `o` is 16 writable bytes; `v128.store` has no alignment requirement.
    unsafe { v128_store(o.as_mut_ptr().cast(), v) }
}

/// `acc + a·b` (two roundings).
#[inline(always)]
fn mul_add(acc: v128, a: v128, b: v128) -> v128 {
    f32x4_add(acc, f32x4_mul(a, b))
}

/// Sum of the 4 lanes.
#[inline(always)]
fn hsum(v: v128) -> f32 {
    (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v))
        + (f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v))
}

/// The first `n` (< 4) floats at `p`, zeros in the other lanes.
///
/// # Safety
/// `p` must be valid for reading `n` floats.
#[inline(always)]
unsafe fn load_partial(p: *const f32, n: usize) -> v128 {
    let mut lanes = [0.0f32; 4];
    for (j, l) in lanes.iter_mut().enumerate().take(n) {
        // SAFETY: j < n and `p` is valid for n floats.
        *l = unsafe { *p.add(j) };
    }
    load(&lanes)
}

/// Rows per micro-kernel.
const MR: usize = 3;
/// Tokens per micro-kernel.
const NT: usize = 4;

/// The micro-kernel: `out[t][j] += Σ_{i<k} w[j][i] · x[t][i]` for `R` weight rows and `T` tokens.
///
/// # Safety
/// Each `w[j]` and `x[t]` must be valid for reading `k` floats and each `out[t]` for reading and
/// writing `R` floats.
#[inline(always)]
unsafe fn tile<const R: usize, const T: usize>(
    w: [*const f32; R],
    x: [*const f32; T],
    k: usize,
    out: [*mut f32; T],
) {
    let mut acc = [[f32x4_splat(0.0); R]; T];
    let full = k & !3;
    let mut i = 0usize;
    while i < full {
        let mut wv = [f32x4_splat(0.0); R];
        for (v, &p) in wv.iter_mut().zip(&w) {
            // SAFETY: i + 4 <= k and `p` is valid for k floats; no alignment requirement.
            *v = unsafe { v128_load(p.add(i).cast()) };
        }
        for (acc_t, &p) in acc.iter_mut().zip(&x) {
            // SAFETY: as above.
            let xv = unsafe { v128_load(p.add(i).cast()) };
            for (a, &v) in acc_t.iter_mut().zip(&wv) {
                *a = mul_add(*a, v, xv);
            }
        }
        // i < full <= k: cannot overflow.
        i = i.wrapping_add(4);
    }
    if i < k {
        // 1..=3 elements left, read one by one into zero-padded vectors.
        let left = k.wrapping_sub(i);
        let mut wv = [f32x4_splat(0.0); R];
        for (v, &p) in wv.iter_mut().zip(&w) {
            // SAFETY: elements i..k of a row valid for k floats.
            *v = unsafe { load_partial(p.add(i), left) };
        }
        for (acc_t, &p) in acc.iter_mut().zip(&x) {
            // SAFETY: as above.
            let xv = unsafe { load_partial(p.add(i), left) };
            for (a, &v) in acc_t.iter_mut().zip(&wv) {
                *a = mul_add(*a, v, xv);
            }
        }
    }
    for (acc_t, &o) in acc.iter().zip(&out) {
        for (j, a) in acc_t.iter().enumerate() {
            // SAFETY: j < R and `o` is valid for R floats.
            unsafe { *o.add(j) += hsum(*a) };
        }
    }
}

/// Runs the `rn` × `T` micro-kernel (`rn` in 1..=MR) at the given row, token and output bases.
///
/// # Safety
/// Rows `base_w + j·w_stride` (j < rn) and tokens `base_x + t·x_stride` (t < T) valid for `k`
/// floats; outputs `base_o + t·o_stride` valid for `rn` floats.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<const T: usize>(
    rn: usize,
    base_w: *const f32,
    w_stride: usize,
    base_x: *const f32,
    x_stride: usize,
    k: usize,
    base_o: *mut f32,
    o_stride: usize,
) {
    let x: [*const f32; T] = core::array::from_fn(|t| base_x.wrapping_add(t.wrapping_mul(x_stride)));
    let o: [*mut f32; T] = core::array::from_fn(|t| base_o.wrapping_add(t.wrapping_mul(o_stride)));
    macro_rules! run {
        ($r:literal) => {{
            let w: [*const f32; $r] = core::array::from_fn(|j| base_w.wrapping_add(j.wrapping_mul(w_stride)));
            // SAFETY: forwarded from this function's contract.
            unsafe { tile::<$r, T>(w, x, k, o) }
        }};
    }
    match rn {
        3 => run!(3),
        2 => run!(2),
        1 => run!(1),
        _ => {}
    }
}

gemm_driver!("simd128", [4, 3, 2, 1]);

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (a.get(..n).unwrap_or_default(), b.get(..n).unwrap_or_default());
    let (ac, a_tail) = a.as_chunks::<4>();
    let (bc, b_tail) = b.as_chunks::<4>();
    let mut s = [f32x4_splat(0.0); 4];
    let (mut ga, mut gb) = (ac.chunks_exact(4), bc.chunks_exact(4));
    for (pa, pb) in (&mut ga).zip(&mut gb) {
        for ((acc, va), vb) in s.iter_mut().zip(pa).zip(pb) {
            *acc = mul_add(*acc, load(va), load(vb));
        }
    }
    let [s0, s1, s2, s3] = s;
    let mut acc = f32x4_add(f32x4_add(s0, s1), f32x4_add(s2, s3));
    for (va, vb) in ga.remainder().iter().zip(gb.remainder()) {
        acc = mul_add(acc, load(va), load(vb));
    }
    hsum(acc) + scalar::dot(a_tail, b_tail)
}

fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (x, y) = (x.get(..n).unwrap_or_default(), y.get_mut(..n).unwrap_or_default());
    let a = f32x4_splat(alpha);
    let (xc, x_tail) = x.as_chunks::<4>();
    let (yc, y_tail) = y.as_chunks_mut::<4>();
    for (vx, vy) in xc.iter().zip(yc.iter_mut()) {
        store(vy, mul_add(load(vy), a, load(vx)));
    }
    scalar::axpy(alpha, x_tail, y_tail);
}
