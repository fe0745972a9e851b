//! Fast mode (int8 activations, integer dot products on the weight codes):
//!
//! * the quantizer: `|x − d·q| ≤ d/2`, `|q| ≤ 127`, the block maximum maps to ±127, sums, zero,
//!   subnormal and non-finite blocks;
//! * the scalar twin equals an f64 reference `Σ dequantize(W)[i] · d·q[i]` (the gguf-py-exact
//!   f32 dequantization times the dequantized int8 activations) within f32 rounding, for every
//!   quantized type;
//! * every SIMD path equals the scalar twin bit for bit (quickcheck over types, shapes, strides,
//!   token counts, f16 max / min / subnormal block scales, all-±127 activations, all-max codes);
//! * the refined quantizer (a residual pass where a token's int8 row is off by more than
//!   `REFINE_ABOVE`) and the product over blocks and residual, on every path;
//! * the error contract;
//! * accuracy: int8 vs f32 `matmul_acc` and vs f64 on the fixture models' weights with Gaussian
//!   activations, per type (printed with `--nocapture`).

mod common;

use common::{below, bits_equal, f16_fields, read_fixture, tensors, unit};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use stepembed_core::gguf::{GgmlType, TensorInfo};
use stepembed_core::quant::{
    is_computable, matmul_q8_scratch_len, matmul_scratch_len, q8_blocks, quantize_q8, quantize_q8_refined,
    BlockQ8, Kernels, Q8Isa, REFINE_ABOVE,
};
use stepembed_core::{Error, Malformed, Unsupported};

/// The twelve quantized computable types.
fn quantized() -> Vec<GgmlType> {
    GgmlType::ALL.iter().copied().filter(|&t| is_computable(t) && t.block_elems() > 1).collect()
}

/// The scalar table with each integer path this CPU runs, scalar first.
fn q8_tables() -> Vec<Kernels> {
    Q8Isa::ALL.into_iter().filter_map(|isa| Kernels::scalar().with_q8_isa(isa)).collect()
}

/// The cross-compiled runs (.ci/cross) test the target's integer path, not just the scalar one.
#[test]
fn the_targets_integer_path_is_chosen() {
    if let Some(isa) = common::target_simd() {
        assert_eq!(Kernels::detect().q8_isa().name(), isa.name());
        assert!(q8_tables().iter().any(|k| k.q8_isa().name() == isa.name()));
    }
}

/// How block scales are drawn.
#[derive(Clone, Copy, Debug)]
enum Scales {
    /// Random moderate values (|s| ≤ 1).
    Moderate,
    /// Often an extreme finite value: ±65504, ±2⁻¹⁴ (smallest normal), subnormals, zeros.
    Extreme,
}

fn f16_scale(g: &mut Gen, mode: Scales) -> u16 {
    const EXTREME: &[u16] = &[0x7bff, 0xfbff, 0x0400, 0x8400, 0x0001, 0x8001, 0x03ff, 0x0000, 0x8000];
    match mode {
        Scales::Extreme if below(g, 2) == 0 => *g.choose(EXTREME).unwrap(),
        _ => half::f16::from_f32(unit(g)).to_bits(),
    }
}

/// Random weight bytes of `n_blocks` blocks of `ty`; with `all_max`, every code byte is 0xff
/// (the largest codes), else random.
fn weights(g: &mut Gen, ty: GgmlType, n_blocks: usize, mode: Scales, all_max: bool) -> Vec<u8> {
    let bb = ty.block_bytes() as usize;
    let mut bytes: Vec<u8> =
        (0..n_blocks * bb).map(|_| if all_max { 0xff } else { u8::arbitrary(g) }).collect();
    for block in bytes.chunks_exact_mut(bb) {
        for &off in f16_fields(ty) {
            block[off..off + 2].copy_from_slice(&f16_scale(g, mode).to_le_bytes());
        }
    }
    bytes
}

fn quantize(x: &[f32], x_stride: usize, k: usize, n_tokens: usize) -> Vec<BlockQ8> {
    let mut q = vec![BlockQ8::ZERO; q8_blocks(k, n_tokens).unwrap()];
    quantize_q8(x, x_stride, k, n_tokens, &mut q).unwrap();
    q
}

// ---------------------------------------------------------------------------------------------
// The quantizer.

#[test]
fn quantizer_rounds_to_nearest_within_half_a_step() {
    let mut g = Gen::new(100);
    for _ in 0..500 {
        let scale = [1e-30f32, 1e-3, 1.0, 1e30][below(&mut g, 4)];
        let x: Vec<f32> = (0..96).map(|_| unit(&mut g) * scale).collect();
        let q = quantize(&x, 96, 96, 1);
        for (b, xs) in q.iter().zip(x.chunks_exact(32)) {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = b.scale();
            assert_eq!(d, amax / 127.0);
            let vals = b.values();
            assert!(vals.iter().all(|&v| v >= -127));
            // The largest magnitude maps to ±127.
            let i = xs.iter().position(|v| v.abs() == amax).unwrap();
            assert_eq!(vals[i].unsigned_abs(), 127);
            // Each value is the nearest step of the stored (f32) scale, unless that scale is
            // subnormal: then the steps are those of amax / 127, which the stored scale is off
            // by up to 2^-150, carried by each of up to 127 steps.
            let scale_rounding = if d.is_normal() { 0.0 } else { 127.0 * 2f64.powi(-150) };
            for (&v, &xv) in vals.iter().zip(xs) {
                let err = (f64::from(xv) - f64::from(d) * f64::from(v)).abs();
                assert!(err <= 0.5 * f64::from(d) * (1.0 + 1e-6) + scale_rounding, "{xv} -> {v} · {d}");
            }
        }
    }
}

#[test]
fn quantizer_handles_zero_subnormal_and_non_finite_blocks() {
    // All zeros: d = 0, values 0.
    let q = quantize(&[0.0; 32], 32, 32, 1);
    assert_eq!((q[0].scale(), *q[0].values()), (0.0, [0i8; 32]));
    // Subnormal values quantize like any others (the f32 reciprocal would overflow).
    let tiny: Vec<f32> =
        (0..32).map(|i| f32::from_bits(1000 + 37 * i as u32) * if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
    let q = quantize(&tiny, 32, 32, 1);
    assert!(q[0].scale() > 0.0);
    assert_eq!(q[0].values()[31], -127);
    // Values whose d underflows to zero become zeros.
    let q = quantize(&[f32::from_bits(1); 32], 32, 32, 1);
    assert_eq!((q[0].scale(), q[0].values()[0]), (0.0, 0));
    // NaN and ±infinity are errors, wherever they are.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = vec![1.0f32; 64 * 3];
        x[64 + 40] = bad;
        let mut q = vec![BlockQ8::ZERO; 6];
        let e = quantize_q8(&x, 64, 64, 3, &mut q).unwrap_err();
        assert_eq!(e, Error::NonFinite { stage: "quantize", layer: None });
    }
}

#[test]
fn quantizer_checks_sizes() {
    let x = vec![0.5f32; 200];
    let mut q = vec![BlockQ8::ZERO; 8];
    let not_blocks = |k: u64| Error::Malformed {
        what: Malformed::RowNotBlockMultiple { ty: GgmlType::Q8_0, ne0: k },
        offset: 0,
    };
    assert_eq!(quantize_q8(&x, 48, 48, 1, &mut q), Err(not_blocks(48)));
    assert_eq!(quantize_q8(&x, 32, 64, 1, &mut q), Err(Error::BufferTooSmall { needed: 64, given: 32 }));
    assert_eq!(quantize_q8(&x, 100, 64, 3, &mut q), Err(Error::BufferTooSmall { needed: 264, given: 200 }));
    assert_eq!(quantize_q8(&x, 64, 64, 3, &mut q[..5]), Err(Error::BufferTooSmall { needed: 6, given: 5 }));
    assert_eq!(q8_blocks(96, 7), Some(21));
    assert_eq!(q8_blocks(95, 7), None);
    assert_eq!(q8_blocks(usize::MAX - 31, 64), None);
    // Strided rows: row t's blocks come from x[t·stride ..].
    let x: Vec<f32> = (0..100).map(|i| i as f32).collect();
    let q = quantize(&x, 50, 32, 2);
    assert_eq!(q[1].values()[31], 127);
    assert_eq!(q[1].scale(), 81.0 / 127.0);
}

// ---------------------------------------------------------------------------------------------
// The scalar twin against an f64 reference.

/// `Σ_i W[r][i] · d·q[t][i]` in f64, with W dequantized exactly (the gguf-py-exact decoder), and
/// `Σ |W · d·q|` for the tolerance.
fn reference(
    ty: GgmlType,
    w: &[u8],
    n_rows: usize,
    k: usize,
    xq: &[BlockQ8],
    n_tokens: usize,
) -> Vec<(f64, f64)> {
    let mut wf = vec![0f32; n_rows * k];
    Kernels::scalar()
        .dequantize(ty, &w[..n_rows * ty.row_bytes(k as u64).unwrap() as usize], &mut wf)
        .unwrap();
    let nb = k / 32;
    let mut out = Vec::new();
    for t in 0..n_tokens {
        let x: Vec<f64> = xq[t * nb..(t + 1) * nb]
            .iter()
            .flat_map(|b| b.values().map(|v| f64::from(b.scale()) * f64::from(v)))
            .collect();
        for r in 0..n_rows {
            let row = &wf[r * k..(r + 1) * k];
            let (s, a) = row
                .iter()
                .zip(&x)
                .fold((0f64, 0f64), |(s, a), (&w, &x)| (s + f64::from(w) * x, a + (f64::from(w) * x).abs()));
            out.push((s, a));
        }
    }
    out
}

#[test]
fn scalar_twin_equals_the_f64_reference() {
    let mut g = Gen::new(100);
    let kern = Kernels::scalar();
    for ty in quantized() {
        for _ in 0..40 {
            let be = ty.block_elems() as usize;
            let k = be * (1 + below(&mut g, if be == 32 { 12 } else { 3 }));
            let n_rows = 1 + below(&mut g, 20);
            let n_tokens = 1 + below(&mut g, 5);
            let w = weights(&mut g, ty, n_rows * k / be, Scales::Moderate, false);
            let x: Vec<f32> = (0..n_tokens * k).map(|_| unit(&mut g)).collect();
            let xq = quantize(&x, k, k, n_tokens);
            let mut out = vec![0f32; n_tokens * n_rows];
            let mut scratch = vec![0f32; matmul_q8_scratch_len(k)];
            kern.matmul_q8_acc(ty, &w, n_rows, k, &xq, k / 32, n_tokens, &mut out, n_rows, &mut scratch)
                .unwrap();
            for (i, (&got, &(want, abs))) in
                out.iter().zip(&reference(ty, &w, n_rows, k, &xq, n_tokens)).enumerate()
            {
                let tol = 1e-5 * abs + 1e-30;
                assert!(
                    (f64::from(got) - want).abs() <= tol,
                    "{ty:?} k {k} output {i}: {got} vs f64 {want} (Σ|w·x| {abs})"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The residual pass.

/// `n_tokens` rows of `k` values: even tokens well spread (uniform), odd ones with one channel
/// per block (±127 δ) that sets an int8 step δ too coarse for the other 31, which lie near
/// half-steps (`(m + 0.5) δ`, |m| < 40: about δ/2 lost on each, a relative error near 0.02).
fn mixed_rows(g: &mut Gen, k: usize, n_tokens: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n_tokens * k).map(|_| unit(g)).collect();
    for (t, row) in x.chunks_exact_mut(k).enumerate() {
        if t % 2 == 1 {
            let delta = 0.01 + unit(g).abs();
            for (i, v) in row.iter_mut().enumerate() {
                let m = (below(g, 80) as f32 - 40.0) + 0.5 + 0.05 * unit(g);
                *v = if i % 32 == 0 { 127.0 * delta } else { m * delta };
            }
        }
    }
    x
}

#[test]
fn refined_quantizer_adds_a_residual_exactly_where_a_row_loses_too_much() {
    let mut g = Gen::new(100);
    for _ in 0..200 {
        let k = 32 * (1 + below(&mut g, 12));
        let n_tokens = 1 + below(&mut g, 6);
        let x = mixed_rows(&mut g, k, n_tokens);
        let blocks = q8_blocks(k, n_tokens).unwrap();
        // The residual region starts with nonzero blocks: the quantizer must clear them.
        let (mut xq, mut xr) =
            (vec![BlockQ8::ZERO; blocks], vec![quantize(&[1.0; 32], 32, 32, 1)[0]; blocks]);
        let refined = quantize_q8_refined(&x, k, k, n_tokens, &mut xq, &mut xr).unwrap();
        // The first pass is quantize_q8's.
        assert_eq!(xq, quantize(&x, k, k, n_tokens));
        let mut count = 0;
        for t in 0..n_tokens {
            let row = &x[t * k..(t + 1) * k];
            let (q, r) = (&xq[t * k / 32..(t + 1) * k / 32], &xr[t * k / 32..(t + 1) * k / 32]);
            let value = |b: &BlockQ8, i: usize| f64::from(b.scale()) * f64::from(b.values()[i]);
            let (mut err, mut norm) = (0f64, 0f64);
            for (i, &v) in row.iter().enumerate() {
                err += (f64::from(v) - value(&q[i / 32], i % 32)).powi(2);
                norm += f64::from(v).powi(2);
            }
            let above = err > REFINE_ABOVE * REFINE_ABOVE * norm;
            // Well-spread rows stay below the threshold; the spiky ones exceed it.
            assert_eq!(above, t % 2 == 1, "token {t}: relative error {}", (err / norm).sqrt());
            if !above {
                assert!(r.iter().all(|b| *b == BlockQ8::ZERO), "token {t}: a residual below the threshold");
                continue;
            }
            count += 1;
            for (i, &v) in row.iter().enumerate() {
                let (b1, b2) = (&q[i / 32], &r[i / 32]);
                // The residual's step is at most 1/254 of the first's, and x̂ + r̂ is within
                // half of it (plus the f32 rounding of the residual and of its scale).
                assert!(f64::from(b2.scale()) <= f64::from(b1.scale()) / 254.0 * (1.0 + 1e-6));
                let left = f64::from(v) - value(b1, i % 32) - value(b2, i % 32);
                let tol = 0.5 * f64::from(b2.scale()) * (1.0 + 1e-6) + 2e-7 * f64::from(b1.scale());
                assert!(left.abs() <= tol, "token {t} value {i}: {v} left {left}");
            }
        }
        assert_eq!(refined, count);
        // Each token's blocks depend on its row only: one token at a time gives the same.
        for t in 0..n_tokens {
            let (mut q1, mut r1) = (vec![BlockQ8::ZERO; k / 32], vec![BlockQ8::ZERO; k / 32]);
            quantize_q8_refined(&x[t * k..], k, k, 1, &mut q1, &mut r1).unwrap();
            assert_eq!(
                (&q1[..], &r1[..]),
                (&xq[t * k / 32..(t + 1) * k / 32], &xr[t * k / 32..(t + 1) * k / 32])
            );
        }
    }
    // Its errors: those of quantize_q8, and a residual region too small.
    let x = vec![1.0f32; 64];
    let (mut q, mut r) = (vec![BlockQ8::ZERO; 2], vec![BlockQ8::ZERO; 1]);
    assert_eq!(
        quantize_q8_refined(&x, 64, 64, 1, &mut q, &mut r),
        Err(Error::BufferTooSmall { needed: 2, given: 1 })
    );
    let mut r = vec![BlockQ8::ZERO; 2];
    let nan = [f32::NAN; 64];
    assert_eq!(
        quantize_q8_refined(&nan, 64, 64, 1, &mut q, &mut r),
        Err(Error::NonFinite { stage: "quantize", layer: None })
    );
}

#[test]
fn product_over_blocks_and_residual_is_both_products_on_every_path() {
    let mut g = Gen::new(100);
    for ty in quantized() {
        let (mut e1, mut e2) = (0f64, 0f64);
        for _ in 0..10 {
            let be = ty.block_elems() as usize;
            let k = be * (1 + below(&mut g, if be == 32 { 8 } else { 2 }));
            let n_rows = 1 + below(&mut g, 40);
            let n_tokens = 1 + below(&mut g, 7);
            let w = weights(&mut g, ty, n_rows * k / be, Scales::Moderate, false);
            let x = mixed_rows(&mut g, k, n_tokens);
            let blocks = q8_blocks(k, n_tokens).unwrap();
            let (mut xq, mut xr) = (vec![BlockQ8::ZERO; blocks], vec![BlockQ8::ZERO; blocks]);
            quantize_q8_refined(&x, k, k, n_tokens, &mut xq, &mut xr).unwrap();
            let mut scratch = vec![0f32; matmul_q8_scratch_len(k)];
            let start: Vec<f32> = (0..n_tokens * n_rows).map(|_| unit(&mut g)).collect();
            // The reference: the scalar product over the blocks, then over each refined token's
            // residual alone.
            let scalar = Kernels::scalar();
            let mut want = start.clone();
            scalar
                .matmul_q8_acc(ty, &w, n_rows, k, &xq, k / 32, n_tokens, &mut want, n_rows, &mut scratch)
                .unwrap();
            for t in (1..n_tokens).step_by(2) {
                let (xr_t, o) = (&xr[t * k / 32..], &mut want[t * n_rows..]);
                scalar.matmul_q8_acc(ty, &w, n_rows, k, xr_t, k / 32, 1, o, n_rows, &mut scratch).unwrap();
            }
            for kern in q8_tables() {
                let mut got = start.clone();
                kern.matmul_q8r_acc(
                    ty,
                    &w,
                    n_rows,
                    k,
                    (&xq, &xr),
                    k / 32,
                    n_tokens,
                    &mut got,
                    n_rows,
                    &mut scratch,
                )
                .unwrap();
                let same = got.iter().zip(&want).all(|(&a, &b)| bits_equal(a, b));
                assert!(same, "{ty:?} {} k {k} rows {n_rows} tokens {n_tokens}", kern.q8_isa().name());
            }
            // On the spiky tokens, x̂ + r̂ is closer to x than x̂ alone in the product: the f64
            // products of the decoded blocks (the kernels equal them up to their f32 sums, which
            // matmul_q8_error_contract bounds, and which dominate when the outputs are large).
            let mut wf = vec![0f32; n_rows * k];
            scalar.dequantize(ty, &w[..n_rows * ty.row_bytes(k as u64).unwrap() as usize], &mut wf).unwrap();
            let decoded = |b: &[BlockQ8], i: usize| {
                f64::from(b[i / 32].scale()) * f64::from(b[i / 32].values()[i % 32])
            };
            for t in (1..n_tokens).step_by(2) {
                let (q, r) = (&xq[t * k / 32..], &xr[t * k / 32..]);
                for row in wf.chunks_exact(k) {
                    let dot =
                        |v: &dyn Fn(usize) -> f64| (0..k).map(|i| f64::from(row[i]) * v(i)).sum::<f64>();
                    let exact = dot(&|i| f64::from(x[t * k + i]));
                    e1 += (dot(&|i| decoded(q, i)) - exact).powi(2);
                    e2 += (dot(&|i| decoded(q, i) + decoded(r, i)) - exact).powi(2);
                }
            }
        }
        // Over all ten cases (one case alone may have one row and one spiky token, whose error
        // with x̂ alone can be near zero by chance): x̂ + r̂'s error is 1/254 of x̂'s per value.
        assert!(e2 * 100.0 <= e1, "{ty:?}: residual error {e2} vs {e1}");
    }
}

// ---------------------------------------------------------------------------------------------
// Every SIMD path equals the scalar twin bit for bit.

/// One `matmul_q8_acc` call with odd shapes, strides and awkward values.
#[derive(Clone, Debug)]
struct Case {
    ty: GgmlType,
    w: Vec<u8>,
    n_rows: usize,
    k: usize,
    xq: Vec<BlockQ8>,
    xq_stride: usize,
    n_tokens: usize,
    out: Vec<f32>,
    out_stride: usize,
    scratch: usize,
}

impl Arbitrary for Case {
    fn arbitrary(g: &mut Gen) -> Self {
        let ty = *g.choose(&quantized()).unwrap();
        let be = ty.block_elems() as usize;
        let k = be * (1 + below(g, if be == 32 { 10 } else { 3 }));
        let n_rows = 1 + below(g, 40);
        let n_tokens = 1 + below(g, 20);
        let scales = if below(g, 2) == 0 { Scales::Moderate } else { Scales::Extreme };
        let all_max = below(g, 5) == 0;
        let w = weights(g, ty, n_rows * k / be, scales, all_max);
        let nb = k / 32;
        let xq_stride = nb + below(g, 3);
        // Activations: random, or ±1 (every value ±127), with random block magnitudes.
        let pm1 = below(g, 4) == 0;
        let x_len = (n_tokens - 1) * xq_stride * 32 + k;
        let x: Vec<f32> = (0..x_len)
            .map(|i| {
                let m = [1.0f32, 1e-20, 3e4, 1e38][(i / 32 + below(g, 2)) % 4];
                if pm1 {
                    if bool::arbitrary(g) {
                        m
                    } else {
                        -m
                    }
                } else {
                    unit(g) * m
                }
            })
            .collect();
        let mut xq = vec![BlockQ8::ZERO; (n_tokens - 1) * xq_stride + nb];
        quantize_q8(&x, xq_stride * 32, k, 1, &mut xq[..nb]).unwrap();
        for t in 1..n_tokens {
            let at = t * xq_stride;
            quantize_q8(&x[at * 32..], k, k, 1, &mut xq[at..at + nb]).unwrap();
        }
        let out_stride = n_rows + below(g, 4);
        let out = (0..(n_tokens - 1) * out_stride + n_rows + below(g, 3)).map(|_| unit(g)).collect();
        let scratch = matmul_q8_scratch_len(k) + below(g, 20);
        Case { ty, w, n_rows, k, xq, xq_stride, n_tokens, out, out_stride, scratch }
    }
}

impl Case {
    fn run(&self, kern: &Kernels) -> Vec<f32> {
        let mut out = self.out.clone();
        let mut scratch = vec![f32::NAN; self.scratch];
        kern.matmul_q8_acc(
            self.ty,
            &self.w,
            self.n_rows,
            self.k,
            &self.xq,
            self.xq_stride,
            self.n_tokens,
            &mut out,
            self.out_stride,
            &mut scratch,
        )
        .unwrap();
        out
    }
}

fn prop_simd_equals_scalar(c: Case) -> TestResult {
    let tables = q8_tables();
    let want = c.run(&tables[0]);
    for kern in &tables[1..] {
        let got = c.run(kern);
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| !bits_equal(*a, *b)) {
            return TestResult::error(format!(
                "{:?} {:?} k {} rows {} tokens {}: output {i}: {:e} vs scalar {:e}",
                kern.q8_isa(),
                c.ty,
                c.k,
                c.n_rows,
                c.n_tokens,
                got[i],
                want[i]
            ));
        }
    }
    TestResult::passed()
}

#[test]
fn every_simd_path_equals_the_scalar_twin_bit_for_bit() {
    assert!(q8_tables().len() > 1 || !cfg!(target_arch = "x86_64"), "no SIMD integer path on this CPU");
    QuickCheck::new().tests(1500).quickcheck(prop_simd_equals_scalar as fn(Case) -> TestResult);
}

#[test]
fn every_type_and_path_on_extreme_blocks() {
    // Deterministic sweep: every type × path, all-max codes with f16 max scales and ±127
    // activations, plus 16 + 1 rows and 8 + 4 + 2 + 1 tokens to hit every tile shape.
    let mut g = Gen::new(50);
    for ty in quantized() {
        let be = ty.block_elems() as usize;
        let k = be * 2;
        for (scales, all_max) in [(Scales::Extreme, true), (Scales::Extreme, false), (Scales::Moderate, true)]
        {
            let (n_rows, n_tokens) = (17, 15);
            let w = weights(&mut g, ty, n_rows * k / be, scales, all_max);
            let x: Vec<f32> = (0..n_tokens * k).map(|i| if (i * 7) % 3 == 0 { -1.0 } else { 1.0 }).collect();
            let xq = quantize(&x, k, k, n_tokens);
            let case = Case {
                ty,
                w,
                n_rows,
                k,
                xq,
                xq_stride: k / 32,
                n_tokens,
                out: vec![0.0; n_rows * n_tokens],
                out_stride: n_rows,
                scratch: matmul_q8_scratch_len(k),
            };
            let r = prop_simd_equals_scalar(case);
            assert!(!r.is_failure(), "{ty:?}: {r:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn matmul_q8_error_contract() {
    let kern = Kernels::detect();
    let ty = GgmlType::Q4_K;
    let k = 256;
    let w = vec![0u8; 3 * 144];
    let xq = vec![BlockQ8::ZERO; 2 * 8];
    let mut out = vec![0f32; 6];
    let mut scratch = vec![0f32; matmul_q8_scratch_len(k)];
    let small = |needed, given| Err(Error::BufferTooSmall { needed, given });
    for f in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_1, GgmlType::IQ2_XS] {
        let e = kern.matmul_q8_acc(f, &w, 3, k, &xq, 8, 2, &mut out, 3, &mut scratch).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported(Unsupported::TensorType { ty, .. }) if ty == f),
            "{f:?}: {e:?}"
        );
    }
    let e = kern.matmul_q8_acc(ty, &w, 3, 128, &xq, 8, 2, &mut out, 3, &mut scratch).unwrap_err();
    assert!(matches!(e, Error::Malformed { what: Malformed::RowNotBlockMultiple { .. }, offset: 0 }));
    assert_eq!(kern.matmul_q8_acc(ty, &w[1..], 3, k, &xq, 8, 2, &mut out, 3, &mut scratch), small(432, 431));
    assert_eq!(kern.matmul_q8_acc(ty, &w, 3, k, &xq, 7, 2, &mut out, 3, &mut scratch), small(8, 7));
    assert_eq!(kern.matmul_q8_acc(ty, &w, 3, k, &xq[1..], 8, 2, &mut out, 3, &mut scratch), small(16, 15));
    assert_eq!(kern.matmul_q8_acc(ty, &w, 3, k, &xq, 8, 2, &mut out, 2, &mut scratch), small(3, 2));
    assert_eq!(kern.matmul_q8_acc(ty, &w, 3, k, &xq, 8, 2, &mut out[1..], 3, &mut scratch), small(6, 5));
    // Q4_K panels take 8 blocks × 160 words.
    assert_eq!(
        kern.matmul_q8_acc(ty, &w, 3, k, &xq, 8, 2, &mut out, 3, &mut scratch[..1279]),
        small(1280, 1279)
    );
    // Empty shapes do nothing, sizes are still checked.
    for (rows, tokens) in [(0, 2), (3, 0)] {
        kern.matmul_q8_acc(ty, &w, rows, k, &xq, 8, tokens, &mut out, 3, &mut scratch).unwrap();
    }
    assert!(out.iter().all(|&v| v == 0.0));
    // Outputs are accumulated: twice is double.
    let mut g = Gen::new(10);
    let w = weights(&mut g, ty, 3, Scales::Moderate, false);
    let x: Vec<f32> = (0..2 * k).map(|_| unit(&mut g)).collect();
    let xq = quantize(&x, k, k, 2);
    kern.matmul_q8_acc(ty, &w, 3, k, &xq, 8, 2, &mut out, 3, &mut scratch).unwrap();
    let once = out.clone();
    kern.matmul_q8_acc(ty, &w, 3, k, &xq, 8, 2, &mut out, 3, &mut scratch).unwrap();
    for (a, b) in out.iter().zip(&once) {
        assert_eq!(*a, b + b);
    }
}

// ---------------------------------------------------------------------------------------------
// Accuracy on real weights.

/// Standard normal values (Box–Muller over a xorshift generator).
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next(), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

#[test]
fn int8_accuracy_on_fixture_weights() {
    // Every type from the zoo (256×256 each), and the real all-MiniLM weights of each type it
    // holds (its first such 2-D tensor, at most 128 rows).
    let mut cases: Vec<(String, Vec<u8>, TensorInfo)> = Vec::new();
    for file in ["models/quant-zoo.gguf", "models/minilm-l6-Q4_K_M.gguf"] {
        let bytes = read_fixture(file);
        let mut seen = Vec::new();
        for t in tensors(&bytes) {
            if quantized().contains(&t.ty) && t.ne[1] > 1 && !seen.contains(&t.ty) {
                seen.push(t.ty);
                cases.push((format!("{} {}", file.trim_start_matches("models/"), t.name), bytes.clone(), t));
            }
        }
    }
    let kern = Kernels::detect();
    let n_tokens = 16;
    println!(
        "| weights | type | rows × k | ‖int8 − f32‖ / ‖f32‖ | ‖int8 − f64‖ / ‖f64‖ | ‖f32 − f64‖ / ‖f64‖ |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, bytes, t) in &cases {
        let k = t.ne[0] as usize;
        let n_rows = (t.ne[1] as usize).min(128);
        let w = &bytes[t.offset as usize..t.end() as usize];
        let x = gaussian(n_tokens * k, 0x9e37_79b9_7f4a_7c15 ^ k as u64);
        let mut f32_out = vec![0f32; n_tokens * n_rows];
        let mut scratch = vec![0f32; matmul_scratch_len(k).1];
        kern.matmul_acc(t.ty, w, n_rows, k, &x, k, n_tokens, &mut f32_out, n_rows, &mut scratch).unwrap();
        let xq = quantize(&x, k, k, n_tokens);
        let mut q8_out = vec![0f32; n_tokens * n_rows];
        let mut scratch = vec![0f32; matmul_q8_scratch_len(k)];
        kern.matmul_q8_acc(t.ty, w, n_rows, k, &xq, k / 32, n_tokens, &mut q8_out, n_rows, &mut scratch)
            .unwrap();
        // f64 truth: exact dequantized weights times the unquantized activations.
        let mut wf = vec![0f32; n_rows * k];
        kern.dequantize(t.ty, &w[..n_rows * t.ty.row_bytes(k as u64).unwrap() as usize], &mut wf).unwrap();
        let truth: Vec<f64> = (0..n_tokens)
            .flat_map(|tk| {
                let (wf, x) = (&wf, &x);
                (0..n_rows).map(move |r| {
                    wf[r * k..(r + 1) * k]
                        .iter()
                        .zip(&x[tk * k..(tk + 1) * k])
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum()
                })
            })
            .collect();
        let rel = |a: &[f64], b: &[f64]| {
            let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
            let den: f64 = b.iter().map(|y| y * y).sum();
            (num / den).sqrt()
        };
        let (q8, f32v): (Vec<f64>, Vec<f64>) =
            q8_out.iter().zip(&f32_out).map(|(&a, &b)| (f64::from(a), f64::from(b))).unzip();
        let (e_f32, e_true, e_ref) = (rel(&q8, &f32v), rel(&q8, &truth), rel(&f32v, &truth));
        println!("| {name} | {:?} | {n_rows} × {k} | {e_f32:.2e} | {e_true:.2e} | {e_ref:.2e} |", t.ty);
        // Per-32 int8 activations carry a relative error of about 1/(127·√3·2) of each block's
        // largest value (≈ 0.5 % of a Gaussian's spread, uncorrelated with the weights), which a
        // dot product passes on unchanged: 1 % is twice that.
        assert!(e_true < 1e-2, "{name} {:?}: int8 relative error {e_true:e}", t.ty);
    }
}
