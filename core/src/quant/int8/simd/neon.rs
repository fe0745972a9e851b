//! aarch64 NEON: 16 rows as four 4-lane quarters and 2 tokens (16 integer and 16 f32
//! accumulators of the 32 q registers). Per group of four elements each lane adds its four
//! `code · value` products with `smull` + two pairwise adds, which every aarch64 runs (`sdot`,
//! one instruction, needs the dotprod extension, whose intrinsic is not stable Rust yet).

use core::arch::aarch64::{
    float32x4_t, int32x4_t, int8x16_t, vaddq_f32, vcvtq_f32_s32, vdupq_n_f32, vdupq_n_s32, vdupq_n_u8,
    veorq_u8, vget_low_s8, vld1q_f32, vld1q_s8, vmull_high_s8, vmull_s8, vmulq_f32, vpadalq_s16, vpaddq_s16,
    vreinterpretq_s8_s32, vreinterpretq_s8_u8, vreinterpretq_u8_s8, vst1q_f32,
};

type VI = int32x4_t;
type VF = float32x4_t;
const LANES: usize = 4;
const PARTS: usize = 4;
/// The products are signed × signed, so wide codes (up to 255) are re-signed (`u − 128`); their
/// offset is then already subtracted.
const RESIGNS: bool = true;

#[target_feature(enable = "neon")]
#[inline]
fn codes_of(c: &[u8; 64], part: usize) -> int8x16_t {
    match c.get(part.wrapping_mul(16)..).and_then(|q| q.first_chunk::<16>()) {
        // SAFETY: `q` is 16 readable bytes; `ld1` has no alignment requirement.
        Some(q) => unsafe { vld1q_s8(q.as_ptr().cast()) },
        None => vreinterpretq_s8_u8(vdupq_n_u8(0)),
    }
}

#[target_feature(enable = "neon")]
#[inline]
fn fields_of(f: &[f32; 16], part: usize) -> VF {
    match f.get(part.wrapping_mul(4)..).and_then(|q| q.first_chunk::<4>()) {
        // SAFETY: `q` is 4 readable floats; `ld1` has no alignment requirement.
        Some(q) => unsafe { vld1q_f32(q.as_ptr()) },
        None => vdupq_n_f32(0.0),
    }
}

#[target_feature(enable = "neon")]
#[inline]
fn store(v: VF, o: &mut [f32; LANES]) {
    // SAFETY: `o` is 4 writable floats; `st1` has no alignment requirement.
    unsafe { vst1q_f32(o.as_mut_ptr(), v) }
}

/// The token's four values in every lane.
#[target_feature(enable = "neon")]
#[inline]
fn bcast(q: &[i8; 4]) -> VI {
    vdupq_n_s32(i32::from_le_bytes(q.map(|b| b as u8)))
}

#[target_feature(enable = "neon")]
#[inline]
fn splat_i(v: i32) -> VI {
    vdupq_n_s32(v)
}

#[target_feature(enable = "neon")]
#[inline]
fn splat_f(v: f32) -> VF {
    vdupq_n_f32(v)
}

#[target_feature(enable = "neon")]
#[inline]
fn zero_f() -> VF {
    vdupq_n_f32(0.0)
}

/// The codes as signed bytes: narrow codes (≤ 63) as they are, wide ones minus 128.
#[target_feature(enable = "neon")]
#[inline]
fn prep<const WIDE: bool>(w: int8x16_t) -> int8x16_t {
    if WIDE {
        vreinterpretq_s8_u8(veorq_u8(vreinterpretq_u8_s8(w), vdupq_n_u8(0x80)))
    } else {
        w
    }
}

/// Each lane plus the four products of its signed codes and the token's values: 16-bit
/// products (|w| ≤ 128, |x| ≤ 127), pairs of them added in 16 bits (≤ 32512), then pairs of
/// pairs widened into the lane.
#[target_feature(enable = "neon")]
#[inline]
fn dot<const WIDE: bool>(acc: VI, w: int8x16_t, x: VI) -> VI {
    let x = vreinterpretq_s8_s32(x);
    let lo = vmull_s8(vget_low_s8(w), vget_low_s8(x));
    let hi = vmull_high_s8(w, x);
    vpadalq_s16(acc, vpaddq_s16(lo, hi))
}

#[target_feature(enable = "neon")]
#[inline]
fn to_f(v: VI) -> VF {
    vcvtq_f32_s32(v)
}

#[target_feature(enable = "neon")]
#[inline]
fn mul(a: VF, b: VF) -> VF {
    vmulq_f32(a, b)
}

#[target_feature(enable = "neon")]
#[inline]
fn add(a: VF, b: VF) -> VF {
    vaddq_f32(a, b)
}

super::panel_kernel!("neon", 2);
