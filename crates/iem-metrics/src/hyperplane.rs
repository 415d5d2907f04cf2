//! Redundancy of a layer's hyperplanes `w_j·x + b_j = 0` (`W: K × D`, `b: K`).

use crate::{MetricError, Result};
use iem_tensor::Matrix;
use serde::{Deserialize, Serialize};

/// Pairwise statistics of unit normals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HyperplaneStats {
    /// Mean of `|cos(w_i, w_j)|` over pairs `i < j`.
    pub mean_abs_cos: f64,
    /// Maximum of `|cos|` over pairs.
    pub max_abs_cos: f64,
    /// Each unit's nearest-neighbour `|cos|`.
    pub nn_abs_cos: Vec<f64>,
    /// Pairs with `|cos| > cos_threshold` (direction only — the loophole: parallel
    /// hyperplanes at different offsets are different cuts).
    pub direction_duplicates: usize,
    /// Pairs with `|cos| > cos_threshold` whose signed offsets `−b/‖w‖` (flipped with the
    /// normal for antiparallel pairs) differ by less than `offset_tol`: the same cut.
    pub duplicates: usize,
    /// Units with a zero weight vector (no hyperplane; excluded from the pairs).
    pub zero_units: Vec<usize>,
}

/// Hyperplane redundancy of `w` (`K × D`) and `b` (`K`).
pub fn hyperplane_stats(
    w: &Matrix,
    b: &[f32],
    cos_threshold: f64,
    offset_tol: f64,
) -> Result<HyperplaneStats> {
    let (k, d) = w.shape();
    if b.len() != k {
        return Err(MetricError::Shape {
            metric: "hyperplane_stats",
            detail: format!("{k} units but {} biases", b.len()),
        });
    }
    crate::finite("hyperplane_stats", w)?;
    let norms: Vec<f64> =
        (0..k).map(|j| w.row(j).iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()).collect();
    let zero_units: Vec<usize> = (0..k).filter(|&j| norms[j] == 0.0).collect();
    let live: Vec<usize> = (0..k).filter(|&j| norms[j] > 0.0).collect();
    let off: Vec<f64> =
        (0..k).map(|j| if norms[j] > 0.0 { -(b[j] as f64) / norms[j] } else { 0.0 }).collect();
    let mut nn = vec![0.0f64; k];
    let (mut sum, mut max, mut pairs, mut dir_dup, mut dup) = (0.0, 0.0f64, 0usize, 0usize, 0usize);
    for (a, &i) in live.iter().enumerate() {
        for &j in &live[a + 1..] {
            let dot: f64 = (0..d).map(|c| w.get(i, c) as f64 * w.get(j, c) as f64).sum();
            let cos = dot / (norms[i] * norms[j]);
            let ac = cos.abs().min(1.0);
            sum += ac;
            pairs += 1;
            max = max.max(ac);
            nn[i] = nn[i].max(ac);
            nn[j] = nn[j].max(ac);
            if ac > cos_threshold {
                dir_dup += 1;
                if (off[i] - cos.signum() * off[j]).abs() < offset_tol {
                    dup += 1;
                }
            }
        }
    }
    Ok(HyperplaneStats {
        mean_abs_cos: if pairs > 0 { sum / pairs as f64 } else { 0.0 },
        max_abs_cos: max,
        nn_abs_cos: nn,
        direction_duplicates: dir_dup,
        duplicates: dup,
        zero_units,
    })
}

/// `‖Ŵ Ŵᵀ − I‖²_F` of the row-normalised weights and its floor `max(0, K²/D − K)`: `K > D`
/// unit vectors cannot all be orthogonal, and the floor is the least this can be.
pub fn gram_redundancy(w: &Matrix) -> Result<(f64, f64)> {
    let (k, d) = w.shape();
    crate::finite("gram_redundancy", w)?;
    let rows: Vec<Vec<f64>> = (0..k)
        .map(|j| {
            let r: Vec<f64> = w.row(j).iter().map(|&v| v as f64).collect();
            let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter().map(|v| if n > 0.0 { v / n } else { 0.0 }).collect()
        })
        .collect();
    let mut e = 0.0;
    for i in 0..k {
        for j in 0..k {
            let g: f64 = (0..d).map(|c| rows[i][c] * rows[j][c]).sum::<f64>()
                - if i == j { 1.0 } else { 0.0 };
            e += g * g;
        }
    }
    let floor = ((k * k) as f64 / d.max(1) as f64 - k as f64).max(0.0);
    Ok((e, floor))
}

/// An axis-aligned box `[x0, x1] × [y0, y1]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Box2 {
    /// Left.
    pub x0: f64,
    /// Right.
    pub x1: f64,
    /// Bottom.
    pub y0: f64,
    /// Top.
    pub y1: f64,
}

impl Box2 {
    /// The bounding box of 2-D points (rows of `x`), grown by `margin` on every side.
    pub fn of(x: &Matrix, margin: f64) -> Box2 {
        let mut b = Box2 {
            x0: f64::INFINITY,
            x1: f64::NEG_INFINITY,
            y0: f64::INFINITY,
            y1: f64::NEG_INFINITY,
        };
        for i in 0..x.rows() {
            let (px, py) = (x.get(i, 0) as f64, x.get(i, 1) as f64);
            b.x0 = b.x0.min(px);
            b.x1 = b.x1.max(px);
            b.y0 = b.y0.min(py);
            b.y1 = b.y1.max(py);
        }
        Box2 { x0: b.x0 - margin, x1: b.x1 + margin, y0: b.y0 - margin, y1: b.y1 + margin }
    }
}

/// The segment of the line `w·x + b = 0` inside the box, if it crosses it.
pub fn clip_line(w: [f64; 2], b: f64, bx: Box2) -> Option<[(f64, f64); 2]> {
    let mut pts: Vec<(f64, f64)> = Vec::new();
    let mut push = |p: (f64, f64)| {
        if p.0 >= bx.x0 - 1e-12
            && p.0 <= bx.x1 + 1e-12
            && p.1 >= bx.y0 - 1e-12
            && p.1 <= bx.y1 + 1e-12
            && !pts.iter().any(|q| (q.0 - p.0).abs() < 1e-12 && (q.1 - p.1).abs() < 1e-12)
        {
            pts.push(p);
        }
    };
    if w[1] != 0.0 {
        for x in [bx.x0, bx.x1] {
            push((x, -(w[0] * x + b) / w[1]));
        }
    }
    if w[0] != 0.0 {
        for y in [bx.y0, bx.y1] {
            push((-(w[1] * y + b) / w[0], y));
        }
    }
    if pts.len() >= 2 { Some([pts[0], pts[1]]) } else { None }
}

fn point_segment(p: (f64, f64), s: [(f64, f64); 2]) -> f64 {
    let (dx, dy) = (s[1].0 - s[0].0, s[1].1 - s[0].1);
    let l2 = dx * dx + dy * dy;
    let t = if l2 > 0.0 {
        (((p.0 - s[0].0) * dx + (p.1 - s[0].1) * dy) / l2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    ((p.0 - s[0].0 - t * dx).powi(2) + (p.1 - s[0].1 - t * dy).powi(2)).sqrt()
}

/// Hausdorff distance between two units' lines clipped to the box (2-D only); `None` when
/// either line misses the box. For segments the maximum is attained at an endpoint.
pub fn clipped_hausdorff(w1: [f64; 2], b1: f64, w2: [f64; 2], b2: f64, bx: Box2) -> Option<f64> {
    let s1 = clip_line(w1, b1, bx)?;
    let s2 = clip_line(w2, b2, bx)?;
    let h1 = s1.iter().map(|&p| point_segment(p, s2)).fold(0.0, f64::max);
    let h2 = s2.iter().map(|&p| point_segment(p, s1)).fold(0.0, f64::max);
    Some(h1.max(h2))
}
