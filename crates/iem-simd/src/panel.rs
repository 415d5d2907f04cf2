//! Products with a `k × u` matrix kept in **64-column panels**: column block `p` (columns
//! `64p..64p+64`) is stored as its own `k × 64` row-major block, the blocks one after
//! another. Element `(r, c)` lives at [`index`]`(k, r, c)`.
//!
//! That is the layout in which the `gemm` crate's AVX-512 micro-kernel (64 × 6 register
//! tile) reads its left operand. A trainer that keeps a linear layer's `Wᵀ` — and, since
//! the optimiser's update is elementwise, its gradient and optimiser state — in panels can
//! call that micro-kernel directly and skip the crate's per-call packing: the MNIST-size
//! step packed `Wᵀ` in every forward product and the output gradient seven times in every
//! weight-gradient product (`crates/iem-train/BENCHMARKS.md`).
//!
//! - [`matmul`]: `C = A·B (+ bias)`, `A` row-major, `B` in panels, `C` row-major.
//! - [`matmul_tn`]: `D = Aᵀ·G`, `A` and `G` row-major, `D` in panels (a weight gradient).
//! - [`pack_transposed`] / [`unpack_transposed`]: `W` (`u × k` row-major) to and from the
//!   panels of `Wᵀ`; [`transpose_panels`]: panels of `M` to panels of `Mᵀ`.
//!
//! The column count `u` must be a multiple of [`WIDTH`] ([`fits`]). Only AVX-512 has the
//! fast kernels ([`fast`]); elsewhere the same functions run plain loops (correct, slow),
//! so callers choose the layout with `fast() && fits(u)`.
//!
//! # Determinism
//! Every element of the result is one FMA chain over the whole inner dimension, in
//! increasing order, added to the bias (if any) at the end — never split in depth — so the
//! result does not depend on how the work is tiled or on the thread count.
//!
//! ```
//! use iem_simd::{panel, Par};
//! // W is 64 × 2 (u × k); X is 1 × 2. Z = X·Wᵀ + b.
//! let w: Vec<f32> = (0..128).map(|i| i as f32).collect();
//! let mut wt = vec![0.0; 128];
//! panel::pack_transposed(&w, 64, 2, &mut wt, Par::Seq);
//! let b = vec![1.0; 64];
//! let mut z = vec![0.0; 64];
//! panel::matmul(&[1.0, 2.0], 1, 2, &wt, 64, Some(&b), &mut z, Par::Seq);
//! assert_eq!(z[3], 1.0 + 1.0 * 6.0 + 2.0 * 7.0); // row 3 of W is (6, 7)
//! ```

use crate::gemm::{PAR_MIN_FLOPS, SendPtr, transpose};
use crate::isa::{Isa, Par};
use rayon::prelude::*;

/// Columns per panel: the micro-kernel's tile height (4 AVX-512 vectors).
pub const WIDTH: usize = 64;
/// Rows of `A` (samples) per micro-kernel call in [`matmul`], and rows of `D` (features)
/// in [`matmul_tn`].
const NR: usize = 6;
/// Rows of `A` per task of [`matmul`], rows of `D` per task of [`matmul_tn`] (multiples
/// of `NR`). Fixed: tasks never depend on the thread count.
const ROWS_PER_TASK: usize = 126;

/// Whether a matrix of `u` columns can be stored in panels (`u` a positive multiple of
/// [`WIDTH`]).
pub fn fits(u: usize) -> bool {
    u > 0 && u.is_multiple_of(WIDTH)
}

/// Whether this machine runs the fast panel kernels (the AVX-512 path is in use, see
/// [`Isa::current`]).
pub fn fast() -> bool {
    Isa::current() == Isa::Avx512
}

/// Position of element `(r, c)` of a `k × u` matrix stored in panels.
#[inline]
pub fn index(k: usize, r: usize, c: usize) -> usize {
    (c / WIDTH) * WIDTH * k + r * WIDTH + c % WIDTH
}

fn check_fits(op: &str, u: usize) {
    assert!(fits(u), "panel::{op}: {u} columns is not a positive multiple of {WIDTH}");
}

fn check_len(op: &str, what: &str, len: usize, want: usize, shape: &str) {
    assert_eq!(len, want, "panel::{op}: {what} has {len} elements, not {shape}");
}

/// Writes the panels of `Wᵀ` (`k × u`) into `dst`, given `W` (`u × k`, row-major).
///
/// # Panics
/// If `u` does not [`fit`](fits) or a slice's length is not `u·k`.
pub fn pack_transposed(w: &[f32], u: usize, k: usize, dst: &mut [f32], par: Par) {
    check_fits("pack_transposed", u);
    check_len("pack_transposed", "w", w.len(), u * k, &format!("{u}×{k}"));
    check_len("pack_transposed", "dst", dst.len(), u * k, &format!("{k}×{u}"));
    if k == 0 {
        return;
    }
    // Panel p is the transpose of rows 64p..64p+64 of W.
    for (src, out) in w.chunks(WIDTH * k).zip(dst.chunks_mut(WIDTH * k)) {
        transpose(src, WIDTH, k, out, par);
    }
}

/// Writes `W` (`u × k`, row-major) into `w`, given the panels of `Wᵀ` (`k × u`): the
/// inverse of [`pack_transposed`].
///
/// # Panics
/// As [`pack_transposed`].
pub fn unpack_transposed(panels: &[f32], k: usize, u: usize, w: &mut [f32], par: Par) {
    check_fits("unpack_transposed", u);
    check_len("unpack_transposed", "panels", panels.len(), u * k, &format!("{k}×{u}"));
    check_len("unpack_transposed", "w", w.len(), u * k, &format!("{u}×{k}"));
    if k == 0 {
        return;
    }
    for (src, out) in panels.chunks(WIDTH * k).zip(w.chunks_mut(WIDTH * k)) {
        transpose(src, k, WIDTH, out, par);
    }
}

/// Writes the panels of `Mᵀ` (`u × k`) into `dst`, given the panels of `M` (`k × u`): both
/// dimensions must [`fit`](fits). Each 64 × 64 block moves with one transposition.
///
/// # Panics
/// If `k` or `u` does not fit or a slice's length is not `k·u`.
pub fn transpose_panels(src: &[f32], k: usize, u: usize, dst: &mut [f32], par: Par) {
    check_fits("transpose_panels", k);
    check_fits("transpose_panels", u);
    check_len("transpose_panels", "src", src.len(), k * u, &format!("{k}×{u}"));
    check_len("transpose_panels", "dst", dst.len(), k * u, &format!("{u}×{k}"));
    const B: usize = WIDTH * WIDTH;
    let run = |(q, out): (usize, &mut [f32])| {
        // Panel q of Mᵀ: columns 64q..64q+64 of Mᵀ, i.e. rows 64q..64q+64 of M, whose
        // block in M's panel p is contiguous; it lands transposed at rows 64p.. of it.
        for (p, o) in out.chunks_mut(B).enumerate() {
            let at = p * WIDTH * k + q * B;
            transpose(&src[at..at + B], WIDTH, WIDTH, o, Par::Seq);
        }
    };
    if par.degree() > 1 && k * u >= 4 * B {
        dst.par_chunks_mut(WIDTH * u).enumerate().for_each(run);
    } else {
        dst.chunks_mut(WIDTH * u).enumerate().for_each(run);
    }
}

/// `C = A·B + 1·biasᵀ`: `A` is `n × k` row-major, `B` is `k × u` in panels, `C` is `n × u`
/// row-major (overwritten). Without `bias`, `C = A·B`.
///
/// Work is split into fixed tasks (126 rows of `A` × half of the panels), which run
/// concurrently under `par` when the product is large enough; the result is the same for
/// any [`Par`].
///
/// # Panics
/// If `u` does not [`fit`](fits), or a slice's length does not match `n`, `k`, `u`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f32],
    n: usize,
    k: usize,
    b: &[f32],
    u: usize,
    bias: Option<&[f32]>,
    c: &mut [f32],
    par: Par,
) {
    check_fits("matmul", u);
    check_len("matmul", "A", a.len(), n * k, &format!("{n}×{k}"));
    check_len("matmul", "B", b.len(), k * u, &format!("{k}×{u}"));
    check_len("matmul", "C", c.len(), n * u, &format!("{n}×{u}"));
    if let Some(bias) = bias {
        check_len("matmul", "bias", bias.len(), u, &u.to_string());
    }
    let isa = Isa::current();
    let panels = u / WIDTH;
    let halves = if panels >= 2 { 2 } else { 1 };
    let split = panels.div_ceil(halves);
    let tasks = n.div_ceil(ROWS_PER_TASK) * halves;
    let cp = SendPtr(c.as_mut_ptr());
    let run = |task: usize| {
        let (t, h) = (task / halves, task % halves);
        let rows = t * ROWS_PER_TASK..((t + 1) * ROWS_PER_TASK).min(n);
        let cols = h * split * WIDTH..((h + 1) * split).min(panels) * WIDTH;
        let cp = &cp;
        // SAFETY: tasks write disjoint blocks (rows × columns) of the n × u matrix that
        // `c` holds, and only inside it.
        unsafe { matmul_block(isa, a, k, b, u, bias, cp.0, rows, cols) };
    };
    if par.degree() > 1 && tasks > 1 && n * k * u >= PAR_MIN_FLOPS {
        (0..tasks).into_par_iter().for_each(run);
    } else {
        (0..tasks).for_each(run);
    }
}

/// Rows `rows` × columns `cols` (whole panels) of [`matmul`]'s `C`.
///
/// # Safety
/// `c` points to the `n × u` row-major `C`, with `rows` and `cols` inside it.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_block(
    isa: Isa,
    a: &[f32],
    k: usize,
    b: &[f32],
    u: usize,
    bias: Option<&[f32]>,
    c: *mut f32,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        let mut j = rows.start;
        while j < rows.end {
            let nt = NR.min(rows.end - j);
            if let Some(bias) = bias {
                // The tile's rows start as the bias, just before the kernel adds to them.
                for i in j..j + nt {
                    // SAFETY: row i, columns `cols` of C are inside it (caller).
                    let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * u), u) };
                    row[cols.clone()].copy_from_slice(&bias[cols.clone()]);
                }
            }
            for p in cols.start / WIDTH..cols.end / WIDTH {
                // SAFETY: `fast()`: the AVX-512 path was detected at run time. The kernel
                // reads panel p (64 values at stride 64 for each of k depths), rows
                // j..j+nt of A (k values at stride 1, rows at stride k), and writes the
                // 64 × nt tile of C at row j, column 64p (units at stride 1, rows at u).
                unsafe {
                    avx512::tile(
                        nt,
                        k,
                        c.add(j * u + p * WIDTH),
                        b.as_ptr().add(p * WIDTH * k),
                        a.as_ptr().add(j * k),
                        u as isize,
                        1,
                        k as isize,
                        bias.is_some(),
                    )
                };
            }
            j += nt;
        }
        return;
    }
    let _ = isa;
    for i in rows {
        // SAFETY: as above.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * u), u) };
        let x = &a[i * k..(i + 1) * k];
        for col in cols.clone() {
            let mut acc = 0.0f32;
            for (r, &xr) in x.iter().enumerate() {
                acc = xr.mul_add(b[index(k, r, col)], acc);
            }
            row[col] = bias.map_or(acc, |bias| bias[col] + acc);
        }
    }
}

/// `D = Aᵀ·G`: `A` is `n × k` row-major, `G` is `n × u` row-major, `D` is `k × u` in panels
/// (overwritten) — the weight gradient of a linear layer whose `Wᵀ` is kept in panels.
/// `scratch` holds `G` repacked into panels between calls (resized as needed; pass the same
/// buffer every step to allocate once).
///
/// Work is split into fixed tasks of 126 rows of `D`; the result is the same for any [`Par`].
///
/// # Panics
/// If `u` does not [`fit`](fits), or a slice's length does not match `n`, `k`, `u`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_tn(
    a: &[f32],
    n: usize,
    k: usize,
    g: &[f32],
    u: usize,
    d: &mut [f32],
    scratch: &mut Vec<f32>,
    par: Par,
) {
    check_fits("matmul_tn", u);
    check_len("matmul_tn", "A", a.len(), n * k, &format!("{n}×{k}"));
    check_len("matmul_tn", "G", g.len(), n * u, &format!("{n}×{u}"));
    check_len("matmul_tn", "D", d.len(), k * u, &format!("{k}×{u}"));
    let isa = Isa::current();
    // G's panels (n × 64 each): the micro-kernel's left operand.
    scratch.resize(n * u, 0.0);
    for (b, row) in g.chunks(u).enumerate() {
        for (p, src) in row.chunks(WIDTH).enumerate() {
            scratch[p * WIDTH * n + b * WIDTH..][..WIDTH].copy_from_slice(src);
        }
    }
    let gp: &[f32] = scratch;
    let tasks = k.div_ceil(ROWS_PER_TASK);
    let dp = SendPtr(d.as_mut_ptr());
    let run = |t: usize| {
        let rows = t * ROWS_PER_TASK..((t + 1) * ROWS_PER_TASK).min(k);
        let dp = &dp;
        // SAFETY: tasks write the disjoint rows `rows` of D (in every panel), inside it.
        unsafe { matmul_tn_rows(isa, a, n, k, gp, u, dp.0, rows) };
    };
    if par.degree() > 1 && tasks > 1 && n * k * u >= PAR_MIN_FLOPS {
        (0..tasks).into_par_iter().for_each(run);
    } else {
        (0..tasks).for_each(run);
    }
}

/// Rows `rows` of [`matmul_tn`]'s `D`, given `G`'s panels `gp`.
///
/// # Safety
/// `d` points to the `k × u` panel matrix `D`, with `rows` inside it.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_tn_rows(
    isa: Isa,
    a: &[f32],
    n: usize,
    k: usize,
    gp: &[f32],
    u: usize,
    d: *mut f32,
    rows: std::ops::Range<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        let mut f = rows.start;
        while f < rows.end {
            let ft = NR.min(rows.end - f);
            for p in 0..u / WIDTH {
                // SAFETY: AVX-512 detected at run time. The kernel reads G's panel p (64
                // values at stride 64 for each of n samples), columns f..f+ft of A (stride
                // 1, samples at stride k), and writes rows f..f+ft of D's panel p (64
                // values each, at stride 64).
                unsafe {
                    avx512::tile(
                        ft,
                        n,
                        d.add(p * WIDTH * k + f * WIDTH),
                        gp.as_ptr().add(p * WIDTH * n),
                        a.as_ptr().add(f),
                        WIDTH as isize,
                        k as isize,
                        1,
                        false,
                    )
                };
            }
            f += ft;
        }
        return;
    }
    let _ = (isa, gp);
    for r in rows {
        for p in 0..u / WIDTH {
            for cc in 0..WIDTH {
                let mut acc = 0.0f32;
                for b in 0..n {
                    acc = a[b * k + r].mul_add(gp[p * WIDTH * n + b * WIDTH + cc], acc);
                }
                // SAFETY: element (r, 64p + cc) of D is inside it (caller).
                unsafe { *d.add(index(k, r, p * WIDTH + cc)) = acc };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use gemm_f32::microkernel::avx512f::f32 as uk;

    /// One call of the `gemm` crate's 64 × `nt` AVX-512 micro-kernel (`1 ≤ nt ≤ 6`):
    /// `dst[i, j] (+)= Σ_p lhs[p·64 + i] · rhs[p·rhs_rs + j·rhs_cs]` for `i < 64`, `j < nt`,
    /// `p < depth`, with `dst[i, j]` at `dst + i + j·dst_cs`; added to `dst` when `add`,
    /// else written.
    ///
    /// # Safety
    /// AVX-512F is available; every address above is valid (`lhs` for `64·depth` reads).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) unsafe fn tile(
        nt: usize,
        depth: usize,
        dst: *mut f32,
        lhs: *const f32,
        rhs: *const f32,
        dst_cs: isize,
        rhs_rs: isize,
        rhs_cs: isize,
        add: bool,
    ) {
        debug_assert!((1..=6).contains(&nt));
        // Row 3 of the table: four 16-lane vectors (64 rows); column nt − 1: nt columns.
        // The crate's convention: dst = alpha·dst + beta·(lhs·rhs), alpha_status 0 ignoring
        // dst, 1 adding to it.
        let f = uk::UKR[3][nt - 1];
        // SAFETY: the caller's contract, in the crate's argument order (m, n, k, dst, lhs,
        // rhs, dst_cs, dst_rs, lhs_cs, rhs_rs, rhs_cs, alpha, beta, alpha_status, conj ×3,
        // next_lhs).
        unsafe {
            f(
                64,
                nt,
                depth,
                dst,
                lhs,
                rhs,
                dst_cs,
                1,
                64,
                rhs_rs,
                rhs_cs,
                1.0,
                1.0,
                u8::from(add),
                false,
                false,
                false,
                std::ptr::null(),
            )
        }
    }
}
