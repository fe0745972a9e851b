//! Integer kernels on weight panels: x86-64 AVX-512 VNNI, AVX-VNNI, AVX-512BW and AVX2 (chosen
//! at run time), aarch64 NEON and wasm32 simd128 (built when the target has the feature).
//!
//! The only `unsafe` of the int8 path, of two kinds, each with its `SAFETY:` argument: calling
//! a `#[target_feature]` function, only through [`Token`], which is made only after run-time
//! detection found the features (or, for NEON and simd128, where the whole crate is compiled
//! with them); and unaligned vector loads from fixed-size arrays (`&[u8; 64]`, `&[f32; 16]`),
//! whose bounds are in their types. Everything else is safe Rust over slices.
//!
//! One micro-kernel, written once (`panel_kernel!`) over each ISA module's vector primitives:
//! 16 weight rows (one zmm, two ymm halves or four 128-bit quarters) × up to `NT` tokens. Per
//! group of four elements it loads the panel's codes once and adds `code · value` products for
//! every token, the token's four int8 values broadcast to every lane; per sub-block it scales
//! the exact integer sums into the f32 accumulators with the scalar twin's operations (see
//! `super::scalar`), one lane per row, so the result is bit for bit the scalar one.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512bw;
#[cfg(target_arch = "x86_64")]
mod avx512vnni;
#[cfg(target_arch = "x86_64")]
mod avxvnni;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod neon;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;

use super::panel::Form;
use super::{BlockQ8, Q8Isa};

#[cfg(target_arch = "x86_64")]
cpufeatures::new!(cpu_avx2, "avx", "avx2");
#[cfg(target_arch = "x86_64")]
cpufeatures::new!(cpu_avx512bw, "avx", "avx2", "avx512f", "avx512bw", "avx512vl");

/// CPUID leaf 7: `(sub-leaf 0 ECX, sub-leaf 1 EAX)`.
#[cfg(target_arch = "x86_64")]
fn leaf7() -> (u32, u32) {
    // `__cpuid_count` became a safe function in newer Rust; the block keeps the MSRV building.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID has no side effects; leaf 7 exists on every CPU with AVX2 (checked by the
    // callers before the result matters), and an absent leaf only returns zeros or a lower leaf.
    let (l0, l1) =
        unsafe { (core::arch::x86_64::__cpuid_count(7, 0), core::arch::x86_64::__cpuid_count(7, 1)) };
    (l0.ecx, l1.eax)
}

/// Whether the CPU (and OS) run the instructions of `isa`.
#[cfg(target_arch = "x86_64")]
fn supported(isa: Q8Isa) -> bool {
    match isa {
        Q8Isa::Scalar => true,
        Q8Isa::Avx2 => cpu_avx2::get(),
        Q8Isa::Avx512Bw => cpu_avx512bw::get(),
        // AVX-VNNI: CPUID.(7,1):EAX bit 4 (ymm state, as AVX2).
        Q8Isa::AvxVnni => cpu_avx2::get() && leaf7().1 & (1 << 4) != 0,
        // AVX512_VNNI: CPUID.(7,0):ECX bit 11 (zmm state, as AVX-512BW).
        Q8Isa::Avx512Vnni => cpu_avx512bw::get() && leaf7().0 & (1 << 11) != 0,
        Q8Isa::Neon | Q8Isa::Simd128 => false,
    }
}

/// Whether this build runs the instructions of `isa`: NEON is enabled for the whole crate.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
fn supported(isa: Q8Isa) -> bool {
    matches!(isa, Q8Isa::Scalar | Q8Isa::Neon)
}

/// Whether this build runs the instructions of `isa`: simd128 is enabled for the whole crate.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn supported(isa: Q8Isa) -> bool {
    matches!(isa, Q8Isa::Scalar | Q8Isa::Simd128)
}

/// Proof that the CPU runs a SIMD [`Q8Isa`]: only [`Token::new`] makes one, after detecting it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token(Q8Isa);

impl Token {
    /// The token for a SIMD `isa`, if the CPU supports it (`None` for [`Q8Isa::Scalar`]).
    pub(crate) fn new(isa: Q8Isa) -> Option<Token> {
        (isa != Q8Isa::Scalar && supported(isa)).then_some(Token(isa))
    }

    /// The instruction set.
    pub(crate) fn isa(self) -> Q8Isa {
        self.0
    }

    /// See [`super::scalar::panel_tokens`]; the same bits.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn panel_tokens(
        self,
        form: Form,
        panel: &[f32],
        n_rows: usize,
        n_blocks: usize,
        xq: &[BlockQ8],
        xq_stride: usize,
        n_tokens: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let args = (form, panel, n_rows, n_blocks, xq, xq_stride, n_tokens, out, out_stride);
        // SAFETY: the token exists only if `supported(self.0)` found every feature the called
        // function enables.
        unsafe {
            match self.0 {
                #[cfg(target_arch = "x86_64")]
                Q8Isa::Avx512Vnni => avx512vnni::panel_tokens(args),
                #[cfg(target_arch = "x86_64")]
                Q8Isa::AvxVnni => avxvnni::panel_tokens(args),
                #[cfg(target_arch = "x86_64")]
                Q8Isa::Avx512Bw => avx512bw::panel_tokens(args),
                #[cfg(target_arch = "x86_64")]
                Q8Isa::Avx2 => avx2::panel_tokens(args),
                #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
                Q8Isa::Neon => neon::panel_tokens(args),
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                Q8Isa::Simd128 => simd128::panel_tokens(args),
                _ => {}
            }
        }
    }
}

/// The arguments of [`Token::panel_tokens`], passed on in one piece.
type Args<'a, 'b> = (Form, &'a [f32], usize, usize, &'a [BlockQ8], usize, usize, &'b mut [f32], usize);

/// The micro-kernel and its driver, over the vector primitives of the ISA module it is expanded
/// in: the vector types `VI` / `VF` with `LANES` 32-bit lanes (`PARTS = 16 / LANES` vectors per
/// panel row set), `codes_of(&[u8; 64], part)`, `bcast(&[i8; 4])`, `splat_i`, `splat_f`, `zero_f`,
/// `prep::<WIDE>` (a code vector made ready for `dot`), `dot::<WIDE>(acc, prepared, x)` (adds the
/// four-element products of every lane), `RESIGNS` (whether `prep` re-signs wide codes, so that
/// their offset is already subtracted), `fields_of(&[f32; 16], part)`, `to_f`, `mul`, `add` and
/// `store(v, &mut [f32; LANES])`.
macro_rules! panel_kernel {
    ($feat:literal, $nt:literal) => {
        use $crate::quant::int8::panel::{Form, CODE_WORDS, FIELD, ROWS};
        use $crate::quant::int8::BlockQ8;

        /// Tokens per micro-kernel.
        const NT: usize = $nt;

        /// The codes of a panel block as its eight 64-byte groups, and its per-row fields.
        #[inline(always)]
        fn split_unit(unit: &[f32]) -> Option<(&[[u8; 64]; 8], &[f32])> {
            let (codes, fields) = unit.split_at_checked(CODE_WORDS)?;
            let codes: &[u8] = bytemuck::cast_slice(codes);
            Some((codes.as_chunks::<64>().0.try_into().ok()?, fields))
        }

        /// The `PARTS` vectors of a panel group or field.
        #[inline(always)]
        fn parts<V: Copy>(f: impl Fn(usize) -> V) -> [V; PARTS] {
            let mut v = [f(0); PARTS];
            for (p, v) in v.iter_mut().enumerate().skip(1) {
                *v = f(p);
            }
            v
        }

        /// One sub-block of `N` groups (groups `g0 ..` of the tokens' blocks `xb`, sums of half
        /// `half`) for `T` tokens: the exact integer sums, starting at `−offset · S` (or 0 where
        /// `prep` re-signs the codes), then scaled into `acc` with the sub-block's per-row fields
        /// `f` (scales, then mins if `MIN`), exactly as the scalar twin does.
        #[target_feature(enable = $feat)]
        #[inline]
        #[allow(clippy::too_many_arguments)]
        fn sub_block<const T: usize, const N: usize, const MIN: bool, const WIDE: bool>(
            codes: &[[u8; 64]; N],
            g0: usize,
            xb: &[&BlockQ8; T],
            half: Option<usize>,
            offset: i32,
            f: &[f32],
            acc: &mut [[VF; PARTS]; T],
        ) {
            let mut ia = [[splat_i(0); PARTS]; T];
            if !(WIDE && RESIGNS) {
                for (a, b) in ia.iter_mut().zip(xb) {
                    *a = [splat_i(offset.wrapping_mul(b.sub_sum(half)).wrapping_neg()); PARTS];
                }
            }
            for (g, group) in codes.iter().enumerate() {
                let w = parts(|p| prep::<WIDE>(codes_of(group, p)));
                for (a, b) in ia.iter_mut().zip(xb) {
                    let xv = match b.group(g0.wrapping_add(g)) {
                        Some(q) => bcast(q),
                        None => splat_i(0),
                    };
                    for (a, w) in a.iter_mut().zip(&w) {
                        *a = dot::<WIDE>(*a, *w, xv);
                    }
                }
            }
            let Some(sc) = f.first_chunk::<FIELD>() else { return };
            let sc = parts(|p| fields_of(sc, p));
            for ((a, i), b) in acc.iter_mut().zip(&ia).zip(xb) {
                let d = splat_f(b.d);
                for ((a, &i), &sc) in a.iter_mut().zip(i).zip(&sc) {
                    *a = add(*a, mul(mul(sc, d), to_f(i)));
                }
            }
            if MIN {
                let Some(mn) = f.get(FIELD..).and_then(|m| m.first_chunk::<FIELD>()) else { return };
                let mn = parts(|p| fields_of(mn, p));
                for (a, b) in acc.iter_mut().zip(xb) {
                    let ms = splat_f(b.d * (b.sub_sum(half) as f32));
                    for (a, &mn) in a.iter_mut().zip(&mn) {
                        *a = add(*a, mul(mn, ms));
                    }
                }
            }
        }

        /// `T` tokens (`x[t]`: the panel's number of blocks each) times the panel; the sums of
        /// rows `0..n_rows` are added to `out[t][..n_rows]`.
        #[target_feature(enable = $feat)]
        #[inline]
        fn tile<const T: usize, const HALVES: bool, const MIN: bool, const WIDE: bool>(
            form: Form,
            panel: &[f32],
            x: [&[BlockQ8]; T],
            out: &mut [&mut [f32]; T],
        ) {
            let words = form.block_words();
            let mut acc = [[zero_f(); PARTS]; T];
            for (j, unit) in panel.chunks_exact(words).enumerate() {
                let Some((codes, fields)) = split_unit(unit) else { break };
                let mut xb = [&BlockQ8::ZERO; T];
                for (b, row) in xb.iter_mut().zip(&x) {
                    let Some(blk) = row.get(j) else { return };
                    *b = blk;
                }
                if HALVES {
                    let [c_lo, c_hi]: &[[[u8; 64]; 4]; 2] = bytemuck::cast_ref(codes);
                    let Some((f_lo, f_hi)) = fields.split_at_checked(form.sub_words()) else { break };
                    sub_block::<T, 4, MIN, WIDE>(c_lo, 0, &xb, Some(0), form.offset, f_lo, &mut acc);
                    sub_block::<T, 4, MIN, WIDE>(c_hi, 4, &xb, Some(1), form.offset, f_hi, &mut acc);
                } else {
                    sub_block::<T, 8, MIN, WIDE>(codes, 0, &xb, None, form.offset, fields, &mut acc);
                }
            }
            for (a, o) in acc.iter().zip(out.iter_mut()) {
                let mut lanes = [0.0f32; ROWS];
                for (v, l) in a.iter().zip(lanes.as_chunks_mut::<LANES>().0) {
                    store(*v, l);
                }
                for (o, l) in o.iter_mut().zip(lanes) {
                    *o += l;
                }
            }
        }

        /// All token tiles of one panel, for one form.
        #[target_feature(enable = $feat)]
        fn run<const HALVES: bool, const MIN: bool, const WIDE: bool>(args: super::Args<'_, '_>) {
            let (form, panel, n_rows, n_blocks, xq, xq_stride, n_tokens, out, out_stride) = args;
            let mut t0 = 0usize;
            while t0 < n_tokens {
                let tn = n_tokens.saturating_sub(t0).min(NT);
                let tn = [8, 4, 2, 1].into_iter().find(|&c| c <= tn && c <= NT).unwrap_or(1);
                let x = |t: usize| {
                    let at = t0.saturating_add(t).saturating_mul(xq_stride);
                    xq.get(at..).and_then(|r| r.get(..n_blocks)).unwrap_or_default()
                };
                // Token t's outputs: `n_rows` floats at (t0 + t)·out_stride, disjoint for
                // distinct t because out_stride ≥ n_rows (validated by the caller).
                let mut rest = out.get_mut(t0.saturating_mul(out_stride)..).unwrap_or_default();
                let mut o = || {
                    let row = core::mem::take(&mut rest);
                    let (head, tail) = row.split_at_mut(out_stride.min(row.len()));
                    rest = tail;
                    head.get_mut(..n_rows.min(ROWS)).unwrap_or_default()
                };
                macro_rules! go {
                    ($t:literal) => {{
                        let mut outs: [&mut [f32]; $t] = core::array::from_fn(|_| o());
                        tile::<$t, HALVES, MIN, WIDE>(form, panel, core::array::from_fn(|t| x(t)), &mut outs)
                    }};
                }
                match tn {
                    8 => go!(8),
                    4 => go!(4),
                    2 => go!(2),
                    _ => go!(1),
                }
                t0 = t0.saturating_add(tn);
            }
        }

        /// [`super::Token::panel_tokens`] for this ISA.
        ///
        /// # Safety
        /// The CPU must support the enabled features.
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn panel_tokens(args: super::Args<'_, '_>) {
            let form = args.0;
            match (form.halves, form.has_min, form.wide) {
                (false, false, false) => run::<false, false, false>(args),
                (false, true, _) => run::<false, true, false>(args),
                (false, false, true) => run::<false, false, true>(args),
                (true, true, _) => run::<true, true, false>(args),
                (true, false, _) => run::<true, false, false>(args),
            }
        }
    };
}
use panel_kernel;
