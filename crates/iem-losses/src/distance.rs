//! Distance (energy) layers: `x ∈ R^D ↦ d ∈ R^K`, batched over row-major `N × D` inputs,
//! generic over `f32`/`f64`, each with input and parameter gradients.
//!
//! | layer | `d_j(x)` | parameters (in `params()` order) |
//! | --- | --- | --- |
//! | [`SqEuclidean`] | `‖x − μ_j‖² / (2τ)` | μ (K×D) |
//! | [`DiagGaussian`] | `½ Σ_k ((x_k − μ_jk)/σ_jk)² + Σ_k log σ_jk − log π_j` | μ, log σ (K×D), logits of π (K) |
//! | [`FullGaussian`] | `½ ‖W_j x + b_j‖² − log\|det W_j\| − log π_j`, `W_j` upper triangular | W (K×D×D), b (K×D), logits (K) |
//! | [`Affine`] | `−(w_j·x + b_j)` | W (K×D), b (K) |
//! | [`ReluDistance`] | `relu(w_j·x + b_j)` | W (K×D), b (K) |
//! | [`OffsetL2`] | `‖α_j ⊙ (x − μ_j)‖` | α (K×D), μ (K×D) |
//!
//! With the LSE loss, the Gaussian layers give exactly the mixture's negative log-likelihood
//! up to the constant `(D/2) log 2π`: their `Σ log σ` / `−log|det W|` terms are the
//! log-determinant volume control of a GMM.

use crate::{LossError, Real, Result, finite, rows_of};
use serde::{Deserialize, Serialize};

/// Gradients of a distance layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Grads<F> {
    /// `∂L/∂x` (`N × D`).
    pub d_x: Vec<F>,
    /// `∂L/∂p` for each parameter tensor, in the layer's `params()` order.
    pub d_params: Vec<Vec<F>>,
}

fn check_in<F: Real>(op: &'static str, x: &[F], d: usize) -> Result<usize> {
    let n = rows_of(op, x, d)?;
    finite(op, x, d)?;
    Ok(n)
}

fn check_g<F: Real>(op: &'static str, g: &[F], n: usize, k: usize) -> Result<()> {
    if g.len() != n * k {
        return Err(LossError::Shape {
            op,
            expected: format!("∂L/∂d of {n}×{k}"),
            got: format!("{} values", g.len()),
        });
    }
    Ok(())
}

fn log_softmax<F: Real>(z: &[F]) -> Vec<F> {
    let m = z.iter().fold(F::NEG_INF, |a, &b| a.max(b));
    let mut s = F::ZERO;
    for &v in z {
        s += (v - m).exp();
    }
    let l = m + s.ln();
    z.iter().map(|&v| v - l).collect()
}

/// `∂/∂logits` of `Σ_n Σ_j G_nj (−log π_j)`: `Σ_n (π_i Σ_j G_nj − G_ni)`.
fn logits_grad<F: Real>(logits: &[F], g: &[F], k: usize) -> Vec<F> {
    let pi: Vec<F> = log_softmax(logits).iter().map(|v| v.exp()).collect();
    let mut out = vec![F::ZERO; k];
    for row in g.chunks_exact(k) {
        let s = row.iter().fold(F::ZERO, |a, &b| a + b);
        for i in 0..k {
            out[i] += pi[i] * s - row[i];
        }
    }
    out
}

/// Squared Euclidean distance to learned prototypes, `d_j = ‖x − μ_j‖² / (2τ)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SqEuclidean<F> {
    /// Prototypes, `K × D` row-major.
    pub mu: Vec<F>,
    /// Components.
    pub k: usize,
    /// Input dimension.
    pub d: usize,
    /// Temperature τ > 0 (fixed).
    pub tau: F,
}

impl<F: Real> SqEuclidean<F> {
    /// `K` prototypes of dimension `d`, τ = 1/2 (so `d_j = ‖x − μ_j‖²`).
    pub fn new(k: usize, d: usize, mu: Vec<F>) -> Self {
        SqEuclidean { mu, k, d, tau: F::of(0.5) }
    }
    /// Parameter tensors: `[μ]`.
    pub fn params(&self) -> Vec<&[F]> {
        vec![&self.mu]
    }
    /// Mutable parameter tensors.
    pub fn params_mut(&mut self) -> Vec<&mut Vec<F>> {
        vec![&mut self.mu]
    }
    /// Distances `N × K`, computed directly (exact; see [`SqEuclidean::forward_gemm`] for
    /// the one-GEMM f32 path).
    pub fn forward(&self, x: &[F]) -> Result<Vec<F>> {
        let n = check_in("SqEuclidean::forward", x, self.d)?;
        let c = F::ONE / (F::of(2.0) * self.tau);
        let mut out = vec![F::ZERO; n * self.k];
        for i in 0..n {
            let xi = &x[i * self.d..(i + 1) * self.d];
            for j in 0..self.k {
                let mut s = F::ZERO;
                for (a, b) in xi.iter().zip(&self.mu[j * self.d..(j + 1) * self.d]) {
                    s += (*a - *b) * (*a - *b);
                }
                out[i * self.k + j] = s * c;
            }
        }
        Ok(out)
    }
    /// Gradients given `G = ∂L/∂d`:
    /// `∂L/∂μ_j = Σ_n G_nj (μ_j − x_n)/τ`, `∂L/∂x_n = Σ_j G_nj (x_n − μ_j)/τ`.
    pub fn backward(&self, x: &[F], g: &[F]) -> Result<Grads<F>> {
        let n = check_in("SqEuclidean::backward", x, self.d)?;
        check_g("SqEuclidean::backward", g, n, self.k)?;
        let (k, d) = (self.k, self.d);
        let it = F::ONE / self.tau;
        let mut dx = vec![F::ZERO; n * d];
        let mut dmu = vec![F::ZERO; k * d];
        for i in 0..n {
            for j in 0..k {
                let gij = g[i * k + j] * it;
                for c in 0..d {
                    let diff = x[i * d + c] - self.mu[j * d + c];
                    dx[i * d + c] += gij * diff;
                    dmu[j * d + c] += -(gij * diff);
                }
            }
        }
        Ok(Grads { d_x: dx, d_params: vec![dmu] })
    }
}

impl SqEuclidean<f32> {
    /// The f32 fast path: `(‖x‖² − 2x·μ + ‖μ‖²)/(2τ)` through one GEMM, clamped at 0.
    pub fn forward_gemm(&self, x: &[f32], par: iem_simd::Par) -> Result<Vec<f32>> {
        let n = check_in("SqEuclidean::forward_gemm", x, self.d)?;
        let mut out = vec![0.0f32; n * self.k];
        iem_simd::distance::sq_distances(x, &self.mu, n, self.d, self.k, &mut out, par);
        let c = 1.0 / (2.0 * self.tau);
        out.iter_mut().for_each(|v| *v *= c);
        Ok(out)
    }
}

/// Diagonal Gaussian energies with their log-determinant term and mixing weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiagGaussian<F> {
    /// Means, `K × D`.
    pub mu: Vec<F>,
    /// `log σ`, `K × D`.
    pub log_sigma: Vec<F>,
    /// Mixing logits, `π = softmax(logits)`.
    pub logits: Vec<F>,
    /// Components.
    pub k: usize,
    /// Dimension.
    pub d: usize,
}

impl<F: Real> DiagGaussian<F> {
    /// `K` unit-variance, equally weighted components at `mu`.
    pub fn new(k: usize, d: usize, mu: Vec<F>) -> Self {
        DiagGaussian { mu, log_sigma: vec![F::ZERO; k * d], logits: vec![F::ZERO; k], k, d }
    }
    /// Parameter tensors: `[μ, log σ, logits]`.
    pub fn params(&self) -> Vec<&[F]> {
        vec![&self.mu, &self.log_sigma, &self.logits]
    }
    /// Mutable parameter tensors.
    pub fn params_mut(&mut self) -> Vec<&mut Vec<F>> {
        vec![&mut self.mu, &mut self.log_sigma, &mut self.logits]
    }
    /// Energies `N × K` (negative log densities up to `(D/2) log 2π`).
    pub fn forward(&self, x: &[F]) -> Result<Vec<F>> {
        let n = check_in("DiagGaussian::forward", x, self.d)?;
        let (k, d) = (self.k, self.d);
        let lp = log_softmax(&self.logits);
        let half = F::of(0.5);
        let mut out = vec![F::ZERO; n * k];
        for i in 0..n {
            for j in 0..k {
                let mut s = F::ZERO;
                for c in 0..d {
                    let ls = self.log_sigma[j * d + c];
                    let u = (x[i * d + c] - self.mu[j * d + c]) * (-ls).exp();
                    s += half * u * u + ls;
                }
                out[i * k + j] = s - lp[j];
            }
        }
        Ok(out)
    }
    /// Gradients given `G = ∂L/∂d`.
    pub fn backward(&self, x: &[F], g: &[F]) -> Result<Grads<F>> {
        let n = check_in("DiagGaussian::backward", x, self.d)?;
        check_g("DiagGaussian::backward", g, n, self.k)?;
        let (k, d) = (self.k, self.d);
        let mut dx = vec![F::ZERO; n * d];
        let mut dmu = vec![F::ZERO; k * d];
        let mut dls = vec![F::ZERO; k * d];
        for i in 0..n {
            for j in 0..k {
                let gij = g[i * k + j];
                for c in 0..d {
                    let ls = self.log_sigma[j * d + c];
                    let inv_var = (-(ls + ls)).exp();
                    let diff = x[i * d + c] - self.mu[j * d + c];
                    dx[i * d + c] += gij * diff * inv_var;
                    dmu[j * d + c] += -(gij * diff * inv_var);
                    dls[j * d + c] += gij * (F::ONE - diff * diff * inv_var);
                }
            }
        }
        let dl = logits_grad(&self.logits, g, k);
        Ok(Grads { d_x: dx, d_params: vec![dmu, dls, dl] })
    }
}

/// Full-covariance Gaussian energies, one square map per component:
/// `E_j(x) = ½‖W_j x + b_j‖² − log|det W_j| − log π_j` with `W_j` upper triangular
/// (`W_jᵀW_j` is the precision, `μ_j = −W_j⁻¹ b_j`). Entries below the diagonal are ignored
/// and get zero gradient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FullGaussian<F> {
    /// Maps, `K × D × D` row-major (upper triangles used).
    pub w: Vec<F>,
    /// Offsets, `K × D`.
    pub b: Vec<F>,
    /// Mixing logits.
    pub logits: Vec<F>,
    /// Components.
    pub k: usize,
    /// Dimension.
    pub d: usize,
}

impl<F: Real> FullGaussian<F> {
    /// Builds the layer from means and covariances (each `D × D`, row-major, SPD):
    /// `W_j = chol(Σ_j⁻¹)ᵀ`, `b_j = −W_j μ_j`, equal weights.
    pub fn from_gaussians(d: usize, means: &[Vec<f64>], covs: &[Vec<f64>]) -> Result<Self> {
        let k = means.len();
        let mut w = Vec::with_capacity(k * d * d);
        let mut b = Vec::with_capacity(k * d);
        for (j, (m, c)) in means.iter().zip(covs).enumerate() {
            let cov = nalgebra::DMatrix::from_row_slice(d, d, c);
            let prec = cov.try_inverse().ok_or(LossError::Singular { component: j })?;
            let ch = nalgebra::Cholesky::new(prec).ok_or(LossError::Singular { component: j })?;
            let u = ch.l().transpose();
            let mv = nalgebra::DVector::from_column_slice(m);
            let bj = -(&u * mv);
            for r in 0..d {
                for cc in 0..d {
                    w.push(F::of(u[(r, cc)]));
                }
            }
            b.extend(bj.iter().map(|&v| F::of(v)));
        }
        Ok(FullGaussian { w, b, logits: vec![F::ZERO; k], k, d })
    }
    /// Parameter tensors: `[W, b, logits]`.
    pub fn params(&self) -> Vec<&[F]> {
        vec![&self.w, &self.b, &self.logits]
    }
    /// Mutable parameter tensors.
    pub fn params_mut(&mut self) -> Vec<&mut Vec<F>> {
        vec![&mut self.w, &mut self.b, &mut self.logits]
    }
    fn logdet(&self, j: usize) -> Result<F> {
        let d = self.d;
        let mut s = F::ZERO;
        for c in 0..d {
            let v = self.w[j * d * d + c * d + c];
            if v == F::ZERO || !v.is_finite() {
                return Err(LossError::Singular { component: j });
            }
            s += if v < F::ZERO { (-v).ln() } else { v.ln() };
        }
        Ok(s)
    }
    fn y(&self, j: usize, x: &[F]) -> Vec<F> {
        let d = self.d;
        (0..d)
            .map(|r| {
                let mut s = self.b[j * d + r];
                for c in r..d {
                    s += self.w[j * d * d + r * d + c] * x[c];
                }
                s
            })
            .collect()
    }
    /// Energies `N × K`; a singular `W_j` is [`LossError::Singular`].
    pub fn forward(&self, x: &[F]) -> Result<Vec<F>> {
        let n = check_in("FullGaussian::forward", x, self.d)?;
        let (k, d) = (self.k, self.d);
        let lp = log_softmax(&self.logits);
        let ld: Vec<F> = (0..k).map(|j| self.logdet(j)).collect::<Result<_>>()?;
        let mut out = vec![F::ZERO; n * k];
        for i in 0..n {
            let xi = &x[i * d..(i + 1) * d];
            for j in 0..k {
                let y = self.y(j, xi);
                let q = y.iter().fold(F::ZERO, |a, &v| a + v * v);
                out[i * k + j] = F::of(0.5) * q - ld[j] - lp[j];
            }
        }
        Ok(out)
    }
    /// Gradients given `G = ∂L/∂E`: with `y = W x + b`,
    /// `∂E/∂W = triu(y xᵀ) − diag(1/W_cc)`, `∂E/∂b = y`, `∂E/∂x = Wᵀ y`.
    pub fn backward(&self, x: &[F], g: &[F]) -> Result<Grads<F>> {
        let n = check_in("FullGaussian::backward", x, self.d)?;
        check_g("FullGaussian::backward", g, n, self.k)?;
        let (k, d) = (self.k, self.d);
        for j in 0..k {
            self.logdet(j)?;
        }
        let mut dx = vec![F::ZERO; n * d];
        let mut dw = vec![F::ZERO; k * d * d];
        let mut db = vec![F::ZERO; k * d];
        for i in 0..n {
            let xi = &x[i * d..(i + 1) * d];
            for j in 0..k {
                let gij = g[i * k + j];
                let y = self.y(j, xi);
                for r in 0..d {
                    db[j * d + r] += gij * y[r];
                    for c in r..d {
                        dw[j * d * d + r * d + c] += gij * y[r] * xi[c];
                        dx[i * d + c] += gij * self.w[j * d * d + r * d + c] * y[r];
                    }
                }
                for c in 0..d {
                    dw[j * d * d + c * d + c] += -(gij / self.w[j * d * d + c * d + c]);
                }
            }
        }
        let dl = logits_grad(&self.logits, g, k);
        Ok(Grads { d_x: dx, d_params: vec![dw, db, dl] })
    }
}

/// `z = W x + b` for `W: K × D`.
fn affine<F: Real>(w: &[F], b: &[F], x: &[F], n: usize, k: usize, d: usize) -> Vec<F> {
    let mut z = vec![F::ZERO; n * k];
    for i in 0..n {
        for j in 0..k {
            let mut s = b[j];
            for c in 0..d {
                s += w[j * d + c] * x[i * d + c];
            }
            z[i * k + j] = s;
        }
    }
    z
}

/// Gradients of `z = W x + b` given `∂L/∂z`.
fn affine_back<F: Real>(w: &[F], x: &[F], gz: &[F], n: usize, k: usize, d: usize) -> Grads<F> {
    let mut dx = vec![F::ZERO; n * d];
    let mut dw = vec![F::ZERO; k * d];
    let mut db = vec![F::ZERO; k];
    for i in 0..n {
        for j in 0..k {
            let gij = gz[i * k + j];
            db[j] += gij;
            for c in 0..d {
                dw[j * d + c] += gij * x[i * d + c];
                dx[i * d + c] += gij * w[j * d + c];
            }
        }
    }
    Grads { d_x: dx, d_params: vec![dw, db] }
}

/// A hidden unit read as a signed distance to its hyperplane: `d_j = −(w_j·x + b_j)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Affine<F> {
    /// Weights, `K × D`.
    pub w: Vec<F>,
    /// Biases, `K`.
    pub b: Vec<F>,
    /// Units.
    pub k: usize,
    /// Input dimension.
    pub d: usize,
}

impl<F: Real> Affine<F> {
    /// Parameter tensors: `[W, b]`.
    pub fn params(&self) -> Vec<&[F]> {
        vec![&self.w, &self.b]
    }
    /// Mutable parameter tensors.
    pub fn params_mut(&mut self) -> Vec<&mut Vec<F>> {
        vec![&mut self.w, &mut self.b]
    }
    /// Distances `N × K`.
    pub fn forward(&self, x: &[F]) -> Result<Vec<F>> {
        let n = check_in("Affine::forward", x, self.d)?;
        Ok(affine(&self.w, &self.b, x, n, self.k, self.d).into_iter().map(|v| -v).collect())
    }
    /// Gradients given `∂L/∂d`.
    pub fn backward(&self, x: &[F], g: &[F]) -> Result<Grads<F>> {
        let n = check_in("Affine::backward", x, self.d)?;
        check_g("Affine::backward", g, n, self.k)?;
        let neg: Vec<F> = g.iter().map(|&v| -v).collect();
        Ok(affine_back(&self.w, x, &neg, n, self.k, self.d))
    }
}

/// `d_j = relu(w_j·x + b_j)` (derivative 0 at the kink).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReluDistance<F> {
    /// Weights, `K × D`.
    pub w: Vec<F>,
    /// Biases, `K`.
    pub b: Vec<F>,
    /// Units.
    pub k: usize,
    /// Input dimension.
    pub d: usize,
}

impl<F: Real> ReluDistance<F> {
    /// Parameter tensors: `[W, b]`.
    pub fn params(&self) -> Vec<&[F]> {
        vec![&self.w, &self.b]
    }
    /// Mutable parameter tensors.
    pub fn params_mut(&mut self) -> Vec<&mut Vec<F>> {
        vec![&mut self.w, &mut self.b]
    }
    /// Distances `N × K`.
    pub fn forward(&self, x: &[F]) -> Result<Vec<F>> {
        let n = check_in("ReluDistance::forward", x, self.d)?;
        Ok(affine(&self.w, &self.b, x, n, self.k, self.d)
            .into_iter()
            .map(|v| v.max(F::ZERO))
            .collect())
    }
    /// Gradients given `∂L/∂d`.
    pub fn backward(&self, x: &[F], g: &[F]) -> Result<Grads<F>> {
        let n = check_in("ReluDistance::backward", x, self.d)?;
        check_g("ReluDistance::backward", g, n, self.k)?;
        let z = affine(&self.w, &self.b, x, n, self.k, self.d);
        let gz: Vec<F> =
            z.iter().zip(g).map(|(&z, &g)| if z > F::ZERO { g } else { F::ZERO }).collect();
        Ok(affine_back(&self.w, x, &gz, n, self.k, self.d))
    }
}

/// `d_j = ‖α_j ⊙ (x − μ_j)‖` (not squared); its gradient at `d = 0` is taken as 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OffsetL2<F> {
    /// Per-prototype, per-dimension scales, `K × D`.
    pub alpha: Vec<F>,
    /// Prototypes, `K × D`.
    pub mu: Vec<F>,
    /// Units.
    pub k: usize,
    /// Input dimension.
    pub d: usize,
}

impl<F: Real> OffsetL2<F> {
    /// Parameter tensors: `[α, μ]`.
    pub fn params(&self) -> Vec<&[F]> {
        vec![&self.alpha, &self.mu]
    }
    /// Mutable parameter tensors.
    pub fn params_mut(&mut self) -> Vec<&mut Vec<F>> {
        vec![&mut self.alpha, &mut self.mu]
    }
    /// Distances `N × K`.
    pub fn forward(&self, x: &[F]) -> Result<Vec<F>> {
        let n = check_in("OffsetL2::forward", x, self.d)?;
        let (k, d) = (self.k, self.d);
        let mut out = vec![F::ZERO; n * k];
        for i in 0..n {
            for j in 0..k {
                let mut s = F::ZERO;
                for c in 0..d {
                    let u = self.alpha[j * d + c] * (x[i * d + c] - self.mu[j * d + c]);
                    s += u * u;
                }
                out[i * k + j] = s.sqrt();
            }
        }
        Ok(out)
    }
    /// Gradients given `∂L/∂d`.
    pub fn backward(&self, x: &[F], g: &[F]) -> Result<Grads<F>> {
        let n = check_in("OffsetL2::backward", x, self.d)?;
        check_g("OffsetL2::backward", g, n, self.k)?;
        let dist = self.forward(x)?;
        let (k, d) = (self.k, self.d);
        let mut dx = vec![F::ZERO; n * d];
        let mut da = vec![F::ZERO; k * d];
        let mut dmu = vec![F::ZERO; k * d];
        for i in 0..n {
            for j in 0..k {
                let dd = dist[i * k + j];
                if dd == F::ZERO {
                    continue;
                }
                let gij = g[i * k + j] / dd;
                for c in 0..d {
                    let a = self.alpha[j * d + c];
                    let diff = x[i * d + c] - self.mu[j * d + c];
                    let u = a * diff;
                    dx[i * d + c] += gij * u * a;
                    dmu[j * d + c] += -(gij * u * a);
                    da[j * d + c] += gij * u * diff;
                }
            }
        }
        Ok(Grads { d_x: dx, d_params: vec![da, dmu] })
    }
}
