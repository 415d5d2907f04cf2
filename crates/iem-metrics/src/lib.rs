//! # iem-metrics — measuring redundancy, specialisation, collapse and change
//!
//! The open questions of layer-wise implicit EM are questions about measurements. Every
//! metric here is computed from weights and activations alone (this crate does not depend on
//! the trainer), is defined in its doc comment, and returns a typed [`MetricError`] or an
//! explicit report of excluded units instead of a silent NaN.
//!
//! | module | metrics | cost |
//! | --- | --- | --- |
//! | [`hyperplane`] | pairwise \|cos\| of normals, nearest-neighbour \|cos\|, direction and offset-aware duplicates, 2-D clipped Hausdorff distance, weight-Gram redundancy with its floor | O(K² D) |
//! | [`activation`] | correlation energy, Gaussian total correlation, effective rank, participation ratio, stable rank, dead units | O(N K² + K³) |
//! | [`regions`] | linear regions of a 2-D layer on a grid, arrangement bound, argmax cells | O(G² K) |
//! | [`competition`] | responsibility entropy, usage and its entropy, effective components, mutual information, winner share, hard fractions, Switch and Shazeer load balance, class specialisation | O(N K) |
//! | [`change`] | linear CKA, RBF CKA (streamed, O(N) memory), SVCCA, ARI between assignment maps | linear CKA O(N D²); RBF O(N² D) time |
//! | [`truth`] | Hungarian matching, prototype recovery, clustering accuracy, NMI, ARI | O(K³ + N) |
//! | [`gradient`] | zero-sum residual, implicit-EM identity residual | O(N K) |
//!
//! Relabelling units changes no metric (tested): every metric is a symmetric function of the
//! units, or matches them first.
//!
//! ```
//! use iem_metrics::activation::effective_rank;
//! use iem_tensor::Matrix;
//! let x = Matrix::eye(5);                       // 5 orthogonal directions
//! assert!((effective_rank(&x).unwrap() - 5.0).abs() < 1e-9);
//! ```
#![forbid(unsafe_code)]

pub mod activation;
pub mod change;
pub mod competition;
pub mod gradient;
pub mod hyperplane;
pub mod regions;
pub mod truth;

use std::fmt;

/// An ill-defined or invalid metric input.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricError {
    /// The metric needs more samples.
    TooFewSamples {
        /// The metric.
        metric: &'static str,
        /// Needed.
        needed: usize,
        /// Given.
        got: usize,
    },
    /// Shapes that do not fit.
    Shape {
        /// The metric.
        metric: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// NaN or infinite input.
    NonFinite {
        /// The metric.
        metric: &'static str,
    },
    /// The quantity is undefined for this input (for example every unit is constant).
    Undefined {
        /// The metric.
        metric: &'static str,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricError::TooFewSamples { metric, needed, got } => {
                write!(f, "{metric}: needs at least {needed} samples, got {got}")
            }
            MetricError::Shape { metric, detail } => write!(f, "{metric}: {detail}"),
            MetricError::NonFinite { metric } => {
                write!(f, "{metric}: input has NaN or infinite values")
            }
            MetricError::Undefined { metric, reason } => write!(f, "{metric}: undefined: {reason}"),
        }
    }
}

impl std::error::Error for MetricError {}

/// Result alias.
pub type Result<T> = std::result::Result<T, MetricError>;

pub(crate) fn finite(metric: &'static str, m: &iem_tensor::Matrix) -> Result<()> {
    if m.as_slice().iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(MetricError::NonFinite { metric })
    }
}

/// Shannon entropy (nats) of a probability vector; `0 log 0 = 0`.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter().filter(|&&v| v > 0.0).map(|v| v * v.ln()).sum::<f64>()
}
