//! The small numeric pieces of the forward pass: normalisation, activations, rotary positions.
//! Statistics are accumulated in f64, so they add no error beyond f32 storage.

/// `x ← (x − mean) / √(var + eps) · gamma + beta` (LayerNorm over one token's vector).
pub(crate) fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x.iter().map(|&v| (f64::from(v) - mean) * (f64::from(v) - mean)).sum::<f64>() / n;
    let rstd = 1.0 / libm::sqrt(var + f64::from(eps));
    for ((v, &g), &b) in x.iter_mut().zip(gamma).zip(beta) {
        *v = ((f64::from(*v) - mean) * rstd) as f32 * g + b;
    }
}

/// `x ← x / √(mean(x²) + eps) · gamma` (RMSNorm over one token's vector or one head).
pub(crate) fn rms_norm(x: &mut [f32], gamma: &[f32], eps: f32) {
    let n = x.len().max(1) as f64;
    let mean_square = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n;
    let rstd = 1.0 / libm::sqrt(mean_square + f64::from(eps));
    for (v, &g) in x.iter_mut().zip(gamma) {
        *v = (f64::from(*v) * rstd) as f32 * g;
    }
}

/// The exact (erf) GELU.
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// `e^x` for the softmax's arguments, within 2 ulp of the exact value for `x` in
/// `[-87.3, 88.7]`; 0 below (where `e^x` is subnormal), +∞ above, NaN for NaN.
///
/// Branch-free (range reduction by `ln 2`, a degree-6 polynomial, the exponent built from bits)
/// so that loops over it vectorise; about 10× faster than `libm::expf` there.
#[inline]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = core::f32::consts::LOG2_E;
    // ln 2 split in a part exact in few bits and the rest (Cody–Waite).
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const LOW: f32 = -87.336_54;
    const HIGH: f32 = 88.722_83;
    let (below, above) = (x < LOW, x > HIGH);
    let x = x.clamp(LOW, HIGH);
    // Round to nearest by adding and removing 1.5·2^23 (|x·log2 e| < 2^22 here): unlike a call
    // to `rintf`, this vectorises.
    const ROUND: f32 = 12_582_912.0;
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor coefficients 1/k! of e^r on |r| ≤ ln2/2.
    let p = 1.0
        + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n for n in [-126, 128): the exponent field n + 127 (n = 128 only at the clamp, where
    // the product below overflows to +∞ as e^x should).
    let scale = f32::from_bits(((n as i32).wrapping_add(127).clamp(1, 254) as u32) << 23);
    let v = if n >= 128.0 { p * scale * 2.0 } else { p * scale };
    if below {
        0.0
    } else if above {
        f32::INFINITY
    } else {
        v
    }
}

/// GELU with the tanh approximation: `x/2 · (1 + tanh(√(2/π) · (x + 0.044715·x³)))`.
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + libm::tanhf(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)))
}

/// SiLU: `x · σ(x)`.
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `row[j] ← e^(row[j]·scale − max)` for every `j`; returns the sum of the new values.
///
/// Sixteen partial sums, so that the loop vectorises (a single running sum would serialise it).
pub(crate) fn exp_and_sum(row: &mut [f32], scale: f32, max: f32) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = row.chunks_exact_mut(16);
    for chunk in &mut chunks {
        for (s, l) in chunk.iter_mut().zip(lanes.iter_mut()) {
            *s = exp(*s * scale - max);
            *l += *s;
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for s in chunks.into_remainder() {
        *s = exp(*s * scale - max);
        sum += *s;
    }
    sum
}

/// The largest of `row`'s values times `scale` (−∞ for an empty row); NaN-free inputs assumed
/// (a NaN is skipped).
pub(crate) fn scaled_max(row: &[f32], scale: f32) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = row.chunks_exact(16);
    for chunk in &mut chunks {
        for (&s, l) in chunk.iter().zip(lanes.iter_mut()) {
            *l = l.max(s);
        }
    }
    let m = chunks
        .remainder()
        .iter()
        .fold(lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)), |a, &b| a.max(b));
    // scale > 0, so the maximum of the scaled values is the scaled maximum.
    m * scale
}

/// Whether every value of `v` is finite (neither NaN nor infinite). No early exit, so that the
/// loop vectorises.
pub(crate) fn all_finite(v: &[f32]) -> bool {
    v.iter().fold(true, |ok, x| ok & x.is_finite())
}

/// Scales `v` to unit L2 norm, the norm summed in f64 (a zero vector stays zero). What a job does
/// to its pooled vectors; public so that hosts cutting a vector first (Matryoshka dimensions)
/// normalize it with the same rounding.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = libm::sqrt(v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>());
    if norm > 0.0 {
        for x in v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// NeoX-style rotary embedding of one head's vector: pair `(i, i + d/2)` rotates by the angle
/// whose cosine and sine are `cos_sin[2i]`, `cos_sin[2i + 1]` (see [`rotation`]).
pub(crate) fn rope(head: &mut [f32], cos_sin: &[f32]) {
    let half = head.len() / 2;
    let (a, b) = head.split_at_mut(half);
    for ((x1, x2), cs) in a.iter_mut().zip(b.iter_mut()).zip(cos_sin.chunks_exact(2)) {
        let [c, s] = [cs.first().copied().unwrap_or(1.0), cs.get(1).copied().unwrap_or(0.0)];
        let (u, v) = (*x1, *x2);
        *x1 = u * c - v * s;
        *x2 = u * s + v * c;
    }
}

/// `(cos, sin)` of the rotation for position `pos` and frequency `inv_freq`, computed in f64.
pub(crate) fn rotation(pos: usize, inv_freq: f64) -> (f32, f32) {
    let angle = pos as f64 * inv_freq;
    (libm::cos(angle) as f32, libm::sin(angle) as f32)
}

/// `base^(−2i/d)`, the NeoX rotary frequency of pair `i` of a `d`-wide head.
pub(crate) fn inv_freq(base: f32, i: usize, d: usize) -> f64 {
    libm::pow(f64::from(base), -2.0 * i as f64 / d.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_matches_definition() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        layer_norm(&mut x, &[1.0; 4], &[0.5; 4], 0.0);
        let expect = [-1.3416408, -0.4472136, 0.4472136, 1.3416408].map(|v: f32| v + 0.5);
        for (a, b) in x.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
    }

    #[test]
    fn rms_norm_matches_definition() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        rms_norm(&mut x, &[1.0, 2.0, 1.0, 0.5], 0.0);
        let rms = (30.0f32 / 4.0).sqrt();
        for (a, b) in x.iter().zip([1.0 / rms, 4.0 / rms, 3.0 / rms, 2.0 / rms]) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
    }

    #[test]
    fn activations() {
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-6);
        assert!((gelu_tanh(-3.0) - -0.003_637_4).abs() < 1e-6);
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-3.0) - -0.004_049_7).abs() < 1e-6);
        assert!((silu(2.0) - 1.761_594_2).abs() < 1e-6);
        let mut v = [3.0f32, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = [0.0f32; 3];
        l2_normalize(&mut zero);
        assert_eq!(zero, [0.0; 3]);
    }

    #[test]
    fn fast_exp_is_within_2_ulp() {
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (ours, exact) = (exp(x), libm::exp(f64::from(x)));
            let ulp = f64::from(f32::EPSILON) * exact;
            assert!((f64::from(ours) - exact).abs() <= 2.0 * ulp, "{x}: {ours} vs {exact}");
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(1000.0).is_infinite());
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn softmax_helpers() {
        let mut row = [0f32; 37];
        for (i, v) in row.iter_mut().enumerate() {
            *v = libm::sinf(i as f32 * 0.37) * 5.0;
        }
        let m = scaled_max(&row, 0.5);
        let expect_m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b * 0.5));
        assert_eq!(m, expect_m);
        let expect = row.map(|s| libm::exp(f64::from(s) * 0.5 - f64::from(m)));
        let sum = exp_and_sum(&mut row, 0.5, m);
        for (a, b) in row.iter().zip(&expect) {
            assert!((f64::from(*a) - b).abs() <= 1e-6 * b);
        }
        assert!((f64::from(sum) - expect.iter().sum::<f64>()).abs() < 1e-5);
        assert_eq!(scaled_max(&[], 1.0), f32::NEG_INFINITY);
    }

    #[test]
    fn finiteness() {
        assert!(all_finite(&[]));
        assert!(all_finite(&[0.0; 40].map(|v: f32| v + f32::MAX)));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut v = [1.0f32; 37];
            v[36] = bad;
            assert!(!all_finite(&v), "{bad}");
        }
    }

    #[test]
    fn rope_rotates_pairs() {
        let mut h = [1.0f32, 0.0, 0.0, 1.0];
        let (r1, r2) = (rotation(1, 1.0), rotation(1, 0.5));
        rope(&mut h, &[r1.0, r1.1, r2.0, r2.1]);
        assert!((h[0] - 1f32.cos()).abs() < 1e-6 && (h[2] - 1f32.sin()).abs() < 1e-6);
        assert!((h[1] - -(0.5f32.sin())).abs() < 1e-6 && (h[3] - 0.5f32.cos()).abs() < 1e-6);
    }
}
