//! The closed set of activations, their configuration, validation and static properties.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Temperature of a softmax: fixed, or learned as `τ = exp θ` (θ is the one parameter).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Temperature {
    /// A constant `τ > 0`.
    Fixed(f32),
    /// Learned `τ = exp θ`, starting at the given `τ > 0` (θ₀ = ln τ₀).
    Learned(f32),
}

impl Default for Temperature {
    fn default() -> Self {
        Temperature::Fixed(1.0)
    }
}

fn one() -> f32 {
    1.0
}
fn ln_eps() -> f32 {
    1e-5
}

/// An activation `a = f(z)` applied to each row (sample) of a batch.
///
/// Every variant documents its formula, Jacobian `J = ∂a/∂z`, and its convention at kinks and
/// ties. "Zero-sum" means the input gradient `Jᵀg` sums to zero across units for every `g`,
/// which holds exactly when `f(z + c·1) = f(z)` (shift invariance): raising one unit's
/// pre-activation takes from the others. See the crate docs for the full table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Activation {
    /// `a = max(z, 0)`; `J = diag(1[z > 0])`, so `ReLU′(0) = 0`. Not zero-sum.
    Relu,
    /// `a = |z|`; `J = diag(sign z)` with `sign 0 = 0`. Not zero-sum.
    Abs,
    /// `a = softmax(z/τ)`; `J = (diag(s) − s sᵀ)/τ` (symmetric). Zero-sum.
    /// With a learned temperature `τ = exp θ`: `∂L/∂θ = −Σ_i g_i s_i (z_i − ⟨z, s⟩)/τ`.
    /// A row of all `−∞` maps to the uniform distribution.
    Softmax {
        /// Fixed or learned temperature (default fixed 1).
        #[serde(default)]
        temperature: Temperature,
    },
    /// `a = z − lse(z)`; `J = I − 1 sᵀ`, `s = softmax(z)`. Zero-sum.
    LogSoftmax,
    /// Negative log-softmax of distances, `a = d + lse(−d) = −log softmax(−d)`:
    /// `J = I − 1 rᵀ` with `r = softmax(−d)`. Zero-sum.
    Nls,
    /// SoLU `a = z ⊙ softmax(z)`; `J = diag(s) + diag(z)(diag(s) − s sᵀ)`. Not zero-sum.
    Solu,
    /// Softmax with temperature `tau` inside each contiguous block of `group` units
    /// (`group` divides the width); block-diagonal Jacobian. Zero-sum (per block, hence in
    /// total).
    GroupedSoftmax {
        /// Units per group.
        group: usize,
        /// Fixed temperature (default 1).
        #[serde(default = "one")]
        tau: f32,
    },
    /// SoLU inside each contiguous block of `group` units. Not zero-sum.
    GroupedSolu {
        /// Units per group.
        group: usize,
    },
    /// Sparsemax (Martins & Astudillo 2016): the Euclidean projection of `z` onto the simplex,
    /// `a = max(z − τ(z), 0)`. On the support `S = {i : a_i > 0}`,
    /// `J = I_S − 1_S 1_Sᵀ/|S|`, zero off it. Zero-sum.
    Sparsemax,
    /// 1.5-entmax (Peters et al. 2019): `a = [z/2 − τ]₊²` with `τ` such that `Σ a = 1`.
    /// With `u = √a`, `J = diag(u) − u uᵀ / Σu`. Zero-sum.
    Entmax15,
    /// Hard local winner-take-all in blocks of `block` units: `a_i = z_i` if `z_i` is its
    /// block's maximum, else 0; ties go to the lowest index. `J = diag(winner mask)`.
    /// Not zero-sum.
    Lwta {
        /// Units per block.
        block: usize,
    },
    /// Maxout: the maximum of each block of `block` units; output width `K / block`. The
    /// gradient goes to the (lowest-index) arg-max. Not zero-sum.
    Maxout {
        /// Units per block.
        block: usize,
    },
    /// Keeps the `k` largest units, zeroing the rest; ties go to the lowest index.
    /// `J = diag(kept mask)`. Not zero-sum.
    TopK {
        /// Units kept per row.
        k: usize,
    },
    /// The "triangle" code of Coates & Ng (2011) on distances: `a_k = max(0, μ − d_k)`,
    /// `μ = mean_j d_j`; `J_kj = 1[a_k > 0](1/K − δ_kj)` (derivative 0 at the kink).
    /// Zero-sum.
    Triangle,
    /// LayerNorm with learned gain `γ` and bias `β` (2K parameters, `γ = 1`, `β = 0` at
    /// start): `a = γ ⊙ (z − μ)/√(σ² + ε) + β` with the biased variance. Zero-sum (its input
    /// gradient is shift-invariant), which makes SoLU → LayerNorm a competitive pair.
    LayerNorm {
        /// Variance floor ε (default 1e-5).
        #[serde(default = "ln_eps")]
        eps: f32,
    },
}

/// An invalid activation configuration for a given width.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    /// The activation's name.
    pub activation: String,
    /// Input width it was configured for.
    pub width: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "activation {} at width {}: {}", self.activation, self.width, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Activation {
    /// Every activation kind with a representative configuration for width `k` (grouped
    /// ones use `m = 2` when it divides `k`, else `m = 1`; top-k keeps `max(1, k/4)`), for
    /// tests, tables and benchmarks.
    pub fn all(k: usize) -> Vec<Activation> {
        let m = if k.is_multiple_of(2) { 2 } else { 1 };
        vec![
            Activation::Relu,
            Activation::Abs,
            Activation::Softmax { temperature: Temperature::Fixed(1.0) },
            Activation::Softmax { temperature: Temperature::Learned(0.7) },
            Activation::LogSoftmax,
            Activation::Nls,
            Activation::Solu,
            Activation::GroupedSoftmax { group: m, tau: 1.0 },
            Activation::GroupedSolu { group: m },
            Activation::Sparsemax,
            Activation::Entmax15,
            Activation::Lwta { block: m },
            Activation::Maxout { block: m },
            Activation::TopK { k: (k / 4).max(1) },
            Activation::Triangle,
            Activation::LayerNorm { eps: 1e-5 },
        ]
    }

    /// A short stable name (`softmax`, `softmax_learned_tau`, `grouped_softmax_m4`, ...).
    pub fn name(&self) -> String {
        match self {
            Activation::Relu => "relu".into(),
            Activation::Abs => "abs".into(),
            Activation::Softmax { temperature: Temperature::Fixed(t) } if *t == 1.0 => {
                "softmax".into()
            }
            Activation::Softmax { temperature: Temperature::Fixed(t) } => format!("softmax_tau{t}"),
            Activation::Softmax { temperature: Temperature::Learned(_) } => {
                "softmax_learned_tau".into()
            }
            Activation::LogSoftmax => "log_softmax".into(),
            Activation::Nls => "nls".into(),
            Activation::Solu => "solu".into(),
            Activation::GroupedSoftmax { group, .. } => format!("grouped_softmax_m{group}"),
            Activation::GroupedSolu { group } => format!("grouped_solu_m{group}"),
            Activation::Sparsemax => "sparsemax".into(),
            Activation::Entmax15 => "entmax15".into(),
            Activation::Lwta { block } => format!("lwta_m{block}"),
            Activation::Maxout { block } => format!("maxout_m{block}"),
            Activation::TopK { k } => format!("top{k}"),
            Activation::Triangle => "triangle".into(),
            Activation::LayerNorm { .. } => "layer_norm".into(),
        }
    }

    /// Checks the configuration for input width `k`.
    pub fn validate(&self, k: usize) -> Result<(), ConfigError> {
        let err = |reason: String| Err(ConfigError { activation: self.name(), width: k, reason });
        if k == 0 {
            return err("width must be at least 1".into());
        }
        match *self {
            Activation::Softmax {
                temperature: Temperature::Fixed(t) | Temperature::Learned(t),
            } if !(t > 0.0 && t.is_finite()) => {
                err(format!("temperature must be finite and > 0, got {t}"))
            }
            Activation::GroupedSoftmax { tau, .. } if !(tau > 0.0 && tau.is_finite()) => {
                err(format!("temperature must be finite and > 0, got {tau}"))
            }
            Activation::GroupedSoftmax { group: m, .. }
            | Activation::GroupedSolu { group: m }
            | Activation::Lwta { block: m }
            | Activation::Maxout { block: m }
                if m == 0 || !k.is_multiple_of(m) =>
            {
                err(format!("group size {m} must divide the width {k}"))
            }
            Activation::TopK { k: kk } if kk == 0 || kk > k => {
                err(format!("top-k needs 1 ≤ k ≤ width, got k = {kk}"))
            }
            Activation::LayerNorm { eps } if eps.is_nan() || eps <= 0.0 => {
                err(format!("eps must be > 0, got {eps}"))
            }
            _ => Ok(()),
        }
    }

    /// Output width for input width `k` (`k / block` for maxout, else `k`).
    pub fn output_width(&self, k: usize) -> usize {
        match self {
            Activation::Maxout { block } if *block > 0 => k / block,
            _ => k,
        }
    }

    /// Number of the activation's own parameters at width `k`.
    pub fn num_params(&self, k: usize) -> usize {
        match self {
            Activation::Softmax { temperature: Temperature::Learned(_) } => 1,
            Activation::LayerNorm { .. } => 2 * k,
            _ => 0,
        }
    }

    /// Initial parameters: `θ = ln τ₀` for a learned temperature; `γ = 1, β = 0` for
    /// LayerNorm (gain first, then bias).
    pub fn init_params(&self, k: usize) -> Vec<f32> {
        match self {
            Activation::Softmax { temperature: Temperature::Learned(t) } => vec![t.ln()],
            Activation::LayerNorm { .. } => {
                let mut p = vec![1.0; k];
                p.extend(std::iter::repeat_n(0.0, k));
                p
            }
            _ => Vec::new(),
        }
    }

    /// Whether the input gradient sums to zero across units for every upstream gradient
    /// (equivalently, `f(z + c·1) = f(z)`).
    pub fn zero_sum(&self) -> bool {
        matches!(
            self,
            Activation::Softmax { .. }
                | Activation::LogSoftmax
                | Activation::Nls
                | Activation::GroupedSoftmax { .. }
                | Activation::Sparsemax
                | Activation::Entmax15
                | Activation::Triangle
                | Activation::LayerNorm { .. }
        )
    }

    /// Whether the unit outputs of a row compete (the Jacobian has off-diagonal terms).
    pub fn competitive(&self) -> bool {
        !matches!(
            self,
            Activation::Relu
                | Activation::Abs
                | Activation::Lwta { .. }
                | Activation::TopK { .. }
                | Activation::Maxout { .. }
        )
    }

    /// Points where the function is not differentiable, for tests to avoid: returns the
    /// smallest distance from `z` to a kink or tie (∞ for smooth activations).
    pub fn kink_distance(&self, z: &[f64], p: &[f64]) -> f64 {
        crate::row::kink_distance(self, p, z)
    }
}
