//! Gradient diagnostics.

/// Zero-sum residual `max_n |Σ_j ∂L/∂z_nj|` of an `N × K` input gradient: 0 (to rounding)
/// for a competitive (shift-invariant) layer.
pub fn zero_sum_residual(grad: &[f32], k: usize) -> f64 {
    grad.chunks_exact(k.max(1))
        .map(|r| r.iter().map(|&v| v as f64).sum::<f64>().abs())
        .fold(0.0, f64::max)
}

/// Identity residual `max |∂L/∂d − r|` of the implicit-EM identity (the gradient scaled to
/// the summed loss).
pub fn identity_residual(grad: &[f32], resp: &[f32]) -> f64 {
    grad.iter().zip(resp).map(|(g, r)| (*g as f64 - *r as f64).abs()).fold(0.0, f64::max)
}
