//! Losses over a batch, generic over `f32`/`f64`, each returning its value and its gradient.
//!
//! Batch reduction is explicit, because published code differs: [`Reduction::Sum`] adds the
//! per-sample losses (the decoder-free SAE paper's convention for its LSE term),
//! [`Reduction::Mean`] averages them (PyTorch's default for cross-entropy).

use crate::{LossError, Real, Result, finite, rows_of};
use serde::{Deserialize, Serialize};

/// How per-sample losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// `Σ_n L_n`.
    Sum,
    /// `(1/N) Σ_n L_n`.
    #[default]
    Mean,
}

impl Reduction {
    fn scale(self, n: usize) -> f64 {
        match self {
            Reduction::Sum => 1.0,
            Reduction::Mean => 1.0 / n as f64,
        }
    }
}

/// The LSE loss with its responsibilities.
#[derive(Clone, Debug, PartialEq)]
pub struct LseOutput<F> {
    /// The reduced loss.
    pub value: f64,
    /// Per-sample losses `L_n = −lse(−d_n)`.
    pub per_sample: Vec<f64>,
    /// Responsibilities `r = softmax(−d)` (`N × K`).
    pub resp: Vec<F>,
    /// `∂value/∂d`: `r` for a sum, `r/N` for a mean.
    pub grad: Vec<F>,
}

/// Flushes magnitudes below `f32::MIN_POSITIVE` to zero. Responsibilities and softmax
/// probabilities that small are far below rounding (each row's normaliser is at least 1),
/// and as subnormal numbers they would make every later multiply take the processor's slow
/// path (on x86, by up to two orders of magnitude).
#[inline]
fn flush<F: Real>(x: F) -> F {
    if x.f64().abs() < f32::MIN_POSITIVE as f64 { F::ZERO } else { x }
}

/// The implicit-EM loss `L_n = −log Σ_j exp(−d_nj)` over an `N × K` batch of distances
/// (row-major), reduced by `red`, with `∂L/∂d = r` (times `1/N` for a mean).
///
/// Distances may be `+∞` (a component that cannot explain the sample) as long as one per
/// row is finite; a row of all `+∞` is [`LossError::AllInfinite`]; NaN or `−∞` is
/// [`LossError::NonFinite`]; an empty batch is [`LossError::EmptyBatch`].
pub fn lse_loss<F: Real>(d: &[F], k: usize, red: Reduction) -> Result<LseOutput<F>> {
    let n = rows_of("lse_loss", d, k)?;
    if n == 0 {
        return Err(LossError::EmptyBatch { op: "lse_loss" });
    }
    let scale = red.scale(n);
    let mut resp = vec![F::ZERO; d.len()];
    let mut per_sample = Vec::with_capacity(n);
    for (i, (row, r)) in d.chunks_exact(k).zip(resp.chunks_exact_mut(k)).enumerate() {
        let mut m = F::NEG_INF; // max of −d
        for (j, &v) in row.iter().enumerate() {
            if v.f64().is_nan() || v.f64() == f64::NEG_INFINITY {
                return Err(LossError::NonFinite { op: "lse_loss", row: i, col: j });
            }
            m = m.max(-v);
        }
        if m == F::NEG_INF {
            return Err(LossError::AllInfinite { op: "lse_loss", row: i });
        }
        let mut s = F::ZERO;
        for (o, &v) in r.iter_mut().zip(row) {
            *o = (-v - m).exp();
            s += *o;
        }
        let inv = F::ONE / s;
        r.iter_mut().for_each(|o| *o = flush(*o * inv));
        per_sample.push(-(m.f64() + s.f64().ln()));
    }
    let value = per_sample.iter().sum::<f64>() * scale;
    let sc = F::of(scale);
    let grad = resp.iter().map(|&r| flush(r * sc)).collect();
    Ok(LseOutput { value, per_sample, resp, grad })
}

/// A loss value with its gradient with respect to the first input.
#[derive(Clone, Debug, PartialEq)]
pub struct LossOutput<F> {
    /// The reduced loss.
    pub value: f64,
    /// Gradient with respect to the logits / predictions.
    pub grad: Vec<F>,
}

/// Cross-entropy of `N × C` logits against integer labels, computed through log-softmax
/// (no probability is ever clamped: `log softmax` is exact where `log(softmax)` would
/// underflow). `grad = (softmax − onehot) · scale`.
pub fn cross_entropy<F: Real>(
    logits: &[F],
    labels: &[usize],
    c: usize,
    red: Reduction,
) -> Result<LossOutput<F>> {
    let n = rows_of("cross_entropy", logits, c)?;
    if n == 0 {
        return Err(LossError::EmptyBatch { op: "cross_entropy" });
    }
    if labels.len() != n {
        return Err(LossError::Shape {
            op: "cross_entropy",
            expected: format!("{n} labels"),
            got: format!("{}", labels.len()),
        });
    }
    finite("cross_entropy", logits, c)?;
    let scale = red.scale(n);
    let sc = F::of(scale);
    let mut grad = vec![F::ZERO; logits.len()];
    let mut total = 0.0f64;
    for (i, (row, g)) in logits.chunks_exact(c).zip(grad.chunks_exact_mut(c)).enumerate() {
        let y = labels[i];
        if y >= c {
            return Err(LossError::Label { row: i, label: y, classes: c });
        }
        let m = row.iter().fold(F::NEG_INF, |a, &b| a.max(b));
        let mut s = F::ZERO;
        for (o, &v) in g.iter_mut().zip(row) {
            *o = (v - m).exp();
            s += *o;
        }
        let lse = m.f64() + s.f64().ln();
        total += lse - row[y].f64();
        let inv = F::ONE / s;
        for (j, o) in g.iter_mut().enumerate() {
            let p = *o * inv;
            *o = flush((if j == y { p - F::ONE } else { p }) * sc);
        }
    }
    Ok(LossOutput { value: total * scale, grad })
}

/// Cross-entropy against soft targets `q` (rows summing to 1, e.g. Sinkhorn targets):
/// `L_n = −Σ_j q_nj log softmax(z_n)_j`, `grad = (softmax(z) − q) · scale` (targets are
/// constants: not back-propagated).
pub fn soft_cross_entropy<F: Real>(
    logits: &[F],
    targets: &[F],
    c: usize,
    red: Reduction,
) -> Result<LossOutput<F>> {
    let n = rows_of("soft_cross_entropy", logits, c)?;
    if n == 0 {
        return Err(LossError::EmptyBatch { op: "soft_cross_entropy" });
    }
    if targets.len() != logits.len() {
        return Err(LossError::Shape {
            op: "soft_cross_entropy",
            expected: format!("{} targets", logits.len()),
            got: format!("{}", targets.len()),
        });
    }
    finite("soft_cross_entropy", logits, c)?;
    let scale = red.scale(n);
    let sc = F::of(scale);
    let mut grad = vec![F::ZERO; logits.len()];
    let mut total = 0.0;
    for ((row, q), g) in
        logits.chunks_exact(c).zip(targets.chunks_exact(c)).zip(grad.chunks_exact_mut(c))
    {
        let m = row.iter().fold(F::NEG_INF, |a, &b| a.max(b));
        let mut s = F::ZERO;
        for (o, &v) in g.iter_mut().zip(row) {
            *o = (v - m).exp();
            s += *o;
        }
        let lse = m.f64() + s.f64().ln();
        let inv = F::ONE / s;
        for j in 0..c {
            total += q[j].f64() * (lse - row[j].f64());
            g[j] = flush((g[j] * inv - q[j]) * sc);
        }
    }
    Ok(LossOutput { value: total * scale, grad })
}

/// Reconstruction error `Σ_n ‖pred_n − target_n‖²` (`Sum`) or its mean over samples
/// (`Mean`; note: per sample, not per element). `grad = 2 (pred − target) · scale`.
pub fn mse<F: Real>(
    pred: &[F],
    target: &[F],
    cols: usize,
    red: Reduction,
) -> Result<LossOutput<F>> {
    let n = rows_of("mse", pred, cols)?;
    if n == 0 {
        return Err(LossError::EmptyBatch { op: "mse" });
    }
    if target.len() != pred.len() {
        return Err(LossError::Shape {
            op: "mse",
            expected: format!("{} targets", pred.len()),
            got: format!("{}", target.len()),
        });
    }
    finite("mse (prediction)", pred, cols)?;
    finite("mse (target)", target, cols)?;
    let scale = red.scale(n);
    let sc = F::of(2.0 * scale);
    let mut total = 0.0;
    let grad = pred
        .iter()
        .zip(target)
        .map(|(&p, &t)| {
            let e = p - t;
            total += e.f64() * e.f64();
            e * sc
        })
        .collect();
    Ok(LossOutput { value: total * scale, grad })
}
