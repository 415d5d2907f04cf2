//! Linear probes on frozen features: closed-form ridge regression onto one-hot labels, and
//! multinomial logistic regression.

use crate::optim::OptimConfig;
use crate::train::{Loss, TrainConfig, end_to_end};
use crate::{Init, Model, Result, TrainError};
use iem_tensor::Matrix;
use nalgebra::DMatrix;

/// A fitted linear read-out `scores = x W + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// `D × C` weights.
    pub w: DMatrix<f64>,
    /// `C` biases.
    pub b: Vec<f64>,
}

impl Probe {
    /// Arg-max class of each row.
    pub fn predict(&self, x: &Matrix) -> Vec<usize> {
        let s = x.to_dmatrix() * &self.w;
        (0..s.nrows())
            .map(|i| {
                let mut best = 0;
                for c in 0..s.ncols() {
                    if s[(i, c)] + self.b[c] > s[(i, best)] + self.b[best] {
                        best = c;
                    }
                }
                best
            })
            .collect()
    }

    /// Fraction of rows predicted correctly.
    pub fn accuracy(&self, x: &Matrix, labels: &[usize]) -> f64 {
        let p = self.predict(x);
        p.iter().zip(labels).filter(|(a, b)| a == b).count() as f64 / labels.len().max(1) as f64
    }
}

/// Ridge regression of one-hot labels on centred features, `W = (XᵀX + λI)⁻¹ XᵀY`,
/// `b = ȳ − x̄ W`. O(N D² + D³).
pub fn ridge(x: &Matrix, labels: &[usize], classes: usize, lambda: f64) -> Result<Probe> {
    let (n, d) = x.shape();
    if labels.len() != n || n == 0 {
        return Err(TrainError::Config(format!("ridge: {} labels for {n} samples", labels.len())));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
        return Err(TrainError::Config(format!(
            "ridge: label {bad} out of range for {classes} classes"
        )));
    }
    let xm = x.col_means_f64();
    let xc = DMatrix::from_fn(n, d, |i, j| x.get(i, j) as f64 - xm[j]);
    let mut y = DMatrix::<f64>::zeros(n, classes);
    for (i, &l) in labels.iter().enumerate() {
        y[(i, l)] = 1.0;
    }
    let ym: Vec<f64> = (0..classes).map(|c| y.column(c).sum() / n as f64).collect();
    for c in 0..classes {
        for i in 0..n {
            y[(i, c)] -= ym[c];
        }
    }
    let a = xc.transpose() * &xc + DMatrix::identity(d, d) * lambda.max(1e-12);
    let w = a
        .cholesky()
        .ok_or_else(|| TrainError::Config("ridge: XᵀX + λI is not positive definite".into()))?
        .solve(&(xc.transpose() * &y));
    let b = (0..classes).map(|c| ym[c] - (0..d).map(|j| xm[j] * w[(j, c)]).sum::<f64>()).collect();
    Ok(Probe { w, b })
}

/// Ridge regression onto real targets (`N × T`), returning the coefficient of determination
/// R² of the fit on the same data (how much of the targets is linearly recoverable).
pub fn ridge_r2(x: &Matrix, targets: &Matrix, lambda: f64) -> Result<f64> {
    let (n, d) = x.shape();
    let t = targets.cols();
    let xm = x.col_means_f64();
    let tm = targets.col_means_f64();
    let xc = DMatrix::from_fn(n, d, |i, j| x.get(i, j) as f64 - xm[j]);
    let yc = DMatrix::from_fn(n, t, |i, j| targets.get(i, j) as f64 - tm[j]);
    let a = xc.transpose() * &xc + DMatrix::identity(d, d) * lambda.max(1e-12);
    let w = a
        .cholesky()
        .ok_or_else(|| TrainError::Config("ridge_r2: not positive definite".into()))?
        .solve(&(xc.transpose() * &yc));
    let res = &yc - &xc * w;
    let tot = yc.norm_squared();
    if tot <= 0.0 {
        return Err(TrainError::Config("ridge_r2: targets are constant".into()));
    }
    Ok(1.0 - res.norm_squared() / tot)
}

/// Multinomial logistic regression trained by full-batch Adam with L2 (PyTorch-default
/// initialisation, seeded), `epochs` steps.
pub fn logistic(
    x: &Matrix,
    labels: &[usize],
    classes: usize,
    epochs: usize,
    seed: u64,
) -> Result<Probe> {
    let mut m = Model::mlp(&[x.cols(), classes], &[], Init::PytorchDefault, seed)?;
    let mut opt = OptimConfig::adam(0.05);
    if let crate::optim::Method::Adam { weight_decay, .. } = &mut opt.method {
        *weight_decay = 1e-4;
    }
    let cfg = TrainConfig { epochs, batch: 0, seed, optim: opt, ..TrainConfig::default() };
    end_to_end(&mut m, x, &Loss::CrossEntropy(labels.to_vec()), &[], &cfg, &mut ())?;
    match &m.layers[0] {
        crate::Layer::Linear { w, b } => Ok(Probe {
            w: DMatrix::from_fn(w.cols(), w.rows(), |i, j| w.get(j, i) as f64),
            b: b.iter().map(|&v| v as f64).collect(),
        }),
        _ => unreachable!("mlp with no hidden layer is one linear layer"),
    }
}
