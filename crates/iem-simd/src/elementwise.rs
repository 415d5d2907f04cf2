//! Elementwise kernels: activations with their backward passes, `exp`/`ln`, and the update
//! loops optimisers need. Work is split into fixed element chunks, so [`Par`] never changes
//! a result.

use crate::isa::Par;
use crate::math::{Op1, Op2, Op3, map_inplace, map1, map2, map3, row_dot, vexp, vln};
use crate::rows::Scale;

macro_rules! op1 {
    ($name:ident, |$s:ident, $x:ident| $body:expr) => {
        #[derive(Clone, Copy)]
        struct $name;
        impl Op1 for $name {
            #[inline(always)]
            fn f<S: Simd>(self, $s: S, $x: S::V) -> S::V {
                $body
            }
        }
    };
}
op1!(ReluOp, |s, v| s.select_gt(v, s.zero(), v, s.zero()));
op1!(AbsOp, |s, v| s.max(v, s.sub(s.zero(), v)));
op1!(ExpOp, |s, v| vexp(s, v));
op1!(LnOp, |s, v| vln(s, v));

#[derive(Clone, Copy)]
struct ReluBwdOp;
impl Op2 for ReluBwdOp {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, z: S::V, g: S::V) -> S::V {
        s.select_gt(z, s.zero(), g, s.zero())
    }
}
#[derive(Clone, Copy)]
struct AbsBwdOp;
impl Op2 for AbsBwdOp {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, z: S::V, g: S::V) -> S::V {
        let zero = s.zero();
        s.select_gt(z, zero, g, s.select_gt(zero, z, s.sub(zero, g), zero))
    }
}
#[derive(Clone, Copy)]
struct FmaOp;
impl Op3 for FmaOp {
    #[inline(always)]
    fn f<S: Simd>(self, s: S, a: S::V, b: S::V, c: S::V) -> S::V {
        s.fma(a, b, c)
    }
}
use crate::simd::{self, Kernel, Simd};
use rayon::prelude::*;

const CHUNK: usize = 32 * 1024;

fn check(op: &str, a: usize, b: usize) {
    assert_eq!(a, b, "{op}: lengths differ ({a} vs {b})");
}

/// Runs `f(offset, out_chunk)` over fixed chunks of `out`.
fn chunks(par: Par, out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if par.degree() > 1 && out.len() > CHUNK {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| f(i * CHUNK, o));
    } else {
        out.chunks_mut(CHUNK).enumerate().for_each(|(i, o)| f(i * CHUNK, o));
    }
}

struct Map1<'a, F> {
    x: &'a [f32],
    out: &'a mut [f32],
    op: F,
}
/// Unary operations, by name, so one kernel struct serves them all.
#[derive(Clone, Copy)]
enum Un {
    Relu,
    Abs,
    Exp,
    Ln,
}
impl Kernel for Map1<'_, Un> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        match self.op {
            Un::Relu => map1(s, self.x, self.out, 0.0, ReluOp),
            Un::Abs => map1(s, self.x, self.out, 0.0, AbsOp),
            Un::Exp => map1(s, self.x, self.out, 0.0, ExpOp),
            Un::Ln => map1(s, self.x, self.out, 1.0, LnOp),
        }
    }
}

fn unary(op_name: &str, op: Un, x: &[f32], out: &mut [f32], par: Par) {
    check(op_name, x.len(), out.len());
    chunks(par, out, |o0, o| simd::run(Map1 { x: &x[o0..o0 + o.len()], out: o, op }));
}

/// ReLU: `max(z, 0)`; NaN maps to 0.
pub fn relu(z: &[f32], out: &mut [f32], par: Par) {
    unary("relu", Un::Relu, z, out, par)
}
/// [`relu`] in place: `x ← max(x, 0)`, the same bits (NaN maps to 0).
pub fn relu_in_place(x: &mut [f32], par: Par) {
    chunks(par, x, |_, o| simd::run(ReluInPlaceK { x: o }));
}
struct ReluInPlaceK<'a> {
    x: &'a mut [f32],
}
impl Kernel for ReluInPlaceK<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        map_inplace(s, self.x, ReluOp);
    }
}
/// `|z|`.
pub fn abs(z: &[f32], out: &mut [f32], par: Par) {
    unary("abs", Un::Abs, z, out, par)
}
/// Vectorised `exp` (accuracy in [`crate::math`]).
pub fn exp(x: &[f32], out: &mut [f32], par: Par) {
    unary("exp", Un::Exp, x, out, par)
}
/// Vectorised natural log (accuracy in [`crate::math`]).
pub fn ln(x: &[f32], out: &mut [f32], par: Par) {
    unary("ln", Un::Ln, x, out, par)
}

struct Map2K<'a> {
    x: &'a [f32],
    y: &'a [f32],
    out: &'a mut [f32],
    op: Bin,
}
#[derive(Clone, Copy)]
enum Bin {
    ReluBwd,
    AbsBwd,
}
impl Kernel for Map2K<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        match self.op {
            Bin::ReluBwd => map2(s, self.x, self.y, self.out, ReluBwdOp),
            Bin::AbsBwd => map2(s, self.x, self.y, self.out, AbsBwdOp),
        }
    }
}

fn binary(op_name: &str, op: Bin, x: &[f32], y: &[f32], out: &mut [f32], par: Par) {
    check(op_name, x.len(), out.len());
    check(op_name, y.len(), out.len());
    chunks(par, out, |o0, o| {
        let r = o0..o0 + o.len();
        simd::run(Map2K { x: &x[r.clone()], y: &y[r], out: o, op })
    });
}

/// ReLU backward: `g ⊙ 1[z > 0]` (the derivative at 0 is 0).
pub fn relu_backward(z: &[f32], g: &[f32], out: &mut [f32], par: Par) {
    binary("relu_backward", Bin::ReluBwd, z, g, out, par)
}
/// `|z|` backward: `g ⊙ sign(z)` (the derivative at 0 is 0).
pub fn abs_backward(z: &[f32], g: &[f32], out: &mut [f32], par: Par) {
    binary("abs_backward", Bin::AbsBwd, z, g, out, par)
}

struct AxpyK<'a> {
    alpha: f32,
    x: &'a [f32],
    y: &'a mut [f32],
}
impl Kernel for AxpyK<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let a = s.splat(self.alpha);
        let l = S::LANES;
        let n = self.y.len();
        let mut i = 0;
        while i + l <= n {
            let v = s.fma(a, s.load(&self.x[i..]), s.load(&self.y[i..]));
            s.store(&mut self.y[i..], v);
            i += l;
        }
        for j in i..n {
            self.y[j] += self.alpha * self.x[j];
        }
    }
}

/// `y += α x`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32], par: Par) {
    check("axpy", x.len(), y.len());
    chunks(par, y, |o0, o| simd::run(AxpyK { alpha, x: &x[o0..o0 + o.len()], y: o }));
}

struct ScaleK<'a> {
    alpha: f32,
    x: &'a mut [f32],
}
impl Kernel for ScaleK<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        map_inplace(s, self.x, Scale(self.alpha));
    }
}

/// `x *= α`.
pub fn scale(alpha: f32, x: &mut [f32], par: Par) {
    chunks(par, x, |_, o| simd::run(ScaleK { alpha, x: o }));
}

struct DotK<'a> {
    a: &'a [f32],
    b: &'a [f32],
}
impl Kernel for DotK<'_> {
    type Output = f32;
    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> f32 {
        row_dot(s, self.a, self.b)
    }
}

/// `Σ a_i b_i`, summed over fixed chunks in order (deterministic for any thread count;
/// sequential, as dot products here are small next to the kernels that produce them).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    check("dot", a.len(), b.len());
    a.chunks(CHUNK).zip(b.chunks(CHUNK)).map(|(a, b)| simd::run(DotK { a, b })).sum()
}

/// Hyper-parameters of one Adam / AdamW step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay β₁.
    pub beta1: f32,
    /// Second-moment decay β₂.
    pub beta2: f32,
    /// ε added to `√v̂`.
    pub eps: f32,
    /// `1 − β₁ᵗ` for the current step `t ≥ 1`.
    pub bias_correction1: f32,
    /// `1 − β₂ᵗ`.
    pub bias_correction2: f32,
    /// L2 weight decay added to the gradient (Adam) — `g + λ p`.
    pub l2: f32,
    /// Decoupled weight decay (AdamW) — `p −= lr·λ·p`.
    pub decoupled: f32,
}

type AdamConsts<V> = (V, V, V, V, V, V, V, V, V);

/// One Adam lane update (a function, not a closure, so it inlines with the ISA's features).
#[inline(always)]
fn adam_lane<S: Simd>(
    s: S,
    c: AdamConsts<S::V>,
    p: S::V,
    g: S::V,
    m: S::V,
    v: S::V,
) -> (S::V, S::V, S::V) {
    let (b1, b2, c1, c2, step, ibc2, eps, l2, wd) = c;
    let g = s.fma(l2, p, g);
    let m = s.fma(b1, m, s.mul(c1, g));
    let v = s.fma(b2, v, s.mul(c2, s.mul(g, g)));
    let den = s.add(s.sqrt(s.mul(v, ibc2)), eps);
    let p = s.sub(s.mul(p, wd), s.div(s.mul(step, m), den));
    (p, m, v)
}

/// One SGD-with-momentum lane update.
#[inline(always)]
fn sgd_lane<S: Simd>(
    s: S,
    lr: S::V,
    mu: S::V,
    wd: S::V,
    p: S::V,
    g: S::V,
    b: S::V,
) -> (S::V, S::V) {
    let g = s.fma(wd, p, g);
    let b = s.fma(mu, b, g);
    (s.sub(p, s.mul(lr, b)), b)
}

struct AdamK<'a> {
    h: AdamStep,
    p: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    /// Write the new parameters with streaming stores ([`adam_update_finite_stream`]).
    stream: bool,
}
impl Kernel for AdamK<'_> {
    /// Whether every updated parameter is finite.
    type Output = bool;
    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> bool {
        let h = self.h;
        let n = self.p.len();
        let l = S::LANES;
        let (b1, b2) = (s.splat(h.beta1), s.splat(h.beta2));
        let (c1, c2) = (s.splat(1.0 - h.beta1), s.splat(1.0 - h.beta2));
        let step = s.splat(h.lr / h.bias_correction1);
        let ibc2 = s.splat(1.0 / h.bias_correction2);
        let eps = s.splat(h.eps);
        let l2 = s.splat(h.l2);
        let wd = s.splat(1.0 - h.lr * h.decoupled);
        // `p − p` is 0 for a finite p and NaN for ±∞ or NaN; the sum of those stays 0 only
        // if every new parameter is finite (checked in registers, not in a second pass).
        let mut bad = s.zero();
        let consts = (b1, b2, c1, c2, step, ibc2, eps, l2, wd);
        // With streaming stores, a first partial vector up to the alignment they need (its
        // lanes are updated exactly as in a full vector: the same bits).
        let stream = self.stream && S::STREAM_ALIGN > 1;
        let mut i = 0;
        if stream {
            let off = (self.p.as_ptr() as usize % S::STREAM_ALIGN) / 4;
            let head = ((S::STREAM_ALIGN / 4 - off) % (S::STREAM_ALIGN / 4)).min(n);
            if head > 0 {
                let finite = adam_partial(
                    s,
                    consts,
                    &mut self.p[..head],
                    &self.g[..head],
                    &mut self.m[..head],
                    &mut self.v[..head],
                );
                if !finite {
                    bad = s.splat(f32::NAN);
                }
                i = head;
            }
        }
        while i + l <= n {
            let (p, m, v) = adam_lane(
                s,
                consts,
                s.load(&self.p[i..]),
                s.load(&self.g[i..]),
                s.load(&self.m[i..]),
                s.load(&self.v[i..]),
            );
            if stream {
                s.store_stream(&mut self.p[i..], p);
            } else {
                s.store(&mut self.p[i..], p);
            }
            s.store(&mut self.m[i..], m);
            s.store(&mut self.v[i..], v);
            bad = s.add(bad, s.sub(p, p));
            i += l;
        }
        if stream {
            s.stream_fence();
        }
        let tail = i == n
            || adam_partial(
                s,
                consts,
                &mut self.p[i..],
                &self.g[i..],
                &mut self.m[i..],
                &mut self.v[i..],
            );
        s.reduce_sum(bad) == 0.0 && tail
    }
}

/// Adam on fewer than `LANES` elements (a kernel's first or last partial vector): each lane
/// is updated as in a full vector, so the same bits. Returns whether the stored parameters
/// are finite (the padding lanes may hold 0/0 when ε = 0, so they are not looked at).
#[inline(always)]
fn adam_partial<S: Simd>(
    s: S,
    c: AdamConsts<S::V>,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) -> bool {
    let (np, nm, nv) = adam_lane(
        s,
        c,
        s.load_partial(p, 0.0),
        s.load_partial(g, 0.0),
        s.load_partial(m, 0.0),
        s.load_partial(v, 0.0),
    );
    s.store_partial(p, np);
    s.store_partial(m, nm);
    s.store_partial(v, nv);
    p.iter().all(|x| x.is_finite())
}

/// One Adam/AdamW step over a parameter slice, in place:
/// `g ← g + λ₂p; m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
/// p ← p(1 − lr·λ_d) − lr·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)`.
pub fn adam_update(h: AdamStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    adam_update_par(h, p, g, m, v, Par::Seq)
}

/// [`adam_update`], returning whether every updated parameter is finite — the same answer
/// as [`all_finite`] on `p` afterwards, found while the values are in registers instead of
/// by a second pass over `p`.
///
/// # Panics
/// If the slices differ in length.
///
/// # Examples
/// ```
/// use iem_simd::elementwise::{adam_update_finite, AdamStep};
/// let h = AdamStep {
///     lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8,
///     bias_correction1: 0.1, bias_correction2: 0.001, l2: 0.0, decoupled: 0.0,
/// };
/// let (mut p, mut m, mut v) = (vec![1.0f32; 20], vec![0.0; 20], vec![0.0; 20]);
/// assert!(adam_update_finite(h, &mut p, &[0.5; 20], &mut m, &mut v));
/// let mut g = vec![0.5f32; 20];
/// g[17] = f32::NAN;
/// assert!(!adam_update_finite(h, &mut p, &g, &mut m, &mut v));
/// ```
pub fn adam_update_finite(
    h: AdamStep,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) -> bool {
    check_adam(p, g, m, v);
    simd::run(AdamK { h, p, g, m, v, stream: false })
}

/// [`adam_update_finite`] writing the new parameters with streaming (non-temporal) stores
/// where the instruction set has them (x86): the same bits, but the parameters' lines go
/// to memory instead of this core's caches, and are not read first. For a trainer whose
/// parameters other cores read between updates: a store to a line that another core has
/// read waits for that copy to be invalidated, and Adam's pass then ran 2–3× slower than
/// from memory (`crates/iem-train/BENCHMARKS.md`). Elsewhere, plain stores.
///
/// # Panics
/// If the slices differ in length.
pub fn adam_update_finite_stream(
    h: AdamStep,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) -> bool {
    check_adam(p, g, m, v);
    simd::run(AdamK { h, p, g, m, v, stream: true })
}

/// The length checks of the Adam updates.
fn check_adam(p: &[f32], g: &[f32], m: &[f32], v: &[f32]) {
    for len in [g.len(), m.len(), v.len()] {
        check("adam_update", p.len(), len);
    }
}

/// [`adam_update`] over fixed chunks that run in parallel under `par` (each element's update
/// is independent, so the result is the same for any thread count). A step of a model with
/// a few hundred thousand parameters streams megabytes, which one core cannot.
pub fn adam_update_par(
    h: AdamStep,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    par: Par,
) {
    check_adam(p, g, m, v);
    if par.degree() > 1 && p.len() > CHUNK {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                simd::run(AdamK { h, p, g, m, v, stream: false });
            });
    } else {
        simd::run(AdamK { h, p, g, m, v, stream: false });
    }
}

struct SgdK<'a> {
    lr: f32,
    momentum: f32,
    wd: f32,
    p: &'a mut [f32],
    g: &'a [f32],
    buf: &'a mut [f32],
}
impl Kernel for SgdK<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let (lr, mu, wd) = (s.splat(self.lr), s.splat(self.momentum), s.splat(self.wd));
        let n = self.p.len();
        let l = S::LANES;
        let mut i = 0;
        while i + l <= n {
            let (p, b) = sgd_lane(
                s,
                lr,
                mu,
                wd,
                s.load(&self.p[i..]),
                s.load(&self.g[i..]),
                s.load(&self.buf[i..]),
            );
            s.store(&mut self.p[i..], p);
            s.store(&mut self.buf[i..], b);
            i += l;
        }
        if i < n {
            let (p, b) = sgd_lane(
                s,
                lr,
                mu,
                wd,
                s.load_partial(&self.p[i..], 0.0),
                s.load_partial(&self.g[i..], 0.0),
                s.load_partial(&self.buf[i..], 0.0),
            );
            s.store_partial(&mut self.p[i..], p);
            s.store_partial(&mut self.buf[i..], b);
        }
    }
}

/// One SGD step with momentum `μ` and L2 weight decay `λ`, in place (PyTorch's form):
/// `g ← g + λp; b ← μb + g; p ← p − lr·b`.
pub fn sgd_update(
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    p: &mut [f32],
    g: &[f32],
    buf: &mut [f32],
) {
    check("sgd_update", p.len(), g.len());
    check("sgd_update", p.len(), buf.len());
    simd::run(SgdK { lr, momentum, wd: weight_decay, p, g, buf })
}

struct Mul3K<'a> {
    a: &'a [f32],
    b: &'a [f32],
    c: &'a [f32],
    out: &'a mut [f32],
}
impl Kernel for Mul3K<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        map3(s, self.a, self.b, self.c, self.out, FmaOp);
    }
}

/// `out = a ⊙ b + c`.
pub fn fma(a: &[f32], b: &[f32], c: &[f32], out: &mut [f32]) {
    check("fma", a.len(), out.len());
    check("fma", b.len(), out.len());
    check("fma", c.len(), out.len());
    simd::run(Mul3K { a, b, c, out })
}

/// `out[j] = Σ_i x[i·cols + j]`: the column sums of a row-major matrix with `cols` columns
/// (a bias gradient). Each column is summed in row order from zero, as a plain loop over
/// rows does, so every instruction set gives the same bits; the partial sums stay in
/// registers (4 vectors of columns at a time) instead of a load and store of `out` per row.
///
/// # Panics
/// If `out.len() != cols` or `x.len()` is not a multiple of `cols` (programmer errors;
/// `iem-tensor` shapes guarantee both).
pub fn col_sums(x: &[f32], cols: usize, out: &mut [f32]) {
    check("col_sums", out.len(), cols);
    if cols == 0 {
        return;
    }
    assert!(x.len().is_multiple_of(cols), "col_sums: {} elements are not rows of {cols}", x.len());
    simd::run(ColSumsK { x, cols, out })
}

struct ColSumsK<'a> {
    x: &'a [f32],
    cols: usize,
    out: &'a mut [f32],
}
impl Kernel for ColSumsK<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let (x, cols, out) = (self.x, self.cols, self.out);
        let l = S::LANES;
        let mut j = 0;
        while j + 4 * l <= cols {
            let mut acc = [s.zero(); 4];
            for row in x.chunks_exact(cols) {
                let r = &row[j..j + 4 * l];
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = s.add(*a, s.load(&r[v * l..]));
                }
            }
            for (v, a) in acc.into_iter().enumerate() {
                s.store(&mut out[j + v * l..], a);
            }
            j += 4 * l;
        }
        while j + l <= cols {
            let mut acc = s.zero();
            for row in x.chunks_exact(cols) {
                acc = s.add(acc, s.load(&row[j..j + l]));
            }
            s.store(&mut out[j..j + l], acc);
            j += l;
        }
        if j < cols {
            let mut acc = s.zero();
            for row in x.chunks_exact(cols) {
                acc = s.add(acc, s.load_partial(&row[j..cols], 0.0));
            }
            s.store_partial(&mut out[j..cols], acc);
        }
    }
}

/// Whether every element is finite (no NaN, no ±∞). Adding one to the exponent field of
/// `|x|`'s bits carries into the sign bit exactly when the exponent is all ones (∞ or NaN);
/// the sums are OR-ed over blocks of 1024 — three integer operations per element, compiled
/// for the running instruction set (16 lanes on AVX-512, 4 on the SSE2 baseline).
pub fn all_finite(x: &[f32]) -> bool {
    simd::run(AllFiniteK { x })
}

struct AllFiniteK<'a> {
    x: &'a [f32],
}
impl Kernel for AllFiniteK<'_> {
    type Output = bool;
    #[inline(always)]
    fn run<S: Simd>(self, _s: S) -> bool {
        // Plain integer code: the target features of the caller (`simd::run`'s
        // per-ISA entry points) decide the vector width.
        self.x.chunks(1024).all(|c| {
            c.iter().fold(0u32, |acc, v| acc | ((v.to_bits() & 0x7fff_ffff) + 0x0080_0000)) >> 31
                == 0
        })
    }
}

/// `Σ x_i²` accumulated in f64, in 8 interleaved partial sums combined in a fixed order
/// (deterministic: lane `j` sums elements `j, j+8, …` in order on every instruction set, so
/// the result depends only on `x`; on AVX-512 the 8 lanes are one register).
pub fn sum_sq(x: &[f32]) -> f64 {
    sum8(x, true)
}

/// `y ← y + x` (rounded as [`axpy`] with α = 1) and [`sum_sq`] of the new `y`, with the
/// same bits as those two calls, in one pass on AVX-512 (the squares are accumulated while
/// the sums are in registers; elsewhere the two calls).
///
/// # Panics
/// If the slices differ in length.
///
/// # Examples
/// ```
/// use iem_simd::elementwise::add_sum_sq;
/// let mut y = vec![1.0f32; 19];
/// let ss = add_sum_sq(&[2.0; 19], &mut y);
/// assert_eq!((y[18], ss), (3.0, 171.0));
/// ```
pub fn add_sum_sq(x: &[f32], y: &mut [f32]) -> f64 {
    check("add_sum_sq", x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if crate::Isa::current() == crate::Isa::Avx512 {
        // SAFETY: `Isa::current` returns AVX-512 only where the machine has it.
        return unsafe { add_sum_sq_avx512(x, y) };
    }
    axpy(1.0, x, y, Par::Seq);
    sum_sq(y)
}

/// [`add_sum_sq`] on AVX-512: each 16 sums stored, their two halves of 8 squared into the
/// 8 partial sums of [`sum8_avx512`] in element order; the tail and the final tree as there.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn add_sum_sq_avx512(x: &[f32], y: &mut [f32]) -> f64 {
    use std::arch::x86_64::*;
    let n = y.len();
    assert_eq!(x.len(), n);
    let mut acc = _mm512_setzero_pd();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: elements i .. i + 16 of both slices exist.
        unsafe {
            let s = _mm512_add_ps(
                _mm512_loadu_ps(y.as_ptr().add(i)),
                _mm512_loadu_ps(x.as_ptr().add(i)),
            );
            _mm512_storeu_ps(y.as_mut_ptr().add(i), s);
            let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(s));
            let hi =
                _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s))));
            acc = _mm512_add_pd(acc, _mm512_mul_pd(lo, lo));
            acc = _mm512_add_pd(acc, _mm512_mul_pd(hi, hi));
        }
        i += 16;
    }
    // Up to 15 left: sums element by element; a last group of 8 joins the partial sums.
    for (d, &v) in y[i..].iter_mut().zip(&x[i..]) {
        *d += v;
    }
    if i + 8 <= n {
        // SAFETY: elements i .. i + 8 of `y` exist.
        let v = _mm512_cvtps_pd(unsafe { _mm256_loadu_ps(y.as_ptr().add(i)) });
        acc = _mm512_add_pd(acc, _mm512_mul_pd(v, v));
        i += 8;
    }
    let mut a = [0.0f64; 8];
    // SAFETY: `a` holds 8 doubles.
    unsafe { _mm512_storeu_pd(a.as_mut_ptr(), acc) };
    let tail: f64 = y[i..].iter().map(|v| (*v as f64) * (*v as f64)).sum();
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail
}

/// `Σ x_i` accumulated in f64, in the 8 interleaved partial sums of [`sum_sq`].
pub fn sum_f64(x: &[f32]) -> f64 {
    sum8(x, false)
}

fn sum8(x: &[f32], square: bool) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if crate::Isa::current() == crate::Isa::Avx512 {
        // SAFETY: `Isa::current` returns AVX-512 only where the machine has it.
        return unsafe { sum8_avx512(x, square) };
    }
    if square { sum8_f64(x, |v| v * v) } else { sum8_f64(x, |v| v) }
}

/// [`sum8_f64`] with its 8 partial sums in one AVX-512 register: the same lanes, the same
/// order, the same final tree, so the same bits. (Compiled from the portable loop, LLVM
/// splits the 8 sums over four 2-lane registers and a shuffle per pair: 2.5× slower.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn sum8_avx512(x: &[f32], square: bool) -> f64 {
    use std::arch::x86_64::*;
    let f = |v: f64| if square { v * v } else { v };
    let mut acc = _mm512_setzero_pd();
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        // SAFETY: `c` holds 8 floats (32 bytes); unaligned loads are allowed.
        let v = _mm512_cvtps_pd(unsafe { _mm256_loadu_ps(c.as_ptr()) });
        acc = _mm512_add_pd(acc, if square { _mm512_mul_pd(v, v) } else { v });
    }
    let mut a = [0.0f64; 8];
    // SAFETY: `a` holds 8 doubles.
    unsafe { _mm512_storeu_pd(a.as_mut_ptr(), acc) };
    let tail: f64 = it.remainder().iter().map(|v| f(*v as f64)).sum();
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail
}

/// `Σ f(x_i)` in f64 over 8 interleaved partial sums combined in a fixed order.
#[inline(always)]
fn sum8_f64(x: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += f(*v as f64);
        }
    }
    let tail: f64 = it.remainder().iter().map(|v| f(*v as f64)).sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}
