//! A public gradient checker, like PyTorch's `gradcheck`, for your own activations and losses.
//!
//! Every check compares an analytic quantity with f64 central differences. The default
//! [`Tolerance`] uses a relative step `h = 1e-6 · max(1, |x|)` and one Richardson
//! extrapolation (`(4 D(h/2) − D(h)) / 3`), which is accurate to about `1e-9` relative on
//! smooth functions, including at large inputs where a single step is not. A failure reports
//! the worst entry: its row (output index), column (input index), the analytic and the
//! numeric value. Each entry's tolerance is `atol + rtol·max(|analytic|, |numeric|)` plus the
//! rounding noise of the difference quotient itself, `8ε·|f|/h` (for a vjp, `|f|` is
//! `Σ|g_i f_i|`), so wide functions are not failed by cancellation they cannot avoid.
//!
//! ```
//! use iem_activations::check::{check_jacobian, Tolerance};
//! // f(x) = (x0·x1, sin x0)
//! let f = |x: &[f64]| vec![x[0] * x[1], x[0].sin()];
//! let x = [0.3f64, -1.2];
//! let good = [x[1], x[0], x[0].cos(), 0.0];
//! assert!(check_jacobian(f, &x, &good, Tolerance::default()).is_ok());
//! let bad = [x[1], x[0], 1.0, 0.0];
//! let err = check_jacobian(f, &x, &bad, Tolerance::default()).unwrap_err();
//! assert_eq!((err.row, err.col), (1, 0));
//! ```

use std::fmt;

/// Step and tolerances of a check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative finite-difference step: `h = step · max(1, |x_i|)`.
    pub step: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Use one Richardson extrapolation on top of central differences.
    pub richardson: bool,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance { step: 1e-6, rtol: 1e-6, atol: 1e-8, richardson: true }
    }
}

/// The worst disagreement found by a failing check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckFailure {
    /// Which check.
    pub check: &'static str,
    /// Output index (row of the Jacobian; 0 for vector results).
    pub row: usize,
    /// Input index (column of the Jacobian), or the index into the result vector.
    pub col: usize,
    /// Analytic value.
    pub analytic: f64,
    /// Finite-difference value.
    pub numeric: f64,
    /// The tolerance this entry had.
    pub tolerance: f64,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: worst entry (row {}, column {}): analytic {:e}, numeric {:e}, |diff| {:e} > tolerance {:e}",
            self.check,
            self.row,
            self.col,
            self.analytic,
            self.numeric,
            (self.analytic - self.numeric).abs(),
            self.tolerance
        )
    }
}

impl std::error::Error for CheckFailure {}

/// The largest deviation seen, passing or not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CheckReport {
    /// Largest `|analytic − numeric| / tolerance` (≤ 1 passes).
    pub worst_ratio: f64,
    /// Largest absolute difference.
    pub max_abs_diff: f64,
}

/// Central difference of `f` along direction `v` at `x`, optionally Richardson-extrapolated.
fn directional(
    f: &dyn Fn(&[f64]) -> Vec<f64>,
    x: &[f64],
    v: &[f64],
    h: f64,
    rich: bool,
) -> Vec<f64> {
    let cd = |h: f64| {
        let xp: Vec<f64> = x.iter().zip(v).map(|(a, b)| a + h * b).collect();
        let xm: Vec<f64> = x.iter().zip(v).map(|(a, b)| a - h * b).collect();
        let (fp, fm) = (f(&xp), f(&xm));
        fp.iter().zip(&fm).map(|(p, m)| (p - m) / (2.0 * h)).collect::<Vec<f64>>()
    };
    let d1 = cd(h);
    if !rich {
        return d1;
    }
    let d2 = cd(h / 2.0);
    d1.iter().zip(&d2).map(|(a, b)| (4.0 * b - a) / 3.0).collect()
}

/// Rounding noise of a central difference of values of magnitude `mag` with step `h`
/// (Richardson's combination amplifies it about threefold; 8ε leaves a margin).
fn noise(mag: f64, h: f64) -> f64 {
    8.0 * f64::EPSILON * mag / h
}

fn compare(
    check: &'static str,
    analytic: &[f64],
    numeric: &[f64],
    floor: &[f64],
    rows: usize,
    cols: usize,
    tol: Tolerance,
) -> Result<CheckReport, CheckFailure> {
    let mut worst: Option<CheckFailure> = None;
    let mut report = CheckReport { worst_ratio: 0.0, max_abs_diff: 0.0 };
    for r in 0..rows {
        for c in 0..cols {
            let (a, n) = (analytic[r * cols + c], numeric[r * cols + c]);
            let t = tol.atol + tol.rtol * a.abs().max(n.abs()) + floor[r * cols + c];
            let d = (a - n).abs();
            let ratio = if d.is_nan() { f64::INFINITY } else { d / t };
            report.max_abs_diff = report.max_abs_diff.max(d);
            if ratio > report.worst_ratio || worst.is_none() {
                report.worst_ratio = report.worst_ratio.max(ratio);
                worst = Some(CheckFailure {
                    check,
                    row: r,
                    col: c,
                    analytic: a,
                    numeric: n,
                    tolerance: t,
                });
            }
        }
    }
    if report.worst_ratio > 1.0 {
        Err(worst.expect("a worst entry exists when the ratio exceeds 1"))
    } else {
        Ok(report)
    }
}

/// Checks a full Jacobian `jac` (`m × n`, row-major, `m = f(x).len()`, `n = x.len()`).
///
/// # Panics
/// If `jac.len() != m · n` (a mistake in the calling test).
pub fn check_jacobian(
    f: impl Fn(&[f64]) -> Vec<f64>,
    x: &[f64],
    jac: &[f64],
    tol: Tolerance,
) -> Result<CheckReport, CheckFailure> {
    let n = x.len();
    let m = f(x).len();
    assert_eq!(
        jac.len(),
        m * n,
        "check_jacobian: Jacobian has {} entries, expected {m}×{n}",
        jac.len()
    );
    let fx = f(x);
    let mut num = vec![0.0; m * n];
    let mut floor = vec![0.0; m * n];
    let mut e = vec![0.0; n];
    for c in 0..n {
        e[c] = 1.0;
        let h = tol.step * x[c].abs().max(1.0);
        let col = directional(&f, x, &e, h, tol.richardson);
        e[c] = 0.0;
        for r in 0..m {
            num[r * n + c] = col[r];
            floor[r * n + c] = noise(fx[r].abs(), h);
        }
    }
    compare("check_jacobian", jac, &num, &floor, m, n, tol)
}

/// Checks a vector-Jacobian product `vjp = Jᵀ g` against `∇_x ⟨g, f(x)⟩` by central
/// differences.
pub fn check_vjp(
    f: impl Fn(&[f64]) -> Vec<f64>,
    x: &[f64],
    g: &[f64],
    vjp: &[f64],
    tol: Tolerance,
) -> Result<CheckReport, CheckFailure> {
    let n = x.len();
    assert_eq!(vjp.len(), n, "check_vjp: vjp has {} entries, x has {n}", vjp.len());
    let scalar = |x: &[f64]| vec![f(x).iter().zip(g).map(|(a, b)| a * b).sum::<f64>()];
    // The rounding noise of ⟨g, f⟩ scales with Σ|g_i f_i|, not with |⟨g, f⟩|.
    let mag: f64 = f(x).iter().zip(g).map(|(a, b)| (a * b).abs()).sum();
    let mut num = vec![0.0; n];
    let mut floor = vec![0.0; n];
    let mut e = vec![0.0; n];
    for c in 0..n {
        e[c] = 1.0;
        let h = tol.step * x[c].abs().max(1.0);
        num[c] = directional(&scalar, x, &e, h, tol.richardson)[0];
        floor[c] = noise(mag, h);
        e[c] = 0.0;
    }
    compare("check_vjp", vjp, &num, &floor, 1, n, tol)
}

/// Checks a Jacobian-vector product `jvp = J v` against the directional difference
/// `(f(x + hv) − f(x − hv)) / 2h`.
pub fn check_jvp(
    f: impl Fn(&[f64]) -> Vec<f64>,
    x: &[f64],
    v: &[f64],
    jvp: &[f64],
    tol: Tolerance,
) -> Result<CheckReport, CheckFailure> {
    let xmax = x.iter().fold(1.0f64, |m, a| m.max(a.abs()));
    let vmax = v.iter().fold(0.0f64, |m, a| m.max(a.abs())).max(1e-300);
    let h = tol.step * xmax / vmax;
    let num = directional(&f, x, v, h, tol.richardson);
    assert_eq!(
        jvp.len(),
        num.len(),
        "check_jvp: jvp has {} entries, f has {}",
        jvp.len(),
        num.len()
    );
    let floor: Vec<f64> = f(x).iter().map(|y| noise(y.abs(), h)).collect();
    compare("check_jvp", jvp, &num, &floor, 1, num.len(), tol)
}

/// Checks the gradient `grad` of a scalar function of many inputs along `directions` seeded
/// pseudo-random directions: `⟨grad, v⟩` against the directional derivative. Cheap when the
/// input is large (each direction costs 2–4 evaluations, not `2n`), and the natural check
/// for batch-coupled losses (variance, correlation penalties).
pub fn check_directional(
    f: impl Fn(&[f64]) -> f64,
    x: &[f64],
    grad: &[f64],
    directions: usize,
    seed: u64,
    tol: Tolerance,
) -> Result<CheckReport, CheckFailure> {
    assert_eq!(
        grad.len(),
        x.len(),
        "check_directional: grad has {} entries, x has {}",
        grad.len(),
        x.len()
    );
    let fv = |x: &[f64]| vec![f(x)];
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        // SplitMix64: a tiny deterministic generator, enough to pick directions.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let mut an = Vec::with_capacity(directions);
    let mut nu = Vec::with_capacity(directions);
    let xmax = x.iter().fold(1.0f64, |m, a| m.max(a.abs()));
    let mut floor = Vec::with_capacity(directions);
    let fx = f(x).abs();
    for _ in 0..directions {
        let v: Vec<f64> = (0..x.len()).map(|_| next()).collect();
        an.push(grad.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>());
        nu.push(directional(&fv, x, &v, tol.step * xmax, tol.richardson)[0]);
        floor.push(noise(fx, tol.step * xmax));
    }
    compare("check_directional", &an, &nu, &floor, 1, directions, tol)
}
