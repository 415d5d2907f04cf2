//! Linear algebra through nalgebra, in f64: symmetric eigendecomposition, singular values,
//! covariance and solves. Every routine returns a typed error instead of NaN.

use crate::{Matrix, Result, TensorError};
use nalgebra::DMatrix;

/// Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix.
pub fn sym_eigen(a: &DMatrix<f64>) -> Result<(Vec<f64>, DMatrix<f64>)> {
    if a.nrows() != a.ncols() {
        return Err(TensorError::Shape { op: "sym_eigen", left: a.shape(), right: a.shape() });
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(TensorError::Linalg {
            op: "sym_eigen",
            reason: "input has non-finite entries".into(),
        });
    }
    let e = a.clone().symmetric_eigen();
    let mut idx: Vec<usize> = (0..e.eigenvalues.len()).collect();
    idx.sort_by(|&i, &j| e.eigenvalues[i].total_cmp(&e.eigenvalues[j]));
    let vals = idx.iter().map(|&i| e.eigenvalues[i]).collect();
    let vecs = DMatrix::from_fn(a.nrows(), a.ncols(), |r, c| e.eigenvectors[(r, idx[c])]);
    Ok((vals, vecs))
}

/// Singular values, descending.
pub fn singular_values(a: &DMatrix<f64>) -> Result<Vec<f64>> {
    if a.iter().any(|v| !v.is_finite()) {
        return Err(TensorError::Linalg {
            op: "singular_values",
            reason: "input has non-finite entries".into(),
        });
    }
    if a.nrows() == 0 || a.ncols() == 0 {
        return Ok(Vec::new());
    }
    let mut s: Vec<f64> = a.singular_values().iter().copied().collect();
    s.sort_by(|x, y| y.total_cmp(x));
    Ok(s)
}

/// Column means and the (biased, `1/N`) covariance of the rows of `x`, in f64.
pub fn covariance(x: &Matrix) -> (Vec<f64>, DMatrix<f64>) {
    let (n, d) = x.shape();
    let mean = x.col_means_f64();
    let mut c = DMatrix::<f64>::zeros(d, d);
    for i in 0..n {
        let r = x.row(i);
        for a in 0..d {
            let da = r[a] as f64 - mean[a];
            for b in a..d {
                c[(a, b)] += da * (r[b] as f64 - mean[b]);
            }
        }
    }
    let nn = n.max(1) as f64;
    for a in 0..d {
        for b in a..d {
            let v = c[(a, b)] / nn;
            c[(a, b)] = v;
            c[(b, a)] = v;
        }
    }
    (mean, c)
}

/// Solves `A X = B` for symmetric positive-definite `A` (Cholesky).
pub fn solve_spd(a: &DMatrix<f64>, b: &DMatrix<f64>) -> Result<DMatrix<f64>> {
    if a.nrows() != a.ncols() || a.nrows() != b.nrows() {
        return Err(TensorError::Shape { op: "solve_spd", left: a.shape(), right: b.shape() });
    }
    match a.clone().cholesky() {
        Some(ch) => Ok(ch.solve(b)),
        None => Err(TensorError::Linalg {
            op: "solve_spd",
            reason: "matrix is not positive definite".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_of_diagonal() {
        let a = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![3.0, 1.0, 2.0]));
        let (v, _) = sym_eigen(&a).unwrap();
        assert_eq!(v, vec![1.0, 2.0, 3.0]);
        assert!(sym_eigen(&DMatrix::from_element(2, 2, f64::NAN)).is_err());
    }

    #[test]
    fn covariance_and_solve() {
        let x = Matrix::from_vec(4, 2, vec![1., 0., -1., 0., 0., 2., 0., -2.]).unwrap();
        let (m, c) = covariance(&x);
        assert_eq!(m, vec![0.0, 0.0]);
        assert!((c[(0, 0)] - 0.5).abs() < 1e-12 && (c[(1, 1)] - 2.0).abs() < 1e-12);
        let s = solve_spd(&c, &DMatrix::from_element(2, 1, 1.0)).unwrap();
        assert!((s[(0, 0)] - 2.0).abs() < 1e-12 && (s[(1, 0)] - 0.5).abs() < 1e-12);
        assert!(solve_spd(&DMatrix::zeros(2, 2), &DMatrix::zeros(2, 1)).is_err());
        let sv =
            singular_values(&DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![1.0, 4.0])))
                .unwrap();
        assert_eq!(sv, vec![4.0, 1.0]);
    }
}
