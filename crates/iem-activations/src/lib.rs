//! # iem-activations — competitive activations with exact Jacobians
//!
//! Approach 2 of the layer-wise implicit-EM question: activations whose Jacobians couple
//! units, so that raising one unit's pre-activation takes from the others. Every activation
//! offers a batched `f32` forward pass on `iem-simd`, a vector-Jacobian product (the backward
//! pass, never building a `K × K` matrix), a Jacobian-vector product, the full per-sample
//! Jacobian for inspection, the gradients of its own parameters, and an `f64` reference path.
//! [`check`] is a public gradient checker for your own functions.
//!
//! | activation | `a = f(z)` | cost / sample | zero-sum `Σ_j ∂L/∂z_j = 0` |
//! | --- | --- | --- | --- |
//! | ReLU | `max(z, 0)` | O(K) | no |
//! | abs | `\|z\|` | O(K) | no |
//! | softmax (τ fixed or learned `τ = e^θ`) | `softmax(z/τ)` | O(K) | yes |
//! | log-softmax | `z − lse(z)` | O(K) | yes |
//! | NLS | `d + lse(−d) = −log softmax(−d)` | O(K) | yes |
//! | SoLU | `z ⊙ softmax(z)` | O(K) | no |
//! | grouped softmax (m) | softmax in blocks of m | O(K) | yes |
//! | grouped SoLU (m) | SoLU in blocks of m | O(K) | no |
//! | sparsemax | projection onto the simplex | O(K log K) | yes |
//! | 1.5-entmax | `[z/2 − τ]₊²`, `Σ = 1` | O(K log K) | yes |
//! | LWTA (m) | keep each block's max | O(K) | no |
//! | maxout (m) | max of each block (width K/m) | O(K) | no |
//! | top-k | keep the k largest | O(K log K) | no |
//! | triangle | `max(0, mean(d) − d)` | O(K) | yes |
//! | LayerNorm (γ, β) | `γ ⊙ (z − μ)/√(σ² + ε) + β` | O(K) | yes |
//!
//! Conventions: derivatives at kinks are 0 (ReLU′(0) = 0, sign 0 = 0, the triangle's kink);
//! LWTA, maxout and top-k give ties to the lowest index; sparsemax's support is
//! `{i : a_i > 0}`; a softmax row of all `−∞` is uniform. The zero-sum column is
//! [`Activation::zero_sum`], tested both ways: it holds exactly for the shift-invariant ones.
//!
//! ## Example: SoLU's Jacobian, checked
//!
//! ```
//! use iem_activations::{check, Activation};
//! let solu = Activation::Solu;
//! let z = [0.5, -1.0, 2.0];
//! let j = solu.jacobian(&[], &z).unwrap();            // 3 × 3, row-major
//! let f = |z: &[f64]| solu.forward_f64(&[], z).unwrap();
//! check::check_jacobian(f, &z, &j, check::Tolerance::default()).unwrap();
//! // SoLU's input gradient does not sum to zero; softmax's does.
//! let col_sums: Vec<f64> = (0..3).map(|c| (0..3).map(|r| j[r * 3 + c]).sum()).collect();
//! assert!(!solu.zero_sum() && col_sums.iter().any(|s| s.abs() > 1e-3));
//! ```
//!
//! ## Example: a batched forward and backward pass
//!
//! ```
//! use iem_activations::Activation;
//! use iem_tensor::{Matrix, Par};
//! let act = Activation::GroupedSoftmax { group: 2, tau: 1.0 };
//! let z = Matrix::from_vec(2, 4, vec![1., 2., 3., 4., 0., 0., 5., -5.]).unwrap();
//! let fwd = act.forward(&[], &z, Par::Seq).unwrap();
//! let g = Matrix::from_vec(2, 4, vec![1., 0., 0., 1., 0.5, 0.5, 0.5, 0.5]).unwrap();
//! let grads = act.vjp(&[], &z, &fwd, &g, Par::Seq).unwrap();
//! let row_sum: f32 = grads.dz.row(0).iter().sum();
//! assert!(row_sum.abs() < 1e-6);                      // competition: zero-sum
//! ```
#![forbid(unsafe_code)]

mod batch;
pub mod check;
mod fast;
mod kind;
mod real;
mod row;

pub use batch::{ActivationError, Forward, Grads, Result};
pub use kind::{Activation, ConfigError, Temperature};
pub use real::Real;
