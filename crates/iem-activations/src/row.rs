//! One sample (row) at a time, generic over `f32`/`f64`: forward, vector-Jacobian product
//! (never building `J`), Jacobian-vector product, and the activation's parameter gradients.
//! The `f64` instantiation is the reference path; the `f32` one serves activations without a
//! dedicated SIMD kernel.

use crate::kind::{Activation, Temperature};
use crate::real::Real;

fn tau<F: Real>(t: &Temperature, p: &[F]) -> F {
    match t {
        Temperature::Fixed(t) => F::of(*t as f64),
        Temperature::Learned(_) => p[0].exp(),
    }
}

fn row_max<F: Real>(z: &[F]) -> F {
    z.iter().fold(F::NEG_INF, |m, &v| m.max(v))
}

/// `out = softmax(z · c)`; uniform for an all-`−∞` row.
pub(crate) fn softmax<F: Real>(z: &[F], c: F, out: &mut [F]) {
    let m = row_max(z);
    if m == F::NEG_INF {
        let u = F::ONE / F::of(z.len() as f64);
        out.iter_mut().for_each(|o| *o = u);
        return;
    }
    let mut sum = F::ZERO;
    for (o, &v) in out.iter_mut().zip(z) {
        *o = ((v - m) * c).exp();
        sum += *o;
    }
    let inv = F::ONE / sum;
    out.iter_mut().for_each(|o| *o = *o * inv);
}

fn lse<F: Real>(z: &[F]) -> F {
    let m = row_max(z);
    if m == F::NEG_INF {
        return m;
    }
    let mut s = F::ZERO;
    for &v in z {
        s += (v - m).exp();
    }
    m + s.ln()
}

fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    let mut s = F::ZERO;
    for (x, y) in a.iter().zip(b) {
        s += *x * *y;
    }
    s
}

fn sum<F: Real>(a: &[F]) -> F {
    let mut s = F::ZERO;
    for &x in a {
        s += x;
    }
    s
}

/// Index of the maximum of `z` (lowest index on ties).
fn argmax<F: Real>(z: &[F]) -> usize {
    let mut best = 0;
    for (i, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = i;
        }
    }
    best
}

/// Sparsemax threshold τ with `Σ max(z − τ, 0) = 1`.
fn sparsemax_tau<F: Real>(z: &[F]) -> F {
    let mut s: Vec<F> = z.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let mut cum = F::ZERO;
    let mut tau = s[0] - F::ONE;
    for (i, &v) in s.iter().enumerate() {
        cum += v;
        let k = F::of((i + 1) as f64);
        if F::ONE + k * v > cum {
            tau = (cum - F::ONE) / k;
        } else {
            break;
        }
    }
    tau
}

/// 1.5-entmax `u = [x/2 − τ]₊` (so that `a = u²`, `Σ a = 1`), exact sort-based algorithm.
fn entmax15_u<F: Real>(z: &[F], u: &mut [F]) {
    let m = row_max(z);
    let half = F::of(0.5);
    let x: Vec<F> = z.iter().map(|&v| (v - m) * half).collect();
    let mut s = x.clone();
    s.sort_by(|a, b| b.total_cmp(a));
    let (mut c1, mut c2) = (F::ZERO, F::ZERO);
    let mut tau_star = s[0] - F::ONE;
    for (i, &v) in s.iter().enumerate() {
        c1 += v;
        c2 += v * v;
        let rho = F::of((i + 1) as f64);
        let mean = c1 / rho;
        let mean_sq = c2 / rho;
        let ss = rho * (mean_sq - mean * mean);
        let delta = ((F::ONE - ss) / rho).max(F::ZERO);
        let tau = mean - delta.sqrt();
        if tau <= v {
            tau_star = tau;
        } else {
            break;
        }
    }
    for (o, &v) in u.iter_mut().zip(&x) {
        *o = (v - tau_star).max(F::ZERO);
    }
}

/// Indices kept by top-k: the `k` largest, ties to the lowest index.
fn topk_mask<F: Real>(z: &[F], k: usize) -> Vec<bool> {
    let mut idx: Vec<usize> = (0..z.len()).collect();
    idx.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
    let mut mask = vec![false; z.len()];
    for &i in &idx[..k.min(z.len())] {
        mask[i] = true;
    }
    mask
}

/// `(x̂, 1/√(σ² + ε))` of a LayerNorm row.
fn ln_stats<F: Real>(z: &[F], eps: f32) -> (Vec<F>, F) {
    let n = F::of(z.len() as f64);
    let mu = sum(z) / n;
    let mut var = F::ZERO;
    for &v in z {
        var += (v - mu) * (v - mu);
    }
    let inv = F::ONE / (var / n + F::of(eps as f64)).sqrt();
    (z.iter().map(|&v| (v - mu) * inv).collect(), inv)
}

/// Forward pass of one row: `out = f(z)` (`out.len() = output_width`).
pub(crate) fn forward<F: Real>(act: &Activation, p: &[F], z: &[F], out: &mut [F]) {
    let k = z.len();
    match act {
        Activation::Relu => z.iter().zip(out).for_each(|(&v, o)| *o = v.max(F::ZERO)),
        Activation::Abs => {
            z.iter().zip(out).for_each(|(&v, o)| *o = if v < F::ZERO { -v } else { v })
        }
        Activation::Softmax { temperature } => softmax(z, F::ONE / tau(temperature, p), out),
        Activation::LogSoftmax => {
            let m = row_max(z);
            if m == F::NEG_INF {
                out.iter_mut().for_each(|o| *o = -F::of(k as f64).ln());
            } else {
                let l = lse(z);
                z.iter().zip(out).for_each(|(&v, o)| *o = v - l);
            }
        }
        Activation::Nls => {
            let nd: Vec<F> = z.iter().map(|&v| -v).collect();
            let l = lse(&nd);
            z.iter().zip(out).for_each(|(&v, o)| *o = v + l);
        }
        Activation::Solu => {
            softmax(z, F::ONE, out);
            out.iter_mut().zip(z).for_each(|(o, &v)| *o = *o * v);
        }
        Activation::GroupedSoftmax { group, tau } => {
            let c = F::ONE / F::of(*tau as f64);
            for (zg, og) in z.chunks(*group).zip(out.chunks_mut(*group)) {
                softmax(zg, c, og);
            }
        }
        Activation::GroupedSolu { group } => {
            for (zg, og) in z.chunks(*group).zip(out.chunks_mut(*group)) {
                softmax(zg, F::ONE, og);
                og.iter_mut().zip(zg).for_each(|(o, &v)| *o = *o * v);
            }
        }
        Activation::Sparsemax => {
            let t = sparsemax_tau(z);
            z.iter().zip(out).for_each(|(&v, o)| *o = (v - t).max(F::ZERO));
        }
        Activation::Entmax15 => {
            entmax15_u(z, out);
            out.iter_mut().for_each(|o| *o = *o * *o);
        }
        Activation::Lwta { block } => {
            for (zg, og) in z.chunks(*block).zip(out.chunks_mut(*block)) {
                let w = argmax(zg);
                for (i, o) in og.iter_mut().enumerate() {
                    *o = if i == w { zg[i] } else { F::ZERO };
                }
            }
        }
        Activation::Maxout { block } => {
            for (zg, o) in z.chunks(*block).zip(out.iter_mut()) {
                *o = zg[argmax(zg)];
            }
        }
        Activation::TopK { k: kk } => {
            let m = topk_mask(z, *kk);
            for i in 0..k {
                out[i] = if m[i] { z[i] } else { F::ZERO };
            }
        }
        Activation::Triangle => {
            let mu = sum(z) / F::of(k as f64);
            z.iter().zip(out).for_each(|(&v, o)| *o = (mu - v).max(F::ZERO));
        }
        Activation::LayerNorm { eps } => {
            let (xh, _) = ln_stats(z, *eps);
            for i in 0..k {
                out[i] = p[i] * xh[i] + p[k + i];
            }
        }
    }
}

/// Vector-Jacobian product of one row: `dz = Jᵀ g`, and `dp += ∂⟨g, f⟩/∂p` (accumulated, so
/// a batch sums its rows). `out` is this row's forward output.
pub(crate) fn vjp<F: Real>(
    act: &Activation,
    p: &[F],
    z: &[F],
    out: &[F],
    g: &[F],
    dz: &mut [F],
    dp: &mut [F],
) {
    let k = z.len();
    match act {
        Activation::Relu => {
            for i in 0..k {
                dz[i] = if z[i] > F::ZERO { g[i] } else { F::ZERO };
            }
        }
        Activation::Abs => {
            for i in 0..k {
                dz[i] = if z[i] > F::ZERO {
                    g[i]
                } else if z[i] < F::ZERO {
                    -g[i]
                } else {
                    F::ZERO
                };
            }
        }
        Activation::Softmax { temperature } => {
            let t = tau(temperature, p);
            let d = dot(g, out);
            for i in 0..k {
                dz[i] = out[i] * (g[i] - d) / t;
            }
            if let Temperature::Learned(_) = temperature {
                // ∂L/∂θ = −Σ g_i s_i (z_i − ⟨z, s⟩)/τ, with z shifted by its max (shift-invariant).
                let m = row_max(z);
                let zs: Vec<F> = z.iter().map(|&v| v - m).collect();
                let zbar = dot(&zs, out);
                let mut acc = F::ZERO;
                for i in 0..k {
                    acc += g[i] * out[i] * (zs[i] - zbar);
                }
                dp[0] += -acc / t;
            }
        }
        Activation::LogSoftmax => {
            let mut s = vec![F::ZERO; k];
            softmax(z, F::ONE, &mut s);
            let sg = sum(g);
            for i in 0..k {
                dz[i] = g[i] - s[i] * sg;
            }
        }
        Activation::Nls => {
            let nd: Vec<F> = z.iter().map(|&v| -v).collect();
            let mut r = vec![F::ZERO; k];
            softmax(&nd, F::ONE, &mut r);
            let sg = sum(g);
            for i in 0..k {
                dz[i] = g[i] - r[i] * sg;
            }
        }
        Activation::Solu => solu_vjp(z, g, dz),
        Activation::GroupedSoftmax { group, tau } => {
            let t = F::of(*tau as f64);
            for ((og, gg), dg) in
                out.chunks(*group).zip(g.chunks(*group)).zip(dz.chunks_mut(*group))
            {
                let d = dot(gg, og);
                for i in 0..og.len() {
                    dg[i] = og[i] * (gg[i] - d) / t;
                }
            }
        }
        Activation::GroupedSolu { group } => {
            for ((zg, gg), dg) in z.chunks(*group).zip(g.chunks(*group)).zip(dz.chunks_mut(*group))
            {
                solu_vjp(zg, gg, dg);
            }
        }
        Activation::Sparsemax => {
            let (mut n, mut s) = (0usize, F::ZERO);
            for i in 0..k {
                if out[i] > F::ZERO {
                    n += 1;
                    s += g[i];
                }
            }
            let mean = s / F::of(n.max(1) as f64);
            for i in 0..k {
                dz[i] = if out[i] > F::ZERO { g[i] - mean } else { F::ZERO };
            }
        }
        Activation::Entmax15 => {
            let u: Vec<F> = out.iter().map(|&a| a.sqrt()).collect();
            let q = dot(g, &u) / sum(&u);
            for i in 0..k {
                dz[i] = u[i] * (g[i] - q);
            }
        }
        Activation::Lwta { .. } | Activation::TopK { .. } => {
            mask_vjp(act, z, g, dz);
        }
        Activation::Maxout { block } => {
            dz.iter_mut().for_each(|d| *d = F::ZERO);
            for (b, zg) in z.chunks(*block).enumerate() {
                dz[b * block + argmax(zg)] = g[b];
            }
        }
        Activation::Triangle => {
            let (mut sa, kf) = (F::ZERO, F::of(k as f64));
            for i in 0..k {
                if out[i] > F::ZERO {
                    sa += g[i];
                }
            }
            for j in 0..k {
                dz[j] = sa / kf - if out[j] > F::ZERO { g[j] } else { F::ZERO };
            }
        }
        Activation::LayerNorm { eps } => {
            let (xh, inv) = ln_stats(z, *eps);
            let kf = F::of(k as f64);
            let gh: Vec<F> = (0..k).map(|i| g[i] * p[i]).collect();
            let mg = sum(&gh) / kf;
            let mgx = dot(&gh, &xh) / kf;
            for i in 0..k {
                dz[i] = inv * (gh[i] - mg - xh[i] * mgx);
                dp[i] += g[i] * xh[i];
                dp[k + i] += g[i];
            }
        }
    }
}

fn solu_vjp<F: Real>(z: &[F], g: &[F], dz: &mut [F]) {
    let k = z.len();
    let mut s = vec![F::ZERO; k];
    softmax(z, F::ONE, &mut s);
    let mut c = F::ZERO;
    for i in 0..k {
        c += g[i] * z[i] * s[i];
    }
    for i in 0..k {
        dz[i] = g[i] * s[i] + s[i] * (g[i] * z[i] - c);
    }
}

fn solu_jvp<F: Real>(z: &[F], v: &[F], jv: &mut [F]) {
    let k = z.len();
    let mut s = vec![F::ZERO; k];
    softmax(z, F::ONE, &mut s);
    let sv = dot(&s, v);
    for i in 0..k {
        jv[i] = s[i] * v[i] + z[i] * s[i] * (v[i] - sv);
    }
}

fn mask_of<F: Real>(act: &Activation, z: &[F]) -> Vec<bool> {
    match act {
        Activation::Lwta { block } => {
            let mut m = vec![false; z.len()];
            for (b, zg) in z.chunks(*block).enumerate() {
                m[b * block + argmax(zg)] = true;
            }
            m
        }
        Activation::TopK { k } => topk_mask(z, *k),
        _ => unreachable!("mask_of on a non-mask activation"),
    }
}

fn mask_vjp<F: Real>(act: &Activation, z: &[F], g: &[F], dz: &mut [F]) {
    let m = mask_of(act, z);
    for i in 0..z.len() {
        dz[i] = if m[i] { g[i] } else { F::ZERO };
    }
}

/// Jacobian-vector product of one row with respect to `z`: `jv = J v`.
pub(crate) fn jvp<F: Real>(act: &Activation, p: &[F], z: &[F], out: &[F], v: &[F], jv: &mut [F]) {
    let k = z.len();
    match act {
        // Symmetric Jacobians: J v has the vjp's form.
        Activation::Relu
        | Activation::Abs
        | Activation::Softmax { temperature: Temperature::Fixed(_) }
        | Activation::GroupedSoftmax { .. }
        | Activation::Sparsemax
        | Activation::Entmax15
        | Activation::Lwta { .. }
        | Activation::TopK { .. } => vjp(act, p, z, out, v, jv, &mut []),
        Activation::Softmax { temperature } => {
            let t = tau(temperature, p);
            let d = dot(v, out);
            for i in 0..k {
                jv[i] = out[i] * (v[i] - d) / t;
            }
        }
        Activation::LogSoftmax => {
            let mut s = vec![F::ZERO; k];
            softmax(z, F::ONE, &mut s);
            let sv = dot(&s, v);
            for i in 0..k {
                jv[i] = v[i] - sv;
            }
        }
        Activation::Nls => {
            let nd: Vec<F> = z.iter().map(|&x| -x).collect();
            let mut r = vec![F::ZERO; k];
            softmax(&nd, F::ONE, &mut r);
            let rv = dot(&r, v);
            for i in 0..k {
                jv[i] = v[i] - rv;
            }
        }
        Activation::Solu => solu_jvp(z, v, jv),
        Activation::GroupedSolu { group } => {
            for ((zg, vg), jg) in z.chunks(*group).zip(v.chunks(*group)).zip(jv.chunks_mut(*group))
            {
                solu_jvp(zg, vg, jg);
            }
        }
        Activation::Maxout { block } => {
            for (b, zg) in z.chunks(*block).enumerate() {
                jv[b] = v[b * block + argmax(zg)];
            }
        }
        Activation::Triangle => {
            let mv = sum(v) / F::of(k as f64);
            for i in 0..k {
                jv[i] = if out[i] > F::ZERO { mv - v[i] } else { F::ZERO };
            }
        }
        Activation::LayerNorm { eps } => {
            let (xh, inv) = ln_stats(z, *eps);
            let kf = F::of(k as f64);
            let mv = sum(v) / kf;
            let mxv = dot(&xh, v) / kf;
            for i in 0..k {
                jv[i] = p[i] * inv * (v[i] - mv - xh[i] * mxv);
            }
        }
    }
}

/// Smallest distance from `z` to a kink or tie of the activation (∞ when smooth), so tests
/// can keep finite differences away from non-differentiable points.
pub(crate) fn kink_distance(act: &Activation, p: &[f64], z: &[f64]) -> f64 {
    let k = z.len();
    // Gap between the j-th and (j+1)-th largest values: where a winner or a kept set changes.
    let rank_gap = |zs: &[f64], j: usize| {
        if zs.len() <= j {
            return f64::INFINITY;
        }
        let mut s = zs.to_vec();
        s.sort_by(|a, b| b.total_cmp(a));
        s[j - 1] - s[j]
    };
    match act {
        Activation::Relu | Activation::Abs => {
            z.iter().map(|v| v.abs()).fold(f64::INFINITY, f64::min)
        }
        Activation::Lwta { block: m } | Activation::Maxout { block: m } => {
            z.chunks(*m).map(|c| rank_gap(c, 1)).fold(f64::INFINITY, f64::min)
        }
        Activation::TopK { k } => rank_gap(z, *k),
        Activation::Sparsemax => {
            let t = sparsemax_tau(z);
            z.iter().map(|v| (v - t).abs()).fold(f64::INFINITY, f64::min)
        }
        Activation::Entmax15 => {
            let mut u = vec![0.0; k];
            entmax15_u(z, &mut u);
            let m = row_max(z);
            // Distance of x/2 from τ on the unsupported side, and u on the supported side.
            let tau_star =
                z.iter().zip(&u).find(|(_, u)| **u > 0.0).map(|(zi, ui)| (zi - m) / 2.0 - ui);
            match tau_star {
                Some(t) => z
                    .iter()
                    .map(|zi| ((zi - m) / 2.0 - t).abs() * 2.0)
                    .fold(f64::INFINITY, f64::min),
                None => f64::INFINITY,
            }
        }
        Activation::Triangle => {
            let mu = z.iter().sum::<f64>() / k as f64;
            z.iter().map(|v| (mu - v).abs()).fold(f64::INFINITY, f64::min)
        }
        _ => {
            let _ = p;
            f64::INFINITY
        }
    }
}
