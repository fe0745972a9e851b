//! AVX-512BW without VNNI: `pmaddubsw` + `pmaddwd` per group of four elements, 16 rows and a token.

use core::arch::x86_64::{
    __m512, __m512i, __mmask64, _mm512_abs_epi8, _mm512_add_epi32, _mm512_add_ps, _mm512_cvtepi32_ps,
    _mm512_loadu_ps, _mm512_loadu_si512, _mm512_madd_epi16, _mm512_maddubs_epi16, _mm512_mask_sub_epi8,
    _mm512_movepi8_mask, _mm512_mul_ps, _mm512_set1_epi16, _mm512_set1_epi32, _mm512_set1_epi8,
    _mm512_set1_ps, _mm512_setzero_ps, _mm512_setzero_si512, _mm512_storeu_ps, _mm512_xor_si512,
};

type VI = __m512i;
type VF = __m512;
const LANES: usize = 16;
const PARTS: usize = 1;
/// Wide codes (up to 255) are re-signed (`u − 128`) so that `pmaddubsw`'s 16-bit pair sums
/// cannot saturate; their offset is then already subtracted.
const RESIGNS: bool = true;

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn codes_of(c: &[u8; 64], _part: usize) -> VI {
    // SAFETY: `c` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(c.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn fields_of(f: &[f32; 16], _part: usize) -> VF {
    // SAFETY: `f` is 16 readable floats; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_ps(f.as_ptr()) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn store(v: VF, o: &mut [f32; LANES]) {
    // SAFETY: `o` is 16 writable floats; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn bcast(q: &[i8; 4]) -> VI {
    _mm512_set1_epi32(i32::from_le_bytes(q.map(|b| b as u8)))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn splat_i(v: i32) -> VI {
    _mm512_set1_epi32(v)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn splat_f(v: f32) -> VF {
    _mm512_set1_ps(v)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn zero_f() -> VF {
    _mm512_setzero_ps()
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn prep<const WIDE: bool>(w: VI) -> (VI, __mmask64) {
    if WIDE {
        let signed = _mm512_xor_si512(w, _mm512_set1_epi8(-128));
        (_mm512_abs_epi8(signed), _mm512_movepi8_mask(signed))
    } else {
        (w, 0)
    }
}

/// Each lane plus the four products of its codes and the token's signed values. Narrow codes
/// (≤ 63) times values (|q| ≤ 127) pair to at most 16002, inside `pmaddubsw`'s i16; wide ones
/// multiply `|u − 128|` (≤ 128) by the values negated where the code is negative, pairs ≤ 32512.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn dot<const WIDE: bool>(acc: VI, w: (VI, __mmask64), x: VI) -> VI {
    let (a, negative) = w;
    let x = if WIDE { _mm512_mask_sub_epi8(x, negative, _mm512_setzero_si512(), x) } else { x };
    _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(a, x), _mm512_set1_epi16(1)))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn to_f(v: VI) -> VF {
    _mm512_cvtepi32_ps(v)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn mul(a: VF, b: VF) -> VF {
    _mm512_mul_ps(a, b)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn add(a: VF, b: VF) -> VF {
    _mm512_add_ps(a, b)
}

super::panel_kernel!("avx512f,avx512bw,avx512vl", 8);
