//! How much a representation changed: CKA (linear and RBF), SVCCA, assignment ARI.

use crate::{MetricError, Result};
use iem_tensor::Matrix;
use nalgebra::DMatrix;
use rayon::prelude::*;

fn check_pair(metric: &'static str, x: &Matrix, y: &Matrix) -> Result<()> {
    if x.rows() != y.rows() {
        return Err(MetricError::Shape {
            metric,
            detail: format!("{} vs {} samples", x.rows(), y.rows()),
        });
    }
    if x.rows() < 2 {
        return Err(MetricError::TooFewSamples { metric, needed: 2, got: x.rows() });
    }
    crate::finite(metric, x)?;
    crate::finite(metric, y)
}

fn centred(x: &Matrix) -> DMatrix<f64> {
    let m = x.col_means_f64();
    DMatrix::from_fn(x.rows(), x.cols(), |i, j| x.get(i, j) as f64 - m[j])
}

/// Linear CKA `‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)` on centred features, computed through
/// `D × D` Gram matrices: O(N (Dx + Dy)²) time, O((Dx + Dy)²) extra memory — no `N × N`
/// matrix. Invariant to orthogonal transforms and isotropic scaling.
pub fn linear_cka(x: &Matrix, y: &Matrix) -> Result<f64> {
    check_pair("linear_cka", x, y)?;
    let (xc, yc) = (centred(x), centred(y));
    let yx = yc.transpose() * &xc;
    let xx = xc.transpose() * &xc;
    let yy = yc.transpose() * &yc;
    let den = xx.norm() * yy.norm();
    if den <= 0.0 {
        return Err(MetricError::Undefined {
            metric: "linear_cka",
            reason: "a representation is constant".into(),
        });
    }
    Ok(yx.norm_squared() / den)
}

fn sq_dists_row(x: &Matrix, i: usize) -> Vec<f64> {
    let xi = x.row(i);
    (0..x.rows())
        .map(|j| x.row(j).iter().zip(xi).map(|(a, b)| ((a - b) as f64).powi(2)).sum())
        .collect()
}

/// Median-heuristic bandwidth² from at most the first 500 samples.
fn bandwidth2(x: &Matrix) -> f64 {
    let m = x.rows().min(500);
    let mut d = Vec::with_capacity(m * m / 2);
    for i in 0..m {
        let xi = x.row(i);
        for j in 0..i {
            d.push(x.row(j).iter().zip(xi).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>());
        }
    }
    d.sort_by(f64::total_cmp);
    let med = d.get(d.len() / 2).copied().unwrap_or(1.0);
    if med > 0.0 { med } else { 1.0 }
}

/// RBF-kernel CKA with the median-heuristic bandwidth (`k(a, b) = exp(−‖a − b‖² / (2σ²))`,
/// `σ²` = median squared distance among the first 500 samples). Streamed: kernel rows are
/// recomputed rather than stored, so memory is O(N) and time O(N² (Dx + Dy)); rows are
/// processed in parallel with per-row partial sums added in order (deterministic).
pub fn rbf_cka(x: &Matrix, y: &Matrix) -> Result<f64> {
    check_pair("rbf_cka", x, y)?;
    let n = x.rows();
    let (sx, sy) = (bandwidth2(x), bandwidth2(y));
    let kx = |i: usize| {
        sq_dists_row(x, i).into_iter().map(|d| (-d / (2.0 * sx)).exp()).collect::<Vec<f64>>()
    };
    let ky = |i: usize| {
        sq_dists_row(y, i).into_iter().map(|d| (-d / (2.0 * sy)).exp()).collect::<Vec<f64>>()
    };
    // Pass 1: row means of both kernels.
    let means: Vec<(f64, f64)> = (0..n)
        .into_par_iter()
        .map(|i| (kx(i).iter().sum::<f64>() / n as f64, ky(i).iter().sum::<f64>() / n as f64))
        .collect();
    let (gx, gy) = (
        means.iter().map(|m| m.0).sum::<f64>() / n as f64,
        means.iter().map(|m| m.1).sum::<f64>() / n as f64,
    );
    // Pass 2: ⟨K̃, L̃⟩, ⟨K̃, K̃⟩, ⟨L̃, L̃⟩ with K̃_ij = K_ij − m_i − m_j + g.
    let parts: Vec<(f64, f64, f64)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (ri, li) = (kx(i), ky(i));
            let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
            for j in 0..n {
                let a = ri[j] - means[i].0 - means[j].0 + gx;
                let b = li[j] - means[i].1 - means[j].1 + gy;
                xy += a * b;
                xx += a * a;
                yy += b * b;
            }
            (xy, xx, yy)
        })
        .collect();
    let (xy, xx, yy) = parts.iter().fold((0.0, 0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1, a.2 + p.2));
    if xx <= 0.0 || yy <= 0.0 {
        return Err(MetricError::Undefined {
            metric: "rbf_cka",
            reason: "a kernel matrix is constant".into(),
        });
    }
    Ok(xy / (xx * yy).sqrt())
}

/// SVCCA (Raghu et al. 2017): keep the top singular directions of each centred
/// representation explaining `keep` (e.g. 0.99) of its variance, then return the mean
/// canonical correlation between the reduced representations.
pub fn svcca(x: &Matrix, y: &Matrix, keep: f64) -> Result<f64> {
    check_pair("svcca", x, y)?;
    let reduce = |m: DMatrix<f64>| -> Result<DMatrix<f64>> {
        let svd = m.clone().svd(true, false);
        let u =
            svd.u.ok_or(MetricError::Undefined { metric: "svcca", reason: "SVD failed".into() })?;
        let s = &svd.singular_values;
        let total: f64 = s.iter().map(|v| v * v).sum();
        if total <= 0.0 {
            return Err(MetricError::Undefined {
                metric: "svcca",
                reason: "a representation is constant".into(),
            });
        }
        let mut idx: Vec<usize> = (0..s.len()).collect();
        idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        let (mut acc, mut r) = (0.0, 0);
        for &i in &idx {
            acc += s[i] * s[i];
            r += 1;
            if acc / total >= keep {
                break;
            }
        }
        Ok(DMatrix::from_fn(m.nrows(), r, |a, b| u[(a, idx[b])] * s[idx[b]]))
    };
    let (a, b) = (reduce(centred(x))?, reduce(centred(y))?);
    // CCA through orthonormal bases: canonical correlations are the singular values of QaᵀQb.
    let qa = a.qr().q();
    let qb = b.qr().q();
    let sv = (qa.transpose() * qb).singular_values();
    let r = sv.len();
    Ok(sv.iter().map(|v| v.min(1.0)).sum::<f64>() / r.max(1) as f64)
}

/// ARI between the arg-max assignment maps of two models on the same inputs (e.g. before
/// and after fine-tuning): 1 when every input keeps its (relabelled) unit.
pub fn assignment_ari(before: &Matrix, after: &Matrix) -> Result<f64> {
    if before.rows() != after.rows() {
        return Err(MetricError::Shape {
            metric: "assignment_ari",
            detail: format!("{} vs {} samples", before.rows(), after.rows()),
        });
    }
    Ok(crate::truth::ari(
        &crate::competition::assignments(before),
        &crate::competition::assignments(after),
    ))
}
