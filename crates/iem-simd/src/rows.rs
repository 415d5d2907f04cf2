//! Row-wise kernels over row-major `rows × cols` blocks: reductions and the softmax family
//! with their backward passes. Every function processes rows independently, in fixed row
//! blocks, so [`Par`] never changes a result.
//!
//! Conventions (documented here once, relied on by `iem-activations`):
//! - inputs are finite or `-inf`; a row of all `-inf` has `lse = -inf`, and its softmax is
//!   uniform (`1/cols`, the limit of equal logits) and its log-softmax `-ln cols`;
//! - `+inf` or NaN inputs give NaN outputs in that row (callers detect them, nothing hides
//!   them);
//! - a row of width 0 is allowed and produces nothing.

use crate::isa::Par;
use crate::math::{
    Op1, Op2, Op3, map_inplace, map1, map2, map3, row_dot, row_max, row_sum, vexp, vexp_nonpos,
};

/// `exp((x − m)·c)`.
#[derive(Clone, Copy)]
struct ExpShift(f32, f32);
impl Op1 for ExpShift {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, x: S::V) -> S::V {
        vexp_nonpos(s, s.mul(s.sub(x, s.splat(self.0)), s.splat(self.1)))
    }
}
/// `x·a`.
#[derive(Clone, Copy)]
pub(crate) struct Scale(pub(crate) f32);
impl Op1 for Scale {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, x: S::V) -> S::V {
        s.mul(x, s.splat(self.0))
    }
}
/// `x − a`.
#[derive(Clone, Copy)]
struct SubConst(f32);
impl Op1 for SubConst {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, x: S::V) -> S::V {
        s.sub(x, s.splat(self.0))
    }
}
/// Softmax backward lane: `s·(g − d)·c`.
#[derive(Clone, Copy)]
struct SoftmaxBwd(f32, f32);
impl Op2 for SoftmaxBwd {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, sv: S::V, gv: S::V) -> S::V {
        s.mul(s.mul(sv, s.sub(gv, s.splat(self.0))), s.splat(self.1))
    }
}
/// Log-softmax backward lane: `g − exp(y)·Σg`.
#[derive(Clone, Copy)]
struct LogSoftmaxBwd(f32);
impl Op2 for LogSoftmaxBwd {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, yv: S::V, gv: S::V) -> S::V {
        s.sub(gv, s.mul(vexp_nonpos(s, yv), s.splat(self.0)))
    }
}
/// `x·y`.
#[derive(Clone, Copy)]
struct Mul;
impl Op2 for Mul {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, x: S::V, y: S::V) -> S::V {
        s.mul(x, y)
    }
}
/// SoLU backward lane: `s·(g·(1 + z) − c)`, exactly 0 where `s = 0`.
#[derive(Clone, Copy)]
struct SoluBwd(f32);
impl Op3 for SoluBwd {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, zv: S::V, sv: S::V, gv: S::V) -> S::V {
        // Where s = 0 the gradient is exactly 0; guard so |z| near f32::MAX cannot make it
        // 0·inf = NaN.
        let v = s.mul(sv, s.sub(s.mul(gv, s.add(s.splat(1.0), zv)), s.splat(self.0)));
        s.select_gt(sv, s.zero(), v, s.zero())
    }
}
use crate::simd::{self, Kernel, Simd};
use rayon::prelude::*;

/// Elements per parallel block (rounded to whole rows).
const BLOCK_ELEMS: usize = 16 * 1024;

fn rows_of(op: &str, len: usize, cols: usize) -> usize {
    if cols == 0 {
        assert_eq!(len, 0, "{op}: cols = 0 but the input has {len} elements");
        return 0;
    }
    assert!(
        len.is_multiple_of(cols),
        "{op}: {len} elements is not a whole number of rows of {cols}"
    );
    len / cols
}

fn block_rows(cols: usize) -> usize {
    (BLOCK_ELEMS / cols.max(1)).max(1)
}

/// Runs `f(first_row, input_block, output_block)` over fixed row blocks, with the output
/// having `ocols` values per row.
fn blocks<F>(par: Par, x: &[f32], cols: usize, out: &mut [f32], ocols: usize, f: F)
where
    F: Fn(&[f32], &mut [f32]) + Sync + Send,
{
    let br = block_rows(cols);
    if par.degree() > 1 && x.len() > BLOCK_ELEMS {
        x.par_chunks(br * cols).zip(out.par_chunks_mut(br * ocols)).for_each(|(xi, oi)| f(xi, oi));
    } else {
        for (xi, oi) in x.chunks(br * cols.max(1)).zip(out.chunks_mut(br * ocols.max(1))) {
            f(xi, oi);
        }
    }
}

/// Runs `f(block)` over the fixed row blocks of [`blocks`], in place.
fn blocks_in_place<F>(par: Par, x: &mut [f32], cols: usize, f: F)
where
    F: Fn(&mut [f32]) + Sync + Send,
{
    let br = block_rows(cols) * cols.max(1);
    if par.degree() > 1 && x.len() > BLOCK_ELEMS {
        x.par_chunks_mut(br).for_each(f);
    } else {
        x.chunks_mut(br).for_each(f);
    }
}

macro_rules! row_kernel {
    ($name:ident { $($field:ident : $ty:ty),* } |$s:ident, $this:ident| $body:block) => {
        struct $name<'a> { $($field: $ty,)* _p: std::marker::PhantomData<&'a ()> }
        impl Kernel for $name<'_> {
            type Output = ();
            #[inline(always)]
            fn run<S: Simd>(self, $s: S) {
                let $this = self;
                $body
            }
        }
    };
}

// ---------------------------------------------------------------- reductions

row_kernel!(MaxK { x: &'a [f32], cols: usize, out: &'a mut [f32] } |s, k| {
    for (row, o) in k.x.chunks_exact(k.cols).zip(k.out.iter_mut()) {
        *o = row_max(s, row);
    }
});
row_kernel!(SumK { x: &'a [f32], cols: usize, out: &'a mut [f32] } |s, k| {
    for (row, o) in k.x.chunks_exact(k.cols).zip(k.out.iter_mut()) {
        *o = row_sum(s, row);
    }
});
row_kernel!(LseK { x: &'a [f32], cols: usize, out: &'a mut [f32] } |s, k| {
    for (row, o) in k.x.chunks_exact(k.cols).zip(k.out.iter_mut()) {
        *o = lse_row(s, row);
    }
});

/// `max` of each row into `out` (`rows` values).
pub fn max_rows(x: &[f32], cols: usize, out: &mut [f32], par: Par) {
    let rows = rows_of("max_rows", x.len(), cols);
    assert_eq!(out.len(), rows, "max_rows: out has {} values for {rows} rows", out.len());
    if rows == 0 {
        return;
    }
    blocks(par, x, cols, out, 1, |x, out| simd::run(MaxK { x, cols, out, _p: Default::default() }));
}

/// Sum of each row into `out`.
pub fn sum_rows(x: &[f32], cols: usize, out: &mut [f32], par: Par) {
    let rows = rows_of("sum_rows", x.len(), cols);
    assert_eq!(out.len(), rows, "sum_rows: out has {} values for {rows} rows", out.len());
    if rows == 0 {
        return;
    }
    blocks(par, x, cols, out, 1, |x, out| simd::run(SumK { x, cols, out, _p: Default::default() }));
}

/// `log Σ_j exp(x_j)` of each row into `out`, with the max trick; `-inf` for an all-`-inf`
/// row.
pub fn lse_rows(x: &[f32], cols: usize, out: &mut [f32], par: Par) {
    let rows = rows_of("lse_rows", x.len(), cols);
    assert_eq!(out.len(), rows, "lse_rows: out has {} values for {rows} rows", out.len());
    if rows == 0 {
        return;
    }
    blocks(par, x, cols, out, 1, |x, out| simd::run(LseK { x, cols, out, _p: Default::default() }));
}

/// Log-sum-exp of one row.
#[inline(always)]
pub(crate) fn lse_row<S: Simd>(s: S, x: &[f32]) -> f32 {
    let m = row_max(s, x);
    if m == f32::NEG_INFINITY {
        return f32::NEG_INFINITY;
    }
    m + sum_exp_shifted(s, x, m, 1.0).ln()
}

/// `Σ exp((x_j − m)·c)`.
#[inline(always)]
fn sum_exp_shifted<S: Simd>(s: S, x: &[f32], m: f32, c: f32) -> f32 {
    // Padding lanes must contribute exp(−inf) = 0 whatever the sign of c.
    let fill = if c >= 0.0 { f32::NEG_INFINITY } else { f32::INFINITY };
    let l = S::LANES;
    let (mv, cv) = (s.splat(m), s.splat(c));
    let mut acc = s.zero();
    let mut i = 0;
    while i + l <= x.len() {
        acc = s.add(acc, vexp_nonpos(s, s.mul(s.sub(s.load(&x[i..]), mv), cv)));
        i += l;
    }
    if i < x.len() {
        acc = s.add(acc, vexp_nonpos(s, s.mul(s.sub(s.load_partial(&x[i..], fill), mv), cv)));
    }
    s.reduce_sum(acc)
}

/// Softmax of one row with `c = 1/τ`: `out = exp((x − max)·c) / Σ`.
#[inline(always)]
pub(crate) fn softmax_row<S: Simd>(s: S, x: &[f32], c: f32, out: &mut [f32]) {
    let Some(m) = softmax_shift(s, x, c) else {
        out.fill(1.0 / x.len() as f32);
        return;
    };
    map1(s, x, out, f32::NEG_INFINITY, ExpShift(m, c));
    let inv = 1.0 / row_sum(s, out);
    map_inplace(s, out, Scale(inv));
}

/// The shift of a row's softmax with `c = 1/τ`: the entry with the largest `c·x` (the max
/// for c ≥ 0, the min for c < 0), or `None` when every entry is −∞·c (a uniform row).
#[inline(always)]
fn softmax_shift<S: Simd>(s: S, x: &[f32], c: f32) -> Option<f32> {
    let m = if c >= 0.0 { row_max(s, x) } else { -row_max_neg(s, x) };
    let uniform = m == f32::NEG_INFINITY && c >= 0.0 || m == f32::INFINITY && c < 0.0;
    (!uniform).then_some(m)
}

/// A row's log-sum-exp for log-softmax, or `None` for a row of all −∞ (uniform).
#[inline(always)]
fn log_softmax_lse<S: Simd>(s: S, x: &[f32]) -> Option<f32> {
    let m = row_max(s, x);
    (m != f32::NEG_INFINITY).then(|| m + sum_exp_shifted(s, x, m, 1.0).ln())
}

// ---------------------------------------------------------------- softmax family

row_kernel!(SoftmaxK { x: &'a [f32], cols: usize, c: f32, out: &'a mut [f32] } |s, k| {
    for (row, o) in k.x.chunks_exact(k.cols).zip(k.out.chunks_exact_mut(k.cols)) {
        softmax_row(s, row, k.c, o);
    }
});

/// Row softmax with temperature: `out = softmax(x / τ)`, given `inv_tau = 1/τ`. A negative
/// `inv_tau` gives responsibilities of distances, `softmax(−x/|τ|)`, shifted by the row's
/// minimum so that nothing overflows.
pub fn softmax(x: &[f32], cols: usize, inv_tau: f32, out: &mut [f32], par: Par) {
    rows_of("softmax", x.len(), cols);
    assert_eq!(out.len(), x.len(), "softmax: out has {} values, x has {}", out.len(), x.len());
    if x.is_empty() {
        return;
    }
    blocks(par, x, cols, out, cols, |x, out| {
        simd::run(SoftmaxK { x, cols, c: inv_tau, out, _p: Default::default() })
    });
}

row_kernel!(SoftmaxInPlaceK { x: &'a mut [f32], cols: usize, c: f32 } |s, k| {
    for row in k.x.chunks_exact_mut(k.cols) {
        // softmax_row's steps on one buffer: the shift from the row before it is touched.
        let c = k.c;
        let Some(m) = softmax_shift(s, row, c) else {
            let u = 1.0 / row.len() as f32;
            row.fill(u);
            continue;
        };
        map_inplace(s, row, ExpShift(m, c));
        let inv = 1.0 / row_sum(s, row);
        map_inplace(s, row, Scale(inv));
    }
});

/// [`softmax`] in place: `x ← softmax(x / τ)`, the same bits.
pub fn softmax_in_place(x: &mut [f32], cols: usize, inv_tau: f32, par: Par) {
    rows_of("softmax_in_place", x.len(), cols);
    if x.is_empty() {
        return;
    }
    blocks_in_place(par, x, cols, |x| {
        simd::run(SoftmaxInPlaceK { x, cols, c: inv_tau, _p: Default::default() })
    });
}

row_kernel!(SoftmaxBwdK { sm: &'a [f32], g: &'a [f32], cols: usize, c: f32, out: &'a mut [f32] } |s, k| {
    let n = k.cols;
    for r in 0..k.out.len() / n {
        let (sr, gr) = (&k.sm[r * n..(r + 1) * n], &k.g[r * n..(r + 1) * n]);
        let dot = row_dot(s, gr, sr);
        map2(s, sr, gr, &mut k.out[r * n..(r + 1) * n], SoftmaxBwd(dot, k.c));
    }
});

/// Softmax backward: `out = s ⊙ (g − ⟨g, s⟩) / τ`, given the forward output `s`.
pub fn softmax_backward(
    s: &[f32],
    g: &[f32],
    cols: usize,
    inv_tau: f32,
    out: &mut [f32],
    par: Par,
) {
    rows_of("softmax_backward", s.len(), cols);
    assert!(
        g.len() == s.len() && out.len() == s.len(),
        "softmax_backward: lengths s {} g {} out {}",
        s.len(),
        g.len(),
        out.len()
    );
    if s.is_empty() {
        return;
    }
    let br = block_rows(cols) * cols;
    let run = |(i, o): (usize, &mut [f32])| {
        let r = i * br..i * br + o.len();
        simd::run(SoftmaxBwdK {
            sm: &s[r.clone()],
            g: &g[r],
            cols,
            c: inv_tau,
            out: o,
            _p: Default::default(),
        })
    };
    if par.degree() > 1 && s.len() > BLOCK_ELEMS {
        out.par_chunks_mut(br).enumerate().for_each(run);
    } else {
        out.chunks_mut(br).enumerate().for_each(run);
    }
}

row_kernel!(LogSoftmaxK { x: &'a [f32], cols: usize, out: &'a mut [f32] } |s, k| {
    for (row, o) in k.x.chunks_exact(k.cols).zip(k.out.chunks_exact_mut(k.cols)) {
        let Some(lse) = log_softmax_lse(s, row) else {
            o.fill(-(row.len() as f32).ln());
            continue;
        };
        map1(s, row, o, 0.0, SubConst(lse));
    }
});

/// Row log-softmax: `out = x − lse(x)`.
pub fn log_softmax(x: &[f32], cols: usize, out: &mut [f32], par: Par) {
    rows_of("log_softmax", x.len(), cols);
    assert_eq!(out.len(), x.len(), "log_softmax: out has {} values, x has {}", out.len(), x.len());
    if x.is_empty() {
        return;
    }
    blocks(par, x, cols, out, cols, |x, out| {
        simd::run(LogSoftmaxK { x, cols, out, _p: Default::default() })
    });
}

row_kernel!(LogSoftmaxInPlaceK { x: &'a mut [f32], cols: usize } |s, k| {
    for row in k.x.chunks_exact_mut(k.cols) {
        let Some(lse) = log_softmax_lse(s, row) else {
            let v = -(row.len() as f32).ln();
            row.fill(v);
            continue;
        };
        map_inplace(s, row, SubConst(lse));
    }
});

/// [`log_softmax`] in place: `x ← x − lse(x)`, the same bits.
pub fn log_softmax_in_place(x: &mut [f32], cols: usize, par: Par) {
    rows_of("log_softmax_in_place", x.len(), cols);
    if x.is_empty() {
        return;
    }
    blocks_in_place(par, x, cols, |x| {
        simd::run(LogSoftmaxInPlaceK { x, cols, _p: Default::default() })
    });
}

row_kernel!(LogSoftmaxBwdK { y: &'a [f32], g: &'a [f32], cols: usize, out: &'a mut [f32] } |s, k| {
    let n = k.cols;
    for r in 0..k.out.len() / n {
        let (yr, gr) = (&k.y[r * n..(r + 1) * n], &k.g[r * n..(r + 1) * n]);
        let sg = row_sum(s, gr);
        map2(s, yr, gr, &mut k.out[r * n..(r + 1) * n], LogSoftmaxBwd(sg));
    }
});

/// Log-softmax backward: `out = g − softmax · Σ_i g_i`, given the forward output
/// `y = log-softmax(x)` (the softmax is recomputed as `exp y`).
pub fn log_softmax_backward(y: &[f32], g: &[f32], cols: usize, out: &mut [f32], par: Par) {
    rows_of("log_softmax_backward", y.len(), cols);
    assert!(
        g.len() == y.len() && out.len() == y.len(),
        "log_softmax_backward: lengths y {} g {} out {}",
        y.len(),
        g.len(),
        out.len()
    );
    if y.is_empty() {
        return;
    }
    let br = block_rows(cols) * cols;
    let run = |(i, o): (usize, &mut [f32])| {
        let r = i * br..i * br + o.len();
        simd::run(LogSoftmaxBwdK {
            y: &y[r.clone()],
            g: &g[r],
            cols,
            out: o,
            _p: Default::default(),
        })
    };
    if par.degree() > 1 && y.len() > BLOCK_ELEMS {
        out.par_chunks_mut(br).enumerate().for_each(run);
    } else {
        out.chunks_mut(br).enumerate().for_each(run);
    }
}

row_kernel!(SoluK { x: &'a [f32], cols: usize, a: &'a mut [f32], sm: &'a mut [f32] } |s, k| {
    let n = k.cols;
    for r in 0..k.x.len() / n {
        let row = &k.x[r * n..(r + 1) * n];
        let sr = &mut k.sm[r * n..(r + 1) * n];
        softmax_row(s, row, 1.0, sr);
        map2(s, row, sr, &mut k.a[r * n..(r + 1) * n], Mul);
    }
});

/// SoLU forward: `s = softmax(z)`, `a = z ⊙ s`. Both are written (the backward pass needs
/// `s`).
pub fn solu(z: &[f32], cols: usize, a: &mut [f32], s: &mut [f32], par: Par) {
    rows_of("solu", z.len(), cols);
    assert!(
        a.len() == z.len() && s.len() == z.len(),
        "solu: lengths z {} a {} s {}",
        z.len(),
        a.len(),
        s.len()
    );
    if z.is_empty() {
        return;
    }
    let br = block_rows(cols) * cols;
    let run = |(i, (a, sm)): (usize, (&mut [f32], &mut [f32]))| {
        let r = i * br..i * br + a.len();
        simd::run(SoluK { x: &z[r], cols, a, sm, _p: Default::default() })
    };
    if par.degree() > 1 && z.len() > BLOCK_ELEMS {
        a.par_chunks_mut(br).zip(s.par_chunks_mut(br)).enumerate().for_each(run);
    } else {
        a.chunks_mut(br).zip(s.chunks_mut(br)).enumerate().for_each(run);
    }
}

row_kernel!(SoluBwdK { z: &'a [f32], sm: &'a [f32], g: &'a [f32], cols: usize, out: &'a mut [f32] } |s, k| {
    let n = k.cols;
    let l = S::LANES;
    for r in 0..k.out.len() / n {
        let rg = r * n..(r + 1) * n;
        let (zr, sr, gr) = (&k.z[rg.clone()], &k.sm[rg.clone()], &k.g[rg.clone()]);
        // c = ⟨g ⊙ z, s⟩
        let mut acc = s.zero();
        let mut i = 0;
        while i + l <= n {
            acc = s.fma(s.mul(s.load(&gr[i..]), s.load(&zr[i..])), s.load(&sr[i..]), acc);
            i += l;
        }
        if i < n {
            let (gv, zv, sv) = (s.load_partial(&gr[i..], 0.0), s.load_partial(&zr[i..], 0.0), s.load_partial(&sr[i..], 0.0));
            acc = s.fma(s.mul(gv, zv), sv, acc);
        }
        let c = s.reduce_sum(acc);
        map3(s, zr, sr, gr, &mut k.out[rg], SoluBwd(c));
    }
});

/// SoLU backward: with `u = g ⊙ z`, `out = g ⊙ s + s ⊙ (u − ⟨u, s⟩)`
/// `= s ⊙ (g ⊙ (1 + z) − ⟨g ⊙ z, s⟩)`.
pub fn solu_backward(z: &[f32], s: &[f32], g: &[f32], cols: usize, out: &mut [f32], par: Par) {
    rows_of("solu_backward", z.len(), cols);
    assert!(
        s.len() == z.len() && g.len() == z.len() && out.len() == z.len(),
        "solu_backward: lengths differ"
    );
    if z.is_empty() {
        return;
    }
    let br = block_rows(cols) * cols;
    let run = |(i, o): (usize, &mut [f32])| {
        let r = i * br..i * br + o.len();
        simd::run(SoluBwdK {
            z: &z[r.clone()],
            sm: &s[r.clone()],
            g: &g[r],
            cols,
            out: o,
            _p: Default::default(),
        })
    };
    if par.degree() > 1 && z.len() > BLOCK_ELEMS {
        out.par_chunks_mut(br).enumerate().for_each(run);
    } else {
        out.chunks_mut(br).enumerate().for_each(run);
    }
}

// ------------------------------------------------ NLS, grouped kernels, temperature

/// Runs `f(a_block, b_block, c_block, out_block)` over fixed row blocks of equally shaped
/// inputs (`b`, `c` may be empty).
fn drive(
    par: Par,
    cols: usize,
    a: &[f32],
    b: &[f32],
    c: &[f32],
    out: &mut [f32],
    f: impl Fn(&[f32], &[f32], &[f32], &mut [f32]) + Sync + Send,
) {
    let br = block_rows(cols) * cols;
    let run = |(i, o): (usize, &mut [f32])| {
        let r = i * br..i * br + o.len();
        f(&a[r.clone()], pick(b, r.clone()), pick(c, r), o)
    };
    fn pick(x: &[f32], r: std::ops::Range<usize>) -> &[f32] {
        if x.is_empty() { x } else { &x[r] }
    }
    if par.degree() > 1 && a.len() > BLOCK_ELEMS {
        out.par_chunks_mut(br).enumerate().for_each(run);
    } else {
        out.chunks_mut(br).enumerate().for_each(run);
    }
}

#[derive(Clone, Copy)]
struct NlsBwd(f32);
impl Op2 for NlsBwd {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, av: S::V, gv: S::V) -> S::V {
        s.sub(gv, s.mul(vexp(s, s.sub(s.zero(), av)), s.splat(self.0)))
    }
}

row_kernel!(NlsK { x: &'a [f32], cols: usize, out: &'a mut [f32] } |s, k| {
    for (row, o) in k.x.chunks_exact(k.cols).zip(k.out.chunks_exact_mut(k.cols)) {
        // lse(−d) = −min d + log Σ exp(−(d − min d))
        let mn = -row_max_neg(s, row);
        if mn == f32::INFINITY {
            o.fill(f32::INFINITY);
            continue;
        }
        let sum = sum_exp_shifted(s, row, mn, -1.0);
        map1(s, row, o, 0.0, SubConst(mn - sum.ln()));
    }
});

/// `max(−x)` of a row without a negated copy.
#[inline(always)]
fn row_max_neg<S: Simd>(s: S, x: &[f32]) -> f32 {
    let l = S::LANES;
    let mut acc = s.splat(f32::NEG_INFINITY);
    let mut i = 0;
    while i + l <= x.len() {
        acc = s.max(acc, s.sub(s.zero(), s.load(&x[i..])));
        i += l;
    }
    if i < x.len() {
        acc = s.max(acc, s.sub(s.zero(), s.load_partial(&x[i..], f32::INFINITY)));
    }
    s.reduce_max(acc)
}

/// NLS forward `a = d + lse(−d) = −log softmax(−d)` per row; a row of all `+inf` gives
/// `+inf`.
pub fn nls(d: &[f32], cols: usize, out: &mut [f32], par: Par) {
    rows_of("nls", d.len(), cols);
    assert_eq!(out.len(), d.len(), "nls: out has {} values, d has {}", out.len(), d.len());
    if d.is_empty() {
        return;
    }
    drive(par, cols, d, &[], &[], out, |x, _, _, o| {
        simd::run(NlsK { x, cols, out: o, _p: Default::default() })
    });
}

row_kernel!(NlsBwdK { a: &'a [f32], g: &'a [f32], cols: usize, out: &'a mut [f32] } |s, k| {
    let n = k.cols;
    for r in 0..k.out.len() / n {
        let rg = r * n..(r + 1) * n;
        let sg = row_sum(s, &k.g[rg.clone()]);
        map2(s, &k.a[rg.clone()], &k.g[rg.clone()], &mut k.out[rg], NlsBwd(sg));
    }
});

/// NLS backward from its output `a`: `out = g − r Σg` with `r = softmax(−d) = exp(−a)`.
pub fn nls_backward(a: &[f32], g: &[f32], cols: usize, out: &mut [f32], par: Par) {
    rows_of("nls_backward", a.len(), cols);
    assert!(g.len() == a.len() && out.len() == a.len(), "nls_backward: lengths differ");
    if a.is_empty() {
        return;
    }
    drive(par, cols, a, g, &[], out, |a, g, _, o| {
        simd::run(NlsBwdK { a, g, cols, out: o, _p: Default::default() })
    });
}

/// Groups at most this wide take the small-group path (per-group scalar max/sum around one
/// vectorised `exp` over the whole row).
const SMALL_GROUP: usize = 16;

/// Evaluates `body` with `m` bound to a literal for the common group sizes 2, 4, 8 and 16:
/// the `#[inline(always)]` group functions then unroll their per-group loops at that width
/// and, inside the instruction-set context of `simd::run`, vectorise across groups. Same
/// operations, same order, for every width. (A macro, not a closure: a closure need not be
/// inlined into that context.)
macro_rules! with_group_width {
    ($group:expr, |$m:ident| $body:expr) => {
        match $group {
            2 => {
                let $m = 2;
                $body
            }
            4 => {
                let $m = 4;
                $body
            }
            8 => {
                let $m = 8;
                $body
            }
            16 => {
                let $m = 16;
                $body
            }
            $m => $body,
        }
    };
}

row_kernel!(SmallGroupSoftmaxK { x: &'a [f32], group: usize, c: f32, out: &'a mut [f32] } |s, k| {
    with_group_width!(k.group, |m| group_shift(k.x, k.out, k.c, m));
    exp_shifted_groups(s, k.out, k.c);
    with_group_width!(k.group, |m| group_normalise(k.out, m));
});

/// `out = (x − max of the group)·c` per group of `m` (0 for a group of all −∞).
#[inline(always)]
fn group_shift(x: &[f32], out: &mut [f32], c: f32, m: usize) {
    for (xg, og) in x.chunks_exact(m).zip(out.chunks_exact_mut(m)) {
        let mx = xg.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if mx == f32::NEG_INFINITY {
            og.fill(0.0); // all −inf: exp(0) = 1 everywhere, normalised to uniform below
            continue;
        }
        for (o, &v) in og.iter_mut().zip(xg) {
            *o = (v - mx) * c;
        }
    }
}

/// [`group_shift`] in place.
#[inline(always)]
fn group_shift_in_place(x: &mut [f32], c: f32, m: usize) {
    for g in x.chunks_exact_mut(m) {
        let mx = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if mx == f32::NEG_INFINITY {
            g.fill(0.0);
            continue;
        }
        g.iter_mut().for_each(|v| *v = (*v - mx) * c);
    }
}

row_kernel!(SmallGroupSoftmaxInPlaceK { x: &'a mut [f32], group: usize, c: f32 } |s, k| {
    with_group_width!(k.group, |m| group_shift_in_place(k.x, k.c, m));
    exp_shifted_groups(s, k.x, k.c);
    with_group_width!(k.group, |m| group_normalise(k.x, m));
});

/// Divides every group of `m` by its sum (summed in order).
#[inline(always)]
fn group_normalise(out: &mut [f32], m: usize) {
    for og in out.chunks_exact_mut(m) {
        let inv = 1.0 / og.iter().sum::<f32>();
        og.iter_mut().for_each(|v| *v *= inv);
    }
}

row_kernel!(SmallGroupSoftmaxBwdK { sm: &'a [f32], g: &'a [f32], group: usize, c: f32, out: &'a mut [f32] } |_s, k| {
    with_group_width!(k.group, |m| group_softmax_bwd(k.sm, k.g, k.out, k.c, m));
});

/// `out = s ⊙ (g − ⟨s, g⟩)·c` per group of `m` (the dot product summed in order).
#[inline(always)]
fn group_softmax_bwd(sm: &[f32], g: &[f32], out: &mut [f32], c: f32, m: usize) {
    for ((sg, gg), og) in sm.chunks_exact(m).zip(g.chunks_exact(m)).zip(out.chunks_exact_mut(m)) {
        let d: f32 = sg.iter().zip(gg).map(|(a, b)| a * b).sum();
        for ((o, &sv), &gv) in og.iter_mut().zip(sg).zip(gg) {
            *o = sv * (gv - d) * c;
        }
    }
}

/// `exp`.
#[derive(Clone, Copy)]
struct ExpOp;
impl Op1 for ExpOp {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, x: S::V) -> S::V {
        vexp(s, x)
    }
}

/// `exp` of values known to be ≤ 0 (or NaN): [`vexp_nonpos`].
#[derive(Clone, Copy)]
struct ExpNonPos;
impl Op1 for ExpNonPos {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, x: S::V) -> S::V {
        vexp_nonpos(s, x)
    }
}

/// `exp` in place of values shifted by their group's maximum and scaled by `c`: ≤ 0 when
/// `c ≥ 0` (any other `c` takes the general path).
#[inline(always)]
fn exp_shifted_groups<S: Simd>(s: S, x: &mut [f32], c: f32) {
    if c >= 0.0 {
        map_inplace(s, x, ExpNonPos);
    } else {
        map_inplace(s, x, ExpOp);
    }
}

/// Softmax inside each contiguous group of `group` units of every row, temperature `1/c`.
/// With `group == cols` this is [`softmax`].
pub fn grouped_softmax(
    x: &[f32],
    cols: usize,
    group: usize,
    inv_tau: f32,
    out: &mut [f32],
    par: Par,
) {
    rows_of("grouped_softmax", x.len(), cols);
    assert!(
        group > 0 && cols.is_multiple_of(group),
        "grouped_softmax: group {group} does not divide {cols}"
    );
    assert_eq!(
        out.len(),
        x.len(),
        "grouped_softmax: out has {} values, x has {}",
        out.len(),
        x.len()
    );
    if x.is_empty() {
        return;
    }
    if group > SMALL_GROUP || group == cols {
        return softmax(x, group, inv_tau, out, par);
    }
    drive(par, cols, x, &[], &[], out, |x, _, _, o| {
        simd::run(SmallGroupSoftmaxK { x, group, c: inv_tau, out: o, _p: Default::default() })
    });
}

/// [`grouped_softmax`] in place, the same bits.
pub fn grouped_softmax_in_place(x: &mut [f32], cols: usize, group: usize, inv_tau: f32, par: Par) {
    rows_of("grouped_softmax_in_place", x.len(), cols);
    assert!(
        group > 0 && cols.is_multiple_of(group),
        "grouped_softmax_in_place: group {group} does not divide {cols}"
    );
    if x.is_empty() {
        return;
    }
    if group > SMALL_GROUP || group == cols {
        return softmax_in_place(x, group, inv_tau, par);
    }
    // `drive`'s row blocks.
    blocks_in_place(par, x, cols, |x| {
        simd::run(SmallGroupSoftmaxInPlaceK { x, group, c: inv_tau, _p: Default::default() })
    });
}

/// Softmax backward inside groups: `out = s ⊙ (g − ⟨g, s⟩_group) / τ`.
pub fn grouped_softmax_backward(
    s: &[f32],
    g: &[f32],
    cols: usize,
    group: usize,
    inv_tau: f32,
    out: &mut [f32],
    par: Par,
) {
    rows_of("grouped_softmax_backward", s.len(), cols);
    assert!(
        group > 0 && cols.is_multiple_of(group),
        "grouped_softmax_backward: group {group} does not divide {cols}"
    );
    if group > SMALL_GROUP || group == cols {
        return softmax_backward(s, g, group, inv_tau, out, par);
    }
    assert!(g.len() == s.len() && out.len() == s.len(), "grouped_softmax_backward: lengths differ");
    drive(par, cols, s, g, &[], out, |s, g, _, o| {
        simd::run(SmallGroupSoftmaxBwdK {
            sm: s,
            g,
            group,
            c: inv_tau,
            out: o,
            _p: Default::default(),
        })
    });
}

/// SoLU inside each group of `group` units: `s = grouped softmax(z)`, `a = z ⊙ s`.
pub fn grouped_solu(z: &[f32], cols: usize, group: usize, a: &mut [f32], s: &mut [f32], par: Par) {
    if group > SMALL_GROUP || group == cols {
        return solu(z, group, a, s, par);
    }
    grouped_softmax(z, cols, group, 1.0, s, par);
    drive(par, cols, z, s, &[], a, |z, s, _, o| {
        simd::run(MulK { x: z, y: s, out: o, _p: Default::default() })
    });
}

row_kernel!(MulK { x: &'a [f32], y: &'a [f32], out: &'a mut [f32] } |s, k| {
    map2(s, k.x, k.y, k.out, Mul);
});

/// Grouped SoLU backward: per group `out = s ⊙ (g ⊙ (1 + z) − ⟨g ⊙ z, s⟩_group)`.
pub fn grouped_solu_backward(
    z: &[f32],
    s: &[f32],
    g: &[f32],
    cols: usize,
    group: usize,
    out: &mut [f32],
    par: Par,
) {
    if group > SMALL_GROUP || group == cols {
        return solu_backward(z, s, g, group, out, par);
    }
    rows_of("grouped_solu_backward", z.len(), cols);
    assert!(
        s.len() == z.len() && g.len() == z.len() && out.len() == z.len(),
        "grouped_solu_backward: lengths differ"
    );
    drive(par, cols, z, s, g, out, |z, s, g, o| {
        for (((zg, sg), gg), og) in z
            .chunks_exact(group)
            .zip(s.chunks_exact(group))
            .zip(g.chunks_exact(group))
            .zip(o.chunks_exact_mut(group))
        {
            let c: f32 = (0..group).map(|i| gg[i] * zg[i] * sg[i]).sum();
            for i in 0..group {
                og[i] = if sg[i] > 0.0 { sg[i] * (gg[i] * (1.0 + zg[i]) - c) } else { 0.0 };
            }
        }
    });
}

struct TauTermsK<'a> {
    z: &'a [f32],
    sm: &'a [f32],
    g: &'a [f32],
    cols: usize,
}
impl Kernel for TauTermsK<'_> {
    type Output = f64;
    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> f64 {
        let n = self.cols;
        let l = S::LANES;
        let mut total = 0.0f64;
        for r in 0..self.z.len() / n {
            let (zr, sr, gr) = (
                &self.z[r * n..(r + 1) * n],
                &self.sm[r * n..(r + 1) * n],
                &self.g[r * n..(r + 1) * n],
            );
            let m = s.splat(row_max(s, zr));
            let (mut a, mut b, mut c) = (s.zero(), s.zero(), s.zero());
            let mut i = 0;
            while i + l <= n {
                let zs = s.sub(s.load(&zr[i..]), m);
                let sv = s.load(&sr[i..]);
                let gs = s.mul(s.load(&gr[i..]), sv);
                a = s.fma(gs, zs, a);
                b = s.fma(sv, zs, b);
                c = s.add(c, gs);
                i += l;
            }
            if i < n {
                let zs = s.sub(s.load_partial(&zr[i..], 0.0), m);
                let sv = s.load_partial(&sr[i..], 0.0);
                let gs = s.mul(s.load_partial(&gr[i..], 0.0), sv);
                a = s.fma(gs, zs, a);
                b = s.fma(sv, zs, b);
                c = s.add(c, gs);
            }
            let (a, b, c) =
                (s.reduce_sum(a) as f64, s.reduce_sum(b) as f64, s.reduce_sum(c) as f64);
            total += a - b * c;
        }
        total
    }
}

/// `∂L/∂θ` of a softmax with learned temperature `τ = e^θ`, summed over rows in order:
/// `−Σ_rows Σ_i g_i s_i (z_i − ⟨z, s⟩)/τ`, evaluated as `−(A − B·C)/τ` with
/// `A = Σ g s (z − max z)`, `B = ⟨s, z − max z⟩`, `C = Σ g s` (shift-invariant, so the
/// row max is subtracted first to keep digits at |z| ≈ 1e4).
pub fn temperature_grad(z: &[f32], s: &[f32], g: &[f32], cols: usize, tau: f32) -> f32 {
    rows_of("temperature_grad", z.len(), cols);
    assert!(s.len() == z.len() && g.len() == z.len(), "temperature_grad: lengths differ");
    if z.is_empty() {
        return 0.0;
    }
    (-simd::run(TauTermsK { z, sm: s, g, cols }) / tau as f64) as f32
}
