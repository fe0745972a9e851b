//! Weight panels: 16 weight rows re-laid as unsigned byte codes for the integer kernels.
//!
//! Every computable quantized type is, per sub-block of 32 (or 16) elements, `scale · (u − o)`
//! or `scale · u + min` for small unsigned integer codes `u`, a per-type integer offset `o` and
//! per-sub-block f32 `scale` and `min`. A panel holds exactly those numbers for 16 rows at once,
//! interleaved so that one 64-byte load gives the same four elements of all 16 rows (one 32-bit
//! lane per row: the operand layout of `vpdpbusd` / `pmaddubsw` + `pmaddwd` with the token's four
//! activations broadcast). Per 32-element block `j` of the rows, [`Form::block_words`] words:
//!
//! * codes: 8 groups × 16 rows × 4 bytes (512 bytes); group `g`, row `r` holds the codes of
//!   elements `32 j + 4 g .. + 4` of row `r`;
//! * per sub-block (one, or two 16-element halves): 16 scales (f32, one per row), then for types
//!   with a minimum 16 mins (f32, already signed so that the kernel adds them).
//!
//! The panel lives in the caller's f32 scratch; codes are written through a byte view of it.
//! Building a panel is plain Rust shared by every ISA, so the kernels see identical numbers.

use super::super::blocks::{f16_at, iq4_xs_scales, k_scales_mins, layout, q3_k_scales, IQ4_LEVELS};
use crate::gguf::GgmlType;

/// Rows per panel (the 32-bit lanes of a 512-bit vector).
pub(crate) const ROWS: usize = 16;
/// Elements per activation block (and per panel block).
pub(crate) const QB: usize = 32;
/// Words of codes per panel block: 32 elements × 16 rows bytes.
pub(crate) const CODE_WORDS: usize = QB * ROWS / 4;
/// Words of one per-row field (scales or mins) of a sub-block.
pub(crate) const FIELD: usize = ROWS;

/// How a weight type maps onto panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Form {
    /// Sub-blocks are 16-element halves of each 32-element block (Q2_K, Q3_K, Q6_K); otherwise a
    /// sub-block is the whole block.
    pub halves: bool,
    /// The type has a per-sub-block minimum (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K).
    pub has_min: bool,
    /// The integer offset `o` subtracted from every code (0, 4, 8, 16, 32 or 128).
    pub offset: i32,
    /// Codes may exceed 128 (Q8_0, IQ4_NL, IQ4_XS: `u = q + 128`), so pairs of code × activation
    /// products can overflow the 16-bit sums of `pmaddubsw`; kernels built on it re-sign them.
    pub wide: bool,
}

impl Form {
    /// The form of a quantized computable type, `None` for the float types and every other type.
    pub(crate) const fn of(ty: GgmlType) -> Option<Form> {
        let (halves, has_min, offset) = match ty {
            GgmlType::Q4_0 => (false, false, 8),
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => (false, true, 0),
            GgmlType::Q5_0 => (false, false, 16),
            GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => (false, false, 128),
            GgmlType::Q2_K => (true, true, 0),
            GgmlType::Q3_K => (true, false, 4),
            GgmlType::Q6_K => (true, false, 32),
            _ => return None,
        };
        Some(Form { halves, has_min, offset, wide: offset == 128 })
    }

    /// Sub-blocks per 32-element block (1 or 2).
    pub(crate) const fn subs(self) -> usize {
        if self.halves {
            2
        } else {
            1
        }
    }

    /// Words of per-row fields of one sub-block: scales, and mins if the type has them.
    pub(crate) const fn sub_words(self) -> usize {
        if self.has_min {
            2 * FIELD
        } else {
            FIELD
        }
    }

    /// Words of one panel block (codes and fields).
    pub(crate) const fn block_words(self) -> usize {
        CODE_WORDS.wrapping_add(self.subs().wrapping_mul(self.sub_words()))
    }
}

/// The most words any type's panel block takes (Q2_K: two halves with scales and mins).
pub(crate) const MAX_BLOCK_WORDS: usize = CODE_WORDS + 2 * 2 * FIELD;

/// One 32-element block of one row, decoded to codes: values `scale[s] · (u − o) + min[s]` for
/// the elements of sub-block `s` (`min` zero and `scale[1]` unused where the form says so).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block32 {
    pub u: [u8; QB],
    pub scale: [f32; 2],
    pub min: [f32; 2],
}

const EMPTY: Block32 = Block32 { u: [0; QB], scale: [0.0; 2], min: [0.0; 2] };

/// Decodes one weight block of `ty` (its `block_bytes` in `b`) into `out`; returns how many
/// 32-element blocks it filled (1, or 8 for the 256-element types; 0 for a type without a
/// [`Form`] or a short `b`).
pub(crate) fn decode(ty: GgmlType, b: &[u8], out: &mut [Block32; 8]) -> usize {
    macro_rules! with {
        ($l:ident, $f:ident, $n:expr) => {
            match b.first_chunk::<{ layout::$l::BYTES }>() {
                Some(blk) => {
                    $f(blk, out);
                    $n
                }
                None => 0,
            }
        };
    }
    match ty {
        GgmlType::Q4_0 => with!(q4_0, q4_0, 1),
        GgmlType::Q4_1 => with!(q4_1, q4_1, 1),
        GgmlType::Q5_0 => with!(q5_0, q5_0, 1),
        GgmlType::Q5_1 => with!(q5_1, q5_1, 1),
        GgmlType::Q8_0 => with!(q8_0, q8_0, 1),
        GgmlType::IQ4_NL => with!(iq4_nl, iq4_nl, 1),
        GgmlType::Q2_K => with!(q2_k, q2_k, 8),
        GgmlType::Q3_K => with!(q3_k, q3_k, 8),
        GgmlType::Q4_K => with!(q4_k, q4_k, 8),
        GgmlType::Q5_K => with!(q5_k, q5_k, 8),
        GgmlType::Q6_K => with!(q6_k, q6_k, 8),
        GgmlType::IQ4_XS => with!(iq4_xs, iq4_xs, 8),
        _ => 0,
    }
}

/// Splits a block into its leading field and the rest.
#[inline(always)]
fn head<const N: usize>(b: &[u8]) -> Option<(&[u8; N], &[u8])> {
    b.split_first_chunk::<N>()
}

/// Nibbles of 16 bytes: element `i` in the low nibble of byte `i`, `i + 16` in its high nibble.
#[inline(always)]
fn nibbles(qs: &[u8], u: &mut [u8; QB]) {
    let (lo, hi) = u.split_at_mut(QB / 2);
    for ((&q, l), h) in qs.iter().zip(lo).zip(hi) {
        *l = q & 0x0f;
        *h = q >> 4;
    }
}

/// The fifth bits of a Q5_0 / Q5_1 block (bit `i` of `qh` for element `i`) added to its nibbles.
#[inline(always)]
fn fifth_bits(qh: u32, u: &mut [u8; QB]) {
    for (i, v) in u.iter_mut().enumerate() {
        *v |= (((qh >> i) & 1) as u8) << 4;
    }
}

fn q4_0(b: &[u8; layout::q4_0::BYTES], out: &mut [Block32; 8]) {
    let (Some((&[d0, d1], qs)), [o, ..]) = (head::<2>(b), out) else { return };
    nibbles(qs, &mut o.u);
    o.scale = [f16_at(d0, d1), 0.0];
    o.min = [0.0; 2];
}

fn q4_1(b: &[u8; layout::q4_1::BYTES], out: &mut [Block32; 8]) {
    let (Some((&[d0, d1, m0, m1], qs)), [o, ..]) = (head::<4>(b), out) else { return };
    nibbles(qs, &mut o.u);
    o.scale = [f16_at(d0, d1), 0.0];
    o.min = [f16_at(m0, m1), 0.0];
}

fn q5_0(b: &[u8; layout::q5_0::BYTES], out: &mut [Block32; 8]) {
    let (Some((&[d0, d1, h0, h1, h2, h3], qs)), [o, ..]) = (head::<6>(b), out) else { return };
    nibbles(qs, &mut o.u);
    fifth_bits(u32::from_le_bytes([h0, h1, h2, h3]), &mut o.u);
    o.scale = [f16_at(d0, d1), 0.0];
    o.min = [0.0; 2];
}

fn q5_1(b: &[u8; layout::q5_1::BYTES], out: &mut [Block32; 8]) {
    let (Some((&[d0, d1, m0, m1, h0, h1, h2, h3], qs)), [o, ..]) = (head::<8>(b), out) else { return };
    nibbles(qs, &mut o.u);
    fifth_bits(u32::from_le_bytes([h0, h1, h2, h3]), &mut o.u);
    o.scale = [f16_at(d0, d1), 0.0];
    o.min = [f16_at(m0, m1), 0.0];
}

fn q8_0(b: &[u8; layout::q8_0::BYTES], out: &mut [Block32; 8]) {
    let (Some((&[d0, d1], qs)), [o, ..]) = (head::<2>(b), out) else { return };
    for (v, &q) in o.u.iter_mut().zip(qs) {
        *v = q ^ 0x80;
    }
    o.scale = [f16_at(d0, d1), 0.0];
    o.min = [0.0; 2];
}

/// The IQ4 level of a 4-bit index plus 128 (1..=241).
#[inline(always)]
fn level_code(i: u8) -> u8 {
    (IQ4_LEVELS.get(usize::from(i)).copied().unwrap_or(0) as u8) ^ 0x80
}

fn iq4_nl(b: &[u8; layout::iq4_nl::BYTES], out: &mut [Block32; 8]) {
    let (Some((&[d0, d1], qs)), [o, ..]) = (head::<2>(b), out) else { return };
    nibbles(qs, &mut o.u);
    for v in o.u.iter_mut() {
        *v = level_code(*v);
    }
    o.scale = [f16_at(d0, d1), 0.0];
    o.min = [0.0; 2];
}

/// The shifts of the four 2-bit fields of a byte, one per block of a 128-element half.
const SHIFTS2: [u32; 4] = [0, 2, 4, 6];

fn q2_k(b: &[u8; layout::q2_k::BYTES], out: &mut [Block32; 8]) {
    let Some((scales, rest)) = head::<16>(b) else { return };
    let Some((qs, rest)) = head::<64>(rest) else { return };
    let Some((&[d0, d1, m0, m1], _)) = head::<4>(rest) else { return };
    let (d, dmin) = (f16_at(d0, d1), f16_at(m0, m1));
    // Half h: blocks 4h + s are bits 2s.. of quant bytes 32h..32h+32; block 4h + s uses scale
    // bytes 8h + 2s and 8h + 2s + 1 for its halves.
    for ((out_h, qs_h), sc_h) in out.chunks_exact_mut(4).zip(qs.chunks_exact(32)).zip(scales.chunks_exact(8))
    {
        for ((o, shift), sc) in out_h.iter_mut().zip(SHIFTS2).zip(sc_h.chunks_exact(2)) {
            for (v, &q) in o.u.iter_mut().zip(qs_h) {
                *v = (q >> shift) & 3;
            }
            for ((scale, min), &sc) in o.scale.iter_mut().zip(o.min.iter_mut()).zip(sc) {
                *scale = d * f32::from(sc & 0x0f);
                *min = -(dmin * f32::from(sc >> 4));
            }
        }
    }
}

fn q3_k(b: &[u8; layout::q3_k::BYTES], out: &mut [Block32; 8]) {
    let Some((hmask, rest)) = head::<32>(b) else { return };
    let Some((qs, rest)) = head::<64>(rest) else { return };
    let Some((packed, rest)) = head::<12>(rest) else { return };
    let Some((&[d0, d1], _)) = head::<2>(rest) else { return };
    let d = f16_at(d0, d1);
    let scales = q3_k_scales(packed);
    // Block j = 4h + s: low bits as Q2_K's, high bit j of hmask byte l (code = low + 4·high).
    let mut blocks = out.iter_mut().zip(0u32..).zip(scales.chunks_exact(2));
    for qs_h in qs.chunks_exact(32) {
        for (((o, j), sc), shift) in (&mut blocks).take(4).zip(SHIFTS2) {
            for ((v, &q), &m) in o.u.iter_mut().zip(qs_h).zip(hmask) {
                *v = ((q >> shift) & 3) | (((m >> j) & 1) << 2);
            }
            for (scale, &sc) in o.scale.iter_mut().zip(sc) {
                *scale = d * (f32::from(sc) - 32.0);
            }
            o.min = [0.0; 2];
        }
    }
}

/// The blocks of a Q4_K / Q5_K super-block: codes from nibbles (and fifth bits in `qh`), scale
/// `d · sc` and min `−(dmin · m)` per 32 elements.
#[inline(always)]
fn k_blocks(d: f32, dmin: f32, packed: &[u8; 12], qs: &[u8], qh: Option<&[u8; 32]>, out: &mut [Block32; 8]) {
    let sm = k_scales_mins(packed);
    let (sc, mn) = sm.split_at(8);
    // Blocks 2c and 2c + 1 are the low and high nibbles of quant bytes 32c..32c+32.
    let quants = qs.chunks_exact(32).flat_map(|q| [(q, 0u32), (q, 4)]);
    for ((((o, (q, shift)), j), &sc), &m) in out.iter_mut().zip(quants).zip(0u32..).zip(sc).zip(mn) {
        for (v, &q) in o.u.iter_mut().zip(q) {
            *v = (q >> shift) & 0x0f;
        }
        if let Some(qh) = qh {
            for (v, &h) in o.u.iter_mut().zip(qh) {
                *v |= ((h >> j) & 1) << 4;
            }
        }
        o.scale = [d * f32::from(sc), 0.0];
        o.min = [-(dmin * f32::from(m)), 0.0];
    }
}

fn q4_k(b: &[u8; layout::q4_k::BYTES], out: &mut [Block32; 8]) {
    let Some((&[d0, d1, m0, m1], rest)) = head::<4>(b) else { return };
    let Some((packed, qs)) = head::<12>(rest) else { return };
    k_blocks(f16_at(d0, d1), f16_at(m0, m1), packed, qs, None, out);
}

fn q5_k(b: &[u8; layout::q5_k::BYTES], out: &mut [Block32; 8]) {
    let Some((&[d0, d1, m0, m1], rest)) = head::<4>(b) else { return };
    let Some((packed, rest)) = head::<12>(rest) else { return };
    let Some((qh, qs)) = head::<32>(rest) else { return };
    k_blocks(f16_at(d0, d1), f16_at(m0, m1), packed, qs, Some(qh), out);
}

fn q6_k(b: &[u8; layout::q6_k::BYTES], out: &mut [Block32; 8]) {
    let Some((ql, rest)) = head::<128>(b) else { return };
    let Some((qh, rest)) = head::<64>(rest) else { return };
    let Some((scales, rest)) = head::<16>(rest) else { return };
    let Some((&[d0, d1], _)) = head::<2>(rest) else { return };
    let d = f16_at(d0, d1);
    // Half h, block s: low nibbles from ql bytes 64h + 32(s % 2) .. (shift 4 (s / 2)), high
    // bits from qh bytes 32h .. (shift 2s); the block's halves use scales 8h + 2s and + 1.
    for (((out_h, ql_h), qh_h), sc_h) in
        out.chunks_exact_mut(4).zip(ql.chunks_exact(64)).zip(qh.chunks_exact(32)).zip(scales.chunks_exact(8))
    {
        let Some((ql_a, ql_b)) = ql_h.split_at_checked(32) else { return };
        let quarters = [(ql_a, 0u32), (ql_b, 0), (ql_a, 4), (ql_b, 4)];
        for (((o, (l, lshift)), hshift), sc) in
            out_h.iter_mut().zip(quarters).zip(SHIFTS2).zip(sc_h.chunks_exact(2))
        {
            for ((v, &l), &hb) in o.u.iter_mut().zip(l).zip(qh_h) {
                *v = ((l >> lshift) & 0x0f) | (((hb >> hshift) & 3) << 4);
            }
            for (scale, &sc) in o.scale.iter_mut().zip(sc) {
                *scale = d * f32::from(sc as i8);
            }
            o.min = [0.0; 2];
        }
    }
}

fn iq4_xs(b: &[u8; layout::iq4_xs::BYTES], out: &mut [Block32; 8]) {
    let Some((&[d0, d1, h0, h1], rest)) = head::<4>(b) else { return };
    let Some((scales_l, qs)) = head::<4>(rest) else { return };
    let d = f16_at(d0, d1);
    let scales = iq4_xs_scales(u16::from_le_bytes([h0, h1]), scales_l);
    for ((o, q), &sc) in out.iter_mut().zip(qs.chunks_exact(16)).zip(&scales) {
        nibbles(q, &mut o.u);
        for v in o.u.iter_mut() {
            *v = level_code(*v);
        }
        o.scale = [d * (f32::from(sc) - 32.0), 0.0];
        o.min = [0.0; 2];
    }
}

/// Writes block `b` of the row in lane `lane` (< [`ROWS`]) into panel block `unit`
/// ([`Form::block_words`] words).
#[inline(always)]
fn put(form: Form, unit: &mut [f32], lane: usize, b: &Block32) {
    let (codes, fields) = unit.split_at_mut(CODE_WORDS.min(unit.len()));
    let codes: &mut [u8] = bytemuck::cast_slice_mut(codes);
    // Group g of lane l: bytes 64 g + 4 l ..; lane < 16 and g < 8 keep that inside 512.
    let at = lane.wrapping_mul(4);
    for (group, four) in codes.chunks_exact_mut(64).zip(b.u.as_chunks::<4>().0) {
        if let Some(dst) = group.get_mut(at..).and_then(|g| g.first_chunk_mut::<4>()) {
            *dst = *four;
        }
    }
    for ((sub, &scale), &min) in fields.chunks_exact_mut(form.sub_words()).zip(&b.scale).zip(&b.min) {
        if let Some(s) = sub.get_mut(lane) {
            *s = scale;
        }
        if form.has_min {
            if let Some(m) = sub.get_mut(FIELD.wrapping_add(lane)) {
                *m = min;
            }
        }
    }
}

/// Builds the panel of up to 16 rows of `k` elements of `ty` (`rows`: `n` rows of `row_bytes`
/// each, `n` ≤ 16) into `panel` (`k / 32` blocks of `form.block_words()` words). Lanes past `n`
/// get zero codes, scales and mins.
///
/// The caller has validated `ty` (it has `form`), `k` (a whole number of blocks) and the sizes;
/// rows or blocks that do not fit are left alone. Work: O(16 · `k`).
pub(crate) fn build(ty: GgmlType, form: Form, rows: &[u8], row_bytes: usize, k: usize, panel: &mut [f32]) {
    let words = form.block_words();
    let n_blocks = k / QB;
    let panel = panel.get_mut(..n_blocks.saturating_mul(words)).unwrap_or_default();
    let n = rows.len().checked_div(row_bytes).unwrap_or(0).min(ROWS);
    let bb = ty.block_bytes() as usize;
    let mut dec = [EMPTY; 8];
    for lane in 0..ROWS {
        let row = rows.get(lane.saturating_mul(row_bytes)..).and_then(|r| r.get(..row_bytes));
        let mut units = panel.chunks_exact_mut(words);
        match row {
            Some(row) if lane < n => {
                for wb in row.chunks_exact(bb) {
                    let filled = decode(ty, wb, &mut dec);
                    for (blk, unit) in dec.iter().take(filled).zip(&mut units) {
                        put(form, unit, lane, blk);
                    }
                }
            }
            _ => {
                for unit in units {
                    put(form, unit, lane, &EMPTY);
                }
            }
        }
    }
}
