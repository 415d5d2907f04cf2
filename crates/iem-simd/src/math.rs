//! Vectorised `exp` and `ln`, and the per-row building blocks of the softmax family,
//! written once over [`Simd`].
//!
//! # Accuracy
//! [`vexp`] is a range reduction `x = n ln 2 + r`, `|r| ≤ ln 2 / 2`, with a degree-6
//! minimax polynomial (Cephes `expf`). Over `[-87.3, 88.7]` its relative error against the
//! correctly rounded f64 value is below [`EXP_MAX_REL_ERR`] (tested on a dense grid and at
//! random points, under every instruction set). Below `-87.33654` (where `exp` leaves the
//! normal range) it returns `0`; above `88.72283` it returns `+inf`; `-inf → 0`,
//! `+inf → +inf`, `NaN → NaN`.
//!
//! [`vln`] splits `x = m · 2^e`, `m ∈ [√½, √2)`, and evaluates a degree-8 polynomial in
//! `m − 1` (Cephes `logf`). For positive finite `x` (subnormals included) its absolute error is
//! below [`LN_MAX_ABS_ERR`] and its relative error below [`LN_MAX_REL_ERR`] away from `x = 1`
//! (`|ln x| ≥ 1e-3`). `ln 0 = -inf`, `ln x = NaN` for `x < 0`, `ln inf = inf`, `NaN → NaN`.

use crate::simd::Simd;

/// Tested bound on the relative error of [`vexp`] over `[-87.3, 88.7]`.
pub const EXP_MAX_REL_ERR: f64 = 3.0e-7;
/// Tested bound on the absolute error of [`vln`] for positive finite inputs.
pub const LN_MAX_ABS_ERR: f64 = 2.0e-7;
/// Tested bound on the relative error of [`vln`] where `|ln x| ≥ 1e-3`.
pub const LN_MAX_REL_ERR: f64 = 3.0e-7;

const EXP_LO: f32 = -87.336_54;
const EXP_HI: f32 = 88.722_83;

/// `exp(x)` per lane; see the module docs for accuracy and special values.
#[inline(always)]
pub fn vexp<S: Simd>(s: S, x: S::V) -> S::V {
    let (y, n) = exp_reduced(s, s.min(s.max(x, s.splat(EXP_LO)), s.splat(EXP_HI)));
    // n ∈ [-126, 128]: build 2^n as 2^(n-h)·(1+h) with h = [n > 0] so that 2^128 never
    // has to be represented.
    let h = s.select_gt(n, s.zero(), s.splat(1.0), s.zero());
    let y = s.mul(y, s.pow2i(s.sub(n, h)));
    let y = s.fma(y, h, y);
    let y = s.select_gt(s.splat(EXP_LO), x, s.zero(), y);
    let y = s.select_gt(x, s.splat(EXP_HI), s.splat(f32::INFINITY), y);
    s.keep_nan(x, y)
}

/// [`vexp`] for `x ≤ 0` or NaN — the shifted exponents of the softmax family, `(x − max)·c`
/// with `c ≥ 0` or `(x − min)·c` with `c < 0`: the same bits as [`vexp`] on that domain
/// (tested), without the steps that only matter for `x > 0` (the upper clamp, the split of
/// `2^n` for `n > 0`, the overflow to `+inf`). Wrong for `x > 0`.
#[inline(always)]
pub fn vexp_nonpos<S: Simd>(s: S, x: S::V) -> S::V {
    let (y, n) = exp_reduced(s, s.max(x, s.splat(EXP_LO)));
    // n ≤ 0: 2^n is representable as it is.
    let y = s.mul(y, s.pow2i(n));
    let y = s.select_gt(s.splat(EXP_LO), x, s.zero(), y);
    s.keep_nan(x, y)
}

/// The shared core of [`vexp`] and [`vexp_nonpos`] for a clamped `xc`: `n = round(xc/ln 2)`
/// and `exp(r)` of the remainder `r = xc − n ln 2` (Cephes' degree-6 polynomial), so that
/// `exp(xc) = exp(r)·2^n`.
#[inline(always)]
fn exp_reduced<S: Simd>(s: S, xc: S::V) -> (S::V, S::V) {
    let n = s.round(s.mul(xc, s.splat(std::f32::consts::LOG2_E)));
    let r = s.fma(n, s.splat(-0.693_359_4), xc);
    let r = s.fma(n, s.splat(2.121_944_4e-4), r);
    let mut p = s.splat(1.987_569_1e-4);
    p = s.fma(p, r, s.splat(1.398_2e-3));
    p = s.fma(p, r, s.splat(8.333_452e-3));
    p = s.fma(p, r, s.splat(4.166_579_6e-2));
    p = s.fma(p, r, s.splat(0.166_666_65));
    p = s.fma(p, r, s.splat(0.5));
    let r2 = s.mul(r, r);
    (s.add(s.fma(p, r2, r), s.splat(1.0)), n)
}

/// `ln(x)` per lane; see the module docs for accuracy and special values.
#[inline(always)]
pub fn vln<S: Simd>(s: S, x: S::V) -> S::V {
    // Subnormals: scale into the normal range first.
    let tiny = s.select_gt(s.splat(f32::MIN_POSITIVE), x, s.splat(1.0), s.zero());
    let xs = s.mul(x, s.fma(tiny, s.splat(8_388_607.0), s.splat(1.0))); // ×2^23 when tiny
    let (m, e) = s.frexp(xs);
    let e = s.fma(tiny, s.splat(-23.0), e);
    // m ∈ [1, 2): fold to [√½, √2).
    let big = s.select_gt(m, s.splat(std::f32::consts::SQRT_2), s.splat(1.0), s.zero());
    let m = s.mul(m, s.fma(big, s.splat(-0.5), s.splat(1.0)));
    let e = s.add(e, big);
    let f = s.sub(m, s.splat(1.0));
    let mut p = s.splat(7.037_683_6e-2);
    p = s.fma(p, f, s.splat(-1.151_461e-1));
    p = s.fma(p, f, s.splat(1.167_699_9e-1));
    p = s.fma(p, f, s.splat(-1.242_014_1e-1));
    p = s.fma(p, f, s.splat(1.424_932_3e-1));
    p = s.fma(p, f, s.splat(-1.666_805_8e-1));
    p = s.fma(p, f, s.splat(2.000_071_4e-1));
    p = s.fma(p, f, s.splat(-2.499_999_4e-1));
    p = s.fma(p, f, s.splat(3.333_333e-1));
    let z = s.mul(f, f);
    let mut y = s.mul(s.mul(p, f), z);
    y = s.fma(e, s.splat(-2.121_944_4e-4), y);
    y = s.fma(z, s.splat(-0.5), y);
    let mut r = s.add(f, y);
    r = s.fma(e, s.splat(0.693_359_4), r);
    // Special values.
    let nonpos = s.select_gt(s.zero(), x, s.splat(f32::NAN), s.splat(f32::NEG_INFINITY));
    let r = s.select_gt(x, s.zero(), r, nonpos);
    let r = s.select_gt(x, s.splat(f32::MAX), s.splat(f32::INFINITY), r);
    s.keep_nan(x, r)
}

/// Maximum of a row (`-inf` for an empty row). NaN entries may or may not propagate.
#[inline(always)]
pub fn row_max<S: Simd>(s: S, x: &[f32]) -> f32 {
    let l = S::LANES;
    let n = x.len();
    let mut acc = s.splat(f32::NEG_INFINITY);
    let mut i = 0;
    while i + l <= n {
        acc = s.max(acc, s.load(&x[i..]));
        i += l;
    }
    if i < n {
        acc = s.max(acc, s.load_partial(&x[i..], f32::NEG_INFINITY));
    }
    s.reduce_max(acc)
}

/// Sum of a row, in a fixed order for a given instruction set.
#[inline(always)]
pub fn row_sum<S: Simd>(s: S, x: &[f32]) -> f32 {
    let l = S::LANES;
    let n = x.len();
    let (mut a0, mut a1) = (s.zero(), s.zero());
    let mut i = 0;
    while i + 2 * l <= n {
        a0 = s.add(a0, s.load(&x[i..]));
        a1 = s.add(a1, s.load(&x[i + l..]));
        i += 2 * l;
    }
    while i + l <= n {
        a0 = s.add(a0, s.load(&x[i..]));
        i += l;
    }
    if i < n {
        a1 = s.add(a1, s.load_partial(&x[i..], 0.0));
    }
    s.reduce_sum(s.add(a0, a1))
}

/// `Σ a_i b_i`, fixed order for a given instruction set.
#[inline(always)]
pub fn row_dot<S: Simd>(s: S, a: &[f32], b: &[f32]) -> f32 {
    let l = S::LANES;
    let n = a.len().min(b.len());
    let (mut a0, mut a1) = (s.zero(), s.zero());
    let mut i = 0;
    while i + 2 * l <= n {
        a0 = s.fma(s.load(&a[i..]), s.load(&b[i..]), a0);
        a1 = s.fma(s.load(&a[i + l..]), s.load(&b[i + l..]), a1);
        i += 2 * l;
    }
    while i + l <= n {
        a0 = s.fma(s.load(&a[i..]), s.load(&b[i..]), a0);
        i += l;
    }
    if i < n {
        a1 = s.fma(s.load_partial(&a[i..n], 0.0), s.load_partial(&b[i..n], 0.0), a1);
    }
    s.reduce_sum(s.add(a0, a1))
}

/// A lane-wise operation of one vector. Kernels pass these (not closures) to the `map`
/// helpers: a closure is a separate function compiled without the instruction set's
/// features, so its intrinsics would become calls; a trait method marked
/// `#[inline(always)]` is inlined into the feature-enabled kernel.
pub trait Op1: Copy {
    /// The operation.
    fn f<S: Simd>(self, s: S, x: S::V) -> S::V;
}
/// A lane-wise operation of two vectors (see [`Op1`]).
pub trait Op2: Copy {
    /// The operation.
    fn f<S: Simd>(self, s: S, x: S::V, y: S::V) -> S::V;
}
/// A lane-wise operation of three vectors (see [`Op1`]).
pub trait Op3: Copy {
    /// The operation.
    fn f<S: Simd>(self, s: S, x: S::V, y: S::V, z: S::V) -> S::V;
}

/// Applies `f` to every vector of `x`, writing `out` (same length). Tails go through a
/// padded vector, so every element sees the same arithmetic.
#[inline(always)]
pub fn map1<S: Simd>(s: S, x: &[f32], out: &mut [f32], fill: f32, op: impl Op1) {
    let l = S::LANES;
    let n = x.len();
    assert_eq!(out.len(), n);
    let mut i = 0;
    while i + l <= n {
        s.store(&mut out[i..], op.f(s, s.load(&x[i..])));
        i += l;
    }
    if i < n {
        s.store_partial(&mut out[i..], op.f(s, s.load_partial(&x[i..], fill)));
    }
}

/// As [`map1`] with two inputs.
#[inline(always)]
pub fn map2<S: Simd>(s: S, x: &[f32], y: &[f32], out: &mut [f32], op: impl Op2) {
    let l = S::LANES;
    let n = x.len();
    assert_eq!(y.len(), n);
    assert_eq!(out.len(), n);
    let mut i = 0;
    while i + l <= n {
        s.store(&mut out[i..], op.f(s, s.load(&x[i..]), s.load(&y[i..])));
        i += l;
    }
    if i < n {
        s.store_partial(
            &mut out[i..],
            op.f(s, s.load_partial(&x[i..], 0.0), s.load_partial(&y[i..], 0.0)),
        );
    }
}

/// As [`map1`] with three inputs.
#[inline(always)]
pub fn map3<S: Simd>(s: S, x: &[f32], y: &[f32], z: &[f32], out: &mut [f32], op: impl Op3) {
    let l = S::LANES;
    let n = x.len();
    assert!(y.len() == n && z.len() == n && out.len() == n);
    let mut i = 0;
    while i + l <= n {
        s.store(&mut out[i..], op.f(s, s.load(&x[i..]), s.load(&y[i..]), s.load(&z[i..])));
        i += l;
    }
    if i < n {
        s.store_partial(
            &mut out[i..],
            op.f(
                s,
                s.load_partial(&x[i..], 0.0),
                s.load_partial(&y[i..], 0.0),
                s.load_partial(&z[i..], 0.0),
            ),
        );
    }
}

/// In-place variant of [`map1`] on a mutable slice.
#[inline(always)]
pub fn map_inplace<S: Simd>(s: S, x: &mut [f32], op: impl Op1) {
    let l = S::LANES;
    let n = x.len();
    let mut i = 0;
    while i + l <= n {
        let v = op.f(s, s.load(&x[i..]));
        s.store(&mut x[i..], v);
        i += l;
    }
    if i < n {
        let v = op.f(s, s.load_partial(&x[i..], 0.0));
        s.store_partial(&mut x[i..], v);
    }
}
