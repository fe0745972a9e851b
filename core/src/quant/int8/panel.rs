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
/// the elements of sub-block `s` (`min` zero and `scale[1]` unused where the form says so). The
/// codes are eight little-endian words, word `g` holding the codes of elements `4g .. 4g + 4`
/// (a panel group's lane).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block32 {
    pub u: [u32; 8],
    pub scale: [f32; 2],
    pub min: [f32; 2],
}

const EMPTY: Block32 = Block32 { u: [0; 8], scale: [0.0; 2], min: [0.0; 2] };

/// Decodes one weight block of `ty` (its `block_bytes` in `b`) into `out`; returns how many
/// 32-element blocks it filled (1, or 8 for the 256-element types; 0 for a type without a
/// [`Form`] or a short `b`).
///
/// The codes are built four at a time in 32-bit words ("SWAR"): every field of these formats
/// keeps four consecutive elements in the same bits of four consecutive bytes, so one shift and
/// mask of a word yields a group's codes.
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

/// `N` little-endian words from `4N` bytes.
#[inline(always)]
fn words<const N: usize>(b: &[u8]) -> [u32; N] {
    let (chunks, _) = b.as_chunks::<4>();
    let mut w = [0u32; N];
    for (w, c) in w.iter_mut().zip(chunks) {
        *w = u32::from_le_bytes(*c);
    }
    w
}

/// The same bits of every byte.
const fn bytes(v: u8) -> u32 {
    u32::from_le_bytes([v; 4])
}

/// Codes of 16 nibble bytes (element `i` low nibble of byte `i`, `i + 16` its high nibble).
#[inline(always)]
fn nibbles(qs: &[u8]) -> [u32; 8] {
    let w = words::<4>(qs);
    let [a, b, c, d] = w.map(|w| w & bytes(0x0f));
    let [e, f, g, h] = w.map(|w| (w >> 4) & bytes(0x0f));
    [a, b, c, d, e, f, g, h]
}

/// `0x10` in byte `e` of word `g` where bit `4g + e` of `qh` is set: the fifth bits of Q5_0 /
/// Q5_1. (Multiplying a 4-bit value by `0x0020_4081` copies bit `e` to bit `8e`: the four
/// shifted copies occupy disjoint bits, so nothing carries.)
#[inline(always)]
fn fifth_bits(qh: u32) -> [u32; 8] {
    let mut out = [0u32; 8];
    for (o, shift) in out.iter_mut().zip((0u32..32).step_by(4)) {
        *o = (((qh >> shift) & 0x0f).wrapping_mul(0x0020_4081) & bytes(1)) << 4;
    }
    out
}

/// Word-wise `a | b`.
#[inline(always)]
fn or(a: [u32; 8], b: [u32; 8]) -> [u32; 8] {
    let mut o = a;
    for (o, b) in o.iter_mut().zip(b) {
        *o |= b;
    }
    o
}

/// Word-wise `(w >> shift) & mask`.
#[inline(always)]
fn field(w: &[u32; 8], shift: u32, mask: u32) -> [u32; 8] {
    w.map(|w| (w >> shift) & mask)
}

fn q4_0(b: &[u8; layout::q4_0::BYTES], out: &mut [Block32; 8]) {
    let (Some((&[d0, d1], qs)), [o, ..]) = (head::<2>(b), out) else { return };
    *o = Block32 { u: nibbles(qs), scale: [f16_at(d0, d1), 0.0], min: [0.0; 2] };
}

fn q4_1(b: &[u8; layout::q4_1::BYTES], out: &mut [Block32; 8]) {
    let (Some((&[d0, d1, m0, m1], qs)), [o, ..]) = (head::<4>(b), out) else { return };
    *o = Block32 { u: nibbles(qs), scale: [f16_at(d0, d1), 0.0], min: [f16_at(m0, m1), 0.0] };
}

fn q5_0(b: &[u8; layout::q5_0::BYTES], out: &mut [Block32; 8]) {
    let (Some((&[d0, d1, h0, h1, h2, h3], qs)), [o, ..]) = (head::<6>(b), out) else { return };
    let u = or(nibbles(qs), fifth_bits(u32::from_le_bytes([h0, h1, h2, h3])));
    *o = Block32 { u, scale: [f16_at(d0, d1), 0.0], min: [0.0; 2] };
}

fn q5_1(b: &[u8; layout::q5_1::BYTES], out: &mut [Block32; 8]) {
    let (Some((&[d0, d1, m0, m1, h0, h1, h2, h3], qs)), [o, ..]) = (head::<8>(b), out) else { return };
    let u = or(nibbles(qs), fifth_bits(u32::from_le_bytes([h0, h1, h2, h3])));
    *o = Block32 { u, scale: [f16_at(d0, d1), 0.0], min: [f16_at(m0, m1), 0.0] };
}

fn q8_0(b: &[u8; layout::q8_0::BYTES], out: &mut [Block32; 8]) {
    let (Some((&[d0, d1], qs)), [o, ..]) = (head::<2>(b), out) else { return };
    let u = words::<8>(qs).map(|w| w ^ bytes(0x80));
    *o = Block32 { u, scale: [f16_at(d0, d1), 0.0], min: [0.0; 2] };
}

/// IQ4 level codes (`level + 128`, 1..=241) of the four 4-bit indices in the bytes of `w`.
#[inline(always)]
fn levels(w: u32) -> u32 {
    let code = |i: u8| (IQ4_LEVELS.get(usize::from(i & 0x0f)).copied().unwrap_or(0) as u8) ^ 0x80;
    u32::from_le_bytes(w.to_le_bytes().map(code))
}

fn iq4_nl(b: &[u8; layout::iq4_nl::BYTES], out: &mut [Block32; 8]) {
    let (Some((&[d0, d1], qs)), [o, ..]) = (head::<2>(b), out) else { return };
    *o = Block32 { u: nibbles(qs).map(levels), scale: [f16_at(d0, d1), 0.0], min: [0.0; 2] };
}

/// The shifts of the four 2-bit fields of a byte, one per block of a 128-element half.
const SHIFTS2: [u32; 4] = [0, 2, 4, 6];

fn q2_k(b: &[u8; layout::q2_k::BYTES], out: &mut [Block32; 8]) {
    let Some((scales, rest)) = head::<16>(b) else { return };
    let Some((qs, rest)) = head::<64>(rest) else { return };
    let Some((&[d0, d1, m0, m1], _)) = head::<4>(rest) else { return };
    let (d, dmin) = (f16_at(d0, d1), f16_at(m0, m1));
    // Half h: block 4h + s is bits 2s.. of quant bytes 32h..32h+32; its halves use scale bytes
    // 8h + 2s and 8h + 2s + 1.
    for ((out_h, qs_h), sc_h) in out.chunks_exact_mut(4).zip(qs.chunks_exact(32)).zip(scales.chunks_exact(8))
    {
        let w = words::<8>(qs_h);
        for ((o, shift), sc) in out_h.iter_mut().zip(SHIFTS2).zip(sc_h.chunks_exact(2)) {
            o.u = field(&w, shift, bytes(3));
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
    let hm = words::<8>(hmask);
    // Block j = 4h + s: low bits as Q2_K's, high bit j of hmask byte l (code = low + 4·high).
    let mut blocks = out.iter_mut().zip(0u32..).zip(scales.chunks_exact(2));
    for qs_h in qs.chunks_exact(32) {
        let w = words::<8>(qs_h);
        for (((o, j), sc), shift) in (&mut blocks).take(4).zip(SHIFTS2) {
            o.u = or(field(&w, shift, bytes(3)), field(&hm, j, bytes(1)).map(|h| h << 2));
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
    let qh = qh.map(|q| words::<8>(q));
    // Blocks 2c and 2c + 1 are the low and high nibbles of quant bytes 32c..32c+32.
    let quants = qs.chunks_exact(32).flat_map(|q| {
        let w = words::<8>(q);
        [field(&w, 0, bytes(0x0f)), field(&w, 4, bytes(0x0f))]
    });
    for ((((o, u), j), &sc), &m) in out.iter_mut().zip(quants).zip(0u32..).zip(sc).zip(mn) {
        o.u = match &qh {
            Some(qh) => or(u, field(qh, j, bytes(1)).map(|h| h << 4)),
            None => u,
        };
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
        let (a, b, h) = (words::<8>(ql_a), words::<8>(ql_b), words::<8>(qh_h));
        let quarters = [(&a, 0u32), (&b, 0), (&a, 4), (&b, 4)];
        for (((o, (l, lshift)), hshift), sc) in
            out_h.iter_mut().zip(quarters).zip(SHIFTS2).zip(sc_h.chunks_exact(2))
        {
            o.u = or(field(l, lshift, bytes(0x0f)), field(&h, hshift, bytes(3)).map(|h| h << 4));
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
        *o = Block32 { u: nibbles(q).map(levels), scale: [d * (f32::from(sc) - 32.0), 0.0], min: [0.0; 2] };
    }
}

/// Writes block `b` of the row in lane `lane` (< [`ROWS`]) into panel block `unit`
/// ([`Form::block_words`] words): code word `g` to word `16 g + lane`, the fields to word
/// `lane` of each field.
#[inline(always)]
fn put(form: Form, unit: &mut [f32], lane: usize, b: &Block32) {
    let (codes, fields) = unit.split_at_mut(CODE_WORDS.min(unit.len()));
    let codes: &mut [u32] = bytemuck::cast_slice_mut(codes);
    for (group, &u) in codes.chunks_exact_mut(ROWS).zip(&b.u) {
        if let Some(c) = group.get_mut(lane) {
            *c = u;
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
