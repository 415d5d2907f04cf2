//! Standardisation and seeded splits.

use crate::Dataset;
use iem_tensor::Matrix;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Per-column mean and standard deviation (biased; a constant column gets sd 1).
pub fn fit_standardizer(x: &Matrix) -> (Vec<f32>, Vec<f32>) {
    let m = x.col_means_f64();
    let mut v = vec![0.0f64; x.cols()];
    for i in 0..x.rows() {
        for (j, a) in v.iter_mut().enumerate() {
            *a += (x.get(i, j) as f64 - m[j]).powi(2);
        }
    }
    let sd = v
        .iter()
        .map(|s| {
            let s = (s / x.rows().max(1) as f64).sqrt();
            if s > 1e-12 { s as f32 } else { 1.0 }
        })
        .collect();
    (m.iter().map(|&v| v as f32).collect(), sd)
}

/// `(x − mean) / sd` per column.
pub fn apply_standardizer(x: &Matrix, mean: &[f32], sd: &[f32]) -> Matrix {
    Matrix::from_fn(x.rows(), x.cols(), |i, j| (x.get(i, j) - mean[j]) / sd[j])
}

/// A seeded shuffle split into `(train, test)` with `test_fraction` of the samples held out.
pub fn split(d: &Dataset, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
    let n = d.x.rows();
    let mut idx: Vec<usize> = (0..n).collect();
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..n).rev() {
        let j = r.random_range(0..=i);
        idx.swap(i, j);
    }
    let nt = ((n as f64) * test_fraction).round() as usize;
    let (te, tr) = idx.split_at(nt);
    let take = |ix: &[usize]| Dataset {
        name: d.name.clone(),
        x: d.x.select_rows(ix),
        labels: ix.iter().map(|&i| d.labels[i]).collect(),
        classes: d.classes,
        centres: d.centres.clone(),
        params: d.params.clone(),
    };
    (take(tr), take(te))
}
