//! AVX-512 VNNI: one `vpdpbusd` per group of four elements, 16 rows and a token.

use core::arch::x86_64::{
    __m512, __m512i, _mm512_add_ps, _mm512_cvtepi32_ps, _mm512_dpbusd_epi32, _mm512_loadu_ps,
    _mm512_loadu_si512, _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_storeu_ps,
};

type VI = __m512i;
type VF = __m512;
const LANES: usize = 16;
const PARTS: usize = 1;
/// `vpdpbusd` multiplies the unsigned codes as they are; the offset is subtracted for every type.
const RESIGNS: bool = false;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn codes_of(c: &[u8; 64], _part: usize) -> VI {
    // SAFETY: `c` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(c.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn fields_of(f: &[f32; 16], _part: usize) -> VF {
    // SAFETY: `f` is 16 readable floats; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_ps(f.as_ptr()) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn store(v: VF, o: &mut [f32; LANES]) {
    // SAFETY: `o` is 16 writable floats; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn bcast(q: &[i8; 4]) -> VI {
    _mm512_set1_epi32(i32::from_le_bytes(q.map(|b| b as u8)))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn splat_i(v: i32) -> VI {
    _mm512_set1_epi32(v)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn splat_f(v: f32) -> VF {
    _mm512_set1_ps(v)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn zero_f() -> VF {
    _mm512_setzero_ps()
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn prep<const WIDE: bool>(w: VI) -> VI {
    w
}

/// Each lane plus the four products of its unsigned codes and the token's signed values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn dot<const WIDE: bool>(acc: VI, w: VI, x: VI) -> VI {
    _mm512_dpbusd_epi32(acc, w, x)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn to_f(v: VI) -> VF {
    _mm512_cvtepi32_ps(v)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn mul(a: VF, b: VF) -> VF {
    _mm512_mul_ps(a, b)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn add(a: VF, b: VF) -> VF {
    _mm512_add_ps(a, b)
}

super::panel_kernel!("avx512f,avx512bw,avx512vl,avx512vnni", 8);
