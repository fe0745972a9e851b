//! The explicit SIMD kernels: x86-64 AVX2+FMA+F16C and AVX-512 (F + VL), chosen at run time;
//! aarch64 NEON and wasm32 simd128, chosen at compile time (the target has the feature or the
//! module is not built).
//!
//! The only module of the crate with `unsafe` code. Three kinds of `unsafe` appear, each with
//! its `SAFETY:` argument:
//! * calling a `#[target_feature]` function from code compiled without those features — only
//!   through the token types [`Avx2`] and [`Avx512`], which can be made only after run-time
//!   detection found the features ([`Neon`] and [`Simd128`] exist only where the whole crate is
//!   compiled with their feature);
//! * unaligned vector loads and stores through pointers into slices whose lengths were checked
//!   (whole-array helpers take `&[u8; 16]` / `&mut [f32; 16]`, so their bounds are in the type);
//! * the f32 micro-kernels, which read rows through raw pointers after their caller re-checked
//!   every span against the slices.
//!
//! Every x86 decoder here reproduces its scalar twin in [`super::blocks::scalar`] bit for bit: the
//! integer codes are rebuilt with byte shuffles, converted exactly, and scaled with the same f32
//! multiplications and subtractions (never a fused multiply-add). The NEON and simd128 tables
//! leave decoding to that scalar twin and provide the f32 GEMM, `dot` and `axpy`.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod neon;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::{__m128i, _mm_loadu_si128};

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::Avx512;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub(crate) use neon::Neon;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) use simd128::Simd128;

#[cfg(target_arch = "x86_64")]
cpufeatures::new!(cpu_avx2_fma, "avx", "avx2", "fma");
#[cfg(target_arch = "x86_64")]
cpufeatures::new!(cpu_avx512, "avx", "avx2", "fma", "avx512f", "avx512vl");

/// F16C (CPUID.1:ECX bit 29), which `cpufeatures` does not list. The OS's saving of the YMM
/// state it relies on is covered by the `avx` check made alongside.
#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    // `__cpuid` became a safe function in newer Rust; the block keeps the crate's MSRV building.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID leaf 1 exists on every x86-64 processor and has no side effects.
    let leaf1 = unsafe { core::arch::x86_64::__cpuid(1) };
    leaf1.ecx & (1 << 29) != 0
}

/// Whether AVX2, FMA and F16C are usable.
#[cfg(target_arch = "x86_64")]
pub(crate) fn detect_avx2() -> bool {
    cpu_avx2_fma::get() && has_f16c()
}

/// Whether AVX-512F and AVX-512VL (with AVX2, FMA and F16C) are usable.
#[cfg(target_arch = "x86_64")]
pub(crate) fn detect_avx512() -> bool {
    cpu_avx512::get() && has_f16c()
}

/// Elements spanned by `count` rows of `len`, `stride` apart (`usize::MAX` on overflow).
#[inline(always)]
fn span(count: usize, stride: usize, len: usize) -> usize {
    match count.checked_sub(1) {
        None => 0,
        Some(last) => last.checked_mul(stride).and_then(|s| s.checked_add(len)).unwrap_or(usize::MAX),
    }
}

/// Whether the strided operands of a GEMM call lie within their slices (re-checked by the SIMD
/// GEMMs, whose micro-kernels read through raw pointers).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gemm_in_bounds(
    w: &[f32],
    w_stride: usize,
    n_rows: usize,
    k: usize,
    x: &[f32],
    x_stride: usize,
    n_tokens: usize,
    out: &[f32],
    out_stride: usize,
) -> bool {
    w_stride >= k
        && x_stride >= k
        && out_stride >= n_rows
        && span(n_rows, w_stride, k) <= w.len()
        && span(n_tokens, x_stride, k) <= x.len()
        && span(n_tokens, out_stride, n_rows) <= out.len()
}

/// The k-blocks a GEMM walks: chunks of at most `MAX_KC` elements (a multiple of 16), so that the
/// token and weight panels of one micro-kernel sweep stay in L1 for long rows.
#[inline(always)]
fn k_blocks(k: usize) -> impl Iterator<Item = (usize, usize)> {
    const MAX_KC: usize = 1024;
    let n_blocks = k.div_ceil(MAX_KC).max(1);
    let kc = k.div_ceil(n_blocks).next_multiple_of(16).max(16);
    (0..k).step_by(kc).map(move |k0| (k0, kc.min(k.saturating_sub(k0))))
}

/// Row blocks `(first, count)` of a GEMM over `n_rows` rows of a `kc`-element k-block: about
/// 192 KiB of weights each (a multiple of the micro-kernel's `mr` rows), so that a block stays in
/// L2 while every token tile sweeps it.
#[inline(always)]
fn row_blocks(n_rows: usize, kc: usize, mr: usize) -> impl Iterator<Item = (usize, usize)> {
    const BLOCK_FLOATS: usize = 192 * 1024 / 4;
    let rows = BLOCK_FLOATS.checked_div(kc).unwrap_or(BLOCK_FLOATS);
    let mc = rows.checked_div(mr).unwrap_or(1).max(1).saturating_mul(mr);
    (0..n_rows).step_by(mc.max(1)).map(move |r0| (r0, mc.min(n_rows.saturating_sub(r0))))
}

/// Sixteen bytes as a vector.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn load16(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes; `loadu` has no alignment requirement; SSE2 is part of the
    // x86-64 baseline.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// A slice of whole 16-byte groups as an array of `N` of them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn bytes16<const N: usize>(b: &[u8]) -> Option<&[[u8; 16]; N]> {
    b.as_chunks::<16>().0.try_into().ok()
}

/// A slice of floats as an array of `N` groups of 16.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn floats16<const N: usize>(o: &mut [f32]) -> Option<&mut [[f32; 16]; N]> {
    o.as_chunks_mut::<16>().0.try_into().ok()
}

/// Applies a whole-block decoder to every block of `src`, in order, into `dst`.
#[cfg(target_arch = "x86_64")]
macro_rules! each_block {
    ($src:expr, $dst:expr, $bytes:expr, $elems:expr, $f:ident) => {{
        let (blocks, _) = $src.as_chunks::<{ $bytes }>();
        let (outs, _) = $dst.as_chunks_mut::<{ $elems }>();
        for (b, o) in blocks.iter().zip(outs.iter_mut()) {
            $f(b, o);
        }
    }};
}
#[cfg(target_arch = "x86_64")]
use each_block;

/// The block decoders of every quantized type, written once over byte vectors and instantiated
/// in each ISA module with that module's `f16_splat` (a block scale widened into every lane),
/// `table_u8` / `table_i8` (16 byte codes times block scales: a block's sub-block scales, all
/// in one vector product) and `pick` (one entry of such a table in every lane), `emit_i8`,
/// `emit_u8_sub` and `emit_u8_add` (which widen 16 byte codes to f32, scale them and store them)
/// and its feature list.
#[cfg(target_arch = "x86_64")]
macro_rules! byte_decoders {
    ($feat:literal) => {
        /// This ISA's block decoders (generated by `byte_decoders!`).
        mod decoders {
            use super::{
                bf16_row, emit_i8, emit_u8_add, emit_u8_sub, f16_row, f16_splat, pick, table_i8, table_u8,
            };
            use core::arch::x86_64::{
                __m128i, _mm_and_si128, _mm_andnot_si128, _mm_cmpeq_epi8, _mm_cvtsi32_si128, _mm_or_si128,
                _mm_set1_epi8, _mm_setr_epi8, _mm_shuffle_epi8, _mm_slli_epi16, _mm_srl_epi16,
                _mm_srli_epi16, _mm_sub_epi8,
            };
            use $crate::gguf::GgmlType;
            use $crate::quant::blocks::{
                iq4_xs_scales, k_scales_mins, layout, q3_k_scales, IQ4_LEVELS, QK, QK_K,
            };
            use $crate::quant::simd::{bytes16, each_block, floats16, load16};

            /// The low and high nibbles of 16 bytes.
            #[target_feature(enable = $feat)]
            #[inline]
            fn nibbles(v: __m128i) -> (__m128i, __m128i) {
                let m = _mm_set1_epi8(0x0f);
                (_mm_and_si128(v, m), _mm_and_si128(_mm_srli_epi16::<4>(v), m))
            }

            /// Bytes shifted right by `n` (< 8) bits (16-bit lanes; callers mask the low bits kept,
            /// which then come from the byte itself).
            #[target_feature(enable = $feat)]
            #[inline]
            fn shr(v: __m128i, n: i32) -> __m128i {
                _mm_srl_epi16(v, _mm_cvtsi32_si128(n))
            }

            /// `0x10` in byte `i` where bit `i` of `qh` is set, for `i` in 0..16 (first) and 16..32
            /// (second): the fifth bits of a Q5_0 / Q5_1 block.
            #[target_feature(enable = $feat)]
            #[inline]
            fn fifth_bits(qh: u32) -> (__m128i, __m128i) {
                let v = _mm_cvtsi32_si128(qh as i32);
                let sel_lo = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
                let sel_hi = _mm_setr_epi8(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
                let bit = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
                let ten = _mm_set1_epi8(0x10);
                let set_lo = _mm_cmpeq_epi8(_mm_and_si128(_mm_shuffle_epi8(v, sel_lo), bit), bit);
                let set_hi = _mm_cmpeq_epi8(_mm_and_si128(_mm_shuffle_epi8(v, sel_hi), bit), bit);
                (_mm_and_si128(set_lo, ten), _mm_and_si128(set_hi, ten))
            }

            /// `0x10` in each byte whose bit `j` (< 8) is set.
            #[target_feature(enable = $feat)]
            #[inline]
            fn bit_to_16(v: __m128i, j: i32) -> __m128i {
                _mm_slli_epi16::<4>(_mm_and_si128(shr(v, j), _mm_set1_epi8(1)))
            }

            /// The IQ4 level table as 16 signed bytes.
            #[target_feature(enable = $feat)]
            #[inline]
            fn iq4_table() -> __m128i {
                let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = IQ4_LEVELS;
                _mm_setr_epi8(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p)
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn q4_0(b: &[u8; layout::q4_0::BYTES], out: &mut [f32; QK]) {
                let Some((&[d0, d1], qs)) = b.split_first_chunk::<2>() else {
                    return;
                };
                let (Some([q]), Some([o0, o1])) = (bytes16::<1>(qs), floats16::<2>(out)) else {
                    return;
                };
                let d = f16_splat(d0, d1);
                let (lo, hi) = nibbles(load16(q));
                let eight = _mm_set1_epi8(8);
                emit_i8(o0, _mm_sub_epi8(lo, eight), d);
                emit_i8(o1, _mm_sub_epi8(hi, eight), d);
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn q4_1(b: &[u8; layout::q4_1::BYTES], out: &mut [f32; QK]) {
                let Some((&[d0, d1, m0, m1], qs)) = b.split_first_chunk::<4>() else {
                    return;
                };
                let (Some([q]), Some([o0, o1])) = (bytes16::<1>(qs), floats16::<2>(out)) else {
                    return;
                };
                let (d, m) = (f16_splat(d0, d1), f16_splat(m0, m1));
                let (lo, hi) = nibbles(load16(q));
                emit_u8_add(o0, lo, d, m);
                emit_u8_add(o1, hi, d, m);
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn q5_0(b: &[u8; layout::q5_0::BYTES], out: &mut [f32; QK]) {
                let Some((&[d0, d1, h0, h1, h2, h3], qs)) = b.split_first_chunk::<6>() else {
                    return;
                };
                let (Some([q]), Some([o0, o1])) = (bytes16::<1>(qs), floats16::<2>(out)) else {
                    return;
                };
                let d = f16_splat(d0, d1);
                let (lo, hi) = nibbles(load16(q));
                let (b_lo, b_hi) = fifth_bits(u32::from_le_bytes([h0, h1, h2, h3]));
                let sixteen = _mm_set1_epi8(16);
                emit_i8(o0, _mm_sub_epi8(_mm_or_si128(lo, b_lo), sixteen), d);
                emit_i8(o1, _mm_sub_epi8(_mm_or_si128(hi, b_hi), sixteen), d);
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn q5_1(b: &[u8; layout::q5_1::BYTES], out: &mut [f32; QK]) {
                let Some((&[d0, d1, m0, m1, h0, h1, h2, h3], qs)) = b.split_first_chunk::<8>() else {
                    return;
                };
                let (Some([q]), Some([o0, o1])) = (bytes16::<1>(qs), floats16::<2>(out)) else {
                    return;
                };
                let (d, m) = (f16_splat(d0, d1), f16_splat(m0, m1));
                let (lo, hi) = nibbles(load16(q));
                let (b_lo, b_hi) = fifth_bits(u32::from_le_bytes([h0, h1, h2, h3]));
                emit_u8_add(o0, _mm_or_si128(lo, b_lo), d, m);
                emit_u8_add(o1, _mm_or_si128(hi, b_hi), d, m);
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn q8_0(b: &[u8; layout::q8_0::BYTES], out: &mut [f32; QK]) {
                let Some((&[d0, d1], qs)) = b.split_first_chunk::<2>() else {
                    return;
                };
                let (Some([q0, q1]), Some([o0, o1])) = (bytes16::<2>(qs), floats16::<2>(out)) else {
                    return;
                };
                let d = f16_splat(d0, d1);
                emit_i8(o0, load16(q0), d);
                emit_i8(o1, load16(q1), d);
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn iq4_nl(b: &[u8; layout::iq4_nl::BYTES], out: &mut [f32; QK]) {
                let Some((&[d0, d1], qs)) = b.split_first_chunk::<2>() else {
                    return;
                };
                let (Some([q]), Some([o0, o1])) = (bytes16::<1>(qs), floats16::<2>(out)) else {
                    return;
                };
                let d = f16_splat(d0, d1);
                let table = iq4_table();
                let (lo, hi) = nibbles(load16(q));
                emit_i8(o0, _mm_shuffle_epi8(table, lo), d);
                emit_i8(o1, _mm_shuffle_epi8(table, hi), d);
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn q2_k(b: &[u8; layout::q2_k::BYTES], out: &mut [f32; QK_K]) {
                let Some((scales, rest)) = b.split_first_chunk::<16>() else {
                    return;
                };
                let Some((qs, rest)) = rest.split_first_chunk::<64>() else {
                    return;
                };
                let Some((&[d0, d1, m0, m1], _)) = rest.split_first_chunk::<4>() else {
                    return;
                };
                let (Some(q), Some(o)) = (bytes16::<4>(qs), floats16::<16>(out)) else {
                    return;
                };
                let (d, dmin) = (f16_splat(d0, d1), f16_splat(m0, m1));
                let (sv, lo4) = (load16(scales), _mm_set1_epi8(0x0f));
                let scale = table_u8(_mm_and_si128(sv, lo4), d, d);
                let min = table_u8(_mm_and_si128(_mm_srli_epi16::<4>(sv), lo4), dmin, dmin);
                let three = _mm_set1_epi8(3);
                // Half h: bytes q[2h], q[2h + 1]; shift 2s fills outputs 8h + 2s and 8h + 2s + 1,
                // whose scales are entries 8h + 2s and 8h + 2s + 1 (bits that do not overlap, so
                // `|` adds them).
                for ((qh, oh), h) in q.chunks_exact(2).zip(o.chunks_exact_mut(8)).zip([0, 8]) {
                    let [q0, q1] = qh else { return };
                    let (v0, v1) = (load16(q0), load16(q1));
                    for ((os, shift), s) in oh.chunks_exact_mut(2).zip([0, 2, 4, 6]).zip([0, 2, 4, 6]) {
                        let [o0, o1] = os else { return };
                        for (o, v, p) in [(o0, v0, 0), (o1, v1, 1)] {
                            let j = h | s | p;
                            let codes = _mm_and_si128(shr(v, shift), three);
                            emit_u8_sub(o, codes, pick(scale, j), pick(min, j));
                        }
                    }
                }
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn q3_k(b: &[u8; layout::q3_k::BYTES], out: &mut [f32; QK_K]) {
                let Some((hmask, rest)) = b.split_first_chunk::<32>() else {
                    return;
                };
                let Some((qs, rest)) = rest.split_first_chunk::<64>() else {
                    return;
                };
                let Some((packed, rest)) = rest.split_first_chunk::<12>() else {
                    return;
                };
                let Some((&[d0, d1], _)) = rest.split_first_chunk::<2>() else {
                    return;
                };
                let (Some([m0, m1]), Some(q), Some(o)) =
                    (bytes16::<2>(hmask), bytes16::<4>(qs), floats16::<16>(out))
                else {
                    return;
                };
                let d = f16_splat(d0, d1);
                let codes = _mm_sub_epi8(load16(&q3_k_scales(packed)), _mm_set1_epi8(32));
                let scale = table_i8(codes, d);
                let (vm0, vm1) = (load16(m0), load16(m1));
                let (three, one, four) = (_mm_set1_epi8(3), _mm_set1_epi8(1), _mm_set1_epi8(4));
                // Group 4h + s (32 elements) takes bits 2s of its quant bytes and bit 4h + s of the
                // high-bit bytes; its two halves use scales 8h + 2s and 8h + 2s + 1.
                for ((qh, oh), (h, bits)) in
                    q.chunks_exact(2).zip(o.chunks_exact_mut(8)).zip([(0, [0, 1, 2, 3]), (8, [4, 5, 6, 7])])
                {
                    let [q0, q1] = qh else { return };
                    let (v0, v1) = (load16(q0), load16(q1));
                    for (((os, shift), bit), s) in
                        oh.chunks_exact_mut(2).zip([0, 2, 4, 6]).zip(bits).zip([0, 2, 4, 6])
                    {
                        let [o0, o1] = os else { return };
                        for (o, v, vm, p) in [(o0, v0, vm0, 0), (o1, v1, vm1, 1)] {
                            let low = _mm_and_si128(shr(v, shift), three);
                            let high = _mm_and_si128(shr(vm, bit), one);
                            // 4 where the high bit is clear, else 0.
                            let sub = _mm_andnot_si128(_mm_slli_epi16::<2>(high), four);
                            emit_i8(o, _mm_sub_epi8(low, sub), pick(scale, h | s | p));
                        }
                    }
                }
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn q4_k(b: &[u8; layout::q4_k::BYTES], out: &mut [f32; QK_K]) {
                let Some((&[d0, d1, m0, m1], rest)) = b.split_first_chunk::<4>() else {
                    return;
                };
                let Some((packed, qs)) = rest.split_first_chunk::<12>() else {
                    return;
                };
                let (Some(q), Some(o)) = (bytes16::<8>(qs), floats16::<16>(out)) else {
                    return;
                };
                // Entries 0..8: d · scale of sub-block j; 8..16: dmin · min of sub-block j.
                let t = table_u8(load16(&k_scales_mins(packed)), f16_splat(d0, d1), f16_splat(m0, m1));
                // Pair c: bytes q[2c], q[2c + 1]; low nibbles are sub-block j = 2c (outputs 4c,
                // 4c + 1), high nibbles sub-block j | 1 (outputs 4c + 2, 4c + 3).
                for ((qc, oc), j) in q.chunks_exact(2).zip(o.chunks_exact_mut(4)).zip([0, 2, 4, 6]) {
                    let ([q0, q1], [o0, o1, o2, o3]) = (qc, oc) else {
                        return;
                    };
                    let (dl, ml) = (pick(t, j), pick(t, j | 8));
                    let (dh, mh) = (pick(t, j | 1), pick(t, j | 9));
                    let (a_lo, a_hi) = nibbles(load16(q0));
                    let (b_lo, b_hi) = nibbles(load16(q1));
                    emit_u8_sub(o0, a_lo, dl, ml);
                    emit_u8_sub(o1, b_lo, dl, ml);
                    emit_u8_sub(o2, a_hi, dh, mh);
                    emit_u8_sub(o3, b_hi, dh, mh);
                }
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn q5_k(b: &[u8; layout::q5_k::BYTES], out: &mut [f32; QK_K]) {
                let Some((&[d0, d1, m0, m1], rest)) = b.split_first_chunk::<4>() else {
                    return;
                };
                let Some((packed, rest)) = rest.split_first_chunk::<12>() else {
                    return;
                };
                let Some((qh, qs)) = rest.split_first_chunk::<32>() else {
                    return;
                };
                let (Some([h0, h1]), Some(q), Some(o)) =
                    (bytes16::<2>(qh), bytes16::<8>(qs), floats16::<16>(out))
                else {
                    return;
                };
                let t = table_u8(load16(&k_scales_mins(packed)), f16_splat(d0, d1), f16_splat(m0, m1));
                let (vh0, vh1) = (load16(h0), load16(h1));
                for ((qc, oc), j) in q.chunks_exact(2).zip(o.chunks_exact_mut(4)).zip([0, 2, 4, 6]) {
                    let ([q0, q1], [o0, o1, o2, o3]) = (qc, oc) else {
                        return;
                    };
                    let (dl, ml) = (pick(t, j), pick(t, j | 8));
                    let (dh, mh) = (pick(t, j | 1), pick(t, j | 9));
                    let (a_lo, a_hi) = nibbles(load16(q0));
                    let (b_lo, b_hi) = nibbles(load16(q1));
                    let j1 = j | 1;
                    emit_u8_sub(o0, _mm_or_si128(a_lo, bit_to_16(vh0, j)), dl, ml);
                    emit_u8_sub(o1, _mm_or_si128(b_lo, bit_to_16(vh1, j)), dl, ml);
                    emit_u8_sub(o2, _mm_or_si128(a_hi, bit_to_16(vh0, j1)), dh, mh);
                    emit_u8_sub(o3, _mm_or_si128(b_hi, bit_to_16(vh1, j1)), dh, mh);
                }
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn q6_k(b: &[u8; layout::q6_k::BYTES], out: &mut [f32; QK_K]) {
                let Some((ql, rest)) = b.split_first_chunk::<128>() else {
                    return;
                };
                let Some((qh, rest)) = rest.split_first_chunk::<64>() else {
                    return;
                };
                let Some((scales, rest)) = rest.split_first_chunk::<16>() else {
                    return;
                };
                let Some((&[d0, d1], _)) = rest.split_first_chunk::<2>() else {
                    return;
                };
                let (Some(ql), Some(qh), Some(o)) = (bytes16::<8>(ql), bytes16::<4>(qh), floats16::<16>(out))
                else {
                    return;
                };
                let scale = table_i8(load16(scales), f16_splat(d0, d1));
                let (mask4, three, bias) = (_mm_set1_epi8(0x0f), _mm_set1_epi8(3), _mm_set1_epi8(32));
                // Half h: low-nibble bytes [a0, a1, b0, b1], high-bit bytes [h0, h1], 8 outputs.
                // Quarter s takes nibbles from a (s even) or b (s odd), low (s < 2) or high, and
                // high bits at shift 2s; its two 16-element parts use a0/h0 and a1/h1 and scales
                // 8h + 2s and 8h + 2s + 1.
                for (((qlh, qhh), oh), h) in
                    ql.chunks_exact(4).zip(qh.chunks_exact(2)).zip(o.chunks_exact_mut(8)).zip([0, 8])
                {
                    let ([a0, a1, b0, b1], [h0, h1]) = (qlh, qhh) else {
                        return;
                    };
                    let (va0, va1, vb0, vb1) = (load16(a0), load16(a1), load16(b0), load16(b1));
                    let (vh0, vh1) = (load16(h0), load16(h1));
                    let quarters = [
                        (_mm_and_si128(va0, mask4), _mm_and_si128(va1, mask4), 0),
                        (_mm_and_si128(vb0, mask4), _mm_and_si128(vb1, mask4), 2),
                        (nibbles(va0).1, nibbles(va1).1, 4),
                        (nibbles(vb0).1, nibbles(vb1).1, 6),
                    ];
                    for (os, (n0, n1, shift)) in oh.chunks_exact_mut(2).zip(quarters) {
                        let [o0, o1] = os else { return };
                        for (o, n, vh, p) in [(o0, n0, vh0, 0), (o1, n1, vh1, 1)] {
                            let high = _mm_slli_epi16::<4>(_mm_and_si128(shr(vh, shift), three));
                            let codes = _mm_sub_epi8(_mm_or_si128(n, high), bias);
                            emit_i8(o, codes, pick(scale, h | shift | p));
                        }
                    }
                }
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn iq4_xs(b: &[u8; layout::iq4_xs::BYTES], out: &mut [f32; QK_K]) {
                let Some((&[d0, d1, h0, h1], rest)) = b.split_first_chunk::<4>() else {
                    return;
                };
                let Some((scales_l, qs)) = rest.split_first_chunk::<4>() else {
                    return;
                };
                let (Some(q), Some(o)) = (bytes16::<8>(qs), floats16::<16>(out)) else {
                    return;
                };
                let [s0, s1, s2, s3, s4, s5, s6, s7] = iq4_xs_scales(u16::from_le_bytes([h0, h1]), scales_l);
                let six = [s0, s1, s2, s3, s4, s5, s6, s7, 32, 32, 32, 32, 32, 32, 32, 32];
                let scale = table_i8(_mm_sub_epi8(load16(&six), _mm_set1_epi8(32)), f16_splat(d0, d1));
                let table = iq4_table();
                for ((qj, oj), j) in q.iter().zip(o.chunks_exact_mut(2)).zip(0..8) {
                    let [o0, o1] = oj else { return };
                    let dl = pick(scale, j);
                    let (lo, hi) = nibbles(load16(qj));
                    emit_i8(o0, _mm_shuffle_epi8(table, lo), dl);
                    emit_i8(o1, _mm_shuffle_epi8(table, hi), dl);
                }
            }

            /// Decodes the whole blocks of `src` into `dst` with this ISA's decoders; `false` for
            /// a type decoded elsewhere (F32).
            #[target_feature(enable = $feat)]
            pub(super) fn decode_blocks(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
                match ty {
                    GgmlType::F16 => f16_row(src, dst),
                    GgmlType::BF16 => bf16_row(src, dst),
                    GgmlType::Q4_0 => each_block!(src, dst, layout::q4_0::BYTES, QK, q4_0),
                    GgmlType::Q4_1 => each_block!(src, dst, layout::q4_1::BYTES, QK, q4_1),
                    GgmlType::Q5_0 => each_block!(src, dst, layout::q5_0::BYTES, QK, q5_0),
                    GgmlType::Q5_1 => each_block!(src, dst, layout::q5_1::BYTES, QK, q5_1),
                    GgmlType::Q8_0 => each_block!(src, dst, layout::q8_0::BYTES, QK, q8_0),
                    GgmlType::Q2_K => each_block!(src, dst, layout::q2_k::BYTES, QK_K, q2_k),
                    GgmlType::Q3_K => each_block!(src, dst, layout::q3_k::BYTES, QK_K, q3_k),
                    GgmlType::Q4_K => each_block!(src, dst, layout::q4_k::BYTES, QK_K, q4_k),
                    GgmlType::Q5_K => each_block!(src, dst, layout::q5_k::BYTES, QK_K, q5_k),
                    GgmlType::Q6_K => each_block!(src, dst, layout::q6_k::BYTES, QK_K, q6_k),
                    GgmlType::IQ4_NL => each_block!(src, dst, layout::iq4_nl::BYTES, QK, iq4_nl),
                    GgmlType::IQ4_XS => each_block!(src, dst, layout::iq4_xs::BYTES, QK_K, iq4_xs),
                    _ => return false,
                }
                true
            }
        }
        use decoders::decode_blocks;
    };
}
#[cfg(target_arch = "x86_64")]
use byte_decoders;

/// The f32 GEMM driver of an ISA module, written once: blocks of `k` (`k_blocks`), of rows
/// (`row_blocks`, the module's `MR`), then tiles of up to the module's `NT` tokens handed to its
/// register-blocked `rows::<T>` for each token count `T` listed (from `NT` down to 1). Out of
/// bounds shapes do nothing (callers validate first).
macro_rules! gemm_driver {
    ($feat:literal, [$($t:literal),+]) => {
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        fn gemm(
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
            if !gemm_in_bounds(w, w_stride, n_rows, k, x, x_stride, n_tokens, out, out_stride) {
                return;
            }
            // All index arithmetic below stays within the spans just checked (r0 < n_rows, t0 <
            // n_tokens, k0 + kc <= k), so the wrapping operations never wrap.
            for (k0, kc) in k_blocks(k) {
                for (rb0, rbn) in row_blocks(n_rows, kc, MR) {
                    let r_end = rb0.wrapping_add(rbn);
                    let mut t0 = 0usize;
                    while t0 < n_tokens {
                        let tn = n_tokens.wrapping_sub(t0).min(NT);
                        let xb = x.as_ptr().wrapping_add(t0.wrapping_mul(x_stride).wrapping_add(k0));
                        let mut r0 = rb0;
                        while r0 < r_end {
                            let rn = r_end.wrapping_sub(r0).min(MR);
                            let wb = w.as_ptr().wrapping_add(r0.wrapping_mul(w_stride).wrapping_add(k0));
                            let ob = out.as_mut_ptr().wrapping_add(t0.wrapping_mul(out_stride).wrapping_add(r0));
                            // SAFETY: rows r0..r0+rn, tokens t0..t0+tn and elements k0..k0+kc lie
                            // within `w`, `x` and `out` (gemm_in_bounds above); the CPU supports
                            // the features (caller).
                            unsafe {
                                match tn {
                                    $($t => rows::<$t>(rn, wb, w_stride, xb, x_stride, kc, ob, out_stride),)+
                                    _ => {}
                                }
                            }
                            r0 = r0.wrapping_add(rn);
                        }
                        t0 = t0.wrapping_add(tn);
                    }
                }
            }
        }
    };
}
use gemm_driver;
