//! wasm32 simd128: 16 rows as four 4-lane quarters and 2 tokens. Per group of four elements each
//! lane adds its four `code · value` products: codes widened to 16 bits, `i32x4.dot_i16x8_s`
//! against the token's values (two products a lane), then the two halves of each row added —
//! exact integer sums.
//!
//! The obvious 16-bit form (`i16x8.extmul` of the bytes, pairs added in 16 bits) is not used:
//! LLVM fuses it into `i16x8.relaxed_dot_i8x16_i7x16_s`, a relaxed-simd instruction, even when
//! that feature is off, and engines without it refuse the module.

use core::arch::wasm32::{
    f32x4_add, f32x4_convert_i32x4, f32x4_mul, f32x4_splat, i16x8_extend_high_i8x16, i16x8_extend_low_i8x16,
    i32x4_add, i32x4_dot_i16x8, i32x4_shuffle, i32x4_splat, i64x2_splat, u8x16_splat, v128, v128_load,
    v128_store, v128_xor,
};

type VI = v128;
type VF = v128;
const LANES: usize = 4;
const PARTS: usize = 4;
/// The products are signed × signed, so wide codes (up to 255) are re-signed (`u − 128`); their
/// offset is then already subtracted.
const RESIGNS: bool = true;

#[inline(always)]
fn codes_of(c: &[u8; 64], part: usize) -> VI {
    match c.get(part.wrapping_mul(16)..).and_then(|q| q.first_chunk::<16>()) {
        // SAFETY: `q` is 16 readable bytes; `v128.load` has no alignment requirement.
        Some(q) => unsafe { v128_load(q.as_ptr().cast()) },
        None => i32x4_splat(0),
    }
}

#[inline(always)]
fn fields_of(f: &[f32; 16], part: usize) -> VF {
    match f.get(part.wrapping_mul(4)..).and_then(|q| q.first_chunk::<4>()) {
        // SAFETY: `q` is 16 readable bytes; `v128.load` has no alignment requirement.
        Some(q) => unsafe { v128_load(q.as_ptr().cast()) },
        None => f32x4_splat(0.0),
    }
}

#[inline(always)]
fn store(v: VF, o: &mut [f32; LANES]) {
    // SAFETY: `o` is 16 writable bytes; `v128.store` has no alignment requirement.
    unsafe { v128_store(o.as_mut_ptr().cast(), v) }
}

/// The token's four values as 16-bit integers, twice (`dot`'s `x`).
#[inline(always)]
fn bcast(q: &[i8; 4]) -> VI {
    let [a, b, c, d] = q.map(|v| u64::from(i16::from(v) as u16));
    i64x2_splat((a | b << 16 | c << 32 | d << 48) as i64)
}

#[inline(always)]
fn splat_i(v: i32) -> VI {
    i32x4_splat(v)
}

#[inline(always)]
fn splat_f(v: f32) -> VF {
    f32x4_splat(v)
}

#[inline(always)]
fn zero_f() -> VF {
    f32x4_splat(0.0)
}

/// The codes as signed bytes: narrow codes (≤ 63) as they are, wide ones minus 128.
#[inline(always)]
fn prep<const WIDE: bool>(w: VI) -> VI {
    if WIDE {
        v128_xor(w, u8x16_splat(0x80))
    } else {
        w
    }
}

/// Each lane plus the four products of its signed codes and the token's values (`x` from
/// `bcast`, or zeros): rows 0–1 from the low eight codes, rows 2–3 from the high eight, each
/// `dot_i16x8` lane holding one half of a row's sum.
#[inline(always)]
fn dot<const WIDE: bool>(acc: VI, w: VI, x: VI) -> VI {
    let lo = i32x4_dot_i16x8(i16x8_extend_low_i8x16(w), x);
    let hi = i32x4_dot_i16x8(i16x8_extend_high_i8x16(w), x);
    let first = i32x4_shuffle::<0, 2, 4, 6>(lo, hi);
    let second = i32x4_shuffle::<1, 3, 5, 7>(lo, hi);
    i32x4_add(acc, i32x4_add(first, second))
}

#[inline(always)]
fn to_f(v: VI) -> VF {
    f32x4_convert_i32x4(v)
}

#[inline(always)]
fn mul(a: VF, b: VF) -> VF {
    f32x4_mul(a, b)
}

#[inline(always)]
fn add(a: VF, b: VF) -> VF {
    f32x4_add(a, b)
}

super::panel_kernel!("simd128", 2);
