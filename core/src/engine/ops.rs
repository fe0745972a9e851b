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

/// The exact (erf) GELU.
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// SiLU: `x · σ(x)`.
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + libm::expf(-x))
}

/// Scales `v` to unit L2 norm (a zero vector stays zero).
pub(crate) fn l2_normalize(v: &mut [f32]) {
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
    fn activations() {
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-3.0) - -0.004_049_7).abs() < 1e-6);
        assert!((silu(2.0) - 1.761_594_2).abs() < 1e-6);
        let mut v = [3.0f32, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
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
