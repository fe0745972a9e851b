//! Fast mode: int8 activations times quantized weights in integer arithmetic.
//!
//! * [`BlockQ8`] — 32 activations quantized to int8 with one f32 scale and the sums of their two
//!   halves (which the minimum terms of Q4_1, Q5_1, Q2_K, Q4_K and Q5_K need);
//!   [`quantize_q8`] fills them from f32 token rows ([`q8_blocks`] tells how many up front).
//! * [`Kernels::matmul_q8_acc`](super::Kernels::matmul_q8_acc) — the fused kernel with the
//!   contract of [`Kernels::matmul_acc`](super::Kernels::matmul_acc), for the twelve quantized
//!   computable types; its scratch is [`matmul_q8_scratch_len`] floats.
//! * [`Q8Isa`] — the integer paths: AVX-512 VNNI (`vpdpbusd` on zmm), AVX-VNNI (on ymm),
//!   AVX-512BW and AVX2 (`pmaddubsw` + `pmaddwd`), NEON (`smull` + pairwise adds), simd128
//!   (`i32x4.dot_i16x8_s` on widened codes) and the portable scalar twin.
//!
//! # How it works
//! Weight-stationary like the f32 kernel, in panels of 16 rows: the rows' blocks are unpacked
//! once per call into unsigned byte codes plus per-sub-block f32 scales and mins (`panel`), laid
//! out so that one 64-byte vector holds four elements of each of the 16 rows — one 32-bit lane
//! per row. A micro-kernel then walks the panel for a tile of tokens: per group of four elements
//! one `vpdpbusd` (or `pmaddubsw` + `pmaddwd`) per token adds four products into each row's
//! lane, with the token's four int8 values broadcast; after each sub-block the exact integer
//! sums are scaled into f32 accumulators, one lane per row. Because each lane is one row, the
//! f32 arithmetic of every path is the sequential per-row sum of the scalar twin (`scalar`,
//! whose module documentation gives it), and every path's result equals it bit for bit.
//!
//! The activation side is quantized per 32 elements (not per 256 like ggml's Q8_K), which keeps
//! the int8 error of each block relative to its own largest value.

mod panel;
mod scalar;
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon"),
    all(target_arch = "wasm32", target_feature = "simd128")
))]
mod simd;

use super::{need, span, unsupported};
use crate::error::{Error, Malformed, Result};
use crate::gguf::GgmlType;
use panel::{Form, MAX_BLOCK_WORDS, QB, ROWS};

/// 32 activations quantized to int8: value `i` ≈ `d · qs[i]`.
///
/// `qs[i] = round(x[i] / d)` with `d = max|x| / 127` (ties away from zero), so `|qs[i]| ≤ 127`;
/// `sums` are `Σ qs[0..16]` and `Σ qs[16..32]`. 40 bytes, 4-byte aligned; the SIMD kernels
/// read the fields at the offsets this `repr(C)` layout fixes (d 0, sums 4, qs 8).
///
/// Plain data (`bytemuck::Pod`, derived: the layout has no padding and every field is plain
/// data), so that blocks can live in a byte arena carved without `unsafe`. Any bits are
/// memory-safe for the kernels; their results, and the bit-for-bit agreement of the paths,
/// are those of blocks [`quantize_q8`] wrote.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8 {
    d: f32,
    sums: [i16; 2],
    qs: [i8; QB],
}

const _: () = assert!(core::mem::size_of::<BlockQ8>() == 40);
const _: () = assert!(core::mem::align_of::<BlockQ8>() == 4);
const _: () = assert!(core::mem::offset_of!(BlockQ8, d) == 0);
const _: () = assert!(core::mem::offset_of!(BlockQ8, sums) == 4);
const _: () = assert!(core::mem::offset_of!(BlockQ8, qs) == 8);

impl BlockQ8 {
    /// The all-zero block (`d = 0`), to initialise storage with.
    pub const ZERO: BlockQ8 = BlockQ8 { d: 0.0, sums: [0; 2], qs: [0; QB] };

    /// The block scale `d`.
    pub const fn scale(&self) -> f32 {
        self.d
    }

    /// The 32 int8 values.
    pub const fn values(&self) -> &[i8; QB] {
        &self.qs
    }

    /// `S`: the sum of the values of half `h` (`Some(0)`, `Some(1)`) or of all of them (`None`).
    #[inline(always)]
    fn sub_sum(&self, half: Option<usize>) -> i32 {
        let [lo, hi] = self.sums.map(i32::from);
        match half {
            Some(0) => lo,
            Some(_) => hi,
            // Two sums of at most 2032 in magnitude.
            None => lo.wrapping_add(hi),
        }
    }

    /// The four values of group `g` (< 8).
    #[inline(always)]
    fn group(&self, g: usize) -> Option<&[i8; 4]> {
        self.qs.get(g.wrapping_mul(4)..).and_then(|q| q.first_chunk::<4>())
    }
}

impl Default for BlockQ8 {
    fn default() -> Self {
        BlockQ8::ZERO
    }
}

/// Whether `ty` has an integer kernel ([`Kernels::matmul_q8_acc`](super::Kernels::matmul_q8_acc)):
/// the twelve quantized computable types, not the float types.
pub const fn has_q8_kernel(ty: GgmlType) -> bool {
    Form::of(ty).is_some()
}

/// Blocks of `n_tokens` rows of `k` activations (`k / 32` per row), or `None` if `k` is not a
/// multiple of 32 or the count overflows. Bytes: that times `size_of::<BlockQ8>()` (40).
pub const fn q8_blocks(k: usize, n_tokens: usize) -> Option<usize> {
    if !k.is_multiple_of(QB) {
        return None;
    }
    (k / QB).checked_mul(n_tokens)
}

/// The error for a row length that is not a whole number of 32-element blocks.
fn not_blocks(k: usize) -> Error {
    Error::malformed(Malformed::RowNotBlockMultiple { ty: GgmlType::Q8_0, ne0: k as u64 }, 0)
}

/// Quantizes `n_tokens` rows of `k` f32 activations (`x[t·x_stride ..][..k]`) into `dst`: row
/// `t` becomes blocks `dst[t·k/32 .. (t+1)·k/32]`.
///
/// Errors: `k` not a multiple of 32 → [`Malformed::RowNotBlockMultiple`] (type Q8_0, offset 0);
/// `x_stride < k`, `x` shorter than `(n_tokens−1)·x_stride + k` or `dst` shorter than
/// [`q8_blocks`]`(k, n_tokens)` → [`Error::BufferTooSmall`] (floats, blocks); a NaN or infinite
/// activation → [`Error::NonFinite`] (stage `"quantize"`), with the blocks before it written and
/// the rest of `dst` untouched. Work: O(`n_tokens · k`).
pub fn quantize_q8(x: &[f32], x_stride: usize, k: usize, n_tokens: usize, dst: &mut [BlockQ8]) -> Result<()> {
    let per_row = k.checked_div(QB).filter(|_| k.is_multiple_of(QB)).ok_or(not_blocks(k))?;
    need(k, x_stride)?;
    need(span(n_tokens, x_stride, k), x.len())?;
    need(q8_blocks(k, n_tokens).unwrap_or(usize::MAX), dst.len())?;
    if per_row == 0 {
        return Ok(());
    }
    for (t, row_out) in dst.chunks_exact_mut(per_row).take(n_tokens).enumerate() {
        let row = x.get(t.saturating_mul(x_stride)..).and_then(|r| r.get(..k)).unwrap_or_default();
        for (xs, b) in row.chunks_exact(QB).zip(row_out.iter_mut()) {
            *b = quantize_block(xs).ok_or(Error::NonFinite { stage: "quantize", layer: None })?;
        }
    }
    Ok(())
}

/// The relative quantization error above which a token's int8 blocks get a residual pass
/// ([`quantize_q8_refined`]): `‖x − x̂‖ > REFINE_ABOVE · ‖x‖` over the token's row.
///
/// Blocks of well-spread values (a Gaussian's 32 samples: the largest about 2.1 σ) quantize
/// with a relative error of about 0.005 (`d / √12` per value, `d = max / 127`); a row of such
/// blocks stays below it. A row whose few large channels set the scale of the 31 others in
/// their blocks (LayerNorm outputs of trained BERT models) reaches 0.01–0.03, and its products
/// lose up to 1e-3 of cosine; with the residual the error is below 1/254 of the first pass's.
pub const REFINE_ABOVE: f64 = 0.01;

/// [`quantize_q8`], plus a second int8 pass where the first loses too much: for each token
/// whose row's relative error `‖x − x̂‖ / ‖x‖` exceeds [`REFINE_ABOVE`] (x̂ the values of its
/// blocks, `d · qs`), `residual` gets the blocks of `x − x̂` (row `t` at `residual[t·k/32 ..]`,
/// quantized the same way), so that `x ≈ x̂ + r̂` and a product over both
/// ([`Kernels::matmul_q8r_acc`](super::Kernels::matmul_q8r_acc)) adds `W·r̂` to `W·x̂`; the
/// other tokens' residual blocks are [`BlockQ8::ZERO`]. Each token's blocks depend on its row
/// only. Returns how many tokens got a residual.
///
/// Errors: those of [`quantize_q8`], with `residual` checked like `dst`. Work: O(`n_tokens ·
/// k`), about twice [`quantize_q8`]'s for a refined token.
pub fn quantize_q8_refined(
    x: &[f32],
    x_stride: usize,
    k: usize,
    n_tokens: usize,
    dst: &mut [BlockQ8],
    residual: &mut [BlockQ8],
) -> Result<usize> {
    let per_row = k.checked_div(QB).filter(|_| k.is_multiple_of(QB)).ok_or(not_blocks(k))?;
    need(q8_blocks(k, n_tokens).unwrap_or(usize::MAX), residual.len())?;
    quantize_q8(x, x_stride, k, n_tokens, dst)?;
    if per_row == 0 {
        return Ok(0);
    }
    let mut refined = 0usize;
    let rows = dst.chunks_exact(per_row).zip(residual.chunks_exact_mut(per_row));
    for (t, (blocks, res)) in rows.take(n_tokens).enumerate() {
        let row = x.get(t.saturating_mul(x_stride)..).and_then(|r| r.get(..k)).unwrap_or_default();
        // In f64 (no overflow, no underflow that matters), in eight running lanes so that the
        // loop vectorises; the lanes are added in a fixed order, so the decision is the same
        // on every machine.
        let (mut err, mut norm) = ([0.0f64; 8], [0.0f64; 8]);
        for (xs, b) in row.chunks_exact(QB).zip(blocks) {
            let d = f64::from(b.d);
            for (xs, qs) in xs.chunks_exact(8).zip(b.qs.chunks_exact(8)) {
                for (((e, n), &v), &q) in err.iter_mut().zip(norm.iter_mut()).zip(xs).zip(qs) {
                    let v = f64::from(v);
                    let r = v - d * f64::from(q);
                    *e += r * r;
                    *n += v * v;
                }
            }
        }
        let (err, norm) = (err.iter().sum::<f64>(), norm.iter().sum::<f64>());
        if err <= REFINE_ABOVE * REFINE_ABOVE * norm {
            res.fill(BlockQ8::ZERO);
            continue;
        }
        refined = refined.saturating_add(1);
        for ((xs, b), r) in row.chunks_exact(QB).zip(blocks).zip(res.iter_mut()) {
            let mut rest = [0.0f32; QB];
            for ((e, &v), &q) in rest.iter_mut().zip(xs).zip(&b.qs) {
                // |x − d·q| ≤ d/2 (plus rounding): finite, as x was.
                *e = (f64::from(v) - f64::from(b.d) * f64::from(q)) as f32;
            }
            *r = quantize_block(&rest).ok_or(Error::NonFinite { stage: "quantize", layer: None })?;
        }
    }
    Ok(refined)
}

/// Whether a block adds nothing to a product: its scale is zero (all its values are).
pub(crate) fn is_zero_block(b: &BlockQ8) -> bool {
    b.d == 0.0
}

/// One block of 32 values, or `None` if one is not finite.
///
/// Each value becomes the nearest step of the stored scale `d = amax / 127` (rounded to f32),
/// so that `|x − d·q| ≤ d/2`: rounding `x · 127 / amax` instead would leave up to 127 times
/// the f32 rounding of `d` on top. Where `d` is subnormal (and so has lost precision) the steps
/// are those of `amax / 127` unrounded, so that the largest value still maps to ±127. The
/// reciprocal and products are taken in f64 so that a block of tiny values, whose f32
/// reciprocal would overflow, is quantized as well as any other; a block whose `d` underflows
/// to zero (all |x| < 127 · 2⁻¹⁵⁰) becomes all zeros.
fn quantize_block(xs: &[f32]) -> Option<BlockQ8> {
    // No early exit, so that the loop vectorises.
    let (mut amax, mut finite) = (0.0f32, true);
    for &v in xs {
        finite &= v.is_finite();
        amax = amax.max(v.abs());
    }
    if !finite {
        return None;
    }
    let d = amax / 127.0;
    let mut b = BlockQ8 { d, ..BlockQ8::ZERO };
    if d == 0.0 {
        return Some(b);
    }
    let inv = if d.is_normal() { 1.0 / f64::from(d) } else { 127.0 / f64::from(amax) };
    for (q, &v) in b.qs.iter_mut().zip(xs) {
        *q = round_to_i8(f64::from(v) * inv);
    }
    let (lo, hi) = b.qs.split_at(QB / 2);
    // 16 values of at most 127 in magnitude: within i16.
    let sum = |h: &[i8]| h.iter().fold(0i16, |s, &q| s.wrapping_add(i16::from(q)));
    b.sums = [sum(lo), sum(hi)];
    Some(b)
}

/// `x` (|x| ≤ 127 plus rounding) rounded to the nearest integer, ties away from zero, as
/// `libm::round` does, but branch-free so that the quantizer's loop vectorises: the truncating
/// cast, plus one where the exact remainder (an f64 difference of numbers < 2⁵³ apart by less
/// than one) reaches a half.
#[inline(always)]
fn round_to_i8(x: f64) -> i8 {
    let t = x as i32;
    let frac = x - f64::from(t);
    let r = t.wrapping_add(i32::from(frac >= 0.5)).wrapping_sub(i32::from(frac <= -0.5));
    // Within ±127 already; the clamp makes the narrowing cast obviously exact.
    r.clamp(-127, 127) as i8
}

/// Floats of scratch that [`Kernels::matmul_q8_acc`](super::Kernels::matmul_q8_acc) needs for
/// rows of `k` elements, enough for every type: one panel of 16 rows plus 16 floats to start it
/// on a 64-byte boundary. (`k / 32 · 192 + 16`; saturating.)
pub const fn matmul_q8_scratch_len(k: usize) -> usize {
    (k / QB).saturating_mul(MAX_BLOCK_WORDS).saturating_add(16)
}

/// The longest rows (elements, a whole number of blocks) whose weight panel fits in `floats` of
/// scratch: the inverse of [`matmul_q8_scratch_len`].
pub(crate) const fn matmul_q8_max_k(floats: usize) -> usize {
    (floats.saturating_sub(16) / MAX_BLOCK_WORDS).saturating_mul(QB)
}

/// The integer instruction set a kernel table uses for [`Kernels::matmul_q8_acc`](super::Kernels::matmul_q8_acc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Q8Isa {
    /// Portable Rust: the reference.
    Scalar,
    /// x86-64 AVX2: `pmaddubsw` + `pmaddwd` on ymm.
    Avx2,
    /// x86-64 AVX-512BW (with F and VL) without VNNI: `pmaddubsw` + `pmaddwd` on zmm.
    Avx512Bw,
    /// x86-64 AVX-VNNI: `vpdpbusd` on ymm (VEX-encoded).
    AvxVnni,
    /// x86-64 AVX-512 VNNI (with F, BW and VL): `vpdpbusd` on zmm.
    Avx512Vnni,
    /// aarch64 NEON: `smull` + pairwise adds.
    Neon,
    /// wasm32 simd128 (when the crate is built with it): `i32x4.dot_i16x8_s` on widened codes.
    Simd128,
}

impl Q8Isa {
    /// Every path: the portable one, then x86's slowest first, then NEON and simd128.
    pub const ALL: [Q8Isa; 7] = [
        Q8Isa::Scalar,
        Q8Isa::Avx2,
        Q8Isa::Avx512Bw,
        Q8Isa::AvxVnni,
        Q8Isa::Avx512Vnni,
        Q8Isa::Neon,
        Q8Isa::Simd128,
    ];

    /// A short lowercase name (`"scalar"`, `"avx2"`, `"avx512bw"`, `"avxvnni"`, `"avx512vnni"`,
    /// `"neon"`, `"simd128"`).
    pub const fn name(self) -> &'static str {
        match self {
            Q8Isa::Scalar => "scalar",
            Q8Isa::Avx2 => "avx2",
            Q8Isa::Avx512Bw => "avx512bw",
            Q8Isa::AvxVnni => "avxvnni",
            Q8Isa::Avx512Vnni => "avx512vnni",
            Q8Isa::Neon => "neon",
            Q8Isa::Simd128 => "simd128",
        }
    }
}

/// Which integer kernel a table dispatches to; the SIMD variants carry a token made only after
/// detection found the instructions.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Scalar,
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon"),
        all(target_arch = "wasm32", target_feature = "simd128")
    ))]
    Simd(simd::Token),
}

impl Backend {
    /// The fastest path this CPU runs.
    pub(crate) fn detect() -> Backend {
        [Q8Isa::Avx512Vnni, Q8Isa::AvxVnni, Q8Isa::Avx512Bw, Q8Isa::Avx2, Q8Isa::Neon, Q8Isa::Simd128]
            .into_iter()
            .find_map(Backend::with_isa)
            .unwrap_or(Backend::Scalar)
    }

    /// The backend for `isa`, if this CPU (and target) runs it.
    pub(crate) fn with_isa(isa: Q8Isa) -> Option<Backend> {
        match isa {
            Q8Isa::Scalar => Some(Backend::Scalar),
            #[cfg(any(
                target_arch = "x86_64",
                all(target_arch = "aarch64", target_feature = "neon"),
                all(target_arch = "wasm32", target_feature = "simd128")
            ))]
            _ => simd::Token::new(isa).map(Backend::Simd),
            #[cfg(not(any(
                target_arch = "x86_64",
                all(target_arch = "aarch64", target_feature = "neon"),
                all(target_arch = "wasm32", target_feature = "simd128")
            )))]
            _ => None,
        }
    }

    /// The instruction set.
    pub(crate) fn isa(self) -> Q8Isa {
        match self {
            Backend::Scalar => Q8Isa::Scalar,
            #[cfg(any(
                target_arch = "x86_64",
                all(target_arch = "aarch64", target_feature = "neon"),
                all(target_arch = "wasm32", target_feature = "simd128")
            ))]
            Backend::Simd(t) => t.isa(),
        }
    }
}

/// [`Kernels::matmul_q8_acc`](super::Kernels::matmul_q8_acc) on `backend` (see there).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_q8_acc(
    backend: Backend,
    ty: GgmlType,
    w: &[u8],
    n_rows: usize,
    k: usize,
    (xq, residual): (&[BlockQ8], Option<&[BlockQ8]>),
    xq_stride: usize,
    n_tokens: usize,
    out: &mut [f32],
    out_stride: usize,
    scratch: &mut [f32],
) -> Result<()> {
    let form = Form::of(ty).ok_or(unsupported(ty))?;
    let rb = super::row_bytes(ty, k)?;
    let n_blocks = k / QB;
    let w_len = n_rows.saturating_mul(rb);
    need(w_len, w.len())?;
    need(n_blocks, xq_stride)?;
    need(span(n_tokens, xq_stride, n_blocks), xq.len())?;
    if let Some(r) = residual {
        need(span(n_tokens, xq_stride, n_blocks), r.len())?;
    }
    need(n_rows, out_stride)?;
    need(span(n_tokens, out_stride, n_rows), out.len())?;
    let words = n_blocks.saturating_mul(form.block_words());
    need(words, scratch.len())?;
    if n_rows == 0 || k == 0 || n_tokens == 0 {
        return Ok(());
    }
    // A panel on a 64-byte boundary when the scratch has room: the kernels' code loads are then
    // aligned.
    let align = scratch.as_ptr().align_offset(64);
    let scratch = match scratch.get_mut(align..).filter(|s| align < 16 && s.len() >= words) {
        Some(s) => s,
        None => scratch,
    };
    let panel = scratch.get_mut(..words).unwrap_or_default();
    let w = w.get(..w_len).unwrap_or_default();
    for (p, rows) in w.chunks(rb.saturating_mul(ROWS)).enumerate() {
        let r0 = p.saturating_mul(ROWS);
        let n = rows.len().checked_div(rb).unwrap_or(0);
        panel::build(ty, form, rows, rb, k, panel);
        let out = out.get_mut(r0..).unwrap_or_default();
        let tokens = |xq: &[BlockQ8], n_tokens: usize, out: &mut [f32]| match backend {
            Backend::Scalar => {
                scalar::panel_tokens(form, panel, n, n_blocks, xq, xq_stride, n_tokens, out, out_stride)
            }
            #[cfg(any(
                target_arch = "x86_64",
                all(target_arch = "aarch64", target_feature = "neon"),
                all(target_arch = "wasm32", target_feature = "simd128")
            ))]
            Backend::Simd(t) => {
                t.panel_tokens(form, panel, n, n_blocks, xq, xq_stride, n_tokens, out, out_stride)
            }
        };
        tokens(xq, n_tokens, out);
        let Some(residual) = residual else { continue };
        // Then the residual blocks, over each run of tokens that has any (a token whose
        // residual is all zero blocks would add +0 to sums that are never −0: skipping it
        // changes no bit).
        let has = |t: usize| {
            let row = residual.get(t.saturating_mul(xq_stride)..).and_then(|r| r.get(..n_blocks));
            row.is_some_and(|r| !r.iter().all(is_zero_block))
        };
        let mut t = 0usize;
        while t < n_tokens {
            let start = t;
            let end = (start..n_tokens).find(|&u| !has(u)).unwrap_or(n_tokens);
            if end > start {
                let xr = residual.get(start.saturating_mul(xq_stride)..).unwrap_or_default();
                let o = out.get_mut(start.saturating_mul(out_stride)..).unwrap_or_default();
                tokens(xr, end.saturating_sub(start), o);
            }
            t = end.max(start.saturating_add(1));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::round_to_i8;

    #[test]
    fn rounding_is_libm_round_ties_away_from_zero() {
        // Every multiple of 1/1024 in [-127.5, 127.5] (halves included) and their neighbours.
        for i in -130_560i32..=130_560 {
            let x = f64::from(i) / 1024.0;
            for x in [x, libm::nextafter(x, f64::INFINITY), libm::nextafter(x, f64::NEG_INFINITY)] {
                let want = libm::round(x).clamp(-127.0, 127.0) as i8;
                assert_eq!(round_to_i8(x), want, "{x}");
            }
        }
    }
}
