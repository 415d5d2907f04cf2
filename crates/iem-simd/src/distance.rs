//! Batch-by-prototype squared Euclidean distances through one GEMM.

use crate::gemm::Gemm;
use crate::isa::Par;
use crate::math::row_dot;
use crate::simd::{self, Kernel, Simd};

struct NormsK<'a> {
    x: &'a [f32],
    cols: usize,
    out: &'a mut [f32],
}
impl Kernel for NormsK<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        for (r, o) in self.x.chunks_exact(self.cols).zip(self.out.iter_mut()) {
            *o = row_dot(s, r, r);
        }
    }
}

/// `‖row‖²` of each row of a `rows × cols` block.
pub fn sq_norms(x: &[f32], cols: usize, out: &mut [f32]) {
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    assert_eq!(
        x.len(),
        out.len() * cols,
        "sq_norms: {} values for {} rows of {cols}",
        x.len(),
        out.len()
    );
    simd::run(NormsK { x, cols, out })
}

/// `out[i, j] = ‖x_i − μ_j‖²` for `x: n × d`, `mu: k × d`, `out: n × k`, computed as
/// `‖x‖² − 2 x·μ + ‖μ‖²` and clamped at 0 (the expansion cancels when `‖x‖ ≫ ‖x − μ‖`;
/// the clamp removes the negative values this produces; centre the data to keep the
/// precision).
pub fn sq_distances(
    x: &[f32],
    mu: &[f32],
    n: usize,
    d: usize,
    k: usize,
    out: &mut [f32],
    par: Par,
) {
    assert_eq!(x.len(), n * d, "sq_distances: x has {} values, expected {n}×{d}", x.len());
    assert_eq!(mu.len(), k * d, "sq_distances: mu has {} values, expected {k}×{d}", mu.len());
    assert_eq!(out.len(), n * k, "sq_distances: out has {} values, expected {n}×{k}", out.len());
    let mut xn = vec![0.0; n];
    let mut mn = vec![0.0; k];
    sq_norms(x, d, &mut xn);
    sq_norms(mu, d, &mut mn);
    // out = mn (bias) − 2·x·μᵀ
    Gemm::nt(n, d, k, x, mu).scaled(-2.0, 0.0).with_bias(&mn).run(out, par);
    for (row, &xi) in out.chunks_exact_mut(k.max(1)).zip(&xn) {
        for v in row.iter_mut() {
            *v = (*v + xi).max(0.0);
        }
    }
}
