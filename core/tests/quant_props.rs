//! Properties of the quantization engine over random inputs (quickcheck):
//!
//! * every SIMD dequantizer equals its scalar twin bit for bit, on random blocks whose f16 scale
//!   fields take the awkward values (zero, ±0, subnormals, ±max, non-finite);
//! * every SIMD fused kernel (`matmul_acc`, `gemm_f32_acc`, `dot`, `axpy`) agrees with the scalar
//!   one within `1e-5 · Σ|w·x|`, for 1…64 tokens, odd shapes, strides and scratch sizes;
//! * the scalar `matmul_acc` agrees with a plain f64 dequantize-then-dot reference.

mod common;

use common::{below, bits_equal, f16_fields, unit};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use stepembed_core::gguf::GgmlType;
use stepembed_core::quant::{is_computable, Isa, Kernels};

/// The SIMD tables this CPU and target support (tested against the scalar one).
fn simd_kernels() -> Vec<Kernels> {
    Isa::ALL.into_iter().filter(|&isa| isa != Isa::Scalar).filter_map(Kernels::with_isa).collect()
}

fn computable() -> Vec<GgmlType> {
    GgmlType::ALL.iter().copied().filter(|&t| is_computable(t)).collect()
}

/// An f16 bit pattern: often an awkward one, otherwise random (finite only if `finite`).
fn f16_bits(g: &mut Gen, finite: bool) -> u16 {
    const SPECIAL: &[u16] =
        &[0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x83ff, 0x0400, 0x7bff, 0xfbff, 0x3c00, 0xbc00];
    const NON_FINITE: &[u16] = &[0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xfe00];
    match below(g, 8) {
        0..=2 => *g.choose(SPECIAL).unwrap(),
        3 if !finite => *g.choose(NON_FINITE).unwrap(),
        _ => loop {
            let b = u16::arbitrary(g);
            if !finite || b & 0x7c00 != 0x7c00 {
                return b;
            }
        },
    }
}

/// Random bytes of `n_blocks` blocks of `ty` (for plain float types: `n_blocks` values).
///
/// With `bounded`, values stay finite and moderate (|w| ≲ 1e8) so that sums cannot overflow.
fn random_blocks(g: &mut Gen, ty: GgmlType, n_blocks: usize, bounded: bool) -> Vec<u8> {
    let bb = ty.block_bytes() as usize;
    let mut bytes: Vec<u8> = (0..n_blocks * bb).map(|_| u8::arbitrary(g)).collect();
    match ty {
        GgmlType::F32 => {
            for c in bytes.chunks_exact_mut(4) {
                let v = if bounded { unit(g) * 1e4 } else { f32::from_bits(u32::arbitrary(g)) };
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in bytes.chunks_exact_mut(2) {
                c.copy_from_slice(&f16_bits(g, bounded).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for c in bytes.chunks_exact_mut(2) {
                let bits = if bounded { ((unit(g) * 1e4).to_bits() >> 16) as u16 } else { u16::arbitrary(g) };
                c.copy_from_slice(&bits.to_le_bytes());
            }
        }
        _ => {
            for block in bytes.chunks_exact_mut(bb) {
                for &off in f16_fields(ty) {
                    block[off..off + 2].copy_from_slice(&f16_bits(g, bounded).to_le_bytes());
                }
            }
        }
    }
    bytes
}

#[derive(Clone, Debug)]
struct DecodeCase {
    ty: GgmlType,
    bytes: Vec<u8>,
}

impl Arbitrary for DecodeCase {
    fn arbitrary(g: &mut Gen) -> Self {
        let ty = *g.choose(&computable()).unwrap();
        // Plain float types: up to 70 values, so the SIMD tails are exercised.
        let n = if ty.block_elems() == 1 { 1 + below(g, 70) } else { 1 + below(g, 6) };
        DecodeCase { ty, bytes: random_blocks(g, ty, n, false) }
    }
}

fn prop_dequantize_simd_equals_scalar(c: DecodeCase) -> TestResult {
    let n = c.bytes.len() / c.ty.block_bytes() as usize * c.ty.block_elems() as usize;
    let mut want = vec![0f32; n];
    Kernels::scalar().dequantize(c.ty, &c.bytes, &mut want).unwrap();
    for k in simd_kernels() {
        let mut got = vec![1234.5f32; n + 3];
        assert_eq!(k.dequantize(c.ty, &c.bytes, &mut got).unwrap(), n);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            if !bits_equal(*a, *b) {
                return TestResult::error(format!(
                    "{:?} {:?} element {i}: {a:e} ({:#x}) vs scalar {b:e} ({:#x})",
                    k.isa(),
                    c.ty,
                    a.to_bits(),
                    b.to_bits()
                ));
            }
        }
        // Nothing written past the blocks.
        if got[n..].iter().any(|&v| v != 1234.5) {
            return TestResult::error(format!("{:?} {:?} wrote past the end", k.isa(), c.ty));
        }
    }
    TestResult::passed()
}

#[test]
fn dequantize_simd_equals_scalar() {
    QuickCheck::new()
        .tests(3000)
        .quickcheck(prop_dequantize_simd_equals_scalar as fn(DecodeCase) -> TestResult);
}

/// A `matmul_acc` call: weights, tokens, output and scratch with odd strides and sizes.
#[derive(Clone, Debug)]
struct MatmulCase {
    ty: GgmlType,
    /// Weight bytes start at `w[w_off..]` (tests unaligned F32 rows too).
    w: Vec<u8>,
    w_off: usize,
    n_rows: usize,
    k: usize,
    x: Vec<f32>,
    x_stride: usize,
    n_tokens: usize,
    out: Vec<f32>,
    out_stride: usize,
    scratch: usize,
}

impl Arbitrary for MatmulCase {
    fn arbitrary(g: &mut Gen) -> Self {
        let ty = *g.choose(&computable()).unwrap();
        let k = if ty.block_elems() == 1 {
            1 + below(g, 100)
        } else {
            ty.block_elems() as usize * (1 + below(g, if ty.block_elems() == 32 { 8 } else { 3 }))
        };
        let n_rows = 1 + below(g, 9);
        let n_tokens = 1 + below(g, 64);
        let row_blocks = k / ty.block_elems() as usize;
        let w_off = below(g, 4);
        let mut w: Vec<u8> = (0..w_off).map(|_| u8::arbitrary(g)).collect();
        w.extend(random_blocks(g, ty, n_rows * row_blocks, true));
        let x_stride = k + below(g, 6);
        let out_stride = n_rows + below(g, 4);
        let x = (0..(n_tokens - 1) * x_stride + k).map(|_| unit(g)).collect();
        let out = (0..(n_tokens - 1) * out_stride + n_rows + below(g, 3)).map(|_| unit(g)).collect();
        let scratch = k + below(g, 3 * k + 1);
        MatmulCase { ty, w, w_off, n_rows, k, x, x_stride, n_tokens, out, out_stride, scratch }
    }
}

impl MatmulCase {
    fn run(&self, kern: &Kernels) -> Vec<f32> {
        let mut out = self.out.clone();
        let mut scratch = vec![f32::NAN; self.scratch];
        kern.matmul_acc(
            self.ty,
            &self.w[self.w_off..],
            self.n_rows,
            self.k,
            &self.x,
            self.x_stride,
            self.n_tokens,
            &mut out,
            self.out_stride,
            &mut scratch,
        )
        .unwrap();
        out
    }

    /// The dequantized weight rows (scalar path, f64).
    fn weights(&self) -> Vec<f64> {
        let mut w = vec![0f32; self.n_rows * self.k];
        Kernels::scalar().dequantize(self.ty, &self.w[self.w_off..], &mut w).unwrap();
        w.into_iter().map(f64::from).collect()
    }

    /// `(reference value, Σ|w·x|)` for each output, or `None` for an output the call must not
    /// touch.
    fn reference(&self) -> Vec<Option<(f64, f64)>> {
        let w = self.weights();
        let mut r = vec![None; self.out.len()];
        for t in 0..self.n_tokens {
            let x = &self.x[t * self.x_stride..][..self.k];
            for row in 0..self.n_rows {
                let wr = &w[row * self.k..][..self.k];
                let dot: f64 = wr.iter().zip(x).map(|(a, &b)| a * f64::from(b)).sum();
                let mag: f64 = wr.iter().zip(x).map(|(a, &b)| (a * f64::from(b)).abs()).sum();
                let i = t * self.out_stride + row;
                r[i] = Some((f64::from(self.out[i]) + dot, mag));
            }
        }
        r
    }
}

/// Whether `got` agrees with `want` within `1e-5 · Σ|w·x|` (plus the rounding of the
/// pre-filled value it was added to).
fn close(got: f32, want: f64, mag: f64, prefill: f32) -> bool {
    (f64::from(got) - want).abs() <= 1e-5 * mag + 1e-6 * f64::from(prefill.abs()) + 1e-30
}

fn check_against(case: &MatmulCase, got: &[f32], want: &[Option<(f64, f64)>], what: &str) -> TestResult {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        match w {
            None if g.to_bits() != case.out[i].to_bits() => {
                return TestResult::error(format!("{what}: wrote output {i} it does not own"));
            }
            Some((want, mag)) if !close(*g, *want, *mag, case.out[i]) => {
                return TestResult::error(format!(
                    "{what} {:?} n_rows {} k {} n_tokens {}: out[{i}] {g} vs {want} (Σ|w·x| {mag})",
                    case.ty, case.n_rows, case.k, case.n_tokens
                ));
            }
            _ => {}
        }
    }
    TestResult::passed()
}

fn prop_matmul_simd_close_to_scalar(c: MatmulCase) -> TestResult {
    let scalar = c.run(&Kernels::scalar());
    let w = c.weights();
    for kern in simd_kernels() {
        let got = c.run(&kern);
        for (i, (g, s)) in got.iter().zip(&scalar).enumerate() {
            let untouched = g.to_bits() == c.out[i].to_bits() && s.to_bits() == c.out[i].to_bits();
            if untouched {
                continue;
            }
            let (t, row) = (i / c.out_stride, i % c.out_stride);
            if row >= c.n_rows || t >= c.n_tokens {
                return TestResult::error(format!("{:?}: wrote output {i} it does not own", kern.isa()));
            }
            let x = &c.x[t * c.x_stride..][..c.k];
            let mag: f64 = w[row * c.k..][..c.k].iter().zip(x).map(|(a, &b)| (a * f64::from(b)).abs()).sum();
            if !close(*g, f64::from(*s), mag, c.out[i]) {
                return TestResult::error(format!(
                    "{:?} {:?} n_rows {} k {} n_tokens {}: out[{i}] {g} vs scalar {s} (Σ|w·x| {mag})",
                    kern.isa(),
                    c.ty,
                    c.n_rows,
                    c.k,
                    c.n_tokens
                ));
            }
        }
    }
    TestResult::passed()
}

#[test]
fn matmul_simd_close_to_scalar() {
    QuickCheck::new().tests(600).quickcheck(prop_matmul_simd_close_to_scalar as fn(MatmulCase) -> TestResult);
}

fn prop_scalar_matmul_matches_f64_reference(c: MatmulCase) -> TestResult {
    let got = c.run(&Kernels::scalar());
    check_against(&c, &got, &c.reference(), "scalar")
}

#[test]
fn scalar_matmul_matches_f64_reference() {
    QuickCheck::new()
        .tests(400)
        .quickcheck(prop_scalar_matmul_matches_f64_reference as fn(MatmulCase) -> TestResult);
}

/// An f32 GEMM call (`gemm_f32_acc`), with k long enough at times to be split into k-blocks.
#[derive(Clone, Debug)]
struct GemmCase {
    w: Vec<f32>,
    w_stride: usize,
    n_rows: usize,
    k: usize,
    x: Vec<f32>,
    x_stride: usize,
    n_tokens: usize,
    out: Vec<f32>,
    out_stride: usize,
}

impl Arbitrary for GemmCase {
    fn arbitrary(g: &mut Gen) -> Self {
        let k = if below(g, 5) == 0 { 1000 + below(g, 2200) } else { 1 + below(g, 200) };
        let n_rows = 1 + below(g, 13);
        let n_tokens = 1 + below(g, 20);
        let w_stride = k + below(g, 5);
        let x_stride = k + below(g, 5);
        let out_stride = n_rows + below(g, 5);
        let w = (0..(n_rows - 1) * w_stride + k).map(|_| unit(g)).collect();
        let x = (0..(n_tokens - 1) * x_stride + k).map(|_| unit(g)).collect();
        let out = (0..(n_tokens - 1) * out_stride + n_rows).map(|_| unit(g)).collect();
        GemmCase { w, w_stride, n_rows, k, x, x_stride, n_tokens, out, out_stride }
    }
}

fn prop_gemm_simd_close_to_reference(c: GemmCase) -> TestResult {
    let mut kernels = simd_kernels();
    kernels.push(Kernels::scalar());
    for kern in kernels {
        let mut out = c.out.clone();
        kern.gemm_f32_acc(
            &c.w,
            c.w_stride,
            c.n_rows,
            c.k,
            &c.x,
            c.x_stride,
            c.n_tokens,
            &mut out,
            c.out_stride,
        )
        .unwrap();
        for t in 0..c.n_tokens {
            for r in 0..c.out_stride {
                let i = t * c.out_stride + r;
                if i >= out.len() {
                    break;
                }
                if r >= c.n_rows {
                    if out[i].to_bits() != c.out[i].to_bits() {
                        return TestResult::error(format!("{:?} wrote padding {i}", kern.isa()));
                    }
                    continue;
                }
                let (w, x) = (&c.w[r * c.w_stride..][..c.k], &c.x[t * c.x_stride..][..c.k]);
                let want: f64 = w.iter().zip(x).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
                let mag: f64 = w.iter().zip(x).map(|(&a, &b)| f64::from(a * b).abs()).sum();
                if !close(out[i], f64::from(c.out[i]) + want, mag, c.out[i]) {
                    return TestResult::error(format!(
                        "{:?} k {} rows {} tokens {}: out[{i}] {} vs {}",
                        kern.isa(),
                        c.k,
                        c.n_rows,
                        c.n_tokens,
                        out[i],
                        f64::from(c.out[i]) + want
                    ));
                }
            }
        }
    }
    TestResult::passed()
}

#[test]
fn gemm_f32_matches_f64_reference_on_every_isa() {
    QuickCheck::new().tests(300).quickcheck(prop_gemm_simd_close_to_reference as fn(GemmCase) -> TestResult);
}

#[derive(Clone, Debug)]
struct VecPair {
    a: Vec<f32>,
    b: Vec<f32>,
    alpha: f32,
}

impl Arbitrary for VecPair {
    fn arbitrary(g: &mut Gen) -> Self {
        let n = below(g, 300);
        VecPair {
            a: (0..n).map(|_| unit(g)).collect(),
            b: (0..n).map(|_| unit(g)).collect(),
            alpha: unit(g) * 3.0,
        }
    }
}

fn prop_dot_and_axpy(c: VecPair) -> TestResult {
    let want_dot: f64 = c.a.iter().zip(&c.b).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
    let mag: f64 = c.a.iter().zip(&c.b).map(|(&a, &b)| f64::from(a * b).abs()).sum();
    let mut kernels = simd_kernels();
    kernels.push(Kernels::scalar());
    for k in kernels {
        let d = k.dot(&c.a, &c.b).unwrap();
        if (f64::from(d) - want_dot).abs() > 1e-5 * mag + 1e-30 {
            return TestResult::error(format!("{:?} dot {d} vs {want_dot}", k.isa()));
        }
        let mut y = c.b.clone();
        k.axpy(c.alpha, &c.a, &mut y).unwrap();
        for ((&y, &a), &b) in y.iter().zip(&c.a).zip(&c.b) {
            let want = f64::from(b) + f64::from(c.alpha) * f64::from(a);
            let tol = 1e-6 * (f64::from(b).abs() + f64::from(c.alpha * a).abs()) + 1e-30;
            if (f64::from(y) - want).abs() > tol {
                return TestResult::error(format!("{:?} axpy {y} vs {want}", k.isa()));
            }
        }
    }
    TestResult::passed()
}

#[test]
fn dot_and_axpy_match_f64_on_every_isa() {
    QuickCheck::new().tests(500).quickcheck(prop_dot_and_axpy as fn(VecPair) -> TestResult);
}

/// The fused kernel at the engine's real shapes gives the same results whatever the scratch
/// size (one decoded row at a time, a partial tile, or the preferred tile).
#[test]
fn matmul_result_does_not_depend_on_scratch_size() {
    let mut g = Gen::new(100);
    let (n_rows, k, n_tokens) = (70, 768, 13);
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::F16] {
        let row_blocks = k / ty.block_elems() as usize;
        let w = random_blocks(&mut g, ty, n_rows * row_blocks, true);
        let x: Vec<f32> = (0..n_tokens * k).map(|_| unit(&mut g)).collect();
        for kern in [Kernels::scalar(), Kernels::detect()] {
            let mut results = Vec::new();
            for scratch in [k, 5 * k + 7, stepembed_core::quant::matmul_scratch_len(k).1, 100 * k] {
                let mut out = vec![0.5f32; n_tokens * n_rows];
                let mut s = vec![0f32; scratch];
                kern.matmul_acc(ty, &w, n_rows, k, &x, k, n_tokens, &mut out, n_rows, &mut s).unwrap();
                results.push(out);
            }
            for r in &results[1..] {
                assert_eq!(r, &results[0], "{ty:?} {:?}", kern.isa());
            }
        }
    }
}
