//! Redundancy, rank and death of a layer's activations `A` (`N × K`).

use crate::{MetricError, Result};
use iem_tensor::Matrix;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

/// Centred activations and per-unit standard deviations, in f64.
fn centred(a: &Matrix, metric: &'static str) -> Result<(DMatrix<f64>, Vec<f64>)> {
    let (n, k) = a.shape();
    if n < 2 {
        return Err(MetricError::TooFewSamples { metric, needed: 2, got: n });
    }
    crate::finite(metric, a)?;
    let mean = a.col_means_f64();
    let c = DMatrix::from_fn(n, k, |i, j| a.get(i, j) as f64 - mean[j]);
    let sd: Vec<f64> =
        (0..k).map(|j| (c.column(j).norm_squared() / (n - 1) as f64).sqrt()).collect();
    Ok((c, sd))
}

/// Correlation structure of the non-constant units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrelationStats {
    /// `Σ_{i≠j} Corr(A)²_ij` over non-constant units.
    pub energy: f64,
    /// Units with (near-)zero variance, excluded and counted rather than producing NaN.
    pub constant_units: Vec<usize>,
}

/// Off-diagonal correlation energy `Σ_{i≠j} Corr(A)²_ij`. O(N K²).
pub fn correlation_energy(a: &Matrix, var_eps: f64) -> Result<CorrelationStats> {
    let (corr, constant_units) = correlation(a, var_eps, "correlation_energy")?;
    let k = corr.nrows();
    let mut e = 0.0;
    for i in 0..k {
        for j in 0..k {
            if i != j {
                e += corr[(i, j)].powi(2);
            }
        }
    }
    Ok(CorrelationStats { energy: e, constant_units })
}

fn correlation(
    a: &Matrix,
    var_eps: f64,
    metric: &'static str,
) -> Result<(DMatrix<f64>, Vec<usize>)> {
    let (c, sd) = centred(a, metric)?;
    let constant: Vec<usize> = (0..sd.len()).filter(|&j| sd[j] * sd[j] <= var_eps).collect();
    let live: Vec<usize> = (0..sd.len()).filter(|j| !constant.contains(j)).collect();
    let n = c.nrows();
    let z = DMatrix::from_fn(n, live.len(), |i, j| c[(i, live[j])] / sd[live[j]]);
    let corr = (z.transpose() * &z) / (n - 1) as f64;
    Ok((corr, constant))
}

/// Gaussian total correlation `−½ log det Corr(A)` of the non-constant units (0 for
/// independent units; `Undefined` when `Corr` is singular, e.g. two identical units, where
/// it is +∞). O(N K² + K³).
pub fn total_correlation(a: &Matrix, var_eps: f64) -> Result<f64> {
    let (corr, _) = correlation(a, var_eps, "total_correlation")?;
    if corr.nrows() == 0 {
        return Err(MetricError::Undefined {
            metric: "total_correlation",
            reason: "every unit is constant".into(),
        });
    }
    let ev = corr.symmetric_eigenvalues();
    if ev.iter().any(|&v| v <= 1e-12) {
        return Err(MetricError::Undefined {
            metric: "total_correlation",
            reason: "Corr(A) is singular (duplicate or linearly dependent units): +inf".into(),
        });
    }
    Ok(-0.5 * ev.iter().map(|v| v.ln()).sum::<f64>())
}

/// Singular values of `A` (not centred), descending.
fn singular_values(a: &Matrix) -> Result<Vec<f64>> {
    crate::finite("singular_values", a)?;
    let mut s: Vec<f64> = a.to_dmatrix().singular_values().iter().copied().collect();
    s.sort_by(|x, y| y.total_cmp(x));
    Ok(s)
}

/// Effective rank (Roy & Vetterli 2007): `exp H(p)`, `p_i = σ_i / Σ σ`, over the singular
/// values of `A`. `n` for an orthogonal `n × n` matrix; `Undefined` for `A = 0`.
pub fn effective_rank(a: &Matrix) -> Result<f64> {
    let s = singular_values(a)?;
    let t: f64 = s.iter().sum();
    if t <= 0.0 {
        return Err(MetricError::Undefined {
            metric: "effective_rank",
            reason: "A is zero".into(),
        });
    }
    let p: Vec<f64> = s.iter().map(|v| v / t).collect();
    Ok(crate::entropy(&p).exp())
}

/// Participation ratio `(Σ λ)² / Σ λ²` of the covariance eigenvalues of `A`.
pub fn participation_ratio(a: &Matrix) -> Result<f64> {
    let (c, _) = centred(a, "participation_ratio")?;
    let cov = (c.transpose() * &c) / (c.nrows() - 1) as f64;
    let ev: Vec<f64> = cov.symmetric_eigenvalues().iter().map(|v| v.max(0.0)).collect();
    let s: f64 = ev.iter().sum();
    let s2: f64 = ev.iter().map(|v| v * v).sum();
    if s2 <= 0.0 {
        return Err(MetricError::Undefined {
            metric: "participation_ratio",
            reason: "every unit is constant".into(),
        });
    }
    Ok(s * s / s2)
}

/// Stable rank `‖A‖²_F / ‖A‖²_2`.
pub fn stable_rank(a: &Matrix) -> Result<f64> {
    let s = singular_values(a)?;
    if s.is_empty() || s[0] <= 0.0 {
        return Err(MetricError::Undefined { metric: "stable_rank", reason: "A is zero".into() });
    }
    Ok(s.iter().map(|v| v * v).sum::<f64>() / (s[0] * s[0]))
}

/// Dead-unit counts of a layer's activations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadUnits {
    /// Units never `> 0` on the data (ReLU-dead).
    pub never_active: Vec<usize>,
    /// Units whose (unbiased) variance is below the threshold.
    pub low_variance: Vec<usize>,
}

/// Dead units: never active, and variance below `var_threshold`.
pub fn dead_units(a: &Matrix, var_threshold: f64) -> Result<DeadUnits> {
    let (_, sd) = centred(a, "dead_units")?;
    let k = a.cols();
    let never_active = (0..k).filter(|&j| (0..a.rows()).all(|i| a.get(i, j) <= 0.0)).collect();
    let low_variance = (0..k).filter(|&j| sd[j] * sd[j] < var_threshold).collect();
    Ok(DeadUnits { never_active, low_variance })
}
