//! AVX-VNNI: one VEX-encoded `vpdpbusd` per group of four elements, 8 rows and a token (two
//! ymm halves per panel).

use core::arch::x86_64::{
    __m256, __m256i, _mm256_add_ps, _mm256_cvtepi32_ps, _mm256_dpbusd_avx_epi32, _mm256_loadu_ps,
    _mm256_loadu_si256, _mm256_mul_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setzero_ps,
    _mm256_setzero_si256, _mm256_storeu_ps,
};

type VI = __m256i;
type VF = __m256;
const LANES: usize = 8;
const PARTS: usize = 2;
/// `vpdpbusd` multiplies the unsigned codes as they are; the offset is subtracted for every type.
const RESIGNS: bool = false;

#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn codes_of(c: &[u8; 64], part: usize) -> VI {
    match c.get(part.wrapping_mul(32)..).and_then(|h| h.first_chunk::<32>()) {
        // SAFETY: `h` is 32 readable bytes; `loadu` has no alignment requirement.
        Some(h) => unsafe { _mm256_loadu_si256(h.as_ptr().cast()) },
        None => _mm256_setzero_si256(),
    }
}

#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn fields_of(f: &[f32; 16], part: usize) -> VF {
    match f.get(part.wrapping_mul(8)..).and_then(|h| h.first_chunk::<8>()) {
        // SAFETY: `h` is 8 readable floats; `loadu` has no alignment requirement.
        Some(h) => unsafe { _mm256_loadu_ps(h.as_ptr()) },
        None => _mm256_setzero_ps(),
    }
}

#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn store(v: VF, o: &mut [f32; LANES]) {
    // SAFETY: `o` is 8 writable floats; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) }
}

#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn bcast(q: &[i8; 4]) -> VI {
    _mm256_set1_epi32(i32::from_le_bytes(q.map(|b| b as u8)))
}

#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn splat_i(v: i32) -> VI {
    _mm256_set1_epi32(v)
}

#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn splat_f(v: f32) -> VF {
    _mm256_set1_ps(v)
}

#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn zero_f() -> VF {
    _mm256_setzero_ps()
}

#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn prep<const WIDE: bool>(w: VI) -> VI {
    w
}

/// Each lane plus the four products of its unsigned codes and the token's signed values.
#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn dot<const WIDE: bool>(acc: VI, w: VI, x: VI) -> VI {
    _mm256_dpbusd_avx_epi32(acc, w, x)
}

#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn to_f(v: VI) -> VF {
    _mm256_cvtepi32_ps(v)
}

#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn mul(a: VF, b: VF) -> VF {
    _mm256_mul_ps(a, b)
}

#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn add(a: VF, b: VF) -> VF {
    _mm256_add_ps(a, b)
}

super::panel_kernel!("avx2,avxvnni", 4);
