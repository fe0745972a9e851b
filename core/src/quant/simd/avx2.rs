//! AVX2 + FMA + F16C kernels: 8-lane decoders (two stores per 16 codes) and a 3-row × 4-token
//! f32 micro-kernel (12 of the 16 ymm registers hold accumulators).

use core::arch::x86_64::{
    __m128i, __m256, __m256i, _mm256_add_ps, _mm256_castps256_ps128, _mm256_castsi256_ps, _mm256_cmpgt_epi32,
    _mm256_cvtepi32_ps, _mm256_cvtepi8_epi32, _mm256_cvtepu16_epi32, _mm256_cvtepu8_epi32, _mm256_cvtph_ps,
    _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_maskload_ps, _mm256_mul_ps,
    _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_slli_epi32,
    _mm256_storeu_ps, _mm256_sub_ps, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_loadu_si128, _mm_movehl_ps,
    _mm_set1_epi16, _mm_shuffle_ps, _mm_unpackhi_epi64,
};

use super::{byte_decoders, gemm_driver, gemm_in_bounds, k_blocks, row_blocks};
use crate::gguf::GgmlType;
use crate::quant::scalar;
use core::arch::x86_64::_mm256_permutevar8x32_ps;

/// Proof that this CPU runs AVX2, FMA and F16C: only [`Avx2::new`] makes one, after detecting
/// them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// The token, if the CPU supports the instructions.
    pub(crate) fn new() -> Option<Self> {
        super::detect_avx2().then_some(Avx2(()))
    }

    /// Decodes whole blocks; `false` for a type this module leaves to the scalar path.
    pub(crate) fn decode(self, ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
        // SAFETY: the token exists only if the CPU supports every feature `decode_blocks` enables.
        unsafe { decode_blocks(ty, src, dst) }
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
        // SAFETY: as in `decode`.
        unsafe { gemm(w, w_stride, n_rows, k, x, x_stride, n_tokens, out, out_stride) }
    }

    /// `Σ a[i]·b[i]` over the common length.
    pub(crate) fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as in `decode`.
        unsafe { dot(a, b) }
    }

    /// `y[i] += alpha·x[i]` over the common length.
    pub(crate) fn axpy(self, alpha: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: as in `decode`.
        unsafe { axpy(alpha, x, y) }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn splat(v: f32) -> __m256 {
    _mm256_set1_ps(v)
}

/// The f16 block scale in two little-endian bytes, widened exactly into every lane.
///
/// Every lane is used, so LLVM keeps the broadcast: a scalar conversion of one lane is shrunk to
/// a `vpinsrw` that merges into the previous block's result register, a false dependency chain
/// that cost 16 cycles per Q8_0 block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn f16_splat(lo: u8, hi: u8) -> __m256 {
    let bits = u16::from_le_bytes([lo, hi]) as i16;
    _mm256_cvtph_ps(_mm_set1_epi16(bits))
}

/// The 16 unsigned byte `codes` as f32, entries 0..8 times `lo` and 8..16 times `hi` (each the
/// same f32 product as the scalar decoder's `scale · code`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn table_u8(codes: __m128i, lo: __m256, hi: __m256) -> [__m256; 2] {
    let q_lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes));
    let q_hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(codes, codes)));
    [_mm256_mul_ps(lo, q_lo), _mm256_mul_ps(hi, q_hi)]
}

/// The 16 signed byte `codes` as f32, times `d`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn table_i8(codes: __m128i, d: __m256) -> [__m256; 2] {
    let q_lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes));
    let q_hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(codes, codes)));
    [_mm256_mul_ps(d, q_lo), _mm256_mul_ps(d, q_hi)]
}

/// Entry `j` (< 16) of a table, in every lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn pick(t: [__m256; 2], j: i32) -> __m256 {
    let [lo, hi] = t;
    let half = if j < 8 { lo } else { hi };
    _mm256_permutevar8x32_ps(half, _mm256_set1_epi32(j & 7))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load(a: &[f32; 8]) -> __m256 {
    // SAFETY: `a` is 8 readable floats; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(a.as_ptr()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn store(o: &mut [f32; 8], v: __m256) {
    // SAFETY: `o` is 8 writable floats; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load16b(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn widen_i8(v: __m128i) -> __m256i {
    _mm256_cvtepi8_epi32(v)
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn widen_u8(v: __m128i) -> __m256i {
    _mm256_cvtepu8_epi32(v)
}

/// `o = d · codes` for 16 signed byte codes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn emit_i8(o: &mut [f32; 16], codes: __m128i, d: __m256) {
    let (halves, _) = o.as_chunks_mut::<8>();
    let [lo, hi] = halves else { return };
    store(lo, _mm256_mul_ps(d, _mm256_cvtepi32_ps(widen_i8(codes))));
    store(hi, _mm256_mul_ps(d, _mm256_cvtepi32_ps(widen_i8(_mm_unpackhi_epi64(codes, codes)))));
}

/// `o = d · codes − m` for 16 unsigned byte codes (product rounded, then the difference).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn emit_u8_sub(o: &mut [f32; 16], codes: __m128i, d: __m256, m: __m256) {
    let (halves, _) = o.as_chunks_mut::<8>();
    let [lo, hi] = halves else { return };
    let q_lo = _mm256_cvtepi32_ps(widen_u8(codes));
    let q_hi = _mm256_cvtepi32_ps(widen_u8(_mm_unpackhi_epi64(codes, codes)));
    store(lo, _mm256_sub_ps(_mm256_mul_ps(d, q_lo), m));
    store(hi, _mm256_sub_ps(_mm256_mul_ps(d, q_hi), m));
}

/// `o = d · codes + m` for 16 unsigned byte codes (product rounded, then the sum).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn emit_u8_add(o: &mut [f32; 16], codes: __m128i, d: __m256, m: __m256) {
    let (halves, _) = o.as_chunks_mut::<8>();
    let [lo, hi] = halves else { return };
    let q_lo = _mm256_cvtepi32_ps(widen_u8(codes));
    let q_hi = _mm256_cvtepi32_ps(widen_u8(_mm_unpackhi_epi64(codes, codes)));
    store(lo, _mm256_add_ps(_mm256_mul_ps(d, q_lo), m));
    store(hi, _mm256_add_ps(_mm256_mul_ps(d, q_hi), m));
}

/// F16 values (little-endian pairs of bytes) widened exactly.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn f16_row(src: &[u8], dst: &mut [f32]) {
    let (blocks, tail) = src.as_chunks::<16>();
    let (outs, _) = dst.as_chunks_mut::<8>();
    for (b, o) in blocks.iter().zip(outs.iter_mut()) {
        store(o, _mm256_cvtph_ps(load16b(b)));
    }
    let done = blocks.len().saturating_mul(8);
    scalar::decode(GgmlType::F16, tail, dst.get_mut(done..).unwrap_or_default());
}

/// BF16 values: the top half of an f32's bits.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn bf16_row(src: &[u8], dst: &mut [f32]) {
    let (blocks, tail) = src.as_chunks::<16>();
    let (outs, _) = dst.as_chunks_mut::<8>();
    for (b, o) in blocks.iter().zip(outs.iter_mut()) {
        let bits = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load16b(b)));
        store(o, _mm256_castsi256_ps(bits));
    }
    let done = blocks.len().saturating_mul(8);
    scalar::decode(GgmlType::BF16, tail, dst.get_mut(done..).unwrap_or_default());
}

byte_decoders!("avx2,fma,f16c");

/// Rows per micro-kernel.
const MR: usize = 3;
/// Tokens per micro-kernel.
const NT: usize = 4;

/// Sum of the 8 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
}

/// The micro-kernel: `out[t][j] += Σ_{i<k} w[j][i] · x[t][i]` for `R` weight rows and `T` tokens.
///
/// # Safety
/// Each `w[j]` and `x[t]` must be valid for reading `k` floats and each `out[t]` for reading and
/// writing `R` floats; the CPU must support the enabled features.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn tile<const R: usize, const T: usize>(
    w: [*const f32; R],
    x: [*const f32; T],
    k: usize,
    out: [*mut f32; T],
) {
    let mut acc = [[_mm256_setzero_ps(); R]; T];
    let full = k & !7;
    let mut i = 0usize;
    while i < full {
        let mut wv = [_mm256_setzero_ps(); R];
        for (v, &p) in wv.iter_mut().zip(&w) {
            // SAFETY: i + 8 <= k and `p` is valid for k floats.
            *v = unsafe { _mm256_loadu_ps(p.add(i)) };
        }
        for (acc_t, &p) in acc.iter_mut().zip(&x) {
            // SAFETY: as above.
            let xv = unsafe { _mm256_loadu_ps(p.add(i)) };
            for (a, &v) in acc_t.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(v, xv, *a);
            }
        }
        // i < full <= k: cannot overflow.
        i = i.wrapping_add(8);
    }
    if i < k {
        // 1..=7 elements left: masked loads read only those (masked-off lanes never fault).
        let left = k.wrapping_sub(i) as i32;
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        let mut wv = [_mm256_setzero_ps(); R];
        for (v, &p) in wv.iter_mut().zip(&w) {
            // SAFETY: the unmasked lanes are elements i..k of a row valid for k floats.
            *v = unsafe { _mm256_maskload_ps(p.add(i), mask) };
        }
        for (acc_t, &p) in acc.iter_mut().zip(&x) {
            // SAFETY: as above.
            let xv = unsafe { _mm256_maskload_ps(p.add(i), mask) };
            for (a, &v) in acc_t.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(v, xv, *a);
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
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
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

gemm_driver!("avx2,fma,f16c", [4, 3, 2, 1]);

#[target_feature(enable = "avx2,fma,f16c")]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (a.get(..n).unwrap_or_default(), b.get(..n).unwrap_or_default());
    let (ac, a_tail) = a.as_chunks::<8>();
    let (bc, b_tail) = b.as_chunks::<8>();
    let mut s = [_mm256_setzero_ps(); 4];
    let (mut ga, mut gb) = (ac.chunks_exact(4), bc.chunks_exact(4));
    for (pa, pb) in (&mut ga).zip(&mut gb) {
        for ((acc, va), vb) in s.iter_mut().zip(pa).zip(pb) {
            *acc = _mm256_fmadd_ps(load(va), load(vb), *acc);
        }
    }
    let [s0, s1, s2, s3] = s;
    let mut acc = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    for (va, vb) in ga.remainder().iter().zip(gb.remainder()) {
        acc = _mm256_fmadd_ps(load(va), load(vb), acc);
    }
    hsum(acc) + scalar::dot(a_tail, b_tail)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (x, y) = (x.get(..n).unwrap_or_default(), y.get_mut(..n).unwrap_or_default());
    let a = splat(alpha);
    let (xc, x_tail) = x.as_chunks::<8>();
    let (yc, y_tail) = y.as_chunks_mut::<8>();
    for (vx, vy) in xc.iter().zip(yc.iter_mut()) {
        store(vy, _mm256_fmadd_ps(a, load(vx), load(vy)));
    }
    scalar::axpy(alpha, x_tail, y_tail);
}
