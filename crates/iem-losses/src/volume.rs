//! Volume control (open question 4): what stops a competitive layer from collapsing.
//!
//! Two collapses must be kept apart. **Winner-take-all**: one unit's weights grow until it
//! takes every input (usage → one-hot, the rest dead). **Metric collapse**: every distance
//! shrinks to zero, responsibilities go uniform at `1/K` and every unit looks "dead" to a
//! variance test. They need different controls:
//!
//! | control | formula (minimised) | prevents | use when |
//! | --- | --- | --- | --- |
//! | none | — | — | the baseline |
//! | weight normalisation | `w_j = γ_j v_j/‖v_j‖` ([`weight_norm`]) | winner-take-all by norm growth | scores are dot products |
//! | learned temperature | `τ = e^θ` (`iem_activations::Temperature::Learned`) | over/under-sharp competition | the right sharpness is unknown |
//! | log-determinant | `Σ log σ` / `−log\|det W\|` in the Gaussian distances | metric collapse (σ → 0 costs) | distances are Gaussian energies |
//! | batch balance | `KL(r̄ ‖ u) = log K − H(r̄)` ([`balance_kl`]) | winner-take-all | usage should be even |
//! | usage entropy | `−H(r̄)` ([`usage_entropy`]) | winner-take-all | as balance, without the constant |
//! | mutual information | `−(H(r̄) − E_n H(r_n))` ([`mutual_information`]) | both: even usage and confident assignments | clustering-style objectives |
//! | variance | `−Σ_j log(Var(a_j) + ε)` ([`variance`]) | dead units, metric collapse | activations should vary |
//! | decorrelation | `Σ_{i≠j} Corr(a)²_ij` ([`decorrelation`]) | duplicate units | redundancy is the problem |
//! | log det covariance | `−log det(Cov(a) + εI)` ([`logdet_cov`]) | collapse onto a subspace (exact volume) | small K |
//! | VICReg std hinge | `mean_j max(0, γ − √(Var(a_j) + ε))` ([`vicreg_std`]) | dead units, bounded in scale | `−log Var` rewards blow-up |
//! | weight orthogonality | `‖Ŵ Ŵᵀ − I‖²_F` ([`orthogonality`]) | parallel weight vectors | K ≤ D (its floor is `max(0, K²/D − K)`) |
//! | Sinkhorn equipartition | targets `Q` with equal column mass ([`sinkhorn`]), not back-propagated | winner-take-all | SwAV-style self-labelling |
//!
//! Batch statistics use the unbiased variance (`N − 1`), need at least two samples, and are
//! checked with directional derivatives because every sample's gradient depends on the whole
//! batch.

use crate::{LossError, Real, Result, finite, rows_of};
use serde::{Deserialize, Serialize};

/// A penalty's value and its gradient with respect to its input.
#[derive(Clone, Debug, PartialEq)]
pub struct Penalty<F> {
    /// The value.
    pub value: f64,
    /// Gradient, the shape of the input.
    pub grad: Vec<F>,
    /// Units excluded as constant (decorrelation only), reported rather than hidden.
    pub excluded: Vec<usize>,
}

/// Floor inside logarithms of usage: `log(r̄_j + USAGE_EPS)`.
pub const USAGE_EPS: f64 = 1e-12;

fn usage<F: Real>(r: &[F], k: usize, op: &'static str) -> Result<(usize, Vec<f64>)> {
    let n = rows_of(op, r, k)?;
    if n == 0 {
        return Err(LossError::EmptyBatch { op });
    }
    finite(op, r, k)?;
    let mut u = vec![0.0f64; k];
    for row in r.chunks_exact(k) {
        for (a, b) in u.iter_mut().zip(row) {
            *a += b.f64();
        }
    }
    u.iter_mut().for_each(|v| *v /= n as f64);
    Ok((n, u))
}

fn entropy(p: &[f64]) -> f64 {
    -p.iter().filter(|&&v| v > 0.0).map(|v| v * v.ln()).sum::<f64>()
}

/// Batch balance `KL(r̄ ‖ uniform) = Σ_j r̄_j log(K r̄_j) = log K − H(r̄)` of responsibilities
/// `r` (`N × K`); gradient `(log r̄_j + 1)/N` (with `r̄_j` floored at [`USAGE_EPS`]).
pub fn balance_kl<F: Real>(r: &[F], k: usize) -> Result<Penalty<F>> {
    let (n, u) = usage(r, k, "balance_kl")?;
    let value = (k as f64).ln() - entropy(&u);
    let gj: Vec<f64> = u.iter().map(|&v| ((v + USAGE_EPS).ln() + 1.0) / n as f64).collect();
    let grad = (0..n * k).map(|i| F::of(gj[i % k])).collect();
    Ok(Penalty { value, grad, excluded: Vec::new() })
}

/// Usage entropy as a penalty, `−H(r̄)` (balance without the `log K` constant).
pub fn usage_entropy<F: Real>(r: &[F], k: usize) -> Result<Penalty<F>> {
    let mut p = balance_kl(r, k)?;
    p.value -= (k as f64).ln();
    Ok(p)
}

/// Mutual information between input and component as a penalty:
/// `−I(x; j) = −(H(r̄) − E_n H(r_n))`; gradient `(log r̄_j − log r_nj)/N` (logs floored).
pub fn mutual_information<F: Real>(r: &[F], k: usize) -> Result<Penalty<F>> {
    let (n, u) = usage(r, k, "mutual_information")?;
    let mean_h: f64 = r
        .chunks_exact(k)
        .map(|row| entropy(&row.iter().map(|v| v.f64()).collect::<Vec<_>>()))
        .sum::<f64>()
        / n as f64;
    let value = -(entropy(&u) - mean_h);
    let grad = r
        .iter()
        .enumerate()
        .map(|(i, &v)| F::of(((u[i % k] + USAGE_EPS).ln() - (v.f64() + USAGE_EPS).ln()) / n as f64))
        .collect();
    Ok(Penalty { value, grad, excluded: Vec::new() })
}

/// `r = softmax(−d)` ⇒ `∂/∂d = −r ⊙ (g_r − ⟨g_r, r⟩)` per row: chains a penalty on
/// responsibilities back to the distances.
pub fn chain_resp_to_d<F: Real>(r: &[F], g_r: &[F], k: usize) -> Vec<F> {
    let mut out = vec![F::ZERO; r.len()];
    for ((rr, gr), o) in r.chunks_exact(k).zip(g_r.chunks_exact(k)).zip(out.chunks_exact_mut(k)) {
        let dot = rr.iter().zip(gr).fold(F::ZERO, |a, (x, y)| a + *x * *y);
        for j in 0..k {
            o[j] = -(rr[j] * (gr[j] - dot));
        }
    }
    out
}

/// Column means and centred columns of `a` (`N × K`), in f64.
fn centred<F: Real>(a: &[F], k: usize, op: &'static str) -> Result<(usize, Vec<f64>)> {
    let n = rows_of(op, a, k)?;
    if n < 2 {
        return Err(LossError::TooFewSamples { op, needed: 2, got: n });
    }
    finite(op, a, k)?;
    let mut mean = vec![0.0; k];
    for row in a.chunks_exact(k) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v.f64();
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let c = a.iter().enumerate().map(|(i, v)| v.f64() - mean[i % k]).collect();
    Ok((n, c))
}

fn col_var(c: &[f64], n: usize, k: usize) -> Vec<f64> {
    let mut v = vec![0.0; k];
    for (i, x) in c.iter().enumerate() {
        v[i % k] += x * x;
    }
    v.iter_mut().for_each(|x| *x /= (n - 1) as f64);
    v
}

/// Variance penalty `−Σ_j log(Var(a_j) + ε)` (unbiased variance); finite for constant units
/// thanks to `ε`.
pub fn variance<F: Real>(a: &[F], k: usize, eps: f64) -> Result<Penalty<F>> {
    let (n, c) = centred(a, k, "variance")?;
    let var = col_var(&c, n, k);
    let value = -var.iter().map(|v| (v + eps).ln()).sum::<f64>();
    let grad = c
        .iter()
        .enumerate()
        .map(|(i, x)| F::of(-2.0 * x / ((n - 1) as f64 * (var[i % k] + eps))))
        .collect();
    Ok(Penalty { value, grad, excluded: Vec::new() })
}

/// VICReg's standard-deviation hinge `mean_j max(0, γ − √(Var(a_j) + ε))`: bounded in scale,
/// unlike `−log Var`, which keeps rewarding larger activations.
pub fn vicreg_std<F: Real>(a: &[F], k: usize, gamma: f64, eps: f64) -> Result<Penalty<F>> {
    let (n, c) = centred(a, k, "vicreg_std")?;
    let var = col_var(&c, n, k);
    let sd: Vec<f64> = var.iter().map(|v| (v + eps).sqrt()).collect();
    let value = sd.iter().map(|s| (gamma - s).max(0.0)).sum::<f64>() / k as f64;
    let grad = c
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let j = i % k;
            if gamma - sd[j] > 0.0 {
                F::of(-(x / ((n - 1) as f64 * sd[j])) / k as f64)
            } else {
                F::ZERO
            }
        })
        .collect();
    Ok(Penalty { value, grad, excluded: Vec::new() })
}

/// Decorrelation `Σ_{i≠j} Corr(a)²_ij` over the batch. Constant units (zero variance) have no
/// correlation: they are excluded and listed in [`Penalty::excluded`], and get zero gradient.
pub fn decorrelation<F: Real>(a: &[F], k: usize) -> Result<Penalty<F>> {
    let (n, c) = centred(a, k, "decorrelation")?;
    let norms: Vec<f64> =
        (0..k).map(|j| (0..n).map(|i| c[i * k + j] * c[i * k + j]).sum::<f64>().sqrt()).collect();
    let scale = norms.iter().fold(0.0f64, |m, &v| m.max(v));
    let excluded: Vec<usize> =
        (0..k).filter(|&j| norms[j] <= 1e-12 * scale.max(1e-300) || norms[j] == 0.0).collect();
    let live: Vec<bool> = (0..k).map(|j| !excluded.contains(&j)).collect();
    // ẑ = standardised columns; R = ẑᵀẑ; f = Σ_{i≠j} R_ij²; ∂f/∂ẑ = 4 ẑ R̃.
    let z: Vec<f64> = c
        .iter()
        .enumerate()
        .map(|(i, x)| if live[i % k] { x / norms[i % k] } else { 0.0 })
        .collect();
    let mut r = vec![0.0; k * k];
    for i in 0..n {
        for p in 0..k {
            for q in 0..k {
                r[p * k + q] += z[i * k + p] * z[i * k + q];
            }
        }
    }
    let mut value = 0.0;
    for p in 0..k {
        r[p * k + p] = 0.0;
        for q in 0..k {
            value += r[p * k + q] * r[p * k + q];
        }
    }
    let mut gz = vec![0.0; n * k];
    for i in 0..n {
        for p in 0..k {
            let mut s = 0.0;
            for q in 0..k {
                s += z[i * k + q] * r[q * k + p];
            }
            gz[i * k + p] = 4.0 * s;
        }
    }
    // Back through ẑ_j = c_j/‖c_j‖ and the centring: centred(g − ẑ⟨ẑ, g⟩)/‖c_j‖.
    let mut grad = vec![F::ZERO; n * k];
    for j in 0..k {
        if !live[j] {
            continue;
        }
        let dotj: f64 = (0..n).map(|i| z[i * k + j] * gz[i * k + j]).sum();
        let col: Vec<f64> = (0..n).map(|i| gz[i * k + j] - z[i * k + j] * dotj).collect();
        let m = col.iter().sum::<f64>() / n as f64;
        for i in 0..n {
            grad[i * k + j] = F::of((col[i] - m) / norms[j]);
        }
    }
    Ok(Penalty { value, grad, excluded })
}

/// Exact volume `−log det(Cov(a) + εI)` (unbiased covariance), through a Cholesky
/// factorisation; `∂/∂a = −2 c (Cov + εI)⁻¹ / (N − 1)` with `c` the centred batch.
pub fn logdet_cov<F: Real>(a: &[F], k: usize, eps: f64) -> Result<Penalty<F>> {
    let (n, c) = centred(a, k, "logdet_cov")?;
    let cm = nalgebra::DMatrix::from_row_slice(n, k, &c);
    let cov = (cm.transpose() * &cm) / (n - 1) as f64 + nalgebra::DMatrix::identity(k, k) * eps;
    let ch = nalgebra::Cholesky::new(cov).ok_or(LossError::Numerical {
        op: "logdet_cov",
        reason: "covariance + εI is not positive definite (raise ε)".into(),
    })?;
    let logdet = 2.0 * ch.l().diagonal().iter().map(|v| v.ln()).sum::<f64>();
    let inv = ch.inverse();
    let g = (&cm * inv) * (-2.0 / (n - 1) as f64);
    let grad = (0..n * k).map(|i| F::of(g[(i / k, i % k)])).collect();
    Ok(Penalty { value: -logdet, grad, excluded: Vec::new() })
}

/// Weight orthogonality `‖Ŵ Ŵᵀ − I‖²_F` of the row-normalised `W` (`K × D`). Its minimum is
/// `max(0, K²/D − K)`, not 0, when `K > D`. Zero rows are [`LossError::Numerical`].
pub fn orthogonality<F: Real>(w: &[F], k: usize, d: usize) -> Result<Penalty<F>> {
    rows_of("orthogonality", w, d)?;
    finite("orthogonality", w, d)?;
    let norms: Vec<f64> = (0..k)
        .map(|j| w[j * d..(j + 1) * d].iter().map(|v| v.f64() * v.f64()).sum::<f64>().sqrt())
        .collect();
    if let Some(j) = norms.iter().position(|&v| v == 0.0) {
        return Err(LossError::Numerical {
            op: "orthogonality",
            reason: format!("row {j} of W is zero"),
        });
    }
    let wh: Vec<f64> = w.iter().enumerate().map(|(i, v)| v.f64() / norms[i / d]).collect();
    let mut g = vec![0.0; k * k];
    for p in 0..k {
        for q in 0..k {
            let mut s: f64 = (0..d).map(|c| wh[p * d + c] * wh[q * d + c]).sum();
            if p == q {
                s -= 1.0;
            }
            g[p * k + q] = s;
        }
    }
    let value = g.iter().map(|v| v * v).sum();
    // ∂f/∂Ŵ = 4 G Ŵ; back through ŵ = w/‖w‖: (g − ŵ⟨ŵ, g⟩)/‖w‖.
    let mut grad = vec![F::ZERO; k * d];
    for p in 0..k {
        let gw: Vec<f64> = (0..d)
            .map(|c| 4.0 * (0..k).map(|q| g[p * k + q] * wh[q * d + c]).sum::<f64>())
            .collect();
        let dotp: f64 = (0..d).map(|c| gw[c] * wh[p * d + c]).sum();
        for c in 0..d {
            grad[p * d + c] = F::of((gw[c] - wh[p * d + c] * dotp) / norms[p]);
        }
    }
    Ok(Penalty { value, grad, excluded: Vec::new() })
}

/// Sinkhorn–Knopp equipartition targets (SwAV): from scores `s` (`N × K`, higher = more
/// likely) computes `Q ∝ exp(s/ε)` rescaled alternately so that every column has mass
/// `N/K` and every row mass 1; returns `Q` with rows summing to 1. Not back-propagated: use
/// it as the target of [`crate::loss::soft_cross_entropy`].
pub fn sinkhorn<F: Real>(scores: &[F], k: usize, eps: f64, iters: usize) -> Result<Vec<F>> {
    let n = rows_of("sinkhorn", scores, k)?;
    if n == 0 {
        return Err(LossError::EmptyBatch { op: "sinkhorn" });
    }
    finite("sinkhorn", scores, k)?;
    let m = scores.iter().fold(f64::NEG_INFINITY, |a, v| a.max(v.f64()));
    let mut q: Vec<f64> = scores.iter().map(|v| ((v.f64() - m) / eps).exp()).collect();
    for _ in 0..iters {
        for j in 0..k {
            let s: f64 = (0..n).map(|i| q[i * k + j]).sum();
            let f = if s > 0.0 { (n as f64 / k as f64) / s } else { 0.0 };
            (0..n).for_each(|i| q[i * k + j] *= f);
        }
        for row in q.chunks_exact_mut(k) {
            let s: f64 = row.iter().sum();
            if s > 0.0 {
                row.iter_mut().for_each(|v| *v /= s);
            }
        }
    }
    Ok(q.into_iter().map(F::of).collect())
}

/// Weight normalisation `w_j = γ_j v_j / ‖v_j‖` of `v` (`K × D`).
pub fn weight_norm<F: Real>(v: &[F], gamma: &[F], d: usize) -> Vec<F> {
    let mut w = v.to_vec();
    for (j, row) in w.chunks_exact_mut(d).enumerate() {
        let nrm = row.iter().fold(F::ZERO, |a, &x| a + x * x).sqrt();
        let s = if nrm > F::ZERO { gamma[j] / nrm } else { F::ZERO };
        row.iter_mut().for_each(|x| *x = *x * s);
    }
    w
}

/// Backward of [`weight_norm`]: from `∂L/∂w` gives `(∂L/∂v, ∂L/∂γ)`:
/// `∂L/∂γ_j = ⟨g_j, v̂_j⟩`, `∂L/∂v_j = (γ_j/‖v_j‖)(g_j − v̂_j ⟨v̂_j, g_j⟩)`.
pub fn weight_norm_backward<F: Real>(v: &[F], gamma: &[F], gw: &[F], d: usize) -> (Vec<F>, Vec<F>) {
    let k = gamma.len();
    let mut dv = vec![F::ZERO; v.len()];
    let mut dg = vec![F::ZERO; k];
    for j in 0..k {
        let row = &v[j * d..(j + 1) * d];
        let nrm = row.iter().fold(F::ZERO, |a, &x| a + x * x).sqrt();
        if nrm == F::ZERO {
            continue;
        }
        let g = &gw[j * d..(j + 1) * d];
        let dot = row.iter().zip(g).fold(F::ZERO, |a, (x, y)| a + *x * *y) / nrm;
        dg[j] = dot;
        for c in 0..d {
            dv[j * d + c] = gamma[j] / nrm * (g[c] - row[c] / nrm * dot);
        }
    }
    (dv, dg)
}

/// A volume control as configuration data (for experiment specs), with its weight λ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum VolumeControl {
    /// No control.
    None,
    /// Weight normalisation of the layer's weights (a reparameterisation, no penalty).
    WeightNorm,
    /// A learned temperature (a reparameterisation, no penalty).
    LearnedTemperature,
    /// The Gaussian distances' own log-determinant term (a choice of distance, no penalty).
    LogDet,
    /// `λ · KL(r̄ ‖ uniform)`.
    Balance {
        /// λ.
        weight: f64,
    },
    /// `λ · (−H(r̄))`.
    UsageEntropy {
        /// λ.
        weight: f64,
    },
    /// `λ · (−I(x; j))`.
    MutualInformation {
        /// λ.
        weight: f64,
    },
    /// `λ · (−Σ log(Var + ε))`.
    Variance {
        /// λ.
        weight: f64,
        /// ε.
        eps: f64,
    },
    /// `λ · Σ_{i≠j} Corr²`.
    Decorrelation {
        /// λ.
        weight: f64,
    },
    /// `λ · (−log det(Cov + εI))`.
    LogDetCov {
        /// λ.
        weight: f64,
        /// ε.
        eps: f64,
    },
    /// `λ · mean max(0, γ − √(Var + ε))`.
    VicregStd {
        /// λ.
        weight: f64,
        /// γ (target standard deviation).
        gamma: f64,
    },
    /// `λ · ‖ŴŴᵀ − I‖²`.
    Orthogonality {
        /// λ.
        weight: f64,
    },
    /// Sinkhorn targets with soft cross-entropy, weighted by λ.
    Sinkhorn {
        /// λ.
        weight: f64,
        /// Entropic ε.
        eps: f64,
        /// Iterations.
        iters: usize,
    },
}
