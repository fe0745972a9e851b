//! AVX-512 (F + VL) kernels: 16-lane decoders and a 4-row × 6-token f32 micro-kernel (24 of the
//! 32 zmm registers hold accumulators).
//!
//! AVX-512VL matters even though every vector op of the kernels is 512 bits wide: without it the
//! 128/256-bit instructions of the final horizontal sums cannot name zmm16–31, the register
//! allocator keeps the accumulators in zmm0–15, and the 24 of them spill to the stack.

use core::arch::x86_64::{
    __m128, __m128i, __m256i, __m512, __mmask16, _mm256_loadu_si256, _mm256_set1_epi16, _mm512_add_ps,
    _mm512_castps512_ps128, _mm512_castsi512_ps, _mm512_cvtepi32_ps, _mm512_cvtepi8_epi32,
    _mm512_cvtepu16_epi32, _mm512_cvtepu8_epi32, _mm512_cvtph_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_permute_ps, _mm512_permutexvar_ps, _mm512_reduce_add_ps,
    _mm512_set1_ps, _mm512_setr_epi32, _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_slli_epi32,
    _mm512_storeu_ps, _mm512_sub_ps, _mm_add_ps, _mm_loadu_ps, _mm_storeu_ps,
};

use super::{byte_decoders, gemm_driver, gemm_in_bounds, k_blocks, row_blocks};
use crate::gguf::GgmlType;
use crate::quant::blocks::{k_scales_mins, layout, QK_K};
use crate::quant::scalar;
use core::arch::x86_64::{__m512i, _mm512_setr_ps, _mm512_srli_epi32};
use core::arch::x86_64::{_mm512_mask_blend_ps, _mm512_set1_epi32};

/// Proof that this CPU runs AVX-512F, AVX-512VL, AVX2, FMA and F16C: only [`Avx512::new`] makes one, after
/// detecting them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// The token, if the CPU supports the instructions.
    pub(crate) fn new() -> Option<Self> {
        super::detect_avx512().then_some(Avx512(()))
    }

    /// Decodes whole blocks; `false` for a type this module leaves to the scalar path.
    pub(crate) fn decode(self, ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
        // SAFETY: the token exists only if the CPU supports every feature `decode_lut` enables.
        unsafe { decode_lut(ty, src, dst) }
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

#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn splat(v: f32) -> __m512 {
    _mm512_set1_ps(v)
}

/// The f16 block scale in two little-endian bytes, widened exactly into every lane.
///
/// Every lane is used, so LLVM keeps the broadcast: a scalar conversion of one lane is shrunk to
/// a `vpinsrw` that merges into the previous block's result register, a false dependency chain
/// that cost 16 cycles per Q8_0 block.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn f16_splat(lo: u8, hi: u8) -> __m512 {
    let bits = u16::from_le_bytes([lo, hi]) as i16;
    _mm512_cvtph_ps(_mm256_set1_epi16(bits))
}

/// The 16 unsigned byte `codes` as f32, entries 0..8 times `lo` and 8..16 times `hi` (each the
/// same f32 product as the scalar decoder's `scale · code`).
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn table_u8(codes: __m128i, lo: __m512, hi: __m512) -> __m512 {
    let q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(codes));
    _mm512_mul_ps(_mm512_mask_blend_ps(0xff00, lo, hi), q)
}

/// The 16 signed byte `codes` as f32, times `d`.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn table_i8(codes: __m128i, d: __m512) -> __m512 {
    _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(codes)))
}

/// Entry `j` (< 16) of a table, in every lane.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn pick(t: __m512, j: i32) -> __m512 {
    _mm512_permutexvar_ps(_mm512_set1_epi32(j), t)
}

#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn load(a: &[f32; 16]) -> __m512 {
    // SAFETY: `a` is 16 readable floats; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_ps(a.as_ptr()) }
}

#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn store(o: &mut [f32; 16], v: __m512) {
    // SAFETY: `o` is 16 writable floats; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) }
}

#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn load32b(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// `o = d · codes` for 16 signed byte codes.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn emit_i8(o: &mut [f32; 16], codes: __m128i, d: __m512) {
    store(o, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(codes))));
}

/// `o = d · codes − m` for 16 unsigned byte codes (product rounded, then the difference).
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn emit_u8_sub(o: &mut [f32; 16], codes: __m128i, d: __m512, m: __m512) {
    let q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(codes));
    store(o, _mm512_sub_ps(_mm512_mul_ps(d, q), m));
}

/// `o = d · codes + m` for 16 unsigned byte codes (product rounded, then the sum).
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn emit_u8_add(o: &mut [f32; 16], codes: __m128i, d: __m512, m: __m512) {
    let q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(codes));
    store(o, _mm512_add_ps(_mm512_mul_ps(d, q), m));
}

/// F16 values (little-endian pairs of bytes) widened exactly.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn f16_row(src: &[u8], dst: &mut [f32]) {
    let (blocks, tail) = src.as_chunks::<32>();
    let (outs, _) = dst.as_chunks_mut::<16>();
    for (b, o) in blocks.iter().zip(outs.iter_mut()) {
        store(o, _mm512_cvtph_ps(load32b(b)));
    }
    let done = blocks.len().saturating_mul(16);
    scalar::decode(GgmlType::F16, tail, dst.get_mut(done..).unwrap_or_default());
}

/// BF16 values: the top half of an f32's bits.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn bf16_row(src: &[u8], dst: &mut [f32]) {
    let (blocks, tail) = src.as_chunks::<32>();
    let (outs, _) = dst.as_chunks_mut::<16>();
    for (b, o) in blocks.iter().zip(outs.iter_mut()) {
        let bits = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(load32b(b)));
        store(o, _mm512_castsi512_ps(bits));
    }
    let done = blocks.len().saturating_mul(16);
    scalar::decode(GgmlType::BF16, tail, dst.get_mut(done..).unwrap_or_default());
}

byte_decoders!("avx512f,avx512vl,avx2,fma,f16c");

/// The values `dl · q − ml` of the 16 codes `q` of a 4-bit sub-block, computed with the scalar
/// decoder's f32 operations (so looking a code up gives exactly its decoded value).
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn lut16_sub(dl: __m512, ml: __m512) -> __m512 {
    let iota =
        _mm512_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0);
    _mm512_sub_ps(_mm512_mul_ps(dl, iota), ml)
}

/// Looks up 16 codes (bytes whose low four bits select the entry; higher bits are ignored by
/// `vpermps`) in a 16-entry table and stores the values.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn emit_lut(o: &mut [f32; 16], idx: __m512i, lut: __m512) {
    store(o, _mm512_permutexvar_ps(idx, lut));
}

/// Q4_K through lookup tables: per sub-block, the 16 possible values are computed once (two
/// vector operations), then each 16 weights take one widening and one permute instead of a
/// conversion, a multiplication and a subtraction — half the work of the arithmetic decoder,
/// which is what bounds `matmul_acc` at a few tokens. Bit-exact like every decoder.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn q4_k_lut(b: &[u8; layout::q4_k::BYTES], out: &mut [f32; QK_K]) {
    let Some((&[d0, d1, m0, m1], rest)) = b.split_first_chunk::<4>() else {
        return;
    };
    let Some((packed, qs)) = rest.split_first_chunk::<12>() else {
        return;
    };
    let (Some(q), Some(o)) = (super::bytes16::<8>(qs), super::floats16::<16>(out)) else {
        return;
    };
    let t = table_u8(super::load16(&k_scales_mins(packed)), f16_splat(d0, d1), f16_splat(m0, m1));
    for ((qc, oc), j) in q.chunks_exact(2).zip(o.chunks_exact_mut(4)).zip([0, 2, 4, 6]) {
        let ([q0, q1], [o0, o1, o2, o3]) = (qc, oc) else {
            return;
        };
        let lut_lo = lut16_sub(pick(t, j), pick(t, j | 8));
        let lut_hi = lut16_sub(pick(t, j | 1), pick(t, j | 9));
        // Bytes widened to 32-bit lanes: the low nibble selects directly, `>> 4` gives the high.
        let a = _mm512_cvtepu8_epi32(super::load16(q0));
        let b = _mm512_cvtepu8_epi32(super::load16(q1));
        emit_lut(o0, a, lut_lo);
        emit_lut(o1, b, lut_lo);
        emit_lut(o2, _mm512_srli_epi32::<4>(a), lut_hi);
        emit_lut(o3, _mm512_srli_epi32::<4>(b), lut_hi);
    }
}

/// Decodes whole blocks: the lookup-table decoders where this module has one, else the shared
/// byte decoders.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
fn decode_lut(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match ty {
        GgmlType::Q4_K => super::each_block!(src, dst, layout::q4_k::BYTES, QK_K, q4_k_lut),
        _ => return decode_blocks(ty, src, dst),
    }
    true
}

/// Rows per micro-kernel.
const MR: usize = 4;
/// Tokens per micro-kernel.
const NT: usize = 6;

/// The micro-kernel: `out[t][j] += Σ_{i<k} w[j][i] · x[t][i]` for `R` weight rows and `T` tokens,
/// all sums kept in registers while it walks `k`.
///
/// # Safety
/// Each `w[j]` and `x[t]` must be valid for reading `k` floats and each `out[t]` for reading and
/// writing `R` floats; the CPU must support the enabled features.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
unsafe fn tile<const R: usize, const T: usize>(
    w: [*const f32; R],
    x: [*const f32; T],
    k: usize,
    out: [*mut f32; T],
) {
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    let full = k & !15;
    let mut i = 0usize;
    while i < full {
        let mut wv = [_mm512_setzero_ps(); R];
        for (v, &p) in wv.iter_mut().zip(&w) {
            // SAFETY: i + 16 <= k and `p` is valid for k floats.
            *v = unsafe { _mm512_loadu_ps(p.add(i)) };
        }
        for (acc_t, &p) in acc.iter_mut().zip(&x) {
            // SAFETY: as above.
            let xv = unsafe { _mm512_loadu_ps(p.add(i)) };
            for (a, &v) in acc_t.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(v, xv, *a);
            }
        }
        // i < full <= k: cannot overflow.
        i = i.wrapping_add(16);
    }
    if i < k {
        // 1..=15 elements left: masked loads read only those (masked-off lanes never fault).
        let mask = (1u32 << k.wrapping_sub(i)).wrapping_sub(1) as __mmask16;
        let mut wv = [_mm512_setzero_ps(); R];
        for (v, &p) in wv.iter_mut().zip(&w) {
            // SAFETY: the unmasked lanes are elements i..k of a row valid for k floats.
            *v = unsafe { _mm512_maskz_loadu_ps(mask, p.add(i)) };
        }
        for (acc_t, &p) in acc.iter_mut().zip(&x) {
            // SAFETY: as above.
            let xv = unsafe { _mm512_maskz_loadu_ps(mask, p.add(i)) };
            for (a, &v) in acc_t.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(v, xv, *a);
            }
        }
    }
    for (acc_t, &o) in acc.iter().zip(&out) {
        if let [a0, a1, a2, a3] = acc_t.as_slice() {
            let sums = reduce4(*a0, *a1, *a2, *a3);
            // SAFETY: R == 4 here and `o` is valid for reading and writing R floats.
            unsafe { _mm_storeu_ps(o, _mm_add_ps(_mm_loadu_ps(o), sums)) };
        } else {
            for (j, a) in acc_t.iter().enumerate() {
                // SAFETY: j < R and `o` is valid for R floats.
                unsafe { *o.add(j) += _mm512_reduce_add_ps(*a) };
            }
        }
    }
}

/// The lane sums of four vectors, `[Σa0, Σa1, Σa2, Σa3]`, in 14 shuffles and adds (four
/// separate horizontal sums take about 32).
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[inline]
fn reduce4(a0: __m512, a1: __m512, a2: __m512, a3: __m512) -> __m128 {
    // 128-bit lanes L0..L3. s01 = [a0 L0+L2, a0 L1+L3, a1 L0+L2, a1 L1+L3], s23 likewise.
    let s01 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b01_00_01_00>(a0, a1),
        _mm512_shuffle_f32x4::<0b11_10_11_10>(a0, a1),
    );
    let s23 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b01_00_01_00>(a2, a3),
        _mm512_shuffle_f32x4::<0b11_10_11_10>(a2, a3),
    );
    // Lane j now holds four partial sums of a_j.
    let t = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b10_00_10_00>(s01, s23),
        _mm512_shuffle_f32x4::<0b11_01_11_01>(s01, s23),
    );
    // Every element of lane j becomes Σa_j.
    let u = _mm512_add_ps(t, _mm512_permute_ps::<0b01_00_11_10>(t));
    let v = _mm512_add_ps(u, _mm512_permute_ps::<0b10_11_00_01>(u));
    let first_of_each_lane = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_castps512_ps128(_mm512_permutexvar_ps(first_of_each_lane, v))
}

/// Runs the `rn` × `T` micro-kernel (`rn` in 1..=MR) at the given row, token and output bases.
///
/// # Safety
/// Rows `base_w + j·w_stride` (j < rn) and tokens `base_x + t·x_stride` (t < T) valid for `k`
/// floats; outputs `base_o + t·o_stride` valid for `rn` floats.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
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
        4 => run!(4),
        3 => run!(3),
        2 => run!(2),
        1 => run!(1),
        _ => {}
    }
}

gemm_driver!("avx512f,avx512vl,avx2,fma,f16c", [6, 5, 4, 3, 2, 1]);

#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (a.get(..n).unwrap_or_default(), b.get(..n).unwrap_or_default());
    let (ac, a_tail) = a.as_chunks::<16>();
    let (bc, b_tail) = b.as_chunks::<16>();
    let mut s = [_mm512_setzero_ps(); 4];
    let (mut ga, mut gb) = (ac.chunks_exact(4), bc.chunks_exact(4));
    for (pa, pb) in (&mut ga).zip(&mut gb) {
        for ((acc, va), vb) in s.iter_mut().zip(pa).zip(pb) {
            *acc = _mm512_fmadd_ps(load(va), load(vb), *acc);
        }
    }
    let [s0, s1, s2, s3] = s;
    let mut acc = _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
    for (va, vb) in ga.remainder().iter().zip(gb.remainder()) {
        acc = _mm512_fmadd_ps(load(va), load(vb), acc);
    }
    _mm512_reduce_add_ps(acc) + scalar::dot(a_tail, b_tail)
}

#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (x, y) = (x.get(..n).unwrap_or_default(), y.get_mut(..n).unwrap_or_default());
    let a = splat(alpha);
    let (xc, x_tail) = x.as_chunks::<16>();
    let (yc, y_tail) = y.as_chunks_mut::<16>();
    for (vx, vy) in xc.iter().zip(yc.iter_mut()) {
        store(vy, _mm512_fmadd_ps(a, load(vx), load(vy)));
    }
    scalar::axpy(alpha, x_tail, y_tail);
}
