//! The quantization engine: ggml block formats, dequantization, and the fused kernels the
//! inference engine spends its time in.
//!
//! * [`is_computable`] — the 15 types the engine computes with: F32, F16, BF16, Q4_0, Q4_1, Q5_0,
//!   Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS.
//! * [`find_non_finite`] — where a chunk of weights would decode to NaN or infinity (a loader's
//!   check; the kernels themselves just propagate such values).
//! * [`Kernels`] — a small `Copy` table chosen once at run time ([`Kernels::detect`]): AVX-512
//!   (F + VL), AVX2+FMA+F16C, NEON on aarch64, simd128 on wasm32 built with that feature, or the
//!   portable scalar path ([`Kernels::scalar`], also the reference every SIMD kernel is tested
//!   against). Its methods dequantize ([`Kernels::dequantize`]), multiply
//!   quantized weight rows by a batch of token vectors ([`Kernels::matmul_acc`]), multiply f32
//!   matrices ([`Kernels::gemm_f32_acc`]) and provide the vector helpers [`Kernels::dot`] and
//!   [`Kernels::axpy`].
//!
//! # Contracts shared by every function here
//! * No allocation, no panics: every size is checked before any work is done, and a wrong size is
//!   [`Error::BufferTooSmall`] (`needed` and `given` counted in the unit the function documents);
//!   a type the engine cannot compute with is [`Unsupported::TensorType`] (with an empty tensor
//!   name: the caller knows which tensor it was).
//! * Bounded work: each call does work proportional to the sizes it is given (stated per
//!   function) and nothing else; callers bound a step by choosing those sizes.
//! * Dequantization is bit-exact with gguf-py (and thus with ggml's reference dequantizers) on
//!   every path; the matrix kernels differ between paths only by summation order.
//!
//! # How the fused kernel works
//! Weight-stationary: [`Kernels::matmul_acc`] decodes a tile of weight rows (about 192 KiB of
//! f32, so it stays in L2) into the caller's `scratch` once — each weight block is decoded once per
//! call — and then runs an f32 micro-kernel over it that keeps a rows × tokens tile of
//! accumulators in registers (4 × 6 zmm on AVX-512, 3 × 4 ymm on AVX2) while it walks `k`, loading
//! each decoded weight vector once per 6 (4) tokens and each token vector once per 4 (3) rows.
//! The GEMM walks the tile token-tile by token-tile so that the tokens of one micro-kernel stay in
//! L1, and splits `k` above 1024 into blocks. Dot-product form (both operands contiguous along
//! `k`, lane sums reduced at the end) needs no packing of the tokens, so it works on the caller's
//! activations in place; at 128 tokens it runs at about 60–65% of the measured FMA peak of one
//! core on this project's reference machine (see `benches/kernels.rs`).
//!
//! The portable path is plain Rust (the compiler vectorizes what it can for the target); it is
//! what thumbv7em and wasm32 without simd128 run. The NEON and simd128 tables (4 × 4 and 3 × 4
//! micro-kernels) decode with the portable path and multiply with their own kernels.

mod blocks;
pub mod int8;
mod scalar;
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon"),
    all(target_arch = "wasm32", target_feature = "simd128")
))]
mod simd;

use crate::error::{Error, Malformed, Name, Result, Unsupported};
use crate::gguf::GgmlType;
pub use int8::{
    has_q8_kernel, matmul_q8_scratch_len, q8_blocks, quantize_q8, quantize_q8_refined, BlockQ8, Q8Isa,
    REFINE_ABOVE,
};

/// Whether the engine can compute with tensors of type `ty`.
///
/// Exactly F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and
/// IQ4_XS. Every other type fails [`Kernels::dequantize`] and [`Kernels::matmul_acc`] with
/// [`Unsupported::TensorType`].
pub const fn is_computable(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_NL
            | GgmlType::IQ4_XS
    )
}

/// The byte offset in `src` of the first block (for F32, F16 and BF16: the first value) of type
/// `ty` that decodes to a NaN or an infinity, or `None` when every value is finite.
///
/// For the quantized types that is a block whose f16 scale or min is not finite: with finite
/// scales every decoded value is finite. A loader can stream each weight tensor through this once
/// and report [`Malformed::NonFinite`] at `tensor offset + chunk offset + the returned offset`.
///
/// Errors as [`Kernels::dequantize`]: an uncomputable `ty`, or `src` not a whole number of blocks.
/// Work: O(`src.len()`) for the float types, O(`src.len() / block_bytes`) for the others.
pub fn find_non_finite(ty: GgmlType, src: &[u8]) -> Result<Option<usize>> {
    let bb = block_bytes_of(ty, src)?;
    let found = match ty {
        GgmlType::F32 => {
            src.as_chunks::<4>().0.iter().position(|b| u32::from_le_bytes(*b) & 0x7f80_0000 == 0x7f80_0000)
        }
        GgmlType::F16 => {
            src.as_chunks::<2>().0.iter().position(|b| u16::from_le_bytes(*b) & 0x7c00 == 0x7c00)
        }
        GgmlType::BF16 => {
            src.as_chunks::<2>().0.iter().position(|b| u16::from_le_bytes(*b) & 0x7f80 == 0x7f80)
        }
        _ => {
            let fields = blocks::scale_fields(ty);
            src.chunks_exact(bb).position(|block| {
                fields.iter().any(|&off| match block.get(off..).and_then(|b| b.first_chunk::<2>()) {
                    Some(b) => u16::from_le_bytes(*b) & 0x7c00 == 0x7c00,
                    None => false,
                })
            })
        }
    };
    Ok(found.map(|i| i.saturating_mul(bb)))
}

/// The block size of a computable `ty`, checking that `src` holds whole blocks.
fn block_bytes_of(ty: GgmlType, src: &[u8]) -> Result<usize> {
    if !is_computable(ty) {
        return Err(unsupported(ty));
    }
    let bb = ty.block_bytes() as usize;
    if !src.len().is_multiple_of(bb) {
        let blocks = src.len().checked_div(bb).unwrap_or(0);
        let needed = blocks.saturating_add(1).saturating_mul(bb);
        return Err(Error::BufferTooSmall { needed, given: src.len() });
    }
    Ok(bb)
}

/// The instruction set a [`Kernels`] table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust, no explicit SIMD: every target, and the reference the others are tested
    /// against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512F + AVX-512VL (with AVX2, FMA and F16C).
    Avx512,
    /// aarch64 NEON (Advanced SIMD), on every aarch64 target that enables `neon`.
    Neon,
    /// wasm32 simd128, when the crate is built with `-C target-feature=+simd128`.
    Simd128,
}

impl Isa {
    /// Every instruction set, the portable one first.
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon, Isa::Simd128];

    /// A short lowercase name (`"scalar"`, `"avx2"`, `"avx512"`, `"neon"`, `"simd128"`).
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::Simd128 => "simd128",
        }
    }
}

/// Which implementation a [`Kernels`] table dispatches to. The SIMD variants carry a token that
/// can only be made after the CPU was found to support the instructions.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2(simd::Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(simd::Avx512),
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    Neon(simd::Neon),
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    Simd128(simd::Simd128),
}

/// Floats of decoded-weight scratch for [`Kernels::matmul_acc`] with rows of `k` elements:
/// `(min, preferred)`.
///
/// `min` is one row (`k`); `preferred` is a tile of rows of about 192 KiB (at least 4 and at most
/// 64 rows) plus 16 floats of slack to start the tile on a 64-byte boundary, which lets the
/// micro-kernel reuse each decoded tile for every token from L2. More than `preferred` is
/// accepted and used, but gains nothing.
pub const fn matmul_scratch_len(k: usize) -> (usize, usize) {
    const TILE_FLOATS: usize = 192 * 1024 / 4;
    let rows = match TILE_FLOATS.checked_div(k) {
        Some(r) if r > 64 => 64,
        Some(r) if r < 4 => 4,
        Some(r) => (r / 4).saturating_mul(4),
        None => 64,
    };
    (k, k.saturating_mul(rows).saturating_add(16))
}

/// The kernel table. Cheap to copy; pick one with [`Kernels::detect`] and keep it.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    backend: Backend,
    /// The integer path of [`Kernels::matmul_q8_acc`].
    q8: int8::Backend,
}

impl Default for Kernels {
    fn default() -> Self {
        Kernels::detect()
    }
}

/// `Err(BufferTooSmall)` unless `given >= needed`.
#[inline]
fn need(needed: usize, given: usize) -> Result<()> {
    if given < needed {
        Err(Error::BufferTooSmall { needed, given })
    } else {
        Ok(())
    }
}

/// Elements spanned by `count` rows of `len` elements, `stride` apart (0 when `count` is 0);
/// `usize::MAX` when that overflows (so it is never satisfied).
#[inline]
fn span(count: usize, stride: usize, len: usize) -> usize {
    match count.checked_sub(1) {
        None => 0,
        Some(last) => last.checked_mul(stride).and_then(|s| s.checked_add(len)).unwrap_or(usize::MAX),
    }
}

/// The error for a type the engine cannot compute with.
fn unsupported(ty: GgmlType) -> Error {
    Error::Unsupported(Unsupported::TensorType { tensor: Name::new(""), ty })
}

/// Bytes of one row of `k` elements of `ty`, checking that `ty` is computable and `k` a whole
/// number of blocks.
fn row_bytes(ty: GgmlType, k: usize) -> Result<usize> {
    if !is_computable(ty) {
        return Err(unsupported(ty));
    }
    let not_blocks = Error::malformed(Malformed::RowNotBlockMultiple { ty, ne0: k as u64 }, 0);
    let bytes = ty.row_bytes(k as u64).ok_or(not_blocks)?;
    usize::try_from(bytes).map_err(|_| not_blocks)
}

/// Validates the shared shape of a `matmul_acc` / `gemm_f32_acc` call (tokens and outputs).
#[allow(clippy::too_many_arguments)]
fn check_tokens(
    n_rows: usize,
    k: usize,
    x: &[f32],
    x_stride: usize,
    n_tokens: usize,
    out: &[f32],
    out_stride: usize,
) -> Result<()> {
    need(k, x_stride)?;
    need(n_rows, out_stride)?;
    need(span(n_tokens, x_stride, k), x.len())?;
    need(span(n_tokens, out_stride, n_rows), out.len())
}

impl Kernels {
    /// The fastest table this CPU supports: AVX-512 if present, else AVX2+FMA+F16C, else the
    /// scalar path; NEON on aarch64 and simd128 on wasm32 built with it (compile-time choices).
    /// Detection runs once per process (cached by `cpufeatures`) and is cheap after.
    pub fn detect() -> Self {
        [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Simd128]
            .into_iter()
            .find_map(Kernels::with_isa)
            .unwrap_or_else(Kernels::scalar)
            .with_best_q8()
    }

    /// The portable scalar path (the reference implementation), on every CPU.
    pub const fn scalar() -> Self {
        Kernels { backend: Backend::Scalar, q8: int8::Backend::Scalar }
    }

    /// The table for `isa`, or `None` when this CPU (or target) does not support it.
    pub fn with_isa(isa: Isa) -> Option<Self> {
        let backend = match isa {
            Isa::Scalar => Backend::Scalar,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Backend::Avx2(simd::Avx2::new()?),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Backend::Avx512(simd::Avx512::new()?),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => return None,
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::Neon => Backend::Neon(simd::Neon::new()?),
            #[cfg(not(all(target_arch = "aarch64", target_feature = "neon")))]
            Isa::Neon => return None,
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => Backend::Simd128(simd::Simd128::new()?),
            #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
            Isa::Simd128 => return None,
        };
        let kernels = Kernels { backend, q8: int8::Backend::Scalar };
        Some(if isa == Isa::Scalar { kernels } else { kernels.with_best_q8() })
    }

    /// This table with the fastest integer path the CPU runs.
    fn with_best_q8(self) -> Self {
        Kernels { q8: int8::Backend::detect(), ..self }
    }

    /// This table with the integer path `isa` for [`Kernels::matmul_q8_acc`], or `None` when
    /// this CPU (or target) does not run it. [`Kernels::detect`] picks the fastest;
    /// [`Kernels::scalar`] and `with_isa(Isa::Scalar)` use [`Q8Isa::Scalar`].
    pub fn with_q8_isa(self, isa: Q8Isa) -> Option<Self> {
        Some(Kernels { q8: int8::Backend::with_isa(isa)?, ..self })
    }

    /// The integer instruction set of [`Kernels::matmul_q8_acc`].
    pub fn q8_isa(&self) -> Q8Isa {
        self.q8.isa()
    }

    /// The instruction set this table uses.
    pub const fn isa(&self) -> Isa {
        match self.backend {
            Backend::Scalar => Isa::Scalar,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(_) => Isa::Avx2,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512(_) => Isa::Avx512,
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Backend::Neon(_) => Isa::Neon,
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Backend::Simd128(_) => Isa::Simd128,
        }
    }

    /// Decodes whole blocks of a computable type (already validated sizes).
    fn decode(&self, ty: GgmlType, src: &[u8], dst: &mut [f32]) {
        let done = match self.backend {
            Backend::Scalar => false,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(t) => t.decode(ty, src, dst),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512(t) => t.decode(ty, src, dst),
            #[cfg(any(
                all(target_arch = "aarch64", target_feature = "neon"),
                all(target_arch = "wasm32", target_feature = "simd128")
            ))]
            _ => false,
        };
        if !done {
            scalar::decode(ty, src, dst);
        }
    }

    /// f32 GEMM on validated sizes.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        w: &[f32],
        w_stride: usize,
        n_rows: usize,
        k: usize,
        x: &[f32],
        x_stride: usize,
        n_tokens: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        match self.backend {
            Backend::Scalar => scalar::gemm(w, w_stride, n_rows, k, x, x_stride, n_tokens, out, out_stride),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(t) => t.gemm(w, w_stride, n_rows, k, x, x_stride, n_tokens, out, out_stride),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512(t) => t.gemm(w, w_stride, n_rows, k, x, x_stride, n_tokens, out, out_stride),
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Backend::Neon(t) => t.gemm(w, w_stride, n_rows, k, x, x_stride, n_tokens, out, out_stride),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Backend::Simd128(t) => t.gemm(w, w_stride, n_rows, k, x, x_stride, n_tokens, out, out_stride),
        }
    }

    /// Dequantizes the whole blocks of type `ty` in `src` into the start of `dst`; returns the
    /// number of floats written (`src.len() / block_bytes · block_elems`).
    ///
    /// Errors: `ty` not [computable](is_computable) → [`Unsupported::TensorType`]; `src` not a
    /// whole number of blocks → [`Error::BufferTooSmall`] in bytes (`needed` = the length that
    /// would complete its last block); `dst` too short → [`Error::BufferTooSmall`] in floats.
    /// Work: O(`src.len()`). Values are bit-exact with gguf-py on every [`Isa`].
    pub fn dequantize(&self, ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<usize> {
        let bb = block_bytes_of(ty, src)?;
        let be = ty.block_elems() as usize;
        let blocks = src.len().checked_div(bb).unwrap_or(0);
        let n =
            blocks.checked_mul(be).ok_or(Error::BufferTooSmall { needed: usize::MAX, given: dst.len() })?;
        need(n, dst.len())?;
        let dst = dst.get_mut(..n).ok_or(Error::BufferTooSmall { needed: n, given: 0 })?;
        self.decode(ty, src, dst);
        Ok(n)
    }

    /// The fused kernel: `out[t·out_stride + r] += Σ_{i<k} W[r][i] · x[t·x_stride + i]` for every
    /// weight row `r < n_rows` and token `t < n_tokens`.
    ///
    /// `w` holds `n_rows` rows of `k` elements of type `ty`, each `ty.row_bytes(k)` bytes, packed
    /// one after another (bytes after the last row are ignored). The results are **added** to
    /// `out` (pre-fill it with the bias, or zeros). `scratch` is decoded-weight space: any length
    /// of at least `k` floats works, [`matmul_scratch_len`]`(k).1` is fastest; its contents on
    /// return are unspecified. Each weight block is decoded exactly once per call.
    ///
    /// Errors (checked before anything is written): `ty` not computable →
    /// [`Unsupported::TensorType`]; `k` not a multiple of the type's block →
    /// [`Malformed::RowNotBlockMultiple`] (offset 0); sizes → [`Error::BufferTooSmall`]: `w` (bytes,
    /// `n_rows · row_bytes`), `x_stride < k`, `out_stride < n_rows`, `x` (floats,
    /// `(n_tokens−1)·x_stride + k`), `out` (floats, `(n_tokens−1)·out_stride + n_rows`), `scratch`
    /// (floats, `k`). Empty shapes (`n_rows`, `k` or `n_tokens` zero) do nothing.
    ///
    /// Work: O(`n_rows · k · n_tokens`) multiply-adds plus O(`n_rows · k`) decoding.
    ///
    /// Speed: token rows on 64-byte boundaries (`x` aligned, `x_stride` a multiple of 16) run about
    /// 1.3× faster on AVX-512 than misaligned ones (the decoded weights are aligned inside
    /// `scratch` by this function). A call of a few hundred weight rows and all the tokens of a
    /// batch keeps the decoding cost negligible from about 16 tokens on.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_acc(
        &self,
        ty: GgmlType,
        w: &[u8],
        n_rows: usize,
        k: usize,
        x: &[f32],
        x_stride: usize,
        n_tokens: usize,
        out: &mut [f32],
        out_stride: usize,
        mut scratch: &mut [f32],
    ) -> Result<()> {
        let rb = row_bytes(ty, k)?;
        let w_len = n_rows.saturating_mul(rb);
        need(w_len, w.len())?;
        check_tokens(n_rows, k, x, x_stride, n_tokens, out, out_stride)?;
        need(k, scratch.len())?;
        if n_rows == 0 || k == 0 || n_tokens == 0 {
            return Ok(());
        }
        let w = w.get(..w_len).unwrap_or_default();
        if ty == GgmlType::F32 {
            if let Ok(wf) = bytemuck::try_cast_slice::<u8, f32>(w) {
                if cfg!(target_endian = "little") {
                    self.gemm(wf, k, n_rows, k, x, x_stride, n_tokens, out, out_stride);
                    return Ok(());
                }
            }
        }
        // Decoded rows start on a 64-byte boundary when the scratch has room for it: unaligned
        // 512-bit loads cost the micro-kernel a quarter of its speed.
        let align = scratch.as_ptr().align_offset(64);
        if align < 16 && scratch.len().saturating_sub(align) >= k {
            scratch = scratch.get_mut(align..).unwrap_or_default();
        }
        // k >= 1 and scratch.len() >= k, so tile_rows >= 1.
        let tile_rows = scratch.len().checked_div(k).unwrap_or(1).clamp(1, n_rows);
        let tile_bytes = tile_rows.saturating_mul(rb);
        let mut r0 = 0usize;
        for tile in w.chunks(tile_bytes) {
            // Whole rows: w_len and tile_bytes are multiples of rb (rb > 0 because k > 0).
            let rows = tile.len().checked_div(rb).unwrap_or(0);
            let Some(dec) = scratch.get_mut(..rows.saturating_mul(k)) else {
                break;
            };
            self.decode(ty, tile, dec);
            let Some(out_tile) = out.get_mut(r0..) else {
                break;
            };
            self.gemm(dec, k, rows, k, x, x_stride, n_tokens, out_tile, out_stride);
            r0 = r0.saturating_add(rows);
        }
        Ok(())
    }

    /// Fast mode of [`Kernels::matmul_acc`]: `out[t·out_stride + r] += Σ_{i<k} W[r][i] · x̂[t][i]`
    /// with the tokens quantized to int8 blocks by [`quantize_q8`] (`xq[t·xq_stride ..]`, `k / 32`
    /// blocks a token) and integer dot products taken on the weight codes.
    ///
    /// `w`, `n_rows`, `k`, `out` and `out_stride` are as in [`Kernels::matmul_acc`]. `ty` must be
    /// one of the twelve quantized computable types (F32, F16 and BF16 are
    /// [`Unsupported::TensorType`]: they keep the f32 path). `scratch` holds one 16-row weight
    /// panel: [`matmul_q8_scratch_len`]`(k)` floats suffice for every type (fewer work when they
    /// hold the type's panel; the error says how many). Each weight block is unpacked once per
    /// call. The result is the same bits on every [`Q8Isa`].
    ///
    /// Errors (checked before anything is written): those of [`Kernels::matmul_acc`], with
    /// `xq_stride < k / 32` and `xq` shorter than `(n_tokens−1)·xq_stride + k/32` counted in
    /// blocks and `scratch` in floats. Work: O(`n_rows · k · n_tokens`) integer multiply-adds plus
    /// O(`n_rows · k / 16 · n_tokens`) f32 operations and O(`n_rows · k`) unpacking.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_q8_acc(
        &self,
        ty: GgmlType,
        w: &[u8],
        n_rows: usize,
        k: usize,
        xq: &[BlockQ8],
        xq_stride: usize,
        n_tokens: usize,
        out: &mut [f32],
        out_stride: usize,
        scratch: &mut [f32],
    ) -> Result<()> {
        int8::matmul_q8_acc(
            self.q8,
            ty,
            w,
            n_rows,
            k,
            (xq, None),
            xq_stride,
            n_tokens,
            out,
            out_stride,
            scratch,
        )
    }

    /// [`Kernels::matmul_q8_acc`] over blocks and their residual ([`quantize_q8_refined`]):
    /// `out[t·out_stride + r] += Σ W[r]·x̂[t]`, then `+= Σ W[r]·r̂[t]` for each token whose
    /// residual row `xr[t·xq_stride ..]` has a nonzero block (the others are skipped, which is
    /// the same bits as adding their zero sums). Each weight block is unpacked once for both.
    /// Errors: those of [`Kernels::matmul_q8_acc`], with `xr` checked like `xq`. Work: that of
    /// [`Kernels::matmul_q8_acc`] for `n_tokens` plus the refined tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_q8r_acc(
        &self,
        ty: GgmlType,
        w: &[u8],
        n_rows: usize,
        k: usize,
        (xq, xr): (&[BlockQ8], &[BlockQ8]),
        xq_stride: usize,
        n_tokens: usize,
        out: &mut [f32],
        out_stride: usize,
        scratch: &mut [f32],
    ) -> Result<()> {
        let x = (xq, Some(xr));
        int8::matmul_q8_acc(self.q8, ty, w, n_rows, k, x, xq_stride, n_tokens, out, out_stride, scratch)
    }

    /// [`Kernels::matmul_acc`] with f32 weights in a strided matrix: row `r` of `W` is
    /// `w[r·w_stride ..][..k]`. The engine uses it for attention scores (Q·Kᵀ).
    ///
    /// Errors: [`Error::BufferTooSmall`] (floats) for `w_stride < k`, `w` shorter than
    /// `(n_rows−1)·w_stride + k`, and the token/output checks of [`Kernels::matmul_acc`].
    /// Work: O(`n_rows · k · n_tokens`).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f32_acc(
        &self,
        w: &[f32],
        w_stride: usize,
        n_rows: usize,
        k: usize,
        x: &[f32],
        x_stride: usize,
        n_tokens: usize,
        out: &mut [f32],
        out_stride: usize,
    ) -> Result<()> {
        need(k, w_stride)?;
        need(span(n_rows, w_stride, k), w.len())?;
        check_tokens(n_rows, k, x, x_stride, n_tokens, out, out_stride)?;
        if n_rows == 0 || k == 0 || n_tokens == 0 {
            return Ok(());
        }
        self.gemm(w, w_stride, n_rows, k, x, x_stride, n_tokens, out, out_stride);
        Ok(())
    }

    /// `Σ a[i]·b[i]`. `a` and `b` must have the same length, else [`Error::BufferTooSmall`]
    /// (`needed` = the longer length). Work: O(`a.len()`).
    pub fn dot(&self, a: &[f32], b: &[f32]) -> Result<f32> {
        need(a.len(), b.len())?;
        need(b.len(), a.len())?;
        Ok(match self.backend {
            Backend::Scalar => scalar::dot(a, b),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(t) => t.dot(a, b),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512(t) => t.dot(a, b),
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Backend::Neon(t) => t.dot(a, b),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Backend::Simd128(t) => t.dot(a, b),
        })
    }

    /// `y[i] += alpha · x[i]`. `x` and `y` must have the same length, else
    /// [`Error::BufferTooSmall`] (`needed` = the longer length). Work: O(`x.len()`).
    pub fn axpy(&self, alpha: f32, x: &[f32], y: &mut [f32]) -> Result<()> {
        need(x.len(), y.len())?;
        need(y.len(), x.len())?;
        match self.backend {
            Backend::Scalar => scalar::axpy(alpha, x, y),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(t) => t.axpy(alpha, x, y),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512(t) => t.axpy(alpha, x, y),
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Backend::Neon(t) => t.axpy(alpha, x, y),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Backend::Simd128(t) => t.axpy(alpha, x, y),
        }
        Ok(())
    }
}
