//! Expressiveness of a 2-D layer: how many linear regions its units cut the data's box into.

use crate::hyperplane::Box2;
use crate::{MetricError, Result};
use iem_tensor::Matrix;
use std::collections::BTreeSet;

/// Number of distinct activation patterns `sign(w_j·x + b_j)` over a `grid × grid` lattice
/// of the box: a lower estimate of the number of linear regions of a ReLU layer (regions
/// thinner than the grid spacing are missed). O(grid² K).
pub fn linear_regions(w: &Matrix, b: &[f32], bx: Box2, grid: usize) -> Result<usize> {
    let (k, d) = w.shape();
    if d != 2 || b.len() != k {
        return Err(MetricError::Shape {
            metric: "linear_regions",
            detail: format!("needs W: K × 2 and K biases, got {k}×{d} and {}", b.len()),
        });
    }
    let seen: BTreeSet<Vec<bool>> =
        grid_scores(w, b, bx, grid).map(|s| s.iter().map(|&v| v > 0.0).collect()).collect();
    Ok(seen.len())
}

/// The scores `w_j·x + b_j` of every unit at each centre of a `grid × grid` lattice of the
/// box, row by row.
fn grid_scores<'a>(
    w: &'a Matrix,
    b: &'a [f32],
    bx: Box2,
    grid: usize,
) -> impl Iterator<Item = Vec<f64>> + 'a {
    (0..grid * grid).map(move |c| {
        let x = bx.x0 + (bx.x1 - bx.x0) * ((c % grid) as f64 + 0.5) / grid as f64;
        let y = bx.y0 + (bx.y1 - bx.y0) * ((c / grid) as f64 + 0.5) / grid as f64;
        (0..w.rows())
            .map(|j| w.get(j, 0) as f64 * x + w.get(j, 1) as f64 * y + b[j] as f64)
            .collect()
    })
}

/// The arrangement bound `1 + K + K(K−1)/2`: the most regions K lines in general position
/// cut the plane into.
pub fn arrangement_bound(k: usize) -> usize {
    1 + k + k * k.saturating_sub(1) / 2
}

/// Number of distinct arg-max units of the scores `w_j·x + b_j` over the grid (the cells of
/// a softmax layer: at most K, however the lines fall).
pub fn argmax_cells(w: &Matrix, b: &[f32], bx: Box2, grid: usize) -> Result<usize> {
    let (k, d) = w.shape();
    if d != 2 || b.len() != k || k == 0 {
        return Err(MetricError::Shape {
            metric: "argmax_cells",
            detail: format!("needs W: K × 2 (K ≥ 1) and K biases, got {k}×{d} and {}", b.len()),
        });
    }
    let seen: BTreeSet<usize> = grid_scores(w, b, bx, grid)
        .map(|s| {
            // arg-max, ties to the lowest index
            let mut best = 0;
            for (j, &v) in s.iter().enumerate() {
                if v > s[best] {
                    best = j;
                }
            }
            best
        })
        .collect();
    Ok(seen.len())
}
