//! # iem-tensor — shape-checked batch matrices
//!
//! [`Matrix`] is a row-major `f32` matrix (a batch of `rows` samples × `cols` units) whose
//! operations check shapes and return a typed [`TensorError`] naming the operation and both
//! shapes, then run on the `iem-simd` kernels. [`linalg`] converts to nalgebra for the
//! decompositions (SVD, symmetric eigendecomposition, solves) in `f64`.
//!
//! ```
//! use iem_tensor::{Matrix, Par};
//! let x = Matrix::from_vec(2, 3, vec![1., 2., 3., 4., 5., 6.]).unwrap();
//! let w = Matrix::from_vec(4, 3, vec![1.; 12]).unwrap();
//! let z = x.matmul_nt(&w, Par::Seq).unwrap();          // x · wᵀ : 2 × 4
//! assert_eq!(z.shape(), (2, 4));
//! assert_eq!(z.row(1), &[15.0; 4]);
//! let err = x.matmul(&w, Par::Seq).unwrap_err();       // 2×3 · 4×3 does not fit
//! assert!(err.to_string().contains("matmul"));
//! ```
#![forbid(unsafe_code)]

pub mod linalg;

use iem_simd::Gemm;
pub use iem_simd::Par;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Errors a user's data can cause.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorError {
    /// Two operands' shapes do not fit the operation.
    Shape {
        /// The operation.
        op: &'static str,
        /// Shape of the left (or only) operand.
        left: (usize, usize),
        /// Shape of the right operand (or the expected shape).
        right: (usize, usize),
    },
    /// A buffer's length does not match the shape it was given.
    Length {
        /// The operation.
        op: &'static str,
        /// Requested shape.
        shape: (usize, usize),
        /// Actual buffer length.
        len: usize,
    },
    /// A NaN or infinite value where finite values are required.
    NonFinite {
        /// The operation or quantity checked.
        what: String,
        /// Row of the first offending value.
        row: usize,
        /// Column of the first offending value.
        col: usize,
        /// The value.
        value: f32,
    },
    /// A linear-algebra routine failed (singular matrix, no convergence).
    Linalg {
        /// The operation.
        op: &'static str,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorError::Shape { op, left, right } => write!(
                f,
                "{op}: shapes {}×{} and {}×{} do not fit",
                left.0, left.1, right.0, right.1
            ),
            TensorError::Length { op, shape, len } => write!(
                f,
                "{op}: a {}×{} matrix needs {} values, got {len}",
                shape.0,
                shape.1,
                shape.0 * shape.1
            ),
            TensorError::NonFinite { what, row, col, value } => {
                write!(f, "{what}: non-finite value {value} at row {row}, column {col}")
            }
            TensorError::Linalg { op, reason } => write!(f, "{op}: {reason}"),
        }
    }
}

impl std::error::Error for TensorError {}

/// Result alias.
pub type Result<T> = std::result::Result<T, TensorError>;

/// A row-major `rows × cols` matrix of `f32`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// All zeros.
    pub fn zeros(rows: usize, cols: usize) -> Matrix {
        Matrix { rows, cols, data: vec![0.0; rows * cols] }
    }

    /// Makes this a `rows × cols` matrix, reusing the allocation when it is large enough.
    /// Values are unspecified afterwards (callers overwrite them); use in hot loops to avoid
    /// allocating (and page-faulting) a fresh buffer every step.
    pub fn resize(&mut self, rows: usize, cols: usize) {
        self.rows = rows;
        self.cols = cols;
        self.data.resize(rows * cols, 0.0);
    }

    /// All `v`.
    pub fn filled(rows: usize, cols: usize, v: f32) -> Matrix {
        Matrix { rows, cols, data: vec![v; rows * cols] }
    }

    /// Wraps a row-major buffer; its length must be `rows · cols`.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Result<Matrix> {
        if data.len() != rows * cols {
            return Err(TensorError::Length {
                op: "Matrix::from_vec",
                shape: (rows, cols),
                len: data.len(),
            });
        }
        Ok(Matrix { rows, cols, data })
    }

    /// `m[i, j] = f(i, j)`.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f32) -> Matrix {
        let mut data = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                data.push(f(i, j));
            }
        }
        Matrix { rows, cols, data }
    }

    /// Identity.
    pub fn eye(n: usize) -> Matrix {
        Matrix::from_fn(n, n, |i, j| if i == j { 1.0 } else { 0.0 })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    /// Row-major values.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
    /// Row-major values, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// Consumes into the row-major buffer.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
    /// Row `i`.
    ///
    /// # Panics
    /// If `i >= rows` (an indexing mistake of the caller).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
    /// Row `i`, mutable.
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }
    /// Element `(i, j)`.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.cols + j]
    }
    /// Sets element `(i, j)`.
    pub fn set(&mut self, i: usize, j: usize, v: f32) {
        self.data[i * self.cols + j] = v;
    }

    /// Rows `idx` gathered into a new matrix (a mini-batch).
    pub fn select_rows(&self, idx: &[usize]) -> Matrix {
        let mut m = Matrix { rows: 0, cols: 0, data: Vec::new() };
        self.select_rows_into(idx, &mut m);
        m
    }

    /// [`Matrix::select_rows`] into `out`, reusing its allocation.
    ///
    /// # Panics
    /// If an index is out of range (as `row` does).
    pub fn select_rows_into(&self, idx: &[usize], out: &mut Matrix) {
        out.data.clear();
        out.data.reserve(idx.len() * self.cols);
        for &i in idx {
            out.data.extend_from_slice(self.row(i));
        }
        out.rows = idx.len();
        out.cols = self.cols;
    }

    /// Rows `start..end` as a new matrix.
    pub fn slice_rows(&self, start: usize, end: usize) -> Matrix {
        Matrix {
            rows: end - start,
            cols: self.cols,
            data: self.data[start * self.cols..end * self.cols].to_vec(),
        }
    }

    /// Transposed copy.
    pub fn transpose(&self) -> Matrix {
        let mut t = Matrix::zeros(0, 0);
        self.transpose_into(&mut t, Par::Seq);
        t
    }

    /// The transpose into `out` (resized to `cols × rows`, its buffer reused), on
    /// [`iem_simd::gemm::transpose`]: the same copy for any `par`.
    ///
    /// ```
    /// use iem_tensor::{Matrix, Par};
    /// let a = Matrix::from_fn(2, 3, |i, j| (i * 3 + j) as f32);
    /// let mut t = Matrix::zeros(0, 0);
    /// a.transpose_into(&mut t, Par::Seq);
    /// assert_eq!(t, Matrix::from_fn(3, 2, |i, j| (j * 3 + i) as f32));
    /// ```
    pub fn transpose_into(&self, out: &mut Matrix, par: Par) {
        out.resize(self.cols, self.rows);
        iem_simd::gemm::transpose(&self.data, self.rows, self.cols, &mut out.data, par);
    }

    fn gemm_into(
        &self,
        other: &Matrix,
        op: &'static str,
        ta: bool,
        tb: bool,
        par: Par,
    ) -> Result<Matrix> {
        let (m, k1) = if ta { (self.cols, self.rows) } else { (self.rows, self.cols) };
        let (k2, n) = if tb { (other.cols, other.rows) } else { (other.rows, other.cols) };
        if k1 != k2 {
            return Err(TensorError::Shape { op, left: self.shape(), right: other.shape() });
        }
        let mut out = Matrix::zeros(m, n);
        Gemm {
            m,
            n,
            k: k1,
            a: &self.data,
            trans_a: ta,
            b: &other.data,
            trans_b: tb,
            alpha: 1.0,
            beta: 0.0,
            bias: None,
        }
        .run(&mut out.data, par);
        Ok(out)
    }

    /// `self · other`.
    pub fn matmul(&self, other: &Matrix, par: Par) -> Result<Matrix> {
        self.gemm_into(other, "matmul", false, false, par)
    }
    /// `selfᵀ · other` (e.g. a weight gradient `Xᵀ G`).
    pub fn matmul_tn(&self, other: &Matrix, par: Par) -> Result<Matrix> {
        self.gemm_into(other, "matmul_tn", true, false, par)
    }
    /// `self · otherᵀ` (e.g. a layer `X Wᵀ`).
    pub fn matmul_nt(&self, other: &Matrix, par: Par) -> Result<Matrix> {
        self.gemm_into(other, "matmul_nt", false, true, par)
    }

    /// Adds the row vector `b` (length `cols`) to every row.
    pub fn add_row(&mut self, b: &[f32]) -> Result<()> {
        if b.len() != self.cols {
            return Err(TensorError::Shape {
                op: "add_row",
                left: self.shape(),
                right: (1, b.len()),
            });
        }
        for r in self.data.chunks_exact_mut(self.cols.max(1)) {
            for (x, y) in r.iter_mut().zip(b) {
                *x += y;
            }
        }
        Ok(())
    }

    /// Elementwise `self + α·other`.
    pub fn axpy(&mut self, alpha: f32, other: &Matrix) -> Result<()> {
        if self.shape() != other.shape() {
            return Err(TensorError::Shape {
                op: "axpy",
                left: self.shape(),
                right: other.shape(),
            });
        }
        iem_simd::elementwise::axpy(alpha, &other.data, &mut self.data, Par::Seq);
        Ok(())
    }

    /// Column sums (length `cols`), summed in row order.
    pub fn col_sums(&self) -> Vec<f32> {
        let mut s = Vec::new();
        self.col_sums_into(&mut s);
        s
    }

    /// [`Matrix::col_sums`] into `out` (resized to `cols`), reusing its allocation.
    pub fn col_sums_into(&self, out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.cols, 0.0);
        iem_simd::elementwise::col_sums(&self.data, self.cols, out);
    }

    /// Column means in f64 (`NaN`-free: an empty matrix gives zeros).
    pub fn col_means_f64(&self) -> Vec<f64> {
        let mut s = vec![0.0f64; self.cols];
        for r in self.data.chunks_exact(self.cols.max(1)) {
            for (a, b) in s.iter_mut().zip(r) {
                *a += *b as f64;
            }
        }
        let n = self.rows.max(1) as f64;
        s.iter_mut().for_each(|v| *v /= n);
        s
    }

    /// Applies `f` to every element.
    pub fn map(&self, f: impl Fn(f32) -> f32) -> Matrix {
        Matrix { rows: self.rows, cols: self.cols, data: self.data.iter().map(|&v| f(v)).collect() }
    }

    /// Returns an error naming `what` and the first non-finite entry, if any.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(p) => Err(TensorError::NonFinite {
                what: what.to_string(),
                row: p / self.cols.max(1),
                col: p % self.cols.max(1),
                value: self.data[p],
            }),
        }
    }

    /// Frobenius norm, accumulated in f64.
    pub fn norm(&self) -> f64 {
        self.data.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt()
    }

    /// Copies into an f64 nalgebra matrix.
    pub fn to_dmatrix(&self) -> nalgebra::DMatrix<f64> {
        nalgebra::DMatrix::from_row_iterator(
            self.rows,
            self.cols,
            self.data.iter().map(|&v| v as f64),
        )
    }

    /// Copies from an f64 nalgebra matrix (rounding to f32).
    pub fn from_dmatrix(m: &nalgebra::DMatrix<f64>) -> Matrix {
        Matrix::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)] as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked_with_names() {
        let a = Matrix::zeros(2, 3);
        let b = Matrix::zeros(2, 3);
        let e = a.matmul(&b, Par::Seq).unwrap_err();
        assert_eq!(e, TensorError::Shape { op: "matmul", left: (2, 3), right: (2, 3) });
        assert_eq!(e.to_string(), "matmul: shapes 2×3 and 2×3 do not fit");
        assert_eq!(a.matmul_tn(&b, Par::Seq).unwrap().shape(), (3, 3));
        assert_eq!(a.matmul_nt(&b, Par::Seq).unwrap().shape(), (2, 2));
        assert!(Matrix::from_vec(2, 2, vec![0.0; 3]).is_err());
        assert!(Matrix::zeros(2, 2).add_row(&[1.0]).is_err());
    }

    #[test]
    fn products_match_nalgebra() {
        let a = Matrix::from_fn(5, 7, |i, j| (i as f32 - j as f32) * 0.3);
        let b = Matrix::from_fn(7, 4, |i, j| (i * j) as f32 * 0.1 - 0.5);
        let want = a.to_dmatrix() * b.to_dmatrix();
        let got = a.matmul(&b, Par::Seq).unwrap().to_dmatrix();
        assert!((want - got).abs().max() < 1e-5);
        let t = a.transpose().matmul_tn(&b, Par::Seq).unwrap();
        assert!((t.to_dmatrix() - a.to_dmatrix() * b.to_dmatrix()).abs().max() < 1e-5);
        let nt = a.matmul_nt(&b.transpose(), Par::Seq).unwrap();
        assert!((nt.to_dmatrix() - a.to_dmatrix() * b.to_dmatrix()).abs().max() < 1e-5);
    }

    #[test]
    fn finite_check_names_position() {
        let mut m = Matrix::zeros(3, 4);
        assert!(m.check_finite("x").is_ok());
        m.set(2, 1, f32::NAN);
        match m.check_finite("layer 1 output").unwrap_err() {
            TensorError::NonFinite { row, col, what, .. } => {
                assert_eq!((row, col), (2, 1));
                assert_eq!(what, "layer 1 output");
            }
            e => panic!("wrong error {e}"),
        }
    }

    #[test]
    fn serde_roundtrip() {
        let m = Matrix::from_fn(2, 2, |i, j| (i + 2 * j) as f32);
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Matrix>(&s).unwrap(), m);
    }
}
