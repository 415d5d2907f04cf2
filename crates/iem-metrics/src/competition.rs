//! Competition among units, from responsibilities `R` (`N × K`, rows on the simplex).

use crate::{MetricError, Result, entropy};
use iem_tensor::Matrix;
use serde::{Deserialize, Serialize};

/// Every competition statistic of a responsibility matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Competition {
    /// `E_n H(r_n)` (nats): how undecided each input is.
    pub mean_entropy: f64,
    /// Usage `r̄ = mean_n r_n`.
    pub usage: Vec<f64>,
    /// `H(r̄)` (nats).
    pub usage_entropy: f64,
    /// `H(r̄) / log K` in `[0, 1]` (1 = even usage; 0 for K = 1).
    pub usage_entropy_norm: f64,
    /// Effective number of components `exp H(r̄)`.
    pub effective_components: f64,
    /// `I(x; j) = H(r̄) − E_n H(r_n)`.
    pub mutual_information: f64,
    /// Winner share `max_j r̄_j`.
    pub winner_share: f64,
    /// Fraction of inputs whose arg-max is each unit (ties to the lowest index).
    pub hard_fractions: Vec<f64>,
    /// Switch-Transformer load balance `K Σ_j f_j P_j` (1 when balanced).
    pub switch_balance: f64,
    /// Shazeer et al. importance loss: squared coefficient of variation of `Σ_n r_nj`.
    pub importance_cv2: f64,
    /// Units with mean responsibility below 0.01 ("dead" competitors).
    pub dead: Vec<usize>,
}

/// Competition statistics of `r` (`N × K`). O(N K).
pub fn competition(r: &Matrix) -> Result<Competition> {
    let (n, k) = r.shape();
    if n == 0 || k == 0 {
        return Err(MetricError::TooFewSamples { metric: "competition", needed: 1, got: n });
    }
    crate::finite("competition", r)?;
    let usage = r.col_means_f64();
    let mean_entropy = (0..n)
        .map(|i| entropy(&r.row(i).iter().map(|&v| v as f64).collect::<Vec<_>>()))
        .sum::<f64>()
        / n as f64;
    let usage_entropy = entropy(&usage);
    let mut hard = vec![0.0; k];
    for i in 0..n {
        hard[argmax(r.row(i))] += 1.0 / n as f64;
    }
    let switch_balance = k as f64 * hard.iter().zip(&usage).map(|(f, p)| f * p).sum::<f64>();
    let importance: Vec<f64> = usage.iter().map(|u| u * n as f64).collect();
    let mi = importance.iter().sum::<f64>() / k as f64;
    let var = importance.iter().map(|v| (v - mi).powi(2)).sum::<f64>() / k as f64;
    Ok(Competition {
        mean_entropy,
        usage_entropy,
        usage_entropy_norm: if k > 1 { usage_entropy / (k as f64).ln() } else { 0.0 },
        effective_components: usage_entropy.exp(),
        mutual_information: usage_entropy - mean_entropy,
        winner_share: usage.iter().copied().fold(0.0, f64::max),
        hard_fractions: hard,
        switch_balance,
        importance_cv2: if mi > 0.0 { var / (mi * mi) } else { 0.0 },
        dead: (0..k).filter(|&j| usage[j] < 0.01).collect(),
        usage,
    })
}

fn argmax(row: &[f32]) -> usize {
    let mut b = 0;
    for (j, &v) in row.iter().enumerate() {
        if v > row[b] {
            b = j;
        }
    }
    b
}

/// Arg-max unit of each row (ties to the lowest index).
pub fn assignments(r: &Matrix) -> Vec<usize> {
    (0..r.rows()).map(|i| argmax(r.row(i))).collect()
}

/// Class specialisation: mutual information (nats) between the winning unit and the label,
/// `I(j; y) = H(y) − H(y | j)` from the contingency table.
pub fn class_specialisation(r: &Matrix, labels: &[usize]) -> Result<f64> {
    if labels.len() != r.rows() {
        return Err(MetricError::Shape {
            metric: "class_specialisation",
            detail: format!("{} labels for {} rows", labels.len(), r.rows()),
        });
    }
    Ok(crate::truth::mutual_info(&assignments(r), labels))
}
