//! f32 batch paths for activations whose generic row code would allocate per row:
//! LayerNorm and top-k. Rows are processed in fixed blocks; parameter gradients are summed
//! per block and then in block order, so results do not depend on the thread count.

use iem_simd::Par;
use rayon::prelude::*;

const BLOCK_ROWS: usize = 64;

/// `(mean, 1/√(var + ε))` of a row (biased variance, two passes).
fn stats(z: &[f32], eps: f32) -> (f32, f32) {
    let n = z.len() as f32;
    let mu = z.iter().sum::<f32>() / n;
    let var = z.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / n;
    (mu, 1.0 / (var + eps).sqrt())
}

/// LayerNorm forward `a = γ ⊙ (z − μ)/√(σ² + ε) + β`, `params = [γ; β]`.
pub(crate) fn layer_norm(z: &[f32], k: usize, params: &[f32], eps: f32, out: &mut [f32], par: Par) {
    let (gamma, beta) = params.split_at(k);
    let run = |z: &[f32], o: &mut [f32]| {
        for (zr, or) in z.chunks_exact(k).zip(o.chunks_exact_mut(k)) {
            let (mu, inv) = stats(zr, eps);
            for i in 0..k {
                or[i] = gamma[i] * (zr[i] - mu) * inv + beta[i];
            }
        }
    };
    if par.degree() > 1 {
        z.par_chunks(BLOCK_ROWS * k)
            .zip(out.par_chunks_mut(BLOCK_ROWS * k))
            .for_each(|(z, o)| run(z, o));
    } else {
        run(z, out);
    }
}

/// LayerNorm backward: `dz = (ĝ − mean ĝ − x̂ mean(ĝ ⊙ x̂)) / √(σ² + ε)` with `ĝ = g ⊙ γ`;
/// `dγ = Σ_rows g ⊙ x̂`, `dβ = Σ_rows g` (written into `dparams = [dγ; dβ]`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_backward(
    z: &[f32],
    k: usize,
    params: &[f32],
    eps: f32,
    g: &[f32],
    dz: &mut [f32],
    dparams: &mut [f32],
    par: Par,
) {
    let gamma = &params[..k];
    let run = |z: &[f32], g: &[f32], d: &mut [f32]| {
        let mut dp = vec![0.0f32; 2 * k];
        let mut xh = vec![0.0f32; k];
        for ((zr, gr), dr) in z.chunks_exact(k).zip(g.chunks_exact(k)).zip(d.chunks_exact_mut(k)) {
            let (mu, inv) = stats(zr, eps);
            let (mut mg, mut mgx) = (0.0f32, 0.0f32);
            for i in 0..k {
                xh[i] = (zr[i] - mu) * inv;
                let gh = gr[i] * gamma[i];
                mg += gh;
                mgx += gh * xh[i];
            }
            mg /= k as f32;
            mgx /= k as f32;
            for i in 0..k {
                dr[i] = inv * (gr[i] * gamma[i] - mg - xh[i] * mgx);
                dp[i] += gr[i] * xh[i];
                dp[k + i] += gr[i];
            }
        }
        dp
    };
    let parts: Vec<Vec<f32>> = if par.degree() > 1 {
        z.par_chunks(BLOCK_ROWS * k)
            .zip(g.par_chunks(BLOCK_ROWS * k))
            .zip(dz.par_chunks_mut(BLOCK_ROWS * k))
            .map(|((z, g), d)| run(z, g, d))
            .collect()
    } else {
        z.chunks(BLOCK_ROWS * k)
            .zip(g.chunks(BLOCK_ROWS * k))
            .zip(dz.chunks_mut(BLOCK_ROWS * k))
            .map(|((z, g), d)| run(z, g, d))
            .collect()
    };
    for p in parts {
        dparams.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
}

/// Marks the `kk` largest entries of `z` (ties to the lowest index) in `keep`, in O(K).
fn top_k_mask(z: &[f32], kk: usize, idx: &mut Vec<usize>, keep: &mut [bool]) {
    idx.clear();
    idx.extend(0..z.len());
    keep.fill(false);
    let cmp = |a: &usize, b: &usize| z[*b].total_cmp(&z[*a]).then(a.cmp(b));
    if kk < z.len() {
        idx.select_nth_unstable_by(kk - 1, cmp);
    }
    for &i in &idx[..kk] {
        keep[i] = true;
    }
}

/// `out = src` on each row's top-`kk` entries of `z`, 0 elsewhere: the forward pass with
/// `src = z`, the backward pass with `src = g`.
fn mask_top_k(z: &[f32], src: &[f32], k: usize, kk: usize, out: &mut [f32], par: Par) {
    let run = |z: &[f32], s: &[f32], o: &mut [f32]| {
        let (mut idx, mut keep) = (Vec::with_capacity(k), vec![false; k]);
        for ((zr, sr), or) in z.chunks_exact(k).zip(s.chunks_exact(k)).zip(o.chunks_exact_mut(k)) {
            top_k_mask(zr, kk, &mut idx, &mut keep);
            for i in 0..k {
                or[i] = if keep[i] { sr[i] } else { 0.0 };
            }
        }
    };
    if par.degree() > 1 {
        z.par_chunks(BLOCK_ROWS * k)
            .zip(src.par_chunks(BLOCK_ROWS * k))
            .zip(out.par_chunks_mut(BLOCK_ROWS * k))
            .for_each(|((z, s), o)| run(z, s, o));
    } else {
        run(z, src, out);
    }
}

/// Top-k forward: keep the `kk` largest entries of each row.
pub(crate) fn top_k(z: &[f32], k: usize, kk: usize, out: &mut [f32], par: Par) {
    mask_top_k(z, z, k, kk, out, par)
}

/// Top-k backward: `g` on the kept entries, 0 elsewhere.
pub(crate) fn top_k_backward(z: &[f32], k: usize, kk: usize, g: &[f32], dz: &mut [f32], par: Par) {
    mask_top_k(z, g, k, kk, dz, par)
}
