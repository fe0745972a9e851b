//! Block layouts of the computable ggml types and their scalar decoders (the reference every
//! SIMD decoder must reproduce bit for bit).
//!
//! Each layout is written down as byte offsets inside one block and checked at compile time
//! against [`GgmlType::block_bytes`] and [`GgmlType::block_elems`]. All multi-byte fields are
//! little-endian; `f16` fields are IEEE half floats.
//!
//! Bit-exactness: every decoder computes in `f32` with the same operations, in the same order, as
//! gguf-py's numpy dequantizers (a scale times a small integer, then — for types with a minimum —
//! a separate subtraction or addition; never a fused multiply-add), so the values equal the
//! reference exactly.

use crate::gguf::GgmlType;

/// Elements of a 32-element block (the `_0`/`_1` types and IQ4_NL).
pub(crate) const QK: usize = 32;
/// Elements of a K-quant super-block (and IQ4_XS).
pub(crate) const QK_K: usize = 256;

/// The 16 signed levels a 4-bit index selects in IQ4_NL and IQ4_XS (a non-uniform grid, denser
/// near zero).
pub(crate) const IQ4_LEVELS: [i8; 16] =
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// Byte offsets and sizes of one block of each type.
///
/// A field named `X` starts at byte `X` of the block; its length is the next field's offset minus
/// its own (the last field runs to `BYTES`).
pub(crate) mod layout {
    /// Q4_0: `d: f16`, then 16 bytes of 4-bit quants (element `j` in the low nibble of byte `j`,
    /// element `j + 16` in its high nibble). Value `d * (q - 8)`.
    pub mod q4_0 {
        pub const D: usize = 0;
        pub const QS: usize = 2;
        pub const BYTES: usize = QS + 16;
    }
    /// Q4_1: `d: f16`, `m: f16`, 16 bytes of nibbles as Q4_0. Value `d * q + m`.
    pub mod q4_1 {
        pub const D: usize = 0;
        pub const M: usize = 2;
        pub const QS: usize = 4;
        pub const BYTES: usize = QS + 16;
    }
    /// Q5_0: `d: f16`, `qh: u32` (bit `j` is the fifth bit of element `j`), 16 bytes of low
    /// nibbles as Q4_0. Value `d * (q - 16)`.
    pub mod q5_0 {
        pub const D: usize = 0;
        pub const QH: usize = 2;
        pub const QS: usize = 6;
        pub const BYTES: usize = QS + 16;
    }
    /// Q5_1: `d: f16`, `m: f16`, `qh: u32`, 16 bytes of low nibbles. Value `d * q + m`.
    pub mod q5_1 {
        pub const D: usize = 0;
        pub const M: usize = 2;
        pub const QH: usize = 4;
        pub const QS: usize = 8;
        pub const BYTES: usize = QS + 16;
    }
    /// Q8_0: `d: f16`, 32 signed bytes. Value `q * d`.
    pub mod q8_0 {
        pub const D: usize = 0;
        pub const QS: usize = 2;
        pub const BYTES: usize = QS + 32;
    }
    /// Q2_K: 16 scale bytes (low nibble: scale, high nibble: min of each 16 elements), 64 bytes
    /// of 2-bit quants, `d: f16`, `dmin: f16`. Element `128 h + 32 s + l` is bits `2s..2s+2` of
    /// quant byte `32 h + l`. Value `(d * sc) * q - (dmin * m)`.
    pub mod q2_k {
        pub const SCALES: usize = 0;
        pub const QS: usize = 16;
        pub const D: usize = 80;
        pub const DMIN: usize = 82;
        pub const BYTES: usize = 84;
    }
    /// Q3_K: 32 bytes of high bits (element `32 b + l` is bit `b` of byte `l`; a clear bit
    /// subtracts 4), 64 bytes of 2-bit quants laid out as Q2_K's, 12 bytes packing sixteen 6-bit
    /// scales (offset by 32), `d: f16`. Value `(d * (sc - 32)) * q`.
    pub mod q3_k {
        pub const HMASK: usize = 0;
        pub const QS: usize = 32;
        pub const SCALES: usize = 96;
        pub const D: usize = 108;
        pub const BYTES: usize = 110;
    }
    /// Q4_K: `d: f16`, `dmin: f16`, 12 bytes packing eight 6-bit scales and eight 6-bit mins,
    /// 128 bytes of nibbles (sub-block `2c` in the low and `2c + 1` in the high nibbles of bytes
    /// `32c..32c+32`). Value `(d * sc) * q - (dmin * m)`.
    pub mod q4_k {
        pub const D: usize = 0;
        pub const DMIN: usize = 2;
        pub const SCALES: usize = 4;
        pub const QS: usize = 16;
        pub const BYTES: usize = QS + 128;
    }
    /// Q5_K: as Q4_K with 32 bytes of fifth bits before the nibbles (bit `j` of byte `l` belongs
    /// to element `32 j + l`).
    pub mod q5_k {
        pub const D: usize = 0;
        pub const DMIN: usize = 2;
        pub const SCALES: usize = 4;
        pub const QH: usize = 16;
        pub const QS: usize = 48;
        pub const BYTES: usize = QS + 128;
    }
    /// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 signed scales (one per
    /// 16 elements), `d: f16`. Element `128 h + m`: low nibble from byte `64 h + m % 64` (shift
    /// `4 (m / 64)`), high bits from byte `32 h + m % 32` (shift `2 (m / 32)`). Value
    /// `(d * sc) * (q - 32)`.
    pub mod q6_k {
        pub const QL: usize = 0;
        pub const QH: usize = 128;
        pub const SCALES: usize = 192;
        pub const D: usize = 208;
        pub const BYTES: usize = 210;
    }
    /// IQ4_NL: `d: f16`, 16 bytes of 4-bit indices into the level table (nibble order as Q4_0).
    /// Value `d * level`.
    pub mod iq4_nl {
        pub const D: usize = 0;
        pub const QS: usize = 2;
        pub const BYTES: usize = QS + 16;
    }
    /// IQ4_XS: `d: f16`, `scales_h: u16` (2 high bits per sub-block), 4 bytes of low scale
    /// nibbles, 128 bytes of level indices (sub-block `j`: bytes `16j..16j+16`, low nibbles first).
    /// Value `(d * (sc - 32)) * level`.
    pub mod iq4_xs {
        pub const D: usize = 0;
        pub const SCALES_H: usize = 2;
        pub const SCALES_L: usize = 4;
        pub const QS: usize = 8;
        pub const BYTES: usize = QS + 128;
    }
}

/// Compile-time check that a written-down layout matches the type table.
const fn check(ty: GgmlType, elems: usize, bytes: usize) -> bool {
    ty.block_elems() as usize == elems && ty.block_bytes() as usize == bytes
}

// Every field starts where the previous one ends.
const _: () = {
    use layout::*;
    assert!(q4_0::D + 2 == q4_0::QS);
    assert!(q4_1::D + 2 == q4_1::M && q4_1::M + 2 == q4_1::QS);
    assert!(q5_0::D + 2 == q5_0::QH && q5_0::QH + 4 == q5_0::QS);
    assert!(q5_1::D + 2 == q5_1::M && q5_1::M + 2 == q5_1::QH && q5_1::QH + 4 == q5_1::QS);
    assert!(q8_0::D + 2 == q8_0::QS);
    assert!(q2_k::SCALES + QK_K / 16 == q2_k::QS && q2_k::QS + QK_K / 4 == q2_k::D);
    assert!(q2_k::D + 2 == q2_k::DMIN && q2_k::DMIN + 2 == q2_k::BYTES);
    assert!(q3_k::HMASK + QK_K / 8 == q3_k::QS && q3_k::QS + QK_K / 4 == q3_k::SCALES);
    assert!(q3_k::SCALES + 12 == q3_k::D && q3_k::D + 2 == q3_k::BYTES);
    assert!(q4_k::D + 2 == q4_k::DMIN && q4_k::DMIN + 2 == q4_k::SCALES);
    assert!(q4_k::SCALES + 12 == q4_k::QS);
    assert!(q5_k::D + 2 == q5_k::DMIN && q5_k::DMIN + 2 == q5_k::SCALES);
    assert!(q5_k::SCALES + 12 == q5_k::QH && q5_k::QH + QK_K / 8 == q5_k::QS);
    assert!(q6_k::QL + QK_K / 2 == q6_k::QH && q6_k::QH + QK_K / 4 == q6_k::SCALES);
    assert!(q6_k::SCALES + QK_K / 16 == q6_k::D && q6_k::D + 2 == q6_k::BYTES);
    assert!(iq4_nl::D + 2 == iq4_nl::QS);
    assert!(iq4_xs::D + 2 == iq4_xs::SCALES_H && iq4_xs::SCALES_H + 2 == iq4_xs::SCALES_L);
    assert!(iq4_xs::SCALES_L + QK_K / 64 == iq4_xs::QS);
};

const _: () = assert!(check(GgmlType::F32, 1, 4));
const _: () = assert!(check(GgmlType::F16, 1, 2));
const _: () = assert!(check(GgmlType::BF16, 1, 2));
const _: () = assert!(check(GgmlType::Q4_0, QK, layout::q4_0::BYTES));
const _: () = assert!(check(GgmlType::Q4_1, QK, layout::q4_1::BYTES));
const _: () = assert!(check(GgmlType::Q5_0, QK, layout::q5_0::BYTES));
const _: () = assert!(check(GgmlType::Q5_1, QK, layout::q5_1::BYTES));
const _: () = assert!(check(GgmlType::Q8_0, QK, layout::q8_0::BYTES));
const _: () = assert!(check(GgmlType::Q2_K, QK_K, layout::q2_k::BYTES));
const _: () = assert!(check(GgmlType::Q3_K, QK_K, layout::q3_k::BYTES));
const _: () = assert!(check(GgmlType::Q4_K, QK_K, layout::q4_k::BYTES));
const _: () = assert!(check(GgmlType::Q5_K, QK_K, layout::q5_k::BYTES));
const _: () = assert!(check(GgmlType::Q6_K, QK_K, layout::q6_k::BYTES));
const _: () = assert!(check(GgmlType::IQ4_NL, QK, layout::iq4_nl::BYTES));
const _: () = assert!(check(GgmlType::IQ4_XS, QK_K, layout::iq4_xs::BYTES));

/// Byte offsets, inside one block, of the f16 scale fields (scales and mins) of a quantized type;
/// empty for the plain float types. With all of them finite, every decoded value is finite (the
/// largest magnitude, Q6_K's 65504 · 128 · 32, is far inside f32's range).
pub(crate) const fn scale_fields(ty: GgmlType) -> &'static [usize] {
    use layout::*;
    match ty {
        GgmlType::Q4_0 => &[q4_0::D],
        GgmlType::Q4_1 => &[q4_1::D, q4_1::M],
        GgmlType::Q5_0 => &[q5_0::D],
        GgmlType::Q5_1 => &[q5_1::D, q5_1::M],
        GgmlType::Q8_0 => &[q8_0::D],
        GgmlType::Q2_K => &[q2_k::D, q2_k::DMIN],
        GgmlType::Q3_K => &[q3_k::D],
        GgmlType::Q4_K => &[q4_k::D, q4_k::DMIN],
        GgmlType::Q5_K => &[q5_k::D, q5_k::DMIN],
        GgmlType::Q6_K => &[q6_k::D],
        GgmlType::IQ4_NL => &[iq4_nl::D],
        GgmlType::IQ4_XS => &[iq4_xs::D],
        _ => &[],
    }
}

/// An IEEE half float from its two little-endian bytes, widened exactly.
#[inline(always)]
pub(crate) fn f16_at(lo: u8, hi: u8) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([lo, hi])).to_f32()
}

/// The eight 6-bit scales (bytes 0..8) and eight 6-bit mins (bytes 8..16) of a Q4_K / Q5_K
/// super-block's sub-blocks, from its 12 packed bytes `a`, `b`, `c` (four each): sub-blocks 0..4
/// keep their six bits in the low bits of `a` (scale) and `b` (min); sub-blocks 4..8 keep their
/// low four bits in the nibbles of `c` (scale low, min high) and their top two bits in the top
/// bits of `a` (scale) and `b` (min). Unpacked four bytes at a time in 32-bit words.
#[inline(always)]
pub(crate) fn k_scales_mins(packed: &[u8; 12]) -> [u8; 16] {
    let [a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3] = *packed;
    let a = u32::from_le_bytes([a0, a1, a2, a3]);
    let b = u32::from_le_bytes([b0, b1, b2, b3]);
    let c = u32::from_le_bytes([c0, c1, c2, c3]);
    // Within each byte: `>> 2` then `& 0x30` moves bits 6..8 to 4..6 (bits shifted in from the
    // next byte land in 6..8 and are masked off).
    let sc_lo = a & 0x3f3f_3f3f;
    let mn_lo = b & 0x3f3f_3f3f;
    let sc_hi = (c & 0x0f0f_0f0f) | ((a >> 2) & 0x3030_3030);
    let mn_hi = ((c >> 4) & 0x0f0f_0f0f) | ((b >> 2) & 0x3030_3030);
    let words = [sc_lo, sc_hi, mn_lo, mn_hi].map(u32::to_le_bytes);
    let [[s0, s1, s2, s3], [s4, s5, s6, s7], [m0, m1, m2, m3], [m4, m5, m6, m7]] = words;
    [s0, s1, s2, s3, s4, s5, s6, s7, m0, m1, m2, m3, m4, m5, m6, m7]
}

/// The sixteen 6-bit scales of a Q3_K super-block (still offset by 32), from its 12 packed
/// bytes: the low nibbles of scales 0..8 and the high nibbles (scales 8..16) of bytes 0..8; the
/// two top bits of scale `i` at bit `2 (i / 4)` of byte `8 + i % 4`. Four at a time in 32-bit
/// words.
#[inline(always)]
pub(crate) fn q3_k_scales(packed: &[u8; 12]) -> [u8; 16] {
    let [l0, l1, l2, l3, l4, l5, l6, l7, h0, h1, h2, h3] = *packed;
    let lo = u32::from_le_bytes([l0, l1, l2, l3]);
    let hi = u32::from_le_bytes([l4, l5, l6, l7]);
    let top = u32::from_le_bytes([h0, h1, h2, h3]);
    let nib = 0x0f0f_0f0f;
    let two = 0x0303_0303;
    let words = [
        (lo & nib) | ((top & two) << 4),
        (hi & nib) | (((top >> 2) & two) << 4),
        ((lo >> 4) & nib) | (((top >> 4) & two) << 4),
        ((hi >> 4) & nib) | (((top >> 6) & two) << 4),
    ]
    .map(u32::to_le_bytes);
    let [[a0, a1, a2, a3], [b0, b1, b2, b3], [c0, c1, c2, c3], [d0, d1, d2, d3]] = words;
    [a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3]
}

/// The eight 6-bit scales of an IQ4_XS super-block (still offset by 32).
#[inline(always)]
pub(crate) fn iq4_xs_scales(scales_h: u16, scales_l: &[u8; 4]) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (j, o) in out.iter_mut().enumerate() {
        // j < 8: the index j / 2 is within bounds and the shifts are at most 4 and 14.
        let lo_byte = scales_l.get(j / 2).copied().unwrap_or(0);
        let lo = (lo_byte >> (j % 2).wrapping_mul(4)) & 0x0f;
        let hi = ((scales_h >> j.wrapping_mul(2)) & 3) as u8;
        *o = lo | (hi << 4);
    }
    out
}

/// Splits a block into its leading field and the rest.
#[inline(always)]
fn head<const N: usize>(b: &[u8]) -> Option<(&[u8; N], &[u8])> {
    b.split_first_chunk::<N>()
}

/// Scalar decoders, one per type: each turns one block into its elements.
///
/// They take whole-block arrays, so no length can be wrong; the `head` splits are of constant
/// sizes within the array and always succeed.
pub(crate) mod scalar {
    use super::layout::*;
    use super::{f16_at, head, iq4_xs_scales, k_scales_mins, q3_k_scales, IQ4_LEVELS, QK, QK_K};

    pub fn q4_0(b: &[u8; q4_0::BYTES], out: &mut [f32; QK]) {
        let Some((&[d0, d1], qs)) = head::<2>(b) else {
            return;
        };
        let d = f16_at(d0, d1);
        let (lo, hi) = out.split_at_mut(QK / 2);
        for ((&q, l), h) in qs.iter().zip(lo).zip(hi) {
            *l = d * (f32::from(q & 0x0f) - 8.0);
            *h = d * (f32::from(q >> 4) - 8.0);
        }
    }

    pub fn q4_1(b: &[u8; q4_1::BYTES], out: &mut [f32; QK]) {
        let Some((&[d0, d1, m0, m1], qs)) = head::<4>(b) else {
            return;
        };
        let (d, m) = (f16_at(d0, d1), f16_at(m0, m1));
        let (lo, hi) = out.split_at_mut(QK / 2);
        for ((&q, l), h) in qs.iter().zip(lo).zip(hi) {
            *l = d * f32::from(q & 0x0f) + m;
            *h = d * f32::from(q >> 4) + m;
        }
    }

    /// The 32 five-bit quants of a Q5_0 / Q5_1 block.
    #[inline(always)]
    fn five_bit(qh: u32, qs: &[u8]) -> [u8; QK] {
        let mut q = [0u8; QK];
        let (lo, hi) = q.split_at_mut(QK / 2);
        let qh_hi = qh >> 16;
        for (j, ((&b, l), h)) in qs.iter().zip(lo).zip(hi).enumerate() {
            let bit_lo = ((qh >> j) & 1) as u8;
            let bit_hi = ((qh_hi >> j) & 1) as u8;
            *l = (b & 0x0f) | (bit_lo << 4);
            *h = (b >> 4) | (bit_hi << 4);
        }
        q
    }

    pub fn q5_0(b: &[u8; q5_0::BYTES], out: &mut [f32; QK]) {
        let Some((&[d0, d1, h0, h1, h2, h3], qs)) = head::<6>(b) else {
            return;
        };
        let d = f16_at(d0, d1);
        let q = five_bit(u32::from_le_bytes([h0, h1, h2, h3]), qs);
        for (o, &q) in out.iter_mut().zip(q.iter()) {
            *o = d * (f32::from(q) - 16.0);
        }
    }

    pub fn q5_1(b: &[u8; q5_1::BYTES], out: &mut [f32; QK]) {
        let Some((&[d0, d1, m0, m1, h0, h1, h2, h3], qs)) = head::<8>(b) else {
            return;
        };
        let (d, m) = (f16_at(d0, d1), f16_at(m0, m1));
        let q = five_bit(u32::from_le_bytes([h0, h1, h2, h3]), qs);
        for (o, &q) in out.iter_mut().zip(q.iter()) {
            *o = d * f32::from(q) + m;
        }
    }

    pub fn q8_0(b: &[u8; q8_0::BYTES], out: &mut [f32; QK]) {
        let Some((&[d0, d1], qs)) = head::<2>(b) else {
            return;
        };
        let d = f16_at(d0, d1);
        for (o, &q) in out.iter_mut().zip(qs) {
            *o = f32::from(q as i8) * d;
        }
    }

    pub fn q2_k(b: &[u8; q2_k::BYTES], out: &mut [f32; QK_K]) {
        let Some((scales, rest)) = head::<16>(b) else {
            return;
        };
        let Some((qs, rest)) = head::<64>(rest) else {
            return;
        };
        let Some((&[d0, d1, m0, m1], _)) = head::<4>(rest) else {
            return;
        };
        let (d, dmin) = (f16_at(d0, d1), f16_at(m0, m1));
        let mut sc = scales.iter();
        for (out_h, qs_h) in out.chunks_exact_mut(128).zip(qs.chunks_exact(32)) {
            for (out_s, shift) in out_h.chunks_exact_mut(32).zip([0u32, 2, 4, 6]) {
                for (out16, qs16) in out_s.chunks_exact_mut(16).zip(qs_h.chunks_exact(16)) {
                    let s = sc.next().copied().unwrap_or(0);
                    let dl = d * f32::from(s & 0x0f);
                    let ml = dmin * f32::from(s >> 4);
                    for (o, &q) in out16.iter_mut().zip(qs16) {
                        *o = dl * f32::from((q >> shift) & 3) - ml;
                    }
                }
            }
        }
    }

    pub fn q3_k(b: &[u8; q3_k::BYTES], out: &mut [f32; QK_K]) {
        let Some((hmask, rest)) = head::<32>(b) else {
            return;
        };
        let Some((qs, rest)) = head::<64>(rest) else {
            return;
        };
        let Some((packed, rest)) = head::<12>(rest) else {
            return;
        };
        let Some((&[d0, d1], _)) = head::<2>(rest) else {
            return;
        };
        let d = f16_at(d0, d1);
        let scales = q3_k_scales(packed);
        let mut sc = scales.iter();
        // Element 32 b + l (b = 4 h + s) takes its high bit from bit b of hmask[l].
        let mut bit = 0u32;
        for (out_h, qs_h) in out.chunks_exact_mut(128).zip(qs.chunks_exact(32)) {
            for (out_s, shift) in out_h.chunks_exact_mut(32).zip([0u32, 2, 4, 6]) {
                for ((out16, qs16), hm16) in
                    out_s.chunks_exact_mut(16).zip(qs_h.chunks_exact(16)).zip(hmask.chunks_exact(16))
                {
                    let s = sc.next().copied().unwrap_or(0);
                    let dl = d * (f32::from(s) - 32.0);
                    for ((o, &q), &h) in out16.iter_mut().zip(qs16).zip(hm16) {
                        let low = f32::from((q >> shift) & 3);
                        let sub = if (h >> bit) & 1 == 0 { 4.0 } else { 0.0 };
                        *o = dl * (low - sub);
                    }
                }
                bit = bit.wrapping_add(1);
            }
        }
    }

    pub fn q4_k(b: &[u8; q4_k::BYTES], out: &mut [f32; QK_K]) {
        let Some((&[d0, d1, m0, m1], rest)) = head::<4>(b) else {
            return;
        };
        let Some((packed, qs)) = head::<12>(rest) else {
            return;
        };
        let (d, dmin) = (f16_at(d0, d1), f16_at(m0, m1));
        let sm = k_scales_mins(packed);
        let (sc, mn) = sm.split_at(8);
        let mut subs = sc.iter().zip(mn.iter());
        for (out64, qs32) in out.chunks_exact_mut(64).zip(qs.chunks_exact(32)) {
            let (lo, hi) = out64.split_at_mut(32);
            for (half, shift) in [(lo, 0u32), (hi, 4)] {
                let (s, m) = subs.next().unwrap_or((&0, &0));
                let dl = d * f32::from(*s);
                let ml = dmin * f32::from(*m);
                for (o, &q) in half.iter_mut().zip(qs32) {
                    *o = dl * f32::from((q >> shift) & 0x0f) - ml;
                }
            }
        }
    }

    pub fn q5_k(b: &[u8; q5_k::BYTES], out: &mut [f32; QK_K]) {
        let Some((&[d0, d1, m0, m1], rest)) = head::<4>(b) else {
            return;
        };
        let Some((packed, rest)) = head::<12>(rest) else {
            return;
        };
        let Some((qh, qs)) = head::<32>(rest) else {
            return;
        };
        let (d, dmin) = (f16_at(d0, d1), f16_at(m0, m1));
        let sm = k_scales_mins(packed);
        let (sc, mn) = sm.split_at(8);
        let mut subs = sc.iter().zip(mn.iter());
        let mut bit = 0u32;
        for (out64, qs32) in out.chunks_exact_mut(64).zip(qs.chunks_exact(32)) {
            let (lo, hi) = out64.split_at_mut(32);
            for (half, shift) in [(lo, 0u32), (hi, 4)] {
                let (s, m) = subs.next().unwrap_or((&0, &0));
                let dl = d * f32::from(*s);
                let ml = dmin * f32::from(*m);
                for ((o, &q), &h) in half.iter_mut().zip(qs32).zip(qh.iter()) {
                    let q5 = ((q >> shift) & 0x0f) | (((h >> bit) & 1) << 4);
                    *o = dl * f32::from(q5) - ml;
                }
                bit = bit.wrapping_add(1);
            }
        }
    }

    pub fn q6_k(b: &[u8; q6_k::BYTES], out: &mut [f32; QK_K]) {
        let Some((ql, rest)) = head::<128>(b) else {
            return;
        };
        let Some((qh, rest)) = head::<64>(rest) else {
            return;
        };
        let Some((scales, rest)) = head::<16>(rest) else {
            return;
        };
        let Some((&[d0, d1], _)) = head::<2>(rest) else {
            return;
        };
        let d = f16_at(d0, d1);
        let mut sc = scales.iter();
        for ((out_h, ql_h), qh_h) in
            out.chunks_exact_mut(128).zip(ql.chunks_exact(64)).zip(qh.chunks_exact(32))
        {
            // Quarter s (32 elements) of the half: low nibbles at shift 4 (s / 2) of the first
            // (s even) or second (s odd) 32 bytes of the half's 64, high bits at shift 2 s.
            let Some((ql_a, ql_b)) = ql_h.split_at_checked(32) else {
                return;
            };
            let quarters = [(ql_a, 0u32, 0u32), (ql_b, 0, 2), (ql_a, 4, 4), (ql_b, 4, 6)];
            for (out_s, (ql_s, lshift, hshift)) in out_h.chunks_exact_mut(32).zip(quarters) {
                for ((out16, ql16), qh16) in
                    out_s.chunks_exact_mut(16).zip(ql_s.chunks_exact(16)).zip(qh_h.chunks_exact(16))
                {
                    let dl = d * f32::from(sc.next().copied().unwrap_or(0) as i8);
                    for ((o, &l), &h) in out16.iter_mut().zip(ql16).zip(qh16) {
                        let q = ((l >> lshift) & 0x0f) | (((h >> hshift) & 3) << 4);
                        *o = dl * (f32::from(q) - 32.0);
                    }
                }
            }
        }
    }

    pub fn iq4_nl(b: &[u8; iq4_nl::BYTES], out: &mut [f32; QK]) {
        let Some((&[d0, d1], qs)) = head::<2>(b) else {
            return;
        };
        let d = f16_at(d0, d1);
        let (lo, hi) = out.split_at_mut(QK / 2);
        for ((&q, l), h) in qs.iter().zip(lo).zip(hi) {
            *l = d * level(q & 0x0f);
            *h = d * level(q >> 4);
        }
    }

    pub fn iq4_xs(b: &[u8; iq4_xs::BYTES], out: &mut [f32; QK_K]) {
        let Some((&[d0, d1, h0, h1], rest)) = head::<4>(b) else {
            return;
        };
        let Some((scales_l, qs)) = head::<4>(rest) else {
            return;
        };
        let d = f16_at(d0, d1);
        let scales = iq4_xs_scales(u16::from_le_bytes([h0, h1]), scales_l);
        for ((out32, qs16), &s) in out.chunks_exact_mut(32).zip(qs.chunks_exact(16)).zip(&scales) {
            let dl = d * (f32::from(s) - 32.0);
            let (lo, hi) = out32.split_at_mut(16);
            for ((&q, l), h) in qs16.iter().zip(lo).zip(hi) {
                *l = dl * level(q & 0x0f);
                *h = dl * level(q >> 4);
            }
        }
    }

    /// The IQ4 level of a 4-bit index.
    #[inline(always)]
    fn level(i: u8) -> f32 {
        f32::from(IQ4_LEVELS.get(usize::from(i)).copied().unwrap_or(0))
    }
}
