//! AVX2: `pmaddubsw` + `pmaddwd` per group of four elements, 8 rows and a token (two
//! ymm halves per panel).

use core::arch::x86_64::{
    __m256, __m256i, _mm256_abs_epi8, _mm256_add_epi32, _mm256_add_ps, _mm256_cvtepi32_ps, _mm256_loadu_ps,
    _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_mul_ps, _mm256_set1_epi16,
    _mm256_set1_epi32, _mm256_set1_epi8, _mm256_set1_ps, _mm256_setzero_ps, _mm256_setzero_si256,
    _mm256_sign_epi8, _mm256_storeu_ps, _mm256_xor_si256,
};

type VI = __m256i;
type VF = __m256;
const LANES: usize = 8;
const PARTS: usize = 2;
/// Wide codes (up to 255) are re-signed (`u − 128`) so that `pmaddubsw`'s 16-bit pair sums
/// cannot saturate; their offset is then already subtracted.
const RESIGNS: bool = true;

#[target_feature(enable = "avx2")]
#[inline]
fn codes_of(c: &[u8; 64], part: usize) -> VI {
    match c.get(part.wrapping_mul(32)..).and_then(|h| h.first_chunk::<32>()) {
        // SAFETY: `h` is 32 readable bytes; `loadu` has no alignment requirement.
        Some(h) => unsafe { _mm256_loadu_si256(h.as_ptr().cast()) },
        None => _mm256_setzero_si256(),
    }
}

#[target_feature(enable = "avx2")]
#[inline]
fn fields_of(f: &[f32; 16], part: usize) -> VF {
    match f.get(part.wrapping_mul(8)..).and_then(|h| h.first_chunk::<8>()) {
        // SAFETY: `h` is 8 readable floats; `loadu` has no alignment requirement.
        Some(h) => unsafe { _mm256_loadu_ps(h.as_ptr()) },
        None => _mm256_setzero_ps(),
    }
}

#[target_feature(enable = "avx2")]
#[inline]
fn store(v: VF, o: &mut [f32; LANES]) {
    // SAFETY: `o` is 8 writable floats; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn bcast(q: &[i8; 4]) -> VI {
    _mm256_set1_epi32(i32::from_le_bytes(q.map(|b| b as u8)))
}

#[target_feature(enable = "avx2")]
#[inline]
fn splat_i(v: i32) -> VI {
    _mm256_set1_epi32(v)
}

#[target_feature(enable = "avx2")]
#[inline]
fn splat_f(v: f32) -> VF {
    _mm256_set1_ps(v)
}

#[target_feature(enable = "avx2")]
#[inline]
fn zero_f() -> VF {
    _mm256_setzero_ps()
}

#[target_feature(enable = "avx2")]
#[inline]
fn prep<const WIDE: bool>(w: VI) -> (VI, VI) {
    if WIDE {
        let signed = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
        (_mm256_abs_epi8(signed), signed)
    } else {
        (w, w)
    }
}

/// Each lane plus the four products of its codes and the token's signed values. Narrow codes
/// (≤ 63) times values (|q| ≤ 127) pair to at most 16002, inside `pmaddubsw`'s i16; wide ones
/// multiply `|u − 128|` (≤ 128) by the values carrying the code's sign, pairs ≤ 32512.
#[target_feature(enable = "avx2")]
#[inline]
fn dot<const WIDE: bool>(acc: VI, w: (VI, VI), x: VI) -> VI {
    let (a, signed) = w;
    let x = if WIDE { _mm256_sign_epi8(x, signed) } else { x };
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, x), _mm256_set1_epi16(1)))
}

#[target_feature(enable = "avx2")]
#[inline]
fn to_f(v: VI) -> VF {
    _mm256_cvtepi32_ps(v)
}

#[target_feature(enable = "avx2")]
#[inline]
fn mul(a: VF, b: VF) -> VF {
    _mm256_mul_ps(a, b)
}

#[target_feature(enable = "avx2")]
#[inline]
fn add(a: VF, b: VF) -> VF {
    _mm256_add_ps(a, b)
}

super::panel_kernel!("avx2", 4);
