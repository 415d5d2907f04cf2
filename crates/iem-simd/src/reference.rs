//! Plain f64 reference implementations. They define what the kernels compute; the kernels
//! are tested against them, and downstream crates use them for their own f64 paths.

/// `max` of a row (`-inf` when empty).
pub fn max(x: &[f64]) -> f64 {
    x.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// Log-sum-exp with the max trick; `-inf` for an empty or all-`-inf` row.
pub fn lse(x: &[f64]) -> f64 {
    let m = max(x);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// `softmax(x / τ)`; uniform for an all-`-inf` row.
pub fn softmax(x: &[f64], tau: f64) -> Vec<f64> {
    let z: Vec<f64> = x.iter().map(|v| v / tau).collect();
    let m = max(&z);
    if m == f64::NEG_INFINITY {
        return vec![1.0 / x.len() as f64; x.len()];
    }
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// `x − lse(x)`.
pub fn log_softmax(x: &[f64]) -> Vec<f64> {
    let m = max(x);
    if m == f64::NEG_INFINITY {
        return vec![-(x.len() as f64).ln(); x.len()];
    }
    let l = lse(x);
    x.iter().map(|v| v - l).collect()
}

/// `s ⊙ (g − ⟨g, s⟩) / τ` for `s = softmax(x/τ)`.
pub fn softmax_backward(s: &[f64], g: &[f64], tau: f64) -> Vec<f64> {
    let d: f64 = s.iter().zip(g).map(|(a, b)| a * b).sum();
    s.iter().zip(g).map(|(si, gi)| si * (gi - d) / tau).collect()
}

/// `g − softmax(x) Σ g`.
pub fn log_softmax_backward(x: &[f64], g: &[f64]) -> Vec<f64> {
    let s = softmax(x, 1.0);
    let sg: f64 = g.iter().sum();
    g.iter().zip(&s).map(|(gi, si)| gi - si * sg).collect()
}

/// SoLU `z ⊙ softmax(z)`.
pub fn solu(z: &[f64]) -> Vec<f64> {
    let s = softmax(z, 1.0);
    z.iter().zip(&s).map(|(a, b)| a * b).collect()
}

/// SoLU backward `g ⊙ s + s ⊙ (u − ⟨u, s⟩)`, `u = g ⊙ z`.
pub fn solu_backward(z: &[f64], g: &[f64]) -> Vec<f64> {
    let s = softmax(z, 1.0);
    let u: Vec<f64> = g.iter().zip(z).map(|(a, b)| a * b).collect();
    let d: f64 = u.iter().zip(&s).map(|(a, b)| a * b).sum();
    (0..z.len()).map(|i| g[i] * s[i] + s[i] * (u[i] - d)).collect()
}

/// `‖x − μ‖²` computed directly.
pub fn sq_distance(x: &[f64], mu: &[f64]) -> f64 {
    x.iter().zip(mu).map(|(a, b)| (a - b) * (a - b)).sum()
}
