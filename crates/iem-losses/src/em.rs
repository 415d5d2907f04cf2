//! Explicit EM, in f64, to compare gradient descent on the LSE loss against.
//!
//! Each routine returns the fitted parameters and the log-likelihood after every iteration
//! (non-decreasing for exact EM, which the tests check).

use crate::distance::DiagGaussian;
use crate::{LossError, Result, finite, rows_of};
use nalgebra::{DMatrix, DVector};

const LN_2PI: f64 = 1.837_877_066_409_345_5;

fn lse(v: &[f64]) -> f64 {
    let m = v.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Result of soft k-means.
#[derive(Clone, Debug, PartialEq)]
pub struct SoftKMeans {
    /// Prototypes, `K × D`.
    pub mu: Vec<f64>,
    /// `Σ_n lse_j(−‖x_n − μ_j‖²/(2τ))` after each iteration (the negative summed LSE loss).
    pub trace: Vec<f64>,
}

/// Soft k-means with isotropic shared variance τ: E-step `r_nj = softmax_j(−‖x_n − μ_j‖²/(2τ))`,
/// M-step `μ_j = Σ_n r_nj x_n / Σ_n r_nj` (a component with no mass keeps its prototype).
pub fn soft_kmeans(x: &[f64], d: usize, mu0: &[f64], tau: f64, iters: usize) -> Result<SoftKMeans> {
    let n = rows_of("soft_kmeans", x, d)?;
    let k = rows_of("soft_kmeans (prototypes)", mu0, d)?;
    finite("soft_kmeans", x, d)?;
    if n == 0 {
        return Err(LossError::EmptyBatch { op: "soft_kmeans" });
    }
    let mut mu = mu0.to_vec();
    let mut trace = Vec::with_capacity(iters);
    for _ in 0..iters {
        let (r, _) = soft_kmeans_estep(x, d, &mu, tau);
        let mut num = vec![0.0; k * d];
        let mut den = vec![0.0; k];
        for i in 0..n {
            for j in 0..k {
                den[j] += r[i * k + j];
                for c in 0..d {
                    num[j * d + c] += r[i * k + j] * x[i * d + c];
                }
            }
        }
        for j in 0..k {
            if den[j] > 0.0 {
                for c in 0..d {
                    mu[j * d + c] = num[j * d + c] / den[j];
                }
            }
        }
        trace.push(soft_kmeans_estep(x, d, &mu, tau).1);
    }
    Ok(SoftKMeans { mu, trace })
}

/// Responsibilities and `Σ_n lse(−d_n)` for prototypes `mu`.
pub fn soft_kmeans_estep(x: &[f64], d: usize, mu: &[f64], tau: f64) -> (Vec<f64>, f64) {
    let n = x.len() / d;
    let k = mu.len() / d;
    let mut r = vec![0.0; n * k];
    let mut ll = 0.0;
    for i in 0..n {
        let neg: Vec<f64> = (0..k)
            .map(|j| {
                -(0..d).map(|c| (x[i * d + c] - mu[j * d + c]).powi(2)).sum::<f64>() / (2.0 * tau)
            })
            .collect();
        let l = lse(&neg);
        ll += l;
        for j in 0..k {
            r[i * k + j] = (neg[j] - l).exp();
        }
    }
    (r, ll)
}

/// Diagonal-Gaussian EM from `init`; variances are floored at `var_floor`. Returns the fitted
/// layer (usable directly as a distance layer) and the log-likelihood trace
/// `Σ_n log Σ_j π_j N(x_n; μ_j, diag σ_j²)`.
pub fn diag_gmm(
    x: &[f64],
    init: &DiagGaussian<f64>,
    iters: usize,
    var_floor: f64,
) -> Result<(DiagGaussian<f64>, Vec<f64>)> {
    let d = init.d;
    let k = init.k;
    let n = rows_of("diag_gmm", x, d)?;
    finite("diag_gmm", x, d)?;
    if n == 0 {
        return Err(LossError::EmptyBatch { op: "diag_gmm" });
    }
    let mut g = init.clone();
    let mut trace = Vec::with_capacity(iters);
    for _ in 0..iters {
        let e = g.forward(x)?;
        let mut r = vec![0.0; n * k];
        for i in 0..n {
            let neg: Vec<f64> = e[i * k..(i + 1) * k].iter().map(|v| -v).collect();
            let l = lse(&neg);
            for j in 0..k {
                r[i * k + j] = (neg[j] - l).exp();
            }
        }
        for j in 0..k {
            let nj: f64 = (0..n).map(|i| r[i * k + j]).sum();
            if nj <= 0.0 {
                continue;
            }
            for c in 0..d {
                let m = (0..n).map(|i| r[i * k + j] * x[i * d + c]).sum::<f64>() / nj;
                let v = (0..n).map(|i| r[i * k + j] * (x[i * d + c] - m).powi(2)).sum::<f64>() / nj;
                g.mu[j * d + c] = m;
                g.log_sigma[j * d + c] = 0.5 * v.max(var_floor).ln();
            }
            g.logits[j] = (nj / n as f64).ln();
        }
        trace.push(diag_loglik(x, &g)?);
    }
    Ok((g, trace))
}

/// `Σ_n log Σ_j π_j N(x_n; μ_j, diag σ_j²)` of a diagonal-Gaussian layer.
pub fn diag_loglik(x: &[f64], g: &DiagGaussian<f64>) -> Result<f64> {
    let e = g.forward(x)?;
    let n = x.len() / g.d;
    Ok((0..n)
        .map(|i| lse(&e[i * g.k..(i + 1) * g.k].iter().map(|v| -v).collect::<Vec<_>>()))
        .sum::<f64>()
        - n as f64 * g.d as f64 / 2.0 * LN_2PI)
}

/// A full-covariance Gaussian mixture.
#[derive(Clone, Debug, PartialEq)]
pub struct FullGmm {
    /// Means, one `D`-vector per component.
    pub means: Vec<Vec<f64>>,
    /// Covariances, one row-major `D × D` per component.
    pub covs: Vec<Vec<f64>>,
    /// Mixing weights.
    pub weights: Vec<f64>,
}

impl FullGmm {
    /// `Σ_n log Σ_j π_j N(x_n; μ_j, Σ_j)`.
    pub fn loglik(&self, x: &[f64], d: usize) -> Result<f64> {
        let n = rows_of("FullGmm::loglik", x, d)?;
        let k = self.means.len();
        let mut chols = Vec::with_capacity(k);
        for (j, c) in self.covs.iter().enumerate() {
            let ch = nalgebra::Cholesky::new(DMatrix::from_row_slice(d, d, c))
                .ok_or(LossError::Singular { component: j })?;
            let logdet = 2.0 * ch.l().diagonal().iter().map(|v| v.ln()).sum::<f64>();
            chols.push((ch, logdet));
        }
        let mut total = 0.0;
        for i in 0..n {
            let xi = DVector::from_column_slice(&x[i * d..(i + 1) * d]);
            let v: Vec<f64> = (0..k)
                .map(|j| {
                    let diff = &xi - DVector::from_column_slice(&self.means[j]);
                    let sol = chols[j].0.solve(&diff);
                    self.weights[j].ln() - 0.5 * (diff.dot(&sol) + chols[j].1 + d as f64 * LN_2PI)
                })
                .collect();
            total += lse(&v);
        }
        Ok(total)
    }
}

/// Full-covariance EM from `init`, adding `reg · I` to every covariance (keeps them
/// invertible). Returns the mixture and the log-likelihood after each iteration.
pub fn full_gmm(
    x: &[f64],
    d: usize,
    init: &FullGmm,
    iters: usize,
    reg: f64,
) -> Result<(FullGmm, Vec<f64>)> {
    let n = rows_of("full_gmm", x, d)?;
    finite("full_gmm", x, d)?;
    if n == 0 {
        return Err(LossError::EmptyBatch { op: "full_gmm" });
    }
    let k = init.means.len();
    let mut g = init.clone();
    let mut trace = Vec::with_capacity(iters);
    for _ in 0..iters {
        // E-step through log densities.
        let mut chols = Vec::with_capacity(k);
        for (j, c) in g.covs.iter().enumerate() {
            let ch = nalgebra::Cholesky::new(DMatrix::from_row_slice(d, d, c))
                .ok_or(LossError::Singular { component: j })?;
            let logdet = 2.0 * ch.l().diagonal().iter().map(|v| v.ln()).sum::<f64>();
            chols.push((ch, logdet));
        }
        let mut r = vec![0.0; n * k];
        for i in 0..n {
            let xi = DVector::from_column_slice(&x[i * d..(i + 1) * d]);
            let v: Vec<f64> = (0..k)
                .map(|j| {
                    let diff = &xi - DVector::from_column_slice(&g.means[j]);
                    g.weights[j].ln() - 0.5 * (diff.dot(&chols[j].0.solve(&diff)) + chols[j].1)
                })
                .collect();
            let l = lse(&v);
            for j in 0..k {
                r[i * k + j] = (v[j] - l).exp();
            }
        }
        // M-step.
        for j in 0..k {
            let nj: f64 = (0..n).map(|i| r[i * k + j]).sum();
            if nj <= 0.0 {
                continue;
            }
            let mut m = vec![0.0; d];
            for i in 0..n {
                for c in 0..d {
                    m[c] += r[i * k + j] * x[i * d + c];
                }
            }
            m.iter_mut().for_each(|v| *v /= nj);
            let mut cov = vec![0.0; d * d];
            for i in 0..n {
                for a in 0..d {
                    for b in 0..d {
                        cov[a * d + b] +=
                            r[i * k + j] * (x[i * d + a] - m[a]) * (x[i * d + b] - m[b]);
                    }
                }
            }
            for a in 0..d {
                for b in 0..d {
                    cov[a * d + b] = cov[a * d + b] / nj + if a == b { reg } else { 0.0 };
                }
            }
            g.means[j] = m;
            g.covs[j] = cov;
            g.weights[j] = nj / n as f64;
        }
        trace.push(g.loglik(x, d)?);
    }
    Ok((g, trace))
}
